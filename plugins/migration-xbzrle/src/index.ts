/**
 * `xbzrle`: pre-copy as `precopy` does it, but a page sent again is encoded
 * as an XBZRLE delta against the copy sent last time (QEMU docs/xbzrle.txt):
 * the migration thread keeps a page cache of `xbzrleCacheSize` bytes,
 * encodes zero-run/non-zero-run pairs, and sends the whole page when the
 * delta would be larger than the page (an overflow) or the page is not
 * cached (a miss). It pays off for guests that rewrite small parts of many
 * pages; the codec and cache are @tsvmm/migration's, shared with the
 * destination, which needs no plugin to decode.
 */
import { PluginTokens, type PluginContext, type TsvmmPlugin } from '@tsvmm/core';
import { defineMigrationStrategy, iterativePrecopy } from '@tsvmm/migration';

export const xbzrle = defineMigrationStrategy({
  name: 'xbzrle',
  description: 'pre-copy with XBZRLE delta encoding of re-sent pages against a page cache (xbzrleCacheSize)',
  ramEncoding: (params) => ({ xbzrleCacheSize: params.xbzrleCacheSize }),
  precopy: (ctx) => iterativePrecopy(ctx),
});

const plugin: TsvmmPlugin = {
  register(ctx: PluginContext): void {
    ctx.container.register(PluginTokens['migration-strategy'], { useValue: xbzrle });
  },
};
export default plugin;
