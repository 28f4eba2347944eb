/**
 * How PCI devices find their bus. The host bridge device (i440FX on the pc
 * machine) offers its root bus to devices realized after it under
 * PCI_ROOT_BUS; a device names a bus with QEMU's `bus=` property (`pci.0`,
 * or the id of a pci-bridge realized before it) or takes the root bus.
 */
import { ConfigError, type DeviceContext } from '@tsvmm/core';
import type { PciBus } from './bus.js';

/** Service token: the machine's root PciBus (ctx.provide / ctx.lookup). */
export const PCI_ROOT_BUS: unique symbol = Symbol.for('@tsvmm/pci:root-bus');

/** The bus a PCI device goes on: `busName`, or the root bus when it is undefined. */
export function pciBusFor(ctx: DeviceContext, busName: string | undefined, deviceId: string): PciBus {
  const root = ctx.lookup<PciBus>(PCI_ROOT_BUS);
  if (root === undefined) {
    throw new ConfigError(`${deviceId}: this machine has no PCI host bridge`, {
      hint: `use a machine type with PCI (e.g. pc), whose board devices include i440FX-pcihost`,
    });
  }
  if (busName === undefined) return root;
  const bus = root.findBus(busName);
  if (bus === undefined) {
    const names = root.buses().map((b) => b.name);
    throw new ConfigError(`${deviceId}: no PCI bus '${busName}'`, {
      hint: `buses so far: ${names.join(', ')}; a pci-bridge's bus is named by the bridge's id and must be defined before the devices on it`,
    });
  }
  return bus;
}
