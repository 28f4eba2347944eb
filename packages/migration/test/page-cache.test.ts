/**
 * The XBZRLE page cache behaves as QEMU's migration/page_cache.c: direct
 * mapped, power-of-two slots, and a page younger than CACHED_PAGE_LIFETIME
 * dirty syncs is not evicted by another page.
 */
import { expect } from 'chai';
import { CACHED_PAGE_LIFETIME, XbzrlePageCache } from '../src/index.js';

const PAGE = 4096;
const page = (v: number): Uint8Array => new Uint8Array(PAGE).fill(v);

describe('XBZRLE page cache', () => {
  it('rounds its size down to a power of two pages and refuses less than a page', () => {
    expect(new XbzrlePageCache(5 * PAGE).slots).to.equal(4);
    expect(new XbzrlePageCache(64 * 1024 * 1024).sizeBytes).to.equal(64 * 1024 * 1024);
    expect(() => new XbzrlePageCache(100)).to.throw(RangeError, /smaller than one page/);
  });

  it('returns what was inserted, as a copy', () => {
    const c = new XbzrlePageCache(4 * PAGE);
    const src = page(3);
    c.insert(10, src, 0);
    src.fill(9);
    expect(c.isCached(10, 0)).to.equal(true);
    expect(c.get(10)?.[0]).to.equal(3);
    expect(c.isCached(11, 0)).to.equal(false);
  });

  it('keeps a fresh page when another page maps to its slot, and lets it go once old enough', () => {
    const c = new XbzrlePageCache(4 * PAGE);
    expect(c.insert(1, page(1), 5)).to.not.equal(undefined);
    // page 5 maps to slot 1 too (5 mod 4)
    expect(c.insert(5, page(5), 5 + CACHED_PAGE_LIFETIME - 1)).to.equal(undefined);
    expect(c.get(1)?.[0]).to.equal(1);
    expect(c.insert(5, page(5), 5 + CACHED_PAGE_LIFETIME)).to.not.equal(undefined);
    expect(c.get(1)).to.equal(undefined);
    expect(c.get(5)?.[0]).to.equal(5);
  });

  it('refreshes a page\'s age on a hit, which keeps it cached', () => {
    const c = new XbzrlePageCache(4 * PAGE);
    c.insert(2, page(2), 0);
    expect(c.isCached(2, 10)).to.equal(true);
    expect(c.insert(6, page(6), 11)).to.equal(undefined);
  });

  it('replaces the content of the same page whatever its age', () => {
    const c = new XbzrlePageCache(4 * PAGE);
    c.insert(3, page(1), 7);
    c.insert(3, page(2), 7);
    expect(c.get(3)?.[0]).to.equal(2);
    expect(c.pagesCached).to.equal(1);
  });
});
