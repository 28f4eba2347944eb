/**
 * Serial consoles. Output is batched per port (at most every few
 * milliseconds or 16 KiB) so a chatty guest costs one notification per batch,
 * not one per byte. Bytes travel base64-encoded: guest output need not be UTF-8.
 */
import { z } from 'zod';
import { vmIdSchema } from './common.js';
import { defineNotification, defineRequest } from './define.js';

export const portSchema = z
  .string()
  .regex(/^serial[0-9]+$/, { error: 'must be a serial port name such as serial0' })
  .describe('serial0 is COM1, serial1 COM2, ...');

export const ConsoleWrite = defineRequest('console/write', {
  doc: 'Sends bytes to a serial port of the VM, as if typed on its console. The port must use the default `rpc` backend.',
  since: '1.0.0',
  params: z.strictObject({
    vmId: vmIdSchema,
    port: portSchema.default('serial0'),
    data: z.string().describe('the bytes, encoded as `encoding` says'),
    encoding: z.enum(['utf8', 'base64']).default('utf8'),
  }),
  result: z.object({ written: z.number().int().describe('bytes handed to the port') }),
  errors: ['VmNotFound', 'InvalidVmState', 'PortNotFound'],
});

export const ConsoleOutput = defineNotification('console/output', {
  doc: 'Bytes the guest wrote to a serial port, batched. `dropped` counts bytes this client missed because it read too slowly.',
  since: '1.0.0',
  params: z.object({
    vmId: vmIdSchema,
    port: z.string(),
    data: z.string().describe('base64'),
    dropped: z.number().int().optional(),
  }),
});
