/**
 * The JS side of the exit handoff (native/vcpu.c describes the vCPU side).
 *
 * One ExitDispatcher per VM drains posts from all of its vCPU threads:
 *
 * - Idle: the native wake function (a Node-API threadsafe function) calls
 *   `onWake`, which claims the first post.
 * - Draining: for each post the runner decodes kvm_run and calls the
 *   handler; a synchronous PIO/MMIO handler is completed together with the
 *   next poll in one native call (`vmCompleteAndPoll`), which spins for the
 *   next post from any vCPU for an adaptive budget within
 *   [pollMinNs, pollMaxNs]. While draining, vCPU threads post without
 *   waking anybody.
 * - After `sliceMs` of continuous exits the drain yields to the event loop
 *   with setImmediate (still marked draining, so no wake is needed) so that
 *   timers, I/O and RPC keep running under a busy guest.
 *
 * Runner states: created -> running <-> exit (handler owes a completion)
 *                                   <-> event (parked until vcpu.resume())
 *                                   -> pausing -> paused -> running
 *                                   -> stopping -> stopped -> running ...
 *                closed at the end.
 */
import { kvmNative, POST_ENDED, POST_EVENT, POST_EXIT, POST_PAUSED, POST_RUN_ERROR } from './native.js';
import type { VcpuHandle, VmHandle } from './native.js';
import { KVM_EXIT_IO, KVM_EXIT_IO_OUT } from './constants.js';
import { KvmStateError, systemErrorFromErrno } from './errors.js';
import { decodeEvent, KVM_RUN_OFFSETS } from './exits.js';
import type { ExitHandlers, VcpuEvent } from './exits.js';
import type { Vcpu } from './vcpu.js';

export type VcpuRunState =
  | 'created'
  | 'running'
  | 'exit'
  | 'event'
  | 'pausing'
  | 'paused'
  | 'stopping'
  | 'stopped'
  | 'closed';

/**
 * Tuning of the exit handoff. Both spin budgets adapt between their bounds
 * like KVM's halt polling (Documentation/virt/kvm/halt-polling.rst): they
 * double when a wait ended soon after the spin gave up and fall back to the
 * minimum after a long idle stretch.
 */
export interface RunOptions {
  /**
   * After handling an exit, how long the JS thread spins (natively) for the
   * next exit of any vCPU before returning to the event loop, in ns: the
   * starting and lowest budget. 0 with pollMaxNs 0 disables polling.
   */
  pollMinNs: number;
  /** Upper bound of the adaptive poll budget, in ns; the addon caps it at 500 µs. */
  pollMaxNs: number;
  /** How long a vCPU thread spins for its completion before sleeping on a futex, in ns (lowest budget). */
  vcpuSpinMinNs: number;
  /** Upper bound of the vCPU's adaptive spin, in ns. */
  vcpuSpinMaxNs: number;
  /** Longest stretch of back-to-back exit handling before yielding to the event loop, in ms. */
  sliceMs: number;
}

export const DEFAULT_RUN_OPTIONS: Readonly<RunOptions> = {
  pollMinNs: 20_000,
  pollMaxNs: 200_000,
  vcpuSpinMinNs: 20_000,
  vcpuSpinMaxNs: 200_000,
  sliceMs: 2,
};

const O = KVM_RUN_OFFSETS;

function isPromiseLike(value: unknown): value is PromiseLike<void> {
  return (
    typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'
  );
}

/** Rethrows outside the drain loop: an `event` handler that throws is a bug in the caller. */
function rethrowLater(err: unknown): void {
  queueMicrotask(() => {
    throw err;
  });
}

/** Owns one vCPU's run state and decodes its posts. */
export class VcpuRunner {
  state: VcpuRunState = 'created';
  pauseRequested = false;
  handlers: ExitHandlers | undefined;
  readonly runView: DataView;
  private readonly runBuffer: ArrayBuffer;
  private ioOffset = -1;
  private ioViews: Uint8Array[] = [];
  private readonly mmioViews: Uint8Array[];

  constructor(
    readonly handle: VcpuHandle,
    readonly index: number,
    runBuffer: ArrayBuffer,
    readonly vcpu: Vcpu,
    private readonly dispatcher: ExitDispatcher,
  ) {
    this.runBuffer = runBuffer;
    this.runView = new DataView(runBuffer);
    this.mmioViews = Array.from({ length: 9 }, (_, len) => new Uint8Array(runBuffer, O.mmio_data, len));
  }

  get hasThread(): boolean {
    return this.state !== 'created' && this.state !== 'stopped' && this.state !== 'closed';
  }

  /** Not inside KVM_RUN and not about to enter it. */
  get quiescent(): boolean {
    return !this.hasThread || this.state === 'paused' || this.state === 'event';
  }

  /** Handles one post; true when the JS thread should complete it right away. */
  onPost(kind: number): boolean {
    // A stopping vCPU only has to reach the top of its loop: release any
    // post (an exit already on its way when stop was requested) unseen.
    if (this.state === 'stopping' && kind !== POST_ENDED) return true;
    switch (kind) {
      case POST_EXIT:
        return this.onExit();
      case POST_EVENT:
        this.park(decodeEvent(this.runView));
        return false;
      case POST_RUN_ERROR:
        this.park({
          kind: 'run-error',
          error: systemErrorFromErrno('KVM_RUN', 'ioctl', kvmNative.vcpuRunErrno(this.handle)),
        });
        return false;
      case POST_PAUSED:
        this.onPaused();
        return false;
      case POST_ENDED:
        this.onEnded();
        return false;
      default:
        return false;
    }
  }

  private ioData(offset: number, size: number): Uint8Array {
    if (offset !== this.ioOffset) {
      // data_offset is the same page for every exit in practice: cache views per size.
      this.ioOffset = offset;
      this.ioViews = Array.from({ length: 5 }, (_, n) => new Uint8Array(this.runBuffer, offset, n));
    }
    return this.ioViews[size] ?? new Uint8Array(this.runBuffer, offset, size);
  }

  private onExit(): boolean {
    const handlers = this.handlers;
    if (handlers === undefined) return true;
    const run = this.runView;
    this.state = 'exit';
    let result: void | PromiseLike<void>;
    try {
      if (run.getUint32(O.exit_reason, true) === KVM_EXIT_IO) {
        const isWrite = run.getUint8(O.io_direction) === KVM_EXIT_IO_OUT;
        const size = run.getUint8(O.io_size);
        const port = run.getUint16(O.io_port, true);
        const count = run.getUint32(O.io_count, true);
        // data_offset is a __u64 offset into the mmap'd area; it is small.
        const offset = run.getUint32(O.io_data_offset, true);
        if (offset + size * count > this.runBuffer.byteLength) {
          throw new RangeError(`KVM_EXIT_IO data at ${offset} (+${size}x${count}) lies outside kvm_run`);
        }
        result =
          count === 1
            ? handlers.pio(port, size, isWrite, this.ioData(offset, size), this.vcpu)
            : this.stringIo(handlers, port, size, isWrite, offset, count);
      } else {
        const lo = run.getUint32(O.mmio_phys_addr, true);
        const hi = run.getUint32(O.mmio_phys_addr + 4, true);
        const len = Math.min(run.getUint32(O.mmio_len, true), 8);
        const isWrite = run.getUint8(O.mmio_is_write) !== 0;
        result = handlers.mmio(hi * 0x1_0000_0000 + lo, len, isWrite, this.mmioViews[len] ?? new Uint8Array(0), this.vcpu);
      }
    } catch (err) {
      this.park({ kind: 'handler-error', error: err });
      return false;
    }
    if (!isPromiseLike(result)) {
      this.finishExit();
      return true;
    }
    const seq = kvmNative.vcpuPostSeq(this.handle);
    result.then(
      () => {
        if (this.state !== 'exit') return; // stopped or closed meanwhile
        kvmNative.vcpuComplete(this.handle, seq);
        this.finishExit();
      },
      (err: unknown) => {
        if (this.state === 'exit') this.park({ kind: 'handler-error', error: err });
      },
    );
    return false;
  }

  /** String I/O (INS/OUTS with REP): one handler call per element, in order. */
  private stringIo(
    handlers: ExitHandlers,
    port: number,
    size: number,
    isWrite: boolean,
    offset: number,
    count: number,
  ): void | PromiseLike<void> {
    for (let i = 0; i < count; i++) {
      const data = new Uint8Array(this.runBuffer, offset + i * size, size);
      const r = handlers.pio(port, size, isWrite, data, this.vcpu);
      if (isPromiseLike(r)) {
        // Finish the remaining elements after this one settles.
        const rest = async (): Promise<void> => {
          await r;
          for (let j = i + 1; j < count; j++) {
            await handlers.pio(port, size, isWrite, new Uint8Array(this.runBuffer, offset + j * size, size), this.vcpu);
          }
        };
        return rest();
      }
    }
  }

  /** The handler is done; a stop or close it requested keeps its state. */
  private finishExit(): void {
    if (this.state === 'exit') this.state = this.pauseRequested ? 'pausing' : 'running';
  }

  /** The vCPU thread waits for resume() or stop. */
  private park(event: VcpuEvent): void {
    this.state = 'event';
    this.dispatcher.checkPaused();
    const handlers = this.handlers;
    if (handlers === undefined) return;
    try {
      handlers.event(this.vcpu, event);
    } catch (err) {
      rethrowLater(err);
    }
  }

  /** vcpu.resume(): complete the parked post and re-enter KVM_RUN. */
  resumeFromEvent(): void {
    if (this.state !== 'event') {
      throw new KvmStateError('ERR_KVM_VCPU_STATE', `vCPU ${this.vcpu.id} is ${this.state}, not parked on an event`);
    }
    kvmNative.vcpuComplete(this.handle, -1);
    this.state = this.pauseRequested ? 'pausing' : 'running';
  }

  private onPaused(): void {
    if (!this.pauseRequested) {
      // resumeVcpus() ran before this acknowledgement arrived.
      kvmNative.vcpuResume(this.handle);
      this.state = 'running';
      return;
    }
    this.state = 'paused';
    this.dispatcher.checkPaused();
  }

  private onEnded(): void {
    kvmNative.vcpuJoin(this.handle);
    if (this.state !== 'closed') this.state = 'stopped';
    this.handlers = undefined;
    this.pauseRequested = false;
    this.dispatcher.threadEnded();
  }
}

interface Waiter {
  resolve: () => void;
}

/** Drains one VM's posts on the JS thread and coordinates start/pause/resume/stop. */
export class ExitDispatcher {
  private opts: RunOptions;
  private readonly runners = new Map<number, VcpuRunner>();
  private liveThreads = 0;
  private closed = false;
  private pauseWaiters: Waiter[] = [];
  private stopWaiters: Waiter[] = [];

  constructor(
    private readonly vm: VmHandle,
    options: Partial<RunOptions> = {},
  ) {
    this.opts = { ...DEFAULT_RUN_OPTIONS };
    this.configure(options);
  }

  get options(): Readonly<RunOptions> {
    return this.opts;
  }

  /** Poll bounds apply at once; vCPU spin bounds when a vCPU is next started. */
  configure(options: Partial<RunOptions>): void {
    this.opts = { ...this.opts, ...options };
    kvmNative.vmSetPollBudget(this.vm, this.opts.pollMinNs, this.opts.pollMaxNs);
  }

  add(runner: VcpuRunner): void {
    this.runners.set(runner.index, runner);
  }

  remove(runner: VcpuRunner): void {
    this.runners.delete(runner.index);
  }

  start(runners: readonly VcpuRunner[], handlers: ExitHandlers): void {
    for (const r of runners) {
      if (r.state === 'closed') throw new KvmStateError('ERR_KVM_CLOSED', `vCPU ${r.vcpu.id} is closed`);
      if (r.hasThread) throw new KvmStateError('ERR_KVM_VCPU_RUNNING', `vCPU ${r.vcpu.id} is already started`);
    }
    if (runners.length === 0) return;
    if (this.liveThreads === 0) kvmNative.vmWakeStart(this.vm, this.onWake);
    for (const r of runners) {
      r.handlers = handlers;
      r.pauseRequested = false;
      kvmNative.vcpuStart(r.handle, this.opts.vcpuSpinMinNs, this.opts.vcpuSpinMaxNs);
      r.state = 'running';
      this.liveThreads++;
    }
  }

  pause(): Promise<void> {
    for (const r of this.runners.values()) {
      if (!r.hasThread || r.state === 'stopping') continue;
      r.pauseRequested = true;
      kvmNative.vcpuRequestPause(r.handle);
      if (r.state === 'running') r.state = 'pausing';
    }
    const done = new Promise<void>((resolve) => this.pauseWaiters.push({ resolve }));
    this.checkPaused();
    return done;
  }

  resume(): void {
    if (this.pauseWaiters.length > 0) {
      throw new KvmStateError('ERR_KVM_VCPU_STATE', 'a pause is still in progress; await pauseVcpus() first');
    }
    for (const r of this.runners.values()) {
      if (!r.pauseRequested) continue;
      r.pauseRequested = false;
      kvmNative.vcpuResume(r.handle);
      if (r.state === 'paused' || r.state === 'pausing') r.state = 'running';
    }
  }

  stop(): Promise<void> {
    for (const r of this.runners.values()) {
      if (!r.hasThread) continue;
      kvmNative.vcpuRequestStop(r.handle);
      r.state = 'stopping';
    }
    return this.whenStopped();
  }

  whenStopped(): Promise<void> {
    if (this.liveThreads === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.stopWaiters.push({ resolve }));
  }

  /** Resolves pending pauses once every vCPU is out of KVM_RUN. */
  checkPaused(): void {
    if (this.pauseWaiters.length === 0) return;
    for (const r of this.runners.values()) if (!r.quiescent) return;
    const waiters = this.pauseWaiters;
    this.pauseWaiters = [];
    for (const w of waiters) w.resolve();
  }

  threadEnded(): void {
    this.liveThreads--;
    if (this.liveThreads > 0) {
      this.checkPaused();
      return;
    }
    // No thread left to call it: release the wake function so an idle VM
    // does not keep the process alive.
    if (!this.closed) kvmNative.vmWakeStop(this.vm);
    this.checkPaused();
    const waiters = this.stopWaiters;
    this.stopWaiters = [];
    for (const w of waiters) w.resolve();
  }

  /** The VM is being closed: threads were stopped and joined natively. */
  markClosed(): void {
    this.closed = true;
    for (const r of this.runners.values()) {
      r.state = 'closed';
      r.handlers = undefined;
    }
    this.liveThreads = 0;
    const waiters = [...this.pauseWaiters, ...this.stopWaiters];
    this.pauseWaiters = [];
    this.stopWaiters = [];
    for (const w of waiters) w.resolve();
  }

  private readonly onWake = (): void => {
    if (this.closed) return;
    this.drain(kvmNative.vmDrainBegin(this.vm));
  };

  private drain(first: number): void {
    const deadline = performance.now() + this.opts.sliceMs;
    let token = first;
    let handled = 0;
    while (token >= 0) {
      const index = token >> 4;
      const runner = this.runners.get(index);
      const completeNow = runner !== undefined && runner.onPost(token & 15);
      if (this.closed) return; // a handler closed the VM
      if ((++handled & 15) === 0 && performance.now() >= deadline) {
        if (completeNow && runner !== undefined) kvmNative.vcpuComplete(runner.handle, -1);
        // Still marked draining natively, so vCPUs do not wake us: come back ourselves.
        setImmediate(() => {
          if (!this.closed) this.drain(kvmNative.vmPoll(this.vm));
        });
        return;
      }
      token = completeNow ? kvmNative.vmCompleteAndPoll(this.vm, index) : kvmNative.vmPoll(this.vm);
    }
  }
}
