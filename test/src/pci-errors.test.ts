/// <reference types="mocha" />
/**
 * PCI configuration errors as a user meets them on the command line: each
 * fails `tsvmm run` before the guest starts, with one line naming the bus,
 * slot or property and what to do (docs/pci.md).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { buildGuests, guestImage, requireVmm, tsvmmCli } from './guest-harness.js';

function run(...devices: string[]): { status: number | null; stderr: string } {
  const args = [tsvmmCli, 'run', '--kernel', guestImage('pci_dump.elf'), '--serial', 'null', ...devices.flatMap((d) => ['--device', d])];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stderr: r.stderr };
}

function errorLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.startsWith('tsvmm: ') && !l.startsWith('tsvmm: warn'));
  expect(lines, stderr).to.have.length(1);
  return lines[0] ?? '';
}

describe('PCI configuration errors (tsvmm run)', function () {
  this.timeout(60_000);
  before(function () {
    this.timeout(120_000);
    requireVmm('tsvmm');
    buildGuests();
  });

  it('a full bus names the bus and suggests a pci-bridge', () => {
    const r = run(...Array.from({ length: 31 }, () => 'pci-testdev'));
    expect(r.status).to.equal(2);
    expect(errorLine(r.stderr)).to.match(/PCI bus 'pci\.0' is full: all 32 slots are taken, so pcitestdev30 has no place .*pci-bridge/);
  });

  it('a taken slot names the slot, the bus and the device holding it', () => {
    const r = run('pci-testdev,addr=1');
    expect(r.status).to.equal(2);
    expect(errorLine(r.stderr)).to.match(/PCI slot 01\.0 on bus 'pci\.0' is taken by piix3/);
  });

  it('a bus behind a full bridge is full too, by its own name', () => {
    const r = run('pci-bridge,id=br0,chassis_nr=1', ...Array.from({ length: 33 }, () => 'pci-testdev,bus=br0'));
    expect(r.status).to.equal(2);
    expect(errorLine(r.stderr)).to.match(/PCI bus 'br0' is full/);
  });

  it('a bus named before its bridge exists says buses must be defined first', () => {
    const r = run('pci-testdev,bus=br0', 'pci-bridge,id=br0,chassis_nr=1');
    expect(r.status).to.equal(2);
    expect(errorLine(r.stderr)).to.match(/no PCI bus 'br0' .*defined before the devices on it/);
  });

  it('pci-bridge without chassis_nr, or with shpc=on, is refused with the property named', () => {
    expect(errorLine(run('pci-bridge,id=br0').stderr)).to.match(/'chassis_nr': each pci-bridge needs a unique chassis_nr/);
    expect(errorLine(run('pci-bridge,id=br0,chassis_nr=1,shpc=on').stderr)).to.match(/'shpc': the standard hot-plug controller is not implemented/);
  });

  it('an addr out of range is refused as QEMU spells it', () => {
    expect(errorLine(run('pci-testdev,addr=0x20').stderr)).to.match(/'addr': PCI slot 0x20 .* out of range/);
  });
});

describe('rng object errors (tsvmm run)', function () {
  this.timeout(60_000);
  before(function () {
    this.timeout(120_000);
    requireVmm('tsvmm');
    buildGuests();
  });

  const runWith = (...args: string[]): { status: number | null; stderr: string } => {
    const r = spawnSync(process.execPath, [tsvmmCli, 'run', '--kernel', guestImage('pci_dump.elf'), '--serial', 'null', ...args], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    return { status: r.status, stderr: r.stderr };
  };

  it('an unknown object type lists the supported ones', () => {
    const r = runWith('--object', 'rng-egd,id=r0');
    expect(r.status).to.equal(2);
    expect(errorLine(r.stderr)).to.match(/unknown object type: the supported ones are 'iothread', 'rng-random' and 'rng-builtin'/);
  });

  it('rng= naming no object says how to define one', () => {
    const r = runWith('--device', 'virtio-rng-pci,rng=r9');
    expect(r.status).to.equal(2);
    expect(errorLine(r.stderr)).to.match(/no rng object 'r9' \(define it with --object rng-random,id=r9,filename=\/dev\/urandom\)/);
  });

  it('an rng object and an iothread may not share an id', () => {
    const r = runWith('--object', 'iothread,id=x', '--object', 'rng-builtin,id=x');
    expect(r.status).to.equal(2);
    expect(errorLine(r.stderr)).to.match(/object id 'x' is used twice/);
  });
});
