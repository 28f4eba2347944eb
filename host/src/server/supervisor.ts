/**
 * The VM supervisor: the set of VM processes this server runs. A VM process
 * that crashes or is killed only changes that VM's state (to `crashed`,
 * reported with its reason); the server and the other VMs carry on.
 */
import { EventEmitter } from 'node:events';
import type { DeviceInfo, MachineDescription, VmState } from '@tsvmm/protocol';
import { ErrorCodes } from '@tsvmm/protocol';
import type { CancellationToken } from 'vscode-jsonrpc';
import { ChildShutdown, type VmProcessStatus } from '../vm-process/channel.js';
import { ProtocolError, vmNotFound } from './errors.js';
import { VmProcessHandle, type VmEndpoint, type VmLogEvent, type VmStateChangeEvent } from './vm-process-handle.js';

/** How long vm/destroy waits for a VM to power off before killing its process. */
const SHUTDOWN_GRACE_MS = 10_000;

export interface SupervisorEvents {
  stateChanged: [string, VmStateChangeEvent];
  consoleOutput: [string, { port: string; data: string }];
  deviceAdded: [string, DeviceInfo];
  deviceRemoved: [string, string];
  log: [string, VmLogEvent];
}

export interface SupervisorOptions {
  /** environment of VM processes (tests select the fake accelerator here) */
  env?: NodeJS.ProcessEnv;
  /** a VM process's stdout/stderr line */
  onOutputLine?: (vmId: string, line: string) => void;
}

export class VmSupervisor extends EventEmitter<SupervisorEvents> {
  private readonly vms = new Map<string, VmProcessHandle>();
  private nextId = 1;
  private closing = false;

  constructor(private readonly opts: SupervisorOptions = {}) {
    super();
  }

  async create(
    description: MachineDescription,
    opts: { token?: CancellationToken; progress?: (message: string, percentage: number) => void } = {},
  ): Promise<{ handle: VmProcessHandle; status: VmProcessStatus }> {
    if (this.closing) throw new ProtocolError(ErrorCodes.ShuttingDown, 'the server is shutting down');
    const vmId = `vm-${this.nextId++}`;
    const handle = new VmProcessHandle({
      vmId,
      ...(this.opts.env !== undefined ? { env: this.opts.env } : {}),
      onOutputLine: (line) => this.opts.onOutputLine?.(vmId, line),
    });
    const onProgress = (p: { message: string; percentage: number }): void => opts.progress?.(p.message, p.percentage);
    const onLog = (l: VmLogEvent): void => {
      this.emit('log', vmId, l);
    };
    handle.on('progress', onProgress);
    handle.on('log', onLog);
    try {
      const status = await handle.create(description, opts.token);
      this.vms.set(vmId, handle);
      handle.on('stateChanged', (c) => this.emit('stateChanged', vmId, c));
      handle.on('consoleOutput', (o) => this.emit('consoleOutput', vmId, o));
      handle.on('deviceAdded', (d) => this.emit('deviceAdded', vmId, d));
      handle.on('deviceRemoved', (id) => this.emit('deviceRemoved', vmId, id));
      return { handle, status };
    } catch (err) {
      handle.off('log', onLog);
      handle.kill('SIGKILL');
      await handle.whenEnded();
      throw err;
    } finally {
      handle.off('progress', onProgress);
    }
  }

  /** Serve a VM that runs elsewhere already (`tsvmm run --control`: in this process), as vm-N like the others. */
  async adopt(endpoint: VmEndpoint, name?: string): Promise<VmProcessHandle> {
    const vmId = `vm-${this.nextId++}`;
    const handle = new VmProcessHandle({ vmId, endpoint });
    handle.on('log', (l) => this.emit('log', vmId, l));
    await handle.attach(name);
    this.vms.set(vmId, handle);
    handle.on('stateChanged', (c) => this.emit('stateChanged', vmId, c));
    handle.on('consoleOutput', (o) => this.emit('consoleOutput', vmId, o));
    handle.on('deviceAdded', (d) => this.emit('deviceAdded', vmId, d));
    handle.on('deviceRemoved', (id) => this.emit('deviceRemoved', vmId, id));
    return handle;
  }

  get(vmId: string): VmProcessHandle {
    const h = this.vms.get(vmId);
    if (h === undefined) throw vmNotFound(vmId);
    return h;
  }

  list(): VmProcessHandle[] {
    return [...this.vms.values()];
  }

  /** Power the VM off if it still runs, end its process and forget it. */
  async destroy(vmId: string): Promise<VmState> {
    const h = this.get(vmId);
    if (h.alive && h.state !== 'shutdown' && h.state !== 'crashed') {
      // A wedged VM process must not wedge vm/destroy: after the grace period it is killed.
      let timer: NodeJS.Timeout | undefined;
      const grace = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          h.kill('SIGKILL');
          resolve();
        }, SHUTDOWN_GRACE_MS);
      });
      try {
        await Promise.race([h.request(ChildShutdown), grace]);
      } catch {
        // The process may be wedged or already gone: ending it below is what matters.
      } finally {
        clearTimeout(timer);
      }
    }
    await h.destroy();
    this.vms.delete(vmId);
    return h.state;
  }

  /** Destroy every VM (server shutdown). */
  async closeAll(): Promise<void> {
    this.closing = true;
    // One VM that fails to go away must not keep the others running; its failure is logged as that VM's.
    await Promise.all(
      [...this.vms.keys()].map((id) =>
        this.destroy(id).catch((e: unknown) => {
          this.emit('log', id, { level: 'error', message: `destroying ${id} at server shutdown failed: ${e instanceof Error ? e.message : String(e)}` });
        }),
      ),
    );
  }
}
