/**
 * The block package's shared pieces: sizes and option lists as qemu-img
 * spells them, the LRU cache, read-modify-write, the readers-writer lock,
 * the host file wrapper (hole punching must really deallocate), and the
 * registry's probing and backing-chain loop detection.
 */
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  AsyncRwLock,
  BlockDriverRegistry,
  BlockFormatError,
  BlockOptionError,
  ImageFile,
  LruCache,
  formatSize,
  isZero,
  parseOptionList,
  parseSize,
  readModifyWrite,
  type BlockDevice,
  type BlockDriverDefinition,
  type BlockOpenOptions,
} from '../src/index.js';

describe('sizes and options', () => {
  it('parses qemu-img sizes', () => {
    expect(parseSize('4096')).to.equal(4096);
    expect(parseSize('64k')).to.equal(65536);
    expect(parseSize('1M')).to.equal(1 << 20);
    expect(parseSize('1.5G')).to.equal(1.5 * 2 ** 30);
    expect(parseSize('2T')).to.equal(2 * 2 ** 40);
    expect(parseSize('10GiB')).to.equal(10 * 2 ** 30);
  });
  it('rejects nonsense with a message saying what a size looks like', () => {
    expect(() => parseSize('ten')).to.throw(BlockOptionError, /suffix/);
    expect(() => parseSize('1.5')).to.throw(BlockOptionError);
  });
  it('formats like qemu size_to_str', () => {
    expect(formatSize(1 << 30)).to.equal('1 GiB');
    expect(formatSize(200704)).to.equal('196 KiB');
    expect(formatSize(1.5 * 2 ** 20)).to.equal('1.5 MiB');
    expect(formatSize(512)).to.equal('512 B');
  });
  it('splits -o lists, with ,, escaping a comma', () => {
    expect(parseOptionList('cluster_size=4k,compat=0.10')).to.deep.equal({ cluster_size: '4k', compat: '0.10' });
    expect(parseOptionList('backing_file=a,,b.img,lazy_refcounts')).to.deep.equal({ backing_file: 'a,b.img', lazy_refcounts: 'on' });
  });
});

describe('LruCache', () => {
  it('evicts the least recently used entry', () => {
    const c = new LruCache<number, string>(2);
    c.set(1, 'a');
    c.set(2, 'b');
    c.get(1);
    const out = c.set(3, 'c');
    expect(out).to.deep.equal([[2, 'b']]);
    expect([...c.oldest()].map(([k]) => k)).to.deep.equal([1, 3]);
  });
});

describe('readModifyWrite', () => {
  it('merges head and tail units and writes whole units only', async () => {
    const disk = new Uint8Array(4096).fill(7);
    const writes: Array<[number, number]> = [];
    await readModifyWrite(
      700,
      new Uint8Array(1000).fill(1),
      512,
      async (o, b) => b.set(disk.subarray(o, o + b.length)),
      async (o, b) => {
        writes.push([o, b.length]);
        disk.set(b, o);
      },
    );
    expect(writes).to.deep.equal([[512, 1536]]);
    expect(disk[699]).to.equal(7);
    expect(disk[700]).to.equal(1);
    expect(disk[1699]).to.equal(1);
    expect(disk[1700]).to.equal(7);
  });
});

describe('AsyncRwLock', () => {
  it('lets readers share and writers exclude, in arrival order', async () => {
    const lock = new AsyncRwLock();
    const log: string[] = [];
    const hold = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await Promise.all([
      lock.withShared(async () => {
        log.push('r1+');
        await hold(10);
        log.push('r1-');
      }),
      lock.withShared(async () => {
        log.push('r2+');
        await hold(5);
        log.push('r2-');
      }),
      lock.withExclusive(async () => {
        log.push('w+');
        await hold(1);
        log.push('w-');
      }),
      lock.withShared(async () => {
        log.push('r3+');
      }),
    ]);
    expect(log.slice(0, 2)).to.deep.equal(['r1+', 'r2+']);
    expect(log.indexOf('w+')).to.be.greaterThan(log.indexOf('r1-'));
    expect(log.indexOf('r3+')).to.be.greaterThan(log.indexOf('w-'));
  });
});

describe('ImageFile', function () {
  this.timeout(20000);
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-block-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('punches holes that shrink the allocated size, and finds them with SEEK_DATA/SEEK_HOLE', async () => {
    const f = path.join(dir, 'f');
    writeFileSync(f, Buffer.alloc(4 << 20, 1));
    const file = await ImageFile.open(f);
    const before = await file.allocatedBytes();
    expect(await file.punchHole(1 << 20, 2 << 20)).to.equal(true);
    expect(await file.allocatedBytes()).to.be.at.most(before - (2 << 20));
    expect(file.seekData(1 << 20)).to.equal(3 << 20);
    expect(file.seekHole(0)).to.equal(1 << 20);
    expect(file.seekData(4 << 20)).to.equal(-1);
    await file.close();
    expect(isZero(readFileSync(f).subarray(1 << 20, 3 << 20))).to.equal(true);
  });

  it('reports a truncated structure with the file name', async () => {
    const f = path.join(dir, 'short');
    writeFileSync(f, Buffer.alloc(100));
    const file = await ImageFile.open(f, { readOnly: true });
    let err: unknown;
    try {
      await file.readExact(64, new Uint8Array(100), 'header');
    } catch (e) {
      err = e;
    }
    await file.close();
    expect(err).to.be.instanceOf(BlockFormatError);
    expect((err as Error).message).to.contain(f).and.contain('header').and.contain('truncated');
    expect(statSync(f).size).to.equal(100);
  });
});

/** A toy format: "TOY\n" then an optional backing file name. */
function toyDriver(opened: string[]): BlockDriverDefinition {
  return {
    format: 'toy',
    probe: (head) => (Buffer.from(head.subarray(0, 4)).toString() === 'TOY\n' ? 100 : 0),
    async open(opts: BlockOpenOptions): Promise<BlockDevice> {
      opened.push(opts.filename);
      const backing = readFileSync(opts.filename, 'utf8').slice(4).trim();
      let b: BlockDevice | undefined;
      if (backing && opts.openBacking) b = await opts.openBacking(backing, undefined, true);
      const dev: BlockDevice = {
        format: 'toy',
        filename: opts.filename,
        readOnly: true,
        size: 0,
        alignment: 1,
        read: async () => undefined,
        write: async () => undefined,
        flush: async () => undefined,
        discard: async () => undefined,
        writeZeroes: async () => undefined,
        blockStatus: async (offset, length) => ({ offset, length, data: false, zero: true, allocated: false, depth: 0 }),
        info: async () => ({ filename: opts.filename, format: 'toy', 'virtual-size': 0 }),
        resize: async () => undefined,
        close: async () => {
          await b?.close();
        },
      };
      return dev;
    },
  };
}

describe('BlockDriverRegistry', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-reg-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('probes the most confident driver and resolves backing files relative to the image', async () => {
    const opened: string[] = [];
    const reg = new BlockDriverRegistry([toyDriver(opened)]);
    writeFileSync(path.join(dir, 'base'), 'TOY\n');
    writeFileSync(path.join(dir, 'top'), 'TOY\nbase');
    const d = await reg.openImage(path.join(dir, 'top'));
    await d.close();
    expect(opened).to.deep.equal([path.join(dir, 'top'), path.join(dir, 'base')]);
  });

  it('refuses a backing chain that loops, naming every file in the loop', async () => {
    const reg = new BlockDriverRegistry([toyDriver([])]);
    writeFileSync(path.join(dir, 'a'), 'TOY\nb');
    writeFileSync(path.join(dir, 'b'), 'TOY\nc');
    writeFileSync(path.join(dir, 'c'), 'TOY\na');
    let err: unknown;
    try {
      await reg.openImage(path.join(dir, 'a'));
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(BlockFormatError);
    const msg = (err as Error).message;
    expect((err as BlockFormatError).structure).to.equal('backing chain');
    for (const n of ['a', 'b', 'c']) expect(msg).to.contain(path.join(dir, n));
  });

  it('names the known formats when one is missing', () => {
    const reg = new BlockDriverRegistry([toyDriver([])]);
    expect(() => reg.get('qcow2')).to.throw(/unknown image format 'qcow2'.*toy/);
  });
});
