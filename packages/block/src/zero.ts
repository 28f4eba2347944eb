/** Zero detection without per-byte JS loops: memcmp against a shared zero page. */
import { Buffer } from 'node:buffer';

const ZERO = Buffer.alloc(1 << 16);

export function isZero(buf: Uint8Array): boolean {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = 0; off < b.length; off += ZERO.length) {
    const n = Math.min(ZERO.length, b.length - off);
    if (b.compare(ZERO, 0, n, off, off + n) !== 0) return false;
  }
  return true;
}

/** Length of the run starting at 0 that is all-zero (zero=true) or has no zero `unit` (zero=false), in `unit` steps. */
export function zeroRunLength(buf: Uint8Array, unit: number, zero: boolean): number {
  let off = 0;
  while (off < buf.length) {
    const n = Math.min(unit, buf.length - off);
    if (isZero(buf.subarray(off, off + n)) !== zero) break;
    off += n;
  }
  return off;
}
