/* Reset through the 8042 keyboard controller (0x64 <- 0xfe); two boots. */
#include "kit.h"
#include "reboot_test.h"

int guest_main(void)
{
	reboot_test(0xa5, "8042 (0x64 <- 0xfe)", kbd_reset);
}
