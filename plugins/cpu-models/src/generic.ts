/**
 * qemu64 and kvm64: the generic 64-bit models (QEMU builtin_x86_defs, facts
 * transcribed by feature name). qemu64 is the default model of the pc
 * machine types; kvm64 is the conservative "runs on any 64-bit KVM host" one.
 */
import type { CpuModelDefinition } from '@tsvmm/core';

/** Leaf 1 EDX of a Pentium Pro class CPU (QEMU PPRO_FEATURES). */
export const PPRO_FEATURES = ['fpu', 'de', 'pse', 'tsc', 'msr', 'mce', 'cx8', 'pge', 'cmov', 'pat', 'fxsr', 'mmx', 'sse', 'sse2', 'pae', 'sep', 'apic'] as const;

export const qemu64: CpuModelDefinition = {
  name: 'qemu64',
  version: 1,
  vendor: 'AuthenticAMD',
  family: 15,
  model: 107,
  stepping: 1,
  modelId: 'QEMU Virtual CPU version 2.5+',
  level: 0xd,
  xlevel: 0x8000000a,
  features: [...PPRO_FEATURES, 'mtrr', 'clflush', 'mca', 'pse36', 'pni', 'cx16', 'lm', 'syscall', 'nx', 'lahf-lm', 'svm'],
  description: 'QEMU Virtual CPU version 2.5+',
  notes: 'QEMU qemu64-v1. svm is part of the definition but, as in QEMU, switched off under KVM unless +svm is given.',
};

export const kvm64: CpuModelDefinition = {
  name: 'kvm64',
  version: 1,
  vendor: 'GenuineIntel',
  family: 15,
  model: 6,
  stepping: 1,
  modelId: 'Common KVM processor',
  level: 0xd,
  xlevel: 0x80000008,
  features: [...PPRO_FEATURES, 'vme', 'mtrr', 'clflush', 'mca', 'pse36', 'pni', 'cx16', 'lm', 'syscall', 'nx'],
  description: 'Common KVM processor',
  notes: 'QEMU kvm64-v1 (its VMX feature MSR words are not modelled by tsvmm).',
};
