/**
 * i8042 keyboard controller, device type `i8042` — the controller only, with
 * no keyboard or mouse behind it: enough for guests to probe it, and for the
 * two ways a PC resets itself through it.
 *
 * Spec: the IBM PC/AT keyboard controller interface (8042 status register,
 * controller commands 0x20-0xFF, output port), with the behaviour details of
 * QEMU's hw/input/pckbd.c (the command set, 0xF0-0xFF pulsing output port
 * bits, READ_INPORT = 0x80) and the PS/2 "System Control Port A" at 0x92
 * (bit 0 fast reset, bit 1 A20), which QEMU models as `port92`.
 *
 * Ports: 0x60 data, 0x64 status (read) / command (write), and 0x92 unless
 * `port92=off` (for a chipset that wants to own it).
 *
 * State at power-on is what a guest sees after the BIOS's POST, since we boot
 * kernels without one: the self-test has passed (status SYS flag set) and the
 * command byte is SeaBIOS's (keyboard interrupt, scancode translation, mouse
 * port disabled).
 *
 * Not done: a keyboard or mouse (data written for them is dropped, so a probe
 * times out as with nothing plugged in), IRQ 1/12, and gating A20 — KVM
 * always runs with A20 enabled; the A20 bits read back as written.
 */
import { z } from 'zod';
import {
  checkStateVersion,
  defineDeviceType,
  devicePlugin,
  parseDeviceState,
  prop,
  stateField,
  type BusDevice,
  type BusRange,
  type Device,
  type DeviceContext,
} from '@tsvmm/core';

// --- registers --------------------------------------------------------------------------

export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;
export const PORT92 = 0x92;

/** status register */
export const STATUS_OBF = 0x01; // output buffer full
export const STATUS_IBF = 0x02; // input buffer full: never, commands complete at once
export const STATUS_SYS = 0x04; // system flag: self-test passed
export const STATUS_CMD = 0x08; // the last write went to the command port
export const STATUS_UNLOCKED = 0x10; // keyboard not inhibited (keylock)
export const STATUS_AUX_OBF = 0x20; // the output buffer holds mouse data

/** command byte ("mode") */
const CTR_KBDINT = 0x01;
const CTR_KBDDIS = 0x10;
const CTR_AUXDIS = 0x20;
const CTR_XLATE = 0x40;
/** what SeaBIOS leaves after POST */
const CTR_AFTER_POST = CTR_KBDINT | CTR_AUXDIS | CTR_XLATE;

/** output port */
export const OUTPORT_RESET = 0x01; // 0 holds the CPU in reset
export const OUTPORT_A20 = 0x02;
/** QEMU's power-on value: reset line high, A20 on, the unused lines high */
const OUTPORT_POWER_ON = 0xcf;

/** controller commands */
export const CMD_READ_CTR = 0x20;
export const CMD_WRITE_CTR = 0x60;
const CMD_AUX_DISABLE = 0xa7;
const CMD_AUX_ENABLE = 0xa8;
const CMD_AUX_TEST = 0xa9;
export const CMD_SELF_TEST = 0xaa;
export const CMD_KBD_TEST = 0xab;
export const CMD_KBD_DISABLE = 0xad;
export const CMD_KBD_ENABLE = 0xae;
const CMD_READ_INPORT = 0xc0;
export const CMD_READ_OUTPORT = 0xd0;
export const CMD_WRITE_OUTPORT = 0xd1;
const CMD_WRITE_KBD_OBUF = 0xd2;
const CMD_WRITE_AUX_OBUF = 0xd3;
const CMD_WRITE_AUX = 0xd4;
const CMD_DISABLE_A20 = 0xdd;
const CMD_ENABLE_A20 = 0xdf;
/** 0xF0-0xFF: pulse the output port bits whose command bit is 0 (bit 0 low: reset) */
const CMD_PULSE_OUTPORT = 0xf0;

const SELF_TEST_OK = 0x55;
const INTERFACE_TEST_OK = 0x00;
/** input port: bit 7 = keyboard not inhibited */
const INPORT_VALUE = 0x80;

const PORT92_FAST_RESET = 0x01;
const PORT92_A20 = 0x02;

/** Saved state, version 1: the controller's registers. */
export const I8042_STATE_VERSION = 1;
const i8042StateV1 = z.strictObject({
  status: stateField.u8(),
  commandByte: stateField.u8(),
  outputPort: stateField.u8(),
  outputBuffer: stateField.u8(),
  pendingCommand: stateField.u8(),
  port92: stateField.u8(),
});
export type I8042StateV1 = z.infer<typeof i8042StateV1>;

export interface I8042Properties {
  port92: boolean;
}

export class I8042 implements Device {
  readonly typeName = 'i8042';

  private status = 0;
  private commandByte = 0;
  private outputPort = 0;
  private outputBuffer = 0;
  /** the command waiting for its parameter byte at the data port, or 0 */
  private pendingCommand = 0;
  /** A20 on: SeaBIOS enables it through this port during POST */
  private port92 = PORT92_A20;

  private ctx: DeviceContext | undefined;
  private ranges: BusRange[] = [];

  private readonly dataPort: BusDevice = {
    read: (_offset, data) => void data.fill(this.readData()),
    write: (_offset, data) => this.writeData(data[0] ?? 0),
  };
  private readonly commandPort: BusDevice = {
    read: (_offset, data) => void data.fill(this.status),
    write: (_offset, data) => this.writeCommand(data[0] ?? 0),
  };
  private readonly systemControlPort: BusDevice = {
    read: (_offset, data) => void data.fill(this.port92),
    write: (_offset, data) => this.writePort92(data[0] ?? 0),
  };

  constructor(
    readonly id: string,
    readonly props: I8042Properties,
  ) {
    this.reset();
  }

  realize(ctx: DeviceContext): void {
    this.ctx = ctx;
    this.ranges.push(ctx.pio.register(I8042_DATA_PORT, 1, this.dataPort, this.id));
    this.ranges.push(ctx.pio.register(I8042_COMMAND_PORT, 1, this.commandPort, this.id));
    if (this.props.port92) this.ranges.push(ctx.pio.register(PORT92, 1, this.systemControlPort, this.id));
  }

  unrealize(): void {
    for (const r of this.ranges) this.ctx?.pio.unregister(r);
    this.ranges = [];
    this.ctx = undefined;
  }

  describe(): Record<string, unknown> {
    return { port92: this.props.port92 };
  }

  // --- the access path --------------------------------------------------------------------

  private readData(): number {
    this.status &= ~(STATUS_OBF | STATUS_AUX_OBF);
    // With nothing new, the last byte is read again (as QEMU).
    return this.outputBuffer;
  }

  private writeData(v: number): void {
    this.status &= ~STATUS_CMD;
    const command = this.pendingCommand;
    this.pendingCommand = 0;
    switch (command) {
      case CMD_WRITE_CTR:
        this.commandByte = v;
        return;
      case CMD_WRITE_OUTPORT:
        this.writeOutputPort(v);
        return;
      case CMD_WRITE_KBD_OBUF:
        this.output(v, false);
        return;
      case CMD_WRITE_AUX_OBUF:
        this.output(v, true);
        return;
      default:
        // CMD_WRITE_AUX, or a byte for the keyboard: there is no device to take it.
        return;
    }
  }

  private writeCommand(command: number): void {
    this.status |= STATUS_CMD;
    this.pendingCommand = 0;
    if (command >= CMD_PULSE_OUTPORT) {
      if ((command & OUTPORT_RESET) === 0) this.systemReset(`keyboard controller reset (0x${hex(command)} written to port 0x64)`);
      return;
    }
    switch (command) {
      case CMD_READ_CTR:
        this.output(this.commandByte, false);
        return;
      case CMD_WRITE_CTR:
      case CMD_WRITE_OUTPORT:
      case CMD_WRITE_KBD_OBUF:
      case CMD_WRITE_AUX_OBUF:
      case CMD_WRITE_AUX:
        this.pendingCommand = command;
        return;
      case CMD_AUX_DISABLE:
        this.commandByte |= CTR_AUXDIS;
        return;
      case CMD_AUX_ENABLE:
        this.commandByte &= ~CTR_AUXDIS;
        return;
      case CMD_AUX_TEST:
      case CMD_KBD_TEST:
        this.output(INTERFACE_TEST_OK, false);
        return;
      case CMD_SELF_TEST:
        this.status |= STATUS_SYS;
        this.output(SELF_TEST_OK, false);
        return;
      case CMD_KBD_DISABLE:
        this.commandByte |= CTR_KBDDIS;
        return;
      case CMD_KBD_ENABLE:
        this.commandByte &= ~CTR_KBDDIS;
        return;
      case CMD_READ_INPORT:
        this.output(INPORT_VALUE, false);
        return;
      case CMD_READ_OUTPORT:
        this.output(this.outputPort, false);
        return;
      case CMD_DISABLE_A20:
        this.outputPort &= ~OUTPORT_A20;
        return;
      case CMD_ENABLE_A20:
        this.outputPort |= OUTPORT_A20;
        return;
      default:
        // Reading controller RAM (0x21-0x3f) and vendor commands: not emulated.
        this.ctx?.log.debug(`i8042: command 0x${hex(command)} ignored`, { device: this.id });
        return;
    }
  }

  private writeOutputPort(v: number): void {
    this.outputPort = v;
    // A20 (bit 1) has no effect under KVM. Bit 0 low holds the CPU in reset.
    if ((v & OUTPORT_RESET) === 0) this.systemReset(`keyboard controller reset (output port 0x${hex(v)} written with bit 0 clear)`);
  }

  private writePort92(v: number): void {
    const old = this.port92;
    this.port92 = v;
    // A rising edge on bit 0 resets the machine.
    if (v & PORT92_FAST_RESET && !(old & PORT92_FAST_RESET)) this.systemReset(`fast reset (bit 0 set in port 0x92)`);
  }

  /** Put a byte in the output buffer; a byte not yet read is overwritten (no keyboard queue to hold it). */
  private output(v: number, aux: boolean): void {
    this.outputBuffer = v;
    this.status = (this.status | STATUS_OBF) & ~STATUS_AUX_OBF;
    if (aux) this.status |= STATUS_AUX_OBF;
  }

  private systemReset(reason: string): void {
    this.ctx?.requestReset(reason);
  }

  // --- reset ------------------------------------------------------------------------------

  readonly stateVersion = I8042_STATE_VERSION;

  saveState(): I8042StateV1 {
    return {
      status: this.status,
      commandByte: this.commandByte,
      outputPort: this.outputPort,
      outputBuffer: this.outputBuffer,
      pendingCommand: this.pendingCommand,
      port92: this.port92,
    };
  }

  loadState(version: number, state: unknown): void {
    const subject = `keyboard controller '${this.id}'`;
    checkStateVersion(version, [I8042_STATE_VERSION], subject);
    const s = parseDeviceState(i8042StateV1, state, subject);
    this.status = s.status;
    this.commandByte = s.commandByte;
    this.outputPort = s.outputPort;
    this.outputBuffer = s.outputBuffer;
    this.pendingCommand = s.pendingCommand;
    this.port92 = s.port92;
  }

  reset(): void {
    this.status = STATUS_SYS | STATUS_CMD | STATUS_UNLOCKED;
    this.commandByte = CTR_AFTER_POST;
    this.outputPort = OUTPORT_POWER_ON;
    this.outputBuffer = 0;
    this.pendingCommand = 0;
    // A reset ends the fast-reset pulse; A20 stays as the guest left it (as QEMU's port92).
    this.port92 &= ~PORT92_FAST_RESET;
  }
}

function hex(v: number): string {
  return v.toString(16).padStart(2, '0').toUpperCase();
}

export const i8042 = defineDeviceType({
  name: 'i8042',
  description: 'i8042 keyboard controller (no keyboard): status, command byte, self tests, output port, reset via 0x64 and port 0x92',
  bus: 'isa',
  hotpluggable: false,
  idPrefix: 'i8042',
  properties: z.strictObject({
    /** also serve the PS/2 system control port A at 0x92 */
    port92: prop.bool().default(true),
  }),
  create(id, props) {
    return new I8042(id, props);
  },
});

export default devicePlugin(i8042);
