/* Writes code=<v> from the command line to isa-debug-exit; the VMM must exit
 * with status (v << 1) | 1 (truncated to 8 bits by exit()). */
#include "kit.h"

int guest_main(void)
{
	uint32_t code;
	char value[16];
	if (cmdline_get(multiboot_cmdline(), "code", value, sizeof(value)) < 0 ||
	    !cmdline_parse_u32(value, &code) || code > 0xff) {
		kprintf("# debug_exit: expected code=<0..255> on the command line\n");
		return KIT_EXIT_FAIL;
	}
	kprintf("# writing 0x%x to port 0x%x\n", code, DEBUG_EXIT_PORT);
	debug_exit((uint8_t)code);
}
