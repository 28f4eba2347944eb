/**
 * Child process for the crash test: writes 64 KiB records, flushes every few
 * writes and reports the last record made durable ("ack N") on stdout, until
 * the parent kills it with SIGKILL.
 */
import { VhdxDevice } from '../src/index.js';

const RECORD = 64 * 1024;

export function recordPattern(i: number): Uint8Array {
  const b = new Uint8Array(RECORD).fill((i % 251) + 1);
  new DataView(b.buffer).setUint32(0, i, true);
  return b;
}

async function main(): Promise<void> {
  const img = process.argv[2];
  if (img === undefined) throw new Error('usage: vhdx-crash-writer IMAGE');
  const dev = await VhdxDevice.open({ filename: img });
  const records = Math.floor(dev.size / RECORD);
  for (let i = 0; ; i++) {
    // spread records so that most writes allocate a new block
    const slot = (i * 37) % records;
    await dev.write(slot * RECORD, recordPattern(i));
    if (i % 3 === 2) {
      await dev.flush();
      process.stdout.write(`ack ${i}\n`);
    }
  }
}

if (process.argv[1]?.endsWith('vhdx-crash-writer.js')) {
  main().catch((e: unknown) => {
    process.stderr.write(`${String(e)}\n`);
    process.exit(1);
  });
}
