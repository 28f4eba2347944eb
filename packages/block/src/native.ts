/**
 * Loader for the tiny N-API helper in ../native (fallocate, SEEK_DATA/SEEK_HOLE).
 * Node's fs has neither; see native/block_native.c for why they are there.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { BlockError } from './errors.js';

export interface BlockNativeBinding {
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  /** next data offset at or after `offset`, or -1 if there is none (ENXIO) */
  seekData(fd: number, offset: number): number;
  /** next hole offset at or after `offset` (EOF counts as a hole), or -1 (ENXIO) */
  seekHole(fd: number, offset: number): number;
  /** preadv2(RWF_NOWAIT): bytes read; -1 not cached (would block); -2 unsupported */
  preadNoWait(fd: number, buf: Uint8Array, offset: number): number;
  FALLOC_FL_KEEP_SIZE: number;
  FALLOC_FL_PUNCH_HOLE: number;
  FALLOC_FL_ZERO_RANGE: number;
}

let binding: BlockNativeBinding | undefined;

function isBinding(v: unknown): v is BlockNativeBinding {
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof (v as Record<string, unknown>)['fallocate'] === 'function' &&
    typeof (v as Record<string, unknown>)['seekData'] === 'function'
  );
}

export function blockNative(): BlockNativeBinding {
  if (binding) return binding;
  const here = path.dirname(fileURLToPath(import.meta.url));
  // dist/src/native.js -> ../../native/build/Release
  const addon = path.resolve(here, '../../native/build/Release/tsvmm_block.node');
  const require = createRequire(import.meta.url);
  let loaded: unknown;
  try {
    loaded = require(addon);
  } catch (e) {
    throw new BlockError(
      `cannot load the block layer's native helper ${addon}: ${e instanceof Error ? e.message : String(e)}; ` +
        'build it with `npm install` (runs node-gyp in packages/block/native; needs python3, make and a C compiler)',
      { cause: e },
    );
  }
  if (!isBinding(loaded)) throw new BlockError(`${addon} does not export the expected functions`);
  binding = loaded;
  return binding;
}
