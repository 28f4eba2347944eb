/**
 * Error codes (JSON-RPC 2.0 §5.1 "Error object"; LSP 3.17 "Response Message",
 * `ErrorCodes` and `LSPErrorCodes`).
 *
 * -32768..-32000 is reserved by JSON-RPC; LSP uses -32899..-32800 for its own
 * codes. tsvmm's application codes live at 1000..1999, outside both ranges,
 * so a generic JSON-RPC client never mistakes them for transport errors.
 *
 * Every error tsvmm sends carries `data` shaped as {@link errorDataSchema}:
 * `causes` is the error's cause chain, outermost first (the VM process logs
 * the same chain), and `path` names the failing field for -32602.
 */
import { z } from 'zod';

export const ErrorCodes = {
  // JSON-RPC 2.0
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  // LSP base protocol
  ServerNotInitialized: -32002,
  UnknownErrorCode: -32001,
  RequestFailed: -32803,
  ServerCancelled: -32802,
  RequestCancelled: -32800,
  // tsvmm
  Unauthorized: 1000,
  VmNotFound: 1001,
  InvalidVmState: 1002,
  ConfigError: 1003,
  PluginError: 1004,
  BootError: 1005,
  HotplugUnsupported: 1006,
  DeviceNotFound: 1007,
  PortNotFound: 1008,
  VmProcessFailed: 1009,
  HostUnsupported: 1010,
  ShuttingDown: 1011,
  MigrationFailed: 1012,
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** What each code means and when a client sees it; docs/protocol.md is generated from this. */
export const errorCodeDocs: Record<keyof typeof ErrorCodes, string> = {
  ParseError: 'The body is not valid JSON (or not UTF-8), or a frame has no valid Content-Length header. The id is null.',
  InvalidRequest:
    'The JSON is not a JSON-RPC 2.0 request or notification (no `jsonrpc: "2.0"`, no method, a batch array), the body exceeds the size limit, or a request arrives after `shutdown`.',
  MethodNotFound: 'No such method. `data.method` names it.',
  InvalidParams: 'Params do not match the method\'s schema. `data.path` is the failing field path (e.g. `description.memory`), `data.issues` lists every problem.',
  InternalError: 'A bug in tsvmm. `data.causes` holds the cause chain; please report it.',
  ServerNotInitialized: 'A request other than `initialize` arrived before `initialize` (LSP). The connection stays open.',
  UnknownErrorCode: 'Reserved by LSP; not sent by tsvmm.',
  RequestFailed: 'The request was valid but failed for a reason not covered by a tsvmm code.',
  ServerCancelled: 'The server cancelled the request (it is shutting down).',
  RequestCancelled: 'The client cancelled the request with `$/cancelRequest` before it completed; any partial work was undone.',
  Unauthorized: 'The server requires an auth token (TCP) and `initialize` did not present the right one. The server closes the connection after this response.',
  VmNotFound: 'No VM with that `vmId` (never created, or destroyed).',
  InvalidVmState: 'The operation is not valid in the VM\'s current state (e.g. `vm/resume` on a running VM). `data.state` is the current state.',
  ConfigError: 'The machine description or a device spec is invalid: unknown machine or device type, bad property value, unreadable kernel file. `data.causes` says which.',
  PluginError: 'A plugin needed for the request could not be loaded (bad manifest, incompatible plugin API range, failing register()).',
  BootError: 'The kernel image cannot be loaded (neither multiboot nor bzImage, does not fit in RAM).',
  HotplugUnsupported: 'The device or its bus cannot be hot-plugged or unplugged; `data.reason` says why.',
  DeviceNotFound: 'No device with that id in the VM.',
  PortNotFound: 'No console (serial) port with that name in the VM.',
  VmProcessFailed: 'The VM\'s process died or stopped answering while handling the request.',
  HostUnsupported: 'This host cannot do what was asked (e.g. /dev/kvm absent or not permitted); `data.reason` says what is missing.',
  ShuttingDown: 'The server is shutting down and accepts no new work.',
  MigrationFailed: 'A migration or snapshot failed or was refused (the destination refused the configuration, the connection broke, loading failed); `data.causes` says why. The source VM runs on as before.',
};

export const errorDataSchema = z
  .looseObject({
    causes: z.array(z.string()).describe('the cause chain, outermost first'),
    code: z.string().optional().describe('the tsvmm error class code, e.g. E_CONFIG'),
    path: z.string().optional().describe('InvalidParams: the failing field path, dot-separated'),
    issues: z
      .array(z.object({ path: z.string(), message: z.string() }))
      .optional()
      .describe('InvalidParams: every validation problem'),
    state: z.string().optional().describe('InvalidVmState: the VM\'s current state'),
    reason: z.string().optional().describe('HotplugUnsupported, HostUnsupported: why'),
    method: z.string().optional().describe('MethodNotFound: the unknown method'),
  })
  .describe('The `data` member of every tsvmm error response');
export type ErrorData = z.infer<typeof errorDataSchema>;

/** Map a core error class code (TsvmmError.code) to a protocol error code. */
export function errorCodeForCoreCode(code: string | undefined): ErrorCode {
  switch (code) {
    case 'E_CONFIG':
    case 'E_ADDRESS_RANGE':
      return ErrorCodes.ConfigError;
    case 'E_PLUGIN':
      return ErrorCodes.PluginError;
    case 'E_BOOT':
      return ErrorCodes.BootError;
    case 'E_VM_STATE':
      return ErrorCodes.InvalidVmState;
    case 'E_HOTPLUG':
      return ErrorCodes.HotplugUnsupported;
    case 'E_DEVICE_NOT_FOUND':
      return ErrorCodes.DeviceNotFound;
    case 'E_PORT_NOT_FOUND':
      return ErrorCodes.PortNotFound;
    case 'E_HOST':
      return ErrorCodes.HostUnsupported;
    case 'E_MIGRATION':
      return ErrorCodes.MigrationFailed;
    default:
      return ErrorCodes.RequestFailed;
  }
}
