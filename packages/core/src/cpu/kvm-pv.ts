/**
 * KVM paravirtual features: the KVM leaves and the MSRs behind them.
 *
 * Linux Documentation/virt/kvm/x86/cpuid.rst: 0x40000000 returns the max
 * KVM leaf in EAX and "KVMKVMKVM\0\0\0" in EBX/ECX/EDX; 0x40000001 EAX holds
 * the KVM_FEATURE_* bits, EDX the KVM_HINTS_* bits. The MSRs each feature
 * enables are in msr.rst. Feature names are QEMU's (kvmclock, kvm-pv-eoi …).
 *
 * Defaults follow QEMU 7.2 (target/i386/kvm/kvm-cpu.c kvm_default_props):
 * kvmclock, kvm-nopiodelay, kvm-asyncpf, kvm-steal-time, kvm-pv-eoi and
 * kvmclock-stable-bit are on for every named model — here only where the
 * host's KVM offers them, so a default never makes a model unrunnable.
 * kvm-pv-unhalt, kvm-pv-tlb-flush, kvm-pv-ipi and the rest are off unless
 * asked for (`--cpu Haswell,+kvm-pv-unhalt`), as in QEMU: turning them on
 * silently would make the guest ABI depend on the host and break migration
 * between hosts that differ. The `host` model passes through everything the
 * host offers.
 */
import { cpuidEntry, packAscii, type CpuidEntry } from './cpuid.js';
import {
  MSR_KVM_ASYNC_PF_EN,
  MSR_KVM_ASYNC_PF_INT,
  MSR_KVM_POLL_CONTROL,
  MSR_KVM_PV_EOI_EN,
  MSR_KVM_STEAL_TIME,
  MSR_KVM_SYSTEM_TIME,
  MSR_KVM_SYSTEM_TIME_NEW,
  type MsrSetting,
} from './kvm-abi.js';

export const KVM_CPUID_SIGNATURE = 0x40000000;
export const KVM_CPUID_FEATURES = 0x40000001;
/** Where the KVM leaves go when Hyper-V's occupy 0x40000000 (QEMU's KVM_CPUID_SIGNATURE_NEXT). */
export const KVM_CPUID_SIGNATURE_NEXT = 0x40000100;

/** The paravirtual features a user typically switches (the list), by QEMU name. */
export const KVM_PV_FEATURES = [
  'kvmclock',
  'kvm-nopiodelay',
  'kvm-asyncpf',
  'kvm-asyncpf-int',
  'kvm-steal-time',
  'kvm-pv-eoi',
  'kvm-pv-unhalt',
  'kvm-pv-tlb-flush',
  'kvm-pv-ipi',
  'kvm-poll-control',
  'kvm-pv-sched-yield',
  'kvm-msi-ext-dest-id',
  'kvmclock-stable-bit',
] as const;
export type KvmPvFeature = (typeof KVM_PV_FEATURES)[number];

/** Per-feature overrides from a config file or RPC request (the same as `+feat`/`-feat` in --cpu). */
export type KvmPvInput = Partial<Record<KvmPvFeature, boolean>>;

/** On by default for named models where the host supports them (QEMU 7.2 kvm_default_props). */
export const KVM_PV_DEFAULTS: readonly KvmPvFeature[] = [
  'kvmclock',
  'kvm-nopiodelay',
  'kvm-asyncpf',
  'kvm-steal-time',
  'kvm-pv-eoi',
  'kvmclock-stable-bit',
];

export function isKvmPvFeature(name: string): name is KvmPvFeature {
  return (KVM_PV_FEATURES as readonly string[]).includes(name);
}

/** 0x40000000 and 0x40000001 at `base` (0x40000000, or 0x40000100 behind Hyper-V). */
export function kvmLeaves(base: number, featuresEax: number, hintsEdx: number): CpuidEntry[] {
  const [ebx = 0, ecx = 0, edx = 0] = packAscii('KVMKVMKVM\0\0\0', 3);
  return [
    cpuidEntry(base, 0, { eax: base + 1, ebx, ecx, edx }),
    cpuidEntry(base + 1, 0, { eax: featuresEax, edx: hintsEdx }),
  ];
}

/**
 * MSR values each vCPU must have at creation and after every reset. A guest
 * that enabled kvmclock, steal time, async PF or PV EOI gave KVM guest-physical
 * addresses that KVM keeps writing to; after a reset those pages belong to the
 * next boot, so the registrations must be cleared (bit 0 = 0 disables each,
 * msr.rst). MSR_KVM_WALL_CLOCK_NEW is left alone on purpose: writing it makes
 * KVM store the wall clock at the written address, even 0.
 * Host-side halt polling starts enabled (MSR_KVM_POLL_CONTROL = 1), as QEMU does.
 */
export function kvmPvResetMsrs(enabled: (name: string) => boolean): MsrSetting[] {
  const out: MsrSetting[] = [];
  if (enabled('kvmclock')) {
    out.push({ index: MSR_KVM_SYSTEM_TIME_NEW, data: 0n, name: 'MSR_KVM_SYSTEM_TIME_NEW' });
    out.push({ index: MSR_KVM_SYSTEM_TIME, data: 0n, name: 'MSR_KVM_SYSTEM_TIME' });
  }
  if (enabled('kvm-asyncpf')) out.push({ index: MSR_KVM_ASYNC_PF_EN, data: 0n, name: 'MSR_KVM_ASYNC_PF_EN' });
  if (enabled('kvm-asyncpf-int')) out.push({ index: MSR_KVM_ASYNC_PF_INT, data: 0n, name: 'MSR_KVM_ASYNC_PF_INT' });
  if (enabled('kvm-steal-time')) out.push({ index: MSR_KVM_STEAL_TIME, data: 0n, name: 'MSR_KVM_STEAL_TIME' });
  if (enabled('kvm-pv-eoi')) out.push({ index: MSR_KVM_PV_EOI_EN, data: 0n, name: 'MSR_KVM_PV_EOI_EN' });
  if (enabled('kvm-poll-control')) out.push({ index: MSR_KVM_POLL_CONTROL, data: 1n, name: 'MSR_KVM_POLL_CONTROL' });
  return out;
}
