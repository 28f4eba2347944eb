/** The deterministic write sequence shared by the crash test and its child writer. */
import { Prng } from './helpers.js';

export const FLUSH_EVERY = 4;
export const SECTOR = 512;

export interface CrashWrite {
  offset: number;
  data: Uint8Array;
}

/** Write j (1-based): sector aligned, 1..160 sectors, every sector stamped with j. */
export function crashWrite(seed: number, j: number, size: number): CrashWrite {
  const rnd = new Prng(seed * 100003 + j);
  const sectors = size / SECTOR;
  const n = 1 + rnd.int(160);
  const first = rnd.int(sectors - n);
  const data = new Uint8Array(n * SECTOR);
  const v = new DataView(data.buffer);
  for (let s = 0; s < n; s++) {
    v.setUint32(s * SECTOR, j);
    data.fill(j & 0xff, s * SECTOR + 4, (s + 1) * SECTOR);
  }
  return { offset: first * SECTOR, data };
}
