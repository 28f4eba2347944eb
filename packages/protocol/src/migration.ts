/**
 * Live migration and snapshots (docs/migration.md). The source's
 * `migration/start` runs until the migration ends, reporting `$/progress`
 * under its workDoneToken and honouring `$/cancelRequest`; clients that do
 * not wait poll `migration/status` (QEMU's `migrate` + `query-migrate`). The
 * destination is a VM created with `description.incoming`; it starts by
 * itself once the stream is loaded (`vm/stateChanged`, reason `migrated`).
 */
import { z } from 'zod';
import { vmIdSchema, vmParamsSchema, workDoneProgressParams } from './common.js';
import { defineRequest } from './define.js';

const uriSchema = z
  .string()
  .regex(/^(tcp:.+:\d{1,5}|unix:.+|file:.+)$/, { error: 'expected tcp:HOST:PORT, unix:PATH or file:PATH' })
  .describe('where the stream goes: tcp:HOST:PORT, unix:PATH (the destination listens there) or file:PATH');

export const migrationParametersSchema = z
  .strictObject({
    strategy: z.string().min(1).optional().describe('migration-strategy plugin: precopy (default) or xbzrle'),
    maxDowntimeMs: z.number().int().min(1).max(3_600_000).optional().describe('the longest the guest may be stopped for the final copy, ms (default 300, as QEMU)'),
    maxBandwidth: z.number().int().min(0).optional().describe('bytes per second the stream may use; 0 = unlimited (default 128 MiB/s, as QEMU)'),
    xbzrleCacheSize: z.number().int().min(4096).max(2 ** 40).optional().describe('XBZRLE page cache, bytes, rounded down to a power of two pages (default 64 MiB, as QEMU)'),
    maxIterations: z.number().int().min(0).optional().describe('stop-and-copy after this many live rounds even if the downtime limit is not met; 0 = never (default)'),
  })
  .describe('migration parameters; unset fields keep their value');
export type MigrationParametersInput = z.infer<typeof migrationParametersSchema>;

export const migrationParametersResultSchema = z.object({
  strategy: z.string(),
  maxDowntimeMs: z.number().int(),
  maxBandwidth: z.number().int(),
  xbzrleCacheSize: z.number().int(),
  maxIterations: z.number().int(),
});

export const migrationStatusSchema = z
  .object({
    role: z.enum(['none', 'source', 'destination']),
    status: z.enum(['none', 'setup', 'active', 'device', 'completed', 'failed', 'cancelling', 'cancelled']).describe('setup → active → device (stop-and-copy) → completed | failed | cancelled, as QEMU'),
    strategy: z.string().optional(),
    uri: z.string().optional(),
    setupTimeMs: z.number().optional(),
    totalTimeMs: z.number().optional(),
    expectedDowntimeMs: z.number().optional(),
    downtimeMs: z.number().optional().describe('how long the guest was stopped: from the stop to the destination\'s LOADED'),
    ram: z.object({
      totalBytes: z.number(),
      transferredBytes: z.number(),
      remainingBytes: z.number(),
      normalPages: z.number(),
      zeroPages: z.number(),
      pagesPerSecond: z.number(),
      dirtyPagesRate: z.number().describe('pages the guest dirtied per second between the last two syncs'),
      bandwidth: z.number().describe('measured stream throughput, bytes per second'),
      iterations: z.number().describe('dirty syncs (the bulk round is the first)'),
    }),
    xbzrle: z
      .object({
        cacheSize: z.number(),
        encodedBytes: z.number(),
        pages: z.number(),
        cacheHits: z.number(),
        cacheMisses: z.number(),
        overflows: z.number(),
        unchangedPages: z.number(),
      })
      .optional(),
    error: z.string().optional(),
  })
  .describe('migration statistics, as QEMU\'s query-migrate reports them');
export type MigrationStatusResult = z.infer<typeof migrationStatusSchema>;

export const MigrationStart = defineRequest('migration/start', {
  doc:
    'Migrates the VM to a destination listening at `uri` (a VM created with `description.incoming`). A mismatch (machine type, RAM, CPUs, devices, state versions) is refused before anything is stopped. Resolves when the migration has completed — the source then stays paused — or fails with MigrationFailed, in which case the source runs on as before. Reports `$/progress` under `workDoneToken`; `$/cancelRequest` cancels like `migration/cancel`.',
  since: '1.1.0',
  workDoneProgress: true,
  cancellable: true,
  params: z.strictObject({
    vmId: vmIdSchema,
    uri: uriSchema,
    parameters: migrationParametersSchema.optional().describe('set before starting, as migration/setParameters'),
    ...workDoneProgressParams,
  }),
  result: migrationStatusSchema,
  errors: ['VmNotFound', 'InvalidVmState', 'ConfigError', 'MigrationFailed', 'RequestCancelled'],
});

export const MigrationSaveToFile = defineRequest('migration/saveToFile', {
  doc:
    'Saves the VM to a snapshot file (the migration stream, written to a temporary name and renamed when complete), live as `migration/start` does. Afterwards the VM stays paused, or runs on with `resume: true`. Restore with a VM created with `incoming: file:PATH` (or `tsvmm run --incoming file:PATH`).',
  since: '1.1.0',
  workDoneProgress: true,
  cancellable: true,
  params: z.strictObject({
    vmId: vmIdSchema,
    path: z.string().min(1),
    resume: z.boolean().optional().describe('let the VM run again once the snapshot is written (default false)'),
    parameters: migrationParametersSchema.optional(),
    ...workDoneProgressParams,
  }),
  result: migrationStatusSchema,
  errors: ['VmNotFound', 'InvalidVmState', 'MigrationFailed', 'RequestCancelled'],
});

export const MigrationCancel = defineRequest('migration/cancel', {
  doc: 'Cancels the VM\'s migration (source or incoming). The source runs on, resumed if it was in stop-and-copy; an incoming VM is discarded. No error when nothing is migrating.',
  since: '1.1.0',
  params: vmParamsSchema,
  result: z.object({ vmId: vmIdSchema, status: migrationStatusSchema.shape.status }),
  errors: ['VmNotFound'],
});

export const MigrationSetParameters = defineRequest('migration/setParameters', {
  doc: 'Sets migration parameters for the VM; a migration in progress picks up downtime, bandwidth, cache size and round limit at once (the strategy applies to the next one). Returns all parameters.',
  since: '1.1.0',
  params: z.strictObject({ vmId: vmIdSchema, parameters: migrationParametersSchema }),
  result: migrationParametersResultSchema,
  errors: ['VmNotFound', 'InvalidVmState', 'ConfigError'],
});

export const MigrationStatusRequest = defineRequest('migration/status', {
  doc: 'The VM\'s migration state and statistics: status, setup/total time, expected and actual downtime, transferred/remaining/total bytes, pages per second, dirty-page rate, iterations, XBZRLE cache hits/misses/overflows/encoded bytes; also on an incoming VM.',
  since: '1.1.0',
  params: vmParamsSchema,
  result: migrationStatusSchema,
  errors: ['VmNotFound'],
});
