/**
 * `tsvmm run`: build a machine description from QEMU-like options (or a JSON
 * config), create the machine on KVM in this process and run it until the
 * guest powers off, exits through isa-debug-exit, or crashes.
 *
 * Exit status: the isa-debug-exit status when the guest uses it (always odd),
 * 0 on guest power off, EXIT_GUEST_CRASH (4) when the guest crashes, and
 * EXIT_VMM_ERROR (2) with a one-line reason for bad input or a VMM failure.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ConfigError,
  EXIT_VMM_ERROR,
  formatCpuHelp,
  hostCpuCapabilities,
  listCpuModels,
  loadCpuModels,
  Machine,
  machineDescriptionSchema,
  parseKeyValueList,
  parseProperties,
  SinkLogger,
  type CpuidEntry,
  type DeviceTypeDefinition,
  type DriveSpec,
  type LogLevel,
  type MachineDescription,
  type MachineTypeDefinition,
  type ObjectSpec,
} from '@tsvmm/core';
import type { KvmAccelerator } from '@tsvmm/core/kvm';
import { createPluginRegistry } from './plugins.js';
import { startRunControl, type RunControl } from './run-control.js';

export interface RunOptions {
  kernel?: string;
  append?: string;
  initrd?: string;
  memory?: string;
  smp?: string;
  machine?: string;
  cpu?: string;
  device: string[];
  serial: string[];
  reboot: boolean;
  config?: string;
  demo?: boolean;
  fwCfg: string[];
  plugin: string[];
  /** QEMU's -object: `iothread,id=io0` */
  object: string[];
  /** QEMU's -drive: `file=PATH,format=raw,if=virtio|none,id=...,readonly=on,discard=unmap,iothread=...` */
  drive: string[];
  logLevel: LogLevel;
  /** write the CPUID tables of every vCPU (KVM_SET_CPUID2 given, KVM_GET_CPUID2 held) to this file before the guest starts */
  dumpCpuid?: string;
  /** QEMU's -incoming: tcp:HOST:PORT | unix:PATH | file:PATH — the VM's state comes from a migration stream */
  incoming?: string;
  /** QEMU's -qmp: unix:PATH — the control protocol for this VM (run-control.ts) */
  control?: string;
}

/** The KVM accelerator loads the native addon; import it only when a VM is really run. */
async function kvmAccelerator(): Promise<KvmAccelerator> {
  const { createKvmAccelerator } = await import('@tsvmm/core/kvm');
  // TSVMM_KVM_DEVICE names another KVM device node (tests use it to check the error for a missing /dev/kvm).
  return createKvmAccelerator(process.env['TSVMM_KVM_DEVICE']);
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** The demo guest is built from the guest kit by `npm install` (prepare → build:guest). */
export const DEMO_KERNEL = path.resolve(here, '../../../test/guest/out/demo.elf');

function readConfig(file: string): MachineDescription {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file '${file}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file '${file}' is not valid JSON: ${(err as Error).message}`);
  }
  return parseProperties(machineDescriptionSchema, json, `config file '${file}'`);
}

/** `--smp 2` or QEMU's `--smp cpus=2,sockets=1,cores=2,threads=1,maxcpus=4` (also `2,cores=2`). */
export function parseSmp(text: string): MachineDescription['smp'] {
  const kv = parseKeyValueList(text, 'cpus');
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(kv)) {
    if (!['cpus', 'sockets', 'cores', 'threads', 'maxcpus'].includes(k)) {
      throw new ConfigError(`--smp: unknown key '${k}'`, { hint: 'use cpus=, sockets=, cores=, threads=, maxcpus=' });
    }
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new ConfigError(`--smp: ${k}=${v} is not a positive number`);
    out[k] = Number(v);
  }
  const { cpus, ...rest } = out;
  if (cpus === undefined) throw new ConfigError('--smp: the number of CPUs is missing');
  return Object.keys(rest).length === 0 ? cpus : { cpus, ...rest };
}

/** `--machine TYPE` or QEMU's `--machine type=TYPE,accel=kvm` / `pc,accel=kvm`. */
export function parseMachineOption(text: string): string {
  const kv = parseKeyValueList(text, 'type');
  for (const [k, v] of Object.entries(kv)) {
    if (k === 'accel' && v !== 'kvm') throw new ConfigError(`--machine accel=${v}: tsvmm only runs on KVM`);
    if (k !== 'type' && k !== 'accel') throw new ConfigError(`--machine: unknown key '${k}'`);
  }
  if (kv['type'] === undefined) throw new ConfigError('--machine: the machine type is missing');
  return kv['type'];
}

export function descriptionFromOptions(o: RunOptions): MachineDescription {
  const base: MachineDescription = o.config !== undefined ? readConfig(o.config) : {};
  const desc: MachineDescription = { ...base };
  if (o.demo) {
    if (!fs.existsSync(DEMO_KERNEL)) {
      throw new ConfigError(`the demo guest is not built (${DEMO_KERNEL} is missing)`, {
        hint: 'run `npm run build:guest`; it needs gcc',
      });
    }
    desc.kernel = DEMO_KERNEL;
    desc.smp ??= 2;
    desc.memory ??= '128M';
    // The demo shows this host's CPU rather than warning about what qemu64 asks and the host lacks.
    desc.cpu ??= 'host';
  }
  if (o.kernel !== undefined) desc.kernel = o.kernel;
  if (o.append !== undefined) desc.append = o.append;
  if (o.initrd !== undefined) desc.initrd = o.initrd;
  if (o.memory !== undefined) desc.memory = o.memory;
  if (o.smp !== undefined) desc.smp = parseSmp(o.smp);
  if (o.machine !== undefined) desc.machine = parseMachineOption(o.machine);
  if (o.cpu !== undefined) desc.cpu = o.cpu;
  if (o.device.length) desc.devices = [...(desc.devices ?? []), ...o.device.map((d) => parseKeyValueList(d, 'driver') as { driver: string })];
  if (o.serial.length) desc.serial = o.serial;
  if (!o.reboot) desc.noReboot = true;
  if (o.plugin.length) desc.plugins = [...(desc.plugins ?? []), ...o.plugin];
  // Shapes are checked by the machine description schema below, with the failing field named.
  if (o.object.length) desc.objects = [...(desc.objects ?? []), ...o.object.map((spec) => parseKeyValueList(spec, 'qom-type') as ObjectSpec)];
  if (o.drive.length) desc.drives = [...(desc.drives ?? []), ...o.drive.map((spec) => parseKeyValueList(spec) as DriveSpec)];
  if (o.incoming !== undefined) desc.incoming = o.incoming;
  if (o.fwCfg.length) {
    desc.fwCfg = [
      ...(desc.fwCfg ?? []),
      ...o.fwCfg.map((spec) => {
        const kv = parseKeyValueList(spec);
        const name = kv['name'];
        if (name === undefined) throw new ConfigError(`--fw-cfg '${spec}': name= is missing`);
        if (kv['string'] !== undefined) return { name, string: kv['string'] };
        if (kv['file'] !== undefined) return { name, file: kv['file'] };
        throw new ConfigError(`--fw-cfg '${spec}': give string= or file=`);
      }),
    ];
  }
  return parseProperties(machineDescriptionSchema, desc, 'machine description');
}

/** `--device help`, `--machine help`, `--cpu help`: list what the installed plugins provide. */
export async function printHelpListing(o: RunOptions, out: NodeJS.WritableStream): Promise<boolean> {
  const registry = createPluginRegistry(o.plugin);
  if (o.device.includes('help') || o.device.includes('?')) {
    await registry.loadAll('device');
    const defs = registry.definitions<DeviceTypeDefinition>('device').sort((a, b) => a.name.localeCompare(b.name));
    for (const d of defs) out.write(`${d.name.padEnd(20)} bus ${d.bus.padEnd(6)} ${d.hotpluggable ? 'hotplug' : '       '}  ${d.description}\n`);
    return true;
  }
  if (o.cpu === 'help' || o.cpu === '?') {
    const defs = await loadCpuModels(registry);
    const host = (await kvmAccelerator()).hostCpuSupport();
    const hostCaps = hostCpuCapabilities((cap) => host.checkExtension(cap), { irqchip: 'kernel', ...(host.modelId ? { modelId: host.modelId } : {}) });
    out.write(formatCpuHelp(listCpuModels(defs, { supported: host.supportedCpuid, hostCaps })));
    return true;
  }
  if (o.machine === 'help' || o.machine === '?') {
    await registry.loadAll('chipset');
    for (const m of registry.definitions<MachineTypeDefinition>('chipset')) {
      const alias = m.aliases.length ? ` (alias of ${m.aliases.join(', ')})` : '';
      out.write(`${m.name.padEnd(24)} ${m.description}${m.isDefault ? ' (default)' : ''}${alias}\n`);
    }
    return true;
  }
  return false;
}

const hex32 = (v: number): string => `0x${(v >>> 0).toString(16).padStart(8, '0')}`;

function cpuidEntriesJson(entries: readonly CpuidEntry[]): Record<string, string | number>[] {
  return entries.map((e) => ({
    function: hex32(e.function),
    index: e.index,
    flags: e.flags,
    eax: hex32(e.eax),
    ebx: hex32(e.ebx),
    ecx: hex32(e.ecx),
    edx: hex32(e.edx),
  }));
}

/**
 * `--dump-cpuid FILE`: for each vCPU, the table tsvmm handed to
 * KVM_SET_CPUID2 and the table KVM holds (KVM_GET_CPUID2), in the entry shape
 * of the recorded host tables (packages/core/test/fixtures/cpuid), which
 * parseCpuidTable reads back. Taken after the vCPUs are created and before
 * they first run. The two differ where KVM rewrites entries (docs/cpu.md).
 */
function writeCpuidDump(machine: Machine, file: string): void {
  const vcpus = Array.from({ length: machine.info.cpus }, (_, index) => {
    const planned = machine.cpuPlan.forVcpu(index);
    return {
      index,
      apicId: planned.apicId,
      setCpuid2: cpuidEntriesJson(planned.entries),
      getCpuid2: cpuidEntriesJson(machine.vcpuCpuid(index)),
    };
  });
  const dump = { model: machine.cpuPlan.modelName, modelVersion: machine.cpuPlan.modelVersion, vcpus };
  try {
    fs.writeFileSync(file, `${JSON.stringify(dump, null, 1)}\n`);
  } catch (err) {
    throw new ConfigError(`--dump-cpuid: cannot write '${file}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export async function runVm(o: RunOptions): Promise<number> {
  if (await printHelpListing(o, process.stdout)) return 0;
  const desc = descriptionFromOptions(o);
  const log = new SinkLogger((level, msg, fields) => {
    const extra = Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : '';
    process.stderr.write(`tsvmm: ${level}: ${msg}${extra}\n`);
  }, o.logLevel);
  const registry = createPluginRegistry(desc.plugins ?? [], (m) => log.warn(m));
  const { incoming, ...machineDesc } = desc;
  const machine = await Machine.create(machineDesc, { registry, accelerator: await kvmAccelerator(), log, ...(incoming !== undefined ? { incoming: true } : {}) });
  if (o.dumpCpuid !== undefined) {
    try {
      writeCpuidDump(machine, o.dumpCpuid);
    } catch (err) {
      await machine.destroy();
      throw err;
    }
  }
  let control: RunControl | undefined;
  if (o.control !== undefined) {
    try {
      control = await startRunControl(o.control, machine, registry, {
        ...(desc.name !== undefined ? { name: desc.name } : {}),
        logLevel: o.logLevel,
        logLine: (line) => process.stderr.write(`tsvmm: ${line}\n`),
      });
    } catch (err) {
      await machine.destroy();
      throw err;
    }
    // Always said, as the incoming address is: scripts wait for it.
    process.stderr.write(`tsvmm: control socket at ${control.address} (the VM is vm-1)\n`);
  }
  return new Promise<number>((resolve) => {
    const onSignal = (sig: NodeJS.Signals): void => {
      process.stderr.write(`tsvmm: terminating on signal ${sig}\n`);
      machine.shutdown(`terminated by ${sig}`).catch((err: unknown) => {
        process.stderr.write(`tsvmm: ${(err as Error).message}\n`);
        resolve(EXIT_VMM_ERROR);
      });
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    machine.on('exit', (exit) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (exit.status !== 0 && exit.reason !== 'debug-exit') process.stderr.write(`tsvmm: ${exit.message}\n`);
      else log.debug(exit.message);
      if (control === undefined) {
        resolve(exit.status);
        return;
      }
      control.close().then(
        () => resolve(exit.status),
        (err: unknown) => {
          process.stderr.write(`tsvmm: closing the control socket failed: ${(err as Error).message}\n`);
          resolve(exit.status);
        },
      );
    });
    if (incoming === undefined) machine.start();
    else
      receiveIncoming(machine, incoming, log).catch((err: unknown) => {
        // The VM never ran; what arrived is discarded with it.
        void machine.discardIncoming(`incoming migration failed: ${(err as Error).message}`);
      });
  });
}

/**
 * `--incoming URI`: wait for the migration stream (listening, or reading the
 * file), load it and let the VM run; the machine's own exit ends `tsvmm run`
 * as usual. @tsvmm/migration is only loaded here.
 */
async function receiveIncoming(machine: Machine, uri: string, log: SinkLogger): Promise<void> {
  const { MigrationDestination, parseTransportUri } = await import('@tsvmm/migration');
  const dest = new MigrationDestination({ machine, source: parseTransportUri(uri), log });
  const address = await dest.listen();
  // Always said, so scripts that asked for port 0 learn the port.
  process.stderr.write(`tsvmm: waiting for an incoming migration at ${address}\n`);
  await dest.done;
  const s = dest.status();
  log.info(`incoming migration completed in ${s.totalTimeMs ?? '?'} ms (${s.ram.transferredBytes} bytes)`);
}
