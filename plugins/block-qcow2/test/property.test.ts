/**
 * Property tests (fast-check): random operation sequences on qcow2 agree
 * with an in-memory model and leave an image qemu-img check accepts; fuzzed
 * headers and metadata never crash the driver, never escape the file and
 * never modify an image opened read-only.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { readFileSync, writeFileSync } from 'node:fs';
import { BlockError } from '@tsvmm/block';
import { qemu, registry, scratch, sha256 } from './helpers.js';

type Op =
  | { kind: 'write'; off: number; len: number; fill: number }
  | { kind: 'zero'; off: number; len: number; unmap: boolean }
  | { kind: 'discard'; off: number; len: number }
  | { kind: 'resize'; sectors: number }
  | { kind: 'reopen' };

const SIZE = 2 * 1024 * 1024;

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('write' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 150000 }), fill: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 300000 }), unmap: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('discard' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 300000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('resize' as const), sectors: fc.integer({ min: 128, max: (SIZE / 512) * 2 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('reopen' as const) }) },
);

const configArb = fc.record({
  clusterBits: fc.constantFrom(9, 12, 16),
  refcountBits: fc.constantFrom(1, 4, 16, 64),
  compat: fc.constantFrom('0.10', '1.1'),
  lazy: fc.boolean(),
  backing: fc.boolean(),
});

describe('qcow2 properties', function () {
  this.timeout(240000);

  it('random operation sequences match a model and pass qemu-img check', async () => {
    await fc.assert(
      fc.asyncProperty(configArb, fc.array(opArb, { minLength: 1, maxLength: 25 }), async (cfg, ops) => {
        const s = scratch();
        try {
          const file = s.file('p.qcow2');
          const reg = registry();
          const options: Record<string, string> = {
            cluster_size: String(2 ** cfg.clusterBits),
            refcount_bits: String(cfg.compat === '0.10' ? 16 : cfg.refcountBits),
            compat: cfg.compat,
            lazy_refcounts: cfg.lazy && cfg.compat === '1.1' ? 'on' : 'off',
          };
          let model = new Uint8Array(SIZE);
          if (cfg.backing) {
            const base = new Uint8Array(SIZE);
            for (let i = 0; i < SIZE; i += 4096) base.fill((i / 4096) % 200 + 1, i, i + 2048);
            writeFileSync(s.file('base.raw'), base);
            options['backing_file'] = 'base.raw';
            options['backing_fmt'] = 'raw';
            model = base.slice();
          }
          await reg.create('qcow2', { filename: file, size: SIZE, options });
          let dev = await reg.openImage(file);
          for (const op of ops) {
            const size = dev.size;
            if (op.kind === 'reopen') {
              await dev.close();
              dev = await reg.openImage(file);
              continue;
            }
            if (op.kind === 'resize') {
              const ns = op.sectors * 512;
              await dev.resize(ns);
              const nm = new Uint8Array(ns);
              nm.set(model.subarray(0, Math.min(ns, model.length)));
              model = nm;
              continue;
            }
            const off = op.off % size;
            const len = Math.min(op.len, size - off);
            if (len <= 0) continue;
            if (op.kind === 'write') {
              const d = new Uint8Array(len).fill(op.fill);
              await dev.write(off, d);
              model.fill(op.fill, off, off + len);
            } else if (op.kind === 'zero') {
              await dev.writeZeroes(off, len, { mayUnmap: op.unmap });
              model.fill(0, off, off + len);
            } else {
              await dev.discard(off, len);
              const back = new Uint8Array(len);
              await dev.read(off, back);
              for (let i = 0; i < len; i++) {
                const v = back[i] ?? 0;
                if (v !== 0 && v !== model[off + i]) throw new Error(`discard invented data at ${off + i}`);
              }
              model.set(back, off);
            }
          }
          const all = new Uint8Array(dev.size);
          await dev.read(0, all);
          await dev.close();
          expect(Buffer.compare(Buffer.from(all), Buffer.from(model))).to.equal(0);
          writeFileSync(s.file('model.raw'), model);
          const ck = qemu('qemu-img', ['check', file], { allowFail: true });
          expect(ck.status, ck.stdout).to.equal(0);
          const cmp = qemu('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', file, s.file('model.raw')], { allowFail: true });
          expect(cmp.status, cmp.stdout).to.equal(0);
        } finally {
          s.cleanup();
        }
      }),
      { numRuns: 60, seed: 20261126 },
    );
  });

  it('fuzzed headers and metadata: a typed error or a consistent read, never a crash or a write', async () => {
    const s = scratch();
    try {
      const pristine = s.file('pristine.qcow2');
      qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', pristine, '1M']);
      qemu('qemu-io', ['-c', 'write -P 0x5a 0 64k', '-c', 'write -z 128k 8k', '-c', 'write -P 7 900k 5k', pristine]);
      const bytes = readFileSync(pristine);
      // the header, the L1 table, refcount table and block, and the first L2 table live in the first 7 clusters
      const meta = Math.min(bytes.length, 7 * 4096);
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.record({ at: fc.nat(meta - 1), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 }),
          async (edits) => {
            const f = s.file('fuzz.qcow2');
            const b = Buffer.from(bytes);
            for (const e of edits) b[e.at] = e.value;
            writeFileSync(f, b);
            const before = sha256(f);
            try {
              const dev = await registry().openImage(f, { format: 'qcow2', readOnly: true });
              try {
                const buf = new Uint8Array(Math.min(dev.size, 2 * 1024 * 1024));
                await dev.read(0, buf);
                await dev.blockStatus(0, buf.length);
                if (dev.check) await dev.check({});
              } finally {
                await dev.close();
              }
            } catch (e) {
              if (!(e instanceof BlockError)) throw e;
              expect(e.message).to.contain(f);
            }
            expect(sha256(f)).to.equal(before);
          },
        ),
        { numRuns: 300, seed: 42 },
      );
    } finally {
      s.cleanup();
    }
  });
});
