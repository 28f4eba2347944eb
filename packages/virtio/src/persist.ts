/**
 * Saving and restoring a virtio-pci device (migration, snapshots), shared by
 * the virtio device plugins: the PCI function with its MSI-X table and INTx,
 * the transport's ISR and queue_select, VirtioCommon's status, features and
 * queues with their ring cursors, and whatever the device adds. A device
 * implements Device.quiesce/unquiesce with VirtioCommon's, so requests in
 * flight land in guest RAM and the used rings before the state is taken.
 */
import { checkStateVersion, parseDeviceState } from '@tsvmm/core';
import { z } from 'zod';
import type { VirtioCommon } from './common.js';
import type { VirtioPciTransport } from './pci-transport.js';

/** The state version virtio-pci devices built on these helpers write. */
export const VIRTIO_PCI_STATE_VERSION = 1;

const virtioPciStateV1 = z.strictObject({ transport: z.unknown(), virtio: z.unknown(), device: z.unknown().optional() });

export function saveVirtioPciState<I, L>(pci: VirtioPciTransport<I, L>, virtio: VirtioCommon<I, L>, device?: unknown): unknown {
  return { transport: pci.saveState(), virtio: virtio.saveState(), ...(device !== undefined ? { device } : {}) };
}

/** Restores transport and virtio state; returns the device's own part for the caller. */
export function loadVirtioPciState<I, L>(pci: VirtioPciTransport<I, L>, virtio: VirtioCommon<I, L>, state: unknown, subject: string): unknown {
  const s = parseDeviceState(virtioPciStateV1, state, subject);
  pci.loadState(s.transport, subject);
  virtio.loadState(s.virtio, subject);
  return s.device;
}

/**
 * A realized virtio device on its PCI transport, as a device plugin holds it:
 * reset together, saved and restored as virtio-pci state version 1,
 * quiesced through VirtioCommon, and on close the transport released before
 * the data plane stops.
 */
export class VirtioPciDevice<I, L> {
  constructor(
    readonly virtio: VirtioCommon<I, L>,
    readonly pci: VirtioPciTransport<I, L>,
  ) {}

  reset(): void {
    this.pci.reset();
    this.virtio.reset();
  }

  /** `device`: the device's own part of the state, if it has one. */
  saveState(device?: unknown): unknown {
    return saveVirtioPciState(this.pci, this.virtio, device);
  }

  /** Checks the version, restores transport and virtio state; returns the device's own part. */
  loadState(version: number, state: unknown, subject: string): unknown {
    checkStateVersion(version, [VIRTIO_PCI_STATE_VERSION], subject);
    return loadVirtioPciState(this.pci, this.virtio, state, subject);
  }

  quiesce(): Promise<void> {
    return this.virtio.quiesce();
  }

  unquiesce(): void {
    this.virtio.unquiesce();
  }

  async close(): Promise<void> {
    this.pci.release();
    await this.virtio.close();
  }
}
