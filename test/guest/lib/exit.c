#include "exit.h"
#include "io.h"
#include "print.h"

void debug_exit(uint8_t value)
{
	outb(DEBUG_EXIT_PORT, value);
	/* Only reached without an isa-debug-exit device. */
	kprintf("# debug-exit write (%u) had no effect: is isa-debug-exit at 0x%x missing?\n",
		value, DEBUG_EXIT_PORT);
	cpu_halt_forever();
}

/* Gives the VMM time to act on a write that ends the machine before we
 * conclude it was ignored. */
static void settle(void)
{
	for (uint32_t i = 0; i < 5000; i++)
		io_delay();
}

void acpi_poweroff(void)
{
	outw(ACPI_PM1A_CNT_PORT, ACPI_PM1_CNT_SLP_EN | (ACPI_PM1_CNT_SLP_TYP_S5 << 10));
	settle();
	kprintf("# ACPI poweroff (0x%x <- 0x%x) had no effect\n", ACPI_PM1A_CNT_PORT,
		ACPI_PM1_CNT_SLP_EN | (ACPI_PM1_CNT_SLP_TYP_S5 << 10));
	debug_exit(KIT_EXIT_FAIL);
}

void kbd_reset(void)
{
	outb(0x64, 0xfe);
	settle();
	kprintf("# 8042 reset (0x64 <- 0xfe) had no effect\n");
	debug_exit(KIT_EXIT_FAIL);
}

void triple_fault(void)
{
	static const struct __attribute__((packed)) {
		uint16_t limit;
		uintptr_t base;
	} empty_idt = { 0, 0 };
	/* ud2 rather than int3: kvm_pvm's instruction emulator cannot deliver
	 * a software interrupt through an empty IDT (KVM_EXIT_INTERNAL_ERROR,
	 * emulation failure), while #UD escalates #GP -> #DF -> shutdown as on
	 * hardware. */
	__asm__ volatile("lidt %0; ud2" : : "m"(empty_idt) : "memory");
	kprintf("# triple fault did not reset the machine\n");
	debug_exit(KIT_EXIT_FAIL);
}
