/**
 * Listing CPU models for `cpu/listModels` and `tsvmm run --cpu help`: each
 * model's identity and features, and whether this host can run it — the
 * same question QEMU answers with query-cpu-definitions' unavailable-features.
 */
import { errorCauses, TsvmmError } from '../errors.js';
import { planCpuid } from './compose.js';
import type { CpuidEntry } from './cpuid.js';
import { canonicalFeatureName, cpuFeatureNames } from './features.js';
import type { HostCpuCapabilities } from './host-caps.js';
import { cpuModelProblems, type CpuModelDefinition } from './model.js';

export interface CpuModelListing {
  name: string;
  version: number;
  description: string;
  vendor: string;
  family: number;
  model: number;
  stepping: number;
  modelId: string;
  level: number;
  xlevel: number;
  /** canonical feature names; for `host`, what this host's KVM offers */
  features: string[];
  /** true/false when host data was given, undefined otherwise */
  runnable: boolean | undefined;
  /** features of the model this host's KVM lacks (QEMU's unavailable-features) */
  unavailableFeatures: string[];
  /** why the model cannot be used at all (broken definition) */
  problems: string[];
  notes?: string;
}

export interface ListCpuModelsHost {
  supported: readonly CpuidEntry[];
  hostCaps: HostCpuCapabilities;
}

/** Describe every model; with `host`, also whether it runs here without losing features. */
export function listCpuModels(defs: readonly CpuModelDefinition[], host?: ListCpuModelsHost): CpuModelListing[] {
  return [...defs]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((def) => {
      const problems = cpuModelProblems(def);
      const listing: CpuModelListing = {
        name: def.name,
        version: def.version,
        description: def.description ?? def.modelId,
        vendor: def.vendor,
        family: def.family,
        model: def.model,
        stepping: def.stepping,
        modelId: def.modelId,
        level: def.level,
        xlevel: def.xlevel,
        features: def.passthrough ? [] : [...new Set(def.features.map((n) => canonicalFeatureName(n) ?? n))].sort(),
        runnable: problems.length ? false : undefined,
        unavailableFeatures: [],
        problems,
        ...(def.notes !== undefined ? { notes: def.notes } : {}),
      };
      if (host === undefined || problems.length) return listing;
      try {
        const plan = planCpuid({ model: def, supported: host.supported, hostCaps: host.hostCaps, topology: { sockets: 1, cores: 1, threads: 1 } });
        listing.unavailableFeatures = plan.missing;
        listing.runnable = plan.missing.length === 0;
        if (def.passthrough) {
          Object.assign(listing, { vendor: plan.vendor, family: plan.family, model: plan.model, stepping: plan.stepping, modelId: plan.modelId, level: plan.level, xlevel: plan.xlevel });
          listing.features = plan.features;
        }
      } catch (err) {
        if (!(err instanceof TsvmmError)) throw err;
        listing.runnable = false;
        listing.problems.push(...errorCauses(err));
      }
      return listing;
    });
}

function wrap(words: readonly string[], width: number, indent: string): string {
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line && line.length + 1 + w.length > width) {
      lines.push(indent + line);
      line = w;
    } else line = line ? `${line} ${w}` : w;
  }
  if (line) lines.push(indent + line);
  return lines.join('\n');
}

/** The text of `tsvmm run --cpu help`. */
export function formatCpuHelp(listing: readonly CpuModelListing[]): string {
  const nameWidth = Math.max(12, ...listing.map((m) => m.name.length)) + 2;
  const out: string[] = ['Available CPU models:'];
  for (const m of listing) {
    let line = `  ${m.name.padEnd(nameWidth)}${m.description}`;
    if (m.runnable === false) {
      line += m.problems.length ? `  [unusable: ${m.problems.join('; ')}]` : `  [this host lacks: ${m.unavailableFeatures.join(' ')}]`;
    }
    out.push(line);
  }
  out.push('', 'Recognized CPUID flags:', wrap(cpuFeatureNames(), 76, '  '));
  out.push(
    '',
    'Modifiers: +feat / -feat / feat=on|off, check (warn and drop what the host lacks, the default), enforce (refuse),',
    '  level= xlevel= vendor= family= model= stepping= model-id= phys-bits= kvm=off l3-cache=off,',
    '  hv-relaxed hv-vapic hv-time hv-vpindex hv-runtime hv-synic hv-stimer hv-reset hv-frequencies hv-spinlocks=N',
  );
  return `${out.join('\n')}\n`;
}
