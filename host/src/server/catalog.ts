/**
 * What the installed plugins provide, for `initialize`, `plugin/list`,
 * `machine/listTypes` and `cpu/listModels`. Read from the same plugin
 * registry the VM processes build, so what the server advertises is what a
 * VM can use. Chipset and device plugins are imported once, on first use, to
 * read their definitions; a plugin that fails to load is reported in the log
 * and left out rather than failing `initialize`.
 *
 * `cpu/listModels` also says whether this host runs each model: the CPU
 * composition (listCpuModels, as `tsvmm run --cpu help`) against the
 * accelerator the VM processes use — KVM, or the fake one under
 * TSVMM_TEST_ACCELERATOR=fake — asked once.
 */
import {
  errorCauses,
  hostCpuCapabilities,
  listCpuModels,
  type Accelerator,
  type CpuModelDefinition,
  type DeviceTypeDefinition,
  type ListCpuModelsHost,
  type MachineTypeDefinition,
  type PluginRegistry,
} from '@tsvmm/core';
import type { CpuModelListingInfo, InitializeResult } from '@tsvmm/protocol';
import { createPluginRegistry } from '../plugins.js';
import { FAKE_ACCELERATOR_ENV } from '../vm-process/channel.js';
import { FakeAccelerator } from '../vm-process/fake-accelerator.js';

type Caps = InitializeResult['capabilities'];

/** This host's CPU support as the VM processes' accelerator reports it, or why it cannot be had. */
async function probeHostCpu(): Promise<{ host: ListCpuModelsHost } | { reason: string }> {
  try {
    const accel: Accelerator =
      process.env[FAKE_ACCELERATOR_ENV] === 'fake' ? new FakeAccelerator() : (await import('@tsvmm/core/kvm')).createKvmAccelerator();
    const support = accel.hostCpuSupport();
    const hostCaps = hostCpuCapabilities((cap) => support.checkExtension(cap), {
      irqchip: 'kernel',
      ...(support.modelId !== undefined ? { modelId: support.modelId } : {}),
    });
    return { host: { supported: support.supportedCpuid, hostCaps } };
  } catch (err) {
    return { reason: errorCauses(err).join(': ') };
  }
}

export class PluginCatalog {
  private registry: PluginRegistry | undefined;
  private loaded: Promise<void> | undefined;
  private loadProblems: string[] = [];

  constructor(private readonly warn: (message: string) => void) {}

  private reg(): PluginRegistry {
    this.registry ??= createPluginRegistry([], this.warn);
    return this.registry;
  }

  private async ensureLoaded(): Promise<PluginRegistry> {
    const reg = this.reg();
    this.loaded ??= (async () => {
      for (const kind of ['chipset', 'device'] as const) {
        for (const name of reg.provided(kind)) {
          try {
            await reg.ensure(kind, name);
          } catch (err) {
            const msg = err instanceof Error ? err.message : String(err);
            this.loadProblems.push(msg);
            this.warn(msg);
          }
        }
      }
    })();
    await this.loaded;
    return reg;
  }

  plugins(): Caps['plugins'] {
    return this.reg()
      .list()
      .map((p) => ({
        name: p.manifest.name,
        version: p.manifest.version,
        kind: p.manifest.kind,
        api: p.manifest.api,
        provides: [...p.manifest.provides],
        origin: p.origin,
        loaded: p.loaded,
      }));
  }

  async machineTypes(): Promise<Caps['machineTypes']> {
    const reg = await this.ensureLoaded();
    return reg.definitions<MachineTypeDefinition>('chipset').map((m) => ({
      name: m.name,
      aliases: [...m.aliases],
      description: m.description,
      isDefault: m.isDefault,
      maxCpus: m.maxCpus,
      defaultCpuModel: m.defaultCpuModel,
      plugin: reg.providerOf('chipset', m.name)?.manifest.name ?? 'unknown',
    }));
  }

  async deviceTypes(): Promise<Caps['deviceTypes']> {
    const reg = await this.ensureLoaded();
    return reg
      .definitions<DeviceTypeDefinition>('device')
      .map((d) => ({
        name: d.name,
        description: d.description,
        bus: d.bus,
        hotpluggable: d.hotpluggable,
        plugin: reg.providerOf('device', d.name)?.manifest.name ?? 'unknown',
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  private hostCpu: Promise<{ host: ListCpuModelsHost } | { reason: string }> | undefined;

  /** Every cpu-model plugin's models with their features, and whether this host runs each. */
  async cpuModelListing(): Promise<CpuModelListingInfo[]> {
    const reg = this.reg();
    await reg.loadAll('cpu-model');
    // Not loadCpuModels: a broken definition is listed with its problems rather than failing the request.
    const defs = reg.definitions<CpuModelDefinition>('cpu-model');
    this.hostCpu ??= probeHostCpu();
    const probe = await this.hostCpu;
    const host = 'host' in probe ? probe.host : undefined;
    return listCpuModels(defs, host).map((m) => ({
      ...m,
      plugin: reg.providerOf('cpu-model', m.name)?.manifest.name ?? 'unknown',
      runnable: m.runnable ?? null,
      ...('reason' in probe && m.runnable === undefined ? { hostUnknownReason: probe.reason } : {}),
    }));
  }

  cpuModels(): Caps['cpuModels'] {
    const reg = this.reg();
    return reg.provided('cpu-model').map((name) => ({ name, plugin: reg.providerOf('cpu-model', name)?.manifest.name ?? 'unknown' }));
  }

  provided(kind: 'block-driver' | 'migration-strategy'): string[] {
    return this.reg().provided(kind);
  }
}
