/**
 * KVM constants, with the names and values of include/uapi/linux/kvm.h and
 * arch/x86/include/uapi/asm/kvm.h (Documentation/virt/kvm/api.rst cites them
 * by these names). test/constants.test.ts checks every value against the
 * headers the addon was compiled with.
 */

// Capabilities (api.rst section 4.4 KVM_CHECK_EXTENSION; sections 7 and 8)
export const KVM_CAP_IRQCHIP = 0;
export const KVM_CAP_HLT = 1;
export const KVM_CAP_USER_MEMORY = 3;
export const KVM_CAP_SET_TSS_ADDR = 4;
export const KVM_CAP_EXT_CPUID = 7;
export const KVM_CAP_NR_VCPUS = 9;
export const KVM_CAP_NR_MEMSLOTS = 10;
export const KVM_CAP_PIT = 11;
export const KVM_CAP_MP_STATE = 14;
export const KVM_CAP_SYNC_MMU = 16;
export const KVM_CAP_IOMMU = 18;
export const KVM_CAP_DESTROY_MEMORY_REGION_WORKS = 21;
export const KVM_CAP_USER_NMI = 22;
export const KVM_CAP_SET_GUEST_DEBUG = 23;
export const KVM_CAP_REINJECT_CONTROL = 24;
export const KVM_CAP_IRQ_ROUTING = 25;
export const KVM_CAP_IRQ_INJECT_STATUS = 26;
export const KVM_CAP_MCE = 31;
export const KVM_CAP_IRQFD = 32;
export const KVM_CAP_PIT2 = 33;
export const KVM_CAP_SET_BOOT_CPU_ID = 34;
export const KVM_CAP_PIT_STATE2 = 35;
export const KVM_CAP_IOEVENTFD = 36;
export const KVM_CAP_SET_IDENTITY_MAP_ADDR = 37;
export const KVM_CAP_ADJUST_CLOCK = 39;
export const KVM_CAP_VCPU_EVENTS = 41;
export const KVM_CAP_PCI_SEGMENT = 47;
export const KVM_CAP_INTR_SHADOW = 49;
export const KVM_CAP_DEBUGREGS = 50;
export const KVM_CAP_X86_ROBUST_SINGLESTEP = 51;
export const KVM_CAP_XSAVE = 55;
export const KVM_CAP_XCRS = 56;
export const KVM_CAP_ASYNC_PF = 59;
export const KVM_CAP_TSC_CONTROL = 60;
export const KVM_CAP_GET_TSC_KHZ = 61;
export const KVM_CAP_KVMCLOCK_CTRL = 76;
export const KVM_CAP_SIGNAL_MSI = 77;
export const KVM_CAP_READONLY_MEM = 81;
export const KVM_CAP_IRQFD_RESAMPLE = 82;
export const KVM_CAP_MAX_VCPUS = 66;
export const KVM_CAP_COALESCED_MMIO = 15;
export const KVM_CAP_IMMEDIATE_EXIT = 136;
export const KVM_CAP_MAX_VCPU_ID = 128;
export const KVM_CAP_X2APIC_API = 129;
export const KVM_CAP_SPLIT_IRQCHIP = 121;
export const KVM_CAP_IOEVENTFD_ANY_LENGTH = 122;
export const KVM_CAP_CHECK_EXTENSION_VM = 105;
export const KVM_CAP_MULTI_ADDRESS_SPACE = 118;
export const KVM_CAP_GET_MSR_FEATURES = 153;
export const KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168;
export const KVM_CAP_HYPERV = 44;
export const KVM_CAP_EXCEPTION_PAYLOAD = 164;
export const KVM_CAP_DIRTY_LOG_RING = 192;
export const KVM_CAP_XSAVE2 = 208;
export const KVM_CAP_SYS_ATTRIBUTES = 209;
export const KVM_CAP_VM_TSC_CONTROL = 214;
export const KVM_CAP_X86_USER_SPACE_MSR = 188;
export const KVM_CAP_ENABLE_CAP = 54;
export const KVM_CAP_HYPERV_TIME = 96;
export const KVM_CAP_NOP_IO_DELAY = 12;
export const KVM_CAP_PV_MMU = 13;
export const KVM_CAP_CLOCKSOURCE = 8;
export const KVM_CAP_TSC_DEADLINE_TIMER = 72;
export const KVM_CAP_X86_DISABLE_EXITS = 143;
export const KVM_CAP_DIRTY_LOG_RING_ACQ_REL = 223;
export const KVM_CAP_ENFORCE_PV_FEATURE_CPUID = 190;

// Exit reasons (api.rst section 5, "The kvm_run structure")
export const KVM_EXIT_UNKNOWN = 0;
export const KVM_EXIT_EXCEPTION = 1;
export const KVM_EXIT_IO = 2;
export const KVM_EXIT_HYPERCALL = 3;
export const KVM_EXIT_DEBUG = 4;
export const KVM_EXIT_HLT = 5;
export const KVM_EXIT_MMIO = 6;
export const KVM_EXIT_IRQ_WINDOW_OPEN = 7;
export const KVM_EXIT_SHUTDOWN = 8;
export const KVM_EXIT_FAIL_ENTRY = 9;
export const KVM_EXIT_INTR = 10;
export const KVM_EXIT_SET_TPR = 11;
export const KVM_EXIT_TPR_ACCESS = 12;
export const KVM_EXIT_NMI = 16;
export const KVM_EXIT_INTERNAL_ERROR = 17;
export const KVM_EXIT_SYSTEM_EVENT = 24;
export const KVM_EXIT_IOAPIC_EOI = 26;
export const KVM_EXIT_HYPERV = 27;
export const KVM_EXIT_X86_RDMSR = 29;
export const KVM_EXIT_X86_WRMSR = 30;
export const KVM_EXIT_DIRTY_RING_FULL = 31;
export const KVM_EXIT_AP_RESET_HOLD = 32;
export const KVM_EXIT_X86_BUS_LOCK = 33;
export const KVM_EXIT_NOTIFY = 37;
export const KVM_EXIT_IO_IN = 0;
export const KVM_EXIT_IO_OUT = 1;

// KVM_EXIT_INTERNAL_ERROR suberrors
export const KVM_INTERNAL_ERROR_EMULATION = 1;
export const KVM_INTERNAL_ERROR_SIMUL_EX = 2;
export const KVM_INTERNAL_ERROR_DELIVERY_EV = 3;
export const KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON = 4;

// KVM_EXIT_SYSTEM_EVENT types
export const KVM_SYSTEM_EVENT_SHUTDOWN = 1;
export const KVM_SYSTEM_EVENT_RESET = 2;
export const KVM_SYSTEM_EVENT_CRASH = 3;
export const KVM_SYSTEM_EVENT_WAKEUP = 4;
export const KVM_SYSTEM_EVENT_SUSPEND = 5;
export const KVM_SYSTEM_EVENT_SEV_TERM = 6;

// KVM_SET_USER_MEMORY_REGION flags
export const KVM_MEM_LOG_DIRTY_PAGES = 1;
export const KVM_MEM_READONLY = 2;

// KVM_SET_GSI_ROUTING
export const KVM_IRQ_ROUTING_IRQCHIP = 1;
export const KVM_IRQ_ROUTING_MSI = 2;
export const KVM_MSI_VALID_DEVID = 1;
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;

// KVM_IOEVENTFD flags
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1;
export const KVM_IOEVENTFD_FLAG_PIO = 2;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 4;

// KVM_IRQFD flags
export const KVM_IRQFD_FLAG_DEASSIGN = 1;
export const KVM_IRQFD_FLAG_RESAMPLE = 2;

// KVM_CREATE_PIT2 flags
export const KVM_PIT_SPEAKER_DUMMY = 1;

// KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 flags
export const KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1;
export const KVM_DIRTY_LOG_INITIALLY_SET = 2;

// KVM_GET_CLOCK flags
export const KVM_CLOCK_TSC_STABLE = 2;
export const KVM_CLOCK_REALTIME = 4;
export const KVM_CLOCK_HOST_TSC = 8;

// KVM_GET_MP_STATE values
export const KVM_MP_STATE_RUNNABLE = 0;
export const KVM_MP_STATE_UNINITIALIZED = 1;
export const KVM_MP_STATE_INIT_RECEIVED = 2;
export const KVM_MP_STATE_HALTED = 3;
export const KVM_MP_STATE_SIPI_RECEIVED = 4;

// KVM_GET_VCPU_EVENTS flags
export const KVM_VCPUEVENT_VALID_NMI_PENDING = 1;
export const KVM_VCPUEVENT_VALID_SIPI_VECTOR = 2;
export const KVM_VCPUEVENT_VALID_SHADOW = 4;
export const KVM_VCPUEVENT_VALID_SMM = 8;
export const KVM_VCPUEVENT_VALID_PAYLOAD = 16;
export const KVM_VCPUEVENT_VALID_TRIPLE_FAULT = 32;

// KVM_GET_CPUID2 entry flags
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

// Sizes
export const KVM_API_VERSION = 12;
export const KVM_APIC_REG_SIZE = 1024;
export const KVM_NR_INTERRUPTS = 256;
export const KVM_MAX_XCRS = 16;
