/* Multiboot header for ELF kernels (Multiboot 0.6.96 section 3.1): the loader
 * takes the load addresses from the ELF program headers. */
#include "multiboot.h"

#define FLAGS (MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO)

	.section .multiboot, "a"
	.align 4
	.long MULTIBOOT_HEADER_MAGIC
	.long FLAGS
	.long -(MULTIBOOT_HEADER_MAGIC + FLAGS)

	.section .note.GNU-stack, "", @progbits
