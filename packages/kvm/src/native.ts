/**
 * Loads the two addons built by node-gyp (binding.gyp) and describes their
 * raw interface. Nothing outside this package should import this module:
 * the raw binding trusts its caller with fd numbers and host addresses.
 *
 * - tsvmm_kvm.node (C, Node-API): system calls and the vCPU threads.
 * - tsvmm_guest_ram.node (C++, V8): a SharedArrayBuffer over a memfd,
 *   which Node-API cannot create.
 */
import { createRequire } from 'node:module';

declare const vmHandleBrand: unique symbol;
declare const vcpuHandleBrand: unique symbol;
/** An opaque, type-tagged native VM handle. */
/** Opaque handle of a readability watch (native/fdwatch.c). */
export type FdWatchHandle = { readonly __brand: 'FdWatchHandle' };

export interface VmHandle {
  readonly [vmHandleBrand]: true;
}
/** An opaque, type-tagged native vCPU handle. */
export interface VcpuHandle {
  readonly [vcpuHandleBrand]: true;
}

/** Post kinds in a poll token's low 4 bits (native/binding.h enum tsvmm_post_kind). */
export const POST_EXIT = 1;
export const POST_EVENT = 2;
export const POST_RUN_ERROR = 3;
export const POST_PAUSED = 4;
export const POST_ENDED = 5;

export interface KvmBinding {
  ioctl(fd: number, request: number, arg?: number | bigint | ArrayBufferView): number;
  openDevice(path: string): number;
  close(fd: number): void;
  eventfdCreate(initval: number, flags: number): number;
  eventfdRead(fd: number): bigint | null;
  eventfdWrite(fd: number, value: bigint): boolean;
  pollReadable(fd: number, timeoutMs: number): boolean;
  fdWatchReadable(fd: number, callback: (status: number) => void): FdWatchHandle;
  fdUnwatch(handle: FdWatchHandle): void;
  /** errno name and strerror text, as in the addon's own error messages */
  describeErrno(errnoValue: number): { code: string; text: string };

  vmCreate(kvmFd: number, type: number): VmHandle;
  vmFd(vm: VmHandle): number;
  vmSetUserMemoryRegion(
    vm: VmHandle,
    slot: number,
    flags: number,
    guestPhysAddr: bigint,
    memorySize: bigint,
    userspaceAddr: bigint,
  ): void;
  vmGetDirtyLog(vm: VmHandle, slot: number, bitmap: BigUint64Array): void;
  vmClearDirtyLog(vm: VmHandle, slot: number, firstPage: bigint, numPages: number, bitmap: BigUint64Array): void;
  /** Poll tokens: vCPU index << 4 | post kind, or -1 when nothing is pending. */
  vmDrainBegin(vm: VmHandle): number;
  vmPoll(vm: VmHandle): number;
  vmCompleteAndPoll(vm: VmHandle, index: number): number;
  vmSetPollBudget(vm: VmHandle, minNs: number, maxNs: number): void;
  vmPollBudget(vm: VmHandle): number;
  vmWakeStart(vm: VmHandle, onWake: () => void): void;
  vmWakeStop(vm: VmHandle): void;
  vmStopThreads(vm: VmHandle): void;
  vmClose(vm: VmHandle): void;

  vcpuCreate(vm: VmHandle, id: number): VcpuHandle;
  vcpuInfo(vcpu: VcpuHandle): { fd: number; index: number; runSize: number };
  vcpuRunBuffer(vcpu: VcpuHandle): ArrayBuffer;
  vcpuStart(vcpu: VcpuHandle, spinMinNs: number, spinMaxNs: number): void;
  vcpuRequestPause(vcpu: VcpuHandle): boolean;
  vcpuResume(vcpu: VcpuHandle): boolean;
  /** Completes post `seq` (-1: the one claimed last) if the vCPU still waits on it. */
  vcpuComplete(vcpu: VcpuHandle, seq: number): boolean;
  /** Sequence number of the post claimed last. */
  vcpuPostSeq(vcpu: VcpuHandle): number;
  vcpuRequestStop(vcpu: VcpuHandle): void;
  vcpuJoin(vcpu: VcpuHandle): void;
  vcpuStats(vcpu: VcpuHandle): number[];
  vcpuRunErrno(vcpu: VcpuHandle): number;
  vcpuGetXsave(vcpu: VcpuHandle): Uint8Array;
  vcpuSetXsave(vcpu: VcpuHandle, xsave: Uint8Array): void;
  vcpuClose(vcpu: VcpuHandle): void;
  kickSignal(): number;

  readonly constants: Readonly<Record<string, number>>;
  readonly layout: Readonly<Record<string, Readonly<Record<string, number>>>>;
  readonly statCount: number;
}

export interface GuestRamBinding {
  allocate(size: number, name: string): { buffer: SharedArrayBuffer; fd: number; hostAddress: bigint };
  hostAddressOf(buffer: SharedArrayBuffer): bigint;
}

const require = createRequire(import.meta.url);

function loadAddon(name: string): unknown {
  // dist/src/native.js -> ../../build/{Release,Debug}/<name>.node
  const candidates = [`../../build/Release/${name}.node`, `../../build/Debug/${name}.node`];
  let firstError: unknown;
  for (const candidate of candidates) {
    try {
      return require(candidate);
    } catch (err) {
      firstError ??= err;
    }
  }
  const reason = firstError instanceof Error ? firstError.message : String(firstError);
  throw new Error(
    `cannot load the native addon ${name}.node (${reason}); ` +
      'build it with `npm install` at the repository root or `npx node-gyp rebuild` in packages/kvm',
  );
}

function hasFunctions(value: unknown, names: readonly string[]): boolean {
  if (typeof value !== 'object' || value === null) return false;
  return names.every((n) => typeof (value as Record<string, unknown>)[n] === 'function');
}

const kvmAddon = loadAddon('tsvmm_kvm');
if (!hasFunctions(kvmAddon, ['ioctl', 'vmCreate', 'vcpuCreate', 'vmCompleteAndPoll'])) {
  throw new Error('tsvmm_kvm.node does not export the expected functions; rebuild packages/kvm');
}
const guestRamAddon = loadAddon('tsvmm_guest_ram');
if (!hasFunctions(guestRamAddon, ['allocate', 'hostAddressOf'])) {
  throw new Error('tsvmm_guest_ram.node does not export the expected functions; rebuild packages/kvm');
}

// The checks above are the runtime evidence for these two assertions.
export const kvmNative = kvmAddon as KvmBinding;
export const guestRamNative = guestRamAddon as GuestRamBinding;
