/**
 * The KVM accelerator: guest RAM as memfd-backed SharedArrayBuffers in KVM
 * memslots, KVM's in-kernel irqchip (PIC, IOAPIC, LAPIC) and PIT, one native
 * thread per vCPU. Imported as `@tsvmm/core/kvm` so that code (and unit tests)
 * that never run a guest do not load the native addon.
 *
 * KVM api.rst: 4.2 KVM_CREATE_VM, 4.35 KVM_SET_USER_MEMORY_REGION,
 * 4.24 KVM_CREATE_IRQCHIP, 4.71 KVM_CREATE_PIT2, 4.46 KVM_SET_CPUID2,
 * 4.12/4.14 KVM_SET_REGS/KVM_SET_SREGS.
 *
 * Reset is a power cycle of the CPU side: the VM fd (with its irqchip, PIT and
 * vCPUs) is closed and created afresh over the same RAM, which gives exactly
 * the power-on state KVM defines without tracking every register; device
 * models and RAM survive, as on real hardware.
 */
import {
  EventFd,
  GuestRam,
  Kvm,
  KVM_CAP_IRQCHIP,
  KVM_CAP_IRQ_ROUTING,
  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
  KVM_CAP_PIT2,
  KVM_CAP_XCRS,
  KVM_DIRTY_LOG_INITIALLY_SET,
  KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE,
  KVM_IRQ_ROUTING_IRQCHIP,
  KVM_IRQ_ROUTING_MSI,
  KVM_IRQCHIP_IOAPIC,
  KVM_IRQCHIP_PIC_MASTER,
  KVM_IRQCHIP_PIC_SLAVE,
  KVM_MEM_LOG_DIRTY_PAGES,
  type KvmIrqRoutingEntry,
  type ExitHandlers,
  type KvmCpuidEntry2,
  type KvmSegment,
  type Vcpu,
  type VcpuEvent as KvmVcpuEvent,
  type Vm,
} from '@tsvmm/kvm';
import * as fs from 'node:fs';
import type {
  Accelerator,
  AcceleratorMigration,
  AcceleratorState,
  AcceleratorVm,
  AcceleratorVmConfig,
  EventNotifier,
  ExitSink,
  HostCpuSupport,
  IoEventSpec,
  MsiMessage,
  MsiRoute,
  Unregister,
  VcpuEvent,
} from '../accelerator.js';
import type { CpuEntryState } from '../boot/entry.js';
import type { GuestRamRegion } from '../guest-memory.js';
import { KVM_IDENTITY_MAP_ADDR, KVM_TSS_ADDR } from '../memory-map.js';
import { TsvmmError } from '../errors.js';
import { KVM_STATE_FORMAT, readableMsrs, restoreKvmState, saveKvmState } from './vm-state.js';

export class KvmAcceleratorError extends TsvmmError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super('E_KVM', message, options);
  }
}

const CR0_PE = 1n;
const CR0_ET = 1n << 4n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;

function flatSegment(selector: number, code: boolean, long: boolean): KvmSegment {
  return {
    base: 0n,
    limit: 0xffffffff,
    selector,
    type: code ? 0xb : 0x3, // execute/read accessed, or read/write accessed
    present: 1,
    dpl: 0,
    db: code && long ? 0 : 1,
    s: 1,
    l: code && long ? 1 : 0,
    g: 1,
    avl: 0,
    unusable: 0,
  };
}

/** An EventNotifier over an eventfd(2). */
class EventFdNotifier implements EventNotifier {
  private readonly efd = EventFd.create();
  get fd(): number {
    return this.efd.fd;
  }
  notify(): void {
    this.efd.write(1n);
  }
  drain(): bigint | null {
    return this.efd.read();
  }
  watch(onSignal: () => void): () => void {
    const w = this.efd.watch(onSignal);
    return () => w.stop();
  }
  close(): void {
    this.efd.close();
  }
}

/** Where struct kvm_pic_state starts in struct kvm_irqchip (after chip_id and pad). */
const PIC_STATE_OFFSET = 8;

/** GSIs 0-23 as KVM routes them by default (virt/kvm/irqchip.c, arch/x86/kvm/irq_comm.c): ISA IRQs to both PICs and the IOAPIC, 16-23 to the IOAPIC. */
function defaultIrqchipRoutes(): KvmIrqRoutingEntry[] {
  const routes: KvmIrqRoutingEntry[] = [];
  for (let gsi = 0; gsi < 24; gsi++) {
    if (gsi < 16) {
      routes.push({ gsi, type: KVM_IRQ_ROUTING_IRQCHIP, irqchip: gsi < 8 ? KVM_IRQCHIP_PIC_MASTER : KVM_IRQCHIP_PIC_SLAVE, pin: gsi % 8 });
    }
    routes.push({ gsi, type: KVM_IRQ_ROUTING_IRQCHIP, irqchip: KVM_IRQCHIP_IOAPIC, pin: gsi });
  }
  return routes;
}

/** First GSI handed out for MSI routes: above the IOAPIC's 24 pins. */
const FIRST_MSI_GSI = 24;

class KvmAcceleratorVm implements AcceleratorVm {
  readonly ram: readonly GuestRamRegion[];
  private readonly guestRams: GuestRam[];
  private vm: Vm;
  private vcpus: Vcpu[] = [];
  private sink: ExitSink | undefined;
  private started = false;
  private readonly irqLevels = new Map<number, boolean>();
  private entry: CpuEntryState | undefined;
  private readonly handlers: ExitHandlers;
  /** registrations replayed on the new VM fd after a reset */
  private readonly ioeventfds = new Set<IoEventSpec>();
  private readonly irqfds = new Set<{ gsi: number; notifier: EventNotifier; resample: EventNotifier | undefined }>();
  private readonly msiRoutes = new Map<number, MsiMessage>();
  /** KVM_MEM_LOG_DIRTY_PAGES is on (re-applied to the new VM fd after a reset) */
  private dirtyLogging = false;
  /** KVM_CLEAR_DIRTY_LOG re-arms pages (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2); otherwise KVM_GET_DIRTY_LOG does */
  private manualDirtyProtect = false;
  /** the next takeDirtyLog reports every page: logging just started, or a reset dropped the log with the old VM fd */
  private allDirtyNext = false;
  /** MSRs saved per vCPU: found once per VM (KVM_GET_MSR_INDEX_LIST plus the MTRRs, minus what KVM refuses) */
  private msrIndices: number[] | undefined;

  constructor(
    private readonly kvm: Kvm,
    private readonly config: AcceleratorVmConfig,
  ) {
    this.guestRams = config.ramSlots.map((s, i) => GuestRam.allocate(s.size, { name: `tsvmm-ram${i}` }));
    this.ram = config.ramSlots.map((s, i) => {
      const g = this.guestRams[i] as GuestRam;
      return { gpa: s.gpa, size: s.size, buffer: g.buffer, fd: g.fd };
    });
    this.vm = this.createKvmVm();
    this.handlers = {
      pio: (port, _size, isWrite, data) => {
        this.sink?.pio(port, data, isWrite);
      },
      mmio: (addr, _len, isWrite, data) => {
        this.sink?.mmio(addr, data, isWrite);
      },
      event: (vcpu, ev) => this.onEvent(vcpu, ev),
    };
  }

  private createKvmVm(): Vm {
    const vm = this.kvm.createVm();
    try {
      vm.setTssAddr(KVM_TSS_ADDR);
      vm.setIdentityMapAddr(KVM_IDENTITY_MAP_ADDR);
      vm.createIrqchip();
      vm.createPit2();
      if (this.dirtyLogging) this.enableDirtyProtect(vm);
      this.config.ramSlots.forEach((s, i) => {
        vm.setUserMemoryRegion({ slot: i, guestPhysAddr: s.gpa, ram: this.guestRams[i] as GuestRam, flags: this.dirtyLogging ? KVM_MEM_LOG_DIRTY_PAGES : 0 });
      });
      for (const c of this.config.vmCaps) vm.enableCap(c.cap, c.args);
      this.vcpus = this.config.vcpus.map((plan) => {
        const vcpu = vm.createVcpu(plan.apicId);
        for (const c of plan.kvmCapsToEnable) vcpu.enableCap(c.cap, c.args);
        vcpu.setCpuid2(plan.entries);
        // PV MSRs (kvmclock, steal time, async PF...) start disabled, as after a reset.
        if (plan.msrs.length) vcpu.setMsrs(plan.msrs.map((m) => ({ index: m.index, data: m.data })));
        return vcpu;
      });
      for (const [gsi, level] of this.irqLevels) if (level) vm.irqLine(gsi, true);
      if (this.msiRoutes.size > 0) vm.setGsiRouting(this.routingTable());
      for (const spec of this.ioeventfds) vm.assignIoeventfd(kvmIoeventfd(spec));
      for (const r of this.irqfds) vm.assignIrqfd(kvmIrqfd(r.gsi, r.notifier, r.resample));
      return vm;
    } catch (err) {
      vm.close();
      throw err;
    }
  }

  setBootEntry(entry: CpuEntryState): void {
    this.entry = entry;
    const bsp = this.vcpus[0];
    if (bsp === undefined) throw new KvmAcceleratorError('the VM has no vCPU');
    const sregs = bsp.getSregs();
    const regs = bsp.getRegs();
    for (const k of Object.keys(regs) as (keyof typeof regs)[]) regs[k] = 0n;
    regs.rflags = 2n;
    if (entry.mode === 'protected32') {
      const cs = flatSegment(0x08, true, false);
      const ds = flatSegment(0x10, false, false);
      Object.assign(sregs, { cs, ds, es: ds, fs: ds, gs: ds, ss: ds });
      sregs.cr0 = CR0_PE | CR0_ET;
      sregs.cr4 = 0n;
      sregs.efer = 0n;
      regs.rip = BigInt(entry.eip);
      regs.rax = BigInt(entry.eax);
      regs.rbx = BigInt(entry.ebx);
    } else {
      const cs = flatSegment(entry.codeSelector, true, true);
      const ds = flatSegment(entry.dataSelector, false, true);
      Object.assign(sregs, { cs, ds, es: ds, fs: ds, gs: ds, ss: ds });
      // In IA-32e mode VM entry wants TR to be a busy 64-bit TSS.
      sregs.tr = { ...sregs.tr, type: 0xb, present: 1, s: 0 };
      sregs.gdt = { base: BigInt(entry.gdtBase), limit: entry.gdtLimit };
      sregs.cr3 = BigInt(entry.cr3);
      sregs.cr4 = CR4_PAE;
      sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
      sregs.efer = EFER_LME | EFER_LMA;
      regs.rip = BigInt(entry.rip);
      regs.rsi = BigInt(entry.rsi);
    }
    bsp.setSregs(sregs);
    bsp.setRegs(regs);
  }

  createNotifier(): EventNotifier {
    return new EventFdNotifier();
  }

  assignIoeventfd(spec: IoEventSpec): Unregister {
    const own = { ...spec };
    this.vm.assignIoeventfd(kvmIoeventfd(own));
    this.ioeventfds.add(own);
    return () => {
      if (!this.ioeventfds.delete(own)) return;
      if (!this.vm.closed) this.vm.deassignIoeventfd(kvmIoeventfd(own));
    };
  }

  assignIrqfd(gsi: number, notifier: EventNotifier, resample?: EventNotifier): Unregister {
    const reg = { gsi, notifier, resample };
    this.vm.assignIrqfd(kvmIrqfd(gsi, notifier, resample));
    this.irqfds.add(reg);
    return () => {
      if (!this.irqfds.delete(reg)) return;
      if (!this.vm.closed) this.vm.deassignIrqfd({ gsi, eventfd: EventFd.borrow(notifier.fd) });
    };
  }

  allocateMsiRoute(msg: MsiMessage): MsiRoute {
    const limit = this.kvm.checkExtension(KVM_CAP_IRQ_ROUTING);
    let gsi = FIRST_MSI_GSI;
    while (this.msiRoutes.has(gsi)) gsi++;
    if (limit > 0 && gsi >= limit) throw new KvmAcceleratorError(`no free GSI for an MSI route: KVM allows ${limit} routes`);
    this.msiRoutes.set(gsi, msg);
    this.vm.setGsiRouting(this.routingTable());
    return {
      gsi,
      update: (m: MsiMessage) => {
        if (!this.msiRoutes.has(gsi)) return;
        this.msiRoutes.set(gsi, m);
        this.vm.setGsiRouting(this.routingTable());
      },
      release: () => {
        if (!this.msiRoutes.delete(gsi)) return;
        if (!this.vm.closed) this.vm.setGsiRouting(this.routingTable());
      },
    };
  }

  signalMsi(msg: MsiMessage): void {
    this.vm.signalMsi({ address_lo: Number(msg.address & 0xffffffffn), address_hi: Number(msg.address >> 32n), data: msg.data });
  }

  private routingTable(): KvmIrqRoutingEntry[] {
    const table = defaultIrqchipRoutes();
    for (const [gsi, m] of this.msiRoutes) {
      table.push({ gsi, type: KVM_IRQ_ROUTING_MSI, address_lo: Number(m.address & 0xffffffffn), address_hi: Number(m.address >> 32n), data: m.data });
    }
    return table;
  }

  setIrq(gsi: number, level: boolean): void {
    this.irqLevels.set(gsi, level);
    this.vm.irqLine(gsi, level);
  }

  /**
   * KVM_GET/SET_IRQCHIP on each PIC: struct kvm_irqchip is chip_id, pad, then
   * struct kvm_pic_state, whose 15th byte is elcr and 16th elcr_mask (the
   * bits KVM lets be level-triggered: not IRQ 0-2 and 8, 13 on the slave).
   */
  setPicElcr(mask: number): void {
    for (const [chip, bits] of [
      [KVM_IRQCHIP_PIC_MASTER, mask & 0xff],
      [KVM_IRQCHIP_PIC_SLAVE, (mask >> 8) & 0xff],
    ] as const) {
      const state = this.vm.getIrqchip(chip);
      const elcrMask = state[PIC_STATE_OFFSET + 15] ?? 0;
      state[PIC_STATE_OFFSET + 14] = bits & elcrMask;
      this.vm.setIrqchip(state);
    }
  }

  start(sink: ExitSink): void {
    this.sink = sink;
    this.started = true;
    this.vm.startVcpus(this.handlers);
  }

  pause(): Promise<void> {
    return this.vm.pauseVcpus();
  }

  resume(): void {
    if (!this.started) return;
    if (this.vcpus.some((v) => v.runner.hasThread)) this.vm.resumeVcpus();
    else this.vm.startVcpus(this.handlers);
  }

  async reset(): Promise<void> {
    await this.vm.stopVcpus();
    // The dirty log lives in the VM fd: what it held is lost, so a migration in progress must resend everything.
    if (this.dirtyLogging) this.allDirtyNext = true;
    this.vm.close();
    this.vm = this.createKvmVm();
    if (this.entry !== undefined) this.setBootEntry(this.entry);
  }

  async stop(): Promise<void> {
    this.started = false;
    await this.vm.stopVcpus();
  }

  close(): void {
    this.vm.close();
  }

  exitCounts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const v of this.vcpus) {
      const s = v.exitStats();
      for (const [k, n] of Object.entries(s.byReason)) out[k] = (out[k] ?? 0) + n;
      out['posts'] = (out['posts'] ?? 0) + s.posts;
      out['wakes'] = (out['wakes'] ?? 0) + s.wakes;
    }
    return out;
  }

  vcpuCpuid(index: number): KvmCpuidEntry2[] {
    const v = this.vcpus[index];
    if (v === undefined) throw new KvmAcceleratorError(`no vCPU ${index}`);
    return v.getCpuid2();
  }

  // --- migration (AcceleratorMigration) -------------------------------------------------

  readonly migration: AcceleratorMigration = {
    stateFormat: KVM_STATE_FORMAT,
    setDirtyLogging: (on: boolean): void => this.setDirtyLogging(on),
    takeDirtyLog: (): Uint32Array[] => this.takeDirtyLog(),
    saveState: (): AcceleratorState => this.saveState(),
    restoreState: (state: unknown): void => restoreKvmState(this.vm, this.vcpus, this.config.vcpus.map((v) => v.apicId), state),
  };

  /** Manual protection with INITIALLY_SET when the host has it (QEMU does the same): starting to log then costs nothing, pages are write-protected lazily by KVM_CLEAR_DIRTY_LOG. */
  private enableDirtyProtect(vm: Vm): void {
    const supported = vm.checkExtension(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2);
    this.manualDirtyProtect = (supported & KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) !== 0;
    if (this.manualDirtyProtect) vm.enableManualDirtyLogProtect(supported & (KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET));
  }

  private setDirtyLogging(on: boolean): void {
    if (on === this.dirtyLogging) return;
    // KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 must be set before a slot starts logging (api.rst).
    if (on) this.enableDirtyProtect(this.vm);
    this.config.ramSlots.forEach((s, i) => {
      this.vm.setUserMemoryRegion({ slot: i, guestPhysAddr: s.gpa, ram: this.guestRams[i] as GuestRam, flags: on ? KVM_MEM_LOG_DIRTY_PAGES : 0 });
    });
    this.dirtyLogging = on;
    this.allDirtyNext = on;
  }

  private takeDirtyLog(): Uint32Array[] {
    if (!this.dirtyLogging) throw new KvmAcceleratorError('dirty logging is off; start it before asking for the dirty log');
    const all = this.allDirtyNext;
    this.allDirtyNext = false;
    return this.config.ramSlots.map((s, i) => {
      const pages = Math.ceil(s.size / 4096);
      const log = this.vm.getDirtyLog(i);
      // Re-arm exactly the pages reported, before anyone reads them (api.rst "KVM_CLEAR_DIRTY_LOG").
      if (this.manualDirtyProtect) this.vm.clearDirtyLog(i, 0, pages, log);
      const words = new Uint32Array(log.buffer, 0, Math.ceil(pages / 32));
      if (!all) return words;
      const full = new Uint32Array(words.length).fill(0xffffffff);
      if (pages % 32 !== 0) full[full.length - 1] = (2 ** (pages % 32) - 1) >>> 0;
      return full;
    });
  }

  private saveState(): AcceleratorState {
    const first = this.vcpus[0];
    if (first === undefined) throw new KvmAcceleratorError('the VM has no vCPU');
    this.msrIndices ??= readableMsrs(first, this.kvm.msrIndexList());
    return saveKvmState(this.vm, this.vcpus, this.config.vcpus.map((v) => v.apicId), this.msrIndices, this.kvm.checkExtension(KVM_CAP_XCRS) > 0);
  }

  private onEvent(vcpu: Vcpu, ev: KvmVcpuEvent): void {
    const index = this.vcpus.indexOf(vcpu);
    const mapped = mapEvent(ev);
    if (mapped.kind === 'hlt') {
      vcpu.resume();
      return;
    }
    this.sink?.event(index < 0 ? vcpu.id : index, mapped);
  }
}

function kvmIoeventfd(spec: IoEventSpec): { addr: number; len: number; eventfd: EventFd; pio: boolean; datamatch?: bigint } {
  return {
    addr: spec.addr,
    len: spec.len,
    eventfd: EventFd.borrow(spec.notifier.fd),
    pio: spec.space === 'pio',
    ...(spec.datamatch !== undefined ? { datamatch: spec.datamatch } : {}),
  };
}

function kvmIrqfd(gsi: number, notifier: EventNotifier, resample: EventNotifier | undefined): { gsi: number; eventfd: EventFd; resamplefd?: EventFd } {
  return { gsi, eventfd: EventFd.borrow(notifier.fd), ...(resample !== undefined ? { resamplefd: EventFd.borrow(resample.fd) } : {}) };
}

function mapEvent(ev: KvmVcpuEvent): VcpuEvent {
  switch (ev.kind) {
    case 'hlt':
    case 'shutdown':
      return { kind: ev.kind };
    case 'internal-error':
    case 'fail-entry':
    case 'system-event':
      return ev;
    case 'exception':
      return { kind: 'error', message: `unhandled guest exception ${ev.exception} (error code ${ev.errorCode})` };
    case 'unknown':
      return { kind: 'unknown', exitReason: ev.exitReason };
    case 'run-error':
      return { kind: 'error', message: ev.error.message };
    case 'handler-error':
      return { kind: 'error', message: `device emulation failed: ${ev.error instanceof Error ? ev.error.message : String(ev.error)}` };
  }
}

/** The host CPU's brand string from /proc/cpuinfo, for the `host` CPU model. */
function hostModelName(): string | undefined {
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    return m?.[1]?.trim();
  } catch {
    // only a fallback for when KVM's brand string leaves are empty (compose.ts): without /proc/cpuinfo there is none
    return undefined;
  }
}

export class KvmAccelerator implements Accelerator {
  readonly name = 'kvm';
  private kvmHandle: Kvm | undefined;
  private supported: KvmCpuidEntry2[] | undefined;

  constructor(private readonly path?: string) {}

  /** Opens /dev/kvm on first use; the error names the device and what to do. */
  get kvm(): Kvm {
    if (this.kvmHandle === undefined) {
      this.kvmHandle = this.path === undefined ? Kvm.open() : Kvm.open(this.path);
      for (const [cap, name] of [
        [KVM_CAP_IRQCHIP, 'KVM_CAP_IRQCHIP'],
        [KVM_CAP_PIT2, 'KVM_CAP_PIT2'],
      ] as const) {
        if (this.kvmHandle.checkExtension(cap) <= 0) {
          throw new KvmAcceleratorError(`this host's KVM lacks ${name}, which tsvmm's pc machines need`);
        }
      }
    }
    return this.kvmHandle;
  }

  maxVcpus(): number {
    return this.kvm.maxVcpus();
  }

  hostCpuSupport(): HostCpuSupport {
    this.supported ??= this.kvm.supportedCpuid();
    const kvm = this.kvm;
    const modelId = hostModelName();
    return {
      supportedCpuid: this.supported,
      checkExtension: (cap: number) => kvm.checkExtension(cap),
      ...(modelId !== undefined ? { modelId } : {}),
    };
  }

  createVm(config: AcceleratorVmConfig): AcceleratorVm {
    return new KvmAcceleratorVm(this.kvm, config);
  }
}

export function createKvmAccelerator(path?: string): KvmAccelerator {
  return new KvmAccelerator(path);
}
