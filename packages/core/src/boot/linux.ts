/**
 * Linux/x86 boot protocol loader for bzImage kernels, entered at the 64-bit
 * entry point (torvalds/linux Documentation/arch/x86/boot.rst: "The real-mode
 * kernel header", "Details of header fields", "64-bit Boot Protocol").
 *
 * Guest RAM after loading:
 *   0x00500  GDT (__BOOT_CS 0x10, __BOOT_DS 0x18)
 *   0x07000  boot_params ("zero page"), with the setup header copied in and the E820 table
 *   0x09000  PML4, 0x0a000 PDPT, 0x0b000-0x0efff page directories: 4 GiB identity map, 2 MiB pages
 *   0x20000  kernel command line
 *   load address (0x100000 for relocatable kernels, else pref_address): the protected-mode kernel
 *   initrd at the highest page-aligned address below min(initrd_addr_max, RAM below 4 GiB)
 */
import type { GuestMemory } from '../guest-memory.js';
import { BootError } from '../errors.js';
import type { MemoryLayout } from '../memory-map.js';
import type { LongModeEntry } from './entry.js';

export const HDRS_MAGIC = 0x53726448; // "HdrS"
export const BOOT_FLAG = 0xaa55;

/** setup header field offsets within the image and within boot_params (boot.rst) */
export const Hdr = {
  setup_sects: 0x1f1,
  boot_flag: 0x1fe,
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  type_of_loader: 0x210,
  loadflags: 0x211,
  code32_start: 0x214,
  ramdisk_image: 0x218,
  ramdisk_size: 0x21c,
  heap_end_ptr: 0x224,
  cmd_line_ptr: 0x228,
  initrd_addr_max: 0x22c,
  kernel_alignment: 0x230,
  relocatable_kernel: 0x234,
  xloadflags: 0x236,
  cmdline_size: 0x238,
  pref_address: 0x258,
  init_size: 0x260,
} as const;

/** boot_params fields outside the setup header (arch/x86/include/uapi/asm/bootparam.h) */
export const BootParams = {
  ext_ramdisk_image: 0x0c0,
  ext_ramdisk_size: 0x0c4,
  ext_cmd_line_ptr: 0x0c8,
  e820_entries: 0x1e8,
  e820_table: 0x2d0,
} as const;

export const E820_MAX_ENTRIES_ZEROPAGE = 128;
export const LOADED_HIGH = 0x01;
export const XLF_KERNEL_64 = 0x01;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 0x02;

export const GDT_ADDR = 0x500;
export const BOOT_PARAMS_ADDR = 0x7000;
export const PML4_ADDR = 0x9000;
export const PDPT_ADDR = 0xa000;
export const PD_ADDR = 0xb000;
export const CMDLINE_ADDR = 0x20000;
export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;

export interface BzImageHeader {
  setupSects: number;
  version: number;
  loadflags: number;
  xloadflags: number;
  relocatable: boolean;
  kernelAlignment: number;
  initrdAddrMax: number;
  cmdlineSize: number;
  prefAddress: number;
  initSize: number;
  /** byte length of the setup header from 0x1f1 */
  headerLength: number;
}

/** Parse the setup header, or return undefined if the file is not a bzImage. */
export function parseBzImageHeader(image: Uint8Array): BzImageHeader | undefined {
  if (image.length < 0x268) return undefined;
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (dv.getUint32(Hdr.header, true) !== HDRS_MAGIC) return undefined;
  if (dv.getUint16(Hdr.boot_flag, true) !== BOOT_FLAG) return undefined;
  const version = dv.getUint16(Hdr.version, true);
  const setupSects = dv.getUint8(Hdr.setup_sects) || 4;
  return {
    setupSects,
    version,
    loadflags: dv.getUint8(Hdr.loadflags),
    xloadflags: version >= 0x020c ? dv.getUint16(Hdr.xloadflags, true) : 0,
    relocatable: version >= 0x0205 && dv.getUint8(Hdr.relocatable_kernel) !== 0,
    kernelAlignment: version >= 0x0205 ? dv.getUint32(Hdr.kernel_alignment, true) : 0x100000,
    initrdAddrMax: version >= 0x0203 ? dv.getUint32(Hdr.initrd_addr_max, true) : 0x37ffffff,
    cmdlineSize: version >= 0x0206 ? dv.getUint32(Hdr.cmdline_size, true) : 255,
    prefAddress: version >= 0x020a ? Number(dv.getBigUint64(Hdr.pref_address, true)) : 0x100000,
    initSize: version >= 0x020a ? dv.getUint32(Hdr.init_size, true) : 0,
    headerLength: 0x202 + dv.getUint8(Hdr.jump + 1) - Hdr.setup_sects,
  };
}

export interface LinuxInput {
  file: string;
  image: Uint8Array;
  cmdline: string;
  initrd?: { file: string; data: Uint8Array };
}

export interface LinuxResult {
  entry: LongModeEntry;
  loadAddr: number;
  kernelSize: number;
  initrdAddr: number | undefined;
  header: BzImageHeader;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

export function loadLinux(mem: GuestMemory, layout: MemoryLayout, input: LinuxInput): LinuxResult {
  const { file, image } = input;
  const hdr = parseBzImageHeader(image);
  if (hdr === undefined) throw new BootError(`${file}: not a bzImage (no 'HdrS' setup header)`);
  if (hdr.version < 0x020c || (hdr.xloadflags & XLF_KERNEL_64) === 0) {
    throw new BootError(
      `${file}: boot protocol ${hdr.version >> 8}.${(hdr.version & 0xff).toString().padStart(2, '0')} kernel has no 64-bit entry point (needs protocol 2.12+ with XLF_KERNEL_64)`,
    );
  }
  if ((hdr.loadflags & LOADED_HIGH) === 0) throw new BootError(`${file}: is a zImage (not loaded high); only bzImage is supported`);
  const setupSize = (hdr.setupSects + 1) * 512;
  if (setupSize >= image.length) throw new BootError(`${file}: setup_sects (${hdr.setupSects}) claims more than the file holds`);
  const kernel = image.subarray(setupSize);
  const loadAddr = hdr.relocatable ? 0x100000 : hdr.prefAddress;
  const footprint = Math.max(kernel.length, hdr.initSize);
  if (loadAddr < 0x100000 || loadAddr + footprint > layout.belowFourGiB) {
    throw new BootError(
      `${file}: kernel needs ${hex(loadAddr)}-${hex(loadAddr + footprint)} but RAM below 4 GiB ends at ${hex(layout.belowFourGiB)}`,
      { hint: 'give the VM more memory (-m)' },
    );
  }
  mem.write(loadAddr, kernel);

  // Command line.
  const cmdline = new TextEncoder().encode(`${input.cmdline}\0`);
  if (cmdline.length - 1 > hdr.cmdlineSize) {
    throw new BootError(`kernel command line is ${cmdline.length - 1} bytes; ${file} accepts at most ${hdr.cmdlineSize}`);
  }
  mem.write(CMDLINE_ADDR, cmdline);

  // boot_params: zeroed, then the setup header copied from the image.
  const bp = new Uint8Array(4096);
  const bpDv = new DataView(bp.buffer);
  bp.set(image.subarray(Hdr.setup_sects, Hdr.setup_sects + hdr.headerLength), Hdr.setup_sects);
  bpDv.setUint8(Hdr.type_of_loader, 0xff);
  bpDv.setUint32(Hdr.cmd_line_ptr, CMDLINE_ADDR, true);
  bpDv.setUint32(Hdr.code32_start, loadAddr, true);

  let initrdAddr: number | undefined;
  if (input.initrd !== undefined) {
    const size = input.initrd.data.length;
    const ceiling = Math.min(hdr.initrdAddrMax + 1, layout.belowFourGiB);
    initrdAddr = Math.floor((ceiling - size) / 4096) * 4096;
    if (initrdAddr < loadAddr + footprint) {
      throw new BootError(`initrd ${input.initrd.file} (${size} bytes) does not fit between the kernel and ${hex(ceiling)}`, {
        hint: 'give the VM more memory (-m)',
      });
    }
    mem.write(initrdAddr, input.initrd.data);
    bpDv.setUint32(Hdr.ramdisk_image, initrdAddr, true);
    bpDv.setUint32(Hdr.ramdisk_size, size, true);
    bpDv.setUint32(BootParams.ext_ramdisk_image, 0, true);
    bpDv.setUint32(BootParams.ext_ramdisk_size, 0, true);
  }

  const e820 = layout.e820.slice(0, E820_MAX_ENTRIES_ZEROPAGE);
  bpDv.setUint8(BootParams.e820_entries, e820.length);
  e820.forEach((e, i) => {
    const at = BootParams.e820_table + i * 20;
    bpDv.setBigUint64(at, BigInt(e.addr), true);
    bpDv.setBigUint64(at + 8, BigInt(e.size), true);
    bpDv.setUint32(at + 16, e.type, true);
  });
  mem.write(BOOT_PARAMS_ADDR, bp);

  // GDT: null, null, 64-bit code, data (the selectors the boot protocol names).
  const gdt = new Uint8Array(32);
  const gdtDv = new DataView(gdt.buffer);
  gdtDv.setBigUint64(BOOT_CS, 0x00af9b000000ffffn, true);
  gdtDv.setBigUint64(BOOT_DS, 0x00cf93000000ffffn, true);
  mem.write(GDT_ADDR, gdt);

  // Identity map of the first 4 GiB with 2 MiB pages.
  const PRESENT_RW = 0x3n;
  const PS = 0x80n;
  mem.writeU64(PML4_ADDR, BigInt(PDPT_ADDR) | PRESENT_RW);
  for (let i = 1; i < 512; i++) mem.writeU64(PML4_ADDR + i * 8, 0n);
  for (let g = 0; g < 512; g++) mem.writeU64(PDPT_ADDR + g * 8, g < 4 ? BigInt(PD_ADDR + g * 4096) | PRESENT_RW : 0n);
  for (let i = 0; i < 4 * 512; i++) mem.writeU64(PD_ADDR + i * 8, (BigInt(i) << 21n) | PRESENT_RW | PS);

  return {
    entry: {
      mode: 'long64',
      rip: loadAddr + 0x200,
      rsi: BOOT_PARAMS_ADDR,
      cr3: PML4_ADDR,
      gdtBase: GDT_ADDR,
      gdtLimit: gdt.length - 1,
      codeSelector: BOOT_CS,
      dataSelector: BOOT_DS,
    },
    loadAddr,
    kernelSize: kernel.length,
    initrdAddr,
    header: hdr,
  };
}
