import { expect } from 'chai';
import {
  composeCpuid,
  ConfigError,
  findCpuidEntry,
  KVM_CPUID_SIGNATURE_NEXT,
  planCpuid,
  PluginError,
  unpackAscii,
  type CpuidEntry,
  type CpuidPlanInput,
  type CpuModelDefinition,
  type HostCpuCapabilities,
} from '../src/index.js';
import { cpuModel, hasBit, loadHostFixture, withoutBits, type HostFixture } from './cpu-fixtures.js';

const intel = loadHostFixture('intel-skylake-i5-6600k.json');
const amd = loadHostFixture('amd-fx-8350-piledriver.json');
const pvm = loadHostFixture('pvm-dev-host-2026.json');

const one = { sockets: 1, cores: 1, threads: 1, vcpuIndex: 0 };

function compose(model: CpuModelDefinition, host: HostFixture, extra: Partial<Omit<CpuidPlanInput, 'model'>> & { topology?: typeof one } = {}) {
  return composeCpuid({ model, supported: host.supported, hostCaps: host.hostCaps, topology: one, ...extra });
}

const leaf = (entries: readonly CpuidEntry[], fn: number, index = 0): CpuidEntry => {
  const e = findCpuidEntry(entries, fn, index);
  if (e === undefined) throw new Error(`no CPUID 0x${fn.toString(16)}.${index} in the composed table`);
  return e;
};

const HASWELL_KEY_FEATURES = [
  ['avx2', 7, 'ebx', 5],
  ['fma', 1, 'ecx', 12],
  ['movbe', 1, 'ecx', 22],
  ['hle', 7, 'ebx', 4],
  ['rtm', 7, 'ebx', 11],
  ['bmi1', 7, 'ebx', 3],
  ['bmi2', 7, 'ebx', 8],
  ['invpcid', 7, 'ebx', 10],
] as const;

describe('CPUID composition on a recorded Intel host (Skylake i5-6600K)', () => {
  it('gives Haswell AVX2, FMA, MOVBE, HLE, RTM, BMI1/2 and INVPCID with nothing missing', async () => {
    const r = compose(await cpuModel('Haswell'), intel);
    expect(r.missing).to.deep.equal([]);
    for (const [name, fn, reg, bit] of HASWELL_KEY_FEATURES) expect(hasBit(r.entries, fn, 0, reg, bit), name).to.equal(true);
    expect(r.features).to.include.members(HASWELL_KEY_FEATURES.map(([n]) => n));
  });

  it('reports the identity the model says: signature, brand string, levels', async () => {
    const r = compose(await cpuModel('Haswell'), intel);
    expect(leaf(r.entries, 0).eax).to.equal(0xd);
    expect(leaf(r.entries, 1).eax).to.equal(0x000306c4); // family 6, model 60, stepping 4
    expect(leaf(r.entries, 0x80000000).eax).to.equal(0x80000008);
    const brand = [0x80000002, 0x80000003, 0x80000004].flatMap((fn) => {
      const e = findCpuidEntry(r.entries, fn);
      return e === undefined ? [0, 0, 0, 0] : [e.eax, e.ebx, e.ecx, e.edx];
    });
    expect(unpackAscii(brand)).to.equal('Intel Core Processor (Haswell)');
    expect(unpackAscii([leaf(r.entries, 0).ebx, leaf(r.entries, 0).edx, leaf(r.entries, 0).ecx])).to.equal('GenuineIntel');
  });

  it('drops and reports what a host lacks when check is on (the default)', async () => {
    const lacking = withoutBits(intel.supported, [
      { fn: 1, reg: 'ecx', bits: [12, 22] },
      { fn: 7, reg: 'ebx', bits: [4, 5, 11] },
    ]);
    const r = composeCpuid({ model: await cpuModel('Haswell'), supported: lacking, hostCaps: intel.hostCaps, topology: one, modifiers: ['check'] });
    expect(r.missing).to.have.members(['fma', 'movbe', 'hle', 'avx2', 'rtm']);
    expect(r.warnings.join('\n')).to.match(/host doesn't support requested features: .*CPUID\.01H:ECX\.fma \[bit 12\].*CPUID\[eax=07h,ecx=00h\]\.EBX\.avx2 \[bit 5\]/);
    for (const [fn, reg, bit] of [
      [1, 'ecx', 12],
      [1, 'ecx', 22],
      [7, 'ebx', 4],
      [7, 'ebx', 5],
      [7, 'ebx', 11],
    ] as const) {
      expect(hasBit(r.entries, fn, 0, reg, bit), `${fn}.${reg}[${bit}]`).to.equal(false);
    }
    expect(hasBit(r.entries, 7, 0, 'ebx', 8), 'bmi2 stays').to.equal(true);
  });

  it('leaves them out silently with check=off', async () => {
    const lacking = withoutBits(intel.supported, [{ fn: 7, reg: 'ebx', bits: [5] }]);
    const r = composeCpuid({ model: await cpuModel('Haswell'), supported: lacking, hostCaps: intel.hostCaps, topology: one, modifiers: ['check=off'] });
    expect(r.missing).to.deep.equal(['avx2']);
    expect(r.warnings.filter((w) => w.includes("doesn't support"))).to.deep.equal([]);
  });

  it('refuses with enforce, naming every missing feature', async () => {
    const lacking = withoutBits(intel.supported, [
      { fn: 1, reg: 'ecx', bits: [12, 22] },
      { fn: 7, reg: 'ebx', bits: [4, 5] },
    ]);
    const model = await cpuModel('Haswell');
    expect(() => composeCpuid({ model, supported: lacking, hostCaps: intel.hostCaps, topology: one, modifiers: ['enforce'] })).to.throw(
      ConfigError,
      /CPU model 'Haswell' needs features this host's KVM does not support: fma, movbe, hle, avx2/,
    );
  });

  it('runs under enforce once the missing features are removed with -feat', async () => {
    const lacking = withoutBits(intel.supported, [{ fn: 7, reg: 'ebx', bits: [4, 11] }]);
    const r = composeCpuid({ model: await cpuModel('Haswell'), supported: lacking, hostCaps: intel.hostCaps, topology: one, modifiers: ['-hle', '-rtm', 'enforce'] });
    expect(r.missing).to.deep.equal([]);
  });

  it('builds leaf 0xD from the XSAVE features: x87, SSE and AVX state with the host sizes', async () => {
    const r = compose(await cpuModel('Haswell'), intel);
    expect(leaf(r.entries, 0xd, 0)).to.include({ eax: 7, ebx: 0x340, ecx: 0x340 });
    expect(leaf(r.entries, 0xd, 1)).to.include({ eax: 1, ebx: 0x340 }); // xsaveopt; compacted size
    expect(leaf(r.entries, 0xd, 2)).to.include({ eax: 0x100, ebx: 0x240 });
  });

  it('passes the host through for the host model', async () => {
    const r = compose(await cpuModel('host'), intel, { hostCaps: { ...intel.hostCaps, modelId: 'Intel(R) Core(TM) i5-6600K CPU @ 3.50GHz' } });
    expect(r.missing).to.deep.equal([]);
    expect(leaf(r.entries, 1).eax).to.equal(0x000506e3);
    expect(leaf(r.entries, 0).eax).to.equal(0x16);
    expect(r.features).to.include.members(['avx2', 'hle', 'rtm', 'movbe', 'fma', 'rdseed', 'adx', 'smap', 'clflushopt', 'vmx', 'kvm-pv-unhalt', 'kvm-pv-tlb-flush']);
    // settable without being listed: the in-kernel LAPIC's TSC deadline mode, x2APIC, ARAT
    expect(r.features).to.include.members(['tsc-deadline', 'x2apic', 'arat', 'hypervisor']);
    expect(r.features).not.to.include.members(['ht', 'topoext', 'invtsc']);
  });
});

describe('CPUID composition on this development host (recorded): linear address width', () => {
  it('reports 57 linear address bits in 0x80000008 EAX when la57 is on (host model), 48 otherwise', async () => {
    const host = compose(await cpuModel('host'), pvm);
    expect(host.features).to.include('la57');
    expect(leaf(host.entries, 0x80000008).eax & 0xffff).to.equal(0x3930); // what QEMU 7.2 -cpu host gives here
    const haswell = compose(await cpuModel('Haswell'), pvm);
    expect(leaf(haswell.entries, 0x80000008).eax & 0xffff).to.equal(0x3028);
    const minus = compose(await cpuModel('host'), pvm, { modifiers: ['-la57'] });
    expect((leaf(minus.entries, 0x80000008).eax >>> 8) & 0xff).to.equal(48);
  });
});

describe('CPUID composition on a recorded AMD host (FX-8350, Piledriver)', () => {
  it('keeps FMA4, TBM, XOP, FMA, F16C and AVX for Opteron_G5', async () => {
    const r = compose(await cpuModel('Opteron_G5'), amd);
    expect(r.missing).to.deep.equal([]);
    expect(hasBit(r.entries, 0x80000001, 0, 'ecx', 16), 'fma4').to.equal(true);
    expect(hasBit(r.entries, 0x80000001, 0, 'ecx', 21), 'tbm').to.equal(true);
    expect(hasBit(r.entries, 0x80000001, 0, 'ecx', 11), 'xop').to.equal(true);
    expect(hasBit(r.entries, 1, 0, 'ecx', 12), 'fma').to.equal(true);
    expect(hasBit(r.entries, 1, 0, 'ecx', 29), 'f16c').to.equal(true);
    expect(hasBit(r.entries, 1, 0, 'ecx', 28), 'avx').to.equal(true);
  });

  it('turns svm off under KVM unless asked for, and then gives leaf 0x8000000A', async () => {
    const model = await cpuModel('Opteron_G5');
    const off = compose(model, amd);
    expect(hasBit(off.entries, 0x80000001, 0, 'ecx', 2)).to.equal(false);
    expect(findCpuidEntry(off.entries, 0x8000000a)).to.equal(undefined);
    const on = compose(model, amd, { modifiers: ['+svm'] });
    expect(hasBit(on.entries, 0x80000001, 0, 'ecx', 2)).to.equal(true);
    expect(leaf(on.entries, 0x8000000a)).to.include({ eax: 1, ebx: 0x10, edx: 0b1001 }); // npt, nrip-save
  });

  it('repeats the leaf 1 EDX features in 0x80000001 EDX for AMD (AMD aliases)', async () => {
    const r = compose(await cpuModel('Opteron_G5'), amd);
    const l1 = leaf(r.entries, 1).edx;
    const x1 = leaf(r.entries, 0x80000001).edx;
    expect((x1 & 0x0183f3ff) >>> 0).to.equal((l1 & 0x0183f3ff) >>> 0);
    expect(x1 & (1 << 29), 'lm').to.not.equal(0);
  });

  it('leaves the Intel-only cache leaves 2 and 4 empty for an AMD vendor', async () => {
    const r = compose(await cpuModel('Opteron_G5'), amd);
    expect(findCpuidEntry(r.entries, 2)).to.equal(undefined);
    expect(leaf(r.entries, 4, 0)).to.include({ eax: 0, ebx: 0, ecx: 0, edx: 0 });
  });

  it('lists what Haswell needs and Piledriver lacks', async () => {
    const r = compose(await cpuModel('Haswell'), amd);
    expect(r.missing).to.include.members(['avx2', 'hle', 'rtm', 'movbe', 'bmi2', 'invpcid', 'erms', 'smep', 'fsgsbase']);
    expect(r.missing).not.to.include.members(['fma', 'avx', 'bmi1', 'f16c']);
  });

  it("shows the host's vendor for a named model by default, as QEMU does under KVM; vendorPolicy 'model' or vendor= keep another", async () => {
    const model = await cpuModel('Haswell');
    const vendor = (r: { entries: CpuidEntry[] }): string => {
      const e = leaf(r.entries, 0);
      return unpackAscii([e.ebx, e.edx, e.ecx]);
    };
    expect(vendor(compose(model, amd))).to.equal('AuthenticAMD');
    expect(vendor(compose(model, amd, { vendorPolicy: 'model' }))).to.equal('GenuineIntel');
    expect(vendor(compose(model, amd, { modifiers: ['vendor=GenuineIntel'] }))).to.equal('GenuineIntel');
  });
});

describe('CPUID composition on this development host (paravirtual KVM, recorded)', () => {
  it('reports the features its KVM does not list for Haswell', async () => {
    const r = compose(await cpuModel('Haswell'), pvm);
    expect(r.missing).to.include.members(['movbe', 'fma', 'avx2', 'pni', 'sse4.2', 'avx', 'xsave']);
  });

  it('refuses Haswell with enforce', async () => {
    const model = await cpuModel('Haswell');
    expect(() => compose(model, pvm, { modifiers: ['enforce'] })).to.throw(ConfigError, /movbe/);
  });

  it('runs kvm64 with nothing missing but SSE3', async () => {
    expect(compose(await cpuModel('kvm64'), pvm).missing).to.deep.equal(['pni']);
  });
});

describe('model definitions from plugins', () => {
  it('refuses a broken definition instead of building a table from it', () => {
    const broken: CpuModelDefinition = { name: 'broken', version: 1, vendor: 'x', family: 6, model: 1, stepping: 1, modelId: '', level: 1, xlevel: 0, features: ['no-such-feature'] };
    expect(() => compose(broken, intel)).to.throw(PluginError, /CPU model 'broken': vendor "x" must be 12 printable ASCII characters; unknown feature "no-such-feature"/);
  });
});

describe('topology in the CPUID leaves', () => {
  it('sockets=1,cores=2: leaf 1 APIC ID and count, HTT, leaf 4 cores, leaf 0xB levels, 0x80000008', async () => {
    const model = await cpuModel('Haswell');
    const t = { sockets: 1, cores: 2, threads: 1 };
    const v0 = compose(model, intel, { topology: { ...t, vcpuIndex: 0 } });
    const v1 = compose(model, intel, { topology: { ...t, vcpuIndex: 1 } });
    expect([v0.apicId, v1.apicId]).to.deep.equal([0, 1]);
    expect(leaf(v1.entries, 1).ebx).to.equal((1 << 24) | (2 << 16) | (8 << 8));
    expect(hasBit(v1.entries, 1, 0, 'edx', 28), 'HTT').to.equal(true);
    expect(leaf(v1.entries, 4, 0).eax >>> 26, 'cores per package - 1').to.equal(1);
    expect(leaf(v1.entries, 4, 0).eax).to.equal(0x04000121);
    expect(leaf(v1.entries, 4, 3).eax).to.equal(0x04004163);
    expect(leaf(v1.entries, 0xb, 0)).to.include({ eax: 0, ebx: 1, ecx: 0x100, edx: 1 });
    expect(leaf(v1.entries, 0xb, 1)).to.include({ eax: 1, ebx: 2, ecx: 0x201, edx: 1 });
    expect(leaf(v1.entries, 0xb, 2)).to.include({ eax: 0, ebx: 0, ecx: 2, edx: 1 });
    expect(leaf(v1.entries, 0x80000008).ecx).to.equal(0x1001);
    expect(hasBit(v1.entries, 0x80000001, 0, 'ecx', 1), 'no CmpLegacy on Intel').to.equal(false);
  });

  it('a single vCPU has no HTT and a zero logical count', async () => {
    const r = compose(await cpuModel('Haswell'), intel);
    expect(hasBit(r.entries, 1, 0, 'edx', 28)).to.equal(false);
    expect(leaf(r.entries, 1).ebx).to.equal(8 << 8);
    expect(leaf(r.entries, 0x80000008).ecx).to.equal(0);
  });

  it('2 sockets x 2 cores x 2 threads: vCPU 5 is socket 1, core 0, thread 1', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { topology: { sockets: 2, cores: 2, threads: 2, vcpuIndex: 5 } });
    expect(r.apicId).to.equal(5);
    expect(leaf(r.entries, 1).ebx >>> 16).to.equal((5 << 8) | 4);
    expect(leaf(r.entries, 0xb, 0)).to.include({ eax: 1, ebx: 2, ecx: 0x100, edx: 5 });
    expect(leaf(r.entries, 0xb, 1)).to.include({ eax: 2, ebx: 4, ecx: 0x201, edx: 5 });
    const l1d = leaf(r.entries, 4, 0).eax;
    // QEMU 7.2: cores - 1 in 31:26; sharing IDs - 1 in 25:14 are 0 for L1, threads for L2, the package for L3
    expect([l1d >>> 26, (l1d >>> 14) & 0xfff]).to.deep.equal([1, 0]);
    expect((leaf(r.entries, 4, 2).eax >>> 14) & 0xfff, 'L2 shared by the 2 threads of a core').to.equal(1);
    expect((leaf(r.entries, 4, 3).eax >>> 14) & 0xfff, 'L3 shared by the package').to.equal(3);
    expect(leaf(r.entries, 0x80000008).ecx).to.equal((2 << 12) | 3);
  });

  it('AMD: CmpLegacy and NC for 2x2x2, 0x8000001E with topoext, and a warning about SMT on family 15h', async () => {
    const model = await cpuModel('Opteron_G5');
    const t = { sockets: 2, cores: 2, threads: 2, vcpuIndex: 5 };
    const plain = compose(model, amd, { topology: t });
    expect(hasBit(plain.entries, 0x80000001, 0, 'ecx', 1), 'CmpLegacy').to.equal(true);
    expect(leaf(plain.entries, 0x80000008).ecx).to.equal(0x2003);
    expect(plain.warnings.join('\n')).to.match(/doesn't support hyperthreading/);
    expect(findCpuidEntry(plain.entries, 0x8000001e)).to.equal(undefined);

    // as in QEMU, +topoext does not raise Opteron_G5's xlevel (0x8000001A); the leaves need xlevel=0x8000001e
    expect(findCpuidEntry(compose(model, amd, { topology: t, modifiers: ['+topoext'] }).entries, 0x8000001e)).to.equal(undefined);
    const topoext = compose(model, amd, { topology: t, modifiers: ['+topoext', 'xlevel=0x8000001e'] });
    expect(leaf(topoext.entries, 0x80000000).eax).to.equal(0x8000001e);
    expect(leaf(topoext.entries, 0x8000001e)).to.include({ eax: 5, ebx: 0x100, ecx: 1 });
    expect(leaf(topoext.entries, 0x8000001d, 0).eax).to.equal(0x121 | (1 << 14));
    expect(topoext.warnings.join('\n')).not.to.match(/hyperthreading/);
  });

  it('asks for KVM_CAP_X2APIC_API when APIC IDs go above 254', async () => {
    const model = await cpuModel('Haswell');
    const plan = planCpuid({ model, supported: intel.supported, hostCaps: intel.hostCaps, topology: { sockets: 2, cores: 128, threads: 1 } });
    expect(plan.vmCapsToEnable.map((c) => [c.name, c.scope, c.args])).to.deep.equal([['KVM_CAP_X2APIC_API', 'vm', [3n]]]);
    expect(plan.forVcpu(255).apicId).to.equal(255);
    const noApi: HostCpuCapabilities = { ...intel.hostCaps, x2apicApi: false };
    expect(() => planCpuid({ model, supported: intel.supported, hostCaps: noApi, topology: { sockets: 2, cores: 128, threads: 1 } })).to.throw(ConfigError, /KVM_CAP_X2APIC_API/);
  });
});

describe('+feat / -feat modifiers', () => {
  it('-hle,-rtm removes TSX, +x2apic keeps x2apic, avx2=off removes AVX2', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { modifiers: ['-hle', '-rtm', '+x2apic', 'avx2=off'] });
    expect(hasBit(r.entries, 7, 0, 'ebx', 4)).to.equal(false);
    expect(hasBit(r.entries, 7, 0, 'ebx', 11)).to.equal(false);
    expect(hasBit(r.entries, 7, 0, 'ebx', 5)).to.equal(false);
    expect(hasBit(r.entries, 1, 0, 'ecx', 21)).to.equal(true);
  });

  it('-feat wins over feat=on', async () => {
    const r = compose(await cpuModel('kvm64'), intel, { modifiers: ['-avx2', 'avx2=on', '+avx2'] });
    expect(hasBit(r.entries, 7, 0, 'ebx', 5)).to.equal(false);
  });

  it('adding a feature of a higher leaf raises the level (kvm64 has level 0xd; +avx2 needs leaf 7 which it already covers, Opteron_G1 has 5)', async () => {
    const r = compose(await cpuModel('Opteron_G1'), amd, { modifiers: ['+bmi1'] });
    expect(leaf(r.entries, 0).eax).to.equal(7);
    expect(hasBit(r.entries, 7, 0, 'ebx', 3)).to.equal(true);
  });

  it('level= beyond what the host knows is kept, with a warning', async () => {
    const r = compose(await cpuModel('Haswell'), pvm, { modifiers: ['level=0xff'] });
    expect(leaf(r.entries, 0).eax).to.equal(0xff);
    expect(r.warnings.join('\n')).to.match(/level=0xff is above the highest basic leaf this host's KVM knows \(0x24\)/);
  });

  it('level= below what enabled features need is taken as given (QEMU: an explicit level wins)', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { modifiers: ['level=4'] });
    expect(leaf(r.entries, 0).eax).to.equal(4);
    expect(findCpuidEntry(r.entries, 7)).to.equal(undefined);
  });

  it('phys-bits above the host is refused', async () => {
    const model = await cpuModel('Opteron_G5');
    expect(() => compose(model, amd, { modifiers: ['phys-bits=50'] })).to.throw(ConfigError, /phys-bits=50 is more than the host's 48/);
    const r = compose(model, amd, { modifiers: ['phys-bits=46'] });
    expect(leaf(r.entries, 0x80000008).eax & 0xff).to.equal(46);
  });
});

describe('KVM paravirtual leaves', () => {
  const kvmEax = (r: { entries: CpuidEntry[] }): number => leaf(r.entries, 0x40000001).eax;

  it('0x40000000 is "KVMKVMKVM" with max leaf 0x40000001', async () => {
    const r = compose(await cpuModel('Haswell'), intel);
    const sig = leaf(r.entries, 0x40000000);
    expect(sig.eax).to.equal(0x40000001);
    expect(unpackAscii([sig.ebx, sig.ecx, sig.edx])).to.equal('KVMKVMKVM');
  });

  it("turns on QEMU's default PV features: kvmclock (both bits), nopiodelay, asyncpf, steal time, PV EOI, stable bit", async () => {
    const r = compose(await cpuModel('Haswell'), intel);
    expect(kvmEax(r)).to.equal((1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 24));
  });

  it('switches each PV feature with the cpu string or the kvmPv option', async () => {
    const model = await cpuModel('Haswell');
    const base = kvmEax(compose(model, intel));
    expect(kvmEax(compose(model, intel, { modifiers: ['+kvm-pv-unhalt'] }))).to.equal(base | (1 << 7));
    expect(kvmEax(compose(model, intel, { modifiers: ['+kvm-pv-tlb-flush'] }))).to.equal(base | (1 << 9));
    expect(kvmEax(compose(model, intel, { modifiers: ['+kvm-pv-ipi'] }))).to.equal(base | (1 << 11));
    expect(kvmEax(compose(model, intel, { modifiers: ['-kvmclock'] }))).to.equal(base & ~0b1001);
    expect(kvmEax(compose(model, intel, { modifiers: ['kvm-pv-eoi=off'] }))).to.equal(base & ~(1 << 6));
    expect(kvmEax(compose(model, intel, { modifiers: ['-kvm-steal-time'] }))).to.equal(base & ~(1 << 5));
    expect(kvmEax(compose(model, intel, { modifiers: ['-kvm-asyncpf'] }))).to.equal(base & ~(1 << 4));
    expect(kvmEax(compose(model, intel, { kvmPv: { 'kvm-pv-unhalt': true, kvmclock: false } }))).to.equal((base | (1 << 7)) & ~0b1001);
    expect(kvmEax(compose(model, intel, { kvmPv: { 'kvm-pv-unhalt': true }, modifiers: ['-kvm-pv-unhalt'] }))).to.equal(base);
  });

  it('turns a default on only where the host has it, but reports an explicit request the host lacks', async () => {
    const model = await cpuModel('Haswell');
    const noSteal = withoutBits(intel.supported, [{ fn: 0x40000001, reg: 'eax', bits: [5, 7] }]);
    const r = composeCpuid({ model, supported: noSteal, hostCaps: intel.hostCaps, topology: one });
    expect(kvmEax(r) & (1 << 5)).to.equal(0);
    expect(r.missing).to.deep.equal([]);
    const asked = composeCpuid({ model, supported: noSteal, hostCaps: intel.hostCaps, topology: one, modifiers: ['+kvm-steal-time', '+kvm-pv-unhalt'] });
    expect(asked.missing).to.deep.equal(['kvm-steal-time', 'kvm-pv-unhalt']);
  });

  it('cannot give PV unhalt or x2apic without the in-kernel irqchip', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { hostCaps: { ...intel.hostCaps, irqchip: 'userspace' }, modifiers: ['+kvm-pv-unhalt'] });
    expect(r.missing).to.include.members(['kvm-pv-unhalt', 'x2apic']);
  });

  it('hides the KVM leaves with kvm=off', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { modifiers: ['kvm=off'] });
    expect(findCpuidEntry(r.entries, 0x40000000)).to.equal(undefined);
    expect(findCpuidEntry(r.entries, 0x40000001)).to.equal(undefined);
  });

  it('resets the PV MSRs that point into guest RAM, and enables host halt polling with kvm-poll-control', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { modifiers: ['+kvm-poll-control'] });
    const msrs = Object.fromEntries(r.msrs.map((m) => [m.name, m.data]));
    expect(msrs).to.deep.equal({
      MSR_KVM_SYSTEM_TIME_NEW: 0n,
      MSR_KVM_SYSTEM_TIME: 0n,
      MSR_KVM_ASYNC_PF_EN: 0n,
      MSR_KVM_STEAL_TIME: 0n,
      MSR_KVM_PV_EOI_EN: 0n,
      MSR_KVM_POLL_CONTROL: 1n,
    });
    expect(r.msrs.find((m) => m.name === 'MSR_KVM_SYSTEM_TIME_NEW')?.index).to.equal(0x4b564d01);
  });

  it('asks for KVM_CAP_ENFORCE_PV_FEATURE_CPUID per vCPU with kvm-pv-enforce-cpuid', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { modifiers: ['kvm-pv-enforce-cpuid=on'] });
    expect(r.kvmCapsToEnable.map((c) => [c.name, c.scope, c.args])).to.deep.equal([['KVM_CAP_ENFORCE_PV_FEATURE_CPUID', 'vcpu', [1n]]]);
  });
});

describe('Hyper-V enlightenments', () => {
  const hvModifiers = ['hv-relaxed', 'hv-vapic', 'hv-time', 'hv-vpindex', 'hv-runtime', 'hv-synic', 'hv-stimer', 'hv-reset', 'hv-frequencies', 'hv-spinlocks=0x1fff'];

  it('builds the Hyper-V leaves when the host has KVM Hyper-V support, and moves KVM to 0x40000100', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { modifiers: hvModifiers, topology: { sockets: 1, cores: 2, threads: 1, vcpuIndex: 1 } });
    const vendor = leaf(r.entries, 0x40000000);
    expect(vendor.eax).to.equal(0x40000005);
    expect(unpackAscii([vendor.ebx, vendor.ecx, vendor.edx])).to.equal('Microsoft Hv');
    expect(leaf(r.entries, 0x40000001).eax).to.equal(0x31237648); // "Hv#1"
    const features = leaf(r.entries, 0x40000003);
    // runtime 0, time-ref 1, synic 2, stimer 3, apic 4, hypercall 5, vp-index 6, reset 7, ref-TSC 9, frequency 11
    expect(features.eax).to.equal(0b1010_1111_1111);
    expect(features.ebx).to.equal(0b11_0000); // post messages, signal events
    expect(features.edx).to.equal((1 << 3) | (1 << 8));
    const recommendations = leaf(r.entries, 0x40000004);
    expect(recommendations.eax).to.equal((1 << 3) | (1 << 5)); // APIC access, relaxed timing
    expect(recommendations.ebx).to.equal(0x1fff);
    expect(leaf(r.entries, 0x40000005)).to.include({ eax: 0xffffffff, ebx: 64 });
    const kvm = leaf(r.entries, KVM_CPUID_SIGNATURE_NEXT);
    expect(kvm.eax).to.equal(KVM_CPUID_SIGNATURE_NEXT + 1);
    expect(unpackAscii([kvm.ebx, kvm.ecx, kvm.edx])).to.equal('KVMKVMKVM');
  });

  it('asks for KVM_CAP_HYPERV_SYNIC2 per vCPU and sets VP_INDEX and masked SINTs', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { modifiers: hvModifiers, topology: { sockets: 1, cores: 2, threads: 1, vcpuIndex: 1 } });
    expect(r.kvmCapsToEnable.map((c) => [c.name, c.cap, c.scope])).to.deep.equal([['KVM_CAP_HYPERV_SYNIC2', 148, 'vcpu']]);
    const byName = Object.fromEntries(r.msrs.map((m) => [m.name, m]));
    expect(byName['HV_X64_MSR_VP_INDEX']).to.deep.equal({ index: 0x40000002, data: 1n, name: 'HV_X64_MSR_VP_INDEX' });
    expect(byName['HV_X64_MSR_SINT0']?.data).to.equal(1n << 16n);
    expect(byName['HV_X64_MSR_SINT15']?.index).to.equal(0x4000009f);
    expect(byName['HV_X64_MSR_STIMER3_COUNT']?.index).to.equal(0x400000b7);
  });

  it('also takes the options from a config-file hyperv object', async () => {
    const r = compose(await cpuModel('Haswell'), intel, { hyperv: { 'hv-relaxed': true, 'hv-spinlocks': 4095 } });
    expect(leaf(r.entries, 0x40000004)).to.include({ eax: 1 << 5, ebx: 4095 });
  });

  it('leaves Hyper-V out when no option is given', async () => {
    const r = compose(await cpuModel('Haswell'), intel);
    expect(unpackAscii([leaf(r.entries, 0x40000000).ebx])).to.equal('KVMK');
    expect(findCpuidEntry(r.entries, 0x40000100)).to.equal(undefined);
  });

  it('fails on a host without KVM Hyper-V support, naming KVM_CAP_HYPERV (this machine)', async () => {
    const model = await cpuModel('Haswell');
    expect(() => compose(model, pvm, { modifiers: ['hv-relaxed', 'hv-time'] })).to.throw(ConfigError, /Hyper-V enlightenments \(hv-relaxed, hv-time\) need KVM_CAP_HYPERV/);
    expect(() => compose(model, pvm, { modifiers: ['hv-spinlocks=0x2000'] })).to.throw(ConfigError, /KVM_CAP_HYPERV/);
  });

  it('names the specific capability an enlightenment lacks', async () => {
    const model = await cpuModel('Haswell');
    expect(() => compose(model, intel, { hostCaps: { ...intel.hostCaps, hypervTime: false }, modifiers: ['hv-time'] })).to.throw(ConfigError, /hv-time\) needs KVM_CAP_HYPERV_TIME/);
    expect(() => compose(model, intel, { hostCaps: { ...intel.hostCaps, hypervSynic2: false }, modifiers: ['hv-vpindex', 'hv-synic'] })).to.throw(
      ConfigError,
      /hv-synic\) needs KVM_CAP_HYPERV_SYNIC2/,
    );
  });

  it('checks against KVM_GET_SUPPORTED_HV_CPUID when the host gives it', async () => {
    const hvCpuid = [{ function: 0x40000003, index: 0, flags: 0, eax: 1 << 4, ebx: 0, ecx: 0, edx: 0 }];
    const caps = { ...intel.hostCaps, hypervCpuid: hvCpuid };
    const model = await cpuModel('Haswell');
    expect(() => compose(model, intel, { hostCaps: caps, modifiers: ['hv-vapic'] })).not.to.throw();
    expect(() => compose(model, intel, { hostCaps: caps, modifiers: ['hv-time'] })).to.throw(ConfigError, /KVM_GET_SUPPORTED_HV_CPUID does not report it/);
  });

  it('enforces the dependencies QEMU enforces', async () => {
    const model = await cpuModel('Haswell');
    expect(() => compose(model, intel, { modifiers: ['hv-synic'] })).to.throw(ConfigError, /\(hv-synic\) requires .*\(hv-vpindex\)/);
    expect(() => compose(model, intel, { modifiers: ['hv-stimer', 'hv-vpindex', 'hv-synic'] })).to.throw(ConfigError, /\(hv-stimer\) requires .*\(hv-time\)/);
  });
});
