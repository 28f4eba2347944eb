import { expect } from 'chai';
import { EventFd, isKvmSystemError, KVM_IRQCHIP_IOAPIC, KvmStateError } from '../src/index.js';
import { kvmIoctl } from '../src/requests.js';
import { closeLeftoverVms, createTestVm, kvm } from './harness.js';

function catchError(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error');
}


describe('errors', () => {


  afterEach(closeLeftoverVms);

  it('names the ioctl and the errno of a failed call', () => {
    const vm = kvm().createVm();
    try {
      vm.createVcpu(0);
      const err = catchError(() => vm.createVcpu(0));
      expect(isKvmSystemError(err)).to.equal(true);
      if (!isKvmSystemError(err)) return;
      expect(err.message).to.equal('KVM_CREATE_VCPU failed: EEXIST (File exists)');
      expect(err.code).to.equal('EEXIST');
      expect(err.errno).to.equal(-17);
      expect(err.syscall).to.equal('ioctl');
      expect(err.operation).to.equal('KVM_CREATE_VCPU');
    } finally {
      vm.close();
    }
  });

  it('maps an invalid ioctl argument to EINVAL with the operation', () => {
    const vm = kvm().createVm();
    try {
      // 0x10 is not a valid KVM_IRQCHIP_* id for KVM_GET_IRQCHIP.
      vm.createIrqchip();
      const bytes = vm.getIrqchip(KVM_IRQCHIP_IOAPIC);
      bytes[0] = 0x10;
      const err = catchError(() => kvmIoctl(vm.fd, 'KVM_GET_IRQCHIP', bytes));
      expect(err).to.include({ code: 'EINVAL', operation: 'KVM_GET_IRQCHIP', syscall: 'ioctl' });
      expect((err as Error).message).to.match(/^KVM_GET_IRQCHIP failed: EINVAL \(Invalid argument\)$/);
    } finally {
      vm.close();
    }
  });

  it('reports KVM_IRQ_LINE without an irqchip as ENXIO', () => {
    const vm = kvm().createVm();
    try {
      expect(() => vm.irqLine(4, true)).to.throw(/^KVM_IRQ_LINE failed: ENXIO/);
    } finally {
      vm.close();
    }
  });

  it('rejects a buffer smaller than the ioctl struct before calling the kernel', () => {
    const vm = kvm().createVm();
    try {
      expect(() => kvmIoctl(vm.fd, 'KVM_GET_CLOCK', new Uint8Array(8))).to.throw(TypeError, /KVM_GET_CLOCK needs a buffer of at least 48 bytes/);
    } finally {
      vm.close();
    }
  });

  it('rejects a flexible-array count larger than the buffer', () => {
    const bytes = new Uint8Array(8 + 40);
    new DataView(bytes.buffer).setUint32(0, 100, true); // nent 100, room for 1
    expect(() => kvmIoctl(kvm().fd, 'KVM_GET_SUPPORTED_CPUID', bytes)).to.throw(TypeError, /needs a buffer of at least 4008 bytes/);
  });

  it('says a closed VM is closed', () => {
    const vm = kvm().createVm();
    vm.close();
    const err = catchError(() => vm.createVcpu(0));
    expect(err).to.be.instanceOf(KvmStateError);
    expect(err).to.include({ code: 'ERR_KVM_CLOSED' });
  });

  it('refuses vCPU state ioctls while the vCPU is inside KVM_RUN', async () => {
    const t = createTestVm(undefined);
    try {
      // jmp $ at CODE_ADDR: the guest spins without exits.
      t.ram.bytes(0x1000, 2).set([0xeb, 0xfe]);
      t.vm.startVcpus({ pio() {}, mmio() {}, event() {} });
      const vcpu = t.vcpus[0];
      expect(vcpu).to.not.equal(undefined);
      expect(() => vcpu?.getRegs()).to.throw(KvmStateError, /KVM_GET_REGS on vCPU 0 while it is running; await vm.pauseVcpus\(\) first/);
      await t.vm.stopVcpus();
    } finally {
      t.close();
    }
  });

  it('reports a failed eventfd write with its errno', () => {
    const efd = EventFd.create();
    try {
      // 2^64-1 is the one value eventfd(2) refuses to add.
      expect(() => efd.write(0xffff_ffff_ffff_ffffn)).to.throw(/^eventfd write failed: EINVAL/);
    } finally {
      efd.close();
    }
  });

  it('says a closed eventfd is closed', () => {
    const efd = EventFd.create();
    efd.close();
    expect(() => efd.read()).to.throw(KvmStateError, /eventfd is closed/);
  });
});
