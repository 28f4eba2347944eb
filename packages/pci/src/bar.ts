/**
 * Base Address Registers (PCI Local Bus 3.0 §6.2.5.1): the definition a
 * device gives for one BAR, and the runtime object that dispatches guest
 * accesses inside it and keeps its ioeventfds at the address the guest
 * programmed.
 *
 * A BAR is either one handler for the whole range or a set of regions (e.g.
 * an MSI-X table and PBA beside device registers); a handler sees offsets
 * into its own region, as on every other bus (core's BusDevice). Accesses to
 * a hole between regions read as zero and writes are dropped, like QEMU's
 * unassigned parts of a BAR container.
 *
 * The bus owns placement: it calls `setMapping` when decode or the address
 * changes, and the BAR moves its ioeventfds along, so a virtqueue notify
 * ioeventfd follows a BAR the guest moves (QEMU: memory_region_add_eventfd on
 * the BAR's region).
 */
import type { BusDevice, EventNotifier, InterruptAndNotifyServices, Logger, Unregister } from '@tsvmm/core';
import { nullLogger } from '@tsvmm/core';
import { PciConfigError } from './errors.js';

export type PciBarKind = 'io' | 'mem32' | 'mem64';

export interface PciBarDefinition {
  kind: PciBarKind;
  /** bytes, a power of two: at least 4 for I/O, 16 for memory */
  size: number;
  /** memory BARs only: the prefetchable bit */
  prefetchable?: boolean;
  /** handles the whole BAR; leave out and call addRegion for a BAR made of regions */
  handler?: BusDevice;
  /** for diagnostics, e.g. 'msix' */
  name?: string;
}

/** An ioeventfd at an offset into a BAR (KVM_IOEVENTFD; KVM api.rst 4.59). */
export interface BarIoeventfd {
  offset: number;
  /** 1, 2, 4 or 8; 0 matches any width (memory BARs, KVM_CAP_IOEVENTFD_ANY_LENGTH) */
  len: number;
  datamatch?: bigint;
  notifier: EventNotifier;
}

interface BarRegion {
  offset: number;
  length: number;
  handler: BusDevice;
  name: string;
}

const MAX_IO_BAR = 0x10000;
/** Largest BAR we accept: the MMIO address space tsvmm models ends at 2^52. */
const MAX_MEM64_BAR = 2 ** 51;
const MAX_MEM32_BAR = 2 ** 31;

export function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && 2 ** Math.round(Math.log2(n)) === n;
}

export class PciBar implements BusDevice {
  readonly kind: PciBarKind;
  readonly size: number;
  readonly prefetchable: boolean;
  readonly name: string;
  private readonly regions: BarRegion[] = [];
  private readonly ioeventfds = new Map<BarIoeventfd, Unregister | undefined>();
  private readonly listeners = new Set<(address: number | undefined) => void>();
  private mapped: number | undefined;
  private notify: InterruptAndNotifyServices | undefined;
  private log: Logger = nullLogger;

  constructor(
    /** owner for messages, e.g. the device id */
    readonly owner: string,
    readonly index: number,
    def: PciBarDefinition,
  ) {
    const what = `${owner}: BAR${index}`;
    if (!isPowerOfTwo(def.size)) throw new PciConfigError(`${what}: size ${def.size} is not a power of two`);
    if (def.kind === 'io') {
      if (def.size < 4 || def.size > MAX_IO_BAR) throw new PciConfigError(`${what}: an I/O BAR is 4 bytes to 64 KiB, not ${def.size}`);
      if (def.prefetchable) throw new PciConfigError(`${what}: an I/O BAR cannot be prefetchable`);
    } else {
      const max = def.kind === 'mem32' ? MAX_MEM32_BAR : MAX_MEM64_BAR;
      if (def.size < 16 || def.size > max) throw new PciConfigError(`${what}: a ${def.kind} BAR is 16 bytes to ${max} bytes, not ${def.size}`);
    }
    this.kind = def.kind;
    this.size = def.size;
    this.prefetchable = def.prefetchable ?? false;
    this.name = def.name ?? `bar${index}`;
    if (def.handler !== undefined) this.addRegion(0, def.size, def.handler, this.name);
  }

  /** The low bits of the BAR register: space, type and prefetchable (PCI 3.0 §6.2.5.1). */
  get flags(): number {
    if (this.kind === 'io') return 0x1;
    return (this.kind === 'mem64' ? 0x4 : 0) | (this.prefetchable ? 0x8 : 0);
  }

  get is64(): boolean {
    return this.kind === 'mem64';
  }

  /** Where the guest can reach this BAR now; undefined while it is not decoded. */
  get mappedAddress(): number | undefined {
    return this.mapped;
  }

  /** Dispatch part of the BAR to `handler`, which sees offsets from `offset`. */
  addRegion(offset: number, length: number, handler: BusDevice, name: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0 || offset + length > this.size) {
      throw new PciConfigError(`${this.owner}: BAR${this.index} region '${name}' at 0x${offset.toString(16)} length ${length} does not fit the ${this.size}-byte BAR`);
    }
    for (const r of this.regions) {
      if (offset < r.offset + r.length && r.offset < offset + length) {
        throw new PciConfigError(`${this.owner}: BAR${this.index} region '${name}' overlaps region '${r.name}'`);
      }
    }
    this.regions.push({ offset, length, handler, name });
    this.regions.sort((a, b) => a.offset - b.offset);
  }

  read(offset: number, data: Uint8Array): void {
    const r = this.regionAt(offset, data.length);
    if (r === undefined) data.fill(0);
    else r.handler.read(offset - r.offset, data);
  }

  write(offset: number, data: Uint8Array): void {
    const r = this.regionAt(offset, data.length);
    if (r !== undefined) r.handler.write(offset - r.offset, data);
  }

  /**
   * Register an ioeventfd at `offset`; it is assigned in KVM whenever the BAR
   * is mapped and moves with it. Returns a function that removes it.
   */
  addIoeventfd(spec: BarIoeventfd): Unregister {
    if (!Number.isSafeInteger(spec.offset) || spec.offset < 0 || spec.offset + Math.max(spec.len, 1) > this.size) {
      throw new PciConfigError(`${this.owner}: ioeventfd at BAR${this.index}+0x${spec.offset.toString(16)} is outside the ${this.size}-byte BAR`);
    }
    const own = { ...spec };
    // Errors here go to the device, which may fall back (e.g. to a fixed width).
    this.ioeventfds.set(own, this.assign(own, true));
    return () => {
      if (!this.ioeventfds.has(own)) return;
      this.ioeventfds.get(own)?.();
      this.ioeventfds.delete(own);
    };
  }

  /** Called with the new address (or undefined) whenever the mapping changes. */
  onMapChange(listener: (address: number | undefined) => void): Unregister {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** The bus hands the BAR the services it assigns ioeventfds with (at attach). */
  bindNotify(notify: InterruptAndNotifyServices | undefined, log?: Logger): void {
    if (log !== undefined) this.log = log;
    if (notify === this.notify) return;
    for (const [spec, unreg] of this.ioeventfds) {
      unreg?.();
      this.ioeventfds.set(spec, undefined);
    }
    this.notify = notify;
    for (const spec of this.ioeventfds.keys()) this.ioeventfds.set(spec, this.assign(spec));
  }

  /** The bus moved or unmapped the BAR: move the ioeventfds and tell listeners. */
  setMapping(address: number | undefined): void {
    if (address === this.mapped) return;
    for (const [spec, unreg] of this.ioeventfds) {
      unreg?.();
      this.ioeventfds.set(spec, undefined);
    }
    this.mapped = address;
    for (const spec of this.ioeventfds.keys()) this.ioeventfds.set(spec, this.assign(spec));
    for (const l of [...this.listeners]) l(address);
  }

  /**
   * Assign in KVM at the current address. When the guest moved the BAR (a
   * remap), a failure must not escape into its config write: the ioeventfd
   * stays unassigned, so the writes reach the device's handler instead, and
   * the failure is logged.
   */
  private assign(spec: BarIoeventfd, rethrow = false): Unregister | undefined {
    if (this.mapped === undefined || this.notify === undefined) return undefined;
    const addr = this.mapped + spec.offset;
    try {
      return this.notify.assignIoeventfd({
        space: this.kind === 'io' ? 'pio' : 'mmio',
        addr,
        len: spec.len,
        ...(spec.datamatch !== undefined ? { datamatch: spec.datamatch } : {}),
        notifier: spec.notifier,
      });
    } catch (err) {
      if (rethrow) throw err;
      this.log.warn(`${this.owner}: BAR${this.index} ioeventfd at 0x${addr.toString(16)} not assigned (${(err as Error).message}); writes there go to the device model`);
      return undefined;
    }
  }

  private regionAt(offset: number, len: number): BarRegion | undefined {
    for (const r of this.regions) {
      if (offset >= r.offset && offset + len <= r.offset + r.length) return r;
    }
    return undefined;
  }
}
