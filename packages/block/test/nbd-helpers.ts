/**
 * Test support for the NBD server: an in-memory sparse disk, a raw-file
 * driver for `tsvmm nbd serve` (packages cannot use the raw plugin), a raw
 * socket client that speaks the handshake byte by byte, and async qemu tools
 * (the server runs in this process, so spawnSync would deadlock it).
 */
import { spawn } from 'node:child_process';
import net, { type Socket } from 'node:net';
import type { BlockDevice, BlockDriverDefinition, BlockStatusExtent, ImageInfo } from '../src/driver.js';
import { ImageFile } from '../src/image-file.js';
import { checkRequest, checkWritable } from '../src/request.js';
import { SocketReader } from '../src/nbd/socket-reader.js';
import {
  encodeOption,
  IHAVEOPT,
  NBDMAGIC,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  OPTION_REPLY_HEADER_SIZE,
  REPLY_MAGIC,
} from '../src/nbd/protocol.js';

const CHUNK = 64 * 1024;

/** A disk in memory that remembers which 64 KiB chunks were ever written (for block status). */
export class MemoryDevice implements BlockDevice {
  readonly format = 'memory';
  readonly alignment = 1;
  readonly data: Uint8Array;
  readonly written: Uint8Array;
  closed = false;
  flushes = 0;

  constructor(
    readonly size: number,
    readonly readOnly = false,
    readonly filename = 'memory',
  ) {
    this.data = new Uint8Array(size);
    this.written = new Uint8Array(Math.ceil(size / CHUNK));
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    checkRequest(this, offset, buf.length);
    buf.set(this.data.subarray(offset, offset + buf.length));
  }
  async write(offset: number, buf: Uint8Array): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, buf.length);
    this.data.set(buf, offset);
    if (buf.length > 0) this.written.fill(1, Math.floor(offset / CHUNK), Math.floor((offset + buf.length - 1) / CHUNK) + 1);
  }
  async flush(): Promise<void> {
    this.flushes++;
  }
  async discard(offset: number, length: number): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    // whole chunks become holes
    const first = Math.ceil(offset / CHUNK);
    const end = Math.floor((offset + length) / CHUNK);
    for (let c = first; c < end; c++) {
      this.written[c] = 0;
      this.data.fill(0, c * CHUNK, (c + 1) * CHUNK);
    }
  }
  async writeZeroes(offset: number, length: number): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    this.data.fill(0, offset, offset + length);
  }
  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    checkRequest(this, offset, length);
    const c = Math.floor(offset / CHUNK);
    const w = this.written[c] === 1;
    let end = Math.min((c + 1) * CHUNK, offset + length);
    for (let k = c + 1; end < offset + length && (this.written[k] === 1) === w; k++) end = Math.min((k + 1) * CHUNK, offset + length);
    return { offset, length: end - offset, data: w, zero: !w, allocated: w, depth: 0 };
  }
  async info(): Promise<ImageInfo> {
    return { filename: this.filename, format: this.format, 'virtual-size': this.size };
  }
  async resize(): Promise<void> {
    throw new Error('fixed size');
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

/** A minimal raw driver over ImageFile, with holes from SEEK_DATA/SEEK_HOLE. */
export const testRawDriver: BlockDriverDefinition = {
  format: 'raw',
  probe: () => 1,
  async open(opts) {
    const file = await ImageFile.open(opts.filename, { readOnly: opts.readOnly ?? false });
    const size = await file.size();
    const dev: BlockDevice = {
      format: 'raw',
      filename: opts.filename,
      readOnly: opts.readOnly ?? false,
      size,
      alignment: 1,
      read: (o, b) => file.readZeroFilled(o, b),
      write: (o, b) => file.write(o, b),
      flush: () => file.datasync(),
      discard: async (o, l) => void (await file.punchHole(o, l)),
      writeZeroes: (o, l) => file.zeroRange(o, l),
      async blockStatus(o, l) {
        const d = file.seekData(o);
        if (d === o) {
          const h = file.seekHole(o);
          return { offset: o, length: Math.max(1, Math.min(h < 0 ? o + l : h, o + l) - o), data: true, zero: false, allocated: true, depth: 0 };
        }
        return { offset: o, length: Math.min(d < 0 ? o + l : d, o + l) - o, data: false, zero: true, allocated: true, depth: 0 };
      },
      info: async () => ({ filename: opts.filename, format: 'raw', 'virtual-size': size }),
      resize: async () => undefined,
      close: () => file.close(),
    };
    return dev;
  },
};

/** Runs a qemu-utils tool asynchronously; a missing tool fails naming the package. */
export function qemuAsync(tool: string, args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(tool, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    c.on('error', (e: NodeJS.ErrnoException) =>
      reject(e.code === 'ENOENT' ? new Error(`${tool} is not installed: install the Debian package qemu-utils (apt-get install qemu-utils)`) : e),
    );
    c.on('exit', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

/** A client that drives the protocol by hand, for malformed and hostile input. */
export class RawNbdClient {
  readonly reader: SocketReader;
  private constructor(readonly socket: Socket) {
    this.reader = new SocketReader(socket);
  }

  static async connect(port: number): Promise<RawNbdClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = net.createConnection(port, '127.0.0.1');
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    socket.on('error', () => undefined);
    return new RawNbdClient(socket);
  }

  /** Reads the greeting and sends client flags; returns the handshake flags. */
  async greet(clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const h = await this.reader.read(18);
    if (h.readBigUInt64BE(0) !== NBDMAGIC || h.readBigUInt64BE(8) !== IHAVEOPT) throw new Error('bad greeting');
    const f = Buffer.alloc(4);
    f.writeUInt32BE(clientFlags, 0);
    this.socket.write(f);
    return h.readUInt16BE(16);
  }

  send(b: Uint8Array): void {
    this.socket.write(b);
  }

  option(option: number, data?: Uint8Array): void {
    this.socket.write(encodeOption(option, data));
  }

  async optionReply(): Promise<{ option: number; type: number; data: Buffer }> {
    const h = await this.reader.read(OPTION_REPLY_HEADER_SIZE);
    if (h.readBigUInt64BE(0) !== REPLY_MAGIC) throw new Error('bad option reply magic');
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await this.reader.read(h.readUInt32BE(16)) };
  }

  /** Resolves true once the server has closed the connection. */
  closed(timeoutMs = 5000): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.socket.destroyed || this.socket.readableEnded) {
        resolve(true);
        return;
      }
      const t = setTimeout(() => resolve(false), timeoutMs);
      const done = (): void => {
        clearTimeout(t);
        resolve(true);
      };
      this.socket.once('end', done);
      this.socket.once('close', done);
    });
  }

  close(): void {
    this.socket.destroy();
  }
}
