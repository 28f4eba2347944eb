/// <reference types="mocha" />
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { BlockDriverRegistry, type BlockDevice } from '@tsvmm/block';
import { VpcDevice, createVpc, vpcDriver } from '../src/index.js';
import { prng, qemu, qemuImgJson, scratchDir } from '@tsvmm/block/testing';

const MiB = 1024 * 1024;

/** Applies the same random writes to the image and to an in-memory model. */
async function randomWrites(dev: BlockDevice, model: Uint8Array, seed: number, count: number): Promise<void> {
  const r = prng(seed);
  for (let i = 0; i < count; i++) {
    const len = 1 + r.int(Math.min(300_000, dev.size));
    const off = r.int(dev.size - len + 1);
    const kind = r.int(10);
    if (kind < 7) {
      const data = r.bytes(len);
      await dev.write(off, data);
      model.set(data, off);
    } else if (kind < 9) {
      await dev.writeZeroes(off, len);
      model.fill(0, off, off + len);
    } else {
      // discard is a documented no-op for VHD: content stays
      await dev.discard(off, len);
    }
  }
}

async function readAll(dev: BlockDevice): Promise<Uint8Array> {
  const out = new Uint8Array(dev.size);
  for (let off = 0; off < dev.size; off += 1 * MiB) {
    await dev.read(off, out.subarray(off, Math.min(off + MiB, dev.size)));
  }
  return out;
}

describe('vpc: images tsvmm writes are read identically by qemu-img', function () {
  this.timeout(120_000);
  const cases: Array<Record<string, string>> = [
    { subformat: 'dynamic' },
    { subformat: 'fixed' },
    { subformat: 'dynamic', force_size: 'on' },
    { subformat: 'fixed', force_size: 'on' },
    { subformat: 'dynamic', block_size: '512K' },
  ];
  for (const [i, options] of cases.entries()) {
    it(`${JSON.stringify(options)}: after random writes, qemu-img compare equals the expected content`, async () => {
      const s = scratchDir('vpc');
      try {
        const img = s.file('t.vhd');
        await createVpc({ filename: img, size: 9 * MiB + 3 * 512, options });
        let dev = await VpcDevice.open({ filename: img });
        const model = new Uint8Array(dev.size);
        await randomWrites(dev, model, 1000 + i, 40);
        await dev.close();
        // reopen and write more: the flushed metadata must be right
        dev = await VpcDevice.open({ filename: img });
        await randomWrites(dev, model, 2000 + i, 20);
        await dev.close();
        const info = qemuImgJson<{ 'virtual-size': number; format: string }>(['info', '-f', 'vpc', img]);
        expect(info['virtual-size']).to.equal(model.length);
        writeFileSync(s.file('expected.raw'), model);
        const cmp = qemu('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', img, s.file('expected.raw')], { allowFail: true });
        expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
        // and tsvmm agrees with itself
        dev = await VpcDevice.open({ filename: img, readOnly: true });
        expect(Buffer.compare(await readAll(dev), model)).to.equal(0);
        await dev.close();
      } finally {
        s.cleanup();
      }
    });
  }

  for (const [subformat, grown] of [['fixed', 9 * MiB], ['dynamic', 4 * MiB]] as const) {
    it(`${subformat}: growing keeps the data, reads zeroes in the new part and qemu-img agrees`, async () => {
      const s = scratchDir('vpc');
      try {
        const img = s.file('r.vhd');
        await createVpc({ filename: img, size: 3 * MiB, options: { subformat, force_size: 'on' } });
        const dev = await VpcDevice.open({ filename: img });
        const model = new Uint8Array(grown);
        await randomWrites(dev, model.subarray(0, dev.size), 42, 10);
        if (subformat === 'dynamic') {
          // the BAT of a 3 MiB disk has two 2 MiB blocks: 4 MiB is as far as it grows
          let err: unknown;
          try {
            await dev.resize(9 * MiB);
          } catch (e) {
            err = e;
          }
          expect((err as Error).message).to.match(/BAT holds 2 blocks .* needs a new image/);
        }
        await dev.resize(grown);
        expect(dev.size).to.equal(grown);
        const tail = new Uint8Array(grown - 3 * MiB);
        await dev.read(3 * MiB, tail);
        expect(tail.every((x) => x === 0), 'the grown part reads as zeroes').to.equal(true);
        await randomWrites(dev, model, 43, 10);
        await dev.close();
        const info = qemuImgJson<{ 'virtual-size': number }>(['info', '-f', 'vpc', img]);
        expect(info['virtual-size']).to.equal(grown);
        writeFileSync(s.file('expected.raw'), model);
        const cmp = qemu('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', img, s.file('expected.raw')], { allowFail: true });
        expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
      } finally {
        s.cleanup();
      }
    });
  }

  it('rounds the size up to a CHS geometry exactly as qemu-img does', async () => {
    const s = scratchDir('vpc');
    try {
      for (const size of [1 * MiB, 10 * MiB, 1000 * MiB + 512, 3 * 1024 * MiB, 200 * 1024 * MiB]) {
        await createVpc({ filename: s.file('a.vhd'), size, options: {} });
        qemu('qemu-img', ['create', '-q', '-f', 'vpc', s.file('b.vhd'), String(size)]);
        const a = qemuImgJson<{ 'virtual-size': number }>(['info', '-f', 'vpc', s.file('a.vhd')]);
        const b = qemuImgJson<{ 'virtual-size': number }>(['info', '-f', 'vpc', s.file('b.vhd')]);
        expect(a['virtual-size'], `size ${size}`).to.equal(b['virtual-size']);
        const dev = await VpcDevice.open({ filename: s.file('b.vhd'), readOnly: true });
        expect(dev.size).to.equal(b['virtual-size']);
        await dev.close();
      }
    } finally {
      s.cleanup();
    }
  });
});

describe('vpc: images qemu-img writes are read identically by tsvmm', function () {
  this.timeout(120_000);
  const cases: Array<[string, string[]]> = [
    ['dynamic', ['-o', 'subformat=dynamic']],
    ['fixed', ['-o', 'subformat=fixed']],
    ['dynamic force_size', ['-o', 'subformat=dynamic,force_size=on']],
    ['fixed force_size', ['-o', 'subformat=fixed,force_size=on']],
  ];
  for (const [name, opts] of cases) {
    it(`${name}: block by block equal to qemu-img convert -O raw`, async () => {
      const s = scratchDir('vpc');
      try {
        const img = s.file('q.vhd');
        qemu('qemu-img', ['create', '-q', '-f', 'vpc', ...opts, img, '7M']);
        const r = prng(name.length);
        const cmds: string[] = [];
        for (let i = 0; i < 25; i++) {
          const len = 512 * (1 + r.int(600));
          const off = 512 * r.int(Math.floor((7 * MiB - len) / 512));
          cmds.push('-c', `write -P ${1 + r.int(254)} ${off} ${len}`);
        }
        cmds.push('-c', `write -z ${3 * MiB} ${64 * 1024}`);
        qemu('qemu-io', ['-f', 'vpc', ...cmds, img]);
        qemu('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', img, s.file('q.raw')]);
        const expected = readFileSync(s.file('q.raw'));
        const dev = await VpcDevice.open({ filename: img, readOnly: true });
        expect(dev.size).to.equal(expected.length);
        const blk = new Uint8Array(64 * 1024);
        for (let off = 0; off < dev.size; off += blk.length) {
          const n = Math.min(blk.length, dev.size - off);
          await dev.read(off, blk.subarray(0, n));
          expect(Buffer.compare(blk.subarray(0, n), expected.subarray(off, off + n)), `block at ${off}`).to.equal(0);
        }
        await dev.close();
      } finally {
        s.cleanup();
      }
    });
  }

  it('writes into a qemu-made dynamic image are seen by qemu-img', async () => {
    const s = scratchDir('vpc');
    try {
      const img = s.file('q.vhd');
      qemu('qemu-img', ['create', '-q', '-f', 'vpc', img, '5M']);
      qemu('qemu-io', ['-f', 'vpc', '-c', 'write -P 7 0 1M', img]);
      const dev = await VpcDevice.open({ filename: img });
      const model = new Uint8Array(dev.size);
      model.fill(7, 0, MiB);
      await randomWrites(dev, model, 77, 30);
      await dev.close();
      writeFileSync(s.file('expected.raw'), model);
      const cmp = qemu('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', img, s.file('expected.raw')], { allowFail: true });
      expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
    } finally {
      s.cleanup();
    }
  });
});

describe('vpc: differencing disks', function () {
  this.timeout(60_000);
  it('read the parent where the child has no data, through the registry (relative locator)', async () => {
    const s = scratchDir('vpc');
    try {
      // parent made by qemu-img, child by tsvmm (qemu-img cannot create VHD differencing disks)
      qemu('qemu-img', ['create', '-q', '-f', 'vpc', s.file('base.vhd'), '6M']);
      qemu('qemu-io', ['-f', 'vpc', '-c', 'write -P 0x11 0 6M', s.file('base.vhd')]);
      const registry = new BlockDriverRegistry([vpcDriver]);
      await registry.create('vpc', { filename: s.file('child.vhd'), size: 0, options: { backing_file: 'base.vhd' } });
      const child = await registry.openImage(s.file('child.vhd'));
      const base = await VpcDevice.open({ filename: s.file('base.vhd'), readOnly: true });
      expect(child.size).to.equal(base.size);
      // qemu-io wrote 6 MiB; the CHS-rounded disk is a little larger and zero beyond
      const model = await readAll(base);
      await base.close();
      // unaligned writes exercise the partial-sector merge from the parent
      await child.write(100, new Uint8Array(1000).fill(0xaa));
      model.fill(0xaa, 100, 1100);
      await child.write(2 * MiB + 3, new Uint8Array(5).fill(0xbb));
      model.fill(0xbb, 2 * MiB + 3, 2 * MiB + 8);
      // status: sector-granular in the child, the rest from the parent
      expect(await child.blockStatus(0, child.size)).to.include({ offset: 0, length: 1536, allocated: true, depth: 0, data: true });
      expect(await child.blockStatus(1536, child.size - 1536)).to.include({ length: 2 * MiB - 1536, allocated: false, depth: 1, data: true });
      await randomWrites(child, model, 5, 10);
      expect(Buffer.compare(await readAll(child), model)).to.equal(0);
      const info = await child.info();
      expect(info['backing-filename']).to.equal('./base.vhd');
      await child.close();
      // reopened after flush, content persists
      const again = await registry.openImage(s.file('child.vhd'), { readOnly: true });
      expect(Buffer.compare(await readAll(again), model)).to.equal(0);
      await again.close();
    } finally {
      s.cleanup();
    }
  });
});
