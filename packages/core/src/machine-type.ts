/**
 * Machine types: what a plugin of kind `chipset` provides. A machine type is a
 * versioned name (`pc-i440fx-rhel7.0.0`) fixing the memory layout, the board
 * devices every VM of that type has, and per-device property defaults that
 * keep guest-visible behaviour stable across tsvmm releases (QEMU's compat
 * properties). Migration checks the type name on both ends.
 */
import type { LayoutOptions } from './memory-map.js';

export interface BoardDevice {
  driver: string;
  id: string;
  props?: Record<string, unknown>;
}

export interface MachineTypeDefinition {
  name: string;
  /** other names accepted for it, e.g. `pc` */
  aliases: string[];
  /** the one used when no --machine is given */
  isDefault: boolean;
  description: string;
  memoryLayout: LayoutOptions;
  defaultCpuModel: string;
  maxCpus: number;
  /** devices every VM of this type has, realized before user devices */
  boardDevices: BoardDevice[];
  /** property defaults per device type, applied under user-given properties */
  compatProps: Record<string, Record<string, unknown>>;
}
