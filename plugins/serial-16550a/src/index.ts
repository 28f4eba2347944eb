/**
 * 16550A UART, device type `isa-serial`.
 *
 * Spec: National Semiconductor PC16550D "Universal Asynchronous
 * Receiver/Transmitter with FIFOs" (June 1995): Table II (register summary),
 * Table IV (interrupt control functions), Table V (reset configuration) and
 * section 8.6 (FIFO interrupt mode). PC port assignments COM1-COM4 follow
 * QEMU's isa-serial: 0x3f8/IRQ4, 0x2f8/IRQ3, 0x3e8/IRQ4, 0x2e8/IRQ3.
 *
 * Where a VMM departs from the chip, and why:
 * - There is no line. A byte written to THR goes to the chardev at once, so
 *   THRE and TEMT read as set, and the THRE interrupt re-arms right after each
 *   write, as the chip does once the byte has left. The transmit FIFO, the
 *   line settings and the divisor latch are kept for the guest to read back,
 *   nothing more.
 * - Receive: host input is buffered in the device (at most HOST_INPUT_LIMIT
 *   bytes) and moved into the receive FIFO (16 bytes with FCR0 set, the 1-byte
 *   holding register without) only while there is room, so a guest that reads
 *   slowly loses nothing. While input waits, the backend is told to stop
 *   reading (Chardev.setInputPaused, QEMU's chr_can_read: stdin leaves the
 *   rest in its pipe) until the guest has taken it; input beyond the bound
 *   from a backend that cannot wait is dropped with a warning.
 * - Character timeout (IIR 0xCC): the chip reports it after four character
 *   times without FIFO activity. Without line timing the device reports it as
 *   soon as the FIFO holds data below the trigger level — by then every byte
 *   the host had sent is already in the FIFO, i.e. the line is idle.
 * - The modem inputs look like a connected modem (CTS, DSR, DCD asserted, RI
 *   idle), as in QEMU; in loopback (MCR4) they follow MCR as the datasheet says.
 * - OUT2 does not gate the interrupt (on a PC board it does); QEMU does not
 *   gate it either, and the differential tests compare against QEMU.
 * - Parity, framing and break never happen; the only line status error is
 *   overrun, and only loopback can cause it (host input waits for room).
 *
 * Output is written to the chardev one byte per THR write, synchronously, so
 * it is ordered with whatever the guest does next (isa-debug-exit ends the
 * process right after the last byte of a test). Coalescing belongs in a
 * backend that needs it (an RPC backend batching `console/output`
 * notifications), which can flush on its own schedule and on exit.
 */
import { z } from 'zod';
import {
  checkStateVersion,
  ConfigError,
  defineDeviceType,
  devicePlugin,
  nullLogger,
  parseDeviceState,
  prop,
  stateField,
  type BusDevice,
  type BusRange,
  type Chardev,
  type Device,
  type DeviceContext,
  type IrqLine,
  type Logger,
} from '@tsvmm/core';

// --- registers (Table II); offsets from the base, DLAB = LCR bit 7 -------------------

const RBR_THR_DLL = 0; // read: receiver buffer; write: transmitter holding; DLAB=1: divisor LSB
const IER_DLM = 1; // interrupt enable; DLAB=1: divisor MSB
const IIR_FCR = 2; // read: interrupt identification; write: FIFO control
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;
const REGISTER_COUNT = 8;

const IER_ERBFI = 0x01; // received data available (and character timeout)
const IER_ETBEI = 0x02; // transmitter holding register empty
const IER_ELSI = 0x04; // receiver line status
const IER_EDSSI = 0x08; // modem status
const IER_MASK = 0x0f; // bits 4-7 are always 0

/** IIR bits 0-3 (Table IV), highest priority first. */
export const IIR_NO_INTERRUPT = 0x01;
export const IIR_RECEIVER_LINE_STATUS = 0x06;
export const IIR_RECEIVED_DATA = 0x04;
export const IIR_CHARACTER_TIMEOUT = 0x0c;
export const IIR_THR_EMPTY = 0x02;
export const IIR_MODEM_STATUS = 0x00;
/** IIR bits 6-7 are set while FCR0 is set. */
export const IIR_FIFOS_ENABLED = 0xc0;

const FCR_FIFO_ENABLE = 0x01;
const FCR_RCVR_FIFO_RESET = 0x02;
const FCR_DMA_MODE = 0x08;
const FCR_RCVR_TRIGGER = 0xc0;
/** Receiver FIFO trigger level by FCR bits 7-6. */
const RCVR_TRIGGER_LEVELS = [1, 4, 8, 14] as const;

const LCR_DLAB = 0x80;

const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const MCR_MASK = 0x1f; // bits 5-7 are always 0

export const LSR_DR = 0x01;
export const LSR_OE = 0x02;
const LSR_PE = 0x04;
const LSR_FE = 0x08;
const LSR_BI = 0x10;
export const LSR_THRE = 0x20;
export const LSR_TEMT = 0x40;
const LSR_ERRORS = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const MSR_DELTAS = 0x0f;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;
/** A host connection: a modem that is ready and has a carrier. */
const MSR_HOST_CONNECTED = MSR_CTS | MSR_DSR | MSR_DCD;

export const FIFO_SIZE = 16;
/** Host input held back while the receive FIFO is full. */
export const HOST_INPUT_LIMIT = 64 * 1024;
/** 9600 baud with the PC's 1.8432 MHz clock; the datasheet leaves the latch undefined at reset. */
const DEFAULT_DIVISOR = 0x0c;

/** COM1-COM4 (`index` 0-3). */
const COM_PORTS = [
  { iobase: 0x3f8, irq: 4 },
  { iobase: 0x2f8, irq: 3 },
  { iobase: 0x3e8, irq: 4 },
  { iobase: 0x2e8, irq: 3 },
] as const;

/**
 * Saved state, version 1 (migration and snapshots): the registers, the
 * receive FIFO in order, and host input not yet in the FIFO (it was sent to
 * the guest already, so it travels with the device).
 */
export const SERIAL_STATE_VERSION = 1;
const serialStateV1 = z.strictObject({
  ier: stateField.u8(),
  lcr: stateField.u8(),
  mcr: stateField.u8(),
  fcr: stateField.u8(),
  scr: stateField.u8(),
  dll: stateField.u8(),
  dlm: stateField.u8(),
  lineStatusErrors: stateField.u8(),
  msr: stateField.u8(),
  thrEmptyInterrupt: stateField.bool(),
  rbr: stateField.u8(),
  rx: stateField.bytes(FIFO_SIZE),
  hostInput: stateField.bytes(HOST_INPUT_LIMIT),
});
export type SerialStateV1 = z.infer<typeof serialStateV1>;

export interface SerialProperties {
  index: number;
  iobase: number;
  irq: number;
  chardev: string | undefined;
}

export class Uart16550a implements Device, BusDevice {
  readonly typeName = 'isa-serial';

  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private fcr = 0;
  private scr = 0;
  private dll = DEFAULT_DIVISOR;
  private dlm = 0;
  /** LSR bits 1-4, cleared by reading LSR */
  private lineStatusErrors = 0;
  private msr = MSR_HOST_CONNECTED;
  /** the THRE interrupt condition: set when THR empties, cleared by an IIR read that reports it or a THR write */
  private thrEmptyInterrupt = false;

  /** receive FIFO (a ring); capacity 1 (the holding register) while FIFOs are disabled */
  private readonly rxFifo = new Uint8Array(FIFO_SIZE);
  private rxHead = 0;
  private rxCount = 0;
  /** the last byte moved out of the receiver, returned again by a read with nothing new */
  private rbr = 0;

  /** host input waiting for room in the receive FIFO (a ring) */
  private readonly hostInput = new Uint8Array(HOST_INPUT_LIMIT);
  private hostHead = 0;
  private hostCount = 0;
  private droppedInput = 0;
  /** the last write to the chardev failed (warn once per run of failures) */
  private outputFailed = false;

  private range: BusRange | undefined;
  private ctx: DeviceContext | undefined;
  private irqLine: IrqLine | undefined;
  private backend: Chardev | undefined;
  private log: Logger = nullLogger;

  constructor(
    readonly id: string,
    readonly props: SerialProperties,
  ) {}

  // --- lifecycle ------------------------------------------------------------------------

  realize(ctx: DeviceContext): void {
    const { chardev } = this.props;
    if (chardev !== undefined) {
      this.backend = ctx.chardev(chardev);
      if (this.backend === undefined) {
        throw new ConfigError(`serial port '${this.id}': no chardev with id '${chardev}'`, {
          hint: 'name a chardev created with --serial (serial0, serial1, ...) or leave chardev= out',
        });
      }
    }
    this.range = ctx.pio.register(this.props.iobase, REGISTER_COUNT, this, this.id);
    this.ctx = ctx;
    this.log = ctx.log;
    this.irqLine = ctx.irq(this.props.irq);
    this.backend?.setInputListener((data) => this.receiveFromHost(data));
  }

  unrealize(): void {
    this.backend?.setInputListener(undefined);
    this.backend = undefined;
    this.irqLine?.lower();
    this.irqLine = undefined;
    if (this.range !== undefined) this.ctx?.pio.unregister(this.range);
    this.range = undefined;
    this.ctx = undefined;
  }

  describe(): Record<string, unknown> {
    return { index: this.props.index, iobase: this.props.iobase, irq: this.props.irq, chardev: this.props.chardev ?? null };
  }

  /** Bytes in the receive FIFO (for status and tests). */
  get receiveFifoLevel(): number {
    return this.rxCount;
  }

  /** Host bytes waiting for room in the receive FIFO. */
  get pendingHostInput(): number {
    return this.hostCount;
  }

  // --- the access path ------------------------------------------------------------------

  read(offset: number, data: Uint8Array): void {
    // Port I/O wider than a byte touches consecutive registers, as on an 8-bit ISA card.
    for (let i = 0; i < data.length; i++) data[i] = this.readRegister(offset + i);
  }

  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) this.writeRegister(offset + i, data[i] ?? 0);
  }

  private readRegister(reg: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (reg) {
      case RBR_THR_DLL:
        return dlab ? this.dll : this.readReceiverBuffer();
      case IER_DLM:
        return dlab ? this.dlm : this.ier;
      case IIR_FCR:
        return this.readInterruptIdentification();
      case LCR:
        return this.lcr;
      case MCR:
        return this.mcr;
      case LSR:
        return this.readLineStatus();
      case MSR:
        return this.readModemStatus();
      case SCR:
        return this.scr;
      default:
        return 0xff;
    }
  }

  private writeRegister(reg: number, value: number): void {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (reg) {
      case RBR_THR_DLL:
        if (dlab) this.dll = value;
        else this.transmit(value);
        return;
      case IER_DLM:
        if (dlab) this.dlm = value;
        else this.writeInterruptEnable(value);
        return;
      case IIR_FCR:
        this.writeFifoControl(value);
        return;
      case LCR:
        this.lcr = value;
        return;
      case MCR:
        this.writeModemControl(value);
        return;
      case SCR:
        this.scr = value;
        return;
      default:
        // LSR and MSR are read-only ("factory test" writes are not emulated)
        return;
    }
  }

  private readReceiverBuffer(): number {
    if (this.rxCount > 0) {
      this.rbr = this.rxFifo[this.rxHead] ?? 0;
      this.rxHead = (this.rxHead + 1) % FIFO_SIZE;
      this.rxCount--;
      this.pumpHostInput();
      this.updateInterrupt();
      return this.rbr;
    }
    // An empty FIFO reads 0 (as QEMU); the 16450 holding register keeps its last byte.
    return this.fifosEnabled ? 0 : this.rbr;
  }

  private readInterruptIdentification(): number {
    const id = this.pendingInterrupt();
    if (id === IIR_THR_EMPTY) {
      // Reading IIR while it reports THRE clears that interrupt (Table IV).
      this.thrEmptyInterrupt = false;
      this.updateInterrupt();
    }
    return id | (this.fifosEnabled ? IIR_FIFOS_ENABLED : 0);
  }

  private readLineStatus(): number {
    const value = (this.rxCount > 0 ? LSR_DR : 0) | this.lineStatusErrors | LSR_THRE | LSR_TEMT;
    if (this.lineStatusErrors !== 0) {
      this.lineStatusErrors = 0;
      this.updateInterrupt();
    }
    return value;
  }

  private readModemStatus(): number {
    const value = this.msr;
    if ((this.msr & MSR_DELTAS) !== 0) {
      this.msr &= ~MSR_DELTAS;
      this.updateInterrupt();
    }
    return value;
  }

  private transmit(value: number): void {
    // Writing THR clears the THRE interrupt; the byte leaves at once and THR is
    // empty again, which raises it anew — a fresh edge for the guest's PIC.
    this.thrEmptyInterrupt = false;
    this.updateInterrupt();
    if (this.loopback) this.receiveByte(value);
    else this.sendToHost(value);
    this.thrEmptyInterrupt = true;
    this.updateInterrupt();
  }

  /** A host that cannot take output (a closed pipe) loses it; the guest must not be able to stop the VMM that way. */
  private sendToHost(value: number): void {
    if (this.backend === undefined) return;
    try {
      this.backend.write(Uint8Array.of(value));
      this.outputFailed = false;
    } catch (err) {
      if (!this.outputFailed) {
        this.log.warn(`serial port '${this.id}': output to chardev '${this.backend.id}' failed; dropping it`, { error: (err as Error).message });
      }
      this.outputFailed = true;
    }
  }

  private writeInterruptEnable(value: number): void {
    const enablingThrEmpty = (value & IER_ETBEI) !== 0 && (this.ier & IER_ETBEI) === 0;
    this.ier = value & IER_MASK;
    // The chip interrupts as soon as ETBEI is set while THR is empty — and THR always is.
    if (enablingThrEmpty) this.thrEmptyInterrupt = true;
    this.updateInterrupt();
  }

  private writeFifoControl(value: number): void {
    const enable = (value & FCR_FIFO_ENABLE) !== 0;
    // Switching between FIFO and 16450 mode empties the FIFOs; with FCR0 clear
    // no other FCR bit is programmed (section 8.4).
    if (enable !== this.fifosEnabled) this.clearReceiver();
    if (!enable) {
      this.fcr = 0;
    } else {
      if ((value & FCR_RCVR_FIFO_RESET) !== 0) this.clearReceiver();
      // Bit 2 (XMIT FIFO reset) has nothing to do: the transmit FIFO is always empty.
      this.fcr = value & (FCR_FIFO_ENABLE | FCR_DMA_MODE | FCR_RCVR_TRIGGER);
    }
    this.pumpHostInput();
    this.updateInterrupt();
  }

  private writeModemControl(value: number): void {
    const wasLoopback = this.loopback;
    this.mcr = value & MCR_MASK;
    this.setModemInputs(this.modemInputs());
    // Leaving loopback reconnects the receiver to the host.
    if (wasLoopback && !this.loopback) this.pumpHostInput();
    this.updateInterrupt();
  }

  // --- receiver ---------------------------------------------------------------------------

  /** Chardev input: buffer it, then fill the FIFO as far as it has room. */
  private receiveFromHost(data: Uint8Array): void {
    const room = HOST_INPUT_LIMIT - this.hostCount;
    const n = Math.min(room, data.length);
    for (let i = 0; i < n; i++) {
      this.hostInput[(this.hostHead + this.hostCount) % HOST_INPUT_LIMIT] = data[i] ?? 0;
      this.hostCount++;
    }
    // a backend that can wait stops reading while input waits here (stdin: the pipe fills)
    if (this.hostCount > 0) this.backend?.setInputPaused?.(true);
    if (n < data.length) {
      if (this.droppedInput === 0) {
        this.log.warn(`serial port '${this.id}': guest is not reading; dropping host input beyond ${HOST_INPUT_LIMIT} buffered bytes`);
      }
      this.droppedInput += data.length - n;
    } else {
      this.droppedInput = 0;
    }
    this.pumpHostInput();
    this.updateInterrupt();
  }

  /** Move waiting host input into the receiver while it has room (the receiver is disconnected in loopback). */
  private pumpHostInput(): void {
    if (this.loopback) return;
    const capacity = this.receiverCapacity;
    const had = this.hostCount;
    while (this.hostCount > 0 && this.rxCount < capacity) {
      this.pushReceived(this.hostInput[this.hostHead] ?? 0);
      this.hostHead = (this.hostHead + 1) % HOST_INPUT_LIMIT;
      this.hostCount--;
    }
    if (had > 0 && this.hostCount === 0) this.backend?.setInputPaused?.(false);
  }

  /** A byte arriving from the (loopback) serial input, which cannot wait. */
  private receiveByte(value: number): void {
    if (this.rxCount < this.receiverCapacity) {
      this.pushReceived(value);
      return;
    }
    this.lineStatusErrors |= LSR_OE;
    // 16450 mode: the new character overwrites the holding register. FIFO mode:
    // the FIFO keeps its contents and the character in the shift register is lost.
    if (!this.fifosEnabled) this.rxFifo[this.rxHead] = value;
  }

  private pushReceived(value: number): void {
    this.rxFifo[(this.rxHead + this.rxCount) % FIFO_SIZE] = value;
    this.rxCount++;
  }

  private clearReceiver(): void {
    this.rxHead = 0;
    this.rxCount = 0;
  }

  private get receiverCapacity(): number {
    return this.fifosEnabled ? FIFO_SIZE : 1;
  }

  private get fifosEnabled(): boolean {
    return (this.fcr & FCR_FIFO_ENABLE) !== 0;
  }

  private get loopback(): boolean {
    return (this.mcr & MCR_LOOP) !== 0;
  }

  // --- modem status -----------------------------------------------------------------------

  /** MSR bits 4-7: the host connection, or in loopback MCR's outputs wired back (section 8.7). */
  private modemInputs(): number {
    if (!this.loopback) return MSR_HOST_CONNECTED;
    const m = this.mcr;
    return (
      (m & MCR_RTS ? MSR_CTS : 0) | (m & MCR_DTR ? MSR_DSR : 0) | (m & MCR_OUT1 ? MSR_RI : 0) | (m & MCR_OUT2 ? MSR_DCD : 0)
    );
  }

  private setModemInputs(inputs: number): void {
    const old = this.msr;
    const changed = (old ^ inputs) & 0xf0;
    let deltas = old & MSR_DELTAS;
    if (changed & MSR_CTS) deltas |= MSR_DCTS;
    if (changed & MSR_DSR) deltas |= MSR_DDSR;
    if (changed & MSR_DCD) deltas |= MSR_DDCD;
    // TERI flags the trailing edge of RI only.
    if (old & MSR_RI && !(inputs & MSR_RI)) deltas |= MSR_TERI;
    this.msr = inputs | deltas;
  }

  // --- interrupts (Table IV) --------------------------------------------------------------

  /** The highest-priority pending interrupt as IIR bits 0-3. */
  private pendingInterrupt(): number {
    if (this.ier & IER_ELSI && this.lineStatusErrors & LSR_ERRORS) return IIR_RECEIVER_LINE_STATUS;
    if (this.ier & IER_ERBFI && this.rxCount > 0) {
      if (!this.fifosEnabled) return IIR_RECEIVED_DATA;
      const trigger = RCVR_TRIGGER_LEVELS[(this.fcr & FCR_RCVR_TRIGGER) >> 6] ?? 1;
      return this.rxCount >= trigger ? IIR_RECEIVED_DATA : IIR_CHARACTER_TIMEOUT;
    }
    if (this.ier & IER_ETBEI && this.thrEmptyInterrupt) return IIR_THR_EMPTY;
    if (this.ier & IER_EDSSI && this.msr & MSR_DELTAS) return IIR_MODEM_STATUS;
    return IIR_NO_INTERRUPT;
  }

  /** INTR is a level: high while any enabled interrupt is pending. */
  private updateInterrupt(): void {
    this.irqLine?.set(this.pendingInterrupt() !== IIR_NO_INTERRUPT);
  }

  // --- persistence -------------------------------------------------------------------------

  readonly stateVersion = SERIAL_STATE_VERSION;

  saveState(): SerialStateV1 {
    const rx = new Uint8Array(this.rxCount);
    for (let i = 0; i < this.rxCount; i++) rx[i] = this.rxFifo[(this.rxHead + i) % FIFO_SIZE] ?? 0;
    const hostInput = new Uint8Array(this.hostCount);
    for (let i = 0; i < this.hostCount; i++) hostInput[i] = this.hostInput[(this.hostHead + i) % HOST_INPUT_LIMIT] ?? 0;
    return {
      ier: this.ier,
      lcr: this.lcr,
      mcr: this.mcr,
      fcr: this.fcr,
      scr: this.scr,
      dll: this.dll,
      dlm: this.dlm,
      lineStatusErrors: this.lineStatusErrors,
      msr: this.msr,
      thrEmptyInterrupt: this.thrEmptyInterrupt,
      rbr: this.rbr,
      rx,
      hostInput,
    };
  }

  loadState(version: number, state: unknown): void {
    const subject = `serial port '${this.id}'`;
    checkStateVersion(version, [SERIAL_STATE_VERSION], subject);
    const s = parseDeviceState(serialStateV1, state, subject);
    this.ier = s.ier & IER_MASK;
    this.lcr = s.lcr;
    this.mcr = s.mcr & MCR_MASK;
    this.fcr = s.fcr & (FCR_FIFO_ENABLE | FCR_DMA_MODE | FCR_RCVR_TRIGGER);
    this.scr = s.scr;
    this.dll = s.dll;
    this.dlm = s.dlm;
    this.lineStatusErrors = s.lineStatusErrors & LSR_ERRORS;
    this.msr = s.msr;
    this.thrEmptyInterrupt = s.thrEmptyInterrupt;
    this.rbr = s.rbr;
    if (s.rx.length > this.receiverCapacity) throw new ConfigError(`${subject}: saved receive FIFO holds ${s.rx.length} bytes, more than its mode allows`);
    this.rxFifo.set(s.rx);
    this.rxHead = 0;
    this.rxCount = s.rx.length;
    this.hostInput.set(s.hostInput);
    this.hostHead = 0;
    this.hostCount = s.hostInput.length;
    this.updateInterrupt();
  }

  // --- reset (Table V) --------------------------------------------------------------------

  reset(): void {
    this.ier = 0;
    this.lcr = 0;
    this.mcr = 0;
    this.fcr = 0;
    this.scr = 0;
    this.dll = DEFAULT_DIVISOR;
    this.dlm = 0;
    this.lineStatusErrors = 0;
    this.msr = MSR_HOST_CONNECTED;
    this.thrEmptyInterrupt = false;
    this.clearReceiver();
    this.rbr = 0;
    // Host input still waiting is the host's, not the chip's: it survives the reset.
    this.pumpHostInput();
    this.updateInterrupt();
  }
}

// --- device type ------------------------------------------------------------------------

export const isaSerial = defineDeviceType({
  name: 'isa-serial',
  description: '16550A UART on the ISA bus (COM1-COM4)',
  bus: 'isa',
  hotpluggable: false,
  idPrefix: 'serial',
  properties: z.strictObject({
    /** 0-3: COM1-COM4, which sets the iobase and irq defaults */
    index: prop.int(0, COM_PORTS.length - 1).optional(),
    iobase: prop.int(0, 0x10000 - REGISTER_COUNT).optional(),
    irq: prop.int(0, 15).optional(),
    /** id of the chardev to attach (serial0, ...); none: output is discarded */
    chardev: prop.str().optional(),
  }),
  create(id, props) {
    const index = props.index ?? 0;
    const com = COM_PORTS[index] ?? COM_PORTS[0];
    return new Uart16550a(id, {
      index,
      iobase: props.iobase ?? com.iobase,
      irq: props.irq ?? com.irq,
      chardev: props.chardev,
    });
  },
});

export default devicePlugin(isaSerial);
