/**
 * A PCI root bus on a @tsvmm/core test context, and a TypeScript virtio-pci
 * driver that programs a device the way a guest does (OASIS VIRTIO 1.2
 * §4.1.4 layout, §3.1.1 initialization): config writes through the config
 * space's guest path, MMIO accesses through the machine's MMIO space, kicks
 * as guest writes the fake KVM matches against ioeventfds.
 */
import { createTestDeviceContext, type TestDeviceContext, type TestDeviceContextOptions } from '@tsvmm/core/testing';
import {
  PCI_BASE_ADDRESS_0,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_MSIX_FLAGS,
  PCI_MSIX_FLAGS_ENABLE,
  PCI_ROOT_BUS,
  PciBus,
  readLe,
  writeLe,
  type PciFunction,
} from '@tsvmm/pci';
import { VIRTIO_PCI_MODERN_BAR, VIRTIO_PCI_MSIX_BAR } from '../pci-transport.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  VIRTIO_PCI_COMMON_DF,
  VIRTIO_PCI_COMMON_DFSELECT,
  VIRTIO_PCI_COMMON_GF,
  VIRTIO_PCI_COMMON_GFSELECT,
  VIRTIO_PCI_COMMON_Q_AVAILHI,
  VIRTIO_PCI_COMMON_Q_AVAILLO,
  VIRTIO_PCI_COMMON_Q_DESCHI,
  VIRTIO_PCI_COMMON_Q_DESCLO,
  VIRTIO_PCI_COMMON_Q_ENABLE,
  VIRTIO_PCI_COMMON_Q_MSIX,
  VIRTIO_PCI_COMMON_Q_SELECT,
  VIRTIO_PCI_COMMON_Q_SIZE,
  VIRTIO_PCI_COMMON_Q_USEDHI,
  VIRTIO_PCI_COMMON_Q_USEDLO,
  VIRTIO_PCI_COMMON_STATUS,
  featureBit,
} from '../spec.js';
import type { QueueConfig } from '../queue.js';

export interface VirtioPciTestBench {
  t: TestDeviceContext;
  bus: PciBus;
  /** INTx levels the bus drove, by slot.pin */
  intx: Map<string, boolean>;
}

/** A test device context with a PCI root bus offered under PCI_ROOT_BUS. */
export function createVirtioPciTestBench(opts: TestDeviceContextOptions = {}): VirtioPciTestBench {
  const t = createTestDeviceContext({ ramSize: 4 << 20, ...opts });
  const intx = new Map<string, boolean>();
  const bus = new PciBus({
    name: 'pci.0',
    hotpluggable: true,
    platform: {
      pio: t.pio,
      mmio: t.mmio,
      notify: t.notify,
      intx: { setIntx: (_src, slot, pin, level) => intx.set(`${slot}.${pin}`, level) },
    },
  });
  t.ctx.provide(PCI_ROOT_BUS, bus);
  return { t, bus, intx };
}

/** Drives one virtio-pci function like a guest driver. */
export class VirtioPciTestDriver {
  readonly bar4: number;
  readonly bar1: number;

  constructor(
    readonly bench: VirtioPciTestBench,
    readonly fn: PciFunction,
    addrs: { bar4?: number; bar1?: number } = {},
  ) {
    this.bar4 = addrs.bar4 ?? 0xfe000000;
    this.bar1 = addrs.bar1 ?? 0xfebf0000;
  }

  /** Programs BAR1 and BAR4 and enables memory decode and bus mastering, as firmware and the driver would. */
  mapBars(): void {
    const c = this.fn.config;
    c.write(PCI_BASE_ADDRESS_0 + 4 * VIRTIO_PCI_MSIX_BAR, 4, this.bar1);
    c.write(PCI_BASE_ADDRESS_0 + 4 * VIRTIO_PCI_MODERN_BAR, 4, this.bar4);
    c.write(PCI_BASE_ADDRESS_0 + 4 * VIRTIO_PCI_MODERN_BAR + 4, 4, 0);
    c.write(PCI_COMMAND, 2, c.read(PCI_COMMAND, 2) | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER);
  }

  read(addr: number, size: 1 | 2 | 4): number {
    const d = new Uint8Array(size);
    this.bench.t.mmio.read(addr, d);
    return readLe(d);
  }

  write(addr: number, size: 1 | 2 | 4, value: number): void {
    const d = new Uint8Array(size);
    writeLe(d, value);
    this.bench.t.mmio.write(addr, d);
  }

  common(offset: number, size: 1 | 2 | 4): number {
    return this.read(this.bar4 + offset, size);
  }
  setCommon(offset: number, size: 1 | 2 | 4, value: number): void {
    this.write(this.bar4 + offset, size, value);
  }
  status(): number {
    return this.common(VIRTIO_PCI_COMMON_STATUS, 1);
  }
  setStatus(v: number): void {
    this.setCommon(VIRTIO_PCI_COMMON_STATUS, 1, v);
  }
  isr(): number {
    return this.read(this.bar4 + 0x1000, 1);
  }
  deviceConfig(offset: number, size: 1 | 2 | 4): number {
    return this.read(this.bar4 + 0x2000 + offset, size);
  }

  deviceFeatures(): bigint {
    this.setCommon(VIRTIO_PCI_COMMON_DFSELECT, 4, 0);
    const lo = this.common(VIRTIO_PCI_COMMON_DF, 4);
    this.setCommon(VIRTIO_PCI_COMMON_DFSELECT, 4, 1);
    const hi = this.common(VIRTIO_PCI_COMMON_DF, 4);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  writeDriverFeatures(f: bigint): void {
    this.setCommon(VIRTIO_PCI_COMMON_GFSELECT, 4, 0);
    this.setCommon(VIRTIO_PCI_COMMON_GF, 4, Number(f & 0xffffffffn));
    this.setCommon(VIRTIO_PCI_COMMON_GFSELECT, 4, 1);
    this.setCommon(VIRTIO_PCI_COMMON_GF, 4, Number((f >> 32n) & 0xffffffffn));
  }

  /** §3.1.1 steps 1-6; returns whether FEATURES_OK stuck. VERSION_1 is added unless `noVersion1`. */
  negotiate(wanted: bigint, opts: { noVersion1?: boolean } = {}): boolean {
    this.setStatus(0);
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const offered = this.deviceFeatures();
    const f = opts.noVersion1 ? wanted : wanted | featureBit(VIRTIO_F_VERSION_1);
    this.writeDriverFeatures(f & (offered | (opts.noVersion1 ? 0n : wanted)));
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
    return (this.status() & VIRTIO_CONFIG_S_FEATURES_OK) !== 0;
  }

  /** Writes a queue's configuration (from a MockVirtqueue's config) and enables it. */
  setupQueue(index: number, q: Pick<QueueConfig, 'size' | 'descTable' | 'availRing' | 'usedRing'>, vector = 0xffff): void {
    this.setCommon(VIRTIO_PCI_COMMON_Q_SELECT, 2, index);
    this.setCommon(VIRTIO_PCI_COMMON_Q_SIZE, 2, q.size);
    this.setCommon(VIRTIO_PCI_COMMON_Q_MSIX, 2, vector);
    this.setCommon(VIRTIO_PCI_COMMON_Q_DESCLO, 4, q.descTable % 2 ** 32);
    this.setCommon(VIRTIO_PCI_COMMON_Q_DESCHI, 4, Math.floor(q.descTable / 2 ** 32));
    this.setCommon(VIRTIO_PCI_COMMON_Q_AVAILLO, 4, q.availRing % 2 ** 32);
    this.setCommon(VIRTIO_PCI_COMMON_Q_AVAILHI, 4, Math.floor(q.availRing / 2 ** 32));
    this.setCommon(VIRTIO_PCI_COMMON_Q_USEDLO, 4, q.usedRing % 2 ** 32);
    this.setCommon(VIRTIO_PCI_COMMON_Q_USEDHI, 4, Math.floor(q.usedRing / 2 ** 32));
    this.setCommon(VIRTIO_PCI_COMMON_Q_ENABLE, 2, 1);
  }

  driverOk(): void {
    this.setStatus(this.status() | VIRTIO_CONFIG_S_DRIVER_OK);
  }

  /** A 16-bit guest write of the queue index to its doorbell; true if an ioeventfd took it (no exit to JS). */
  kick(index: number): boolean {
    const addr = this.bar4 + 0x3000 + 4 * index;
    if (this.bench.t.notify.guestWrite('mmio', addr, 2, BigInt(index))) return true;
    this.write(addr, 2, index);
    return false;
  }

  /** MSI-X Enable in the capability; entries are programmed unmasked with distinct messages. */
  enableMsix(vectors: number): void {
    const c = this.fn.config;
    const cap = c.findCapability(0x11);
    if (cap === undefined) throw new Error('no MSI-X capability');
    for (let v = 0; v < vectors; v++) {
      const e = this.bar1 + 16 * v;
      this.write(e, 4, 0xfee00000);
      this.write(e + 4, 4, 0);
      this.write(e + 8, 4, 0x40 + v);
      this.write(e + 12, 4, 0);
    }
    c.write(cap + PCI_MSIX_FLAGS, 2, c.read(cap + PCI_MSIX_FLAGS, 2) | PCI_MSIX_FLAGS_ENABLE);
  }
}

/** Resolves once `cond` holds, checking after each event-loop turn; rejects after `ms`. */
export async function until(cond: () => boolean, ms = 2000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** Lets queued messages and immediates run. */
export async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setImmediate(r));
}
