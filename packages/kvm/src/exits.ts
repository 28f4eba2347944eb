/**
 * Decoding of struct kvm_run exits (Documentation/virt/kvm/api.rst,
 * section 5 "The kvm_run structure") and the types of the exit handlers.
 *
 * The kvm_run page of a vCPU is visible to JS as an ArrayBuffer over the
 * mmap; nothing is copied. PIO and MMIO data reach the handler as Uint8Array
 * views into that page: for OUT and MMIO writes they hold the guest's bytes,
 * for IN and MMIO reads the handler must fill them before returning.
 */
import {
  KVM_EXIT_EXCEPTION,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_EXIT_UNKNOWN,
} from './constants.js';
import * as constants from './constants.js';
import type { KvmSystemError } from './errors.js';
import type { Vcpu } from './vcpu.js';

/** Offsets in struct kvm_run (x86-64), checked against offsetof() in tests. */
export const KVM_RUN_OFFSETS = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  cr8: 16,
  apic_base: 24,
  io_direction: 32,
  io_size: 33,
  io_port: 34,
  io_count: 36,
  io_data_offset: 40,
  mmio_phys_addr: 32,
  mmio_data: 40,
  mmio_len: 48,
  mmio_is_write: 52,
  hw_hardware_exit_reason: 32,
  fail_entry_hardware_entry_failure_reason: 32,
  fail_entry_cpu: 40,
  ex_exception: 32,
  ex_error_code: 36,
  internal_suberror: 32,
  internal_ndata: 36,
  internal_data: 40,
  system_event_type: 32,
  system_event_ndata: 36,
  system_event_data: 40,
} as const;

/**
 * Something a vCPU reported that is not a PIO/MMIO access. The vCPU thread
 * is parked when the `event` handler runs: call `vcpu.resume()` to re-enter
 * KVM_RUN, or stop the VM's vCPUs.
 */
export type VcpuEvent =
  /** KVM_EXIT_HLT: only without an in-kernel irqchip (else KVM halts in the kernel) */
  | { kind: 'hlt' }
  /** KVM_EXIT_SHUTDOWN: triple fault; the guest state is undefined */
  | { kind: 'shutdown' }
  /** KVM_EXIT_INTERNAL_ERROR: suberror is KVM_INTERNAL_ERROR_* */
  | { kind: 'internal-error'; suberror: number; data: bigint[] }
  /** KVM_EXIT_FAIL_ENTRY: VM entry failed in hardware */
  | { kind: 'fail-entry'; hardwareEntryFailureReason: bigint; cpu: number }
  /** KVM_EXIT_SYSTEM_EVENT: type is KVM_SYSTEM_EVENT_* */
  | { kind: 'system-event'; type: number; data: bigint[] }
  /** KVM_EXIT_EXCEPTION */
  | { kind: 'exception'; exception: number; errorCode: number }
  /** KVM_EXIT_UNKNOWN (hardwareExitReason set) or any exit the facade does not decode */
  | { kind: 'unknown'; exitReason: number; exitReasonName: string; hardwareExitReason?: bigint }
  /** KVM_RUN itself failed (not EINTR): e.g. EFAULT for a memslot problem */
  | { kind: 'run-error'; error: KvmSystemError }
  /** a pio/mmio handler threw or its promise rejected; the access was not completed */
  | { kind: 'handler-error'; error: unknown };

/**
 * Where a running VM's exits go. Handlers run on the JS thread that created
 * the VM, one at a time; the vCPU waits until its handler returns (or the
 * returned promise settles). Keep them short: every microsecond here is a
 * microsecond of guest time.
 */
export interface ExitHandlers {
  /** KVM_EXIT_IO: one call per access (string I/O calls once per element) */
  pio(port: number, size: number, isWrite: boolean, data: Uint8Array, vcpu: Vcpu): void | PromiseLike<void>;
  /** KVM_EXIT_MMIO: addr is a guest-physical address (exact: x86 MAXPHYADDR <= 52) */
  mmio(addr: number, len: number, isWrite: boolean, data: Uint8Array, vcpu: Vcpu): void | PromiseLike<void>;
  event(vcpu: Vcpu, event: VcpuEvent): void;
}

/** Decodes a non-PIO/MMIO exit from the kvm_run page. */
export function decodeEvent(run: DataView): VcpuEvent {
  const o = KVM_RUN_OFFSETS;
  const exitReason = run.getUint32(o.exit_reason, true);
  const u64s = (off: number, n: number): bigint[] =>
    Array.from({ length: Math.min(n, 16) }, (_, i) => run.getBigUint64(off + i * 8, true));
  switch (exitReason) {
    case KVM_EXIT_HLT:
      return { kind: 'hlt' };
    case KVM_EXIT_SHUTDOWN:
      return { kind: 'shutdown' };
    case KVM_EXIT_INTERNAL_ERROR:
      return {
        kind: 'internal-error',
        suberror: run.getUint32(o.internal_suberror, true),
        data: u64s(o.internal_data, run.getUint32(o.internal_ndata, true)),
      };
    case KVM_EXIT_FAIL_ENTRY:
      return {
        kind: 'fail-entry',
        hardwareEntryFailureReason: run.getBigUint64(o.fail_entry_hardware_entry_failure_reason, true),
        cpu: run.getUint32(o.fail_entry_cpu, true),
      };
    case KVM_EXIT_SYSTEM_EVENT:
      return {
        kind: 'system-event',
        type: run.getUint32(o.system_event_type, true),
        data: u64s(o.system_event_data, run.getUint32(o.system_event_ndata, true)),
      };
    case KVM_EXIT_EXCEPTION:
      return {
        kind: 'exception',
        exception: run.getUint32(o.ex_exception, true),
        errorCode: run.getUint32(o.ex_error_code, true),
      };
    case KVM_EXIT_UNKNOWN:
      return {
        kind: 'unknown',
        exitReason,
        exitReasonName: exitReasonName(exitReason),
        hardwareExitReason: run.getBigUint64(o.hw_hardware_exit_reason, true),
      };
    default:
      return { kind: 'unknown', exitReason, exitReasonName: exitReasonName(exitReason) };
  }
}

const EXIT_REASON_NAMES = new Map<number, string>();
for (const [name, value] of Object.entries(constants)) {
  if (name.startsWith('KVM_EXIT_') && name !== 'KVM_EXIT_IO_IN' && name !== 'KVM_EXIT_IO_OUT') {
    EXIT_REASON_NAMES.set(value, name);
  }
}

/** 'KVM_EXIT_IO' for 2, and so on; `KVM_EXIT_<n>` for reasons newer than the table. */
export function exitReasonName(exitReason: number): string {
  return EXIT_REASON_NAMES.get(exitReason) ?? `KVM_EXIT_${exitReason}`;
}

/** Counters kept by a vCPU thread (native/binding.h enum tsvmm_stat). */
export interface VcpuExitStats {
  /** exits by reason name, e.g. { KVM_EXIT_IO: 100000, KVM_EXIT_HLT: 1 }; zero counts omitted */
  byReason: Record<string, number>;
  /** KVM_RUN calls */
  runs: number;
  /** KVM_RUN calls that returned EINTR (kicks and signals) */
  eintr: number;
  /** exits and notices handed to the JS thread */
  posts: number;
  /** posts that had to wake the JS thread from its event loop (the slow path) */
  wakes: number;
  /** posts whose completion took longer than the spin time (vCPU slept on a futex) */
  sleeps: number;
}

export const STAT_EXIT_REASONS = 64;

export function decodeStats(raw: readonly number[]): VcpuExitStats {
  const byReason: Record<string, number> = {};
  for (let reason = 0; reason < STAT_EXIT_REASONS; reason++) {
    const n = raw[reason] ?? 0;
    if (n > 0) byReason[exitReasonName(reason)] = n;
  }
  const at = (i: number): number => raw[STAT_EXIT_REASONS + i] ?? 0;
  return { byReason, runs: at(0), eintr: at(1), posts: at(2), wakes: at(3), sleeps: at(4) };
}
