/**
 * `tsvmm run --control unix:PATH`: the VM of a `tsvmm run` process, driven
 * over the control protocol (docs/protocol.md) as QEMU's `-qmp` drives a
 * QEMU process — status, pause/resume/reset, power-off, migration (this is
 * how a VM started with `run` becomes a migration source), device and
 * console methods.
 *
 * It is the same server as `tsvmm serve`, with one VM, `vm-1`, that it did
 * not create: the VM runtime of a VM process (vm-process/runtime.ts) adopts
 * this process's machine and talks to the server's VM handle over an
 * in-memory channel instead of IPC. vm/create is refused; vm/destroy (or
 * vm/shutdown) powers the VM off and so ends `tsvmm run`.
 */
import * as fs from 'node:fs';
import type net from 'node:net';
import { PassThrough } from 'node:stream';
import { ConfigError, type LogLevel, type Machine, type PluginRegistry } from '@tsvmm/core';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node.js';
import { ControlServer } from './server/control-server.js';
import { listen, parseListenAddress } from './server/transports.js';
import type { VmEndpoint, VmProcessHandle } from './server/vm-process-handle.js';
import { ChildStatus } from './vm-process/channel.js';
import { VmRuntime } from './vm-process/runtime.js';

export interface RunControl {
  /** the address clients connect to */
  readonly address: string;
  /** The VM has ended: tell the clients, close the socket. */
  close(): Promise<void>;
}

export async function startRunControl(
  address: string,
  machine: Machine,
  registry: PluginRegistry,
  opts: { name?: string; logLevel: LogLevel; logLine: (line: string) => void },
): Promise<RunControl> {
  const addr = parseListenAddress(address);
  if (addr.kind !== 'unix') {
    throw new ConfigError(`--control ${address}: only unix:PATH sockets (mode 0600) are offered here`, {
      hint: 'for TCP with an auth token, run the VM under `tsvmm serve`',
    });
  }
  // the channel between the runtime (VM side) and the server's handle, in memory
  const toRuntime = new PassThrough();
  const toHandle = new PassThrough();
  const runtimeSide = createMessageConnection(new StreamMessageReader(toRuntime), new StreamMessageWriter(toHandle));
  const runtime = new VmRuntime({
    connection: runtimeSide,
    loadAccelerator: () => Promise.reject(new Error('the VM of `tsvmm run` exists already')),
    logLine: (line) => opts.logLine(line),
    logLevel: opts.logLevel,
  });
  runtime.adopt(machine, registry);
  runtimeSide.listen();

  let ended = false;
  const exitListeners: Array<(code: number | null, signal: NodeJS.Signals | null) => void> = [];
  const endpoint: VmEndpoint = {
    connection: createMessageConnection(new StreamMessageReader(toHandle), new StreamMessageWriter(toRuntime)),
    pid: process.pid,
    get connected() {
      return !ended;
    },
    // the channel lives as long as this process: `run` ends with its VM
    release: () => undefined,
    kill: (signal) => {
      process.kill(process.pid, signal);
    },
    onExit: (listener) => {
      exitListeners.push(listener);
    },
    onError: () => undefined,
  };

  const server = new ControlServer({ logLevel: 'warn', logLine: opts.logLine, monitorOf: 'this `tsvmm run` VM' });
  let handle: VmProcessHandle;
  let listener: net.Server;
  try {
    handle = await server.supervisor.adopt(endpoint, opts.name);
    listener = await listen(server, addr);
  } catch (err) {
    await server.close();
    throw err;
  }
  return {
    address: `unix:${addr.path}`,
    close: async () => {
      if (ended) return;
      // A round trip on the channel: the runtime's last state change (sent before
      // the answer) reaches the handle, and from it every client, before the end.
      await handle.request(ChildStatus).catch(() => undefined);
      ended = true;
      for (const l of exitListeners) l(machine.exitResult?.status ?? 0, null);
      // a vm/destroy or vm/shutdown that ended the VM gets its answer before the connections close
      await server.idle();
      await server.close();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
      fs.rmSync(addr.path, { force: true });
      runtimeSide.dispose();
    },
  };
}
