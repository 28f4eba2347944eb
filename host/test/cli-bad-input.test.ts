/**
 * Bad input to `tsvmm run`: each case ends with exit status 2 and exactly one
 * line on stderr that says what was wrong (foundation issue, "Bad input").
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
const cli = path.join(root, 'host/dist/src/cli.js');
const demo = path.join(root, 'test/guest/out/demo.elf');

interface Run {
  status: number | null;
  stderr: string;
  stdout: string;
}

function run(args: string[], opts: { env?: Record<string, string>; withoutDacOverride?: boolean } = {}): Run {
  // Without CAP_DAC_OVERRIDE root is held to file modes like any user, while
  // it can still read the repository wherever it was cloned (a switch to
  // another user could not read a clone in a 0700 directory).
  const cmd = opts.withoutDacOverride ? 'setpriv' : process.execPath;
  const argv = opts.withoutDacOverride
    ? ['--bounding-set=-dac_override,-dac_read_search', '--inh-caps=-dac_override,-dac_read_search', process.execPath, cli, 'run', ...args]
    : [cli, 'run', ...args];
  const r = spawnSync(cmd, argv, { encoding: 'utf8', env: { ...process.env, ...opts.env }, input: '', timeout: 60_000 });
  return { status: r.status, stderr: r.stderr, stdout: r.stdout };
}

function expectOneLineError(r: Run, pattern: RegExp): void {
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  expect(r.status, `stderr: ${r.stderr}`).to.equal(2);
  expect(lines, `stderr should be one line:\n${r.stderr}`).to.have.length(1);
  expect(lines[0]).to.match(/^tsvmm: /);
  expect(lines[0]).to.match(pattern);
}

describe('tsvmm run: bad input', function () {
  this.timeout(120_000);
  let dir: string;
  before(() => {
    if (!fs.existsSync(demo)) throw new Error(`${demo} is missing: run npm run build:guest`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-cli-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a missing kernel', () => {
    expectOneLineError(run(['--kernel', path.join(dir, 'nope.elf')]), /cannot read kernel '.*nope\.elf': no such file/);
  });

  it('an unreadable kernel (a directory)', () => {
    expectOneLineError(run(['--kernel', dir]), /cannot read kernel '.*': is a directory/);
  });

  it('a file that is neither multiboot nor bzImage', () => {
    const f = path.join(dir, 'notes.txt');
    fs.writeFileSync(f, 'just text\n'.repeat(100));
    expectOneLineError(run(['--kernel', f]), /neither a multiboot kernel .* nor a Linux bzImage/);
  });

  it('an unknown device type', () => {
    expectOneLineError(run(['--kernel', demo, '--device', 'flux-capacitor']), /unknown device type 'flux-capacitor'/);
  });

  it('an unknown device property', () => {
    expectOneLineError(run(['--kernel', demo, '--device', 'isa-debug-exit,iobse=0xf4']), /device 'debugexit0' \(isa-debug-exit\): unknown property 'iobse'/);
  });

  it('an unknown option', () => {
    expectOneLineError(run(['--kernel', demo, '--turbo']), /unknown option '--turbo'/);
  });

  it('a memory size that does not parse', () => {
    expectOneLineError(run(['--kernel', demo, '-m', 'lots']), /memory size 'lots' does not parse/);
  });

  it('a memory size that does not fit', () => {
    expectOneLineError(run(['--kernel', demo, '-m', '4T']), /larger than the 1024 GiB tsvmm supports/);
    expectOneLineError(run(['--kernel', demo, '-m', '1M']), /too small/);
  });

  it('no /dev/kvm', () => {
    expectOneLineError(run(['--kernel', demo], { env: { TSVMM_KVM_DEVICE: path.join(dir, 'kvm') } }), /does not exist: this host has no KVM/);
  });

  it('/dev/kvm not permitted for this user', () => {
    if (process.getuid?.() !== 0) throw new Error('this test drops CAP_DAC_OVERRIDE with setpriv (util-linux) and needs root');
    // a KVM device node (char 10:232, as /dev/kvm) that nobody may open
    const node = path.join(dir, 'kvm-0000');
    const mk = spawnSync('mknod', ['-m', '000', node, 'c', '10', '232'], { encoding: 'utf8' });
    if (mk.status !== 0) throw new Error(`mknod (coreutils) failed: ${mk.stderr}`);
    try {
      expectOneLineError(
        run(['--kernel', demo], { env: { TSVMM_KVM_DEVICE: node }, withoutDacOverride: true }),
        new RegExp(`${node.replace(/[/.]/g, '\\$&')} exists but this user may not open it \\(EACCES\\)`),
      );
    } finally {
      fs.rmSync(node, { force: true });
    }
  });

  it('two devices claiming the same I/O range', () => {
    expectOneLineError(
      run(['--kernel', demo, '--device', 'isa-debug-exit,iobase=0xf4,iosize=4', '--device', 'isa-debug-exit,iobase=0xf6,iosize=2']),
      /debugexit1: I\/O ports 0xf6-0xf7 overlaps I\/O ports 0xf4-0xf7 claimed by debugexit0/,
    );
  });

  it('a plugin whose api range does not match', () => {
    const p = path.join(dir, 'old-plugin');
    fs.mkdirSync(p);
    fs.writeFileSync(
      path.join(p, 'package.json'),
      JSON.stringify({ name: 'tsvmm-plugin-old', version: '0.3.0', type: 'module', main: 'index.js', tsvmm: { kind: 'device', api: '^0.1.0', provides: ['old-thing'] } }),
    );
    fs.writeFileSync(path.join(p, 'index.js'), 'export default { register() {} };');
    expectOneLineError(run(['--kernel', demo, '--plugin', p]), /tsvmm-plugin-old@0\.3\.0 requires tsvmm plugin API \^0\.1\.0, but this tsvmm provides plugin API 1\.\d+\.\d+/);
  });

  it('a config file that is not valid JSON, and one with a wrong field', () => {
    const bad = path.join(dir, 'bad.json');
    fs.writeFileSync(bad, '{ "kernel": ');
    expectOneLineError(run(['--config', bad]), /config file '.*bad\.json' is not valid JSON/);
    const wrong = path.join(dir, 'wrong.json');
    fs.writeFileSync(wrong, JSON.stringify({ kernel: demo, smp: 'many' }));
    expectOneLineError(run(['--config', wrong]), /'smp'/);
  });
});
