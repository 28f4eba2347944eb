/**
 * A vCPU: KVM_CREATE_VCPU plus its mmap'd kvm_run, the per-vCPU state
 * ioctls, and its run state. Documentation/virt/kvm/api.rst sections:
 * "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS",
 * "KVM_GET_FPU", "KVM_SET_FPU", "KVM_GET_MSRS", "KVM_SET_MSRS",
 * "KVM_SET_CPUID2", "KVM_GET_CPUID2", "KVM_GET_LAPIC", "KVM_SET_LAPIC",
 * "KVM_GET_MP_STATE", "KVM_SET_MP_STATE", "KVM_GET_VCPU_EVENTS",
 * "KVM_SET_VCPU_EVENTS", "KVM_GET_XSAVE2", "KVM_SET_XSAVE", "KVM_GET_XCRS",
 * "KVM_SET_XCRS", "KVM_GET_DEBUGREGS", "KVM_SET_DEBUGREGS", "KVM_INTERRUPT",
 * "KVM_NMI", "KVM_GET_TSC_KHZ", "KVM_ENABLE_CAP" (vcpu).
 *
 * State ioctls are only allowed while the vCPU thread is outside KVM_RUN:
 * before start, while paused, while parked on an event, during an exit
 * handler, or after stop. KVM serializes vCPU ioctls on a per-vCPU mutex
 * that KVM_RUN holds, so calling one while the guest runs would block the JS
 * thread for as long as the guest runs.
 */
import { kvmNative } from './native.js';
import type { VcpuHandle } from './native.js';
import { isKvmSystemError, KvmStateError } from './errors.js';
import { decodeStats } from './exits.js';
import type { VcpuExitStats } from './exits.js';
import { kvmIoctl } from './requests.js';
import type { IoctlName } from './requests.js';
import { VcpuRunner } from './run-loop.js';
import type { ExitDispatcher, VcpuRunState } from './run-loop.js';
import {
  decodeCpuid2,
  decodeDebugregs,
  decodeFpu,
  decodeMsrs,
  decodeRegs,
  decodeSregs,
  decodeVcpuEvents,
  decodeXcrs,
  encodeCpuid2,
  encodeDebugregs,
  encodeEnableCap,
  encodeFpu,
  encodeMsrs,
  encodeRegs,
  encodeSregs,
  encodeU32,
  encodeVcpuEvents,
  encodeXcrs,
  KVM_DEBUGREGS_SIZE,
  KVM_FPU_SIZE,
  KVM_LAPIC_STATE_SIZE,
  KVM_MP_STATE_SIZE,
  KVM_REGS_SIZE,
  KVM_SREGS_SIZE,
  KVM_VCPU_EVENTS_SIZE,
  KVM_XCRS_SIZE,
  StructBytes,
} from './structs.js';
import type {
  KvmCpuidEntry2,
  KvmDebugregs,
  KvmFpu,
  KvmMsrEntry,
  KvmRegs,
  KvmSregs,
  KvmVcpuEvents,
  KvmXcrs,
} from './structs.js';
import type { Vm } from './vm.js';

/** KVM_GET_MSRS / KVM_SET_MSRS stopped early: the MSR at `index` was refused. */
export class KvmMsrError extends Error {
  readonly code = 'ERR_KVM_MSR';
  constructor(
    readonly operation: 'KVM_GET_MSRS' | 'KVM_SET_MSRS',
    readonly index: number,
    readonly processed: number,
  ) {
    super(`${operation} stopped at MSR 0x${index.toString(16)} after ${processed} entries: KVM refused it`);
    this.name = 'KvmMsrError';
  }
}

const STATE_IOCTL_STATES: ReadonlySet<VcpuRunState> = new Set(['created', 'exit', 'event', 'paused', 'stopped']);

export class Vcpu {
  /** KVM vcpu id (the APIC id on x86) */
  readonly id: number;
  /** @internal the run-state machine shared with the VM's ExitDispatcher */
  readonly runner: VcpuRunner;
  private readonly handle: VcpuHandle;
  private readonly fdValue: number;

  /** @internal use Vm.createVcpu */
  constructor(
    readonly vm: Vm,
    id: number,
    handle: VcpuHandle,
    dispatcher: ExitDispatcher,
  ) {
    this.id = id;
    this.handle = handle;
    const info = kvmNative.vcpuInfo(handle);
    this.fdValue = info.fd;
    this.runner = new VcpuRunner(handle, info.index, kvmNative.vcpuRunBuffer(handle), this, dispatcher);
  }

  get fd(): number {
    this.assertOpen();
    return this.fdValue;
  }

  get runState(): VcpuRunState {
    return this.runner.state;
  }

  /**
   * The mmap'd struct kvm_run (api.rst section 5), shared with the vCPU
   * thread. Read it only while the vCPU is outside KVM_RUN. Detached on close.
   */
  get runView(): DataView {
    return this.runner.runView;
  }

  // ---- state ioctls --------------------------------------------------------

  getRegs(): KvmRegs {
    return decodeRegs(this.ioctlStruct('KVM_GET_REGS', KVM_REGS_SIZE));
  }

  setRegs(regs: KvmRegs): void {
    this.ioctl('KVM_SET_REGS', encodeRegs(regs));
  }

  getSregs(): KvmSregs {
    return decodeSregs(this.ioctlStruct('KVM_GET_SREGS', KVM_SREGS_SIZE));
  }

  setSregs(sregs: KvmSregs): void {
    this.ioctl('KVM_SET_SREGS', encodeSregs(sregs));
  }

  getFpu(): KvmFpu {
    return decodeFpu(this.ioctlStruct('KVM_GET_FPU', KVM_FPU_SIZE));
  }

  setFpu(fpu: KvmFpu): void {
    this.ioctl('KVM_SET_FPU', encodeFpu(fpu));
  }

  /** Reads the given MSRs; throws KvmMsrError naming the first MSR KVM refuses. */
  getMsrs(indices: readonly number[]): KvmMsrEntry[] {
    const bytes = encodeMsrs(indices.map((index) => ({ index, data: 0n })));
    const n = this.ioctl('KVM_GET_MSRS', bytes);
    if (n < indices.length) throw new KvmMsrError('KVM_GET_MSRS', indices[n] ?? -1, n);
    return decodeMsrs(bytes, n);
  }

  /** Writes the given MSRs; throws KvmMsrError naming the first MSR KVM refuses. */
  setMsrs(entries: readonly KvmMsrEntry[]): void {
    const n = this.ioctl('KVM_SET_MSRS', encodeMsrs(entries));
    if (n < entries.length) throw new KvmMsrError('KVM_SET_MSRS', entries[n]?.index ?? -1, n);
  }

  /** KVM_SET_CPUID2: the CPUID table the guest sees (see README for this host's quirks). */
  setCpuid2(entries: readonly KvmCpuidEntry2[]): void {
    this.ioctl('KVM_SET_CPUID2', encodeCpuid2(entries));
  }

  /** KVM_GET_CPUID2: the table as KVM holds it (grows the buffer on E2BIG). */
  getCpuid2(): KvmCpuidEntry2[] {
    for (let capacity = 64; ; capacity *= 2) {
      const bytes = encodeCpuid2([], capacity);
      try {
        this.ioctl('KVM_GET_CPUID2', bytes);
        return decodeCpuid2(bytes);
      } catch (err) {
        if (capacity >= 4096 || !isKvmSystemError(err) || err.code !== 'E2BIG') throw err;
      }
    }
  }

  /** KVM_GET_LAPIC: the 1024-byte local APIC register page. */
  getLapic(): Uint8Array {
    return this.ioctlStruct('KVM_GET_LAPIC', KVM_LAPIC_STATE_SIZE);
  }

  setLapic(regs: Uint8Array): void {
    if (regs.length !== KVM_LAPIC_STATE_SIZE) throw new RangeError(`kvm_lapic_state is ${KVM_LAPIC_STATE_SIZE} bytes`);
    this.ioctl('KVM_SET_LAPIC', regs);
  }

  /** KVM_GET_MP_STATE: one of KVM_MP_STATE_*. */
  getMpState(): number {
    return new StructBytes(this.ioctlStruct('KVM_GET_MP_STATE', KVM_MP_STATE_SIZE)).u32(0);
  }

  setMpState(mpState: number): void {
    this.ioctl('KVM_SET_MP_STATE', encodeU32(mpState));
  }

  getVcpuEvents(): KvmVcpuEvents {
    return decodeVcpuEvents(this.ioctlStruct('KVM_GET_VCPU_EVENTS', KVM_VCPU_EVENTS_SIZE));
  }

  setVcpuEvents(events: KvmVcpuEvents): void {
    this.ioctl('KVM_SET_VCPU_EVENTS', encodeVcpuEvents(events));
  }

  /** XSAVE area: KVM_GET_XSAVE2 when KVM_CAP_XSAVE2 exists (size from the cap), else 4 KiB. */
  getXsave(): Uint8Array {
    this.assertNotInKvmRun('KVM_GET_XSAVE2');
    return kvmNative.vcpuGetXsave(this.handle);
  }

  setXsave(xsave: Uint8Array): void {
    this.assertNotInKvmRun('KVM_SET_XSAVE');
    kvmNative.vcpuSetXsave(this.handle, xsave);
  }

  getXcrs(): KvmXcrs {
    return decodeXcrs(this.ioctlStruct('KVM_GET_XCRS', KVM_XCRS_SIZE));
  }

  setXcrs(xcrs: KvmXcrs): void {
    this.ioctl('KVM_SET_XCRS', encodeXcrs(xcrs));
  }

  getDebugregs(): KvmDebugregs {
    return decodeDebugregs(this.ioctlStruct('KVM_GET_DEBUGREGS', KVM_DEBUGREGS_SIZE));
  }

  setDebugregs(debugregs: KvmDebugregs): void {
    this.ioctl('KVM_SET_DEBUGREGS', encodeDebugregs(debugregs));
  }

  /** KVM_INTERRUPT: queue an external interrupt (only without an in-kernel irqchip). */
  interrupt(irq: number): void {
    this.ioctl('KVM_INTERRUPT', encodeU32(irq));
  }

  /** KVM_NMI: queue an NMI (with an in-kernel irqchip, via the local APIC). */
  nmi(): void {
    this.ioctl('KVM_NMI');
  }

  /** KVM_GET_TSC_KHZ */
  getTscKhz(): number {
    return this.ioctl('KVM_GET_TSC_KHZ');
  }

  /** KVM_ENABLE_CAP on this vCPU. */
  enableCap(cap: number, args: readonly bigint[] = [], flags = 0): void {
    this.ioctl('KVM_ENABLE_CAP', encodeEnableCap(cap, args, flags));
  }

  // ---- running ---------------------------------------------------------------

  /** Re-enters KVM_RUN after an `event` handler (the vCPU is parked until then). */
  resume(): void {
    this.assertOpen();
    this.runner.resumeFromEvent();
  }

  /** Exit counters kept by the vCPU thread; cheap (no ioctl). */
  exitStats(): VcpuExitStats {
    this.assertOpen();
    return decodeStats(kvmNative.vcpuStats(this.handle));
  }

  /** Closes the vCPU fd and unmaps kvm_run; its thread must have ended. */
  close(): void {
    if (this.runner.state === 'closed') return;
    if (this.runner.hasThread) {
      throw new KvmStateError('ERR_KVM_VCPU_RUNNING', `vCPU ${this.id} is ${this.runner.state}; stop the VM's vCPUs first`);
    }
    kvmNative.vcpuClose(this.handle);
    this.runner.state = 'closed';
    this.vm.forgetVcpu(this);
  }

  // ---- helpers ---------------------------------------------------------------

  private assertOpen(): void {
    if (this.runner.state === 'closed') throw new KvmStateError('ERR_KVM_CLOSED', `vCPU ${this.id} is closed`);
  }

  private assertNotInKvmRun(operation: string): void {
    this.assertOpen();
    if (!STATE_IOCTL_STATES.has(this.runner.state)) {
      throw new KvmStateError(
        'ERR_KVM_VCPU_RUNNING',
        `${operation} on vCPU ${this.id} while it is ${this.runner.state}; await vm.pauseVcpus() first`,
      );
    }
  }

  private ioctl(name: IoctlName, arg?: ArrayBufferView): number {
    this.assertNotInKvmRun(name);
    return kvmIoctl(this.fdValue, name, arg);
  }

  private ioctlStruct(name: IoctlName, size: number): Uint8Array {
    const bytes = new Uint8Array(size);
    this.ioctl(name, bytes);
    return bytes;
  }
}
