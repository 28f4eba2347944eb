/**
 * `PIIX3`: function 0 of the Intel 82371SB (PIIX3) at 01.0 — the PCI-to-ISA
 * bridge, vendor 8086, device 7000, class 0x0601, multi-function (82371SB
 * datasheet §2.2). It carries the PIRQ Route Control registers 0x60-0x63
 * (reset 0x80: routing disabled) that steer PCI INTx to ISA IRQs, and the
 * Reset Control Register at I/O 0xCF9 (§4.1.2: writing RCPU, bit 2, resets
 * the system; SRST, bit 1, is kept and read back).
 *
 * The ISA devices behind it (serial, RTC, i8042, ...) are separate device
 * plugins. Other registers hold QEMU's reset values (hw/isa/piix3.c) as
 * plain storage so a guest's config dump matches.
 */
import { z } from 'zod';
import { checkStateVersion, ConfigError, defineDeviceType, parseDeviceState, stateField, type BusDevice, type Device, type DeviceContext } from '@tsvmm/core';
import {
  loadPciFunctionState,
  PCI_CLASS_BRIDGE_ISA,
  PCI_ROOT_BUS,
  PCI_STATUS,
  PCI_VENDOR_ID_INTEL,
  PciConfigSpace,
  savePciFunctionState,
  type PciAttachment,
  type PciBus,
  type PciFunction,
} from '@tsvmm/pci';
import { I440FX_CHIPSET, PIIX3_DEVICE_ID, PIIX_PIRQRC, type I440fxChipset } from './i440fx.js';
import { PIIX_PIRQ_COUNT, PIIX_PIRQRC_DISABLED } from './pirq-router.js';

/** Status DEVSEL timing: medium (82371SB §2.2.4) */
const PCI_STATUS_DEVSEL_MEDIUM = 0x0200;
/** Reset Control Register bits (82371SB §4.1.2) */
const RCR_SRST = 0x02;
const RCR_RCPU = 0x04;

/** QEMU's PIIX3 reset values for the device-specific registers (hw/isa/piix3.c piix3_reset). */
const RESET_VALUES: readonly [number, number][] = [
  [0x4c, 0x4d], // IORT
  [0x4e, 0x03], // XBCS
  [0x69, 0x02], // TOM
  [0x70, 0x80], // MBIRQ0
  [0x76, 0x0c], // MBDMA0
  [0x77, 0x0c], // MBDMA1
  [0x78, 0x02], // PCSC
  [0xa0, 0x08], // SMICNTL
  [0xa8, 0x0f], // SMIREQ
];

/** Saved state, version 1: the function (PIRQ routes included) and the reset control register's SRST bit. */
export const PIIX3_STATE_VERSION = 1;
const piix3StateV1 = z.strictObject({ pci: z.unknown(), rcr: stateField.u8() });

export class Piix3 implements Device, PciFunction {
  readonly typeName = 'PIIX3';
  readonly config: PciConfigSpace;
  private attachment: PciAttachment | undefined;
  private rcr = 0;
  private syncRoutes: (() => void) | undefined;

  constructor(readonly id: string) {
    this.config = new PciConfigSpace(id, {
      vendorId: PCI_VENDOR_ID_INTEL,
      deviceId: PIIX3_DEVICE_ID,
      classCode: PCI_CLASS_BRIDGE_ISA,
      multifunction: true,
    });
    this.config.set16(PCI_STATUS, PCI_STATUS_DEVSEL_MEDIUM);
    for (const [reg, v] of RESET_VALUES) this.config.set8(reg, v);
    for (let i = 0; i < PIIX_PIRQ_COUNT; i++) this.config.set8(PIIX_PIRQRC + i, PIIX_PIRQRC_DISABLED);
  }

  realize(ctx: DeviceContext): void {
    const root = ctx.lookup<PciBus>(PCI_ROOT_BUS);
    const chipset = ctx.lookup<I440fxChipset>(I440FX_CHIPSET);
    if (root === undefined || chipset === undefined) {
      throw new ConfigError(`${this.id}: PIIX3 needs the i440FX host bridge realized before it`, { hint: 'list i440FX-pcihost first in the board devices' });
    }
    const router = chipset.router;
    this.syncRoutes = () => {
      for (let i = 0; i < PIIX_PIRQ_COUNT; i++) router.setRoute(i, this.config.get8(PIIX_PIRQRC + i));
    };
    this.config.watch(PIIX_PIRQRC, PIIX_PIRQ_COUNT, this.syncRoutes);
    this.syncRoutes();
    const rcr: BusDevice = {
      read: (_o, d) => d.fill(this.rcr),
      write: (_o, d) => {
        const v = d[0] ?? 0;
        if (v & RCR_RCPU) {
          ctx.requestReset(`guest wrote 0x${v.toString(16)} to the PIIX3 reset control register (0xcf9)`);
          return;
        }
        this.rcr = v & RCR_SRST;
      },
    };
    chipset.setResetControl(rcr);
    this.attachment = root.attach(this, { addr: { slot: 1, fn: 0 } });
  }

  /** The bus put 0x60-0x63 back to 0x80; the router follows. */
  pciReset(): void {
    this.rcr = 0;
    this.syncRoutes?.();
  }

  reset(): void {
    this.rcr = 0;
  }

  readonly stateVersion = PIIX3_STATE_VERSION;

  saveState(): { pci: unknown; rcr: number } {
    return { pci: savePciFunctionState(this, { attachment: this.attachment }), rcr: this.rcr };
  }

  loadState(version: number, state: unknown): void {
    const subject = `PIIX3 '${this.id}'`;
    checkStateVersion(version, [PIIX3_STATE_VERSION], subject);
    const s = parseDeviceState(piix3StateV1, state, subject);
    loadPciFunctionState(this, s.pci, { attachment: this.attachment }, subject);
    this.rcr = s.rcr & RCR_SRST;
    // The router follows the PIRQ route registers the image brought back.
    this.syncRoutes?.();
  }

  unrealize(): void {
    this.attachment?.detach();
    this.attachment = undefined;
  }

  describe(): Record<string, unknown> {
    return { bus: 'pci.0', addr: '01.0' };
  }
}

export const piix3Type = defineDeviceType({
  name: 'PIIX3',
  description: 'Intel 82371SB PIIX3 PCI-to-ISA bridge function: PIRQ route control 0x60-0x63, reset control register 0xcf9',
  bus: 'pci',
  hotpluggable: false,
  idPrefix: 'piix3',
  properties: z.strictObject({}),
  create(id) {
    return new Piix3(id);
  },
});
