/**
 * A VM: KVM_CREATE_VM and the VM ioctls, vCPU creation, and starting,
 * pausing and stopping the vCPU threads. Documentation/virt/kvm/api.rst
 * sections: "KVM_CREATE_VM", "KVM_CHECK_EXTENSION" (vm), "KVM_SET_TSS_ADDR",
 * "KVM_SET_IDENTITY_MAP_ADDR", "KVM_SET_USER_MEMORY_REGION",
 * "KVM_CREATE_IRQCHIP", "KVM_CREATE_PIT2", "KVM_IRQ_LINE", "KVM_SIGNAL_MSI",
 * "KVM_SET_GSI_ROUTING", "KVM_IOEVENTFD", "KVM_IRQFD", "KVM_GET_DIRTY_LOG",
 * "KVM_CLEAR_DIRTY_LOG", "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2", "KVM_GET_CLOCK",
 * "KVM_SET_CLOCK", "KVM_ENABLE_CAP", "KVM_GET_IRQCHIP", "KVM_GET_PIT2".
 */
import { kvmNative } from './native.js';
import type { VmHandle } from './native.js';
import {
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  KVM_IOEVENTFD_FLAG_DEASSIGN,
  KVM_IOEVENTFD_FLAG_PIO,
  KVM_IRQFD_FLAG_DEASSIGN,
  KVM_IRQFD_FLAG_RESAMPLE,
} from './constants.js';
import { KvmCapabilityError, KvmStateError } from './errors.js';
import type { EventFd } from './eventfd.js';
import type { ExitHandlers } from './exits.js';
import { PAGE_SIZE } from './guest-ram.js';
import type { GuestRam } from './guest-ram.js';
import { kvmIoctl } from './requests.js';
import type { IoctlName } from './requests.js';
import { ExitDispatcher } from './run-loop.js';
import type { RunOptions } from './run-loop.js';
import {
  decodeClockData,
  encodeClockData,
  encodeEnableCap,
  encodeIoeventfd,
  encodeIrqfd,
  encodeIrqLevel,
  encodeIrqRouting,
  encodeMsi,
  encodePitConfig,
  encodeU64,
  KVM_CLOCK_DATA_SIZE,
  StructBytes,
} from './structs.js';
import type { KvmClockData, KvmIrqRoutingEntry, KvmMsi } from './structs.js';
import { Vcpu } from './vcpu.js';
import type { Kvm } from './kvm.js';

/** A memory slot as mapped with setUserMemoryRegion. */
export interface UserMemoryRegion {
  /** slot id (bits 16-31: address space, with KVM_CAP_MULTI_ADDRESS_SPACE) */
  slot: number;
  /** guest-physical address, page aligned */
  guestPhysAddr: number;
  ram: GuestRam;
  /** offset into `ram`, page aligned; default 0 */
  ramOffset?: number;
  /** bytes, page aligned; default: the rest of `ram` */
  size?: number;
  /** KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY */
  flags?: number;
}

interface MappedSlot {
  readonly ram: GuestRam;
  readonly guestPhysAddr: number;
  readonly size: number;
  readonly flags: number;
}

export interface IoeventfdSpec {
  /** port (pio) or guest-physical address (mmio) */
  addr: number;
  /** access width: 1, 2, 4 or 8; 0 matches any width (KVM_CAP_IOEVENTFD_ANY_LENGTH) */
  len: number;
  eventfd: EventFd;
  /** a port rather than an MMIO address */
  pio?: boolean;
  /** signal only for writes of this value (KVM_IOEVENTFD_FLAG_DATAMATCH) */
  datamatch?: bigint;
}

export interface IrqfdSpec {
  gsi: number;
  eventfd: EventFd;
  /** level-triggered: KVM signals this fd when the guest EOIs (KVM_IRQFD_FLAG_RESAMPLE) */
  resamplefd?: EventFd;
}

function assertPageAligned(what: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0 || value % PAGE_SIZE !== 0) {
    throw new KvmStateError('ERR_KVM_ARGUMENT', `${what} must be a non-negative multiple of ${PAGE_SIZE}, got ${value}`);
  }
}

export class Vm {
  readonly kvm: Kvm;
  private readonly handle: VmHandle;
  private readonly fdValue: number;
  private readonly dispatcher: ExitDispatcher;
  private readonly vcpuList: Vcpu[] = [];
  /** Keeps every mapped GuestRam reachable while KVM may access it. */
  private readonly slots = new Map<number, MappedSlot>();
  private closedFlag = false;

  /** @internal use Kvm.createVm */
  constructor(kvm: Kvm, handle: VmHandle, runOptions: Partial<RunOptions>) {
    this.kvm = kvm;
    this.handle = handle;
    this.fdValue = kvmNative.vmFd(handle);
    this.dispatcher = new ExitDispatcher(handle, runOptions);
  }

  get fd(): number {
    this.assertOpen();
    return this.fdValue;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Tuning of the exit handoff (see RunOptions). */
  get runOptions(): Readonly<RunOptions> {
    return this.dispatcher.options;
  }

  /** Changes the exit handoff tuning: poll bounds at once, vCPU spin bounds at the next start. */
  setRunOptions(options: Partial<RunOptions>): void {
    this.assertOpen();
    this.dispatcher.configure(options);
  }

  /** The JS thread's current adaptive poll budget in ns (diagnostics, benchmarks). */
  currentPollBudgetNs(): number {
    return kvmNative.vmPollBudget(this.nativeHandle());
  }

  get vcpus(): readonly Vcpu[] {
    return this.vcpuList;
  }

  // ---- capabilities and setup -------------------------------------------------

  /** KVM_CHECK_EXTENSION on the VM fd (KVM_CAP_CHECK_EXTENSION_VM). */
  checkExtension(cap: number): number {
    return this.ioctl('KVM_CHECK_EXTENSION', cap);
  }

  /** KVM_SET_TSS_ADDR: three pages below 4 GiB that the guest never uses (VMX real mode). */
  setTssAddr(addr: number): void {
    this.ioctl('KVM_SET_TSS_ADDR', addr);
  }

  /** KVM_SET_IDENTITY_MAP_ADDR: one page for the EPT identity map (VMX real mode). */
  setIdentityMapAddr(addr: number): void {
    this.ioctl('KVM_SET_IDENTITY_MAP_ADDR', encodeU64(BigInt(addr)));
  }

  /** KVM_ENABLE_CAP on the VM. */
  enableCap(cap: number, args: readonly bigint[] = [], flags = 0): void {
    this.ioctl('KVM_ENABLE_CAP', encodeEnableCap(cap, args, flags));
  }

  // ---- memory -------------------------------------------------------------

  /**
   * KVM_SET_USER_MEMORY_REGION. Replacing a slot's mapping requires deleting
   * it first (KVM only lets flags change in place).
   */
  setUserMemoryRegion(region: UserMemoryRegion): void {
    const ramOffset = region.ramOffset ?? 0;
    const size = region.size ?? region.ram.size - ramOffset;
    const flags = region.flags ?? 0;
    assertPageAligned('guestPhysAddr', region.guestPhysAddr);
    assertPageAligned('ramOffset', ramOffset);
    assertPageAligned('size', size);
    if (size === 0 || ramOffset + size > region.ram.size) {
      throw new KvmStateError(
        'ERR_KVM_ARGUMENT',
        `slot ${region.slot}: [${ramOffset}, ${ramOffset + size}) is empty or outside the ${region.ram.size}-byte GuestRam`,
      );
    }
    kvmNative.vmSetUserMemoryRegion(
      this.nativeHandle(),
      region.slot,
      flags,
      BigInt(region.guestPhysAddr),
      BigInt(size),
      region.ram.hostAddress + BigInt(ramOffset),
    );
    this.slots.set(region.slot, { ram: region.ram, guestPhysAddr: region.guestPhysAddr, size, flags });
  }

  /** Deletes a slot (memory_size 0); the GuestRam is no longer kept alive by this VM. */
  deleteUserMemoryRegion(slot: number): void {
    const mapped = this.slots.get(slot);
    if (mapped === undefined) return;
    kvmNative.vmSetUserMemoryRegion(this.nativeHandle(), slot, mapped.flags, BigInt(mapped.guestPhysAddr), 0n, 0n);
    this.slots.delete(slot);
  }

  /**
   * KVM_GET_DIRTY_LOG: one bit per page of the slot, bit 0 = first page.
   * Without manual protection this also clears the log.
   */
  getDirtyLog(slot: number): BigUint64Array {
    const mapped = this.slots.get(slot);
    if (mapped === undefined) throw new KvmStateError('ERR_KVM_ARGUMENT', `no memory slot ${slot}`);
    const bitmap = new BigUint64Array(Math.ceil(mapped.size / PAGE_SIZE / 64));
    kvmNative.vmGetDirtyLog(this.nativeHandle(), slot, bitmap);
    return bitmap;
  }

  /**
   * Enables KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 (KVM_GET_DIRTY_LOG then leaves
   * pages write-protected state alone; clearDirtyLog re-arms them).
   * Returns the flags the host supports.
   */
  enableManualDirtyLogProtect(flags = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE): number {
    const supported = this.checkExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    if ((supported & flags) !== flags) {
      throw new KvmCapabilityError('KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2', 'manual dirty log protection');
    }
    this.enableCap(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, [BigInt(flags)]);
    return supported;
  }

  /**
   * KVM_CLEAR_DIRTY_LOG: marks the set bits of `bitmap` clean, starting at
   * `firstPage` (a multiple of 64) of the slot.
   */
  clearDirtyLog(slot: number, firstPage: number, numPages: number, bitmap: BigUint64Array): void {
    kvmNative.vmClearDirtyLog(this.nativeHandle(), slot, BigInt(firstPage), numPages, bitmap);
  }

  // ---- interrupt controllers and interrupts -----------------------------------

  /** KVM_CREATE_IRQCHIP: in-kernel PIC, IOAPIC and local APICs. Before creating vCPUs. */
  createIrqchip(): void {
    this.ioctl('KVM_CREATE_IRQCHIP');
  }

  /** KVM_CREATE_PIT2 (flags: KVM_PIT_SPEAKER_DUMMY). After createIrqchip. */
  createPit2(flags = 0): void {
    this.ioctl('KVM_CREATE_PIT2', encodePitConfig(flags));
  }

  /** KVM_IRQ_LINE: set a GSI's level on the in-kernel irqchip. */
  irqLine(gsi: number, level: boolean | number): void {
    this.ioctl('KVM_IRQ_LINE', encodeIrqLevel(gsi, level === true ? 1 : level === false ? 0 : level));
  }

  /** KVM_SIGNAL_MSI: true if delivered, false if the guest blocked it. */
  signalMsi(msi: KvmMsi): boolean {
    return this.ioctl('KVM_SIGNAL_MSI', encodeMsi(msi)) > 0;
  }

  /** KVM_SET_GSI_ROUTING: replaces the whole routing table. */
  setGsiRouting(entries: readonly KvmIrqRoutingEntry[]): void {
    this.ioctl('KVM_SET_GSI_ROUTING', encodeIrqRouting(entries));
  }

  /** KVM_GET_IRQCHIP: raw struct kvm_irqchip for chip_id (KVM_IRQCHIP_*), for state save. */
  getIrqchip(chipId: number): Uint8Array {
    const size = kvmNative.layout.kvm_irqchip?.size ?? 520;
    const bytes = new Uint8Array(size);
    new StructBytes(bytes).setU32(0, chipId);
    this.ioctl('KVM_GET_IRQCHIP', bytes);
    return bytes;
  }

  /** KVM_SET_IRQCHIP with bytes from getIrqchip. */
  setIrqchip(state: Uint8Array): void {
    this.ioctl('KVM_SET_IRQCHIP', state);
  }

  /** KVM_GET_PIT2: raw struct kvm_pit_state2, for state save. */
  getPit2(): Uint8Array {
    const bytes = new Uint8Array(kvmNative.layout.kvm_pit_state2?.size ?? 112);
    this.ioctl('KVM_GET_PIT2', bytes);
    return bytes;
  }

  setPit2(state: Uint8Array): void {
    this.ioctl('KVM_SET_PIT2', state);
  }

  // ---- eventfds -----------------------------------------------------------------

  /** KVM_IOEVENTFD: a guest write to addr signals the eventfd without an exit. */
  assignIoeventfd(spec: IoeventfdSpec): void {
    this.ioeventfd(spec, 0);
  }

  deassignIoeventfd(spec: IoeventfdSpec): void {
    this.ioeventfd(spec, KVM_IOEVENTFD_FLAG_DEASSIGN);
  }

  private ioeventfd(spec: IoeventfdSpec, extraFlags: number): void {
    let flags = extraFlags;
    if (spec.pio === true) flags |= KVM_IOEVENTFD_FLAG_PIO;
    if (spec.datamatch !== undefined) flags |= KVM_IOEVENTFD_FLAG_DATAMATCH;
    this.ioctl(
      'KVM_IOEVENTFD',
      encodeIoeventfd({
        datamatch: spec.datamatch ?? 0n,
        addr: BigInt(spec.addr),
        len: spec.len,
        fd: spec.eventfd.fd,
        flags,
      }),
    );
  }

  /** KVM_IRQFD: signalling the eventfd raises the GSI. */
  assignIrqfd(spec: IrqfdSpec): void {
    const resample = spec.resamplefd;
    this.ioctl(
      'KVM_IRQFD',
      encodeIrqfd({
        fd: spec.eventfd.fd,
        gsi: spec.gsi,
        flags: resample === undefined ? 0 : KVM_IRQFD_FLAG_RESAMPLE,
        resamplefd: resample === undefined ? 0 : resample.fd,
      }),
    );
  }

  deassignIrqfd(spec: Pick<IrqfdSpec, 'gsi' | 'eventfd'>): void {
    this.ioctl('KVM_IRQFD', encodeIrqfd({ fd: spec.eventfd.fd, gsi: spec.gsi, flags: KVM_IRQFD_FLAG_DEASSIGN, resamplefd: 0 }));
  }

  // ---- clock ----------------------------------------------------------------------

  /** KVM_GET_CLOCK: kvmclock in ns (plus realtime/host_tsc when flags say so). */
  getClock(): KvmClockData {
    const bytes = new Uint8Array(KVM_CLOCK_DATA_SIZE);
    this.ioctl('KVM_GET_CLOCK', bytes);
    return decodeClockData(bytes);
  }

  /** KVM_SET_CLOCK */
  setClock(data: KvmClockData): void {
    this.ioctl('KVM_SET_CLOCK', encodeClockData(data));
  }

  // ---- vCPUs -------------------------------------------------------------------

  /** KVM_CREATE_VCPU with `id` (the APIC id), and mmap of its kvm_run. */
  createVcpu(id: number): Vcpu {
    const handle = kvmNative.vcpuCreate(this.nativeHandle(), id);
    const vcpu = new Vcpu(this, id, handle, this.dispatcher);
    this.dispatcher.add(vcpu.runner);
    this.vcpuList.push(vcpu);
    return vcpu;
  }

  /**
   * Starts a native thread per vCPU (default: every vCPU not yet running)
   * that loops on KVM_RUN and hands exits to `handlers` on this thread.
   * While any vCPU thread exists the event loop stays alive.
   */
  startVcpus(handlers: ExitHandlers, vcpus: readonly Vcpu[] = this.vcpuList.filter((v) => !v.runner.hasThread)): void {
    this.assertOpen();
    for (const v of vcpus) {
      if (v.vm !== this) throw new KvmStateError('ERR_KVM_ARGUMENT', `vCPU ${v.id} belongs to another VM`);
    }
    this.dispatcher.start(
      vcpus.map((v) => v.runner),
      handlers,
    );
  }

  /**
   * Kicks every vCPU out of KVM_RUN (immediate_exit plus a real-time signal;
   * README "Threading model"). Resolves when none is inside KVM_RUN, with
   * pending IO/MMIO exits completed, so registers can be saved or reset.
   * vCPUs parked on an event count as paused.
   */
  pauseVcpus(): Promise<void> {
    this.assertOpen();
    return this.dispatcher.pause();
  }

  /** Lets paused vCPUs run again. */
  resumeVcpus(): void {
    this.assertOpen();
    this.dispatcher.resume();
  }

  /** Ends every vCPU thread; resolves once all are joined. vCPUs can be started again. */
  stopVcpus(): Promise<void> {
    if (this.closedFlag) return Promise.resolve();
    return this.dispatcher.stop();
  }

  /** Resolves when no vCPU thread is left (immediately if none runs). */
  whenVcpusStopped(): Promise<void> {
    return this.dispatcher.whenStopped();
  }

  /**
   * Stops and joins vCPU threads (bounded: they are kicked out of KVM_RUN),
   * closes every vCPU and the VM fd, and releases the mapped GuestRams.
   */
  close(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    kvmNative.vmClose(this.handle);
    this.dispatcher.markClosed();
    this.vcpuList.length = 0;
    this.slots.clear();
  }

  /** @internal called by Vcpu.close */
  forgetVcpu(vcpu: Vcpu): void {
    this.dispatcher.remove(vcpu.runner);
    const i = this.vcpuList.indexOf(vcpu);
    if (i >= 0) this.vcpuList.splice(i, 1);
  }

  private assertOpen(): void {
    if (this.closedFlag) throw new KvmStateError('ERR_KVM_CLOSED', 'the VM is closed');
  }

  private nativeHandle(): VmHandle {
    this.assertOpen();
    return this.handle;
  }

  private ioctl(name: IoctlName, arg?: number | bigint | ArrayBufferView): number {
    this.assertOpen();
    return kvmIoctl(this.fdValue, name, arg);
  }
}
