/** `tsvmm run` options that the guest tests do not already cover: --config, --serial file:, exit statuses. */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
const cli = path.join(root, 'host/dist/src/cli.js');
const guests = path.join(root, 'test/guest/out');

function tsvmm(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', input: '', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('tsvmm run', function () {
  this.timeout(120_000);
  let dir: string;
  before(() => {
    if (!fs.existsSync(path.join(guests, 'demo.elf'))) throw new Error(`${guests}/demo.elf is missing: run npm run build:guest`);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-run-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('boots the machine a --config file describes, with the exit status its guest asks for', () => {
    const config = path.join(dir, 'vm.json');
    fs.writeFileSync(
      config,
      JSON.stringify({
        kernel: path.join(guests, 'debug_exit.elf'),
        append: 'code=5',
        memory: '64M',
        devices: [{ driver: 'isa-debug-exit', iobase: 0xf4, iosize: 4 }],
        serial: ['null'],
      }),
    );
    const r = tsvmm(['run', '--config', config]);
    expect(r.status, r.stderr).to.equal((5 << 1) | 1);
  });

  it('lets command-line options override and extend the --config file', () => {
    const config = path.join(dir, 'vm2.json');
    fs.writeFileSync(config, JSON.stringify({ kernel: path.join(guests, 'debug_exit.elf'), append: 'code=1', serial: ['null'] }));
    const r = tsvmm(['run', '--config', config, '--append', 'code=9', '--device', 'isa-debug-exit,iobase=0xf4,iosize=4']);
    expect(r.status, r.stderr).to.equal((9 << 1) | 1);
  });

  it('writes the guest console to a file with --serial file:PATH', () => {
    const out = path.join(dir, 'console.log');
    const r = tsvmm(['run', '--kernel', path.join(guests, 'demo.elf'), '--serial', `file:${out}`]);
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.equal('');
    expect(fs.readFileSync(out, 'utf8')).to.match(/Hello from the tsvmm demo guest!/);
  });

  it('accepts QEMU spellings with one dash (-kernel, -append, -device, -no-reboot)', () => {
    const r = tsvmm(['run', '-kernel', path.join(guests, 'debug_exit.elf'), '-append', 'code=3', '-device', 'isa-debug-exit,iobase=0xf4,iosize=4', '-serial', 'null', '-no-reboot']);
    expect(r.status, r.stderr).to.equal(7);
  });

  it('lists device types, machine types and CPU models', () => {
    expect(tsvmm(['run', '--device', 'help']).stdout).to.match(/isa-debug-exit .*\n/);
    const machines = tsvmm(['run', '--machine', 'help']).stdout;
    expect(machines).to.match(/pc-i440fx-rhel7\.0\.0 .*\(default\)/);
    expect(machines).to.match(/pc-i440fx-rhel6\.5\.0/);
    expect(tsvmm(['run', '--cpu', 'help']).stdout).to.match(/Haswell/);
  });

  it('--version names the package, protocol and plugin API versions', () => {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
    const r = tsvmm(['--version']);
    expect(r.status).to.equal(0);
    expect(r.stdout.trim()).to.match(new RegExp(`^tsvmm ${pkg.version.replace(/\./g, '\\.')} \\(protocol 1\\.\\d+\\.\\d+, plugin API 1\\.\\d+\\.\\d+\\)$`));
  });
});
