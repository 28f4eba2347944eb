/**
 * The `--cpu` option: `MODEL[,+feat][,-feat][,feat=on|off][,prop=value]…`,
 * `host`, `help`.
 *
 * Semantics are QEMU's -cpu (target/i386/cpu.c x86_cpu_parse_featurestr and
 * x86_cpu_expand_features): `feat=on|off` and bare `feat` are applied in the
 * order given, then every `+feat`, then every `-feat` — so `-feat` wins over
 * anything else. `,,` is a literal comma (for model-id values).
 *
 * Everything here is untrusted input: any problem is a ConfigError naming the
 * offending token; nothing else is thrown.
 */
import { ConfigError } from '../errors.js';
import { splitOptionList } from '../properties.js';
import { canonicalFeatureName, FEATURES_NOT_IMPLEMENTED, suggestFeatureNames } from './features.js';
import { HYPERV_ENLIGHTENMENTS, HV_SPINLOCK_NEVER_NOTIFY, validateSpinlocks, type HypervEnlightenment } from './hyperv.js';

export type CpuOption = { kind: 'help' } | { kind: 'model'; model: string; modifiers: string[] };

/** Longest --cpu string accepted; real ones are well under 1 KiB. */
export const CPU_OPTION_MAX_LENGTH = 4096;

const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]*$/;

const quote = (s: string): string => `'${s.length > 48 ? `${s.slice(0, 48)}…` : s}'`;

/** Parse `--cpu` into the model name and its modifier tokens (not yet interpreted). */
export function parseCpuOption(text: string): CpuOption {
  if (typeof text !== 'string') throw new ConfigError('--cpu: expected a string');
  if (text.length > CPU_OPTION_MAX_LENGTH) throw new ConfigError(`--cpu: option is ${text.length} characters long, more than ${CPU_OPTION_MAX_LENGTH}`);
  if (/[\x00-\x1f\x7f]/.test(text)) throw new ConfigError('--cpu: control characters are not allowed');
  const [model = '', ...rest] = splitOptionList(text);
  if (model === 'help' || model === '?') return { kind: 'help' };
  if (model === '') throw new ConfigError('--cpu: missing CPU model name', { hint: "e.g. --cpu Haswell,-hle; 'tsvmm run --cpu help' lists the models" });
  if (!MODEL_NAME_RE.test(model)) throw new ConfigError(`--cpu: ${quote(model)} is not a CPU model name`);
  // A trailing comma is tolerated, as by QEMU; an empty element in the middle is a typo.
  const modifiers = rest.length && rest[rest.length - 1] === '' ? rest.slice(0, -1) : rest;
  modifiers.forEach((m) => {
    if (m === '') throw new ConfigError(`--cpu: empty element in ${quote(text)}`);
  });
  return { kind: 'model', model, modifiers };
}

export interface CpuFeatureChange {
  /** canonical feature name */
  name: string;
  on: boolean;
  /** the token it came from, for messages */
  token: string;
}

/** The meaning of the modifier tokens after the model name. */
export interface CpuSettings {
  /** feature switches in the order they apply (props in order, then +feat, then -feat) */
  featureChanges: CpuFeatureChange[];
  /** warn about features the host lacks and run without them (QEMU default: on) */
  check: boolean;
  /** refuse to start if the host lacks any requested feature */
  enforce: boolean;
  level?: number;
  xlevel?: number;
  vendor?: string;
  family?: number;
  model?: number;
  stepping?: number;
  modelId?: string;
  physBits?: number;
  /** `kvm=off` hides the KVM leaves from the guest */
  exposeKvm: boolean;
  /** L3 cache in leaves 2, 4 and 0x80000006 (QEMU `l3-cache`, default on) */
  l3Cache: boolean;
  /** leaf 0xB (QEMU `cpuid-0xb`, default on) */
  cpuid0xb: boolean;
  /** KVM_CAP_ENFORCE_PV_FEATURE_CPUID: KVM refuses PV MSRs/hypercalls the CPUID does not advertise */
  kvmPvEnforceCpuid: boolean;
  hyperv: Map<HypervEnlightenment, boolean>;
  hvSpinlocks?: number;
}

const TRUE_WORDS = new Set(['on', 'yes', 'true', 'y']);
const FALSE_WORDS = new Set(['off', 'no', 'false', 'n']);

type PropKind =
  | { type: 'bool'; apply: (s: CpuSettings, v: boolean) => void }
  | { type: 'int'; min: number; max: number; apply: (s: CpuSettings, v: number) => void }
  | { type: 'string'; check: (v: string) => string | undefined; apply: (s: CpuSettings, v: string) => void };

const PROPS: Record<string, PropKind> = {
  check: { type: 'bool', apply: (s, v) => (s.check = v) },
  enforce: { type: 'bool', apply: (s, v) => (s.enforce = v) },
  kvm: { type: 'bool', apply: (s, v) => (s.exposeKvm = v) },
  'l3-cache': { type: 'bool', apply: (s, v) => (s.l3Cache = v) },
  'cpuid-0xb': { type: 'bool', apply: (s, v) => (s.cpuid0xb = v) },
  'kvm-pv-enforce-cpuid': { type: 'bool', apply: (s, v) => (s.kvmPvEnforceCpuid = v) },
  level: { type: 'int', min: 0, max: 0xff, apply: (s, v) => (s.level = v) },
  xlevel: { type: 'int', min: 0, max: 0x800000ff, apply: (s, v) => (s.xlevel = v) },
  family: { type: 'int', min: 0, max: 0x0f + 0xff, apply: (s, v) => (s.family = v) },
  model: { type: 'int', min: 0, max: 0xff, apply: (s, v) => (s.model = v) },
  stepping: { type: 'int', min: 0, max: 0xf, apply: (s, v) => (s.stepping = v) },
  'phys-bits': { type: 'int', min: 32, max: 52, apply: (s, v) => (s.physBits = v) },
  'hv-spinlocks': { type: 'int', min: 0, max: HV_SPINLOCK_NEVER_NOTIFY, apply: (s, v) => (s.hvSpinlocks = v) },
  vendor: {
    type: 'string',
    check: (v) => (/^[\x20-\x7e]{12}$/.test(v) ? undefined : 'must be exactly 12 printable ASCII characters, e.g. GenuineIntel'),
    apply: (s, v) => (s.vendor = v),
  },
  'model-id': {
    type: 'string',
    check: (v) => (v.length <= 48 && /^[\x20-\x7e]*$/.test(v) ? undefined : 'must be at most 48 printable ASCII characters'),
    apply: (s, v) => (s.modelId = v),
  },
};
for (const hv of HYPERV_ENLIGHTENMENTS) PROPS[hv] = { type: 'bool', apply: (s, v) => s.hyperv.set(hv, v) };

/** Own properties only: a token like `__proto__=on` must not reach Object.prototype. */
function propOf(name: string): PropKind | undefined {
  return Object.hasOwn(PROPS, name) ? PROPS[name] : undefined;
}

function parseBool(v: string): boolean | undefined {
  if (TRUE_WORDS.has(v)) return true;
  if (FALSE_WORDS.has(v)) return false;
  return undefined;
}

function parseUint(v: string): number | undefined {
  if (/^0x[0-9a-f]{1,8}$/i.test(v)) return parseInt(v.slice(2), 16);
  if (/^\d{1,10}$/.test(v)) return Number(v);
  return undefined;
}

function unknownName(token: string, name: string): ConfigError {
  if (FEATURES_NOT_IMPLEMENTED.has(name)) {
    return new ConfigError(`--cpu: feature ${quote(name)} (in ${quote(token)}) is not implemented by tsvmm`, {
      hint: 'it needs CPUID leaves tsvmm does not build',
    });
  }
  const near = suggestFeatureNames(name);
  return new ConfigError(`--cpu: unknown CPU feature or property ${quote(name)} in ${quote(token)}`, {
    hint: near.length ? `did you mean ${near.map((n) => `'${n}'`).join(', ')}?` : "'tsvmm run --cpu help' lists the feature names",
  });
}

export function defaultCpuSettings(): CpuSettings {
  return {
    featureChanges: [],
    check: true,
    enforce: false,
    exposeKvm: true,
    l3Cache: true,
    cpuid0xb: true,
    kvmPvEnforceCpuid: false,
    hyperv: new Map(),
  };
}

/** Interpret the modifier tokens of a `--cpu` option. */
export function interpretCpuModifiers(modifiers: readonly string[]): CpuSettings {
  const s = defaultCpuSettings();
  const plus: CpuFeatureChange[] = [];
  const minus: CpuFeatureChange[] = [];
  const props: CpuFeatureChange[] = [];
  for (const token of modifiers) {
    if (typeof token !== 'string' || token === '') throw new ConfigError('--cpu: empty element');
    if (token.length > CPU_OPTION_MAX_LENGTH) throw new ConfigError('--cpu: element too long');
    const sign = token[0];
    if (sign === '+' || sign === '-') {
      const name = token.slice(1);
      const feature = canonicalFeatureName(name);
      if (feature !== undefined) {
        (sign === '+' ? plus : minus).push({ name: feature, on: sign === '+', token });
        continue;
      }
      // QEMU lets +/- set any boolean property too (+check, -hv-relaxed).
      const prop = propOf(name);
      if (prop?.type === 'bool') {
        prop.apply(s, sign === '+');
        continue;
      }
      if (prop !== undefined) throw new ConfigError(`--cpu: ${quote(token)}: ${name} takes a value, e.g. ${name}=${prop.type === 'int' ? '0x1fff' : '...'}`);
      throw unknownName(token, name);
    }
    const eq = token.indexOf('=');
    const name = eq < 0 ? token : token.slice(0, eq);
    const value = eq < 0 ? 'on' : token.slice(eq + 1);
    if (name === '') throw new ConfigError(`--cpu: missing name before '=' in ${quote(token)}`);
    const prop = propOf(name);
    if (prop !== undefined) {
      if (prop.type === 'bool') {
        const b = parseBool(value);
        if (b === undefined) throw new ConfigError(`--cpu: ${quote(token)}: expected ${name}=on or ${name}=off`);
        prop.apply(s, b);
      } else if (prop.type === 'int') {
        const n = parseUint(value);
        if (n === undefined || n < prop.min || n > prop.max) {
          throw new ConfigError(`--cpu: ${quote(token)}: ${name} must be an integer from ${prop.min} to 0x${prop.max.toString(16)}`);
        }
        prop.apply(s, n);
      } else {
        const why = prop.check(value);
        if (why !== undefined) throw new ConfigError(`--cpu: ${quote(token)}: ${name} ${why}`);
        prop.apply(s, value);
      }
      continue;
    }
    const feature = canonicalFeatureName(name);
    if (feature === undefined) throw unknownName(token, name);
    const b = parseBool(value);
    if (b === undefined) throw new ConfigError(`--cpu: ${quote(token)}: expected ${name}=on or ${name}=off`);
    props.push({ name: feature, on: b, token });
  }
  if (s.hvSpinlocks !== undefined) validateSpinlocks(s.hvSpinlocks, '--cpu');
  if (s.xlevel !== undefined && s.xlevel !== 0 && s.xlevel < 0x80000000) {
    throw new ConfigError(`--cpu: xlevel=0x${s.xlevel.toString(16)} must be 0 or at least 0x80000000`);
  }
  s.featureChanges = [...props, ...plus, ...minus];
  return s;
}
