/**
 * /dev/kvm: the system ioctls and VM creation. Documentation/virt/kvm/api.rst
 * sections "KVM_GET_API_VERSION", "KVM_CREATE_VM",
 * "KVM_GET_MSR_INDEX_LIST, KVM_GET_MSR_FEATURE_INDEX_LIST",
 * "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE", "KVM_GET_SUPPORTED_CPUID",
 * "KVM_GET_EMULATED_CPUID", "KVM_GET_MSRS" (system ioctl form).
 */
import { kvmNative } from './native.js';
import { KVM_API_VERSION, KVM_CAP_MAX_VCPUS, KVM_CAP_NR_VCPUS } from './constants.js';
import { isKvmSystemError, KvmStateError, KvmUnavailableError } from './errors.js';
import { kvmIoctl } from './requests.js';
import type { IoctlName } from './requests.js';
import type { RunOptions } from './run-loop.js';
import { decodeCpuid2, decodeMsrList, decodeMsrs, encodeCpuid2, encodeMsrList, encodeMsrs } from './structs.js';
import type { KvmCpuidEntry2, KvmMsrEntry } from './structs.js';
import { KvmMsrError } from './vcpu.js';
import { Vm } from './vm.js';

export const DEFAULT_KVM_PATH = '/dev/kvm';

export interface CreateVmOptions {
  /** KVM_CREATE_VM machine type; 0 (the default) on x86 */
  type?: number;
  /** tuning of the exit handoff, see RunOptions */
  run?: Partial<RunOptions>;
}

function unavailableMessage(path: string, err: unknown): string {
  const code = isKvmSystemError(err) ? err.code : undefined;
  switch (code) {
    case 'ENOENT':
      return (
        `${path} does not exist: this host has no KVM. Load the kvm module (kvm_intel, kvm_amd or kvm_pvm), ` +
        'enable virtualization in the firmware, or run on a host (or nested-virtualization VM) that exposes /dev/kvm'
      );
    case 'EACCES':
    case 'EPERM':
      return (
        `${path} exists but this user may not open it (${code}). Add the user to the group that owns it ` +
        `(usually "kvm": sudo usermod -aG kvm $USER, then log in again) or adjust its permissions`
      );
    case 'ENXIO':
    case 'ENODEV':
      return `${path} exists but no KVM driver is bound to it (${code}); load kvm_intel, kvm_amd or kvm_pvm`;
    default:
      return `cannot open ${path}: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** GROWING ioctls: retry with a larger buffer while KVM answers E2BIG. */
function withGrowingBuffer<T>(initial: number, max: number, attempt: (capacity: number) => T): T {
  for (let capacity = initial; ; capacity *= 2) {
    try {
      return attempt(capacity);
    } catch (err) {
      if (capacity >= max || !isKvmSystemError(err) || err.code !== 'E2BIG') throw err;
    }
  }
}

export class Kvm {
  readonly path: string;
  private fdValue: number;

  private constructor(path: string, fd: number) {
    this.path = path;
    this.fdValue = fd;
  }

  /**
   * Opens /dev/kvm and checks KVM_GET_API_VERSION == 12 (api.rst: refuse to
   * run otherwise). Throws KvmUnavailableError saying what to do when the
   * device is missing or not accessible.
   */
  static open(path = DEFAULT_KVM_PATH): Kvm {
    let fd: number;
    try {
      fd = kvmNative.openDevice(path);
    } catch (err) {
      throw new KvmUnavailableError(unavailableMessage(path, err), path, { cause: err });
    }
    let version: number;
    try {
      version = kvmNative.ioctl(fd, kvmNative.constants.KVM_GET_API_VERSION ?? -1);
    } catch (err) {
      kvmNative.close(fd);
      throw new KvmUnavailableError(`${path} is not a KVM device`, path, { cause: err });
    }
    if (version !== KVM_API_VERSION) {
      kvmNative.close(fd);
      throw new KvmUnavailableError(
        `${path} speaks KVM API version ${version}; tsvmm needs version ${KVM_API_VERSION}`,
        path,
      );
    }
    return new Kvm(path, fd);
  }

  get fd(): number {
    if (this.fdValue < 0) throw new KvmStateError('ERR_KVM_CLOSED', `${this.path} is closed`);
    return this.fdValue;
  }

  /** KVM_CHECK_EXTENSION on /dev/kvm: 0 when absent, else 1 or a cap-specific value. */
  checkExtension(cap: number): number {
    return this.ioctl('KVM_CHECK_EXTENSION', cap);
  }

  /** KVM_GET_VCPU_MMAP_SIZE: bytes of the kvm_run mapping. */
  vcpuMmapSize(): number {
    return this.ioctl('KVM_GET_VCPU_MMAP_SIZE');
  }

  /** KVM_CAP_NR_VCPUS: the number of vCPUs the host recommends. */
  recommendedVcpus(): number {
    return this.checkExtension(KVM_CAP_NR_VCPUS) || 4;
  }

  /** KVM_CAP_MAX_VCPUS: the most vCPUs a VM may have. */
  maxVcpus(): number {
    return this.checkExtension(KVM_CAP_MAX_VCPUS) || this.recommendedVcpus();
  }

  /** KVM_GET_SUPPORTED_CPUID: what KVM can expose to a guest on this host. */
  supportedCpuid(): KvmCpuidEntry2[] {
    return this.cpuid('KVM_GET_SUPPORTED_CPUID');
  }

  /** KVM_GET_EMULATED_CPUID: features KVM emulates in software. */
  emulatedCpuid(): KvmCpuidEntry2[] {
    return this.cpuid('KVM_GET_EMULATED_CPUID');
  }

  /** KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and restores for a guest. */
  msrIndexList(): number[] {
    return this.msrList('KVM_GET_MSR_INDEX_LIST');
  }

  /** KVM_GET_MSR_FEATURE_INDEX_LIST: feature MSRs readable with featureMsrs(). */
  msrFeatureIndexList(): number[] {
    return this.msrList('KVM_GET_MSR_FEATURE_INDEX_LIST');
  }

  /** KVM_GET_MSRS on /dev/kvm: values of feature MSRs (KVM_CAP_GET_MSR_FEATURES). */
  featureMsrs(indices: readonly number[]): KvmMsrEntry[] {
    const bytes = encodeMsrs(indices.map((index) => ({ index, data: 0n })));
    const n = this.ioctl('KVM_GET_MSRS', bytes);
    if (n < indices.length) throw new KvmMsrError('KVM_GET_MSRS', indices[n] ?? -1, n);
    return decodeMsrs(bytes, n);
  }

  /** KVM_CREATE_VM. The VM is independent of this Kvm handle's lifetime. */
  createVm(options: CreateVmOptions = {}): Vm {
    const handle = kvmNative.vmCreate(this.fd, options.type ?? 0);
    return new Vm(this, handle, options.run ?? {});
  }

  close(): void {
    if (this.fdValue < 0) return;
    const fd = this.fdValue;
    this.fdValue = -1;
    kvmNative.close(fd);
  }

  private cpuid(name: 'KVM_GET_SUPPORTED_CPUID' | 'KVM_GET_EMULATED_CPUID'): KvmCpuidEntry2[] {
    return withGrowingBuffer(128, 4096, (capacity) => {
      const bytes = encodeCpuid2([], capacity);
      this.ioctl(name, bytes);
      return decodeCpuid2(bytes);
    });
  }

  private msrList(name: 'KVM_GET_MSR_INDEX_LIST' | 'KVM_GET_MSR_FEATURE_INDEX_LIST'): number[] {
    return withGrowingBuffer(256, 65536, (capacity) => {
      const bytes = encodeMsrList(capacity);
      this.ioctl(name, bytes);
      return decodeMsrList(bytes);
    });
  }

  private ioctl(name: IoctlName, arg?: number | bigint | ArrayBufferView): number {
    return kvmIoctl(this.fd, name, arg);
  }
}
