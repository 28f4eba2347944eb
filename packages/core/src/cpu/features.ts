/**
 * CPU feature names and where they live in CPUID.
 *
 * Names are QEMU's (target/i386/cpu.c feature_word_info[].feat_names and
 * the property aliases of x86_cpu_initfn), so `--cpu Haswell,-hle` means
 * here what `-cpu Haswell,-hle` means to QEMU. Bit positions are the Intel
 * SDM Vol. 2A CPUID tables (leaves 1, 6, 7, 0xD), the AMD APM Vol. 3
 * Appendix E (0x80000001, 0x80000007, 0x80000008, 0x8000000A) and Linux
 * Documentation/virt/kvm/x86/cpuid.rst (KVM leaf 0x40000001).
 *
 * Features that need CPUID leaves tsvmm does not build (SGX 0x12, Intel PT
 * 0x14, AMX 0x1D/0x1E, arch LBR 0x1C, XFD) are left out on purpose: setting
 * the enumeration bit without the leaf it points to would mislead a guest.
 */
import type { CpuidRegister } from './cpuid.js';

export interface FeatureWordDefinition {
  leaf: number;
  /** subleaf (ECX input) for leaves that have them, undefined for the others */
  subleaf: number | undefined;
  register: CpuidRegister;
  /** feature name → bit (or bits: QEMU's `kvmclock` sets both CLOCKSOURCE and CLOCKSOURCE2) */
  bits: Readonly<Record<string, number | readonly number[]>>;
}

/** A named feature resolved to its word and mask. */
export interface CpuFeature {
  name: string;
  word: FeatureWordDefinition;
  /** key of the word in a CpuFeatureSet */
  key: string;
  mask: number;
  bits: readonly number[];
}

export const FEATURE_WORDS: readonly FeatureWordDefinition[] = [
  {
    leaf: 0x1,
    subleaf: undefined,
    register: 'edx',
    bits: {
      fpu: 0, vme: 1, de: 2, pse: 3, tsc: 4, msr: 5, pae: 6, mce: 7,
      cx8: 8, apic: 9, sep: 11, mtrr: 12, pge: 13, mca: 14, cmov: 15,
      pat: 16, pse36: 17, pn: 18, clflush: 19, ds: 21, acpi: 22, mmx: 23,
      fxsr: 24, sse: 25, sse2: 26, ss: 27, ht: 28, tm: 29, ia64: 30, pbe: 31,
    },
  },
  {
    leaf: 0x1,
    subleaf: undefined,
    register: 'ecx',
    bits: {
      // bit 27 (OSXSAVE) is not a feature: the CPU reflects CR4.OSXSAVE there, KVM does it for the guest.
      pni: 0, pclmulqdq: 1, dtes64: 2, monitor: 3, 'ds-cpl': 4, vmx: 5, smx: 6, est: 7,
      tm2: 8, ssse3: 9, cid: 10, fma: 12, cx16: 13, xtpr: 14, pdcm: 15,
      pcid: 17, dca: 18, 'sse4.1': 19, 'sse4.2': 20, x2apic: 21, movbe: 22, popcnt: 23,
      'tsc-deadline': 24, aes: 25, xsave: 26, avx: 28, f16c: 29, rdrand: 30, hypervisor: 31,
    },
  },
  { leaf: 0x6, subleaf: undefined, register: 'eax', bits: { arat: 2 } },
  {
    leaf: 0x7,
    subleaf: 0,
    register: 'ebx',
    bits: {
      fsgsbase: 0, 'tsc-adjust': 1, bmi1: 3, hle: 4, avx2: 5, 'fdp-excptn-only': 6, smep: 7,
      bmi2: 8, erms: 9, invpcid: 10, rtm: 11, 'zero-fcs-fds': 13, mpx: 14,
      avx512f: 16, avx512dq: 17, rdseed: 18, adx: 19, smap: 20, avx512ifma: 21, pcommit: 22, clflushopt: 23,
      clwb: 24, avx512pf: 26, avx512er: 27, avx512cd: 28, 'sha-ni': 29, avx512bw: 30, avx512vl: 31,
    },
  },
  {
    leaf: 0x7,
    subleaf: 0,
    register: 'ecx',
    bits: {
      // bit 4 (OSPKE) mirrors CR4.PKE like OSXSAVE does.
      avx512vbmi: 1, umip: 2, pku: 3, waitpkg: 5, avx512vbmi2: 6, gfni: 8, vaes: 9,
      vpclmulqdq: 10, avx512vnni: 11, avx512bitalg: 12, 'avx512-vpopcntdq': 14, la57: 16, rdpid: 22,
      'bus-lock-detect': 24, cldemote: 25, movdiri: 27, movdir64b: 28, pks: 31,
    },
  },
  {
    leaf: 0x7,
    subleaf: 0,
    register: 'edx',
    bits: {
      'avx512-4vnniw': 2, 'avx512-4fmaps': 3, fsrm: 4, 'avx512-vp2intersect': 8, 'md-clear': 10,
      serialize: 14, 'tsx-ldtrk': 16, 'avx512-fp16': 23, 'spec-ctrl': 26, stibp: 27,
      'flush-l1d': 28, 'arch-capabilities': 29, 'core-capability': 30, ssbd: 31,
    },
  },
  {
    leaf: 0x7,
    subleaf: 1,
    register: 'eax',
    bits: {
      sha512: 0, sm3: 1, sm4: 2, 'avx-vnni': 4, 'avx512-bf16': 5, cmpccxadd: 7, fzrm: 10, fsrs: 11,
      fsrc: 12, fred: 17, lkgs: 18, wrmsrns: 19, 'avx-ifma': 23, lam: 26,
    },
  },
  { leaf: 0xd, subleaf: 1, register: 'eax', bits: { xsaveopt: 0, xsavec: 1, xgetbv1: 2, xsaves: 3 } },
  {
    // The bits that repeat leaf 1 EDX on AMD are not named here: they are copied from leaf 1 (AMD aliases).
    leaf: 0x80000001,
    subleaf: undefined,
    register: 'edx',
    bits: { syscall: 11, nx: 20, mmxext: 22, 'fxsr-opt': 25, pdpe1gb: 26, rdtscp: 27, lm: 29, '3dnowext': 30, '3dnow': 31 },
  },
  {
    leaf: 0x80000001,
    subleaf: undefined,
    register: 'ecx',
    bits: {
      'lahf-lm': 0, 'cmp-legacy': 1, svm: 2, extapic: 3, cr8legacy: 4, abm: 5, sse4a: 6, misalignsse: 7,
      '3dnowprefetch': 8, osvw: 9, ibs: 10, xop: 11, skinit: 12, wdt: 13, lwp: 15,
      fma4: 16, tce: 17, 'nodeid-msr': 19, tbm: 21, topoext: 22, 'perfctr-core': 23, 'perfctr-nb': 24,
    },
  },
  { leaf: 0x80000007, subleaf: undefined, register: 'edx', bits: { invtsc: 8 } },
  {
    leaf: 0x80000008,
    subleaf: undefined,
    register: 'ebx',
    bits: {
      clzero: 0, xsaveerptr: 2, wbnoinvd: 9, ibpb: 12, ibrs: 14, 'amd-stibp': 15, 'stibp-always-on': 17,
      'amd-ssbd': 24, 'virt-ssbd': 25, 'amd-no-ssb': 26, 'amd-psfd': 28,
    },
  },
  {
    leaf: 0x8000000a,
    subleaf: undefined,
    register: 'edx',
    bits: {
      npt: 0, lbrv: 1, 'svm-lock': 2, 'nrip-save': 3, 'tsc-scale': 4, 'vmcb-clean': 5, flushbyasid: 6,
      decodeassists: 7, 'pause-filter': 10, pfthreshold: 12, avic: 13, 'v-vmsave-vmload': 15, vgif: 16,
      vnmi: 25, 'svme-addr-chk': 28,
    },
  },
  {
    leaf: 0x40000001,
    subleaf: undefined,
    register: 'eax',
    bits: {
      kvmclock: [0, 3], 'kvm-nopiodelay': 1, 'kvm-mmu': 2, 'kvm-asyncpf': 4, 'kvm-steal-time': 5,
      'kvm-pv-eoi': 6, 'kvm-pv-unhalt': 7, 'kvm-pv-tlb-flush': 9, 'kvm-asyncpf-vmexit': 10, 'kvm-pv-ipi': 11,
      'kvm-poll-control': 12, 'kvm-pv-sched-yield': 13, 'kvm-asyncpf-int': 14, 'kvm-msi-ext-dest-id': 15,
      'kvmclock-stable-bit': 24,
    },
  },
  { leaf: 0x40000001, subleaf: undefined, register: 'edx', bits: { 'kvm-hint-dedicated': 0 } },
];

/**
 * Other spellings QEMU accepts. Underscores are turned into dashes first (QEMU's
 * feat2prop), so `sse4_2` → `sse4-2` → `sse4.2` and `kvm_pv_eoi` → `kvm-pv-eoi`.
 */
export const FEATURE_ALIASES: Readonly<Record<string, string>> = {
  sse3: 'pni',
  pclmuldq: 'pclmulqdq',
  'sse4-1': 'sse4.1',
  'sse4-2': 'sse4.2',
  xd: 'nx',
  ffxsr: 'fxsr-opt',
  i64: 'lm',
};

/** Features QEMU knows that need CPUID leaves tsvmm does not build; named so the error can say so. */
export const FEATURES_NOT_IMPLEMENTED: ReadonlySet<string> = new Set([
  'sgx', 'sgxlc', 'sgx1', 'sgx2', 'intel-pt', 'intel-pt-lip', 'arch-lbr', 'amx-bf16', 'amx-tile', 'amx-int8', 'amx-fp16', 'xfd',
]);

export function featureWordKey(leaf: number, subleaf: number | undefined, register: CpuidRegister): string {
  return `${leaf.toString(16)}.${subleaf ?? 0}.${register}`;
}

const hex2 = (n: number): string => n.toString(16).toUpperCase().padStart(2, '0');

/** QEMU's spelling of a word in its warnings: CPUID.01H:ECX or CPUID[eax=07h,ecx=00h].EBX. */
export function describeFeatureWord(w: FeatureWordDefinition): string {
  const reg = w.register.toUpperCase();
  return w.subleaf === undefined ? `CPUID.${hex2(w.leaf)}H:${reg}` : `CPUID[eax=${hex2(w.leaf)}h,ecx=${hex2(w.subleaf)}h].${reg}`;
}

const FEATURES = new Map<string, CpuFeature>();
for (const word of FEATURE_WORDS) {
  const key = featureWordKey(word.leaf, word.subleaf, word.register);
  for (const [name, b] of Object.entries(word.bits)) {
    const bits = typeof b === 'number' ? [b] : [...b];
    const mask = bits.reduce((m, bit) => (m | (1 << bit)) >>> 0, 0);
    FEATURES.set(name, { name, word, key, mask, bits });
  }
}

/** The canonical QEMU name for a spelling, or undefined if no feature has it. */
export function canonicalFeatureName(spelling: string): string | undefined {
  const dashed = spelling.replace(/_/g, '-');
  const name = Object.hasOwn(FEATURE_ALIASES, dashed) ? (FEATURE_ALIASES[dashed] ?? dashed) : dashed;
  return FEATURES.has(name) ? name : undefined;
}

export function lookupCpuFeature(spelling: string): CpuFeature | undefined {
  const name = canonicalFeatureName(spelling);
  return name === undefined ? undefined : FEATURES.get(name);
}

/** All canonical feature names, sorted (for `--cpu help`). */
export function cpuFeatureNames(): string[] {
  return [...FEATURES.keys()].sort();
}

export function describeFeature(f: CpuFeature): string {
  const bits = f.bits.length === 1 ? `bit ${f.bits[0]}` : `bits ${f.bits.join(',')}`;
  return `${describeFeatureWord(f.word)}.${f.name} [${bits}]`;
}

/** Known names closest to a misspelling (edit distance ≤ 2), for error hints. */
export function suggestFeatureNames(spelling: string, limit = 3): string[] {
  const s = spelling.toLowerCase().replace(/_/g, '-');
  if (s.length > 64) return [];
  // short inputs are close to everything short; allow fewer edits for them
  const maxEdits = Math.min(2, Math.floor(s.length / 2));
  const scored: [string, number][] = [];
  for (const name of [...FEATURES.keys(), ...Object.keys(FEATURE_ALIASES)]) {
    const d = editDistance(s, name);
    if (d <= maxEdits) scored.push([name, d]);
  }
  return scored
    .sort((a, b) => a[1] - b[1] || a[0].localeCompare(b[0]))
    .slice(0, limit)
    .map(([n]) => n);
}

function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] ?? 0;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j] ?? 0;
      const left = prev[j - 1] ?? 0;
      prev[j] = Math.min(up + 1, left + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length] ?? 0;
}

/** A set of enabled features, kept as one 32-bit mask per feature word. */
export class CpuFeatureSet {
  private readonly words = new Map<string, number>();

  static of(features: Iterable<CpuFeature>): CpuFeatureSet {
    const s = new CpuFeatureSet();
    for (const f of features) s.add(f);
    return s;
  }

  clone(): CpuFeatureSet {
    const c = new CpuFeatureSet();
    for (const [k, v] of this.words) c.words.set(k, v);
    return c;
  }

  add(f: CpuFeature): void {
    this.words.set(f.key, ((this.words.get(f.key) ?? 0) | f.mask) >>> 0);
  }

  remove(f: CpuFeature): void {
    this.words.set(f.key, ((this.words.get(f.key) ?? 0) & ~f.mask) >>> 0);
  }

  set(f: CpuFeature, on: boolean): void {
    if (on) this.add(f);
    else this.remove(f);
  }

  /** all of the feature's bits are set */
  has(f: CpuFeature): boolean {
    return ((this.words.get(f.key) ?? 0) & f.mask) >>> 0 === f.mask;
  }

  word(w: FeatureWordDefinition): number {
    return this.words.get(featureWordKey(w.leaf, w.subleaf, w.register)) ?? 0;
  }

  setWord(w: FeatureWordDefinition, value: number): void {
    this.words.set(featureWordKey(w.leaf, w.subleaf, w.register), value >>> 0);
  }

  /** Canonical names of the enabled features, sorted. */
  names(): string[] {
    const out: string[] = [];
    for (const f of FEATURES.values()) if (this.has(f)) out.push(f.name);
    return out.sort();
  }
}

/** Every named feature, in table order. */
export function allCpuFeatures(): CpuFeature[] {
  return [...FEATURES.values()];
}

export function featureWord(leaf: number, subleaf: number | undefined, register: CpuidRegister): FeatureWordDefinition {
  const w = FEATURE_WORDS.find((x) => x.leaf === leaf && x.subleaf === subleaf && x.register === register);
  if (w === undefined) throw new Error(`no feature word for CPUID ${leaf.toString(16)}.${subleaf ?? '-'}.${register}`);
  return w;
}
