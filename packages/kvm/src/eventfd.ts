/**
 * eventfd(2) counters, as used by KVM_IOEVENTFD (a guest write signals the
 * fd without leaving the kernel) and KVM_IRQFD (signalling the fd injects an
 * interrupt). Always non-blocking: `read()` returns null when the counter is
 * zero. `waitReadable()` blocks and is meant for worker threads (iothreads).
 */
import { kvmNative, type FdWatchHandle } from './native.js';

/** A readability watch started with EventFd.watch. */
export interface EventFdWatch {
  stop(): void;
}
import { KvmStateError } from './errors.js';

export interface EventFdOptions {
  initialValue?: number;
  /** EFD_SEMAPHORE: each read returns 1 and decrements the counter */
  semaphore?: boolean;
}

export class EventFd {
  private fdValue: number;
  private constructor(
    fd: number,
    /** false for an fd borrowed with EventFd.borrow: close() leaves it open */
    readonly owned: boolean,
  ) {
    this.fdValue = fd;
  }

  static create(options: EventFdOptions = {}): EventFd {
    const c = kvmNative.constants;
    const flags = (c.EFD_NONBLOCK ?? 0) | (options.semaphore === true ? (c.EFD_SEMAPHORE ?? 0) : 0);
    return new EventFd(kvmNative.eventfdCreate(options.initialValue ?? 0, flags), true);
  }

  /**
   * Wraps an eventfd owned elsewhere, e.g. an fd number posted to a worker
   * (fds are per process, so any thread may use it). The owner closes it.
   */
  static borrow(fd: number): EventFd {
    return new EventFd(fd, false);
  }

  get fd(): number {
    if (this.fdValue < 0) throw new KvmStateError('ERR_KVM_CLOSED', 'the eventfd is closed');
    return this.fdValue;
  }

  get closed(): boolean {
    return this.fdValue < 0;
  }

  /** Reads and resets the counter; null when it was zero. */
  read(): bigint | null {
    return kvmNative.eventfdRead(this.fd);
  }

  /** Adds `value` to the counter; false if that would overflow it (EAGAIN). */
  write(value = 1n): boolean {
    return kvmNative.eventfdWrite(this.fd, value);
  }

  /** Blocks up to timeoutMs (-1: forever) until readable. Not on the main thread. */
  waitReadable(timeoutMs: number): boolean {
    return kvmNative.pollReadable(this.fd, timeoutMs);
  }

  /**
   * Calls `onSignal` from this thread's event loop whenever the counter is
   * non-zero (the callback should read() it). Keeps the event loop alive until
   * stopped. Works in worker threads: this is how an iothread waits for kicks.
   */
  watch(onSignal: () => void): EventFdWatch {
    let handle: FdWatchHandle | undefined = kvmNative.fdWatchReadable(this.fd, (status) => {
      if (status < 0) throw new KvmStateError('ERR_KVM_ARGUMENT', `watching eventfd ${this.fdValue} failed (libuv status ${status})`);
      onSignal();
    });
    return {
      stop: () => {
        if (handle === undefined) return;
        kvmNative.fdUnwatch(handle);
        handle = undefined;
      },
    };
  }

  close(): void {
    if (this.fdValue < 0) return;
    const fd = this.fdValue;
    this.fdValue = -1;
    if (this.owned) kvmNative.close(fd);
  }
}
