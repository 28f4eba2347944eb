/**
 * On-disk structures of VHDX, per [MS-VHDX] "Virtual Hard Disk v2 (VHDX) File
 * Format": 2.1 layout, 2.2.1 File Type Identifier, 2.2.2 Headers, 2.2.3
 * Region Table, 2.3 Log (2.3.1.1 entry header, 2.3.1.2 zero descriptor,
 * 2.3.1.3 data descriptor, 2.3.1.4 data sector), 2.5 BAT, 2.6 Metadata
 * Region (2.6.1 table, 2.6.2 known items). All integers are little-endian.
 * Field names are the spec's.
 */
import { vhdxChecksum } from './crc32c.js';
import { type Guid, guidFromString } from './guid.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;

// 2.1: the header section is the first 1 MiB
export const FILE_IDENTIFIER_OFFSET = 0;
export const HEADER1_OFFSET = 64 * KiB;
export const HEADER2_OFFSET = 128 * KiB;
export const REGION_TABLE1_OFFSET = 192 * KiB;
export const REGION_TABLE2_OFFSET = 256 * KiB;
export const HEADER_SECTION_SIZE = MiB;
export const HEADER_SIZE = 4 * KiB;
export const REGION_TABLE_SIZE = 64 * KiB;

export const FILE_SIGNATURE = 'vhdxfile';
export const HEADER_SIGNATURE = 0x64616568; // "head"
export const REGION_SIGNATURE = 0x69676572; // "regi"
export const METADATA_SIGNATURE = 'metadata';
export const LOG_ENTRY_SIGNATURE = 0x65676f6c; // "loge"
export const ZERO_DESC_SIGNATURE = 0x6f72657a; // "zero"
export const DATA_DESC_SIGNATURE = 0x63736564; // "desc"
export const DATA_SECTOR_SIGNATURE = 0x61746164; // "data"

export const LOG_SECTOR = 4 * KiB;
export const LOG_ENTRY_HEADER_SIZE = 64;
export const LOG_DESCRIPTOR_SIZE = 32;

// 2.2.3.2 region GUIDs
export const BAT_REGION_GUID = guidFromString('2DC27766-F623-4200-9D64-115E9BFD4A08');
export const METADATA_REGION_GUID = guidFromString('8B7CA206-4790-4B9A-B8FE-575F050F886E');

// 2.6.2 metadata item GUIDs
export const FILE_PARAMETERS_GUID = guidFromString('CAA16737-FA36-4D43-B3B6-33F0AA44E76B');
export const VIRTUAL_DISK_SIZE_GUID = guidFromString('2FA54224-CD1B-4876-B211-5DBED83BF4B8');
export const VIRTUAL_DISK_ID_GUID = guidFromString('BECA12AB-B2E6-4523-93EF-C309E000C746');
export const LOGICAL_SECTOR_SIZE_GUID = guidFromString('8141BF1D-A96F-4709-BA47-F233A8FAAB5F');
export const PHYSICAL_SECTOR_SIZE_GUID = guidFromString('CDA348C7-445D-4471-9CC9-E9885251C556');
export const PARENT_LOCATOR_GUID = guidFromString('A8D35F2D-B30B-454D-ABF7-D3D84834AB0C');
// 2.6.2.6.3 the VHDX parent locator type
export const VHDX_PARENT_LOCATOR_TYPE = guidFromString('B04AEFB7-D19E-4A81-B789-25B8E9445913');

// 2.5.1.1 payload block states / 2.5.1.2 sector bitmap block states
export enum PayloadState {
  NotPresent = 0,
  Undefined = 1,
  Zero = 2,
  Unmapped = 3,
  /** the 0.95 draft's value for UNMAPPED, still found in old files (QEMU reads it as zero too) */
  UnmappedV095 = 5,
  FullyPresent = 6,
  PartiallyPresent = 7,
}
export const SB_BLOCK_NOT_PRESENT = 0;
export const SB_BLOCK_PRESENT = 6;

/** 2.6.2.4: 2^23 sectors per sector bitmap block (1 MiB of bits) */
export const SECTORS_PER_BITMAP = 1 << 23;
export const SECTOR_BITMAP_BLOCK_SIZE = MiB;
export const MAX_VIRTUAL_DISK_SIZE = 64 * 1024 * 1024 * MiB; // 64 TiB

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** A u64 as a number; Infinity when it exceeds 2^53 (no offset we accept does). */
export function u64(v: DataView, off: number): number {
  const lo = v.getUint32(off, true);
  const hi = v.getUint32(off + 4, true);
  return hi >= 0x200000 ? Infinity : hi * 0x100000000 + lo;
}

export function putU64(v: DataView, off: number, x: number): void {
  v.setUint32(off, x % 0x100000000, true);
  v.setUint32(off + 4, Math.floor(x / 0x100000000), true);
}

// ---- 2.2.2 header -------------------------------------------------------------

export interface VhdxHeader {
  signature: number;
  checksum: number;
  sequenceNumber: bigint;
  fileWriteGuid: Guid;
  dataWriteGuid: Guid;
  logGuid: Guid;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

export function parseHeader(b: Uint8Array): VhdxHeader {
  const v = dv(b);
  return {
    signature: v.getUint32(0, true),
    checksum: v.getUint32(4, true),
    sequenceNumber: v.getBigUint64(8, true),
    fileWriteGuid: b.slice(16, 32),
    dataWriteGuid: b.slice(32, 48),
    logGuid: b.slice(48, 64),
    logVersion: v.getUint16(64, true),
    version: v.getUint16(66, true),
    logLength: v.getUint32(68, true),
    logOffset: u64(v, 72),
  };
}

export function serializeHeader(h: VhdxHeader): Uint8Array {
  const b = new Uint8Array(HEADER_SIZE);
  const v = dv(b);
  v.setUint32(0, HEADER_SIGNATURE, true);
  v.setBigUint64(8, h.sequenceNumber, true);
  b.set(h.fileWriteGuid, 16);
  b.set(h.dataWriteGuid, 32);
  b.set(h.logGuid, 48);
  v.setUint16(64, h.logVersion, true);
  v.setUint16(66, h.version, true);
  v.setUint32(68, h.logLength, true);
  putU64(v, 72, h.logOffset);
  h.checksum = vhdxChecksum(b, 4);
  v.setUint32(4, h.checksum, true);
  return b;
}

// ---- 2.2.3 region table ----------------------------------------------------------

export interface RegionEntry {
  guid: Guid;
  fileOffset: number;
  length: number;
  required: boolean;
}

export interface RegionTable {
  signature: number;
  checksum: number;
  entryCount: number;
  entries: RegionEntry[];
}

export const MAX_REGION_ENTRIES = 2047;

export function parseRegionTable(b: Uint8Array): RegionTable {
  const v = dv(b);
  const entryCount = v.getUint32(8, true);
  const entries: RegionEntry[] = [];
  for (let i = 0; i < Math.min(entryCount, MAX_REGION_ENTRIES); i++) {
    const o = 16 + i * 32;
    entries.push({
      guid: b.slice(o, o + 16),
      fileOffset: u64(v, o + 16),
      length: v.getUint32(o + 24, true),
      required: (v.getUint32(o + 28, true) & 1) === 1,
    });
  }
  return { signature: v.getUint32(0, true), checksum: v.getUint32(4, true), entryCount, entries };
}

export function serializeRegionTable(entries: RegionEntry[]): Uint8Array {
  const b = new Uint8Array(REGION_TABLE_SIZE);
  const v = dv(b);
  v.setUint32(0, REGION_SIGNATURE, true);
  v.setUint32(8, entries.length, true);
  entries.forEach((e, i) => {
    const o = 16 + i * 32;
    b.set(e.guid, o);
    putU64(v, o + 16, e.fileOffset);
    v.setUint32(o + 24, e.length, true);
    v.setUint32(o + 28, e.required ? 1 : 0, true);
  });
  v.setUint32(4, vhdxChecksum(b, 4), true);
  return b;
}

// ---- 2.6.1 metadata table ----------------------------------------------------------

export interface MetadataEntry {
  itemId: Guid;
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

export const METADATA_TABLE_SIZE = 64 * KiB;
export const MAX_METADATA_ENTRIES = 2047;

export function parseMetadataTable(b: Uint8Array): { signature: string; entryCount: number; entries: MetadataEntry[] } {
  const v = dv(b);
  const signature = String.fromCharCode(...b.subarray(0, 8));
  const entryCount = v.getUint16(10, true);
  const entries: MetadataEntry[] = [];
  for (let i = 0; i < Math.min(entryCount, MAX_METADATA_ENTRIES); i++) {
    const o = 32 + i * 32;
    const flags = v.getUint32(o + 24, true);
    entries.push({
      itemId: b.slice(o, o + 16),
      offset: v.getUint32(o + 16, true),
      length: v.getUint32(o + 20, true),
      isUser: (flags & 1) !== 0,
      isVirtualDisk: (flags & 2) !== 0,
      isRequired: (flags & 4) !== 0,
    });
  }
  return { signature, entryCount, entries };
}

export function serializeMetadataTable(entries: MetadataEntry[]): Uint8Array {
  const b = new Uint8Array(METADATA_TABLE_SIZE);
  const v = dv(b);
  for (let i = 0; i < 8; i++) b[i] = METADATA_SIGNATURE.charCodeAt(i);
  v.setUint16(10, entries.length, true);
  entries.forEach((e, i) => {
    const o = 32 + i * 32;
    b.set(e.itemId, o);
    v.setUint32(o + 16, e.offset, true);
    v.setUint32(o + 20, e.length, true);
    v.setUint32(o + 24, (e.isUser ? 1 : 0) | (e.isVirtualDisk ? 2 : 0) | (e.isRequired ? 4 : 0), true);
  });
  return b;
}

// ---- 2.5 BAT ---------------------------------------------------------------------

/** 2.5: chunk ratio = (2^23 * LogicalSectorSize) / BlockSize */
export function chunkRatio(blockSize: number, logicalSectorSize: number): number {
  return (SECTORS_PER_BITMAP * logicalSectorSize) / blockSize;
}

/** BAT entries needed for a disk (2.5: payload entries interleaved with one sector bitmap entry per chunk). */
export function batEntriesFor(virtualDiskSize: number, blockSize: number, logicalSectorSize: number, hasParent: boolean): number {
  const ratio = chunkRatio(blockSize, logicalSectorSize);
  const payloadBlocks = Math.ceil(virtualDiskSize / blockSize);
  const sectorBitmapBlocks = Math.ceil(payloadBlocks / ratio);
  if (hasParent) return sectorBitmapBlocks * (ratio + 1);
  return payloadBlocks + Math.floor((payloadBlocks - 1) / ratio);
}

/** BAT index of payload block `i`. */
export function payloadBatIndex(i: number, ratio: number): number {
  return i + Math.floor(i / ratio);
}

/** BAT index of the sector bitmap entry of chunk `c`. */
export function bitmapBatIndex(c: number, ratio: number): number {
  return c * (ratio + 1) + ratio;
}

/** BAT entry: State in bits 0-2, FileOffsetMB in bits 20-63. */
export function batEntryState(bat: DataView, index: number): number {
  return bat.getUint32(index * 8, true) & 7;
}

export function batEntryOffsetMB(bat: DataView, index: number): number {
  return (bat.getUint32(index * 8, true) >>> 20) + bat.getUint32(index * 8 + 4, true) * 4096;
}

export function setBatEntry(bat: DataView, index: number, state: number, offsetMB: number): void {
  bat.setUint32(index * 8, ((offsetMB % 4096) << 20) | (state & 7), true);
  bat.setUint32(index * 8 + 4, Math.floor(offsetMB / 4096), true);
}

// ---- 2.3 log ------------------------------------------------------------------------

export interface LogEntryHeader {
  signature: number;
  checksum: number;
  entryLength: number;
  tail: number;
  sequenceNumber: bigint;
  descriptorCount: number;
  logGuid: Guid;
  flushedFileOffset: number;
  lastFileOffset: number;
}

export function parseLogEntryHeader(b: Uint8Array): LogEntryHeader {
  const v = dv(b);
  return {
    signature: v.getUint32(0, true),
    checksum: v.getUint32(4, true),
    entryLength: v.getUint32(8, true),
    tail: v.getUint32(12, true),
    sequenceNumber: v.getBigUint64(16, true),
    descriptorCount: v.getUint32(24, true),
    logGuid: b.slice(32, 48),
    flushedFileOffset: u64(v, 48),
    lastFileOffset: u64(v, 56),
  };
}

export function writeLogEntryHeader(b: Uint8Array, h: Omit<LogEntryHeader, 'signature' | 'checksum'>): void {
  const v = dv(b);
  v.setUint32(0, LOG_ENTRY_SIGNATURE, true);
  v.setUint32(8, h.entryLength, true);
  v.setUint32(12, h.tail, true);
  v.setBigUint64(16, h.sequenceNumber, true);
  v.setUint32(24, h.descriptorCount, true);
  b.set(h.logGuid, 32);
  putU64(v, 48, h.flushedFileOffset);
  putU64(v, 56, h.lastFileOffset);
}

export type LogDescriptor =
  | { kind: 'zero'; zeroLength: number; fileOffset: number; sequenceNumber: bigint }
  | { kind: 'data'; trailingBytes: Uint8Array; leadingBytes: Uint8Array; fileOffset: number; sequenceNumber: bigint }
  | { kind: 'invalid'; signature: number };

export function parseLogDescriptor(b: Uint8Array): LogDescriptor {
  const v = dv(b);
  const signature = v.getUint32(0, true);
  if (signature === ZERO_DESC_SIGNATURE) {
    return { kind: 'zero', zeroLength: u64(v, 8), fileOffset: u64(v, 16), sequenceNumber: v.getBigUint64(24, true) };
  }
  if (signature === DATA_DESC_SIGNATURE) {
    return {
      kind: 'data',
      trailingBytes: b.slice(4, 8),
      leadingBytes: b.slice(8, 16),
      fileOffset: u64(v, 16),
      sequenceNumber: v.getBigUint64(24, true),
    };
  }
  return { kind: 'invalid', signature };
}

/** Number of 4 KiB sectors holding the entry header and `n` descriptors (2.3.1). */
export function descriptorSectors(n: number): number {
  return Math.ceil((LOG_ENTRY_HEADER_SIZE + n * LOG_DESCRIPTOR_SIZE) / LOG_SECTOR);
}

export function utf16le(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'utf16le'));
}
