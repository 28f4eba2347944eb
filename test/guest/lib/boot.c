/* From _start to guest_main(): boot information, serial, exception IDT. */
#include "kit.h"

struct idt_gate {
	uint16_t offset_lo;
	uint16_t selector;
	uint8_t zero;
	uint8_t type_attr;
	uint16_t offset_hi;
} __attribute__((packed));

static struct idt_gate idt[32];
extern const uint32_t kit_exc_stubs[32];

void kit_idt_init(void)
{
	for (int i = 0; i < 32; i++) {
		idt[i].offset_lo = kit_exc_stubs[i] & 0xffff;
		idt[i].selector = 0x08;
		idt[i].zero = 0;
		idt[i].type_attr = 0x8e; /* present, DPL 0, 32-bit interrupt gate */
		idt[i].offset_hi = kit_exc_stubs[i] >> 16;
	}
	struct __attribute__((packed)) {
		uint16_t limit;
		uint32_t base;
	} desc = { sizeof(idt) - 1, (uint32_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" : : "m"(desc));
}

struct kit_exception_frame {
	uint32_t edi, esi, ebp, esp, ebx, edx, ecx, eax;
	uint32_t vector, error, eip, cs, eflags;
};

void kit_exception(const struct kit_exception_frame *f)
{
	kprintf("# unexpected exception %u (error 0x%x) at eip 0x%x, APIC ID %u\n", f->vector,
		f->error, f->eip, lapic_id());
	debug_exit(KIT_EXIT_EXCEPTION);
}

__attribute__((noreturn)) void kit_start(uint32_t magic, const struct multiboot_info *info)
{
	multiboot_magic = magic;
	multiboot_info = info;
	serial_init();
	if (magic != MULTIBOOT_BOOTLOADER_MAGIC) {
		kprintf("# not booted by a multiboot loader: EAX=0x%x\n", magic);
		debug_exit(KIT_EXIT_BAD_BOOT);
	}
	debug_exit((uint8_t)guest_main());
}
