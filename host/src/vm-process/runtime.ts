/**
 * The VM process runtime: hosts one Machine and answers the server over the
 * private channel (channel.ts). Everything the guest prints to an `rpc`
 * serial port and every state change is pushed to the server as it happens.
 *
 * The process lives as long as the server keeps the channel open: the server
 * disconnects once the VM has reached shutdown/crashed and no request is in
 * flight; if the server dies, the disconnect tears the VM down too, so a VM
 * never outlives the server that supervised it.
 */
import {
  ConfigError,
  createChardev,
  errorCauses,
  Machine,
  parseProperties,
  SinkLogger,
  VmStateError,
  type Accelerator,
  type Chardev,
  type DeviceTypeDefinition,
  type LogLevel,
  type PluginRegistry,
} from '@tsvmm/core';
import {
  DEFAULT_PARAMETERS,
  MigrationDestination,
  MigrationError,
  MigrationSource,
  parseTransportUri,
  prewarmMigrationThread,
  type MigrationParameters,
  type MigrationStatus,
  type MigrationStrategy,
} from '@tsvmm/migration';
import {
  ErrorCodes,
  machineDescriptionSchema,
  type DeviceInfo,
  type DeviceSpec,
  type MachineDescription,
  type MigrationParametersInput,
  type MigrationStatusResult,
} from '@tsvmm/protocol';
import type { MessageConnection, NotificationType } from 'vscode-jsonrpc';
import { createPluginRegistry } from '../plugins.js';
import { ProtocolError, toResponseError } from '../server/errors.js';
import {
  ChildConsoleOutput,
  ChildConsoleWrite,
  ChildCreate,
  ChildDeviceAdd,
  ChildDeviceRemove,
  ChildLog,
  ChildMigrationCancel,
  ChildMigrationProgress,
  ChildMigrationSetParameters,
  ChildMigrationStart,
  ChildMigrationStatus,
  ChildPause,
  ChildProgress,
  ChildReset,
  ChildResume,
  ChildShutdown,
  ChildStart,
  ChildStateChanged,
  ChildDeviceAdded,
  ChildDeviceRemoved,
  ChildStatus,
  type VmProcessStatus,
} from './channel.js';
import { RpcConsoleChardev } from './rpc-chardev.js';

export interface VmRuntimeOptions {
  connection: MessageConnection;
  loadAccelerator: () => Promise<Accelerator>;
  /** where the process's own log lines go (stderr) */
  logLine: (line: string) => void;
  logLevel?: LogLevel;
}

export class VmRuntime {
  private machine: Machine | undefined;
  private registry: PluginRegistry | undefined;
  private readonly consoles = new Map<string, RpcConsoleChardev>();
  private readonly conn: MessageConnection;
  private readonly log: SinkLogger;
  /** migration parameters (migration/setParameters), QEMU's defaults to start with */
  private migrationParams: MigrationParameters = { ...DEFAULT_PARAMETERS };
  private outgoing: MigrationSource | undefined;
  private incoming: MigrationDestination | undefined;
  /** the status of the last migration, once it ended */
  private lastMigration: MigrationStatus | undefined;
  private lastProgressAt = 0;

  constructor(private readonly opts: VmRuntimeOptions) {
    this.conn = opts.connection;
    this.log = new SinkLogger((level, message, fields) => {
      const causes = Array.isArray(fields['causes']) ? (fields['causes'] as unknown[]).map(String) : undefined;
      // The VM process logs what it sends: the server's clients and the process's stderr see the same record.
      opts.logLine(`${level}: ${message}${Object.keys(fields).length ? ` ${JSON.stringify(fields)}` : ''}`);
      this.notify(ChildLog, { level, message, fields, ...(causes ? { causes } : {}) });
    }, opts.logLevel ?? 'info');
    this.register();
  }

  private register(): void {
    const c = this.conn;
    const guard =
      <P, R>(fn: (p: P) => Promise<R> | R) =>
      async (p: P): Promise<R> => {
        try {
          return await fn(p);
        } catch (err) {
          if (err instanceof VmStateError) {
            const state = this.machine?.state ?? 'created';
            throw toResponseError(new ProtocolError(ErrorCodes.InvalidVmState, err.message, { code: err.code, state }));
          }
          if (!(err instanceof ProtocolError)) {
            this.log.error(err instanceof Error ? err.message : String(err), { causes: errorCauses(err) });
          }
          throw toResponseError(err);
        }
      };
    c.onRequest(ChildCreate, guard((p: { description: MachineDescription }) => this.create(p.description)));
    c.onRequest(ChildStart, guard(() => {
      if (this.incoming !== undefined && this.requireMachine().state === 'created') {
        throw new VmStateError('this VM waits for an incoming migration and starts by itself once it is loaded');
      }
      this.requireMachine().start();
      // The migration thread boots now, not when a migration is asked for (it takes tens of ms).
      prewarmMigrationThread();
      return { state: this.requireMachine().state };
    }));
    c.onRequest(ChildPause, guard(async () => {
      await this.requireMachine().pause();
      return { state: this.requireMachine().state };
    }));
    c.onRequest(ChildResume, guard(() => {
      // Running the guest during the final copy would make the saved state a lie.
      if (this.outgoing?.status().status === 'device') {
        throw new VmStateError('the VM is stopped for the final copy of a migration', { hint: 'wait for the migration to end, or cancel it with migration/cancel (the VM then runs on)' });
      }
      this.requireMachine().resume();
      return { state: this.requireMachine().state };
    }));
    c.onRequest(ChildReset, guard(async () => {
      await this.requireMachine().reset('host-request', 'reset by request');
      return { state: this.requireMachine().state };
    }));
    c.onRequest(ChildShutdown, guard(async () => {
      const m = this.requireMachine();
      if (m.state === 'shutdown' || m.state === 'crashed') throw new VmStateError(`the VM is already ${m.state}`);
      await m.shutdown('shut down by request');
      return { state: m.state };
    }));
    c.onRequest(ChildStatus, guard(() => this.status()));
    c.onRequest(ChildDeviceAdd, guard((p: { device: DeviceSpec }) => this.deviceAdd(p.device)));
    c.onRequest(ChildDeviceRemove, guard((p: { id: string }) => this.deviceRemove(p.id)));
    c.onRequest(ChildConsoleWrite, guard((p: { port: string; data: string }) => this.consoleWrite(p.port, p.data)));
    c.onRequest(ChildMigrationStart, guard((p: { uri: string; parameters?: MigrationParametersInput; snapshot?: { resume: boolean } }) => this.migrationStart(p)));
    c.onRequest(ChildMigrationCancel, guard(() => this.migrationCancel()));
    c.onRequest(ChildMigrationSetParameters, guard((p: { parameters: MigrationParametersInput }) => this.migrationSetParameters(p.parameters)));
    c.onRequest(ChildMigrationStatus, guard(() => this.migrationStatus()));
  }

  private requireMachine(): Machine {
    if (this.machine === undefined) throw new VmStateError('the VM has not been created yet');
    return this.machine;
  }

  /**
   * Notifications to the server are fire and forget: one that cannot be sent
   * means the connection is gone, and then this process exits (main.ts).
   */
  private notify<P>(type: NotificationType<P>, params: P): void {
    void this.conn.sendNotification(type, params).catch(() => undefined);
  }

  private progress(message: string, percentage: number): void {
    this.notify(ChildProgress, { message, percentage });
  }

  private async create(input: MachineDescription): Promise<VmProcessStatus> {
    if (this.machine !== undefined) throw new VmStateError('this VM process already hosts a VM');
    const description = parseProperties(machineDescriptionSchema, input, 'machine description');
    this.progress('loading plugins', 10);
    this.registry = createPluginRegistry(description.plugins ?? [], (m) => this.log.warn(m));
    this.progress('opening the accelerator', 30);
    const accelerator = await this.opts.loadAccelerator();
    this.progress('building the machine', 50);
    const { incoming: incomingUri, ...rest } = description;
    const machine = await Machine.create(
      { ...rest, serial: description.serial ?? ['rpc'] },
      {
        registry: this.registry,
        accelerator,
        log: this.log,
        chardevFactory: (id, spec) => this.chardev(id, spec),
        ...(incomingUri !== undefined ? { incoming: true } : {}),
      },
    );
    this.machine = machine;
    if (incomingUri !== undefined) await this.listenIncoming(machine, incomingUri);
    this.reportStateChanges(machine);
    this.progress('machine ready', 100);
    return this.status();
  }

  /**
   * Serve a machine built elsewhere (`tsvmm run --control`: the VM of this
   * process, with its own consoles and incoming migration). The channel's
   * other end then works as with a VM this runtime created.
   */
  adopt(machine: Machine, registry: PluginRegistry): void {
    if (this.machine !== undefined) throw new VmStateError('this runtime already hosts a VM');
    this.machine = machine;
    this.registry = registry;
    this.reportStateChanges(machine);
  }

  private reportStateChanges(machine: Machine): void {
    machine.on('stateChanged', (change) => {
      const exit = machine.exitResult;
      const terminal = change.to === 'shutdown' || change.to === 'crashed';
      if (terminal) for (const c of this.consoles.values()) c.flush();
      this.notify(ChildStateChanged, { ...change, ...(terminal && exit !== undefined ? { exitStatus: exit.status } : {}) });
    });
  }

  // --- migration ------------------------------------------------------------------------

  /** Progress to the server, at most every 200 ms (and always when the status changes state). */
  private migrationProgress(status: MigrationStatus, force = false): void {
    const now = Date.now();
    if (!force && now - this.lastProgressAt < 200) return;
    this.lastProgressAt = now;
    this.notify(ChildMigrationProgress, { status: status as MigrationStatusResult });
  }

  private async listenIncoming(machine: Machine, uri: string): Promise<void> {
    let lastState = '';
    const dest = new MigrationDestination({
      machine,
      source: parseTransportUri(uri),
      log: this.log,
      onStatus: (s) => {
        this.migrationProgress(s, s.status !== lastState);
        lastState = s.status;
      },
    });
    this.incoming = dest;
    const address = await dest.listen();
    this.log.info(`waiting for an incoming migration at ${address}`);
    dest.done.then(
      () => {
        this.lastMigration = dest.status();
        this.log.info('incoming migration completed; the VM runs', { totalTimeMs: this.lastMigration.totalTimeMs });
      },
      (err: unknown) => {
        this.lastMigration = dest.status();
        const message = err instanceof Error ? err.message : String(err);
        this.log.error(`incoming migration failed: ${message}`, { causes: errorCauses(err) });
        // Discard what arrived: the VM never ran.
        void machine
          .discardIncoming(`incoming migration failed: ${message}`)
          .catch((e: unknown) => this.log.error(`discarding the failed incoming migration failed: ${e instanceof Error ? e.message : String(e)}`, { causes: errorCauses(e) }));
      },
    );
  }

  private async strategy(name: string): Promise<MigrationStrategy> {
    const reg = this.registry;
    if (reg === undefined) throw new VmStateError('the VM has not been created yet');
    await reg.ensure('migration-strategy', name);
    const s = reg.definitions<MigrationStrategy>('migration-strategy').find((d) => d.name === name);
    if (s === undefined) {
      const known = reg.provided('migration-strategy');
      throw new ConfigError(`unknown migration strategy '${name}'`, { hint: known.length ? `installed: ${known.join(', ')}` : 'install @tsvmm/plugin-migration-precopy' });
    }
    return s;
  }

  private applyParameters(p: MigrationParametersInput | undefined): void {
    if (p === undefined) return;
    const next: MigrationParameters = { ...this.migrationParams };
    if (p.strategy !== undefined) next.strategy = p.strategy;
    if (p.maxDowntimeMs !== undefined) next.maxDowntimeMs = p.maxDowntimeMs;
    if (p.maxBandwidth !== undefined) next.maxBandwidth = p.maxBandwidth;
    if (p.xbzrleCacheSize !== undefined) next.xbzrleCacheSize = p.xbzrleCacheSize;
    if (p.maxIterations !== undefined) next.maxIterations = p.maxIterations;
    this.migrationParams = next;
    this.outgoing?.setParameters(next);
  }

  private async migrationSetParameters(p: MigrationParametersInput): Promise<MigrationParameters> {
    this.requireMachine();
    if (p.strategy !== undefined) await this.strategy(p.strategy);
    this.applyParameters(p);
    return { ...this.migrationParams };
  }

  private async migrationStart(p: { uri: string; parameters?: MigrationParametersInput; snapshot?: { resume: boolean } }): Promise<MigrationStatusResult> {
    const m = this.requireLive();
    if (this.outgoing !== undefined) throw new VmStateError('a migration of this VM is already running', { hint: 'wait for it or cancel it with migration/cancel' });
    if (this.incoming !== undefined && m.state === 'created') throw new VmStateError('this VM waits for an incoming migration');
    if (p.parameters?.strategy !== undefined) await this.strategy(p.parameters.strategy);
    this.applyParameters(p.parameters);
    const target = parseTransportUri(p.uri);
    if (p.snapshot !== undefined && target.kind !== 'file') throw new ConfigError('a snapshot goes to a file: uri');
    const strategy = await this.strategy(this.migrationParams.strategy);
    let lastState = '';
    const source = new MigrationSource({
      machine: m,
      strategy,
      params: this.migrationParams,
      target,
      kind: p.snapshot !== undefined ? 'snapshot' : 'migration',
      ...(p.snapshot?.resume === true ? { resumeAfter: true } : {}),
      writer: 'tsvmm',
      log: this.log,
      onStatus: (s) => {
        this.migrationProgress(s, s.status !== lastState);
        lastState = s.status;
      },
    });
    this.outgoing = source;
    try {
      const status = await source.run();
      this.log.info(`migration to ${p.uri} completed`, { totalTimeMs: status.totalTimeMs, downtimeMs: status.downtimeMs });
      return status as MigrationStatusResult;
    } catch (err) {
      if (err instanceof MigrationError) this.log.warn(err.message);
      throw err;
    } finally {
      this.lastMigration = source.status();
      this.outgoing = undefined;
      if (m.state === 'running' || m.state === 'paused') prewarmMigrationThread();
    }
  }

  private migrationCancel(): { status: MigrationStatusResult['status'] } {
    this.requireMachine();
    if (this.outgoing !== undefined) {
      this.outgoing.cancel();
      return { status: 'cancelling' };
    }
    if (this.incoming !== undefined && this.machine?.state === 'created') {
      this.incoming.cancel();
      return { status: 'cancelled' };
    }
    return { status: this.lastMigration?.status ?? 'none' };
  }

  private migrationStatus(): MigrationStatusResult {
    this.requireMachine();
    const s = this.outgoing?.status() ?? (this.incoming !== undefined && this.machine?.state === 'created' ? this.incoming.status() : undefined) ?? this.lastMigration;
    return (s ?? { role: 'none', status: 'none', ram: { totalBytes: 0, transferredBytes: 0, remainingBytes: 0, normalPages: 0, zeroPages: 0, pagesPerSecond: 0, dirtyPagesRate: 0, bandwidth: 0, iterations: 0 } }) as MigrationStatusResult;
  }

  /** Serial backends in a VM process: `rpc` (the default; `stdio` means the same here) or core's null/none/file. */
  private chardev(id: string, spec: string): Chardev | undefined {
    if (spec === 'rpc' || spec === 'stdio') {
      const c = new RpcConsoleChardev(id, (port, data) => {
        this.notify(ChildConsoleOutput, { port, data: Buffer.from(data).toString('base64') });
      });
      this.consoles.set(id, c);
      return c;
    }
    return createChardev(id, spec);
  }

  private status(): VmProcessStatus {
    const m = this.requireMachine();
    const exit = m.exitResult;
    return {
      state: m.state,
      machineType: m.machineType.name,
      vcpus: m.info.cpus,
      memory: { bytes: m.layout.ramSize, belowFourGiB: m.layout.belowFourGiB, aboveFourGiB: m.layout.aboveFourGiB },
      devices: m.listDevices(),
      uptimeMs: m.uptimeMs,
      ...(m.kernelSummary !== undefined ? { kernel: m.kernelSummary } : {}),
      ports: [...this.consoles.keys()],
      ...(exit !== undefined ? { exitStatus: exit.status, reason: exit.reason, detail: exit.message } : {}),
    };
  }

  private requireLive(): Machine {
    const m = this.requireMachine();
    if (m.state === 'shutdown' || m.state === 'crashed') throw new VmStateError(`the VM is ${m.state}`);
    return m;
  }

  private async deviceAdd(spec: DeviceSpec): Promise<DeviceInfo> {
    const m = this.requireLive();
    const registry = this.registry;
    if (registry === undefined) throw new VmStateError('the VM has not been created yet');
    await registry.ensure('device', spec.driver);
    const def = registry.definitions<DeviceTypeDefinition>('device').find((d) => d.name === spec.driver);
    if (def === undefined) {
      throw new ConfigError(`unknown device type '${spec.driver}'`, { hint: 'the initialize result lists the installed device types' });
    }
    const id = spec.id;
    if (id !== undefined && m.listDevices().some((d) => d.id === id)) {
      throw new ConfigError(`device id '${id}' is already used in this VM`, { hint: 'choose another id' });
    }
    const { driver: _driver, id: _id, ...props } = spec;
    parseProperties(def.properties, { ...(m.machineType.compatProps[def.name] ?? {}), ...props }, `device '${id ?? def.name}' (${def.name})`);
    const refusal = m.coldPlugRefusal(def);
    if (refusal === undefined) {
      // cold-plug: the VM has not run yet, so no hot-plug controller is needed
      const device = await m.coldPlug(spec);
      this.notify(ChildDeviceAdded, { device });
      return device;
    }
    if (m.state === 'created' && def.bus === 'pci') {
      // not run yet, but cold-plug is out too (an incoming VM): say that, not the hot-plug story
      throw new ProtocolError(ErrorCodes.HotplugUnsupported, `cannot add device type '${def.name}': ${refusal}`, { reason: refusal });
    }
    const reason = hotplugReason(def);
    throw new ProtocolError(ErrorCodes.HotplugUnsupported, `cannot hot-plug device type '${def.name}': ${reason}${def.bus === 'pci' ? `; ${COLD_PLUG_HINT}` : ''}`, {
      reason,
    });
  }

  private async deviceRemove(id: string): Promise<{ id: string }> {
    const m = this.requireLive();
    const dev = m.listDevices().find((d) => d.id === id);
    if (dev === undefined) {
      throw new ProtocolError(ErrorCodes.DeviceNotFound, `no device '${id}' in this VM`, {});
    }
    const board = m.machineType.boardDevices.some((b) => b.id === id);
    const def = this.registry?.definitions<DeviceTypeDefinition>('device').find((d) => d.name === dev.driver);
    if (!board && def !== undefined && m.coldPlugRefusal(def) === undefined) {
      await m.coldUnplug(id);
      this.notify(ChildDeviceRemoved, { id });
      return { id };
    }
    let reason: string;
    if (board) reason = `it is part of the ${m.machineType.name} board`;
    else reason = def === undefined ? 'its device type is not known to this VM process' : hotplugReason(def);
    const hint = !board && def?.bus === 'pci' ? `; ${COLD_PLUG_HINT}` : '';
    throw new ProtocolError(ErrorCodes.HotplugUnsupported, `cannot unplug device '${id}' (${dev.driver}): ${reason}${hint}`, { reason });
  }

  private consoleWrite(port: string, data: string): { written: number } {
    const m = this.requireLive();
    const c = this.consoles.get(port);
    if (c === undefined) {
      const ports = [...this.consoles.keys()];
      throw new ProtocolError(
        ErrorCodes.PortNotFound,
        `VM has no console port '${port}'${ports.length ? ` (ports: ${ports.join(', ')})` : ' (no serial port uses the rpc backend)'}`,
        {},
      );
    }
    void m;
    const bytes = Buffer.from(data, 'base64');
    if (!c.input(bytes)) throw new ProtocolError(ErrorCodes.PortNotFound, `no device is attached to console port '${port}'`, {});
    return { written: bytes.length };
  }

  /** The server closed the channel (or died): tear the VM down and end the process. */
  async disconnected(): Promise<void> {
    const m = this.machine;
    if (m !== undefined) {
      try {
        await m.destroy();
      } catch (err) {
        this.opts.logLine(`error: destroying the VM failed: ${errorCauses(err).join(': ')}`);
      }
    }
  }
}

const COLD_PLUG_HINT = 'PCI devices can be added and removed before the VM first runs: vm/create, then device/add or device/remove, then vm/start';

function hotplugReason(def: DeviceTypeDefinition): string {
  if (def.bus !== 'pci' && !def.hotpluggable) {
    return `it sits on the ${def.bus} bus, which has no hot-plug mechanism (such devices exist from power-on, as on real hardware)`;
  }
  return `hot-plug is not implemented yet: this tsvmm has no hot-plug controller for the ${def.bus} bus (ACPI PCI hot-plug arrives in a later release)`;
}
