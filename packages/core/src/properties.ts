/**
 * Device and option properties: QEMU-style `key=value,...` lists and the zod
 * helpers device types use to declare their properties. One schema accepts both
 * spellings a property arrives in: strings from the command line
 * (`iobase=0xf4`) and JSON values from a config file or an RPC request.
 */
import { z } from 'zod';
import { ConfigError } from './errors.js';

/** Split a QEMU option list on `,`; `,,` is a literal comma. Empty elements are kept. */
export function splitOptionList(text: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === ',') {
      if (text[i + 1] === ',') {
        cur += ',';
        i++;
      } else {
        parts.push(cur);
        cur = '';
      }
    } else {
      cur += c;
    }
  }
  parts.push(cur);
  return parts;
}

/**
 * Split `first,key=value,key2=value2` as QEMU's option parser does: `,,` is a
 * literal comma; the first element may be a bare value stored under `firstKey`.
 */
export function parseKeyValueList(text: string, firstKey?: string): Record<string, string> {
  const parts = splitOptionList(text);
  const out: Record<string, string> = {};
  parts.forEach((p, idx) => {
    if (p === '' && idx === parts.length - 1 && idx > 0) return; // tolerate a trailing comma
    const eq = p.indexOf('=');
    if (eq < 0) {
      if (idx === 0 && firstKey !== undefined) {
        out[firstKey] = p;
        return;
      }
      // QEMU accepts a bare key as key=on
      if (p === '') throw new ConfigError(`empty element in '${text}'`);
      out[p] = 'on';
      return;
    }
    const key = p.slice(0, eq);
    if (key === '') throw new ConfigError(`missing key before '=' in '${text}'`);
    if (Object.prototype.hasOwnProperty.call(out, key)) throw new ConfigError(`'${key}' given twice in '${text}'`);
    out[key] = p.slice(eq + 1);
  });
  return out;
}

/** Parse an integer written in decimal, 0x hex, 0o/0 octal or 0b binary. */
export function parseIntLike(text: string): number | undefined {
  const t = text.trim();
  if (!/^[+-]?(0x[0-9a-f]+|0o?[0-7]+|0b[01]+|\d+)$/i.test(t)) return undefined;
  const neg = t.startsWith('-');
  const body = t.replace(/^[+-]/, '');
  let v: number;
  if (/^0x/i.test(body)) v = parseInt(body.slice(2), 16);
  else if (/^0b/i.test(body)) v = parseInt(body.slice(2), 2);
  else if (/^0o/i.test(body)) v = parseInt(body.slice(2), 8);
  else if (/^0[0-7]+$/.test(body)) v = parseInt(body.slice(1), 8);
  else v = parseInt(body, 10);
  return neg ? -v : v;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** Parse a byte size with optional binary suffix (k, M, G, T); a bare number is bytes. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (m === null) return undefined;
  const v = Math.round(Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] as number));
  return Number.isSafeInteger(v) ? v : undefined;
}

const TRUE_WORDS = new Set(['on', 'true', 'yes', '1', 'y']);
const FALSE_WORDS = new Set(['off', 'false', 'no', '0', 'n']);

/** Property schema helpers. Each accepts the JSON type and its command-line string form. */
export const prop = {
  /** integer in [min, max], given as a number or as a decimal/hex/octal/binary string */
  int(min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER) {
    return z.preprocess(
      (v) => (typeof v === 'string' ? (parseIntLike(v) ?? v) : v),
      z
        .number({ error: 'expected an integer (decimal or 0x hex)' })
        .int({ error: 'expected an integer' })
        .min(min, { error: `must be at least ${min}` })
        .max(max, { error: `must be at most ${max} (0x${max.toString(16)})` }),
    );
  },
  /** boolean: on/off, true/false, yes/no, 1/0 */
  bool() {
    return z.preprocess((v) => {
      if (typeof v !== 'string') return v;
      const w = v.toLowerCase();
      if (TRUE_WORDS.has(w)) return true;
      if (FALSE_WORDS.has(w)) return false;
      return v;
    }, z.boolean({ error: 'expected on or off' }));
  },
  /** byte size: a number of bytes, or a string with a k/M/G/T suffix */
  size(min = 0, max = Number.MAX_SAFE_INTEGER) {
    return z.preprocess(
      (v) => (typeof v === 'string' ? (parseSize(v) ?? v) : v),
      z
        .number({ error: 'expected a size such as 4096, 64k or 1G' })
        .int()
        .min(min, { error: `must be at least ${min}` })
        .max(max, { error: `must be at most ${max}` }),
    );
  },
  str() {
    return z.string({ error: 'expected a string' });
  },
  oneOf<const T extends readonly [string, ...string[]]>(values: T) {
    return z.enum(values, { error: `expected one of: ${values.join(', ')}` });
  },
};

/**
 * Validate `input` against `schema`, turning zod issues into one ConfigError
 * that names the subject (e.g. `device 'isa-debug-exit'`) and each failing key.
 */
export function parseProperties<T>(schema: z.ZodType<T>, input: unknown, subject: string): T {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const details = r.error.issues.map((issue) => {
    const path = issue.path.map(String).join('.');
    if (issue.code === 'unrecognized_keys') {
      const what = `unknown propert${issue.keys.length > 1 ? 'ies' : 'y'} ${issue.keys.map((k) => `'${k}'`).join(', ')}`;
      // nested (a machine description's objects.0): say where
      return path === '' ? what : `'${path}': ${what}`;
    }
    return path === '' ? issue.message : `'${path}': ${issue.message}`;
  });
  throw new ConfigError(`${subject}: ${details.join('; ')}`);
}
