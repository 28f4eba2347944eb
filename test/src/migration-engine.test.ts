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
import { MigrationDestination, MigrationSource, DEFAULT_PARAMETERS, parseTransportUri, type MigrationStrategy } from '@tsvmm/migration';
import { buildGuests } from './guest-harness.js';
import { checksumOf, createTestMachine, pluginRegistry, type TestMachine } from './migration-harness.js';

const APPEND = 'passes=40 pages=512 words=16';
const APPEND_BLK = 'passes=60 pages=512 words=16 blk=1';
const DISK_BYTES = 1024 * 1024;

async function strategy(name: string): Promise<MigrationStrategy> {
  const reg = pluginRegistry();
  await reg.ensure('migration-strategy', name);
  const s = reg.definitions<MigrationStrategy>('migration-strategy').find((d) => d.name === name);
  if (s === undefined) throw new Error(`no migration strategy ${name}`);
  return s;
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
    opts: { append?: string; drive?: string } = {},
  ): Promise<{ src: TestMachine; dst: TestMachine; status: ReturnType<MigrationSource['status']> }> {
    const listenUri = uri;
    const append = opts.append ?? APPEND;
    const drive = opts.drive !== undefined ? { drive: opts.drive } : {};
    const src = await createTestMachine({ append, ...drive });
    // The destination opens the same disk file: shared storage, as QEMU's migration assumes without block migration.
    const dst = await createTestMachine({ append, incoming: true, ...drive });
    machines.push(src, dst);
    src.machine.start();
    await src.serial.waitFor(/# pass 5\n/);
    const incoming = new MigrationDestination({ machine: dst.machine, source: parseTransportUri(listenUri) });
    const address = await incoming.listen();
    const outgoing = new MigrationSource({
      machine: src.machine,
      strategy: await strategy(name),
      params: { ...DEFAULT_PARAMETERS, strategy: name },
      target: parseTransportUri(uri.endsWith(':0') ? address : uri),
      kind: 'migration',
      writer: 'test',
    });
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
});
