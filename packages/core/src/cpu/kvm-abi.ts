/**
 * The few KVM ABI numbers CPU composition hands to the accelerator:
 * capabilities to check or enable (include/uapi/linux/kvm.h, api.rst 7/8
 * "Capabilities"), the paravirtual MSRs (Documentation/virt/kvm/x86/msr.rst)
 * and the Hyper-V synthetic MSRs (Microsoft Hypervisor TLFS, "Virtual
 * processor" and "Synthetic interrupt controller" chapters).
 *
 * Kept here rather than imported from @tsvmm/kvm so that composing a CPU
 * stays pure TypeScript that runs (and is tested) without the native addon.
 */

/** KVM capability numbers (include/uapi/linux/kvm.h). */
export const KVM_CAP = {
  KVM_CAP_HYPERV: 44,
  KVM_CAP_TSC_DEADLINE_TIMER: 72,
  KVM_CAP_HYPERV_TIME: 96,
  KVM_CAP_SPLIT_IRQCHIP: 121,
  KVM_CAP_X2APIC_API: 129,
  KVM_CAP_HYPERV_SYNIC2: 148,
  KVM_CAP_HYPERV_VP_INDEX: 149,
  KVM_CAP_HYPERV_CPUID: 167,
  KVM_CAP_ENFORCE_PV_FEATURE_CPUID: 190,
} as const;
export type KvmCapName = keyof typeof KVM_CAP;

/** KVM_CAP_X2APIC_API flags (api.rst 7.x "KVM_CAP_X2APIC_API"). */
export const KVM_X2APIC_API_USE_32BIT_IDS = 1n;
export const KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK = 2n;

/** A capability the accelerator must enable with KVM_ENABLE_CAP. */
export interface KvmCapEnable {
  name: KvmCapName;
  cap: number;
  args: bigint[];
  /** 'vcpu': KVM_ENABLE_CAP on each vCPU fd, before KVM_SET_CPUID2; 'vm': once on the VM fd, before creating vCPUs */
  scope: 'vcpu' | 'vm';
  /** why it is needed */
  reason: string;
}

/** An MSR value to write with KVM_SET_MSRS; shaped like @tsvmm/kvm's KvmMsrEntry plus a name. */
export interface MsrSetting {
  index: number;
  data: bigint;
  name: string;
}

/** KVM paravirtual MSRs (msr.rst). */
export const MSR_KVM_SYSTEM_TIME = 0x12;
export const MSR_KVM_SYSTEM_TIME_NEW = 0x4b564d01;
export const MSR_KVM_ASYNC_PF_EN = 0x4b564d02;
export const MSR_KVM_STEAL_TIME = 0x4b564d03;
export const MSR_KVM_PV_EOI_EN = 0x4b564d04;
export const MSR_KVM_POLL_CONTROL = 0x4b564d05;
export const MSR_KVM_ASYNC_PF_INT = 0x4b564d06;

/** Hyper-V synthetic MSRs (TLFS; same numbers as Linux arch/x86/include/asm/hyperv-tlfs.h). */
export const HV_X64_MSR_GUEST_OS_ID = 0x40000000;
export const HV_X64_MSR_HYPERCALL = 0x40000001;
export const HV_X64_MSR_VP_INDEX = 0x40000002;
export const HV_X64_MSR_REFERENCE_TSC = 0x40000021;
export const HV_X64_MSR_SCONTROL = 0x40000080;
export const HV_X64_MSR_SIEFP = 0x40000082;
export const HV_X64_MSR_SIMP = 0x40000083;
export const HV_X64_MSR_SINT0 = 0x40000090;
export const HV_X64_MSR_STIMER0_CONFIG = 0x400000b0;
/** SINTx.Masked, the reset value of every SINT register */
export const HV_SINT_MASKED = 1n << 16n;
