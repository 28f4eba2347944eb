/**
 * Migration errors. Every one carries the context a user needs (which
 * section, which byte offset of the stream, which device) and, where there is
 * one, what to do next; `code` is E_MIGRATION so the RPC layer maps it.
 * Errors of the stream codec itself live in stream/stream-error.ts, which the
 * migration thread can load without @tsvmm/core.
 */
import { TsvmmError } from '@tsvmm/core';

export class MigrationError extends TsvmmError {
  constructor(message: string, options?: { hint?: string; cause?: unknown }) {
    super('E_MIGRATION', message, options);
  }
}

/** The destination cannot take this VM (machine type, RAM, CPUs, device set or state versions differ). */
export class MigrationConfigError extends MigrationError {
  readonly problems: string[];
  constructor(problems: string[], side: 'source' | 'destination' = 'destination') {
    super(
      `the ${side === 'destination' ? 'destination refused the VM' : 'stream does not fit this VM'}: ${problems.join('; ')}`,
      { hint: 'start the destination with the same machine description (machine type, memory, smp, cpu, devices) and a tsvmm whose plugins load these state versions' },
    );
    this.problems = problems;
  }
}

/** The migration was cancelled (migration/cancel, $/cancelRequest). */
export class MigrationCancelledError extends MigrationError {
  constructor(message = 'the migration was cancelled') {
    super(message);
  }
}

export { MigrationStreamError, XbzrleDecodeError } from './stream/stream-error.js';
