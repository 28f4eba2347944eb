/**
 * The reference for bench/rpc: a bare vscode-jsonrpc server whose one method
 * (`echo`) returns its params, over stdio, a unix socket or TCP. What tsvmm
 * adds on top of this — framing checks, lifecycle, schema validation, the hop
 * to the VM process — is what the benchmark measures.
 *
 *   node echo-server.js --stdio | --unix PATH | --tcp PORT  [--reply FILE]
 *
 * With --reply, `echo` answers with the JSON in FILE instead of its params,
 * so the reference sends responses exactly as large as tsvmm's vm/status.
 */
import * as net from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node.js';

import * as fs from 'node:fs';

const replyAt = process.argv.indexOf('--reply');
const replyFile = replyAt > 0 ? process.argv[replyAt + 1] : undefined;
const reply: unknown = replyFile !== undefined ? JSON.parse(fs.readFileSync(replyFile, 'utf8')) : undefined;

function serve(input: Readable, output: Writable): void {
  const conn = createMessageConnection(new StreamMessageReader(input), new StreamMessageWriter(output));
  conn.onRequest('initialize', () => ({ capabilities: {} }));
  conn.onRequest('echo', (params: unknown) => reply ?? params);
  conn.onRequest('shutdown', () => null);
  conn.onNotification('exit', () => conn.dispose());
  conn.onClose(() => conn.dispose());
  conn.listen();
}

const argv = process.argv.slice(2);
const modeAt = argv.findIndex((a) => a === '--stdio' || a === '--unix' || a === '--tcp');
const mode = argv[modeAt];
const arg = argv[modeAt + 1];
if (mode === '--stdio') {
  serve(process.stdin, process.stdout);
  process.stdin.on('end', () => process.exit(0));
} else {
  const srv = net.createServer((s) => {
    s.setNoDelay(true);
    s.on('error', () => s.destroy());
    serve(s, s);
  });
  const ready = (): void => {
    process.stderr.write('listening\n');
  };
  if (mode === '--unix' && arg !== undefined) srv.listen(arg, ready);
  else if (mode === '--tcp' && arg !== undefined) srv.listen(Number(arg), '127.0.0.1', ready);
  else {
    process.stderr.write('usage: echo-server --stdio | --unix PATH | --tcp PORT\n');
    process.exit(2);
  }
  process.on('SIGTERM', () => process.exit(0));
}
