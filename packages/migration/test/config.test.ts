/**
 * The configuration check (config.ts): the destination compares the
 * stream's CONFIG with the VM it built and names every difference — before
 * the source sends RAM or stops.
 */
import { expect } from 'chai';
import type { MachineMigrationInfo } from '@tsvmm/core';
import { configProblems, MigrationError, parseStreamConfig, streamConfigFor } from '../src/index.js';

function info(over: Partial<MachineMigrationInfo> = {}): MachineMigrationInfo {
  return {
    machineType: 'pc-i440fx-rhel7.0.0',
    ram: { size: 64 << 20, regions: [{ gpa: 0, size: 64 << 20 }] },
    cpus: 1,
    cpuModel: 'qemu64',
    accelerator: { name: 'kvm', stateFormat: 'kvm-x86' },
    devices: [
      { id: 'serial0', driver: 'isa-serial', plugin: { name: '@tsvmm/plugin-serial-16550a', version: '0.1.0' }, stateVersion: 1, loadableStateVersions: [1] },
      { id: 'rtc', driver: 'mc146818rtc', plugin: { name: '@tsvmm/plugin-cmos-rtc', version: '0.1.0' }, stateVersion: 1, loadableStateVersions: [1] },
    ],
    ...over,
  };
}

const config = (i = info()): ReturnType<typeof streamConfigFor> => streamConfigFor(i, { strategy: 'precopy', encodings: ['zero', 'page'] });

describe('migration configuration check', () => {
  it('finds nothing to object to between the same machines', () => {
    expect(configProblems(parseStreamConfig(config()), info())).to.deep.equal([]);
  });

  it('names a different machine type, RAM size, vCPU count and CPU model', () => {
    const local = info({ machineType: 'pc-i440fx-rhel6.5.0', ram: { size: 128 << 20, regions: [{ gpa: 0, size: 128 << 20 }] }, cpus: 2, cpuModel: 'host' });
    expect(configProblems(config(), local)).to.deep.equal([
      'machine type: the stream is for pc-i440fx-rhel7.0.0, this VM is pc-i440fx-rhel6.5.0',
      'RAM size: the stream has 67108864 bytes, this VM 134217728',
      'vCPUs: the stream has 1, this VM 2',
      "CPU model: the stream is for 'qemu64', this VM has 'host'",
    ]);
  });

  it('names the RAM layout when the size agrees but the split does not', () => {
    const local = info({ ram: { size: 64 << 20, regions: [{ gpa: 0, size: 32 << 20 }, { gpa: 2 ** 32, size: 32 << 20 }] } });
    expect(configProblems(config(), local)[0]).to.match(/^RAM layout: the stream has 0x0\+0x4000000, this VM 0x0\+0x2000000, 0x100000000\+0x2000000/);
  });

  it('names devices missing on either side and devices of another type', () => {
    const local = info({
      devices: [
        { id: 'serial0', driver: 'i8042', plugin: undefined, stateVersion: 1, loadableStateVersions: [1] },
        { id: 'extra', driver: 'isa-debug-exit', plugin: undefined, stateVersion: 1, loadableStateVersions: [1] },
      ],
    });
    expect(configProblems(config(), local)).to.deep.equal([
      "device 'serial0' is a isa-serial in the stream but a i8042 in this VM",
      "device 'rtc' (mc146818rtc) is in the stream but not in this VM",
      "device 'extra' (isa-debug-exit) is in this VM but not in the stream",
    ]);
  });

  it('accepts an older state version the newer plugin still loads, and names one it does not', () => {
    const older = config();
    const serial = older.devices[0];
    if (serial === undefined) throw new Error('no serial');
    serial.stateVersion = 1;
    const newer = info();
    const newSerial = newer.devices[0];
    if (newSerial === undefined) throw new Error('no serial');
    newSerial.stateVersion = 2;
    newSerial.loadableStateVersions = [1, 2];
    newSerial.plugin = { name: '@tsvmm/plugin-serial-16550a', version: '0.2.0' };
    expect(configProblems(older, newer)).to.deep.equal([]);
    newSerial.loadableStateVersions = [2];
    expect(configProblems(older, newer)).to.deep.equal([
      "device 'serial0' (isa-serial): state version 1 (written by @tsvmm/plugin-serial-16550a@0.1.0) is not one @tsvmm/plugin-serial-16550a@0.2.0 loads (2)",
    ]);
  });

  it('refuses on the source a VM with a device that cannot save its state, naming it', () => {
    const i = info();
    i.devices.push({ id: 'gpu0', driver: 'fancy-gpu', plugin: { name: 'third-party-gpu', version: '1.0.0' }, stateVersion: undefined, loadableStateVersions: [] });
    expect(() => config(i)).to.throw(MigrationError, /device 'gpu0' \(fancy-gpu from third-party-gpu@1\.0\.0\) cannot save its state/);
  });

  it('refuses a malformed CONFIG with the failing field', () => {
    expect(() => parseStreamConfig({ ...config(), cpus: -1 })).to.throw(MigrationError, /CONFIG section is malformed: cpus/);
    expect(() => parseStreamConfig('hello')).to.throw(MigrationError, /malformed/);
  });
});
