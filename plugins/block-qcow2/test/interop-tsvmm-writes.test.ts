/**
 * Interoperability, tsvmm as the writer: every image tsvmm creates and then
 * writes (random writes, write-zeroes, discards, resizes) passes
 * `qemu-img check` and `qemu-img compare` against the expected content.
 */
import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import type { BlockDevice } from '@tsvmm/block';
import { Prng, img, qemu, qemuCheckClean, qemuCompare, registry, scratch } from './helpers.js';

interface Case {
  name: string;
  options: string;
  size: number;
  backing?: 'qcow2' | 'raw';
}

const MiB = 1024 * 1024;
const CASES: Case[] = [
  { name: 'defaults (v3, 64 KiB clusters)', options: '', size: 8 * MiB },
  { name: 'compat=0.10', options: 'compat=0.10', size: 8 * MiB },
  { name: '512 B clusters, refcount_bits=1', options: 'cluster_size=512,refcount_bits=1', size: 2 * MiB },
  { name: '4 KiB clusters, refcount_bits=2', options: 'cluster_size=4k,refcount_bits=2', size: 4 * MiB },
  { name: '4 KiB clusters, refcount_bits=4', options: 'cluster_size=4k,refcount_bits=4', size: 4 * MiB },
  { name: '16 KiB clusters, refcount_bits=8', options: 'cluster_size=16k,refcount_bits=8', size: 8 * MiB },
  { name: 'refcount_bits=32', options: 'refcount_bits=32', size: 8 * MiB },
  { name: '2 MiB clusters, refcount_bits=64, lazy refcounts', options: 'cluster_size=2M,refcount_bits=64,lazy_refcounts=on', size: 16 * MiB },
  { name: 'lazy refcounts', options: 'lazy_refcounts=on', size: 8 * MiB },
  { name: 'qcow2 backing file', options: '', size: 8 * MiB, backing: 'qcow2' },
  { name: 'raw backing file', options: 'cluster_size=4k', size: 8 * MiB, backing: 'raw' },
  { name: 'compat=0.10 over a backing file', options: 'compat=0.10', size: 8 * MiB, backing: 'qcow2' },
];

/** Applies random operations to dev and the model; returns the model. */
async function exercise(dev: BlockDevice, model: Uint8Array, seed: number, ops: number): Promise<Uint8Array> {
  const rnd = new Prng(seed);
  let m = model;
  for (let i = 0; i < ops; i++) {
    const size = dev.size;
    const off = rnd.int(size);
    const len = Math.min(1 + rnd.int(3 * 65536), size - off);
    const op = rnd.int(20);
    if (op < 12) {
      const data = rnd.bytes(len);
      await dev.write(off, data);
      m.set(data, off);
    } else if (op < 15) {
      await dev.writeZeroes(off, len, { mayUnmap: op === 14 });
      m.fill(0, off, off + len);
    } else if (op < 18) {
      // discard leaves each cluster either unchanged or zero: take what reads back
      await dev.discard(off, len);
      const back = new Uint8Array(len);
      await dev.read(off, back);
      for (let j = 0; j < len; j++) {
        const v = back[j] ?? 0;
        if (v !== 0 && v !== m[off + j]) throw new Error(`discard at ${off}+${len} produced data that was never written (byte ${off + j})`);
      }
      m.set(back, off);
    } else if (op === 18) {
      const grow = rnd.int(3) * 65536 + rnd.int(8) * 512;
      await dev.resize(size + grow);
      const nm = new Uint8Array(size + grow);
      nm.set(m);
      m = nm;
    } else {
      const shrink = Math.min(size - 65536, rnd.int(2) * 65536 + rnd.int(8) * 512);
      if (shrink > 0) {
        await dev.resize(size - shrink);
        m = m.slice(0, size - shrink);
      }
    }
    if (i % 16 === 15) await dev.flush();
  }
  return m;
}

describe('qcow2 interop: images tsvmm writes pass qemu-img check and compare', function () {
  this.timeout(120000);
  for (const c of CASES) {
    it(`${c.name}`, async () => {
      const s = scratch();
      try {
        const file = s.file('t.qcow2');
        let model: Uint8Array = new Uint8Array(c.size);
        const args = ['create', '-q', '-f', 'qcow2'];
        if (c.options) args.push('-o', c.options);
        if (c.backing) {
          const base = s.file(`base.${c.backing}`);
          const rnd = new Prng(99);
          const content = rnd.bytes(c.size);
          // leave holes in the base so both data and holes show through
          content.fill(0, MiB, 2 * MiB);
          writeFileSync(s.file('base-content.raw'), content);
          qemu('qemu-img', ['convert', '-O', c.backing, s.file('base-content.raw'), base]);
          model = content.slice();
          args.push('-b', base, '-F', c.backing);
        }
        args.push(file, String(c.size));
        const cr = await img(args);
        expect(cr.code, cr.err).to.equal(0);
        qemuCheckClean(file);

        const reg = registry();
        let dev = await reg.openImage(file);
        model = await exercise(dev, model, 1 + c.size + c.options.length, 60);
        await dev.close();
        writeFileSync(s.file('expect.raw'), model);
        qemuCheckClean(file);
        qemuCompare(file, s.file('expect.raw'));

        // and tsvmm reads back what it wrote, after reopening
        dev = await reg.openImage(file, { readOnly: true });
        const back = new Uint8Array(dev.size);
        await dev.read(0, back);
        await dev.close();
        expect(Buffer.compare(Buffer.from(back), Buffer.from(model))).to.equal(0);
        const ck = await img(['check', file]);
        expect(ck.code, ck.out + ck.err).to.equal(0);
      } finally {
        s.cleanup();
      }
    });
  }

  it('concurrent writes sharing clusters allocate each cluster once', async () => {
    const s = scratch();
    try {
      const file = s.file('conc.qcow2');
      expect((await img(['create', '-q', '-f', 'qcow2', file, '8M'])).code).to.equal(0);
      const dev = await registry().openImage(file);
      const model = new Uint8Array(8 * MiB);
      const rnd = new Prng(77);
      // 4 KiB slots in random order: many in flight at once land in the same 64 KiB clusters
      const slots = Array.from({ length: 2048 }, (_, i) => i).sort(() => (rnd.next() & 1 ? 1 : -1));
      await Promise.all(
        slots.slice(0, 1200).map(async (slot, i) => {
          const data = new Uint8Array(4096).fill((i % 254) + 1);
          model.set(data, slot * 4096);
          await dev.write(slot * 4096, data);
        }),
      );
      await dev.close();
      writeFileSync(s.file('expect.raw'), model);
      qemuCheckClean(file);
      qemuCompare(file, s.file('expect.raw'));
    } finally {
      s.cleanup();
    }
  });

  it('convert -c writes compressed clusters qemu-img reads back', async () => {
    const s = scratch();
    try {
      const data = new Uint8Array(4 * MiB);
      const rnd = new Prng(5);
      for (let i = 0; i < data.length; i += 4096) data.set(rnd.bytes(64).map((b) => b & 3), i); // compressible
      data.set(rnd.bytes(200000), MiB); // incompressible stretch
      writeFileSync(s.file('in.raw'), data);
      for (const opts of ['cluster_size=64k', 'cluster_size=4k,refcount_bits=1', 'compat=0.10']) {
        const out = s.file(`c-${opts.replace(/[=,]/g, '_')}.qcow2`);
        const r = await img(['convert', '-c', '-O', 'qcow2', '-o', opts, s.file('in.raw'), out]);
        expect(r.code, r.err).to.equal(0);
        qemuCheckClean(out);
        qemuCompare(out, s.file('in.raw'));
        const info = JSON.parse(qemu('qemu-img', ['check', '--output', 'json', out]).stdout) as Record<string, number>;
        expect(info['compressed-clusters'] ?? 0).to.be.greaterThan(0);
      }
    } finally {
      s.cleanup();
    }
  });

  it('convert raw -> qcow2 -> raw keeps content and sparseness', async () => {
    const s = scratch();
    try {
      const data = new Uint8Array(8 * MiB);
      data.set(new Prng(8).bytes(MiB), 3 * MiB);
      writeFileSync(s.file('in.raw'), data);
      expect((await img(['convert', '-O', 'qcow2', s.file('in.raw'), s.file('mid.qcow2')])).code).to.equal(0);
      qemuCheckClean(s.file('mid.qcow2'));
      qemuCompare(s.file('mid.qcow2'), s.file('in.raw'));
      const map = JSON.parse(qemu('qemu-img', ['map', '--output', 'json', s.file('mid.qcow2')]).stdout) as Array<{ data: boolean; length: number }>;
      const dataBytes = map.filter((e) => e.data).reduce((a, e) => a + e.length, 0);
      expect(dataBytes).to.equal(MiB);
      expect((await img(['convert', '-f', 'qcow2', '-O', 'raw', s.file('mid.qcow2'), s.file('out.raw')])).code).to.equal(0);
      qemuCompare(s.file('out.raw'), s.file('in.raw'), 'raw', 'raw');
    } finally {
      s.cleanup();
    }
  });
});
