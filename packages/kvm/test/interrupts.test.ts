/**
 * In-kernel interrupt controllers and the eventfd fast paths
 * (api.rst "KVM_CREATE_IRQCHIP", "KVM_CREATE_PIT2", "KVM_IRQ_LINE",
 * "KVM_SIGNAL_MSI", "KVM_SET_GSI_ROUTING", "KVM_IRQFD", "KVM_IOEVENTFD").
 */
import { expect } from 'chai';
import {
  EventFd,
  KVM_IRQ_ROUTING_IRQCHIP,
  KVM_IRQ_ROUTING_MSI,
  KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER,
  KVM_PIT_SPEAKER_DUMMY,
} from '../src/index.js';
import type { KvmIrqRoutingEntry, Vm } from '../src/index.js';
import { GuestCode } from './guest-code.js';
import { closeLeftoverVms, createTestVm, delay, kvm, loadCode, readLe, runUntilEvent, withTimeout } from './harness.js';

const DONE_PORT = 0xf0;
const MMIO_DOORBELL = 0xd000_0000;

/*
 * Master PIC state from KVM_GET_IRQCHIP: struct kvm_irqchip { chip_id, pad,
 * struct kvm_pic_state { last_irr, irr, ... } }. last_irr follows the input
 * lines; irr latches a rising edge until the guest acknowledges it.
 */
function masterPicLines(vm: Vm): number {
  return vm.getIrqchip(KVM_IRQCHIP_PIC_MASTER)[8] ?? -1;
}

function masterPicIrr(vm: Vm): number {
  return vm.getIrqchip(KVM_IRQCHIP_PIC_MASTER)[9] ?? -1;
}

/** The default GSI routing KVM installs with its irqchip: GSI n -> PIC pin n (n < 16) and IOAPIC pin n. */
function defaultRoutes(): KvmIrqRoutingEntry[] {
  const routes: KvmIrqRoutingEntry[] = [];
  for (let gsi = 0; gsi < 24; gsi++) {
    if (gsi < 8) routes.push({ gsi, type: KVM_IRQ_ROUTING_IRQCHIP, irqchip: KVM_IRQCHIP_PIC_MASTER, pin: gsi });
    if (gsi !== 2) routes.push({ gsi, type: KVM_IRQ_ROUTING_IRQCHIP, irqchip: KVM_IRQCHIP_IOAPIC, pin: gsi });
  }
  return routes;
}

describe('interrupt controllers', () => {
  afterEach(closeLeftoverVms);

  it('creates the irqchip and PIT, and raises and lowers a line with KVM_IRQ_LINE', () => {
    const vm = kvm().createVm();
    try {
      vm.createIrqchip();
      vm.createPit2(KVM_PIT_SPEAKER_DUMMY);
      vm.irqLine(4, true);
      expect(masterPicLines(vm) & (1 << 4)).to.not.equal(0);
      expect(masterPicIrr(vm) & (1 << 4)).to.not.equal(0);
      vm.irqLine(4, false);
      expect(masterPicLines(vm) & (1 << 4)).to.equal(0);
    } finally {
      vm.close();
    }
  });

  it('accepts irqchip and MSI routes with KVM_SET_GSI_ROUTING and signals an MSI', () => {
    const vm = kvm().createVm();
    try {
      vm.createIrqchip();
      vm.setGsiRouting([
        ...defaultRoutes(),
        { gsi: 24, type: KVM_IRQ_ROUTING_MSI, address_lo: 0xfee0_0000, address_hi: 0, data: 0x31 },
      ]);
      vm.createVcpu(0);
      expect(vm.signalMsi({ address_lo: 0xfee0_0000, address_hi: 0, data: 0x31 })).to.be.a('boolean');
      expect(() => vm.setGsiRouting([{ gsi: 0, type: KVM_IRQ_ROUTING_IRQCHIP, irqchip: 7, pin: 0 }])).to.throw(
        /^KVM_SET_GSI_ROUTING failed: EINVAL/,
      );
    } finally {
      vm.close();
    }
  });

  it('raises a GSI when its irqfd is signalled, and not after deassign', async () => {
    const vm = kvm().createVm();
    const efd = EventFd.create();
    const irr3 = async (): Promise<boolean> => {
      // Injection runs on a kernel worker: give it a moment.
      for (let i = 0; i < 50 && (masterPicIrr(vm) & (1 << 3)) === 0; i++) await delay(1);
      return (masterPicIrr(vm) & (1 << 3)) !== 0;
    };
    try {
      vm.createIrqchip();
      vm.assignIrqfd({ gsi: 3, eventfd: efd });
      vm.deassignIrqfd({ gsi: 3, eventfd: efd });
      efd.write(1n);
      expect(await irr3()).to.equal(false);
      // An irqfd is edge-triggered: KVM pulses the line, the PIC latches IRR.
      vm.assignIrqfd({ gsi: 3, eventfd: efd });
      efd.write(1n);
      expect(await irr3()).to.equal(true);
    } finally {
      vm.close();
      efd.close();
    }
  });

  it('accepts a level-triggered irqfd with a resample fd', () => {
    const vm = kvm().createVm();
    const efd = EventFd.create();
    const resample = EventFd.create();
    try {
      vm.createIrqchip();
      vm.assignIrqfd({ gsi: 10, eventfd: efd, resamplefd: resample });
      efd.write(1n);
      vm.deassignIrqfd({ gsi: 10, eventfd: efd });
    } finally {
      vm.close();
      efd.close();
      resample.close();
    }
  });

  it('delivers an irqfd interrupt to a real-mode guest through the PIC', async () => {
    // Program the master PIC (ICW1-4: vectors 0x08-0x0f, unmask IRQ3), sti; hlt.
    const code = new GuestCode(16);
    for (const [port, value] of [
      [0x20, 0x11],
      [0x21, 0x08],
      [0x21, 0x04],
      [0x21, 0x01],
      [0x21, 0xf7],
    ] as const) {
      code.movDx(port).movAl(value).outDx(1);
    }
    code.movDx(DONE_PORT).outDx(1); // tell JS the PIC is ready
    const bytes = [...code.bytes(), 0xfb, 0xf4, 0xeb, 0xfe]; // sti; hlt; jmp $
    const t = createTestVm(undefined, { mode: 'real', irqchip: true });
    t.ram.bytes(0x1000, bytes.length).set(bytes);
    new DataView(t.ram.buffer).setUint32(0x0b * 4, 0x0000_2000, true); // IVT[0x0b] = 0000:2000
    loadCode(t.ram, new GuestCode(16).movDx(0x55).movAl(0x0b).outDx(1).spin(), 0x2000);
    const efd = EventFd.create();
    t.vm.assignIrqfd({ gsi: 3, eventfd: efd });
    try {
      const handled = new Promise<number>((resolve, reject) => {
        t.vm.startVcpus({
          pio(port, _size, _isWrite, data) {
            if (port === DONE_PORT) setTimeout(() => efd.write(1n), 10);
            else if (port === 0x55) resolve(readLe(data));
          },
          mmio() {},
          event(_v, ev) {
            reject(new Error(`unexpected event ${JSON.stringify(ev)}`));
          },
        });
      });
      expect(await withTimeout(handled, 10_000, 'the interrupt handler')).to.equal(0x0b);
    } finally {
      await t.vm.stopVcpus();
      t.close();
      efd.close();
    }
  });
});

describe('ioeventfd', () => {
  afterEach(closeLeftoverVms);

  it('signals the eventfd for a guest port write without an exit', async () => {
    const code = new GuestCode(32).movDx(0x30).movAl(1).outDx(1).movDx(DONE_PORT).outDx(1).hlt();
    const t = createTestVm(code);
    const efd = EventFd.create();
    t.vm.assignIoeventfd({ addr: 0x30, len: 1, pio: true, eventfd: efd });
    try {
      const ports: number[] = [];
      const { event, vcpu } = await runUntilEvent(t, { pio: (port) => void ports.push(port) });
      expect(event.kind).to.equal('hlt');
      expect(ports).to.deep.equal([DONE_PORT]);
      expect(efd.read()).to.equal(1n);
      expect(efd.read()).to.equal(null);
      expect(vcpu.exitStats().byReason['KVM_EXIT_IO']).to.equal(1);
    } finally {
      await t.vm.stopVcpus();
      t.close();
      efd.close();
    }
  });

  it('matches MMIO writes by value with datamatch, and exits again after deassign', async () => {
    const code = new GuestCode(32)
      .movMemImm32(MMIO_DOORBELL, 1) // no match: an MMIO exit
      .movMemImm32(MMIO_DOORBELL, 2) // match: the eventfd
      .movDx(DONE_PORT)
      .outDx(1)
      .movMemImm32(MMIO_DOORBELL, 2) // after deassign: an MMIO exit
      .hlt();
    const t = createTestVm(code);
    const efd = EventFd.create();
    const spec = { addr: MMIO_DOORBELL, len: 4, datamatch: 2n, eventfd: efd };
    t.vm.assignIoeventfd(spec);
    try {
      const writes: number[] = [];
      const { event } = await runUntilEvent(t, {
        pio() {
          t.vm.deassignIoeventfd(spec);
        },
        mmio(_addr, _len, _isWrite, data) {
          writes.push(readLe(data));
        },
      });
      expect(event.kind).to.equal('hlt');
      expect(writes).to.deep.equal([1, 2]);
      expect(efd.read()).to.equal(1n);
    } finally {
      await t.vm.stopVcpus();
      t.close();
      efd.close();
    }
  });

  it('counts writes in semaphore mode and waits for them from a blocking poll', () => {
    const efd = EventFd.create({ semaphore: true, initialValue: 2 });
    try {
      expect(efd.waitReadable(0)).to.equal(true);
      expect(efd.read()).to.equal(1n);
      expect(efd.read()).to.equal(1n);
      expect(efd.read()).to.equal(null);
      expect(efd.waitReadable(1)).to.equal(false);
    } finally {
      efd.close();
    }
  });
});
