/**
 * Exact-length reads from a socket, for the NBD codec on both ends.
 *
 * Incoming chunks are queued; `read(n)` resolves with exactly n bytes (a
 * zero-copy slice when one chunk holds them) and `skip(n)` discards n bytes
 * without buffering them, so a hostile peer announcing a 4 GiB payload costs
 * no memory. The socket is paused while more than `highWater` bytes wait
 * unread, which bounds memory when the consumer falls behind.
 */
import type { Socket } from 'node:net';

export class SocketClosedError extends Error {
  constructor(message = 'connection closed') {
    super(message);
    this.name = 'SocketClosedError';
  }
}

interface Waiter {
  n: number;
  skip: boolean;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
}

export class SocketReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter: Waiter | undefined;
  private ended: Error | undefined;
  private paused = false;

  constructor(
    private readonly socket: Socket,
    private readonly highWater = 64 * 1024 * 1024,
  ) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.buffered += d.length;
      if (this.buffered > this.highWater && !this.paused) {
        this.paused = true;
        socket.pause();
      }
      this.serve();
    });
    const end = (e?: Error): void => {
      this.ended ??= e ?? new SocketClosedError();
      this.serve();
    };
    socket.on('end', () => end());
    socket.on('close', () => end());
    socket.on('error', (e: Error) => end(new SocketClosedError(`connection error: ${e.message}`)));
  }

  get bufferedBytes(): number {
    return this.buffered;
  }

  /** Resolves with exactly `n` bytes; rejects with SocketClosedError if the stream ends first. */
  read(n: number): Promise<Buffer> {
    return this.enqueue(n, false);
  }

  /** Discards exactly `n` bytes as they arrive. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      const step = Math.min(left, 1 << 20);
      await this.enqueue(step, true);
      left -= step;
    }
  }

  private enqueue(n: number, skip: boolean): Promise<Buffer> {
    if (this.waiter !== undefined) return Promise.reject(new Error('SocketReader: concurrent reads'));
    if (this.buffered >= n) return Promise.resolve(this.take(n, skip));
    if (this.ended !== undefined) return Promise.reject(this.ended);
    return new Promise<Buffer>((resolve, reject) => {
      this.waiter = { n, skip, resolve, reject };
      if (skip) this.serve();
    });
  }

  private serve(): void {
    const w = this.waiter;
    if (w === undefined) return;
    if (w.skip && this.buffered > 0 && this.buffered < w.n) {
      // drop what is here now; wait only for the rest
      w.n -= this.buffered;
      this.take(this.buffered, true);
      return;
    }
    if (this.buffered >= w.n) {
      this.waiter = undefined;
      w.resolve(this.take(w.n, w.skip));
    } else if (this.ended !== undefined) {
      this.waiter = undefined;
      w.reject(this.ended);
    }
  }

  private take(n: number, skip: boolean): Buffer {
    let out: Buffer;
    const first = this.chunks[0];
    if (first !== undefined && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = skip ? Buffer.alloc(0) : Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0];
        if (c === undefined) break;
        const k = Math.min(c.length, n - at);
        if (!skip) c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.buffered -= n;
    if (this.paused && this.buffered < this.highWater / 2) {
      this.paused = false;
      this.socket.resume();
    }
    return skip ? Buffer.alloc(0) : out;
  }
}
