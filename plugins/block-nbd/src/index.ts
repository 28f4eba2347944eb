/**
 * The nbd block driver: a drive backed by an NBD export, named
 * nbd://host[:port]/export or nbd+unix:///export?socket=PATH (QEMU's forms).
 * Requests are split at the server's maximum block size and pipelined on one
 * connection; block status uses `base:allocation` when the server offers it.
 */
import type { PluginContext, TsvmmPlugin } from '@tsvmm/core';
import { PluginTokens } from '@tsvmm/core';
import {
  BlockIOError,
  BlockReadOnlyError,
  BlockUnsupportedError,
  checkRequest,
  checkWritable,
  type BlockDevice,
  type BlockDriverDefinition,
  type BlockOpenOptions,
  type BlockStatusExtent,
  type ImageInfo,
  type WriteOptions,
  type WriteZeroesOptions,
} from '@tsvmm/block';
import {
  NBD_EPERM,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NbdClient,
  NbdError,
} from '@tsvmm/block/nbd';

/** TRIM/WRITE_ZEROES/BLOCK_STATUS lengths are 32-bit: stay well below. */
const MAX_NON_PAYLOAD = 1024 * 1024 * 1024;

export class NbdDevice implements BlockDevice {
  readonly format = 'nbd';
  readonly readOnly: boolean;

  private constructor(
    readonly filename: string,
    private readonly client: NbdClient,
    readOnly: boolean,
  ) {
    this.readOnly = readOnly || (client.info.flags & NBD_FLAG_READ_ONLY) !== 0;
  }

  static async open(opts: BlockOpenOptions): Promise<NbdDevice> {
    let client: NbdClient;
    try {
      client = await NbdClient.connect(opts.filename);
    } catch (e) {
      throw new BlockIOError(opts.filename, 'connect', e);
    }
    return new NbdDevice(opts.filename, client, opts.readOnly ?? false);
  }

  get size(): number {
    return this.client.size;
  }
  get alignment(): number {
    return Math.max(1, this.client.info.minBlock);
  }

  private fail(op: string, e: unknown): never {
    if (e instanceof NbdError && e.errno === NBD_EPERM) throw new BlockReadOnlyError(this.filename, `the server refused ${op}: ${e.message}`);
    throw new BlockIOError(this.filename, op, e);
  }

  /** Runs `fn` over [offset, offset+length) in pieces of at most `max`, all in flight at once. */
  private async pieces(offset: number, length: number, max: number, fn: (off: number, len: number) => Promise<void>): Promise<void> {
    const work: Array<Promise<void>> = [];
    for (let done = 0; done < length; done += max) work.push(fn(offset + done, Math.min(max, length - done)));
    await Promise.all(work);
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    checkRequest(this, offset, buf.length);
    try {
      await this.pieces(offset, buf.length, this.client.info.maxBlock, (off, len) =>
        this.client.read(off, buf.subarray(off - offset, off - offset + len)),
      );
    } catch (e) {
      this.fail(`read [${offset}, +${buf.length})`, e);
    }
  }

  async write(offset: number, buf: Uint8Array, opts?: WriteOptions): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, buf.length);
    try {
      await this.pieces(offset, buf.length, this.client.info.maxBlock, (off, len) =>
        this.client.write(off, buf.subarray(off - offset, off - offset + len), opts?.fua === true),
      );
    } catch (e) {
      this.fail(`write [${offset}, +${buf.length})`, e);
    }
  }

  async flush(): Promise<void> {
    if (this.readOnly || (this.client.info.flags & NBD_FLAG_SEND_FLUSH) === 0) return;
    try {
      await this.client.flush();
    } catch (e) {
      this.fail('flush', e);
    }
  }

  /** Advisory: a no-op when the server does not take TRIM. */
  async discard(offset: number, length: number): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    if ((this.client.info.flags & NBD_FLAG_SEND_TRIM) === 0) return;
    try {
      await this.pieces(offset, length, MAX_NON_PAYLOAD, (off, len) => this.client.trim(off, len));
    } catch (e) {
      this.fail(`trim [${offset}, +${length})`, e);
    }
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    try {
      if ((this.client.info.flags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0) {
        await this.pieces(offset, length, MAX_NON_PAYLOAD, (off, len) => this.client.writeZeroes(off, len, { noHole: opts?.mayUnmap !== true }));
        return;
      }
      const max = this.client.info.maxBlock;
      const zero = new Uint8Array(Math.min(max, length));
      await this.pieces(offset, length, max, (off, len) => this.client.write(off, zero.subarray(0, len)));
    } catch (e) {
      this.fail(`write zeroes [${offset}, +${length})`, e);
    }
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    checkRequest(this, offset, length);
    // as qemu's nbd driver: the export maps 1:1 (offset = the guest offset, in the export's URL)
    const data: BlockStatusExtent = { offset, length, data: true, zero: false, allocated: true, depth: 0, hostOffset: offset, hostFile: this.filename };
    if (this.client.info.allocationContext === undefined || length === 0) return data;
    let ext: Array<{ length: number; flags: number }>;
    try {
      ext = await this.client.blockStatus(offset, Math.min(length, MAX_NON_PAYLOAD));
    } catch (e) {
      this.fail(`block status [${offset}, +${length})`, e);
    }
    const first = ext[0];
    if (first === undefined || first.length === 0) return data;
    const hole = (first.flags & NBD_STATE_HOLE) !== 0;
    const zero = (first.flags & NBD_STATE_ZERO) !== 0;
    return {
      offset,
      length: Math.min(first.length, length),
      data: !hole,
      zero,
      // qemu counts a protocol's range as allocated when it holds data or reads as zeroes
      allocated: !hole || zero,
      depth: 0,
      hostOffset: offset,
      hostFile: this.filename,
    };
  }

  async info(): Promise<ImageInfo> {
    return { filename: this.filename, format: 'nbd', 'virtual-size': this.size };
  }

  async resize(): Promise<void> {
    throw new BlockUnsupportedError(this.filename, 'resize', 'NBD exports have the size the server gives them');
  }

  async close(): Promise<void> {
    await this.client.disconnect();
  }
}

export const nbdDriver: BlockDriverDefinition = {
  format: 'nbd',
  protocol: 'nbd',
  open: (opts) => NbdDevice.open(opts),
};

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    ctx.container.register(PluginTokens['block-driver'], { useValue: nbdDriver });
  },
};
export default plugin;
