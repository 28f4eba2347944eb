/**
 * CPU models: what a plugin of kind `cpu-model` provides (ARCHITECTURE.md
 * "Plugins"). A model is a versioned, named set of guest-visible identity
 * (vendor, family/model/stepping, brand string, max leaves) and features by
 * QEMU feature name; the core composes it with what the host's KVM supports.
 *
 * A plugin registers each definition with
 *   ctx.container.register(PluginTokens['cpu-model'], { useValue: def })
 */
import { ConfigError, PluginError } from '../errors.js';
import type { PluginRegistry } from '../plugin-loader.js';
import { canonicalFeatureName, FEATURES_NOT_IMPLEMENTED } from './features.js';

export interface CpuModelDefinition {
  /** the name given to --cpu, e.g. `Haswell` */
  name: string;
  /**
   * Version of this definition. QEMU versions its models (Haswell-v1, -v2 …);
   * a definition keeps its version so a saved or migrating VM can check that
   * both ends mean the same CPU.
   */
  version: number;
  /** CPUID leaf 0 vendor identification, 12 ASCII characters (GenuineIntel, AuthenticAMD) */
  vendor: string;
  family: number;
  model: number;
  stepping: number;
  /** brand string (CPUID 0x80000002–0x80000004), at most 48 ASCII characters */
  modelId: string;
  /** minimum highest basic leaf (CPUID.0:EAX); raised automatically when enabled features need more */
  level: number;
  /** minimum highest extended leaf (CPUID.80000000h:EAX) */
  xlevel: number;
  /** feature names as QEMU spells them (`sse4.2`, `avx2`, `movbe`, `hle` …) */
  features: readonly string[];
  /** one line for listings, e.g. "Intel Core Processor (Haswell)" */
  description?: string;
  /** where the definition comes from and how it differs from its source */
  notes?: string;
  /** `host`: take identity and features from what KVM supports instead of from this definition */
  passthrough?: boolean;
}

const VENDOR_RE = /^[\x20-\x7e]{12}$/;
const ASCII_RE = /^[\x20-\x7e]*$/;

/**
 * Check a definition a plugin provides. Returns the problems found (empty when
 * it is sound) so a listing can show a broken plugin instead of failing.
 */
export function cpuModelProblems(def: CpuModelDefinition): string[] {
  const p: string[] = [];
  const int = (v: unknown, lo: number, hi: number): boolean => typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
  if (typeof def.name !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/.test(def.name)) p.push(`name ${JSON.stringify(def.name)} is not a model name`);
  if (!int(def.version, 1, 0xffff)) p.push('version must be an integer ≥ 1');
  if (!def.passthrough) {
    if (typeof def.vendor !== 'string' || !VENDOR_RE.test(def.vendor)) p.push(`vendor ${JSON.stringify(def.vendor)} must be 12 printable ASCII characters`);
    if (!int(def.family, 0, 0x0f + 0xff)) p.push('family must be 0..270');
    if (!int(def.model, 0, 0xff)) p.push('model must be 0..255');
    if (!int(def.stepping, 0, 0xf)) p.push('stepping must be 0..15');
    if (typeof def.modelId !== 'string' || def.modelId.length > 48 || !ASCII_RE.test(def.modelId)) p.push('modelId must be at most 48 printable ASCII characters');
    if (!int(def.level, 0, 0xff)) p.push('level must be 0..0xff');
    if (!(def.xlevel === 0 || int(def.xlevel, 0x80000000, 0x800000ff))) p.push('xlevel must be 0 or 0x80000000..0x800000ff');
    if (!Array.isArray(def.features)) p.push('features must be an array of feature names');
    else {
      for (const f of def.features) {
        if (typeof f !== 'string' || canonicalFeatureName(f) === undefined) {
          p.push(FEATURES_NOT_IMPLEMENTED.has(String(f)) ? `feature '${String(f)}' is not implemented by tsvmm` : `unknown feature ${JSON.stringify(f)}`);
        }
      }
    }
  }
  return p;
}

/** Throw a PluginError naming the model and what is wrong with it. */
export function assertCpuModel(def: CpuModelDefinition): void {
  const problems = cpuModelProblems(def);
  if (problems.length) throw new PluginError(`CPU model '${String(def.name)}': ${problems.join('; ')}`);
}

/** The model called `name` (case-sensitive, as QEMU), or a ConfigError listing the ones there are. */
export function findCpuModel(defs: readonly CpuModelDefinition[], name: string): CpuModelDefinition {
  const def = defs.find((d) => d.name === name);
  if (def !== undefined) return def;
  const near = defs.filter((d) => d.name.toLowerCase() === name.toLowerCase()).map((d) => d.name);
  const names = defs.map((d) => d.name).sort();
  throw new ConfigError(`unknown CPU model '${name.slice(0, 64)}'`, {
    hint: near.length
      ? `did you mean ${near.map((n) => `'${n}'`).join(' or ')}? (model names are case-sensitive)`
      : names.length
        ? `available: ${names.join(', ')}; 'tsvmm run --cpu help' lists them with their features`
        : 'no CPU model plugin is installed (install @tsvmm/plugin-cpu-models)',
  });
}

/** Import every cpu-model plugin and return their definitions (each checked; a broken one is a PluginError). */
export async function loadCpuModels(registry: PluginRegistry): Promise<CpuModelDefinition[]> {
  await registry.loadAll('cpu-model');
  const defs = registry.definitions<CpuModelDefinition>('cpu-model');
  for (const d of defs) assertCpuModel(d);
  return defs;
}
