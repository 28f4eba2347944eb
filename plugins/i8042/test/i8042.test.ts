/// <reference types="mocha" />
import { expect } from 'chai';
import { parseProperties, type AddressSpace } from '@tsvmm/core';
import { createTestDeviceContext, inb, outb } from '@tsvmm/core/testing';
import {
  CMD_KBD_DISABLE,
  CMD_KBD_ENABLE,
  CMD_KBD_TEST,
  CMD_READ_CTR,
  CMD_READ_OUTPORT,
  CMD_SELF_TEST,
  CMD_WRITE_CTR,
  CMD_WRITE_OUTPORT,
  i8042,
  OUTPORT_A20,
  STATUS_AUX_OBF,
  STATUS_CMD,
  STATUS_IBF,
  STATUS_OBF,
  STATUS_SYS,
  type I8042,
} from '../src/index.js';

interface Rig {
  pio: AddressSpace;
  kbc: I8042;
  resets: string[];
  inb(port: number): number;
  outb(port: number, v: number): void;
  /** send a controller command and read its one-byte answer */
  ask(command: number): number;
}

function rig(props: Record<string, unknown> = {}): Rig {
  const { ctx, pio, resets } = createTestDeviceContext();
  const kbc = i8042.create('i8042', parseProperties(i8042.properties, props, 'i8042')) as I8042;
  kbc.realize(ctx);
  const ask = (command: number): number => {
    outb(pio, 0x64, command);
    expect(inb(pio, 0x64) & STATUS_OBF, `answer to 0x${command.toString(16)}`).to.equal(STATUS_OBF);
    return inb(pio, 0x60);
  };
  return { pio, kbc, resets, inb: (port) => inb(pio, port), outb: (port, v) => outb(pio, port, v), ask };
}

describe('i8042', () => {
  describe('status register', () => {
    it('after power-on: system flag set, input buffer empty, output buffer empty', () => {
      const { inb } = rig();
      const status = inb(0x64);
      expect(status & STATUS_SYS).to.equal(STATUS_SYS);
      expect(status & (STATUS_IBF | STATUS_OBF)).to.equal(0);
    });

    it('bit 3 tells whether the last write went to the command or the data port', () => {
      const { inb, outb } = rig();
      outb(0x64, CMD_WRITE_CTR);
      expect(inb(0x64) & STATUS_CMD).to.equal(STATUS_CMD);
      outb(0x60, 0x61);
      expect(inb(0x64) & STATUS_CMD).to.equal(0);
    });

    it('reading the data port empties the output buffer', () => {
      const { inb, outb } = rig();
      outb(0x64, CMD_KBD_TEST);
      inb(0x60);
      expect(inb(0x64) & STATUS_OBF).to.equal(0);
    });
  });

  describe('controller commands', () => {
    it('0x20 reads the command byte, which starts as SeaBIOS leaves it (0x61)', () => {
      expect(rig().ask(CMD_READ_CTR)).to.equal(0x61);
    });

    it('0x60 writes the command byte', () => {
      const { outb, ask } = rig();
      outb(0x64, CMD_WRITE_CTR);
      outb(0x60, 0x47);
      expect(ask(CMD_READ_CTR)).to.equal(0x47);
    });

    it('0xAA self test answers 0x55', () => {
      expect(rig().ask(CMD_SELF_TEST)).to.equal(0x55);
    });

    it('0xAB keyboard interface test answers 0x00', () => {
      expect(rig().ask(CMD_KBD_TEST)).to.equal(0x00);
    });

    it('0xAD / 0xAE disable and enable the keyboard (command byte bit 4)', () => {
      const { outb, ask } = rig();
      outb(0x64, CMD_KBD_DISABLE);
      expect(ask(CMD_READ_CTR) & 0x10).to.equal(0x10);
      outb(0x64, CMD_KBD_ENABLE);
      expect(ask(CMD_READ_CTR) & 0x10).to.equal(0);
    });

    it('0xA7 / 0xA8 disable and enable the mouse port (command byte bit 5)', () => {
      const { outb, ask } = rig();
      outb(0x64, 0xa8);
      expect(ask(CMD_READ_CTR) & 0x20).to.equal(0);
      outb(0x64, 0xa7);
      expect(ask(CMD_READ_CTR) & 0x20).to.equal(0x20);
    });

    it('0xD0 reads the output port: reset line high, A20 on', () => {
      expect(rig().ask(CMD_READ_OUTPORT) & 0x03).to.equal(0x03);
    });

    it('0xD1 writes the output port; 0xDD / 0xDF turn A20 off and on', () => {
      const { outb, ask } = rig();
      outb(0x64, CMD_WRITE_OUTPORT);
      outb(0x60, 0xcd); // bit 1 (A20) clear, bit 0 (reset) high
      expect(ask(CMD_READ_OUTPORT)).to.equal(0xcd);
      outb(0x64, 0xdf);
      expect(ask(CMD_READ_OUTPORT) & OUTPORT_A20).to.equal(OUTPORT_A20);
      outb(0x64, 0xdd);
      expect(ask(CMD_READ_OUTPORT) & OUTPORT_A20).to.equal(0);
    });

    it('0xD2 / 0xD3 put a byte in the output buffer as if from the keyboard / the mouse', () => {
      const { inb, outb } = rig();
      outb(0x64, 0xd2);
      outb(0x60, 0x1c);
      expect(inb(0x64) & (STATUS_OBF | STATUS_AUX_OBF)).to.equal(STATUS_OBF);
      expect(inb(0x60)).to.equal(0x1c);
      outb(0x64, 0xd3);
      outb(0x60, 0x08);
      expect(inb(0x64) & (STATUS_OBF | STATUS_AUX_OBF)).to.equal(STATUS_OBF | STATUS_AUX_OBF);
      expect(inb(0x60)).to.equal(0x08);
    });

    it('bytes for the absent keyboard are dropped without an answer', () => {
      const { inb, outb } = rig();
      outb(0x60, 0xff); // keyboard reset
      expect(inb(0x64) & STATUS_OBF).to.equal(0);
    });
  });

  describe('system reset', () => {
    it('0xFE written to port 0x64 resets the machine', () => {
      const { outb, resets } = rig();
      outb(0x64, 0xfe);
      expect(resets).to.deep.equal(['keyboard controller reset (0xFE written to port 0x64)']);
    });

    it('any pulse command with bit 0 clear resets; with bit 0 set it does nothing', () => {
      const { outb, resets } = rig();
      outb(0x64, 0xff);
      outb(0x64, 0xf1);
      expect(resets).to.have.length(0);
      outb(0x64, 0xf0);
      expect(resets).to.have.length(1);
    });

    it('writing the output port with bit 0 clear resets the machine', () => {
      const { outb, resets } = rig();
      outb(0x64, CMD_WRITE_OUTPORT);
      outb(0x60, 0xce);
      expect(resets).to.have.length(1);
      expect(resets[0]).to.match(/output port/);
    });

    it('port 0x92: a rising edge on bit 0 resets; bit 1 (A20) reads back', () => {
      const { inb, outb, resets } = rig();
      expect(inb(0x92)).to.equal(0x02);
      outb(0x92, 0x00);
      expect(inb(0x92)).to.equal(0x00);
      outb(0x92, 0x03);
      expect(resets).to.deep.equal(['fast reset (bit 0 set in port 0x92)']);
      outb(0x92, 0x03); // no new edge
      expect(resets).to.have.length(1);
    });

    it('port92=off leaves port 0x92 to another device', () => {
      const { pio } = rig({ port92: 'off' });
      expect(pio.find(0x92)).to.equal(undefined);
      expect(pio.find(0x60)?.owner).to.equal('i8042');
    });
  });

  describe('reset', () => {
    it('restores the command byte and output port, ends the port 0x92 reset pulse and keeps its A20 bit', () => {
      const { kbc, inb, outb, ask } = rig();
      outb(0x64, CMD_WRITE_CTR);
      outb(0x60, 0x00);
      outb(0x92, 0x01);
      kbc.reset();
      expect(ask(CMD_READ_CTR)).to.equal(0x61);
      expect(inb(0x92)).to.equal(0x00);
    });

    it('releases its ports on unrealize', () => {
      const { kbc, pio } = rig();
      kbc.unrealize();
      expect([0x60, 0x64, 0x92].map((p) => pio.find(p))).to.deep.equal([undefined, undefined, undefined]);
    });
  });
});
