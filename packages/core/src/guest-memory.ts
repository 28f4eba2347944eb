/**
 * Guest physical memory access (ARCHITECTURE.md "Guest memory and DMA").
 *
 * Guest RAM is one SharedArrayBuffer per region of at most 4 GiB, each its own
 * KVM memslot. Every guest-supplied address and length is untrusted: accesses
 * are checked against the regions and fail with GuestMemoryError, never touch
 * anything else. Device writes mark pages dirty when dirty tracking is on
 * (used by migration: KVM's dirty log sees only vCPU writes).
 *
 * This interface is about *access*; who creates the memory (the KVM binding,
 * or a plain SharedArrayBuffer in unit tests) is separate.
 */
import { GuestMemoryError } from './errors.js';

export const PAGE_SIZE = 4096;
export const PAGE_SHIFT = 12;

export interface GuestRamRegion {
  /** guest physical address of the first byte */
  readonly gpa: number;
  readonly size: number;
  readonly buffer: SharedArrayBuffer;
}

interface Region extends GuestRamRegion {
  readonly end: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** one bit per page, set by device writes while dirty tracking is on */
  readonly deviceDirty: Uint32Array;
}

export class GuestMemory {
  private readonly regions: Region[];
  private dirtyTracking = false;

  constructor(regions: readonly GuestRamRegion[]) {
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    this.regions = sorted.map((r) => {
      if (r.size > r.buffer.byteLength) {
        throw new RangeError(`guest RAM region at 0x${r.gpa.toString(16)}: size ${r.size} exceeds its buffer (${r.buffer.byteLength})`);
      }
      const pages = Math.ceil(r.size / PAGE_SIZE);
      return {
        gpa: r.gpa,
        size: r.size,
        buffer: r.buffer,
        end: r.gpa + r.size,
        bytes: new Uint8Array(r.buffer, 0, r.size),
        view: new DataView(r.buffer, 0, r.size),
        deviceDirty: new Uint32Array(Math.ceil(pages / 32)),
      };
    });
    for (let i = 1; i < this.regions.length; i++) {
      const a = this.regions[i - 1] as Region;
      const b = this.regions[i] as Region;
      if (a.end > b.gpa) throw new RangeError(`guest RAM regions overlap at 0x${b.gpa.toString(16)}`);
    }
  }

  /** Regions as given (for memslots, migration, workers). */
  list(): readonly GuestRamRegion[] {
    return this.regions.map(({ gpa, size, buffer }) => ({ gpa, size, buffer }));
  }

  get totalSize(): number {
    return this.regions.reduce((n, r) => n + r.size, 0);
  }

  /** True if [gpa, gpa+length) lies entirely in guest RAM (possibly spanning adjacent regions). */
  contains(gpa: number, length: number): boolean {
    if (!validRange(gpa, length)) return false;
    let cur = gpa;
    const end = gpa + length;
    while (cur < end) {
      const r = this.regionAt(cur);
      if (r === undefined) return false;
      cur = Math.min(end, r.end);
    }
    return true;
  }

  /**
   * A zero-copy view of [gpa, gpa+length). Throws GuestMemoryError if the range
   * is not in RAM or straddles two regions (use read/write for those).
   */
  slice(gpa: number, length: number): Uint8Array {
    const r = this.regionFor(gpa, length);
    const off = gpa - r.gpa;
    return r.bytes.subarray(off, off + length);
  }

  read(gpa: number, dst: Uint8Array): void {
    this.forEachChunk(gpa, dst.length, 'read', (r, off, pos, n) => {
      dst.set(r.bytes.subarray(off, off + n), pos);
    });
  }

  write(gpa: number, src: Uint8Array): void {
    this.forEachChunk(gpa, src.length, 'write', (r, off, pos, n) => {
      r.bytes.set(src.subarray(pos, pos + n), off);
      if (this.dirtyTracking) markPages(r, off, n);
    });
  }

  fill(gpa: number, length: number, value: number): void {
    this.forEachChunk(gpa, length, 'write', (r, off, _pos, n) => {
      r.bytes.fill(value, off, off + n);
      if (this.dirtyTracking) markPages(r, off, n);
    });
  }

  readU8(gpa: number): number {
    const r = this.regionFor(gpa, 1);
    return r.view.getUint8(gpa - r.gpa);
  }
  readU16(gpa: number): number {
    const r = this.regionFor(gpa, 2);
    return r.view.getUint16(gpa - r.gpa, true);
  }
  readU32(gpa: number): number {
    const r = this.regionFor(gpa, 4);
    return r.view.getUint32(gpa - r.gpa, true);
  }
  readU64(gpa: number): bigint {
    const r = this.regionFor(gpa, 8);
    return r.view.getBigUint64(gpa - r.gpa, true);
  }
  writeU8(gpa: number, v: number): void {
    const r = this.regionFor(gpa, 1);
    r.view.setUint8(gpa - r.gpa, v);
    if (this.dirtyTracking) markPages(r, gpa - r.gpa, 1);
  }
  writeU16(gpa: number, v: number): void {
    const r = this.regionFor(gpa, 2);
    r.view.setUint16(gpa - r.gpa, v, true);
    if (this.dirtyTracking) markPages(r, gpa - r.gpa, 2);
  }
  writeU32(gpa: number, v: number): void {
    const r = this.regionFor(gpa, 4);
    r.view.setUint32(gpa - r.gpa, v, true);
    if (this.dirtyTracking) markPages(r, gpa - r.gpa, 4);
  }
  writeU64(gpa: number, v: bigint): void {
    const r = this.regionFor(gpa, 8);
    r.view.setBigUint64(gpa - r.gpa, v, true);
    if (this.dirtyTracking) markPages(r, gpa - r.gpa, 8);
  }

  /** Mark [gpa, gpa+length) dirty, for writes done through a slice(). */
  markDirty(gpa: number, length: number): void {
    if (!this.dirtyTracking) return;
    this.forEachChunk(gpa, length, 'write', (r, off, _pos, n) => markPages(r, off, n));
  }

  setDirtyTracking(on: boolean): void {
    this.dirtyTracking = on;
    if (!on) for (const r of this.regions) r.deviceDirty.fill(0);
  }

  /** Device-dirtied pages of the region at `gpa` since the last call (bitmap, one bit per page); clears them. */
  takeDeviceDirty(gpa: number): Uint32Array {
    const r = this.regions.find((x) => x.gpa === gpa);
    if (r === undefined) throw new GuestMemoryError(gpa, 0, 'dirty bitmap lookup');
    const copy = r.deviceDirty.slice();
    r.deviceDirty.fill(0);
    return copy;
  }

  private regionAt(gpa: number): Region | undefined {
    for (const r of this.regions) {
      if (gpa >= r.gpa && gpa < r.end) return r;
    }
    return undefined;
  }

  private regionFor(gpa: number, length: number): Region {
    if (validRange(gpa, length)) {
      const r = this.regionAt(gpa);
      if (r !== undefined && gpa + length <= r.end) return r;
    }
    throw new GuestMemoryError(gpa, length);
  }

  private forEachChunk(
    gpa: number,
    length: number,
    what: string,
    fn: (r: Region, offset: number, pos: number, n: number) => void,
  ): void {
    if (!this.contains(gpa, length)) throw new GuestMemoryError(gpa, length, what);
    let pos = 0;
    while (pos < length) {
      const cur = gpa + pos;
      const r = this.regionAt(cur) as Region;
      const n = Math.min(length - pos, r.end - cur);
      fn(r, cur - r.gpa, pos, n);
      pos += n;
    }
  }
}

function validRange(gpa: number, length: number): boolean {
  return Number.isSafeInteger(gpa) && Number.isSafeInteger(length) && gpa >= 0 && length >= 0 && Number.isSafeInteger(gpa + length);
}

function markPages(r: Region, offset: number, n: number): void {
  if (n === 0) return;
  const first = Math.floor(offset / PAGE_SIZE);
  const last = Math.floor((offset + n - 1) / PAGE_SIZE);
  for (let p = first; p <= last; p++) {
    const w = p >>> 5;
    r.deviceDirty[w] = ((r.deviceDirty[w] as number) | (1 << (p & 31))) >>> 0;
  }
}
