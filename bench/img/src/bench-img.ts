/**
 * bench/img: tsvmm img and the qcow2 driver against qemu-img, same files,
 * same run. Prints a Markdown table of medians and ratios (tsvmm / qemu-img).
 *
 *   1. convert a 1 GiB raw image with mixed data and holes to qcow2
 *   2. convert that qcow2 back to raw
 *   3. check a 10 GiB sparse qcow2
 *   4. 200000 4 KiB reads, 32 in flight, qemu-img bench's stepping pattern
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, openSync, closeSync, writeSync, ftruncateSync, rmSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { BlockDriverRegistry, runImg } from '@tsvmm/block';
import { rawDriver } from '@tsvmm/plugin-block-raw';
import { qcow2Driver } from '@tsvmm/plugin-block-qcow2';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? (process.argv[i + 1] ?? dflt) : dflt;
}

const repeat = Number(arg('--repeat', '3'));
const dir = arg('--dir', path.join(os.tmpdir(), 'tsvmm-bench-img'));
const registry = new BlockDriverRegistry([rawDriver, qcow2Driver]);
const sink = { write: (): boolean => true };

function qemu(tool: string, args: string[]): string {
  const r = spawnSync(tool, args, { encoding: 'utf8', maxBuffer: 64 * MiB });
  if (r.error) throw new Error(`${tool}: ${r.error.message} (install the Debian package qemu-utils)`);
  if (r.status !== 0) throw new Error(`${tool} ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Writes back dirty pages first, so one tool's writes do not throttle the other's measurement. */
function settle(): void {
  execFileSync('sync');
}

function timeQemu(args: string[]): number {
  settle();
  const t0 = performance.now();
  qemu('qemu-img', args);
  return (performance.now() - t0) / 1000;
}

async function timeImg(args: string[]): Promise<number> {
  settle();
  const t0 = performance.now();
  const code = await runImg(args, { stdout: sink, stderr: { write: (s: string) => process.stderr.write(s) }, registry });
  if (code !== 0 && !(args[0] === 'check' && code === 0)) throw new Error(`tsvmm img ${args.join(' ')} exited ${code}`);
  return (performance.now() - t0) / 1000;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}

function makeMixedRaw(file: string): void {
  // every 8 MiB: 1 MiB random, 2 MiB of one repeated byte, 5 MiB hole
  const fd = openSync(file, 'w');
  ftruncateSync(fd, GiB);
  const rnd = randomBytes(MiB);
  for (let off = 0, i = 0; off < GiB; off += 8 * MiB, i++) {
    writeSync(fd, rnd, 0, MiB, off);
    writeSync(fd, Buffer.alloc(2 * MiB, (i % 250) + 1), 0, 2 * MiB, off + MiB);
  }
  closeSync(fd);
}

async function driverReads(file: string, count: number, depth: number, step: number): Promise<number> {
  const dev = await registry.openImage(file, { readOnly: true });
  try {
    let issued = 0;
    let off = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: depth }, async () => {
        const buf = new Uint8Array(4096);
        while (issued < count) {
          issued++;
          const o = off;
          off = (off + step) % dev.size;
          await dev.read(o - (o % 4096), buf);
        }
      }),
    );
    return (performance.now() - t0) / 1000;
  } finally {
    await dev.close();
  }
}

function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  let fs = 'unknown';
  try {
    fs = execFileSync('stat', ['-f', '-c', '%T', dir], { encoding: 'utf8' }).trim();
  } catch {
    // stat is informational only
  }
  const qv = qemu('qemu-img', ['--version']).split('\n')[0] ?? '';
  return `${os.cpus().length} x ${cpu}, ${(os.totalmem() / GiB).toFixed(0)} GiB RAM, Linux ${os.release()}, ${fs} in ${dir}, Node ${process.version}, ${qv}`;
}

interface Row {
  task: string;
  qemu: number[];
  ours: number[];
}

async function main(): Promise<void> {
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const f = (n: string): string => path.join(dir, n);
  const rows: Row[] = [];
  const where = machine();
  try {
    console.error('preparing 1 GiB mixed raw image...');
    makeMixedRaw(f('src.raw'));

    // one untimed round warms the JIT and the page cache for both tools
    await timeImg(['convert', '-O', 'qcow2', f('src.raw'), f('warm.qcow2')]);
    await timeImg(['convert', '-O', 'raw', f('warm.qcow2'), f('warm.raw')]);
    await timeImg(['check', f('warm.qcow2')]);
    rmSync(f('warm.qcow2'));
    rmSync(f('warm.raw'));
    const q1: number[] = [];
    const t1: number[] = [];
    const q2: number[] = [];
    const t2: number[] = [];
    for (let i = 0; i < repeat; i++) {
      for (const n of ['q.qcow2', 't.qcow2', 'q.raw', 't.raw']) rmSync(f(n), { force: true });
      // who goes first follows ABBA order (Q T, T Q, T Q, Q T, ...): on this
      // machine every other iteration is slower for whichever tool runs
      // second in it (the kernel handing out page-cache pages the host has
      // to fault back in after the previous outputs were deleted), and plain
      // alternation lines that period up with one tool
      const qemuFirst = i % 4 === 0 || i % 4 === 3;
      if (qemuFirst) q1.push(timeQemu(['convert', '-O', 'qcow2', f('src.raw'), f('q.qcow2')]));
      t1.push(await timeImg(['convert', '-O', 'qcow2', f('src.raw'), f('t.qcow2')]));
      if (!qemuFirst) q1.push(timeQemu(['convert', '-O', 'qcow2', f('src.raw'), f('q.qcow2')]));
      if (qemuFirst) q2.push(timeQemu(['convert', '-f', 'qcow2', '-O', 'raw', f('q.qcow2'), f('q.raw')]));
      t2.push(await timeImg(['convert', '-f', 'qcow2', '-O', 'raw', f('t.qcow2'), f('t.raw')]));
      if (!qemuFirst) q2.push(timeQemu(['convert', '-f', 'qcow2', '-O', 'raw', f('q.qcow2'), f('q.raw')]));
    }
    rows.push({ task: 'convert 1 GiB raw (3/8 data) -> qcow2', qemu: q1, ours: t1 });
    rows.push({ task: 'convert that qcow2 -> raw', qemu: q2, ours: t2 });
    console.error('runs (s): ' + rows.map((r) => `${r.task}: qemu-img ${r.qemu.map((x) => x.toFixed(3)).join(' ')}; tsvmm ${r.ours.map((x) => x.toFixed(3)).join(' ')}`).join(' / '));

    console.error('preparing 10 GiB sparse qcow2...');
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', f('sparse.qcow2'), '10G']);
    const writes: string[] = [];
    for (let off = 0; off < 10 * GiB; off += 64 * MiB) writes.push('-c', `write -q -P 0x${((off / MiB) % 255).toString(16)} ${off} 64k`);
    qemu('qemu-io', [...writes, f('sparse.qcow2')]);
    const q3: number[] = [];
    const t3: number[] = [];
    for (let i = 0; i < 3; i++) {
      qemu('qemu-img', ['check', f('sparse.qcow2')]);
      await timeImg(['check', f('sparse.qcow2')]);
    }
    for (let i = 0; i < Math.max(repeat, 9); i++) {
      q3.push(timeQemu(['check', f('sparse.qcow2')]));
      t3.push(await timeImg(['check', f('sparse.qcow2')]));
    }
    rows.push({ task: 'check a 10 GiB sparse qcow2', qemu: q3, ours: t3 });

    const count = 200000;
    const step = 1052672;
    const q4: number[] = [];
    const t4: number[] = [];
    for (let i = 0; i < repeat; i++) {
      const out = qemu('qemu-img', ['bench', '-c', String(count), '-d', '32', '-s', '4096', '-S', String(step), '-f', 'qcow2', f('t.qcow2')]);
      const m = /Run completed in ([\d.]+) seconds/.exec(out);
      q4.push(m ? Number(m[1]) : NaN);
      t4.push(await driverReads(f('t.qcow2'), count, 32, step));
    }
    rows.push({ task: `${count} random 4 KiB reads, depth 32 (qemu-img bench)`, qemu: q4, ours: t4 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  console.log(`Machine: ${where}`);
  console.log(`${repeat} runs per tool (check: ${Math.max(repeat, 9)}), warm page cache, dirty pages synced before each run.`);
  console.log('Ratios are tsvmm time / qemu-img time, from the medians and from the best runs (the best run filters out');
  console.log('interference from other work on the machine; both tools are treated the same).\n');
  console.log('| task | qemu-img median (s) | tsvmm median (s) | ratio (medians) | qemu-img best (s) | tsvmm best (s) | ratio (best) | target <= 1.5 |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    const rm = median(r.ours) / median(r.qemu);
    const rb = Math.min(...r.ours) / Math.min(...r.qemu);
    const verdict = rm <= 1.5 && rb <= 1.5 ? 'met' : rm <= 1.5 || rb <= 1.5 ? 'met on one measure' : 'missed';
    console.log(
      `| ${r.task} | ${median(r.qemu).toFixed(3)} | ${median(r.ours).toFixed(3)} | ${rm.toFixed(2)} | ${Math.min(...r.qemu).toFixed(3)} | ${Math.min(...r.ours).toFixed(3)} | ${rb.toFixed(2)} | ${verdict} |`,
    );
  }
}

await main();
