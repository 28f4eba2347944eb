/* MOVBE (SDM Vol. 2B "MOVBE—Move Data After Swapping Bytes"): executes a
 * MOVBE load with a #UD handler in place and reports what happened next to
 * what CPUID.01H:ECX.MOVBE[bit 22] says, for the host side
 * (test/src/cpu-guest.test.ts) to compare with the CPU model:
 *
 *   # movbe: cpuid=<0|1> executed=<0|1> ud=<0|1> value=0x........
 *
 * Where KVM's instruction emulator runs the guest (on a host CPU without
 * MOVBE, or on a paravirtual KVM that emulates everything), the emulator
 * checks the guest's CPUID and raises #UD when MOVBE is hidden; a CPU that
 * runs the guest natively executes MOVBE whatever CPUID says. On the
 * development host (kvm_pvm) MOVBE raises #UD under every model, under QEMU
 * too, although the guest's CPUID shows MOVBE (the host CPU's leaf 1 ECX).
 * The guest only checks that one of the two architectural outcomes happened. */
#include "kit.h"

volatile uint32_t movbe_ud_count;
volatile uint32_t movbe_ud_resume;
void movbe_ud_handler(void);

/* #UD: count it and resume after the faulting MOVBE. Not through IRET: KVM's
 * instruction emulator implements IRET in real mode only, and on a host
 * where it runs the guest an IRET here ends in KVM_EXIT_INTERNAL_ERROR. Same
 * privilege level and stack, so dropping EIP and CS, restoring EFLAGS and
 * jumping is enough (#UD pushes no error code). */
__asm__(".text\n"
	".globl movbe_ud_handler\n"
	"movbe_ud_handler:\n"
	"	lock incl movbe_ud_count\n"
	"	addl $8, %esp\n"
	"	popfl\n"
	"	jmp *movbe_ud_resume\n");

static void set_ud_gate(void)
{
	struct __attribute__((packed)) {
		uint16_t limit;
		uint32_t base;
	} idtr;
	__asm__ volatile("sidt %0" : "=m"(idtr));
	volatile uint16_t *gate = (volatile uint16_t *)(uintptr_t)(idtr.base + 6 * 8);
	uint32_t handler = (uint32_t)(uintptr_t)movbe_ud_handler;
	gate[0] = handler & 0xffff;
	gate[1] = 0x08;
	gate[2] = 0x8e00; /* present, DPL 0, 32-bit interrupt gate */
	gate[3] = handler >> 16;
}

int guest_main(void)
{
	static volatile uint32_t source = 0x11223344;
	uint32_t r[4];
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(1), "c"(0));
	int cpuid_movbe = (r[2] >> 22) & 1;

	tap_plan(1);
	set_ud_gate();
	uint32_t value = 0xdeadbeef;
	__asm__ volatile("movl $1f, movbe_ud_resume\n\t"
			 "movbe (%1), %0\n"
			 "1:"
			 : "+r"(value)
			 : "r"(&source)
			 : "memory");
	int ud = movbe_ud_count != 0;
	int executed = !ud && value == 0x44332211;
	kprintf("# movbe: cpuid=%d executed=%d ud=%d value=0x%08x\n", cpuid_movbe, executed, ud, value);
	tap_ok(executed != ud, "MOVBE either loaded the byte-swapped value or raised #UD");
	tap_done();
}
