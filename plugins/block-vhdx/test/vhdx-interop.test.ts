/// <reference types="mocha" />
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { BlockDriverRegistry, type BlockDevice } from '@tsvmm/block';
import { VhdxDevice, createVhdx, crc32c, vhdxDriver } from '../src/index.js';
import { prng, qemu, qemuImgJson, scratchDir } from '@tsvmm/block/testing';

const MiB = 1024 * 1024;

async function randomOps(dev: BlockDevice, model: Uint8Array, seed: number, count: number): Promise<void> {
  const r = prng(seed);
  for (let i = 0; i < count; i++) {
    const len = 1 + r.int(Math.min(3 * MiB, dev.size));
    const off = r.int(dev.size - len + 1);
    const kind = r.int(12);
    if (kind < 7) {
      const data = r.bytes(len);
      await dev.write(off, data);
      model.set(data, off);
    } else if (kind < 9) {
      await dev.writeZeroes(off, len, { mayUnmap: kind === 8 });
      model.fill(0, off, off + len);
    } else if (kind < 11) {
      // whole-block discards zero the blocks; the model must follow what reads return
      await dev.discard(off, len);
      const after = new Uint8Array(len);
      await dev.read(off, after);
      model.set(after, off);
    } else {
      await dev.flush();
    }
  }
}

async function readAll(dev: BlockDevice): Promise<Uint8Array> {
  const out = new Uint8Array(dev.size);
  for (let off = 0; off < dev.size; off += 4 * MiB) await dev.read(off, out.subarray(off, Math.min(off + 4 * MiB, dev.size)));
  return out;
}

function qemuCheckClean(img: string): void {
  const r = qemu('qemu-img', ['check', '-f', 'vhdx', img], { allowFail: true });
  expect(r.status, `qemu-img check: ${r.stdout}${r.stderr}`).to.equal(0);
}

function qemuCompare(img: string, raw: string): void {
  const r = qemu('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', img, raw], { allowFail: true });
  expect(r.status, `qemu-img compare: ${r.stdout}${r.stderr}`).to.equal(0);
}

describe('vhdx: CRC-32C', () => {
  it('matches the standard check value and the iSCSI test vectors', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).to.equal(0xe3069283);
    expect(crc32c(new Uint8Array(32))).to.equal(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).to.equal(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).to.equal(0x46dd794e);
  });
});

describe('vhdx: images tsvmm writes pass qemu-img check and compare', function () {
  this.timeout(180_000);
  const cases: Array<Record<string, string>> = [
    { subformat: 'dynamic' },
    { subformat: 'dynamic', block_size: '1M' },
    { subformat: 'dynamic', block_size: '1M', block_state_zero: 'off' },
    { subformat: 'dynamic', block_size: '2M', log_size: '2M' },
    { subformat: 'fixed', block_size: '1M' },
    { subformat: 'dynamic', block_size: '1M', logical_sector_size: '4096' },
  ];
  for (const [i, options] of cases.entries()) {
    it(`${JSON.stringify(options)}: random writes, zeroes and discards`, async () => {
      const s = scratchDir('vhdx');
      try {
        const img = s.file('t.vhdx');
        await createVhdx({ filename: img, size: 21 * MiB, options });
        if (options['logical_sector_size'] !== '4096') qemuCheckClean(img);
        let dev = await VhdxDevice.open({ filename: img });
        const model = new Uint8Array(dev.size);
        await randomOps(dev, model, 10 + i, 40);
        await dev.close();
        dev = await VhdxDevice.open({ filename: img });
        await randomOps(dev, model, 20 + i, 20);
        await dev.close();
        if (options['logical_sector_size'] === '4096') {
          // QEMU's vhdx driver only supports 512-byte logical sectors: check against ourselves
          const ro = await VhdxDevice.open({ filename: img, readOnly: true });
          expect(Buffer.compare(await readAll(ro), model)).to.equal(0);
          await ro.close();
          return;
        }
        qemuCheckClean(img);
        const info = qemuImgJson<{ 'virtual-size': number }>(['info', '-f', 'vhdx', img]);
        expect(info['virtual-size']).to.equal(model.length);
        writeFileSync(s.file('expected.raw'), model);
        qemuCompare(img, s.file('expected.raw'));
      } finally {
        s.cleanup();
      }
    });
  }

  for (const subformat of ['dynamic', 'fixed']) {
  it(`a grown ${subformat} image keeps its data and passes qemu-img check`, async () => {
    const s = scratchDir('vhdx');
    try {
      const img = s.file('g.vhdx');
      await createVhdx({ filename: img, size: 10 * MiB + 512, options: { block_size: '1M', subformat } });
      const dev = await VhdxDevice.open({ filename: img });
      const model = new Uint8Array(30 * MiB);
      await randomOps(dev, model.subarray(0, dev.size), 5, 10);
      await dev.resize(30 * MiB);
      const tail = new Uint8Array(20 * MiB - 512);
      await dev.read(10 * MiB + 512, tail);
      expect(tail.every((x) => x === 0), 'the grown part reads as zeroes').to.equal(true);
      await randomOps(dev, model, 6, 10);
      await dev.close();
      qemuCheckClean(img);
      writeFileSync(s.file('expected.raw'), model);
      qemuCompare(img, s.file('expected.raw'));
    } finally {
      s.cleanup();
    }
  });
  }
});

describe('vhdx: images qemu-img writes read identically in tsvmm', function () {
  this.timeout(120_000);
  const cases: Array<[string, string]> = [
    ['dynamic (default block size)', 'subformat=dynamic'],
    ['fixed', 'subformat=fixed'],
    ['dynamic 1M blocks, 2M log', 'subformat=dynamic,block_size=1M,log_size=2M'],
    ['dynamic without zero block state', 'subformat=dynamic,block_size=1M,block_state_zero=off'],
  ];
  for (const [name, o] of cases) {
    it(`${name}: block by block equal to qemu-img convert -O raw`, async () => {
      const s = scratchDir('vhdx');
      try {
        const img = s.file('q.vhdx');
        qemu('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', o, img, '19M']);
        const r = prng(name.length);
        const cmds: string[] = [];
        for (let i = 0; i < 20; i++) {
          const len = 512 * (1 + r.int(4000));
          const off = 512 * r.int(Math.floor((19 * MiB - len) / 512));
          cmds.push('-c', `write -P ${1 + r.int(254)} ${off} ${len}`);
        }
        cmds.push('-c', `write -z ${4 * MiB} ${MiB}`);
        qemu('qemu-io', ['-f', 'vhdx', ...cmds, img]);
        qemu('qemu-img', ['convert', '-f', 'vhdx', '-O', 'raw', img, s.file('q.raw')]);
        const expected = readFileSync(s.file('q.raw'));
        const dev = await VhdxDevice.open({ filename: img, readOnly: true });
        expect(dev.size).to.equal(expected.length);
        const blk = new Uint8Array(256 * 1024);
        for (let off = 0; off < dev.size; off += blk.length) {
          const n = Math.min(blk.length, dev.size - off);
          await dev.read(off, blk.subarray(0, n));
          expect(Buffer.compare(blk.subarray(0, n), expected.subarray(off, off + n)), `block at ${off}`).to.equal(0);
        }
        await dev.close();
        // and tsvmm can keep writing into it
        const rw = await VhdxDevice.open({ filename: img });
        const model = new Uint8Array(expected);
        await randomOps(rw, model, 99, 15);
        await rw.close();
        qemuCheckClean(img);
        writeFileSync(s.file('expected.raw'), model);
        qemuCompare(img, s.file('expected.raw'));
      } finally {
        s.cleanup();
      }
    });
  }
});

describe('vhdx: differencing files', function () {
  this.timeout(60_000);
  it('read the parent where the child has nothing, and copy on write', async () => {
    const s = scratchDir('vhdx');
    try {
      qemu('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'block_size=1M', s.file('base.vhdx'), '12M']);
      qemu('qemu-io', ['-f', 'vhdx', '-c', 'write -P 0x11 0 6M', '-c', 'write -P 0x22 8M 1M', s.file('base.vhdx')]);
      const registry = new BlockDriverRegistry([vhdxDriver]);
      await registry.create('vhdx', { filename: s.file('child.vhdx'), size: 0, options: { backing_file: 'base.vhdx' } });
      const child = await registry.openImage(s.file('child.vhdx'));
      const base = await registry.openImage(s.file('base.vhdx'), { readOnly: true });
      const model = await readAll(base);
      await base.close();
      expect(Buffer.compare(await readAll(child), model)).to.equal(0);
      expect(await child.blockStatus(0, child.size)).to.include({ allocated: false, depth: 1, data: true });
      await child.write(100, new Uint8Array(1000).fill(0xaa));
      model.fill(0xaa, 100, 1100);
      expect(await child.blockStatus(0, child.size)).to.include({ allocated: true, depth: 0, length: 2 * MiB });
      await randomOps(child, model, 3, 15);
      expect(Buffer.compare(await readAll(child), model)).to.equal(0);
      const info = await child.info();
      expect(info['backing-filename']).to.equal('./base.vhdx');
      await child.close();
      const again = await registry.openImage(s.file('child.vhdx'), { readOnly: true });
      expect(Buffer.compare(await readAll(again), model)).to.equal(0);
      await again.close();
      // the parent was only read: qemu still finds it clean
      qemuCheckClean(s.file('base.vhdx'));
    } finally {
      s.cleanup();
    }
  });
});
