export * from './accelerator.js';
