/// <reference types="mocha" />
import { expect } from 'chai';
import fc from 'fast-check';
import { portIn, portOut } from '@tsvmm/core/testing';
import { PCI_COMMAND, PCI_SECONDARY_BUS, PCI_SUBORDINATE_BUS, PciBridge, PciConfigMechanism1 } from '../src/index.js';
import { pciRig, TestFunction } from './rig.js';

const cfgAddr = (bus: number, dev: number, fn: number, reg: number): number => (0x80000000 | (bus << 16) | (dev << 11) | (fn << 8) | (reg & 0xfc)) >>> 0;

describe('configuration mechanism #1 (PCI 3.0 §3.2.2.3.2)', () => {
  it('latches CONFIG_ADDRESS on a dword write and reads it back', () => {
    const { t } = pciRig();
    portOut(t.pio, 0xcf8, 4, 0x80001234);
    expect(portIn(t.pio, 0xcf8, 4)).to.equal(0x80001234);
    portOut(t.pio, 0xcf8, 1, 0);
    portOut(t.pio, 0xcfa, 2, 0);
    expect(portIn(t.pio, 0xcf8, 4)).to.equal(0x80001234);
  });

  it('reads a function with dword, word and byte accesses at 0xcfc-0xcff', () => {
    const { t, root } = pciRig();
    root.attach(new TestFunction('dev', { revision: 7 }), { addr: '3' });
    portOut(t.pio, 0xcf8, 4, cfgAddr(0, 3, 0, 0));
    expect(portIn(t.pio, 0xcfc, 4)).to.equal(0x56781234);
    expect(portIn(t.pio, 0xcfe, 2)).to.equal(0x5678);
    expect(portIn(t.pio, 0xcfd, 1)).to.equal(0x12);
    portOut(t.pio, 0xcf8, 4, cfgAddr(0, 3, 0, 0x08));
    expect(portIn(t.pio, 0xcfc, 1)).to.equal(7);
  });

  it('writes through the masks at the byte the port selects', () => {
    const { t, root } = pciRig();
    const fn = new TestFunction('dev');
    root.attach(fn, { addr: '3' });
    portOut(t.pio, 0xcf8, 4, cfgAddr(0, 3, 0, 0x3c));
    portOut(t.pio, 0xcfc, 1, 0x0b);
    portOut(t.pio, 0xcfd, 1, 0x04);
    expect(fn.config.read(0x3c, 2)).to.equal(0x000b);
    expect(fn.writes).to.deep.include([0x3c, 1]);
  });

  it('reads all ones from an absent function, a disabled address or an unreachable bus', () => {
    const { t, root } = pciRig();
    root.attach(new TestFunction('dev'), { addr: '3' });
    portOut(t.pio, 0xcf8, 4, cfgAddr(0, 4, 0, 0));
    expect(portIn(t.pio, 0xcfc, 4)).to.equal(0xffffffff);
    portOut(t.pio, 0xcf8, 4, cfgAddr(0, 3, 0, 0) & 0x7fffffff);
    expect(portIn(t.pio, 0xcfc, 4)).to.equal(0xffffffff);
    portOut(t.pio, 0xcf8, 4, cfgAddr(1, 3, 0, 0));
    expect(portIn(t.pio, 0xcfc, 2)).to.equal(0xffff);
  });

  it('routes bus numbers through bridges by their secondary..subordinate range', () => {
    const { t, root } = pciRig();
    const outer = new PciBridge({ id: 'outer', vendorId: 0x1b36, deviceId: 1 });
    const inner = new PciBridge({ id: 'inner', vendorId: 0x1b36, deviceId: 1 });
    root.attach(outer, { addr: '2' });
    outer.secondaryBus.attach(inner, { addr: '0' });
    inner.secondaryBus.attach(new TestFunction('deep', { deviceId: 0xbeef }), { addr: '5' });
    const cfg = (bus: number, dev: number, reg: number): number => {
      portOut(t.pio, 0xcf8, 4, cfgAddr(bus, dev, 0, reg));
      return portIn(t.pio, 0xcfc, 4);
    };
    const put = (bus: number, dev: number, reg: number, size: 1 | 4, v: number): void => {
      portOut(t.pio, 0xcf8, 4, cfgAddr(bus, dev, 0, reg));
      portOut(t.pio, 0xcfc + (reg & 3), size, v);
    };
    expect(cfg(2, 5, 0)).to.equal(0xffffffff);
    put(0, 2, PCI_SECONDARY_BUS, 1, 1);
    put(0, 2, PCI_SUBORDINATE_BUS, 1, 2);
    put(1, 0, PCI_SECONDARY_BUS, 1, 2);
    put(1, 0, PCI_SUBORDINATE_BUS, 1, 2);
    expect(cfg(2, 5, 0)).to.equal(0xbeef1234);
    expect(cfg(1, 0, 0)).to.equal(0x00011b36);
    put(0, 2, PCI_SUBORDINATE_BUS, 1, 1);
    expect(cfg(2, 5, 0)).to.equal(0xffffffff);
  });

  it('hands the byte at 0xcf9 to the chipset hook and not to CONFIG_ADDRESS', () => {
    const { t, root } = pciRig();
    const seen: number[] = [];
    t.ctx.pio.unregisterOwner('host');
    const m = new PciConfigMechanism1(root, { read: (_o, d) => d.fill(0x42), write: (_o, d) => seen.push(d[0] ?? -1) });
    t.ctx.pio.register(0xcf8, 8, m, 'host');
    portOut(t.pio, 0xcf9, 1, 6);
    expect(seen).to.deep.equal([6]);
    expect(portIn(t.pio, 0xcf9, 1)).to.equal(0x42);
    expect(m.address).to.equal(0);
  });

  it('random 0xcf8/0xcfc access sequences never throw (fast-check)', () => {
    const { t, root } = pciRig();
    const br = new PciBridge({ id: 'br', vendorId: 0x1b36, deviceId: 1 });
    root.attach(br, { addr: '1' });
    const fn = new TestFunction('dev', { interruptPin: 1 });
    fn.config.defineBar(0, { kind: 'mem32', size: 4096 });
    fn.config.defineBar(1, { kind: 'io', size: 256 });
    br.secondaryBus.attach(fn, { addr: '2' });
    root.attach(new TestFunction('root-dev'), { addr: '3' });
    const op = fc.record({
      port: fc.integer({ min: 0xcf8, max: 0xcff }),
      size: fc.constantFrom<1 | 2 | 4>(1, 2, 4),
      write: fc.boolean(),
      value: fc.oneof(fc.integer({ min: 0, max: 0xffffffff }), fc.constantFrom(0x80000000, 0x80010000, 0x80011000, 0x80001804, 0x80000804, 0xffffffff)),
    });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), (ops) => {
        for (const o of ops) {
          if (o.write) portOut(t.pio, o.port, o.size, o.value);
          else {
            const v = portIn(t.pio, o.port, o.size);
            expect(v).to.be.within(0, 2 ** (8 * o.size) - 1);
          }
        }
        // the machine stays consistent: whatever got mapped is owned by the device
        for (const r of [...t.pio.list(), ...t.mmio.list()]) expect(['host', 'dev', 'root-dev']).to.include(r.owner);
        fn.config.write(PCI_COMMAND, 2, 0);
      }),
    );
  });
});
