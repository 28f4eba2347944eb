/**
 * The raw driver: the file is the disk, and it stays sparse — discard and
 * unmapping write-zeroes really deallocate (st_blocks shrinks), block status
 * reports holes, resize truncates or extends.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { BlockRangeError, BlockReadOnlyError } from '@tsvmm/block';
import { RawDevice, rawDriver } from '../src/index.js';

const MiB = 1024 * 1024;

function allocated(file: string): number {
  return statSync(file).blocks * 512;
}

describe('raw driver', function () {
  this.timeout(60000);
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-raw-'));
    file = path.join(dir, 'disk.raw');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('creates a sparse file of the requested size', async () => {
    await rawDriver.create?.({ filename: file, size: 16 * MiB, options: {} });
    expect(statSync(file).size).to.equal(16 * MiB);
    expect(allocated(file)).to.be.lessThan(64 * 1024);
  });

  it('preallocation=full allocates every block', async () => {
    await rawDriver.create?.({ filename: file, size: 2 * MiB, options: { preallocation: 'full' } });
    expect(allocated(file)).to.be.at.least(2 * MiB);
  });

  it('reads back what it wrote and rejects requests past the end', async () => {
    await rawDriver.create?.({ filename: file, size: MiB, options: {} });
    const dev = await RawDevice.open({ filename: file });
    const data = new Uint8Array(1000).fill(9);
    await dev.write(5000, data);
    const back = new Uint8Array(1000);
    await dev.read(5000, back);
    expect(back).to.deep.equal(data);
    let err: unknown;
    try {
      await dev.read(MiB - 10, new Uint8Array(20));
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(BlockRangeError);
    await dev.close();
  });

  it('discard punches holes: the host file really shrinks', async () => {
    writeFileSync(file, Buffer.alloc(8 * MiB, 0x77));
    const before = allocated(file);
    const dev = await RawDevice.open({ filename: file });
    await dev.discard(MiB, 4 * MiB);
    await dev.close();
    expect(allocated(file)).to.be.at.most(before - 4 * MiB + 64 * 1024);
    const b = readFileSync(file);
    expect(b.subarray(MiB, 5 * MiB).every((x) => x === 0)).to.equal(true);
    expect(b[MiB - 1]).to.equal(0x77);
    expect(b[5 * MiB]).to.equal(0x77);
  });

  it('write-zeroes with mayUnmap punches; without it the range stays allocated', async () => {
    writeFileSync(file, Buffer.alloc(4 * MiB, 1));
    const dev = await RawDevice.open({ filename: file });
    await dev.writeZeroes(0, MiB, { mayUnmap: true });
    const afterUnmap = allocated(file);
    await dev.writeZeroes(2 * MiB, MiB);
    await dev.close();
    expect(afterUnmap).to.be.at.most(3 * MiB + 64 * 1024);
    expect(allocated(file)).to.equal(afterUnmap);
    const b = readFileSync(file);
    expect(b.subarray(0, MiB).every((x) => x === 0)).to.equal(true);
    expect(b.subarray(2 * MiB, 3 * MiB).every((x) => x === 0)).to.equal(true);
    expect(b[3 * MiB]).to.equal(1);
  });

  it('block status reports holes (SEEK_HOLE) and data (SEEK_DATA)', async () => {
    await rawDriver.create?.({ filename: file, size: 8 * MiB, options: {} });
    const dev = await RawDevice.open({ filename: file });
    await dev.write(2 * MiB, new Uint8Array(MiB).fill(5));
    const hole = await dev.blockStatus(0, 8 * MiB);
    expect(hole).to.include({ offset: 0, length: 2 * MiB, data: false, zero: true, allocated: true });
    const data = await dev.blockStatus(2 * MiB, 6 * MiB);
    expect(data).to.include({ offset: 2 * MiB, length: MiB, data: true, zero: false });
    const tail = await dev.blockStatus(3 * MiB, 5 * MiB);
    expect(tail).to.include({ data: false, length: 5 * MiB });
    await dev.close();
  });

  it('resize truncates and extends', async () => {
    writeFileSync(file, Buffer.alloc(MiB, 3));
    const dev = await RawDevice.open({ filename: file });
    await dev.resize(3 * MiB);
    expect(dev.size).to.equal(3 * MiB);
    await dev.resize(512 * 1024);
    await dev.close();
    expect(statSync(file).size).to.equal(512 * 1024);
  });

  it('a read-only device refuses writes and leaves the file untouched', async () => {
    writeFileSync(file, Buffer.alloc(MiB, 3));
    const hash = createHash('sha256').update(readFileSync(file)).digest('hex');
    const dev = await RawDevice.open({ filename: file, readOnly: true });
    for (const op of [() => dev.write(0, new Uint8Array(1)), () => dev.discard(0, 4096), () => dev.writeZeroes(0, 4096), () => dev.resize(0)]) {
      let err: unknown;
      try {
        await op();
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(BlockReadOnlyError);
    }
    await dev.close();
    expect(createHash('sha256').update(readFileSync(file)).digest('hex')).to.equal(hash);
  });

  it('probes as the format of last resort', () => {
    expect(rawDriver.probe?.(new Uint8Array(512), 'x')).to.equal(1);
  });

  it('random operation sequences match an in-memory model (fast-check)', async () => {
    const size = 2 * MiB;
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({ op: fc.integer({ min: 0, max: 4 }), off: fc.nat(size - 1), len: fc.integer({ min: 1, max: 300000 }), fill: fc.integer({ min: 1, max: 255 }) }),
          { maxLength: 30 },
        ),
        async (ops) => {
          await rawDriver.create?.({ filename: file, size, options: {} });
          let dev = await RawDevice.open({ filename: file });
          let model = new Uint8Array(size);
          for (const o of ops) {
            const off = o.off % dev.size;
            const len = Math.min(o.len, dev.size - off);
            switch (o.op) {
              case 0:
                await dev.write(off, new Uint8Array(len).fill(o.fill));
                model.fill(o.fill, off, off + len);
                break;
              case 1:
                await dev.writeZeroes(off, len, { mayUnmap: o.fill % 2 === 0 });
                model.fill(0, off, off + len);
                break;
              case 2:
                await dev.discard(off, len);
                model.fill(0, off, off + len);
                break;
              case 3: {
                const ns = 4096 + (o.len * 7) % (2 * size);
                await dev.resize(ns);
                const nm = new Uint8Array(ns);
                nm.set(model.subarray(0, Math.min(ns, model.length)));
                model = nm;
                break;
              }
              default:
                await dev.close();
                dev = await RawDevice.open({ filename: file });
            }
          }
          const all = new Uint8Array(dev.size);
          await dev.read(0, all);
          await dev.close();
          expect(Buffer.compare(Buffer.from(all), Buffer.from(model))).to.equal(0);
          expect(Buffer.compare(readFileSync(file), Buffer.from(model))).to.equal(0);
        },
      ),
      { numRuns: 60, seed: 7 },
    );
  });
});
