/// <reference types="mocha" />
import { expect } from 'chai';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { BlockDriverRegistry, BlockIOError, BlockReadOnlyError, runImg, type BlockDevice } from '@tsvmm/block';
import { NbdServer, parseNbdUrl } from '@tsvmm/block/nbd';
import { NbdDevice, nbdDriver } from '../src/index.js';

const MiB = 1024 * 1024;

function qemuImg(args: string[]): string {
  const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
  if (r.error !== undefined) {
    throw new Error(`qemu-img is not installed: install the Debian package qemu-utils (${r.error.message})`);
  }
  if (r.status !== 0) throw new Error(`qemu-img ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function qemuIo(args: string[]): void {
  const r = spawnSync('qemu-io', args, { encoding: 'utf8' });
  if (r.error !== undefined) throw new Error(`qemu-io is not installed: install the Debian package qemu-utils`);
  if (r.status !== 0) throw new Error(`qemu-io ${args.join(' ')}: ${r.stderr}`);
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

/** Starts qemu-nbd as a child; resolves once it accepts connections. */
async function qemuNbd(args: string[], ready: () => Promise<boolean>): Promise<ChildProcess> {
  const child = spawn('qemu-nbd', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const failed = new Promise<never>((_, reject) => {
    child.on('error', (e: NodeJS.ErrnoException) =>
      reject(e.code === 'ENOENT' ? new Error('qemu-nbd is not installed: install the Debian package qemu-utils') : e),
    );
    child.on('exit', (code) => reject(new Error(`qemu-nbd exited ${code}: ${stderr}`)));
  });
  const poll = (async () => {
    for (let i = 0; i < 200; i++) {
      if (await ready()) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`qemu-nbd did not start: ${stderr}`);
  })();
  await Promise.race([poll, failed]);
  failed.catch(() => undefined);
  return child;
}

function stop(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function readAll(dev: BlockDevice): Promise<Buffer> {
  const out = Buffer.alloc(dev.size);
  await dev.read(0, out);
  return out;
}

describe('nbd driver: reads exports served by qemu-nbd', function () {
  this.timeout(60_000);
  let dir: string;
  let child: ChildProcess | undefined;
  beforeEach(() => (dir = mkdtempSync(path.join(tmpdir(), 'tsvmm-nbdc-'))));
  afterEach(async () => {
    await stop(child);
    child = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  function makeQcow2(): string {
    const img = path.join(dir, 'disk.qcow2');
    qemuImg(['create', '-q', '-f', 'qcow2', img, '40M']);
    qemuIo(['-f', 'qcow2', '-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x22 10M 64k', '-c', 'write -z 20M 2M', '-c', 'write -P 0x33 39M 1M', img]);
    qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', img, path.join(dir, 'disk.raw')]);
    return img;
  }

  it('nbd+unix:// from a qemu-nbd unix socket: same bytes as qemu-img convert, holes from base:allocation; the format is found from the scheme', async () => {
    const img = makeQcow2();
    const sock = path.join(dir, 'q.sock');
    child = await qemuNbd(['-k', sock, '-f', 'qcow2', '-x', 'qdisk', '-t', '-e', '4', '-r', img], async () => existsSync(sock));
    const registry = new BlockDriverRegistry([nbdDriver]);
    const dev = await registry.openImage(`nbd+unix:///qdisk?socket=${sock}`, { readOnly: true });
    try {
      expect(dev.size).to.equal(40 * MiB);
      expect((await readAll(dev)).equals(readFileSync(path.join(dir, 'disk.raw')))).to.equal(true);
      const map = JSON.parse(qemuImg(['map', '-f', 'qcow2', '--output', 'json', img])) as Array<{ start: number; length: number; data: boolean }>;
      for (const e of map) {
        const st = await dev.blockStatus(e.start, e.length);
        expect(st.data, `extent at ${e.start}`).to.equal(e.data);
      }
    } finally {
      await dev.close();
    }
    // format=raw over nbd:// is the export itself, as qemu's raw-over-nbd; another format over it is refused
    const raw = await registry.openImage(`nbd+unix:///qdisk?socket=${sock}`, { format: 'raw', readOnly: true });
    try {
      expect(raw.format).to.equal('nbd');
      expect(raw.size).to.equal(40 * MiB);
    } finally {
      await raw.close();
    }
    let err: unknown;
    try {
      await registry.openImage(`nbd+unix:///qdisk?socket=${sock}`, { format: 'qcow2', readOnly: true });
    } catch (e) {
      err = e;
    }
    expect(String(err)).to.match(/format qcow2 over nbd:\/\/ is not supported/);

    // `img map` over the export prints what qemu-img map prints for it
    const url = `nbd+unix:///qdisk?socket=${sock}`;
    for (const output of ['json', 'human']) {
      let out = '';
      const code = await runImg(['map', '--output', output, url], { stdout: { write: (t: string) => (out += t) }, stderr: { write: () => true }, registry });
      expect(code).to.equal(0);
      expect(out, output).to.equal(qemuImg(['map', '--output', output, url]));
    }
  });

  it('nbd:// over TCP: writes go through and qemu-img agrees', async () => {
    const img = makeQcow2();
    const port = await freePort();
    child = await qemuNbd(['-p', String(port), '-b', '127.0.0.1', '-f', 'qcow2', '-t', img], () => canConnect(port));
    const dev = await NbdDevice.open({ filename: `nbd://127.0.0.1:${port}` });
    const expected = readFileSync(path.join(dir, 'disk.raw'));
    try {
      const data = Buffer.alloc(5 * MiB + 123, 0x5e);
      await dev.write(7 * MiB + 5, data);
      data.copy(expected, 7 * MiB + 5);
      await dev.writeZeroes(0, MiB);
      expected.fill(0, 0, MiB);
      await dev.discard(30 * MiB, MiB);
      const after = Buffer.alloc(MiB);
      await dev.read(30 * MiB, after);
      after.copy(expected, 30 * MiB);
      await dev.flush();
      expect((await readAll(dev)).equals(expected)).to.equal(true);
    } finally {
      await dev.close();
    }
    await stop(child);
    child = undefined;
    qemuImg(['check', '-q', '-f', 'qcow2', img]);
    qemuImg(['convert', '-f', 'qcow2', '-O', 'raw', img, path.join(dir, 'after.raw')]);
    expect(readFileSync(path.join(dir, 'after.raw')).equals(expected)).to.equal(true);
  });

  it('a read-only qemu-nbd export makes a read-only drive', async () => {
    const img = makeQcow2();
    const sock = path.join(dir, 'ro.sock');
    child = await qemuNbd(['-k', sock, '-f', 'qcow2', '-r', '-t', img], async () => existsSync(sock));
    const dev = await NbdDevice.open({ filename: `nbd+unix:///?socket=${sock}` });
    try {
      expect(dev.readOnly).to.equal(true);
      let err: unknown;
      try {
        await dev.write(0, Buffer.alloc(512));
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(BlockReadOnlyError);
    } finally {
      await dev.close();
    }
  });
});

describe('nbd driver: errors and the tsvmm server', function () {
  this.timeout(30_000);

  it('parses QEMU URL forms and refuses others', () => {
    expect(parseNbdUrl('nbd://host/exp')).to.deep.equal({ target: { host: 'host', port: 10809 }, exportName: 'exp' });
    expect(parseNbdUrl('nbd://10.0.0.1:10900/a%20b')).to.deep.equal({ target: { host: '10.0.0.1', port: 10900 }, exportName: 'a b' });
    expect(parseNbdUrl('nbd+unix:///e?socket=/run/x.sock')).to.deep.equal({ target: { socket: '/run/x.sock' }, exportName: 'e' });
    expect(parseNbdUrl('nbd://[::1]:1234/')).to.deep.equal({ target: { host: '::1', port: 1234 }, exportName: '' });
    expect(() => parseNbdUrl('nbd+unix:///e')).to.throw(/needs \?socket=PATH/);
    expect(() => parseNbdUrl('http://x/')).to.throw(/unsupported scheme/);
  });

  it('a connection refused is a BlockIOError naming the URL', async () => {
    const port = await freePort();
    let err: unknown;
    try {
      await NbdDevice.open({ filename: `nbd://127.0.0.1:${port}/x` });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(BlockIOError);
    expect((err as Error).message).to.match(new RegExp(`nbd://127.0.0.1:${port}/x: connect failed`));
  });

  it('talks to the tsvmm server too, including an unknown export error', async () => {
    const data = new Uint8Array(MiB).fill(9);
    const device: BlockDevice = {
      format: 'memory',
      filename: 'mem',
      readOnly: false,
      size: MiB,
      alignment: 1,
      read: async (o, b) => b.set(data.subarray(o, o + b.length)),
      write: async (o, b) => data.set(b, o),
      flush: async () => undefined,
      discard: async () => undefined,
      writeZeroes: async (o, l) => void data.fill(0, o, o + l),
      blockStatus: async (o, l) => ({ offset: o, length: l, data: true, zero: false, allocated: true, depth: 0 }),
      info: async () => ({ filename: 'mem', format: 'memory', 'virtual-size': MiB }),
      resize: async () => undefined,
      close: async () => undefined,
    };
    const server = await NbdServer.listen({ exports: [{ name: 'm', device }], port: 0, bind: '127.0.0.1' });
    try {
      const dev = await NbdDevice.open({ filename: `nbd://127.0.0.1:${server.port}/m` });
      await dev.write(10, new Uint8Array([1, 2, 3]));
      const b = new Uint8Array(5);
      await dev.read(9, b);
      expect([...b]).to.deep.equal([9, 1, 2, 3, 9]);
      await dev.close();
      let err: unknown;
      try {
        await NbdDevice.open({ filename: `nbd://127.0.0.1:${server.port}/nope` });
      } catch (e) {
        err = e;
      }
      expect((err as Error).message).to.match(/refused export 'nope'.*no export named 'nope'/);
    } finally {
      await server.close();
    }
  });
});
