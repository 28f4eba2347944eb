/**
 * A PCI-to-PCI bridge function: type 1 header and the secondary bus behind it.
 *
 * PCI-to-PCI Bridge Architecture Specification 1.2: §3.2.5.3-5 bus numbers
 * (configuration cycles for buses secondary..subordinate are forwarded),
 * §3.2.5.6-10 the I/O, memory and prefetchable memory windows (an address is
 * forwarded downstream when it lies between base and limit, base > limit
 * means closed), §3.2.2 Command I/O and Memory Space enables gating them,
 * §13.1 Slot Identification capability.
 *
 * The bridge decodes windows from its own config registers whenever asked,
 * so there is no cached state to get out of step; every write to a window,
 * bus number or Bridge Control register re-maps the BARs below.
 */
import type { PciAttachment } from './bus.js';
import { PciBus } from './bus.js';
import { PciConfigSpace } from './config-space.js';
import {
  PCI_BRIDGE_CONTROL,
  PCI_CAP_ID_SLOTID,
  PCI_CLASS_BRIDGE_PCI,
  PCI_COMMAND_IO,
  PCI_COMMAND_MEMORY,
  PCI_IO_BASE,
  PCI_IO_BASE_UPPER16,
  PCI_IO_LIMIT,
  PCI_IO_LIMIT_UPPER16,
  PCI_IO_RANGE_TYPE_32,
  PCI_IO_RANGE_TYPE_MASK,
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
  PCI_SID_CHASSIS_NR,
  PCI_SID_ESR,
  PCI_SID_ESR_FIC,
  PCI_SID_ESR_NSLOTS,
  PCI_SID_SIZEOF,
  PCI_SUBORDINATE_BUS,
} from './constants.js';
import { PciConfigError } from './errors.js';
import type { PciFunction } from './function.js';

export interface PciBridgeOptions {
  /** the device id; also the secondary bus's name unless busName is given (QEMU: bus=<bridge id>) */
  id: string;
  vendorId: number;
  deviceId: number;
  revision?: number;
  busName?: string;
  /** whether devices may be hot-plugged behind the bridge (QEMU's pci-bridge with shpc=off: no) */
  hotpluggable?: boolean;
  /** why hot-plug is refused, completing "cannot hot-plug X into PCI bus 'br0': ..." */
  hotplugRefusal?: string;
  /** 0 none (default) … 4 INTD#: the bridge's own interrupt pin */
  interruptPin?: number;
  multifunction?: boolean;
  /** decode 32-bit I/O addresses (default false: 16-bit, as QEMU's bridges) */
  io32?: boolean;
  /** 64-bit prefetchable window (default true, as QEMU's bridges) */
  prefetchable64?: boolean;
}

/** An address window: base..limit inclusive. */
export interface PciWindow {
  base: number;
  limit: number;
}

export class PciBridge implements PciFunction {
  readonly id: string;
  readonly config: PciConfigSpace;
  readonly secondaryBus: PciBus;

  constructor(opts: PciBridgeOptions) {
    this.id = opts.id;
    this.config = new PciConfigSpace(opts.id, {
      vendorId: opts.vendorId,
      deviceId: opts.deviceId,
      classCode: PCI_CLASS_BRIDGE_PCI,
      revision: opts.revision ?? 0,
      headerType: 1,
      multifunction: opts.multifunction ?? false,
      interruptPin: opts.interruptPin ?? 0,
      io32: opts.io32 ?? false,
      prefetchable64: opts.prefetchable64 ?? true,
    });
    this.secondaryBus = new PciBus({
      name: opts.busName ?? opts.id,
      hotpluggable: opts.hotpluggable ?? false,
      ...(opts.hotplugRefusal !== undefined ? { hotplugRefusal: opts.hotplugRefusal } : {}),
    });
    // Bus numbers, windows and Bridge Control decide what is reachable below.
    this.config.watch(PCI_PRIMARY_BUS, PCI_IO_LIMIT_UPPER16 + 2 - PCI_PRIMARY_BUS, () => this.secondaryBus.remapAll());
    this.config.watch(PCI_BRIDGE_CONTROL, 2, () => this.secondaryBus.remapAll());
  }

  get bridge(): PciBridge {
    return this;
  }

  /** @internal the bus tells the bridge where it sits (undefined when detached) */
  attached(att: PciAttachment | undefined): void {
    this.secondaryBus.setUpstream(att);
  }

  get primaryBusNumber(): number {
    return this.config.get8(PCI_PRIMARY_BUS);
  }
  get secondaryBusNumber(): number {
    return this.config.get8(PCI_SECONDARY_BUS);
  }
  get subordinateBusNumber(): number {
    return this.config.get8(PCI_SUBORDINATE_BUS);
  }

  /** The I/O window (bridge 1.2 §3.2.5.6), undefined when closed. */
  ioWindow(): PciWindow | undefined {
    const cfg = this.config;
    const io32 = (cfg.get8(PCI_IO_BASE) & PCI_IO_RANGE_TYPE_MASK) === PCI_IO_RANGE_TYPE_32;
    const base = ((cfg.get8(PCI_IO_BASE) & 0xf0) << 8) + (io32 ? cfg.get16(PCI_IO_BASE_UPPER16) * 0x10000 : 0);
    const limit = ((cfg.get8(PCI_IO_LIMIT) & 0xf0) << 8) + 0xfff + (io32 ? cfg.get16(PCI_IO_LIMIT_UPPER16) * 0x10000 : 0);
    return base <= limit ? { base, limit } : undefined;
  }

  /** The (non-prefetchable) memory window (§3.2.5.8), 1 MiB granular, undefined when closed. */
  memoryWindow(): PciWindow | undefined {
    const cfg = this.config;
    const base = (cfg.get16(PCI_MEMORY_BASE) & 0xfff0) * 0x10000;
    const limit = (cfg.get16(PCI_MEMORY_LIMIT) & 0xfff0) * 0x10000 + 0xfffff;
    return base <= limit ? { base, limit } : undefined;
  }

  /** The prefetchable memory window (§3.2.5.9-10), undefined when closed or above 2^53. */
  prefetchableWindow(): PciWindow | undefined {
    const cfg = this.config;
    const is64 = (cfg.get16(PCI_PREF_MEMORY_BASE) & PCI_PREF_RANGE_TYPE_MASK) === PCI_PREF_RANGE_TYPE_64;
    const base = (cfg.get16(PCI_PREF_MEMORY_BASE) & 0xfff0) * 0x10000 + (is64 ? cfg.get32(PCI_PREF_BASE_UPPER32) * 2 ** 32 : 0);
    const limit = (cfg.get16(PCI_PREF_MEMORY_LIMIT) & 0xfff0) * 0x10000 + 0xfffff + (is64 ? cfg.get32(PCI_PREF_LIMIT_UPPER32) * 2 ** 32 : 0);
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(limit)) return undefined;
    return base <= limit ? { base, limit } : undefined;
  }

  /** Whether the bridge forwards [start, end) downstream: decode enabled and the whole range in one window. */
  forwards(space: 'io' | 'mem', start: number, end: number): boolean {
    const cmd = this.config.command;
    const inside = (w: PciWindow | undefined): boolean => w !== undefined && start >= w.base && end - 1 <= w.limit;
    if (space === 'io') return (cmd & PCI_COMMAND_IO) !== 0 && inside(this.ioWindow());
    return (cmd & PCI_COMMAND_MEMORY) !== 0 && (inside(this.memoryWindow()) || inside(this.prefetchableWindow()));
  }
}

/**
 * Add a Slot Identification capability (bridge 1.2 §13.1) as QEMU's
 * slotid_cap_init does: every bridge is First In Chassis, the chassis number
 * is writable and non-volatile (kept across reset). Returns its offset.
 */
export function addSlotIdCapability(config: PciConfigSpace, chassisNr: number, nslots = 0): number {
  if (!Number.isInteger(chassisNr) || chassisNr < 1 || chassisNr > 0xff) {
    throw new PciConfigError(`${config.owner}: chassis number ${chassisNr} is not 1-255`, { hint: 'each bridge needs a unique chassis_nr > 0' });
  }
  if (!Number.isInteger(nslots) || nslots < 0 || nslots > PCI_SID_ESR_NSLOTS) throw new PciConfigError(`${config.owner}: ${nslots} expansion slots do not fit the 5-bit field`);
  const cap = config.addCapability(PCI_CAP_ID_SLOTID, PCI_SID_SIZEOF);
  config.set8(cap + PCI_SID_ESR, nslots | PCI_SID_ESR_FIC);
  config.set8(cap + PCI_SID_CHASSIS_NR, chassisNr);
  config.setWritable(cap + PCI_SID_CHASSIS_NR, 1, 0xff);
  config.markNonVolatile(cap + PCI_SID_CHASSIS_NR, 1);
  return cap;
}
