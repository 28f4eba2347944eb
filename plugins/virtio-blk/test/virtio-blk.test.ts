/**
 * virtio-blk-pci (OASIS VIRTIO 1.2 §5.2) through the virtio-pci transport on
 * a raw file, without KVM: configuration, every request type with the status
 * the spec asks for, discard punching holes, read-only drives, multiqueue,
 * malformed requests, and the drive options.
 */
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PluginRegistry, createContainer, type DriveSpec } from '@tsvmm/core';
import { VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_ID_BLOCK, featureBit } from '@tsvmm/virtio';
import { MockVirtqueue, VirtioPciTestDriver, createVirtioPciTestBench, settle, until } from '@tsvmm/virtio/testing';
import {
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VirtioBlkPci,
  parseBlkDrive,
  virtioBlkProperties,
} from '../src/index.js';
import {
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from '../src/data-plane.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const IMAGE_SIZE = 4 << 20;
let dir = '';
let n = 0;

function pattern(offset: number, len: number): Uint8Array {
  return Uint8Array.from({ length: len }, (_, i) => ((offset + i) * 13 + 7) & 0xff);
}

function freshImage(): string {
  const f = path.join(dir, `disk${n++}.img`);
  writeFileSync(f, pattern(0, IMAGE_SIZE));
  return f;
}

function hdr(type: number, sector: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, type, true);
  v.setBigUint64(8, BigInt(sector), true);
  return b;
}

function segment(sector: number, sectors: number, flags: number): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt(sector), true);
  v.setUint32(8, sectors, true);
  v.setUint32(12, flags, true);
  return b;
}

async function rig(drive: Partial<DriveSpec> & Record<string, unknown> = {}, props: Record<string, unknown> = {}) {
  const file = freshImage();
  const plugins = PluginRegistry.create({ container: createContainer(), noDiscovery: true, paths: [path.join(repo, 'plugins/block-raw')] });
  const spec = { id: 'd0', file, format: 'raw', if: 'none', ...drive } as DriveSpec;
  const bench = createVirtioPciTestBench({ ramSize: 8 << 20, drives: [spec], plugins });
  const dev = new VirtioBlkPci('blk0', virtioBlkProperties.parse({ drive: 'd0', 'queue-size': 16, serial: 'tsvmm-serial-0001', ...props }));
  await dev.realize(bench.t.ctx);
  const fn = dev.pciFunction;
  if (fn === undefined) throw new Error('not realized');
  const drv = new VirtioPciTestDriver(bench, fn);
  drv.mapBars();
  const nq = drv.common(0x12, 2);
  const queues = Array.from({ length: nq }, (_, i) => new MockVirtqueue(bench.t.memory, { size: 16, base: 0x10000 + i * 0x10000, dataBase: 0x100000 + i * 0x200000 }));
  expect(drv.negotiate(drv.deviceFeatures() & ((1n << 24n) - 1n))).to.equal(true);
  queues.forEach((q, i) => drv.setupQueue(i, q.config));
  drv.driverOk();
  await settle();
  const mem = bench.t.memory;

  /** Submits a request, kicks, waits; returns status and the data buffer's address. */
  async function request(parts: { type: number; sector?: number; out?: Uint8Array; inLen?: number; seg?: Uint8Array; queue?: number }) {
    const q = queues[parts.queue ?? 0] as MockVirtqueue;
    const bufs: { data?: Uint8Array; len?: number; writable?: boolean }[] = [{ data: hdr(parts.type, parts.sector ?? 0) }];
    if (parts.seg) bufs.push({ data: parts.seg });
    if (parts.out) bufs.push({ data: parts.out });
    if (parts.inLen) bufs.push({ len: parts.inLen, writable: true });
    bufs.push({ len: 1, writable: true });
    const before = q.usedIdx();
    const { addrs } = q.submit(bufs);
    drv.kick(parts.queue ?? 0);
    await until(() => q.usedIdx() !== before, 3000, 'request completion');
    const used = q.usedElem(before);
    return { status: mem.readU8(addrs[addrs.length - 1] ?? 0), data: parts.inLen ? (addrs[addrs.length - 2] ?? 0) : 0, used };
  }

  return { bench, dev, drv, queues, mem, file, request };
}

describe('virtio-blk-pci', () => {
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tsvmm-vblk-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  let r: Awaited<ReturnType<typeof rig>> | undefined;
  afterEach(async () => {
    await r?.dev.unrealize();
    r = undefined;
  });

  describe('configuration (§5.2.4)', () => {
    it('is PCI device 0x1042 of class 0x0100 with the capacity in sectors and QEMU-like limits', async () => {
      r = await rig({ discard: 'unmap' });
      expect(r.drv.fn.config.read(2, 2)).to.equal(0x1040 + VIRTIO_ID_BLOCK);
      expect(r.drv.fn.config.read(0x0a, 2)).to.equal(0x0100);
      expect(r.drv.deviceConfig(0, 4)).to.equal(IMAGE_SIZE / 512);
      expect(r.drv.deviceConfig(4, 4)).to.equal(0);
      expect(r.drv.deviceConfig(12, 4), 'seg_max = queue-size - 2').to.equal(14);
      expect(r.drv.deviceConfig(20, 4), 'blk_size').to.equal(512);
      expect(r.drv.deviceConfig(36, 4), 'max_discard_sectors').to.equal(0x3fffff);
      expect(r.drv.deviceConfig(40, 4), 'max_discard_seg').to.equal(1);
      expect(r.drv.deviceConfig(48, 4), 'max_write_zeroes_sectors').to.equal(0x3fffff);
      expect(r.drv.deviceConfig(56, 1), 'write_zeroes_may_unmap with discard=unmap').to.equal(1);
    });

    it('offers FLUSH, DISCARD and WRITE_ZEROES, and neither RO nor MQ for a single-queue writable drive', async () => {
      r = await rig();
      const f = r.drv.deviceFeatures();
      for (const b of [VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES]) expect(f & featureBit(b), `bit ${b}`).to.not.equal(0n);
      expect(f & featureBit(VIRTIO_BLK_F_RO)).to.equal(0n);
      expect(f & featureBit(VIRTIO_BLK_F_MQ)).to.equal(0n);
      expect(r.drv.deviceConfig(56, 1), 'write_zeroes_may_unmap with discard=ignore').to.equal(0);
    });
  });

  describe('requests (§5.2.6)', () => {
    it('IN reads the image into guest memory; the used length counts data and status', async () => {
      r = await rig();
      const { status, data, used } = await r.request({ type: VIRTIO_BLK_T_IN, sector: 8, inLen: 1024 });
      expect(status).to.equal(VIRTIO_BLK_S_OK);
      const got = new Uint8Array(1024);
      r.mem.read(data, got);
      expect([...got]).to.deep.equal([...pattern(8 * 512, 1024)]);
      expect(used.len).to.equal(1025);
    });

    it('OUT writes guest data to the image file', async () => {
      r = await rig();
      const out = Uint8Array.from({ length: 2048 }, (_, i) => (i * 31) & 0xff);
      expect((await r.request({ type: VIRTIO_BLK_T_OUT, sector: 100, out })).status).to.equal(VIRTIO_BLK_S_OK);
      expect((await r.request({ type: VIRTIO_BLK_T_FLUSH })).status).to.equal(VIRTIO_BLK_S_OK);
      const onDisk = readFileSync(r.file).subarray(100 * 512, 100 * 512 + 2048);
      expect(Buffer.compare(onDisk, Buffer.from(out))).to.equal(0);
    });

    it('GET_ID returns the serial, NUL-padded', async () => {
      r = await rig();
      const { status, data } = await r.request({ type: VIRTIO_BLK_T_GET_ID, inLen: 20 });
      expect(status).to.equal(VIRTIO_BLK_S_OK);
      const got = new Uint8Array(20);
      r.mem.read(data, got);
      expect(new TextDecoder().decode(got.subarray(0, 17))).to.equal('tsvmm-serial-0001');
      expect(got[17]).to.equal(0);
    });

    it('IOERR for a read past the capacity or not a multiple of 512 bytes', async () => {
      r = await rig();
      expect((await r.request({ type: VIRTIO_BLK_T_IN, sector: IMAGE_SIZE / 512, inLen: 512 })).status).to.equal(VIRTIO_BLK_S_IOERR);
      expect((await r.request({ type: VIRTIO_BLK_T_IN, sector: IMAGE_SIZE / 512 - 1, inLen: 1024 })).status).to.equal(VIRTIO_BLK_S_IOERR);
      expect((await r.request({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 100 })).status).to.equal(VIRTIO_BLK_S_IOERR);
      expect((await r.request({ type: VIRTIO_BLK_T_IN, sector: 2 ** 60, inLen: 512 })).status).to.equal(VIRTIO_BLK_S_IOERR);
    });

    it('UNSUPP for an unknown request type', async () => {
      r = await rig();
      expect((await r.request({ type: 0x55, inLen: 512 })).status).to.equal(VIRTIO_BLK_S_UNSUPP);
    });

    it('DISCARD with discard=unmap punches a hole: the file holds fewer blocks and reads zeroes there', async () => {
      r = await rig({ discard: 'unmap' });
      const before = statSync(r.file).blocks;
      expect((await r.request({ type: VIRTIO_BLK_T_DISCARD, seg: segment(2048, 2048, 0) })).status).to.equal(VIRTIO_BLK_S_OK);
      const after = statSync(r.file).blocks;
      expect(before - after, 'freed 512-byte blocks').to.be.at.least(2048 - 16);
      expect(readFileSync(r.file).subarray(1 << 20, 2 << 20).every((b) => b === 0)).to.equal(true);
    });

    it('DISCARD with discard=ignore succeeds and leaves the file as it was', async () => {
      r = await rig({ discard: 'ignore' });
      const before = statSync(r.file).blocks;
      expect((await r.request({ type: VIRTIO_BLK_T_DISCARD, seg: segment(2048, 2048, 0) })).status).to.equal(VIRTIO_BLK_S_OK);
      expect(statSync(r.file).blocks).to.equal(before);
      expect(Buffer.compare(readFileSync(r.file).subarray(1 << 20, (1 << 20) + 64), Buffer.from(pattern(1 << 20, 64)))).to.equal(0);
    });

    it('WRITE_ZEROES zeroes the range, deallocating with UNMAP and discard=unmap', async () => {
      r = await rig({ discard: 'unmap' });
      const before = statSync(r.file).blocks;
      expect((await r.request({ type: VIRTIO_BLK_T_WRITE_ZEROES, seg: segment(4096, 1024, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) })).status).to.equal(VIRTIO_BLK_S_OK);
      expect((await r.request({ type: VIRTIO_BLK_T_WRITE_ZEROES, seg: segment(10, 2, 0) })).status).to.equal(VIRTIO_BLK_S_OK);
      const img = readFileSync(r.file);
      expect(img.subarray(4096 * 512, 5120 * 512).every((b) => b === 0)).to.equal(true);
      expect(img.subarray(10 * 512, 12 * 512).every((b) => b === 0)).to.equal(true);
      expect(img[12 * 512]).to.equal(pattern(12 * 512, 1)[0]);
      expect(before - statSync(r.file).blocks).to.be.at.least(1024 - 16);
    });

    it('UNSUPP for UNMAP on a discard, unknown segment flags, or more than one segment', async () => {
      r = await rig({ discard: 'unmap' });
      expect((await r.request({ type: VIRTIO_BLK_T_DISCARD, seg: segment(0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) })).status).to.equal(VIRTIO_BLK_S_UNSUPP);
      expect((await r.request({ type: VIRTIO_BLK_T_WRITE_ZEROES, seg: segment(0, 8, 2) })).status).to.equal(VIRTIO_BLK_S_UNSUPP);
      expect((await r.request({ type: VIRTIO_BLK_T_DISCARD, seg: segment(0, 8, 0), out: segment(8, 8, 0) })).status).to.equal(VIRTIO_BLK_S_UNSUPP);
    });

    it('IOERR for a segment longer than max_discard_sectors', async () => {
      r = await rig({ discard: 'unmap' }, { 'max-discard-sectors': 8 });
      expect((await r.request({ type: VIRTIO_BLK_T_DISCARD, seg: segment(0, 16, 0) })).status).to.equal(VIRTIO_BLK_S_IOERR);
    });
  });

  describe('read-only drives', () => {
    it('offer VIRTIO_BLK_F_RO; writes, write-zeroes and discards fail with IOERR and write nothing; flush succeeds', async () => {
      r = await rig({ readonly: 'on', discard: 'unmap' });
      expect(r.drv.deviceFeatures() & featureBit(VIRTIO_BLK_F_RO)).to.not.equal(0n);
      const before = readFileSync(r.file);
      expect((await r.request({ type: VIRTIO_BLK_T_OUT, sector: 0, out: new Uint8Array(512) })).status).to.equal(VIRTIO_BLK_S_IOERR);
      expect((await r.request({ type: VIRTIO_BLK_T_WRITE_ZEROES, seg: segment(0, 8, 0) })).status).to.equal(VIRTIO_BLK_S_IOERR);
      expect((await r.request({ type: VIRTIO_BLK_T_DISCARD, seg: segment(0, 8, 0) })).status).to.equal(VIRTIO_BLK_S_IOERR);
      expect((await r.request({ type: VIRTIO_BLK_T_FLUSH })).status).to.equal(VIRTIO_BLK_S_OK);
      expect((await r.request({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 512 })).status).to.equal(VIRTIO_BLK_S_OK);
      expect(Buffer.compare(readFileSync(r.file), before)).to.equal(0);
    });
  });

  describe('multiqueue', () => {
    it('num-queues=2 offers MQ, reports num_queues and serves both queues', async () => {
      r = await rig({}, { 'num-queues': 2 });
      expect(r.drv.deviceFeatures() & featureBit(VIRTIO_BLK_F_MQ)).to.not.equal(0n);
      expect(r.drv.deviceConfig(34, 2)).to.equal(2);
      const a = await r.request({ type: VIRTIO_BLK_T_OUT, sector: 1, out: new Uint8Array(512).fill(0xaa), queue: 1 });
      const b = await r.request({ type: VIRTIO_BLK_T_IN, sector: 1, inLen: 512, queue: 0 });
      expect([a.status, b.status]).to.deep.equal([VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK]);
      expect(r.mem.readU8(b.data)).to.equal(0xaa);
    });
  });

  describe('malformed requests (DEVICE_NEEDS_RESET)', () => {
    async function broken(bufs: { data?: Uint8Array; len?: number; writable?: boolean }[]) {
      r = await rig();
      const q = r.queues[0] as MockVirtqueue;
      q.submit(bufs);
      r.drv.kick(0);
      await until(() => ((r?.drv.status() ?? 0) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0, 3000, 'NEEDS_RESET');
      expect(r.drv.isr() & 2, 'configuration interrupt').to.equal(2);
      // the queue is stopped: a good request after it is not served
      q.submit([{ data: hdr(VIRTIO_BLK_T_FLUSH, 0) }, { len: 1, writable: true }]);
      r.drv.kick(0);
      await settle(40);
      expect(q.usedIdx()).to.equal(0);
    }

    it('a header shorter than 16 bytes', () => broken([{ data: new Uint8Array(8) }, { len: 1, writable: true }]));
    it('no device-writable status byte', () => broken([{ data: hdr(VIRTIO_BLK_T_FLUSH, 0) }]));
    it('a device-readable buffer after a device-writable one', () =>
      broken([{ data: hdr(VIRTIO_BLK_T_IN, 0) }, { len: 512, writable: true }, { data: new Uint8Array(4) }, { len: 1, writable: true }]));
    it('a header that is device-writable (wrong direction)', () => broken([{ len: 16, writable: true }, { len: 1, writable: true }]));
    it('a discard segment shorter than 16 bytes', () => broken([{ data: hdr(VIRTIO_BLK_T_DISCARD, 0) }, { data: new Uint8Array(8) }, { len: 1, writable: true }]));
  });

  describe('drive options', () => {
    it('discard=unmap and on mean unmap; ignore, off and absent mean ignore (libvirt discard=\'unmap\' is the same)', () => {
      const d = (discard?: string): string => parseBlkDrive({ file: 'x', ...(discard !== undefined ? { discard } : {}) } as DriveSpec).discard;
      expect([d('unmap'), d('on'), d('ignore'), d('off'), d()]).to.deep.equal(['unmap', 'unmap', 'ignore', 'ignore', 'ignore']);
      expect(() => d('maybe')).to.throw(/discard=maybe/);
    });

    it('readonly=on makes the drive read-only', () => {
      expect(parseBlkDrive({ file: 'x', readonly: 'on' } as DriveSpec).readOnly).to.equal(true);
      expect(parseBlkDrive({ file: 'x' } as DriveSpec).readOnly).to.equal(false);
    });

    it('refuses an option it does not know, naming it', () => {
      expect(() => parseBlkDrive({ id: 'd9', file: 'x', snapshot: 'on' } as DriveSpec)).to.throw(/drive 'd9': unknown option 'snapshot'/);
    });

    it('refuses throttling a drive whose device runs on an iothread', async () => {
      const plugins = PluginRegistry.create({ container: createContainer(), noDiscovery: true });
      const bench = createVirtioPciTestBench({ drives: [{ id: 'd0', file: freshImage(), format: 'raw', 'throttling.iops-total': '100' } as DriveSpec], plugins });
      const dev = new VirtioBlkPci('blk0', virtioBlkProperties.parse({ drive: 'd0', iothread: 'io0' }));
      let err: unknown;
      try {
        await dev.realize(bench.t.ctx);
      } catch (e) {
        err = e;
      }
      expect(String(err)).to.match(/cannot throttle device 'blk0' \(drive 'd0'\).*iothread 'io0'/);
    });

    it('throttles a drive served on the main thread', async () => {
      r = await rig({ 'throttling.iops-total': '1000' });
      expect((await r.request({ type: VIRTIO_BLK_T_IN, sector: 0, inLen: 512 })).status).to.equal(VIRTIO_BLK_S_OK);
    });

    it('fails to realize on a missing image, naming drive and file', async () => {
      const plugins = PluginRegistry.create({ container: createContainer(), noDiscovery: true, paths: [path.join(repo, 'plugins/block-raw')] });
      const bench = createVirtioPciTestBench({ drives: [{ id: 'd0', file: path.join(dir, 'nope.img'), format: 'raw' } as DriveSpec], plugins });
      const dev = new VirtioBlkPci('blk0', virtioBlkProperties.parse({ drive: 'd0' }));
      let err: unknown;
      try {
        await dev.realize(bench.t.ctx);
      } catch (e) {
        err = e;
      }
      expect(String(err)).to.match(/blk0: drive 'd0' \(.*nope\.img\)/);
    });
  });
});
