/* Reset through a triple fault (zero-limit IDT, then ud2); two boots.
 * With --no-reboot (QEMU: -no-reboot) the VMM stops after the first. */
#include "kit.h"
#include "reboot_test.h"

int guest_main(void)
{
	reboot_test(0x5a, "triple fault", triple_fault);
}
