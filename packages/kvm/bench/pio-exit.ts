/**
 * Micro-benchmark of the PIO exit round trip: a flat 32-bit guest runs
 * `out dx, al` N times in a tight loop, then `hlt`. Measured twice in the
 * same run:
 *
 *   c   bench/exit-latency/baseline.c: KVM_RUN loop in C, one thread
 *   js  the @tsvmm/kvm facade: vCPU thread + handoff + a JS pio handler
 *
 * Usage: node dist/bench/pio-exit.js [exits=100000] [runs=5]
 * Prints one JSON object with the median ns per exit of each and the ratio.
 * The host is shared and has 2 CPUs: medians of several runs, not means.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestRam, Kvm } from '../src/index.js';
import type { VcpuExitStats } from '../src/index.js';
import { GuestCode } from '../test/guest-code.js';
import { CODE_ADDR, enterFlatProtectedMode } from '../test/guest-setup.js';

const OUT_PORT = 0x10;

interface JsRun {
  nsPerExit: number;
  stats: VcpuExitStats;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
}

function runJs(kvm: Kvm, exits: number): Promise<JsRun> {
  const vm = kvm.createVm();
  vm.setTssAddr(0xfffbd000);
  const ram = GuestRam.allocate(1 << 20);
  vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, ram });
  const code = new GuestCode(32).movReg32('ecx', exits).movDx(OUT_PORT).label('loop').outDx(1).decEcx().jnz('loop').hlt();
  ram.bytes(CODE_ADDR, code.length).set(code.bytes());
  const vcpu = vm.createVcpu(0);
  enterFlatProtectedMode(vcpu);
  let seen = 0;
  return new Promise<JsRun>((resolve, reject) => {
    const start = process.hrtime.bigint();
    vm.startVcpus({
      pio(port) {
        if (port === OUT_PORT) seen++;
      },
      mmio() {},
      event(v, event) {
        const elapsed = Number(process.hrtime.bigint() - start);
        const stats = v.exitStats();
        void vm.stopVcpus().then(() => {
          vm.close();
          if (event.kind !== 'hlt' || seen !== exits) reject(new Error(`guest ended with ${event.kind} after ${seen} exits`));
          else resolve({ nsPerExit: elapsed / exits, stats });
        });
      },
    });
  });
}

function buildBaseline(): { binary: string; cleanup: () => void } | undefined {
  const source = fileURLToPath(new URL('../../../../bench/exit-latency/baseline.c', import.meta.url));
  const dir = mkdtempSync(join(tmpdir(), 'tsvmm-baseline-'));
  const binary = join(dir, 'baseline');
  try {
    execFileSync('cc', ['-O2', '-o', binary, source], { stdio: 'pipe' });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`cannot build the C baseline (${err instanceof Error ? err.message : String(err)}); install gcc\n`);
    return undefined;
  }
  return { binary, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

function runC(binary: string, exits: number): number {
  const out = execFileSync(binary, [String(exits), 'prot'], { encoding: 'utf8' });
  const parsed: unknown = JSON.parse(out);
  if (typeof parsed !== 'object' || parsed === null || typeof (parsed as { nsPerExit?: unknown }).nsPerExit !== 'number') {
    throw new Error(`unexpected baseline output: ${out}`);
  }
  return (parsed as { nsPerExit: number }).nsPerExit;
}

async function main(): Promise<void> {
  const exits = Number(process.argv[2] ?? 100_000);
  const runs = Number(process.argv[3] ?? 5);
  const kvm = Kvm.open();
  const baseline = buildBaseline();
  const c: number[] = [];
  const js: JsRun[] = [];
  try {
    // Interleave so that both see the same background load.
    for (let i = 0; i < runs; i++) {
      if (baseline !== undefined) c.push(runC(baseline.binary, exits));
      js.push(await runJs(kvm, exits));
    }
  } finally {
    baseline?.cleanup();
    kvm.close();
  }
  const jsMedian = median(js.map((r) => r.nsPerExit));
  const cMedian = median(c);
  const result = {
    exits,
    runs,
    cNsPerExit: c.map((v) => Math.round(v)),
    jsNsPerExit: js.map((r) => Math.round(r.nsPerExit)),
    cMedian: Math.round(cMedian),
    jsMedian: Math.round(jsMedian),
    ratio: Number((jsMedian / cMedian).toFixed(2)),
    jsWakes: js.map((r) => r.stats.wakes),
    jsSleeps: js.map((r) => r.stats.sleeps),
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

await main();
