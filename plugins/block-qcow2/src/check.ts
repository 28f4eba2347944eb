/**
 * qcow2 consistency check and repair (qemu-img check semantics).
 * Spec: docs/interop/qcow2.txt "Host cluster management" (refcounts),
 * "Cluster mapping" (L1/L2, COPIED flag), "Snapshots", "Bitmaps".
 *
 * Every cluster reachable from the header is counted (header, L1 tables,
 * L2 tables, data and compressed clusters, snapshot table, bitmap
 * structures, refcount table and blocks) and compared with the stored
 * refcounts: stored < counted is a corruption, stored > counted a leak.
 *
 * Repair of leaks decrements in place. Repair of corruptions (and of an
 * image left dirty by lazy refcounts) rebuilds the refcount structure from
 * the counts, written past the end of the file, synced, and only then made
 * current by one header write — so a crash during repair loses nothing.
 */
import { BlockFormatError, type CheckResult } from '@tsvmm/block';
import {
  entryOffset,
  HI_COMPRESSED,
  HI_COPIED,
  INCOMPAT_CORRUPT,
  MAX_REFTABLE_BYTES,
  readU64,
  setRefcountEntry,
  writeU64,
} from './layout.js';
import { compressedHostClusters, decodeCompressedEntry } from './compress.js';
import type { Qcow2Device } from './qcow2-device.js';

interface Tally {
  refs: Uint32Array;
  messages: string[];
  corruptions: number;
  /** the refcount structure itself is unusable: repair must rebuild it */
  refcountStructureBroken: boolean;
  allocatedGuestClusters: number;
  compressedGuestClusters: number;
  fragmentedGuestClusters: number;
  /** highest host byte referenced (image-end-offset) */
  end: number;
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** Counts references to host clusters reachable from the header, except the refcount structure. */
async function countReferences(dev: Qcow2Device, fileSize: number): Promise<Tally> {
  const cs = dev.clusterSize;
  const nClusters = Math.ceil(fileSize / cs);
  const t: Tally = {
    refs: new Uint32Array(nClusters),
    messages: [],
    corruptions: 0,
    refcountStructureBroken: false,
    allocatedGuestClusters: 0,
    compressedGuestClusters: 0,
    fragmentedGuestClusters: 0,
    end: cs,
  };
  const corrupt = (msg: string): void => {
    t.messages.push(msg);
    t.corruptions++;
  };
  /** counts [offset, offset+len); false if it lies outside the file */
  const inc = (offset: number, len: number, what: string): boolean => {
    if (len <= 0) return true;
    const a = Math.floor(offset / cs);
    const b = Math.floor((offset + len - 1) / cs);
    if (b >= nClusters || !Number.isFinite(offset)) {
      corrupt(`ERROR ${what} at ${hex(offset)} lies past the end of the file (${fileSize} bytes)`);
      return false;
    }
    for (let c = a; c <= b; c++) t.refs[c] = (t.refs[c] ?? 0) + 1;
    t.end = Math.max(t.end, (b + 1) * cs);
    return true;
  };

  inc(0, cs, 'header');
  const h = dev.header;

  const walkL1 = async (l1: DataView, l1Size: number, active: boolean, name: string): Promise<void> => {
    let lastHost = -1;
    for (let i = 0; i < l1Size; i++) {
      const hi = l1.getUint32(i * 8);
      const lo = l1.getUint32(i * 8 + 4);
      const l2off = entryOffset(hi, lo);
      if (l2off === 0) continue;
      if (l2off % cs !== 0) {
        corrupt(`ERROR l2_offset=${hex(l2off)}: Table is not cluster aligned; ${name} entry ${i} corrupted`);
        continue;
      }
      if (!inc(l2off, cs, `L2 table (${name} entry ${i})`)) continue;
      const l2 = new Uint8Array(cs);
      await dev.file.readZeroFilled(l2off, l2);
      const v = new DataView(l2.buffer);
      for (let j = 0; j < cs / 8; j++) {
        const ehi = v.getUint32(j * 8);
        const elo = v.getUint32(j * 8 + 4);
        if (ehi === 0 && elo === 0) continue;
        const guest = (i * (cs / 8) + j) * cs;
        if (ehi & HI_COMPRESSED) {
          const { offset, sectors } = decodeCompressedEntry(ehi, elo, dev.clusterBits);
          const [a, b] = compressedHostClusters(offset, sectors, cs);
          if (active) {
            t.allocatedGuestClusters++;
            t.compressedGuestClusters++;
          }
          if (b >= Math.ceil(fileSize / cs) + 1 || offset < cs) {
            corrupt(`ERROR compressed cluster for guest offset ${guest} at ${hex(offset)} lies outside the file`);
            continue;
          }
          for (let c = a; c <= Math.min(b, t.refs.length - 1); c++) t.refs[c] = (t.refs[c] ?? 0) + 1;
          t.end = Math.max(t.end, Math.min(b + 1, t.refs.length) * cs);
          continue;
        }
        const host = entryOffset(ehi, elo);
        if (host === 0) continue;
        if (host % cs !== 0) {
          corrupt(`ERROR offset=${hex(host)}: Cluster is not properly aligned; L2 entry for guest offset ${guest} corrupted`);
          continue;
        }
        if (active) {
          t.allocatedGuestClusters++;
          if (lastHost >= 0 && host !== lastHost + cs) t.fragmentedGuestClusters++;
          lastHost = host;
        }
        inc(host, cs, `data cluster (guest offset ${guest})`);
      }
    }
  };

  const l1Bytes = new Uint8Array(h.l1_size * 8);
  await dev.file.readZeroFilled(h.l1_table_offset, l1Bytes);
  if (h.l1_size > 0) inc(h.l1_table_offset, h.l1_size * 8, 'L1 table');
  await walkL1(new DataView(l1Bytes.buffer), h.l1_size, true, 'L1');

  // internal snapshots: their L1 tables keep clusters alive too
  if (h.nb_snapshots > 0) {
    let off = h.snapshots_offset;
    const start = off;
    for (let s = 0; s < h.nb_snapshots; s++) {
      const fixed = new Uint8Array(40);
      if ((await dev.file.read(off, fixed)) !== 40) {
        corrupt(`ERROR snapshot table entry ${s} at ${hex(off)} lies past the end of the file`);
        break;
      }
      const fv = new DataView(fixed.buffer);
      const l1Offset = readU64(fv, 0);
      const l1Size = fv.getUint32(8);
      const idLen = fv.getUint16(12);
      const nameLen = fv.getUint16(14);
      const extra = fv.getUint32(36);
      if (l1Offset % cs !== 0 || l1Size * 8 > 32 * 1024 * 1024) {
        corrupt(`ERROR snapshot ${s}: L1 table at ${hex(l1Offset)} with ${l1Size} entries is invalid`);
      } else if (inc(l1Offset, l1Size * 8, `snapshot ${s} L1 table`)) {
        const sl1 = new Uint8Array(l1Size * 8);
        await dev.file.readZeroFilled(l1Offset, sl1);
        await walkL1(new DataView(sl1.buffer), l1Size, false, `snapshot ${s} L1`);
      }
      off += Math.ceil((40 + extra + idLen + nameLen) / 8) * 8;
    }
    inc(start, off - start, 'snapshot table');
  }

  // bitmaps count only while the autoclear bit says they are consistent (qemu does the same)
  if (h.bitmaps && dev.bitmapsConsistent) {
    const { bitmap_directory_offset: dirOff, bitmap_directory_size: dirSize, nb_bitmaps } = h.bitmaps;
    if (dirSize > 64 * 1024 * 1024 || !inc(dirOff, dirSize, 'bitmap directory')) {
      corrupt(`ERROR bitmap directory at ${hex(dirOff)} (+${dirSize}) is invalid`);
    } else {
      const dir = new Uint8Array(dirSize);
      await dev.file.readZeroFilled(dirOff, dir);
      const dv = new DataView(dir.buffer);
      let p = 0;
      for (let b = 0; b < nb_bitmaps && p + 24 <= dirSize; b++) {
        const tableOff = readU64(dv, p);
        const tableSize = dv.getUint32(p + 8);
        const nameSize = dv.getUint16(p + 18);
        const extra = dv.getUint32(p + 20);
        if (inc(tableOff, tableSize * 8, `bitmap ${b} table`)) {
          const tb = new Uint8Array(tableSize * 8);
          await dev.file.readZeroFilled(tableOff, tb);
          const tv = new DataView(tb.buffer);
          for (let k = 0; k < tableSize; k++) {
            const o = entryOffset(tv.getUint32(k * 8), tv.getUint32(k * 8 + 4));
            if (o !== 0) inc(o, cs, `bitmap ${b} data`);
          }
        }
        p += Math.ceil((24 + extra + nameSize) / 8) * 8;
      }
    }
  }
  return t;
}

/** Adds the refcount table and blocks themselves; flags a structure that cannot be trusted. */
function countRefcountStructure(dev: Qcow2Device, t: Tally, fileSize: number): Set<number> {
  const cs = dev.clusterSize;
  const rc = dev.refcounts;
  const valid = new Set<number>();
  const nClusters = t.refs.length;
  const add = (offset: number, len: number): void => {
    for (let c = Math.floor(offset / cs); c <= Math.floor((offset + len - 1) / cs) && c < nClusters; c++) {
      t.refs[c] = (t.refs[c] ?? 0) + 1;
    }
    t.end = Math.max(t.end, Math.min(Math.ceil((offset + len) / cs), nClusters) * cs);
  };
  add(rc.tableOffset, rc.tableClusters * cs);
  for (let i = 0; i < rc.tableEntries; i++) {
    const raw = rc.rawTableEntry(i);
    if (raw === 0) continue;
    const off = rc.blockOffset(i);
    if (raw % 512 !== 0 || off % cs !== 0) {
      t.messages.push(`ERROR refcount block ${i} is not cluster aligned; refcount table entry corrupted`);
      t.corruptions++;
      t.refcountStructureBroken = true;
      continue;
    }
    if (off + cs > Math.ceil(fileSize / cs) * cs) {
      t.messages.push(`ERROR refcount block ${i} at ${hex(off)} is outside the image`);
      t.corruptions++;
      t.refcountStructureBroken = true;
      continue;
    }
    valid.add(i);
    add(off, cs);
  }
  return valid;
}

interface Comparison {
  corruptions: number;
  leaks: number;
  leaked: Array<{ cluster: number; stored: number; counted: number }>;
  messages: string[];
}

async function compare(dev: Qcow2Device, refs: Uint32Array, validBlocks: Set<number>): Promise<Comparison> {
  const out: Comparison = { corruptions: 0, leaks: 0, leaked: [], messages: [] };
  const rc = dev.refcounts;
  const E = rc.blockEntries;
  const covered = new Set<number>();
  await rc.forEachAllocatedBlock(
    (first, get) => {
      covered.add(first / E);
      for (let i = 0; i < E; i++) {
        const c = first + i;
        const stored = get(i);
        const counted = c < refs.length ? (refs[c] ?? 0) : 0;
        if (stored === counted) continue;
        if (stored < counted) {
          out.corruptions++;
          out.messages.push(`ERROR cluster ${c} refcount=${stored} reference=${counted}`);
        } else {
          out.leaks++;
          out.leaked.push({ cluster: c, stored, counted });
          out.messages.push(`Leaked cluster ${c} refcount=${stored} reference=${counted}`);
        }
      }
    },
    (ti) => validBlocks.has(ti),
  );
  for (let c = 0; c < refs.length; c++) {
    const counted = refs[c] ?? 0;
    if (counted === 0 || covered.has(Math.floor(c / E))) continue;
    out.corruptions++;
    out.messages.push(`ERROR cluster ${c} refcount=0 reference=${counted}`);
  }
  return out;
}

/** COPIED must be set exactly on entries whose cluster has refcount 1 (active L1 only). */
async function checkCopiedFlags(dev: Qcow2Device, fix: boolean): Promise<{ errors: number; fixed: number; messages: string[] }> {
  const cs = dev.clusterSize;
  const rc = dev.refcounts;
  const res = { errors: 0, fixed: 0, messages: [] as string[] };
  const fileClusters = Math.ceil((await dev.file.size()) / cs);
  // refcounts held in a broken refcount block are unknown; that block was reported already
  const refcount = async (cluster: number): Promise<number | undefined> => {
    try {
      return await rc.get(cluster);
    } catch (e) {
      if (e instanceof BlockFormatError) return undefined;
      throw e;
    }
  };
  for (const { l1i, offset } of dev.activeL2Tables()) {
    if (offset % cs !== 0 || offset / cs >= fileClusters) continue;
    const l1 = dev.l1Raw(l1i);
    const l2ref = await refcount(offset / cs);
    if (l2ref === undefined) continue;
    if ((l2ref === 1) !== ((l1.hi & HI_COPIED) !== 0)) {
      res.errors++;
      res.messages.push(`ERROR OFLAG_COPIED L2 cluster: l1_index=${l1i} l1_entry=${hex(offset)} refcount=${l2ref}`);
      if (fix) {
        await dev.rewriteL1Entry(l1i, l2ref === 1 ? (l1.hi | HI_COPIED) >>> 0 : (l1.hi & ~HI_COPIED) >>> 0, l1.lo);
        res.fixed++;
      }
    }
    const l2 = new Uint8Array(cs);
    await dev.file.readZeroFilled(offset, l2);
    const v = new DataView(l2.buffer);
    let changed = false;
    for (let j = 0; j < cs / 8; j++) {
      const hi = v.getUint32(j * 8);
      const lo = v.getUint32(j * 8 + 4);
      if (hi & HI_COMPRESSED) continue;
      const host = entryOffset(hi, lo);
      if (host === 0 || host % cs !== 0 || host / cs >= fileClusters) continue;
      const r = await refcount(host / cs);
      if (r === undefined) continue;
      if ((r === 1) !== ((hi & HI_COPIED) !== 0)) {
        res.errors++;
        res.messages.push(`ERROR OFLAG_COPIED data cluster: l2_entry=${hex(host)} refcount=${r}`);
        if (fix) {
          v.setUint32(j * 8, r === 1 ? (hi | HI_COPIED) >>> 0 : (hi & ~HI_COPIED) >>> 0);
          changed = true;
          res.fixed++;
        }
      }
    }
    if (changed) await dev.file.write(offset, l2);
  }
  if (res.fixed > 0) {
    dev.dropL2Cache();
    await dev.file.datasync();
  }
  return res;
}

/** Writes a fresh refcount table and blocks for `refs` past the end of the file and switches to it. */
async function rebuildRefcounts(dev: Qcow2Device, base: Uint32Array, fileSize: number): Promise<void> {
  const cs = dev.clusterSize;
  const rc = dev.refcounts;
  const E = rc.blockEntries;
  const start = Math.ceil(fileSize / cs);
  const used = new Set<number>();
  for (let c = 0; c < base.length; c++) {
    const r = base[c] ?? 0;
    if (r === 0) continue;
    if (r > rc.maxRefcount) {
      throw new BlockFormatError(dev.filename, 'refcount block', `cluster ${c} has ${r} references, more than refcount_bits ${rc.bits} can hold`);
    }
    used.add(Math.floor(c / E));
  }
  let tableClusters = 1;
  let blocks = 0;
  for (;;) {
    const end = start + tableClusters + blocks;
    const regions = new Set(used);
    for (let r = Math.floor(start / E); r <= Math.floor((end - 1) / E); r++) regions.add(r);
    const maxRegion = Math.max(...regions);
    const needTable = Math.ceil(((maxRegion + 1) * 8) / cs);
    if (needTable === tableClusters && regions.size === blocks) break;
    tableClusters = Math.max(tableClusters, needTable);
    blocks = regions.size;
  }
  if (tableClusters * cs > MAX_REFTABLE_BYTES) {
    throw new BlockFormatError(dev.filename, 'refcount table', 'a rebuilt table would exceed the 8 MiB limit');
  }
  const end = start + tableClusters + blocks;
  const regions = new Set(used);
  for (let r = Math.floor(start / E); r <= Math.floor((end - 1) / E); r++) regions.add(r);
  const order = [...regions].sort((a, b) => a - b);
  const table = new Uint8Array(tableClusters * cs);
  const tv = new DataView(table.buffer);
  const refOf = (c: number): number => (c >= start && c < end ? 1 : c < base.length ? (base[c] ?? 0) : 0);
  let next = start + tableClusters;
  for (const r of order) {
    const blk = new Uint8Array(cs);
    const bv = new DataView(blk.buffer);
    for (let i = 0; i < E; i++) {
      const v = refOf(r * E + i);
      if (v !== 0) setRefcountEntry(blk, bv, rc.bits, i, v);
    }
    await dev.file.write(next * cs, blk);
    writeU64(tv, r * 8, next * cs);
    next++;
  }
  await dev.file.write(start * cs, table);
  await dev.file.datasync();
  const hdr = new Uint8Array(12);
  const hv = new DataView(hdr.buffer);
  writeU64(hv, 0, start * cs);
  hv.setUint32(8, tableClusters);
  await dev.file.write(48, hdr); // refcount_table_offset, refcount_table_clusters
  await dev.file.datasync();
  dev.adoptRefcountTable(start * cs, tableClusters, table);
  dev.hostEnd = Math.max(dev.hostEnd, end * cs);
}

async function scan(dev: Qcow2Device): Promise<{ tally: Tally; cmp: Comparison; base: Uint32Array; fileSize: number }> {
  const fileSize = await dev.file.size();
  const tally = await countReferences(dev, fileSize);
  const base = tally.refs.slice();
  const valid = countRefcountStructure(dev, tally, fileSize);
  const cmp = await compare(dev, tally.refs, valid);
  return { tally, cmp, base, fileSize };
}

export async function checkImage(dev: Qcow2Device, opts: { repair?: 'leaks' | 'all' }): Promise<CheckResult> {
  let { tally, cmp, base, fileSize } = await scan(dev);
  const copied = await checkCopiedFlags(dev, false);
  let corruptionsFixed = 0;
  let leaksFixed = 0;
  const messages: string[] = [];
  if (opts.repair) {
    const corruptions = tally.corruptions + cmp.corruptions;
    const structural = tally.refcountStructureBroken || cmp.corruptions > 0;
    if (opts.repair === 'all' && structural) {
      await rebuildRefcounts(dev, base, fileSize);
      corruptionsFixed += cmp.corruptions + (tally.refcountStructureBroken ? 1 : 0);
      leaksFixed += cmp.leaks;
    } else if (cmp.leaks > 0) {
      for (const l of cmp.leaked) await dev.refcounts.update(l.cluster, l.counted - l.stored);
      await dev.refcounts.writeDirty();
      await dev.file.datasync();
      leaksFixed += cmp.leaks;
    }
    if (opts.repair === 'all') {
      const fixedCopied = await checkCopiedFlags(dev, true);
      corruptionsFixed += fixedCopied.fixed;
    }
    ({ tally, cmp, base, fileSize } = await scan(dev));
    const after = await checkCopiedFlags(dev, false);
    const remaining = tally.corruptions + cmp.corruptions + after.errors;
    if (opts.repair === 'all' && remaining === 0 && dev.header.incompatible_features & INCOMPAT_CORRUPT) {
      await dev.clearCorrupt();
    }
    messages.push(...tally.messages, ...cmp.messages, ...after.messages);
    void corruptions;
    return result(dev, tally, cmp, after.errors, messages, corruptionsFixed, leaksFixed);
  }
  messages.push(...tally.messages, ...cmp.messages, ...copied.messages);
  return result(dev, tally, cmp, copied.errors, messages, undefined, undefined);
}

function result(
  dev: Qcow2Device,
  tally: Tally,
  cmp: Comparison,
  copiedErrors: number,
  messages: string[],
  corruptionsFixed: number | undefined,
  leaksFixed: number | undefined,
): CheckResult {
  const r: CheckResult = {
    filename: dev.filename,
    format: 'qcow2',
    'check-errors': 0,
    corruptions: tally.corruptions + cmp.corruptions + copiedErrors,
    leaks: cmp.leaks,
    'image-end-offset': tally.end,
    'total-clusters': Math.ceil(dev.size / dev.clusterSize),
    'allocated-clusters': tally.allocatedGuestClusters,
    'fragmented-clusters': tally.fragmentedGuestClusters,
    'compressed-clusters': tally.compressedGuestClusters,
    messages,
  };
  if (corruptionsFixed !== undefined) r['corruptions-fixed'] = corruptionsFixed;
  if (leaksFixed !== undefined) r['leaks-fixed'] = leaksFixed;
  return r;
}
