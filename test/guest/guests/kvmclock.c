/* kvmclock (Linux Documentation/virt/kvm/x86/msr.rst, cpuid.rst): the guest
 * registers a pvclock_vcpu_time_info with MSR_KVM_SYSTEM_TIME_NEW and reads
 * a nanosecond clock from it and the TSC, as Linux's pvclock_clocksource_read.
 *
 * Command line: now=<host Unix time, seconds> mode=on|off
 *   on:  KVM leaves say KVMKVMKVM with CLOCKSOURCE and CLOCKSOURCE2; the
 *        clock is published, monotonic, advances like the RTC over two RTC
 *        seconds, and with MSR_KVM_WALL_CLOCK_NEW gives the host's time.
 *   off: (`--cpu ...,-kvmclock,kvm-pv-enforce-cpuid=on`) CPUID hides
 *        kvmclock and KVM refuses MSR_KVM_SYSTEM_TIME_NEW with #GP.
 * The host side reads "# kvmclock: ..." lines (test/src/cpu-guest.test.ts). */
#include "kit.h"

#define MSR_KVM_WALL_CLOCK_NEW 0x4b564d00u
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u
#define KVM_FEATURE_CLOCKSOURCE (1u << 0)
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)
#define PVCLOCK_TSC_STABLE_BIT 1u
#define NSEC_PER_SEC 1000000000u

/* arch/x86/include/asm/pvclock-abi.h */
struct pvclock_vcpu_time_info {
	uint32_t version;
	uint32_t pad0;
	uint64_t tsc_timestamp;
	uint64_t system_time;
	uint32_t tsc_to_system_mul;
	int8_t tsc_shift;
	uint8_t flags;
	uint8_t pad[2];
} __attribute__((packed));

struct pvclock_wall_clock {
	uint32_t version;
	uint32_t sec;
	uint32_t nsec;
} __attribute__((packed));

_Static_assert(sizeof(struct pvclock_vcpu_time_info) == 32, "pvclock ABI");

static volatile struct pvclock_vcpu_time_info pvti __attribute__((aligned(64)));
static volatile struct pvclock_wall_clock wall __attribute__((aligned(64)));

volatile uint32_t kvmclock_gp_count;
volatile uint32_t kvmclock_gp_resume;
void kvmclock_gp_handler(void);

/* #GP: count it and resume at kvmclock_gp_resume. Not through IRET, which
 * KVM's instruction emulator implements in real mode only (see movbe.c). */
__asm__(".text\n"
	".globl kvmclock_gp_handler\n"
	"kvmclock_gp_handler:\n"
	"	lock incl kvmclock_gp_count\n"
	"	addl $12, %esp\n" /* error code, EIP, CS */
	"	popfl\n"
	"	jmp *kvmclock_gp_resume\n");

static void set_gp_gate(void)
{
	struct __attribute__((packed)) {
		uint16_t limit;
		uint32_t base;
	} idtr;
	__asm__ volatile("sidt %0" : "=m"(idtr));
	volatile uint16_t *gate = (volatile uint16_t *)(uintptr_t)(idtr.base + 13 * 8);
	uint32_t handler = (uint32_t)(uintptr_t)kvmclock_gp_handler;
	gate[0] = handler & 0xffff;
	gate[1] = 0x08;
	gate[2] = 0x8e00;
	gate[3] = handler >> 16;
}

static void cpuid(uint32_t leaf, uint32_t r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}

/* Returns 0, or 1 when the write raised #GP. */
static int wrmsr_checked(uint32_t msr, uint64_t value)
{
	uint32_t before = kvmclock_gp_count;
	__asm__ volatile("movl $1f, kvmclock_gp_resume\n\t"
			 "wrmsr\n"
			 "1:"
			 :
			 : "c"(msr), "a"((uint32_t)value), "d"((uint32_t)(value >> 32))
			 : "memory");
	return kvmclock_gp_count != before;
}

/* (delta * mul) >> 32 without 64-bit division or libgcc (pvclock_scale_delta). */
static uint64_t scale_delta(uint64_t delta, uint32_t mul, int8_t shift)
{
	if (shift < 0)
		delta >>= -shift;
	else
		delta <<= shift;
	uint64_t lo = (uint64_t)(uint32_t)delta * mul;
	uint64_t hi = (uint64_t)(uint32_t)(delta >> 32) * mul;
	return hi + (lo >> 32);
}

/* pvclock_clocksource_read: retry while the host updates the record (odd version). */
static uint64_t kvmclock_ns(void)
{
	uint32_t version;
	uint64_t ns;
	do {
		version = pvti.version;
		__asm__ volatile("" ::: "memory");
		uint64_t delta = rdtsc() - pvti.tsc_timestamp;
		ns = pvti.system_time + scale_delta(delta, pvti.tsc_to_system_mul, pvti.tsc_shift);
		__asm__ volatile("" ::: "memory");
	} while ((version & 1) || version != pvti.version);
	return ns;
}

/* 64/32 division with divl (quotient < 2^32 for the values used here). */
static uint32_t div_u64_u32(uint64_t n, uint32_t d)
{
	uint32_t hi = (uint32_t)(n >> 32), lo = (uint32_t)n, q, r;
	hi %= d;
	__asm__("divl %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(d));
	return q;
}

/* Polls the RTC until its seconds register changes after an update cycle. */
static int rtc_tick(void)
{
	uint8_t start = cmos_read(RTC_SECONDS);
	for (uint32_t polls = 0; polls < 2000000; polls++)
		if (cmos_read(RTC_SECONDS) != start)
			return 1;
	return 0;
}

static int mode_off(void)
{
	uint32_t r[4];
	cpuid(0x40000001, r);
	tap_plan(2);
	tap_ok(!(r[0] & (KVM_FEATURE_CLOCKSOURCE | KVM_FEATURE_CLOCKSOURCE2)),
	       "CPUID 0x40000001 EAX hides CLOCKSOURCE and CLOCKSOURCE2");
	int gp = wrmsr_checked(MSR_KVM_SYSTEM_TIME_NEW, (uint32_t)(uintptr_t)&pvti | 1);
	kprintf("# kvmclock: features=0x%08x msr_gp=%d\n", r[0], gp);
	tap_ok(gp, "MSR_KVM_SYSTEM_TIME_NEW raises #GP (KVM_CAP_ENFORCE_PV_FEATURE_CPUID)");
	tap_done();
}

int guest_main(void)
{
	const char *cmdline = multiboot_cmdline();
	uint32_t host_now = cmdline_get_u32(cmdline, "now", 0);
	char mode[8] = "on";
	cmdline_get(cmdline, "mode", mode, sizeof(mode));
	set_gp_gate();
	if (strcmp(mode, "off") == 0)
		return mode_off();

	tap_plan(8);
	uint32_t r[4];
	cpuid(0x40000000, r);
	char sig[13];
	memcpy(sig, &r[1], 4);
	memcpy(sig + 4, &r[2], 4);
	memcpy(sig + 8, &r[3], 4);
	sig[12] = 0;
	tap_ok(strcmp(sig, "KVMKVMKVM") == 0, "CPUID 0x40000000 signature is KVMKVMKVM");
	cpuid(0x40000001, r);
	tap_okf((r[0] & (KVM_FEATURE_CLOCKSOURCE | KVM_FEATURE_CLOCKSOURCE2)) ==
			(KVM_FEATURE_CLOCKSOURCE | KVM_FEATURE_CLOCKSOURCE2),
		"CPUID 0x40000001 EAX 0x%08x has CLOCKSOURCE and CLOCKSOURCE2", r[0]);

	int gp = wrmsr_checked(MSR_KVM_SYSTEM_TIME_NEW, (uint32_t)(uintptr_t)&pvti | 1);
	tap_ok(!gp && pvti.version != 0 && !(pvti.version & 1) && pvti.tsc_to_system_mul != 0,
	       "MSR_KVM_SYSTEM_TIME_NEW accepted; KVM published a time record (even version, TSC multiplier)");
	kprintf("# kvmclock: version=%u mul=0x%08x shift=%d flags=0x%02x stable=%d\n", pvti.version,
		pvti.tsc_to_system_mul, pvti.tsc_shift, pvti.flags, pvti.flags & PVCLOCK_TSC_STABLE_BIT);

	uint64_t prev = kvmclock_ns();
	int monotonic = 1;
	for (int i = 0; i < 2000; i++) {
		uint64_t now = kvmclock_ns();
		if (now < prev)
			monotonic = 0;
		prev = now;
	}
	tap_ok(monotonic, "2000 consecutive reads never go backwards");

	/* Two whole RTC seconds, edge to edge, against the kvmclock. */
	int ticked = rtc_tick();
	uint64_t t0 = kvmclock_ns();
	ticked = ticked && rtc_tick() && rtc_tick();
	uint64_t t1 = kvmclock_ns();
	uint32_t elapsed_ms = div_u64_u32(t1 - t0, 1000000);
	kprintf("# kvmclock: rtc_seconds=2 kvmclock_ms=%u\n", elapsed_ms);
	tap_ok(ticked, "the RTC seconds register advanced twice");
	/* Generous: the host is noisy, and an RTC edge is seen late by up to a poll. */
	tap_okf(elapsed_ms >= 1500 && elapsed_ms <= 2500,
		"kvmclock advanced %u ms over two RTC seconds (1500..2500)", elapsed_ms);

	/* Wall clock: KVM writes the Unix time at kvmclock 0 (msr.rst). */
	gp = wrmsr_checked(MSR_KVM_WALL_CLOCK_NEW, (uint32_t)(uintptr_t)&wall);
	uint64_t ns = kvmclock_ns();
	uint32_t wall_now = wall.sec + div_u64_u32(ns + wall.nsec, NSEC_PER_SEC);
	kprintf("# kvmclock: wall=%u host=%u\n", wall_now, host_now);
	tap_ok(!gp && !(wall.version & 1), "MSR_KVM_WALL_CLOCK_NEW accepted");
	uint32_t diff = wall_now > host_now ? wall_now - host_now : host_now - wall_now;
	tap_okf(host_now != 0 && diff <= 60, "wall clock + kvmclock is within 60 s of the host's time (off by %u s)", diff);
	tap_done();
}
