/**
 * Errors of the PCI model. Each names the bus, slot or device involved and
 * says what to do next (docs/pci.md lists the properties they mention).
 */
import { ConfigError, TsvmmError } from '@tsvmm/core';

/** A device cannot be placed on a bus: bus full, slot taken, bad address, hot-plug refused. */
export class PciBusError extends ConfigError {}

/** A device model set up its config space wrongly (a programming error in a device plugin). */
export class PciConfigError extends TsvmmError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super('E_PCI_CONFIG', message, options);
  }
}
