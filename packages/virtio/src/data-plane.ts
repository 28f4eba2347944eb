/**
 * The virtio data plane: queue processing for one device, the same code on
 * the main thread or on an iothread (ARCHITECTURE.md "Runtime model"; OASIS
 * VIRTIO 1.2 §2.7 for the queue contract it drives).
 *
 * The control path (VirtioCommon, on the main thread) talks to a data plane
 * only through a MessagePort — an in-process MessageChannel when the queues
 * run on the main thread, the port from IoThread.load() when they run on an
 * iothread — so both placements behave the same. Per request there is no
 * message at all: the data plane waits on each queue's kick eventfd (the
 * ioeventfd KVM signals on a guest notify write), pops chains from guest RAM
 * (SharedArrayBuffers shared with the vCPUs), hands them to the device's
 * RequestHandler, returns them to the used ring and signals the queue's MSI-X
 * irqfd itself. Only an interrupt the data plane cannot raise itself (INTx,
 * which needs the ISR register on the main thread) goes back as a message.
 *
 * A guest-caused error — a malformed chain from the queue, or a request the
 * handler rejects with a VirtioDeviceError — stops that queue and is reported
 * as `queue-error`; the control path sets DEVICE_NEEDS_RESET. An unexpected
 * exception in a handler is reported the same way (with its message) rather
 * than ending the thread: a guest must never be able to stop the VMM.
 *
 * Control messages are handled strictly in order, one at a time: a reset
 * first stops every queue, then waits for the requests in flight (so no DMA
 * lands in guest memory after the reset is acknowledged, as QEMU drains on
 * reset), then acknowledges; a later start-queue waits its turn.
 */
import type { MessagePort } from 'node:worker_threads';
import { GuestMemory, type GuestRamRegion } from '@tsvmm/core';
import { SplitQueue, VirtqueueError, type DescriptorChain, type QueueConfig, type QueueCursor } from './queue.js';

/** A request the guest got wrong (bad framing, direction, size): the device needs a reset. */
export class VirtioDeviceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VirtioDeviceError';
  }
}

/** An eventfd as the data plane uses it: wait for kicks, or signal an interrupt. */
export interface DataPlaneNotifier {
  watch(onSignal: () => void): () => void;
  drain(): void;
  notify(): void;
}

/** What a data plane gets from the thread it runs on. */
export interface DataPlaneEnv {
  readonly memory: GuestMemory;
  /** the notifier behind an fd the control path handed over (kick ioeventfds, MSI-X irqfds) */
  notifier(fd: number): DataPlaneNotifier;
  /** true on an iothread */
  readonly onIoThread: boolean;
  /** report a problem that is not the guest's fault (a backend error) to the VMM's log */
  warn(message: string): void;
}

/** The device-specific part of a data plane. */
export interface RequestHandler {
  /**
   * Processes one chain from queue `queue`; returns (or resolves with) the
   * number of bytes written into the chain's device-writable buffers. Throw
   * or reject with VirtioDeviceError for a malformed request.
   */
  handle(chain: DescriptorChain, queue: number): number | Promise<number>;
  /** drop requests waiting on something other than I/O (e.g. a rate limit); called on reset */
  reset?(): void;
  /** release backends (files, timers) for good */
  close?(): void | Promise<void>;
}

/**
 * Creates a device's RequestHandler in the data plane's thread from
 * structured-cloneable `init`. `local` holds main-thread objects and is only
 * given when the data plane runs on the main thread. Whatever it returns as
 * `info` goes back to the control path (e.g. a disk's size).
 */
export type RequestHandlerFactory<I, L = unknown> = (
  init: I,
  env: DataPlaneEnv,
  local: L | undefined,
) => Promise<{ handler: RequestHandler; info?: unknown }>;

/** How a queue's used-buffer notifications reach the guest. */
export type InterruptRoute = { kind: 'irqfd'; fd: number } | { kind: 'message' } | { kind: 'none' };

export type ControlMessage =
  | { type: 'start-queue'; index: number; config: QueueConfig; kickFd: number; interrupt: InterruptRoute; cursor?: QueueCursor }
  | { type: 'set-interrupt'; index: number; interrupt: InterruptRoute }
  | { type: 'reset'; seq: number }
  | { type: 'close' }
  /** migration: stop taking requests, let those in flight finish, report where each queue stands */
  | { type: 'quiesce'; seq: number };

export type DataPlaneEvent =
  | { type: 'ready'; info: unknown }
  | { type: 'failed'; message: string }
  | { type: 'interrupt'; index: number }
  | { type: 'queue-error'; index: number; message: string }
  | { type: 'reset-done'; seq: number }
  | { type: 'quiesced'; seq: number; cursors: { index: number; cursor: QueueCursor }[] }
  | { type: 'warning'; message: string }
  | { type: 'closed' };

class RunningQueue {
  private stopWatch: (() => void) | undefined;
  stopped = false;
  /** quiesced: no new requests are taken, but those in flight still complete into the used ring */
  paused = false;
  private notifyScheduled = false;

  constructor(
    readonly index: number,
    readonly queue: SplitQueue,
    private readonly kick: DataPlaneNotifier,
    public interrupt: InterruptRoute,
    private readonly plane: DataPlane,
  ) {}

  start(): void {
    this.stopWatch = this.kick.watch(() => {
      this.kick.drain();
      this.process();
    });
    // Buffers made available before the driver's first kick (or before DRIVER_OK) are served now.
    this.process();
  }

  stop(): void {
    this.stopped = true;
    this.stopWatch?.();
    this.stopWatch = undefined;
  }

  pause(): void {
    this.paused = true;
    this.stopWatch?.();
    this.stopWatch = undefined;
  }

  /** Drains the available ring under the §2.7.10 suppression contract (see queue.ts). */
  process(): void {
    if (this.stopped || this.paused) return;
    do {
      this.queue.disableNotification();
      for (;;) {
        const r = this.queue.pop();
        if (r.kind === 'empty') break;
        if (r.kind === 'invalid') {
          this.plane.fail(this, r.error);
          return;
        }
        this.plane.dispatch(this, r.chain);
        if (this.stopped || this.paused) return;
      }
    } while (this.queue.enableNotification());
  }

  complete(head: number, len: number): void {
    if (this.stopped) return;
    this.queue.addUsed(head, len);
    // Completions of one event-loop turn share one notification check.
    if (!this.notifyScheduled) {
      this.notifyScheduled = true;
      queueMicrotask(() => {
        this.notifyScheduled = false;
        if (!this.stopped && this.queue.needsNotification()) this.plane.signal(this);
      });
    }
  }
}

/** One device's data plane. Created by runDataPlane; lives until `close`. */
class DataPlane {
  private readonly queues = new Map<number, RunningQueue>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private control: Promise<void> = Promise.resolve();
  private readonly interrupts = new Map<number, DataPlaneNotifier>();

  constructor(
    private readonly env: DataPlaneEnv,
    private readonly handler: RequestHandler,
    private readonly port: MessagePort,
  ) {}

  onMessage(m: ControlMessage): void {
    // One control message at a time, in order (see the file comment).
    this.control = this.control.then(() => this.apply(m)).catch((err: unknown) => {
      this.port.postMessage({ type: 'failed', message: `data plane control '${m.type}' failed: ${messageOf(err)}` } satisfies DataPlaneEvent);
    });
  }

  private async apply(m: ControlMessage): Promise<void> {
    switch (m.type) {
      case 'start-queue': {
        this.queues.get(m.index)?.stop();
        const q = SplitQueue.open(this.env.memory, m.config, m.cursor);
        if (q instanceof VirtqueueError) {
          this.post({ type: 'queue-error', index: m.index, message: q.message });
          return;
        }
        const rq = new RunningQueue(m.index, q, this.env.notifier(m.kickFd), m.interrupt, this);
        this.queues.set(m.index, rq);
        rq.start();
        return;
      }
      case 'set-interrupt': {
        const rq = this.queues.get(m.index);
        if (rq !== undefined) rq.interrupt = m.interrupt;
        return;
      }
      case 'reset':
        await this.stopAll();
        this.post({ type: 'reset-done', seq: m.seq });
        return;
      case 'close':
        await this.stopAll();
        await this.handler.close?.();
        this.post({ type: 'closed' });
        this.port.close();
        return;
      case 'quiesce': {
        // Unlike a reset, requests in flight complete into the used ring (the
        // guest sees them done after migration) and nothing is dropped.
        for (const q of this.queues.values()) q.pause();
        while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
        // Let the used-ring notification checks queued by the last completions run.
        await new Promise<void>((resolve) => setImmediate(resolve));
        const cursors = [...this.queues.values()].map((q) => ({ index: q.index, cursor: q.queue.cursor() }));
        for (const q of this.queues.values()) q.stop();
        this.queues.clear();
        this.post({ type: 'quiesced', seq: m.seq, cursors });
        return;
      }
    }
  }

  private async stopAll(): Promise<void> {
    for (const q of this.queues.values()) q.stop();
    this.queues.clear();
    this.handler.reset?.();
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  dispatch(rq: RunningQueue, chain: DescriptorChain): void {
    let r: number | Promise<number>;
    try {
      r = this.handler.handle(chain, rq.index);
    } catch (err) {
      this.fail(rq, err);
      return;
    }
    if (typeof r === 'number') {
      rq.complete(chain.head, r);
      return;
    }
    const p = r.then(
      (len) => rq.complete(chain.head, len),
      (err: unknown) => {
        if (!rq.stopped) this.fail(rq, err);
      },
    );
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  fail(rq: RunningQueue, err: unknown): void {
    if (rq.stopped) return;
    rq.stop();
    const guestError = err instanceof VirtqueueError || err instanceof VirtioDeviceError;
    this.post({
      type: 'queue-error',
      index: rq.index,
      message: guestError ? messageOf(err) : `internal error while handling a request: ${messageOf(err)}`,
    });
  }

  signal(rq: RunningQueue): void {
    const route = rq.interrupt;
    if (route.kind === 'irqfd') {
      let n = this.interrupts.get(route.fd);
      if (n === undefined) {
        n = this.env.notifier(route.fd);
        this.interrupts.set(route.fd, n);
      }
      n.notify();
    } else if (route.kind === 'message') {
      this.post({ type: 'interrupt', index: rq.index });
    }
  }

  private post(e: DataPlaneEvent): void {
    this.port.postMessage(e);
  }
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Runs a device's data plane in this thread: creates its handler, reports
 * `ready` (or `failed`) on the port, then serves control messages.
 */
export async function runDataPlane<I, L>(
  env: DataPlaneEnv,
  init: I,
  port: MessagePort,
  factory: RequestHandlerFactory<I, L>,
  local?: L,
): Promise<void> {
  let created: { handler: RequestHandler; info?: unknown };
  try {
    created = await factory(init, env, local);
  } catch (err) {
    port.postMessage({ type: 'failed', message: messageOf(err) } satisfies DataPlaneEvent);
    port.close();
    return;
  }
  const plane = new DataPlane(env, created.handler, port);
  port.on('message', (m: ControlMessage) => plane.onMessage(m));
  port.postMessage({ type: 'ready', info: created.info ?? null } satisfies DataPlaneEvent);
}

/** The first message on an iothread data plane's port (structured-cloneable; the RAM buffers are shared, not copied). */
export interface DataPlaneInitMessage<I> {
  type: 'init';
  ram: GuestRamRegion[];
  init: I;
}

type EventFdClass = typeof import('@tsvmm/kvm').EventFd;

/** An eventfd borrowed from the control path (it stays the owner and closes it). */
function borrowedNotifier(EventFd: EventFdClass, fd: number): DataPlaneNotifier {
  const efd = EventFd.borrow(fd);
  return {
    watch(onSignal) {
      const w = efd.watch(onSignal);
      return () => w.stop();
    },
    drain() {
      efd.read();
    },
    notify() {
      efd.write(1n);
    },
  };
}

/**
 * The default export of a device's iothread module:
 *
 *     export default iothreadEntry(createBlkHandler);
 *
 * IoThread.load() calls it with the device's port; the control path then
 * sends a DataPlaneInitMessage, once it listens on its end (so `ready` cannot
 * race IoThread.load's own reply on the same port).
 */
export function iothreadEntry<I, L = unknown>(factory: RequestHandlerFactory<I, L>): (data: unknown, port: MessagePort) => void {
  return (_data, port) => {
    port.once('message', (m: DataPlaneInitMessage<I>) => {
      // The native addon loads only where a data plane really runs on an iothread.
      void import('@tsvmm/kvm').then(
        ({ EventFd }) => {
          const env: DataPlaneEnv = {
            memory: new GuestMemory(m.ram),
            notifier: (fd) => borrowedNotifier(EventFd, fd),
            onIoThread: true,
            warn: (message) => port.postMessage({ type: 'warning', message } satisfies DataPlaneEvent),
          };
          return runDataPlane(env, m.init, port, factory);
        },
        (err: unknown) => port.postMessage({ type: 'failed', message: `loading @tsvmm/kvm in the iothread: ${messageOf(err)}` } satisfies DataPlaneEvent),
      );
    });
  };
}
