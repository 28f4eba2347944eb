/**
 * `host/capabilities`: what this host and this build can do, feature by
 * feature, with the reason when not — the role libvirt's domcapabilities
 * plays. KVM facts come from /dev/kvm and KVM_CHECK_EXTENSION
 * (Linux Documentation/virt/kvm/api.rst §4.4).
 */
import { z } from 'zod';
import { defineRequest } from './define.js';

export const hostFeatureSchema = z.object({
  name: z.string().describe('e.g. kvm, irqchip, hyperv-enlightenments, dirty-log, hotplug'),
  available: z.boolean(),
  reason: z.string().optional().describe('why not, when not available'),
  detail: z.string().optional(),
});
export type HostFeature = z.infer<typeof hostFeatureSchema>;

export const kvmInfoSchema = z.object({
  device: z.string().describe('the KVM device path, /dev/kvm'),
  present: z.boolean(),
  readable: z.boolean(),
  writable: z.boolean(),
  usable: z.boolean().describe('present and openable read-write by the server process'),
  apiVersion: z.number().int().optional().describe('KVM_GET_API_VERSION (12 on every kernel since 2.6.22)'),
  capabilities: z.record(z.string(), z.number().int()).optional().describe('KVM_CHECK_EXTENSION results by KVM_CAP_ name, when the kvm facade can query them'),
  reason: z.string().optional().describe('why KVM is not usable, or what could not be determined'),
});

export const hostCapabilitiesSchema = z.object({
  arch: z.string(),
  platform: z.string(),
  cpus: z.number().int().describe('host CPUs'),
  kvm: kvmInfoSchema,
  features: z.array(hostFeatureSchema),
});
export type HostCapabilities = z.infer<typeof hostCapabilitiesSchema>;

export const HostCapabilitiesRequest = defineRequest('host/capabilities', {
  doc:
    'What this host and build can do, feature by feature: each feature is available or not, with the reason when not (e.g. Hyper-V enlightenments need KVM_CAP_HYPERV). The same object is part of the `initialize` result.',
  since: '1.0.0',
  params: z.strictObject({}).optional(),
  result: hostCapabilitiesSchema,
});
