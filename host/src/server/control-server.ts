/**
 * The control server: sessions (one per client connection) on one side, the
 * VM supervisor on the other. Request handlers live here, one per protocol
 * method, registered against the definitions in @tsvmm/protocol so a handler
 * cannot drift from its schema. State changes, console output and log
 * records from VM processes are pushed to every initialized client that asked
 * for them.
 */
import { timingSafeEqual } from 'node:crypto';
import {
  ConsoleOutput,
  ConsoleWrite,
  CpuListModels,
  DeviceAdd,
  DeviceAdded,
  DeviceList,
  DeviceRemove,
  DeviceRemoved,
  ErrorCodes,
  HostCapabilitiesRequest,
  Initialize,
  LogMessage,
  MachineListTypes,
  MessageType,
  MigrationCancel,
  MigrationSaveToFile,
  MigrationSetParameters,
  MigrationStart,
  MigrationStatusRequest,
  PluginList,
  PROTOCOL_VERSION,
  protocolMajor,
  serverNotifications,
  Shutdown,
  VmCreate,
  VmDestroy,
  VmList,
  VmPause,
  VmReset,
  VmResume,
  VmShutdown,
  VmStart,
  VmStateChanged,
  VmStatusRequest,
  type HostCapabilities,
  type InitializeResult,
  type MigrationStatusResult,
} from '@tsvmm/protocol';
import type { z } from 'zod';
import {
  ChildConsoleWrite,
  ChildDeviceAdd,
  ChildDeviceRemove,
  ChildMigrationCancel,
  ChildMigrationSetParameters,
  ChildMigrationStart,
  ChildMigrationStatus,
  ChildPause,
  ChildReset,
  ChildResume,
  ChildShutdown,
  ChildStart,
} from '../vm-process/channel.js';
import { ProtocolError } from './errors.js';
import { probeHostCapabilities } from './host-capabilities.js';
import { PluginCatalog } from './catalog.js';
import { ClientSession, type RequestContext, type SessionHost, type Transport } from './session.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from './framing.js';
import { VmSupervisor } from './supervisor.js';
import { tsvmmVersion } from '../version.js';

type Handler = (params: unknown, ctx: RequestContext) => Promise<unknown>;
type LogLevelName = 'debug' | 'info' | 'warn' | 'error';

const LOG_RANK: Record<LogLevelName, number> = { debug: 10, info: 20, warn: 30, error: 40 };
/** LSP MessageType for our levels */
const MESSAGE_TYPE: Record<'trace' | LogLevelName, number> = {
  trace: MessageType.Debug,
  debug: MessageType.Debug,
  info: MessageType.Info,
  warn: MessageType.Warning,
  error: MessageType.Error,
};
const CLIENT_LOG_LEVEL: Record<string, number> = { error: 1, warning: 2, info: 3, log: 4, debug: 5 };


export interface ControlServerOptions {
  /** required from every client in `initialize` when set */
  authToken?: string;
  maxMessageBytes?: number;
  /** bytes queued for one client beyond which its console output is dropped (default 8 MiB) */
  outputHighWater?: number;
  /** environment of VM processes */
  vmEnv?: NodeJS.ProcessEnv;
  logLevel?: LogLevelName;
  /** where the server's log lines go (default stderr) */
  logLine?: (line: string) => void;
  /** called when a --stdio client sends `exit` */
  onExit?: (status: number) => void;
  /**
   * The server controls one VM that runs already (`tsvmm run --control`):
   * vm/create is refused, naming why.
   */
  monitorOf?: string;
}

export class ControlServer implements SessionHost {
  readonly maxMessageBytes: number;
  readonly outputHighWater: number;
  readonly supervisor: VmSupervisor;
  private readonly sessions = new Set<ClientSession>();
  private readonly handlers = new Map<string, Handler>();
  private readonly catalog: PluginCatalog;
  private hostCaps: Promise<HostCapabilities> | undefined;
  private readonly logRank: number;
  private readonly logLine: (line: string) => void;
  private readonly authToken: Buffer | undefined;
  private inFlight = 0;
  private readonly idleWaiters: Array<() => void> = [];

  constructor(private readonly opts: ControlServerOptions = {}) {
    this.maxMessageBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.outputHighWater = opts.outputHighWater ?? 8 * 1024 * 1024;
    this.logRank = LOG_RANK[opts.logLevel ?? 'warn'];
    this.logLine = opts.logLine ?? ((line) => process.stderr.write(`${line}\n`));
    this.authToken = opts.authToken !== undefined ? Buffer.from(opts.authToken, 'utf8') : undefined;
    this.catalog = new PluginCatalog((m) => this.log('warn', m));
    this.supervisor = new VmSupervisor({
      ...(opts.vmEnv !== undefined ? { env: opts.vmEnv } : {}),
      onOutputLine: (vmId, line) => this.logLine(`tsvmm serve: [${vmId}] ${line}`),
    });
    this.supervisor.on('stateChanged', (vmId, c) => this.broadcast(VmStateChanged.method, { vmId, ...c }));
    this.supervisor.on('consoleOutput', (vmId, o) => this.broadcast(ConsoleOutput.method, { vmId, port: o.port, data: o.data }));
    this.supervisor.on('deviceAdded', (vmId, device) => this.broadcast(DeviceAdded.method, { vmId, device }));
    this.supervisor.on('deviceRemoved', (vmId, id) => this.broadcast(DeviceRemoved.method, { vmId, id }));
    this.supervisor.on('log', (vmId, l) => {
      const params = {
        type: MESSAGE_TYPE[l.level],
        message: l.message,
        vmId,
        ...(l.causes !== undefined ? { causes: l.causes } : {}),
        ...(l.fields !== undefined && Object.keys(l.fields).length ? { fields: l.fields } : {}),
      };
      for (const s of this.sessions) if (params.type <= s.logLevel) s.notify(LogMessage.method, params);
    });
    this.registerHandlers();
  }

  /** Serve one connection. */
  accept(transport: Transport): ClientSession {
    const s = new ClientSession(this, transport);
    this.sessions.add(s);
    this.log('debug', `client ${s.id} connected (${transport.kind} ${transport.peer})`);
    return s;
  }

  get clientCount(): number {
    return this.sessions.size;
  }

  sessionClosed(session: ClientSession): void {
    this.sessions.delete(session);
    this.log('debug', `client ${session.id} disconnected`);
  }

  sessionExited(session: ClientSession, status: number): void {
    if (session.transport.kind === 'stdio') this.opts.onExit?.(status);
  }

  log(level: LogLevelName, message: string): void {
    if (LOG_RANK[level] >= this.logRank) this.logLine(`tsvmm serve: ${level}: ${message}`);
    if (level === 'debug') return;
    const params = { type: MESSAGE_TYPE[level], message };
    for (const s of this.sessions) if (params.type <= s.logLevel) s.notify(LogMessage.method, params);
  }

  private broadcast(method: string, params: object): void {
    for (const s of this.sessions) s.notify(method, params);
  }

  async handle(method: string, params: unknown, ctx: RequestContext): Promise<unknown> {
    const h = this.handlers.get(method);
    if (h === undefined) throw new ProtocolError(ErrorCodes.MethodNotFound, `unknown method '${method}'`, { method });
    this.inFlight++;
    try {
      return await h(params, ctx);
    } finally {
      this.inFlight--;
      if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** Resolves once no request is being handled and the last answers have been handed to their connections. */
  async idle(): Promise<void> {
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    // the answer is written when the handler's promise settles: one turn later
    await new Promise((resolve) => setImmediate(resolve));
  }

  /** Close every connection and destroy every VM. */
  async close(): Promise<void> {
    for (const s of [...this.sessions]) s.close();
    await this.supervisor.closeAll();
  }

  hostCapabilities(): Promise<HostCapabilities> {
    this.hostCaps ??= probeHostCapabilities();
    return this.hostCaps;
  }

  private on<P extends z.ZodType, R extends z.ZodType>(
    def: { method: string; params: P; result: R },
    fn: (params: z.output<P>, ctx: RequestContext) => Promise<z.output<R>> | z.output<R>,
  ): void {
    this.handlers.set(def.method, async (params, ctx) => fn(params as z.output<P>, ctx));
  }

  /**
   * migration/start and migration/saveToFile run until the migration ends:
   * the VM process's progress reaches the client as `$/progress` under the
   * request's workDoneToken, and `$/cancelRequest` becomes migration/cancel.
   */
  private registerMigrationHandlers(): void {
    const run = async (
      vmId: string,
      title: string,
      ctx: RequestContext,
      params: { uri: string; parameters?: z.output<typeof MigrationStart.params>['parameters']; snapshot?: { resume: boolean } },
    ): Promise<MigrationStatusResult> => {
      const h = this.supervisor.get(vmId);
      ctx.progress({ kind: 'begin', title, cancellable: true, percentage: 0 });
      const onProgress = (s: MigrationStatusResult): void => {
        const total = s.ram.totalBytes;
        const pct = total > 0 ? Math.min(99, Math.round((100 * s.ram.transferredBytes) / total)) : undefined;
        ctx.progress({
          kind: 'report',
          message: `${s.status}: ${Math.round(s.ram.transferredBytes / 1024)} KiB sent, ${Math.round(s.ram.remainingBytes / 1024)} KiB dirty, round ${s.ram.iterations}`,
          ...(pct !== undefined ? { percentage: pct } : {}),
        });
      };
      h.on('migrationProgress', onProgress);
      const cancel = ctx.token.onCancellationRequested(() => {
        // The cancel fails only when there is nothing left to cancel (the migration or its VM process has ended); ChildMigrationStart below reports that.
        void h.request(ChildMigrationCancel).catch(() => undefined);
      });
      try {
        const status = await h.request(ChildMigrationStart, params);
        ctx.progress({ kind: 'end', message: `completed in ${status.totalTimeMs ?? '?'} ms (downtime ${status.downtimeMs ?? '?'} ms)` });
        return status;
      } catch (err) {
        ctx.progress({ kind: 'end', message: 'failed' });
        throw err;
      } finally {
        h.off('migrationProgress', onProgress);
        cancel.dispose();
      }
    };
    this.on(MigrationStart, (p, ctx) =>
      run(p.vmId, `migrating ${p.vmId} to ${p.uri}`, ctx, { uri: p.uri, ...(p.parameters !== undefined ? { parameters: p.parameters } : {}) }),
    );
    this.on(MigrationSaveToFile, (p, ctx) =>
      run(p.vmId, `saving ${p.vmId} to ${p.path}`, ctx, {
        uri: `file:${p.path}`,
        ...(p.parameters !== undefined ? { parameters: p.parameters } : {}),
        snapshot: { resume: p.resume ?? false },
      }),
    );
    this.on(MigrationCancel, async (p) => {
      const r = await this.supervisor.get(p.vmId).request(ChildMigrationCancel);
      return { vmId: p.vmId, status: r.status };
    });
    this.on(MigrationSetParameters, async (p) => this.supervisor.get(p.vmId).request(ChildMigrationSetParameters, { parameters: p.parameters }));
    this.on(MigrationStatusRequest, async (p) => this.supervisor.get(p.vmId).request(ChildMigrationStatus));
  }

  private checkToken(given: string | undefined): boolean {
    if (this.authToken === undefined) return true;
    if (given === undefined) return false;
    const g = Buffer.from(given, 'utf8');
    return g.length === this.authToken.length && timingSafeEqual(g, this.authToken);
  }

  private registerHandlers(): void {
    this.on(Initialize, async (p, ctx): Promise<InitializeResult> => {
      const s = ctx.session;
      if (s.state !== 'uninitialized') throw new ProtocolError(ErrorCodes.InvalidRequest, 'initialize may be sent only once per connection');
      if (!this.checkToken(p.authToken)) {
        s.closeSoon();
        this.log('warn', `client ${s.id} (${s.transport.peer}) presented ${p.authToken === undefined ? 'no' : 'a wrong'} auth token; disconnected`);
        throw new ProtocolError(
          ErrorCodes.Unauthorized,
          p.authToken === undefined ? 'this server requires an auth token: pass authToken in initialize' : 'wrong auth token',
        );
      }
      const major = protocolMajor(p.protocolVersion);
      if (major !== protocolMajor(PROTOCOL_VERSION)) {
        throw new ProtocolError(
          ErrorCodes.InvalidRequest,
          `protocol version ${p.protocolVersion} is not compatible with this server's ${PROTOCOL_VERSION} (the major versions must match)`,
        );
      }
      const [machineTypes, deviceTypes, host] = await Promise.all([this.catalog.machineTypes(), this.catalog.deviceTypes(), this.hostCapabilities()]);
      s.markInitialized(p.capabilities.notifications, CLIENT_LOG_LEVEL[p.capabilities.logLevel ?? 'info'] ?? 3, p.clientInfo?.name);
      return {
        serverInfo: { name: 'tsvmm', version: tsvmmVersion() },
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {
          machineTypes,
          deviceTypes,
          cpuModels: this.catalog.cpuModels(),
          blockFormats: this.catalog.provided('block-driver'),
          migrationStrategies: this.catalog.provided('migration-strategy'),
          plugins: this.catalog.plugins(),
          host,
          notifications: [...serverNotifications],
          limits: { maxMessageBytes: this.maxMessageBytes },
        },
      };
    });

    this.on(Shutdown, async (_p, ctx) => {
      ctx.session.markShutdown();
      // A --stdio server belongs to its one client: its VMs go with it.
      if (ctx.session.transport.kind === 'stdio') await this.supervisor.closeAll();
      return null;
    });

    this.on(VmCreate, async (p, ctx) => {
      if (this.opts.monitorOf !== undefined) {
        throw new ProtocolError(ErrorCodes.InvalidRequest, `this is the control socket of ${this.opts.monitorOf}: it serves that VM only and creates none`, {}, undefined);
      }
      const title = `creating VM${p.description.name !== undefined ? ` '${p.description.name}'` : ''}`;
      ctx.progress({ kind: 'begin', title, cancellable: true, percentage: 0 });
      try {
        const { handle, status } = await this.supervisor.create(p.description, {
          token: ctx.token,
          progress: (message, percentage) => ctx.progress({ kind: 'report', message, percentage }),
        });
        ctx.progress({ kind: 'end', message: `${handle.vmId} created` });
        return { vmId: handle.vmId, state: status.state, pid: handle.pid ?? 0 };
      } catch (err) {
        ctx.progress({ kind: 'end', message: 'failed' });
        throw err;
      }
    });

    const lifecycle = (
      def: typeof VmStart,
      child: typeof ChildStart,
    ): void =>
      this.on(def, async (p) => {
        const h = this.supervisor.get(p.vmId);
        const r = await h.request(child);
        return { vmId: p.vmId, state: r.state };
      });
    lifecycle(VmStart, ChildStart);
    lifecycle(VmPause, ChildPause);
    lifecycle(VmResume, ChildResume);
    lifecycle(VmReset, ChildReset);
    lifecycle(VmShutdown, ChildShutdown);

    this.on(VmDestroy, async (p) => {
      const state = await this.supervisor.destroy(p.vmId);
      return { vmId: p.vmId, state };
    });

    this.on(VmList, () => ({
      vms: this.supervisor.list().map((h) => {
        const pid = h.pid;
        return { vmId: h.vmId, ...(h.name !== undefined ? { name: h.name } : {}), state: h.state, ...(pid !== undefined ? { pid } : {}) };
      }),
    }));

    this.on(VmStatusRequest, (p) => this.supervisor.get(p.vmId).status());

    this.on(DeviceList, async (p) => {
      const s = await this.supervisor.get(p.vmId).status();
      return { devices: s.devices ?? [] };
    });

    this.on(DeviceAdd, async (p) => this.supervisor.get(p.vmId).request(ChildDeviceAdd, { device: p.device }));
    this.on(DeviceRemove, async (p) => this.supervisor.get(p.vmId).request(ChildDeviceRemove, { id: p.id }));

    this.on(ConsoleWrite, async (p) => {
      const data = p.encoding === 'base64' ? Buffer.from(p.data, 'base64') : Buffer.from(p.data, 'utf8');
      return this.supervisor.get(p.vmId).request(ChildConsoleWrite, { port: p.port, data: data.toString('base64') });
    });

    this.registerMigrationHandlers();

    this.on(HostCapabilitiesRequest, () => this.hostCapabilities());
    this.on(PluginList, () => ({ plugins: this.catalog.plugins() }));
    this.on(MachineListTypes, async () => ({ machineTypes: await this.catalog.machineTypes() }));
    this.on(CpuListModels, async () => ({ cpuModels: await this.catalog.cpuModelListing() }));
  }
}
