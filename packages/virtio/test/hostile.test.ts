/**
 * Hostile descriptors through the whole transport (ARCHITECTURE.md "Guest
 * memory and DMA"; OASIS VIRTIO 1.2 §2.1.2 DEVICE_NEEDS_RESET): whatever the
 * guest writes into its rings, the device sets DEVICE_NEEDS_RESET, sends a
 * configuration change notification, stops the queue — and nothing throws,
 * no byte outside guest RAM changes, other queues go on, and a reset brings
 * the device back.
 */
import { expect } from 'chai';
import type { FakeNotifier } from '@tsvmm/core/testing';
import { MockVirtqueue, VirtioPciTestDriver, createVirtioPciTestBench, settle, until, type VirtioPciTestBench } from '../src/testing/index.js';
import {
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_INDIRECT_DESC,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  featureBit,
} from '../src/spec.js';
import { EchoDevice } from './echo-device.js';

const RAM = 4 << 20;

interface Rig {
  bench: VirtioPciTestBench;
  dev: EchoDevice;
  drv: VirtioPciTestDriver;
  q0: MockVirtqueue;
  q1: MockVirtqueue;
}

async function rig(opts: { indirect?: boolean; msix?: boolean; q0Config?: Partial<MockVirtqueue['config']> } = {}): Promise<Rig> {
  const bench = createVirtioPciTestBench({ ramSize: RAM });
  const dev = await EchoDevice.create(bench.t.ctx, { queues: 2 });
  const drv = new VirtioPciTestDriver(bench, dev.transport);
  drv.mapBars();
  if (opts.msix) drv.enableMsix(3);
  const q0 = new MockVirtqueue(bench.t.memory, { size: 16, base: 0x10000, indirectDesc: opts.indirect ?? false });
  const q1 = new MockVirtqueue(bench.t.memory, { size: 16, base: 0x20000, dataBase: 0x200000 });
  expect(drv.negotiate(opts.indirect ? featureBit(VIRTIO_F_INDIRECT_DESC) : 0n)).to.equal(true);
  drv.setupQueue(0, { ...q0.config, ...opts.q0Config }, opts.msix ? 0 : 0xffff);
  drv.setupQueue(1, q1.config, opts.msix ? 1 : 0xffff);
  if (opts.msix) drv.setCommon(0x10, 2, 2);
  drv.driverOk();
  await settle();
  return { bench, dev, drv, q0, q1 };
}

const good = [{ data: new Uint8Array([1, 2, 3, 4]) }, { len: 4, writable: true }];

/** The device is in DEVICE_NEEDS_RESET with a config interrupt, queue 0 no longer serves, queue 1 does, RAM outside is intact. */
async function expectBrokenQueue0(r: Rig, opts: { msix?: boolean } = {}): Promise<void> {
  await until(() => (r.drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0, 2000, 'DEVICE_NEEDS_RESET');
  expect(r.dev.virtio.lastError, 'the reason is kept').to.be.a('string');
  if (opts.msix) {
    const n = r.dev.transport.msix.vectorNotifier(2) as FakeNotifier;
    await until(() => n.count > 0n, 2000, 'the config vector');
  } else {
    expect(r.drv.isr() & 2, 'ISR configuration change bit').to.equal(2);
  }
  const used0 = r.q0.usedIdx();
  r.q0.submit(good);
  r.drv.kick(0);
  r.q1.submit(good);
  r.drv.kick(1);
  await until(() => r.q1.usedIdx() === 1, 2000, 'queue 1 to keep serving');
  await settle(20);
  expect(r.q0.usedIdx(), 'queue 0 stopped').to.equal(used0);
  expect(r.bench.t.guardIntact(), 'nothing outside guest RAM was written').to.equal(true);
}

/** After a reset and a fresh setup the device serves again. */
async function expectRecovers(r: Rig): Promise<void> {
  r.drv.setStatus(0);
  await until(() => r.drv.status() === 0);
  const q = new MockVirtqueue(r.bench.t.memory, { size: 16, base: 0x30000, dataBase: 0x300000 });
  expect(r.drv.negotiate(0n)).to.equal(true);
  r.drv.setupQueue(0, q.config);
  r.drv.driverOk();
  q.submit(good);
  r.drv.kick(0);
  await until(() => q.usedIdx() === 1, 2000, 'service after the reset');
}

describe('hostile descriptors through virtio-pci', () => {
  let r: Rig | undefined;
  afterEach(async () => {
    await r?.dev.close();
    r = undefined;
  });

  it('a descriptor loop', async () => {
    r = await rig();
    r.q0.writeDescriptor(0, { addr: 0x100000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    r.q0.writeDescriptor(1, { addr: 0x100000, len: 4, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: 0 });
    r.q0.publish(0);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
    await expectRecovers(r);
  });

  it('a buffer outside guest RAM', async () => {
    r = await rig();
    r.q0.writeDescriptor(0, { addr: RAM + 0x1000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    r.q0.writeDescriptor(1, { addr: 0x100000, len: 4, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    r.q0.publish(0);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('a writable buffer running past the end of RAM (the device would write into the guard area)', async () => {
    r = await rig();
    r.q0.writeDescriptor(0, { addr: 0x100000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    r.q0.writeDescriptor(1, { addr: RAM - 2, len: 4, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    r.q0.publish(0);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('an address + length that overflows 64 bits', async () => {
    r = await rig();
    r.q0.writeDescriptor(0, { addr: 0xffff_ffff_ffff_f000n, len: 0x2000, flags: 0, next: 0 });
    r.q0.publish(0);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('a chain longer than the queue (every descriptor links on)', async () => {
    r = await rig();
    for (let i = 0; i < 16; i++) r.q0.writeDescriptor(i, { addr: 0x100000, len: 1, flags: VIRTQ_DESC_F_NEXT, next: (i + 1) % 16 });
    r.q0.publish(3);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('an indirect table whose length is not a multiple of 16', async () => {
    r = await rig({ indirect: true });
    r.q0.writeDescriptor(0, { addr: 0x100000, len: 20, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    r.q0.publish(0);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('an indirect table inside an indirect table', async () => {
    r = await rig({ indirect: true });
    const t = r.q0.alloc(32);
    r.q0.writeDescriptor(0, { addr: t, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }, t);
    r.q0.writeDescriptor(0, { addr: t, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    r.q0.publish(0);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('an indirect descriptor without VIRTIO_F_INDIRECT_DESC', async () => {
    r = await rig({ indirect: false });
    r.q0.writeDescriptor(0, { addr: r.q0.alloc(32), len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    r.q0.publish(0);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('wrong direction: the device-writable part comes first', async () => {
    r = await rig();
    r.q0.submit([{ len: 4, writable: true }, { data: new Uint8Array(4) }]);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
    await expectRecovers(r);
  });

  it('wrong direction: nothing device-writable where the device must write', async () => {
    r = await rig();
    r.q0.submit([{ data: new Uint8Array(4) }]);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('a head index beyond the table', async () => {
    r = await rig();
    r.q0.publish(200);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('an available index that jumps by more than the queue size', async () => {
    r = await rig();
    r.q0.setAvailIdx(1000);
    r.drv.kick(0);
    await expectBrokenQueue0(r);
  });

  it('rings placed outside guest RAM, found when the queue starts', async () => {
    r = await rig({ q0Config: { usedRing: RAM - 16 } });
    await expectBrokenQueue0(r);
    await expectRecovers(r);
  });

  it('with MSI-X, the configuration change notification goes to config_msix_vector', async () => {
    r = await rig({ msix: true });
    r.q0.publish(99);
    r.drv.kick(0);
    await expectBrokenQueue0(r, { msix: true });
  });
});
