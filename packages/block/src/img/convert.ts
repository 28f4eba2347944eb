/**
 * `img convert`: copy an image into a new one of any format.
 *
 * Performance shape (bench/img compares it with qemu-img): the source is
 * walked by block status so holes and zero clusters are never read, data is
 * moved in 2 MiB chunks with a few in flight, and zero runs inside data
 * (qemu-img's -S, 4 KiB by default) are not written, so the output stays
 * sparse.
 */
import type { BlockDevice } from '../driver.js';
import { BlockError } from '../errors.js';
import { isZero } from '../zero.js';
import { parseSize } from '../size.js';
import { type ImgIo, CHUNK, ImgExit, forEachExtent, openForImg, pipeline, requireRegistry } from './common.js';
import { createProgress } from './progress.js';

export interface ConvertOptions {
  format?: string;
  outputFormat?: string;
  options?: Record<string, string>;
  compress?: boolean;
  progress?: boolean;
  backing?: string;
  backingFormat?: string;
  noCreate?: boolean;
  sparseSize?: string;
  parallel?: number;
  /** qemu-img's -t: cache mode of the output; unsafe (no fsync) by default, as in qemu-img */
  cache?: string;
}

interface Chunk {
  offset: number;
  length: number;
  /** the source has data here (else it reads as zeroes) */
  data: boolean;
}

export async function cmdConvert(io: ImgIo, inputs: string[], output: string, o: ConvertOptions): Promise<number> {
  if (inputs.length !== 1) throw new ImgExit(1, 'convert takes exactly one input image (concatenation is not supported)');
  const input = inputs[0] ?? '';
  const reg = requireRegistry(io);
  const outFormat = o.outputFormat ?? 'raw';
  const sparse = parseSize(o.sparseSize ?? '4k', '-S');
  if (sparse !== 0 && sparse % 512 !== 0) throw new ImgExit(1, `-S ${o.sparseSize}: the sparse size must be a multiple of 512`);
  const src = await openForImg(io, input, { format: o.format, readOnly: true });
  let dst: BlockDevice | undefined;
  try {
    if (!o.noCreate) {
      const createOpts = { ...(o.options ?? {}) };
      if (o.backing !== undefined) {
        createOpts['backing_file'] = o.backing;
        if (o.backingFormat !== undefined) createOpts['backing_fmt'] = o.backingFormat;
      }
      await reg.create(outFormat, { filename: output, size: src.size, options: createOpts });
    }
    dst = await reg.openImage(output, { format: outFormat, options: { cache: o.cache ?? 'unsafe' } });
    if (o.compress && !dst.supportsCompressedWrites) {
      throw new ImgExit(1, `Compression not supported for this file format ('${outFormat}')`);
    }
    if (dst.size < src.size) {
      throw new BlockError(`${output}: the target (${dst.size} bytes) is smaller than the source (${src.size} bytes)`);
    }
    await copyImage(src, dst, {
      compress: o.compress ?? false,
      sparse,
      // with -B the output's backing file supplies what the source's chain below the top supplies
      onlyTopLayer: o.backing !== undefined,
      targetIsFresh: !o.noCreate,
      parallel: o.parallel ?? 4,
      progress: createProgress(io.stdout, src.size, o.progress ?? false),
    });
    await dst.flush();
    return 0;
  } finally {
    await dst?.close();
    await src.close();
  }
}

export interface CopyOptions {
  compress: boolean;
  sparse: number;
  onlyTopLayer: boolean;
  targetIsFresh: boolean;
  parallel: number;
  progress: { update(done: number): void; stop(): void };
}

export async function copyImage(src: BlockDevice, dst: BlockDevice, o: CopyOptions): Promise<void> {
  let done = 0;
  async function* chunks(): AsyncGenerator<Chunk> {
    let pos = 0;
    while (pos < src.size) {
      const want = Math.min(CHUNK - (pos % CHUNK), src.size - pos);
      const extents: Chunk[] = [];
      await forEachExtent(src, pos, pos + want, want, (e) => {
        if (o.onlyTopLayer && !e.allocated && e.depth > 0) {
          // comes from the source's backing chain: the output's backing file has it
          return;
        }
        extents.push({ offset: e.offset, length: e.length, data: e.data || !e.zero });
      });
      for (const c of extents) yield c;
      pos += want;
    }
  }
  // one buffer per request in flight, reused: no zero-filling, no garbage
  const free: Uint8Array[] = [];
  await pipeline(chunks(), Math.max(1, o.parallel), async (c) => {
    if (!c.data) {
      // a fresh target already reads as zeroes; otherwise make it so
      if (!o.targetIsFresh || o.onlyTopLayer) await dst.writeZeroes(c.offset, c.length, { mayUnmap: true });
    } else {
      const whole = free.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
      try {
        const buf = whole.subarray(0, c.length);
        await src.read(c.offset, buf);
        await writeSparse(dst, c.offset, buf, o);
      } finally {
        free.push(whole);
      }
    }
    done += c.length;
    o.progress.update(done);
  });
  o.progress.stop();
}

/** Writes buf, skipping (or zeroing) runs of at least `sparse` zero bytes at sparse-aligned offsets. */
async function writeSparse(dst: BlockDevice, offset: number, buf: Uint8Array, o: CopyOptions): Promise<void> {
  const unit = o.sparse;
  const writeOpts = o.compress ? { compressed: true } : undefined;
  if (unit === 0) {
    await dst.write(offset, buf, writeOpts);
    return;
  }
  if (isZero(buf)) {
    if (!o.targetIsFresh || o.onlyTopLayer) await dst.writeZeroes(offset, buf.length, { mayUnmap: true });
    return;
  }
  if (o.compress) {
    await dst.write(offset, buf, writeOpts);
    return;
  }
  // split into alternating data / zero runs at `unit` granularity; a unit
  // whose first word is non-zero is data without a full scan (the common case)
  const words = buf.byteOffset % 4 === 0 ? new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2) : undefined;
  const unitIsZero = (p: number): boolean => {
    if (words && p + 8 <= buf.length && (words[p >>> 2] !== 0 || words[(p >>> 2) + 1] !== 0)) return false;
    return isZero(buf.subarray(p, Math.min(p + unit, buf.length)));
  };
  let runStart = 0;
  let runZero = unitIsZero(0);
  const flush = async (end: number): Promise<void> => {
    if (end <= runStart) return;
    if (!runZero) await dst.write(offset + runStart, buf.subarray(runStart, end));
    else if (!o.targetIsFresh || o.onlyTopLayer) await dst.writeZeroes(offset + runStart, end - runStart, { mayUnmap: true });
  };
  for (let p = unit; p < buf.length; p += unit) {
    const z = unitIsZero(p);
    if (z !== runZero) {
      await flush(p);
      runStart = p;
      runZero = z;
    }
  }
  await flush(buf.length);
}
