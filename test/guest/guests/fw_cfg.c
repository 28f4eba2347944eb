/* fw_cfg (qemu docs/specs/fw_cfg.rst) through the I/O ports and DMA.
 * Command line: cpus=<-smp> mem=<-m in MiB> and the harness's fw_cfg file
 * given as file=<name> content=<string>. */
#include "kit.h"

static int is_sorted_directory(uint32_t *count_out)
{
	uint32_t count;
	char prev[56] = { 0 };
	int sorted = 1;
	fw_cfg_select(FW_CFG_FILE_DIR);
	fw_cfg_read(&count, sizeof(count));
	count = bswap32(count);
	for (uint32_t i = 0; i < count; i++) {
		struct fw_cfg_file f;
		fw_cfg_read(&f, sizeof(f));
		f.name[55] = 0;
		if (i && strcmp(prev, f.name) >= 0)
			sorted = 0;
		memcpy(prev, f.name, sizeof(prev));
	}
	*count_out = count;
	return sorted;
}

int guest_main(void)
{
	const char *cmdline = multiboot_cmdline();
	uint32_t cpus = cmdline_get_u32(cmdline, "cpus", 0);
	uint32_t mem_mib = cmdline_get_u32(cmdline, "mem", 0);
	char name[56], content[64];
	if (cmdline_get(cmdline, "file", name, sizeof(name)) < 0)
		name[0] = 0;
	if (cmdline_get(cmdline, "content", content, sizeof(content)) < 0)
		content[0] = 0;
	uint32_t clen = strlen(content);

	tap_plan(20);

	char sig[4];
	fw_cfg_read_entry(FW_CFG_SIGNATURE, sig, 4);
	tap_ok(memcmp(sig, "QEMU", 4) == 0, "signature item reads \"QEMU\"");
	uint32_t id = fw_cfg_read_le32(FW_CFG_ID);
	tap_ok(id & FW_CFG_ID_TRADITIONAL, "ID has bit 0 (traditional interface)");
	tap_ok(id & FW_CFG_ID_DMA, "ID has bit 1 (DMA interface)");
	tap_is(fw_cfg_dma_signature(), FW_CFG_DMA_SIGNATURE,
	       "DMA address register reads \"QEMU CFG\" big-endian");

	fw_cfg_select(FW_CFG_SIGNATURE);
	uint8_t tail[4];
	fw_cfg_read(tail, 4); /* the whole item */
	fw_cfg_read(tail, 4);
	tap_ok(tail[0] == 0 && tail[1] == 0 && tail[2] == 0 && tail[3] == 0,
	       "reads past the end of an item return 0");

	tap_is(fw_cfg_read_le16(FW_CFG_NB_CPUS), cpus, "NB_CPUS (0x05) is the -smp count");
	tap_ok(fw_cfg_read_le16(FW_CFG_MAX_CPUS) >= cpus, "MAX_CPUS (0x0f) is at least NB_CPUS");
	tap_is(fw_cfg_read_le64(FW_CFG_RAM_SIZE), (uint64_t)mem_mib << 20,
	       "RAM_SIZE (0x03) is the -m size in bytes");
	tap_is(fw_cfg_read_le32(FW_CFG_CMDLINE_SIZE), 0,
	       "no command line item on the multiboot path (CMDLINE_SIZE 0x14 reads 0, as QEMU)");

	uint32_t count = 0;
	tap_ok(is_sorted_directory(&count), "file directory is sorted by name");
	tap_ok(count > 0, "file directory has entries");
	struct fw_cfg_file file;
	int found = fw_cfg_find_file(name, &file) == 0;
	tap_okf(found, "file directory lists %s", name);
	tap_is(found ? file.size : 0, clen, "the file's size is the string's length");
	tap_ok(found && file.select >= 0x20, "the file's selector is at or above FW_CFG_FILE_FIRST (0x20)");

	char buf[64];
	memset(buf, 0xff, sizeof(buf));
	if (found)
		fw_cfg_read_entry(file.select, buf, clen);
	tap_ok(found && memcmp(buf, content, clen) == 0, "the file's bytes read through the data port");

	memset(buf, 0xff, sizeof(buf));
	int rc = found ? fw_cfg_dma(((uint32_t)file.select << 16) | FW_CFG_DMA_CTL_SELECT |
					    FW_CFG_DMA_CTL_READ,
				    buf, clen)
		       : -1;
	tap_ok(rc == 0 && memcmp(buf, content, clen) == 0, "DMA select+read returns the file's bytes");

	memset(buf, 0xff, sizeof(buf));
	rc = fw_cfg_dma(FW_CFG_SIGNATURE << 16 | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP, 0, 1);
	rc |= fw_cfg_dma(FW_CFG_DMA_CTL_READ, buf, 3);
	tap_ok(rc == 0 && memcmp(buf, "EMU", 3) == 0, "DMA skip advances the offset of the selected item");

	memset(buf, 0xff, sizeof(buf));
	rc = fw_cfg_dma(FW_CFG_SIGNATURE << 16 | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, buf, 8);
	tap_ok(rc == 0 && memcmp(buf, "QEMU\0\0\0\0", 8) == 0,
	       "DMA read past the end of an item fills zeros");

	rc = found ? fw_cfg_dma(((uint32_t)file.select << 16) | FW_CFG_DMA_CTL_SELECT |
					FW_CFG_DMA_CTL_WRITE,
				buf, clen)
		   : 0;
	tap_ok(rc == -1, "DMA write to a read-only item sets the error bit");
	memset(buf, 0, sizeof(buf));
	if (found)
		fw_cfg_read_entry(file.select, buf, clen);
	tap_ok(found && memcmp(buf, content, clen) == 0, "the rejected write left the item unchanged");
	tap_done();
}
