/**
 * An open VHD image (Microsoft "Virtual Hard Disk Image Format
 * Specification": "Fixed Hard Disk Image", "Dynamic Hard Disk Image",
 * "Implementing a Dynamic Disk", "Implementing a Differencing Hard Disk").
 *
 * Dynamic and differencing disks: a BAT maps each block to a sector offset;
 * each block is a sector bitmap (MSB first, one bit per 512-byte sector)
 * followed by the data. A clear bit means "not written here": zero in a
 * dynamic disk, the parent's data in a differencing disk.
 *
 * Crash safety. Data goes straight to the file; metadata is written back on
 * flush in the order the spec's readers need: data durable, then bitmaps and
 * the moved footer, durable, then BAT entries, durable. A crash before a
 * flush loses only unflushed writes (newly allocated blocks are unreferenced
 * space). An allocation zeroes the new block's bitmap area (which overwrites
 * the old trailing footer) and writes the footer at the new end of file at
 * once, so the file always ends with a footer.
 *
 * Discard is a no-op: the format has no way to deallocate a block, and
 * clearing bitmap bits is unsafe because QEMU ignores bitmaps of dynamic disks
 * and would read whatever the data area holds.
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
  type ImageInfo,
  type WriteOptions,
  type WriteZeroesOptions,
} from '@tsvmm/block';
import {
  BAT_UNUSED,
  CHS_MAX,
  DYNAMIC_COOKIE,
  DYNAMIC_HEADER_SIZE,
  DiskType,
  FOOTER_CHECKSUM_OFFSET,
  FOOTER_COOKIE,
  FOOTER_SIZE,
  HEADER_CHECKSUM_OFFSET,
  NO_OFFSET,
  SECTOR,
  VHD_MAX_SECTORS,
  bitmapRun,
  bitmapSet,
  bitmapSizeFor,
  bitmapTest,
  parseDynamicHeader,
  parseFooter,
  serializeFooter,
  sizeAndGeometryFor,
  vhdChecksum,
  virtualSizeOf,
  type DynamicHeader,
  type Footer,
} from './structures.js';

/** Clean bitmaps kept in memory (512 B each for 2 MiB blocks). */
const BITMAP_CACHE_ENTRIES = 4096;
/** Dirty bitmaps beyond this trigger a write-back. */
const MAX_DIRTY_BITMAPS = 1024;
/** Parent locator data longer than this is not a path. */
const MAX_LOCATOR_BYTES = 64 * 1024;

interface DynamicState {
  header: DynamicHeader;
  bat: Uint32Array;
  batOffset: number;
  blockSize: number;
  bitmapSize: number;
  sectorsPerBlock: number;
  /** where the next block goes (the trailing footer's position) */
  freeDataBlockOffset: number;
  bitmaps: LruCache<number, Uint8Array>;
  dirtyBitmaps: Map<number, Uint8Array>;
  /** BAT sectors (index into the BAT in 512-byte units) to write back */
  dirtyBatSectors: Set<number>;
  /** a block was allocated since the last write-back: footer moved */
  footerMoved: boolean;
}

export interface VpcOpenContext {
  /** realpaths of images already open in this chain (loop detection without a registry) */
  chain?: string[];
}

export class VpcDevice implements BlockDevice {
  readonly format = 'vpc';
  readonly alignment = SECTOR;
  /** metadata updates (block allocation, bitmap bits, the flush write-back) run one at a time; data I/O stays concurrent */
  private readonly meta = new AsyncRwLock();
  private closed = false;

  private constructor(
    private readonly file: ImageFile,
    private footer: Footer,
    public size: number,
    private readonly dyn: DynamicState | undefined,
    readonly parent: BlockDevice | undefined,
    readonly parentFilename: string | undefined,
  ) {}

  get filename(): string {
    return this.file.filename;
  }
  get readOnly(): boolean {
    return this.file.readOnly;
  }
  get diskType(): DiskType {
    return this.footer.diskType;
  }
  get uniqueId(): Uint8Array {
    return this.footer.uniqueId;
  }
  get timeStamp(): number {
    return this.footer.timeStamp;
  }
  get blockSize(): number | undefined {
    return this.dyn?.blockSize;
  }

  static async open(opts: BlockOpenOptions, ctx: VpcOpenContext = {}): Promise<VpcDevice> {
    const file = await ImageFile.open(opts.filename, { readOnly: opts.readOnly ?? false });
    let parent: BlockDevice | undefined;
    try {
      const fileSize = await file.size();
      const footer = await readFooter(file, fileSize);
      const size = virtualSizeOf(footer);
      const name = file.filename;
      if (!Number.isSafeInteger(size) || size % SECTOR !== 0) {
        throw new BlockFormatError(name, 'footer', `disk size ${size} is not a whole number of 512-byte sectors`);
      }
      if (footer.diskType === DiskType.Fixed) {
        if (size > fileSize - FOOTER_SIZE) {
          throw new BlockFormatError(
            name,
            'footer',
            `fixed disk of ${size} bytes needs a file of ${size + FOOTER_SIZE} bytes, but the file has ${fileSize}`,
            'the image is truncated',
          );
        }
        return new VpcDevice(file, footer, size, undefined, undefined, undefined);
      }
      if (size / SECTOR > VHD_MAX_SECTORS) {
        throw new BlockFormatError(name, 'footer', `disk size ${size} exceeds the VHD maximum of 2040 GiB`);
      }
      const dyn = await readDynamic(file, fileSize, footer, size);
      let parentFilename: string | undefined;
      if (footer.diskType === DiskType.Differencing) {
        ({ parent, parentFilename } = await openParent(file, fileSize, dyn.header, opts, ctx));
      }
      return new VpcDevice(file, footer, size, dyn, parent, parentFilename);
    } catch (e) {
      return closeAfterFailedOpen(e, [parent, file]);
    }
  }

  // ---- reads ----------------------------------------------------------------

  async read(offset: number, buf: Uint8Array): Promise<void> {
    checkRequest(this, offset, buf.length);
    const dyn = this.dyn;
    if (dyn === undefined) {
      await this.file.readZeroFilled(offset, buf);
      return;
    }
    await forEachBlockPiece(offset, buf, dyn.blockSize, (blockIndex, inBlock, piece) => this.readInBlock(dyn, blockIndex, inBlock, piece));
  }

  private async readInBlock(dyn: DynamicState, blockIndex: number, inBlock: number, out: Uint8Array): Promise<void> {
    const entry = dyn.bat[blockIndex] ?? BAT_UNUSED;
    const blockPos = blockIndex * dyn.blockSize;
    if (entry === BAT_UNUSED) {
      await this.readBackground(blockPos + inBlock, out);
      return;
    }
    const dataStart = entry * SECTOR + dyn.bitmapSize;
    const bm = await this.bitmap(dyn, blockIndex);
    let done = 0;
    while (done < out.length) {
      const byte = inBlock + done;
      const sector = Math.floor(byte / SECTOR);
      const present = bitmapTest(bm, sector);
      const lastSector = Math.ceil((inBlock + out.length) / SECTOR);
      const run = bitmapRun(bm, sector, lastSector, present);
      const end = Math.min((sector + run) * SECTOR, inBlock + out.length);
      const part = out.subarray(done, end - inBlock);
      if (present) await this.file.readZeroFilled(dataStart + byte, part);
      else await this.readBackground(blockPos + byte, part);
      done = end - inBlock;
    }
  }

  /** What a sector that is not stored here reads as: zero, or the parent's data. */
  private async readBackground(pos: number, out: Uint8Array): Promise<void> {
    const parent = this.parent;
    if (parent === undefined || pos >= parent.size) {
      out.fill(0);
      return;
    }
    const n = Math.min(out.length, parent.size - pos);
    await parent.read(pos, out.subarray(0, n));
    if (n < out.length) out.fill(0, n);
  }

  private async bitmap(dyn: DynamicState, blockIndex: number): Promise<Uint8Array> {
    const dirty = dyn.dirtyBitmaps.get(blockIndex);
    if (dirty !== undefined) return dirty;
    const cached = dyn.bitmaps.get(blockIndex);
    if (cached !== undefined) return cached;
    const entry = dyn.bat[blockIndex] ?? BAT_UNUSED;
    const bm = new Uint8Array(dyn.bitmapSize);
    await this.file.readZeroFilled(entry * SECTOR, bm);
    // A concurrent caller may have loaded (or dirtied) it meanwhile: keep that one.
    const again = dyn.dirtyBitmaps.get(blockIndex) ?? dyn.bitmaps.peek(blockIndex);
    if (again !== undefined) return again;
    dyn.bitmaps.set(blockIndex, bm);
    return bm;
  }

  // ---- writes ---------------------------------------------------------------

  async write(offset: number, buf: Uint8Array, opts?: WriteOptions): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, buf.length);
    const dyn = this.dyn;
    if (dyn === undefined) {
      await this.file.write(offset, buf);
    } else {
      await forEachBlockPiece(offset, buf, dyn.blockSize, (blockIndex, inBlock, piece) => this.writeInBlock(dyn, blockIndex, inBlock, piece));
    }
    if (opts?.fua) await this.flush();
  }

  private async writeInBlock(dyn: DynamicState, blockIndex: number, inBlock: number, data: Uint8Array): Promise<void> {
    const firstSector = Math.floor(inBlock / SECTOR);
    const endSector = Math.ceil((inBlock + data.length) / SECTOR);
    // Fast path: every sector already stored here, no metadata changes.
    const entry = dyn.bat[blockIndex] ?? BAT_UNUSED;
    if (entry !== BAT_UNUSED) {
      const bm = await this.bitmap(dyn, blockIndex);
      if (bitmapRun(bm, firstSector, endSector, true) === endSector - firstSector) {
        await this.file.write(entry * SECTOR + dyn.bitmapSize + inBlock, data);
        return;
      }
    }
    await this.meta.withExclusive(async () => {
      let e = dyn.bat[blockIndex] ?? BAT_UNUSED;
      if (e === BAT_UNUSED) e = await this.allocateBlock(dyn, blockIndex);
      const bm = await this.bitmap(dyn, blockIndex);
      const blockPos = blockIndex * dyn.blockSize;
      // A partially covered sector that is not stored here yet must be
      // completed from what it reads as now (zero or the parent).
      let start = inBlock;
      let payload = data;
      const headPartial = inBlock % SECTOR !== 0 && !bitmapTest(bm, firstSector);
      const tailPartial = (inBlock + data.length) % SECTOR !== 0 && !bitmapTest(bm, endSector - 1);
      if (headPartial || tailPartial) {
        start = headPartial ? firstSector * SECTOR : inBlock;
        const end = tailPartial ? endSector * SECTOR : inBlock + data.length;
        payload = new Uint8Array(end - start);
        if (headPartial) await this.readBackground(blockPos + start, payload.subarray(0, SECTOR));
        if (tailPartial) await this.readBackground(blockPos + (endSector - 1) * SECTOR, payload.subarray(payload.length - SECTOR));
        payload.set(data, inBlock - start);
      }
      await this.file.write(e * SECTOR + dyn.bitmapSize + start, payload);
      // The bit is set only in memory; it reaches the file after the data is durable (flush).
      const dirty = dyn.dirtyBitmaps.get(blockIndex) ?? bm;
      for (let s = firstSector; s < endSector; s++) bitmapSet(dirty, s);
      dyn.bitmaps.delete(blockIndex);
      dyn.dirtyBitmaps.set(blockIndex, dirty);
    });
    if (dyn.dirtyBitmaps.size > MAX_DIRTY_BITMAPS) await this.flush();
  }

  /** Puts a new block at the end of the file. Caller holds the metadata lock. */
  private async allocateBlock(dyn: DynamicState, blockIndex: number): Promise<number> {
    const start = dyn.freeDataBlockOffset;
    const sectorOffset = start / SECTOR;
    if (!Number.isInteger(sectorOffset) || sectorOffset >= BAT_UNUSED) {
      throw new BlockFormatError(this.filename, 'BAT', `file offset ${start} cannot be stored in a 32-bit sector BAT entry`);
    }
    const end = start + dyn.bitmapSize + dyn.blockSize;
    // The new footer first, so the file always ends with one; then a zero
    // bitmap over the old footer. Data stays zero: the file just grew.
    await this.file.write(end, serializeFooter(this.footer));
    await this.file.write(start, new Uint8Array(dyn.bitmapSize));
    dyn.freeDataBlockOffset = end;
    dyn.bat[blockIndex] = sectorOffset;
    dyn.dirtyBatSectors.add(Math.floor((blockIndex * 4) / SECTOR));
    dyn.dirtyBitmaps.set(blockIndex, new Uint8Array(dyn.bitmapSize));
    dyn.bitmaps.delete(blockIndex);
    dyn.footerMoved = true;
    return sectorOffset;
  }

  /** Durable data, then bitmaps, then BAT (see the file comment). */
  async flush(): Promise<void> {
    if (this.readOnly) return;
    const dyn = this.dyn;
    if (dyn === undefined || (dyn.dirtyBitmaps.size === 0 && dyn.dirtyBatSectors.size === 0)) {
      await this.file.datasync();
      return;
    }
    await this.meta.withExclusive(async () => {
      await this.file.datasync();
      for (const [blockIndex, bm] of dyn.dirtyBitmaps) {
        const entry = dyn.bat[blockIndex] ?? BAT_UNUSED;
        if (entry !== BAT_UNUSED) await this.file.write(entry * SECTOR, bm);
      }
      if (dyn.footerMoved) await this.file.write(dyn.freeDataBlockOffset, serializeFooter(this.footer));
      await this.file.datasync();
      for (const s of [...dyn.dirtyBatSectors].sort((a, b) => a - b)) {
        const first = (s * SECTOR) / 4;
        const count = Math.min(SECTOR / 4, dyn.bat.length - first);
        const out = new Uint8Array(count * 4);
        const v = new DataView(out.buffer);
        for (let i = 0; i < count; i++) v.setUint32(i * 4, dyn.bat[first + i] ?? BAT_UNUSED);
        await this.file.write(dyn.batOffset + s * SECTOR, out);
      }
      await this.file.datasync();
      for (const [blockIndex, bm] of dyn.dirtyBitmaps) dyn.bitmaps.set(blockIndex, bm);
      dyn.dirtyBitmaps.clear();
      dyn.dirtyBatSectors.clear();
      dyn.footerMoved = false;
    });
  }

  /** No-op: VHD cannot deallocate (see the file comment); the data stays readable. */
  async discard(offset: number, length: number): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
  }

  async writeZeroes(offset: number, length: number, _opts?: WriteZeroesOptions): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    const chunk = 1 << 20;
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      let n = Math.min(chunk, length - done);
      const dyn = this.dyn;
      if (dyn !== undefined) {
        n = Math.min(n, dyn.blockSize - (pos % dyn.blockSize));
        // An unallocated block of a disk without parent already reads as zero.
        if (this.parent === undefined && (dyn.bat[Math.floor(pos / dyn.blockSize)] ?? BAT_UNUSED) === BAT_UNUSED) {
          done += n;
          continue;
        }
      }
      await this.write(pos, new Uint8Array(n));
      done += n;
    }
  }

  // ---- status & info ----------------------------------------------------------

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    checkRequest(this, offset, length);
    const dyn = this.dyn;
    if (dyn === undefined) {
      return { offset, length, data: true, zero: false, allocated: true, depth: 0, hostOffset: offset, hostFile: this.filename };
    }
    const blockIndex = Math.floor(offset / dyn.blockSize);
    const inBlock = offset % dyn.blockSize;
    const entry = dyn.bat[blockIndex] ?? BAT_UNUSED;
    if (entry === BAT_UNUSED) {
      // Merge consecutive unallocated blocks into one extent.
      let end = (blockIndex + 1) * dyn.blockSize;
      for (let b = blockIndex + 1; end < offset + length && (dyn.bat[b] ?? BAT_UNUSED) === BAT_UNUSED; b++) {
        end += dyn.blockSize;
      }
      return this.backgroundStatus(offset, Math.min(end, offset + length) - offset);
    }
    const bm = await this.bitmap(dyn, blockIndex);
    const sector = Math.floor(inBlock / SECTOR);
    const present = bitmapTest(bm, sector);
    const blockEnd = Math.min(dyn.blockSize, inBlock + length);
    const run = bitmapRun(bm, sector, Math.ceil(blockEnd / SECTOR), present);
    const runLength = Math.min((sector + run) * SECTOR, blockEnd) - inBlock;
    if (!present) return this.backgroundStatus(offset, runLength);
    return {
      offset,
      length: runLength,
      data: true,
      zero: false,
      allocated: true,
      depth: 0,
      hostOffset: entry * SECTOR + dyn.bitmapSize + inBlock,
      hostFile: this.filename,
    };
  }

  private async backgroundStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    const parent = this.parent;
    if (parent === undefined || offset >= parent.size) {
      return { offset, length, data: false, zero: true, allocated: false, depth: 0 };
    }
    const s = await parent.blockStatus(offset, Math.min(length, parent.size - offset));
    return { ...s, offset, allocated: false, depth: s.depth + 1 };
  }

  async info(): Promise<ImageInfo> {
    const info: ImageInfo = {
      filename: this.filename,
      format: 'vpc',
      'virtual-size': this.size,
      'actual-size': await this.file.allocatedBytes(),
      'dirty-flag': false,
    };
    if (this.dyn !== undefined) info['cluster-size'] = this.dyn.blockSize;
    if (this.parentFilename !== undefined) {
      info['backing-filename'] = this.parentFilename;
      info['full-backing-filename'] = this.parent?.filename ?? this.parentFilename;
      info['backing-filename-format'] = 'vpc';
    }
    info['format-specific'] = {
      type: 'vpc',
      data: {
        subformat: this.dyn === undefined ? 'fixed' : this.parent !== undefined ? 'differencing' : 'dynamic',
        'creator-application': this.footer.creatorApplication.replace(/\0+$/, ''),
      },
    };
    return info;
  }

  /** Grows the disk (fixed: extends the file; dynamic: within the BAT's capacity). */
  async resize(newSize: number): Promise<void> {
    checkWritable(this);
    if (!Number.isSafeInteger(newSize) || newSize <= 0 || newSize % SECTOR !== 0) {
      throw new BlockOptionError('size', `${newSize} must be a positive multiple of 512 bytes for a VHD`);
    }
    if (newSize < this.size) {
      throw new BlockUnsupportedError(this.filename, 'shrinking', 'VHD images can only grow; convert to a new image instead');
    }
    if (newSize === this.size) return;
    const exact = sizeAndGeometryFor(newSize);
    // Geometry must describe the same size, or be the maximum (then every reader uses Current Size).
    const geometry = exact.size === newSize ? exact.geometry : { ...CHS_MAX };
    const next: Footer = { ...this.footer, currentSize: newSize, diskGeometry: geometry };
    if (this.dyn === undefined) {
      // The new footer first; then the old one, now inside the disk, becomes zeroes.
      await this.file.write(newSize, serializeFooter(next));
      await this.file.truncate(newSize + FOOTER_SIZE);
      await this.file.datasync();
      await this.file.write(this.size, new Uint8Array(FOOTER_SIZE));
    } else {
      const capacity = this.dyn.header.maxTableEntries * this.dyn.blockSize;
      if (newSize > capacity) {
        throw new BlockUnsupportedError(
          this.filename,
          'resize',
          `the BAT holds ${this.dyn.header.maxTableEntries} blocks (${capacity} bytes); growing beyond it needs a new image (tsvmm img convert)`,
        );
      }
      await this.flush();
      await this.meta.withExclusive(async () => {
        const bytes = serializeFooter(next);
        await this.file.write(0, bytes);
        await this.file.write(this.dyn?.freeDataBlockOffset ?? 0, bytes);
      });
    }
    await this.file.datasync();
    this.footer = next;
    this.size = newSize;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (!this.readOnly) await this.flush();
    } finally {
      try {
        if (this.parent !== undefined) await this.parent.close();
      } finally {
        await this.file.close();
      }
    }
  }
}

// ---- opening ------------------------------------------------------------------

function footerProblem(b: Uint8Array): string | undefined {
  const f = parseFooter(b);
  if (f.cookie !== FOOTER_COOKIE) return `cookie is '${f.cookie.replace(/[^\x20-\x7e]/g, '?')}', expected '${FOOTER_COOKIE}'`;
  const sum = vhdChecksum(b, FOOTER_CHECKSUM_OFFSET);
  if (sum !== f.checksum) return `checksum is 0x${f.checksum.toString(16)}, computed 0x${sum.toString(16)}`;
  if (f.diskType !== DiskType.Fixed && f.diskType !== DiskType.Dynamic && f.diskType !== DiskType.Differencing) {
    return `disk type ${f.diskType} is not fixed (2), dynamic (3) or differencing (4)`;
  }
  if (f.fileFormatVersion >>> 16 !== 1) return `file format version 0x${f.fileFormatVersion.toString(16)} is not 1.x`;
  return undefined;
}

/**
 * The footer at the end of the file, or (dynamic disks, whose end footer can
 * be lost mid-allocation) the copy at offset 0. Pre-2004 Virtual PC wrote a
 * 511-byte footer, so the end footer may start at size - 511.
 */
async function readFooter(file: ImageFile, fileSize: number): Promise<Footer> {
  const name = file.filename;
  if (fileSize < FOOTER_SIZE) {
    throw new BlockFormatError(name, 'footer', `file is ${fileSize} bytes, smaller than the 512-byte footer`, 'not a VHD image');
  }
  const problems: string[] = [];
  for (const [where, at] of [
    ['end of file', fileSize - FOOTER_SIZE],
    ['end of file (511-byte footer)', fileSize - 511],
    ['copy at offset 0', 0],
  ] as const) {
    const b = new Uint8Array(FOOTER_SIZE);
    await file.readZeroFilled(at, where.includes('511') ? b.subarray(0, 511) : b);
    const problem = footerProblem(b);
    if (problem === undefined) {
      const f = parseFooter(b);
      // Only a dynamic disk has a copy at offset 0.
      if (at === 0 && f.diskType === DiskType.Fixed) {
        problems.push(`${where}: holds a fixed-disk footer, which has no copy at offset 0`);
        continue;
      }
      return f;
    }
    problems.push(`${where}: ${problem}`);
  }
  throw new BlockFormatError(name, 'footer', `no valid footer found (${problems.join('; ')})`, 'not a VHD image, or a damaged one');
}

async function readDynamic(file: ImageFile, fileSize: number, footer: Footer, size: number): Promise<DynamicState> {
  const name = file.filename;
  const headerOffset = footer.dataOffset === NO_OFFSET ? Infinity : Number(footer.dataOffset);
  if (!Number.isSafeInteger(headerOffset) || headerOffset < FOOTER_SIZE || headerOffset + DYNAMIC_HEADER_SIZE > fileSize) {
    throw new BlockFormatError(
      name,
      'footer',
      `data offset ${footer.dataOffset} of the dynamic disk header is outside the file (${fileSize} bytes)`,
    );
  }
  const hb = new Uint8Array(DYNAMIC_HEADER_SIZE);
  await file.readExact(headerOffset, hb, 'dynamic disk header');
  const header = parseDynamicHeader(hb);
  if (header.cookie !== DYNAMIC_COOKIE) {
    throw new BlockFormatError(name, 'dynamic disk header', `cookie is '${header.cookie.replace(/[^\x20-\x7e]/g, '?')}', expected '${DYNAMIC_COOKIE}'`);
  }
  const sum = vhdChecksum(hb, HEADER_CHECKSUM_OFFSET);
  if (sum !== header.checksum) {
    throw new BlockFormatError(name, 'dynamic disk header', `checksum is 0x${header.checksum.toString(16)}, computed 0x${sum.toString(16)}`);
  }
  const blockSize = header.blockSize;
  if (blockSize < SECTOR || (blockSize & (blockSize - 1)) !== 0 || blockSize > 1 << 30) {
    throw new BlockFormatError(name, 'dynamic disk header', `block size ${blockSize} is not a power of two between 512 B and 1 GiB`);
  }
  const entries = header.maxTableEntries;
  if (entries * blockSize < size) {
    throw new BlockFormatError(
      name,
      'dynamic disk header',
      `max table entries ${entries} x block size ${blockSize} covers ${entries * blockSize} bytes, less than the disk size ${size}`,
    );
  }
  if (entries > Math.ceil((VHD_MAX_SECTORS * SECTOR) / blockSize)) {
    throw new BlockFormatError(name, 'dynamic disk header', `max table entries ${entries} is beyond the 2040 GiB VHD limit`);
  }
  const batOffset = header.tableOffset;
  const batBytes = entries * 4;
  if (!Number.isSafeInteger(batOffset) || batOffset < FOOTER_SIZE || batOffset + batBytes > fileSize) {
    throw new BlockFormatError(name, 'BAT', `table [${batOffset}, +${batBytes}) is outside the file (${fileSize} bytes)`, 'the image is truncated or damaged');
  }
  const raw = new Uint8Array(batBytes);
  await file.readExact(batOffset, raw, 'BAT');
  const v = new DataView(raw.buffer);
  const bat = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) bat[i] = v.getUint32(i * 4);

  const bitmapSize = bitmapSizeFor(blockSize);
  const span = bitmapSize + blockSize;
  const batEnd = Math.ceil((batOffset + batBytes) / SECTOR) * SECTOR;
  const reserved: Array<[number, number, string]> = [
    [0, FOOTER_SIZE, 'the footer copy'],
    [headerOffset, headerOffset + DYNAMIC_HEADER_SIZE, 'the dynamic disk header'],
    [batOffset, batEnd, 'the BAT'],
  ];
  let freeDataBlockOffset = Math.max(batEnd, headerOffset + DYNAMIC_HEADER_SIZE);
  const used: Array<[number, number]> = [];
  for (let i = 0; i < entries; i++) {
    const e = bat[i] ?? BAT_UNUSED;
    if (e === BAT_UNUSED) continue;
    const start = e * SECTOR;
    const end = start + span;
    // A block of a disk smaller than the BAT's last block may have been cut at the data end.
    if (end > fileSize) {
      throw new BlockFormatError(
        name,
        'BAT',
        `entry ${i} points to block [${start}, ${end}) beyond the end of the file (${fileSize} bytes)`,
        'the image is truncated or its BAT is damaged',
      );
    }
    for (const [rs, re, what] of reserved) {
      if (start < re && end > rs) {
        throw new BlockFormatError(name, 'BAT', `entry ${i} points to block [${start}, ${end}) overlapping ${what}`);
      }
    }
    used.push([start, i]);
    freeDataBlockOffset = Math.max(freeDataBlockOffset, end);
  }
  used.sort((a, b) => a[0] - b[0]);
  for (let k = 1; k < used.length; k++) {
    const prev = used[k - 1];
    const cur = used[k];
    if (prev !== undefined && cur !== undefined && prev[0] + span > cur[0]) {
      throw new BlockFormatError(name, 'BAT', `entries ${prev[1]} and ${cur[1]} point to overlapping blocks at ${prev[0]} and ${cur[0]}`);
    }
  }
  for (const loc of header.parentLocatorEntries) {
    if (loc.platformCode === '\0\0\0\0' || loc.platformDataLength === 0) continue;
    const end = loc.platformDataOffset + loc.platformDataLength;
    if (Number.isSafeInteger(end) && end <= fileSize) freeDataBlockOffset = Math.max(freeDataBlockOffset, Math.ceil(end / SECTOR) * SECTOR);
  }
  // New blocks go where the trailing footer is (never over data we do not know about).
  freeDataBlockOffset = Math.max(freeDataBlockOffset, Math.floor((fileSize - FOOTER_SIZE) / SECTOR) * SECTOR);
  return {
    header,
    bat,
    batOffset,
    blockSize,
    bitmapSize,
    sectorsPerBlock: blockSize / SECTOR,
    freeDataBlockOffset,
    bitmaps: new LruCache(BITMAP_CACHE_ENTRIES),
    dirtyBitmaps: new Map(),
    dirtyBatSectors: new Set(),
    footerMoved: false,
  };
}

/** Platform codes in the order we try them: relative paths first (they survive moves). */
const LOCATOR_ORDER = ['W2ru', 'Wi2r', 'MacX', 'W2ku', 'Wi2k'] as const;

function decodeLocator(code: string, raw: Uint8Array): string | undefined {
  let s: string;
  if (code === 'W2ru' || code === 'W2ku') s = Buffer.from(raw).toString('utf16le');
  else if (code === 'MacX') s = decodeURIComponent(Buffer.from(raw).toString('utf8').replace(/^file:\/\/(localhost)?/, ''));
  else s = Buffer.from(raw).toString('latin1');
  s = s.replace(/\0+$/, '');
  if (s === '') return undefined;
  // Windows spellings: ".\dir\parent.vhd" works here once separators are '/';
  // a drive-letter path ("c:\...") cannot name a file on this host.
  if (/^[a-zA-Z]:[\\/]/.test(s) || s.startsWith('\\\\')) return undefined;
  return s.replace(/\\/g, '/');
}

/** Candidate parent file names from the parent locators and the Parent Unicode Name. */
export async function parentCandidates(file: ImageFile, fileSize: number, header: DynamicHeader): Promise<string[]> {
  const out: string[] = [];
  for (const code of LOCATOR_ORDER) {
    for (const loc of header.parentLocatorEntries) {
      if (loc.platformCode !== code) continue;
      const len = loc.platformDataLength;
      const off = loc.platformDataOffset;
      if (len === 0 || len > MAX_LOCATOR_BYTES || !Number.isSafeInteger(off) || off + len > fileSize) continue;
      const raw = new Uint8Array(len);
      await file.readExact(off, raw, `parent locator ${code}`);
      const name = decodeLocator(code, raw);
      if (name !== undefined && !out.includes(name)) out.push(name);
    }
  }
  const unicode = header.parentUnicodeName.replace(/\\/g, '/');
  const base = unicode.split('/').pop() ?? '';
  if (base !== '' && !out.includes(base)) out.push(base);
  return out;
}

async function openParent(
  file: ImageFile,
  fileSize: number,
  header: DynamicHeader,
  opts: BlockOpenOptions,
  ctx: VpcOpenContext,
): Promise<{ parent: BlockDevice; parentFilename: string }> {
  const name = file.filename;
  const candidates = await parentCandidates(file, fileSize, header);
  const found = await openFirstParentCandidate({
    child: name,
    candidates,
    format: 'vpc',
    openBacking: opts.openBacking,
    chain: ctx.chain,
    openDirect: (resolved, chain) => VpcDevice.open({ filename: resolved, readOnly: true }, { chain }),
  });
  if (found === undefined) {
    throw new BlockFormatError(
      name,
      'parent locator',
      candidates.length === 0
        ? 'differencing disk names no parent'
        : `no parent found; tried ${candidates.map((c) => resolveParentCandidate(name, c)).join(', ')}`,
      'put the parent image next to the differencing disk',
    );
  }
  const { parent, parentFilename, resolved } = found;
  if (parent instanceof VpcDevice && !sameId(parent.uniqueId, header.parentUniqueId)) {
    await parent.close();
    throw new BlockFormatError(
      name,
      'dynamic disk header',
      `parent unique id ${hex(header.parentUniqueId)} does not match ${resolved} (unique id ${hex(parent.uniqueId)})`,
      'the parent was replaced or modified; this differencing disk no longer applies to it',
    );
  }
  return { parent, parentFilename };
}

function sameId(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function hex(b: Uint8Array): string {
  return Buffer.from(b).toString('hex');
}

