#include "fw_cfg.h"
#include "io.h"
#include "kstring.h"

void fw_cfg_select(uint16_t key)
{
	outw(FW_CFG_PORT_SEL, key);
}

void fw_cfg_read(void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len--)
		*p++ = inb(FW_CFG_PORT_DATA);
}

void fw_cfg_read_entry(uint16_t key, void *buf, size_t len)
{
	fw_cfg_select(key);
	fw_cfg_read(buf, len);
}

uint16_t fw_cfg_read_le16(uint16_t key)
{
	uint16_t v;
	fw_cfg_read_entry(key, &v, sizeof(v));
	return v;
}

uint32_t fw_cfg_read_le32(uint16_t key)
{
	uint32_t v;
	fw_cfg_read_entry(key, &v, sizeof(v));
	return v;
}

uint64_t fw_cfg_read_le64(uint16_t key)
{
	uint64_t v;
	fw_cfg_read_entry(key, &v, sizeof(v));
	return v;
}

uint64_t fw_cfg_dma_signature(void)
{
	uint32_t hi = bswap32(inl(FW_CFG_PORT_DMA));
	uint32_t lo = bswap32(inl(FW_CFG_PORT_DMA + 4));
	return ((uint64_t)hi << 32) | lo;
}

struct fw_cfg_dma_access {
	uint32_t control; /* big-endian, like every field */
	uint32_t length;
	uint64_t address;
} __attribute__((packed, aligned(16)));

int fw_cfg_dma(uint32_t control, void *buf, uint32_t len)
{
	static volatile struct fw_cfg_dma_access access;
	uint64_t addr = (uintptr_t)buf;
	access.control = bswap32(control);
	access.length = bswap32(len);
	access.address = ((uint64_t)bswap32((uint32_t)addr) << 32) | bswap32((uint32_t)(addr >> 32));
	uint64_t desc = (uintptr_t)&access;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	outl(FW_CFG_PORT_DMA, bswap32((uint32_t)(desc >> 32)));
	outl(FW_CFG_PORT_DMA + 4, bswap32((uint32_t)desc)); /* starts the transfer */
	for (uint32_t polls = 0; polls < 1000000; polls++) {
		uint32_t c = bswap32(access.control);
		if (c & FW_CFG_DMA_CTL_ERROR)
			return -1;
		if (c == 0)
			return 0;
		cpu_relax();
	}
	return -1;
}

int fw_cfg_find_file(const char *name, struct fw_cfg_file *out)
{
	uint32_t count;
	fw_cfg_select(FW_CFG_FILE_DIR);
	fw_cfg_read(&count, sizeof(count));
	count = bswap32(count);
	for (uint32_t i = 0; i < count; i++) {
		struct fw_cfg_file f;
		fw_cfg_read(&f, sizeof(f));
		if (strncmp(f.name, name, sizeof(f.name)) == 0) {
			out->size = bswap32(f.size);
			out->select = bswap16(f.select);
			out->reserved = 0;
			memcpy(out->name, f.name, sizeof(out->name));
			return 0;
		}
	}
	return -1;
}
