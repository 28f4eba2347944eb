/**
 * vCPU and VM state ioctls round-trip through the typed objects
 * (api.rst KVM_GET/SET_REGS, SREGS, FPU, MSRS, CPUID2, LAPIC, MP_STATE,
 * VCPU_EVENTS, XSAVE, XCRS, DEBUGREGS; KVM_GET/SET_CLOCK; KVM_ENABLE_CAP).
 */
import { expect } from 'chai';
import {
  KVM_CAP_ENFORCE_PV_FEATURE_CPUID,
  KVM_CAP_XCRS,
  KVM_CAP_XSAVE,
  KVM_MP_STATE_HALTED,
  KVM_MP_STATE_RUNNABLE,
  KVM_VCPUEVENT_VALID_SHADOW,
  KvmMsrError,
} from '../src/index.js';
import type { Vcpu, Vm } from '../src/index.js';
import { kvm } from './harness.js';

const IA32_SYSENTER_CS = 0x174;
const IA32_SYSENTER_ESP = 0x175;

describe('vCPU and VM state', () => {
  let vm: Vm;
  let vcpu: Vcpu;

  beforeEach(() => {
    vm = kvm().createVm();
    vm.createIrqchip();
    vcpu = vm.createVcpu(0);
  });

  afterEach(() => {
    vm.close();
  });

  it('round-trips general registers as bigint', () => {
    const regs = { ...vcpu.getRegs(), rax: 0xffff_ffff_ffff_fff0n, r15: 0x8000_0000_0000_0001n, rip: 0x1234n, rflags: 0x202n };
    vcpu.setRegs(regs);
    expect(vcpu.getRegs()).to.deep.equal(regs);
  });

  it('starts at the x86 reset vector and round-trips segment registers', () => {
    const sregs = vcpu.getSregs();
    expect(sregs.cs.selector).to.equal(0xf000);
    expect(sregs.cs.base).to.equal(0xffff_0000n);
    expect(vcpu.getRegs().rip).to.equal(0xfff0n);
    sregs.ds = { ...sregs.ds, base: 0x10_0000n, selector: 0x1000 };
    sregs.gdt = { base: 0x5000n, limit: 0x17 };
    vcpu.setSregs(sregs);
    const back = vcpu.getSregs();
    expect(back.ds).to.deep.equal(sregs.ds);
    expect(back.gdt).to.deep.equal(sregs.gdt);
  });

  it('round-trips the x87 control word and XMM registers through KVM_SET_FPU', () => {
    // MXCSR is left out: this host's KVM_GET_FPU reports 0 for it (README,
    // host quirks); XSAVE carries it, see below.
    const fpu = vcpu.getFpu();
    expect(fpu.fcw).to.equal(0x37f); // FNINIT value
    fpu.fcw = 0x27f;
    fpu.xmm[3] = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);
    vcpu.setFpu(fpu);
    const back = vcpu.getFpu();
    expect(back.fcw).to.equal(0x27f);
    expect(Array.from(back.xmm[3] ?? [])).to.deep.equal(Array.from(fpu.xmm[3] ?? []));
  });

  it('writes and reads MSRs, naming an MSR KVM refuses', () => {
    vcpu.setMsrs([
      { index: IA32_SYSENTER_CS, data: 0x10n },
      { index: IA32_SYSENTER_ESP, data: 0xffff_8000_0000_0000n },
    ]);
    expect(vcpu.getMsrs([IA32_SYSENTER_CS, IA32_SYSENTER_ESP])).to.deep.equal([
      { index: IA32_SYSENTER_CS, data: 0x10n },
      { index: IA32_SYSENTER_ESP, data: 0xffff_8000_0000_0000n },
    ]);
    let caught: unknown;
    try {
      vcpu.getMsrs([IA32_SYSENTER_CS, 0x4000_ffff]);
    } catch (err) {
      caught = err;
    }
    expect(caught).to.be.instanceOf(KvmMsrError);
    expect(caught).to.include({ index: 0x4000_ffff, processed: 1, operation: 'KVM_GET_MSRS' });
    expect((caught as Error).message).to.equal('KVM_GET_MSRS stopped at MSR 0x4000ffff after 1 entries: KVM refused it');
  });

  it('sets a CPUID table with KVM_SET_CPUID2 and reads it back with KVM_GET_CPUID2', () => {
    const supported = kvm().supportedCpuid();
    vcpu.setCpuid2(supported);
    const back = vcpu.getCpuid2();
    // KVM may drop leaves it lists as all-zero (README, host quirks), never add any.
    const key = (e: { function: number; index: number }): string => `${e.function}:${e.index}`;
    const given = new Set(supported.map(key));
    expect(back.every((e) => given.has(key(e)))).to.equal(true);
    expect(back.length).to.be.greaterThan(supported.length / 2);
    const vendor = (t: typeof back): number | undefined => t.find((e) => e.function === 0)?.ebx;
    expect(vendor(back)).to.equal(vendor(supported));
  });

  it('round-trips the local APIC page and the MP state', () => {
    const lapic = vcpu.getLapic();
    expect(lapic.length).to.equal(1024);
    const view = new DataView(lapic.buffer, lapic.byteOffset);
    view.setUint32(0x80, 0x20, true); // TPR
    vcpu.setLapic(lapic);
    expect(new DataView(vcpu.getLapic().buffer).getUint32(0x80, true)).to.equal(0x20);
    expect(vcpu.getMpState()).to.equal(KVM_MP_STATE_RUNNABLE);
    vcpu.setMpState(KVM_MP_STATE_HALTED);
    expect(vcpu.getMpState()).to.equal(KVM_MP_STATE_HALTED);
  });

  it('round-trips pending events', () => {
    const events = vcpu.getVcpuEvents();
    events.nmi.masked = 1;
    events.interrupt.shadow = 1;
    events.flags = KVM_VCPUEVENT_VALID_SHADOW;
    vcpu.setVcpuEvents(events);
    const back = vcpu.getVcpuEvents();
    expect(back.nmi.masked).to.equal(1);
    expect(back.interrupt.shadow).to.equal(1);
  });

  it('round-trips XSAVE, XCRs and debug registers (a host without XSAVE: the legacy area, no XCRs, KVM_SET_XCRS refused)', () => {
    // Without XSAVE in the host CPU, KVM_GET_XSAVE still gives the FXSAVE
    // region with XSTATE_BV = x87|SSE, KVM_GET_XCRS reports no XCRs and
    // KVM_SET_XCRS fails with EINVAL (x86.c kvm_vcpu_ioctl_x86_{get,set}_xcrs).
    const hostHasXsave = kvm().checkExtension(KVM_CAP_XSAVE) !== 0 && kvm().checkExtension(KVM_CAP_XCRS) !== 0;
    const xsave = vcpu.getXsave();
    expect(xsave.length).to.be.at.least(4096);
    // Legacy area MXCSR at byte 24; XSTATE_BV (byte 512) bit 1 marks SSE state present.
    const view = new DataView(xsave.buffer, xsave.byteOffset);
    view.setUint32(24, 0x1fa0, true);
    view.setBigUint64(512, view.getBigUint64(512, true) | 2n, true);
    vcpu.setXsave(xsave);
    expect(new DataView(vcpu.getXsave().buffer).getUint32(24, true)).to.equal(0x1fa0);
    const xcrs = vcpu.getXcrs();
    if (hostHasXsave) {
      expect(xcrs.xcrs[0]?.xcr).to.equal(0);
      expect((xcrs.xcrs[0]?.value ?? 0n) & 1n).to.equal(1n); // XCR0.x87 is always set
      vcpu.setXcrs(xcrs);
    } else {
      expect(xcrs.xcrs).to.deep.equal([]);
      expect(() => vcpu.setXcrs(xcrs)).to.throw(/^KVM_SET_XCRS failed: EINVAL/);
    }
    const debug = vcpu.getDebugregs();
    debug.db[1] = 0x4000n;
    vcpu.setDebugregs(debug);
    expect(vcpu.getDebugregs().db[1]).to.equal(0x4000n);
  });

  it('enables a capability on the vCPU; one KVM does not offer is refused naming KVM_ENABLE_CAP', () => {
    const refused = /^KVM_ENABLE_CAP failed: EINVAL/;
    if (kvm().checkExtension(KVM_CAP_ENFORCE_PV_FEATURE_CPUID) === 0) {
      expect(() => vcpu.enableCap(KVM_CAP_ENFORCE_PV_FEATURE_CPUID, [1n])).to.throw(refused);
    } else {
      vcpu.enableCap(KVM_CAP_ENFORCE_PV_FEATURE_CPUID, [1n]);
    }
    // No KVM has a capability numbered 0x7fffffff.
    expect(() => vcpu.enableCap(0x7fff_ffff, [1n])).to.throw(refused);
  });

  it('accepts the VMX real-mode helper pages: TSS and identity map', () => {
    const fresh = kvm().createVm();
    try {
      // Both must precede KVM_CREATE_VCPU; three pages and one page below 4 GiB.
      fresh.setIdentityMapAddr(0xfffbc000);
      fresh.setTssAddr(0xfffbd000);
      fresh.createVcpu(0);
      expect(() => fresh.setIdentityMapAddr(0xfffbc000)).to.throw(/^KVM_SET_IDENTITY_MAP_ADDR failed: EINVAL/);
    } finally {
      fresh.close();
    }
  });

  it('sets and reads the VM clock', () => {
    const clock = vm.getClock();
    vm.setClock({ ...clock, clock: 5_000_000_000n, flags: 0 });
    const back = vm.getClock();
    expect(back.clock >= 5_000_000_000n).to.equal(true);
    expect(back.clock < 6_000_000_000n).to.equal(true);
  });

  it('reads the TSC frequency', () => {
    expect(vcpu.getTscKhz()).to.be.greaterThan(100_000);
  });
});
