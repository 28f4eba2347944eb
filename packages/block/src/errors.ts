/**
 * Typed errors of the block layer. Each names the file, the structure at
 * fault and what the user can do, because the person reading it is usually
 * holding an image made by another tool and needs to know whether it is the
 * image, the command or the host that is wrong.
 */

export class BlockError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The image's on-disk structures are invalid or unsupported. */
export class BlockFormatError extends BlockError {
  constructor(
    readonly filename: string,
    /** spec name of the structure at fault: "header", "L1 table", "refcount block", ... */
    readonly structure: string,
    readonly detail: string,
    /** what to do next, e.g. "repair with `tsvmm img check -r all`" */
    readonly hint?: string,
  ) {
    super(`${filename}: ${structure}: ${detail}${hint ? `; ${hint}` : ''}`);
  }
}

/** A request addresses bytes outside the virtual disk. */
export class BlockRangeError extends BlockError {
  constructor(
    readonly filename: string,
    readonly offset: number,
    readonly length: number,
    readonly size: number,
  ) {
    super(
      `${filename}: request [${offset}, +${length}) is outside the virtual disk of ${size} bytes`,
    );
  }
}

/** A write was attempted on an image that is open read-only (or became so). */
export class BlockReadOnlyError extends BlockError {
  constructor(
    readonly filename: string,
    readonly reason: string,
  ) {
    super(`${filename}: image is read-only: ${reason}`);
  }
}

/** A host I/O call failed. */
export class BlockIOError extends BlockError {
  constructor(
    readonly filename: string,
    readonly operation: string,
    cause: unknown,
  ) {
    const why = cause instanceof Error ? cause.message : String(cause);
    super(`${filename}: ${operation} failed: ${why}`, { cause });
  }
}

/** An option (from -o, a drive's key=value list, or a CLI flag) is invalid. */
export class BlockOptionError extends BlockError {
  constructor(
    readonly option: string,
    readonly detail: string,
  ) {
    super(`invalid option '${option}': ${detail}`);
  }
}

/** The driver does not implement an operation for this image. */
export class BlockUnsupportedError extends BlockError {
  constructor(
    readonly filename: string,
    readonly operation: string,
    readonly reason: string,
  ) {
    super(`${filename}: ${operation} is not supported: ${reason}`);
  }
}
