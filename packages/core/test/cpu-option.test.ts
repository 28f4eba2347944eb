import { expect } from 'chai';
import { ConfigError, interpretCpuModifiers, parseCpuOption } from '../src/index.js';

const parse = (text: string) => {
  const o = parseCpuOption(text);
  if (o.kind !== 'model') throw new Error('expected a model');
  return { model: o.model, settings: interpretCpuModifiers(o.modifiers) };
};

describe('--cpu parsing', () => {
  it('splits the model name from its modifiers', () => {
    expect(parseCpuOption('Haswell,-hle,+x2apic,check')).to.deep.equal({ kind: 'model', model: 'Haswell', modifiers: ['-hle', '+x2apic', 'check'] });
    expect(parseCpuOption('host')).to.deep.equal({ kind: 'model', model: 'host', modifiers: [] });
  });

  it('recognizes help and ?', () => {
    expect(parseCpuOption('help')).to.deep.equal({ kind: 'help' });
    expect(parseCpuOption('?')).to.deep.equal({ kind: 'help' });
  });

  it('applies feat=on|off in order, then +feat, then -feat (QEMU order)', () => {
    const changes = parse('Haswell,-hle,hle=on,+hle,avx2=off,avx2=on').settings.featureChanges.map((c) => `${c.on ? '+' : '-'}${c.name}`);
    expect(changes).to.deep.equal(['+hle', '-avx2', '+avx2', '+hle', '-hle']);
  });

  it('treats a bare name as name=on and canonicalizes feature spellings', () => {
    const s = parse('qemu64,sse4_2,enforce').settings;
    expect(s.featureChanges).to.deep.equal([{ name: 'sse4.2', on: true, token: 'sse4_2' }]);
    expect(s.enforce).to.equal(true);
    expect(s.check).to.equal(true);
  });

  it('reads check=off, kvm=off, level, xlevel, family, model-id and vendor', () => {
    const s = parse('kvm64,check=off,kvm=off,level=0x16,xlevel=0x8000000a,family=6,model-id=My,,CPU,vendor=AuthenticAMD').settings;
    expect(s).to.include({ check: false, exposeKvm: false, level: 0x16, xlevel: 0x8000000a, family: 6, modelId: 'My,CPU', vendor: 'AuthenticAMD' });
  });

  it('reads the Hyper-V options', () => {
    const s = parse('Haswell,hv-relaxed,hv-vapic=on,+hv-time,hv-spinlocks=0x1fff,-hv-vapic').settings;
    expect([...s.hyperv]).to.deep.equal([
      ['hv-relaxed', true],
      ['hv-vapic', false],
      ['hv-time', true],
    ]);
    expect(s.hvSpinlocks).to.equal(0x1fff);
  });

  it('names the bad token of an unknown feature and suggests a near one', () => {
    expect(() => parse('Haswell,+avx3')).to.throw(ConfigError, /unknown CPU feature or property 'avx3' in '\+avx3'.*did you mean .*'avx2'/);
    expect(() => parse('Haswell,frobnicate=on')).to.throw(ConfigError, /'frobnicate' in 'frobnicate=on'/);
  });

  it('says which known features tsvmm does not implement', () => {
    expect(() => parse('Haswell,+sgx')).to.throw(ConfigError, /'sgx'.*not implemented by tsvmm/);
  });

  it('rejects bad values with the token and the expected form', () => {
    expect(() => parse('Haswell,avx2=maybe')).to.throw(ConfigError, /'avx2=maybe': expected avx2=on or avx2=off/);
    expect(() => parse('Haswell,level=0x100')).to.throw(ConfigError, /'level=0x100': level must be an integer from 0 to 0xff/);
    expect(() => parse('Haswell,vendor=Intel')).to.throw(ConfigError, /vendor must be exactly 12/);
    expect(() => parse('Haswell,hv-spinlocks=10')).to.throw(ConfigError, /hv-spinlocks=10 must be between 0xfff and 0xffffffff/);
    expect(() => parse('Haswell,xlevel=5')).to.throw(ConfigError, /xlevel=0x5 must be 0 or at least 0x80000000/);
    expect(() => parse('Haswell,+hv-spinlocks')).to.throw(ConfigError, /'\+hv-spinlocks': hv-spinlocks takes a value/);
  });

  it('rejects empty names, empty elements and control characters', () => {
    expect(() => parseCpuOption('')).to.throw(ConfigError, /missing CPU model name/);
    expect(() => parseCpuOption(',avx2')).to.throw(ConfigError, /missing CPU model name/);
    // ',,' is a literal comma, so this is the feature 'avx2,' followed by 'x'
    expect(() => parse('Haswell,+avx2,,,x')).to.throw(ConfigError, /unknown CPU feature or property 'avx2,'/);
    expect(() => parseCpuOption('Haswell,+avx2,x,y')).not.to.throw();
    expect(() => parseCpuOption('Has well')).to.throw(ConfigError, /not a CPU model name/);
    expect(() => parseCpuOption('Haswell,\u0000')).to.throw(ConfigError, /control characters/);
    expect(() => parse('Haswell,=on')).to.throw(ConfigError, /missing name before '='/);
  });

  it('tolerates a trailing comma as QEMU does', () => {
    expect(parseCpuOption('Haswell,-hle,')).to.deep.equal({ kind: 'model', model: 'Haswell', modifiers: ['-hle'] });
  });

  it('refuses absurdly long options', () => {
    expect(() => parseCpuOption(`Haswell,${'+avx2,'.repeat(2000)}`)).to.throw(ConfigError, /more than 4096/);
  });
});
