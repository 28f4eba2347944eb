/**
 * The destination side (`--incoming`, or a VM created with `incoming`), on
 * the main thread. The migration thread (worker/destination-worker.ts)
 * listens, parses and writes RAM; this side decides:
 *
 *   CONFIG   checked against the VM built here (config.ts) and answered
 *            ACCEPT or REJECT — before the source sends any RAM
 *   END      every device, CPU and machine section is loaded into the
 *            not-yet-started machine; LOADED or FAILED goes back
 *   COMMIT   the VM starts (a file: its clean end after END)
 *
 * On any failure the machine is left unstarted and `done` rejects: the
 * caller discards the VM. It never runs on a partial stream.
 */
import { Worker } from 'node:worker_threads';
import type { Logger, Machine } from '@tsvmm/core';
import { configProblems, parseStreamConfig } from './config.js';
import { MigrationCancelledError, MigrationConfigError, MigrationError } from './errors.js';
import { emptyStatus, type MigrationStatus } from './parameters.js';
import { formatTransport, type TransportSpec } from './transport.js';
import type { DestinationCommand, DestinationEvent, DestinationWorkerInit, StateSection } from './worker/messages.js';

export interface MigrationDestinationOptions {
  /** a machine created with `incoming: true`, not started */
  machine: Machine;
  /** where to listen (tcp, unix) or the snapshot to read (file) */
  source: TransportSpec;
  log?: Logger;
  onStatus?: (status: MigrationStatus) => void;
}

export class MigrationDestination {
  private readonly machine: Machine;
  private readonly st: MigrationStatus = emptyStatus();
  private worker: Worker | undefined;
  private readonly devices = new Map<string, Extract<StateSection, { kind: 'device' }>>();
  private cpu: unknown;
  private machineState: unknown;
  private peer = '?';
  private startedAt = 0;
  private settled = false;
  private resolveDone: () => void = () => undefined;
  private rejectDone: (e: Error) => void = () => undefined;
  private listening: { resolve: (a: string) => void; reject: (e: Error) => void } | undefined;
  /** resolves once the VM runs from the stream; rejects (MigrationError) when the migration failed */
  readonly done: Promise<void>;

  constructor(private readonly opts: MigrationDestinationOptions) {
    this.machine = opts.machine;
    this.st.role = 'destination';
    this.st.uri = formatTransport(opts.source);
    this.st.ram.totalBytes = this.machine.layout.ramSize;
    this.done = new Promise<void>((resolve, reject) => {
      this.resolveDone = resolve;
      this.rejectDone = reject;
    });
    // A caller that only awaits listen() must not see an unhandled rejection.
    this.done.catch(() => undefined);
  }

  status(): MigrationStatus {
    const s = structuredClone(this.st);
    if (!this.settled && this.startedAt > 0) s.totalTimeMs = Math.round(performance.now() - this.startedAt);
    return s;
  }

  /** Start the migration thread; resolves with the address it listens on (`tcp:HOST:PORT`, `unix:PATH`, `file:PATH`). */
  listen(): Promise<string> {
    if (this.machine.state !== 'created') return Promise.reject(new MigrationError(`an incoming migration needs a VM that has not run yet (this one is ${this.machine.state})`));
    const init: DestinationWorkerInit = {
      transport: this.opts.source,
      regions: this.machine.memory.list().map((r) => ({ gpa: r.gpa, size: r.size, buffer: r.buffer, ...(r.fd !== undefined ? { fd: r.fd } : {}) })),
    };
    const listening = new Promise<string>((resolve, reject) => {
      this.listening = { resolve, reject };
    });
    const w = new Worker(new URL('./worker/destination-worker.js', import.meta.url), { workerData: init, name: 'incoming migration' });
    this.worker = w;
    w.on('message', (e: DestinationEvent) => this.onEvent(e));
    w.on('error', (err) => this.fail(new MigrationError(`the incoming migration thread failed: ${err.message}`, { cause: err })));
    w.on('exit', (code) => this.fail(new MigrationError(`the incoming migration thread ended (exit code ${code})`)));
    this.st.status = 'setup';
    return listening;
  }

  cancel(reason = 'the incoming migration was cancelled'): void {
    this.fail(new MigrationCancelledError(reason));
  }

  private post(cmd: DestinationCommand): void {
    this.worker?.postMessage(cmd);
  }

  private notify(): void {
    this.opts.onStatus?.(this.status());
  }

  private fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.st.status = err instanceof MigrationCancelledError ? 'cancelled' : 'failed';
    this.st.error = err.message;
    if (this.startedAt > 0) this.st.totalTimeMs = Math.round(performance.now() - this.startedAt);
    this.listening?.reject(err);
    this.post({ type: 'cancel' });
    this.stopWorker();
    this.notify();
    this.rejectDone(err);
  }

  private stopWorker(): void {
    const w = this.worker;
    this.worker = undefined;
    if (w === undefined) return;
    w.removeAllListeners('exit');
    w.removeAllListeners('error');
    // Give the thread a moment to tell the source why before it goes.
    setTimeout(() => void w.terminate(), 200).unref();
  }

  private onEvent(e: DestinationEvent): void {
    if (this.settled) return;
    try {
      switch (e.type) {
        case 'listening':
          this.listening?.resolve(e.address);
          this.listening = undefined;
          return;
        case 'connected':
          this.peer = e.peer;
          this.startedAt = performance.now();
          this.st.status = 'active';
          this.notify();
          return;
        case 'header':
          return;
        case 'config':
          this.checkConfig(e.config);
          return;
        case 'state':
          this.collect(e.section);
          return;
        case 'end':
          this.st.ram.transferredBytes = e.bytes;
          this.st.ram.normalPages = e.ram.normalPages;
          this.st.ram.zeroPages = e.ram.zeroPages;
          this.st.status = 'device';
          this.load();
          return;
        case 'commit':
          this.start();
          return;
        case 'progress':
          this.st.ram.transferredBytes = e.bytes;
          this.st.ram.normalPages = e.ram.normalPages;
          this.st.ram.zeroPages = e.ram.zeroPages;
          this.notify();
          return;
        case 'failed':
          this.fail(new MigrationError(`incoming migration from ${this.peer} failed: ${e.message}`));
          return;
      }
    } catch (err) {
      this.fail(err instanceof MigrationError ? err : new MigrationError(`incoming migration from ${this.peer} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
    }
  }

  private checkConfig(raw: unknown): void {
    let problems: string[];
    try {
      problems = configProblems(parseStreamConfig(raw), this.machine.migrationInfo());
    } catch (err) {
      problems = [err instanceof Error ? err.message : String(err)];
    }
    if (problems.length > 0) {
      this.post({ type: 'config-verdict', ok: false, problems });
      this.fail(new MigrationConfigError(problems, 'source'));
      return;
    }
    this.post({ type: 'config-verdict', ok: true });
  }

  private collect(s: StateSection): void {
    if (s.kind === 'device') {
      if (this.devices.has(s.meta.id)) throw new MigrationError(`the stream has two states for device '${s.meta.id}'`);
      this.devices.set(s.meta.id, s);
    } else if (s.kind === 'cpu') {
      if (this.cpu !== undefined) throw new MigrationError('the stream has two CPU sections');
      this.cpu = s.state;
    } else {
      if (this.machineState !== undefined) throw new MigrationError('the stream has two MACHINE sections');
      this.machineState = s.state;
    }
  }

  private load(): void {
    try {
      const m = this.machine;
      for (const d of m.migrationInfo().devices) {
        const s = this.devices.get(d.id);
        if (s === undefined) throw new MigrationError(`the stream has no state for device '${d.id}' (${d.driver})`);
        if (s.meta.driver !== d.driver) throw new MigrationError(`the stream's state for '${d.id}' is for a ${s.meta.driver}, not a ${d.driver}`);
        m.loadDeviceState(d.id, s.meta.stateVersion, s.state);
      }
      if (this.cpu === undefined) throw new MigrationError('the stream has no CPU section');
      const ms = this.machineState;
      const clockNs = typeof ms === 'object' && ms !== null ? (ms as Record<string, unknown>)['clockNs'] : undefined;
      if (typeof clockNs !== 'bigint' || clockNs < 0n) throw new MigrationError('the stream has no MACHINE section with the run-time clock');
      m.loadMachineState(this.cpu, clockNs);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.post({ type: 'load-verdict', ok: false, message });
      throw err instanceof MigrationError ? err : new MigrationError(`loading the VM state failed: ${message}`, { cause: err });
    }
    this.post({ type: 'load-verdict', ok: true });
  }

  private start(): void {
    this.machine.startMigrated(`${this.opts.source.kind === 'file' ? 'restored from' : 'migrated from'} ${this.opts.source.kind === 'file' ? this.st.uri ?? '?' : this.peer}`);
    this.settled = true;
    this.st.status = 'completed';
    this.st.totalTimeMs = Math.round(performance.now() - this.startedAt);
    this.stopWorker();
    this.notify();
    this.resolveDone();
  }
}
