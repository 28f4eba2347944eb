/**
 * VM lifecycle. One VM is one OS process supervised by the server
 * (ARCHITECTURE.md "Runtime model"); a VM process that crashes or is killed
 * is reported with `vm/stateChanged` (reason `vmm-crashed` or `killed`).
 *
 *   created → running ⇄ paused → shutdown | crashed
 */
import { z } from 'zod';
import {
  deviceInfoSchema,
  stateReasonSchema,
  vmIdSchema,
  vmParamsSchema,
  vmStateResultSchema,
  vmStateSchema,
  workDoneProgressParams,
} from './common.js';
import { defineNotification, defineRequest } from './define.js';
import { machineDescriptionSchema } from './machine-description.js';

export const vmCreateParamsSchema = z.strictObject({
  description: machineDescriptionSchema.describe('the machine description: the same JSON shape as `tsvmm run --config FILE`'),
  ...workDoneProgressParams,
});

export const VmCreate = defineRequest('vm/create', {
  doc:
    'Creates a VM from a machine description in a new VM process: loads plugins, lays out memory, realizes devices and loads the kernel, leaving the VM in state `created`. Reports `$/progress` when given a `workDoneToken`; cancelling it kills the half-made VM process.',
  since: '1.0.0',
  workDoneProgress: true,
  cancellable: true,
  params: vmCreateParamsSchema,
  result: z.object({ vmId: vmIdSchema, state: vmStateSchema, pid: z.number().int().describe('the VM process id') }),
  errors: ['ConfigError', 'PluginError', 'BootError', 'HostUnsupported', 'VmProcessFailed', 'RequestCancelled', 'ShuttingDown'],
});

const lifecycleRequest = (method: string, doc: string, errors: string[] = ['VmNotFound', 'InvalidVmState', 'VmProcessFailed']) =>
  defineRequest(method, { doc, since: '1.0.0', params: vmParamsSchema, result: vmStateResultSchema, errors });

export const VmStart = lifecycleRequest('vm/start', 'Starts the vCPUs of a VM in state `created`.');
export const VmPause = lifecycleRequest('vm/pause', 'Stops every vCPU of a running VM; the guest clock stops too.');
export const VmResume = lifecycleRequest('vm/resume', 'Lets a paused VM run again.');
export const VmReset = lifecycleRequest(
  'vm/reset',
  'Hardware reset of a running or paused VM: CPUs and interrupt controllers power-cycled, devices reset, kernel reloaded; RAM is kept.',
);
export const VmShutdown = lifecycleRequest(
  'vm/shutdown',
  'Powers the VM off from the host side (state `shutdown`). The VM stays listed until `vm/destroy`, so its final status can be read.',
);
export const VmDestroy = lifecycleRequest(
  'vm/destroy',
  'Powers the VM off if needed, ends its process and forgets it. The result\'s state is the last one the VM had.',
  ['VmNotFound'],
);

export const vmSummarySchema = z.object({
  vmId: vmIdSchema,
  name: z.string().optional(),
  state: vmStateSchema,
  pid: z.number().int().optional(),
});

export const VmList = defineRequest('vm/list', {
  doc: 'Lists the VMs this server supervises.',
  since: '1.0.0',
  params: z.strictObject({}).optional(),
  result: z.object({ vms: z.array(vmSummarySchema) }),
});

export const vmStatusSchema = z.object({
  vmId: vmIdSchema,
  name: z.string().optional(),
  state: vmStateSchema,
  reason: stateReasonSchema.optional().describe('why the VM is in its state'),
  detail: z.string().optional(),
  pid: z.number().int().optional().describe('the VM process id while it runs'),
  machineType: z.string().optional(),
  vcpus: z.number().int().optional(),
  memory: z
    .object({
      bytes: z.number().int(),
      belowFourGiB: z.number().int(),
      aboveFourGiB: z.number().int(),
    })
    .optional(),
  devices: z.array(deviceInfoSchema).optional(),
  uptimeMs: z.number().describe('milliseconds since the VM was created'),
  kernel: z.string().optional().describe('what was loaded, e.g. "multiboot ELF, entry 0x100000"'),
  exitStatus: z.number().int().optional().describe('after shutdown/crash: the status `tsvmm run` would exit with'),
});
export type VmStatus = z.infer<typeof vmStatusSchema>;

export const VmStatusRequest = defineRequest('vm/status', {
  doc: 'The VM\'s state, vCPUs, memory, devices with their properties, uptime. Answered by the server alone once the VM process has ended.',
  since: '1.0.0',
  params: vmParamsSchema,
  result: vmStatusSchema,
  errors: ['VmNotFound', 'VmProcessFailed'],
});

export const VmStateChanged = defineNotification('vm/stateChanged', {
  doc:
    'The VM changed state (or stayed in `running` through a reset). Pushed, so managers never poll. `reason` says why: guest shutdown, reset, triple fault, internal error, paused by request, killed...',
  since: '1.0.0',
  params: z.object({
    vmId: vmIdSchema,
    from: vmStateSchema,
    to: vmStateSchema,
    reason: stateReasonSchema,
    detail: z.string(),
    exitStatus: z.number().int().optional(),
    signal: z.string().optional().describe('reason killed: the signal that ended the VM process'),
  }),
});
