/**
 * How the JSON parts of a stream (configuration, device and CPU state) are
 * written: UTF-8 JSON in which a `bigint` becomes {"$bigint": "<decimal>"} and a
 * `Uint8Array` becomes {"$bytes": "<base64>"} — the two kinds of value device
 * and KVM state hold that JSON lacks. Objects whose keys start with `$` are
 * refused when encoding, so the tags are unambiguous.
 *
 * Decoding is of untrusted bytes: malformed UTF-8 or JSON, a malformed tag or
 * nesting deeper than MAX_DEPTH becomes a StateCodecError with a path; the
 * section parser turns it into a stream error with the byte offset.
 */

export class StateCodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'StateCodecError';
  }
}

/** Deeper than any state a device has; a hostile stream cannot exhaust the stack. */
export const MAX_DEPTH = 64;

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

function toJsonable(value: unknown, path: string, depth: number): unknown {
  if (depth > MAX_DEPTH) throw new StateCodecError(`${path}: nested deeper than ${MAX_DEPTH} levels`);
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new StateCodecError(`${path}: ${value} has no JSON form`);
    return value;
  }
  if (typeof value === 'bigint') return { $bigint: value.toString() };
  if (value instanceof Uint8Array) return { $bytes: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  if (Array.isArray(value)) return value.map((v, i) => toJsonable(v, `${path}[${i}]`, depth + 1));
  if (typeof value === 'object') {
    const proto: unknown = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      throw new StateCodecError(`${path}: a ${(value as object).constructor?.name ?? 'class instance'} is not plain data (use objects, arrays, numbers, strings, booleans, null, bigint, Uint8Array)`);
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      if (k.startsWith('$')) throw new StateCodecError(`${path}.${k}: keys starting with '$' are reserved for the stream's tags`);
      if (v === undefined) continue;
      out[k] = toJsonable(v, `${path}.${k}`, depth + 1);
    }
    return out;
  }
  throw new StateCodecError(`${path}: a ${typeof value} is not plain data`);
}

/** Encode plain data (JSON values, bigint, Uint8Array) as UTF-8 JSON bytes. */
export function encodeState(value: unknown, what = 'state'): Uint8Array {
  return utf8.encode(JSON.stringify(toJsonable(value, what, 0)));
}

function fromJson(value: unknown, path: string, depth: number): unknown {
  if (depth > MAX_DEPTH) throw new StateCodecError(`${path}: nested deeper than ${MAX_DEPTH} levels`);
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v, i) => fromJson(v, `${path}[${i}]`, depth + 1));
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  if (keys.length === 1 && keys[0] === '$bigint') {
    const s = obj['$bigint'];
    if (typeof s !== 'string' || !/^-?\d{1,40}$/.test(s)) throw new StateCodecError(`${path}: malformed $bigint`);
    return BigInt(s);
  }
  if (keys.length === 1 && keys[0] === '$bytes') {
    const s = obj['$bytes'];
    if (typeof s !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(s) || s.length % 4 !== 0) throw new StateCodecError(`${path}: malformed $bytes`);
    const b = Buffer.from(s, 'base64');
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    if (k.startsWith('$')) throw new StateCodecError(`${path}: unknown tag '${k}'`);
    // Own data properties only: '__proto__' as a key must not change the result's prototype.
    Object.defineProperty(out, k, { value: fromJson(obj[k], `${path}.${k}`, depth + 1), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** Decode what encodeState wrote; throws StateCodecError. */
export function decodeState(bytes: Uint8Array, what = 'state'): unknown {
  let text: string;
  try {
    text = utf8Strict.decode(bytes);
  } catch {
    throw new StateCodecError(`${what}: not valid UTF-8`);
  }
  // A hostile nesting depth would overflow JSON.parse's stack before MAX_DEPTH is checked.
  let depth = 0;
  let maxDepth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) maxDepth = Math.max(maxDepth, ++depth);
    else if (c === 0x7d || c === 0x5d) depth--;
  }
  if (maxDepth > MAX_DEPTH) throw new StateCodecError(`${what}: nested deeper than ${MAX_DEPTH} levels`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new StateCodecError(`${what}: not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  return fromJson(json, what, 0);
}
