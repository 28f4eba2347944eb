/// <reference types="mocha" />
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { BlockDriverRegistry, type BlockDevice } from '@tsvmm/block';
import { applyBlockOps, qemu, scratchDir, writeParentWithHoles, type BlockOp } from '@tsvmm/block/testing';
import { createVpc, vpcDriver } from '../src/index.js';

const KiB = 1024;

const SIZE = 3 * 1024 * KiB;
const range = { off: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 300 * KiB }) };
const opArb: fc.Arbitrary<BlockOp> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('write' as const), ...range, seed: fc.integer() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('zero' as const), ...range }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('discard' as const), ...range }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('flush' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('reopen' as const) }) },
);

/** vpc discard changes nothing a read returns. */
function apply(open: () => Promise<BlockDevice>, ops: BlockOp[], model: Uint8Array): Promise<void> {
  return applyBlockOps(open, ops, model, (dev, off, len) => dev.discard(off, len));
}

describe('vpc: random operation sequences match an in-memory model (fast-check)', function () {
  this.timeout(300_000);
  const registry = new BlockDriverRegistry([vpcDriver]);

  const variants: Array<Record<string, string>> = [{ subformat: 'dynamic', block_size: '256K' }, { subformat: 'dynamic' }, { subformat: 'fixed' }];
  for (const options of variants) {
    it(`${JSON.stringify(options)}: content matches the model and qemu-img compare agrees`, async () => {
      const s = scratchDir('vpcprop');
      let n = 0;
      try {
        await fc.assert(
          fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
            const img = s.file(`p${n++}.vhd`);
            await createVpc({ filename: img, size: SIZE, options });
            const probe = await registry.openImage(img, { format: 'vpc' });
            const model = new Uint8Array(probe.size);
            await probe.close();
            await apply(() => registry.openImage(img, { format: 'vpc' }), ops, model);
            writeFileSync(s.file('model.raw'), model);
            const cmp = qemu('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', img, s.file('model.raw')], { allowFail: true });
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
    const s = scratchDir('vpcprop');
    let n = 0;
    try {
      await createVpc({ filename: s.file('base.vhd'), size: SIZE, options: { block_size: '512K' } });
      const base = await registry.openImage(s.file('base.vhd'));
      const parentModel = await writeParentWithHoles(base, 99);
      await base.close();
      await fc.assert(
        fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 25 }), async (ops) => {
          const img = s.file(`d${n++}.vhd`);
          await createVpc({ filename: img, size: 0, options: { backing_file: 'base.vhd', block_size: '256K' } });
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
