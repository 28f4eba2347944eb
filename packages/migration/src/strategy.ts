/**
 * The migration-strategy contract (plugins of kind `migration-strategy`,
 * ARCHITECTURE.md "Plugins"). A strategy decides the live phase: which RAM
 * rounds to send while the guest runs, and when the rest is small enough to
 * stop the guest; and how pages are encoded on the migration thread. The
 * engine (source.ts) does everything around it — connection, configuration
 * check, dirty tracking, the stop-and-copy, device and CPU state, commit, and
 * undoing all of it on failure — the same for every strategy.
 *
 * iterativePrecopy() is QEMU's convergence rule (migration.c
 * migration_iteration_run): after each round, sync the dirty log; if the
 * dirty bytes could be sent within the downtime limit at the bandwidth the
 * last round achieved, stop and copy, else send another round.
 */
import type { MigrationParameters } from './parameters.js';
import type { RoundResult } from './ram/sender.js';

export const MIGRATION_PAGE_SIZE = 4096;

/** How the migration thread encodes RAM pages. */
export interface RamEncoding {
  /** XBZRLE delta encoding against a page cache of this many bytes; absent: whole pages */
  xbzrleCacheSize?: number;
}

/** What the engine gives a strategy for the live phase. */
export interface PrecopyContext {
  /** current parameters (migration/setParameters may change them mid-way) */
  readonly params: Readonly<MigrationParameters>;
  /** the first round: every page that was ever written */
  sendBulk(): Promise<RoundResult>;
  /**
   * Take the pages written since the previous sync (vCPUs and devices) and
   * return how many there are. They are sent by sendDirty(), or by the
   * stop-and-copy if the strategy returns first.
   */
  syncDirtyPages(): number;
  /** send the pages of the last sync */
  sendDirty(): Promise<RoundResult>;
  /** stream throughput of the last round, bytes per second (0 before any round) */
  readonly bandwidth: number;
  /** dirty syncs so far */
  readonly iterations: number;
  /** publish the downtime the current dirty set predicts, for migration/status */
  reportExpectedDowntime(ms: number): void;
  /** throws when the migration was cancelled or failed meanwhile */
  throwIfStopped(): void;
}

export interface MigrationStrategy {
  /** the name `migration/setParameters { strategy }` selects */
  readonly name: string;
  readonly description: string;
  ramEncoding(params: Readonly<MigrationParameters>): RamEncoding;
  /** run the live phase; return when the stop-and-copy should begin */
  precopy(ctx: PrecopyContext): Promise<void>;
}

/** Milliseconds to send `pages` at `bandwidth` bytes/s (Infinity before anything was measured). */
export function expectedDowntimeMs(pages: number, bandwidth: number): number {
  if (pages === 0) return 0;
  if (bandwidth <= 0) return Infinity;
  return (pages * MIGRATION_PAGE_SIZE * 1000) / bandwidth;
}

/** QEMU's precopy loop; both built-in strategies use it. */
export async function iterativePrecopy(ctx: PrecopyContext): Promise<void> {
  await ctx.sendBulk();
  for (;;) {
    ctx.throwIfStopped();
    const dirty = ctx.syncDirtyPages();
    const expected = expectedDowntimeMs(dirty, ctx.bandwidth);
    ctx.reportExpectedDowntime(expected);
    if (expected <= ctx.params.maxDowntimeMs) return;
    // A round-count limit is a way out for guests that dirty faster than the link: the downtime will exceed the limit.
    if (ctx.params.maxIterations > 0 && ctx.iterations >= ctx.params.maxIterations) return;
    await ctx.sendDirty();
  }
}

/** Identity helper for plugin authors. */
export function defineMigrationStrategy(s: MigrationStrategy): MigrationStrategy {
  return s;
}
