/**
 * The `rpc` console chardev: a serial port whose bytes travel over the
 * control protocol (`console/output`, `console/write`).
 *
 * The UART hands over one byte per THR write; sending a notification per byte
 * would cost a JSON message per character, so output is coalesced and flushed
 * FLUSH_DELAY_MS after the first pending byte, or at once when BATCH_LIMIT
 * bytes are pending, and on close (so the last line before an exit is not lost).
 */
import type { Chardev } from '@tsvmm/core';

export const FLUSH_DELAY_MS = 5;
export const BATCH_LIMIT = 16 * 1024;

export class RpcConsoleChardev implements Chardev {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private listener: ((data: Uint8Array) => void) | undefined;
  private closed = false;

  constructor(
    readonly id: string,
    private readonly send: (port: string, data: Uint8Array) => void,
  ) {}

  write(data: Uint8Array): void {
    if (this.closed || data.length === 0) return;
    // The device may reuse its buffer after write() returns.
    this.pending.push(data.slice());
    this.pendingBytes += data.length;
    if (this.pendingBytes >= BATCH_LIMIT) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FLUSH_DELAY_MS);
  }

  setInputListener(listener: ((data: Uint8Array) => void) | undefined): void {
    this.listener = listener;
  }

  /** Host → guest bytes (console/write). Returns false when no device listens on this port. */
  input(data: Uint8Array): boolean {
    if (this.listener === undefined) return false;
    this.listener(data);
    return true;
  }

  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pendingBytes === 0) return;
    const out = new Uint8Array(this.pendingBytes);
    let off = 0;
    for (const chunk of this.pending) {
      out.set(chunk, off);
      off += chunk.length;
    }
    this.pending = [];
    this.pendingBytes = 0;
    this.send(this.id, out);
  }

  close(): void {
    this.flush();
    this.closed = true;
    this.listener = undefined;
  }
}
