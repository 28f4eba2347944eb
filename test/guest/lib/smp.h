/* Starting application processors (Intel SDM vol. 3, 9.4 "Multiple-Processor
 * (MP) Initialization": INIT, then two Startup IPIs). */
#ifndef KIT_SMP_H
#define KIT_SMP_H

#include <stdint.h>

/* The real-mode trampoline is copied to this page; the SIPI vector is its
 * page number (0x07). Keep boot data out of 0x7000-0x7fff. */
#define SMP_TRAMPOLINE_ADDR 0x7000u
#define SMP_MAX_APS 15
#define SMP_AP_STACK_SIZE 4096

/* Wakes every other CPU with INIT, SIPI, SIPI sent to all-excluding-self;
 * each AP enters `entry` in 32-bit protected mode (flat segments, this
 * kernel's GDT and exception IDT) on its own stack, and halts if it returns.
 * Returns 0, or -1 when the local APIC never accepted an IPI. */
int smp_start_aps(void (*entry)(void));

#endif
