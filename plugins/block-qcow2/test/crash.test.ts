/**
 * Crash safety: a writer killed with SIGKILL mid-loop leaves an image that
 * opens (repairing a lazy-refcounts image left dirty), passes qemu-img
 * check, and still holds every write the writer acknowledged after flush.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { FLUSH_EVERY, SECTOR, crashWrite } from './crash-plan.js';
import { img, qemu, registry, scratch } from './helpers.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const SIZE = 32 * 1024 * 1024;

/** Runs the writer until it has acknowledged at least minAcks flushes, then kills it. */
function runAndKill(file: string, seed: number, minAcks: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'crash-writer.js'), file, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let acked = 0;
    let acks = 0;
    let stderr = '';
    let buf = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /^ack (\d+)$/.exec(line);
        if (m) {
          acked = Number(m[1]);
          acks++;
          // kill at a varying point inside the next batch
          if (acks === minAcks) setTimeout(() => child.kill('SIGKILL'), seed % 7);
        }
      }
    });
    child.on('exit', (_code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`writer exited on its own (${signal ?? _code}): ${stderr}`));
      else resolve(acked);
    });
  });
}

/** Every sector shows its last acknowledged write, or a later (unacknowledged) one. */
function verify(content: Buffer, seed: number, acked: number): void {
  const sectors = SIZE / SECTOR;
  const lastAcked = new Int32Array(sectors);
  const laterWriters = new Map<number, Set<number>>();
  for (let j = 1; j <= acked + 2 * FLUSH_EVERY + 2; j++) {
    const w = crashWrite(seed, j, SIZE);
    const first = w.offset / SECTOR;
    for (let s = first; s < first + w.data.length / SECTOR; s++) {
      if (j <= acked) lastAcked[s] = j;
      else {
        let set = laterWriters.get(s);
        if (!set) laterWriters.set(s, (set = new Set()));
        set.add(j);
      }
    }
  }
  for (let s = 0; s < sectors; s++) {
    const stamp = content.readUInt32BE(s * SECTOR);
    const want = lastAcked[s] ?? 0;
    if (stamp === want) continue;
    if (stamp > acked && laterWriters.get(s)?.has(stamp)) continue;
    throw new Error(`sector ${s}: holds write ${stamp}, but the last acknowledged write there is ${want} (acked up to ${acked})`);
  }
}

describe('qcow2 crash safety (SIGKILL during a write loop)', function () {
  this.timeout(120000);
  for (const lazy of [false, true]) {
    for (const seed of [1, 2]) {
      it(`${lazy ? 'lazy refcounts: repaired on open,' : 'eager refcounts:'} passes qemu-img check and keeps acknowledged writes (seed ${seed})`, async () => {
        const s = scratch();
        try {
          const file = s.file('crash.qcow2');
          const opts = lazy ? 'lazy_refcounts=on,cluster_size=4k' : 'cluster_size=4k';
          expect((await img(['create', '-q', '-f', 'qcow2', '-o', opts, file, String(SIZE)])).code).to.equal(0);
          const acked = await runAndKill(file, seed, 12 + seed * 5);
          expect(acked).to.be.greaterThan(0);

          if (lazy) {
            const hdr = readFileSync(file).subarray(72, 80);
            expect((hdr[7] ?? 0) & 1, 'the killed writer left the dirty bit set').to.equal(1);
          }
          // opening read-write repairs a dirty image; closing writes a clean header
          const dev = await registry().openImage(file);
          await dev.close();
          let check = qemu('qemu-img', ['check', file], { allowFail: true });
          // eager refcounts may leak clusters allocated after the last flush, never corrupt
          expect(check.status, check.stdout).to.be.oneOf(lazy ? [0] : [0, 3]);
          if (check.status === 3) {
            const r = await img(['check', '-r', 'leaks', file]);
            expect(r.code, r.out + r.err).to.equal(0);
            check = qemu('qemu-img', ['check', file], { allowFail: true });
            expect(check.status, check.stdout).to.equal(0);
          }
          qemu('qemu-img', ['convert', '-O', 'raw', file, s.file('after.raw')]);
          verify(readFileSync(s.file('after.raw')), seed, acked);
        } finally {
          s.cleanup();
        }
      });
    }
  }
});
