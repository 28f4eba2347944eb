/** The tsvmm package's version (host/package.json), for `--version` and initialize's serverInfo. */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export function tsvmmVersion(): string {
  try {
    // dist/src/version.js -> host/package.json
    const pkg: unknown = JSON.parse(readFileSync(path.resolve(here, '../../package.json'), 'utf8'));
    const v = (pkg as { version?: unknown }).version;
    return typeof v === 'string' ? v : '0.0.0';
  } catch {
    // the version is only reported; a package without its package.json still runs
    return '0.0.0';
  }
}
