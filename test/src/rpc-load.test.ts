/**
 * Load: 100 clients at once, each issuing vm/status requests while a VM
 * prints to its console; every request is answered and the server's memory
 * comes back down afterwards (RSS measured before and after, bounded).
 */
import { expect } from 'chai';
import * as fs from 'node:fs';
import { TsvmmClient } from '@tsvmm/client';
import { fakeKernel, startServer, tmpDir } from './rpc-harness.js';

const CLIENTS = 100;
const REQUESTS_PER_CLIENT = 30;

describe('rpc load', function () {
  this.timeout(180_000);

  it(`answers ${CLIENTS} clients issuing vm/status while a VM prints, with bounded RSS`, async () => {
    const dir = tmpDir();
    const server = await startServer();
    try {
      const admin = await TsvmmClient.connect(server.address);
      const { vmId } = await admin.vmCreate({ description: { kernel: fakeKernel(dir) } });
      await admin.vmStart({ vmId });
      await admin.consoleWrite({ vmId, data: 'tick 2\n' });
      await admin.waitForConsole(vmId, 'tick 3');

      const round = async (): Promise<{ answered: number; consoleNotes: number }> => {
        const clients = await Promise.all(Array.from({ length: CLIENTS }, () => TsvmmClient.connect(server.address)));
        let consoleNotes = 0;
        for (const c of clients) c.onConsoleOutput(() => consoleNotes++);
        const answers = await Promise.all(
          clients.map(async (c) => {
            let n = 0;
            for (let i = 0; i < REQUESTS_PER_CLIENT; i++) {
              const s = await c.vmStatus({ vmId });
              if (s.state === 'running') n++;
            }
            return n;
          }),
        );
        await Promise.all(clients.map((c) => c.close()));
        return { answered: answers.reduce((a, b) => a + b, 0), consoleNotes };
      };

      // Warm up (JIT, plugin catalog, buffers), then measure.
      await round();
      global.gc?.();
      const before = server.rssBytes();
      let last = { answered: 0, consoleNotes: 0 };
      for (let i = 0; i < 5; i++) last = await round();
      await new Promise((r) => setTimeout(r, 500));
      const after = server.rssBytes();

      expect(last.answered).to.equal(CLIENTS * REQUESTS_PER_CLIENT);
      expect(last.consoleNotes).to.be.greaterThan(0);
      const growth = after - before;
      // 5 rounds × 100 connections: a leak of even a few KiB per connection or request would show.
      expect(growth, `RSS ${before >> 20} MiB → ${after >> 20} MiB`).to.be.lessThan(48 * 1024 * 1024);
      expect((await admin.vmStatus({ vmId })).state).to.equal('running');
      await admin.vmDestroy({ vmId });
      await admin.close();
    } finally {
      await server.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
