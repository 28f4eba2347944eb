/// <reference types="mocha" />
import { expect } from 'chai';
import { parseProperties } from '@tsvmm/core';
import { createTestDeviceContext, type TestDeviceContext } from '@tsvmm/core/testing';
import { PCI_CAP_ID_SLOTID, PCI_ROOT_BUS, PciBus, PciConfigSpace, pciBusFor, type PciFunction } from '@tsvmm/pci';
import { pciBridgeType, type PciBridgeDevice } from '../src/index.js';

function machine(): { t: TestDeviceContext; root: PciBus } {
  const t = createTestDeviceContext();
  const root = new PciBus({ name: 'pci.0', hotpluggable: true, platform: { pio: t.ctx.pio, mmio: t.ctx.mmio, notify: t.ctx.notify, intx: { setIntx: () => undefined } } });
  t.ctx.provide(PCI_ROOT_BUS, root);
  return { t, root };
}

function bridge(t: TestDeviceContext, id: string, props: Record<string, unknown>): PciBridgeDevice {
  const d = pciBridgeType.create(id, parseProperties(pciBridgeType.properties, props, `device '${id}' (pci-bridge)`)) as PciBridgeDevice;
  d.realize(t.ctx);
  return d;
}

class Fn implements PciFunction {
  readonly config: PciConfigSpace;
  constructor(readonly id: string) {
    this.config = new PciConfigSpace(id, { vendorId: 1, deviceId: 2, classCode: 0xff });
  }
}

describe('pci-bridge', () => {
  it("is QEMU's 1b36:0001 class 0604 with a type 1 header, no interrupt pin and no BARs (shpc=off)", () => {
    const { t } = machine();
    const c = bridge(t, 'br0', { chassis_nr: 1 }).bridge.config;
    expect(c.read(0, 4)).to.equal(0x00011b36);
    expect(c.read(0x08, 4)).to.equal(0x06040000);
    expect(c.read(0x0e, 1)).to.equal(1);
    expect(c.read(0x06, 2)).to.equal(0x00b0);
    expect(c.read(0x3d, 1)).to.equal(0);
    expect(c.bars()).to.deep.equal([]);
    expect(c.read(0x24, 4)).to.equal(0x00010001);
  });

  it('carries chassis_nr in a Slot Identification capability at 0x40, as QEMU', () => {
    const { t } = machine();
    const c = bridge(t, 'br0', { chassis_nr: 5 }).bridge.config;
    expect(c.findCapability(PCI_CAP_ID_SLOTID)).to.equal(0x40);
    expect(c.read(0x40, 4)).to.equal(0x05200004);
  });

  it('requires chassis_nr and refuses shpc=on and msi=on with errors that say why', () => {
    const parse = (p: Record<string, unknown>): unknown => parseProperties(pciBridgeType.properties, p, "device 'br0' (pci-bridge)");
    expect(() => parse({})).to.throw(/'chassis_nr': each pci-bridge needs a unique chassis_nr/);
    expect(() => parse({ chassis_nr: 1, shpc: 'on' })).to.throw(/'shpc': the standard hot-plug controller is not implemented/);
    expect(() => parse({ chassis_nr: 1, msi: 'on' })).to.throw(/'msi'/);
    expect(() => parse({ chassis_nr: 1, shpc: 'off', msi: 'off' })).to.not.throw();
    expect(() => parse({ chassis_nr: 256 })).to.throw(/at most 255/);
  });

  it('has a 32-slot secondary bus named by its id, which devices name with bus=', () => {
    const { t } = machine();
    const br = bridge(t, 'br0', { chassis_nr: 1 });
    const bus = pciBusFor(t.ctx, 'br0', 'dev');
    expect(bus).to.equal(br.bridge.secondaryBus);
    for (let i = 0; i < 32; i++) bus.attach(new Fn(`f${i}`));
    expect(() => bus.attach(new Fn('extra'))).to.throw(/PCI bus 'br0' is full/);
    expect(() => pciBusFor(t.ctx, 'br1', 'dev')).to.throw(/no PCI bus 'br1'.*buses so far: pci\.0, br0/);
  });

  it('refuses hot-plugging behind it, saying the bridge has no hot-plug controller', () => {
    const { t } = machine();
    const br = bridge(t, 'br0', { chassis_nr: 1 });
    expect(() => br.bridge.secondaryBus.attach(new Fn('late'), { hotplug: true })).to.throw(
      /cannot hot-plug late into PCI bus 'br0': pci-bridge br0 has no hot-plug controller .*shpc=off/,
    );
  });

  it('nests: a bridge behind a bridge with addr=', () => {
    const { t, root } = machine();
    bridge(t, 'br0', { chassis_nr: 1, addr: '5' });
    const inner = bridge(t, 'br1', { chassis_nr: 2, bus: 'br0', addr: '0x1f' });
    expect(root.findBus('br1')).to.equal(inner.bridge.secondaryBus);
    expect(inner.describe()).to.include({ addr: 'br0:1f.0', chassis_nr: 2 });
  });

  it('keeps the chassis number across reset and unplugs the devices behind it on unrealize', () => {
    const { t, root } = machine();
    const br = bridge(t, 'br0', { chassis_nr: 3 });
    br.bridge.config.write(0x43, 1, 9);
    root.resetAll();
    expect(br.bridge.config.read(0x43, 1)).to.equal(9);
    br.bridge.secondaryBus.attach(new Fn('x'));
    br.unrealize();
    expect(br.bridge.secondaryBus.attachments()).to.deep.equal([]);
    expect(root.attachments()).to.deep.equal([]);
  });
});
