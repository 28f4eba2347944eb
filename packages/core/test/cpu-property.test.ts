import { expect } from 'chai';
import fc from 'fast-check';
import {
  allCpuFeatures,
  composeCpuid,
  ConfigError,
  cpuFeatureNames,
  cpuidRegisterValue,
  findCpuidEntry,
  findCpuModel,
  interpretCpuModifiers,
  KVM_SETTABLE_REGARDLESS,
  parseCpuOption,
  parseSmpOption,
  planCpuid,
  unpackAscii,
  type CpuidEntry,
  type CpuModelDefinition,
  type HostCpuCapabilities,
} from '../src/index.js';
import { cpuModels, loadHostFixture, type HostFixture } from './cpu-fixtures.js';

const hosts: HostFixture[] = ['intel-skylake-i5-6600k.json', 'amd-fx-8350-piledriver.json', 'pvm-dev-host-2026.json'].map(loadHostFixture);
const featureNames = cpuFeatureNames();

/**
 * The bits a VMM may set although the host's KVM_GET_SUPPORTED_CPUID lacks them,
 * written out independently of the implementation (see KVM_SETTABLE_REGARDLESS).
 */
function settableRegardless(name: string, ctx: { irqchip: string; tscDeadline: boolean; threadsPerPkg: number }): boolean {
  switch (name) {
    case 'hypervisor':
    case 'arat':
    case 'topoext':
    case 'kvm-hint-dedicated':
      return true;
    case 'x2apic':
      return ctx.irqchip !== 'userspace';
    case 'tsc-deadline':
      return ctx.irqchip !== 'userspace' && ctx.tscDeadline;
    case 'ht':
    case 'cmp-legacy':
      return ctx.threadsPerPkg > 1;
    case 'kvm-msi-ext-dest-id':
      return ctx.irqchip === 'split';
    default:
      return false;
  }
}

/** Where the KVM leaves are: 0x40000000, or 0x40000100 behind Hyper-V. */
function kvmBase(entries: readonly CpuidEntry[]): number | undefined {
  for (const base of [0x40000000, 0x40000100]) {
    const e = findCpuidEntry(entries, base);
    if (e !== undefined && unpackAscii([e.ebx, e.ecx, e.edx]) === 'KVMKVMKVM') return base;
  }
  return undefined;
}

const token = fc.oneof(
  fc.constantFrom(...featureNames).chain((n) => fc.constantFrom(`+${n}`, `-${n}`, `${n}=on`, `${n}=off`, n)),
  fc.constantFrom('check', 'check=off', 'kvm=off', 'l3-cache=off', 'level=0x7', 'xlevel=0x80000001', 'hv-relaxed', 'hv-vapic', 'hv-time', 'hv-spinlocks=0x1fff'),
);

const hostArb = fc.record({
  host: fc.integer({ min: 0, max: hosts.length - 1 }),
  // clear random bits of random feature registers, to get hosts that lack things
  clear: fc.array(fc.record({ word: fc.integer({ min: 0, max: 100 }), mask: fc.integer({ min: 0, max: 0xffffffff }) }), { maxLength: 4 }),
  irqchip: fc.constantFrom<'kernel' | 'split' | 'userspace'>('kernel', 'split', 'userspace'),
  tscDeadline: fc.boolean(),
  hyperv: fc.boolean(),
});

const topoArb = fc
  .record({ sockets: fc.integer({ min: 1, max: 2 }), cores: fc.integer({ min: 1, max: 4 }), threads: fc.integer({ min: 1, max: 2 }) })
  .chain((t) => fc.record({ t: fc.constant(t), vcpuIndex: fc.integer({ min: 0, max: t.sockets * t.cores * t.threads - 1 }) }));

describe('CPUID composition properties', () => {
  let models: CpuModelDefinition[] = [];
  before(async () => {
    models = await cpuModels();
  });

  it('lists exactly the settable-regardless bits the property allows', () => {
    expect(KVM_SETTABLE_REGARDLESS.map((s) => s.feature).sort()).to.deep.equal(
      ['arat', 'cmp-legacy', 'ht', 'hypervisor', 'kvm-hint-dedicated', 'kvm-msi-ext-dest-id', 'topoext', 'tsc-deadline', 'x2apic'].sort(),
    );
  });

  it('never sets a feature bit the host table lacks, except the ones KVM lets a VMM set regardless', () => {
    const words = [...new Set(allCpuFeatures().map((f) => f.word))];
    fc.assert(
      fc.property(fc.nat({ max: 100 }), fc.array(token, { maxLength: 12 }), hostArb, topoArb, (m, modifiers, h, topo) => {
        const model = models[m % models.length];
        const fx = hosts[h.host];
        if (model === undefined || fx === undefined) throw new Error('generator out of range');
        const supported = fx.supported.map((e) => ({ ...e }));
        for (const c of h.clear) {
          const w = words[c.word % words.length];
          if (w === undefined) continue;
          const e = supported.find((x) => x.function === w.leaf && x.index === (w.subleaf ?? 0));
          if (e !== undefined) e[w.register] = (e[w.register] & ~c.mask) >>> 0;
        }
        const hostCaps: HostCpuCapabilities = { ...fx.hostCaps, irqchip: h.irqchip, tscDeadlineTimer: h.tscDeadline, hyperv: h.hyperv };
        let r;
        try {
          r = composeCpuid({ model, modifiers, supported, hostCaps, topology: { ...topo.t, vcpuIndex: topo.vcpuIndex } });
        } catch (err) {
          if (err instanceof ConfigError) return; // e.g. Hyper-V on a host without it: refused, not composed
          throw err;
        }
        const ctx = { irqchip: h.irqchip, tscDeadline: h.tscDeadline, threadsPerPkg: topo.t.cores * topo.t.threads };
        const base = kvmBase(r.entries);
        for (const f of allCpuFeatures()) {
          let fn = f.word.leaf;
          if (fn === 0x40000001) {
            if (base === undefined) continue;
            fn = base + 1;
          }
          const composed = cpuidRegisterValue(r.entries, fn, f.word.subleaf ?? 0, f.word.register);
          const host = cpuidRegisterValue(supported, f.word.leaf, f.word.subleaf ?? 0, f.word.register);
          for (const bit of f.bits) {
            if (((composed >>> bit) & 1) === 0) continue;
            const ok = ((host >>> bit) & 1) === 1 || settableRegardless(f.name, ctx);
            expect(ok, `${model.name} ${modifiers.join(',')}: ${f.name} (0x${fn.toString(16)} ${f.word.register}[${bit}]) is set but the host lacks it`).to.equal(true);
            if (h.irqchip === 'userspace') expect(['x2apic', 'kvm-pv-unhalt']).not.to.include(f.name);
          }
        }
        // one entry per (function, index), sorted
        const keys = r.entries.map((e) => e.function * 0x100 + e.index);
        expect(keys).to.deep.equal([...keys].sort((a, b) => a - b));
        expect(new Set(keys).size).to.equal(keys.length);
      }),
      { numRuns: 300 },
    );
  });

  it('parsing and composing a hostile --cpu string throws nothing but ConfigError', () => {
    const fx = hosts[0];
    if (fx === undefined) throw new Error('no fixture');
    const names = ['Haswell', 'host', 'Opteron_G5', 'qemu64'];
    const hostile = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.string({ unit: 'binary', maxLength: 200 }),
      fc.array(fc.oneof(token, fc.string({ maxLength: 20 }), fc.constantFrom('', ',', '=', '+', '-', '__proto__', 'constructor=on', '+__proto__', 'level=-1', 'xlevel=0xffffffff', 'hv-spinlocks=0', 'vendor=', 'model-id=' + 'x'.repeat(60), 'phys-bits=99')), { maxLength: 10 }).chain((toks) =>
        fc.constantFrom(...names).map((n) => [n, ...toks].join(',')),
      ),
    );
    fc.assert(
      fc.property(hostile, (text) => {
        try {
          const opt = parseCpuOption(text);
          if (opt.kind === 'help') return;
          interpretCpuModifiers(opt.modifiers);
          const model = findCpuModel(models, opt.model);
          planCpuid({ model, modifiers: opt.modifiers, supported: fx.supported, hostCaps: fx.hostCaps, topology: { sockets: 1, cores: 2, threads: 1 } }).forVcpu(1);
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('parsing a hostile --smp string throws nothing but ConfigError, and what parses is consistent', () => {
    const smp = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc
        .array(
          fc.tuple(fc.constantFrom('cpus', 'sockets', 'cores', 'threads', 'maxcpus', 'dies', 'x', ''), fc.oneof(fc.nat({ max: 300 }).map(String), fc.string({ maxLength: 5 }))),
          { maxLength: 6 },
        )
        .map((kv) => kv.map(([k, v]) => (k === '' ? v : `${k}=${v}`)).join(',')),
    );
    fc.assert(
      fc.property(smp, (text) => {
        try {
          const s = parseSmpOption(text);
          expect(s.sockets * s.cores * s.threads).to.equal(s.maxcpus);
          expect(s.cpus).to.be.at.most(s.maxcpus).and.at.least(1);
        } catch (err) {
          if (!(err instanceof ConfigError)) throw err;
        }
      }),
      { numRuns: 1000 },
    );
  });
});
