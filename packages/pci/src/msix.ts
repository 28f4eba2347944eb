/**
 * MSI-X (PCI Local Bus 3.0 §6.8.2): the capability (Message Control with
 * Table Size, Function Mask and MSI-X Enable; Table and PBA Offset/BIR), the
 * vector table and the Pending Bit Array, delivered through KVM.
 *
 * Delivery (KVM api.rst 4.52 KVM_SET_GSI_ROUTING, 4.75 KVM_IRQFD): every
 * vector has an EventNotifier. While a vector is *active* — MSI-X enabled,
 * Function Mask clear, its Mask Bit clear — it has an MSI route carrying the
 * table entry's address/data and an irqfd binding the notifier to that route,
 * so any thread (an iothread's data plane) raises the interrupt by signalling
 * the notifier, with no main-thread involvement. While a vector is masked the
 * irqfd is unbound and the main thread watches the notifier instead: a signal
 * sets the vector's Pending Bit (§6.8.2.10). Unmasking drains what arrived,
 * rebinds the irqfd and delivers a pending message. This is what QEMU does
 * for vhost (virtio_pci_vq_vector_mask / msix_handle_mask_update).
 *
 * Routes are allocated when a vector first becomes active, updated when the
 * guest rewrites its entry, and released when MSI-X is disabled or reset.
 * While MSI-X is disabled, signals are dropped (QEMU msix_notify).
 */
import type { EventNotifier, InterruptAndNotifyServices, Logger, MsiMessage, MsiRoute, Unregister } from '@tsvmm/core';
import { nullLogger } from '@tsvmm/core';
import type { PciBar } from './bar.js';
import type { PciConfigSpace } from './config-space.js';
import {
  PCI_CAP_ID_MSIX,
  PCI_MSIX_CAP_SIZEOF,
  PCI_MSIX_ENTRY_CTRL_MASKBIT,
  PCI_MSIX_ENTRY_DATA,
  PCI_MSIX_ENTRY_LOWER_ADDR,
  PCI_MSIX_ENTRY_SIZE,
  PCI_MSIX_ENTRY_UPPER_ADDR,
  PCI_MSIX_ENTRY_VECTOR_CTRL,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_MSIX_FLAGS_MASKALL,
  PCI_MSIX_MAX_VECTORS,
  PCI_MSIX_PBA,
  PCI_MSIX_TABLE,
} from './constants.js';
import { PciConfigError } from './errors.js';

export interface PciMsixOptions {
  notify: InterruptAndNotifyServices;
  /** number of vectors, 1-2048 */
  vectors: number;
  /** the table's BAR and QWORD-aligned offset in it */
  table: { bar: PciBar; offset: number };
  /** the PBA's BAR and QWORD-aligned offset in it */
  pba: { bar: PciBar; offset: number };
  /** place the capability here (default: first free offset) */
  capOffset?: number;
  log?: Logger;
}

/** The vector table and Pending Bit Array, as a saved state holds them (migration, snapshots). */
export interface PciMsixState {
  table: Uint8Array;
  pba: Uint8Array;
}

export type PciMsixChange =
  | { kind: 'enabled'; enabled: boolean }
  | { kind: 'function-mask'; masked: boolean }
  | { kind: 'vector-mask'; vector: number; masked: boolean }
  | { kind: 'vector-message'; vector: number; message: MsiMessage };

interface VectorState {
  notifier: EventNotifier | undefined;
  route: MsiRoute | undefined;
  irqfd: Unregister | undefined;
  unwatch: (() => void) | undefined;
  active: boolean;
}

/** Bytes of the PBA for `vectors` vectors: one bit each, in QWORDs (§6.8.2.10). */
export function msixPbaSize(vectors: number): number {
  return Math.ceil(vectors / 64) * 8;
}

export class PciMsix {
  readonly vectors: number;
  /** config-space offset of the capability */
  readonly capOffset: number;
  private readonly table: Uint8Array;
  private readonly tableView: DataView;
  private readonly pba: Uint8Array;
  private readonly state: VectorState[];
  private readonly listeners = new Set<(change: PciMsixChange) => void>();
  private readonly services: InterruptAndNotifyServices;
  private readonly log: Logger;
  private lastEnabled = false;
  private lastMasked = false;
  private released = false;

  constructor(
    private readonly config: PciConfigSpace,
    opts: PciMsixOptions,
  ) {
    const n = opts.vectors;
    if (!Number.isInteger(n) || n < 1 || n > PCI_MSIX_MAX_VECTORS) {
      throw new PciConfigError(`${config.owner}: MSI-X needs 1-${PCI_MSIX_MAX_VECTORS} vectors, not ${n}`);
    }
    for (const [what, loc] of [['table', opts.table], ['PBA', opts.pba]] as const) {
      if (loc.offset % 8 !== 0) throw new PciConfigError(`${config.owner}: MSI-X ${what} offset 0x${loc.offset.toString(16)} is not QWORD aligned`);
      if (loc.bar.kind === 'io') throw new PciConfigError(`${config.owner}: MSI-X ${what} must be in a memory BAR, BAR${loc.bar.index} is I/O`);
      if (config.bar(loc.bar.index) !== loc.bar) throw new PciConfigError(`${config.owner}: MSI-X ${what} BAR${loc.bar.index} is not this function's`);
    }
    this.vectors = n;
    this.services = opts.notify;
    this.log = opts.log ?? nullLogger;
    this.table = new Uint8Array(n * PCI_MSIX_ENTRY_SIZE);
    this.tableView = new DataView(this.table.buffer);
    this.pba = new Uint8Array(msixPbaSize(n));
    this.state = Array.from({ length: n }, () => ({ notifier: undefined, route: undefined, irqfd: undefined, unwatch: undefined, active: false }));
    this.maskAllEntries();

    opts.table.bar.addRegion(opts.table.offset, this.table.length, { read: (o, d) => this.tableRead(o, d), write: (o, d) => this.tableWrite(o, d) }, 'msix-table');
    opts.pba.bar.addRegion(opts.pba.offset, this.pba.length, { read: (o, d) => this.pbaRead(o, d), write: () => undefined }, 'msix-pba');

    const cap = config.addCapability(PCI_CAP_ID_MSIX, PCI_MSIX_CAP_SIZEOF, opts.capOffset !== undefined ? { offset: opts.capOffset } : {});
    this.capOffset = cap;
    config.set16(cap + PCI_MSIX_FLAGS, n - 1);
    config.set32(cap + PCI_MSIX_TABLE, opts.table.offset | opts.table.bar.index);
    config.set32(cap + PCI_MSIX_PBA, opts.pba.offset | opts.pba.bar.index);
    config.setWritable(cap + PCI_MSIX_FLAGS, 2, PCI_MSIX_FLAGS_ENABLE | PCI_MSIX_FLAGS_MASKALL);
    config.watch(cap + PCI_MSIX_FLAGS, 2, () => this.controlWritten());
    config.onReset(() => this.reset());
  }

  // --- state ---------------------------------------------------------------------------

  /** MSI-X Enable (Message Control bit 15). */
  get enabled(): boolean {
    return (this.config.get16(this.capOffset + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_ENABLE) !== 0;
  }

  /** Function Mask (Message Control bit 14). */
  get functionMasked(): boolean {
    return (this.config.get16(this.capOffset + PCI_MSIX_FLAGS) & PCI_MSIX_FLAGS_MASKALL) !== 0;
  }

  /** The vector's own Mask Bit (Vector Control bit 0). */
  isVectorMasked(vector: number): boolean {
    this.check(vector);
    return (this.tableView.getUint32(vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, true) & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  /** Masked by its own bit or by Function Mask. */
  isMasked(vector: number): boolean {
    return this.functionMasked || this.isVectorMasked(vector);
  }

  isPending(vector: number): boolean {
    this.check(vector);
    return ((this.pba[vector >> 3] as number) & (1 << (vector & 7))) !== 0;
  }

  /** The message in the vector's table entry. */
  message(vector: number): MsiMessage {
    this.check(vector);
    const at = vector * PCI_MSIX_ENTRY_SIZE;
    const lo = this.tableView.getUint32(at + PCI_MSIX_ENTRY_LOWER_ADDR, true);
    const hi = this.tableView.getUint32(at + PCI_MSIX_ENTRY_UPPER_ADDR, true);
    return { address: (BigInt(hi) << 32n) | BigInt(lo), data: this.tableView.getUint32(at + PCI_MSIX_ENTRY_DATA, true) };
  }

  /** The GSI of the vector's KVM MSI route, if it has one (diagnostics and tests). */
  routeGsi(vector: number): number | undefined {
    this.check(vector);
    return this.state[vector]?.route?.gsi;
  }

  /** Whether the vector's notifier is bound to its route by an irqfd right now. */
  isIrqfdBound(vector: number): boolean {
    this.check(vector);
    return this.state[vector]?.irqfd !== undefined;
  }

  // --- raising vectors -----------------------------------------------------------------

  /** Raise `vector` from the main thread: delivered, or made pending while masked, or dropped while MSI-X is off. */
  notify(vector: number): void {
    this.check(vector);
    if (this.released || !this.enabled) return;
    const st = this.state[vector] as VectorState;
    if (st.active && st.notifier !== undefined) st.notifier.notify();
    else this.setPending(vector, true);
  }

  /**
   * The vector's notifier, for a data plane on another thread: signalling its
   * fd raises the vector (through the irqfd while unmasked; as a pending bit
   * while masked). The notifier lives as long as this PciMsix.
   */
  vectorNotifier(vector: number): EventNotifier {
    this.check(vector);
    return this.notifierOf(vector);
  }

  /** Told about enable, function mask, vector mask and message changes. */
  onChange(listener: (change: PciMsixChange) => void): Unregister {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Release routes, irqfds and notifiers (device unrealize). */
  release(): void {
    if (this.released) return;
    for (let v = 0; v < this.vectors; v++) {
      this.deactivate(v, false);
      const st = this.state[v] as VectorState;
      st.route?.release();
      st.route = undefined;
      st.unwatch?.();
      st.unwatch = undefined;
      st.notifier?.close();
      st.notifier = undefined;
    }
    this.released = true;
  }

  // --- persistence (migration, snapshots) -------------------------------------------------

  saveState(): PciMsixState {
    return { table: this.table.slice(), pba: this.pba.slice() };
  }

  /**
   * Put back a saved table and PBA, after the config space image (Message
   * Control) was loaded: vectors that are live get their KVM routes and
   * irqfds as if the guest had just enabled them.
   */
  loadState(state: PciMsixState): void {
    if (state.table.length !== this.table.length || state.pba.length !== this.pba.length) {
      throw new PciConfigError(
        `${this.config.owner}: saved MSI-X state is for ${state.table.length / PCI_MSIX_ENTRY_SIZE} vectors (PBA ${state.pba.length} bytes), this function has ${this.vectors}`,
      );
    }
    const before = Array.from({ length: this.vectors }, (_, v) => ({ masked: this.isVectorMasked(v), msg: this.message(v) }));
    this.table.set(state.table);
    // Vector Control bits 31:1 are reserved (§6.8.2.9): keep them zero whatever the stream says.
    for (let v = 0; v < this.vectors; v++) {
      const at = v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL;
      this.tableView.setUint32(at, this.tableView.getUint32(at, true) & PCI_MSIX_ENTRY_CTRL_MASKBIT, true);
    }
    this.pba.set(state.pba);
    before.forEach((old, v) => {
      const msg = this.message(v);
      if (msg.address !== old.msg.address || msg.data !== old.msg.data) this.emit({ kind: 'vector-message', vector: v, message: msg });
      const masked = this.isVectorMasked(v);
      if (masked !== old.masked) this.emit({ kind: 'vector-mask', vector: v, masked });
    });
    this.controlWritten();
  }

  // --- table and PBA (memory BAR regions) -----------------------------------------------

  private tableRead(offset: number, data: Uint8Array): void {
    if (offset + data.length > this.table.length) {
      data.fill(0);
      return;
    }
    data.set(this.table.subarray(offset, offset + data.length));
  }

  private tableWrite(offset: number, data: Uint8Array): void {
    if (offset + data.length > this.table.length) return;
    const first = Math.floor(offset / PCI_MSIX_ENTRY_SIZE);
    const last = Math.floor((offset + data.length - 1) / PCI_MSIX_ENTRY_SIZE);
    const before = [];
    for (let v = first; v <= last; v++) before.push({ masked: this.isVectorMasked(v), msg: this.message(v) });
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      // Vector Control bits 31:1 are reserved and read as zero (§6.8.2.9).
      const inCtrl = at % PCI_MSIX_ENTRY_SIZE === PCI_MSIX_ENTRY_VECTOR_CTRL;
      const inCtrlHigh = at % PCI_MSIX_ENTRY_SIZE > PCI_MSIX_ENTRY_VECTOR_CTRL;
      if (inCtrlHigh) continue;
      this.table[at] = inCtrl ? (data[i] as number) & PCI_MSIX_ENTRY_CTRL_MASKBIT : (data[i] as number);
    }
    for (let v = first; v <= last; v++) {
      const old = before[v - first];
      if (old === undefined) continue;
      const msg = this.message(v);
      if (msg.address !== old.msg.address || msg.data !== old.msg.data) {
        this.state[v]?.route?.update(msg);
        this.emit({ kind: 'vector-message', vector: v, message: msg });
      }
      const masked = this.isVectorMasked(v);
      if (masked !== old.masked) {
        this.emit({ kind: 'vector-mask', vector: v, masked });
        this.update(v);
      }
    }
  }

  private pbaRead(offset: number, data: Uint8Array): void {
    // Signals that reached masked vectors' notifiers but not yet our watcher count as pending now (QEMU polls them here too).
    for (let v = 0; v < this.vectors; v++) {
      const st = this.state[v] as VectorState;
      if (!st.active && st.notifier !== undefined && this.enabled && st.notifier.drain() !== null) this.setPending(v, true);
    }
    if (offset + data.length > this.pba.length) {
      data.fill(0);
      return;
    }
    data.set(this.pba.subarray(offset, offset + data.length));
  }

  // --- activation ----------------------------------------------------------------------

  private controlWritten(): void {
    const enabled = this.enabled;
    const masked = this.functionMasked;
    if (enabled !== this.lastEnabled) {
      this.lastEnabled = enabled;
      this.emit({ kind: 'enabled', enabled });
    }
    if (masked !== this.lastMasked) {
      this.lastMasked = masked;
      this.emit({ kind: 'function-mask', masked });
    }
    for (let v = 0; v < this.vectors; v++) this.update(v);
    if (!enabled) {
      // Disabled: routes go back to KVM; pending bits stay as the spec keeps them.
      for (const st of this.state) {
        st.route?.release();
        st.route = undefined;
      }
    }
  }

  /** Bring vector v's irqfd/watch in line with enable and mask state. */
  private update(v: number): void {
    if (this.released) return;
    const st = this.state[v] as VectorState;
    const shouldBeActive = this.enabled && !this.isMasked(v);
    if (shouldBeActive && !st.active) this.activate(v);
    else if (!shouldBeActive && st.active) this.deactivate(v, true);
    else if (!shouldBeActive && st.notifier !== undefined && st.unwatch === undefined) this.watchMasked(v);
  }

  private activate(v: number): void {
    const st = this.state[v] as VectorState;
    const notifier = this.notifierOf(v);
    st.unwatch?.();
    st.unwatch = undefined;
    // Signals that arrived while masked and were not seen yet become pending first.
    if (notifier.drain() !== null) this.setPending(v, true);
    try {
      if (st.route === undefined) st.route = this.services.allocateMsiRoute(this.message(v));
      else st.route.update(this.message(v));
      st.irqfd = this.services.assignIrqfd(st.route.gsi, notifier);
    } catch (err) {
      // Out of GSIs or the like: fall back to delivering through the main thread.
      this.log.warn(`${this.config.owner}: MSI-X vector ${v}: no KVM route/irqfd (${(err as Error).message}); delivering from the main thread`);
      st.irqfd = undefined;
      st.active = true;
      st.unwatch = notifier.watch(() => {
        if (notifier.drain() !== null) this.services.signalMsi(this.message(v));
      });
      return;
    }
    st.active = true;
    if (this.isPending(v)) {
      this.setPending(v, false);
      notifier.notify();
    }
  }

  private deactivate(v: number, watch: boolean): void {
    const st = this.state[v] as VectorState;
    if (!st.active) return;
    st.irqfd?.();
    st.irqfd = undefined;
    st.unwatch?.();
    st.unwatch = undefined;
    st.active = false;
    if (watch) this.watchMasked(v);
  }

  /** While inactive, a signal sets the pending bit (masked) or is dropped (MSI-X off). */
  private watchMasked(v: number): void {
    const st = this.state[v] as VectorState;
    const notifier = st.notifier;
    if (notifier === undefined || st.unwatch !== undefined) return;
    st.unwatch = notifier.watch(() => {
      if (notifier.drain() === null || st.active) return;
      if (this.enabled) this.setPending(v, true);
    });
  }

  private notifierOf(v: number): EventNotifier {
    const st = this.state[v] as VectorState;
    if (st.notifier === undefined) {
      st.notifier = this.services.createNotifier();
      if (!st.active) this.watchMasked(v);
    }
    return st.notifier;
  }

  private setPending(v: number, on: boolean): void {
    const i = v >> 3;
    const bit = 1 << (v & 7);
    this.pba[i] = on ? (this.pba[i] as number) | bit : (this.pba[i] as number) & ~bit;
  }

  private maskAllEntries(): void {
    this.table.fill(0);
    for (let v = 0; v < this.vectors; v++) {
      this.tableView.setUint32(v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL, PCI_MSIX_ENTRY_CTRL_MASKBIT, true);
    }
  }

  /** After the config space reset (Message Control cleared): entries masked, PBA clear, routes released. */
  private reset(): void {
    for (let v = 0; v < this.vectors; v++) {
      this.deactivate(v, false);
      const st = this.state[v] as VectorState;
      st.route?.release();
      st.route = undefined;
      st.notifier?.drain();
    }
    this.maskAllEntries();
    this.pba.fill(0);
    this.lastEnabled = false;
    this.lastMasked = false;
    for (let v = 0; v < this.vectors; v++) this.update(v);
  }

  private emit(change: PciMsixChange): void {
    for (const l of [...this.listeners]) l(change);
  }

  private check(vector: number): void {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.vectors) {
      throw new PciConfigError(`${this.config.owner}: MSI-X vector ${vector} does not exist (0-${this.vectors - 1})`);
    }
  }
}
