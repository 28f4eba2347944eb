/**
 * Unsigned LEB128 (DWARF 5 §7.6; the run lengths of QEMU's docs/xbzrle.txt):
 * seven bits per byte, least significant group first, high bit set on every
 * byte but the last.
 *
 * Values here are page numbers and run lengths, so they stay far below 2^53;
 * the decoder refuses encodings longer than MAX_ULEB128_BYTES (a hostile
 * stream could otherwise make a "number" of any length).
 */

/** Enough for any value below 2^49 (7 × 7 bits): page numbers of a 2 PiB address space. */
export const MAX_ULEB128_BYTES = 7;

/** Bytes ulebEncode() writes for `value`. */
export function ulebLength(value: number): number {
  let n = 1;
  while (value >= 0x80) {
    value = Math.floor(value / 128);
    n++;
  }
  return n;
}

/** Write `value` (a non-negative safe integer) at `at`; returns the offset after it. */
export function ulebEncode(value: number, out: Uint8Array, at: number): number {
  // Small values (run lengths, most page numbers) avoid the division.
  while (value >= 0x80) {
    out[at++] = (value & 0x7f) | 0x80;
    value = Math.floor(value / 128);
  }
  out[at++] = value;
  return at;
}

/** The result of ulebDecode: the value and the offset after it. Reused to avoid an allocation per call. */
export interface UlebResult {
  value: number;
  next: number;
}

/**
 * Read a ULEB128 at `at` (before `end`) into `result`. Returns false if the
 * bytes run out first or the encoding is longer than MAX_ULEB128_BYTES.
 */
export function ulebDecode(buf: Uint8Array, at: number, end: number, result: UlebResult): boolean {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < MAX_ULEB128_BYTES; i++) {
    if (at >= end) return false;
    const b = buf[at++] as number;
    value += (b & 0x7f) * scale;
    if ((b & 0x80) === 0) {
      result.value = value;
      result.next = at;
      return true;
    }
    scale *= 128;
  }
  return false;
}
