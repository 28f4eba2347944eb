/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of
 * every VHDX header, region table and log entry ([MS-VHDX] 2.2.2, 2.2.3,
 * 2.3.1). Table-driven, eight bytes per step ("slicing-by-8") because log
 * entries are up to megabytes and this runs on every replay.
 */
const POLY = 0x82f63b78;

const TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = [];
  const t0 = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1;
    t0[i] = c >>> 0;
  }
  t.push(t0);
  for (let s = 1; s < 8; s++) {
    const prev = t[s - 1] ?? t0;
    const cur = new Uint32Array(256);
    for (let i = 0; i < 256; i++) cur[i] = ((prev[i] >>> 8) ^ t0[prev[i] & 0xff]) >>> 0;
    t.push(cur);
  }
  return t;
})();

const [T0, T1, T2, T3, T4, T5, T6, T7] = TABLES as [
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
  Uint32Array,
];

/** Continues a CRC over `buf` from a raw (pre-inverted) state. */
function update(crc: number, buf: Uint8Array, start: number, end: number): number {
  let c = crc;
  let i = start;
  for (; i + 8 <= end; i += 8) {
    const a = (c ^ ((buf[i]) | ((buf[i + 1]) << 8) | ((buf[i + 2]) << 16) | ((buf[i + 3]) << 24))) >>> 0;
    c =
      (T7[a & 0xff]) ^
      (T6[(a >>> 8) & 0xff]) ^
      (T5[(a >>> 16) & 0xff]) ^
      (T4[a >>> 24]) ^
      (T3[buf[i + 4]]) ^
      (T2[buf[i + 5]]) ^
      (T1[buf[i + 6]]) ^
      (T0[buf[i + 7]]);
  }
  for (; i < end; i++) c = (c >>> 8) ^ (T0[(c ^ (buf[i])) & 0xff]);
  return c >>> 0;
}

export function crc32c(buf: Uint8Array): number {
  return (update(0xffffffff, buf, 0, buf.length) ^ 0xffffffff) >>> 0;
}

/**
 * The VHDX checksum: CRC-32C of the structure with its 4-byte checksum field
 * (at `checksumOffset`) taken as zero.
 */
export function vhdxChecksum(buf: Uint8Array, checksumOffset: number): number {
  let c = update(0xffffffff, buf, 0, checksumOffset);
  c = update(c, new Uint8Array(4), 0, 4);
  c = update(c, buf, checksumOffset + 4, buf.length);
  return (c ^ 0xffffffff) >>> 0;
}
