import { expect } from 'chai';
import * as fs from 'node:fs';
import { composeCpuid, findCpuidEntry, parseCpuOption, parseSmpOption, vendorOf, type CpuidEntry } from '../src/index.js';
import { cpuModel, loadHostFixture } from './cpu-fixtures.js';

interface Run {
  cpu: string;
  smp: string;
  guest: string[];
}
const recorded = JSON.parse(fs.readFileSync(new URL('../../test/fixtures/cpuid/qemu-7.2-guest-cpuid-pvm-host.json', import.meta.url), 'utf8')) as { runs: Run[] };
const pvm = loadHostFixture('pvm-dev-host-2026.json');

/**
 * What CPUID(fn, index) returns to a guest whose table is `table`: the
 * matching entry; for a leaf above its range's max leaf, the max basic leaf
 * (Intel semantics); zeros otherwise; leaf 0xB echoes the subleaf in ECX and
 * the x2APIC ID in EDX for undefined subleaves (arch/x86/kvm/cpuid.c kvm_cpuid,
 * get_out_of_range_cpuid_entry).
 */
function guestView(table: readonly CpuidEntry[], fn: number, index: number): [number, number, number, number] {
  const regs = (e: CpuidEntry | undefined): [number, number, number, number] => (e === undefined ? [0, 0, 0, 0] : [e.eax, e.ebx, e.ecx, e.edx]);
  const exact = findCpuidEntry(table, fn, index);
  if (exact !== undefined) return regs(exact);
  const basic = findCpuidEntry(table, 0);
  if (basic === undefined) return [0, 0, 0, 0];
  const amd = ['AuthenticAMD', 'HygonGenuine'].includes(vendorOf(table));
  if (!amd) {
    const classBase = fn >= 0x40000000 && fn <= 0x4fffffff ? fn & 0xffffff00 : fn >= 0xc0000000 ? 0xc0000000 : fn & 0x80000000;
    const cls = findCpuidEntry(table, classBase >>> 0);
    if (cls === undefined || fn > cls.eax) return regs(findCpuidEntry(table, basic.eax, index));
  }
  if (fn === 0xb) {
    const sub1 = findCpuidEntry(table, 0xb, 1);
    if (sub1 !== undefined) return [0, 0, index & 0xff, sub1.edx];
  }
  return [0, 0, 0, 0];
}

/** On this host these reach the guest from the host CPU, not from the VMM's table (ARCHITECTURE.md). */
const HOST_PASSTHROUGH = (fn: number, resolvedFn: number): boolean => [1, 7, 0xd].includes(fn) || [7, 0xd].includes(resolvedFn);

describe('composition against what QEMU 7.2 guests saw on this host (recorded)', () => {
  for (const run of recorded.runs) {
    it(`-cpu ${run.cpu} -smp ${run.smp}: every leaf the VMM decides matches QEMU`, async () => {
      const opt = parseCpuOption(run.cpu);
      if (opt.kind !== 'model') throw new Error('bad recorded run');
      const smp = parseSmpOption(run.smp);
      const r = composeCpuid({
        model: await cpuModel(opt.model),
        modifiers: opt.modifiers,
        supported: pvm.supported,
        hostCaps: pvm.hostCaps,
        topology: { sockets: smp.sockets, cores: smp.cores, threads: smp.threads, vcpuIndex: 0 },
      });
      const mismatches: string[] = [];
      let compared = 0;
      for (const line of run.guest) {
        const m = /^0x([0-9a-f]{8}) 0x([0-9a-f]{2}): eax=0x([0-9a-f]{8}) ebx=0x([0-9a-f]{8}) ecx=0x([0-9a-f]{8}) edx=0x([0-9a-f]{8})$/.exec(line);
        if (m === null) throw new Error(`bad recorded line ${line}`);
        const [fn = 0, index = 0, ...seen] = m.slice(1).map((x) => parseInt(x, 16));
        const basic = findCpuidEntry(r.entries, 0)?.eax ?? 0;
        const cls = fn >= 0x40000000 && fn <= 0x4fffffff ? findCpuidEntry(r.entries, fn & 0xffffff00) : undefined;
        const resolved = fn >= 0x40000000 && fn <= 0x4fffffff && (cls === undefined || fn > cls.eax) ? basic : fn;
        if (HOST_PASSTHROUGH(fn, resolved)) continue;
        compared++;
        const ours = guestView(r.entries, fn, index);
        if (ours.some((v, i) => v >>> 0 !== (seen[i] ?? -1) >>> 0)) {
          mismatches.push(`${line}\n   tsvmm:          eax=0x${ours.map((v) => (v >>> 0).toString(16).padStart(8, '0')).join(' ')}`);
        }
      }
      expect(compared).to.be.greaterThan(15);
      expect(mismatches, mismatches.join('\n')).to.deep.equal([]);
    });
  }
});
