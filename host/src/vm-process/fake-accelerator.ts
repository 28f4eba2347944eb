/**
 * A test-mode accelerator (selected with TSVMM_TEST_ACCELERATOR=fake) so the
 * control plane can be tested on hosts without usable KVM. Its "guest" is a
 * small script that drives the machine exactly as a real guest does — port
 * accesses through the ExitSink to the real 16550A at COM1 — so console
 * output and input take the same path as with KVM:
 *
 * - on start it prints `fake guest: hello` to COM1;
 * - it enables the UART's receive interrupt and, when IRQ 4 rises, reads
 *   each line typed with console/write from RBR, then runs it as a command:
 *     `crash`     KVM internal error        `triple`   triple fault (KVM_EXIT_SHUTDOWN)
 *     `poweroff`  KVM system event shutdown `reset`    KVM system event reset
 *     `abort`     the VM process aborts     `exit N`   writes N to isa-debug-exit at 0xf4
 *     `tick MS`   prints `tick N` every MS  `spam N`   prints N lines at once
 *   anything else is echoed back as `echo: LINE`.
 *
 * The acceptance tests use the real KVM accelerator; this one exists so the
 * rest of the control plane is testable anywhere.
 */
import { FakeNotifyServices } from '@tsvmm/core/testing';
import { cpuidEntry, vendorRegisters, type Accelerator, type AcceleratorVm, type AcceleratorVmConfig, type CpuEntryState, type CpuidEntry, type ExitSink, type HostCpuSupport } from '@tsvmm/core';

/** KVM_GET_SUPPORTED_CPUID of an imaginary plain 64-bit host (PPro-class leaf 1, SSE3, CX16, LM/NX/SYSCALL). */
const FAKE_SUPPORTED_CPUID: CpuidEntry[] = [
  cpuidEntry(0, 0, { eax: 0xd, ...vendorRegisters('GenuineIntel') }),
  cpuidEntry(1, 0, { eax: 0x000306c3, ecx: 0x80202001, edx: 0x078bfbff }),
  cpuidEntry(0x80000000, 0, { eax: 0x80000008 }),
  cpuidEntry(0x80000001, 0, { ecx: 0x1, edx: 0x20100800 }),
  cpuidEntry(0x80000008, 0, { eax: 0x3028 }),
];

const COM1 = 0x3f8;
const LSR = COM1 + 5;
const LSR_DATA_READY = 0x01;
const DEBUG_EXIT_PORT = 0xf4;
const IER = COM1 + 1;
const IER_RX_AVAILABLE = 0x01;
const COM1_IRQ = 4;

class FakeGuestVm extends FakeNotifyServices implements AcceleratorVm {
  readonly ram;
  private sink: ExitSink | undefined;
  private running = false;
  private ticker: NodeJS.Timeout | undefined;
  private tickMs = 0;
  private ticks = 0;
  private line = '';
  private readonly counts = { pio: 0 };

  constructor(cfg: AcceleratorVmConfig) {
    super();
    this.ram = cfg.ramSlots.map((s) => ({ gpa: s.gpa, size: s.size, buffer: new SharedArrayBuffer(s.size) }));
  }

  setBootEntry(_entry: CpuEntryState): void {}
  setIrq(gsi: number, level: boolean): void {
    // Read from the UART after the device's handler has returned, as an interrupt handler would.
    if (gsi === COM1_IRQ && level && this.running) setImmediate(() => this.pollUart());
  }

  start(sink: ExitSink): void {
    this.sink = sink;
    this.boot();
  }

  async pause(): Promise<void> {
    this.stopRunning();
  }

  resume(): void {
    this.startRunning();
  }

  async reset(): Promise<void> {
    // Hardware reset leaves the vCPUs paused; resume() then boots the guest afresh.
    this.stopRunning();
    this.tickMs = 0;
    this.line = '';
    this.booted = false;
  }

  async stop(): Promise<void> {
    this.stopRunning();
    this.sink = undefined;
  }

  close(): void {}

  exitCounts(): Record<string, number> {
    return { ...this.counts };
  }

  vcpuCpuid(): CpuidEntry[] {
    return [];
  }

  private booted = false;

  private boot(): void {
    this.booted = true;
    this.startRunning();
    this.out(IER, IER_RX_AVAILABLE);
    this.print('fake guest: hello\n');
  }

  private startRunning(): void {
    if (this.sink === undefined || this.running) return;
    if (!this.booted) {
      this.boot();
      return;
    }
    this.running = true;
    // Input arrives by IRQ 4 (setIrq below); an idle fake guest, like a halted real one, wakes nobody.
    this.pollUart();
    if (this.tickMs > 0) this.startTicker();
  }

  private stopRunning(): void {
    this.running = false;
    if (this.ticker !== undefined) clearInterval(this.ticker);
    this.ticker = undefined;
  }

  private startTicker(): void {
    if (this.ticker !== undefined) clearInterval(this.ticker);
    this.ticker = setInterval(() => this.print(`tick ${++this.ticks}\n`), this.tickMs);
  }

  private out(port: number, value: number): void {
    this.counts.pio++;
    this.sink?.pio(port, Uint8Array.of(value), true);
  }

  private in(port: number): number {
    this.counts.pio++;
    const data = new Uint8Array(1);
    this.sink?.pio(port, data, false);
    return data[0] ?? 0xff;
  }

  private print(text: string): void {
    for (const b of new TextEncoder().encode(text)) this.out(COM1, b);
  }

  private pollUart(): void {
    while (this.running && (this.in(LSR) & LSR_DATA_READY) !== 0) {
      const c = this.in(COM1);
      if (c === 0x0a || c === 0x0d) {
        const cmd = this.line.trim();
        this.line = '';
        if (cmd !== '') this.command(cmd);
      } else {
        this.line += String.fromCharCode(c);
      }
    }
  }

  private command(cmd: string): void {
    const sink = this.sink;
    if (sink === undefined) return;
    const [word, arg] = cmd.split(/\s+/, 2);
    const n = Number(arg ?? '0');
    switch (word) {
      case 'crash':
        this.stopRunning();
        sink.event(0, { kind: 'internal-error', suberror: 1, data: [0xdeadn] });
        return;
      case 'triple':
        this.stopRunning();
        sink.event(0, { kind: 'shutdown' });
        return;
      case 'poweroff':
        this.stopRunning();
        sink.event(0, { kind: 'system-event', type: 1, data: [] });
        return;
      case 'reset':
        sink.event(0, { kind: 'system-event', type: 2, data: [] });
        return;
      case 'abort':
        // A VMM bug: the process dies without reporting anything.
        process.abort();
        return;
      case 'exit':
        this.out(DEBUG_EXIT_PORT, n & 0xff);
        return;
      case 'tick':
        this.tickMs = Number.isFinite(n) && n > 0 ? n : 0;
        if (this.tickMs > 0) this.startTicker();
        else if (this.ticker !== undefined) clearInterval(this.ticker);
        return;
      case 'spam':
        for (let i = 0; i < Math.min(n, 100_000); i++) this.print(`spam line ${i}\n`);
        return;
      default:
        this.print(`echo: ${cmd}\n`);
    }
  }
}

export class FakeAccelerator implements Accelerator {
  readonly name = 'fake';
  maxVcpus(): number {
    return 8;
  }
  hostCpuSupport(): HostCpuSupport {
    // A plain 64-bit host: enough for the generic models (qemu64, kvm64) to compose.
    return { supportedCpuid: FAKE_SUPPORTED_CPUID, checkExtension: () => 0 };
  }
  createVm(config: AcceleratorVmConfig): AcceleratorVm {
    return new FakeGuestVm(config);
  }
}
