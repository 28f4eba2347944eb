/**
 * Turning errors into JSON-RPC error responses (JSON-RPC 2.0 §5.1). Every
 * response carries `data.causes`, the cause chain, so a client sees the same
 * explanation the VM process logs. Errors that arrive from a VM process
 * over the private channel are already ResponseErrors and pass through as-is.
 */
import { errorCauses, TsvmmError } from '@tsvmm/core';
import { ErrorCodes, errorCodeForCoreCode, type ErrorData } from '@tsvmm/protocol';
import { ResponseError } from 'vscode-jsonrpc';

/** A tsvmm error raised by the server itself with a protocol error code and extra data. */
export class ProtocolError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly extra: Omit<ErrorData, 'causes'> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ProtocolError';
  }
}

function isErrorData(v: unknown): v is ErrorData {
  return typeof v === 'object' && v !== null && Array.isArray((v as { causes?: unknown }).causes);
}

export function toResponseError(err: unknown): ResponseError<ErrorData> {
  if (err instanceof ResponseError) {
    const data: unknown = err.data;
    return new ResponseError<ErrorData>(err.code, err.message, isErrorData(data) ? data : { causes: [err.message] });
  }
  if (err instanceof ProtocolError) {
    return new ResponseError<ErrorData>(err.code, err.message, { ...err.extra, causes: errorCauses(err) });
  }
  if (err instanceof TsvmmError) {
    return new ResponseError<ErrorData>(errorCodeForCoreCode(err.code), err.message, { code: err.code, causes: errorCauses(err) });
  }
  const message = err instanceof Error ? err.message : String(err);
  return new ResponseError<ErrorData>(ErrorCodes.InternalError, `internal error: ${message}`, { causes: errorCauses(err) });
}

export function vmNotFound(vmId: string): ProtocolError {
  return new ProtocolError(ErrorCodes.VmNotFound, `no VM with id '${vmId}'`, {}, undefined);
}
