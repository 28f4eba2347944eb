/**
 * Interoperability, qemu-img/qemu-io as the writer: every image they make —
 * each option, compressed, with backing chains, with zero clusters, after
 * `qemu-img amend` — reads identically in tsvmm, block by block and through
 * `tsvmm img compare`, and passes tsvmm's own check.
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { Prng, img, qemu, registry, scratch } from './helpers.js';

const MiB = 1024 * 1024;

/** qemu-io commands that leave data, partial clusters, zero clusters and discards. */
const WRITES = [
  'write -P 0xab 0 64k',
  'write -P 0x11 100000 3000',
  'write -P 0x22 1M 300k',
  'write -z 1100k 128k',
  'write -z -u 1200k 64k',
  'discard 1050k 64k',
  'write -P 0x33 3M 1',
  'write -P 0x44 4194304 65536',
];

interface Case {
  name: string;
  create: string[];
  /** extra steps after the writes */
  after?: (file: string, dir: (n: string) => string) => void;
  backingChain?: boolean;
}

const CASES: Case[] = [
  { name: 'defaults', create: [] },
  { name: 'compat=0.10', create: ['-o', 'compat=0.10'] },
  { name: 'cluster_size=512', create: ['-o', 'cluster_size=512'] },
  { name: 'cluster_size=4k,refcount_bits=1', create: ['-o', 'cluster_size=4k,refcount_bits=1'] },
  { name: 'refcount_bits=8', create: ['-o', 'refcount_bits=8'] },
  { name: 'refcount_bits=64', create: ['-o', 'refcount_bits=64'] },
  { name: 'cluster_size=2M', create: ['-o', 'cluster_size=2M'] },
  { name: 'lazy_refcounts=on', create: ['-o', 'lazy_refcounts=on'] },
  { name: 'preallocation=metadata', create: ['-o', 'preallocation=metadata'] },
  { name: 'preallocation=full', create: ['-o', 'preallocation=full,cluster_size=16k'] },
  { name: 'backing chain raw <- qcow2 <- qcow2', create: [], backingChain: true },
  {
    name: 'amended to compat=0.10',
    create: [],
    after: (f) => qemu('qemu-img', ['amend', '-o', 'compat=0.10', f]),
  },
  {
    name: 'amended from 0.10 to 1.1 with lazy refcounts',
    create: ['-o', 'compat=0.10'],
    after: (f) => qemu('qemu-img', ['amend', '-o', 'compat=1.1,lazy_refcounts=on', f]),
  },
  {
    name: 'amended to refcount_bits=4',
    create: [],
    after: (f) => qemu('qemu-img', ['amend', '-o', 'refcount_bits=4', f]),
  },
  {
    name: 'with an internal snapshot',
    create: [],
    after: (f) => {
      qemu('qemu-img', ['snapshot', '-c', 'snap1', f]);
      qemu('qemu-io', ['-c', 'write -P 0x55 0 128k', f]);
    },
  },
  {
    name: 'with a persistent dirty bitmap',
    create: [],
    after: (f) => qemu('qemu-img', ['bitmap', '--add', f, 'b0']),
  },
];

async function readsIdentically(file: string, expectedRaw: string): Promise<void> {
  const expected = readFileSync(expectedRaw);
  const dev = await registry().openImage(file, { readOnly: true });
  try {
    expect(dev.size).to.equal(expected.length);
    // whole clusters, then odd sizes at odd offsets
    const buf = new Uint8Array(65536);
    for (let off = 0; off < dev.size; off += buf.length) {
      const n = Math.min(buf.length, dev.size - off);
      await dev.read(off, buf.subarray(0, n));
      if (Buffer.compare(Buffer.from(buf.subarray(0, n)), expected.subarray(off, off + n)) !== 0) {
        throw new Error(`${file}: block at ${off} differs from qemu-img's view`);
      }
    }
    const rnd = new Prng(7);
    for (let i = 0; i < 50; i++) {
      const off = rnd.int(dev.size);
      const n = Math.min(1 + rnd.int(200000), dev.size - off);
      const b = new Uint8Array(n);
      await dev.read(off, b);
      expect(Buffer.compare(Buffer.from(b), expected.subarray(off, off + n)), `read at ${off}+${n}`).to.equal(0);
    }
  } finally {
    await dev.close();
  }
  const cmp = await img(['compare', file, expectedRaw]);
  expect(cmp.code, cmp.out + cmp.err).to.equal(0);
  expect(cmp.out).to.contain('Images are identical.');
}

describe('qcow2 interop: images qemu writes read identically in tsvmm', function () {
  this.timeout(60000);
  for (const c of CASES) {
    it(c.name, async () => {
      const s = scratch();
      try {
        const file = s.file('q.qcow2');
        if (c.backingChain) {
          const base = new Prng(3).bytes(6 * MiB);
          base.fill(0, 2 * MiB, 3 * MiB);
          writeFileSync(s.file('base.raw'), base);
          qemu('qemu-img', ['create', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', s.file('mid.qcow2')]);
          qemu('qemu-io', ['-c', 'write -P 0x66 512k 256k', '-c', 'write -z 2560k 64k', s.file('mid.qcow2')]);
          qemu('qemu-img', ['create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', file]);
        } else {
          qemu('qemu-img', ['create', '-f', 'qcow2', ...c.create, file, '6M']);
        }
        qemu('qemu-io', [...WRITES.flatMap((w) => ['-c', w]), file]);
        c.after?.(file, s.file);
        qemu('qemu-img', ['convert', '-O', 'raw', file, s.file('expected.raw')]);
        await readsIdentically(file, s.file('expected.raw'));
        const ck = await img(['check', file]);
        expect(ck.code, ck.out + ck.err).to.equal(0);
      } finally {
        s.cleanup();
      }
    });
  }

  it('compressed images (qemu-img convert -c) read identically', async () => {
    const s = scratch();
    try {
      const data = new Uint8Array(5 * MiB);
      const rnd = new Prng(11);
      for (let i = 0; i < data.length; i += 8192) data.set(rnd.bytes(512).map((b) => b & 7), i);
      data.set(rnd.bytes(300000), 2 * MiB);
      writeFileSync(s.file('in.raw'), data);
      for (const o of ['cluster_size=64k', 'cluster_size=512', 'cluster_size=2M', 'compat=0.10', 'cluster_size=4k,refcount_bits=1']) {
        const f = s.file(`c.${o.replace(/[=,]/g, '_')}.qcow2`);
        qemu('qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', o, s.file('in.raw'), f]);
        await readsIdentically(f, s.file('in.raw'));
        const ck = await img(['check', f]);
        expect(ck.code, ck.out + ck.err).to.equal(0);
      }
    } finally {
      s.cleanup();
    }
  });

  it('tsvmm writes into a qemu-compressed image (copy-on-write of compressed clusters)', async () => {
    const s = scratch();
    try {
      const data = new Uint8Array(2 * MiB).fill(0x5a);
      writeFileSync(s.file('in.raw'), data);
      qemu('qemu-img', ['convert', '-c', '-O', 'qcow2', s.file('in.raw'), s.file('c.qcow2')]);
      const dev = await registry().openImage(s.file('c.qcow2'));
      const patch = new Prng(1).bytes(5000);
      await dev.write(70000, patch);
      await dev.discard(MiB, 128 * 1024);
      await dev.close();
      data.set(patch, 70000);
      data.fill(0, MiB, MiB + 128 * 1024);
      writeFileSync(s.file('expect.raw'), data);
      const r = qemu('qemu-img', ['check', s.file('c.qcow2')], { allowFail: true });
      expect(r.status, r.stdout).to.equal(0);
      const cmp = qemu('qemu-img', ['compare', s.file('c.qcow2'), s.file('expect.raw')], { allowFail: true });
      expect(cmp.status, cmp.stdout).to.equal(0);
    } finally {
      s.cleanup();
    }
  });
});
