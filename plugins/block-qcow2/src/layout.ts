/**
 * qcow2 on-disk layout: header, header extensions and table entries.
 * Spec: qemu/qemu docs/interop/qcow2.txt ("Header", "Header extensions",
 * "Feature name table", "Cluster mapping", "Host cluster management").
 *
 * 64-bit table entries are decoded from their two big-endian 32-bit halves
 * (hi, lo) rather than through BigInt: offsets fit in 56 bits (< 2^53 for
 * every image we accept) and this keeps lookups allocation-free.
 */
import { BlockFormatError } from '@tsvmm/block';

export const QCOW2_MAGIC = 0x514649fb; // "QFI\xfb"
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21; // qemu's implementation limit: 2 MiB
export const V2_HEADER_LENGTH = 72;
export const V3_HEADER_LENGTH = 112; // through compression_type, padded to 8
export const MAX_BACKING_FILE_SIZE = 1023;
/** qemu's limits: 32 MiB of L1 table, 8 MiB of refcount table */
export const MAX_L1_BYTES = 32 * 1024 * 1024;
export const MAX_REFTABLE_BYTES = 8 * 1024 * 1024;

// incompatible_features
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTL2 = 1n << 4n;
export const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
// compatible_features
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;
// autoclear_features
export const AUTOCLEAR_BITMAPS = 1n << 0n;

// header extension types
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

// L1/L2 entry flags, in the high 32-bit half
export const HI_COPIED = 0x80000000;
export const HI_COMPRESSED = 0x40000000;
/** bits 32..55 of an offset (bits 9..55 overall) */
export const HI_OFFSET_MASK = 0x00ffffff;
export const LO_OFFSET_MASK = 0xfffffe00;
export const LO_ZERO = 0x1;

export interface HeaderExtension {
  type: number;
  data: Uint8Array;
}

export interface FeatureName {
  type: number;
  bit: number;
  name: string;
}

export interface Qcow2Header {
  version: number;
  backing_file_offset: number;
  backing_file_size: number;
  cluster_bits: number;
  size: number;
  crypt_method: number;
  l1_size: number;
  l1_table_offset: number;
  refcount_table_offset: number;
  refcount_table_clusters: number;
  nb_snapshots: number;
  snapshots_offset: number;
  incompatible_features: bigint;
  compatible_features: bigint;
  autoclear_features: bigint;
  refcount_order: number;
  header_length: number;
  compression_type: number;
  /** extensions we do not interpret, kept verbatim when the header is rewritten */
  otherExtensions: HeaderExtension[];
  backingFile?: string;
  backingFormat?: string;
  featureNames: FeatureName[];
  /** bitmaps extension fields, if present */
  bitmaps?: { nb_bitmaps: number; bitmap_directory_size: number; bitmap_directory_offset: number };
}

/** Reads a big-endian u64 as a number; values past 2^53 come back as Infinity so range checks reject them. */
export function readU64(view: DataView, off: number): number {
  const hi = view.getUint32(off);
  const lo = view.getUint32(off + 4);
  if (hi >= 0x200000) return Infinity;
  return hi * 0x100000000 + lo;
}

export function writeU64(view: DataView, off: number, value: number): void {
  view.setUint32(off, Math.floor(value / 0x100000000));
  view.setUint32(off + 4, value >>> 0);
}

/** Host offset held in bits 9..55 of an L1, L2 (standard) or refcount table entry. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & HI_OFFSET_MASK) * 0x100000000 + ((lo & LO_OFFSET_MASK) >>> 0);
}

function featureBits(mask: bigint): number[] {
  const out: number[] = [];
  for (let b = 0; b < 64; b++) if (mask & (1n << BigInt(b))) out.push(b);
  return out;
}

function describeFeatures(h: Qcow2Header, type: number, mask: bigint): string {
  return featureBits(mask)
    .map((b) => h.featureNames.find((f) => f.type === type && f.bit === b)?.name ?? `unknown bit ${b}`)
    .join(', ');
}

/**
 * Parses and validates the header and its extensions from the first cluster.
 * `first` holds at least the first cluster (or the whole file if shorter).
 */
export function parseHeader(filename: string, first: Uint8Array, fileSize: number): Qcow2Header {
  const fail = (structure: string, detail: string, hint?: string): never => {
    throw new BlockFormatError(filename, structure, detail, hint);
  };
  if (first.length < V2_HEADER_LENGTH) fail('header', `file is only ${first.length} bytes; a qcow2 header needs 72`, 'the image is truncated');
  const v = new DataView(first.buffer, first.byteOffset, first.byteLength);
  if (v.getUint32(0) !== QCOW2_MAGIC) fail('header', 'bad magic (not a qcow2 image)', 'name the right format with -f');
  const version = v.getUint32(4);
  if (version !== 2 && version !== 3) fail('header', `version ${version} is not supported (only 2 and 3)`);
  const cluster_bits = v.getUint32(20);
  if (cluster_bits < MIN_CLUSTER_BITS || cluster_bits > MAX_CLUSTER_BITS) {
    fail('header', `cluster_bits ${cluster_bits} is out of range: cluster size must be 512 B to 2 MiB (cluster_bits 9..21)`);
  }
  const cs = 2 ** cluster_bits;
  const h: Qcow2Header = {
    version,
    backing_file_offset: readU64(v, 8),
    backing_file_size: v.getUint32(16),
    cluster_bits,
    size: readU64(v, 24),
    crypt_method: v.getUint32(32),
    l1_size: v.getUint32(36),
    l1_table_offset: readU64(v, 40),
    refcount_table_offset: readU64(v, 48),
    refcount_table_clusters: v.getUint32(56),
    nb_snapshots: v.getUint32(60),
    snapshots_offset: readU64(v, 64),
    incompatible_features: 0n,
    compatible_features: 0n,
    autoclear_features: 0n,
    refcount_order: 4,
    header_length: V2_HEADER_LENGTH,
    compression_type: 0,
    otherExtensions: [],
    featureNames: [],
  };
  if (version >= 3) {
    if (first.length < 104) fail('header', 'version 3 header is truncated (needs 104 bytes)', 'the image is truncated');
    h.incompatible_features = v.getBigUint64(72);
    h.compatible_features = v.getBigUint64(80);
    h.autoclear_features = v.getBigUint64(88);
    h.refcount_order = v.getUint32(96);
    h.header_length = v.getUint32(100);
    if (h.header_length < 104 || h.header_length % 8 !== 0 || h.header_length > Math.min(cs, first.length)) {
      fail('header', `header_length ${h.header_length} is invalid (must be >= 104, a multiple of 8, within the first cluster)`);
    }
    if (h.header_length > 104) h.compression_type = first[104] ?? 0;
  }
  if (h.refcount_order > 6) fail('header', `refcount_order ${h.refcount_order} is out of range (0..6)`);
  if (!Number.isFinite(h.size)) fail('header', 'size does not fit in 53 bits');

  // Header extensions: a chain of (type, length, data) ending at type 0; each
  // must lie inside the first cluster, before the backing file name.
  const extEnd = Math.min(
    cs,
    first.length,
    h.backing_file_offset > 0 ? h.backing_file_offset : Infinity,
  );
  let off = h.header_length;
  const seen = new Set<number>();
  for (let count = 0; ; count++) {
    if (off + 8 > extEnd) {
      // qemu accepts a v2 header with no end marker when the area is exhausted
      if (off === extEnd) break;
      fail('header extension', `extension at offset ${off} overruns the header area (ends at ${extEnd})`);
    }
    const type = v.getUint32(off);
    const len = v.getUint32(off + 4);
    if (type === EXT_END) break;
    if (count > cs / 8) fail('header extension', 'too many extensions (loop?)');
    const dataOff = off + 8;
    if (len > extEnd - dataOff) {
      fail('header extension', `extension 0x${type.toString(16)} at offset ${off} has length ${len}, overrunning the header area (ends at ${extEnd})`);
    }
    if (seen.has(type) && type !== 0) fail('header extension', `extension 0x${type.toString(16)} appears twice`);
    seen.add(type);
    const data = first.slice(dataOff, dataOff + len);
    switch (type) {
      case EXT_BACKING_FORMAT:
        h.backingFormat = new TextDecoder().decode(data);
        break;
      case EXT_FEATURE_TABLE:
        for (let i = 0; i + 48 <= data.length; i += 48) {
          const nameBytes = data.subarray(i + 2, i + 48);
          const nul = nameBytes.indexOf(0);
          h.featureNames.push({
            type: data[i] ?? 0,
            bit: data[i + 1] ?? 0,
            name: new TextDecoder().decode(nul >= 0 ? nameBytes.subarray(0, nul) : nameBytes),
          });
        }
        break;
      case EXT_BITMAPS: {
        if (len < 24) fail('bitmaps extension', `length ${len} is shorter than 24`);
        const bv = new DataView(data.buffer, data.byteOffset, data.byteLength);
        h.bitmaps = {
          nb_bitmaps: bv.getUint32(0),
          bitmap_directory_size: readU64(bv, 8),
          bitmap_directory_offset: readU64(bv, 16),
        };
        h.otherExtensions.push({ type, data });
        break;
      }
      default:
        h.otherExtensions.push({ type, data });
    }
    off = dataOff + Math.ceil(len / 8) * 8;
  }

  const unknownIncompat = h.incompatible_features & ~INCOMPAT_KNOWN;
  if (unknownIncompat) {
    fail(
      'header',
      `unsupported incompatible features: ${describeFeatures(h, 0, unknownIncompat)}`,
      'tsvmm cannot open this image; convert it with a qemu-img that supports these features',
    );
  }
  if (h.crypt_method !== 0) fail('header', `encrypted images (crypt_method ${h.crypt_method}) are not supported`);
  if (h.compression_type !== 0) fail('header', `compression_type ${h.compression_type} is not supported (only zlib)`);

  if (h.backing_file_offset > 0) {
    if (h.backing_file_size > MAX_BACKING_FILE_SIZE) fail('header', `backing_file_size ${h.backing_file_size} exceeds 1023`);
    if (h.backing_file_offset + h.backing_file_size > Math.min(cs, first.length)) {
      fail('header', `backing file name at ${h.backing_file_offset}+${h.backing_file_size} lies outside the first cluster`);
    }
    h.backingFile = new TextDecoder().decode(
      first.subarray(h.backing_file_offset, h.backing_file_offset + h.backing_file_size),
    );
  }

  const checkTable = (what: string, offset: number, bytes: number): void => {
    if (offset % cs !== 0) fail('header', `${what} offset ${offset} is not aligned to the cluster size ${cs}`);
    if (offset + bytes > fileSize) fail(what, `[${offset}, +${bytes}) lies past the end of the file (${fileSize} bytes)`, 'the image is truncated or corrupt');
    if (bytes > 0 && offset < cs) fail(what, `at offset ${offset} overlaps the header`);
  };
  if (h.l1_size * 8 > MAX_L1_BYTES) fail('header', `l1_size ${h.l1_size} exceeds the 32 MiB limit`);
  const l2Coverage = cs * (cs / 8);
  const needL1 = Math.ceil(h.size / l2Coverage);
  if (h.l1_size < needL1) fail('header', `l1_size ${h.l1_size} is too small for a ${h.size}-byte disk (needs ${needL1})`);
  checkTable('L1 table', h.l1_table_offset, h.l1_size * 8);
  if (h.refcount_table_clusters === 0) fail('header', 'refcount_table_clusters is 0');
  if (h.refcount_table_clusters * cs > MAX_REFTABLE_BYTES) fail('header', `refcount_table_clusters ${h.refcount_table_clusters} exceeds the 8 MiB limit`);
  checkTable('refcount table', h.refcount_table_offset, h.refcount_table_clusters * cs);
  const l1End = h.l1_table_offset + h.l1_size * 8;
  const rtEnd = h.refcount_table_offset + h.refcount_table_clusters * cs;
  if (h.l1_size > 0 && h.l1_table_offset < rtEnd && h.refcount_table_offset < l1End) {
    fail('L1 table', `[${h.l1_table_offset}, ${l1End}) overlaps the refcount table [${h.refcount_table_offset}, ${rtEnd})`);
  }
  if (h.nb_snapshots > 0 && h.snapshots_offset % cs !== 0) fail('header', `snapshots_offset ${h.snapshots_offset} is not cluster aligned`);
  if (h.nb_snapshots > 65536) fail('header', `nb_snapshots ${h.nb_snapshots} is implausible`);
  return h;
}

function encodeString(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

export const DEFAULT_FEATURE_NAMES: FeatureName[] = [
  { type: 0, bit: 0, name: 'dirty bit' },
  { type: 0, bit: 1, name: 'corrupt bit' },
  { type: 0, bit: 2, name: 'external data file' },
  { type: 0, bit: 3, name: 'compression type' },
  { type: 0, bit: 4, name: 'extended L2 entries' },
  { type: 1, bit: 0, name: 'lazy refcounts' },
  { type: 2, bit: 0, name: 'bitmaps' },
  { type: 2, bit: 1, name: 'raw external data' },
];

/**
 * Serializes the header, its extensions and the backing file name into the
 * start of the first cluster. Throws if they do not fit in one cluster.
 */
export function serializeHeader(filename: string, h: Qcow2Header): Uint8Array {
  const cs = 2 ** h.cluster_bits;
  const exts: HeaderExtension[] = [];
  if (h.backingFormat !== undefined && h.backingFile !== undefined) {
    exts.push({ type: EXT_BACKING_FORMAT, data: encodeString(h.backingFormat) });
  }
  if (h.version >= 3 && h.featureNames.length > 0) {
    const t = new Uint8Array(48 * h.featureNames.length);
    h.featureNames.forEach((f, i) => {
      t[i * 48] = f.type;
      t[i * 48 + 1] = f.bit;
      t.set(encodeString(f.name).subarray(0, 46), i * 48 + 2);
    });
    exts.push({ type: EXT_FEATURE_TABLE, data: t });
  }
  // unknown extensions (and the bitmaps extension) are kept verbatim; v2 images
  // written by qemu may carry a backing format extension too, which we re-emit above
  exts.push(...h.otherExtensions);
  const headerLength = h.version >= 3 ? Math.max(h.header_length, V3_HEADER_LENGTH) : V2_HEADER_LENGTH;
  let len = headerLength;
  for (const e of exts) len += 8 + Math.ceil(e.data.length / 8) * 8;
  len += 8; // end marker
  const backing = h.backingFile !== undefined ? encodeString(h.backingFile) : undefined;
  if (backing && backing.length > MAX_BACKING_FILE_SIZE) {
    throw new BlockFormatError(filename, 'header', `backing file name is ${backing.length} bytes; at most 1023 fit`);
  }
  const backingOffset = backing ? len : 0;
  const total = len + (backing?.length ?? 0);
  if (total > cs && h.featureNames.length > 0) {
    // the feature name table is optional: small clusters drop it before failing
    const copy = { ...h, featureNames: [] };
    const out = serializeHeader(filename, copy);
    h.backing_file_offset = copy.backing_file_offset;
    h.backing_file_size = copy.backing_file_size;
    h.header_length = copy.header_length;
    return out;
  }
  if (total > cs) {
    throw new BlockFormatError(filename, 'header', `header, extensions and backing file name need ${total} bytes but a cluster holds ${cs}`, 'use a shorter backing file name or a larger cluster_size');
  }
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  v.setUint32(0, QCOW2_MAGIC);
  v.setUint32(4, h.version);
  writeU64(v, 8, backingOffset);
  v.setUint32(16, backing?.length ?? 0);
  v.setUint32(20, h.cluster_bits);
  writeU64(v, 24, h.size);
  v.setUint32(32, h.crypt_method);
  v.setUint32(36, h.l1_size);
  writeU64(v, 40, h.l1_table_offset);
  writeU64(v, 48, h.refcount_table_offset);
  v.setUint32(56, h.refcount_table_clusters);
  v.setUint32(60, h.nb_snapshots);
  writeU64(v, 64, h.snapshots_offset);
  if (h.version >= 3) {
    v.setBigUint64(72, h.incompatible_features);
    v.setBigUint64(80, h.compatible_features);
    v.setBigUint64(88, h.autoclear_features);
    v.setUint32(96, h.refcount_order);
    v.setUint32(100, headerLength);
    if (headerLength > 104) out[104] = h.compression_type;
  }
  let off = headerLength;
  for (const e of exts) {
    v.setUint32(off, e.type);
    v.setUint32(off + 4, e.data.length);
    out.set(e.data, off + 8);
    off += 8 + Math.ceil(e.data.length / 8) * 8;
  }
  v.setUint32(off, EXT_END);
  v.setUint32(off + 4, 0);
  if (backing) out.set(backing, backingOffset);
  h.backing_file_offset = backingOffset;
  h.backing_file_size = backing?.length ?? 0;
  h.header_length = headerLength;
  return out;
}

/** Reads entry i of a refcount block whose entries are `bits` wide. */
export function getRefcountEntry(block: Uint8Array, view: DataView, bits: number, i: number): number {
  switch (bits) {
    case 16:
      return view.getUint16(i * 2);
    case 8:
      return block[i] ?? 0;
    case 32:
      return view.getUint32(i * 4);
    case 64:
      return readU64(view, i * 8);
    default: {
      // sub-byte widths: bit 0 is the least significant bit of the byte
      const bit = i * bits;
      return ((block[bit >>> 3] ?? 0) >>> (bit & 7)) & ((1 << bits) - 1);
    }
  }
}

export function setRefcountEntry(block: Uint8Array, view: DataView, bits: number, i: number, value: number): void {
  switch (bits) {
    case 16:
      view.setUint16(i * 2, value);
      return;
    case 8:
      block[i] = value;
      return;
    case 32:
      view.setUint32(i * 4, value);
      return;
    case 64:
      writeU64(view, i * 8, value);
      return;
    default: {
      const bit = i * bits;
      const mask = ((1 << bits) - 1) << (bit & 7);
      const byte = bit >>> 3;
      block[byte] = ((block[byte] ?? 0) & ~mask) | ((value << (bit & 7)) & mask);
    }
  }
}
