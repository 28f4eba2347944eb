/**
 * The editor-integration path: `tsvmm serve --stdio` driven by a plain
 * vscode-jsonrpc connection (no tsvmm client library), exactly as an editor
 * extension would: initialize, boot a test guest on KVM, receive its console
 * output as notifications, shut down cleanly (LSP: exit after shutdown → 0).
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createMessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node.js';
import { buildGuests, guestImage } from './guest-harness.js';
import { fakeKernel, tmpDir, tsvmmCli } from './rpc-harness.js';

interface Notification {
  method: string;
  params: Record<string, unknown>;
}

async function editorSession(env: NodeJS.ProcessEnv, description: Record<string, unknown>, expectText: string): Promise<void> {
  const server = spawn(process.execPath, [tsvmmCli, 'serve', '--stdio'], { stdio: ['pipe', 'pipe', 'pipe'], env });
  let stderr = '';
  server.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => server.once('exit', (code) => resolve(code)));
  const conn = createMessageConnection(new StreamMessageReader(server.stdout), new StreamMessageWriter(server.stdin));
  const notes: Notification[] = [];
  let consoleText = '';
  let sawText: () => void = () => undefined;
  const textSeen = new Promise<void>((resolve) => (sawText = resolve));
  conn.onNotification((method: string, params: unknown) => {
    const p = params as Record<string, unknown>;
    notes.push({ method, params: p });
    if (method === 'console/output') {
      consoleText += Buffer.from(String(p['data']), 'base64').toString('utf8');
      if (consoleText.includes(expectText)) sawText();
    }
  });
  conn.listen();
  try {
    const init = (await conn.sendRequest('initialize', {
      processId: process.pid,
      clientInfo: { name: 'editor-integration-test' },
      protocolVersion: '1.0.0',
      capabilities: {},
    })) as { protocolVersion: string; capabilities: { notifications: string[] } };
    expect(init.protocolVersion).to.match(/^1\.\d+\.\d+$/);
    expect(init.capabilities.notifications).to.include('console/output');
    await conn.sendNotification('initialized', {});

    const { vmId } = (await conn.sendRequest('vm/create', { description })) as { vmId: string };
    await conn.sendRequest('vm/start', { vmId });
    await Promise.race([
      textSeen,
      new Promise((_, reject) => setTimeout(() => reject(new Error(`no '${expectText}' on the console; got ${JSON.stringify(consoleText)}; stderr ${stderr}`)), 60_000)),
    ]);
    expect(notes.some((n) => n.method === 'vm/stateChanged' && n.params['to'] === 'running')).to.equal(true);

    expect(await conn.sendRequest('shutdown')).to.equal(null);
    await conn.sendNotification('exit');
    expect(await exited, stderr).to.equal(0);
  } finally {
    conn.dispose();
    if (server.exitCode === null) server.kill('SIGKILL');
  }
}

describe('rpc editor integration (vscode-jsonrpc over stdio)', function () {
  this.timeout(120_000);

  it('boots a test guest on KVM and streams its console', async () => {
    buildGuests();
    const env = { ...process.env };
    delete env['TSVMM_TEST_ACCELERATOR'];
    await editorSession(env, { kernel: guestImage('serial.elf'), append: 'line=x' }, '# ready for input');
  });

  it('works the same on the fake accelerator', async () => {
    const dir = tmpDir();
    await editorSession({ ...process.env, TSVMM_TEST_ACCELERATOR: 'fake' }, { kernel: fakeKernel(dir) }, 'fake guest: hello');
  });

  it('exits with status 1 on exit without shutdown (LSP)', async () => {
    const server = spawn(process.execPath, [tsvmmCli, 'serve', '--stdio'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const conn = createMessageConnection(new StreamMessageReader(server.stdout), new StreamMessageWriter(server.stdin));
    conn.listen();
    await conn.sendRequest('initialize', { protocolVersion: '1.0.0', capabilities: {} });
    const code = new Promise((resolve) => server.once('exit', resolve));
    await conn.sendNotification('exit');
    expect(await code).to.equal(1);
    conn.dispose();
  });
});
