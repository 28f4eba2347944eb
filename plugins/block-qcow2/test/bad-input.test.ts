/**
 * Bad input: corrupted images produce a BlockFormatError naming the file and
 * the structure at fault; they never crash the process, never read or write
 * outside the file, and an image opened read-only is never modified.
 */
import { expect } from 'chai';
import { readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { BlockFormatError, type BlockDevice } from '@tsvmm/block';
import { img, qemu, registry, scratch, sha256 } from './helpers.js';

interface Layout {
  cs: number;
  l1: number;
  reftable: number;
}

function layout(file: string): Layout {
  const b = readFileSync(file);
  return { cs: 2 ** b.readUInt32BE(20), l1: Number(b.readBigUInt64BE(40)), reftable: Number(b.readBigUInt64BE(48)) };
}

function patch(file: string, offset: number, bytes: number[] | Buffer): void {
  const b = readFileSync(file);
  Buffer.from(bytes).copy(b, offset);
  writeFileSync(file, b);
}

function u64(v: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(v);
  return b;
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v >>> 0);
  return b;
}

/** A 4 MiB image with data in the first L2 table (qemu made). */
function makeImage(dir: (n: string) => string, name = 'bad.qcow2'): string {
  const f = dir(name);
  qemu('qemu-img', ['create', '-q', '-f', 'qcow2', f, '4M']);
  qemu('qemu-io', ['-c', 'write -P 0x5a 0 128k', f]);
  return f;
}

/** Opens read-only and reads everything; returns the error (or undefined). */
async function openAndRead(file: string): Promise<unknown> {
  let dev: BlockDevice | undefined;
  try {
    dev = await registry().openImage(file, { format: 'qcow2', readOnly: true });
    const buf = new Uint8Array(dev.size);
    await dev.read(0, buf);
    return undefined;
  } catch (e) {
    return e;
  } finally {
    await dev?.close().catch(() => undefined);
  }
}

async function expectFormatError(file: string, structure: RegExp | string, detail?: RegExp): Promise<void> {
  const before = sha256(file);
  const e = await openAndRead(file);
  expect(e, 'expected an error').to.be.instanceOf(BlockFormatError);
  const err = e as BlockFormatError;
  expect(err.filename).to.equal(file);
  expect(err.message).to.contain(file);
  if (typeof structure === 'string') expect(err.structure).to.equal(structure);
  else expect(err.structure).to.match(structure);
  if (detail) expect(err.message).to.match(detail);
  expect(sha256(file), 'a read-only open must not modify the image').to.equal(before);
}

describe('qcow2 bad input', function () {
  this.timeout(30000);
  let s: ReturnType<typeof scratch>;
  beforeEach(() => (s = scratch()));
  afterEach(() => s.cleanup());

  it('rejects a bad magic when qcow2 is asked for', async () => {
    const f = makeImage(s.file);
    patch(f, 0, [0, 0, 0, 0]);
    await expectFormatError(f, 'header', /magic/);
  });

  it('rejects unsupported versions', async () => {
    const f = makeImage(s.file);
    patch(f, 4, u32(4));
    await expectFormatError(f, 'header', /version 4/);
  });

  for (const bits of [8, 22, 63]) {
    it(`rejects cluster_bits ${bits} (cluster size out of range)`, async () => {
      const f = makeImage(s.file);
      patch(f, 20, u32(bits));
      await expectFormatError(f, 'header', /cluster_bits/);
    });
  }

  it('rejects a header extension that overruns the first cluster', async () => {
    const f = makeImage(s.file);
    const hl = readFileSync(f).readUInt32BE(100);
    patch(f, hl, [...u32(0x12345678), ...u32(0x7fffffff)]);
    await expectFormatError(f, 'header extension', /overrun/);
  });

  it('terminates on a header extension chain with no end marker (extension loop)', async () => {
    const f = makeImage(s.file);
    const { cs } = layout(f);
    const hl = readFileSync(f).readUInt32BE(100);
    const chain = Buffer.alloc(cs - hl);
    for (let o = 0; o + 8 <= chain.length; o += 8) chain.writeUInt32BE(0x0badf00d + (o % 3), o);
    // same unknown type repeated: duplicates are an error too
    patch(f, hl, chain);
    await expectFormatError(f, 'header extension');
  });

  it('rejects an unknown incompatible feature, naming it', async () => {
    const f = makeImage(s.file);
    patch(f, 72, u64(1n << 40n));
    await expectFormatError(f, 'header', /unknown bit 40/);
  });

  it('rejects an L1 table past the end of the file', async () => {
    const f = makeImage(s.file);
    patch(f, 40, u64(1n << 40n));
    await expectFormatError(f, 'L1 table', /past the end/);
  });

  it('rejects a refcount table past the end of the file', async () => {
    const f = makeImage(s.file);
    patch(f, 48, u64(1n << 40n));
    await expectFormatError(f, 'refcount table', /past the end/);
  });

  it('rejects an L1 table overlapping the refcount table', async () => {
    const f = makeImage(s.file);
    const { reftable } = layout(f);
    patch(f, 40, u64(BigInt(reftable)));
    await expectFormatError(f, /L1 table/, /overlaps/);
  });

  it('reports an L1 entry past the end of the file on read', async () => {
    const f = makeImage(s.file);
    const { l1 } = layout(f);
    patch(f, l1, u64((1n << 63n) | (1n << 40n)));
    await expectFormatError(f, 'L1 table', /past the end/);
  });

  it('reports an L1 entry pointing at the header', async () => {
    const f = makeImage(s.file);
    const { l1 } = layout(f);
    patch(f, l1, u64(1n << 63n | 512n));
    await expectFormatError(f, 'L1 table');
  });

  it('reports an L2 entry past the end of the file on read', async () => {
    const f = makeImage(s.file);
    const { l1 } = layout(f);
    const l2 = Number(readFileSync(f).readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    patch(f, l2, u64((1n << 63n) | (1n << 44n)));
    await expectFormatError(f, 'L2 table', /past the end/);
  });

  it('reports an unaligned L2 entry', async () => {
    const f = makeImage(s.file);
    const { l1 } = layout(f);
    const l2 = Number(readFileSync(f).readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    patch(f, l2 + 8, u64((1n << 63n) | 0x50200n));
    await expectFormatError(f, 'L2 table', /not cluster aligned/);
  });

  it('reports compressed data that does not inflate', async () => {
    const f = s.file('c.qcow2');
    writeFileSync(s.file('in.raw'), Buffer.alloc(1024 * 1024, 0x41));
    qemu('qemu-img', ['convert', '-q', '-c', '-O', 'qcow2', s.file('in.raw'), f]);
    const { l1 } = layout(f);
    const b = readFileSync(f);
    const l2 = Number(b.readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    const entry = b.readBigUInt64BE(l2);
    const host = Number(entry & ((1n << 54n) - 1n));
    patch(f, host, Buffer.alloc(16, 0xff));
    await expectFormatError(f, 'compressed cluster', /inflate/);
  });

  it('rejects a truncated file: header', async () => {
    const f = makeImage(s.file);
    truncateSync(f, 50);
    await expectFormatError(f, 'header', /truncated|72/);
  });

  it('rejects a truncated file: tables cut off', async () => {
    const f = makeImage(s.file);
    const { l1 } = layout(f);
    truncateSync(f, l1 + 4);
    await expectFormatError(f, /L1 table|refcount table/, /past the end|truncated/);
  });

  it('rejects a backing chain that loops, naming the files', async () => {
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', s.file('a.qcow2'), '1M']);
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', s.file('b.qcow2')]);
    qemu('qemu-img', ['rebase', '-u', '-b', 'b.qcow2', '-F', 'qcow2', s.file('a.qcow2')]);
    const before = sha256(s.file('a.qcow2'));
    const e = await openAndRead(s.file('b.qcow2'));
    expect(e).to.be.instanceOf(BlockFormatError);
    expect((e as BlockFormatError).structure).to.equal('backing chain');
    expect((e as Error).message).to.contain('a.qcow2').and.to.contain('b.qcow2').and.to.contain('loops');
    expect(sha256(s.file('a.qcow2'))).to.equal(before);
    const r = await img(['info', s.file('b.qcow2')]);
    expect(r.code).to.equal(1);
    expect(r.err).to.contain('loops');
  });

  it('a write hitting corrupt metadata sets the corrupt bit; the image then opens only read-only until repaired', async () => {
    const f = makeImage(s.file);
    const { l1 } = layout(f);
    const l2 = Number(readFileSync(f).readBigUInt64BE(l1) & 0x00fffffffffffe00n);
    // guest cluster 0 claims to live in the L1 table's cluster
    patch(f, l2, u64((1n << 63n) | BigInt(l1)));
    const dev = await registry().openImage(f);
    let err: unknown;
    try {
      await dev.write(0, new Uint8Array(512).fill(1));
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(BlockFormatError);
    expect((err as Error).message).to.match(/overlaps the L1 table/);
    await dev.close();
    const incompat = readFileSync(f).readBigUInt64BE(72);
    expect(incompat & 2n, 'corrupt bit').to.equal(2n);
    let rw: unknown;
    try {
      await registry().openImage(f);
    } catch (e) {
      rw = e;
    }
    expect((rw as Error).message).to.match(/marked corrupt.*check -r all/);
    const ro = await registry().openImage(f, { readOnly: true });
    await ro.close();
    expect((await img(['check', f])).code).to.equal(2);
    const qi = JSON.parse(qemu('qemu-img', ['info', '--output', 'json', f]).stdout) as { 'format-specific': { data: { corrupt: boolean } } };
    expect(qi['format-specific'].data.corrupt).to.equal(true);
  });

  it('an allocation whose refcount block lies past the end of the file is refused', async () => {
    const f = makeImage(s.file);
    const { reftable } = layout(f);
    patch(f, reftable, u64(1n << 40n));
    const dev = await registry().openImage(f);
    let err: unknown;
    try {
      await dev.write(2 * 1024 * 1024, new Uint8Array(4096).fill(3));
    } catch (e) {
      err = e;
    }
    await dev.close();
    expect(err).to.be.instanceOf(BlockFormatError);
    expect((err as BlockFormatError).structure).to.equal('refcount table');
    const ck = await img(['check', '--output', 'json', f]);
    expect(ck.code).to.equal(2);
    // repair rebuilds the refcount structure; qemu-img agrees afterwards
    const fix = await img(['check', '-r', 'all', f]);
    expect(fix.code, fix.out + fix.err).to.equal(0);
    expect(qemu('qemu-img', ['check', f], { allowFail: true }).status).to.equal(0);
  });

  it('check -r leaks frees leaked clusters', async () => {
    const f = makeImage(s.file);
    // leak: bump the refcount of a cluster past the end of the used area
    qemu('qemu-io', ['-c', 'write -P 1 1M 64k', '-c', 'discard 1M 64k', f]);
    const b = readFileSync(f);
    const { reftable, cs } = layout(f);
    const block = Number(b.readBigUInt64BE(reftable));
    const clusters = Math.ceil(b.length / cs);
    patch(f, block + clusters * 2, [0, 1]);
    truncateSync(f, (clusters + 1) * cs);
    expect(qemu('qemu-img', ['check', f], { allowFail: true }).status).to.equal(3);
    expect((await img(['check', f])).code).to.equal(3);
    const fix = await img(['check', '-r', 'leaks', f]);
    expect(fix.code, fix.out).to.equal(0);
    expect(fix.out).to.contain('leaked clusters');
    expect(qemu('qemu-img', ['check', f], { allowFail: true }).status).to.equal(0);
  });
});
