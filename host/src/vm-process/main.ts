/**
 * Entry point of a VM process, forked by the RPC server's supervisor with an
 * IPC channel (see runtime.ts). Not meant to be started by hand.
 *
 * TSVMM_TEST_ACCELERATOR=fake selects the fake accelerator (tests on hosts
 * without usable KVM); otherwise the KVM accelerator is used.
 */
import 'reflect-metadata';
import { errorCauses, type Accelerator, type LogLevel } from '@tsvmm/core';
import { createMessageConnection, IPCMessageReader, IPCMessageWriter } from 'vscode-jsonrpc/node.js';
import { FAKE_ACCELERATOR_ENV } from './channel.js';
import { FakeAccelerator } from './fake-accelerator.js';
import { VmRuntime } from './runtime.js';

async function loadAccelerator(): Promise<Accelerator> {
  if (process.env[FAKE_ACCELERATOR_ENV] === 'fake') return new FakeAccelerator();
  // Imported lazily (and by a computed name, so this file does not depend on
  // the accelerator's typings) so that a VM process on the fake accelerator
  // never loads the native addon.
  const specifier = '@tsvmm/core/kvm';
  const mod: unknown = await import(specifier);
  const create = (mod as { createKvmAccelerator?: unknown }).createKvmAccelerator;
  if (typeof create !== 'function') throw new Error(`${specifier} does not export createKvmAccelerator(); rebuild tsvmm`);
  return (create as () => Accelerator)();
}

function logLevelFromEnv(v: string | undefined): LogLevel {
  const levels: LogLevel[] = ['trace', 'debug', 'info', 'warn', 'error'];
  return levels.find((l) => l === v) ?? 'info';
}

if (typeof process.send !== 'function') {
  process.stderr.write('tsvmm vm-process: must be started by `tsvmm serve` with an IPC channel\n');
  process.exit(2);
}

const logLine = (line: string): void => {
  process.stderr.write(`${line}\n`);
};
const connection = createMessageConnection(new IPCMessageReader(process), new IPCMessageWriter(process));
const runtime = new VmRuntime({
  connection,
  loadAccelerator,
  logLine,
  logLevel: logLevelFromEnv(process.env['TSVMM_LOG_LEVEL']),
});
process.on('disconnect', () => {
  void runtime.disconnected().finally(() => process.exit(0));
});
process.on('uncaughtException', (err) => {
  logLine(`error: uncaught exception in VM process: ${errorCauses(err).join(': ')}`);
  process.exit(70);
});
connection.listen();
