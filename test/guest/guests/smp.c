/* Application processor start-up with INIT, SIPI, SIPI through the local
 * APIC. Each AP reports its APIC ID through shared memory and prints under
 * the serial lock. Boot with 2 or more CPUs. */
#include "kit.h"

static volatile uint32_t ap_count;
static volatile uint32_t ap_ids[SMP_MAX_APS];
static volatile uint16_t ap_cs[SMP_MAX_APS];

static void ap_main(void)
{
	uint16_t cs;
	__asm__ volatile("mov %%cs, %0" : "=r"(cs));
	uint32_t id = lapic_id();
	uint32_t slot = __atomic_fetch_add(&ap_count, 1, __ATOMIC_SEQ_CST);
	if (slot < SMP_MAX_APS) {
		ap_cs[slot] = cs;
		ap_ids[slot] = id; /* written last: the BSP polls for it */
	}
	kprintf("# AP %u: APIC ID %u, running 32-bit code\n", slot, id);
}

int guest_main(void)
{
	uint32_t cpus = fw_cfg_read_le16(FW_CFG_NB_CPUS);
	uint32_t aps = cpus > 1 ? cpus - 1 : 1;
	if (aps > SMP_MAX_APS)
		aps = SMP_MAX_APS;
	for (uint32_t i = 0; i < SMP_MAX_APS; i++)
		ap_ids[i] = 0xffffffff;

	tap_plan(4 + 2 * (int)aps);
	uint32_t bsp = lapic_id();
	tap_diag("BSP APIC ID %u, local APIC version 0x%x, %u CPUs (fw_cfg)", bsp,
		 lapic_read(LAPIC_VERSION), cpus);
	tap_ok(cpus >= 2, "fw_cfg NB_CPUS reports at least 2 CPUs");
	tap_is(bsp, 0, "the BSP's APIC ID is 0");
	tap_ok(smp_start_aps(ap_main) == 0, "INIT, SIPI, SIPI sent (ICR delivery status cleared)");

	for (uint32_t polls = 0; polls < 2000000 && ap_count < aps; polls++)
		cpu_relax();
	/* Each AP publishes its ID just after taking a slot. */
	for (uint32_t i = 0; i < aps && i < ap_count; i++)
		for (uint32_t polls = 0; polls < 100000 && ap_ids[i] == 0xffffffff; polls++)
			cpu_relax();
	tap_is(ap_count, aps, "every application processor started");
	for (uint32_t i = 0; i < aps; i++) {
		uint32_t id = ap_ids[i];
		int unique = id != bsp && id != 0xffffffff;
		for (uint32_t j = 0; j < i; j++)
			unique &= ap_ids[j] != id;
		tap_okf(unique, "AP %u reported APIC ID %u, distinct from the BSP's and other APs'", i, id);
		tap_okf(ap_cs[i] == 0x08, "AP %u runs in 32-bit protected mode on the kernel's GDT (CS 0x%x)",
			i, ap_cs[i]);
	}
	tap_done();
}
