/**
 * Kernel loading: pick the boot protocol the way QEMU's -kernel does (a Linux
 * setup header wins, otherwise a multiboot header), read the files, load.
 */
import * as fs from 'node:fs';
import { BootError } from '../errors.js';
import { splitOptionList } from '../properties.js';
import type { GuestMemory } from '../guest-memory.js';
import type { MemoryLayout } from '../memory-map.js';
import type { CpuEntryState } from './entry.js';
import { loadLinux, parseBzImageHeader } from './linux.js';
import { findMultibootHeader, loadMultiboot, type BootModule } from './multiboot.js';

export * from './entry.js';
export * from './elf.js';
export * from './linux.js';
export * from './multiboot.js';

export interface KernelSpec {
  kernel: string;
  append?: string;
  /** Linux: an initrd file. Multiboot: modules, `file args,file2 args` as QEMU's -initrd. */
  initrd?: string;
}

export interface LoadedKernel {
  protocol: 'multiboot' | 'linux';
  entry: CpuEntryState;
  summary: string;
}

export function readBootFile(file: string, what: string): Uint8Array {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (err as Error).message;
    throw new BootError(`cannot read ${what} '${file}': ${why}`, { cause: err });
  }
}

/** Split QEMU's multiboot module list: `,` separates modules (`,,` is a literal comma); the first word is the file. */
export function parseModuleList(spec: string): { file: string; cmdline: string }[] {
  const parts = splitOptionList(spec);
  // a trailing comma (or an empty list) adds no module
  if (parts[parts.length - 1]?.trim() === '') parts.pop();
  const out = parts.map((p) => ({ file: p.trim().split(/\s+/)[0] ?? '', cmdline: p.trim() }));
  for (const m of out) if (m.file === '') throw new BootError(`empty module name in '${spec}'`);
  return out;
}

/** Load the kernel (and initrd/modules) into guest RAM. `image` may be given to avoid re-reading (reset). */
export function loadKernel(mem: GuestMemory, layout: MemoryLayout, spec: KernelSpec, image = readBootFile(spec.kernel, 'kernel')): LoadedKernel {
  const append = spec.append ?? '';
  if (parseBzImageHeader(image) !== undefined) {
    const initrd = spec.initrd !== undefined ? { file: spec.initrd, data: readBootFile(spec.initrd, 'initrd') } : undefined;
    const r = loadLinux(mem, layout, { file: spec.kernel, image, cmdline: append, ...(initrd ? { initrd } : {}) });
    return {
      protocol: 'linux',
      entry: r.entry,
      summary: `Linux boot protocol ${r.header.version >> 8}.${r.header.version & 0xff}, kernel at 0x${r.loadAddr.toString(16)}`,
    };
  }
  if (findMultibootHeader(image) !== undefined) {
    const modules: BootModule[] = parseModuleList(spec.initrd ?? '').map((m) => ({
      data: readBootFile(m.file, 'multiboot module'),
      cmdline: m.cmdline,
    }));
    // QEMU passes the kernel file name followed by -append as the multiboot command line.
    const cmdline = append === '' ? spec.kernel : `${spec.kernel} ${append}`;
    const r = loadMultiboot(mem, layout, { file: spec.kernel, image, cmdline, modules });
    return {
      protocol: 'multiboot',
      entry: r.entry,
      summary: `multiboot kernel at 0x${r.kernelStart.toString(16)}-0x${r.kernelEnd.toString(16)}, ${modules.length} module(s)`,
    };
  }
  throw new BootError(`${spec.kernel}: neither a multiboot kernel (no multiboot header in the first 8 KiB) nor a Linux bzImage (no 'HdrS' setup header)`);
}
