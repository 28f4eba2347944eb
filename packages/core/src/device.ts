/**
 * The device contract. A device type (registered by a plugin of kind `device`)
 * declares its properties as a schema and creates devices; a device is a plain
 * class with a small lifecycle: realize (claim its ranges, IRQs, backends),
 * reset (power-on state), unrealize (release everything it claimed).
 */
import type { z } from 'zod';
import type { InterruptAndNotifyServices } from './accelerator.js';
import type { IoThread } from './iothread.js';
import type { DriveSpec } from './machine-description.js';
import type { PluginRegistry } from './plugin-loader.js';
import type { AddressSpace } from './address-space.js';
import type { Chardev } from './chardev.js';
import type { FirmwareConfig } from './firmware-config.js';
import type { GuestMemory } from './guest-memory.js';
import type { IrqLine } from './irq.js';
import type { Logger } from './logger.js';
import type { VirtualTimer } from './virtual-timer.js';

export type DeviceBus = 'system' | 'isa' | 'pci';

/** What a device may know about the machine it sits in. */
export interface MachineInfo {
  readonly machineType: string;
  readonly ramSize: number;
  readonly ramBelowFourGiB: number;
  readonly ramAboveFourGiB: number;
  readonly cpus: number;
  readonly maxCpus: number;
  readonly kernelCmdline: string;
}

/** A clock that advances only while the VM runs (for timers that guests read). */
export interface VirtualClock {
  /** nanoseconds of run time since the machine was created */
  nowNs(): bigint;
  /** host wall-clock time the guest RTC starts from */
  wallClockAtStart(): Date;
  /**
   * A timer on this clock (virtual-timer.ts): armed with a deadline in run
   * time, its callback runs on the main thread once the VM has run that long;
   * it does not fire while the VM is paused.
   */
  createTimer(callback: () => void): VirtualTimer;
}

export interface DeviceContext {
  readonly pio: AddressSpace;
  readonly mmio: AddressSpace;
  readonly memory: GuestMemory;
  readonly machine: MachineInfo;
  readonly fwCfg: FirmwareConfig;
  readonly clock: VirtualClock;
  readonly log: Logger;
  irq(gsi: number): IrqLine;
  /** a chardev created for this machine (e.g. `serial0`); undefined if none by that id */
  chardev(id: string): Chardev | undefined;
  /** hardware reset of the whole machine (keyboard controller 0xFE, triple fault, reset control register) */
  requestReset(reason: string): void;
  /** power off (ACPI S5) */
  requestShutdown(reason: string): void;
  /** end the VMM process with this status (isa-debug-exit) */
  requestExit(status: number, reason: string): void;
  /** eventfds, ioeventfds (guest writes that signal without an exit), irqfds and MSI routes */
  readonly notify: InterruptAndNotifyServices;
  /** offer a service to devices realized later (e.g. the PCI root bus), under a token */
  provide<T>(token: symbol, service: T): void;
  /** a service another device offered, or undefined */
  lookup<T>(token: symbol): T | undefined;
  /** the iothread with this id (`--object iothread,id=...`); throws a ConfigError naming it if there is none */
  iothread(id: string): IoThread;
  /** the drive with this id (`--drive ...,id=...`); throws a ConfigError naming it if there is none */
  drive(id: string): DriveSpec;
  /**
   * The entropy source of an rng object (`--object rng-random,id=...,filename=...`
   * or `rng-builtin`); throws a ConfigError naming it if there is none.
   */
  rngBackend(id: string): RngBackend;
  /** the plugin registry, for devices that use other kinds of plugins (block drivers, chardev backends) */
  readonly plugins: PluginRegistry;
  /**
   * Program the PIC's edge/level control (the PIIX ELCR pair, bit n = IRQ n
   * level-triggered), as firmware does; a no-op where the accelerator has no PIC.
   */
  setPicElcr(mask: number): void;
}

/** An entropy source object, resolved: the file or device to read. */
export interface RngBackend {
  id: string;
  filename: string;
}

export interface Device {
  readonly id: string;
  /** the device type name, e.g. `isa-serial` */
  readonly typeName: string;
  realize(ctx: DeviceContext): void | Promise<void>;
  /** back to the power-on state; ranges and IRQs stay claimed */
  reset(): void;
  /** release every range, IRQ and backend the device claimed */
  unrealize(): void | Promise<void>;
  /** properties as shown in `vm/status` and `device/list` */
  describe(): Record<string, unknown>;
  /**
   * Called once every device is realized, before the guest first runs and
   * again before it runs after each reset — where a device does what firmware
   * would (the PCI host assigns bus numbers, BARs and interrupt lines).
   */
  machineReady?(): void;

  // --- persistence (migration, snapshots) -----------------------------------------------
  // Firecracker's `Persist`: a device saves its state as plain data tagged with
  // a version, and loads any version its type lists in loadableStateVersions.
  // A device without saveState/loadState blocks migration (the error names it).

  /** the version of the state saveState() writes */
  readonly stateVersion?: number;
  /**
   * The device's state as plain data: JSON values, plus `bigint` and
   * `Uint8Array` (the stream codec keeps both). Called on the main thread with
   * the vCPUs paused and, if the device has quiesce(), after it resolved.
   */
  saveState?(): DeviceState;
  /**
   * Restore a state written by saveState() of this or an older release: the
   * device is realized (with the destination's context) and the VM has not
   * run yet. `state` comes from a stream, so it is untrusted: check its shape
   * and throw an Error saying what is wrong; the migration is then refused.
   * Re-derive outputs from it (IRQ line levels, mappings) before returning.
   */
  loadState?(version: number, state: DeviceState): void;
  /**
   * Finish requests in flight (DMA into guest RAM) and stop taking new ones,
   * before the final saveState(). Called with the vCPUs paused.
   */
  quiesce?(): Promise<void>;
  /** Undo quiesce(): the migration failed (or the source is resumed afterwards) and the VM runs on. */
  unquiesce?(): void;
}

/** A device's saved state: JSON values, bigint and Uint8Array (see Device.saveState). */
export type DeviceState = unknown;

export interface DeviceTypeDefinition<P = unknown> {
  readonly name: string;
  readonly description: string;
  readonly bus: DeviceBus;
  readonly hotpluggable: boolean;
  /** property schema; unknown keys must be rejected (use z.strictObject) */
  readonly properties: z.ZodType<P>;
  /** a prefix for generated ids (`serial` → `serial0`, `serial1`) */
  readonly idPrefix?: string;
  /**
   * State versions this type's devices can load (Device.loadState). A newer
   * plugin keeps every version older releases wrote (ARCHITECTURE.md "Plugins").
   * Default: just the devices' own stateVersion.
   */
  readonly loadableStateVersions?: readonly number[];
  create(id: string, props: P): Device;
}

/** Identity helper so plugin authors get property types inferred from the schema. */
export function defineDeviceType<S extends z.ZodType>(def: {
  name: string;
  description: string;
  bus: DeviceBus;
  hotpluggable: boolean;
  properties: S;
  idPrefix?: string;
  loadableStateVersions?: readonly number[];
  create(id: string, props: z.output<S>): Device;
}): DeviceTypeDefinition<z.output<S>> {
  return def as DeviceTypeDefinition<z.output<S>>;
}
