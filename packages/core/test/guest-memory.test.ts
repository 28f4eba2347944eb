import { expect } from 'chai';
import fc from 'fast-check';
import { GuestMemory, GuestMemoryError, PAGE_SIZE } from '../src/index.js';

function twoRegions(): GuestMemory {
  return new GuestMemory([
    { gpa: 0, size: 0x10000, buffer: new SharedArrayBuffer(0x10000) },
    { gpa: 0x10000, size: 0x8000, buffer: new SharedArrayBuffer(0x8000) },
    { gpa: 0x100000, size: 0x1000, buffer: new SharedArrayBuffer(0x1000) },
  ]);
}

describe('GuestMemory', () => {
  it('reads back what was written, little-endian', () => {
    const m = twoRegions();
    m.writeU32(0x100, 0x11223344);
    expect(m.readU8(0x100)).to.equal(0x44);
    expect(m.readU16(0x102)).to.equal(0x1122);
    m.writeU64(0x200, 0x0102030405060708n);
    expect(m.readU64(0x200)).to.equal(0x0102030405060708n);
  });

  it('copies across adjacent regions but refuses a zero-copy slice that straddles them', () => {
    const m = twoRegions();
    m.write(0xfffe, Uint8Array.of(1, 2, 3, 4));
    const back = new Uint8Array(4);
    m.read(0xfffe, back);
    expect([...back]).to.deep.equal([1, 2, 3, 4]);
    expect(() => m.slice(0xfffe, 4)).to.throw(GuestMemoryError);
  });

  it('refuses accesses in holes, past the end, with negative or overflowing ranges', () => {
    const m = twoRegions();
    expect(() => m.readU32(0x18000)).to.throw(GuestMemoryError, /0x18000/);
    expect(() => m.write(0x100ffe, new Uint8Array(4))).to.throw(GuestMemoryError);
    expect(() => m.slice(-1, 1)).to.throw(GuestMemoryError);
    expect(() => m.slice(Number.MAX_SAFE_INTEGER, 2)).to.throw(GuestMemoryError);
    expect(() => m.slice(0.5, 2)).to.throw(GuestMemoryError);
    expect(m.contains(0x17fff, 2)).to.equal(false);
  });

  it('marks pages written by devices dirty only while tracking is on', () => {
    const m = twoRegions();
    m.writeU8(0x10, 1);
    m.setDirtyTracking(true);
    m.write(PAGE_SIZE * 3 - 1, Uint8Array.of(1, 2));
    const bits = m.takeDeviceDirty(0);
    expect(bits[0]).to.equal(0b1100);
    expect(m.takeDeviceDirty(0)[0]).to.equal(0);
  });

  it('shares dirty tracking with a GuestMemory built from its list(), as an iothread builds one', () => {
    const m = twoRegions();
    const copy = new GuestMemory(m.list());
    copy.writeU8(PAGE_SIZE * 5, 1); // tracking off: not recorded
    m.setDirtyTracking(true);
    copy.write(PAGE_SIZE * 7, Uint8Array.of(1));
    expect(m.takeDeviceDirty(0)[0]).to.equal(1 << 7);
    m.setDirtyTracking(false);
    copy.writeU8(PAGE_SIZE * 9, 1);
    expect(m.takeDeviceDirty(0)[0]).to.equal(0);
  });

  it('passes a region\'s memfd through list()', () => {
    const buffer = new SharedArrayBuffer(0x1000);
    expect(new GuestMemory([{ gpa: 0, size: 0x1000, buffer, fd: 42 }]).list()[0]?.fd).to.equal(42);
    expect(new GuestMemory([{ gpa: 0, size: 0x1000, buffer }]).list()[0]?.fd).to.equal(undefined);
  });

  it('never touches bytes outside the accessed range (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: -10, max: 0x20000 }), fc.integer({ min: 0, max: 0x300 }), (gpa, len) => {
        const buf = new SharedArrayBuffer(0x10000);
        const m = new GuestMemory([{ gpa: 0, size: 0x8000, buffer: buf }]);
        const sentinel = new Uint8Array(buf, 0x8000);
        sentinel.fill(0xa5);
        try {
          m.fill(gpa, len, 0x5a);
        } catch (err) {
          expect(err).to.be.instanceOf(GuestMemoryError);
        }
        return sentinel.every((b) => b === 0xa5);
      }),
    );
  });
});
