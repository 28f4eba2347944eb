/**
 * The migration thread of the destination (a worker_thread): listens for
 * the one incoming connection (or reads the snapshot file), parses the
 * stream (stream/parser.ts), writes RAM sections straight into the guest's
 * SharedArrayBuffers (ram/receiver.ts), and passes the configuration and
 * the device, CPU and machine sections to the main thread
 * (destination.ts), which decides. While the main thread decides, reading
 * pauses, so nothing after the configuration is taken before it is
 * accepted, and nothing after END before the VM state is loaded.
 *
 * Replies go back on the same socket (format.ts ReplyType). A failure at any
 * point closes the connection; the source then keeps (or resumes) its VM.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { RamReceiver } from '../ram/receiver.js';
import { decodeState } from '../state-codec.js';
import { REPLY_HEADER_BYTES, ReplyType, SECTION_HEADER_BYTES, SectionType, sectionTypeName, type ReplyTypeCode } from '../stream/format.js';
import { StreamParser } from '../stream/parser.js';
import { MigrationStreamError } from '../stream/stream-error.js';
import type { DestinationCommand, DestinationEvent, DestinationWorkerInit, StateSection } from './messages.js';

const port = parentPort;
if (port === null) throw new Error('destination-worker.js must run as a worker thread');
const init = workerData as DestinationWorkerInit;
const post = (e: DestinationEvent): void => port.postMessage(e);

type Stage = 'header' | 'config' | 'config-wait' | 'ram' | 'states' | 'end-wait' | 'commit-wait' | 'done' | 'failed';

const receiver = new RamReceiver(init.regions);
let stage: Stage = 'header';
let server: net.Server | undefined;
let socket: net.Socket | undefined;
let file: fs.ReadStream | undefined;
let lastProgress = 0;
let bytesIn = 0;
/** units parsed but not yet handled, while the main thread decides */
const backlog: { type: number; payload: Uint8Array; offset: number }[] = [];

function fail(err: unknown): void {
  if (stage === 'failed' || stage === 'done') return;
  stage = 'failed';
  const message = err instanceof Error ? err.message : String(err);
  // Tell the source why, if it can still hear it; then drop everything.
  if (socket !== undefined && !socket.destroyed) {
    sendReply(ReplyType.FAILED, { message });
    socket.end();
    setTimeout(() => socket?.destroy(), 1000).unref();
  }
  file?.destroy();
  server?.close();
  post({ type: 'failed', message });
}

function sendReply(type: ReplyTypeCode, body: unknown): void {
  const json = Buffer.from(body === null ? '' : JSON.stringify(body), 'utf8');
  const frame = Buffer.alloc(REPLY_HEADER_BYTES + json.length);
  frame.writeUInt8(type, 0);
  frame.writeUInt32BE(json.length, 1);
  json.copy(frame, REPLY_HEADER_BYTES);
  socket?.write(frame);
}

function pauseInput(): void {
  socket?.pause();
  file?.pause();
}

function resumeInput(): void {
  socket?.resume();
  file?.resume();
}

const parser = new StreamParser({
  header: (info, version) => {
    stage = 'config';
    post({ type: 'header', info, version });
  },
  section: (type, payload, offset) => {
    backlog.push({ type, payload, offset });
  },
});

function decode(payload: Uint8Array, offset: number, what: string): unknown {
  try {
    return decodeState(payload, what);
  } catch (err) {
    throw new MigrationStreamError(err instanceof Error ? err.message : String(err), offset);
  }
}

function deviceSection(payload: Uint8Array, offset: number): StateSection {
  if (payload.length < 2) throw new MigrationStreamError('DEVICE section too short for its meta length', offset);
  const metaLen = new DataView(payload.buffer, payload.byteOffset, 2).getUint16(0);
  if (2 + metaLen > payload.length) throw new MigrationStreamError(`DEVICE meta of ${metaLen} bytes overruns the section`, offset);
  const meta = decode(payload.subarray(2, 2 + metaLen), offset, 'device meta');
  const m = typeof meta === 'object' && meta !== null ? (meta as Record<string, unknown>) : {};
  const id = m['id'];
  const driver = m['driver'];
  const stateVersion = m['stateVersion'];
  const plugin = m['plugin'];
  if (typeof id !== 'string' || typeof driver !== 'string' || typeof stateVersion !== 'number' || !Number.isInteger(stateVersion)) {
    throw new MigrationStreamError('DEVICE meta lacks id, driver or an integer stateVersion', offset);
  }
  let pluginInfo: { name: string; version: string } | null = null;
  if (typeof plugin === 'object' && plugin !== null) {
    const name = (plugin as Record<string, unknown>)['name'];
    const version = (plugin as Record<string, unknown>)['version'];
    if (typeof name === 'string' && typeof version === 'string') pluginInfo = { name, version };
  }
  const state = decode(payload.subarray(2 + metaLen), offset, `device '${id}' state`);
  return { kind: 'device', meta: { id, driver, plugin: pluginInfo, stateVersion }, state };
}

/** Handle parsed units in order; stops (returns) when the main thread has to decide. */
function drain(): void {
  while (backlog.length > 0 && stage !== 'config-wait' && stage !== 'end-wait' && stage !== 'failed' && stage !== 'done') {
    const unit = backlog.shift() as { type: number; payload: Uint8Array; offset: number };
    const { type, payload, offset } = unit;
    const body = offset + SECTION_HEADER_BYTES;
    const name = sectionTypeName(type);
    switch (type) {
      case SectionType.CONFIG:
        if (stage !== 'config') throw new MigrationStreamError(`a second CONFIG section`, offset);
        stage = 'config-wait';
        post({ type: 'config', config: decode(payload, body, 'config') });
        break;
      case SectionType.RAM:
        if (stage !== 'ram') throw new MigrationStreamError(`RAM section ${stage === 'config' ? 'before CONFIG' : 'after the device and CPU state'}`, offset);
        receiver.apply(payload, body);
        break;
      case SectionType.DEVICE:
      case SectionType.CPU:
      case SectionType.MACHINE: {
        if (stage !== 'ram' && stage !== 'states') throw new MigrationStreamError(`${name} section before CONFIG`, offset);
        stage = 'states';
        const section: StateSection =
          type === SectionType.DEVICE
            ? deviceSection(payload, body)
            : type === SectionType.CPU
              ? { kind: 'cpu', state: decode(payload, body, 'CPU state') }
              : { kind: 'machine', state: decode(payload, body, 'machine state') };
        post({ type: 'state', section });
        break;
      }
      case SectionType.END:
        if (stage !== 'states') throw new MigrationStreamError('END before the device and CPU state', offset);
        stage = 'end-wait';
        post({ type: 'end', bytes: bytesIn, ram: { ...receiver.counters } });
        break;
      case SectionType.COMMIT:
        if (stage !== 'commit-wait') throw new MigrationStreamError('COMMIT before the destination said LOADED', offset);
        stage = 'done';
        post({ type: 'commit' });
        socket?.end();
        break;
      default:
        throw new MigrationStreamError(`unknown section type ${name}`, offset);
    }
  }
  if (stage === 'config-wait' || stage === 'end-wait') pauseInput();
}

function onChunk(chunk: Buffer): void {
  if (stage === 'failed' || stage === 'done') return;
  bytesIn += chunk.length;
  try {
    parser.push(chunk);
    drain();
  } catch (err) {
    fail(err);
    return;
  }
  const now = performance.now();
  if (now - lastProgress >= 100) {
    lastProgress = now;
    post({ type: 'progress', bytes: bytesIn, ram: { ...receiver.counters } });
  }
}

function onInputEnd(): void {
  if (stage === 'failed' || stage === 'done') return;
  try {
    parser.finish();
  } catch (err) {
    fail(err);
    return;
  }
  if (file !== undefined && stage === 'commit-wait') {
    // A file has no COMMIT: it ending cleanly right after END, once loaded, is the go-ahead.
    stage = 'done';
    post({ type: 'commit' });
    return;
  }
  if (file !== undefined && stage === 'end-wait') return; // decided when the load verdict comes
  fail(new MigrationStreamError(stage === 'commit-wait' ? 'the source closed the connection before COMMIT' : 'the stream ended early', parser.position, { hint: 'the source stopped or the connection broke' }));
}

port.on('message', (cmd: DestinationCommand) => {
  if (cmd.type === 'cancel') {
    fail(new Error('the incoming migration was cancelled'));
    return;
  }
  try {
    if (cmd.type === 'config-verdict' && stage === 'config-wait') {
      if (!cmd.ok) {
        sendReply(ReplyType.REJECT, { problems: cmd.problems });
        fail(new Error(`refused: ${cmd.problems.join('; ')}`));
        return;
      }
      sendReply(ReplyType.ACCEPT, null);
      stage = 'ram';
    } else if (cmd.type === 'load-verdict' && stage === 'end-wait') {
      if (!cmd.ok) {
        fail(new Error(cmd.message));
        return;
      }
      stage = 'commit-wait';
      sendReply(ReplyType.LOADED, null);
      if (file !== undefined && file.readableEnded) {
        onInputEnd();
        return;
      }
    } else {
      return;
    }
    drain();
    if ((stage as Stage) !== 'config-wait' && (stage as Stage) !== 'end-wait') resumeInput();
  } catch (err) {
    fail(err);
  }
});

function attach(input: NodeJS.ReadableStream & { on(e: 'data', l: (c: Buffer) => void): unknown }): void {
  input.on('data', (c: Buffer) => onChunk(c));
  input.on('end', () => onInputEnd());
}

function listen(): void {
  const t = init.transport;
  if (t.kind === 'file') {
    const f = fs.createReadStream(t.path, { highWaterMark: 1024 * 1024 });
    file = f;
    f.on('error', (err: NodeJS.ErrnoException) => fail(new Error(`cannot read ${t.path}: ${err.code ?? err.message}`)));
    f.once('open', () => {
      post({ type: 'listening', address: `file:${t.path}` });
      post({ type: 'connected', peer: t.path });
    });
    attach(f);
    return;
  }
  const srv = net.createServer({ pauseOnConnect: false }, (s) => {
    if (socket !== undefined) {
      // One migration per incoming VM: a second connection is turned away.
      s.destroy();
      return;
    }
    socket = s;
    srv.close();
    s.setNoDelay(true);
    const peer = t.kind === 'tcp' ? `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}` : t.path;
    post({ type: 'connected', peer });
    s.on('error', (err) => fail(new Error(`the connection from the source broke: ${err.message}`)));
    s.on('close', () => {
      if (stage !== 'done') fail(new Error(`the source closed the connection ${stage === 'commit-wait' ? 'before COMMIT' : 'before the end of the stream'}`));
    });
    attach(s);
  });
  server = srv;
  srv.on('error', (err: NodeJS.ErrnoException) => fail(new Error(`cannot listen on ${t.kind === 'tcp' ? `${t.host}:${t.port}` : t.path}: ${err.code ?? err.message}`)));
  const onListening = (): void => {
    const a = srv.address();
    const address = t.kind === 'tcp' && a !== null && typeof a === 'object' ? `tcp:${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}` : `unix:${t.kind === 'unix' ? t.path : ''}`;
    post({ type: 'listening', address });
  };
  if (t.kind === 'tcp') srv.listen({ host: t.host, port: t.port, exclusive: true }, onListening);
  else srv.listen({ path: t.path, exclusive: true }, onListening);
}

try {
  receiver.prepare();
  listen();
} catch (err) {
  fail(err);
}
