/**
 * bench/rpc: round-trip latency and requests/s of `vm/status` against a
 * running VM (fake accelerator, so the guest costs nothing), over stdio, a
 * unix socket and TCP, with 1 and 50 clients — beside a bare vscode-jsonrpc
 * echo server measured the same way in the same run (the reference).
 * Target: tsvmm throughput at least 0.7× the echo server's.
 *
 *   npx tsc -b bench/rpc && node bench/rpc/dist/bench-rpc.js [--requests N] [--repeat R]
 *
 * A stdio server has exactly one client by construction (the process that
 * spawned it), so "50 clients over stdio" means 50 server processes, each
 * with its one client — for tsvmm each of those also runs its own VM process.
 * Measurement starts once the spawned processes have gone idle (settle()),
 * for both servers alike.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeMultibootHeaderKernel } from '@tsvmm/core/testing';
import type { MessageConnection } from 'vscode-jsonrpc';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '../../..');
const tsvmmCli = path.join(repoRoot, 'host/dist/src/cli.js');
const echoServer = path.join(here, 'echo-server.js');

const args = process.argv.slice(2);
const REQUESTS = Number(args[args.indexOf('--requests') + 1] ?? 0) || 4000;
/** rounds per server and row; the rates reported are the medians */
const REPEAT = args.includes('--repeat') ? Math.max(1, Number(args[args.indexOf('--repeat') + 1]) || 1) : 3;

type Transport = 'stdio' | 'unix' | 'tcp';
type Kind = 'tsvmm' | 'echo';

interface Endpoint {
  connect(): Promise<MessageConnection>;
  stop(): Promise<void>;
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-bench-rpc-'));

function kernel(): string {
  return writeMultibootHeaderKernel(path.join(dir, 'kernel.bin'));
}

function waitListening(p: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let err = '';
    p.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening')) resolve();
    });
    p.once('exit', (c) => reject(new Error(`server exited ${c}: ${err}`)));
  });
}

let portBase = 20000 + Math.floor(Math.random() * 20000);

function socketConnect(opts: net.NetConnectOpts): Promise<MessageConnection> {
  return new Promise((resolve, reject) => {
    const s = net.connect(opts, () => {
      s.setNoDelay(true);
      const c = createMessageConnection(new StreamMessageReader(s), new StreamMessageWriter(s));
      c.listen();
      resolve(c);
    });
    s.once('error', reject);
  });
}

const env = { ...process.env, TSVMM_TEST_ACCELERATOR: 'fake' };

async function endpoint(kind: Kind, transport: Transport): Promise<Endpoint> {
  const cmd = kind === 'tsvmm' ? [tsvmmCli, 'serve'] : [echoServer, '--reply', replyFile];
  if (transport === 'stdio') {
    const procs: ChildProcess[] = [];
    return {
      connect: async () => {
        const p = spawn(process.execPath, [...cmd, '--stdio'], { stdio: ['pipe', 'pipe', 'inherit'], env });
        procs.push(p);
        if (p.stdout === null || p.stdin === null) throw new Error('no pipes');
        const c = createMessageConnection(new StreamMessageReader(p.stdout), new StreamMessageWriter(p.stdin));
        c.listen();
        return c;
      },
      stop: async () => {
        await Promise.all(procs.map((p) => new Promise((r) => (p.exitCode !== null ? r(null) : (p.once('exit', r), p.kill('SIGTERM'))))));
      },
    };
  }
  const token = path.join(dir, 'token');
  fs.writeFileSync(token, 'bench-token-0123456789abcdef');
  const port = portBase++;
  const sock = path.join(dir, `${kind}.sock`);
  const listenArgs =
    kind === 'tsvmm'
      ? ['--listen', transport === 'unix' ? `unix:${sock}` : `tcp:127.0.0.1:${port}`, ...(transport === 'tcp' ? ['--auth-token-file', token] : [])]
      : transport === 'unix'
        ? ['--unix', sock]
        : ['--tcp', String(port)];
  fs.rmSync(sock, { force: true });
  const p = spawn(process.execPath, [...cmd, ...listenArgs], { stdio: ['ignore', 'ignore', 'pipe'], env });
  await waitListening(p);
  return {
    connect: () => socketConnect(transport === 'unix' ? { path: sock } : { host: '127.0.0.1', port }),
    stop: () =>
      new Promise((r) => {
        p.once('exit', () => r());
        p.kill('SIGTERM');
      }),
  };
}

/** Connect, initialize, and for tsvmm create + start a VM; returns the request to time. */
async function client(kind: Kind, ep: Endpoint): Promise<{ conn: MessageConnection; call: () => Promise<unknown> }> {
  const conn = await ep.connect();
  await conn.sendRequest('initialize', { protocolVersion: '1.0.0', capabilities: { notifications: ['vm/stateChanged'] }, authToken: 'bench-token-0123456789abcdef' });
  if (kind === 'echo') {
    const payload = { vmId: 'vm-1' };
    return { conn, call: () => conn.sendRequest('echo', payload) };
  }
  return { conn, call: () => conn.sendRequest('vm/status', { vmId: sharedVm.get(ep) ?? 'vm-1' }) };
}

const sharedVm = new Map<Endpoint, string>();

/** CPU time (clock ticks) used so far by every process below this one. */
function descendantTicks(): number {
  let total = 0;
  const children = new Map<number, number[]>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // the process ended while we listed /proc
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(fields[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(entry));
    children.set(ppid, list);
    if (ppid >= 0) children.set(-Number(entry), [Number(fields[11]) + Number(fields[12])]);
  }
  const stack = [...(children.get(process.pid) ?? [])];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    total += children.get(-pid)?.[0] ?? 0;
    stack.push(...(children.get(pid) ?? []));
  }
  return total;
}

/**
 * Waits until the servers (and, for tsvmm, their VM processes) have finished
 * starting up, so that start-up work of fifty freshly spawned processes is
 * not counted as request handling: the rows measure a steady state.
 */
async function settle(): Promise<void> {
  const deadline = Date.now() + 30_000;
  let last = descendantTicks();
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    const now = descendantTicks();
    if (now - last <= 2) return;
    last = now;
  }
}

interface Result {
  latencies: number[];
  seconds: number;
  requests: number;
}

async function measure(kind: Kind, transport: Transport, clients: number): Promise<Result> {
  const ep = await endpoint(kind, transport);
  try {
    const cs = [];
    for (let i = 0; i < clients; i++) {
      const c = await client(kind, ep);
      if (kind === 'tsvmm' && (transport === 'stdio' || i === 0)) {
        // every stdio server is its own process with its own VM; socket servers share one
        const r = (await c.conn.sendRequest('vm/create', { description: { kernel: kernel() } })) as { vmId: string };
        await c.conn.sendRequest('vm/start', { vmId: r.vmId });
        if (transport !== 'stdio') sharedVm.set(ep, r.vmId);
      }
      cs.push(c);
    }
    const perClient = Math.max(50, Math.floor(REQUESTS / clients));
    await settle();
    // warm-up
    await Promise.all(cs.map(async (c) => {
      for (let i = 0; i < 50; i++) await c.call();
    }));
    const latencies: number[] = [];
    const t0 = process.hrtime.bigint();
    await Promise.all(
      cs.map(async (c) => {
        for (let i = 0; i < perClient; i++) {
          const s = process.hrtime.bigint();
          await c.call();
          latencies.push(Number(process.hrtime.bigint() - s) / 1e3);
        }
      }),
    );
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    for (const c of cs) c.conn.dispose();
    return { latencies, seconds, requests: perClient * clients };
  } finally {
    await ep.stop();
  }
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? NaN;
}

// The echo server answers with a real vm/status result, so both servers send equally large responses.
const replyFile = path.join(dir, 'reply.json');
{
  const ep = await endpoint('tsvmm', 'unix');
  const c = await client('tsvmm', ep);
  const r = (await c.conn.sendRequest('vm/create', { description: { kernel: kernel() } })) as { vmId: string };
  fs.writeFileSync(replyFile, JSON.stringify(await c.conn.sendRequest('vm/status', { vmId: r.vmId })));
  c.conn.dispose();
  await ep.stop();
}
console.log(`response size: ${fs.statSync(replyFile).size} bytes of JSON`);

const rows: string[] = [];
console.log(`requests per configuration: ${REQUESTS} (split across clients), ${REPEAT} rounds per server in ABBA order`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
for (const transport of ['stdio', 'unix', 'tcp'] as Transport[]) {
  for (const clients of [1, 50]) {
    // rounds alternate which server goes first (E T, T E, T E, E T, ...), so a
    // drift in the machine's load during the row favours neither
    const runs: Record<Kind, Result[]> = { echo: [], tsvmm: [] };
    for (let round = 0; round < REPEAT; round++) {
      const order: Kind[] = round % 4 === 0 || round % 4 === 3 ? ['echo', 'tsvmm'] : ['tsvmm', 'echo'];
      for (const kind of order) runs[kind].push(await measure(kind, transport, clients));
    }
    const e = runs.echo.flatMap((r) => r.latencies).sort((a, b) => a - b);
    const t = runs.tsvmm.flatMap((r) => r.latencies).sort((a, b) => a - b);
    const eRate = median(runs.echo.map((r) => r.requests / r.seconds));
    const tRate = median(runs.tsvmm.map((r) => r.requests / r.seconds));
    const row = `| ${transport} | ${clients} | ${pct(e, 50).toFixed(0)} / ${pct(e, 99).toFixed(0)} | ${pct(t, 50).toFixed(0)} / ${pct(t, 99).toFixed(0)} | ${eRate.toFixed(0)} | ${tRate.toFixed(0)} | ${(tRate / eRate).toFixed(2)} |`;
    rows.push(row);
    console.log(row);
  }
}
console.log('\n| transport | clients | echo p50 / p99 (µs) | tsvmm vm/status p50 / p99 (µs) | echo req/s | tsvmm req/s | ratio (tsvmm / echo) |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) console.log(r);
fs.rmSync(dir, { recursive: true, force: true });
