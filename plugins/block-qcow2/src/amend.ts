/**
 * qemu-img amend for qcow2: compat (0.10 <-> 1.1) and lazy_refcounts.
 * Spec: docs/interop/qcow2.txt "Header" (version 2 has no feature bitmaps,
 * no refcount_order other than 4, and no zero flag in L2 entries).
 */
import { BlockOptionError, BlockUnsupportedError, parseBool } from '@tsvmm/block';
import {
  COMPAT_LAZY_REFCOUNTS,
  DEFAULT_FEATURE_NAMES,
  INCOMPAT_DIRTY,
  V3_HEADER_LENGTH,
} from './layout.js';
import type { Qcow2Device } from './qcow2-device.js';

export function parseCompat(value: string): 2 | 3 {
  switch (value) {
    case '0.10':
    case 'v2':
      return 2;
    case '1.1':
    case 'v3':
      return 3;
    default:
      throw new BlockOptionError('compat', `'${value}' must be 0.10 (v2) or 1.1 (v3)`);
  }
}

/** Runs with the device's exclusive lock held and its caches written back. */
export async function amendImage(dev: Qcow2Device, options: Record<string, string>): Promise<void> {
  const h = dev.header;
  for (const k of Object.keys(options)) {
    if (k !== 'compat' && k !== 'lazy_refcounts') {
      throw new BlockUnsupportedError(dev.filename, `amend -o ${k}`, 'tsvmm amends only compat and lazy_refcounts');
    }
  }
  const target = options['compat'] !== undefined ? parseCompat(options['compat']) : h.version;
  const lazy = options['lazy_refcounts'] !== undefined ? parseBool(options['lazy_refcounts'], 'lazy_refcounts') : undefined;
  if (lazy && target < 3) {
    throw new BlockOptionError('lazy_refcounts', 'needs compat=1.1 (qcow2 version 3)');
  }
  // refcounts must be on disk before lazy refcounts or the dirty bit go away
  if (dev.isLazyDirty) {
    await dev.refcounts.writeDirty();
    await dev.file.datasync();
    h.incompatible_features &= ~INCOMPAT_DIRTY;
    dev.setLazyDirty(false);
  }
  if (lazy === true) h.compatible_features |= COMPAT_LAZY_REFCOUNTS;
  if (lazy === false) h.compatible_features &= ~COMPAT_LAZY_REFCOUNTS;

  if (target === 2 && h.version === 3) {
    if (h.refcount_order !== 4) {
      throw new BlockUnsupportedError(dev.filename, 'amend -o compat=0.10', `version 2 needs refcount_bits=16, the image has ${2 ** h.refcount_order}`);
    }
    if (h.incompatible_features !== 0n) {
      throw new BlockUnsupportedError(dev.filename, 'amend -o compat=0.10', 'the image has incompatible features set (corrupt or dirty); repair it first');
    }
    await dev.expandZeroClusters();
    await dev.writeback();
    h.version = 2;
    h.compatible_features = 0n;
    h.autoclear_features = 0n;
    h.header_length = 72;
    h.featureNames = [];
  } else if (target === 3 && h.version === 2) {
    h.version = 3;
    h.header_length = V3_HEADER_LENGTH;
    h.refcount_order = 4;
    h.incompatible_features = 0n;
    h.autoclear_features = 0n;
    h.featureNames = DEFAULT_FEATURE_NAMES.slice();
  }
  await dev.rewriteHeader();
}
