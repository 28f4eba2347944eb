/**
 * The control-plane snippets in README.md ("## Control plane") work as written:
 * this test pulls the fenced code blocks out of that section and runs them in order
 * from the repository root, on KVM with the real serial test guest.
 */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { buildGuests } from './guest-harness.js';
import { repoRoot } from './rpc-harness.js';

interface Snippet {
  lang: string;
  code: string;
}

function snippets(): Snippet[] {
  const readme = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  const start = readme.indexOf('\n## Control plane\n');
  if (start < 0) throw new Error('README.md has no "## Control plane" section');
  const next = readme.indexOf('\n## ', start + 1);
  const md = readme.slice(start, next < 0 ? undefined : next);
  return [...md.matchAll(/```(\w+)\n([\s\S]*?)```/g)].map((m) => ({ lang: m[1] ?? '', code: m[2] ?? '' }));
}

function run(cmd: string, args: string[], input: string): { status: number | null; out: string } {
  const env = { ...process.env };
  delete env['TSVMM_TEST_ACCELERATOR'];
  const r = spawnSync(cmd, args, { cwd: repoRoot, input, encoding: 'utf8', env, timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('rpc README snippets (README.md, Control plane)', function () {
  this.timeout(300_000);

  it('has a server, ctl, TypeScript and Python snippet, and each runs as written', async () => {
    buildGuests();
    const all = snippets();
    const [serverSnippet, ctlSnippet, tsSnippet, pySnippet, stopSnippet] = all;
    expect(all.map((s) => s.lang)).to.deep.equal(['sh', 'sh', 'js', 'python', 'sh']);
    if (!serverSnippet || !ctlSnippet || !tsSnippet || !pySnippet || !stopSnippet) throw new Error('snippets missing');
    expect(serverSnippet.code.trim()).to.match(/&$/);
    fs.rmSync('/tmp/tsvmm.sock', { force: true });

    // The server snippet runs in the background of one shell; every other
    // snippet runs while it is up, and the stop snippet ends it.
    const env = { ...process.env };
    delete env['TSVMM_TEST_ACCELERATOR'];
    const shell = spawn('bash', ['-c', `${serverSnippet.code}\nwhile [ ! -S /tmp/tsvmm.sock ]; do sleep 0.1; done\necho SERVER-UP\nread line\n${stopSnippet.code}\nwait\n`], {
      cwd: repoRoot,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let shellOut = '';
    shell.stdout.on('data', (d: Buffer) => (shellOut += d.toString()));
    shell.stderr.on('data', (d: Buffer) => (shellOut += d.toString()));
    const shellExit = new Promise<number | null>((resolve) => shell.once('exit', (c) => resolve(c)));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`server snippet did not start: ${shellOut}`)), 30_000);
      shell.stdout.on('data', () => {
        if (shellOut.includes('SERVER-UP')) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    try {
      const ctl = run('bash', ['-e'], ctlSnippet.code);
      expect(ctl.status, ctl.out).to.equal(0);
      expect(ctl.out).to.include('"vmId": "vm-1"');
      expect(ctl.out).to.include('echo: hi');
      expect(ctl.out).to.match(/"state": "shutdown"/);

      const ts = run(process.execPath, ['--input-type=module'], tsSnippet.code);
      expect(ts.status, ts.out).to.equal(0);
      expect(ts.out).to.include('# ready for input');
      expect(ts.out).to.include('echo: hello');
      expect(ts.out).to.include("machineType: 'pc-i440fx-rhel7.0.0'");

      const py = run('python3', ['-'], pySnippet.code);
      expect(py.status, py.out).to.equal(0);
      expect(py.out).to.include('echo: hello');
    } finally {
      shell.stdin.write('\n');
      const code = await shellExit;
      expect(code, shellOut).to.equal(0);
    }
    // The server cleans up after the stop snippet's SIGTERM; give it a moment.
    for (let i = 0; i < 50 && fs.existsSync('/tmp/tsvmm.sock'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(fs.existsSync('/tmp/tsvmm.sock'), 'the server removes its socket when terminated').to.equal(false);
  });
});
