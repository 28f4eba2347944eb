/**
 * Guest RAM: a memfd mapping exposed as a SharedArrayBuffer that worker
 * threads share (ARCHITECTURE.md, "Guest memory and DMA").
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { GuestRam } from '../src/index.js';
import { GuestCode } from './guest-code.js';
import { closeLeftoverVms, createTestVm, delay, readLe, runUntilEvent, withTimeout } from './harness.js';

function runWorker(buffer: SharedArrayBuffer, offset: number, text: string): Promise<bigint> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./fixtures/ram-worker.js', import.meta.url), { workerData: { buffer, offset, text } });
    worker.once('message', (msg: unknown) => {
      const address = (msg as { hostAddress?: unknown }).hostAddress;
      if (typeof address === 'bigint') resolve(address);
      else reject(new Error(`unexpected worker message ${String(msg)}`));
    });
    worker.once('error', reject);
  });
}

function mapsMention(name: string): boolean {
  return readFileSync('/proc/self/maps', 'utf8').includes(`memfd:${name}`);
}

describe('GuestRam', () => {
  afterEach(closeLeftoverVms);

  it('allocates zeroed, page-multiple RAM with its memfd and host address', () => {
    const ram = GuestRam.allocate(64 * 1024, { name: 'tsvmm-test-alloc' });
    expect(ram.size).to.equal(65536);
    expect(ram.buffer).to.be.instanceOf(SharedArrayBuffer);
    expect(ram.hostAddress % 4096n).to.equal(0n);
    expect(GuestRam.hostAddressOf(ram.buffer)).to.equal(ram.hostAddress);
    expect(readFileSync(`/proc/self/fd/${ram.fd}`).length).to.equal(65536);
    expect(ram.bytes().every((b) => b === 0)).to.equal(true);
    expect(() => GuestRam.allocate(1000)).to.throw(RangeError, /multiple of 4096/);
  });

  it('shows a worker thread write to the main thread, at the same host address', async () => {
    const ram = GuestRam.allocate(4096);
    const address = await withTimeout(runWorker(ram.buffer, 100, 'written in a worker'), 10_000, 'the worker');
    expect(address).to.equal(ram.hostAddress);
    expect(new TextDecoder().decode(ram.bytes(100, 19))).to.equal('written in a worker');
  });

  it('lets the guest read what a worker wrote, without copies', async () => {
    const DATA = 0x8000;
    const t = createTestVm(new GuestCode(32).movEaxMem(DATA).movDx(0x21).outDx(4).hlt());
    try {
      await withTimeout(runWorker(t.ram.buffer, DATA, 'VMM!'), 10_000, 'the worker');
      const seen: number[] = [];
      const { event } = await runUntilEvent(t, { pio: (_p, _s, _w, data) => void seen.push(readLe(data)) });
      expect(event.kind).to.equal('hlt');
      expect(seen).to.deep.equal([0x214d4d56]); // 'VMM!' little-endian
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('unmaps the memory once its last SharedArrayBuffer is collected', async () => {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    if (typeof gc !== 'function') throw new Error('cannot reach gc()');
    const name = `tsvmm-gc-probe-${process.pid}`;
    let ram: GuestRam | undefined = GuestRam.allocate(4096, { name });
    expect(mapsMention(name)).to.equal(true);
    expect(ram.size).to.equal(4096);
    ram = undefined;
    for (let i = 0; i < 20 && mapsMention(name); i++) {
      (gc as () => void)();
      await delay(10);
    }
    expect(mapsMention(name)).to.equal(false);
  });
});
