/**
 * The NBD protocol's wire format (NetworkBlockDevice/nbd doc/proto.md):
 * "Fixed newstyle negotiation", "Option types", "Option reply types",
 * "Transmission phase" (request and simple/structured reply messages),
 * "Metadata querying" and the `base:allocation` context. Constant names are
 * the spec's. Everything is big-endian. No Node socket code lives here, so
 * server, client and tests share one codec.
 */

export const NBDMAGIC = 0x4e42444d41474943n; // "NBDMAGIC"
export const IHAVEOPT = 0x49484156454f5054n; // "IHAVEOPT"
export const REPLY_MAGIC = 0x3e889045565a9n; // option reply magic
export const NBD_REQUEST_MAGIC = 0x25609513;
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;
export const DEFAULT_PORT = 10809;

// handshake flags (server) and client flags
export const NBD_FLAG_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_NO_ZEROES = 1 << 1;
export const NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0;
export const NBD_FLAG_C_NO_ZEROES = 1 << 1;

// transmission flags
export const NBD_FLAG_HAS_FLAGS = 1 << 0;
export const NBD_FLAG_READ_ONLY = 1 << 1;
export const NBD_FLAG_SEND_FLUSH = 1 << 2;
export const NBD_FLAG_SEND_FUA = 1 << 3;
export const NBD_FLAG_ROTATIONAL = 1 << 4;
export const NBD_FLAG_SEND_TRIM = 1 << 5;
export const NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6;
export const NBD_FLAG_SEND_DF = 1 << 7;
export const NBD_FLAG_CAN_MULTI_CONN = 1 << 8;
export const NBD_FLAG_SEND_RESIZE = 1 << 9;
export const NBD_FLAG_SEND_CACHE = 1 << 10;
export const NBD_FLAG_SEND_FAST_ZERO = 1 << 11;

// options
export const NBD_OPT_EXPORT_NAME = 1;
export const NBD_OPT_ABORT = 2;
export const NBD_OPT_LIST = 3;
export const NBD_OPT_STARTTLS = 5;
export const NBD_OPT_INFO = 6;
export const NBD_OPT_GO = 7;
export const NBD_OPT_STRUCTURED_REPLY = 8;
export const NBD_OPT_LIST_META_CONTEXT = 9;
export const NBD_OPT_SET_META_CONTEXT = 10;
export const NBD_OPT_EXTENDED_HEADERS = 11;

// option replies
export const NBD_REP_ACK = 1;
export const NBD_REP_SERVER = 2;
export const NBD_REP_INFO = 3;
export const NBD_REP_META_CONTEXT = 4;
export const NBD_REP_FLAG_ERROR = 0x80000000;
export const NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR + 1;
export const NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR + 2;
export const NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR + 3;
export const NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR + 4;
export const NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR + 5;
export const NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR + 6;
export const NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR + 7;
export const NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR + 8;
export const NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR + 9;

// NBD_REP_INFO types
export const NBD_INFO_EXPORT = 0;
export const NBD_INFO_NAME = 1;
export const NBD_INFO_DESCRIPTION = 2;
export const NBD_INFO_BLOCK_SIZE = 3;

// commands
export const NBD_CMD_READ = 0;
export const NBD_CMD_WRITE = 1;
export const NBD_CMD_DISC = 2;
export const NBD_CMD_FLUSH = 3;
export const NBD_CMD_TRIM = 4;
export const NBD_CMD_CACHE = 5;
export const NBD_CMD_WRITE_ZEROES = 6;
export const NBD_CMD_BLOCK_STATUS = 7;
export const NBD_CMD_RESIZE = 8;

// command flags
export const NBD_CMD_FLAG_FUA = 1 << 0;
export const NBD_CMD_FLAG_NO_HOLE = 1 << 1;
export const NBD_CMD_FLAG_DF = 1 << 2;
export const NBD_CMD_FLAG_REQ_ONE = 1 << 3;
export const NBD_CMD_FLAG_FAST_ZERO = 1 << 4;
export const NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5;

// structured reply
export const NBD_REPLY_FLAG_DONE = 1 << 0;
export const NBD_REPLY_TYPE_NONE = 0;
export const NBD_REPLY_TYPE_OFFSET_DATA = 1;
export const NBD_REPLY_TYPE_OFFSET_HOLE = 2;
export const NBD_REPLY_TYPE_BLOCK_STATUS = 5;
export const NBD_REPLY_TYPE_ERROR = (1 << 15) + 1;
export const NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2;

// errors
export const NBD_EPERM = 1;
export const NBD_EIO = 5;
export const NBD_ENOMEM = 12;
export const NBD_EINVAL = 22;
export const NBD_ENOSPC = 28;
export const NBD_EOVERFLOW = 75;
export const NBD_ENOTSUP = 95;
export const NBD_ESHUTDOWN = 108;

// base:allocation
export const BASE_ALLOCATION = 'base:allocation';
export const NBD_STATE_HOLE = 1 << 0;
export const NBD_STATE_ZERO = 1 << 1;

export const REQUEST_HEADER_SIZE = 28;
export const SIMPLE_REPLY_HEADER_SIZE = 16;
export const STRUCTURED_REPLY_HEADER_SIZE = 20;
export const OPTION_HEADER_SIZE = 16;
export const OPTION_REPLY_HEADER_SIZE = 20;
/** NBD strings (export names, context names) are at most 4 KiB. */
export const NBD_MAX_STRING = 4096;
/** Largest READ/WRITE payload we send or accept (QEMU's NBD_MAX_BUFFER_SIZE). */
export const NBD_MAX_PAYLOAD = 32 * 1024 * 1024;

export const ERROR_NAMES: Record<number, string> = {
  [NBD_EPERM]: 'EPERM',
  [NBD_EIO]: 'EIO',
  [NBD_ENOMEM]: 'ENOMEM',
  [NBD_EINVAL]: 'EINVAL',
  [NBD_ENOSPC]: 'ENOSPC',
  [NBD_EOVERFLOW]: 'EOVERFLOW',
  [NBD_ENOTSUP]: 'ENOTSUP',
  [NBD_ESHUTDOWN]: 'ESHUTDOWN',
};

export const COMMAND_NAMES: Record<number, string> = {
  [NBD_CMD_READ]: 'READ',
  [NBD_CMD_WRITE]: 'WRITE',
  [NBD_CMD_DISC]: 'DISC',
  [NBD_CMD_FLUSH]: 'FLUSH',
  [NBD_CMD_TRIM]: 'TRIM',
  [NBD_CMD_CACHE]: 'CACHE',
  [NBD_CMD_WRITE_ZEROES]: 'WRITE_ZEROES',
  [NBD_CMD_BLOCK_STATUS]: 'BLOCK_STATUS',
  [NBD_CMD_RESIZE]: 'RESIZE',
};

export interface NbdRequest {
  flags: number;
  type: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/** Parses a 28-byte request header; undefined if the magic is wrong. Offsets past 2^53 become Infinity. */
export function parseRequest(b: Uint8Array): NbdRequest | undefined {
  const v = new DataView(b.buffer, b.byteOffset, REQUEST_HEADER_SIZE);
  if (v.getUint32(0) !== NBD_REQUEST_MAGIC) return undefined;
  const hi = v.getUint32(16);
  const lo = v.getUint32(20);
  return {
    flags: v.getUint16(4),
    type: v.getUint16(6),
    cookie: v.getBigUint64(8),
    offset: hi >= 0x200000 ? Infinity : hi * 0x100000000 + lo,
    length: v.getUint32(24),
  };
}

export function encodeRequest(r: NbdRequest): Buffer {
  const b = Buffer.allocUnsafe(REQUEST_HEADER_SIZE);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(r.flags, 4);
  b.writeUInt16BE(r.type, 6);
  b.writeBigUInt64BE(r.cookie, 8);
  b.writeUInt32BE(Math.floor(r.offset / 0x100000000), 16);
  b.writeUInt32BE(r.offset % 0x100000000, 20);
  b.writeUInt32BE(r.length, 24);
  return b;
}

export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(SIMPLE_REPLY_HEADER_SIZE);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

export function encodeStructuredHeader(flags: number, type: number, cookie: bigint, length: number): Buffer {
  const b = Buffer.allocUnsafe(STRUCTURED_REPLY_HEADER_SIZE);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

/** A structured NBD_REPLY_TYPE_ERROR chunk payload: error, message length, message. */
export function encodeErrorPayload(error: number, message: string): Buffer {
  const msg = Buffer.from(message, 'utf8').subarray(0, NBD_MAX_STRING);
  const b = Buffer.allocUnsafe(6 + msg.length);
  b.writeUInt32BE(error, 0);
  b.writeUInt16BE(msg.length, 4);
  msg.copy(b, 6);
  return b;
}

export function encodeOptionReply(option: number, type: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_REPLY_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(type, 12);
  b.writeUInt32BE(data.length, 16);
  b.set(data, OPTION_REPLY_HEADER_SIZE);
  return b;
}

export function encodeOption(option: number, data: Uint8Array = new Uint8Array(0)): Buffer {
  const b = Buffer.allocUnsafe(OPTION_HEADER_SIZE + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(data.length, 12);
  b.set(data, OPTION_HEADER_SIZE);
  return b;
}

/** u32 length + bytes */
export function lengthPrefixed(s: string): Buffer {
  const body = Buffer.from(s, 'utf8');
  const b = Buffer.allocUnsafe(4 + body.length);
  b.writeUInt32BE(body.length, 0);
  body.copy(b, 4);
  return b;
}

/** NBD_OPT_INFO / NBD_OPT_GO data: name, then the info types requested. */
export function encodeInfoRequest(name: string, infos: number[]): Buffer {
  const n = lengthPrefixed(name);
  const b = Buffer.allocUnsafe(n.length + 2 + infos.length * 2);
  n.copy(b, 0);
  b.writeUInt16BE(infos.length, n.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, n.length + 2 + i * 2));
  return b;
}

/** NBD_OPT_{LIST,SET}_META_CONTEXT data: export name, then the queries. */
export function encodeMetaContextRequest(name: string, queries: string[]): Buffer {
  const parts = [lengthPrefixed(name)];
  const count = Buffer.allocUnsafe(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count, ...queries.map(lengthPrefixed));
  return Buffer.concat(parts);
}

/** Thrown by the decoders below when a message is malformed. */
export class NbdProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NbdProtocolError';
  }
}

/** A bounds-checked reader over an option's data. */
export class FieldReader {
  private at = 0;
  constructor(private readonly b: Uint8Array) {}
  get remaining(): number {
    return this.b.length - this.at;
  }
  private need(n: number, what: string): void {
    if (this.at + n > this.b.length) throw new NbdProtocolError(`${what}: needs ${n} bytes, ${this.remaining} left`);
  }
  u16(what: string): number {
    this.need(2, what);
    const v = ((this.b[this.at] ?? 0) << 8) | (this.b[this.at + 1] ?? 0);
    this.at += 2;
    return v;
  }
  u32(what: string): number {
    this.need(4, what);
    const v = new DataView(this.b.buffer, this.b.byteOffset + this.at, 4).getUint32(0);
    this.at += 4;
    return v;
  }
  u64(what: string): number {
    this.need(8, what);
    const v = new DataView(this.b.buffer, this.b.byteOffset + this.at, 8).getBigUint64(0);
    this.at += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new NbdProtocolError(`${what}: ${v} is too large`);
    return Number(v);
  }
  bytes(n: number, what: string): Uint8Array {
    this.need(n, what);
    const v = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return v;
  }
  /** u32 length + UTF-8 string of at most NBD_MAX_STRING bytes */
  string(what: string): string {
    const n = this.u32(`${what} length`);
    if (n > NBD_MAX_STRING) throw new NbdProtocolError(`${what}: ${n} bytes is longer than ${NBD_MAX_STRING}`);
    return Buffer.from(this.bytes(n, what)).toString('utf8');
  }
}

/** Error code for an exception thrown by a BlockDevice (proto.md "Error values"). */
export function nbdErrorFor(e: unknown, isWrite: boolean): number {
  const name = e instanceof Error ? e.name : '';
  if (name === 'BlockReadOnlyError') return NBD_EPERM;
  if (name === 'BlockRangeError') return isWrite ? NBD_ENOSPC : NBD_EINVAL;
  if (name === 'BlockOptionError') return NBD_EINVAL;
  if (name === 'BlockUnsupportedError') return NBD_ENOTSUP;
  const cause = e instanceof Error ? (e.cause as { code?: unknown } | undefined) : undefined;
  const code = cause?.code ?? (e as { code?: unknown } | undefined)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') return NBD_ENOSPC;
  if (code === 'ENOMEM') return NBD_ENOMEM;
  return NBD_EIO;
}
