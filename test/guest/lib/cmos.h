/* MC146818 RTC and CMOS NVRAM behind ports 0x70 (index) / 0x71 (data). */
#ifndef KIT_CMOS_H
#define KIT_CMOS_H

#include <stdint.h>

#define CMOS_PORT_INDEX 0x70
#define CMOS_PORT_DATA 0x71

#define RTC_SECONDS 0x00
#define RTC_MINUTES 0x02
#define RTC_HOURS 0x04
#define RTC_DAY_OF_WEEK 0x06
#define RTC_DAY_OF_MONTH 0x07
#define RTC_MONTH 0x08
#define RTC_YEAR 0x09
#define RTC_REG_A 0x0a
#define RTC_REG_B 0x0b
#define RTC_REG_C 0x0c
#define RTC_REG_D 0x0d
#define RTC_CENTURY 0x32 /* the IBM PC/AT location, used by QEMU and SeaBIOS */

#define RTC_SECONDS_ALARM 0x01
#define RTC_MINUTES_ALARM 0x03
#define RTC_HOURS_ALARM 0x05

#define RTC_REG_A_UIP 0x80
#define RTC_REG_B_PIE 0x40
#define RTC_REG_B_AIE 0x20
#define RTC_REG_B_UIE 0x10
#define RTC_REG_C_IRQF 0x80
#define RTC_REG_C_PF 0x40
#define RTC_REG_C_AF 0x20
#define RTC_REG_C_UF 0x10
/* the RTC's ISA interrupt, IOAPIC pin 8 on a PC */
#define RTC_IRQ 8
#define RTC_REG_B_24H 0x02
#define RTC_REG_B_DM_BINARY 0x04
#define RTC_REG_B_SET 0x80
#define RTC_REG_D_VRT 0x80

/* Memory size bytes (IBM PC/AT; QEMU hw/i386/pc.c pc_cmos_init). */
#define CMOS_EXT_MEM_LO 0x30   /* KiB above 1 MiB, capped at 0xffff */
#define CMOS_EXT_MEM_HI 0x31
#define CMOS_EXT_MEM16_LO 0x34 /* 64 KiB units above 16 MiB (below 4 GiB) */
#define CMOS_EXT_MEM16_HI 0x35

uint8_t cmos_read(uint8_t index);
void cmos_write(uint8_t index, uint8_t value);

struct rtc_time {
	uint32_t year; /* four digits */
	uint32_t month, day, hour, minute, second;
};

/* Reads the clock following the update cycle: waits until UIP is clear,
 * reads, and rereads until two reads agree; converts BCD and 12-hour values
 * according to register B. Returns how many times it saw UIP set. */
uint32_t rtc_read_time(struct rtc_time *t);
/* Seconds since 1970-01-01 00:00:00, taking the RTC as UTC. */
uint32_t rtc_to_unix(const struct rtc_time *t);

#endif
