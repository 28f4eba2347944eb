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
  /**
   * The memfd behind `buffer`, when the accelerator has one (valid in every
   * thread while `buffer` is reachable). Migration asks it which pages were
   * ever written (lseek SEEK_DATA), so never-touched RAM is neither read nor sent.
   */
  readonly fd?: number;
  /**
   * The region's device-dirty bitmap (one bit per page, Uint32 words) and the
   * tracking switch (one Int32), shared by every GuestMemory built from
   * list(): an iothread's writes land in the same bitmap as the main thread's.
   * Absent in a caller's own regions: the GuestMemory allocates them.
   */
  readonly deviceDirty?: SharedArrayBuffer;
  readonly dirtyControl?: SharedArrayBuffer;
}

interface Region {
  readonly gpa: number;
  readonly size: number;
  readonly buffer: SharedArrayBuffer;
  readonly fd: number | undefined;
  readonly end: number;
  readonly bytes: Uint8Array;
  readonly view: DataView;
  /** one bit per page, set by device writes while dirty tracking is on (shared, updated with Atomics) */
  readonly deviceDirty: Uint32Array;
}

export class GuestMemory {
  private readonly regions: Region[];
  /** [0] != 0 while dirty tracking is on; shared with GuestMemory copies in other threads */
  private readonly dirtyControl: Int32Array;

  constructor(regions: readonly GuestRamRegion[]) {
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    const control = sorted.find((r) => r.dirtyControl !== undefined)?.dirtyControl;
    this.dirtyControl = new Int32Array(control !== undefined && control.byteLength >= 4 ? control : new SharedArrayBuffer(4), 0, 1);
    this.regions = sorted.map((r) => {
      if (r.size > r.buffer.byteLength) {
        throw new RangeError(`guest RAM region at 0x${r.gpa.toString(16)}: size ${r.size} exceeds its buffer (${r.buffer.byteLength})`);
      }
      const pages = Math.ceil(r.size / PAGE_SIZE);
      const words = Math.ceil(pages / 32);
      const shared = r.deviceDirty !== undefined && r.deviceDirty.byteLength >= words * 4 ? r.deviceDirty : new SharedArrayBuffer(words * 4);
      return {
        gpa: r.gpa,
        size: r.size,
        buffer: r.buffer,
        fd: r.fd,
        end: r.gpa + r.size,
        bytes: new Uint8Array(r.buffer, 0, r.size),
        view: new DataView(r.buffer, 0, r.size),
        deviceDirty: new Uint32Array(shared, 0, words),
      };
    });
    for (let i = 1; i < this.regions.length; i++) {
      const a = this.regions[i - 1] as Region;
      const b = this.regions[i] as Region;
      if (a.end > b.gpa) throw new RangeError(`guest RAM regions overlap at 0x${b.gpa.toString(16)}`);
    }
  }

  /** Regions as given (for memslots, migration, workers), with the shared dirty-tracking state. */
  list(): readonly GuestRamRegion[] {
    return this.regions.map(({ gpa, size, buffer, fd, deviceDirty }) => ({
      gpa,
      size,
      buffer,
      ...(fd !== undefined ? { fd } : {}),
      deviceDirty: deviceDirty.buffer as SharedArrayBuffer,
      dirtyControl: this.dirtyControl.buffer as SharedArrayBuffer,
    }));
  }

  private get dirtyTracking(): boolean {
    return Atomics.load(this.dirtyControl, 0) !== 0;
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

  /** Switches tracking for this memory and every copy built from its list() (other threads included). */
  setDirtyTracking(on: boolean): void {
    Atomics.store(this.dirtyControl, 0, on ? 1 : 0);
    if (!on) for (const r of this.regions) r.deviceDirty.fill(0);
  }

  /** Device-dirtied pages of the region at `gpa` since the last call (bitmap, one bit per page); clears them. */
  takeDeviceDirty(gpa: number): Uint32Array {
    const r = this.regions.find((x) => x.gpa === gpa);
    if (r === undefined) throw new GuestMemoryError(gpa, 0, 'dirty bitmap lookup');
    const d = r.deviceDirty;
    const copy = new Uint32Array(d.length);
    // Word by word, atomically: an iothread may be setting bits right now, and none may be lost.
    for (let i = 0; i < d.length; i++) if (d[i] !== 0) copy[i] = Atomics.exchange(d, i, 0);
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
  for (let p = first; p <= last; p++) Atomics.or(r.deviceDirty, p >>> 5, 1 << (p & 31));
}
