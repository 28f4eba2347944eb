/* `tsvmm run --demo`: greets, reports what the machine gave it, and powers
 * off (ACPI S5), so the VMM exits with status 0. */
#include "kit.h"

static const char *const month_names[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

int guest_main(void)
{
	const struct multiboot_info *mbi = multiboot_info;
	kprintf("Hello from the tsvmm demo guest!\n");
	if (mbi->flags & MULTIBOOT_INFO_MEMORY)
		kprintf("memory: %u KiB low, %u KiB above 1 MiB\n", mbi->mem_lower, mbi->mem_upper);
	uint64_t avail = multiboot_mmap_available_bytes();
	if (avail)
		kprintf("memory map: %llu KiB available\n", (unsigned long long)(avail >> 10));
	char sig[5] = { 0 };
	fw_cfg_read_entry(FW_CFG_SIGNATURE, sig, 4);
	if (memcmp(sig, "QEMU", 4) == 0)
		kprintf("cpus: %u (fw_cfg)\n", fw_cfg_read_le16(FW_CFG_NB_CPUS));
	else
		kprintf("cpus: unknown (no fw_cfg device)\n");
	struct rtc_time t;
	rtc_read_time(&t);
	const char *mon = t.month >= 1 && t.month <= 12 ? month_names[t.month - 1] : "???";
	kprintf("clock: %u %s %u %02u:%02u:%02u (RTC)\n", t.day, mon, t.year, t.hour, t.minute,
		t.second);
	kprintf("Powering off.\n");
	acpi_poweroff();
}
