#include "kit.h"
#include "reboot_test.h"

void reboot_test(uint8_t marker, const char *how, void (*reset)(void))
{
	uint8_t seen = cmos_read(REBOOT_MARKER_INDEX);
	if (seen != marker) {
		kprintf("# first boot: marker 0x%02x in CMOS 0x%02x, resetting via %s\n", marker,
			REBOOT_MARKER_INDEX, how);
		cmos_write(REBOOT_MARKER_INDEX, marker);
		reset();
		debug_exit(KIT_EXIT_FAIL);
	}
	kprintf("# second boot: found the marker\n");
	tap_plan(3);
	tap_okf(1, "the machine restarted after the %s reset", how);
	tap_ok(1, "CMOS NVRAM kept the marker across the reset");
	cmos_write(REBOOT_MARKER_INDEX, 0);
	tap_is(cmos_read(REBOOT_MARKER_INDEX), 0, "marker cleared");
	tap_done();
}
