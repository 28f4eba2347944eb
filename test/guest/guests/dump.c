/* Not a test: prints what the machine handed over (multiboot information,
 * memory map, fw_cfg items and files, CMOS bytes, local APIC, PIIX4 PM base)
 * so two VMMs can be compared line by line:
 *   diff <(qemu ... -kernel out/dump.elf) <(tsvmm run --kernel out/dump.elf ...) */
#include "kit.h"

static void hexdump_item(uint16_t key)
{
	uint8_t b[16];
	fw_cfg_read_entry(key, b, sizeof(b));
	kprintf("fw_cfg 0x%04x:", key);
	for (int i = 0; i < 16; i++)
		kprintf(" %02x", b[i]);
	kprintf("\n");
}

int guest_main(void)
{
	const struct multiboot_info *mbi = multiboot_info;
	kprintf("multiboot info at %p: flags 0x%x mem_lower %u mem_upper %u boot_device 0x%x\n", mbi,
		mbi->flags, mbi->mem_lower, mbi->mem_upper, mbi->boot_device);
	kprintf("cmdline at 0x%x: %s\n", mbi->cmdline, multiboot_cmdline());
	kprintf("boot loader name at 0x%x: %s\n", mbi->boot_loader_name,
		mbi->flags & MULTIBOOT_INFO_BOOT_LOADER_NAME ? (const char *)(uintptr_t)mbi->boot_loader_name : "");
	kprintf("%u modules at 0x%x\n", mbi->mods_count, mbi->mods_addr);
	const struct multiboot_mod_list *mods = (const void *)(uintptr_t)mbi->mods_addr;
	for (uint32_t i = 0; i < mbi->mods_count; i++)
		kprintf("module %u: 0x%x-0x%x string at 0x%x: %s\n", i, mods[i].mod_start, mods[i].mod_end,
			mods[i].cmdline, (const char *)(uintptr_t)mods[i].cmdline);
	kprintf("mmap at 0x%x, %u bytes\n", mbi->mmap_addr, mbi->mmap_length);
	for (const struct multiboot_mmap_entry *e = multiboot_mmap_next(NULL); e; e = multiboot_mmap_next(e))
		kprintf("mmap size %u: 0x%010llx-0x%010llx type %u\n", e->size, (unsigned long long)e->addr,
			(unsigned long long)(e->addr + e->len), e->type);

	for (uint16_t key = FW_CFG_SIGNATURE; key <= FW_CFG_FILE_DIR; key++)
		hexdump_item(key);
	for (uint16_t key = 0x8000; key <= 0x8004; key++)
		hexdump_item(key);
	kprintf("fw_cfg DMA register: 0x%llx\n", (unsigned long long)fw_cfg_dma_signature());
	uint32_t count;
	fw_cfg_select(FW_CFG_FILE_DIR);
	fw_cfg_read(&count, sizeof(count));
	count = bswap32(count);
	for (uint32_t i = 0; i < count; i++) {
		struct fw_cfg_file f;
		fw_cfg_read(&f, sizeof(f));
		f.name[55] = 0;
		kprintf("fw_cfg file 0x%04x %8u bytes: %s\n", bswap16(f.select), bswap32(f.size), f.name);
	}

	for (int i = 0; i < 0x80; i++)
		kprintf("%s%02x%s", i % 16 ? " " : "cmos ", cmos_read((uint8_t)i),
			i % 16 == 15 ? "\n" : "");
	kprintf("local APIC: ID %u version 0x%x SVR 0x%x\n", lapic_id(), lapic_read(LAPIC_VERSION),
		lapic_read(LAPIC_SVR));
	kprintf("PCI 00:01.3 vendor/device 0x%08x PMBA 0x%x PMREGMISC 0x%x\n", pci_read32(0, 1, 3, 0),
		pci_read32(0, 1, 3, 0x40), pci_read8(0, 1, 3, 0x80));
	return KIT_EXIT_PASS;
}
