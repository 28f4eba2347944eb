/**
 * Pausing kicks vCPU threads out of KVM_RUN (immediate_exit plus a
 * real-time signal, api.rst section 5 "immediate_exit"); after
 * `await vm.pauseVcpus()` no vCPU is inside KVM_RUN and pending I/O is
 * complete, so state ioctls work.
 */
import { expect } from 'chai';
import { KvmStateError } from '../src/index.js';
import type { Vcpu } from '../src/index.js';
import { GuestCode } from './guest-code.js';
import { CODE_ADDR } from './guest-setup.js';
import { closeLeftoverVms, createTestVm, delay, readLe, withTimeout, writeLe } from './harness.js';
import type { TestVm } from './harness.js';

const COUNT_PORT = 0x10;

/** OUTs of ecx = 0, -1, -2, ... to COUNT_PORT, for 2^32 iterations. */
function endlessOuts(): GuestCode {
  return new GuestCode(32).movReg32('ecx', 0).movDx(COUNT_PORT).label('loop').movEaxEcx().outDx(1).decEcx().jnz('loop').hlt();
}

function first(t: TestVm): Vcpu {
  const v = t.vcpus[0];
  if (v === undefined) throw new Error('no vCPU');
  return v;
}

describe('pause, resume and stop', () => {
  afterEach(closeLeftoverVms);

  it('pauses a guest that spins without exits, and resumes it', async () => {
    const t = createTestVm(new GuestCode(32).spin());
    try {
      t.vm.startVcpus({ pio() {}, mmio() {}, event() {} });
      await delay(20);
      await withTimeout(t.vm.pauseVcpus(), 5000, 'pause');
      const vcpu = first(t);
      expect(vcpu.runState).to.equal('paused');
      expect(vcpu.getRegs().rip).to.equal(BigInt(CODE_ADDR));
      t.vm.resumeVcpus();
      expect(vcpu.runState).to.equal('running');
      await delay(5);
      await withTimeout(t.vm.pauseVcpus(), 5000, 'second pause');
      expect(vcpu.exitStats().eintr).to.equal(2);
      await withTimeout(t.vm.stopVcpus(), 5000, 'stop');
      expect(vcpu.runState).to.equal('stopped');
    } finally {
      t.close();
    }
  });

  it('stops a stream of exits while paused and continues it after resume', async () => {
    const t = createTestVm(endlessOuts());
    try {
      let outs = 0;
      t.vm.startVcpus({
        pio() {
          outs++;
        },
        mmio() {},
        event() {},
      });
      await delay(30);
      await withTimeout(t.vm.pauseVcpus(), 5000, 'pause');
      const atPause = outs;
      expect(atPause).to.be.greaterThan(0);
      // KVM completed the OUT in flight without running further guest code:
      // the `dec ecx` after the last OUT has not executed yet.
      expect(first(t).getRegs().rcx & 0xffff_ffffn).to.equal(BigInt(2 ** 32 - (atPause - 1)));
      await delay(30);
      expect(outs).to.equal(atPause);
      t.vm.resumeVcpus();
      await delay(30);
      expect(outs).to.be.greaterThan(atPause);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('waits for an asynchronous handler before it reports the vCPU paused', async () => {
    const IN_PORT = 0x20;
    const t = createTestVm(new GuestCode(32).movDx(IN_PORT).inDx(4).spin());
    try {
      let release: (() => void) | undefined;
      const inFlight = new Promise<void>((resolve) => {
        t.vm.startVcpus({
          pio(_port, _size, _isWrite, data) {
            resolve();
            return new Promise<void>((done) => {
              release = () => {
                writeLe(data, 0x1234);
                done();
              };
            });
          },
          mmio() {},
          event() {},
        });
      });
      await withTimeout(inFlight, 5000, 'the IN exit');
      let paused = false;
      const pause = t.vm.pauseVcpus().then(() => {
        paused = true;
      });
      await delay(20);
      expect(paused).to.equal(false);
      expect(first(t).runState).to.equal('exit');
      release?.();
      await withTimeout(pause, 5000, 'pause after the handler');
      // KVM completed the IN (immediate_exit re-entry) before the pause.
      expect(first(t).getRegs().rax & 0xffff_ffffn).to.equal(0x1234n);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('refuses to resume while a pause is still in progress', async () => {
    const t = createTestVm(new GuestCode(32).movDx(0x20).inDx(1).spin());
    try {
      let release: (() => void) | undefined;
      await withTimeout(
        new Promise<void>((started) => {
          t.vm.startVcpus({
            pio() {
              started();
              return new Promise<void>((done) => {
                release = done;
              });
            },
            mmio() {},
            event() {},
          });
        }),
        5000,
        'the IN exit',
      );
      const pause = t.vm.pauseVcpus();
      expect(() => t.vm.resumeVcpus()).to.throw(KvmStateError, /pause is still in progress/);
      release?.();
      await withTimeout(pause, 5000, 'pause');
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('stops vCPUs from inside an exit handler and lets them start again', async () => {
    const t = createTestVm(endlessOuts());
    try {
      let outs = 0;
      const stopped = new Promise<void>((resolve) => {
        t.vm.startVcpus({
          pio() {
            if (++outs === 10) void t.vm.stopVcpus().then(resolve);
          },
          mmio() {},
          event() {},
        });
      });
      await withTimeout(stopped, 5000, 'stop');
      expect(first(t).runState).to.equal('stopped');
      expect(outs).to.equal(10);
      const again = new Promise<number>((resolve) => {
        t.vm.startVcpus({
          pio(_port, _size, _isWrite, data) {
            resolve(readLe(data));
          },
          mmio() {},
          event() {},
        });
      });
      // The guest continues after the tenth OUT: the next one writes -10.
      expect(await withTimeout(again, 5000, 'restart')).to.equal((2 ** 32 - 10) & 0xff);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('closes a VM with running vCPUs synchronously', () => {
    const t = createTestVm(endlessOuts(), { vcpus: 2 });
    t.vm.startVcpus({ pio() {}, mmio() {}, event() {} });
    t.close();
    expect(t.vm.closed).to.equal(true);
    expect(first(t).runState).to.equal('closed');
    expect(() => first(t).getRegs()).to.throw(KvmStateError, /closed/);
  });

  it('resolves whenVcpusStopped once every thread ended', async () => {
    const t = createTestVm(new GuestCode(32).hlt());
    try {
      await withTimeout(
        new Promise<void>((resolve) => {
          t.vm.startVcpus({
            pio() {},
            mmio() {},
            event() {
              void t.vm.stopVcpus();
              resolve();
            },
          });
        }),
        5000,
        'hlt',
      );
      await withTimeout(t.vm.whenVcpusStopped(), 5000, 'threads to end');
      expect(first(t).runState).to.equal('stopped');
    } finally {
      t.close();
    }
  });
});
