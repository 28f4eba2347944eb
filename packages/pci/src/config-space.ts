/**
 * One function's 256-byte configuration space: the type 0 header (PCI Local
 * Bus 3.0 §6.1) or the type 1 header of a PCI-to-PCI bridge (PCI-to-PCI
 * Bridge Architecture 1.2 §3.2), the capability list (PCI 3.0 §6.7) and the
 * Base Address Registers (§6.2.5).
 *
 * Every byte has a write mask (bits software may change) and a
 * write-1-to-clear mask (status bits software clears by writing 1); all other
 * bits are read-only. A guest write goes through `write`, which applies the
 * masks and then tells the watchers of the bytes it touched (the bus for
 * Command/BARs/bridge windows, MSI and MSI-X for their capabilities). Device
 * code sets up and updates registers with the `set*` methods, which ignore
 * the masks.
 *
 * BAR sizing needs no special case: a BAR's low address bits are read-only
 * zeros, so after the guest writes all ones it reads back ~(size - 1) plus the
 * type bits, exactly what §6.2.5.1 asks.
 *
 * Reset (`reset`) restores the image the device had when it was attached to a
 * bus (`snapshotResetState`), except bytes marked non-volatile (a bridge's
 * chassis number, as QEMU keeps it), and runs reset listeners (MSI, MSI-X).
 */
import { PciBar, type PciBarDefinition } from './bar.js';
import {
  PCI_BASE_ADDRESS_0,
  PCI_BRIDGE_CONTROL,
  PCI_BRIDGE_CTL_DISCARD_SERR,
  PCI_BRIDGE_CTL_DISCARD_STATUS,
  PCI_BRIDGE_CTL_FAST_BACK,
  PCI_BRIDGE_CTL_ISA,
  PCI_BRIDGE_CTL_MASTER_ABORT,
  PCI_BRIDGE_CTL_PARITY,
  PCI_BRIDGE_CTL_PRI_DISCARD,
  PCI_BRIDGE_CTL_SEC_DISCARD,
  PCI_BRIDGE_CTL_SERR,
  PCI_BRIDGE_CTL_BUS_RESET,
  PCI_BRIDGE_CTL_VGA,
  PCI_BRIDGE_CTL_VGA_16BIT,
  PCI_CACHE_LINE_SIZE,
  PCI_CAPABILITY_LIST,
  PCI_CLASS_DEVICE,
  PCI_CLASS_PROG,
  PCI_COMMAND,
  PCI_COMMAND_INTX_DISABLE,
  PCI_COMMAND_IO,
  PCI_COMMAND_MASTER,
  PCI_COMMAND_MEMORY,
  PCI_COMMAND_SERR,
  PCI_CONFIG_HEADER_SIZE,
  PCI_CONFIG_SPACE_SIZE,
  PCI_DEVICE_ID,
  PCI_HEADER_TYPE,
  PCI_HEADER_TYPE_BRIDGE,
  PCI_HEADER_TYPE_MULTI_FUNCTION,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_IO_BASE,
  PCI_IO_LIMIT,
  PCI_IO_RANGE_TYPE_16,
  PCI_IO_RANGE_TYPE_32,
  PCI_IO_BASE_UPPER16,
  PCI_MEMORY_BASE,
  PCI_MEMORY_LIMIT,
  PCI_PREF_BASE_UPPER32,
  PCI_PREF_MEMORY_BASE,
  PCI_PREF_MEMORY_LIMIT,
  PCI_PREF_RANGE_TYPE_32,
  PCI_PREF_RANGE_TYPE_64,
  PCI_PRIMARY_BUS,
  PCI_REVISION_ID,
  PCI_SEC_STATUS,
  PCI_STATUS,
  PCI_STATUS_66MHZ,
  PCI_STATUS_CAP_LIST,
  PCI_STATUS_FAST_BACK,
  PCI_STATUS_W1C_BITS,
  PCI_SUBSYSTEM_ID,
  PCI_SUBDEVICE_ID_QEMU,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_SUBVENDOR_ID_REDHAT_QUMRANET,
  PCI_VENDOR_ID,
} from './constants.js';
import { PciConfigError } from './errors.js';

export type PciHeaderType = 0 | 1;

/** What identifies a function to software (PCI 3.0 §6.2.1). */
export interface PciIdentity {
  vendorId: number;
  deviceId: number;
  /** base class << 8 | sub-class, e.g. 0x0604 for a PCI-to-PCI bridge */
  classCode: number;
  /** programming interface byte (default 0) */
  progIf?: number;
  revision?: number;
  /** type 0 only */
  subsystemVendorId?: number;
  subsystemId?: number;
  /** 0 (default): ordinary function; 1: PCI-to-PCI bridge */
  headerType?: PciHeaderType;
  /** sets Header Type bit 7 so software scans functions 1-7 of the slot */
  multifunction?: boolean;
  /** 0 none (default), 1 INTA# … 4 INTD# */
  interruptPin?: number;
  /** type 1 only: decode 32-bit I/O addresses (default: 16-bit, as QEMU's bridges) */
  io32?: boolean;
  /** type 1 only: 64-bit prefetchable window (default true, as QEMU's bridges) */
  prefetchable64?: boolean;
}

export interface PciCapabilityInfo {
  id: number;
  offset: number;
  length: number;
}

export type ConfigWriteListener = (offset: number, size: number) => void;

interface Watch {
  start: number;
  end: number;
  listener: ConfigWriteListener;
}

function checkRange(offset: number, size: number): void {
  if (!Number.isInteger(offset) || !Number.isInteger(size) || offset < 0 || size < 1 || size > 4 || offset + size > PCI_CONFIG_SPACE_SIZE) {
    throw new PciConfigError(`config space access of ${size} bytes at 0x${Number(offset).toString(16)} is outside the 256-byte space`);
  }
}

export class PciConfigSpace {
  /** the current register image; read it through `read`/`get*` */
  readonly bytes = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** bits software may write */
  readonly wmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** bits software clears by writing 1 */
  readonly w1cmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  readonly headerType: PciHeaderType;
  private readonly used = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private readonly nonVolatile = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  private resetImage: Uint8Array | undefined;
  private readonly watches: Watch[] = [];
  private readonly readHooks: Watch[] = [];
  private readonly resetListeners = new Set<() => void>();
  private readonly barList: (PciBar | undefined)[];
  private readonly caps: PciCapabilityInfo[] = [];

  constructor(
    /** owner for messages, e.g. the device id */
    readonly owner: string,
    identity: PciIdentity,
  ) {
    this.headerType = identity.headerType ?? 0;
    this.barList = new Array<PciBar | undefined>(this.headerType === 0 ? 6 : 2).fill(undefined);
    this.used.fill(1, 0, PCI_CONFIG_HEADER_SIZE);
    this.set16(PCI_VENDOR_ID, identity.vendorId);
    this.set16(PCI_DEVICE_ID, identity.deviceId);
    this.set8(PCI_REVISION_ID, identity.revision ?? 0);
    this.set8(PCI_CLASS_PROG, identity.progIf ?? 0);
    this.set16(PCI_CLASS_DEVICE, identity.classCode);
    this.set8(PCI_HEADER_TYPE, this.headerType | (identity.multifunction ? PCI_HEADER_TYPE_MULTI_FUNCTION : 0));
    this.set8(PCI_INTERRUPT_PIN, identity.interruptPin ?? 0);

    // What software may change, as QEMU's pci_init_wmask has it, so guests see the
    // same registers on both: Command I/O, Memory, Bus Master, SERR#, INTx Disable;
    // Cache Line Size; Interrupt Line; the device-specific area 0x40-0xff (until a
    // capability claims part of it). Latency Timer stays 0 (no bursts to tune).
    this.setWritable(PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_SERR | PCI_COMMAND_INTX_DISABLE);
    this.setW1C(PCI_STATUS, 2, PCI_STATUS_W1C_BITS);
    this.setWritable(PCI_CACHE_LINE_SIZE, 1, 0xff);
    this.setWritable(PCI_INTERRUPT_LINE, 1, 0xff);
    this.wmask.fill(0xff, PCI_CONFIG_HEADER_SIZE, PCI_CONFIG_SPACE_SIZE);

    if (this.headerType === 0) {
      // QEMU gives every device Red Hat/Qumranet's subsystem IDs unless the device sets its own.
      this.set16(PCI_SUBSYSTEM_VENDOR_ID, identity.subsystemVendorId ?? PCI_SUBVENDOR_ID_REDHAT_QUMRANET);
      this.set16(PCI_SUBSYSTEM_ID, identity.subsystemId ?? PCI_SUBDEVICE_ID_QEMU);
    } else {
      this.initBridgeHeader(identity.io32 ?? false, identity.prefetchable64 ?? true);
    }
  }

  /** Type 1 header masks and defaults (bridge 1.2 §3.2; layout of QEMU's pci_init_mask_bridge). */
  private initBridgeHeader(io32: boolean, pref64: boolean): void {
    this.set16(PCI_STATUS, PCI_STATUS_66MHZ | PCI_STATUS_FAST_BACK);
    // primary, secondary, subordinate bus numbers and the secondary latency timer
    this.setWritable(PCI_PRIMARY_BUS, 4, 0xffffffff);
    this.set8(PCI_IO_BASE, io32 ? PCI_IO_RANGE_TYPE_32 : PCI_IO_RANGE_TYPE_16);
    this.set8(PCI_IO_LIMIT, io32 ? PCI_IO_RANGE_TYPE_32 : PCI_IO_RANGE_TYPE_16);
    this.setWritable(PCI_IO_BASE, 1, 0xf0);
    this.setWritable(PCI_IO_LIMIT, 1, 0xf0);
    if (io32) this.setWritable(PCI_IO_BASE_UPPER16, 4, 0xffffffff);
    this.set16(PCI_SEC_STATUS, PCI_STATUS_66MHZ | PCI_STATUS_FAST_BACK);
    this.setW1C(PCI_SEC_STATUS, 2, PCI_STATUS_W1C_BITS);
    this.setWritable(PCI_MEMORY_BASE, 2, 0xfff0);
    this.setWritable(PCI_MEMORY_LIMIT, 2, 0xfff0);
    const prefType = pref64 ? PCI_PREF_RANGE_TYPE_64 : PCI_PREF_RANGE_TYPE_32;
    this.set16(PCI_PREF_MEMORY_BASE, prefType);
    this.set16(PCI_PREF_MEMORY_LIMIT, prefType);
    this.setWritable(PCI_PREF_MEMORY_BASE, 2, 0xfff0);
    this.setWritable(PCI_PREF_MEMORY_LIMIT, 2, 0xfff0);
    if (pref64) this.setWritable(PCI_PREF_BASE_UPPER32, 8, 0xffffffff);
    this.setWritable(
      PCI_BRIDGE_CONTROL,
      2,
      PCI_BRIDGE_CTL_PARITY |
        PCI_BRIDGE_CTL_SERR |
        PCI_BRIDGE_CTL_ISA |
        PCI_BRIDGE_CTL_VGA |
        PCI_BRIDGE_CTL_VGA_16BIT |
        PCI_BRIDGE_CTL_MASTER_ABORT |
        PCI_BRIDGE_CTL_BUS_RESET |
        PCI_BRIDGE_CTL_FAST_BACK |
        PCI_BRIDGE_CTL_PRI_DISCARD |
        PCI_BRIDGE_CTL_SEC_DISCARD |
        PCI_BRIDGE_CTL_DISCARD_SERR,
    );
    this.setW1C(PCI_BRIDGE_CONTROL, 2, PCI_BRIDGE_CTL_DISCARD_STATUS);
  }

  // --- guest-visible access ------------------------------------------------------------

  /**
   * A configuration read of 1, 2 or 4 bytes (little-endian) — the guest path:
   * read hooks covering the bytes run first, so their owner can refresh them.
   */
  read(offset: number, size: number): number {
    checkRange(offset, size);
    for (const h of [...this.readHooks]) {
      if (offset < h.end && h.start < offset + size) h.listener(offset, size);
    }
    return this.peek(offset, size);
  }

  /** The register bytes without running read hooks (device code). */
  private peek(offset: number, size: number): number {
    checkRange(offset, size);
    let v = 0;
    for (let i = size - 1; i >= 0; i--) v = v * 256 + (this.bytes[offset + i] as number);
    return v;
  }

  /** A configuration write of 1, 2 or 4 bytes: masks applied, then watchers told. */
  write(offset: number, size: number, value: number): void {
    checkRange(offset, size);
    for (let i = 0; i < size; i++) {
      const b = Math.floor(value / 2 ** (8 * i)) & 0xff;
      const at = offset + i;
      const w = this.wmask[at] as number;
      const c = this.w1cmask[at] as number;
      let cur = this.bytes[at] as number;
      cur = (cur & ~w) | (b & w);
      cur &= ~(b & c);
      this.bytes[at] = cur & 0xff;
    }
    for (const wt of [...this.watches]) {
      if (offset < wt.end && wt.start < offset + size) wt.listener(offset, size);
    }
  }

  /** Call `listener` after every guest write touching [offset, offset + length). */
  watch(offset: number, length: number, listener: ConfigWriteListener): () => void {
    const w: Watch = { start: offset, end: offset + length, listener };
    this.watches.push(w);
    return () => {
      const i = this.watches.indexOf(w);
      if (i >= 0) this.watches.splice(i, 1);
    };
  }

  /**
   * Call `listener` before every guest read touching [offset, offset + length),
   * for registers whose value the device computes on demand (e.g. virtio's
   * VIRTIO_PCI_CAP_PCI_CFG data window).
   */
  onRead(offset: number, length: number, listener: ConfigWriteListener): () => void {
    const h: Watch = { start: offset, end: offset + length, listener };
    this.readHooks.push(h);
    return () => {
      const i = this.readHooks.indexOf(h);
      if (i >= 0) this.readHooks.splice(i, 1);
    };
  }

  // --- device-side register access (no masks, no hooks) --------------------------------

  get8(offset: number): number {
    return this.peek(offset, 1);
  }
  get16(offset: number): number {
    return this.peek(offset, 2);
  }
  get32(offset: number): number {
    return this.peek(offset, 4);
  }
  set8(offset: number, value: number): void {
    this.setRaw(offset, 1, value);
  }
  set16(offset: number, value: number): void {
    this.setRaw(offset, 2, value);
  }
  set32(offset: number, value: number): void {
    this.setRaw(offset, 4, value);
  }

  private setRaw(offset: number, size: number, value: number): void {
    checkRange(offset, size);
    for (let i = 0; i < size; i++) this.bytes[offset + i] = Math.floor(value / 2 ** (8 * i)) & 0xff;
  }

  /** Set which bits of [offset, offset + size) software may write (little-endian mask, size ≤ 8). */
  setWritable(offset: number, size: number, mask: number | bigint): void {
    this.setMask(this.wmask, offset, size, mask);
  }

  /** Set which bits of [offset, offset + size) software clears by writing 1. */
  setW1C(offset: number, size: number, mask: number | bigint): void {
    this.setMask(this.w1cmask, offset, size, mask);
  }

  private setMask(target: Uint8Array, offset: number, size: number, mask: number | bigint): void {
    if (offset < 0 || size < 1 || offset + size > PCI_CONFIG_SPACE_SIZE) {
      throw new PciConfigError(`${this.owner}: mask at 0x${offset.toString(16)} (${size} bytes) is outside config space`);
    }
    let m = BigInt(mask);
    for (let i = 0; i < size; i++) {
      target[offset + i] = Number(m & 0xffn);
      m >>= 8n;
    }
  }

  /** Keep these bytes across reset (QEMU does so for a bridge's chassis number). */
  markNonVolatile(offset: number, length: number): void {
    this.nonVolatile.fill(1, offset, offset + length);
  }

  /**
   * Claim device-specific registers above the header so capabilities are not
   * placed there. (0x40-0xff starts writable, as in QEMU; narrow it with setWritable.)
   */
  reserve(offset: number, length: number): void {
    if (offset < PCI_CONFIG_HEADER_SIZE || offset + length > PCI_CONFIG_SPACE_SIZE) {
      throw new PciConfigError(`${this.owner}: cannot reserve 0x${offset.toString(16)}+${length}: device registers live in 0x40-0xff`);
    }
    for (let i = offset; i < offset + length; i++) {
      if (this.used[i]) throw new PciConfigError(`${this.owner}: config byte 0x${i.toString(16)} is already in use`);
    }
    this.used.fill(1, offset, offset + length);
  }

  // --- capabilities (PCI 3.0 §6.7) -----------------------------------------------------

  /**
   * Add a capability of `length` bytes (ID and next pointer included) and
   * return its offset. Without `offset`, the lowest free dword-aligned place
   * above the header is used. Like QEMU, a new capability goes to the head of
   * the list. ID and next pointer are read-only; the caller sets the body's
   * masks.
   */
  addCapability(id: number, length: number, opts: { offset?: number } = {}): number {
    if (!Number.isInteger(id) || id < 0 || id > 0xff) throw new PciConfigError(`${this.owner}: capability ID ${id} is not a byte`);
    if (!Number.isInteger(length) || length < 2) throw new PciConfigError(`${this.owner}: capability 0x${id.toString(16)} needs at least 2 bytes`);
    let offset = opts.offset;
    if (offset === undefined) {
      offset = this.findFree(length);
      if (offset === undefined) {
        throw new PciConfigError(`${this.owner}: no room for a ${length}-byte capability 0x${id.toString(16)} in config space`);
      }
    } else {
      if (offset % 4 !== 0 || offset < PCI_CONFIG_HEADER_SIZE || offset + length > PCI_CONFIG_SPACE_SIZE) {
        throw new PciConfigError(`${this.owner}: capability 0x${id.toString(16)} at 0x${offset.toString(16)} must be dword aligned within 0x40-0xff`);
      }
      for (let i = offset; i < offset + length; i++) {
        if (this.used[i]) throw new PciConfigError(`${this.owner}: capability 0x${id.toString(16)} at 0x${offset.toString(16)} overlaps registers in use at 0x${i.toString(16)}`);
      }
    }
    this.used.fill(1, offset, offset + length);
    // A capability is read-only until its owner opens fields (QEMU pci_add_capability).
    this.wmask.fill(0, offset, offset + length);
    this.w1cmask.fill(0, offset, offset + length);
    this.set8(offset, id);
    this.set8(offset + 1, this.get8(PCI_CAPABILITY_LIST));
    this.set8(PCI_CAPABILITY_LIST, offset);
    this.set16(PCI_STATUS, this.get16(PCI_STATUS) | PCI_STATUS_CAP_LIST);
    this.caps.unshift({ id, offset, length });
    return offset;
  }

  /** Offset of the first capability with this ID, walking the list as software does. */
  findCapability(id: number): number | undefined {
    for (const c of this.walkCapabilities()) if (c.id === id) return c.offset;
    return undefined;
  }

  /** The list as software sees it: follows next pointers, stops on a loop or a bad pointer. */
  walkCapabilities(): PciCapabilityInfo[] {
    const out: PciCapabilityInfo[] = [];
    if ((this.get16(PCI_STATUS) & PCI_STATUS_CAP_LIST) === 0) return out;
    const seen = new Set<number>();
    let p = this.get8(PCI_CAPABILITY_LIST) & 0xfc;
    while (p !== 0 && p >= PCI_CONFIG_HEADER_SIZE && !seen.has(p)) {
      seen.add(p);
      const info = this.caps.find((c) => c.offset === p);
      out.push({ id: this.get8(p), offset: p, length: info?.length ?? 2 });
      p = this.get8(p + 1) & 0xfc;
    }
    return out;
  }

  private findFree(length: number): number | undefined {
    for (let off = PCI_CONFIG_HEADER_SIZE; off + length <= PCI_CONFIG_SPACE_SIZE; off += 4) {
      let free = true;
      for (let i = off; i < off + length; i++) {
        if (this.used[i]) {
          free = false;
          break;
        }
      }
      if (free) return off;
    }
    return undefined;
  }

  // --- BARs (PCI 3.0 §6.2.5) -----------------------------------------------------------

  /** Define BAR `index` (a 64-bit memory BAR also takes index + 1). */
  defineBar(index: number, def: PciBarDefinition): PciBar {
    const count = this.barList.length;
    const span = def.kind === 'mem64' ? 2 : 1;
    if (!Number.isInteger(index) || index < 0 || index + span > count) {
      throw new PciConfigError(`${this.owner}: BAR${index}${span === 2 ? ' (64-bit, two registers)' : ''} does not exist in a type ${this.headerType} header (BAR0-BAR${count - 1})`);
    }
    for (let i = 0; i < count; i++) {
      const b = this.barList[i];
      if (b === undefined) continue;
      const bSpan = b.is64 ? 2 : 1;
      if (index < i + bSpan && i < index + span) throw new PciConfigError(`${this.owner}: BAR${index} overlaps BAR${i}, defined already`);
    }
    const bar = new PciBar(this.owner, index, def);
    this.barList[index] = bar;
    const reg = PCI_BASE_ADDRESS_0 + 4 * index;
    this.set32(reg, bar.flags);
    // Address bits above the size are writable; type bits and the size's low bits read as fixed (sizing, §6.2.5.1).
    const low = bar.kind === 'io' ? 0xfffffffc : 0xfffffff0;
    const sizeMask = bar.size >= 2 ** 32 ? 0 : (~(bar.size - 1) >>> 0) & low;
    this.setWritable(reg, 4, sizeMask >>> 0);
    if (bar.is64) {
      this.set32(reg + 4, 0);
      const highMask = bar.size > 2 ** 32 ? (~(bar.size / 2 ** 32 - 1) >>> 0) : 0xffffffff;
      this.setWritable(reg + 4, 4, highMask >>> 0);
    }
    return bar;
  }

  /** The BAR defined at `index` (the lower index of a 64-bit BAR), if any. */
  bar(index: number): PciBar | undefined {
    return this.barList[index];
  }

  /** Defined BARs in index order. */
  bars(): PciBar[] {
    return this.barList.filter((b): b is PciBar => b !== undefined);
  }

  /**
   * The address the guest programmed into a BAR, whatever the decode bits;
   * undefined when it does not fit a JS number (above 2^53).
   */
  barAddress(bar: PciBar): number | undefined {
    const reg = PCI_BASE_ADDRESS_0 + 4 * bar.index;
    const lowBits = bar.kind === 'io' ? 0xfffffffc : 0xfffffff0;
    const low = (this.get32(reg) & lowBits) >>> 0;
    if (!bar.is64) return low;
    const high = this.get32(reg + 4);
    const addr = high * 2 ** 32 + low;
    return Number.isSafeInteger(addr) ? addr : undefined;
  }

  // --- header fields -------------------------------------------------------------------

  get command(): number {
    return this.get16(PCI_COMMAND);
  }
  get vendorId(): number {
    return this.get16(PCI_VENDOR_ID);
  }
  get deviceId(): number {
    return this.get16(PCI_DEVICE_ID);
  }
  get classCode(): number {
    return this.get16(PCI_CLASS_DEVICE);
  }
  get interruptPin(): number {
    return this.get8(PCI_INTERRUPT_PIN);
  }
  get multifunction(): boolean {
    return (this.get8(PCI_HEADER_TYPE) & PCI_HEADER_TYPE_MULTI_FUNCTION) !== 0;
  }
  set multifunction(on: boolean) {
    const h = this.get8(PCI_HEADER_TYPE) & ~PCI_HEADER_TYPE_MULTI_FUNCTION;
    this.set8(PCI_HEADER_TYPE, h | (on ? PCI_HEADER_TYPE_MULTI_FUNCTION : 0));
  }
  get isBridge(): boolean {
    return this.headerType === PCI_HEADER_TYPE_BRIDGE;
  }
  /** Command bit INTx Disable (PCI 3.0 §6.2.2, bit 10) */
  get intxDisabled(): boolean {
    return (this.command & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  // --- persistence (migration, snapshots) -------------------------------------------------

  /** The register image, for a saved state. */
  saveState(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }

  /**
   * Put back an image saveState() took (on the same kind of function): bytes
   * only, no masks applied and no watchers run. The caller then re-derives
   * what depends on them (notifyWritten for the Command register, MSI-X...).
   */
  loadState(image: Uint8Array): void {
    if (image.length !== PCI_CONFIG_SPACE_SIZE) {
      throw new PciConfigError(`${this.owner}: a saved config space has ${image.length} bytes, not ${PCI_CONFIG_SPACE_SIZE}`);
    }
    this.bytes.set(image);
  }

  /** Run the watchers of [offset, offset + length) as if software had just written those bytes (after loadState). */
  notifyWritten(offset: number, length: number): void {
    checkRange(offset, Math.min(length, 4));
    for (const wt of [...this.watches]) {
      if (offset < wt.end && wt.start < offset + length) wt.listener(offset, length);
    }
  }

  // --- reset ---------------------------------------------------------------------------

  /** Record the current image as the power-on state `reset` returns to (the bus does this at attach). */
  snapshotResetState(): void {
    this.resetImage = Uint8Array.from(this.bytes);
  }

  /** Run `listener` after every reset (capabilities reset their own state). */
  onReset(listener: () => void): () => void {
    this.resetListeners.add(listener);
    return () => this.resetListeners.delete(listener);
  }

  /** Back to the power-on image (non-volatile bytes kept), then reset listeners. */
  reset(): void {
    const img = this.resetImage;
    if (img !== undefined) {
      for (let i = 0; i < PCI_CONFIG_SPACE_SIZE; i++) if (!this.nonVolatile[i]) this.bytes[i] = img[i] as number;
    }
    for (const l of [...this.resetListeners]) l();
  }
}
