/**
 * Errors of the stream codec. Kept free of @tsvmm/core so the migration
 * thread (a worker) loads in tens of milliseconds rather than hundreds: the
 * main thread wraps what a worker reports in a MigrationError (errors.ts).
 */

/** The stream is malformed, truncated, corrupted or of a version this tsvmm cannot read. */
export class MigrationStreamError extends Error {
  readonly code = 'E_MIGRATION';
  /** byte offset in the stream where the problem was found */
  readonly offset: number;
  readonly hint: string | undefined;
  constructor(message: string, offset: number, options?: { hint?: string; cause?: unknown }) {
    super(`migration stream, byte ${offset}: ${message}${options?.hint !== undefined ? ` (${options.hint})` : ''}`, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MigrationStreamError';
    this.offset = offset;
    this.hint = options?.hint;
  }
}

/** XBZRLE data that does not decode (docs/xbzrle.txt grammar). */
export class XbzrleDecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'XbzrleDecodeError';
  }
}
