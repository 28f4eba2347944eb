/**
 * QEMU habits: `-kernel`, `-append`, `-smp`, `-no-reboot` and friends are
 * accepted with one dash as well as two. Only names tsvmm knows are rewritten,
 * so a value that happens to start with a dash (after a known option) is left alone.
 */
const QEMU_STYLE = new Set([
  'kernel',
  'append',
  'initrd',
  'smp',
  'machine',
  'cpu',
  'device',
  'serial',
  'no-reboot',
  'fw_cfg',
  'fw-cfg',
  'object',
  'drive',
  'incoming',
  'nodefaults',
  'name',
  'plugin',
  'config',
]);

/** options that take a value: the token after them is never rewritten */
const TAKES_VALUE = new Set([
  'kernel',
  'append',
  'initrd',
  'smp',
  'machine',
  'cpu',
  'device',
  'serial',
  'fw_cfg',
  'fw-cfg',
  'object',
  'drive',
  'incoming',
  'name',
  'plugin',
  'config',
  'memory',
  'm',
  'M',
  'log-level',
]);

export function normalizeQemuArgs(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    let name: string | undefined;
    if (/^-[a-z][a-z_-]+$/.test(a) && QEMU_STYLE.has(a.slice(1))) {
      name = a.slice(1) === 'fw_cfg' ? 'fw-cfg' : a.slice(1);
      out.push(`--${name}`);
    } else {
      out.push(a);
      if (a.startsWith('--')) name = a.slice(2);
      else if (/^-[mM]$/.test(a)) name = a.slice(1);
    }
    if (name !== undefined && TAKES_VALUE.has(name) && !a.includes('=') && i + 1 < argv.length) {
      out.push(argv[i + 1] as string);
      i++;
    }
  }
  return out;
}
