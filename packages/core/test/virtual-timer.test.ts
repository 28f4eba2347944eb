/** Timers on the VM's run-time clock (virtual-timer.ts): they fire only while the clock runs, never early. */
import { expect } from 'chai';
import { VirtualTimerSet } from '../src/index.js';

const MS = 1_000_000n;

/** A run-time clock driven by the host clock, which the test can stop. */
function runClock(): { now: () => bigint; stop(): void; start(): void } {
  let base = process.hrtime.bigint();
  let stoppedAt: bigint | undefined = undefined;
  return {
    now: () => (stoppedAt ?? process.hrtime.bigint()) - base,
    stop() {
      stoppedAt = process.hrtime.bigint();
    },
    start() {
      if (stoppedAt !== undefined) base += process.hrtime.bigint() - stoppedAt;
      stoppedAt = undefined;
    },
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('VirtualTimerSet', () => {
  it('fires once, no earlier than its deadline in run time', async () => {
    const clock = runClock();
    const set = new VirtualTimerSet(clock.now);
    set.resume();
    const seen: bigint[] = [];
    const done = new Promise<void>((resolve) => {
      const t = set.create(() => {
        seen.push(clock.now());
        resolve();
      });
      t.arm(clock.now() + 15n * MS);
      expect(t.deadlineNs).to.be.a('bigint');
    });
    await done;
    await sleep(30);
    expect(seen).to.have.length(1);
    expect((seen[0] ?? 0n) >= 15n * MS, `fired at ${seen[0]} ns`).to.equal(true);
    set.close();
  });

  it('does not fire while paused; fires after resume, with the pause not counted', async () => {
    const clock = runClock();
    const set = new VirtualTimerSet(clock.now);
    set.resume();
    let fired = 0;
    const t = set.create(() => fired++);
    t.arm(clock.now() + 10n * MS);
    clock.stop();
    set.pause();
    await sleep(40);
    expect(fired).to.equal(0);
    clock.start();
    set.resume();
    while (fired === 0) await sleep(5);
    expect(fired).to.equal(1);
    expect(clock.now() >= 10n * MS).to.equal(true);
    set.close();
  });

  it('cancel and close forget the deadline; re-arming replaces it', async () => {
    const clock = runClock();
    const set = new VirtualTimerSet(clock.now);
    set.resume();
    let a = 0;
    let b = 0;
    const ta = set.create(() => a++);
    const tb = set.create(() => b++);
    ta.arm(clock.now() + 5n * MS);
    ta.cancel();
    expect(ta.deadlineNs).to.equal(undefined);
    tb.arm(clock.now() + 1000n * MS);
    tb.arm(clock.now() + 5n * MS);
    while (b === 0) await sleep(5);
    await sleep(20);
    expect(a).to.equal(0);
    expect(b).to.equal(1);
    ta.arm(clock.now() + 5n * MS);
    set.close();
    await sleep(30);
    expect(a).to.equal(0);
  });
});
