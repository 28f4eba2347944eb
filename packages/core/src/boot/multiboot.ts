/**
 * Multiboot v1 loader (Multiboot Specification 0.6.96: §3.1 OS image format,
 * §3.2 machine state, §3.3 boot information format), the way QEMU's `-kernel`
 * treats a multiboot image: ELF32 kernels, or any image with the a.out kludge
 * (header flag 16), modules from `-initrd "file args,file2 args"`.
 *
 * Layout written to guest RAM: the kernel where it asks to be, then modules
 * (page aligned), then the boot information: the multiboot_info structure,
 * command lines, module list, memory map and boot loader name.
 */
import type { GuestMemory } from '../guest-memory.js';
import { BootError } from '../errors.js';
import { E820_RAM, type MemoryLayout } from '../memory-map.js';
import { isElf, parseElf32 } from './elf.js';
import type { CpuEntryState } from './entry.js';

export const MULTIBOOT_HEADER_MAGIC = 0x1badb002;
export const MULTIBOOT_BOOTLOADER_MAGIC = 0x2badb002;
/** the header must lie entirely within the first 8192 bytes, 32-bit aligned (§3.1.1) */
export const MULTIBOOT_SEARCH = 8192;

export const MULTIBOOT_PAGE_ALIGN = 1 << 0;
export const MULTIBOOT_MEMORY_INFO = 1 << 1;
export const MULTIBOOT_VIDEO_MODE = 1 << 2;
export const MULTIBOOT_AOUT_KLUDGE = 1 << 16;

/** multiboot_info.flags bits (§3.3) */
export const MULTIBOOT_INFO_MEMORY = 1 << 0;
export const MULTIBOOT_INFO_CMDLINE = 1 << 2;
export const MULTIBOOT_INFO_MODS = 1 << 3;
export const MULTIBOOT_INFO_MEM_MAP = 1 << 6;
export const MULTIBOOT_INFO_BOOT_LOADER_NAME = 1 << 9;

/** size of struct multiboot_info up to and including the VBE fields (§3.3) */
export const MULTIBOOT_INFO_SIZE = 0x58;

export const BOOT_LOADER_NAME = 'tsvmm';

export interface MultibootHeader {
  /** file offset of the header */
  offset: number;
  flags: number;
  headerAddr: number;
  loadAddr: number;
  loadEndAddr: number;
  bssEndAddr: number;
  entryAddr: number;
}

export interface BootModule {
  data: Uint8Array;
  /** the module's string: by QEMU's convention the file name followed by its arguments */
  cmdline: string;
}

export interface MultibootInput {
  file: string;
  image: Uint8Array;
  /** the kernel command line as the guest sees it */
  cmdline: string;
  modules: BootModule[];
}

export interface MultibootResult {
  entry: CpuEntryState;
  kernelStart: number;
  kernelEnd: number;
  infoAddr: number;
  modules: { start: number; end: number }[];
}

/** Find a valid multiboot header in the first 8 KiB, or undefined. */
export function findMultibootHeader(image: Uint8Array): MultibootHeader | undefined {
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const limit = Math.min(image.length, MULTIBOOT_SEARCH) - 12;
  for (let off = 0; off <= limit; off += 4) {
    if (dv.getUint32(off, true) !== MULTIBOOT_HEADER_MAGIC) continue;
    const flags = dv.getUint32(off + 4, true);
    const checksum = dv.getUint32(off + 8, true);
    if (((MULTIBOOT_HEADER_MAGIC + flags + checksum) >>> 0) !== 0) continue;
    const hasAddr = (flags & MULTIBOOT_AOUT_KLUDGE) !== 0;
    if (hasAddr && off + 32 > image.length) continue;
    return {
      offset: off,
      flags,
      headerAddr: hasAddr ? dv.getUint32(off + 12, true) : 0,
      loadAddr: hasAddr ? dv.getUint32(off + 16, true) : 0,
      loadEndAddr: hasAddr ? dv.getUint32(off + 20, true) : 0,
      bssEndAddr: hasAddr ? dv.getUint32(off + 24, true) : 0,
      entryAddr: hasAddr ? dv.getUint32(off + 28, true) : 0,
    };
  }
  return undefined;
}

function pageAlign(n: number): number {
  return Math.ceil(n / 4096) * 4096;
}

class Placement {
  constructor(
    private readonly mem: GuestMemory,
    private readonly limit: number,
    private readonly file: string,
  ) {}
  check(start: number, length: number, what: string): void {
    if (start < 0 || start + length > this.limit || !this.mem.contains(start, length)) {
      throw new BootError(
        `${this.file}: ${what} at 0x${start.toString(16)}-0x${(start + length).toString(16)} does not fit in guest RAM below 0x${this.limit.toString(16)}`,
        { hint: 'give the VM more memory (-m) or link the kernel at a lower address' },
      );
    }
  }
}

export function loadMultiboot(mem: GuestMemory, layout: MemoryLayout, input: MultibootInput): MultibootResult {
  const { file, image } = input;
  const header = findMultibootHeader(image);
  if (header === undefined) throw new BootError(`${file}: no multiboot header in the first ${MULTIBOOT_SEARCH} bytes`);
  const unsupported = header.flags & 0xffff & ~(MULTIBOOT_PAGE_ALIGN | MULTIBOOT_MEMORY_INFO | MULTIBOOT_VIDEO_MODE);
  if (unsupported !== 0) {
    // §3.1.2: bits 0-15 are requirements; a boot loader that cannot meet one must refuse the image.
    throw new BootError(`${file}: multiboot header requires unsupported features (flags 0x${unsupported.toString(16)})`);
  }
  const place = new Placement(mem, layout.belowFourGiB, file);
  let entryPoint: number;
  let kernelStart = Number.MAX_SAFE_INTEGER;
  let kernelEnd = 0;

  if ((header.flags & MULTIBOOT_AOUT_KLUDGE) !== 0) {
    // a.out kludge (§3.1.3): the file is loaded from header_offset - (header_addr - load_addr).
    if (header.headerAddr < header.loadAddr) throw new BootError(`${file}: multiboot header_addr is below load_addr`);
    const fileStart = header.offset - (header.headerAddr - header.loadAddr);
    if (fileStart < 0) throw new BootError(`${file}: multiboot load_addr puts the start of the image before the file start`);
    const loadEnd = header.loadEndAddr === 0 ? header.loadAddr + (image.length - fileStart) : header.loadEndAddr;
    if (loadEnd < header.loadAddr) throw new BootError(`${file}: multiboot load_end_addr is below load_addr`);
    const textLen = loadEnd - header.loadAddr;
    if (fileStart + textLen > image.length) {
      throw new BootError(`${file}: multiboot load_end_addr asks for ${textLen} bytes but the file holds ${image.length - fileStart}`);
    }
    const bssEnd = header.bssEndAddr === 0 ? loadEnd : header.bssEndAddr;
    if (bssEnd < loadEnd) throw new BootError(`${file}: multiboot bss_end_addr is below load_end_addr`);
    place.check(header.loadAddr, bssEnd - header.loadAddr, 'kernel image');
    mem.write(header.loadAddr, image.subarray(fileStart, fileStart + textLen));
    mem.fill(loadEnd, bssEnd - loadEnd, 0);
    kernelStart = header.loadAddr;
    kernelEnd = bssEnd;
    entryPoint = header.entryAddr;
  } else {
    if (!isElf(image)) throw new BootError(`${file}: multiboot header without the a.out kludge, and the file is not ELF`);
    const elf = parseElf32(image, file);
    for (const seg of elf.segments) {
      place.check(seg.paddr, seg.memsz, 'ELF segment');
      mem.write(seg.paddr, image.subarray(seg.offset, seg.offset + seg.filesz));
      mem.fill(seg.paddr + seg.filesz, seg.memsz - seg.filesz, 0);
      kernelStart = Math.min(kernelStart, seg.paddr);
      kernelEnd = Math.max(kernelEnd, seg.paddr + seg.memsz);
    }
    // The entry point is a virtual address; translate it when the kernel is linked above its load address.
    entryPoint = elf.entry;
    for (const seg of elf.segments) {
      if (elf.entry >= seg.vaddr && elf.entry < seg.vaddr + seg.memsz) {
        entryPoint = elf.entry - seg.vaddr + seg.paddr;
        break;
      }
    }
  }
  if (entryPoint < kernelStart || entryPoint >= kernelEnd) {
    throw new BootError(`${file}: multiboot entry point 0x${entryPoint.toString(16)} is outside the loaded kernel`);
  }

  // Modules, each page aligned, after the kernel.
  let cursor = pageAlign(kernelEnd);
  const mods: { start: number; end: number }[] = [];
  for (const m of input.modules) {
    place.check(cursor, m.data.length, `module '${m.cmdline}'`);
    mem.write(cursor, m.data);
    mods.push({ start: cursor, end: cursor + m.data.length });
    cursor = pageAlign(cursor + m.data.length);
  }

  // Boot information: struct, then strings, module list and memory map.
  const enc = new TextEncoder();
  const strings: Uint8Array[] = [];
  const info = new Uint8Array(MULTIBOOT_INFO_SIZE);
  const infoDv = new DataView(info.buffer);
  const infoAddr = cursor;
  let tail = infoAddr + MULTIBOOT_INFO_SIZE;
  const addString = (s: string): number => {
    const bytes = enc.encode(`${s}\0`);
    const at = tail;
    strings.push(bytes);
    tail += bytes.length;
    return at;
  };
  const cmdlineAddr = addString(input.cmdline);
  const loaderNameAddr = addString(BOOT_LOADER_NAME);
  const modStrings = input.modules.map((m) => addString(m.cmdline));
  tail = Math.ceil(tail / 8) * 8;
  const modsAddr = tail;
  const modList = new Uint8Array(16 * mods.length);
  const modDv = new DataView(modList.buffer);
  mods.forEach((m, i) => {
    modDv.setUint32(i * 16, m.start, true);
    modDv.setUint32(i * 16 + 4, m.end, true);
    modDv.setUint32(i * 16 + 8, modStrings[i] as number, true);
  });
  tail += modList.length;
  const mmapAddr = tail;
  const mmap = new Uint8Array(24 * layout.e820.length);
  const mmapDv = new DataView(mmap.buffer);
  layout.e820.forEach((e, i) => {
    // each entry: size (of the rest, 20), base_addr, length, type (§3.3)
    mmapDv.setUint32(i * 24, 20, true);
    mmapDv.setBigUint64(i * 24 + 4, BigInt(e.addr), true);
    mmapDv.setBigUint64(i * 24 + 12, BigInt(e.size), true);
    mmapDv.setUint32(i * 24 + 20, e.type, true);
  });
  tail += mmap.length;

  const lowRam = layout.e820.find((e) => e.addr === 0 && e.type === E820_RAM);
  const memLower = Math.floor((lowRam?.size ?? 0) / 1024);
  const memUpper = Math.floor((layout.belowFourGiB - 0x100000) / 1024);
  infoDv.setUint32(0, MULTIBOOT_INFO_MEMORY | MULTIBOOT_INFO_CMDLINE | MULTIBOOT_INFO_MODS | MULTIBOOT_INFO_MEM_MAP | MULTIBOOT_INFO_BOOT_LOADER_NAME, true);
  infoDv.setUint32(4, memLower, true);
  infoDv.setUint32(8, memUpper, true);
  infoDv.setUint32(16, cmdlineAddr, true);
  infoDv.setUint32(20, mods.length, true);
  infoDv.setUint32(24, modsAddr, true);
  infoDv.setUint32(44, mmap.length, true);
  infoDv.setUint32(48, mmapAddr, true);
  infoDv.setUint32(64, loaderNameAddr, true);

  place.check(infoAddr, tail - infoAddr, 'multiboot information');
  mem.write(infoAddr, info);
  let at = infoAddr + MULTIBOOT_INFO_SIZE;
  for (const s of strings) {
    mem.write(at, s);
    at += s.length;
  }
  mem.write(modsAddr, modList);
  mem.write(mmapAddr, mmap);

  return {
    entry: { mode: 'protected32', eip: entryPoint, eax: MULTIBOOT_BOOTLOADER_MAGIC, ebx: infoAddr },
    kernelStart,
    kernelEnd,
    infoAddr,
    modules: mods,
  };
}
