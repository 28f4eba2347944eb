/** EventFd.watch: readability callbacks from the event loop, also inside worker threads (iothreads). */
import { expect } from 'chai';
import { Worker } from 'node:worker_threads';
import { EventFd } from '../src/index.js';

describe('EventFd.watch', () => {
  it('calls back from the event loop when the eventfd is signalled, until stopped', async () => {
    const efd = EventFd.create();
    const seen: bigint[] = [];
    let wake: () => void = () => undefined;
    const w = efd.watch(() => {
      const v = efd.read();
      if (v !== null) seen.push(v);
      wake();
    });
    try {
      const got = new Promise<void>((r) => (wake = r));
      efd.write(3n);
      await got;
      expect(seen).to.deep.equal([3n]);
      w.stop();
      w.stop(); // idempotent
      efd.write(1n);
      await new Promise((r) => setTimeout(r, 20));
      expect(seen).to.deep.equal([3n]);
    } finally {
      w.stop();
      efd.close();
    }
  });

  it('works in a worker thread on an eventfd created elsewhere, and lets the worker end once stopped', async () => {
    const efd = EventFd.create();
    const src = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.url).then(({ EventFd }) => {
        const e = EventFd.borrow(workerData.fd);
        let n = 0n;
        const w = e.watch(() => {
          const v = e.read();
          if (v === null) return;
          n += v;
          if (n >= 5n) { w.stop(); parentPort.postMessage(String(n)); }
        });
        parentPort.postMessage('ready');
      });`;
    const url = new URL('../src/index.js', import.meta.url).href;
    const worker = new Worker(src, { eval: true, workerData: { fd: efd.fd, url } });
    try {
      const messages: string[] = [];
      const ended = new Promise<number>((resolve) => worker.on('exit', resolve));
      await new Promise<void>((resolve) => worker.on('message', (m: string) => { messages.push(m); if (m === 'ready') resolve(); }));
      efd.write(2n);
      await new Promise((r) => setTimeout(r, 10));
      efd.write(3n);
      expect(await ended).to.equal(0);
      expect(messages).to.deep.equal(['ready', '5']);
    } finally {
      efd.close();
    }
  });
});
