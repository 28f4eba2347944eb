import { expect } from 'chai';
import { AddressRangeError, AddressSpace, type BusDevice } from '../src/index.js';

class Recorder implements BusDevice {
  reads: number[] = [];
  writes: [number, number[]][] = [];
  read(offset: number, data: Uint8Array): void {
    this.reads.push(offset);
    data.fill(0x42);
  }
  write(offset: number, data: Uint8Array): void {
    this.writes.push([offset, [...data]]);
  }
}

describe('AddressSpace', () => {
  it('hands a device the offset into its own range', () => {
    const pio = new AddressSpace('pio', 0x10000);
    const dev = new Recorder();
    pio.register(0x3f8, 8, dev, 'serial0');
    pio.write(0x3fb, Uint8Array.of(0x80));
    expect(dev.writes).to.deep.equal([[3, [0x80]]]);
  });

  it('rejects a range overlapping another with both owners named', () => {
    const pio = new AddressSpace('pio', 0x10000);
    pio.register(0xf4, 4, new Recorder(), 'debugexit0');
    expect(() => pio.register(0xf6, 2, new Recorder(), 'other')).to.throw(AddressRangeError, /other: I\/O ports 0xf6-0xf7 overlaps I\/O ports 0xf4-0xf7 claimed by debugexit0/);
  });

  it('rejects a range that swallows several existing ranges', () => {
    const mmio = new AddressSpace('mmio', 2 ** 40);
    mmio.register(0x1000, 0x10, new Recorder(), 'a');
    mmio.register(0x2000, 0x10, new Recorder(), 'b');
    expect(() => mmio.register(0x0, 0x10000, new Recorder(), 'c')).to.throw(AddressRangeError, /claimed by a/);
  });

  it('accepts adjacent ranges', () => {
    const pio = new AddressSpace('pio', 0x10000);
    pio.register(0x70, 2, new Recorder(), 'rtc');
    pio.register(0x72, 2, new Recorder(), 'next');
    pio.register(0x6e, 2, new Recorder(), 'prev');
    expect(pio.list().map((r) => r.owner)).to.deep.equal(['prev', 'rtc', 'next']);
  });

  it('rejects zero-length and out-of-space ranges', () => {
    const pio = new AddressSpace('pio', 0x10000);
    expect(() => pio.register(0x10, 0, new Recorder(), 'z')).to.throw(AddressRangeError, /zero or invalid length/);
    expect(() => pio.register(0xfffe, 4, new Recorder(), 'big')).to.throw(AddressRangeError, /outside the address space/);
    expect(() => pio.register(-1, 4, new Recorder(), 'neg')).to.throw(AddressRangeError, /invalid pio base/);
  });

  it('reads unclaimed ports as all ones and drops writes to them', () => {
    const pio = new AddressSpace('pio', 0x10000);
    const data = new Uint8Array(2);
    expect(pio.read(0x1234, data)).to.equal(false);
    expect([...data]).to.deep.equal([0xff, 0xff]);
    expect(pio.write(0x1234, data)).to.equal(false);
    expect(pio.unhandledAccesses).to.equal(2);
  });

  it('frees a range on unregister so it can be claimed again', () => {
    const pio = new AddressSpace('pio', 0x10000);
    const r = pio.register(0x60, 1, new Recorder(), 'kbd');
    pio.read(0x60, new Uint8Array(1));
    pio.unregister(r);
    expect(pio.find(0x60)).to.equal(undefined);
    pio.register(0x60, 1, new Recorder(), 'kbd2');
    pio.unregisterOwner('kbd2');
    expect(pio.list()).to.have.length(0);
  });

  it('finds the right range among many', () => {
    const pio = new AddressSpace('pio', 0x10000);
    const devs: Recorder[] = [];
    for (let i = 0; i < 100; i++) {
      const d = new Recorder();
      devs.push(d);
      pio.register(i * 16 + 3, 5, d, `d${i}`);
    }
    for (let i = 99; i >= 0; i--) {
      expect(pio.find(i * 16 + 5)?.owner).to.equal(`d${i}`);
      expect(pio.find(i * 16 + 8)).to.equal(undefined);
    }
  });
});
