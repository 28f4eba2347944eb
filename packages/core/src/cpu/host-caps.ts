/**
 * What the host's KVM offers besides KVM_GET_SUPPORTED_CPUID, as far as CPU
 * composition cares: the KVM_CHECK_EXTENSION answers for Hyper-V and timer
 * capabilities, the irqchip mode, and optionally KVM_GET_SUPPORTED_HV_CPUID.
 * (api.rst 4.4 "KVM_CHECK_EXTENSION", 4.118 "KVM_GET_SUPPORTED_HV_CPUID".)
 */
import type { CpuidEntry } from './cpuid.js';
import { KVM_CAP, type KvmCapName } from './kvm-abi.js';

export interface HostCpuCapabilities {
  /** KVM_CAP_HYPERV: KVM implements any Hyper-V enlightenment at all */
  hyperv: boolean;
  /** KVM_CAP_HYPERV_TIME: reference counter and reference TSC page (hv-time) */
  hypervTime?: boolean;
  /** KVM_CAP_HYPERV_SYNIC2: synthetic interrupt controller (hv-synic, hv-stimer) */
  hypervSynic2?: boolean;
  /** KVM_CAP_HYPERV_VP_INDEX: HV_X64_MSR_VP_INDEX can be set by the VMM (hv-vpindex) */
  hypervVpIndex?: boolean;
  /**
   * KVM_GET_SUPPORTED_HV_CPUID (needs KVM_CAP_HYPERV_CPUID). When given, each
   * hv-* option is checked against the bits KVM reports, as QEMU does; when
   * absent, against the capabilities above.
   */
  hypervCpuid?: readonly CpuidEntry[];
  /** KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC has TSC-deadline mode (tsc-deadline) */
  tscDeadlineTimer?: boolean;
  /** KVM_CAP_X2APIC_API: 32-bit APIC IDs for vCPUs with APIC IDs above 254 */
  x2apicApi?: boolean;
  /** KVM_CAP_ENFORCE_PV_FEATURE_CPUID (for `kvm-pv-enforce-cpuid=on`) */
  enforcePvFeatureCpuid?: boolean;
  /** how the VM's interrupt controllers are set up; default 'kernel' (KVM_CREATE_IRQCHIP) */
  irqchip?: 'kernel' | 'split' | 'userspace';
  /**
   * The host CPU's brand string (/proc/cpuinfo "model name"), used by the
   * `host` model when KVM_GET_SUPPORTED_CPUID leaves 0x80000002..4 are empty,
   * which they are on most kernels.
   */
  modelId?: string;
}

/** The KVM_CHECK_EXTENSION behind each boolean field of HostCpuCapabilities. */
export const HOST_CAPABILITY_EXTENSIONS = {
  hyperv: 'KVM_CAP_HYPERV',
  hypervTime: 'KVM_CAP_HYPERV_TIME',
  hypervSynic2: 'KVM_CAP_HYPERV_SYNIC2',
  hypervVpIndex: 'KVM_CAP_HYPERV_VP_INDEX',
  tscDeadlineTimer: 'KVM_CAP_TSC_DEADLINE_TIMER',
  x2apicApi: 'KVM_CAP_X2APIC_API',
  enforcePvFeatureCpuid: 'KVM_CAP_ENFORCE_PV_FEATURE_CPUID',
} as const satisfies Record<string, KvmCapName>;

/**
 * Fill HostCpuCapabilities from KVM_CHECK_EXTENSION. `checkExtension` gets the
 * capability number (and name, for logs) and returns the ioctl's result.
 */
export function hostCpuCapabilities(
  checkExtension: (cap: number, name: KvmCapName) => number,
  extra: Pick<HostCpuCapabilities, 'irqchip' | 'modelId' | 'hypervCpuid'> = {},
): HostCpuCapabilities {
  const has = (name: KvmCapName): boolean => checkExtension(KVM_CAP[name], name) > 0;
  return {
    hyperv: has(HOST_CAPABILITY_EXTENSIONS.hyperv),
    hypervTime: has(HOST_CAPABILITY_EXTENSIONS.hypervTime),
    hypervSynic2: has(HOST_CAPABILITY_EXTENSIONS.hypervSynic2),
    hypervVpIndex: has(HOST_CAPABILITY_EXTENSIONS.hypervVpIndex),
    tscDeadlineTimer: has(HOST_CAPABILITY_EXTENSIONS.tscDeadlineTimer),
    x2apicApi: has(HOST_CAPABILITY_EXTENSIONS.x2apicApi),
    enforcePvFeatureCpuid: has(HOST_CAPABILITY_EXTENSIONS.enforcePvFeatureCpuid),
    ...extra,
  };
}
