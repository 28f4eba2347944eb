/**
 * Helpers for the control-plane tests: start `tsvmm serve` as a separate
 * process (as users do), talk raw frames to it, read its memory use.
 *
 * Tests on the fake accelerator (TSVMM_TEST_ACCELERATOR=fake, see
 * host/src/vm-process/fake-accelerator.ts) need no KVM; the acceptance tests
 * use the real accelerator and the guests from test/guest/out.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeMultibootHeaderKernel } from '@tsvmm/core/testing';
import { ResponseError } from '@tsvmm/client';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const tsvmmCli = path.join(repoRoot, 'host/dist/src/cli.js');

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it; it is closed again at once). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      s.close(() => (typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('the listening socket has no port'))));
    });
  });
}

export function tmpDir(prefix = 'tsvmm-rpc-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * A minimal multiboot kernel (header only): enough for Machine.create to load
 * it. The fake accelerator never executes it; its scripted guest talks to the
 * devices instead.
 */
export function fakeKernel(dir: string): string {
  return writeMultibootHeaderKernel(path.join(dir, 'fake-kernel.bin'));
}

export interface ServerProcess {
  proc: ChildProcess;
  address: string;
  stderr(): string;
  /** SIGTERM and wait for the exit status */
  stop(): Promise<number | null>;
  rssBytes(): number;
}

export interface StartServerOptions {
  listen?: string;
  fake?: boolean;
  args?: string[];
  env?: NodeJS.ProcessEnv;
}

/** Start `tsvmm serve --listen ...` and wait until it says it listens. */
export async function startServer(opts: StartServerOptions = {}): Promise<ServerProcess> {
  const dir = tmpDir('tsvmm-serve-');
  const listen = opts.listen ?? `unix:${path.join(dir, 'tsvmm.sock')}`;
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  if (opts.fake !== false) env['TSVMM_TEST_ACCELERATOR'] = 'fake';
  else delete env['TSVMM_TEST_ACCELERATOR'];
  const proc = spawn(process.execPath, [tsvmmCli, 'serve', '--listen', listen, ...(opts.args ?? [])], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env,
  });
  let err = '';
  proc.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tsvmm serve did not start within 15 s: ${err}`)), 15_000);
    const check = (): void => {
      if (err.includes('listening on')) {
        clearTimeout(timer);
        proc.stderr?.off('data', check);
        resolve();
      }
    };
    proc.stderr?.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tsvmm serve exited with ${code}: ${err}`));
    });
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    address: listen,
    stderr: () => err,
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
      const code = await exited;
      fs.rmSync(dir, { recursive: true, force: true });
      return code;
    },
    rssBytes: () => readRss(proc.pid ?? 0),
  };
}

/** Resident set size of a process, from /proc/PID/status (VmRSS). */
export function readRss(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  if (m === null) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

export function frame(body: string | Buffer): Buffer {
  const b = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return Buffer.concat([Buffer.from(`Content-Length: ${b.length}\r\n\r\n`, 'ascii'), b]);
}

/** A raw socket client that collects the framed JSON messages the server sends back. */
export class RawClient {
  readonly messages: unknown[] = [];
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  static connect(address: string): Promise<RawClient> {
    const opts: net.NetConnectOpts = address.startsWith('unix:')
      ? { path: address.slice(5) }
      : { host: address.split(':')[1] ?? '127.0.0.1', port: Number(address.split(':')[2]) };
    return new Promise((resolve, reject) => {
      const s = net.connect(opts, () => resolve(new RawClient(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private parse(): void {
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const m = /Content-Length: (\d+)/i.exec(this.buf.subarray(0, end).toString('ascii'));
      if (m === null) throw new Error('server sent a frame without Content-Length');
      const len = Number(m[1]);
      if (this.buf.length < end + 4 + len) return;
      this.messages.push(JSON.parse(this.buf.subarray(end + 4, end + 4 + len).toString('utf8')));
      this.buf = this.buf.subarray(end + 4 + len);
      this.wake();
    }
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  send(message: object): void {
    this.write(frame(JSON.stringify(message)));
  }

  /** Wait for a message matching `pred` (already received or future). */
  async next(pred: (m: Record<string, unknown>) => boolean, timeoutMs = 5000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find((m) => typeof m === 'object' && m !== null && pred(m as Record<string, unknown>));
      if (found !== undefined) {
        this.messages.splice(this.messages.indexOf(found), 1);
        return found as Record<string, unknown>;
      }
      if (this.closed) throw new Error(`connection closed while waiting; got ${JSON.stringify(this.messages)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a message; got ${JSON.stringify(this.messages)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  response(id: number | string | null, timeoutMs?: number): Promise<Record<string, unknown>> {
    return this.next((m) => m['id'] === id && ('result' in m || 'error' in m), timeoutMs);
  }

  waitClosed(timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed) return resolve();
      const t = setTimeout(() => reject(new Error('connection still open')), timeoutMs);
      this.socket.once('close', () => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

export const INIT = { jsonrpc: '2.0', id: 0, method: 'initialize', params: { protocolVersion: '1.0.0', capabilities: {} } };

/** A test that needs something this host lacks fails naming what to install. */
export function requireFile(file: string, what: string): void {
  if (!fs.existsSync(file)) throw new Error(`${file} is missing: ${what}`);
}

/** The ResponseError a request fails with (the test fails if it succeeds). */
export async function rpcError(p: Promise<unknown>): Promise<ResponseError<unknown>> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ResponseError) return err;
    throw err;
  }
  throw new Error('expected an error response');
}
