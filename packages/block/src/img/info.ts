/** `img info`, `img map` and `img check`: output formats that match qemu-img's. */
import type { BlockDevice, CheckResult, ImageInfo } from '../driver.js';
import { formatSize } from '../size.js';
import { resolveBackingFilename } from '../registry.js';
import { type ImgIo, ImgExit, forEachExtent, openForImg, quoteJson } from './common.js';

/** printf's %#x: no 0x prefix for zero */
function hex(n: number): string {
  return n === 0 ? '0' : `0x${n.toString(16)}`;
}

function humanKey(k: string): string {
  return k.replace(/-/g, ' ');
}

export function formatInfoHuman(info: ImageInfo): string {
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${formatSize(info['virtual-size'])} (${info['virtual-size']} bytes)`,
  ];
  if (info['actual-size'] !== undefined) lines.push(`disk size: ${formatSize(info['actual-size'])}`);
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${info['cluster-size']}`);
  if (info['backing-filename'] !== undefined) {
    const full = info['full-backing-filename'];
    lines.push(
      full !== undefined && full !== info['backing-filename']
        ? `backing file: ${info['backing-filename']} (actual path: ${full})`
        : `backing file: ${info['backing-filename']}`,
    );
    if (info['backing-filename-format'] !== undefined) lines.push(`backing file format: ${info['backing-filename-format']}`);
  }
  if (info['dirty-flag']) lines.push('cleanly shut down: no');
  const fs = info['format-specific'];
  if (fs && Object.keys(fs.data).length > 0) {
    lines.push('Format specific information:');
    for (const [k, v] of Object.entries(fs.data)) lines.push(`    ${humanKey(k)}: ${String(v)}`);
  }
  return lines.join('\n') + '\n';
}

export async function cmdInfo(io: ImgIo, filename: string, o: { format?: string; output?: string; backingChain?: boolean }): Promise<number> {
  const dev = await openForImg(io, filename, { format: o.format, readOnly: true });
  try {
    const infos: ImageInfo[] = [];
    const first = await dev.info();
    infos.push(first);
    if (o.backingChain) {
      // walk the chain by reopening each backing file: the device keeps its backing private
      let cur = first;
      const reg = io.registry;
      while (cur['backing-filename'] !== undefined && reg) {
        const next = cur['full-backing-filename'] ?? resolveBackingFilename(cur.filename, cur['backing-filename']);
        const b = await reg.openImage(next, { format: cur['backing-filename-format'], readOnly: true });
        try {
          cur = await b.info();
        } finally {
          await b.close();
        }
        infos.push(cur);
      }
    }
    if (o.output === 'json') {
      io.stdout.write(quoteJson(o.backingChain ? infos : first) + '\n');
    } else {
      io.stdout.write(infos.map(formatInfoHuman).join('\n'));
    }
    return 0;
  } finally {
    await dev.close();
  }
}

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
  file?: string;
}

export async function collectMap(dev: BlockDevice, start = 0, end = dev.size): Promise<MapEntry[]> {
  const out: MapEntry[] = [];
  await forEachExtent(dev, start, end, 1 << 30, (e) => {
    const entry: MapEntry = {
      start: e.offset,
      length: e.length,
      depth: e.depth,
      present: e.present ?? e.allocated,
      zero: e.zero,
      data: e.data,
    };
    if (e.hostOffset !== undefined) {
      entry.offset = e.hostOffset;
      if (e.hostFile !== undefined) entry.file = e.hostFile;
    }
    const prev = out[out.length - 1];
    if (
      prev &&
      prev.depth === entry.depth &&
      prev.present === entry.present &&
      prev.zero === entry.zero &&
      prev.data === entry.data &&
      prev.file === entry.file &&
      (prev.offset === undefined) === (entry.offset === undefined) &&
      (prev.offset === undefined || prev.offset + prev.length === entry.offset)
    ) {
      prev.length += entry.length;
    } else {
      out.push(entry);
    }
  });
  return out;
}

export async function cmdMap(io: ImgIo, filename: string, o: { format?: string; output?: string; startOffset?: number; maxLength?: number }): Promise<number> {
  const dev = await openForImg(io, filename, { format: o.format, readOnly: true });
  try {
    const start = Math.min(o.startOffset ?? 0, dev.size);
    const end = o.maxLength !== undefined ? Math.min(dev.size, start + o.maxLength) : dev.size;
    const map = await collectMap(dev, start, end);
    if (o.output === 'json') {
      const lines = map.map((m) => {
        let s = `{ "start": ${m.start}, "length": ${m.length}, "depth": ${m.depth}, "present": ${m.present}, "zero": ${m.zero}, "data": ${m.data}`;
        if (m.offset !== undefined) s += `, "offset": ${m.offset}`;
        return s + '}';
      });
      io.stdout.write(`[${lines.join(',\n')}]\n`);
    } else {
      const pad = (s: string): string => s.padEnd(16);
      io.stdout.write(`${pad('Offset')}${pad('Length')}${pad('Mapped to')}File\n`);
      for (const m of map) {
        if (!m.data || m.offset === undefined) continue;
        io.stdout.write(`${pad(hex(m.start))}${pad(hex(m.length))}${pad(hex(m.offset))}${m.file ?? filename}\n`);
      }
    }
    return 0;
  } finally {
    await dev.close();
  }
}

export function checkExitCode(r: CheckResult): number {
  if (r['check-errors'] > 0) return 1;
  if (r.corruptions > 0) return 2;
  if (r.leaks > 0) return 3;
  return 0;
}

function formatCheckHuman(r: CheckResult, quiet: boolean): string {
  const out: string[] = [];
  if (!quiet) for (const m of r.messages) out.push(m);
  const fixedSomething = (r['corruptions-fixed'] ?? 0) + (r['leaks-fixed'] ?? 0) > 0;
  if (fixedSomething && !quiet) {
    out.push(
      '',
      'The following inconsistencies were found and repaired:',
      '',
      `    ${r['leaks-fixed'] ?? 0} leaked clusters`,
      `    ${r['corruptions-fixed'] ?? 0} corruptions`,
      '',
      'Double checking the fixed image now...',
    );
  }
  if (r.corruptions > 0) {
    out.push('', `${r.corruptions} errors were found on the image.`, 'Data may be corrupted, or further writes to the image may corrupt it.');
  }
  if (r.leaks > 0) {
    out.push('', `${r.leaks} leaked clusters were found on the image.`, 'This means waste of disk space, but no harm to data.');
  }
  if (r.corruptions === 0 && r.leaks === 0 && r['check-errors'] === 0) out.push('No errors were found on the image.');
  const total = r['total-clusters'] ?? 0;
  const alloc = r['allocated-clusters'] ?? 0;
  if (total > 0 && alloc > 0 && !quiet) {
    const pct = (n: number, d: number): string => ((n / d) * 100).toFixed(2);
    out.push(
      `${alloc}/${total} = ${pct(alloc, total)}% allocated, ${pct(r['fragmented-clusters'] ?? 0, alloc)}% fragmented, ${pct(r['compressed-clusters'] ?? 0, alloc)}% compressed clusters`,
    );
  }
  if (r['image-end-offset'] !== undefined && !quiet) out.push(`Image end offset: ${r['image-end-offset']}`);
  while (out[0] === '') out.shift();
  return quiet && r.corruptions === 0 && r.leaks === 0 ? '' : out.join('\n') + '\n';
}

export async function cmdCheck(io: ImgIo, filename: string, o: { format?: string; output?: string; repair?: string; quiet?: boolean }): Promise<number> {
  let repair: 'leaks' | 'all' | undefined;
  if (o.repair !== undefined) {
    if (o.repair !== 'leaks' && o.repair !== 'all') throw new ImgExit(1, `invalid -r value '${o.repair}': use leaks or all`);
    repair = o.repair;
  }
  const dev = await openForImg(io, filename, { format: o.format, readOnly: repair === undefined, check: true });
  try {
    if (!dev.check) {
      io.stderr.write(`tsvmm img: This image format does not support checks\n`);
      return 63;
    }
    const r = await dev.check(repair ? { repair } : {});
    if (o.output === 'json') {
      const j: Record<string, unknown> = {};
      if (r['image-end-offset'] !== undefined) j['image-end-offset'] = r['image-end-offset'];
      if (r['total-clusters'] !== undefined) j['total-clusters'] = r['total-clusters'];
      j['check-errors'] = r['check-errors'];
      if (r.leaks > 0) j['leaks'] = r.leaks;
      if (r.corruptions > 0) j['corruptions'] = r.corruptions;
      if (r['leaks-fixed']) j['leaks-fixed'] = r['leaks-fixed'];
      if (r['corruptions-fixed']) j['corruptions-fixed'] = r['corruptions-fixed'];
      if (r['allocated-clusters'] !== undefined) j['allocated-clusters'] = r['allocated-clusters'];
      j['filename'] = r.filename;
      j['format'] = r.format;
      if (r['fragmented-clusters']) j['fragmented-clusters'] = r['fragmented-clusters'];
      if (r['compressed-clusters']) j['compressed-clusters'] = r['compressed-clusters'];
      io.stdout.write(quoteJson(j) + '\n');
    } else {
      io.stdout.write(formatCheckHuman(r, o.quiet ?? false));
    }
    return checkExitCode(r);
  } finally {
    await dev.close();
  }
}
