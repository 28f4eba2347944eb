/* A kernel booted through the multiboot a.out kludge (see aout_header.S). */
#include "kit.h"

extern const uint32_t aout_mb_header[];
extern char _load_start[], _load_end[], _bss_end[];

static volatile uint32_t loaded_data = 0x5ca1ab1e;
static volatile uint8_t bss_probe[8192];

int guest_main(void)
{
	tap_plan(5);
	tap_ok(aout_mb_header[0] == MULTIBOOT_HEADER_MAGIC && (aout_mb_header[1] & MULTIBOOT_AOUT_KLUDGE),
	       "the header is at header_addr: the image was loaded at load_addr");
	uintptr_t here = (uintptr_t)guest_main;
	tap_ok(here >= (uintptr_t)_load_start && here < (uintptr_t)_load_end,
	       "running from the image, entered at entry_addr");
	tap_is(loaded_data, 0x5ca1ab1e, "initialised data up to load_end_addr is loaded");
	int zero = 1;
	for (size_t i = 0; i < sizeof(bss_probe); i++)
		zero &= bss_probe[i] == 0;
	tap_ok(zero, "memory from load_end_addr to bss_end_addr is zeroed");
	tap_ok(multiboot_info->flags & MULTIBOOT_INFO_MEM_MAP, "boot information has a memory map");
	tap_done();
}
