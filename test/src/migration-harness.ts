/**
 * Helpers for the migration tests: machines built in this process on KVM
 * (for the engine tests), the migrate_rw guest's output, and a TCP proxy
 * that cuts the connection after a chosen number of bytes (for the
 * reliability tests).
 */
import * as net from 'node:net';
import path from 'node:path';
import { createContainer, Machine, PluginRegistry, type Chardev, type MachineExit } from '@tsvmm/core';
import { createKvmAccelerator, type KvmAccelerator } from '@tsvmm/core/kvm';
import { guestImage, repoRoot } from './guest-harness.js';

let accel: KvmAccelerator | undefined;

export function kvmAccelerator(): KvmAccelerator {
  accel ??= createKvmAccelerator();
  return accel;
}

export function pluginRegistry(): PluginRegistry {
  return PluginRegistry.create({ container: createContainer(), searchFrom: path.join(repoRoot, 'host') });
}

/** A serial backend that keeps what the guest printed. */
export class CapturingChardev implements Chardev {
  text = '';
  private waiters: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  constructor(readonly id: string) {}
  write(data: Uint8Array): void {
    this.text += Buffer.from(data).toString('latin1');
    this.waiters = this.waiters.filter((w) => {
      const m = this.text.match(w.pattern);
      if (m !== null) w.resolve(m);
      return m === null;
    });
  }
  setInputListener(): void {}
  close(): void {}
  /** Resolves when the output matches `pattern` (rejects after timeoutMs). */
  waitFor(pattern: RegExp, timeoutMs = 60_000): Promise<RegExpMatchArray> {
    const m = this.text.match(pattern);
    if (m !== null) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`guest output never matched ${pattern}; it printed:\n${this.text.slice(-2000)}`)), timeoutMs);
      this.waiters.push({
        pattern,
        resolve: (x) => {
          clearTimeout(t);
          resolve(x);
        },
      });
    });
  }
}

export interface TestMachine {
  machine: Machine;
  serial: CapturingChardev;
  exit: Promise<MachineExit>;
}

export const MIGRATE_RW = (): string => guestImage('migrate_rw.elf');

/** A machine running (or, incoming, waiting to run) the migrate_rw guest. */
export async function createTestMachine(opts: {
  append: string;
  memory?: string;
  machine?: string;
  incoming?: boolean;
  drive?: string;
  /** run the drive's data plane on an iothread */
  iothread?: boolean;
  /** more devices (DeviceSpec) */
  devices?: { driver: string; [prop: string]: unknown }[];
  /** a registry with test device types registered (default: the installed plugins) */
  registry?: PluginRegistry;
}): Promise<TestMachine> {
  const serial = new CapturingChardev('serial0');
  const machine = await Machine.create(
    {
      kernel: MIGRATE_RW(),
      append: opts.append,
      memory: opts.memory ?? '64M',
      ...(opts.machine !== undefined ? { machine: opts.machine } : {}),
      noReboot: true,
      devices: [{ driver: 'isa-debug-exit', iobase: 0xf4, iosize: 4 }, ...(opts.devices ?? [])],
      ...(opts.drive !== undefined ? { drives: [{ file: opts.drive, format: 'raw', if: 'virtio' as const, ...(opts.iothread === true ? { iothread: 'io0' } : {}) }] } : {}),
      ...(opts.iothread === true ? { objects: [{ 'qom-type': 'iothread' as const, id: 'io0' }] } : {}),
    },
    {
      registry: opts.registry ?? pluginRegistry(),
      accelerator: kvmAccelerator(),
      chardevFactory: (id) => (id === 'serial0' ? serial : undefined),
      ...(opts.incoming === true ? { incoming: true } : {}),
    },
  );
  const exit = new Promise<MachineExit>((resolve) => machine.once('exit', resolve));
  return { machine, serial, exit };
}

/** The checksum the migrate_rw guest printed. */
export function checksumOf(text: string): string | undefined {
  return /# checksum (0x[0-9a-f]{8})/.exec(text)?.[1];
}

/**
 * A TCP proxy to `target` that forwards the first `cutAfter` bytes from the
 * client, then destroys both connections (a dropped link mid-stream).
 */
export async function cuttingProxy(target: { host: string; port: number }, cutAfter: number): Promise<{ port: number; forwarded: () => number; close: () => void }> {
  let forwarded = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    sockets.add(client);
    sockets.add(upstream);
    const cut = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (chunk: Buffer) => {
      const room = cutAfter - forwarded;
      if (room <= 0) return cut();
      const part = chunk.subarray(0, room);
      forwarded += part.length;
      upstream.write(part);
      if (part.length < chunk.length || forwarded >= cutAfter) setImmediate(cut);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('error', cut);
    upstream.on('error', cut);
    client.on('close', cut);
    upstream.on('close', cut);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  if (addr === null || typeof addr !== 'object') throw new Error('proxy did not get a port');
  return {
    port: addr.port,
    forwarded: () => forwarded,
    close: () => {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}
