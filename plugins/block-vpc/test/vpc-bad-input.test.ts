/// <reference types="mocha" />
import { expect } from 'chai';
import { copyFileSync, readFileSync, renameSync, truncateSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { BlockDriverRegistry, BlockFormatError } from '@tsvmm/block';
import { expectConsistentOrBlockError, expectOpenFormatError, patch, scratchDir, sha256, type OpenReadOnly } from '@tsvmm/block/testing';
import { VpcDevice, createVpc, vpcDriver, vhd } from '../src/index.js';

const MiB = 1024 * 1024;

function be32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v);
  return b;
}

/** Rewrites the dynamic header at 512 with `edit` applied and a correct checksum. */
function editHeader(file: string, edit: (h: vhd.DynamicHeader) => void): void {
  const buf = readFileSync(file);
  const h = vhd.parseDynamicHeader(new Uint8Array(buf.subarray(512, 1536)));
  edit(h);
  patch(file, 512, vhd.serializeDynamicHeader(h));
}

const openVpc: OpenReadOnly = (file) => VpcDevice.open({ filename: file, readOnly: true });

function expectOpenError(file: string, structure: RegExp | string, detail: RegExp, blamed = file): Promise<BlockFormatError> {
  return expectOpenFormatError(openVpc, file, structure, detail, blamed);
}

describe('vpc: corrupted images give clear errors and are never modified', function () {
  this.timeout(60_000);
  let s: ReturnType<typeof scratchDir>;
  let good: string;
  beforeEach(async () => {
    s = scratchDir('vpcbad');
    good = s.file('good.vhd');
    await createVpc({ filename: good, size: 8 * MiB, options: {} });
    const d = await VpcDevice.open({ filename: good });
    await d.write(0, new Uint8Array(3 * MiB).fill(0x5a));
    await d.close();
  });
  afterEach(() => s.cleanup());

  it('a file shorter than a footer', async () => {
    const f = s.file('tiny.vhd');
    copyFileSync(good, f);
    truncateSync(f, 100);
    await expectOpenError(f, 'footer', /smaller than the 512-byte footer/);
  });

  it('a file truncated inside the data blocks names the BAT entry', async () => {
    const f = s.file('trunc.vhd');
    copyFileSync(good, f);
    truncateSync(f, 2 * MiB);
    await expectOpenError(f, 'BAT', /entry 0 points to block .* beyond the end of the file/);
  });

  it('a file truncated inside the header', async () => {
    const f = s.file('trunc2.vhd');
    copyFileSync(good, f);
    truncateSync(f, 1000);
    await expectOpenError(f, 'footer', /dynamic disk header is outside the file/);
  });

  it('a BAT entry past the end of the file', async () => {
    const f = s.file('bat.vhd');
    copyFileSync(good, f);
    patch(f, 1536 + 4, be32(0x7fffff00));
    await expectOpenError(f, 'BAT', /entry 1 points to block \[\d+, \d+\) beyond the end of the file/);
  });

  it('a BAT entry pointing into the BAT itself', async () => {
    const f = s.file('bat2.vhd');
    copyFileSync(good, f);
    patch(f, 1536, be32(3));
    await expectOpenError(f, 'BAT', /entry 0 .* overlapping the (dynamic disk header|BAT)/);
  });

  it('two BAT entries sharing a block', async () => {
    const f = s.file('bat3.vhd');
    copyFileSync(good, f);
    const first = readFileSync(f).subarray(1536, 1540);
    patch(f, 1536 + 4, new Uint8Array(first));
    await expectOpenError(f, 'BAT', /entries 0 and 1 point to overlapping blocks/);
  });

  it('a dynamic header with a wrong checksum', async () => {
    const f = s.file('sum.vhd');
    copyFileSync(good, f);
    patch(f, 512 + 36, be32(0x12345678));
    await expectOpenError(f, 'dynamic disk header', /checksum is 0x12345678, computed/);
  });

  it('a block size that is not a power of two', async () => {
    const f = s.file('bs.vhd');
    copyFileSync(good, f);
    editHeader(f, (h) => (h.blockSize = 3 * 512));
    await expectOpenError(f, 'dynamic disk header', /block size 1536 is not a power of two/);
  });

  it('a BAT too small for the disk size', async () => {
    const f = s.file('bs.vhd');
    copyFileSync(good, f);
    editHeader(f, (h) => (h.maxTableEntries = 1));
    await expectOpenError(f, 'dynamic disk header', /covers 2097152 bytes, less than the disk size/);
  });

  it('a fixed disk whose footer is damaged', async () => {
    const f = s.file('fixed.vhd');
    await createVpc({ filename: f, size: MiB, options: { subformat: 'fixed' } });
    const size = readFileSync(f).length;
    patch(f, size - 512, new TextEncoder().encode('garbage!'));
    await expectOpenError(f, 'footer', /no valid footer found .*cookie is 'garbage!'/);
  });

  it('a dynamic disk whose trailing footer is lost still opens from the copy at offset 0', async () => {
    const f = s.file('nofooter.vhd');
    copyFileSync(good, f);
    const size = readFileSync(f).length;
    patch(f, size - 512, new Uint8Array(512));
    const d = await VpcDevice.open({ filename: f, readOnly: true });
    const b = new Uint8Array(4);
    await d.read(0, b);
    expect([...b]).to.deep.equal([0x5a, 0x5a, 0x5a, 0x5a]);
    await d.close();
  });

  it('a differencing disk whose parent is missing lists where it looked', async () => {
    await createVpc({ filename: s.file('child.vhd'), size: 0, options: { backing_file: 'good.vhd' } });
    renameSync(good, s.file('moved.vhd'));
    const fe = await expectOpenError(s.file('child.vhd'), 'parent locator', /no parent found; tried .*good\.vhd/);
    expect(fe.hint).to.match(/put the parent image next to/);
  });

  it('a differencing chain that loops back is refused (driver alone and through the registry)', async () => {
    // a <- b, then replace a by a differencing disk on b: b -> a -> b
    await createVpc({ filename: s.file('a.vhd'), size: 4 * MiB, options: {} });
    await createVpc({ filename: s.file('b.vhd'), size: 0, options: { backing_file: 'a.vhd' } });
    await createVpc({ filename: s.file('a2.vhd'), size: 0, options: { backing_file: 'b.vhd' } });
    renameSync(s.file('a2.vhd'), s.file('a.vhd'));
    // the image whose parent closes the loop is the one named
    await expectOpenError(s.file('b.vhd'), /parent locator/, /loops back/, s.file('a.vhd'));
    const registry = new BlockDriverRegistry([vpcDriver]);
    const before = sha256(s.file('b.vhd'));
    let err: unknown;
    try {
      await registry.openImage(s.file('b.vhd'), { readOnly: true });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(BlockFormatError);
    expect((err as Error).message).to.match(/backing chain: loops back/);
    expect(sha256(s.file('b.vhd'))).to.equal(before);
  });

  it('fuzzed headers either open and read consistently or fail with a BlockError, never modifying the file', async () => {
    const base = readFileSync(good);
    const size = base.length;
    // positions in the footer copy, dynamic header, BAT and trailing footer
    const position = fc.oneof(
      fc.integer({ min: 0, max: 511 }),
      fc.integer({ min: 512, max: 1535 }),
      fc.integer({ min: 1536, max: 2047 }),
      fc.integer({ min: size - 512, max: size - 1 }),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(position, fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.boolean(), async (edits, fixSums) => {
        const f = s.file(`fuzz${n++}.vhd`);
        const buf = Buffer.from(base);
        for (const [pos, val] of edits) buf[pos] = val;
        if (fixSums) {
          // also explore past the checksums: recompute them after mutating
          const hdr = new Uint8Array(buf.buffer, buf.byteOffset + 512, 1024);
          new DataView(hdr.buffer, hdr.byteOffset).setUint32(vhd.HEADER_CHECKSUM_OFFSET, vhd.vhdChecksum(hdr, vhd.HEADER_CHECKSUM_OFFSET));
          const foot = new Uint8Array(buf.buffer, buf.byteOffset + size - 512, 512);
          new DataView(foot.buffer, foot.byteOffset).setUint32(vhd.FOOTER_CHECKSUM_OFFSET, vhd.vhdChecksum(foot, vhd.FOOTER_CHECKSUM_OFFSET));
        }
        writeFileSync(f, buf);
        await expectConsistentOrBlockError(openVpc, f);
      }),
      { numRuns: 150, seed: 4242 },
    );
  });
});
