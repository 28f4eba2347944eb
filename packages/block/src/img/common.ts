/**
 * Shared plumbing of `tsvmm img` subcommands: output streams, the driver
 * registry, opening images the way qemu-img does, and the chunked extent
 * walk that convert/compare/map/commit share.
 */
import type { BlockDevice, BlockStatusExtent } from '../driver.js';
import { BlockError } from '../errors.js';
import type { BlockDriverRegistry, OpenImageOptions } from '../registry.js';

export interface ImgOutput {
  write(s: string): unknown;
  isTTY?: boolean;
}

export interface ImgIo {
  stdout: ImgOutput;
  stderr: ImgOutput;
  /**
   * The block drivers to use. The host passes the registry its plugin
   * loader filled (BlockDriverRegistry.fromContainer); tests pass one built
   * from the driver definitions directly.
   */
  registry?: BlockDriverRegistry;
}

/** An error that ends the subcommand with a specific exit code and message. */
export class ImgExit extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** Default unit of work for copying: large enough for sequential I/O, small enough to pipeline. */
export const CHUNK = 2 * 1024 * 1024;

export function requireRegistry(io: ImgIo): BlockDriverRegistry {
  if (!io.registry) {
    throw new BlockError('no block drivers available: the caller of runImg must pass io.registry (the host fills it from the block-driver plugins)');
  }
  return io.registry;
}

export async function openForImg(
  io: ImgIo,
  filename: string,
  opts: OpenImageOptions,
): Promise<BlockDevice> {
  return requireRegistry(io).openImage(filename, opts);
}

/** Visits the extents of [start, end) in order, each at most maxLen long. */
export async function forEachExtent(
  dev: BlockDevice,
  start: number,
  end: number,
  maxLen: number,
  fn: (e: BlockStatusExtent) => Promise<void> | void,
): Promise<void> {
  let pos = start;
  while (pos < end) {
    const e = await dev.blockStatus(pos, Math.min(maxLen, end - pos));
    const len = Math.max(1, Math.min(e.length, end - pos));
    await fn({ ...e, offset: pos, length: len });
    pos += len;
  }
}

/** Runs tasks with at most `depth` in flight, in start order; stops at the first error. */
export async function pipeline<T>(items: AsyncIterable<T> | Iterable<T>, depth: number, fn: (item: T) => Promise<void>): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  let failure: unknown;
  let failed = false;
  for await (const item of items) {
    if (failed) break;
    const p: Promise<void> = fn(item).then(
      () => {
        inFlight.delete(p);
      },
      (e: unknown) => {
        inFlight.delete(p);
        if (!failed) {
          failed = true;
          failure = e;
        }
      },
    );
    inFlight.add(p);
    if (inFlight.size >= depth) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  if (failed) throw failure;
}

export function quoteJson(v: unknown): string {
  return JSON.stringify(v, null, 4);
}
