/**
 * Configuration Mechanism #1 (PCI Local Bus 3.0 §3.2.2.3.2): CONFIG_ADDRESS
 * at I/O port 0xCF8 (bit 31 enable, bits 23:16 bus, 15:11 device, 10:8
 * function, 7:2 register) and CONFIG_DATA at 0xCFC-0xCFF (byte, word or
 * dword; the port's low two bits select the byte in the register dword).
 *
 * CONFIG_ADDRESS is latched only by a dword write, as on the i440FX and in
 * QEMU; narrower writes to 0xCF8-0xCFB are not address writes (0xCF9 is the
 * PIIX3 Reset Control Register, which the owner may plug in). A cycle with
 * the enable bit clear, to an absent function, or to a bus no bridge
 * forwards to reads all ones and writes nothing (master abort).
 */
import type { BusDevice } from '@tsvmm/core';
import type { PciBus } from './bus.js';
import { PCI_CONFIG_SPACE_SIZE } from './constants.js';
import { readLe, writeLe } from './le.js';

export const PCI_CONFIG_ADDRESS_PORT = 0xcf8;
export const PCI_CONFIG_DATA_PORT = 0xcfc;
/** bytes the mechanism decodes from 0xCF8 */
export const PCI_CONFIG_PORTS_LENGTH = 8;
export const PCI_CONFIG_ADDRESS_ENABLE = 0x80000000;

/** Configuration reads and writes by bus number and devfn, as firmware and the guest make them. */
export interface PciConfigAccess {
  /** all ones (of `size` bytes) when nothing answers */
  configRead(bus: number, devfn: number, offset: number, size: 1 | 2 | 4): number;
  configWrite(bus: number, devfn: number, offset: number, size: 1 | 2 | 4, value: number): void;
}

function allOnes(size: number): number {
  return size === 4 ? 0xffffffff : (1 << (8 * size)) - 1;
}

export class PciConfigMechanism1 implements BusDevice, PciConfigAccess {
  /** CONFIG_ADDRESS as last written */
  address = 0;

  constructor(
    private readonly root: PciBus,
    /** the byte at 0xCF9 (PIIX3 Reset Control Register), if the chipset has one */
    private readonly port0xcf9?: BusDevice,
  ) {}

  configRead(bus: number, devfn: number, offset: number, size: 1 | 2 | 4): number {
    const fn = this.root.route(bus, devfn);
    if (fn === undefined || offset < 0 || offset + size > PCI_CONFIG_SPACE_SIZE) return allOnes(size);
    return fn.config.read(offset, size);
  }

  configWrite(bus: number, devfn: number, offset: number, size: 1 | 2 | 4, value: number): void {
    const fn = this.root.route(bus, devfn);
    if (fn === undefined || offset < 0 || offset + size > PCI_CONFIG_SPACE_SIZE) return;
    fn.config.write(offset, size, value);
  }

  /** `offset` is from 0xCF8. */
  read(offset: number, data: Uint8Array): void {
    const size = data.length;
    if (offset < 4) {
      if (offset === 1 && size === 1 && this.port0xcf9 !== undefined) {
        this.port0xcf9.read(0, data);
        return;
      }
      if (offset + size > 4) {
        data.fill(0xff);
        return;
      }
      writeLe(data, Math.floor(this.address / 2 ** (8 * offset)) % 2 ** (8 * size));
      return;
    }
    if (!this.dataSize(size) || (this.address & PCI_CONFIG_ADDRESS_ENABLE) === 0 || offset + size > 8) {
      data.fill(0xff);
      return;
    }
    const { bus, devfn, reg } = this.decode(offset);
    writeLe(data, this.configRead(bus, devfn, reg, size));
  }

  write(offset: number, data: Uint8Array): void {
    const size = data.length;
    if (offset < 4) {
      if (offset === 0 && size === 4) this.address = readLe(data);
      else if (offset === 1 && size === 1) this.port0xcf9?.write(0, data);
      return;
    }
    if (!this.dataSize(size) || (this.address & PCI_CONFIG_ADDRESS_ENABLE) === 0 || offset + size > 8) return;
    const { bus, devfn, reg } = this.decode(offset);
    this.configWrite(bus, devfn, reg, size, readLe(data));
  }

  private dataSize(size: number): size is 1 | 2 | 4 {
    return size === 1 || size === 2 || size === 4;
  }

  private decode(offset: number): { bus: number; devfn: number; reg: number } {
    const a = this.address;
    return { bus: (a >>> 16) & 0xff, devfn: (a >>> 8) & 0xff, reg: (a & 0xfc) + (offset - 4) };
  }
}
