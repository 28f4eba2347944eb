/**
 * bench/migration: live migration beside QEMU, in one run, on the same host.
 *
 *   npx tsc -b bench/migration && node bench/migration/dist/migration-bench.js [--runs N] [--only idle|xbzrle]
 *
 * Both VMMs run the same guest (test/guest/out/migrate_rw.elf), booted by
 * multiboot, with the same RAM size:
 *
 * - idle 1 GiB and 4 GiB: the guest halts (`idle=1`); the whole migration
 *   with default parameters (precopy, 300 ms downtime limit, 128 MiB/s).
 *   tsvmm: a VM process of `tsvmm serve --stdio` migrated with
 *   `migration/start` to `tsvmm run --incoming tcp:...`; QEMU: two
 *   `qemu-system-x86_64 -accel kvm` processes, QMP `migrate` to `-incoming
 *   tcp:...`, `query-migrate` polled until completed. Reported: each side's
 *   own total time and downtime (tsvmm's migration/status and QEMU's
 *   query-migrate fields of the same names), medians of N runs.
 * - xbzrle: the guest keeps rewriting a 16 MiB region (4096 pages, 16 words
 *   per page per pass, `passes=0`) in 1 GiB; both migrate with XBZRLE (64 MiB
 *   cache) at 16 MiB/s, so several rounds re-send dirty pages as deltas.
 *   Reported: bytes transferred and XBZRLE encoded bytes and pages.
 *
 * Targets (issue 7): total time ≤ 1.2× QEMU's, downtime ≤ 300 ms, xbzrle
 * bytes within 10% of QEMU's. The script prints ratios; docs/performance.md
 * records a run with the machine it ran on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TsvmmClient } from '@tsvmm/client';
import { MigrationStart, type MigrationStatusResult } from '@tsvmm/protocol';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const tsvmmCli = path.join(repoRoot, 'host/dist/src/cli.js');
const guest = path.join(repoRoot, 'test/guest/out/migrate_rw.elf');
const QEMU = 'qemu-system-x86_64';

const args = process.argv.slice(2);
const RUNS = Number(args[args.indexOf('--runs') + 1] ?? 0) || 5;
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;

const XBZRLE_APPEND = 'passes=0 pages=4096 words=16';
const XBZRLE_BANDWIDTH = 16 * 1024 * 1024;
const XBZRLE_CACHE = 64 * 1024 * 1024;

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-bench-migration-'));
const children = new Set<ChildProcess>();

function track(c: ChildProcess): ChildProcess {
  children.add(c);
  c.once('exit', () => children.delete(c));
  return c;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const a = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (a === null || typeof a !== 'object') throw new Error('no port');
  return a.port;
}

function waitFileContains(file: string, text: string, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      const body = fs.existsSync(file) ? fs.readFileSync(file, 'latin1') : '';
      if (body.includes(text)) resolve();
      else if (Date.now() > until) reject(new Error(`${file} never showed ${JSON.stringify(text)}`));
      else setTimeout(tick, 20);
    };
    tick();
  });
}

// --- QEMU over QMP -----------------------------------------------------------------------

class Qmp {
  private buf = '';
  private waiters: ((v: Record<string, unknown>) => void)[] = [];
  private constructor(private readonly sock: net.Socket) {
    sock.on('data', (d: Buffer) => {
      this.buf += d.toString();
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('return' in msg || 'error' in msg) this.waiters.shift()?.(msg);
      }
    });
  }

  static async connect(file: string): Promise<Qmp> {
    for (let i = 0; i < 200; i++) {
      if (fs.existsSync(file)) {
        const sock = net.connect(file);
        const ok = await new Promise<boolean>((r) => {
          sock.once('connect', () => r(true));
          sock.once('error', () => r(false));
        });
        if (ok) {
          const q = new Qmp(sock);
          await q.cmd('qmp_capabilities');
          return q;
        }
      }
      await sleep(25);
    }
    throw new Error(`QMP socket ${file} never came up`);
  }

  cmd(execute: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.waiters.push((m) => ('error' in m ? reject(new Error(`${execute}: ${JSON.stringify(m['error'])}`)) : resolve(m)));
      this.sock.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

interface QemuResult {
  totalMs: number;
  downtimeMs: number;
  bytes: number;
  xbzrleBytes?: number;
  xbzrlePages?: number;
  iterations: number;
}

function qemuArgs(memory: string, append: string, name: string, extra: string[]): string[] {
  return ['-accel', 'kvm', '-m', memory, '-kernel', guest, '-append', append, '-display', 'none', '-nodefaults', '-serial', `file:${path.join(dir, `${name}.serial`)}`, '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x4', '-qmp', `unix:${path.join(dir, `${name}.qmp`)},server=on,wait=off`, ...extra];
}

async function qemuMigrate(memory: string, append: string, waitFor: string, opts: { xbzrle?: boolean; bandwidth?: number; settleMs?: number }): Promise<QemuResult> {
  const port = await freePort();
  const id = `q${Date.now()}${Math.floor(Math.random() * 1e6)}`;
  for (const f of [`${id}-src.qmp`, `${id}-dst.qmp`, `${id}-src.serial`]) fs.rmSync(path.join(dir, f), { force: true });
  const dst = track(spawn(QEMU, qemuArgs(memory, append, `${id}-dst`, ['-incoming', `tcp:127.0.0.1:${port}`]), { stdio: 'ignore' }));
  const src = track(spawn(QEMU, qemuArgs(memory, append, `${id}-src`, []), { stdio: 'ignore' }));
  const qs = await Qmp.connect(path.join(dir, `${id}-src.qmp`));
  const qd = await Qmp.connect(path.join(dir, `${id}-dst.qmp`));
  try {
    await waitFileContains(path.join(dir, `${id}-src.serial`), waitFor, 60_000);
    if (opts.settleMs !== undefined) await sleep(opts.settleMs);
    if (opts.xbzrle) {
      for (const q of [qs, qd]) await q.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'xbzrle', state: true }] });
      await qs.cmd('migrate-set-parameters', { 'xbzrle-cache-size': XBZRLE_CACHE });
    }
    if (opts.bandwidth !== undefined) await qs.cmd('migrate-set-parameters', { 'max-bandwidth': opts.bandwidth });
    await qs.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
    for (;;) {
      const r = (await qs.cmd('query-migrate'))['return'] as Record<string, unknown>;
      const status = r['status'];
      if (status === 'completed') {
        const ram = r['ram'] as Record<string, number>;
        const x = r['xbzrle-cache'] as Record<string, number> | undefined;
        return {
          totalMs: r['total-time'] as number,
          downtimeMs: r['downtime'] as number,
          bytes: ram['transferred'] ?? 0,
          iterations: ram['dirty-sync-count'] ?? 0,
          ...(x !== undefined ? { xbzrleBytes: x['bytes'] ?? 0, xbzrlePages: x['pages'] ?? 0 } : {}),
        };
      }
      if (status === 'failed' || status === 'cancelled') throw new Error(`QEMU migration ${String(status)}: ${JSON.stringify(r)}`);
      await sleep(5);
    }
  } finally {
    qs.close();
    qd.close();
    src.kill('SIGKILL');
    dst.kill('SIGKILL');
  }
}

// --- tsvmm ---------------------------------------------------------------------------------

interface TsvmmResult {
  totalMs: number;
  downtimeMs: number;
  setupMs: number;
  bytes: number;
  xbzrleBytes?: number;
  xbzrlePages?: number;
  iterations: number;
  /** wall clock of the migration/start request as the client saw it */
  requestMs: number;
}

async function tsvmmMigrate(client: TsvmmClient, memory: string, append: string, waitFor: string, opts: { xbzrle?: boolean; bandwidth?: number; settleMs?: number }): Promise<TsvmmResult> {
  const { vmId } = await client.vmCreate({ description: { kernel: guest, append, memory, devices: [{ driver: 'isa-debug-exit', iobase: 0xf4, iosize: 4 }] } });
  const seen = client.waitForConsole(vmId, waitFor, 60_000);
  await client.vmStart({ vmId });
  await seen;
  const dst = track(spawn(process.execPath, [tsvmmCli, 'run', '--kernel', guest, '--append', append, '-m', memory, '--device', 'isa-debug-exit,iobase=0xf4,iosize=0x4', '--serial', 'null', '--incoming', 'tcp:127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'pipe'] }));
  try {
    const address = await new Promise<string>((resolve, reject) => {
      let err = '';
      dst.stderr?.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /waiting for an incoming migration at (\S+)/.exec(err);
        if (m?.[1] !== undefined) resolve(m[1]);
      });
      dst.once('exit', () => reject(new Error(`tsvmm run --incoming ended: ${err}`)));
    });
    if (opts.settleMs !== undefined) await sleep(opts.settleMs);
    const parameters = {
      strategy: opts.xbzrle ? 'xbzrle' : 'precopy',
      ...(opts.xbzrle ? { xbzrleCacheSize: XBZRLE_CACHE } : {}),
      ...(opts.bandwidth !== undefined ? { maxBandwidth: opts.bandwidth } : {}),
    };
    const t0 = performance.now();
    const s: MigrationStatusResult = await client.connection.sendRequest(MigrationStart.type, { vmId, uri: address, parameters });
    const requestMs = performance.now() - t0;
    return {
      totalMs: s.totalTimeMs ?? NaN,
      downtimeMs: s.downtimeMs ?? NaN,
      setupMs: s.setupTimeMs ?? NaN,
      bytes: s.ram.transferredBytes,
      iterations: s.ram.iterations,
      requestMs,
      ...(s.xbzrle !== undefined ? { xbzrleBytes: s.xbzrle.encodedBytes, xbzrlePages: s.xbzrle.pages } : {}),
    };
  } finally {
    dst.kill('SIGKILL');
    await client.vmDestroy({ vmId }).catch(() => undefined);
  }
}

// --- the run ---------------------------------------------------------------------------

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

async function main(): Promise<void> {
  for (const f of [guest, tsvmmCli]) if (!fs.existsSync(f)) throw new Error(`${f} is missing: run npm run build`);
  const client = await TsvmmClient.spawn({ command: [process.execPath, tsvmmCli] });
  const cpu = /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '?';
  console.log(`# bench/migration — ${new Date().toISOString()}`);
  console.log(`# host: ${os.cpus().length} CPUs (${cpu}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Linux ${os.release()}, Node ${process.version}`);
  console.log(`# ${RUNS} runs per case, alternating VMMs; medians\n`);
  const report: Record<string, unknown> = {};
  try {
    if (ONLY === undefined || ONLY === 'idle') {
      for (const memory of ['1G', '4G']) {
        const t: TsvmmResult[] = [];
        const q: QemuResult[] = [];
        for (let i = 0; i < RUNS; i++) {
          t.push(await tsvmmMigrate(client, memory, 'idle=1', '# idle', {}));
          q.push(await qemuMigrate(memory, 'idle=1', '# idle', {}));
        }
        const row = {
          tsvmm: { totalMs: median(t.map((r) => r.totalMs)), downtimeMs: median(t.map((r) => r.downtimeMs)), setupMs: median(t.map((r) => r.setupMs)), requestMs: median(t.map((r) => r.requestMs)), bytes: median(t.map((r) => r.bytes)) },
          qemu: { totalMs: median(q.map((r) => r.totalMs)), downtimeMs: median(q.map((r) => r.downtimeMs)), bytes: median(q.map((r) => r.bytes)) },
          runs: { tsvmmTotalMs: t.map((r) => r.totalMs), qemuTotalMs: q.map((r) => r.totalMs), tsvmmDowntimeMs: t.map((r) => r.downtimeMs), qemuDowntimeMs: q.map((r) => r.downtimeMs) },
        };
        report[`idle-${memory}`] = row;
        console.log(`idle ${memory}: total tsvmm ${fmt(row.tsvmm.totalMs)} ms, QEMU ${fmt(row.qemu.totalMs)} ms, ratio ${fmt(row.tsvmm.totalMs / row.qemu.totalMs, 2)} (target ≤ 1.2)`);
        console.log(`  downtime tsvmm ${fmt(row.tsvmm.downtimeMs)} ms, QEMU ${fmt(row.qemu.downtimeMs)} ms (target ≤ 300); tsvmm setup ${fmt(row.tsvmm.setupMs)} ms, request ${fmt(row.tsvmm.requestMs)} ms`);
        console.log(`  bytes tsvmm ${row.tsvmm.bytes}, QEMU ${row.qemu.bytes}`);
        console.log(`  per run: tsvmm ${row.runs.tsvmmTotalMs.join(' ')} / QEMU ${row.runs.qemuTotalMs.join(' ')}`);
      }
    }
    if (ONLY === undefined || ONLY === 'xbzrle') {
      const t: TsvmmResult[] = [];
      const q: QemuResult[] = [];
      for (let i = 0; i < RUNS; i++) {
        t.push(await tsvmmMigrate(client, '1G', XBZRLE_APPEND, '# pass 3\n', { xbzrle: true, bandwidth: XBZRLE_BANDWIDTH, settleMs: 500 }));
        q.push(await qemuMigrate('1G', XBZRLE_APPEND, '# pass 3\n', { xbzrle: true, bandwidth: XBZRLE_BANDWIDTH, settleMs: 500 }));
      }
      const row = {
        tsvmm: { bytes: median(t.map((r) => r.bytes)), xbzrleBytes: median(t.map((r) => r.xbzrleBytes ?? 0)), xbzrlePages: median(t.map((r) => r.xbzrlePages ?? 0)), iterations: median(t.map((r) => r.iterations)), totalMs: median(t.map((r) => r.totalMs)), downtimeMs: median(t.map((r) => r.downtimeMs)) },
        qemu: { bytes: median(q.map((r) => r.bytes)), xbzrleBytes: median(q.map((r) => r.xbzrleBytes ?? 0)), xbzrlePages: median(q.map((r) => r.xbzrlePages ?? 0)), iterations: median(q.map((r) => r.iterations)), totalMs: median(q.map((r) => r.totalMs)), downtimeMs: median(q.map((r) => r.downtimeMs)) },
        runs: { tsvmmBytes: t.map((r) => r.bytes), qemuBytes: q.map((r) => r.bytes), tsvmmXbzrleBytes: t.map((r) => r.xbzrleBytes ?? 0), qemuXbzrleBytes: q.map((r) => r.xbzrleBytes ?? 0) },
      };
      report['xbzrle-rewriting'] = row;
      console.log(`xbzrle, rewriting guest (16 MiB region in 1 GiB, ${XBZRLE_BANDWIDTH / 2 ** 20} MiB/s):`);
      console.log(`  bytes sent tsvmm ${row.tsvmm.bytes}, QEMU ${row.qemu.bytes}, ratio ${fmt(row.tsvmm.bytes / row.qemu.bytes, 3)} (target within 10%)`);
      console.log(`  XBZRLE bytes tsvmm ${row.tsvmm.xbzrleBytes} (${row.tsvmm.xbzrlePages} pages), QEMU ${row.qemu.xbzrleBytes} (${row.qemu.xbzrlePages} pages), ratio ${fmt(row.tsvmm.xbzrleBytes / row.qemu.xbzrleBytes, 3)}`);
      console.log(`  rounds tsvmm ${row.tsvmm.iterations}, QEMU ${row.qemu.iterations}; total tsvmm ${fmt(row.tsvmm.totalMs)} ms, QEMU ${fmt(row.qemu.totalMs)} ms; downtime tsvmm ${fmt(row.tsvmm.downtimeMs)} ms, QEMU ${fmt(row.qemu.downtimeMs)} ms`);
      console.log(`  per run bytes: tsvmm ${row.runs.tsvmmBytes.join(' ')} / QEMU ${row.runs.qemuBytes.join(' ')}`);
    }
    console.log(`\n${JSON.stringify(report)}`);
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await client.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    for (const c of children) c.kill('SIGKILL');
    console.error(err);
    process.exit(1);
  },
);
