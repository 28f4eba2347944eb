/**
 * Migration parameters and status, as `migration/setParameters` and
 * `migration/status` carry them. Defaults are QEMU 7.2's
 * (query-migrate-parameters): downtime-limit 300 ms, max-bandwidth
 * 128 MiB/s, xbzrle-cache-size 64 MiB.
 */
import type { RamCounters } from './ram/sender.js';

export interface MigrationParameters {
  /** the migration-strategy plugin to use: precopy, xbzrle, ... */
  strategy: string;
  /** the longest the guest may be stopped for the final copy, in ms */
  maxDowntimeMs: number;
  /** bytes per second the stream may use; 0 = unlimited */
  maxBandwidth: number;
  /** bytes of page cache for XBZRLE (rounded down to a power of two pages) */
  xbzrleCacheSize: number;
  /** stop-and-copy after this many live rounds even if the downtime limit is not met; 0 = never (as QEMU) */
  maxIterations: number;
}

export const DEFAULT_PARAMETERS: Readonly<MigrationParameters> = Object.freeze({
  strategy: 'precopy',
  maxDowntimeMs: 300,
  maxBandwidth: 128 * 1024 * 1024,
  xbzrleCacheSize: 64 * 1024 * 1024,
  maxIterations: 0,
});

export type MigrationState = 'none' | 'setup' | 'active' | 'device' | 'completed' | 'failed' | 'cancelling' | 'cancelled';

export interface MigrationStatus {
  /** this VM's side of the migration */
  role: 'none' | 'source' | 'destination';
  /** QEMU's states: setup → active → device (stop-and-copy) → completed | failed | cancelled */
  status: MigrationState;
  strategy?: string;
  /** where to (source) or where from (destination) */
  uri?: string;
  /** ms from the start to the first RAM round (connection, configuration check) */
  setupTimeMs?: number;
  /** ms since the start, or the whole migration once it ended */
  totalTimeMs?: number;
  /** what the last dirty sync predicts the stop-and-copy will take, ms */
  expectedDowntimeMs?: number;
  /** how long the guest was stopped, ms (source: from stop to the destination's LOADED) */
  downtimeMs?: number;
  ram: {
    /** guest RAM size */
    totalBytes: number;
    /** stream bytes written (source) or read (destination) */
    transferredBytes: number;
    /** dirty bytes left at the last sync */
    remainingBytes: number;
    normalPages: number;
    zeroPages: number;
    /** pages looked at per second in the last round */
    pagesPerSecond: number;
    /** pages the guest dirtied per second between the last two syncs */
    dirtyPagesRate: number;
    /** measured stream throughput, bytes per second */
    bandwidth: number;
    /** dirty syncs so far (the bulk round is the first) */
    iterations: number;
  };
  xbzrle?: {
    cacheSize: number;
    /** bytes of XBZRLE records (plus a page per overflow), QEMU's "xbzrle transferred" */
    encodedBytes: number;
    /** pages sent as deltas */
    pages: number;
    cacheHits: number;
    cacheMisses: number;
    overflows: number;
    /** dirty pages that had not changed against the cache: nothing sent */
    unchangedPages: number;
  };
  /** why it failed or was cancelled */
  error?: string;
}

export function emptyStatus(): MigrationStatus {
  return {
    role: 'none',
    status: 'none',
    ram: { totalBytes: 0, transferredBytes: 0, remainingBytes: 0, normalPages: 0, zeroPages: 0, pagesPerSecond: 0, dirtyPagesRate: 0, bandwidth: 0, iterations: 0 },
  };
}

export function xbzrleStatus(c: RamCounters, cacheSize: number): NonNullable<MigrationStatus['xbzrle']> {
  return {
    cacheSize,
    encodedBytes: c.xbzrleBytes,
    pages: c.xbzrlePages,
    cacheHits: c.xbzrleCacheHits,
    cacheMisses: c.xbzrleCacheMisses,
    overflows: c.xbzrleOverflows,
    unchangedPages: c.unchangedPages,
  };
}
