/* QEMU firmware configuration interface, x86 I/O ports
 * (qemu docs/specs/fw_cfg.rst). */
#ifndef KIT_FW_CFG_H
#define KIT_FW_CFG_H

#include <stdint.h>
#include <stddef.h>

#define FW_CFG_PORT_SEL 0x510
#define FW_CFG_PORT_DATA 0x511
#define FW_CFG_PORT_DMA 0x514 /* 64-bit big-endian; writing the low half at 0x518 starts a transfer */

/* Selector keys (fw_cfg.rst "Selector Register" and QEMU's fw_cfg_keys). */
#define FW_CFG_SIGNATURE 0x00
#define FW_CFG_ID 0x01
#define FW_CFG_UUID 0x02
#define FW_CFG_RAM_SIZE 0x03
#define FW_CFG_NOGRAPHIC 0x04
#define FW_CFG_NB_CPUS 0x05
#define FW_CFG_MACHINE_ID 0x06
#define FW_CFG_KERNEL_ADDR 0x07
#define FW_CFG_KERNEL_SIZE 0x08
#define FW_CFG_KERNEL_CMDLINE 0x09
#define FW_CFG_INITRD_ADDR 0x0a
#define FW_CFG_INITRD_SIZE 0x0b
#define FW_CFG_BOOT_DEVICE 0x0c
#define FW_CFG_NUMA 0x0d
#define FW_CFG_BOOT_MENU 0x0e
#define FW_CFG_MAX_CPUS 0x0f
#define FW_CFG_KERNEL_ENTRY 0x10
#define FW_CFG_KERNEL_DATA 0x11
#define FW_CFG_INITRD_DATA 0x12
#define FW_CFG_CMDLINE_ADDR 0x13
#define FW_CFG_CMDLINE_SIZE 0x14
#define FW_CFG_CMDLINE_DATA 0x15
#define FW_CFG_SETUP_ADDR 0x16
#define FW_CFG_SETUP_SIZE 0x17
#define FW_CFG_SETUP_DATA 0x18
#define FW_CFG_FILE_DIR 0x19

#define FW_CFG_ID_TRADITIONAL 0x01 /* selector/data ports */
#define FW_CFG_ID_DMA 0x02

/* FWCfgDmaAccess.control bits */
#define FW_CFG_DMA_CTL_ERROR 0x01
#define FW_CFG_DMA_CTL_READ 0x02
#define FW_CFG_DMA_CTL_SKIP 0x04
#define FW_CFG_DMA_CTL_SELECT 0x08
#define FW_CFG_DMA_CTL_WRITE 0x10

/* "QEMU CFG", read back from the DMA address register. */
#define FW_CFG_DMA_SIGNATURE 0x51454d5520434647ULL

/* One FWCfgFile entry of the file directory; integers big-endian. */
struct fw_cfg_file {
	uint32_t size;
	uint16_t select;
	uint16_t reserved;
	char name[56];
} __attribute__((packed));

void fw_cfg_select(uint16_t key);
void fw_cfg_read(void *buf, size_t len); /* from the current item and offset */
void fw_cfg_read_entry(uint16_t key, void *buf, size_t len);
uint16_t fw_cfg_read_le16(uint16_t key);
uint32_t fw_cfg_read_le32(uint16_t key);
uint64_t fw_cfg_read_le64(uint16_t key);
/* The 64-bit DMA address register read back (FW_CFG_DMA_SIGNATURE when
 * the DMA interface exists). */
uint64_t fw_cfg_dma_signature(void);
/* One DMA transfer; `control` holds the FW_CFG_DMA_CTL_* bits and, with
 * SELECT, the key in bits 16-31. Returns 0, or -1 when the device set the
 * error bit or never completed. */
int fw_cfg_dma(uint32_t control, void *buf, uint32_t len);
/* Looks a file up in the directory; returns 0 and fills *out, or -1. */
int fw_cfg_find_file(const char *name, struct fw_cfg_file *out);

#endif
