/**
 * @tsvmm/kvm: Linux KVM for TypeScript. A thin native addon does the system
 * calls and runs vCPUs on native threads; this facade gives typed objects.
 * Documentation/virt/kvm/api.rst is the reference for every ioctl named here.
 *
 *   const kvm = Kvm.open();
 *   const vm = kvm.createVm();
 *   const ram = GuestRam.allocate(2 << 20);
 *   vm.setUserMemoryRegion({ slot: 0, guestPhysAddr: 0, ram });
 *   const vcpu = vm.createVcpu(0);
 *   vcpu.setRegs({ ...vcpu.getRegs(), rip: 0x1000n, rflags: 2n });
 *   vm.startVcpus({ pio, mmio, event });
 */
export * from './constants.js';
export { isKvmSystemError, KvmCapabilityError, KvmStateError, KvmUnavailableError } from './errors.js';
export type { KvmStateErrorCode, KvmSystemError } from './errors.js';
export { EventFd } from './eventfd.js';
export type { EventFdOptions, EventFdWatch } from './eventfd.js';
export { decodeEvent, exitReasonName, KVM_RUN_OFFSETS } from './exits.js';
export type { ExitHandlers, VcpuEvent, VcpuExitStats } from './exits.js';
export { GuestRam, PAGE_SIZE } from './guest-ram.js';
export type { GuestRamOptions } from './guest-ram.js';
export { DEFAULT_KVM_PATH, Kvm } from './kvm.js';
export type { CreateVmOptions } from './kvm.js';
export { DEFAULT_RUN_OPTIONS } from './run-loop.js';
export type { RunOptions, VcpuRunState } from './run-loop.js';
export type {
  KvmClockData,
  KvmCpuidEntry2,
  KvmDebugregs,
  KvmDtable,
  KvmFpu,
  KvmIrqRoutingEntry,
  KvmIrqRoutingIrqchip,
  KvmIrqRoutingMsi,
  KvmMsi,
  KvmMsrEntry,
  KvmRegs,
  KvmSegment,
  KvmSregs,
  KvmVcpuEvents,
  KvmXcrs,
} from './structs.js';
export { KvmMsrError, Vcpu } from './vcpu.js';
export { Vm } from './vm.js';
export type { IoeventfdSpec, IrqfdSpec, UserMemoryRegion } from './vm.js';
