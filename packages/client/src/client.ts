/**
 * The typed client (LSP 3.17 lifecycle: initialize → initialized → requests →
 * shutdown → exit). Every method is typed by its definition in
 * @tsvmm/protocol, so server and client cannot disagree on names or shapes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as net from 'node:net';
import {
  ConsoleOutput,
  ConsoleWrite,
  CpuListModels,
  DeviceAdd,
  DeviceAdded,
  DeviceList,
  DeviceRemove,
  DeviceRemoved,
  Exit,
  HostCapabilitiesRequest,
  Initialize,
  Initialized,
  LogMessage,
  MachineListTypes,
  PluginList,
  PROTOCOL_VERSION,
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
  type ErrorData,
  type InitializeParams,
  type InitializeResult,
  type RequestDefinition,
  type WorkDoneProgressValue,
} from '@tsvmm/protocol';
import {
  CancellationTokenSource,
  ProgressType,
  ResponseError,
  type CancellationToken,
  type Disposable,
  type MessageConnection,
} from 'vscode-jsonrpc';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node.js';
import type { z } from 'zod';

export { ResponseError, CancellationTokenSource };
export type { ErrorData };

export interface ConnectOptions {
  authToken?: string;
  clientName?: string;
  /** notifications wanted (methods); default all */
  notifications?: string[];
  logLevel?: 'error' | 'warning' | 'info' | 'log' | 'debug';
}

export interface SpawnOptions extends ConnectOptions {
  /** the tsvmm command and leading args, default ['tsvmm'] (e.g. ['node', '/path/to/cli.js']) */
  command?: string[];
  /** extra args after `serve --stdio` */
  args?: string[];
  env?: NodeJS.ProcessEnv;
}

type Params<D> = D extends RequestDefinition<infer P, z.ZodType> ? z.input<P> : never;
type Result<D> = D extends RequestDefinition<z.ZodType, infer R> ? z.output<R> : never;

const workDoneProgress = new ProgressType<WorkDoneProgressValue>();

export class TsvmmClient {
  private initializeResult: InitializeResult | undefined;
  private closed = false;
  private nextToken = 1;
  /**
   * vscode-jsonrpc keeps one handler per notification method; the client fans
   * each notification out to any number of listeners.
   */
  private readonly listeners = new Map<string, Set<(params: unknown) => void>>();

  private constructor(
    readonly connection: MessageConnection,
    private readonly closeTransport: () => void,
    readonly child?: ChildProcess,
  ) {}

  /** Connect to `unix:PATH` or `tcp:HOST:PORT` and initialize. */
  static async connect(address: string, opts: ConnectOptions = {}): Promise<TsvmmClient> {
    const socket = await openSocket(address);
    const conn = createMessageConnection(new StreamMessageReader(socket), new StreamMessageWriter(socket));
    const client = new TsvmmClient(conn, () => socket.destroy());
    socket.on('error', () => undefined);
    await client.start(opts);
    return client;
  }

  /** Spawn `tsvmm serve --stdio` and initialize; the server ends with the client. */
  static async spawn(opts: SpawnOptions = {}): Promise<TsvmmClient> {
    const [cmd, ...lead] = opts.command ?? ['tsvmm'];
    if (cmd === undefined) throw new Error('empty command');
    const child = spawn(cmd, [...lead, 'serve', '--stdio', ...(opts.args ?? [])], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: opts.env ?? process.env,
    });
    const stdout = child.stdout;
    const stdin = child.stdin;
    if (stdout === null || stdin === null) throw new Error('cannot open pipes to tsvmm serve --stdio');
    const conn = createMessageConnection(new StreamMessageReader(stdout), new StreamMessageWriter(stdin));
    const client = new TsvmmClient(conn, () => stdin.end(), child);
    await client.start(opts);
    return client;
  }

  /** Wrap an existing connection (any transport) and initialize. */
  static async fromConnection(conn: MessageConnection, opts: ConnectOptions = {}): Promise<TsvmmClient> {
    const client = new TsvmmClient(conn, () => conn.dispose());
    await client.start(opts);
    return client;
  }

  /** the server's `initialize` result */
  get serverCapabilities(): InitializeResult {
    if (this.initializeResult === undefined) throw new Error('the client is not initialized');
    return this.initializeResult;
  }

  /** Listen to a notification by method; any number of listeners per method. */
  on(method: string, listener: (params: unknown) => void): Disposable {
    let set = this.listeners.get(method);
    if (set === undefined) {
      set = new Set();
      this.listeners.set(method, set);
      this.connection.onNotification(method, (params: unknown) => {
        for (const l of [...(this.listeners.get(method) ?? [])]) l(params);
      });
    }
    set.add(listener);
    return { dispose: () => void this.listeners.get(method)?.delete(listener) };
  }

  private async start(opts: ConnectOptions): Promise<void> {
    this.connection.onClose(() => {
      this.closed = true;
    });
    this.connection.listen();
    const params: InitializeParams = {
      processId: process.pid,
      clientInfo: { name: opts.clientName ?? '@tsvmm/client' },
      protocolVersion: PROTOCOL_VERSION,
      capabilities: {
        ...(opts.notifications !== undefined ? { notifications: opts.notifications } : {}),
        ...(opts.logLevel !== undefined ? { logLevel: opts.logLevel } : {}),
      },
      ...(opts.authToken !== undefined ? { authToken: opts.authToken } : {}),
    };
    try {
      this.initializeResult = await this.connection.sendRequest(Initialize.type, params);
    } catch (err) {
      this.closeTransport();
      throw err;
    }
    await this.connection.sendNotification(Initialized.type, {});
  }

  /** Send any request by its definition. */
  request<D extends RequestDefinition<z.ZodType, z.ZodType>>(def: D, params: Params<D>, token?: CancellationToken): Promise<Result<D>> {
    return this.connection.sendRequest(def.method, params, ...(token ? [token] : [])) as Promise<Result<D>>;
  }

  /** Send a request by method name (for generic tools such as `tsvmm ctl`). */
  requestRaw(method: string, params?: unknown, token?: CancellationToken): Promise<unknown> {
    const args: unknown[] = params === undefined ? [] : [params];
    return this.connection.sendRequest(method, ...args, ...(token ? [token] : []));
  }

  /**
   * vm/create with work-done progress: `onProgress` sees begin/report/end;
   * cancelling `token` kills the half-built VM.
   */
  async vmCreate(
    params: Params<typeof VmCreate>,
    opts: { token?: CancellationToken; onProgress?: (v: WorkDoneProgressValue) => void } = {},
  ): Promise<Result<typeof VmCreate>> {
    let sub: Disposable | undefined;
    let p = params;
    if (opts.onProgress !== undefined) {
      const workDoneToken = `create-${this.nextToken++}`;
      sub = this.connection.onProgress(workDoneProgress, workDoneToken, opts.onProgress);
      p = { ...params, workDoneToken };
    }
    try {
      return await this.request(VmCreate, p, opts.token);
    } finally {
      sub?.dispose();
    }
  }

  vmStart(p: Params<typeof VmStart>) { return this.request(VmStart, p); }
  vmPause(p: Params<typeof VmPause>) { return this.request(VmPause, p); }
  vmResume(p: Params<typeof VmResume>) { return this.request(VmResume, p); }
  vmReset(p: Params<typeof VmReset>) { return this.request(VmReset, p); }
  vmShutdown(p: Params<typeof VmShutdown>) { return this.request(VmShutdown, p); }
  vmDestroy(p: Params<typeof VmDestroy>) { return this.request(VmDestroy, p); }
  vmList() { return this.request(VmList, {}); }
  vmStatus(p: Params<typeof VmStatusRequest>) { return this.request(VmStatusRequest, p); }
  deviceList(p: Params<typeof DeviceList>) { return this.request(DeviceList, p); }
  deviceAdd(p: Params<typeof DeviceAdd>) { return this.request(DeviceAdd, p); }
  deviceRemove(p: Params<typeof DeviceRemove>) { return this.request(DeviceRemove, p); }
  consoleWrite(p: Params<typeof ConsoleWrite>) { return this.request(ConsoleWrite, p); }
  hostCapabilities() { return this.request(HostCapabilitiesRequest, {}); }
  pluginList() { return this.request(PluginList, {}); }
  machineListTypes() { return this.request(MachineListTypes, {}); }
  cpuListModels() { return this.request(CpuListModels, {}); }

  onVmStateChanged(h: (p: z.output<typeof VmStateChanged.params>) => void): Disposable {
    return this.on(VmStateChanged.method, h as (p: unknown) => void);
  }
  onConsoleOutput(h: (p: z.output<typeof ConsoleOutput.params>) => void): Disposable {
    return this.on(ConsoleOutput.method, h as (p: unknown) => void);
  }
  onLogMessage(h: (p: z.output<typeof LogMessage.params>) => void): Disposable {
    return this.on(LogMessage.method, h as (p: unknown) => void);
  }
  onDeviceAdded(h: (p: z.output<typeof DeviceAdded.params>) => void): Disposable {
    return this.on(DeviceAdded.method, h as (p: unknown) => void);
  }
  onDeviceRemoved(h: (p: z.output<typeof DeviceRemoved.params>) => void): Disposable {
    return this.on(DeviceRemoved.method, h as (p: unknown) => void);
  }

  /** Wait for the first console output of a VM that contains `text` (accumulating across batches). */
  waitForConsole(vmId: string, text: string | RegExp, timeoutMs = 10_000): Promise<string> {
    return new Promise((resolve, reject) => {
      let seen = '';
      const timer = setTimeout(() => {
        sub.dispose();
        reject(new Error(`no console output matching ${String(text)} from ${vmId} within ${timeoutMs} ms; got ${JSON.stringify(seen.slice(-500))}`));
      }, timeoutMs);
      const sub = this.onConsoleOutput((o) => {
        if (o.vmId !== vmId) return;
        seen += Buffer.from(o.data, 'base64').toString('utf8');
        if (typeof text === 'string' ? seen.includes(text) : text.test(seen)) {
          clearTimeout(timer);
          sub.dispose();
          resolve(seen);
        }
      });
    });
  }

  /** Wait for a vm/stateChanged of a VM that satisfies `pred`. */
  waitForState(
    vmId: string,
    pred: (p: z.output<typeof VmStateChanged.params>) => boolean,
    timeoutMs = 10_000,
  ): Promise<z.output<typeof VmStateChanged.params>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        sub.dispose();
        reject(new Error(`no matching vm/stateChanged from ${vmId} within ${timeoutMs} ms`));
      }, timeoutMs);
      const sub = this.onVmStateChanged((c) => {
        if (c.vmId === vmId && pred(c)) {
          clearTimeout(timer);
          sub.dispose();
          resolve(c);
        }
      });
    });
  }

  /** `shutdown` then `exit`, then close the transport (and wait for a spawned server to end). */
  async close(): Promise<void> {
    if (!this.closed) {
      // a server that closes the connection meanwhile (its VM ended it) answers nothing: stop waiting then
      let sub: Disposable | undefined;
      const gone = new Promise<void>((resolve) => {
        sub = this.connection.onClose(() => resolve());
      });
      try {
        await Promise.race([
          (async () => {
            await this.connection.sendRequest(Shutdown.type);
            await this.connection.sendNotification(Exit.type);
          })(),
          gone,
        ]);
      } catch {
        // the server may already be gone
      } finally {
        sub?.dispose();
      }
    }
    const child = this.child;
    const ended = child && child.exitCode === null && child.signalCode === null ? new Promise<void>((r) => child.once('exit', () => r())) : undefined;
    this.closeTransport();
    this.connection.dispose();
    this.closed = true;
    if (ended) await ended;
  }
}

function openSocket(address: string): Promise<net.Socket> {
  let opts: net.NetConnectOpts;
  if (address.startsWith('unix:')) opts = { path: address.slice(5) };
  else {
    const m = /^tcp:(?:(\[[^\]]+\]|[^:]+):)?(\d+)$/.exec(address);
    if (m === null) return Promise.reject(new Error(`cannot parse address '${address}': use unix:PATH or tcp:HOST:PORT`));
    opts = { host: (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port: Number(m[2]) };
  }
  return new Promise((resolve, reject) => {
    const s = net.connect(opts);
    s.once('connect', () => {
      s.off('error', reject);
      s.setNoDelay(true);
      resolve(s);
    });
    s.once('error', reject);
  });
}
