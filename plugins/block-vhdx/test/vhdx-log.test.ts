/// <reference types="mocha" />
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { copyFileSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlockFormatError } from '@tsvmm/block';
import { VhdxDevice, createVhdx, vhdx, vhdxGuid, vhdxLog } from '../src/index.js';
import { recordPattern } from './vhdx-crash-writer.js';
import { patch, qemu, scratchDir, sha256 } from '@tsvmm/block/testing';

const MiB = 1024 * 1024;
const here = path.dirname(fileURLToPath(import.meta.url));

interface Layout {
  header: vhdx.VhdxHeader;
  slot: 0 | 1;
  batOffset: number;
  ratio: number;
}

function layout(file: string): Layout {
  const b = readFileSync(file);
  const h1 = vhdx.parseHeader(new Uint8Array(b.subarray(vhdx.HEADER1_OFFSET, vhdx.HEADER1_OFFSET + vhdx.HEADER_SIZE)));
  const h2 = vhdx.parseHeader(new Uint8Array(b.subarray(vhdx.HEADER2_OFFSET, vhdx.HEADER2_OFFSET + vhdx.HEADER_SIZE)));
  const [header, slot] = h1.sequenceNumber > h2.sequenceNumber ? ([h1, 0] as const) : ([h2, 1] as const);
  const rt = vhdx.parseRegionTable(new Uint8Array(b.subarray(vhdx.REGION_TABLE1_OFFSET, vhdx.REGION_TABLE1_OFFSET + vhdx.REGION_TABLE_SIZE)));
  const bat = rt.entries.find((e) => vhdxGuid.guidEquals(e.guid, vhdx.BAT_REGION_GUID));
  if (bat === undefined) throw new Error('no BAT region');
  // the tests create 1 MiB blocks with 512-byte sectors
  return { header, slot, batOffset: bat.fileOffset, ratio: vhdx.chunkRatio(MiB, 512) };
}

/** Makes the image's current header name `logGuid` (a new header in the other slot, as a writer would). */
function setLogGuid(file: string, l: Layout, logGuid: Uint8Array): void {
  const next = { ...l.header, sequenceNumber: l.header.sequenceNumber + 1n, logGuid };
  patch(file, l.slot === 0 ? vhdx.HEADER2_OFFSET : vhdx.HEADER1_OFFSET, vhdx.serializeHeader(next));
}

/**
 * Crafts what a writer leaves when it crashes after making a log entry durable
 * but before applying it: payload block `block` filled with `fill` at the end
 * of the file, and a log entry (not applied) mapping it in the BAT.
 */
function craftDirtyLog(
  file: string,
  opts: { block: number; fill: number; at?: number; seq?: bigint; tailOffset?: number; extra?: Array<{ fileOffset: number; data: Uint8Array }> },
): { logGuid: Uint8Array; blockOffset: number } {
  const l = layout(file);
  const size = statSync(file).size;
  const blockOffset = Math.ceil(size / MiB) * MiB;
  patch(file, blockOffset, new Uint8Array(MiB).fill(opts.fill));
  const idx = vhdx.payloadBatIndex(opts.block, l.ratio);
  const sectorOff = Math.floor((idx * 8) / 4096) * 4096;
  const sector = new Uint8Array(readFileSync(file).subarray(l.batOffset + sectorOff, l.batOffset + sectorOff + 4096));
  vhdx.setBatEntry(new DataView(sector.buffer), idx - sectorOff / 8, vhdx.PayloadState.FullyPresent, blockOffset / MiB);
  const logGuid = vhdxGuid.newGuid();
  const at = opts.at ?? 0;
  const entry = vhdxLog.buildLogEntry({
    logGuid,
    sequenceNumber: opts.seq ?? 7n,
    tail: opts.tailOffset ?? at,
    flushedFileOffset: blockOffset + MiB,
    lastFileOffset: blockOffset + MiB,
    sectors: [{ fileOffset: l.batOffset + sectorOff, data: sector }, ...(opts.extra ?? [])],
  });
  // write circularly into the log
  const len = l.header.logLength;
  const first = Math.min(entry.length, len - at);
  patch(file, l.header.logOffset + at, entry.subarray(0, first));
  if (first < entry.length) patch(file, l.header.logOffset, entry.subarray(first));
  setLogGuid(file, l, logGuid);
  return { logGuid, blockOffset };
}

async function baseImage(file: string): Promise<void> {
  await createVhdx({ filename: file, size: 8 * MiB, options: { block_size: '1M' } });
  const d = await VhdxDevice.open({ filename: file });
  await d.write(0, new Uint8Array(MiB).fill(0x11));
  await d.close();
}

async function readBlock(file: string, block: number, readOnly: boolean): Promise<Uint8Array> {
  const d = await VhdxDevice.open({ filename: file, readOnly });
  try {
    const b = new Uint8Array(MiB);
    await d.read(block * MiB, b);
    return b;
  } finally {
    await d.close();
  }
}

describe('vhdx: log replay', function () {
  this.timeout(120_000);
  let s: ReturnType<typeof scratchDir>;
  beforeEach(() => (s = scratchDir('vhdxlog')));
  afterEach(() => s.cleanup());

  it('a read-only open replays a dirty log in memory and leaves the file untouched', async () => {
    const img = s.file('d.vhdx');
    await baseImage(img);
    craftDirtyLog(img, { block: 2, fill: 0x77 });
    const before = sha256(img);
    const b = await readBlock(img, 2, true);
    expect(b.every((x) => x === 0x77)).to.equal(true);
    const d = await VhdxDevice.open({ filename: img, readOnly: true });
    expect((await d.info())['format-specific']?.data['log-replayed']).to.equal('memory');
    await d.close();
    expect(sha256(img)).to.equal(before);
  });

  it('QEMU sees the same log as dirty: it refuses a read-only open and replays with check -r all', async () => {
    const img = s.file('d.vhdx');
    await baseImage(img);
    craftDirtyLog(img, { block: 2, fill: 0x77 });
    const ro = qemu('qemu-img', ['info', '-f', 'vhdx', img], { allowFail: true });
    expect(ro.status).to.not.equal(0);
    expect(ro.stderr).to.match(/log that needs to be replayed/);
    // QEMU replays one copy, tsvmm the other: same result
    copyFileSync(img, s.file('qemu.vhdx'));
    qemu('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', s.file('qemu.vhdx')], { allowFail: true });
    const d = await VhdxDevice.open({ filename: img });
    expect((await d.info())['format-specific']?.data['log-replayed']).to.equal('file');
    await d.close();
    expect(vhdxGuid.guidIsZero(layout(img).header.logGuid)).to.equal(true);
    qemu('qemu-img', ['check', '-f', 'vhdx', img]);
    const cmp = qemu('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', img, s.file('qemu.vhdx')], { allowFail: true });
    expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
    expect((await readBlock(img, 2, true)).every((x) => x === 0x77)).to.equal(true);
    expect((await readBlock(img, 0, true)).every((x) => x === 0x11)).to.equal(true);
  });

  it('replays an entry that wraps around the end of the circular log', async () => {
    const img = s.file('w.vhdx');
    await baseImage(img);
    const logLength = layout(img).header.logLength;
    craftDirtyLog(img, { block: 3, fill: 0x5c, at: logLength - 4096 });
    expect((await readBlock(img, 3, true)).every((x) => x === 0x5c)).to.equal(true);
    copyFileSync(img, s.file('qemu.vhdx'));
    qemu('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', s.file('qemu.vhdx')], { allowFail: true });
    expect((await readBlock(img, 3, false)).every((x) => x === 0x5c)).to.equal(true);
    const cmp = qemu('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', img, s.file('qemu.vhdx')], { allowFail: true });
    expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
  });

  it('ignores an entry with a bad checksum (a torn log write): nothing is replayed', async () => {
    const img = s.file('t.vhdx');
    await baseImage(img);
    craftDirtyLog(img, { block: 2, fill: 0x77 });
    const l = layout(img);
    // tear the data sector of the entry
    patch(img, l.header.logOffset + 4096 + 100, new Uint8Array(16).fill(0xee));
    const b = await readBlock(img, 2, false);
    expect(b.every((x) => x === 0)).to.equal(true);
    qemu('qemu-img', ['check', '-f', 'vhdx', img]);
  });

  it('refuses a log entry whose descriptor targets the header section, without writing', async () => {
    const img = s.file('h.vhdx');
    await baseImage(img);
    craftDirtyLog(img, { block: 2, fill: 0x77, extra: [{ fileOffset: 64 * 1024, data: new Uint8Array(4096) }] });
    const before = sha256(img);
    let err: unknown;
    try {
      await VhdxDevice.open({ filename: img });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(BlockFormatError);
    expect((err as BlockFormatError).structure).to.equal('log');
    expect((err as Error).message).to.match(/inside the header section/);
    expect(sha256(img)).to.equal(before);
  });

  it('refuses a log written when the file was longer than it is now (truncated)', async () => {
    const img = s.file('tr.vhdx');
    await baseImage(img);
    const { blockOffset } = craftDirtyLog(img, { block: 2, fill: 0x77 });
    const { truncateSync } = await import('node:fs');
    truncateSync(img, blockOffset);
    let err: unknown;
    try {
      await VhdxDevice.open({ filename: img, readOnly: true });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(BlockFormatError);
    expect((err as Error).message).to.match(/was truncated after the log was written/);
  });

  it('a writer killed with SIGKILL loses no acknowledged write; tsvmm and QEMU replay to the same image', async () => {
    const img = s.file('crash.vhdx');
    await createVhdx({ filename: img, size: 64 * MiB, options: { block_size: '1M' } });
    const child = spawn(process.execPath, [path.join(here, 'vhdx-crash-writer.js'), img], { stdio: ['ignore', 'pipe', 'pipe'] });
    let lastAck = -1;
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    await new Promise<void>((resolve, reject) => {
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        for (const line of buf.split('\n').slice(0, -1)) {
          const m = /^ack (\d+)$/.exec(line);
          if (m?.[1] !== undefined) lastAck = Number(m[1]);
        }
        buf = buf.slice(buf.lastIndexOf('\n') + 1);
        if (lastAck >= 90 && child.exitCode === null) child.kill('SIGKILL');
      });
      child.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`writer exited ${code}: ${stderr}`))));
    });
    expect(lastAck).to.be.at.least(90);
    // the writer died mid-session: its log is still live
    expect(vhdxGuid.guidIsZero(layout(img).header.logGuid)).to.equal(false);
    copyFileSync(img, s.file('qemu.vhdx'));
    qemu('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', s.file('qemu.vhdx')], { allowFail: true });
    qemu('qemu-img', ['check', '-f', 'vhdx', s.file('qemu.vhdx')]);
    // tsvmm replays on a read-write open
    const d = await VhdxDevice.open({ filename: img });
    const records = Math.floor(d.size / (64 * 1024));
    const got = new Uint8Array(64 * 1024);
    for (let i = 0; i <= lastAck; i++) {
      await d.read(((i * 37) % records) * 64 * 1024, got);
      expect(Buffer.compare(got, recordPattern(i)), `acknowledged record ${i}`).to.equal(0);
    }
    await d.close();
    qemu('qemu-img', ['check', '-f', 'vhdx', img]);
    const cmp = qemu('qemu-img', ['compare', '-f', 'vhdx', '-F', 'vhdx', img, s.file('qemu.vhdx')], { allowFail: true });
    expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
  });
});
