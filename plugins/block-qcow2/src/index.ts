/**
 * The qcow2 block driver plugin (qcow2 versions 2 and 3).
 * Spec: qemu/qemu docs/interop/qcow2.txt.
 */
import type { PluginContext, TsvmmPlugin } from '@tsvmm/core';
import { PluginTokens } from '@tsvmm/core';
import type { BlockDriverDefinition } from '@tsvmm/block';
import { QCOW2_MAGIC } from './layout.js';
import { Qcow2Device } from './qcow2-device.js';
import { QCOW2_CREATE_OPTIONS, createQcow2 } from './create.js';

export { Qcow2Device } from './qcow2-device.js';
export { createQcow2 } from './create.js';

export const qcow2Driver: BlockDriverDefinition = {
  format: 'qcow2',
  probe(head: Uint8Array): number {
    if (head.length < 8) return 0;
    const v = new DataView(head.buffer, head.byteOffset, head.byteLength);
    const version = v.getUint32(4);
    return v.getUint32(0) === QCOW2_MAGIC && version >= 2 ? 100 : 0;
  },
  open: (opts) => Qcow2Device.open(opts),
  create: createQcow2,
  createOptions: QCOW2_CREATE_OPTIONS,
};

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    ctx.container.register(PluginTokens['block-driver'], { useValue: qcow2Driver });
  },
};
export default plugin;
