#include "multiboot.h"
#include <stddef.h>

uint32_t multiboot_magic;
const struct multiboot_info *multiboot_info;

const struct multiboot_mmap_entry *multiboot_mmap_next(const struct multiboot_mmap_entry *prev)
{
	const struct multiboot_info *mbi = multiboot_info;
	if (!mbi || !(mbi->flags & MULTIBOOT_INFO_MEM_MAP))
		return NULL;
	uintptr_t start = mbi->mmap_addr, end = start + mbi->mmap_length;
	uintptr_t next = prev ? (uintptr_t)prev + prev->size + 4 : start;
	if (next + sizeof(struct multiboot_mmap_entry) > end)
		return NULL;
	return (const struct multiboot_mmap_entry *)next;
}

uint64_t multiboot_mmap_available_bytes(void)
{
	uint64_t total = 0;
	for (const struct multiboot_mmap_entry *e = multiboot_mmap_next(NULL); e;
	     e = multiboot_mmap_next(e))
		if (e->type == MULTIBOOT_MEMORY_AVAILABLE)
			total += e->len;
	return total;
}

const char *multiboot_cmdline(void)
{
	const struct multiboot_info *mbi = multiboot_info;
	if (!mbi || !(mbi->flags & MULTIBOOT_INFO_CMDLINE) || !mbi->cmdline)
		return "";
	return (const char *)(uintptr_t)mbi->cmdline;
}
