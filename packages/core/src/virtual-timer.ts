/**
 * Timers on the VM's run-time clock (VirtualClock.nowNs): a device arms one
 * for a deadline in guest time, and the callback runs on the main thread once
 * that much run time has passed. While the VM is paused (or not yet started,
 * or stopped for a migration) guest time stands still and no timer fires;
 * when it runs again the armed timers are scheduled anew.
 *
 * Host timers have millisecond resolution here (setTimeout), so a deadline
 * is met at the earliest moment the host allows, never early: devices with
 * faster events (the RTC's periodic interrupt at up to 8192 Hz) count what
 * happened since the last callback, as hardware whose interrupt is not
 * serviced coalesces events.
 */

export interface VirtualTimer {
  /** Calls the callback once run time reaches `deadlineNs` (replaces an earlier deadline). */
  arm(deadlineNs: bigint): void;
  /** Forgets the deadline. */
  cancel(): void;
  /** the armed deadline, if any */
  readonly deadlineNs: bigint | undefined;
}

interface TimerEntry {
  deadline: bigint | undefined;
  handle: NodeJS.Timeout | undefined;
  readonly callback: () => void;
}

/** The timers of one machine, scheduled on the host while the machine's clock runs. */
export class VirtualTimerSet {
  private readonly timers = new Set<TimerEntry>();
  private running = false;

  constructor(private readonly nowNs: () => bigint) {}

  create(callback: () => void): VirtualTimer {
    const entry: TimerEntry = { deadline: undefined, handle: undefined, callback };
    this.timers.add(entry);
    const set = this;
    return {
      arm(deadlineNs: bigint): void {
        entry.deadline = deadlineNs;
        set.schedule(entry);
      },
      cancel(): void {
        entry.deadline = undefined;
        set.unschedule(entry);
      },
      get deadlineNs(): bigint | undefined {
        return entry.deadline;
      },
    };
  }

  /** Guest time stopped: no timer fires until resume(). */
  pause(): void {
    this.running = false;
    for (const t of this.timers) this.unschedule(t);
  }

  /** Guest time runs: every armed timer is scheduled (one already due fires at once). */
  resume(): void {
    this.running = true;
    for (const t of this.timers) this.schedule(t);
  }

  /** The machine is gone: cancel everything. */
  close(): void {
    this.pause();
    this.timers.clear();
  }

  private unschedule(t: TimerEntry): void {
    if (t.handle !== undefined) clearTimeout(t.handle);
    t.handle = undefined;
  }

  private schedule(t: TimerEntry): void {
    this.unschedule(t);
    if (!this.running || t.deadline === undefined) return;
    const left = t.deadline - this.nowNs();
    const ms = left <= 0n ? 0 : Math.ceil(Number(left) / 1e6);
    t.handle = setTimeout(() => this.fire(t), ms);
    // a timer alone does not keep the process alive: the VM's own handles do
    t.handle.unref();
  }

  private fire(t: TimerEntry): void {
    t.handle = undefined;
    if (!this.running || t.deadline === undefined) return;
    if (this.nowNs() < t.deadline) {
      // the host woke us early (clock granularity): wait for the rest
      this.schedule(t);
      return;
    }
    t.deadline = undefined;
    t.callback();
  }
}
