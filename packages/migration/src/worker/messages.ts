/**
 * Messages between the main thread (source.ts, destination.ts) and the
 * migration thread (source-worker.ts, destination-worker.ts). The RAM itself
 * never travels here: both threads see the guest's SharedArrayBuffers.
 * Dirty bitmaps are transferred (moved, not copied).
 */
import type { StreamHeaderInfo } from '../stream/format.js';
import type { RamCounters, RoundResult } from '../ram/sender.js';
import type { RamReceiveCounters } from '../ram/receiver.js';
import type { RamRegionSource } from '../ram/regions.js';
import type { TransportSpec } from '../transport.js';

export interface SourceWorkerInit {
  transport: TransportSpec;
  regions: RamRegionSource[];
  header: StreamHeaderInfo;
  /** the CONFIG section's content (config.ts StreamConfig) */
  config: unknown;
  /** bytes/s, 0 = unlimited */
  maxBandwidth: number;
  /** undefined: XBZRLE off */
  xbzrleCacheSize: number | undefined;
  /** how long to wait for the destination to connect, answer the configuration and the end */
  replyTimeoutMs: number;
}

/** A section the main thread hands over with its content; the worker encodes and frames it. */
export type StateSection =
  | { kind: 'device'; meta: { id: string; driver: string; plugin: { name: string; version: string } | null; stateVersion: number }; state: unknown }
  | { kind: 'cpu'; state: unknown }
  | { kind: 'machine'; state: unknown };

export type SourceCommand =
  | { type: 'round'; seq: number; bulk: boolean; last: boolean; age: number; bitmaps: Uint32Array[] }
  | { type: 'sections'; seq: number; sections: StateSection[] }
  /** write END and wait for the destination's LOADED (a file: sync and close) */
  | { type: 'finish'; seq: number }
  /** write COMMIT: the destination may run the VM now */
  | { type: 'commit'; seq: number }
  | { type: 'parameters'; maxBandwidth: number; xbzrleCacheSize: number | undefined }
  | { type: 'cancel' };

export interface SourceProgress {
  /** stream bytes written so far */
  bytes: number;
  ram: RamCounters;
  xbzrleCacheBytes: number;
}

export type SourceEvent =
  /** connected, header and CONFIG written, and (over a socket) the destination accepted them */
  | { type: 'ready'; peer: string }
  | { type: 'done'; seq: number; round?: RoundResult; progress: SourceProgress }
  | { type: 'progress'; progress: SourceProgress }
  | { type: 'warning'; message: string }
  /** `rejected`: the destination refused the configuration (its problems) */
  | { type: 'failed'; message: string; rejected?: string[] };

export interface DestinationWorkerInit {
  /** where to listen (tcp, unix) or what to read (file) */
  transport: TransportSpec;
  regions: RamRegionSource[];
}

export type DestinationCommand =
  | { type: 'config-verdict'; ok: true }
  | { type: 'config-verdict'; ok: false; problems: string[] }
  | { type: 'load-verdict'; ok: true }
  | { type: 'load-verdict'; ok: false; message: string }
  | { type: 'cancel' };

export type DestinationEvent =
  | { type: 'listening'; address: string }
  | { type: 'connected'; peer: string }
  | { type: 'header'; info: StreamHeaderInfo; version: number }
  | { type: 'config'; config: unknown }
  | { type: 'state'; section: StateSection }
  /** END read and checked: load the states, then answer with load-verdict */
  | { type: 'end'; bytes: number; ram: RamReceiveCounters }
  /** the source said COMMIT (socket) or the file ended cleanly after END: run the VM */
  | { type: 'commit' }
  | { type: 'progress'; bytes: number; ram: RamReceiveCounters }
  | { type: 'failed'; message: string };
