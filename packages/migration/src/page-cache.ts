/**
 * The XBZRLE page cache: the last content of each page the source sent, so
 * the next send of the page can be a delta against it (QEMU docs/xbzrle.txt,
 * "Cache update strategy").
 *
 * Behaviour as QEMU's migration/page_cache.c: a direct-mapped cache of
 * 2^k page slots (the size is rounded down to a power of two pages), slot =
 * page number mod slots. Each slot has an age — the dirty-sync count when it
 * was last hit or filled — and a page in a slot is only evicted by a
 * different page once it is CACHED_PAGE_LIFETIME syncs old, so hot pages stay.
 *
 * One ArrayBuffer holds all slot data, so lookups allocate nothing but a view.
 */

export const PAGE_SIZE = 4096;
/** A cached page is not replaced by another one within this many dirty syncs (QEMU: CACHED_PAGE_LIFETIME). */
export const CACHED_PAGE_LIFETIME = 2;

export class XbzrlePageCache {
  /** slots (a power of two) */
  readonly slots: number;
  private readonly data: Uint8Array;
  /** page number in each slot, -1 when empty */
  private readonly keys: Float64Array;
  private readonly ages: Float64Array;
  private used = 0;

  /** `sizeBytes` is rounded down to a power-of-two number of pages; at least one page. */
  constructor(sizeBytes: number) {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < PAGE_SIZE) {
      throw new RangeError(`XBZRLE cache size ${sizeBytes} is smaller than one page (${PAGE_SIZE} bytes)`);
    }
    let slots = 1;
    while (slots * 2 * PAGE_SIZE <= sizeBytes) slots *= 2;
    this.slots = slots;
    this.data = new Uint8Array(slots * PAGE_SIZE);
    this.keys = new Float64Array(slots).fill(-1);
    this.ages = new Float64Array(slots);
  }

  /** bytes of page data the cache holds when full */
  get sizeBytes(): number {
    return this.slots * PAGE_SIZE;
  }

  /** slots in use */
  get pagesCached(): number {
    return this.used;
  }

  private slot(page: number): number {
    // page mod slots; slots is a power of two, but page numbers may exceed 2^32
    return page % this.slots;
  }

  /** Is `page` cached? A hit refreshes the slot's age (QEMU: cache_is_cached). */
  isCached(page: number, age: number): boolean {
    const s = this.slot(page);
    if (this.keys[s] !== page) return false;
    this.ages[s] = age;
    return true;
  }

  /** The cached content of `page` (a view into the cache), or undefined. */
  get(page: number): Uint8Array | undefined {
    const s = this.slot(page);
    if (this.keys[s] !== page) return undefined;
    return this.data.subarray(s * PAGE_SIZE, (s + 1) * PAGE_SIZE);
  }

  /**
   * Store `content` as `page`; returns the cached copy, or undefined when the
   * slot holds another page that is still fresh (then nothing changes).
   */
  insert(page: number, content: Uint8Array, age: number): Uint8Array | undefined {
    const s = this.slot(page);
    const key = this.keys[s] as number;
    if (key !== -1 && key !== page && (this.ages[s] as number) + CACHED_PAGE_LIFETIME > age) return undefined;
    if (key === -1) this.used++;
    const view = this.data.subarray(s * PAGE_SIZE, (s + 1) * PAGE_SIZE);
    view.set(content);
    this.keys[s] = page;
    this.ages[s] = age;
    return view;
  }
}
