/**
 * Test support (`@tsvmm/virtio/testing`): the driver's side of a split
 * virtqueue (OASIS VIRTIO 1.2 §2.7), written into a GuestMemory the way a
 * guest driver would, so devices and the queue are tested through the same
 * memory they meet in a VM. Raw setters let hostile-input tests write any
 * descriptor, ring entry or index they like.
 */
import type { GuestMemory } from '@tsvmm/core';
import type { QueueConfig } from '../queue.js';
import {
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  availRingBytes,
} from '../spec.js';

export interface MockBuffer {
  /** bytes the device may read (a readable buffer), or the size of a writable one */
  data?: Uint8Array;
  len?: number;
  writable?: boolean;
}

export interface RawDescriptor {
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

export interface MockVirtqueueOptions {
  size: number;
  /** where the rings start; the descriptor table comes first (default 0x1000) */
  base?: number;
  /** where buffers and indirect tables are allocated from (default after the rings) */
  dataBase?: number;
  eventIdx?: boolean;
  indirectDesc?: boolean;
}

function align(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** The driver side of one split virtqueue in guest memory. */
export class MockVirtqueue {
  readonly config: QueueConfig;
  private nextDesc = 0;
  private availIdxValue = 0;
  private dataNext: number;

  constructor(
    readonly memory: GuestMemory,
    opts: MockVirtqueueOptions,
  ) {
    const size = opts.size;
    const base = opts.base ?? 0x1000;
    const descTable = base;
    const availRing = descTable + size * VIRTQ_DESC_SIZE;
    const usedRing = align(availRing + availRingBytes(size), 4096);
    this.config = { size, descTable, availRing, usedRing, eventIdx: opts.eventIdx ?? false, indirectDesc: opts.indirectDesc ?? false };
    this.dataNext = opts.dataBase ?? align(usedRing + 6 + 8 * size, 4096);
    // A freshly enabled queue has zeroed rings (drivers zero them).
    memory.fill(descTable, usedRing + 6 + 8 * size - descTable, 0);
  }

  /** Reserves `len` bytes of guest memory for buffers (16-aligned). */
  alloc(len: number): number {
    const at = align(this.dataNext, 16);
    this.dataNext = at + Math.max(len, 1);
    return at;
  }

  /** Writes descriptor `index` of the table at `table` (default: the queue's own table). */
  writeDescriptor(index: number, d: RawDescriptor, table = this.config.descTable): void {
    const at = table + index * VIRTQ_DESC_SIZE;
    this.memory.writeU64(at, typeof d.addr === 'bigint' ? d.addr : BigInt(d.addr));
    this.memory.writeU32(at + 8, d.len >>> 0);
    this.memory.writeU16(at + 12, d.flags);
    this.memory.writeU16(at + 14, d.next);
  }

  /**
   * Puts a chain of fresh buffers into the table (readable ones first, as the
   * caller lists them) and returns its head; with `indirect`, the buffers go
   * into an indirect table referenced by a single descriptor.
   */
  addChain(buffers: MockBuffer[], opts: { indirect?: boolean } = {}): { head: number; addrs: number[] } {
    const addrs = buffers.map((b) => {
      const len = b.data?.length ?? b.len ?? 0;
      const addr = this.alloc(len);
      if (b.data) this.memory.write(addr, b.data);
      return addr;
    });
    const descs = buffers.map((b, i) => ({
      addr: addrs[i] ?? 0,
      len: b.data?.length ?? b.len ?? 0,
      flags: (b.writable ? VIRTQ_DESC_F_WRITE : 0) | (i < buffers.length - 1 ? VIRTQ_DESC_F_NEXT : 0),
      next: 0,
    }));
    if (opts.indirect) {
      const table = this.alloc(descs.length * VIRTQ_DESC_SIZE);
      descs.forEach((d, i) => this.writeDescriptor(i, { ...d, next: i + 1 }, table));
      const head = this.takeDescriptors(1)[0] ?? 0;
      this.writeDescriptor(head, { addr: table, len: descs.length * VIRTQ_DESC_SIZE, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      return { head, addrs };
    }
    const idx = this.takeDescriptors(descs.length);
    descs.forEach((d, i) => this.writeDescriptor(idx[i] ?? 0, { ...d, next: idx[i + 1] ?? 0 }));
    return { head: idx[0] ?? 0, addrs };
  }

  /** Makes `head` available: avail->ring[idx % size] = head, then avail->idx++. */
  publish(head: number): void {
    const slot = this.availIdxValue % this.config.size;
    this.memory.writeU16(this.config.availRing + 4 + 2 * slot, head);
    this.availIdxValue = (this.availIdxValue + 1) & 0xffff;
    this.memory.writeU16(this.config.availRing + 2, this.availIdxValue);
  }

  /** Adds a chain and publishes it. */
  submit(buffers: MockBuffer[], opts: { indirect?: boolean } = {}): { head: number; addrs: number[] } {
    const c = this.addChain(buffers, opts);
    this.publish(c.head);
    return c;
  }

  setAvailIdx(v: number): void {
    this.availIdxValue = v & 0xffff;
    this.memory.writeU16(this.config.availRing + 2, this.availIdxValue);
  }
  setAvailRingEntry(slot: number, head: number): void {
    this.memory.writeU16(this.config.availRing + 4 + 2 * slot, head);
  }
  setAvailFlags(v: number): void {
    this.memory.writeU16(this.config.availRing, v);
  }
  /** used_event (in the driver area, after the ring) */
  setUsedEvent(v: number): void {
    this.memory.writeU16(this.config.availRing + 4 + 2 * this.config.size, v);
  }

  usedIdx(): number {
    return this.memory.readU16(this.config.usedRing + 2);
  }
  usedFlags(): number {
    return this.memory.readU16(this.config.usedRing);
  }
  /** avail_event (in the device area, after the ring) */
  availEvent(): number {
    return this.memory.readU16(this.config.usedRing + 4 + 8 * this.config.size);
  }
  usedElem(i: number): { id: number; len: number } {
    const at = this.config.usedRing + 4 + 8 * (i % this.config.size);
    return { id: this.memory.readU32(at), len: this.memory.readU32(at + 4) };
  }
  /** Every used element from `from` up to used->idx. */
  usedSince(from: number): { id: number; len: number }[] {
    const out: { id: number; len: number }[] = [];
    for (let i = from; i !== this.usedIdx(); i = (i + 1) & 0xffff) out.push(this.usedElem(i));
    return out;
  }

  private takeDescriptors(n: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      out.push(this.nextDesc);
      this.nextDesc = (this.nextDesc + 1) % this.config.size;
    }
    return out;
  }
}
export * from './pci.js';
