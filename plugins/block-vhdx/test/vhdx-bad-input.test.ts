/// <reference types="mocha" />
import { expect } from 'chai';
import { copyFileSync, readFileSync, renameSync, truncateSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { BlockDriverRegistry, BlockFormatError } from '@tsvmm/block';
import { expectConsistentOrBlockError, expectOpenFormatError, patch, scratchDir, sha256, type OpenReadOnly } from '@tsvmm/block/testing';
import { VhdxDevice, createVhdx, vhdx, vhdxChecksum, vhdxDriver, vhdxGuid } from '../src/index.js';

const MiB = 1024 * 1024;

interface Regions {
  bat: number;
  batLength: number;
  metadata: number;
}

function regions(file: string): Regions {
  const b = readFileSync(file);
  const rt = vhdx.parseRegionTable(new Uint8Array(b.subarray(vhdx.REGION_TABLE1_OFFSET, vhdx.REGION_TABLE1_OFFSET + vhdx.REGION_TABLE_SIZE)));
  const find = (g: Uint8Array) => rt.entries.find((e) => vhdxGuid.guidEquals(e.guid, g));
  const bat = find(vhdx.BAT_REGION_GUID);
  const md = find(vhdx.METADATA_REGION_GUID);
  if (bat === undefined || md === undefined) throw new Error('regions missing');
  return { bat: bat.fileOffset, batLength: bat.length, metadata: md.fileOffset };
}

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v, true);
  return b;
}

/** Rewrites both region tables with `edit` applied and correct checksums. */
function editRegionTables(file: string, edit: (entries: vhdx.RegionEntry[]) => vhdx.RegionEntry[]): void {
  const b = readFileSync(file);
  const rt = vhdx.parseRegionTable(new Uint8Array(b.subarray(vhdx.REGION_TABLE1_OFFSET, vhdx.REGION_TABLE1_OFFSET + vhdx.REGION_TABLE_SIZE)));
  const next = vhdx.serializeRegionTable(edit(rt.entries));
  patch(file, vhdx.REGION_TABLE1_OFFSET, next);
  patch(file, vhdx.REGION_TABLE2_OFFSET, next);
}

const openVhdx: OpenReadOnly = (file) => VhdxDevice.open({ filename: file, readOnly: true });

function expectOpenError(file: string, structure: string | RegExp, detail: RegExp, blamed = file): Promise<BlockFormatError> {
  return expectOpenFormatError(openVhdx, file, structure, detail, blamed);
}

describe('vhdx: corrupted images give clear errors and are never modified', function () {
  this.timeout(120_000);
  let s: ReturnType<typeof scratchDir>;
  let good: string;
  let copyN = 0;
  const copy = (): string => {
    const f = s.file(`c${copyN++}.vhdx`);
    copyFileSync(good, f);
    return f;
  };
  beforeEach(async () => {
    s = scratchDir('vhdxbad');
    good = s.file('good.vhdx');
    await createVhdx({ filename: good, size: 12 * MiB, options: { block_size: '1M' } });
    const d = await VhdxDevice.open({ filename: good });
    await d.write(0, new Uint8Array(3 * MiB).fill(0x5a));
    await d.close();
  });
  afterEach(() => s.cleanup());

  it('a file shorter than the header section', async () => {
    const f = copy();
    truncateSync(f, 300 * 1024);
    await expectOpenError(f, 'header section', /smaller than the 1 MiB header section/);
  });

  it('a wrong file type signature', async () => {
    const f = copy();
    patch(f, 0, new TextEncoder().encode('vhdyfile'));
    await expectOpenError(f, 'file type identifier', /signature is 'vhdyfile'/);
  });

  it('both headers damaged', async () => {
    const f = copy();
    patch(f, vhdx.HEADER1_OFFSET + 100, new Uint8Array(8).fill(1));
    patch(f, vhdx.HEADER2_OFFSET + 100, new Uint8Array(8).fill(1));
    await expectOpenError(f, 'header', /neither header is valid .*header 1: checksum .*header 2: checksum/);
  });

  it('one damaged header is survived by the other', async () => {
    const f = copy();
    patch(f, vhdx.HEADER2_OFFSET + 100, new Uint8Array(8).fill(1));
    const d = await VhdxDevice.open({ filename: f, readOnly: true });
    const b = new Uint8Array(4);
    await d.read(0, b);
    expect([...b]).to.deep.equal([0x5a, 0x5a, 0x5a, 0x5a]);
    await d.close();
  });

  it('both region tables damaged', async () => {
    const f = copy();
    patch(f, vhdx.REGION_TABLE1_OFFSET + 20, new Uint8Array(4).fill(9));
    patch(f, vhdx.REGION_TABLE2_OFFSET, new Uint8Array(4));
    await expectOpenError(f, 'region table', /neither copy is valid/);
  });

  it('a required region this implementation does not know', async () => {
    const f = copy();
    editRegionTables(f, (e) => [...e, { guid: vhdxGuid.newGuid(), fileOffset: 8 * MiB, length: MiB, required: true }]);
    await expectOpenError(f, 'region table 1', /required region .* is not one this implementation knows/);
  });

  it('a BAT region overlapping the log', async () => {
    const f = copy();
    editRegionTables(f, (e) => e.map((x) => (vhdxGuid.guidEquals(x.guid, vhdx.BAT_REGION_GUID) ? { ...x, fileOffset: MiB } : x)));
    await expectOpenError(f, 'region table 1', /BAT region .* overlaps the log/);
  });

  it('a region beyond the end of the file', async () => {
    const f = copy();
    editRegionTables(f, (e) => e.map((x) => (vhdxGuid.guidEquals(x.guid, vhdx.METADATA_REGION_GUID) ? { ...x, fileOffset: 1024 * MiB } : x)));
    await expectOpenError(f, 'region table 1', /metadata region .* beyond the end of the file/);
  });

  it('a block size out of range', async () => {
    const f = copy();
    const r = regions(f);
    // the file parameters item is the first item, at 64 KiB into the metadata region
    patch(f, r.metadata + 64 * 1024, u32(3 * 1024));
    await expectOpenError(f, 'file parameters', /block size 3072 is not a power of two/);
  });

  it('a required metadata item this implementation does not know', async () => {
    const f = copy();
    const r = regions(f);
    const t = vhdx.parseMetadataTable(new Uint8Array(readFileSync(f).subarray(r.metadata, r.metadata + vhdx.METADATA_TABLE_SIZE)));
    patch(f, r.metadata, vhdx.serializeMetadataTable([...t.entries, { itemId: vhdxGuid.newGuid(), offset: 70 * 1024, length: 8, isUser: false, isVirtualDisk: false, isRequired: true }]));
    await expectOpenError(f, 'metadata table', /required item .* is not one this implementation knows/);
  });

  it('a metadata item outside the metadata region', async () => {
    const f = copy();
    const r = regions(f);
    const t = vhdx.parseMetadataTable(new Uint8Array(readFileSync(f).subarray(r.metadata, r.metadata + vhdx.METADATA_TABLE_SIZE)));
    const entries = t.entries.map((e, i) => (i === 1 ? { ...e, offset: 2 * MiB } : e));
    patch(f, r.metadata, vhdx.serializeMetadataTable(entries));
    await expectOpenError(f, 'metadata table', /item 'virtual disk size' at .* is outside the metadata region/);
  });

  it('a BAT entry beyond the end of the file', async () => {
    const f = copy();
    const r = regions(f);
    const e = new Uint8Array(8);
    vhdx.setBatEntry(new DataView(e.buffer), 0, vhdx.PayloadState.FullyPresent, 4000);
    patch(f, r.bat + 8, e);
    await expectOpenError(f, 'BAT', /entry 1 points to \[\d+, \d+\) beyond the end of the file/);
  });

  it('a BAT entry pointing into the metadata region', async () => {
    const f = copy();
    const r = regions(f);
    const e = new Uint8Array(8);
    vhdx.setBatEntry(new DataView(e.buffer), 0, vhdx.PayloadState.FullyPresent, r.metadata / MiB);
    patch(f, r.bat + 8, e);
    await expectOpenError(f, 'BAT', /entry 1 .* overlapping the metadata region/);
  });

  it('two BAT entries sharing a block', async () => {
    const f = copy();
    const r = regions(f);
    patch(f, r.bat + 8, new Uint8Array(readFileSync(f).subarray(r.bat, r.bat + 8)));
    await expectOpenError(f, 'BAT', /entries 0 and 1 point to overlapping blocks/);
  });

  it('a partially present block in a file without a parent', async () => {
    const f = copy();
    const r = regions(f);
    const e = new Uint8Array(readFileSync(f).subarray(r.bat, r.bat + 8));
    e[0] = ((e[0] ?? 0) & ~7) | vhdx.PayloadState.PartiallyPresent;
    patch(f, r.bat, e);
    await expectOpenError(f, 'BAT', /payload entry 0 has state 7, which is not valid in a non-differencing file/);
  });

  it('a file truncated inside the payload', async () => {
    const f = copy();
    const size = readFileSync(f).length;
    truncateSync(f, size - MiB - 4096);
    await expectOpenError(f, 'BAT', /beyond the end of the file/);
  });

  it('differencing: a missing parent, a loop, and a modified parent', async () => {
    const registry = new BlockDriverRegistry([vhdxDriver]);
    await createVhdx({ filename: s.file('a.vhdx'), size: 4 * MiB, options: { block_size: '1M' } });
    await createVhdx({ filename: s.file('b.vhdx'), size: 0, options: { backing_file: 'a.vhdx' } });
    // modified parent: its DataWriteGuid no longer matches parent_linkage
    const a = await VhdxDevice.open({ filename: s.file('a.vhdx') });
    await a.write(0, new Uint8Array(512).fill(1));
    await a.close();
    await expectOpenError(s.file('b.vhdx'), 'parent locator', /does not match the DataWriteGuid/);
    // missing parent
    renameSync(s.file('a.vhdx'), s.file('a-moved.vhdx'));
    await expectOpenError(s.file('b.vhdx'), 'parent locator', /no parent found; tried .*a\.vhdx/);
    // loop: x is replaced by a differencing file on y (y -> x -> y)
    await createVhdx({ filename: s.file('x.vhdx'), size: 4 * MiB, options: { block_size: '1M' } });
    await createVhdx({ filename: s.file('y.vhdx'), size: 0, options: { backing_file: 'x.vhdx' } });
    await createVhdx({ filename: s.file('x2.vhdx'), size: 0, options: { backing_file: 'y.vhdx' } });
    renameSync(s.file('x2.vhdx'), s.file('x.vhdx'));
    await expectOpenError(s.file('y.vhdx'), 'parent locator', /loops back/, s.file('x.vhdx'));
    const before = sha256(s.file('y.vhdx'));
    let err: unknown;
    try {
      await registry.openImage(s.file('y.vhdx'), { readOnly: true });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(BlockFormatError);
    expect((err as Error).message).to.match(/backing chain: loops back/);
    expect(sha256(s.file('y.vhdx'))).to.equal(before);
  });

  it('fuzzed headers, region tables, metadata and BAT open consistently or fail with a BlockError, never modifying the file', async () => {
    const base = readFileSync(good);
    const r = regions(good);
    const position = fc.oneof(
      fc.integer({ min: 0, max: 15 }),
      fc.integer({ min: vhdx.HEADER1_OFFSET, max: vhdx.HEADER1_OFFSET + 95 }),
      fc.integer({ min: vhdx.HEADER2_OFFSET, max: vhdx.HEADER2_OFFSET + 95 }),
      fc.integer({ min: vhdx.REGION_TABLE1_OFFSET, max: vhdx.REGION_TABLE1_OFFSET + 95 }),
      fc.integer({ min: r.metadata, max: r.metadata + 256 }),
      fc.integer({ min: r.metadata + 64 * 1024, max: r.metadata + 64 * 1024 + 64 }),
      fc.integer({ min: r.bat, max: r.bat + 127 }),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(position, fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), fc.boolean(), async (edits, fixSums) => {
        const f = s.file(`fuzz${n++}.vhdx`);
        const buf = Buffer.from(base);
        for (const [pos, val] of edits) buf[pos] = val;
        if (fixSums) {
          // explore past the checksums: recompute them after mutating
          for (const [at, len] of [
            [vhdx.HEADER1_OFFSET, vhdx.HEADER_SIZE],
            [vhdx.HEADER2_OFFSET, vhdx.HEADER_SIZE],
            [vhdx.REGION_TABLE1_OFFSET, vhdx.REGION_TABLE_SIZE],
            [vhdx.REGION_TABLE2_OFFSET, vhdx.REGION_TABLE_SIZE],
          ] as const) {
            const part = new Uint8Array(buf.buffer, buf.byteOffset + at, len);
            new DataView(part.buffer, part.byteOffset).setUint32(4, vhdxChecksum(part, 4), true);
          }
        }
        writeFileSync(f, buf);
        await expectConsistentOrBlockError(openVhdx, f);
      }),
      { numRuns: 150, seed: 777 },
    );
  });
});
