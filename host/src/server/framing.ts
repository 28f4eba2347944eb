/**
 * The LSP base protocol framing ("Base Protocol" → "Header Part" /
 * "Content Part"): `Content-Length: N\r\n` (plus an optional Content-Type)
 * then `\r\n`, then N bytes of UTF-8 JSON-RPC.
 *
 * vscode-jsonrpc's own reader has no size limit and drops malformed input
 * silently; a server facing untrusted clients needs both, so this reader:
 * - discards a body over `maxMessageBytes` as it streams past (never buffers
 *   it) and reports InvalidRequest — the frame boundary is known, so the
 *   connection keeps working;
 * - reports invalid UTF-8 / JSON as ParseError and a JSON value that is not a
 *   JSON-RPC 2.0 message as InvalidRequest (with the request's id when it has
 *   one), and carries on with the next frame;
 * - treats a header block without a usable Content-Length (or one that never
 *   ends) as fatal: without a length the next frame cannot be found.
 */
import type { Readable, Writable } from 'node:stream';
import {
  AbstractMessageReader,
  AbstractMessageWriter,
  type DataCallback,
  type Disposable,
  type Message,
  type MessageReader,
  type MessageWriter,
} from 'vscode-jsonrpc';
import { ErrorCodes } from '@tsvmm/protocol';

export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
/** Headers are a few dozen bytes; anything longer is not a client speaking the protocol. */
const MAX_HEADER_BYTES = 8 * 1024;
const CRLFCRLF = Buffer.from('\r\n\r\n', 'ascii');
/** fatal: invalid UTF-8 is a ParseError rather than silently replaced */
const utf8 = new TextDecoder('utf-8', { fatal: true });

export interface FrameError {
  code: number;
  message: string;
  /** the id of the offending request, when it could be read; null otherwise */
  id: number | string | null;
  /** true when the stream cannot be resynchronised and the connection must close */
  fatal: boolean;
}

export interface LspReaderOptions {
  maxMessageBytes?: number;
  onFrameError: (error: FrameError) => void;
}

type JsonRpcId = number | string;

function isId(v: unknown): v is JsonRpcId {
  return (typeof v === 'number' && Number.isFinite(v)) || typeof v === 'string';
}

/** Check the JSON-RPC 2.0 message shape (§4 Request object, §5 Response object). Returns an error text or undefined. */
export function checkMessageShape(value: unknown): string | undefined {
  if (Array.isArray(value)) return 'batch requests are not supported (the LSP base protocol has none)';
  if (typeof value !== 'object' || value === null) return 'a JSON-RPC message must be a JSON object';
  const m = value as Record<string, unknown>;
  if (m['jsonrpc'] !== '2.0') return 'the "jsonrpc" member must be exactly "2.0"';
  if ('method' in m) {
    if (typeof m['method'] !== 'string' || m['method'] === '') return 'the "method" member must be a non-empty string';
    if ('id' in m && !isId(m['id'])) return 'the "id" member must be a number or a string';
    const p = m['params'];
    if (p !== undefined && (typeof p !== 'object' || p === null)) return 'the "params" member must be an object or an array';
    return undefined;
  }
  if ('id' in m && ('result' in m || 'error' in m)) return undefined;
  return 'the message is neither a request, a notification nor a response';
}

export class LspMessageReader extends AbstractMessageReader implements MessageReader {
  private readonly max: number;
  private header: Buffer[] = [];
  private headerBytes = 0;
  /** body being collected */
  private body: Buffer[] = [];
  private bodyBytes = 0;
  /** length of the current body; -1 while reading headers */
  private expected = -1;
  /** bytes of an oversized body still to discard */
  private skipping = 0;
  private dead = false;
  private callback: DataCallback | undefined;

  constructor(
    private readonly readable: Readable,
    private readonly opts: LspReaderOptions,
  ) {
    super();
    this.max = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  }

  listen(callback: DataCallback): Disposable {
    this.callback = callback;
    const onData = (chunk: Buffer): void => this.onData(chunk);
    const onClose = (): void => this.fireClose();
    const onError = (err: Error): void => this.fireError(err);
    this.readable.on('data', onData);
    this.readable.on('end', onClose);
    this.readable.on('close', onClose);
    this.readable.on('error', onError);
    return {
      dispose: () => {
        this.readable.off('data', onData);
        this.readable.off('end', onClose);
        this.readable.off('close', onClose);
        this.readable.off('error', onError);
        this.callback = undefined;
      },
    };
  }

  private onData(chunk: Buffer): void {
    let buf = chunk;
    while (buf.length > 0 && !this.dead) {
      if (this.skipping > 0) {
        const n = Math.min(this.skipping, buf.length);
        this.skipping -= n;
        buf = buf.subarray(n);
        continue;
      }
      if (this.expected < 0) buf = this.readHeader(buf);
      else buf = this.readBody(buf);
    }
  }

  /** Consume header bytes; returns what is left after the header block (or nothing if incomplete). */
  private readHeader(buf: Buffer): Buffer {
    this.header.push(buf);
    this.headerBytes += buf.length;
    const all = this.header.length === 1 ? buf : Buffer.concat(this.header);
    const end = all.indexOf(CRLFCRLF);
    if (end < 0) {
      this.header = [all];
      if (this.headerBytes > MAX_HEADER_BYTES) this.fatal(`no end of header found in the first ${MAX_HEADER_BYTES} bytes`);
      return Buffer.alloc(0);
    }
    const text = all.subarray(0, end).toString('latin1');
    const rest = all.subarray(end + CRLFCRLF.length);
    this.header = [];
    this.headerBytes = 0;
    let length: number | undefined;
    for (const line of text.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon <= 0) {
        this.fatal(`malformed header line ${JSON.stringify(line.slice(0, 80))}`);
        return Buffer.alloc(0);
      }
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') {
        if (!/^\d{1,15}$/.test(value)) {
          this.fatal(`Content-Length ${JSON.stringify(value.slice(0, 40))} is not a byte count`);
          return Buffer.alloc(0);
        }
        length = Number(value);
      }
    }
    if (length === undefined) {
      this.fatal('the header has no Content-Length');
      return Buffer.alloc(0);
    }
    if (length > this.max) {
      this.skipping = length;
      this.opts.onFrameError({
        code: ErrorCodes.InvalidRequest,
        message: `message body of ${length} bytes exceeds the limit of ${this.max} bytes`,
        id: null,
        fatal: false,
      });
      return rest;
    }
    this.expected = length;
    return rest;
  }

  private readBody(buf: Buffer): Buffer {
    const need = this.expected - this.bodyBytes;
    const take = buf.subarray(0, need);
    this.body.push(take);
    this.bodyBytes += take.length;
    if (this.bodyBytes < this.expected) return Buffer.alloc(0);
    const body = this.body.length === 1 ? (this.body[0] as Buffer) : Buffer.concat(this.body);
    this.body = [];
    this.bodyBytes = 0;
    this.expected = -1;
    this.deliver(body);
    return buf.subarray(need);
  }

  private deliver(body: Buffer): void {
    let text: string;
    try {
      text = utf8.decode(body);
    } catch {
      this.opts.onFrameError({ code: ErrorCodes.ParseError, message: 'the message body is not valid UTF-8', id: null, fatal: false });
      return;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      this.opts.onFrameError({
        code: ErrorCodes.ParseError,
        message: `the message body is not valid JSON: ${err instanceof Error ? err.message : String(err)}`,
        id: null,
        fatal: false,
      });
      return;
    }
    const problem = checkMessageShape(value);
    if (problem !== undefined) {
      const rawId = typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>)['id'] : undefined;
      this.opts.onFrameError({ code: ErrorCodes.InvalidRequest, message: `invalid request: ${problem}`, id: isId(rawId) ? rawId : null, fatal: false });
      return;
    }
    this.callback?.(value as Message);
  }

  private fatal(message: string): void {
    this.dead = true;
    this.header = [];
    this.opts.onFrameError({ code: ErrorCodes.ParseError, message: `framing error: ${message}; closing the connection`, id: null, fatal: true });
  }
}

/**
 * The writing half of the framing: header and body go out in one write, so a
 * message costs one system call (vscode-jsonrpc's stream writer issues two).
 * Writes are synchronous calls on the stream, so messages keep their order.
 */
export class LspMessageWriter extends AbstractMessageWriter implements MessageWriter {
  private errorCount = 0;

  constructor(private readonly output: Writable) {
    super();
    output.on('error', (err: Error) => this.fireError(err));
    output.on('close', () => this.fireClose());
  }

  write(msg: Message): Promise<void> {
    const body = Buffer.from(JSON.stringify(msg), 'utf8');
    const header = `Content-Length: ${body.length}\r\n\r\n`;
    const frame = Buffer.allocUnsafe(header.length + body.length);
    frame.write(header, 0, 'ascii');
    body.copy(frame, header.length);
    return new Promise((resolve, reject) => {
      this.output.write(frame, (err) => {
        if (err) {
          this.errorCount++;
          this.fireError(err, msg, this.errorCount);
          reject(err);
        } else {
          this.errorCount = 0;
          resolve();
        }
      });
    });
  }

  end(): void {
    this.output.end();
  }
}
