/**
 * Typed errors. Each carries a stable `code` (used by the CLI and, later, mapped
 * to JSON-RPC application error codes), the context a user needs, and a hint
 * saying what to do next. `message` is one line suitable for a CLI error.
 */
export class TsvmmError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, options?: { hint?: string; cause?: unknown }) {
    super(options?.hint ? `${message} (${options.hint})` : message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options?.hint;
  }
}

/** Bad user input: options, config files, device properties. */
export class ConfigError extends TsvmmError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super('E_CONFIG', message, options);
  }
}

/** Two devices claim overlapping ranges, or a range is empty / outside the space. */
export class AddressRangeError extends TsvmmError {
  constructor(message: string, options?: { hint?: string }) {
    super('E_ADDRESS_RANGE', message, options);
  }
}

/** A plugin cannot be loaded: bad manifest, api mismatch, missing entry, duplicate name. */
export class PluginError extends TsvmmError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super('E_PLUGIN', message, options);
  }
}

/** The kernel image cannot be loaded. */
export class BootError extends TsvmmError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super('E_BOOT', message, options);
  }
}

/** A guest-supplied address or length does not fit guest memory. */
export class GuestMemoryError extends TsvmmError {
  readonly address: number;
  readonly length: number;
  constructor(address: number, length: number, what = 'access') {
    super(
      'E_GUEST_MEMORY',
      `guest memory ${what} at 0x${address.toString(16)} length ${length} is outside guest RAM`,
    );
    this.address = address;
    this.length = length;
  }
}

/** An operation that is not valid in the VM's current state. */
export class VmStateError extends TsvmmError {
  constructor(message: string, options?: { hint?: string }) {
    super('E_VM_STATE', message, options);
  }
}

/** Render an error and its cause chain as one line per cause (used by CLI and RPC `data.causes`). */
export function errorCauses(err: unknown): string[] {
  const out: string[] = [];
  let cur: unknown = err;
  const seen = new Set<unknown>();
  while (cur !== undefined && cur !== null && !seen.has(cur)) {
    seen.add(cur);
    if (cur instanceof Error) {
      out.push(cur.message);
      cur = cur.cause;
    } else {
      out.push(String(cur));
      break;
    }
  }
  return out;
}
