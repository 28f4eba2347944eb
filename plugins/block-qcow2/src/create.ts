/**
 * Creating qcow2 images (qemu-img create -f qcow2 -o ...).
 * Spec: docs/interop/qcow2.txt "Header", "Host cluster management".
 *
 * Layout, as qemu lays it out for the common case: header (cluster 0),
 * refcount table, refcount blocks, L1 table; with preallocation the L2
 * tables and data clusters follow. The refcount structure is sized by
 * iteration because it has to count itself.
 */
import {
  BlockOptionError,
  BlockUnsupportedError,
  ImageFile,
  blockNative,
  parseBool,
  parseSize,
  type BlockCreateOptions,
  type CreateOptionDescription,
} from '@tsvmm/block';
import {
  COMPAT_LAZY_REFCOUNTS,
  DEFAULT_FEATURE_NAMES,
  HI_COPIED,
  MAX_L1_BYTES,
  MAX_REFTABLE_BYTES,
  V2_HEADER_LENGTH,
  V3_HEADER_LENGTH,
  serializeHeader,
  setRefcountEntry,
  writeU64,
  type Qcow2Header,
} from './layout.js';
import { parseCompat } from './amend.js';

export const QCOW2_CREATE_OPTIONS: CreateOptionDescription[] = [
  { name: 'compat', type: 'string', help: 'qcow2 version: 0.10 (v2) or 1.1 (v3)', default: '1.1' },
  { name: 'cluster_size', type: 'size', help: 'cluster size, a power of two from 512 to 2M', default: '65536' },
  { name: 'lazy_refcounts', type: 'bool', help: 'postpone refcount updates (needs compat=1.1)', default: 'off' },
  { name: 'refcount_bits', type: 'number', help: 'width of a refcount: 1, 2, 4, 8, 16, 32 or 64 (v2: 16)', default: '16' },
  { name: 'backing_file', type: 'string', help: 'file name of a base image' },
  { name: 'backing_fmt', type: 'string', help: 'format of the base image' },
  { name: 'preallocation', type: 'string', help: 'off, metadata, falloc or full', default: 'off' },
  { name: 'compression_type', type: 'string', help: 'zlib (the only one supported)', default: 'zlib' },
  { name: 'extended_l2', type: 'bool', help: 'subclusters (not supported)', default: 'off' },
];

const KNOWN = new Set(QCOW2_CREATE_OPTIONS.map((o) => o.name).concat(['size']));

export async function createQcow2(opts: BlockCreateOptions): Promise<void> {
  const o = opts.options;
  for (const k of Object.keys(o)) {
    if (!KNOWN.has(k)) {
      throw new BlockOptionError(k, `qcow2 does not take this option (it takes: ${QCOW2_CREATE_OPTIONS.map((d) => d.name).join(', ')})`);
    }
  }
  const version = parseCompat(o['compat'] ?? '1.1');
  const cs = parseSize(o['cluster_size'] ?? '65536', 'cluster_size');
  const clusterBits = Math.log2(cs);
  if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > 21) {
    throw new BlockOptionError('cluster_size', `${cs} must be a power of two between 512 and 2097152 (2M)`);
  }
  const lazy = parseBool(o['lazy_refcounts'] ?? 'off', 'lazy_refcounts');
  if (lazy && version < 3) throw new BlockOptionError('lazy_refcounts', 'needs compat=1.1');
  const refcountBits = Number(o['refcount_bits'] ?? '16');
  const refcountOrder = Math.log2(refcountBits);
  if (!Number.isInteger(refcountOrder) || refcountOrder < 0 || refcountOrder > 6) {
    throw new BlockOptionError('refcount_bits', `${o['refcount_bits']} must be a power of two from 1 to 64`);
  }
  if (version < 3 && refcountBits !== 16) throw new BlockOptionError('refcount_bits', 'compat=0.10 images need refcount_bits=16');
  if ((o['compression_type'] ?? 'zlib') !== 'zlib') throw new BlockUnsupportedError(opts.filename, 'compression_type', 'only zlib is supported');
  if (parseBool(o['extended_l2'] ?? 'off', 'extended_l2')) throw new BlockUnsupportedError(opts.filename, 'extended_l2', 'subclusters are not supported');
  const prealloc = o['preallocation'] ?? 'off';
  if (!['off', 'metadata', 'falloc', 'full'].includes(prealloc)) {
    throw new BlockOptionError('preallocation', `'${prealloc}' must be off, metadata, falloc or full`);
  }
  if (o['backing_fmt'] !== undefined && o['backing_file'] === undefined) {
    throw new BlockOptionError('backing_fmt', 'makes no sense without backing_file');
  }
  if (o['backing_file'] !== undefined && prealloc !== 'off') {
    throw new BlockOptionError('preallocation', 'is not supported together with a backing file');
  }
  if (!Number.isSafeInteger(opts.size) || opts.size < 0) throw new BlockOptionError('size', `${opts.size} is not a valid size`);
  // qemu keeps qcow2 sizes in whole 512-byte sectors (qemu-img create rounds up too)
  const size = Math.ceil(opts.size / 512) * 512;

  const l2Entries = cs / 8;
  const l1Size = Math.ceil(size / (cs * l2Entries));
  if (l1Size * 8 > MAX_L1_BYTES) {
    throw new BlockOptionError('size', `${size} bytes need an L1 table over 32 MiB with ${cs}-byte clusters; use a larger cluster_size`);
  }
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  const dataClusters = prealloc === 'off' ? 0 : Math.ceil(size / cs);
  const l2Clusters = prealloc === 'off' ? 0 : l1Size;
  const E = (cs * 8) / refcountBits;
  let tableClusters = 1;
  let blocks = 1;
  for (;;) {
    const total = 1 + tableClusters + blocks + l1Clusters + l2Clusters + dataClusters;
    const needBlocks = Math.ceil(total / E);
    const needTable = Math.ceil((needBlocks * 8) / cs);
    if (needBlocks === blocks && needTable === tableClusters) break;
    blocks = Math.max(blocks, needBlocks);
    tableClusters = Math.max(tableClusters, needTable);
  }
  if (tableClusters * cs > MAX_REFTABLE_BYTES) {
    throw new BlockOptionError('size', 'the refcount table would exceed 8 MiB; use a larger cluster_size or refcount_bits');
  }
  const reftableOff = cs;
  const blocksOff = reftableOff + tableClusters * cs;
  const l1Off = blocksOff + blocks * cs;
  const l2Off = l1Off + l1Clusters * cs;
  const dataOff = l2Off + l2Clusters * cs;
  const totalClusters = 1 + tableClusters + blocks + l1Clusters + l2Clusters + dataClusters;

  const header: Qcow2Header = {
    version,
    backing_file_offset: 0,
    backing_file_size: 0,
    cluster_bits: clusterBits,
    size,
    crypt_method: 0,
    l1_size: l1Size,
    l1_table_offset: l1Off,
    refcount_table_offset: reftableOff,
    refcount_table_clusters: tableClusters,
    nb_snapshots: 0,
    snapshots_offset: 0,
    incompatible_features: 0n,
    compatible_features: lazy ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclear_features: 0n,
    refcount_order: refcountOrder,
    header_length: version >= 3 ? V3_HEADER_LENGTH : V2_HEADER_LENGTH,
    compression_type: 0,
    otherExtensions: [],
    featureNames: version >= 3 ? DEFAULT_FEATURE_NAMES.slice() : [],
  };
  if (o['backing_file'] !== undefined) {
    header.backingFile = o['backing_file'];
    if (o['backing_fmt'] !== undefined) header.backingFormat = o['backing_fmt'];
  }
  const headerBytes = serializeHeader(opts.filename, header);

  const file = await ImageFile.open(opts.filename, { create: true, truncate: true });
  try {
    const first = new Uint8Array(cs);
    first.set(headerBytes);
    await file.write(0, first);
    const table = new Uint8Array(tableClusters * cs);
    const tv = new DataView(table.buffer);
    for (let b = 0; b < blocks; b++) writeU64(tv, b * 8, blocksOff + b * cs);
    await file.write(reftableOff, table);
    const rb = new Uint8Array(blocks * cs);
    for (let b = 0; b < blocks; b++) {
      const blk = rb.subarray(b * cs, (b + 1) * cs);
      const bv = new DataView(blk.buffer, blk.byteOffset, blk.byteLength);
      for (let i = 0; i < E; i++) {
        if (b * E + i >= totalClusters) break;
        setRefcountEntry(blk, bv, refcountBits, i, 1);
      }
    }
    await file.write(blocksOff, rb);
    const l1 = new Uint8Array(l1Clusters * cs);
    const l1v = new DataView(l1.buffer);
    if (prealloc !== 'off') {
      for (let i = 0; i < l1Size; i++) {
        const off = l2Off + i * cs;
        l1v.setUint32(i * 8, (HI_COPIED | Math.floor(off / 2 ** 32)) >>> 0);
        l1v.setUint32(i * 8 + 4, off >>> 0);
      }
      const l2 = new Uint8Array(l2Clusters * cs);
      const l2v = new DataView(l2.buffer);
      for (let c = 0; c < dataClusters; c++) {
        const off = dataOff + c * cs;
        l2v.setUint32(c * 8, (HI_COPIED | Math.floor(off / 2 ** 32)) >>> 0);
        l2v.setUint32(c * 8 + 4, off >>> 0);
      }
      await file.write(l2Off, l2);
    }
    if (l1.length > 0) await file.write(l1Off, l1);
    const end = totalClusters * cs;
    if (prealloc === 'full') {
      const zero = new Uint8Array(Math.min(1 << 20, dataClusters * cs || 1));
      for (let p = dataOff; p < end; p += zero.length) await file.write(p, zero.subarray(0, Math.min(zero.length, end - p)));
    } else if (prealloc === 'falloc' && end > dataOff) {
      await blockNative().fallocate(file.fd, 0, dataOff, end - dataOff);
    }
    if ((await file.size()) < end) await file.truncate(end);
    await file.datasync();
  } finally {
    await file.close();
  }
}
