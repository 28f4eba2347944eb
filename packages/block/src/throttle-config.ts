/**
 * Throttle limits: the option names, parsing and validation rules of QEMU's
 * I/O throttling (qemu docs/throttle.txt; util/throttle.c throttle_is_valid()).
 *
 * Six leaky buckets — bytes and operations, each total/read/write — each with
 * an average rate (`bps-total`), an optional burst rate (`bps-total-max`) and
 * the burst duration in seconds (`bps-total-max-length`, default 1), plus
 * `iops-size`, the request size that counts as one operation.
 */

export const THROTTLE_BUCKETS = [
  'bps-total',
  'bps-read',
  'bps-write',
  'iops-total',
  'iops-read',
  'iops-write',
] as const;
export type ThrottleBucketName = (typeof THROTTLE_BUCKETS)[number];

/** One bucket's user-visible settings (QEMU's LeakyBucket minus its state). */
export interface BucketLimit {
  /** average rate in units per second; 0 = unlimited */
  avg: number;
  /** burst rate in units per second; 0 = no burst beyond avg/10 */
  max: number;
  /** seconds the burst rate may be sustained (QEMU's burst_length), >= 1 */
  maxLength: number;
}

export interface ThrottleLimits {
  buckets: Record<ThrottleBucketName, BucketLimit>;
  /** bytes counted as one operation for iops limits; 0 = every request is one op */
  iopsSize: number;
}

/** QEMU's THROTTLE_VALUE_MAX: no rate or burst may exceed 10^15. */
export const THROTTLE_VALUE_MAX = 1e15;

export class ThrottleConfigError extends Error {
  /** the option at fault, QEMU spelling (e.g. `bps-total-max`) */
  readonly option: string;
  constructor(option: string, message: string) {
    super(`throttle option '${option}': ${message}`);
    this.name = 'ThrottleConfigError';
    this.option = option;
  }
}

export function unlimitedThrottle(): ThrottleLimits {
  const buckets = {} as Record<ThrottleBucketName, BucketLimit>;
  for (const b of THROTTLE_BUCKETS) buckets[b] = { avg: 0, max: 0, maxLength: 1 };
  return { buckets, iopsSize: 0 };
}

/** A partial, user-supplied set of limits: keys as QEMU spells them. */
export type ThrottleOptions = Partial<Record<ThrottleOptionName, number | string>>;
export type ThrottleOptionName =
  | ThrottleBucketName
  | `${ThrottleBucketName}-max`
  | `${ThrottleBucketName}-max-length`
  | 'iops-size';

const OPTION_NAMES: ReadonlySet<string> = new Set<string>([
  ...THROTTLE_BUCKETS,
  ...THROTTLE_BUCKETS.map((b) => `${b}-max`),
  ...THROTTLE_BUCKETS.map((b) => `${b}-max-length`),
  'iops-size',
]);

/** True for keys this module understands (with or without QEMU's `throttling.` prefix). */
export function isThrottleOption(key: string): boolean {
  return OPTION_NAMES.has(stripPrefix(key));
}

function stripPrefix(key: string): string {
  return key.startsWith('throttling.') ? key.slice('throttling.'.length) : key;
}

function parseValue(option: string, raw: number | string): number {
  const n = typeof raw === 'number' ? raw : raw.trim() === '' ? NaN : Number(raw);
  if (!Number.isFinite(n)) {
    throw new ThrottleConfigError(option, `'${String(raw)}' is not a number`);
  }
  if (n < 0) {
    throw new ThrottleConfigError(option, `must not be negative (got ${n})`);
  }
  if (!Number.isInteger(n)) {
    throw new ThrottleConfigError(option, `must be an integer (got ${n})`);
  }
  return n;
}

/**
 * Builds limits from option key/values (`bps-read=1048576`, `throttling.iops-total-max=200`...)
 * on top of `base` (default: unlimited) and validates the result. Unknown keys
 * are an error so a typo never silently disables a limit.
 */
export function parseThrottleOptions(
  options: Record<string, number | string | undefined>,
  base: ThrottleLimits = unlimitedThrottle(),
): ThrottleLimits {
  const limits: ThrottleLimits = {
    buckets: structuredClone(base.buckets),
    iopsSize: base.iopsSize,
  };
  for (const [rawKey, raw] of Object.entries(options)) {
    if (raw === undefined) continue;
    const key = stripPrefix(rawKey);
    if (!OPTION_NAMES.has(key)) {
      throw new ThrottleConfigError(rawKey, `unknown throttle option (known: ${[...OPTION_NAMES].join(', ')})`);
    }
    const value = parseValue(key, raw);
    if (key === 'iops-size') {
      limits.iopsSize = value;
      continue;
    }
    const m = /^(bps|iops)-(total|read|write)(-max)?(-length)?$/.exec(key);
    if (m === null) throw new ThrottleConfigError(key, 'unknown throttle option');
    const bucket = limits.buckets[`${m[1]}-${m[2]}` as ThrottleBucketName];
    if (m[4] !== undefined) bucket.maxLength = value;
    else if (m[3] !== undefined) bucket.max = value;
    else bucket.avg = value;
  }
  validateThrottleLimits(limits);
  return limits;
}

/**
 * QEMU's throttle_is_valid(): the same rules, with the option named in the
 * error so the user knows which setting to change.
 */
export function validateThrottleLimits(limits: ThrottleLimits): void {
  const b = limits.buckets;
  for (const kind of ['bps', 'iops'] as const) {
    const total = b[`${kind}-total`];
    const read = b[`${kind}-read`];
    const write = b[`${kind}-write`];
    if (total.avg > 0 && (read.avg > 0 || write.avg > 0)) {
      throw new ThrottleConfigError(
        `${kind}-total`,
        `cannot be combined with ${kind}-read/${kind}-write; use either the total or the per-direction limits`,
      );
    }
    if (total.max > 0 && (read.max > 0 || write.max > 0)) {
      throw new ThrottleConfigError(
        `${kind}-total-max`,
        `cannot be combined with ${kind}-read-max/${kind}-write-max`,
      );
    }
  }
  if (limits.iopsSize < 0 || !Number.isInteger(limits.iopsSize)) {
    throw new ThrottleConfigError('iops-size', 'must be a non-negative integer');
  }
  if (limits.iopsSize > 0 && b['iops-total'].avg === 0 && b['iops-read'].avg === 0 && b['iops-write'].avg === 0) {
    throw new ThrottleConfigError('iops-size', 'requires an iops limit (iops-total, iops-read or iops-write)');
  }
  for (const name of THROTTLE_BUCKETS) {
    const k = b[name];
    for (const [suffix, v] of [['', k.avg], ['-max', k.max], ['-max-length', k.maxLength]] as const) {
      if (!Number.isFinite(v) || v < 0) {
        throw new ThrottleConfigError(`${name}${suffix}`, `must be a non-negative number (got ${v})`);
      }
    }
    if (k.avg > THROTTLE_VALUE_MAX) {
      throw new ThrottleConfigError(name, `must be within [0, ${THROTTLE_VALUE_MAX}]`);
    }
    if (k.max > THROTTLE_VALUE_MAX) {
      throw new ThrottleConfigError(`${name}-max`, `must be within [0, ${THROTTLE_VALUE_MAX}]`);
    }
    if (!Number.isInteger(k.maxLength) || k.maxLength < 1) {
      throw new ThrottleConfigError(`${name}-max-length`, `must be an integer >= 1 second (got ${k.maxLength})`);
    }
    if (k.maxLength > 1 && k.max === 0) {
      throw new ThrottleConfigError(`${name}-max-length`, `set without ${name}-max (a burst length needs a burst rate)`);
    }
    if (k.max > 0 && k.maxLength > THROTTLE_VALUE_MAX / k.max) {
      throw new ThrottleConfigError(`${name}-max-length`, `too high for burst rate ${name}-max=${k.max}`);
    }
    if (k.max > 0 && k.avg === 0) {
      throw new ThrottleConfigError(`${name}-max`, `requires ${name} to be set (a burst rate needs an average rate)`);
    }
    if (k.max > 0 && k.max < k.avg) {
      throw new ThrottleConfigError(`${name}-max`, `(${k.max}) cannot be lower than ${name} (${k.avg})`);
    }
  }
}

/** Whether any limit is set (QEMU's throttle_enabled()). */
export function throttleEnabled(limits: ThrottleLimits): boolean {
  return THROTTLE_BUCKETS.some((n) => limits.buckets[n].avg > 0);
}

/** Limits back as options, for `info` output and round trips. Only non-default values. */
export function throttleLimitsToOptions(limits: ThrottleLimits): Record<string, number> {
  const out: Record<string, number> = {};
  for (const n of THROTTLE_BUCKETS) {
    const k = limits.buckets[n];
    if (k.avg) out[n] = k.avg;
    if (k.max) out[`${n}-max`] = k.max;
    if (k.maxLength !== 1) out[`${n}-max-length`] = k.maxLength;
  }
  if (limits.iopsSize) out['iops-size'] = limits.iopsSize;
  return out;
}
