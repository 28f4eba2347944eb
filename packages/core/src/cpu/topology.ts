/**
 * vCPU topology: `--smp` parsing and APIC IDs.
 *
 * `--smp` follows QEMU's -smp (hw/core/machine-smp.c machine_parse_smp_config):
 * omitted members are computed, preferring cores over sockets (QEMU ≥ 6.2;
 * machine types older than that prefer sockets, see `preferSockets`), and the
 * product sockets·cores·threads must equal maxcpus.
 *
 * APIC IDs are built from (socket, core, thread) with the bit-field widths
 * of QEMU's include/hw/i386/topology.h — each level gets ceil(log2(count))
 * bits — so guest-visible IDs are the same as under QEMU. Intel SDM Vol. 3A
 * 10.12.8.1 "Hierarchical Mapping of Shared Resources" describes the layout;
 * CPUID leaf 0xB reports the shifts.
 */
import { ConfigError } from '../errors.js';

export interface CpuTopology {
  sockets: number;
  cores: number;
  threads: number;
}

export interface SmpConfig extends CpuTopology {
  /** vCPUs present at start */
  cpus: number;
  /** vCPUs the topology has room for (sockets · cores · threads) */
  maxcpus: number;
}

export interface SmpInput {
  cpus?: number;
  sockets?: number;
  cores?: number;
  threads?: number;
  maxcpus?: number;
}

export interface SmpOptions {
  /** fill omitted members preferring sockets over cores, as QEMU machine types before 6.2 do */
  preferSockets?: boolean;
}

/** More vCPUs than any KVM build accepts (KVM_MAX_VCPUS is at most 4096). */
export const SMP_MAX_CPUS = 4096;

const SMP_KEYS = new Set(['cpus', 'sockets', 'cores', 'threads', 'maxcpus']);

/** Parse `--smp 4`, `--smp 2,sockets=1,cores=2`, `--smp cpus=8,sockets=2,cores=2,threads=2,maxcpus=8`. */
export function parseSmpOption(text: string, opts: SmpOptions = {}): SmpConfig {
  if (text.length > 256) throw new ConfigError('--smp: option is too long');
  const input: SmpInput = {};
  const seen = new Set<string>();
  text.split(',').forEach((token, i) => {
    const eq = token.indexOf('=');
    const key = eq < 0 ? (i === 0 ? 'cpus' : token) : token.slice(0, eq);
    const value = eq < 0 ? (i === 0 ? token : undefined) : token.slice(eq + 1);
    if (key === 'dies' || key === 'clusters' || key === 'books' || key === 'drawers' || key === 'modules') {
      throw new ConfigError(`--smp: '${key}' is not supported`, { hint: 'describe the topology with sockets=, cores= and threads=' });
    }
    if (!SMP_KEYS.has(key)) throw new ConfigError(`--smp: unknown parameter '${key.slice(0, 32)}'`, { hint: 'use cpus=, sockets=, cores=, threads=, maxcpus=' });
    if (value === undefined) throw new ConfigError(`--smp: '${key}' needs a value, e.g. ${key}=2`);
    if (seen.has(key)) throw new ConfigError(`--smp: '${key}' given twice`);
    seen.add(key);
    if (!/^\d{1,6}$/.test(value)) throw new ConfigError(`--smp: ${key}=${value.slice(0, 32)} is not a positive integer`);
    (input as Record<string, number>)[key] = Number(value);
  });
  return resolveSmp(input, opts);
}

/** Resolve a machine description's `smp` (a count, or an object with some members omitted). */
export function resolveSmp(input: number | SmpInput | undefined, opts: SmpOptions = {}): SmpConfig {
  const given: SmpInput = input === undefined ? { cpus: 1 } : typeof input === 'number' ? { cpus: input } : input;
  for (const [k, v] of Object.entries(given)) {
    if (v === undefined) continue;
    if (!SMP_KEYS.has(k)) throw new ConfigError(`--smp: unknown parameter '${k}'`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new ConfigError(`--smp: ${k}=${String(v)} must be an integer of at least 1`, { hint: 'omit a member to have it computed' });
    }
    if (v > SMP_MAX_CPUS) throw new ConfigError(`--smp: ${k}=${v} is more than ${SMP_MAX_CPUS}`);
  }
  let { sockets = 0, cores = 0, threads = 0, maxcpus = 0 } = given;
  const cpus = given.cpus ?? 0;

  // Omitted members are computed from the others (machine_parse_smp_config).
  if (cpus === 0 && maxcpus === 0) {
    sockets ||= 1;
    cores ||= 1;
    threads ||= 1;
  } else {
    maxcpus ||= cpus;
    if (opts.preferSockets) {
      if (sockets === 0) {
        cores ||= 1;
        threads ||= 1;
        sockets = Math.floor(maxcpus / (cores * threads));
      } else if (cores === 0) {
        threads ||= 1;
        cores = Math.floor(maxcpus / (sockets * threads));
      }
    } else if (cores === 0) {
      sockets ||= 1;
      threads ||= 1;
      cores = Math.floor(maxcpus / (sockets * threads));
    } else if (sockets === 0) {
      threads ||= 1;
      sockets = Math.floor(maxcpus / (cores * threads));
    }
    if (threads === 0) threads = Math.floor(maxcpus / (sockets * cores));
  }
  maxcpus ||= sockets * cores * threads;
  const resolvedCpus = cpus || maxcpus;

  const product = sockets * cores * threads;
  if (sockets < 1 || cores < 1 || threads < 1 || product !== maxcpus) {
    throw new ConfigError(
      `invalid CPU topology: sockets (${sockets}) * cores (${cores}) * threads (${threads}) != maxcpus (${maxcpus})`,
      { hint: 'the product of sockets, cores and threads must equal maxcpus (or cpus when maxcpus is not given)' },
    );
  }
  if (maxcpus < resolvedCpus) {
    throw new ConfigError(`invalid CPU topology: maxcpus (${maxcpus}) must be at least cpus (${resolvedCpus})`);
  }
  if (maxcpus > SMP_MAX_CPUS) throw new ConfigError(`--smp: ${maxcpus} vCPUs is more than ${SMP_MAX_CPUS}`);
  return { cpus: resolvedCpus, sockets, cores, threads, maxcpus };
}

/** Bits needed to number `count` things: ceil(log2(count)), 0 for one (topology.h apicid_bitwidth_for_count). */
export function apicIdBitWidth(count: number): number {
  return count > 1 ? 32 - Math.clz32(count - 1) : 0;
}

export interface ApicIdLayout {
  /** bit where the core ID starts (= SMT width); CPUID.0BH.0:EAX */
  coreOffset: number;
  /** bit where the package ID starts; CPUID.0BH.1:EAX */
  pkgOffset: number;
}

export function apicIdLayout(t: CpuTopology): ApicIdLayout {
  const coreOffset = apicIdBitWidth(t.threads);
  return { coreOffset, pkgOffset: coreOffset + apicIdBitWidth(t.cores) };
}

export interface TopologyIds {
  socketId: number;
  coreId: number;
  threadId: number;
}

/** Where vCPU `index` sits: threads of a core first, then cores of a socket (topology.h x86_topo_ids_from_idx). */
export function topologyIdsFromIndex(t: CpuTopology, index: number): TopologyIds {
  return {
    threadId: index % t.threads,
    coreId: Math.floor(index / t.threads) % t.cores,
    socketId: Math.floor(index / (t.threads * t.cores)),
  };
}

export function apicIdFromIds(t: CpuTopology, ids: TopologyIds): number {
  const l = apicIdLayout(t);
  // Multiplication instead of << keeps IDs above 2^31 positive.
  return ids.socketId * 2 ** l.pkgOffset + ids.coreId * 2 ** l.coreOffset + ids.threadId;
}

export function apicIdFromIndex(t: CpuTopology, index: number): number {
  return apicIdFromIds(t, topologyIdsFromIndex(t, index));
}

/** APIC ID of each vCPU 0..count-1 (for AcceleratorVmConfig.topology.apicIds). */
export function apicIds(t: CpuTopology, count: number): number[] {
  return Array.from({ length: count }, (_, i) => apicIdFromIndex(t, i));
}
