/**
 * Virtio over PCI, modern interface only (OASIS VIRTIO 1.2 §4.1: §4.1.2
 * device discovery, §4.1.4 virtio structure PCI capabilities, §4.1.4.3
 * common configuration, §4.1.4.4 notification, §4.1.4.5 ISR status,
 * §4.1.4.6 device-specific configuration, §4.1.4.9 PCI configuration access,
 * §4.1.5 interrupts with MSI-X vectors and INTx).
 *
 * The layout is QEMU's modern one, so a guest sees the same function under
 * tsvmm and QEMU: PCI ID 0x1040 + device type, revision 1; BAR1 (32-bit
 * memory, 4 KiB) holds the MSI-X table at 0 and PBA at 0x800; BAR4 (64-bit
 * prefetchable memory, 16 KiB) holds common configuration at 0x0000, ISR at
 * 0x1000, device configuration at 0x2000 and notifications at 0x3000 with
 * notify_off_multiplier 4 (queue i's doorbell at 0x3000 + 4i). Capabilities
 * sit at 0x40 (common), 0x50 (ISR), 0x60 (device), 0x70 (notify), 0x84
 * (PCI configuration access) and 0x98 (MSI-X), listed from MSI-X down.
 *
 * Kicks never reach JS: each queue's doorbell is a KVM ioeventfd on its
 * notify address (16-bit writes, as drivers do), registered on the BAR so it
 * follows the BAR when the guest moves it; the data plane waits on that
 * eventfd. A doorbell write KVM did not match (another width) reaches the
 * region handler below, which signals the same eventfd.
 *
 * Interrupts: with MSI-X enabled, queue interrupts go through the vector's
 * irqfd notifier, which the data plane signals itself; without MSI-X the
 * transport sets the ISR bit and asserts INTx (the data plane asks over its
 * port), and an ISR read clears both (§4.1.4.5.1).
 */
import type { BusDevice, DeviceContext, EventNotifier } from '@tsvmm/core';
import { parseDeviceState, stateField } from '@tsvmm/core';
import { z } from 'zod';
import {
  PciConfigSpace,
  PciMsix,
  loadPciFunctionState,
  pciBusFor,
  readLe,
  savePciFunctionState,
  writeLe,
  type PciAttachment,
  type PciAttachOptions,
  type PciBar,
  type PciFunction,
} from '@tsvmm/pci';
import type { VirtioCommon, VirtioTransportHooks } from './common.js';
import type { InterruptRoute } from './data-plane.js';
import {
  PCI_CAP_ID_VNDR,
  PCI_DEVICE_ID_VIRTIO_MODERN_BASE,
  PCI_VENDOR_ID_REDHAT_QUMRANET,
  VIRTIO_MSI_NO_VECTOR,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_LEN,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_CAP_PCI_CFG,
  VIRTIO_PCI_CFG_CAP_LEN,
  VIRTIO_PCI_COMMON_CFGGENERATION,
  VIRTIO_PCI_COMMON_CFG_SIZE,
  VIRTIO_PCI_COMMON_DF,
  VIRTIO_PCI_COMMON_DFSELECT,
  VIRTIO_PCI_COMMON_GF,
  VIRTIO_PCI_COMMON_GFSELECT,
  VIRTIO_PCI_COMMON_MSIX,
  VIRTIO_PCI_COMMON_NUMQ,
  VIRTIO_PCI_COMMON_Q_AVAILHI,
  VIRTIO_PCI_COMMON_Q_AVAILLO,
  VIRTIO_PCI_COMMON_Q_DESCHI,
  VIRTIO_PCI_COMMON_Q_DESCLO,
  VIRTIO_PCI_COMMON_Q_ENABLE,
  VIRTIO_PCI_COMMON_Q_MSIX,
  VIRTIO_PCI_COMMON_Q_NOFF,
  VIRTIO_PCI_COMMON_Q_SELECT,
  VIRTIO_PCI_COMMON_Q_SIZE,
  VIRTIO_PCI_COMMON_Q_USEDHI,
  VIRTIO_PCI_COMMON_Q_USEDLO,
  VIRTIO_PCI_COMMON_STATUS,
  VIRTIO_PCI_ISR_CONFIG,
  VIRTIO_PCI_ISR_QUEUE,
  VIRTIO_PCI_NOTIFY_CAP_LEN,
} from './spec.js';

/** BAR layout (QEMU's virtio-pci modern defaults). */
export const VIRTIO_PCI_MSIX_BAR = 1;
export const VIRTIO_PCI_MODERN_BAR = 4;
const MODERN_BAR_SIZE = 0x4000;
const COMMON_OFFSET = 0x0000;
const ISR_OFFSET = 0x1000;
const DEVICE_OFFSET = 0x2000;
const NOTIFY_OFFSET = 0x3000;
const REGION_SIZE = 0x1000;
export const VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER = 4;
const MSIX_PBA_OFFSET = 0x800;

export interface VirtioPciOptions {
  /** PCI class code (base << 8 | sub-class), e.g. 0x0100 for a block device, 0x00ff for "other" */
  classCode: number;
  /** MSI-X vectors (QEMU: queues + 1 for the configuration vector) */
  msixVectors: number;
  /** `bus=` / `addr=` / `multifunction=` as the device's properties gave them */
  bus?: string;
  addr?: PciAttachOptions['addr'];
  multifunction?: boolean;
}

/** One field of struct virtio_pci_common_cfg. */
interface CommonField {
  offset: number;
  size: number;
  read(): number;
  write?(value: number): void;
}

export class VirtioPciTransport<I = unknown, L = unknown> implements PciFunction, VirtioTransportHooks {
  readonly id: string;
  readonly config: PciConfigSpace;
  readonly msix: PciMsix;
  private readonly modernBar: PciBar;
  private readonly kicks: EventNotifier[];
  private readonly unregisterIoeventfds: (() => void)[] = [];
  private readonly commonFields: CommonField[];
  private readonly pciCfgCap: number;
  private attachment: PciAttachment | undefined;
  private unwatchMsix: (() => void) | undefined;
  private isr = 0;
  private queueSelect = 0;

  constructor(
    private readonly ctx: DeviceContext,
    private readonly virtio: VirtioCommon<I, L>,
    private readonly options: VirtioPciOptions,
  ) {
    const id = virtio.id;
    this.id = id;
    this.config = new PciConfigSpace(id, {
      vendorId: PCI_VENDOR_ID_REDHAT_QUMRANET,
      deviceId: PCI_DEVICE_ID_VIRTIO_MODERN_BASE + virtio.deviceType,
      // §4.1.2.1: non-transitional devices have revision 1 or higher
      revision: 1,
      classCode: options.classCode,
      interruptPin: 1,
      multifunction: options.multifunction ?? false,
    });

    const msixBar = this.config.defineBar(VIRTIO_PCI_MSIX_BAR, { kind: 'mem32', size: 0x1000, name: 'virtio-msix' });
    this.modernBar = this.config.defineBar(VIRTIO_PCI_MODERN_BAR, { kind: 'mem64', size: MODERN_BAR_SIZE, prefetchable: true, name: 'virtio-modern' });
    const bar = this.modernBar;
    bar.addRegion(COMMON_OFFSET, REGION_SIZE, { read: (o, d) => this.commonRead(o, d), write: (o, d) => this.commonWrite(o, d) }, 'virtio-common');
    bar.addRegion(ISR_OFFSET, REGION_SIZE, { read: (o, d) => this.isrRead(o, d), write: () => undefined }, 'virtio-isr');
    bar.addRegion(DEVICE_OFFSET, REGION_SIZE, this.deviceRegion(), 'virtio-device');
    bar.addRegion(NOTIFY_OFFSET, REGION_SIZE, { read: (_o, d) => d.fill(0), write: (o) => this.notifyWrite(o) }, 'virtio-notify');
    if (virtio.numQueues * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER > REGION_SIZE) {
      throw new RangeError(`${id}: ${virtio.numQueues} queues do not fit the notify region`);
    }

    // Capabilities in QEMU's order; each goes to the head of the list.
    this.vendorCap(VIRTIO_PCI_CAP_COMMON_CFG, COMMON_OFFSET, REGION_SIZE);
    this.vendorCap(VIRTIO_PCI_CAP_ISR_CFG, ISR_OFFSET, REGION_SIZE);
    this.vendorCap(VIRTIO_PCI_CAP_DEVICE_CFG, DEVICE_OFFSET, REGION_SIZE);
    const notifyCap = this.vendorCap(VIRTIO_PCI_CAP_NOTIFY_CFG, NOTIFY_OFFSET, REGION_SIZE, VIRTIO_PCI_NOTIFY_CAP_LEN);
    this.config.set32(notifyCap + 16, VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER);
    this.pciCfgCap = this.vendorCap(VIRTIO_PCI_CAP_PCI_CFG, 0, 0, VIRTIO_PCI_CFG_CAP_LEN, 0);
    // §4.1.4.9: bar, offset, length and pci_cfg_data are the driver's to write.
    this.config.setWritable(this.pciCfgCap + 4, 1, 0xff);
    this.config.setWritable(this.pciCfgCap + 8, 4, 0xffffffff);
    this.config.setWritable(this.pciCfgCap + 12, 4, 0xffffffff);
    this.config.setWritable(this.pciCfgCap + 16, 4, 0xffffffff);
    this.config.watch(this.pciCfgCap + 16, 4, () => this.pciCfgDataWritten());
    this.config.onRead(this.pciCfgCap + 16, 4, () => this.pciCfgDataRead());

    this.msix = new PciMsix(this.config, {
      notify: ctx.notify,
      vectors: options.msixVectors,
      table: { bar: msixBar, offset: 0 },
      pba: { bar: msixBar, offset: MSIX_PBA_OFFSET },
      log: ctx.log,
    });
    this.unwatchMsix = this.msix.onChange((c) => {
      if (c.kind === 'enabled') virtio.refreshInterruptRoutes();
    });

    this.kicks = Array.from({ length: virtio.numQueues }, (_, i) => {
      const n = ctx.notify.createNotifier();
      this.unregisterIoeventfds.push(bar.addIoeventfd({ offset: NOTIFY_OFFSET + i * VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER, len: 2, notifier: n }));
      return n;
    });
    this.commonFields = this.buildCommonFields();
  }

  /** Puts the function on its bus; call once the config space is complete. */
  attach(): void {
    const opts: PciAttachOptions = this.options.addr !== undefined ? { addr: this.options.addr } : {};
    this.attachment = pciBusFor(this.ctx, this.options.bus, this.virtio.id).attach(this, opts);
  }

  /** Where the function sits ('pci.0:03.0'), once attached. */
  get location(): string | undefined {
    return this.attachment?.location;
  }

  /** Takes the function off the bus and releases eventfds and MSI-X routes. */
  release(): void {
    this.attachment?.detach();
    this.attachment = undefined;
    for (const u of this.unregisterIoeventfds) u();
    this.unregisterIoeventfds.length = 0;
    this.unwatchMsix?.();
    this.unwatchMsix = undefined;
    this.msix.release();
    for (const k of this.kicks) k.close();
  }

  /** Device reset (machine reset or the device's own): interrupt state back to idle. */
  reset(): void {
    this.isr = 0;
    this.queueSelect = 0;
    this.attachment?.setIntx(false);
    for (const k of this.kicks) k.drain();
  }

  // --- persistence (migration, snapshots) -------------------------------------------------

  /** The PCI function (config space, MSI-X table, INTx) and the transport's own registers. */
  saveState(): { pci: unknown; isr: number; queueSelect: number } {
    return { pci: savePciFunctionState(this, { attachment: this.attachment, msix: this.msix }), isr: this.isr, queueSelect: this.queueSelect };
  }

  loadState(state: unknown, subject: string): void {
    const s = parseDeviceState(z.strictObject({ pci: z.unknown(), isr: stateField.u8(), queueSelect: stateField.u16() }), state, subject);
    loadPciFunctionState(this, s.pci, { attachment: this.attachment, msix: this.msix }, subject);
    this.isr = s.isr & (VIRTIO_PCI_ISR_QUEUE | VIRTIO_PCI_ISR_CONFIG);
    this.queueSelect = s.queueSelect;
  }

  /** After the bus reset our config space (machine reset). */
  pciReset(): void {
    this.reset();
  }

  // --- VirtioTransportHooks ------------------------------------------------------------

  kickNotifier(index: number): EventNotifier {
    const k = this.kicks[index];
    if (k === undefined) throw new RangeError(`${this.virtio.id}: no queue ${index}`);
    return k;
  }

  interruptRoute(vector: number): InterruptRoute {
    if (!this.msix.enabled) return { kind: 'message' };
    if (vector === VIRTIO_MSI_NO_VECTOR || vector >= this.msix.vectors) return { kind: 'none' };
    const n = this.msix.vectorNotifier(vector);
    this.virtio.notifiers.set(n.fd, n);
    return { kind: 'irqfd', fd: n.fd };
  }

  queueInterrupt(vector: number): void {
    if (this.msix.enabled) {
      if (vector !== VIRTIO_MSI_NO_VECTOR && vector < this.msix.vectors) this.msix.notify(vector);
      return;
    }
    this.raiseIsr(VIRTIO_PCI_ISR_QUEUE);
  }

  configInterrupt(vector: number): void {
    if (this.msix.enabled) {
      if (vector !== VIRTIO_MSI_NO_VECTOR && vector < this.msix.vectors) this.msix.notify(vector);
      return;
    }
    this.raiseIsr(VIRTIO_PCI_ISR_CONFIG);
  }

  private raiseIsr(bit: number): void {
    this.isr |= bit;
    this.attachment?.setIntx(true);
  }

  // --- capabilities ----------------------------------------------------------------------

  /** struct virtio_pci_cap (§4.1.4): cfg_type, bar, offset, length. */
  private vendorCap(cfgType: number, offset: number, length: number, capLen = VIRTIO_PCI_CAP_LEN, bar = VIRTIO_PCI_MODERN_BAR): number {
    const at = this.config.addCapability(PCI_CAP_ID_VNDR, capLen);
    this.config.set8(at + 2, capLen);
    this.config.set8(at + 3, cfgType);
    this.config.set8(at + 4, bar);
    this.config.set32(at + 8, offset);
    this.config.set32(at + 12, length);
    return at;
  }

  /**
   * §4.1.4.9 VIRTIO_PCI_CAP_PCI_CFG: the driver names a window (bar, offset,
   * length 1, 2 or 4); a write of pci_cfg_data writes the window, a read of
   * pci_cfg_data reads it at that moment (so an ISR read through it clears
   * the ISR, as a direct read would). A window outside BAR4 does nothing.
   */
  private pciCfgWindow(): { offset: number; length: number } | undefined {
    const cap = this.pciCfgCap;
    const barIndex = this.config.get8(cap + 4);
    const offset = this.config.get32(cap + 8);
    const length = this.config.get32(cap + 12);
    const ok = barIndex === VIRTIO_PCI_MODERN_BAR && (length === 1 || length === 2 || length === 4) && offset % length === 0 && offset + length <= MODERN_BAR_SIZE;
    return ok ? { offset, length } : undefined;
  }

  private pciCfgDataWritten(): void {
    const w = this.pciCfgWindow();
    if (w === undefined) return;
    const data = new Uint8Array(w.length);
    writeLe(data, this.config.get32(this.pciCfgCap + 16));
    this.modernBar.write(w.offset, data);
  }

  private pciCfgDataRead(): void {
    const w = this.pciCfgWindow();
    if (w === undefined) return;
    const data = new Uint8Array(w.length);
    this.modernBar.read(w.offset, data);
    this.config.set32(this.pciCfgCap + 16, readLe(data));
  }

  // --- common configuration (§4.1.4.3) --------------------------------------------------

  private buildCommonFields(): CommonField[] {
    const v = this.virtio;
    const q = (): (typeof v.queues)[number] | undefined => v.queues[this.queueSelect];
    const vector = (value: number): number => (value < this.msix.vectors ? value : VIRTIO_MSI_NO_VECTOR);
    const addr = (which: 'desc' | 'driver' | 'device', half: 'lo' | 'hi'): CommonField['read'] => () => {
      const a = q()?.[which] ?? 0;
      return half === 'lo' ? a % 0x1_0000_0000 : Math.floor(a / 0x1_0000_0000);
    };
    return [
      { offset: VIRTIO_PCI_COMMON_DFSELECT, size: 4, read: () => v.deviceFeatureSelect, write: (x) => (v.deviceFeatureSelect = x >>> 0) },
      { offset: VIRTIO_PCI_COMMON_DF, size: 4, read: () => v.deviceFeatureWord() },
      { offset: VIRTIO_PCI_COMMON_GFSELECT, size: 4, read: () => v.driverFeatureSelect, write: (x) => (v.driverFeatureSelect = x >>> 0) },
      { offset: VIRTIO_PCI_COMMON_GF, size: 4, read: () => v.driverFeatureWord(), write: (x) => v.writeDriverFeatureWord(x) },
      // §4.1.5.1.2.1: a vector the device cannot use reads back as NO_VECTOR
      { offset: VIRTIO_PCI_COMMON_MSIX, size: 2, read: () => v.configMsixVector, write: (x) => (v.configMsixVector = vector(x)) },
      { offset: VIRTIO_PCI_COMMON_NUMQ, size: 2, read: () => v.numQueues },
      { offset: VIRTIO_PCI_COMMON_STATUS, size: 1, read: () => v.status, write: (x) => this.writeStatus(x) },
      { offset: VIRTIO_PCI_COMMON_CFGGENERATION, size: 1, read: () => v.configGeneration },
      { offset: VIRTIO_PCI_COMMON_Q_SELECT, size: 2, read: () => this.queueSelect, write: (x) => (this.queueSelect = x) },
      // a queue that does not exist reads size 0 (§4.1.4.3.2: "0 means the queue is unavailable")
      { offset: VIRTIO_PCI_COMMON_Q_SIZE, size: 2, read: () => q()?.size ?? 0, write: (x) => v.setQueueSize(this.queueSelect, x) },
      { offset: VIRTIO_PCI_COMMON_Q_MSIX, size: 2, read: () => q()?.msixVector ?? VIRTIO_MSI_NO_VECTOR, write: (x) => v.setQueueVector(this.queueSelect, vector(x)) },
      { offset: VIRTIO_PCI_COMMON_Q_ENABLE, size: 2, read: () => (q()?.enabled ? 1 : 0), write: (x) => v.setQueueEnable(this.queueSelect, x) },
      { offset: VIRTIO_PCI_COMMON_Q_NOFF, size: 2, read: () => (q() === undefined ? 0 : this.queueSelect) },
      { offset: VIRTIO_PCI_COMMON_Q_DESCLO, size: 4, read: addr('desc', 'lo'), write: (x) => v.setQueueAddress(this.queueSelect, 'desc', 'lo', x) },
      { offset: VIRTIO_PCI_COMMON_Q_DESCHI, size: 4, read: addr('desc', 'hi'), write: (x) => v.setQueueAddress(this.queueSelect, 'desc', 'hi', x) },
      { offset: VIRTIO_PCI_COMMON_Q_AVAILLO, size: 4, read: addr('driver', 'lo'), write: (x) => v.setQueueAddress(this.queueSelect, 'driver', 'lo', x) },
      { offset: VIRTIO_PCI_COMMON_Q_AVAILHI, size: 4, read: addr('driver', 'hi'), write: (x) => v.setQueueAddress(this.queueSelect, 'driver', 'hi', x) },
      { offset: VIRTIO_PCI_COMMON_Q_USEDLO, size: 4, read: addr('device', 'lo'), write: (x) => v.setQueueAddress(this.queueSelect, 'device', 'lo', x) },
      { offset: VIRTIO_PCI_COMMON_Q_USEDHI, size: 4, read: addr('device', 'hi'), write: (x) => v.setQueueAddress(this.queueSelect, 'device', 'hi', x) },
    ];
  }

  private writeStatus(value: number): void {
    if (value === 0) this.reset();
    this.virtio.writeStatus(value);
  }

  /** Reads of any width: each byte comes from the field that holds it; bytes past the structure read 0. */
  private commonRead(offset: number, data: Uint8Array): void {
    data.fill(0);
    for (const f of this.commonFields) {
      const start = Math.max(offset, f.offset);
      const end = Math.min(offset + data.length, f.offset + f.size);
      if (start >= end) continue;
      const value = f.read();
      for (let at = start; at < end; at++) data[at - offset] = Math.floor(value / 2 ** (8 * (at - f.offset))) & 0xff;
    }
  }

  /**
   * Writes: drivers use each field's natural width (64-bit addresses as two
   * 32-bit halves, §4.1.3.1); a narrower or wider write is merged into the
   * fields it covers. Read-only fields and bytes past the structure ignore writes.
   */
  private commonWrite(offset: number, data: Uint8Array): void {
    if (offset >= VIRTIO_PCI_COMMON_CFG_SIZE) return;
    for (const f of this.commonFields) {
      if (f.write === undefined) continue;
      const start = Math.max(offset, f.offset);
      const end = Math.min(offset + data.length, f.offset + f.size);
      if (start >= end) continue;
      let value = start === f.offset && end === f.offset + f.size ? 0 : f.read();
      for (let at = start; at < end; at++) {
        const shift = 2 ** (8 * (at - f.offset));
        const old = Math.floor(value / shift) & 0xff;
        value += ((data[at - offset] as number) - old) * shift;
      }
      f.write(value);
    }
  }

  // --- ISR, device configuration, notifications ---------------------------------------

  /** §4.1.4.5: reading the ISR status returns and clears it, and deasserts INTx. */
  private isrRead(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset !== 0) return;
    data[0] = this.isr;
    this.isr = 0;
    this.attachment?.setIntx(false);
  }

  private deviceRegion(): BusDevice {
    const cfg = this.virtio.config;
    return {
      read: (offset, data) => {
        data.fill(0);
        if (offset + data.length <= cfg.size) cfg.read(offset, data);
      },
      write: (offset, data) => {
        if (offset + data.length <= cfg.size) cfg.write?.(offset, data);
      },
    };
  }

  /** A doorbell write the ioeventfd did not take (another width): signal the queue's eventfd ourselves. */
  private notifyWrite(offset: number): void {
    if (offset % VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER !== 0) return;
    this.kicks[offset / VIRTIO_PCI_NOTIFY_OFF_MULTIPLIER]?.notify();
  }
}
