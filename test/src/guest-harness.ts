/// <reference types="mocha" />
/**
 * Boots a test guest (test/guest/) under tsvmm or QEMU and collects what it
 * printed on COM1, its TAP and how the VMM exited.
 *
 * Both VMMs get the same machine: `-m`, `-smp`, an isa-debug-exit device at
 * 0xf4 (a guest write of v ends the VMM with status (v << 1) | 1), COM1 on
 * stdio, and the kernel, command line and modules/initrd in QEMU's spelling.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { parseTap, tapVerdict, type TapDocument } from './tap.js';

export type Vmm = 'tsvmm' | 'qemu';

/** test/dist/src -> repository root */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const guestDir = path.join(repoRoot, 'test/guest');
export const tsvmmCli = path.join(repoRoot, 'host/dist/src/cli.js');
export const qemuBinary = 'qemu-system-x86_64';

/** A built guest image: test/guest/out/<file>, e.g. 'fw_cfg.elf', 'bzimage.bin'. */
export function guestImage(file: string): string {
  return path.join(guestDir, 'out', file);
}

/** Builds the guest kit (quiet and incremental, so cheap when up to date). */
export function buildGuests(): void {
  try {
    execFileSync('make', ['-s', '-C', guestDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: Buffer; stdout?: Buffer; message: string };
    const output = `${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}`.trim();
    throw new Error(`building the test guests failed (make -C test/guest):\n${output || e.message}`);
  }
}

/** A multiboot module: a file, and the text the loader appends to its path. */
export interface GuestModule {
  path: string;
  args?: string;
}

/** An extra fw_cfg file, as `-fw_cfg name=...,string=...` / `file=...`. */
export type FwCfgFile = { name: string; string: string } | { name: string; file: string };

export interface RunGuestOptions {
  vmm: Vmm;
  /** the kernel file (guestImage('x.elf')) */
  kernel: string;
  /** kernel command line (-append) */
  append?: string;
  /** multiboot modules; passed as `-initrd "file args,file2"` like QEMU */
  modules?: GuestModule[];
  /** a Linux initrd; exclusive with modules */
  initrd?: string;
  /** RAM in MiB (default 128) */
  memory?: number;
  /** vCPUs (default 1), or a whole -smp value such as '2,sockets=1,cores=2' */
  smp?: number | string;
  fwCfg?: FwCfgFile[];
  /** appended to the VMM's command line as is */
  extraArgs?: string[];
  /** text sent to the guest's serial port */
  input?: string;
  /** send `input` only once the serial output contains this text (default: at start) */
  inputAfter?: string;
  /** stop (SIGKILL) the VMM after this long */
  timeoutMs: number;
  /** stop instead of resetting on a guest reset or triple fault */
  noReboot?: boolean;
}

export interface GuestRun {
  /** the VMM's exit code, or the name of the signal that ended it */
  status: number | NodeJS.Signals;
  timedOut: boolean;
  serialOutput: string;
  stderr: string;
  tap: TapDocument;
  /** argv that was run, for failure messages */
  command: string[];
}

export class VmmNotFoundError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VmmNotFoundError';
  }
}

/** `-initrd` value for multiboot modules; a comma inside a part is doubled (QEMU option syntax). */
export function moduleList(modules: GuestModule[]): string {
  return modules
    .map((m) => (m.args ? `${m.path} ${m.args}` : m.path).replaceAll(',', ',,'))
    .join(',');
}

function fwCfgSpec(f: FwCfgFile): string {
  const value = 'string' in f ? `string=${f.string.replaceAll(',', ',,')}` : `file=${f.file.replaceAll(',', ',,')}`;
  return `name=${f.name},${value}`;
}

function commonArgs(o: RunGuestOptions, flag: (qemuName: string) => string): string[] {
  if (o.modules && o.initrd) throw new Error('runGuest: give modules (multiboot) or initrd (Linux), not both');
  const args = [flag('kernel'), o.kernel];
  if (o.append !== undefined) args.push(flag('append'), o.append);
  if (o.modules?.length) args.push(flag('initrd'), moduleList(o.modules));
  if (o.initrd) args.push(flag('initrd'), o.initrd);
  args.push('-m', String(o.memory ?? 128), flag('smp'), String(o.smp ?? 1));
  args.push(flag('device'), 'isa-debug-exit,iobase=0xf4,iosize=0x4', flag('serial'), 'stdio');
  if (o.noReboot) args.push(flag('no-reboot'));
  return args;
}

/** The argv that boots the guest under the chosen VMM. */
export function vmmCommand(o: RunGuestOptions): string[] {
  if (o.vmm === 'qemu') {
    const args = [qemuBinary, '-accel', 'kvm', '-nodefaults', '-display', 'none', ...commonArgs(o, (n) => `-${n}`)];
    for (const f of o.fwCfg ?? []) args.push('-fw_cfg', fwCfgSpec(f));
    return [...args, ...(o.extraArgs ?? [])];
  }
  const args = [process.execPath, tsvmmCli, 'run', ...commonArgs(o, (n) => `--${n}`)];
  for (const f of o.fwCfg ?? []) args.push('--fw-cfg', fwCfgSpec(f));
  return [...args, ...(o.extraArgs ?? [])];
}

function onPath(binary: string): boolean {
  return (process.env['PATH'] ?? '')
    .split(path.delimiter)
    .some((dir) => dir !== '' && existsSync(path.join(dir, binary)));
}

/** Throws VmmNotFoundError, saying what to install or build, when the VMM is missing. */
export function requireVmm(vmm: Vmm): void {
  if (vmm === 'qemu') {
    if (!onPath(qemuBinary)) {
      throw new VmmNotFoundError(
        `${qemuBinary} is not installed; install the Debian package qemu-system-x86 (apt-get install qemu-system-x86)`,
      );
    }
  } else if (!existsSync(tsvmmCli)) {
    throw new VmmNotFoundError(`the tsvmm CLI is not built (${tsvmmCli} is missing); run npm run build`);
  }
}

export async function runGuest(o: RunGuestOptions): Promise<GuestRun> {
  requireVmm(o.vmm);
  if (!existsSync(o.kernel)) throw new Error(`guest kernel ${o.kernel} does not exist; build it with make -C test/guest`);
  const command = vmmCommand(o);
  const child = spawn(command[0] as string, command.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
  let serialOutput = '';
  let stderr = '';
  let inputSent = o.input === undefined;
  const sendInput = (): void => {
    if (!inputSent && (o.inputAfter === undefined || serialOutput.includes(o.inputAfter))) {
      inputSent = true;
      child.stdin.write(o.input);
    }
  };
  // The VMM may exit before reading its input; that is the test's business.
  child.stdin.on('error', () => undefined);
  child.stdout.setEncoding('latin1');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    serialOutput += chunk;
    sendInput();
  });
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  sendInput();

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, o.timeoutMs);

  const status = await new Promise<number | NodeJS.Signals>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve(code ?? signal ?? 'SIGKILL'));
  }).finally(() => {
    clearTimeout(timer);
    child.stdin.destroy();
  });
  serialOutput = serialOutput.replaceAll('\r\n', '\n');
  return { status, timedOut, serialOutput, stderr, tap: parseTap(serialOutput), command };
}

/** One readable block for assertion messages: the command, status, serial output and stderr. */
export function describeRun(run: GuestRun): string {
  const quoted = run.command.map((a) => (/[\s"',]/.test(a) ? JSON.stringify(a) : a)).join(' ');
  return [
    `command: ${quoted}`,
    `status: ${String(run.status)}${run.timedOut ? ' (timed out)' : ''}`,
    '--- serial output ---',
    run.serialOutput.trimEnd(),
    '--- stderr ---',
    run.stderr.trimEnd(),
  ].join('\n');
}

/** isa-debug-exit status for a guest write of v: (v << 1) | 1, truncated by exit() to 8 bits */
export const debugExitStatus = (v: number): number => ((v << 1) | 1) & 0xff;
/** tap_done() with every test passed writes 0 */
export const TAP_PASS_STATUS = debugExitStatus(0);

/** A TAP guest that ran every planned test, passed them all and ended through isa-debug-exit. */
export function expectTapPass(run: GuestRun): void {
  const v = tapVerdict(run.tap);
  expect([...v.problems, ...v.failures.map((f) => `not ok ${f.number} - ${f.description}`)], describeRun(run)).to.deep.equal([]);
  expect(run.status, describeRun(run)).to.equal(TAP_PASS_STATUS);
}

/**
 * One booted TAP guest per describe block: every planned TAP test ran and
 * passed, and tap_done() ended the guest; `more` adds host-side checks on the
 * same run.
 */
export function describeTapGuest(title: string, boot: () => Promise<GuestRun>, more?: (run: () => GuestRun) => void): void {
  describe(title, function () {
    let run: GuestRun | undefined;
    const booted = (): GuestRun => {
      if (!run) throw new Error('the guest did not boot (see the before hook)');
      return run;
    };
    before(async () => {
      run = await boot();
    });

    it('runs every planned TAP test', () => {
      const v = tapVerdict(booted().tap);
      expect(v.problems, describeRun(booted())).to.deep.equal([]);
    });

    it('passes every TAP test', () => {
      const { results } = booted().tap;
      expect(results, `no TAP results\n${describeRun(booted())}`).to.not.be.empty;
      const failures = tapVerdict(booted().tap).failures.map((f) => `not ok ${f.number} - ${f.description}`);
      expect(failures, describeRun(booted())).to.deep.equal([]);
    });

    it('ends through isa-debug-exit with 0 (status 1) after the last test', () => {
      // A VMM failing to start exits 1 too: only a complete TAP run tells them apart.
      const { plan, results } = booted().tap;
      expect(plan !== null && results.length === plan.count, `TAP incomplete\n${describeRun(booted())}`).to.equal(true);
      expect(booted().status, `tap_done() writes 0 to port 0xf4 when all passed\n${describeRun(booted())}`).to.equal(TAP_PASS_STATUS);
    });

    more?.(booted);
  });
}
