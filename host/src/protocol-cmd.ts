/**
 * `tsvmm protocol schema` prints the JSON Schema of the whole control
 * protocol (for clients in other languages); `tsvmm protocol docs` prints
 * docs/protocol.md (`--output FILE` writes it; `npm run docs:protocol`).
 */
import * as fs from 'node:fs';
import { Command } from 'commander';
import { protocolJsonSchema, renderProtocolMarkdown } from '@tsvmm/protocol';

export function protocolCommand(): Command {
  const cmd = new Command('protocol').description('the control protocol in machine- and human-readable form');
  cmd
    .command('schema')
    .description('print the JSON Schema (2020-12) of every request and notification')
    .action(() => {
      process.stdout.write(`${JSON.stringify(protocolJsonSchema(), null, 2)}\n`);
    });
  cmd
    .command('docs')
    .description('print the protocol reference in Markdown (docs/protocol.md)')
    .option('--output <file>', 'write it to a file instead')
    .action((o: { output?: string }) => {
      const md = renderProtocolMarkdown();
      if (o.output !== undefined) fs.writeFileSync(o.output, md);
      else process.stdout.write(md);
    });
  return cmd;
}
