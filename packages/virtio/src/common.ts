/**
 * VirtioCommon: the transport-independent state of a virtio device, held as
 * a field by every virtio device (the cloud-hypervisor VirtioCommon shape).
 * OASIS VIRTIO 1.2 §2.1 device status, §2.2 feature bits, §3.1 device
 * initialization, §2.4 device reset, §2.7 virtqueue configuration.
 *
 * It owns feature negotiation (offered features are the device's plus
 * VERSION_1, INDIRECT_DESC and EVENT_IDX; the driver may accept only what was
 * offered and must accept VERSION_1 — this is a modern-only device — or
 * FEATURES_OK does not stick), the status machine (DRIVER_OK starts the
 * enabled queues on the data plane; writing 0 resets), the per-queue
 * configuration the driver writes, DEVICE_NEEDS_RESET, and the data plane
 * itself (DataPlaneHost): it starts it at realize, configures queues on
 * DRIVER_OK, and stops it on reset. A transport (virtio-pci) decodes
 * registers into calls on it and supplies interrupts and kick notifiers
 * through VirtioTransportHooks.
 */
import { parseDeviceState, stateField, type DeviceContext, type EventNotifier, type Logger } from '@tsvmm/core';
import { z } from 'zod';
import { DataPlaneHost, type DataPlaneSpec } from './data-plane-host.js';
import type { InterruptRoute } from './data-plane.js';
import type { QueueConfig, QueueCursor } from './queue.js';
import {
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_EVENT_IDX,
  VIRTIO_F_INDIRECT_DESC,
  VIRTIO_F_VERSION_1,
  VIRTIO_MSI_NO_VECTOR,
  VIRTQ_MAX_SIZE,
  featureBit,
} from './spec.js';

/** The device-specific configuration space (§4.1.4.6 "Device-specific configuration"). */
export interface VirtioDeviceConfigSpace {
  /** bytes of the structure (e.g. sizeof(struct virtio_blk_config)) */
  readonly size: number;
  read(offset: number, data: Uint8Array): void;
  /** writable fields (e.g. virtio-blk's writeback); read-only spaces leave it out */
  write?(offset: number, data: Uint8Array): void;
}

export interface VirtioCommonOptions<I, L> {
  /** device id, for messages */
  id: string;
  /** virtio device ID (§5), e.g. VIRTIO_ID_BLOCK */
  deviceType: number;
  /** the largest size of each queue the device offers; the length is num_queues */
  queueMaxSizes: readonly number[];
  /** device-specific feature bits offered (VERSION_1, INDIRECT_DESC and EVENT_IDX are added) */
  deviceFeatures: bigint;
  config: VirtioDeviceConfigSpace;
  dataPlane: DataPlaneSpec<I, L>;
  /** extra checks of the driver's features at FEATURES_OK; a message refuses them */
  validateFeatures?(driverFeatures: bigint): string | undefined;
}

/** What a transport provides to VirtioCommon. */
export interface VirtioTransportHooks {
  /** the eventfd KVM signals when the driver notifies queue `index` */
  kickNotifier(index: number): EventNotifier;
  /** how queue interrupts on `vector` reach the guest right now */
  interruptRoute(vector: number): InterruptRoute;
  /** raise a used-buffer notification for a queue on `vector` (route 'message') */
  queueInterrupt(vector: number): void;
  /** raise a configuration change notification on `vector` */
  configInterrupt(vector: number): void;
}

/** One queue as the driver configured it through the common configuration. */
export interface VirtqueueRegisters {
  readonly maxSize: number;
  size: number;
  enabled: boolean;
  desc: number;
  driver: number;
  device: number;
  msixVector: number;
  /** started on the data plane since the last reset */
  running: boolean;
}

/**
 * Saved state, version 1 (migration, snapshots): status, negotiated
 * features, the selects, vectors and generation, and per queue its
 * registers and where the device stood in its rings (taken after quiesce(),
 * so no request is in flight).
 */
const cursorSchema = z.strictObject({ nextAvail: stateField.u16(), nextUsed: stateField.u16() });
const virtioCommonStateV1 = z.strictObject({
  status: stateField.u8(),
  driverFeatures: stateField.bigint(),
  deviceFeatureSelect: stateField.u32(),
  driverFeatureSelect: stateField.u32(),
  configMsixVector: stateField.u16(),
  configGeneration: stateField.u8(),
  queues: z.array(
    z.strictObject({
      size: stateField.int(1, VIRTQ_MAX_SIZE),
      enabled: stateField.bool(),
      desc: stateField.int(0, Number.MAX_SAFE_INTEGER),
      driver: stateField.int(0, Number.MAX_SAFE_INTEGER),
      device: stateField.int(0, Number.MAX_SAFE_INTEGER),
      msixVector: stateField.u16(),
      cursor: cursorSchema.nullable(),
    }),
  ),
});
export type VirtioCommonState = z.infer<typeof virtioCommonStateV1>;

function freshQueue(maxSize: number): VirtqueueRegisters {
  return { maxSize, size: maxSize, enabled: false, desc: 0, driver: 0, device: 0, msixVector: VIRTIO_MSI_NO_VECTOR, running: false };
}

export class VirtioCommon<I = unknown, L = unknown> {
  readonly id: string;
  readonly deviceType: number;
  readonly offeredFeatures: bigint;
  readonly config: VirtioDeviceConfigSpace;
  readonly queues: VirtqueueRegisters[];
  driverFeatures = 0n;
  deviceFeatureSelect = 0;
  driverFeatureSelect = 0;
  configMsixVector = VIRTIO_MSI_NO_VECTOR;
  configGeneration = 0;
  private statusValue = 0;
  /** what status reads as while a driver-requested reset completes (§4.1.4.3.1: 0 only once done) */
  private statusDuringReset: number | undefined;
  private resetTicket = 0;
  private dataPlane: DataPlaneHost | undefined;
  private hooks: VirtioTransportHooks | undefined;
  private readonly log: Logger;
  /** fds handed to a main-thread data plane, and the notifiers behind them */
  readonly notifiers = new Map<number, EventNotifier>();
  /** why the device last entered DEVICE_NEEDS_RESET (diagnostics, tests) */
  lastError: string | undefined;
  /** where the queues stood when quiesce() stopped them (migration); undefined while they run */
  private quiescedCursors: Map<number, QueueCursor> | undefined;

  constructor(
    private readonly ctx: DeviceContext,
    private readonly options: VirtioCommonOptions<I, L>,
  ) {
    if (options.queueMaxSizes.length === 0) throw new RangeError(`${options.id}: a virtio device needs at least one queue`);
    for (const s of options.queueMaxSizes) {
      if (!Number.isInteger(s) || s < 1 || s > VIRTQ_MAX_SIZE || (s & (s - 1)) !== 0) {
        throw new RangeError(`${options.id}: queue size ${s} is not a power of 2 between 1 and ${VIRTQ_MAX_SIZE}`);
      }
    }
    this.id = options.id;
    this.deviceType = options.deviceType;
    this.config = options.config;
    this.offeredFeatures =
      options.deviceFeatures | featureBit(VIRTIO_F_VERSION_1) | featureBit(VIRTIO_F_INDIRECT_DESC) | featureBit(VIRTIO_F_EVENT_IDX);
    this.queues = options.queueMaxSizes.map(freshQueue);
    this.log = ctx.log;
  }

  /** Starts the data plane; resolves with what its handler reported (e.g. a disk's size). */
  async start(hooks: VirtioTransportHooks): Promise<unknown> {
    this.hooks = hooks;
    this.dataPlane = await DataPlaneHost.start(this.ctx, this.options.dataPlane, this.notifiers, {
      onInterrupt: (q) => this.hooks?.queueInterrupt(this.queues[q]?.msixVector ?? VIRTIO_MSI_NO_VECTOR),
      onQueueError: (q, message) => this.needsReset(`queue ${q}: ${message}`),
      onFailure: (message) => this.needsReset(`data plane: ${message}`),
      onWarning: (message) => this.log.warn(`${this.id}: ${message}`),
    });
    return this.dataPlane.info;
  }

  get iothread(): string | undefined {
    return this.options.dataPlane.iothread;
  }

  // --- features (§2.2, §4.1.4.3 device_feature / driver_feature) -------------------------

  /** 32 bits of the offered features selected by device_feature_select. */
  deviceFeatureWord(): number {
    return this.word(this.offeredFeatures, this.deviceFeatureSelect);
  }

  driverFeatureWord(): number {
    return this.word(this.driverFeatures, this.driverFeatureSelect);
  }

  /** driver_feature write; ignored once FEATURES_OK is set (§3.1.1: features are fixed then). */
  writeDriverFeatureWord(value: number): void {
    if (this.statusValue & VIRTIO_CONFIG_S_FEATURES_OK) return;
    if (this.driverFeatureSelect > 1) return;
    const shift = BigInt(32 * this.driverFeatureSelect);
    const mask = 0xffff_ffffn << shift;
    this.driverFeatures = (this.driverFeatures & ~mask) | (BigInt(value >>> 0) << shift);
  }

  /** Whether `bit` was negotiated (accepted by the driver and FEATURES_OK set). */
  negotiated(bit: number): boolean {
    return (this.statusValue & VIRTIO_CONFIG_S_FEATURES_OK) !== 0 && (this.driverFeatures & featureBit(bit)) !== 0n;
  }

  private word(features: bigint, select: number): number {
    if (select > 1) return 0;
    return Number((features >> BigInt(32 * select)) & 0xffff_ffffn);
  }

  // --- device status (§2.1, §3.1) --------------------------------------------------------

  get status(): number {
    return this.statusDuringReset ?? this.statusValue;
  }

  writeStatus(value: number): void {
    value &= 0xff;
    if (value === 0) {
      this.guestReset();
      return;
    }
    if (this.statusDuringReset !== undefined) {
      this.log.warn(`${this.id}: driver wrote status 0x${value.toString(16)} before the reset it asked for was done; ignored`);
      return;
    }
    const old = this.statusValue;
    // The device owns NEEDS_RESET; a driver write neither sets nor clears it.
    let next = (value & ~VIRTIO_CONFIG_S_NEEDS_RESET) | (old & VIRTIO_CONFIG_S_NEEDS_RESET);
    if (next & VIRTIO_CONFIG_S_FEATURES_OK && !(old & VIRTIO_CONFIG_S_FEATURES_OK)) {
      const refusal = this.checkFeatures();
      if (refusal !== undefined) {
        // §3.1.1 step 6: the driver re-reads status and finds FEATURES_OK unset.
        this.log.warn(`${this.id}: refusing the driver's features 0x${this.driverFeatures.toString(16)}: ${refusal}`);
        next &= ~VIRTIO_CONFIG_S_FEATURES_OK;
      }
    }
    this.statusValue = next;
    if (next & VIRTIO_CONFIG_S_DRIVER_OK && !(old & VIRTIO_CONFIG_S_DRIVER_OK)) this.activate();
  }

  private checkFeatures(): string | undefined {
    const unoffered = this.driverFeatures & ~this.offeredFeatures;
    if (unoffered !== 0n) return `bits 0x${unoffered.toString(16)} were not offered`;
    if ((this.driverFeatures & featureBit(VIRTIO_F_VERSION_1)) === 0n) return 'VIRTIO_F_VERSION_1 was not accepted (this device has no legacy interface)';
    return this.options.validateFeatures?.(this.driverFeatures);
  }

  /** DRIVER_OK: start every enabled queue on the data plane (§3.1.1 step 8). */
  private activate(): void {
    if (!(this.statusValue & VIRTIO_CONFIG_S_FEATURES_OK)) {
      this.needsReset('the driver set DRIVER_OK without FEATURES_OK');
      return;
    }
    this.queues.forEach((q, i) => {
      if (q.enabled) this.startQueue(i);
    });
  }

  private startQueue(index: number, cursor?: QueueCursor): void {
    const q = this.queues[index];
    const hooks = this.hooks;
    if (q === undefined || hooks === undefined || this.dataPlane === undefined || q.running) return;
    const config: QueueConfig = {
      size: q.size,
      descTable: q.desc,
      availRing: q.driver,
      usedRing: q.device,
      eventIdx: this.negotiated(VIRTIO_F_EVENT_IDX),
      indirectDesc: this.negotiated(VIRTIO_F_INDIRECT_DESC),
    };
    const kick = hooks.kickNotifier(index);
    this.notifiers.set(kick.fd, kick);
    q.running = true;
    this.dataPlane.startQueue(index, config, kick, hooks.interruptRoute(q.msixVector), cursor);
  }

  // --- queue configuration (§4.1.4.3 queue_*) -------------------------------------------

  get numQueues(): number {
    return this.queues.length;
  }

  /** queue_size write: only before the queue is enabled; checked when it starts. */
  setQueueSize(index: number, size: number): void {
    const q = this.queues[index];
    if (q === undefined || q.enabled) return;
    // §4.1.4.3.2: the driver may only reduce queue_size (to a power of 2); larger values are clamped.
    q.size = Math.min(size, q.maxSize);
  }

  setQueueAddress(index: number, which: 'desc' | 'driver' | 'device', half: 'lo' | 'hi', value: number): void {
    const q = this.queues[index];
    if (q === undefined || q.enabled) return;
    const cur = q[which];
    const lo = cur % 0x1_0000_0000;
    const hi = Math.floor(cur / 0x1_0000_0000);
    q[which] = half === 'lo' ? hi * 0x1_0000_0000 + (value >>> 0) : (value >>> 0) * 0x1_0000_0000 + lo;
  }

  /** queue_enable write: 1 enables (and starts the queue if the driver is already running); 0 is ignored (§4.1.4.3.2). */
  setQueueEnable(index: number, value: number): void {
    const q = this.queues[index];
    if (q === undefined || value !== 1 || q.enabled) return;
    q.enabled = true;
    if (this.statusValue & VIRTIO_CONFIG_S_DRIVER_OK && !(this.statusValue & VIRTIO_CONFIG_S_NEEDS_RESET)) this.startQueue(index);
  }

  /** queue_msix_vector (already checked by the transport). */
  setQueueVector(index: number, vector: number): void {
    const q = this.queues[index];
    if (q === undefined) return;
    q.msixVector = vector;
    if (q.running) this.dataPlane?.setInterrupt(index, this.hooks?.interruptRoute(vector) ?? { kind: 'none' });
  }

  /** The transport's interrupt delivery changed (MSI-X enabled/disabled, a vector's notifier): tell the data plane. */
  refreshInterruptRoutes(): void {
    const hooks = this.hooks;
    if (hooks === undefined) return;
    this.queues.forEach((q, i) => {
      if (q.running) this.dataPlane?.setInterrupt(i, hooks.interruptRoute(q.msixVector));
    });
  }

  // --- errors and resets (§2.1.2, §2.4) --------------------------------------------------

  /**
   * The device cannot go on (a malformed chain, a bad request): set
   * DEVICE_NEEDS_RESET and send a configuration change notification
   * (§2.1.2). Queues already stopped stay stopped until the driver resets.
   */
  needsReset(reason: string): void {
    this.lastError = reason;
    this.log.warn(`${this.id}: device needs reset: ${reason}`);
    if (this.statusValue & VIRTIO_CONFIG_S_NEEDS_RESET) return;
    this.statusValue |= VIRTIO_CONFIG_S_NEEDS_RESET;
    if (this.statusValue & VIRTIO_CONFIG_S_DRIVER_OK) this.hooks?.configInterrupt(this.configMsixVector);
  }

  /** The device-specific configuration changed: bump config_generation and notify (§2.5.1, §4.1.4.3). */
  configChanged(): void {
    this.configGeneration = (this.configGeneration + 1) & 0xff;
    if (this.statusValue & VIRTIO_CONFIG_S_DRIVER_OK) this.hooks?.configInterrupt(this.configMsixVector);
  }

  /** The driver wrote 0 to device_status: status reads as before until the data plane has stopped (§4.1.4.3.1). */
  private guestReset(): void {
    const ticket = ++this.resetTicket;
    this.statusDuringReset = this.statusValue === 0 ? undefined : this.statusValue;
    this.resetState();
    const done = this.dataPlane?.reset() ?? Promise.resolve();
    void done.then(() => {
      if (this.resetTicket === ticket) this.statusDuringReset = undefined;
    });
  }

  /** Machine reset: back to power-on state now; the data plane stops asynchronously. */
  reset(): void {
    this.resetTicket++;
    this.statusDuringReset = undefined;
    this.resetState();
    void this.dataPlane?.reset();
  }

  /** Resolves once a reset the driver asked for is complete (tests, migration). */
  async settled(): Promise<void> {
    while (this.statusDuringReset !== undefined) await new Promise((r) => setImmediate(r));
  }

  private resetState(): void {
    this.statusValue = 0;
    this.driverFeatures = 0n;
    this.deviceFeatureSelect = 0;
    this.driverFeatureSelect = 0;
    this.configMsixVector = VIRTIO_MSI_NO_VECTOR;
    this.lastError = undefined;
    this.queues.forEach((q, i) => {
      this.queues[i] = freshQueue(q.maxSize);
    });
  }

  // --- persistence (migration, snapshots) -------------------------------------------------

  /**
   * Stop taking requests and wait until those in flight have completed into
   * the used rings (QEMU drains the same way before saving a device); keeps
   * each queue's cursor for saveState() and unquiesce().
   */
  async quiesce(): Promise<void> {
    await this.settled();
    if (this.quiescedCursors !== undefined) return;
    const cursors = (await this.dataPlane?.quiesce()) ?? [];
    this.quiescedCursors = new Map(cursors.map((c) => [c.index, c.cursor]));
    for (const q of this.queues) q.running = false;
  }

  /** Run the queues again from where quiesce() (or loadState()) left them, and look at the rings at once. */
  unquiesce(): void {
    const cursors = this.quiescedCursors;
    this.quiescedCursors = undefined;
    if (cursors === undefined) return;
    if (!(this.statusValue & VIRTIO_CONFIG_S_DRIVER_OK) || this.statusValue & VIRTIO_CONFIG_S_NEEDS_RESET) return;
    for (const [index, cursor] of cursors) {
      if (!this.queues[index]?.enabled) continue;
      this.startQueue(index, cursor);
      // A kick that arrived while stopped (or on the source) must not be lost: look now.
      this.hooks?.kickNotifier(index).notify();
    }
  }

  saveState(): VirtioCommonState {
    const cursors = this.quiescedCursors;
    if (cursors === undefined && this.queues.some((q) => q.running)) throw new Error(`${this.id}: saveState() while queues run; quiesce() first`);
    return {
      status: this.statusValue,
      driverFeatures: this.driverFeatures,
      deviceFeatureSelect: this.deviceFeatureSelect,
      driverFeatureSelect: this.driverFeatureSelect,
      configMsixVector: this.configMsixVector,
      configGeneration: this.configGeneration,
      queues: this.queues.map((q, i) => ({
        size: q.size,
        enabled: q.enabled,
        desc: q.desc,
        driver: q.driver,
        device: q.device,
        msixVector: q.msixVector,
        cursor: cursors?.get(i) ?? null,
      })),
    };
  }

  /**
   * Restore a saved state into a realized device whose guest has not run:
   * the queues stay stopped (as after quiesce) until unquiesce() when the VM
   * starts, so nothing reaches the interrupt controllers before their own
   * state is restored. `state` is untrusted.
   */
  loadState(state: unknown, subject: string): void {
    const s = parseDeviceState(virtioCommonStateV1, state, subject);
    if (s.queues.length !== this.queues.length) throw new Error(`${subject}: the saved state has ${s.queues.length} queues, this device ${this.queues.length}`);
    const unoffered = s.driverFeatures & ~this.offeredFeatures;
    if (unoffered !== 0n) throw new Error(`${subject}: the saved driver features 0x${s.driverFeatures.toString(16)} include bits this device does not offer (0x${unoffered.toString(16)})`);
    this.statusValue = s.status;
    this.statusDuringReset = undefined;
    this.driverFeatures = s.driverFeatures;
    this.deviceFeatureSelect = s.deviceFeatureSelect;
    this.driverFeatureSelect = s.driverFeatureSelect;
    this.configMsixVector = s.configMsixVector;
    this.configGeneration = s.configGeneration;
    const cursors = new Map<number, QueueCursor>();
    s.queues.forEach((q, i) => {
      const maxSize = (this.queues[i] as VirtqueueRegisters).maxSize;
      if (q.size > maxSize) throw new Error(`${subject}: queue ${i} has size ${q.size}, more than its maximum ${maxSize}`);
      this.queues[i] = { maxSize, size: q.size, enabled: q.enabled, desc: q.desc, driver: q.driver, device: q.device, msixVector: q.msixVector, running: false };
      // A queue the driver enabled before DRIVER_OK has no cursor yet: it starts at the beginning.
      if (q.enabled) cursors.set(i, q.cursor ?? { nextAvail: 0, nextUsed: 0 });
    });
    this.quiescedCursors = cursors;
  }

  /** Stops the data plane for good and releases its backend. */
  async close(): Promise<void> {
    const dp = this.dataPlane;
    this.dataPlane = undefined;
    await dp?.close();
  }
}
