/**
 * `tsvmm nbd serve IMAGE`: export an image over NBD with qemu-nbd's flags
 * where they overlap (-f, -p/--port, -b/--bind, -k/--socket, -r/--read-only,
 * -x/--export-name, -e/--shared, -D/--description, -t/--persistent).
 *
 * Unlike qemu-nbd, which exits when its last client leaves unless
 * --persistent is given, the server runs until SIGINT/SIGTERM (or the
 * caller's AbortSignal): -t is accepted and changes nothing.
 */
import { Command, CommanderError } from 'commander';
import type { BlockDriverRegistry } from '../registry.js';
import { parseOptionList } from '../size.js';
import { NbdServer } from './server.js';

export interface NbdOutput {
  write(s: string): unknown;
}

export interface NbdIo {
  stdout: NbdOutput;
  stderr: NbdOutput;
  /** block drivers (the host fills it from the block-driver plugins) */
  registry?: BlockDriverRegistry;
  /** stops the server; default: SIGINT and SIGTERM */
  signal?: AbortSignal;
  /** called once the server listens (tests use it to learn the port) */
  onListening?: (server: NbdServer) => void;
}

interface ServeFlags {
  f?: string;
  port?: string;
  bind?: string;
  socket?: string;
  readOnly?: boolean;
  exportName?: string;
  shared?: string;
  description?: string;
  persistent?: boolean;
  options?: Record<string, string>;
}

function positiveInt(text: string, what: string, max: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > max) throw new Error(`${what} '${text}' must be an integer between 0 and ${max}`);
  return n;
}

async function serve(io: NbdIo, image: string, o: ServeFlags): Promise<number> {
  if (io.registry === undefined) {
    io.stderr.write('tsvmm nbd: no block drivers available (the caller must pass a registry)\n');
    return 1;
  }
  const port = o.port !== undefined ? positiveInt(o.port, 'port', 65535) : 10809;
  const shared = o.shared !== undefined ? positiveInt(o.shared, '--shared', 1 << 16) : 16;
  if (shared === 0) throw new Error('--shared must be at least 1');
  const readOnly = o.readOnly === true;
  const device = await io.registry.openImage(image, { format: o.f, readOnly, options: o.options });
  let server: NbdServer;
  try {
    server = await NbdServer.listen({
      exports: [{ name: o.exportName ?? '', description: o.description, device, readOnly }],
      port,
      bind: o.bind,
      socket: o.socket,
      maxConnections: shared,
      log: (m) => io.stderr.write(`${m}\n`),
    });
  } catch (e) {
    await device.close();
    throw e;
  }
  const where = o.socket !== undefined ? `unix socket ${o.socket}` : `${o.bind ?? '0.0.0.0'}:${server.port ?? port}`;
  io.stderr.write(`tsvmm nbd: serving ${image} (${device.format}, ${device.size} bytes${readOnly ? ', read-only' : ''}) as '${o.exportName ?? ''}' on ${where}\n`);
  io.onListening?.(server);
  await new Promise<void>((resolve) => {
    if (io.signal !== undefined) {
      if (io.signal.aborted) resolve();
      io.signal.addEventListener('abort', () => resolve(), { once: true });
      return;
    }
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await server.close();
  await device.close();
  return 0;
}

/** Runs `tsvmm nbd ...`; never throws, returns the exit code. */
export async function runNbd(argv: string[], io: NbdIo): Promise<number> {
  let code = 0;
  const program = new Command('tsvmm nbd')
    .description('Network Block Device server')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });
  program
    .command('serve')
    .description('export an image over NBD (fixed newstyle, structured replies, base:allocation)')
    .argument('<image>', 'image file (any format the block drivers know)')
    .option('-f, --format <fmt>', 'image format (probed if omitted)')
    .option('-o, --options <opts>', 'format options for opening the image', (v: string) => parseOptionList(v))
    .option('-p, --port <port>', 'TCP port (default 10809)')
    .option('-b, --bind <addr>', 'address to listen on (default: all)')
    .option('-k, --socket <path>', 'listen on a unix socket instead of TCP')
    .option('-r, --read-only', 'export read-only: writes fail with EPERM')
    .option('-x, --export-name <name>', 'export name (default "")')
    .option('-D, --description <text>', 'export description')
    .option('-e, --shared <n>', 'most concurrent clients (default 16)')
    .option('-t, --persistent', 'accepted for qemu-nbd compatibility (the server always persists)')
    .action(async (image: string, o: ServeFlags & { format?: string }) => {
      code = await serve(io, image, { ...o, f: o.format });
    });
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 1;
    io.stderr.write(`tsvmm nbd: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  return code;
}
