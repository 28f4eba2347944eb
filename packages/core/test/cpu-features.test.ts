import { expect } from 'chai';
import { canonicalFeatureName, cpuFeatureNames, describeFeature, lookupCpuFeature, suggestFeatureNames } from '../src/index.js';

const where = (name: string): [number, number | undefined, string, number[]] => {
  const f = lookupCpuFeature(name);
  if (f === undefined) throw new Error(`no feature ${name}`);
  return [f.word.leaf, f.word.subleaf, f.word.register, [...f.bits]];
};

describe('CPU feature names', () => {
  it('places the Haswell features where the SDM puts them', () => {
    expect(where('movbe')).to.deep.equal([1, undefined, 'ecx', [22]]);
    expect(where('fma')).to.deep.equal([1, undefined, 'ecx', [12]]);
    expect(where('avx2')).to.deep.equal([7, 0, 'ebx', [5]]);
    expect(where('hle')).to.deep.equal([7, 0, 'ebx', [4]]);
    expect(where('rtm')).to.deep.equal([7, 0, 'ebx', [11]]);
    expect(where('xsaveopt')).to.deep.equal([0xd, 1, 'eax', [0]]);
  });

  it('places the AMD features where the APM puts them', () => {
    expect(where('xop')).to.deep.equal([0x80000001, undefined, 'ecx', [11]]);
    expect(where('fma4')).to.deep.equal([0x80000001, undefined, 'ecx', [16]]);
    expect(where('tbm')).to.deep.equal([0x80000001, undefined, 'ecx', [21]]);
    expect(where('lm')).to.deep.equal([0x80000001, undefined, 'edx', [29]]);
    expect(where('npt')).to.deep.equal([0x8000000a, undefined, 'edx', [0]]);
  });

  it('maps kvmclock to both CLOCKSOURCE bits and the PV features to cpuid.rst bits', () => {
    expect(where('kvmclock')).to.deep.equal([0x40000001, undefined, 'eax', [0, 3]]);
    expect(where('kvm-pv-unhalt')[3]).to.deep.equal([7]);
    expect(where('kvm-pv-tlb-flush')[3]).to.deep.equal([9]);
    expect(where('kvm-pv-ipi')[3]).to.deep.equal([11]);
    expect(where('kvmclock-stable-bit')[3]).to.deep.equal([24]);
  });

  it('accepts the spellings QEMU accepts', () => {
    expect(canonicalFeatureName('sse3')).to.equal('pni');
    expect(canonicalFeatureName('sse4_2')).to.equal('sse4.2');
    expect(canonicalFeatureName('sse4-1')).to.equal('sse4.1');
    expect(canonicalFeatureName('pclmuldq')).to.equal('pclmulqdq');
    expect(canonicalFeatureName('xd')).to.equal('nx');
    expect(canonicalFeatureName('i64')).to.equal('lm');
    expect(canonicalFeatureName('lahf_lm')).to.equal('lahf-lm');
    expect(canonicalFeatureName('kvm_pv_eoi')).to.equal('kvm-pv-eoi');
  });

  it('knows nothing by names that are object-prototype keys or not features', () => {
    for (const n of ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'AVX2', 'avx3', '']) expect(canonicalFeatureName(n), n).to.equal(undefined);
  });

  it('describes a feature the way QEMU warns about it', () => {
    const avx2 = lookupCpuFeature('avx2');
    const movbe = lookupCpuFeature('movbe');
    if (avx2 === undefined || movbe === undefined) throw new Error('missing');
    expect(describeFeature(avx2)).to.equal('CPUID[eax=07h,ecx=00h].EBX.avx2 [bit 5]');
    expect(describeFeature(movbe)).to.equal('CPUID.01H:ECX.movbe [bit 22]');
  });

  it('suggests near names for a misspelling', () => {
    expect(suggestFeatureNames('avx3')).to.include('avx2');
    expect(suggestFeatureNames('x'.repeat(100))).to.deep.equal([]);
  });

  it('lists each canonical name once, sorted', () => {
    const names = cpuFeatureNames();
    expect(names).to.deep.equal([...new Set(names)].sort());
    expect(names).to.include.members(['pni', 'sse4.2', 'avx2', 'kvm-pv-eoi']);
    expect(names).not.to.include('sse3');
  });
});
