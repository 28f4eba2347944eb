#include "cmos.h"
#include "io.h"
#include "kstring.h"

uint8_t cmos_read(uint8_t index)
{
	outb(CMOS_PORT_INDEX, index & 0x7f); /* bit 7 clear: NMI stays enabled */
	return inb(CMOS_PORT_DATA);
}

void cmos_write(uint8_t index, uint8_t value)
{
	outb(CMOS_PORT_INDEX, index & 0x7f);
	outb(CMOS_PORT_DATA, value);
}

static uint32_t from_bcd(uint8_t v) { return (v >> 4) * 10 + (v & 0x0f); }

struct raw_time {
	uint8_t sec, min, hour, day, mon, year, century;
};

static uint32_t read_raw(struct raw_time *r)
{
	uint32_t uip = 0;
	for (uint32_t polls = 0; polls < 100000 && (cmos_read(RTC_REG_A) & RTC_REG_A_UIP); polls++)
		uip++;
	r->sec = cmos_read(RTC_SECONDS);
	r->min = cmos_read(RTC_MINUTES);
	r->hour = cmos_read(RTC_HOURS);
	r->day = cmos_read(RTC_DAY_OF_MONTH);
	r->mon = cmos_read(RTC_MONTH);
	r->year = cmos_read(RTC_YEAR);
	r->century = cmos_read(RTC_CENTURY);
	return uip;
}

uint32_t rtc_read_time(struct rtc_time *t)
{
	struct raw_time a, b;
	uint32_t uip = read_raw(&a);
	for (int tries = 0; tries < 10; tries++) {
		uip += read_raw(&b);
		if (memcmp(&a, &b, sizeof(a)) == 0)
			break;
		a = b;
	}
	uint8_t regb = cmos_read(RTC_REG_B);
	int pm = 0;
	if (!(regb & RTC_REG_B_24H)) {
		pm = a.hour & 0x80;
		a.hour &= 0x7f;
	}
	if (!(regb & RTC_REG_B_DM_BINARY)) {
		t->second = from_bcd(a.sec);
		t->minute = from_bcd(a.min);
		t->hour = from_bcd(a.hour);
		t->day = from_bcd(a.day);
		t->month = from_bcd(a.mon);
		t->year = from_bcd(a.century) * 100 + from_bcd(a.year);
	} else {
		t->second = a.sec;
		t->minute = a.min;
		t->hour = a.hour;
		t->day = a.day;
		t->month = a.mon;
		t->year = a.century * 100u + a.year;
	}
	if (!(regb & RTC_REG_B_24H))
		t->hour = (t->hour % 12) + (pm ? 12 : 0);
	return uip;
}

uint32_t rtc_to_unix(const struct rtc_time *t)
{
	/* Days from civil (H. Hinnant), on the March-based year. */
	uint32_t y = t->year - (t->month <= 2);
	uint32_t era = y / 400, yoe = y - era * 400;
	uint32_t mp = (t->month + 9) % 12;
	uint32_t doy = (153 * mp + 2) / 5 + t->day - 1;
	uint32_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	uint32_t days = era * 146097 + doe - 719468;
	return days * 86400 + t->hour * 3600 + t->minute * 60 + t->second;
}
