/**
 * The tsvmm migration stream, version 1 (docs/migration.md "Stream format"
 * is the full description; this file is its single source of constants).
 *
 *   stream  = header section* end [commit]
 *   header  = magic "TSVMMIGR" (8) | version u16 | flags u16 | infoLength u32
 *             | info (UTF-8 JSON: machineType, kind, ...) | crc u32
 *   section = type u8 | length u32 | crc u32 | payload (length bytes)
 *
 * Integers are big-endian, as QEMU's stream and network order. A section's
 * crc is CRC-32 (zlib) of its type and length bytes followed by its payload,
 * so no part of a section reaches RAM or a device before it is checked
 * (Firecracker checks its snapshot CRC before restoring anything). The end
 * section carries the number of sections, the stream length before it and
 * CRC-32 over the header's and every section's crc in order, which catches a
 * lost, repeated or reordered section.
 *
 * Order: CONFIG first (the destination checks it and answers before any RAM
 * is sent), then RAM sections (any number of rounds), then DEVICE, CPU and
 * MACHINE sections, END, and over a socket COMMIT once the destination said
 * LOADED. After END, a file ends.
 */

export const STREAM_MAGIC = Uint8Array.from([0x54, 0x53, 0x56, 0x4d, 0x4d, 0x49, 0x47, 0x52]); // "TSVMMIGR"
/** the stream version this tsvmm writes */
export const STREAM_VERSION = 1;
/** stream versions this tsvmm reads */
export const READABLE_STREAM_VERSIONS: readonly number[] = [1];

/** magic, version, flags, info length */
export const HEADER_FIXED_BYTES = 16;
export const MAX_HEADER_INFO_BYTES = 64 * 1024;
/** type, length, crc */
export const SECTION_HEADER_BYTES = 9;
/** No section is larger (RAM batches are ~1 MiB; device and CPU state far smaller). */
export const MAX_SECTION_BYTES = 32 * 1024 * 1024;

export const SectionType = {
  CONFIG: 0x01,
  RAM: 0x02,
  /** a device's state: u16 meta length | meta JSON {id, driver, plugin, stateVersion} | state JSON */
  DEVICE: 0x03,
  /** the accelerator's CPU state: every vCPU (registers, XSAVE, MSRs, LAPIC, MP state, events), irqchips, PIT, kvmclock */
  CPU: 0x04,
  /** machine-level state: the run-time clock device timers derive from */
  MACHINE: 0x05,
  END: 0x7e,
  COMMIT: 0x7f,
} as const;
export type SectionTypeCode = (typeof SectionType)[keyof typeof SectionType];

export function sectionTypeName(type: number): string {
  for (const [name, code] of Object.entries(SectionType)) if (code === type) return name;
  return `0x${type.toString(16).padStart(2, '0')}`;
}

/** Record kinds inside a RAM section: kind u8 | page number ULEB128 | data. */
export const RamRecord = {
  /** the page is all zeroes; no data */
  ZERO: 0x01,
  /** PAGE_SIZE bytes follow */
  PAGE: 0x02,
  /** ULEB128 length (1..PAGE_SIZE) and an XBZRLE delta against the page's previous content */
  XBZRLE: 0x03,
} as const;

/** bytes in an END payload: sections u32, stream bytes u64, digest u32 */
export const END_PAYLOAD_BYTES = 16;

/** What the header's info JSON holds. */
export interface StreamHeaderInfo {
  /** the machine type the stream was written by, e.g. pc-i440fx-rhel7.0.0 */
  machineType: string;
  /** a live migration or a snapshot file */
  kind: 'migration' | 'snapshot';
  /** the tsvmm that wrote it (for messages) */
  writer: string;
  /** ISO 8601 */
  createdAt: string;
}

/**
 * Messages the destination sends back over a socket (files have no return
 * channel): type u8 | length u32 | UTF-8 JSON.
 */
export const ReplyType = {
  /** the configuration fits; send RAM */
  ACCEPT: 0x01,
  /** it does not: {problems: string[]} */
  REJECT: 0x02,
  /** every section was loaded; waiting for COMMIT */
  LOADED: 0x03,
  /** loading failed: {message} */
  FAILED: 0x04,
} as const;
export type ReplyTypeCode = (typeof ReplyType)[keyof typeof ReplyType];
export const REPLY_HEADER_BYTES = 5;
export const MAX_REPLY_BYTES = 64 * 1024;
