/**
 * `tsvmm serve`: the control server. `--stdio` serves one client on
 * stdin/stdout (editor integrations); `--listen unix:PATH` and
 * `--listen tcp:HOST:PORT` serve many. See docs/protocol.md and docs/security.md.
 */
import * as fs from 'node:fs';
import { Command, Option } from 'commander';
import { ConfigError, errorCauses, EXIT_VMM_ERROR, parseSize } from '@tsvmm/core';
import { ControlServer } from './control-server.js';
import { isLoopback, listen, parseListenAddress, serveStdio } from './transports.js';
import { DEFAULT_MAX_MESSAGE_BYTES } from './framing.js';

interface ServeOptions {
  stdio?: boolean;
  listen: string[];
  authTokenFile?: string;
  maxMessageSize?: string;
  pidFile?: string;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}

/** Read the auth token: the file's content without surrounding whitespace; refuse an empty one. */
export function readAuthToken(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read auth token file '${file}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const token = text.trim();
  if (token.length < 16) throw new ConfigError(`auth token file '${file}' holds ${token.length} characters; use at least 16 random ones`, {
    hint: 'e.g. head -c 32 /dev/urandom | base64 > FILE',
  });
  return token;
}

export async function serve(o: ServeOptions): Promise<number> {
  if (!o.stdio && o.listen.length === 0) throw new ConfigError('nothing to serve on', { hint: 'pass --stdio or --listen unix:PATH | tcp:HOST:PORT' });
  if (o.stdio && o.listen.length > 0) throw new ConfigError('--stdio and --listen cannot be combined');
  const addrs = o.listen.map(parseListenAddress);
  const authToken = o.authTokenFile !== undefined ? readAuthToken(o.authTokenFile) : undefined;
  const tcp = addrs.filter((a) => a.kind === 'tcp');
  if (tcp.length > 0 && authToken === undefined) {
    throw new ConfigError('TCP needs an auth token: any local user (or, off loopback, anyone) could connect', {
      hint: 'pass --auth-token-file FILE, or use --listen unix:PATH',
    });
  }
  let maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES;
  if (o.maxMessageSize !== undefined) {
    const n = parseSize(o.maxMessageSize);
    if (n === undefined || n < 1024) throw new ConfigError(`--max-message-size '${o.maxMessageSize}' is not a size of at least 1k`);
    maxMessageBytes = n;
  }

  return new Promise<number>((resolve, reject) => {
    let finished = false;
    const finish = (status: number): void => {
      if (finished) return;
      finished = true;
      void server.close().finally(() => {
        for (const s of listeners) s.close();
        for (const a of addrs) if (a.kind === 'unix') fs.rmSync(a.path, { force: true });
        if (o.pidFile !== undefined) fs.rmSync(o.pidFile, { force: true });
        resolve(status);
      });
    };
    const server = new ControlServer({
      ...(authToken !== undefined ? { authToken } : {}),
      maxMessageBytes,
      logLevel: o.logLevel,
      onExit: (status) => finish(status),
    });
    const listeners: import('node:net').Server[] = [];
    const onSignal = (sig: NodeJS.Signals): void => {
      server.log('info', `terminating on ${sig}`);
      finish(0);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    if (o.stdio) {
      serveStdio(server, process.stdin, process.stdout);
      // LSP: a client that goes away without `exit` ends the server with status 1.
      process.stdin.once('end', () => finish(1));
      return;
    }
    void (async () => {
      // Written before listening, so whoever waits for the socket can already signal the server.
      if (o.pidFile !== undefined) fs.writeFileSync(o.pidFile, `${process.pid}\n`);
      for (const a of addrs) {
        listeners.push(await listen(server, a));
        const where = a.kind === 'unix' ? `unix:${a.path}` : `tcp:${a.host}:${a.port}`;
        if (a.kind === 'tcp' && !isLoopback(a.host)) server.log('warn', `listening on ${where}, reachable from other hosts: traffic is not encrypted`);
        // One line on stderr says the server is ready (scripts wait for it).
        process.stderr.write(`tsvmm serve: listening on ${where}\n`);
      }
    })().catch((err: unknown) => {
      finished = true;
      void server.close();
      reject(err instanceof Error ? err : new Error(errorCauses(err).join(': ')));
    });
  });
}

export function serveCommand(setStatus: (status: number) => void): Command {
  return new Command('serve')
    .description('run the JSON-RPC control server (LSP framing) on stdio, a unix socket or TCP')
    .option('--stdio', 'serve one client on stdin/stdout')
    .option('--listen <address>', 'unix:PATH or tcp:HOST:PORT (HOST defaults to 127.0.0.1); repeatable', (v: string, prev: string[]) => [...prev, v], [])
    .option('--auth-token-file <file>', 'require the token in this file from every client (mandatory for TCP)')
    .option('--max-message-size <size>', 'largest message body accepted, e.g. 16M (default)')
    .option('--pid-file <file>', 'write the server process id here (removed on exit)')
    .addOption(new Option('--log-level <level>', 'server log level on stderr').choices(['debug', 'info', 'warn', 'error']).default('warn'))
    .action(async (opts: ServeOptions) => {
      try {
        setStatus(await serve(opts));
      } catch (err) {
        process.stderr.write(`tsvmm: ${errorCauses(err).join(': ')}\n`);
        setStatus(EXIT_VMM_ERROR);
      }
    });
}
