/**
 * ACPI fixed hardware power management registers, device type `acpi-pm`:
 * the PM1a event block, the PM1a control block and the PM timer, laid out as
 * QEMU's PIIX4 PM function has them at the base SeaBIOS programs (0x600).
 *
 * Spec: ACPI Specification 6.5, 4.8.3.1 "PM1 Event Grouping" (PM1_STS bits,
 * write 1 to clear; PM1_EN), 4.8.3.2 "PM1 Control Grouping" (SCI_EN, SLP_TYPx
 * bits 10-12, SLP_EN bit 13, write-only) and 4.8.3.3 "Power Management Timer"
 * (24-bit counter at 3.579545 MHz; TMR_STS is set when bit 23 toggles).
 * Layout and sleep types from QEMU's PIIX4 PM (hw/acpi/piix4.c, core.c):
 * PM1a_EVT_BLK at base+0 (PM1a_STS, PM1a_EN), PM1a_CNT_BLK at base+4,
 * PM_TMR_BLK at base+8; its DSDT declares \_S5 as SLP_TYP 0, and SLP_TYP 2 is
 * QEMU's S4 (which it also turns into a power-off). This is what the test
 * guest kit writes to power off (test/guest/lib/exit.h: 0x2000 to 0x604).
 *
 * The timer is computed from the VM's run-time clock on every read, so it
 * never needs ticking and stops while the VM is paused.
 *
 * Not done: the SCI (IRQ 9) — nothing raises it when TMR_STS and TMR_EN are
 * both set, because the core has no timer to fire at the overflow; S3 suspend
 * (SLP_TYP 1) is logged and ignored; the GPE blocks and the power button.
 */
import { z } from 'zod';
import {
  checkStateVersion,
  defineDeviceType,
  devicePlugin,
  parseDeviceState,
  prop,
  stateField,
  type BusDevice,
  type BusRange,
  type Device,
  type DeviceContext,
} from '@tsvmm/core';

// --- registers --------------------------------------------------------------------------

/** offsets from `base` */
export const PM1A_EVT_BLK = 0x0;
const PM1_EVT_LEN = 4; // PM1a_STS (2 bytes), PM1a_EN (2 bytes)
export const PM1A_CNT_BLK = 0x4;
const PM1_CNT_LEN = 2;
export const PM_TMR_BLK = 0x8;
const PM_TMR_LEN = 4;

/** PM1_STS / PM1_EN bits */
export const TMR_STS = 0x0001;
export const TMR_EN = 0x0001;
export const PWRBTN_STS = 0x0100;
export const WAK_STS = 0x8000;

/** PM1_CNT bits */
export const SCI_EN = 0x0001;
const GBL_RLS = 0x0004; // write-only
const SLP_TYP_SHIFT = 10;
const SLP_TYP_MASK = 0x7;
export const SLP_EN = 0x2000; // write-only

/** SLP_TYP values of QEMU's PIIX4 DSDT */
export const SLP_TYP_S5 = 0;
export const SLP_TYP_S3 = 1;
export const SLP_TYP_S4 = 2;

export const PM_TIMER_FREQUENCY = 3_579_545n;
/** TMR_VAL is 24 bits wide (FADT TMR_VAL_EXT = 0) */
const TMR_VAL_MASK = 0xffffff;
/** TMR_STS is set each time bit 23 of the counter toggles */
const TMR_STS_PERIOD = 1n << 23n;
const NS_PER_S = 1_000_000_000n;

/**
 * Saved state, version 1: PM1 status, enable and control, and the timer tick
 * at which TMR_STS sets (ticks count the VM's run-time clock, which migrates
 * with the machine, so the timer carries on where it was).
 */
export const ACPI_PM_STATE_VERSION = 1;
const acpiPmStateV1 = z.strictObject({
  pm1Status: stateField.u16(),
  pm1Enable: stateField.u16(),
  pm1Control: stateField.u16(),
  timerOverflowTick: stateField.bigint(),
});
export type AcpiPmStateV1 = z.infer<typeof acpiPmStateV1>;

export interface AcpiPmProperties {
  base: number;
}

export class AcpiPm implements Device {
  readonly typeName = 'acpi-pm';

  /** PM1_STS bits other than TMR_STS, which is derived from the clock */
  private pm1Status = 0;
  private pm1Enable = 0;
  private pm1Control = 0;
  /** the counter value at which TMR_STS becomes set */
  private timerOverflowTick = TMR_STS_PERIOD;

  private ctx: DeviceContext | undefined;
  private ranges: BusRange[] = [];

  private readonly eventBlock: BusDevice = {
    read: (offset, data) => readBytes((this.readStatus() | (this.pm1Enable << 16)) >>> 0, PM1_EVT_LEN, offset, data),
    write: (offset, data) => this.writeEventBlock(offset, data),
  };
  private readonly controlBlock: BusDevice = {
    read: (offset, data) => readBytes(this.pm1Control, PM1_CNT_LEN, offset, data),
    write: (offset, data) => {
      // A byte write to one half keeps the other half (as QEMU merges it).
      const { value, mask } = bytesFor(0, offset, data);
      this.writeControl((this.pm1Control & ~mask) | value);
    },
  };
  private readonly timerBlock: BusDevice = {
    // One clock sample per access, so the bytes of a 32-bit read belong together.
    read: (offset, data) => readBytes(this.timerValue(), PM_TMR_LEN, offset, data),
    write: () => undefined, // read-only
  };

  constructor(
    readonly id: string,
    readonly props: AcpiPmProperties,
  ) {}

  realize(ctx: DeviceContext): void {
    this.ctx = ctx;
    const { base } = this.props;
    this.ranges.push(ctx.pio.register(base + PM1A_EVT_BLK, PM1_EVT_LEN, this.eventBlock, this.id));
    this.ranges.push(ctx.pio.register(base + PM1A_CNT_BLK, PM1_CNT_LEN, this.controlBlock, this.id));
    this.ranges.push(ctx.pio.register(base + PM_TMR_BLK, PM_TMR_LEN, this.timerBlock, this.id));
    this.reset();
  }

  unrealize(): void {
    for (const r of this.ranges) this.ctx?.pio.unregister(r);
    this.ranges = [];
    this.ctx = undefined;
  }

  describe(): Record<string, unknown> {
    return { base: this.props.base };
  }

  // --- PM timer ---------------------------------------------------------------------------

  private ticks(): bigint {
    const ns = this.ctx?.clock.nowNs() ?? 0n;
    return (ns * PM_TIMER_FREQUENCY) / NS_PER_S;
  }

  private timerValue(): number {
    return Number(this.ticks() & BigInt(TMR_VAL_MASK));
  }

  /** The next tick at which bit 23 toggles. */
  private nextOverflow(): bigint {
    return (this.ticks() / TMR_STS_PERIOD + 1n) * TMR_STS_PERIOD;
  }

  // --- PM1 event block --------------------------------------------------------------------

  private readStatus(): number {
    return this.pm1Status | (this.ticks() >= this.timerOverflowTick ? TMR_STS : 0);
  }

  private writeEventBlock(offset: number, data: Uint8Array): void {
    for (let reg = 0; reg < PM1_EVT_LEN; reg += 2) {
      const written = bytesFor(reg, offset, data);
      if (written.mask === 0) continue;
      if (reg === 0) {
        // PM1_STS: writing 1 clears a bit; clearing TMR_STS arms it for the next toggle of bit 23.
        if (written.value & TMR_STS && this.readStatus() & TMR_STS) this.timerOverflowTick = this.nextOverflow();
        this.pm1Status &= ~written.value & 0xffff;
      } else {
        this.pm1Enable = (this.pm1Enable & ~written.mask) | written.value;
      }
    }
  }

  // --- PM1 control block ------------------------------------------------------------------

  private writeControl(value: number): void {
    this.pm1Control = value & ~(SLP_EN | GBL_RLS);
    if ((value & SLP_EN) === 0) return;
    const sleepType = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
    switch (sleepType) {
      case SLP_TYP_S5:
        this.ctx?.requestShutdown('guest powered off (ACPI S5)');
        return;
      case SLP_TYP_S4:
        // QEMU powers off on S4 (hibernate): the guest has saved its state to disk.
        this.ctx?.requestShutdown('guest powered off (ACPI S4, hibernate)');
        return;
      case SLP_TYP_S3:
        this.ctx?.log.warn('guest asked for ACPI S3 (suspend to RAM), which tsvmm does not support; it keeps running', { device: this.id });
        return;
      default:
        this.ctx?.log.debug(`acpi-pm: SLP_EN with undefined SLP_TYP ${sleepType} ignored`, { device: this.id });
    }
  }

  // --- persistence -------------------------------------------------------------------------

  readonly stateVersion = ACPI_PM_STATE_VERSION;

  saveState(): AcpiPmStateV1 {
    return { pm1Status: this.pm1Status, pm1Enable: this.pm1Enable, pm1Control: this.pm1Control, timerOverflowTick: this.timerOverflowTick };
  }

  loadState(version: number, state: unknown): void {
    const subject = `ACPI PM '${this.id}'`;
    checkStateVersion(version, [ACPI_PM_STATE_VERSION], subject);
    const s = parseDeviceState(acpiPmStateV1, state, subject);
    this.pm1Status = s.pm1Status;
    this.pm1Enable = s.pm1Enable;
    this.pm1Control = s.pm1Control;
    this.timerOverflowTick = s.timerOverflowTick;
  }

  // --- reset ------------------------------------------------------------------------------

  reset(): void {
    this.pm1Status = 0;
    this.pm1Enable = 0;
    this.pm1Control = 0;
    this.timerOverflowTick = this.nextOverflow();
  }
}

/** Read bytes [offset, offset + data.length) of a block whose contents are `value`, little-endian; bytes past it read 0xff. */
function readBytes(value: number, length: number, offset: number, data: Uint8Array): void {
  for (let i = 0; i < data.length; i++) {
    const at = offset + i;
    data[i] = at < length ? (value >>> (8 * at)) & 0xff : 0xff;
  }
}

/** The bytes of a write that fall in the 16-bit register at `reg`: their value and which bytes they were. */
function bytesFor(reg: number, offset: number, data: Uint8Array): { value: number; mask: number } {
  let value = 0;
  let mask = 0;
  for (let i = 0; i < data.length; i++) {
    const at = offset + i - reg;
    if (at < 0 || at > 1) continue;
    value |= (data[i] ?? 0) << (8 * at);
    mask |= 0xff << (8 * at);
  }
  return { value, mask };
}

export const acpiPm = defineDeviceType({
  name: 'acpi-pm',
  description: 'ACPI PM1a event/control registers (power off via S5) and the ACPI PM timer, at QEMU\'s PIIX4 PM base 0x600',
  bus: 'isa',
  hotpluggable: false,
  idPrefix: 'pm',
  properties: z.strictObject({
    /** PMBA: where the PM I/O block starts */
    base: prop.int(0, 0x10000 - (PM_TMR_BLK + PM_TMR_LEN)).default(0x600),
  }),
  create(id, props) {
    return new AcpiPm(id, props);
  },
});

export default devicePlugin(acpiPm);
