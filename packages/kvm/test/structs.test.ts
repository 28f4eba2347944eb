import { expect } from 'chai';
import * as constants from '../src/constants.js';
import { KVM_RUN_OFFSETS } from '../src/exits.js';
import { kvmNative } from '../src/native.js';
import {
  decodeClockData,
  decodeFpu,
  decodeRegs,
  decodeSregs,
  decodeVcpuEvents,
  decodeXcrs,
  encodeClockData,
  encodeFpu,
  encodeRegs,
  encodeSregs,
  encodeVcpuEvents,
  encodeXcrs,
  KVM_CLOCK_DATA_SIZE,
  KVM_CPUID2_HEADER,
  KVM_CPUID_ENTRY2_SIZE,
  KVM_DEBUGREGS_SIZE,
  KVM_DTABLE_SIZE,
  KVM_FPU_OFFSETS,
  KVM_FPU_SIZE,
  KVM_IRQ_ROUTING_ENTRY_SIZE,
  KVM_IRQ_ROUTING_HEADER,
  KVM_LAPIC_STATE_SIZE,
  KVM_MSR_ENTRY_SIZE,
  KVM_MSRS_HEADER,
  KVM_REGS_FIELDS,
  KVM_REGS_SIZE,
  KVM_SEGMENT_OFFSETS,
  KVM_SEGMENT_SIZE,
  KVM_SREGS_OFFSETS,
  KVM_SREGS_SIZE,
  KVM_VCPU_EVENTS_OFFSETS,
  KVM_VCPU_EVENTS_SIZE,
  KVM_XCRS_SIZE,
} from '../src/structs.js';
import type { KvmSegment } from '../src/structs.js';

function layout(struct: string): Readonly<Record<string, number>> {
  const l = kvmNative.layout[struct];
  if (l === undefined) throw new Error(`the addon has no layout for ${struct}`);
  return l;
}

function expectOffsets(struct: string, offsets: Readonly<Record<string, number>>): void {
  const native = layout(struct);
  for (const [field, offset] of Object.entries(offsets)) {
    expect(offset, `${struct}.${field}`).to.equal(native[field]);
  }
}

describe('uapi struct layouts (checked against offsetof from the compiler)', () => {
  it('has the sizes the encoders assume', () => {
    const sizes: Record<string, number> = {
      kvm_regs: KVM_REGS_SIZE,
      kvm_sregs: KVM_SREGS_SIZE,
      kvm_segment: KVM_SEGMENT_SIZE,
      kvm_dtable: KVM_DTABLE_SIZE,
      kvm_fpu: KVM_FPU_SIZE,
      kvm_msrs: KVM_MSRS_HEADER,
      kvm_msr_entry: KVM_MSR_ENTRY_SIZE,
      kvm_cpuid2: KVM_CPUID2_HEADER,
      kvm_cpuid_entry2: KVM_CPUID_ENTRY2_SIZE,
      kvm_lapic_state: KVM_LAPIC_STATE_SIZE,
      kvm_vcpu_events: KVM_VCPU_EVENTS_SIZE,
      kvm_xcrs: KVM_XCRS_SIZE,
      kvm_debugregs: KVM_DEBUGREGS_SIZE,
      kvm_clock_data: KVM_CLOCK_DATA_SIZE,
      kvm_irq_routing: KVM_IRQ_ROUTING_HEADER,
      kvm_irq_routing_entry: KVM_IRQ_ROUTING_ENTRY_SIZE,
      kvm_ioeventfd: 64,
      kvm_irqfd: 32,
      kvm_msi: 32,
      kvm_irq_level: 8,
      kvm_pit_config: 64,
      kvm_enable_cap: 104,
      kvm_interrupt: 4,
      kvm_mp_state: 4,
    };
    for (const [struct, size] of Object.entries(sizes)) expect(size, struct).to.equal(layout(struct)['size']);
  });

  it('lays out kvm_regs as eighteen __u64 in uapi order', () => {
    const native = layout('kvm_regs');
    for (const field of ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp', 'r8', 'r15', 'rip', 'rflags'] as const) {
      expect(KVM_REGS_FIELDS.indexOf(field) * 8, field).to.equal(native[field]);
    }
  });

  it('lays out kvm_sregs, kvm_segment, kvm_fpu and kvm_vcpu_events as the headers do', () => {
    expectOffsets('kvm_sregs', KVM_SREGS_OFFSETS);
    expectOffsets('kvm_segment', KVM_SEGMENT_OFFSETS);
    expectOffsets('kvm_fpu', KVM_FPU_OFFSETS);
    expectOffsets('kvm_vcpu_events', KVM_VCPU_EVENTS_OFFSETS);
  });

  it('decodes kvm_run at the offsets of the headers', () => {
    expectOffsets('kvm_run', KVM_RUN_OFFSETS);
  });

  it('lays out the small fixed structs as the encoders assume', () => {
    expectOffsets('kvm_ioeventfd', { datamatch: 0, addr: 8, len: 16, fd: 20, flags: 24 });
    expectOffsets('kvm_irqfd', { fd: 0, gsi: 4, flags: 8, resamplefd: 12 });
    expectOffsets('kvm_msi', { address_lo: 0, address_hi: 4, data: 8, flags: 12, devid: 16 });
    expectOffsets('kvm_irq_routing_entry', { gsi: 0, type: 4, flags: 8, u: 16 });
    expectOffsets('kvm_irq_routing_msi', { address_lo: 0, address_hi: 4, data: 8, devid: 12 });
    expectOffsets('kvm_irq_routing_irqchip', { irqchip: 0, pin: 4 });
    expectOffsets('kvm_clock_data', { clock: 0, flags: 8, realtime: 16, host_tsc: 24 });
    expectOffsets('kvm_enable_cap', { cap: 0, flags: 4, args: 8 });
    expectOffsets('kvm_xcrs', { nr_xcrs: 0, flags: 4, xcrs: 8 });
    expectOffsets('kvm_xcr', { xcr: 0, value: 8 });
    expectOffsets('kvm_debugregs', { db: 0, dr6: 32, dr7: 40, flags: 48 });
    expectOffsets('kvm_cpuid_entry2', { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 });
    expectOffsets('kvm_msr_entry', { index: 0, data: 8 });
  });

  it('uses the header values for every exported constant', () => {
    for (const [name, value] of Object.entries(constants)) {
      expect(kvmNative.constants[name], name).to.equal(value);
    }
  });
});

describe('uapi struct encoders', () => {
  const segment = (selector: number): KvmSegment => ({
    base: 0x1234_5678_9abc_def0n, limit: 0xfffff, selector, type: 11, present: 1, dpl: 3, db: 1, s: 1, l: 0, g: 1,
    avl: 1, unusable: 0,
  });

  it('round-trips kvm_regs with full 64-bit values', () => {
    const regs = decodeRegs(new Uint8Array(KVM_REGS_SIZE));
    KVM_REGS_FIELDS.forEach((f, i) => {
      regs[f] = 0xffff_0000_0000_0000n + BigInt(i);
    });
    expect(decodeRegs(encodeRegs(regs))).to.deep.equal(regs);
  });

  it('round-trips kvm_sregs', () => {
    const sregs = decodeSregs(new Uint8Array(KVM_SREGS_SIZE));
    Object.assign(sregs, {
      cs: segment(8), ds: segment(16), es: segment(24), fs: segment(32), gs: segment(40), ss: segment(48),
      tr: segment(56), ldt: segment(64), gdt: { base: 0x1000n, limit: 0x27 }, idt: { base: 0x2000n, limit: 0xfff },
      cr0: 0x8000_0011n, cr2: 1n, cr3: 0x3000n, cr4: 0x20n, cr8: 2n, efer: 0x500n, apic_base: 0xfee0_0900n,
      interrupt_bitmap: [1n, 2n, 3n, 1n << 63n],
    });
    expect(decodeSregs(encodeSregs(sregs))).to.deep.equal(sregs);
  });

  it('round-trips kvm_fpu, kvm_vcpu_events, kvm_xcrs and kvm_clock_data', () => {
    const fpu = decodeFpu(new Uint8Array(KVM_FPU_SIZE));
    fpu.fcw = 0x37f;
    fpu.mxcsr = 0x1f80;
    fpu.last_ip = 0xdead_beef_0000n;
    fpu.xmm[15] = Uint8Array.from({ length: 16 }, (_, i) => i);
    expect(decodeFpu(encodeFpu(fpu))).to.deep.equal(fpu);

    const events = decodeVcpuEvents(new Uint8Array(KVM_VCPU_EVENTS_SIZE));
    events.exception = { injected: 1, nr: 14, has_error_code: 1, pending: 0, error_code: 0xdead };
    events.nmi.masked = 1;
    events.sipi_vector = 0x9a;
    events.triple_fault.pending = 1;
    events.exception_payload = 0xffff_ffff_ffffn;
    expect(decodeVcpuEvents(encodeVcpuEvents(events))).to.deep.equal(events);

    const xcrs = { flags: 0, xcrs: [{ xcr: 0, value: 7n }] };
    expect(decodeXcrs(encodeXcrs(xcrs))).to.deep.equal(xcrs);

    const clock = { clock: 123_456_789n, flags: 6, realtime: 1n << 60n, host_tsc: 42n };
    expect(decodeClockData(encodeClockData(clock))).to.deep.equal(clock);
  });

  it('refuses an XMM register that is not 16 bytes', () => {
    const fpu = decodeFpu(new Uint8Array(KVM_FPU_SIZE));
    fpu.xmm[0] = new Uint8Array(8);
    expect(() => encodeFpu(fpu)).to.throw(RangeError, /16 registers of 16 bytes/);
  });
});
