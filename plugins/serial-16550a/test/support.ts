/**
 * A fake machine for driving devices in unit tests: a real AddressSpace and
 * GuestMemory, plus a settable clock, a recording interrupt sink, recording
 * chardevs and recorded reset/shutdown/exit requests.
 *
 * Only this plugin's tests import it (plugins do not share test code); a
 * shared copy belongs in @tsvmm/core's test support once there is one.
 */
import {
  AddressSpace,
  FirmwareConfig,
  GuestMemory,
  IrqLine,
  nullLogger,
  type Chardev,
  type DeviceContext,
  type InterruptSink,
  type MachineInfo,
  type VirtualClock,
} from '@tsvmm/core';

export class FakeClock implements VirtualClock {
  ns = 0n;
  constructor(readonly start = new Date(Date.UTC(2024, 0, 1))) {}
  nowNs(): bigint {
    return this.ns;
  }
  wallClockAtStart(): Date {
    return this.start;
  }
}

export class RecordingInterruptSink implements InterruptSink {
  readonly events: { gsi: number; level: boolean }[] = [];
  readonly levels = new Map<number, boolean>();
  setIrq(gsi: number, level: boolean): void {
    this.events.push({ gsi, level });
    this.levels.set(gsi, level);
  }
  level(gsi: number): boolean {
    return this.levels.get(gsi) ?? false;
  }
  /** rising edges seen on `gsi` */
  raises(gsi: number): number {
    return this.events.filter((e) => e.gsi === gsi && e.level).length;
  }
}

export class RecordingChardev implements Chardev {
  readonly output: number[] = [];
  writes = 0;
  private listener: ((data: Uint8Array) => void) | undefined;
  constructor(readonly id: string) {}
  write(data: Uint8Array): void {
    this.writes++;
    this.output.push(...data);
  }
  setInputListener(listener: ((data: Uint8Array) => void) | undefined): void {
    this.listener = listener;
  }
  get attached(): boolean {
    return this.listener !== undefined;
  }
  /** the host types `data` */
  type(data: Uint8Array | string): void {
    this.listener?.(typeof data === 'string' ? new TextEncoder().encode(data) : data);
  }
  get text(): string {
    return new TextDecoder().decode(Uint8Array.from(this.output));
  }
  close(): void {}
}

export interface FakeMachine {
  ctx: DeviceContext;
  pio: AddressSpace;
  irqs: RecordingInterruptSink;
  clock: FakeClock;
  chardevs: Map<string, RecordingChardev>;
  resets: string[];
  shutdowns: string[];
  exits: { status: number; reason: string }[];
}

export function fakeMachine(opts: { chardevs?: string[]; memory?: GuestMemory; machine?: Partial<MachineInfo> } = {}): FakeMachine {
  const pio = new AddressSpace('pio', 0x10000);
  const irqs = new RecordingInterruptSink();
  const clock = new FakeClock();
  const chardevs = new Map((opts.chardevs ?? []).map((id) => [id, new RecordingChardev(id)]));
  const lines = new Map<number, IrqLine>();
  const resets: string[] = [];
  const shutdowns: string[] = [];
  const exits: { status: number; reason: string }[] = [];
  const ramSize = 128 * 1024 * 1024;
  const ctx: DeviceContext = {
    pio,
    mmio: new AddressSpace('mmio', 2 ** 52),
    memory: opts.memory ?? new GuestMemory([{ gpa: 0, size: 0x10000, buffer: new SharedArrayBuffer(0x10000) }]),
    machine: { machineType: 'pc', ramSize, ramBelowFourGiB: ramSize, ramAboveFourGiB: 0, cpus: 1, maxCpus: 1, kernelCmdline: '', ...opts.machine },
    fwCfg: new FirmwareConfig(),
    clock,
    log: nullLogger,
    irq(gsi: number): IrqLine {
      let line = lines.get(gsi);
      if (line === undefined) {
        line = new IrqLine(irqs, gsi);
        lines.set(gsi, line);
      }
      return line;
    },
    chardev: (id: string) => chardevs.get(id),
    requestReset: (reason: string) => void resets.push(reason),
    requestShutdown: (reason: string) => void shutdowns.push(reason),
    requestExit: (status: number, reason: string) => void exits.push({ status, reason }),
  };
  return { ctx, pio, irqs, clock, chardevs, resets, shutdowns, exits };
}

export function outb(pio: AddressSpace, port: number, value: number): void {
  pio.write(port, Uint8Array.of(value));
}

export function inb(pio: AddressSpace, port: number): number {
  const b = new Uint8Array(1);
  pio.read(port, b);
  return b[0] ?? 0xff;
}
