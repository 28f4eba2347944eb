/**
 * The VHDX metadata log ([MS-VHDX] 2.3 Log, 2.3.2 Log Sequence, 2.3.3 Log
 * Replay): a circular buffer of 4 KiB sectors holding entries; each entry is
 * a header, descriptors (data or zero) and data sectors, checksummed with
 * CRC-32C over the whole entry. Entries whose LogGuid matches the header's
 * form sequences of consecutive SequenceNumbers; the active sequence is the
 * complete sequence (its head's Tail names an entry of it) with the largest
 * head SequenceNumber, and it is replayed from that tail to the head.
 *
 * Nothing here trusts the file: every length, offset and count is checked,
 * and an invalid entry simply is not part of any sequence.
 */
import {
  DATA_SECTOR_SIGNATURE,
  HEADER_SECTION_SIZE,
  LOG_DESCRIPTOR_SIZE,
  LOG_ENTRY_HEADER_SIZE,
  LOG_ENTRY_SIGNATURE,
  LOG_SECTOR,
  descriptorSectors,
  parseLogDescriptor,
  parseLogEntryHeader,
  writeLogEntryHeader,
  type LogEntryHeader,
} from './structures.js';
import { vhdxChecksum } from './crc32c.js';
import { type Guid, guidEquals } from './guid.js';

/** One replayable write: a 4 KiB sector image, or a run of zeroes. */
export type LogWrite = { fileOffset: number; data: Uint8Array } | { fileOffset: number; zeroLength: number };

export interface LogEntry {
  /** offset of the entry within the log */
  offset: number;
  header: LogEntryHeader;
  writes: LogWrite[];
}

export interface ActiveSequence {
  entries: LogEntry[];
  head: LogEntry;
  /** offset within the log just past the head: where the next entry goes */
  nextOffset: number;
}

/** Copies `length` bytes at `start` out of the circular log. */
function circular(log: Uint8Array, start: number, length: number): Uint8Array {
  if (start + length <= log.length) return log.subarray(start, start + length);
  const out = new Uint8Array(length);
  const first = log.length - start;
  out.set(log.subarray(start), 0);
  out.set(log.subarray(0, length - first), first);
  return out;
}

/** Parses and validates the entry at `offset`; undefined if it is not a valid entry for `logGuid`. */
export function parseEntryAt(log: Uint8Array, offset: number, logGuid: Guid): LogEntry | undefined {
  if (offset % LOG_SECTOR !== 0 || offset + LOG_ENTRY_HEADER_SIZE > log.length) return undefined;
  const header = parseLogEntryHeader(log.subarray(offset, offset + LOG_ENTRY_HEADER_SIZE));
  if (header.signature !== LOG_ENTRY_SIGNATURE) return undefined;
  const len = header.entryLength;
  if (len === 0 || len % LOG_SECTOR !== 0 || len > log.length) return undefined;
  if (header.sequenceNumber === 0n) return undefined;
  if (!guidEquals(header.logGuid, logGuid)) return undefined;
  const descSectors = descriptorSectors(header.descriptorCount);
  if (header.descriptorCount > (log.length / LOG_DESCRIPTOR_SIZE) || descSectors * LOG_SECTOR > len) return undefined;
  if (header.tail % LOG_SECTOR !== 0 || header.tail >= log.length) return undefined;
  const entry = circular(log, offset, len);
  if (vhdxChecksum(entry, 4) !== header.checksum) return undefined;
  const writes: LogWrite[] = [];
  let dataSector = descSectors;
  for (let i = 0; i < header.descriptorCount; i++) {
    const at = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    const d = parseLogDescriptor(entry.subarray(at, at + LOG_DESCRIPTOR_SIZE));
    if (d.kind === 'invalid' || d.sequenceNumber !== header.sequenceNumber) return undefined;
    if (!Number.isSafeInteger(d.fileOffset) || d.fileOffset % LOG_SECTOR !== 0) return undefined;
    if (d.kind === 'zero') {
      if (!Number.isSafeInteger(d.zeroLength) || d.zeroLength % LOG_SECTOR !== 0) return undefined;
      writes.push({ fileOffset: d.fileOffset, zeroLength: d.zeroLength });
      continue;
    }
    if ((dataSector + 1) * LOG_SECTOR > len) return undefined;
    const sec = entry.subarray(dataSector * LOG_SECTOR, (dataSector + 1) * LOG_SECTOR);
    const sv = new DataView(sec.buffer, sec.byteOffset, sec.byteLength);
    const seq = (BigInt(sv.getUint32(4, true)) << 32n) | BigInt(sv.getUint32(LOG_SECTOR - 4, true));
    if (sv.getUint32(0, true) !== DATA_SECTOR_SIGNATURE || seq !== header.sequenceNumber) return undefined;
    // 2.3.1.4: the first 8 and last 4 bytes of the sector live in the descriptor
    const data = new Uint8Array(LOG_SECTOR);
    data.set(d.leadingBytes, 0);
    data.set(sec.subarray(8, LOG_SECTOR - 4), 8);
    data.set(d.trailingBytes, LOG_SECTOR - 4);
    writes.push({ fileOffset: d.fileOffset, data });
    dataSector++;
  }
  return { offset, header, writes };
}

/** 2.3.3: the active sequence of the log, or undefined if the log holds none. */
export function findActiveSequence(log: Uint8Array, logGuid: Guid): ActiveSequence | undefined {
  const cache = new Map<number, LogEntry | null>();
  const at = (o: number): LogEntry | undefined => {
    let e = cache.get(o);
    if (e === undefined) {
      e = parseEntryAt(log, o, logGuid) ?? null;
      cache.set(o, e);
    }
    return e ?? undefined;
  };
  let best: ActiveSequence | undefined;
  for (let start = 0; start < log.length; start += LOG_SECTOR) {
    const first = at(start);
    if (first === undefined) continue;
    const seq: LogEntry[] = [first];
    let covered = first.header.entryLength;
    let next = (start + covered) % log.length;
    for (;;) {
      const prev = seq[seq.length - 1];
      const e = at(next);
      if (prev === undefined || e === undefined || e.header.sequenceNumber !== prev.header.sequenceNumber + 1n) break;
      if (covered + e.header.entryLength > log.length) break;
      seq.push(e);
      covered += e.header.entryLength;
      next = (next + e.header.entryLength) % log.length;
    }
    const head = seq[seq.length - 1];
    if (head === undefined) continue;
    // Complete only if the head's tail is an entry of this sequence.
    const tailIndex = seq.findIndex((e) => e.offset === head.header.tail);
    if (tailIndex < 0) continue;
    if (best === undefined || head.header.sequenceNumber > best.head.header.sequenceNumber) {
      best = { entries: seq.slice(tailIndex), head, nextOffset: next };
    }
  }
  return best;
}

/** Where a replayed write may land: past the header section and outside the log itself. */
export function checkReplayTarget(
  w: LogWrite,
  limits: { logOffset: number; logLength: number; maxOffset: number },
): string | undefined {
  const len = 'data' in w ? w.data.length : w.zeroLength;
  const end = w.fileOffset + len;
  if (w.fileOffset < HEADER_SECTION_SIZE) return `targets offset ${w.fileOffset}, inside the header section`;
  if (w.fileOffset < limits.logOffset + limits.logLength && end > limits.logOffset) {
    return `targets [${w.fileOffset}, ${end}), inside the log itself`;
  }
  if (end > limits.maxOffset) return `targets [${w.fileOffset}, ${end}), beyond the file's last offset ${limits.maxOffset}`;
  return undefined;
}

/** Builds one log entry (header, descriptors, data sectors) ready to write at `offset` in the log. */
export function buildLogEntry(opts: {
  logGuid: Guid;
  sequenceNumber: bigint;
  tail: number;
  flushedFileOffset: number;
  lastFileOffset: number;
  sectors: Array<{ fileOffset: number; data: Uint8Array }>;
}): Uint8Array {
  const n = opts.sectors.length;
  const descSectors = descriptorSectors(n);
  const entryLength = (descSectors + n) * LOG_SECTOR;
  const b = new Uint8Array(entryLength);
  writeLogEntryHeader(b, {
    entryLength,
    tail: opts.tail,
    sequenceNumber: opts.sequenceNumber,
    descriptorCount: n,
    logGuid: opts.logGuid,
    flushedFileOffset: opts.flushedFileOffset,
    lastFileOffset: opts.lastFileOffset,
  });
  const v = new DataView(b.buffer);
  const seqHigh = Number(opts.sequenceNumber >> 32n);
  const seqLow = Number(opts.sequenceNumber & 0xffffffffn);
  opts.sectors.forEach((s, i) => {
    if (s.data.length !== LOG_SECTOR || s.fileOffset % LOG_SECTOR !== 0) {
      throw new RangeError(`log sector for ${s.fileOffset} must be 4 KiB and 4 KiB aligned`);
    }
    const d = LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE;
    v.setUint32(d, 0x63736564, true); // "desc"
    b.set(s.data.subarray(LOG_SECTOR - 4), d + 4); // TrailingBytes
    b.set(s.data.subarray(0, 8), d + 8); // LeadingBytes
    v.setUint32(d + 16, s.fileOffset % 0x100000000, true);
    v.setUint32(d + 20, Math.floor(s.fileOffset / 0x100000000), true);
    v.setBigUint64(d + 24, opts.sequenceNumber, true);
    const sec = (descSectors + i) * LOG_SECTOR;
    v.setUint32(sec, DATA_SECTOR_SIGNATURE, true);
    v.setUint32(sec + 4, seqHigh, true);
    b.set(s.data.subarray(8, LOG_SECTOR - 4), sec + 8);
    v.setUint32(sec + LOG_SECTOR - 4, seqLow, true);
  });
  v.setUint32(4, vhdxChecksum(b, 4), true);
  return b;
}

/** Largest number of data sectors one entry can carry in a log of `logLength` bytes (one sector stays open). */
export function maxSectorsPerEntry(logLength: number): number {
  let n = Math.floor(logLength / LOG_SECTOR) - 2;
  while (n > 0 && (descriptorSectors(n) + n) * LOG_SECTOR > logLength - LOG_SECTOR) n--;
  return n;
}
