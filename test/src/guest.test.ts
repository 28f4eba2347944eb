/// <reference types="mocha" />
/**
 * Guest tests: each guest of test/guest/ boots under tsvmm and under QEMU
 * (qemu-system-x86_64 -accel kvm), prints TAP on COM1 and ends through
 * isa-debug-exit; both VMMs must give the same results. Where QEMU differs
 * by design, the test says so and checks QEMU's behaviour instead.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  buildGuests,
  debugExitStatus,
  describeRun,
  describeTapGuest,
  guestImage,
  runGuest,
  TAP_PASS_STATUS,
  tsvmmCli,
  type GuestRun,
  type RunGuestOptions,
  type Vmm,
} from './guest-harness.js';

const TIMEOUT_MS = 30_000;
const MEMORY_MIB = 128;
const BAD_BOOT_STATUS = debugExitStatus(3); // KIT_EXIT_BAD_BOOT

let scratch = '';
let multibootModule = '';
let linuxInitrd = '';
const MODULE_SIZE = 5000;
const INITRD_SIZE = 10000;

function expectStatus(run: GuestRun, status: number | NodeJS.Signals, what: string): void {
  expect(run.status, `${what}\n${describeRun(run)}`).to.equal(status);
}

function guestSuite(vmm: Vmm): void {
  const boot = (o: Omit<RunGuestOptions, 'vmm' | 'timeoutMs'> & { timeoutMs?: number }): Promise<GuestRun> =>
    runGuest({ vmm, timeoutMs: TIMEOUT_MS, memory: MEMORY_MIB, ...o });

  describe(vmm, function () {
    this.timeout(TIMEOUT_MS * 3);

    describe('demo guest', () => {
      let run: GuestRun | undefined;
      before(async () => {
        run = await boot({ kernel: guestImage('demo.elf'), smp: 2 });
      });
      const booted = (): GuestRun => {
        if (!run) throw new Error('the guest did not boot (see the before hook)');
        return run;
      };

      const output = (): string => booted().serialOutput;

      it('greets on the serial port', () => {
        expect(output(), describeRun(booted())).to.include('Hello from the tsvmm demo guest!');
      });

      it('reports the multiboot memory size', () => {
        expect(output(), describeRun(booted())).to.match(/^memory: \d+ KiB low, \d+ KiB above 1 MiB$/m);
        expect(output(), describeRun(booted())).to.match(/^memory map: \d+ KiB available$/m);
      });

      it('reports the CPU count from fw_cfg', () => {
        expect(output(), describeRun(booted())).to.match(/^cpus: 2 \(fw_cfg\)$/m);
      });

      it('reports the RTC date and time', () => {
        expect(output(), describeRun(booted())).to.match(/^clock: \d+ [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \(RTC\)$/m);
      });

      it('powers off through ACPI (PM1a_CNT 0x604 <- 0x2000), so the VMM exits with status 0', () => {
        expect(output(), describeRun(booted())).to.include('Powering off.');
        expectStatus(booted(), 0, 'an ACPI S5 request ends the VMM with status 0');
      });
    });

    describeTapGuest(
      'serial guest (16550A on COM1)',
      () =>
        boot({
          kernel: guestImage('serial.elf'),
          append: 'line=tsvmm-serial-echo',
          input: 'tsvmm-serial-echo\n',
          inputAfter: '# ready for input',
        }),
      (booted) => {
        it('echoes the line the host sent on stdin', () => {
          expect(booted().serialOutput, describeRun(booted())).to.include('echo: tsvmm-serial-echo\n');
        });
      },
    );

    describe('debug_exit guest (isa-debug-exit at 0xf4)', () => {
      for (const v of [0, 1, 42, 127, 128, 255]) {
        it(`a write of ${v} ends the VMM with status ${debugExitStatus(v)} ((v << 1) | 1, 8 bits)`, async () => {
          const run = await boot({ kernel: guestImage('debug_exit.elf'), append: `code=${v}` });
          expect(run.serialOutput, describeRun(run)).to.include(`# writing 0x${v.toString(16)} to port 0xf4`);
          expectStatus(run, debugExitStatus(v), `debug-exit ${v}`);
        });
      }
    });

    describeTapGuest('fw_cfg guest', () =>
      boot({
        kernel: guestImage('fw_cfg.elf'),
        smp: 2,
        append: `cpus=2 mem=${MEMORY_MIB} file=opt/tsvmm/test content=hello`,
        fwCfg: [{ name: 'opt/tsvmm/test', string: 'hello' }],
      }),
    );

    describeTapGuest(
      'multiboot guest (boot information, memory map, command line, module)',
      () =>
        boot({
          kernel: guestImage('multiboot.elf'),
          append: `mem=${MEMORY_MIB} word=tsvmm-multiboot modsize=${MODULE_SIZE} modarg=tsvmm-module-arg`,
          modules: [{ path: multibootModule, args: 'tsvmm-module-arg' }],
        }),
      (booted) => {
        it('gets the kernel path, a space and -append as its command line', () => {
          const expected = `cmdline: ${guestImage('multiboot.elf')} mem=${MEMORY_MIB} word=tsvmm-multiboot`;
          const lines = booted().tap.diagnostics.filter((d) => d.startsWith('cmdline: '));
          expect(lines, describeRun(booted())).to.have.length(1);
          expect(lines[0]).to.satisfy((l: string) => l.startsWith(expected));
        });
      },
    );

    describeTapGuest('aout guest (multiboot a.out kludge, flat binary at 2 MiB)', () =>
      boot({ kernel: guestImage('aout.bin') }),
    );

    describeTapGuest('rtc guest (MC146818 and CMOS memory size)', () =>
      boot({ kernel: guestImage('rtc.elf'), append: `now=${Math.floor(Date.now() / 1000)} mem=${MEMORY_MIB}` }),
    );

    describeTapGuest(
      'reset_kbd guest (8042 reset, CMOS kept across it)',
      () => boot({ kernel: guestImage('reset_kbd.elf') }),
      (booted) => {
        it('booted twice: the first boot reset the machine', () => {
          expect(booted().serialOutput, describeRun(booted())).to.match(/# first boot: .*\n(.*\n)*# second boot/);
        });
      },
    );

    describeTapGuest(
      'triple_fault guest (reset through a triple fault)',
      () => boot({ kernel: guestImage('triple_fault.elf') }),
      (booted) => {
        it('booted twice: the triple fault reset the machine', () => {
          expect(booted().serialOutput, describeRun(booted())).to.match(/# first boot: .*\n(.*\n)*# second boot/);
        });
      },
    );

    describe('triple_fault guest with --no-reboot', () => {
      let run: GuestRun | undefined;
      before(async () => {
        run = await boot({ kernel: guestImage('triple_fault.elf'), noReboot: true });
      });
      const booted = (): GuestRun => {
        if (!run) throw new Error('the guest did not boot (see the before hook)');
        return run;
      };

      it('stops after the first boot', () => {
        expect(booted().serialOutput, describeRun(booted())).to.include('# first boot');
        expect(booted().serialOutput, describeRun(booted())).not.to.include('# second boot');
        expect(booted().timedOut, describeRun(booted())).to.equal(false);
      });

      if (vmm === 'tsvmm') {
        it('exits with a non-zero status and one line naming the triple fault', () => {
          expect(booted().status, describeRun(booted())).to.not.equal(0);
          const lines = booted().stderr.split('\n').filter((l) => /triple fault/i.test(l));
          expect(lines, describeRun(booted())).to.have.length(1);
        });
      } else {
        it('exits with status 0: QEMU -no-reboot turns the reset into an ordinary exit (differs by design)', () => {
          expectStatus(booted(), 0, 'QEMU -no-reboot exits 0 on a guest reset');
        });
      }
    });

    describeTapGuest(
      'smp guest (INIT/SIPI/SIPI through the local APIC)',
      () => boot({ kernel: guestImage('smp.elf'), smp: 2 }),
      (booted) => {
        it('the AP printed its APIC ID under the serial lock', () => {
          expect(booted().serialOutput, describeRun(booted())).to.match(/^# AP 0: APIC ID 1, running 32-bit code$/m);
        });
      },
    );

    if (vmm === 'tsvmm') {
      describeTapGuest(
        'bzImage payload (Linux 64-bit boot protocol)',
        () =>
          boot({
            kernel: guestImage('bzimage.bin'),
            initrd: linuxInitrd,
            append: `tsvmm-bzimage tsvmm_mem=${MEMORY_MIB} initrd_size=${INITRD_SIZE}`,
          }),
        (booted) => {
          it('prints the e820 table', () => {
            expect(booted().serialOutput, describeRun(booted())).to.match(/^# e820: [1-9]\d* entries$/m);
            expect(booted().serialOutput, describeRun(booted())).to.match(/^# e820 0x[0-9a-f]{10}-0x[0-9a-f]{10} type 1$/m);
          });

          it('prints the command line read through cmd_line_ptr', () => {
            expect(booted().serialOutput, describeRun(booted())).to.match(
              new RegExp(`^# cmdline at 0x[0-9a-f]+: tsvmm-bzimage tsvmm_mem=${MEMORY_MIB} initrd_size=${INITRD_SIZE}$`, 'm'),
            );
          });

          it('prints the initrd address and size', () => {
            expect(booted().serialOutput, describeRun(booted())).to.match(new RegExp(`^# initrd at 0x[0-9a-f]+, ${INITRD_SIZE} bytes$`, 'm'));
          });
        },
      );

      describe('tsvmm run --demo', () => {
        it('boots the demo guest (test/guest/out/demo.elf) and exits with status 0', () => {
          const demo = spawnSync(process.execPath, [tsvmmCli, 'run', '--demo'], {
            encoding: 'latin1',
            timeout: TIMEOUT_MS,
            input: '',
          });
          const output = `stdout:\n${demo.stdout}\nstderr:\n${demo.stderr}`;
          expect(demo.stdout, output).to.include('Hello from the tsvmm demo guest!');
          expect(demo.status, output).to.equal(0);
        });
      });
    } else {
      describe('bzImage payload', () => {
        it('is entered through the 16-bit setup code, which the payload rejects (QEMU uses its linuxboot option ROM; the 64-bit entry is tested on tsvmm only)', async () => {
          const run = await boot({
            kernel: guestImage('bzimage.bin'),
            initrd: linuxInitrd,
            append: `tsvmm-bzimage tsvmm_mem=${MEMORY_MIB} initrd_size=${INITRD_SIZE}`,
          });
          expect(run.serialOutput, describeRun(run)).to.include('bzimage: entered through the 16-bit real-mode setup code');
          expectStatus(run, BAD_BOOT_STATUS, 'the real-mode stub debug-exits with 3');
        });
      });
    }

    describe('exit-latency benchmark guest', () => {
      it("prints 'S', does 100000 OUTs to port 0xe0 and exits with status 1", async () => {
        const run = await boot({ kernel: guestImage('exit-latency-guest.elf') });
        expect(run.serialOutput, describeRun(run)).to.equal('S');
        expectStatus(run, TAP_PASS_STATUS, 'debug-exit 0');
      });
    });
  });
}

describe('guest tests', () => {
  // Inside a suite, so a missing compiler fails the guest tests only.
  before(function () {
    this.timeout(120_000);
    buildGuests();
    scratch = mkdtempSync(path.join(os.tmpdir(), 'tsvmm-guest-'));
    // The multiboot guest checks the file name and byte[i] = (i * 31 + 7) & 0xff.
    multibootModule = path.join(scratch, 'multiboot-module.bin');
    writeFileSync(multibootModule, Uint8Array.from({ length: MODULE_SIZE }, (_, i) => (i * 31 + 7) & 0xff));
    // The bzImage payload checks byte[i] = (i * 13 + 5) & 0xff.
    linuxInitrd = path.join(scratch, 'initrd.bin');
    writeFileSync(linuxInitrd, Uint8Array.from({ length: INITRD_SIZE }, (_, i) => (i * 13 + 5) & 0xff));
  });

  after(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  guestSuite('tsvmm');
  guestSuite('qemu');
});
