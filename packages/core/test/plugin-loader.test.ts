import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createContainer, PLUGIN_API_VERSION, PluginError, PluginRegistry, discoverPlugins } from '../src/index.js';

interface FakePlugin {
  name: string;
  kind?: string;
  api?: string;
  provides?: string[];
  entry?: string | null;
}

function writePlugin(dir: string, p: FakePlugin): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify({
      name: p.name,
      version: '1.2.3',
      type: 'module',
      main: 'index.js',
      tsvmm: { kind: p.kind ?? 'device', api: p.api ?? '^1.0.0', provides: p.provides ?? ['thing'] },
    }),
  );
  if (p.entry !== null) {
    fs.writeFileSync(
      path.join(dir, 'index.js'),
      p.entry ??
        `export default { register(ctx) { ctx.container.register(Symbol.for('tsvmm.plugin.device'), { useValue: { name: ${JSON.stringify((p.provides ?? ['thing'])[0])}, from: ${JSON.stringify(p.name)} } }); } };`,
    );
  }
  return dir;
}

describe('plugin loader', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'tsvmm-plugins-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('discovers plugins in node_modules, including scoped packages, and ignores other packages', () => {
    writePlugin(path.join(root, 'node_modules', '@acme', 'tsvmm-widget'), { name: '@acme/tsvmm-widget', provides: ['widget'] });
    fs.mkdirSync(path.join(root, 'node_modules', 'left-pad'), { recursive: true });
    fs.writeFileSync(path.join(root, 'node_modules', 'left-pad', 'package.json'), '{"name":"left-pad"}');
    const found = discoverPlugins(path.join(root, 'some', 'dir'));
    expect(found.map((f) => f.manifest.name)).to.deep.equal(['@acme/tsvmm-widget']);
  });

  it('imports a plugin only when something it provides is needed', async () => {
    writePlugin(path.join(root, 'node_modules', 'p1'), { name: 'p1', provides: ['alpha'] });
    writePlugin(path.join(root, 'node_modules', 'p2'), { name: 'p2', provides: ['beta'], entry: 'throw new Error("p2 must not load");' });
    const reg = PluginRegistry.create({ container: createContainer(), searchFrom: root });
    expect(reg.provided('device')).to.deep.equal(['alpha', 'beta']);
    expect(await reg.ensure('device', 'alpha')).to.equal(true);
    expect(reg.definitions<{ name: string }>('device').map((d) => d.name)).to.deep.equal(['alpha']);
    expect(await reg.ensure('device', 'gamma')).to.equal(false);
  });

  it('refuses a plugin whose api range does not match, naming both versions', () => {
    writePlugin(path.join(root, 'old'), { name: 'old-plugin', api: '^0.3.0' });
    expect(() => PluginRegistry.create({ container: createContainer(), paths: [path.join(root, 'old')], noDiscovery: true })).to.throw(
      PluginError,
      new RegExp(`old-plugin@1.2.3 requires tsvmm plugin API \\^0.3.0, but this tsvmm provides plugin API ${PLUGIN_API_VERSION.replace(/\./g, '\\.')}`),
    );
  });

  it('refuses an invalid manifest, naming the field', () => {
    writePlugin(path.join(root, 'bad'), { name: 'bad', kind: 'toaster' });
    expect(() => PluginRegistry.create({ container: createContainer(), paths: [path.join(root, 'bad')], noDiscovery: true })).to.throw(
      PluginError,
      /invalid "tsvmm" field: kind/,
    );
  });

  it('refuses a directory that is not a plugin', () => {
    fs.mkdirSync(path.join(root, 'plain'));
    fs.writeFileSync(path.join(root, 'plain', 'package.json'), '{"name":"plain"}');
    expect(() => PluginRegistry.create({ container: createContainer(), paths: [path.join(root, 'plain')], noDiscovery: true })).to.throw(
      PluginError,
      /has no "tsvmm" field/,
    );
  });

  it('refuses two installed plugins providing the same name', () => {
    writePlugin(path.join(root, 'node_modules', 'a'), { name: 'a', provides: ['dup'] });
    writePlugin(path.join(root, 'node_modules', 'b'), { name: 'b', provides: ['dup'] });
    expect(() => PluginRegistry.create({ container: createContainer(), searchFrom: root })).to.throw(PluginError, /'dup' is provided by both a and b/);
  });

  it('lets a plugin named by path shadow an installed one, with a warning', async () => {
    writePlugin(path.join(root, 'node_modules', 'a'), { name: 'a', provides: ['dup'] });
    writePlugin(path.join(root, 'mine'), { name: 'mine', provides: ['dup'] });
    const warnings: string[] = [];
    const reg = PluginRegistry.create({ container: createContainer(), searchFrom: root, paths: [path.join(root, 'mine')], warn: (w) => warnings.push(w) });
    await reg.ensure('device', 'dup');
    expect(reg.definitions<{ from: string }>('device').map((d) => d.from)).to.deep.equal(['mine']);
    expect(warnings.join()).to.match(/shadowed by mine/);
  });

  it('reports an entry without a register function', async () => {
    writePlugin(path.join(root, 'noreg'), { name: 'noreg', entry: 'export default 42;' });
    const reg = PluginRegistry.create({ container: createContainer(), paths: [path.join(root, 'noreg')], noDiscovery: true });
    let caught: unknown;
    await reg.ensure('device', 'thing').catch((e: unknown) => (caught = e));
    expect(caught).to.be.instanceOf(PluginError);
    expect((caught as Error).message).to.match(/no default export with a register\(ctx\) function/);
  });

  it('reports a missing entry module with what to do', async () => {
    writePlugin(path.join(root, 'unbuilt'), { name: 'unbuilt', entry: null });
    const reg = PluginRegistry.create({ container: createContainer(), paths: [path.join(root, 'unbuilt')], noDiscovery: true });
    let caught: unknown;
    await reg.ensure('device', 'thing').catch((e: unknown) => (caught = e));
    expect((caught as Error).message).to.match(/does not exist.*build the plugin/);
  });
});
