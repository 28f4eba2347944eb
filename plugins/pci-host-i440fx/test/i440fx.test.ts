/// <reference types="mocha" />
import { expect } from 'chai';
import { createTestDeviceContext, portIn, portOut, type TestDeviceContext } from '@tsvmm/core/testing';
import { parseProperties } from '@tsvmm/core';
import { PCI_ROOT_BUS, PciBridge, PciConfigSpace, type PciBus, type PciFunction } from '@tsvmm/pci';
import { I440fxHost, Piix3, PiixPirqRouter, i440fxHostType, piix3Type, piixPirqOf } from '../src/index.js';

const cfgAddr = (bus: number, dev: number, fn: number, reg: number): number => (0x80000000 | (bus << 16) | (dev << 11) | (fn << 8) | (reg & 0xfc)) >>> 0;

function cfgRead(t: TestDeviceContext, bus: number, dev: number, fn: number, reg: number, size: 1 | 2 | 4 = 4): number {
  portOut(t.pio, 0xcf8, 4, cfgAddr(bus, dev, fn, reg));
  return portIn(t.pio, 0xcfc + (reg & 3), size);
}

function cfgWrite(t: TestDeviceContext, bus: number, dev: number, fn: number, reg: number, size: 1 | 2 | 4, v: number): void {
  portOut(t.pio, 0xcf8, 4, cfgAddr(bus, dev, fn, reg));
  portOut(t.pio, 0xcfc + (reg & 3), size, v);
}

class IntxFunction implements PciFunction {
  readonly config: PciConfigSpace;
  constructor(
    readonly id: string,
    pin: number,
    multifunction = false,
  ) {
    this.config = new PciConfigSpace(id, { vendorId: 0x1b36, deviceId: 0x0005, classCode: 0x00ff, interruptPin: pin, multifunction });
  }
}

function machine(): { t: TestDeviceContext; host: I440fxHost; piix: Piix3; root: PciBus } {
  const t = createTestDeviceContext({ machine: { ramSize: 128 << 20, ramBelowFourGiB: 128 << 20 } });
  const host = i440fxHostType.create('i440fx', parseProperties(i440fxHostType.properties, {}, 'host')) as I440fxHost;
  const piix = piix3Type.create('piix3', parseProperties(piix3Type.properties, {}, 'piix3')) as Piix3;
  host.realize(t.ctx);
  piix.realize(t.ctx);
  const root = t.ctx.lookup<PciBus>(PCI_ROOT_BUS);
  if (root === undefined) throw new Error('no root bus');
  return { t, host, piix, root };
}

describe('i440FX host bridge and PIIX3', () => {
  it('answers configuration mechanism #1 as 8086:1237 rev 02 class 0600 at 00.0 and 8086:7000 class 0601 at 01.0', () => {
    const { t } = machine();
    expect(cfgRead(t, 0, 0, 0, 0)).to.equal(0x12378086);
    expect(cfgRead(t, 0, 0, 0, 8)).to.equal(0x06000002);
    expect(cfgRead(t, 0, 1, 0, 0)).to.equal(0x70008086);
    expect(cfgRead(t, 0, 1, 0, 8) >>> 16).to.equal(0x0601);
    expect(cfgRead(t, 0, 1, 0, 0x0e, 1)).to.equal(0x80);
    expect(cfgRead(t, 0, 2, 0, 0)).to.equal(0xffffffff);
  });

  it('offers the root bus pci.0, hot-pluggable', () => {
    const { root } = machine();
    expect(root.name).to.equal('pci.0');
    expect(root.hotpluggable).to.equal(true);
  });

  it('PIIX3 PIRQ route registers reset to 0x80 (disabled)', () => {
    const { t } = machine();
    expect(cfgRead(t, 0, 1, 0, 0x60)).to.equal(0x80808080);
  });

  it('machineReady programs PIRQA-D to IRQ 10, 10, 11, 11 and enables decode, like SeaBIOS', () => {
    const { t, host } = machine();
    host.machineReady();
    expect(cfgRead(t, 0, 1, 0, 0x60)).to.equal(0x0b0b0a0a);
    expect(cfgRead(t, 0, 0, 0, 4, 2)).to.equal(0x0103);
    expect(cfgRead(t, 0, 0, 0, 0x57, 1)).to.equal(0x10);
    expect(cfgRead(t, 0, 0, 0, 0x58)).to.equal(0x11111000);
    // the ELCR: IRQ 10 and 11 level-triggered (0x4d1 = 0x0c), 0x4d0 all edge
    expect(t.picElcr()).to.equal(0x0c00);
  });

  it('raises the ISA IRQ a root device\'s INTx is routed to, level, and shares it between sources', () => {
    const { t, host, root } = machine();
    host.machineReady();
    // slot 3 INTA -> PIRQC -> 11; slot 4 INTD -> PIRQ (4-1+3)&3 = 2 -> PIRQC -> 11 too
    const a = root.attach(new IntxFunction('a', 1), { addr: '3' });
    const b = root.attach(new IntxFunction('b', 4), { addr: '4' });
    a.setIntx(true);
    expect(t.irqLevels.get(11)).to.equal(true);
    b.setIntx(true);
    a.setIntx(false);
    expect(t.irqLevels.get(11)).to.equal(true);
    b.setIntx(false);
    expect(t.irqLevels.get(11)).to.equal(false);
    expect(t.irqLog.filter(([g]) => g === 11)).to.deep.equal([
      [11, true],
      [11, false],
    ]);
  });

  it('follows the guest rewriting a PIRQ route: the line moves, a disabled route drives nothing', () => {
    const { t, host, root } = machine();
    host.machineReady();
    const a = root.attach(new IntxFunction('a', 1), { addr: '2' }); // PIRQB -> 10
    a.setIntx(true);
    expect(t.irqLevels.get(10)).to.equal(true);
    cfgWrite(t, 0, 1, 0, 0x61, 1, 5);
    expect(t.irqLevels.get(10)).to.equal(false);
    expect(t.irqLevels.get(5)).to.equal(true);
    cfgWrite(t, 0, 1, 0, 0x61, 1, 0x85);
    expect(t.irqLevels.get(5)).to.equal(false);
  });

  it('swizzles INTx from behind a bridge to the PIRQ SeaBIOS expects', () => {
    const { t, host, root } = machine();
    const br = new PciBridge({ id: 'br0', vendorId: 0x1b36, deviceId: 1 });
    root.attach(br, { addr: '2' });
    const dev = new IntxFunction('d', 1);
    const att = br.secondaryBus.attach(dev, { addr: '3' });
    host.machineReady();
    const line = cfgRead(t, 1, 3, 0, 0x3c, 1);
    att.setIntx(true);
    expect(t.irqLevels.get(line)).to.equal(true);
    // (pin 0 + slot 3) % 4 = INTD at root slot 2 -> PIRQ (2 - 1 + 3) & 3 = 0 -> IRQ 10
    expect(line).to.equal(10);
  });

  it('a PIRQ router with several PIRQs on one IRQ keeps it high until the last one drops', () => {
    const levels: [number, boolean][] = [];
    const router = new PiixPirqRouter((irq) => ({ raise: () => void levels.push([irq, true]), lower: () => void levels.push([irq, false]) }));
    router.setRoute(0, 10);
    router.setRoute(1, 10);
    const s1 = {};
    const s2 = {};
    router.setIntx(s1, 1, 0, true); // PIRQA
    router.setIntx(s2, 2, 0, true); // PIRQB
    router.setIntx(s1, 1, 0, false);
    expect(levels).to.deep.equal([[10, true]]);
    router.setIntx(s2, 2, 0, false);
    expect(levels).to.deep.equal([
      [10, true],
      [10, false],
    ]);
    expect(piixPirqOf(0, 0)).to.equal(3);
    router.setRoute(2, 13);
    expect(router.irqOf(2)).to.equal(undefined);
  });

  it('resets the machine when the guest sets RCPU in the reset control register at 0xcf9', () => {
    const { t } = machine();
    portOut(t.pio, 0xcf9, 1, 0x02);
    expect(portIn(t.pio, 0xcf9, 1)).to.equal(0x02);
    expect(t.resets).to.deep.equal([]);
    portOut(t.pio, 0xcf9, 1, 0x06);
    expect(t.resets).to.have.length(1);
    expect(t.resets[0]).to.match(/0xcf9/);
  });

  it('reset puts every function back to power-on; machineReady lays it out again', () => {
    const { t, host, piix } = machine();
    host.machineReady();
    host.reset();
    piix.reset();
    expect(cfgRead(t, 0, 1, 0, 0x60)).to.equal(0x80808080);
    expect(cfgRead(t, 0, 0, 0, 4, 2)).to.equal(0);
    host.machineReady();
    expect(cfgRead(t, 0, 1, 0, 0x60)).to.equal(0x0b0b0a0a);
  });

  it('PIIX3 without a host bridge says what is missing', () => {
    const t = createTestDeviceContext();
    const piix = piix3Type.create('piix3', {}) as Piix3;
    expect(() => piix.realize(t.ctx)).to.throw(/needs the i440FX host bridge/);
  });
});
