/* Taking interrupts in a test guest: a 256-entry IDT (the kit's exception
 * stubs for 0-31, counting handlers for vectors 0x40-0x4f, a spurious
 * vector 0xff), the 8259 PICs masked, the local APIC enabled, and the IOAPIC
 * redirection table (82093AA IOAPIC datasheet §3.2.4; Intel SDM vol. 3
 * §10.8.5 EOI). */
#ifndef KIT_INTR_H
#define KIT_INTR_H

#include <stdint.h>

#define INTR_FIRST_VECTOR 0x40
#define INTR_VECTORS 16
#define IOAPIC_BASE 0xfec00000u

/* Hits per vector INTR_FIRST_VECTOR + i. */
extern volatile uint32_t intr_count[INTR_VECTORS];

/* Sets up the IDT, masks the PICs, enables the LAPIC; interrupts stay off (cli). */
void intr_init(void);
/* Called in the handler of `vector` before its EOI (e.g. to read a device's ISR and drop a level). */
void intr_set_hook(uint8_t vector, void (*hook)(void));
static inline void intr_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void intr_disable(void) { __asm__ volatile("cli" ::: "memory"); }
/* Waits (interrupts on) until intr_count for `vector` reaches `n` or `ms` pass; returns the count. */
uint32_t intr_wait(uint8_t vector, uint32_t n, uint32_t ms);

/* IOAPIC pin `pin` → `vector` on APIC 0, fixed delivery; level or edge, active high. */
void ioapic_route(uint8_t pin, uint8_t vector, int level);
void ioapic_mask(uint8_t pin);
uint32_t ioapic_read(uint8_t reg);

#endif
