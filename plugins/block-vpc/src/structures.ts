/**
 * On-disk structures of the VHD format, per Microsoft's "Virtual Hard Disk
 * Image Format Specification" (October 2006, v1.0): "Hard Disk Footer
 * Format", "Dynamic Disk Header Format", "Block Allocation Table and Data
 * Blocks", "Appendix: CHS Calculation". All fields are big-endian.
 *
 * Field names follow the spec (camel-cased). Parsing never trusts a field:
 * callers get typed values and validate ranges against the file.
 */
import { randomBytes } from 'node:crypto';

export const SECTOR = 512;
export const FOOTER_SIZE = 512;
export const DYNAMIC_HEADER_SIZE = 1024;
export const FOOTER_COOKIE = 'conectix';
export const DYNAMIC_COOKIE = 'cxsparse';
/** "Data Offset" of a fixed disk, and the header's unused "Data Offset" */
export const NO_OFFSET = 0xffffffffffffffffn;
/** BAT entry of a block that is not allocated */
export const BAT_UNUSED = 0xffffffff;
export const FILE_FORMAT_VERSION = 0x00010000;
export const HEADER_VERSION = 0x00010000;
/** "Features": bit 1 is reserved and must always be set */
export const FEATURE_RESERVED = 0x2;

export enum DiskType {
  None = 0,
  Fixed = 2,
  Dynamic = 3,
  Differencing = 4,
}

/** Seconds between the Unix epoch and the VHD epoch (2000-01-01 00:00:00 UTC). */
export const VHD_EPOCH_OFFSET = 946684800;

/** Largest CHS the footer can hold (cylinders 65535, heads 16, sectors 255). */
export const CHS_MAX = { cylinders: 65535, heads: 16, sectorsPerTrack: 255 } as const;
export const CHS_MAX_SECTORS = 65535 * 16 * 255;
/** QEMU's VHD_MAX_SECTORS: 2040 GiB, the largest dynamic disk the BAT layout allows in practice */
export const VHD_MAX_SECTORS = 0xff000000;

export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

export interface Footer {
  cookie: string;
  features: number;
  fileFormatVersion: number;
  dataOffset: bigint;
  timeStamp: number;
  creatorApplication: string;
  creatorVersion: number;
  creatorHostOs: string;
  originalSize: number;
  currentSize: number;
  diskGeometry: Geometry;
  diskType: number;
  checksum: number;
  uniqueId: Uint8Array;
  savedState: number;
}

export interface ParentLocatorEntry {
  platformCode: string;
  platformDataSpace: number;
  platformDataLength: number;
  platformDataOffset: number;
}

export interface DynamicHeader {
  cookie: string;
  dataOffset: bigint;
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Uint8Array;
  parentTimeStamp: number;
  parentUnicodeName: string;
  parentLocatorEntries: ParentLocatorEntry[];
}

function ascii(b: Uint8Array, off: number, len: number): string {
  return String.fromCharCode(...b.subarray(off, off + len));
}

function putAscii(b: Uint8Array, off: number, len: number, s: string): void {
  for (let i = 0; i < len; i++) b[off + i] = i < s.length ? s.charCodeAt(i) & 0xff : 0;
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** A u64 field as a number, or Infinity when it exceeds 2^53 (no valid file offset does). */
function u64(v: DataView, off: number): number {
  const x = v.getBigUint64(off);
  return x > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(x);
}

/** The spec's checksum: one's complement of the byte sum, checksum field taken as zero. */
export function vhdChecksum(b: Uint8Array, checksumOffset: number): number {
  let sum = 0;
  for (let i = 0; i < b.length; i++) {
    if (i >= checksumOffset && i < checksumOffset + 4) continue;
    sum = (sum + (b[i] ?? 0)) >>> 0;
  }
  return ~sum >>> 0;
}

export const FOOTER_CHECKSUM_OFFSET = 64;
export const HEADER_CHECKSUM_OFFSET = 36;

export function parseFooter(b: Uint8Array): Footer {
  const v = dv(b);
  return {
    cookie: ascii(b, 0, 8),
    features: v.getUint32(8),
    fileFormatVersion: v.getUint32(12),
    dataOffset: v.getBigUint64(16),
    timeStamp: v.getUint32(24),
    creatorApplication: ascii(b, 28, 4),
    creatorVersion: v.getUint32(32),
    creatorHostOs: ascii(b, 36, 4),
    originalSize: u64(v, 40),
    currentSize: u64(v, 48),
    diskGeometry: { cylinders: v.getUint16(56), heads: v.getUint8(58), sectorsPerTrack: v.getUint8(59) },
    diskType: v.getUint32(60),
    checksum: v.getUint32(64),
    uniqueId: b.slice(68, 84),
    savedState: v.getUint8(84),
  };
}

export function serializeFooter(f: Footer): Uint8Array {
  const b = new Uint8Array(FOOTER_SIZE);
  const v = dv(b);
  putAscii(b, 0, 8, f.cookie);
  v.setUint32(8, f.features);
  v.setUint32(12, f.fileFormatVersion);
  v.setBigUint64(16, f.dataOffset);
  v.setUint32(24, f.timeStamp);
  putAscii(b, 28, 4, f.creatorApplication);
  v.setUint32(32, f.creatorVersion);
  putAscii(b, 36, 4, f.creatorHostOs);
  v.setBigUint64(40, BigInt(f.originalSize));
  v.setBigUint64(48, BigInt(f.currentSize));
  v.setUint16(56, f.diskGeometry.cylinders);
  v.setUint8(58, f.diskGeometry.heads);
  v.setUint8(59, f.diskGeometry.sectorsPerTrack);
  v.setUint32(60, f.diskType);
  b.set(f.uniqueId.subarray(0, 16), 68);
  v.setUint8(84, f.savedState);
  f.checksum = vhdChecksum(b, FOOTER_CHECKSUM_OFFSET);
  v.setUint32(64, f.checksum);
  return b;
}

export function parseDynamicHeader(b: Uint8Array): DynamicHeader {
  const v = dv(b);
  const nameBytes = b.subarray(64, 64 + 512);
  let name = '';
  for (let i = 0; i + 1 < nameBytes.length; i += 2) {
    const c = ((nameBytes[i] ?? 0) << 8) | (nameBytes[i + 1] ?? 0);
    if (c === 0) break;
    name += String.fromCharCode(c);
  }
  const parentLocatorEntries: ParentLocatorEntry[] = [];
  for (let i = 0; i < 8; i++) {
    const o = 576 + i * 24;
    parentLocatorEntries.push({
      platformCode: ascii(b, o, 4),
      platformDataSpace: v.getUint32(o + 4),
      platformDataLength: v.getUint32(o + 8),
      platformDataOffset: u64(v, o + 16),
    });
  }
  return {
    cookie: ascii(b, 0, 8),
    dataOffset: v.getBigUint64(8),
    tableOffset: u64(v, 16),
    headerVersion: v.getUint32(24),
    maxTableEntries: v.getUint32(28),
    blockSize: v.getUint32(32),
    checksum: v.getUint32(36),
    parentUniqueId: b.slice(40, 56),
    parentTimeStamp: v.getUint32(56),
    parentUnicodeName: name,
    parentLocatorEntries,
  };
}

export function serializeDynamicHeader(h: DynamicHeader): Uint8Array {
  const b = new Uint8Array(DYNAMIC_HEADER_SIZE);
  const v = dv(b);
  putAscii(b, 0, 8, h.cookie);
  v.setBigUint64(8, h.dataOffset);
  v.setBigUint64(16, BigInt(h.tableOffset));
  v.setUint32(24, h.headerVersion);
  v.setUint32(28, h.maxTableEntries);
  v.setUint32(32, h.blockSize);
  b.set(h.parentUniqueId.subarray(0, 16), 40);
  v.setUint32(56, h.parentTimeStamp);
  // Parent Unicode Name: UTF-16 big-endian, at most 256 code units
  for (let i = 0; i < Math.min(h.parentUnicodeName.length, 256); i++) {
    v.setUint16(64 + i * 2, h.parentUnicodeName.charCodeAt(i));
  }
  h.parentLocatorEntries.slice(0, 8).forEach((e, i) => {
    const o = 576 + i * 24;
    putAscii(b, o, 4, e.platformCode);
    v.setUint32(o + 4, e.platformDataSpace);
    v.setUint32(o + 8, e.platformDataLength);
    v.setBigUint64(o + 16, BigInt(e.platformDataOffset));
  });
  h.checksum = vhdChecksum(b, HEADER_CHECKSUM_OFFSET);
  v.setUint32(36, h.checksum);
  return b;
}

/** Appendix "CHS Calculation" (as QEMU's calculate_geometry implements it). */
export function chsForSectors(totalSectorsIn: number): Geometry {
  const totalSectors = Math.min(totalSectorsIn, CHS_MAX_SECTORS);
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.max(4, Math.ceil(cylinderTimesHeads / 1024));
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

export function geometrySectors(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack;
}

/**
 * qemu-img's sizing rule for a new image: the smallest CHS geometry holding at
 * least the requested size, and that geometry's size as the disk size, so
 * readers that trust CHS and readers that trust Current Size agree.
 * Beyond the CHS range (about 127 GiB) the maximum geometry is stored and
 * Current Size carries the exact size, which every reader honours.
 */
export function sizeAndGeometryFor(requestedBytes: number): { size: number; geometry: Geometry } {
  const wanted = Math.ceil(requestedBytes / SECTOR);
  let g = chsForSectors(wanted);
  for (let i = 1; geometrySectors(g) < wanted && geometrySectors(g) < CHS_MAX_SECTORS; i++) {
    g = chsForSectors(wanted + i);
  }
  if (geometrySectors(g) >= CHS_MAX_SECTORS || geometrySectors(g) < wanted) {
    return { size: wanted * SECTOR, geometry: { ...CHS_MAX } };
  }
  return { size: geometrySectors(g) * SECTOR, geometry: g };
}

/**
 * Which size field a reader trusts (QEMU block/vpc.c vpc_ignore_current_size):
 * Virtual PC ("vpc ") and old QEMU ("qemu") size disks by CHS; everything
 * else (Hyper-V "win ", Disk2vhd "d2v ", XenServer "tap\0", Azure "wa\0\0",
 * "qem2", tsvmm) by Current Size. A footer holding the maximum CHS means the
 * size did not fit in CHS, so Current Size wins whoever wrote it.
 */
export function virtualSizeOf(f: Footer): number {
  const chsBytes = geometrySectors(f.diskGeometry) * SECTOR;
  const isMaxChs =
    f.diskGeometry.cylinders === CHS_MAX.cylinders &&
    f.diskGeometry.heads === CHS_MAX.heads &&
    f.diskGeometry.sectorsPerTrack === CHS_MAX.sectorsPerTrack;
  const trustsChs = f.creatorApplication === 'vpc ' || f.creatorApplication === 'qemu';
  if (trustsChs && !isMaxChs) return chsBytes;
  return f.currentSize;
}

export function vhdTimestamp(date: Date = new Date()): number {
  return Math.max(0, Math.floor(date.getTime() / 1000) - VHD_EPOCH_OFFSET) >>> 0;
}

export function newUniqueId(): Uint8Array {
  return new Uint8Array(randomBytes(16));
}

/** Sector bitmap size in bytes for a block size: one bit per sector, padded to a sector. */
export function bitmapSizeFor(blockSize: number): number {
  const bytes = Math.ceil(blockSize / SECTOR / 8);
  return Math.ceil(bytes / SECTOR) * SECTOR;
}

/** Sector bitmaps are most-significant-bit first: sector 0 is bit 7 of byte 0. */
export function bitmapTest(bm: Uint8Array, sector: number): boolean {
  return (((bm[sector >> 3] ?? 0) >> (7 - (sector & 7))) & 1) === 1;
}

export function bitmapSet(bm: Uint8Array, sector: number): void {
  const i = sector >> 3;
  bm[i] = (bm[i] ?? 0) | (0x80 >> (sector & 7));
}

/** Length of the run of sectors from `start` (below `end`) whose bit equals `value`. */
export function bitmapRun(bm: Uint8Array, start: number, end: number, value: boolean): number {
  let s = start;
  while (s < end) {
    // whole bytes at once when aligned: 0x00 / 0xff
    if ((s & 7) === 0 && s + 8 <= end) {
      const byte = bm[s >> 3] ?? 0;
      if (byte === (value ? 0xff : 0x00)) {
        s += 8;
        continue;
      }
    }
    if (bitmapTest(bm, s) !== value) break;
    s++;
  }
  return s - start;
}
