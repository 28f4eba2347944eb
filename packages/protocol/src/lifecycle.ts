/**
 * Lifecycle and base protocol messages (LSP 3.17 "Base Protocol" —
 * `$/cancelRequest`, `$/progress` — and "Lifecycle Messages" — `initialize`,
 * `initialized`, `shutdown`, `exit`; "window/logMessage").
 */
import { z } from 'zod';
import { progressTokenSchema } from './common.js';
import { defineNotification, defineNotification0, defineRequest, defineRequest0 } from './define.js';
import { hostCapabilitiesSchema } from './host.js';
import { cpuModelInfoSchema, machineTypeInfoSchema, pluginInfoSchema } from './catalog.js';

export const clientCapabilitiesSchema = z
  .strictObject({
    notifications: z
      .array(z.string())
      .optional()
      .describe('the server-to-client notifications the client wants (methods); absent means all. `$/progress` for a token the client supplied is always sent.'),
    logLevel: z
      .enum(['error', 'warning', 'info', 'log', 'debug'])
      .optional()
      .describe('the least severe `window/logMessage` the client wants (default info)'),
  })
  .describe('what the client can do and wants');

export const initializeParamsSchema = z.strictObject({
  processId: z.number().int().nullable().optional().describe('the client process id, or null'),
  clientInfo: z.strictObject({ name: z.string(), version: z.string().optional() }).optional(),
  protocolVersion: z.string().describe('the protocol version the client was written for (semver); the major must match the server\'s'),
  authToken: z.string().optional().describe('required when the server was started with --auth-token-file (always for TCP)'),
  capabilities: clientCapabilitiesSchema.default({}),
});
export type InitializeParams = z.infer<typeof initializeParamsSchema>;

export const serverCapabilitiesSchema = z.object({
  machineTypes: z.array(machineTypeInfoSchema),
  deviceTypes: z.array(
    z.object({
      name: z.string(),
      description: z.string(),
      bus: z.string(),
      hotpluggable: z.boolean(),
      plugin: z.string().describe('the npm package providing it'),
    }),
  ),
  cpuModels: z.array(cpuModelInfoSchema),
  blockFormats: z.array(z.string()).describe('block drivers provided by installed plugins'),
  migrationStrategies: z.array(z.string()),
  plugins: z.array(pluginInfoSchema),
  host: hostCapabilitiesSchema,
  notifications: z.array(z.string()).describe('the notifications this server sends'),
  limits: z.object({ maxMessageBytes: z.number().int().describe('the largest message body accepted') }),
});

export const initializeResultSchema = z.object({
  serverInfo: z.object({ name: z.string(), version: z.string() }),
  protocolVersion: z.string(),
  capabilities: serverCapabilitiesSchema,
});
export type InitializeResult = z.infer<typeof initializeResultSchema>;

export const Initialize = defineRequest('initialize', {
  doc:
    'The first request of every connection. Negotiates capabilities: the client says which protocol version it speaks and which notifications it wants; the server answers with what it and this host can do. Before it, every other request is answered with ServerNotInitialized and notifications other than `exit` are dropped. On a server started with an auth token, a wrong or missing `authToken` gets Unauthorized and the connection is closed.',
  since: '1.0.0',
  params: initializeParamsSchema,
  result: initializeResultSchema,
  errors: ['Unauthorized', 'InvalidRequest'],
});

export const Initialized = defineNotification('initialized', {
  doc: 'Sent by the client after it received the `initialize` result; the server starts sending notifications to the client from here on.',
  since: '1.0.0',
  direction: 'clientToServer',
  params: z.strictObject({}).optional(),
});

export const Shutdown = defineRequest0('shutdown', {
  doc:
    'Ends the session: afterwards the server answers every request of this connection with InvalidRequest. Over --stdio (one client owns the server) it also destroys every VM. VMs started through a socket server outlive the connection: they belong to the server, not the client.',
  since: '1.0.0',
  result: z.null(),
});

export const Exit = defineNotification0('exit', {
  doc:
    'Closes the connection. A --stdio server then exits, with status 0 if `shutdown` came first and 1 otherwise (as LSP asks).',
  since: '1.0.0',
  direction: 'clientToServer',
});

export const CancelRequest = defineNotification('$/cancelRequest', {
  doc:
    'Cancels a request still in progress. A cancellable request that has not completed answers RequestCancelled and undoes its partial work; one that already completed is not affected.',
  since: '1.0.0',
  direction: 'clientToServer',
  params: z.strictObject({ id: z.union([z.number().int(), z.string()]) }),
});

export const workDoneProgressValueSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('begin'),
    title: z.string(),
    cancellable: z.boolean().optional(),
    message: z.string().optional(),
    percentage: z.number().int().min(0).max(100).optional(),
  }),
  z.object({
    kind: z.literal('report'),
    cancellable: z.boolean().optional(),
    message: z.string().optional(),
    percentage: z.number().int().min(0).max(100).optional(),
  }),
  z.object({ kind: z.literal('end'), message: z.string().optional() }),
]);
export type WorkDoneProgressValue = z.infer<typeof workDoneProgressValueSchema>;

export const Progress = defineNotification('$/progress', {
  doc:
    'Work-done progress for a request that was given a `workDoneToken` (LSP WorkDoneProgress: one begin, any reports, one end).',
  since: '1.0.0',
  params: z.object({ token: progressTokenSchema, value: workDoneProgressValueSchema }),
});

/** LSP MessageType: Error 1, Warning 2, Info 3, Log 4, Debug 5. */
export const MessageType = { Error: 1, Warning: 2, Info: 3, Log: 4, Debug: 5 } as const;

export const LogMessage = defineNotification('window/logMessage', {
  doc:
    'A log record from the server or a VM process (`vmId` set). `type` is the LSP MessageType: 1 error, 2 warning, 3 info, 4 log, 5 debug. Errors carry their cause chain in `causes`, the same chain the VM process writes to its log.',
  since: '1.0.0',
  params: z.object({
    type: z.number().int().min(1).max(5),
    message: z.string(),
    vmId: z.string().optional(),
    causes: z.array(z.string()).optional(),
    fields: z.record(z.string(), z.unknown()).optional(),
  }),
});
