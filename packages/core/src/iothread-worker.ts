/**
 * The body of an iothread (see iothread.ts): loads data-plane modules on
 * request and hands each its data and port. Everything else happens in the
 * modules, driven by this thread's event loop (eventfd watches, disk I/O).
 */
import { parentPort, type MessagePort } from 'node:worker_threads';
import type { IoThreadLoadReply } from './iothread.js';

interface LoadRequest {
  type: 'load';
  url: string;
  data: unknown;
  port: MessagePort;
}

type DataPlaneEntry = (data: unknown, port: MessagePort) => unknown;

parentPort?.on('message', (m: LoadRequest) => {
  if (m.type !== 'load') return;
  const reply = (r: IoThreadLoadReply): void => m.port.postMessage(r);
  import(m.url)
    .then(async (mod: { default?: unknown }) => {
      if (typeof mod.default !== 'function') throw new Error(`${m.url} has no default export function`);
      await (mod.default as DataPlaneEntry)(m.data, m.port);
      reply({ type: 'loaded' });
    })
    .catch((err: unknown) => reply({ type: 'load-failed', message: err instanceof Error ? err.message : String(err) }));
});
