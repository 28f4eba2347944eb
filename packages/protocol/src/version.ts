/**
 * The protocol's semver version, exchanged in `initialize`.
 *
 * Policy (also stated in docs/protocol.md): an additive change — a new method,
 * notification, optional field or error code — bumps the minor version; a
 * method or field that is going away is first marked `deprecated` in the
 * schema (visible to programs in `tsvmm protocol schema`) for at least one
 * minor release, and is removed only with a major bump. A client that sees a
 * different major version must not assume anything beyond `initialize`.
 */
export const PROTOCOL_VERSION = '1.2.0';

/** The major version a server speaks; clients compare majors only. */
export function protocolMajor(version: string): number | undefined {
  const m = /^(\d+)\.\d+\.\d+(?:[-+].*)?$/.exec(version);
  return m === null ? undefined : Number(m[1]);
}
