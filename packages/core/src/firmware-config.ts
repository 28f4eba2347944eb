/**
 * The items a machine exposes through fw_cfg (qemu/qemu docs/specs/fw_cfg.rst).
 * Chipsets and boot loaders add items and named files here; the fw_cfg device
 * plugin serves them to the guest over its I/O and DMA interfaces.
 */
import { ConfigError } from './errors.js';

/** Selector keys, fw_cfg.rst "Selector (Control) Register" and QEMU's fw_cfg_keys.h. */
export const FwCfgKey = {
  SIGNATURE: 0x00,
  ID: 0x01,
  UUID: 0x02,
  RAM_SIZE: 0x03,
  NOGRAPHIC: 0x04,
  NB_CPUS: 0x05,
  MACHINE_ID: 0x06,
  KERNEL_ADDR: 0x07,
  KERNEL_SIZE: 0x08,
  KERNEL_CMDLINE: 0x09,
  INITRD_ADDR: 0x0a,
  INITRD_SIZE: 0x0b,
  BOOT_DEVICE: 0x0c,
  NUMA: 0x0d,
  BOOT_MENU: 0x0e,
  MAX_CPUS: 0x0f,
  KERNEL_ENTRY: 0x10,
  KERNEL_DATA: 0x11,
  INITRD_DATA: 0x12,
  CMDLINE_ADDR: 0x13,
  CMDLINE_SIZE: 0x14,
  CMDLINE_DATA: 0x15,
  SETUP_ADDR: 0x16,
  SETUP_SIZE: 0x17,
  SETUP_DATA: 0x18,
  FILE_DIR: 0x19,
  FILE_FIRST: 0x20,
  ARCH_LOCAL: 0x8000,
  /** x86: E820 table (FW_CFG_ARCH_LOCAL + 3) */
  E820_TABLE: 0x8003,
} as const;

/** The file directory holds at most this many files (FW_CFG_FILE_SLOTS). */
export const FW_CFG_FILE_SLOTS = 0x20;
export const FW_CFG_MAX_FILE_NAME = 56;

export interface FwCfgFile {
  name: string;
  select: number;
  data: Uint8Array;
}

export class FirmwareConfig {
  private readonly items = new Map<number, Uint8Array>();
  private readonly files: FwCfgFile[] = [];

  setItem(key: number, data: Uint8Array): void {
    if (!Number.isInteger(key) || key < 0 || key > 0xffff || (key >= FwCfgKey.FILE_FIRST && key < FwCfgKey.FILE_FIRST + FW_CFG_FILE_SLOTS)) {
      throw new ConfigError(`fw_cfg key 0x${key.toString(16)} is not a settable item key`);
    }
    this.items.set(key, data);
  }

  setU16(key: number, v: number): void {
    const b = new Uint8Array(2);
    new DataView(b.buffer).setUint16(0, v, true);
    this.setItem(key, b);
  }

  setU32(key: number, v: number): void {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, v, true);
    this.setItem(key, b);
  }

  setU64(key: number, v: bigint): void {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v, true);
    this.setItem(key, b);
  }

  setString(key: number, s: string): void {
    this.setItem(key, new TextEncoder().encode(`${s}\0`));
  }

  /** Add (or replace) a named file, e.g. `opt/org.example/config` or `etc/e820`. */
  addFile(name: string, data: Uint8Array): FwCfgFile {
    const nameBytes = new TextEncoder().encode(name);
    if (name === '' || nameBytes.length >= FW_CFG_MAX_FILE_NAME) {
      throw new ConfigError(`fw_cfg file name '${name}' must be 1-${FW_CFG_MAX_FILE_NAME - 1} bytes`);
    }
    const existing = this.files.find((f) => f.name === name);
    if (existing) {
      existing.data = data;
      return existing;
    }
    if (this.files.length >= FW_CFG_FILE_SLOTS) {
      throw new ConfigError(`fw_cfg has room for ${FW_CFG_FILE_SLOTS} files; '${name}' does not fit`);
    }
    // The directory is sorted by name, as QEMU keeps it; selectors follow the order.
    const file: FwCfgFile = { name, select: 0, data };
    const at = this.files.findIndex((f) => f.name > name);
    this.files.splice(at < 0 ? this.files.length : at, 0, file);
    this.files.forEach((f, i) => {
      f.select = FwCfgKey.FILE_FIRST + i;
    });
    return file;
  }

  listFiles(): readonly FwCfgFile[] {
    return this.files;
  }

  /** The contents behind a selector, or undefined if nothing is there (reads then return zeroes). */
  lookup(key: number): Uint8Array | undefined {
    if (key === FwCfgKey.FILE_DIR) return this.fileDirectory();
    if (key >= FwCfgKey.FILE_FIRST && key < FwCfgKey.FILE_FIRST + FW_CFG_FILE_SLOTS) {
      return this.files[key - FwCfgKey.FILE_FIRST]?.data;
    }
    return this.items.get(key);
  }

  /** FW_CFG_FILE_DIR: big-endian count, then {size be32, select be16, reserved be16, name[56]} per file. */
  fileDirectory(): Uint8Array {
    const out = new Uint8Array(4 + 64 * this.files.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, this.files.length, false);
    this.files.forEach((f, i) => {
      const base = 4 + 64 * i;
      dv.setUint32(base, f.data.length, false);
      dv.setUint16(base + 4, f.select, false);
      out.set(new TextEncoder().encode(f.name), base + 8);
    });
    return out;
  }
}
