/**
 * Shapes shared by several feature areas: VM ids and states, device
 * descriptions, progress tokens (LSP 3.17 "Work Done Progress", "$/progress").
 */
import { z } from 'zod';

export const vmIdSchema = z
  .string()
  .min(1)
  .max(128)
  .describe('the id the server gave the VM in `vm/create` (e.g. `vm-1`)');

export const vmStateSchema = z
  .enum(['created', 'running', 'paused', 'shutdown', 'crashed'])
  .describe('created → running ⇄ paused → shutdown | crashed');
export type VmState = z.infer<typeof vmStateSchema>;

export const stateReasonSchema = z
  .enum([
    'created',
    'started',
    'paused-by-request',
    'resumed-by-request',
    'guest-shutdown',
    'guest-reset',
    'triple-fault',
    'internal-error',
    'debug-exit',
    'host-request',
    'error',
    'killed',
    'vmm-crashed',
    'migrating',
    'migrated',
    'migration-failed',
  ])
  .describe(
    'why the state changed: guest-shutdown (guest powered off), guest-reset (guest reset the machine), triple-fault, internal-error (KVM could not continue), debug-exit (guest wrote to isa-debug-exit), paused-by-request / resumed-by-request / host-request (a client asked), error (a VMM failure), killed (the VM process was killed by a signal), vmm-crashed (the VM process ended without reporting why), migrating (paused for the final copy of a migration), migrated (the source after a completed migration, or a destination started from a migration stream), migration-failed (a migration failed or was cancelled and the source runs on)',
  );
export type StateReason = z.infer<typeof stateReasonSchema>;

export const vmParamsSchema = z.strictObject({ vmId: vmIdSchema });

export const vmStateResultSchema = z.object({
  vmId: vmIdSchema,
  state: vmStateSchema,
});

export const deviceInfoSchema = z.object({
  id: z.string(),
  driver: z.string().describe('the device type name'),
  properties: z.record(z.string(), z.unknown()).describe('as the device describes itself'),
});
export type DeviceInfo = z.infer<typeof deviceInfoSchema>;

export const progressTokenSchema = z.union([z.number().int(), z.string()]).describe('LSP ProgressToken');
export type ProgressToken = z.infer<typeof progressTokenSchema>;

/** Mixed into the params of requests that report work-done progress (LSP WorkDoneProgressParams). */
export const workDoneProgressParams = {
  workDoneToken: progressTokenSchema.optional().describe('if given, the server reports `$/progress` begin/report/end under this token'),
};
