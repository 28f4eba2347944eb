/**
 * Compressed clusters (docs/interop/qcow2.txt "Compressed Clusters
 * Descriptor"): raw deflate, which qemu reads with a 4 KiB window
 * (windowBits 12), so we must not compress with a larger one.
 */
import { promisify } from 'node:util';
import zlib from 'node:zlib';

const deflateRaw = promisify(zlib.deflateRaw);

export async function compressCluster(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await deflateRaw(data, { windowBits: 12, level: zlib.constants.Z_DEFAULT_COMPRESSION }));
}

/** Inflates exactly `clusterSize` bytes; trailing bytes of the last sector are ignored. Returns undefined if the data is invalid. */
export function decompressCluster(input: Uint8Array, clusterSize: number): Uint8Array | undefined {
  try {
    const out = zlib.inflateRawSync(input, {
      finishFlush: zlib.constants.Z_SYNC_FLUSH,
      maxOutputLength: clusterSize,
    });
    if (out.length !== clusterSize) return undefined;
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  } catch {
    // invalid deflate data: the caller reports the cluster as corrupt
    return undefined;
  }
}

/** Splits a compressed L2 entry into host offset and the byte range to read. */
export function decodeCompressedEntry(hi: number, lo: number, clusterBits: number): { offset: number; sectors: number } {
  const entry = (BigInt(hi) << 32n) | BigInt(lo >>> 0);
  const x = BigInt(62 - (clusterBits - 8));
  const offset = Number(entry & ((1n << x) - 1n));
  const extra = Number((entry >> x) & ((1n << BigInt(clusterBits - 8)) - 1n));
  return { offset, sectors: extra + 1 };
}

export function encodeCompressedEntry(offset: number, length: number, clusterBits: number): { hi: number; lo: number } {
  const x = BigInt(62 - (clusterBits - 8));
  const extra = BigInt(Math.floor((offset + length - 1) / 512) - Math.floor(offset / 512));
  const entry = (1n << 62n) | (extra << x) | BigInt(offset);
  return { hi: Number(entry >> 32n), lo: Number(entry & 0xffffffffn) };
}

/** Host clusters a compressed cluster's sectors touch (its refcount contributions). */
export function compressedHostClusters(offset: number, sectors: number, clusterSize: number): [number, number] {
  const start = Math.floor(offset / 512) * 512;
  const end = start + sectors * 512; // exclusive
  return [Math.floor(start / clusterSize), Math.floor((end - 1) / clusterSize)];
}
