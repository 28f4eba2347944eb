/**
 * PC machine types of the i440FX family, versioned so that a VM keeps its
 * guest-visible layout across tsvmm releases and migration can check both ends
 * run the same machine.
 *
 * Differences between versions (facts from QEMU's pc_piix machine definitions):
 * machine types from the 7.0 series split RAM at 3 GiB once it no longer fits
 * below the PCI hole (gigabyte_align); 6.5 splits at 0xe0000000.
 */
import { PluginTokens, type MachineTypeDefinition, type PluginContext, type TsvmmPlugin } from '@tsvmm/core';

/**
 * Devices on every PC board. Serial ports and user devices come from the VM's description.
 * The PCI host bridge comes first: it offers the root bus that PIIX3 and every PCI device attach to.
 */
const board = [
  { driver: 'i440FX-pcihost', id: 'i440fx' },
  { driver: 'PIIX3', id: 'piix3' },
  { driver: 'mc146818rtc', id: 'rtc' },
  { driver: 'i8042', id: 'i8042' },
  { driver: 'acpi-pm', id: 'pm' },
  { driver: 'fw_cfg', id: 'fw_cfg' },
];

export const pcI440fxRhel700: MachineTypeDefinition = {
  name: 'pc-i440fx-rhel7.0.0',
  aliases: ['pc'],
  isDefault: true,
  description: 'Standard PC (i440FX + PIIX, 1996), RHEL 7.0.0 layout',
  memoryLayout: { maxRamBelowFourGiB: 0xe0000000, gigabyteAlign: true },
  defaultCpuModel: 'qemu64',
  maxCpus: 240,
  boardDevices: board,
  compatProps: {},
};

export const pcI440fxRhel650: MachineTypeDefinition = {
  name: 'pc-i440fx-rhel6.5.0',
  aliases: [],
  isDefault: false,
  description: 'Standard PC (i440FX + PIIX, 1996), RHEL 6.5.0 layout',
  memoryLayout: { maxRamBelowFourGiB: 0xe0000000, gigabyteAlign: false },
  defaultCpuModel: 'qemu64',
  maxCpus: 240,
  boardDevices: board,
  compatProps: {},
};

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    ctx.container.register(PluginTokens.chipset, { useValue: pcI440fxRhel700 });
    ctx.container.register(PluginTokens.chipset, { useValue: pcI440fxRhel650 });
  },
};
export default plugin;
