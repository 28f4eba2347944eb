/** `tsvmm nbd serve IMAGE`: export any image the block-driver plugins can open over NBD. */
import { BlockDriverRegistry } from '@tsvmm/block';
import { runNbd } from '@tsvmm/block/nbd';
import { createPluginRegistry } from './plugins.js';

export async function nbdCommand(argv: string[]): Promise<number> {
  const plugins = createPluginRegistry([], (m) => process.stderr.write(`tsvmm nbd: warning: ${m}\n`));
  await plugins.loadAll('block-driver');
  return runNbd(argv, { stdout: process.stdout, stderr: process.stderr, registry: BlockDriverRegistry.fromContainer(plugins.container) });
}
