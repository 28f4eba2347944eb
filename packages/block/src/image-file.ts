/**
 * A host file holding an image: positional I/O over a Node FileHandle, plus
 * durability (fdatasync) and sparseness (hole punching, SEEK_DATA/SEEK_HOLE)
 * through the native helper. Every failure becomes a BlockIOError naming the
 * file and the operation.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants as fsConstants, read as fsRead, write as fsWrite } from 'node:fs';
import { BlockFormatError, BlockIOError, BlockOptionError, BlockReadOnlyError } from './errors.js';
import { blockNative } from './native.js';

/** Reads up to this size try the page cache synchronously (a memcpy of at most this much). */
const NOWAIT_MAX = 256 * 1024;

export interface ImageFileOpenOptions {
  readOnly?: boolean;
  /** create the file if missing (and truncate it when `truncate` is set) */
  create?: boolean;
  truncate?: boolean;
  /**
   * qemu's cache=unsafe: datasync() does nothing. Only for throwaway output
   * (qemu-img convert uses it by default); never for a guest's disk.
   */
  unsafeNoSync?: boolean;
}

/** Reads the shared `cache` open option (none | writeback | unsafe), as qemu spells it. */
export function cacheModeIsUnsafe(options: Record<string, string> | undefined): boolean {
  const mode = options?.['cache'];
  if (mode === undefined || mode === 'writeback' || mode === 'none' || mode === 'directsync' || mode === 'writethrough') return false;
  if (mode === 'unsafe') return true;
  throw new BlockOptionError('cache', `'${mode}' must be writeback, none, writethrough, directsync or unsafe`);
}

export class ImageFile {
  private closed = false;
  /** set once a punch fails with EOPNOTSUPP so we stop asking the kernel */
  private punchUnsupported = false;
  /** set once preadv2(RWF_NOWAIT) turns out unsupported here */
  private noWaitUnsupported = false;

  private constructor(
    readonly filename: string,
    readonly readOnly: boolean,
    private readonly handle: FileHandle,
    private readonly unsafeNoSync: boolean,
  ) {}

  static async open(filename: string, opts: ImageFileOpenOptions = {}): Promise<ImageFile> {
    const readOnly = opts.readOnly ?? false;
    let flags = readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
    if (opts.create && !readOnly) flags |= fsConstants.O_CREAT;
    if (opts.truncate && !readOnly) flags |= fsConstants.O_TRUNC;
    try {
      const handle = await open(filename, flags, 0o644);
      return new ImageFile(filename, readOnly, handle, opts.unsafeNoSync ?? false);
    } catch (e) {
      throw new BlockIOError(filename, readOnly ? 'open (read-only)' : 'open (read-write)', e);
    }
  }

  get fd(): number {
    return this.handle.fd;
  }

  async size(): Promise<number> {
    try {
      return (await this.handle.stat()).size;
    } catch (e) {
      throw new BlockIOError(this.filename, 'fstat', e);
    }
  }

  /** bytes the file occupies on the host (st_blocks * 512), i.e. qemu-img's "disk size" */
  async allocatedBytes(): Promise<number> {
    try {
      return (await this.handle.stat()).blocks * 512;
    } catch (e) {
      throw new BlockIOError(this.filename, 'fstat', e);
    }
  }

  /**
   * Reads up to buf.length bytes at offset; returns how many were read
   * (short only at EOF). Small reads first try the page cache without
   * waiting (preadv2 RWF_NOWAIT): a hit costs a memcpy on this thread instead
   * of a thread-pool round trip, and a miss never blocks — it goes to the
   * pool like any other read.
   */
  async read(offset: number, buf: Uint8Array): Promise<number> {
    let done = 0;
    if (buf.length <= NOWAIT_MAX && !this.noWaitUnsupported) {
      const r = this.readNoWait(offset, buf);
      if (r === buf.length) return r;
      if (r > 0) done = r;
    }
    while (done < buf.length) {
      const n = await this.preadAsync(buf, done, buf.length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }

  private readNoWait(offset: number, buf: Uint8Array): number {
    let r: number;
    try {
      r = blockNative().preadNoWait(this.fd, buf, offset);
    } catch (e) {
      throw new BlockIOError(this.filename, `preadv2 at ${offset}`, e);
    }
    if (r === -2) this.noWaitUnsupported = true;
    return r;
  }

  private preadAsync(buf: Uint8Array, at: number, len: number, position: number): Promise<number> {
    // fs.read with a callback costs about half of FileHandle.read per call
    return new Promise((resolve, reject) => {
      fsRead(this.fd, buf, at, len, position, (err, n) => {
        if (err) reject(new BlockIOError(this.filename, `pread at ${position}`, err));
        else resolve(n);
      });
    });
  }

  private pwriteAsync(buf: Uint8Array, at: number, len: number, position: number): Promise<number> {
    return new Promise((resolve, reject) => {
      fsWrite(this.fd, buf, at, len, position, (err, n) => {
        if (err) reject(new BlockIOError(this.filename, `pwrite at ${position}`, err));
        else resolve(n);
      });
    });
  }

  /** Reads exactly buf.length bytes; a short read means the image is truncated. */
  async readExact(offset: number, buf: Uint8Array, structure: string): Promise<void> {
    const n = await this.read(offset, buf);
    if (n !== buf.length) {
      throw new BlockFormatError(
        this.filename,
        structure,
        `file ends at ${offset + n}, but ${buf.length} bytes are needed at offset ${offset}`,
        'the image is truncated',
      );
    }
  }

  /** Reads buf.length bytes; what lies past EOF reads as zeroes (sparse tail semantics). */
  async readZeroFilled(offset: number, buf: Uint8Array): Promise<void> {
    const n = await this.read(offset, buf);
    if (n < buf.length) buf.fill(0, n);
  }

  async write(offset: number, buf: Uint8Array): Promise<void> {
    if (this.readOnly) throw new BlockReadOnlyError(this.filename, 'file opened read-only');
    let done = 0;
    while (done < buf.length) done += await this.pwriteAsync(buf, done, buf.length - done, offset + done);
  }

  async truncate(length: number): Promise<void> {
    if (this.readOnly) throw new BlockReadOnlyError(this.filename, 'file opened read-only');
    try {
      await this.handle.truncate(length);
    } catch (e) {
      throw new BlockIOError(this.filename, `ftruncate to ${length}`, e);
    }
  }

  /** Makes every completed write durable. */
  async datasync(): Promise<void> {
    if (this.readOnly || this.unsafeNoSync) return;
    try {
      await this.handle.datasync();
    } catch (e) {
      throw new BlockIOError(this.filename, 'fdatasync', e);
    }
  }

  /**
   * Deallocates [offset, offset+length) so it reads as zeroes and no longer
   * occupies host blocks. Returns false when the host filesystem cannot punch
   * holes (the range is then unchanged; callers that need zeroes write them).
   */
  async punchHole(offset: number, length: number): Promise<boolean> {
    if (this.readOnly) throw new BlockReadOnlyError(this.filename, 'file opened read-only');
    if (length <= 0) return true;
    if (this.punchUnsupported) return false;
    const native = blockNative();
    try {
      await native.fallocate(
        this.fd,
        native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE,
        offset,
        length,
      );
      return true;
    } catch (e) {
      const code = (e as { code?: unknown }).code;
      if (code === 'EOPNOTSUPP' || code === 'ENOSYS') {
        this.punchUnsupported = true;
        return false;
      }
      throw new BlockIOError(this.filename, `fallocate(PUNCH_HOLE) [${offset}, +${length})`, e);
    }
  }

  /** Makes [offset, offset+length) read as zeroes: punches, or writes zeroes where punching is unsupported. */
  async zeroRange(offset: number, length: number): Promise<void> {
    if (await this.punchHole(offset, length)) return;
    const chunk = new Uint8Array(Math.min(length, 1 << 20));
    for (let done = 0; done < length; done += chunk.length) {
      const n = Math.min(chunk.length, length - done);
      await this.write(offset + done, n === chunk.length ? chunk : chunk.subarray(0, n));
    }
  }

  /** Next offset >= offset holding data, or -1 if only holes follow (SEEK_DATA). */
  seekData(offset: number): number {
    try {
      return blockNative().seekData(this.fd, offset);
    } catch (e) {
      throw new BlockIOError(this.filename, `lseek(SEEK_DATA, ${offset})`, e);
    }
  }

  /** Next offset >= offset starting a hole (EOF counts), or -1 past EOF (SEEK_HOLE). */
  seekHole(offset: number): number {
    try {
      return blockNative().seekHole(this.fd, offset);
    } catch (e) {
      throw new BlockIOError(this.filename, `lseek(SEEK_HOLE, ${offset})`, e);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.handle.close();
    } catch (e) {
      throw new BlockIOError(this.filename, 'close', e);
    }
  }
}
