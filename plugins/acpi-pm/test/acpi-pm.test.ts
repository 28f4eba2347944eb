/// <reference types="mocha" />
import { expect } from 'chai';
import { parseProperties, type AddressSpace } from '@tsvmm/core';
import { createTestDeviceContext, portIn, portOut, type ManualClock } from '@tsvmm/core/testing';
import { acpiPm, SCI_EN, SLP_EN, TMR_EN, TMR_STS, type AcpiPm } from '../src/index.js';

const S = 1_000_000_000n;

interface Rig {
  pio: AddressSpace;
  pm: AcpiPm;
  clock: ManualClock;
  shutdowns: string[];
  in(port: number, size: 1 | 2 | 4): number;
  out(port: number, size: 1 | 2 | 4, v: number): void;
}

function rig(props: Record<string, unknown> = {}): Rig {
  const { ctx, pio, clock, shutdowns } = createTestDeviceContext();
  const pm = acpiPm.create('pm', parseProperties(acpiPm.properties, props, 'acpi-pm')) as AcpiPm;
  pm.realize(ctx);
  return {
    pio,
    pm,
    clock,
    shutdowns,
    in: (port, size) => portIn(pio, port, size),
    out: (port, size, v) => portOut(pio, port, size, v),
  };
}

const PM1A_STS = 0x600;
const PM1A_EN = 0x602;
const PM1A_CNT = 0x604;
const PM_TMR = 0x608;

describe('acpi-pm', () => {
  describe('layout', () => {
    it('puts PM1a_EVT_BLK at 0x600, PM1a_CNT_BLK at 0x604 and PM_TMR_BLK at 0x608 (QEMU PIIX4 with SeaBIOS)', () => {
      const { pio } = rig();
      for (const port of [0x600, 0x603, 0x604, 0x605, 0x608, 0x60b]) expect(pio.find(port)?.owner, `0x${port.toString(16)}`).to.equal('pm');
      for (const port of [0x606, 0x607, 0x60c]) expect(pio.find(port), `0x${port.toString(16)}`).to.equal(undefined);
    });

    it('moves with the base property', () => {
      const { pio } = rig({ base: '0xb000' });
      expect(pio.find(0xb004)?.owner).to.equal('pm');
      expect(pio.find(0x604)).to.equal(undefined);
    });

    it('releases its ports on unrealize', () => {
      const { pio, pm } = rig();
      pm.unrealize();
      expect(pio.find(0x604)).to.equal(undefined);
    });
  });

  describe('PM1 control: sleep', () => {
    it('SLP_EN with SLP_TYP 0 (S5 in QEMU\'s PIIX4 DSDT) powers off', () => {
      const { out, shutdowns } = rig();
      out(PM1A_CNT, 2, SLP_EN | (0 << 10));
      expect(shutdowns).to.deep.equal(['guest powered off (ACPI S5)']);
    });

    it('a byte write of the upper half with SLP_EN merges with the lower half and powers off', () => {
      const { out, in: inp, shutdowns } = rig();
      out(PM1A_CNT, 1, SCI_EN);
      out(PM1A_CNT + 1, 1, SLP_EN >> 8);
      expect(shutdowns).to.have.length(1);
      expect(inp(PM1A_CNT, 2)).to.equal(SCI_EN);
    });

    it('SLP_TYP 2 (QEMU\'s S4) powers off as well', () => {
      const { out, shutdowns } = rig();
      out(PM1A_CNT, 2, SLP_EN | (2 << 10));
      expect(shutdowns).to.deep.equal(['guest powered off (ACPI S4, hibernate)']);
    });

    it('SLP_TYP 1 (S3 suspend) is not supported: the guest keeps running', () => {
      const { out, shutdowns } = rig();
      out(PM1A_CNT, 2, SLP_EN | (1 << 10));
      expect(shutdowns).to.deep.equal([]);
    });

    it('SLP_TYP without SLP_EN only sets the type', () => {
      const { out, in: inp, shutdowns } = rig();
      out(PM1A_CNT, 2, 5 << 10);
      expect(shutdowns).to.deep.equal([]);
      expect(inp(PM1A_CNT, 2)).to.equal(5 << 10);
    });

    it('SLP_EN and GBL_RLS are write-only and read as 0; SCI_EN reads back', () => {
      const { out, in: inp } = rig();
      out(PM1A_CNT, 2, SLP_EN | 0x0004 | SCI_EN | (3 << 10));
      expect(inp(PM1A_CNT, 2)).to.equal(SCI_EN | (3 << 10));
    });
  });

  describe('PM timer', () => {
    it('counts at 3.579545 MHz of VM run time', () => {
      const { in: inp, clock } = rig();
      expect(inp(PM_TMR, 4)).to.equal(0);
      clock.ns = 1n * S;
      expect(inp(PM_TMR, 4)).to.equal(3_579_545);
      clock.ns = 1_000n;
      expect(inp(PM_TMR, 4)).to.equal(3); // 3.58 ticks per µs, rounded down
    });

    it('is 24 bits wide: wraps to 0 with the upper byte reading 0', () => {
      const { in: inp, clock } = rig();
      clock.ns = (0x1000005n * S) / 3_579_545n + 1n;
      expect(inp(PM_TMR, 4)).to.equal(5);
    });

    it('byte reads return the bytes of the counter', () => {
      const { in: inp, clock } = rig();
      clock.ns = 2n * S; // 7159090 = 0x6d3d32
      expect([inp(PM_TMR, 1), inp(PM_TMR + 1, 1), inp(PM_TMR + 2, 1), inp(PM_TMR + 3, 1)]).to.deep.equal([0x32, 0x3d, 0x6d, 0]);
    });

    it('ignores writes', () => {
      const { out, in: inp, clock } = rig();
      clock.ns = 1n * S;
      out(PM_TMR, 4, 0);
      expect(inp(PM_TMR, 4)).to.equal(3_579_545);
    });
  });

  describe('PM1 status and enable', () => {
    it('TMR_STS sets when bit 23 of the counter toggles and clears when 1 is written to it', () => {
      const { out, in: inp, clock } = rig();
      expect(inp(PM1A_STS, 2) & TMR_STS).to.equal(0);
      clock.ns = (0x800000n * S) / 3_579_545n + 1n; // 2.34 s
      expect(inp(PM1A_STS, 2) & TMR_STS).to.equal(TMR_STS);
      out(PM1A_STS, 2, 0); // writing 0 leaves it
      expect(inp(PM1A_STS, 2) & TMR_STS).to.equal(TMR_STS);
      out(PM1A_STS, 2, TMR_STS);
      expect(inp(PM1A_STS, 2) & TMR_STS).to.equal(0);
      clock.ns = (0x1000000n * S) / 3_579_545n + 1n; // the next toggle
      expect(inp(PM1A_STS, 2) & TMR_STS).to.equal(TMR_STS);
    });

    it('PM1_EN keeps what is written, also through a 32-bit access of the whole block', () => {
      const { out, in: inp } = rig();
      out(PM1A_EN, 2, TMR_EN | 0x0100);
      expect(inp(PM1A_EN, 2)).to.equal(TMR_EN | 0x0100);
      out(PM1A_STS, 4, 0x0020 << 16);
      expect(inp(PM1A_STS, 4) >>> 16).to.equal(0x0020);
    });

    it('reset clears status, enables and control', () => {
      const { out, in: inp, pm, clock } = rig();
      out(PM1A_EN, 2, TMR_EN);
      out(PM1A_CNT, 2, SCI_EN);
      clock.ns = 3n * S;
      pm.reset();
      expect([inp(PM1A_STS, 2), inp(PM1A_EN, 2), inp(PM1A_CNT, 2)]).to.deep.equal([0, 0, 0]);
    });
  });
});
