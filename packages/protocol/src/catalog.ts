/**
 * What is installed: plugins, the machine types and CPU models they provide
 * (ARCHITECTURE.md "Plugins").
 */
import { z } from 'zod';
import { defineRequest } from './define.js';

export const pluginInfoSchema = z.object({
  name: z.string().describe('npm package name'),
  version: z.string(),
  kind: z.string().describe('device | chipset | cpu-model | block-driver | migration-strategy | chardev-backend | net-backend'),
  api: z.string().describe('the plugin API range it was built against'),
  provides: z.array(z.string()),
  origin: z.enum(['path', 'node_modules']),
  loaded: z.boolean().describe('whether its entry module has been imported by the server'),
});

export const machineTypeInfoSchema = z.object({
  name: z.string(),
  aliases: z.array(z.string()),
  description: z.string(),
  isDefault: z.boolean(),
  maxCpus: z.number().int(),
  defaultCpuModel: z.string(),
  plugin: z.string(),
});

export const cpuModelInfoSchema = z.object({
  name: z.string(),
  plugin: z.string(),
});

/** One model in `cpu/listModels`: its definition, and what this host makes of it (QEMU's query-cpu-definitions). */
export const cpuModelListingSchema = cpuModelInfoSchema.extend({
  version: z.number().int().describe('version of the definition (a saved or migrating VM checks both ends mean the same CPU)'),
  description: z.string(),
  vendor: z.string().describe("CPUID vendor of the definition; under KVM a named model shows the host's"),
  family: z.number().int(),
  model: z.number().int(),
  stepping: z.number().int(),
  modelId: z.string().describe('brand string (CPUID 0x80000002..4)'),
  level: z.number().int().describe('highest basic CPUID leaf'),
  xlevel: z.number().int().describe('highest extended CPUID leaf'),
  features: z.array(z.string()).describe("CPUID features by QEMU name; for `host`, what this host's KVM offers"),
  runnable: z
    .boolean()
    .nullable()
    .describe("whether this host's KVM runs the model with every feature; null when KVM could not be asked (see hostUnknownReason)"),
  unavailableFeatures: z.array(z.string()).describe("features this host's KVM lacks: left out under `check`, refused under `enforce`"),
  problems: z.array(z.string()).describe('why the model cannot be used at all (a broken definition, or an option this host cannot provide)'),
  notes: z.string().optional(),
  hostUnknownReason: z.string().optional().describe('why runnable is null'),
});

export type CpuModelListingInfo = z.infer<typeof cpuModelListingSchema>;

const emptyParams = z.strictObject({}).optional();

export const PluginList = defineRequest('plugin/list', {
  doc: 'Lists the plugins the server found, with their versions and what each provides.',
  since: '1.0.0',
  params: emptyParams,
  result: z.object({ plugins: z.array(pluginInfoSchema) }),
});

export const MachineListTypes = defineRequest('machine/listTypes', {
  doc: 'Lists the machine types (`description.machine`) installed chipset plugins provide.',
  since: '1.0.0',
  params: emptyParams,
  result: z.object({ machineTypes: z.array(machineTypeInfoSchema) }),
  errors: ['PluginError'],
});

export const CpuListModels = defineRequest('cpu/listModels', {
  doc:
    'Lists the CPU models (`description.cpu`) installed cpu-model plugins provide, each with its identity and features, ' +
    "and whether this host's KVM can run it (the features it lacks), as `tsvmm run --cpu help` shows them.",
  since: '1.0.0',
  params: emptyParams,
  result: z.object({ cpuModels: z.array(cpuModelListingSchema) }),
  errors: ['PluginError'],
});
