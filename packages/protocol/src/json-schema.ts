/**
 * The whole protocol as one JSON Schema document (draft 2020-12), for clients
 * in other languages: `tsvmm protocol schema` prints it. Each message is an
 * entry under `messages` with its params (and result) schema; a deprecated
 * message carries `deprecated: true` and the reason (JSON Schema 2020-12
 * meta-data vocabulary), as do deprecated fields (zod `.meta({ deprecated })`).
 */
import { z } from 'zod';
import { errorCodeDocs, ErrorCodes, errorDataSchema } from './errors.js';
import { allMessages } from './messages.js';
import { PROTOCOL_VERSION } from './version.js';

type JsonSchema = Record<string, unknown>;

function toSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const out = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as JsonSchema;
  delete out['$schema'];
  return out;
}

export interface ProtocolSchemaDocument {
  $schema: string;
  title: string;
  protocolVersion: string;
  framing: string;
  messages: Record<string, JsonSchema>;
  errorCodes: Record<string, { code: number; doc: string }>;
  errorData: JsonSchema;
}

export function protocolJsonSchema(): ProtocolSchemaDocument {
  const messages: Record<string, JsonSchema> = {};
  for (const m of allMessages) {
    const entry: JsonSchema = {
      kind: m.kind,
      direction: m.direction,
      description: m.doc,
      since: m.since,
      // params as the sender writes them (defaults optional), result as the server sends it
      params: toSchema(m.params, 'input'),
    };
    if (m.result !== undefined) entry['result'] = toSchema(m.result, 'output');
    if (m.workDoneProgress) entry['workDoneProgress'] = true;
    if (m.cancellable) entry['cancellable'] = true;
    if (m.errors) entry['errors'] = m.errors;
    if (m.deprecated !== undefined) {
      entry['deprecated'] = true;
      entry['deprecationMessage'] = m.deprecated;
    }
    messages[m.method] = entry;
  }
  const errorCodes: Record<string, { code: number; doc: string }> = {};
  for (const [name, code] of Object.entries(ErrorCodes)) {
    errorCodes[name] = { code, doc: errorCodeDocs[name as keyof typeof ErrorCodes] };
  }
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'tsvmm control protocol',
    protocolVersion: PROTOCOL_VERSION,
    framing: 'JSON-RPC 2.0 messages framed as in the LSP base protocol: "Content-Length: N\\r\\n\\r\\n" then N bytes of UTF-8 JSON',
    messages,
    errorCodes,
    errorData: toSchema(errorDataSchema, 'output'),
  };
}
