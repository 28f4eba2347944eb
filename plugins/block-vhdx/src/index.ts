/**
 * The vhdx block driver plugin ([MS-VHDX]): fixed, dynamic and differencing
 * files with log replay. See docs/formats-vhd-vhdx.md for what is supported.
 */
import type { PluginContext, TsvmmPlugin } from '@tsvmm/core';
import { PluginTokens } from '@tsvmm/core';
import type { BlockDriverDefinition } from '@tsvmm/block';
import { createVhdx } from './create.js';
import { FILE_SIGNATURE } from './structures.js';
import { VhdxDevice } from './vhdx-device.js';

export { VhdxDevice } from './vhdx-device.js';
export { createVhdx, defaultBlockSize } from './create.js';
export { crc32c, vhdxChecksum } from './crc32c.js';
export * as vhdx from './structures.js';
export * as vhdxLog from './log.js';
export * as vhdxGuid from './guid.js';

export const vhdxDriver: BlockDriverDefinition = {
  format: 'vhdx',
  probe: (head) => (head.length >= 8 && Buffer.from(head.subarray(0, 8)).toString('latin1') === FILE_SIGNATURE ? 100 : 0),
  open: (opts) => VhdxDevice.open(opts),
  create: createVhdx,
  createOptions: [
    { name: 'subformat', type: 'string', help: 'dynamic (default) or fixed; differencing when backing_file is set', default: 'dynamic' },
    { name: 'block_size', type: 'size', help: 'payload block size, 1 MiB to 256 MiB (default: by disk size, as qemu-img)' },
    { name: 'log_size', type: 'size', help: 'log size, a multiple of 1 MiB', default: '1M' },
    { name: 'block_state_zero', type: 'bool', help: 'mark new dynamic blocks PAYLOAD_BLOCK_ZERO', default: 'on' },
    { name: 'logical_sector_size', type: 'number', help: '512 or 4096', default: '512' },
    { name: 'backing_file', type: 'string', help: 'parent VHDX: creates a differencing file' },
    { name: 'backing_fmt', type: 'string', help: 'must be vhdx' },
  ],
};

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    ctx.container.register(PluginTokens['block-driver'], { useValue: vhdxDriver });
  },
};
export default plugin;
