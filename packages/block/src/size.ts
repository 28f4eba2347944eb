/** Sizes as qemu-img spells them: "10G", "512k", "1.5M", "4096" (bytes), binary multiples. */
import { splitOptionList } from '@tsvmm/core';
import { BlockOptionError } from './errors.js';

const SUFFIX: Record<string, number> = {
  '': 1,
  b: 1,
  k: 2 ** 10,
  m: 2 ** 20,
  g: 2 ** 30,
  t: 2 ** 40,
  p: 2 ** 50,
  e: 2 ** 60,
};

export function parseSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([bkmgtpe]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) {
    throw new BlockOptionError(
      what,
      `'${text}' is not a size; use a number of bytes or a number with a suffix k, M, G, T, P, E (e.g. 10G)`,
    );
  }
  const mult = SUFFIX[(m[2] ?? '').toLowerCase()] ?? 1;
  const value = Number(m[1]) * mult;
  if (!Number.isSafeInteger(Math.round(value)) || (mult === 1 && !Number.isInteger(value))) {
    throw new BlockOptionError(what, `'${text}' is not a whole number of bytes below 2^53`);
  }
  return Math.round(value);
}

/** qemu's size_to_str: three significant digits and a binary unit ("1 GiB", "196 KiB", "1.5 MiB"). */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = 0;
  // like qemu, switch unit once the value would print as >= 1000
  while (i < units.length - 1 && bytes / 2 ** (10 * i) >= 1000) i++;
  const v = bytes / 2 ** (10 * i);
  return `${Number(v.toPrecision(3))} ${units[i]}`;
}

export function parseBool(text: string, what: string): boolean {
  switch (text.toLowerCase()) {
    case 'on':
    case 'true':
    case 'yes':
    case '1':
      return true;
    case 'off':
    case 'false':
    case 'no':
    case '0':
      return false;
    default:
      throw new BlockOptionError(what, `'${text}' is not a boolean; use on or off`);
  }
}

/** Splits a qemu `-o` list "a=1,b=2" (",," escapes a comma) into a record. */
export function parseOptionList(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of splitOptionList(text)) {
    if (p === '') continue;
    const eq = p.indexOf('=');
    if (eq < 0) out[p] = 'on';
    else out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}
