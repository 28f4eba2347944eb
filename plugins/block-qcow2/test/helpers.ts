/**
 * Test helpers of the qcow2 tests: their registry, qemu-img check/compare,
 * a qcow2 scratch directory, the xorshift32 PRNG their seeds drive (another
 * generator would change every generated case), and runImg with captured
 * output. The qemu-utils peer and file hashes are @tsvmm/block/testing's.
 */
import { BlockDriverRegistry, runImg } from '@tsvmm/block';
import { qemu, scratchDir, type ScratchDir } from '@tsvmm/block/testing';
import { rawDriver } from '@tsvmm/plugin-block-raw';
import { qcow2Driver } from '../src/index.js';

export function registry(): BlockDriverRegistry {
  return new BlockDriverRegistry([rawDriver, qcow2Driver]);
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

export function scratch(): ScratchDir {
  return scratchDir('qcow2');
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

export { qemu, sha256 } from '@tsvmm/block/testing';
