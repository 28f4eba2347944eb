/**
 * Guest RAM as the migration thread sees it: the regions' SharedArrayBuffers
 * (the very memory the vCPUs use, shared with the worker without copies) and,
 * where the accelerator gave one, the memfd behind each — whose allocated
 * ranges (lseek SEEK_DATA/SEEK_HOLE, native/migration_native.c)
 * are the only pages that can hold anything but zeroes. Reading a
 * never-touched page of a shared memfd mapping would allocate it, so the
 * first round reads only those ranges; a 4 GiB idle guest then costs what its
 * few touched megabytes cost.
 */
import { PAGE_SIZE } from '../page-cache.js';
import { migrationNative } from './native.js';

export interface RamRegionSource {
  gpa: number;
  size: number;
  buffer: SharedArrayBuffer;
  fd?: number;
}

export interface RamRegion {
  readonly gpa: number;
  readonly size: number;
  readonly pages: number;
  /** guest page number of the region's first page */
  readonly firstPage: number;
  readonly bytes: Uint8Array;
  readonly fd: number | undefined;
}

export function ramRegions(sources: readonly RamRegionSource[]): RamRegion[] {
  return [...sources]
    .sort((a, b) => a.gpa - b.gpa)
    .map((r) => ({
      gpa: r.gpa,
      size: r.size,
      pages: Math.ceil(r.size / PAGE_SIZE),
      firstPage: r.gpa / PAGE_SIZE,
      bytes: new Uint8Array(r.buffer, 0, r.size),
      fd: r.fd,
    }));
}

/** [start, end) page ranges of `region` that may hold data. */
export type PageExtent = readonly [number, number];

/**
 * Ranges of the region's memfd that were ever allocated, in pages; the whole
 * region when there is no fd or the helper is missing (then `reason` says why).
 */
export function dataExtents(region: RamRegion): { extents: PageExtent[]; reason?: string } {
  const all: PageExtent[] = [[0, region.pages]];
  if (region.fd === undefined) return { extents: all, reason: 'the accelerator gave no memfd' };
  const native = migrationNative();
  if (typeof native === 'string') return { extents: all, reason: native };
  let pairs: Float64Array;
  try {
    pairs = native.dataExtents(region.fd, region.size);
  } catch (err) {
    return { extents: all, reason: `lseek on the RAM memfd failed: ${err instanceof Error ? err.message : String(err)}` };
  }
  const out: PageExtent[] = [];
  for (let i = 0; i + 1 < pairs.length; i += 2) {
    out.push([Math.floor((pairs[i] as number) / PAGE_SIZE), Math.min(region.pages, Math.ceil((pairs[i + 1] as number) / PAGE_SIZE))]);
  }
  return { extents: out };
}
