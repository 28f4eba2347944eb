/**
 * XBZRLE — XOR Based Zero Run Length Encoding, as specified in QEMU's
 * docs/xbzrle.txt:
 *
 *   page  = zrun nzrun | zrun nzrun page
 *   zrun  = length                (bytes equal in the old and new page)
 *   nzrun = length byte...        (bytes that differ, with their new values)
 *   length = ULEB128
 *
 * The encoder emits the canonical form: maximal runs at byte granularity
 * (any equal byte ends a non-zero run, as QEMU's encoder does), and no
 * trailing zero run. An unchanged page encodes to 0 bytes, which means
 * "nothing to send". If the encoding would exceed `limit` bytes (the page
 * size, by default) it overflows and the page goes as a full page instead.
 *
 * The decoder checks every length against the page and the input, and
 * follows QEMU's decoder rules: only the first zero run may be empty, a
 * non-zero run never is, and the input ends after a non-zero run.
 */
import { XbzrleDecodeError } from './stream/stream-error.js';
import { ulebDecode, ulebEncode, ulebLength, type UlebResult } from './uleb128.js';

/** The encoded page would be longer than allowed: send it whole. */
export const XBZRLE_OVERFLOW = -1;

/** "Some byte of x is zero" (Bit Twiddling Hacks, "Determine if a word has a zero byte"). */
function hasZeroByte(x: number): boolean {
  return ((x - 0x01010101) & ~x & 0x80808080) !== 0;
}

function words(b: Uint8Array): Uint32Array | undefined {
  return b.byteOffset % 4 === 0 && b.length % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2) : undefined;
}

/**
 * Encode `cur` as a delta against `old` (same length) into `out`.
 * Returns the encoded length, 0 when the pages are equal, or
 * XBZRLE_OVERFLOW when the encoding needs more than `limit` bytes.
 */
export function xbzrleEncode(old: Uint8Array, cur: Uint8Array, out: Uint8Array, limit: number = Math.min(out.length, cur.length)): number {
  const n = cur.length;
  if (old.length !== n) throw new RangeError(`xbzrleEncode: pages differ in size (${old.length} and ${n})`);
  if (limit > out.length) throw new RangeError(`xbzrleEncode: limit ${limit} exceeds the output buffer (${out.length})`);
  const o32 = words(old);
  const c32 = o32 === undefined ? undefined : words(cur);
  const nw = n >>> 2;
  let i = 0;
  let d = 0;
  while (i < n) {
    // zero run: bytes that did not change (a word at a time where aligned, for speed)
    const zs = i;
    if (c32 !== undefined && o32 !== undefined) {
      while (i < n && (i & 3) !== 0 && old[i] === cur[i]) i++;
      if ((i & 3) === 0) {
        let w = i >>> 2;
        while (w < nw && o32[w] === c32[w]) w++;
        i = w << 2;
      }
    }
    while (i < n && old[i] === cur[i]) i++;
    if (i === n) {
      if (zs === 0) return 0;
      break; // the trailing zero run is not sent
    }
    const zlen = i - zs;
    if (d + ulebLength(zlen) > limit) return XBZRLE_OVERFLOW;
    d = ulebEncode(zlen, out, d);

    // non-zero run: up to the next byte that did not change
    const ns = i;
    if (c32 !== undefined && o32 !== undefined) {
      while (i < n && (i & 3) !== 0 && old[i] !== cur[i]) i++;
      if ((i & 3) === 0) {
        let w = i >>> 2;
        while (w < nw && !hasZeroByte(((o32[w] as number) ^ (c32[w] as number)) >>> 0)) w++;
        i = w << 2;
      }
    }
    while (i < n && old[i] !== cur[i]) i++;
    const nlen = i - ns;
    if (d + ulebLength(nlen) + nlen > limit) return XBZRLE_OVERFLOW;
    d = ulebEncode(nlen, out, d);
    out.set(cur.subarray(ns, i), d);
    d += nlen;
  }
  return d;
}

const scratch: UlebResult = { value: 0, next: 0 };

/**
 * Apply the XBZRLE delta `src` to `dst`, which holds the old page and
 * receives the new one. Throws XbzrleDecodeError naming the byte of `src`
 * that is wrong; `dst` may then be partly updated.
 */
export function xbzrleDecode(src: Uint8Array, dst: Uint8Array): void {
  const slen = src.length;
  const dlen = dst.length;
  if (slen === 0) throw new XbzrleDecodeError('empty encoding (an unchanged page is not sent)');
  let i = 0;
  let d = 0;
  while (i < slen) {
    const at = i;
    if (!ulebDecode(src, i, slen, scratch)) throw new XbzrleDecodeError(`zero run length at byte ${at} is truncated or too long`);
    if (scratch.value === 0 && at !== 0) throw new XbzrleDecodeError(`empty zero run at byte ${at} (only the first run may be empty)`);
    i = scratch.next;
    d += scratch.value;
    if (d > dlen) throw new XbzrleDecodeError(`zero run at byte ${at} reaches byte ${d} of a ${dlen}-byte page`);
    const nat = i;
    if (!ulebDecode(src, i, slen, scratch)) throw new XbzrleDecodeError(`non-zero run length at byte ${nat} is missing, truncated or too long`);
    const n = scratch.value;
    if (n === 0) throw new XbzrleDecodeError(`empty non-zero run at byte ${nat}`);
    i = scratch.next;
    if (d + n > dlen) throw new XbzrleDecodeError(`non-zero run at byte ${nat} reaches byte ${d + n} of a ${dlen}-byte page`);
    if (i + n > slen) throw new XbzrleDecodeError(`non-zero run at byte ${nat} needs ${n} bytes, ${slen - i} left`);
    dst.set(src.subarray(i, i + n), d);
    i += n;
    d += n;
  }
}
