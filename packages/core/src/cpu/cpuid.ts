/**
 * CPUID tables in the shape KVM takes and returns them.
 *
 * Linux Documentation/virt/kvm/api.rst, 4.46 "KVM_GET_SUPPORTED_CPUID" and
 * 4.73 "KVM_SET_CPUID2" (struct kvm_cpuid_entry2); lookup semantics from
 * arch/x86/kvm/cpuid.c cpuid_entry2_find(). Register layout of the leaves:
 * Intel SDM Vol. 2A "CPUID—CPU Identification", AMD APM Vol. 3 Appendix E.
 */
import { ConfigError } from '../errors.js';

export type CpuidRegister = 'eax' | 'ebx' | 'ecx' | 'edx';
export const CPUID_REGISTERS: readonly CpuidRegister[] = ['eax', 'ebx', 'ecx', 'edx'];

/** struct kvm_cpuid_entry2 without its padding. All values are unsigned 32-bit. */
export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** The entry's value depends on ECX (the subleaf). Spelled as the kernel spells it. */
export const KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1;

/**
 * The entry KVM would use for CPUID(function, index): an entry whose index
 * matters must match the index; any other entry of that function matches.
 */
export function findCpuidEntry(table: readonly CpuidEntry[], fn: number, index = 0): CpuidEntry | undefined {
  for (const e of table) {
    if (e.function !== fn) continue;
    if ((e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) === 0 || e.index === index) return e;
  }
  return undefined;
}

/** One register of CPUID(function, index) in `table`, 0 where the table has no entry (as KVM answers). */
export function cpuidRegisterValue(table: readonly CpuidEntry[], fn: number, index: number, reg: CpuidRegister): number {
  const e = findCpuidEntry(table, fn, index);
  return e === undefined ? 0 : e[reg] >>> 0;
}

export function cpuidEntry(fn: number, index: number, regs: Partial<Record<CpuidRegister, number>>, flags = 0): CpuidEntry {
  return {
    function: fn >>> 0,
    index: index >>> 0,
    flags,
    eax: (regs.eax ?? 0) >>> 0,
    ebx: (regs.ebx ?? 0) >>> 0,
    ecx: (regs.ecx ?? 0) >>> 0,
    edx: (regs.edx ?? 0) >>> 0,
  };
}

/** Pack up to 4·n ASCII bytes of `text` little-endian into n dwords, zero-padded (brand string, vendor, signatures). */
export function packAscii(text: string, dwords: number): number[] {
  const out = new Array<number>(dwords).fill(0);
  for (let i = 0; i < Math.min(text.length, dwords * 4); i++) {
    const slot = i >> 2;
    out[slot] = ((out[slot] ?? 0) | ((text.charCodeAt(i) & 0xff) << (8 * (i & 3)))) >>> 0;
  }
  return out;
}

/** Unpack little-endian dwords to a string, stopping at the first NUL. */
export function unpackAscii(dwords: readonly number[]): string {
  let s = '';
  for (const d of dwords) {
    for (let b = 0; b < 4; b++) {
      const c = (d >>> (8 * b)) & 0xff;
      if (c === 0) return s;
      s += String.fromCharCode(c);
    }
  }
  return s;
}

/** The 12-byte vendor identification of leaf 0 is EBX, EDX, ECX in that order (SDM CPUID leaf 0). */
export function vendorRegisters(vendor: string): { ebx: number; edx: number; ecx: number } {
  const [ebx = 0, edx = 0, ecx = 0] = packAscii(vendor, 3);
  return { ebx, edx, ecx };
}

export function vendorOf(table: readonly CpuidEntry[]): string {
  const e = findCpuidEntry(table, 0);
  return e === undefined ? '' : unpackAscii([e.ebx, e.edx, e.ecx]);
}

/** Leaf 1 EAX "version information": stepping 3:0, model 7:4 + 19:16, family 11:8 + extended family 27:20. */
export function encodeSignature(family: number, model: number, stepping: number): number {
  let eax = family > 0x0f ? 0xf00 | ((family - 0x0f) << 20) : family << 8;
  eax |= ((model & 0xf) << 4) | ((model >> 4) << 16);
  eax |= stepping & 0xf;
  return eax >>> 0;
}

export function decodeSignature(eax: number): { family: number; model: number; stepping: number } {
  const baseFamily = (eax >>> 8) & 0xf;
  const family = baseFamily === 0xf ? baseFamily + ((eax >>> 20) & 0xff) : baseFamily;
  const baseModel = (eax >>> 4) & 0xf;
  const model = baseFamily === 0x6 || baseFamily === 0xf ? baseModel | (((eax >>> 16) & 0xf) << 4) : baseModel;
  return { family, model, stepping: eax & 0xf };
}

const hex8 = (v: number): string => `0x${(v >>> 0).toString(16).padStart(8, '0')}`;

/** One line per entry in the `cpuid -r` layout, handy in test failures and logs. */
export function formatCpuidTable(table: readonly CpuidEntry[]): string {
  return [...table]
    .sort(compareCpuidEntries)
    .map((e) => `${hex8(e.function)} 0x${e.index.toString(16).padStart(2, '0')}: eax=${hex8(e.eax)} ebx=${hex8(e.ebx)} ecx=${hex8(e.ecx)} edx=${hex8(e.edx)}`)
    .join('\n');
}

export function compareCpuidEntries(a: CpuidEntry, b: CpuidEntry): number {
  return a.function - b.function || a.index - b.index;
}

function u32Field(v: unknown, where: string): number {
  let n: number | undefined;
  if (typeof v === 'number') n = v;
  else if (typeof v === 'string' && /^(0x[0-9a-f]{1,8}|\d{1,10})$/i.test(v.trim())) n = Number(v.trim());
  if (n === undefined || !Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new ConfigError(`${where}: expected an unsigned 32-bit integer (number or "0x..." string), got ${JSON.stringify(v)?.slice(0, 40) ?? String(v)}`);
  }
  return n;
}

/**
 * Validate a CPUID table that came from outside (a JSON fixture, an RPC
 * request, a recorded dump): an array of {function, index, flags, eax, ebx,
 * ecx, edx} with numbers or hex strings. At most 256 entries (KVM's limit is
 * KVM_MAX_CPUID_ENTRIES = 256).
 */
export function parseCpuidTable(input: unknown, subject = 'CPUID table'): CpuidEntry[] {
  if (!Array.isArray(input)) throw new ConfigError(`${subject}: expected an array of CPUID entries`);
  if (input.length > 256) throw new ConfigError(`${subject}: ${input.length} entries is more than KVM's 256`);
  return input.map((raw: unknown, i) => {
    const where = `${subject}[${i}]`;
    if (typeof raw !== 'object' || raw === null) throw new ConfigError(`${where}: expected an object`);
    const r = raw as Record<string, unknown>;
    return {
      function: u32Field(r['function'], `${where}.function`),
      index: u32Field(r['index'] ?? 0, `${where}.index`),
      flags: u32Field(r['flags'] ?? 0, `${where}.flags`),
      eax: u32Field(r['eax'] ?? 0, `${where}.eax`),
      ebx: u32Field(r['ebx'] ?? 0, `${where}.ebx`),
      ecx: u32Field(r['ecx'] ?? 0, `${where}.ecx`),
      edx: u32Field(r['edx'] ?? 0, `${where}.edx`),
    };
  });
}
