/**
 * A qcow2 image (versions 2 and 3) as a BlockDevice.
 * Spec: qemu/qemu docs/interop/qcow2.txt ("Cluster mapping", "Host cluster
 * management", "Header" for the dirty, corrupt and lazy refcounts bits).
 *
 * Write ordering (what makes an allocation survive a crash, and `flush`
 * mean durable):
 *   1. guest data goes to freshly allocated clusters (refcount bumped in the
 *      refcount block cache);
 *   2. on flush (or when a dirty L2 table is evicted): dirty refcount blocks
 *      are written, fdatasync — data and refcounts are durable;
 *   3. dirty L2 tables are written; if L1 entries changed, fdatasync, then
 *      the L1 entries are written; fdatasync;
 *   4. only now are clusters whose last reference was dropped (overwritten
 *      compressed clusters, discards) decremented and their host space
 *      punched, so no durable L2 entry ever points to a free cluster.
 * With lazy refcounts, step 2 is skipped: the dirty bit is set (and synced)
 * before the first allocation, refcounts are written on close, and an image
 * left dirty is repaired on open by rebuilding its refcounts.
 *
 * Concurrency: lookups (read, block status) take the lock shared; anything
 * that allocates, frees or rewrites metadata takes it exclusive.
 */
import {
  AsyncRangeLock,
  AsyncRwLock,
  BlockFormatError,
  BlockOptionError,
  BlockReadOnlyError,
  BlockUnsupportedError,
  ImageFile,
  LruCache,
  cacheModeIsUnsafe,
  checkRequest,
  checkWritable,
  closeAfterFailedOpen,
  type BlockDevice,
  type BlockOpenOptions,
  type BlockStatusExtent,
  type CheckResult,
  type ImageInfo,
  type WriteOptions,
  type WriteZeroesOptions,
} from '@tsvmm/block';
import {
  entryOffset,
  HI_COMPRESSED,
  HI_COPIED,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  COMPAT_LAZY_REFCOUNTS,
  AUTOCLEAR_BITMAPS,
  LO_ZERO,
  parseHeader,
  serializeHeader,
  writeU64,
  type Qcow2Header,
} from './layout.js';
import { Qcow2Refcounts, type RefcountHost } from './refcounts.js';
import {
  compressCluster,
  compressedHostClusters,
  decodeCompressedEntry,
  decompressCluster,
  encodeCompressedEntry,
} from './compress.js';

/** classifySync's marker for an entry that points outside the file */
const BAD_ENTRY = -1 as const;

type Classified =
  | { kind: ClusterKind; host: number; copied: boolean }
  | { kind: typeof BAD_ENTRY; host: number; copied: boolean };

export const enum ClusterKind {
  Unallocated,
  Zero,
  Normal,
  Compressed,
}

/** One run of guest clusters of the same kind, as found in an L2 table. */
export interface ClusterRun {
  kind: ClusterKind;
  /** guest bytes covered from the requested position */
  length: number;
  /** host offset of the requested position (Normal), or of the first cluster's preallocation (Zero) */
  host: number;
  /** Normal clusters whose refcount is exactly one (COPIED): writable in place */
  copied: boolean;
  /** raw entry of the first cluster (compressed clusters are decoded from it) */
  hi: number;
  lo: number;
}

interface WritePlan {
  /** data to put at host offsets (no metadata depends on them until linked) */
  writes: Array<{ host: number; data: Uint8Array }>;
  /** guest cluster -> new host cluster, applied after the data is written */
  links: Array<{ ci: number; host: number }>;
}

interface L2Table {
  offset: number;
  buf: Uint8Array;
  view: DataView;
  dirty: boolean;
}

const DEFAULT_L2_CACHE_BYTES = 4 * 1024 * 1024;
const DEFAULT_REFCOUNT_CACHE_BYTES = 1024 * 1024;

export interface Qcow2OpenExtras {
  /** open a corrupt or dirty image read-write without repairing it (used by check -r) */
  forRepair?: boolean;
}

export class Qcow2Device implements BlockDevice, RefcountHost {
  readonly format = 'qcow2';
  readonly alignment = 1;
  readonly supportsCompressedWrites = true;
  readonly clusterSize: number;
  readonly clusterBits: number;
  readonly l2Entries: number;
  hostEnd: number;
  readonly refcounts: Qcow2Refcounts;
  private readonly lock = new AsyncRwLock();
  /** guest clusters with a write, discard or zeroing in flight (cluster-aligned byte ranges) */
  private readonly inFlight = new AsyncRangeLock();
  /** unbounded map in LRU order: dirty tables may only leave through writebackL2 */
  private readonly l2Cache = new LruCache<number, L2Table>(Number.MAX_SAFE_INTEGER);
  private readonly l2Capacity: number;
  private readonly l2Loading = new Map<number, Promise<L2Table>>();
  private l1: Uint8Array;
  private l1View: DataView;
  private readonly l1Dirty = new Set<number>();
  /** host offsets of L2 tables referenced by the active L1, for overlap checks */
  private l2Set = new Set<number>();
  /** host clusters whose reference was dropped; decremented after the L2/L1 change is durable */
  private pendingFree: number[] = [];
  /** we set the dirty bit for lazy refcounts in this session */
  private lazyDirty = false;
  private corruptReason: string | undefined;
  /** current cluster holding compressed data and the next free byte in it */
  private compressedCursor = 0;
  private readonly decompressed = new LruCache<number, Uint8Array>(8);
  private closed = false;

  private constructor(
    readonly file: ImageFile,
    readonly header: Qcow2Header,
    private writable: boolean,
    public backing: BlockDevice | undefined,
    l1: Uint8Array,
    reftable: Uint8Array,
    fileSize: number,
    options: Record<string, string>,
  ) {
    this.clusterBits = header.cluster_bits;
    this.clusterSize = 2 ** header.cluster_bits;
    this.l2Entries = this.clusterSize / 8;
    this.hostEnd = Math.ceil(fileSize / this.clusterSize) * this.clusterSize;
    this.l1 = l1;
    this.l1View = new DataView(l1.buffer, l1.byteOffset, l1.byteLength);
    const l2CacheBytes = Number(options['l2-cache-size'] ?? DEFAULT_L2_CACHE_BYTES);
    const rcCacheBytes = Number(options['refcount-cache-size'] ?? DEFAULT_REFCOUNT_CACHE_BYTES);
    this.l2Capacity = Math.max(4, Math.floor(l2CacheBytes / this.clusterSize));
    this.refcounts = new Qcow2Refcounts(
      this,
      header.refcount_order,
      header.refcount_table_offset,
      header.refcount_table_clusters,
      reftable,
      Math.floor(rcCacheBytes / this.clusterSize),
    );
    this.rebuildL2Set();
  }

  get filename(): string {
    return this.file.filename;
  }

  get readOnly(): boolean {
    return !this.writable;
  }

  get size(): number {
    return this.header.size;
  }

  get version(): number {
    return this.header.version;
  }

  get l1Size(): number {
    return this.header.l1_size;
  }

  static async open(opts: BlockOpenOptions, extras: Qcow2OpenExtras = {}): Promise<Qcow2Device> {
    const readOnly = opts.readOnly ?? false;
    if (opts.check) extras = { ...extras, forRepair: true };
    const file = await ImageFile.open(opts.filename, { readOnly, unsafeNoSync: cacheModeIsUnsafe(opts.options) });
    let backing: BlockDevice | undefined;
    try {
      const fileSize = await file.size();
      let first = new Uint8Array(Math.min(fileSize, 65536));
      await file.readExact(0, first, 'header');
      const bits = first.length >= 24 ? new DataView(first.buffer).getUint32(20) : 0;
      if (bits > 16 && bits <= 21) {
        first = new Uint8Array(Math.min(fileSize, 2 ** bits));
        await file.readExact(0, first, 'header');
      }
      const header = parseHeader(opts.filename, first, fileSize);
      const cs = 2 ** header.cluster_bits;
      if (header.incompatible_features & INCOMPAT_CORRUPT && !readOnly && !extras.forRepair) {
        throw new BlockFormatError(
          opts.filename,
          'header',
          'the image is marked corrupt (incompatible_features corrupt bit) and cannot be opened read-write',
          'open it read-only to read what is left, or repair it with `tsvmm img check -r all`',
        );
      }
      const l1 = new Uint8Array(header.l1_size * 8);
      await file.readExact(header.l1_table_offset, l1, 'L1 table');
      const reftable = new Uint8Array(header.refcount_table_clusters * cs);
      await file.readExact(header.refcount_table_offset, reftable, 'refcount table');
      if (header.backingFile !== undefined) {
        if (!opts.openBacking) {
          throw new BlockFormatError(opts.filename, 'backing file', `names '${header.backingFile}' but no way to open it was given`);
        }
        try {
          backing = await opts.openBacking(header.backingFile, header.backingFormat, true);
        } catch (e) {
          if (e instanceof BlockFormatError && e.structure === 'backing chain') throw e;
          throw new BlockFormatError(
            opts.filename,
            'backing file',
            `cannot open '${header.backingFile}'${header.backingFormat ? ` (format ${header.backingFormat})` : ''}: ${e instanceof Error ? e.message : String(e)}`,
            'fix the name with `tsvmm img rebase -u -b FILE`',
          );
        }
      }
      const dev = new Qcow2Device(file, header, !readOnly, backing, l1, reftable, fileSize, opts.options ?? {});
      if (!readOnly) await dev.prepareForWriting(extras);
      return dev;
    } catch (e) {
      return closeAfterFailedOpen(e, [backing, file]);
    }
  }

  /** Clears autoclear bits we do not maintain and repairs an image left dirty. */
  private async prepareForWriting(extras: Qcow2OpenExtras): Promise<void> {
    const h = this.header;
    if (h.version >= 3 && h.autoclear_features !== 0n) {
      // we do not update bitmaps (or anything else autoclear protects)
      h.autoclear_features = 0n;
      await this.writeFeatureWords();
    }
    if (h.incompatible_features & INCOMPAT_DIRTY && !extras.forRepair) {
      const { checkImage } = await import('./check.js');
      await checkImage(this, { repair: 'all' });
      h.incompatible_features &= ~INCOMPAT_DIRTY;
      await this.writeFeatureWords();
    }
  }

  /** Rewrites incompatible/compatible/autoclear features (bytes 72..95) and syncs. */
  async writeFeatureWords(): Promise<void> {
    if (this.header.version < 3) return;
    const b = new Uint8Array(24);
    const v = new DataView(b.buffer);
    v.setBigUint64(0, this.header.incompatible_features);
    v.setBigUint64(8, this.header.compatible_features);
    v.setBigUint64(16, this.header.autoclear_features);
    await this.file.write(72, b);
    await this.file.datasync();
  }

  /** Rewrites the whole header area (extensions, backing name) and syncs. */
  async rewriteHeader(): Promise<void> {
    const bytes = serializeHeader(this.filename, this.header);
    await this.file.datasync();
    await this.file.write(0, bytes);
    await this.file.datasync();
  }

  // ---- corruption and overlap -------------------------------------------

  async corruption(structure: string, detail: string): Promise<BlockFormatError> {
    const err = new BlockFormatError(
      this.filename,
      structure,
      detail,
      this.writable
        ? 'the image is now marked corrupt; repair it with `tsvmm img check -r all`'
        : 'check it with `tsvmm img check`',
    );
    if (this.writable && this.header.version >= 3 && this.corruptReason === undefined) {
      this.corruptReason = `${structure}: ${detail}`;
      this.header.incompatible_features |= INCOMPAT_CORRUPT;
      try {
        await this.writeFeatureWords();
      } catch {
        // the image is already broken; the original error is what matters
      }
    } else if (this.writable) {
      this.corruptReason ??= `${structure}: ${detail}`;
    }
    return err;
  }

  checkOverlap(offset: number, len: number, what: string): void {
    const cs = this.clusterSize;
    const h = this.header;
    const l1Start = h.l1_table_offset;
    const l1End = l1Start + h.l1_size * 8;
    const rtStart = this.refcounts.tableOffset;
    const rtEnd = rtStart + this.refcounts.tableClusters * cs;
    const end = offset + len;
    const hit = (name: string): never => {
      // synchronous callers need the error now; marking corrupt happens asynchronously
      void this.corruption(what, `[${offset}, ${end}) overlaps the ${name}`);
      throw new BlockFormatError(this.filename, what, `[${offset}, ${end}) overlaps the ${name}`, 'repair the image with `tsvmm img check -r all`');
    };
    if (offset < cs) hit('header');
    if (offset < l1End && l1Start < end && h.l1_size > 0) hit('L1 table');
    if (offset < rtEnd && rtStart < end) hit('refcount table');
    for (let c = offset - (offset % cs); c < end; c += cs) {
      if (this.l2Set.has(c)) hit('L2 table');
      if (this.refcounts.isBlock(c)) hit('refcount block');
    }
  }

  private rebuildL2Set(): void {
    this.l2Set = new Set();
    for (let i = 0; i < this.header.l1_size; i++) {
      const o = this.l1Offset(i);
      if (o !== 0) this.l2Set.add(o);
    }
  }

  private assertWritable(): void {
    checkWritable(this);
    if (this.corruptReason !== undefined) {
      throw new BlockReadOnlyError(this.filename, `metadata corruption was detected (${this.corruptReason}); repair with \`tsvmm img check -r all\``);
    }
  }

  // ---- L1 / L2 -----------------------------------------------------------

  l1Offset(i: number): number {
    return entryOffset(this.l1View.getUint32(i * 8), this.l1View.getUint32(i * 8 + 4));
  }

  l1Raw(i: number): { hi: number; lo: number } {
    return { hi: this.l1View.getUint32(i * 8), lo: this.l1View.getUint32(i * 8 + 4) };
  }

  private async validL2Offset(l1i: number): Promise<number> {
    const off = this.l1Offset(l1i);
    if (off === 0) return 0;
    const cs = this.clusterSize;
    if (off % cs !== 0) throw await this.corruption('L1 table', `entry ${l1i} points to ${off}, which is not cluster aligned`);
    if (off >= this.hostEnd) throw await this.corruption('L1 table', `entry ${l1i} points to ${off}, past the end of the file (${this.hostEnd})`);
    const h = this.header;
    if (off < cs || (off < h.l1_table_offset + h.l1_size * 8 && h.l1_table_offset < off + cs)) {
      throw await this.corruption('L1 table', `entry ${l1i} points to ${off}, which overlaps the header or the L1 table`);
    }
    if (off < this.refcounts.tableOffset + this.refcounts.tableClusters * cs && this.refcounts.tableOffset < off + cs) {
      throw await this.corruption('L1 table', `entry ${l1i} points to ${off}, which overlaps the refcount table`);
    }
    return off;
  }

  /** The L2 table for L1 index l1i, or undefined if none is allocated. */
  private async l2ForRead(l1i: number, exclusive: boolean): Promise<L2Table | undefined> {
    const off = await this.validL2Offset(l1i);
    if (off === 0) return undefined;
    const hit = this.l2Cache.get(off);
    if (hit) return hit;
    let loading = this.l2Loading.get(off);
    if (!loading) {
      loading = (async () => {
        const buf = new Uint8Array(this.clusterSize);
        await this.file.readZeroFilled(off, buf);
        const t: L2Table = { offset: off, buf, view: new DataView(buf.buffer), dirty: false };
        await this.makeRoomInL2Cache(exclusive);
        this.l2Cache.set(off, t);
        return t;
      })();
      this.l2Loading.set(off, loading);
      // callers await `loading` itself and see its error; this derived promise only clears the entry
      loading.finally(() => this.l2Loading.delete(off)).catch(() => undefined);
    }
    return loading;
  }

  private async makeRoomInL2Cache(exclusive: boolean): Promise<void> {
    for (let guard = 0; this.l2Cache.size >= this.l2Capacity && guard < 64; guard++) {
      const clean = this.l2Cache.oldest((_, t) => !t.dirty).next();
      if (!clean.done) {
        this.l2Cache.delete(clean.value[0]);
        continue;
      }
      if (!exclusive) return; // readers leave dirty tables to the next writer
      const victim = this.l2Cache.oldest().next();
      if (victim.done) return;
      await this.writebackL2([victim.value[1]]);
      this.l2Cache.delete(victim.value[0]);
    }
  }

  /** Writes dirty L2 tables after the data and refcounts they depend on are durable. */
  private async writebackL2(tables: L2Table[]): Promise<void> {
    const dirty = tables.filter((t) => t.dirty);
    if (dirty.length === 0) return;
    if (!this.lazyDirty) await this.refcounts.writeDirty();
    await this.file.datasync();
    for (const t of dirty) {
      await this.file.write(t.offset, t.buf);
      t.dirty = false;
    }
  }

  /**
   * The L2 table for l1i, allocating an empty one if needed (exclusive lock
   * held). A table that internal snapshots share (its L1 entry lacks
   * COPIED: refcount > 1) is copied first — "Snapshots" in qcow2.txt — so
   * the snapshots keep theirs: the copy goes to a new cluster, the L1 entry
   * points at it with COPIED, and the old table loses one reference once
   * the new L1 entry is durable. The data clusters it maps keep their
   * refcounts (each reference from a snapshot was counted when the snapshot
   * was taken) and their entries stay without COPIED, so writes to them
   * allocate (planWrite).
   */
  private async l2ForWrite(l1i: number): Promise<L2Table> {
    const existing = await this.l2ForRead(l1i, true);
    if (existing && this.l1View.getUint32(l1i * 8) & HI_COPIED) return existing;
    const t = await this.newL2(l1i, existing?.buf.slice() ?? new Uint8Array(this.clusterSize));
    // a shared table loses this image's reference once the new L1 entry is durable
    if (existing) this.pendingFree.push(existing.offset / this.clusterSize);
    return t;
  }

  /** Puts `buf` in a freshly allocated L2 cluster and points L1 entry l1i at it (COPIED). */
  private async newL2(l1i: number, buf: Uint8Array): Promise<L2Table> {
    await this.beforeAllocation();
    const off = await this.refcounts.allocate(1);
    const t: L2Table = { offset: off, buf, view: new DataView(buf.buffer, buf.byteOffset, buf.byteLength), dirty: true };
    await this.makeRoomInL2Cache(true);
    this.l2Cache.set(off, t);
    this.l2Set.add(off);
    this.l1View.setUint32(l1i * 8, (HI_COPIED | Math.floor(off / 0x100000000)) >>> 0);
    this.l1View.setUint32(l1i * 8 + 4, off >>> 0);
    this.l1Dirty.add(l1i);
    return t;
  }

  /** With lazy refcounts, the dirty bit must be durable before refcounts go stale on disk. */
  private async beforeAllocation(): Promise<void> {
    const h = this.header;
    if (this.lazyDirty || h.version < 3 || !(h.compatible_features & COMPAT_LAZY_REFCOUNTS)) return;
    h.incompatible_features |= INCOMPAT_DIRTY;
    await this.writeFeatureWords();
    this.lazyDirty = true;
  }

  /** Classifies the clusters from guest offset pos, up to maxLen bytes, within one L2 table. */
  async mapRun(pos: number, maxLen: number, exclusive = false): Promise<ClusterRun> {
    const cs = this.clusterSize;
    const ci = Math.floor(pos / cs);
    const l1i = Math.floor(ci / this.l2Entries);
    let l2i = ci % this.l2Entries;
    const inCluster = pos - ci * cs;
    const limit = Math.min(maxLen, (this.l2Entries - l2i) * cs - inCluster);
    const table = await this.l2ForRead(l1i, exclusive);
    if (!table) return { kind: ClusterKind.Unallocated, length: limit, host: 0, copied: false, hi: 0, lo: 0 };
    const v = table.view;
    const hi = v.getUint32(l2i * 8);
    const lo = v.getUint32(l2i * 8 + 4);
    const first = await this.classify(hi, lo, ci);
    let length = cs - inCluster;
    if (first.kind !== ClusterKind.Compressed) {
      let expectHost = first.host + cs;
      while (length < limit) {
        l2i++;
        const h2 = v.getUint32(l2i * 8);
        const l2 = v.getUint32(l2i * 8 + 4);
        const next = this.classifySync(h2, l2);
        // a bad entry ends the run; the next lookup starts there and reports it
        if (next.kind !== first.kind || next.copied !== first.copied) break;
        // runs with host clusters must stay contiguous on the host; hostless zero runs must stay hostless
        if (first.host !== 0 ? next.host !== expectHost : next.host !== 0) break;
        expectHost += cs;
        length += cs;
      }
    }
    return {
      kind: first.kind,
      length: Math.min(length, limit),
      host: first.kind === ClusterKind.Normal ? first.host + inCluster : first.host,
      copied: first.copied,
      hi,
      lo,
    };
  }

  private async classify(hi: number, lo: number, guestCluster: number): Promise<{ kind: ClusterKind; host: number; copied: boolean }> {
    const c = this.classifySync(hi, lo);
    if (c.kind === BAD_ENTRY) throw await this.corruption('L2 table', this.badEntryDetail(hi, lo, guestCluster));
    return { kind: c.kind, host: c.host, copied: c.copied };
  }

  /** Decodes an L2 entry; BAD_ENTRY when it points outside the file or at the header (hot path: no promise). */
  private classifySync(hi: number, lo: number): Classified {
    if (hi & HI_COMPRESSED) return { kind: ClusterKind.Compressed, host: 0, copied: false };
    const host = entryOffset(hi, lo);
    const copied = (hi & HI_COPIED) !== 0;
    if (host !== 0) {
      const cs = this.clusterSize;
      if (host % cs !== 0 || host >= this.hostEnd || host < cs) return { kind: BAD_ENTRY, host, copied };
    }
    if (lo & LO_ZERO) return { kind: ClusterKind.Zero, host, copied };
    if (host === 0) return { kind: ClusterKind.Unallocated, host: 0, copied: false };
    return { kind: ClusterKind.Normal, host, copied };
  }

  private badEntryDetail(hi: number, lo: number, guestCluster: number): string {
    const cs = this.clusterSize;
    const host = entryOffset(hi, lo);
    const why = host % cs !== 0 ? 'not cluster aligned' : host < cs ? 'inside the header' : `past the end of the file (${this.hostEnd})`;
    return `entry for guest offset ${guestCluster * cs} points to host offset ${host}, which is ${why}`;
  }

  private async readCompressed(hi: number, lo: number, guestCluster: number): Promise<Uint8Array> {
    const { offset, sectors } = decodeCompressedEntry(hi, lo, this.clusterBits);
    const cached = this.decompressed.get(offset);
    if (cached) return cached;
    const start = Math.floor(offset / 512) * 512;
    const end = start + sectors * 512;
    if (offset < this.clusterSize || end > this.hostEnd + 512) {
      throw await this.corruption('L2 table', `compressed cluster for guest offset ${guestCluster * this.clusterSize} lies at [${offset}, ${end}), outside the file`);
    }
    const input = new Uint8Array(end - offset);
    await this.file.readZeroFilled(offset, input);
    const out = decompressCluster(input, this.clusterSize);
    if (!out) {
      throw await this.corruption('compressed cluster', `data at host offset ${offset} (guest offset ${guestCluster * this.clusterSize}) does not inflate to one cluster`);
    }
    this.decompressed.set(offset, out);
    return out;
  }

  // ---- read ----------------------------------------------------------------

  async read(offset: number, buf: Uint8Array): Promise<void> {
    checkRequest(this, offset, buf.length);
    await this.lock.withShared(() => this.readLocked(offset, buf, false));
  }

  private async readLocked(offset: number, buf: Uint8Array, exclusive: boolean): Promise<void> {
    const cs = this.clusterSize;
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const run = await this.mapRun(pos, buf.length - done, exclusive);
      const dst = buf.subarray(done, done + run.length);
      switch (run.kind) {
        case ClusterKind.Normal:
          await this.file.readZeroFilled(run.host, dst);
          break;
        case ClusterKind.Zero:
          dst.fill(0);
          break;
        case ClusterKind.Unallocated:
          await this.readBacking(pos, dst);
          break;
        case ClusterKind.Compressed: {
          const ci = Math.floor(pos / cs);
          const data = await this.readCompressed(run.hi, run.lo, ci);
          const at = pos - ci * cs;
          dst.set(data.subarray(at, at + dst.length));
          break;
        }
      }
      done += run.length;
    }
  }

  private async readBacking(pos: number, dst: Uint8Array): Promise<void> {
    const b = this.backing;
    if (!b || pos >= b.size) {
      dst.fill(0);
      return;
    }
    const n = Math.min(dst.length, b.size - pos);
    await b.read(pos, dst.subarray(0, n));
    if (n < dst.length) dst.fill(0, n);
  }

  // ---- write ---------------------------------------------------------------

  async write(offset: number, buf: Uint8Array, opts?: WriteOptions): Promise<void> {
    this.assertWritable();
    checkRequest(this, offset, buf.length);
    await this.withClusters(offset, buf.length, async () => {
      if (opts?.compressed) {
        await this.lock.withExclusive(() => this.writeCompressedLocked(offset, buf));
        return;
      }
      // metadata decisions under the lock, data I/O outside it, L2 links under it again:
      // writes to different clusters overlap their data transfers (convert, guests with deep queues)
      const plan = await this.lock.withExclusive(() => this.planWrite(offset, buf));
      await Promise.all(plan.writes.map((w) => this.file.write(w.host, w.data)));
      if (plan.links.length > 0) await this.lock.withExclusive(() => this.linkClusters(plan.links));
    });
    if (opts?.fua) await this.flush();
  }

  /** Runs fn with the guest clusters of [offset, offset+length) reserved against other mutations. */
  private withClusters<T>(offset: number, length: number, fn: () => Promise<T>): Promise<T> {
    const cs = this.clusterSize;
    return this.inFlight.withRange(Math.floor(offset / cs) * cs, Math.ceil((offset + length) / cs) * cs, fn);
  }

  /** Waits for every in-flight mutation (resize, amend, check, ...). */
  private withAllClusters<T>(fn: () => Promise<T>): Promise<T> {
    return this.inFlight.withRange(0, Number.MAX_SAFE_INTEGER, fn);
  }

  private get maxAllocClusters(): number {
    return Math.max(1, Math.min(this.refcounts.blockEntries >>> 1, Math.floor((4 << 20) / this.clusterSize)));
  }

  /** Writes and links in one go (exclusive lock held): for internal callers. */
  private async writeLocked(offset: number, buf: Uint8Array): Promise<void> {
    const plan = await this.planWrite(offset, buf);
    for (const w of plan.writes) await this.file.write(w.host, w.data);
    await this.linkClusters(plan.links);
  }

  /**
   * Decides where every byte of a write goes (exclusive lock held): in place
   * for clusters this image owns alone, else into freshly allocated clusters
   * with the old contents merged in for partial clusters.
   */
  private async planWrite(offset: number, buf: Uint8Array): Promise<WritePlan> {
    const cs = this.clusterSize;
    const plan: WritePlan = { writes: [], links: [] };
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const run = await this.mapRun(pos, buf.length - done, true);
      if (run.kind === ClusterKind.Normal && run.copied) {
        this.checkOverlap(run.host - (run.host % cs), Math.ceil((run.host % cs + run.length) / cs) * cs, 'data write');
        plan.writes.push({ host: run.host, data: buf.subarray(done, done + run.length) });
        done += run.length;
        continue;
      }
      const ci = Math.floor(pos / cs);
      const n = Math.min(Math.ceil((pos - ci * cs + run.length) / cs), this.maxAllocClusters);
      const len = Math.min(run.length, (ci + n) * cs - pos);
      await this.planAllocation(pos, buf.subarray(done, done + len), run, n, plan);
      done += len;
    }
    return plan;
  }

  private async linkClusters(links: Array<{ ci: number; host: number }>): Promise<void> {
    for (const l of links) await this.setL2Entry(l.ci, l.host);
  }

  /** Old contents of guest cluster ci (to merge with a partial write). */
  private async cowSource(ci: number, run: ClusterRun, runFirstCluster: number, dst: Uint8Array): Promise<void> {
    const cs = this.clusterSize;
    switch (run.kind) {
      case ClusterKind.Unallocated: {
        const pos = ci * cs;
        const n = Math.min(cs, this.size - pos);
        await this.readBacking(pos, dst.subarray(0, n));
        dst.fill(0, n);
        return;
      }
      case ClusterKind.Zero:
        dst.fill(0);
        return;
      case ClusterKind.Compressed:
        dst.set(await this.readCompressed(run.hi, run.lo, ci));
        return;
      case ClusterKind.Normal: {
        const base = run.host - (run.host % cs);
        await this.file.readZeroFilled(base + (ci - runFirstCluster) * cs, dst);
        return;
      }
    }
  }

  /** Allocates n clusters to hold `data` at guest `pos` (replacing `run`) and adds the writes and links to plan. */
  private async planAllocation(pos: number, data: Uint8Array, run: ClusterRun, n: number, plan: WritePlan): Promise<void> {
    const cs = this.clusterSize;
    const c0 = Math.floor(pos / cs);
    await this.beforeAllocation();
    const host = await this.refcounts.allocate(n);
    const head = pos - c0 * cs;
    const tail = (c0 + n) * cs - (pos + data.length);
    if (head === 0 && tail === 0) {
      plan.writes.push({ host, data });
    } else {
      const buf = new Uint8Array(n * cs);
      if (head > 0) await this.cowSource(c0, run, c0, buf.subarray(0, cs));
      if (tail > 0 && (n > 1 || head === 0)) await this.cowSource(c0 + n - 1, run, c0, buf.subarray((n - 1) * cs));
      buf.set(data, head);
      plan.writes.push({ host, data: buf });
    }
    for (let i = 0; i < n; i++) plan.links.push({ ci: c0 + i, host: host + i * cs });
  }

  /** Writes `data` at guest `pos` into n freshly allocated clusters now (exclusive lock held). */
  private async writeAllocating(pos: number, data: Uint8Array, run: ClusterRun, n: number): Promise<void> {
    const plan: WritePlan = { writes: [], links: [] };
    await this.planAllocation(pos, data, run, n, plan);
    for (const w of plan.writes) await this.file.write(w.host, w.data);
    await this.linkClusters(plan.links);
  }

  /**
   * Points guest cluster ci at host (a standard cluster with refcount 1), or
   * writes a raw entry; the old allocation is queued for freeing.
   */
  private async setL2Entry(ci: number, host: number, raw?: { hi: number; lo: number }): Promise<void> {
    const l1i = Math.floor(ci / this.l2Entries);
    const l2i = ci % this.l2Entries;
    const t = await this.l2ForWrite(l1i);
    const oldHi = t.view.getUint32(l2i * 8);
    const oldLo = t.view.getUint32(l2i * 8 + 4);
    const hi = raw ? raw.hi : (HI_COPIED | Math.floor(host / 0x100000000)) >>> 0;
    const lo = raw ? raw.lo : host >>> 0;
    t.view.setUint32(l2i * 8, hi);
    t.view.setUint32(l2i * 8 + 4, lo);
    t.dirty = true;
    this.queueFree(oldHi, oldLo, hi, lo);
  }

  /** Queues the host clusters an overwritten L2 entry referenced (unless the new entry keeps them). */
  private queueFree(oldHi: number, oldLo: number, newHi: number, newLo: number): void {
    if (oldHi & HI_COMPRESSED) {
      const { offset, sectors } = decodeCompressedEntry(oldHi, oldLo, this.clusterBits);
      const [a, b] = compressedHostClusters(offset, sectors, this.clusterSize);
      for (let c = a; c <= b; c++) this.pendingFree.push(c);
      this.decompressed.delete(offset);
      return;
    }
    const old = entryOffset(oldHi, oldLo);
    if (old === 0) return;
    if (!(newHi & HI_COMPRESSED) && entryOffset(newHi, newLo) === old) return;
    this.pendingFree.push(old / this.clusterSize);
  }

  private async writeCompressedLocked(offset: number, buf: Uint8Array): Promise<void> {
    const cs = this.clusterSize;
    let done = 0;
    while (done < buf.length) {
      const pos = offset + done;
      const ci = Math.floor(pos / cs);
      const inCluster = pos - ci * cs;
      const n = Math.min(cs - inCluster, buf.length - done);
      const piece = buf.subarray(done, done + n);
      const run = await this.mapRun(pos, n, true);
      const fresh = run.kind === ClusterKind.Unallocated || (run.kind === ClusterKind.Zero && run.host === 0);
      // only whole, unallocated, full-size clusters are worth compressing
      if (inCluster !== 0 || n !== cs || !fresh) {
        await this.writeLocked(pos, piece);
        done += n;
        continue;
      }
      const packed = await compressCluster(piece);
      if (packed.length >= cs - 512) {
        await this.writeLocked(pos, piece);
        done += n;
        continue;
      }
      await this.beforeAllocation();
      let at = this.compressedCursor;
      const sameCluster = at !== 0 && (at % cs) + packed.length <= cs && at % cs !== 0;
      if (sameCluster && (await this.refcounts.get(Math.floor(at / cs))) < this.refcounts.maxRefcount) {
        await this.refcounts.update(Math.floor(at / cs), 1);
      } else {
        at = await this.refcounts.allocate(1);
      }
      await this.file.write(at, packed);
      this.compressedCursor = at + packed.length;
      const entry = encodeCompressedEntry(at, packed.length, this.clusterBits);
      await this.setL2Entry(ci, 0, entry);
      done += n;
    }
  }

  // ---- flush / close -------------------------------------------------------

  async flush(): Promise<void> {
    if (!this.writable) return;
    await this.lock.withExclusive(() => this.writeback());
  }

  /** The ordered write-back described at the top of this file (exclusive lock held). */
  async writeback(): Promise<void> {
    const dirtyL2: L2Table[] = [];
    for (const [, t] of this.l2Cache.entries()) if (t.dirty) dirtyL2.push(t);
    if (!this.lazyDirty) await this.refcounts.writeDirty();
    if (dirtyL2.length > 0 || this.l1Dirty.size > 0) {
      await this.file.datasync();
      for (const t of dirtyL2) {
        await this.file.write(t.offset, t.buf);
        t.dirty = false;
      }
    }
    if (this.l1Dirty.size > 0) {
      await this.file.datasync();
      const idx = [...this.l1Dirty].sort((a, b) => a - b);
      this.l1Dirty.clear();
      let i = 0;
      while (i < idx.length) {
        let j = i;
        while (j + 1 < idx.length && idx[j + 1] === (idx[j] ?? 0) + 1) j++;
        const a = idx[i] ?? 0;
        const b = idx[j] ?? 0;
        await this.file.write(this.header.l1_table_offset + a * 8, this.l1.subarray(a * 8, b * 8 + 8));
        i = j + 1;
      }
    }
    await this.file.datasync();
    await this.releasePendingFrees();
  }

  /** Decrements clusters whose references are gone (durably) and punches freed ones. */
  private async releasePendingFrees(): Promise<void> {
    if (this.pendingFree.length === 0) return;
    const frees = this.pendingFree;
    this.pendingFree = [];
    const punch: number[] = [];
    for (const c of frees) {
      if ((await this.refcounts.update(c, -1)) === 0) punch.push(c);
    }
    if (!this.lazyDirty) await this.refcounts.writeDirty();
    punch.sort((a, b) => a - b);
    const cs = this.clusterSize;
    let i = 0;
    while (i < punch.length) {
      let j = i;
      while (j + 1 < punch.length && punch[j + 1] === (punch[j] ?? 0) + 1) j++;
      const a = punch[i] ?? 0;
      const b = punch[j] ?? 0;
      if (this.compressedCursor >= a * cs && this.compressedCursor < (b + 1) * cs) this.compressedCursor = 0;
      await this.file.punchHole(a * cs, (b - a + 1) * cs);
      i = j + 1;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      if (this.writable && this.corruptReason === undefined) {
        await this.lock.withExclusive(async () => {
          await this.writeback();
          if (this.lazyDirty) {
            await this.refcounts.writeDirty();
            await this.file.datasync();
            this.header.incompatible_features &= ~INCOMPAT_DIRTY;
            await this.writeFeatureWords();
            this.lazyDirty = false;
          }
        });
      }
    } finally {
      await this.file.close();
      await this.backing?.close();
    }
  }

  // ---- discard / write zeroes ------------------------------------------------

  async discard(offset: number, length: number): Promise<void> {
    this.assertWritable();
    checkRequest(this, offset, length);
    const cs = this.clusterSize;
    const first = Math.ceil(offset / cs);
    const last = Math.floor((offset + length) / cs); // exclusive
    const endIsDiskEnd = offset + length === this.size;
    const stop = endIsDiskEnd ? Math.ceil(this.size / cs) : last;
    if (stop <= first) return;
    // v2 cannot express "zero" over a backing file: discard is then a no-op
    if (this.header.version < 3 && this.backing) return;
    await this.withClusters(offset, length, () =>
      this.lock.withExclusive(() => this.zeroClusters(first, stop, true, this.backing !== undefined)),
    );
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    this.assertWritable();
    checkRequest(this, offset, length);
    const cs = this.clusterSize;
    const end = offset + length;
    let first = Math.ceil(offset / cs);
    let stop = end === this.size ? Math.ceil(this.size / cs) : Math.floor(end / cs);
    const canFlag = this.header.version >= 3;
    const canUnallocate = !this.backing && (opts?.mayUnmap ?? false);
    if (!canFlag && !canUnallocate) {
      first = stop; // v2 over a backing file (or without unmap): write real zeroes
    }
    await this.withClusters(offset, length, () => this.lock.withExclusive(async () => {
      if (stop <= first) {
        await this.writeZeroBytes(offset, length);
        return;
      }
      if (offset < first * cs) await this.writeZeroBytes(offset, first * cs - offset);
      await this.zeroClusters(first, stop, opts?.mayUnmap ?? false, canFlag);
      if (stop * cs < end) await this.writeZeroBytes(stop * cs, end - stop * cs);
    }));
  }

  private async writeZeroBytes(offset: number, length: number): Promise<void> {
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let done = 0; done < length; done += chunk.length) {
      const n = Math.min(chunk.length, length - done);
      await this.writeLocked(offset + done, chunk.subarray(0, n));
    }
  }

  /**
   * Makes guest clusters [first, stop) read as zeroes: unallocated when
   * nothing shows through from a backing file, else the v3 zero flag.
   * `unmap` frees host clusters; otherwise a standard cluster keeps its
   * allocation with the zero flag set (qemu's "zero, allocated").
   */
  private async zeroClusters(first: number, stop: number, unmap: boolean, useFlag: boolean): Promise<void> {
    // the zero flag is only needed where a backing file would otherwise show through
    const flag = useFlag && this.backing !== undefined && this.header.version >= 3;
    const keepPrealloc = !unmap && useFlag && this.header.version >= 3;
    for (let ci = first; ci < stop; ) {
      const l1i = Math.floor(ci / this.l2Entries);
      const tableEnd = Math.min(stop, (l1i + 1) * this.l2Entries);
      let t = flag ? await this.l2ForWrite(l1i) : await this.l2ForRead(l1i, true);
      // a table snapshots share is copied before it changes (l2ForWrite)
      if (t && !(this.l1View.getUint32(l1i * 8) & HI_COPIED)) t = await this.l2ForWrite(l1i);
      if (!t) {
        ci = tableEnd; // nothing allocated here and nothing to hide
        continue;
      }
      for (; ci < tableEnd; ci++) {
        const l2i = ci % this.l2Entries;
        const hi = t.view.getUint32(l2i * 8);
        const lo = t.view.getUint32(l2i * 8 + 4);
        const cur = await this.classify(hi, lo, ci);
        let nhi = 0;
        let nlo = flag ? LO_ZERO : 0;
        if (keepPrealloc && (cur.kind === ClusterKind.Normal || cur.kind === ClusterKind.Zero) && cur.host !== 0 && cur.copied) {
          // keep the allocation, mark it zero (qemu's "zero, allocated")
          nhi = hi;
          nlo = (lo | LO_ZERO) >>> 0;
        }
        if (nhi === hi && nlo === lo) continue;
        t.view.setUint32(l2i * 8, nhi);
        t.view.setUint32(l2i * 8 + 4, nlo);
        t.dirty = true;
        this.queueFree(hi, lo, nhi, nlo);
      }
    }
  }

  /** For amend to compat=0.10: v2 has no zero flag, so zero clusters become unallocated or real zeroes. */
  async expandZeroClusters(): Promise<void> {
    if (this.header.nb_snapshots > 0) {
      // their L2 tables may hold zero clusters too, which this does not rewrite
      throw new BlockUnsupportedError(this.filename, 'amend', `the image has ${this.header.nb_snapshots} internal snapshot(s); delete them before going to compat=0.10`);
    }
    const cs = this.clusterSize;
    const total = Math.ceil(this.size / cs);
    for (let ci = 0; ci < total; ci++) {
      const l1i = Math.floor(ci / this.l2Entries);
      const t = await this.l2ForRead(l1i, true);
      if (!t) {
        ci = (l1i + 1) * this.l2Entries - 1;
        continue;
      }
      const l2i = ci % this.l2Entries;
      const hi = t.view.getUint32(l2i * 8);
      const lo = t.view.getUint32(l2i * 8 + 4);
      if (hi & HI_COMPRESSED || !(lo & LO_ZERO)) continue;
      const host = entryOffset(hi, lo);
      if (host !== 0) {
        await this.file.write(host, new Uint8Array(cs));
        t.view.setUint32(l2i * 8 + 4, (lo & ~LO_ZERO) >>> 0);
        t.dirty = true;
      } else if (this.backing) {
        t.view.setUint32(l2i * 8, 0);
        t.view.setUint32(l2i * 8 + 4, 0);
        t.dirty = true;
        const n = Math.min(cs, this.size - ci * cs);
        // an unallocated cluster over a backing file: allocate real zeroes
        await this.writeAllocating(ci * cs, new Uint8Array(n), { kind: ClusterKind.Zero, length: n, host: 0, copied: false, hi: 0, lo: 0 }, 1);
      } else {
        t.view.setUint32(l2i * 8 + 4, 0);
        t.dirty = true;
      }
    }
  }

  // ---- block status ------------------------------------------------------------

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    checkRequest(this, offset, length);
    return this.lock.withShared(async () => {
      const run = await this.mapRun(offset, length, false);
      const base = { offset, length: run.length };
      switch (run.kind) {
        case ClusterKind.Normal:
          return { ...base, data: true, zero: false, allocated: true, depth: 0, hostOffset: run.host, hostFile: this.filename };
        case ClusterKind.Compressed:
          return { ...base, data: true, zero: false, allocated: true, depth: 0 };
        case ClusterKind.Zero:
          // a preallocated zero cluster still maps to its host cluster (qemu-img map shows it)
          return run.host !== 0
            ? { ...base, data: false, zero: true, allocated: true, depth: 0, hostOffset: run.host, hostFile: this.filename }
            : { ...base, data: false, zero: true, allocated: true, depth: 0 };
        case ClusterKind.Unallocated: {
          const b = this.backing;
          if (!b) return { ...base, data: false, zero: true, allocated: false, depth: 0 };
          if (offset >= b.size) return { ...base, data: false, zero: true, allocated: false, depth: 1, present: false };
          const s = await b.blockStatus(offset, Math.min(run.length, b.size - offset));
          return {
            offset,
            length: s.length,
            data: s.data,
            zero: s.zero,
            allocated: false,
            depth: s.depth + 1,
            present: s.present ?? s.allocated,
            ...(s.hostOffset !== undefined ? { hostOffset: s.hostOffset } : {}),
            ...(s.hostFile !== undefined ? { hostFile: s.hostFile } : {}),
          };
        }
      }
    });
  }

  // ---- info, check, resize, amend -------------------------------------------------

  async info(): Promise<ImageInfo> {
    const h = this.header;
    const data: Record<string, unknown> = {
      compat: h.version >= 3 ? '1.1' : '0.10',
      'compression-type': 'zlib',
    };
    if (h.version >= 3) data['lazy-refcounts'] = (h.compatible_features & COMPAT_LAZY_REFCOUNTS) !== 0n;
    data['refcount-bits'] = this.refcounts.bits;
    if (h.version >= 3) {
      data['corrupt'] = (h.incompatible_features & INCOMPAT_CORRUPT) !== 0n;
      data['extended-l2'] = false;
    }
    const info: ImageInfo = {
      filename: this.filename,
      format: 'qcow2',
      'virtual-size': h.size,
      'actual-size': await this.file.allocatedBytes(),
      'cluster-size': this.clusterSize,
      'dirty-flag': (h.incompatible_features & INCOMPAT_DIRTY) !== 0n,
      'format-specific': { type: 'qcow2', data },
    };
    if (h.backingFile !== undefined) {
      info['backing-filename'] = h.backingFile;
      if (this.backing) info['full-backing-filename'] = this.backing.filename;
      if (h.backingFormat !== undefined) info['backing-filename-format'] = h.backingFormat;
    }
    return info;
  }

  async check(opts: { repair?: 'leaks' | 'all' }): Promise<CheckResult> {
    if (opts.repair) this.assertWritableForRepair();
    const { checkImage } = await import('./check.js');
    const dirty = (this.header.incompatible_features & INCOMPAT_DIRTY) !== 0n;
    // refcounts of a dirty image may be too low as well as too high: repair everything (as qemu does)
    const repair = opts.repair && dirty && !this.lazyDirty ? 'all' : opts.repair;
    return this.withAllClusters(() => this.lock.withExclusive(async () => {
      if (this.writable) await this.writeback();
      const r = await checkImage(this, repair ? { repair } : {});
      if (repair && dirty && !this.lazyDirty && r.corruptions === 0) {
        this.header.incompatible_features &= ~INCOMPAT_DIRTY;
        await this.writeFeatureWords();
      }
      return r;
    }));
  }

  private assertWritableForRepair(): void {
    checkWritable(this, 'opened read-only; repair needs it read-write');
  }

  /** Clears the corrupt bit after a successful repair. */
  async clearCorrupt(): Promise<void> {
    if (this.header.incompatible_features & INCOMPAT_CORRUPT) {
      this.header.incompatible_features &= ~INCOMPAT_CORRUPT;
      await this.writeFeatureWords();
    }
    this.corruptReason = undefined;
  }

  /** For check: adopt a rebuilt refcount structure. */
  adoptRefcountTable(offset: number, clusters: number, table: Uint8Array): void {
    this.refcounts.reset(offset, clusters, table);
    this.header.refcount_table_offset = offset;
    this.header.refcount_table_clusters = clusters;
    this.compressedCursor = 0;
  }

  /** For check repair of COPIED flags: rewrites one L1 entry durably. */
  async rewriteL1Entry(i: number, hi: number, lo: number): Promise<void> {
    this.l1View.setUint32(i * 8, hi);
    this.l1View.setUint32(i * 8 + 4, lo);
    await this.file.write(this.header.l1_table_offset + i * 8, this.l1.subarray(i * 8, i * 8 + 8));
  }

  /** For check repair: drops cached L2 tables (after rewriting them on disk). */
  dropL2Cache(): void {
    this.l2Cache.clear();
  }

  async resize(newSize: number): Promise<void> {
    this.assertWritable();
    if (!Number.isSafeInteger(newSize) || newSize < 0 || newSize % 512 !== 0) {
      // qemu keeps qcow2 sizes in whole sectors and reads the size field that way
      throw new BlockOptionError('size', `${newSize} is not a valid qcow2 size: it must be a multiple of 512 bytes`);
    }
    await this.withAllClusters(() => this.lock.withExclusive(async () => {
      const cs = this.clusterSize;
      const oldSize = this.header.size;
      const snapshots = this.header.nb_snapshots;
      // as qemu: a snapshot records the disk size it was taken at, and v2 has nowhere to keep it
      if (snapshots > 0 && (newSize < oldSize || this.header.version < 3)) {
        throw new BlockUnsupportedError(
          this.filename,
          'resize',
          `the image has ${snapshots} internal snapshot(s): ${this.header.version < 3 ? 'a version 2 image with snapshots cannot be resized' : 'it can grow but not shrink'}`,
        );
      }
      if (newSize < oldSize) {
        // free everything past the new end; a partial last cluster keeps its data
        const first = Math.ceil(newSize / cs);
        await this.zeroClusters(first, Math.ceil(oldSize / cs), true, false);
      }
      await this.writeback();
      const needL1 = Math.ceil(newSize / (cs * this.l2Entries));
      if (needL1 > this.header.l1_size) await this.growL1(needL1);
      const hv = new Uint8Array(8);
      writeU64(new DataView(hv.buffer), 0, newSize);
      await this.file.write(24, hv);
      await this.file.datasync();
      this.header.size = newSize;
      if (newSize > oldSize) {
        // whatever lies past the old end (tail of the last cluster, a larger
        // backing file) must read as zeroes in the new area
        const zeroEnd = Math.min(newSize, Math.max(Math.ceil(oldSize / cs) * cs, this.backing ? Math.min(this.backing.size, newSize) : 0));
        if (zeroEnd > oldSize) {
          const firstFull = Math.ceil(oldSize / cs);
          if (oldSize < firstFull * cs) await this.writeZeroBytes(oldSize, Math.min(firstFull * cs, zeroEnd) - oldSize);
          const stop = Math.floor(zeroEnd / cs);
          if (stop > firstFull) {
            if (this.header.version >= 3) await this.zeroClusters(firstFull, stop, true, true);
            else await this.writeZeroBytes(firstFull * cs, stop * cs - firstFull * cs);
          }
          if (stop * cs < zeroEnd && stop >= firstFull) await this.writeZeroBytes(stop * cs, zeroEnd - stop * cs);
        }
        await this.writeback();
      }
    }));
  }

  /** Moves the L1 table to a new, larger location (written and synced before the header points at it). */
  private async growL1(entries: number): Promise<void> {
    const cs = this.clusterSize;
    const clusters = Math.ceil((entries * 8) / cs);
    if (clusters * cs > 32 * 1024 * 1024) {
      throw new BlockFormatError(this.filename, 'L1 table', `a ${entries}-entry L1 table exceeds the 32 MiB limit`, 'use a larger cluster_size');
    }
    await this.beforeAllocation();
    // L1 clusters must be contiguous: allocate them past everything else
    const off = await this.allocateContiguous(clusters);
    const table = new Uint8Array(clusters * cs);
    table.set(this.l1);
    await this.file.write(off, table);
    if (!this.lazyDirty) await this.refcounts.writeDirty();
    await this.file.datasync();
    const hb = new Uint8Array(12);
    const hv = new DataView(hb.buffer);
    hv.setUint32(0, entries);
    writeU64(hv, 4, off);
    await this.file.write(36, hb); // l1_size, l1_table_offset
    await this.file.datasync();
    const oldOff = this.header.l1_table_offset;
    const oldClusters = Math.ceil((this.header.l1_size * 8) / cs);
    this.header.l1_size = entries;
    this.header.l1_table_offset = off;
    this.l1 = table.subarray(0, entries * 8);
    this.l1View = new DataView(this.l1.buffer, this.l1.byteOffset, this.l1.byteLength);
    for (let c = 0; c < oldClusters; c++) this.pendingFree.push(oldOff / cs + c);
  }

  private async allocateContiguous(clusters: number): Promise<number> {
    const max = this.refcounts.blockEntries >>> 1;
    if (clusters <= max) return this.refcounts.allocate(clusters);
    // larger than one allocation: take pieces and insist they are adjacent
    const first = await this.refcounts.allocate(max);
    let next = first + max * this.clusterSize;
    for (let left = clusters - max; left > 0; ) {
      const n = Math.min(left, max);
      const got = await this.refcounts.allocate(n);
      if (got !== next) throw new BlockFormatError(this.filename, 'allocation', 'could not allocate a contiguous table');
      next += n * this.clusterSize;
      left -= n;
    }
    return first;
  }

  async changeBackingFile(filename: string | undefined, format: string | undefined): Promise<void> {
    this.assertWritable();
    await this.withAllClusters(() => this.lock.withExclusive(async () => {
      await this.writeback();
      if (filename === undefined) {
        delete this.header.backingFile;
        delete this.header.backingFormat;
      } else {
        this.header.backingFile = filename;
        if (format === undefined) delete this.header.backingFormat;
        else this.header.backingFormat = format;
      }
      await this.rewriteHeader();
    }));
  }

  async amend(options: Record<string, string>): Promise<void> {
    this.assertWritable();
    const { amendImage } = await import('./amend.js');
    await this.withAllClusters(() => this.lock.withExclusive(async () => {
      await this.writeback();
      await amendImage(this, options);
    }));
  }

  async makeEmpty(): Promise<void> {
    this.assertWritable();
    await this.withAllClusters(() => this.lock.withExclusive(async () => {
      const total = Math.ceil(this.size / this.clusterSize);
      await this.zeroClusters(0, total, true, false);
      await this.writeback();
    }));
  }

  /** For amend: downgrade/upgrade bookkeeping. */
  setLazyDirty(v: boolean): void {
    this.lazyDirty = v;
  }

  get isLazyDirty(): boolean {
    return this.lazyDirty;
  }

  /** Every L2 table referenced by the active L1, with its L1 index (for check and amend). */
  *activeL2Tables(): IterableIterator<{ l1i: number; offset: number }> {
    for (let i = 0; i < this.header.l1_size; i++) {
      const offset = this.l1Offset(i);
      if (offset !== 0) yield { l1i: i, offset };
    }
  }

  get bitmapsConsistent(): boolean {
    return (this.header.autoclear_features & AUTOCLEAR_BITMAPS) !== 0n;
  }
}
