/**
 * The x86 CPU models plugin. Each definition is registered under the
 * cpu-model token; the core composes it with the host's KVM support.
 */
import { PluginTokens, type CpuModelDefinition, type PluginContext, type TsvmmPlugin } from '@tsvmm/core';
import { kvm64, qemu64 } from './generic.js';
import { host } from './host.js';
import { haswell, haswellNoTsx, sandyBridge } from './intel.js';
import { opteronG1, opteronG2, opteronG3, opteronG4, opteronG5 } from './opteron.js';

export { host, kvm64, qemu64, haswell, haswellNoTsx, sandyBridge, opteronG1, opteronG2, opteronG3, opteronG4, opteronG5 };

export const cpuModels: readonly CpuModelDefinition[] = [
  qemu64,
  kvm64,
  opteronG1,
  opteronG2,
  opteronG3,
  opteronG4,
  opteronG5,
  sandyBridge,
  haswell,
  haswellNoTsx,
  host,
];

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    for (const def of cpuModels) ctx.container.register(PluginTokens['cpu-model'], { useValue: def });
  },
};
export default plugin;
