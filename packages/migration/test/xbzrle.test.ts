/**
 * XBZRLE as QEMU's docs/xbzrle.txt specifies it: the documented example as
 * a fixed vector, the grammar's edge cases, overflow, the decoder's refusal
 * of malformed input, and round trips on random page pairs (fast-check).
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { ulebDecode, ulebEncode, ulebLength, XBZRLE_OVERFLOW, XbzrleDecodeError, xbzrleDecode, xbzrleEncode } from '../src/index.js';

const PAGE = 4096;

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(' ');
}

function encode(old: Uint8Array, cur: Uint8Array, limit = PAGE): { len: number; out: Uint8Array } {
  const out = new Uint8Array(PAGE);
  const len = xbzrleEncode(old, cur, out, limit);
  return { len, out: out.subarray(0, Math.max(len, 0)) };
}

describe('ULEB128', () => {
  it('encodes 1001 as e9 07 (the xbzrle.txt example) and round-trips lengths', () => {
    const out = new Uint8Array(8);
    expect(hex(out.subarray(0, ulebEncode(1001, out, 0)))).to.equal('e9 07');
    for (const v of [0, 1, 127, 128, 4096, 16383, 16384, 2 ** 40]) {
      const n = ulebEncode(v, out, 0);
      expect(n).to.equal(ulebLength(v));
      const r = { value: -1, next: -1 };
      expect(ulebDecode(out, 0, n, r)).to.equal(true);
      expect(r).to.deep.equal({ value: v, next: n });
    }
  });

  it('refuses a truncated or overlong encoding', () => {
    const r = { value: 0, next: 0 };
    expect(ulebDecode(Uint8Array.of(0x80, 0x80), 0, 2, r)).to.equal(false);
    expect(ulebDecode(new Uint8Array(10).fill(0x80), 0, 10, r)).to.equal(false);
  });
});

describe('XBZRLE encoding (docs/xbzrle.txt)', () => {
  it('encodes the documented example to the documented 24 bytes', () => {
    const old = new Uint8Array(PAGE);
    const cur = new Uint8Array(PAGE);
    old.set([0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x68, 0x00, 0x00, 0x6b, 0x00, 0x6d], 1001);
    cur.set([0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x68, 0x00, 0x00, 0x67, 0x00, 0x69], 1001);
    const { len, out } = encode(old, cur);
    expect(len).to.equal(24);
    expect(hex(out)).to.equal('e9 07 0f 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 03 01 67 01 01 69');
    const back = old.slice();
    xbzrleDecode(out, back);
    expect(Buffer.compare(back, cur)).to.equal(0);
  });

  it('encodes an unchanged page as nothing (0: the page is not sent)', () => {
    const p = new Uint8Array(PAGE).fill(7);
    expect(encode(p, p.slice()).len).to.equal(0);
  });

  it('starts with an empty zero run when the first byte changed, and omits the trailing zero run', () => {
    const old = new Uint8Array(PAGE);
    const cur = old.slice();
    cur[0] = 1;
    expect(hex(encode(old, cur).out)).to.equal('00 01 01');
  });

  it('ends with the non-zero run when the last byte changed', () => {
    const old = new Uint8Array(PAGE);
    const cur = old.slice();
    cur[PAGE - 1] = 9;
    expect(hex(encode(old, cur).out)).to.equal('ff 1f 01 09');
  });

  it('splits a non-zero run at every unchanged byte, as QEMU does', () => {
    const old = new Uint8Array(PAGE);
    const cur = old.slice();
    cur.set([1, 2, 0, 3], 8); // byte 10 keeps its old value
    expect(hex(encode(old, cur).out)).to.equal('08 02 01 02 01 01 03');
  });

  it('overflows (-1) when the delta would exceed the limit: every other byte changed', () => {
    const old = new Uint8Array(PAGE);
    const cur = old.slice();
    for (let i = 0; i < PAGE; i += 2) cur[i] = 0xff;
    expect(encode(old, cur).len).to.equal(XBZRLE_OVERFLOW);
  });

  it('overflows against a smaller limit and fits exactly at it', () => {
    const old = new Uint8Array(PAGE);
    const cur = old.slice();
    cur.fill(1, 100, 110); // 1 (zrun 100) + 1 (nzrun 10) + 10 bytes = 12
    expect(encode(old, cur, 11).len).to.equal(XBZRLE_OVERFLOW);
    expect(encode(old, cur, 12).len).to.equal(12);
  });

  it('gives the same bytes from the word and byte paths (unaligned views)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.array(fc.nat(63)), (a, noise, same) => {
        const b = a.slice();
        for (let i = 0; i < 64; i++) if ((noise[i] as number) < 40) b[i] = ((b[i] as number) + 1) & 0xff;
        for (const i of same) b[i] = a[i] as number;
        const aligned = encode(a, b, 64);
        const ua = new Uint8Array(65);
        const ub = new Uint8Array(65);
        ua.set(a, 1);
        ub.set(b, 1);
        const out = new Uint8Array(PAGE);
        const len = xbzrleEncode(ua.subarray(1), ub.subarray(1), out, 64);
        expect(len).to.equal(aligned.len);
        if (len > 0) expect(hex(out.subarray(0, len))).to.equal(hex(aligned.out));
      }),
    );
  });
});

describe('XBZRLE round trip (property)', () => {
  /** a page pair: an old page, and a new page with runs of changes of random length at random places */
  const pagePair = fc
    .tuple(
      fc.uint8Array({ minLength: PAGE, maxLength: PAGE }),
      fc.array(fc.tuple(fc.nat(PAGE - 1), fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 255 })), { maxLength: 40 }),
    )
    .map(([old, edits]) => {
      const cur = old.slice();
      for (const [at, len, delta] of edits) for (let i = at; i < Math.min(PAGE, at + len); i++) cur[i] = ((cur[i] as number) + delta) & 0xff;
      return { old, cur };
    });

  it('decode(encode(old, new)) applied to old gives new, or the encoder says unchanged/overflow', () => {
    fc.assert(
      fc.property(pagePair, ({ old, cur }) => {
        const { len, out } = encode(old, cur);
        if (len === 0) return Buffer.compare(old, cur) === 0;
        if (len === XBZRLE_OVERFLOW) return true;
        expect(len).to.be.at.most(PAGE);
        const dst = old.slice();
        xbzrleDecode(out, dst);
        return Buffer.compare(dst, cur) === 0;
      }),
      { numRuns: 300 },
    );
  });

  it('round-trips fully random page pairs (mostly overflow) without ever exceeding the limit', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: PAGE, maxLength: PAGE }), fc.uint8Array({ minLength: PAGE, maxLength: PAGE }), fc.integer({ min: 16, max: PAGE }), (old, cur, limit) => {
        const out = new Uint8Array(PAGE);
        const len = xbzrleEncode(old, cur, out, limit);
        if (len === XBZRLE_OVERFLOW || len === 0) return true;
        expect(len).to.be.at.most(limit);
        const dst = old.slice();
        xbzrleDecode(out.subarray(0, len), dst);
        return Buffer.compare(dst, cur) === 0;
      }),
      { numRuns: 100 },
    );
  });
});

describe('XBZRLE decoding of malformed input', () => {
  const decode = (bytes: number[]): void => xbzrleDecode(Uint8Array.from(bytes), new Uint8Array(PAGE));

  it('refuses an empty encoding', () => {
    expect(() => decode([])).to.throw(XbzrleDecodeError, /empty encoding/);
  });
  it('refuses a zero run past the end of the page', () => {
    expect(() => decode([0x81, 0x20, 0x01, 0x00])).to.throw(XbzrleDecodeError, /reaches byte 4097/);
  });
  it('refuses a non-zero run past the end of the page', () => {
    expect(() => decode([0xff, 0x1f, 0x02, 1, 2])).to.throw(XbzrleDecodeError, /reaches byte 4097/);
  });
  it('refuses a non-zero run longer than the input', () => {
    expect(() => decode([0x00, 0x05, 1, 2])).to.throw(XbzrleDecodeError, /needs 5 bytes, 2 left/);
  });
  it('refuses an empty non-zero run and an empty zero run after the first', () => {
    expect(() => decode([0x00, 0x00])).to.throw(XbzrleDecodeError, /empty non-zero run/);
    expect(() => decode([0x00, 0x01, 7, 0x00, 0x01, 8])).to.throw(XbzrleDecodeError, /empty zero run at byte 3/);
  });
  it('refuses a zero run with no non-zero run after it', () => {
    expect(() => decode([0x00, 0x01, 7, 0x05])).to.throw(XbzrleDecodeError, /non-zero run length at byte 4 is missing/);
  });
  it('never throws anything but XbzrleDecodeError, never writes outside the page (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        const backing = new Uint8Array(PAGE + 16).fill(0xa5);
        const dst = backing.subarray(8, 8 + PAGE);
        dst.fill(0);
        try {
          xbzrleDecode(bytes, dst);
        } catch (err) {
          expect(err).to.be.instanceOf(XbzrleDecodeError);
        }
        return backing.subarray(0, 8).every((b) => b === 0xa5) && backing.subarray(8 + PAGE).every((b) => b === 0xa5);
      }),
      { numRuns: 500 },
    );
  });
});
