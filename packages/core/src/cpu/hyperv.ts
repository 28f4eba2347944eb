/**
 * Hyper-V enlightenments for Windows guests.
 *
 * Leaves 0x40000000..0x40000005 follow the Microsoft Hypervisor Top-Level
 * Functional Specification (TLFS), "Hypervisor Discovery" / "Feature and
 * Interface Discovery": vendor and max leaf, interface signature "Hv#1",
 * system identity, feature identification (partition privileges in EAX/EBX,
 * misc features in EDX), implementation recommendations (EBX = spinlock
 * retries), implementation limits. Bit numbers are the TLFS's, as in QEMU's
 * target/i386/kvm/hyperv-proto.h. Which KVM capability each option needs and
 * the option names and dependencies are QEMU's (target/i386/kvm/kvm.c
 * kvm_hyperv_properties, docs/system/i386/hyperv.rst).
 *
 * With Hyper-V on, the KVM leaves move to 0x40000100 (QEMU's kvm_base =
 * KVM_CPUID_SIGNATURE_NEXT); Linux guests look for "KVMKVMKVM" in steps of
 * 0x100, Windows reads 0x40000000.
 */
import { ConfigError } from '../errors.js';
import { cpuidEntry, cpuidRegisterValue, packAscii, type CpuidEntry, type CpuidRegister } from './cpuid.js';
import type { HostCpuCapabilities } from './host-caps.js';
import {
  HV_SINT_MASKED,
  HV_X64_MSR_GUEST_OS_ID,
  HV_X64_MSR_HYPERCALL,
  HV_X64_MSR_REFERENCE_TSC,
  HV_X64_MSR_SCONTROL,
  HV_X64_MSR_SIEFP,
  HV_X64_MSR_SIMP,
  HV_X64_MSR_SINT0,
  HV_X64_MSR_STIMER0_CONFIG,
  HV_X64_MSR_VP_INDEX,
  KVM_CAP,
  type KvmCapEnable,
  type KvmCapName,
  type MsrSetting,
} from './kvm-abi.js';

export const HYPERV_ENLIGHTENMENTS = [
  'hv-relaxed',
  'hv-vapic',
  'hv-time',
  'hv-vpindex',
  'hv-runtime',
  'hv-synic',
  'hv-stimer',
  'hv-reset',
  'hv-frequencies',
] as const;
export type HypervEnlightenment = (typeof HYPERV_ENLIGHTENMENTS)[number];

/** Hyper-V options as a config file or RPC request gives them. */
export type HypervInput = Partial<Record<HypervEnlightenment, boolean>> & { 'hv-spinlocks'?: number };

/** Resolved Hyper-V options. */
export interface HypervOptions {
  enlightenments: ReadonlySet<HypervEnlightenment>;
  /** spinlock retries before notifying the hypervisor (CPUID 0x40000004 EBX); undefined = never notify */
  spinlocks: number | undefined;
}

/** CPUID 0x40000004 EBX value meaning "never notify" (TLFS), QEMU's default. */
export const HV_SPINLOCK_NEVER_NOTIFY = 0xffffffff;
/** The smallest retry count QEMU accepts for hv-spinlocks (0xFFF). */
export const HV_SPINLOCKS_MIN = 0xfff;

export const HV_CPUID_VENDOR_AND_MAX_FUNCTIONS = 0x40000000;
export const HV_CPUID_INTERFACE = 0x40000001;
export const HV_CPUID_VERSION = 0x40000002;
export const HV_CPUID_FEATURES = 0x40000003;
export const HV_CPUID_ENLIGHTMENT_INFO = 0x40000004;
export const HV_CPUID_IMPLEMENT_LIMITS = 0x40000005;

// HV_CPUID_FEATURES.EAX (partition privileges)
const HV_VP_RUNTIME_AVAILABLE = 1 << 0;
const HV_TIME_REF_COUNT_AVAILABLE = 1 << 1;
const HV_SYNIC_AVAILABLE = 1 << 2;
const HV_SYNTIMERS_AVAILABLE = 1 << 3;
const HV_APIC_ACCESS_AVAILABLE = 1 << 4;
const HV_HYPERCALL_AVAILABLE = 1 << 5;
const HV_VP_INDEX_AVAILABLE = 1 << 6;
const HV_RESET_AVAILABLE = 1 << 7;
const HV_REFERENCE_TSC_AVAILABLE = 1 << 9;
const HV_ACCESS_FREQUENCY_MSRS = 1 << 11;
// HV_CPUID_FEATURES.EBX
const HV_POST_MESSAGES = 1 << 4;
const HV_SIGNAL_EVENTS = 1 << 5;
// HV_CPUID_FEATURES.EDX
const HV_CPU_DYNAMIC_PARTITIONING_AVAILABLE = 1 << 3;
const HV_FREQUENCY_MSRS_AVAILABLE = 1 << 8;
// HV_CPUID_ENLIGHTMENT_INFO.EAX
const HV_APIC_ACCESS_RECOMMENDED = 1 << 3;
const HV_RELAXED_TIMING_RECOMMENDED = 1 << 5;

/** "Hv#1": the vendor-neutral interface signature (TLFS). */
export const HV_INTERFACE_SIGNATURE = 0x31237648;

/**
 * Identity reported in 0x40000002: QEMU 7.2's defaults (hv-version-id-build
 * 14393, major 10, minor 0 — Windows Server 2016), which is what Windows
 * guests under QEMU have been seeing.
 */
export const HV_VERSION_DEFAULT = { build: 14393, major: 10, minor: 0 } as const;

interface EnlightenmentSpec {
  desc: string;
  /** bits of KVM_GET_SUPPORTED_HV_CPUID that must be set, and the guest sees */
  flags: { leaf: number; reg: CpuidRegister; bits: number }[];
  /** capability checked when no KVM_GET_SUPPORTED_HV_CPUID table is given */
  cap: KvmCapName;
  capField: keyof HostCpuCapabilities;
  deps: HypervEnlightenment[];
}

const SPECS: Record<HypervEnlightenment, EnlightenmentSpec> = {
  'hv-relaxed': {
    desc: 'relaxed timing',
    flags: [{ leaf: HV_CPUID_ENLIGHTMENT_INFO, reg: 'eax', bits: HV_RELAXED_TIMING_RECOMMENDED }],
    cap: 'KVM_CAP_HYPERV',
    capField: 'hyperv',
    deps: [],
  },
  'hv-vapic': {
    desc: 'virtual APIC',
    flags: [{ leaf: HV_CPUID_FEATURES, reg: 'eax', bits: HV_APIC_ACCESS_AVAILABLE }],
    cap: 'KVM_CAP_HYPERV',
    capField: 'hyperv',
    deps: [],
  },
  'hv-time': {
    desc: 'clocksources',
    flags: [{ leaf: HV_CPUID_FEATURES, reg: 'eax', bits: HV_TIME_REF_COUNT_AVAILABLE | HV_REFERENCE_TSC_AVAILABLE }],
    cap: 'KVM_CAP_HYPERV_TIME',
    capField: 'hypervTime',
    deps: [],
  },
  'hv-vpindex': {
    desc: 'VP_INDEX MSR',
    flags: [{ leaf: HV_CPUID_FEATURES, reg: 'eax', bits: HV_VP_INDEX_AVAILABLE }],
    cap: 'KVM_CAP_HYPERV_VP_INDEX',
    capField: 'hypervVpIndex',
    deps: [],
  },
  'hv-runtime': {
    desc: 'VP_RUNTIME MSR',
    flags: [{ leaf: HV_CPUID_FEATURES, reg: 'eax', bits: HV_VP_RUNTIME_AVAILABLE }],
    cap: 'KVM_CAP_HYPERV',
    capField: 'hyperv',
    deps: [],
  },
  'hv-synic': {
    desc: 'synthetic interrupt controller',
    flags: [{ leaf: HV_CPUID_FEATURES, reg: 'eax', bits: HV_SYNIC_AVAILABLE }],
    cap: 'KVM_CAP_HYPERV_SYNIC2',
    capField: 'hypervSynic2',
    // QEMU: SynIC's message/event pages are addressed by VP index
    deps: ['hv-vpindex'],
  },
  'hv-stimer': {
    desc: 'synthetic timers',
    flags: [{ leaf: HV_CPUID_FEATURES, reg: 'eax', bits: HV_SYNTIMERS_AVAILABLE }],
    cap: 'KVM_CAP_HYPERV_SYNIC2',
    capField: 'hypervSynic2',
    deps: ['hv-synic', 'hv-time'],
  },
  'hv-reset': {
    desc: 'reset MSR',
    flags: [{ leaf: HV_CPUID_FEATURES, reg: 'eax', bits: HV_RESET_AVAILABLE }],
    cap: 'KVM_CAP_HYPERV',
    capField: 'hyperv',
    deps: [],
  },
  'hv-frequencies': {
    desc: 'frequency MSRs',
    flags: [
      { leaf: HV_CPUID_FEATURES, reg: 'eax', bits: HV_ACCESS_FREQUENCY_MSRS },
      { leaf: HV_CPUID_FEATURES, reg: 'edx', bits: HV_FREQUENCY_MSRS_AVAILABLE },
    ],
    cap: 'KVM_CAP_HYPERV',
    capField: 'hyperv',
    deps: [],
  },
};

export function isHypervEnlightenment(name: string): name is HypervEnlightenment {
  return (HYPERV_ENLIGHTENMENTS as readonly string[]).includes(name);
}

/** Hyper-V is on when any enlightenment is requested or a spinlock retry count is given (QEMU's hyperv_enabled). */
export function hypervEnabled(opts: HypervOptions): boolean {
  return opts.enlightenments.size > 0 || (opts.spinlocks !== undefined && opts.spinlocks !== HV_SPINLOCK_NEVER_NOTIFY);
}

export function validateSpinlocks(value: number, where: string): number {
  if (!Number.isInteger(value) || value < HV_SPINLOCKS_MIN || value > HV_SPINLOCK_NEVER_NOTIFY) {
    throw new ConfigError(`${where}: hv-spinlocks=${value} must be between 0x${HV_SPINLOCKS_MIN.toString(16)} and 0xffffffff`, {
      hint: 'it is the number of spinlock retries before the guest notifies the hypervisor; 0xffffffff means never',
    });
  }
  return value;
}

/**
 * Check that the host's KVM can provide every requested enlightenment and
 * that their dependencies are requested too. Throws a ConfigError naming the
 * missing KVM capability (or dependency) so the user knows what to change.
 */
export function checkHypervSupport(opts: HypervOptions, host: HostCpuCapabilities): void {
  if (!hypervEnabled(opts)) return;
  const requested = [...opts.enlightenments].sort();
  const what = requested.length ? requested.join(', ') : 'hv-spinlocks';
  if (!host.hyperv) {
    throw new ConfigError(`Hyper-V enlightenments (${what}) need KVM_CAP_HYPERV, which this host's KVM does not have`, {
      hint: 'run on a host whose KVM supports Hyper-V enlightenments, or drop the hv-* options',
    });
  }
  for (const e of requested) {
    const spec = SPECS[e];
    if (host.hypervCpuid !== undefined) {
      const table = host.hypervCpuid;
      const ok = spec.flags.every((f) => (cpuidRegisterValue(table, f.leaf, 0, f.reg) & f.bits) >>> 0 === f.bits >>> 0);
      if (!ok) {
        throw new ConfigError(`Hyper-V ${spec.desc} (${e}) is not supported by this host's KVM: KVM_GET_SUPPORTED_HV_CPUID does not report it`, {
          hint: `drop ${e}`,
        });
      }
    } else if (host[spec.capField] !== true) {
      throw new ConfigError(`Hyper-V ${spec.desc} (${e}) needs ${spec.cap}, which this host's KVM does not have`, { hint: `drop ${e}` });
    }
    for (const dep of spec.deps) {
      if (!opts.enlightenments.has(dep)) {
        throw new ConfigError(`Hyper-V ${spec.desc} (${e}) requires Hyper-V ${SPECS[dep].desc} (${dep})`, { hint: `add ${dep}` });
      }
    }
  }
}

/** The Hyper-V leaves 0x40000000..0x40000005 (TLFS "Feature and Interface Discovery"). */
export function hypervLeaves(opts: HypervOptions): CpuidEntry[] {
  const reg = (leaf: number, r: CpuidRegister): number => {
    let v = 0;
    for (const e of opts.enlightenments) for (const f of SPECS[e].flags) if (f.leaf === leaf && f.reg === r) v |= f.bits;
    return v >>> 0;
  };
  const [vendorB = 0, vendorC = 0, vendorD = 0] = packAscii('Microsoft Hv', 3);
  const synic = opts.enlightenments.has('hv-synic');
  const vapic = opts.enlightenments.has('hv-vapic');
  return [
    cpuidEntry(HV_CPUID_VENDOR_AND_MAX_FUNCTIONS, 0, { eax: HV_CPUID_IMPLEMENT_LIMITS, ebx: vendorB, ecx: vendorC, edx: vendorD }),
    cpuidEntry(HV_CPUID_INTERFACE, 0, { eax: HV_INTERFACE_SIGNATURE }),
    cpuidEntry(HV_CPUID_VERSION, 0, { eax: HV_VERSION_DEFAULT.build, ebx: (HV_VERSION_DEFAULT.major << 16) | HV_VERSION_DEFAULT.minor }),
    cpuidEntry(HV_CPUID_FEATURES, 0, {
      // the hypercall page is needed by every enlightenment that uses hypercalls, so it is always offered (as QEMU does)
      eax: reg(HV_CPUID_FEATURES, 'eax') | HV_HYPERCALL_AVAILABLE,
      ebx: synic ? HV_POST_MESSAGES | HV_SIGNAL_EVENTS : 0,
      // not exposed by KVM but needed for vCPU hotplug in Windows (QEMU)
      edx: reg(HV_CPUID_FEATURES, 'edx') | HV_CPU_DYNAMIC_PARTITIONING_AVAILABLE,
    }),
    cpuidEntry(HV_CPUID_ENLIGHTMENT_INFO, 0, {
      eax: reg(HV_CPUID_ENLIGHTMENT_INFO, 'eax') | (vapic ? HV_APIC_ACCESS_RECOMMENDED : 0),
      ebx: opts.spinlocks ?? HV_SPINLOCK_NEVER_NOTIFY,
    }),
    // EAX max virtual processors (QEMU's default -1, i.e. no stated limit), EBX max logical processors (64, QEMU).
    cpuidEntry(HV_CPUID_IMPLEMENT_LIMITS, 0, { eax: 0xffffffff, ebx: 64 }),
  ];
}

/** What the accelerator must do per vCPU for the enlightenments: capabilities to enable and MSR reset values. */
export function hypervVcpuSetup(opts: HypervOptions, vcpuIndex: number, host: HostCpuCapabilities): { caps: KvmCapEnable[]; msrs: MsrSetting[] } {
  const caps: KvmCapEnable[] = [];
  const msrs: MsrSetting[] = [];
  if (!hypervEnabled(opts)) return { caps, msrs };
  const e = opts.enlightenments;
  if (vcpuIndex === 0) {
    // Partition-wide MSRs: one write (on any vCPU) resets them for the VM.
    msrs.push({ index: HV_X64_MSR_GUEST_OS_ID, data: 0n, name: 'HV_X64_MSR_GUEST_OS_ID' });
    msrs.push({ index: HV_X64_MSR_HYPERCALL, data: 0n, name: 'HV_X64_MSR_HYPERCALL' });
    if (e.has('hv-time')) msrs.push({ index: HV_X64_MSR_REFERENCE_TSC, data: 0n, name: 'HV_X64_MSR_REFERENCE_TSC' });
  }
  if (e.has('hv-vpindex') && host.hypervVpIndex === true) {
    // Windows addresses vCPUs by VP index in hypercalls and SynIC; keep it equal to our vCPU index.
    msrs.push({ index: HV_X64_MSR_VP_INDEX, data: BigInt(vcpuIndex), name: 'HV_X64_MSR_VP_INDEX' });
  }
  if (e.has('hv-synic')) {
    caps.push({ name: 'KVM_CAP_HYPERV_SYNIC2', cap: KVM_CAP.KVM_CAP_HYPERV_SYNIC2, args: [], scope: 'vcpu', reason: 'hv-synic' });
    msrs.push({ index: HV_X64_MSR_SCONTROL, data: 0n, name: 'HV_X64_MSR_SCONTROL' });
    msrs.push({ index: HV_X64_MSR_SIEFP, data: 0n, name: 'HV_X64_MSR_SIEFP' });
    msrs.push({ index: HV_X64_MSR_SIMP, data: 0n, name: 'HV_X64_MSR_SIMP' });
    for (let i = 0; i < 16; i++) msrs.push({ index: HV_X64_MSR_SINT0 + i, data: HV_SINT_MASKED, name: `HV_X64_MSR_SINT${i}` });
  }
  if (e.has('hv-stimer')) {
    for (let i = 0; i < 4; i++) {
      msrs.push({ index: HV_X64_MSR_STIMER0_CONFIG + 2 * i, data: 0n, name: `HV_X64_MSR_STIMER${i}_CONFIG` });
      msrs.push({ index: HV_X64_MSR_STIMER0_CONFIG + 2 * i + 1, data: 0n, name: `HV_X64_MSR_STIMER${i}_COUNT` });
    }
  }
  return { caps, msrs };
}

/** Merge config-file/RPC Hyper-V input into resolved options. */
export function hypervOptionsFrom(input: HypervInput | undefined, where = 'hyperv'): HypervOptions {
  const enlightenments = new Set<HypervEnlightenment>();
  let spinlocks: number | undefined;
  if (input !== undefined) {
    for (const [k, v] of Object.entries(input)) {
      if (k === 'hv-spinlocks') {
        if (v === undefined) continue;
        if (typeof v !== 'number') throw new ConfigError(`${where}: hv-spinlocks must be a number`);
        spinlocks = validateSpinlocks(v, where);
      } else if (isHypervEnlightenment(k)) {
        if (typeof v !== 'boolean') throw new ConfigError(`${where}: ${k} must be true or false`);
        if (v) enlightenments.add(k);
      } else {
        throw new ConfigError(`${where}: unknown Hyper-V option '${k.slice(0, 32)}'`, { hint: `known: ${HYPERV_ENLIGHTENMENTS.join(', ')}, hv-spinlocks` });
      }
    }
  }
  return { enlightenments, spinlocks };
}
