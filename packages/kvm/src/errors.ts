/**
 * Error types of the KVM facade.
 *
 * Failed system calls are thrown by the addon as plain Errors shaped like
 * Node's system errors (see native/errors.c): message
 * `<operation> failed: <CODE> (<text>)`, plus code, errno (negative, Node's
 * convention), syscall and operation. `isKvmSystemError` narrows to that shape.
 */
import { kvmNative } from './native.js';

export interface KvmSystemError extends Error {
  /** errno name, e.g. 'EINVAL' */
  readonly code: string;
  /** negative errno, as in Node's system errors */
  readonly errno: number;
  /** the system call: 'ioctl', 'open', 'mmap', ... */
  readonly syscall: string;
  /** what was attempted: the KVM ioctl name, 'open /dev/kvm', ... */
  readonly operation: string;
}

export function isKvmSystemError(err: unknown): err is KvmSystemError {
  if (!(err instanceof Error)) return false;
  const e = err as Error & Record<string, unknown>;
  return (
    typeof e.code === 'string' &&
    typeof e.errno === 'number' &&
    typeof e.syscall === 'string' &&
    typeof e.operation === 'string'
  );
}

/** /dev/kvm is missing, not accessible, or speaks another API version. */
export class KvmUnavailableError extends Error {
  readonly code = 'ERR_KVM_UNAVAILABLE';
  constructor(
    message: string,
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'KvmUnavailableError';
  }
}

/** The host's KVM lacks a capability the caller needs. */
export class KvmCapabilityError extends Error {
  readonly code = 'ERR_KVM_CAPABILITY';
  constructor(
    readonly capability: string,
    readonly neededFor: string,
  ) {
    super(`the host KVM lacks ${capability}, needed for ${neededFor}`);
    this.name = 'KvmCapabilityError';
  }
}

export type KvmStateErrorCode = 'ERR_KVM_CLOSED' | 'ERR_KVM_VCPU_RUNNING' | 'ERR_KVM_VCPU_STATE' | 'ERR_KVM_ARGUMENT';

/** A facade object was used in a state that does not allow the call. */
export class KvmStateError extends Error {
  constructor(
    readonly code: KvmStateErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'KvmStateError';
  }
}

/**
 * Builds the same error shape the addon throws, for an errno reported
 * asynchronously (a vCPU thread's failed KVM_RUN). `errnoValue` is positive.
 */
export function systemErrorFromErrno(operation: string, syscall: string, errnoValue: number): KvmSystemError {
  const { code, text } = kvmNative.describeErrno(errnoValue);
  const err = new Error(`${operation} failed: ${code} (${text})`);
  return Object.assign(err, { code, errno: -errnoValue, syscall, operation });
}
