/**
 * Creating VHD images (Microsoft "Virtual Hard Disk Image Format
 * Specification"; layout as qemu-img writes it so both tools agree):
 *
 *   fixed:         [data][footer]
 *   dynamic:       [footer copy][dynamic header (1 KiB)][BAT][footer]
 *   differencing:  [footer copy][dynamic header][BAT][parent locators][footer]
 *
 * Size: like qemu-img, the requested size is rounded up to the next CHS
 * geometry so that Virtual PC (which sizes by CHS) and everyone else (which
 * use Current Size) see the same disk; `force_size=on` keeps the exact size
 * and stores the maximum geometry, which makes every reader use Current Size.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { BlockOptionError, ImageFile, parseBool, parseSize, type BlockCreateOptions } from '@tsvmm/block';
import {
  CHS_MAX,
  DYNAMIC_COOKIE,
  DYNAMIC_HEADER_SIZE,
  DiskType,
  FEATURE_RESERVED,
  FILE_FORMAT_VERSION,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  HEADER_VERSION,
  NO_OFFSET,
  SECTOR,
  VHD_MAX_SECTORS,
  newUniqueId,
  serializeDynamicHeader,
  serializeFooter,
  sizeAndGeometryFor,
  vhdTimestamp,
  type Footer,
  type Geometry,
  type ParentLocatorEntry,
} from './structures.js';
import { VpcDevice } from './vpc-device.js';

export const DEFAULT_BLOCK_SIZE = 2 * 1024 * 1024;
/** Creator Application written by tsvmm (readers other than Virtual PC trust Current Size for it). */
export const CREATOR_APPLICATION = 'tsvm';
const CREATOR_VERSION = 0x00010000;
const CREATOR_HOST_OS = 'Wi2k';

const KNOWN_OPTIONS = ['subformat', 'force_size', 'block_size', 'backing_file', 'backing_fmt', 'size'];

export async function createVpc(opts: BlockCreateOptions): Promise<void> {
  for (const k of Object.keys(opts.options)) {
    if (!KNOWN_OPTIONS.includes(k)) {
      throw new BlockOptionError(k, `vpc does not take this option (vpc takes: ${KNOWN_OPTIONS.filter((o) => o !== 'size').join(', ')})`);
    }
  }
  const backing = opts.options['backing_file'];
  const subformat = opts.options['subformat'] ?? (backing !== undefined ? 'differencing' : 'dynamic');
  if (!['dynamic', 'fixed', 'differencing'].includes(subformat)) {
    throw new BlockOptionError('subformat', `'${subformat}' must be dynamic or fixed`);
  }
  if (backing !== undefined && subformat !== 'differencing' && subformat !== 'dynamic') {
    throw new BlockOptionError('backing_file', 'a parent image needs a differencing (dynamic) VHD, not a fixed one');
  }
  if (subformat === 'differencing' && backing === undefined) {
    throw new BlockOptionError('subformat', 'differencing needs backing_file');
  }
  const backingFmt = opts.options['backing_fmt'];
  if (backingFmt !== undefined && backingFmt !== 'vpc') {
    throw new BlockOptionError('backing_fmt', `the parent of a VHD differencing disk must be a VHD (vpc), not '${backingFmt}'`);
  }
  const forceSize = parseBool(opts.options['force_size'] ?? 'off', 'force_size');
  const blockSize = opts.options['block_size'] !== undefined ? parseSize(opts.options['block_size'], 'block_size') : DEFAULT_BLOCK_SIZE;
  if (blockSize < SECTOR || (blockSize & (blockSize - 1)) !== 0 || blockSize > 256 * 1024 * 1024) {
    throw new BlockOptionError('block_size', `${blockSize} must be a power of two between 512 B and 256 MiB`);
  }

  let parentInfo: { size: number; uniqueId: Uint8Array; mtime: number } | undefined;
  let size = opts.size;
  if (backing !== undefined) {
    const parentPath = path.isAbsolute(backing) ? backing : path.join(path.dirname(opts.filename), backing);
    const parent = await VpcDevice.open({ filename: parentPath, readOnly: true });
    try {
      parentInfo = { size: parent.size, uniqueId: parent.uniqueId, mtime: vhdTimestamp((await stat(parentPath)).mtime) };
    } finally {
      await parent.close();
    }
    // A differencing disk has the size of its parent.
    if (size === 0 || size === undefined) size = parentInfo.size;
    if (size !== parentInfo.size) {
      throw new BlockOptionError('size', `a differencing disk has its parent's size (${parentInfo.size}), not ${size}`);
    }
  }

  let geometry: Geometry;
  if (forceSize) {
    size = Math.ceil(size / SECTOR) * SECTOR;
    geometry = { ...CHS_MAX };
  } else if (parentInfo !== undefined) {
    // The parent's size is given: describe it exactly, or say "use Current Size".
    const g = sizeAndGeometryFor(size);
    geometry = g.size === size ? g.geometry : { ...CHS_MAX };
  } else {
    ({ size, geometry } = sizeAndGeometryFor(size));
  }
  if (size <= 0) throw new BlockOptionError('size', 'a VHD must be at least one sector (512 bytes)');
  if (subformat !== 'fixed' && size / SECTOR > VHD_MAX_SECTORS) {
    throw new BlockOptionError('size', `${size} bytes is beyond the 2040 GiB limit of dynamic VHDs`);
  }

  const footer: Footer = {
    cookie: FOOTER_COOKIE,
    features: FEATURE_RESERVED,
    fileFormatVersion: FILE_FORMAT_VERSION,
    dataOffset: subformat === 'fixed' ? NO_OFFSET : BigInt(FOOTER_SIZE),
    timeStamp: vhdTimestamp(),
    creatorApplication: CREATOR_APPLICATION,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: CREATOR_HOST_OS,
    originalSize: size,
    currentSize: size,
    diskGeometry: geometry,
    diskType: subformat === 'fixed' ? DiskType.Fixed : parentInfo !== undefined ? DiskType.Differencing : DiskType.Dynamic,
    checksum: 0,
    uniqueId: newUniqueId(),
    savedState: 0,
  };

  const file = await ImageFile.open(opts.filename, { create: true, truncate: true });
  try {
    if (subformat === 'fixed') {
      await file.truncate(size);
      await file.write(size, serializeFooter(footer));
    } else {
      const entries = Math.ceil(size / blockSize);
      const batOffset = FOOTER_SIZE + DYNAMIC_HEADER_SIZE;
      const batBytes = Math.ceil((entries * 4) / SECTOR) * SECTOR;
      const bat = new Uint8Array(batBytes).fill(0xff);
      let end = batOffset + batBytes;
      const locators: ParentLocatorEntry[] = [];
      const locatorData: Array<[number, Uint8Array]> = [];
      let parentName = '';
      if (parentInfo !== undefined && backing !== undefined) {
        const childDir = path.resolve(path.dirname(opts.filename));
        const parentAbs = path.isAbsolute(backing) ? backing : path.resolve(childDir, backing);
        let rel = path.relative(childDir, parentAbs);
        if (!rel.startsWith('..')) rel = `./${rel}`;
        parentName = path.basename(parentAbs);
        const entriesData: Array<[string, Uint8Array]> = [
          // W2ru: relative path, UTF-16LE, Windows separators (".\parent.vhd")
          ['W2ru', new Uint8Array(Buffer.from(rel.replace(/\//g, '\\'), 'utf16le'))],
          // MacX: absolute path as a file URL, UTF-8 (what Unix tools such as vhd-util write)
          ['MacX', new Uint8Array(Buffer.from(`file://${encodeURI(parentAbs)}`, 'utf8'))],
        ];
        for (const [code, data] of entriesData) {
          const space = Math.ceil(data.length / SECTOR) * SECTOR;
          locators.push({ platformCode: code, platformDataSpace: space, platformDataLength: data.length, platformDataOffset: end });
          locatorData.push([end, data]);
          end += space;
        }
      }
      const header = serializeDynamicHeader({
        cookie: DYNAMIC_COOKIE,
        dataOffset: NO_OFFSET,
        tableOffset: batOffset,
        headerVersion: HEADER_VERSION,
        maxTableEntries: entries,
        blockSize,
        checksum: 0,
        parentUniqueId: parentInfo?.uniqueId ?? new Uint8Array(16),
        parentTimeStamp: parentInfo?.mtime ?? 0,
        parentUnicodeName: parentName,
        parentLocatorEntries: locators,
      });
      const footerBytes = serializeFooter(footer);
      await file.write(0, footerBytes);
      await file.write(FOOTER_SIZE, header);
      await file.write(batOffset, bat);
      for (const [at, data] of locatorData) await file.write(at, data);
      await file.write(end, footerBytes);
    }
    await file.datasync();
  } finally {
    await file.close();
  }
}
