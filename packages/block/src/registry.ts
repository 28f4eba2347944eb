/**
 * The block driver registry: every BlockDriverDefinition the plugins
 * registered (PluginTokens['block-driver']), format probing, and opening an
 * image with its backing chain resolved through the same registry.
 *
 * Backing file names are resolved like qemu does: relative to the directory
 * of the image that names them. A chain that comes back to a file already
 * being opened is an error naming the whole chain, not a stack overflow.
 */
import path from 'node:path';
import { realpath } from 'node:fs/promises';
import type { DependencyContainer } from 'tsyringe';
import { PluginTokens } from '@tsvmm/core';
import type { BlockDevice, BlockDriverDefinition, BlockCreateOptions } from './driver.js';
import { BlockError, BlockFormatError, BlockIOError, BlockUnsupportedError } from './errors.js';
import { ImageFile } from './image-file.js';

export interface OpenImageOptions {
  /** skip probing and use this format */
  format?: string;
  readOnly?: boolean;
  options?: Record<string, string>;
  /** open for `img check -r` (see BlockOpenOptions.check) */
  check?: boolean;
}

/** Deepest backing chain we follow; qemu has no fixed limit, but 256 levels is already pathological. */
export const MAX_BACKING_CHAIN_DEPTH = 256;
const PROBE_BYTES = 4096;

function isProtocolName(name: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(name);
}

/** Where a backing file name points, given the image that names it (qemu semantics). */
export function resolveBackingFilename(imageFilename: string, backing: string): string {
  if (isProtocolName(backing) || path.isAbsolute(backing)) return backing;
  if (isProtocolName(imageFilename)) return backing;
  return path.join(path.dirname(imageFilename), backing);
}

export class BlockDriverRegistry {
  private readonly drivers = new Map<string, BlockDriverDefinition>();

  constructor(definitions: Iterable<BlockDriverDefinition> = []) {
    for (const d of definitions) this.add(d);
  }

  /** Collects every definition the loaded plugins registered in the container. */
  static fromContainer(container: DependencyContainer): BlockDriverRegistry {
    const token = PluginTokens['block-driver'];
    const defs = container.isRegistered(token, true)
      ? container.resolveAll<BlockDriverDefinition>(token)
      : [];
    return new BlockDriverRegistry(defs);
  }

  add(def: BlockDriverDefinition): this {
    if (this.drivers.has(def.format)) {
      throw new BlockError(`block driver '${def.format}' is registered twice`);
    }
    this.drivers.set(def.format, def);
    return this;
  }

  has(format: string): boolean {
    return this.drivers.has(format);
  }

  formats(): string[] {
    return [...this.drivers.keys()].sort();
  }

  get(format: string): BlockDriverDefinition {
    const d = this.drivers.get(format);
    if (!d) {
      throw new BlockError(
        `unknown image format '${format}'; known formats: ${this.formats().join(', ') || '(none: no block-driver plugin is loaded)'}`,
      );
    }
    return d;
  }

  /** The protocol driver a URI's scheme names; `nbd+unix://` and `nbd+tcp://` are nbd's transports. */
  private protocolDriverFor(filename: string): BlockDriverDefinition | undefined {
    const scheme = /^([a-z][a-z0-9.-]*)(?:\+[a-z0-9.-]+)?:\/\//i.exec(filename)?.[1]?.toLowerCase();
    return scheme === undefined ? undefined : [...this.drivers.values()].find((d) => d.protocol === scheme);
  }

  /** The format whose driver is most confident about the file's first bytes. */
  async probe(filename: string): Promise<string> {
    const proto = this.protocolDriverFor(filename);
    if (proto) return proto.format;
    const file = await ImageFile.open(filename, { readOnly: true });
    const head = new Uint8Array(PROBE_BYTES);
    let n: number;
    try {
      n = await file.read(0, head);
    } finally {
      await file.close();
    }
    let best: { format: string; score: number } | undefined;
    for (const d of this.drivers.values()) {
      if (!d.probe) continue;
      const score = d.probe(head.subarray(0, n), filename);
      if (score > 0 && (!best || score > best.score)) best = { format: d.format, score };
    }
    if (!best) {
      throw new BlockFormatError(
        filename,
        'format probe',
        'no block driver recognises the file',
        `name the format with -f (known formats: ${this.formats().join(', ')})`,
      );
    }
    return best.format;
  }

  async create(format: string, opts: BlockCreateOptions): Promise<void> {
    const d = this.get(format);
    if (!d.create) throw new BlockError(`format '${format}' does not support creating images`);
    await d.create(opts);
  }

  /** Opens an image and, through the driver's openBacking calls, its whole backing chain. */
  async openImage(filename: string, opts: OpenImageOptions = {}): Promise<BlockDevice> {
    return this.openInChain(filename, opts, []);
  }

  private async openInChain(
    filename: string,
    opts: OpenImageOptions,
    chain: Array<{ filename: string; key: string }>,
  ): Promise<BlockDevice> {
    const key = isProtocolName(filename) ? filename : await canonicalPath(filename);
    const seen = chain.findIndex((c) => c.key === key);
    if (seen >= 0) {
      const names = [...chain.slice(seen).map((c) => c.filename), filename].join(' -> ');
      const opener = chain[chain.length - 1];
      throw new BlockFormatError(
        opener ? opener.filename : filename,
        'backing chain',
        `loops back to an image already in the chain: ${names}`,
        'point the image at the right backing file with `tsvmm img rebase -u -b FILE`',
      );
    }
    if (chain.length >= MAX_BACKING_CHAIN_DEPTH) {
      throw new BlockFormatError(
        filename,
        'backing chain',
        `is deeper than ${MAX_BACKING_CHAIN_DEPTH} images`,
        'flatten it with `tsvmm img convert`',
      );
    }
    const proto = this.protocolDriverFor(filename);
    let format = opts.format ?? proto?.format ?? (await this.probe(filename));
    if (proto !== undefined && format !== proto.format) {
      // qemu stacks a format on a protocol (raw over nbd://); tsvmm's protocol drivers
      // already present the guest-visible bytes, so raw over them is the protocol itself
      if (format !== 'raw') {
        throw new BlockUnsupportedError(
          filename,
          'open',
          `format ${format} over ${proto.protocol ?? proto.format}:// is not supported: tsvmm's ${format} driver reads local files; export the image with its format (tsvmm nbd serve, qemu-nbd -f ${format}) and open the export as raw`,
        );
      }
      format = proto.format;
    }
    const driver = this.get(format);
    const here = [...chain, { filename, key }];
    return driver.open({
      filename,
      readOnly: opts.readOnly ?? false,
      options: opts.options ?? {},
      ...(opts.check ? { check: true } : {}),
      openBacking: (backing, backingFormat, readOnly) =>
        this.openInChain(
          resolveBackingFilename(filename, backing),
          { format: backingFormat, readOnly },
          here,
        ),
    });
  }
}

async function canonicalPath(filename: string): Promise<string> {
  try {
    return await realpath(filename);
  } catch (e) {
    throw new BlockIOError(filename, 'open', e);
  }
}
