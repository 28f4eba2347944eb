/**
 * @tsvmm/protocol: the tsvmm control protocol (JSON-RPC 2.0 with LSP framing
 * and lifecycle). No Node APIs here, so any client — a browser, an editor
 * extension host — can import it.
 */
export * from './version.js';
export * from './errors.js';
export * from './define.js';
export * from './common.js';
export * from './machine-description.js';
export * from './lifecycle.js';
export * from './vm.js';
export * from './device.js';
export * from './console.js';
export * from './host.js';
export * from './migration.js';
export * from './catalog.js';
export * from './messages.js';
export * from './json-schema.js';
export * from './markdown.js';
