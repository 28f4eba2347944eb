/**
 * Plain-object mirrors of the KVM uapi structs and their byte encodings.
 * Field names are the uapi names (include/uapi/linux/kvm.h,
 * arch/x86/include/uapi/asm/kvm.h); the ioctl that uses each struct is
 * described under its name in Documentation/virt/kvm/api.rst section 4.
 *
 * Width convention: 64-bit fields (registers, addresses in structs, MSR
 * values, clocks) are bigint; narrower fields are number. Offsets are the
 * x86-64 ABI layout; test/structs.test.ts checks them against offsetof()
 * from the compiler via the addon's layout table.
 */
import { KVM_APIC_REG_SIZE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_MSI_VALID_DEVID } from './constants.js';

const LE = true;

/** A zeroed buffer of `size` bytes with a little-endian DataView over it. */
export class StructBytes {
  readonly bytes: Uint8Array;
  readonly view: DataView;
  constructor(sizeOrBytes: number | Uint8Array) {
    this.bytes = typeof sizeOrBytes === 'number' ? new Uint8Array(sizeOrBytes) : sizeOrBytes;
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }
  u8(off: number): number {
    return this.view.getUint8(off);
  }
  u16(off: number): number {
    return this.view.getUint16(off, LE);
  }
  u32(off: number): number {
    return this.view.getUint32(off, LE);
  }
  u64(off: number): bigint {
    return this.view.getBigUint64(off, LE);
  }
  setU8(off: number, v: number): void {
    this.view.setUint8(off, v);
  }
  setU16(off: number, v: number): void {
    this.view.setUint16(off, v, LE);
  }
  setU32(off: number, v: number): void {
    this.view.setUint32(off, v, LE);
  }
  setI32(off: number, v: number): void {
    this.view.setInt32(off, v, LE);
  }
  setU64(off: number, v: bigint): void {
    this.view.setBigUint64(off, BigInt.asUintN(64, v), LE);
  }
}

// ---- struct kvm_regs (KVM_GET_REGS / KVM_SET_REGS) -------------------------

export interface KvmRegs {
  rax: bigint;
  rbx: bigint;
  rcx: bigint;
  rdx: bigint;
  rsi: bigint;
  rdi: bigint;
  rsp: bigint;
  rbp: bigint;
  r8: bigint;
  r9: bigint;
  r10: bigint;
  r11: bigint;
  r12: bigint;
  r13: bigint;
  r14: bigint;
  r15: bigint;
  rip: bigint;
  rflags: bigint;
}

/** Field order of struct kvm_regs: eighteen __u64 in a row. */
export const KVM_REGS_FIELDS = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
  'rip', 'rflags',
] as const satisfies readonly (keyof KvmRegs)[];
export const KVM_REGS_SIZE = 144;

export function decodeRegs(bytes: Uint8Array): KvmRegs {
  const s = new StructBytes(bytes);
  const out = {} as Record<keyof KvmRegs, bigint>;
  KVM_REGS_FIELDS.forEach((name, i) => {
    out[name] = s.u64(i * 8);
  });
  return out;
}

export function encodeRegs(regs: KvmRegs): Uint8Array {
  const s = new StructBytes(KVM_REGS_SIZE);
  KVM_REGS_FIELDS.forEach((name, i) => s.setU64(i * 8, regs[name]));
  return s.bytes;
}

// ---- struct kvm_sregs (KVM_GET_SREGS / KVM_SET_SREGS) -----------------------

export interface KvmSegment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable: number;
}

export interface KvmDtable {
  base: bigint;
  limit: number;
}

export interface KvmSregs {
  cs: KvmSegment;
  ds: KvmSegment;
  es: KvmSegment;
  fs: KvmSegment;
  gs: KvmSegment;
  ss: KvmSegment;
  tr: KvmSegment;
  ldt: KvmSegment;
  gdt: KvmDtable;
  idt: KvmDtable;
  cr0: bigint;
  cr2: bigint;
  cr3: bigint;
  cr4: bigint;
  cr8: bigint;
  efer: bigint;
  apic_base: bigint;
  /** KVM_NR_INTERRUPTS bits: the interrupt pending injection, if any */
  interrupt_bitmap: [bigint, bigint, bigint, bigint];
}

export const KVM_SEGMENT_SIZE = 24;
export const KVM_DTABLE_SIZE = 16;
export const KVM_SREGS_SIZE = 312;
const SEGMENTS = ['cs', 'ds', 'es', 'fs', 'gs', 'ss', 'tr', 'ldt'] as const;
/** Offsets in struct kvm_sregs. */
export const KVM_SREGS_OFFSETS = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168, gdt: 192, idt: 208,
  cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apic_base: 272, interrupt_bitmap: 280,
} as const;
/** Offsets in struct kvm_segment. */
export const KVM_SEGMENT_OFFSETS = {
  base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20, avl: 21,
  unusable: 22,
} as const;
const SEGMENT_U8_FIELDS = ['type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'] as const;

function decodeSegment(s: StructBytes, off: number): KvmSegment {
  const o = KVM_SEGMENT_OFFSETS;
  return {
    base: s.u64(off + o.base),
    limit: s.u32(off + o.limit),
    selector: s.u16(off + o.selector),
    type: s.u8(off + o.type),
    present: s.u8(off + o.present),
    dpl: s.u8(off + o.dpl),
    db: s.u8(off + o.db),
    s: s.u8(off + o.s),
    l: s.u8(off + o.l),
    g: s.u8(off + o.g),
    avl: s.u8(off + o.avl),
    unusable: s.u8(off + o.unusable),
  };
}

function encodeSegment(s: StructBytes, off: number, seg: KvmSegment): void {
  const o = KVM_SEGMENT_OFFSETS;
  s.setU64(off + o.base, seg.base);
  s.setU32(off + o.limit, seg.limit);
  s.setU16(off + o.selector, seg.selector);
  for (const f of SEGMENT_U8_FIELDS) s.setU8(off + o[f], seg[f]);
}

export function decodeSregs(bytes: Uint8Array): KvmSregs {
  const s = new StructBytes(bytes);
  const o = KVM_SREGS_OFFSETS;
  const seg = (name: (typeof SEGMENTS)[number]): KvmSegment => decodeSegment(s, o[name]);
  return {
    cs: seg('cs'), ds: seg('ds'), es: seg('es'), fs: seg('fs'), gs: seg('gs'), ss: seg('ss'), tr: seg('tr'),
    ldt: seg('ldt'),
    gdt: { base: s.u64(o.gdt), limit: s.u16(o.gdt + 8) },
    idt: { base: s.u64(o.idt), limit: s.u16(o.idt + 8) },
    cr0: s.u64(o.cr0), cr2: s.u64(o.cr2), cr3: s.u64(o.cr3), cr4: s.u64(o.cr4), cr8: s.u64(o.cr8),
    efer: s.u64(o.efer), apic_base: s.u64(o.apic_base),
    interrupt_bitmap: [
      s.u64(o.interrupt_bitmap), s.u64(o.interrupt_bitmap + 8), s.u64(o.interrupt_bitmap + 16),
      s.u64(o.interrupt_bitmap + 24),
    ],
  };
}

export function encodeSregs(sregs: KvmSregs): Uint8Array {
  const s = new StructBytes(KVM_SREGS_SIZE);
  const o = KVM_SREGS_OFFSETS;
  for (const name of SEGMENTS) encodeSegment(s, o[name], sregs[name]);
  s.setU64(o.gdt, sregs.gdt.base);
  s.setU16(o.gdt + 8, sregs.gdt.limit);
  s.setU64(o.idt, sregs.idt.base);
  s.setU16(o.idt + 8, sregs.idt.limit);
  s.setU64(o.cr0, sregs.cr0);
  s.setU64(o.cr2, sregs.cr2);
  s.setU64(o.cr3, sregs.cr3);
  s.setU64(o.cr4, sregs.cr4);
  s.setU64(o.cr8, sregs.cr8);
  s.setU64(o.efer, sregs.efer);
  s.setU64(o.apic_base, sregs.apic_base);
  sregs.interrupt_bitmap.forEach((word, i) => s.setU64(o.interrupt_bitmap + i * 8, word));
  return s.bytes;
}

// ---- struct kvm_fpu (KVM_GET_FPU / KVM_SET_FPU) -----------------------------

export interface KvmFpu {
  /** eight 16-byte x87 registers */
  fpr: Uint8Array[];
  fcw: number;
  fsw: number;
  ftwx: number;
  last_opcode: number;
  last_ip: bigint;
  last_dp: bigint;
  /** sixteen 16-byte XMM registers */
  xmm: Uint8Array[];
  mxcsr: number;
}

export const KVM_FPU_SIZE = 416;
export const KVM_FPU_OFFSETS = {
  fpr: 0, fcw: 128, fsw: 130, ftwx: 132, last_opcode: 134, last_ip: 136, last_dp: 144, xmm: 152, mxcsr: 408,
} as const;

export function decodeFpu(bytes: Uint8Array): KvmFpu {
  const s = new StructBytes(bytes);
  const o = KVM_FPU_OFFSETS;
  const regs = (off: number, n: number): Uint8Array[] =>
    Array.from({ length: n }, (_, i) => bytes.slice(off + i * 16, off + i * 16 + 16));
  return {
    fpr: regs(o.fpr, 8),
    fcw: s.u16(o.fcw),
    fsw: s.u16(o.fsw),
    ftwx: s.u8(o.ftwx),
    last_opcode: s.u16(o.last_opcode),
    last_ip: s.u64(o.last_ip),
    last_dp: s.u64(o.last_dp),
    xmm: regs(o.xmm, 16),
    mxcsr: s.u32(o.mxcsr),
  };
}

export function encodeFpu(fpu: KvmFpu): Uint8Array {
  const s = new StructBytes(KVM_FPU_SIZE);
  const o = KVM_FPU_OFFSETS;
  const put = (off: number, regs: Uint8Array[], n: number, what: string): void => {
    if (regs.length !== n || regs.some((r) => r.length !== 16)) {
      throw new RangeError(`kvm_fpu.${what} must be ${n} registers of 16 bytes`);
    }
    regs.forEach((r, i) => s.bytes.set(r, off + i * 16));
  };
  put(o.fpr, fpu.fpr, 8, 'fpr');
  s.setU16(o.fcw, fpu.fcw);
  s.setU16(o.fsw, fpu.fsw);
  s.setU8(o.ftwx, fpu.ftwx);
  s.setU16(o.last_opcode, fpu.last_opcode);
  s.setU64(o.last_ip, fpu.last_ip);
  s.setU64(o.last_dp, fpu.last_dp);
  put(o.xmm, fpu.xmm, 16, 'xmm');
  s.setU32(o.mxcsr, fpu.mxcsr);
  return s.bytes;
}

// ---- struct kvm_msrs / kvm_msr_entry / kvm_msr_list -------------------------

export interface KvmMsrEntry {
  index: number;
  data: bigint;
}

export const KVM_MSRS_HEADER = 8;
export const KVM_MSR_ENTRY_SIZE = 16;

export function encodeMsrs(entries: readonly KvmMsrEntry[]): Uint8Array {
  const s = new StructBytes(KVM_MSRS_HEADER + entries.length * KVM_MSR_ENTRY_SIZE);
  s.setU32(0, entries.length);
  entries.forEach((e, i) => {
    const off = KVM_MSRS_HEADER + i * KVM_MSR_ENTRY_SIZE;
    s.setU32(off, e.index);
    s.setU64(off + 8, e.data);
  });
  return s.bytes;
}

export function decodeMsrs(bytes: Uint8Array, count: number): KvmMsrEntry[] {
  const s = new StructBytes(bytes);
  return Array.from({ length: count }, (_, i) => {
    const off = KVM_MSRS_HEADER + i * KVM_MSR_ENTRY_SIZE;
    return { index: s.u32(off), data: s.u64(off + 8) };
  });
}

/** struct kvm_msr_list with room for `capacity` indices. */
export function encodeMsrList(capacity: number): Uint8Array {
  const s = new StructBytes(4 + capacity * 4);
  s.setU32(0, capacity);
  return s.bytes;
}

export function decodeMsrList(bytes: Uint8Array): number[] {
  const s = new StructBytes(bytes);
  return Array.from({ length: s.u32(0) }, (_, i) => s.u32(4 + i * 4));
}

// ---- struct kvm_cpuid2 / kvm_cpuid_entry2 -----------------------------------

export interface KvmCpuidEntry2 {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export const KVM_CPUID2_HEADER = 8;
export const KVM_CPUID_ENTRY2_SIZE = 40;

export function encodeCpuid2(entries: readonly KvmCpuidEntry2[], capacity = entries.length): Uint8Array {
  const s = new StructBytes(KVM_CPUID2_HEADER + capacity * KVM_CPUID_ENTRY2_SIZE);
  s.setU32(0, capacity);
  entries.forEach((e, i) => {
    const off = KVM_CPUID2_HEADER + i * KVM_CPUID_ENTRY2_SIZE;
    s.setU32(off, e.function);
    s.setU32(off + 4, e.index);
    s.setU32(off + 8, e.flags);
    s.setU32(off + 12, e.eax);
    s.setU32(off + 16, e.ebx);
    s.setU32(off + 20, e.ecx);
    s.setU32(off + 24, e.edx);
  });
  return s.bytes;
}

export function decodeCpuid2(bytes: Uint8Array): KvmCpuidEntry2[] {
  const s = new StructBytes(bytes);
  return Array.from({ length: s.u32(0) }, (_, i) => {
    const off = KVM_CPUID2_HEADER + i * KVM_CPUID_ENTRY2_SIZE;
    return {
      function: s.u32(off),
      index: s.u32(off + 4),
      flags: s.u32(off + 8),
      eax: s.u32(off + 12),
      ebx: s.u32(off + 16),
      ecx: s.u32(off + 20),
      edx: s.u32(off + 24),
    };
  });
}

// ---- struct kvm_lapic_state, kvm_mp_state ----------------------------------

export const KVM_LAPIC_STATE_SIZE = KVM_APIC_REG_SIZE;
export const KVM_MP_STATE_SIZE = 4;

// ---- struct kvm_vcpu_events (KVM_GET_VCPU_EVENTS / KVM_SET_VCPU_EVENTS) ----

export interface KvmVcpuEvents {
  exception: { injected: number; nr: number; has_error_code: number; pending: number; error_code: number };
  interrupt: { injected: number; nr: number; soft: number; shadow: number };
  nmi: { injected: number; pending: number; masked: number };
  sipi_vector: number;
  flags: number;
  smi: { smm: number; pending: number; smm_inside_nmi: number; latched_init: number };
  triple_fault: { pending: number };
  exception_has_payload: number;
  exception_payload: bigint;
}

export const KVM_VCPU_EVENTS_SIZE = 64;
export const KVM_VCPU_EVENTS_OFFSETS = {
  exception: 0, interrupt: 8, nmi: 12, sipi_vector: 16, flags: 20, smi: 24, triple_fault: 28,
  exception_has_payload: 55, exception_payload: 56,
} as const;

export function decodeVcpuEvents(bytes: Uint8Array): KvmVcpuEvents {
  const s = new StructBytes(bytes);
  const o = KVM_VCPU_EVENTS_OFFSETS;
  return {
    exception: {
      injected: s.u8(o.exception), nr: s.u8(o.exception + 1), has_error_code: s.u8(o.exception + 2),
      pending: s.u8(o.exception + 3), error_code: s.u32(o.exception + 4),
    },
    interrupt: {
      injected: s.u8(o.interrupt), nr: s.u8(o.interrupt + 1), soft: s.u8(o.interrupt + 2),
      shadow: s.u8(o.interrupt + 3),
    },
    nmi: { injected: s.u8(o.nmi), pending: s.u8(o.nmi + 1), masked: s.u8(o.nmi + 2) },
    sipi_vector: s.u32(o.sipi_vector),
    flags: s.u32(o.flags),
    smi: {
      smm: s.u8(o.smi), pending: s.u8(o.smi + 1), smm_inside_nmi: s.u8(o.smi + 2), latched_init: s.u8(o.smi + 3),
    },
    triple_fault: { pending: s.u8(o.triple_fault) },
    exception_has_payload: s.u8(o.exception_has_payload),
    exception_payload: s.u64(o.exception_payload),
  };
}

export function encodeVcpuEvents(ev: KvmVcpuEvents): Uint8Array {
  const s = new StructBytes(KVM_VCPU_EVENTS_SIZE);
  const o = KVM_VCPU_EVENTS_OFFSETS;
  s.setU8(o.exception, ev.exception.injected);
  s.setU8(o.exception + 1, ev.exception.nr);
  s.setU8(o.exception + 2, ev.exception.has_error_code);
  s.setU8(o.exception + 3, ev.exception.pending);
  s.setU32(o.exception + 4, ev.exception.error_code);
  s.setU8(o.interrupt, ev.interrupt.injected);
  s.setU8(o.interrupt + 1, ev.interrupt.nr);
  s.setU8(o.interrupt + 2, ev.interrupt.soft);
  s.setU8(o.interrupt + 3, ev.interrupt.shadow);
  s.setU8(o.nmi, ev.nmi.injected);
  s.setU8(o.nmi + 1, ev.nmi.pending);
  s.setU8(o.nmi + 2, ev.nmi.masked);
  s.setU32(o.sipi_vector, ev.sipi_vector);
  s.setU32(o.flags, ev.flags);
  s.setU8(o.smi, ev.smi.smm);
  s.setU8(o.smi + 1, ev.smi.pending);
  s.setU8(o.smi + 2, ev.smi.smm_inside_nmi);
  s.setU8(o.smi + 3, ev.smi.latched_init);
  s.setU8(o.triple_fault, ev.triple_fault.pending);
  s.setU8(o.exception_has_payload, ev.exception_has_payload);
  s.setU64(o.exception_payload, ev.exception_payload);
  return s.bytes;
}

// ---- struct kvm_xcrs, kvm_debugregs ------------------------------------------

export interface KvmXcrs {
  flags: number;
  xcrs: { xcr: number; value: bigint }[];
}

export const KVM_XCRS_SIZE = 392;

export function decodeXcrs(bytes: Uint8Array): KvmXcrs {
  const s = new StructBytes(bytes);
  const n = Math.min(s.u32(0), 16);
  return {
    flags: s.u32(4),
    xcrs: Array.from({ length: n }, (_, i) => ({ xcr: s.u32(8 + i * 16), value: s.u64(8 + i * 16 + 8) })),
  };
}

export function encodeXcrs(x: KvmXcrs): Uint8Array {
  if (x.xcrs.length > 16) throw new RangeError('kvm_xcrs holds at most KVM_MAX_XCRS (16) entries');
  const s = new StructBytes(KVM_XCRS_SIZE);
  s.setU32(0, x.xcrs.length);
  s.setU32(4, x.flags);
  x.xcrs.forEach((e, i) => {
    s.setU32(8 + i * 16, e.xcr);
    s.setU64(8 + i * 16 + 8, e.value);
  });
  return s.bytes;
}

export interface KvmDebugregs {
  db: [bigint, bigint, bigint, bigint];
  dr6: bigint;
  dr7: bigint;
  flags: bigint;
}

export const KVM_DEBUGREGS_SIZE = 128;

export function decodeDebugregs(bytes: Uint8Array): KvmDebugregs {
  const s = new StructBytes(bytes);
  return { db: [s.u64(0), s.u64(8), s.u64(16), s.u64(24)], dr6: s.u64(32), dr7: s.u64(40), flags: s.u64(48) };
}

export function encodeDebugregs(d: KvmDebugregs): Uint8Array {
  const s = new StructBytes(KVM_DEBUGREGS_SIZE);
  d.db.forEach((v, i) => s.setU64(i * 8, v));
  s.setU64(32, d.dr6);
  s.setU64(40, d.dr7);
  s.setU64(48, d.flags);
  return s.bytes;
}

// ---- struct kvm_clock_data (KVM_GET_CLOCK / KVM_SET_CLOCK) -------------------

export interface KvmClockData {
  clock: bigint;
  flags: number;
  realtime: bigint;
  host_tsc: bigint;
}

export const KVM_CLOCK_DATA_SIZE = 48;

export function decodeClockData(bytes: Uint8Array): KvmClockData {
  const s = new StructBytes(bytes);
  return { clock: s.u64(0), flags: s.u32(8), realtime: s.u64(16), host_tsc: s.u64(24) };
}

export function encodeClockData(c: KvmClockData): Uint8Array {
  const s = new StructBytes(KVM_CLOCK_DATA_SIZE);
  s.setU64(0, c.clock);
  s.setU32(8, c.flags);
  s.setU64(16, c.realtime);
  s.setU64(24, c.host_tsc);
  return s.bytes;
}

// ---- struct kvm_irq_routing (KVM_SET_GSI_ROUTING) ---------------------------

/** A GSI routed to an in-kernel irqchip pin (union member kvm_irq_routing_irqchip). */
export interface KvmIrqRoutingIrqchip {
  gsi: number;
  type: typeof KVM_IRQ_ROUTING_IRQCHIP;
  /** KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE or KVM_IRQCHIP_IOAPIC */
  irqchip: number;
  pin: number;
}

/** A GSI that raises an MSI (union member kvm_irq_routing_msi). */
export interface KvmIrqRoutingMsi {
  gsi: number;
  type: typeof KVM_IRQ_ROUTING_MSI;
  address_lo: number;
  address_hi: number;
  data: number;
  /** sets KVM_MSI_VALID_DEVID when present */
  devid?: number;
}

export type KvmIrqRoutingEntry = KvmIrqRoutingIrqchip | KvmIrqRoutingMsi;

export const KVM_IRQ_ROUTING_HEADER = 8;
export const KVM_IRQ_ROUTING_ENTRY_SIZE = 48;

export function encodeIrqRouting(entries: readonly KvmIrqRoutingEntry[]): Uint8Array {
  const s = new StructBytes(KVM_IRQ_ROUTING_HEADER + entries.length * KVM_IRQ_ROUTING_ENTRY_SIZE);
  s.setU32(0, entries.length);
  entries.forEach((e, i) => {
    const off = KVM_IRQ_ROUTING_HEADER + i * KVM_IRQ_ROUTING_ENTRY_SIZE;
    s.setU32(off, e.gsi);
    s.setU32(off + 4, e.type);
    if (e.type === KVM_IRQ_ROUTING_IRQCHIP) {
      s.setU32(off + 16, e.irqchip);
      s.setU32(off + 20, e.pin);
    } else {
      s.setU32(off + 8, e.devid === undefined ? 0 : KVM_MSI_VALID_DEVID);
      s.setU32(off + 16, e.address_lo);
      s.setU32(off + 20, e.address_hi);
      s.setU32(off + 24, e.data);
      s.setU32(off + 28, e.devid ?? 0);
    }
  });
  return s.bytes;
}

// ---- small fixed structs ------------------------------------------------------

/** struct kvm_ioeventfd (KVM_IOEVENTFD) */
export interface KvmIoeventfd {
  datamatch: bigint;
  addr: bigint;
  len: number;
  fd: number;
  flags: number;
}

export function encodeIoeventfd(e: KvmIoeventfd): Uint8Array {
  const s = new StructBytes(64);
  s.setU64(0, e.datamatch);
  s.setU64(8, e.addr);
  s.setU32(16, e.len);
  s.setI32(20, e.fd);
  s.setU32(24, e.flags);
  return s.bytes;
}

/** struct kvm_irqfd (KVM_IRQFD) */
export interface KvmIrqfd {
  fd: number;
  gsi: number;
  flags: number;
  resamplefd: number;
}

export function encodeIrqfd(e: KvmIrqfd): Uint8Array {
  const s = new StructBytes(32);
  s.setU32(0, e.fd);
  s.setU32(4, e.gsi);
  s.setU32(8, e.flags);
  s.setU32(12, e.resamplefd);
  return s.bytes;
}

/** struct kvm_msi (KVM_SIGNAL_MSI) */
export interface KvmMsi {
  address_lo: number;
  address_hi: number;
  data: number;
  /** KVM_MSI_VALID_DEVID when devid is meaningful */
  flags?: number;
  devid?: number;
}

export function encodeMsi(m: KvmMsi): Uint8Array {
  const s = new StructBytes(32);
  s.setU32(0, m.address_lo);
  s.setU32(4, m.address_hi);
  s.setU32(8, m.data);
  s.setU32(12, m.flags ?? 0);
  s.setU32(16, m.devid ?? 0);
  return s.bytes;
}

/** struct kvm_irq_level (KVM_IRQ_LINE) */
export function encodeIrqLevel(irq: number, level: number): Uint8Array {
  const s = new StructBytes(8);
  s.setU32(0, irq);
  s.setU32(4, level);
  return s.bytes;
}

/** struct kvm_pit_config (KVM_CREATE_PIT2) */
export function encodePitConfig(flags: number): Uint8Array {
  const s = new StructBytes(64);
  s.setU32(0, flags);
  return s.bytes;
}

/** struct kvm_enable_cap (KVM_ENABLE_CAP) */
export function encodeEnableCap(cap: number, args: readonly bigint[], flags: number): Uint8Array {
  if (args.length > 4) throw new RangeError('kvm_enable_cap takes at most 4 args');
  const s = new StructBytes(104);
  s.setU32(0, cap);
  s.setU32(4, flags);
  args.forEach((a, i) => s.setU64(8 + i * 8, a));
  return s.bytes;
}

/** A __u32 or __u64 passed by pointer (KVM_SET_IDENTITY_MAP_ADDR, KVM_INTERRUPT, kvm_mp_state). */
export function encodeU64(v: bigint): Uint8Array {
  const s = new StructBytes(8);
  s.setU64(0, v);
  return s.bytes;
}

export function encodeU32(v: number): Uint8Array {
  const s = new StructBytes(4);
  s.setU32(0, v);
  return s.bytes;
}
