/**
 * `tsvmm ctl --connect unix:PATH <method> [json]`: one request over the
 * control protocol, for scripts and debugging. Prints the result as JSON on
 * stdout and exits 0; on an error prints `tsvmm ctl: MESSAGE` and the cause
 * chain on stderr and exits 1. With --follow it then prints every
 * notification as one JSON line until interrupted (or --follow-until matches).
 */
import { Command } from 'commander';
import { ConfigError, errorCauses, EXIT_VMM_ERROR } from '@tsvmm/core';
import { TsvmmClient, ResponseError } from '@tsvmm/client';
import { ErrorCodes } from '@tsvmm/protocol';
import { readAuthToken } from './server/serve-cmd.js';

interface CtlOptions {
  connect: string;
  authTokenFile?: string;
  follow?: boolean;
  followUntil?: string;
  timeout: string;
}

export async function ctl(method: string, json: string | undefined, o: CtlOptions, out: NodeJS.WritableStream = process.stdout): Promise<number> {
  let params: unknown;
  if (json !== undefined) {
    try {
      params = JSON.parse(json);
    } catch (err) {
      throw new ConfigError(`params are not valid JSON: ${(err as Error).message}`, { hint: `e.g. tsvmm ctl --connect ... vm/status '{"vmId":"vm-1"}'` });
    }
  }
  const authToken = o.authTokenFile !== undefined ? readAuthToken(o.authTokenFile) : undefined;
  let client: TsvmmClient;
  try {
    client = await TsvmmClient.connect(o.connect, { clientName: 'tsvmm ctl', ...(authToken !== undefined ? { authToken } : {}) });
  } catch (err) {
    // the server's words are for programs (an initialize field); say it in ctl's terms
    if (err instanceof ResponseError && err.code === ErrorCodes.Unauthorized) {
      throw new ConfigError(
        authToken === undefined ? `${o.connect} requires an auth token` : `${o.connect} refused the auth token in ${o.authTokenFile ?? ''}`,
        { hint: authToken === undefined ? 'pass --auth-token-file FILE (the file the server was started with)' : 'use the file the server was started with' },
      );
    }
    throw err;
  }
  try {
    let until: RegExp | undefined;
    let followDone: Promise<void> | undefined;
    if (o.follow || o.followUntil !== undefined) {
      until = o.followUntil !== undefined ? new RegExp(o.followUntil) : undefined;
      // Console output arrives in batches that may split a line: match against what was seen so far.
      let consoleText = '';
      followDone = new Promise<void>((resolve) => {
        client.connection.onNotification((m: string, p: unknown) => {
          let printed: unknown = p;
          let text: string | undefined;
          if (m === 'console/output' && typeof (p as { data?: unknown }).data === 'string') {
            // Humans (and greps) read the console: show the bytes decoded beside the base64.
            const decoded = Buffer.from((p as { data: string }).data, 'base64').toString('utf8');
            printed = { ...(p as object), text: decoded };
            consoleText = (consoleText + decoded).slice(-8192);
            text = consoleText;
          }
          const line = JSON.stringify({ method: m, params: printed });
          out.write(`${line}\n`);
          text ??= line;
          if (until?.test(text)) resolve();
        });
        client.connection.onClose(() => resolve());
      });
    }
    const result = await client.requestRaw(method, params ?? {});
    out.write(`${JSON.stringify(result, null, 2)}\n`);
    if (followDone !== undefined) {
      const ms = Number(o.timeout);
      await Promise.race([followDone, ...(ms > 0 ? [new Promise<void>((r) => setTimeout(r, ms).unref())] : [])]);
    }
    return 0;
  } catch (err) {
    if (err instanceof ResponseError) {
      process.stderr.write(`tsvmm ctl: ${err.message} (error ${err.code})\n`);
      const causes = (err.data as { causes?: unknown } | undefined)?.causes;
      if (Array.isArray(causes)) for (const c of causes.slice(1)) process.stderr.write(`  caused by: ${String(c)}\n`);
      return 1;
    }
    throw err;
  } finally {
    await client.close();
  }
}

export function ctlCommand(setStatus: (status: number) => void): Command {
  return new Command('ctl')
    .description('send one request to a running `tsvmm serve` and print the result')
    .argument('<method>', 'protocol method, e.g. vm/list, vm/status')
    .argument('[json]', 'params as a JSON object')
    .requiredOption('--connect <address>', 'unix:PATH or tcp:HOST:PORT')
    .option('--auth-token-file <file>', 'the server\'s auth token')
    .option('--follow', 'after the result, print notifications as JSON lines')
    .option('--follow-until <regex>', 'with --follow: stop when a notification (console output as text) matches')
    .option('--timeout <ms>', 'with --follow: stop after this many milliseconds (0 = never)', '0')
    .action(async (method: string, json: string | undefined, opts: CtlOptions) => {
      try {
        setStatus(await ctl(method, json, opts));
      } catch (err) {
        process.stderr.write(`tsvmm ctl: ${errorCauses(err).join(': ')}\n`);
        setStatus(EXIT_VMM_ERROR);
      }
    });
}
