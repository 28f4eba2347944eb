/**
 * The leaky-bucket arithmetic of QEMU's I/O throttling (qemu docs/throttle.txt,
 * util/throttle.c: throttle_leak_bucket, throttle_compute_wait, throttle_account).
 *
 * Each bucket has a `level` that grows by the units an I/O uses and drains at
 * `avg` units per second. Without a burst rate the bucket holds avg/10 units
 * before I/O must wait (so short bursts pass); with a burst rate `max` it holds
 * max*burstLength and a second `burstLevel` draining at `max` caps the burst
 * rate itself to max/10 units of slack. An I/O is checked against the levels
 * *before* its own accounting, as QEMU does, so a single request larger than
 * the bucket still runs and the next one waits for it to drain.
 *
 * Time is in nanoseconds from an injected clock: tests drive a fake clock and
 * never depend on wall time.
 */
import { THROTTLE_BUCKETS, type ThrottleBucketName, type ThrottleLimits } from './throttle-config.js';

const NS_PER_SECOND = 1e9;

interface LeakyBucket {
  avg: number;
  max: number;
  burstLength: number;
  level: number;
  burstLevel: number;
}

/** Buckets an I/O of each direction fills (and is checked against). */
const BUCKETS_FOR: Record<'read' | 'write', { bytes: ThrottleBucketName[]; ops: ThrottleBucketName[] }> = {
  read: { bytes: ['bps-total', 'bps-read'], ops: ['iops-total', 'iops-read'] },
  write: { bytes: ['bps-total', 'bps-write'], ops: ['iops-total', 'iops-write'] },
};

export type IoDirection = 'read' | 'write';

export class ThrottleState {
  private buckets = {} as Record<ThrottleBucketName, LeakyBucket>;
  private iopsSize = 0;
  private previousLeak: number;

  constructor(
    limits: ThrottleLimits,
    private readonly now: () => number,
  ) {
    this.previousLeak = now();
    this.configure(limits);
  }

  /** throttle_config(): new limits; levels restart from empty as in QEMU. */
  configure(limits: ThrottleLimits): void {
    for (const n of THROTTLE_BUCKETS) {
      const l = limits.buckets[n];
      this.buckets[n] = { avg: l.avg, max: l.max, burstLength: l.maxLength, level: 0, burstLevel: 0 };
    }
    this.iopsSize = limits.iopsSize;
    this.previousLeak = this.now();
  }

  /** throttle_do_leak(): drain every bucket for the time since the last leak. */
  leak(now: number = this.now()): void {
    const deltaNs = now - this.previousLeak;
    this.previousLeak = now;
    if (deltaNs <= 0) return;
    for (const n of THROTTLE_BUCKETS) {
      const b = this.buckets[n];
      b.level = Math.max(b.level - (b.avg * deltaNs) / NS_PER_SECOND, 0);
      if (b.burstLength > 1) {
        b.burstLevel = Math.max(b.burstLevel - (b.max * deltaNs) / NS_PER_SECOND, 0);
      }
    }
  }

  /** Nanoseconds an I/O in `dir` must wait from now (after leaking); 0 = may run. */
  computeWait(dir: IoDirection, now: number = this.now()): number {
    this.leak(now);
    let wait = 0;
    const set = BUCKETS_FOR[dir];
    for (const n of [...set.bytes, ...set.ops]) {
      wait = Math.max(wait, bucketWait(this.buckets[n]));
    }
    return wait;
  }

  /** throttle_account(): charge an I/O of `bytes` to the direction's buckets. */
  account(dir: IoDirection, bytes: number): void {
    // iops-size: a request larger than it counts as several operations.
    const units = this.iopsSize > 0 && bytes > this.iopsSize ? bytes / this.iopsSize : 1;
    const set = BUCKETS_FOR[dir];
    for (const n of set.bytes) fill(this.buckets[n], bytes);
    for (const n of set.ops) fill(this.buckets[n], units);
  }

  /** Current levels, for tests and `info` (units: bytes or operations). */
  levels(): Record<ThrottleBucketName, { level: number; burstLevel: number }> {
    this.leak();
    const out = {} as Record<ThrottleBucketName, { level: number; burstLevel: number }>;
    for (const n of THROTTLE_BUCKETS) out[n] = { level: this.buckets[n].level, burstLevel: this.buckets[n].burstLevel };
    return out;
  }
}

function fill(b: LeakyBucket, units: number): void {
  b.level += units;
  if (b.burstLength > 1) b.burstLevel += units;
}

/** throttle_compute_wait() for one bucket. */
function bucketWait(b: LeakyBucket): number {
  if (b.avg === 0) return 0;
  let bucketSize: number;
  let burstBucketSize: number;
  if (b.max === 0) {
    // Without a burst rate still allow short bursts, otherwise every other
    // request would be throttled (QEMU's rationale).
    bucketSize = b.avg / 10;
    burstBucketSize = 0;
  } else {
    // All I/O at the burst rate must have drained before throttling to avg.
    bucketSize = b.max * b.burstLength;
    burstBucketSize = b.max / 10;
  }
  let extra = b.level - bucketSize;
  if (extra > 0) return (extra * NS_PER_SECOND) / b.avg;
  if (b.burstLength > 1) {
    extra = b.burstLevel - burstBucketSize;
    if (extra > 0) return (extra * NS_PER_SECOND) / b.max;
  }
  return 0;
}
