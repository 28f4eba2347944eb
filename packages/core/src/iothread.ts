/**
 * Iothreads: worker threads that run devices' data planes (QEMU's
 * `-object iothread,id=io0`). A device loads a module into an iothread; the
 * module's default export gets the device's data (fds, guest RAM buffers) and
 * a MessagePort to the device's control path on the main thread. Several
 * devices may share one iothread; each gets its own port.
 */
import { MessageChannel, Worker, type MessagePort, type Transferable } from 'node:worker_threads';
import { TsvmmError } from './errors.js';

export interface IoThread {
  readonly id: string;
  /**
   * Start `moduleUrl` in the iothread: its default export is called as
   * `(data, port)` and may return a promise. Resolves with the device's end of
   * the port once the module's function returned.
   */
  load(moduleUrl: string, data: unknown, transferList?: readonly Transferable[]): Promise<MessagePort>;
  /** the worker's thread id (diagnostics, tests) */
  readonly threadId: number;
}

/** What the iothread worker sends back on a device's port after loading its module. */
export type IoThreadLoadReply = { type: 'loaded' } | { type: 'load-failed'; message: string };

export class IoThreadError extends TsvmmError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('E_IOTHREAD', message, options);
  }
}

export class WorkerIoThread implements IoThread {
  private readonly worker: Worker;
  private exited = false;
  private exitError: Error | undefined;

  constructor(readonly id: string) {
    this.worker = new Worker(new URL('./iothread-worker.js', import.meta.url), { name: `iothread ${id}` });
    this.worker.on('error', (err) => {
      this.exitError = err;
    });
    this.worker.on('exit', () => {
      this.exited = true;
    });
    // The data planes keep the worker busy; an idle iothread must not keep the process alive.
    this.worker.unref();
  }

  get threadId(): number {
    return this.worker.threadId;
  }

  async load(moduleUrl: string, data: unknown, transferList: readonly Transferable[] = []): Promise<MessagePort> {
    if (this.exited) throw new IoThreadError(`iothread ${this.id} has ended${this.exitError ? `: ${this.exitError.message}` : ''}`);
    const { port1, port2 } = new MessageChannel();
    const reply = new Promise<IoThreadLoadReply>((resolve) => {
      port1.once('message', (m: IoThreadLoadReply) => resolve(m));
      this.worker.once('exit', () => resolve({ type: 'load-failed', message: `iothread ${this.id} ended` }));
    });
    this.worker.postMessage({ type: 'load', url: moduleUrl, data, port: port2 }, [port2, ...transferList]);
    const r = await reply;
    if (r.type === 'load-failed') {
      port1.close();
      throw new IoThreadError(`iothread ${this.id}: starting ${moduleUrl} failed: ${r.message}`);
    }
    return port1;
  }

  async terminate(): Promise<void> {
    if (!this.exited) await this.worker.terminate();
  }
}
