/**
 * Saving and restoring a virtio-pci device (migration, snapshots), shared by
 * the virtio device plugins: the PCI function with its MSI-X table and INTx,
 * the transport's ISR and queue_select, VirtioCommon's status, features and
 * queues with their ring cursors, and whatever the device adds. A device
 * implements Device.quiesce/unquiesce with VirtioCommon's, so requests in
 * flight land in guest RAM and the used rings before the state is taken.
 */
import { checkStateVersion, parseDeviceState, type Device, type DeviceContext } from '@tsvmm/core';
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

/**
 * The Device side of a virtio-pci device plugin: reset, save/load, quiesce
 * and unrealize delegate to its VirtioPciDevice; a plugin writes realize
 * (building its VirtioCommon and transport, then calling start) and describe.
 */
export abstract class VirtioPciDeviceBase<I, L> implements Device {
  abstract readonly typeName: string;
  readonly stateVersion = VIRTIO_PCI_STATE_VERSION;
  protected device: VirtioPciDevice<I, L> | undefined;

  /** `kind` names the device in state errors (`virtio-blk 'disk0'`). */
  constructor(
    readonly id: string,
    private readonly kind: string,
  ) {}

  abstract realize(ctx: DeviceContext): Promise<void>;
  abstract describe(): Record<string, unknown>;

  /**
   * Starts the data plane, lets `started` see what it reported (a disk's
   * size, say), then puts the function on its bus. On failure everything is
   * released again and the error rethrown.
   */
  protected async start(virtio: VirtioCommon<I, L>, pci: VirtioPciTransport<I, L>, started?: (info: unknown) => void): Promise<void> {
    this.device = new VirtioPciDevice(virtio, pci);
    try {
      const info = await virtio.start(pci);
      started?.(info);
      pci.attach();
    } catch (err) {
      await this.unrealize();
      throw err;
    }
  }

  reset(): void {
    this.device?.reset();
  }

  private realized(): VirtioPciDevice<I, L> {
    if (this.device === undefined) throw new Error(`${this.id} is not realized`);
    return this.device;
  }

  saveState(): unknown {
    return this.realized().saveState();
  }

  loadState(version: number, state: unknown): void {
    this.realized().loadState(version, state, `${this.kind} '${this.id}'`);
  }

  /** Requests in flight finish into guest RAM and the used rings before the state is taken. */
  async quiesce(): Promise<void> {
    await this.device?.quiesce();
  }

  unquiesce(): void {
    this.device?.unquiesce();
  }

  async unrealize(): Promise<void> {
    const d = this.device;
    this.device = undefined;
    await d?.close();
  }

  /** the PCI address once realized, for describe() */
  protected get addr(): Record<string, string> {
    const location = this.device?.pci.location;
    return location !== undefined ? { addr: location } : {};
  }

  /** The virtio state (status, features, last error), for tests and diagnostics. */
  get virtioState(): VirtioCommon<I, L> | undefined {
    return this.device?.virtio;
  }

  /** The PCI function, once realized (tests drive it like a guest). */
  get pciFunction(): VirtioPciTransport<I, L> | undefined {
    return this.device?.pci;
  }
}
