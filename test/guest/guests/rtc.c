/* MC146818 RTC and the CMOS memory-size bytes, and its interrupts on IRQ 8
 * (periodic, update-ended, alarm; MC146818A datasheet "Interrupts").
 * Command line: now=<host Unix time, seconds> mem=<-m in MiB>. */
#include "kit.h"
#include "intr.h"
#include "virtio.h" /* tsc_per_ms */

#define VEC (INTR_FIRST_VECTOR + 3)

/* register C as the interrupt handler read it (reading C acknowledges the RTC) */
static volatile uint8_t last_c;
static volatile uint8_t all_c;

static void read_c(void)
{
	last_c = cmos_read(RTC_REG_C);
	all_c |= last_c;
}

static uint8_t to_bcd(uint8_t v) { return (uint8_t)((v / 10) << 4 | v % 10); }

/* Tests 15-21: the three interrupt sources, one after the other. */
static void interrupts(uint8_t b)
{
	/* intr_wait's timeouts count TSC ticks calibrated against the RTC's
	 * seconds: calibrate now, while no handler can move the CMOS index */
	tsc_per_ms();
	intr_init();
	intr_set_hook(VEC, read_c);
	ioapic_route(RTC_IRQ, VEC, 0);
	cmos_read(RTC_REG_C);

	/* update-ended: once a second */
	cmos_write(RTC_REG_B, b | RTC_REG_B_UIE);
	uint32_t n = intr_wait(VEC, 1, 2500);
	tap_okf(n >= 1, "update-ended interrupt (UIE) within a second (%u)", n);
	tap_ok(all_c & RTC_REG_C_UF, "the handler reads UF");
	cmos_write(RTC_REG_B, b);
	cmos_read(RTC_REG_C);
	intr_wait(VEC, 0xffffffffu, 50); /* let one in flight land */

	/* alarm: two seconds from now, minutes and hours "don't care" */
	all_c = 0;
	struct rtc_time t;
	rtc_read_time(&t);
	cmos_write(RTC_SECONDS_ALARM, to_bcd((uint8_t)((t.second + 2) % 60)));
	cmos_write(RTC_MINUTES_ALARM, 0xff);
	cmos_write(RTC_HOURS_ALARM, 0xff);
	cmos_read(RTC_REG_C);
	uint32_t before = intr_count[VEC - INTR_FIRST_VECTOR];
	cmos_write(RTC_REG_B, b | RTC_REG_B_AIE);
	n = intr_wait(VEC, before + 1, 4000) - before;
	tap_okf(n >= 1, "alarm interrupt (AIE) when the seconds match (%u)", n);
	tap_ok(all_c & RTC_REG_C_AF, "the handler reads AF");
	cmos_write(RTC_REG_B, b);
	cmos_read(RTC_REG_C);
	intr_wait(VEC, 0xffffffffu, 50);

	/* periodic at the power-on rate (register A RS = 6: 1024 Hz) */
	all_c = 0;
	before = intr_count[VEC - INTR_FIRST_VECTOR];
	cmos_write(RTC_REG_B, b | RTC_REG_B_PIE);
	n = intr_wait(VEC, before + 20, 3000) - before;
	tap_okf(n >= 20, "periodic interrupt (PIE, 1024 Hz): 20 arrive (%u in the wait)", n);
	tap_ok(all_c & RTC_REG_C_PF && all_c & RTC_REG_C_IRQF, "the handler reads PF and IRQF in register C");
	cmos_write(RTC_REG_B, b);
	cmos_read(RTC_REG_C);
	intr_wait(VEC, 0xffffffffu, 50); /* let one in flight land */
	before = intr_count[VEC - INTR_FIRST_VECTOR];
	tap_is(intr_wait(VEC, before + 1, 300), before, "with PIE clear, no more periodic interrupts");
	ioapic_mask(RTC_IRQ);
}

/* Polls register A until the seconds register changes; counts how often
 * UIP was seen set on the way. Returns 0 if seconds never changed. */
static int wait_for_tick(uint32_t *uip_seen)
{
	uint8_t start = cmos_read(RTC_SECONDS);
	*uip_seen = 0;
	outb(CMOS_PORT_INDEX, RTC_REG_A);
	for (uint32_t polls = 0; polls < 400000; polls++) {
		if (inb(CMOS_PORT_DATA) & RTC_REG_A_UIP)
			(*uip_seen)++;
		else if (*uip_seen) {
			/* The update cycle ended: the new second is readable. */
			return cmos_read(RTC_SECONDS) != start;
		}
	}
	return 0;
}

static int abs_diff_le(uint32_t a, uint32_t b, uint32_t tol)
{
	return (a > b ? a - b : b - a) <= tol;
}

int guest_main(void)
{
	const char *cmdline = multiboot_cmdline();
	uint32_t host_now = cmdline_get_u32(cmdline, "now", 0);
	uint32_t mem_mib = cmdline_get_u32(cmdline, "mem", 0);

	tap_plan(21);

	uint8_t a = cmos_read(RTC_REG_A), b = cmos_read(RTC_REG_B), d = cmos_read(RTC_REG_D);
	tap_diag("register A 0x%02x, B 0x%02x, D 0x%02x", a, b, d);
	tap_is(a & 0x70, 0x20, "register A: divider chain runs at 32.768 kHz (DV = 010)");
	tap_ok(b & RTC_REG_B_24H, "register B: 24-hour mode");
	tap_ok(!(b & RTC_REG_B_SET), "register B: SET clear, the clock is running");
	tap_ok(!(b & RTC_REG_B_DM_BINARY), "register B: BCD data mode, as the PC BIOS leaves it");
	tap_ok(d & RTC_REG_D_VRT, "register D: valid RAM and time (VRT)");

	struct rtc_time t;
	rtc_read_time(&t);
	uint32_t guest_now = rtc_to_unix(&t);
	tap_diag("RTC %u-%02u-%02u %02u:%02u:%02u, host %u, guest %u", t.year, t.month, t.day, t.hour,
		 t.minute, t.second, host_now, guest_now);
	tap_ok(t.month >= 1 && t.month <= 12 && t.day >= 1 && t.day <= 31 && t.hour < 24 &&
		       t.minute < 60 && t.second < 60,
	       "date and time fields are in range");
	tap_ok(abs_diff_le(guest_now, host_now, 300), "RTC time is within 5 minutes of the host's (UTC)");

	uint32_t uip_seen;
	int ticked = wait_for_tick(&uip_seen);
	tap_ok(uip_seen > 0, "UIP is set while the update cycle runs");
	tap_ok(ticked, "seconds advance after the update cycle");

	/* Same instant in binary mode: the RTC formats its registers per DM. */
	cmos_write(RTC_REG_B, b | RTC_REG_B_DM_BINARY);
	struct rtc_time bin;
	rtc_read_time(&bin);
	cmos_write(RTC_REG_B, b);
	struct rtc_time bcd;
	rtc_read_time(&bcd);
	tap_diag("binary mode read %u-%02u-%02u %02u:%02u:%02u", bin.year, bin.month, bin.day, bin.hour,
		 bin.minute, bin.second);
	tap_ok(abs_diff_le(rtc_to_unix(&bin), rtc_to_unix(&bcd), 2),
	       "binary mode (register B DM=1) reads the same time as BCD mode");

	uint32_t base = cmos_read(0x15) | cmos_read(0x16) << 8;
	uint32_t ext = cmos_read(CMOS_EXT_MEM_LO) | cmos_read(CMOS_EXT_MEM_HI) << 8;
	uint32_t ext16 = cmos_read(CMOS_EXT_MEM16_LO) | cmos_read(CMOS_EXT_MEM16_HI) << 8;
	uint32_t ext_expected = (mem_mib - 1) * 1024 > 0xffff ? 0xffff : (mem_mib - 1) * 1024;
	uint32_t ext16_expected = mem_mib > 16 ? (mem_mib - 16) * 16 : 0;
	tap_is(base, 640, "CMOS 0x15/0x16: 640 KiB base memory");
	tap_is(ext, ext_expected, "CMOS 0x30/0x31: KiB above 1 MiB, capped at 0xffff");
	tap_is(ext16, ext16_expected, "CMOS 0x34/0x35: 64 KiB blocks above 16 MiB");
	tap_is(cmos_read(RTC_CENTURY), 0x20, "CMOS 0x32: century 20 in BCD");

	interrupts(b);
	tap_done();
}
