/**
 * What a PCI device model implements (`PciFunction`), how it names its place
 * on a bus (QEMU's `bus=` and `addr=slot[.fn]` properties), and the property
 * schema fragment every PCI device type shares.
 *
 * PCI Local Bus 3.0 §3.2.2.3 (device number 0-31, function number 0-7).
 */
import { z } from 'zod';
import { prop } from '@tsvmm/core';
import type { PciBridge } from './bridge.js';
import type { PciConfigSpace } from './config-space.js';
import { PCI_FUNCTIONS_PER_SLOT, PCI_SLOTS_PER_BUS } from './constants.js';
import { PciBusError } from './errors.js';

/**
 * One PCI function: its config space plus optional hooks. A device class
 * holds a PciConfigSpace as a field and implements this; the bus does the
 * plumbing (config cycles, BAR mapping, INTx routing).
 */
export interface PciFunction {
  /** the device id: owner of the function's BAR ranges, named in errors */
  readonly id: string;
  readonly config: PciConfigSpace;
  /** set by PCI-to-PCI bridges: the secondary side the bus routes through */
  readonly bridge?: PciBridge;
  /** after a guest (or firmware) configuration write, masks already applied */
  configWrite?(offset: number, size: number): void;
  /** after the bus reset the config space (device-specific registers back to power-on) */
  pciReset?(): void;
}

/** A place on a bus: device (slot) 0-31 and function 0-7. */
export interface PciDevfn {
  slot: number;
  fn: number;
}

export function devfnOf(slot: number, fn: number): number {
  return (slot << 3) | fn;
}

export function formatDevfn(devfn: number): string {
  return `${(devfn >> 3).toString(16).padStart(2, '0')}.${devfn & 7}`;
}

/**
 * Parse QEMU's `addr` property. A string is `SLOT[.FN]` in hex (`addr=0x5`,
 * `addr=3`, `addr=1f.2`) as QEMU's command line reads it; a number is a devfn
 * (slot << 3 | fn), as QEMU's JSON (QMP) reads it.
 */
export function parsePciAddr(value: string | number): PciDevfn {
  if (typeof value === 'number') {
    if (!Number.isInteger(value) || value < 0 || value > 0xff) {
      throw new PciBusError(`PCI address ${value} is not a devfn (0-255); as a string, give 'slot[.fn]' in hex, e.g. addr=0x5 or addr=5.1`);
    }
    return { slot: value >> 3, fn: value & 7 };
  }
  const m = /^\s*(?:0x)?([0-9a-f]{1,2})(?:\.(?:0x)?([0-7]))?\s*$/i.exec(value);
  if (m === null) {
    throw new PciBusError(`PCI address '${value}' does not parse`, { hint: "use addr=SLOT[.FN] with SLOT 0-1f in hex, e.g. addr=0x5 or addr=5.1" });
  }
  const slot = parseInt(m[1] as string, 16);
  const fn = m[2] === undefined ? 0 : parseInt(m[2], 16);
  if (slot >= PCI_SLOTS_PER_BUS) throw new PciBusError(`PCI slot 0x${slot.toString(16)} in addr '${value}' is out of range: a bus has slots 0-0x1f`);
  if (fn >= PCI_FUNCTIONS_PER_SLOT) throw new PciBusError(`PCI function ${fn} in addr '${value}' is out of range: a slot has functions 0-7`);
  return { slot, fn };
}

/** `addr` as a property: kept as given (string or number), checked with parsePciAddr. */
export const pciAddrProperty = z
  .union([z.string(), z.number().int()], { error: "expected a PCI address 'slot[.fn]' in hex, e.g. 0x5 or 5.1" })
  .superRefine((v, ctx) => {
    try {
      parsePciAddr(v);
    } catch (err) {
      ctx.addIssue({ code: 'custom', message: (err as Error).message });
    }
  });

/**
 * Properties every PCI device type takes (QEMU spellings), to spread into
 * its z.strictObject: `bus` (a bus name: `pci.0`, or a pci-bridge's id),
 * `addr` (slot[.fn]) and `multifunction` (Header Type bit 7).
 */
export const pciDeviceProperties = {
  bus: prop.str().optional(),
  addr: pciAddrProperty.optional(),
  multifunction: prop.bool().default(false),
};
