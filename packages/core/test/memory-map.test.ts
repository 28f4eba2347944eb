import { expect } from 'chai';
import { ConfigError, E820_RAM, GiB, MiB, parseMemorySize, pcMemoryLayout } from '../src/index.js';

const i440fx = { maxRamBelowFourGiB: 0xe0000000, gigabyteAlign: true };

describe('PC memory layout', () => {
  it('puts small RAM entirely below 4 GiB', () => {
    const l = pcMemoryLayout(128 * MiB, i440fx);
    expect(l.slots).to.deep.equal([{ gpa: 0, size: 128 * MiB }]);
    expect(l.e820.filter((e) => e.type === E820_RAM).map((e) => [e.addr, e.size])).to.deep.equal([
      [0, 0x9fc00],
      [0x100000, 127 * MiB],
    ]);
  });

  it('splits at 3 GiB with gigabyte alignment once RAM reaches the PCI hole', () => {
    const l = pcMemoryLayout(4 * GiB, i440fx);
    expect(l.belowFourGiB).to.equal(3 * GiB);
    expect(l.slots).to.deep.equal([
      { gpa: 0, size: 3 * GiB },
      { gpa: 4 * GiB, size: 1 * GiB },
    ]);
  });

  it('splits at 0xe0000000 without gigabyte alignment', () => {
    const l = pcMemoryLayout(4 * GiB, { ...i440fx, gigabyteAlign: false });
    expect(l.belowFourGiB).to.equal(0xe0000000);
    expect(l.aboveFourGiB).to.equal(4 * GiB - 0xe0000000);
  });

  it('cuts RAM above 4 GiB into slots of at most 4 GiB', () => {
    const l = pcMemoryLayout(12 * GiB, i440fx);
    expect(l.slots.map((s) => s.size)).to.deep.equal([3 * GiB, 4 * GiB, 4 * GiB, 1 * GiB]);
  });

  it('rejects sizes that are too small or not page multiples', () => {
    expect(() => pcMemoryLayout(1 * MiB, i440fx)).to.throw(ConfigError, /too small/);
    expect(() => pcMemoryLayout(128 * MiB + 1, i440fx)).to.throw(ConfigError, /multiple of 4 KiB/);
  });
});

describe('memory size parsing', () => {
  it('reads bare numbers as MiB, like QEMU -m', () => {
    expect(parseMemorySize('128')).to.equal(128 * MiB);
  });
  it('accepts K/M/G/T suffixes in any case, with B or iB', () => {
    expect(parseMemorySize('1G')).to.equal(GiB);
    expect(parseMemorySize('512mib')).to.equal(512 * MiB);
    expect(parseMemorySize('64K')).to.equal(64 * 1024);
    expect(parseMemorySize('1.5G')).to.equal(1.5 * GiB);
  });
  it('refuses text that does not parse, naming it', () => {
    expect(() => parseMemorySize('lots')).to.throw(ConfigError, /'lots' does not parse/);
    expect(() => parseMemorySize('12X')).to.throw(ConfigError);
  });
});
