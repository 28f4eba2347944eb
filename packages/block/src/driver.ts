/**
 * The block driver contract: one async interface for every image format
 * (raw, qcow2, vpc, vhdx, nbd) and every filter (throttle).
 *
 * Format drivers are plugins of kind `block-driver`; each registers a
 * {@link BlockDriverDefinition} under `PluginTokens['block-driver']`.
 * Offsets and lengths are byte counts held in `number` (exact up to 2^53,
 * far beyond any image size we accept).
 */

/** One extent as reported by block status (qemu-img map's notion). */
export interface BlockStatusExtent {
  offset: number;
  length: number;
  /** reads return data stored somewhere in the chain (not a hole) */
  data: boolean;
  /** reads return zeroes */
  zero: boolean;
  /** allocated in this layer (as opposed to the backing chain or unallocated) */
  allocated: boolean;
  /** depth in the backing chain the data comes from (0 = this image) */
  depth: number;
  /**
   * allocated in the layer at `depth` (qemu-img map's "present"); when
   * undefined it equals `allocated`. False with depth > 0 means no layer of
   * the chain has the range and the search ended at that depth.
   */
  present?: boolean;
  /** host file offset of the data when it maps 1:1 to a file, else undefined */
  hostOffset?: number;
  /** file holding the data at hostOffset */
  hostFile?: string;
}

/** The shape of `qemu-img info --output json`, restricted to what we fill. */
export interface ImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'cluster-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
  'backing-filename-format'?: string;
  'dirty-flag'?: boolean;
  'format-specific'?: { type: string; data: Record<string, unknown> };
}

export interface CheckResult {
  filename: string;
  format: string;
  'check-errors': number;
  corruptions: number;
  leaks: number;
  'corruptions-fixed'?: number;
  'leaks-fixed'?: number;
  'image-end-offset'?: number;
  'total-clusters'?: number;
  'allocated-clusters'?: number;
  'fragmented-clusters'?: number;
  'compressed-clusters'?: number;
  /** human-readable findings, one per problem */
  messages: string[];
}

export interface WriteOptions {
  /** Force Unit Access: durable before the promise resolves */
  fua?: boolean;
  /**
   * Store the data compressed (qemu-img convert -c). Only for devices whose
   * `supportsCompressedWrites` is true; the range should cover whole clusters
   * (a partial cluster is written uncompressed).
   */
  compressed?: boolean;
}

export interface WriteZeroesOptions {
  /** the driver may deallocate (punch/discard) instead of writing zeroes */
  mayUnmap?: boolean;
}

/** An open image (or filter over one). */
export interface BlockDevice {
  readonly format: string;
  readonly filename: string;
  readonly readOnly: boolean;
  /** virtual size in bytes */
  readonly size: number;
  /** smallest unit the driver handles without read-modify-write (512 unless the format says otherwise) */
  readonly alignment: number;
  read(offset: number, buf: Uint8Array): Promise<void>;
  write(offset: number, buf: Uint8Array, opts?: WriteOptions): Promise<void>;
  flush(): Promise<void>;
  discard(offset: number, length: number): Promise<void>;
  writeZeroes(offset: number, length: number, opts?: WriteZeroesOptions): Promise<void>;
  /** status of the extent starting at offset; the returned length may be shorter than asked */
  blockStatus(offset: number, length: number): Promise<BlockStatusExtent>;
  info(): Promise<ImageInfo>;
  resize(newSize: number): Promise<void>;
  check?(opts: { repair?: 'leaks' | 'all' }): Promise<CheckResult>;
  close(): Promise<void>;
  /** true when write() honours `compressed` */
  readonly supportsCompressedWrites?: boolean;
  /**
   * Changes the backing file recorded in the image without touching data
   * (qemu-img rebase -u); undefined removes the backing file.
   */
  changeBackingFile?(filename: string | undefined, format: string | undefined): Promise<void>;
  /** Changes format options in place (qemu-img amend), e.g. { compat: '0.10' }. */
  amend?(options: Record<string, string>): Promise<void>;
  /** Drops every allocation of this layer so reads fall through to the backing chain (after qemu-img commit). */
  makeEmpty?(): Promise<void>;
}

export interface BlockOpenOptions {
  filename: string;
  readOnly?: boolean;
  /** format-specific options (e.g. from `-o` or a drive's key=value list) */
  options?: Record<string, string>;
  /**
   * opened by `img check -r`: the driver may open an image it would refuse
   * otherwise (marked corrupt, dirty) and must not repair it on its own
   */
  check?: boolean;
  /** used by formats with backing files: opens another image through the registry */
  openBacking?: (filename: string, format: string | undefined, readOnly: boolean) => Promise<BlockDevice>;
}

export interface BlockCreateOptions {
  filename: string;
  size: number;
  /** `-o` options, already split (cluster_size, lazy_refcounts, compat, backing_file, backing_fmt, subformat, ...) */
  options: Record<string, string>;
}

/** Describes one `-o` option a format accepts at create time. */
export interface CreateOptionDescription {
  name: string;
  type: 'size' | 'number' | 'bool' | 'string';
  help: string;
  default?: string;
}

export interface BlockDriverDefinition {
  /** format name as qemu-img spells it: raw, qcow2, vpc, vhdx, nbd */
  format: string;
  /** 0..100: how sure the driver is that these leading bytes are its format (raw answers 1) */
  probe?(head: Uint8Array, filename: string): number;
  /** true for protocol drivers that take a URI instead of a file (nbd://) */
  protocol?: string;
  open(opts: BlockOpenOptions): Promise<BlockDevice>;
  create?(opts: BlockCreateOptions): Promise<void>;
  createOptions?: CreateOptionDescription[];
}
