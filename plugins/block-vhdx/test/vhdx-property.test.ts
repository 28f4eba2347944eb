/// <reference types="mocha" />
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { BlockDriverRegistry, type BlockDevice } from '@tsvmm/block';
import { applyBlockOps, qemu, scratchDir, writeParentWithHoles, type BlockOp } from '@tsvmm/block/testing';
import { createVhdx, vhdxDriver } from '../src/index.js';

const KiB = 1024;

const SIZE = 7 * 1024 * KiB + 512;
const range = { off: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 3 * 1024 * KiB }) };
const opArb: fc.Arbitrary<BlockOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('write' as const), ...range, seed: fc.integer() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('zero' as const), ...range }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('discard' as const), ...range }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('unmap' as const), ...range }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('flush' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('reopen' as const) }) },
);

/** vhdx discard: whole blocks become zero, the rest is untouched; the model follows what reads return. */
async function discardWholeBlocks(dev: BlockDevice, off: number, len: number, model: Uint8Array): Promise<void> {
  await dev.discard(off, len);
  const now = new Uint8Array(len);
  await dev.read(off, now);
  const bs = 1024 * KiB;
  let bad = -1;
  for (let i = 0; i < len && bad < 0; i++) {
    if (now[i] === model[off + i]) continue;
    const p = off + i;
    const blockStart = p - (p % bs);
    const whole = blockStart >= off && Math.min(blockStart + bs, dev.size) <= off + len;
    if (!whole || now[i] !== 0) bad = p;
  }
  expect(bad, 'discard changed a byte outside a whole block').to.equal(-1);
  model.set(now, off);
}

function apply(open: () => Promise<BlockDevice>, ops: BlockOp[], model: Uint8Array): Promise<void> {
  return applyBlockOps(open, ops, model, discardWholeBlocks);
}

describe('vhdx: random operation sequences match an in-memory model (fast-check)', function () {
  this.timeout(300_000);
  const registry = new BlockDriverRegistry([vhdxDriver]);

  const variants: Array<Record<string, string>> = [
    { subformat: 'dynamic', block_size: '1M' },
    { subformat: 'dynamic', block_size: '1M', block_state_zero: 'off' },
    { subformat: 'fixed', block_size: '1M' },
  ];
  for (const options of variants) {
    it(`${JSON.stringify(options)}: content matches the model and qemu-img compare agrees`, async () => {
      const s = scratchDir('vhdxprop');
      let n = 0;
      try {
        await fc.assert(
          fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
            const img = s.file(`p${n++}.vhdx`);
            await createVhdx({ filename: img, size: SIZE, options });
            const probe = await registry.openImage(img, { format: 'vhdx' });
            const model = new Uint8Array(probe.size);
            await probe.close();
            await apply(() => registry.openImage(img, { format: 'vhdx' }), ops, model);
            writeFileSync(s.file('model.raw'), model);
            const chk = qemu('qemu-img', ['check', '-f', 'vhdx', img], { allowFail: true });
            expect(chk.status, chk.stdout + chk.stderr).to.equal(0);
            const cmp = qemu('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', img, s.file('model.raw')], { allowFail: true });
            expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
          }),
          { numRuns: 25, seed: 17 },
        );
      } finally {
        s.cleanup();
      }
    });
  }

  it('differencing: content matches parent + writes', async () => {
    const s = scratchDir('vhdxprop');
    let n = 0;
    try {
      await createVhdx({ filename: s.file('base.vhdx'), size: SIZE, options: { block_size: '1M' } });
      const base = await registry.openImage(s.file('base.vhdx'));
      const parentModel = await writeParentWithHoles(base, 99);
      await base.close();
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
          const img = s.file(`d${n++}.vhdx`);
          await createVhdx({ filename: img, size: 0, options: { backing_file: 'base.vhdx', block_size: '1M' } });
          const model = Uint8Array.from(parentModel);
          await apply(() => registry.openImage(img), ops, model);
        }),
        { numRuns: 25, seed: 23 },
      );
    } finally {
      s.cleanup();
    }
  });
});
