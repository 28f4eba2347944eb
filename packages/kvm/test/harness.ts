/**
 * Test harness: a VM with 1 MiB of RAM at guest-physical 0, hand-assembled
 * code at CODE_ADDR, and helpers to run vCPUs until an event.
 */
import { GuestRam, Kvm } from '../src/index.js';
import type { ExitHandlers, Vcpu, VcpuEvent, Vm } from '../src/index.js';
import type { GuestCode } from './guest-code.js';
import { CODE_ADDR, enterFlatProtectedMode, enterRealMode } from './guest-setup.js';

export const RAM_SIZE = 1 << 20;
/** Where KVM_SET_TSS_ADDR puts its three pages: outside RAM, below 4 GiB. */
export const TSS_ADDR = 0xfffbd000;

let sharedKvm: Kvm | undefined;

export function kvm(): Kvm {
  sharedKvm ??= Kvm.open();
  return sharedKvm;
}

export interface TestVm {
  vm: Vm;
  ram: GuestRam;
  vcpus: Vcpu[];
  close(): void;
}

export interface TestVmOptions {
  irqchip?: boolean;
  vcpus?: number;
  mode?: 'protected' | 'real';
  ramFlags?: number;
}

const openVms = new Set<TestVm>();

/**
 * Closes VMs a failed or timed-out test left open (mocha abandons a pending
 * test body, so its `finally` never runs); use as `afterEach(closeLeftoverVms)`.
 * Closing stops and joins vCPU threads, so the test process can exit.
 */
export function closeLeftoverVms(): void {
  for (const t of openVms) t.close();
}

export function createTestVm(code: GuestCode | undefined, options: TestVmOptions = {}): TestVm {
  const vm = kvm().createVm();
  try {
    vm.setTssAddr(TSS_ADDR);
    if (options.irqchip === true) vm.createIrqchip();
    const ram = GuestRam.allocate(RAM_SIZE, { name: 'tsvmm-test-ram' });
    vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, ram, flags: options.ramFlags ?? 0 });
    if (code !== undefined) loadCode(ram, code, CODE_ADDR);
    const vcpus: Vcpu[] = [];
    for (let id = 0; id < (options.vcpus ?? 1); id++) vcpus.push(vm.createVcpu(id));
    const first = vcpus[0];
    if (first !== undefined) {
      if (options.mode === 'real') enterRealMode(first);
      else enterFlatProtectedMode(first);
    }
    const t: TestVm = {
      vm,
      ram,
      vcpus,
      close: () => {
        openVms.delete(t);
        vm.close();
      },
    };
    openVms.add(t);
    return t;
  } catch (err) {
    vm.close();
    throw err;
  }
}

export function loadCode(ram: GuestRam, code: GuestCode, addr: number): void {
  ram.bytes(addr, code.length).set(code.bytes());
}

export interface PioAccess {
  port: number;
  size: number;
  isWrite: boolean;
  value: number;
  vcpu: number;
}

export function readLe(data: Uint8Array): number {
  let v = 0;
  for (let i = data.length - 1; i >= 0; i--) v = v * 256 + (data[i] ?? 0);
  return v;
}

export function writeLe(data: Uint8Array, value: number): void {
  let v = value;
  for (let i = 0; i < data.length; i++) {
    data[i] = v % 256;
    v = Math.floor(v / 256);
  }
}

/**
 * Starts the vCPUs and resolves with the first event (the vCPU stays
 * parked). Rejects after timeoutMs. `handlers` may override pio/mmio.
 */
export function runUntilEvent(
  t: TestVm,
  handlers: Partial<Omit<ExitHandlers, 'event'>> = {},
  timeoutMs = 20_000,
): Promise<{ vcpu: Vcpu; event: VcpuEvent }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no vCPU event within ${timeoutMs} ms`)), timeoutMs);
    t.vm.startVcpus({
      pio: handlers.pio ?? (() => {}),
      mmio: handlers.mmio ?? (() => {}),
      event(vcpu, event) {
        clearTimeout(timer);
        resolve({ vcpu, event });
      },
    });
  });
}

/** Rejects with a message naming `what` unless `promise` settles within timeoutMs. */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** Resolves after `ms` on a timer (keeps the loop busy independently of vCPUs). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
