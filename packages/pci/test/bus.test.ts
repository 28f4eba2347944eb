/// <reference types="mocha" />
import { expect } from 'chai';
import { FakeNotifier } from '@tsvmm/core/testing';
import {
  PCI_BASE_ADDRESS_0,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_IO_BASE,
  PCI_IO_LIMIT,
  PCI_MEMORY_BASE,
  PCI_MEMORY_LIMIT,
  PCI_PREF_MEMORY_BASE,
  PCI_PREF_MEMORY_LIMIT,
  PCI_SECONDARY_BUS,
  PCI_STATUS,
  PCI_STATUS_INTERRUPT,
  PCI_SUBORDINATE_BUS,
  PciBridge,
  PciBusError,
  parsePciAddr,
} from '../src/index.js';
import { pciRig, RecordingRegisters, TestFunction } from './rig.js';

function bridge(id: string): PciBridge {
  return new PciBridge({ id, vendorId: 0x1b36, deviceId: 0x0001, hotplugRefusal: `${id} has no hot-plug controller` });
}

/** Program a bridge as firmware would: bus numbers, windows, decode on. */
function openBridge(br: PciBridge, sec: number, io: [number, number], mem: [number, number]): void {
  const c = br.config;
  c.write(PCI_SECONDARY_BUS, 1, sec);
  c.write(PCI_SUBORDINATE_BUS, 1, sec);
  c.write(PCI_IO_BASE, 1, io[0] >> 8);
  c.write(PCI_IO_LIMIT, 1, io[1] >> 8);
  c.write(PCI_MEMORY_BASE, 2, mem[0] >>> 16);
  c.write(PCI_MEMORY_LIMIT, 2, mem[1] >>> 16);
  c.write(PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
}

describe('PciBus', () => {
  describe('addr (QEMU syntax)', () => {
    it('reads a string as hex slot[.fn] and a number as devfn', () => {
      expect(parsePciAddr('0x5')).to.deep.equal({ slot: 5, fn: 0 });
      expect(parsePciAddr('10')).to.deep.equal({ slot: 16, fn: 0 });
      expect(parsePciAddr('1f.7')).to.deep.equal({ slot: 31, fn: 7 });
      expect(parsePciAddr(0x29)).to.deep.equal({ slot: 5, fn: 1 });
    });

    it('refuses slots past 0x1f, functions past 7 and junk', () => {
      expect(() => parsePciAddr('20')).to.throw(PciBusError, /slot 0x20 .*0-0x1f/);
      expect(() => parsePciAddr('3.8')).to.throw(PciBusError, /does not parse/);
      expect(() => parsePciAddr('slot3')).to.throw(PciBusError, /does not parse/);
      expect(() => parsePciAddr(256)).to.throw(PciBusError, /devfn/);
    });
  });

  describe('attach', () => {
    it('takes function 0 of the first free slot when no addr is given', () => {
      const { root } = pciRig();
      root.attach(new TestFunction('a'), { addr: '1' });
      expect(root.attach(new TestFunction('b')).devfn).to.equal(0);
      expect(root.attach(new TestFunction('c')).devfn).to.equal(2 << 3);
    });

    it('refuses a taken slot, naming the device that has it', () => {
      const { root } = pciRig();
      root.attach(new TestFunction('first'), { addr: '3' });
      expect(() => root.attach(new TestFunction('second'), { addr: '0x3' })).to.throw(PciBusError, /slot 03\.0 on bus 'pci\.0' is taken by first, so second cannot go there/);
    });

    it('refuses a device on a full bus with an error naming the bus and what to do', () => {
      const { root } = pciRig();
      for (let i = 0; i < 32; i++) root.attach(new TestFunction(`d${i}`));
      expect(() => root.attach(new TestFunction('one-too-many'))).to.throw(PciBusError, /PCI bus 'pci\.0' is full: all 32 slots are taken, so one-too-many has no place.*pci-bridge/);
    });

    it('a bridge bus has 32 slots too, and says so by its own name when full', () => {
      const { root } = pciRig();
      const br = bridge('br0');
      root.attach(br);
      for (let i = 0; i < 32; i++) br.secondaryBus.attach(new TestFunction(`d${i}`));
      expect(() => br.secondaryBus.attach(new TestFunction('x'))).to.throw(/PCI bus 'br0' is full/);
    });

    it('places functions 1-7 only beside a multi-function function 0', () => {
      const { root } = pciRig();
      root.attach(new TestFunction('single'), { addr: '4' });
      expect(() => root.attach(new TestFunction('f1'), { addr: '4.1' })).to.throw(/single-function single.*multifunction=on/);
      root.attach(new TestFunction('multi', { multifunction: true }), { addr: '5' });
      expect(root.attach(new TestFunction('f2'), { addr: '5.2' }).devfn).to.equal((5 << 3) | 2);
      root.attach(new TestFunction('f6-1'), { addr: '6.1' });
      expect(() => root.attach(new TestFunction('f6-0'), { addr: '6' })).to.throw(/must be multifunction=on/);
    });

    it('accepts hot-plug on the root bus and refuses it behind a bridge, saying why', () => {
      const { root } = pciRig();
      const br = bridge('br0');
      root.attach(br);
      expect(root.hotpluggable).to.equal(true);
      expect(br.secondaryBus.hotpluggable).to.equal(false);
      root.attach(new TestFunction('hot'), { hotplug: true });
      expect(() => br.secondaryBus.attach(new TestFunction('late'), { hotplug: true })).to.throw(
        PciBusError,
        /cannot hot-plug late into PCI bus 'br0': br0 has no hot-plug controller/,
      );
    });

    it('finds buses by name through bridges', () => {
      const { root } = pciRig();
      const a = bridge('a');
      const b = bridge('b');
      root.attach(a);
      a.secondaryBus.attach(b);
      expect(root.findBus('b')).to.equal(b.secondaryBus);
      expect(root.buses().map((x) => x.name)).to.deep.equal(['pci.0', 'a', 'b']);
    });
  });

  describe('BAR mapping follows the guest (PCI 3.0 §6.2.5)', () => {
    function setup() {
      const rig = pciRig();
      const fn = new TestFunction('dev');
      const regs = new RecordingRegisters();
      const io = new RecordingRegisters(0x11);
      fn.config.defineBar(0, { kind: 'mem32', size: 4096, handler: regs });
      fn.config.defineBar(1, { kind: 'io', size: 256, handler: io });
      rig.root.attach(fn, { addr: '3' });
      return { ...rig, fn, regs, io };
    }

    it('maps nothing until decode is enabled, then at the programmed address', () => {
      const { t, fn } = setup();
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
      fn.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xc000);
      expect(t.mmio.find(0xfe000000)).to.equal(undefined);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
      expect(t.mmio.find(0xfe000000)?.owner).to.equal('dev');
      expect(t.pio.find(0xc000)).to.equal(undefined);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
      expect(t.pio.find(0xc0ff)?.owner).to.equal('dev');
      expect(fn.config.bar(0)?.mappedAddress).to.equal(0xfe000000);
    });

    it('handlers see offsets into their BAR', () => {
      const { t, fn, regs } = setup();
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
      t.mmio.write(0xfe000010, Uint8Array.of(1, 2));
      expect(regs.writes).to.deep.equal([{ offset: 0x10, data: [1, 2] }]);
    });

    it('moves the mapping when the guest rewrites the BAR, and the old address stops answering', () => {
      const { t, fn } = setup();
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
      fn.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xc000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY | PCI_COMMAND_IO);
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfd000000);
      fn.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xe000);
      expect(t.mmio.find(0xfe000000)).to.equal(undefined);
      expect(t.mmio.find(0xfd000fff)?.owner).to.equal('dev');
      expect(t.pio.find(0xc000)).to.equal(undefined);
      expect(t.pio.find(0xe000)?.owner).to.equal('dev');
    });

    it('unmaps on disabled decode and while sizing puts the BAR at all ones', () => {
      const { t, fn } = setup();
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xffffffff);
      expect(t.mmio.list()).to.have.length(0);
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
      expect(t.mmio.list()).to.have.length(1);
      fn.config.write(PCI_COMMAND, 2, 0);
      expect(t.mmio.list()).to.have.length(0);
      expect(fn.config.bar(0)?.mappedAddress).to.equal(undefined);
    });

    it('leaves a BAR that collides with another range unmapped instead of failing', () => {
      const { t, fn } = setup();
      t.pio.register(0xc010, 8, new RecordingRegisters(), 'isa-thing');
      fn.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xc000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_IO);
      expect(fn.config.bar(1)?.mappedAddress).to.equal(undefined);
      fn.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xd000);
      expect(fn.config.bar(1)?.mappedAddress).to.equal(0xd000);
    });

    it('moves ioeventfds with the BAR and removes them while it is unmapped', () => {
      const { t, fn } = setup();
      const n = new FakeNotifier();
      fn.config.bar(0)?.addIoeventfd({ offset: 0x40, len: 2, datamatch: 7n, notifier: n });
      expect(t.notify.ioeventfds.size).to.equal(0);
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
      expect([...t.notify.ioeventfds].map((s) => [s.space, s.addr, s.len, s.datamatch])).to.deep.equal([['mmio', 0xfe000040, 2, 7n]]);
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfd000000);
      expect([...t.notify.ioeventfds].map((s) => s.addr)).to.deep.equal([0xfd000040]);
      expect(t.notify.guestWrite('mmio', 0xfd000040, 2, 7n)).to.equal(true);
      expect(n.count).to.equal(1n);
      fn.config.write(PCI_COMMAND, 2, 0);
      expect(t.notify.ioeventfds.size).to.equal(0);
    });

    it('detach unmaps every BAR', () => {
      const { t, fn, root } = setup();
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
      root.detach(fn);
      expect(t.mmio.list()).to.have.length(0);
      expect(root.functionAt(3 << 3)).to.equal(undefined);
    });
  });

  describe('BARs behind a bridge (PCI-to-PCI bridge 1.2 §3.2.5.6-10)', () => {
    function setup() {
      const rig = pciRig();
      const br = bridge('br0');
      rig.root.attach(br, { addr: '2' });
      const fn = new TestFunction('dev');
      fn.config.defineBar(0, { kind: 'mem32', size: 4096, handler: new RecordingRegisters() });
      fn.config.defineBar(1, { kind: 'io', size: 256, handler: new RecordingRegisters() });
      br.secondaryBus.attach(fn, { addr: '3' });
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe600000);
      fn.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xc000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY);
      return { ...rig, br, fn };
    }

    it('are reachable only once the bridge decodes and its windows hold them', () => {
      const { t, br, fn } = setup();
      expect(fn.config.bar(0)?.mappedAddress).to.equal(undefined);
      openBridge(br, 1, [0xc000, 0xcfff], [0xfe600000, 0xfe7fffff]);
      expect(t.mmio.find(0xfe600000)?.owner).to.equal('dev');
      expect(t.pio.find(0xc000)?.owner).to.equal('dev');
    });

    it('disappear when the bridge window moves away or decode is switched off', () => {
      const { t, br } = setup();
      openBridge(br, 1, [0xc000, 0xcfff], [0xfe600000, 0xfe7fffff]);
      br.config.write(PCI_MEMORY_BASE, 2, 0xfe80);
      br.config.write(PCI_MEMORY_LIMIT, 2, 0xfe80);
      expect(t.mmio.find(0xfe600000)).to.equal(undefined);
      expect(t.pio.find(0xc000)?.owner).to.equal('dev');
      br.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
      expect(t.pio.find(0xc000)).to.equal(undefined);
    });

    it('a device placed behind a bridge before the bridge is attached gets its ioeventfds once it is reachable', () => {
      const rig = pciRig();
      const br = bridge('late');
      const fn = new TestFunction('dev');
      const bar = fn.config.defineBar(1, { kind: 'io', size: 256, handler: new RecordingRegisters() });
      br.secondaryBus.attach(fn, { addr: '1' });
      bar.addIoeventfd({ offset: 4, len: 1, notifier: new FakeNotifier() });
      fn.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xc000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_IO);
      rig.root.attach(br, { addr: '2' });
      openBridge(br, 1, [0xc000, 0xcfff], [0xfe600000, 0xfe7fffff]);
      expect([...rig.t.notify.ioeventfds].map((s) => s.addr)).to.deep.equal([0xc004]);
      rig.root.detach(br);
      expect(rig.t.notify.ioeventfds.size).to.equal(0);
      expect(rig.t.pio.find(0xc000)).to.equal(undefined);
    });

    it('a BAR move whose ioeventfd KVM refuses still maps the BAR; the writes go to the device model', () => {
      const rig = pciRig();
      const fn = new TestFunction('dev');
      const regs = new RecordingRegisters();
      const bar = fn.config.defineBar(1, { kind: 'io', size: 256, handler: regs });
      rig.root.attach(fn, { addr: '1' });
      bar.addIoeventfd({ offset: 4, len: 1, notifier: new FakeNotifier() });
      const real = rig.t.notify.assignIoeventfd.bind(rig.t.notify);
      rig.t.notify.assignIoeventfd = () => {
        throw new Error('EEXIST');
      };
      fn.config.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xc000);
      expect(() => fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_IO)).to.not.throw();
      expect(bar.mappedAddress).to.equal(0xc000);
      rig.t.pio.write(0xc004, Uint8Array.of(1));
      expect(regs.writes).to.deep.equal([{ offset: 4, data: [1] }]);
      rig.t.notify.assignIoeventfd = real;
    });

    it('a memory BAR is forwarded through the prefetchable window too', () => {
      const { t, br } = setup();
      openBridge(br, 1, [0xc000, 0xcfff], [0xfe800000, 0xfe8fffff]);
      br.config.write(PCI_PREF_MEMORY_BASE, 2, 0xfe60);
      br.config.write(PCI_PREF_MEMORY_LIMIT, 2, 0xfe60);
      expect(t.mmio.find(0xfe600000)?.owner).to.equal('dev');
    });
  });

  describe('INTx (PCI 3.0 §2.2.6, bridge 1.2 §9.1)', () => {
    it('a root-bus function asserts its own slot and pin; Status.Interrupt follows', () => {
      const { root, router } = pciRig();
      const fn = new TestFunction('dev', { interruptPin: 2 });
      const att = root.attach(fn, { addr: '5' });
      att.setIntx(true);
      expect(router.asserted()).to.deep.equal([{ slot: 5, pin: 1 }]);
      expect(fn.config.read(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT).to.equal(PCI_STATUS_INTERRUPT);
      att.setIntx(false);
      expect(router.asserted()).to.deep.equal([]);
    });

    it('INTx Disable stops driving the line but Status.Interrupt stays', () => {
      const { root, router } = pciRig();
      const fn = new TestFunction('dev', { interruptPin: 1 });
      const att = root.attach(fn, { addr: '5' });
      att.setIntx(true);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_INTX_DISABLE);
      expect(router.asserted()).to.deep.equal([]);
      expect(fn.config.read(PCI_STATUS, 2) & PCI_STATUS_INTERRUPT).to.equal(PCI_STATUS_INTERRUPT);
      fn.config.write(PCI_COMMAND, 2, 0);
      expect(router.asserted()).to.deep.equal([{ slot: 5, pin: 0 }]);
    });

    it('swizzles (pin + slot) % 4 at every bridge on the way up', () => {
      const { root, router } = pciRig();
      const outer = bridge('outer');
      const inner = bridge('inner');
      root.attach(outer, { addr: '2' });
      outer.secondaryBus.attach(inner, { addr: '1' });
      const fn = new TestFunction('dev', { interruptPin: 3 }); // INTC#
      inner.secondaryBus.attach(fn, { addr: '6' }).setIntx(true);
      // inner bus slot 6 INTC (2) -> (2 + 6) % 4 = 0 at inner's slot 1 -> (0 + 1) % 4 = 1 at root slot 2
      expect(router.asserted()).to.deep.equal([{ slot: 2, pin: 1 }]);
    });

    it('keeps sources apart so a shared line is an OR of them', () => {
      const { root, router } = pciRig();
      const a = root.attach(new TestFunction('a', { interruptPin: 1, multifunction: true }), { addr: '3' });
      const b = root.attach(new TestFunction('b', { interruptPin: 1 }), { addr: '3.1' });
      a.setIntx(true);
      b.setIntx(true);
      a.setIntx(false);
      expect(router.asserted()).to.deep.equal([{ slot: 3, pin: 0 }]);
    });

    it('a detached function drives nothing, even if its device raises INTx late', () => {
      const { root, router } = pciRig();
      const fn = new TestFunction('dev', { interruptPin: 1 });
      const att = root.attach(fn, { addr: '5' });
      att.setIntx(true);
      att.detach();
      expect(router.asserted()).to.deep.equal([]);
      att.setIntx(true);
      expect(router.asserted()).to.deep.equal([]);
    });

    it('a function without an interrupt pin drives nothing', () => {
      const { root, router } = pciRig();
      root.attach(new TestFunction('dev'), { addr: '3' }).setIntx(true);
      expect(router.log).to.deep.equal([]);
    });
  });

  describe('reset', () => {
    it('puts every function behind every bridge back to power-on and unmaps', () => {
      const { t, root } = pciRig();
      const br = bridge('br0');
      root.attach(br);
      const fn = new TestFunction('dev');
      fn.config.defineBar(0, { kind: 'mem32', size: 4096, handler: new RecordingRegisters() });
      br.secondaryBus.attach(fn);
      openBridge(br, 1, [0xc000, 0xcfff], [0xfe600000, 0xfe7fffff]);
      fn.config.write(PCI_BASE_ADDRESS_0, 4, 0xfe600000);
      fn.config.write(PCI_COMMAND, 2, PCI_COMMAND_MEMORY);
      expect(t.mmio.list()).to.have.length(1);
      root.resetAll();
      expect(t.mmio.list()).to.have.length(0);
      expect(br.secondaryBusNumber).to.equal(0);
      expect(fn.config.read(PCI_BASE_ADDRESS_0, 4)).to.equal(0);
      expect(fn.resets).to.equal(1);
    });
  });
});
