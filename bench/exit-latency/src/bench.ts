/**
 * bench/exit-latency: the cost of a port I/O exit handled by a device in JS,
 * against a C program driving KVM directly on the same guest code, and the
 * time from `tsvmm run` to the guest's first serial byte, against QEMU's.
 *
 *   npx tsc -b bench/exit-latency && node bench/exit-latency/dist/bench.js [--runs N]
 *
 * The guest (test/guest/out/exit-latency-guest.elf, bench/exit-latency/guest.S)
 * writes 'S' to COM1, does 100 000 `out` to port 0xe0, then exits through
 * isa-debug-exit. On tsvmm a device written in JS owns port 0xe0; the C
 * baseline (baseline.c --elf) loads the same ELF into its own KVM VM.
 */
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { Machine, PluginTokens, defineDeviceType, prop, type Device, type DeviceContext } from '@tsvmm/core';
import { createKvmAccelerator } from '@tsvmm/core/kvm';
import { createPluginRegistry } from '@tsvmm/host/plugins';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
const guest = path.join(root, 'test/guest/out/exit-latency-guest.elf');
const cli = path.join(root, 'host/dist/src/cli.js');
const EXITS = 100_000;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

/** A port device that only counts writes and notes when the first came. */
class ExitCounter implements Device {
  readonly typeName = 'bench-exit-counter';
  writes = 0;
  firstNs = 0n;
  constructor(
    readonly id: string,
    private readonly port: number,
  ) {}
  realize(ctx: DeviceContext): void {
    ctx.pio.register(
      this.port,
      1,
      {
        read: (_o, d) => d.fill(0),
        write: () => {
          if (this.writes++ === 0) this.firstNs = process.hrtime.bigint();
        },
      },
      this.id,
    );
  }
  reset(): void {}
  unrealize(): void {}
  describe(): Record<string, unknown> {
    return { port: this.port };
  }
}

let lastCounter: ExitCounter | undefined;
const counterType = defineDeviceType({
  name: 'bench-exit-counter',
  description: 'counts port writes (benchmark)',
  bus: 'isa',
  hotpluggable: false,
  properties: z.strictObject({ port: prop.int(0, 0xffff) }),
  create: (id, p) => (lastCounter = new ExitCounter(id, p.port)),
});

async function tsvmmNsPerExit(): Promise<number> {
  const registry = createPluginRegistry();
  registry.container.register(PluginTokens.device, { useValue: counterType });
  const machine = await Machine.create(
    {
      kernel: guest,
      cpu: 'host',
      serial: ['null'],
      devices: [
        { driver: 'isa-debug-exit', iobase: 0xf4, iosize: 4 },
        { driver: 'bench-exit-counter', port: 0xe0 },
      ],
    },
    { registry, accelerator: createKvmAccelerator() },
  );
  const counter = lastCounter;
  if (counter === undefined) throw new Error('the counter device was not created');
  const done = new Promise<bigint>((resolve) => machine.once('exit', () => resolve(process.hrtime.bigint())));
  machine.start();
  const end = await done;
  if (counter.writes !== EXITS) throw new Error(`guest did ${counter.writes} writes, expected ${EXITS}`);
  return Number(end - counter.firstNs) / counter.writes;
}

function baselineNsPerExit(binary: string): number {
  const out = execFileSync(binary, ['--elf', guest], { encoding: 'utf8' });
  const r = JSON.parse(out) as { exits: number; nsPerExit: number };
  if (r.exits !== EXITS) throw new Error(`C baseline saw ${r.exits} exits, expected ${EXITS}`);
  return r.nsPerExit;
}

/** Milliseconds from spawning the command to the first byte on its stdout. */
function timeToFirstByte(cmd: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let settled = false;
    child.stdout.once('data', () => {
      settled = true;
      resolve(Number(process.hrtime.bigint() - t0) / 1e6);
    });
    child.on('exit', (code) => {
      if (!settled) reject(new Error(`${cmd} exited with ${code} before printing anything`));
    });
  });
}

async function main(): Promise<void> {
  const runsArg = process.argv.indexOf('--runs');
  const runs = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 7;
  if (!fs.existsSync(guest)) throw new Error(`${guest} is missing: run npm run build:guest`);
  const outDir = path.join(root, 'bench/out');
  fs.mkdirSync(outDir, { recursive: true });
  const baseline = path.join(outDir, 'exit-latency-baseline');
  execFileSync('cc', ['-O2', '-o', baseline, path.join(root, 'bench/exit-latency/baseline.c')]);

  const js: number[] = [];
  const c: number[] = [];
  for (let i = 0; i < runs; i++) {
    // Alternate so that neither side always runs on a warmer (or busier) machine.
    c.push(baselineNsPerExit(baseline));
    js.push(await tsvmmNsPerExit());
  }
  const qemuArgs = ['-accel', 'kvm', '-nodefaults', '-display', 'none', '-serial', 'stdio', '-kernel', guest, '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x4'];
  const tsvmmArgs = [cli, 'run', '--kernel', guest, '--cpu', 'host', '--device', 'isa-debug-exit,iobase=0xf4,iosize=0x4', '--serial', 'stdio'];
  const startTsvmm: number[] = [];
  const startQemu: number[] = [];
  for (let i = 0; i < runs; i++) {
    startTsvmm.push(await timeToFirstByte(process.execPath, tsvmmArgs));
    startQemu.push(await timeToFirstByte('qemu-system-x86_64', qemuArgs));
  }
  const result = {
    runs,
    exits: EXITS,
    cNsPerExit: median(c),
    tsvmmNsPerExit: median(js),
    exitRatio: Number((median(js) / median(c)).toFixed(2)),
    tsvmmStartToFirstByteMs: Number(median(startTsvmm).toFixed(1)),
    qemuStartToFirstByteMs: Number(median(startQemu).toFixed(1)),
    startRatio: Number((median(startTsvmm) / median(startQemu)).toFixed(2)),
    samples: { c, tsvmm: js, startTsvmm, startQemu },
  };
  console.log(`PIO exit handled in JS: ${result.tsvmmNsPerExit.toFixed(0)} ns; C baseline: ${result.cNsPerExit.toFixed(0)} ns; ratio ${result.exitRatio} (target <= 2)`);
  console.log(`start to first serial byte: tsvmm ${result.tsvmmStartToFirstByteMs} ms, QEMU ${result.qemuStartToFirstByteMs} ms; ratio ${result.startRatio}`);
  console.log(JSON.stringify(result));
}

await main();
