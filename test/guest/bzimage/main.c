/* 64-bit entry of the bzImage test payload: checks what a loader using the
 * 64-bit boot protocol (boot.rst "64-bit Boot Protocol") handed over.
 * Command line: tsvmm-bzimage tsvmm_mem=<-m in MiB> initrd_size=<bytes>;
 * the initrd holds byte[i] = (i * 13 + 5) & 0xff. */
#include <stdint.h>
#include "cmdline.h"
#include "exit.h"
#include "kstring.h"
#include "print.h"
#include "serial.h"
#include "tap.h"

/* struct boot_params (Documentation/arch/x86/zero-page.rst) offsets */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES 0x1e8
#define BP_HDR 0x1f1
#define BP_E820_TABLE 0x2d0
#define BP_E820_MAX 128
/* struct setup_header fields, as offsets into boot_params */
#define HDR_HEADER 0x202
#define HDR_VERSION 0x206
#define HDR_TYPE_OF_LOADER 0x210
#define HDR_LOADFLAGS 0x211
#define HDR_RAMDISK_IMAGE 0x218
#define HDR_RAMDISK_SIZE 0x21c
#define HDR_CMD_LINE_PTR 0x228
#define HDR_INITRD_ADDR_MAX 0x22c
#define HDR_CMDLINE_SIZE 0x238
#define HDR_INIT_SIZE 0x260

#define E820_RAM 1
#define LOAD_ADDR 0x100000u
#define RFLAGS_IF 0x200
#define MSR_EFER 0xc0000080
#define EFER_LMA 0x400

struct boot_e820_entry {
	uint64_t addr;
	uint64_t size;
	uint32_t type;
} __attribute__((packed));

static const uint8_t *bp;
static uint32_t e820_count;
static const struct boot_e820_entry *e820;

static uint32_t u32_at(uint32_t off) { return *(const uint32_t *)(bp + off); }
static uint16_t u16_at(uint32_t off) { return *(const uint16_t *)(bp + off); }

static int ram_covers(uint64_t start, uint64_t end)
{
	for (uint32_t i = 0; i < e820_count; i++)
		if (e820[i].type == E820_RAM && e820[i].addr <= start && end <= e820[i].addr + e820[i].size)
			return 1;
	return 0;
}

static uint64_t rdmsr(uint32_t msr)
{
	uint32_t lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return (uint64_t)hi << 32 | lo;
}

extern char _end[];

void bz_main(const uint8_t *boot_params, uint64_t entry_rflags)
{
	serial_init();
	bp = boot_params;
	uint16_t cs, ds;
	uint64_t cr0;
	__asm__ volatile("mov %%cs, %0; mov %%ds, %1; mov %%cr0, %2" : "=r"(cs), "=r"(ds), "=r"(cr0));

	uint64_t bpa = (uintptr_t)bp;
	uint32_t init_size = (uint32_t)((uintptr_t)_end - LOAD_ADDR);
	int bp_clear = bpa && (bpa + 4096 <= LOAD_ADDR || bpa >= LOAD_ADDR + init_size);
	const char *cmdline = "";
	uint64_t cmd_addr = 0;
	if (bp_clear) {
		cmd_addr = u32_at(HDR_CMD_LINE_PTR) | (uint64_t)u32_at(BP_EXT_CMD_LINE_PTR) << 32;
		if (cmd_addr)
			cmdline = (const char *)(uintptr_t)cmd_addr;
		e820_count = bp[BP_E820_ENTRIES];
		if (e820_count > BP_E820_MAX)
			e820_count = 0;
		e820 = (const struct boot_e820_entry *)(bp + BP_E820_TABLE);
	}
	uint32_t mem_mib = cmdline_get_u32(cmdline, "tsvmm_mem", 0);
	uint32_t initrd_expected = cmdline_get_u32(cmdline, "initrd_size", 0);

	tap_plan(20);
	kprintf("# boot_params at 0x%llx, entry RFLAGS 0x%llx, CS 0x%x DS 0x%x\n",
		(unsigned long long)bpa, (unsigned long long)entry_rflags, cs, ds);
	tap_ok(bp_clear, "RSI points to boot_params outside the payload's init_size range");
	if (!bp_clear)
		tap_done();
	kprintf("# cmdline at 0x%llx: %s\n", (unsigned long long)cmd_addr, cmdline);
	kprintf("# e820: %u entries\n", e820_count);
	for (uint32_t i = 0; i < e820_count; i++)
		kprintf("# e820 0x%010llx-0x%010llx type %u\n", (unsigned long long)e820[i].addr,
			(unsigned long long)(e820[i].addr + e820[i].size), e820[i].type);
	uint64_t initrd = u32_at(HDR_RAMDISK_IMAGE) | (uint64_t)u32_at(BP_EXT_RAMDISK_IMAGE) << 32;
	uint64_t initrd_size = u32_at(HDR_RAMDISK_SIZE) | (uint64_t)u32_at(BP_EXT_RAMDISK_SIZE) << 32;
	kprintf("# initrd at 0x%llx, %llu bytes\n", (unsigned long long)initrd,
		(unsigned long long)initrd_size);

	tap_ok(cr0 & 0x80000001 && (rdmsr(MSR_EFER) & EFER_LMA), "entered in 64-bit mode with paging on");
	tap_ok(!(entry_rflags & RFLAGS_IF), "entered with interrupts disabled");
	tap_is(cs, 0x10, "CS is __BOOT_CS (0x10)");
	tap_is(ds, 0x18, "DS is __BOOT_DS (0x18)");
	tap_ok(memcmp(bp + HDR_HEADER, "HdrS", 4) == 0, "boot_params holds the setup header (\"HdrS\")");
	tap_is(u16_at(HDR_VERSION), 0x020f, "setup header version is the payload's (2.15)");
	tap_ok(bp[HDR_TYPE_OF_LOADER] != 0, "type_of_loader is set");
	tap_ok(bp[HDR_LOADFLAGS] & 0x01, "loadflags keeps LOADED_HIGH");
	tap_is(u32_at(HDR_INIT_SIZE), init_size, "init_size is the payload's");

	tap_ok(cmd_addr != 0, "cmd_line_ptr is set");
	tap_ok(strncmp(cmdline, "tsvmm-bzimage", 13) == 0 && (cmdline[13] == ' ' || !cmdline[13]),
	       "the command line is the -append text (no kernel path in front)");
	tap_ok(strlen(cmdline) <= u32_at(HDR_CMDLINE_SIZE), "the command line fits cmdline_size");

	tap_ok(e820_count >= 1, "boot_params has an e820 table");
	tap_ok(ram_covers(LOAD_ADDR, LOAD_ADDR + init_size), "e820 RAM covers the payload's init_size range");
	uint64_t total = 0;
	int hole_ok = 1;
	for (uint32_t i = 0; i < e820_count; i++)
		if (e820[i].type == E820_RAM) {
			total += e820[i].size;
			if (e820[i].addr < 0x100000 && e820[i].addr + e820[i].size > 0xa0000)
				hole_ok = 0;
		}
	tap_okf(total <= (uint64_t)mem_mib << 20 && total + (2u << 20) >= (uint64_t)mem_mib << 20,
		"e820 RAM totals -m (%u MiB) within 2 MiB", mem_mib);
	tap_ok(hole_ok, "no e820 RAM covers 0xA0000-0xFFFFF");

	tap_is(initrd_size, initrd_expected, "ramdisk_size is the initrd file's size");
	tap_ok(initrd && !(initrd & 0xfff) && ram_covers(initrd, initrd + initrd_size) &&
		       (initrd >= LOAD_ADDR + init_size || initrd + initrd_size <= LOAD_ADDR) &&
		       initrd + initrd_size - 1 <= u32_at(HDR_INITRD_ADDR_MAX),
	       "ramdisk_image is page aligned, in RAM, clear of the payload, below initrd_addr_max");
	int bytes_ok = initrd != 0 && initrd_size == initrd_expected;
	for (uint64_t i = 0; bytes_ok && i < initrd_size; i++)
		bytes_ok = ((const uint8_t *)(uintptr_t)initrd)[i] == ((i * 13 + 5) & 0xff);
	tap_ok(bytes_ok, "initrd bytes match the file");
	tap_done();
}
