/**
 * The exit handoff keeps the Node event loop alive while vCPU threads run
 * and lets the process exit once they are stopped (or the VM is closed).
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Worker } from 'node:worker_threads';
import { GuestRam } from '../src/index.js';
import { GuestCode } from './guest-code.js';
import { closeLeftoverVms, createTestVm, delay, kvm, withTimeout } from './harness.js';

function runChild(mode: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = fileURLToPath(new URL('./fixtures/lifecycle-child.js', import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, [script, mode], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('process lifetime', () => {
  it('stays alive while a vCPU computes without exits, and exits after the VM is closed', async () => {
    const r = await runChild('close');
    expect(r.stderr).to.equal('');
    expect(r.stdout).to.equal('out 42\ndone\n');
    expect(r.code).to.equal(0);
  });

  it('exits once the vCPU threads are stopped, even with the VM still open', async () => {
    const r = await runChild('stop');
    expect(r.stderr).to.equal('');
    expect(r.stdout).to.equal('out 42\ndone\n');
    expect(r.code).to.equal(0);
  });
});

describe('environment teardown', () => {
  function vcpuThreads(): number {
    return readdirSync('/proc/self/task').filter((tid) => {
      try {
        return readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').startsWith('vcpu');
      } catch {
        return false;
      }
    }).length;
  }

  it('stops and joins the vCPU threads of a worker that is terminated mid-run', async () => {
    const before = vcpuThreads();
    const worker = new Worker(new URL('./fixtures/vm-worker.js', import.meta.url));
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        worker.once('message', () => resolve());
        worker.once('error', reject);
      }),
      10_000,
      'the worker guest to run',
    );
    expect(vcpuThreads()).to.equal(before + 1);
    await withTimeout(worker.terminate(), 10_000, 'worker termination');
    expect(vcpuThreads()).to.equal(before);
  });
});

describe('garbage collection', () => {
  /** KVM's VM and vCPU fds show up as anon_inode:kvm-vm and anon_inode:kvm-vcpu:N. */
  function kvmFds(): number {
    return readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith('anon_inode:kvm-');
      } catch {
        return false; // the fd of the directory listing itself is gone already
      }
    }).length;
  }

  async function collect(gc: () => void, until: () => boolean): Promise<void> {
    for (let i = 0; i < 30 && !until(); i++) {
      gc();
      await delay(10);
    }
  }

  it('closes the fds of a VM and its vCPUs that were dropped without close()', async () => {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    if (typeof gc !== 'function') throw new Error('cannot reach gc()');
    const runGc = gc as () => void;
    // Let garbage from earlier tests go first, so only ours is counted.
    let previous = -1;
    await collect(runGc, () => {
      const now = kvmFds();
      const stable = now === previous;
      previous = now;
      return stable;
    });
    const before = kvmFds();
    (() => {
      const vm = kvm().createVm();
      vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, ram: GuestRam.allocate(1 << 16) });
      for (let id = 0; id < 2; id++) new DataView(vm.createVcpu(id).runView.buffer).getUint32(8, true);
    })();
    expect(kvmFds()).to.equal(before + 3);
    await collect(runGc, () => kvmFds() <= before);
    expect(kvmFds()).to.equal(before);
  });
});

describe('event loop fairness', () => {
  afterEach(closeLeftoverVms);

  it('keeps timers firing while a guest floods the JS thread with exits', async () => {
    // out dx, al; jmp back to the out: an exit every few microseconds, forever.
    const t = createTestVm(new GuestCode(32).movDx(0x10).label('loop').outDx(1).jmp('loop'));
    try {
      let exits = 0;
      t.vm.startVcpus({
        pio() {
          exits++;
        },
        mmio() {},
        event() {},
      });
      const started = performance.now();
      await withTimeout(delay(10), 2000, 'a 10 ms timer');
      const late = performance.now() - started - 10;
      expect(exits).to.be.greaterThan(100);
      // Exit handling yields to the event loop every sliceMs (2 ms).
      expect(late).to.be.lessThan(50);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });
});
