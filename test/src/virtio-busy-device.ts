/**
 * A test-only device that blocks the VMM's main thread on purpose
 * (`tsvmm-test-busy`, I/O port 0x5f0 by default): a guest write of N blocks
 * the main JS thread for N x 10 ms inside the port handler — no event loop
 * turn, no timers, no messages, nothing else on that thread runs — and the
 * vCPU that wrote waits for it like for any port handler. The virtio
 * iothread test uses it to show that blk I/O on an iothread completes with
 * the main thread unavailable (and, as a control, that it does not without
 * an iothread). Loaded with `--plugin` from the package directory the test
 * writes next to the compiled file; never shipped.
 */
import { z } from 'zod';
import { defineDeviceType, devicePlugin, prop, type BusDevice, type BusRange, type Device, type DeviceContext } from '@tsvmm/core';

const sleeper = new Int32Array(new SharedArrayBuffer(4));

class BusyDevice implements Device, BusDevice {
  readonly typeName = 'tsvmm-test-busy';
  private range: BusRange | undefined;
  private ctx: DeviceContext | undefined;
  private spins = 0;

  constructor(
    readonly id: string,
    private readonly iobase: number,
  ) {}

  realize(ctx: DeviceContext): void {
    this.ctx = ctx;
    this.range = ctx.pio.register(this.iobase, 2, this, this.id);
  }

  unrealize(): void {
    if (this.range !== undefined) this.ctx?.pio.unregister(this.range);
    this.range = undefined;
  }

  reset(): void {}

  describe(): Record<string, unknown> {
    return { iobase: this.iobase, spins: this.spins };
  }

  read(_offset: number, data: Uint8Array): void {
    data.fill(this.spins & 0xff);
  }

  write(_offset: number, data: Uint8Array): void {
    let n = 0;
    for (let i = data.length - 1; i >= 0; i--) n = n * 256 + (data[i] ?? 0);
    this.spins++;
    // Atomics.wait blocks this thread outright (Node allows it on the main thread).
    Atomics.wait(sleeper, 0, 0, n * 10);
  }
}

export default devicePlugin(
  defineDeviceType({
    name: 'tsvmm-test-busy',
    description: 'test only: a port write of N blocks the main thread for N x 10 ms',
    bus: 'isa',
    hotpluggable: false,
    properties: z.strictObject({ iobase: prop.int(0, 0xfffe).default(0x5f0) }),
    create: (id, props) => new BusyDevice(id, props.iobase),
  }),
);
