/**
 * Shared by the CPU model guest tests (cpu-guest.test.ts, cpu-qemu.test.ts):
 * this host's KVM CPUID support as tsvmm reads it, the plan @tsvmm/core
 * composes from it, the leaves test/guest/guests/cpuid_dump.c prints, the
 * tables `tsvmm run --dump-cpuid` writes, and KVM's CPUID lookup rules to
 * predict what a guest reads from a vCPU's table.
 *
 * What this host does to CPUID (measured; docs/cpu.md "This development
 * host"): the paravirtual KVM (kvm_pvm) rewrites the table given with
 * KVM_SET_CPUID2 — leaf 1 ECX (except x2apic, tsc-deadline and hypervisor,
 * which keep the VMM's bits) and EDX, every subleaf of leaf 7 and leaf 0xD
 * become the host CPU's, whatever the model — and KVM_GET_CPUID2 returns the
 * rewritten table, which is exactly what the guest reads.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  createContainer,
  findCpuidEntry,
  findCpuModel,
  hostCpuCapabilities,
  loadCpuModels,
  lookupCpuFeature,
  parseCpuidTable,
  parseCpuOption,
  parseSmpOption,
  planCpuid,
  PluginRegistry,
  vendorOf,
  type CpuidEntry,
  type CpuidPlan,
  type CpuidRegister,
  type CpuModelDefinition,
  type HostCpuCapabilities,
} from '@tsvmm/core';
import { createKvmAccelerator } from '@tsvmm/core/kvm';
import { describeRun, guestImage, repoRoot, runGuest, type GuestRun, type Vmm } from './guest-harness.js';

/** EAX, EBX, ECX, EDX */
export type Regs = readonly [number, number, number, number];
export const REGISTERS: readonly CpuidRegister[] = ['eax', 'ebx', 'ecx', 'edx'];

const hex8 = (v: number): string => `0x${(v >>> 0).toString(16).padStart(8, '0')}`;
export const leafKey = (fn: number, index: number): string => `${hex8(fn)} 0x${index.toString(16).padStart(2, '0')}`;
export const formatRegs = (r: Regs): string => `eax=${hex8(r[0])} ebx=${hex8(r[1])} ecx=${hex8(r[2])} edx=${hex8(r[3])}`;

/** KVM_CAP_HYPERV (include/uapi/linux/kvm.h) */
export const KVM_CAP_HYPERV = 44;

export interface HostCpuid {
  /** KVM_GET_SUPPORTED_CPUID, as the accelerator reads it */
  supported: readonly CpuidEntry[];
  hostCaps: HostCpuCapabilities;
  /** the paravirtual KVM of the development hosts (kvm_pvm) is loaded */
  kvmPvm: boolean;
  /** KVM_CAP_MAX_VCPUS */
  maxVcpus: number;
  /** /proc/cpuinfo of the host CPU: family, model, stepping, model name */
  cpuinfo: { family: number; model: number; stepping: number; modelName: string };
}

let hostCache: HostCpuid | undefined;

/** What Machine.create sees of this host: the same accelerator call, the same capability probe. */
export function hostCpuid(): HostCpuid {
  if (hostCache !== undefined) return hostCache;
  const accel = createKvmAccelerator();
  const host = accel.hostCpuSupport();
  const hostCaps = hostCpuCapabilities((cap) => host.checkExtension(cap), {
    irqchip: 'kernel',
    ...(host.modelId !== undefined ? { modelId: host.modelId } : {}),
  });
  const info = readFileSync('/proc/cpuinfo', 'utf8');
  const field = (name: string): string => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';
  hostCache = {
    supported: host.supportedCpuid,
    hostCaps,
    kvmPvm: existsSync('/sys/module/kvm_pvm'),
    maxVcpus: accel.maxVcpus(),
    cpuinfo: { family: Number(field('cpu family')), model: Number(field('model')), stepping: Number(field('stepping')), modelName: field('model name') },
  };
  return hostCache;
}

let modelCache: Promise<CpuModelDefinition[]> | undefined;

/** The installed cpu-model plugins, found as tsvmm finds them (node_modules of the workspace). */
export function cpuModels(): Promise<CpuModelDefinition[]> {
  modelCache ??= loadCpuModels(PluginRegistry.create({ container: createContainer(), searchFrom: path.join(repoRoot, 'host') }));
  return modelCache;
}

/** What tsvmm should compose for `--cpu cpu --smp smp` on this host (as Machine.create does). */
export async function planFor(cpu: string, smp = '1'): Promise<CpuidPlan> {
  const opt = parseCpuOption(cpu);
  if (opt.kind !== 'model') throw new Error(`--cpu ${cpu} is not a model`);
  const host = hostCpuid();
  return planCpuid({
    model: findCpuModel(await cpuModels(), opt.model),
    modifiers: opt.modifiers,
    supported: host.supported,
    hostCaps: host.hostCaps,
    topology: parseSmpOption(smp),
  });
}

/** Whether `table` has every bit of feature `name` (QEMU spelling). */
export function tableHas(table: readonly CpuidEntry[], name: string): boolean {
  const f = lookupCpuFeature(name);
  if (f === undefined) throw new Error(`no CPU feature '${name}'`);
  const e = findCpuidEntry(table, f.word.leaf, f.word.subleaf ?? 0);
  return e !== undefined && ((e[f.word.register] >>> 0) & f.mask) >>> 0 === f.mask;
}

/** CPUID leaves per local APIC ID, from cpuid_dump.c's "CPUID apic=N 0x... 0x..: eax=..." lines. */
export type GuestCpuid = Map<number, Map<string, Regs>>;

export function parseGuestCpuid(serial: string): GuestCpuid {
  const out: GuestCpuid = new Map();
  const re = /^CPUID apic=(\d+) 0x([0-9a-f]{8}) 0x([0-9a-f]{2}): eax=0x([0-9a-f]{8}) ebx=0x([0-9a-f]{8}) ecx=0x([0-9a-f]{8}) edx=0x([0-9a-f]{8})$/gm;
  for (const m of serial.matchAll(re)) {
    const [apic, fn, index, a, b, c, d] = m.slice(1).map((x, i) => (i === 0 ? Number(x) : parseInt(x ?? '', 16)));
    let leaves = out.get(apic ?? -1);
    if (leaves === undefined) out.set(apic ?? -1, (leaves = new Map()));
    leaves.set(leafKey(fn ?? 0, index ?? 0), [a ?? 0, b ?? 0, c ?? 0, d ?? 0]);
  }
  return out;
}

/** One leaf as the guest on APIC `apic` read it; throws naming the leaf when it was not printed. */
export function guestLeaf(g: GuestCpuid, apic: number, fn: number, index = 0): Regs {
  const r = g.get(apic)?.get(leafKey(fn, index));
  if (r === undefined) throw new Error(`the guest on APIC ${apic} did not print CPUID ${leafKey(fn, index)}`);
  return r;
}

/** The brand string of 0x80000002..4, as the guest read it. */
export function guestBrand(g: GuestCpuid, apic: number): string {
  let s = '';
  for (let fn = 0x80000002; fn <= 0x80000004; fn++) {
    for (const d of guestLeaf(g, apic, fn)) for (let b = 0; b < 4; b++) s += String.fromCharCode((d >>> (8 * b)) & 0xff);
  }
  return s.replace(/\0.*$/s, '').trim();
}

export function guestVendor(g: GuestCpuid, apic: number): string {
  const [, ebx, ecx, edx] = guestLeaf(g, apic, 0);
  return [ebx, edx, ecx].map((d) => String.fromCharCode(d & 0xff, (d >>> 8) & 0xff, (d >>> 16) & 0xff, d >>> 24)).join('');
}

export interface VcpuTables {
  index: number;
  apicId: number;
  /** what tsvmm handed to KVM_SET_CPUID2 */
  set: CpuidEntry[];
  /** what KVM holds (KVM_GET_CPUID2) */
  held: CpuidEntry[];
}

/** Read `tsvmm run --dump-cpuid FILE`. */
export function readCpuidDump(file: string): { model: string; vcpus: VcpuTables[] } {
  const raw: unknown = JSON.parse(readFileSync(file, 'utf8'));
  if (typeof raw !== 'object' || raw === null || !Array.isArray((raw as { vcpus?: unknown }).vcpus)) throw new Error(`${file}: not a --dump-cpuid file`);
  const r = raw as { model?: unknown; vcpus: unknown[] };
  return {
    model: String(r.model),
    vcpus: r.vcpus.map((v, i) => {
      const o = v as Record<string, unknown>;
      return {
        index: Number(o['index']),
        apicId: Number(o['apicId']),
        set: parseCpuidTable(o['setCpuid2'], `${file} vcpus[${i}].setCpuid2`),
        held: parseCpuidTable(o['getCpuid2'], `${file} vcpus[${i}].getCpuid2`),
      };
    }),
  };
}

const regsOf = (e: CpuidEntry | undefined): Regs => (e === undefined ? [0, 0, 0, 0] : [e.eax >>> 0, e.ebx >>> 0, e.ecx >>> 0, e.edx >>> 0]);

/**
 * What CPUID(fn, index) returns to a guest whose vCPU table is `table`
 * (arch/x86/kvm/cpuid.c kvm_cpuid, get_out_of_range_cpuid_entry): the
 * matching entry; for a non-AMD vendor, a leaf above its range's max leaf
 * reads as the max basic leaf with the same index; otherwise zeros, except
 * that leaf 0xB echoes the subleaf in ECX and the x2APIC ID in EDX.
 */
export function kvmGuestView(table: readonly CpuidEntry[], fn: number, index: number): Regs {
  let f = fn >>> 0;
  let e = findCpuidEntry(table, f, index);
  if (e === undefined) {
    const basic = findCpuidEntry(table, 0);
    const vendor = vendorOf(table);
    if (basic !== undefined && vendor !== 'AuthenticAMD' && vendor !== 'HygonGenuine') {
      const classBase = f >= 0x40000000 && f <= 0x4fffffff ? (f & 0xffffff00) >>> 0 : f >= 0xc0000000 ? 0xc0000000 : (f & 0x80000000) >>> 0;
      const cls = findCpuidEntry(table, classBase);
      if (cls === undefined || f > cls.eax >>> 0) {
        f = basic.eax >>> 0;
        e = findCpuidEntry(table, f, index);
      }
    }
  }
  if (e !== undefined) return regsOf(e);
  if (f === 0xb || f === 0x1f) {
    const sub1 = findCpuidEntry(table, f, 1);
    if (sub1 !== undefined) return [0, 0, index & 0xff, sub1.edx >>> 0];
  }
  return [0, 0, 0, 0];
}

/** Leaf 1 ECX bits kvm_pvm leaves as the VMM set them: x2apic, tsc-deadline, hypervisor. */
export const PVM_LEAF1_ECX_FROM_TABLE = ((1 << 21) | (1 << 24) | (1 << 31)) >>> 0;

/**
 * The bits of register `reg` of CPUID(fn) that kvm_pvm replaces with the host
 * CPU's in the table KVM holds (0 elsewhere). Measured on the development
 * host; see the file comment.
 */
export function pvmReplacedMask(fn: number, reg: CpuidRegister): number {
  if (fn === 7 || fn === 0xd) return 0xffffffff;
  if (fn === 1 && reg === 'ecx') return ~PVM_LEAF1_ECX_FROM_TABLE >>> 0;
  if (fn === 1 && reg === 'edx') return 0xffffffff;
  return 0;
}

/**
 * Differences between the table tsvmm set and the one KVM holds, ignoring
 * what `replaced` says KVM rewrites. One line per difference.
 */
export function tableDifferences(set: readonly CpuidEntry[], held: readonly CpuidEntry[], replaced: (fn: number, reg: CpuidRegister) => number): string[] {
  const key = (e: CpuidEntry): string => leafKey(e.function, e.index);
  const setBy = new Map(set.map((e) => [key(e), e]));
  const heldBy = new Map(held.map((e) => [key(e), e]));
  const out: string[] = [];
  for (const k of new Set([...setBy.keys(), ...heldBy.keys()])) {
    const s = setBy.get(k);
    const h = heldBy.get(k);
    const fn = (s ?? h)?.function ?? 0;
    if (REGISTERS.every((r) => replaced(fn, r) === 0xffffffff)) continue;
    if (s === undefined || h === undefined) {
      out.push(`${k}: ${s === undefined ? 'only KVM holds it' : 'KVM does not hold it'}: ${formatRegs(regsOf(s ?? h))}`);
      continue;
    }
    const differs = REGISTERS.filter((r) => (((s[r] ^ h[r]) >>> 0) & ~replaced(fn, r)) >>> 0 !== 0);
    if (differs.length || (s.flags & 1) !== (h.flags & 1)) out.push(`${k}: set ${formatRegs(regsOf(s))} flags ${s.flags}, held ${formatRegs(regsOf(h))} flags ${h.flags}`);
  }
  return out;
}

export const TIMEOUT_MS = 60_000;
export interface Booted {
  run: GuestRun;
  guest: GuestCpuid;
  /** tsvmm only: --dump-cpuid */
  vcpus: VcpuTables[];
  plan: CpuidPlan;
}

let dumpSeq = 0;

/**
 * Boot test/guest/out/`kernel` with `--cpu cpu --smp smp`; on tsvmm with
 * `--dump-cpuid` into `dir`. Plans the same CPU here for the expectations.
 */
export async function bootCpuGuest(o: { vmm: Vmm; dir: string; kernel: string; cpu: string; smp?: string; append?: string }): Promise<Booted> {
  const smp = o.smp ?? '1';
  const dumpFile = path.join(o.dir, `cpuid-${process.pid}-${dumpSeq++}.json`);
  const run = await runGuest({
    vmm: o.vmm,
    kernel: guestImage(o.kernel),
    memory: 64,
    smp,
    timeoutMs: TIMEOUT_MS,
    ...(o.append !== undefined ? { append: o.append } : {}),
    extraArgs: o.vmm === 'tsvmm' ? ['--cpu', o.cpu, '--dump-cpuid', dumpFile] : ['-cpu', o.cpu],
  });
  const plan = await planFor(o.cpu, smp);
  let vcpus: VcpuTables[] = [];
  if (o.vmm === 'tsvmm' && run.status !== 2) {
    try {
      vcpus = readCpuidDump(dumpFile).vcpus;
    } catch (err) {
      throw new Error(`no --dump-cpuid output (${(err as Error).message})\n${describeRun(run)}`);
    }
  }
  return { run, guest: parseGuestCpuid(run.serialOutput), vcpus, plan };
}

/** Every leaf the guest printed, on every vCPU, against KVM's view of the table KVM holds for that vCPU. */
export function guestMismatches(b: Booted): string[] {
  const out: string[] = [];
  for (const [apic, leaves] of b.guest) {
    const v = b.vcpus.find((x) => x.apicId === apic);
    if (v === undefined) {
      out.push(`APIC ${apic}: no vCPU with that APIC ID in the dump`);
      continue;
    }
    for (const [k, regs] of leaves) {
      const [fn = '0', idx = '0'] = k.split(' ');
      const want = kvmGuestView(v.held, parseInt(fn, 16), parseInt(idx, 16));
      if (formatRegs(want) !== formatRegs(regs)) out.push(`APIC ${apic} CPUID ${k}: guest ${formatRegs(regs)}, KVM holds ${formatRegs(want)}`);
    }
  }
  if (b.guest.size !== b.vcpus.length) out.push(`${b.guest.size} vCPUs printed leaves, ${b.vcpus.length} exist`);
  return out;
}
