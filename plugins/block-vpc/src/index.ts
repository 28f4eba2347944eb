/**
 * The vpc (VHD) block driver plugin: Microsoft "Virtual Hard Disk Image
 * Format Specification" fixed, dynamic and differencing disks. See
 * docs/formats-vhd-vhdx.md for what is supported.
 */
import type { PluginContext, TsvmmPlugin } from '@tsvmm/core';
import { PluginTokens } from '@tsvmm/core';
import type { BlockDriverDefinition } from '@tsvmm/block';
import { createVpc } from './create.js';
import { FOOTER_COOKIE } from './structures.js';
import { VpcDevice } from './vpc-device.js';

export { VpcDevice } from './vpc-device.js';
export { createVpc } from './create.js';
export * as vhd from './structures.js';

export const vpcDriver: BlockDriverDefinition = {
  format: 'vpc',
  // Dynamic disks start with a footer copy; fixed disks are only recognised at the end (like qemu).
  probe: (head) => (head.length >= 8 && Buffer.from(head.subarray(0, 8)).toString('latin1') === FOOTER_COOKIE ? 100 : 0),
  open: (opts) => VpcDevice.open(opts),
  create: createVpc,
  createOptions: [
    { name: 'subformat', type: 'string', help: 'dynamic (default) or fixed; differencing when backing_file is set', default: 'dynamic' },
    { name: 'force_size', type: 'bool', help: 'keep the exact size instead of rounding up to a CHS geometry', default: 'off' },
    { name: 'block_size', type: 'size', help: 'dynamic block size (power of two)', default: '2M' },
    { name: 'backing_file', type: 'string', help: 'parent VHD: creates a differencing disk' },
    { name: 'backing_fmt', type: 'string', help: 'must be vpc' },
  ],
};

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    ctx.container.register(PluginTokens['block-driver'], { useValue: vpcDriver });
  },
};
export default plugin;
