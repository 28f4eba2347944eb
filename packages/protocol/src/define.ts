/**
 * How a protocol message is defined: one object per request or notification
 * carrying its vscode-jsonrpc type (so TypeScript servers and clients share
 * the method name and the param/result types, as vscode-languageserver-protocol
 * does), its zod schemas (the server validates against them; JSON Schema and
 * docs/protocol.md are generated from them) and its documentation.
 */
import { NotificationType, NotificationType0, ParameterStructures, RequestType, RequestType0 } from 'vscode-jsonrpc';
import { z } from 'zod';
import type { ErrorData } from './errors.js';

/** Who sends the message (LSP's "direction"). */
export type MessageDirection = 'clientToServer' | 'serverToClient';

export interface MessageDocs {
  /** one or more sentences; the first is the summary */
  doc: string;
  /** the protocol version that introduced the message */
  since: string;
  /** set when the message is going away: say what replaces it */
  deprecated?: string;
  /** requests that accept a `workDoneToken` and report `$/progress` */
  workDoneProgress?: boolean;
  /** requests that honour `$/cancelRequest` while they run */
  cancellable?: boolean;
  /** the application error codes the request can answer with (by name) */
  errors?: string[];
}

/** Params schema of messages that take none (LSP `shutdown`, `exit`): absent or null. */
export const noParams = z.union([z.null(), z.undefined()]).describe('none');
export type NoParams = typeof noParams;

export interface RequestDefinition<P extends z.ZodType, R extends z.ZodType> extends MessageDocs {
  readonly kind: 'request';
  readonly method: string;
  readonly direction: MessageDirection;
  readonly params: P;
  readonly result: R;
  readonly type: RequestType<z.output<P>, z.output<R>, ErrorData>;
}

export interface Request0Definition<R extends z.ZodType> extends MessageDocs {
  readonly kind: 'request';
  readonly method: string;
  readonly direction: MessageDirection;
  readonly params: NoParams;
  readonly result: R;
  readonly type: RequestType0<z.output<R>, ErrorData>;
}

export interface NotificationDefinition<P extends z.ZodType> extends MessageDocs {
  readonly kind: 'notification';
  readonly method: string;
  readonly direction: MessageDirection;
  readonly params: P;
  readonly type: NotificationType<z.output<P>>;
}

export interface Notification0Definition extends MessageDocs {
  readonly kind: 'notification';
  readonly method: string;
  readonly direction: MessageDirection;
  readonly params: NoParams;
  readonly type: NotificationType0;
}

/** Any message definition, with the schema types erased (for tables, docs, validation). */
export interface AnyMessageDefinition extends MessageDocs {
  readonly kind: 'request' | 'notification';
  readonly method: string;
  readonly direction: MessageDirection;
  readonly params: z.ZodType;
  readonly result?: z.ZodType;
}

export function defineRequest<P extends z.ZodType, R extends z.ZodType>(
  method: string,
  def: { direction?: MessageDirection; params: P; result: R } & MessageDocs,
): RequestDefinition<P, R> {
  return {
    ...def,
    kind: 'request',
    method,
    direction: def.direction ?? 'clientToServer',
    // tsvmm params are always one object, never positional (JSON-RPC 2.0 §4.2, by-name)
    type: new RequestType<z.output<P>, z.output<R>, ErrorData>(method, ParameterStructures.byName),
  };
}

export function defineRequest0<R extends z.ZodType>(
  method: string,
  def: { direction?: MessageDirection; result: R } & MessageDocs,
): Request0Definition<R> {
  return {
    ...def,
    kind: 'request',
    method,
    direction: def.direction ?? 'clientToServer',
    params: noParams,
    type: new RequestType0<z.output<R>, ErrorData>(method),
  };
}

export function defineNotification<P extends z.ZodType>(
  method: string,
  def: { direction?: MessageDirection; params: P } & MessageDocs,
): NotificationDefinition<P> {
  return {
    ...def,
    kind: 'notification',
    method,
    direction: def.direction ?? 'serverToClient',
    type: new NotificationType<z.output<P>>(method, ParameterStructures.byName),
  };
}

export function defineNotification0(method: string, def: { direction?: MessageDirection } & MessageDocs): Notification0Definition {
  return {
    ...def,
    kind: 'notification',
    method,
    direction: def.direction ?? 'serverToClient',
    params: noParams,
    type: new NotificationType0(method),
  };
}
