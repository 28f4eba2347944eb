/**
 * One client connection (LSP 3.17 "Lifecycle Messages"): before `initialize`
 * every request gets ServerNotInitialized; after `shutdown` every request gets
 * InvalidRequest; `exit` closes the connection. Requests are dispatched
 * through the protocol's message table, with params validated against its
 * schemas; a client that misbehaves only ever affects its own connection.
 */
import type { Readable, Writable } from 'node:stream';
import { ErrorCodes, serverRequests, type ErrorData, type WorkDoneProgressValue } from '@tsvmm/protocol';
import {
  ProgressType,
  ResponseError,
  type CancellationToken,
  type Logger,
  type MessageConnection,
} from 'vscode-jsonrpc';
import { createMessageConnection } from 'vscode-jsonrpc/node.js';
import type { z } from 'zod';
import { ProtocolError, toResponseError } from './errors.js';
import { LspMessageReader, LspMessageWriter, type FrameError } from './framing.js';

export type SessionState = 'uninitialized' | 'initialized' | 'shutdown' | 'closed';

export interface Transport {
  kind: 'stdio' | 'unix' | 'tcp';
  peer: string;
  input: Readable;
  output: Writable;
  /** end the connection (for stdio: nothing to close but the streams) */
  close(): void;
}

export interface RequestContext {
  session: ClientSession;
  token: CancellationToken;
  /** report work-done progress, when the request carried a workDoneToken */
  progress(value: WorkDoneProgressValue): void;
}

export interface SessionHost {
  maxMessageBytes: number;
  /** output bytes queued for a client beyond which console output to it is dropped */
  outputHighWater: number;
  handle(method: string, params: unknown, ctx: RequestContext): Promise<unknown>;
  sessionClosed(session: ClientSession): void;
  sessionExited(session: ClientSession, status: number): void;
  log(level: 'debug' | 'info' | 'warn' | 'error', message: string): void;
}

const workDoneProgress = new ProgressType<WorkDoneProgressValue>();

/** Where in the params zod found the first problem, as a dotted path (`description.smp.cpus`, `devices.0.driver`). */
function issuePath(path: readonly PropertyKey[]): string {
  return path.map(String).join('.');
}

export class ClientSession {
  state: SessionState = 'uninitialized';
  readonly id: number;
  /** notifications the client asked for; undefined = all */
  wants: Set<string> | undefined;
  logLevel = 3;
  clientName: string | undefined;
  private readonly conn: MessageConnection;
  private droppedConsoleBytes = 0;
  private static nextId = 1;

  constructor(
    private readonly host: SessionHost,
    readonly transport: Transport,
  ) {
    this.id = ClientSession.nextId++;
    const reader = new LspMessageReader(transport.input, {
      maxMessageBytes: host.maxMessageBytes,
      onFrameError: (e) => this.onFrameError(e),
    });
    const writer = new LspMessageWriter(transport.output);
    const logger: Logger = {
      error: (m) => host.log('debug', `client ${this.id}: ${m}`),
      warn: (m) => host.log('debug', `client ${this.id}: ${m}`),
      info: () => undefined,
      log: () => undefined,
    };
    this.conn = createMessageConnection(reader, writer, logger);
    this.conn.onRequest((method, params, token) => this.dispatch(method, params, token));
    this.conn.onNotification('initialized', () => undefined);
    this.conn.onNotification('exit', () => this.exit());
    // Other notifications ($/setTrace, unknown ones) are ignored, as LSP allows for `$/` methods.
    this.conn.onNotification(() => undefined);
    this.conn.onClose(() => this.closed());
    this.conn.onError(() => undefined);
    transport.output.on('error', () => this.close());
    this.conn.listen();
  }

  get initialized(): boolean {
    return this.state === 'initialized';
  }

  private onFrameError(e: FrameError): void {
    this.host.log('debug', `client ${this.id} (${this.transport.peer}): ${e.message}`);
    const data: ErrorData = { causes: [e.message] };
    const write = this.writeRaw({ jsonrpc: '2.0', id: e.id, error: { code: e.code, message: e.message, data } });
    if (e.fatal) void write.finally(() => this.close());
  }

  private writeRaw(message: object): Promise<void> {
    return new Promise((resolve) => {
      try {
        const json = JSON.stringify(message);
        this.transport.output.write(`Content-Length: ${Buffer.byteLength(json, 'utf8')}\r\n\r\n${json}`, () => resolve());
      } catch (err) {
        // the transport is gone: there is no one left to send the error to
        this.host.log('debug', `client ${this.id} (${this.transport.peer}): the error reply could not be written: ${err instanceof Error ? err.message : String(err)}`);
        resolve();
      }
    });
  }

  private async dispatch(method: string, rawParams: unknown, token: CancellationToken): Promise<unknown> {
    try {
      if (this.state === 'uninitialized' && method !== 'initialize') {
        throw new ResponseError(ErrorCodes.ServerNotInitialized, `'${method}' before 'initialize': send initialize first`, {
          causes: ['the server is not initialized'],
        });
      }
      if (this.state === 'shutdown') {
        throw new ResponseError(ErrorCodes.InvalidRequest, `'${method}' after 'shutdown': only 'exit' is accepted now`, {
          causes: ['the session is shut down'],
        });
      }
      const def = serverRequests.get(method);
      if (def === undefined) {
        throw new ResponseError(ErrorCodes.MethodNotFound, `unknown method '${method}'`, { causes: [`unknown method '${method}'`], method });
      }
      const params = this.validate(method, def.params, rawParams);
      const ctx: RequestContext = {
        session: this,
        token,
        progress: (value) => {
          const t = (params as { workDoneToken?: unknown } | undefined)?.workDoneToken;
          // as notify(): progress for a client that went away has no one to reach
          if (typeof t === 'string' || typeof t === 'number') void this.conn.sendProgress(workDoneProgress, t, value).catch(() => undefined);
        },
      };
      const result = await this.host.handle(method, params, ctx);
      return result === undefined ? null : result;
    } catch (err) {
      const rerr = toResponseError(err);
      if (rerr.code === ErrorCodes.InternalError) this.host.log('error', `${method}: ${rerr.message}`);
      throw rerr;
    }
  }

  private validate(method: string, schema: z.ZodType, raw: unknown): unknown {
    if (Array.isArray(raw)) {
      throw new ResponseError(ErrorCodes.InvalidParams, `${method}: params must be an object (by name), not an array`, {
        causes: ['params given by position'],
        path: '',
      });
    }
    const r = schema.safeParse(raw);
    if (r.success) return r.data;
    const issues = r.error.issues.map((i) => {
      const path = issuePath(i.path);
      const message = i.code === 'unrecognized_keys' ? `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => `'${k}'`).join(', ')}` : i.message;
      return { path: i.code === 'unrecognized_keys' && i.keys.length === 1 ? [path, i.keys[0]].filter((p) => p !== '').join('.') : path, message };
    });
    const first = issues[0] ?? { path: '', message: 'invalid' };
    const where = first.path === '' ? 'params' : `params.${first.path}`;
    throw new ResponseError<ErrorData>(ErrorCodes.InvalidParams, `${method}: ${where}: ${first.message}`, {
      causes: issues.map((i) => `${i.path === '' ? 'params' : `params.${i.path}`}: ${i.message}`),
      path: first.path,
      issues,
    });
  }

  /** Send a notification if the client is initialized and asked for it. */
  notify(method: string, params: object): void {
    if (this.state !== 'initialized' && this.state !== 'shutdown') return;
    if (this.wants !== undefined && !this.wants.has(method)) return;
    if (method === 'console/output') {
      // A client that does not read must not make the server buffer without bound.
      if (this.transport.output.writableLength > this.host.outputHighWater) {
        const data = (params as { data?: unknown }).data;
        this.droppedConsoleBytes += typeof data === 'string' ? Math.floor((data.length * 3) / 4) : 0;
        return;
      }
      if (this.droppedConsoleBytes > 0) {
        params = { ...params, dropped: this.droppedConsoleBytes };
        this.droppedConsoleBytes = 0;
      }
    }
    // A client that went away cannot be told; its session closes through conn.onClose.
    void this.conn.sendNotification(method, params).catch(() => undefined);
  }

  markInitialized(wants: string[] | undefined, logLevel: number, clientName: string | undefined): void {
    this.state = 'initialized';
    this.wants = wants === undefined ? undefined : new Set(wants);
    this.logLevel = logLevel;
    this.clientName = clientName;
  }

  markShutdown(): void {
    this.state = 'shutdown';
  }

  /** Close after the pending response has been written (used after a refused initialize). */
  closeSoon(): void {
    setTimeout(() => this.close(), 50).unref();
  }

  private exit(): void {
    const status = this.state === 'shutdown' ? 0 : 1;
    this.host.sessionExited(this, status);
    this.close();
  }

  close(): void {
    if (this.state === 'closed') return;
    this.transport.close();
    this.closed();
  }

  private closed(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.conn.dispose();
    this.host.sessionClosed(this);
  }
}

export { ProtocolError };
