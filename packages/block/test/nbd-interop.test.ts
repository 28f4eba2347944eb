/// <reference types="mocha" />
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync, writeFileSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BlockDriverRegistry } from '../src/registry.js';
import { runNbd, type NbdServer } from '../src/nbd/index.js';
import { qemuAsync, testRawDriver } from './nbd-helpers.js';

const MiB = 1024 * 1024;

/** `tsvmm nbd serve` in this process; resolves once it listens. */
async function serve(args: string[]): Promise<{ server: NbdServer; stop: () => Promise<number>; stderr: string[] }> {
  const ac = new AbortController();
  const stderr: string[] = [];
  let listening: (s: NbdServer) => void = () => undefined;
  const ready = new Promise<NbdServer>((r) => (listening = r));
  const done = runNbd(['serve', ...args], {
    stdout: { write: () => true },
    stderr: { write: (s: string) => stderr.push(s) },
    registry: new BlockDriverRegistry([testRawDriver]),
    signal: ac.signal,
    onListening: (s) => listening(s),
  });
  const server = await Promise.race([ready, done.then((code) => Promise.reject(new Error(`nbd serve exited ${code}: ${stderr.join('')}`)))]);
  return {
    server,
    stderr,
    stop: async () => {
      ac.abort();
      return done;
    },
  };
}

/** A sparse raw file: random data in some 1 MiB stretches, holes elsewhere. */
function sparseImage(file: string, size: number): Buffer {
  const content = Buffer.alloc(size);
  const fd = openSync(file, 'w');
  try {
    ftruncateSync(fd, size);
    for (let off = 0; off < size; off += 3 * MiB) {
      const chunk = randomBytes(Math.min(MiB, size - off));
      chunk.copy(content, off);
      writeSync(fd, chunk, 0, chunk.length, off);
    }
  } finally {
    closeSync(fd);
  }
  return content;
}

describe('tsvmm nbd serve: qemu-img is the client', function () {
  this.timeout(120_000);
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-nbd-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('qemu-img convert and compare read the export over nbd://, and map sees its holes', async () => {
    const img = path.join(dir, 'disk.raw');
    const content = sparseImage(img, 16 * MiB);
    const s = await serve([img, '-f', 'raw', '--port', '0', '--bind', '127.0.0.1', '-x', 'disk']);
    const url = `nbd://127.0.0.1:${s.server.port}/disk`;
    try {
      const conv = await qemuAsync('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', url, path.join(dir, 'out.raw')]);
      expect(conv.status, conv.stderr).to.equal(0);
      expect(readFileSync(path.join(dir, 'out.raw')).equals(content)).to.equal(true);
      const cmp = await qemuAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', url, img]);
      expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
      const map = await qemuAsync('qemu-img', ['map', '-f', 'raw', '--output', 'json', url]);
      expect(map.status, map.stderr).to.equal(0);
      const extents = JSON.parse(map.stdout) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
      // data exactly where the file has data: [k*3 MiB, +1 MiB)
      const dataRanges = extents.filter((e) => e.data).map((e) => [e.start, e.length]);
      expect(dataRanges).to.deep.equal(Array.from({ length: 6 }, (_, k) => [k * 3 * MiB, MiB]));
    } finally {
      expect(await s.stop()).to.equal(0);
    }
  });

  it('qemu-img convert -n writes into the export, and the image gets the data', async () => {
    const src = path.join(dir, 'src.raw');
    const content = sparseImage(src, 12 * MiB);
    const target = path.join(dir, 'target.raw');
    writeFileSync(target, Buffer.alloc(0));
    const fd = openSync(target, 'r+');
    ftruncateSync(fd, 12 * MiB);
    closeSync(fd);
    const s = await serve([target, '-f', 'raw', '-p', '0', '-b', '127.0.0.1']);
    const url = `nbd://127.0.0.1:${s.server.port}`;
    try {
      const conv = await qemuAsync('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, url]);
      expect(conv.status, conv.stderr).to.equal(0);
      const cmp = await qemuAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', url, src]);
      expect(cmp.status, cmp.stdout + cmp.stderr).to.equal(0);
    } finally {
      await s.stop();
    }
    expect(readFileSync(target).equals(content)).to.equal(true);
  });

  it('a read-only export refuses qemu-io writes with EPERM and leaves the image alone', async () => {
    const img = path.join(dir, 'ro.raw');
    const content = sparseImage(img, 4 * MiB);
    const s = await serve([img, '-f', 'raw', '--port', '0', '--bind', '127.0.0.1', '--read-only']);
    try {
      const w = await qemuAsync('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 64k', `nbd://127.0.0.1:${s.server.port}`]);
      expect(w.stdout + w.stderr).to.match(/Operation not permitted|read-only|Permission denied/i);
      const r = await qemuAsync('qemu-io', ['-f', 'raw', '-r', '-c', 'read 0 64k', `nbd://127.0.0.1:${s.server.port}`]);
      expect(r.status, r.stderr).to.equal(0);
    } finally {
      await s.stop();
    }
    expect(readFileSync(img).equals(content)).to.equal(true);
  });

  it('serves on a unix socket (nbd+unix://) to several qemu-img clients at once', async () => {
    const img = path.join(dir, 'u.raw');
    sparseImage(img, 8 * MiB);
    const sock = path.join(dir, 'nbd.sock');
    const s = await serve([img, '-f', 'raw', '--socket', sock, '-x', 'u', '--shared', '4']);
    try {
      const url = `nbd+unix:///u?socket=${sock}`;
      const results = await Promise.all([0, 1, 2].map(() => qemuAsync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', url, img])));
      for (const r of results) expect(r.status, r.stdout + r.stderr).to.equal(0);
    } finally {
      await s.stop();
    }
  });

  it('reports a missing image and bad flags with exit code 1', async () => {
    const err: string[] = [];
    const io = { stdout: { write: () => true }, stderr: { write: (s: string) => err.push(s) }, registry: new BlockDriverRegistry([testRawDriver]) };
    expect(await runNbd(['serve', path.join(dir, 'missing.raw'), '-f', 'raw', '--port', '0'], io)).to.equal(1);
    expect(err.join('')).to.match(/missing\.raw/);
    expect(await runNbd(['serve', 'x', '--port', 'abc'], io)).to.equal(1);
    expect(await runNbd(['frobnicate'], io)).to.equal(1);
  });
});
