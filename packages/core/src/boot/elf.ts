/**
 * Just enough ELF to load a multiboot kernel: the ELF32 file header and
 * program headers (System V ABI, "ELF Header" and "Program Header" chapters).
 * Every field read from the file is checked against the file's size.
 */
import { BootError } from '../errors.js';

export const ELFCLASS32 = 1;
export const ELFCLASS64 = 2;
export const ELFDATA2LSB = 1;
export const EM_386 = 3;
export const EM_X86_64 = 62;
export const PT_LOAD = 1;

export interface ElfSegment {
  /** file offset of the bytes */
  offset: number;
  vaddr: number;
  paddr: number;
  filesz: number;
  memsz: number;
}

export interface Elf32Image {
  entry: number;
  segments: ElfSegment[];
}

export function isElf(image: Uint8Array): boolean {
  return image.length >= 4 && image[0] === 0x7f && image[1] === 0x45 && image[2] === 0x4c && image[3] === 0x46;
}

export function elfClass(image: Uint8Array): number {
  return image[4] ?? 0;
}

/** Parse an ELF32 little-endian x86 executable's loadable segments. */
export function parseElf32(image: Uint8Array, file: string): Elf32Image {
  if (!isElf(image) || image.length < 52) throw new BootError(`${file}: not an ELF file`);
  if (elfClass(image) !== ELFCLASS32) {
    throw new BootError(`${file}: is a 64-bit ELF; a multiboot v1 kernel must be ELF32`, {
      hint: 'build it with -m32, or boot a Linux bzImage instead',
    });
  }
  const dv = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (image[5] !== ELFDATA2LSB) throw new BootError(`${file}: ELF is not little-endian`);
  const machine = dv.getUint16(18, true);
  if (machine !== EM_386) throw new BootError(`${file}: ELF machine ${machine} is not i386 (3)`);
  const entry = dv.getUint32(24, true);
  const phoff = dv.getUint32(28, true);
  const phentsize = dv.getUint16(42, true);
  const phnum = dv.getUint16(44, true);
  if (phnum === 0) throw new BootError(`${file}: ELF has no program headers`);
  if (phentsize < 32) throw new BootError(`${file}: ELF program header size ${phentsize} is too small`);
  if (phoff + phnum * phentsize > image.length) {
    throw new BootError(`${file}: ELF program headers (offset ${phoff}, ${phnum} x ${phentsize} bytes) extend past the end of the file`);
  }
  const segments: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (dv.getUint32(ph, true) !== PT_LOAD) continue;
    const seg: ElfSegment = {
      offset: dv.getUint32(ph + 4, true),
      vaddr: dv.getUint32(ph + 8, true),
      paddr: dv.getUint32(ph + 12, true),
      filesz: dv.getUint32(ph + 16, true),
      memsz: dv.getUint32(ph + 20, true),
    };
    if (seg.offset + seg.filesz > image.length) {
      throw new BootError(`${file}: ELF segment ${i} (file offset ${seg.offset}, ${seg.filesz} bytes) extends past the end of the file`);
    }
    if (seg.filesz > seg.memsz) throw new BootError(`${file}: ELF segment ${i} has filesz ${seg.filesz} > memsz ${seg.memsz}`);
    if (seg.paddr + seg.memsz > 0x1_0000_0000) {
      throw new BootError(`${file}: ELF segment ${i} at physical 0x${seg.paddr.toString(16)} (+${seg.memsz}) is beyond 4 GiB`);
    }
    if (seg.memsz > 0) segments.push(seg);
  }
  if (segments.length === 0) throw new BootError(`${file}: ELF has no loadable segments`);
  return { entry, segments };
}
