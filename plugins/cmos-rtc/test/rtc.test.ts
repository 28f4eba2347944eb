/// <reference types="mocha" />
import { expect } from 'chai';
import fc from 'fast-check';
import { parseProperties, type AddressSpace, type MachineInfo } from '@tsvmm/core';
import { createTestDeviceContext, inb, outb, type ManualClock } from '@tsvmm/core/testing';
import {
  daysFromCivil,
  mc146818rtc,
  REG_A_UIP,
  REG_B_24H,
  REG_B_AIE,
  REG_B_DM_BINARY,
  REG_B_PIE,
  REG_B_SET,
  REG_B_UIE,
  REG_C_AF,
  REG_C_IRQF,
  REG_C_PF,
  REG_C_UF,
  REG_D_VRT,
  RTC_CENTURY,
  RTC_DAY_OF_MONTH,
  RTC_DAY_OF_WEEK,
  RTC_HOURS,
  RTC_HOURS_ALARM,
  RTC_MINUTES,
  RTC_MINUTES_ALARM,
  RTC_MONTH,
  RTC_REG_A,
  RTC_REG_B,
  RTC_REG_C,
  RTC_REG_D,
  RTC_SECONDS,
  RTC_SECONDS_ALARM,
  RTC_YEAR,
  type Mc146818Rtc,
} from '../src/index.js';

const MS = 1_000_000n;
const S = 1_000_000_000n;
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

interface Rig {
  /** the level of the RTC's interrupt line (GSI 8) */
  irq(): boolean;
  pio: AddressSpace;
  rtc: Mc146818Rtc;
  clock: ManualClock;
  read(reg: number): number;
  write(reg: number, v: number): void;
  /** the time registers as [century, year, month, day, hours, minutes, seconds] */
  time(): number[];
}

/** 2024-02-29T13:45:30.250Z, a Thursday afternoon on a leap day. */
const START = new Date(Date.UTC(2024, 1, 29, 13, 45, 30, 250));

function rig(opts: { start?: Date; machine?: Partial<MachineInfo>; props?: Record<string, unknown> } = {}): Rig {
  const { ctx, pio, clock, irqLevel } = createTestDeviceContext({ wallClockAtStart: opts.start ?? START, machine: opts.machine });
  const rtc = mc146818rtc.create('rtc', parseProperties(mc146818rtc.properties, opts.props ?? {}, 'mc146818rtc')) as Mc146818Rtc;
  rtc.realize(ctx);
  const read = (reg: number): number => {
    outb(pio, 0x70, reg);
    return inb(pio, 0x71);
  };
  const write = (reg: number, v: number): void => {
    outb(pio, 0x70, reg);
    outb(pio, 0x71, v);
  };
  const time = (): number[] => [RTC_CENTURY, RTC_YEAR, RTC_MONTH, RTC_DAY_OF_MONTH, RTC_HOURS, RTC_MINUTES, RTC_SECONDS].map(read);
  return { pio, rtc, clock, read, write, time, irq: () => irqLevel(8) };
}

describe('mc146818rtc', () => {
  describe('time and date', () => {
    it('reads the host start time in BCD, 24-hour, by default', () => {
      const { time, read } = rig();
      expect(time()).to.deep.equal([0x20, 0x24, 0x02, 0x29, 0x13, 0x45, 0x30]);
      expect(read(RTC_DAY_OF_WEEK)).to.equal(5); // Thursday; 1 = Sunday
    });

    it('register B DM=1 gives the same time in binary', () => {
      const { time, read, write } = rig();
      write(RTC_REG_B, read(RTC_REG_B) | REG_B_DM_BINARY);
      expect(time()).to.deep.equal([20, 24, 2, 29, 13, 45, 30]);
    });

    it('12-hour mode shows 1-12 with bit 7 set for PM', () => {
      const { read, write } = rig();
      write(RTC_REG_B, read(RTC_REG_B) & ~REG_B_24H);
      expect(read(RTC_HOURS)).to.equal(0x80 | 0x01);
    });

    it('12-hour mode shows midnight as 12 AM and noon as 12 PM', () => {
      const midnight = rig({ start: new Date(Date.UTC(2024, 0, 1, 0, 0, 0)) });
      midnight.write(RTC_REG_B, REG_B_DM_BINARY);
      expect(midnight.read(RTC_HOURS)).to.equal(12);
      midnight.clock.ns = 12n * 3600n * S;
      expect(midnight.read(RTC_HOURS)).to.equal(0x80 | 12);
    });

    it('advances with the VM clock', () => {
      const { time, clock } = rig();
      clock.ns = 30n * S;
      expect(time()).to.deep.equal([0x20, 0x24, 0x02, 0x29, 0x13, 0x46, 0x00]);
    });

    it('rolls over into a new century', () => {
      const { time, read, clock } = rig({ start: new Date(Date.UTC(1999, 11, 31, 23, 59, 59)) });
      expect(time()).to.deep.equal([0x19, 0x99, 0x12, 0x31, 0x23, 0x59, 0x59]);
      clock.ns = 1n * S;
      expect(time()).to.deep.equal([0x20, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00]);
      expect(read(RTC_DAY_OF_WEEK)).to.equal(7); // 2000-01-01 was a Saturday
    });

    it('starts from the host\'s local time with base=localtime', () => {
      const { read, write } = rig({ props: { base: 'localtime' } });
      write(RTC_REG_B, REG_B_24H | REG_B_DM_BINARY);
      const local = new Date(START.getTime() - START.getTimezoneOffset() * 60_000);
      expect(read(RTC_HOURS)).to.equal(local.getUTCHours());
      expect(read(RTC_MINUTES)).to.equal(local.getUTCMinutes());
    });
  });

  describe('update-in-progress (UIP)', () => {
    it('is set only during the last 244 µs before each update', () => {
      const { read, clock } = rig(); // start is 250 ms into a second
      expect(read(RTC_REG_A) & REG_A_UIP).to.equal(0);
      clock.ns = 750n * MS - 245_000n; // 245 µs before the update
      expect(read(RTC_REG_A) & REG_A_UIP).to.equal(0);
      clock.ns = 750n * MS - 240_000n;
      expect(read(RTC_REG_A) & REG_A_UIP).to.equal(REG_A_UIP);
      expect(read(RTC_SECONDS)).to.equal(0x30); // not updated yet
      clock.ns = 750n * MS;
      expect(read(RTC_REG_A) & REG_A_UIP).to.equal(0);
      expect(read(RTC_SECONDS)).to.equal(0x31);
    });

    it('stays clear while SET is held', () => {
      const { read, write, clock } = rig();
      write(RTC_REG_B, REG_B_24H | REG_B_SET);
      clock.ns = 750n * MS - 100_000n;
      expect(read(RTC_REG_A) & REG_A_UIP).to.equal(0);
    });

    it('a write cannot set UIP', () => {
      const { read, write } = rig();
      write(RTC_REG_A, 0xa6);
      expect(read(RTC_REG_A)).to.equal(0x26);
    });
  });

  describe('setting the time', () => {
    it('SET freezes the registers; the time written meanwhile runs from when SET clears', () => {
      const { read, write, time, clock } = rig();
      write(RTC_REG_B, REG_B_24H | REG_B_SET);
      clock.ns = 5n * S;
      expect(time()).to.deep.equal([0x20, 0x24, 0x02, 0x29, 0x13, 0x45, 0x30]); // frozen
      write(RTC_CENTURY, 0x20);
      write(RTC_YEAR, 0x01);
      write(RTC_MONTH, 0x02);
      write(RTC_DAY_OF_MONTH, 0x03);
      write(RTC_HOURS, 0x04);
      write(RTC_MINUTES, 0x05);
      write(RTC_SECONDS, 0x06);
      clock.ns = 9n * S;
      write(RTC_REG_B, REG_B_24H);
      expect(time()).to.deep.equal([0x20, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06]);
      expect(read(RTC_DAY_OF_WEEK)).to.equal(7); // 2001-02-03 was a Saturday
      clock.ns = 10n * S;
      expect(read(RTC_SECONDS)).to.equal(0x07);
    });

    it('setting SET clears UIE', () => {
      const { read, write } = rig();
      write(RTC_REG_B, REG_B_24H | REG_B_UIE | REG_B_SET);
      expect(read(RTC_REG_B)).to.equal(REG_B_24H | REG_B_SET);
    });

    it('a write to a time register of a running clock takes effect at once', () => {
      const { time, write, clock } = rig();
      write(RTC_HOURS, 0x07);
      expect(time()).to.deep.equal([0x20, 0x24, 0x02, 0x29, 0x07, 0x45, 0x30]);
      clock.ns = 750n * MS; // the divider's phase is kept: the update still comes 750 ms in
      expect(time()[6]).to.equal(0x31);
    });

    it('12-hour PM times written with SET are read back as such', () => {
      const { read, write } = rig();
      write(RTC_REG_B, REG_B_SET | REG_B_DM_BINARY); // 12-hour, binary
      write(RTC_HOURS, 0x80 | 11); // 11 PM
      write(RTC_MINUTES, 0); // the latched minutes (0x45 in BCD) would be 69 in binary
      write(RTC_REG_B, REG_B_DM_BINARY); // SET clears: the registers are read as 12-hour binary
      expect(read(RTC_HOURS)).to.equal(0x80 | 11);
      write(RTC_REG_B, REG_B_24H | REG_B_DM_BINARY);
      expect(read(RTC_HOURS)).to.equal(23);
    });

    it('the first update comes half a second after the divider chain leaves reset', () => {
      const { read, write, clock } = rig();
      write(RTC_REG_A, 0x70); // hold the chain in reset
      write(RTC_SECONDS, 0x10);
      clock.ns = 3n * S;
      expect(read(RTC_SECONDS)).to.equal(0x10);
      write(RTC_REG_A, 0x26);
      clock.ns = 3n * S + 499n * MS;
      expect(read(RTC_SECONDS)).to.equal(0x10);
      clock.ns = 3n * S + 500n * MS;
      expect(read(RTC_SECONDS)).to.equal(0x11);
    });

    it('garbage in the time registers never throws', () => {
      fc.assert(
        fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 0x7f }), fc.integer({ min: 0, max: 255 })), { maxLength: 60 }), (writes) => {
          const { read, write, clock } = rig();
          for (const [reg, v] of writes) {
            write(reg, v);
            clock.ns += 123_456_789n;
            for (let r = 0; r < 0x0e; r++) expect(read(r)).to.be.within(0, 255);
          }
        }),
        { numRuns: 200 },
      );
    });
  });

  describe('registers C and D', () => {
    it('register D reads VRT and ignores writes', () => {
      const { read, write } = rig();
      write(RTC_REG_D, 0);
      expect(read(RTC_REG_D)).to.equal(REG_D_VRT);
    });

    it('UF is set after an update and cleared by reading C', () => {
      const { read, clock } = rig();
      expect(read(RTC_REG_C) & REG_C_UF).to.equal(0);
      clock.ns = 1n * S;
      expect(read(RTC_REG_C) & REG_C_UF).to.equal(REG_C_UF);
      expect(read(RTC_REG_C) & REG_C_UF).to.equal(0);
    });

    it('IRQF accompanies a flag whose interrupt is enabled', () => {
      const { read, write, clock } = rig();
      write(RTC_REG_B, REG_B_24H | REG_B_UIE);
      clock.ns = 1n * S;
      expect(read(RTC_REG_C)).to.equal(REG_C_IRQF | REG_C_UF | REG_C_PF);
    });

    it('PF is set once a periodic period (976.5 µs at rate 6) has passed', () => {
      const { read, write, clock } = rig();
      write(RTC_REG_B, REG_B_24H | REG_B_PIE);
      read(RTC_REG_C);
      clock.ns = 900_000n;
      expect(read(RTC_REG_C)).to.equal(0);
      clock.ns = 977_000n;
      expect(read(RTC_REG_C)).to.equal(REG_C_IRQF | REG_C_PF);
    });

    it('writes to C are ignored', () => {
      const { read, write } = rig();
      write(RTC_REG_C, 0xff);
      expect(read(RTC_REG_C)).to.equal(0);
    });
  });

  describe('interrupts (IRQ 8)', () => {
    it('periodic: the line rises when a period ends and falls when C is read, period after period', () => {
      const { read, write, clock, irq } = rig();
      write(RTC_REG_B, REG_B_24H | REG_B_PIE);
      read(RTC_REG_C);
      expect(irq()).to.equal(false);
      clock.advanceNs(900_000n);
      expect(irq()).to.equal(false);
      clock.advanceNs(77_000n); // 977 µs: the first 1024 Hz period is over
      expect(irq()).to.equal(true);
      clock.advanceNs(5n * MS); // more periods coalesce while the line is high
      expect(irq()).to.equal(true);
      expect(read(RTC_REG_C)).to.equal(REG_C_IRQF | REG_C_PF);
      expect(irq()).to.equal(false);
      clock.advanceNs(977_000n);
      expect(irq()).to.equal(true);
    });

    it('periodic at rate 15 (2 Hz): nothing for 499 ms, then the interrupt', () => {
      const { read, write, clock, irq } = rig();
      write(RTC_REG_A, 0x2f);
      write(RTC_REG_B, REG_B_24H | REG_B_PIE);
      read(RTC_REG_C);
      clock.advanceNs(499n * MS);
      expect(irq()).to.equal(false);
      clock.advanceNs(1n * MS);
      expect(irq()).to.equal(true);
    });

    it('update-ended: once per second, at the second boundary of the guest clock', () => {
      const { read, write, clock, irq } = rig(); // starts 250 ms into a second
      write(RTC_REG_B, REG_B_24H | REG_B_UIE);
      clock.advanceNs(749n * MS);
      expect(irq()).to.equal(false);
      clock.advanceNs(1n * MS);
      expect(irq()).to.equal(true);
      // PF too: the periodic rate runs whether or not its interrupt is enabled
      expect(read(RTC_REG_C)).to.equal(REG_C_IRQF | REG_C_PF | REG_C_UF);
      clock.advanceNs(999n * MS);
      expect(irq()).to.equal(false);
      clock.advanceNs(1n * MS);
      expect(irq()).to.equal(true);
    });

    it('alarm: at the update where the time equals the alarm, with 0xC0-0xFF as "don\'t care"', () => {
      const { read, write, clock, irq } = rig(); // 13:45:30.25
      write(RTC_SECONDS_ALARM, 0x33);
      write(RTC_MINUTES_ALARM, 0x45);
      write(RTC_HOURS_ALARM, 0x13);
      write(RTC_REG_B, REG_B_24H | REG_B_AIE);
      clock.advanceNs(2n * S); // 13:45:32.25
      expect(irq()).to.equal(false);
      expect(read(RTC_REG_C) & REG_C_AF).to.equal(0);
      clock.advanceNs(750n * MS); // 13:45:33.00
      expect(irq()).to.equal(true);
      expect(read(RTC_REG_C)).to.equal(REG_C_IRQF | REG_C_PF | REG_C_AF | REG_C_UF);
      // once a minute: seconds 00, minutes and hours "don't care"
      write(RTC_SECONDS_ALARM, 0x00);
      write(RTC_MINUTES_ALARM, 0xc0);
      write(RTC_HOURS_ALARM, 0xff);
      clock.advanceNs(26n * S); // 13:45:59
      expect(irq()).to.equal(false);
      clock.advanceNs(1n * S); // 13:46:00
      expect(irq()).to.equal(true);
    });

    it('enabling an interrupt whose flag is already pending raises the line at once; disabling it lowers the line', () => {
      const { write, clock, irq } = rig();
      clock.advanceNs(1n * S);
      expect(irq()).to.equal(false);
      write(RTC_REG_B, REG_B_24H | REG_B_UIE);
      expect(irq()).to.equal(true);
      write(RTC_REG_B, REG_B_24H);
      expect(irq()).to.equal(false);
    });

    it('reset lowers the line and stops the interrupts', () => {
      const { rtc, write, clock, irq } = rig();
      write(RTC_REG_B, REG_B_24H | REG_B_PIE | REG_B_UIE);
      clock.advanceNs(1n * S);
      expect(irq()).to.equal(true);
      rtc.reset();
      expect(irq()).to.equal(false);
      clock.advanceNs(3n * S);
      expect(irq()).to.equal(false);
    });

    it('a restored RTC with a pending enabled flag raises its line (migration)', () => {
      const a = rig();
      a.write(RTC_REG_B, REG_B_24H | REG_B_UIE);
      a.read(RTC_REG_C);
      const saved = a.rtc.saveState();
      const b = rig();
      b.rtc.loadState(1, saved);
      expect(b.irq()).to.equal(false);
      b.clock.advanceNs(1n * S);
      expect(b.irq()).to.equal(true);
    });
  });

  describe('ports', () => {
    it('bit 7 of the index port (NMI mask) does not change the register selected', () => {
      const { pio, read } = rig();
      pio.write(0x70, Uint8Array.of(0x80 | RTC_REG_D));
      const b = new Uint8Array(1);
      pio.read(0x71, b);
      expect(b[0]).to.equal(read(RTC_REG_D));
    });

    it('the index port reads 0xff', () => {
      const { pio } = rig();
      const b = new Uint8Array(1);
      pio.read(0x70, b);
      expect(b[0]).to.equal(0xff);
    });
  });

  describe('CMOS memory', () => {
    it('holds the memory size bytes of a 32 MiB, one-CPU machine', () => {
      const { read } = rig({ machine: { ramBelowFourGiB: 32 * MiB } });
      expect(read(0x15) | (read(0x16) << 8)).to.equal(640);
      expect(read(0x17) | (read(0x18) << 8)).to.equal(31 * 1024);
      expect(read(0x30) | (read(0x31) << 8)).to.equal(31 * 1024);
      expect(read(0x34) | (read(0x35) << 8)).to.equal((16 * MiB) / 65536);
      expect([read(0x5b), read(0x5c), read(0x5d)]).to.deep.equal([0, 0, 0]);
      expect(read(0x5f)).to.equal(0);
      expect(read(0x14)).to.equal(0x06);
    });

    it('caps extended memory at 65535 KiB and counts memory above 4 GiB in 64 KiB units', () => {
      const { read } = rig({ machine: { ramBelowFourGiB: 3 * GiB, ramAboveFourGiB: 1 * GiB, cpus: 4 } });
      expect(read(0x17) | (read(0x18) << 8)).to.equal(0xffff);
      expect(read(0x30) | (read(0x31) << 8)).to.equal(0xffff);
      expect(read(0x34) | (read(0x35) << 8)).to.equal((3 * GiB - 16 * MiB) / 65536);
      expect([read(0x5b), read(0x5c), read(0x5d)]).to.deep.equal([0x00, 0x40, 0x00]);
      expect(read(0x5f)).to.equal(3);
    });

    it('gives less than 640 KiB of base memory and no extended memory to a tiny machine', () => {
      const { read } = rig({ machine: { ramBelowFourGiB: 512 * 1024 } });
      expect(read(0x15) | (read(0x16) << 8)).to.equal(512);
      expect(read(0x17) | (read(0x18) << 8)).to.equal(0);
      expect(read(0x34) | (read(0x35) << 8)).to.equal(0);
    });

    it('keeps what the guest writes to NVRAM', () => {
      const { read, write } = rig();
      write(0x40, 0x5a);
      expect(read(0x40)).to.equal(0x5a);
    });
  });

  describe('reset', () => {
    it('keeps NVRAM, the time and the data formats', () => {
      const { rtc, read, write, time } = rig();
      write(0x40, 0x5a);
      write(RTC_REG_B, REG_B_24H | REG_B_DM_BINARY);
      write(RTC_HOURS, 7);
      rtc.reset();
      expect(read(0x40)).to.equal(0x5a);
      expect(read(RTC_REG_B)).to.equal(REG_B_24H | REG_B_DM_BINARY);
      expect(time()[4]).to.equal(7);
    });

    it('clears the interrupt enables and flags', () => {
      const { rtc, read, write, clock } = rig();
      write(RTC_REG_B, REG_B_24H | REG_B_PIE | REG_B_UIE | 0x20 | 0x08);
      clock.ns = 2n * S;
      rtc.reset();
      expect(read(RTC_REG_B)).to.equal(REG_B_24H);
      expect(read(RTC_REG_C)).to.equal(0);
    });
  });

  describe('calendar arithmetic', () => {
    it('daysFromCivil agrees with Date.UTC', () => {
      fc.assert(
        fc.property(fc.integer({ min: 0, max: 9999 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 28 }), (y, m, d) => {
          const date = new Date(0);
          date.setUTCFullYear(y, m - 1, d); // unlike Date.UTC, does not map years 0-99 to 1900-1999
          const expected = date.getTime() / 86_400_000;
          expect(daysFromCivil(y, m, d)).to.equal(expected);
        }),
      );
    });
  });
});
