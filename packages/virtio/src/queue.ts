/**
 * The split virtqueue, device side (OASIS VIRTIO 1.2 §2.7 "Split
 * Virtqueues": §2.7.5 descriptor table, §2.7.5.3 indirect descriptors,
 * §2.7.6 available ring, §2.7.7 used buffer notification suppression,
 * §2.7.8 used ring, §2.7.10 available buffer notification suppression,
 * §2.7.13 receiving used buffers).
 *
 * Contract (the rust-vmm virtio-queue shape):
 *
 * - `pop()` takes the next available descriptor chain. It never throws and
 *   never touches memory outside guest RAM: every guest-supplied index,
 *   address and length is checked, and a malformed chain — a loop, a chain
 *   longer than the queue, an address or length outside RAM or overflowing,
 *   a bad indirect table, nested indirection, a head index out of range, an
 *   available index that moved by more than the queue size — comes back as
 *   `{ kind: 'invalid', error }`. The device then sets DEVICE_NEEDS_RESET and
 *   stops using the queue (the queue itself keeps no "broken" state).
 * - The queue does not judge buffer direction. Each buffer carries its
 *   `writable` flag; the device checks that what it reads is device-readable
 *   and what it writes is device-writable (see chain.ts).
 * - `addUsed(head, len)` returns a chain to the driver and publishes the new
 *   used index at once. `needsNotification()` then says whether the driver
 *   asked to be interrupted (VIRTQ_AVAIL_F_NO_INTERRUPT, or used_event with
 *   VIRTIO_F_EVENT_IDX).
 * - Kick suppression: a device that drains the queue calls
 *   `disableNotification()`, pops until empty, then `enableNotification()`;
 *   a true result means buffers arrived in between (the driver may have seen
 *   notifications off and not kicked), so it drains again:
 *
 *       do {
 *         queue.disableNotification();
 *         for (let p = queue.pop(); p.kind === 'chain'; p = queue.pop()) handle(p.chain);
 *       } while (queue.enableNotification());
 *
 * Memory ordering: guest RAM is a SharedArrayBuffer the vCPUs write
 * concurrently. The avail index is read and the used index written with
 * Atomics (sequentially consistent), so ring entries are read after the index
 * that published them and used elements are visible before the index that
 * publishes them; the seq-cst store → load pairs give the full barriers that
 * §2.7.7.2 and §2.7.10 require between publishing an index and reading the
 * other side's event index.
 *
 * The rings live in one guest RAM region each (checked when the queue is
 * opened); typed-array views over them are made once, so the hot path does
 * no range lookups. Descriptor tables (direct and indirect) are read through
 * checked views as well.
 */
import { GuestMemoryError, type GuestMemory } from '@tsvmm/core';
import {
  VIRTQ_AVAIL_ALIGN,
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_ALIGN,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_DESC_SIZE,
  VIRTQ_MAX_SIZE,
  VIRTQ_USED_ALIGN,
  VIRTQ_USED_F_NO_NOTIFY,
  availRingBytes,
  usedRingBytes,
} from './spec.js';

/** What the driver configured for one queue (common configuration queue_* fields and negotiated ring features). */
export interface QueueConfig {
  /** queue_size: a power of 2, 1..32768 */
  size: number;
  /** queue_desc: guest physical address of the descriptor table */
  descTable: number;
  /** queue_driver: guest physical address of the available ring (driver area) */
  availRing: number;
  /** queue_device: guest physical address of the used ring (device area) */
  usedRing: number;
  /** VIRTIO_F_EVENT_IDX negotiated */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated */
  indirectDesc: boolean;
}

/** Where a queue resumes (after migration, or on another thread). Zero for a freshly enabled queue. */
export interface QueueCursor {
  nextAvail: number;
  nextUsed: number;
}

/** Why a queue or a chain was rejected. */
export type VirtqueueFault =
  | 'bad-size'
  | 'misaligned-ring'
  | 'ring-outside-ram'
  | 'avail-index-jump'
  | 'head-out-of-range'
  | 'next-out-of-range'
  | 'chain-too-long'
  | 'buffer-outside-ram'
  | 'indirect-not-negotiated'
  | 'indirect-with-next'
  | 'nested-indirect'
  | 'indirect-bad-length'
  | 'indirect-outside-ram';

/** A guest-caused queue error: names the fault and the guest values involved. Devices turn it into DEVICE_NEEDS_RESET. */
export class VirtqueueError extends Error {
  constructor(
    readonly fault: VirtqueueFault,
    message: string,
  ) {
    super(message);
    this.name = 'VirtqueueError';
  }
}

/** One buffer of a chain (one struct virtq_desc that is not an indirect table pointer). */
export interface VirtqBuffer {
  /** guest physical address, checked: [addr, addr+len) lies in guest RAM */
  readonly addr: number;
  readonly len: number;
  /** VIRTQ_DESC_F_WRITE: device-writable (else device-readable) */
  readonly writable: boolean;
}

/** A descriptor chain taken from the available ring. */
export interface DescriptorChain {
  /** the head descriptor index: what addUsed() gives back */
  readonly head: number;
  /** buffers in chain order, indirect tables flattened */
  readonly buffers: readonly VirtqBuffer[];
}

export type PopResult =
  | { readonly kind: 'chain'; readonly chain: DescriptorChain }
  | { readonly kind: 'empty' }
  | { readonly kind: 'invalid'; readonly error: VirtqueueError };

const EMPTY: PopResult = { kind: 'empty' };
const TWO_32 = 0x1_0000_0000;

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** A view of [gpa, gpa+length) if it lies in one RAM region, else undefined. */
function regionSlice(memory: GuestMemory, gpa: number, length: number): Uint8Array | undefined {
  if (!memory.contains(gpa, length)) return undefined;
  try {
    return memory.slice(gpa, length);
  } catch (err) {
    if (err instanceof GuestMemoryError) return undefined;
    throw err;
  }
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
  // The ring views below are host-endian typed arrays; virtio 1.x rings are little-endian.
  throw new Error('@tsvmm/virtio needs a little-endian host');
}

export class SplitQueue {
  /** the next avail ring slot to take (free-running u16, as avail->idx) */
  nextAvail: number;
  /** the next used ring slot to fill (free-running u16, as used->idx) */
  nextUsed: number;
  /** used->idx when the driver was last notified, for VIRTIO_F_EVENT_IDX */
  private signalledUsed: number | undefined;
  private readonly desc: Uint32Array;
  private readonly avail: Uint16Array;
  private readonly usedU16: Uint16Array;
  private readonly usedU32: Uint32Array;
  private readonly size: number;
  private readonly mask: number;
  /** avail->ring[] index of used_event, used->ring[] u16 index of avail_event */
  private readonly usedEventIdx: number;
  private readonly availEventIdx: number;

  private constructor(
    private readonly memory: GuestMemory,
    readonly config: Readonly<QueueConfig>,
    views: { desc: Uint8Array; avail: Uint8Array; used: Uint8Array },
    cursor: QueueCursor,
  ) {
    this.size = config.size;
    this.mask = config.size - 1;
    this.desc = new Uint32Array(views.desc.buffer, views.desc.byteOffset, (config.size * VIRTQ_DESC_SIZE) / 4);
    this.avail = new Uint16Array(views.avail.buffer, views.avail.byteOffset, availRingBytes(config.size) / 2);
    // The used ring is 6 + 8n bytes: the u32 view covers flags/idx and the elements, the u16 view adds avail_event.
    this.usedU16 = new Uint16Array(views.used.buffer, views.used.byteOffset, usedRingBytes(config.size) / 2);
    this.usedU32 = new Uint32Array(views.used.buffer, views.used.byteOffset, 1 + 2 * config.size);
    this.usedEventIdx = 2 + config.size;
    this.availEventIdx = 2 + 4 * config.size;
    this.nextAvail = cursor.nextAvail & 0xffff;
    this.nextUsed = cursor.nextUsed & 0xffff;
  }

  /**
   * Checks the driver's queue configuration (§2.7: size a power of 2 up to
   * 32768, descriptor table 16-aligned, driver area 2-aligned, device area
   * 4-aligned, all of them in guest RAM) and opens the queue, or says why not.
   * Each ring must lie within one RAM region (a limitation: ring accesses use
   * one typed-array view each).
   */
  static open(memory: GuestMemory, config: QueueConfig, cursor: QueueCursor = { nextAvail: 0, nextUsed: 0 }): SplitQueue | VirtqueueError {
    const { size, descTable, availRing, usedRing } = config;
    if (!Number.isInteger(size) || !isPowerOfTwo(size) || size > VIRTQ_MAX_SIZE) {
      return new VirtqueueError('bad-size', `queue size ${size} is not a power of 2 between 1 and ${VIRTQ_MAX_SIZE}`);
    }
    const parts = [
      { name: 'descriptor table', gpa: descTable, align: VIRTQ_DESC_ALIGN, bytes: size * VIRTQ_DESC_SIZE },
      { name: 'available ring', gpa: availRing, align: VIRTQ_AVAIL_ALIGN, bytes: availRingBytes(size) },
      { name: 'used ring', gpa: usedRing, align: VIRTQ_USED_ALIGN, bytes: usedRingBytes(size) },
    ];
    const views: Uint8Array[] = [];
    for (const p of parts) {
      if (!Number.isSafeInteger(p.gpa) || p.gpa < 0) {
        return new VirtqueueError('ring-outside-ram', `${p.name} at ${String(p.gpa)} is not a guest RAM address`);
      }
      if (p.gpa % p.align !== 0) {
        return new VirtqueueError('misaligned-ring', `${p.name} at ${hex(p.gpa)} is not ${p.align}-byte aligned`);
      }
      const view = regionSlice(memory, p.gpa, p.bytes);
      if (view === undefined) {
        return new VirtqueueError('ring-outside-ram', `${p.name} at ${hex(p.gpa)} (${p.bytes} bytes) is not within one guest RAM region`);
      }
      views.push(view);
    }
    const [desc, avail, used] = views as [Uint8Array, Uint8Array, Uint8Array];
    return new SplitQueue(memory, { ...config }, { desc, avail, used }, cursor);
  }

  /** avail->idx as the driver last published it. */
  availIdx(): number {
    return Atomics.load(this.avail, 1);
  }

  /** avail->flags */
  availFlags(): number {
    return Atomics.load(this.avail, 0);
  }

  /** Chains the driver made available that were not popped yet (0..size, or more if the driver is broken). */
  pending(): number {
    return (this.availIdx() - this.nextAvail) & 0xffff;
  }

  /** Takes the next available chain; see the contract at the top of the file. */
  pop(): PopResult {
    const availIdx = this.availIdx();
    const pending = (availIdx - this.nextAvail) & 0xffff;
    if (pending === 0) return EMPTY;
    if (pending > this.size) {
      return this.invalid('avail-index-jump', `avail->idx moved from ${this.nextAvail} to ${availIdx}, more than the queue size ${this.size}`);
    }
    const head = Atomics.load(this.avail, 2 + (this.nextAvail & this.mask));
    if (head >= this.size) {
      return this.invalid('head-out-of-range', `avail->ring[${this.nextAvail & this.mask}] names descriptor ${head}, but the queue has ${this.size}`);
    }
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    const walked = this.walk(head);
    if (walked instanceof VirtqueueError) return { kind: 'invalid', error: walked };
    return { kind: 'chain', chain: { head, buffers: walked } };
  }

  /**
   * Walks a chain from `head`. Loops are caught by counting: a chain may not
   * hold more buffers than the queue has entries (§2.7.5.3.1 "A driver MUST
   * NOT create a descriptor chain longer than the Queue Size"), and within an
   * indirect table no more than the table has entries.
   */
  private walk(head: number): VirtqBuffer[] | VirtqueueError {
    const buffers: VirtqBuffer[] = [];
    let table: Uint32Array = this.desc;
    let tableGpa = this.config.descTable;
    let tableLen = this.size;
    let indirect = false;
    let index = head;
    let stepsInTable = 0;
    for (;;) {
      if (stepsInTable >= tableLen || buffers.length >= this.size) {
        return this.fault(
          'chain-too-long',
          `chain at head ${head} has more than ${indirect ? `${tableLen} descriptors in its indirect table at ${hex(tableGpa)}` : `${this.size} descriptors (a loop?)`}`,
        );
      }
      stepsInTable++;
      const w = index * 4;
      const addrLo = table[w] as number;
      const addrHi = table[w + 1] as number;
      const len = table[w + 2] as number;
      const flagsNext = table[w + 3] as number;
      const flags = flagsNext & 0xffff;
      const next = flagsNext >>> 16;
      // Addresses of 2^53 and beyond are no RAM address; keep them out of float arithmetic.
      const addr = addrHi >= 0x20_0000 ? Number.MAX_SAFE_INTEGER : addrHi * TWO_32 + addrLo;

      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.config.indirectDesc) {
          return this.fault('indirect-not-negotiated', `descriptor ${index} of chain ${head} is indirect, but VIRTIO_F_INDIRECT_DESC was not negotiated`);
        }
        if (indirect) return this.fault('nested-indirect', `indirect table at ${hex(tableGpa)} (chain ${head}) holds an indirect descriptor`);
        if (flags & VIRTQ_DESC_F_NEXT) {
          return this.fault('indirect-with-next', `descriptor ${index} of chain ${head} sets both VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT`);
        }
        if (len === 0 || len % VIRTQ_DESC_SIZE !== 0) {
          return this.fault('indirect-bad-length', `indirect table at ${hex(addr)} (chain ${head}) has length ${len}, not a non-zero multiple of ${VIRTQ_DESC_SIZE}`);
        }
        const view = regionSlice(this.memory, addr, len);
        if (view === undefined) {
          return this.fault('indirect-outside-ram', `indirect table at ${hex(addr)} length ${len} (chain ${head}) is not within guest RAM`);
        }
        // Indirect tables carry no alignment requirement; copy a misaligned one so it can be read as u32 words.
        table = view.byteOffset % 4 === 0 ? new Uint32Array(view.buffer, view.byteOffset, len / 4) : new Uint32Array(view.slice().buffer);
        tableGpa = addr;
        tableLen = len / VIRTQ_DESC_SIZE;
        indirect = true;
        index = 0;
        stepsInTable = 0;
        continue;
      }

      // A zero-length buffer must still name a RAM address: devices compute with it.
      if (!this.memory.contains(addr, Math.max(len, 1))) {
        return this.fault('buffer-outside-ram', `descriptor ${index} of chain ${head} points at ${hex(addr)} length ${len}, outside guest RAM`);
      }
      buffers.push({ addr, len, writable: (flags & VIRTQ_DESC_F_WRITE) !== 0 });
      if (!(flags & VIRTQ_DESC_F_NEXT)) return buffers;
      if (next >= tableLen) {
        return this.fault('next-out-of-range', `descriptor ${index} of chain ${head} links to ${next}, beyond the ${tableLen}-entry ${indirect ? 'indirect ' : ''}table`);
      }
      index = next;
    }
  }

  /**
   * Returns chain `head` to the driver with `len` bytes written into its
   * device-writable buffers, and publishes the new used index.
   */
  addUsed(head: number, len: number): void {
    const slot = this.nextUsed & this.mask;
    this.usedU32[1 + 2 * slot] = head;
    this.usedU32[2 + 2 * slot] = len >>> 0;
    this.nextUsed = (this.nextUsed + 1) & 0xffff;
    // seq-cst store: the element above is visible before the index that publishes it.
    Atomics.store(this.usedU16, 1, this.nextUsed);
    this.memory.markDirty(this.config.usedRing + 4 + 8 * slot, 8);
    this.memory.markDirty(this.config.usedRing + 2, 2);
  }

  /**
   * Whether the driver wants a used buffer notification now (§2.7.7.2):
   * without VIRTIO_F_EVENT_IDX unless it set VIRTQ_AVAIL_F_NO_INTERRUPT; with
   * it, when used->idx passed used_event since the last notification. Call
   * after addUsed(); a true result counts as notified.
   */
  needsNotification(): boolean {
    const newIdx = this.nextUsed;
    const old = this.signalledUsed;
    this.signalledUsed = newIdx;
    if (!this.config.eventIdx) return (this.availFlags() & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    if (old === undefined) return true;
    if (old === newIdx) return false;
    const usedEvent = Atomics.load(this.avail, this.usedEventIdx);
    // vring_need_event(event, new, old): (u16)(new - event - 1) < (u16)(new - old)
    return ((newIdx - usedEvent - 1) & 0xffff) < ((newIdx - old) & 0xffff);
  }

  /** Asks the driver not to kick (§2.7.10): used->flags NO_NOTIFY, or nothing with EVENT_IDX (avail_event stays behind). */
  disableNotification(): void {
    if (!this.config.eventIdx) {
      Atomics.store(this.usedU16, 0, VIRTQ_USED_F_NO_NOTIFY);
      this.memory.markDirty(this.config.usedRing, 2);
    }
  }

  /**
   * Asks the driver to kick again for new buffers and reports whether some
   * arrived meanwhile (then the caller drains again, see the contract).
   */
  enableNotification(): boolean {
    if (this.config.eventIdx) {
      Atomics.store(this.usedU16, this.availEventIdx, this.nextAvail);
      this.memory.markDirty(this.config.usedRing + 4 + 8 * this.size, 2);
    } else {
      Atomics.store(this.usedU16, 0, 0);
      this.memory.markDirty(this.config.usedRing, 2);
    }
    // The seq-cst store above orders before this load: the full barrier §2.7.10 asks for.
    return this.availIdx() !== this.nextAvail;
  }

  cursor(): QueueCursor {
    return { nextAvail: this.nextAvail, nextUsed: this.nextUsed };
  }

  private fault(fault: VirtqueueFault, message: string): VirtqueueError {
    return new VirtqueueError(fault, message);
  }

  private invalid(fault: VirtqueueFault, message: string): PopResult {
    return { kind: 'invalid', error: new VirtqueueError(fault, message) };
  }
}
