/**
 * bench/blk: virtio-blk throughput seen by a guest — 1 MiB sequential reads,
 * 1 MiB sequential writes and 4 KiB random reads, each at queue depth 32,
 * on a raw file — for tsvmm with the queue on an iothread, tsvmm with the
 * queue on the main thread, and QEMU with an iothread (the reference), in
 * the same run, interleaved, median of --reps runs.
 * Target: tsvmm with an iothread at least 0.8× QEMU.
 *
 *   npx tsc -b host bench/blk && make -C test/guest && node bench/blk/dist/bench-blk.js [--reps 5] [--json FILE]
 *
 * The guest is test/guest/guests/virtio_blk_bench.c (the guest kit's polling
 * virtio driver, TSC-timed, no interrupts); both VMMs get the same guest, the
 * same image (page cache warm; cache=writeback, QEMU's default) and 256 MiB
 * of RAM. Only the guest-measured transfer time counts, not VMM start-up.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '../../..');
const tsvmmCli = path.join(repo, 'host/dist/src/cli.js');
const guest = path.join(repo, 'test/guest/out/virtio_blk_bench.elf');

const args = process.argv.slice(2);
const argValue = (name: string): string | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const REPS = Number(argValue('--reps') ?? 5);
const JSON_OUT = argValue('--json');
const IMAGE_MIB = 256;

interface Mode {
  name: string;
  append: string;
  bytes: number;
  requests: number;
}
const MODES: Mode[] = [
  { name: 'seq read 1 MiB QD32', append: 'mode=seqread bs=1048576 qd=32 count=1024', bytes: 1 << 20, requests: 1024 },
  { name: 'seq write 1 MiB QD32', append: 'mode=seqwrite bs=1048576 qd=32 count=1024', bytes: 1 << 20, requests: 1024 },
  { name: 'rand read 4 KiB QD32', append: 'mode=randread bs=4096 qd=32 count=16384', bytes: 4096, requests: 16384 },
];

type Config = 'tsvmm-iothread' | 'tsvmm-main' | 'qemu-iothread';
const CONFIGS: Config[] = ['tsvmm-iothread', 'tsvmm-main', 'qemu-iothread'];

function command(config: Config, image: string, append: string): string[] {
  const drive = `file=${image},format=raw,if=none,id=d0`;
  const common = ['-m', '256', '-smp', '1'];
  if (config === 'qemu-iothread') {
    return [
      'qemu-system-x86_64', '-accel', 'kvm', '-nodefaults', '-display', 'none', ...common,
      '-kernel', guest, '-append', append,
      '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x4', '-serial', 'stdio',
      '-object', 'iothread,id=io0', '-drive', drive, '-device', 'virtio-blk-pci,drive=d0,iothread=io0',
    ];
  }
  const io = config === 'tsvmm-iothread';
  return [
    process.execPath, tsvmmCli, 'run', ...common,
    '--kernel', guest, '--append', append,
    '--device', 'isa-debug-exit,iobase=0xf4,iosize=0x4', '--serial', 'stdio',
    ...(io ? ['--object', 'iothread,id=io0'] : []),
    '--drive', drive, '--device', `virtio-blk-pci,drive=d0${io ? ',iothread=io0' : ''}`,
  ];
}

/** Runs the guest once and returns the milliseconds it measured. */
function runOnce(config: Config, image: string, mode: Mode): Promise<number> {
  const argv = command(config, image, mode.append);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      const m = /bench mode=\S+ bs=\d+ qd=\d+ count=\d+ errors=(\d+) ms=(\d+)/.exec(out);
      if (m === null || m[1] !== '0' || code !== 1) {
        reject(new Error(`${config} ${mode.name}: no result (status ${String(code)})\n${out}\n${err}\n${argv.join(' ')}`));
        return;
      }
      resolve(Number(m[2]));
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

async function main(): Promise<void> {
  for (const f of [tsvmmCli, guest]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: build with npx tsc -b host && make -C test/guest`);
  }
  execFileSync('qemu-system-x86_64', ['--version']);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-bench-blk-'));
  const image = path.join(dir, 'disk.img');
  try {
    // Non-zero data throughout, fully allocated; reading it back once warms the page cache.
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32LE((Math.imul(i, 2654435761) ^ 0x5bd1e995) >>> 0, i);
    const fd = fs.openSync(image, 'w');
    for (let i = 0; i < IMAGE_MIB; i++) fs.writeSync(fd, chunk);
    fs.closeSync(fd);
    fs.readFileSync(image);

    const results = new Map<string, number[]>();
    const key = (c: Config, m: Mode): string => `${c}|${m.name}`;
    for (let rep = 0; rep < REPS; rep++) {
      for (const mode of MODES) {
        // Rotate the order so no configuration always runs first (cache, CPU frequency, neighbours).
        const order = CONFIGS.map((_, i) => CONFIGS[(i + rep) % CONFIGS.length] as Config);
        for (const config of order) {
          const ms = await runOnce(config, image, mode);
          const k = key(config, mode);
          results.set(k, [...(results.get(k) ?? []), ms]);
          process.stderr.write(`rep ${rep + 1}/${REPS} ${mode.name} ${config}: ${ms} ms\n`);
        }
      }
    }

    const rows: Record<string, unknown>[] = [];
    const lines: string[] = [];
    lines.push(`virtio-blk, raw file on ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? 'unknown'}), ${REPS} runs each, guest-timed`);
    // Medians, and the best run of each: on a shared host the best is the least disturbed.
    for (const stat of ['median', 'best'] as const) {
      lines.push('');
      lines.push(`${stat} of ${REPS}:`);
      lines.push('');
      lines.push('| workload | tsvmm iothread | tsvmm main thread | QEMU iothread | iothread / QEMU | main / QEMU |');
      lines.push('|---|---|---|---|---|---|');
      for (const mode of MODES) {
        const rate = (c: Config): { mbps: number; iops: number; ms: number } => {
          const runs = results.get(key(c, mode)) ?? [];
          const ms = stat === 'median' ? median(runs) : Math.min(...runs);
          const secs = ms / 1000;
          return { ms, mbps: (mode.bytes * mode.requests) / (1 << 20) / secs, iops: mode.requests / secs };
        };
        const io = rate('tsvmm-iothread');
        const main = rate('tsvmm-main');
        const q = rate('qemu-iothread');
        const fmt = (r: { mbps: number; iops: number }): string => (mode.bytes >= 1 << 20 ? `${r.mbps.toFixed(0)} MB/s` : `${r.iops.toFixed(0)} IOPS (${r.mbps.toFixed(1)} MB/s)`);
        lines.push(`| ${mode.name} | ${fmt(io)} | ${fmt(main)} | ${fmt(q)} | ${(io.mbps / q.mbps).toFixed(2)} | ${(main.mbps / q.mbps).toFixed(2)} |`);
        if (stat === 'median') {
          rows.push({
            workload: mode.name,
            runsMs: Object.fromEntries(CONFIGS.map((c) => [c, results.get(key(c, mode))])),
            tsvmmIothread: io,
            tsvmmMain: main,
            qemuIothread: q,
            ratioIothreadVsQemu: io.mbps / q.mbps,
            ratioMainVsQemu: main.mbps / q.mbps,
          });
        }
      }
    }
    process.stdout.write(`${lines.join('\n')}\n`);
    if (JSON_OUT !== undefined) fs.writeFileSync(JSON_OUT, `${JSON.stringify({ reps: REPS, rows }, null, 1)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench/blk: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
