/**
 * `img compare`: exit 0 when the images read the same, 1 at the first
 * difference ("Content mismatch at offset N!", N a sector offset like
 * qemu-img prints), 2 on errors. Without -s, a size difference is fine if
 * the larger image reads as zeroes past the smaller one's end.
 */
import { Buffer } from 'node:buffer';
import type { BlockDevice } from '../driver.js';
import { isZero } from '../zero.js';
import { type ImgIo, CHUNK, openForImg } from './common.js';
import { createProgress } from './progress.js';

function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const ba = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const bb = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (ba.equals(bb)) return -1;
  // narrow down in 512-byte sectors with memcmp, then bytes
  for (let s = 0; s < ba.length; s += 512) {
    const e = Math.min(s + 512, ba.length);
    if (ba.compare(bb, s, e, s, e) !== 0) {
      for (let i = s; i < e; i++) if (ba[i] !== bb[i]) return i;
    }
  }
  return -1;
}

function firstNonZero(a: Uint8Array): number {
  for (let s = 0; s < a.length; s += 512) {
    const sub = a.subarray(s, Math.min(s + 512, a.length));
    if (!isZero(sub)) {
      for (let i = 0; i < sub.length; i++) if (sub[i] !== 0) return s + i;
    }
  }
  return -1;
}

async function isZeroExtent(dev: BlockDevice, off: number, len: number): Promise<number> {
  const st = await dev.blockStatus(off, len);
  return !st.data && st.zero ? Math.min(st.length, len) : 0;
}

/** Returns the first differing byte offset, or -1 if the ranges read the same. */
export async function compareDevices(a: BlockDevice, b: BlockDevice, onProgress?: (done: number) => void): Promise<number> {
  const common = Math.min(a.size, b.size);
  let pos = 0;
  const bufA = new Uint8Array(CHUNK);
  const bufB = new Uint8Array(CHUNK);
  while (pos < common) {
    const want = Math.min(CHUNK, common - pos);
    // both sides reading as zero (holes, zero clusters) need no reads
    const za = await isZeroExtent(a, pos, want);
    if (za > 0) {
      const zb = await isZeroExtent(b, pos, za);
      if (zb > 0) {
        pos += zb;
        onProgress?.(pos);
        continue;
      }
    }
    const ra = bufA.subarray(0, want);
    const rb = bufB.subarray(0, want);
    await Promise.all([a.read(pos, ra), b.read(pos, rb)]);
    const d = firstDifference(ra, rb);
    if (d >= 0) return pos + d;
    pos += want;
    onProgress?.(pos);
  }
  const longer = a.size > b.size ? a : b;
  while (pos < longer.size) {
    const want = Math.min(CHUNK, longer.size - pos);
    const z = await isZeroExtent(longer, pos, want);
    if (z > 0) {
      pos += z;
      continue;
    }
    const r = bufA.subarray(0, want);
    await longer.read(pos, r);
    const d = firstNonZero(r);
    if (d >= 0) return pos + d;
    pos += want;
  }
  return -1;
}

export async function cmdCompare(io: ImgIo, file1: string, file2: string, o: { format?: string; format2?: string; strict?: boolean; progress?: boolean }): Promise<number> {
  const a = await openForImg(io, file1, { format: o.format, readOnly: true });
  try {
    const b = await openForImg(io, file2, { format: o.format2, readOnly: true });
    try {
      if (a.size !== b.size) {
        if (o.strict) {
          io.stdout.write('Strict mode: Image size mismatch!\n');
          return 1;
        }
        io.stdout.write('Warning: Image size mismatch!\n');
      }
      const progress = createProgress(io.stdout, Math.max(a.size, b.size), o.progress ?? false);
      const d = await compareDevices(a, b, (done) => progress.update(done));
      progress.stop();
      if (d >= 0) {
        io.stdout.write(`Content mismatch at offset ${d - (d % 512)}!\n`);
        return 1;
      }
      io.stdout.write('Images are identical.\n');
      return 0;
    } finally {
      await b.close();
    }
  } finally {
    await a.close();
  }
}
