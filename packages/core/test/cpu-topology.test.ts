import { expect } from 'chai';
import { apicIdBitWidth, apicIds, ConfigError, parseSmpOption, resolveSmp } from '../src/index.js';

describe('--smp topology', () => {
  it('parses cpus with sockets and cores', () => {
    expect(parseSmpOption('2,sockets=1,cores=2')).to.deep.equal({ cpus: 2, sockets: 1, cores: 2, threads: 1, maxcpus: 2 });
    expect(parseSmpOption('cpus=8,sockets=2,cores=2,threads=2')).to.deep.equal({ cpus: 8, sockets: 2, cores: 2, threads: 2, maxcpus: 8 });
  });

  it('fills omitted members preferring cores, or sockets for old machine types (QEMU 6.2 rule)', () => {
    expect(parseSmpOption('4')).to.deep.equal({ cpus: 4, sockets: 1, cores: 4, threads: 1, maxcpus: 4 });
    expect(parseSmpOption('4', { preferSockets: true })).to.deep.equal({ cpus: 4, sockets: 4, cores: 1, threads: 1, maxcpus: 4 });
    expect(parseSmpOption('sockets=2,cores=2,threads=2')).to.deep.equal({ cpus: 8, sockets: 2, cores: 2, threads: 2, maxcpus: 8 });
    expect(parseSmpOption('2,maxcpus=8,sockets=2,cores=2')).to.deep.equal({ cpus: 2, sockets: 2, cores: 2, threads: 2, maxcpus: 8 });
  });

  it('resolves the machine description forms', () => {
    expect(resolveSmp(undefined)).to.deep.equal({ cpus: 1, sockets: 1, cores: 1, threads: 1, maxcpus: 1 });
    expect(resolveSmp(3)).to.deep.equal({ cpus: 3, sockets: 1, cores: 3, threads: 1, maxcpus: 3 });
    expect(resolveSmp({ cpus: 4, threads: 2 })).to.deep.equal({ cpus: 4, sockets: 1, cores: 2, threads: 2, maxcpus: 4 });
  });

  it('rejects a hierarchy whose product is not maxcpus, naming every member', () => {
    expect(() => parseSmpOption('4,sockets=1,cores=3')).to.throw(ConfigError, /sockets \(1\) \* cores \(3\) \* threads \(1\) != maxcpus \(4\)/);
  });

  it('rejects maxcpus below cpus', () => {
    expect(() => parseSmpOption('4,maxcpus=2')).to.throw(ConfigError);
  });

  it('names the bad token', () => {
    expect(() => parseSmpOption('2,sokets=1')).to.throw(ConfigError, /unknown parameter 'sokets'/);
    expect(() => parseSmpOption('2,cores=0')).to.throw(ConfigError, /cores=0 must be an integer of at least 1/);
    expect(() => parseSmpOption('2,cores=x')).to.throw(ConfigError, /cores=x is not a positive integer/);
    expect(() => parseSmpOption('2,dies=2')).to.throw(ConfigError, /'dies' is not supported/);
    expect(() => parseSmpOption('2,cores=2,cores=1')).to.throw(ConfigError, /'cores' given twice/);
    expect(() => parseSmpOption('5000')).to.throw(ConfigError, /more than 4096/);
  });

  it('sizes each APIC ID field as ceil(log2(count)) bits', () => {
    expect([1, 2, 3, 4, 5, 8, 9].map(apicIdBitWidth)).to.deep.equal([0, 1, 2, 2, 3, 3, 4]);
  });

  it('numbers vCPUs like QEMU: sockets=1,cores=2 gives 0,1 and 2x2x2 gives 0..7', () => {
    expect(apicIds({ sockets: 1, cores: 2, threads: 1 }, 2)).to.deep.equal([0, 1]);
    expect(apicIds({ sockets: 2, cores: 2, threads: 2 }, 8)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('leaves holes where a level is not a power of two', () => {
    expect(apicIds({ sockets: 2, cores: 3, threads: 1 }, 6)).to.deep.equal([0, 1, 2, 4, 5, 6]);
    expect(apicIds({ sockets: 2, cores: 1, threads: 3 }, 6)).to.deep.equal([0, 1, 2, 4, 5, 6]);
    expect(apicIds({ sockets: 1, cores: 3, threads: 2 }, 6)).to.deep.equal([0, 1, 2, 3, 4, 5]);
    expect(apicIds({ sockets: 2, cores: 3, threads: 2 }, 12)).to.deep.equal([0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
  });
});
