/**
 * Where a stream goes or comes from, QEMU's URI spellings:
 *   tcp:HOST:PORT   (HOST may be [v6-address]; PORT 0 on the incoming side picks a free one)
 *   unix:PATH
 *   file:PATH       (snapshots: `migration/saveToFile`, `--incoming file:PATH`)
 */
import { MigrationError } from './errors.js';

export type TransportSpec =
  | { kind: 'tcp'; host: string; port: number }
  | { kind: 'unix'; path: string }
  | { kind: 'file'; path: string };

export function parseTransportUri(uri: string): TransportSpec {
  const hint = 'use tcp:HOST:PORT, unix:PATH or file:PATH';
  const colon = uri.indexOf(':');
  if (colon < 0) throw new MigrationError(`migration address '${uri}' has no scheme`, { hint });
  const scheme = uri.slice(0, colon);
  const rest = uri.slice(colon + 1);
  switch (scheme) {
    case 'tcp': {
      const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(rest);
      const host = m?.[1] ?? m?.[2];
      const port = Number(m?.[3]);
      if (m === null || host === undefined || !Number.isInteger(port) || port > 65535) {
        throw new MigrationError(`migration address '${uri}': expected tcp:HOST:PORT`, { hint: 'e.g. tcp:127.0.0.1:4444 or tcp:[::1]:4444' });
      }
      return { kind: 'tcp', host, port };
    }
    case 'unix':
    case 'file':
      if (rest === '') throw new MigrationError(`migration address '${uri}' has no path`, { hint });
      return { kind: scheme, path: rest };
    default:
      throw new MigrationError(`migration address '${uri}': unknown scheme '${scheme}'`, { hint });
  }
}

export function formatTransport(t: TransportSpec): string {
  switch (t.kind) {
    case 'tcp':
      return `tcp:${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
    case 'unix':
      return `unix:${t.path}`;
    case 'file':
      return `file:${t.path}`;
  }
}
