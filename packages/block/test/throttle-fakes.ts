/**
 * Test doubles for the throttle filter: a fake clock whose timers fire only
 * when the test advances time, and an in-memory BlockDevice that records when
 * each request reached it.
 */
import type { BlockDevice, BlockStatusExtent, ImageInfo } from '../src/driver.js';
import type { ThrottleClock } from '../src/throttle.js';

interface FakeTimer {
  deadline: number;
  seq: number;
  cb: () => void;
}

/** Lets every pending promise continuation run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
}

export class FakeClock implements ThrottleClock {
  private t = 0;
  private seq = 0;
  private timers: FakeTimer[] = [];

  now(): number {
    return this.t;
  }

  setTimer(deadlineNs: number, cb: () => void): () => void {
    const timer: FakeTimer = { deadline: deadlineNs, seq: this.seq++, cb };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((x) => x !== timer);
    };
  }

  get pendingTimers(): number {
    return this.timers.length;
  }

  /** Moves time forward to `target` ns, firing due timers in order and settling after each. */
  async advanceTo(target: number): Promise<void> {
    await settle();
    for (;;) {
      this.timers.sort((a, b) => a.deadline - b.deadline || a.seq - b.seq);
      const next = this.timers[0];
      if (next === undefined || next.deadline > target) break;
      this.timers.shift();
      this.t = Math.max(this.t, next.deadline);
      next.cb();
      await settle();
    }
    this.t = Math.max(this.t, target);
    await settle();
  }

  async advance(ns: number): Promise<void> {
    await this.advanceTo(this.t + ns);
  }
}

/** A zero-filled in-memory disk that logs the clock time of each request. */
export class RecordingDevice implements BlockDevice {
  readonly format = 'memory';
  readonly readOnly = false;
  readonly alignment = 1;
  readonly log: Array<{ op: string; offset: number; length: number; at: number }> = [];
  private readonly data: Uint8Array;
  closed = false;

  constructor(
    readonly filename: string,
    readonly size: number,
    private readonly clock: { now(): number },
  ) {
    this.data = new Uint8Array(size);
  }

  private note(op: string, offset: number, length: number): void {
    this.log.push({ op, offset, length, at: this.clock.now() });
  }
  async read(offset: number, buf: Uint8Array): Promise<void> {
    this.note('read', offset, buf.length);
    buf.set(this.data.subarray(offset, offset + buf.length));
  }
  async write(offset: number, buf: Uint8Array): Promise<void> {
    this.note('write', offset, buf.length);
    this.data.set(buf, offset);
  }
  async flush(): Promise<void> {
    this.note('flush', 0, 0);
  }
  async discard(offset: number, length: number): Promise<void> {
    this.note('discard', offset, length);
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    this.note('write-zeroes', offset, length);
    this.data.fill(0, offset, offset + length);
  }
  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    return { offset, length, data: true, zero: false, allocated: true, depth: 0 };
  }
  async info(): Promise<ImageInfo> {
    return { filename: this.filename, format: this.format, 'virtual-size': this.size };
  }
  async resize(): Promise<void> {
    throw new Error('not resizable');
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}
