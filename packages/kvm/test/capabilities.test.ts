import { expect } from 'chai';
import {
  KVM_API_VERSION,
  KVM_CAP_IMMEDIATE_EXIT,
  KVM_CAP_IOEVENTFD,
  KVM_CAP_IRQCHIP,
  KVM_CAP_IRQFD,
  KVM_CAP_NR_VCPUS,
  KVM_CAP_USER_MEMORY,
  Kvm,
  KvmUnavailableError,
} from '../src/index.js';
import { kvm } from './harness.js';

describe('Kvm (system ioctls)', () => {
  it('opens /dev/kvm, whose KVM_GET_API_VERSION is 12', () => {
    const k = Kvm.open();
    expect(k.fd).to.be.a('number').and.greaterThan(2);
    expect(KVM_API_VERSION).to.equal(12);
    k.close();
    expect(() => k.fd).to.throw(/closed/);
  });

  it('reports capabilities with KVM_CHECK_EXTENSION', () => {
    for (const cap of [KVM_CAP_USER_MEMORY, KVM_CAP_IRQCHIP, KVM_CAP_IOEVENTFD, KVM_CAP_IRQFD, KVM_CAP_IMMEDIATE_EXIT]) {
      expect(kvm().checkExtension(cap), `cap ${cap}`).to.be.greaterThan(0);
    }
    expect(kvm().checkExtension(KVM_CAP_NR_VCPUS)).to.equal(kvm().recommendedVcpus());
    expect(kvm().maxVcpus()).to.be.at.least(kvm().recommendedVcpus());
  });

  it('answers 0 for a capability number it does not know', () => {
    expect(kvm().checkExtension(0x7fff)).to.equal(0);
  });

  it('gives the kvm_run mmap size with KVM_GET_VCPU_MMAP_SIZE', () => {
    const size = kvm().vcpuMmapSize();
    expect(size).to.be.at.least(4096);
    expect(size % 4096).to.equal(0);
  });

  it('lists supported CPUID leaves with KVM_GET_SUPPORTED_CPUID', () => {
    const entries = kvm().supportedCpuid();
    const leaf0 = entries.find((e) => e.function === 0);
    expect(leaf0, 'leaf 0').to.not.equal(undefined);
    expect(leaf0?.eax).to.be.at.least(1);
    expect(entries.some((e) => e.function === 0x80000000)).to.equal(true);
  });

  it('lists MSRs with KVM_GET_MSR_INDEX_LIST', () => {
    const msrs = kvm().msrIndexList();
    // IA32_TSC (0x10) and IA32_SYSENTER_CS (0x174) are saved for every guest.
    expect(msrs).to.include(0x10);
    expect(msrs).to.include(0x174);
  });

  it('names /dev/kvm and what to do when the device is missing', () => {
    let caught: unknown;
    try {
      Kvm.open('/dev/tsvmm-no-such-kvm');
    } catch (err) {
      caught = err;
    }
    expect(caught).to.be.instanceOf(KvmUnavailableError);
    const err = caught as KvmUnavailableError;
    expect(err.message).to.contain('/dev/tsvmm-no-such-kvm does not exist');
    expect(err.message).to.contain('kvm module');
    expect(err.code).to.equal('ERR_KVM_UNAVAILABLE');
    expect((err.cause as { code?: string }).code).to.equal('ENOENT');
  });

  it('refuses a device that is not KVM', () => {
    expect(() => Kvm.open('/dev/null')).to.throw(KvmUnavailableError, /\/dev\/null is not a KVM device/);
  });

  it('checks capabilities on a VM fd too (KVM_CAP_CHECK_EXTENSION_VM)', () => {
    const vm = kvm().createVm();
    try {
      expect(vm.checkExtension(KVM_CAP_IRQCHIP)).to.be.greaterThan(0);
    } finally {
      vm.close();
    }
  });
});
