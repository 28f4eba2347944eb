/* Multiboot header with the a.out kludge (flags bit 16, Multiboot 0.6.96
 * section 3.1.3): the loader places the image using these addresses only;
 * the file is a flat binary with no ELF header. */
#include "multiboot.h"

#define FLAGS (MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO | MULTIBOOT_AOUT_KLUDGE)

	.section .multiboot, "a"
	.align 4
	.globl aout_mb_header
aout_mb_header:
	.long MULTIBOOT_HEADER_MAGIC
	.long FLAGS
	.long -(MULTIBOOT_HEADER_MAGIC + FLAGS)
	.long aout_mb_header /* header_addr */
	.long _load_start    /* load_addr */
	.long _load_end      /* load_end_addr */
	.long _bss_end       /* bss_end_addr */
	.long _start         /* entry_addr */

	.section .note.GNU-stack, "", @progbits
