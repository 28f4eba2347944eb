/**
 * The source side of a migration (or of a snapshot to a file), on the main
 * thread. It owns the sequence and the promises; the migration thread
 * (worker/source-worker.ts) owns the bytes.
 *
 *   setup   spawn the migration thread; it connects, writes the header and
 *           CONFIG, and waits for the destination to accept them — a
 *           mismatch is refused here, while the guest runs on untouched
 *   active  dirty tracking on; the strategy's live rounds (strategy.ts)
 *   device  stop the guest (vCPUs, clock, device requests in flight), send
 *           the last dirty pages, device, CPU and machine state, END; the
 *           destination loads everything and says LOADED; COMMIT
 *   completed  the source stays paused (a client may still resume it)
 *
 * Any failure — cancel, a dropped connection, a destination that refuses or
 * fails to load, the guest powering off — stops the migration thread,
 * switches dirty tracking off and, if the guest was stopped for the final
 * copy, lets it run again: nothing of the source is lost. The destination
 * discards what it got: it never runs the VM without COMMIT.
 *
 * Once COMMIT is written the migration counts as done. If the connection
 * breaks in that very instant the destination may not have seen it; then
 * neither side runs the guest and the source, still paused with its whole
 * state, can be resumed by hand (docs/migration.md "Reliability").
 */
import { Worker } from 'node:worker_threads';
import type { DirtyRegion, Logger, Machine, StateChange } from '@tsvmm/core';
import { streamConfigFor, type RamEncodingName } from './config.js';
import { MigrationCancelledError, MigrationConfigError, MigrationError } from './errors.js';
import { emptyStatus, xbzrleStatus, type MigrationParameters, type MigrationStatus } from './parameters.js';
import type { RoundResult } from './ram/sender.js';
import { MIGRATION_PAGE_SIZE, type MigrationStrategy, type PrecopyContext } from './strategy.js';
import { formatTransport, type TransportSpec } from './transport.js';
import type { SourceCommand, SourceEvent, SourceProgress, SourceWorkerInit, StateSection } from './worker/messages.js';

export interface MigrationSourceOptions {
  machine: Machine;
  strategy: MigrationStrategy;
  params: MigrationParameters;
  target: TransportSpec;
  /** a live migration, or a snapshot (to a file) */
  kind: 'migration' | 'snapshot';
  /** after a completed snapshot, let the guest run again if it ran before (a migration's source stays paused) */
  resumeAfter?: boolean;
  /** who writes the stream, e.g. "tsvmm 0.1.0" */
  writer: string;
  log?: Logger;
  /** called whenever the status changed (progress); throttle in the callback if needed */
  onStatus?: (status: MigrationStatus) => void;
  /** how long to wait for the destination's answers (default 30 s) */
  replyTimeoutMs?: number;
}

const SOURCE_WORKER_URL = new URL('./worker/source-worker.js', import.meta.url);

/** A migration thread started ahead of time, waiting for its `init` message. */
let spare: Worker | undefined;

function spawnIdleWorker(): Worker {
  const w = new Worker(SOURCE_WORKER_URL, { workerData: null, name: 'migration' });
  // Idle, it must neither keep the process alive nor take it down.
  w.unref();
  w.once('error', () => {
    if (spare === w) spare = undefined;
  });
  w.once('exit', () => {
    if (spare === w) spare = undefined;
  });
  return w;
}

/**
 * Start the migration thread before it is needed. A worker_thread takes tens
 * of milliseconds to boot — longer than QEMU's whole migration of an idle
 * 1 GiB guest — and that would count in the migration's total time; a VM
 * process calls this once its VM runs, and again after each migration.
 */
export function prewarmMigrationThread(): void {
  spare ??= spawnIdleWorker();
}

interface Pending {
  resolve: (e: Extract<SourceEvent, { type: 'done' }>) => void;
  reject: (err: Error) => void;
}

export class MigrationSource {
  private readonly machine: Machine;
  private readonly params: MigrationParameters;
  private readonly st: MigrationStatus = emptyStatus();
  private worker: Worker | undefined;
  private seq = 0;
  private readonly pending = new Map<number, Pending>();
  private ready: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private stopped: Error | undefined;
  /** pages synced but not yet sent: the next round's, or the stop-and-copy's */
  private unsent: DirtyRegion[] | undefined;
  private bandwidth = 0;
  private iterations = 0;
  private lastSyncAt = 0;
  private startedAt = 0;
  private finished = false;

  constructor(private readonly opts: MigrationSourceOptions) {
    this.machine = opts.machine;
    this.params = { ...opts.params };
    this.st.role = 'source';
    this.st.strategy = opts.strategy.name;
    this.st.uri = formatTransport(opts.target);
    this.st.ram.totalBytes = this.machine.layout.ramSize;
  }

  status(): MigrationStatus {
    const s = structuredClone(this.st);
    if (!this.finished && this.startedAt > 0) s.totalTimeMs = Math.round(performance.now() - this.startedAt);
    return s;
  }

  /** Parameters that can change mid-way: downtime, bandwidth, XBZRLE cache size, round limit. */
  setParameters(p: Partial<MigrationParameters>): void {
    Object.assign(this.params, { ...p, strategy: this.params.strategy });
    const xbzrle = this.opts.strategy.ramEncoding(this.params).xbzrleCacheSize;
    this.send({ type: 'parameters', maxBandwidth: this.params.maxBandwidth, xbzrleCacheSize: xbzrle });
  }

  /** Cancel: the run() promise rejects with MigrationCancelledError once the source runs on. */
  cancel(reason = 'the migration was cancelled'): void {
    if (this.finished) return;
    if (this.st.status !== 'failed') this.st.status = 'cancelling';
    this.stop(new MigrationCancelledError(reason));
  }

  private stop(err: Error): void {
    if (this.stopped !== undefined) return;
    this.stopped = err;
    this.send({ type: 'cancel' });
    this.ready?.reject(err);
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  private throwIfStopped(): void {
    if (this.stopped !== undefined) throw this.stopped;
  }

  private send(cmd: SourceCommand, transfer: ArrayBuffer[] = []): void {
    this.worker?.postMessage(cmd, transfer);
  }

  private command(cmd: SourceCommand, transfer: ArrayBuffer[] = []): Promise<Extract<SourceEvent, { type: 'done' }>> {
    this.throwIfStopped();
    return new Promise((resolve, reject) => {
      this.pending.set((cmd as { seq: number }).seq, { resolve, reject });
      try {
        this.send(cmd, transfer);
      } catch (err) {
        this.pending.delete((cmd as { seq: number }).seq);
        reject(new MigrationError(`handing the migration thread its work failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      }
    });
  }

  private onEvent(e: SourceEvent): void {
    switch (e.type) {
      case 'ready':
        this.ready?.resolve();
        return;
      case 'done': {
        this.applyProgress(e.progress);
        const p = this.pending.get(e.seq);
        this.pending.delete(e.seq);
        p?.resolve(e);
        return;
      }
      case 'progress':
        this.applyProgress(e.progress);
        this.opts.onStatus?.(this.status());
        return;
      case 'warning':
        this.opts.log?.warn(`migration: ${e.message}`);
        return;
      case 'failed':
        this.stop(e.rejected !== undefined ? new MigrationConfigError(e.rejected) : new MigrationError(`migration to ${this.st.uri ?? '?'} failed: ${e.message}`));
        return;
    }
  }

  private applyProgress(p: SourceProgress): void {
    this.st.ram.transferredBytes = p.bytes;
    this.st.ram.normalPages = p.ram.normalPages;
    this.st.ram.zeroPages = p.ram.zeroPages;
    if (this.opts.strategy.ramEncoding(this.params).xbzrleCacheSize !== undefined) this.st.xbzrle = xbzrleStatus(p.ram, p.xbzrleCacheBytes);
  }

  private setState(s: MigrationStatus['status']): void {
    this.st.status = s;
    this.opts.onStatus?.(this.status());
  }

  /** Run the migration to its end; rejects with a MigrationError when it fails or is cancelled (the source then runs on). */
  async run(): Promise<MigrationStatus> {
    const m = this.machine;
    this.startedAt = performance.now();
    this.setState('setup');
    const encodings: RamEncodingName[] = ['zero', 'page'];
    const xbzrleCache = this.opts.strategy.ramEncoding(this.params).xbzrleCacheSize;
    if (xbzrleCache !== undefined) encodings.push('xbzrle');
    let dirtyOn = false;
    let stoppedGuest = false;
    let wasRunning = false;
    const onState = (c: StateChange): void => {
      if (c.to === 'shutdown' || c.to === 'crashed') this.stop(new MigrationError(`the VM stopped during the migration (${c.detail})`));
    };
    m.on('stateChanged', onState);
    try {
      if (m.state !== 'running' && m.state !== 'paused') throw new MigrationError(`cannot migrate a VM that is ${m.state}`);
      const info = m.migrationInfo();
      const config = streamConfigFor(info, { strategy: this.opts.strategy.name, encodings });
      const init: SourceWorkerInit = {
        transport: this.opts.target,
        regions: m.memory.list().map((r) => ({ gpa: r.gpa, size: r.size, buffer: r.buffer, ...(r.fd !== undefined ? { fd: r.fd } : {}) })),
        header: { machineType: info.machineType, kind: this.opts.kind, writer: this.opts.writer, createdAt: new Date().toISOString() },
        config,
        maxBandwidth: this.params.maxBandwidth,
        xbzrleCacheSize: xbzrleCache,
        replyTimeoutMs: this.opts.replyTimeoutMs ?? 30_000,
      };
      const ready = new Promise<void>((resolve, reject) => {
        this.ready = { resolve, reject };
      });
      const worker = spare ?? spawnIdleWorker();
      spare = undefined;
      worker.ref();
      worker.removeAllListeners('error');
      worker.removeAllListeners('exit');
      this.worker = worker;
      worker.on('message', (e: SourceEvent) => this.onEvent(e));
      worker.on('error', (err) => this.stop(new MigrationError(`the migration thread failed: ${err.message}`, { cause: err })));
      worker.on('exit', (code) => this.stop(new MigrationError(`the migration thread ended (exit code ${code})`)));
      worker.postMessage({ type: 'init', init });
      await ready;
      this.throwIfStopped();

      m.startDirtyTracking();
      dirtyOn = true;
      // Arm the log: everything written from here on is seen by the next sync; the bulk round covers the rest.
      m.takeDirtyPages();
      this.iterations = 1;
      this.st.ram.iterations = 1;
      this.lastSyncAt = performance.now();
      this.st.setupTimeMs = Math.round(performance.now() - this.startedAt);
      this.setState('active');

      await this.opts.strategy.precopy(this.precopyContext());
      this.throwIfStopped();

      // --- stop and copy ---
      this.setState('device');
      const downtimeStart = performance.now();
      wasRunning = await m.stopForMigration(`migrating to ${this.st.uri ?? '?'}`);
      stoppedGuest = true;
      this.throwIfStopped();
      const final = mergeDirty(this.unsent, m.takeDirtyPages());
      this.unsent = undefined;
      await this.round(final, { bulk: false, last: true });
      const saved = m.saveMigrationState();
      const plugins = new Map(info.devices.map((d) => [d.id, d.plugin ?? null]));
      const sections: StateSection[] = [
        ...saved.devices.map(
          (d): StateSection => ({ kind: 'device', meta: { id: d.id, driver: d.driver, plugin: plugins.get(d.id) ?? null, stateVersion: d.version }, state: d.state }),
        ),
        { kind: 'cpu', state: saved.accelerator },
        { kind: 'machine', state: { clockNs: saved.clockNs } },
      ];
      await this.command({ type: 'sections', seq: ++this.seq, sections });
      await this.command({ type: 'finish', seq: ++this.seq });
      await this.command({ type: 'commit', seq: ++this.seq });
      this.st.downtimeMs = Math.round(performance.now() - downtimeStart);
      this.finished = true;
      this.st.totalTimeMs = Math.round(performance.now() - this.startedAt);
      this.st.ram.remainingBytes = 0;
      m.stopDirtyTracking();
      dirtyOn = false;
      if (this.opts.kind === 'snapshot' && this.opts.resumeAfter === true && wasRunning) m.resume();
      else m.markMigrated(`${this.opts.kind === 'snapshot' ? 'saved to' : 'migrated to'} ${this.st.uri ?? '?'}`);
      this.setState('completed');
      return this.status();
    } catch (err) {
      const e = this.stopped ?? (err instanceof MigrationError ? err : new MigrationError(`migration to ${this.st.uri ?? '?'} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
      this.stop(e);
      this.finished = true;
      this.st.totalTimeMs = Math.round(performance.now() - this.startedAt);
      this.st.error = e.message;
      if (dirtyOn) {
        try {
          m.stopDirtyTracking();
        } catch (stopErr) {
          this.opts.log?.warn('switching dirty tracking off failed', { error: stopErr instanceof Error ? stopErr.message : String(stopErr) });
        }
      }
      if (stoppedGuest) m.resumeAfterMigration(wasRunning, `migration failed, the VM runs on: ${e.message}`);
      this.setState(e instanceof MigrationCancelledError ? 'cancelled' : 'failed');
      throw e;
    } finally {
      m.off('stateChanged', onState);
      const w = this.worker;
      this.worker = undefined;
      if (w !== undefined) {
        w.removeAllListeners('exit');
        await w.terminate();
      }
    }
  }

  private async round(bitmaps: DirtyRegion[] | undefined, opts: { bulk: boolean; last: boolean }): Promise<RoundResult> {
    const maps = bitmaps?.map((b) => b.bitmap) ?? [];
    const r = await this.command(
      { type: 'round', seq: ++this.seq, bulk: opts.bulk, last: opts.last, age: this.iterations, bitmaps: maps },
      maps.map((b) => b.buffer as ArrayBuffer),
    );
    const round = r.round as RoundResult;
    // Rounds shorter than a few ms say little about the link; keep the last good figure then.
    if (round.bytes > 0 && round.durationMs >= 1) this.bandwidth = (round.bytes * 1000) / round.durationMs;
    this.st.ram.bandwidth = Math.round(this.bandwidth);
    this.st.ram.pagesPerSecond = round.durationMs > 0 ? Math.round((round.pages * 1000) / round.durationMs) : 0;
    return round;
  }

  private precopyContext(): PrecopyContext {
    // Getters read the live figures; `src` because object-literal getters get their own `this`.
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const src = this;
    return {
      params: this.params,
      sendBulk: () => this.round(undefined, { bulk: true, last: false }),
      syncDirtyPages: (): number => {
        this.throwIfStopped();
        const fresh = this.machine.takeDirtyPages();
        this.unsent = mergeDirty(this.unsent, fresh);
        const now = performance.now();
        const pages = countDirty(this.unsent);
        const newly = countDirty(fresh);
        const elapsed = now - this.lastSyncAt;
        this.lastSyncAt = now;
        this.iterations++;
        this.st.ram.iterations = this.iterations;
        this.st.ram.dirtyPagesRate = elapsed > 0 ? Math.round((newly * 1000) / elapsed) : 0;
        this.st.ram.remainingBytes = pages * MIGRATION_PAGE_SIZE;
        return pages;
      },
      sendDirty: async () => {
        const maps = this.unsent;
        this.unsent = undefined;
        return this.round(maps, { bulk: false, last: false });
      },
      get bandwidth(): number {
        return src.bandwidth;
      },
      get iterations(): number {
        return src.iterations;
      },
      reportExpectedDowntime: (ms: number) => {
        this.st.expectedDowntimeMs = Number.isFinite(ms) ? Math.round(ms) : undefined;
        this.opts.onStatus?.(this.status());
      },
      throwIfStopped: () => this.throwIfStopped(),
    };
  }
}

/** The union of two dirty sets (either may be absent). */
function mergeDirty(a: DirtyRegion[] | undefined, b: DirtyRegion[]): DirtyRegion[] {
  if (a === undefined) return b;
  return b.map((r, i) => {
    const other = a[i];
    if (other === undefined || other.gpa !== r.gpa) return r;
    const bitmap = r.bitmap.slice();
    for (let w = 0; w < bitmap.length; w++) bitmap[w] = ((bitmap[w] as number) | (other.bitmap[w] ?? 0)) >>> 0;
    return { gpa: r.gpa, pages: r.pages, bitmap };
  });
}

function popcount32(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

function countDirty(regions: readonly DirtyRegion[]): number {
  let n = 0;
  for (const r of regions) for (let w = 0; w < r.bitmap.length; w++) n += popcount32(r.bitmap[w] as number);
  return n;
}

