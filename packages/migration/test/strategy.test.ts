/**
 * QEMU's precopy convergence (iterativePrecopy): after the bulk round, sync
 * and send rounds until the dirty bytes fit the downtime limit at the
 * measured bandwidth; a round limit forces the stop-and-copy.
 */
import { expect } from 'chai';
import { DEFAULT_PARAMETERS, expectedDowntimeMs, iterativePrecopy, type MigrationParameters, type PrecopyContext } from '../src/index.js';

function fakeContext(dirtySeries: number[], bandwidth: number, params: Partial<MigrationParameters> = {}): { ctx: PrecopyContext; log: string[] } {
  const log: string[] = [];
  let iterations = 1;
  let i = 0;
  const ctx: PrecopyContext = {
    params: { ...DEFAULT_PARAMETERS, ...params },
    sendBulk: () => {
      log.push('bulk');
      return Promise.resolve({ pages: 0, bytes: 0, durationMs: 1 });
    },
    syncDirtyPages: () => {
      iterations++;
      const d = dirtySeries[Math.min(i++, dirtySeries.length - 1)] ?? 0;
      log.push(`sync ${d}`);
      return d;
    },
    sendDirty: () => {
      log.push('send');
      return Promise.resolve({ pages: 0, bytes: 0, durationMs: 1 });
    },
    bandwidth,
    get iterations() {
      return iterations;
    },
    reportExpectedDowntime: (ms) => log.push(`expect ${Math.round(ms)}`),
    throwIfStopped: () => undefined,
  };
  return { ctx, log };
}

describe('precopy convergence (iterativePrecopy)', () => {
  it('predicts downtime as dirty bytes over bandwidth', () => {
    expect(expectedDowntimeMs(0, 0)).to.equal(0);
    expect(expectedDowntimeMs(256, 4096 * 1000)).to.equal(256);
    expect(expectedDowntimeMs(1, 0)).to.equal(Infinity);
  });

  it('sends rounds while the dirty set would take longer than the limit, then returns for the stop-and-copy', async () => {
    // 100 MB/s: 10000 pages take ~410 ms, 5000 ~205 ms
    const { ctx, log } = fakeContext([20000, 10000, 5000], 100e6);
    await iterativePrecopy(ctx);
    expect(log).to.deep.equal(['bulk', 'sync 20000', 'expect 819', 'send', 'sync 10000', 'expect 410', 'send', 'sync 5000', 'expect 205']);
  });

  it('stops after maxIterations dirty syncs even if the guest dirties too fast', async () => {
    const { ctx, log } = fakeContext([50000], 100e6, { maxIterations: 3 });
    await iterativePrecopy(ctx);
    expect(log.filter((l) => l === 'send')).to.have.length(1);
    expect(log.at(-1)).to.equal('expect 2048');
  });

  it('goes straight to the stop-and-copy of an idle guest', async () => {
    const { ctx, log } = fakeContext([3], 1e6);
    await iterativePrecopy(ctx);
    expect(log).to.deep.equal(['bulk', 'sync 3', 'expect 12']);
  });
});
