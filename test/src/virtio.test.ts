/// <reference types="mocha" />
/**
 * virtio guest tests (docs/virtio.md): the polling virtio driver of the
 * guest kit against tsvmm's virtio-rng-pci and virtio-blk-pci and against
 * QEMU's own devices, with the same guest, the same image and the same
 * requests; the host checks the image file afterwards. Where QEMU differs
 * by design the test title says so.
 */
import { expect } from 'chai';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildGuests, describeRun, describeTapGuest, guestImage, runGuest, type GuestRun, type RunGuestOptions, type Vmm } from './guest-harness.js';

const TIMEOUT_MS = 60_000;
const IMAGE_SECTORS = 32768; // 16 MiB
const here = path.dirname(fileURLToPath(import.meta.url));

let scratch = '';
let pristine = '';
let busyPlugin = '';

/** The pattern the guest expects in a fresh image: the 32-bit word at byte offset o (blk_host_word). */
function hostImage(sectors: number): Buffer {
  const words = new Uint32Array((sectors * 512) / 4);
  for (let i = 0; i < words.length; i++) words[i] = (Math.imul(i, 0x9e3779b1) + 0x12345678) >>> 0;
  return Buffer.from(words.buffer);
}

/** What the guest writes (blk_guest_word): word i of a buffer written with `seed`. */
function guestData(bytes: number, seed: number): Buffer {
  const words = new Uint32Array(bytes / 4);
  for (let i = 0; i < words.length; i++) words[i] = (Math.imul(i + seed, 0x85ebca6b) ^ seed) >>> 0;
  return Buffer.from(words.buffer);
}

let imageCount = 0;
function freshImage(): string {
  const f = path.join(scratch, `disk${imageCount++}.img`);
  copyFileSync(pristine, f);
  return f;
}

/** A device option in the VMM's spelling. */
function dev(vmm: Vmm, spec: string): string[] {
  return [vmm === 'qemu' ? '-device' : '--device', spec];
}
function opt(vmm: Vmm, name: string, value: string): string[] {
  return [vmm === 'qemu' ? `-${name}` : `--${name}`, value];
}

function blkChecks(booted: () => GuestRun, file: () => string, opts: { discard: boolean; mq: number }): void {
  it('the image holds what the guest wrote: 8 KiB at sector 64, 64 KiB at sector 2048', () => {
    const img = readFileSync(file());
    expect(img.subarray(64 * 512, 64 * 512 + 8192).equals(guestData(8192, 1)), describeRun(booted())).to.equal(true);
    expect(img.subarray(2048 * 512, 2048 * 512 + 0x10000).equals(guestData(0x10000, 2)), describeRun(booted())).to.equal(true);
    expect(img.subarray(0, 4096).equals(hostImage(8)), 'data the guest only read is unchanged').to.equal(true);
  });
  if (opts.mq > 0) {
    it(`the image holds what each of the ${opts.mq} queues wrote`, () => {
      const img = readFileSync(file());
      for (let q = 0; q < opts.mq; q++) {
        const at = (128 + 8 * q) * 512;
        expect(img.subarray(at, at + 4096).equals(guestData(4096, 10 + q)), `queue ${q}`).to.equal(true);
      }
    });
  }
  if (opts.discard) {
    it('discarded and zeroed ranges read as zeroes on the host', () => {
      const img = readFileSync(file());
      const zero = (from: number, sectors: number): boolean => img.subarray(from * 512, (from + sectors) * 512).every((b) => b === 0);
      expect(zero(8192, 8192), 'discarded 4 MiB (holes read as zeroes)').to.equal(true);
      expect(zero(16384, 4096), 'write-zeroes with UNMAP').to.equal(true);
      expect(zero(24576, 8), 'write-zeroes').to.equal(true);
    });
    it('the file occupies at least 5 MiB less on the host (discard=unmap punched holes)', () => {
      const freed = statSync(pristine).blocks * 512 - statSync(file()).blocks * 512;
      expect(freed, `freed ${freed} bytes`).to.be.at.least(5 << 20);
    });
  }
}

function virtioSuite(vmm: Vmm): void {
  const boot = (o: Omit<RunGuestOptions, 'vmm' | 'timeoutMs'>): Promise<GuestRun> => runGuest({ vmm, timeoutMs: TIMEOUT_MS, memory: 128, ...o });

  describe(vmm, function () {
    this.timeout(TIMEOUT_MS * 2);

    describeTapGuest('virtio-rng: entropy requests, indirect chain', () =>
      boot({ kernel: guestImage('virtio_rng.elf'), extraArgs: dev(vmm, 'virtio-rng-pci') }),
    );

    describeTapGuest('virtio-rng with EVENT_IDX and an explicit source (the same -object rng-random and rng= on both)', () =>
      boot({
        kernel: guestImage('virtio_rng.elf'),
        append: 'event_idx=1',
        extraArgs: [...opt(vmm, 'object', 'rng-random,id=rng0,filename=/dev/urandom'), ...dev(vmm, 'virtio-rng-pci,rng=rng0')],
      }),
    );

    if (vmm === 'tsvmm') {
      describeTapGuest('virtio-rng on tsvmm\'s filename= shorthand', () =>
        boot({ kernel: guestImage('virtio_rng.elf'), extraArgs: dev(vmm, 'virtio-rng-pci,filename=/dev/urandom') }),
      );
    }

    describeTapGuest('virtio-rng rate limit: max-bytes=64 per 60 s period, at most 64 bytes within a one-second window', () =>
      boot({ kernel: guestImage('virtio_rng.elf'), append: 'limit=64 bufs=6', extraArgs: dev(vmm, 'virtio-rng-pci,max-bytes=64,period=60000') }),
    );

    describe('virtio-blk', () => {
      let rw = '';
      describeTapGuest(
        'virtio-blk: read, write, flush, GET_ID, errors, discard, write-zeroes, num-queues=2',
        async () => {
          rw = freshImage();
          return boot({
            kernel: guestImage('virtio_blk.elf'),
            append: `sectors=${IMAGE_SECTORS} serial=tsvmm-disk-1 discard=1 mq=2`,
            extraArgs: [
              ...opt(vmm, 'drive', `file=${rw},format=raw,if=none,id=d0,discard=unmap`),
              ...dev(vmm, 'virtio-blk-pci,drive=d0,serial=tsvmm-disk-1,num-queues=2'),
            ],
          });
        },
        (booted) => blkChecks(booted, () => rw, { discard: true, mq: 2 }),
      );

      let io = '';
      let io2 = '';
      describeTapGuest(
        'virtio-blk on an iothread (EVENT_IDX): the same requests, and a second device sharing the iothread',
        async () => {
          io = freshImage();
          io2 = freshImage();
          return boot({
            kernel: guestImage('virtio_blk.elf'),
            append: `sectors=${IMAGE_SECTORS} serial=io-disk discard=1 event_idx=1 devs=2`,
            extraArgs: [
              ...opt(vmm, 'object', 'iothread,id=io0'),
              ...opt(vmm, 'drive', `file=${io},format=raw,if=none,id=d0,discard=unmap`),
              ...dev(vmm, 'virtio-blk-pci,drive=d0,serial=io-disk,iothread=io0'),
              ...opt(vmm, 'drive', `file=${io2},format=raw,if=none,id=d1`),
              ...dev(vmm, 'virtio-blk-pci,drive=d1,iothread=io0'),
            ],
          });
        },
        (booted) => {
          blkChecks(booted, () => io, { discard: true, mq: 0 });
          it('the second device wrote its own image', () => {
            const img = readFileSync(io2);
            expect(img.subarray(256 * 512, 256 * 512 + 4096).equals(guestData(4096, 21)), describeRun(booted())).to.equal(true);
            expect(readFileSync(io).subarray(256 * 512, 256 * 512 + 4096).equals(hostImage(IMAGE_SECTORS).subarray(256 * 512, 256 * 512 + 4096))).to.equal(true);
          });
        },
      );

      let ro = '';
      describeTapGuest(
        `virtio-blk read-only through -drive if=virtio,readonly=on: writes fail with IOERR${vmm === 'qemu' ? ' (QEMU answers a discard on it with OK: its discard=ignore drops the request first)' : ''}`,
        async () => {
          ro = freshImage();
          return boot({
            kernel: guestImage('virtio_blk.elf'),
            append: `sectors=${IMAGE_SECTORS} ro=1${vmm === 'qemu' ? ' ro_discard=0' : ''}`,
            extraArgs: opt(vmm, 'drive', `file=${ro},format=raw,if=virtio,readonly=on`),
          });
        },
        () => {
          it('the image is unchanged', () => {
            const hash = (f: string): string => createHash('sha256').update(readFileSync(f)).digest('hex');
            expect(hash(ro)).to.equal(hash(pristine));
          });
        },
      );

      if (vmm === 'tsvmm') {
        const busyArgs = (iothread: boolean, image: string): string[] => [
          '--plugin',
          busyPlugin,
          '--device',
          'tsvmm-test-busy',
          ...(iothread ? ['--object', 'iothread,id=io0'] : []),
          '--drive',
          `file=${image},format=raw,if=none,id=d0`,
          '--device',
          `virtio-blk-pci,drive=d0${iothread ? ',iothread=io0' : ''}`,
        ];
        describeTapGuest('virtio-blk on an iothread completes I/O while the main thread is blocked for 3 s (test-only busy device)', () =>
          boot({ kernel: guestImage('virtio_blk_busy.elf'), smp: 2, append: 'busy=300 expect_during=1', extraArgs: busyArgs(true, freshImage()) }),
        );
        describeTapGuest('control: virtio-blk without an iothread waits for the blocked main thread', () =>
          boot({ kernel: guestImage('virtio_blk_busy.elf'), smp: 2, append: 'busy=300 expect_during=0', extraArgs: busyArgs(false, freshImage()) }),
        );
      } else {
        describeTapGuest('virtio-blk on an iothread, I/O part of the busy test (QEMU has no test-only busy device)', () =>
          boot({
            kernel: guestImage('virtio_blk_busy.elf'),
            smp: 2,
            append: 'busy=0',
            extraArgs: [...opt(vmm, 'object', 'iothread,id=io0'), ...opt(vmm, 'drive', `file=${freshImage()},format=raw,if=none,id=d0`), ...dev(vmm, 'virtio-blk-pci,drive=d0,iothread=io0')],
          }),
        );
      }
    });
  });
}

describe('virtio guests', function () {
  this.timeout(120_000);
  before(() => {
    buildGuests();
    scratch = mkdtempSync(path.join(os.tmpdir(), 'tsvmm-virtio-'));
    pristine = path.join(scratch, 'pristine.img');
    writeFileSync(pristine, hostImage(IMAGE_SECTORS));
    // The test-only busy device, as a plugin package whose entry is the compiled virtio-busy-device.js.
    busyPlugin = path.resolve(here, '../virtio-busy-plugin');
    mkdirSync(busyPlugin, { recursive: true });
    writeFileSync(
      path.join(busyPlugin, 'package.json'),
      JSON.stringify({
        name: '@tsvmm/test-busy-device',
        version: '0.0.0',
        type: 'module',
        main: '../src/virtio-busy-device.js',
        tsvmm: { kind: 'device', api: '^1.0.0', provides: ['tsvmm-test-busy'] },
      }),
    );
  });
  after(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  virtioSuite('tsvmm');
  virtioSuite('qemu');
});
