/**
 * Character device backends: where a serial port's bytes go and come from.
 * Built-in backends: stdio, null, file:PATH. Plugins of kind `chardev-backend`
 * may add more; the RPC server adds one that batches output into
 * `console/output` notifications.
 */
import * as fs from 'node:fs';
import { ConfigError } from './errors.js';

export interface Chardev {
  readonly id: string;
  /** guest → host bytes */
  write(data: Uint8Array): void;
  /** host → guest bytes; one listener (the device the chardev is attached to) */
  setInputListener(listener: ((data: Uint8Array) => void) | undefined): void;
  /**
   * Flow control (QEMU's chr_can_read): the device has as much host input
   * waiting as it will hold, so a backend that can wait (a pipe, a terminal)
   * stops reading until it is called with false.
   */
  setInputPaused?(paused: boolean): void;
  close(): void;
}

export class NullChardev implements Chardev {
  constructor(readonly id: string) {}
  write(): void {}
  setInputListener(): void {}
  close(): void {}
}

/** Appends output to a file; no input. */
export class FileChardev implements Chardev {
  private fd: number;
  constructor(
    readonly id: string,
    readonly path: string,
  ) {
    try {
      this.fd = fs.openSync(path, 'a');
    } catch (err) {
      throw new ConfigError(`serial file '${path}' cannot be opened for writing: ${(err as Error).message}`, { cause: err });
    }
  }
  write(data: Uint8Array): void {
    if (this.fd >= 0) fs.writeSync(this.fd, data);
  }
  setInputListener(): void {}
  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}

/**
 * The process's stdin/stdout. Output is written synchronously so it is ordered
 * with the VM's exit. Input is read only while a listener is attached so an
 * idle stdin never keeps the process alive.
 */
export class StdioChardev implements Chardev {
  private listener: ((data: Uint8Array) => void) | undefined;
  private readonly onData = (chunk: Buffer): void => {
    this.listener?.(chunk);
  };
  constructor(
    readonly id: string,
    private readonly input: NodeJS.ReadableStream = process.stdin,
    private readonly outputFd = 1,
  ) {}
  write(data: Uint8Array): void {
    let off = 0;
    while (off < data.length) {
      try {
        off += fs.writeSync(this.outputFd, data, off, data.length - off);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') continue;
        throw err;
      }
    }
  }
  setInputListener(listener: ((data: Uint8Array) => void) | undefined): void {
    const had = this.listener !== undefined;
    this.listener = listener;
    if (listener !== undefined && !had) {
      this.input.on('data', this.onData);
      if (!this.inputPaused) this.input.resume();
    } else if (listener === undefined && had) {
      this.close();
    }
  }
  private inputPaused = false;
  setInputPaused(paused: boolean): void {
    if (paused === this.inputPaused) return;
    this.inputPaused = paused;
    // what stdin has read meanwhile stays in its buffer until then
    if (paused) this.input.pause();
    else if (this.listener !== undefined) this.input.resume();
  }
  close(): void {
    this.input.off('data', this.onData);
    this.input.pause();
    const maybeUnref = this.input as unknown as { unref?: () => void };
    maybeUnref.unref?.();
  }
}

/** Parse `--serial` values: stdio | null | file:PATH | none. */
export function createChardev(id: string, spec: string): Chardev | undefined {
  if (spec === 'none') return undefined;
  if (spec === 'stdio') return new StdioChardev(id);
  if (spec === 'null') return new NullChardev(id);
  if (spec.startsWith('file:') && spec.length > 5) return new FileChardev(id, spec.slice(5));
  throw new ConfigError(`unknown serial backend '${spec}'`, { hint: 'use stdio, null, none or file:PATH' });
}
