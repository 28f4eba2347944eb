/* Prints the CPUID leaves a VMM decides, on every CPU, for the host side to
 * compare with the CPU model (test/src/cpu-guest.test.ts):
 *
 *   CPUID apic=<local APIC ID> 0x<leaf> 0x<subleaf>: eax=0x.. ebx=0x.. ecx=0x.. edx=0x..
 *
 * Leaves: every basic leaf up to CPUID.0:EAX (4, 7, 0xB, 0xD with their
 * subleaves), the hypervisor leaves 0x40000000/1 (and 0x40000100/1, where
 * the KVM leaves go behind Hyper-V's), and every extended leaf up to
 * CPUID.80000000h:EAX (0x8000001D with its subleaves). With more than one
 * CPU (fw_cfg NB_CPUS) the APs are started as smp.c does and record the
 * same; the BSP prints every CPU's leaves.
 * The guest itself checks only what it can know: each CPU's initial APIC ID
 * (leaf 1 EBX[31:24]) and x2APIC ID (leaf 0xB EDX) equal its local APIC ID. */
#include "kit.h"

#define MAX_CPUS (SMP_MAX_APS + 1)
#define MAX_RECORDS 96

struct cpuid_record {
	uint32_t leaf, sub, r[4];
};

/* Each CPU records its leaves here and the BSP prints them all: APs that
 * print themselves would spin on the print lock, and on a host that
 * emulates the guest, spinning vCPUs starve the one holding it. */
static struct {
	uint32_t apic;
	uint32_t count;
	volatile uint32_t ids_ok; /* 1 ok, 2 mismatch; written last */
	struct cpuid_record rec[MAX_RECORDS];
} cpu_log[MAX_CPUS];
static volatile uint32_t cpus_done;

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static uint32_t subleaves(uint32_t leaf)
{
	switch (leaf) {
	case 4:
		return 5;
	case 7:
		return 2;
	case 0xb:
		return 3;
	case 0xd:
		return 3;
	case 0x8000001d:
		return 5;
	default:
		return 1;
	}
}

static void record(uint32_t slot, uint32_t leaf, uint32_t sub)
{
	uint32_t n = cpu_log[slot].count;
	if (n >= MAX_RECORDS)
		return;
	struct cpuid_record *e = &cpu_log[slot].rec[n];
	e->leaf = leaf;
	e->sub = sub;
	cpuid(leaf, sub, e->r);
	cpu_log[slot].count = n + 1;
}

/* Runs on every CPU: records its leaves and checks its APIC IDs. */
static void record_all(uint32_t slot)
{
	uint32_t apic = lapic_id();
	uint32_t r[4];
	cpu_log[slot].apic = apic;
	cpuid(0, 0, r);
	uint32_t max = r[0] < 0x20 ? r[0] : 0x20;
	for (uint32_t l = 0; l <= max; l++)
		for (uint32_t s = 0; s < subleaves(l); s++)
			record(slot, l, s);
	for (uint32_t base = 0x40000000; base <= 0x40000100; base += 0x100) {
		record(slot, base, 0);
		record(slot, base + 1, 0);
	}
	cpuid(0x80000000, 0, r);
	uint32_t xmax = r[0] >= 0x80000000 && r[0] < 0x80000020 ? r[0] : 0x80000000;
	for (uint32_t l = 0x80000000; l <= xmax; l++)
		for (uint32_t s = 0; s < subleaves(l); s++)
			record(slot, l, s);

	int ok = 1;
	cpuid(1, 0, r);
	ok &= r[1] >> 24 == apic;
	if (max >= 0xb) {
		cpuid(0xb, 0, r);
		ok &= r[1] == 0 || r[3] == apic;
	}
	__atomic_store_n(&cpu_log[slot].ids_ok, ok ? 1 : 2, __ATOMIC_SEQ_CST);
}

static void ap_main(void)
{
	uint32_t slot = __atomic_add_fetch(&cpus_done, 1, __ATOMIC_SEQ_CST) - 1;
	if (slot < MAX_CPUS)
		record_all(slot);
	/* returning halts this AP (smp.h) */
}

int guest_main(void)
{
	uint32_t cpus = fw_cfg_read_le16(FW_CFG_NB_CPUS);
	if (cpus == 0 || cpus > MAX_CPUS)
		cpus = 1;
	tap_plan(2);
	tap_diag("%u CPUs (fw_cfg)", cpus);
	cpus_done = 1;
	record_all(0); /* the BSP takes slot 0 */
	if (cpus > 1 && smp_start_aps(ap_main) != 0)
		tap_diag("INIT/SIPI not accepted by the local APIC");
	uint32_t started = 0, all_ok = 1;
	for (uint32_t polls = 0; polls < 20000000 && cpus_done < cpus; polls++)
		cpu_relax();
	for (uint32_t i = 0; i < cpus; i++) {
		for (uint32_t polls = 0; polls < 2000000 && cpu_log[i].ids_ok == 0; polls++)
			cpu_relax();
		if (cpu_log[i].ids_ok == 0)
			continue;
		started++;
		if (cpu_log[i].ids_ok != 1) {
			kprintf("# APIC %u: CPUID.1:EBX[31:24] or CPUID.0BH:EDX is not the local APIC ID\n", cpu_log[i].apic);
			all_ok = 0;
		}
		for (uint32_t j = 0; j < cpu_log[i].count; j++) {
			const struct cpuid_record *e = &cpu_log[i].rec[j];
			kprintf("CPUID apic=%u 0x%08x 0x%02x: eax=0x%08x ebx=0x%08x ecx=0x%08x edx=0x%08x\n",
				cpu_log[i].apic, e->leaf, e->sub, e->r[0], e->r[1], e->r[2], e->r[3]);
		}
	}
	tap_is(started, cpus, "every CPU recorded its CPUID leaves");
	tap_ok(all_ok, "CPUID.1:EBX[31:24] and CPUID.0BH:EDX equal the local APIC ID on every CPU");
	tap_done();
}
