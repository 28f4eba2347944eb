#!/usr/bin/env node
/**
 * The tsvmm command line. Subcommands: run (boot a VM in this process),
 * img (qemu-img-like image tool), nbd (NBD server).
 */
import 'reflect-metadata';
import { Command, CommanderError, Option } from 'commander';
import { errorCauses, EXIT_VMM_ERROR, PLUGIN_API_VERSION, TsvmmError } from '@tsvmm/core';
import { PROTOCOL_VERSION } from '@tsvmm/protocol';
import { tsvmmVersion } from './version.js';
import { normalizeQemuArgs } from './argv.js';
import { imgCommand } from './img.js';
import { nbdCommand } from './nbd.js';
import { runVm, type RunOptions } from './run.js';

/** Subcommands that parse their own arguments (they mirror other tools' flags). */
const RAW_SUBCOMMANDS: Record<string, (argv: string[]) => Promise<number>> = {
  img: imgCommand,
  nbd: nbdCommand,
};
import { serveCommand } from './server/serve-cmd.js';
import { ctlCommand } from './ctl.js';
import { protocolCommand } from './protocol-cmd.js';

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function fail(err: unknown): number {
  const msg = err instanceof TsvmmError ? err.message : errorCauses(err).join(': ');
  process.stderr.write(`tsvmm: ${msg}\n`);
  if (process.env['TSVMM_DEBUG'] && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
  return EXIT_VMM_ERROR;
}

export function buildProgram(setStatus: (status: number) => void): Command {
  const program = new Command('tsvmm')
    .description('a virtual machine monitor in TypeScript on Linux KVM')
    .version(`tsvmm ${tsvmmVersion()} (protocol ${PROTOCOL_VERSION}, plugin API ${PLUGIN_API_VERSION})`, '-V, --version')
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`tsvmm: ${str.replace(/^error: /, '')}`) });

  program
    .command('run')
    .description('boot a VM in this process (QEMU-like options)')
    .option('--kernel <file>', 'multiboot kernel or Linux bzImage to boot')
    .option('--append <cmdline>', 'kernel command line')
    .option('--initrd <file>', 'Linux initrd, or multiboot modules "file args,file2 args"')
    .option('-m, --memory <size>', 'RAM size: MiB, or with suffix K/M/G (default 128M)')
    .option('--smp <n>', 'vCPUs: N or cpus=N,sockets=S,cores=C,threads=T')
    .option('-M, --machine <type>', "machine type ('help' lists them)")
    .option('--cpu <model>', 'CPU model')
    .option('--device <driver[,key=value...]>', "add a device ('help' lists them); repeatable", collect, [])
    .option('--serial <backend>', 'COM1, COM2... backend: stdio | null | none | file:PATH; repeatable', collect, [])
    .option('--no-reboot', 'stop instead of resetting when the guest resets or triple-faults')
    .option('--config <file>', 'JSON machine description (the shape vm/create takes)')
    .option('--demo', 'boot the built-in demo guest')
    .option('--fw-cfg <name=NAME,string=S|file=F>', 'add a fw_cfg file; repeatable', collect, [])
    .option('--plugin <dir>', 'load a plugin package from a directory; repeatable', collect, [])
    .option('--object <TYPE,id=ID[,...]>', 'add an object: iothread,id=ID (a device data plane thread), rng-random,id=ID[,filename=PATH] or rng-builtin,id=ID (an entropy source for virtio-rng-pci,rng=ID); repeatable', collect, [])
    .option('--drive <file=PATH[,format=F][,if=virtio|none][,id=ID][,readonly=on][,discard=unmap][,iothread=ID]>', 'add a drive; if=virtio (the default) also adds a virtio-blk-pci device; repeatable', collect, [])
    .option('--incoming <uri>', 'wait for a migration stream instead of booting: tcp:HOST:PORT, unix:PATH or file:PATH (a snapshot)')
    .option('--control <unix:PATH>', "serve the control protocol for this VM (vm-1) on a unix socket, as QEMU's -qmp: status, pause, migration, ...")
    .option('--dump-cpuid <file>', 'debugging: write each vCPU\'s CPUID tables (given with KVM_SET_CPUID2, held by KVM per KVM_GET_CPUID2) to FILE as JSON before the guest starts')
    .addOption(new Option('--log-level <level>', 'log level').choices(['trace', 'debug', 'info', 'warn', 'error']).default('warn'))
    .action(async (opts: RunOptions) => {
      try {
        setStatus(await runVm(opts));
      } catch (err) {
        setStatus(fail(err));
      }
    });

  program.addCommand(serveCommand(setStatus));
  program.addCommand(ctlCommand(setStatus));
  program.addCommand(protocolCommand());
  program.command('nbd').description('NBD server: `tsvmm nbd serve IMAGE` (qemu-nbd-like flags; `tsvmm nbd --help`)');
  program.command('img').description('create, inspect, check, convert and modify disk images (qemu-img flags; `tsvmm img --help`)');
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const raw = argv[0] !== undefined ? RAW_SUBCOMMANDS[argv[0]] : undefined;
  if (raw !== undefined) {
    try {
      return await raw(argv.slice(1));
    } catch (err) {
      return fail(err);
    }
  }
  let status = 0;
  const program = buildProgram((s) => {
    status = s;
  });
  try {
    await program.parseAsync(normalizeQemuArgs(argv), { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return EXIT_VMM_ERROR;
    }
    return fail(err);
  }
  return status;
}

// Output piped into a reader that stops early (`| head`): end quietly, as qemu-img does.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

const status = await main(process.argv.slice(2));
process.exitCode = status;
// A finished VM leaves nothing that should keep the process alive; make sure stray handles do not.
setImmediate(() => process.exit(status));
