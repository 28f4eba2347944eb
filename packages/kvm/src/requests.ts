/**
 * ioctl request numbers, taken from the addon (they are computed by the
 * _IOR/_IOW macros of the headers it was compiled with) so TypeScript never
 * hand-encodes one. Internal to the package.
 */
import { kvmNative } from './native.js';

const IOCTL_NAMES = [
  'KVM_GET_API_VERSION',
  'KVM_CHECK_EXTENSION',
  'KVM_GET_VCPU_MMAP_SIZE',
  'KVM_GET_SUPPORTED_CPUID',
  'KVM_GET_EMULATED_CPUID',
  'KVM_GET_MSR_INDEX_LIST',
  'KVM_GET_MSR_FEATURE_INDEX_LIST',
  'KVM_SET_TSS_ADDR',
  'KVM_SET_IDENTITY_MAP_ADDR',
  'KVM_CREATE_IRQCHIP',
  'KVM_CREATE_PIT2',
  'KVM_IRQ_LINE',
  'KVM_IRQ_LINE_STATUS',
  'KVM_SIGNAL_MSI',
  'KVM_SET_GSI_ROUTING',
  'KVM_IOEVENTFD',
  'KVM_IRQFD',
  'KVM_GET_CLOCK',
  'KVM_SET_CLOCK',
  'KVM_ENABLE_CAP',
  'KVM_GET_IRQCHIP',
  'KVM_SET_IRQCHIP',
  'KVM_GET_PIT2',
  'KVM_SET_PIT2',
  'KVM_SET_BOOT_CPU_ID',
  'KVM_GET_REGS',
  'KVM_SET_REGS',
  'KVM_GET_SREGS',
  'KVM_SET_SREGS',
  'KVM_GET_FPU',
  'KVM_SET_FPU',
  'KVM_GET_MSRS',
  'KVM_SET_MSRS',
  'KVM_SET_CPUID2',
  'KVM_GET_CPUID2',
  'KVM_GET_LAPIC',
  'KVM_SET_LAPIC',
  'KVM_GET_MP_STATE',
  'KVM_SET_MP_STATE',
  'KVM_GET_VCPU_EVENTS',
  'KVM_SET_VCPU_EVENTS',
  'KVM_GET_XCRS',
  'KVM_SET_XCRS',
  'KVM_GET_DEBUGREGS',
  'KVM_SET_DEBUGREGS',
  'KVM_INTERRUPT',
  'KVM_NMI',
  'KVM_GET_TSC_KHZ',
  'KVM_SET_TSC_KHZ',
  'KVM_KVMCLOCK_CTRL',
] as const;

export type IoctlName = (typeof IOCTL_NAMES)[number];

function collect(): Readonly<Record<IoctlName, number>> {
  const out: Partial<Record<IoctlName, number>> = {};
  for (const name of IOCTL_NAMES) {
    const value = kvmNative.constants[name];
    if (typeof value !== 'number') throw new Error(`tsvmm_kvm.node does not know ${name}; rebuild packages/kvm`);
    out[name] = value;
  }
  return out as Record<IoctlName, number>;
}

export const ioctlRequest = collect();

/** ioctl with a request taken by name; returns the ioctl's non-negative result. */
export function kvmIoctl(fd: number, name: IoctlName, arg?: number | bigint | ArrayBufferView): number {
  return kvmNative.ioctl(fd, ioctlRequest[name], arg);
}
