/**
 * pci-testdev: QEMU's PCI test device, for low-level I/O tests and for
 * filling buses (QEMU docs/specs/pci-testdev.rst; behaviour as
 * hw/misc/pci-testdev.c).
 *
 * Identity 1b36:0005, revision 0, class 0x00ff, no interrupt pin.
 * BAR0: 4 KiB memory, BAR1: 256 bytes I/O, BAR2 (only with `membar=SIZE`): a
 * 64-bit prefetchable memory BAR with nothing behind it.
 *
 * BAR0 and BAR1 each start with the test header (all little-endian):
 *
 *     0  u8  test        write: start test N of this BAR's kind
 *     1  u8  width       1: tests use byte writes
 *     4  u32 offset      where in this BAR the test writes go
 *     8  u8  data        the byte to write (0xFA; 0xCE for the wildcard test)
 *     12 u32 count       writes the device saw
 *     16     name        "mmio-no-eventfd", "portio-datamatch-eventfd", ...
 *
 * Tests 0-2 on each BAR: no-eventfd (the device counts every matching
 * write), wildcard-eventfd (an ioeventfd on any write to `offset`) and
 * datamatch-eventfd (an ioeventfd on a write of `data`). With an ioeventfd
 * KVM swallows the writes, so `count` stays 0 — that is how a guest tells
 * the ioeventfd worked (kvm-unit-tests' pci-testdev test). The ioeventfds are
 * assigned at the BAR's current address through ctx.notify and follow the
 * BAR if the guest moves it; hits are counted host-side (describe()).
 *
 * Access widths: the device model takes single bytes (QEMU splits wider
 * accesses), so a 4-byte read returns four header bytes and a 4-byte write
 * is four byte writes.
 */
import { z } from 'zod';
import {
  checkStateVersion,
  defineDeviceType,
  devicePlugin,
  parseDeviceState,
  parseIntLike,
  parseSize,
  prop,
  stateField,
  type BusDevice,
  type Device,
  type DeviceContext,
  type EventNotifier,
  type Unregister,
} from '@tsvmm/core';
import {
  PCI_VENDOR_ID_REDHAT,
  PciConfigSpace,
  isPowerOfTwo,
  loadPciFunctionState,
  pciBusFor,
  pciDeviceProperties,
  savePciFunctionState,
  type PciAttachment,
  type PciBar,
  type PciFunction,
} from '@tsvmm/pci';

export const PCI_DEVICE_ID_REDHAT_TEST = 0x0005;
export const PCI_CLASS_OTHERS = 0x00ff;
export const IOTEST_DATAMATCH = 0xfa;
export const IOTEST_NOMATCH = 0xce;
export const IOTEST_IOSIZE = 128;
export const IOTEST_MEMSIZE = 2048;
const TESTS = ['no-eventfd', 'wildcard-eventfd', 'datamatch-eventfd'] as const;
const TYPES = ['mmio', 'portio'] as const;
type IoType = 0 | 1;
/** header layout */
const HDR_TEST = 0;
const HDR_WIDTH = 1;
const HDR_OFFSET = 4;
const HDR_DATA = 8;
const HDR_COUNT = 12;
const HDR_NAME = 16;

export interface PciTestdevProperties {
  bus?: string | undefined;
  addr?: string | number | undefined;
  multifunction: boolean;
  membar: number;
}

interface IoTest {
  name: string;
  hdr: Uint8Array;
  /** BAR offset the test writes to */
  offset: number;
  data: number;
  matchData: boolean;
  hasNotifier: boolean;
  type: IoType;
  notifier: EventNotifier | undefined;
  unassign: Unregister | undefined;
}

export class PciTestdev implements Device, PciFunction {
  readonly typeName = 'pci-testdev';
  readonly config: PciConfigSpace;
  private readonly tests: IoTest[] = [];
  private current = -1;
  private attachment: PciAttachment | undefined;
  private readonly mmioBar: PciBar;
  private readonly portioBar: PciBar;
  private ioeventfdHits = 0n;

  constructor(
    readonly id: string,
    readonly props: PciTestdevProperties,
  ) {
    this.config = new PciConfigSpace(id, {
      vendorId: PCI_VENDOR_ID_REDHAT,
      deviceId: PCI_DEVICE_ID_REDHAT_TEST,
      classCode: PCI_CLASS_OTHERS,
      multifunction: props.multifunction,
    });
    this.mmioBar = this.config.defineBar(0, { kind: 'mem32', size: IOTEST_MEMSIZE * 2, handler: this.handler(0), name: 'pci-testdev-mmio' });
    this.portioBar = this.config.defineBar(1, { kind: 'io', size: IOTEST_IOSIZE * 2, handler: this.handler(1), name: 'pci-testdev-portio' });
    if (props.membar > 0) this.config.defineBar(2, { kind: 'mem64', prefetchable: true, size: props.membar, name: 'pci-testdev-membar' });
    for (let i = 0; i < TESTS.length * TYPES.length; i++) {
      const type = Math.floor(i / TESTS.length) as IoType;
      const kind = TESTS[i % TESTS.length] as (typeof TESTS)[number];
      const name = `${TYPES[type]}-${kind}`;
      const hdr = new Uint8Array(HDR_NAME + name.length + 1);
      const dv = new DataView(hdr.buffer);
      const matchData = kind !== 'wildcard-eventfd';
      const offset = (type === 0 ? IOTEST_MEMSIZE : IOTEST_IOSIZE) + i;
      hdr[HDR_TEST] = i;
      hdr[HDR_WIDTH] = 1;
      dv.setUint32(HDR_OFFSET, offset, true);
      hdr[HDR_DATA] = matchData ? IOTEST_DATAMATCH : IOTEST_NOMATCH;
      hdr.set(new TextEncoder().encode(name), HDR_NAME);
      this.tests.push({ name, hdr, offset, data: hdr[HDR_DATA] as number, matchData, hasNotifier: kind !== 'no-eventfd', type, notifier: undefined, unassign: undefined });
    }
  }

  realize(ctx: DeviceContext): void {
    for (const t of this.tests) if (t.hasNotifier) t.notifier = ctx.notify.createNotifier();
    this.attachment = pciBusFor(ctx, this.props.bus, this.id).attach(this, this.props.addr !== undefined ? { addr: this.props.addr } : {});
  }

  unrealize(): void {
    this.stopCurrent();
    this.attachment?.detach();
    this.attachment = undefined;
    for (const t of this.tests) {
      t.notifier?.close();
      t.notifier = undefined;
    }
  }

  reset(): void {
    this.stopCurrent();
  }

  /** Saved state, version 1: the function, the selected test and the test header counters. */
  readonly stateVersion = 1;

  saveState(): unknown {
    return { pci: savePciFunctionState(this, { attachment: this.attachment }), current: this.current, counts: this.tests.map((t) => new DataView(t.hdr.buffer).getUint32(HDR_COUNT, true)) };
  }

  loadState(version: number, state: unknown): void {
    const subject = `pci-testdev '${this.id}'`;
    checkStateVersion(version, [1], subject);
    const s = parseDeviceState(
      z.strictObject({ pci: z.unknown(), current: stateField.int(-1, this.tests.length - 1), counts: z.array(stateField.u32()).length(this.tests.length) }),
      state,
      subject,
    );
    loadPciFunctionState(this, s.pci, { attachment: this.attachment }, subject);
    this.stopCurrent();
    if (s.current >= 0) this.start(s.current);
    this.tests.forEach((t, i) => new DataView(t.hdr.buffer).setUint32(HDR_COUNT, s.counts[i] ?? 0, true));
  }

  describe(): Record<string, unknown> {
    return {
      bus: this.attachment?.bus.name,
      addr: this.attachment?.location,
      membar: this.props.membar,
      currentTest: this.tests[this.current]?.name ?? null,
      ioeventfdHits: Number(this.ioeventfdHitCount),
    };
  }

  /** Writes KVM turned into notifier signals, over the device's life (diagnostics, tests). */
  get ioeventfdHitCount(): bigint {
    this.collectHits();
    return this.ioeventfdHits;
  }

  // --- BAR access --------------------------------------------------------------------------

  private handler(type: IoType): BusDevice {
    return {
      read: (offset, data) => {
        for (let i = 0; i < data.length; i++) data[i] = this.readByte(offset + i);
      },
      write: (offset, data) => {
        for (let i = 0; i < data.length; i++) this.writeByte(type, offset + i, data[i] as number);
      },
    };
  }

  private readByte(addr: number): number {
    const t = this.tests[this.current];
    if (t === undefined) return 0;
    if (addr + 1 >= t.hdr.length) return 0;
    // QEMU clears the notifier on every read; we count what it had.
    if (t.notifier !== undefined) this.collectHits();
    return t.hdr[addr] as number;
  }

  private writeByte(type: IoType, addr: number, value: number): void {
    if (addr === HDR_TEST) {
      this.stopCurrent();
      if (value >= TESTS.length) return;
      this.start(type * TESTS.length + value);
      return;
    }
    const t = this.tests[this.current];
    if (t === undefined || addr !== t.offset) return;
    if (t.matchData && value !== t.data) return;
    const dv = new DataView(t.hdr.buffer);
    dv.setUint32(HDR_COUNT, (dv.getUint32(HDR_COUNT, true) + 1) >>> 0, true);
  }

  private start(index: number): void {
    const t = this.tests[index];
    if (t === undefined) return;
    new DataView(t.hdr.buffer).setUint32(HDR_COUNT, 0, true);
    if (t.notifier !== undefined) {
      this.collectHits();
      const bar = t.type === 0 ? this.mmioBar : this.portioBar;
      const spec = { offset: t.offset, datamatch: t.matchData ? BigInt(t.data) : undefined, notifier: t.notifier };
      // As QEMU with KVM_CAP_IOEVENTFD_ANY_LENGTH: the MMIO wildcard test matches writes of any width.
      const anyLength = t.type === 0 && !t.matchData;
      try {
        t.unassign = bar.addIoeventfd({ ...spec, len: anyLength ? 0 : 1 });
      } catch (err) {
        if (!anyLength) throw err;
        t.unassign = bar.addIoeventfd({ ...spec, len: 1 });
      }
    }
    this.current = index;
  }

  private stopCurrent(): void {
    const t = this.tests[this.current];
    if (t !== undefined) {
      t.unassign?.();
      t.unassign = undefined;
      this.collectHits();
    }
    this.current = -1;
  }

  private collectHits(): void {
    for (const t of this.tests) {
      const n = t.notifier?.drain();
      if (n !== undefined && n !== null) this.ioeventfdHits += n;
    }
  }
}

export const pciTestdevType = defineDeviceType({
  name: 'pci-testdev',
  description: "QEMU's PCI test device (1b36:0005): memory and I/O BARs with test headers, ioeventfd notify tests; membar=SIZE adds a 64-bit BAR2",
  bus: 'pci',
  hotpluggable: true,
  idPrefix: 'pcitestdev',
  properties: z
    .strictObject({
      ...pciDeviceProperties,
      // QEMU's size properties take hex too (membar=0x100000)
      membar: z.preprocess((v) => (typeof v === 'string' ? (parseIntLike(v) ?? parseSize(v) ?? v) : v), prop.size(0, 2 ** 51)).default(0),
    })
    .refine((p) => p.membar === 0 || (isPowerOfTwo(p.membar) && p.membar >= 16), { error: 'membar must be 0 or a power of two of at least 16 bytes', path: ['membar'] }),
  create(id, props) {
    return new PciTestdev(id, props);
  },
});

export default devicePlugin(pciTestdevType);
