/**
 * Test helpers: the qemu-img/qemu-io peer (Debian qemu-utils), a seeded PRNG,
 * scratch directories and file hashing.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** Runs a qemu-utils tool; a missing tool fails the test naming the package. */
export function qemu(tool: 'qemu-img' | 'qemu-io' | 'qemu-nbd', args: string[], opts: { allowFail?: boolean } = {}): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.error !== undefined) {
    const code = (r.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new Error(`${tool} is not installed: install the Debian package qemu-utils (apt-get install qemu-utils) to run the interoperability tests`);
    }
    throw r.error;
  }
  const status = r.status ?? -1;
  if (status !== 0 && !opts.allowFail) {
    throw new Error(`${tool} ${args.join(' ')} exited ${status}: ${r.stderr}${r.stdout}`);
  }
  return { status, stdout: r.stdout, stderr: r.stderr };
}

export function qemuImgJson<T>(args: string[]): T {
  return JSON.parse(qemu('qemu-img', [...args, '--output', 'json']).stdout) as T;
}

export function scratchDir(prefix: string): { dir: string; file(name: string): string; cleanup(): void } {
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

/** mulberry32: small deterministic PRNG so failures replay. */
export function prng(seed: number): { next(): number; int(n: number): number; bytes(n: number): Uint8Array } {
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

export { execFileSync };

import { closeSync, openSync, writeSync } from 'node:fs';

export function patch(file: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}
