/// <reference types="mocha" />
import { expect } from 'chai';
import { moduleList, tsvmmCli, vmmCommand, type RunGuestOptions } from './guest-harness.js';

const base: RunGuestOptions = { vmm: 'qemu', kernel: '/k.elf', timeoutMs: 1000 };

describe('guest harness command lines', () => {
  it('boots QEMU with KVM, no default devices, debug-exit at 0xf4 and COM1 on stdio', () => {
    expect(vmmCommand(base)).to.deep.equal([
      'qemu-system-x86_64',
      '-accel',
      'kvm',
      '-nodefaults',
      '-display',
      'none',
      '-kernel',
      '/k.elf',
      '-m',
      '128',
      '-smp',
      '1',
      '-device',
      'isa-debug-exit,iobase=0xf4,iosize=0x4',
      '-serial',
      'stdio',
    ]);
  });

  it('runs the tsvmm CLI with the same options spelled with two dashes', () => {
    expect(vmmCommand({ ...base, vmm: 'tsvmm', append: 'a=1', memory: 64, smp: 2, noReboot: true })).to.deep.equal([
      process.execPath,
      tsvmmCli,
      'run',
      '--kernel',
      '/k.elf',
      '--append',
      'a=1',
      '-m',
      '64',
      '--smp',
      '2',
      '--device',
      'isa-debug-exit,iobase=0xf4,iosize=0x4',
      '--serial',
      'stdio',
      '--no-reboot',
    ]);
  });

  it('passes QEMU -no-reboot', () => {
    expect(vmmCommand({ ...base, noReboot: true })).to.include('-no-reboot');
  });

  it('passes multiboot modules as one -initrd list of "path args"', () => {
    const cmd = vmmCommand({ ...base, modules: [{ path: '/m1', args: 'x y' }, { path: '/m2' }] });
    expect(cmd.slice(cmd.indexOf('-initrd'), cmd.indexOf('-initrd') + 2)).to.deep.equal(['-initrd', '/m1 x y,/m2']);
  });

  it('doubles commas inside a module so QEMU does not split it', () => {
    expect(moduleList([{ path: '/a,b', args: 'c,d' }])).to.equal('/a,,b c,,d');
  });

  it('passes a Linux initrd as is', () => {
    const cmd = vmmCommand({ ...base, initrd: '/initrd.bin' });
    expect(cmd[cmd.indexOf('-initrd') + 1]).to.equal('/initrd.bin');
  });

  it('refuses modules and an initrd together', () => {
    expect(() => vmmCommand({ ...base, initrd: '/i', modules: [{ path: '/m' }] })).to.throw(/not both/);
  });

  it('adds fw_cfg files as -fw_cfg for QEMU and --fw-cfg for tsvmm', () => {
    const fwCfg = [{ name: 'opt/tsvmm/test', string: 'hello' }, { name: 'opt/tsvmm/f', file: '/tmp/f' }];
    const qemu = vmmCommand({ ...base, fwCfg });
    expect(qemu).to.include.members(['-fw_cfg', 'name=opt/tsvmm/test,string=hello', 'name=opt/tsvmm/f,file=/tmp/f']);
    const tsvmm = vmmCommand({ ...base, vmm: 'tsvmm', fwCfg });
    expect(tsvmm.slice(-4)).to.deep.equal([
      '--fw-cfg',
      'name=opt/tsvmm/test,string=hello',
      '--fw-cfg',
      'name=opt/tsvmm/f,file=/tmp/f',
    ]);
  });

  it('appends extra arguments last', () => {
    expect(vmmCommand({ ...base, extraArgs: ['-cpu', 'host'] }).slice(-2)).to.deep.equal(['-cpu', 'host']);
  });
});
