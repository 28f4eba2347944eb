/**
 * The Python standard-library client (examples/python) drives a VM through
 * create → start → console output → pause → resume → destroy: once on the
 * fake accelerator, and once — the acceptance run — on KVM with a real test
 * guest (test/guest/out/serial.elf).
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildGuests, guestImage } from './guest-harness.js';
import { fakeKernel, repoRoot, startServer, tmpDir } from './rpc-harness.js';

function requirePython(): void {
  const r = spawnSync('python3', ['--version'], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) throw new Error('python3 is not installed: install the Debian package python3');
}

function runPythonTests(env: Record<string, string>): void {
  const r = spawnSync('python3', ['-m', 'unittest', '-v', 'test_tsvmm_client'], {
    cwd: path.join(repoRoot, 'examples/python'),
    env: { ...process.env, ...env, PYTHONDONTWRITEBYTECODE: '1' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  expect(r.status, `python3 -m unittest failed:\n${r.stdout}${r.stderr}`).to.equal(0);
  expect(r.stderr).to.match(/Ran 2 tests[\s\S]*OK/);
}

describe('rpc Python client (examples/python)', function () {
  this.timeout(180_000);

  it('drives a VM on the fake accelerator', async () => {
    requirePython();
    const dir = tmpDir();
    const server = await startServer();
    try {
      runPythonTests({
        TSVMM_ADDRESS: server.address,
        TSVMM_KERNEL: fakeKernel(dir),
        TSVMM_READY: 'fake guest: hello',
        TSVMM_INPUT: 'hi python\n',
        TSVMM_ECHO: 'echo: hi python',
      });
    } finally {
      expect(await server.stop()).to.equal(0);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('drives a real test guest on KVM', async () => {
    requirePython();
    buildGuests();
    const server = await startServer({ fake: false });
    try {
      runPythonTests({
        TSVMM_ADDRESS: server.address,
        TSVMM_KERNEL: guestImage('serial.elf'),
        TSVMM_APPEND: 'line=hello',
        TSVMM_READY: '# ready for input',
        TSVMM_INPUT: 'hello\n',
        TSVMM_ECHO: 'echo: hello',
      });
    } finally {
      expect(await server.stop()).to.equal(0);
    }
  });
});
