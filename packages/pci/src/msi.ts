/**
 * MSI (PCI Local Bus 3.0 §6.8.1): the capability with Message Control
 * (Enable, Multiple Message Capable/Enable, 64-bit, Per-vector Masking),
 * Message Address (+ Upper Address), Message Data and optional Mask and
 * Pending bits.
 *
 * Delivery is from the main thread through KVM_SIGNAL_MSI (KVM api.rst 4.71);
 * a device whose data plane raises interrupts from another thread uses MSI-X,
 * which binds irqfds. Vector v of the granted 2^MME sends the Message Data
 * with its low bits replaced by v (§6.8.1.6). A masked vector's message sets
 * its Pending bit and is sent when it is unmasked (§6.8.1.8).
 */
import type { InterruptAndNotifyServices, MsiMessage, Unregister } from '@tsvmm/core';
import type { PciConfigSpace } from './config-space.js';
import {
  PCI_CAP_ID_MSI,
  PCI_MSI_ADDRESS_HI,
  PCI_MSI_ADDRESS_LO,
  PCI_MSI_DATA_32,
  PCI_MSI_DATA_64,
  PCI_MSI_FLAGS,
  PCI_MSI_FLAGS_64BIT,
  PCI_MSI_FLAGS_ENABLE,
  PCI_MSI_FLAGS_MASKBIT,
  PCI_MSI_FLAGS_QSIZE,
  PCI_MSI_MASK_32,
  PCI_MSI_MASK_64,
  PCI_MSI_PENDING_32,
  PCI_MSI_PENDING_64,
} from './constants.js';
import { PciConfigError } from './errors.js';

export interface PciMsiOptions {
  notify: InterruptAndNotifyServices;
  /** vectors the function asks for: 1, 2, 4, 8, 16 or 32 */
  vectors: number;
  /** 64-bit Message Address (default true) */
  is64?: boolean;
  /** Per-vector Masking Capable (default false) */
  perVectorMask?: boolean;
  capOffset?: number;
}

export type PciMsiChange = { kind: 'enabled'; enabled: boolean } | { kind: 'mask'; vector: number; masked: boolean };

export class PciMsi {
  readonly capOffset: number;
  readonly vectors: number;
  readonly is64: boolean;
  readonly perVectorMask: boolean;
  private readonly notifyServices: InterruptAndNotifyServices;
  private readonly listeners = new Set<(c: PciMsiChange) => void>();
  private lastEnabled = false;
  private lastMask = 0;

  constructor(
    private readonly config: PciConfigSpace,
    opts: PciMsiOptions,
  ) {
    const log2 = Math.log2(opts.vectors);
    if (!Number.isInteger(log2) || log2 < 0 || log2 > 5) throw new PciConfigError(`${config.owner}: MSI vectors must be 1, 2, 4, 8, 16 or 32, not ${opts.vectors}`);
    this.vectors = opts.vectors;
    this.is64 = opts.is64 ?? true;
    this.perVectorMask = opts.perVectorMask ?? false;
    this.notifyServices = opts.notify;
    const size = (this.is64 ? 14 : 10) + (this.perVectorMask ? 10 : 0);
    const cap = config.addCapability(PCI_CAP_ID_MSI, size, opts.capOffset !== undefined ? { offset: opts.capOffset } : {});
    this.capOffset = cap;
    config.set16(cap + PCI_MSI_FLAGS, (log2 << 1) | (this.is64 ? PCI_MSI_FLAGS_64BIT : 0) | (this.perVectorMask ? PCI_MSI_FLAGS_MASKBIT : 0));
    config.setWritable(cap + PCI_MSI_FLAGS, 2, PCI_MSI_FLAGS_ENABLE | PCI_MSI_FLAGS_QSIZE);
    config.setWritable(cap + PCI_MSI_ADDRESS_LO, 4, 0xfffffffc);
    if (this.is64) config.setWritable(cap + PCI_MSI_ADDRESS_HI, 4, 0xffffffff);
    config.setWritable(cap + this.dataOffset, 2, 0xffff);
    if (this.perVectorMask) {
      const used = this.vectors === 32 ? 0xffffffff : (1 << this.vectors) - 1;
      config.setWritable(cap + this.maskOffset, 4, used >>> 0);
      config.watch(cap + this.maskOffset, 4, () => this.maskWritten());
    }
    config.watch(cap + PCI_MSI_FLAGS, 2, () => this.controlWritten());
    config.onReset(() => {
      this.lastEnabled = false;
      this.lastMask = 0;
    });
  }

  private get dataOffset(): number {
    return this.is64 ? PCI_MSI_DATA_64 : PCI_MSI_DATA_32;
  }
  private get maskOffset(): number {
    return this.is64 ? PCI_MSI_MASK_64 : PCI_MSI_MASK_32;
  }
  private get pendingOffset(): number {
    return this.is64 ? PCI_MSI_PENDING_64 : PCI_MSI_PENDING_32;
  }

  get enabled(): boolean {
    return (this.config.get16(this.capOffset + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_ENABLE) !== 0;
  }

  /** Vectors software granted (Multiple Message Enable), capped at what the function asked for. */
  get allocatedVectors(): number {
    const mme = (this.config.get16(this.capOffset + PCI_MSI_FLAGS) & PCI_MSI_FLAGS_QSIZE) >> 4;
    return Math.min(1 << mme, this.vectors);
  }

  isMasked(vector: number): boolean {
    if (!this.perVectorMask) return false;
    return ((this.config.get32(this.capOffset + this.maskOffset) >>> vector) & 1) !== 0;
  }

  isPending(vector: number): boolean {
    if (!this.perVectorMask) return false;
    return ((this.config.get32(this.capOffset + this.pendingOffset) >>> vector) & 1) !== 0;
  }

  /** The message vector `vector` sends. */
  message(vector: number): MsiMessage {
    const cap = this.capOffset;
    const lo = this.config.get32(cap + PCI_MSI_ADDRESS_LO);
    const hi = this.is64 ? this.config.get32(cap + PCI_MSI_ADDRESS_HI) : 0;
    const n = this.allocatedVectors;
    const data = (this.config.get16(cap + this.dataOffset) & ~(n - 1)) | (vector & (n - 1));
    return { address: (BigInt(hi) << 32n) | BigInt(lo), data };
  }

  /** Raise `vector` (main thread): sent, or pending while masked, or dropped while MSI is off or the vector not granted. */
  notify(vector: number): void {
    if (!this.enabled || !Number.isInteger(vector) || vector < 0 || vector >= this.allocatedVectors) return;
    if (this.isMasked(vector)) {
      this.setPending(vector, true);
      return;
    }
    this.notifyServices.signalMsi(this.message(vector));
  }

  onChange(listener: (c: PciMsiChange) => void): Unregister {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** After a saved config space image was loaded: tell listeners what is enabled and masked now. */
  resync(): void {
    this.controlWritten();
    if (this.perVectorMask) this.maskWritten();
  }

  private setPending(vector: number, on: boolean): void {
    const at = this.capOffset + this.pendingOffset;
    const cur = this.config.get32(at);
    this.config.set32(at, on ? (cur | (1 << vector)) >>> 0 : (cur & ~(1 << vector)) >>> 0);
  }

  private controlWritten(): void {
    const enabled = this.enabled;
    if (enabled === this.lastEnabled) return;
    this.lastEnabled = enabled;
    for (const l of [...this.listeners]) l({ kind: 'enabled', enabled });
    if (enabled) this.deliverPending();
  }

  private maskWritten(): void {
    const mask = this.config.get32(this.capOffset + this.maskOffset);
    const changed = (mask ^ this.lastMask) >>> 0;
    this.lastMask = mask;
    for (let v = 0; v < this.vectors; v++) {
      if (((changed >>> v) & 1) === 0) continue;
      for (const l of [...this.listeners]) l({ kind: 'mask', vector: v, masked: this.isMasked(v) });
    }
    this.deliverPending();
  }

  private deliverPending(): void {
    if (!this.enabled) return;
    for (let v = 0; v < this.allocatedVectors; v++) {
      if (this.isPending(v) && !this.isMasked(v)) {
        this.setPending(v, false);
        this.notifyServices.signalMsi(this.message(v));
      }
    }
  }
}
