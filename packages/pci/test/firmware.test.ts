/// <reference types="mocha" />
import { expect } from 'chai';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BRIDGE_CONTROL,
  PCI_COMMAND,
  PCI_INTERRUPT_LINE,
  PciBridge,
  PciBusError,
  pciFirmwareSetup,
  piixInterruptLine,
  type PciBus,
  type PciConfigMechanism1,
} from '../src/index.js';
import { pciRig, RecordingRegisters, TestFunction } from './rig.js';

/** pci-testdev's BARs: 4 KiB memory, 256 bytes I/O, optional 64-bit prefetchable membar. */
function testdev(id: string, membar = 0, pin = 0): TestFunction {
  const f = new TestFunction(id, { vendorId: 0x1b36, deviceId: 0x0005, interruptPin: pin });
  f.config.defineBar(0, { kind: 'mem32', size: 4096, handler: new RecordingRegisters() });
  f.config.defineBar(1, { kind: 'io', size: 256, handler: new RecordingRegisters() });
  if (membar) f.config.defineBar(2, { kind: 'mem64', size: membar, prefetchable: true });
  return f;
}

function bridge(id: string): PciBridge {
  return new PciBridge({ id, vendorId: 0x1b36, deviceId: 0x0001 });
}

const PIRQ = [10, 10, 11, 11];
function firmware(mech: PciConfigMechanism1, ramBelow4G = 128 << 20, ramAbove4G = 0) {
  return pciFirmwareSetup(mech, { ramBelow4G, ramAbove4G, interruptLine: (d, pin) => piixInterruptLine(d, pin, PIRQ) });
}

function board(root: PciBus): void {
  root.attach(new TestFunction('host', { vendorId: 0x8086, deviceId: 0x1237, classCode: 0x0600 }), { addr: '0' });
  root.attach(new TestFunction('isa', { vendorId: 0x8086, deviceId: 0x7000, classCode: 0x0601, multifunction: true }), { addr: '1' });
}

describe('firmware-like PCI setup (SeaBIOS pciinit facts)', () => {
  it('lays out the bus exactly as QEMU 7.2 + SeaBIOS does (recorded with the pci_dump guest)', () => {
    // -device pci-bridge,id=br0,chassis_nr=1,shpc=off -device pci-testdev,bus=br0,addr=3 -device pci-testdev -device pci-testdev,membar=0x100000
    const { root, mech, t } = pciRig();
    board(root);
    const br = bridge('br0');
    root.attach(br);
    const behind = testdev('behind');
    br.secondaryBus.attach(behind, { addr: '3' });
    const a = testdev('a');
    const b = testdev('b', 0x100000);
    root.attach(a);
    root.attach(b);
    firmware(mech);
    const c = br.config;
    expect(c.read(0x18, 4)).to.equal(0x00010100);
    expect(c.read(0x1c, 2)).to.equal(0xc0c0);
    expect(c.read(0x20, 4)).to.equal(0xfe70fe60);
    expect(c.read(0x24, 4)).to.equal(0xfe91fea1);
    expect(c.read(PCI_COMMAND, 2)).to.equal(0x0103);
    expect(c.read(PCI_BRIDGE_CONTROL, 2)).to.equal(0x0002);
    expect(behind.config.read(PCI_BASE_ADDRESS_0, 4)).to.equal(0xfe600000);
    expect(behind.config.read(PCI_BASE_ADDRESS_0 + 4, 4)).to.equal(0xc001);
    expect(a.config.read(PCI_BASE_ADDRESS_0, 4)).to.equal(0xfe800000);
    expect(a.config.read(PCI_BASE_ADDRESS_0 + 4, 4)).to.equal(0xd001);
    expect(b.config.read(PCI_BASE_ADDRESS_0, 4)).to.equal(0xfe801000);
    expect(b.config.read(PCI_BASE_ADDRESS_0 + 4, 4)).to.equal(0xd101);
    expect(b.config.read(PCI_BASE_ADDRESS_0 + 8, 4)).to.equal(0xfea0000c);
    expect(a.config.read(PCI_COMMAND, 2)).to.equal(0x0103);
    // and the machine decodes them there, through the bridge
    expect(t.mmio.find(0xfe600000)?.owner).to.equal('behind');
    expect(t.pio.find(0xc000)?.owner).to.equal('behind');
    expect(t.mmio.find(0xfea00000)?.owner).to.equal('b');
  });

  it('numbers nested bridges depth first and gives each its subordinate range', () => {
    const { root, mech } = pciRig();
    const a = bridge('a');
    const a1 = bridge('a1');
    const b = bridge('b');
    root.attach(a, { addr: '2' });
    a.secondaryBus.attach(a1, { addr: '1' });
    root.attach(b, { addr: '3' });
    firmware(mech);
    expect([a.secondaryBusNumber, a.subordinateBusNumber]).to.deep.equal([1, 2]);
    expect([a1.primaryBusNumber, a1.secondaryBusNumber, a1.subordinateBusNumber]).to.deep.equal([1, 2, 2]);
    expect([b.secondaryBusNumber, b.subordinateBusNumber]).to.deep.equal([3, 3]);
  });

  it('sets Interrupt Line from the PIIX routing: slot - 1 + pin, plus the slots of the bridges above', () => {
    const { root, mech } = pciRig();
    const onRoot = testdev('r', 0, 1);
    root.attach(onRoot, { addr: '3' });
    const br = bridge('br');
    root.attach(br, { addr: '5' });
    const behind = testdev('x', 0, 1);
    br.secondaryBus.attach(behind, { addr: '2' });
    firmware(mech);
    // root slot 3 INTA: PIRQ (3 - 1 + 0) & 3 = 2 -> 11
    expect(onRoot.config.read(PCI_INTERRUPT_LINE, 1)).to.equal(11);
    // behind slot 2 INTA -> bridge pin (0 + 2) % 4 = INTC at root slot 5 -> PIRQ (5 - 1 + 2) & 3 = 2 -> 11
    expect(behind.config.read(PCI_INTERRUPT_LINE, 1)).to.equal(11);
    const again = testdev('y', 0, 1);
    br.secondaryBus.attach(again, { addr: '0' });
    firmware(mech);
    // slot 0 INTA -> INTA at slot 5 -> PIRQ 0 -> 10
    expect(again.config.read(PCI_INTERRUPT_LINE, 1)).to.equal(10);
  });

  it('gives 40 devices behind two bridges non-overlapping BARs inside their bridges\' windows', () => {
    const { root, mech, t } = pciRig();
    board(root);
    const brs = [bridge('br0'), bridge('br1')];
    for (const br of brs) root.attach(br);
    const devs: TestFunction[] = [];
    for (let i = 0; i < 40; i++) {
      const d = testdev(`t${i}`);
      (brs[i % 2] as PciBridge).secondaryBus.attach(d);
      devs.push(d);
    }
    firmware(mech);
    for (const d of devs) {
      expect(d.config.bar(0)?.mappedAddress, d.id).to.be.a('number');
      expect(d.config.bar(1)?.mappedAddress, d.id).to.be.a('number');
    }
    expect(t.mmio.list().filter((r) => r.owner.startsWith('t'))).to.have.length(40);
    expect(t.pio.list().filter((r) => r.owner.startsWith('t'))).to.have.length(40);
  });

  it('moves 64-bit BARs above 4 GiB and high RAM, 1 GiB aligned, when the 32-bit hole is too small', () => {
    const { root, mech } = pciRig();
    const big = testdev('big', 2 ** 32);
    root.attach(big);
    const report = firmware(mech, 0xc0000000, 2 ** 30);
    const bar = big.config.bar(2);
    expect(bar && big.config.barAddress(bar)).to.equal(2 ** 33);
    // SeaBIOS: the window starts after high RAM (5 GiB); the prefetchable part is aligned to the BAR (8 GiB)
    expect(report.mem64).to.deep.equal({ start: 5 * 2 ** 30, end: 3 * 2 ** 32 });
    expect(big.config.read(PCI_BASE_ADDRESS_0, 4)).to.equal(0xfebff000);
  });

  it('fails with an error naming the shortage when I/O ports run out', () => {
    const { root, mech } = pciRig();
    for (let b = 0; b < 10; b++) {
      const br = bridge(`br${b}`);
      root.attach(br);
      br.secondaryBus.attach(testdev(`d${b}`));
    }
    expect(() => firmware(mech)).to.throw(PciBusError, /out of I\/O address space/);
  });

  it('running again after a reset gives the same layout', () => {
    const { root, mech } = pciRig();
    const br = bridge('br0');
    root.attach(br);
    const d = testdev('d');
    br.secondaryBus.attach(d);
    const first = firmware(mech).assignments;
    root.resetAll();
    expect(d.config.bar(0)?.mappedAddress).to.equal(undefined);
    expect(firmware(mech).assignments).to.deep.equal(first);
    expect(d.config.bar(0)?.mappedAddress).to.equal(0xfea00000);
  });
});
