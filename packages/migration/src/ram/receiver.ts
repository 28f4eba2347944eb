/**
 * The destination side of RAM transfer, on the incoming migration thread:
 * applies the records of each RAM section (stream/format.ts) straight into
 * the guest's RAM buffers. Every page number, length and XBZRLE run is
 * checked; anything out of place is a MigrationStreamError with the byte
 * offset, and the VM is discarded.
 *
 * A destination's RAM starts all zero, so pages the source never sends stay
 * right; pages that were never written here are not read either (a read of
 * a never-touched shared memfd page would allocate it), hence `written`.
 */
import { PAGE_SIZE } from '../page-cache.js';
import { RamRecord } from '../stream/format.js';
import { MigrationStreamError } from '../stream/stream-error.js';
import { ulebDecode, type UlebResult } from '../uleb128.js';
import { xbzrleDecode } from '../xbzrle.js';
import { dataExtents, ramRegions, type RamRegion, type RamRegionSource } from './regions.js';

export interface RamReceiveCounters {
  normalPages: number;
  zeroPages: number;
  xbzrlePages: number;
}

interface TrackedRegion extends RamRegion {
  /** pages this side wrote (or found allocated), one bit each */
  readonly written: Uint32Array;
}

export class RamReceiver {
  private readonly regions: TrackedRegion[];
  private last: TrackedRegion | undefined;
  private readonly r: UlebResult = { value: 0, next: 0 };
  readonly counters: RamReceiveCounters = { normalPages: 0, zeroPages: 0, xbzrlePages: 0 };

  constructor(sources: readonly RamRegionSource[]) {
    this.regions = ramRegions(sources).map((r) => ({ ...r, written: new Uint32Array(Math.ceil(r.pages / 32)) }));
  }

  /**
   * Make RAM all zero before the first section: whatever was written here
   * before (nothing, normally) is cleared, since the source sends only
   * non-zero pages in its bulk round.
   */
  prepare(): void {
    for (const region of this.regions) {
      const { extents, reason } = dataExtents(region);
      // Without the allocation map every page would be "data": zeroing it all would allocate all of RAM
      // for nothing — an incoming VM's RAM is fresh, hence zero, unless something wrote it, which nothing does.
      if (reason !== undefined) continue;
      for (const [from, to] of extents) {
        region.bytes.fill(0, from * PAGE_SIZE, to * PAGE_SIZE);
        for (let p = from; p < to; p++) Atomics.or(region.written, p >>> 5, 1 << (p & 31));
      }
    }
  }

  private regionOf(pfn: number): TrackedRegion | undefined {
    const l = this.last;
    if (l !== undefined && pfn >= l.firstPage && pfn < l.firstPage + l.pages) return l;
    for (const r of this.regions) {
      if (pfn >= r.firstPage && pfn < r.firstPage + r.pages) {
        this.last = r;
        return r;
      }
    }
    return undefined;
  }

  /** Apply one RAM section's records. `base` is the payload's offset in the stream (for errors). */
  apply(payload: Uint8Array, base: number): void {
    const end = payload.length;
    let i = 0;
    while (i < end) {
      const at = base + i;
      const kind = payload[i++] as number;
      if (!ulebDecode(payload, i, end, this.r)) throw new MigrationStreamError('RAM record has a truncated or overlong page number', at);
      i = this.r.next;
      const pfn = this.r.value;
      const region = this.regionOf(pfn);
      if (region === undefined) throw new MigrationStreamError(`RAM record for guest address 0x${(pfn * PAGE_SIZE).toString(16)}, which is not guest RAM`, at);
      const page = pfn - region.firstPage;
      const off = page * PAGE_SIZE;
      const w = page >>> 5;
      const bit = 1 << (page & 31);
      switch (kind) {
        case RamRecord.ZERO:
          if (((region.written[w] as number) & bit) !== 0) region.bytes.fill(0, off, off + PAGE_SIZE);
          this.counters.zeroPages++;
          break;
        case RamRecord.PAGE:
          if (i + PAGE_SIZE > end) throw new MigrationStreamError(`RAM page 0x${(pfn * PAGE_SIZE).toString(16)} is cut short (${end - i} of ${PAGE_SIZE} bytes)`, at);
          region.bytes.set(payload.subarray(i, i + PAGE_SIZE), off);
          i += PAGE_SIZE;
          region.written[w] = ((region.written[w] as number) | bit) >>> 0;
          this.counters.normalPages++;
          break;
        case RamRecord.XBZRLE: {
          if (!ulebDecode(payload, i, end, this.r)) throw new MigrationStreamError('XBZRLE record has a truncated or overlong length', at);
          i = this.r.next;
          const len = this.r.value;
          if (len === 0 || len > PAGE_SIZE) throw new MigrationStreamError(`XBZRLE record of ${len} bytes (1 to ${PAGE_SIZE} allowed)`, at);
          if (i + len > end) throw new MigrationStreamError(`XBZRLE record of ${len} bytes is cut short (${end - i} left)`, at);
          try {
            xbzrleDecode(payload.subarray(i, i + len), region.bytes.subarray(off, off + PAGE_SIZE));
          } catch (err) {
            throw new MigrationStreamError(`XBZRLE delta for guest address 0x${(pfn * PAGE_SIZE).toString(16)} does not decode: ${err instanceof Error ? err.message : String(err)}`, at);
          }
          i += len;
          region.written[w] = ((region.written[w] as number) | bit) >>> 0;
          this.counters.xbzrlePages++;
          break;
        }
        default:
          throw new MigrationStreamError(`unknown RAM record kind 0x${kind.toString(16)}`, at);
      }
    }
  }
}
