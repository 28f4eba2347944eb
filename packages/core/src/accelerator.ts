/**
 * The boundary between the machine model and the hypervisor. The Machine sees
 * an Accelerator (KVM in production, a fake in unit tests); the accelerator
 * owns vCPU threads, guest RAM and the in-kernel interrupt controllers, and
 * hands port and MMIO accesses to the machine's address spaces.
 */
import type { CpuEntryState } from './boot/entry.js';
import type { CpuidEntry } from './cpu/cpuid.js';
import type { VcpuCpuid } from './cpu/compose.js';
import type { KvmCapEnable } from './cpu/kvm-abi.js';
import type { GuestRamRegion } from './guest-memory.js';
import type { RamSlot } from './memory-map.js';

/** Something a vCPU reported that is not an I/O access (KVM api.rst 5. "The kvm_run structure"). */
export type VcpuEvent =
  | { kind: 'shutdown' }
  | { kind: 'internal-error'; suberror: number; data: bigint[] }
  | { kind: 'fail-entry'; hardwareEntryFailureReason: bigint; cpu: number }
  | { kind: 'system-event'; type: number; data: bigint[] }
  | { kind: 'hlt' }
  | { kind: 'unknown'; exitReason: number }
  /** the accelerator or a device handler failed; the vCPU is stopped */
  | { kind: 'error'; message: string };

/** Where a running VM's exits go. Handlers run on the main thread; keep them short. */
export interface ExitSink {
  pio(port: number, data: Uint8Array, isWrite: boolean): void;
  mmio(addr: number, data: Uint8Array, isWrite: boolean): void;
  event(vcpu: number, event: VcpuEvent): void;
}

/**
 * An eventfd-like doorbell shared with the kernel: KVM signals it on a guest
 * write (ioeventfd) or injects an interrupt when it is signalled (irqfd).
 * `fd` is valid in every thread of the process (iothreads borrow it).
 */
export interface EventNotifier {
  readonly fd: number;
  notify(): void;
  /** read and reset the counter; null when it was zero */
  drain(): bigint | null;
  /** call `onSignal` from this thread's event loop when signalled, until the returned function is called */
  watch(onSignal: () => void): () => void;
  close(): void;
}

/** KVM_IOEVENTFD: a guest write to addr (of len bytes, optionally only of datamatch) signals the notifier in the kernel. */
export interface IoEventSpec {
  space: 'pio' | 'mmio';
  addr: number;
  /** 1, 2, 4 or 8; 0 matches any width */
  len: number;
  datamatch?: bigint;
  notifier: EventNotifier;
}

/** An MSI message as a device writes it (PCI Local Bus 3.0 §6.8). */
export interface MsiMessage {
  address: bigint;
  data: number;
}

/** A GSI routed to an MSI message, usable with irqfds. */
export interface MsiRoute {
  readonly gsi: number;
  update(msg: MsiMessage): void;
  release(): void;
}

/** Undo a registration. */
export type Unregister = () => void;

/** What devices may ask of the hypervisor besides port/MMIO exits. */
export interface InterruptAndNotifyServices {
  createNotifier(): EventNotifier;
  assignIoeventfd(spec: IoEventSpec): Unregister;
  /** inject `gsi` whenever `notifier` is signalled; with `resample`, level-triggered (KVM signals resample on EOI) */
  assignIrqfd(gsi: number, notifier: EventNotifier, resample?: EventNotifier): Unregister;
  allocateMsiRoute(msg: MsiMessage): MsiRoute;
  signalMsi(msg: MsiMessage): void;
}

export interface AcceleratorVmConfig {
  ramSlots: RamSlot[];
  /** capabilities to enable on the VM before vCPUs exist */
  vmCaps: KvmCapEnable[];
  /** one entry per vCPU: APIC ID (the KVM vCPU id), CPUID table, per-vCPU caps and MSRs */
  vcpus: VcpuCpuid[];
}

/** What the host can give guest CPUs: KVM_GET_SUPPORTED_CPUID and KVM_CHECK_EXTENSION. */
export interface HostCpuSupport {
  supportedCpuid: readonly CpuidEntry[];
  checkExtension(cap: number): number;
  /** the host CPU's brand string, for the `host` model */
  modelId?: string;
}

/**
 * vCPU, interrupt controller and clock state, as an accelerator saves it for
 * migration and snapshots. The machine treats it as opaque data (JSON values,
 * bigint, Uint8Array); `format` and `version` say which accelerator wrote it.
 */
export interface AcceleratorState {
  format: string;
  version: number;
  [field: string]: unknown;
}

/** What migration needs from an accelerator. Optional: an accelerator without it cannot migrate. */
export interface AcceleratorMigration {
  /** the `format` of the states saveState() writes; restoreState() refuses others */
  readonly stateFormat: string;
  /** Start (or stop) logging which pages vCPUs write, on every RAM slot. */
  setDirtyLogging(on: boolean): void;
  /**
   * Pages vCPUs wrote since the previous call (since logging started: every
   * page), one bitmap per RAM region in `ram` order (bit n of word w = page
   * 32w+n). Logging is re-armed for those pages before this returns, so a
   * write after the caller reads a page is reported by the next call.
   */
  takeDirtyLog(): Uint32Array[];
  /** vCPUs, interrupt controllers, PIT and clock; only while paused (or never started) */
  saveState(): AcceleratorState;
  /**
   * Load a state saveState() wrote (possibly in another process), before the
   * vCPUs first run. `state` comes from a stream: it is checked, and an error
   * says what does not fit.
   */
  restoreState(state: unknown): void;
}

export interface AcceleratorVm extends InterruptAndNotifyServices {
  /** guest RAM, one region per slot, allocated by the accelerator */
  readonly ram: readonly GuestRamRegion[];
  /** set the bootstrap processor's registers for a boot entry */
  setBootEntry(entry: CpuEntryState): void;
  setIrq(gsi: number, level: boolean): void;
  /**
   * The 8259 edge/level control registers (PIIX ELCR, ports 0x4d0/0x4d1; bit
   * n = IRQ n level-triggered) where the accelerator emulates the PIC: KVM's
   * in-kernel PIC holds them. Accelerators without a PIC ignore it.
   */
  setPicElcr?(mask: number): void;
  /** start the vCPU threads, delivering exits to `sink` */
  start(sink: ExitSink): void;
  /** after the promise resolves no vCPU runs guest code */
  pause(): Promise<void>;
  resume(): void;
  /** power-cycle vCPUs and interrupt controllers (RAM is kept); leaves the vCPUs paused */
  reset(): Promise<void>;
  /** stop vCPU threads for good */
  stop(): Promise<void>;
  close(): void;
  /** counters for diagnostics and benchmarks */
  exitCounts(): Record<string, number>;
  /** the CPUID table KVM holds for a vCPU (KVM_GET_CPUID2) */
  vcpuCpuid(index: number): CpuidEntry[];
  /** dirty logging and state save/restore, when the accelerator supports migration */
  readonly migration?: AcceleratorMigration;
}

export interface Accelerator {
  readonly name: string;
  /** how many vCPUs the host recommends / allows */
  maxVcpus(): number;
  hostCpuSupport(): HostCpuSupport;
  createVm(config: AcceleratorVmConfig): AcceleratorVm;
}
