/* Multiboot 0.6.96 boot information as a loader passes it.
 * Command line: mem=<-m in MiB> word=tsvmm-multiboot modsize=<bytes of module 0>
 * modarg=<the text after the module's file name>. Module 0 is a file named
 * multiboot-module.bin holding the pattern byte[i] = (i * 31 + 7) & 0xff. */
#include "kit.h"

extern char _end[]; /* end of this kernel's image, bss included (guest.ld) */

static uint8_t bss_probe[4096];

static int region_available(uint64_t start, uint64_t end)
{
	for (const struct multiboot_mmap_entry *e = multiboot_mmap_next(NULL); e; e = multiboot_mmap_next(e))
		if (e->type == MULTIBOOT_MEMORY_AVAILABLE && e->addr <= start && end <= e->addr + e->len)
			return 1;
	return 0;
}

static int mmap_well_formed(void)
{
	int n = 0;
	for (const struct multiboot_mmap_entry *a = multiboot_mmap_next(NULL); a; a = multiboot_mmap_next(a)) {
		n++;
		if (a->size < 20 || a->len == 0)
			return 0;
		for (const struct multiboot_mmap_entry *b = multiboot_mmap_next(a); b; b = multiboot_mmap_next(b))
			if (a->addr < b->addr + b->len && b->addr < a->addr + a->len)
				return 0; /* overlap */
	}
	return n > 0;
}

static int hole_unavailable(void)
{
	/* 0xA0000-0xFFFFF is VGA memory and BIOS ROM on a PC. */
	for (const struct multiboot_mmap_entry *e = multiboot_mmap_next(NULL); e; e = multiboot_mmap_next(e))
		if (e->type == MULTIBOOT_MEMORY_AVAILABLE && e->addr < 0x100000 && e->addr + e->len > 0xa0000)
			return 0;
	return 1;
}

static uint64_t available_from(uint64_t start)
{
	/* Contiguous available bytes from `start`, across adjacent entries. */
	uint64_t end = start;
	for (int progress = 1; progress;) {
		progress = 0;
		for (const struct multiboot_mmap_entry *e = multiboot_mmap_next(NULL); e; e = multiboot_mmap_next(e))
			if (e->type == MULTIBOOT_MEMORY_AVAILABLE && e->addr <= end && end < e->addr + e->len) {
				end = e->addr + e->len;
				progress = 1;
			}
	}
	return end - start;
}

int guest_main(void)
{
	const struct multiboot_info *mbi = multiboot_info;
	const char *cmdline = multiboot_cmdline();
	uint32_t mem_mib = cmdline_get_u32(cmdline, "mem", 0);
	uint32_t modsize = cmdline_get_u32(cmdline, "modsize", 0);
	char word[32], modarg[64];
	if (cmdline_get(cmdline, "word", word, sizeof(word)) < 0)
		word[0] = 0;
	if (cmdline_get(cmdline, "modarg", modarg, sizeof(modarg)) < 0)
		modarg[0] = 0;

	tap_plan(22);
	tap_diag("info at %p, flags 0x%x, mem_lower %u, mem_upper %u, mmap at 0x%x (%u bytes)", mbi,
		 mbi->flags, mbi->mem_lower, mbi->mem_upper, mbi->mmap_addr, mbi->mmap_length);
	tap_diag("cmdline: %s", cmdline);

	tap_is(multiboot_magic, MULTIBOOT_BOOTLOADER_MAGIC, "EAX holds 0x2BADB002");
	tap_ok(mbi->flags & MULTIBOOT_INFO_MEMORY, "flags bit 0: mem_lower/mem_upper valid");
	tap_ok(mbi->flags & MULTIBOOT_INFO_CMDLINE, "flags bit 2: cmdline valid");
	tap_ok(mbi->flags & MULTIBOOT_INFO_MODS, "flags bit 3: mods valid");
	tap_ok(mbi->flags & MULTIBOOT_INFO_MEM_MAP, "flags bit 6: mmap valid");
	tap_ok(mbi->mem_lower >= 512 && mbi->mem_lower <= 640, "mem_lower is 512-640 KiB");
	uint32_t upper_max = (mem_mib - 1) * 1024;
	tap_okf(mbi->mem_upper <= upper_max && mbi->mem_upper + 1024 >= upper_max,
		"mem_upper is within 1 MiB below -m minus 1 MiB (%u KiB)", upper_max);
	tap_ok(mmap_well_formed(), "memory map entries are non-empty and do not overlap");
	tap_ok(hole_unavailable(), "no available region covers 0xA0000-0xFFFFF");
	tap_ok(region_available(0, (uint64_t)mbi->mem_lower * 1024), "mem_lower matches an available region at 0");
	tap_is(available_from(0x100000) >> 10, mbi->mem_upper,
	       "mem_upper is the available memory contiguous from 1 MiB");
	uint64_t avail = multiboot_mmap_available_bytes();
	tap_okf(avail <= (uint64_t)mem_mib << 20 && avail + (2u << 20) >= (uint64_t)mem_mib << 20,
		"available memory totals -m within 2 MiB (%llu KiB)", (unsigned long long)(avail >> 10));
	tap_ok(region_available(0x100000, (uintptr_t)_end), "the kernel image lies in available memory");

	tap_ok(strcmp(word, "tsvmm-multiboot") == 0, "cmdline carries the -append arguments (word=tsvmm-multiboot)");
	const char *first_end = cmdline;
	while (*first_end && *first_end != ' ')
		first_end++;
	char first[128];
	size_t flen = (size_t)(first_end - cmdline) < sizeof(first) - 1 ? (size_t)(first_end - cmdline) : sizeof(first) - 1;
	memcpy(first, cmdline, flen);
	first[flen] = 0;
	tap_okf(str_ends_with(first, "multiboot.elf"), "cmdline starts with the kernel path (%s)", first);

	tap_is(mbi->mods_count, 1, "one module");
	const struct multiboot_mod_list *mod = (const void *)(uintptr_t)mbi->mods_addr;
	int have_mod = mbi->mods_count >= 1;
	tap_is(have_mod ? mod->mod_end - mod->mod_start : 0, modsize, "module size matches the file");
	tap_ok(have_mod && (mod->mod_start & 0xfff) == 0, "module is page aligned (header flag bit 0)");
	int pattern_ok = have_mod;
	for (uint32_t i = 0; pattern_ok && i < modsize; i++)
		pattern_ok = ((const uint8_t *)(uintptr_t)mod->mod_start)[i] == ((i * 31 + 7) & 0xff);
	tap_ok(pattern_ok, "module bytes match the file");
	const char *mstr = have_mod && mod->cmdline ? (const char *)(uintptr_t)mod->cmdline : "";
	tap_diag("module string: %s", mstr);
	char mexpected[96];
	ksnprintf(mexpected, sizeof(mexpected), "multiboot-module.bin %s", modarg);
	tap_okf(str_ends_with(mstr, mexpected), "module string is the file path, a space, its arguments (%s)",
		mexpected);
	tap_ok(have_mod && region_available(mod->mod_start, mod->mod_end) &&
		       (mod->mod_start >= (uintptr_t)_end || mod->mod_end <= 0x100000),
	       "module lies in available memory, clear of the kernel");

	int zero = 1;
	for (size_t i = 0; i < sizeof(bss_probe); i++)
		zero &= bss_probe[i] == 0;
	tap_ok(zero, "bss is zeroed");
	tap_done();
}
