/// <reference types="mocha" />
import { expect } from 'chai';
import fc from 'fast-check';
import { FwCfgKey, parseProperties, type AddressSpace, type FirmwareConfig, type GuestMemory } from '@tsvmm/core';
import { createTestDeviceContext, type TestDeviceContextOptions } from '@tsvmm/core/testing';
import { fwCfg, FW_CFG_DMA_CTL_ERROR, FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SELECT, FW_CFG_DMA_CTL_SKIP, FW_CFG_DMA_CTL_WRITE, type FwCfgIo } from '../src/index.js';

const SEL = 0x510;
const DATA = 0x511;
const DMA = 0x514;
const RAM = 0x10000;
/** bytes after the end of guest RAM in the same SharedArrayBuffer, which no access may touch */
const SENTINEL = 0x1000;

interface Rig {
  pio: AddressSpace;
  memory: GuestMemory;
  fw: FirmwareConfig;
  device: FwCfgIo;
  /** the whole buffer behind RAM, sentinel included */
  bytes: Uint8Array;
  /** true while no byte of the sentinel has changed */
  sentinelIntact(): boolean;
}

function rig(props: Record<string, unknown> = {}, ramRegions?: TestDeviceContextOptions['ramRegions']): Rig {
  const { ctx, pio, memory, fwCfg: fw, ramBuffer, guardIntact } = createTestDeviceContext({ ramSize: RAM, guardSize: SENTINEL, ramRegions });
  const device = fwCfg.create('fw_cfg', parseProperties(fwCfg.properties, props, 'fw_cfg')) as FwCfgIo;
  device.realize(ctx);
  return { pio, memory, fw, device, bytes: new Uint8Array(ramBuffer), sentinelIntact: guardIntact };
}

function select(pio: AddressSpace, key: number): void {
  pio.write(SEL, Uint8Array.of(key & 0xff, key >> 8));
}

function readData(pio: AddressSpace, n: number): number[] {
  const out: number[] = [];
  const b = new Uint8Array(1);
  for (let i = 0; i < n; i++) {
    pio.read(DATA, b);
    out.push(b[0] ?? -1);
  }
  return out;
}

function be32(v: number): Uint8Array {
  return Uint8Array.of(v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff);
}

/** Put an FWCfgDmaAccess at `at` (big-endian fields). */
function putDescriptor(memory: GuestMemory, at: number, control: number, length: number, address: bigint): void {
  const d = new Uint8Array(16);
  const v = new DataView(d.buffer);
  v.setUint32(0, control >>> 0, false);
  v.setUint32(4, length >>> 0, false);
  v.setBigUint64(8, BigInt.asUintN(64, address), false);
  memory.write(at, d);
}

/** Start a transfer the way Linux and SeaBIOS do: high half, then low half. */
function kick(pio: AddressSpace, descriptor: bigint): void {
  pio.write(DMA, be32(Number(descriptor >> 32n)));
  pio.write(DMA + 4, be32(Number(descriptor & 0xffffffffn)));
}

function control(memory: GuestMemory, at: number): number {
  const c = new Uint8Array(4);
  memory.read(at, c);
  return new DataView(c.buffer).getUint32(0, false);
}

describe('fw_cfg', () => {
  describe('selector and data registers', () => {
    it('the signature item (key 0x0000) reads "QEMU"', () => {
      const { pio } = rig();
      select(pio, FwCfgKey.SIGNATURE);
      expect(String.fromCharCode(...readData(pio, 4))).to.equal('QEMU');
    });

    it('the ID item (key 0x0001) has bit 0 (traditional) and bit 1 (DMA) set', () => {
      const { pio } = rig();
      select(pio, FwCfgKey.ID);
      expect(readData(pio, 4)).to.deep.equal([0x03, 0, 0, 0]);
    });

    it('with dma_enabled=off the ID has only bit 0 and the DMA ports stay unclaimed', () => {
      const { pio } = rig({ dma_enabled: 'off' });
      select(pio, FwCfgKey.ID);
      expect(readData(pio, 4)).to.deep.equal([0x01, 0, 0, 0]);
      expect(pio.find(DMA)).to.equal(undefined);
    });

    it('serves the machine\'s items (RAM_SIZE, NB_CPUS) little-endian', () => {
      const { pio, fw } = rig();
      fw.setU64(FwCfgKey.RAM_SIZE, 0x8000000n);
      fw.setU16(FwCfgKey.NB_CPUS, 2);
      select(pio, FwCfgKey.RAM_SIZE);
      expect(readData(pio, 8)).to.deep.equal([0, 0, 0, 0x08, 0, 0, 0, 0]);
      select(pio, FwCfgKey.NB_CPUS);
      expect(readData(pio, 2)).to.deep.equal([2, 0]);
    });

    it('serves arch-local items such as the E820 table (0x8003)', () => {
      const { pio, fw } = rig();
      fw.setItem(FwCfgKey.E820_TABLE, Uint8Array.of(1, 2, 3));
      select(pio, FwCfgKey.E820_TABLE);
      expect(readData(pio, 3)).to.deep.equal([1, 2, 3]);
    });

    it('reads past the end of an item return 0', () => {
      const { pio } = rig();
      select(pio, FwCfgKey.SIGNATURE);
      expect(readData(pio, 6)).to.deep.equal([0x51, 0x45, 0x4d, 0x55, 0, 0]);
    });

    it('an unknown key reads zeroes', () => {
      const { pio } = rig();
      select(pio, 0x3fff);
      expect(readData(pio, 4)).to.deep.equal([0, 0, 0, 0]);
    });

    it('selecting resets the data offset', () => {
      const { pio } = rig();
      select(pio, FwCfgKey.SIGNATURE);
      readData(pio, 2);
      select(pio, FwCfgKey.SIGNATURE);
      expect(readData(pio, 1)).to.deep.equal([0x51]);
    });

    it('a selector with bit 14 (write channel) set reads the same item', () => {
      const { pio } = rig();
      select(pio, 0x4000 | FwCfgKey.SIGNATURE);
      expect(readData(pio, 1)).to.deep.equal([0x51]);
    });

    it('only a 16-bit write selects; data register writes are ignored', () => {
      const { pio } = rig();
      select(pio, FwCfgKey.SIGNATURE);
      pio.write(SEL, Uint8Array.of(FwCfgKey.ID)); // 8-bit: ignored
      pio.write(DATA, Uint8Array.of(0x99));
      expect(readData(pio, 1)).to.deep.equal([0x51]);
    });

    it('the file directory lists each file (big-endian count, size, select) and the file reads by its key', () => {
      const { pio, fw } = rig();
      fw.addFile('etc/e820', Uint8Array.of(9, 8, 7));
      select(pio, FwCfgKey.FILE_DIR);
      const dir = readData(pio, 4 + 64);
      expect(dir.slice(0, 4)).to.deep.equal([0, 0, 0, 1]);
      expect(dir.slice(4, 8)).to.deep.equal([0, 0, 0, 3]);
      expect(dir.slice(8, 10)).to.deep.equal([0, FwCfgKey.FILE_FIRST]);
      expect(String.fromCharCode(...dir.slice(12, 20))).to.equal('etc/e820');
      select(pio, FwCfgKey.FILE_FIRST);
      expect(readData(pio, 3)).to.deep.equal([9, 8, 7]);
    });

    it('reset selects the signature item at offset 0', () => {
      const { pio, device } = rig();
      select(pio, FwCfgKey.ID);
      readData(pio, 2);
      device.reset();
      expect(device.position).to.deep.equal({ selector: 0, offset: 0 });
      expect(readData(pio, 1)).to.deep.equal([0x51]);
    });
  });

  describe('DMA interface', () => {
    it('reading the DMA address register returns "QEMU CFG"', () => {
      const { pio } = rig();
      const b = new Uint8Array(4);
      pio.read(DMA, b);
      const c = new Uint8Array(4);
      pio.read(DMA + 4, c);
      expect(new TextDecoder().decode(Uint8Array.from([...b, ...c]))).to.equal('QEMU CFG');
    });

    it('SELECT|READ copies the item into guest memory and completes with control 0', () => {
      const { pio, memory } = rig();
      putDescriptor(memory, 0x1000, (FwCfgKey.SIGNATURE << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 4, 0x2000n);
      kick(pio, 0x1000n);
      expect(control(memory, 0x1000)).to.equal(0);
      expect(new TextDecoder().decode(memory.slice(0x2000, 4))).to.equal('QEMU');
    });

    it('a 32-bit descriptor address needs only the write to the low half', () => {
      const { pio, memory } = rig();
      putDescriptor(memory, 0x1000, (FwCfgKey.ID << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 4, 0x2000n);
      pio.write(DMA + 4, be32(0x1000));
      expect(control(memory, 0x1000)).to.equal(0);
      expect([...memory.slice(0x2000, 4)]).to.deep.equal([3, 0, 0, 0]);
    });

    it('the address register is 0 again after an operation', () => {
      const { pio, memory } = rig();
      putDescriptor(memory, 0x1000, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 4, 0x2000n);
      pio.write(DMA, be32(1)); // high half 1: descriptor at 0x1_0000_1000, outside RAM
      pio.write(DMA + 4, be32(0x1000));
      expect(control(memory, 0x1000)).to.equal(FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ); // untouched
      pio.write(DMA + 4, be32(0x1000)); // high half is 0 again
      expect(control(memory, 0x1000)).to.equal(0);
    });

    it('a READ past the end of the item fills the rest with zeroes', () => {
      const { pio, memory } = rig();
      memory.fill(0x2000, 8, 0xee);
      putDescriptor(memory, 0x1000, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 8, 0x2000n);
      kick(pio, 0x1000n);
      expect(control(memory, 0x1000)).to.equal(0);
      expect([...memory.slice(0x2000, 8)]).to.deep.equal([0x51, 0x45, 0x4d, 0x55, 0, 0, 0, 0]);
    });

    it('SKIP advances the data offset without touching memory', () => {
      const { pio, memory } = rig();
      putDescriptor(memory, 0x1000, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP, 2, 0xffffffffffffn);
      kick(pio, 0x1000n);
      expect(control(memory, 0x1000)).to.equal(0);
      expect(readData(pio, 2)).to.deep.equal([0x4d, 0x55]);
    });

    it('DMA and the data register share one offset', () => {
      const { pio, memory } = rig();
      select(pio, FwCfgKey.SIGNATURE);
      readData(pio, 1);
      putDescriptor(memory, 0x1000, FW_CFG_DMA_CTL_READ, 3, 0x2000n);
      kick(pio, 0x1000n);
      expect(new TextDecoder().decode(memory.slice(0x2000, 3))).to.equal('EMU');
    });

    it('WRITE is refused with the error bit: no item is writable', () => {
      const { pio, memory } = rig();
      putDescriptor(memory, 0x1000, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_WRITE, 4, 0x2000n);
      kick(pio, 0x1000n);
      expect(control(memory, 0x1000)).to.equal(FW_CFG_DMA_CTL_ERROR);
    });

    it('a WRITE of length 0 completes without error, as in QEMU', () => {
      const { pio, memory } = rig();
      putDescriptor(memory, 0x1000, FW_CFG_DMA_CTL_WRITE, 0, 0x2000n);
      kick(pio, 0x1000n);
      expect(control(memory, 0x1000)).to.equal(0);
    });

    it('a descriptor without an operation bit completes with nothing moved', () => {
      const { pio, memory } = rig();
      memory.fill(0x2000, 4, 0xee);
      putDescriptor(memory, 0x1000, FW_CFG_DMA_CTL_SELECT | (FwCfgKey.ID << 16), 4, 0x2000n);
      kick(pio, 0x1000n);
      expect(control(memory, 0x1000)).to.equal(0);
      expect([...memory.slice(0x2000, 4)]).to.deep.equal([0xee, 0xee, 0xee, 0xee]);
      expect(readData(pio, 1)).to.deep.equal([3]); // but the select happened
    });

    it('a target outside RAM sets the error bit and writes nothing past RAM', () => {
      const { pio, memory, sentinelIntact } = rig();
      putDescriptor(memory, 0x1000, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 0x100, BigInt(RAM - 0x10));
      kick(pio, 0x1000n);
      expect(control(memory, 0x1000)).to.equal(FW_CFG_DMA_CTL_ERROR);
      expect(sentinelIntact()).to.equal(true);
    });

    it('a descriptor that does not fit in RAM gets the error bit in its control word, if that fits', () => {
      const { pio, memory, bytes } = rig();
      const before = bytes.slice();
      kick(pio, BigInt(RAM - 8));
      expect(control(memory, RAM - 8)).to.equal(FW_CFG_DMA_CTL_ERROR);
      before.set([0, 0, 0, FW_CFG_DMA_CTL_ERROR], RAM - 8);
      kick(pio, BigInt(RAM - 2));
      kick(pio, 0xfffffffffffffff0n);
      expect(bytes).to.deep.equal(before);
    });

    it('a transfer into a hole between RAM regions sets the error bit', () => {
      const { pio, memory } = rig({}, [
        { gpa: 0, size: 0x2000 },
        { gpa: 0x100000, size: 0x1000 },
      ]);
      putDescriptor(memory, 0x100, FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ, 0x10, 0x1ff8n);
      kick(pio, 0x100n);
      expect(control(memory, 0x100)).to.equal(FW_CFG_DMA_CTL_ERROR);
    });

    it('hostile descriptors never throw and never write outside guest RAM (property)', () => {
      const address = fc.oneof(
        fc.bigInt({ min: 0n, max: BigInt(RAM + SENTINEL) }),
        fc.bigInt({ min: BigInt(RAM - 64), max: BigInt(RAM + 64) }),
        fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
      );
      const length = fc.oneof(fc.integer({ min: 0, max: 64 }), fc.integer({ min: 0, max: 0xffffffff }), fc.constant(0xffffffff));
      const control = fc.oneof(
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.constantFrom(FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SKIP, FW_CFG_DMA_CTL_WRITE).map((c) => c | FW_CFG_DMA_CTL_SELECT),
      );
      const access = fc.record({ control, length, address, descriptor: address });
      fc.assert(
        fc.property(fc.array(access, { minLength: 1, maxLength: 8 }), (accesses) => {
          const { pio, memory, fw, sentinelIntact } = rig();
          fw.setItem(FwCfgKey.KERNEL_CMDLINE, new Uint8Array(100).fill(0x42));
          for (const a of accesses) {
            if (a.descriptor + 16n <= BigInt(RAM)) putDescriptor(memory, Number(a.descriptor), a.control, a.length, a.address);
            kick(pio, a.descriptor);
            const c = new Uint8Array(4);
            pio.read(DMA, c);
          }
          expect(sentinelIntact()).to.equal(true);
        }),
        { numRuns: 500 },
      );
    });
  });
});
