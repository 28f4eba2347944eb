/**
 * CPUID composition: a CPU model, the `--cpu` modifiers, the topology and the
 * host's KVM_GET_SUPPORTED_CPUID become the table each vCPU gets with
 * KVM_SET_CPUID2.
 *
 * The order of steps is QEMU's (target/i386/cpu.c x86_cpu_load_model,
 * x86_cpu_expand_features, x86_cpu_filter_features, cpu_x86_cpuid; and
 * target/i386/kvm/kvm.c kvm_arch_init_vcpu, kvm_x86_build_cpuid):
 *
 *  1. the model's features, plus what QEMU adds under KVM (hypervisor,
 *     x2apic, the default KVM PV features; minus acpi, monitor, svm);
 *  2. config-file/RPC options, then `feat=on|off`, then `+feat`, then `-feat`;
 *  3. topology bits (HTT, CmpLegacy), feature dependencies, automatic
 *     level/xlevel;
 *  4. intersection with what KVM supports — except the bits KVM lets a VMM
 *     set whatever the host has (KVM_SETTABLE_REGARDLESS) — reporting what is
 *     missing (`check`: warning, `enforce`: ConfigError);
 *  5. the leaves: identity, topology (1, 4, 0xB, 0x80000008, 0x8000001E),
 *     caches, XSAVE (0xD), KVM and Hyper-V leaves.
 *
 * Leaf layouts: Intel SDM Vol. 2A "CPUID"; AMD APM Vol. 3 Appendix E;
 * Linux Documentation/virt/kvm/x86/cpuid.rst; Microsoft Hypervisor TLFS.
 */
import { ConfigError } from '../errors.js';
import { AMD_CACHES, encode80000005, encode80000006, encode8000001d, encodeLeaf4, INTEL_CACHES, LEAF2 } from './cache-info.js';
import { interpretCpuModifiers } from './cpu-option.js';
import {
  cpuidEntry,
  cpuidRegisterValue,
  decodeSignature,
  encodeSignature,
  findCpuidEntry,
  KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
  packAscii,
  unpackAscii,
  vendorOf,
  vendorRegisters,
  type CpuidEntry,
} from './cpuid.js';
import {
  allCpuFeatures,
  CpuFeatureSet,
  describeFeature,
  FEATURE_WORDS,
  featureWord,
  featureWordKey,
  lookupCpuFeature,
  type CpuFeature,
  type FeatureWordDefinition,
} from './features.js';
import type { HostCpuCapabilities } from './host-caps.js';
import {
  checkHypervSupport,
  hypervEnabled,
  hypervLeaves,
  hypervOptionsFrom,
  hypervVcpuSetup,
  type HypervEnlightenment,
  type HypervInput,
} from './hyperv.js';
import { KVM_CAP, KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK, KVM_X2APIC_API_USE_32BIT_IDS, type KvmCapEnable, type MsrSetting } from './kvm-abi.js';
import { isKvmPvFeature, KVM_CPUID_SIGNATURE, KVM_CPUID_SIGNATURE_NEXT, KVM_PV_DEFAULTS, kvmLeaves, kvmPvResetMsrs, type KvmPvInput } from './kvm-pv.js';
import { assertCpuModel, type CpuModelDefinition } from './model.js';
import { apicIdFromIds, apicIdLayout, SMP_MAX_CPUS, topologyIdsFromIndex, type CpuTopology } from './topology.js';

export interface CpuidPlanInput {
  model: CpuModelDefinition;
  /** the `--cpu` tokens after the model name: `+feat`, `-feat`, `feat=on`, `check`, `enforce`, `hv-relaxed`, `level=0xd` … */
  modifiers?: readonly string[];
  /** KVM_GET_SUPPORTED_CPUID of this host */
  supported: readonly CpuidEntry[];
  /** sockets · cores · threads; maxcpus defaults to their product */
  topology: CpuTopology & { maxcpus?: number };
  /** KVM PV feature switches from a config file or RPC request; `--cpu` tokens override them */
  kvmPv?: KvmPvInput;
  /** Hyper-V options from a config file or RPC request; `--cpu` tokens override them */
  hyperv?: HypervInput;
  hostCaps: HostCpuCapabilities;
  /**
   * Which vendor string a named model shows. 'host' (default) is QEMU's
   * behaviour under KVM (target/i386/host-cpu.c host_cpu_instance_init): the
   * host's vendor replaces the model's, because KVM emulates SYSENTER/SYSCALL
   * in 32-bit compatibility mode only for the host's own vendor semantics.
   * 'model' keeps the model's vendor. `vendor=` in --cpu overrides both.
   */
  vendorPolicy?: 'host' | 'model';
}

export interface MissingFeature {
  name: string;
  /** QEMU's spelling, e.g. `CPUID[eax=07h,ecx=00h].EBX.avx2 [bit 5]` */
  description: string;
}

/** What one vCPU needs: its CPUID table, what to enable and which MSRs to write. */
export interface VcpuCpuid {
  vcpuIndex: number;
  apicId: number;
  /** for KVM_SET_CPUID2, sorted by function then index */
  entries: CpuidEntry[];
  /** KVM_ENABLE_CAP on this vCPU before KVM_SET_CPUID2 */
  kvmCapsToEnable: KvmCapEnable[];
  /** KVM_SET_MSRS after KVM_SET_CPUID2, and again after every reset of the vCPU */
  msrs: MsrSetting[];
}

export interface CpuidPlan {
  modelName: string;
  modelVersion: number;
  vendor: string;
  family: number;
  model: number;
  stepping: number;
  modelId: string;
  level: number;
  xlevel: number;
  /** canonical names of the features the guest gets */
  features: string[];
  /** requested features the host's KVM cannot provide (left out) */
  missing: string[];
  missingDetails: MissingFeature[];
  warnings: string[];
  /** Hyper-V leaves are present (the KVM leaves then start at 0x40000100) */
  hyperv: boolean;
  enlightenments: HypervEnlightenment[];
  /** KVM_ENABLE_CAP on the VM fd, once, before vCPUs are created */
  vmCapsToEnable: KvmCapEnable[];
  topology: CpuTopology & { maxcpus: number };
  forVcpu(index: number): VcpuCpuid;
}

export interface CpuidComposition extends VcpuCpuid {
  features: string[];
  missing: string[];
  missingDetails: MissingFeature[];
  warnings: string[];
  vmCapsToEnable: KvmCapEnable[];
  level: number;
  xlevel: number;
}

/**
 * Bits a VMM may set although KVM_GET_SUPPORTED_CPUID does not list them:
 * KVM implements them itself, or they describe the VMM's own choices
 * (QEMU kvm_arch_get_supported_cpuid fixups; arch/x86/kvm/cpuid.c).
 */
export const KVM_SETTABLE_REGARDLESS: readonly { feature: string; when: string; why: string }[] = [
  { feature: 'hypervisor', when: 'always', why: 'the VMM announces itself; KVM never lists the bit' },
  { feature: 'x2apic', when: 'in-kernel irqchip', why: 'KVM emulates x2APIC in software whatever the host CPU has' },
  { feature: 'tsc-deadline', when: 'in-kernel irqchip and KVM_CAP_TSC_DEADLINE_TIMER', why: 'the in-kernel LAPIC timer implements it; KVM reports it as a capability, not in the table' },
  { feature: 'arat', when: 'always', why: 'the emulated APIC timer does not stop in deep C-states' },
  { feature: 'ht', when: 'more than one thread per package', why: 'describes the VMM-chosen topology' },
  { feature: 'cmp-legacy', when: 'more than one thread per package', why: 'describes the VMM-chosen topology (AMD)' },
  { feature: 'topoext', when: 'always', why: 'leaves 0x8000001D/0x8000001E are filled by the VMM' },
  { feature: 'kvm-msi-ext-dest-id', when: 'split irqchip', why: 'the userspace IOAPIC/MSI routing decodes the extended destination ID' },
  { feature: 'kvm-hint-dedicated', when: 'always', why: 'a hint about host scheduling the VMM makes' },
];

/** Features the `host` model never turns on by itself (QEMU no_autoenable_flags and unmigratable flags). */
const HOST_NO_AUTOENABLE = new Set(['ht', 'cmp-legacy', 'topoext', 'invtsc', 'kvm-hint-dedicated']);

/** CPUID 0x80000001 EDX bits that repeat leaf 1 EDX on AMD: fpu…apic, mtrr…pse36, mmx, fxsr (QEMU CPUID_EXT2_AMD_ALIASES). */
export const AMD_EXT2_ALIASES = 0x0183f3ff;

/** Physical address bits of named models (QEMU TCG_PHYS_ADDR_BITS, used under KVM unless phys-bits= or host). */
export const DEFAULT_PHYS_BITS = 40;

interface XsaveComponent {
  bit: number;
  feature: string;
  /** architectural size and standard-format offset (SDM Vol. 1 13.4), used when the host table lacks the subleaf */
  size: number;
  offset: number;
}

const XSAVE_COMPONENTS: readonly XsaveComponent[] = [
  { bit: 2, feature: 'avx', size: 256, offset: 576 },
  { bit: 3, feature: 'mpx', size: 64, offset: 960 },
  { bit: 4, feature: 'mpx', size: 64, offset: 1024 },
  { bit: 5, feature: 'avx512f', size: 64, offset: 1088 },
  { bit: 6, feature: 'avx512f', size: 512, offset: 1152 },
  { bit: 7, feature: 'avx512f', size: 1024, offset: 1664 },
  { bit: 9, feature: 'pku', size: 8, offset: 2688 },
];
/** legacy region (512) + XSAVE header (64): x87 and SSE state */
const XSAVE_LEGACY_SIZE = 576;

const f = (name: string): CpuFeature => {
  const feat = lookupCpuFeature(name);
  if (feat === undefined) throw new Error(`internal: no CPU feature '${name}'`);
  return feat;
};

function isAmdLike(vendor: string): boolean {
  return vendor === 'AuthenticAMD' || vendor === 'HygonGenuine';
}

function isIntelLike(vendor: string): boolean {
  // QEMU's IS_INTEL_CPU || IS_ZHAOXIN_CPU: vendors whose Linux code discards thread info when CmpLegacy is set
  return vendor === 'GenuineIntel' || vendor === 'CentaurHauls' || vendor === '  Shanghai  ';
}

function checkTopology(t: CpuidPlanInput['topology']): CpuTopology & { maxcpus: number } {
  for (const k of ['sockets', 'cores', 'threads'] as const) {
    const v = t[k];
    if (!Number.isInteger(v) || v < 1 || v > SMP_MAX_CPUS) throw new ConfigError(`CPU topology: ${k}=${String(v)} must be an integer from 1 to ${SMP_MAX_CPUS}`);
  }
  const product = t.sockets * t.cores * t.threads;
  const maxcpus = t.maxcpus ?? product;
  if (maxcpus !== product) throw new ConfigError(`CPU topology: sockets (${t.sockets}) * cores (${t.cores}) * threads (${t.threads}) != maxcpus (${maxcpus})`);
  if (maxcpus > SMP_MAX_CPUS) throw new ConfigError(`CPU topology: ${maxcpus} vCPUs is more than ${SMP_MAX_CPUS}`);
  return { sockets: t.sockets, cores: t.cores, threads: t.threads, maxcpus };
}

/**
 * Decide everything that is the same for all vCPUs: features after filtering,
 * identity, levels, warnings. Throws ConfigError for bad modifiers, `enforce`
 * with missing features, and Hyper-V options the host cannot provide.
 */
export function planCpuid(input: CpuidPlanInput): CpuidPlan {
  const def = input.model;
  const supported = input.supported;
  const host = input.hostCaps;
  const irqchip = host.irqchip ?? 'kernel';
  const topo = checkTopology(input.topology);
  if (!Array.isArray(supported) || findCpuidEntry(supported, 0) === undefined) {
    throw new ConfigError('the KVM_GET_SUPPORTED_CPUID table is empty or has no leaf 0', { hint: 'pass the table the accelerator read from /dev/kvm' });
  }
  const settings = interpretCpuModifiers(input.modifiers ?? []);
  const warnings: string[] = [];
  const explicit = new Set<string>();
  const features = new CpuFeatureSet();
  const supportedWord = (w: FeatureWordDefinition): number => cpuidRegisterValue(supported, w.leaf, w.subleaf ?? 0, w.register);
  const hostHas = (feat: CpuFeature): boolean => (supportedWord(feat.word) & feat.mask) >>> 0 === feat.mask;

  let vendor: string;
  let family: number;
  let model: number;
  let stepping: number;
  let modelId: string;
  let level: number;
  let xlevel: number;
  let physBits: number;
  const hostPhysBits = cpuidRegisterValue(supported, 0x80000008, 0, 'eax') & 0xff;

  if (def.passthrough) {
    // `host`: everything KVM offers, under the host's own identity (QEMU's host/max model).
    vendor = vendorOf(supported);
    ({ family, model, stepping } = decodeSignature(cpuidRegisterValue(supported, 1, 0, 'eax')));
    const brand = unpackAscii([0x80000002, 0x80000003, 0x80000004].flatMap((fn) => {
      const e = findCpuidEntry(supported, fn);
      return e === undefined ? [0, 0, 0, 0] : [e.eax, e.ebx, e.ecx, e.edx];
    })).trim();
    modelId = brand || (host.modelId ?? '').slice(0, 48);
    level = cpuidRegisterValue(supported, 0, 0, 'eax');
    const ext = cpuidRegisterValue(supported, 0x80000000, 0, 'eax');
    xlevel = ext >= 0x80000000 ? ext : 0;
    physBits = hostPhysBits || DEFAULT_PHYS_BITS;
    // What KVM lists, plus what it lets a VMM set (tsc-deadline with the capability, x2apic, …), as QEMU's host model.
    const ctx: FilterContext = { host, irqchip, threadsPerPkg: topo.cores * topo.threads };
    for (const feat of allCpuFeatures()) {
      if (HOST_NO_AUTOENABLE.has(feat.name)) continue;
      const allowed = (supportedWord(feat.word) | settableMask(feat.word, ctx)) & ~restrictedMask(feat.word, irqchip);
      if ((allowed & feat.mask) >>> 0 === feat.mask) features.add(feat);
    }
  } else {
    assertCpuModel(def);
    ({ vendor, family, model, stepping, modelId, level, xlevel } = def);
    if ((input.vendorPolicy ?? 'host') === 'host') vendor = vendorOf(supported) || vendor;
    physBits = DEFAULT_PHYS_BITS;
    for (const name of def.features) features.add(f(name));
    // What QEMU's kvm_default_props change for every named model under KVM.
    if (irqchip !== 'userspace') features.add(f('x2apic'));
    for (const name of ['acpi', 'monitor', 'svm']) features.remove(f(name));
    for (const name of KVM_PV_DEFAULTS) if (hostHas(f(name))) features.add(f(name));
  }
  // QEMU sets the hypervisor bit for every model (x86_cpu_load_model).
  features.add(f('hypervisor'));

  for (const [name, on] of Object.entries(input.kvmPv ?? {})) {
    if (!isKvmPvFeature(name)) throw new ConfigError(`kvmPv: unknown KVM paravirtual feature '${name.slice(0, 32)}'`);
    if (on === undefined) continue;
    features.set(f(name), on);
    explicit.add(name);
  }
  const hv = hypervOptionsFrom(input.hyperv);
  const enlightenments = new Set(hv.enlightenments);
  for (const [name, on] of settings.hyperv) {
    if (on) enlightenments.add(name);
    else enlightenments.delete(name);
  }
  const hvOptions = { enlightenments, spinlocks: settings.hvSpinlocks ?? hv.spinlocks };
  for (const change of settings.featureChanges) {
    features.set(f(change.name), change.on);
    explicit.add(change.name);
  }
  vendor = settings.vendor ?? vendor;
  family = settings.family ?? family;
  model = settings.model ?? model;
  stepping = settings.stepping ?? stepping;
  modelId = settings.modelId ?? modelId;

  // Topology the guest must see (QEMU x86_cpu_expand_features).
  const threadsPerPkg = topo.cores * topo.threads;
  if (threadsPerPkg > 1) {
    features.add(f('ht'));
    // Linux discards multi-thread information on Intel when CmpLegacy is set, so only others get it.
    if (!isIntelLike(vendor)) features.add(f('cmp-legacy'));
  }
  if (isAmdLike(vendor) && topo.threads > 1 && family < 0x17 && !features.has(f('topoext'))) {
    warnings.push(`this family of AMD CPU doesn't support hyperthreading (${topo.threads} threads per core); configure --smp with threads=1 or add +topoext`);
  }

  // Dependencies: features that only mean something when another is on (QEMU feature_dependencies).
  const dependOn = (parent: string, word: FeatureWordDefinition): void => {
    if (features.has(f(parent))) return;
    const dropped = features.word(word);
    if (dropped === 0) return;
    for (const feat of allCpuFeatures()) {
      if (feat.key === featureWordKey(word.leaf, word.subleaf, word.register) && (dropped & feat.mask) !== 0 && explicit.has(feat.name)) {
        warnings.push(`feature '${feat.name}' needs '${parent}', which is off; leaving it out`);
      }
    }
    features.setWord(word, 0);
  };
  dependOn('svm', featureWord(0x8000000a, undefined, 'edx'));
  dependOn('xsave', featureWord(0xd, 1, 'eax'));

  // Levels: the model's are minimums, raised for enabled features (QEMU full-cpuid-auto-level).
  let levelFunc7 = features.word(featureWord(7, 1, 'eax')) !== 0 ? 1 : 0;
  if (!def.passthrough) {
    for (const w of FEATURE_WORDS) {
      if (features.word(w) === 0) continue;
      if (w.leaf < 0x40000000) level = Math.max(level, w.leaf);
      else if (w.leaf >= 0x80000000) xlevel = Math.max(xlevel, w.leaf);
    }
    if (features.has(f('svm'))) xlevel = Math.max(xlevel, 0x8000000a);
    // topoext does not raise xlevel (QEMU 7.2 neither): models below 0x8000001E need xlevel=0x8000001e for leaves 0x8000001D/E.
  }
  const hostMaxBasic = cpuidRegisterValue(supported, 0, 0, 'eax');
  const hostMaxExt = cpuidRegisterValue(supported, 0x80000000, 0, 'eax');
  // Explicit level=/xlevel= win. Leaves above what the host's KVM knows are still served (KVM answers
  // from our table), so this only warns: the guest sees zeros there unless tsvmm builds the leaf.
  if (settings.level !== undefined) {
    level = settings.level;
    if (level > Math.max(hostMaxBasic, def.passthrough ? 0 : def.level)) {
      warnings.push(`level=0x${level.toString(16)} is above the highest basic leaf this host's KVM knows (0x${hostMaxBasic.toString(16)}); leaves tsvmm does not build will read as zero`);
    }
  }
  if (settings.xlevel !== undefined) {
    xlevel = settings.xlevel;
    if (xlevel > Math.max(hostMaxExt, def.passthrough ? 0 : def.xlevel)) {
      warnings.push(`xlevel=0x${xlevel.toString(16)} is above the highest extended leaf this host's KVM knows (0x${hostMaxExt.toString(16)}); leaves tsvmm does not build will read as zero`);
    }
  }
  if (level < 7) levelFunc7 = 0;

  // Filter against KVM_GET_SUPPORTED_CPUID.
  const missingDetails: MissingFeature[] = [];
  for (const w of FEATURE_WORDS) {
    const requested = features.word(w);
    if (requested === 0) continue;
    const allowed = (supportedWord(w) | settableMask(w, { host, irqchip, threadsPerPkg })) & ~restrictedMask(w, irqchip);
    const lacking = (requested & ~allowed) >>> 0;
    if (lacking === 0) continue;
    for (const feat of allCpuFeatures()) {
      if (feat.word === w && (feat.mask & lacking) !== 0) missingDetails.push({ name: feat.name, description: describeFeature(feat) });
    }
    features.setWord(w, requested & allowed);
  }
  const missing = missingDetails.map((m) => m.name);
  if (missing.length) {
    if (settings.enforce) {
      throw new ConfigError(`CPU model '${def.name}' needs features this host's KVM does not support: ${missing.join(', ')}`, {
        hint: `${missingDetails.map((m) => m.description).join('; ')}. Drop 'enforce' to run without them, remove them with -feat, or pick a model this host can run ('tsvmm run --cpu help')`,
      });
    }
    if (settings.check) warnings.push(`host doesn't support requested features: ${missingDetails.map((m) => m.description).join(', ')}`);
  }

  checkHypervSupport(hvOptions, host);
  const withHyperv = hypervEnabled(hvOptions);

  const vmCapsToEnable: KvmCapEnable[] = [];
  const maxApicId = apicIdFromIds(topo, topologyIdsFromIndex(topo, topo.maxcpus - 1));
  if (maxApicId > 254) {
    // APIC ID 255 is the xAPIC broadcast; larger IDs need x2APIC in the guest and 32-bit IDs in KVM (QEMU does the same).
    if (host.x2apicApi !== true || irqchip === 'userspace') {
      throw new ConfigError(`--smp: the highest APIC ID (${maxApicId}) is above 254, which needs the in-kernel irqchip and KVM_CAP_X2APIC_API`, {
        hint: 'use fewer vCPUs, or a host whose KVM has KVM_CAP_X2APIC_API',
      });
    }
    if (!features.has(f('x2apic'))) warnings.push(`APIC IDs above 254 (up to ${maxApicId}) are only reachable with x2apic, which is off`);
    vmCapsToEnable.push({
      name: 'KVM_CAP_X2APIC_API',
      cap: KVM_CAP.KVM_CAP_X2APIC_API,
      args: [KVM_X2APIC_API_USE_32BIT_IDS | KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK],
      scope: 'vm',
      reason: `APIC IDs up to ${maxApicId}`,
    });
  }
  if (settings.kvmPvEnforceCpuid && host.enforcePvFeatureCpuid !== true) {
    throw new ConfigError('kvm-pv-enforce-cpuid=on needs KVM_CAP_ENFORCE_PV_FEATURE_CPUID, which this host\'s KVM does not have', {
      hint: 'drop kvm-pv-enforce-cpuid',
    });
  }

  if (settings.physBits !== undefined) {
    if (hostPhysBits && settings.physBits > hostPhysBits) {
      throw new ConfigError(`phys-bits=${settings.physBits} is more than the host's ${hostPhysBits} physical address bits`);
    }
    physBits = settings.physBits;
  } else if (hostPhysBits && physBits > hostPhysBits) {
    warnings.push(`the model's ${physBits} physical address bits are more than the host's ${hostPhysBits}; guests must not use RAM above 2^${hostPhysBits}`);
  }

  const state: BuildState = {
    features,
    vendor,
    signature: encodeSignature(family, model, stepping),
    modelId,
    level,
    xlevel,
    levelFunc7,
    physBits,
    topo,
    settings: { l3Cache: settings.l3Cache, cpuid0xb: settings.cpuid0xb, exposeKvm: settings.exposeKvm, kvmPvEnforceCpuid: settings.kvmPvEnforceCpuid },
    hv: withHyperv ? hvOptions : undefined,
    supported,
    host,
  };

  return {
    modelName: def.name,
    modelVersion: def.version,
    vendor,
    family,
    model,
    stepping,
    modelId,
    level,
    xlevel,
    features: features.names(),
    missing,
    missingDetails,
    warnings,
    hyperv: withHyperv,
    enlightenments: [...enlightenments].sort(),
    vmCapsToEnable,
    topology: topo,
    forVcpu: (index: number) => buildVcpu(state, index),
  };
}

/** Plan and build the table of one vCPU in one call. */
export function composeCpuid(input: CpuidPlanInput & { topology: CpuidPlanInput['topology'] & { vcpuIndex: number } }): CpuidComposition {
  const plan = planCpuid(input);
  const vcpu = plan.forVcpu(input.topology.vcpuIndex);
  return {
    ...vcpu,
    features: plan.features,
    missing: plan.missing,
    missingDetails: plan.missingDetails,
    warnings: plan.warnings,
    vmCapsToEnable: plan.vmCapsToEnable,
    level: plan.level,
    xlevel: plan.xlevel,
  };
}

interface FilterContext {
  host: HostCpuCapabilities;
  irqchip: 'kernel' | 'split' | 'userspace';
  threadsPerPkg: number;
}

/** Bits of word `w` a VMM may set without KVM listing them (KVM_SETTABLE_REGARDLESS). */
function settableMask(w: FeatureWordDefinition, ctx: FilterContext): number {
  const inKernel = ctx.irqchip !== 'userspace';
  const pick = (name: string, cond: boolean): number => {
    const feat = f(name);
    return cond && feat.word === w ? feat.mask : 0;
  };
  return (
    pick('hypervisor', true) |
    pick('x2apic', inKernel) |
    pick('tsc-deadline', inKernel && ctx.host.tscDeadlineTimer === true) |
    pick('arat', true) |
    pick('ht', ctx.threadsPerPkg > 1) |
    pick('cmp-legacy', ctx.threadsPerPkg > 1) |
    pick('topoext', true) |
    pick('kvm-msi-ext-dest-id', ctx.irqchip === 'split') |
    pick('kvm-hint-dedicated', true)
  ) >>> 0;
}

/** Bits KVM lists but that cannot work in this VM (QEMU: x2apic and PV unhalt need the in-kernel irqchip). */
function restrictedMask(w: FeatureWordDefinition, irqchip: FilterContext['irqchip']): number {
  if (irqchip !== 'userspace') return 0;
  let m = 0;
  for (const name of ['x2apic', 'kvm-pv-unhalt']) {
    const feat = f(name);
    if (feat.word === w) m |= feat.mask;
  }
  return m;
}

interface BuildState {
  features: CpuFeatureSet;
  vendor: string;
  signature: number;
  modelId: string;
  level: number;
  xlevel: number;
  levelFunc7: number;
  physBits: number;
  topo: CpuTopology & { maxcpus: number };
  settings: { l3Cache: boolean; cpuid0xb: boolean; exposeKvm: boolean; kvmPvEnforceCpuid: boolean };
  hv: { enlightenments: ReadonlySet<HypervEnlightenment>; spinlocks: number | undefined } | undefined;
  supported: readonly CpuidEntry[];
  host: HostCpuCapabilities;
}

const SIG = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

function buildVcpu(s: BuildState, index: number): VcpuCpuid {
  if (!Number.isInteger(index) || index < 0 || index >= s.topo.maxcpus) {
    throw new ConfigError(`vCPU index ${String(index)} is outside the topology (0..${s.topo.maxcpus - 1})`);
  }
  const ids = topologyIdsFromIndex(s.topo, index);
  const apicId = apicIdFromIds(s.topo, ids);
  const layout = apicIdLayout(s.topo);
  const w = (leaf: number, subleaf: number | undefined, reg: 'eax' | 'ebx' | 'ecx' | 'edx'): number => s.features.word(featureWord(leaf, subleaf, reg));
  const has = (name: string): boolean => s.features.has(f(name));
  const amd = isAmdLike(s.vendor);
  const threadsPerPkg = s.topo.cores * s.topo.threads;
  const entries: CpuidEntry[] = [];
  // QEMU leaves all-zero entries out (KVM answers zeros for them anyway), except indexed leaves it walks.
  const push = (e: CpuidEntry, keepIfZero = false): void => {
    if (keepIfZero || e.eax || e.ebx || e.ecx || e.edx) entries.push(e);
  };

  push(cpuidEntry(0, 0, { eax: s.level, ...vendorRegisters(s.vendor) }), true);
  if (s.level >= 1) {
    // EBX: initial APIC ID 31:24, logical processor count 23:16 (valid with HTT), CLFLUSH line size 15:8 in 8-byte units.
    const ebx = ((apicId & 0xff) << 24) | (threadsPerPkg > 1 ? Math.min(threadsPerPkg, 0xff) << 16 : 0) | (8 << 8);
    push(cpuidEntry(1, 0, { eax: s.signature, ebx, ecx: w(1, undefined, 'ecx'), edx: w(1, undefined, 'edx') }), true);
  }
  if (s.level >= 2 && !amd) {
    // AMD declares leaves 2 and 4 reserved; QEMU (x-vendor-cpuid-only) leaves them empty for AMD models.
    push(cpuidEntry(2, 0, { eax: LEAF2.eax, ebx: LEAF2.ebx, ecx: s.settings.l3Cache ? LEAF2.l3Descriptor : 0, edx: LEAF2.edxNoL3 }));
  }
  if (s.level >= 4) {
    if (amd) push(cpuidEntry(4, 0, {}, SIG), true);
    else {
      const caches = [INTEL_CACHES.l1d, INTEL_CACHES.l1i, INTEL_CACHES.l2, ...(s.settings.l3Cache ? [INTEL_CACHES.l3] : [])];
      caches.forEach((c, i) => push(cpuidEntry(4, i, encodeLeaf4(c, layout, s.topo), SIG), true));
      // the walk ends at the first subleaf with cache type 0; KVM keeps that entry too
      push(cpuidEntry(4, caches.length, {}, SIG), true);
    }
  }
  // MONITOR/MWAIT leaf: QEMU always reports ECX = EMX | IBE ("enumeration supported, interrupts break MWAIT"), sizes 0.
  if (s.level >= 5) push(cpuidEntry(5, 0, { ecx: 0b11 }));
  if (s.level >= 6) push(cpuidEntry(6, 0, { eax: w(6, undefined, 'eax') }));
  if (s.level >= 7) {
    push(cpuidEntry(7, 0, { eax: s.levelFunc7, ebx: w(7, 0, 'ebx'), ecx: w(7, 0, 'ecx'), edx: w(7, 0, 'edx') }, SIG), true);
    if (s.levelFunc7 >= 1) push(cpuidEntry(7, 1, { eax: w(7, 1, 'eax') }, SIG), true);
  }
  if (s.level >= 0xb && s.settings.cpuid0xb) {
    // Extended topology: SMT level then core level, each with the shift to the next ID field; EDX = x2APIC ID.
    push(cpuidEntry(0xb, 0, { eax: layout.coreOffset, ebx: s.topo.threads, ecx: 0 | (1 << 8), edx: apicId }, SIG), true);
    push(cpuidEntry(0xb, 1, { eax: layout.pkgOffset, ebx: threadsPerPkg & 0xffff, ecx: 1 | (2 << 8), edx: apicId }, SIG), true);
    push(cpuidEntry(0xb, 2, { eax: 0, ebx: 0, ecx: 2, edx: apicId }, SIG), true);
  }
  if (s.level >= 0xd && has('xsave')) entries.push(...xsaveLeaves(s));

  let kvmBase = KVM_CPUID_SIGNATURE;
  if (s.hv !== undefined) {
    entries.push(...hypervLeaves(s.hv));
    kvmBase = KVM_CPUID_SIGNATURE_NEXT;
  }
  if (s.settings.exposeKvm) entries.push(...kvmLeaves(kvmBase, w(0x40000001, undefined, 'eax'), w(0x40000001, undefined, 'edx')));

  if (s.xlevel >= 0x80000000) {
    push(cpuidEntry(0x80000000, 0, { eax: s.xlevel, ...vendorRegisters(s.vendor) }), true);
    if (s.xlevel >= 0x80000001) {
      // AMD repeats leaf 1 EDX features here (AMD APM E.4.2); QEMU copies them from the final leaf 1.
      const edx = w(0x80000001, undefined, 'edx') | (amd ? w(1, undefined, 'edx') & AMD_EXT2_ALIASES : 0);
      push(cpuidEntry(0x80000001, 0, { eax: s.signature, ecx: w(0x80000001, undefined, 'ecx'), edx }), true);
    }
    if (s.xlevel >= 0x80000004) {
      const brand = packAscii(s.modelId, 12);
      for (let i = 0; i < 3; i++) {
        const [eax = 0, ebx = 0, ecx = 0, edx = 0] = brand.slice(4 * i, 4 * i + 4);
        push(cpuidEntry(0x80000002 + i, 0, { eax, ebx, ecx, edx }));
      }
    }
    if (s.xlevel >= 0x80000005) push(cpuidEntry(0x80000005, 0, encode80000005()));
    if (s.xlevel >= 0x80000006) push(cpuidEntry(0x80000006, 0, encode80000006(s.settings.l3Cache)));
    if (s.xlevel >= 0x80000007) push(cpuidEntry(0x80000007, 0, { edx: w(0x80000007, undefined, 'edx') }));
    if (s.xlevel >= 0x80000008) {
      // EAX: physical 7:0, linear 15:8 (with long mode: 57 with 5-level paging, else 48; QEMU
      // cpu_x86_virtual_addr_width). ECX: ApicIdSize 15:12, NC 7:0 (APM E.4.7).
      const eax = s.physBits | (has('lm') ? (has('la57') ? 57 : 48) << 8 : 0);
      const ecx = threadsPerPkg > 1 ? (layout.pkgOffset << 12) | ((threadsPerPkg - 1) & 0xff) : 0;
      push(cpuidEntry(0x80000008, 0, { eax, ebx: w(0x80000008, undefined, 'ebx'), ecx }));
    }
    if (s.xlevel >= 0x8000000a && has('svm')) {
      // SVM revision 1, 16 ASIDs (QEMU)
      push(cpuidEntry(0x8000000a, 0, { eax: 1, ebx: 0x10, edx: w(0x8000000a, undefined, 'edx') }));
    }
    if (s.xlevel >= 0x8000001d) {
      const caches = [AMD_CACHES.l1d, AMD_CACHES.l1i, AMD_CACHES.l2, AMD_CACHES.l3];
      caches.forEach((c, i) => push(cpuidEntry(0x8000001d, i, encode8000001d(c, layout, s.topo), SIG), true));
      push(cpuidEntry(0x8000001d, caches.length, {}, SIG), true);
    }
    if (s.xlevel >= 0x8000001e && ids.coreId <= 255) {
      // EAX extended APIC ID; EBX threads per core - 1 (15:8) and core ID; ECX node ID (= socket, one node per socket).
      push(
        cpuidEntry(0x8000001e, 0, {
          eax: apicId,
          ebx: ((s.topo.threads - 1) << 8) | (ids.coreId & 0xff),
          ecx: Math.floor(apicId / 2 ** layout.pkgOffset) & 0xff,
        }),
      );
    }
  }

  entries.sort((a, b) => a.function - b.function || a.index - b.index);

  const caps: KvmCapEnable[] = [];
  const msrs: MsrSetting[] = [];
  if (s.settings.kvmPvEnforceCpuid) {
    caps.push({ name: 'KVM_CAP_ENFORCE_PV_FEATURE_CPUID', cap: KVM_CAP.KVM_CAP_ENFORCE_PV_FEATURE_CPUID, args: [1n], scope: 'vcpu', reason: 'kvm-pv-enforce-cpuid' });
  }
  if (s.hv !== undefined) {
    const hvSetup = hypervVcpuSetup(s.hv, index, s.host);
    caps.push(...hvSetup.caps);
    msrs.push(...hvSetup.msrs);
  }
  if (s.settings.exposeKvm) msrs.push(...kvmPvResetMsrs(has));
  return { vcpuIndex: index, apicId, entries, kvmCapsToEnable: caps, msrs };
}

/** Leaf 0xD: XSAVE components enabled by the features, with sizes and offsets from the host (SDM Vol. 1 13.2). */
function xsaveLeaves(s: BuildState): CpuidEntry[] {
  const out: CpuidEntry[] = [];
  const hostXcr0 = (cpuidRegisterValue(s.supported, 0xd, 0, 'eax') | 0b11) >>> 0;
  let xcr0 = 0b11; // x87 and SSE state are always there with XSAVE
  const comps: { bit: number; size: number; offset: number; ecx: number }[] = [];
  for (const c of XSAVE_COMPONENTS) {
    if (!s.features.has(f(c.feature)) || (hostXcr0 & (1 << c.bit)) === 0) continue;
    const hostEntry = findCpuidEntry(s.supported, 0xd, c.bit);
    const fromHost = hostEntry !== undefined && hostEntry.index === c.bit && hostEntry.eax !== 0;
    comps.push({
      bit: c.bit,
      size: fromHost ? hostEntry.eax : c.size,
      offset: fromHost ? hostEntry.ebx : c.offset,
      // keep only "64-byte aligned when compacted" (bit 1) and "XFD-capable" (bit 2), as QEMU
      ecx: fromHost ? hostEntry.ecx & 0x6 : 0,
    });
    xcr0 |= 1 << c.bit;
  }
  const standardSize = comps.reduce((m, c) => Math.max(m, c.offset + c.size), XSAVE_LEGACY_SIZE);
  const compactedSize = comps.reduce((sum, c) => sum + c.size, XSAVE_LEGACY_SIZE);
  out.push(cpuidEntry(0xd, 0, { eax: xcr0, ebx: standardSize, ecx: standardSize, edx: 0 }, SIG));
  const sub1 = cpuidEntry(0xd, 1, { eax: s.features.word(featureWord(0xd, 1, 'eax')), ebx: compactedSize }, SIG);
  out.push(sub1);
  for (const c of comps) out.push(cpuidEntry(0xd, c.bit, { eax: c.size, ebx: c.offset, ecx: c.ecx }, SIG));
  return out;
}
