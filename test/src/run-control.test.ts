/**
 * `tsvmm run --control unix:PATH` (host/src/run-control.ts): the VM of a
 * `tsvmm run` process driven over the control protocol, as QEMU's -qmp —
 * lifecycle methods, refusals, and live migration with `run` as the source
 * into `run --incoming`, on KVM.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TsvmmClient } from '@tsvmm/client';
import { ErrorCodes, MigrationStart } from '@tsvmm/protocol';
import { buildGuests, debugExitStatus, guestImage, tsvmmCli } from './guest-harness.js';
import { freePort, rpcError } from './rpc-harness.js';

interface RunProcess {
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | null>;
  /** resolves once stderr contains `text` */
  waitFor(text: string | RegExp, ms?: number): Promise<void>;
}

function tsvmmRun(args: string[]): RunProcess {
  const env = { ...process.env };
  delete env['TSVMM_TEST_ACCELERATOR'];
  const proc = spawn(process.execPath, [tsvmmCli, 'run', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  let err = '';
  const waiters: Array<() => void> = [];
  proc.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
    for (const w of waiters) w();
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitFor: (text, ms = 30_000) =>
      new Promise<void>((resolve, reject) => {
        const seen = (): boolean => (typeof text === 'string' ? err.includes(text) : text.test(err));
        const timer = setTimeout(() => reject(new Error(`tsvmm run did not print ${String(text)} within ${ms} ms; stderr: ${err}`)), ms);
        const check = (): void => {
          if (seen()) {
            clearTimeout(timer);
            resolve();
          }
        };
        waiters.push(check);
        check();
        void exited.then(() => {
          if (!seen()) {
            clearTimeout(timer);
            reject(new Error(`tsvmm run exited before printing ${String(text)}; stderr: ${err}`));
          }
        });
      }),
  };
}

describe('tsvmm run --control (KVM)', function () {
  this.timeout(180_000);
  let dir: string;
  const running: RunProcess[] = [];

  before(() => buildGuests());
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-run-control-'));
  });
  afterEach(async () => {
    for (const r of running.splice(0)) {
      if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill('SIGKILL');
      await r.exited;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves the VM as vm-1: status, pause and resume, no vm/create; vm/destroy ends tsvmm run', async () => {
    const sock = path.join(dir, 'control.sock');
    const run = tsvmmRun(['--kernel', guestImage('serial.elf'), '--append', 'line=x', '--serial', 'null', '--control', `unix:${sock}`]);
    running.push(run);
    await run.waitFor(`control socket at unix:${sock} (the VM is vm-1)`);
    expect(fs.statSync(sock).mode & 0o777).to.equal(0o600);
    const client = await TsvmmClient.connect(`unix:${sock}`);
    try {
      const { vms } = await client.vmList();
      expect(vms).to.have.length(1);
      expect(vms[0]).to.include({ vmId: 'vm-1', state: 'running', pid: run.proc.pid });
      const status = await client.vmStatus({ vmId: 'vm-1' });
      expect(status.machineType).to.equal('pc-i440fx-rhel7.0.0');
      expect((await client.vmPause({ vmId: 'vm-1' })).state).to.equal('paused');
      expect((await client.vmResume({ vmId: 'vm-1' })).state).to.equal('running');
      const create = await rpcError(client.vmCreate({ description: { kernel: guestImage('serial.elf') } }));
      expect(create.code).to.equal(ErrorCodes.InvalidRequest);
      expect(create.message).to.match(/serves that VM only and creates none/);
      const ended = client.waitForState('vm-1', (c) => c.to === 'shutdown', 20_000);
      await client.vmDestroy({ vmId: 'vm-1' });
      await ended;
    } finally {
      await client.close();
    }
    expect(await run.exited, run.stderr()).to.equal(0);
    expect(fs.existsSync(sock), 'the socket is removed when the VM ends').to.equal(false);
  });

  it('refuses a TCP control address, pointing at tsvmm serve', async () => {
    const run = tsvmmRun(['--kernel', guestImage('serial.elf'), '--serial', 'null', '--control', 'tcp:127.0.0.1:1']);
    running.push(run);
    expect(await run.exited).to.equal(2);
    expect(run.stderr()).to.match(/--control tcp:127\.0\.0\.1:1: only unix:PATH sockets .*tsvmm serve/);
  });

  it('migrates a running `tsvmm run` VM into `tsvmm run --incoming`: the destination ends with the unmigrated checksum', async () => {
    const guest = ['--kernel', guestImage('migrate_rw.elf'), '--append', 'passes=300', '-m', '128', '--device', 'isa-debug-exit,iobase=0xf4,iosize=0x4'];
    const reference = tsvmmRun(guest);
    running.push(reference);
    expect(await reference.exited).to.equal(debugExitStatus(0));
    const checksum = /# checksum (0x[0-9a-f]+)/.exec(reference.stdout())?.[1];
    expect(checksum, reference.stdout()).to.be.a('string');

    const sock = path.join(dir, 'source.sock');
    const source = tsvmmRun([...guest, '--control', `unix:${sock}`]);
    running.push(source);
    await source.waitFor('control socket at');
    const port = await freePort();
    const destination = tsvmmRun([...guest, '--incoming', `tcp:127.0.0.1:${port}`]);
    running.push(destination);
    await destination.waitFor('waiting for an incoming migration');
    // let the guest run a few passes first: the migration starts mid-run
    await new Promise((r) => setTimeout(r, 300));
    const client = await TsvmmClient.connect(`unix:${sock}`);
    try {
      const result = await client.request(MigrationStart, { vmId: 'vm-1', uri: `tcp:127.0.0.1:${port}` });
      expect(result.status).to.equal('completed');
      const status = await client.vmStatus({ vmId: 'vm-1' });
      expect(status).to.include({ state: 'paused', reason: 'migrated' });
      await client.vmDestroy({ vmId: 'vm-1' });
    } finally {
      await client.close();
    }
    expect(await source.exited, source.stderr()).to.equal(0);
    expect(await destination.exited, destination.stderr()).to.equal(debugExitStatus(0));
    expect(destination.stdout()).to.include(`# checksum ${checksum ?? '?'}`);
    expect(source.stdout(), 'the source stopped before the guest finished').to.not.include('# checksum');
  });
});
