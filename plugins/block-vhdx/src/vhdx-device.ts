/**
 * An open VHDX image ([MS-VHDX] sections 2.1–2.6; section numbers inline).
 *
 * Opening: file identifier, the current of the two headers (2.2.2, highest
 * valid SequenceNumber), the region table (2.2.3), the log (2.3: a dirty log
 * is replayed before anything else is read), the metadata region (2.6) and
 * the BAT (2.5), each validated against the file before use.
 *
 * Read-only opening of an image with a dirty log replays the log into memory
 * (an overlay over the file) instead of refusing as QEMU does: the spec says
 * the log must be replayed before the file is interpreted, and a read-only
 * user must not modify the file. A read-write open replays into the file.
 *
 * Writing ("updating a VHDX file", 2.2.2 and 2.3):
 * - before the first modification the headers get new FileWriteGuid,
 *   DataWriteGuid and a LogGuid (both header slots, each made durable);
 * - payload data goes straight to its block; a new block is allocated at the
 *   end of the file (1 MiB aligned) and the file is extended over it;
 * - BAT (and metadata) changes stay in memory until flush, which makes the
 *   data durable, writes the changed 4 KiB BAT sectors as one log entry,
 *   makes it durable, applies it, and makes that durable: so the BAT on disk
 *   never points at data that is not there, and a torn BAT write is repaired
 *   by replay;
 * - close clears the LogGuid: a cleanly closed image has an empty log.
 *
 * Differencing files are read through their parent; a write to a block that
 * is not fully present copies the block's current content (parent and
 * present sectors) into a fully present block first, so sector bitmaps are
 * only ever read.
 *
 * Discard: whole blocks of dynamic and differencing files become
 * PAYLOAD_BLOCK_ZERO and their host space is punched; partial blocks and
 * fixed files (LeaveBlockAllocated) are left as they are (a no-op).
 */
import {
  AsyncRwLock,
  BlockFormatError,
  BlockOptionError,
  BlockUnsupportedError,
  ImageFile,
  LruCache,
  checkRequest,
  checkWritable,
  closeAfterFailedOpen,
  forEachBlockPiece,
  openFirstParentCandidate,
  resolveParentCandidate,
  type BlockDevice,
  type BlockOpenOptions,
  type BlockStatusExtent,
  type CheckResult,
  type ImageInfo,
  type WriteOptions,
  type WriteZeroesOptions,
} from '@tsvmm/block';
import { vhdxChecksum } from './crc32c.js';
import { type Guid, guidEquals, guidIsZero, guidToString, newGuid, ZERO_GUID } from './guid.js';
import { type ActiveSequence, buildLogEntry, checkReplayTarget, findActiveSequence, type LogWrite, maxSectorsPerEntry } from './log.js';
import {
  BAT_REGION_GUID,
  FILE_PARAMETERS_GUID,
  FILE_SIGNATURE,
  HEADER1_OFFSET,
  HEADER2_OFFSET,
  HEADER_SECTION_SIZE,
  HEADER_SIGNATURE,
  HEADER_SIZE,
  LOGICAL_SECTOR_SIZE_GUID,
  LOG_SECTOR,
  MAX_METADATA_ENTRIES,
  MAX_REGION_ENTRIES,
  MAX_VIRTUAL_DISK_SIZE,
  METADATA_REGION_GUID,
  METADATA_SIGNATURE,
  METADATA_TABLE_SIZE,
  MiB,
  PARENT_LOCATOR_GUID,
  PHYSICAL_SECTOR_SIZE_GUID,
  PayloadState,
  REGION_SIGNATURE,
  REGION_TABLE1_OFFSET,
  REGION_TABLE2_OFFSET,
  REGION_TABLE_SIZE,
  SB_BLOCK_NOT_PRESENT,
  SB_BLOCK_PRESENT,
  SECTORS_PER_BITMAP,
  SECTOR_BITMAP_BLOCK_SIZE,
  VHDX_PARENT_LOCATOR_TYPE,
  VIRTUAL_DISK_ID_GUID,
  VIRTUAL_DISK_SIZE_GUID,
  batEntriesFor,
  batEntryOffsetMB,
  batEntryState,
  bitmapBatIndex,
  chunkRatio,
  parseHeader,
  parseMetadataTable,
  parseRegionTable,
  payloadBatIndex,
  serializeHeader,
  setBatEntry,
  type MetadataEntry,
  type VhdxHeader,
} from './structures.js';

/** Logs larger than this are refused rather than read into memory. */
const MAX_LOG_LENGTH = 256 * MiB;
/** The BAT is held in memory; refuse absurd sizes from a damaged region table. */
const MAX_BAT_BYTES = 1024 * MiB;
const MAX_PARENT_LOCATOR = 64 * 1024;
/** Sector bitmap blocks (1 MiB each) cached for reading differencing files. */
const BITMAP_CACHE_ENTRIES = 8;
/** Copy-on-write works through the block in pieces this big. */
const COW_CHUNK = MiB;
/** Replayed file offsets beyond this are not believed (64 TiB of payload plus metadata). */
const MAX_REPLAY_OFFSET = MAX_VIRTUAL_DISK_SIZE * 2;

/** Log writes replayed in memory for a read-only open of a dirty image. */
class ReplayOverlay {
  constructor(
    readonly writes: LogWrite[],
    readonly length: number,
  ) {}

  apply(offset: number, buf: Uint8Array): void {
    const end = offset + buf.length;
    for (const w of this.writes) {
      const wl = 'data' in w ? w.data.length : w.zeroLength;
      const s = Math.max(offset, w.fileOffset);
      const e = Math.min(end, w.fileOffset + wl);
      if (s >= e) continue;
      if ('data' in w) buf.set(w.data.subarray(s - w.fileOffset, e - w.fileOffset), s - offset);
      else buf.fill(0, s - offset, e - offset);
    }
  }
}

export interface VhdxParams {
  blockSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  virtualDiskSize: number;
  virtualDiskId: Guid;
  leaveBlockAllocated: boolean;
  hasParent: boolean;
}

interface Regions {
  batOffset: number;
  batLength: number;
  metadataOffset: number;
  metadataLength: number;
  /** file offsets of the metadata items we may rewrite (virtual disk size) */
  virtualDiskSizeItemOffset: number | undefined;
  parentLocator: Map<string, string> | undefined;
}

export interface VhdxOpenContext {
  chain?: string[];
}

export class VhdxDevice implements BlockDevice {
  readonly format = 'vhdx';
  /** metadata updates (block allocation, bitmap bits, the flush write-back) run one at a time; data I/O stays concurrent */
  private readonly meta = new AsyncRwLock();
  private readonly ratio: number;
  private readonly batView: DataView;
  private readonly dirtyBatSectors = new Set<number>();
  /** metadata-region sectors to write through the log at the next flush */
  private readonly dirtyMetadata = new Map<number, Uint8Array>();
  private readonly bitmaps = new LruCache<number, Uint8Array>(BITMAP_CACHE_ENTRIES);
  private sessionStarted = false;
  private logWriteOffset = 0;
  private logSequence = 1n;
  private closed = false;
  size: number;

  private constructor(
    private readonly file: ImageFile,
    private header: VhdxHeader,
    private headerSlot: 0 | 1,
    readonly params: VhdxParams,
    private readonly regions: Regions,
    private readonly bat: Uint8Array,
    private fileEnd: number,
    private readonly overlay: ReplayOverlay | undefined,
    readonly parent: BlockDevice | undefined,
    readonly parentFilename: string | undefined,
    /** set when opening replayed a log (for `info`/`check`) */
    readonly replayedLog: 'none' | 'file' | 'memory',
  ) {
    this.size = params.virtualDiskSize;
    this.ratio = chunkRatio(params.blockSize, params.logicalSectorSize);
    this.batView = new DataView(bat.buffer, bat.byteOffset, bat.byteLength);
  }

  get filename(): string {
    return this.file.filename;
  }
  get readOnly(): boolean {
    return this.file.readOnly;
  }
  get alignment(): number {
    return this.params.logicalSectorSize;
  }
  /** The header's DataWriteGuid, which a differencing child records as parent_linkage. */
  get dataWriteGuid(): Guid {
    return this.header.dataWriteGuid;
  }
  get logGuid(): Guid {
    return this.header.logGuid;
  }

  // ---- opening ----------------------------------------------------------------

  static async open(opts: BlockOpenOptions, ctx: VhdxOpenContext = {}): Promise<VhdxDevice> {
    const readOnly = opts.readOnly ?? false;
    const file = await ImageFile.open(opts.filename, { readOnly });
    let parent: BlockDevice | undefined;
    try {
      const name = file.filename;
      let fileSize = await file.size();
      if (fileSize < HEADER_SECTION_SIZE) {
        throw new BlockFormatError(name, 'header section', `file is ${fileSize} bytes, smaller than the 1 MiB header section`, 'not a VHDX image, or a truncated one');
      }
      const ident = new Uint8Array(8);
      await file.readExact(0, ident, 'file type identifier');
      const sig = Buffer.from(ident).toString('latin1');
      if (sig !== FILE_SIGNATURE) {
        throw new BlockFormatError(name, 'file type identifier', `signature is '${printable(sig)}', expected '${FILE_SIGNATURE}'`, 'not a VHDX image');
      }
      let { header, slot } = await readHeaders(file);

      // 2.3.3: replay the log before interpreting anything else.
      let overlay: ReplayOverlay | undefined;
      let replayed: 'none' | 'file' | 'memory' = 'none';
      const active = await readActiveLog(file, fileSize, header);
      if (active !== undefined) {
        const writes = checkedReplayWrites(name, active, header, fileSize);
        const lastFileOffset = Math.min(active.head.header.lastFileOffset, MAX_REPLAY_OFFSET);
        if (readOnly) {
          overlay = new ReplayOverlay(writes, Math.max(fileSize, lastFileOffset));
          replayed = 'memory';
        } else {
          await applyWrites(file, writes);
          if (fileSize < lastFileOffset) {
            await file.truncate(Math.ceil(lastFileOffset / MiB) * MiB);
          }
          await file.datasync();
          // An empty log from now on: LogGuid zero, written to both slots.
          ({ header, slot } = await writeHeaderPair(file, { ...header, logGuid: ZERO_GUID }, slot));
          fileSize = await file.size();
          replayed = 'file';
        }
      }
      const viewSize = overlay?.length ?? fileSize;
      const read = async (offset: number, buf: Uint8Array): Promise<void> => {
        await file.readZeroFilled(offset, buf);
        overlay?.apply(offset, buf);
      };

      const regionsRaw = await readRegionTable(name, read, viewSize, header);
      const { params, regions } = await readMetadata(name, read, regionsRaw);
      const entries = batEntriesFor(params.virtualDiskSize, params.blockSize, params.logicalSectorSize, params.hasParent);
      const batBytes = Math.ceil((entries * 8) / LOG_SECTOR) * LOG_SECTOR;
      if (entries * 8 > regions.batLength) {
        throw new BlockFormatError(name, 'BAT', `region of ${regions.batLength} bytes is too small for the ${entries} entries a ${params.virtualDiskSize}-byte disk needs`);
      }
      if (batBytes > MAX_BAT_BYTES) {
        throw new BlockFormatError(name, 'BAT', `${batBytes} bytes is larger than the ${MAX_BAT_BYTES}-byte limit`);
      }
      const bat = new Uint8Array(batBytes);
      await read(regions.batOffset, bat.subarray(0, Math.min(batBytes, regions.batLength)));
      const fileEnd = validateBat(name, bat, entries, params, regions, header, viewSize);

      let parentFilename: string | undefined;
      if (params.hasParent) {
        ({ parent, parentFilename } = await openParent(name, regions.parentLocator, opts, ctx));
      }
      return new VhdxDevice(file, header, slot, params, regions, bat, Math.max(fileEnd, viewSize), overlay, parent, parentFilename, replayed);
    } catch (e) {
      return closeAfterFailedOpen(e, [parent, file]);
    }
  }

  private async readFile(offset: number, buf: Uint8Array): Promise<void> {
    await this.file.readZeroFilled(offset, buf);
    this.overlay?.apply(offset, buf);
  }

  // ---- block mapping ----------------------------------------------------------

  private payloadEntry(blockIndex: number): { state: number; offset: number } {
    const idx = payloadBatIndex(blockIndex, this.ratio);
    return { state: batEntryState(this.batView, idx), offset: batEntryOffsetMB(this.batView, idx) * MiB };
  }

  private setPayloadEntry(blockIndex: number, state: number, fileOffset: number): void {
    const idx = payloadBatIndex(blockIndex, this.ratio);
    setBatEntry(this.batView, idx, state, fileOffset / MiB);
    this.dirtyBatSectors.add(Math.floor((idx * 8) / LOG_SECTOR));
  }

  /** Whether a block in this state reads from the parent (differencing) or as zero. */
  private stateReadsBackground(state: number): boolean {
    return state !== PayloadState.FullyPresent && state !== PayloadState.PartiallyPresent;
  }

  /** What a sector not stored in this file reads as, for a block in `state`. */
  private async readBackground(state: number, pos: number, out: Uint8Array): Promise<void> {
    const parent = this.parent;
    const fromParent = parent !== undefined && state !== PayloadState.Zero;
    if (!fromParent || pos >= parent.size) {
      out.fill(0);
      return;
    }
    const n = Math.min(out.length, parent.size - pos);
    await parent.read(pos, out.subarray(0, n));
    if (n < out.length) out.fill(0, n);
  }

  /** The 1 MiB sector bitmap of chunk `c` (differencing files). */
  private async sectorBitmap(c: number): Promise<Uint8Array> {
    const cached = this.bitmaps.get(c);
    if (cached !== undefined) return cached;
    const idx = bitmapBatIndex(c, this.ratio);
    const bm = new Uint8Array(SECTOR_BITMAP_BLOCK_SIZE);
    if (batEntryState(this.batView, idx) === SB_BLOCK_PRESENT) {
      await this.readFile(batEntryOffsetMB(this.batView, idx) * MiB, bm);
    }
    this.bitmaps.set(c, bm);
    return bm;
  }

  // ---- reads -------------------------------------------------------------------

  async read(offset: number, buf: Uint8Array): Promise<void> {
    checkRequest(this, offset, buf.length);
    await forEachBlockPiece(offset, buf, this.params.blockSize, (blockIndex, inBlock, piece) => this.readInBlock(blockIndex, inBlock, piece));
  }

  private async readInBlock(blockIndex: number, inBlock: number, out: Uint8Array): Promise<void> {
    const { state, offset } = this.payloadEntry(blockIndex);
    const blockPos = blockIndex * this.params.blockSize;
    if (state === PayloadState.FullyPresent) {
      await this.readFile(offset + inBlock, out);
      return;
    }
    if (state !== PayloadState.PartiallyPresent) {
      await this.readBackground(state, blockPos + inBlock, out);
      return;
    }
    // 2.5.1.1 PARTIALLY_PRESENT: the sector bitmap says which sectors are here.
    const ss = this.params.logicalSectorSize;
    const chunk = Math.floor(blockIndex / this.ratio);
    const bm = await this.sectorBitmap(chunk);
    const chunkFirstSector = chunk * SECTORS_PER_BITMAP;
    let done = 0;
    while (done < out.length) {
      const byte = blockPos + inBlock + done;
      const sector = Math.floor(byte / ss);
      const present = bitTest(bm, sector - chunkFirstSector);
      let runEnd = sector + 1;
      const lastSector = Math.ceil((blockPos + inBlock + out.length) / ss);
      while (runEnd < lastSector && bitTest(bm, runEnd - chunkFirstSector) === present) runEnd++;
      const end = Math.min(runEnd * ss, blockPos + inBlock + out.length);
      const part = out.subarray(done, end - blockPos - inBlock);
      if (present) await this.readFile(offset + (byte - blockPos), part);
      else await this.readBackground(PayloadState.NotPresent, byte, part);
      done = end - blockPos - inBlock;
    }
  }

  // ---- writes -------------------------------------------------------------------

  /** 2.2.2: new FileWriteGuid/DataWriteGuid and a LogGuid before the first modification. */
  private async startSession(): Promise<void> {
    if (this.sessionStarted) return;
    await this.meta.withExclusive(async () => {
      if (this.sessionStarted) return;
      const next: VhdxHeader = { ...this.header, fileWriteGuid: newGuid(), dataWriteGuid: newGuid(), logGuid: newGuid() };
      ({ header: this.header, slot: this.headerSlot } = await writeHeaderPair(this.file, next, this.headerSlot));
      this.logWriteOffset = 0;
      this.logSequence = 1n;
      this.sessionStarted = true;
    });
  }

  async write(offset: number, buf: Uint8Array, opts?: WriteOptions): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, buf.length);
    await this.startSession();
    await forEachBlockPiece(offset, buf, this.params.blockSize, (blockIndex, inBlock, piece) => this.writeInBlock(blockIndex, inBlock, piece));
    if (opts?.fua) await this.flush();
  }

  private async writeInBlock(blockIndex: number, inBlock: number, data: Uint8Array): Promise<void> {
    const first = this.payloadEntry(blockIndex);
    if (first.state === PayloadState.FullyPresent) {
      await this.file.write(first.offset + inBlock, data);
      return;
    }
    await this.meta.withExclusive(async () => {
      const { state, offset } = this.payloadEntry(blockIndex);
      if (state === PayloadState.FullyPresent) {
        await this.file.write(offset + inBlock, data);
        return;
      }
      const bs = this.params.blockSize;
      const blockPos = blockIndex * bs;
      const needsCopy = this.parent !== undefined && state !== PayloadState.Zero;
      let target = offset;
      if (state !== PayloadState.PartiallyPresent) target = await this.allocateBlock();
      if (needsCopy) {
        // Copy-on-write: the block's current content (parent and any sectors
        // already here) lands in the fully present block, then the new data.
        const piece = new Uint8Array(Math.min(COW_CHUNK, bs));
        for (let at = 0; at < bs && blockPos + at < this.size; at += piece.length) {
          const n = Math.min(piece.length, bs - at, this.size - blockPos - at);
          const p = piece.subarray(0, n);
          await this.readInBlock(blockIndex, at, p);
          const s = Math.max(at, inBlock);
          const e = Math.min(at + n, inBlock + data.length);
          if (s < e) p.set(data.subarray(s - inBlock, e - inBlock), s - at);
          await this.file.write(target + at, p);
        }
      } else {
        // The new block reads as zero (fresh file space), as the old state did.
        await this.file.write(target + inBlock, data);
      }
      this.setPayloadEntry(blockIndex, PayloadState.FullyPresent, target);
    });
  }

  /** A new payload block at the end of the file. Caller holds the metadata lock. */
  private async allocateBlock(): Promise<number> {
    const at = Math.ceil(this.fileEnd / MiB) * MiB;
    const end = at + this.params.blockSize;
    if (at / MiB >= 2 ** 44) throw new BlockFormatError(this.filename, 'BAT', `file offset ${at} does not fit a BAT entry`);
    await this.file.truncate(end);
    this.fileEnd = end;
    return at;
  }

  /** Data durable, then the changed BAT/metadata sectors through the log (see the file comment). */
  async flush(): Promise<void> {
    if (this.readOnly) return;
    if (this.dirtyBatSectors.size === 0 && this.dirtyMetadata.size === 0) {
      await this.file.datasync();
      return;
    }
    await this.meta.withExclusive(() => this.writeBackMetadata());
  }

  private async writeBackMetadata(): Promise<void> {
    if (this.dirtyBatSectors.size === 0 && this.dirtyMetadata.size === 0) return;
    await this.file.datasync();
    const sectors: Array<{ fileOffset: number; data: Uint8Array }> = [];
    for (const s of [...this.dirtyBatSectors].sort((a, b) => a - b)) {
      sectors.push({ fileOffset: this.regions.batOffset + s * LOG_SECTOR, data: this.bat.slice(s * LOG_SECTOR, (s + 1) * LOG_SECTOR) });
    }
    for (const [fileOffset, data] of this.dirtyMetadata) sectors.push({ fileOffset, data });
    const perEntry = maxSectorsPerEntry(this.header.logLength);
    if (perEntry <= 0) {
      throw new BlockUnsupportedError(this.filename, 'write', `the log of ${this.header.logLength} bytes cannot hold a log entry`);
    }
    const flushedFileOffset = await this.file.size();
    for (let i = 0; i < sectors.length; i += perEntry) {
      const part = sectors.slice(i, i + perEntry);
      const entry = buildLogEntry({
        logGuid: this.header.logGuid,
        sequenceNumber: this.logSequence,
        // everything before this entry has been applied: the tail is the entry itself
        tail: this.logWriteOffset,
        flushedFileOffset,
        lastFileOffset: Math.max(this.fileEnd, flushedFileOffset),
        sectors: part,
      });
      await this.writeLog(entry);
      await this.file.datasync();
      for (const s of part) await this.file.write(s.fileOffset, s.data);
      await this.file.datasync();
      this.logWriteOffset = (this.logWriteOffset + entry.length) % this.header.logLength;
      this.logSequence++;
    }
    this.dirtyBatSectors.clear();
    this.dirtyMetadata.clear();
  }

  /** Writes an entry into the circular log at the write offset (wrapping if needed). */
  private async writeLog(entry: Uint8Array): Promise<void> {
    const len = this.header.logLength;
    const at = this.logWriteOffset;
    const first = Math.min(entry.length, len - at);
    await this.file.write(this.header.logOffset + at, entry.subarray(0, first));
    if (first < entry.length) await this.file.write(this.header.logOffset, entry.subarray(first));
  }

  /**
   * Discard: whole blocks of dynamic/differencing files become ZERO and their
   * space is punched; everything else is a no-op (see the file comment).
   */
  async discard(offset: number, length: number): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    if (this.params.leaveBlockAllocated && !this.params.hasParent) return;
    await this.zeroWholeBlocks(offset, length, false);
  }

  /** Makes whole blocks in the range PAYLOAD_BLOCK_ZERO; returns the ranges it could not (partial blocks). */
  private async zeroWholeBlocks(offset: number, length: number, writeRest: boolean): Promise<Array<[number, number]>> {
    const bs = this.params.blockSize;
    const rest: Array<[number, number]> = [];
    const firstWhole = Math.ceil(offset / bs);
    const end = offset + length;
    // the last block may be cut by the disk size: it counts as whole up to the end of disk
    const lastWholeEnd = end === this.size ? Math.ceil(end / bs) : Math.floor(end / bs);
    if (firstWhole >= lastWholeEnd) {
      if (writeRest) rest.push([offset, length]);
      return rest;
    }
    if (writeRest && offset < firstWhole * bs) rest.push([offset, firstWhole * bs - offset]);
    await this.startSession();
    const punches: Array<[number, number]> = [];
    await this.meta.withExclusive(async () => {
      for (let b = firstWhole; b < lastWholeEnd; b++) {
        const { state, offset: at } = this.payloadEntry(b);
        if (state === PayloadState.Zero) continue;
        if (state === PayloadState.FullyPresent || state === PayloadState.PartiallyPresent) punches.push([at, bs]);
        this.setPayloadEntry(b, PayloadState.Zero, 0);
      }
      // The BAT must stop pointing at the blocks before their space is punched.
      await this.writeBackMetadata();
      for (const [at, len] of punches) await this.file.punchHole(at, len);
    });
    const wholeEnd = Math.min(lastWholeEnd * bs, this.size);
    if (writeRest && wholeEnd < end) rest.push([wholeEnd, end - wholeEnd]);
    return rest;
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    let ranges: Array<[number, number]> = [[offset, length]];
    if (opts?.mayUnmap && !(this.params.leaveBlockAllocated && !this.params.hasParent)) {
      ranges = await this.zeroWholeBlocks(offset, length, true);
    }
    const bs = this.params.blockSize;
    const zero = new Uint8Array(Math.min(bs, 4 * MiB));
    for (const [o, l] of ranges) {
      let done = 0;
      while (done < l) {
        const pos = o + done;
        const n = Math.min(zero.length, l - done, bs - (pos % bs));
        const { state } = this.payloadEntry(Math.floor(pos / bs));
        // Already zero: a block reading as zero with no parent behind it, or a ZERO block.
        const readsZero = state === PayloadState.Zero || (this.parent === undefined && this.stateReadsBackground(state));
        if (!readsZero) await this.write(pos, zero.subarray(0, n));
        done += n;
      }
    }
  }

  // ---- status, info, resize ------------------------------------------------------

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    checkRequest(this, offset, length);
    const bs = this.params.blockSize;
    const blockIndex = Math.floor(offset / bs);
    const inBlock = offset % bs;
    const { state, offset: at } = this.payloadEntry(blockIndex);
    const inThisBlock = Math.min(bs - inBlock, length);
    if (state === PayloadState.FullyPresent) {
      let len = inThisBlock;
      // merge following fully present blocks that are contiguous in the file
      for (let b = blockIndex + 1; offset + len < offset + length; b++) {
        const e = this.payloadEntry(b);
        if (e.state !== PayloadState.FullyPresent || e.offset !== at + (b - blockIndex) * bs) break;
        len = Math.min(len + bs, length);
      }
      return { offset, length: len, data: true, zero: false, allocated: true, depth: 0, hostOffset: at + inBlock, hostFile: this.filename };
    }
    if (state === PayloadState.Zero) {
      let len = inThisBlock;
      for (let b = blockIndex + 1; len < length && this.payloadEntry(b).state === PayloadState.Zero; b++) len = Math.min(len + bs, length);
      return { offset, length: len, data: false, zero: true, allocated: true, depth: 0 };
    }
    if (state === PayloadState.PartiallyPresent) {
      const ss = this.params.logicalSectorSize;
      const chunk = Math.floor(blockIndex / this.ratio);
      const bm = await this.sectorBitmap(chunk);
      const base = chunk * SECTORS_PER_BITMAP;
      const sector = Math.floor(offset / ss);
      const present = bitTest(bm, sector - base);
      const endByte = offset + inThisBlock;
      let s = sector + 1;
      while (s * ss < endByte && bitTest(bm, s - base) === present) s++;
      const len = Math.min(s * ss, endByte) - offset;
      if (present) return { offset, length: len, data: true, zero: false, allocated: true, depth: 0, hostOffset: at + inBlock, hostFile: this.filename };
      return this.parentStatus(offset, len);
    }
    let len = inThisBlock;
    for (let b = blockIndex + 1; len < length; b++) {
      const st = this.payloadEntry(b).state;
      if (!this.stateReadsBackground(st) || st === PayloadState.Zero) break;
      len = Math.min(len + bs, length);
    }
    return this.parentStatus(offset, len);
  }

  private async parentStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    const parent = this.parent;
    if (parent === undefined || offset >= parent.size) return { offset, length, data: false, zero: true, allocated: false, depth: 0 };
    const s = await parent.blockStatus(offset, Math.min(length, parent.size - offset));
    return { ...s, offset, allocated: false, depth: s.depth + 1 };
  }

  async info(): Promise<ImageInfo> {
    const info: ImageInfo = {
      filename: this.filename,
      format: 'vhdx',
      'virtual-size': this.size,
      'actual-size': await this.file.allocatedBytes(),
      'cluster-size': this.params.blockSize,
      'dirty-flag': false,
    };
    if (this.parentFilename !== undefined) {
      info['backing-filename'] = this.parentFilename;
      info['full-backing-filename'] = this.parent?.filename ?? this.parentFilename;
      info['backing-filename-format'] = 'vhdx';
    }
    info['format-specific'] = {
      type: 'vhdx',
      data: {
        subformat: this.params.hasParent ? 'differencing' : this.params.leaveBlockAllocated ? 'fixed' : 'dynamic',
        'block-size': this.params.blockSize,
        'logical-sector-size': this.params.logicalSectorSize,
        'physical-sector-size': this.params.physicalSectorSize,
        'log-size': this.header.logLength,
        'virtual-disk-id': guidToString(this.params.virtualDiskId),
        'log-replayed': this.replayedLog,
      },
    };
    return info;
  }

  /**
   * Structural check. Opening already validated every structure (a broken one
   * fails the open), so an open image has no corruptions; leaks are file space
   * no block uses, which VHDX cannot reclaim and are not reported.
   */
  async check(_opts: { repair?: 'leaks' | 'all' }): Promise<CheckResult> {
    return {
      filename: this.filename,
      format: 'vhdx',
      'check-errors': 0,
      corruptions: 0,
      leaks: 0,
      'corruptions-fixed': this.replayedLog === 'file' ? 1 : 0,
      'image-end-offset': this.fileEnd,
      messages: this.replayedLog === 'none' ? [] : [`the log was replayed (${this.replayedLog === 'file' ? 'into the file' : 'in memory; the file is unchanged'})`],
    };
  }

  /** Grows the disk within the BAT region's capacity; the new size goes through the log. */
  async resize(newSize: number): Promise<void> {
    checkWritable(this);
    const ss = this.params.logicalSectorSize;
    if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % ss !== 0 || newSize > MAX_VIRTUAL_DISK_SIZE) {
      throw new BlockOptionError('size', `${newSize} must be a positive multiple of ${ss} bytes up to 64 TiB`);
    }
    if (newSize < this.size) throw new BlockUnsupportedError(this.filename, 'shrinking', 'VHDX images can only grow here; convert to a new image instead');
    if (newSize === this.size) return;
    const need = batEntriesFor(newSize, this.params.blockSize, ss, this.params.hasParent) * 8;
    if (need > this.regions.batLength || need > this.bat.length) {
      throw new BlockUnsupportedError(this.filename, 'resize', `the BAT region (${this.regions.batLength} bytes) cannot describe ${newSize} bytes; convert to a new image instead`);
    }
    const itemOffset = this.regions.virtualDiskSizeItemOffset;
    if (itemOffset === undefined) throw new BlockUnsupportedError(this.filename, 'resize', 'no virtual disk size metadata item to update');
    await this.startSession();
    await this.meta.withExclusive(async () => {
      const bs = this.params.blockSize;
      const oldBlocks = Math.ceil(this.size / bs);
      // The partial last block may hold stale data past the old end: it must read as zero.
      if (this.size % bs !== 0) {
        const tailStart = this.size;
        const tailEnd = Math.min(oldBlocks * bs, newSize);
        const { state, offset } = this.payloadEntry(oldBlocks - 1);
        if (state === PayloadState.FullyPresent) await this.file.write(offset + (tailStart % bs), new Uint8Array(tailEnd - tailStart));
      }
      // Entries past the old end were never validated: whatever the BAT region
      // held there is cleared before it can mean anything.
      const oldEntries = batEntriesFor(this.size, bs, ss, this.params.hasParent);
      const newEntries = batEntriesFor(newSize, bs, ss, this.params.hasParent);
      for (let i = oldEntries; i < newEntries; i++) {
        setBatEntry(this.batView, i, 0, 0);
        this.dirtyBatSectors.add(Math.floor((i * 8) / LOG_SECTOR));
      }
      if (this.params.leaveBlockAllocated && !this.params.hasParent) {
        for (let b = oldBlocks; b < Math.ceil(newSize / bs); b++) this.setPayloadEntry(b, PayloadState.FullyPresent, await this.allocateBlock());
      }
      const sectorOffset = Math.floor(itemOffset / LOG_SECTOR) * LOG_SECTOR;
      const sector = this.dirtyMetadata.get(sectorOffset) ?? new Uint8Array(LOG_SECTOR);
      if (!this.dirtyMetadata.has(sectorOffset)) await this.readFile(sectorOffset, sector);
      const v = new DataView(sector.buffer);
      v.setUint32(itemOffset - sectorOffset, newSize % 0x100000000, true);
      v.setUint32(itemOffset - sectorOffset + 4, Math.floor(newSize / 0x100000000), true);
      this.dirtyMetadata.set(sectorOffset, sector);
      await this.writeBackMetadata();
      this.params.virtualDiskSize = newSize;
      this.size = newSize;
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.readOnly && this.sessionStarted) {
        await this.flush();
        await this.meta.withExclusive(async () => {
          ({ header: this.header, slot: this.headerSlot } = await writeHeaderPair(this.file, { ...this.header, logGuid: ZERO_GUID }, this.headerSlot));
        });
      }
    } finally {
      try {
        if (this.parent !== undefined) await this.parent.close();
      } finally {
        await this.file.close();
      }
    }
  }
}

// ---- helpers ----------------------------------------------------------------------

/** 2.5: bit 0 of byte 0 is the first sector of the chunk. */
function bitTest(bm: Uint8Array, i: number): boolean {
  return (((bm[i >> 3] ?? 0) >> (i & 7)) & 1) === 1;
}

function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '?');
}

function headerProblem(b: Uint8Array): string | undefined {
  const h = parseHeader(b);
  if (h.signature !== HEADER_SIGNATURE) return `signature is 0x${h.signature.toString(16)}, expected 'head'`;
  const sum = vhdxChecksum(b, 4);
  if (sum !== h.checksum) return `checksum is 0x${h.checksum.toString(16)}, computed 0x${sum.toString(16)}`;
  if (h.version !== 1) return `version is ${h.version}, only 1 is defined`;
  if (h.logVersion !== 0) return `log version is ${h.logVersion}, only 0 is defined`;
  return undefined;
}

/** 2.2.2: the valid header with the larger SequenceNumber is current. */
async function readHeaders(file: ImageFile): Promise<{ header: VhdxHeader; slot: 0 | 1 }> {
  const found: Array<{ header: VhdxHeader; slot: 0 | 1 }> = [];
  const problems: string[] = [];
  for (const [slot, at] of [[0, HEADER1_OFFSET], [1, HEADER2_OFFSET]] as const) {
    const b = new Uint8Array(HEADER_SIZE);
    await file.readExact(at, b, `header ${slot + 1}`);
    const p = headerProblem(b);
    if (p === undefined) found.push({ header: parseHeader(b), slot });
    else problems.push(`header ${slot + 1}: ${p}`);
  }
  found.sort((a, b) => (a.header.sequenceNumber > b.header.sequenceNumber ? -1 : a.header.sequenceNumber < b.header.sequenceNumber ? 1 : 0));
  const cur = found[0];
  if (cur === undefined) throw new BlockFormatError(file.filename, 'header', `neither header is valid (${problems.join('; ')})`);
  const h = cur.header;
  if (h.logOffset < HEADER_SECTION_SIZE || h.logOffset % MiB !== 0 || h.logLength % MiB !== 0) {
    throw new BlockFormatError(file.filename, 'header', `log at ${h.logOffset} (+${h.logLength}) is not 1 MiB aligned past the header section`);
  }
  return cur;
}

/**
 * Writes `h` into the non-current slot with the next SequenceNumber, makes it
 * durable, then the same into the other slot, so both are valid and current.
 */
async function writeHeaderPair(file: ImageFile, h: VhdxHeader, currentSlot: 0 | 1): Promise<{ header: VhdxHeader; slot: 0 | 1 }> {
  let slot = currentSlot;
  let header = h;
  for (let i = 0; i < 2; i++) {
    slot = slot === 0 ? 1 : 0;
    header = { ...header, sequenceNumber: header.sequenceNumber + 1n };
    await file.write(slot === 0 ? HEADER1_OFFSET : HEADER2_OFFSET, serializeHeader(header));
    await file.datasync();
  }
  return { header, slot };
}

async function readActiveLog(file: ImageFile, fileSize: number, h: VhdxHeader): Promise<ActiveSequence | undefined> {
  if (guidIsZero(h.logGuid) || h.logLength === 0) return undefined;
  if (h.logLength > MAX_LOG_LENGTH) {
    throw new BlockFormatError(file.filename, 'log', `length ${h.logLength} exceeds the ${MAX_LOG_LENGTH}-byte limit`);
  }
  if (h.logOffset + h.logLength > fileSize) {
    throw new BlockFormatError(file.filename, 'log', `[${h.logOffset}, +${h.logLength}) is beyond the end of the file (${fileSize} bytes)`, 'the image is truncated');
  }
  const log = new Uint8Array(h.logLength);
  await file.readExact(h.logOffset, log, 'log');
  return findActiveSequence(log, h.logGuid);
}

function checkedReplayWrites(name: string, active: ActiveSequence, h: VhdxHeader, fileSize: number): LogWrite[] {
  const writes: LogWrite[] = [];
  for (const e of active.entries) {
    if (e.header.flushedFileOffset > fileSize) {
      throw new BlockFormatError(
        name,
        'log',
        `entry ${e.header.sequenceNumber} says the file was ${e.header.flushedFileOffset} bytes when it was written, but it is ${fileSize}`,
        'the image was truncated after the log was written; it cannot be repaired',
      );
    }
    const maxOffset = Math.max(fileSize, Math.min(e.header.lastFileOffset, MAX_REPLAY_OFFSET));
    for (const w of e.writes) {
      const why = checkReplayTarget(w, { logOffset: h.logOffset, logLength: h.logLength, maxOffset });
      if (why !== undefined) throw new BlockFormatError(name, 'log', `entry ${e.header.sequenceNumber}: descriptor ${why}`);
      writes.push(w);
    }
  }
  return writes;
}

async function applyWrites(file: ImageFile, writes: LogWrite[]): Promise<void> {
  for (const w of writes) {
    if ('data' in w) await file.write(w.fileOffset, w.data);
    else {
      const zero = new Uint8Array(Math.min(w.zeroLength, MiB));
      for (let done = 0; done < w.zeroLength; done += zero.length) {
        await file.write(w.fileOffset + done, zero.subarray(0, Math.min(zero.length, w.zeroLength - done)));
      }
    }
  }
}

type ReadAt = (offset: number, buf: Uint8Array) => Promise<void>;

interface RegionsRaw {
  batOffset: number;
  batLength: number;
  metadataOffset: number;
  metadataLength: number;
}

async function readRegionTable(name: string, read: ReadAt, fileSize: number, h: VhdxHeader): Promise<RegionsRaw> {
  const problems: string[] = [];
  for (const [which, at] of [[1, REGION_TABLE1_OFFSET], [2, REGION_TABLE2_OFFSET]] as const) {
    const b = new Uint8Array(REGION_TABLE_SIZE);
    await read(at, b);
    const t = parseRegionTable(b);
    if (t.signature !== REGION_SIGNATURE) {
      problems.push(`region table ${which}: signature is 0x${t.signature.toString(16)}, expected 'regi'`);
      continue;
    }
    const sum = vhdxChecksum(b, 4);
    if (sum !== t.checksum) {
      problems.push(`region table ${which}: checksum is 0x${t.checksum.toString(16)}, computed 0x${sum.toString(16)}`);
      continue;
    }
    if (t.entryCount > MAX_REGION_ENTRIES) {
      problems.push(`region table ${which}: ${t.entryCount} entries, at most ${MAX_REGION_ENTRIES} allowed`);
      continue;
    }
    const structure = `region table ${which}`;
    let bat: { fileOffset: number; length: number } | undefined;
    let md: { fileOffset: number; length: number } | undefined;
    const spans: Array<[number, number, string]> = [
      [0, HEADER_SECTION_SIZE, 'the header section'],
      [h.logOffset, h.logOffset + h.logLength, 'the log'],
    ];
    for (const e of t.entries) {
      const what = guidEquals(e.guid, BAT_REGION_GUID) ? 'BAT' : guidEquals(e.guid, METADATA_REGION_GUID) ? 'metadata' : undefined;
      if (what === undefined) {
        if (e.required) throw new BlockFormatError(name, structure, `required region ${guidToString(e.guid)} is not one this implementation knows`, 'the image needs a newer VHDX implementation');
        continue;
      }
      if (what === 'BAT' ? bat !== undefined : md !== undefined) throw new BlockFormatError(name, structure, `the ${what} region appears twice`);
      if (!Number.isSafeInteger(e.fileOffset) || e.fileOffset % MiB !== 0 || e.fileOffset < HEADER_SECTION_SIZE || e.length === 0 || e.length % MiB !== 0) {
        throw new BlockFormatError(name, structure, `${what} region [${e.fileOffset}, +${e.length}) is not 1 MiB aligned past the header section`);
      }
      if (e.fileOffset + e.length > fileSize) {
        throw new BlockFormatError(name, structure, `${what} region [${e.fileOffset}, +${e.length}) is beyond the end of the file (${fileSize} bytes)`, 'the image is truncated');
      }
      for (const [s, en, other] of spans) {
        if (e.fileOffset < en && e.fileOffset + e.length > s) throw new BlockFormatError(name, structure, `${what} region [${e.fileOffset}, +${e.length}) overlaps ${other}`);
      }
      spans.push([e.fileOffset, e.fileOffset + e.length, `the ${what} region`]);
      if (what === 'BAT') bat = e;
      else md = e;
    }
    if (bat === undefined || md === undefined) throw new BlockFormatError(name, structure, `has no ${bat === undefined ? 'BAT' : 'metadata'} region`);
    return { batOffset: bat.fileOffset, batLength: bat.length, metadataOffset: md.fileOffset, metadataLength: md.length };
  }
  throw new BlockFormatError(name, 'region table', `neither copy is valid (${problems.join('; ')})`);
}

async function readMetadata(name: string, read: ReadAt, r: RegionsRaw): Promise<{ params: VhdxParams; regions: Regions }> {
  const table = new Uint8Array(METADATA_TABLE_SIZE);
  await read(r.metadataOffset, table);
  const t = parseMetadataTable(table);
  const S = 'metadata table';
  if (t.signature !== METADATA_SIGNATURE) throw new BlockFormatError(name, S, `signature is '${printable(t.signature)}', expected 'metadata'`);
  if (t.entryCount > MAX_METADATA_ENTRIES) throw new BlockFormatError(name, S, `${t.entryCount} entries, at most ${MAX_METADATA_ENTRIES} allowed`);
  const known: Array<[Guid, string]> = [
    [FILE_PARAMETERS_GUID, 'file parameters'],
    [VIRTUAL_DISK_SIZE_GUID, 'virtual disk size'],
    [VIRTUAL_DISK_ID_GUID, 'virtual disk id'],
    [LOGICAL_SECTOR_SIZE_GUID, 'logical sector size'],
    [PHYSICAL_SECTOR_SIZE_GUID, 'physical sector size'],
    [PARENT_LOCATOR_GUID, 'parent locator'],
  ];
  const items = new Map<string, { entry: MetadataEntry; data: Uint8Array }>();
  for (const e of t.entries) {
    const k = known.find(([g]) => guidEquals(g, e.itemId));
    if (k === undefined) {
      if (e.isRequired) throw new BlockFormatError(name, S, `required item ${guidToString(e.itemId)} is not one this implementation knows`, 'the image needs a newer VHDX implementation');
      continue;
    }
    const label = k[1];
    if (items.has(label)) throw new BlockFormatError(name, S, `item '${label}' appears twice`);
    if (e.length === 0) continue;
    if (e.offset < METADATA_TABLE_SIZE || e.offset + e.length > r.metadataLength || e.length > MAX_PARENT_LOCATOR) {
      throw new BlockFormatError(name, S, `item '${label}' at [${e.offset}, +${e.length}) is outside the metadata region (${r.metadataLength} bytes)`);
    }
    const data = new Uint8Array(e.length);
    await read(r.metadataOffset + e.offset, data);
    items.set(label, { entry: e, data });
  }
  const need = (label: string, len: number): DataView => {
    const it = items.get(label);
    if (it === undefined) throw new BlockFormatError(name, S, `required item '${label}' is missing`);
    if (it.data.length < len) throw new BlockFormatError(name, S, `item '${label}' is ${it.data.length} bytes, expected ${len}`);
    return new DataView(it.data.buffer);
  };
  const fp = need('file parameters', 8);
  const blockSize = fp.getUint32(0, true);
  const bits = fp.getUint32(4, true);
  const vsz = need('virtual disk size', 8);
  const virtualDiskSize = vsz.getUint32(0, true) + vsz.getUint32(4, true) * 0x100000000;
  const logicalSectorSize = need('logical sector size', 4).getUint32(0, true);
  const physItem = items.get('physical sector size');
  const physicalSectorSize = physItem !== undefined && physItem.data.length >= 4 ? new DataView(physItem.data.buffer).getUint32(0, true) : logicalSectorSize;
  const idItem = items.get('virtual disk id');
  const virtualDiskId = idItem !== undefined && idItem.data.length >= 16 ? idItem.data.slice(0, 16) : new Uint8Array(16);
  if (blockSize < MiB || blockSize > 256 * MiB || (blockSize & (blockSize - 1)) !== 0) {
    throw new BlockFormatError(name, 'file parameters', `block size ${blockSize} is not a power of two between 1 MiB and 256 MiB`);
  }
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) {
    throw new BlockFormatError(name, 'logical sector size', `${logicalSectorSize} is neither 512 nor 4096`);
  }
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) {
    throw new BlockFormatError(name, 'physical sector size', `${physicalSectorSize} is neither 512 nor 4096`);
  }
  if (!Number.isSafeInteger(virtualDiskSize) || virtualDiskSize === 0 || virtualDiskSize % logicalSectorSize !== 0 || virtualDiskSize > MAX_VIRTUAL_DISK_SIZE) {
    throw new BlockFormatError(name, 'virtual disk size', `${virtualDiskSize} is not a positive multiple of ${logicalSectorSize} up to 64 TiB`);
  }
  const hasParent = (bits & 2) !== 0;
  let parentLocator: Map<string, string> | undefined;
  if (hasParent) {
    const pl = items.get('parent locator');
    if (pl === undefined) throw new BlockFormatError(name, S, "a differencing file (HasParent) needs the 'parent locator' item");
    parentLocator = parseParentLocator(name, pl.data);
  }
  const vszItem = items.get('virtual disk size');
  return {
    params: {
      blockSize,
      logicalSectorSize,
      physicalSectorSize,
      virtualDiskSize,
      virtualDiskId,
      leaveBlockAllocated: (bits & 1) !== 0,
      hasParent,
    },
    regions: {
      ...r,
      virtualDiskSizeItemOffset: vszItem !== undefined ? r.metadataOffset + vszItem.entry.offset : undefined,
      parentLocator,
    },
  };
}

/** 2.6.2.6: a 20-byte header then (KeyOffset, ValueOffset, KeyLength, ValueLength) entries; UTF-16LE strings. */
function parseParentLocator(name: string, b: Uint8Array): Map<string, string> {
  const S = 'parent locator';
  if (b.length < 20) throw new BlockFormatError(name, S, `is ${b.length} bytes, shorter than its 20-byte header`);
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (!guidEquals(b.subarray(0, 16), VHDX_PARENT_LOCATOR_TYPE)) {
    throw new BlockFormatError(name, S, `locator type ${guidToString(b.subarray(0, 16))} is not the VHDX parent locator`, 'only VHDX parents are supported');
  }
  const count = v.getUint16(18, true);
  if (20 + count * 12 > b.length) throw new BlockFormatError(name, S, `${count} key/value entries do not fit in ${b.length} bytes`);
  const out = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const o = 20 + i * 12;
    const ko = v.getUint32(o, true);
    const vo = v.getUint32(o + 4, true);
    const kl = v.getUint16(o + 8, true);
    const vl = v.getUint16(o + 10, true);
    if (kl === 0 || vl === 0 || ko + kl > b.length || vo + vl > b.length) {
      throw new BlockFormatError(name, S, `entry ${i} (key [${ko}, +${kl}), value [${vo}, +${vl})) is outside the item`);
    }
    const key = Buffer.from(b.subarray(ko, ko + kl)).toString('utf16le');
    const value = Buffer.from(b.subarray(vo, vo + vl)).toString('utf16le');
    out.set(key, value);
  }
  if (!out.has('parent_linkage')) throw new BlockFormatError(name, S, "has no 'parent_linkage' entry");
  return out;
}

/** Checks every BAT entry against the file; returns the end of the last allocated block. */
function validateBat(name: string, bat: Uint8Array, entries: number, params: VhdxParams, regions: Regions, h: VhdxHeader, fileSize: number): number {
  const view = new DataView(bat.buffer, bat.byteOffset, bat.byteLength);
  const ratio = chunkRatio(params.blockSize, params.logicalSectorSize);
  const reserved: Array<[number, number, string]> = [
    [0, HEADER_SECTION_SIZE, 'the header section'],
    [h.logOffset, h.logOffset + h.logLength, 'the log'],
    [regions.batOffset, regions.batOffset + regions.batLength, 'the BAT region'],
    [regions.metadataOffset, regions.metadataOffset + regions.metadataLength, 'the metadata region'],
  ];
  const used: Array<[number, number, number]> = [];
  let end = 0;
  for (let i = 0; i < entries; i++) {
    const isBitmap = (i + 1) % (ratio + 1) === 0;
    const state = batEntryState(view, i);
    let len: number;
    if (isBitmap) {
      if (state === SB_BLOCK_NOT_PRESENT) continue;
      if (state !== SB_BLOCK_PRESENT) throw new BlockFormatError(name, 'BAT', `sector bitmap entry ${i} has state ${state}, which is reserved`);
      if (!params.hasParent) continue; // meaningless (and ignored) outside differencing files
      len = SECTOR_BITMAP_BLOCK_SIZE;
    } else {
      if (state === 4 || (state === PayloadState.PartiallyPresent && !params.hasParent)) {
        throw new BlockFormatError(name, 'BAT', `payload entry ${i} has state ${state}, which is not valid in a ${params.hasParent ? 'differencing' : 'non-differencing'} file`);
      }
      if (state !== PayloadState.FullyPresent && state !== PayloadState.PartiallyPresent) continue;
      len = params.blockSize;
    }
    const at = batEntryOffsetMB(view, i) * MiB;
    if (at + len > fileSize) {
      throw new BlockFormatError(name, 'BAT', `entry ${i} points to [${at}, ${at + len}) beyond the end of the file (${fileSize} bytes)`, 'the image is truncated or its BAT is damaged');
    }
    for (const [s, e, what] of reserved) {
      if (at < e && at + len > s) throw new BlockFormatError(name, 'BAT', `entry ${i} points to [${at}, ${at + len}) overlapping ${what}`);
    }
    used.push([at, len, i]);
    end = Math.max(end, at + len);
  }
  used.sort((a, b) => a[0] - b[0]);
  for (let k = 1; k < used.length; k++) {
    const p = used[k - 1];
    const c = used[k];
    if (p !== undefined && c !== undefined && p[0] + p[1] > c[0]) {
      throw new BlockFormatError(name, 'BAT', `entries ${p[2]} and ${c[2]} point to overlapping blocks at ${p[0]} and ${c[0]}`);
    }
  }
  return end;
}

/** 2.6.2.6.3: try relative_path, volume_path, absolute_win32_path; check parent_linkage against the parent's DataWriteGuid. */
async function openParent(
  name: string,
  locator: Map<string, string> | undefined,
  opts: BlockOpenOptions,
  ctx: VhdxOpenContext,
): Promise<{ parent: BlockDevice; parentFilename: string }> {
  if (locator === undefined) throw new BlockFormatError(name, 'parent locator', 'missing');
  const candidates: string[] = [];
  for (const key of ['relative_path', 'volume_path', 'absolute_win32_path']) {
    const v = locator.get(key);
    if (v === undefined) continue;
    let p = v.replace(/^\\\\\?\\/, '');
    // Windows drive letters and volume GUID paths cannot name a file here.
    if (/^[a-zA-Z]:[\\/]/.test(p) || p.startsWith('Volume{') || p.startsWith('\\\\')) continue;
    p = p.replace(/\\/g, '/');
    if (!candidates.includes(p)) candidates.push(p);
  }
  const linkages = [locator.get('parent_linkage'), locator.get('parent_linkage2')].filter((x): x is string => x !== undefined).map((s) => s.replace(/[{}]/g, '').toLowerCase());
  const found = await openFirstParentCandidate({
    child: name,
    candidates,
    format: 'vhdx',
    openBacking: opts.openBacking,
    chain: ctx.chain,
    openDirect: (resolved, chain) => VhdxDevice.open({ filename: resolved, readOnly: true }, { chain }),
  });
  if (found === undefined) {
    throw new BlockFormatError(
      name,
      'parent locator',
      candidates.length === 0 ? 'names no parent path usable on this host' : `no parent found; tried ${candidates.map((c) => resolveParentCandidate(name, c)).join(', ')}`,
      'put the parent image where relative_path points',
    );
  }
  const { parent, parentFilename, resolved } = found;
  if (parent instanceof VhdxDevice && !linkages.includes(guidToString(parent.dataWriteGuid).toLowerCase())) {
    await parent.close();
    throw new BlockFormatError(
      name,
      'parent locator',
      `parent_linkage {${linkages.join('}, {')}} does not match the DataWriteGuid {${guidToString(parent.dataWriteGuid)}} of ${resolved}`,
      'the parent was modified after this differencing file was created; its data no longer applies',
    );
  }
  return { parent, parentFilename };
}

