/**
 * The migration engine end to end inside one process: two machines on KVM,
 * the migrate_rw guest moved mid-run from one to the other over a unix
 * socket and TCP, with each strategy plugin, and through a snapshot file.
 * The destination must finish with the checksum an unmigrated run prints.
 * (test/src/migration.test.ts does the same across two tsvmm processes.)
 */
import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import { defineDeviceType, PluginTokens, prop, type Device } from '@tsvmm/core';
import { MigrationDestination, MigrationError, MigrationSource, DEFAULT_PARAMETERS, parseTransportUri, type MigrationParameters, type MigrationStrategy } from '@tsvmm/migration';
import { z } from 'zod';
import { buildGuests } from './guest-harness.js';
import { checksumOf, createTestMachine, pluginRegistry, type TestMachine } from './migration-harness.js';

const APPEND = 'passes=40 pages=512 words=16';

/** A device whose state load fails on purpose where `explode` is set: a destination that fails at the very end. */
class StateBomb implements Device {
  readonly typeName = 'test-state-bomb';
  readonly stateVersion = 1;
  constructor(
    readonly id: string,
    private readonly explode: boolean,
  ) {}
  realize(): void {}
  reset(): void {}
  unrealize(): void {}
  describe(): Record<string, unknown> {
    return { explode: this.explode };
  }
  saveState(): unknown {
    return { ticks: 1 };
  }
  loadState(): void {
    if (this.explode) throw new Error('refusing its state on purpose');
  }
}
const stateBomb = defineDeviceType({
  name: 'test-state-bomb',
  description: 'test device: loadState throws with explode=on',
  bus: 'system',
  hotpluggable: false,
  properties: z.strictObject({ explode: prop.bool().default(false) }),
  create: (id, p) => new StateBomb(id, p.explode),
});

function registryWithBomb(): ReturnType<typeof pluginRegistry> {
  const reg = pluginRegistry();
  reg.container.register(PluginTokens.device, { useValue: stateBomb });
  return reg;
}
const APPEND_BLK = 'passes=60 pages=512 words=16 blk=1';
const DISK_BYTES = 1024 * 1024;

async function strategy(name: string): Promise<MigrationStrategy> {
  const reg = pluginRegistry();
  await reg.ensure('migration-strategy', name);
  const s = reg.definitions<MigrationStrategy>('migration-strategy').find((d) => d.name === name);
  if (s === undefined) throw new Error(`no migration strategy ${name}`);
  return s;
}

/** dst listens on `listenUri` (default: a free TCP port) and a MigrationSource from src is made for it; neither has run yet. */
async function connectMigration(
  src: TestMachine,
  dst: TestMachine,
  o: { strategy: string; listenUri?: string; params?: Partial<MigrationParameters> },
): Promise<{ incoming: MigrationDestination; outgoing: MigrationSource }> {
  const listenUri = o.listenUri ?? 'tcp:127.0.0.1:0';
  const incoming = new MigrationDestination({ machine: dst.machine, source: parseTransportUri(listenUri) });
  const address = await incoming.listen();
  const outgoing = new MigrationSource({
    machine: src.machine,
    strategy: await strategy(o.strategy),
    params: { ...DEFAULT_PARAMETERS, ...o.params },
    target: parseTransportUri(listenUri.endsWith(':0') ? address : listenUri),
    kind: 'migration',
    writer: 'test',
  });
  return { incoming, outgoing };
}

describe('migration engine (in one process, KVM)', function () {
  this.timeout(120_000);
  let dir: string;
  let reference: string | undefined;
  let referenceBlk: { checksum: string | undefined; disk: Buffer } | undefined;
  const machines: TestMachine[] = [];

  before(async () => {
    buildGuests();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-mig-'));
    const ref = await createTestMachine({ append: APPEND });
    ref.machine.start();
    const exit = await ref.exit;
    expect(exit.status).to.equal(1, ref.serial.text);
    reference = checksumOf(ref.serial.text);
    expect(reference).to.match(/^0x/);
    const disk = path.join(dir, 'reference.img');
    fs.writeFileSync(disk, Buffer.alloc(DISK_BYTES));
    const refBlk = await createTestMachine({ append: APPEND_BLK, drive: disk });
    refBlk.machine.start();
    const exitBlk = await refBlk.exit;
    expect(exitBlk.status).to.equal(1, refBlk.serial.text);
    referenceBlk = { checksum: checksumOf(refBlk.serial.text), disk: fs.readFileSync(disk) };
  });

  afterEach(async () => {
    for (const m of machines.splice(0)) await m.machine.destroy().catch(() => undefined);
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  async function migrate(
    name: string,
    uri: string,
    opts: { append?: string; drive?: string; iothread?: boolean } = {},
  ): Promise<{ src: TestMachine; dst: TestMachine; status: ReturnType<MigrationSource['status']> }> {
    const append = opts.append ?? APPEND;
    const drive = opts.drive !== undefined ? { drive: opts.drive, ...(opts.iothread === true ? { iothread: true } : {}) } : {};
    const src = await createTestMachine({ append, ...drive });
    // The destination opens the same disk file: shared storage, as QEMU's migration assumes without block migration.
    const dst = await createTestMachine({ append, incoming: true, ...drive });
    machines.push(src, dst);
    src.machine.start();
    await src.serial.waitFor(/# pass 5\n/);
    const { incoming, outgoing } = await connectMigration(src, dst, { strategy: name, listenUri: uri, params: { strategy: name } });
    const status = await outgoing.run();
    await incoming.done;
    return { src, dst, status };
  }

  it('moves the running guest over a unix socket with precopy; it finishes on the destination with the unmigrated checksum', async () => {
    const sock = path.join(dir, 'precopy.sock');
    const { src, dst, status } = await migrate('precopy', `unix:${sock}`);
    expect(status.status).to.equal('completed');
    expect(src.machine.state).to.equal('paused');
    const exit = await dst.exit;
    expect(exit.status).to.equal(1, dst.serial.text);
    expect(checksumOf(dst.serial.text)).to.equal(reference);
    expect(dst.serial.text).to.not.match(/# pass [0-4]\n/);
  });

  it('moves it over TCP with xbzrle, sending deltas', async () => {
    const { dst, status } = await migrate('xbzrle', 'tcp:127.0.0.1:0');
    expect(status.status).to.equal('completed');
    const exit = await dst.exit;
    expect(exit.status).to.equal(1, dst.serial.text);
    expect(checksumOf(dst.serial.text)).to.equal(reference);
    expect(status.xbzrle).to.not.equal(undefined);
  });

  it('resumes the source when the destination fails to load the state after the stop-and-copy; the guest finishes on the source', async () => {
    const src = await createTestMachine({ append: APPEND, registry: registryWithBomb(), devices: [{ driver: 'test-state-bomb', id: 'bomb' }] });
    const dst = await createTestMachine({ append: APPEND, incoming: true, registry: registryWithBomb(), devices: [{ driver: 'test-state-bomb', id: 'bomb', explode: true }] });
    machines.push(src, dst);
    const states: string[] = [];
    src.machine.on('stateChanged', (c) => states.push(`${c.to}:${c.reason}`));
    src.machine.start();
    await src.serial.waitFor(/# pass 5\n/);
    const { incoming, outgoing } = await connectMigration(src, dst, { strategy: 'precopy' });
    let caught: unknown;
    try {
      await outgoing.run();
    } catch (e) {
      caught = e;
    }
    expect(caught).to.be.instanceOf(MigrationError);
    expect((caught as Error).message).to.match(/could not load the VM: .*'bomb'.*refusing its state on purpose/);
    let incomingError: unknown;
    await incoming.done.catch((e: unknown) => (incomingError = e));
    expect((incomingError as Error).message).to.match(/refusing its state on purpose/);
    expect(dst.machine.state).to.equal('created');
    expect(states).to.deep.equal(['running:started', 'paused:migrating', 'running:migration-failed']);
    expect(outgoing.status().status).to.equal('failed');
    const exit = await src.exit;
    expect(exit.status).to.equal(1);
    expect(checksumOf(src.serial.text)).to.equal(reference);
  });

  it('fails cleanly when the guest powers off during the migration', async () => {
    const src = await createTestMachine({ append: 'passes=25 pages=512 words=16' });
    const dst = await createTestMachine({ append: 'passes=25 pages=512 words=16', incoming: true });
    machines.push(src, dst);
    src.machine.start();
    await src.serial.waitFor(/# pass 5\n/);
    // 100 KB/s: the guest ends long before the bulk round does.
    const { incoming, outgoing } = await connectMigration(src, dst, { strategy: 'precopy', params: { maxBandwidth: 100_000 } });
    let caught: unknown;
    try {
      await outgoing.run();
    } catch (e) {
      caught = e;
    }
    expect((caught as Error).message).to.match(/the VM stopped during the migration/);
    await incoming.done.catch(() => undefined);
    expect(dst.machine.state).to.equal('created');
    expect((await src.exit).status).to.equal(1);
  });

  it('moves a guest doing virtio-blk I/O: checksum and disk content are the unmigrated run\'s', async () => {
    const disk = path.join(dir, 'migrated.img');
    fs.writeFileSync(disk, Buffer.alloc(DISK_BYTES));
    const { src, dst, status } = await migrate('precopy', `unix:${path.join(dir, 'blk.sock')}`, { append: APPEND_BLK, drive: disk });
    expect(status.status).to.equal('completed');
    const exit = await dst.exit;
    expect(exit.status).to.equal(1, dst.serial.text);
    expect(checksumOf(dst.serial.text)).to.equal(referenceBlk?.checksum);
    // The source is stopped for good; only the destination wrote after the switch.
    await src.machine.destroy();
    expect(Buffer.compare(fs.readFileSync(disk), referenceBlk?.disk ?? Buffer.alloc(0))).to.equal(0);
  });

  it('moves it with the disk on an iothread, whose DMA only the shared device-dirty bitmap sees', async () => {
    const disk = path.join(dir, 'iothread.img');
    fs.writeFileSync(disk, Buffer.alloc(DISK_BYTES));
    const { src, dst, status } = await migrate('xbzrle', 'tcp:127.0.0.1:0', { append: APPEND_BLK, drive: disk, iothread: true });
    expect(status.status).to.equal('completed');
    const exit = await dst.exit;
    expect(exit.status).to.equal(1, dst.serial.text);
    expect(checksumOf(dst.serial.text)).to.equal(referenceBlk?.checksum);
    await src.machine.destroy();
    expect(Buffer.compare(fs.readFileSync(disk), referenceBlk?.disk ?? Buffer.alloc(0))).to.equal(0);
  });
});
