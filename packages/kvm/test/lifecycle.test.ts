/**
 * The exit handoff keeps the Node event loop alive while vCPU threads run
 * and lets the process exit once they are stopped (or the VM is closed).
 */
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';

function runChild(mode: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = fileURLToPath(new URL('./fixtures/lifecycle-child.js', import.meta.url));
  return new Promise((resolve) => {
    execFile(process.execPath, [script, mode], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('process lifetime', () => {
  it('stays alive while a vCPU computes without exits, and exits after the VM is closed', async () => {
    const r = await runChild('close');
    expect(r.stderr).to.equal('');
    expect(r.stdout).to.equal('out 42\ndone\n');
    expect(r.code).to.equal(0);
  });

  it('exits once the vCPU threads are stopped, even with the VM still open', async () => {
    const r = await runChild('stop');
    expect(r.stderr).to.equal('');
    expect(r.stdout).to.equal('out 42\ndone\n');
    expect(r.code).to.equal(0);
  });
});
