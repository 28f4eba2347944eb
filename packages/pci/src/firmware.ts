/**
 * What firmware does to PCI before an OS runs, for a VMM that boots kernels
 * directly: number the buses behind bridges, size and place every BAR and
 * bridge window, set Interrupt Line from the platform's INTx routing, and
 * enable decode — through configuration cycles, exactly as SeaBIOS's
 * src/fw/pciinit.c does on QEMU (facts taken from it, not its code), so a
 * guest finds the same layout on tsvmm as on QEMU+SeaBIOS:
 *
 * - bus numbers depth first (pci_bios_init_bus_rec): secondary = next free,
 *   subordinate = highest below;
 * - memory BARs smaller than 4 KiB take 4 KiB; bridge windows are aligned to
 *   4 KiB (I/O, PCI-to-PCI Bridge 1.2 §3.2.5.6) and 2 MiB (memory), an empty
 *   window gets size 0 (base above limit: closed);
 * - per bus and type, entries sorted by alignment then size, largest first,
 *   placed upwards from the region base;
 * - root I/O from 0xc000 (or 0x1000 when 16 KiB is not enough, up to 0xa000);
 * - root memory top-down below 0xfec00000 (the IOAPIC), not below the start
 *   of the PCI hole (2 GiB / 3 GiB / end of low RAM, i440fx_mem_addr_setup);
 *   when that does not fit, 64-bit BARs move above 4 GiB and high RAM,
 *   1 GiB aligned;
 * - Command |= I/O, Memory, SERR; bridges also set Bridge Control SERR.
 */
import type { PciConfigAccess } from './config-mechanism.js';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BASE_ADDRESS_MEM_PREFETCH,
  PCI_BASE_ADDRESS_MEM_TYPE_64,
  PCI_BASE_ADDRESS_MEM_TYPE_MASK,
  PCI_BASE_ADDRESS_SPACE_IO,
  PCI_BRIDGE_CONTROL,
  PCI_BRIDGE_CTL_SERR,
  PCI_CAP_ID_SHPC,
  PCI_CAPABILITY_LIST,
  PCI_CLASS_BRIDGE_PCI,
  PCI_CLASS_DEVICE,
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_COMMAND_SERR,
  PCI_HEADER_TYPE,
  PCI_HEADER_TYPE_MULTI_FUNCTION,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_IO_BASE,
  PCI_IO_BASE_UPPER16,
  PCI_IO_LIMIT,
  PCI_IO_LIMIT_UPPER16,
  PCI_MEMORY_BASE,
  PCI_MEMORY_LIMIT,
  PCI_PREF_BASE_UPPER32,
  PCI_PREF_LIMIT_UPPER32,
  PCI_PREF_MEMORY_BASE,
  PCI_PREF_MEMORY_LIMIT,
  PCI_PREF_RANGE_TYPE_64,
  PCI_PREF_RANGE_TYPE_MASK,
  PCI_PRIMARY_BUS,
  PCI_SECONDARY_BUS,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_SUBORDINATE_BUS,
  PCI_VENDOR_ID,
} from './constants.js';
import { PciBusError } from './errors.js';
import { formatDevfn } from './function.js';

/** A function firmware found, with the bridges above it (nearest first). */
export interface FirmwareDevice {
  bus: number;
  devfn: number;
  vendorId: number;
  deviceId: number;
  classCode: number;
  headerType: number;
  /** for bridges: the secondary bus number given */
  secondaryBus?: number;
  parent: FirmwareDevice | undefined;
}

export interface PciFirmwareOptions {
  /** RAM below 4 GiB in bytes (the PCI hole starts above it) */
  ramBelow4G: number;
  /** RAM above 4 GiB in bytes (64-bit BARs go above it) */
  ramAbove4G: number;
  /** Interrupt Line for a device's Interrupt Pin (1-4) — the platform's INTx routing */
  interruptLine(dev: FirmwareDevice, pin: number): number;
  /** chipset-specific setup of one function, run before decode is enabled (SeaBIOS pci_device_tbl) */
  initDevice?(dev: FirmwareDevice, access: PciConfigAccess): void;
}

export type PciRegionType = 'io' | 'mem' | 'prefmem';
const REGION_TYPES: PciRegionType[] = ['io', 'mem', 'prefmem'];

export interface FirmwareAssignment {
  /** 'bb:ss.f' */
  location: string;
  /** BAR index, or 'window' for a bridge window */
  bar: number | 'window';
  type: PciRegionType;
  address: number;
  size: number;
}

export interface PciFirmwareReport {
  devices: FirmwareDevice[];
  assignments: FirmwareAssignment[];
  /** the 64-bit window, when any BAR went above 4 GiB */
  mem64?: { start: number; end: number };
}

interface Entry {
  dev: FirmwareDevice;
  /** -1 for a bridge window */
  bar: number;
  size: number;
  align: number;
  is64: boolean;
  type: PciRegionType;
}

interface Region {
  base: number;
  entries: Entry[];
}

interface BusResources {
  regions: Record<PciRegionType, Region>;
  bridge: FirmwareDevice | undefined;
}

export const PCI_DEVICE_MEM_MIN = 0x1000;
export const PCI_BRIDGE_MEM_MIN = 0x200000;
export const PCI_BRIDGE_IO_MIN = 0x1000;
/** The IOAPIC sits at 0xfec00000: PCI memory ends below it. */
export const PCI_MEM_END = 0xfec00000;
/** 0xa000-0xafff is QEMU's hot-plug I/O; 0xb000 power management */
export const PCI_IO_LOW_END = 0xa000;

const FOUR_GIB = 2 ** 32;
const GIB = 2 ** 30;

function alignUp(x: number, a: number): number {
  return Math.ceil(x / a) * a;
}
function alignDown(x: number, a: number): number {
  return Math.floor(x / a) * a;
}

export function pciFirmwareSetup(access: PciConfigAccess, opts: PciFirmwareOptions): PciFirmwareReport {
  return new PciFirmware(access, opts).run();
}

class PciFirmware {
  private maxBus = 0;
  private readonly devices: FirmwareDevice[] = [];
  private readonly assignments: FirmwareAssignment[] = [];

  constructor(
    private readonly a: PciConfigAccess,
    private readonly opts: PciFirmwareOptions,
  ) {}

  run(): PciFirmwareReport {
    this.initBus(0);
    this.probe();
    const pcimemStart = this.opts.ramBelow4G <= 0x80000000 ? 0x80000000 : this.opts.ramBelow4G <= 0xc0000000 ? 0xc0000000 : this.opts.ramBelow4G;
    const busses: BusResources[] = Array.from({ length: this.maxBus + 1 }, () => ({
      regions: { io: { base: 0, entries: [] }, mem: { base: 0, entries: [] }, prefmem: { base: 0, entries: [] } },
      bridge: undefined,
    }));
    this.checkDevices(busses);
    const mem64 = this.mapDevices(busses, pcimemStart);
    for (const d of this.devices) this.initDevice(d);
    return { devices: this.devices, assignments: this.assignments, ...(mem64 !== undefined ? { mem64 } : {}) };
  }

  // --- config helpers ------------------------------------------------------------------

  private r8(bus: number, devfn: number, off: number): number {
    return this.a.configRead(bus, devfn, off, 1);
  }
  private r16(bus: number, devfn: number, off: number): number {
    return this.a.configRead(bus, devfn, off, 2);
  }
  private r32(bus: number, devfn: number, off: number): number {
    return this.a.configRead(bus, devfn, off, 4);
  }
  private w8(bus: number, devfn: number, off: number, v: number): void {
    this.a.configWrite(bus, devfn, off, 1, v & 0xff);
  }
  private w16(bus: number, devfn: number, off: number, v: number): void {
    this.a.configWrite(bus, devfn, off, 2, v & 0xffff);
  }
  private w32(bus: number, devfn: number, off: number, v: number): void {
    this.a.configWrite(bus, devfn, off, 4, v >>> 0);
  }

  /** Present functions on a bus in devfn order; functions 1-7 only behind a multi-function function 0. */
  private functionsOn(bus: number): number[] {
    const out: number[] = [];
    for (let slot = 0; slot < 32; slot++) {
      const f0 = slot << 3;
      if (this.r16(bus, f0, PCI_VENDOR_ID) === 0xffff) continue;
      const multi = (this.r8(bus, f0, PCI_HEADER_TYPE) & PCI_HEADER_TYPE_MULTI_FUNCTION) !== 0;
      for (let fn = 0; fn < (multi ? 8 : 1); fn++) {
        if (this.r16(bus, f0 | fn, PCI_VENDOR_ID) !== 0xffff) out.push(f0 | fn);
      }
    }
    return out;
  }

  // --- bus numbering -------------------------------------------------------------------

  private initBus(bus: number): void {
    if (bus > 0xff) return;
    const fns = this.functionsOn(bus);
    const bridges = fns.filter((devfn) => this.r16(bus, devfn, PCI_CLASS_DEVICE) === PCI_CLASS_BRIDGE_PCI);
    // Close every bridge first so no configuration cycle strays below it.
    for (const devfn of bridges) {
      this.w8(bus, devfn, PCI_SECONDARY_BUS, 255);
      this.w8(bus, devfn, PCI_SUBORDINATE_BUS, 0);
    }
    for (const devfn of bridges) {
      if (this.maxBus >= 0xff) break;
      this.w8(bus, devfn, PCI_PRIMARY_BUS, bus);
      const sec = ++this.maxBus;
      this.w8(bus, devfn, PCI_SECONDARY_BUS, sec);
      this.w8(bus, devfn, PCI_SUBORDINATE_BUS, 255);
      this.initBus(sec);
      this.w8(bus, devfn, PCI_SUBORDINATE_BUS, this.maxBus);
    }
  }

  private probe(): void {
    const bridgeFor = new Map<number, FirmwareDevice>();
    for (let bus = 0; bus <= this.maxBus; bus++) {
      for (const devfn of this.functionsOn(bus)) {
        const id = this.r32(bus, devfn, PCI_VENDOR_ID);
        const d: FirmwareDevice = {
          bus,
          devfn,
          vendorId: id & 0xffff,
          deviceId: id >>> 16,
          classCode: this.r16(bus, devfn, PCI_CLASS_DEVICE),
          headerType: this.r8(bus, devfn, PCI_HEADER_TYPE) & ~PCI_HEADER_TYPE_MULTI_FUNCTION,
          parent: bridgeFor.get(bus),
        };
        if (d.classCode === PCI_CLASS_BRIDGE_PCI) {
          d.secondaryBus = this.r8(bus, devfn, PCI_SECONDARY_BUS);
          bridgeFor.set(d.secondaryBus, d);
        }
        this.devices.push(d);
      }
    }
  }

  // --- sizing --------------------------------------------------------------------------

  private getBar(d: FirmwareDevice, index: number): { type: PciRegionType; size: number; is64: boolean } {
    const ofs = PCI_BASE_ADDRESS_0 + 4 * index;
    const old = this.r32(d.bus, d.devfn, ofs);
    let type: PciRegionType = 'mem';
    let is64 = false;
    let mask: bigint;
    if (old & PCI_BASE_ADDRESS_SPACE_IO) {
      mask = 0xfffffffcn;
      type = 'io';
    } else {
      mask = 0xfffffff0n;
      if (old & PCI_BASE_ADDRESS_MEM_PREFETCH) type = 'prefmem';
      is64 = (old & PCI_BASE_ADDRESS_MEM_TYPE_MASK) === PCI_BASE_ADDRESS_MEM_TYPE_64;
    }
    this.w32(d.bus, d.devfn, ofs, 0xffffffff);
    let val = BigInt(this.r32(d.bus, d.devfn, ofs));
    this.w32(d.bus, d.devfn, ofs, old);
    let size: bigint;
    if (is64) {
      const hold = this.r32(d.bus, d.devfn, ofs + 4);
      this.w32(d.bus, d.devfn, ofs + 4, 0xffffffff);
      const high = BigInt(this.r32(d.bus, d.devfn, ofs + 4));
      this.w32(d.bus, d.devfn, ofs + 4, hold);
      val |= high << 32n;
      mask |= 0xffffffffn << 32n;
      size = (~(val & mask) + 1n) & 0xffffffffffffffffn;
    } else {
      size = (~(val & mask) + 1n) & 0xffffffffn;
    }
    return { type, size: Number(size), is64 };
  }

  /** Whether a bridge implements this kind of window (memory is mandatory). */
  private bridgeHasRegion(d: FirmwareDevice, type: PciRegionType): boolean {
    if (type === 'mem') return true;
    const reg = type === 'io' ? PCI_IO_BASE : PCI_PREF_MEMORY_BASE;
    this.w8(d.bus, d.devfn, reg, 0xff);
    return this.r8(d.bus, d.devfn, reg) !== 0;
  }

  private bridgeRegionIs64(region: Region, d: FirmwareDevice, type: PciRegionType): boolean {
    if (type !== 'prefmem') return false;
    let pmem = this.r32(d.bus, d.devfn, PCI_PREF_MEMORY_BASE);
    if (pmem === 0) {
      this.w32(d.bus, d.devfn, PCI_PREF_MEMORY_BASE, 0xfff0fff0);
      pmem = this.r32(d.bus, d.devfn, PCI_PREF_MEMORY_BASE);
      this.w32(d.bus, d.devfn, PCI_PREF_MEMORY_BASE, 0);
    }
    if ((pmem & PCI_PREF_RANGE_TYPE_MASK) !== PCI_PREF_RANGE_TYPE_64) return false;
    return region.entries.every((e) => e.is64);
  }

  private hasCapability(d: FirmwareDevice, id: number): boolean {
    if ((this.r16(d.bus, d.devfn, PCI_STATUS) & PCI_STATUS_CAP_LIST) === 0) return false;
    let p = this.r8(d.bus, d.devfn, PCI_CAPABILITY_LIST) & 0xfc;
    for (let n = 0; p >= 0x40 && n < 48; n++) {
      if (this.r8(d.bus, d.devfn, p) === id) return true;
      p = this.r8(d.bus, d.devfn, p + 1) & 0xfc;
    }
    return false;
  }

  private static addEntry(region: Region, e: Entry): void {
    // Sorted by alignment, then size, largest first; equal ones keep their order.
    let i = 0;
    while (i < region.entries.length) {
      const pos = region.entries[i] as Entry;
      if (pos.align < e.align || (pos.align === e.align && pos.size < e.size)) break;
      i++;
    }
    region.entries.splice(i, 0, e);
  }

  private static align(r: Region): number {
    return r.entries[0]?.align ?? 1;
  }

  private static sum(r: Region): number {
    return r.entries.reduce((s, e) => s + e.size, 0);
  }

  private checkDevices(busses: BusResources[]): void {
    for (const d of this.devices) {
      if (d.classCode === PCI_CLASS_BRIDGE_PCI && d.secondaryBus !== undefined && busses[d.secondaryBus] !== undefined) {
        (busses[d.secondaryBus] as BusResources).bridge = d;
      }
      const bus = busses[d.bus] as BusResources;
      const nbars = d.headerType === 1 ? 2 : 6;
      for (let i = 0; i < nbars; i++) {
        const { type, size: raw, is64 } = this.getBar(d, i);
        if (raw === 0) continue;
        const size = type !== 'io' && raw < PCI_DEVICE_MEM_MIN ? PCI_DEVICE_MEM_MIN : raw;
        PciFirmware.addEntry(bus.regions[type], { dev: d, bar: i, size, align: size, is64, type });
        if (is64) i++;
      }
    }
    for (let sec = this.maxBus; sec > 0; sec--) {
      const s = busses[sec] as BusResources;
      const br = s.bridge;
      if (br === undefined) continue;
      const parent = busses[br.bus] as BusResources;
      const shpc = this.hasCapability(br, PCI_CAP_ID_SHPC);
      for (const type of REGION_TYPES) {
        if (!this.bridgeHasRegion(br, type)) continue;
        let align = type === 'io' ? PCI_BRIDGE_IO_MIN : PCI_BRIDGE_MEM_MIN;
        align = Math.max(align, PciFirmware.align(s.regions[type]));
        let sum = PciFirmware.sum(s.regions[type]);
        // A hot-plug capable bridge keeps a minimal window even when empty.
        if (sum === 0 && shpc) sum = align;
        const size = alignUp(sum, align);
        const is64 = this.bridgeRegionIs64(s.regions[type], br, type);
        PciFirmware.addEntry(parent.regions[type], { dev: br, bar: -1, size, align, is64, type });
      }
    }
  }

  // --- placement -----------------------------------------------------------------------

  private initRootMem(root: BusResources, pcimemStart: number): boolean {
    let end = root.regions.prefmem;
    let start = root.regions.mem;
    if (PciFirmware.align(start) < PciFirmware.align(end)) {
      // Put the more aligned region at the top.
      end = root.regions.mem;
      start = root.regions.prefmem;
    }
    end.base = alignDown(PCI_MEM_END - PciFirmware.sum(end), PciFirmware.align(end));
    start.base = alignDown(end.base - PciFirmware.sum(start), PciFirmware.align(start));
    return start.base >= pcimemStart && start.base <= PCI_MEM_END;
  }

  private mapDevices(busses: BusResources[], pcimemStart: number): { start: number; end: number } | undefined {
    const root = busses[0] as BusResources;
    const ioSum = PciFirmware.sum(root.regions.io);
    if (ioSum < 0x4000) root.regions.io.base = 0xc000;
    else if (ioSum < PCI_IO_LOW_END - 0x1000) root.regions.io.base = 0x1000;
    else {
      throw new PciBusError(`PCI: out of I/O address space: devices need 0x${ioSum.toString(16)} bytes of ports, at most 0x${(PCI_IO_LOW_END - 0x1000 - 1).toString(16)} fit`, {
        hint: 'use fewer devices with I/O BARs, or spread them so bridge windows (4 KiB each) waste less',
      });
    }
    let mem64: { start: number; end: number } | undefined;
    if (!this.initRootMem(root, pcimemStart)) {
      const r64mem: Region = { base: 0, entries: [] };
      const r64pref: Region = { base: 0, entries: [] };
      for (const [from, to] of [
        [root.regions.mem, r64mem],
        [root.regions.prefmem, r64pref],
      ] as const) {
        to.entries.push(...from.entries.filter((e) => e.is64));
        from.entries = from.entries.filter((e) => !e.is64);
      }
      if (!this.initRootMem(root, pcimemStart)) {
        throw new PciBusError(`PCI: out of 32-bit memory space: devices need more than the 0x${(PCI_MEM_END - pcimemStart).toString(16)} bytes between 0x${pcimemStart.toString(16)} and 0x${PCI_MEM_END.toString(16)}`, {
          hint: 'use 64-bit BARs for large devices, or fewer devices',
        });
      }
      r64mem.base = alignUp(alignUp(FOUR_GIB + this.opts.ramAbove4G, PciFirmware.align(r64mem)), GIB);
      r64pref.base = alignUp(alignUp(r64mem.base + PciFirmware.sum(r64mem), PciFirmware.align(r64pref)), GIB);
      mem64 = { start: r64mem.base, end: alignUp(r64pref.base + PciFirmware.sum(r64pref), GIB) };
      this.mapEntries(busses, r64mem);
      this.mapEntries(busses, r64pref);
    }
    for (const bus of busses) for (const type of REGION_TYPES) this.mapEntries(busses, bus.regions[type]);
    return mem64;
  }

  private mapEntries(busses: BusResources[], r: Region): void {
    for (const e of r.entries) {
      const addr = r.base;
      r.base += e.size;
      if (e.bar === -1 && e.dev.secondaryBus !== undefined) {
        const child = busses[e.dev.secondaryBus];
        if (child !== undefined) child.regions[e.type].base = addr;
      }
      this.mapOne(e, addr);
    }
    r.entries = [];
  }

  private mapOne(e: Entry, addr: number): void {
    const d = e.dev;
    this.assignments.push({ location: `${d.bus.toString(16).padStart(2, '0')}:${formatDevfn(d.devfn)}`, bar: e.bar < 0 ? 'window' : e.bar, type: e.type, address: addr, size: e.size });
    if (e.bar >= 0) {
      const ofs = PCI_BASE_ADDRESS_0 + 4 * e.bar;
      this.w32(d.bus, d.devfn, ofs, addr % FOUR_GIB);
      if (e.is64) this.w32(d.bus, d.devfn, ofs + 4, Math.floor(addr / FOUR_GIB));
      return;
    }
    const limit = addr + e.size - 1;
    if (e.type === 'io') {
      this.w8(d.bus, d.devfn, PCI_IO_BASE, Math.floor(addr / 0x100));
      this.w16(d.bus, d.devfn, PCI_IO_BASE_UPPER16, 0);
      this.w8(d.bus, d.devfn, PCI_IO_LIMIT, Math.floor(limit / 0x100));
      this.w16(d.bus, d.devfn, PCI_IO_LIMIT_UPPER16, 0);
    } else if (e.type === 'mem') {
      this.w16(d.bus, d.devfn, PCI_MEMORY_BASE, Math.floor(addr / 0x10000));
      this.w16(d.bus, d.devfn, PCI_MEMORY_LIMIT, Math.floor(limit / 0x10000));
    } else {
      this.w16(d.bus, d.devfn, PCI_PREF_MEMORY_BASE, Math.floor(addr / 0x10000));
      this.w16(d.bus, d.devfn, PCI_PREF_MEMORY_LIMIT, Math.floor(limit / 0x10000));
      this.w32(d.bus, d.devfn, PCI_PREF_BASE_UPPER32, Math.floor(addr / FOUR_GIB));
      this.w32(d.bus, d.devfn, PCI_PREF_LIMIT_UPPER32, Math.floor(limit / FOUR_GIB));
    }
  }

  // --- per-device init -----------------------------------------------------------------

  private initDevice(d: FirmwareDevice): void {
    const pin = this.r8(d.bus, d.devfn, PCI_INTERRUPT_PIN);
    if (pin !== 0) this.w8(d.bus, d.devfn, PCI_INTERRUPT_LINE, this.opts.interruptLine(d, pin));
    this.opts.initDevice?.(d, this.a);
    const cmd = this.r16(d.bus, d.devfn, PCI_COMMAND);
    this.w16(d.bus, d.devfn, PCI_COMMAND, cmd | PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_SERR);
    if (d.headerType === 1) {
      const ctl = this.r16(d.bus, d.devfn, PCI_BRIDGE_CONTROL);
      this.w16(d.bus, d.devfn, PCI_BRIDGE_CONTROL, ctl | PCI_BRIDGE_CTL_SERR);
    }
  }
}

/**
 * SeaBIOS's INTx routing on i440FX/PIIX (piix_pci_slot_get_irq): the slot
 * numbers of every bridge on the way up plus the root slot minus one, added
 * to the pin, pick one of the four PIRQ lines; `pirqIrqs` are the ISA IRQs
 * programmed into the PIRQ route registers (SeaBIOS: 10, 10, 11, 11).
 */
export function piixInterruptLine(dev: FirmwareDevice, pin: number, pirqIrqs: readonly number[]): number {
  let addend = 0;
  let d: FirmwareDevice = dev;
  while (d.parent !== undefined) {
    addend += d.devfn >> 3;
    d = d.parent;
  }
  addend += (d.devfn >> 3) - 1;
  return pirqIrqs[(pin - 1 + addend) & 3] ?? 0xff;
}
