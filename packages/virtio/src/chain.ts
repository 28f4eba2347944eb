/**
 * A descriptor chain seen as a request: the device-readable part followed by
 * the device-writable part (OASIS VIRTIO 1.2 §2.7.4 "Message Framing",
 * §2.7.4.2: "The driver MUST place any device-writable descriptor elements
 * after any device-readable descriptor elements").
 *
 * Direction is the device's business, not the queue's: a device builds a
 * RequestBuffers from each chain, which rejects a writable buffer before a
 * readable one, and then reads only from the readable part and writes only
 * into the writable part — asking for more than a part holds is an error the
 * device reports (DEVICE_NEEDS_RESET or a request status, per device spec).
 * Every access goes through GuestMemory, so writes are seen by dirty tracking.
 */
import { GuestMemoryError, type GuestMemory } from '@tsvmm/core';
import type { DescriptorChain, VirtqBuffer } from './queue.js';

export type ChainLayoutFault = 'writable-before-readable' | 'readable-too-short' | 'writable-too-short';

/** The chain does not have the shape the device needs (direction, order, size). */
export class ChainLayoutError extends Error {
  constructor(
    readonly fault: ChainLayoutFault,
    message: string,
  ) {
    super(message);
    this.name = 'ChainLayoutError';
  }
}

/** Zero-copy views of [gpa, gpa+length), cut where it crosses from one RAM region into the next. */
export function guestSlices(memory: GuestMemory, gpa: number, length: number): Uint8Array[] {
  if (length === 0) return [];
  try {
    return [memory.slice(gpa, length)];
  } catch (err) {
    if (!(err instanceof GuestMemoryError)) throw err;
  }
  const out: Uint8Array[] = [];
  let cur = gpa;
  const end = gpa + length;
  for (const r of memory.list()) {
    if (cur >= end) break;
    const rEnd = r.gpa + r.size;
    if (cur < r.gpa || cur >= rEnd) continue;
    const n = Math.min(end, rEnd) - cur;
    out.push(memory.slice(cur, n));
    cur += n;
  }
  if (cur !== end) throw new GuestMemoryError(gpa, length, 'slice');
  return out;
}

export class RequestBuffers {
  private constructor(
    readonly head: number,
    readonly readable: readonly VirtqBuffer[],
    readonly writable: readonly VirtqBuffer[],
    readonly readableBytes: number,
    readonly writableBytes: number,
  ) {}

  /** Splits a chain into its readable and writable parts, or says why its order is wrong. */
  static from(chain: DescriptorChain): RequestBuffers | ChainLayoutError {
    const readable: VirtqBuffer[] = [];
    const writable: VirtqBuffer[] = [];
    let r = 0;
    let w = 0;
    for (const b of chain.buffers) {
      if (b.writable) {
        writable.push(b);
        w += b.len;
      } else {
        if (writable.length > 0) {
          return new ChainLayoutError(
            'writable-before-readable',
            `chain ${chain.head}: a device-readable buffer at 0x${b.addr.toString(16)} follows a device-writable one`,
          );
        }
        readable.push(b);
        r += b.len;
      }
    }
    return new RequestBuffers(chain.head, readable, writable, r, w);
  }

  /** Copies readable bytes [offset, offset+dst.length) into dst. */
  read(memory: GuestMemory, offset: number, dst: Uint8Array): ChainLayoutError | undefined {
    if (offset + dst.length > this.readableBytes) {
      return new ChainLayoutError(
        'readable-too-short',
        `chain ${this.head}: needs ${offset + dst.length} device-readable bytes, has ${this.readableBytes}`,
      );
    }
    let pos = 0;
    for (const s of this.ranges(this.readable, offset, dst.length)) {
      memory.read(s.addr, dst.subarray(pos, pos + s.len));
      pos += s.len;
    }
    return undefined;
  }

  /** Copies src into the writable part at `offset`. */
  write(memory: GuestMemory, offset: number, src: Uint8Array): ChainLayoutError | undefined {
    if (offset + src.length > this.writableBytes) {
      return new ChainLayoutError(
        'writable-too-short',
        `chain ${this.head}: needs ${offset + src.length} device-writable bytes, has ${this.writableBytes}`,
      );
    }
    let pos = 0;
    for (const s of this.ranges(this.writable, offset, src.length)) {
      memory.write(s.addr, src.subarray(pos, pos + s.len));
      pos += s.len;
    }
    return undefined;
  }

  /** Guest ranges of readable bytes [offset, offset+length) (length must fit, see readableBytes). */
  readableRanges(offset: number, length: number): { addr: number; len: number }[] {
    return this.ranges(this.readable, offset, length);
  }

  /** Guest ranges of writable bytes [offset, offset+length) (length must fit, see writableBytes). */
  writableRanges(offset: number, length: number): { addr: number; len: number }[] {
    return this.ranges(this.writable, offset, length);
  }

  private ranges(part: readonly VirtqBuffer[], offset: number, length: number): { addr: number; len: number }[] {
    const out: { addr: number; len: number }[] = [];
    let skip = offset;
    let left = length;
    for (const b of part) {
      if (left === 0) break;
      if (skip >= b.len) {
        skip -= b.len;
        continue;
      }
      const n = Math.min(b.len - skip, left);
      out.push({ addr: b.addr + skip, len: n });
      skip = 0;
      left -= n;
    }
    return out;
  }
}
