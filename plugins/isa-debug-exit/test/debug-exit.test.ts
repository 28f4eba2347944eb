/// <reference types="mocha" />
import { expect } from 'chai';
import { ConfigError, parseProperties, type AddressSpace } from '@tsvmm/core';
import { createTestDeviceContext } from '@tsvmm/core/testing';
import { isaDebugExit, type IsaDebugExit } from '../src/index.js';

interface Rig {
  pio: AddressSpace;
  device: IsaDebugExit;
  exits: { status: number; reason: string }[];
}

function rig(props: Record<string, unknown> = {}): Rig {
  const { ctx, pio, exits } = createTestDeviceContext();
  const device = isaDebugExit.create('debugexit0', parseProperties(isaDebugExit.properties, props, 'isa-debug-exit')) as IsaDebugExit;
  device.realize(ctx);
  return { pio, device, exits };
}

describe('isa-debug-exit', () => {
  it('defaults to QEMU\'s iobase 0x501 and iosize 2', () => {
    const { pio, device } = rig();
    expect(device.describe()).to.deep.equal({ iobase: 0x501, iosize: 2 });
    expect(pio.find(0x501)?.owner).to.equal('debugexit0');
    expect(pio.find(0x502)?.owner).to.equal('debugexit0');
    expect(pio.find(0x503)).to.equal(undefined);
  });

  it('takes the command-line form iobase=0xf4,iosize=0x4', () => {
    const { pio } = rig({ iobase: '0xf4', iosize: '0x4' });
    expect(pio.find(0xf4)?.owner).to.equal('debugexit0');
    expect(pio.find(0xf7)?.owner).to.equal('debugexit0');
    expect(pio.find(0xf8)).to.equal(undefined);
  });

  it('a byte write of v exits with status (v << 1) | 1', () => {
    const { pio, exits } = rig({ iobase: 0xf4, iosize: 4 });
    pio.write(0xf4, Uint8Array.of(0x10));
    expect(exits).to.have.length(1);
    expect(exits[0]?.status).to.equal(0x21);
    expect(exits[0]?.reason).to.match(/0x10.*0xf4/);
  });

  it('a write of 0 exits with status 1', () => {
    const { pio, exits } = rig({ iobase: 0xf4, iosize: 4 });
    pio.write(0xf4, Uint8Array.of(0));
    expect(exits[0]?.status).to.equal(1);
  });

  it('a write anywhere in the range, of any width, uses the written value', () => {
    const { pio, exits } = rig({ iobase: 0xf4, iosize: 4 });
    pio.write(0xf6, Uint8Array.of(0x03, 0x00)); // 16-bit 0x0003 at offset 2
    pio.write(0xf4, Uint8Array.of(0x7f, 0x00, 0x00, 0x00)); // 32-bit 0x7f
    expect(exits.map((e) => e.status)).to.deep.equal([7, 0xff]);
  });

  it('the status keeps the low 8 bits, as the OS does with QEMU\'s exit()', () => {
    const { pio, exits } = rig({ iobase: 0xf4, iosize: 4 });
    pio.write(0xf4, Uint8Array.of(0x80)); // (0x80 << 1) | 1 = 0x101
    pio.write(0xf4, Uint8Array.of(0xff, 0xff, 0xff, 0xff));
    expect(exits.map((e) => e.status)).to.deep.equal([0x01, 0xff]);
  });

  it('reads return all ones, like an unclaimed port', () => {
    const { pio, exits } = rig();
    const data = new Uint8Array(2);
    pio.read(0x501, data);
    expect([...data]).to.deep.equal([0xff, 0xff]);
    expect(exits).to.have.length(0);
  });

  it('rejects a zero size and a range past the end of the port space', () => {
    expect(() => rig({ iosize: 0 })).to.throw(ConfigError, /iosize/);
    expect(() => rig({ iobase: 0xfffe, iosize: 4 })).to.throw(ConfigError, /iosize/);
  });

  it('releases its ports on unrealize', () => {
    const { pio, device } = rig();
    device.unrealize();
    expect(pio.find(0x501)).to.equal(undefined);
  });
});
