/// <reference types="mocha" />
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { BlockDriverRegistry, type BlockDevice } from '@tsvmm/block';
import { createVpc, vpcDriver } from '../src/index.js';
import { prng, qemu, scratchDir } from './helpers.js';

const KiB = 1024;

type Op =
  | { op: 'write'; off: number; len: number; seed: number }
  | { op: 'zero'; off: number; len: number }
  | { op: 'discard'; off: number; len: number }
  | { op: 'flush' }
  | { op: 'reopen' };

const SIZE = 3 * 1024 * KiB;
const range = { off: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 300 * KiB }) };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ op: fc.constant('write' as const), ...range, seed: fc.integer() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('zero' as const), ...range }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('discard' as const), ...range }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('flush' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('reopen' as const) }) },
);

async function apply(open: () => Promise<BlockDevice>, ops: Op[], model: Uint8Array): Promise<void> {
  let dev = await open();
  try {
    for (const o of ops) {
      if (o.op === 'flush') {
        await dev.flush();
        continue;
      }
      if (o.op === 'reopen') {
        await dev.close();
        dev = await open();
        continue;
      }
      const off = Math.min(o.off, dev.size - 1);
      const len = Math.min(o.len, dev.size - off);
      if (o.op === 'write') {
        const data = prng(o.seed).bytes(len);
        await dev.write(off, data);
        model.set(data, off);
      } else if (o.op === 'zero') {
        await dev.writeZeroes(off, len);
        model.fill(0, off, off + len);
      } else {
        await dev.discard(off, len);
      }
    }
    const out = new Uint8Array(dev.size);
    await dev.read(0, out);
    expect(Buffer.compare(out, model), 'tsvmm reads back the model').to.equal(0);
  } finally {
    await dev.close();
  }
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
      const baseContent = prng(99).bytes(base.size);
      // leave holes in the parent: only every other 64 KiB is written
      for (let off = 0; off < base.size; off += 128 * KiB) {
        await base.write(off, baseContent.subarray(off, Math.min(off + 64 * KiB, base.size)));
      }
      const parentModel = new Uint8Array(base.size);
      await base.read(0, parentModel);
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
