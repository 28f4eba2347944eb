#include "lapic.h"
#include "io.h"

uint32_t lapic_read(uint32_t reg) { return mmio_read32(LAPIC_BASE + reg); }
void lapic_write(uint32_t reg, uint32_t value) { mmio_write32(LAPIC_BASE + reg, value); }
uint32_t lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }

void lapic_enable(void)
{
	lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | LAPIC_SVR_ENABLE | 0xff);
}

int lapic_send_ipi(uint32_t dest_apic_id, uint32_t icr_lo)
{
	lapic_write(LAPIC_ICR_HI, dest_apic_id << 24);
	lapic_write(LAPIC_ICR_LO, icr_lo);
	for (uint32_t polls = 0; polls < 100000; polls++)
		if (!(lapic_read(LAPIC_ICR_LO) & LAPIC_ICR_PENDING))
			return 0;
	return -1;
}
