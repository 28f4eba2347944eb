/**
 * `i440FX-pcihost`: the Intel 82441FX host bridge (PMC) at 00.0 — vendor
 * 8086, device 1237, revision 02, class 0x0600 (82441FX datasheet §3.2) —
 * which owns configuration mechanism #1 (0xCF8/0xCFC, PCI Local Bus 3.0
 * §3.2.2.3.2) and the root bus `pci.0`, offered to later devices under
 * PCI_ROOT_BUS.
 *
 * tsvmm boots kernels without firmware, so in machineReady (after realize
 * and after every reset) the host does SeaBIOS's PCI job (pciFirmwareSetup):
 * bus numbers, BARs and windows, Interrupt Line from the PIIX routing
 * (PIRQA-D → IRQ 10, 10, 11, 11) and decode enables, leaving the same state
 * a guest finds on QEMU+SeaBIOS.
 *
 * The PAM (0x59-0x5f) and SMRAM (0x72) registers are plain storage here:
 * guest RAM is always RAM below 1 MiB and there is no SMM. They hold QEMU's
 * reset values, and machineReady writes the PAM values SeaBIOS leaves, so a
 * guest's config dump matches QEMU's.
 */
import { z } from 'zod';
import { checkStateVersion, defineDeviceType, parseDeviceState, stateField, type BusDevice, type BusRange, type Device, type DeviceContext } from '@tsvmm/core';
import {
  PCI_CLASS_BRIDGE_HOST,
  PCI_CONFIG_ADDRESS_PORT,
  PCI_CONFIG_PORTS_LENGTH,
  PCI_ROOT_BUS,
  PCI_VENDOR_ID_INTEL,
  PciBus,
  PciConfigMechanism1,
  PciConfigSpace,
  piixInterruptLine,
  pciFirmwareSetup,
  loadPciFunctionState,
  savePciFunctionState,
  type PciAttachment,
  type PciFirmwareReport,
  type PciFunction,
} from '@tsvmm/pci';
import { PiixPirqRouter } from './pirq-router.js';

export const I440FX_DEVICE_ID = 0x1237;
export const I440FX_REVISION = 0x02;
/** SMRAM control (82441FX §3.2.24); QEMU's reset value */
export const I440FX_SMRAM = 0x72;
/** PAM0-PAM6 (82441FX §3.2.18) and the values SeaBIOS leaves (BIOS shadow read-only, option ROM area, 0xe0000 RW) */
export const I440FX_PAM0 = 0x59;
export const SEABIOS_PAM_VALUES: readonly number[] = [0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x33];
/** QEMU stores RAM size / 8 MiB (at most 255) here for coreboot */
export const I440FX_COREBOOT_RAM_SIZE = 0x57;
/** ISA IRQs SeaBIOS programs into PIRQA-D (src/fw/pciinit.c pci_irqs) */
export const SEABIOS_PIRQ_IRQS: readonly number[] = [10, 10, 11, 11];
/** the PIIX3 function SeaBIOS programs (82371SB function 0) */
export const PIIX3_DEVICE_ID = 0x7000;
/** PIRQ Route Control A-D (82371SB §2.2.8) */
export const PIIX_PIRQRC = 0x60;

/** Saved state, version 1: the host function and the CONFIG_ADDRESS latch at 0xcf8 (a guest may be between its two accesses). */
export const I440FX_STATE_VERSION = 1;
const i440fxStateV1 = z.strictObject({ pci: z.unknown(), configAddress: stateField.u32() });

/** Token under which the host offers its PIRQ router and 0xCF9 hook to the PIIX3 device (plugin-private). */
export const I440FX_CHIPSET = Symbol.for('@tsvmm/plugin-pci-host-i440fx:chipset');

export interface I440fxChipset {
  readonly router: PiixPirqRouter;
  /** the PIIX3 Reset Control Register at 0xCF9, inside the host's 0xCF8-0xCFF decode */
  setResetControl(handler: BusDevice): void;
}

export class I440fxHost implements Device, PciFunction, I440fxChipset {
  readonly typeName = 'i440FX-pcihost';
  readonly config: PciConfigSpace;
  private ctx: DeviceContext | undefined;
  private rootBus: PciBus | undefined;
  private mechanism: PciConfigMechanism1 | undefined;
  private ports: BusRange | undefined;
  private attachment: PciAttachment | undefined;
  private routerValue: PiixPirqRouter | undefined;
  private resetControl: BusDevice | undefined;
  private lastReport: PciFirmwareReport | undefined;

  constructor(readonly id: string) {
    this.config = new PciConfigSpace(id, {
      vendorId: PCI_VENDOR_ID_INTEL,
      deviceId: I440FX_DEVICE_ID,
      revision: I440FX_REVISION,
      classCode: PCI_CLASS_BRIDGE_HOST,
    });
    this.config.set8(I440FX_SMRAM, 0x02);
  }

  get router(): PiixPirqRouter {
    if (this.routerValue === undefined) throw new Error(`${this.id} is not realized`);
    return this.routerValue;
  }

  get root(): PciBus | undefined {
    return this.rootBus;
  }

  /** What the firmware-like setup did last (tests, diagnostics). */
  get firmwareReport(): PciFirmwareReport | undefined {
    return this.lastReport;
  }

  setResetControl(handler: BusDevice): void {
    this.resetControl = handler;
  }

  realize(ctx: DeviceContext): void {
    this.ctx = ctx;
    const router = new PiixPirqRouter((irq) => ctx.irq(irq));
    this.routerValue = router;
    const root = new PciBus({
      name: 'pci.0',
      hotpluggable: true,
      platform: { pio: ctx.pio, mmio: ctx.mmio, notify: ctx.notify, intx: router, log: ctx.log },
    });
    this.rootBus = root;
    // 0xCF9 is PIIX3's, once it plugs in; until then, nothing answers there.
    const cf9: BusDevice = {
      read: (o, d) => (this.resetControl ? this.resetControl.read(o, d) : d.fill(0xff)),
      write: (o, d) => this.resetControl?.write(o, d),
    };
    this.mechanism = new PciConfigMechanism1(root, cf9);
    this.ports = ctx.pio.register(PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_PORTS_LENGTH, this.mechanism, this.id);
    this.config.set8(I440FX_COREBOOT_RAM_SIZE, Math.min(255, Math.floor(ctx.machine.ramSize / (8 * 1024 * 1024))));
    ctx.provide(PCI_ROOT_BUS, root);
    ctx.provide<I440fxChipset>(I440FX_CHIPSET, this);
    this.attachment = root.attach(this, { addr: { slot: 0, fn: 0 } });
  }

  /** Firmware's PCI setup, before the guest first runs and after every reset. */
  machineReady(): void {
    const ctx = this.ctx;
    const mech = this.mechanism;
    if (ctx === undefined || mech === undefined) return;
    this.lastReport = pciFirmwareSetup(mech, {
      ramBelow4G: ctx.machine.ramBelowFourGiB,
      ramAbove4G: ctx.machine.ramAboveFourGiB,
      interruptLine: (dev, pin) => piixInterruptLine(dev, pin, SEABIOS_PIRQ_IRQS),
      initDevice: (dev, access) => {
        // SeaBIOS piix_isa_bridge_setup: activate PIRQ routing (the ELCR half follows below).
        if (dev.vendorId === PCI_VENDOR_ID_INTEL && dev.deviceId === PIIX3_DEVICE_ID) {
          SEABIOS_PIRQ_IRQS.forEach((irq, i) => access.configWrite(dev.bus, dev.devfn, PIIX_PIRQRC + i, 1, irq));
        }
      },
    });
    // ...and the ELCR half (0x4d0/0x4d1, held by KVM's PIC): the PIRQ IRQs level-triggered
    ctx.setPicElcr(SEABIOS_PIRQ_IRQS.reduce((m, irq) => m | (1 << irq), 0));
    SEABIOS_PAM_VALUES.forEach((v, i) => this.config.set8(I440FX_PAM0 + i, v));
    for (const a of this.lastReport.assignments) {
      ctx.log.debug(`PCI ${a.location} ${a.bar === 'window' ? 'window' : `BAR${a.bar}`} ${a.type} at 0x${a.address.toString(16)} size 0x${a.size.toString(16)}`);
    }
  }

  // --- persistence -------------------------------------------------------------------------

  readonly stateVersion = I440FX_STATE_VERSION;

  saveState(): { pci: unknown; configAddress: number } {
    return { pci: savePciFunctionState(this, { attachment: this.attachment }), configAddress: this.mechanism?.address ?? 0 };
  }

  loadState(version: number, state: unknown): void {
    const subject = `PCI host '${this.id}'`;
    checkStateVersion(version, [I440FX_STATE_VERSION], subject);
    const s = parseDeviceState(i440fxStateV1, state, subject);
    loadPciFunctionState(this, s.pci, { attachment: this.attachment }, subject);
    if (this.mechanism !== undefined) this.mechanism.address = s.configAddress;
  }

  /** Power-on state of every PCI function (their devices reset their own state after). */
  reset(): void {
    if (this.mechanism !== undefined) this.mechanism.address = 0;
    this.rootBus?.resetAll();
    this.routerValue?.clear();
  }

  unrealize(): void {
    this.attachment?.detach();
    this.attachment = undefined;
    if (this.ports !== undefined) this.ctx?.pio.unregister(this.ports);
    this.ports = undefined;
    this.ctx = undefined;
  }

  describe(): Record<string, unknown> {
    return { bus: 'pci.0', addr: '00.0' };
  }
}

export const i440fxHostType = defineDeviceType({
  name: 'i440FX-pcihost',
  description: 'Intel 82441FX PCI host bridge: configuration mechanism #1 (0xcf8/0xcfc), root bus pci.0, firmware-like PCI setup',
  bus: 'system',
  hotpluggable: false,
  idPrefix: 'i440fx',
  properties: z.strictObject({}),
  create(id) {
    return new I440fxHost(id);
  },
});
