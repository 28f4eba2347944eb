/**
 * Test support for device authors (`@tsvmm/core/testing`): a DeviceContext
 * whose every service is a recording fake, so a device is unit-tested through
 * the same bus and memory interfaces the machine uses, without KVM.
 */
import type { EventNotifier, InterruptAndNotifyServices, IoEventSpec, MsiMessage, MsiRoute, Unregister } from '../accelerator.js';
import { writeFileSync } from 'node:fs';
import { AddressSpace } from '../address-space.js';
import { MULTIBOOT_HEADER_MAGIC } from '../boot/multiboot.js';
import type { Chardev } from '../chardev.js';
import { createContainer } from '../container.js';
import type { DeviceContext, MachineInfo, RngBackend, VirtualClock } from '../device.js';
import type { VirtualTimer } from '../virtual-timer.js';
import { ConfigError } from '../errors.js';
import { FirmwareConfig } from '../firmware-config.js';
import { GuestMemory } from '../guest-memory.js';
import type { IoThread } from '../iothread.js';
import { IrqLine } from '../irq.js';
import { nullLogger, type Logger } from '../logger.js';
import type { DriveSpec } from '../machine-description.js';
import { PluginRegistry } from '../plugin-loader.js';

/** A notifier counting in memory; watchers run from a macrotask, as with a real eventfd. */
export class FakeNotifier implements EventNotifier {
  private static nextFd = 1000;
  readonly fd = FakeNotifier.nextFd++;
  count = 0n;
  closed = false;
  private readonly watchers = new Set<() => void>();
  notify(): void {
    this.count += 1n;
    for (const w of this.watchers) setImmediate(w);
  }
  drain(): bigint | null {
    const c = this.count;
    this.count = 0n;
    return c === 0n ? null : c;
  }
  watch(onSignal: () => void): () => void {
    const w = (): void => onSignal();
    this.watchers.add(w);
    return () => this.watchers.delete(w);
  }
  close(): void {
    this.closed = true;
    this.watchers.clear();
  }
}

/** Records ioeventfds, irqfds and MSI routes; `guestWrite` plays a guest write that KVM would turn into a signal. */
export class FakeNotifyServices implements InterruptAndNotifyServices {
  readonly ioeventfds = new Set<IoEventSpec>();
  readonly irqfds = new Set<{ gsi: number; notifier: EventNotifier; resample: EventNotifier | undefined }>();
  readonly msiRoutes = new Map<number, MsiMessage>();
  readonly signalledMsis: MsiMessage[] = [];
  private nextGsi = 24;

  createNotifier(): FakeNotifier {
    return new FakeNotifier();
  }
  assignIoeventfd(spec: IoEventSpec): Unregister {
    const own = { ...spec };
    this.ioeventfds.add(own);
    return () => this.ioeventfds.delete(own);
  }
  assignIrqfd(gsi: number, notifier: EventNotifier, resample?: EventNotifier): Unregister {
    const reg = { gsi, notifier, resample };
    this.irqfds.add(reg);
    return () => this.irqfds.delete(reg);
  }
  allocateMsiRoute(msg: MsiMessage): MsiRoute {
    const gsi = this.nextGsi++;
    this.msiRoutes.set(gsi, msg);
    return {
      gsi,
      update: (m) => {
        if (this.msiRoutes.has(gsi)) this.msiRoutes.set(gsi, m);
      },
      release: () => this.msiRoutes.delete(gsi),
    };
  }
  signalMsi(msg: MsiMessage): void {
    this.signalledMsis.push(msg);
  }
  /** A guest write KVM would match against the ioeventfds; true if one matched (and was signalled). */
  guestWrite(space: 'pio' | 'mmio', addr: number, len: number, value: bigint): boolean {
    for (const s of this.ioeventfds) {
      if (s.space !== space || s.addr !== addr || (s.len !== 0 && s.len !== len)) continue;
      if (s.datamatch !== undefined && s.datamatch !== value) continue;
      s.notifier.notify();
      return true;
    }
    return false;
  }
}

/** A clock the test moves by hand; its timers fire, in deadline order, as it passes their deadlines. */
export class ManualClock implements VirtualClock {
  ns = 0n;
  private readonly timers = new Set<{ deadline: bigint | undefined; callback: () => void }>();
  constructor(private readonly wall = new Date(Date.UTC(2026, 0, 1, 12, 0, 0))) {}
  nowNs(): bigint {
    return this.ns;
  }
  wallClockAtStart(): Date {
    return this.wall;
  }
  createTimer(callback: () => void): VirtualTimer {
    const t = { deadline: undefined as bigint | undefined, callback };
    this.timers.add(t);
    return {
      arm: (deadlineNs: bigint) => {
        t.deadline = deadlineNs;
      },
      cancel: () => {
        t.deadline = undefined;
      },
      get deadlineNs() {
        return t.deadline;
      },
    };
  }
  advanceMs(ms: number): void {
    this.advanceNs(BigInt(Math.round(ms * 1e6)));
  }
  /** Moves the clock to now + ns, stopping at each timer deadline on the way to run its callback. */
  advanceNs(ns: bigint): void {
    const end = this.ns + ns;
    for (;;) {
      let next: { deadline: bigint | undefined; callback: () => void } | undefined;
      for (const t of this.timers) {
        if (t.deadline !== undefined && t.deadline <= end && (next === undefined || t.deadline < (next.deadline ?? 0n))) next = t;
      }
      if (next === undefined || next.deadline === undefined) break;
      if (next.deadline > this.ns) this.ns = next.deadline;
      next.deadline = undefined;
      next.callback();
    }
    this.ns = end;
  }
}

/** Collects what the guest printed; `input` plays bytes typed on the host. */
export class RecordingChardev implements Chardev {
  readonly output: number[] = [];
  private listener: ((data: Uint8Array) => void) | undefined;
  constructor(readonly id: string) {}
  write(data: Uint8Array): void {
    this.output.push(...data);
  }
  setInputListener(l: ((data: Uint8Array) => void) | undefined): void {
    this.listener = l;
  }
  input(data: Uint8Array | string): void {
    this.listener?.(typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }
  get text(): string {
    return new TextDecoder().decode(Uint8Array.from(this.output));
  }
  /** true while a device listens for input */
  get attached(): boolean {
    return this.listener !== undefined;
  }
  /** the device asked the host to stop sending (flow control), and how often it switched */
  paused = false;
  pauseChanges = 0;
  setInputPaused(paused: boolean): void {
    if (paused !== this.paused) this.pauseChanges++;
    this.paused = paused;
  }
  close(): void {
    this.listener = undefined;
  }
}

/** A guest `in` of `size` bytes at `port`, little-endian as on x86. */
export function portIn(pio: AddressSpace, port: number, size: 1 | 2 | 4): number {
  const b = new Uint8Array(size);
  pio.read(port, b);
  return b.reduceRight((v, x) => v * 256 + x, 0);
}

/** A guest `out` of the low `size` bytes of `value` at `port`, little-endian as on x86. */
export function portOut(pio: AddressSpace, port: number, size: 1 | 2 | 4, value: number): void {
  const b = new Uint8Array(size);
  for (let i = 0; i < size; i++) b[i] = (value >>> (8 * i)) & 0xff;
  pio.write(port, b);
}

/** A guest `inb`. */
export function inb(pio: AddressSpace, port: number): number {
  return portIn(pio, port, 1);
}

/** A guest `outb`. */
export function outb(pio: AddressSpace, port: number, value: number): void {
  portOut(pio, port, 1, value);
}

export interface TestDeviceContextOptions {
  /** guest RAM bytes (default 1 MiB), at guest physical 0 */
  ramSize?: number;
  /** bytes of a guard area after RAM in the same buffer, filled with 0xa5, for out-of-bounds checks (default 4096) */
  guardSize?: number;
  /**
   * guest RAM as regions at these guest addresses, for layouts with holes
   * (default one region of ramSize at 0); each region has its own buffer and
   * guard area, `ramBuffer` is the lowest region's
   */
  ramRegions?: { gpa: number; size: number }[];
  /** host wall-clock time the guest RTC starts from (default 2026-01-01T12:00:00Z) */
  wallClockAtStart?: Date;
  machine?: Partial<MachineInfo>;
  chardevs?: Chardev[];
  iothreads?: IoThread[];
  drives?: DriveSpec[];
  /** rng objects (`--object rng-random,...`) by id */
  rngBackends?: RngBackend[];
  plugins?: PluginRegistry;
  log?: Logger;
}

export interface TestDeviceContext {
  ctx: DeviceContext;
  pio: AddressSpace;
  mmio: AddressSpace;
  memory: GuestMemory;
  /** the whole buffer behind RAM, guard area included */
  ramBuffer: SharedArrayBuffer;
  /** true while every guard byte still reads 0xa5 */
  guardIntact(): boolean;
  clock: ManualClock;
  notify: FakeNotifyServices;
  fwCfg: FirmwareConfig;
  /** current level of every GSI a device raised or lowered, and every transition in order */
  irqLevels: Map<number, boolean>;
  irqLog: [number, boolean][];
  /** the level of `gsi`; false for a line never raised */
  irqLevel(gsi: number): boolean;
  /** rising edges seen on `gsi` */
  irqRaises(gsi: number): number;
  resets: string[];
  shutdowns: string[];
  exits: { status: number; reason: string }[];
  /** the last ELCR mask a device programmed (setPicElcr), if any */
  picElcr(): number | undefined;
}

export function createTestDeviceContext(opts: TestDeviceContextOptions = {}): TestDeviceContext {
  const guardSize = opts.guardSize ?? 4096;
  const layout = [...(opts.ramRegions ?? [{ gpa: 0, size: opts.ramSize ?? 1 << 20 }])].sort((a, b) => a.gpa - b.gpa);
  const regions = layout.map(({ gpa, size }) => {
    const buffer = new SharedArrayBuffer(size + guardSize);
    new Uint8Array(buffer, size).fill(0xa5);
    return { gpa, size, buffer };
  });
  const memory = new GuestMemory(regions);
  const ramSize = memory.totalSize;
  const ramBelowFourGiB = regions.reduce((n, r) => n + Math.max(0, Math.min(r.gpa + r.size, 2 ** 32) - r.gpa), 0);
  const ramBuffer = regions[0]?.buffer ?? new SharedArrayBuffer(0);
  const pio = new AddressSpace('pio', 0x10000);
  const mmio = new AddressSpace('mmio', 2 ** 52);
  const clock = new ManualClock(opts.wallClockAtStart);
  const notify = new FakeNotifyServices();
  const fwCfg = new FirmwareConfig();
  const irqLevels = new Map<number, boolean>();
  const irqLog: [number, boolean][] = [];
  const lines = new Map<number, IrqLine>();
  const resets: string[] = [];
  const shutdowns: string[] = [];
  const exits: { status: number; reason: string }[] = [];
  const services = new Map<symbol, unknown>();
  const chardevs = new Map((opts.chardevs ?? []).map((c) => [c.id, c]));
  const iothreads = new Map((opts.iothreads ?? []).map((t) => [t.id, t]));
  const drives = new Map((opts.drives ?? []).map((d, i) => [d.id ?? `drive${i}`, d]));
  const rngBackends = new Map((opts.rngBackends ?? []).map((r) => [r.id, r]));
  let elcr: number | undefined;
  const sink = {
    setIrq(gsi: number, level: boolean): void {
      irqLevels.set(gsi, level);
      irqLog.push([gsi, level]);
    },
  };
  const machine: MachineInfo = {
    machineType: 'test',
    ramSize,
    ramBelowFourGiB,
    ramAboveFourGiB: ramSize - ramBelowFourGiB,
    cpus: 1,
    maxCpus: 1,
    kernelCmdline: '',
    ...opts.machine,
  };
  const ctx: DeviceContext = {
    pio,
    mmio,
    memory,
    machine,
    fwCfg,
    clock,
    log: opts.log ?? nullLogger,
    irq(gsi) {
      let l = lines.get(gsi);
      if (l === undefined) {
        l = new IrqLine(sink, gsi);
        lines.set(gsi, l);
      }
      return l;
    },
    chardev: (id) => chardevs.get(id),
    requestReset: (r) => resets.push(r),
    requestShutdown: (r) => shutdowns.push(r),
    requestExit: (status, reason) => exits.push({ status, reason }),
    notify,
    provide(token, service) {
      if (services.has(token)) throw new ConfigError(`a device already provides ${token.description ?? 'this service'}`);
      services.set(token, service);
    },
    lookup: <T>(token: symbol): T | undefined => services.get(token) as T | undefined,
    iothread(id) {
      const t = iothreads.get(id);
      if (t === undefined) throw new ConfigError(`no iothread '${id}'`);
      return t;
    },
    drive(id) {
      const d = drives.get(id);
      if (d === undefined) throw new ConfigError(`no drive '${id}'`);
      return d;
    },
    rngBackend(id) {
      const r = rngBackends.get(id);
      if (r === undefined) throw new ConfigError(`no rng object '${id}'`);
      return r;
    },
    plugins: opts.plugins ?? PluginRegistry.create({ container: createContainer(), noDiscovery: true }),
    setPicElcr(mask) {
      elcr = mask;
    },
  };
  return {
    ctx,
    pio,
    mmio,
    memory,
    ramBuffer,
    guardIntact: () => regions.every((r) => new Uint8Array(r.buffer, r.size).every((b) => b === 0xa5)),
    clock,
    notify,
    fwCfg,
    irqLevels,
    irqLog,
    irqLevel: (gsi) => irqLevels.get(gsi) ?? false,
    irqRaises: (gsi) => irqLog.filter(([g, level]) => g === gsi && level).length,
    resets,
    shutdowns,
    exits,
    picElcr: () => elcr,
  };
}

/**
 * Writes a multiboot kernel that is only its header (the a.out kludge: loaded
 * at 1 MiB, entry 0x100020) to `file`: enough for Machine.create to load,
 * for machines whose fake accelerator never runs the guest. Returns `file`.
 */
export function writeMultibootHeaderKernel(file: string): string {
  const img = new Uint8Array(0x110);
  const dv = new DataView(img.buffer);
  const flags = 0x10003; // page-align modules, memory info, a.out kludge addresses
  dv.setUint32(0, MULTIBOOT_HEADER_MAGIC, true);
  dv.setUint32(4, flags, true);
  dv.setUint32(8, (-(MULTIBOOT_HEADER_MAGIC + flags)) >>> 0, true);
  dv.setUint32(12, 0x100000, true); // header_addr
  dv.setUint32(16, 0x100000, true); // load_addr
  dv.setUint32(28, 0x100020, true); // entry_addr
  writeFileSync(file, img);
  return file;
}
