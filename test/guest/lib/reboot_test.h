/* Two-boot tests of a machine reset: the first boot leaves a marker in CMOS
 * NVRAM and resets; the second finds it, clears it and reports in TAP.
 * CMOS survives a reset on a PC (QEMU's mc146818rtc keeps its RAM), and
 * byte 0x60 is used by neither QEMU's pc_cmos_init nor SeaBIOS. */
#ifndef KIT_REBOOT_TEST_H
#define KIT_REBOOT_TEST_H

#define REBOOT_MARKER_INDEX 0x60

/* Runs the two-boot pattern: `reset` must not return. */
__attribute__((noreturn)) void reboot_test(uint8_t marker, const char *how, void (*reset)(void));

#endif
