/**
 * virtio-blk-pci: the virtio block device (OASIS VIRTIO 1.2 §5.2) on the
 * virtio-pci transport, backed by a drive opened through @tsvmm/block.
 * The request path is in data-plane.ts; this file holds properties, the
 * device configuration (struct virtio_blk_config, §5.2.4) and the lifecycle.
 *
 * Properties (QEMU spellings): `drive=` (a `--drive ...,id=` with if=none,
 * or the one `--drive ...,if=virtio` created this device for), `num-queues=`
 * (default 1), `queue-size=` (default 256, as QEMU 7.2), `iothread=` (run
 * the queues on that iothread), `serial=` (GET_ID), `discard=` and
 * `write-zeroes=` (offer those features, default on as in QEMU),
 * `max-discard-sectors=`, `max-write-zeroes-sectors=`, `bus=`, `addr=`,
 * `multifunction=`.
 *
 * Drive options that matter here: `readonly=on` (VIRTIO_BLK_F_RO; writes
 * fail with VIRTIO_BLK_S_IOERR), `discard=unmap|ignore` (also `on`/`off`;
 * libvirt's discard='unmap' is the same) — with unmap a DISCARD, and a
 * WRITE_ZEROES with the UNMAP flag, deallocate (holes punched in a raw
 * file), with ignore (QEMU's default) discards succeed without effect;
 * `cache=`; `throttling.*` limits, refused when the device has an iothread
 * (the data plane never passes the main thread's throttle filter).
 */
import { z } from 'zod';
import { ConfigError, defineDeviceType, devicePlugin, prop, type DeviceContext, type DriveSpec, type PluginManifest } from '@tsvmm/core';
import { BlockDriverRegistry } from '@tsvmm/block';
import { assertThrottlable, parseThrottleOptions, ThrottleConfigError, ThrottleError } from '@tsvmm/block/throttle';
import { pciDeviceProperties } from '@tsvmm/pci';
import {
  VIRTIO_ID_BLOCK,
  VirtioCommon,
  VirtioPciDeviceBase,
  VirtioPciTransport,
  featureBit,
  type VirtioDeviceConfigSpace,
} from '@tsvmm/virtio';
import { SECTOR_SIZE, createBlkHandler, type BlkInfo, type BlkInit, type BlkLocal } from './data-plane.js';

// §5.2.3 feature bits
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

/** QEMU's BDRV_REQUEST_MAX_SECTORS (INT_MAX >> 9), its default for both limits. */
export const BDRV_REQUEST_MAX_SECTORS = 0x3fffff;
/** sizeof(struct virtio_blk_config) up to write_zeroes_may_unmap and its padding (no secure erase, no zoned) */
export const VIRTIO_BLK_CONFIG_SIZE = 60;

export const virtioBlkProperties = z.strictObject({
  drive: prop.str(),
  'num-queues': prop.int(1, 256).default(1),
  'queue-size': prop.int(2, 1024).default(256),
  iothread: prop.str().optional(),
  serial: prop.str().default(''),
  discard: prop.bool().default(true),
  'write-zeroes': prop.bool().default(true),
  'max-discard-sectors': prop.int(1, BDRV_REQUEST_MAX_SECTORS).default(BDRV_REQUEST_MAX_SECTORS),
  'max-write-zeroes-sectors': prop.int(1, BDRV_REQUEST_MAX_SECTORS).default(BDRV_REQUEST_MAX_SECTORS),
  ...pciDeviceProperties,
});
export type VirtioBlkProperties = z.output<typeof virtioBlkProperties>;

/** What a drive's options mean for this device. */
export interface BlkDriveOptions {
  readOnly: boolean;
  discard: 'unmap' | 'ignore';
  iothread: string | undefined;
  options: Record<string, string>;
  throttle: Record<string, string> | undefined;
}

const DRIVE_KEYS = new Set(['id', 'file', 'format', 'if', 'readonly', 'discard', 'iothread', 'cache']);

function onOff(drive: string, key: string, v: unknown): boolean {
  if (v === undefined) return false;
  if (typeof v === 'boolean') return v;
  const s = String(v).toLowerCase();
  if (['on', 'true', 'yes', '1'].includes(s)) return true;
  if (['off', 'false', 'no', '0'].includes(s)) return false;
  throw new ConfigError(`drive '${drive}': ${key}=${String(v)} must be on or off`);
}

/** Reads the drive options virtio-blk understands; refuses the ones it does not know. */
export function parseBlkDrive(drive: DriveSpec): BlkDriveOptions {
  const id = drive.id ?? drive.file;
  const raw = drive as Record<string, unknown>;
  const options: Record<string, string> = {};
  let throttle: Record<string, string> | undefined;
  for (const [k, v] of Object.entries(raw)) {
    if (k.startsWith('throttling.')) {
      throttle ??= {};
      throttle[k] = String(v);
      continue;
    }
    if (!DRIVE_KEYS.has(k)) {
      throw new ConfigError(`drive '${id}': unknown option '${k}'`, { hint: `known: ${[...DRIVE_KEYS].join(', ')}, throttling.*` });
    }
  }
  if (raw['cache'] !== undefined) options['cache'] = String(raw['cache']);
  const d = raw['discard'] === undefined ? 'ignore' : String(raw['discard']).toLowerCase();
  let discard: 'unmap' | 'ignore';
  if (d === 'unmap' || d === 'on') discard = 'unmap';
  else if (d === 'ignore' || d === 'off') discard = 'ignore';
  else throw new ConfigError(`drive '${id}': discard=${d} must be unmap or ignore (on/off)`);
  const iothread = typeof raw['iothread'] === 'string' ? raw['iothread'] : undefined;
  return { readOnly: onOff(id, 'readonly', raw['readonly']), discard, iothread, options, throttle };
}

/** struct virtio_blk_config (§5.2.4), little-endian. */
export function blkConfigSpace(fields: {
  capacity: number;
  segMax: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxWriteZeroesSectors: number;
  writeZeroesMayUnmap: boolean;
}): VirtioDeviceConfigSpace {
  const bytes = new Uint8Array(VIRTIO_BLK_CONFIG_SIZE);
  const v = new DataView(bytes.buffer);
  v.setBigUint64(0, BigInt(fields.capacity), true); // capacity
  v.setUint32(8, 0, true); // size_max (VIRTIO_BLK_F_SIZE_MAX not offered)
  v.setUint32(12, fields.segMax, true); // seg_max
  v.setUint32(20, SECTOR_SIZE, true); // blk_size
  v.setUint8(32, 1); // writeback: a host page cache sits behind us; FLUSH makes writes stable
  v.setUint16(34, fields.numQueues, true); // num_queues
  v.setUint32(36, fields.maxDiscardSectors, true); // max_discard_sectors
  v.setUint32(40, 1, true); // max_discard_seg
  v.setUint32(44, 1, true); // discard_sector_alignment (in 512-byte sectors)
  v.setUint32(48, fields.maxWriteZeroesSectors, true); // max_write_zeroes_sectors
  v.setUint32(52, 1, true); // max_write_zeroes_seg
  v.setUint8(56, fields.writeZeroesMayUnmap ? 1 : 0); // write_zeroes_may_unmap
  return {
    size: VIRTIO_BLK_CONFIG_SIZE,
    read: (offset, data) => data.set(bytes.subarray(offset, offset + data.length)),
  };
}

export class VirtioBlkPci extends VirtioPciDeviceBase<BlkInit, BlkLocal> {
  readonly typeName = 'virtio-blk-pci';
  private info: BlkInfo | undefined;
  private drive: BlkDriveOptions | undefined;

  constructor(
    id: string,
    readonly props: VirtioBlkProperties,
  ) {
    super(id, 'virtio-blk');
  }

  async realize(ctx: DeviceContext): Promise<void> {
    const p = this.props;
    if ((p['queue-size'] & (p['queue-size'] - 1)) !== 0) {
      throw new ConfigError(`${this.id}: queue-size=${p['queue-size']} must be a power of 2 (at most 1024)`);
    }
    const spec = ctx.drive(p.drive);
    const drive = parseBlkDrive(spec);
    this.drive = drive;
    const iothread = p.iothread ?? drive.iothread;
    let throttle: BlkInit['throttle'];
    if (drive.throttle !== undefined) {
      try {
        assertThrottlable({ id: this.id, drive: p.drive, ...(iothread !== undefined ? { iothread } : {}) });
        const { 'throttling.group': group, ...limits } = drive.throttle;
        throttle = { limits: parseThrottleOptions(limits), ...(group !== undefined ? { group } : {}) };
      } catch (err) {
        if (err instanceof ThrottleError || err instanceof ThrottleConfigError) throw new ConfigError(err.message, { cause: err });
        throw err;
      }
    }
    await ctx.plugins.loadAll('block-driver');
    const blockDrivers: PluginManifest[] = ctx.plugins
      .list()
      .filter((l) => l.manifest.kind === 'block-driver')
      .map((l) => l.manifest);
    const init: BlkInit = {
      id: this.id,
      driveId: p.drive,
      file: spec.file,
      format: spec.format,
      readOnly: drive.readOnly,
      discard: drive.discard,
      options: drive.options,
      serial: p.serial,
      maxDiscardSectors: p['max-discard-sectors'],
      maxWriteZeroesSectors: p['max-write-zeroes-sectors'],
      blockDrivers,
      ...(throttle !== undefined ? { throttle } : {}),
    };
    const numQueues = p['num-queues'];
    // The configuration space needs the disk's size, which the data plane learns when it opens the drive.
    let config: VirtioDeviceConfigSpace = { size: VIRTIO_BLK_CONFIG_SIZE, read: (_o, d) => d.fill(0) };
    const virtio = new VirtioCommon<BlkInit, BlkLocal>(ctx, {
      id: this.id,
      deviceType: VIRTIO_ID_BLOCK,
      queueMaxSizes: Array.from({ length: numQueues }, () => p['queue-size']),
      deviceFeatures: this.features(drive, numQueues),
      config: { size: VIRTIO_BLK_CONFIG_SIZE, read: (o, d) => config.read(o, d) },
      dataPlane: {
        factory: createBlkHandler,
        moduleUrl: new URL('./data-plane.js', import.meta.url).href,
        init,
        local: { registry: BlockDriverRegistry.fromContainer(ctx.plugins.container) },
        ...(iothread !== undefined ? { iothread } : {}),
      },
    });
    const pci = new VirtioPciTransport(ctx, virtio, {
      // PCI_CLASS_STORAGE_SCSI, as QEMU's virtio-blk-pci
      classCode: 0x0100,
      msixVectors: numQueues + 1,
      bus: p.bus,
      addr: p.addr,
      multifunction: p.multifunction,
    });
    try {
      await this.start(virtio, pci, (started) => {
        const info = started as BlkInfo;
        this.info = info;
        config = blkConfigSpace({
          capacity: Math.floor(info.size / SECTOR_SIZE),
          segMax: p['queue-size'] - 2,
          numQueues,
          maxDiscardSectors: p['max-discard-sectors'],
          maxWriteZeroesSectors: p['max-write-zeroes-sectors'],
          writeZeroesMayUnmap: drive.discard === 'unmap',
        });
        if (info.readOnly && !drive.readOnly) ctx.log.warn(`${this.id}: drive '${p.drive}' opened read-only`);
      });
    } catch (err) {
      throw new ConfigError(`${this.id}: drive '${p.drive}' (${spec.file}): ${(err as Error).message}`, { cause: err });
    }
  }

  private features(drive: BlkDriveOptions, numQueues: number): bigint {
    let f = featureBit(VIRTIO_BLK_F_SEG_MAX) | featureBit(VIRTIO_BLK_F_BLK_SIZE) | featureBit(VIRTIO_BLK_F_FLUSH);
    if (drive.readOnly) f |= featureBit(VIRTIO_BLK_F_RO);
    if (numQueues > 1) f |= featureBit(VIRTIO_BLK_F_MQ);
    if (this.props.discard) f |= featureBit(VIRTIO_BLK_F_DISCARD);
    if (this.props['write-zeroes']) f |= featureBit(VIRTIO_BLK_F_WRITE_ZEROES);
    return f;
  }

  describe(): Record<string, unknown> {
    return {
      drive: this.props.drive,
      'num-queues': this.props['num-queues'],
      'queue-size': this.props['queue-size'],
      ...(this.device?.virtio.iothread !== undefined ? { iothread: this.device.virtio.iothread } : {}),
      ...(this.info !== undefined ? { size: this.info.size, readonly: this.info.readOnly } : {}),
      ...(this.drive !== undefined ? { discard: this.drive.discard } : {}),
      ...this.addr,
    };
  }
}

export const virtioBlkPci = defineDeviceType({
  name: 'virtio-blk-pci',
  description: 'virtio block device (virtio 1.x PCI) on a --drive; queues on the main thread or an iothread',
  bus: 'pci',
  hotpluggable: false,
  properties: virtioBlkProperties,
  idPrefix: 'virtio-disk',
  create: (id, props) => new VirtioBlkPci(id, props),
});

export default devicePlugin(virtioBlkPci);
