/** `tsvmm img ...`: qemu-img's subcommands over the block drivers the installed plugins provide. */
import { BlockDriverRegistry, runImg } from '@tsvmm/block';
import { createPluginRegistry } from './plugins.js';

export async function imgCommand(argv: string[]): Promise<number> {
  const plugins = createPluginRegistry([], (m) => process.stderr.write(`tsvmm img: warning: ${m}\n`));
  await plugins.loadAll('block-driver');
  return runImg(argv, { stdout: process.stdout, stderr: process.stderr, registry: BlockDriverRegistry.fromContainer(plugins.container) });
}
