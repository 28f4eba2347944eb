/**
 * Creating VHDX files ([MS-VHDX] 2.1 layout). Everything 1 MiB aligned:
 *
 *   0       header section: file type identifier, header 1/2, region table 1/2
 *   1 MiB   log (log_size, default 1 MiB), empty (LogGuid zero)
 *   +       metadata region (1 MiB): table, then the items at 64 KiB
 *   +       BAT region (rounded up to 1 MiB)
 *   +       payload blocks (fixed: all of them, allocated now)
 *
 * Options follow qemu-img (subformat, block_size, log_size, block_state_zero)
 * plus backing_file for differencing files, which qemu-img cannot create.
 */
import path from 'node:path';
import { BlockOptionError, ImageFile, parseBool, parseSize, type BlockCreateOptions } from '@tsvmm/block';
import { guidToString, newGuid, ZERO_GUID } from './guid.js';
import {
  BAT_REGION_GUID,
  FILE_PARAMETERS_GUID,
  FILE_SIGNATURE,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_SECTION_SIZE,
  LOGICAL_SECTOR_SIZE_GUID,
  MAX_VIRTUAL_DISK_SIZE,
  METADATA_REGION_GUID,
  METADATA_TABLE_SIZE,
  MiB,
  PARENT_LOCATOR_GUID,
  PHYSICAL_SECTOR_SIZE_GUID,
  PayloadState,
  REGION_TABLE1_OFFSET,
  REGION_TABLE2_OFFSET,
  VHDX_PARENT_LOCATOR_TYPE,
  VIRTUAL_DISK_ID_GUID,
  VIRTUAL_DISK_SIZE_GUID,
  batEntriesFor,
  chunkRatio,
  payloadBatIndex,
  serializeHeader,
  serializeMetadataTable,
  serializeRegionTable,
  setBatEntry,
  utf16le,
  type MetadataEntry,
} from './structures.js';
import { VhdxDevice } from './vhdx-device.js';

const KNOWN_OPTIONS = ['subformat', 'block_size', 'log_size', 'block_state_zero', 'logical_sector_size', 'backing_file', 'backing_fmt', 'size'];
const CREATOR = 'tsvmm';

/** qemu-img's automatic block size (block/vhdx.c): larger disks, larger blocks. */
export function defaultBlockSize(size: number): number {
  if (size > 32 * 1024 * 1024 * MiB) return 64 * MiB;
  if (size > 100 * 1024 * MiB) return 32 * MiB;
  if (size > 1024 * MiB) return 16 * MiB;
  return 8 * MiB;
}

function parentLocatorItem(entries: Array<[string, string]>): Uint8Array {
  const keys = entries.map(([k, v]) => [utf16le(k), utf16le(v)] as const);
  const tableEnd = 20 + entries.length * 12;
  const total = tableEnd + keys.reduce((a, [k, v]) => a + k.length + v.length, 0);
  const b = new Uint8Array(total);
  const view = new DataView(b.buffer);
  b.set(VHDX_PARENT_LOCATOR_TYPE, 0);
  view.setUint16(18, entries.length, true);
  let at = tableEnd;
  keys.forEach(([k, v], i) => {
    const o = 20 + i * 12;
    view.setUint32(o, at, true);
    b.set(k, at);
    at += k.length;
    view.setUint32(o + 4, at, true);
    b.set(v, at);
    at += v.length;
    view.setUint16(o + 8, k.length, true);
    view.setUint16(o + 10, v.length, true);
  });
  return b;
}

export async function createVhdx(opts: BlockCreateOptions): Promise<void> {
  for (const k of Object.keys(opts.options)) {
    if (!KNOWN_OPTIONS.includes(k)) {
      throw new BlockOptionError(k, `vhdx does not take this option (vhdx takes: ${KNOWN_OPTIONS.filter((o) => o !== 'size').join(', ')})`);
    }
  }
  const backing = opts.options['backing_file'];
  const subformat = opts.options['subformat'] ?? (backing !== undefined ? 'differencing' : 'dynamic');
  if (!['dynamic', 'fixed', 'differencing'].includes(subformat)) throw new BlockOptionError('subformat', `'${subformat}' must be dynamic or fixed`);
  if (backing !== undefined && subformat === 'fixed') throw new BlockOptionError('backing_file', 'a differencing file cannot be fixed');
  if (subformat === 'differencing' && backing === undefined) throw new BlockOptionError('subformat', 'differencing needs backing_file');
  const backingFmt = opts.options['backing_fmt'];
  if (backingFmt !== undefined && backingFmt !== 'vhdx') throw new BlockOptionError('backing_fmt', `the parent of a VHDX differencing file must be VHDX, not '${backingFmt}'`);

  let logicalSectorSize = Number(opts.options['logical_sector_size'] ?? '512');
  let size = opts.size;
  let parentLinkage: string | undefined;
  let relative: string | undefined;
  if (backing !== undefined) {
    const parentPath = path.isAbsolute(backing) ? backing : path.join(path.dirname(opts.filename), backing);
    const parent = await VhdxDevice.open({ filename: parentPath, readOnly: true });
    try {
      if (size === 0 || size === undefined) size = parent.size;
      if (size !== parent.size) throw new BlockOptionError('size', `a differencing file has its parent's size (${parent.size}), not ${size}`);
      logicalSectorSize = parent.params.logicalSectorSize;
      parentLinkage = `{${guidToString(parent.dataWriteGuid).toLowerCase()}}`;
    } finally {
      await parent.close();
    }
    const childDir = path.resolve(path.dirname(opts.filename));
    let rel = path.relative(childDir, path.resolve(childDir, backing));
    if (!rel.startsWith('..')) rel = `./${rel}`;
    relative = rel.replace(/\//g, '\\');
  }
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw new BlockOptionError('logical_sector_size', 'must be 512 or 4096');
  size = Math.ceil(size / logicalSectorSize) * logicalSectorSize;
  if (size <= 0 || size > MAX_VIRTUAL_DISK_SIZE) throw new BlockOptionError('size', `${size} must be between one sector and 64 TiB`);

  const hasParent = backing !== undefined;
  const blockSize = opts.options['block_size'] !== undefined && parseSize(opts.options['block_size'], 'block_size') !== 0
    ? parseSize(opts.options['block_size'], 'block_size')
    : hasParent ? 2 * MiB : defaultBlockSize(size);
  if (blockSize < MiB || blockSize > 256 * MiB || (blockSize & (blockSize - 1)) !== 0) {
    throw new BlockOptionError('block_size', `${blockSize} must be a power of two between 1 MiB and 256 MiB`);
  }
  const logSize = opts.options['log_size'] !== undefined ? parseSize(opts.options['log_size'], 'log_size') : MiB;
  if (logSize < MiB || logSize % MiB !== 0 || logSize > 256 * MiB) throw new BlockOptionError('log_size', `${logSize} must be a multiple of 1 MiB between 1 MiB and 256 MiB`);
  const blockStateZero = parseBool(opts.options['block_state_zero'] ?? 'on', 'block_state_zero');
  const fixed = subformat === 'fixed';

  const logOffset = HEADER_SECTION_SIZE;
  const metadataOffset = logOffset + logSize;
  const metadataLength = MiB;
  const batOffset = metadataOffset + metadataLength;
  const entries = batEntriesFor(size, blockSize, logicalSectorSize, hasParent);
  const batLength = Math.ceil((entries * 8) / MiB) * MiB;
  const dataOffset = batOffset + batLength;

  const bat = new Uint8Array(entries * 8);
  const batView = new DataView(bat.buffer);
  const ratio = chunkRatio(blockSize, logicalSectorSize);
  const blocks = Math.ceil(size / blockSize);
  let fileEnd = dataOffset;
  for (let i = 0; i < blocks; i++) {
    if (fixed) {
      setBatEntry(batView, payloadBatIndex(i, ratio), PayloadState.FullyPresent, fileEnd / MiB);
      fileEnd += blockSize;
    } else if (!hasParent && blockStateZero) {
      setBatEntry(batView, payloadBatIndex(i, ratio), PayloadState.Zero, 0);
    }
  }

  // 2.6.2 metadata items
  const items: Array<{ id: Uint8Array; data: Uint8Array; virtualDisk: boolean }> = [];
  const fp = new Uint8Array(8);
  new DataView(fp.buffer).setUint32(0, blockSize, true);
  new DataView(fp.buffer).setUint32(4, (fixed ? 1 : 0) | (hasParent ? 2 : 0), true);
  items.push({ id: FILE_PARAMETERS_GUID, data: fp, virtualDisk: false });
  const vs = new Uint8Array(8);
  new DataView(vs.buffer).setUint32(0, size % 0x100000000, true);
  new DataView(vs.buffer).setUint32(4, Math.floor(size / 0x100000000), true);
  items.push({ id: VIRTUAL_DISK_SIZE_GUID, data: vs, virtualDisk: true });
  items.push({ id: VIRTUAL_DISK_ID_GUID, data: newGuid(), virtualDisk: true });
  const ls = new Uint8Array(4);
  new DataView(ls.buffer).setUint32(0, logicalSectorSize, true);
  items.push({ id: LOGICAL_SECTOR_SIZE_GUID, data: ls, virtualDisk: true });
  const ps = new Uint8Array(4);
  new DataView(ps.buffer).setUint32(0, logicalSectorSize, true);
  items.push({ id: PHYSICAL_SECTOR_SIZE_GUID, data: ps, virtualDisk: true });
  if (hasParent && parentLinkage !== undefined && relative !== undefined) {
    items.push({ id: PARENT_LOCATOR_GUID, data: parentLocatorItem([['parent_linkage', parentLinkage], ['relative_path', relative]]), virtualDisk: false });
  }
  const mdEntries: MetadataEntry[] = [];
  const mdRegion = new Uint8Array(metadataLength);
  let at = METADATA_TABLE_SIZE;
  for (const it of items) {
    mdEntries.push({ itemId: it.id, offset: at, length: it.data.length, isUser: false, isVirtualDisk: it.virtualDisk, isRequired: true });
    mdRegion.set(it.data, at);
    at += Math.ceil(it.data.length / 8) * 8;
  }
  mdRegion.set(serializeMetadataTable(mdEntries), 0);

  const ident = new Uint8Array(64 * 1024);
  for (let i = 0; i < 8; i++) ident[i] = FILE_SIGNATURE.charCodeAt(i);
  ident.set(utf16le(CREATOR), 8);
  const header = {
    signature: 0,
    checksum: 0,
    sequenceNumber: 1n,
    fileWriteGuid: newGuid(),
    dataWriteGuid: newGuid(),
    logGuid: ZERO_GUID,
    logVersion: 0,
    version: 1,
    logLength: logSize,
    logOffset,
  };
  const regions = serializeRegionTable([
    { guid: BAT_REGION_GUID, fileOffset: batOffset, length: batLength, required: true },
    { guid: METADATA_REGION_GUID, fileOffset: metadataOffset, length: metadataLength, required: true },
  ]);

  const file = await ImageFile.open(opts.filename, { create: true, truncate: true });
  try {
    await file.write(0, ident);
    await file.write(HEADER1_OFFSET, serializeHeader({ ...header }));
    await file.write(HEADER2_OFFSET, serializeHeader({ ...header, sequenceNumber: 2n }));
    await file.write(REGION_TABLE1_OFFSET, regions);
    await file.write(REGION_TABLE2_OFFSET, regions);
    await file.write(metadataOffset, mdRegion);
    await file.write(batOffset, bat);
    // the log and the payload of a fixed file read as zero: extend sparsely
    await file.truncate(Math.max(fileEnd, batOffset + batLength));
    await file.datasync();
  } finally {
    await file.close();
  }
}
