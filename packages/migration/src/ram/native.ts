/**
 * Loader for the migration's native helper (../native/migration_native.c):
 * lseek SEEK_DATA/SEEK_HOLE over a guest RAM memfd. Optional — without it the
 * first round reads every page (correct, only slower, and it makes the memfd
 * allocate every page it reads), and the reason is reported once.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface MigrationNative {
  /** [start, end) byte pairs of the file's allocated ranges below `size` */
  dataExtents(fd: number, size: number): Float64Array;
}

let loaded: MigrationNative | string | undefined;

/** The helper, or a string saying why it is not there. */
export function migrationNative(): MigrationNative | string {
  if (loaded !== undefined) return loaded;
  const here = path.dirname(fileURLToPath(import.meta.url));
  // dist/src/ram/native.js -> native/build/Release
  const file = path.resolve(here, '../../../native/build/Release/tsvmm_migration.node');
  try {
    const mod: unknown = createRequire(import.meta.url)(file);
    const fn = typeof mod === 'object' && mod !== null ? (mod as Record<string, unknown>)['dataExtents'] : undefined;
    loaded = typeof fn === 'function' ? (mod as MigrationNative) : `${file} does not export dataExtents`;
  } catch (err) {
    loaded = `cannot load ${file} (${err instanceof Error ? err.message.split('\n')[0] : String(err)}); build it with npm install`;
  }
  return loaded;
}
