/**
 * qcow2 refcounts: the refcount table, a write-back cache of refcount blocks,
 * and host cluster allocation. Spec: docs/interop/qcow2.txt "Host cluster
 * management".
 *
 * Crash-safety rules kept here:
 * - a new refcount block is written before the refcount table entry that
 *   points at it, and a grown refcount table is written (and synced) before
 *   the header switches to it: a crash leaves at worst leaked clusters;
 * - increments may reach the disk at any time (an allocated-but-unused
 *   cluster is a leak, not corruption); the device applies decrements only
 *   after the L2/L1 entries that dropped the reference are durable.
 */
import { BlockFormatError, LruCache, type ImageFile } from '@tsvmm/block';
import {
  entryOffset,
  getRefcountEntry,
  MAX_REFTABLE_BYTES,
  readU64,
  setRefcountEntry,
  writeU64,
} from './layout.js';

interface RefBlock {
  buf: Uint8Array;
  view: DataView;
  dirty: boolean;
}

export interface RefcountHost {
  readonly file: ImageFile;
  readonly filename: string;
  readonly clusterSize: number;
  readonly clusterBits: number;
  /** throws (and marks the image corrupt) if [offset, offset+len) overlaps live metadata */
  checkOverlap(offset: number, len: number, what: string): void;
  /** bytes of the host file known to be in use (grows with allocations) */
  hostEnd: number;
  /** marks the image corrupt (if writable) and returns the error to throw */
  corruption(structure: string, detail: string): Promise<BlockFormatError>;
}

export class Qcow2Refcounts {
  readonly bits: number;
  readonly maxRefcount: number;
  /** refcount entries per refcount block */
  readonly blockEntries: number;
  readonly blockEntriesBits: number;
  tableOffset: number;
  tableClusters: number;
  /** refcount table as raw bytes (big-endian u64 entries) */
  private table: Uint8Array;
  private tableView: DataView;
  private readonly cache: LruCache<number, RefBlock>;
  /** lowest cluster index that may be free */
  private freeHint = 0;
  /** host offsets of refcount blocks, for overlap checks */
  private blockSet = new Set<number>();

  constructor(
    private readonly host: RefcountHost,
    refcountOrder: number,
    tableOffset: number,
    tableClusters: number,
    table: Uint8Array,
    cacheBlocks: number,
  ) {
    this.bits = 2 ** refcountOrder;
    this.maxRefcount = this.bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** this.bits - 1;
    this.blockEntries = (host.clusterSize * 8) / this.bits;
    this.blockEntriesBits = Math.log2(this.blockEntries);
    this.tableOffset = tableOffset;
    this.tableClusters = tableClusters;
    this.table = table;
    this.tableView = new DataView(table.buffer, table.byteOffset, table.byteLength);
    this.cache = new LruCache(Math.max(4, cacheBlocks));
    this.rebuildBlockSet();
  }

  private rebuildBlockSet(): void {
    this.blockSet = new Set(this.blockOffsets());
  }

  isBlock(offset: number): boolean {
    return this.blockSet.has(offset);
  }

  get tableEntries(): number {
    return this.table.length / 8;
  }

  /** Host offset of refcount block i (0 = not allocated), validated against the file. */
  blockOffset(i: number): number {
    if (i >= this.tableEntries) return 0;
    return entryOffset(this.tableView.getUint32(i * 8), this.tableView.getUint32(i * 8 + 4));
  }

  /** Raw refcount table entry (for check). */
  rawTableEntry(i: number): number {
    return readU64(this.tableView, i * 8);
  }

  /** Offsets of every allocated refcount block (for overlap checks and check). */
  *blockOffsets(): IterableIterator<number> {
    for (let i = 0; i < this.tableEntries; i++) {
      const o = this.blockOffset(i);
      if (o !== 0) yield o;
    }
  }

  private async loadBlock(i: number): Promise<RefBlock | undefined> {
    const off = this.blockOffset(i);
    if (off === 0) return undefined;
    const hit = this.cache.get(off);
    if (hit) return hit;
    const cs = this.host.clusterSize;
    if (off % cs !== 0 || off >= this.host.hostEnd) {
      throw await this.host.corruption(
        'refcount table',
        `entry ${i} points to ${off}, which is ${off % cs ? 'not cluster aligned' : 'past the end of the file'}`,
      );
    }
    const buf = new Uint8Array(cs);
    await this.host.file.readZeroFilled(off, buf);
    const block: RefBlock = { buf, view: new DataView(buf.buffer), dirty: false };
    await this.evictFor(1);
    this.cache.set(off, block);
    return block;
  }

  /** Makes room for n more cached blocks, writing back dirty ones (increments are always safe to write). */
  private async evictFor(n: number): Promise<void> {
    while (this.cache.size + n > this.cache.capacity) {
      const oldest = this.cache.oldest().next();
      if (oldest.done) return;
      const [off, b] = oldest.value;
      if (b.dirty) {
        await this.host.file.write(off, b.buf);
        b.dirty = false;
      }
      this.cache.delete(off);
    }
  }

  async get(cluster: number): Promise<number> {
    const b = await this.loadBlock(this.tableIndex(cluster));
    if (!b) return 0;
    return getRefcountEntry(b.buf, b.view, this.bits, cluster % this.blockEntries);
  }

  private tableIndex(cluster: number): number {
    return Math.floor(cluster / this.blockEntries);
  }

  /**
   * Adds delta to a cluster's refcount. `reserved` is a run of clusters being
   * allocated right now (their refcounts are still 0 but they are taken).
   */
  async update(cluster: number, delta: number, reserved?: { start: number; count: number }): Promise<number> {
    const ti = this.tableIndex(cluster);
    if (ti >= this.tableEntries) await this.growTable(ti, reserved);
    let b = await this.loadBlock(ti);
    if (!b) b = await this.allocBlock(ti, reserved);
    const i = cluster % this.blockEntries;
    const old = getRefcountEntry(b.buf, b.view, this.bits, i);
    if (reserved && delta > 0 && old !== 0) {
      throw await this.host.corruption('refcount block', `cluster ${cluster} was chosen as free but has refcount ${old}`);
    }
    const next = old + delta;
    if (next < 0) {
      throw await this.host.corruption('refcount block', `refcount of cluster ${cluster} would drop below zero`);
    }
    if (next > this.maxRefcount) {
      throw new BlockFormatError(
        this.host.filename,
        'refcount block',
        `refcount of cluster ${cluster} would exceed ${this.maxRefcount} (refcount_bits ${this.bits})`,
        'use a larger refcount_bits (tsvmm img amend is not able to change it; convert the image)',
      );
    }
    setRefcountEntry(b.buf, b.view, this.bits, i, next);
    b.dirty = true;
    if (next === 0 && cluster < this.freeHint) this.freeHint = cluster;
    return next;
  }

  /** Allocates refcount block `ti` inside the range it describes, so it refcounts itself. */
  private async allocBlock(ti: number, reserved?: { start: number; count: number }): Promise<RefBlock> {
    const cs = this.host.clusterSize;
    const first = ti * this.blockEntries;
    let pick = -1;
    for (let c = first; c < first + this.blockEntries; c++) {
      if (reserved && c >= reserved.start && c < reserved.start + reserved.count) continue;
      pick = c;
      break;
    }
    if (pick < 0) {
      throw new BlockFormatError(this.host.filename, 'refcount block', `no room for refcount block ${ti}`);
    }
    const off = pick * cs;
    this.host.checkOverlap(off, cs, 'new refcount block');
    const buf = new Uint8Array(cs);
    const block: RefBlock = { buf, view: new DataView(buf.buffer), dirty: false };
    setRefcountEntry(buf, block.view, this.bits, pick - first, 1);
    // block first, then the table entry: a crash in between leaks one cluster
    await this.host.file.write(off, buf);
    writeU64(this.tableView, ti * 8, off);
    this.blockSet.add(off);
    await this.host.file.write(this.tableOffset + ti * 8, this.table.subarray(ti * 8, ti * 8 + 8));
    this.host.hostEnd = Math.max(this.host.hostEnd, off + cs);
    await this.evictFor(1);
    this.cache.set(off, block);
    return block;
  }

  /**
   * Grows the refcount table to cover index `need`: a new table and the
   * refcount blocks describing it go past the end of everything in use, are
   * synced, then the header switches to them; the old table is freed last.
   */
  private async growTable(need: number, reserved?: { start: number; count: number }): Promise<void> {
    const cs = this.host.clusterSize;
    const E = this.blockEntries;
    const reservedEnd = reserved ? reserved.start + reserved.count : 0;
    const start = Math.max(Math.ceil(this.host.hostEnd / cs), reservedEnd, Math.ceil((await this.host.file.size()) / cs));
    let entries = Math.max(need + 1, Math.ceil(this.tableEntries * 1.5));
    let tableClusters = 0;
    let nBlocks = 0;
    // iterate: the table and its blocks must themselves be covered
    for (;;) {
      tableClusters = Math.ceil((entries * 8) / cs);
      const end = start + tableClusters + nBlocks;
      const firstRegion = Math.floor(start / E);
      const lastRegion = Math.floor((end - 1) / E);
      let missing = 0;
      for (let r = firstRegion; r <= lastRegion; r++) if (this.blockOffset(r) === 0) missing++;
      if (lastRegion >= entries) {
        entries = lastRegion + 1;
        continue;
      }
      if (missing === nBlocks) break;
      nBlocks = missing;
    }
    if (tableClusters * cs > MAX_REFTABLE_BYTES) {
      throw new BlockFormatError(this.host.filename, 'refcount table', `would exceed the 8 MiB limit`, 'use a larger cluster_size');
    }
    entries = (tableClusters * cs) / 8;
    const newTable = new Uint8Array(tableClusters * cs);
    newTable.set(this.table);
    const nv = new DataView(newTable.buffer);
    const end = start + tableClusters + nBlocks;
    const blocks = new Map<number, Uint8Array>();
    let next = start + tableClusters;
    for (let r = Math.floor(start / E); r <= Math.floor((end - 1) / E); r++) {
      if (this.blockOffset(r) !== 0) continue;
      blocks.set(r, new Uint8Array(cs));
      writeU64(nv, r * 8, next * cs);
      next++;
    }
    // refcount 1 for every new cluster (table and blocks)
    for (let c = start; c < end; c++) {
      const r = Math.floor(c / E);
      const nb = blocks.get(r);
      if (nb) {
        setRefcountEntry(nb, new DataView(nb.buffer), this.bits, c % E, 1);
      } else {
        const b = await this.loadBlock(r);
        if (!b) throw new BlockFormatError(this.host.filename, 'refcount table', 'internal error while growing');
        setRefcountEntry(b.buf, b.view, this.bits, c % E, 1);
        b.dirty = true;
      }
    }
    this.host.checkOverlap(start * cs, (end - start) * cs, 'new refcount table');
    for (const [r, nb] of blocks) await this.host.file.write(entryOffset(nv.getUint32(r * 8), nv.getUint32(r * 8 + 4)), nb);
    await this.host.file.write(start * cs, newTable);
    await this.writeDirty();
    await this.host.file.datasync();
    const hdr = new Uint8Array(12);
    const hv = new DataView(hdr.buffer);
    writeU64(hv, 0, start * cs);
    hv.setUint32(8, tableClusters);
    await this.host.file.write(48, hdr); // refcount_table_offset, refcount_table_clusters
    await this.host.file.datasync();
    const oldOffset = this.tableOffset;
    const oldClusters = this.tableClusters;
    this.table = newTable;
    this.tableView = nv;
    this.tableOffset = start * cs;
    this.tableClusters = tableClusters;
    this.rebuildBlockSet();
    this.host.hostEnd = Math.max(this.host.hostEnd, end * cs);
    for (let c = 0; c < oldClusters; c++) await this.update(oldOffset / cs + c, -1);
  }

  /**
   * Finds `count` contiguous free clusters and sets their refcounts to 1.
   * Returns the host offset of the first. The run never exceeds half a
   * refcount block, so a missing block always finds room in its own range.
   */
  async allocate(count: number): Promise<number> {
    const cs = this.host.clusterSize;
    const n = Math.min(count, Math.max(1, this.blockEntries >>> 1));
    if (n !== count) throw new RangeError(`allocate: at most ${n} clusters at once`);
    let start = this.freeHint;
    let run = 0;
    let c = start;
    const limit = Math.ceil(this.host.hostEnd / cs);
    while (run < n) {
      if (c >= limit) {
        // everything past the end of the used area is free
        run = n;
        break;
      }
      const ti = this.tableIndex(c);
      if (this.blockOffset(ti) === 0) {
        // a whole block range with no refcount block is free
        const rangeEnd = (ti + 1) * this.blockEntries;
        run += rangeEnd - c;
        c = rangeEnd;
        continue;
      }
      if ((await this.get(c)) === 0) {
        run++;
      } else {
        run = 0;
        start = c + 1;
        if (start - 1 === this.freeHint) this.freeHint = start;
      }
      c++;
    }
    const off = start * cs;
    this.host.checkOverlap(off, n * cs, 'newly allocated clusters');
    const reserved = { start, count: n };
    for (let i = 0; i < n; i++) await this.update(start + i, 1, reserved);
    if (start === this.freeHint) this.freeHint = start + n;
    this.host.hostEnd = Math.max(this.host.hostEnd, off + n * cs);
    return off;
  }

  /**
   * Calls fn(cluster, refcount) for every cluster covered by an allocated
   * refcount block, loading each block once (check's bulk comparison).
   */
  async forEachAllocatedBlock(
    fn: (firstCluster: number, get: (i: number) => number) => void,
    include: (ti: number) => boolean = () => true,
  ): Promise<void> {
    for (let ti = 0; ti < this.tableEntries; ti++) {
      if (this.blockOffset(ti) === 0 || !include(ti)) continue;
      const b = await this.loadBlock(ti);
      if (!b) continue;
      const { buf, view } = b;
      const bits = this.bits;
      fn(ti * this.blockEntries, (i) => getRefcountEntry(buf, view, bits, i));
    }
  }

  get dirty(): boolean {
    for (const [, b] of this.cache.entries()) if (b.dirty) return true;
    return false;
  }

  /** Writes every dirty refcount block (no sync). */
  async writeDirty(): Promise<void> {
    for (const [off, b] of this.cache.entries()) {
      if (!b.dirty) continue;
      await this.host.file.write(off, b.buf);
      b.dirty = false;
    }
  }

  /** Drops all cached state and adopts a new table (after a rebuild). */
  reset(tableOffset: number, tableClusters: number, table: Uint8Array): void {
    this.cache.clear();
    this.table = table;
    this.tableView = new DataView(table.buffer, table.byteOffset, table.byteLength);
    this.tableOffset = tableOffset;
    this.tableClusters = tableClusters;
    this.freeHint = 0;
    this.rebuildBlockSet();
  }
}
