/** CPU models, CPUID composition, KVM paravirtual and Hyper-V leaves, topology. */
export * from './cpuid.js';
export * from './features.js';
export * from './model.js';
export * from './topology.js';
export * from './kvm-abi.js';
export * from './host-caps.js';
export * from './hyperv.js';
export * from './kvm-pv.js';
export * from './cpu-option.js';
export * from './cache-info.js';
export * from './compose.js';
export * from './listing.js';
