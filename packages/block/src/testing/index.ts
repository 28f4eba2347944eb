/**
 * Test support for block drivers (`@tsvmm/block/testing`): the qemu-img /
 * qemu-io peer (Debian package qemu-utils; a missing tool fails the test
 * naming the package), scratch directories, file hashes and patches, a seeded
 * PRNG, and the checks every image format's tests make — a random operation
 * sequence against an in-memory model, a damaged image refused with a
 * BlockFormatError and left as it was, a fuzzed image that opens consistently
 * or fails with a BlockError.
 *
 * Assertions use node:assert so that a driver's tests need nothing more.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { BlockDevice } from '../driver.js';
import { BlockError, BlockFormatError } from '../errors.js';

export interface ToolResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs a qemu-utils tool; a missing tool fails the test naming the package. */
export function qemu(tool: 'qemu-img' | 'qemu-io' | 'qemu-nbd', args: string[], opts: { allowFail?: boolean } = {}): ToolResult {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.error !== undefined) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`${tool} is not installed: install the Debian package qemu-utils (apt-get install qemu-utils) to run the interoperability tests`);
    }
    throw r.error;
  }
  const res = { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  if (res.status !== 0 && opts.allowFail !== true) {
    throw new Error(`${tool} ${args.join(' ')} exited ${res.status}: ${res.stderr}${res.stdout}`);
  }
  return res;
}

/** `qemu-img ARGS --output json`, parsed. */
export function qemuImgJson<T>(args: string[]): T {
  return JSON.parse(qemu('qemu-img', [...args, '--output', 'json']).stdout) as T;
}

export interface ScratchDir {
  dir: string;
  file(name: string): string;
  cleanup(): void;
}

/** A fresh directory under the system temp directory, named tsvmm-PREFIX-*. */
export function scratchDir(prefix: string): ScratchDir {
  const dir = mkdtempSync(path.join(tmpdir(), `tsvmm-${prefix}-`));
  return {
    dir,
    file: (name) => path.join(dir, name),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** Overwrites `bytes.length` bytes of `file` at `offset`. */
export function patch(file: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

export interface Prng {
  /** uniform in [0, 1) */
  next(): number;
  /** an integer in [0, n) */
  int(n: number): number;
  bytes(n: number): Uint8Array;
}

/** mulberry32: small deterministic PRNG so failures replay. */
export function prng(seed: number): Prng {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n) => Math.floor(next() * n),
    bytes: (n) => {
      // one 32-bit draw per 4 bytes keeps multi-megabyte buffers cheap
      const words = new Uint32Array(Math.ceil(n / 4));
      for (let i = 0; i < words.length; i++) words[i] = Math.floor(next() * 4294967296);
      return new Uint8Array(words.buffer, 0, n);
    },
  };
}

// ---- operation sequences against a model -----------------------------------------

export type BlockOp =
  | { op: 'write'; off: number; len: number; seed: number }
  | { op: 'zero'; off: number; len: number }
  | { op: 'unmap'; off: number; len: number }
  | { op: 'discard'; off: number; len: number }
  | { op: 'flush' }
  | { op: 'reopen' };

/**
 * What a format's discard does to the model: `model` holds what reads
 * returned before, the callback discards [off, off + len) on `dev` and
 * updates the model to what reads must return now.
 */
export type DiscardModel = (dev: BlockDevice, off: number, len: number, model: Uint8Array) => Promise<void>;

/**
 * Runs `ops` on the device `open` gives (reopening it on `reopen`), keeping
 * `model` to what reads must return, then checks the whole device reads back
 * the model. Offsets and lengths are clipped to the device.
 */
export async function applyBlockOps(open: () => Promise<BlockDevice>, ops: readonly BlockOp[], model: Uint8Array, discard: DiscardModel): Promise<void> {
  let dev = await open();
  try {
    for (const o of ops) {
      if (o.op === 'flush') {
        await dev.flush();
        continue;
      }
      if (o.op === 'reopen') {
        await dev.close();
        dev = await open();
        continue;
      }
      const off = Math.min(o.off, dev.size - 1);
      const len = Math.min(o.len, dev.size - off);
      if (o.op === 'write') {
        const data = prng(o.seed).bytes(len);
        await dev.write(off, data);
        model.set(data, off);
      } else if (o.op === 'zero' || o.op === 'unmap') {
        await dev.writeZeroes(off, len, o.op === 'unmap' ? { mayUnmap: true } : undefined);
        model.fill(0, off, off + len);
      } else {
        await discard(dev, off, len, model);
      }
    }
    const out = new Uint8Array(dev.size);
    await dev.read(0, out);
    assert.equal(Buffer.compare(out, model), 0, 'tsvmm reads back the model');
  } finally {
    await dev.close();
  }
}

/**
 * Writes every other 64 KiB of `dev` with seeded data, leaving holes for a
 * differencing child to read through; returns what the device reads back.
 */
export async function writeParentWithHoles(dev: BlockDevice, seed: number): Promise<Uint8Array> {
  const KiB = 1024;
  const content = prng(seed).bytes(dev.size);
  for (let off = 0; off < dev.size; off += 128 * KiB) {
    await dev.write(off, content.subarray(off, Math.min(off + 64 * KiB, dev.size)));
  }
  const model = new Uint8Array(dev.size);
  await dev.read(0, model);
  return model;
}

// ---- damaged images ------------------------------------------------------------------

/** Opens an image read-only, as the format's tests do it (the driver alone, or a registry). */
export type OpenReadOnly = (file: string) => Promise<BlockDevice>;

/**
 * Opening `file` read-only fails with a BlockFormatError that blames
 * `blamed`, names `structure` (a string is the whole name) and says `detail`;
 * the file is left as it was.
 */
export async function expectOpenFormatError(
  open: OpenReadOnly,
  file: string,
  structure: string | RegExp,
  detail: RegExp,
  blamed = file,
): Promise<BlockFormatError> {
  const before = sha256(file);
  let err: unknown;
  try {
    const d = await open(file);
    await d.close();
  } catch (e) {
    err = e;
  }
  assert.equal(sha256(file), before, 'a read-only open must not modify the image');
  assert.ok(err instanceof BlockFormatError, `open should fail with a BlockFormatError, got ${err === undefined ? 'success' : String(err)}`);
  assert.equal(err.filename, blamed);
  assert.match(err.structure, typeof structure === 'string' ? new RegExp(`^${structure}$`) : structure);
  assert.match(err.message, detail);
  return err;
}

/**
 * A fuzzed image: opened read-only, its first 4 MiB read and their block
 * status walked, or the open fails with a BlockError (anything else is a
 * bug); either way the file is left as it was.
 */
export async function expectConsistentOrBlockError(open: OpenReadOnly, file: string): Promise<void> {
  const MiB = 1024 * 1024;
  const before = sha256(file);
  try {
    const d = await open(file);
    try {
      const out = new Uint8Array(Math.min(d.size, 4 * MiB));
      await d.read(0, out);
      for (let off = 0; off < out.length; ) {
        const st = await d.blockStatus(off, out.length - off);
        assert.ok(st.length > 0, `block status at ${off} covers no bytes`);
        off += st.length;
      }
    } finally {
      await d.close();
    }
  } catch (e) {
    if (!(e instanceof BlockError)) throw e;
  }
  assert.equal(sha256(file), before, 'a read-only open must not modify the image');
}
