/**
 * The configuration check: the CONFIG section says what the stream was
 * written for, and the destination compares it with the VM it built before
 * any RAM is sent — so a mismatch is refused while the source still runs
 * (QEMU only finds most of these at the end, in its device sections).
 *
 * Compared: machine type (versioned names are the compatibility promise),
 * RAM size and layout, vCPU count, CPU model, the accelerator's CPU state
 * format, and the device set — same ids with the same drivers from the same
 * plugin, each able to load the state version the source writes (a newer
 * plugin loads older versions; ARCHITECTURE.md "Plugins").
 */
import type { MachineMigrationInfo } from '@tsvmm/core';
import { z } from 'zod';
import { MigrationError } from './errors.js';
import { PAGE_SIZE } from './page-cache.js';

/** RAM encodings a stream may use; the destination must decode all it lists. */
export const RAM_ENCODINGS = ['zero', 'page', 'xbzrle'] as const;
export type RamEncodingName = (typeof RAM_ENCODINGS)[number];

const safeInt = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

export const streamConfigSchema = z.strictObject({
  machineType: z.string().min(1).max(256),
  ram: z.strictObject({
    size: safeInt,
    regions: z.array(z.strictObject({ gpa: safeInt, size: safeInt })).min(1).max(64),
  }),
  pageSize: z.literal(PAGE_SIZE),
  cpus: z.number().int().min(1).max(4096),
  cpuModel: z.string().max(1024),
  accelerator: z.strictObject({ name: z.string().max(64), stateFormat: z.string().max(64) }),
  devices: z
    .array(
      z.strictObject({
        id: z.string().min(1).max(256),
        driver: z.string().min(1).max(256),
        plugin: z.strictObject({ name: z.string().max(256), version: z.string().max(64) }).nullable(),
        stateVersion: z.number().int().min(0).max(0xffff),
      }),
    )
    .max(4096),
  encodings: z.array(z.enum(RAM_ENCODINGS)).max(16),
  strategy: z.string().max(256),
});
export type StreamConfig = z.infer<typeof streamConfigSchema>;

/** The CONFIG the source writes for its machine; throws if a device cannot save its state. */
export function streamConfigFor(info: MachineMigrationInfo, opts: { strategy: string; encodings: RamEncodingName[] }): StreamConfig {
  const blocked = info.devices.filter((d) => d.stateVersion === undefined);
  if (blocked.length > 0) {
    throw new MigrationError(
      `this VM cannot be migrated: ${blocked.map((d) => `device '${d.id}' (${d.driver}${d.plugin ? ` from ${d.plugin.name}@${d.plugin.version}` : ''})`).join(', ')} cannot save its state`,
      { hint: 'the device plugin needs saveState/loadState (docs/migration.md "Device state")' },
    );
  }
  if (info.accelerator.stateFormat === undefined) throw new MigrationError(`the ${info.accelerator.name} accelerator cannot save CPU state, so this VM cannot be migrated`);
  return {
    machineType: info.machineType,
    ram: { size: info.ram.size, regions: info.ram.regions.map((r) => ({ gpa: r.gpa, size: r.size })) },
    pageSize: PAGE_SIZE,
    cpus: info.cpus,
    cpuModel: info.cpuModel,
    accelerator: { name: info.accelerator.name, stateFormat: info.accelerator.stateFormat },
    devices: info.devices.map((d) => ({ id: d.id, driver: d.driver, plugin: d.plugin ?? null, stateVersion: d.stateVersion as number })),
    encodings: opts.encodings,
    strategy: opts.strategy,
  };
}

export function parseStreamConfig(value: unknown): StreamConfig {
  const r = streamConfigSchema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new MigrationError(`the stream's CONFIG section is malformed: ${issue ? `${issue.path.map(String).join('.') || 'config'}: ${issue.message}` : 'invalid'}`);
}

/** Every way `stream` does not fit the local machine; empty when it does. */
export function configProblems(stream: StreamConfig, local: MachineMigrationInfo): string[] {
  const p: string[] = [];
  if (stream.machineType !== local.machineType) {
    p.push(`machine type: the stream is for ${stream.machineType}, this VM is ${local.machineType}`);
  }
  if (stream.ram.size !== local.ram.size) p.push(`RAM size: the stream has ${stream.ram.size} bytes, this VM ${local.ram.size}`);
  else if (JSON.stringify(stream.ram.regions) !== JSON.stringify(local.ram.regions)) {
    const fmt = (rs: { gpa: number; size: number }[]): string => rs.map((r) => `0x${r.gpa.toString(16)}+0x${r.size.toString(16)}`).join(', ');
    p.push(`RAM layout: the stream has ${fmt(stream.ram.regions)}, this VM ${fmt(local.ram.regions)}`);
  }
  if (stream.cpus !== local.cpus) p.push(`vCPUs: the stream has ${stream.cpus}, this VM ${local.cpus}`);
  if (stream.cpuModel !== local.cpuModel) p.push(`CPU model: the stream is for '${stream.cpuModel}', this VM has '${local.cpuModel}'`);
  if (local.accelerator.stateFormat === undefined) p.push(`the ${local.accelerator.name} accelerator here cannot load CPU state`);
  else if (stream.accelerator.stateFormat !== local.accelerator.stateFormat) {
    p.push(`CPU state format: the stream has ${stream.accelerator.stateFormat} (${stream.accelerator.name}), this VM loads ${local.accelerator.stateFormat}`);
  }
  const localById = new Map(local.devices.map((d) => [d.id, d]));
  for (const d of stream.devices) {
    const l = localById.get(d.id);
    localById.delete(d.id);
    const what = `device '${d.id}' (${d.driver})`;
    if (l === undefined) {
      p.push(`${what} is in the stream but not in this VM`);
      continue;
    }
    if (l.driver !== d.driver) {
      p.push(`device '${d.id}' is a ${d.driver} in the stream but a ${l.driver} in this VM`);
      continue;
    }
    if (d.plugin !== null && l.plugin !== undefined && d.plugin.name !== l.plugin.name) {
      p.push(`${what} comes from ${d.plugin.name} in the stream but from ${l.plugin.name} here, whose state formats may differ`);
      continue;
    }
    if (!l.loadableStateVersions.includes(d.stateVersion)) {
      const from = d.plugin ? ` (written by ${d.plugin.name}@${d.plugin.version})` : '';
      const here = l.plugin ? `${l.plugin.name}@${l.plugin.version}` : 'the device here';
      p.push(
        l.loadableStateVersions.length === 0
          ? `${what} cannot load saved state in this VM (${here} has no loadState)`
          : `${what}: state version ${d.stateVersion}${from} is not one ${here} loads (${l.loadableStateVersions.join(', ')})`,
      );
    }
  }
  for (const l of localById.values()) p.push(`device '${l.id}' (${l.driver}) is in this VM but not in the stream`);
  return p;
}
