/**
 * Intel Core models: Sandy Bridge and Haswell (QEMU builtin_x86_defs
 * SandyBridge, Haswell and its version 2 alias Haswell-noTSX; feature lists
 * transcribed by name and cross-checked against QEMU 7.2's
 * query-cpu-model-expansion, see test/fixtures). Their VMX capability MSR
 * words are not modelled by tsvmm.
 */
import type { CpuModelDefinition } from '@tsvmm/core';

const CORE_EDX = [
  'fpu', 'vme', 'de', 'pse', 'tsc', 'msr', 'pae', 'mce', 'cx8', 'apic', 'sep', 'mtrr', 'pge', 'mca', 'cmov',
  'pat', 'pse36', 'clflush', 'mmx', 'fxsr', 'sse', 'sse2',
];

const SANDY_BRIDGE = [
  ...CORE_EDX,
  'pni', 'pclmulqdq', 'ssse3', 'cx16', 'sse4.1', 'sse4.2', 'x2apic', 'popcnt', 'tsc-deadline', 'aes', 'xsave', 'avx',
  'lm', 'syscall', 'nx', 'rdtscp', 'lahf-lm', 'xsaveopt', 'arat',
];

const HASWELL = [
  ...SANDY_BRIDGE,
  'fma', 'movbe', 'pcid', 'f16c', 'rdrand', 'abm',
  'fsgsbase', 'bmi1', 'hle', 'avx2', 'smep', 'bmi2', 'erms', 'invpcid', 'rtm',
];

export const sandyBridge: CpuModelDefinition = {
  name: 'SandyBridge',
  version: 1,
  vendor: 'GenuineIntel',
  family: 6,
  model: 42,
  stepping: 1,
  modelId: 'Intel Xeon E312xx (Sandy Bridge)',
  level: 0xd,
  xlevel: 0x80000008,
  features: SANDY_BRIDGE,
  description: 'Intel Xeon E312xx (Sandy Bridge)',
  notes: 'QEMU SandyBridge-v1.',
};

export const haswell: CpuModelDefinition = {
  name: 'Haswell',
  version: 1,
  vendor: 'GenuineIntel',
  family: 6,
  model: 60,
  stepping: 4,
  modelId: 'Intel Core Processor (Haswell)',
  level: 0xd,
  xlevel: 0x80000008,
  features: HASWELL,
  description: 'Intel Core Processor (Haswell)',
  notes: 'QEMU Haswell-v1. Many Haswell parts had TSX (hle, rtm) disabled by microcode; use Haswell-noTSX for those hosts.',
};

export const haswellNoTsx: CpuModelDefinition = {
  name: 'Haswell-noTSX',
  version: 1,
  vendor: 'GenuineIntel',
  family: 6,
  model: 60,
  stepping: 1,
  modelId: 'Intel Core Processor (Haswell, no TSX)',
  level: 0xd,
  xlevel: 0x80000008,
  features: HASWELL.filter((f) => f !== 'hle' && f !== 'rtm'),
  description: 'Intel Core Processor (Haswell, no TSX)',
  notes: 'QEMU Haswell-v2 (alias Haswell-noTSX): Haswell without hle and rtm, stepping 1.',
};
