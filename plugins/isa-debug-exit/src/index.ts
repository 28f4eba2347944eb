/**
 * isa-debug-exit: a port that ends the VMM process when the guest writes it.
 *
 * Behaviour as QEMU's hw/misc/debugexit.c: properties `iobase` (default 0x501)
 * and `iosize` (default 2); a write of value v, of any access size (1, 2 or 4)
 * at any offset in the range, exits with status (v << 1) | 1. Test guests use
 * it to report a result as the VMM's exit status; the odd status keeps it
 * apart from a clean shutdown (0). Reads are not decoded, so they return all
 * ones like an unclaimed ISA port.
 *
 * C's exit() takes an int and the OS keeps its low 8 bits, so QEMU's process
 * status is ((v << 1) | 1) & 0xff; that is what we hand to requestExit, and
 * the reason names the value the guest wrote.
 */
import { z } from 'zod';
import {
  checkStateVersion,
  defineDeviceType,
  devicePlugin,
  prop,
  type BusDevice,
  type BusRange,
  type Device,
  type DeviceContext,
} from '@tsvmm/core';

export interface DebugExitProperties {
  iobase: number;
  iosize: number;
}

export class IsaDebugExit implements Device, BusDevice {
  readonly typeName = 'isa-debug-exit';
  private range: BusRange | undefined;
  private ctx: DeviceContext | undefined;

  constructor(
    readonly id: string,
    readonly props: DebugExitProperties,
  ) {}

  realize(ctx: DeviceContext): void {
    this.range = ctx.pio.register(this.props.iobase, this.props.iosize, this, this.id);
    this.ctx = ctx;
  }

  unrealize(): void {
    if (this.range !== undefined) this.ctx?.pio.unregister(this.range);
    this.range = undefined;
    this.ctx = undefined;
  }

  describe(): Record<string, unknown> {
    return { iobase: this.props.iobase, iosize: this.props.iosize };
  }

  read(_offset: number, data: Uint8Array): void {
    data.fill(0xff);
  }

  write(offset: number, data: Uint8Array): void {
    // little-endian value of the access, whatever its width
    let value = 0;
    for (let i = data.length - 1; i >= 0; i--) value = value * 256 + (data[i] ?? 0);
    const status = ((value * 2) % 256) | 1;
    const port = this.props.iobase + offset;
    this.ctx?.requestExit(
      status,
      `guest wrote 0x${value.toString(16)} to isa-debug-exit port 0x${port.toString(16)} (exit status ${status})`,
    );
  }

  /** Nothing to reset: the device has no state. */
  reset(): void {}

  // Persistence: no state, but a version, so migration knows it was not forgotten.
  readonly stateVersion = 1;

  saveState(): Record<string, never> {
    return {};
  }

  loadState(version: number): void {
    checkStateVersion(version, [1], `isa-debug-exit '${this.id}'`);
  }
}

export const isaDebugExit = defineDeviceType({
  name: 'isa-debug-exit',
  description: 'exits the VMM with status (v<<1)|1 when the guest writes v to its port (QEMU semantics)',
  bus: 'isa',
  hotpluggable: false,
  idPrefix: 'debugexit',
  properties: z
    .strictObject({
      iobase: prop.int(0, 0xffff).default(0x501),
      iosize: prop.int(1, 0x10000).default(0x02),
    })
    .refine((p) => p.iobase + p.iosize <= 0x10000, { error: 'iobase + iosize must not pass the end of the I/O port space (0xffff)', path: ['iosize'] }),
  create(id, props) {
    return new IsaDebugExit(id, props);
  },
});

export default devicePlugin(isaDebugExit);
