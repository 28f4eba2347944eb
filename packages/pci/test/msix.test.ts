/// <reference types="mocha" />
import { expect } from 'chai';
import { createTestDeviceContext, FakeNotifier, type TestDeviceContext } from '@tsvmm/core/testing';
import {
  PCI_CAP_ID_MSIX,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PciConfigSpace,
  PciMsix,
  type PciBar,
  type PciMsixChange,
} from '../src/index.js';

interface MsixRig {
  t: TestDeviceContext;
  config: PciConfigSpace;
  bar: PciBar;
  msix: PciMsix;
  changes: PciMsixChange[];
  /** write Message Control */
  control(bits: number): void;
  /** a guest write to the table: entry v, dword at byte offset `field` */
  entry(v: number, field: number, value: number): void;
  readTable(offset: number): number;
  readPba(): number;
  fake(v: number): FakeNotifier;
}

function rig(vectors = 4): MsixRig {
  const t = createTestDeviceContext();
  const config = new PciConfigSpace('dev', { vendorId: 0x1af4, deviceId: 0x1044, classCode: 0x00ff });
  const bar = config.defineBar(1, { kind: 'mem32', size: 0x1000, name: 'msix' });
  const msix = new PciMsix(config, { notify: t.ctx.notify, vectors, table: { bar, offset: 0 }, pba: { bar, offset: 0x800 } });
  const changes: PciMsixChange[] = [];
  msix.onChange((c) => changes.push(c));
  const cap = msix.capOffset;
  const dword = (value: number): Uint8Array => Uint8Array.of(value & 0xff, (value >>> 8) & 0xff, (value >>> 16) & 0xff, value >>> 24);
  return {
    t,
    config,
    bar,
    msix,
    changes,
    control: (bits) => config.write(cap + PCI_MSIX_FLAGS, 2, bits),
    entry: (v, field, value) => bar.write(v * 16 + field, dword(value)),
    readTable: (offset) => {
      const d = new Uint8Array(4);
      bar.read(offset, d);
      return new DataView(d.buffer).getUint32(0, true);
    },
    readPba: () => {
      const d = new Uint8Array(8);
      bar.read(0x800, d);
      return new DataView(d.buffer).getUint32(0, true);
    },
    fake: (v) => msix.vectorNotifier(v) as FakeNotifier,
  };
}

/** Program entry v with a message and unmask it. */
function program(r: MsixRig, v: number, data: number, unmask = true): void {
  r.entry(v, 0, 0xfee00000);
  r.entry(v, 4, 0);
  r.entry(v, 8, data);
  if (unmask) r.entry(v, 12, 0);
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('MSI-X (PCI 3.0 §6.8.2)', () => {
  it('describes the table and PBA in the capability: size N-1, BIR and offsets', () => {
    const { config, msix } = rig(3);
    const cap = config.findCapability(PCI_CAP_ID_MSIX);
    expect(cap).to.equal(msix.capOffset);
    expect(config.read(msix.capOffset + 2, 2)).to.equal(2);
    expect(config.read(msix.capOffset + 4, 4)).to.equal(0x000 | 1);
    expect(config.read(msix.capOffset + 8, 4)).to.equal(0x800 | 1);
  });

  it('starts with every entry masked and MSI-X disabled; only Enable and Function Mask are writable', () => {
    const r = rig();
    expect(r.readTable(12)).to.equal(1);
    expect(r.readTable(3 * 16 + 12)).to.equal(1);
    expect(r.msix.enabled).to.equal(false);
    r.control(0xffff);
    expect(r.config.read(r.msix.capOffset + 2, 2)).to.equal(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL | 3);
  });

  it('keeps Vector Control reserved bits zero', () => {
    const r = rig();
    r.entry(0, 12, 0xfffffffe);
    expect(r.readTable(12)).to.equal(0);
  });

  it('gives an unmasked vector of an enabled function a KVM MSI route with its message and an irqfd on its notifier', () => {
    const r = rig();
    program(r, 1, 0x4041);
    expect(r.t.notify.msiRoutes.size).to.equal(0);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    const gsi = r.msix.routeGsi(1);
    expect(gsi).to.be.a('number');
    expect(r.t.notify.msiRoutes.get(gsi as number)).to.deep.equal({ address: 0xfee00000n, data: 0x4041 });
    const [irqfd] = [...r.t.notify.irqfds];
    expect(irqfd?.gsi).to.equal(gsi);
    expect(irqfd?.notifier).to.equal(r.msix.vectorNotifier(1));
    expect(r.msix.routeGsi(0)).to.equal(undefined);
  });

  it('updates the route when the guest rewrites the entry', () => {
    const r = rig();
    program(r, 0, 0x30);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    r.entry(0, 8, 0x31);
    expect(r.t.notify.msiRoutes.get(r.msix.routeGsi(0) as number)?.data).to.equal(0x31);
    expect(r.changes.some((c) => c.kind === 'vector-message' && c.vector === 0 && c.message.data === 0x31)).to.equal(true);
  });

  it('notify() on an active vector signals its irqfd notifier (delivery by KVM, no pending bit)', () => {
    const r = rig();
    program(r, 2, 0x50);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    r.msix.notify(2);
    expect(r.fake(2).count).to.equal(1n);
    expect(r.msix.isPending(2)).to.equal(false);
  });

  it('a masked vector collects a pending bit and delivers it on unmask', () => {
    const r = rig();
    program(r, 0, 0x60, false);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    r.msix.notify(0);
    expect(r.msix.isPending(0)).to.equal(true);
    expect(r.readPba() & 1).to.equal(1);
    expect(r.t.notify.irqfds.size).to.equal(0);
    r.entry(0, 12, 0);
    expect(r.msix.isPending(0)).to.equal(false);
    expect(r.t.notify.irqfds.size).to.equal(1);
    expect(r.fake(0).count).to.equal(1n);
  });

  it('Function Mask masks every vector: the irqfds are unbound and signals become pending', async () => {
    const r = rig();
    program(r, 0, 0x70);
    program(r, 1, 0x71);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    expect(r.t.notify.irqfds.size).to.equal(2);
    r.control(PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    expect(r.t.notify.irqfds.size).to.equal(0);
    expect(r.msix.isMasked(1)).to.equal(true);
    // a data-plane thread signals the notifier directly
    r.msix.vectorNotifier(1).notify();
    await tick();
    expect(r.msix.isPending(1)).to.equal(true);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    expect(r.msix.isPending(1)).to.equal(false);
    expect(r.t.notify.irqfds.size).to.equal(2);
    expect(r.fake(1).count).to.equal(1n);
    expect(r.changes.filter((c) => c.kind === 'function-mask').map((c) => c.kind === 'function-mask' && c.masked)).to.deep.equal([true, false]);
  });

  it('a PBA read counts signals the main thread has not seen yet', () => {
    const r = rig();
    program(r, 3, 0x80, false);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    r.msix.vectorNotifier(3).notify();
    expect(r.readPba()).to.equal(1 << 3);
  });

  it('drops signals while MSI-X is disabled and releases the routes', async () => {
    const r = rig();
    program(r, 0, 0x90);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    expect(r.t.notify.msiRoutes.size).to.equal(1);
    r.control(0);
    expect(r.t.notify.msiRoutes.size).to.equal(0);
    expect(r.t.notify.irqfds.size).to.equal(0);
    r.msix.notify(0);
    r.msix.vectorNotifier(0).notify();
    await tick();
    expect(r.msix.isPending(0)).to.equal(false);
    expect(r.changes.filter((c) => c.kind === 'enabled').map((c) => c.kind === 'enabled' && c.enabled)).to.deep.equal([true, false]);
  });

  it('keeps the same notifier (and fd) across mask, unmask, disable and reset', () => {
    const r = rig();
    const n = r.msix.vectorNotifier(0);
    program(r, 0, 1);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    r.entry(0, 12, 1);
    r.control(0);
    r.config.snapshotResetState();
    r.config.reset();
    expect(r.msix.vectorNotifier(0)).to.equal(n);
    expect((n as FakeNotifier).closed).to.equal(false);
  });

  it('reset masks every entry, clears the PBA and Message Control, and gives back routes', () => {
    const r = rig();
    r.config.snapshotResetState();
    program(r, 0, 0xa0);
    program(r, 1, 0xa1, false);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    r.msix.notify(1);
    r.config.reset();
    expect(r.msix.enabled).to.equal(false);
    expect(r.readTable(12)).to.equal(1);
    expect(r.readTable(8)).to.equal(0);
    expect(r.readPba()).to.equal(0);
    expect(r.t.notify.msiRoutes.size).to.equal(0);
    expect(r.t.notify.irqfds.size).to.equal(0);
  });

  it('release() closes notifiers and frees everything', () => {
    const r = rig();
    program(r, 0, 1);
    r.control(PCI_MSIX_FLAGS_ENABLE);
    const n = r.fake(0);
    r.msix.release();
    expect(n.closed).to.equal(true);
    expect(r.t.notify.irqfds.size).to.equal(0);
    expect(r.t.notify.msiRoutes.size).to.equal(0);
    r.msix.notify(0);
  });

  it('refuses a table in an I/O BAR, a misaligned offset and a vector out of range', () => {
    const t = createTestDeviceContext();
    const config = new PciConfigSpace('dev', { vendorId: 1, deviceId: 2, classCode: 0xff });
    const io = config.defineBar(0, { kind: 'io', size: 256 });
    const mem = config.defineBar(1, { kind: 'mem32', size: 4096 });
    expect(() => new PciMsix(config, { notify: t.ctx.notify, vectors: 2, table: { bar: io, offset: 0 }, pba: { bar: mem, offset: 0 } })).to.throw(/memory BAR/);
    expect(() => new PciMsix(config, { notify: t.ctx.notify, vectors: 2, table: { bar: mem, offset: 4 }, pba: { bar: mem, offset: 0x800 } })).to.throw(/QWORD/);
    const m = new PciMsix(config, { notify: t.ctx.notify, vectors: 2, table: { bar: mem, offset: 0 }, pba: { bar: mem, offset: 0x800 } });
    expect(() => m.notify(2)).to.throw(/vector 2 does not exist/);
  });
});
