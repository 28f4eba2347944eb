/**
 * `host`: pass through what the host's KVM supports (QEMU's -cpu host).
 * Identity (vendor, family/model/stepping, levels) and features come from
 * KVM_GET_SUPPORTED_CPUID at composition time; the fields below are only
 * placeholders the composition does not read.
 */
import type { CpuModelDefinition } from '@tsvmm/core';

export const host: CpuModelDefinition = {
  name: 'host',
  version: 1,
  vendor: '',
  family: 0,
  model: 0,
  stepping: 0,
  modelId: '',
  level: 0,
  xlevel: 0,
  features: [],
  passthrough: true,
  description: 'the host CPU, with every feature its KVM supports',
  notes: 'Not migratable between hosts that differ: the guest sees this host\'s CPU.',
};
