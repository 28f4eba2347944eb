/**
 * Child process for the crash test: writes stamped sectors to a qcow2 image
 * in a loop, flushing every FLUSH_EVERY writes and printing "ack N" after
 * the flush that made writes 0..N durable. The parent SIGKILLs it.
 * Usage: node crash-writer.js IMAGE SEED
 */
import { crashWrite, FLUSH_EVERY } from './crash-plan.js';
import { registry } from './helpers.js';

const [file, seedText] = process.argv.slice(2);
if (file === undefined || seedText === undefined) throw new Error('usage: crash-writer IMAGE SEED');
const dev = await registry().openImage(file);
for (let j = 1; ; j++) {
  const w = crashWrite(Number(seedText), j, dev.size);
  await dev.write(w.offset, w.data);
  if (j % FLUSH_EVERY === 0) {
    await dev.flush();
    process.stdout.write(`ack ${j}\n`);
  }
}
