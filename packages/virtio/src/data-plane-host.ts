/**
 * The control path's handle on a device's data plane (see data-plane.ts):
 * starts it on the main thread or on an iothread, configures queues, resets
 * and closes it, and turns its events into callbacks. Runs on the main
 * thread; one per device.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import type { DeviceContext, EventNotifier } from '@tsvmm/core';
import {
  runDataPlane,
  type ControlMessage,
  type DataPlaneEnv,
  type DataPlaneEvent,
  type DataPlaneInitMessage,
  type DataPlaneNotifier,
  type InterruptRoute,
  type RequestHandlerFactory,
} from './data-plane.js';
import type { QueueConfig, QueueCursor } from './queue.js';

/** Where each running queue stood when the data plane was quiesced. */
export type QuiescedCursors = { index: number; cursor: QueueCursor }[];

/** Where and how a device's queues run. */
export interface DataPlaneSpec<I, L = unknown> {
  /** the handler factory, for the main thread */
  factory: RequestHandlerFactory<I, L>;
  /** URL of the module whose default export is iothreadEntry(factory), for iothreads */
  moduleUrl: string;
  /** structured-cloneable data for the factory */
  init: I;
  /** main-thread objects for the factory (not given on an iothread) */
  local?: L;
  /** run on this iothread (`--object iothread,id=...`); undefined: the main thread */
  iothread?: string;
}

export interface DataPlaneCallbacks {
  /** a queue needs an interrupt the data plane could not raise (route 'message') */
  onInterrupt(queue: number): void;
  /** the guest broke a queue (or a request on it): the device needs a reset */
  onQueueError(queue: number, message: string): void;
  /** the data plane failed on its own (not the guest's fault) */
  onFailure(message: string): void;
  /** a backend problem worth logging */
  onWarning(message: string): void;
}

export class DataPlaneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DataPlaneError';
  }
}

export class DataPlaneHost {
  private seq = 0;
  private readonly waiters = new Map<number, () => void>();
  private readonly quiesceWaiters = new Map<number, (cursors: QuiescedCursors) => void>();
  private closedWaiter: (() => void) | undefined;
  private closed = false;
  private pending = 0;

  private constructor(
    private readonly port: MessagePort,
    readonly info: unknown,
    readonly iothread: string | undefined,
    private readonly callbacks: DataPlaneCallbacks,
  ) {
    port.on('message', (e: DataPlaneEvent) => this.onEvent(e));
    // An idle device must not keep the VMM process alive (listeners re-ref a port, so unref after them).
    port.unref();
  }

  /**
   * Starts the data plane and waits until its handler exists (so a backend
   * that cannot be opened fails device realize). `notifiers` maps the fds the
   * control path hands over to their notifier objects, for the main thread.
   */
  static async start<I, L>(
    ctx: DeviceContext,
    spec: DataPlaneSpec<I, L>,
    notifiers: ReadonlyMap<number, EventNotifier>,
    callbacks: DataPlaneCallbacks,
  ): Promise<DataPlaneHost> {
    let port: MessagePort;
    if (spec.iothread !== undefined) {
      port = await ctx.iothread(spec.iothread).load(spec.moduleUrl, null);
      const ready = waitReady(port);
      const init: DataPlaneInitMessage<I> = { type: 'init', ram: [...ctx.memory.list()], init: spec.init };
      port.postMessage(init);
      return new DataPlaneHost(port, await ready, spec.iothread, callbacks);
    }
    const { port1, port2 } = new MessageChannel();
    const env: DataPlaneEnv = {
      memory: ctx.memory,
      notifier: (fd) => mainThreadNotifier(notifiers, fd),
      onIoThread: false,
      warn: (message) => callbacks.onWarning(message),
    };
    const ready = waitReady(port1);
    void runDataPlane(env, spec.init, port2, spec.factory, spec.local).then(() => port2.unref());
    return new DataPlaneHost(port1, await ready, undefined, callbacks);
  }

  startQueue(index: number, config: QueueConfig, kick: EventNotifier, interrupt: InterruptRoute, cursor?: QueueCursor): void {
    this.send({ type: 'start-queue', index, config, kickFd: kick.fd, interrupt, ...(cursor !== undefined ? { cursor } : {}) });
  }

  setInterrupt(index: number, interrupt: InterruptRoute): void {
    this.send({ type: 'set-interrupt', index, interrupt });
  }

  /** Stops every queue; resolves once requests in flight have finished. */
  reset(): Promise<void> {
    if (this.closed) return Promise.resolve();
    const seq = ++this.seq;
    const done = new Promise<void>((resolve) => this.waiters.set(seq, resolve));
    this.send({ type: 'reset', seq });
    return this.keepAliveUntil(done);
  }

  /** An idle port is unref'd; while the control path awaits an answer it must keep the process alive. */
  private async keepAliveUntil<T>(p: Promise<T>): Promise<T> {
    this.pending++;
    this.port.ref();
    try {
      return await p;
    } finally {
      if (--this.pending === 0) this.port.unref();
    }
  }

  /**
   * Migration: stops taking requests and resolves, once those in flight have
   * completed into the used rings, with each queue's cursor (restart with
   * startQueue(..., cursor)).
   */
  quiesce(): Promise<QuiescedCursors> {
    if (this.closed) return Promise.resolve([]);
    const seq = ++this.seq;
    const done = new Promise<QuiescedCursors>((resolve) => this.quiesceWaiters.set(seq, resolve));
    this.send({ type: 'quiesce', seq });
    return done;
  }

  /** Stops the queues and releases the backend; the host cannot be used afterwards. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const done = new Promise<void>((resolve) => {
      this.closedWaiter = resolve;
    });
    this.port.postMessage({ type: 'close' } satisfies ControlMessage);
    await this.keepAliveUntil(done);
    this.port.close();
    for (const w of this.waiters.values()) w();
    this.waiters.clear();
    for (const w of this.quiesceWaiters.values()) w([]);
    this.quiesceWaiters.clear();
  }

  private send(m: ControlMessage): void {
    if (!this.closed) this.port.postMessage(m);
  }

  private onEvent(e: DataPlaneEvent): void {
    switch (e.type) {
      case 'interrupt':
        this.callbacks.onInterrupt(e.index);
        return;
      case 'queue-error':
        this.callbacks.onQueueError(e.index, e.message);
        return;
      case 'reset-done': {
        const w = this.waiters.get(e.seq);
        this.waiters.delete(e.seq);
        w?.();
        return;
      }
      case 'failed':
        this.callbacks.onFailure(e.message);
        return;
      case 'closed':
        this.closedWaiter?.();
        return;
      case 'warning':
        this.callbacks.onWarning(e.message);
        return;
      case 'quiesced': {
        const w = this.quiesceWaiters.get(e.seq);
        this.quiesceWaiters.delete(e.seq);
        w?.(e.cursors);
        return;
      }
      case 'ready':
        return;
    }
  }
}

function waitReady(port: MessagePort): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onMessage = (e: DataPlaneEvent): void => {
      if (e.type === 'ready') {
        port.off('message', onMessage);
        resolve(e.info);
      } else if (e.type === 'failed') {
        port.off('message', onMessage);
        reject(new DataPlaneError(e.message));
      }
    };
    port.on('message', onMessage);
  });
}

function mainThreadNotifier(notifiers: ReadonlyMap<number, EventNotifier>, fd: number): DataPlaneNotifier {
  const n = notifiers.get(fd);
  if (n === undefined) throw new DataPlaneError(`no notifier with fd ${fd} was handed to the data plane`);
  return {
    watch: (cb) => n.watch(cb),
    drain: () => {
      n.drain();
    },
    notify: () => n.notify(),
  };
}
