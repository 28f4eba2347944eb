/**
 * An NBD client connection (NetworkBlockDevice/nbd doc/proto.md): fixed
 * newstyle handshake, structured replies and the `base:allocation` meta
 * context when the server offers them, NBD_OPT_GO (falling back to
 * NBD_OPT_EXPORT_NAME for old servers), then pipelined requests matched to
 * replies by cookie.
 *
 * Everything the server sends is checked: a reply for an unknown cookie, a
 * chunk outside its request, or an oversized frame ends the connection and
 * fails every pending request, rather than corrupting a caller's buffer.
 */
import net, { type Socket } from 'node:net';
import {
  BASE_ALLOCATION,
  DEFAULT_PORT,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequest,
  ERROR_NAMES,
  FieldReader,
  IHAVEOPT,
  NBDMAGIC,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_MAX_PAYLOAD,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REP_ACK,
  NBD_REP_ERR_UNSUP,
  NBD_REP_FLAG_ERROR,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  OPTION_REPLY_HEADER_SIZE,
  REPLY_MAGIC,
  NbdProtocolError,
} from './protocol.js';
import { SocketReader } from './socket-reader.js';

export type NbdTarget = { host: string; port: number } | { socket: string };

export interface NbdUrl {
  target: NbdTarget;
  exportName: string;
}

/** nbd://host[:port]/export, nbd+tcp://..., nbd+unix:///export?socket=PATH (QEMU's URI forms). */
export function parseNbdUrl(url: string): NbdUrl {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new NbdProtocolError(`'${url}' is not an NBD URL (nbd://host:port/export or nbd+unix:///export?socket=PATH)`);
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (u.protocol === 'nbd:' || u.protocol === 'nbd+tcp:') {
    if (u.hostname === '') throw new NbdProtocolError(`'${url}' names no host`);
    const port = u.port === '' ? DEFAULT_PORT : Number(u.port);
    // IPv6 literals come bracketed from URL
    return { target: { host: u.hostname.replace(/^\[|\]$/g, ''), port }, exportName };
  }
  if (u.protocol === 'nbd+unix:') {
    const socket = u.searchParams.get('socket');
    if (socket === null || socket === '') throw new NbdProtocolError(`'${url}' needs ?socket=PATH`);
    return { target: { socket }, exportName };
  }
  throw new NbdProtocolError(`'${url}': unsupported scheme '${u.protocol}' (nbd, nbd+tcp, nbd+unix)`);
}

/** A request the server refused (the errno is the NBD error value). */
export class NbdError extends Error {
  constructor(
    readonly errno: number,
    readonly serverMessage: string,
    command: string,
  ) {
    super(`NBD ${command} failed: ${ERROR_NAMES[errno] ?? `error ${errno}`}${serverMessage ? ` (${serverMessage})` : ''}`);
    this.name = 'NbdError';
  }
  /** Node-style code so callers can map it like an errno */
  get code(): string {
    return ERROR_NAMES[this.errno] ?? 'EIO';
  }
}

export interface NbdExportInfo {
  size: number;
  flags: number;
  minBlock: number;
  preferredBlock: number;
  maxBlock: number;
  structured: boolean;
  /** context id for base:allocation, if negotiated */
  allocationContext: number | undefined;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  buf?: Uint8Array;
  error?: NbdError;
  status?: Array<{ length: number; flags: number }>;
  resolve: () => void;
  reject: (e: Error) => void;
}

export class NbdClient {
  private nextCookie = 1n;
  private readonly pending = new Map<bigint, Pending>();
  private readonly outstanding = new Set<Promise<unknown>>();
  private dead: Error | undefined;

  private constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    readonly info: NbdExportInfo,
    /** where the server is, for messages */
    readonly where: string,
  ) {
    void this.replyLoop();
  }

  static async connect(url: string | NbdUrl, opts: { connectTimeoutMs?: number } = {}): Promise<NbdClient> {
    const u = typeof url === 'string' ? parseNbdUrl(url) : url;
    const where = 'socket' in u.target ? `unix:${u.target.socket}` : `${u.target.host}:${u.target.port}`;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = 'socket' in u.target ? net.createConnection(u.target.socket) : net.createConnection(u.target.port, u.target.host);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new NbdProtocolError(`connecting to ${where} timed out`));
      }, opts.connectTimeoutMs ?? 10_000);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(new NbdProtocolError(`cannot connect to NBD server ${where}: ${e.message}`));
      });
    });
    socket.setNoDelay(true);
    const reader = new SocketReader(socket);
    try {
      const info = await handshake(socket, reader, u.exportName);
      return new NbdClient(socket, reader, info, where);
    } catch (e) {
      socket.destroy();
      throw e instanceof NbdProtocolError ? new NbdProtocolError(`${where}: ${e.message}`) : e;
    }
  }

  get size(): number {
    return this.info.size;
  }

  private request(type: number, flags: number, offset: number, length: number, payload?: Uint8Array, buf?: Uint8Array): Promise<Pending> {
    if (this.dead !== undefined) return Promise.reject(this.dead);
    const cookie = this.nextCookie++;
    const done = new Promise<Pending>((resolve, reject) => {
      const p: Pending = { type, offset, length, buf, resolve: () => resolve(p), reject };
      this.pending.set(cookie, p);
      this.socket.cork();
      this.socket.write(encodeRequest({ flags, type, cookie, offset, length }));
      if (payload !== undefined) this.socket.write(payload);
      this.socket.uncork();
    });
    this.outstanding.add(done);
    const forget = (): void => void this.outstanding.delete(done);
    done.then(forget, forget);
    return done;
  }

  private static check(p: Pending, command: string): void {
    if (p.error !== undefined) throw new NbdError(p.error.errno, p.error.serverMessage, command);
  }

  async read(offset: number, buf: Uint8Array): Promise<void> {
    const p = await this.request(NBD_CMD_READ, 0, offset, buf.length, undefined, buf);
    NbdClient.check(p, 'READ');
  }

  async write(offset: number, data: Uint8Array, fua = false): Promise<void> {
    const p = await this.request(NBD_CMD_WRITE, fua ? NBD_CMD_FLAG_FUA : 0, offset, data.length, data);
    NbdClient.check(p, 'WRITE');
  }

  async flush(): Promise<void> {
    NbdClient.check(await this.request(NBD_CMD_FLUSH, 0, 0, 0), 'FLUSH');
  }

  async trim(offset: number, length: number): Promise<void> {
    NbdClient.check(await this.request(NBD_CMD_TRIM, 0, offset, length), 'TRIM');
  }

  async writeZeroes(offset: number, length: number, opts: { noHole?: boolean; fua?: boolean } = {}): Promise<void> {
    const flags = (opts.noHole ? NBD_CMD_FLAG_NO_HOLE : 0) | (opts.fua ? NBD_CMD_FLAG_FUA : 0);
    NbdClient.check(await this.request(NBD_CMD_WRITE_ZEROES, flags, offset, length), 'WRITE_ZEROES');
  }

  async blockStatus(offset: number, length: number, reqOne = true): Promise<Array<{ length: number; flags: number }>> {
    const p = await this.request(NBD_CMD_BLOCK_STATUS, reqOne ? NBD_CMD_FLAG_REQ_ONE : 0, offset, length);
    NbdClient.check(p, 'BLOCK_STATUS');
    return p.status ?? [];
  }

  /** Sends NBD_CMD_DISC after outstanding requests and closes. */
  async disconnect(): Promise<void> {
    if (this.dead === undefined) {
      await Promise.allSettled([...this.outstanding]);
      if (!this.socket.destroyed) this.socket.write(encodeRequest({ flags: 0, type: NBD_CMD_DISC, cookie: this.nextCookie++, offset: 0, length: 0 }));
      this.dead = new NbdProtocolError('disconnected');
      await new Promise<void>((r) => this.socket.end(r));
    }
    this.socket.destroy();
  }

  private fail(e: Error): void {
    this.dead ??= e;
    for (const p of this.pending.values()) p.reject(this.dead);
    this.pending.clear();
    this.socket.destroy();
  }

  private take(cookie: bigint): Pending {
    const p = this.pending.get(cookie);
    if (p === undefined) throw new NbdProtocolError(`server replied to unknown cookie ${cookie}`);
    return p;
  }

  private async replyLoop(): Promise<void> {
    try {
      for (;;) {
        const magic = (await this.reader.read(4)).readUInt32BE(0);
        if (magic === NBD_SIMPLE_REPLY_MAGIC) {
          const h = await this.reader.read(12);
          const error = h.readUInt32BE(0);
          const cookie = h.readBigUInt64BE(4);
          const p = this.take(cookie);
          if (error !== 0) p.error = new NbdError(error, '', '');
          else if (p.type === NBD_CMD_READ && p.buf !== undefined) {
            const data = await this.reader.read(p.length);
            p.buf.set(data);
          }
          this.pending.delete(cookie);
          p.resolve();
        } else if (magic === NBD_STRUCTURED_REPLY_MAGIC) {
          const h = await this.reader.read(16);
          const flags = h.readUInt16BE(0);
          const type = h.readUInt16BE(2);
          const cookie = h.readBigUInt64BE(4);
          const length = h.readUInt32BE(12);
          if (length > NBD_MAX_PAYLOAD + 64 * 1024) throw new NbdProtocolError(`reply chunk of ${length} bytes`);
          const payload = await this.reader.read(length);
          const p = this.take(cookie);
          this.chunk(p, type, payload);
          if ((flags & NBD_REPLY_FLAG_DONE) !== 0) {
            this.pending.delete(cookie);
            p.resolve();
          }
        } else {
          throw new NbdProtocolError(`reply with unknown magic 0x${magic.toString(16)}`);
        }
      }
    } catch (e) {
      this.fail(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private chunk(p: Pending, type: number, payload: Buffer): void {
    const r = new FieldReader(payload);
    switch (type) {
      case NBD_REPLY_TYPE_NONE:
        return;
      case NBD_REPLY_TYPE_OFFSET_DATA: {
        const off = r.u64('chunk offset');
        const data = r.bytes(r.remaining, 'chunk data');
        if (p.type !== NBD_CMD_READ || p.buf === undefined || off < p.offset || off + data.length > p.offset + p.length) {
          throw new NbdProtocolError(`data chunk [${off}, +${data.length}) outside request [${p.offset}, +${p.length})`);
        }
        p.buf.set(data, off - p.offset);
        return;
      }
      case NBD_REPLY_TYPE_OFFSET_HOLE: {
        const off = r.u64('hole offset');
        const size = r.u32('hole size');
        if (p.type !== NBD_CMD_READ || p.buf === undefined || off < p.offset || off + size > p.offset + p.length) {
          throw new NbdProtocolError(`hole chunk [${off}, +${size}) outside request [${p.offset}, +${p.length})`);
        }
        p.buf.fill(0, off - p.offset, off - p.offset + size);
        return;
      }
      case NBD_REPLY_TYPE_BLOCK_STATUS: {
        r.u32('context id');
        const out: Array<{ length: number; flags: number }> = [];
        while (r.remaining >= 8) out.push({ length: r.u32('extent length'), flags: r.u32('extent flags') });
        p.status = out;
        return;
      }
      case NBD_REPLY_TYPE_ERROR:
      case NBD_REPLY_TYPE_ERROR_OFFSET: {
        const errno = r.u32('error');
        const n = r.u16('message length');
        const msg = Buffer.from(r.bytes(n, 'message')).toString('utf8');
        p.error ??= new NbdError(errno === 0 ? 5 : errno, msg, '');
        return;
      }
      default:
        // unknown chunk types with the error bit are errors; others are ignored per spec
        if ((type & (1 << 15)) !== 0) p.error ??= new NbdError(5, `unknown error chunk ${type}`, '');
    }
  }
}

async function readOptionReply(reader: SocketReader): Promise<{ option: number; type: number; data: Buffer }> {
  const h = await reader.read(OPTION_REPLY_HEADER_SIZE);
  if (h.readBigUInt64BE(0) !== REPLY_MAGIC) throw new NbdProtocolError('option reply without the reply magic');
  const length = h.readUInt32BE(16);
  if (length > 1024 * 1024) throw new NbdProtocolError(`option reply of ${length} bytes`);
  return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: await reader.read(length) };
}

async function handshake(socket: Socket, reader: SocketReader, exportName: string): Promise<NbdExportInfo> {
  const hello = await reader.read(18);
  if (hello.readBigUInt64BE(0) !== NBDMAGIC) throw new NbdProtocolError('not an NBD server (no NBDMAGIC)');
  if (hello.readBigUInt64BE(8) !== IHAVEOPT) throw new NbdProtocolError('server speaks the old-style handshake, which is not supported');
  const serverFlags = hello.readUInt16BE(16);
  if ((serverFlags & NBD_FLAG_FIXED_NEWSTYLE) === 0) throw new NbdProtocolError('server does not support fixed newstyle negotiation');
  const noZeroes = (serverFlags & NBD_FLAG_NO_ZEROES) !== 0;
  const cf = Buffer.allocUnsafe(4);
  cf.writeUInt32BE(NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0), 0);
  socket.write(cf);

  socket.write(encodeOption(NBD_OPT_STRUCTURED_REPLY));
  const sr = await readOptionReply(reader);
  const structured = sr.type === NBD_REP_ACK;
  if (!structured && (sr.type & NBD_REP_FLAG_ERROR) === 0) throw new NbdProtocolError(`unexpected reply ${sr.type} to NBD_OPT_STRUCTURED_REPLY`);

  let allocationContext: number | undefined;
  if (structured) {
    socket.write(encodeOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest(exportName, [BASE_ALLOCATION])));
    for (;;) {
      const r = await readOptionReply(reader);
      if (r.type === NBD_REP_META_CONTEXT) {
        const f = new FieldReader(r.data);
        const id = f.u32('context id');
        if (Buffer.from(f.bytes(f.remaining, 'context name')).toString('utf8') === BASE_ALLOCATION) allocationContext = id;
      } else break; // ACK, or an error: no block status then
    }
  }

  const info: NbdExportInfo = {
    size: -1,
    flags: 0,
    minBlock: 1,
    preferredBlock: 4096,
    maxBlock: NBD_MAX_PAYLOAD,
    structured,
    allocationContext,
  };
  socket.write(encodeOption(NBD_OPT_GO, encodeInfoRequest(exportName, [NBD_INFO_BLOCK_SIZE])));
  for (;;) {
    const r = await readOptionReply(reader);
    if (r.type === NBD_REP_INFO) {
      const f = new FieldReader(r.data);
      const t = f.u16('info type');
      if (t === NBD_INFO_EXPORT) {
        info.size = f.u64('export size');
        info.flags = f.u16('transmission flags');
      } else if (t === NBD_INFO_BLOCK_SIZE) {
        info.minBlock = f.u32('minimum block size');
        info.preferredBlock = f.u32('preferred block size');
        info.maxBlock = Math.min(f.u32('maximum block size'), NBD_MAX_PAYLOAD);
      }
      continue;
    }
    if (r.type === NBD_REP_ACK) break;
    if (r.type === NBD_REP_ERR_UNSUP) {
      // an old server: NBD_OPT_EXPORT_NAME, which has no error reply
      socket.write(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from(exportName, 'utf8')));
      const b = await reader.read(10);
      info.size = Number(b.readBigUInt64BE(0));
      info.flags = b.readUInt16BE(8);
      if (!noZeroes) await reader.skip(124);
      break;
    }
    const why = r.data.toString('utf8');
    throw new NbdProtocolError(`server refused export '${exportName}' (reply 0x${r.type.toString(16)})${why ? `: ${why}` : ''}`);
  }
  if (!(info.size >= 0)) throw new NbdProtocolError('server sent no export size');
  if (info.maxBlock < 1) info.maxBlock = NBD_MAX_PAYLOAD;
  return info;
}
