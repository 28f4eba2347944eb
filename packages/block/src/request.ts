/** What every driver does with a request: the checks before touching its file, and splitting it at block boundaries. */
import { BlockRangeError, BlockReadOnlyError } from './errors.js';

export function checkRequest(
  dev: { filename: string; size: number },
  offset: number,
  length: number,
): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > dev.size
  ) {
    throw new BlockRangeError(dev.filename, offset, length, dev.size);
  }
}

export function checkWritable(dev: { filename: string; readOnly: boolean }, why = 'opened read-only'): void {
  if (dev.readOnly) throw new BlockReadOnlyError(dev.filename, why);
}

/**
 * Runs `fn` on each piece of the request [offset, offset + buf.length) that
 * stays inside one block of `blockSize` bytes, in order and one at a time:
 * `blockIndex` is the block, `inBlock` where the piece starts in it.
 */
export async function forEachBlockPiece(
  offset: number,
  buf: Uint8Array,
  blockSize: number,
  fn: (blockIndex: number, inBlock: number, piece: Uint8Array) => Promise<void>,
): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const pos = offset + done;
    const blockIndex = Math.floor(pos / blockSize);
    const inBlock = pos % blockSize;
    const n = Math.min(blockSize - inBlock, buf.length - done);
    await fn(blockIndex, inBlock, buf.subarray(done, done + n));
    done += n;
  }
}

/**
 * Closes what a failed open had opened (a backing or parent image, then the
 * file), in that order, and throws the open's error: that error is the one
 * that says what is wrong with the image. A close failing during this unwind
 * is dropped, as the open already failed for a reason the user can act on.
 */
export async function closeAfterFailedOpen(err: unknown, opened: ReadonlyArray<{ close(): Promise<void> } | undefined>): Promise<never> {
  for (const o of opened) await o?.close().catch(() => undefined);
  throw err;
}
