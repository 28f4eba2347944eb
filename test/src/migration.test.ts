/**
 * Live migration between tsvmm processes (issue 7 acceptance): the
 * migrate_rw guest, rewriting memory and doing virtio-blk I/O, runs in a VM
 * process of `tsvmm serve`; it is migrated mid-run over TCP (precopy, and
 * xbzrle) to another process — `tsvmm run --incoming` or a VM created with
 * `incoming` — saved to a file and restored, refused, cancelled, and cut off
 * at random points of the stream. Wherever it finishes, its checksum and the
 * disk are what an unmigrated run produces; when a migration fails, the
 * source runs on and finishes right.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import path from 'node:path';
import { ResponseError, TsvmmClient } from '@tsvmm/client';
import { CancellationTokenSource, ProgressType } from 'vscode-jsonrpc';
import {
  ErrorCodes,
  MigrationCancel,
  MigrationSaveToFile,
  MigrationStart,
  MigrationStatusRequest,
  type MigrationStatusResult,
  type WorkDoneProgressValue,
} from '@tsvmm/protocol';
import { buildGuests, tsvmmCli } from './guest-harness.js';
import { checksumOf, cuttingProxy, MIGRATE_RW } from './migration-harness.js';
import { freePort } from './rpc-harness.js';

const PASSES = 150;
const APPEND = `passes=${PASSES} pages=512 words=16 blk=1`;
const DISK_BYTES = 1024 * 1024;
const DEBUG_EXIT = { driver: 'isa-debug-exit', iobase: 0xf4, iosize: 4 };

interface RunProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exit: Promise<number | null>;
  /** the address it waits at (`--incoming`), once printed */
  address: Promise<string>;
}

/** `tsvmm run` with the migrate_rw guest; serial on stdout. */
function runTsvmm(args: string[], disk: string, append = APPEND): RunProcess {
  const child = spawn(
    process.execPath,
    [tsvmmCli, 'run', '--kernel', MIGRATE_RW(), '--append', append, '-m', '64M', '--device', 'isa-debug-exit,iobase=0xf4,iosize=0x4', '--drive', `file=${disk},format=raw,if=virtio`, ...args],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString('latin1')));
  const address = new Promise<string>((resolve, reject) => {
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /waiting for an incoming migration at (\S+)/.exec(err);
      if (m?.[1] !== undefined) resolve(m[1]);
    });
    child.once('exit', () => reject(new Error(`tsvmm run ended before listening: ${err}`)));
  });
  address.catch(() => undefined);
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stdout: () => out, stderr: () => err, exit, address };
}

function freshDisk(dir: string, name: string): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, Buffer.alloc(DISK_BYTES));
  return f;
}

describe('live migration between tsvmm processes (KVM)', function () {
  // Generous deadlines: a loaded CI machine slows the rate-limited migrations several times over.
  this.timeout(600_000);
  let dir: string;
  let client: TsvmmClient;
  let reference: { checksum: string | undefined; disk: Buffer };
  const children: ChildProcess[] = [];

  before(async () => {
    buildGuests();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-migration-'));
    const disk = freshDisk(dir, 'reference.img');
    const ref = runTsvmm([], disk);
    expect(await ref.exit).to.equal(1, ref.stdout() + ref.stderr());
    reference = { checksum: checksumOf(ref.stdout()), disk: fs.readFileSync(disk) };
    expect(reference.checksum).to.match(/^0x[0-9a-f]{8}$/);
    client = await TsvmmClient.spawn({ command: [process.execPath, tsvmmCli] });
  });

  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    await client?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** A source VM in the server, running, past its first passes. */
  async function startSource(disk: string, append = APPEND): Promise<string> {
    const { vmId } = await client.vmCreate({
      description: { kernel: MIGRATE_RW(), append, memory: '64M', devices: [DEBUG_EXIT], drives: [{ file: disk, format: 'raw', if: 'virtio' }] },
    });
    const seen = client.waitForConsole(vmId, '# pass 5\n', 60_000);
    await client.vmStart({ vmId });
    await seen;
    return vmId;
  }

  function migrate(vmId: string, uri: string, parameters: Record<string, unknown> = {}, workDoneToken?: string): Promise<MigrationStatusResult> {
    return client.connection.sendRequest(MigrationStart.type, { vmId, uri, parameters, ...(workDoneToken !== undefined ? { workDoneToken } : {}) });
  }

  it('precopy over TCP to `tsvmm run --incoming`: the guest finishes there with the unmigrated checksum and disk', async () => {
    const disk = freshDisk(dir, 'precopy.img');
    const vmId = await startSource(disk);
    const dest = runTsvmm(['--incoming', 'tcp:127.0.0.1:0'], disk);
    children.push(dest.child);
    const status = await migrate(vmId, await dest.address, { strategy: 'precopy' });
    expect(status.status).to.equal('completed');
    expect(status.ram.iterations).to.be.at.least(2);
    expect(status.downtimeMs).to.be.a('number');
    expect((await client.vmStatus({ vmId })).state).to.equal('paused');
    expect(await dest.exit).to.equal(1, dest.stderr());
    expect(checksumOf(dest.stdout())).to.equal(reference.checksum);
    expect(dest.stdout()).to.not.match(/# pass [0-4]\n/);
    await client.vmDestroy({ vmId });
    expect(Buffer.compare(fs.readFileSync(disk), reference.disk)).to.equal(0);
  });

  it('xbzrle over TCP to a VM created with `incoming`, with $/progress and XBZRLE statistics', async () => {
    const disk = freshDisk(dir, 'xbzrle.img');
    const vmId = await startSource(disk);
    const port = await freePort();
    const dst = await client.vmCreate({
      description: { kernel: MIGRATE_RW(), append: APPEND, memory: '64M', devices: [DEBUG_EXIT], drives: [{ file: disk, format: 'raw', if: 'virtio' }], incoming: `tcp:127.0.0.1:${port}` },
    });
    const progress: unknown[] = [];
    const token = 'mig-xbzrle';
    const sub = client.connection.onProgress(new ProgressType<WorkDoneProgressValue>(), token, (v) => progress.push(v));
    const running = client.waitForState(dst.vmId, (c) => c.to === 'running' && c.reason === 'migrated', 300_000);
    const output = client.waitForConsole(dst.vmId, /# checksum 0x[0-9a-f]{8}/, 300_000);
    // registered now: the guest powers off right after its checksum, maybe before the lines below run
    const ended = client.waitForState(dst.vmId, (c) => c.to === 'shutdown', 300_000);
    // A slow link makes several rounds, so pages go again and XBZRLE has something to encode.
    const status = await migrate(vmId, `tcp:127.0.0.1:${port}`, { strategy: 'xbzrle', maxBandwidth: 4_000_000 }, token);
    sub.dispose();
    await running;
    expect(status.status).to.equal('completed');
    expect(status.xbzrle?.pages).to.be.greaterThan(0);
    expect(status.xbzrle?.cacheMisses).to.be.greaterThan(0);
    const text = await output;
    expect(checksumOf(text)).to.equal(reference.checksum);
    const incomingStatus = await client.connection.sendRequest(MigrationStatusRequest.type, { vmId: dst.vmId });
    expect(incomingStatus).to.include({ role: 'destination', status: 'completed' });
    await ended;
    await client.vmDestroy({ vmId });
    expect(Buffer.compare(fs.readFileSync(disk), reference.disk)).to.equal(0);
    // workDoneProgress: begin, reports, end
    expect(progress.some((p) => (p as { kind?: string }).kind === 'begin')).to.equal(true);
    expect(progress.some((p) => (p as { kind?: string }).kind === 'end')).to.equal(true);
  });

  it('saves to a file and restores it with `tsvmm run --incoming file:`', async () => {
    const disk = freshDisk(dir, 'snapshot.img');
    const vmId = await startSource(disk);
    const file = path.join(dir, 'vm.snapshot');
    const status = await client.connection.sendRequest(MigrationSaveToFile.type, { vmId, path: file });
    expect(status.status).to.equal('completed');
    expect(fs.existsSync(file)).to.equal(true);
    expect((await client.vmStatus({ vmId })).state).to.equal('paused');
    await client.vmDestroy({ vmId });
    const restored = runTsvmm(['--incoming', `file:${file}`], disk);
    children.push(restored.child);
    expect(await restored.exit).to.equal(1, restored.stderr());
    expect(checksumOf(restored.stdout())).to.equal(reference.checksum);
    expect(Buffer.compare(fs.readFileSync(disk), reference.disk)).to.equal(0);
  });

  it('is refused before the source stops when the destination differs (RAM size), and the source runs on', async () => {
    const disk = freshDisk(dir, 'refused.img');
    const vmId = await startSource(disk);
    const dest = spawn(
      process.execPath,
      [tsvmmCli, 'run', '--kernel', MIGRATE_RW(), '-m', '128M', '--device', 'isa-debug-exit,iobase=0xf4,iosize=0x4', '--drive', `file=${disk},format=raw,if=virtio`, '--incoming', 'tcp:127.0.0.1:0'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(dest);
    let err = '';
    const address = await new Promise<string>((resolve) => {
      dest.stderr?.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /at (tcp:\S+)/.exec(err);
        if (m?.[1] !== undefined) resolve(m[1]);
      });
    });
    const destExit = new Promise<number | null>((r) => dest.once('exit', r));
    let caught: unknown;
    try {
      await migrate(vmId, address);
    } catch (e) {
      caught = e;
    }
    expect(caught).to.be.instanceOf(ResponseError);
    expect((caught as ResponseError<unknown>).code).to.equal(ErrorCodes.MigrationFailed);
    expect((caught as Error).message).to.match(/RAM size: the stream has 67108864 bytes, this VM 134217728/);
    expect((await client.vmStatus({ vmId })).state).to.equal('running');
    expect(await destExit).to.not.equal(0);
    expect(err).to.match(/incoming migration failed/);
    const out = await client.waitForConsole(vmId, /# checksum 0x[0-9a-f]{8}/, 120_000);
    expect(checksumOf(out)).to.equal(reference.checksum);
    await client.vmDestroy({ vmId });
  });

  it('cancels: the source runs on and the destination discards what it got', async () => {
    const disk = freshDisk(dir, 'cancel.img');
    const vmId = await startSource(disk);
    const dest = runTsvmm(['--incoming', 'tcp:127.0.0.1:0'], disk);
    children.push(dest.child);
    // 200 KB/s: the bulk round alone takes seconds.
    const pending = migrate(vmId, await dest.address, { strategy: 'precopy', maxBandwidth: 200_000 });
    pending.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 800));
    const c = await client.connection.sendRequest(MigrationCancel.type, { vmId });
    expect(c.status).to.equal('cancelling');
    let caught: unknown;
    try {
      await pending;
    } catch (e) {
      caught = e;
    }
    expect((caught as Error).message).to.match(/cancelled/);
    const st = await client.connection.sendRequest(MigrationStatusRequest.type, { vmId });
    expect(st.status).to.equal('cancelled');
    expect((await client.vmStatus({ vmId })).state).to.equal('running');
    expect(await dest.exit).to.equal(2);
    expect(dest.stderr()).to.match(/incoming migration failed/);
    const out = await client.waitForConsole(vmId, /# checksum 0x[0-9a-f]{8}/, 120_000);
    expect(checksumOf(out)).to.equal(reference.checksum);
    await client.vmDestroy({ vmId });
  });

  it('cancels on $/cancelRequest of migration/start like migration/cancel', async () => {
    const disk = freshDisk(dir, 'cancel-request.img');
    const vmId = await startSource(disk);
    const dest = runTsvmm(['--incoming', 'tcp:127.0.0.1:0'], disk);
    children.push(dest.child);
    const cts = new CancellationTokenSource();
    const pending = client.connection.sendRequest(MigrationStart.type, { vmId, uri: await dest.address, parameters: { strategy: 'precopy', maxBandwidth: 200_000 } }, cts.token);
    pending.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 800));
    cts.cancel();
    let caught: unknown;
    try {
      await pending;
    } catch (e) {
      caught = e;
    }
    expect(caught).to.be.instanceOf(ResponseError);
    expect((await client.connection.sendRequest(MigrationStatusRequest.type, { vmId })).status).to.equal('cancelled');
    expect((await client.vmStatus({ vmId })).state).to.equal('running');
    expect(await dest.exit).to.equal(2);
    await client.vmDestroy({ vmId });
  });

  it('survives the connection being cut at random points of the stream (the source runs on, resumed after a stop-and-copy); a later migration completes', async () => {
    const disk = freshDisk(dir, 'cuts.img');
    // A long run, so the guest is still going after several failed attempts.
    const append = APPEND.replace(`passes=${PASSES}`, 'passes=600');
    const longRef = freshDisk(dir, 'cuts-reference.img');
    const ref = runTsvmm([], longRef, append);
    const refExit = ref.exit;
    const vmId = await startSource(disk, append);
    // How long a stream of this guest is: a snapshot taken live, after which the VM runs on (resume).
    const file = path.join(dir, 'length.snapshot');
    await client.connection.sendRequest(MigrationSaveToFile.type, { vmId, path: file, resume: true });
    expect((await client.vmStatus({ vmId })).state).to.equal('running');
    const length = fs.statSync(file).size;
    // Random points (reproducible by the seed) plus the header, and points in the last sections: device and CPU state, END.
    let seed = 0x5eed;
    const rand = (): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const cuts = [20, 300, ...Array.from({ length: 4 }, () => Math.floor(50_000 + rand() * (length * 0.8))), length - 3000, length - 200, length - 8];
    let moved: RunProcess | undefined;
    for (const cut of cuts) {
      const dest = runTsvmm(['--incoming', 'tcp:127.0.0.1:0'], disk, append);
      children.push(dest.child);
      const target = /tcp:([^:]+):(\d+)/.exec(await dest.address);
      const proxy = await cuttingProxy({ host: target?.[1] ?? '127.0.0.1', port: Number(target?.[2]) }, cut);
      let caught: unknown;
      try {
        await migrate(vmId, `tcp:127.0.0.1:${proxy.port}`, { strategy: 'precopy' });
      } catch (e) {
        caught = e;
      } finally {
        proxy.close();
      }
      if (caught === undefined) {
        // This live stream was shorter than the cut: the VM moved. Nothing was lost either way.
        moved = dest;
        break;
      }
      expect(caught, `cut after ${cut} bytes`).to.be.instanceOf(ResponseError);
      expect((caught as ResponseError<unknown>).code, `cut after ${cut} bytes`).to.equal(ErrorCodes.MigrationFailed);
      expect((await client.vmStatus({ vmId })).state, `cut after ${cut} bytes: the source runs`).to.equal('running');
      expect(await dest.exit, `cut after ${cut} bytes: the destination discards`).to.equal(2);
    }
    if (moved === undefined) {
      moved = runTsvmm(['--incoming', 'tcp:127.0.0.1:0'], disk, append);
      children.push(moved.child);
      const status = await migrate(vmId, await moved.address, { strategy: 'xbzrle' });
      expect(status.status).to.equal('completed');
    }
    expect(await moved.exit).to.equal(1, moved.stderr());
    expect(await refExit).to.equal(1);
    expect(checksumOf(moved.stdout())).to.equal(checksumOf(ref.stdout()));
    await client.vmDestroy({ vmId });
    expect(Buffer.compare(fs.readFileSync(disk), fs.readFileSync(longRef))).to.equal(0);
  });
});
