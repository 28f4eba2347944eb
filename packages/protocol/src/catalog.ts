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
  doc: 'Lists the CPU models (`description.cpu`) installed cpu-model plugins provide.',
  since: '1.0.0',
  params: emptyParams,
  result: z.object({ cpuModels: z.array(cpuModelInfoSchema) }),
});
