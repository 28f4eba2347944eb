/**
 * Register offsets and bits of PCI configuration space, named as the specs
 * (and Linux's include/uapi/linux/pci_regs.h) name them.
 *
 * PCI Local Bus Specification 3.0 §6.1 (type 0 header), §6.2.2 (Command),
 * §6.2.3 (Status), §6.2.5 (Base Address Registers), §6.7 (capabilities list),
 * §6.8 (MSI and MSI-X); PCI-to-PCI Bridge Architecture Specification 1.2 §3.2
 * (type 1 header). Capability IDs: PCI Code and ID Assignment Specification.
 */

/** Bytes of conventional PCI configuration space per function. */
export const PCI_CONFIG_SPACE_SIZE = 256;
/** The predefined header ends here; capabilities live above it (PCI 3.0 §6.7). */
export const PCI_CONFIG_HEADER_SIZE = 0x40;
export const PCI_SLOTS_PER_BUS = 32;
export const PCI_FUNCTIONS_PER_SLOT = 8;

// --- common header (type 0 and type 1) -------------------------------------------------
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CLASS_DEVICE = 0x0a;
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_LATENCY_TIMER = 0x0d;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BIST = 0x0f;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;

// --- type 0 only -----------------------------------------------------------------------
export const PCI_CARDBUS_CIS = 0x28;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_ROM_ADDRESS = 0x30;
export const PCI_MIN_GNT = 0x3e;
export const PCI_MAX_LAT = 0x3f;

// --- type 1 (PCI-to-PCI bridge 1.2 §3.2) ---------------------------------------------
export const PCI_PRIMARY_BUS = 0x18;
export const PCI_SECONDARY_BUS = 0x19;
export const PCI_SUBORDINATE_BUS = 0x1a;
export const PCI_SEC_LATENCY_TIMER = 0x1b;
export const PCI_IO_BASE = 0x1c;
export const PCI_IO_LIMIT = 0x1d;
export const PCI_SEC_STATUS = 0x1e;
export const PCI_MEMORY_BASE = 0x20;
export const PCI_MEMORY_LIMIT = 0x22;
export const PCI_PREF_MEMORY_BASE = 0x24;
export const PCI_PREF_MEMORY_LIMIT = 0x26;
export const PCI_PREF_BASE_UPPER32 = 0x28;
export const PCI_PREF_LIMIT_UPPER32 = 0x2c;
export const PCI_IO_BASE_UPPER16 = 0x30;
export const PCI_IO_LIMIT_UPPER16 = 0x32;
export const PCI_ROM_ADDRESS1 = 0x38;
export const PCI_BRIDGE_CONTROL = 0x3e;

/** I/O base/limit low nibble: addressing capability (bridge 1.2 §3.2.5.6) */
export const PCI_IO_RANGE_TYPE_MASK = 0x0f;
export const PCI_IO_RANGE_TYPE_16 = 0x00;
export const PCI_IO_RANGE_TYPE_32 = 0x01;
/** prefetchable base/limit low nibble (bridge 1.2 §3.2.5.9) */
export const PCI_PREF_RANGE_TYPE_MASK = 0x0f;
export const PCI_PREF_RANGE_TYPE_32 = 0x00;
export const PCI_PREF_RANGE_TYPE_64 = 0x01;

/** Bridge Control register bits (bridge 1.2 §3.2.5.18) */
export const PCI_BRIDGE_CTL_PARITY = 0x0001;
export const PCI_BRIDGE_CTL_SERR = 0x0002;
export const PCI_BRIDGE_CTL_ISA = 0x0004;
export const PCI_BRIDGE_CTL_VGA = 0x0008;
export const PCI_BRIDGE_CTL_VGA_16BIT = 0x0010;
export const PCI_BRIDGE_CTL_MASTER_ABORT = 0x0020;
export const PCI_BRIDGE_CTL_BUS_RESET = 0x0040;
export const PCI_BRIDGE_CTL_FAST_BACK = 0x0080;
export const PCI_BRIDGE_CTL_PRI_DISCARD = 0x0100;
export const PCI_BRIDGE_CTL_SEC_DISCARD = 0x0200;
export const PCI_BRIDGE_CTL_DISCARD_STATUS = 0x0400;
export const PCI_BRIDGE_CTL_DISCARD_SERR = 0x0800;

// --- Command register (PCI 3.0 §6.2.2) ------------------------------------------------
export const PCI_COMMAND_IO = 0x0001;
export const PCI_COMMAND_MEMORY = 0x0002;
export const PCI_COMMAND_MASTER = 0x0004;
export const PCI_COMMAND_SPECIAL = 0x0008;
export const PCI_COMMAND_INVALIDATE = 0x0010;
export const PCI_COMMAND_VGA_PALETTE = 0x0020;
export const PCI_COMMAND_PARITY = 0x0040;
export const PCI_COMMAND_WAIT = 0x0080;
export const PCI_COMMAND_SERR = 0x0100;
export const PCI_COMMAND_FAST_BACK = 0x0200;
export const PCI_COMMAND_INTX_DISABLE = 0x0400;

// --- Status register (PCI 3.0 §6.2.3) -------------------------------------------------
export const PCI_STATUS_INTERRUPT = 0x0008;
export const PCI_STATUS_CAP_LIST = 0x0010;
export const PCI_STATUS_66MHZ = 0x0020;
export const PCI_STATUS_FAST_BACK = 0x0080;
export const PCI_STATUS_PARITY = 0x0100;
export const PCI_STATUS_DEVSEL_MASK = 0x0600;
export const PCI_STATUS_SIG_TARGET_ABORT = 0x0800;
export const PCI_STATUS_REC_TARGET_ABORT = 0x1000;
export const PCI_STATUS_REC_MASTER_ABORT = 0x2000;
export const PCI_STATUS_SIG_SYSTEM_ERROR = 0x4000;
export const PCI_STATUS_DETECTED_PARITY = 0x8000;
/** The error bits software clears by writing 1 (PCI 3.0 §6.2.3). */
export const PCI_STATUS_W1C_BITS =
  PCI_STATUS_PARITY |
  PCI_STATUS_SIG_TARGET_ABORT |
  PCI_STATUS_REC_TARGET_ABORT |
  PCI_STATUS_REC_MASTER_ABORT |
  PCI_STATUS_SIG_SYSTEM_ERROR |
  PCI_STATUS_DETECTED_PARITY;

// --- Header Type (PCI 3.0 §6.2.1) -----------------------------------------------------
export const PCI_HEADER_TYPE_NORMAL = 0x00;
export const PCI_HEADER_TYPE_BRIDGE = 0x01;
export const PCI_HEADER_TYPE_MULTI_FUNCTION = 0x80;

// --- Base Address Registers (PCI 3.0 §6.2.5.1) -----------------------------------------
export const PCI_BASE_ADDRESS_SPACE_IO = 0x01;
export const PCI_BASE_ADDRESS_MEM_TYPE_MASK = 0x06;
export const PCI_BASE_ADDRESS_MEM_TYPE_32 = 0x00;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08;
/** address bits of an I/O BAR / a memory BAR */
export const PCI_BASE_ADDRESS_IO_MASK = 0xfffffffc;
export const PCI_BASE_ADDRESS_MEM_MASK = 0xfffffff0;

// --- Capability IDs (PCI Code and ID Assignment Spec, PCI 3.0 appendix H) --------------
export const PCI_CAP_ID_PM = 0x01;
export const PCI_CAP_ID_AGP = 0x02;
export const PCI_CAP_ID_VPD = 0x03;
export const PCI_CAP_ID_SLOTID = 0x04;
export const PCI_CAP_ID_MSI = 0x05;
export const PCI_CAP_ID_CHSWP = 0x06;
export const PCI_CAP_ID_PCIX = 0x07;
export const PCI_CAP_ID_HT = 0x08;
export const PCI_CAP_ID_VNDR = 0x09;
export const PCI_CAP_ID_DBG = 0x0a;
export const PCI_CAP_ID_CCRC = 0x0b;
export const PCI_CAP_ID_SHPC = 0x0c;
export const PCI_CAP_ID_SSVID = 0x0d;
export const PCI_CAP_ID_AGP3 = 0x0e;
export const PCI_CAP_ID_SECDEV = 0x0f;
export const PCI_CAP_ID_EXP = 0x10;
export const PCI_CAP_ID_MSIX = 0x11;

// --- Slot Identification capability (bridge 1.2 §13.1) --------------------------------
/** Expansion Slot Register: number of slots (bits 4:0), First In Chassis (bit 5) */
export const PCI_SID_ESR = 2;
export const PCI_SID_ESR_NSLOTS = 0x1f;
export const PCI_SID_ESR_FIC = 0x20;
export const PCI_SID_CHASSIS_NR = 3;
export const PCI_SID_SIZEOF = 4;

// --- MSI capability (PCI 3.0 §6.8.1) -------------------------------------------------
export const PCI_MSI_FLAGS = 2;
export const PCI_MSI_FLAGS_ENABLE = 0x0001;
/** Multiple Message Capable, log2 of the vectors the function asks for (bits 3:1) */
export const PCI_MSI_FLAGS_QMASK = 0x000e;
/** Multiple Message Enable, log2 of the vectors software grants (bits 6:4) */
export const PCI_MSI_FLAGS_QSIZE = 0x0070;
export const PCI_MSI_FLAGS_64BIT = 0x0080;
export const PCI_MSI_FLAGS_MASKBIT = 0x0100;
export const PCI_MSI_ADDRESS_LO = 4;
/** in a 32-bit MSI capability */
export const PCI_MSI_DATA_32 = 8;
export const PCI_MSI_MASK_32 = 12;
export const PCI_MSI_PENDING_32 = 16;
/** in a 64-bit MSI capability */
export const PCI_MSI_ADDRESS_HI = 8;
export const PCI_MSI_DATA_64 = 12;
export const PCI_MSI_MASK_64 = 16;
export const PCI_MSI_PENDING_64 = 20;

// --- MSI-X capability (PCI 3.0 §6.8.2) -----------------------------------------------
export const PCI_MSIX_FLAGS = 2;
/** Table Size is N-1 (bits 10:0) */
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
/** Table Offset/BIR: BIR in bits 2:0, QWORD-aligned offset above */
export const PCI_MSIX_TABLE = 4;
export const PCI_MSIX_PBA = 8;
export const PCI_MSIX_BIR_MASK = 0x7;
export const PCI_MSIX_CAP_SIZEOF = 12;
/** one table entry: Message Address, Message Upper Address, Message Data, Vector Control */
export const PCI_MSIX_ENTRY_SIZE = 16;
export const PCI_MSIX_ENTRY_LOWER_ADDR = 0;
export const PCI_MSIX_ENTRY_UPPER_ADDR = 4;
export const PCI_MSIX_ENTRY_DATA = 8;
export const PCI_MSIX_ENTRY_VECTOR_CTRL = 12;
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1;
export const PCI_MSIX_MAX_VECTORS = 2048;

/** QEMU's default Subsystem Vendor ID / Subsystem ID (hw/pci/pci.c) */
export const PCI_SUBVENDOR_ID_REDHAT_QUMRANET = 0x1af4;
export const PCI_SUBDEVICE_ID_QEMU = 0x1100;
export const PCI_VENDOR_ID_REDHAT = 0x1b36;
export const PCI_VENDOR_ID_INTEL = 0x8086;

// --- class codes (PCI Code and ID Assignment Spec) -----------------------------------
export const PCI_CLASS_BRIDGE_HOST = 0x0600;
export const PCI_CLASS_BRIDGE_ISA = 0x0601;
export const PCI_CLASS_BRIDGE_PCI = 0x0604;

/** Interrupt Pin register values (PCI 3.0 §6.2.4): 0 none, 1 INTA# … 4 INTD# */
export const PCI_INTERRUPT_PIN_NONE = 0;
export const PCI_INTERRUPT_INTA = 1;
export const PCI_INTERRUPT_INTB = 2;
export const PCI_INTERRUPT_INTC = 3;
export const PCI_INTERRUPT_INTD = 4;
/** Interrupt Line value for "unknown / not connected" on x86 (PCI 3.0 §6.2.4 footnote) */
export const PCI_INTERRUPT_LINE_NONE = 0xff;
