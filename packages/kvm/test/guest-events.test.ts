/**
 * Exits that are not I/O (api.rst section 5): HLT without an in-kernel
 * irqchip, SHUTDOWN on a triple fault, and the decoding of the others.
 */
import { expect } from 'chai';
import {
  decodeEvent,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_IRQ_WINDOW_OPEN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_EXIT_UNKNOWN,
  KVM_INTERNAL_ERROR_EMULATION,
  KVM_RUN_OFFSETS,
  KVM_SYSTEM_EVENT_RESET,
} from '../src/index.js';
import type { VcpuEvent } from '../src/index.js';
import { GuestCode } from './guest-code.js';
import { CODE_ADDR, enterFlatProtectedMode } from './guest-setup.js';
import { closeLeftoverVms, createTestVm, kvm, loadCode, runUntilEvent, TSS_ADDR, withTimeout } from './harness.js';

const O = KVM_RUN_OFFSETS;

function fakeRun(exitReason: number, fill: (v: DataView) => void): DataView {
  const view = new DataView(new ArrayBuffer(4096));
  view.setUint32(O.exit_reason, exitReason, true);
  fill(view);
  return view;
}


describe('vCPU events', () => {


  afterEach(closeLeftoverVms);

  it('reports a triple fault as shutdown', async () => {
    // An IDT with limit 0 turns #UD into #GP, #DF and then a triple fault.
    // (Protected mode only: kvm_pvm's real-mode emulation ignores the IDT
    // limit and vectors through the IVT anyway; see README, host quirks.)
    const t = createTestVm(new GuestCode(32).ud2());
    try {
      const vcpu = t.vcpus[0];
      if (vcpu === undefined) throw new Error('no vCPU');
      vcpu.setSregs({ ...vcpu.getSregs(), idt: { base: 0n, limit: 0 } });
      const { event } = await runUntilEvent(t);
      expect(event).to.deep.equal({ kind: 'shutdown' });
      expect(vcpu.exitStats().byReason).to.deep.equal({ KVM_EXIT_SHUTDOWN: 1 });
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('delivers a real-mode exception through the interrupt vector table', async () => {
    const t = createTestVm(new GuestCode(16).ud2(), { mode: 'real' });
    try {
      new DataView(t.ram.buffer).setUint32(6 * 4, 0x0000_2000, true); // IVT[6] (#UD) = 0000:2000
      loadCode(t.ram, new GuestCode(16).movDx(0x66).movAl(6).outDx(1).hlt(), 0x2000);
      const ports: number[] = [];
      const { event } = await runUntilEvent(t, { pio: (port) => void ports.push(port) });
      expect(event.kind).to.equal('hlt');
      expect(ports).to.deep.equal([0x66]);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('reports a guest that executes unbacked memory, with the error details', async () => {
    // No memslot at all: the first instruction fetch has nowhere to go. This
    // host fails KVM_RUN with ENOSPC (README, host quirks); hardware KVM
    // reports an emulation failure instead.
    const vm = kvm().createVm();
    try {
      vm.setTssAddr(TSS_ADDR);
      const vcpu = vm.createVcpu(0);
      enterFlatProtectedMode(vcpu, 0x5000);
      const event = await withTimeout(
        new Promise<VcpuEvent>((resolve) => vm.startVcpus({ pio() {}, mmio() {}, event: (_v, ev) => resolve(ev) })),
        10_000,
        'the event',
      );
      if (event.kind === 'run-error') {
        expect(event.error.operation).to.equal('KVM_RUN');
        expect(event.error.message).to.match(/^KVM_RUN failed: E[A-Z0-9]+ \([A-Z]/);
      } else {
        expect(event.kind).to.equal('internal-error');
      }
      expect(vcpu.runState).to.equal('event');
    } finally {
      vm.close();
    }
  });

  it('parks the vCPU on hlt until resume() and then continues after the hlt', async () => {
    const code = new GuestCode(32).hlt().movDx(0x30).movAl(7).outDx(1).hlt();
    const t = createTestVm(code);
    try {
      const events: string[] = [];
      const outs: number[] = [];
      await new Promise<void>((resolve) => {
        t.vm.startVcpus({
          pio(_port, _size, _isWrite, data) {
            outs.push(data[0] ?? -1);
          },
          mmio() {},
          event(vcpu, event) {
            events.push(event.kind);
            expect(vcpu.runState).to.equal('event');
            if (events.length === 1) {
              expect(vcpu.getRegs().rip).to.equal(BigInt(CODE_ADDR + 1));
              vcpu.resume();
            } else {
              resolve();
            }
          },
        });
      });
      expect(events).to.deep.equal(['hlt', 'hlt']);
      expect(outs).to.deep.equal([7]);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('decodes KVM_EXIT_INTERNAL_ERROR with its suberror and data', () => {
    const run = fakeRun(KVM_EXIT_INTERNAL_ERROR, (v) => {
      v.setUint32(O.internal_suberror, KVM_INTERNAL_ERROR_EMULATION, true);
      v.setUint32(O.internal_ndata, 2, true);
      v.setBigUint64(O.internal_data, 0x11n, true);
      v.setBigUint64(O.internal_data + 8, 0x22n, true);
    });
    expect(decodeEvent(run)).to.deep.equal({ kind: 'internal-error', suberror: 1, data: [0x11n, 0x22n] });
  });

  it('decodes KVM_EXIT_FAIL_ENTRY with the hardware reason and CPU', () => {
    const run = fakeRun(KVM_EXIT_FAIL_ENTRY, (v) => {
      v.setBigUint64(O.fail_entry_hardware_entry_failure_reason, 0x80000021n, true);
      v.setUint32(O.fail_entry_cpu, 1, true);
    });
    expect(decodeEvent(run)).to.deep.equal({ kind: 'fail-entry', hardwareEntryFailureReason: 0x80000021n, cpu: 1 });
  });

  it('decodes KVM_EXIT_SYSTEM_EVENT with its type and data', () => {
    const run = fakeRun(KVM_EXIT_SYSTEM_EVENT, (v) => {
      v.setUint32(O.system_event_type, KVM_SYSTEM_EVENT_RESET, true);
      v.setUint32(O.system_event_ndata, 1, true);
      v.setBigUint64(O.system_event_data, 5n, true);
    });
    expect(decodeEvent(run)).to.deep.equal({ kind: 'system-event', type: KVM_SYSTEM_EVENT_RESET, data: [5n] });
  });

  it('decodes KVM_EXIT_UNKNOWN and exits it does not model, naming the reason', () => {
    const unknown = fakeRun(KVM_EXIT_UNKNOWN, (v) => v.setBigUint64(O.hw_hardware_exit_reason, 0x30n, true));
    expect(decodeEvent(unknown)).to.deep.equal({
      kind: 'unknown', exitReason: 0, exitReasonName: 'KVM_EXIT_UNKNOWN', hardwareExitReason: 0x30n,
    });
    expect(decodeEvent(fakeRun(KVM_EXIT_IRQ_WINDOW_OPEN, () => {}))).to.deep.equal({
      kind: 'unknown', exitReason: KVM_EXIT_IRQ_WINDOW_OPEN, exitReasonName: 'KVM_EXIT_IRQ_WINDOW_OPEN',
    });
    expect(decodeEvent(fakeRun(99, () => {}))).to.deep.include({ exitReasonName: 'KVM_EXIT_99' });
  });

  it('caps KVM_EXIT_INTERNAL_ERROR data at the 16 entries kvm_run holds', () => {
    const run = fakeRun(KVM_EXIT_INTERNAL_ERROR, (v) => v.setUint32(O.internal_ndata, 1000, true));
    const ev = decodeEvent(run);
    expect(ev.kind === 'internal-error' ? ev.data.length : -1).to.equal(16);
  });
});
