/**
 * Dirty page logging (api.rst "KVM_GET_DIRTY_LOG", "KVM_CLEAR_DIRTY_LOG",
 * "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", KVM_MEM_LOG_DIRTY_PAGES).
 */
import { expect } from 'chai';
import {
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_MEM_LOG_DIRTY_PAGES,
  KvmCapabilityError,
  KvmStateError,
} from '../src/index.js';
import { GuestCode } from './guest-code.js';
import { closeLeftoverVms, createTestVm, kvm, runUntilEvent } from './harness.js';

function dirtyPages(bitmap: BigUint64Array): number[] {
  const pages: number[] = [];
  bitmap.forEach((word, w) => {
    for (let b = 0; b < 64; b++) if ((word >> BigInt(b)) & 1n) pages.push(w * 64 + b);
  });
  return pages;
}

/** Stores to pages 5 and 9, then hlt. */
function writer(): GuestCode {
  return new GuestCode(32).movMemImm32(0x5000, 1).movMemImm32(0x9ffc, 2).hlt();
}

describe('dirty page logging', () => {
  afterEach(closeLeftoverVms);

  it('reports the pages the guest wrote, and clears them on read', async () => {
    const t = createTestVm(writer(), { ramFlags: KVM_MEM_LOG_DIRTY_PAGES });
    try {
      expect(dirtyPages(t.vm.getDirtyLog(0))).to.deep.equal([]);
      const { event } = await runUntilEvent(t);
      expect(event.kind).to.equal('hlt');
      expect(dirtyPages(t.vm.getDirtyLog(0))).to.deep.equal([5, 9]);
      expect(dirtyPages(t.vm.getDirtyLog(0))).to.deep.equal([]);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('keeps pages dirty under manual protection until KVM_CLEAR_DIRTY_LOG (a host without it: refused naming KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)', async () => {
    const t = createTestVm(undefined);
    try {
      if ((t.vm.checkExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) === 0) {
        expect(() => t.vm.enableManualDirtyLogProtect()).to.throw(KvmCapabilityError, /lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2/);
        return;
      }
      // The capability must be enabled before dirty logging starts on a slot.
      t.vm.enableManualDirtyLogProtect();
      t.vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, ram: t.ram, flags: KVM_MEM_LOG_DIRTY_PAGES });
      t.ram.bytes(0x1000, writer().length).set(writer().bytes());
      const { event } = await runUntilEvent(t);
      expect(event.kind).to.equal('hlt');
      const log = t.vm.getDirtyLog(0);
      expect(dirtyPages(log)).to.deep.equal([5, 9]);
      expect(dirtyPages(t.vm.getDirtyLog(0))).to.deep.equal([5, 9]);
      const page5 = new BigUint64Array(1);
      page5[0] = 1n << 5n;
      t.vm.clearDirtyLog(0, 0, 64, page5);
      expect(dirtyPages(t.vm.getDirtyLog(0))).to.deep.equal([9]);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('refuses manual protection flags the host does not offer, naming KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2', () => {
    const vm = kvm().createVm();
    try {
      // No KVM defines bit 30 of the capability's flags.
      expect(() => vm.enableManualDirtyLogProtect(1 << 30)).to.throw(KvmCapabilityError, /lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2/);
    } finally {
      vm.close();
    }
  });

  it('refuses a dirty log for a slot that does not exist', () => {
    const vm = kvm().createVm();
    try {
      expect(() => vm.getDirtyLog(3)).to.throw(KvmStateError, /no memory slot 3/);
    } finally {
      vm.close();
    }
  });
});
