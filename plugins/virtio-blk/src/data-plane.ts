/**
 * The virtio-blk request path (OASIS VIRTIO 1.2 §5.2.6 "Device Operation"),
 * run by the virtio data plane on the main thread or on an iothread.
 *
 * A request is struct virtio_blk_req: a device-readable header (le32 type,
 * le32 reserved, le64 sector), data (device-readable for OUT, DISCARD and
 * WRITE_ZEROES; device-writable for IN and GET_ID), and a device-writable
 * status byte — the last writable byte of the chain. Data moves directly
 * between the image and guest RAM (the block driver reads into and writes
 * from views of the shared RAM buffers); writes into RAM are marked dirty.
 *
 * Status choices follow the spec and QEMU (hw/block/virtio-blk.c):
 * - framing the device cannot parse (no 16-byte header, no status byte,
 *   writable before readable, a short discard segment) is a driver bug:
 *   VirtioDeviceError → DEVICE_NEEDS_RESET;
 * - a range past the capacity, a length that is not a multiple of 512, a
 *   segment longer than the advertised maximum, a write, discard or
 *   write-zeroes on a read-only drive (§5.2.6.2: "MUST set the status byte to
 *   VIRTIO_BLK_S_IOERR for a write request if VIRTIO_BLK_F_RO is offered"), a
 *   failing backend: VIRTIO_BLK_S_IOERR;
 * - an unknown type, unknown segment flags, UNMAP on a discard, more
 *   segments than max_discard_seg / max_write_zeroes_seg (1, as QEMU):
 *   VIRTIO_BLK_S_UNSUPP.
 * The used length is every device-writable byte (QEMU's in_len).
 *
 * The drive is opened here, through @tsvmm/block's registry: on the main
 * thread with the VMM's registry, on an iothread with one built from the
 * same block-driver plugins imported into the worker.
 */
import { pathToFileURL } from 'node:url';
import { PLUGIN_API_VERSION, createContainer, type PluginManifest, type TsvmmPlugin } from '@tsvmm/core';
import { BlockDriverRegistry, type BlockDevice } from '@tsvmm/block';
import { ThrottledBlockDevice, type ThrottleLimits } from '@tsvmm/block/throttle';
import {
  ChainLayoutError,
  RequestBuffers,
  VirtioDeviceError,
  guestSlices,
  iothreadEntry,
  type DataPlaneEnv,
  type DescriptorChain,
  type RequestHandler,
  type RequestHandlerFactory,
} from '@tsvmm/virtio';

// §5.2.6 request types and status values
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;
export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;
export const VIRTIO_BLK_ID_BYTES = 20;
export const SECTOR_SIZE = 512;
/** sizeof(struct virtio_blk_outhdr) and of struct virtio_blk_discard_write_zeroes */
const OUTHDR_SIZE = 16;
const DWZ_SEGMENT_SIZE = 16;

export interface BlkInit {
  id: string;
  driveId: string;
  file: string;
  format: string | undefined;
  readOnly: boolean;
  /** discard=unmap: DISCARD and unmapping WRITE_ZEROES deallocate; ignore: discards succeed and do nothing */
  discard: 'unmap' | 'ignore';
  /** format/protocol options for the driver (e.g. cache) */
  options: Record<string, string>;
  serial: string;
  maxDiscardSectors: number;
  maxWriteZeroesSectors: number;
  /** block-driver plugins to import when the data plane runs on an iothread */
  blockDrivers: PluginManifest[];
  /** throttle limits (main thread only; refused with an iothread) */
  throttle?: { limits: ThrottleLimits; group?: string };
}

/** What the data plane reports once the drive is open. */
export interface BlkInfo {
  size: number;
  readOnly: boolean;
}

/** Main-thread objects: the VMM's block driver registry. */
export interface BlkLocal {
  registry: BlockDriverRegistry;
}

/** Builds a registry in this thread from block-driver plugin manifests (an iothread has no plugin registry of its own). */
async function registryFromPlugins(manifests: PluginManifest[]): Promise<BlockDriverRegistry> {
  const container = createContainer();
  for (const m of manifests) {
    const mod = (await import(pathToFileURL(m.entry).href)) as { default?: Partial<TsvmmPlugin> };
    if (typeof mod.default?.register !== 'function') throw new Error(`block-driver plugin ${m.name}: ${m.entry} has no register()`);
    await mod.default.register({ container, apiVersion: PLUGIN_API_VERSION, manifest: m });
  }
  return BlockDriverRegistry.fromContainer(container);
}

export class BlkRequestHandler implements RequestHandler {
  private readonly sectors: number;
  private warnedIo = false;

  constructor(
    private readonly init: BlkInit,
    private readonly env: DataPlaneEnv,
    private readonly disk: BlockDevice,
  ) {
    this.sectors = Math.floor(disk.size / SECTOR_SIZE);
  }

  async handle(chain: DescriptorChain): Promise<number> {
    const req = RequestBuffers.from(chain);
    if (req instanceof ChainLayoutError) throw new VirtioDeviceError(`${this.init.id}: ${req.message}`);
    if (req.readableBytes < OUTHDR_SIZE) throw new VirtioDeviceError(`${this.init.id}: chain ${chain.head}: request header shorter than ${OUTHDR_SIZE} bytes`);
    if (req.writableBytes < 1) throw new VirtioDeviceError(`${this.init.id}: chain ${chain.head}: no device-writable status byte`);
    const hdr = new Uint8Array(OUTHDR_SIZE);
    req.read(this.env.memory, 0, hdr);
    const view = new DataView(hdr.buffer);
    const type = view.getUint32(0, true);
    const sector = view.getBigUint64(8, true);
    let status: number;
    try {
      status = await this.execute(req, type, sector);
    } catch (err) {
      if (err instanceof VirtioDeviceError) throw err;
      status = VIRTIO_BLK_S_IOERR;
      if (!this.warnedIo) {
        this.warnedIo = true;
        this.env.warn(`drive '${this.init.driveId}': ${(err as Error).message} (guest sees VIRTIO_BLK_S_IOERR; further errors not logged)`);
      }
    }
    req.write(this.env.memory, req.writableBytes - 1, Uint8Array.of(status));
    return req.writableBytes;
  }

  /** Bytes [offset, offset+len) of the disk, or undefined when the range is not whole sectors inside the capacity. */
  private byteRange(sector: bigint, len: number): number | undefined {
    if (len % SECTOR_SIZE !== 0) return undefined;
    if (sector > BigInt(this.sectors) || BigInt(len / SECTOR_SIZE) > BigInt(this.sectors) - sector) return undefined;
    return Number(sector) * SECTOR_SIZE;
  }

  private async execute(req: RequestBuffers, type: number, sector: bigint): Promise<number> {
    // QEMU ignores the legacy BARRIER bit (0x80000000); so do we.
    switch (type & 0x7fff_ffff) {
      case VIRTIO_BLK_T_IN: {
        const len = req.writableBytes - 1;
        const offset = this.byteRange(sector, len);
        if (offset === undefined) return VIRTIO_BLK_S_IOERR;
        await this.transfer(req.writableRanges(0, len), offset, 'read');
        return VIRTIO_BLK_S_OK;
      }
      case VIRTIO_BLK_T_OUT: {
        const len = req.readableBytes - OUTHDR_SIZE;
        const offset = this.byteRange(sector, len);
        if (offset === undefined || this.init.readOnly) return VIRTIO_BLK_S_IOERR;
        await this.transfer(req.readableRanges(OUTHDR_SIZE, len), offset, 'write');
        return VIRTIO_BLK_S_OK;
      }
      case VIRTIO_BLK_T_FLUSH:
        await this.disk.flush();
        return VIRTIO_BLK_S_OK;
      case VIRTIO_BLK_T_GET_ID: {
        // NUL-padded, no terminator when the serial fills all 20 bytes (§5.2.6)
        const id = new TextEncoder().encode(this.init.serial).subarray(0, VIRTIO_BLK_ID_BYTES);
        const out = new Uint8Array(Math.min(VIRTIO_BLK_ID_BYTES, id.length + 1, req.writableBytes - 1));
        out.set(id.subarray(0, out.length));
        req.write(this.env.memory, 0, out);
        return VIRTIO_BLK_S_OK;
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES:
        return this.discardOrZero(req, (type & 0x7fff_ffff) === VIRTIO_BLK_T_WRITE_ZEROES);
      default:
        return VIRTIO_BLK_S_UNSUPP;
    }
  }

  private async discardOrZero(req: RequestBuffers, writeZeroes: boolean): Promise<number> {
    const segBytes = req.readableBytes - OUTHDR_SIZE;
    if (segBytes > DWZ_SEGMENT_SIZE) return VIRTIO_BLK_S_UNSUPP; // max_discard_seg = max_write_zeroes_seg = 1
    if (segBytes < DWZ_SEGMENT_SIZE) {
      throw new VirtioDeviceError(`${this.init.id}: ${writeZeroes ? 'write-zeroes' : 'discard'} segment shorter than ${DWZ_SEGMENT_SIZE} bytes`);
    }
    const seg = new Uint8Array(DWZ_SEGMENT_SIZE);
    req.read(this.env.memory, OUTHDR_SIZE, seg);
    const v = new DataView(seg.buffer);
    const sector = v.getBigUint64(0, true);
    const numSectors = v.getUint32(8, true);
    const flags = v.getUint32(12, true);
    const max = writeZeroes ? this.init.maxWriteZeroesSectors : this.init.maxDiscardSectors;
    if (numSectors > max) return VIRTIO_BLK_S_IOERR;
    const offset = this.byteRange(sector, numSectors * SECTOR_SIZE);
    if (offset === undefined) return VIRTIO_BLK_S_IOERR;
    // §5.2.6.2: unknown flags, and UNMAP on a discard, are unsupported
    if (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) return VIRTIO_BLK_S_UNSUPP;
    if (!writeZeroes && flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) return VIRTIO_BLK_S_UNSUPP;
    if (this.init.readOnly) return VIRTIO_BLK_S_IOERR;
    const len = numSectors * SECTOR_SIZE;
    if (writeZeroes) {
      const mayUnmap = (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 && this.init.discard === 'unmap';
      await this.disk.writeZeroes(offset, len, { mayUnmap });
    } else if (this.init.discard === 'unmap') {
      await this.disk.discard(offset, len);
    }
    return VIRTIO_BLK_S_OK;
  }

  /** Moves data between guest RAM ranges and the disk starting at `offset`, straight through views of guest RAM. */
  private async transfer(ranges: { addr: number; len: number }[], offset: number, dir: 'read' | 'write'): Promise<void> {
    const memory = this.env.memory;
    const ops: Promise<void>[] = [];
    let at = offset;
    for (const r of ranges) {
      for (const view of guestSlices(memory, r.addr, r.len)) {
        ops.push(dir === 'read' ? this.disk.read(at, view) : this.disk.write(at, view));
        at += view.length;
      }
    }
    await Promise.all(ops);
    // The disk wrote into guest RAM through views: tell dirty tracking once the data is there.
    if (dir === 'read') for (const r of ranges) memory.markDirty(r.addr, r.len);
  }

  async close(): Promise<void> {
    await this.disk.close();
  }
}

export const createBlkHandler: RequestHandlerFactory<BlkInit, BlkLocal> = async (init, env, local) => {
  const registry = local?.registry ?? (await registryFromPlugins(init.blockDrivers));
  let disk: BlockDevice = await registry.openImage(init.file, {
    ...(init.format !== undefined ? { format: init.format } : {}),
    readOnly: init.readOnly,
    options: init.options,
  });
  if (init.throttle !== undefined) {
    disk = new ThrottledBlockDevice(disk, { limits: init.throttle.limits, name: init.driveId, ...(init.throttle.group !== undefined ? { group: init.throttle.group } : {}) });
  }
  const info: BlkInfo = { size: disk.size, readOnly: disk.readOnly || init.readOnly };
  return { handler: new BlkRequestHandler({ ...init, readOnly: info.readOnly }, env, disk), info };
};

export default iothreadEntry(createBlkHandler);
