/**
 * The server's side of one VM process (ARCHITECTURE.md "Runtime model": one
 * VM = one OS process). Forks host/src/vm-process/main.js with an IPC
 * channel, speaks the private channel over it, mirrors the VM's state, and
 * turns an unexpected process end into a `crashed` state with reason
 * `killed` (a signal) or `vmm-crashed` (an exit without a report).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ErrorCodes, type DeviceInfo, type MachineDescription, type MigrationStatusResult, type StateReason, type VmState, type VmStatus } from '@tsvmm/protocol';
import { ResponseError, type CancellationToken, type MessageConnection, type RequestType, type RequestType0 } from 'vscode-jsonrpc';
import { createMessageConnection, IPCMessageReader, IPCMessageWriter } from 'vscode-jsonrpc/node.js';
import {
  ChildConsoleOutput,
  ChildCreate,
  ChildDeviceAdded,
  ChildDeviceRemoved,
  ChildLog,
  ChildMigrationProgress,
  ChildProgress,
  ChildStateChanged,
  ChildStatus,
  type VmProcessStatus,
} from '../vm-process/channel.js';
import { ProtocolError } from './errors.js';

const here = path.dirname(fileURLToPath(import.meta.url));
export const VM_PROCESS_MAIN = path.resolve(here, '../vm-process/main.js');
/** How long a VM process may take to end after its channel closed before it is killed. */
const EXIT_GRACE_MS = 5000;

export interface VmStateChangeEvent {
  from: VmState;
  to: VmState;
  reason: StateReason;
  detail: string;
  exitStatus?: number;
  signal?: string;
}

export interface VmLogEvent {
  level: 'trace' | 'debug' | 'info' | 'warn' | 'error';
  message: string;
  causes?: string[];
  fields?: Record<string, unknown>;
}

export interface VmProcessEvents {
  stateChanged: [VmStateChangeEvent];
  deviceAdded: [DeviceInfo];
  deviceRemoved: [string];
  consoleOutput: [{ port: string; data: string }];
  log: [VmLogEvent];
  progress: [{ message: string; percentage: number }];
  migrationProgress: [MigrationStatusResult];
  exited: [];
}

export interface VmProcessOptions {
  vmId: string;
  env?: NodeJS.ProcessEnv;
  /** the process's stderr/stdout lines */
  onOutputLine?: (line: string) => void;
  /** talk to this VM instead of forking a VM process (`tsvmm run --control`: the VM runs in this process) */
  endpoint?: VmEndpoint;
}

/**
 * Where a VM runs, as the handle sees it: the private channel, and the
 * process behind it (its pid, its end, how to make it end).
 */
export interface VmEndpoint {
  /** the private channel, not yet listening */
  readonly connection: MessageConnection;
  readonly pid: number | undefined;
  /** the channel is open */
  readonly connected: boolean;
  /** close the channel: a VM process then ends by itself */
  release(): void;
  kill(signal: NodeJS.Signals): void;
  /** called once when the VM's process (or, in-process, the VM) has ended */
  onExit(listener: (code: number | null, signal: NodeJS.Signals | null) => void): void;
  onError(listener: (err: Error) => void): void;
}

/** A forked VM process (host/src/vm-process/main.js) with an IPC channel. */
function forkedEndpoint(opts: VmProcessOptions): VmEndpoint {
  const child: ChildProcess = fork(VM_PROCESS_MAIN, [], {
    // stdout is piped, never inherited: over --stdio the server's stdout is the protocol.
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    env: opts.env ?? process.env,
    serialization: 'json',
  });
  const onLine = opts.onOutputLine ?? (() => undefined);
  for (const stream of [child.stdout, child.stderr]) {
    if (stream) readline.createInterface({ input: stream }).on('line', onLine);
  }
  return {
    connection: createMessageConnection(new IPCMessageReader(child), new IPCMessageWriter(child)),
    get pid() {
      return child.pid;
    },
    get connected() {
      return child.connected;
    },
    release: () => {
      if (child.connected) child.disconnect();
    },
    kill: (signal) => {
      child.kill(signal);
    },
    onExit: (listener) => {
      child.once('exit', listener);
    },
    onError: (listener) => {
      child.once('error', listener);
    },
  };
}

function isTerminal(state: VmState): boolean {
  return state === 'shutdown' || state === 'crashed';
}

export class VmProcessHandle extends EventEmitter<VmProcessEvents> {
  readonly vmId: string;
  readonly createdAt = Date.now();
  private readonly child: VmEndpoint;
  private readonly conn: MessageConnection;
  private inFlight = 0;
  private ended = false;
  private destroying = false;
  private readonly endedPromise: Promise<void>;
  state: VmState = 'created';
  reason: StateReason | undefined;
  detail: string | undefined;
  exitStatus: number | undefined;
  name: string | undefined;
  /** the last full status the process reported */
  private lastStatus: VmProcessStatus | undefined;

  constructor(opts: VmProcessOptions) {
    super();
    this.vmId = opts.vmId;
    this.child = opts.endpoint ?? forkedEndpoint(opts);
    this.conn = this.child.connection;
    this.conn.onNotification(ChildStateChanged, (c) => this.applyState(c));
    this.conn.onNotification(ChildDeviceAdded, (p) => {
      if (this.lastStatus !== undefined) this.lastStatus = { ...this.lastStatus, devices: [...this.lastStatus.devices, p.device] };
      this.emit('deviceAdded', p.device);
    });
    this.conn.onNotification(ChildDeviceRemoved, (p) => {
      if (this.lastStatus !== undefined) this.lastStatus = { ...this.lastStatus, devices: this.lastStatus.devices.filter((d) => d.id !== p.id) };
      this.emit('deviceRemoved', p.id);
    });
    this.conn.onNotification(ChildConsoleOutput, (o) => this.emit('consoleOutput', o));
    this.conn.onNotification(ChildLog, (l) => this.emit('log', l));
    this.conn.onNotification(ChildProgress, (p) => this.emit('progress', p));
    this.conn.onNotification(ChildMigrationProgress, (p) => this.emit('migrationProgress', p.status));
    // The channel breaking is reported through the process 'exit' below; nothing to add here.
    this.conn.onError(() => undefined);
    this.conn.listen();
    this.endedPromise = new Promise((resolve) => {
      this.child.onExit((code, signal) => {
        this.onExit(code, signal);
        resolve();
      });
    });
    this.child.onError((err) => {
      this.emit('log', { level: 'error', message: `VM process ${this.vmId}: ${err.message}` });
    });
  }

  get pid(): number | undefined {
    return this.ended ? undefined : this.child.pid;
  }

  get alive(): boolean {
    return !this.ended;
  }

  /** For a VM that already exists at the endpoint (`tsvmm run --control`): take its status as the mirror's start. */
  async attach(name: string | undefined): Promise<VmProcessStatus> {
    this.name = name;
    const status = await this.request(ChildStatus);
    this.lastStatus = status;
    this.state = status.state;
    this.reason = status.reason ?? 'created';
    if (status.detail !== undefined) this.detail = status.detail;
    return status;
  }

  async create(description: MachineDescription, token?: CancellationToken): Promise<VmProcessStatus> {
    this.name = description.name;
    const cancel = token?.onCancellationRequested(() => this.kill('SIGKILL'));
    try {
      const status = await this.request(ChildCreate, { description });
      this.lastStatus = status;
      this.state = status.state;
      this.reason = 'created';
      return status;
    } catch (err) {
      if (token?.isCancellationRequested) {
        throw new ResponseError(ErrorCodes.RequestCancelled, 'vm/create was cancelled; the VM process was killed', {
          causes: ['vm/create was cancelled'],
        });
      }
      throw err;
    } finally {
      cancel?.dispose();
    }
  }

  /**
   * vm/status is answered from the server's mirror of the VM, never by a
   * round trip to the VM process: the process pushes every state change
   * (ordered before the response of the request that caused it), and the
   * device list only changes through device/add and device/remove. Managers
   * that poll status therefore cost the VM nothing.
   */
  async status(): Promise<VmStatus> {
    if (this.lastStatus === undefined && !this.ended) this.lastStatus = await this.request(ChildStatus);
    return this.cachedStatus();
  }

  cachedStatus(): VmStatus {
    const s = this.lastStatus;
    const pid = this.pid;
    return {
      vmId: this.vmId,
      ...(this.name !== undefined ? { name: this.name } : {}),
      state: this.state,
      ...(this.reason !== undefined ? { reason: this.reason } : {}),
      ...(this.detail !== undefined ? { detail: this.detail } : {}),
      ...(pid !== undefined ? { pid } : {}),
      ...(s !== undefined
        ? { machineType: s.machineType, vcpus: s.vcpus, memory: s.memory, devices: s.devices, ...(s.kernel !== undefined ? { kernel: s.kernel } : {}) }
        : {}),
      uptimeMs: Date.now() - this.createdAt,
      ...(this.exitStatus !== undefined ? { exitStatus: this.exitStatus } : {}),
    };
  }

  /** Send a request over the private channel; a dead process becomes VmProcessFailed. */
  async request<R>(type: RequestType0<R, unknown>): Promise<R>;
  async request<P, R>(type: RequestType<P, R, unknown>, params: P): Promise<R>;
  async request<P, R>(type: RequestType0<R, unknown> | RequestType<P, R, unknown>, params?: P): Promise<R> {
    if (this.ended || isTerminal(this.state)) {
      // A finished VM's process is on its way out; nothing but status (answered from the cache) makes sense.
      throw new ProtocolError(ErrorCodes.InvalidVmState, `VM ${this.vmId} is ${this.state}${this.detail !== undefined ? ` (${this.detail})` : ''}`, {
        state: this.state,
      });
    }
    this.inFlight++;
    try {
      const pending =
        params === undefined ? this.conn.sendRequest(type as RequestType0<R, unknown>) : this.conn.sendRequest(type as RequestType<P, R, unknown>, params);
      // A process that dies never answers: race the answer against the exit.
      return await Promise.race([
        pending,
        this.endedPromise.then(() => {
          throw new ProtocolError(
            ErrorCodes.VmProcessFailed,
            `the process of VM ${this.vmId} ended while handling ${type.method.replace('vmp/', '')} (${this.detail ?? 'no reason given'})`,
          );
        }),
      ]);
    } catch (err) {
      // Errors in vscode-jsonrpc's own range (-32099..-32096: write failed, connection closed) mean the channel broke.
      if (err instanceof ProtocolError || (err instanceof ResponseError && (err.code > -32090 || err.code < -32100))) throw err;
      throw new ProtocolError(ErrorCodes.VmProcessFailed, `the process of VM ${this.vmId} did not answer: ${err instanceof Error ? err.message : String(err)}`, {}, { cause: err });
    } finally {
      this.inFlight--;
      this.maybeRelease();
    }
  }

  private applyState(c: VmStateChangeEvent): void {
    this.state = c.to;
    this.reason = c.reason;
    this.detail = c.detail;
    if (c.exitStatus !== undefined) this.exitStatus = c.exitStatus;
    if (this.lastStatus !== undefined) this.lastStatus = { ...this.lastStatus, state: c.to };
    this.emit('stateChanged', c);
    this.maybeRelease();
  }

  /** A finished VM's process is released once no request is in flight: closing the channel ends it. */
  private maybeRelease(): void {
    if (isTerminal(this.state) && this.inFlight === 0 && !this.ended && this.child.connected) this.release();
  }

  private release(): void {
    this.child.release();
    const timer = setTimeout(() => this.kill('SIGKILL'), EXIT_GRACE_MS);
    timer.unref();
    void this.endedPromise.then(() => clearTimeout(timer));
  }

  kill(signal: NodeJS.Signals): void {
    if (!this.ended) this.child.kill(signal);
  }

  /** End the process (powering the VM off first if it runs) and wait for it. */
  async destroy(): Promise<void> {
    if (this.ended) return;
    this.destroying = true;
    this.release();
    await this.endedPromise;
  }

  whenEnded(): Promise<void> {
    return this.endedPromise;
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    this.ended = true;
    this.conn.dispose();
    if (!isTerminal(this.state) && this.destroying) {
      this.applyState({ from: this.state, to: 'shutdown', reason: 'host-request', detail: 'destroyed by request' });
    } else if (!isTerminal(this.state)) {
      const from = this.state;
      const reason: StateReason = signal !== null ? 'killed' : 'vmm-crashed';
      const detail =
        signal !== null ? `the VM process was killed by ${signal}` : `the VM process exited with status ${code ?? '?'} without reporting why`;
      this.applyState({ from, to: 'crashed', reason, detail, ...(signal !== null ? { signal } : {}) });
    }
    this.emit('exited');
  }
}
