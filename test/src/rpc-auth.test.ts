/**
 * Transport security (docs/security.md): TCP only with an auth token and on
 * 127.0.0.1 by default; a client without the right token is refused in
 * `initialize` and disconnected.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TsvmmClient, ResponseError } from '@tsvmm/client';
import { ErrorCodes } from '@tsvmm/protocol';
import { freePort, RawClient, startServer, tmpDir, tsvmmCli } from './rpc-harness.js';

describe('rpc auth and TCP', function () {
  this.timeout(30_000);
  let dir: string;
  let tokenFile: string;
  const token = 'test-token-0123456789abcdef';

  before(() => {
    dir = tmpDir();
    tokenFile = path.join(dir, 'token');
    fs.writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('refuses to listen on TCP without --auth-token-file, saying why', () => {
    const r = spawnSync(process.execPath, [tsvmmCli, 'serve', '--listen', 'tcp:127.0.0.1:1'], { encoding: 'utf8' });
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/TCP needs an auth token.*--auth-token-file/);
  });

  it('refuses a token file with too short a token', () => {
    const weak = path.join(dir, 'weak');
    fs.writeFileSync(weak, 'abc');
    const r = spawnSync(process.execPath, [tsvmmCli, 'serve', '--listen', 'tcp:1', '--auth-token-file', weak], { encoding: 'utf8' });
    expect(r.status).to.equal(2);
    expect(r.stderr).to.match(/holds 3 characters; use at least 16/);
  });

  it('listens on 127.0.0.1 when no host is given, and serves a client with the token', async () => {
    const port = await freePort();
    const server = await startServer({ listen: `tcp:${port}`, args: ['--auth-token-file', tokenFile] });
    try {
      expect(server.stderr()).to.include(`listening on tcp:127.0.0.1:${port}`);
      const client = await TsvmmClient.connect(`tcp:127.0.0.1:${port}`, { authToken: token });
      expect((await client.vmList()).vms).to.deep.equal([]);
      await client.close();
    } finally {
      await server.stop();
    }
  });

  it('tsvmm ctl: without --auth-token-file it says to pass one; with it, it works', async () => {
    const port = await freePort();
    const server = await startServer({ listen: `tcp:127.0.0.1:${port}`, args: ['--auth-token-file', tokenFile] });
    try {
      const ctl = (...extra: string[]) =>
        new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
          const p = spawn(process.execPath, [tsvmmCli, 'ctl', '--connect', `tcp:127.0.0.1:${port}`, ...extra, 'vm/list'], { stdio: ['ignore', 'pipe', 'pipe'] });
          let stdout = '';
          let stderr = '';
          p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
          p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          p.on('exit', (status) => resolve({ status, stdout, stderr }));
        });
      const without = await ctl();
      expect(without.status).to.equal(2);
      expect(without.stderr).to.match(/requires an auth token .*pass --auth-token-file FILE/);
      const withToken = await ctl('--auth-token-file', tokenFile);
      expect(withToken.status, withToken.stderr).to.equal(0);
      expect(JSON.parse(withToken.stdout)).to.deep.equal({ vms: [] });
    } finally {
      await server.stop();
    }
  });

  it('refuses a client without the token or with a wrong one, and disconnects it', async () => {
    const port = await freePort();
    const server = await startServer({ listen: `tcp:127.0.0.1:${port}`, args: ['--auth-token-file', tokenFile] });
    try {
      for (const authToken of [undefined, 'wrong-token-0123456789abcdef', `${token}x`]) {
        const raw = await RawClient.connect(`tcp:127.0.0.1:${port}`);
        raw.send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '1.0.0', capabilities: {}, ...(authToken ? { authToken } : {}) } });
        const e = (await raw.response(1))['error'] as { code: number; message: string };
        expect(e.code).to.equal(ErrorCodes.Unauthorized);
        expect(e.message).to.match(authToken === undefined ? /requires an auth token/ : /wrong auth token/);
        await raw.waitClosed();
      }
      let err: unknown;
      await TsvmmClient.connect(`tcp:127.0.0.1:${port}`, { authToken: 'nope-nope-nope-nope' }).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(ResponseError);
      // requests without initialize are refused too: the token gates everything
      const raw = await RawClient.connect(`tcp:127.0.0.1:${port}`);
      raw.send({ jsonrpc: '2.0', id: 2, method: 'vm/create', params: { description: {} } });
      expect(((await raw.response(2))['error'] as { code: number }).code).to.equal(ErrorCodes.ServerNotInitialized);
      raw.close();
    } finally {
      await server.stop();
    }
  });

  it('enforces the token on a unix socket too when one is given', async () => {
    const server = await startServer({ args: ['--auth-token-file', tokenFile] });
    try {
      let err: unknown;
      await TsvmmClient.connect(server.address).catch((e: unknown) => (err = e));
      expect((err as ResponseError<unknown>).code).to.equal(ErrorCodes.Unauthorized);
      const ok = await TsvmmClient.connect(server.address, { authToken: token });
      await ok.close();
    } finally {
      await server.stop();
    }
  });

  it('refuses to take over a unix socket another server is listening on', async () => {
    const server = await startServer();
    try {
      const r = spawnSync(process.execPath, [tsvmmCli, 'serve', '--listen', server.address], { encoding: 'utf8' });
      expect(r.status).to.equal(2);
      expect(r.stderr).to.match(/another server is already listening/);
      expect((await TsvmmClient.connect(server.address).then((c) => c.close().then(() => true)))).to.equal(true);
    } finally {
      await server.stop();
    }
  });

  it('removes its unix socket when terminated', async () => {
    const server = await startServer();
    const sock = server.address.slice(5);
    expect(fs.existsSync(sock)).to.equal(true);
    server.proc.kill('SIGTERM');
    await new Promise((r) => server.proc.once('exit', r));
    expect(fs.existsSync(sock)).to.equal(false);
    await server.stop();
  });
});
