/**
 * Renders docs/protocol.md from the message table. The file is generated;
 * a test fails when the committed copy is stale (`npm run docs:protocol`
 * regenerates it).
 */
import { errorCodeDocs, ErrorCodes } from './errors.js';
import { protocolJsonSchema } from './json-schema.js';
import { featureAreas } from './messages.js';
import { PROTOCOL_VERSION } from './version.js';

type JsonSchema = Record<string, unknown>;

function isObj(v: unknown): v is JsonSchema {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A short type expression for a schema: `string`, `"a" \| "b"`, `object`, `integer[]`... */
function typeOf(s: JsonSchema): string {
  if (s['const'] !== undefined) return JSON.stringify(s['const']);
  if (Array.isArray(s['enum'])) return s['enum'].map((e) => JSON.stringify(e)).join(' \\| ');
  const alts = (s['anyOf'] ?? s['oneOf']) as unknown;
  if (Array.isArray(alts)) return alts.filter(isObj).map(typeOf).join(' \\| ');
  const t = s['type'];
  if (t === 'array') return `${isObj(s['items']) ? typeOf(s['items']) : 'unknown'}[]`;
  if (typeof t === 'string') return t;
  if (Array.isArray(t)) return t.join(' \\| ');
  return 'any';
}

interface FieldRow {
  path: string;
  type: string;
  required: boolean;
  doc: string;
}

function fields(s: JsonSchema, prefix: string, depth: number, out: FieldRow[]): void {
  const props = s['properties'];
  if (!isObj(props)) return;
  const required = new Set(Array.isArray(s['required']) ? (s['required'] as string[]) : []);
  for (const [name, raw] of Object.entries(props)) {
    if (!isObj(raw)) continue;
    const path = prefix ? `${prefix}.${name}` : name;
    let doc = typeof raw['description'] === 'string' ? raw['description'] : '';
    if (raw['default'] !== undefined) doc += `${doc ? ' ' : ''}(default ${JSON.stringify(raw['default'])})`;
    if (raw['deprecated'] === true) doc = `**deprecated** ${doc}`;
    out.push({ path, type: typeOf(raw), required: required.has(name), doc });
    if (depth < 2) {
      if (raw['type'] === 'object') fields(raw, path, depth + 1, out);
      else if (raw['type'] === 'array' && isObj(raw['items']) && raw['items']['type'] === 'object') fields(raw['items'], `${path}[]`, depth + 1, out);
    }
  }
}

function table(s: JsonSchema): string {
  const rows: FieldRow[] = [];
  fields(s, '', 0, rows);
  if (rows.length === 0) return `${typeOf(s) === 'null' ? 'null' : `\`${typeOf(s)}\``}\n`;
  const esc = (t: string): string => t.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const lines = ['| field | type | required | description |', '|---|---|---|---|'];
  for (const r of rows) lines.push(`| \`${r.path}\` | ${r.type.replace(/(?<!\\)\|/g, '\\|')} | ${r.required ? 'yes' : ''} | ${esc(r.doc)} |`);
  return `${lines.join('\n')}\n`;
}

export function renderProtocolMarkdown(): string {
  const schema = protocolJsonSchema();
  const out: string[] = [];
  out.push('<!-- Generated from packages/protocol by `npm run docs:protocol`; do not edit by hand. -->');
  out.push('# tsvmm control protocol');
  out.push('');
  out.push(`Protocol version **${PROTOCOL_VERSION}**.`);
  out.push('');
  out.push(
    'JSON-RPC 2.0 framed exactly as the LSP base protocol: each message is `Content-Length: N\\r\\n\\r\\n` followed by N bytes of UTF-8 JSON (a `Content-Type` header is accepted and ignored). Transports: `tsvmm serve --stdio`, `--listen unix:PATH` (socket mode 0600), `--listen tcp:HOST:PORT` (127.0.0.1 unless told otherwise; requires `--auth-token-file`). The machine-readable form of this page is `tsvmm protocol schema` (JSON Schema 2020-12).',
  );
  out.push('');
  out.push('## Sessions');
  out.push('');
  out.push(
    '1. The client sends `initialize` with its `protocolVersion` (and `authToken` if the server has one), then `initialized`. Until `initialize` succeeds, requests get ServerNotInitialized (-32002).',
  );
  out.push('2. Requests in any order; the server pushes notifications (`vm/stateChanged`, `console/output`, ...) to every initialized client that asked for them.');
  out.push('3. `shutdown`, then `exit`.');
  out.push('');
  out.push(
    'Params are always one object (by name). They are validated against the schemas below; a mismatch gets InvalidParams (-32602) with the failing field path in `error.data.path`. Every error carries `error.data.causes`, the cause chain.',
  );
  out.push('');
  out.push('## Compatibility policy');
  out.push('');
  out.push(
    'The protocol version is semver. Additive changes (a new method, notification, optional field or error code) bump the minor version. A method or field that is going away is first marked `deprecated` in the schema — `deprecated: true` in `tsvmm protocol schema`, **deprecated** on this page — for at least one minor release, and is removed only in the next major version. A client checks that the server\'s major version equals its own; the server refuses an `initialize` whose major differs.',
  );
  out.push('');
  out.push('## Limits');
  out.push('');
  out.push(
    'A message body larger than the limit (default 16 MiB, `tsvmm serve --max-message-size`) is discarded without being buffered and answered with InvalidRequest (id null); the connection stays usable. A frame with no Content-Length cannot be resynchronised: it gets ParseError (id null) and the connection is closed. Invalid JSON gets ParseError and the connection stays usable.',
  );
  out.push('');
  for (const area of featureAreas) {
    out.push(`## ${area.name}`);
    out.push('');
    out.push(area.doc);
    out.push('');
    for (const m of area.messages) {
      const entry = schema.messages[m.method] as JsonSchema;
      out.push(`### \`${m.method}\``);
      out.push('');
      const flags = [
        m.kind === 'request' ? 'request' : 'notification',
        m.direction === 'clientToServer' ? 'client → server' : 'server → client',
        `since ${m.since}`,
      ];
      if (m.workDoneProgress) flags.push('work-done progress');
      if (m.cancellable) flags.push('cancellable');
      out.push(`*${flags.join(' · ')}*`);
      out.push('');
      if (m.deprecated !== undefined) {
        out.push(`**Deprecated:** ${m.deprecated}`);
        out.push('');
      }
      out.push(m.doc);
      out.push('');
      out.push('**Params**');
      out.push('');
      out.push(table(entry['params'] as JsonSchema));
      if (entry['result'] !== undefined) {
        out.push('**Result**');
        out.push('');
        out.push(table(entry['result'] as JsonSchema));
      }
      if (m.errors && m.errors.length) {
        out.push(`**Errors:** ${m.errors.map((e) => `${e} (${ErrorCodes[e as keyof typeof ErrorCodes]})`).join(', ')}`);
        out.push('');
      }
    }
  }
  out.push('## Error codes');
  out.push('');
  out.push('| name | code | meaning |');
  out.push('|---|---|---|');
  for (const [name, code] of Object.entries(ErrorCodes)) {
    out.push(`| ${name} | ${code} | ${errorCodeDocs[name as keyof typeof ErrorCodes].replace(/\|/g, '\\|')} |`);
  }
  out.push('');
  out.push('Every error\'s `data`:');
  out.push('');
  out.push(table(schema.errorData));
  return out.join('\n');
}
