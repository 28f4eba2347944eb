/* Ending a guest.
 *
 * isa-debug-exit (QEMU hw/misc/debugexit.c; `-device
 * isa-debug-exit,iobase=0xf4,iosize=0x4`): a write of v makes the VMM exit
 * with status (v << 1) | 1, so every status it produces is odd. */
#ifndef KIT_EXIT_H
#define KIT_EXIT_H

#include <stdint.h>

#define DEBUG_EXIT_PORT 0xf4

/* Values guests write; the VMM exits with (v << 1) | 1. */
#define KIT_EXIT_PASS 0      /* status 1: every TAP test passed */
#define KIT_EXIT_FAIL 1      /* status 3: a test failed or the plan was not met */
#define KIT_EXIT_EXCEPTION 2 /* status 5: unexpected CPU exception */
#define KIT_EXIT_BAD_BOOT 3  /* status 7: not entered by a multiboot loader */

__attribute__((noreturn)) void debug_exit(uint8_t value);

/* ACPI S5 through the PIIX4 PM1a control register; see README.md. */
#define ACPI_PM1A_CNT_PORT 0x604
#define ACPI_PM1_CNT_SLP_EN 0x2000
#define ACPI_PM1_CNT_SLP_TYP_S5 0 /* QEMU's DSDT declares _S5 as SLP_TYP 0 */
/* Powers the machine off, which ends the VMM with status 0. If the write has
 * no effect it reports that and debug-exits with KIT_EXIT_FAIL. */
__attribute__((noreturn)) void acpi_poweroff(void);

/* Reset through the 8042 keyboard controller (0x64 <- 0xfe). */
__attribute__((noreturn)) void kbd_reset(void);
/* Reset through a triple fault: a zero-limit IDT, then ud2. */
__attribute__((noreturn)) void triple_fault(void);

#endif
