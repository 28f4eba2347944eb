/**
 * The raw format: the file is the disk. Sparse-aware: block status reports
 * holes from SEEK_DATA/SEEK_HOLE, discard and unmapping write-zeroes punch
 * holes (fallocate PUNCH_HOLE|KEEP_SIZE), resize truncates or extends.
 */
import type { PluginContext, TsvmmPlugin } from '@tsvmm/core';
import { PluginTokens } from '@tsvmm/core';
import {
  BlockOptionError,
  ImageFile,
  cacheModeIsUnsafe,
  checkRequest,
  checkWritable,
  type BlockCreateOptions,
  type BlockDevice,
  type BlockDriverDefinition,
  type BlockOpenOptions,
  type BlockStatusExtent,
  type ImageInfo,
  type WriteOptions,
  type WriteZeroesOptions,
} from '@tsvmm/block';

const ZERO_CHUNK = 1 << 20;

export class RawDevice implements BlockDevice {
  readonly format = 'raw';
  readonly alignment = 1;

  private constructor(
    private readonly file: ImageFile,
    public size: number,
  ) {}

  get filename(): string {
    return this.file.filename;
  }

  get readOnly(): boolean {
    return this.file.readOnly;
  }

  static async open(opts: BlockOpenOptions): Promise<RawDevice> {
    const file = await ImageFile.open(opts.filename, { readOnly: opts.readOnly ?? false, unsafeNoSync: cacheModeIsUnsafe(opts.options) });
    try {
      return new RawDevice(file, await file.size());
    } catch (e) {
      await file.close();
      throw e;
    }
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    checkRequest(this, offset, buf.length);
    await this.file.readZeroFilled(offset, buf);
  }

  async write(offset: number, buf: Uint8Array, opts?: WriteOptions): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, buf.length);
    await this.file.write(offset, buf);
    if (opts?.fua) await this.file.datasync();
  }

  async flush(): Promise<void> {
    await this.file.datasync();
  }

  async discard(offset: number, length: number): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    // discard is advisory: where the filesystem cannot punch, nothing happens
    await this.file.punchHole(offset, length);
  }

  async writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void> {
    checkWritable(this);
    checkRequest(this, offset, length);
    if (opts?.mayUnmap && (await this.file.punchHole(offset, length))) return;
    const zero = new Uint8Array(Math.min(ZERO_CHUNK, length));
    for (let done = 0; done < length; done += zero.length) {
      const n = Math.min(zero.length, length - done);
      await this.file.write(offset + done, n === zero.length ? zero : zero.subarray(0, n));
    }
  }

  async blockStatus(offset: number, length: number): Promise<BlockStatusExtent> {
    checkRequest(this, offset, length);
    const end = offset + length;
    const base = { offset, allocated: true, depth: 0, hostOffset: offset, hostFile: this.filename };
    const data = this.file.seekData(offset);
    if (data === offset) {
      const hole = this.file.seekHole(offset);
      const stop = hole < 0 ? end : Math.min(hole, end);
      return { ...base, length: Math.max(stop - offset, 1), data: true, zero: false };
    }
    const stop = data < 0 ? end : Math.min(data, end);
    return { ...base, length: stop - offset, data: false, zero: true };
  }

  async info(): Promise<ImageInfo> {
    return {
      filename: this.filename,
      format: 'raw',
      'virtual-size': this.size,
      'actual-size': await this.file.allocatedBytes(),
      'dirty-flag': false,
    };
  }

  async resize(newSize: number): Promise<void> {
    checkWritable(this);
    if (!Number.isSafeInteger(newSize) || newSize < 0) {
      throw new BlockOptionError('size', `${newSize} is not a valid size in bytes`);
    }
    await this.file.truncate(newSize);
    this.size = newSize;
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}

async function createRaw(opts: BlockCreateOptions): Promise<void> {
  const prealloc = opts.options['preallocation'] ?? 'off';
  for (const k of Object.keys(opts.options)) {
    if (k !== 'preallocation' && k !== 'size') {
      throw new BlockOptionError(k, `raw does not take this option (raw takes: preallocation)`);
    }
  }
  if (!['off', 'full', 'falloc'].includes(prealloc)) {
    throw new BlockOptionError('preallocation', `'${prealloc}' must be off, falloc or full`);
  }
  const file = await ImageFile.open(opts.filename, { create: true, truncate: true });
  try {
    if (prealloc === 'off') {
      await file.truncate(opts.size);
    } else {
      // falloc and full both end with every block allocated and reading as zero
      const zero = new Uint8Array(Math.min(ZERO_CHUNK, Math.max(opts.size, 1)));
      for (let done = 0; done < opts.size; done += zero.length) {
        const n = Math.min(zero.length, opts.size - done);
        await file.write(done, n === zero.length ? zero : zero.subarray(0, n));
      }
      await file.truncate(opts.size);
    }
    await file.datasync();
  } finally {
    await file.close();
  }
}

export const rawDriver: BlockDriverDefinition = {
  format: 'raw',
  // anything is a valid raw image, so raw only wins when nobody else claims the file
  probe: () => 1,
  open: (opts) => RawDevice.open(opts),
  create: createRaw,
  createOptions: [
    { name: 'preallocation', type: 'string', help: 'off, falloc or full', default: 'off' },
  ],
};

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    ctx.container.register(PluginTokens['block-driver'], { useValue: rawDriver });
  },
};
export default plugin;
