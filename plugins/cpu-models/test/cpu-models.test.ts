import { expect } from 'chai';
import * as fs from 'node:fs';
import {
  cpuidEntry,
  cpuModelProblems,
  createContainer,
  planCpuid,
  PluginTokens,
  vendorRegisters,
  type CpuidEntry,
  type CpuModelDefinition,
  type PluginManifest,
} from '@tsvmm/core';
import plugin, { cpuModels } from '../src/index.js';

interface QemuExpansion {
  models: Record<string, { features: string[]; vendor: string; family: number; model: number; stepping: number; level: number; xlevel: number; 'model-id': string }>;
}
const qemu = JSON.parse(fs.readFileSync(new URL('../../test/fixtures/qemu-7.2-kvm-expansion.json', import.meta.url), 'utf8')) as QemuExpansion;
const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { tsvmm: { provides: string[] } };

/** A host whose KVM supports every feature bit: what is left is the model plus QEMU's KVM defaults. */
function everythingHost(): CpuidEntry[] {
  const all = { eax: 0xffffffff, ebx: 0xffffffff, ecx: 0xffffffff, edx: 0xffffffff };
  return [
    cpuidEntry(0, 0, { eax: 0x16, ...vendorRegisters('GenuineIntel') }),
    cpuidEntry(1, 0, all),
    cpuidEntry(6, 0, all),
    cpuidEntry(7, 0, all, 1),
    cpuidEntry(7, 1, all, 1),
    cpuidEntry(0xd, 0, { eax: 0x2ff }, 1),
    cpuidEntry(0xd, 1, all, 1),
    cpuidEntry(0x40000001, 0, all),
    cpuidEntry(0x80000000, 0, { eax: 0x8000001f }),
    cpuidEntry(0x80000001, 0, all),
    cpuidEntry(0x80000007, 0, all),
    cpuidEntry(0x80000008, 0, { eax: 0x3030, ebx: 0xffffffff }),
    cpuidEntry(0x8000000a, 0, all),
  ];
}

describe('cpu-models plugin', () => {
  it('registers one definition per name its package.json provides', async () => {
    const container = createContainer();
    const manifest = { name: '@tsvmm/plugin-cpu-models', version: '0.1.0', kind: 'cpu-model', api: '^1.0.0', provides: pkg.tsvmm.provides, directory: '.', entry: '.' } satisfies PluginManifest;
    await plugin.register({ container, apiVersion: '1.0.0', manifest });
    const defs = container.resolveAll<CpuModelDefinition>(PluginTokens['cpu-model']);
    expect(defs.map((d) => d.name).sort()).to.deep.equal([...pkg.tsvmm.provides].sort());
  });

  it('ships only sound definitions', () => {
    for (const def of cpuModels) expect(cpuModelProblems(def), def.name).to.deep.equal([]);
  });

  for (const def of cpuModels.filter((d) => !d.passthrough)) {
    it(`${def.name} expands under KVM to the same features and identity as QEMU 7.2's ${def.name}`, () => {
      const expected = qemu.models[def.name];
      if (expected === undefined) throw new Error(`no QEMU expansion recorded for ${def.name}`);
      const plan = planCpuid({
        model: def,
        supported: everythingHost(),
        hostCaps: { hyperv: false, tscDeadlineTimer: true, irqchip: 'kernel' },
        topology: { sockets: 1, cores: 1, threads: 1 },
      });
      expect(plan.features).to.deep.equal([...expected.features].sort());
      expect({ vendor: plan.vendor, family: plan.family, model: plan.model, stepping: plan.stepping, level: plan.level, xlevel: plan.xlevel, modelId: plan.modelId }).to.deep.equal({
        vendor: expected.vendor,
        family: expected.family,
        model: expected.model,
        stepping: expected.stepping,
        level: expected.level,
        xlevel: expected.xlevel,
        modelId: expected['model-id'],
      });
    });
  }

  it('G5 is G4 plus FMA, F16C and TBM, as the Opteron 63xx added over the 62xx', () => {
    const byName = Object.fromEntries(cpuModels.map((d) => [d.name, new Set(d.features)]));
    const g4 = byName['Opteron_G4'] ?? new Set();
    const g5 = byName['Opteron_G5'] ?? new Set();
    expect([...g5].filter((f) => !g4.has(f)).sort()).to.deep.equal(['f16c', 'fma', 'tbm']);
    expect([...g4].filter((f) => !g5.has(f))).to.deep.equal([]);
  });

  it('Haswell-noTSX is Haswell without hle and rtm', () => {
    const h = cpuModels.find((d) => d.name === 'Haswell');
    const n = cpuModels.find((d) => d.name === 'Haswell-noTSX');
    expect([...(h?.features ?? [])].filter((f) => !(n?.features ?? []).includes(f)).sort()).to.deep.equal(['hle', 'rtm']);
  });
});
