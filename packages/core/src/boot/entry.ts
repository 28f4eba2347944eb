/** The CPU state a boot loader hands the bootstrap processor. */

/** Flat 32-bit protected mode, paging off (multiboot §3.2). */
export interface ProtectedModeEntry {
  mode: 'protected32';
  eip: number;
  eax: number;
  ebx: number;
}

/**
 * 64-bit long mode with identity-mapped page tables and a GDT already written
 * to guest RAM (Linux boot protocol, "64-bit Boot Protocol").
 */
export interface LongModeEntry {
  mode: 'long64';
  rip: number;
  rsi: number;
  cr3: number;
  gdtBase: number;
  gdtLimit: number;
  codeSelector: number;
  dataSelector: number;
}

export type CpuEntryState = ProtectedModeEntry | LongModeEntry;
