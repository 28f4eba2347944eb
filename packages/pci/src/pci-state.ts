/**
 * Saved state of a PCI function (migration, snapshots): the config space
 * image — Command, BARs, bridge windows, MSI and MSI-X control, everything
 * the guest programmed — the MSI-X table and PBA, and the INTx level. On
 * load the image goes back byte for byte, and what depends on it is
 * re-derived as if the guest had just written it: BAR mappings (and the
 * ioeventfds in them) and the INTx line through the Command register's
 * watchers, MSI-X routes and irqfds through the capability, MSI listeners.
 * The config-space watchers of other registers do not run: some have side
 * effects (virtio's PCI_CFG window writes the BAR it points at).
 */
import { parseDeviceState, stateField } from '@tsvmm/core';
import { z } from 'zod';
import type { PciAttachment } from './bus.js';
import { PCI_COMMAND, PCI_CONFIG_SPACE_SIZE } from './constants.js';
import type { PciFunction } from './function.js';
import type { PciMsi } from './msi.js';
import type { PciMsix } from './msix.js';

export const PCI_FUNCTION_STATE_VERSION = 1;

const pciFunctionStateSchema = z.strictObject({
  config: stateField.bytes(PCI_CONFIG_SPACE_SIZE).refine((b) => b.length === PCI_CONFIG_SPACE_SIZE, { error: `must be ${PCI_CONFIG_SPACE_SIZE} bytes` }),
  intx: stateField.bool(),
  msix: z.strictObject({ table: stateField.bytes(2048 * 16), pba: stateField.bytes(256 * 8) }).optional(),
});
export type PciFunctionState = z.infer<typeof pciFunctionStateSchema>;

/** The parts of a function that hold state beyond its config space. */
export interface PciFunctionStateParts {
  /** where the function is attached (for INTx) */
  attachment?: PciAttachment | undefined;
  msix?: PciMsix;
  msi?: PciMsi;
}

export function savePciFunctionState(fn: PciFunction, parts: PciFunctionStateParts = {}): PciFunctionState {
  return {
    config: fn.config.saveState(),
    intx: parts.attachment?.intxAsserted ?? false,
    ...(parts.msix !== undefined ? { msix: parts.msix.saveState() } : {}),
  };
}

/** Restore what savePciFunctionState() took; `subject` names the device in errors. The state is untrusted input. */
export function loadPciFunctionState(fn: PciFunction, state: unknown, parts: PciFunctionStateParts, subject: string): void {
  const s = parseDeviceState(pciFunctionStateSchema, state, subject);
  if (parts.msix !== undefined && s.msix === undefined) throw new Error(`${subject}: the saved state has no MSI-X table, but the function has MSI-X`);
  fn.config.loadState(s.config);
  if (parts.msix !== undefined && s.msix !== undefined) parts.msix.loadState(s.msix);
  parts.msi?.resync();
  // The bus remaps BARs, re-evaluates INTx and the bridge's secondary side on a Command write.
  fn.config.notifyWritten(PCI_COMMAND, 2);
  parts.attachment?.setIntx(s.intx);
}
