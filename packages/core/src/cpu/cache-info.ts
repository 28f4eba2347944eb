/**
 * The cache descriptions a guest sees in CPUID leaves 2, 4, 0x80000005,
 * 0x80000006 and 0x8000001D.
 *
 * The values are QEMU's "legacy" caches (target/i386/cpu.c legacy_l1d_cache
 * … legacy_l3_cache), which every model tsvmm ships uses, so guests see the
 * same caches as under QEMU. Encodings: Intel SDM Vol. 2A CPUID leaf 2
 * (descriptor table) and leaf 4 (deterministic cache parameters); AMD APM
 * Vol. 3 E.4.4/E.4.5 (0x80000005/6) and E.4.15 (0x8000001D).
 */
import type { ApicIdLayout, CpuTopology } from './topology.js';

export interface CacheInfo {
  /** 1 data, 2 instruction, 3 unified (leaf 4 EAX[4:0]) */
  type: 1 | 2 | 3;
  level: number;
  sizeBytes: number;
  lineSize: number;
  associativity: number;
  sets: number;
  partitions: number;
  linesPerTag: number;
  selfInit: boolean;
  noInvdSharing: boolean;
  inclusive: boolean;
  complexIndexing: boolean;
  /** which topology level shares it: one core (its threads) or the whole package */
  shareLevel: 'core' | 'package';
}

const KiB = 1024;
const MiB = 1024 * KiB;

const base = { partitions: 1, linesPerTag: 1, inclusive: false, complexIndexing: false } as const;

/** leaf 4 caches (QEMU legacy_l1d_cache, legacy_l1i_cache, legacy_l2_cache, legacy_l3_cache) */
export const INTEL_CACHES = {
  l1d: { ...base, type: 1, level: 1, sizeBytes: 32 * KiB, lineSize: 64, associativity: 8, sets: 64, selfInit: true, noInvdSharing: true, shareLevel: 'core' },
  l1i: { ...base, type: 2, level: 1, sizeBytes: 32 * KiB, lineSize: 64, associativity: 8, sets: 64, selfInit: true, noInvdSharing: true, shareLevel: 'core' },
  l2: { ...base, type: 3, level: 2, sizeBytes: 4 * MiB, lineSize: 64, associativity: 16, sets: 4096, selfInit: true, noInvdSharing: true, shareLevel: 'core' },
  l3: {
    ...base, type: 3, level: 3, sizeBytes: 16 * MiB, lineSize: 64, associativity: 16, sets: 16384,
    selfInit: true, noInvdSharing: false, inclusive: true, complexIndexing: true, shareLevel: 'package',
  },
} as const satisfies Record<string, CacheInfo>;

/** 0x80000005/6 and 0x8000001D caches (QEMU legacy_l1d_cache_amd, legacy_l1i_cache_amd, legacy_l2_cache_amd, legacy_l3_cache) */
export const AMD_CACHES = {
  l1d: { ...base, type: 1, level: 1, sizeBytes: 64 * KiB, lineSize: 64, associativity: 2, sets: 512, selfInit: true, noInvdSharing: true, shareLevel: 'core' },
  l1i: { ...base, type: 2, level: 1, sizeBytes: 64 * KiB, lineSize: 64, associativity: 2, sets: 512, selfInit: true, noInvdSharing: true, shareLevel: 'core' },
  l2: { ...base, type: 3, level: 2, sizeBytes: 512 * KiB, lineSize: 64, associativity: 16, sets: 512, selfInit: false, noInvdSharing: false, shareLevel: 'core' },
  l3: INTEL_CACHES.l3,
} as const satisfies Record<string, CacheInfo>;

/**
 * Leaf 2 descriptors of the same caches: 0x2C (L1d 32K 8-way), 0x30 (L1i 32K
 * 8-way), 0x7D (L2 2M 8-way — QEMU's legacy_l2_cache_cpuid2, which differs from
 * leaf 4's L2 as in QEMU), 0x4D (L3 16M 16-way).
 */
export const LEAF2 = { eax: 0x00000001, ebx: 0, edxNoL3: 0x002c307d, l3Descriptor: 0x4d } as const;

/**
 * "Maximum number of addressable IDs for logical processors sharing this
 * cache" (EAX[25:14], value + 1), as QEMU 7.2 fills it: L1 0 (QEMU only
 * counts sharing threads for L1 from 9.1 on, machine-type dependent), L2 the
 * threads of a core, L3 the package's APIC ID space. 0x8000001D counts L1/L2
 * per core and L3 as cores · threads (QEMU 7.2 encode_cache_cpuid8000001d).
 */
function sharingIds(c: CacheInfo, layout: ApicIdLayout, topo: CpuTopology, leaf: 4 | 0x8000001d): number {
  if (leaf === 4) {
    if (c.level === 1) return 0;
    if (c.shareLevel === 'core') return topo.threads - 1;
    return (1 << layout.pkgOffset) - 1;
  }
  return c.shareLevel === 'core' ? topo.threads - 1 : topo.cores * topo.threads - 1;
}

function geometry(c: CacheInfo): { ebx: number; ecx: number; edx: number } {
  return {
    ebx: ((c.lineSize - 1) | ((c.partitions - 1) << 12) | ((c.associativity - 1) << 22)) >>> 0,
    ecx: (c.sets - 1) >>> 0,
    edx: (c.noInvdSharing ? 1 : 0) | (c.inclusive ? 2 : 0) | (c.complexIndexing ? 4 : 0),
  };
}

/**
 * One leaf 4 subleaf. EAX[31:26] is cores per package - 1, as QEMU 7.2 reports
 * it (newer QEMU rounds up to a power of two, the addressable ID count).
 */
export function encodeLeaf4(c: CacheInfo, layout: ApicIdLayout, topo: CpuTopology): { eax: number; ebx: number; ecx: number; edx: number } {
  const eax = c.type | (c.level << 5) | (c.selfInit ? 1 << 8 : 0) | (sharingIds(c, layout, topo, 4) << 14) | ((topo.cores - 1) << 26);
  return { eax: eax >>> 0, ...geometry(c) };
}

/** One 0x8000001D subleaf (APM: no core count; EDX as leaf 4's, which QEMU 7.2 passes unmasked). */
export function encode8000001d(c: CacheInfo, layout: ApicIdLayout, topo: CpuTopology): { eax: number; ebx: number; ecx: number; edx: number } {
  const eax = c.type | (c.level << 5) | (c.selfInit ? 1 << 8 : 0) | (sharingIds(c, layout, topo, 0x8000001d) << 14);
  return { eax: eax >>> 0, ...geometry(c) };
}

/** APM associativity encoding of 0x80000006 (full = 0xF). */
function amdAssoc(a: number): number {
  const table: Record<number, number> = { 0: 0, 1: 1, 2: 2, 4: 4, 8: 6, 16: 8, 32: 0xa, 48: 0xb, 64: 0xc, 96: 0xd, 128: 0xe, 255: 0xf };
  return table[a] ?? 0;
}

// TLB geometry QEMU reports (L1_DTLB_2M_ASSOC … L2_ITLB_4K_ENTRIES).
const L1_TLB = (1 << 24) | (255 << 16) | (1 << 8) | 255;
const L2_TLB_2M = 0;
const L2_TLB_4K = (amdAssoc(4) << 28) | (512 << 16) | (amdAssoc(4) << 12) | 512;

function l1Descriptor(c: CacheInfo): number {
  return ((c.sizeBytes / KiB) << 24) | (c.associativity << 16) | (c.linesPerTag << 8) | c.lineSize;
}

export function encode80000005(): { eax: number; ebx: number; ecx: number; edx: number } {
  return { eax: L1_TLB >>> 0, ebx: L1_TLB >>> 0, ecx: l1Descriptor(AMD_CACHES.l1d) >>> 0, edx: l1Descriptor(AMD_CACHES.l1i) >>> 0 };
}

export function encode80000006(withL3: boolean): { eax: number; ebx: number; ecx: number; edx: number } {
  const l2 = AMD_CACHES.l2;
  const l3 = AMD_CACHES.l3;
  const ecx = ((l2.sizeBytes / KiB) << 16) | (amdAssoc(l2.associativity) << 12) | (l2.linesPerTag << 8) | l2.lineSize;
  const edx = withL3 ? ((l3.sizeBytes / (512 * KiB)) << 18) | (amdAssoc(l3.associativity) << 12) | (l3.linesPerTag << 8) | l3.lineSize : 0;
  return { eax: L2_TLB_2M, ebx: L2_TLB_4K >>> 0, ecx: ecx >>> 0, edx: edx >>> 0 };
}
