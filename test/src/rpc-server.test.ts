/**
 * The control server over a unix socket, VMs on the fake accelerator: the
 * LSP lifecycle, every VM method, notifications, crash and kill reporting,
 * errors with the right JSON-RPC codes.
 */
import { expect } from 'chai';
import * as fs from 'node:fs';
import { TsvmmClient, CancellationTokenSource } from '@tsvmm/client';
import { ErrorCodes, type WorkDoneProgressValue } from '@tsvmm/protocol';
import { fakeKernel, RawClient, rpcError, startServer, tmpDir, type ServerProcess } from './rpc-harness.js';

describe('rpc server (fake accelerator)', function () {
  this.timeout(30_000);
  let server: ServerProcess;
  let client: TsvmmClient;
  let kernel: string;
  let dir: string;

  before(async () => {
    dir = tmpDir();
    kernel = fakeKernel(dir);
    server = await startServer();
    client = await TsvmmClient.connect(server.address);
  });
  after(async () => {
    await client.close();
    expect(await server.stop()).to.equal(0);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const create = async (extra: Record<string, unknown> = {}): Promise<string> =>
    (await client.vmCreate({ description: { kernel, ...extra } })).vmId;

  it('creates the unix socket with mode 0600', () => {
    const st = fs.statSync(server.address.slice(5));
    expect(st.isSocket()).to.equal(true);
    expect(st.mode & 0o777).to.equal(0o600);
  });

  it('answers initialize with protocol version, machine and device types, plugins and host capabilities', () => {
    const caps = client.serverCapabilities;
    expect(caps.protocolVersion).to.match(/^1\.\d+\.\d+$/);
    expect(caps.capabilities.machineTypes.map((m) => m.name)).to.include('pc-i440fx-rhel7.0.0');
    expect(caps.capabilities.deviceTypes.map((d) => d.name)).to.include.members(['isa-serial', 'isa-debug-exit']);
    expect(caps.capabilities.plugins.map((p) => p.name)).to.include('@tsvmm/plugin-chipset-pc');
    expect(caps.capabilities.host.kvm.device).to.equal('/dev/kvm');
    expect(caps.capabilities.notifications).to.include.members(['vm/stateChanged', 'console/output', 'device/added', 'device/removed', '$/progress', 'window/logMessage']);
    expect(caps.capabilities.limits.maxMessageBytes).to.equal(16 * 1024 * 1024);
  });

  it('reports Hyper-V enlightenments unavailable with the reason', async () => {
    const caps = await client.hostCapabilities();
    const hv = caps.features.find((f) => f.name === 'hyperv-enlightenments');
    expect(hv?.available).to.equal(false);
    if (caps.kvm.usable) expect(hv?.reason).to.equal("KVM_CAP_HYPERV not supported by this host's KVM");
    else expect(hv?.reason).to.match(/^unknown: /);
    expect(caps.features.find((f) => f.name === 'hotplug')).to.deep.include({ available: false });
  });

  it('reports migration available exactly when KVM is usable', async () => {
    const caps = await client.hostCapabilities();
    const migration = caps.features.find((f) => f.name === 'migration');
    expect(migration?.available).to.equal(caps.kvm.usable);
    if (!caps.kvm.usable) expect(migration?.reason).to.match(/^needs KVM: /);
  });

  it('lists plugins, machine types and CPU models', async () => {
    expect((await client.pluginList()).plugins.find((p) => p.name === '@tsvmm/plugin-serial-16550a')).to.deep.include({ kind: 'device' });
    expect((await client.machineListTypes()).machineTypes.find((m) => m.isDefault)?.name).to.equal('pc-i440fx-rhel7.0.0');
    expect((await client.cpuListModels()).cpuModels).to.be.an('array');
  });

  it('drives a VM through create → start → console → pause → resume → reset → shutdown → destroy', async () => {
    const vmId = await create({ name: 'lifecycle' });
    const status = await client.vmStatus({ vmId });
    expect(status).to.deep.include({ vmId, name: 'lifecycle', state: 'created', machineType: 'pc-i440fx-rhel7.0.0', vcpus: 1 });
    expect(status.memory?.bytes).to.equal(128 * 1024 * 1024);
    expect(status.devices?.map((d) => d.id)).to.include('serial0');
    expect(status.pid).to.be.a('number');

    const hello = client.waitForConsole(vmId, 'fake guest: hello');
    const running = client.waitForState(vmId, (c) => c.to === 'running');
    expect(await client.vmStart({ vmId })).to.deep.equal({ vmId, state: 'running' });
    expect(await running).to.deep.include({ from: 'created', reason: 'started' });
    await hello;

    const echo = client.waitForConsole(vmId, 'echo: ping');
    expect(await client.consoleWrite({ vmId, data: 'ping\n' })).to.deep.equal({ written: 5 });
    await echo;

    const paused = client.waitForState(vmId, (c) => c.to === 'paused');
    expect((await client.vmPause({ vmId })).state).to.equal('paused');
    expect((await paused).reason).to.equal('paused-by-request');
    expect((await client.vmResume({ vmId })).state).to.equal('running');

    const reset = client.waitForState(vmId, (c) => c.reason === 'host-request' && c.to === 'running');
    const rebooted = client.waitForConsole(vmId, 'fake guest: hello');
    await client.vmReset({ vmId });
    await reset;
    await rebooted;

    const off = client.waitForState(vmId, (c) => c.to === 'shutdown');
    expect((await client.vmShutdown({ vmId })).state).to.equal('shutdown');
    expect(await off).to.deep.include({ reason: 'host-request', exitStatus: 0 });
    const after = await client.vmStatus({ vmId });
    expect(after).to.deep.include({ state: 'shutdown', exitStatus: 0 });
    expect(await client.vmDestroy({ vmId })).to.deep.equal({ vmId, state: 'shutdown' });
    expect((await client.vmList()).vms.map((v) => v.vmId)).not.to.include(vmId);
  });

  it('answers a request in the wrong VM state with InvalidVmState naming the state', async () => {
    const vmId = await create();
    const e1 = await rpcError(client.vmResume({ vmId }));
    expect(e1.code).to.equal(ErrorCodes.InvalidVmState);
    expect(e1.message).to.match(/cannot resume a VM that is created/);
    expect(e1.data).to.deep.include({ state: 'created' });
    await client.vmStart({ vmId });
    expect((await rpcError(client.vmStart({ vmId }))).code).to.equal(ErrorCodes.InvalidVmState);
    expect((await rpcError(client.vmResume({ vmId }))).message).to.match(/running/);
    await client.vmDestroy({ vmId });
  });

  it('answers an unknown VM with VmNotFound', async () => {
    const e = await rpcError(client.vmStatus({ vmId: 'vm-999' }));
    expect(e.code).to.equal(ErrorCodes.VmNotFound);
    expect(e.message).to.equal("no VM with id 'vm-999'");
  });

  it('names the failing field path in InvalidParams', async () => {
    const e = await rpcError(client.requestRaw('vm/create', { description: { kernel, smp: { cpus: 0 } } }));
    expect(e.code).to.equal(ErrorCodes.InvalidParams);
    expect(e.data).to.deep.include({ path: 'description.smp.cpus' });
    const e2 = await rpcError(client.requestRaw('vm/create', { description: { kernel, devices: [{ id: 'x' }] } }));
    expect((e2.data as { path: string }).path).to.equal('description.devices.0.driver');
    const e3 = await rpcError(client.requestRaw('vm/start', { vmId: 'vm-1', force: true }));
    expect(e3.code).to.equal(ErrorCodes.InvalidParams);
    expect(e3.message).to.match(/unknown field 'force'/);
    expect((e3.data as { path: string }).path).to.equal('force');
    const e4 = await rpcError(client.requestRaw('console/write', { vmId: 'vm-1', data: 'x', port: 'com1' }));
    expect((e4.data as { path: string }).path).to.equal('port');
  });

  it('reports a machine description the VM process refuses as ConfigError with its causes', async () => {
    const e = await rpcError(client.vmCreate({ description: { kernel, memory: 'lots' } }));
    expect(e.code).to.equal(ErrorCodes.ConfigError);
    expect(e.message).to.match(/memory size 'lots' does not parse/);
    expect((e.data as { causes: string[] }).causes[0]).to.match(/does not parse/);
    const e2 = await rpcError(client.vmCreate({ description: { kernel: '/nonexistent/kernel' } }));
    expect(e2.message).to.match(/nonexistent/);
  });

  it('answers an unknown method with MethodNotFound', async () => {
    const e = await rpcError(client.requestRaw('vm/teleport', {}));
    expect(e.code).to.equal(ErrorCodes.MethodNotFound);
    expect(e.data).to.deep.include({ method: 'vm/teleport' });
  });

  it('validates device/add (type, properties, id) before refusing hot-plug with the reason', async () => {
    const vmId = await create();
    await client.vmStart({ vmId });
    const unknown = await rpcError(client.deviceAdd({ vmId, device: { driver: 'warp-drive' } }));
    expect(unknown.code).to.equal(ErrorCodes.ConfigError);
    expect(unknown.message).to.match(/unknown device type 'warp-drive'/);
    const badProp = await rpcError(client.deviceAdd({ vmId, device: { driver: 'isa-debug-exit', iobase: 'port eighty' } }));
    expect(badProp.code).to.equal(ErrorCodes.ConfigError);
    expect(badProp.message).to.match(/'iobase'/);
    const dup = await rpcError(client.deviceAdd({ vmId, device: { driver: 'isa-debug-exit', id: 'serial0' } }));
    expect(dup.message).to.match(/device id 'serial0' is already used/);
    const refused = await rpcError(client.deviceAdd({ vmId, device: { driver: 'isa-debug-exit', iobase: '0xf4' } }));
    expect(refused.code).to.equal(ErrorCodes.HotplugUnsupported);
    expect(refused.message).to.match(/cannot hot-plug device type 'isa-debug-exit': it sits on the isa bus, which has no hot-plug mechanism/);
    expect((refused.data as { reason: string }).reason).to.match(/isa bus/);
    await client.vmDestroy({ vmId });
  });

  it('cold-plugs and cold-unplugs a PCI device before the VM first runs, with device/added and device/removed', async () => {
    const vmId = await create();
    const added: unknown[] = [];
    const removed: unknown[] = [];
    const subs = [client.onDeviceAdded((p) => added.push(p)), client.onDeviceRemoved((p) => removed.push(p))];
    try {
      const info = await client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rng0' } });
      expect(info).to.include({ id: 'rng0', driver: 'virtio-rng-pci' });
      expect(info.properties?.['addr']).to.be.a('string');
      // the notification is sent before the response, so it is already here
      expect(added).to.deep.equal([{ vmId, device: info }]);
      expect(((await client.vmStatus({ vmId })).devices ?? []).map((d) => d.id)).to.include('rng0');
      expect((await client.deviceList({ vmId })).devices.map((d) => d.id)).to.include('rng0');

      expect(await client.deviceRemove({ vmId, id: 'rng0' })).to.deep.equal({ id: 'rng0' });
      expect(removed).to.deep.equal([{ vmId, id: 'rng0' }]);
      expect(((await client.vmStatus({ vmId })).devices ?? []).map((d) => d.id)).to.not.include('rng0');
      // the id (and the PCI slot) can be used again
      const again = await client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rng0' } });
      expect(again.properties?.['addr']).to.equal(info.properties?.['addr']);

      await client.vmStart({ vmId });
      const late = await rpcError(client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rng1' } }));
      expect(late.code).to.equal(ErrorCodes.HotplugUnsupported);
      expect(late.message).to.match(/cannot hot-plug device type 'virtio-rng-pci': hot-plug is not implemented yet.*before the VM first runs/);
      const lateRemove = await rpcError(client.deviceRemove({ vmId, id: 'rng0' }));
      expect(lateRemove.code).to.equal(ErrorCodes.HotplugUnsupported);
      expect((await client.deviceList({ vmId })).devices.map((d) => d.id)).to.include('rng0');
      expect(added).to.have.length(2);
      expect(removed).to.have.length(1);
    } finally {
      for (const s of subs) s.dispose();
      await client.vmDestroy({ vmId });
    }
  });

  it('cold-plugs behind a pci-bridge and refuses to remove the bridge while a device sits on its bus', async () => {
    const vmId = await create({ devices: [{ driver: 'pci-bridge', id: 'br0', chassis_nr: 1 }] });
    const dev = await client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rngb', bus: 'br0' } });
    expect(dev.id).to.equal('rngb');
    const busy = await rpcError(client.deviceRemove({ vmId, id: 'br0' }));
    expect(busy.code).to.equal(ErrorCodes.InvalidVmState);
    expect(busy.message).to.match(/cannot remove device 'br0' \(pci-bridge\): rngb sits on its bus/);
    await client.deviceRemove({ vmId, id: 'rngb' });
    await client.deviceRemove({ vmId, id: 'br0' });
    const left = (await client.deviceList({ vmId })).devices.map((d) => d.id);
    expect(left).to.not.include('br0');
    expect(left).to.not.include('rngb');
    await client.vmDestroy({ vmId });
  });

  it('refuses to cold-plug into a VM that waits for a migration stream, saying so', async () => {
    const vmId = await create({ incoming: 'tcp:127.0.0.1:0' });
    const e = await rpcError(client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rng0' } }));
    expect(e.code).to.equal(ErrorCodes.HotplugUnsupported);
    expect(e.message).to.match(/cannot add device type 'virtio-rng-pci': the VM waits for a migration stream/);
    await client.vmDestroy({ vmId });
  });

  it('refuses to cold-plug a device whose realize fails, leaving the device set as it was', async () => {
    const vmId = await create();
    const before = (await client.deviceList({ vmId })).devices.map((d) => d.id);
    const e = await rpcError(client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rngx', filename: `${dir}/no-such-rng` } }));
    expect(e.message).to.match(/no-such-rng/);
    expect((await client.deviceList({ vmId })).devices.map((d) => d.id)).to.deep.equal(before);
    // and the slot it would have taken is free again
    await client.deviceAdd({ vmId, device: { driver: 'virtio-rng-pci', id: 'rngx' } });
    await client.vmDestroy({ vmId });
  });

  it('validates device/remove before refusing unplug with the reason', async () => {
    const vmId = await create();
    const missing = await rpcError(client.deviceRemove({ vmId, id: 'nope' }));
    expect(missing.code).to.equal(ErrorCodes.DeviceNotFound);
    const board = await rpcError(client.deviceRemove({ vmId, id: 'rtc' }));
    expect(board.code).to.equal(ErrorCodes.HotplugUnsupported);
    expect(board.message).to.match(/part of the pc-i440fx-rhel7.0.0 board/);
    const serial = await rpcError(client.deviceRemove({ vmId, id: 'serial0' }));
    expect(serial.message).to.match(/isa bus/);
    expect((await client.deviceList({ vmId })).devices.map((d) => d.id)).to.include.members(['rtc', 'serial0']);
    await client.vmDestroy({ vmId });
  });

  it('refuses console/write to a port that does not exist', async () => {
    const vmId = await create();
    const e = await rpcError(client.consoleWrite({ vmId, port: 'serial3', data: 'x' }));
    expect(e.code).to.equal(ErrorCodes.PortNotFound);
    expect(e.message).to.match(/no console port 'serial3' \(ports: serial0\)/);
    await client.vmDestroy({ vmId });
  });

  it('accepts console input as base64', async () => {
    const vmId = await create();
    await client.vmStart({ vmId });
    const echo = client.waitForConsole(vmId, 'echo: b64');
    await client.consoleWrite({ vmId, data: Buffer.from('b64\n').toString('base64'), encoding: 'base64' });
    await echo;
    await client.vmDestroy({ vmId });
  });

  it('reports a guest crash (KVM internal error) as crashed with the reason and the exit status', async () => {
    const vmId = await create();
    await client.vmStart({ vmId });
    const crashed = client.waitForState(vmId, (c) => c.to === 'crashed');
    await client.consoleWrite({ vmId, data: 'crash\n' });
    const c = await crashed;
    expect(c).to.deep.include({ reason: 'internal-error', exitStatus: 4 });
    expect(c.detail).to.match(/KVM internal error on vCPU 0: suberror 1/);
    expect((await client.vmStatus({ vmId })).state).to.equal('crashed');
    expect((await rpcError(client.vmStart({ vmId }))).code).to.equal(ErrorCodes.InvalidVmState);
    await client.vmDestroy({ vmId });
  });

  it('resets on a guest triple fault and stops with the reason under noReboot', async () => {
    const vmId = await create();
    await client.vmStart({ vmId });
    const reset = client.waitForState(vmId, (c) => c.reason === 'triple-fault');
    await client.consoleWrite({ vmId, data: 'triple\n' });
    expect(await reset).to.deep.include({ to: 'running' });
    await client.vmDestroy({ vmId });

    const vm2 = await create({ noReboot: true });
    await client.vmStart({ vmId: vm2 });
    const crashed = client.waitForState(vm2, (c) => c.to === 'crashed');
    await client.consoleWrite({ vmId: vm2, data: 'triple\n' });
    expect((await crashed).reason).to.equal('triple-fault');
    await client.vmDestroy({ vmId: vm2 });
  });

  it('reports guest power-off and isa-debug-exit with their reasons', async () => {
    const vmId = await create({ devices: [{ driver: 'isa-debug-exit', iobase: '0xf4', iosize: 4 }] });
    await client.vmStart({ vmId });
    const off = client.waitForState(vmId, (c) => c.to === 'shutdown');
    await client.consoleWrite({ vmId, data: 'exit 3\n' });
    expect(await off).to.deep.include({ reason: 'debug-exit', exitStatus: 7 });
    await client.vmDestroy({ vmId });

    const vm2 = await create();
    await client.vmStart({ vmId: vm2 });
    const off2 = client.waitForState(vm2, (c) => c.to === 'shutdown');
    await client.consoleWrite({ vmId: vm2, data: 'poweroff\n' });
    expect(await off2).to.deep.include({ reason: 'guest-shutdown', exitStatus: 0 });
    await client.vmDestroy({ vmId: vm2 });
  });

  it('reports a killed VM process as crashed/killed, and the server and other VMs carry on', async () => {
    const victim = await create();
    const bystander = await create();
    await client.vmStart({ vmId: victim });
    await client.vmStart({ vmId: bystander });
    const pid = (await client.vmStatus({ vmId: victim })).pid;
    expect(pid).to.be.a('number');
    const killed = client.waitForState(victim, (c) => c.to === 'crashed');
    process.kill(pid as number, 'SIGKILL');
    expect(await killed).to.deep.include({ reason: 'killed', signal: 'SIGKILL', detail: 'the VM process was killed by SIGKILL' });
    const echo = client.waitForConsole(bystander, 'echo: still here');
    await client.consoleWrite({ vmId: bystander, data: 'still here\n' });
    await echo;
    expect((await client.vmStatus({ vmId: victim })).state).to.equal('crashed');
    await client.vmDestroy({ vmId: victim });
    await client.vmDestroy({ vmId: bystander });
  });

  it('reports a VM process that aborts (a VMM crash) as crashed', async () => {
    const vmId = await create();
    await client.vmStart({ vmId });
    const dead = client.waitForState(vmId, (c) => c.to === 'crashed');
    await client.consoleWrite({ vmId, data: 'abort\n' });
    expect(await dead).to.deep.include({ reason: 'killed', signal: 'SIGABRT' });
    expect((await client.vmList()).vms.find((v) => v.vmId === vmId)?.state).to.equal('crashed');
    await client.vmDestroy({ vmId });
  });

  it('reports vm/create progress as begin, reports and end', async () => {
    const seen: WorkDoneProgressValue[] = [];
    const { vmId } = await client.vmCreate({ description: { kernel } }, { onProgress: (v) => seen.push(v) });
    await new Promise((r) => setTimeout(r, 50));
    expect(seen[0]).to.deep.include({ kind: 'begin', title: 'creating VM' });
    expect(seen.filter((v) => v.kind === 'report').map((v) => (v.kind === 'report' ? v.message : ''))).to.include('building the machine');
    expect(seen[seen.length - 1]).to.deep.equal({ kind: 'end', message: `${vmId} created` });
    await client.vmDestroy({ vmId });
  });

  it('cancels vm/create on $/cancelRequest, killing the half-built VM process', async () => {
    const before = (await client.vmList()).vms.length;
    const source = new CancellationTokenSource();
    const pending = client.vmCreate({ description: { kernel } }, { token: source.token });
    setTimeout(() => source.cancel(), 5);
    const e = await rpcError(pending);
    expect(e.code).to.equal(ErrorCodes.RequestCancelled);
    expect((await client.vmList()).vms.length).to.equal(before);
  });

  it('forwards VM process log records as window/logMessage with levels', async () => {
    const logs: { type: number; message: string; vmId?: string }[] = [];
    const sub = client.onLogMessage((m) => logs.push(m));
    await rpcError(client.vmCreate({ description: { kernel, memory: 'lots' } }));
    await new Promise((r) => setTimeout(r, 100));
    sub.dispose();
    const rec = logs.find((l) => /does not parse/.test(l.message));
    expect(rec?.type).to.equal(1);
    expect(rec?.vmId).to.match(/^vm-/);
  });

  it('sends only the notifications a client asked for', async () => {
    const quiet = await TsvmmClient.connect(server.address, { notifications: ['vm/stateChanged'] });
    const got: string[] = [];
    for (const m of ['console/output', 'window/logMessage']) quiet.on(m, () => got.push(m));
    const vmId = await create();
    const running = quiet.waitForState(vmId, (c) => c.to === 'running');
    const hello = client.waitForConsole(vmId, 'hello');
    await client.vmStart({ vmId });
    await running;
    await hello;
    await new Promise((r) => setTimeout(r, 50));
    expect(got).not.to.include('console/output');
    await client.vmDestroy({ vmId });
    await quiet.close();
  });

  it('batches console output into few notifications per port', async () => {
    const vmId = await create();
    await client.vmStart({ vmId });
    let notes = 0;
    let text = '';
    const sub = client.onConsoleOutput((o) => {
      if (o.vmId !== vmId) return;
      notes++;
      text += Buffer.from(o.data, 'base64').toString();
    });
    const done = client.waitForConsole(vmId, 'spam line 199\n');
    await client.consoleWrite({ vmId, data: 'spam 200\n' });
    await done;
    sub.dispose();
    expect(text).to.include('spam line 0\n');
    expect(notes).to.be.lessThan(10);
    await client.vmDestroy({ vmId });
  });

  it('refuses requests before initialize with ServerNotInitialized and keeps the connection', async () => {
    const raw = await RawClient.connect(server.address);
    raw.send({ jsonrpc: '2.0', id: 1, method: 'vm/list', params: {} });
    const r = await raw.response(1);
    expect((r['error'] as { code: number }).code).to.equal(ErrorCodes.ServerNotInitialized);
    raw.send({ jsonrpc: '2.0', id: 2, method: 'initialize', params: { protocolVersion: '1.0.0', capabilities: {} } });
    expect((await raw.response(2))['result']).to.be.an('object');
    raw.send({ jsonrpc: '2.0', id: 3, method: 'initialize', params: { protocolVersion: '1.0.0', capabilities: {} } });
    expect(((await raw.response(3))['error'] as { code: number }).code).to.equal(ErrorCodes.InvalidRequest);
    raw.close();
  });

  it('refuses an initialize with another major protocol version', async () => {
    const raw = await RawClient.connect(server.address);
    raw.send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2.0.0', capabilities: {} } });
    const e = (await raw.response(1))['error'] as { code: number; message: string };
    expect(e.code).to.equal(ErrorCodes.InvalidRequest);
    expect(e.message).to.match(/2\.0\.0 is not compatible with this server's 1\.\d+\.\d+/);
    raw.close();
  });

  it('answers every request after shutdown with InvalidRequest, and closes on exit', async () => {
    const raw = await RawClient.connect(server.address);
    raw.send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '1.0.0', capabilities: {} } });
    await raw.response(1);
    raw.send({ jsonrpc: '2.0', id: 2, method: 'shutdown' });
    expect((await raw.response(2))['result']).to.equal(null);
    raw.send({ jsonrpc: '2.0', id: 3, method: 'vm/list', params: {} });
    expect(((await raw.response(3))['error'] as { code: number }).code).to.equal(ErrorCodes.InvalidRequest);
    raw.send({ jsonrpc: '2.0', method: 'exit' });
    await raw.waitClosed();
    // VMs belong to the socket server, not to the client that went away.
    expect((await client.vmList()).vms).to.be.an('array');
  });
});
