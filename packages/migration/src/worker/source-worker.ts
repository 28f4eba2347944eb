/**
 * The migration thread of the source (a worker_thread): owns the outgoing
 * connection or file, writes the stream, scans and encodes RAM straight from
 * the guest's SharedArrayBuffers (ram/sender.ts) and reads the destination's
 * replies, so the main thread keeps serving RPC and devices throughout. The
 * main thread (source.ts) only says what to send and when.
 *
 * Bandwidth is limited with a token bucket refilled at maxBandwidth and
 * holding at most 100 ms worth (QEMU's rate limit works in 100 ms windows,
 * migration/qemu-file.c); a write that overdraws it waits until the debt is
 * repaid, so whole 1 MiB RAM batches still average out to the limit. As
 * QEMU does (migration_completion), the final copy with the guest stopped
 * is not limited.
 *
 * Imports nothing from @tsvmm/core or zod: a worker that loads them takes
 * hundreds of milliseconds longer to start, which would count in the
 * migration's total time.
 */
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { RamSender } from '../ram/sender.js';
import { MAX_REPLY_BYTES, REPLY_HEADER_BYTES, ReplyType, SectionType } from '../stream/format.js';
import { StreamWriter } from '../stream/writer.js';
import type { SourceCommand, SourceEvent, SourceProgress, SourceWorkerInit, StateSection } from './messages.js';

/** the bucket holds this much time's worth of bytes */
const RATE_BURST_MS = 100;

interface Reply {
  type: number;
  body: unknown;
}

/** Where the stream goes: a socket (with a reply channel) or a file. */
interface Sink {
  readonly peer: string;
  write(bytes: Uint8Array): Promise<void>;
  /** the destination's next reply (sockets); rejects when the connection ends or after `timeoutMs` */
  reply(timeoutMs: number, waitingFor: string): Promise<Reply>;
  /** finish the stream cleanly (socket: end and wait; file: sync, close, move into place) */
  finish(): Promise<void>;
  /** give up: close without finishing (a partial file is removed) */
  destroy(): void;
}

class SocketSink implements Sink {
  private readonly replies: Reply[] = [];
  private pending: Buffer = Buffer.alloc(0);
  private waiter: (() => void) | undefined;
  private error: Error | undefined;
  private ended = false;

  constructor(
    private readonly socket: net.Socket,
    readonly peer: string,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail(new Error(`connection to ${peer} failed: ${err.message}`)));
    socket.on('close', () => this.fail(new Error(`the destination (${peer}) closed the connection`)));
    socket.on('end', () => {
      this.ended = true;
      this.fail(new Error(`the destination (${peer}) closed the connection`));
    });
  }

  private fail(err: Error): void {
    this.error ??= err;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= REPLY_HEADER_BYTES) {
      const type = this.pending.readUInt8(0);
      const len = this.pending.readUInt32BE(1);
      if (len > MAX_REPLY_BYTES) {
        this.fail(new Error(`the destination sent a malformed reply (${len} bytes)`));
        this.socket.destroy();
        return;
      }
      if (this.pending.length < REPLY_HEADER_BYTES + len) break;
      const text = this.pending.subarray(REPLY_HEADER_BYTES, REPLY_HEADER_BYTES + len).toString('utf8');
      this.pending = this.pending.subarray(REPLY_HEADER_BYTES + len);
      let body: unknown = null;
      try {
        body = text === '' ? null : JSON.parse(text);
      } catch (err) {
        // the destination writes every reply body with JSON.stringify: anything else is a broken peer
        this.fail(new Error(`the destination sent a malformed reply (type ${type}: ${err instanceof Error ? err.message : String(err)})`));
        this.socket.destroy();
        return;
      }
      this.replies.push({ type, body });
    }
    this.wake();
  }

  write(bytes: Uint8Array): Promise<void> {
    if (this.error !== undefined) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const ok = this.socket.write(bytes, (err) => {
        if (err) reject(this.error ?? new Error(`writing to ${this.peer} failed: ${err.message}`));
      });
      if (ok) resolve();
      else {
        const onDrain = (): void => {
          this.socket.off('close', onClose);
          resolve();
        };
        const onClose = (): void => {
          this.socket.off('drain', onDrain);
          reject(this.error ?? new Error(`the destination (${this.peer}) closed the connection`));
        };
        this.socket.once('drain', onDrain);
        this.socket.once('close', onClose);
      }
    });
  }

  async reply(timeoutMs: number, waitingFor: string): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const r = this.replies.shift();
      if (r !== undefined) return r;
      if (this.error !== undefined) throw this.error;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no answer from the destination (${this.peer}) within ${timeoutMs} ms while waiting for ${waitingFor}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  finish(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.error !== undefined && !this.ended) {
        reject(this.error);
        return;
      }
      this.socket.end(() => resolve());
    });
  }

  destroy(): void {
    this.socket.destroy();
  }
}

class FileSink implements Sink {
  private closed = false;
  constructor(
    private readonly handle: fs.FileHandle,
    private readonly tmp: string,
    private readonly final: string,
  ) {}

  get peer(): string {
    return this.final;
  }

  async write(bytes: Uint8Array): Promise<void> {
    let off = 0;
    while (off < bytes.length) {
      const { bytesWritten } = await this.handle.write(bytes, off, bytes.length - off);
      off += bytesWritten;
    }
  }

  reply(): Promise<Reply> {
    return Promise.reject(new Error('a file has no reply channel'));
  }

  async finish(): Promise<void> {
    await this.handle.datasync();
    await this.handle.close();
    this.closed = true;
    // Only a complete stream appears under the name asked for.
    await fs.rename(this.tmp, this.final);
  }

  /** The migration failed: drop the partial stream. Nothing here can fail it further, so a close or unlink error is moot. */
  destroy(): void {
    if (!this.closed) void this.handle.close().catch(() => undefined);
    this.closed = true;
    void fs.unlink(this.tmp).catch(() => undefined);
  }
}

async function openSink(init: SourceWorkerInit): Promise<Sink> {
  const t = init.transport;
  if (t.kind === 'file') {
    const tmp = path.join(path.dirname(t.path), `.${path.basename(t.path)}.${process.pid}.partial`);
    const handle = await fs.open(tmp, 'w', 0o600);
    return new FileSink(handle, tmp, t.path);
  }
  const peer = t.kind === 'tcp' ? `${t.host}:${t.port}` : t.path;
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = t.kind === 'tcp' ? net.connect({ host: t.host, port: t.port }) : net.connect({ path: t.path });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`could not connect to ${peer} within ${init.replyTimeoutMs} ms`));
    }, init.replyTimeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new Error(`cannot connect to the destination ${peer}: ${err.code ?? err.message}`, { cause: err }));
    });
  });
  return new SocketSink(socket, peer);
}

// --- the thread ---------------------------------------------------------------------------

const maybePort = parentPort;
if (maybePort === null) throw new Error('source-worker.js must run as a worker thread');
const port: MessagePort = maybePort;
/**
 * The migration to run: given at spawn (workerData), or, for a thread started
 * ahead of time (prewarmMigrationThread), in its first message.
 */
const init: SourceWorkerInit =
  workerData !== null && workerData !== undefined
    ? (workerData as SourceWorkerInit)
    : await new Promise<SourceWorkerInit>((resolve) => port.once('message', (m: { type: 'init'; init: SourceWorkerInit }) => resolve(m.init)));
const post = (e: SourceEvent, transfer: ArrayBuffer[] = []): void => port.postMessage(e, transfer);

const writer = new StreamWriter();
let sink: Sink | undefined;
let sender: RamSender | undefined;
let maxBandwidth = init.maxBandwidth;
let tokens = 0;
let refilledAt = performance.now();
/** the guest is stopped: no limit from here on */
let unlimited = false;
let lastProgress = 0;
let failed = false;

function progress(): SourceProgress {
  return {
    bytes: writer.bytes,
    ram: sender !== undefined ? { ...sender.counters } : emptyCounters(),
    xbzrleCacheBytes: sender?.xbzrleCacheBytes ?? 0,
  };
}

function emptyCounters(): SourceProgress['ram'] {
  return { normalPages: 0, zeroPages: 0, xbzrlePages: 0, xbzrleBytes: 0, xbzrleCacheHits: 0, xbzrleCacheMisses: 0, xbzrleOverflows: 0, unchangedPages: 0, bytes: 0 };
}

/** Write with QEMU's rate limit, and report progress now and then. */
async function write(bytes: Uint8Array): Promise<void> {
  const s = sink;
  if (s === undefined) throw new Error('no connection');
  if (maxBandwidth > 0 && !unlimited) {
    const now = performance.now();
    const perMs = maxBandwidth / 1000;
    tokens = Math.min(perMs * RATE_BURST_MS, tokens + (now - refilledAt) * perMs);
    refilledAt = now;
    tokens -= bytes.length;
    if (tokens < 0) await new Promise((resolve) => setTimeout(resolve, -tokens / perMs));
  }
  await s.write(bytes);
  const now = performance.now();
  if (now - lastProgress >= 100) {
    lastProgress = now;
    post({ type: 'progress', progress: progress() });
  }
}

function fail(err: unknown, rejected?: string[]): void {
  if (failed) return;
  failed = true;
  sender?.abort();
  sink?.destroy();
  post({ type: 'failed', message: err instanceof Error ? err.message : String(err), ...(rejected !== undefined ? { rejected } : {}) });
}

function replyText(body: unknown, key: string): string | undefined {
  const v = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[key] : undefined;
  return typeof v === 'string' ? v : undefined;
}

async function start(): Promise<void> {
  sink = await openSink(init);
  sender = new RamSender(init.regions, writer, write, init.xbzrleCacheSize);
  await write(writer.header(init.header));
  await write(writer.stateSection(SectionType.CONFIG, init.config, 'config'));
  if (init.transport.kind !== 'file') {
    const r = await sink.reply(init.replyTimeoutMs, 'its answer to the configuration');
    if (r.type === ReplyType.REJECT) {
      const problems = typeof r.body === 'object' && r.body !== null && Array.isArray((r.body as { problems?: unknown }).problems)
        ? ((r.body as { problems: unknown[] }).problems.map(String))
        : ['no reason given'];
      fail(new Error(`the destination refused the VM: ${problems.join('; ')}`), problems);
      return;
    }
    if (r.type !== ReplyType.ACCEPT) throw new Error(`the destination answered the configuration with reply type ${r.type}`);
  }
  post({ type: 'ready', peer: sink.peer });
}

async function writeSections(sections: StateSection[]): Promise<void> {
  for (const s of sections) {
    if (s.kind === 'device') await write(writer.deviceSection(s.meta, s.state));
    else if (s.kind === 'cpu') await write(writer.stateSection(SectionType.CPU, s.state, 'CPU state'));
    else await write(writer.stateSection(SectionType.MACHINE, s.state, 'machine state'));
  }
}

async function finish(): Promise<void> {
  const s = sink;
  if (s === undefined) throw new Error('no connection');
  await write(writer.end());
  if (init.transport.kind === 'file') {
    await s.finish();
    return;
  }
  const r = await s.reply(init.replyTimeoutMs, 'it to load the VM');
  if (r.type === ReplyType.FAILED) throw new Error(`the destination could not load the VM: ${replyText(r.body, 'message') ?? 'no reason given'}`);
  if (r.type !== ReplyType.LOADED) throw new Error(`the destination answered the end of the stream with reply type ${r.type}`);
}

async function commit(): Promise<void> {
  const s = sink;
  if (s === undefined) throw new Error('no connection');
  if (init.transport.kind === 'file') return;
  await write(writer.commit());
  await s.finish();
}

let queue: Promise<void> = Promise.resolve();

port.on('message', (cmd: SourceCommand) => {
  if (cmd.type === 'cancel') {
    fail(new Error('cancelled'));
    return;
  }
  if (cmd.type === 'parameters') {
    maxBandwidth = cmd.maxBandwidth;
    sender?.setXbzrleCacheSize(cmd.xbzrleCacheSize);
    return;
  }
  // Commands run one after another, in order.
  queue = queue.then(async () => {
    if (failed) return;
    try {
      switch (cmd.type) {
        case 'round': {
          const s = sender;
          if (s === undefined) throw new Error('no connection');
          if (cmd.last) unlimited = true;
          const round = await s.sendRound(cmd.bitmaps, { bulk: cmd.bulk, last: cmd.last, age: cmd.age });
          if (s.extentWarning !== undefined) {
            post({ type: 'warning', message: `every page of RAM is read in the first round: ${s.extentWarning}` });
            s.extentWarning = undefined;
          }
          post({ type: 'done', seq: cmd.seq, round, progress: progress() });
          return;
        }
        case 'sections':
          await writeSections(cmd.sections);
          break;
        case 'finish':
          await finish();
          break;
        case 'commit':
          await commit();
          break;
      }
      post({ type: 'done', seq: cmd.seq, progress: progress() });
    } catch (err) {
      fail(err);
    }
  });
});

start().catch((err: unknown) => fail(err));
