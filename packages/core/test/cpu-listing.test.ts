import { expect } from 'chai';
import { formatCpuHelp, listCpuModels } from '../src/index.js';
import { cpuModels, loadHostFixture } from './cpu-fixtures.js';

const intel = loadHostFixture('intel-skylake-i5-6600k.json');
const amd = loadHostFixture('amd-fx-8350-piledriver.json');
const pvm = loadHostFixture('pvm-dev-host-2026.json');

describe('CPU model listing', () => {
  it('lists every model with its features, without host data leaving runnable open', async () => {
    const list = listCpuModels(await cpuModels());
    expect(list.map((m) => m.name)).to.deep.equal([
      'Haswell', 'Haswell-noTSX', 'host', 'kvm64', 'Opteron_G1', 'Opteron_G2', 'Opteron_G3', 'Opteron_G4', 'Opteron_G5', 'qemu64', 'SandyBridge',
    ]);
    const haswell = list.find((m) => m.name === 'Haswell');
    expect(haswell?.runnable).to.equal(undefined);
    expect(haswell?.features).to.include.members(['avx2', 'movbe', 'hle', 'sse4.2']);
  });

  it('says which models an Intel Skylake host runs and what it lacks for the others', async () => {
    const list = listCpuModels(await cpuModels(), { supported: intel.supported, hostCaps: intel.hostCaps });
    const by = Object.fromEntries(list.map((m) => [m.name, m]));
    expect(by['Haswell']?.runnable).to.equal(true);
    expect(by['SandyBridge']?.runnable).to.equal(true);
    expect(by['host']?.runnable).to.equal(true);
    expect(by['host']?.features).to.include('avx2');
    expect(by['Opteron_G5']?.runnable).to.equal(false);
    expect(by['Opteron_G5']?.unavailableFeatures).to.include.members(['fma4', 'xop', 'tbm', 'sse4a', 'misalignsse']);
  });

  it('says an AMD Piledriver host runs Opteron_G5 but not Haswell', async () => {
    const list = listCpuModels(await cpuModels(), { supported: amd.supported, hostCaps: amd.hostCaps });
    const by = Object.fromEntries(list.map((m) => [m.name, m]));
    expect(by['Opteron_G5']?.runnable).to.equal(true);
    expect(by['Haswell']?.runnable).to.equal(false);
  });

  it('formats --cpu help with the models, what this host lacks, and the flags', async () => {
    const text = formatCpuHelp(listCpuModels(await cpuModels(), { supported: pvm.supported, hostCaps: pvm.hostCaps }));
    expect(text).to.match(/^Available CPU models:/);
    expect(text).to.match(/\n {2}Haswell +Intel Core Processor \(Haswell\) {2}\[this host lacks: .*movbe/);
    expect(text).to.match(/\n {2}host +the host CPU/);
    expect(text).to.match(/Recognized CPUID flags:\n {2}3dnow /);
  });

  it('marks a broken definition unusable instead of failing the listing', () => {
    const list = listCpuModels([{ name: 'bad', version: 0, vendor: 'GenuineIntel', family: 6, model: 1, stepping: 1, modelId: '', level: 1, xlevel: 0, features: [] }]);
    expect(list[0]?.runnable).to.equal(false);
    expect(list[0]?.problems).to.deep.equal(['version must be an integer ≥ 1']);
  });
});
