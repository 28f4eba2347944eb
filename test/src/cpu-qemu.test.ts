/// <reference types="mocha" />
/**
 * Differential: the same CPU model guests under tsvmm and under QEMU
 * (`qemu-system-x86_64 -accel kvm -cpu MODEL`) on this host. Both filter the
 * model against the same KVM_GET_SUPPORTED_CPUID, and on kvm_pvm both get the
 * same host values in leaf 1 ECX/EDX, 7 and 0xD, so the guest must read the
 * same CPUID leaf by leaf, on every vCPU. Every intentional difference is
 * named in INTENTIONAL below and in the test title.
 */
import { expect } from 'chai';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bootCpuGuest, formatRegs, type Booted, type Regs } from './cpu-guest.js';
import { buildGuests, describeRun, expectTapPass, requireVmm } from './guest-harness.js';

interface Difference {
  /** CPUID leaf as printed: '0x40000001 0x00' */
  leaf: string;
  /** bits of EAX, EBX, ECX, EDX that may differ */
  mask: Regs;
  why: string;
}

/** What tsvmm does differently from QEMU 7.2 on purpose, per --cpu value. */
const INTENTIONAL: Record<string, Difference[]> = {
  host: [
    {
      leaf: '0x40000001 0x00',
      mask: [1 << 10, 0, 0, 0],
      why: "KVM_FEATURE_ASYNC_PF_VMEXIT (bit 10), which the host model passes through and QEMU 7.2 has no name for",
    },
    {
      leaf: '0x00000007 0x01',
      mask: [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
      why:
        "leaf 7.1, which tsvmm's host model builds because KVM lists fzrm/fsrs/fsrc (leaf 7.1 EAX bits 10-12) and tsvmm knows them; " +
        "QEMU 7.2 has no names for them, so builds no 7.1 here (the guest reads zeros), and kvm_pvm fills tsvmm's 7.1 with the host CPU's",
    },
  ],
};

const CASES: { cpu: string; smp?: string }[] = [
  { cpu: 'qemu64' },
  { cpu: 'kvm64' },
  { cpu: 'Opteron_G5' },
  { cpu: 'Haswell' },
  { cpu: 'Haswell-noTSX' },
  { cpu: 'Haswell,-hle,+x2apic' },
  { cpu: 'Haswell-noTSX,-x2apic,-tsc-deadline,+hle' },
  { cpu: 'host' },
  { cpu: 'Haswell', smp: '2,sockets=1,cores=2' },
  { cpu: 'Haswell', smp: '8,sockets=2,cores=2,threads=2' },
  { cpu: 'Opteron_G5,vendor=AuthenticAMD,+topoext,xlevel=0x8000001e', smp: '2,sockets=1,cores=2' },
];

function unexplained(ours: Booted, qemu: Booted, allowed: Difference[]): string[] {
  const out: string[] = [];
  const apics = new Set([...ours.guest.keys(), ...qemu.guest.keys()]);
  for (const apic of apics) {
    const a = ours.guest.get(apic);
    const b = qemu.guest.get(apic);
    if (a === undefined || b === undefined) {
      out.push(`APIC ${apic}: only ${a === undefined ? 'QEMU' : 'tsvmm'} has a CPU with it`);
      continue;
    }
    for (const leaf of new Set([...a.keys(), ...b.keys()])) {
      const x = a.get(leaf);
      const y = b.get(leaf);
      if (x === undefined || y === undefined) {
        out.push(`APIC ${apic} CPUID ${leaf}: only ${x === undefined ? 'QEMU' : 'tsvmm'}'s guest read it`);
        continue;
      }
      const mask = allowed.find((d) => d.leaf === leaf)?.mask ?? [0, 0, 0, 0];
      if (x.some((v, i) => (((v ^ (y[i] ?? 0)) >>> 0) & ~(mask[i] ?? 0)) >>> 0 !== 0)) {
        out.push(`APIC ${apic} CPUID ${leaf}:\n    tsvmm ${formatRegs(x)}\n    QEMU  ${formatRegs(y)}`);
      }
    }
  }
  return out;
}

describe('CPU models: tsvmm against QEMU on this host', function () {
  this.timeout(180_000);
  let scratch = '';

  before(() => {
    requireVmm('tsvmm');
    requireVmm('qemu');
    buildGuests();
    scratch = mkdtempSync(path.join(os.tmpdir(), 'tsvmm-cpu-qemu-'));
  });
  after(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  for (const c of CASES) {
    const allowed = INTENTIONAL[c.cpu] ?? [];
    const smp = c.smp ?? '1';
    const title =
      `--cpu ${c.cpu} --smp ${smp}: the guest reads the same CPUID on tsvmm and QEMU, leaf by leaf on every vCPU` +
      (allowed.length ? `, except ${allowed.map((d) => `${d.leaf.split(' ')[0]}: ${d.why}`).join('; ')}` : '');
    it(title, async () => {
      const [ours, qemu] = await Promise.all(
        (['tsvmm', 'qemu'] as const).map((vmm) => bootCpuGuest({ vmm, dir: scratch, kernel: 'cpuid_dump.elf', cpu: c.cpu, smp })),
      );
      if (ours === undefined || qemu === undefined) throw new Error('unreachable');
      expectTapPass(ours.run);
      expectTapPass(qemu.run);
      expect(unexplained(ours, qemu, allowed), `${describeRun(ours.run)}\n\n${describeRun(qemu.run)}`).to.deep.equal([]);
    });
  }

  for (const cpu of ['Haswell', 'Haswell,-movbe', 'qemu64', 'host']) {
    it(`MOVBE --cpu ${cpu}: the same outcome (and CPUID.1:ECX.MOVBE) as under QEMU`, async () => {
      const outcome = async (vmm: 'tsvmm' | 'qemu'): Promise<string> => {
        const b = await bootCpuGuest({ vmm, dir: scratch, kernel: 'movbe.elf', cpu });
        expectTapPass(b.run);
        return /^# movbe: .*$/m.exec(b.run.serialOutput)?.[0] ?? describeRun(b.run);
      };
      expect(await outcome('tsvmm')).to.equal(await outcome('qemu'));
    });
  }

  it('kvmclock: the same guest passes under QEMU (qemu64)', async () => {
    const b = await bootCpuGuest({ vmm: 'qemu', dir: scratch, kernel: 'kvmclock.elf', cpu: 'qemu64', append: `now=${Math.floor(Date.now() / 1000)} mode=on` });
    expectTapPass(b.run);
  });
});
