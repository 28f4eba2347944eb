/**
 * A PCI bus: 32 device slots of 8 functions (PCI Local Bus 3.0 §3.2.2.3),
 * configuration routing by bus number through PCI-to-PCI bridges (PCI-to-PCI
 * Bridge Architecture 1.2 §3.2.5.3-5), BAR mapping that follows the guest,
 * and INTx propagation with the bridge swizzle (bridge 1.2 §9.1).
 *
 * BAR mapping (PCI 3.0 §6.2.5): a BAR is placed in the machine's port or MMIO
 * address space when the function's Command register enables that decode,
 * the address is non-zero and fits the space (a 32-bit BAR must end below
 * 4 GiB, as QEMU's pci_bar_address insists), and every bridge above it has
 * the same decode enabled with the BAR inside one of its forwarding windows
 * (I/O window for I/O BARs; memory or prefetchable window for memory BARs).
 * Simplification, documented in docs/pci.md: a BAR only partly inside a
 * window is not mapped at all, and a BAR overlapping another claimed range
 * stays unmapped with a warning (QEMU would let one shadow the other).
 *
 * INTx: a function's pin is propagated with (pin + slot) % 4 at every bridge
 * and handed to the platform's router at the root bus (on i440FX, PIIX3's
 * PIRQ route registers). The router sees each source separately, so shared
 * lines are an OR of their sources.
 */
import type { AddressSpace, BusRange, InterruptAndNotifyServices, Logger } from '@tsvmm/core';
import { AddressRangeError, nullLogger } from '@tsvmm/core';
import type { PciBar } from './bar.js';
import {
  PCI_BASE_ADDRESS_0,
  PCI_COMMAND,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_FUNCTIONS_PER_SLOT,
  PCI_SLOTS_PER_BUS,
  PCI_STATUS,
  PCI_STATUS_INTERRUPT,
} from './constants.js';
import { PciBusError } from './errors.js';
import { devfnOf, formatDevfn, parsePciAddr, type PciDevfn, type PciFunction } from './function.js';

/** Picks the interrupt a root-bus INTx pin drives (the PIIX3 PIRQ router on i440FX). */
export interface PciInterruptRouter {
  /**
   * `source` (one function's pin, as seen at the root after swizzling)
   * asserts or deasserts root-bus pin `pin` (0 = INTA#) of `slot`.
   */
  setIntx(source: object, slot: number, pin: number, level: boolean): void;
}

/** What the root bus needs from the machine: where BARs go and where INTx goes. */
export interface PciPlatform {
  readonly pio: AddressSpace;
  readonly mmio: AddressSpace;
  readonly notify: InterruptAndNotifyServices;
  readonly intx: PciInterruptRouter;
  readonly log?: Logger;
}

export interface PciAttachOptions {
  /** QEMU's `addr`: 'slot[.fn]' in hex, a devfn number, or {slot, fn}; default: function 0 of the first free slot */
  addr?: string | number | PciDevfn;
  /** the machine is already running (hot-plug); a bus without hot-plug support refuses */
  hotplug?: boolean;
}

export interface PciBusOptions {
  /** `pci.0` for a root bus; a bridge's secondary bus takes the bridge's id, as in QEMU */
  name: string;
  hotpluggable: boolean;
  /** root buses only */
  platform?: PciPlatform;
  /** secondary buses: why hot-plug is refused, for the error message */
  hotplugRefusal?: string;
}

/** A function's place on a bus, returned by attach. */
export class PciAttachment {
  private intxLevel = false;
  private propagated = false;
  /** @internal unwatch functions */
  readonly unwatch: (() => void)[] = [];
  /** @internal ranges currently registered, per BAR */
  readonly ranges = new Map<PciBar, { range: BusRange; space: AddressSpace }>();

  constructor(
    readonly bus: PciBus,
    readonly fn: PciFunction,
    readonly devfn: number,
  ) {}

  get slot(): number {
    return this.devfn >> 3;
  }

  get function(): number {
    return this.devfn & 7;
  }

  /** 'bus-name:ss.f' for messages */
  get location(): string {
    return `${this.bus.name}:${formatDevfn(this.devfn)}`;
  }

  /**
   * Drive the function's INTx pin (its Interrupt Pin register) to `level`.
   * Status bit Interrupt follows the device's level; the line is driven only
   * while Command bit INTx Disable is clear (PCI 3.0 §6.2.2-3).
   */
  setIntx(level: boolean): void {
    this.intxLevel = level;
    const cfg = this.fn.config;
    const status = cfg.get16(PCI_STATUS);
    cfg.set16(PCI_STATUS, level ? status | PCI_STATUS_INTERRUPT : status & ~PCI_STATUS_INTERRUPT);
    this.updateIntx();
  }

  get intxAsserted(): boolean {
    return this.intxLevel;
  }

  /** @internal re-evaluate the line after INTx Disable or the level changed */
  updateIntx(): void {
    const cfg = this.fn.config;
    const pin = cfg.interruptPin;
    // A detached function drives nothing (a late interrupt from its device is dropped).
    const attached = this.bus.attachmentOf(this.fn) === this;
    const drive = attached && this.intxLevel && !cfg.intxDisabled && pin >= 1 && pin <= 4;
    if (drive === this.propagated) return;
    this.propagated = drive;
    this.bus.propagateIntx(this, this.slot, (pin - 1) & 3, drive);
  }

  detach(): void {
    this.bus.detach(this.fn);
  }
}

export class PciBus {
  readonly name: string;
  readonly hotpluggable: boolean;
  private readonly devices = new Array<PciAttachment | undefined>(PCI_SLOTS_PER_BUS * PCI_FUNCTIONS_PER_SLOT).fill(undefined);
  private readonly rootPlatform: PciPlatform | undefined;
  private readonly hotplugRefusal: string | undefined;
  /** set when a bridge's secondary bus: the bridge's attachment on its parent bus */
  private upstream: PciAttachment | undefined;

  constructor(opts: PciBusOptions) {
    this.name = opts.name;
    this.hotpluggable = opts.hotpluggable;
    this.rootPlatform = opts.platform;
    this.hotplugRefusal = opts.hotplugRefusal;
  }

  // --- topology ------------------------------------------------------------------------

  /** The bridge attachment this bus hangs from; undefined for a root bus. */
  get parent(): PciAttachment | undefined {
    return this.upstream;
  }

  /** @internal set by PciBridge when its function is attached or detached */
  setUpstream(att: PciAttachment | undefined): void {
    this.upstream = att;
    // The functions below now reach (or lost) the root's platform: their ioeventfds follow.
    const platform = this.platform;
    for (const bus of this.buses()) {
      for (const a of bus.attachments()) for (const bar of a.fn.config.bars()) bar.bindNotify(platform?.notify, platform?.log);
    }
    this.remapAll();
  }

  get isRoot(): boolean {
    return this.rootPlatform !== undefined;
  }

  /** The root bus above this one. */
  get root(): PciBus {
    let b: PciBus = this;
    while (b.upstream !== undefined) b = b.upstream.bus;
    return b;
  }

  /** The platform of the root bus; undefined while a bridge is not attached to one. */
  get platform(): PciPlatform | undefined {
    return this.root.rootPlatform;
  }

  /** The bus number software sees: 0 for the root, else the bridge's Secondary Bus Number. */
  get number(): number {
    return this.upstream?.fn.bridge?.secondaryBusNumber ?? 0;
  }

  /** Attached functions in devfn order. */
  attachments(): PciAttachment[] {
    return this.devices.filter((d): d is PciAttachment => d !== undefined);
  }

  functionAt(devfn: number): PciFunction | undefined {
    return this.devices[devfn]?.fn;
  }

  attachmentOf(fn: PciFunction): PciAttachment | undefined {
    return this.devices.find((d) => d?.fn === fn);
  }

  /** Buses below this one (through bridges), depth first, this bus first. */
  buses(): PciBus[] {
    const out: PciBus[] = [this];
    for (const a of this.attachments()) {
      const b = a.fn.bridge;
      if (b !== undefined) out.push(...b.secondaryBus.buses());
    }
    return out;
  }

  /** The bus named `name` at or below this one. */
  findBus(name: string): PciBus | undefined {
    return this.buses().find((b) => b.name === name);
  }

  // --- attach / detach -----------------------------------------------------------------

  attach(fn: PciFunction, opts: PciAttachOptions = {}): PciAttachment {
    if (opts.hotplug && !this.hotpluggable) {
      throw new PciBusError(
        `cannot hot-plug ${fn.id} into PCI bus '${this.name}': ${this.hotplugRefusal ?? 'this bus does not support hot-plugging'}`,
        { hint: `plug it into a hot-pluggable bus such as '${this.root.name}', or add it to the VM's description before it starts` },
      );
    }
    if (this.attachmentOf(fn) !== undefined) throw new PciBusError(`${fn.id} is already on PCI bus '${this.name}'`);
    const devfn = this.placeFor(fn, opts.addr);
    const att = new PciAttachment(this, fn, devfn);
    this.devices[devfn] = att;
    const cfg = fn.config;
    cfg.snapshotResetState();
    const platform = this.platform;
    for (const bar of cfg.bars()) bar.bindNotify(platform?.notify, platform?.log);
    att.unwatch.push(
      cfg.watch(PCI_COMMAND, 2, () => {
        this.remap(att);
        att.updateIntx();
        fn.bridge?.secondaryBus.remapAll();
      }),
      cfg.watch(PCI_BASE_ADDRESS_0, 4 * (cfg.headerType === 0 ? 6 : 2), () => this.remap(att)),
    );
    if (fn.configWrite !== undefined) {
      const hook = fn.configWrite.bind(fn);
      att.unwatch.push(cfg.watch(0, 256, hook));
    }
    fn.bridge?.attached(att);
    this.remap(att);
    return att;
  }

  /** Remove a function: its BARs are unmapped and its INTx released. */
  detach(fn: PciFunction): void {
    const att = this.attachmentOf(fn);
    if (att === undefined) return;
    att.setIntx(false);
    for (const u of att.unwatch) u();
    att.unwatch.length = 0;
    fn.bridge?.attached(undefined);
    this.unmapAll(att);
    for (const bar of fn.config.bars()) bar.bindNotify(undefined);
    this.devices[att.devfn] = undefined;
    att.updateIntx();
  }

  private placeFor(fn: PciFunction, addr: PciAttachOptions['addr']): number {
    if (addr === undefined) {
      for (let slot = 0; slot < PCI_SLOTS_PER_BUS; slot++) {
        if (this.slotEmpty(slot)) return devfnOf(slot, 0);
      }
      throw new PciBusError(`PCI bus '${this.name}' is full: all ${PCI_SLOTS_PER_BUS} slots are taken, so ${fn.id} has no place`, {
        hint: 'add a pci-bridge (--device pci-bridge,id=br1,chassis_nr=N) and put the device behind it with bus=br1',
      });
    }
    const { slot, fn: func } = typeof addr === 'object' ? addr : parsePciAddr(addr);
    if (!Number.isInteger(slot) || slot < 0 || slot >= PCI_SLOTS_PER_BUS || !Number.isInteger(func) || func < 0 || func >= PCI_FUNCTIONS_PER_SLOT) {
      throw new PciBusError(`PCI address ${slot}.${func} for ${fn.id} is out of range (slots 0-0x1f, functions 0-7)`);
    }
    const devfn = devfnOf(slot, func);
    const taken = this.devices[devfn];
    if (taken !== undefined) {
      throw new PciBusError(`PCI slot ${formatDevfn(devfn)} on bus '${this.name}' is taken by ${taken.fn.id}, so ${fn.id} cannot go there`, {
        hint: 'give the device another addr=, or leave addr out to take the first free slot',
      });
    }
    // Multi-function rules, as QEMU's pci_init_multifunction: software only scans
    // functions 1-7 of a slot whose function 0 says multi-function.
    const f0 = this.devices[devfnOf(slot, 0)];
    if (func !== 0 && f0 !== undefined && !f0.fn.config.multifunction) {
      throw new PciBusError(
        `PCI slot ${slot.toString(16).padStart(2, '0')} on bus '${this.name}' holds single-function ${f0.fn.id}, so ${fn.id} cannot be function ${func}`,
        { hint: `set multifunction=on on ${f0.fn.id}` },
      );
    }
    if (func === 0 && !fn.config.multifunction && !this.slotEmpty(slot)) {
      throw new PciBusError(`PCI slot ${slot.toString(16).padStart(2, '0')} on bus '${this.name}' already has functions 1-7 in use, so ${fn.id} must be multifunction=on`);
    }
    return devfn;
  }

  private slotEmpty(slot: number): boolean {
    for (let f = 0; f < PCI_FUNCTIONS_PER_SLOT; f++) if (this.devices[devfnOf(slot, f)] !== undefined) return false;
    return true;
  }

  // --- configuration cycles --------------------------------------------------------------

  /**
   * The function a configuration cycle for (bus, devfn) reaches from this bus:
   * on this bus when the number matches (a type 0 cycle), else forwarded into
   * the bridge whose secondary..subordinate range holds it (type 1, bridge
   * 1.2 §3.2.5.3). Undefined: the cycle ends in a master abort (reads all ones).
   */
  route(busNumber: number, devfn: number): PciFunction | undefined {
    let bus: PciBus = this;
    for (let depth = 0; depth < 256; depth++) {
      if (bus.number === busNumber) return bus.functionAt(devfn);
      let next: PciBus | undefined;
      for (const a of bus.attachments()) {
        const br = a.fn.bridge;
        if (br === undefined) continue;
        const sec = br.secondaryBusNumber;
        if (sec !== 0 && sec > bus.number && sec <= busNumber && busNumber <= br.subordinateBusNumber) {
          next = br.secondaryBus;
          break;
        }
      }
      if (next === undefined) return undefined;
      bus = next;
    }
    return undefined;
  }

  // --- reset ---------------------------------------------------------------------------

  /** PCI reset of every function at and below this bus: config space to power-on, BARs unmapped. */
  resetAll(): void {
    for (const a of this.attachments()) {
      a.fn.config.reset();
      a.fn.pciReset?.();
      a.fn.bridge?.secondaryBus.resetAll();
    }
    this.remapAll();
    for (const a of this.attachments()) a.updateIntx();
  }

  // --- INTx ----------------------------------------------------------------------------

  /** @internal a pin on this bus changed: swizzle up through the bridge, or hand to the router at the root */
  propagateIntx(source: object, slot: number, pin: number, level: boolean): void {
    const up = this.upstream;
    if (up === undefined) {
      this.rootPlatform?.intx.setIntx(source, slot, pin, level);
      return;
    }
    // PCI-to-PCI bridge 1.2 §9.1: INTx of device D on the secondary bus appears as INT((pin + D) % 4) of the bridge.
    up.bus.propagateIntx(source, up.slot, (pin + slot) % 4, level);
  }

  // --- BAR mapping ---------------------------------------------------------------------

  /** Re-evaluate every BAR at and below this bus (after a bridge window or decode change). */
  remapAll(): void {
    for (const a of this.attachments()) {
      this.remap(a);
      a.fn.bridge?.secondaryBus.remapAll();
    }
  }

  /** Where `bar` of `att` should be decoded now, or undefined. */
  effectiveAddress(att: PciAttachment, bar: PciBar): number | undefined {
    const cfg = att.fn.config;
    const platform = this.platform;
    if (platform === undefined) return undefined;
    const bit = bar.kind === 'io' ? PCI_COMMAND_IO : PCI_COMMAND_MEMORY;
    if ((cfg.command & bit) === 0) return undefined;
    const addr = cfg.barAddress(bar);
    if (addr === undefined || addr === 0) return undefined;
    const end = addr + bar.size;
    if (bar.kind === 'io' && end > platform.pio.limit) return undefined;
    if (bar.kind === 'mem32' && end - 1 >= 0xffffffff) return undefined;
    if (bar.kind !== 'io' && end > platform.mmio.limit) return undefined;
    // Every bridge on the way up must decode and forward the whole range.
    let up = this.upstream;
    while (up !== undefined) {
      const br = up.fn.bridge;
      if (br === undefined || !br.forwards(bar.kind === 'io' ? 'io' : 'mem', addr, end)) return undefined;
      up = up.bus.upstream;
    }
    return addr;
  }

  private remap(att: PciAttachment): void {
    if (this.devices[att.devfn] !== att) return;
    const platform = this.platform;
    for (const bar of att.fn.config.bars()) {
      const want = platform === undefined ? undefined : this.effectiveAddress(att, bar);
      const cur = att.ranges.get(bar);
      if (cur !== undefined && cur.range.base === want) continue;
      const space = bar.kind === 'io' ? platform?.pio : platform?.mmio;
      if (cur !== undefined) {
        cur.space.unregister(cur.range);
        att.ranges.delete(bar);
      }
      let placed: number | undefined;
      if (want !== undefined && space !== undefined) {
        try {
          att.ranges.set(bar, { range: space.register(want, bar.size, bar, att.fn.id), space });
          placed = want;
        } catch (err) {
          if (!(err instanceof AddressRangeError)) throw err;
          (platform?.log ?? nullLogger).warn(`${att.location} ${att.fn.id} BAR${bar.index} left unmapped: ${err.message}`);
        }
      }
      bar.setMapping(placed);
    }
  }

  private unmapAll(att: PciAttachment): void {
    for (const [bar, { range, space }] of att.ranges) {
      space.unregister(range);
      bar.setMapping(undefined);
    }
    att.ranges.clear();
  }
}
