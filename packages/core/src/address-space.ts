/**
 * Port I/O and MMIO address spaces: a sorted set of non-overlapping ranges,
 * each owned by one device. A device sees only an offset into its own range
 * (the rust-vmm vm-device bus model).
 */
import { AddressRangeError } from './errors.js';

/** What a device implements to sit on a bus. `data.length` is the access size. */
export interface BusDevice {
  read(offset: number, data: Uint8Array): void;
  write(offset: number, data: Uint8Array): void;
}

export interface BusRange {
  readonly base: number;
  readonly length: number;
  readonly device: BusDevice;
  /** who registered it: a device id, used in conflict errors */
  readonly owner: string;
}

export type AddressSpaceKind = 'pio' | 'mmio';

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

export function describeRange(kind: AddressSpaceKind, base: number, length: number): string {
  return `${kind === 'pio' ? 'I/O ports' : 'MMIO'} ${hex(base)}-${hex(base + length - 1)}`;
}

export class AddressSpace {
  private ranges: BusRange[] = [];
  private lastHit: BusRange | undefined;
  /** accesses that hit no device, counted for diagnostics */
  unhandledAccesses = 0;

  constructor(
    readonly kind: AddressSpaceKind,
    /** one past the highest address (0x10000 for port I/O) */
    readonly limit: number,
  ) {}

  register(base: number, length: number, device: BusDevice, owner: string): BusRange {
    if (!Number.isSafeInteger(base) || base < 0) {
      throw new AddressRangeError(`${owner}: invalid ${this.kind} base address ${String(base)}`);
    }
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new AddressRangeError(`${owner}: ${this.kind} range at ${hex(base)} has zero or invalid length ${String(length)}`);
    }
    if (base + length > this.limit) {
      throw new AddressRangeError(
        `${owner}: ${describeRange(this.kind, base, length)} is outside the address space (limit ${hex(this.limit - 1)})`,
      );
    }
    const i = this.lowerBound(base);
    const prev = i > 0 ? this.ranges[i - 1] : undefined;
    const next = this.ranges[i];
    for (const other of [prev, next]) {
      if (other && base < other.base + other.length && other.base < base + length) {
        throw new AddressRangeError(
          `${owner}: ${describeRange(this.kind, base, length)} overlaps ${describeRange(this.kind, other.base, other.length)} claimed by ${other.owner}`,
          { hint: 'give one of the devices a different address (e.g. iobase=...)' },
        );
      }
    }
    const range: BusRange = { base, length, device, owner };
    this.ranges.splice(i, 0, range);
    return range;
  }

  unregister(range: BusRange): void {
    const i = this.ranges.indexOf(range);
    if (i < 0) throw new AddressRangeError(`${range.owner}: ${describeRange(this.kind, range.base, range.length)} is not registered`);
    this.ranges.splice(i, 1);
    if (this.lastHit === range) this.lastHit = undefined;
  }

  /** Remove every range registered by `owner`. */
  unregisterOwner(owner: string): void {
    this.ranges = this.ranges.filter((r) => r.owner !== owner);
    this.lastHit = undefined;
  }

  find(addr: number): BusRange | undefined {
    const hit = this.lastHit;
    if (hit !== undefined && addr >= hit.base && addr < hit.base + hit.length) return hit;
    // upper bound: first range with base > addr; candidate is the one before
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.ranges[mid] as BusRange).base <= addr) lo = mid + 1;
      else hi = mid;
    }
    const r = lo > 0 ? this.ranges[lo - 1] : undefined;
    if (r !== undefined && addr < r.base + r.length) {
      this.lastHit = r;
      return r;
    }
    return undefined;
  }

  /** Dispatch a read. Unclaimed addresses read as all ones, like an ISA bus with nothing driving it. */
  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (r === undefined) {
      data.fill(0xff);
      this.unhandledAccesses++;
      return false;
    }
    r.device.read(addr - r.base, data);
    return true;
  }

  /** Dispatch a write. Writes to unclaimed addresses are dropped. */
  write(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr);
    if (r === undefined) {
      this.unhandledAccesses++;
      return false;
    }
    r.device.write(addr - r.base, data);
    return true;
  }

  list(): readonly BusRange[] {
    return this.ranges;
  }

  private lowerBound(base: number): number {
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((this.ranges[mid] as BusRange).base < base) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
