import { expect } from 'chai';
import { decodeSignature, findCpuidEntry, unpackAscii, vendorOf, type CpuidEntry } from '../src/index.js';
import { deriveKvmSupportedCpuid, fixtureRaw, hasBit, loadHostFixture } from './cpu-fixtures.js';

const brandOf = (table: readonly CpuidEntry[]): string =>
  unpackAscii(
    [0x80000002, 0x80000003, 0x80000004].flatMap((fn) => {
      const e = findCpuidEntry(table, fn);
      return e === undefined ? [0, 0, 0, 0] : [e.eax, e.ebx, e.ecx, e.edx];
    }),
  ).trim();

describe('recorded host fixtures', () => {
  for (const file of ['intel-skylake-i5-6600k.json', 'amd-fx-8350-piledriver.json']) {
    it(`${file}: the stored supported table is what the derivation makes of the raw dump`, () => {
      const fx = loadHostFixture(file);
      if (fx.deriveOptions === undefined) throw new Error('fixture has no deriveOptions');
      expect(deriveKvmSupportedCpuid(fixtureRaw(fx), fx.deriveOptions)).to.deep.equal(fx.supported);
    });
  }

  it('the Intel raw dump is the i5-6600K it claims to be', () => {
    const raw = fixtureRaw(loadHostFixture('intel-skylake-i5-6600k.json'));
    expect(vendorOf(raw)).to.equal('GenuineIntel');
    expect(brandOf(raw)).to.equal('Intel(R) Core(TM) i5-6600K CPU @ 3.50GHz');
    expect(decodeSignature(findCpuidEntry(raw, 1)?.eax ?? 0)).to.deep.equal({ family: 6, model: 94, stepping: 3 });
  });

  it('the AMD raw dump is the FX-8350 it claims to be', () => {
    const raw = fixtureRaw(loadHostFixture('amd-fx-8350-piledriver.json'));
    expect(vendorOf(raw)).to.equal('AuthenticAMD');
    expect(brandOf(raw)).to.equal('AMD FX(tm)-8350 Eight-Core Processor');
    expect(decodeSignature(findCpuidEntry(raw, 1)?.eax ?? 0)).to.deep.equal({ family: 0x15, model: 2, stepping: 0 });
  });

  it('the derived Intel table has the Haswell features and no brand (KVM does not pass 0x80000002..4)', () => {
    const fx = loadHostFixture('intel-skylake-i5-6600k.json');
    for (const [fn, reg, bit] of [
      [1, 'ecx', 12],
      [1, 'ecx', 22],
      [7, 'ebx', 4],
      [7, 'ebx', 5],
      [7, 'ebx', 11],
    ] as const) {
      expect(hasBit(fx.supported, fn, 0, reg, bit), `${fn}.${reg}[${bit}]`).to.equal(true);
    }
    expect(brandOf(fx.supported)).to.equal('');
    expect(fx.hostCaps).to.include({ hyperv: true, hypervTime: true, hypervSynic2: true, tscDeadlineTimer: true });
  });

  it('this development host lacks SSE3, MOVBE, FMA, AVX2 and Hyper-V in its KVM table', () => {
    const fx = loadHostFixture('pvm-dev-host-2026.json');
    expect(hasBit(fx.supported, 1, 0, 'ecx', 0)).to.equal(false);
    expect(hasBit(fx.supported, 1, 0, 'ecx', 22)).to.equal(false);
    expect(hasBit(fx.supported, 1, 0, 'ecx', 12)).to.equal(false);
    expect(hasBit(fx.supported, 7, 0, 'ebx', 5)).to.equal(false);
    expect(fx.hostCaps.hyperv).to.equal(false);
  });
});
