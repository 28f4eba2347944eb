/**
 * Recorded host tables for the CPU composition tests, and the derivation of a
 * KVM_GET_SUPPORTED_CPUID table from a raw bare-metal CPUID dump.
 *
 * The derivation applies what Linux KVM does in arch/x86/kvm/cpuid.c
 * (kvm_set_cpu_caps masks, __do_cpuid_func per-leaf rules, as of Linux
 * 5.13–5.15; svm_set_cpu_caps / vmx_set_cpu_caps with nested=1): each
 * feature register is the host value AND the KVM mask, plus the bits KVM
 * emulates (x2apic, tsc-adjust, arch-capabilities), leaves KVM fills itself
 * (6, 0xA, 0xD, 0x40000000/1, 0x80000008, 0x8000000A) are recomputed, and
 * leaves KVM does not pass (3, 5, 0x80000002..5, unknown ones) are zero.
 * Not modelled: speculation-control bits (the dumps predate those microcode
 * updates), MPX (KVM stopped exposing it), SGX, PT, PMU details beyond leaf 0xA.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  createContainer,
  cpuidEntry,
  findCpuidEntry,
  findCpuModel,
  hostCpuCapabilities,
  loadCpuModels,
  PluginRegistry,
  type CpuModelDefinition,
  KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
  parseCpuidTable,
  type CpuidEntry,
  type HostCpuCapabilities,
} from '../src/index.js';

const SIG = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;
const bits = (...b: number[]): number => b.reduce((m, x) => (m | (1 << x)) >>> 0, 0);

// kvm_set_cpu_caps masks (Linux 5.13 arch/x86/kvm/cpuid.c), by SDM/APM bit number.
const MASK_1_ECX = bits(0, 1, 9, 12, 13, 15, 17, 19, 20, 21, 22, 23, 25, 26, 28, 29, 30);
const MASK_1_EDX = bits(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26, 27);
// fsgsbase bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f/dq rdseed adx smap avx512ifma clflushopt clwb avx512pf/er/cd sha avx512bw/vl
const MASK_7_EBX = bits(0, 3, 4, 5, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 23, 24, 26, 27, 28, 29, 30, 31);
const MASK_7_ECX = bits(1, 2, 3, 6, 8, 9, 10, 11, 12, 14, 16, 22, 24, 25, 27, 28);
const MASK_7_EDX = bits(2, 3, 4, 8, 10, 14, 16, 23, 26, 27, 29, 31);
const MASK_D1_EAX = bits(0, 1, 2, 3);
const MASK_X1_ECX = bits(0, 1, 4, 5, 6, 7, 8, 9, 11, 16, 21, 22, 23);
const MASK_X1_EDX = bits(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 20, 22, 23, 24, 25, 26, 27, 29, 30, 31);
const KVM_PV_FEATURES_EAX = bits(0, 1, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 24);

export interface DeriveOptions {
  vendor: 'intel' | 'amd';
  /** nested virtualization enabled in kvm_intel/kvm_amd (the default since Linux 4.20 / 4.19) */
  nested: boolean;
  /** AMD: host has TSC ratio MSR (0x8000000A EDX bit 4) */
  tscScaling?: boolean;
}

/** Apply KVM's rules to a raw dump (one logical CPU). */
export function deriveKvmSupportedCpuid(raw: readonly CpuidEntry[], o: DeriveOptions): CpuidEntry[] {
  const out: CpuidEntry[] = [];
  const get = (fn: number, idx = 0): CpuidEntry => raw.find((e) => e.function === fn && e.index === idx) ?? cpuidEntry(fn, idx, {});
  const maxBasic = Math.min(get(0).eax, 0x1f);
  for (let fn = 0; fn <= maxBasic; fn++) {
    const r = get(fn);
    switch (fn) {
      case 0:
        out.push(cpuidEntry(0, 0, { eax: maxBasic, ebx: r.ebx, ecx: r.ecx, edx: r.edx }));
        break;
      case 1: {
        let ecx = (r.ecx & MASK_1_ECX) | bits(21); // KVM emulates x2APIC whatever the host has
        if (o.vendor === 'intel' && o.nested) ecx |= bits(5); // vmx_set_cpu_caps: VMX when nested=1
        out.push(cpuidEntry(1, 0, { eax: r.eax, ebx: r.ebx, ecx, edx: r.edx & MASK_1_EDX }));
        break;
      }
      case 2:
      case 9:
        out.push(cpuidEntry(fn, 0, r));
        break;
      case 4: {
        for (let i = 0; ; i++) {
          const s = get(4, i);
          out.push(cpuidEntry(4, i, s, SIG));
          if ((s.eax & 0x1f) === 0) break;
        }
        break;
      }
      case 6:
        out.push(cpuidEntry(6, 0, { eax: 0x4 }));
        break;
      case 7: {
        const max = Math.min(r.eax, 1);
        out.push(cpuidEntry(7, 0, { eax: max, ebx: (r.ebx & MASK_7_EBX) | bits(1), ecx: r.ecx & MASK_7_ECX, edx: (r.edx & MASK_7_EDX) | bits(29) }, SIG));
        if (max === 1) out.push(cpuidEntry(7, 1, { eax: get(7, 1).eax & bits(4, 5) }, SIG));
        break;
      }
      case 0xa: {
        const version = Math.min(r.eax & 0xff, 2);
        out.push(cpuidEntry(0xa, 0, version ? { eax: (r.eax & ~0xff) | version, ebx: r.ebx, edx: (r.edx & 0x1fff) | bits(15) } : {}));
        break;
      }
      case 0xb:
        for (let i = 0; ; i++) {
          const s = get(0xb, i);
          out.push(cpuidEntry(0xb, i, s, SIG));
          if ((s.ecx & 0xff00) === 0) break;
        }
        break;
      case 0xd: {
        // supported_xcr0: x87, SSE, AVX, AVX-512, PKRU as the host has them; MPX (3,4) no longer exposed.
        const xcr0 = get(0xd).eax & bits(0, 1, 2, 5, 6, 7, 9);
        const comps = [2, 5, 6, 7, 9].filter((c) => xcr0 & (1 << c)).map((c) => get(0xd, c));
        const size = comps.reduce((m, c) => Math.max(m, c.ebx + c.eax), 576);
        out.push(cpuidEntry(0xd, 0, { eax: xcr0, ebx: size, ecx: size, edx: 0 }, SIG));
        const d1 = get(0xd, 1).eax & MASK_D1_EAX;
        const compacted = comps.reduce((m, c) => m + c.eax, 576);
        out.push(cpuidEntry(0xd, 1, { eax: d1, ebx: d1 & bits(1, 3) ? compacted : 0 }, SIG));
        for (const c of [2, 5, 6, 7, 9]) if (xcr0 & (1 << c)) out.push(cpuidEntry(0xd, c, { ...get(0xd, c), edx: 0 }, SIG));
        break;
      }
      default:
        // 3, 5, 8, 0xC, 0xE.. : KVM reports them as zero
        out.push(cpuidEntry(fn, 0, {}, [0xf, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1f].includes(fn) ? SIG : 0));
    }
  }
  const maxExt = Math.min(get(0x80000000).eax, 0x8000001f);
  for (let fn = 0x80000000; fn <= maxExt; fn++) {
    const r = get(fn);
    switch (fn) {
      case 0x80000000:
        out.push(cpuidEntry(fn, 0, { eax: maxExt, ebx: r.ebx, ecx: r.ecx, edx: r.edx }));
        break;
      case 0x80000001: {
        let ecx = r.ecx & MASK_X1_ECX;
        if (o.vendor === 'amd' && o.nested) ecx |= bits(2); // svm_set_cpu_caps: SVM when nested=1
        out.push(cpuidEntry(fn, 0, { eax: r.eax, ebx: r.ebx, ecx, edx: r.edx & MASK_X1_EDX }));
        break;
      }
      case 0x80000006:
      case 0x8000001a:
      case 0x8000001e:
        out.push(cpuidEntry(fn, 0, r));
        break;
      case 0x80000007:
        out.push(cpuidEntry(fn, 0, { edx: r.edx & bits(8) }));
        break;
      case 0x80000008:
        out.push(cpuidEntry(fn, 0, { eax: (r.eax & 0xff) | (Math.max((r.eax >>> 8) & 0xff, 48) << 8), ecx: r.ecx }));
        break;
      case 0x8000000a:
        out.push(
          cpuidEntry(
            fn,
            0,
            o.vendor === 'amd' && o.nested ? { eax: 1, ebx: 8, edx: bits(0, 3, 28) | (o.tscScaling ? bits(4) : 0) } : {},
          ),
        );
        break;
      case 0x80000019:
        out.push(cpuidEntry(fn, 0, { eax: r.eax, ebx: r.ebx }));
        break;
      case 0x8000001d:
        for (let i = 0; ; i++) {
          const s = get(fn, i);
          out.push(cpuidEntry(fn, i, s, SIG));
          if ((s.eax & 0x1f) === 0) break;
        }
        break;
      default:
        // 0x80000002..5 (brand, L1 cache) and the rest: not passed by KVM
        out.push(cpuidEntry(fn, 0, {}));
    }
  }
  const [kb = 0, kc = 0, kd = 0] = [0x4b4d564b, 0x564b4d56, 0x4d];
  out.push(cpuidEntry(0x40000000, 0, { eax: 0x40000001, ebx: kb, ecx: kc, edx: kd }));
  out.push(cpuidEntry(0x40000001, 0, { eax: KVM_PV_FEATURES_EAX }));
  return out;
}

/** `basic_cpuid[n]=…`, `ext_cpuid[n]=…`, `intel_fn4[n]=…`, `intel_fn11[n]=…` (libcpuid .test files). */
export function parseLibcpuidTest(lines: readonly string[]): CpuidEntry[] {
  const out: CpuidEntry[] = [];
  let maxBasic = -1;
  let maxExt = -1;
  for (const line of lines) {
    const m = /^(basic_cpuid|ext_cpuid|intel_fn4|intel_fn11)\[(\d+)\]=([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8}) ([0-9a-f]{8})$/i.exec(line.trim());
    if (m === null) throw new Error(`not a libcpuid line: ${line}`);
    const [, kind, n, a, b, c, d] = m as unknown as [string, string, string, string, string, string, string];
    const regs = { eax: parseInt(a, 16), ebx: parseInt(b, 16), ecx: parseInt(c, 16), edx: parseInt(d, 16) };
    const i = Number(n);
    if (kind === 'basic_cpuid') {
      if (i === 0) maxBasic = regs.eax;
      // leaves 4 and 0xB come from intel_fn4/intel_fn11; above the max leaf the tool records garbage repeats
      if (i <= maxBasic && i !== 4 && i !== 0xb) out.push(cpuidEntry(i, 0, regs));
    } else if (kind === 'ext_cpuid') {
      if (i === 0) maxExt = regs.eax;
      if (0x80000000 + i <= maxExt) out.push(cpuidEntry(0x80000000 + i, 0, regs));
    } else out.push(cpuidEntry(kind === 'intel_fn4' ? 4 : 0xb, i, regs));
  }
  return out;
}

/** `CPUID 0000000D: EAX-EBX-ECX-EDX [text]` (libcpuid raw dumps); repeated functions are successive subleaves. */
export function parseLibcpuidRaw(lines: readonly string[], subleafOf: (fn: number, nth: number) => number = (_fn, nth) => nth): CpuidEntry[] {
  const out: CpuidEntry[] = [];
  const seen = new Map<number, number>();
  for (const line of lines) {
    const m = /^CPUID ([0-9A-F]{8}): ([0-9A-F]{8})-([0-9A-F]{8})-([0-9A-F]{8})-([0-9A-F]{8})/i.exec(line.trim());
    if (m === null) throw new Error(`not a libcpuid raw line: ${line}`);
    const [, f, a, b, c, d] = m as unknown as [string, string, string, string, string, string];
    const fn = parseInt(f, 16);
    const nth = seen.get(fn) ?? 0;
    seen.set(fn, nth + 1);
    out.push(cpuidEntry(fn, subleafOf(fn, nth), { eax: parseInt(a, 16), ebx: parseInt(b, 16), ecx: parseInt(c, 16), edx: parseInt(d, 16) }));
  }
  return out;
}

export interface HostFixture {
  name: string;
  description: string;
  source: string;
  derivation: string;
  supported: CpuidEntry[];
  hostCaps: HostCpuCapabilities;
  raw?: CpuidEntry[];
  rawDump?: string[];
  rawFormat?: 'libcpuid-test' | 'libcpuid-raw';
  rawAdditions?: CpuidEntry[];
  deriveOptions?: DeriveOptions;
}

const FIXTURE_DIR = new URL('../../test/fixtures/cpuid/', import.meta.url);

export function loadHostFixture(file: string): HostFixture {
  const json: unknown = JSON.parse(fs.readFileSync(new URL(file, FIXTURE_DIR), 'utf8'));
  const o = json as Record<string, unknown>;
  const caps = o['kvmCapabilities'] as Record<string, number>;
  const extra = (o['hostCapsExtra'] ?? {}) as Pick<HostCpuCapabilities, 'irqchip' | 'modelId'>;
  return {
    name: String(o['name']),
    description: String(o['description']),
    source: String(o['source']),
    derivation: String(o['derivation']),
    supported: parseCpuidTable(o['supported'], `${file} supported`),
    hostCaps: hostCpuCapabilities((_cap, name) => caps[name] ?? 0, extra),
    ...(o['rawDump'] !== undefined ? { rawDump: o['rawDump'] as string[], rawFormat: o['rawFormat'] as 'libcpuid-test' | 'libcpuid-raw' } : {}),
    ...(o['rawAdditions'] !== undefined ? { rawAdditions: parseCpuidTable(o['rawAdditions'], `${file} rawAdditions`) } : {}),
    ...(o['deriveOptions'] !== undefined ? { deriveOptions: o['deriveOptions'] as DeriveOptions } : {}),
  };
}

/** The raw dump of a fixture as entries: parsed source lines, then the documented additions. */
export function fixtureRaw(fx: HostFixture): CpuidEntry[] {
  if (fx.rawDump === undefined) return [];
  const parsed = fx.rawFormat === 'libcpuid-test' ? parseLibcpuidTest(fx.rawDump) : parseLibcpuidRaw(fx.rawDump, rawSubleaf);
  const merged = [...parsed];
  for (const add of fx.rawAdditions ?? []) {
    const i = merged.findIndex((e) => e.function === add.function && e.index === add.index);
    if (i >= 0) merged[i] = add;
    else merged.push(add);
  }
  return merged;
}

/** In libcpuid raw dumps 0xD is dumped at subleaves 0 and 2 (x87/SSE and AVX); other repeats count up. */
function rawSubleaf(fn: number, nth: number): number {
  if (fn === 0xd) return nth === 0 ? 0 : nth + 1;
  return nth;
}

/** Does `table` have CPUID(fn, index).reg bit `bit`? */
export function hasBit(table: readonly CpuidEntry[], fn: number, index: number, reg: 'eax' | 'ebx' | 'ecx' | 'edx', bit: number): boolean {
  const e = findCpuidEntry(table, fn, index);
  return e !== undefined && ((e[reg] >>> bit) & 1) === 1;
}

const PLUGIN_DIR = path.resolve(fileURLToPath(import.meta.url), '../../../../../plugins/cpu-models');
let models: Promise<CpuModelDefinition[]> | undefined;

/**
 * The CPU models of plugins/cpu-models, loaded through the plugin loader as
 * the Machine would load them (the core never imports a plugin).
 */
export function cpuModels(): Promise<CpuModelDefinition[]> {
  if (!fs.existsSync(path.join(PLUGIN_DIR, 'dist/src/index.js'))) {
    throw new Error(`plugins/cpu-models is not built: run 'npx tsc -b packages/core plugins/cpu-models' first`);
  }
  models ??= loadCpuModels(PluginRegistry.create({ container: createContainer(), paths: [PLUGIN_DIR], noDiscovery: true }));
  return models;
}

export async function cpuModel(name: string): Promise<CpuModelDefinition> {
  return findCpuModel(await cpuModels(), name);
}

/** A copy of `table` with the given bits cleared (a host that lacks some features). */
export function withoutBits(table: readonly CpuidEntry[], clear: { fn: number; index?: number; reg: 'eax' | 'ebx' | 'ecx' | 'edx'; bits: number[] }[]): CpuidEntry[] {
  return table.map((e) => {
    const copy = { ...e };
    for (const c of clear) {
      if (c.fn === e.function && (c.index ?? 0) === e.index) copy[c.reg] = (copy[c.reg] & ~bits(...c.bits)) >>> 0;
    }
    return copy;
  });
}
