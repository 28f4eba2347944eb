/**
 * The Machine: one VM's model — memory map, address spaces, IRQ lines,
 * devices, the boot image — and its state machine:
 *
 *   created → running ⇄ paused → shutdown | crashed
 *
 * Device control paths run on this (main) thread. Requests a device makes
 * from inside an I/O handler (reset, power off, exit) are deferred until the
 * handler has returned, so the vCPU that made the access is not waiting on
 * us while we stop it.
 */
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import type { Accelerator, AcceleratorMigration, AcceleratorState, AcceleratorVm, ExitSink, VcpuEvent } from './accelerator.js';
import type { CpuidEntry } from './cpu/cpuid.js';
import { AddressSpace } from './address-space.js';
import { loadKernel, parseBzImageHeader, readBootFile, type LoadedKernel } from './boot/index.js';
import { createChardev, type Chardev } from './chardev.js';
import { planCpuid, type CpuidPlan } from './cpu/compose.js';
import { parseCpuOption } from './cpu/cpu-option.js';
import { hostCpuCapabilities } from './cpu/host-caps.js';
import { findCpuModel, loadCpuModels } from './cpu/model.js';
import { resolveSmp, type SmpConfig } from './cpu/topology.js';
import type { Device, DeviceContext, DeviceState, DeviceTypeDefinition, MachineInfo, RngBackend, VirtualClock } from './device.js';
import { ConfigError, TsvmmError, VmStateError } from './errors.js';
import { FirmwareConfig, FwCfgKey } from './firmware-config.js';
import { GuestMemory } from './guest-memory.js';
import { IrqLine } from './irq.js';
import { WorkerIoThread, type IoThread } from './iothread.js';
import { VirtualTimerSet, type VirtualTimer } from './virtual-timer.js';
import { nullLogger, type Logger } from './logger.js';
import { machineDescriptionSchema, type DeviceSpec, type DriveSpec, type MachineDescription } from './machine-description.js';
import type { MachineTypeDefinition } from './machine-type.js';
import { parseMemorySize, pcMemoryLayout, type MemoryLayout } from './memory-map.js';
import type { PluginRegistry } from './plugin-loader.js';
import { parseProperties } from './properties.js';

export type VmState = 'created' | 'running' | 'paused' | 'shutdown' | 'crashed';

export type StateReason =
  | 'created'
  | 'started'
  | 'paused-by-request'
  | 'resumed-by-request'
  | 'guest-shutdown'
  | 'guest-reset'
  | 'triple-fault'
  | 'internal-error'
  | 'debug-exit'
  | 'host-request'
  | 'error'
  /** paused for the final copy of a migration */
  | 'migrating'
  /** the source after a completed migration, or a destination started from a stream */
  | 'migrated'
  /** the migration failed or was cancelled: the source runs on */
  | 'migration-failed';

export interface StateChange {
  from: VmState;
  to: VmState;
  reason: StateReason;
  detail: string;
}

/** How the VM ended, for the process that hosts it. */
export interface MachineExit {
  /** process exit status: 0 clean, odd = isa-debug-exit, EXIT_GUEST_CRASH for guest failures */
  status: number;
  reason: StateReason;
  message: string;
}

/** Exit status when the guest crashed (triple fault with --no-reboot, KVM internal error, entry failure). */
export const EXIT_GUEST_CRASH = 4;
/** Exit status for VMM failures and bad input. Even, so it never collides with isa-debug-exit's odd codes. */
export const EXIT_VMM_ERROR = 2;

export const DEFAULT_RAM = '128M';

const VALID_TRANSITIONS: Record<VmState, VmState[]> = {
  created: ['running', 'shutdown', 'crashed'],
  running: ['paused', 'running', 'shutdown', 'crashed'],
  paused: ['running', 'paused', 'shutdown', 'crashed'],
  shutdown: [],
  crashed: [],
};

function describeEntry(d: DeviceEntry): { id: string; driver: string; properties: Record<string, unknown> } {
  return { id: d.device.id, driver: d.driver, properties: d.device.describe() };
}

interface DeviceEntry {
  device: Device;
  driver: string;
  realized: boolean;
  /** the bus= property it was created with (a bridge's id, say) */
  bus?: string;
}

export interface MachineOptions {
  registry: PluginRegistry;
  accelerator: Accelerator;
  log?: Logger;
  /** create the chardev for a `--serial` spec; default: stdio/null/file */
  chardevFactory?: (id: string, spec: string) => Chardev | undefined;
  /**
   * The machine's RAM, CPU and device state will come from a migration
   * stream (`--incoming`): the kernel is read (for later resets) but not
   * loaded, and the vCPUs get no boot entry.
   */
  incoming?: boolean;
}

/** A device as a migration stream describes it (packages/migration's configuration check). */
export interface MigratableDeviceInfo {
  id: string;
  driver: string;
  /** the plugin providing the device type */
  plugin: { name: string; version: string } | undefined;
  /** the version saveState() writes; undefined when the device cannot save its state */
  stateVersion: number | undefined;
  /** the versions the device type's loadState() accepts */
  loadableStateVersions: number[];
}

/** What source and destination of a migration must agree on. */
export interface MachineMigrationInfo {
  machineType: string;
  ram: { size: number; regions: { gpa: number; size: number }[] };
  cpus: number;
  cpuModel: string;
  /** the accelerator and the format of its CPU state; undefined: it cannot migrate */
  accelerator: { name: string; stateFormat: string | undefined };
  devices: MigratableDeviceInfo[];
}

/** Everything but RAM, taken with the VM stopped. */
export interface MachineMigrationState {
  devices: { id: string; driver: string; version: number; state: DeviceState }[];
  accelerator: AcceleratorState;
  /** the VM's run-time clock (VirtualClock.nowNs), which device timers derive from */
  clockNs: bigint;
}

/** Pages written since the previous MachineDirtyLog.take(), per RAM region. */
export interface DirtyRegion {
  gpa: number;
  pages: number;
  /** bit n of word w = page 32w+n of the region */
  bitmap: Uint32Array;
}

export class Machine extends EventEmitter<{ stateChanged: [StateChange]; exit: [MachineExit] }> {
  readonly pio = new AddressSpace('pio', 0x10000);
  readonly mmio = new AddressSpace('mmio', 2 ** 52);
  readonly fwCfg = new FirmwareConfig();
  readonly memory: GuestMemory;
  readonly layout: MemoryLayout;
  readonly info: MachineInfo;
  readonly machineType: MachineTypeDefinition;
  private readonly devices: DeviceEntry[] = [];
  private readonly chardevs = new Map<string, Chardev>();
  private readonly irqLines = new Map<number, IrqLine>();
  private readonly services = new Map<symbol, unknown>();
  private readonly iothreads = new Map<string, WorkerIoThread>();
  private readonly drives = new Map<string, DriveSpec>();
  private readonly rngBackends = new Map<string, RngBackend>();
  private stateValue: VmState = 'created';
  private pendingAction: (() => Promise<void>) | undefined;
  /** the machine's end in progress (finish) */
  private finishing: Promise<void> | undefined;
  private kernelImage: Uint8Array | undefined;
  private loadedKernel: LoadedKernel | undefined;
  private readonly clockState = { startNs: process.hrtime.bigint(), pausedAt: undefined as bigint | undefined, pausedTotal: 0n, wall: new Date() };
  private readonly createdAt = Date.now();
  private exitInfo: MachineExit | undefined;
  /** devices were quiesced for a migration's final copy: resume() lets them run again */
  private quiesced = false;
  /** RAM, vCPU and device state come from a migration stream */
  private incoming = false;

  private constructor(
    readonly description: MachineDescription,
    private readonly accel: AcceleratorVm,
    machineType: MachineTypeDefinition,
    layout: MemoryLayout,
    readonly cpuPlan: CpuidPlan,
    smp: SmpConfig,
    private readonly opts: Required<Pick<MachineOptions, 'registry' | 'accelerator'>> & { log: Logger; chardevFactory: (id: string, spec: string) => Chardev | undefined },
  ) {
    super();
    this.machineType = machineType;
    this.layout = layout;
    this.memory = new GuestMemory(accel.ram);
    this.info = {
      machineType: machineType.name,
      ramSize: layout.ramSize,
      ramBelowFourGiB: layout.belowFourGiB,
      ramAboveFourGiB: layout.aboveFourGiB,
      cpus: smp.cpus,
      maxCpus: smp.maxcpus,
      kernelCmdline: description.append ?? '',
    };
    // Pausing stops the guest's clock too; the clock starts when the machine first runs.
    this.clockState.pausedAt = this.clockState.startNs;
  }

  /** Build a machine from a description: resolve plugins, lay out memory, realize devices, load the kernel. */
  static async create(input: unknown, options: MachineOptions): Promise<Machine> {
    const description = parseProperties(machineDescriptionSchema, input, 'machine description');
    const log = options.log ?? nullLogger;
    const registry = options.registry;

    await registry.loadAll('chipset');
    const types = registry.definitions<MachineTypeDefinition>('chipset');
    const wanted = description.machine;
    const machineType =
      wanted === undefined ? types.find((t) => t.isDefault) : types.find((t) => t.name === wanted || t.aliases.includes(wanted));
    if (machineType === undefined) {
      const names = types.map((t) => t.name).sort();
      throw new ConfigError(
        wanted === undefined ? 'no default machine type is installed' : `unknown machine type '${wanted}'`,
        { hint: names.length ? `available: ${names.join(', ')}` : 'install a chipset plugin such as @tsvmm/plugin-chipset-pc' },
      );
    }

    const ramSize = parseMemorySize(description.memory ?? DEFAULT_RAM);
    const layout = pcMemoryLayout(ramSize, machineType.memoryLayout);
    const smp = resolveSmp(description.smp);
    const cpus = smp.cpus;
    const maxVcpus = Math.min(machineType.maxCpus, options.accelerator.maxVcpus());
    if (smp.maxcpus > maxVcpus) {
      throw new ConfigError(`--smp ${smp.maxcpus} is more than the ${maxVcpus} vCPUs this host and machine type allow`);
    }
    const cpuOption = parseCpuOption(description.cpu ?? machineType.defaultCpuModel);
    if (cpuOption.kind === 'help') throw new ConfigError("'help' is not a CPU model", { hint: "run 'tsvmm run --cpu help' on its own" });
    const cpuModels = await loadCpuModels(registry);
    const host = options.accelerator.hostCpuSupport();
    const cpuPlan = planCpuid({
      model: findCpuModel(cpuModels, cpuOption.model),
      modifiers: cpuOption.modifiers,
      supported: host.supportedCpuid,
      hostCaps: hostCpuCapabilities((cap) => host.checkExtension(cap), {
        irqchip: 'kernel',
        ...(host.modelId !== undefined ? { modelId: host.modelId } : {}),
      }),
      topology: smp,
    });

    if (description.kernel === undefined) {
      throw new ConfigError('no kernel given', { hint: 'tsvmm boots kernels directly: pass --kernel FILE (multiboot or bzImage), or --demo' });
    }
    const kernelImage = readBootFile(description.kernel, 'kernel');

    const accel = options.accelerator.createVm({
      ramSlots: layout.slots,
      vmCaps: cpuPlan.vmCapsToEnable,
      vcpus: Array.from({ length: cpus }, (_, i) => cpuPlan.forVcpu(i)),
    });
    const machine = new Machine(description, accel, machineType, layout, cpuPlan, smp, {
      registry,
      accelerator: options.accelerator,
      log,
      chardevFactory: options.chardevFactory ?? createChardev,
    });
    machine.kernelImage = kernelImage;
    machine.incoming = options.incoming === true;
    try {
      machine.fillFirmwareConfig();
      await machine.createDevices();
      machine.devicesReady();
      // RAM and vCPUs of an incoming machine come from the stream; loading the kernel would only leave stale bytes.
      // Its fw_cfg is not in the stream (as in QEMU): it is rebuilt from the description.
      if (options.incoming !== true) machine.loadKernel();
      else if (parseBzImageHeader(kernelImage) !== undefined) machine.linuxFirmwareConfig();
    } catch (err) {
      await machine.teardown();
      throw err;
    }
    // Warnings (e.g. CPU features the host lacks) only once the machine exists, so a failed start prints just its error.
    for (const w of cpuPlan.warnings) log.warn(w);
    return machine;
  }

  get state(): VmState {
    return this.stateValue;
  }

  get uptimeMs(): number {
    return Date.now() - this.createdAt;
  }

  get kernelSummary(): string | undefined {
    return this.loadedKernel?.summary;
  }

  listDevices(): { id: string; driver: string; properties: Record<string, unknown> }[] {
    return this.devices.map(describeEntry);
  }

  exitCounts(): Record<string, number> {
    return this.accel.exitCounts();
  }

  /** The CPUID table KVM holds for a vCPU. */
  vcpuCpuid(index: number): CpuidEntry[] {
    return this.accel.vcpuCpuid(index);
  }

  readonly clock: VirtualClock = {
    nowNs: (): bigint => {
      const s = this.clockState;
      const now = s.pausedAt ?? process.hrtime.bigint();
      return now - s.startNs - s.pausedTotal;
    },
    wallClockAtStart: (): Date => this.clockState.wall,
    createTimer: (callback: () => void): VirtualTimer => this.timers.create(callback),
  };
  /** device timers: they run while the clock runs */
  private readonly timers = new VirtualTimerSet(() => this.clock.nowNs());

  start(): void {
    if (this.stateValue !== 'created') throw new VmStateError(`cannot start a VM that is ${this.stateValue}`);
    this.resumeClock();
    this.accel.start(this.exitSink);
    this.setState('running', 'started', 'VM started');
  }

  async pause(): Promise<void> {
    if (this.stateValue !== 'running') throw new VmStateError(`cannot pause a VM that is ${this.stateValue}`, { hint: 'only a running VM can be paused' });
    await this.accel.pause();
    this.pauseClock();
    this.setState('paused', 'paused-by-request', 'paused by request');
  }

  resume(): void {
    if (this.stateValue !== 'paused') throw new VmStateError(`cannot resume a VM that is ${this.stateValue}`, { hint: 'only a paused VM can be resumed' });
    this.unquiesceDevices();
    this.resumeClock();
    this.accel.resume();
    this.setState('running', 'resumed-by-request', 'resumed by request');
  }

  /** Hardware reset: CPUs and interrupt controllers power-cycled, devices reset, kernel reloaded. RAM is not cleared. */
  async reset(reason: StateReason = 'host-request', detail = 'reset by request'): Promise<void> {
    if (this.stateValue !== 'running' && this.stateValue !== 'paused') {
      throw new VmStateError(`cannot reset a VM that is ${this.stateValue}`);
    }
    const wasRunning = this.stateValue === 'running';
    await this.accel.reset();
    this.relayout();
    this.loadKernel();
    this.opts.log.info('machine reset', { reason, detail });
    if (wasRunning) this.accel.resume();
    this.setState(this.stateValue, reason, detail);
  }

  /** Power off from the host side. */
  async shutdown(detail = 'shut down by request'): Promise<void> {
    await this.finish({ status: 0, reason: 'host-request', message: detail }, 'shutdown');
  }

  /** Tear down everything; the machine cannot be used afterwards. */
  async destroy(): Promise<void> {
    if (this.stateValue !== 'shutdown' && this.stateValue !== 'crashed') {
      await this.finish({ status: 0, reason: 'host-request', message: 'destroyed' }, 'shutdown');
    } else {
      await this.teardown();
    }
  }

  get exitResult(): MachineExit | undefined {
    return this.exitInfo;
  }

  // --- migration ------------------------------------------------------------------------
  // packages/migration drives these; the Machine only exposes its parts.

  private migrationApi(): AcceleratorMigration {
    const m = this.accel.migration;
    if (m === undefined) throw new VmStateError(`the ${this.opts.accelerator.name} accelerator cannot migrate VMs`);
    return m;
  }

  migrationInfo(): MachineMigrationInfo {
    return {
      machineType: this.machineType.name,
      ram: { size: this.layout.ramSize, regions: this.memory.list().map((r) => ({ gpa: r.gpa, size: r.size })) },
      cpus: this.info.cpus,
      cpuModel: this.description.cpu ?? this.machineType.defaultCpuModel,
      accelerator: { name: this.opts.accelerator.name, stateFormat: this.accel.migration?.stateFormat },
      devices: this.devices.map((d) => {
        const dev = d.device;
        const persists = typeof dev.saveState === 'function' && typeof dev.loadState === 'function' && dev.stateVersion !== undefined;
        const manifest = this.opts.registry.providerOf('device', d.driver)?.manifest;
        const def = this.opts.registry.definitions<DeviceTypeDefinition>('device').find((t) => t.name === d.driver);
        const own = persists ? [dev.stateVersion as number] : [];
        return {
          id: dev.id,
          driver: d.driver,
          plugin: manifest !== undefined ? { name: manifest.name, version: manifest.version } : undefined,
          stateVersion: persists ? dev.stateVersion : undefined,
          loadableStateVersions: persists ? [...new Set([...own, ...(def?.loadableStateVersions ?? [])])].sort((a, b) => a - b) : [],
        };
      }),
    };
  }

  /** Log the pages vCPUs (KVM dirty log) and devices (GuestMemory, iothreads included) write. */
  startDirtyTracking(): void {
    this.migrationApi().setDirtyLogging(true);
    this.memory.setDirtyTracking(true);
  }

  stopDirtyTracking(): void {
    this.memory.setDirtyTracking(false);
    if (this.stateValue !== 'shutdown' && this.stateValue !== 'crashed') this.migrationApi().setDirtyLogging(false);
  }

  /**
   * Pages written since the previous call (the first call after
   * startDirtyTracking: every page), vCPU and device writes together, one
   * entry per RAM region in memory.list() order. Logging is re-armed first,
   * so a page written after its bit was taken shows up in the next call.
   */
  takeDirtyPages(): DirtyRegion[] {
    const kvm = this.migrationApi().takeDirtyLog();
    const byGpa = new Map(this.accel.ram.map((r, i) => [r.gpa, kvm[i]]));
    return this.memory.list().map((r) => {
      const pages = Math.ceil(r.size / 4096);
      const bitmap = new Uint32Array(Math.ceil(pages / 32));
      const fromKvm = byGpa.get(r.gpa);
      if (fromKvm !== undefined) bitmap.set(fromKvm.subarray(0, bitmap.length));
      const fromDevices = this.memory.takeDeviceDirty(r.gpa);
      for (let i = 0; i < bitmap.length; i++) bitmap[i] = ((bitmap[i] as number) | (fromDevices[i] ?? 0)) >>> 0;
      return { gpa: r.gpa, pages, bitmap };
    });
  }

  /**
   * Stop the VM for a migration's final copy: vCPUs and clock stopped, then
   * devices quiesced (their requests in flight have landed in RAM). Returns
   * whether it was running, for resumeAfterMigration.
   */
  async stopForMigration(detail: string): Promise<boolean> {
    const wasRunning = this.stateValue === 'running';
    if (!wasRunning && this.stateValue !== 'paused') throw new VmStateError(`cannot migrate a VM that is ${this.stateValue}`);
    if (wasRunning) {
      await this.accel.pause();
      this.pauseClock();
    }
    this.quiesced = true;
    try {
      for (const d of this.devices) await d.device.quiesce?.();
    } catch (err) {
      // Leave the VM as it was: devices running again, and the vCPUs too if they ran.
      this.unquiesceDevices();
      if (wasRunning) {
        this.resumeClock();
        this.accel.resume();
      }
      throw err;
    }
    this.setState('paused', 'migrating', detail);
    return wasRunning;
  }

  /** After a failed or cancelled migration: devices and (if it ran before) vCPUs carry on. */
  resumeAfterMigration(wasRunning: boolean, detail: string): void {
    if (this.stateValue !== 'paused') return;
    this.unquiesceDevices();
    if (wasRunning) {
      this.resumeClock();
      this.accel.resume();
      this.setState('running', 'migration-failed', detail);
    } else {
      this.setState('paused', 'migration-failed', detail);
    }
  }

  /** The source after a completed migration: it stays paused (a client may still resume it). */
  markMigrated(detail: string): void {
    if (this.stateValue === 'paused') this.setState('paused', 'migrated', detail);
  }

  /** Device, CPU and clock state; only while stopped for migration (or never started). */
  saveMigrationState(): MachineMigrationState {
    if (this.stateValue === 'running') throw new VmStateError('the VM must be stopped before its state is saved');
    const devices: MachineMigrationState['devices'] = [];
    for (const d of this.devices) {
      const dev = d.device;
      if (dev.saveState === undefined || dev.stateVersion === undefined) {
        throw new VmStateError(`device '${dev.id}' (${d.driver}) cannot save its state, so this VM cannot be migrated`);
      }
      devices.push({ id: dev.id, driver: d.driver, version: dev.stateVersion, state: dev.saveState() });
    }
    return { devices, accelerator: this.migrationApi().saveState(), clockNs: this.clock.nowNs() };
  }

  /** Incoming: give device `id` a saved state (before startMigrated). */
  loadDeviceState(id: string, version: number, state: DeviceState): void {
    if (this.stateValue !== 'created') throw new VmStateError(`device state can only be loaded before the VM runs (it is ${this.stateValue})`);
    const entry = this.devices.find((d) => d.device.id === id);
    if (entry === undefined) throw new ConfigError(`the stream has state for device '${id}', which this VM does not have`);
    const dev = entry.device;
    if (dev.loadState === undefined) throw new ConfigError(`device '${id}' (${entry.driver}) cannot load a saved state`);
    // A loaded device is as quiesced as its source was: startMigrated lets it run with the vCPUs.
    this.quiesced = true;
    try {
      dev.loadState(version, state);
    } catch (err) {
      throw new ConfigError(`device '${id}' (${entry.driver}) refused its saved state (version ${version}): ${(err as Error).message}`, { cause: err });
    }
  }

  /** Incoming: CPU, interrupt controller and clock state (before startMigrated). */
  loadMachineState(accelerator: unknown, clockNs: bigint): void {
    if (this.stateValue !== 'created') throw new VmStateError(`CPU state can only be loaded before the VM runs (it is ${this.stateValue})`);
    this.migrationApi().restoreState(accelerator);
    // The run-time clock continues where the source stopped it; it starts with the vCPUs.
    const now = process.hrtime.bigint();
    this.clockState.startNs = now - clockNs;
    this.clockState.pausedAt = now;
    this.clockState.pausedTotal = 0n;
  }

  /** Incoming: the stream failed or was cancelled; the VM never ran and is discarded. */
  async discardIncoming(detail: string): Promise<void> {
    if (this.stateValue !== 'created') return;
    await this.finish({ status: EXIT_VMM_ERROR, reason: 'migration-failed', message: detail }, 'shutdown');
  }

  /** Incoming: run the VM whose state came from a stream. */
  startMigrated(detail: string): void {
    if (this.stateValue !== 'created') throw new VmStateError(`cannot start a VM that is ${this.stateValue}`);
    // After the CPU and irqchip state is in: device data planes may raise interrupts from here on.
    this.unquiesceDevices();
    this.resumeClock();
    this.accel.start(this.exitSink);
    this.setState('running', 'migrated', detail);
  }

  private unquiesceDevices(): void {
    if (!this.quiesced) return;
    this.quiesced = false;
    for (const d of this.devices) d.device.unquiesce?.();
  }

  // --- device context and exits ---------------------------------------------------------

  private readonly exitSink: ExitSink = {
    pio: (port, data, isWrite) => {
      if (isWrite) this.pio.write(port, data);
      else this.pio.read(port, data);
    },
    mmio: (addr, data, isWrite) => {
      if (isWrite) this.mmio.write(addr, data);
      else this.mmio.read(addr, data);
    },
    event: (vcpu, ev) => this.onVcpuEvent(vcpu, ev),
  };

  private onVcpuEvent(vcpu: number, ev: VcpuEvent): void {
    switch (ev.kind) {
      case 'shutdown':
        this.requestReset('triple-fault', `guest triple fault on vCPU ${vcpu} (KVM_EXIT_SHUTDOWN)`);
        return;
      case 'internal-error':
        this.defer(() =>
          this.finish(
            {
              status: EXIT_GUEST_CRASH,
              reason: 'internal-error',
              message: `KVM internal error on vCPU ${vcpu}: suberror ${ev.suberror}${ev.data.length ? ` data [${ev.data.map((d) => `0x${d.toString(16)}`).join(', ')}]` : ''}`,
            },
            'crashed',
          ),
        );
        return;
      case 'fail-entry':
        this.defer(() =>
          this.finish(
            {
              status: EXIT_GUEST_CRASH,
              reason: 'internal-error',
              message: `KVM could not enter the guest on vCPU ${vcpu}: hardware entry failure reason 0x${ev.hardwareEntryFailureReason.toString(16)} (host cpu ${ev.cpu})`,
            },
            'crashed',
          ),
        );
        return;
      case 'system-event':
        // KVM_SYSTEM_EVENT_SHUTDOWN 1, RESET 2, CRASH 3 (api.rst, kvm_run system_event)
        if (ev.type === 1) this.requestShutdown(`guest requested power off (KVM system event) on vCPU ${vcpu}`);
        else if (ev.type === 2) this.requestReset('guest-reset', `guest requested reset (KVM system event) on vCPU ${vcpu}`);
        else
          this.defer(() =>
            this.finish({ status: EXIT_GUEST_CRASH, reason: 'internal-error', message: `guest crash (KVM system event type ${ev.type}) on vCPU ${vcpu}` }, 'crashed'),
          );
        return;
      case 'hlt':
        return;
      case 'error':
        this.defer(() => this.finish({ status: EXIT_VMM_ERROR, reason: 'error', message: `vCPU ${vcpu}: ${ev.message}` }, 'crashed'));
        return;
      case 'unknown':
        this.defer(() =>
          this.finish({ status: EXIT_GUEST_CRASH, reason: 'internal-error', message: `unexpected KVM exit reason ${ev.exitReason} on vCPU ${vcpu}` }, 'crashed'),
        );
        return;
    }
  }

  private requestReset(reason: StateReason, detail: string): void {
    if (this.description.noReboot) {
      const crashed = reason === 'triple-fault';
      this.defer(() =>
        this.finish(
          {
            status: crashed ? EXIT_GUEST_CRASH : 0,
            reason,
            message: `${detail}; stopped instead of resetting because of --no-reboot`,
          },
          crashed ? 'crashed' : 'shutdown',
        ),
      );
      return;
    }
    this.defer(() => this.reset(reason, detail));
  }

  private requestShutdown(detail: string): void {
    this.defer(() => this.finish({ status: 0, reason: 'guest-shutdown', message: detail }, 'shutdown'));
  }

  /**
   * Run an action after the current exit handler returns; the first request
   * wins until it has run. Every deferred action stops or resets the machine,
   * so the vCPUs are asked to pause right away: the vCPU that made the access
   * then stops as soon as its access completes, as QEMU stops inside the
   * write, instead of running on until the action runs.
   */
  private defer(action: () => Promise<void>): void {
    if (this.pendingAction !== undefined) return;
    this.pendingAction = action;
    if (this.stateValue === 'running') {
      this.accel.pause().catch((err: unknown) => this.opts.log.warn('pausing vCPUs failed', { error: (err as Error).message }));
    }
    setImmediate(() => {
      const a = this.pendingAction;
      if (a === undefined) return;
      a()
        .catch((err: unknown) => {
          this.opts.log.error('machine action failed', { error: (err as Error).message });
          return this.finish({ status: EXIT_VMM_ERROR, reason: 'error', message: (err as Error).message }, 'crashed');
        })
        .finally(() => {
          this.pendingAction = undefined;
        });
    });
  }

  private finish(exit: MachineExit, to: 'shutdown' | 'crashed'): Promise<void> {
    if (this.stateValue === 'shutdown' || this.stateValue === 'crashed') return Promise.resolve();
    // a second end (the guest powering off while the host shuts it down) waits for the first
    this.finishing ??= (async () => {
      this.exitInfo = exit;
      await this.teardown();
      this.setState(to, exit.reason, exit.message);
      this.emit('exit', exit);
    })();
    return this.finishing;
  }

  private async teardown(): Promise<void> {
    this.timers.close();
    try {
      await this.accel.stop();
    } finally {
      for (const d of [...this.devices].reverse()) {
        if (!d.realized) continue;
        try {
          await d.device.unrealize();
        } catch (err) {
          this.opts.log.warn(`unrealize of ${d.device.id} failed`, { error: (err as Error).message });
        }
        d.realized = false;
      }
      for (const c of this.chardevs.values()) c.close();
      this.chardevs.clear();
      await Promise.all([...this.iothreads.values()].map((t) => t.terminate()));
      this.iothreads.clear();
      this.accel.close();
    }
  }

  private setState(to: VmState, reason: StateReason, detail: string): void {
    const from = this.stateValue;
    if (!VALID_TRANSITIONS[from].includes(to)) throw new VmStateError(`invalid VM state transition ${from} → ${to}`);
    this.stateValue = to;
    this.emit('stateChanged', { from, to, reason, detail });
  }

  private pauseClock(): void {
    if (this.clockState.pausedAt === undefined) this.clockState.pausedAt = process.hrtime.bigint();
    this.timers.pause();
  }

  private resumeClock(): void {
    const s = this.clockState;
    if (s.pausedAt !== undefined) {
      s.pausedTotal += process.hrtime.bigint() - s.pausedAt;
      s.pausedAt = undefined;
    }
    this.timers.resume();
  }

  private deviceContext(log: Logger): DeviceContext {
    return {
      pio: this.pio,
      mmio: this.mmio,
      memory: this.memory,
      machine: this.info,
      fwCfg: this.fwCfg,
      clock: this.clock,
      log,
      irq: (gsi: number): IrqLine => {
        let line = this.irqLines.get(gsi);
        if (line === undefined) {
          line = new IrqLine({ setIrq: (g, level) => this.accel.setIrq(g, level) }, gsi);
          this.irqLines.set(gsi, line);
        }
        return line;
      },
      chardev: (id: string) => this.chardevs.get(id),
      requestReset: (detail: string) => this.requestReset('guest-reset', detail),
      requestShutdown: (detail: string) => this.requestShutdown(detail),
      requestExit: (status: number, detail: string) =>
        this.defer(() => this.finish({ status, reason: 'debug-exit', message: detail }, 'shutdown')),
      notify: this.accel,
      provide: <T>(token: symbol, service: T): void => {
        if (this.services.has(token)) throw new ConfigError(`a device already provides ${token.description ?? 'this service'}`);
        this.services.set(token, service);
      },
      lookup: <T>(token: symbol): T | undefined => this.services.get(token) as T | undefined,
      iothread: (id: string): IoThread => {
        const t = this.iothreads.get(id);
        if (t === undefined) {
          const known = [...this.iothreads.keys()];
          throw new ConfigError(`no iothread '${id}'`, {
            hint: known.length ? `defined: ${known.join(', ')}` : `define it with --object iothread,id=${id}`,
          });
        }
        return t;
      },
      drive: (id: string): DriveSpec => {
        const d = this.drives.get(id);
        if (d === undefined) {
          const known = [...this.drives.keys()];
          throw new ConfigError(`no drive '${id}'`, { hint: known.length ? `defined: ${known.join(', ')}` : `define it with --drive file=PATH,if=none,id=${id}` });
        }
        return d;
      },
      setPicElcr: (mask: number): void => this.accel.setPicElcr?.(mask),
      rngBackend: (id: string): RngBackend => {
        const r = this.rngBackends.get(id);
        if (r === undefined) {
          const known = [...this.rngBackends.keys()];
          throw new ConfigError(`no rng object '${id}'`, {
            hint: known.length ? `defined: ${known.join(', ')}` : `define it with --object rng-random,id=${id},filename=/dev/urandom`,
          });
        }
        return r;
      },
      plugins: this.opts.registry,
    };
  }

  // --- construction ---------------------------------------------------------------------

  private fillFirmwareConfig(): void {
    const f = this.fwCfg;
    f.setU64(FwCfgKey.RAM_SIZE, BigInt(this.layout.ramSize));
    f.setU16(FwCfgKey.NB_CPUS, this.info.cpus);
    f.setU16(FwCfgKey.MAX_CPUS, this.info.maxCpus);
    // etc/e820: packed {u64 address, u64 length, u32 type} entries, as QEMU's x86 machines provide.
    const e820 = new Uint8Array(20 * this.layout.e820.length);
    const dv = new DataView(e820.buffer);
    this.layout.e820.forEach((e, i) => {
      dv.setBigUint64(i * 20, BigInt(e.addr), true);
      dv.setBigUint64(i * 20 + 8, BigInt(e.size), true);
      dv.setUint32(i * 20 + 16, e.type, true);
    });
    f.addFile('etc/e820', e820);
    for (const entry of this.description.fwCfg ?? []) {
      if ('string' in entry) f.addFile(entry.name, new TextEncoder().encode(entry.string));
      else {
        let data: Uint8Array;
        try {
          data = fs.readFileSync(entry.file);
        } catch (err) {
          throw new ConfigError(`fw_cfg file '${entry.name}': cannot read '${entry.file}': ${(err as Error).message}`, { cause: err });
        }
        f.addFile(entry.name, data);
      }
    }
  }

  private createObjects(): void {
    for (const o of this.description.objects ?? []) {
      if (this.iothreads.has(o.id) || this.rngBackends.has(o.id)) throw new ConfigError(`object id '${o.id}' is used twice`);
      switch (o['qom-type']) {
        case 'iothread':
          this.iothreads.set(o.id, new WorkerIoThread(o.id));
          break;
        case 'rng-random':
          // QEMU's rng-random reads /dev/urandom unless told otherwise
          this.rngBackends.set(o.id, { id: o.id, filename: o.filename ?? '/dev/urandom' });
          break;
        case 'rng-builtin':
          this.rngBackends.set(o.id, { id: o.id, filename: '/dev/urandom' });
          break;
      }
    }
  }

  /** Drives by id; `if=virtio` drives (the default, as in QEMU's -drive) also get a virtio-blk-pci device. */
  private createDrives(): DeviceSpec[] {
    const devices: DeviceSpec[] = [];
    (this.description.drives ?? []).forEach((d, i) => {
      const id = d.id ?? `drive${i}`;
      if (this.drives.has(id)) throw new ConfigError(`drive id '${id}' is used twice`);
      this.drives.set(id, { ...d, id });
      if ((d.if ?? 'virtio') === 'virtio') {
        const iothread = (d as Record<string, unknown>)['iothread'];
        devices.push({ driver: 'virtio-blk-pci', drive: id, ...(typeof iothread === 'string' ? { iothread } : {}) });
      }
    });
    return devices;
  }

  private async createDevices(): Promise<void> {
    this.createObjects();
    const specs: DeviceSpec[] = this.machineType.boardDevices.map((b) => ({ ...b.props, driver: b.driver, id: b.id }));
    const serials = this.description.serial ?? ['stdio'];
    serials.forEach((spec, index) => {
      const id = `serial${index}`;
      const chardev = this.opts.chardevFactory(id, spec);
      if (chardev === undefined) return;
      this.chardevs.set(id, chardev);
      specs.push({ driver: 'isa-serial', id, index, chardev: id });
    });
    specs.push(...this.createDrives());
    specs.push(...(this.description.devices ?? []));

    const used = new Set<string>();
    const counters = new Map<string, number>();
    const created: DeviceEntry[] = [];
    for (const spec of specs) created.push(await this.instantiate(spec, used, counters));
    for (const entry of created) await this.realizeEntry(entry);
  }

  /** Resolves a spec's type, gives it an id (or checks the one it has) and creates the device, unrealized. */
  private async instantiate(spec: DeviceSpec, used: Set<string>, counters: Map<string, number>): Promise<DeviceEntry> {
    const def = await this.deviceType(spec.driver);
    let id = spec.id;
    if (id === undefined) {
      const prefix = def.idPrefix ?? def.name.replace(/[^A-Za-z0-9]/g, '');
      let n = counters.get(prefix) ?? 0;
      while (used.has(`${prefix}${n}`)) n++;
      counters.set(prefix, n + 1);
      id = `${prefix}${n}`;
    }
    if (used.has(id)) throw new ConfigError(`device id '${id}' is used twice`, { hint: 'give each device a unique id=' });
    used.add(id);
    const { driver: _driver, id: _id, ...userProps } = spec;
    const props = { ...(this.machineType.compatProps[def.name] ?? {}), ...userProps };
    const parsed = parseProperties(def.properties, props, `device '${id}' (${def.name})`);
    const bus = typeof userProps['bus'] === 'string' ? userProps['bus'] : undefined;
    return { device: def.create(id, parsed), driver: def.name, realized: false, ...(bus !== undefined ? { bus } : {}) };
  }

  private async realizeEntry(entry: DeviceEntry): Promise<void> {
    this.devices.push(entry);
    try {
      await entry.device.realize(this.deviceContext(this.opts.log.child({ device: entry.device.id })));
    } catch (err) {
      if (err instanceof TsvmmError) throw err;
      throw new ConfigError(`device '${entry.device.id}' (${entry.driver}) failed to start: ${(err as Error).message}`, { cause: err });
    }
    entry.realized = true;
  }

  /**
   * Why a device cannot be cold-plugged or cold-unplugged now, or undefined
   * when it can: only before the machine first runs (so no guest and no
   * firmware has seen the device set), not on a machine waiting for a
   * migration stream (its device set must be the source's), and only
   * devices on the PCI bus (ISA and system devices have fixed resources
   * and come with the board or the command line).
   */
  coldPlugRefusal(def: DeviceTypeDefinition): string | undefined {
    if (this.stateValue !== 'created') return `the VM has already run (it is ${this.stateValue})`;
    if (this.incoming) return 'the VM waits for a migration stream, whose device set is the source\'s';
    if (def.bus !== 'pci') return `it sits on the ${def.bus} bus, where devices exist from power-on`;
    return undefined;
  }

  /**
   * Cold-plug (QEMU's device_add under -S): adds a device to a machine that
   * has not run yet. The device is realized as if it had been the last one
   * of the description, then every device is reset and the firmware-like
   * set-up (machineReady: PCI bus numbers, BARs, interrupt lines) runs again,
   * exactly as on a machine reset, so the guest finds the new device laid
   * out as a boot-time one. On failure nothing is left behind.
   */
  async coldPlug(spec: DeviceSpec): Promise<{ id: string; driver: string; properties: Record<string, unknown> }> {
    const def = await this.deviceType(spec.driver);
    const refusal = this.coldPlugRefusal(def);
    if (refusal !== undefined) throw new VmStateError(`cannot add device type '${def.name}' now: ${refusal}`);
    const used = new Set(this.devices.map((d) => d.device.id));
    const entry = await this.instantiate(spec, used, new Map());
    try {
      await this.realizeEntry(entry);
    } catch (err) {
      await this.dropEntry(entry);
      throw err;
    }
    this.relayout();
    return describeEntry(entry);
  }

  /** Cold-unplug: the reverse of coldPlug, under the same conditions. */
  async coldUnplug(id: string): Promise<void> {
    const entry = this.devices.find((d) => d.device.id === id);
    if (entry === undefined) throw new ConfigError(`no device '${id}' in this VM`);
    if (this.machineType.boardDevices.some((b) => b.id === id)) {
      throw new VmStateError(`cannot remove device '${id}': it is part of the ${this.machineType.name} board`);
    }
    const refusal = this.coldPlugRefusal(await this.deviceType(entry.driver));
    if (refusal !== undefined) throw new VmStateError(`cannot remove device '${id}' (${entry.driver}) now: ${refusal}`);
    const behind = this.devices.filter((d) => d.bus === id).map((d) => d.device.id);
    if (behind.length > 0) {
      throw new VmStateError(`cannot remove device '${id}' (${entry.driver}): ${behind.join(', ')} ${behind.length === 1 ? 'sits' : 'sit'} on its bus`, {
        hint: 'remove those first',
      });
    }
    await this.dropEntry(entry);
    this.relayout();
  }

  private async dropEntry(entry: DeviceEntry): Promise<void> {
    const i = this.devices.indexOf(entry);
    if (i >= 0) this.devices.splice(i, 1);
    if (entry.realized) await entry.device.unrealize();
    entry.realized = false;
  }

  /** Power-on state for every device, then the firmware's set-up again (machine reset, cold-plug). */
  private relayout(): void {
    for (const d of this.devices) d.device.reset();
    this.devicesReady();
  }

  private devicesReady(): void {
    for (const d of this.devices) d.device.machineReady?.();
  }

  private async deviceType(driver: string): Promise<DeviceTypeDefinition> {
    const reg = this.opts.registry;
    await reg.ensure('device', driver);
    const def = reg.definitions<DeviceTypeDefinition>('device').find((d) => d.name === driver);
    if (def === undefined) {
      throw new ConfigError(`unknown device type '${driver}'`, { hint: "'tsvmm run --device help' lists the device types" });
    }
    return def;
  }

  private loadKernel(): void {
    const kernel = this.description.kernel;
    if (kernel === undefined || this.kernelImage === undefined) return;
    const spec = {
      kernel,
      ...(this.description.append !== undefined ? { append: this.description.append } : {}),
      ...(this.description.initrd !== undefined ? { initrd: this.description.initrd } : {}),
    };
    this.loadedKernel = loadKernel(this.memory, this.layout, spec, this.kernelImage);
    if (this.loadedKernel.protocol === 'linux') this.linuxFirmwareConfig();
    this.accel.setBootEntry(this.loadedKernel.entry);
  }

  /** As QEMU: the Linux path also offers the command line through fw_cfg; the multiboot path does not. */
  private linuxFirmwareConfig(): void {
    const cmdline = this.description.append ?? '';
    this.fwCfg.setU32(FwCfgKey.CMDLINE_SIZE, new TextEncoder().encode(cmdline).length + 1);
    this.fwCfg.setString(FwCfgKey.CMDLINE_DATA, cmdline);
  }
}
