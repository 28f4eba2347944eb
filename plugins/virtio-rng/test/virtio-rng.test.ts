/**
 * virtio-rng-pci (OASIS VIRTIO 1.2 §5.4) through the virtio-pci transport,
 * and its rate limit (QEMU's max-bytes per period) with a hand-driven clock.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createTestDeviceContext } from '@tsvmm/core/testing';
import { SplitQueue, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_ID_RNG, type DataPlaneEnv, type DescriptorChain } from '@tsvmm/virtio';
import { MockVirtqueue, VirtioPciTestDriver, createVirtioPciTestBench, settle, until } from '@tsvmm/virtio/testing';
import { VirtioRngPci, virtioRngProperties } from '../src/index.js';
import { RngRequestHandler, type RngTimers } from '../src/data-plane.js';

let dir = '';
let source = '';
const SOURCE = Uint8Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff);

before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tsvmm-rng-'));
  source = path.join(dir, 'entropy.bin');
  writeFileSync(source, SOURCE);
});
after(() => rmSync(dir, { recursive: true, force: true }));

async function device(props: Record<string, unknown>) {
  const bench = createVirtioPciTestBench();
  const dev = new VirtioRngPci('rng0', virtioRngProperties.parse(props));
  await dev.realize(bench.t.ctx);
  const fn = dev.pciFunction;
  if (fn === undefined) throw new Error('not realized');
  const drv = new VirtioPciTestDriver(bench, fn);
  drv.mapBars();
  const q = new MockVirtqueue(bench.t.memory, { size: 8, base: 0x10000 });
  expect(drv.negotiate(0n)).to.equal(true);
  drv.setupQueue(0, q.config);
  drv.driverOk();
  await settle();
  return { bench, dev, drv, q };
}

describe('virtio-rng-pci', () => {
  it('is PCI device 0x1044 (0x1040 + VIRTIO_ID_RNG) with one queue of 8 and no configuration', async () => {
    const { dev, drv } = await device({ filename: source });
    try {
      expect(drv.fn.config.read(2, 2)).to.equal(0x1040 + VIRTIO_ID_RNG);
      expect(drv.common(0x12, 2)).to.equal(1);
      expect(drv.common(0x18, 2)).to.equal(8);
    } finally {
      await dev.unrealize();
    }
  });

  it('fills device-writable buffers with bytes from the source, in order', async () => {
    const { dev, drv, q, bench } = await device({ filename: source });
    try {
      const a = q.submit([{ len: 16, writable: true }]);
      const b = q.submit([{ len: 8, writable: true }, { len: 8, writable: true }]);
      drv.kick(0);
      await until(() => q.usedIdx() === 2);
      expect(q.usedSince(0)).to.deep.equal([
        { id: a.head, len: 16 },
        { id: b.head, len: 16 },
      ]);
      const got = new Uint8Array(32);
      bench.t.memory.read(a.addrs[0] ?? 0, got.subarray(0, 16));
      bench.t.memory.read(b.addrs[0] ?? 0, got.subarray(16, 24));
      bench.t.memory.read(b.addrs[1] ?? 0, got.subarray(24, 32));
      expect([...got]).to.deep.equal([...SOURCE.subarray(0, 32)]);
    } finally {
      await dev.unrealize();
    }
  });

  it('serves at most max-bytes in a period; the rest waits', async () => {
    const { dev, drv, q } = await device({ filename: source, 'max-bytes': 20, period: 600000 });
    try {
      for (let i = 0; i < 3; i++) q.submit([{ len: 16, writable: true }]);
      drv.kick(0);
      await until(() => q.usedIdx() === 2);
      await settle(40);
      expect(q.usedIdx()).to.equal(2);
      expect(q.usedSince(0).map((u) => u.len)).to.deep.equal([16, 4]);
    } finally {
      await dev.unrealize();
    }
  });

  it('puts the device in DEVICE_NEEDS_RESET for a device-readable buffer, with a configuration interrupt', async () => {
    const { dev, drv, q } = await device({ filename: source });
    try {
      q.submit([{ len: 4 }, { len: 16, writable: true }]);
      drv.kick(0);
      await until(() => (drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0);
      expect(drv.isr() & 2).to.equal(2);
      q.submit([{ len: 16, writable: true }]);
      drv.kick(0);
      await settle(40);
      expect(q.usedIdx(), 'the queue stopped').to.equal(0);
    } finally {
      await dev.unrealize();
    }
  });

  it('fails to realize with an entropy source it cannot open, naming it', async () => {
    const bench = createVirtioPciTestBench();
    const dev = new VirtioRngPci('rng0', virtioRngProperties.parse({ filename: path.join(dir, 'missing') }));
    let err: unknown;
    try {
      await dev.realize(bench.t.ctx);
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/cannot open the entropy source .*missing/);
  });

  it('reads the source of the rng object that rng= names (--object rng-random)', async () => {
    const bench = createVirtioPciTestBench({ rngBackends: [{ id: 'src0', filename: source }] });
    const dev = new VirtioRngPci('rng0', virtioRngProperties.parse({ rng: 'src0' }));
    await dev.realize(bench.t.ctx);
    try {
      expect(dev.describe()).to.include({ filename: source, rng: 'src0' });
    } finally {
      await dev.unrealize();
    }
  });

  for (const [what, props, message] of [
    ['an rng= that names no object', { rng: 'nope' }, /no rng object 'nope'/],
    ['rng= together with filename=', { rng: 'src0', filename: '/dev/urandom' }, /rng=src0 and filename=\/dev\/urandom both name an entropy source/],
  ] as const) {
    it(`refuses ${what}`, async () => {
      const bench = createVirtioPciTestBench({ rngBackends: [{ id: 'src0', filename: source }] });
      const dev = new VirtioRngPci('rng0', virtioRngProperties.parse(props));
      let err: unknown;
      try {
        await dev.realize(bench.t.ctx);
      } catch (e) {
        err = e;
      }
      expect(String(err)).to.match(message);
      expect(dev.pciFunction).to.equal(undefined);
    });
  }

  it('defaults to /dev/random and QEMU\'s period of 65536 ms', () => {
    const p = virtioRngProperties.parse({});
    expect(new VirtioRngPci('rng0', p).describe()).to.include({ filename: '/dev/random' });
    expect(p.period).to.equal(65536);
    expect(p['max-bytes']).to.equal(undefined);
  });
});

describe('virtio-rng rate limit (QEMU max-bytes/period)', () => {
  class ManualTimers implements RngTimers {
    pending: { ms: number; cb: () => void } | undefined;
    started = 0;
    start(ms: number, cb: () => void): () => void {
      this.started++;
      const entry = { ms, cb };
      this.pending = entry;
      return () => {
        if (this.pending === entry) this.pending = undefined;
      };
    }
    fire(): void {
      const p = this.pending;
      this.pending = undefined;
      p?.cb();
    }
  }

  async function limiter(maxBytes: number) {
    const t = createTestDeviceContext({ ramSize: 1 << 20 });
    const driver = new MockVirtqueue(t.memory, { size: 8 });
    const queue = SplitQueue.open(t.memory, driver.config) as SplitQueue;
    const env: DataPlaneEnv = { memory: t.memory, notifier: () => ({ watch: () => () => undefined, drain: () => undefined, notify: () => undefined }), onIoThread: false, warn: () => undefined };
    const timers = new ManualTimers();
    const file = await open(source, 'r');
    const h = new RngRequestHandler({ id: 'rng0', filename: source, maxBytes, periodMs: 1000 }, env, file, timers);
    const pop = (): DescriptorChain => {
      const r = queue.pop();
      if (r.kind !== 'chain') throw new Error(r.kind);
      return r.chain;
    };
    return { driver, h, timers, pop };
  }

  it('gives a request min(its space, the quota left)', async () => {
    const { driver, h, pop } = await limiter(10);
    driver.submit([{ len: 8, writable: true }]);
    driver.submit([{ len: 8, writable: true }]);
    expect(await h.handle(pop())).to.equal(8);
    expect(await h.handle(pop())).to.equal(2);
    await h.close();
  });

  it('holds requests once the quota is used up, and serves them in order when the period ends', async () => {
    const { driver, h, timers, pop } = await limiter(8);
    for (let i = 0; i < 3; i++) driver.submit([{ len: 8, writable: true }]);
    const first = await h.handle(pop());
    const order: number[] = [];
    const second = h.handle(pop()).then((n) => order.push(2) && n);
    const third = h.handle(pop()).then((n) => order.push(3) && n);
    await settle();
    expect(first).to.equal(8);
    expect(order).to.deep.equal([]);
    timers.fire();
    expect(await second).to.equal(8);
    await settle();
    expect(order).to.deep.equal([2]);
    timers.fire();
    expect(await third).to.equal(8);
    expect(order).to.deep.equal([2, 3]);
    await h.close();
  });

  it('starts a period only when serving a request (QEMU arms its timer on processing)', async () => {
    const { driver, h, timers, pop } = await limiter(100);
    expect(timers.started).to.equal(0);
    driver.submit([{ len: 8, writable: true }]);
    await h.handle(pop());
    expect(timers.started).to.equal(1);
    await h.close();
  });

  it('drops waiting requests on reset', async () => {
    const { driver, h, pop } = await limiter(4);
    driver.submit([{ len: 4, writable: true }]);
    driver.submit([{ len: 4, writable: true }]);
    await h.handle(pop());
    const waiting = h.handle(pop());
    h.reset();
    let rejected = false;
    await waiting.catch(() => {
      rejected = true;
    });
    expect(rejected).to.equal(true);
    await h.close();
  });
});
