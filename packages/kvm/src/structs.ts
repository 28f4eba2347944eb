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
  i32(off: number): number {
    return this.view.getInt32(off, LE);
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

/** The C type of a scalar struct field. */
type FieldType = 'u8' | 'u16' | 'u32' | 'i32' | 'u64';
/** A struct's scalar fields as the header lays them out: name -> [offset, type]. */
type StructLayout = Readonly<Record<string, readonly [number, FieldType]>>;
/** The plain object of a layout's fields: 64-bit ones bigint, the others number. */
type StructFields<L extends StructLayout> = { -readonly [N in keyof L]: L[N][1] extends 'u64' ? bigint : number };

function offsetsOf<L extends StructLayout>(layout: L): { readonly [N in keyof L]: number } {
  return Object.fromEntries(Object.entries(layout).map(([name, [off]]) => [name, off])) as { readonly [N in keyof L]: number };
}

/** Reads the fields of `layout` from the struct at `base`. */
function readFields<L extends StructLayout>(s: StructBytes, base: number, layout: L): StructFields<L> {
  const out: Record<string, number | bigint> = {};
  for (const [name, [off, type]] of Object.entries(layout)) {
    const at = base + off;
    out[name] = type === 'u64' ? s.u64(at) : type === 'u32' ? s.u32(at) : type === 'i32' ? s.i32(at) : type === 'u16' ? s.u16(at) : s.u8(at);
  }
  return out as StructFields<L>;
}

/** Writes `values` into the struct at `base` as `layout` places them. */
function writeFields<L extends StructLayout>(s: StructBytes, base: number, layout: L, values: StructFields<L>): void {
  for (const [name, [off, type]] of Object.entries(layout)) {
    const v: number | bigint = values[name as keyof L];
    const at = base + off;
    if (type === 'u64') s.setU64(at, BigInt(v));
    else if (type === 'u32') s.setU32(at, Number(v));
    else if (type === 'i32') s.setI32(at, Number(v));
    else if (type === 'u16') s.setU16(at, Number(v));
    else s.setU8(at, Number(v));
  }
}

/** A struct of `size` bytes holding `values` as `layout` places them. */
function encodeFields<L extends StructLayout>(size: number, layout: L, values: StructFields<L>): Uint8Array {
  const s = new StructBytes(size);
  writeFields(s, 0, layout, values);
  return s.bytes;
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
/** The __u64 control registers and MSRs of struct kvm_sregs. */
const KVM_SREGS_REGISTERS_LAYOUT = {
  cr0: [224, 'u64'], cr2: [232, 'u64'], cr3: [240, 'u64'], cr4: [248, 'u64'], cr8: [256, 'u64'], efer: [264, 'u64'],
  apic_base: [272, 'u64'],
} as const satisfies StructLayout;
/** Offsets in struct kvm_sregs. */
export const KVM_SREGS_OFFSETS = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168, gdt: 192, idt: 208,
  ...offsetsOf(KVM_SREGS_REGISTERS_LAYOUT), interrupt_bitmap: 280,
} as const;
const KVM_SEGMENT_LAYOUT = {
  base: [0, 'u64'], limit: [8, 'u32'], selector: [12, 'u16'], type: [14, 'u8'], present: [15, 'u8'], dpl: [16, 'u8'],
  db: [17, 'u8'], s: [18, 'u8'], l: [19, 'u8'], g: [20, 'u8'], avl: [21, 'u8'], unusable: [22, 'u8'],
} as const satisfies StructLayout & Record<keyof KvmSegment, unknown>;
/** Offsets in struct kvm_segment. */
export const KVM_SEGMENT_OFFSETS = offsetsOf(KVM_SEGMENT_LAYOUT);
/** struct kvm_dtable without its padding */
const KVM_DTABLE_LAYOUT = { base: [0, 'u64'], limit: [8, 'u16'] } as const satisfies StructLayout;

export function decodeSregs(bytes: Uint8Array): KvmSregs {
  const s = new StructBytes(bytes);
  const o = KVM_SREGS_OFFSETS;
  const seg = (name: (typeof SEGMENTS)[number]): KvmSegment => readFields(s, o[name], KVM_SEGMENT_LAYOUT);
  return {
    cs: seg('cs'), ds: seg('ds'), es: seg('es'), fs: seg('fs'), gs: seg('gs'), ss: seg('ss'), tr: seg('tr'),
    ldt: seg('ldt'),
    gdt: readFields(s, o.gdt, KVM_DTABLE_LAYOUT),
    idt: readFields(s, o.idt, KVM_DTABLE_LAYOUT),
    ...readFields(s, 0, KVM_SREGS_REGISTERS_LAYOUT),
    interrupt_bitmap: [
      s.u64(o.interrupt_bitmap), s.u64(o.interrupt_bitmap + 8), s.u64(o.interrupt_bitmap + 16),
      s.u64(o.interrupt_bitmap + 24),
    ],
  };
}

export function encodeSregs(sregs: KvmSregs): Uint8Array {
  const s = new StructBytes(KVM_SREGS_SIZE);
  const o = KVM_SREGS_OFFSETS;
  for (const name of SEGMENTS) writeFields(s, o[name], KVM_SEGMENT_LAYOUT, sregs[name]);
  writeFields(s, o.gdt, KVM_DTABLE_LAYOUT, sregs.gdt);
  writeFields(s, o.idt, KVM_DTABLE_LAYOUT, sregs.idt);
  writeFields(s, 0, KVM_SREGS_REGISTERS_LAYOUT, sregs);
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
/** The scalar fields of struct kvm_fpu (fpr and xmm are arrays of 16-byte registers). */
const KVM_FPU_SCALARS_LAYOUT = {
  fcw: [128, 'u16'], fsw: [130, 'u16'], ftwx: [132, 'u8'], last_opcode: [134, 'u16'], last_ip: [136, 'u64'],
  last_dp: [144, 'u64'], mxcsr: [408, 'u32'],
} as const satisfies StructLayout;
export const KVM_FPU_OFFSETS = { fpr: 0, xmm: 152, ...offsetsOf(KVM_FPU_SCALARS_LAYOUT) } as const;

export function decodeFpu(bytes: Uint8Array): KvmFpu {
  const s = new StructBytes(bytes);
  const o = KVM_FPU_OFFSETS;
  const regs = (off: number, n: number): Uint8Array[] =>
    Array.from({ length: n }, (_, i) => bytes.slice(off + i * 16, off + i * 16 + 16));
  return { fpr: regs(o.fpr, 8), xmm: regs(o.xmm, 16), ...readFields(s, 0, KVM_FPU_SCALARS_LAYOUT) };
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
  put(o.xmm, fpu.xmm, 16, 'xmm');
  writeFields(s, 0, KVM_FPU_SCALARS_LAYOUT, fpu);
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
const KVM_CPUID_ENTRY2_LAYOUT = {
  function: [0, 'u32'], index: [4, 'u32'], flags: [8, 'u32'], eax: [12, 'u32'], ebx: [16, 'u32'], ecx: [20, 'u32'], edx: [24, 'u32'],
} as const satisfies StructLayout & Record<keyof KvmCpuidEntry2, unknown>;

export function encodeCpuid2(entries: readonly KvmCpuidEntry2[], capacity = entries.length): Uint8Array {
  const s = new StructBytes(KVM_CPUID2_HEADER + capacity * KVM_CPUID_ENTRY2_SIZE);
  s.setU32(0, capacity);
  entries.forEach((e, i) => writeFields(s, KVM_CPUID2_HEADER + i * KVM_CPUID_ENTRY2_SIZE, KVM_CPUID_ENTRY2_LAYOUT, e));
  return s.bytes;
}

export function decodeCpuid2(bytes: Uint8Array): KvmCpuidEntry2[] {
  const s = new StructBytes(bytes);
  return Array.from({ length: s.u32(0) }, (_, i) => readFields(s, KVM_CPUID2_HEADER + i * KVM_CPUID_ENTRY2_SIZE, KVM_CPUID_ENTRY2_LAYOUT));
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
/** The members of struct kvm_vcpu_events, each from its own offset. */
const VCPU_EVENTS_EXCEPTION = {
  injected: [0, 'u8'], nr: [1, 'u8'], has_error_code: [2, 'u8'], pending: [3, 'u8'], error_code: [4, 'u32'],
} as const satisfies StructLayout;
const VCPU_EVENTS_INTERRUPT = { injected: [0, 'u8'], nr: [1, 'u8'], soft: [2, 'u8'], shadow: [3, 'u8'] } as const satisfies StructLayout;
const VCPU_EVENTS_NMI = { injected: [0, 'u8'], pending: [1, 'u8'], masked: [2, 'u8'] } as const satisfies StructLayout;
const VCPU_EVENTS_SMI = { smm: [0, 'u8'], pending: [1, 'u8'], smm_inside_nmi: [2, 'u8'], latched_init: [3, 'u8'] } as const satisfies StructLayout;
const VCPU_EVENTS_TRIPLE_FAULT = { pending: [0, 'u8'] } as const satisfies StructLayout;

export function decodeVcpuEvents(bytes: Uint8Array): KvmVcpuEvents {
  const s = new StructBytes(bytes);
  const o = KVM_VCPU_EVENTS_OFFSETS;
  return {
    exception: readFields(s, o.exception, VCPU_EVENTS_EXCEPTION),
    interrupt: readFields(s, o.interrupt, VCPU_EVENTS_INTERRUPT),
    nmi: readFields(s, o.nmi, VCPU_EVENTS_NMI),
    sipi_vector: s.u32(o.sipi_vector),
    flags: s.u32(o.flags),
    smi: readFields(s, o.smi, VCPU_EVENTS_SMI),
    triple_fault: readFields(s, o.triple_fault, VCPU_EVENTS_TRIPLE_FAULT),
    exception_has_payload: s.u8(o.exception_has_payload),
    exception_payload: s.u64(o.exception_payload),
  };
}

export function encodeVcpuEvents(ev: KvmVcpuEvents): Uint8Array {
  const s = new StructBytes(KVM_VCPU_EVENTS_SIZE);
  const o = KVM_VCPU_EVENTS_OFFSETS;
  writeFields(s, o.exception, VCPU_EVENTS_EXCEPTION, ev.exception);
  writeFields(s, o.interrupt, VCPU_EVENTS_INTERRUPT, ev.interrupt);
  writeFields(s, o.nmi, VCPU_EVENTS_NMI, ev.nmi);
  s.setU32(o.sipi_vector, ev.sipi_vector);
  s.setU32(o.flags, ev.flags);
  writeFields(s, o.smi, VCPU_EVENTS_SMI, ev.smi);
  writeFields(s, o.triple_fault, VCPU_EVENTS_TRIPLE_FAULT, ev.triple_fault);
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
const KVM_CLOCK_DATA_LAYOUT = {
  clock: [0, 'u64'], flags: [8, 'u32'], realtime: [16, 'u64'], host_tsc: [24, 'u64'],
} as const satisfies StructLayout & Record<keyof KvmClockData, unknown>;

export function decodeClockData(bytes: Uint8Array): KvmClockData {
  return readFields(new StructBytes(bytes), 0, KVM_CLOCK_DATA_LAYOUT);
}

export function encodeClockData(c: KvmClockData): Uint8Array {
  return encodeFields(KVM_CLOCK_DATA_SIZE, KVM_CLOCK_DATA_LAYOUT, c);
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

const KVM_IOEVENTFD_LAYOUT = {
  datamatch: [0, 'u64'], addr: [8, 'u64'], len: [16, 'u32'], fd: [20, 'i32'], flags: [24, 'u32'],
} as const satisfies StructLayout & Record<keyof KvmIoeventfd, unknown>;

export function encodeIoeventfd(e: KvmIoeventfd): Uint8Array {
  return encodeFields(64, KVM_IOEVENTFD_LAYOUT, e);
}

/** struct kvm_irqfd (KVM_IRQFD) */
export interface KvmIrqfd {
  fd: number;
  gsi: number;
  flags: number;
  resamplefd: number;
}

const KVM_IRQFD_LAYOUT = {
  fd: [0, 'u32'], gsi: [4, 'u32'], flags: [8, 'u32'], resamplefd: [12, 'u32'],
} as const satisfies StructLayout & Record<keyof KvmIrqfd, unknown>;

export function encodeIrqfd(e: KvmIrqfd): Uint8Array {
  return encodeFields(32, KVM_IRQFD_LAYOUT, e);
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

const KVM_MSI_LAYOUT = {
  address_lo: [0, 'u32'], address_hi: [4, 'u32'], data: [8, 'u32'], flags: [12, 'u32'], devid: [16, 'u32'],
} as const satisfies StructLayout & Record<keyof KvmMsi, unknown>;

export function encodeMsi(m: KvmMsi): Uint8Array {
  return encodeFields(32, KVM_MSI_LAYOUT, { ...m, flags: m.flags ?? 0, devid: m.devid ?? 0 });
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
