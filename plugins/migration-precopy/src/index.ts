/**
 * `precopy`: QEMU's default live migration. Every page that was ever written
 * goes in a first round while the guest runs; then, round after round, the
 * pages KVM's dirty log (and device writes) report since the last round,
 * until what is left could be sent within the downtime limit at the
 * bandwidth the last round achieved; then the guest stops for the final copy
 * (iterativePrecopy in @tsvmm/migration, after QEMU's migration_iteration_run).
 * Pages go whole (zero pages as a marker).
 */
import { PluginTokens, type PluginContext, type TsvmmPlugin } from '@tsvmm/core';
import { defineMigrationStrategy, iterativePrecopy } from '@tsvmm/migration';

export const precopy = defineMigrationStrategy({
  name: 'precopy',
  description: 'iterative pre-copy with KVM dirty logging until the rest fits the downtime limit, then stop-and-copy',
  ramEncoding: () => ({}),
  precopy: (ctx) => iterativePrecopy(ctx),
});

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    ctx.container.register(PluginTokens['migration-strategy'], { useValue: precopy });
  },
};
export default plugin;
