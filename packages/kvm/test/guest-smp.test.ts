/**
 * Several vCPUs: each on its own native thread, exits of all handed to the
 * one JS thread. With the in-kernel irqchip an AP waits inside KVM_RUN for
 * INIT/SIPI (api.rst "KVM_GET_MP_STATE": KVM_MP_STATE_UNINITIALIZED), which
 * must not hold up the BSP's exits.
 */
import { expect } from 'chai';
import { KVM_MP_STATE_UNINITIALIZED } from '../src/index.js';
import type { Vcpu, VcpuEvent } from '../src/index.js';
import { GuestCode } from './guest-code.js';
import { enterFlatProtectedMode } from './guest-setup.js';
import { closeLeftoverVms, createTestVm, loadCode, readLe, withTimeout } from './harness.js';
import type { TestVm } from './harness.js';

const AP_CODE = 0x3000;
const DONE_PORT = 0xf0;
const LAPIC_SVR = 0xfee0_00f0;
const LAPIC_ICR_LO = 0xfee0_0300;
const LAPIC_ICR_HI = 0xfee0_0310;

function loop(port: number, n: number): GuestCode {
  return new GuestCode(32).movReg32('ecx', n).movDx(port).label('loop').movEaxEcx().outDx(1).decEcx().jnz('loop');
}

function vcpu(t: TestVm, index: number): Vcpu {
  const v = t.vcpus[index];
  if (v === undefined) throw new Error(`no vCPU ${index}`);
  return v;
}


describe('several vCPUs', () => {


  afterEach(closeLeftoverVms);

  it('stops a VM whose vCPU threads all end at once (every ENDED notice reaches JS)', async () => {
    // Both threads leave KVM_RUN on the same kick: a spinning BSP and an AP
    // waiting for INIT/SIPI. Stopping used to lose the second thread's ENDED
    // notice when the stop's forced completion raced it, and never resolved.
    for (let round = 0; round < 10; round++) {
      const t = createTestVm(new GuestCode(32).spin(), { vcpus: 2, irqchip: true });
      try {
        t.vm.startVcpus({ pio() {}, mmio() {}, event() {} });
        await new Promise((r) => setTimeout(r, 20));
        await withTimeout(t.vm.stopVcpus(), 5_000, `round ${round}: stopVcpus`);
        expect(vcpu(t, 0).runState).to.equal('stopped');
        expect(vcpu(t, 1).runState).to.equal('stopped');
      } finally {
        t.close();
      }
    }
  });

  it('runs two vCPUs at once and tells their exits apart', async () => {
    const N = 200;
    const t = createTestVm(loop(0x10, N).hlt(), { vcpus: 2 });
    loadCode(t.ram, loop(0x11, N).hlt(), AP_CODE);
    enterFlatProtectedMode(vcpu(t, 1), AP_CODE);
    try {
      const byVcpu = new Map<number, number[]>([
        [0, []],
        [1, []],
      ]);
      const halted = new Set<number>();
      const bothHalted = new Promise<void>((resolve) => {
        t.vm.startVcpus({
          pio(port, _size, _isWrite, data, v) {
            expect(port).to.equal(0x10 + v.id);
            byVcpu.get(v.id)?.push(readLe(data));
          },
          mmio() {},
          event(v, ev) {
            expect(ev.kind).to.equal('hlt');
            halted.add(v.id);
            if (halted.size === 2) resolve();
          },
        });
      });
      await withTimeout(bothHalted, 20_000, 'both vCPUs to halt');
      const expected = Array.from({ length: N }, (_, i) => N - i);
      expect(byVcpu.get(0)).to.deep.equal(expected);
      expect(byVcpu.get(1)).to.deep.equal(expected);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('keeps handling the BSP while an AP waits in KVM_RUN for INIT/SIPI, and pauses both', async () => {
    const N = 100;
    const t = createTestVm(loop(0x10, N).movDx(DONE_PORT).outDx(1).spin(), { vcpus: 2, irqchip: true });
    try {
      expect(vcpu(t, 1).getMpState()).to.equal(KVM_MP_STATE_UNINITIALIZED);
      let outs = 0;
      const done = new Promise<void>((resolve, reject) => {
        t.vm.startVcpus({
          pio(port, _size, _isWrite, _data, v) {
            expect(v.id).to.equal(0);
            if (port === DONE_PORT) resolve();
            else outs++;
          },
          mmio() {},
          event(v, ev) {
            reject(new Error(`unexpected event on vCPU ${v.id}: ${JSON.stringify(ev)}`));
          },
        });
      });
      await withTimeout(done, 20_000, 'the BSP to finish its OUT loop');
      expect(outs).to.equal(N);
      expect(vcpu(t, 1).runState).to.equal('running');
      await t.vm.pauseVcpus();
      expect(t.vcpus.map((v) => v.runState)).to.deep.equal(['paused', 'paused']);
      expect(vcpu(t, 1).getMpState()).to.equal(KVM_MP_STATE_UNINITIALIZED);
      expect(vcpu(t, 1).exitStats().eintr).to.be.at.least(1);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('starts an AP with INIT and SIPI sent through the in-kernel local APIC', async () => {
    // KVM drops IPIs from a software-disabled local APIC (the reset state),
    // so enable it first through the spurious-interrupt vector register.
    const bsp = new GuestCode(32)
      .movMemImm32(LAPIC_SVR, 0x1ff) // APIC software enable, spurious vector 0xff
      .movMemImm32(LAPIC_ICR_HI, 1 << 24) // destination: APIC id 1
      .movMemImm32(LAPIC_ICR_LO, 0x0000_4500) // INIT, level assert
      .movMemImm32(LAPIC_ICR_LO, 0x0000_4600 | (AP_CODE >> 12)) // STARTUP, vector 3 -> 0300:0000
      .spin();
    const t = createTestVm(bsp, { vcpus: 2, irqchip: true });
    // The AP starts in real mode at CS:IP = 0300:0000.
    loadCode(t.ram, new GuestCode(16).movDx(0x41).movAl(0xaa).outDx(1).spin(), AP_CODE);
    try {
      const apOut = new Promise<{ vcpu: number; port: number; value: number }>((resolve, reject) => {
        t.vm.startVcpus({
          pio(port, _size, _isWrite, data, v) {
            resolve({ vcpu: v.id, port, value: readLe(data) });
          },
          mmio(addr) {
            reject(new Error(`LAPIC access at 0x${addr.toString(16)} left the kernel`));
          },
          event(v: Vcpu, ev: VcpuEvent) {
            reject(new Error(`unexpected event on vCPU ${v.id}: ${JSON.stringify(ev)}`));
          },
        });
      });
      const seen = await withTimeout(apOut, 20_000, 'the AP to run after INIT/SIPI');
      expect(seen).to.deep.equal({ vcpu: 1, port: 0x41, value: 0xaa });
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });
});
