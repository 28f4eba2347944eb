/**
 * MC146818 real-time clock and CMOS RAM, device type `mc146818rtc`.
 *
 * Spec: Motorola MC146818A datasheet — "Address Map", "Time, Calendar and
 * Alarm Locations" (Table 2: BCD/binary and 12/24-hour formats), "Update
 * Cycle" (UIP is set 244 µs before the update; Table 6), "Registers" A-D and
 * "RESET". CMOS layout of the PC: index port 0x70 (bit 7 masks NMI), data port
 * 0x71, the century byte at 0x32 (IBM PC/AT), and the memory-size bytes as
 * QEMU's pc_cmos_init fills them (hw/i386/pc.c): 0x15/0x16 base memory in KiB
 * (at most 640), 0x17/0x18 and 0x30/0x31 extended memory above 1 MiB in KiB
 * (at most 65535), 0x34/0x35 memory between 16 MiB and 4 GiB in 64 KiB units
 * (at most 65535), 0x5b-0x5d memory above 4 GiB in 64 KiB units, 0x5f the
 * number of CPUs minus one, 0x14 the equipment byte (FPU, PS/2 mouse).
 *
 * The clock is computed, not ticked: guest RTC time = run time of the VM
 * (ctx.clock.nowNs) + an offset, set from the host's wall clock when the
 * machine starts and moved whenever the guest sets the time. So the time
 * registers, UIP and the C flags are all derived on read. A timer on the
 * VM's clock runs only while an interrupt is enabled and none is pending:
 * it wakes at the next event that could raise one (the next periodic tick,
 * the next update), and the interrupt line (IRQ 8, `irq=`) goes high when
 * an enabled flag is pending and low when register C is read, as QEMU's
 * RTC does. Events between two reads of C coalesce into one flag, as on
 * the chip.
 *
 * Done: time and date in BCD or binary and 12- or 24-hour mode (register B
 * DM and 24/12 bits) with the century at 0x32; setting the time (directly or
 * with SET held, which freezes the registers for the guest to write); the
 * divider bits of register A (stopped and reset chains; the first update
 * comes half a second after the chain is released); UIP during the last
 * 244 µs of each second (what QEMU does too); register C's UF, AF and PF
 * flags and IRQF, read-to-clear; the periodic, alarm and update-ended
 * interrupts (the alarm's "don't care" values 0xC0-0xFF); register D's VRT;
 * 128 bytes of CMOS that survive a machine reset.
 * Not done: the square-wave output; daylight saving (DSE); the second
 * 128-byte bank at 0x72/0x73. The day of the week is derived from the date,
 * as in QEMU.
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
  type IrqLine,
  type VirtualClock,
  type VirtualTimer,
} from '@tsvmm/core';

// --- registers ("Address Map") ----------------------------------------------------------

export const RTC_SECONDS = 0x00;
export const RTC_SECONDS_ALARM = 0x01;
export const RTC_MINUTES = 0x02;
export const RTC_MINUTES_ALARM = 0x03;
export const RTC_HOURS = 0x04;
export const RTC_HOURS_ALARM = 0x05;
export const RTC_DAY_OF_WEEK = 0x06;
export const RTC_DAY_OF_MONTH = 0x07;
export const RTC_MONTH = 0x08;
export const RTC_YEAR = 0x09;
export const RTC_REG_A = 0x0a;
export const RTC_REG_B = 0x0b;
export const RTC_REG_C = 0x0c;
export const RTC_REG_D = 0x0d;
/** IBM PC/AT century byte */
export const RTC_CENTURY = 0x32;
export const CMOS_SIZE = 128;

export const REG_A_UIP = 0x80;
const REG_A_DV = 0x70; // divider chain: 010 = 32.768 kHz time base, 11x = chain held in reset
const REG_A_DV_RESET = 0x60;
const REG_A_RS = 0x0f; // periodic rate select

export const REG_B_SET = 0x80;
export const REG_B_PIE = 0x40;
export const REG_B_AIE = 0x20;
export const REG_B_UIE = 0x10;
const REG_B_SQWE = 0x08;
export const REG_B_DM_BINARY = 0x04;
export const REG_B_24H = 0x02;

export const REG_C_IRQF = 0x80;
export const REG_C_PF = 0x40;
export const REG_C_AF = 0x20;
export const REG_C_UF = 0x10;
const REG_C_INTERRUPT_FLAGS = 0x70; // PF, AF, UF line up with PIE, AIE, UIE

export const REG_D_VRT = 0x80;

/** Power-on values as QEMU: 32.768 kHz time base, 1024 Hz periodic rate; BCD, 24-hour. */
const REG_A_POWER_ON = 0x26;
const REG_B_POWER_ON = REG_B_24H;

/** The time and date registers, computed from the clock while it runs. */
const TIME_REGISTERS = new Set([RTC_SECONDS, RTC_MINUTES, RTC_HOURS, RTC_DAY_OF_WEEK, RTC_DAY_OF_MONTH, RTC_MONTH, RTC_YEAR, RTC_CENTURY]);

const NS_PER_S = 1_000_000_000n;
/** UIP is set this long before each update: 8 cycles of the 32.768 kHz time base (244.14 µs). */
const UIP_HOLD_NS = (8n * NS_PER_S) / 32768n;
/** After the divider chain leaves reset, the first update comes half a second later. */
const DIVIDER_RELEASE_PHASE_NS = NS_PER_S / 2n;

const KiB = 1024;
const MiB = 1024 * KiB;

const PORT_INDEX = 0;
const PORT_DATA = 1;

/**
 * Saved state, version 1: the 128 CMOS bytes, the index register, and the
 * clock as an offset from the VM's run-time clock (which migrates with the
 * machine), plus the points register C last reported.
 */
export const RTC_STATE_VERSION = 1;
const rtcStateV1 = z.strictObject({
  cmos: stateField.bytes(CMOS_SIZE).refine((b) => b.length === CMOS_SIZE, { error: `must be ${CMOS_SIZE} bytes` }),
  index: stateField.int(0, 0x7f),
  rtcOffsetNs: stateField.bigint(),
  lastUpdateSecond: stateField.bigint(),
  lastPeriodicTick: stateField.bigint(),
});
export type RtcStateV1 = z.infer<typeof rtcStateV1>;

export interface RtcProperties {
  iobase: number;
  base: 'utc' | 'localtime';
  /** the ISA interrupt (GSI) it raises: 8 on a PC */
  irq: number;
}

/** Broken-down guest time. */
interface CalendarTime {
  second: number;
  minute: number;
  hour: number;
  /** 1 = Sunday, as the RTC counts */
  dayOfWeek: number;
  day: number;
  month: number;
  year: number;
}

export class Mc146818Rtc implements Device, BusDevice {
  readonly typeName = 'mc146818rtc';

  /** The 128 bytes: time registers (only meaningful while stopped), A-D, then battery-backed RAM. */
  private readonly cmos = new Uint8Array(CMOS_SIZE);
  private index = 0;
  /** guest RTC time in ns since 1970-01-01T00:00:00 = clock.nowNs() + rtcOffsetNs */
  private rtcOffsetNs = 0n;
  /** the guest second when register C was last read, for UF */
  private lastUpdateSecond = 0n;
  /** the periodic-interrupt period count when register C was last read, for PF */
  private lastPeriodicTick = 0n;
  /** one broken-down time, reused, for the second it was computed for */
  private readonly now: CalendarTime = { second: 0, minute: 0, hour: 0, dayOfWeek: 1, day: 1, month: 1, year: 1970 };
  private nowSecond: bigint | undefined;

  private clock: VirtualClock | undefined;
  private range: BusRange | undefined;
  private ctx: DeviceContext | undefined;
  private line: IrqLine | undefined;
  private timer: VirtualTimer | undefined;
  /** the interrupt line is high: an enabled flag is pending until register C is read */
  private irqHigh = false;
  /** AF: the alarm matched in a second after lastUpdateSecond, up to alarmCheckedSecond (a cache, not state) */
  private alarmSeen = false;
  private alarmCheckedSecond: bigint | undefined;

  constructor(
    readonly id: string,
    readonly props: RtcProperties,
  ) {
    this.cmos[RTC_REG_A] = REG_A_POWER_ON;
    this.cmos[RTC_REG_B] = REG_B_POWER_ON;
    this.cmos[RTC_REG_D] = REG_D_VRT;
  }

  // --- lifecycle ------------------------------------------------------------------------

  realize(ctx: DeviceContext): void {
    this.range = ctx.pio.register(this.props.iobase, 2, this, this.id);
    this.ctx = ctx;
    this.clock = ctx.clock;
    const start = ctx.clock.wallClockAtStart();
    // localtime: the guest sees the host's local wall-clock time, for guests that keep the RTC that way (Windows).
    const zoneMs = this.props.base === 'localtime' ? -start.getTimezoneOffset() * 60_000 : 0;
    this.rtcOffsetNs = BigInt(start.getTime() + zoneMs) * 1_000_000n;
    this.fillMemorySize(ctx);
    this.line = ctx.irq(this.props.irq);
    this.timer = ctx.clock.createTimer(() => this.updateIrq());
    this.clearInterruptFlags();
  }

  unrealize(): void {
    if (this.range !== undefined) this.ctx?.pio.unregister(this.range);
    this.timer?.cancel();
    this.timer = undefined;
    this.line?.lower();
    this.line = undefined;
    this.range = undefined;
    this.ctx = undefined;
  }

  describe(): Record<string, unknown> {
    return { iobase: this.props.iobase, base: this.props.base, irq: this.props.irq };
  }

  /** The BIOS's memory-size and equipment bytes, as QEMU's pc_cmos_init writes them. */
  private fillMemorySize(ctx: DeviceContext): void {
    const { ramBelowFourGiB: below, ramAboveFourGiB: above, cpus } = ctx.machine;
    const base = Math.min(Math.floor(below / KiB), 640);
    this.setWord(0x15, base);
    const extended = below > MiB ? Math.min(Math.floor((below - MiB) / KiB), 0xffff) : 0;
    this.setWord(0x17, extended);
    this.setWord(0x30, extended);
    const above16M = below > 16 * MiB ? Math.min(Math.floor((below - 16 * MiB) / (64 * KiB)), 0xffff) : 0;
    this.setWord(0x34, above16M);
    const above4G = Math.floor(above / (64 * KiB));
    this.cmos[0x5b] = above4G & 0xff;
    this.cmos[0x5c] = (above4G >>> 8) & 0xff;
    this.cmos[0x5d] = (above4G >>> 16) & 0xff;
    this.cmos[0x5f] = (cpus - 1) & 0xff;
    this.cmos[0x14] = 0x02 | 0x04; // FPU present, PS/2 mouse installed
  }

  private setWord(at: number, v: number): void {
    this.cmos[at] = v & 0xff;
    this.cmos[at + 1] = (v >>> 8) & 0xff;
  }

  // --- the access path --------------------------------------------------------------------

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      // The index register is write-only; QEMU reads it as 0xff.
      data[i] = offset + i === PORT_DATA ? this.readRegister(this.index) : 0xff;
    }
  }

  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const v = data[i] ?? 0;
      // Bit 7 of the index port masks NMI on a PC; there is no NMI to mask here.
      if (offset + i === PORT_INDEX) this.index = v & 0x7f;
      else if (offset + i === PORT_DATA) this.writeRegister(this.index, v);
    }
  }

  private readRegister(reg: number): number {
    if (TIME_REGISTERS.has(reg) && this.running) return this.timeRegister(reg);
    switch (reg) {
      case RTC_REG_A:
        return (this.cmos[RTC_REG_A] ?? 0) | (this.updateInProgress() ? REG_A_UIP : 0);
      case RTC_REG_C:
        return this.readInterruptFlags();
      default:
        return this.cmos[reg] ?? 0xff;
    }
  }

  private writeRegister(reg: number, v: number): void {
    if (TIME_REGISTERS.has(reg)) {
      if (!this.running) {
        this.cmos[reg] = v; // the guest is setting the time with SET held (or the chain stopped)
        return;
      }
      // Writing one field of a running clock sets the time at once, keeping the divider's phase.
      const phase = this.phaseNs();
      this.latchTime();
      this.cmos[reg] = v;
      this.startFromRegisters(phase);
      return;
    }
    switch (reg) {
      case RTC_REG_A:
        this.writeRegisterA(v);
        return;
      case RTC_REG_B:
        this.writeRegisterB(v);
        return;
      case RTC_REG_C:
      case RTC_REG_D:
        return; // read-only
      default:
        this.cmos[reg] = v;
    }
  }

  private writeRegisterA(v: number): void {
    const wasRunning = this.running;
    const chainWasReset = ((this.cmos[RTC_REG_A] ?? 0) & REG_A_DV_RESET) === REG_A_DV_RESET;
    const phase = this.phaseNs();
    if (wasRunning && !isRunning(v, this.cmos[RTC_REG_B] ?? 0)) this.latchTime();
    const oldRate = (this.cmos[RTC_REG_A] ?? 0) & (REG_A_RS | REG_A_DV);
    this.cmos[RTC_REG_A] = v & ~REG_A_UIP; // UIP is read-only
    if (!wasRunning && this.running) this.startFromRegisters(chainWasReset ? DIVIDER_RELEASE_PHASE_NS : phase);
    // a new rate counts its periods afresh (no PF for the switch itself)
    if ((v & (REG_A_RS | REG_A_DV)) !== oldRate && !(this.pendingFlags() & REG_C_PF)) this.lastPeriodicTick = this.periodicTick() ?? 0n;
    this.updateIrq();
  }

  private writeRegisterB(v: number): void {
    const wasRunning = this.running;
    const phase = this.phaseNs();
    // Setting SET stops updates and clears UIE (datasheet, register B).
    const b = v & REG_B_SET ? v & ~REG_B_UIE : v;
    // Freeze the registers in the format they had until now.
    if (wasRunning && !isRunning(this.cmos[RTC_REG_A] ?? 0, b)) this.latchTime();
    this.cmos[RTC_REG_B] = b;
    // The divider kept counting while SET was held: the phase carries on.
    if (!wasRunning && this.running) this.startFromRegisters(phase);
    // enabling an interrupt whose flag is already pending raises it at once (as QEMU)
    this.updateIrq();
  }

  // --- the clock --------------------------------------------------------------------------

  private get running(): boolean {
    return isRunning(this.cmos[RTC_REG_A] ?? 0, this.cmos[RTC_REG_B] ?? 0);
  }

  private clockNs(): bigint {
    return this.clock?.nowNs() ?? 0n;
  }

  private guestNs(): bigint {
    return this.clockNs() + this.rtcOffsetNs;
  }

  /** where in the current second the divider is */
  private phaseNs(): bigint {
    return floorMod(this.guestNs(), NS_PER_S);
  }

  /** UIP: set for the 244 µs before each update while the clock runs. */
  private updateInProgress(): boolean {
    return this.running && this.phaseNs() >= NS_PER_S - UIP_HOLD_NS;
  }

  /** The current time, broken down (computed once per guest second). */
  private calendar(): CalendarTime {
    const second = floorDiv(this.guestNs(), NS_PER_S);
    if (second !== this.nowSecond) {
      this.nowSecond = second;
      breakDown(Number(second), this.now);
    }
    return this.now;
  }

  private timeRegister(reg: number): number {
    const t = this.calendar();
    switch (reg) {
      case RTC_SECONDS:
        return this.encode(t.second);
      case RTC_MINUTES:
        return this.encode(t.minute);
      case RTC_HOURS:
        return this.encodeHour(t.hour);
      case RTC_DAY_OF_WEEK:
        return this.encode(t.dayOfWeek);
      case RTC_DAY_OF_MONTH:
        return this.encode(t.day);
      case RTC_MONTH:
        return this.encode(t.month);
      case RTC_YEAR:
        return this.encode(floorModNumber(t.year, 100));
      default: // RTC_CENTURY
        return this.encode(Math.floor(t.year / 100));
    }
  }

  /** Copy the running time into the registers, in the current format, before the clock stops. */
  private latchTime(): void {
    for (const reg of TIME_REGISTERS) this.cmos[reg] = this.timeRegister(reg);
  }

  /** Start the clock from the time in the registers, `phase` ns into that second. */
  private startFromRegisters(phase: bigint): void {
    const c = this.cmos;
    const hourByte = c[RTC_HOURS] ?? 0;
    let hour: number;
    if ((c[RTC_REG_B] ?? 0) & REG_B_24H) hour = this.decode(hourByte);
    else hour = (this.decode(hourByte & 0x7f) % 12) + (hourByte & 0x80 ? 12 : 0);
    const year = this.decode(c[RTC_CENTURY] ?? 0) * 100 + this.decode(c[RTC_YEAR] ?? 0);
    // Out-of-range fields (a guest writing garbage) just count on: the arithmetic is linear.
    const days = daysFromCivil(year, this.decode(c[RTC_MONTH] ?? 1), this.decode(c[RTC_DAY_OF_MONTH] ?? 1));
    const seconds = days * 86400 + hour * 3600 + this.decode(c[RTC_MINUTES] ?? 0) * 60 + this.decode(c[RTC_SECONDS] ?? 0);
    this.rtcOffsetNs = BigInt(seconds) * NS_PER_S + phase - this.clockNs();
    this.lastUpdateSecond = BigInt(seconds);
    this.forgetAlarm();
  }

  private get binary(): boolean {
    return ((this.cmos[RTC_REG_B] ?? 0) & REG_B_DM_BINARY) !== 0;
  }

  private encode(v: number): number {
    if (this.binary) return v & 0xff;
    const d = floorModNumber(v, 100);
    return (Math.floor(d / 10) << 4) | d % 10;
  }

  private decode(b: number): number {
    return this.binary ? b : (b >> 4) * 10 + (b & 0x0f);
  }

  /** 12-hour mode: 1-12, bit 7 set for PM (Table 2). */
  private encodeHour(hour: number): number {
    if ((this.cmos[RTC_REG_B] ?? 0) & REG_B_24H) return this.encode(hour);
    return this.encode(hour % 12 === 0 ? 12 : hour % 12) | (hour >= 12 ? 0x80 : 0);
  }

  // --- register C -------------------------------------------------------------------------

  /**
   * Flags raised since the last read of C (UF: an update happened; AF: the
   * alarm matched at an update; PF: a periodic tick passed), without
   * clearing them.
   */
  private pendingFlags(): number {
    let flags = 0;
    if (this.running) {
      const second = floorDiv(this.guestNs(), NS_PER_S);
      if (second !== this.lastUpdateSecond) flags |= REG_C_UF;
      if (this.alarmMatchedUpTo(second)) flags |= REG_C_AF;
    }
    const tick = this.periodicTick();
    if (tick !== undefined && tick !== this.lastPeriodicTick) flags |= REG_C_PF;
    return flags;
  }

  /** Reading C returns the flags (and IRQF) and clears them; the interrupt line goes low. */
  private readInterruptFlags(): number {
    let flags = this.pendingFlags();
    if (this.running) this.lastUpdateSecond = floorDiv(this.guestNs(), NS_PER_S);
    const tick = this.periodicTick();
    if (tick !== undefined) this.lastPeriodicTick = tick;
    this.forgetAlarm();
    if (flags & (this.cmos[RTC_REG_B] ?? 0) & REG_C_INTERRUPT_FLAGS) flags |= REG_C_IRQF;
    this.updateIrq();
    return flags;
  }

  /** Whether an update in the seconds (lastUpdateSecond, second] found the time equal to the alarm. */
  private alarmMatchedUpTo(second: bigint): boolean {
    let from = this.alarmCheckedSecond ?? this.lastUpdateSecond;
    if (this.alarmSeen || second <= from) return this.alarmSeen;
    // the alarm pattern repeats daily: one day of updates covers every match
    if (second - from > 86400n) from = second - 86400n;
    const t: CalendarTime = { second: 0, minute: 0, hour: 0, dayOfWeek: 1, day: 1, month: 1, year: 1970 };
    for (let s = from + 1n; s <= second; s++) {
      breakDown(Number(s), t);
      if (this.alarmMatches(t)) {
        this.alarmSeen = true;
        break;
      }
    }
    this.alarmCheckedSecond = second;
    return this.alarmSeen;
  }

  /** AF is derived again from lastUpdateSecond (the cache above is dropped). */
  private forgetAlarm(): void {
    this.alarmSeen = false;
    this.alarmCheckedSecond = undefined;
  }

  /** Alarm bytes 0xC0-0xFF match any value ("don't care", datasheet "Alarm"). */
  private alarmMatches(t: CalendarTime): boolean {
    const c = this.cmos;
    const field = (alarm: number, value: number): boolean => (alarm & 0xc0) === 0xc0 || alarm === value;
    return (
      field(c[RTC_SECONDS_ALARM] ?? 0, this.encode(t.second)) &&
      field(c[RTC_MINUTES_ALARM] ?? 0, this.encode(t.minute)) &&
      field(c[RTC_HOURS_ALARM] ?? 0, this.encodeHour(t.hour))
    );
  }

  /**
   * Drives IRQ 8 from the pending flags and the enables in B, and arms the
   * timer for the next event that could raise it: the next periodic tick
   * (PIE) or the next update (UIE, and AIE, checked at every update). While
   * the line is high nothing more can be signalled until C is read.
   */
  private updateIrq(): void {
    const enables = (this.cmos[RTC_REG_B] ?? 0) & REG_C_INTERRUPT_FLAGS;
    const high = (this.pendingFlags() & enables) !== 0;
    if (high !== this.irqHigh) {
      this.irqHigh = high;
      this.line?.set(high);
    }
    const timer = this.timer;
    if (timer === undefined) return;
    if (high || enables === 0) {
      timer.cancel();
      return;
    }
    let next: bigint | undefined;
    const tick = enables & REG_C_PF ? this.periodicTick() : undefined;
    if (tick !== undefined) next = this.periodNs(tick + 1n);
    if (enables & (REG_C_UF | REG_C_AF) && this.running) {
      const update = (floorDiv(this.guestNs(), NS_PER_S) + 1n) * NS_PER_S - this.rtcOffsetNs;
      if (next === undefined || update < next) next = update;
    }
    if (next === undefined) timer.cancel();
    else timer.arm(next);
  }

  /** Run time (clock ns) at which periodic period `tick` begins: the inverse of periodicTick, rounded up. */
  private periodNs(tick: bigint): bigint {
    const cycles = this.periodCycles();
    const num = tick * cycles * NS_PER_S;
    return (num + 32767n) / 32768n;
  }

  private periodCycles(): bigint {
    const rs = (this.cmos[RTC_REG_A] ?? 0) & REG_A_RS;
    // Rates 1 and 2 are 256 Hz and 128 Hz with the 32.768 kHz time base; from 3 on, 32768 >> (rs - 1) Hz.
    return BigInt(rs <= 2 ? 1 << (rs + 6) : 1 << (rs - 1));
  }

  /** The number of periodic-interrupt periods since the VM started; undefined with no rate or the chain in reset. */
  private periodicTick(): bigint | undefined {
    const a = this.cmos[RTC_REG_A] ?? 0;
    const rs = a & REG_A_RS;
    if (rs === 0 || (a & REG_A_DV_RESET) === REG_A_DV_RESET) return undefined;
    return (this.clockNs() * 32768n) / (NS_PER_S * this.periodCycles());
  }

  private clearInterruptFlags(): void {
    this.lastUpdateSecond = floorDiv(this.guestNs(), NS_PER_S);
    this.lastPeriodicTick = this.periodicTick() ?? 0n;
    this.forgetAlarm();
    this.updateIrq();
  }

  // --- persistence -------------------------------------------------------------------------

  readonly stateVersion = RTC_STATE_VERSION;

  saveState(): RtcStateV1 {
    return {
      cmos: this.cmos.slice(),
      index: this.index,
      rtcOffsetNs: this.rtcOffsetNs,
      lastUpdateSecond: this.lastUpdateSecond,
      lastPeriodicTick: this.lastPeriodicTick,
    };
  }

  loadState(version: number, state: unknown): void {
    const subject = `RTC '${this.id}'`;
    checkStateVersion(version, [RTC_STATE_VERSION], subject);
    const s = parseDeviceState(rtcStateV1, state, subject);
    this.cmos.set(s.cmos);
    this.index = s.index;
    this.rtcOffsetNs = s.rtcOffsetNs;
    this.lastUpdateSecond = s.lastUpdateSecond;
    this.lastPeriodicTick = s.lastPeriodicTick;
    this.nowSecond = undefined;
    this.forgetAlarm();
    // the line and the timer follow the loaded registers
    this.updateIrq();
  }

  // --- reset ("RESET" pin: interrupt enables and flags only) ------------------------------

  /**
   * RESET clears PIE, AIE, UIE, SQWE and the C flags; the time, the divider and
   * formats and the CMOS RAM are battery-backed and survive (guests detect a
   * reboot through a CMOS byte).
   */
  reset(): void {
    const b = this.cmos[RTC_REG_B] ?? 0;
    this.cmos[RTC_REG_B] = b & ~(REG_B_PIE | REG_B_AIE | REG_B_UIE | REG_B_SQWE);
    this.clearInterruptFlags();
  }

  /** a CMOS byte as stored, for tests and status (time registers hold the frozen time only while stopped) */
  nvram(at: number): number {
    return this.cmos[at & 0x7f] ?? 0;
  }
}

/** The clock runs with SET clear and the divider on a normal time base (QEMU counts DV 000-010 as running). */
function isRunning(a: number, b: number): boolean {
  return (b & REG_B_SET) === 0 && (a & REG_A_DV) <= 0x20;
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n ? q - 1n : q;
}

function floorMod(a: bigint, b: bigint): bigint {
  const r = a % b;
  return r < 0n ? r + b : r;
}

function floorModNumber(a: number, b: number): number {
  return ((a % b) + b) % b;
}

/** Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
export function daysFromCivil(year: number, month: number, day: number): number {
  // Normalise the month so that out-of-range values roll into the year.
  year += Math.floor((month - 1) / 12);
  month = floorModNumber(month - 1, 12) + 1;
  const y = month <= 2 ? year - 1 : year;
  const era = Math.floor(y / 400);
  const yoe = y - era * 400;
  const doy = Math.floor((153 * ((month + 9) % 12) + 2) / 5) + day - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146097 + doe - 719468;
}

/** Seconds since 1970-01-01 into calendar fields (the inverse of daysFromCivil). */
function breakDown(seconds: number, out: CalendarTime): void {
  const days = Math.floor(seconds / 86400);
  const secOfDay = seconds - days * 86400;
  out.hour = Math.floor(secOfDay / 3600);
  out.minute = Math.floor((secOfDay % 3600) / 60);
  out.second = secOfDay % 60;
  out.dayOfWeek = floorModNumber(days + 4, 7) + 1; // 1970-01-01 was a Thursday
  const z = days + 719468;
  const era = Math.floor(z / 146097);
  const doe = z - era * 146097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36524) - Math.floor(doe / 146096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  out.day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  out.month = mp < 10 ? mp + 3 : mp - 9;
  out.year = yoe + era * 400 + (out.month <= 2 ? 1 : 0);
}

export const mc146818rtc = defineDeviceType({
  name: 'mc146818rtc',
  description: 'MC146818 real-time clock and CMOS RAM (ports 0x70/0x71)',
  bus: 'isa',
  hotpluggable: false,
  idPrefix: 'rtc',
  properties: z.strictObject({
    iobase: prop.int(0, 0xfffe).default(0x70),
    /** what the RTC starts from: the host's UTC time (default) or its local time */
    base: prop.oneOf(['utc', 'localtime']).default('utc'),
    irq: prop.int(0, 23).default(8),
  }),
  create(id, props) {
    return new Mc146818Rtc(id, props);
  },
});

export default devicePlugin(mc146818rtc);
