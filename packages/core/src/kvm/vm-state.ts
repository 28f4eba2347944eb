/**
 * Saving and restoring the CPU side of a KVM VM for migration and snapshots:
 * per vCPU the general, segment and control registers, the XSAVE area (FPU,
 * SSE, AVX — and MXCSR, which KVM_GET_FPU loses on this host, see
 * packages/kvm/README.md), XCRs, MSRs, the local APIC page, MP state, pending
 * events and debug registers; per VM the two 8259 PICs, the IOAPIC, the PIT
 * and kvmclock.
 *
 * KVM api.rst: KVM_GET/SET_REGS, _SREGS, _XSAVE (KVM_GET_XSAVE2), _XCRS,
 * _MSRS (with KVM_GET_MSR_INDEX_LIST), _LAPIC, _MP_STATE, _VCPU_EVENTS,
 * _DEBUGREGS, _IRQCHIP, _PIT2, _CLOCK.
 *
 * Restore order follows QEMU's (target/i386/kvm/kvm.c: kvm_apic_put runs
 * first — APIC base MSR, then KVM_SET_LAPIC — and kvm_arch_put_registers
 * then puts regs, xsave, xcrs, sregs, MSRs, vcpu events, MP state, debug
 * registers): setting the APIC base after the APIC page could reset the
 * APIC, and MSRs such as TSC_DEADLINE need the APIC in place.
 *
 * The state comes from a stream on the destination, so it is checked against
 * a schema first; a mismatch names the field.
 */
import { z } from 'zod';
import { KvmMsrError, type KvmMsrEntry, type Vcpu, type Vm } from '@tsvmm/kvm';
import type { AcceleratorState } from '../accelerator.js';
import { TsvmmError } from '../errors.js';

export const KVM_STATE_FORMAT = 'kvm-x86';
export const KVM_STATE_VERSION = 1;

/** KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE, _IOAPIC (api.rst "KVM_GET_IRQCHIP") */
const IRQCHIP_IDS = [0, 1, 2] as const;
const MSR_IA32_APICBASE = 0x1b;
const KVM_LAPIC_SIZE = 1024;

/**
 * MSRs a VMM saves besides KVM_GET_MSR_INDEX_LIST, which leaves out the
 * MTRRs (QEMU saves them from its own table): MTRRcap is read-only, so only
 * the writable ones are here. Those the host refuses are skipped.
 */
const EXTRA_MSRS = [
  0x2ff, // MTRRdefType
  0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f, // fixed-range MTRRs
  ...Array.from({ length: 16 }, (_, i) => 0x200 + i), // variable-range MTRR base/mask pairs 0-7
];

export class KvmStateError extends TsvmmError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super('E_MIGRATION', message, options);
  }
}

const u8 = z.number().int().min(0).max(0xff);
const u16 = z.number().int().min(0).max(0xffff);
const u32 = z.number().int().min(0).max(0xffffffff);
const u64 = z.bigint().min(0n).max(0xffff_ffff_ffff_ffffn);
const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, { error: "must be bytes" });

const segment = z.strictObject({
  base: u64,
  limit: u32,
  selector: u16,
  type: u8,
  present: u8,
  dpl: u8,
  db: u8,
  s: u8,
  l: u8,
  g: u8,
  avl: u8,
  unusable: u8,
});
const dtable = z.strictObject({ base: u64, limit: u16 });

const regsSchema = z.strictObject({
  rax: u64, rbx: u64, rcx: u64, rdx: u64, rsi: u64, rdi: u64, rsp: u64, rbp: u64,
  r8: u64, r9: u64, r10: u64, r11: u64, r12: u64, r13: u64, r14: u64, r15: u64,
  rip: u64, rflags: u64,
});

const sregsSchema = z.strictObject({
  cs: segment, ds: segment, es: segment, fs: segment, gs: segment, ss: segment, tr: segment, ldt: segment,
  gdt: dtable, idt: dtable,
  cr0: u64, cr2: u64, cr3: u64, cr4: u64, cr8: u64, efer: u64, apic_base: u64,
  interrupt_bitmap: z.tuple([u64, u64, u64, u64]),
});

const eventsSchema = z.strictObject({
  exception: z.strictObject({ injected: u8, nr: u8, has_error_code: u8, pending: u8, error_code: u32 }),
  interrupt: z.strictObject({ injected: u8, nr: u8, soft: u8, shadow: u8 }),
  nmi: z.strictObject({ injected: u8, pending: u8, masked: u8 }),
  sipi_vector: u32,
  flags: u32,
  smi: z.strictObject({ smm: u8, pending: u8, smm_inside_nmi: u8, latched_init: u8 }),
  triple_fault: z.strictObject({ pending: u8 }),
  exception_has_payload: u8,
  exception_payload: u64,
});

const vcpuStateSchema = z.strictObject({
  apicId: u32,
  regs: regsSchema,
  sregs: sregsSchema,
  xsave: bytes,
  xcrs: z.strictObject({ flags: u32, xcrs: z.array(z.strictObject({ xcr: u32, value: u64 })).max(16) }).optional(),
  msrs: z.array(z.strictObject({ index: u32, data: u64 })).max(4096),
  lapic: bytes.refine((b) => b.length === KVM_LAPIC_SIZE, { error: `must be ${KVM_LAPIC_SIZE} bytes` }),
  mpState: u32,
  events: eventsSchema,
  debugregs: z.strictObject({ db: z.tuple([u64, u64, u64, u64]), dr6: u64, dr7: u64, flags: u64 }),
});
export type KvmVcpuState = z.infer<typeof vcpuStateSchema>;

const kvmStateSchema = z.strictObject({
  format: z.literal(KVM_STATE_FORMAT),
  version: z.literal(KVM_STATE_VERSION),
  vcpus: z.array(vcpuStateSchema).min(1).max(1024),
  /** struct kvm_irqchip for PIC master, PIC slave, IOAPIC, as KVM_GET_IRQCHIP wrote them */
  irqchips: z.array(bytes).length(3),
  /** struct kvm_pit_state2 */
  pit: bytes,
  /** kvmclock in ns (KVM_GET_CLOCK) */
  clock: u64,
});
export type KvmState = z.infer<typeof kvmStateSchema>;

/** The MSRs this vCPU lets us read, from KVM's list plus EXTRA_MSRS, in a stable order. */
export function readableMsrs(vcpu: Vcpu, indexList: readonly number[]): number[] {
  const wanted = [...new Set([...indexList, ...EXTRA_MSRS])].filter((i) => i !== MSR_IA32_APICBASE);
  const ok: number[] = [];
  for (const index of wanted) {
    try {
      vcpu.getMsrs([index]);
      ok.push(index);
    } catch (err) {
      if (!(err instanceof KvmMsrError)) throw err;
    }
  }
  return ok;
}

export function saveKvmState(vm: Vm, vcpus: readonly Vcpu[], apicIds: readonly number[], msrIndices: readonly number[], hasXcrs: boolean): AcceleratorState {
  const state: KvmState = {
    format: KVM_STATE_FORMAT,
    version: KVM_STATE_VERSION,
    vcpus: vcpus.map((v, i) => ({
      apicId: apicIds[i] ?? v.id,
      regs: v.getRegs(),
      sregs: v.getSregs(),
      xsave: v.getXsave(),
      ...(hasXcrs ? { xcrs: v.getXcrs() } : {}),
      // APIC base travels in sregs.apic_base and is put first on restore.
      msrs: v.getMsrs(msrIndices),
      lapic: v.getLapic(),
      mpState: v.getMpState(),
      events: v.getVcpuEvents(),
      debugregs: v.getDebugregs(),
    })),
    irqchips: IRQCHIP_IDS.map((id) => vm.getIrqchip(id)),
    pit: vm.getPit2(),
    clock: vm.getClock().clock,
  };
  return state;
}

export function parseKvmState(input: unknown): KvmState {
  const r = kvmStateSchema.safeParse(input);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue === undefined ? '' : issue.path.map(String).join('.');
  throw new KvmStateError(`the CPU state in the stream does not fit this tsvmm's KVM state format: ${where || 'state'}: ${issue?.message ?? 'invalid'}`);
}

export function restoreKvmState(vm: Vm, vcpus: readonly Vcpu[], apicIds: readonly number[], input: unknown): void {
  const state = parseKvmState(input);
  if (state.vcpus.length !== vcpus.length) {
    throw new KvmStateError(`the stream has state for ${state.vcpus.length} vCPUs, this VM has ${vcpus.length}`, { hint: 'start the destination with the same --smp' });
  }
  state.vcpus.forEach((s, i) => {
    const v = vcpus[i] as Vcpu;
    const apicId = apicIds[i] ?? v.id;
    if (s.apicId !== apicId) throw new KvmStateError(`vCPU ${i}: the stream has APIC ID ${s.apicId}, this VM has ${apicId}`);
    const step = (what: string, fn: () => void): void => {
      try {
        fn();
      } catch (err) {
        throw new KvmStateError(`restoring vCPU ${i} ${what} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    };
    step('APIC base', () => v.setMsrs([{ index: MSR_IA32_APICBASE, data: s.sregs.apic_base }]));
    step('local APIC', () => v.setLapic(s.lapic));
    step('registers', () => v.setRegs(s.regs));
    step('XSAVE area', () => v.setXsave(fitXsave(s.xsave, v.getXsave().length)));
    if (s.xcrs !== undefined) {
      const xcrs = s.xcrs;
      step('XCRs', () => v.setXcrs(xcrs));
    }
    step('segment and control registers', () => v.setSregs(s.sregs));
    step('MSRs', () => v.setMsrs(s.msrs as KvmMsrEntry[]));
    step('pending events', () => v.setVcpuEvents(s.events));
    step('MP state', () => v.setMpState(s.mpState));
    step('debug registers', () => v.setDebugregs(s.debugregs));
  });
  state.irqchips.forEach((chip, i) => {
    try {
      vm.setIrqchip(chip);
    } catch (err) {
      throw new KvmStateError(`restoring interrupt controller ${['PIC master', 'PIC slave', 'IOAPIC'][i] ?? i} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
  });
  try {
    vm.setPit2(state.pit);
    vm.setClock({ clock: state.clock, flags: 0, realtime: 0n, host_tsc: 0n });
  } catch (err) {
    throw new KvmStateError(`restoring the PIT or kvmclock failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/**
 * The XSAVE area at the size this host's KVM_SET_XSAVE reads: a smaller one
 * (from a host without KVM_CAP_XSAVE2's larger area) is zero-extended, which
 * XSTATE_BV makes mean "initial state"; a larger one must carry nothing past
 * this host's size.
 */
function fitXsave(src: Uint8Array, size: number): Uint8Array {
  if (src.length === size) return src;
  if (src.length < size) {
    const out = new Uint8Array(size);
    out.set(src);
    return out;
  }
  if (src.subarray(size).some((b) => b !== 0)) {
    throw new KvmStateError(`the XSAVE area in the stream (${src.length} bytes) uses state components this host's KVM (${size} bytes) lacks`);
  }
  return src.subarray(0, size);
}
