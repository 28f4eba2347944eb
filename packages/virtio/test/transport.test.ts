/**
 * The virtio-pci transport against OASIS VIRTIO 1.2 §4.1 and §3.1: PCI
 * identity and capabilities, feature negotiation, status and reset, queue
 * registers, kicks through ioeventfds, INTx with ISR and MSI-X vectors.
 */
import { expect } from 'chai';
import { PCI_BASE_ADDRESS_0, PCI_CAPABILITY_LIST } from '@tsvmm/pci';
import type { FakeNotifier } from '@tsvmm/core/testing';
import { MockVirtqueue, VirtioPciTestDriver, createVirtioPciTestBench, settle, until, type VirtioPciTestBench } from '../src/testing/index.js';
import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_COMMON_CFGGENERATION,
  VIRTIO_PCI_COMMON_MSIX,
  VIRTIO_PCI_COMMON_NUMQ,
  VIRTIO_PCI_COMMON_Q_DESCHI,
  VIRTIO_PCI_COMMON_Q_DESCLO,
  VIRTIO_PCI_COMMON_Q_MSIX,
  VIRTIO_PCI_COMMON_Q_NOFF,
  VIRTIO_PCI_COMMON_Q_SELECT,
  VIRTIO_PCI_COMMON_Q_SIZE,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  featureBit,
} from '../src/spec.js';
import { ECHO_DEVICE_TYPE, EchoDevice } from './echo-device.js';

interface Rig {
  bench: VirtioPciTestBench;
  dev: EchoDevice;
  drv: VirtioPciTestDriver;
}

async function rig(opts: { queues?: number; delayTurns?: number } = {}): Promise<Rig> {
  const bench = createVirtioPciTestBench();
  const dev = await EchoDevice.create(bench.t.ctx, opts);
  const drv = new VirtioPciTestDriver(bench, dev.transport);
  drv.mapBars();
  return { bench, dev, drv };
}

/** Negotiates, sets up queue 0 from a mock and sets DRIVER_OK. */
async function running(r: Rig, opts: { features?: bigint; vector?: number } = {}): Promise<MockVirtqueue> {
  const q = new MockVirtqueue(r.bench.t.memory, {
    size: 16,
    base: 0x10000,
    indirectDesc: ((opts.features ?? 0n) & featureBit(VIRTIO_F_INDIRECT_DESC)) !== 0n,
    eventIdx: ((opts.features ?? 0n) & featureBit(VIRTIO_F_EVENT_IDX)) !== 0n,
  });
  expect(r.drv.negotiate(opts.features ?? 0n)).to.equal(true);
  r.drv.setupQueue(0, q.config, opts.vector ?? VIRTIO_MSI_NO_VECTOR);
  r.drv.driverOk();
  await settle();
  return q;
}

const echoRequest = (text: string): { data?: Uint8Array; len?: number; writable?: boolean }[] => [
  { data: new TextEncoder().encode(text) },
  { len: text.length, writable: true },
];

describe('virtio-pci transport', () => {
  let r: Rig;
  afterEach(async () => {
    await r?.dev.close();
  });

  describe('PCI function (§4.1.2, §4.1.4)', () => {
    beforeEach(async () => {
      r = await rig();
    });

    it('has vendor 0x1af4, device 0x1040 + type and revision 1 (non-transitional)', () => {
      const c = r.dev.transport.config;
      expect(c.read(0, 2)).to.equal(0x1af4);
      expect(c.read(2, 2)).to.equal(0x1040 + ECHO_DEVICE_TYPE);
      expect(c.read(8, 1)).to.equal(1);
      expect(c.read(0x2e, 2)).to.be.at.least(0x40);
    });

    it('lists MSI-X, PCI access, notify, device, ISR and common capabilities at QEMU offsets', () => {
      const caps = r.dev.transport.config.walkCapabilities().map((c) => [c.id, c.offset]);
      expect(caps).to.deep.equal([
        [0x11, 0x98],
        [0x09, 0x84],
        [0x09, 0x70],
        [0x09, 0x60],
        [0x09, 0x50],
        [0x09, 0x40],
      ]);
      expect(r.dev.transport.config.read(PCI_CAPABILITY_LIST, 1)).to.equal(0x98);
    });

    it('describes each structure by cfg_type, BAR, offset and length; notify has multiplier 4', () => {
      const c = r.dev.transport.config;
      const cap = (at: number): number[] => [c.read(at + 2, 1), c.read(at + 3, 1), c.read(at + 4, 1), c.read(at + 8, 4), c.read(at + 12, 4)];
      expect(cap(0x40)).to.deep.equal([16, 1, 4, 0x0000, 0x1000]);
      expect(cap(0x50)).to.deep.equal([16, 3, 4, 0x1000, 0x1000]);
      expect(cap(0x60)).to.deep.equal([16, 4, 4, 0x2000, 0x1000]);
      expect(cap(0x70)).to.deep.equal([20, 2, 4, 0x3000, 0x1000]);
      expect(c.read(0x70 + 16, 4)).to.equal(4);
      expect(cap(0x84).slice(0, 2)).to.deep.equal([20, 5]);
    });

    it('sizes BAR4 as 16 KiB 64-bit prefetchable memory and BAR1 as 4 KiB memory', () => {
      const c = r.dev.transport.config;
      c.write(PCI_BASE_ADDRESS_0 + 16, 4, 0xffffffff);
      expect(c.read(PCI_BASE_ADDRESS_0 + 16, 4) >>> 0).to.equal(((~(0x4000 - 1) | 0xc) >>> 0));
      c.write(PCI_BASE_ADDRESS_0 + 4, 4, 0xffffffff);
      expect(c.read(PCI_BASE_ADDRESS_0 + 4, 4) >>> 0).to.equal(~(0x1000 - 1) >>> 0);
    });

    it('reads the common configuration through the PCI configuration access capability (§4.1.4.9)', () => {
      const c = r.dev.transport.config;
      c.write(0x84 + 4, 1, 4);
      c.write(0x84 + 8, 4, VIRTIO_PCI_COMMON_NUMQ);
      c.write(0x84 + 12, 4, 2);
      expect(c.read(0x84 + 16, 2)).to.equal(1);
    });

    it('writes through the PCI configuration access capability, and reads ISR through it at read time', async () => {
      const c = r.dev.transport.config;
      c.write(0x84 + 4, 1, 4);
      c.write(0x84 + 8, 4, VIRTIO_PCI_COMMON_Q_SELECT);
      c.write(0x84 + 12, 4, 2);
      c.write(0x84 + 16, 2, 0);
      c.write(0x84 + 8, 4, VIRTIO_PCI_COMMON_Q_SIZE);
      c.write(0x84 + 16, 2, 8);
      expect(r.dev.virtio.queues[0]?.size).to.equal(8);
      // ISR: nothing pending when the window is set up; a notification arrives; the read through the window sees and clears it
      c.write(0x84 + 8, 4, 0x1000);
      c.write(0x84 + 12, 4, 1);
      r.dev.virtio.needsReset('test');
      r.dev.transport.configInterrupt(VIRTIO_MSI_NO_VECTOR);
      expect(c.read(0x84 + 16, 1)).to.equal(2);
      expect(r.drv.isr()).to.equal(0);
    });
  });

  describe('feature negotiation (§2.2, §3.1.1)', () => {
    beforeEach(async () => {
      r = await rig();
    });

    it('offers VERSION_1, INDIRECT_DESC, EVENT_IDX and the device features', () => {
      const f = r.drv.deviceFeatures();
      expect(f & featureBit(VIRTIO_F_VERSION_1)).to.not.equal(0n);
      expect(f & featureBit(VIRTIO_F_INDIRECT_DESC)).to.not.equal(0n);
      expect(f & featureBit(VIRTIO_F_EVENT_IDX)).to.not.equal(0n);
      expect(f & (1n << 3n)).to.not.equal(0n);
    });

    it('keeps FEATURES_OK for an offered subset with VERSION_1', () => {
      expect(r.drv.negotiate(featureBit(VIRTIO_F_EVENT_IDX))).to.equal(true);
    });

    it('refuses FEATURES_OK without VERSION_1 (no legacy interface)', () => {
      expect(r.drv.negotiate(0n, { noVersion1: true })).to.equal(false);
    });

    it('refuses FEATURES_OK when the driver accepts a feature that was not offered', () => {
      expect(r.drv.negotiate(featureBit(40))).to.equal(false);
    });

    it('ignores driver feature writes once FEATURES_OK is set', () => {
      r.drv.negotiate(0n);
      r.drv.writeDriverFeatures(featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_EVENT_IDX));
      expect(r.dev.virtio.negotiated(VIRTIO_F_EVENT_IDX)).to.equal(false);
    });
  });

  describe('queue registers (§4.1.4.3)', () => {
    beforeEach(async () => {
      r = await rig({ queues: 2 });
    });

    it('reports num_queues, each queue size and its notify offset', () => {
      expect(r.drv.common(VIRTIO_PCI_COMMON_NUMQ, 2)).to.equal(2);
      r.drv.setCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 1);
      expect(r.drv.common(VIRTIO_PCI_COMMON_Q_SIZE, 2)).to.equal(16);
      expect(r.drv.common(VIRTIO_PCI_COMMON_Q_NOFF, 2)).to.equal(1);
    });

    it('reads size 0 for a queue that does not exist', () => {
      r.drv.setCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 5);
      expect(r.drv.common(VIRTIO_PCI_COMMON_Q_SIZE, 2)).to.equal(0);
    });

    it('keeps 64-bit ring addresses written as two halves', () => {
      r.drv.setCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
      r.drv.setCommon(VIRTIO_PCI_COMMON_Q_DESCLO, 4, 0x89abc000);
      r.drv.setCommon(VIRTIO_PCI_COMMON_Q_DESCHI, 4, 0x1);
      expect(r.drv.common(VIRTIO_PCI_COMMON_Q_DESCLO, 4)).to.equal(0x89abc000);
      expect(r.drv.common(VIRTIO_PCI_COMMON_Q_DESCHI, 4)).to.equal(1);
      expect(r.dev.virtio.queues[0]?.desc).to.equal(0x1_89abc000);
    });

    it('reads back NO_VECTOR for an MSI-X vector the device does not have (§4.1.5.1.2.1)', () => {
      r.drv.setCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, 0);
      r.drv.setCommon(VIRTIO_PCI_COMMON_Q_MSIX, 2, 7);
      expect(r.drv.common(VIRTIO_PCI_COMMON_Q_MSIX, 2)).to.equal(VIRTIO_MSI_NO_VECTOR);
      r.drv.setCommon(VIRTIO_PCI_COMMON_Q_MSIX, 2, 2);
      expect(r.drv.common(VIRTIO_PCI_COMMON_Q_MSIX, 2)).to.equal(2);
      r.drv.setCommon(VIRTIO_PCI_COMMON_MSIX, 2, 3);
      expect(r.drv.common(VIRTIO_PCI_COMMON_MSIX, 2)).to.equal(VIRTIO_MSI_NO_VECTOR);
    });

    it('reads the device-specific configuration', () => {
      expect(r.drv.deviceConfig(0, 4)).to.equal(0x44332211);
      expect(r.drv.deviceConfig(6, 2)).to.equal(0x8877);
      expect(r.drv.common(VIRTIO_PCI_COMMON_CFGGENERATION, 1)).to.equal(0);
    });
  });

  describe('kicks and used buffers', () => {
    it('registers one ioeventfd per queue doorbell at BAR4 + 0x3000 + 4 * index', async () => {
      r = await rig({ queues: 2 });
      const addrs = [...r.bench.t.notify.ioeventfds].map((s) => [s.space, s.addr, s.len]);
      expect(addrs).to.deep.include.members([
        ['mmio', r.drv.bar4 + 0x3000, 2],
        ['mmio', r.drv.bar4 + 0x3004, 2],
      ]);
    });

    it('moves the doorbell ioeventfds when the guest moves BAR4', async () => {
      r = await rig();
      r.dev.transport.config.write(PCI_BASE_ADDRESS_0 + 16, 4, 0xfd000000);
      const addrs = [...r.bench.t.notify.ioeventfds].map((s) => s.addr);
      expect(addrs).to.deep.equal([0xfd003000]);
    });

    it('serves a request kicked through the ioeventfd, without a JS exit', async () => {
      r = await rig();
      const q = await running(r);
      const { head, addrs } = q.submit(echoRequest('hello'));
      expect(r.drv.kick(0), 'ioeventfd took the doorbell write').to.equal(true);
      await until(() => q.usedIdx() === 1, 2000, 'the used index');
      expect(q.usedElem(0)).to.deep.equal({ id: head, len: 5 });
      const out = new Uint8Array(5);
      r.bench.t.memory.read(addrs[1] ?? 0, out);
      expect(new TextDecoder().decode(out)).to.equal('hello');
    });

    it('serves buffers made available before DRIVER_OK once the driver is ready', async () => {
      r = await rig();
      const q = new MockVirtqueue(r.bench.t.memory, { size: 16, base: 0x10000 });
      r.drv.negotiate(0n);
      r.drv.setupQueue(0, q.config);
      q.submit(echoRequest('early'));
      r.drv.kick(0);
      await settle();
      expect(q.usedIdx()).to.equal(0);
      r.drv.driverOk();
      await until(() => q.usedIdx() === 1);
    });

    it('raises INTx with ISR bit 0 when MSI-X is off, and an ISR read clears both (§4.1.4.5)', async () => {
      r = await rig();
      const q = await running(r);
      q.submit(echoRequest('x'));
      r.drv.kick(0);
      // the only function on the bench's bus sits in slot 0 and uses INTA#
      await until(() => r.bench.intx.get('0.0') === true, 2000, 'INTx');
      expect(r.drv.isr()).to.equal(1);
      expect(r.bench.intx.get('0.0')).to.equal(false);
      expect(r.drv.isr()).to.equal(0);
    });

    it('sends no interrupt when the driver set VIRTQ_AVAIL_F_NO_INTERRUPT', async () => {
      r = await rig();
      const q = await running(r);
      q.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
      q.submit(echoRequest('x'));
      r.drv.kick(0);
      await until(() => q.usedIdx() === 1);
      await settle();
      expect(r.drv.isr()).to.equal(0);
    });

    it('signals the queue vector through its MSI-X irqfd notifier', async () => {
      r = await rig();
      r.drv.enableMsix(2);
      const q = await running(r, { vector: 1 });
      const n = r.dev.transport.msix.vectorNotifier(1) as FakeNotifier;
      const before = n.count;
      expect(r.dev.transport.msix.isIrqfdBound(1)).to.equal(true);
      q.submit(echoRequest('msix'));
      r.drv.kick(0);
      await until(() => n.count > before, 2000, 'the vector notifier');
      expect(r.drv.isr()).to.equal(0);
    });

    it('completes asynchronous requests and keeps serving later kicks', async () => {
      r = await rig({ delayTurns: 3 });
      const q = await running(r);
      for (let i = 0; i < 5; i++) q.submit(echoRequest(`req${i}`));
      r.drv.kick(0);
      await until(() => q.usedIdx() === 5);
      q.submit(echoRequest('later'));
      r.drv.kick(0);
      await until(() => q.usedIdx() === 6);
    });

    it('with EVENT_IDX, publishes avail_event after draining', async () => {
      r = await rig();
      const q = await running(r, { features: featureBit(VIRTIO_F_EVENT_IDX) });
      q.submit(echoRequest('a'));
      q.submit(echoRequest('b'));
      r.drv.kick(0);
      await until(() => q.usedIdx() === 2);
      expect(q.availEvent()).to.equal(2);
    });
  });

  describe('status and reset (§2.1, §2.4, §4.1.4.3.1)', () => {
    it('writing 0 resets: status reads 0 once done, queues stop, registers return to defaults', async () => {
      r = await rig({ delayTurns: 5 });
      const q = await running(r);
      q.submit(echoRequest('inflight'));
      r.drv.kick(0);
      r.drv.setStatus(0);
      await until(() => r.drv.status() === 0, 2000, 'status 0');
      expect(r.dev.virtio.queues[0]?.enabled).to.equal(false);
      const used = q.usedIdx();
      q.submit(echoRequest('after'));
      r.drv.kick(0);
      await settle(40);
      expect(q.usedIdx(), 'no request served after the reset').to.equal(used);
    });

    it('status reads the old value until requests in flight have finished', async () => {
      r = await rig({ delayTurns: 30 });
      const q = await running(r);
      q.submit(echoRequest('slow'));
      r.drv.kick(0);
      await settle(3);
      r.drv.setStatus(0);
      expect(r.drv.status() & VIRTIO_CONFIG_S_DRIVER_OK).to.not.equal(0);
      await until(() => r.drv.status() === 0);
    });

    it('works again after a reset and a new initialization', async () => {
      r = await rig();
      await running(r);
      r.drv.setStatus(0);
      await until(() => r.drv.status() === 0);
      const q = await running(r);
      q.submit(echoRequest('again'));
      r.drv.kick(0);
      await until(() => q.usedIdx() === 1);
    });

    it('a machine reset returns status, features and queues to power-on state', async () => {
      r = await rig();
      await running(r);
      r.dev.reset();
      expect(r.drv.status()).to.equal(0);
      expect(r.dev.virtio.driverFeatures).to.equal(0n);
      expect(r.dev.virtio.queues[0]?.enabled).to.equal(false);
    });

    it('DRIVER_OK without FEATURES_OK puts the device in DEVICE_NEEDS_RESET', async () => {
      r = await rig();
      r.drv.setStatus(1);
      r.drv.setStatus(3);
      r.drv.setStatus(3 | VIRTIO_CONFIG_S_DRIVER_OK);
      expect(r.drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET).to.not.equal(0);
      expect(r.drv.status() & VIRTIO_CONFIG_S_FEATURES_OK).to.equal(0);
    });
  });
});
