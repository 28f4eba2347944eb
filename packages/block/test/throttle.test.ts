/// <reference types="mocha" />
import { expect } from 'chai';
import {
  assertThrottlable,
  parseThrottleOptions,
  ThrottleConfigError,
  ThrottledBlockDevice,
  ThrottleError,
  ThrottleGroupRegistry,
  ThrottleState,
  throttleLimitsToOptions,
  unlimitedThrottle,
} from '../src/throttle.js';
import { FakeClock, RecordingDevice, settle } from './throttle-fakes.js';

const MS = 1e6;
const S = 1e9;

function stateWith(opts: Record<string, number>, clock: FakeClock): ThrottleState {
  return new ThrottleState(parseThrottleOptions(opts), () => clock.now());
}

describe('throttle: leaky bucket math', () => {
  it('lets I/O through until the level exceeds avg/10 when no burst rate is set', () => {
    const clock = new FakeClock();
    const s = stateWith({ 'bps-total': 1000 }, clock);
    expect(s.computeWait('read')).to.equal(0);
    s.account('read', 100);
    // level 100 == bucket size 100: not over, still admitted
    expect(s.computeWait('read')).to.equal(0);
    s.account('read', 100);
    // 100 bytes over the bucket at 1000 B/s = 0.1 s
    expect(s.computeWait('read')).to.equal(0.1 * S);
  });

  it('drains the level at avg units per second', async () => {
    const clock = new FakeClock();
    const s = stateWith({ 'bps-total': 1000 }, clock);
    s.account('write', 300);
    expect(s.computeWait('write')).to.equal(0.2 * S);
    await clock.advance(50 * MS);
    expect(s.levels()['bps-total'].level).to.be.closeTo(250, 1e-9);
    expect(s.computeWait('write')).to.be.closeTo(0.15 * S, 1);
    await clock.advance(10 * S);
    expect(s.levels()['bps-total'].level).to.equal(0);
  });

  it('a single request larger than the bucket runs; the next waits for it to drain', () => {
    const clock = new FakeClock();
    const s = stateWith({ 'bps-read': 1000 }, clock);
    expect(s.computeWait('read')).to.equal(0);
    s.account('read', 1_000_000);
    expect(s.computeWait('read')).to.be.closeTo(999.9 * S, 1);
  });

  it('reads fill the total and read buckets only; writes the total and write buckets', () => {
    const clock = new FakeClock();
    const s = stateWith({ 'bps-read': 1000, 'bps-write': 1000 }, clock);
    s.account('read', 500);
    expect(s.computeWait('write')).to.equal(0);
    expect(s.computeWait('read')).to.be.greaterThan(0);
    const lv = s.levels();
    expect(lv['bps-read'].level).to.equal(500);
    expect(lv['bps-write'].level).to.equal(0);
    expect(lv['bps-total'].level).to.equal(500);
    expect(lv['iops-total'].level).to.equal(1);
  });

  it('with a burst rate the bucket holds max * max-length before throttling to avg', () => {
    const clock = new FakeClock();
    const s = stateWith({ 'iops-total': 10, 'iops-total-max': 100, 'iops-total-max-length': 5 }, clock);
    // burst bucket: 100/10 = 10 ops of slack at the burst rate
    for (let i = 0; i < 10; i++) s.account('read', 512);
    expect(s.computeWait('read')).to.equal(0);
    s.account('read', 512);
    // 11 in the burst bucket: 1 op over at 100 op/s = 10 ms
    expect(s.computeWait('read')).to.be.closeTo(10 * MS, 1);
  });

  it('throttles to avg once the burst budget (max * max-length) is used', async () => {
    const clock = new FakeClock();
    const s = stateWith({ 'iops-total': 10, 'iops-total-max': 100, 'iops-total-max-length': 5 }, clock);
    // A client trying 200 op/s: the burst rate (100/s) holds until the main
    // bucket (500 ops) fills, at 500 + 10t = 100t, t ~ 5.5 s; then avg (10/s).
    const admitted: number[] = [];
    for (let t = 0; t < 10 * S; t += 5 * MS) {
      await clock.advanceTo(t);
      if (s.computeWait('read') === 0) {
        s.account('read', 512);
        admitted.push(t);
      }
    }
    const inWindow = (from: number, to: number) => admitted.filter((t) => t >= from * S && t < to * S).length;
    expect(inWindow(1, 5)).to.be.within(395, 405);
    expect(inWindow(7, 10)).to.be.within(28, 32);
  });

  it('iops-size counts a request larger than it as several operations', () => {
    const clock = new FakeClock();
    const s = stateWith({ 'iops-total': 100, 'iops-size': 4096 }, clock);
    s.account('write', 16384);
    expect(s.levels()['iops-total'].level).to.equal(4);
    s.account('write', 512);
    expect(s.levels()['iops-total'].level).to.equal(5);
  });

  it('new limits restart the bucket levels from empty', () => {
    const clock = new FakeClock();
    const s = stateWith({ 'bps-total': 1000 }, clock);
    s.account('read', 5000);
    s.configure(parseThrottleOptions({ 'bps-total': 2000 }));
    expect(s.levels()['bps-total'].level).to.equal(0);
    expect(s.computeWait('read')).to.equal(0);
  });
});

describe('throttle: option validation', () => {
  const bad: Array<[Record<string, number | string>, string, RegExp]> = [
    [{ 'bps-total-max': 100 }, 'bps-total-max', /requires bps-total/],
    [{ 'iops-read': 10, 'iops-read-max-length': 5 }, 'iops-read-max-length', /without iops-read-max/],
    [{ 'bps-write': -1 }, 'bps-write', /negative/],
    [{ 'bps-total': 100, 'bps-read': 100 }, 'bps-total', /cannot be combined/],
    [{ 'iops-total-max': 10, 'iops-write-max': 10, 'iops-total': 5, 'iops-write': 0 }, 'iops-total-max', /cannot be combined/],
    [{ 'iops-size': 4096 }, 'iops-size', /requires an iops limit/],
    [{ 'bps-read': 100, 'bps-read-max': 50 }, 'bps-read-max', /cannot be lower/],
    [{ 'bps-read': 'fast' }, 'bps-read', /not a number/],
    [{ 'bps-read': 1.5 }, 'bps-read', /integer/],
    [{ 'bps-red': 100 }, 'bps-red', /unknown throttle option/],
    [{ 'bps-read': 2e15 }, 'bps-read', /within/],
    [{ 'bps-read': 10, 'bps-read-max': 20, 'bps-read-max-length': 0 }, 'bps-read-max-length', />= 1/],
  ];
  for (const [opts, option, msg] of bad) {
    it(`rejects ${JSON.stringify(opts)} naming ${option}`, () => {
      let err: unknown;
      try {
        parseThrottleOptions(opts);
      } catch (e) {
        err = e;
      }
      expect(err).to.be.instanceOf(ThrottleConfigError);
      expect((err as ThrottleConfigError).option).to.equal(option);
      expect((err as Error).message).to.match(msg);
    });
  }

  it('accepts QEMU spellings with the throttling. prefix and round-trips them', () => {
    const l = parseThrottleOptions({
      'throttling.bps-total': '1048576',
      'throttling.bps-total-max': 2097152,
      'throttling.bps-total-max-length': 10,
      'iops-read': 100,
      'iops-size': 8192,
    });
    expect(throttleLimitsToOptions(l)).to.deep.equal({
      'bps-total': 1048576,
      'bps-total-max': 2097152,
      'bps-total-max-length': 10,
      'iops-read': 100,
      'iops-size': 8192,
    });
  });
});

describe('throttle: filter device', () => {
  function setup(opts: Record<string, number>, group?: string) {
    const clock = new FakeClock();
    const registry = new ThrottleGroupRegistry(clock);
    const child = new RecordingDevice('disk.img', 1 << 20, clock);
    const dev = new ThrottledBlockDevice(child, { registry, limits: parseThrottleOptions(opts), group, name: 'd0' });
    return { clock, registry, child, dev };
  }

  it('spaces requests at the iops rate once the short-burst allowance is used', async () => {
    const { clock, child, dev } = setup({ 'iops-total': 10 });
    const done: number[] = [];
    const reqs = Array.from({ length: 5 }, (_, i) =>
      dev.read(i * 512, new Uint8Array(512)).then(() => done.push(clock.now())),
    );
    await settle();
    // bucket size 10/10 = 1 op: the first two run at once
    expect(child.log.length).to.equal(2);
    await clock.advance(2 * S);
    await Promise.all(reqs);
    expect(child.log.map((l) => l.at)).to.deep.equal([0, 0, 100 * MS, 200 * MS, 300 * MS]);
    // requests of one drive stay in order
    expect(child.log.map((l) => l.offset)).to.deep.equal([0, 512, 1024, 1536, 2048]);
  });

  it('does not throttle flush and throttles discard/write-zeroes as writes', async () => {
    const { clock, child, dev } = setup({ 'bps-write': 1000 });
    await dev.write(0, new Uint8Array(200));
    await dev.flush();
    expect(child.log.map((l) => l.op)).to.deep.equal(['write', 'flush']);
    const p = dev.discard(0, 100);
    await settle();
    expect(child.log.length).to.equal(2);
    await clock.advance(100 * MS);
    await p;
    expect(child.log[2]).to.include({ op: 'discard', at: 100 * MS });
    // reads are unaffected by write limits
    await dev.read(0, new Uint8Array(4096));
    expect(child.log[3]).to.include({ op: 'read', at: 100 * MS });
  });

  it('shares a group between drives and serves them round robin', async () => {
    const clock = new FakeClock();
    const registry = new ThrottleGroupRegistry(clock);
    const limits = parseThrottleOptions({ 'iops-total': 10 });
    const a = new RecordingDevice('a.img', 1 << 20, clock);
    const b = new RecordingDevice('b.img', 1 << 20, clock);
    const da = new ThrottledBlockDevice(a, { registry, limits, group: 'tenant1', name: 'a' });
    const db = new ThrottledBlockDevice(b, { registry, group: 'tenant1', name: 'b' });
    expect(registry.names()).to.deep.equal(['tenant1']);
    const ps: Array<Promise<void>> = [];
    for (let i = 0; i < 6; i++) ps.push(da.read(i * 512, new Uint8Array(512)));
    await settle();
    ps.push(db.read(0, new Uint8Array(512)));
    await clock.advance(5 * S);
    await Promise.all(ps);
    // combined rate obeys the single limit: 7 requests, 2 free, then one per 100 ms
    const times = [...a.log, ...b.log].map((l) => l.at).sort((x, y) => x - y);
    expect(times).to.deep.equal([0, 0, 100, 200, 300, 400, 500].map((t) => t * MS));
    // b's single request did not wait behind all of a's queue
    const bAt = b.log[0]?.at ?? Infinity;
    expect(bAt).to.be.lessThan(a.log[a.log.length - 1]?.at ?? 0);
    await da.close();
    expect(registry.names()).to.deep.equal(['tenant1']);
    await db.close();
    expect(registry.names()).to.deep.equal([]);
  });

  it('applies new limits at run time to requests already waiting', async () => {
    const { clock, child, dev } = setup({ 'bps-total': 1000 });
    const ps = Array.from({ length: 4 }, (_, i) => dev.write(i * 100, new Uint8Array(100)));
    await settle();
    expect(child.log.length).to.equal(2);
    dev.setLimits({});
    await settle();
    await Promise.all(ps);
    expect(child.log.map((l) => l.at)).to.deep.equal([0, 0, 0, 0]);
    expect(clock.pendingTimers).to.equal(0);
    // and can be tightened again
    dev.setLimits(parseThrottleOptions({ 'iops-write': 1 }));
    expect(dev.getLimits().buckets['iops-write'].avg).to.equal(1);
  });

  it('refuses invalid run-time limits and keeps the old ones', () => {
    const { dev } = setup({ 'bps-total': 1000 });
    expect(() => dev.setLimits({ 'bps-total-max': 10 })).to.throw(ThrottleConfigError, /bps-total-max/);
    expect(dev.getLimits().buckets['bps-total'].avg).to.equal(1000);
  });

  it('close lets waiting requests through and closes the child', async () => {
    const { child, dev } = setup({ 'iops-total': 1 });
    const ps = Array.from({ length: 3 }, () => dev.read(0, new Uint8Array(512)));
    await settle();
    expect(child.log.length).to.equal(1);
    await dev.close();
    await Promise.all(ps);
    expect(child.log.length).to.equal(3);
    expect(child.closed).to.equal(true);
    let err: unknown;
    try {
      await dev.read(0, new Uint8Array(1));
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(ThrottleError);
  });

  it('an unlimited group never delays', async () => {
    const clock = new FakeClock();
    const registry = new ThrottleGroupRegistry(clock);
    const child = new RecordingDevice('x', 1 << 20, clock);
    const dev = new ThrottledBlockDevice(child, { registry, limits: unlimitedThrottle() });
    await Promise.all(Array.from({ length: 100 }, () => dev.write(0, new Uint8Array(65536))));
    expect(child.log.length).to.equal(100);
  });
});

describe('throttle: iothread refusal', () => {
  it('refuses a device on an iothread, saying the data plane cannot be throttled', () => {
    expect(() => assertThrottlable({ id: 'vblk0', iothread: 'io0', drive: 'disk0' })).to.throw(
      ThrottleError,
      /device 'vblk0' \(drive 'disk0'\).*iothread 'io0'.*data plane cannot be throttled/,
    );
  });
  it('accepts a device without an iothread', () => {
    expect(() => assertThrottlable({ id: 'vblk0' })).not.to.throw();
  });
});
