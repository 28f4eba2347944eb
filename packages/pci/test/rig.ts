/**
 * Test rig: a root bus on a recording device context (@tsvmm/core/testing),
 * a router that records INTx per source, and small PCI functions.
 */
import { createTestDeviceContext, type TestDeviceContext } from '@tsvmm/core/testing';
import type { BusDevice } from '@tsvmm/core';
import { PciBus, PciConfigMechanism1, PciConfigSpace, type PciFunction, type PciIdentity, type PciInterruptRouter } from '../src/index.js';

export class RecordingRouter implements PciInterruptRouter {
  readonly levels = new Map<object, { slot: number; pin: number; level: boolean }>();
  readonly log: { slot: number; pin: number; level: boolean }[] = [];
  setIntx(source: object, slot: number, pin: number, level: boolean): void {
    this.levels.set(source, { slot, pin, level });
    this.log.push({ slot, pin, level });
  }
  /** root slots/pins currently asserted */
  asserted(): { slot: number; pin: number }[] {
    return [...this.levels.values()].filter((l) => l.level).map(({ slot, pin }) => ({ slot, pin }));
  }
}

export interface PciRig {
  t: TestDeviceContext;
  root: PciBus;
  router: RecordingRouter;
  mech: PciConfigMechanism1;
}

export function pciRig(): PciRig {
  const t = createTestDeviceContext();
  const router = new RecordingRouter();
  const root = new PciBus({ name: 'pci.0', hotpluggable: true, platform: { pio: t.ctx.pio, mmio: t.ctx.mmio, notify: t.ctx.notify, intx: router } });
  const mech = new PciConfigMechanism1(root);
  t.ctx.pio.register(0xcf8, 8, mech, 'host');
  return { t, root, router, mech };
}

/** A register file that remembers the last write per offset, for BAR access checks. */
export class RecordingRegisters implements BusDevice {
  readonly writes: { offset: number; data: number[] }[] = [];
  constructor(private readonly fill = 0x5a) {}
  read(offset: number, data: Uint8Array): void {
    data.fill(this.fill);
    data[0] = offset & 0xff;
  }
  write(offset: number, data: Uint8Array): void {
    this.writes.push({ offset, data: [...data] });
  }
}

export class TestFunction implements PciFunction {
  readonly config: PciConfigSpace;
  readonly writes: [number, number][] = [];
  resets = 0;
  constructor(
    readonly id: string,
    identity: Partial<PciIdentity> = {},
  ) {
    this.config = new PciConfigSpace(id, { vendorId: 0x1234, deviceId: 0x5678, classCode: 0x00ff, ...identity });
  }
  configWrite(offset: number, size: number): void {
    this.writes.push([offset, size]);
  }
  pciReset(): void {
    this.resets++;
  }
}
