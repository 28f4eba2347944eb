/**
 * Guest RAM: a memfd mapped MAP_SHARED and exposed as a SharedArrayBuffer
 * (native/guest_ram.cc). Any worker_thread that receives `buffer` through
 * postMessage reads and writes the same memory the guest sees, without
 * copies. The mapping and the memfd are released when the last
 * SharedArrayBuffer over it, in any thread, is garbage-collected; a Vm that
 * maps a GuestRam keeps it reachable until the memslot is deleted or the Vm
 * is closed (api.rst "KVM_SET_USER_MEMORY_REGION": KVM accesses the memory
 * through its host virtual address, so it must stay mapped).
 */
import { guestRamNative } from './native.js';

export const PAGE_SIZE = 4096;

export interface GuestRamOptions {
  /** memfd name, visible in /proc/<pid>/fd and /proc/<pid>/maps */
  name?: string;
}

export class GuestRam {
  /** the memory, shareable with worker threads */
  readonly buffer: SharedArrayBuffer;
  /** bytes, a multiple of PAGE_SIZE */
  readonly size: number;
  /**
   * The memfd. Owned by the mapping: valid while `buffer` is reachable
   * somewhere; do not close it. Use it to share or save guest RAM.
   */
  readonly fd: number;
  /** host virtual address of byte 0 (what KVM_SET_USER_MEMORY_REGION takes) */
  readonly hostAddress: bigint;

  private constructor(buffer: SharedArrayBuffer, fd: number, hostAddress: bigint) {
    this.buffer = buffer;
    this.size = buffer.byteLength;
    this.fd = fd;
    this.hostAddress = hostAddress;
  }

  /**
   * Allocates `size` bytes of zeroed guest RAM. Pages are only backed when
   * touched. On Node 20 a typed array spans at most 4 GiB, so larger guests
   * use one GuestRam per region (ARCHITECTURE.md, "Guest memory and DMA").
   */
  static allocate(size: number, options: GuestRamOptions = {}): GuestRam {
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
      throw new RangeError(`guest RAM size must be a positive multiple of ${PAGE_SIZE}, got ${size}`);
    }
    const { buffer, fd, hostAddress } = guestRamNative.allocate(size, options.name ?? 'tsvmm-ram');
    return new GuestRam(buffer, fd, hostAddress);
  }

  /** The host virtual address of any SharedArrayBuffer (e.g. one received in a worker). */
  static hostAddressOf(buffer: SharedArrayBuffer): bigint {
    return guestRamNative.hostAddressOf(buffer);
  }

  /** A byte view of [offset, offset + length). */
  bytes(offset = 0, length = this.size - offset): Uint8Array {
    return new Uint8Array(this.buffer, offset, length);
  }
}
