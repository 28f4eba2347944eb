import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { createContainer, PluginRegistry } from '@tsvmm/core';

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * The plugin registry the CLI and the VM process use: plugins installed next
 * to tsvmm (node_modules from the host package upward, which includes the
 * workspace's plugins/), plus directories named with --plugin or in a config.
 */
export function createPluginRegistry(paths: string[] = [], warn?: (msg: string) => void): PluginRegistry {
  const extra = (process.env['TSVMM_PLUGIN_PATH'] ?? '').split(path.delimiter).filter((p) => p !== '');
  return PluginRegistry.create({
    container: createContainer(),
    searchFrom: here,
    paths: [...paths, ...extra],
    ...(warn ? { warn } : {}),
  });
}
