/**
 * Where the control server listens: stdio (one client, e.g. an editor),
 * a unix socket (created with mode 0600, so only the owner connects) or TCP
 * (127.0.0.1 unless told otherwise, and never without an auth token).
 * docs/security.md explains the threat model behind these defaults.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { ConfigError } from '@tsvmm/core';
import type { ControlServer } from './control-server.js';

export type ListenAddress = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** `unix:PATH`, `tcp:HOST:PORT`, `tcp:PORT` (127.0.0.1), `tcp:[::1]:PORT`. */
export function parseListenAddress(text: string): ListenAddress {
  if (text.startsWith('unix:') && text.length > 5) return { kind: 'unix', path: text.slice(5) };
  if (text.startsWith('tcp:')) {
    const rest = text.slice(4);
    const m = /^(?:(\[[^\]]+\]|[^:]+):)?(\d{1,5})$/.exec(rest);
    if (m !== null) {
      const port = Number(m[2]);
      if (port <= 65535) return { kind: 'tcp', host: (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port };
    }
  }
  throw new ConfigError(`cannot parse address '${text}'`, { hint: 'use unix:PATH or tcp:HOST:PORT (e.g. tcp:127.0.0.1:7070)' });
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

export function serveStdio(server: ControlServer, input: NodeJS.ReadableStream & import('node:stream').Readable, output: import('node:stream').Writable): void {
  server.accept({ kind: 'stdio', peer: 'stdio', input, output, close: () => output.end() });
}

function acceptSocket(server: ControlServer, kind: 'unix' | 'tcp', socket: net.Socket): void {
  socket.setNoDelay?.(true);
  const peer = kind === 'tcp' ? `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}` : 'unix socket';
  // Errors (ECONNRESET...) end this connection only.
  socket.on('error', () => socket.destroy());
  server.accept({ kind, peer, input: socket, output: socket, close: () => socket.end(() => socket.destroy()) });
}

/** Listen on a unix socket or TCP port. Resolves once listening. */
export async function listen(server: ControlServer, addr: ListenAddress): Promise<net.Server> {
  const kind = addr.kind;
  const srv = net.createServer((socket) => acceptSocket(server, kind, socket));
  srv.maxConnections = 1024;
  if (addr.kind === 'unix') {
    await removeStaleSocket(addr.path);
    // The socket file is created by bind() inside listen(); the umask makes it 0600 from the start,
    // so there is no window in which another user could connect. chmod afterwards for certainty.
    const old = process.umask(0o177);
    try {
      await listenOn(srv, addr.path);
    } finally {
      process.umask(old);
    }
    fs.chmodSync(addr.path, 0o600);
  } else {
    await listenOn(srv, addr.port, addr.host);
  }
  return srv;
}

function listenOn(srv: net.Server, ...args: [string] | [number, string]): Promise<void> {
  return new Promise((resolve, reject) => {
    srv.once('error', reject);
    const done = (): void => {
      srv.off('error', reject);
      resolve();
    };
    if (args.length === 1) srv.listen(args[0], done);
    else srv.listen(args[0], args[1], done);
  });
}

/** A socket file left by a server that died is removed; a live one (someone answers) is an error. */
async function removeStaleSocket(p: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    // nothing there to remove (or nothing we may look at, which listen() then reports naming the path)
    return;
  }
  if (!st.isSocket()) throw new ConfigError(`'${p}' exists and is not a socket`, { hint: 'choose another path' });
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect({ path: p }, () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new ConfigError(`another server is already listening on '${p}'`, { hint: 'stop it or choose another path' });
  fs.unlinkSync(p);
}
