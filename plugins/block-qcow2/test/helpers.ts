/**
 * Test helpers: the qemu-img / qemu-io peer (Debian package qemu-utils; a
 * missing tool fails the test naming the package), scratch directories, a
 * seeded PRNG, file hashes, and runImg with captured output.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BlockDriverRegistry, runImg } from '@tsvmm/block';
import { rawDriver } from '@tsvmm/plugin-block-raw';
import { qcow2Driver } from '../src/index.js';

export function registry(): BlockDriverRegistry {
  return new BlockDriverRegistry([rawDriver, qcow2Driver]);
}

export interface ToolResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function qemu(tool: 'qemu-img' | 'qemu-io', args: string[], opts: { allowFail?: boolean } = {}): ToolResult {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (r.error !== undefined) {
    if ((r.error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`${tool} not found: install the Debian package qemu-utils (apt-get install qemu-utils); the qcow2 interoperability tests need it`);
    }
    throw r.error;
  }
  const res = { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  if (res.status !== 0 && !opts.allowFail) {
    throw new Error(`${tool} ${args.join(' ')} exited ${res.status}: ${res.stderr}${res.stdout}`);
  }
  return res;
}

/** qemu-img check must find no corruption and no leak. */
export function qemuCheckClean(file: string): void {
  const r = qemu('qemu-img', ['check', '--output', 'json', file], { allowFail: true });
  if (r.status !== 0) throw new Error(`qemu-img check ${file} exited ${r.status}: ${r.stdout}${r.stderr}`);
}

export function qemuCompare(a: string, b: string, fa = 'qcow2', fb = 'raw'): void {
  const r = qemu('qemu-img', ['compare', '-f', fa, '-F', fb, a, b], { allowFail: true });
  if (r.status !== 0) throw new Error(`qemu-img compare ${a} ${b} exited ${r.status}: ${r.stdout}${r.stderr}`);
}

export function scratch(): { dir: string; file(name: string): string; cleanup(): void } {
  const dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-qcow2-'));
  return {
    dir,
    file: (name) => path.join(dir, name),
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** xorshift32: reproducible "random" test data and offsets. */
export class Prng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0 || 1;
  }
  next(): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x >>> 0;
    return this.s;
  }
  int(n: number): number {
    return this.next() % n;
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      const v = this.next();
      b[i] = v & 0xff;
      if (i + 1 < n) b[i + 1] = (v >>> 8) & 0xff;
      if (i + 2 < n) b[i + 2] = (v >>> 16) & 0xff;
      if (i + 3 < n) b[i + 3] = v >>> 24;
    }
    return b;
  }
}

export async function img(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await runImg(args, {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    registry: registry(),
  });
  return { code, out, err };
}
