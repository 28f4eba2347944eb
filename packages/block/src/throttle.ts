/**
 * The `throttle` filter: a BlockDevice that delays I/O to another one with
 * QEMU's semantics (qemu docs/throttle.txt; util/throttle.c,
 * block/throttle-groups.c, block/throttle.c).
 *
 * - Every throttled drive is a member of a {@link ThrottleGroup}; a drive that
 *   names no group gets a private one. Members of a group share one set of
 *   leaky buckets, so their combined I/O obeys the limits.
 * - Within a group requests are served round-robin between members, one timer
 *   per direction armed at a time (QEMU's tokens / any_timer_armed), so a busy
 *   drive cannot starve a quiet one.
 * - Reads fill the read buckets; writes, write-zeroes and discards fill the
 *   write buckets with their length (as QEMU's throttle filter does); flush is
 *   not throttled.
 * - Limits change at run time with {@link ThrottleGroup.setLimits}; as in
 *   QEMU the bucket levels restart from empty and waiting requests are
 *   re-evaluated at once.
 *
 * Throttling runs on the thread that owns the drive. A device whose queues run
 * on an iothread bypasses this filter, so {@link assertThrottlable} refuses it.
 */
import type {
  BlockDevice,
  BlockStatusExtent,
  CheckResult,
  ImageInfo,
  WriteOptions,
  WriteZeroesOptions,
} from './driver.js';
import {
  parseThrottleOptions,
  type ThrottleLimits,
  unlimitedThrottle,
  validateThrottleLimits,
} from './throttle-config.js';
import { type IoDirection, ThrottleState } from './throttle-state.js';

export * from './throttle-config.js';
export { ThrottleState, type IoDirection } from './throttle-state.js';

/** Time source and timers, injectable so tests run on a fake clock. */
export interface ThrottleClock {
  /** monotonic nanoseconds */
  now(): number;
  /** runs `cb` once `now()` >= deadlineNs; returns a cancel function */
  setTimer(deadlineNs: number, cb: () => void): () => void;
}

/** The real clock: process.hrtime and setTimeout (rounded up, never early). */
export const hostThrottleClock: ThrottleClock = {
  now: () => Number(process.hrtime.bigint()),
  setTimer(deadlineNs, cb) {
    const delayMs = Math.max(0, Math.ceil((deadlineNs - this.now()) / 1e6));
    const t = setTimeout(cb, delayMs);
    return () => clearTimeout(t);
  },
};

export class ThrottleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ThrottleError';
  }
}

/**
 * Refuses throttling a drive whose device processes its queues on an
 * iothread: that data plane never passes through the main thread's filter, so
 * limits would silently not apply. The device layer calls this before
 * attaching a throttled drive.
 */
export function assertThrottlable(device: { iothread?: string; id?: string; drive?: string }): void {
  if (device.iothread !== undefined && device.iothread !== '') {
    const who = device.id !== undefined ? `device '${device.id}'` : 'the device';
    const drive = device.drive !== undefined ? ` (drive '${device.drive}')` : '';
    throw new ThrottleError(
      `cannot throttle ${who}${drive}: it runs its data plane on iothread '${device.iothread}', ` +
        'and the data plane cannot be throttled; remove the iothread from the device or the throttle limits from the drive',
    );
  }
}

const DIRS: readonly IoDirection[] = ['read', 'write'];

/** One drive's place in a group: its queue of waiting requests per direction. */
class GroupMember {
  readonly queues: Record<IoDirection, Array<() => void>> = { read: [], write: [] };
  /** requests of this member waiting or just woken (QEMU's pending_reqs) */
  readonly pending: Record<IoDirection, number> = { read: 0, write: 0 };
  readonly cancelTimer: Record<IoDirection, (() => void) | undefined> = { read: undefined, write: undefined };
  /** set while draining/closing: requests pass without waiting */
  limitsDisabled = false;
  constructor(readonly name: string) {}
}

/** A named set of limits shared by its member drives. */
export class ThrottleGroup {
  private readonly state: ThrottleState;
  private limits: ThrottleLimits;
  private readonly members: GroupMember[] = [];
  /** whose turn it is per direction (round robin) */
  private readonly token: Record<IoDirection, GroupMember | undefined> = { read: undefined, write: undefined };
  private readonly anyTimerArmed: Record<IoDirection, boolean> = { read: false, write: false };

  constructor(
    readonly name: string,
    limits: ThrottleLimits = unlimitedThrottle(),
    readonly clock: ThrottleClock = hostThrottleClock,
  ) {
    this.limits = limits;
    this.state = new ThrottleState(limits, () => clock.now());
  }

  getLimits(): ThrottleLimits {
    return structuredClone(this.limits);
  }

  /** Bucket levels (for tests and introspection). */
  levels(): ReturnType<ThrottleState['levels']> {
    return this.state.levels();
  }

  /**
   * Replaces the limits (already validated, or options to validate). Levels
   * restart from empty, as QEMU's throttle_config() does, and every member's
   * waiting requests are re-evaluated against the new limits.
   */
  setLimits(limits: ThrottleLimits | Record<string, number | string | undefined>): void {
    let parsed: ThrottleLimits;
    if (isLimits(limits)) {
      parsed = structuredClone(limits);
      validateThrottleLimits(parsed);
    } else {
      parsed = parseThrottleOptions(limits);
    }
    this.limits = parsed;
    this.state.configure(parsed);
    for (const m of this.members) this.restartMember(m);
  }

  /** @internal */
  join(memberName: string): GroupMember {
    const m = new GroupMember(memberName);
    this.members.push(m);
    this.token.read ??= m;
    this.token.write ??= m;
    return m;
  }

  /** @internal */
  leave(m: GroupMember): void {
    for (const dir of DIRS) {
      if (m.cancelTimer[dir] !== undefined) {
        m.cancelTimer[dir]?.();
        m.cancelTimer[dir] = undefined;
        this.anyTimerArmed[dir] = false;
      }
    }
    const i = this.members.indexOf(m);
    if (i >= 0) this.members.splice(i, 1);
    for (const dir of DIRS) {
      if (this.token[dir] === m) this.token[dir] = this.members[0];
      // Another member may have been waiting behind our timer.
      if (!this.anyTimerArmed[dir] && this.members.length > 0) {
        const first = this.members[0];
        if (first !== undefined) this.scheduleNextRequest(first, dir);
      }
    }
  }

  get memberCount(): number {
    return this.members.length;
  }

  /**
   * throttle_group_co_io_limits_intercept(): resolves when the I/O may run,
   * having charged it to the buckets.
   */
  async intercept(m: GroupMember, dir: IoDirection, bytes: number): Promise<void> {
    const mustWait = this.scheduleTimer(m, dir);
    // Wait if a timer is set or requests of this member are already queued
    // (keeps each member's requests in order).
    if (mustWait || m.pending[dir] > 0) {
      m.pending[dir]++;
      await new Promise<void>((resolve) => m.queues[dir].push(resolve));
      m.pending[dir]--;
    }
    this.state.account(dir, bytes);
    this.scheduleNextRequest(m, dir);
  }

  /** throttle_group_schedule_timer(): true if `m` must wait (a timer is or got armed). */
  private scheduleTimer(m: GroupMember, dir: IoDirection): boolean {
    if (m.limitsDisabled) return false;
    if (this.anyTimerArmed[dir]) return true;
    const now = this.clock.now();
    const wait = this.state.computeWait(dir, now);
    if (wait <= 0) return false;
    this.armTimer(m, dir, now + wait);
    this.token[dir] = m;
    return true;
  }

  private armTimer(m: GroupMember, dir: IoDirection, deadline: number): void {
    this.anyTimerArmed[dir] = true;
    m.cancelTimer[dir] = this.clock.setTimer(deadline, () => {
      m.cancelTimer[dir] = undefined;
      this.timerFired(m, dir);
    });
  }

  /** timer_cb(): let the waiting request of `m` run, or pick the next member. */
  private timerFired(m: GroupMember, dir: IoDirection): void {
    this.anyTimerArmed[dir] = false;
    if (!this.restartQueue(m, dir)) this.scheduleNextRequest(m, dir);
  }

  /** Wakes the oldest waiting request of `m`; false if it has none. */
  private restartQueue(m: GroupMember, dir: IoDirection): boolean {
    const next = m.queues[dir].shift();
    if (next === undefined) return false;
    next();
    return true;
  }

  /** next_throttle_token(): the next member in round-robin order with waiting requests. */
  private nextToken(m: GroupMember, dir: IoDirection): GroupMember {
    if (m.pending[dir] > 0 && m.limitsDisabled) return m;
    const start = this.token[dir] ?? m;
    let i = this.members.indexOf(start);
    if (i < 0) return m;
    for (let n = 0; n < this.members.length; n++) {
      i = (i + 1) % this.members.length;
      const cand = this.members[i];
      if (cand !== undefined && cand.queues[dir].length > 0) return cand;
    }
    return m;
  }

  /** schedule_next_request(): after an I/O was admitted, arrange for the next one. */
  private scheduleNextRequest(m: GroupMember, dir: IoDirection): void {
    let token = this.nextToken(m, dir);
    if (!this.anyTimerArmed[dir]) {
      const mustWait = this.scheduleTimer(token, dir);
      if (!mustWait) {
        // Give preference to the current member's queue, as QEMU does.
        if (this.restartQueue(m, dir)) {
          token = m;
        } else if (token.queues[dir].length > 0) {
          // Run the other member's request from a fresh turn of the event loop.
          this.armTimer(token, dir, this.clock.now());
        }
      }
      this.token[dir] = token;
    }
  }

  /** throttle_group_restart_tgm(): fire a pending timer now, or wake the next request. */
  private restartMember(m: GroupMember): void {
    for (const dir of DIRS) {
      const cancel = m.cancelTimer[dir];
      if (cancel !== undefined) {
        cancel();
        m.cancelTimer[dir] = undefined;
        this.timerFired(m, dir);
      } else if (!this.restartQueue(m, dir)) {
        this.scheduleNextRequest(m, dir);
      }
    }
  }

  /** @internal used by close: let every waiting request of `m` through. */
  drain(m: GroupMember): void {
    m.limitsDisabled = true;
    for (const dir of DIRS) {
      while (this.restartQueue(m, dir)) {
        /* wake all */
      }
    }
  }
}

function isLimits(x: unknown): x is ThrottleLimits {
  return typeof x === 'object' && x !== null && 'buckets' in x && 'iopsSize' in x;
}

/** Named groups shared between drives (QEMU's global throttle group list). */
export class ThrottleGroupRegistry {
  private readonly groups = new Map<string, ThrottleGroup>();
  constructor(private readonly clock: ThrottleClock = hostThrottleClock) {}

  /**
   * The group called `name`, created with `limits` if new. If it exists and
   * `limits` is given, the group's limits are replaced (the last drive
   * configured wins, as in QEMU).
   */
  get(name: string, limits?: ThrottleLimits): ThrottleGroup {
    let g = this.groups.get(name);
    if (g === undefined) {
      g = new ThrottleGroup(name, limits ?? unlimitedThrottle(), this.clock);
      this.groups.set(name, g);
    } else if (limits !== undefined) {
      g.setLimits(limits);
    }
    return g;
  }

  find(name: string): ThrottleGroup | undefined {
    return this.groups.get(name);
  }

  names(): string[] {
    return [...this.groups.keys()];
  }

  /** @internal drops a group once its last member left */
  release(g: ThrottleGroup): void {
    if (g.memberCount === 0 && this.groups.get(g.name) === g) this.groups.delete(g.name);
  }
}

let privateGroupCounter = 0;

/** The process-wide registry drives use unless given another. */
export const throttleGroups = new ThrottleGroupRegistry();

export interface ThrottleOpenOptions {
  /** group name; a private group named after the drive if omitted */
  group?: string;
  /** limits for the (new or existing) group; omitted = keep the group's limits */
  limits?: ThrottleLimits;
  /** name used in errors and as the private group's name */
  name?: string;
  registry?: ThrottleGroupRegistry;
}

/** A BlockDevice whose I/O obeys a throttle group's limits. */
export class ThrottledBlockDevice implements BlockDevice {
  readonly format = 'throttle';
  readonly group: ThrottleGroup;
  private readonly member: GroupMember;
  private readonly registry: ThrottleGroupRegistry;
  private closed = false;

  constructor(
    readonly child: BlockDevice,
    opts: ThrottleOpenOptions = {},
  ) {
    this.registry = opts.registry ?? throttleGroups;
    const memberName = opts.name ?? child.filename;
    const groupName = opts.group ?? `throttle-private:${memberName}#${++privateGroupCounter}`;
    this.group = this.registry.get(groupName, opts.limits);
    this.member = this.group.join(memberName);
  }

  get filename(): string {
    return this.child.filename;
  }
  get readOnly(): boolean {
    return this.child.readOnly;
  }
  get size(): number {
    return this.child.size;
  }
  get alignment(): number {
    return this.child.alignment;
  }

  /** Changes this drive's group limits at run time (the RPC method will call this). */
  setLimits(limits: ThrottleLimits | Record<string, number | string | undefined>): void {
    this.group.setLimits(limits);
  }

  getLimits(): ThrottleLimits {
    return this.group.getLimits();
  }

  private async admit(dir: IoDirection, bytes: number): Promise<void> {
    if (this.closed) throw new ThrottleError(`throttled drive '${this.filename}' is closed`);
    await this.group.intercept(this.member, dir, bytes);
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    await this.admit('read', buf.length);
    return this.child.read(offset, buf);
  }
  async write(offset: number, buf: Uint8Array, opts?: WriteOptions): Promise<void> {
    await this.admit('write', buf.length);
    return this.child.write(offset, buf, opts);
  }
  flush(): Promise<void> {
    return this.child.flush();
  }
  async discard(offset: number, length: number): Promise<void> {
    await this.admit('write', length);
    return this.child.discard(offset, length);
  }
  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    await this.admit('write', length);
    return this.child.writeZeroes(offset, length, opts);
  }
  blockStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    return this.child.blockStatus(offset, length);
  }
  info(): Promise<ImageInfo> {
    return this.child.info();
  }
  resize(newSize: number): Promise<void> {
    return this.child.resize(newSize);
  }
  async check(opts: { repair?: 'leaks' | 'all' }): Promise<CheckResult> {
    if (this.child.check === undefined) {
      throw new ThrottleError(`format '${this.child.format}' of '${this.filename}' does not support check`);
    }
    return this.child.check(opts);
  }
  /** Lets waiting requests through, leaves the group, closes the child. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.group.drain(this.member);
    this.group.leave(this.member);
    this.registry.release(this.group);
    await this.child.close();
  }
}
