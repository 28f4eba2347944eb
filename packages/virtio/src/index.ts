export * from './spec.js';
export * from './queue.js';
export * from './chain.js';
export * from './common.js';
export * from './data-plane.js';
export * from './data-plane-host.js';
export * from './pci-transport.js';
export * from './persist.js';
