/// <reference types="mocha" />
import { expect } from 'chai';
import { parseProperties } from '@tsvmm/core';
import { createTestDeviceContext, portIn, portOut, type TestDeviceContext } from '@tsvmm/core/testing';
import { PCI_BASE_ADDRESS_0, PCI_COMMAND, PCI_ROOT_BUS, PciBus } from '@tsvmm/pci';
import { IOTEST_DATAMATCH, IOTEST_NOMATCH, pciTestdevType, type PciTestdev } from '../src/index.js';

const MEM = 0xfe000000;
const IO = 0xc000;

function setup(props: Record<string, unknown> = {}): { t: TestDeviceContext; dev: PciTestdev } {
  const t = createTestDeviceContext();
  const root = new PciBus({ name: 'pci.0', hotpluggable: true, platform: { pio: t.ctx.pio, mmio: t.ctx.mmio, notify: t.ctx.notify, intx: { setIntx: () => undefined } } });
  t.ctx.provide(PCI_ROOT_BUS, root);
  const dev = pciTestdevType.create('td', parseProperties(pciTestdevType.properties, props, 'pci-testdev')) as PciTestdev;
  dev.realize(t.ctx);
  const c = dev.config;
  c.write(PCI_BASE_ADDRESS_0, 4, MEM);
  c.write(PCI_BASE_ADDRESS_0 + 4, 4, IO);
  c.write(PCI_COMMAND, 2, 3);
  return { t, dev };
}

function mread(t: TestDeviceContext, addr: number, size: number): number {
  const d = new Uint8Array(size);
  t.mmio.read(addr, d);
  return d.reduceRight((v, x) => v * 256 + x, 0);
}
function mwrite8(t: TestDeviceContext, addr: number, v: number): void {
  t.mmio.write(addr, Uint8Array.of(v));
}
function name(t: TestDeviceContext, base: number, io: boolean): string {
  let s = '';
  for (let i = 16; i < 64; i++) {
    const c = io ? portIn(t.pio, base + i, 1) : mread(t, base + i, 1);
    if (c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

describe('pci-testdev (QEMU docs/specs/pci-testdev.rst)', () => {
  it('is 1b36:0005 class 00ff with a 4 KiB memory BAR0, a 256-byte I/O BAR1 and no interrupt pin', () => {
    const { dev } = setup();
    expect(dev.config.read(0, 4)).to.equal(0x00051b36);
    expect(dev.config.read(0x08, 4)).to.equal(0x00ff0000);
    expect(dev.config.read(0x3d, 1)).to.equal(0);
    expect(dev.config.bar(0)?.size).to.equal(4096);
    expect(dev.config.bar(1)?.kind).to.equal('io');
    expect(dev.config.bar(1)?.size).to.equal(256);
    expect(dev.config.bar(2)).to.equal(undefined);
  });

  it('membar=SIZE adds a 64-bit prefetchable BAR2 with nothing behind it', () => {
    const { dev } = setup({ membar: '0x100000' });
    expect(dev.config.read(PCI_BASE_ADDRESS_0 + 8, 4)).to.equal(0xc);
    expect(dev.config.bar(2)?.size).to.equal(0x100000);
    expect(() => parseProperties(pciTestdevType.properties, { membar: '3000' }, 'p')).to.throw(/power of two/);
  });

  it('reads zeros until a test is started', () => {
    const { t } = setup();
    expect(mread(t, MEM, 4)).to.equal(0);
    expect(portIn(t.pio, IO + 4, 4)).to.equal(0);
  });

  it('describes each test: number, width 1, offset, data and name', () => {
    const { t } = setup();
    const expectTest = (io: boolean, n: number, offset: number, data: number, nm: string): void => {
      const base = io ? IO : MEM;
      if (io) portOut(t.pio, base, 1, n);
      else mwrite8(t, base, n);
      const rd = (off: number, size: 1 | 4): number => (io ? portIn(t.pio, base + off, size) : mread(t, base + off, size));
      expect(rd(0, 1)).to.equal(n + (io ? 3 : 0));
      expect(rd(1, 1)).to.equal(1);
      expect(rd(4, 4)).to.equal(offset);
      expect(rd(8, 4)).to.equal(data);
      expect(name(t, base, io)).to.equal(nm);
    };
    expectTest(false, 0, 2048, IOTEST_DATAMATCH, 'mmio-no-eventfd');
    expectTest(false, 1, 2049, IOTEST_NOMATCH, 'mmio-wildcard-eventfd');
    expectTest(false, 2, 2050, IOTEST_DATAMATCH, 'mmio-datamatch-eventfd');
    expectTest(true, 0, 131, IOTEST_DATAMATCH, 'portio-no-eventfd');
    expectTest(true, 1, 132, IOTEST_NOMATCH, 'portio-wildcard-eventfd');
    expectTest(true, 2, 133, IOTEST_DATAMATCH, 'portio-datamatch-eventfd');
    portOut(t.pio, IO, 1, 3);
    expect(portIn(t.pio, IO + 1, 1)).to.equal(0);
  });

  it('no-eventfd tests count matching writes in `count`', () => {
    const { t } = setup();
    portOut(t.pio, IO, 1, 0);
    for (let i = 0; i < 5; i++) portOut(t.pio, IO + 131, 1, IOTEST_DATAMATCH);
    portOut(t.pio, IO + 131, 1, 0x12);
    portOut(t.pio, IO + 130, 1, IOTEST_DATAMATCH);
    expect(portIn(t.pio, IO + 12, 4)).to.equal(5);
  });

  it('eventfd tests assign an ioeventfd at BAR + offset (datamatch as QEMU) that KVM signals instead of counting', () => {
    const { t, dev } = setup();
    mwrite8(t, MEM, 2);
    expect([...t.notify.ioeventfds].map((s) => [s.space, s.addr, s.len, s.datamatch])).to.deep.equal([['mmio', MEM + 2050, 1, BigInt(IOTEST_DATAMATCH)]]);
    for (let i = 0; i < 16; i++) expect(t.notify.guestWrite('mmio', MEM + 2050, 1, BigInt(IOTEST_DATAMATCH))).to.equal(true);
    expect(mread(t, MEM + 12, 4)).to.equal(0);
    expect(dev.ioeventfdHitCount).to.equal(16n);
    portOut(t.pio, IO, 1, 1);
    expect([...t.notify.ioeventfds].map((s) => [s.space, s.addr, s.len, s.datamatch])).to.deep.equal([['pio', IO + 132, 1, undefined]]);
  });

  it('the MMIO wildcard test matches any width, as QEMU with KVM_CAP_IOEVENTFD_ANY_LENGTH', () => {
    const { t } = setup();
    mwrite8(t, MEM, 1);
    expect([...t.notify.ioeventfds].map((s) => s.len)).to.deep.equal([0]);
  });

  it('the ioeventfd follows the BAR when the guest moves it', () => {
    const { t, dev } = setup();
    portOut(t.pio, IO, 1, 2);
    dev.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xd000);
    expect([...t.notify.ioeventfds].map((s) => s.addr)).to.deep.equal([0xd000 + 133]);
    dev.config.write(PCI_COMMAND, 2, 0);
    expect(t.notify.ioeventfds.size).to.equal(0);
  });

  it('starting another test or resetting removes the previous ioeventfd', () => {
    const { t, dev } = setup();
    portOut(t.pio, IO, 1, 2);
    portOut(t.pio, IO, 1, 0);
    expect(t.notify.ioeventfds.size).to.equal(0);
    portOut(t.pio, IO, 1, 1);
    dev.reset();
    expect(t.notify.ioeventfds.size).to.equal(0);
    expect(portIn(t.pio, IO, 1)).to.equal(0);
  });

  it('takes bus, addr and multifunction as QEMU does and rejects unknown properties', () => {
    expect(() => parseProperties(pciTestdevType.properties, { addr: '0x20' }, "device 'x'")).to.throw(/slot 0x20/);
    expect(() => parseProperties(pciTestdevType.properties, { foo: 1 }, "device 'x'")).to.throw(/unknown property 'foo'/);
    const t = createTestDeviceContext();
    const dev = pciTestdevType.create('x', parseProperties(pciTestdevType.properties, { bus: 'br9' }, 'x'));
    expect(() => dev.realize(t.ctx)).to.throw(/no PCI host bridge/);
  });
});
