/**
 * Progress for long image work (convert -p, compare -p, commit -p): a
 * cli-progress bar on a terminal, qemu-img's "    (12.34/100%)" lines
 * otherwise so logs and pipes stay readable.
 */
import cliProgress from 'cli-progress';
import type { ImgOutput } from './common.js';

export interface Progress {
  update(done: number): void;
  stop(): void;
}

export function createProgress(out: ImgOutput, total: number, enabled: boolean): Progress {
  if (!enabled) return { update: () => undefined, stop: () => undefined };
  const safeTotal = Math.max(total, 1);
  if (out.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        // cli-progress writes to any stream with write(); a TTY also gets cursor control
        stream: out as unknown as NodeJS.WritableStream,
        format: '    [{bar}] {percentage}% | {value}/{total} MiB | ETA {eta}s',
        hideCursor: true,
        clearOnComplete: false,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(Math.ceil(safeTotal / 2 ** 20), 0);
    return {
      update: (done) => bar.update(Math.floor(done / 2 ** 20)),
      stop: () => {
        bar.update(Math.ceil(safeTotal / 2 ** 20));
        bar.stop();
      },
    };
  }
  let last = -1;
  const print = (pct: number): void => {
    out.write(`    (${pct.toFixed(2)}/100%)\n`);
  };
  print(0);
  return {
    update: (done) => {
      const pct = Math.min(100, (done / safeTotal) * 100);
      // like qemu-img, report in steps of at least 1% to keep logs short
      if (pct - last >= 1) {
        last = pct;
        print(pct);
      }
    },
    stop: () => {
      if (last < 100) print(100);
      last = 100;
    },
  };
}
