/**
 * Reading a stream (format.ts) from chunks as they arrive: the header, then
 * framed sections, each handed on only after its CRC matched, and the end
 * section checked against what was read. Everything here is untrusted input:
 * any malformed, oversized, corrupted, truncated or out-of-place byte becomes
 * a MigrationStreamError naming the byte offset, never another exception.
 *
 * The parser knows framing and integrity, plus the one ordering rule they
 * need (nothing but COMMIT after END, nothing after COMMIT); what a section
 * means, and in which order sections may come, is the loader's business.
 */
import { crc32 } from 'node:zlib';
import { MigrationStreamError } from './stream-error.js';
import {
  END_PAYLOAD_BYTES,
  HEADER_FIXED_BYTES,
  MAX_HEADER_INFO_BYTES,
  MAX_SECTION_BYTES,
  READABLE_STREAM_VERSIONS,
  SECTION_HEADER_BYTES,
  SectionType,
  sectionTypeName,
  STREAM_MAGIC,
  type StreamHeaderInfo,
} from './format.js';

export interface StreamParserHandlers {
  header(info: StreamHeaderInfo, version: number): void;
  /** a section whose CRC matched; `offset` is where it starts in the stream */
  section(type: number, payload: Uint8Array, offset: number): void;
}

/** Chunks received but not yet parsed. */
class ByteQueue {
  private chunks: Uint8Array[] = [];
  private head = 0;
  length = 0;

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The first n bytes, contiguous (copied only when they span chunks). */
  peek(n: number): Uint8Array {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = new Uint8Array(n);
    let filled = 0;
    let skip = this.head;
    for (const c of this.chunks) {
      const part = c.subarray(skip, Math.min(c.length, skip + n - filled));
      out.set(part, filled);
      filled += part.length;
      skip = 0;
      if (filled === n) break;
    }
    return out;
  }

  consume(n: number): void {
    this.length -= n;
    while (n > 0) {
      const first = this.chunks[0] as Uint8Array;
      const left = first.length - this.head;
      if (n < left) {
        this.head += n;
        return;
      }
      n -= left;
      this.chunks.shift();
      this.head = 0;
    }
  }
}

type ParserState = 'header' | 'sections' | 'ended' | 'committed';

export class StreamParser {
  private readonly queue = new ByteQueue();
  private state: ParserState = 'header';
  /** stream offset of the next unparsed byte */
  private offset = 0;
  private digest = 0;
  private sections = 0;
  private failed: MigrationStreamError | undefined;
  private readonly crcBytes = new Uint8Array(4);
  private readonly crcView = new DataView(this.crcBytes.buffer);

  constructor(private readonly handlers: StreamParserHandlers) {}

  /** bytes consumed so far */
  get position(): number {
    return this.offset;
  }

  /** the END section has been read */
  get ended(): boolean {
    return this.state === 'ended' || this.state === 'committed';
  }

  get committed(): boolean {
    return this.state === 'committed';
  }

  /** Feed bytes; parses every complete unit. Throws MigrationStreamError (and keeps throwing it afterwards). */
  push(chunk: Uint8Array): void {
    if (this.failed !== undefined) throw this.failed;
    this.queue.push(chunk);
    try {
      while (this.step());
    } catch (err) {
      this.failed =
        err instanceof MigrationStreamError
          ? err
          : new MigrationStreamError(`the stream could not be processed: ${err instanceof Error ? err.message : String(err)}`, this.offset, { cause: err });
      throw this.failed;
    }
  }

  /** The input ended: throws if that leaves a unit incomplete or the stream without its END. */
  finish(opts: { requireCommit?: boolean } = {}): void {
    if (this.failed !== undefined) throw this.failed;
    const where = this.offset + this.queue.length;
    if (this.queue.length > 0) {
      throw (this.failed = new MigrationStreamError(`the stream ends in the middle of ${this.state === 'header' ? 'the header' : 'a section'} (${this.queue.length} bytes of it arrived)`, where));
    }
    if (this.state === 'header') throw (this.failed = new MigrationStreamError('the stream is empty', where));
    if (this.state === 'sections') throw (this.failed = new MigrationStreamError('the stream ends before its END section', where, { hint: 'the sender stopped or the connection broke' }));
    if (opts.requireCommit === true && this.state !== 'committed') {
      throw (this.failed = new MigrationStreamError('the stream ends without COMMIT', where));
    }
  }

  private chain(crc: number): void {
    this.crcView.setUint32(0, crc);
    this.digest = crc32(this.crcBytes, this.digest);
  }

  /** Parse one unit if it is complete; false when more bytes are needed. */
  private step(): boolean {
    if (this.state === 'header') return this.parseHeader();
    if (this.queue.length < SECTION_HEADER_BYTES) return false;
    const start = this.offset;
    const h = this.queue.peek(SECTION_HEADER_BYTES);
    const dv = new DataView(h.buffer, h.byteOffset, SECTION_HEADER_BYTES);
    const type = dv.getUint8(0);
    const length = dv.getUint32(1);
    const crc = dv.getUint32(5);
    const name = sectionTypeName(type);
    if (this.state === 'committed') throw new MigrationStreamError(`section ${name} after COMMIT`, start);
    if (this.state === 'ended' && type !== SectionType.COMMIT) throw new MigrationStreamError(`section ${name} after END (only COMMIT may follow it)`, start);
    if (length > MAX_SECTION_BYTES) throw new MigrationStreamError(`section ${name} claims ${length} bytes, more than the ${MAX_SECTION_BYTES} a section may have`, start);
    if (this.queue.length < SECTION_HEADER_BYTES + length) return false;
    const headerCrc = crc32(h.subarray(0, 5));
    const whole = this.queue.peek(SECTION_HEADER_BYTES + length);
    const payload = whole.subarray(SECTION_HEADER_BYTES);
    const actual = crc32(payload, headerCrc);
    if (actual !== crc) {
      throw new MigrationStreamError(`section ${name} (${length} bytes) fails its CRC check (stored 0x${crc.toString(16)}, computed 0x${actual.toString(16)}): the stream is corrupted`, start);
    }
    // Chunks are never reused once pushed, so a view of them stays valid after consume().
    const stable = payload;
    if (type === SectionType.END) this.checkEnd(stable, start);
    else if (type !== SectionType.COMMIT) this.chain(crc);
    this.queue.consume(SECTION_HEADER_BYTES + length);
    this.offset += SECTION_HEADER_BYTES + length;
    if (type === SectionType.END) this.state = 'ended';
    else if (type === SectionType.COMMIT) {
      if (length !== 0) throw new MigrationStreamError('COMMIT carries data', start);
      this.state = 'committed';
    } else this.sections++;
    this.handlers.section(type, stable, start);
    return true;
  }

  private parseHeader(): boolean {
    if (this.queue.length < HEADER_FIXED_BYTES) {
      // Say early when the first bytes already cannot be a stream (e.g. someone connected a wrong peer).
      const n = Math.min(this.queue.length, STREAM_MAGIC.length);
      const got = this.queue.peek(n);
      for (let i = 0; i < n; i++) if (got[i] !== STREAM_MAGIC[i]) throw this.badMagic(got);
      return false;
    }
    const fixed = this.queue.peek(HEADER_FIXED_BYTES);
    for (let i = 0; i < STREAM_MAGIC.length; i++) if (fixed[i] !== STREAM_MAGIC[i]) throw this.badMagic(fixed.subarray(0, 8));
    const dv = new DataView(fixed.buffer, fixed.byteOffset, HEADER_FIXED_BYTES);
    const version = dv.getUint16(8);
    const flags = dv.getUint16(10);
    const infoLength = dv.getUint32(12);
    if (!READABLE_STREAM_VERSIONS.includes(version)) {
      throw new MigrationStreamError(`stream version ${version} is not one this tsvmm reads (${READABLE_STREAM_VERSIONS.join(', ')})`, 8, {
        hint: 'load it with the tsvmm release that wrote it, or a newer one',
      });
    }
    if (flags !== 0) throw new MigrationStreamError(`unknown header flags 0x${flags.toString(16)}`, 10);
    if (infoLength > MAX_HEADER_INFO_BYTES) throw new MigrationStreamError(`header info of ${infoLength} bytes exceeds ${MAX_HEADER_INFO_BYTES}`, 12);
    const total = HEADER_FIXED_BYTES + infoLength + 4;
    if (this.queue.length < total) return false;
    const all = this.queue.peek(total);
    const stored = new DataView(all.buffer, all.byteOffset + HEADER_FIXED_BYTES + infoLength, 4).getUint32(0);
    const actual = crc32(all.subarray(0, HEADER_FIXED_BYTES + infoLength));
    if (stored !== actual) throw new MigrationStreamError(`header fails its CRC check (stored 0x${stored.toString(16)}, computed 0x${actual.toString(16)})`, 0);
    const info = parseHeaderInfo(all.subarray(HEADER_FIXED_BYTES, HEADER_FIXED_BYTES + infoLength));
    this.chain(actual);
    this.queue.consume(total);
    this.offset += total;
    this.state = 'sections';
    this.handlers.header(info, version);
    return true;
  }

  private badMagic(got: Uint8Array): MigrationStreamError {
    const printable = Array.from(got, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('');
    return new MigrationStreamError(`not a tsvmm migration stream (it starts with "${printable}", not "TSVMMIGR")`, 0);
  }

  private checkEnd(payload: Uint8Array, start: number): void {
    if (payload.length !== END_PAYLOAD_BYTES) throw new MigrationStreamError(`END section of ${payload.length} bytes (expected ${END_PAYLOAD_BYTES})`, start);
    const dv = new DataView(payload.buffer, payload.byteOffset, END_PAYLOAD_BYTES);
    const sections = dv.getUint32(0);
    const bytes = dv.getBigUint64(4);
    const digest = dv.getUint32(12);
    if (sections !== this.sections) throw new MigrationStreamError(`END counts ${sections} sections, ${this.sections} were read: sections were lost or added`, start);
    if (bytes !== BigInt(start)) throw new MigrationStreamError(`END says the stream had ${bytes} bytes before it, ${start} were read`, start);
    if (digest !== this.digest) throw new MigrationStreamError(`END digest 0x${digest.toString(16)} does not match the sections read (0x${this.digest.toString(16)}): sections were reordered or replaced`, start);
  }
}

function parseHeaderInfo(bytes: Uint8Array): StreamHeaderInfo {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new MigrationStreamError(`header info is not valid UTF-8 JSON (${err instanceof Error ? err.message : String(err)})`, HEADER_FIXED_BYTES);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new MigrationStreamError('header info is not a JSON object', HEADER_FIXED_BYTES);
  const o = json as Record<string, unknown>;
  const machineType = o['machineType'];
  const kind = o['kind'];
  const writer = o['writer'];
  const createdAt = o['createdAt'];
  if (typeof machineType !== 'string' || machineType === '') throw new MigrationStreamError('header info has no machineType', HEADER_FIXED_BYTES);
  if (kind !== 'migration' && kind !== 'snapshot') throw new MigrationStreamError(`header info kind ${JSON.stringify(kind)} is neither "migration" nor "snapshot"`, HEADER_FIXED_BYTES);
  return {
    machineType,
    kind,
    writer: typeof writer === 'string' ? writer : 'unknown',
    createdAt: typeof createdAt === 'string' ? createdAt : '',
  };
}
