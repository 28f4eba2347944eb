/* Local APIC at its default base (Intel SDM vol. 3, chapter 10/11). */
#ifndef KIT_LAPIC_H
#define KIT_LAPIC_H

#include <stdint.h>

#define LAPIC_BASE 0xfee00000u
#define LAPIC_ID 0x020
#define LAPIC_VERSION 0x030
#define LAPIC_SVR 0x0f0
#define LAPIC_ICR_LO 0x300
#define LAPIC_ICR_HI 0x310

#define LAPIC_SVR_ENABLE 0x100
#define LAPIC_ICR_DELIVERY_INIT 0x500
#define LAPIC_ICR_DELIVERY_STARTUP 0x600
#define LAPIC_ICR_PENDING 0x1000
#define LAPIC_ICR_LEVEL_ASSERT 0x4000
#define LAPIC_ICR_ALL_EXCLUDING_SELF 0xc0000

uint32_t lapic_read(uint32_t reg);
void lapic_write(uint32_t reg, uint32_t value);
uint32_t lapic_id(void); /* xAPIC ID, bits 31:24 of the ID register */
void lapic_enable(void);
/* Writes ICR (destination first, the low word sends) and waits for the
 * delivery status to clear. Returns 0, or -1 if it never cleared. */
int lapic_send_ipi(uint32_t dest_apic_id, uint32_t icr_lo);

#endif
