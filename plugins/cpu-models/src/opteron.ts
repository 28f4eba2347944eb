/**
 * AMD Opteron generations 1–5 (QEMU builtin_x86_defs Opteron_G1..G5; feature
 * lists transcribed by name and cross-checked against QEMU 7.2's
 * query-cpu-model-expansion, see test/fixtures). Each generation is the
 * previous one plus what the real parts added:
 *  G1 Opteron 240 (K8), G2 22xx (K8 rev F: cx16, lahf-lm, svm),
 *  G3 23xx (K10 Barcelona: abm, sse4a, misalignsse, popcnt, rdtscp, monitor),
 *  G4 62xx (Bulldozer Interlagos: AVX, XOP, FMA4, AES, SSSE3/4.x, 1G pages),
 *  G5 63xx (Piledriver Abu Dhabi: FMA, F16C, TBM).
 */
import type { CpuModelDefinition } from '@tsvmm/core';
import { PPRO_FEATURES } from './generic.js';

const G1 = [...PPRO_FEATURES, 'vme', 'mtrr', 'clflush', 'mca', 'pse36', 'pni', 'lm', 'syscall', 'nx'];
const G2 = [...G1, 'cx16', 'lahf-lm', 'svm'];
const G3 = [...G2, 'monitor', 'popcnt', 'rdtscp', 'abm', 'sse4a', 'misalignsse'];
const G4 = [
  ...G2,
  'popcnt', 'rdtscp', 'abm', 'sse4a', 'misalignsse',
  'pclmulqdq', 'ssse3', 'sse4.1', 'sse4.2', 'aes', 'xsave', 'avx', 'pdpe1gb',
  '3dnowprefetch', 'xop', 'fma4', 'npt', 'nrip-save',
];
const G5 = [...G4, 'fma', 'f16c', 'tbm'];

const SVM_NOTE = 'svm (and with it npt, nrip-save) is part of the definition but, as in QEMU, switched off under KVM unless +svm is given.';

export const opteronG1: CpuModelDefinition = {
  name: 'Opteron_G1',
  version: 1,
  vendor: 'AuthenticAMD',
  family: 15,
  model: 6,
  stepping: 1,
  modelId: 'AMD Opteron 240 (Gen 1 Class Opteron)',
  level: 5,
  xlevel: 0x80000008,
  features: G1,
  description: 'AMD Opteron 240 (Gen 1 Class Opteron, 2004)',
  notes: 'QEMU Opteron_G1-v1.',
};

export const opteronG2: CpuModelDefinition = {
  name: 'Opteron_G2',
  version: 1,
  vendor: 'AuthenticAMD',
  family: 15,
  model: 6,
  stepping: 1,
  modelId: 'AMD Opteron 22xx (Gen 2 Class Opteron)',
  level: 5,
  xlevel: 0x80000008,
  features: G2,
  description: 'AMD Opteron 22xx (Gen 2 Class Opteron, 2006)',
  notes: `QEMU Opteron_G2-v1. ${SVM_NOTE}`,
};

export const opteronG3: CpuModelDefinition = {
  name: 'Opteron_G3',
  version: 1,
  vendor: 'AuthenticAMD',
  family: 16,
  model: 2,
  stepping: 3,
  modelId: 'AMD Opteron 23xx (Gen 3 Class Opteron)',
  level: 5,
  xlevel: 0x80000008,
  features: G3,
  description: 'AMD Opteron 23xx (Gen 3 Class Opteron, 2009)',
  notes: `QEMU Opteron_G3-v1. monitor is in the definition and, as in QEMU, off under KVM. ${SVM_NOTE}`,
};

export const opteronG4: CpuModelDefinition = {
  name: 'Opteron_G4',
  version: 1,
  vendor: 'AuthenticAMD',
  family: 21,
  model: 1,
  stepping: 2,
  modelId: 'AMD Opteron 62xx class CPU',
  level: 0xd,
  xlevel: 0x8000001a,
  features: G4,
  description: 'AMD Opteron 62xx class CPU (2011)',
  notes: `QEMU Opteron_G4-v1. ${SVM_NOTE}`,
};

export const opteronG5: CpuModelDefinition = {
  name: 'Opteron_G5',
  version: 1,
  vendor: 'AuthenticAMD',
  family: 21,
  model: 2,
  stepping: 0,
  modelId: 'AMD Opteron 63xx class CPU',
  level: 0xd,
  xlevel: 0x8000001a,
  features: G5,
  description: 'AMD Opteron 63xx class CPU (2012)',
  notes: `QEMU Opteron_G5-v1. ${SVM_NOTE}`,
};
