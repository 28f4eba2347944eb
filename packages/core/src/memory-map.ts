/**
 * PC physical memory layout: RAM below the 32-bit PCI hole, the rest above 4 GiB,
 * and the E820 map given to guests (multiboot mmap, Linux boot_params.e820_table).
 *
 * ACPI spec §15 (E820 address range types); the low-memory split follows what
 * QEMU's i440FX machines give (max RAM below 4 GiB 0xe0000000, or 0xc0000000
 * for machine types with gigabyte alignment) so guests see the same layout.
 */
import { ConfigError } from './errors.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const FOUR_GIB = 4 * GiB;

/** E820 types, ACPI §15.1 */
export const E820_RAM = 1;
export const E820_RESERVED = 2;
export const E820_ACPI = 3;
export const E820_NVS = 4;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

export interface RamSlot {
  gpa: number;
  size: number;
}

export interface MemoryLayout {
  ramSize: number;
  belowFourGiB: number;
  aboveFourGiB: number;
  /** RAM regions, each at most 4 GiB (a Node typed array spans at most that) */
  slots: RamSlot[];
  e820: E820Entry[];
}

export interface LayoutOptions {
  /** highest RAM address below 4 GiB when RAM does not fit (i440FX: 0xe0000000) */
  maxRamBelowFourGiB: number;
  /** when RAM reaches maxRamBelowFourGiB, split at 3 GiB instead (gigabyte_align) */
  gigabyteAlign: boolean;
}

/** Conventional memory ends where the EBDA starts (639 KiB), as on PCs. */
export const EBDA_START = 0x9fc00;
export const BIOS_ROM_START = 0xf0000;
export const HIGH_MEMORY_START = 0x100000;
/** KVM's TSS (3 pages) and EPT identity map page live just below the BIOS flash, as QEMU places them. */
export const KVM_IDENTITY_MAP_ADDR = 0xfeffc000;
export const KVM_TSS_ADDR = 0xfeffd000;
export const BIOS_FLASH_START = 0xfffc0000;

export const MIN_RAM = 2 * MiB;
/** Largest RAM we accept: far above anything this host can back, well below 2^53. */
export const MAX_RAM = 1024 * GiB;

export function pcMemoryLayout(ramSize: number, opts: LayoutOptions): MemoryLayout {
  if (!Number.isSafeInteger(ramSize) || ramSize < MIN_RAM) {
    throw new ConfigError(`memory size ${ramSize} bytes is too small: at least ${MIN_RAM / MiB} MiB is needed`);
  }
  if (ramSize > MAX_RAM) {
    throw new ConfigError(`memory size ${ramSize} bytes is larger than the ${MAX_RAM / GiB} GiB tsvmm supports`);
  }
  if (ramSize % (4 * KiB) !== 0) {
    throw new ConfigError(`memory size ${ramSize} bytes is not a multiple of 4 KiB`);
  }
  let lowLimit = opts.maxRamBelowFourGiB;
  if (opts.gigabyteAlign && ramSize >= lowLimit) lowLimit = 3 * GiB;
  const below = Math.min(ramSize, lowLimit);
  const above = ramSize - below;
  const slots: RamSlot[] = [{ gpa: 0, size: below }];
  for (let off = 0; off < above; off += FOUR_GIB) {
    slots.push({ gpa: FOUR_GIB + off, size: Math.min(FOUR_GIB, above - off) });
  }
  const e820: E820Entry[] = [
    { addr: 0, size: EBDA_START, type: E820_RAM },
    { addr: EBDA_START, size: 0xa0000 - EBDA_START, type: E820_RESERVED },
    { addr: BIOS_ROM_START, size: HIGH_MEMORY_START - BIOS_ROM_START, type: E820_RESERVED },
  ];
  if (below > HIGH_MEMORY_START) e820.push({ addr: HIGH_MEMORY_START, size: below - HIGH_MEMORY_START, type: E820_RAM });
  e820.push({ addr: KVM_IDENTITY_MAP_ADDR, size: 4 * 4096, type: E820_RESERVED });
  e820.push({ addr: BIOS_FLASH_START, size: FOUR_GIB - BIOS_FLASH_START, type: E820_RESERVED });
  if (above > 0) e820.push({ addr: FOUR_GIB, size: above, type: E820_RAM });
  return { ramSize, belowFourGiB: below, aboveFourGiB: above, slots, e820 };
}

const SIZE_SUFFIX: Record<string, number> = { '': MiB, B: 1, K: KiB, M: MiB, G: GiB, T: 1024 * GiB };

/**
 * Parse a memory size as QEMU's -m does: a bare number is MiB; suffixes K, M, G, T
 * (optionally followed by B or iB, any case) are binary multiples.
 */
export function parseMemorySize(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text <= 0) throw new ConfigError(`memory size ${text} is not a positive whole number of bytes`);
    return text;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtb]?)(?:i?b)?\s*$/i.exec(text);
  if (m === null) {
    throw new ConfigError(`memory size '${text}' does not parse`, { hint: "use a number of MiB or a suffix, e.g. -m 128 or -m 1G" });
  }
  const value = Number(m[1]);
  const unit = SIZE_SUFFIX[(m[2] ?? '').toUpperCase()] as number;
  const bytes = Math.round(value * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new ConfigError(`memory size '${text}' is out of range`);
  return bytes;
}
