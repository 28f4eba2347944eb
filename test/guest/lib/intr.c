#include "intr.h"
#include "io.h"
#include "lapic.h"
#include "virtio.h"

#define LAPIC_EOI 0x0b0
#define SPURIOUS_VECTOR 0xff

struct idt_gate {
	uint16_t offset_lo;
	uint16_t selector;
	uint8_t zero;
	uint8_t type_attr;
	uint16_t offset_hi;
} __attribute__((packed));

extern const uint32_t kit_exc_stubs[32];
static struct idt_gate idt[256];
volatile uint32_t intr_count[INTR_VECTORS];
static void (*hooks[INTR_VECTORS])(void);

/* lib/intr_stubs.S: one entry per vector, calling intr_dispatch(index) */
extern const uint32_t intr_stubs[INTR_VECTORS];
extern void intr_spurious_stub(void);
void intr_dispatch(int i);

void intr_dispatch(int i)
{
	intr_count[i]++;
	if (hooks[i])
		hooks[i]();
	lapic_write(LAPIC_EOI, 0);
}

static void set_gate(int v, uint32_t addr)
{
	idt[v].offset_lo = addr & 0xffff;
	idt[v].selector = 0x08;
	idt[v].zero = 0;
	idt[v].type_attr = 0x8e;
	idt[v].offset_hi = addr >> 16;
}

void intr_init(void)
{
	intr_disable();
	for (int i = 0; i < 32; i++)
		set_gate(i, kit_exc_stubs[i]);
	for (int i = 0; i < INTR_VECTORS; i++)
		set_gate(INTR_FIRST_VECTOR + i, intr_stubs[i]);
	set_gate(SPURIOUS_VECTOR, (uint32_t)(uintptr_t)intr_spurious_stub);
	struct __attribute__((packed)) {
		uint16_t limit;
		uint32_t base;
	} desc = { sizeof(idt) - 1, (uint32_t)(uintptr_t)idt };
	__asm__ volatile("lidt %0" : : "m"(desc));
	/* Firmware (SeaBIOS on QEMU) leaves the PIT ticking through the PIC: mask both 8259s. */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);
	lapic_write(LAPIC_SVR, (lapic_read(LAPIC_SVR) & ~0xffu) | LAPIC_SVR_ENABLE | SPURIOUS_VECTOR);
}

void intr_set_hook(uint8_t vector, void (*hook)(void))
{
	if (vector >= INTR_FIRST_VECTOR && vector < INTR_FIRST_VECTOR + INTR_VECTORS)
		hooks[vector - INTR_FIRST_VECTOR] = hook;
}

uint32_t intr_wait(uint8_t vector, uint32_t n, uint32_t ms)
{
	int i = vector - INTR_FIRST_VECTOR;
	uint64_t start = rdtsc();
	intr_enable();
	while (intr_count[i] < n && tsc_ms_since(start) < ms)
		cpu_relax();
	intr_disable();
	return intr_count[i];
}

static void ioapic_write(uint8_t reg, uint32_t v)
{
	mmio_write32(IOAPIC_BASE, reg);
	mmio_write32(IOAPIC_BASE + 0x10, v);
}

uint32_t ioapic_read(uint8_t reg)
{
	mmio_write32(IOAPIC_BASE, reg);
	return mmio_read32(IOAPIC_BASE + 0x10);
}

void ioapic_route(uint8_t pin, uint8_t vector, int level)
{
	ioapic_write(0x11 + 2 * pin, 0); /* destination APIC ID 0 */
	ioapic_write(0x10 + 2 * pin, vector | (level ? 1u << 15 : 0));
}

void ioapic_mask(uint8_t pin)
{
	ioapic_write(0x10 + 2 * pin, 1u << 16);
}
