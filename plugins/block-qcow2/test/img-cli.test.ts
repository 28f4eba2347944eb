/**
 * `tsvmm img` (runImg) against qemu-img: the same flags, exit codes and
 * machine-readable output, and images each tool accepts from the other.
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { Prng, img, qemu, qemuCheckClean, qemuCompare, scratch } from './helpers.js';

const MiB = 1024 * 1024;

describe('tsvmm img', function () {
  this.timeout(60000);
  let s: ReturnType<typeof scratch>;
  beforeEach(() => (s = scratch()));
  afterEach(() => s.cleanup());

  it('create: size suffixes, -o options, -b/-F; qemu-img info agrees', async () => {
    const f = s.file('a.qcow2');
    const r = await img(['create', '-f', 'qcow2', '-o', 'cluster_size=4k,lazy_refcounts=on', '-o', 'refcount_bits=8', f, '10M']);
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.match(/^Formatting '.*a\.qcow2', fmt=qcow2 size=10485760/);
    const qi = JSON.parse(qemu('qemu-img', ['info', '--output', 'json', f]).stdout) as Record<string, unknown> & { 'format-specific': { data: Record<string, unknown> } };
    expect(qi['virtual-size']).to.equal(10 * MiB);
    expect(qi['cluster-size']).to.equal(4096);
    expect(qi['format-specific'].data).to.include({ 'lazy-refcounts': true, 'refcount-bits': 8, compat: '1.1' });
    // a backing file gives the size when none is given
    const top = s.file('top.qcow2');
    expect((await img(['create', '-q', '-f', 'qcow2', '-b', 'a.qcow2', '-F', 'qcow2', top])).code).to.equal(0);
    const ti = JSON.parse(qemu('qemu-img', ['info', '--output', 'json', top]).stdout) as Record<string, unknown>;
    expect(ti).to.include({ 'virtual-size': 10 * MiB, 'backing-filename': 'a.qcow2', 'backing-filename-format': 'qcow2' });
    qemuCheckClean(top);
  });

  it('create: bad input says what is wrong', async () => {
    const r = await img(['create', '-f', 'qcow2', '-o', 'cluster_size=1000', s.file('x.qcow2'), '1M']);
    expect(r.code).to.equal(1);
    expect(r.err).to.contain('cluster_size').and.contain('power of two');
    const r2 = await img(['create', '-f', 'qcow2', s.file('x.qcow2'), 'lots']);
    expect(r2.code).to.equal(1);
    expect(r2.err).to.contain('not a size');
    const r3 = await img(['create', '-f', 'nope', s.file('x.img'), '1M']);
    expect(r3.err).to.contain("unknown image format 'nope'");
  });

  it('create -o help lists the options without a filename, as qemu-img; without -o help a filename is required', async () => {
    const help = await img(['create', '-f', 'qcow2', '-o', 'help']);
    expect(help.code).to.equal(0);
    expect(help.out).to.match(/^Supported options for qcow2:\n/);
    expect(help.out).to.match(/cluster_size/);
    const missing = await img(['create', '-f', 'qcow2']);
    expect(missing.code).to.equal(1);
    expect(missing.err).to.match(/missing the image's filename/);
  });

  it('info --output json matches qemu-img for the fields both fill', async () => {
    const f = s.file('i.qcow2');
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', f, '3M']);
    const ours = JSON.parse((await img(['info', '--output', 'json', f])).out) as Record<string, unknown>;
    const theirs = JSON.parse(qemu('qemu-img', ['info', '--output', 'json', f]).stdout) as Record<string, unknown>;
    for (const k of ['virtual-size', 'format', 'cluster-size', 'dirty-flag', 'format-specific']) expect(ours[k], k).to.deep.equal(theirs[k]);
    const human = (await img(['info', f])).out;
    expect(human).to.contain('virtual size: 3 MiB (3145728 bytes)').and.contain('compat: 0.10');
  });

  it('info --backing-chain lists every image', async () => {
    writeFileSync(s.file('base.raw'), Buffer.alloc(MiB));
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', s.file('top.qcow2')]);
    const j = JSON.parse((await img(['info', '--backing-chain', '--output', 'json', s.file('top.qcow2')])).out) as Array<{ format: string }>;
    expect(j.map((x) => x.format)).to.deep.equal(['qcow2', 'raw']);
  });

  it('map --output json equals qemu-img map', async () => {
    writeFileSync(s.file('base.raw'), new Prng(2).bytes(4 * MiB));
    const f = s.file('m.qcow2');
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', f]);
    qemu('qemu-io', ['-c', 'write -P 1 0 64k', '-c', 'write -z 1M 128k', '-c', 'write -P 2 3M 4k', f]);
    const ours = (await img(['map', '--output', 'json', f])).out;
    const theirs = qemu('qemu-img', ['map', '--output', 'json', f]).stdout;
    expect(JSON.parse(ours)).to.deep.equal(JSON.parse(theirs));
    const f2 = s.file('plain.qcow2');
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', f2, '4M']);
    qemu('qemu-io', ['-c', 'write -P 1 64k 192k', '-c', 'write -z 2M 64k', f2]);
    expect(JSON.parse((await img(['map', '--output', 'json', f2])).out)).to.deep.equal(JSON.parse(qemu('qemu-img', ['map', '--output', 'json', f2]).stdout));
    expect((await img(['map', f2])).out).to.equal(qemu('qemu-img', ['map', f2]).stdout);
  });

  it('check: exit 0 clean, 3 for leaks, 2 for corruptions, --output json like qemu-img', async () => {
    const f = s.file('c.qcow2');
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', f, '4M']);
    qemu('qemu-io', ['-c', 'write -P 1 0 256k', f]);
    const ok = await img(['check', '--output', 'json', f]);
    expect(ok.code).to.equal(0);
    expect(JSON.parse(ok.out)).to.deep.equal(JSON.parse(qemu('qemu-img', ['check', '--output', 'json', f]).stdout));
    // a leak: a refcount for a cluster nothing references
    let b = readFileSync(f);
    const reftable = Number(b.readBigUInt64BE(48));
    const block = Number(b.readBigUInt64BE(reftable));
    const last = b.length / 65536 - 1;
    b = Buffer.concat([b, Buffer.alloc(65536)]);
    b.writeUInt16BE(1, block + (last + 1) * 2);
    writeFileSync(f, b);
    const leak = await img(['check', f]);
    expect(leak.code).to.equal(3);
    expect(leak.out).to.contain('leaked clusters were found');
    expect(qemu('qemu-img', ['check', f], { allowFail: true }).status).to.equal(3);
    // a corruption: refcount 0 for a used cluster
    b.writeUInt16BE(0, block + last * 2);
    writeFileSync(f, b);
    const bad = await img(['check', f]);
    expect(bad.code).to.equal(2);
    expect(bad.out).to.contain('errors were found');
    const fixed = await img(['check', '-r', 'all', f]);
    expect(fixed.code, fixed.out).to.equal(0);
    expect(fixed.out).to.contain('The following inconsistencies were found and repaired');
    qemuCheckClean(f);
  });

  it('compare: exit 0 identical, 1 with "Content mismatch at offset N!" like qemu-img, 2 on error', async () => {
    const a = new Prng(4).bytes(2 * MiB);
    writeFileSync(s.file('a.raw'), a);
    qemu('qemu-img', ['convert', '-O', 'qcow2', s.file('a.raw'), s.file('a.qcow2')]);
    expect((await img(['compare', s.file('a.qcow2'), s.file('a.raw')])).code).to.equal(0);
    const b = Buffer.from(a);
    b[1234567] = (b[1234567] ?? 0) ^ 1;
    writeFileSync(s.file('b.raw'), b);
    const ours = await img(['compare', s.file('a.qcow2'), s.file('b.raw')]);
    const theirs = qemu('qemu-img', ['compare', s.file('a.qcow2'), s.file('b.raw')], { allowFail: true });
    expect(ours.code).to.equal(1);
    expect(theirs.status).to.equal(1);
    expect(ours.out).to.equal(theirs.stdout);
    const err = await img(['compare', s.file('a.qcow2'), s.file('missing.raw')]);
    expect(err.code).to.equal(2);
    expect(err.err).to.contain('missing.raw');
    // a longer image with a zero tail is identical unless -s
    const longer = Buffer.concat([Buffer.from(a), Buffer.alloc(MiB)]);
    writeFileSync(s.file('long.raw'), longer);
    expect((await img(['compare', s.file('a.qcow2'), s.file('long.raw')])).code).to.equal(0);
    expect((await img(['compare', '-s', s.file('a.qcow2'), s.file('long.raw')])).code).to.equal(1);
  });

  it('convert -p reports progress; -O qcow2 -o compat=0.10 output passes qemu-img check', async () => {
    writeFileSync(s.file('in.raw'), new Prng(9).bytes(3 * MiB));
    const r = await img(['convert', '-p', '-O', 'qcow2', '-o', 'compat=0.10,cluster_size=16k', s.file('in.raw'), s.file('out.qcow2')]);
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.contain('(100.00/100%)');
    qemuCheckClean(s.file('out.qcow2'));
    qemuCompare(s.file('out.qcow2'), s.file('in.raw'));
  });

  it('convert -B copies only the top layer over the new backing file', async () => {
    writeFileSync(s.file('base.raw'), new Prng(10).bytes(2 * MiB));
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', s.file('top.qcow2')]);
    qemu('qemu-io', ['-c', 'write -P 3 64k 64k', '-c', 'write -z 512k 64k', s.file('top.qcow2')]);
    const r = await img(['convert', '-O', 'qcow2', '-B', 'base.raw', '-F', 'raw', s.file('top.qcow2'), s.file('new.qcow2')]);
    expect(r.code, r.err).to.equal(0);
    qemuCheckClean(s.file('new.qcow2'));
    qemuCompare(s.file('new.qcow2'), s.file('top.qcow2'), 'qcow2', 'qcow2');
    const chk = JSON.parse(qemu('qemu-img', ['check', '--output', 'json', s.file('new.qcow2')]).stdout) as Record<string, number>;
    expect(chk['allocated-clusters']).to.be.at.most(2);
  });

  it('resize: absolute, +SIZE, -SIZE (needs --shrink)', async () => {
    const f = s.file('r.qcow2');
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', f, '4M']);
    qemu('qemu-io', ['-c', 'write -P 9 3M 1M', f]);
    expect((await img(['resize', f, '+2M'])).code).to.equal(0);
    const refused = await img(['resize', f, '-3M']);
    expect(refused.code).to.equal(1);
    expect(refused.err).to.contain('--shrink');
    expect((await img(['resize', '--shrink', f, '-3M'])).code).to.equal(0);
    expect((await img(['resize', f, '8M'])).code).to.equal(0);
    qemuCheckClean(f);
    const info = JSON.parse(qemu('qemu-img', ['info', '--output', 'json', f]).stdout) as Record<string, number>;
    expect(info['virtual-size']).to.equal(8 * MiB);
    // the part that was cut off reads as zeroes after growing again
    qemu('qemu-img', ['convert', '-O', 'raw', f, s.file('r.raw')]);
    expect(readFileSync(s.file('r.raw')).subarray(3 * MiB).every((x) => x === 0)).to.equal(true);
  });

  it('commit writes the top layer into its backing file and empties the top', async () => {
    const base = new Prng(12).bytes(2 * MiB);
    writeFileSync(s.file('base.raw'), base);
    qemu('qemu-img', ['convert', '-O', 'qcow2', s.file('base.raw'), s.file('base.qcow2')]);
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', s.file('top.qcow2')]);
    qemu('qemu-io', ['-c', 'write -P 0x21 100k 200k', '-c', 'write -z 1M 64k', s.file('top.qcow2')]);
    qemu('qemu-img', ['convert', '-O', 'raw', s.file('top.qcow2'), s.file('expect.raw')]);
    const r = await img(['commit', s.file('top.qcow2')]);
    expect(r.code, r.err).to.equal(0);
    expect(r.out).to.contain('Image committed.');
    qemuCheckClean(s.file('base.qcow2'));
    qemuCheckClean(s.file('top.qcow2'));
    qemuCompare(s.file('base.qcow2'), s.file('expect.raw'));
    qemuCompare(s.file('top.qcow2'), s.file('expect.raw'));
    const chk = JSON.parse(qemu('qemu-img', ['check', '--output', 'json', s.file('top.qcow2')]).stdout) as Record<string, number>;
    expect(chk['allocated-clusters'] ?? 0).to.equal(0);
  });

  it('rebase: safe mode keeps the content, -u only rewrites the header', async () => {
    writeFileSync(s.file('old.raw'), new Prng(13).bytes(2 * MiB));
    writeFileSync(s.file('new.raw'), new Prng(14).bytes(2 * MiB));
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'old.raw', '-F', 'raw', s.file('t.qcow2')]);
    qemu('qemu-io', ['-c', 'write -P 5 0 100k', s.file('t.qcow2')]);
    qemu('qemu-img', ['convert', '-O', 'raw', s.file('t.qcow2'), s.file('before.raw')]);
    const r = await img(['rebase', '-b', 'new.raw', '-F', 'raw', s.file('t.qcow2')]);
    expect(r.code, r.err).to.equal(0);
    qemuCheckClean(s.file('t.qcow2'));
    qemuCompare(s.file('t.qcow2'), s.file('before.raw'));
    const info = JSON.parse(qemu('qemu-img', ['info', '--output', 'json', s.file('t.qcow2')]).stdout) as Record<string, string>;
    expect(info['backing-filename']).to.equal('new.raw');
    expect((await img(['rebase', '-u', '-b', 'old.raw', '-F', 'raw', s.file('t.qcow2')])).code).to.equal(0);
    const info2 = JSON.parse(qemu('qemu-img', ['info', '--output', 'json', s.file('t.qcow2')]).stdout) as Record<string, string>;
    expect(info2['backing-filename']).to.equal('old.raw');
    qemuCheckClean(s.file('t.qcow2'));
    expect((await img(['rebase', '-b', '', s.file('t.qcow2')])).code).to.equal(0);
    qemuCompare(s.file('t.qcow2'), s.file('before.raw'));
  });

  it('amend -o compat=0.10 and back, keeping zero clusters readable', async () => {
    const f = s.file('a.qcow2');
    writeFileSync(s.file('base.raw'), Buffer.alloc(2 * MiB, 0x61));
    qemu('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', f]);
    qemu('qemu-io', ['-c', 'write -P 1 0 64k', '-c', 'write -z 256k 128k', f]);
    qemu('qemu-img', ['convert', '-O', 'raw', f, s.file('expect.raw')]);
    let r = await img(['amend', '-o', 'compat=0.10', f]);
    expect(r.code, r.err).to.equal(0);
    qemuCheckClean(f);
    qemuCompare(f, s.file('expect.raw'));
    expect((JSON.parse(qemu('qemu-img', ['info', '--output', 'json', f]).stdout) as { 'format-specific': { data: { compat: string } } })['format-specific'].data.compat).to.equal('0.10');
    r = await img(['amend', '-o', 'compat=1.1,lazy_refcounts=on', f]);
    expect(r.code, r.err).to.equal(0);
    qemuCheckClean(f);
    qemuCompare(f, s.file('expect.raw'));
  });
});
