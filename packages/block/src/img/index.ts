/**
 * `tsvmm img`: qemu-img's subcommands and flags, so habits carry over.
 * runImg never exits the process and never throws: it returns the exit
 * code qemu-img would (check: 0/2/3, compare: 0/1/2, others 0/1).
 */
import { Command, CommanderError, Option } from 'commander';
import { BlockError } from '../errors.js';
import { parseOptionList, parseSize } from '../size.js';
import { type ImgIo, ImgExit } from './common.js';
import { cmdCheck, cmdInfo, cmdMap } from './info.js';
import { cmdConvert } from './convert.js';
import { cmdCompare } from './compare.js';
import { cmdAmend, cmdCommit, cmdCreate, cmdRebase, cmdResize } from './ops.js';

export type { ImgIo, ImgOutput } from './common.js';
export { compareDevices } from './compare.js';
export { copyImage } from './convert.js';
export { collectMap } from './info.js';

function collectOptions(value: string, prev: Record<string, string> | undefined): Record<string, string> {
  return { ...(prev ?? {}), ...parseOptionList(value) };
}

const outputOption = (): Option => new Option('--output <fmt>', 'output format').choices(['human', 'json']).default('human');

/** qemu-img allows a negative size (`resize img -1G`); commander would read it as a flag. */
function protectNegativeSize(argv: string[]): string[] {
  if (argv[0] !== 'resize' || argv.includes('--')) return argv;
  const last = argv[argv.length - 1];
  if (last !== undefined && /^-\d/.test(last)) return [...argv.slice(0, -1), '--', last];
  return argv;
}

export async function runImg(argv: string[], io: ImgIo): Promise<number> {
  let code = 0;
  const set = (p: Promise<number>): Promise<void> => p.then((c) => void (code = c));
  const program = new Command('tsvmm img')
    .description('create, inspect, check, convert and modify disk images (qemu-img compatible flags)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .showHelpAfterError(false);

  program
    .command('create')
    .description('create a new image')
    .option('-f <fmt>', 'image format', 'raw')
    .option('-o <options>', 'format options, e.g. cluster_size=64k,compat=1.1 (-o help lists them)', collectOptions)
    .option('-b <backing_file>', 'backing file (copy-on-write base)')
    .option('-F <backing_fmt>', 'format of the backing file')
    .option('-u', 'do not open the backing file (unsafe)')
    .option('-q', 'quiet')
    .argument('[filename]', 'the image to create (not needed with -o help)')
    .argument('[size]', 'size with optional k, M, G, T suffix')
    .action((filename: string | undefined, size: string | undefined, o: { f: string; o?: Record<string, string>; b?: string; F?: string; u?: boolean; q?: boolean }) =>
      set(cmdCreate(io, filename, size, { format: o.f, options: o.o, backing: o.b, backingFormat: o.F, unsafe: o.u, quiet: o.q })),
    );

  program
    .command('info')
    .description('show image information')
    .option('-f <fmt>', 'image format (probed if omitted)')
    .addOption(outputOption())
    .option('--backing-chain', 'show the whole backing chain')
    .option('-U, --force-share', 'accepted for compatibility (tsvmm takes no image locks)')
    .argument('<filename>')
    .action((filename: string, o: { f?: string; output: string; backingChain?: boolean }) =>
      set(cmdInfo(io, filename, { format: o.f, output: o.output, backingChain: o.backingChain })),
    );

  program
    .command('check')
    .description('check (and repair) image metadata; exit 0 ok, 2 corruptions, 3 leaks')
    .option('-f <fmt>', 'image format')
    .addOption(outputOption())
    .option('-r <leaks|all>', 'repair leaks, or everything')
    .option('-q', 'quiet')
    .option('-U, --force-share', 'accepted for compatibility')
    .argument('<filename>')
    .action((filename: string, o: { f?: string; output: string; r?: string; q?: boolean }) =>
      set(cmdCheck(io, filename, { format: o.f, output: o.output, repair: o.r, quiet: o.q })),
    );

  program
    .command('convert')
    .description('convert an image to another format (output stays sparse)')
    .option('-f <fmt>', 'input format')
    .option('-O <output_fmt>', 'output format', 'raw')
    .option('-o <options>', 'output format options', collectOptions)
    .option('-c', 'compress the output (qcow2)')
    .option('-p', 'show progress')
    .option('-B <backing_file>', 'create the output with this backing file, copying only the input\'s top layer')
    .option('-F <backing_fmt>', 'format of the -B backing file')
    .option('-n', 'do not create the output image (it must exist)')
    .option('-S <sparse_size>', 'minimum run of zeroes to leave unallocated (0 = write everything)', '4k')
    .option('-m <num>', 'requests in flight', '4')
    .option('-t <cache>', 'output cache mode: unsafe (default, no fsync, like qemu-img) or writeback (fsync at the end)', 'unsafe')
    .option('-W', 'accepted for compatibility (writes may be out of order)')
    .option('-q', 'quiet')
    .option('-U, --force-share', 'accepted for compatibility')
    .argument('<filenames...>', 'input image(s) and the output image, last')
    .action((files: string[], o: { f?: string; O: string; o?: Record<string, string>; c?: boolean; p?: boolean; B?: string; F?: string; n?: boolean; S: string; m: string; t: string }) => {
      if (files.length < 2) throw new ImgExit(1, 'convert needs an input and an output file name');
      const output = files[files.length - 1] ?? '';
      return set(
        cmdConvert(io, files.slice(0, -1), output, {
          format: o.f,
          outputFormat: o.O,
          options: o.o,
          compress: o.c,
          progress: o.p,
          backing: o.B,
          backingFormat: o.F,
          noCreate: o.n,
          sparseSize: o.S,
          parallel: Math.max(1, Math.min(16, Number(o.m) || 4)),
          cache: o.t,
        }),
      );
    });

  program
    .command('compare')
    .description('compare two images; exit 0 identical, 1 different, 2 error')
    .option('-f <fmt>', 'format of the first image')
    .option('-F <fmt>', 'format of the second image')
    .option('-s', 'strict: a size difference is a difference')
    .option('-p', 'show progress')
    .option('-U, --force-share', 'accepted for compatibility')
    .argument('<filename1>')
    .argument('<filename2>')
    .action((a: string, b: string, o: { f?: string; F?: string; s?: boolean; p?: boolean }) =>
      set(cmdCompare(io, a, b, { format: o.f, format2: o.F, strict: o.s, progress: o.p })),
    );

  program
    .command('map')
    .description('show which ranges hold data, zeroes, or come from the backing chain')
    .option('-f <fmt>', 'image format')
    .addOption(outputOption())
    .option('--start-offset <offset>', 'first byte to map')
    .option('--max-length <len>', 'bytes to map')
    .option('-U, --force-share', 'accepted for compatibility')
    .argument('<filename>')
    .action((filename: string, o: { f?: string; output: string; startOffset?: string; maxLength?: string }) =>
      set(
        cmdMap(io, filename, {
          format: o.f,
          output: o.output,
          startOffset: o.startOffset !== undefined ? parseSize(o.startOffset, '--start-offset') : undefined,
          maxLength: o.maxLength !== undefined ? parseSize(o.maxLength, '--max-length') : undefined,
        }),
      ),
    );

  program
    .command('resize')
    .description('change the virtual size: SIZE, +SIZE or -SIZE')
    .option('-f <fmt>', 'image format')
    .option('--shrink', 'allow shrinking (data past the new end is lost)')
    .option('-q', 'quiet')
    .argument('<filename>')
    .argument('<size>')
    .action((filename: string, size: string, o: { f?: string; shrink?: boolean; q?: boolean }) =>
      set(cmdResize(io, filename, size, { format: o.f, shrink: o.shrink, quiet: o.q })),
    );

  program
    .command('commit')
    .description('write the image\'s changes into its backing file')
    .option('-f <fmt>', 'image format')
    .option('-b <base>', 'base image (must be the immediate backing file)')
    .option('-d', 'do not empty the image afterwards')
    .option('-p', 'show progress')
    .option('-q', 'quiet')
    .argument('<filename>')
    .action((filename: string, o: { f?: string; b?: string; d?: boolean; p?: boolean; q?: boolean }) =>
      set(cmdCommit(io, filename, { format: o.f, base: o.b, drop: o.d, progress: o.p, quiet: o.q })),
    );

  program
    .command('rebase')
    .description('change the backing file (safe: keeps content; -u: header only)')
    .option('-f <fmt>', 'image format')
    .option('-b <backing_file>', 'new backing file ("" for none)')
    .option('-F <backing_fmt>', 'format of the new backing file')
    .option('-u', 'unsafe: only rewrite the header')
    .option('-p', 'show progress')
    .option('-q', 'quiet')
    .argument('<filename>')
    .action((filename: string, o: { f?: string; b?: string; F?: string; u?: boolean; p?: boolean }) =>
      set(cmdRebase(io, filename, { format: o.f, backing: o.b, backingFormat: o.F, unsafe: o.u, progress: o.p })),
    );

  program
    .command('amend')
    .description('change format options in place, e.g. -o compat=0.10')
    .option('-f <fmt>', 'image format')
    .option('-o <options>', 'options to change', collectOptions)
    .option('-p', 'show progress')
    .option('-q', 'quiet')
    .argument('<filename>')
    .action((filename: string, o: { f?: string; o?: Record<string, string> }) => set(cmdAmend(io, filename, { format: o.f, options: o.o })));

  try {
    await program.parseAsync(protectNegativeSize(argv), { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // help and version are successes; usage errors were already printed
      return e.exitCode === 0 ? 0 : 1;
    }
    if (e instanceof ImgExit) {
      io.stderr.write(`tsvmm img: ${e.message}\n`);
      return e.code;
    }
    const msg = e instanceof BlockError || e instanceof Error ? e.message : String(e);
    io.stderr.write(`tsvmm img: ${msg}\n`);
    // compare reports errors as 2 (1 means "different"); everything else as 1
    return argv[0] === 'compare' ? 2 : 1;
  }
}
