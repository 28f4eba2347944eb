/**
 * The plugin contract (ARCHITECTURE.md "Plugins").
 *
 * A plugin is an npm package whose package.json carries a `tsvmm` field:
 *   "tsvmm": { "kind": "device", "api": "^1.0.0", "provides": ["virtio-rng-pci"] }
 * Its entry module's default export implements {@link TsvmmPlugin}; `register`
 * puts the plugin's definitions into the container under the kind's token.
 * The core resolves definitions by token (`container.resolveAll(token)`), so it
 * knows plugin kinds, never plugin names.
 *
 * Tokens are `Symbol.for(...)` so that a plugin resolved against a second copy
 * of @tsvmm/core (e.g. one installed in its own node_modules) still matches.
 */
import type { DependencyContainer } from 'tsyringe';
// type-only, so the plugin contract and the device contract form no import cycle at run time
import type { DeviceTypeDefinition } from './device.js';

/** Version of the API plugins are built against. Bump minor for additive changes. */
export const PLUGIN_API_VERSION = '1.0.0';

export const PLUGIN_KINDS = [
  'device',
  'chipset',
  'cpu-model',
  'block-driver',
  'migration-strategy',
  'chardev-backend',
  'net-backend',
] as const;
export type PluginKind = (typeof PLUGIN_KINDS)[number];

/** The `tsvmm` field of a plugin's package.json. */
export interface PluginManifestField {
  kind: PluginKind;
  /** semver range of PLUGIN_API_VERSION the plugin was built against */
  api: string;
  /** names the plugin provides (device types, machine types, model names, formats...) */
  provides: string[];
}

export interface PluginManifest extends PluginManifestField {
  /** npm package name */
  name: string;
  /** npm package version (each plugin is versioned independently) */
  version: string;
  /** absolute directory of the package */
  directory: string;
  /** absolute path of the entry module */
  entry: string;
}

export interface PluginContext {
  container: DependencyContainer;
  apiVersion: string;
  manifest: PluginManifest;
}

/** The default export of a plugin's entry module. */
export interface TsvmmPlugin {
  register(ctx: PluginContext): void | Promise<void>;
}

/** Tokens under which plugins register their definitions, one per kind. */
export const PluginTokens = {
  device: Symbol.for('tsvmm.plugin.device'),
  chipset: Symbol.for('tsvmm.plugin.chipset'),
  'cpu-model': Symbol.for('tsvmm.plugin.cpu-model'),
  'block-driver': Symbol.for('tsvmm.plugin.block-driver'),
  'migration-strategy': Symbol.for('tsvmm.plugin.migration-strategy'),
  'chardev-backend': Symbol.for('tsvmm.plugin.chardev-backend'),
  'net-backend': Symbol.for('tsvmm.plugin.net-backend'),
} as const satisfies Record<PluginKind, symbol>;

/**
 * The whole entry module of a `device` plugin: registers each of `types` under
 * {@link PluginTokens.device}. `export default devicePlugin(isaSerial);`
 */
export function devicePlugin(...types: DeviceTypeDefinition[]): TsvmmPlugin {
  return {
    register(ctx: PluginContext): void {
      for (const type of types) ctx.container.register(PluginTokens.device, { useValue: type });
    },
  };
}
