#!/usr/bin/env node
// The tsvmm command. This shim exists before the TypeScript build does, so npm
// can link it at install time; the CLI itself is built into dist/ by `npm run build`.
import('../dist/src/cli.js').catch((err) => {
  if (err && err.code === 'ERR_MODULE_NOT_FOUND' && String(err.message).includes('dist/src/cli.js')) {
    process.stderr.write('tsvmm: not built yet: run `npm run build` in the repository root\n');
    process.exit(2);
  }
  throw err;
});
