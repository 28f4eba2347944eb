import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import { createContainer, FwCfgKey,
  AddressRangeError,
  ConfigError,
  EXIT_GUEST_CRASH,
  Machine,
  PluginRegistry,
  PluginTokens,
  VmStateError,
  defineDeviceType,
  prop,
  type Accelerator,
  type AcceleratorVm,
  type AcceleratorVmConfig,
  type CpuEntryState,
  type Device,
  type DeviceContext,
  type ExitSink,
  type MachineExit,
  type MachineTypeDefinition,
  type StateChange,
  type CpuidEntry,
  type CpuModelDefinition,
  type HostCpuSupport,
  parseCpuidTable,
} from '../src/index.js';
import { FakeNotifyServices, writeMultibootHeaderKernel } from '../src/testing/index.js';
import { fakeBzImage } from './fake-bzimage.js';

const pvmHost = parseCpuidTable(
  (JSON.parse(fs.readFileSync(new URL('../../test/fixtures/cpuid/pvm-dev-host-2026.json', import.meta.url), 'utf8')) as { supported: unknown }).supported,
);

const genericModel: CpuModelDefinition = {
  name: 'generic',
  version: 1,
  vendor: 'GenuineIntel',
  family: 6,
  model: 6,
  stepping: 3,
  modelId: 'Generic test CPU',
  level: 0xd,
  xlevel: 0x80000008,
  features: ['fpu', 'tsc', 'msr', 'apic', 'cmov', 'sse', 'sse2', 'lm', 'nx', 'syscall'],
};

class FakeVm extends FakeNotifyServices implements AcceleratorVm {
  readonly ram;
  sink: ExitSink | undefined;
  entries: CpuEntryState[] = [];
  calls: string[] = [];
  irqs: [number, boolean][] = [];
  constructor(cfg: AcceleratorVmConfig) {
    super();
    this.ram = cfg.ramSlots.map((s) => ({ gpa: s.gpa, size: s.size, buffer: new SharedArrayBuffer(s.size) }));
  }
  setBootEntry(e: CpuEntryState): void {
    this.entries.push(e);
  }
  setIrq(gsi: number, level: boolean): void {
    this.irqs.push([gsi, level]);
  }
  start(sink: ExitSink): void {
    this.sink = sink;
    this.calls.push('start');
  }
  async pause(): Promise<void> {
    this.calls.push('pause');
  }
  resume(): void {
    this.calls.push('resume');
  }
  async reset(): Promise<void> {
    this.calls.push('reset');
  }
  async stop(): Promise<void> {
    this.calls.push('stop');
  }
  close(): void {
    this.calls.push('close');
  }
  exitCounts(): Record<string, number> {
    return {};
  }
  vcpuCpuid(): CpuidEntry[] {
    return [];
  }
}

class FakeAccelerator implements Accelerator {
  readonly name = 'fake';
  vm: FakeVm | undefined;
  maxVcpus(): number {
    return 8;
  }
  hostCpuSupport(): HostCpuSupport {
    return { supportedCpuid: pvmHost, checkExtension: () => 0 };
  }
  createVm(cfg: AcceleratorVmConfig): FakeVm {
    this.vm = new FakeVm(cfg);
    return this.vm;
  }
}

/** A port device that asks the machine for reset / exit / shutdown on writes of 1 / 2 / 3. */
class Doorbell implements Device {
  readonly typeName = 'doorbell';
  resets = 0;
  private ctx: DeviceContext | undefined;
  constructor(
    readonly id: string,
    private readonly iobase: number,
  ) {}
  realize(ctx: DeviceContext): void {
    this.ctx = ctx;
    ctx.pio.register(this.iobase, 1, {
      read: (_o, d) => d.fill(0x5a),
      write: (_o, d) => {
        if (d[0] === 1) ctx.requestReset('doorbell reset');
        if (d[0] === 2) ctx.requestExit(7, 'doorbell exit');
        if (d[0] === 3) ctx.requestShutdown('doorbell power off');
      },
    }, this.id);
  }
  reset(): void {
    this.resets++;
  }
  unrealize(): void {
    this.ctx?.pio.unregisterOwner(this.id);
  }
  describe(): Record<string, unknown> {
    return { iobase: this.iobase };
  }
}

const doorbellType = defineDeviceType({
  name: 'doorbell',
  description: 'test device',
  bus: 'isa',
  hotpluggable: false,
  properties: z.strictObject({ iobase: prop.int(0, 0xffff).default(0x80) }),
  create: (id, p) => new Doorbell(id, p.iobase),
});

const testMachine: MachineTypeDefinition = {
  name: 'test-1.0',
  aliases: ['test'],
  isDefault: true,
  description: 'test board',
  memoryLayout: { maxRamBelowFourGiB: 0xe0000000, gigabyteAlign: true },
  defaultCpuModel: 'generic',
  maxCpus: 4,
  boardDevices: [{ driver: 'doorbell', id: 'bell' }],
  compatProps: {},
};

function kernelFile(dir: string): string {
  return writeMultibootHeaderKernel(path.join(dir, 'k.bin'));
}

describe('Machine', () => {
  let dir: string;
  let kernel: string;
  let accel: FakeAccelerator;
  let registry: PluginRegistry;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-machine-'));
    kernel = kernelFile(dir);
    accel = new FakeAccelerator();
    const c = createContainer();
    c.register(PluginTokens.device, { useValue: doorbellType });
    c.register(PluginTokens.chipset, { useValue: testMachine });
    c.register(PluginTokens['cpu-model'], { useValue: genericModel });
    registry = PluginRegistry.create({ container: c, noDiscovery: true });
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const create = (desc: Record<string, unknown>): Promise<Machine> =>
    Machine.create({ kernel, serial: ['none'], ...desc }, { registry, accelerator: accel });

  const nextExit = (m: Machine): Promise<MachineExit> => new Promise((resolve) => m.once('exit', resolve));

  it('gives a Linux kernel its command line in fw_cfg, also on a machine waiting for a migration stream', async () => {
    const bz = path.join(dir, 'bzImage');
    fs.writeFileSync(bz, fakeBzImage());
    for (const incoming of [false, true]) {
      const m = await Machine.create({ kernel: bz, append: 'console=ttyS0 quiet', serial: ['none'] }, { registry, accelerator: accel, incoming });
      try {
        expect(new TextDecoder().decode(m.fwCfg.lookup(FwCfgKey.CMDLINE_DATA)), `incoming=${incoming}`).to.equal('console=ttyS0 quiet\0');
      } finally {
        await m.destroy();
      }
    }
  });

  it('boots the kernel into the bootstrap processor and starts in state created', async () => {
    const m = await create({});
    expect(m.state).to.equal('created');
    expect(accel.vm?.entries[0]).to.deep.include({ mode: 'protected32', eip: 0x100020 });
    expect(m.listDevices().map((d) => d.id)).to.deep.equal(['bell']);
  });

  it('dispatches port accesses from vCPUs to the device owning the port', async () => {
    const m = await create({});
    m.start();
    const data = new Uint8Array(1);
    accel.vm?.sink?.pio(0x80, data, false);
    expect(data[0]).to.equal(0x5a);
    accel.vm?.sink?.pio(0x81, data, false);
    expect(data[0]).to.equal(0xff);
  });

  it('goes created → running → paused → running, and refuses transitions that make no sense', async () => {
    const m = await create({});
    const seen: StateChange[] = [];
    m.on('stateChanged', (c) => seen.push(c));
    await m.pause().catch((e: unknown) => expect(e).to.be.instanceOf(VmStateError));
    m.start();
    expect(() => m.resume()).to.throw(VmStateError, /cannot resume a VM that is running/);
    await m.pause();
    m.resume();
    expect(seen.map((c) => `${c.from}>${c.to}:${c.reason}`)).to.deep.equal([
      'created>running:started',
      'running>paused:paused-by-request',
      'paused>running:resumed-by-request',
    ]);
  });

  it('ends with the debug-exit status when a device asks to exit', async () => {
    const m = await create({});
    m.start();
    const exit = nextExit(m);
    accel.vm?.sink?.pio(0x80, Uint8Array.of(2), true);
    expect(await exit).to.deep.include({ status: 7, reason: 'debug-exit' });
    expect(m.state).to.equal('shutdown');
    expect(accel.vm?.calls).to.include.members(['stop', 'close']);
  });

  it('resets CPUs and devices and reloads the kernel on a guest reset', async () => {
    const m = await create({});
    m.start();
    const changed = new Promise<StateChange>((resolve) => m.once('stateChanged', resolve));
    accel.vm?.sink?.pio(0x80, Uint8Array.of(1), true);
    expect(await changed).to.deep.include({ from: 'running', to: 'running', reason: 'guest-reset' });
    expect(accel.vm?.calls).to.deep.equal(['start', 'pause', 'reset', 'resume']);
    expect(accel.vm?.entries).to.have.length(2);
  });

  it('stops with a crash status naming the triple fault under --no-reboot', async () => {
    const m = await create({ noReboot: true });
    m.start();
    const exit = nextExit(m);
    accel.vm?.sink?.event(0, { kind: 'shutdown' });
    const e = await exit;
    expect(e.status).to.equal(EXIT_GUEST_CRASH);
    expect(e.message).to.match(/triple fault on vCPU 0.*--no-reboot/);
    expect(m.state).to.equal('crashed');
  });

  it('stops cleanly on a guest reset under --no-reboot', async () => {
    const m = await create({ noReboot: true });
    m.start();
    const exit = nextExit(m);
    accel.vm?.sink?.pio(0x80, Uint8Array.of(1), true);
    expect(await exit).to.deep.include({ status: 0, reason: 'guest-reset' });
  });

  it('powers off with status 0 when the guest shuts down', async () => {
    const m = await create({});
    m.start();
    const exit = nextExit(m);
    accel.vm?.sink?.pio(0x80, Uint8Array.of(3), true);
    expect(await exit).to.deep.include({ status: 0, reason: 'guest-shutdown' });
  });

  it('ends once when the guest powers off while the host shuts it down', async () => {
    const m = await create({});
    m.start();
    const exits: MachineExit[] = [];
    m.on('exit', (e) => exits.push(e));
    const changes: StateChange[] = [];
    m.on('stateChanged', (c) => changes.push(c));
    accel.vm?.sink?.pio(0x80, Uint8Array.of(3), true);
    await Promise.all([m.shutdown('host one'), m.shutdown('host two'), new Promise((r) => setImmediate(r))]);
    await new Promise((r) => setTimeout(r, 20));
    expect(m.state).to.equal('shutdown');
    expect(exits).to.have.length(1);
    expect(changes.filter((c) => c.to === 'shutdown')).to.have.length(1);
  });

  it('reports an internal error as a crash with its details', async () => {
    const m = await create({});
    m.start();
    const exit = nextExit(m);
    accel.vm?.sink?.event(1, { kind: 'internal-error', suberror: 1, data: [0x10n] });
    const e = await exit;
    expect(e).to.deep.include({ status: EXIT_GUEST_CRASH, reason: 'internal-error' });
    expect(e.message).to.equal('KVM internal error on vCPU 1: suberror 1 data [0x10]');
  });

  it('names the unknown machine type and lists the known ones', async () => {
    let err: unknown;
    await create({ machine: 'q35' }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(ConfigError);
    expect((err as Error).message).to.equal("unknown machine type 'q35' (available: test-1.0)");
  });

  it('accepts a machine type alias', async () => {
    const m = await create({ machine: 'test' });
    expect(m.machineType.name).to.equal('test-1.0');
  });

  it('names an unknown device type', async () => {
    let err: unknown;
    await create({ devices: [{ driver: 'warp-drive' }] }).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.match(/unknown device type 'warp-drive'/);
  });

  it('refuses two devices claiming the same port range, naming both', async () => {
    let err: unknown;
    await create({ devices: [{ driver: 'doorbell', id: 'second', iobase: '0x80' }] }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(AddressRangeError);
    expect((err as Error).message).to.match(/second: I\/O ports 0x80-0x80 overlaps I\/O ports 0x80-0x80 claimed by bell/);
    expect(accel.vm?.calls).to.include('close');
  });

  it('refuses bad device properties naming the device and property', async () => {
    let err: unknown;
    await create({ devices: [{ driver: 'doorbell', iobase: 'port eighty' }] }).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.match(/device 'doorbell0' \(doorbell\): 'iobase': expected an integer/);
  });

  it('refuses more vCPUs than allowed and memory that does not parse', async () => {
    let err: unknown;
    await create({ smp: 9 }).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.match(/--smp 9 is more than the 4 vCPUs/);
    await create({ memory: 'plenty' }).catch((e: unknown) => (err = e));
    expect((err as Error).message).to.match(/memory size 'plenty' does not parse/);
  });

  it('fills fw_cfg with RAM size, CPU count and user files', async () => {
    const m = await create({ memory: '64M', smp: 2, fwCfg: [{ name: 'opt/test', string: 'hello' }] });
    expect(new DataView(m.fwCfg.lookup(0x03)?.buffer as ArrayBuffer).getBigUint64(0, true)).to.equal(64n << 20n);
    expect(m.fwCfg.lookup(0x05)).to.deep.equal(Uint8Array.of(2, 0));
    expect(new TextDecoder().decode(m.fwCfg.listFiles().find((f) => f.name === 'opt/test')?.data)).to.equal('hello');
  });
});
