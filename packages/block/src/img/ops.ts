/** `img create`, `resize`, `amend`, `commit`, `rebase`. */
import { BlockUnsupportedError } from '../errors.js';
import { parseSize } from '../size.js';
import { resolveBackingFilename } from '../registry.js';
import { type ImgIo, CHUNK, ImgExit, forEachExtent, openForImg, requireRegistry } from './common.js';
import { createProgress } from './progress.js';

export async function cmdCreate(
  io: ImgIo,
  filenameArg: string | undefined,
  sizeArg: string | undefined,
  o: { format?: string; options?: Record<string, string>; backing?: string; backingFormat?: string; unsafe?: boolean; quiet?: boolean },
): Promise<number> {
  const reg = requireRegistry(io);
  const format = o.format ?? 'raw';
  const options = { ...(o.options ?? {}) };
  if (o.backing !== undefined) options['backing_file'] = o.backing;
  if (o.backingFormat !== undefined) options['backing_fmt'] = o.backingFormat;
  if (options['help'] !== undefined) {
    const d = reg.get(format);
    io.stdout.write(`Supported options for ${format}:\n`);
    for (const c of d.createOptions ?? []) io.stdout.write(`  ${c.name.padEnd(24)} <${c.type}>  - ${c.help}${c.default !== undefined ? ` (default: ${c.default})` : ''}\n`);
    return 0;
  }
  if (filenameArg === undefined) throw new ImgExit(1, "create: missing the image's filename (usage: create [-f FMT] [-o OPTIONS] FILENAME [SIZE])");
  const filename = filenameArg;
  let size: number | undefined;
  const sizeText = sizeArg ?? options['size'];
  delete options['size'];
  if (sizeText !== undefined) size = parseSize(sizeText);
  const backing = options['backing_file'];
  if (backing !== undefined && !o.unsafe) {
    // like qemu-img, the backing file must open (and gives the size if none was given)
    const full = resolveBackingFilename(filename, backing);
    const b = await reg.openImage(full, { format: options['backing_fmt'], readOnly: true });
    try {
      size ??= b.size;
      if (options['backing_fmt'] === undefined) options['backing_fmt'] = b.format;
    } finally {
      await b.close();
    }
  }
  if (size === undefined) throw new ImgExit(1, 'Image creation needs a size parameter');
  if (!o.quiet) {
    const opts = Object.entries(options).map(([k, v]) => ` ${k}=${v}`).join('');
    io.stdout.write(`Formatting '${filename}', fmt=${format} size=${size}${opts}\n`);
  }
  await reg.create(format, { filename, size, options });
  return 0;
}

export async function cmdResize(io: ImgIo, filename: string, sizeArg: string, o: { format?: string; shrink?: boolean; quiet?: boolean }): Promise<number> {
  const dev = await openForImg(io, filename, { format: o.format });
  try {
    const rel = sizeArg.startsWith('+') ? 1 : sizeArg.startsWith('-') ? -1 : 0;
    const amount = parseSize(rel !== 0 ? sizeArg.slice(1) : sizeArg);
    const newSize = rel === 0 ? amount : dev.size + rel * amount;
    if (newSize < 0) throw new ImgExit(1, `cannot resize ${filename} below 0 bytes (it has ${dev.size})`);
    if (newSize < dev.size && !o.shrink) {
      throw new ImgExit(1, 'Use the --shrink option to perform a shrink operation (data past the new end is lost)');
    }
    await dev.resize(newSize);
    await dev.flush();
    if (!o.quiet) io.stdout.write('Image resized.\n');
    return 0;
  } finally {
    await dev.close();
  }
}

export async function cmdAmend(io: ImgIo, filename: string, o: { format?: string; options?: Record<string, string> }): Promise<number> {
  const opts = o.options ?? {};
  if (Object.keys(opts).length === 0) throw new ImgExit(1, 'amend needs -o OPTIONS (e.g. -o compat=0.10)');
  const dev = await openForImg(io, filename, { format: o.format });
  try {
    if (!dev.amend) throw new BlockUnsupportedError(filename, 'amend', `format '${dev.format}' has no amendable options`);
    await dev.amend(opts);
    return 0;
  } finally {
    await dev.close();
  }
}

/** Copies everything allocated in the top layer into its backing file, then empties the top (unless -d). */
export async function cmdCommit(io: ImgIo, filename: string, o: { format?: string; base?: string; drop?: boolean; progress?: boolean; quiet?: boolean }): Promise<number> {
  const reg = requireRegistry(io);
  const top = await openForImg(io, filename, { format: o.format, readOnly: true });
  let topFormat: string;
  try {
    const info = await top.info();
    topFormat = info.format;
    const backingName = info['backing-filename'];
    if (backingName === undefined) throw new ImgExit(1, `${filename} has no backing file to commit into`);
    const basePath = info['full-backing-filename'] ?? resolveBackingFilename(filename, backingName);
    if (o.base !== undefined && resolveBackingFilename(process.cwd() + '/x', o.base) !== resolveBackingFilename(process.cwd() + '/x', basePath)) {
      throw new ImgExit(1, `-b ${o.base}: tsvmm commits only into the immediate backing file (${basePath})`);
    }
    const base = await reg.openImage(basePath, { format: info['backing-filename-format'] });
    try {
      if (base.size < top.size) await base.resize(top.size);
      const progress = createProgress(io.stdout, top.size, o.progress ?? false);
      await forEachExtent(top, 0, top.size, CHUNK, async (e) => {
        if (e.allocated && e.depth === 0) {
          if (e.data) {
            const buf = new Uint8Array(e.length);
            await top.read(e.offset, buf);
            await base.write(e.offset, buf);
          } else {
            await base.writeZeroes(e.offset, e.length, { mayUnmap: true });
          }
        }
        progress.update(e.offset + e.length);
      });
      progress.stop();
      await base.flush();
    } finally {
      await base.close();
    }
  } finally {
    await top.close();
  }
  if (!o.drop) {
    const t = await openForImg(io, filename, { format: topFormat });
    try {
      if (t.makeEmpty) await t.makeEmpty();
    } finally {
      await t.close();
    }
  }
  if (!o.quiet) io.stdout.write('Image committed.\n');
  return 0;
}

/**
 * Points an image at a new backing file. Safe mode first copies into the
 * image every range it does not allocate itself where the old and new
 * backing files differ, so the guest-visible content stays the same.
 */
export async function cmdRebase(
  io: ImgIo,
  filename: string,
  o: { format?: string; backing?: string; backingFormat?: string; unsafe?: boolean; progress?: boolean },
): Promise<number> {
  if (o.backing === undefined) throw new ImgExit(1, 'rebase needs -b BACKING_FILE (use -b "" to remove the backing file)');
  const reg = requireRegistry(io);
  const newName = o.backing === '' ? undefined : o.backing;
  const dev = await openForImg(io, filename, { format: o.format });
  try {
    if (!dev.changeBackingFile) throw new BlockUnsupportedError(filename, 'rebase', `format '${dev.format}' has no backing file`);
    let fmt = o.backingFormat;
    if (!o.unsafe) {
      const nb = newName !== undefined ? await reg.openImage(resolveBackingFilename(filename, newName), { format: fmt, readOnly: true }) : undefined;
      fmt ??= nb?.format;
      try {
        const progress = createProgress(io.stdout, dev.size, o.progress ?? false);
        await forEachExtent(dev, 0, dev.size, CHUNK, async (e) => {
          progress.update(e.offset);
          if (e.allocated) return;
          const oldData = new Uint8Array(e.length);
          await dev.read(e.offset, oldData);
          const newData = new Uint8Array(e.length);
          if (nb && e.offset < nb.size) await nb.read(e.offset, newData.subarray(0, Math.min(e.length, nb.size - e.offset)));
          if (Buffer.compare(Buffer.from(oldData), Buffer.from(newData)) !== 0) await dev.write(e.offset, oldData);
        });
        progress.stop();
        await dev.flush();
      } finally {
        await nb?.close();
      }
    } else if (newName !== undefined && fmt === undefined) {
      // -u only rewrites the header: a new backing file that cannot be probed (it may not exist yet) is recorded without a format
      fmt = await reg.probe(resolveBackingFilename(filename, newName)).catch(() => undefined);
    }
    await dev.changeBackingFile(newName, newName !== undefined ? fmt : undefined);
    return 0;
  } finally {
    await dev.close();
  }
}

