/**
 * `host/capabilities`: what this host and build can do, feature by feature,
 * with the reason when not (libvirt's domcapabilities plays this role).
 *
 * KVM facts come from the @tsvmm/kvm facade (KVM_GET_API_VERSION,
 * KVM_CHECK_EXTENSION; Linux Documentation/virt/kvm/api.rst §4.1, §4.4).
 * When /dev/kvm cannot be opened, what can be seen without it (presence,
 * permissions) is still reported and every KVM feature says why it is unknown.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import type { HostCapabilities, HostFeature } from '@tsvmm/protocol';

const KVM_DEVICE = '/dev/kvm';

/** The capabilities reported by name, and the tsvmm feature each one backs. */
const KVM_CAPS: { cap: string; feature: string; why: string }[] = [
  { cap: 'KVM_CAP_IRQCHIP', feature: 'irqchip', why: 'in-kernel PIC, IOAPIC and LAPIC' },
  { cap: 'KVM_CAP_PIT2', feature: 'pit', why: 'in-kernel i8254 PIT' },
  { cap: 'KVM_CAP_IOEVENTFD', feature: 'ioeventfd', why: 'virtqueue kicks without a userspace exit' },
  { cap: 'KVM_CAP_IRQFD', feature: 'irqfd', why: 'interrupts from iothreads' },
  { cap: 'KVM_CAP_SIGNAL_MSI', feature: 'msi', why: 'MSI injection' },
  { cap: 'KVM_CAP_IRQ_ROUTING', feature: 'irq-routing', why: 'GSI routing for MSI and the IOAPIC' },
  { cap: 'KVM_CAP_READONLY_MEM', feature: 'readonly-memory', why: 'ROM regions' },
  { cap: 'KVM_CAP_ADJUST_CLOCK', feature: 'kvmclock-adjust', why: 'guest clock save/restore' },
  { cap: 'KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2', feature: 'dirty-log', why: 'dirty page tracking for migration' },
  { cap: 'KVM_CAP_DIRTY_LOG_RING', feature: 'dirty-ring', why: 'dirty ring for migration' },
  { cap: 'KVM_CAP_X2APIC_API', feature: 'x2apic', why: 'x2APIC IDs above 255' },
  { cap: 'KVM_CAP_TSC_CONTROL', feature: 'tsc-scaling', why: 'a guest TSC frequency different from the host\'s' },
  { cap: 'KVM_CAP_HYPERV', feature: 'hyperv-enlightenments', why: 'Hyper-V enlightenments for Windows guests' },
  { cap: 'KVM_CAP_IMMEDIATE_EXIT', feature: 'immediate-exit', why: 'prompt vCPU pause' },
];

interface KvmFacade {
  open(): { checkExtension(cap: number): number; recommendedVcpus(): number; maxVcpus(): number; close(): void };
  constants: Record<string, unknown>;
}

/** Load the KVM facade; undefined (with the reason) when the native addon is not built or cannot load. */
async function loadKvmFacade(): Promise<{ facade?: KvmFacade; reason?: string }> {
  try {
    const mod = await import('@tsvmm/kvm');
    const constants: Record<string, unknown> = { ...mod };
    return { facade: { open: () => mod.Kvm.open(), constants } };
  } catch (err) {
    return { reason: `the @tsvmm/kvm native addon cannot be loaded: ${err instanceof Error ? err.message : String(err)}` };
  }
}

function access(path: string, mode: number): boolean {
  try {
    fs.accessSync(path, mode);
    return true;
  } catch {
    return false;
  }
}

export async function probeHostCapabilities(): Promise<HostCapabilities> {
  const present = fs.existsSync(KVM_DEVICE);
  const readable = present && access(KVM_DEVICE, fs.constants.R_OK);
  const writable = present && access(KVM_DEVICE, fs.constants.W_OK);
  const kvm: HostCapabilities['kvm'] = { device: KVM_DEVICE, present, readable, writable, usable: false };
  const features: HostFeature[] = [];
  let capabilities: Record<string, number> | undefined;
  let unknownReason: string | undefined;

  if (!present) unknownReason = `${KVM_DEVICE} does not exist: this host has no KVM (load kvm_intel, kvm_amd or kvm_pvm)`;
  else if (!readable || !writable) unknownReason = `${KVM_DEVICE} is not readable and writable by this user (add the user to the kvm group)`;
  else {
    const { facade, reason } = await loadKvmFacade();
    if (facade === undefined) unknownReason = reason;
    else {
      try {
        const handle = facade.open();
        try {
          kvm.usable = true;
          kvm.apiVersion = 12; // Kvm.open() refuses any other KVM_GET_API_VERSION
          capabilities = {};
          for (const { cap } of KVM_CAPS) {
            const value = facade.constants[cap];
            if (typeof value === 'number') capabilities[cap] = handle.checkExtension(value);
          }
          capabilities['KVM_CAP_NR_VCPUS'] = handle.recommendedVcpus();
          capabilities['KVM_CAP_MAX_VCPUS'] = handle.maxVcpus();
          kvm.capabilities = capabilities;
        } finally {
          handle.close();
        }
      } catch (err) {
        kvm.usable = false;
        unknownReason = err instanceof Error ? err.message : String(err);
      }
    }
  }
  if (unknownReason !== undefined) kvm.reason = unknownReason;

  features.push(
    kvm.usable
      ? { name: 'kvm', available: true, detail: `KVM API 12, ${capabilities?.['KVM_CAP_NR_VCPUS'] ?? '?'} recommended vCPUs` }
      : { name: 'kvm', available: false, reason: unknownReason ?? 'KVM is not usable' },
  );
  for (const { cap, feature, why } of KVM_CAPS) {
    if (capabilities === undefined) {
      features.push({ name: feature, available: false, reason: `unknown: ${unknownReason ?? 'KVM capabilities could not be queried'}`, detail: why });
      continue;
    }
    const value = capabilities[cap];
    if (value !== undefined && value > 0) features.push({ name: feature, available: true, detail: why });
    else features.push({ name: feature, available: false, reason: `${cap} not supported by this host's KVM`, detail: why });
  }
  features.push(
    { name: 'hotplug', available: false, reason: 'not implemented yet: no hot-plug controller (ACPI PCI hot-plug arrives in a later release)' },
    kvm.usable
      ? { name: 'migration', available: true, detail: 'live migration (precopy, xbzrle) over tcp/unix and save/restore to a file, with KVM dirty logging' }
      : { name: 'migration', available: false, reason: `needs KVM: ${unknownReason ?? 'KVM is not usable'}` },
  );
  return { arch: os.arch(), platform: os.platform(), cpus: os.cpus().length, kvm, features };
}
