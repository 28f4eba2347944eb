/**
 * Writing qcow2 images that have internal snapshots (qcow2.txt "Snapshots",
 * "Cluster mapping": the COPIED flag): tsvmm copies shared L2 tables and
 * data clusters before writing, so every snapshot keeps its content. The
 * snapshots are taken by qemu-img; qemu-img check judges the refcounts and
 * COPIED flags, and `qemu-img convert -l snapshot.name=...` reads each
 * snapshot back.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { readFileSync, writeFileSync } from 'node:fs';
import { BlockUnsupportedError } from '@tsvmm/block';
import { img, qemu, registry, scratch } from './helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;

function snapshotContent(file: string, name: string, out: string): Buffer {
  qemu('qemu-img', ['convert', '-f', 'qcow2', '-l', `snapshot.name=${name}`, '-O', 'raw', file, out]);
  return readFileSync(out);
}

function expectCheckClean(file: string): void {
  const ck = qemu('qemu-img', ['check', file], { allowFail: true });
  expect(ck.status, `${ck.stdout}${ck.stderr}`).to.equal(0);
}

function expectActive(file: string, model: Uint8Array, raw: string): void {
  writeFileSync(raw, model);
  const cmp = qemu('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', file, raw], { allowFail: true });
  expect(cmp.status, cmp.stdout).to.equal(0);
}

describe('qcow2 with internal snapshots', function () {
  this.timeout(240_000);

  it('writes, zeroes and discards around a snapshot; the snapshot keeps its content and qemu-img check is clean', async () => {
    const s = scratch();
    try {
      const file = s.file('s.qcow2');
      qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', file, '8M']);
      // data in three L2 tables (each maps 2 MiB at 4 KiB clusters)
      qemu('qemu-io', ['-c', 'write -P 0x11 0 1M', '-c', 'write -P 0x22 2044k 8k', '-c', 'write -P 0x33 5M 64k', file]);
      qemu('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, s.file('x.raw')]);
      const before = readFileSync(s.file('x.raw'));
      qemu('qemu-img', ['snapshot', '-c', 's1', file]);

      const model = new Uint8Array(before);
      const dev = await registry().openImage(file);
      try {
        const w = async (off: number, len: number, v: number): Promise<void> => {
          await dev.write(off, new Uint8Array(len).fill(v));
          model.fill(v, off, off + len);
        };
        await w(100, 200, 0xa1); // partial cluster in a shared data cluster
        await w(64 * KiB, 16 * KiB, 0xa2); // whole shared clusters
        await w(2046 * KiB, 4 * KiB, 0xa3); // across an L2 table boundary
        await w(7 * MiB, 4 * KiB, 0xa4); // where nothing was allocated
        await dev.writeZeroes(5 * MiB, 8 * KiB, { mayUnmap: true });
        model.fill(0, 5 * MiB, 5 * MiB + 8 * KiB);
        await dev.discard(512 * KiB, 64 * KiB);
        const back = new Uint8Array(64 * KiB);
        await dev.read(512 * KiB, back);
        model.set(back, 512 * KiB);
        await w(100, 200, 0xa5); // again: now the cluster is the image's own
      } finally {
        await dev.close();
      }
      expectCheckClean(file);
      expectActive(file, model, s.file('model.raw'));
      expect(snapshotContent(file, 's1', s.file('s1.raw')).equals(before), 'snapshot s1 is what the image held when it was taken').to.equal(true);

      // and qemu can go back to it
      qemu('qemu-img', ['snapshot', '-a', 's1', file]);
      expectActive(file, before, s.file('before.raw'));
      expectCheckClean(file);
    } finally {
      s.cleanup();
    }
  });

  it('writes over compressed clusters that a snapshot shares', async () => {
    const s = scratch();
    try {
      const raw = s.file('src.raw');
      const data = new Uint8Array(2 * MiB);
      for (let i = 0; i < data.length; i++) data[i] = (i >> 9) & 0xff;
      writeFileSync(raw, data);
      const file = s.file('c.qcow2');
      qemu('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', raw, file]);
      qemu('qemu-img', ['snapshot', '-c', 'c1', file]);
      const model = data.slice();
      const dev = await registry().openImage(file);
      try {
        await dev.write(1000, new Uint8Array(3000).fill(0xee));
        model.fill(0xee, 1000, 4000);
        await dev.writeZeroes(MiB, 256 * KiB);
        model.fill(0, MiB, MiB + 256 * KiB);
      } finally {
        await dev.close();
      }
      expectCheckClean(file);
      expectActive(file, model, s.file('model.raw'));
      expect(snapshotContent(file, 'c1', s.file('c1.raw')).equals(Buffer.from(data))).to.equal(true);
    } finally {
      s.cleanup();
    }
  });

  it('refuses to shrink an image with snapshots, and to resize a version 2 one; a version 3 one grows', async () => {
    const s = scratch();
    try {
      for (const compat of ['0.10', '1.1']) {
        const file = s.file(`r${compat}.qcow2`);
        qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `compat=${compat}`, file, '4M']);
        qemu('qemu-io', ['-c', 'write -P 0x44 0 64k', file]);
        qemu('qemu-img', ['snapshot', '-c', 'keep', file]);
        const dev = await registry().openImage(file);
        try {
          let err: unknown;
          try {
            await dev.resize(2 * MiB);
          } catch (e) {
            err = e;
          }
          expect(err).to.be.instanceOf(BlockUnsupportedError);
          expect(String(err)).to.match(compat === '0.10' ? /version 2 image with snapshots cannot be resized/ : /can grow but not shrink/);
          if (compat === '1.1') {
            await dev.resize(6 * MiB);
            expect(dev.size).to.equal(6 * MiB);
          }
        } finally {
          await dev.close();
        }
        expectCheckClean(file);
      }
    } finally {
      s.cleanup();
    }
  });

  it('refuses amend to compat=0.10 while snapshots exist, leaving the image as it was', async () => {
    const s = scratch();
    try {
      const file = s.file('a.qcow2');
      qemu('qemu-img', ['create', '-q', '-f', 'qcow2', file, '1M']);
      qemu('qemu-io', ['-c', 'write -z 0 64k', file]);
      qemu('qemu-img', ['snapshot', '-c', 'z', file]);
      const r = await img(['amend', '-o', 'compat=0.10', file]);
      expect(r.code).to.not.equal(0);
      expect(r.err).to.match(/1 internal snapshot\(s\); delete them before going to compat=0\.10/);
      const info = JSON.parse(qemu('qemu-img', ['info', '--output', 'json', file]).stdout) as { 'format-specific': { data: { compat: string } } };
      expect(info['format-specific'].data.compat).to.equal('1.1');
      expectCheckClean(file);
    } finally {
      s.cleanup();
    }
  });

  type Op =
    | { kind: 'write'; off: number; len: number; fill: number }
    | { kind: 'zero'; off: number; len: number; unmap: boolean }
    | { kind: 'discard'; off: number; len: number }
    | { kind: 'snapshot' };
  const SIZE = 3 * MiB;
  const opArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.record({ kind: fc.constant('write' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 200_000 }), fill: fc.integer({ min: 1, max: 255 }) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('zero' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 300_000 }), unmap: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('discard' as const), off: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 300_000 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('snapshot' as const) }) },
  );

  it('random writes between qemu-img snapshots: every snapshot and the active image read as modelled, check is clean', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          clusterBits: fc.constantFrom(9, 12, 16),
          refcountBits: fc.constantFrom(4, 16, 64),
          compat: fc.constantFrom('0.10', '1.1'),
          lazy: fc.boolean(),
          backing: fc.boolean(),
        }),
        fc.array(opArb, { minLength: 1, maxLength: 16 }),
        async (cfg, ops) => {
          const s = scratch();
          try {
            const file = s.file('p.qcow2');
            const v3 = cfg.compat === '1.1';
            const model = new Uint8Array(SIZE);
            if (cfg.backing) {
              // the second MiB shows through from a backing file until written
              model.fill(0x77, MiB, 2 * MiB);
              writeFileSync(s.file('base.raw'), model);
            }
            qemu('qemu-img', [
              'create', '-q', '-f', 'qcow2', '-o',
              `cluster_size=${2 ** cfg.clusterBits},compat=${cfg.compat},refcount_bits=${v3 ? cfg.refcountBits : 16},lazy_refcounts=${v3 && cfg.lazy ? 'on' : 'off'}`,
              ...(cfg.backing ? ['-b', 'base.raw', '-F', 'raw'] : []),
              file, String(SIZE),
            ]);
            qemu('qemu-io', ['-c', 'write -P 0x5a 0 1M', file]);
            qemu('qemu-img', ['snapshot', '-c', 'snap0', file]);
            model.fill(0x5a, 0, MiB);
            const snaps = new Map<string, Uint8Array>([['snap0', model.slice()]]);
            let dev = await registry().openImage(file);
            try {
              for (const op of ops) {
                if (op.kind === 'snapshot') {
                  await dev.close();
                  const name = `snap${snaps.size}`;
                  qemu('qemu-img', ['snapshot', '-c', name, file]);
                  snaps.set(name, model.slice());
                  dev = await registry().openImage(file);
                  continue;
                }
                const len = Math.min(op.len, SIZE - op.off);
                if (op.kind === 'write') {
                  await dev.write(op.off, new Uint8Array(len).fill(op.fill));
                  model.fill(op.fill, op.off, op.off + len);
                } else if (op.kind === 'discard') {
                  // discard may leave data or read as zeroes (or the backing file); take what reads say, but nothing new
                  await dev.discard(op.off, len);
                  const back = new Uint8Array(len);
                  await dev.read(op.off, back);
                  for (let i = 0; i < len; i++) {
                    const v = back[i] ?? 0;
                    const base = cfg.backing && op.off + i >= MiB && op.off + i < 2 * MiB ? 0x77 : 0;
                    if (v !== 0 && v !== base && v !== model[op.off + i]) throw new Error(`discard invented data at ${op.off + i}`);
                  }
                  model.set(back, op.off);
                } else {
                  await dev.writeZeroes(op.off, len, { mayUnmap: op.unmap });
                  model.fill(0, op.off, op.off + len);
                }
              }
            } finally {
              await dev.close();
            }
            expectCheckClean(file);
            expectActive(file, model, s.file('model.raw'));
            for (const [name, content] of snaps) {
              expect(snapshotContent(file, name, s.file(`${name}.raw`)).equals(content), `snapshot ${name}`).to.equal(true);
            }
          } finally {
            s.cleanup();
          }
        },
      ),
      { numRuns: 40, seed: 20261126 },
    );
  });
});
