/**
 * Helpers for Device.loadState: a saved state comes from a migration stream
 * or a snapshot file, so a device checks its shape before using it (like
 * Firecracker's versioned state structs, but checked at run time). Errors
 * name the device, the version and the field.
 */
import { z } from 'zod';
import { ConfigError } from './errors.js';

/** Field schemas for device state. */
export const stateField = {
  u8: () => z.number().int().min(0).max(0xff),
  u16: () => z.number().int().min(0).max(0xffff),
  u32: () => z.number().int().min(0).max(0xffffffff),
  int: (min: number, max: number) => z.number().int().min(min).max(max),
  bool: () => z.boolean(),
  bigint: () => z.bigint(),
  /** bytes, at most `maxLength` of them */
  bytes: (maxLength: number) =>
    z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length <= maxLength, { error: `must be bytes (at most ${maxLength})` }),
};

/** Throws unless `version` is one the device loads. */
export function checkStateVersion(version: number, loadable: readonly number[], subject: string): void {
  if (!loadable.includes(version)) {
    throw new ConfigError(`${subject}: state version ${version} is not one this plugin loads (${loadable.join(', ')})`, {
      hint: 'load the stream with a tsvmm whose plugin knows that version',
    });
  }
}

/** `state` checked against `schema`; throws a ConfigError naming the first field that does not fit. */
export function parseDeviceState<T>(schema: z.ZodType<T>, state: unknown, subject: string): T {
  const r = schema.safeParse(state);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const where = issue === undefined || issue.path.length === 0 ? 'state' : issue.path.map(String).join('.');
  throw new ConfigError(`${subject}: saved ${where} ${issue?.message ?? 'is invalid'}`);
}
