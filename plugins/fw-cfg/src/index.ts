/**
 * QEMU firmware configuration device, device type `fw_cfg` (the x86 I/O port
 * variant, QEMU's fw_cfg_io).
 *
 * Spec: qemu/qemu docs/specs/fw_cfg.rst — "Selector (Control) Register",
 * "Data Register", "Register Locations" (x86: selector 0x510, data 0x511, DMA
 * address 0x514), "Firmware Configuration Items" and "Guest-side DMA Interface".
 *
 * The items come from the machine's FirmwareConfig (RAM_SIZE, NB_CPUS,
 * MAX_CPUS, the command line, etc/e820, the file directory...). The device
 * itself answers SIGNATURE ("QEMU") and ID (traditional interface, plus DMA
 * when enabled), since those describe the device rather than the machine.
 *
 * Every guest-supplied DMA address and length is untrusted: the descriptor,
 * the transfer target and the control write-back all go through GuestMemory,
 * whose range checks fail with GuestMemoryError; a failed transfer sets the
 * error bit in `control` (and if even that cannot be written, the guest simply
 * sees no completion), and nothing ever throws out of the device.
 */
import { z } from 'zod';
import {
  checkStateVersion,
  defineDeviceType,
  devicePlugin,
  FwCfgKey,
  GuestMemoryError,
  nullLogger,
  parseDeviceState,
  prop,
  stateField,
  type BusDevice,
  type BusRange,
  type Device,
  type DeviceContext,
  type Logger,
} from '@tsvmm/core';

// --- registers ("Register Locations", x86) ---------------------------------------------

/** selector at offset 0 (16-bit, little-endian), data at offset 1 (8-bit) */
const SELECTOR = 0;
const DATA = 1;
const CONTROL_PORTS = 2;
/** DMA address register: 64-bit big-endian; a write of the low half (offset 4) starts the transfer */
const DMA_ADDRESS_HIGH = 0;
const DMA_ADDRESS_LOW = 4;
const DMA_PORTS = 8;

/** Selector bit 14 once chose write mode; writes through the data register are ignored since QEMU 2.4. */
const FW_CFG_WRITE_CHANNEL = 0x4000;

/** Reading the DMA address register returns this: "QEMU CFG" in big-endian. */
const DMA_SIGNATURE = new TextEncoder().encode('QEMU CFG');
const SIGNATURE = new TextEncoder().encode('QEMU');
/** FW_CFG_ID bits */
const FW_CFG_VERSION = 0x01;
const FW_CFG_VERSION_DMA = 0x02;

/** FWCfgDmaAccess.control bits */
export const FW_CFG_DMA_CTL_ERROR = 0x01;
export const FW_CFG_DMA_CTL_READ = 0x02;
export const FW_CFG_DMA_CTL_SKIP = 0x04;
export const FW_CFG_DMA_CTL_SELECT = 0x08;
export const FW_CFG_DMA_CTL_WRITE = 0x10;
/** sizeof(FWCfgDmaAccess): control be32, length be32, address be64 */
const DMA_ACCESS_SIZE = 16;

const NO_ITEM = new Uint8Array(0);

/**
 * Saved state, version 1: the selected key, the read offset into its item
 * and the DMA address register's high half. The items themselves are the
 * machine's (built from the same description on the destination), as QEMU
 * does not migrate fw_cfg contents either.
 */
export const FW_CFG_STATE_VERSION = 1;
const fwCfgStateV1 = z.strictObject({
  selector: stateField.u16(),
  offset: stateField.u32(),
  dmaAddressHigh: stateField.u32(),
});
export type FwCfgStateV1 = z.infer<typeof fwCfgStateV1>;

export interface FwCfgProperties {
  iobase: number;
  dma_iobase: number;
  dma_enabled: boolean;
}

export class FwCfgIo implements Device {
  readonly typeName = 'fw_cfg';

  /** the selected key as written, for status */
  private selector = 0;
  /** the selected item's contents (empty if nothing is there); looked up once per select */
  private item: Uint8Array = NO_ITEM;
  private offset = 0;
  /** the DMA address register; 0 at startup and after each operation */
  private dmaAddressHigh = 0;

  private readonly idItem: Uint8Array;
  private readonly descriptor = new Uint8Array(DMA_ACCESS_SIZE);
  private readonly descriptorView = new DataView(this.descriptor.buffer);
  private readonly controlWord = new Uint8Array(4);

  private ctx: DeviceContext | undefined;
  private log: Logger = nullLogger;
  private ranges: BusRange[] = [];

  /** the selector and data ports */
  private readonly controlPorts: BusDevice = {
    read: (offset, data) => this.readControlPorts(offset, data),
    write: (offset, data) => this.writeControlPorts(offset, data),
  };
  /** the DMA address register */
  private readonly dmaPorts: BusDevice = {
    read: (offset, data) => {
      for (let i = 0; i < data.length; i++) data[i] = DMA_SIGNATURE[offset + i] ?? 0xff;
    },
    write: (offset, data) => this.writeDmaAddress(offset, data),
  };

  constructor(
    readonly id: string,
    readonly props: FwCfgProperties,
  ) {
    this.idItem = Uint8Array.of(FW_CFG_VERSION | (props.dma_enabled ? FW_CFG_VERSION_DMA : 0), 0, 0, 0);
  }

  realize(ctx: DeviceContext): void {
    this.ctx = ctx;
    this.log = ctx.log;
    this.ranges.push(ctx.pio.register(this.props.iobase, CONTROL_PORTS, this.controlPorts, this.id));
    if (this.props.dma_enabled) {
      this.ranges.push(ctx.pio.register(this.props.dma_iobase, DMA_PORTS, this.dmaPorts, this.id));
    }
    this.select(0);
  }

  unrealize(): void {
    for (const r of this.ranges) this.ctx?.pio.unregister(r);
    this.ranges = [];
    this.ctx = undefined;
  }

  describe(): Record<string, unknown> {
    return { iobase: this.props.iobase, dma_iobase: this.props.dma_iobase, dma_enabled: this.props.dma_enabled };
  }

  // --- selector and data registers ------------------------------------------------------

  private readControlPorts(offset: number, data: Uint8Array): void {
    // The selector is write-only; the data register hands out the next bytes of the item.
    for (let i = 0; i < data.length; i++) data[i] = offset + i === DATA ? this.nextByte() : 0;
  }

  private writeControlPorts(offset: number, data: Uint8Array): void {
    // Only a 16-bit write reaches the selector (QEMU rejects other widths);
    // data register writes are ignored since QEMU 2.4.
    if (offset === SELECTOR && data.length === 2) this.select((data[0] ?? 0) | ((data[1] ?? 0) << 8));
  }

  /** Select an item; the data offset goes back to 0. */
  private select(key: number): void {
    this.selector = key;
    this.offset = 0;
    // Bit 14 (write channel) does not change which item is read.
    const k = key & ~FW_CFG_WRITE_CHANNEL;
    if (k === FwCfgKey.SIGNATURE) this.item = SIGNATURE;
    else if (k === FwCfgKey.ID) this.item = this.idItem;
    else this.item = this.ctx?.fwCfg.lookup(k) ?? NO_ITEM;
  }

  /** Past the end of the item reads return 0 and the offset stays put. */
  private nextByte(): number {
    if (this.offset >= this.item.length) return 0;
    return this.item[this.offset++] ?? 0;
  }

  // --- DMA interface ----------------------------------------------------------------------

  private writeDmaAddress(offset: number, data: Uint8Array): void {
    // Big-endian register: the bytes are in string order whatever the access width.
    if (data.length === 4 && offset === DMA_ADDRESS_HIGH) {
      this.dmaAddressHigh = readBe32(data, 0);
    } else if (data.length === 4 && offset === DMA_ADDRESS_LOW) {
      const high = this.dmaAddressHigh;
      this.dmaAddressHigh = 0;
      this.transfer(toGuestAddress(high, readBe32(data, 0)));
    } else if (data.length === 8 && offset === DMA_ADDRESS_HIGH) {
      this.dmaAddressHigh = 0;
      this.transfer(toGuestAddress(readBe32(data, 0), readBe32(data, 4)));
    }
    // other widths and offsets are not valid accesses (as in QEMU) and are ignored
  }

  /** Run the FWCfgDmaAccess at `descriptorAddress`, then write its control word back. */
  private transfer(descriptorAddress: number): void {
    const memory = this.ctx?.memory;
    if (memory === undefined) return;
    try {
      memory.read(descriptorAddress, this.descriptor);
    } catch (err) {
      this.guestMemoryFault(err, 'descriptor');
      this.writeControl(descriptorAddress, FW_CFG_DMA_CTL_ERROR);
      return;
    }
    const control = this.descriptorView.getUint32(0, false);
    let length = this.descriptorView.getUint32(4, false);
    const address = this.descriptorView.getBigUint64(8, false);
    let gpa = address <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(address) : -1;

    if (control & FW_CFG_DMA_CTL_SELECT) this.select(control >>> 16);
    // READ wins over WRITE, and both over SKIP; with none of them there is nothing to move.
    const read = (control & FW_CFG_DMA_CTL_READ) !== 0;
    const write = !read && (control & FW_CFG_DMA_CTL_WRITE) !== 0;
    if (!read && !write && (control & FW_CFG_DMA_CTL_SKIP) === 0) length = 0;

    let status = 0;
    try {
      while (length > 0 && status === 0) {
        const available = this.item.length - this.offset;
        let n: number;
        if (available <= 0) {
          // Past the end: reads fill with zeroes, skips just move on, writes cannot grow an item.
          n = length;
          if (read) memory.fill(gpa, n, 0);
          if (write) status = FW_CFG_DMA_CTL_ERROR;
        } else {
          n = Math.min(length, available);
          if (read) memory.write(gpa, this.item.subarray(this.offset, this.offset + n));
          // No item is writable by the guest (QEMU: "Writes to read-only items are also rejected").
          if (write) status = FW_CFG_DMA_CTL_ERROR;
          this.offset += n;
        }
        gpa = gpa < 0 ? gpa : gpa + n;
        length -= n;
      }
    } catch (err) {
      this.guestMemoryFault(err, 'buffer');
      status = FW_CFG_DMA_CTL_ERROR;
    }
    this.writeControl(descriptorAddress, status);
  }

  /** Completion: `control` becomes 0 on success or has the error bit set. */
  private writeControl(descriptorAddress: number, control: number): void {
    const memory = this.ctx?.memory;
    if (memory === undefined) return;
    this.controlWord[0] = control >>> 24;
    this.controlWord[1] = (control >>> 16) & 0xff;
    this.controlWord[2] = (control >>> 8) & 0xff;
    this.controlWord[3] = control & 0xff;
    try {
      memory.write(descriptorAddress, this.controlWord);
    } catch (err) {
      // The descriptor is not in RAM: there is nowhere to report the error.
      this.guestMemoryFault(err, 'control write-back');
    }
  }

  /** A guest address outside RAM is the guest's error, reported to it; anything else is our bug. */
  private guestMemoryFault(err: unknown, what: string): void {
    if (!(err instanceof GuestMemoryError)) throw err;
    this.log.debug(`fw_cfg DMA ${what} outside guest RAM`, { device: this.id, address: err.address, length: err.length });
  }

  // --- persistence -------------------------------------------------------------------------

  readonly stateVersion = FW_CFG_STATE_VERSION;

  saveState(): FwCfgStateV1 {
    return { selector: this.selector, offset: this.offset, dmaAddressHigh: this.dmaAddressHigh };
  }

  loadState(version: number, state: unknown): void {
    const subject = `fw_cfg '${this.id}'`;
    checkStateVersion(version, [FW_CFG_STATE_VERSION], subject);
    const s = parseDeviceState(fwCfgStateV1, state, subject);
    this.select(s.selector);
    // The same item on both sides; clamped in case the destination's is shorter.
    this.offset = Math.min(s.offset, this.item.length);
    this.dmaAddressHigh = s.dmaAddressHigh;
  }

  // --- reset ------------------------------------------------------------------------------

  reset(): void {
    this.dmaAddressHigh = 0;
    this.select(0);
  }

  /** the selected key and data offset (for status and tests) */
  get position(): { selector: number; offset: number } {
    return { selector: this.selector, offset: this.offset };
  }
}

function readBe32(data: Uint8Array, at: number): number {
  return (((data[at] ?? 0) << 24) | ((data[at + 1] ?? 0) << 16) | ((data[at + 2] ?? 0) << 8) | (data[at + 3] ?? 0)) >>> 0;
}

/** high:low as a guest physical address, or -1 if it is beyond any address a Number holds exactly (never RAM). */
function toGuestAddress(high: number, low: number): number {
  return high < 2 ** 21 ? high * 2 ** 32 + low : -1;
}

export const fwCfg = defineDeviceType({
  name: 'fw_cfg',
  description: "QEMU's firmware configuration interface (I/O ports 0x510/0x511, DMA at 0x514)",
  bus: 'isa',
  hotpluggable: false,
  idPrefix: 'fw_cfg',
  properties: z.strictObject({
    iobase: prop.int(0, 0x10000 - CONTROL_PORTS).default(0x510),
    dma_iobase: prop.int(0, 0x10000 - DMA_PORTS).default(0x514),
    dma_enabled: prop.bool().default(true),
  }),
  create(id, props) {
    return new FwCfgIo(id, props);
  },
});

export default devicePlugin(fwCfg);
