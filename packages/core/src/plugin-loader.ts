/**
 * Finds, checks and loads plugins (ARCHITECTURE.md "Plugins").
 *
 * Discovery reads only package.json files: every package in the node_modules
 * directories from a start directory upward (workspace plugins are linked
 * there by npm), plus packages named by explicit path. A plugin's entry module
 * is imported only when something it provides is needed, which keeps VM start
 * fast however many plugins are installed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import semver from 'semver';
import type { DependencyContainer } from 'tsyringe';
import { z } from 'zod';
import { PluginError } from './errors.js';
import {
  PLUGIN_API_VERSION,
  PLUGIN_KINDS,
  PluginTokens,
  type PluginKind,
  type PluginManifest,
  type TsvmmPlugin,
} from './plugin-api.js';

const manifestFieldSchema = z.strictObject({
  kind: z.enum(PLUGIN_KINDS),
  api: z.string().refine((r) => semver.validRange(r) !== null, { error: 'is not a semver range' }),
  provides: z.array(z.string().min(1)).min(1),
});

interface PackageJson {
  name?: unknown;
  version?: unknown;
  main?: unknown;
  exports?: unknown;
  tsvmm?: unknown;
}

export interface PluginSource {
  manifest: PluginManifest;
  /** 'path' for plugins named explicitly, 'node_modules' for discovered ones */
  origin: 'path' | 'node_modules';
}

export interface LoadedPlugin {
  manifest: PluginManifest;
  origin: PluginSource['origin'];
  loaded: boolean;
}

/** ENOENT or ENOTDIR: the path names nothing there is to read (as opposed to something we may not read). */
function isMissing(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

function readPackageJson(file: string): PackageJson | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (isMissing(err)) return undefined;
    throw new PluginError(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const parsed: unknown = JSON.parse(text);
    return typeof parsed === 'object' && parsed !== null ? (parsed as PackageJson) : undefined;
  } catch (err) {
    throw new PluginError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
}

function entryOf(dir: string, pkg: PackageJson): string {
  let rel: string | undefined;
  const exp = pkg.exports;
  if (typeof exp === 'string') rel = exp;
  else if (typeof exp === 'object' && exp !== null) {
    const dot = (exp as Record<string, unknown>)['.'] ?? exp;
    if (typeof dot === 'string') rel = dot;
    else if (typeof dot === 'object' && dot !== null) {
      const d = dot as Record<string, unknown>;
      const pick = d['import'] ?? d['default'] ?? d['node'];
      if (typeof pick === 'string') rel = pick;
    }
  }
  if (rel === undefined && typeof pkg.main === 'string') rel = pkg.main;
  return path.resolve(dir, rel ?? 'index.js');
}

/** Read and validate a plugin's manifest from its package directory. Returns undefined if it is not a plugin. */
export function readPluginManifest(dir: string, opts: { requirePlugin?: boolean } = {}): PluginManifest | undefined {
  const file = path.join(dir, 'package.json');
  const pkg = readPackageJson(file);
  if (pkg === undefined) {
    if (opts.requirePlugin) throw new PluginError(`no package.json in plugin directory ${dir}`);
    return undefined;
  }
  if (pkg.tsvmm === undefined) {
    if (opts.requirePlugin) throw new PluginError(`${file} has no "tsvmm" field, so it is not a tsvmm plugin`);
    return undefined;
  }
  const name = typeof pkg.name === 'string' ? pkg.name : path.basename(dir);
  const version = typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  const parsed = manifestFieldSchema.safeParse(pkg.tsvmm);
  if (!parsed.success) {
    const why = parsed.error.issues.map((i) => `${i.path.join('.') || 'tsvmm'} ${i.message}`).join('; ');
    throw new PluginError(`plugin ${name} (${file}): invalid "tsvmm" field: ${why}`);
  }
  return { ...parsed.data, name, version, directory: dir, entry: entryOf(dir, pkg) };
}

/** Check the plugin's api range against this core's plugin API version. */
export function checkApiCompatible(m: PluginManifest): void {
  if (!semver.satisfies(PLUGIN_API_VERSION, m.api, { includePrerelease: true })) {
    throw new PluginError(
      `plugin ${m.name}@${m.version} requires tsvmm plugin API ${m.api}, but this tsvmm provides plugin API ${PLUGIN_API_VERSION}`,
      { hint: `install a version of ${m.name} built for plugin API ${semver.major(PLUGIN_API_VERSION)}.x` },
    );
  }
}

/** All node_modules directories from `start` up to the filesystem root. */
function nodeModulesChain(start: string): string[] {
  const out: string[] = [];
  let dir = path.resolve(start);
  for (;;) {
    const nm = path.join(dir, 'node_modules');
    if (fs.existsSync(nm)) out.push(nm);
    const parent = path.dirname(dir);
    if (parent === dir) return out;
    dir = parent;
  }
}

function packageDirsIn(nodeModules: string): string[] {
  const out: string[] = [];
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(nodeModules, { withFileTypes: true });
  } catch (err) {
    if (isMissing(err)) return out;
    throw new PluginError(`cannot list the plugins in ${nodeModules}: ${(err as Error).message}`, { cause: err });
  }
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const p = path.join(nodeModules, e.name);
    if (e.name.startsWith('@')) {
      let scoped: fs.Dirent[] = [];
      try {
        scoped = fs.readdirSync(p, { withFileTypes: true });
      } catch (err) {
        if (isMissing(err)) continue;
        throw new PluginError(`cannot list the plugins in ${p}: ${(err as Error).message}`, { cause: err });
      }
      for (const s of scoped) out.push(path.join(p, s.name));
    } else {
      out.push(p);
    }
  }
  return out;
}

/** Discover plugins installed in node_modules reachable from `start`. The closest copy of a package wins. */
export function discoverPlugins(start: string): PluginSource[] {
  const seen = new Set<string>();
  const out: PluginSource[] = [];
  for (const nm of nodeModulesChain(start)) {
    for (const dir of packageDirsIn(nm)) {
      const manifest = readPluginManifest(dir);
      if (manifest === undefined || seen.has(manifest.name)) continue;
      seen.add(manifest.name);
      out.push({ manifest: { ...manifest, directory: fs.realpathSync(dir), entry: manifest.entry }, origin: 'node_modules' });
    }
  }
  return out;
}

export interface PluginRegistryOptions {
  container: DependencyContainer;
  /** where to start looking for node_modules (default: this package's directory) */
  searchFrom?: string;
  /** plugin package directories named explicitly (`--plugin PATH`); they take precedence */
  paths?: string[];
  /** skip node_modules discovery (tests) */
  noDiscovery?: boolean;
  /** called for non-fatal problems, e.g. an explicit plugin shadowing an installed one */
  warn?: (msg: string) => void;
}

/**
 * The set of known plugins. Manifests are read and checked eagerly (so an
 * incompatible plugin is reported up front); entry modules are imported lazily.
 */
export class PluginRegistry {
  private readonly plugins: LoadedPlugin[] = [];
  /** kind → provided name → plugin */
  private readonly providers = new Map<PluginKind, Map<string, LoadedPlugin>>();
  readonly container: DependencyContainer;

  private constructor(container: DependencyContainer) {
    this.container = container;
  }

  static create(opts: PluginRegistryOptions): PluginRegistry {
    const reg = new PluginRegistry(opts.container);
    const warn = opts.warn ?? (() => undefined);
    for (const p of opts.paths ?? []) {
      const dir = path.resolve(p.endsWith('package.json') ? path.dirname(p) : p);
      const manifest = readPluginManifest(dir, { requirePlugin: true }) as PluginManifest;
      reg.add({ manifest, origin: 'path' }, warn);
    }
    if (!opts.noDiscovery) {
      for (const src of discoverPlugins(opts.searchFrom ?? process.cwd())) reg.add(src, warn);
    }
    return reg;
  }

  /** Add a plugin source, checking its API range. Explicit paths shadow node_modules copies. */
  add(src: PluginSource, warn: (msg: string) => void = () => undefined): void {
    const m = src.manifest;
    if (this.plugins.some((p) => p.manifest.name === m.name)) {
      if (src.origin === 'node_modules') {
        warn(`plugin ${m.name} from ${m.directory} is shadowed by the one given explicitly`);
        return;
      }
      throw new PluginError(`plugin ${m.name} is given twice`);
    }
    checkApiCompatible(m);
    const entry: LoadedPlugin = { manifest: m, origin: src.origin, loaded: false };
    let byName = this.providers.get(m.kind);
    if (byName === undefined) {
      byName = new Map();
      this.providers.set(m.kind, byName);
    }
    for (const name of m.provides) {
      const other = byName.get(name);
      if (other !== undefined) {
        if (other.origin === 'path' && src.origin === 'node_modules') {
          warn(`${m.kind} '${name}' from ${m.name} is shadowed by ${other.manifest.name}`);
          continue;
        }
        throw new PluginError(`${m.kind} '${name}' is provided by both ${other.manifest.name} and ${m.name}`, {
          hint: 'uninstall one of them or name the one you want with --plugin PATH',
        });
      }
      byName.set(name, entry);
    }
    this.plugins.push(entry);
  }

  list(): readonly LoadedPlugin[] {
    return this.plugins;
  }

  /** Names provided for a kind, from manifests (no import needed). */
  provided(kind: PluginKind): string[] {
    return [...(this.providers.get(kind)?.keys() ?? [])].sort();
  }

  providerOf(kind: PluginKind, name: string): LoadedPlugin | undefined {
    return this.providers.get(kind)?.get(name);
  }

  /** Import the plugin providing `name` of `kind`, if not yet. Returns false if no plugin provides it. */
  async ensure(kind: PluginKind, name: string): Promise<boolean> {
    const p = this.providerOf(kind, name);
    if (p === undefined) return false;
    await this.load(p);
    return true;
  }

  /** Import every plugin (of one kind, or all). */
  async loadAll(kind?: PluginKind): Promise<void> {
    for (const p of this.plugins) {
      if (kind === undefined || p.manifest.kind === kind) await this.load(p);
    }
  }

  /** Definitions registered under a kind's token by the plugins loaded so far. */
  definitions<T>(kind: PluginKind): T[] {
    const token = PluginTokens[kind];
    return this.container.isRegistered(token, true) ? this.container.resolveAll<T>(token) : [];
  }

  private readonly loading = new Map<LoadedPlugin, Promise<void>>();

  private load(p: LoadedPlugin): Promise<void> {
    if (p.loaded) return Promise.resolve();
    let pending = this.loading.get(p);
    if (pending === undefined) {
      pending = this.importAndRegister(p);
      this.loading.set(p, pending);
    }
    return pending;
  }

  private async importAndRegister(p: LoadedPlugin): Promise<void> {
    const m = p.manifest;
    if (!fs.existsSync(m.entry)) {
      throw new PluginError(`plugin ${m.name}@${m.version}: entry module ${m.entry} does not exist`, {
        hint: 'build the plugin (npm run build) or fix "main"/"exports" in its package.json',
      });
    }
    let mod: { default?: unknown };
    try {
      mod = (await import(pathToFileURL(m.entry).href)) as { default?: unknown };
    } catch (err) {
      throw new PluginError(`plugin ${m.name}@${m.version}: importing ${m.entry} failed: ${(err as Error).message}`, { cause: err });
    }
    const plugin = mod.default as Partial<TsvmmPlugin> | undefined;
    if (plugin === undefined || typeof plugin.register !== 'function') {
      throw new PluginError(`plugin ${m.name}@${m.version}: ${m.entry} has no default export with a register(ctx) function`);
    }
    try {
      await plugin.register({ container: this.container, apiVersion: PLUGIN_API_VERSION, manifest: m });
    } catch (err) {
      throw new PluginError(`plugin ${m.name}@${m.version}: register() failed: ${(err as Error).message}`, { cause: err });
    }
    p.loaded = true;
  }
}
