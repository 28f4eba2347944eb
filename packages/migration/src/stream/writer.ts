/**
 * Building stream bytes (format.ts): the header, framed sections and the end
 * section, keeping the running digest the end section carries. The writer
 * produces byte arrays; where they go (socket, file) is the transport's job.
 */
import { crc32 } from 'node:zlib';
import { encodeState } from '../state-codec.js';
import {
  END_PAYLOAD_BYTES,
  HEADER_FIXED_BYTES,
  MAX_HEADER_INFO_BYTES,
  MAX_SECTION_BYTES,
  SECTION_HEADER_BYTES,
  SectionType,
  STREAM_MAGIC,
  STREAM_VERSION,
  type SectionTypeCode,
  type StreamHeaderInfo,
} from './format.js';

export class StreamWriter {
  /** CRC-32 over the crc of the header and of each section so far (the END digest) */
  private digest = 0;
  private sections = 0;
  /** bytes produced so far */
  bytes = 0;
  private readonly crcBytes = new Uint8Array(4);
  private readonly crcView = new DataView(this.crcBytes.buffer);

  private chain(crc: number): void {
    this.crcView.setUint32(0, crc);
    this.digest = crc32(this.crcBytes, this.digest);
  }

  header(info: StreamHeaderInfo, version = STREAM_VERSION): Uint8Array {
    const json = new TextEncoder().encode(JSON.stringify(info));
    if (json.length > MAX_HEADER_INFO_BYTES) throw new RangeError('stream header info is too large');
    const out = new Uint8Array(HEADER_FIXED_BYTES + json.length + 4);
    const dv = new DataView(out.buffer);
    out.set(STREAM_MAGIC, 0);
    dv.setUint16(8, version);
    dv.setUint16(10, 0);
    dv.setUint32(12, json.length);
    out.set(json, HEADER_FIXED_BYTES);
    const crc = crc32(out.subarray(0, HEADER_FIXED_BYTES + json.length));
    dv.setUint32(HEADER_FIXED_BYTES + json.length, crc);
    this.chain(crc);
    this.bytes += out.length;
    return out;
  }

  /**
   * Frame `payload` as a section. With `into`, the caller has already put
   * the payload at `into[SECTION_HEADER_BYTES..]` (RAM batches are built in
   * place) and gets `into` back trimmed to the section.
   */
  section(type: SectionTypeCode, payload: Uint8Array, into?: Uint8Array): Uint8Array {
    if (payload.length > MAX_SECTION_BYTES) throw new RangeError(`section of ${payload.length} bytes exceeds ${MAX_SECTION_BYTES}`);
    const out = into ?? new Uint8Array(SECTION_HEADER_BYTES + payload.length);
    if (into === undefined) out.set(payload, SECTION_HEADER_BYTES);
    const dv = new DataView(out.buffer, out.byteOffset, SECTION_HEADER_BYTES);
    dv.setUint8(0, type);
    dv.setUint32(1, payload.length);
    const crc = crc32(payload, crc32(out.subarray(0, 5)));
    dv.setUint32(5, crc);
    this.chain(crc);
    this.sections++;
    const framed = out.subarray(0, SECTION_HEADER_BYTES + payload.length);
    this.bytes += framed.length;
    return framed;
  }

  /** A section whose payload is plain data (state codec JSON). */
  stateSection(type: SectionTypeCode, value: unknown, what: string): Uint8Array {
    return this.section(type, encodeState(value, what));
  }

  /** A DEVICE section: u16 meta length | meta JSON | state JSON. */
  deviceSection(meta: DeviceSectionMeta, state: unknown): Uint8Array {
    const m = encodeState(meta, `device '${meta.id}' meta`);
    const body = encodeState(state, `device '${meta.id}' state`);
    const payload = new Uint8Array(2 + m.length + body.length);
    new DataView(payload.buffer).setUint16(0, m.length);
    payload.set(m, 2);
    payload.set(body, 2 + m.length);
    return this.section(SectionType.DEVICE, payload);
  }

  /** END: the count of sections, the stream's length before END, and the digest. */
  end(): Uint8Array {
    const payload = new Uint8Array(END_PAYLOAD_BYTES);
    const dv = new DataView(payload.buffer);
    dv.setUint32(0, this.sections);
    dv.setBigUint64(4, BigInt(this.bytes));
    dv.setUint32(12, this.digest);
    return this.section(SectionType.END, payload);
  }

  commit(): Uint8Array {
    return this.section(SectionType.COMMIT, new Uint8Array(0));
  }
}

/** What precedes a device's state in its section. */
export interface DeviceSectionMeta {
  id: string;
  driver: string;
  /** the plugin that wrote the state */
  plugin: { name: string; version: string } | null;
  stateVersion: number;
}
