/**
 * A host file holding an image: positional I/O over a Node FileHandle, plus
 * durability (fdatasync) and sparseness (hole punching, SEEK_DATA/SEEK_HOLE)
 * through the native helper. Every failure becomes a BlockIOError naming the
 * file and the operation.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import { BlockFormatError, BlockIOError, BlockReadOnlyError } from './errors.js';
import { blockNative } from './native.js';

export interface ImageFileOpenOptions {
  readOnly?: boolean;
  /** create the file if missing (and truncate it when `truncate` is set) */
  create?: boolean;
  truncate?: boolean;
}

export class ImageFile {
  private closed = false;
  /** set once a punch fails with EOPNOTSUPP so we stop asking the kernel */
  private punchUnsupported = false;

  private constructor(
    readonly filename: string,
    readonly readOnly: boolean,
    private readonly handle: FileHandle,
  ) {}

  static async open(filename: string, opts: ImageFileOpenOptions = {}): Promise<ImageFile> {
    const readOnly = opts.readOnly ?? false;
    let flags = readOnly ? fsConstants.O_RDONLY : fsConstants.O_RDWR;
    if (opts.create && !readOnly) flags |= fsConstants.O_CREAT;
    if (opts.truncate && !readOnly) flags |= fsConstants.O_TRUNC;
    try {
      const handle = await open(filename, flags, 0o644);
      return new ImageFile(filename, readOnly, handle);
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

  /** Reads up to buf.length bytes at offset; returns how many were read (short only at EOF). */
  async read(offset: number, buf: Uint8Array): Promise<number> {
    let done = 0;
    while (done < buf.length) {
      let n: number;
      try {
        ({ bytesRead: n } = await this.handle.read(buf, done, buf.length - done, offset + done));
      } catch (e) {
        throw new BlockIOError(this.filename, `pread at ${offset + done}`, e);
      }
      if (n === 0) break;
      done += n;
    }
    return done;
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
    while (done < buf.length) {
      try {
        const { bytesWritten } = await this.handle.write(buf, done, buf.length - done, offset + done);
        done += bytesWritten;
      } catch (e) {
        throw new BlockIOError(this.filename, `pwrite at ${offset + done}`, e);
      }
    }
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
    if (this.readOnly) return;
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
