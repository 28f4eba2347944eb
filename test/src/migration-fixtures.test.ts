/**
 * Cross-version loading (issue 7 "Cross-version"): streams written by each
 * released state version are kept in test/fixtures/migration (gzipped, with
 * the disk image they expect) and must load on this tsvmm and finish with
 * the checksum the guest printed when they were written. One of them was
 * written by a `pc-i440fx-rhel6.5.0` machine.
 *
 * The index (fixtures.json) names every device state version each fixture
 * holds; a test fails when an installed device writes a state version no
 * fixture holds — i.e. when a plugin bumps its stateVersion, a fixture of the
 * new version must be added (and the old ones kept). Write new fixtures with
 *
 *   TSVMM_WRITE_MIGRATION_FIXTURES=1 npx mocha test/dist/src/migration-fixtures.test.js
 *
 * which adds fixtures for the current versions and never deletes any.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import * as zlib from 'node:zlib';
import {
  DEFAULT_PARAMETERS,
  MigrationDestination,
  MigrationSource,
  parseTransportUri,
  SectionType,
  STREAM_VERSION,
  StreamParser,
  decodeState,
  type MigrationStrategy,
} from '@tsvmm/migration';
import { buildGuests, repoRoot } from './guest-harness.js';
import { checksumOf, createTestMachine, pluginRegistry } from './migration-harness.js';

const FIXTURES = path.join(repoRoot, 'test/fixtures/migration');
const INDEX = path.join(FIXTURES, 'fixtures.json');

interface FixtureEntry {
  /** file name in test/fixtures/migration (gzipped stream) */
  stream: string;
  /** the disk image the VM had when the stream was written (gzipped), if it has a drive */
  disk?: string;
  streamVersion: number;
  machine: string;
  memory: string;
  append: string;
  /** devices besides the board's, serial0 and isa-debug-exit (DeviceSpec) */
  extraDevices: { driver: string; [prop: string]: unknown }[];
  /** device id → driver and state version, as in the stream */
  devices: Record<string, { driver: string; stateVersion: number }>;
  /** what the guest prints at its end */
  checksum: string;
  writtenBy: string;
}

function readIndex(): FixtureEntry[] {
  return fs.existsSync(INDEX) ? (JSON.parse(fs.readFileSync(INDEX, 'utf8')) as FixtureEntry[]) : [];
}

/** device id → driver and state version of every DEVICE section in a stream */
function deviceVersions(stream: Uint8Array): Record<string, { driver: string; stateVersion: number }> {
  const out: Record<string, { driver: string; stateVersion: number }> = {};
  const p = new StreamParser({
    header: () => undefined,
    section: (type, payload) => {
      if (type !== SectionType.DEVICE) return;
      const metaLen = new DataView(payload.buffer, payload.byteOffset, 2).getUint16(0);
      const meta = decodeState(payload.subarray(2, 2 + metaLen)) as { id: string; driver: string; stateVersion: number };
      out[meta.id] = { driver: meta.driver, stateVersion: meta.stateVersion };
    },
  });
  p.push(stream);
  p.finish();
  return out;
}

/** The variants written: the default machine type with virtio-blk I/O, and the RHEL 6.5 machine type. */
const VARIANTS: { machine: string; append: string; blk: boolean; extraDevices: FixtureEntry['extraDevices'] }[] = [
  {
    machine: 'pc-i440fx-rhel7.0.0',
    append: 'passes=40 pages=64 words=16 blk=1',
    blk: true,
    // Every other migratable device type, so each state version has a stream.
    extraDevices: [
      { driver: 'virtio-rng-pci', id: 'rng0', filename: '/dev/urandom' },
      { driver: 'pci-bridge', id: 'br1', chassis_nr: 1 },
      { driver: 'pci-testdev', id: 'testdev0', bus: 'br1' },
    ],
  },
  { machine: 'pc-i440fx-rhel6.5.0', append: 'passes=40 pages=64 words=16', blk: false, extraDevices: [] },
];
const MEMORY = '40M';
const DISK_BYTES = 1024 * 1024;

describe('migration streams of released state versions (test/fixtures/migration)', function () {
  this.timeout(120_000);
  let tmp: string;

  before(() => {
    buildGuests();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-fixtures-'));
    fs.writeFileSync(path.join(tmp, 'unused.img'), Buffer.alloc(DISK_BYTES));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  if (process.env['TSVMM_WRITE_MIGRATION_FIXTURES'] === '1') {
    it('writes fixtures for the state versions this tsvmm writes', async () => {
      const reg = pluginRegistry();
      await reg.ensure('migration-strategy', 'precopy');
      const precopy = reg.definitions<MigrationStrategy>('migration-strategy').find((s) => s.name === 'precopy') as MigrationStrategy;
      const index = readIndex();
      fs.mkdirSync(FIXTURES, { recursive: true });
      for (const v of VARIANTS) {
        const disk = path.join(tmp, `${v.machine}.img`);
        fs.writeFileSync(disk, Buffer.alloc(DISK_BYTES));
        const m = await createTestMachine({ append: v.append, memory: MEMORY, machine: v.machine, devices: v.extraDevices, ...(v.blk ? { drive: disk } : {}) });
        m.machine.start();
        await m.serial.waitFor(/# pass 10\n/);
        const file = path.join(tmp, `${v.machine}.stream`);
        await new MigrationSource({ machine: m.machine, strategy: precopy, params: { ...DEFAULT_PARAMETERS }, target: parseTransportUri(`file:${file}`), kind: 'snapshot', writer: 'fixture writer' }).run();
        // The disk as it is now, with the VM stopped: the restored VM continues from it.
        const diskAtSnapshot = fs.readFileSync(disk);
        // The original run goes on to the checksum the restored one must print.
        m.machine.resume();
        const exit = await m.exit;
        expect(exit.status).to.equal(1);
        const stream = fs.readFileSync(file);
        const devices = deviceVersions(stream);
        // Named by what it holds: the same versions give the same name, and it is not written again.
        const stamp = Object.values(devices)
          .map((d) => `${d.driver}@${d.stateVersion}`)
          .sort()
          .join(',');
        const name = `v${STREAM_VERSION}-${v.machine}-${createHash('sha256').update(stamp).digest('hex').slice(0, 8)}`;
        if (index.some((e) => e.stream === `${name}.stream.gz`)) continue;
        fs.writeFileSync(path.join(FIXTURES, `${name}.stream.gz`), zlib.gzipSync(stream, { level: 9 }));
        // The disk as it was when the stream was written: the restored VM continues from it.
        if (v.blk) fs.writeFileSync(path.join(FIXTURES, `${name}.disk.gz`), zlib.gzipSync(diskAtSnapshot, { level: 9 }));
        index.push({
          stream: `${name}.stream.gz`,
          ...(v.blk ? { disk: `${name}.disk.gz` } : {}),
          streamVersion: STREAM_VERSION,
          machine: v.machine,
          memory: MEMORY,
          append: v.append,
          extraDevices: v.extraDevices,
          devices,
          checksum: checksumOf(m.serial.text) ?? '',
          writtenBy: 'tsvmm 0.1.0 (@tsvmm/migration 0.1.0)',
        });
      }
      fs.writeFileSync(INDEX, `${JSON.stringify(index, null, 2)}\n`);
    });
    return;
  }

  for (const f of readIndex()) {
    it(`loads ${f.stream} (stream v${f.streamVersion}, ${f.machine}) and the guest finishes with its checksum`, async () => {
      const stream = zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, f.stream)));
      const file = path.join(tmp, f.stream.replace(/\.gz$/, ''));
      fs.writeFileSync(file, stream);
      let drive: string | undefined;
      if (f.disk !== undefined) {
        drive = path.join(tmp, f.disk.replace(/\.gz$/, ''));
        fs.writeFileSync(drive, zlib.gunzipSync(fs.readFileSync(path.join(FIXTURES, f.disk))));
      }
      const m = await createTestMachine({ append: f.append, memory: f.memory, machine: f.machine, incoming: true, devices: f.extraDevices, ...(drive !== undefined ? { drive } : {}) });
      const incoming = new MigrationDestination({ machine: m.machine, source: parseTransportUri(`file:${file}`) });
      await incoming.listen();
      await incoming.done;
      expect(m.machine.state).to.equal('running');
      const exit = await m.exit;
      expect(exit.status).to.equal(1, m.serial.text);
      expect(checksumOf(m.serial.text)).to.equal(f.checksum);
      expect(m.serial.text).to.not.match(/# pass [0-9]\n/);
    });
  }

  it('holds a stream written by a pc-i440fx-rhel6.5.0 machine', () => {
    expect(readIndex().some((f) => f.machine === 'pc-i440fx-rhel6.5.0')).to.equal(true);
  });

  it('holds a fixture for every state version the installed devices write now', async () => {
    const held = new Set(readIndex().flatMap((f) => Object.values(f.devices).map((d) => `${d.driver}@${d.stateVersion}`)));
    for (const v of VARIANTS) {
      const m = await createTestMachine({ append: v.append, memory: MEMORY, machine: v.machine, devices: v.extraDevices, ...(v.blk ? { drive: path.join(tmp, 'unused.img') } : {}) });
      try {
        for (const d of m.machine.migrationInfo().devices) {
          expect(held.has(`${d.driver}@${d.stateVersion ?? '?'}`), `${d.driver} writes state version ${d.stateVersion}: add a fixture (TSVMM_WRITE_MIGRATION_FIXTURES=1)`).to.equal(true);
        }
      } finally {
        await m.machine.destroy();
      }
    }
  });
});
