/**
 * NBD sequential read throughput: `tsvmm nbd serve` against qemu-nbd, both
 * exporting the same raw file (warm in the page cache) over loopback TCP,
 * both read by the same client, `qemu-img bench` (sequential 1 MiB reads,
 * 16 in flight). Prints MiB/s for each and the ratio tsvmm/qemu-nbd
 * (target >= 0.67).
 *
 *   npx tsc -b bench/img/nbd && node bench/img/nbd/dist/bench-nbd.js [--size-mib N] [--repeat N] [--request-kib N] [--depth N]
 *
 * The tsvmm server runs in a child process (this script with --serve) so
 * that, like qemu-nbd, it has a process of its own.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : def;
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${name} needs a positive number`);
  return v;
}

async function serveChild(image: string, port: number): Promise<void> {
  const { runNbd } = await import('@tsvmm/block/nbd');
  const { BlockDriverRegistry } = await import('@tsvmm/block');
  const { rawDriver } = await import('@tsvmm/plugin-block-raw');
  const code = await runNbd(['serve', image, '-f', 'raw', '-r', '--port', String(port), '--bind', '127.0.0.1'], {
    stdout: process.stdout,
    stderr: process.stderr,
    registry: new BlockDriverRegistry([rawDriver]),
  });
  process.exit(code);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
    s.on('error', reject);
  });
}

async function waitPort(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createConnection(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`nothing listens on ${port}`);
}

function run(cmd: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', (e: NodeJS.ErrnoException) => reject(e.code === 'ENOENT' ? new Error(`${cmd} is not installed (Debian package qemu-utils)`) : e));
    c.on('exit', (code) => resolve({ code: code ?? -1, out }));
  });
}

/** Seconds for one `qemu-img bench` pass over the export. */
async function benchOnce(url: string, count: number, reqBytes: number, depth: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  const r = await run('qemu-img', ['bench', '-f', 'raw', '-c', String(count), '-d', String(depth), '-s', String(reqBytes), '-S', String(reqBytes), url]);
  const t = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.code !== 0) throw new Error(`qemu-img bench failed: ${r.out}`);
  return t;
}

async function main(): Promise<void> {
  if (process.argv[2] === '--serve') {
    await serveChild(process.argv[3] ?? '', Number(process.argv[4]));
    return;
  }
  const sizeMiB = arg('--size-mib', 1024);
  const repeat = arg('--repeat', 5);
  const reqKiB = arg('--request-kib', 1024);
  const depth = arg('--depth', 16);
  const dir = mkdtempSync(path.join(tmpdir(), 'bench-nbd-'));
  const image = path.join(dir, 'disk.raw');
  const children: ChildProcess[] = [];
  try {
    const fd = openSync(image, 'w');
    const chunk = randomBytes(1 << 20);
    for (let i = 0; i < sizeMiB; i++) writeSync(fd, chunk, 0, chunk.length, i << 20);
    closeSync(fd);
    // warm the page cache so both servers read from memory
    const rfd = openSync(image, 'r');
    const buf = Buffer.alloc(1 << 20);
    for (let i = 0; i < sizeMiB; i++) readSync(rfd, buf, 0, buf.length, i << 20);
    closeSync(rfd);

    const reqBytes = reqKiB * 1024;
    const count = Math.floor((sizeMiB << 20) / reqBytes);
    const qport = await freePort();
    const qemuNbd = spawn('qemu-nbd', ['-f', 'raw', '-r', '-t', '-e', '4', '-p', String(qport), '-b', '127.0.0.1', image], { stdio: 'ignore' });
    children.push(qemuNbd);
    const tport = await freePort();
    const self = fileURLToPath(import.meta.url);
    const tsvmm = spawn(process.execPath, [self, '--serve', image, String(tport)], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(tsvmm);
    await waitPort(qport, qemuNbd);
    await waitPort(tport, tsvmm);

    const qurl = `nbd://127.0.0.1:${qport}/`;
    const turl = `nbd://127.0.0.1:${tport}/`;
    // one untimed pass each (connection setup, JIT)
    await benchOnce(qurl, Math.min(count, 64), reqBytes, depth);
    await benchOnce(turl, Math.min(count, 64), reqBytes, depth);
    const q: number[] = [];
    const t: number[] = [];
    for (let i = 0; i < repeat; i++) {
      // interleave so drift on the machine hits both alike
      q.push(await benchOnce(qurl, count, reqBytes, depth));
      t.push(await benchOnce(turl, count, reqBytes, depth));
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    const mibs = (s: number): number => sizeMiB / s;
    const qm = mibs(median(q));
    const tm = mibs(median(t));
    process.stdout.write(
      `NBD sequential read, ${sizeMiB} MiB, ${reqKiB} KiB requests, queue depth ${depth}, median of ${repeat} (qemu-img bench client):\n` +
        `  qemu-nbd        ${qm.toFixed(0)} MiB/s\n` +
        `  tsvmm nbd serve ${tm.toFixed(0)} MiB/s\n` +
        `  ratio tsvmm/qemu-nbd throughput: ${(tm / qm).toFixed(2)} (target >= 0.67)\n`,
    );
  } finally {
    for (const c of children) c.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
