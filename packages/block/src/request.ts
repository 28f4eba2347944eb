/** Checks every driver applies to a request before touching its file. */
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
