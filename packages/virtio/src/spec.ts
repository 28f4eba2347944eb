/**
 * Constants of OASIS VIRTIO 1.2 (cs01), named as the spec and Linux's
 * include/uapi/linux/virtio_{config,ring,pci,ids}.h name them:
 * §2.1 device status, §2.2 and §6 feature bits, §2.7 split virtqueues,
 * §4.1.4 virtio structure PCI capabilities, §5 device IDs.
 */

// §2.1 Device Status Field
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 0x01;
export const VIRTIO_CONFIG_S_DRIVER = 0x02;
export const VIRTIO_CONFIG_S_DRIVER_OK = 0x04;
export const VIRTIO_CONFIG_S_FEATURES_OK = 0x08;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// §6 Reserved Feature Bits (bit numbers)
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;

/** A feature bit number as a mask. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

// §2.7.5 The Virtqueue Descriptor Table
export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
/** sizeof(struct virtq_desc): le64 addr, le32 len, le16 flags, le16 next */
export const VIRTQ_DESC_SIZE = 16;

// §2.7.6 The Virtqueue Available Ring
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
// §2.7.8 The Virtqueue Used Ring
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** sizeof(struct virtq_used_elem): le32 id, le32 len */
export const VIRTQ_USED_ELEM_SIZE = 8;

/** §2.7: Queue Size is a power of 2 no larger than 32768. */
export const VIRTQ_MAX_SIZE = 32768;

/** §2.7.2 Legacy alignment does not apply; §2.7 alignment requirements of the three parts. */
export const VIRTQ_DESC_ALIGN = 16;
export const VIRTQ_AVAIL_ALIGN = 2;
export const VIRTQ_USED_ALIGN = 4;

/** Bytes of the driver area (struct virtq_avail incl. used_event) for a queue of `size` entries. */
export function availRingBytes(size: number): number {
  return 6 + 2 * size;
}

/** Bytes of the device area (struct virtq_used incl. avail_event) for a queue of `size` entries. */
export function usedRingBytes(size: number): number {
  return 6 + VIRTQ_USED_ELEM_SIZE * size;
}

// §4.1.4 Virtio Structure PCI Capabilities: cfg_type
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;

/** PCI capability ID of vendor-specific capabilities (PCI Local Bus 3.0, Appendix H). */
export const PCI_CAP_ID_VNDR = 0x09;

/** struct virtio_pci_cap: cap_vndr, cap_next, cap_len, cfg_type, bar, id, padding[2], offset, length */
export const VIRTIO_PCI_CAP_LEN = 16;
/** struct virtio_pci_notify_cap adds le32 notify_off_multiplier */
export const VIRTIO_PCI_NOTIFY_CAP_LEN = 20;
/** struct virtio_pci_cfg_cap adds u8 pci_cfg_data[4] */
export const VIRTIO_PCI_CFG_CAP_LEN = 20;

// §4.1.4.3 Common configuration structure layout (struct virtio_pci_common_cfg)
export const VIRTIO_PCI_COMMON_DFSELECT = 0x00;
export const VIRTIO_PCI_COMMON_DF = 0x04;
export const VIRTIO_PCI_COMMON_GFSELECT = 0x08;
export const VIRTIO_PCI_COMMON_GF = 0x0c;
export const VIRTIO_PCI_COMMON_MSIX = 0x10;
export const VIRTIO_PCI_COMMON_NUMQ = 0x12;
export const VIRTIO_PCI_COMMON_STATUS = 0x14;
export const VIRTIO_PCI_COMMON_CFGGENERATION = 0x15;
export const VIRTIO_PCI_COMMON_Q_SELECT = 0x16;
export const VIRTIO_PCI_COMMON_Q_SIZE = 0x18;
export const VIRTIO_PCI_COMMON_Q_MSIX = 0x1a;
export const VIRTIO_PCI_COMMON_Q_ENABLE = 0x1c;
export const VIRTIO_PCI_COMMON_Q_NOFF = 0x1e;
export const VIRTIO_PCI_COMMON_Q_DESCLO = 0x20;
export const VIRTIO_PCI_COMMON_Q_DESCHI = 0x24;
export const VIRTIO_PCI_COMMON_Q_AVAILLO = 0x28;
export const VIRTIO_PCI_COMMON_Q_AVAILHI = 0x2c;
export const VIRTIO_PCI_COMMON_Q_USEDLO = 0x30;
export const VIRTIO_PCI_COMMON_Q_USEDHI = 0x34;
/** size of virtio_pci_common_cfg up to queue_device (virtio 1.0/1.1; 1.2's queue_notif_config_data/queue_reset are not offered) */
export const VIRTIO_PCI_COMMON_CFG_SIZE = 0x38;

/** §4.1.5.1.2: "no vector" in config_msix_vector / queue_msix_vector */
export const VIRTIO_MSI_NO_VECTOR = 0xffff;

// §4.1.4.5 ISR status
export const VIRTIO_PCI_ISR_QUEUE = 0x1;
export const VIRTIO_PCI_ISR_CONFIG = 0x2;

// §4.1.2 PCI Device Discovery
export const PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1af4;
/** modern (non-transitional) device IDs are 0x1040 + the virtio device ID */
export const PCI_DEVICE_ID_VIRTIO_MODERN_BASE = 0x1040;

// §5 Device Types (include/uapi/linux/virtio_ids.h)
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
