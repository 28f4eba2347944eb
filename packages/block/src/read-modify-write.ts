/**
 * Unaligned requests on formats whose unit is larger than a byte (sectors,
 * clusters, blocks): widen to the alignment, read the partial head and tail
 * units, merge, write whole units. One helper so every driver gets the edge
 * cases (request inside a single unit, head and tail in the same unit) right.
 */

export type AlignedIo = (offset: number, buf: Uint8Array) => Promise<void>;

export function alignDown(x: number, a: number): number {
  return x - (x % a);
}

export function alignUp(x: number, a: number): number {
  const r = x % a;
  return r === 0 ? x : x + (a - r);
}

/** Writes `data` at `offset` using only aligned reads and writes of whole `alignment` units. */
export async function readModifyWrite(
  offset: number,
  data: Uint8Array,
  alignment: number,
  readAligned: AlignedIo,
  writeAligned: AlignedIo,
): Promise<void> {
  const start = alignDown(offset, alignment);
  const end = alignUp(offset + data.length, alignment);
  if (start === offset && end === offset + data.length) {
    await writeAligned(offset, data);
    return;
  }
  const buf = new Uint8Array(end - start);
  // only the partial head and tail units need their old contents
  await readAligned(start, buf.subarray(0, alignment));
  if (end - alignment > start) {
    await readAligned(end - alignment, buf.subarray(buf.length - alignment));
  }
  buf.set(data, offset - start);
  await writeAligned(start, buf);
}

/** Reads `buf.length` bytes at `offset` using only aligned reads of whole units. */
export async function readAlignedRange(
  offset: number,
  buf: Uint8Array,
  alignment: number,
  readAligned: AlignedIo,
): Promise<void> {
  const start = alignDown(offset, alignment);
  const end = alignUp(offset + buf.length, alignment);
  if (start === offset && end === offset + buf.length) {
    await readAligned(offset, buf);
    return;
  }
  const tmp = new Uint8Array(end - start);
  await readAligned(start, tmp);
  buf.set(tmp.subarray(offset - start, offset - start + buf.length));
}
