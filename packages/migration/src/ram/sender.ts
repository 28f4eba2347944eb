/**
 * The source side of RAM transfer, run on the migration thread: walks the
 * pages a round covers, encodes each as a ZERO, PAGE or XBZRLE record
 * (stream/format.ts) and hands framed RAM sections of about 1 MiB to the
 * transport.
 *
 * Round kinds, as QEMU's ram.c does them:
 * - the bulk round reads every page that was ever allocated (ram/regions.ts)
 *   and skips zero pages altogether, because a destination's fresh RAM is
 *   zero; XBZRLE stays off (QEMU's xbzrle_enabled is false in the bulk stage).
 * - later rounds send the pages of a dirty bitmap; a zero page is a ZERO
 *   record. With XBZRLE (save_xbzrle_page): a page missing from the cache
 *   is cached and sent whole (a cache miss); a cached one is sent as a delta
 *   against the cache, nothing at all if unchanged, and whole on overflow —
 *   and the cache is updated to exactly what the destination will hold, so
 *   the next delta is against the right bytes even if the guest writes the
 *   page while we copy it. A zero page replaces the cached copy with zeroes.
 * - the last round (stop-and-copy) runs with the VM stopped and does not
 *   update the cache (QEMU's last_stage).
 */
import { PAGE_SIZE, XbzrlePageCache } from '../page-cache.js';
import { RamRecord, SECTION_HEADER_BYTES, SectionType } from '../stream/format.js';
import type { StreamWriter } from '../stream/writer.js';
import { ulebEncode } from '../uleb128.js';
import { XBZRLE_OVERFLOW, xbzrleEncode } from '../xbzrle.js';
import { dataExtents, ramRegions, type RamRegion, type RamRegionSource } from './regions.js';

/** RAM section payload size before a batch is sent */
export const RAM_BATCH_BYTES = 1024 * 1024;
/** the largest record: kind, page number, length, a full page */
const MAX_RECORD_BYTES = 1 + 7 + 2 + PAGE_SIZE;
/** give the thread's event loop a turn (cancel, parameter changes) at least this often */
const YIELD_EVERY_PAGES = 4096;

const ZERO_PAGE = new Uint8Array(PAGE_SIZE);

/** Running totals, as QEMU's query-migrate reports them. */
export interface RamCounters {
  /** pages sent whole */
  normalPages: number;
  /** pages sent as ZERO records */
  zeroPages: number;
  /** pages sent as XBZRLE deltas */
  xbzrlePages: number;
  /** bytes of XBZRLE records, plus a page per overflow (QEMU's xbzrle_counters.bytes) */
  xbzrleBytes: number;
  xbzrleCacheHits: number;
  xbzrleCacheMisses: number;
  xbzrleOverflows: number;
  /** dirty pages found unchanged against the cache: nothing sent */
  unchangedPages: number;
  /** bytes of RAM sections, framing included */
  bytes: number;
}

export interface RoundOptions {
  /** the first round: every allocated page; zero pages are not sent */
  bulk: boolean;
  /** stop-and-copy: the VM is stopped and the cache is left alone */
  last: boolean;
  /** dirty-sync count: the XBZRLE cache's age */
  age: number;
}

export interface RoundResult {
  /** pages looked at */
  pages: number;
  /** RAM section bytes this round produced */
  bytes: number;
  durationMs: number;
}

export class RamSender {
  private readonly regions: RamRegion[];
  private cache: XbzrlePageCache | undefined;
  private cacheSize: number | undefined;
  readonly counters: RamCounters = {
    normalPages: 0,
    zeroPages: 0,
    xbzrlePages: 0,
    xbzrleBytes: 0,
    xbzrleCacheHits: 0,
    xbzrleCacheMisses: 0,
    xbzrleOverflows: 0,
    unchangedPages: 0,
    bytes: 0,
  };
  private batch = this.newBatch();
  private pos = SECTION_HEADER_BYTES;
  /** the page a hit is encoded from (a copy: the guest may write the live page meanwhile) */
  private readonly current = new Uint8Array(PAGE_SIZE);
  private readonly encoded = new Uint8Array(PAGE_SIZE);
  private aborted = false;
  /** why the bulk round could not skip never-touched pages, if it could not */
  extentWarning: string | undefined;

  constructor(
    sources: readonly RamRegionSource[],
    private readonly writer: StreamWriter,
    /** takes a framed section; resolves when the transport can take more */
    private readonly out: (section: Uint8Array) => Promise<void>,
    xbzrleCacheSize: number | undefined,
  ) {
    this.regions = ramRegions(sources);
    this.setXbzrleCacheSize(xbzrleCacheSize);
  }

  /** undefined: XBZRLE off. A new size starts an empty cache (QEMU copies what fits; an empty one only costs misses). */
  setXbzrleCacheSize(size: number | undefined): void {
    if (size === this.cacheSize) return;
    this.cacheSize = size;
    this.cache = size === undefined ? undefined : new XbzrlePageCache(size);
  }

  get xbzrleCacheBytes(): number {
    return this.cache?.sizeBytes ?? 0;
  }

  /** Stop the round in progress at its next page. */
  abort(): void {
    this.aborted = true;
  }

  /**
   * Send one round: `bitmaps` (one per region, in gpa order) for a dirty
   * round, ignored for the bulk round. Resolves once every section of the
   * round was handed to the transport.
   */
  async sendRound(bitmaps: readonly Uint32Array[], opts: RoundOptions): Promise<RoundResult> {
    const start = performance.now();
    const bytesBefore = this.counters.bytes;
    let pages = 0;
    let sinceYield = 0;
    // Awaited only when a batch is full or the event loop is due a turn: no promise per page.
    const checkpoint = async (): Promise<void> => {
      if (this.pos > RAM_BATCH_BYTES) await this.flush();
      if (sinceYield >= YIELD_EVERY_PAGES) {
        sinceYield = 0;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      if (this.aborted) throw new Error('the RAM round was aborted');
    };
    for (let r = 0; r < this.regions.length; r++) {
      const region = this.regions[r] as RamRegion;
      if (opts.bulk) {
        const { extents, reason } = dataExtents(region);
        if (reason !== undefined) this.extentWarning ??= reason;
        for (const [from, to] of extents) {
          for (let p = from; p < to; p++) {
            this.encodePage(region, p, opts);
            pages++;
            if (this.pos > RAM_BATCH_BYTES || ++sinceYield >= YIELD_EVERY_PAGES) await checkpoint();
          }
        }
      } else {
        const bits = bitmaps[r];
        if (bits === undefined) continue;
        const words = Math.min(bits.length, Math.ceil(region.pages / 32));
        for (let w = 0; w < words; w++) {
          let word = bits[w] as number;
          while (word !== 0) {
            const b = 31 - Math.clz32(word & -word);
            word = (word & (word - 1)) >>> 0;
            const p = w * 32 + b;
            if (p >= region.pages) break;
            this.encodePage(region, p, opts);
            pages++;
            if (this.pos > RAM_BATCH_BYTES || ++sinceYield >= YIELD_EVERY_PAGES) await checkpoint();
          }
        }
      }
    }
    await this.flush();
    return { pages, bytes: this.counters.bytes - bytesBefore, durationMs: performance.now() - start };
  }

  private encodePage(region: RamRegion, page: number, opts: RoundOptions): void {
    const off = page * PAGE_SIZE;
    const live = region.bytes.subarray(off, off + PAGE_SIZE);
    const pfn = region.firstPage + page;
    const cache = opts.bulk ? undefined : this.cache;
    if (Buffer.compare(live, ZERO_PAGE) === 0) {
      if (!opts.bulk) {
        this.record(RamRecord.ZERO, pfn);
        this.counters.zeroPages++;
      }
      // QEMU's xbzrle_cache_zero_page: the destination now has zeroes there, so should the cache.
      if (cache !== undefined && !opts.last) cache.insert(pfn, ZERO_PAGE, opts.age);
      return;
    }
    if (cache === undefined) {
      this.pageRecord(pfn, live);
      return;
    }
    if (!cache.isCached(pfn, opts.age)) {
      this.counters.xbzrleCacheMisses++;
      const cached = opts.last ? undefined : cache.insert(pfn, live, opts.age);
      // Send what the cache holds, so cache and destination agree even if the guest writes the page right now.
      this.pageRecord(pfn, cached ?? live);
      return;
    }
    this.counters.xbzrleCacheHits++;
    const prev = cache.get(pfn) as Uint8Array;
    this.current.set(live);
    const len = xbzrleEncode(prev, this.current, this.encoded, PAGE_SIZE);
    if (!opts.last && len !== 0) prev.set(this.current);
    if (len === 0) {
      this.counters.unchangedPages++;
    } else if (len === XBZRLE_OVERFLOW) {
      this.counters.xbzrleOverflows++;
      this.counters.xbzrleBytes += PAGE_SIZE;
      this.pageRecord(pfn, this.current);
    } else {
      const before = this.pos;
      this.record(RamRecord.XBZRLE, pfn);
      this.pos = ulebEncode(len, this.batch, this.pos);
      this.batch.set(this.encoded.subarray(0, len), this.pos);
      this.pos += len;
      this.counters.xbzrlePages++;
      this.counters.xbzrleBytes += this.pos - before;
    }
  }

  private pageRecord(pfn: number, data: Uint8Array): void {
    this.record(RamRecord.PAGE, pfn);
    this.batch.set(data, this.pos);
    this.pos += PAGE_SIZE;
    this.counters.normalPages++;
  }

  private record(kind: number, pfn: number): void {
    this.batch[this.pos++] = kind;
    this.pos = ulebEncode(pfn, this.batch, this.pos);
  }

  private newBatch(): Uint8Array {
    // Fresh memory per batch: the transport may still hold the previous one.
    return Buffer.allocUnsafeSlow(SECTION_HEADER_BYTES + RAM_BATCH_BYTES + MAX_RECORD_BYTES);
  }

  private async flush(): Promise<void> {
    if (this.pos === SECTION_HEADER_BYTES) return;
    const framed = this.writer.section(SectionType.RAM, this.batch.subarray(SECTION_HEADER_BYTES, this.pos), this.batch);
    this.counters.bytes += framed.length;
    this.batch = this.newBatch();
    this.pos = SECTION_HEADER_BYTES;
    await this.out(framed);
  }
}
