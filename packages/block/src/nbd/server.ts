/**
 * An NBD server exporting BlockDevices (NetworkBlockDevice/nbd doc/proto.md):
 * fixed newstyle handshake only; options EXPORT_NAME, ABORT, LIST, INFO, GO,
 * STRUCTURED_REPLY, LIST_META_CONTEXT and SET_META_CONTEXT (`base:allocation`);
 * commands READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS and DISC.
 *
 * Requests are pipelined: the reader parses the next request while earlier
 * ones run, and replies go out as they complete (matched by cookie), each as
 * one corked write of header + data. In-flight requests and unsent reply
 * bytes are bounded, so a client that never reads cannot exhaust memory.
 *
 * Hostile input never throws out of a connection: a bad magic or an
 * impossible frame ends that connection; an invalid but well-framed request
 * gets an error reply (EINVAL, EPERM, ENOSPC...) and the connection goes on.
 */
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import { unlink } from 'node:fs/promises';
import type { BlockDevice } from '../driver.js';
import {
  BASE_ALLOCATION,
  COMMAND_NAMES,
  encodeErrorPayload,
  encodeOptionReply,
  encodeSimpleReply,
  encodeStructuredHeader,
  FieldReader,
  IHAVEOPT,
  NBDMAGIC,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAX_PAYLOAD,
  NBD_MAX_STRING,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  nbdErrorFor,
  NbdProtocolError,
  parseRequest,
  REQUEST_HEADER_SIZE,
  OPTION_HEADER_SIZE,
  type NbdRequest,
} from './protocol.js';
import { SocketClosedError, SocketReader } from './socket-reader.js';

export interface NbdExport {
  /** export name clients ask for ("" is the default export) */
  name: string;
  description?: string;
  device: BlockDevice;
  /** refuse writes with EPERM even if the device is writable */
  readOnly?: boolean;
}

export interface NbdServeOptions {
  exports: NbdExport[];
  /** TCP port (0 = any free port); ignored with `socket` */
  port?: number;
  /** TCP address to bind (default: all interfaces, like qemu-nbd) */
  bind?: string;
  /** unix socket path instead of TCP */
  socket?: string;
  /** most concurrent clients (qemu-nbd --shared); default 16 */
  maxConnections?: number;
  /** a client that has not finished the handshake after this long is dropped */
  handshakeTimeoutMs?: number;
  log?: (message: string) => void;
}

/** Option data larger than this is refused (the longest valid option is a few strings of 4 KiB). */
const MAX_OPTION_DATA = 64 * 1024;
const MAX_IN_FLIGHT = 64;
/** Reply bytes queued in the socket before we stop starting new requests. */
const MAX_UNSENT = 64 * 1024 * 1024;
/** BLOCK_STATUS answers at most this many extents per request. */
const MAX_STATUS_DESCRIPTORS = 1024;
const META_CONTEXT_ID = 1;
const MIN_BLOCK = 1;
const PREFERRED_BLOCK = 4096;

const FLAGS_ALLOWED: Record<number, number> = {
  [NBD_CMD_READ]: NBD_CMD_FLAG_DF,
  [NBD_CMD_WRITE]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_FLUSH]: 0,
  [NBD_CMD_TRIM]: NBD_CMD_FLAG_FUA,
  [NBD_CMD_WRITE_ZEROES]: NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE,
  [NBD_CMD_BLOCK_STATUS]: NBD_CMD_FLAG_REQ_ONE,
  [NBD_CMD_DISC]: 0,
};

/**
 * Reply buffers for READ, reused once the socket has taken them: sequential
 * readers ask for the same size over and over, and allocating a fresh
 * multi-kilobyte buffer per request is mostly garbage-collector work.
 */
class ReplyBufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private static readonly MIN = 16 * 1024;
  private static readonly PER_SIZE = 32;

  get(size: number): Buffer {
    return this.free.get(size)?.pop() ?? Buffer.allocUnsafeSlow(size);
  }

  put(b: Buffer): void {
    if (b.length < ReplyBufferPool.MIN) return;
    let list = this.free.get(b.length);
    if (list === undefined) {
      // keep a few sizes only: a client cycling through sizes must not pin memory
      if (this.free.size >= 8) this.free.clear();
      list = [];
      this.free.set(b.length, list);
    }
    if (list.length < ReplyBufferPool.PER_SIZE) list.push(b);
  }
}

class RequestError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

/** One client connection: handshake, then transmission until DISC or EOF. */
export class NbdConnection {
  private readonly reader: SocketReader;
  private noZeroes = false;
  private structured = false;
  private metaContexts: { exportName: string; ids: number[] } | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly buffers = new ReplyBufferPool();
  private closing = false;

  constructor(
    private readonly socket: Socket,
    private readonly exports: NbdExport[],
    private readonly opts: { handshakeTimeoutMs?: number; log?: (m: string) => void } = {},
  ) {
    this.reader = new SocketReader(socket);
    socket.setNoDelay(true);
  }

  private log(m: string): void {
    this.opts.log?.(m);
  }

  /** Serves the connection; resolves when it is over (never rejects). */
  async run(): Promise<void> {
    const timer = setTimeout(() => {
      this.log('nbd: handshake timed out; dropping the client');
      this.socket.destroy();
    }, this.opts.handshakeTimeoutMs ?? 30_000);
    try {
      const exp = await this.handshake();
      clearTimeout(timer);
      if (exp !== undefined) await this.transmission(exp);
    } catch (e) {
      if (!(e instanceof SocketClosedError)) this.log(`nbd: closing connection: ${e instanceof Error ? e.message : String(e)}`);
    } finally {
      clearTimeout(timer);
      await Promise.allSettled([...this.inFlight]);
      this.socket.destroy();
    }
  }

  /** Writes the parts as one corked writev; `recycle` goes back to the pool once written. */
  private send(...parts: Uint8Array[]): void {
    this.sendRecycling(undefined, ...parts);
  }

  private sendRecycling(recycle: Buffer | undefined, ...parts: Uint8Array[]): void {
    if (this.socket.destroyed) return;
    this.socket.cork();
    const last = parts.length - 1;
    parts.forEach((p, i) => {
      if (i === last && recycle !== undefined) this.socket.write(p, () => this.buffers.put(recycle));
      else this.socket.write(p);
    });
    this.socket.uncork();
  }

  // ---- handshake ---------------------------------------------------------------

  private findExport(name: string): NbdExport | undefined {
    const exact = this.exports.find((e) => e.name === name);
    if (exact !== undefined) return exact;
    // "" names the default export; with a single export, that is it
    return name === '' && this.exports.length === 1 ? this.exports[0] : undefined;
  }

  private transmissionFlags(exp: NbdExport): number {
    const ro = exp.readOnly === true || exp.device.readOnly;
    let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_CAN_MULTI_CONN;
    if (ro) flags |= NBD_FLAG_READ_ONLY;
    else flags |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    if (this.structured) flags |= NBD_FLAG_SEND_DF;
    return flags;
  }

  private reply(option: number, type: number, data?: Uint8Array): void {
    this.send(encodeOptionReply(option, type, data));
  }

  private replyError(option: number, type: number, message: string): void {
    this.reply(option, type, Buffer.from(message, 'utf8').subarray(0, NBD_MAX_STRING));
  }

  /** Returns the export to serve, or undefined when the client aborted. */
  private async handshake(): Promise<NbdExport | undefined> {
    const hello = Buffer.allocUnsafe(18);
    hello.writeBigUInt64BE(NBDMAGIC, 0);
    hello.writeBigUInt64BE(IHAVEOPT, 8);
    hello.writeUInt16BE(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, 16);
    this.send(hello);
    const clientFlags = (await this.reader.read(4)).readUInt32BE(0);
    if ((clientFlags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) !== 0) {
      throw new NbdProtocolError(`client flags 0x${clientFlags.toString(16)} include bits this server does not know`);
    }
    this.noZeroes = (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0;
    for (;;) {
      const h = await this.reader.read(OPTION_HEADER_SIZE);
      if (h.readBigUInt64BE(0) !== IHAVEOPT) throw new NbdProtocolError('option without the IHAVEOPT magic');
      const option = h.readUInt32BE(8);
      const length = h.readUInt32BE(12);
      if (length > MAX_OPTION_DATA) {
        if (option === NBD_OPT_EXPORT_NAME) throw new NbdProtocolError(`NBD_OPT_EXPORT_NAME of ${length} bytes`);
        await this.reader.skip(length);
        this.replyError(option, NBD_REP_ERR_TOO_BIG, `option data of ${length} bytes is larger than ${MAX_OPTION_DATA}`);
        continue;
      }
      const data = await this.reader.read(length);
      const exp = this.option(option, data);
      if (exp === 'abort') return undefined;
      if (exp !== undefined) return exp;
    }
  }

  /** Handles one option; an export means "start transmission with it". */
  private option(option: number, data: Buffer): NbdExport | 'abort' | undefined {
    switch (option) {
      case NBD_OPT_EXPORT_NAME: {
        const exp = this.findExport(data.toString('utf8'));
        // this option has no error reply: an unknown name ends the connection
        if (exp === undefined) throw new NbdProtocolError(`client asked for unknown export '${data.toString('utf8')}'`);
        const b = Buffer.alloc(this.noZeroes ? 10 : 134);
        b.writeBigUInt64BE(BigInt(exp.device.size), 0);
        b.writeUInt16BE(this.transmissionFlags(exp), 8);
        this.send(b);
        return exp;
      }
      case NBD_OPT_ABORT:
        this.reply(option, NBD_REP_ACK);
        return 'abort';
      case NBD_OPT_LIST:
        if (data.length !== 0) {
          this.replyError(option, NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
          return undefined;
        }
        for (const e of this.exports) {
          const name = Buffer.from(e.name, 'utf8');
          const d = Buffer.allocUnsafe(4 + name.length);
          d.writeUInt32BE(name.length, 0);
          name.copy(d, 4);
          this.reply(option, NBD_REP_SERVER, d);
        }
        this.reply(option, NBD_REP_ACK);
        return undefined;
      case NBD_OPT_STRUCTURED_REPLY:
        if (data.length !== 0) {
          this.replyError(option, NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
          return undefined;
        }
        this.structured = true;
        this.reply(option, NBD_REP_ACK);
        return undefined;
      case NBD_OPT_INFO:
      case NBD_OPT_GO:
        return this.infoOrGo(option, data);
      case NBD_OPT_LIST_META_CONTEXT:
      case NBD_OPT_SET_META_CONTEXT:
        this.metaContext(option, data);
        return undefined;
      default:
        this.replyError(option, NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
        return undefined;
    }
  }

  private infoOrGo(option: number, data: Buffer): NbdExport | undefined {
    let name: string;
    const infos: number[] = [];
    try {
      const r = new FieldReader(data);
      name = r.string('export name');
      const n = r.u16('information request count');
      for (let i = 0; i < n; i++) infos.push(r.u16('information request'));
      if (r.remaining !== 0) throw new NbdProtocolError(`${r.remaining} bytes after the information requests`);
    } catch (e) {
      this.replyError(option, NBD_REP_ERR_INVALID, e instanceof Error ? e.message : 'malformed');
      return undefined;
    }
    const exp = this.findExport(name);
    if (exp === undefined) {
      this.replyError(option, NBD_REP_ERR_UNKNOWN, `no export named '${name}'`);
      return undefined;
    }
    const ex = Buffer.allocUnsafe(12);
    ex.writeUInt16BE(NBD_INFO_EXPORT, 0);
    ex.writeBigUInt64BE(BigInt(exp.device.size), 2);
    ex.writeUInt16BE(this.transmissionFlags(exp), 10);
    this.reply(option, NBD_REP_INFO, ex);
    if (infos.includes(NBD_INFO_NAME)) {
      const nm = Buffer.from(exp.name, 'utf8');
      this.reply(option, NBD_REP_INFO, Buffer.concat([u16(NBD_INFO_NAME), nm]));
    }
    if (infos.includes(NBD_INFO_DESCRIPTION) && exp.description !== undefined) {
      this.reply(option, NBD_REP_INFO, Buffer.concat([u16(NBD_INFO_DESCRIPTION), Buffer.from(exp.description, 'utf8')]));
    }
    const bs = Buffer.allocUnsafe(14);
    bs.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
    bs.writeUInt32BE(MIN_BLOCK, 2);
    bs.writeUInt32BE(Math.max(PREFERRED_BLOCK, exp.device.alignment), 6);
    bs.writeUInt32BE(NBD_MAX_PAYLOAD, 10);
    this.reply(option, NBD_REP_INFO, bs);
    this.reply(option, NBD_REP_ACK);
    if (option !== NBD_OPT_GO) return undefined;
    // contexts chosen for another export do not apply to this one
    if (this.metaContexts !== undefined && this.metaContexts.exportName !== name) this.metaContexts = undefined;
    return exp;
  }

  private metaContext(option: number, data: Buffer): void {
    let name: string;
    const queries: string[] = [];
    try {
      const r = new FieldReader(data);
      name = r.string('export name');
      const n = r.u32('query count');
      for (let i = 0; i < n; i++) queries.push(r.string('query'));
      if (r.remaining !== 0) throw new NbdProtocolError(`${r.remaining} bytes after the queries`);
    } catch (e) {
      this.replyError(option, NBD_REP_ERR_INVALID, e instanceof Error ? e.message : 'malformed');
      return;
    }
    if (option === NBD_OPT_SET_META_CONTEXT && !this.structured) {
      this.replyError(option, NBD_REP_ERR_INVALID, 'NBD_OPT_SET_META_CONTEXT needs structured replies first');
      return;
    }
    if (this.findExport(name) === undefined) {
      this.replyError(option, NBD_REP_ERR_UNKNOWN, `no export named '${name}'`);
      return;
    }
    const matches =
      (option === NBD_OPT_LIST_META_CONTEXT && queries.length === 0) ||
      queries.some((q) => q === BASE_ALLOCATION || q === 'base:');
    if (matches) {
      const nm = Buffer.from(BASE_ALLOCATION, 'utf8');
      const d = Buffer.allocUnsafe(4 + nm.length);
      d.writeUInt32BE(META_CONTEXT_ID, 0);
      nm.copy(d, 4);
      this.reply(option, NBD_REP_META_CONTEXT, d);
    }
    if (option === NBD_OPT_SET_META_CONTEXT) this.metaContexts = { exportName: name, ids: matches ? [META_CONTEXT_ID] : [] };
    this.reply(option, NBD_REP_ACK);
  }

  // ---- transmission -------------------------------------------------------------

  private async gate(): Promise<void> {
    while (this.inFlight.size >= MAX_IN_FLIGHT) await Promise.race(this.inFlight);
    while (this.socket.writableLength > MAX_UNSENT && !this.socket.destroyed) {
      await new Promise<void>((r) => {
        this.socket.once('drain', r);
        this.socket.once('close', r);
      });
    }
  }

  private async transmission(exp: NbdExport): Promise<void> {
    for (;;) {
      await this.gate();
      const hdr = await this.reader.read(REQUEST_HEADER_SIZE);
      const req = parseRequest(hdr);
      if (req === undefined) throw new NbdProtocolError('request without the NBD_REQUEST_MAGIC magic; cannot resynchronise');
      let payload: Buffer | undefined;
      if (req.type === NBD_CMD_WRITE) {
        if (req.length > NBD_MAX_PAYLOAD) {
          // Consume the payload without keeping it, so the stream stays in sync.
          await this.reader.skip(req.length);
          this.replyFor(req, NBD_EINVAL, `write of ${req.length} bytes is larger than the ${NBD_MAX_PAYLOAD}-byte maximum`);
          continue;
        }
        payload = await this.reader.read(req.length);
      }
      if (req.type === NBD_CMD_DISC) {
        this.closing = true;
        await Promise.allSettled([...this.inFlight]);
        // The client is leaving and gets no reply; a flush that fails is still worth a line in the log.
        await exp.device.flush().catch((e: unknown) => this.log(`nbd: flush on disconnect failed: ${e instanceof Error ? e.message : String(e)}`));
        return;
      }
      const p = this.handle(exp, req, payload).finally(() => this.inFlight.delete(p));
      this.inFlight.add(p);
    }
  }

  private async handle(exp: NbdExport, req: NbdRequest, payload: Buffer | undefined): Promise<void> {
    try {
      await this.execute(exp, req, payload);
    } catch (e) {
      if (e instanceof RequestError) {
        this.replyFor(req, e.code, e.message);
        return;
      }
      const isWrite = req.type === NBD_CMD_WRITE || req.type === NBD_CMD_WRITE_ZEROES || req.type === NBD_CMD_TRIM;
      const code = nbdErrorFor(e, isWrite);
      const msg = e instanceof Error ? e.message : String(e);
      this.log(`nbd: ${COMMAND_NAMES[req.type] ?? req.type} [${req.offset}, +${req.length}) failed: ${msg}`);
      this.replyFor(req, code, msg);
    }
  }

  /** An error reply: structured (with message) where the command required it, else simple. */
  private replyFor(req: NbdRequest, code: number, message: string): void {
    if (this.structured && (req.type === NBD_CMD_READ || req.type === NBD_CMD_BLOCK_STATUS)) {
      const p = encodeErrorPayload(code, message);
      this.send(encodeStructuredHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, req.cookie, p.length), p);
    } else {
      this.send(encodeSimpleReply(code, req.cookie));
    }
  }

  private async execute(exp: NbdExport, req: NbdRequest, payload: Buffer | undefined): Promise<void> {
    const dev = exp.device;
    const ro = exp.readOnly === true || dev.readOnly;
    if (this.closing) throw new RequestError(NBD_ESHUTDOWN, 'server is shutting down this connection');
    const allowed = FLAGS_ALLOWED[req.type];
    if (allowed === undefined) throw new RequestError(NBD_EINVAL, `unknown command ${req.type}`);
    if ((req.flags & ~allowed) !== 0) {
      throw new RequestError(NBD_EINVAL, `flags 0x${req.flags.toString(16)} are not valid for ${COMMAND_NAMES[req.type] ?? req.type}`);
    }
    const inRange = Number.isSafeInteger(req.offset) && req.offset + req.length <= dev.size;
    const fua = (req.flags & NBD_CMD_FLAG_FUA) !== 0;
    switch (req.type) {
      case NBD_CMD_READ: {
        if ((req.flags & NBD_CMD_FLAG_DF) !== 0 && !this.structured) throw new RequestError(NBD_EINVAL, 'DF needs structured replies');
        if (req.length > NBD_MAX_PAYLOAD) {
          throw new RequestError(this.structured ? NBD_EOVERFLOW : NBD_EINVAL, `read of ${req.length} bytes is larger than the ${NBD_MAX_PAYLOAD}-byte maximum`);
        }
        if (!inRange) throw new RequestError(NBD_EINVAL, `read [${req.offset}, +${req.length}) is beyond the export size ${dev.size}`);
        const data = this.buffers.get(req.length);
        try {
          await dev.read(req.offset, data);
        } catch (e) {
          this.buffers.put(data);
          throw e;
        }
        if (this.structured) {
          const head = encodeStructuredHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA, req.cookie, 8 + data.length);
          const off = Buffer.allocUnsafe(8);
          off.writeBigUInt64BE(BigInt(req.offset), 0);
          this.sendRecycling(data, head, off, data);
        } else {
          this.sendRecycling(data, encodeSimpleReply(0, req.cookie), data);
        }
        return;
      }
      case NBD_CMD_WRITE:
        if (ro) throw new RequestError(NBD_EPERM, 'export is read-only');
        if (!inRange) throw new RequestError(NBD_ENOSPC, `write [${req.offset}, +${req.length}) is beyond the export size ${dev.size}`);
        await dev.write(req.offset, payload ?? Buffer.alloc(0), { fua });
        this.send(encodeSimpleReply(0, req.cookie));
        return;
      case NBD_CMD_FLUSH:
        await dev.flush();
        this.send(encodeSimpleReply(0, req.cookie));
        return;
      case NBD_CMD_TRIM:
        if (ro) throw new RequestError(NBD_EPERM, 'export is read-only');
        if (!inRange) throw new RequestError(NBD_EINVAL, `trim [${req.offset}, +${req.length}) is beyond the export size ${dev.size}`);
        await dev.discard(req.offset, req.length);
        if (fua) await dev.flush();
        this.send(encodeSimpleReply(0, req.cookie));
        return;
      case NBD_CMD_WRITE_ZEROES:
        if (ro) throw new RequestError(NBD_EPERM, 'export is read-only');
        if (!inRange) throw new RequestError(NBD_ENOSPC, `write zeroes [${req.offset}, +${req.length}) is beyond the export size ${dev.size}`);
        await dev.writeZeroes(req.offset, req.length, { mayUnmap: (req.flags & NBD_CMD_FLAG_NO_HOLE) === 0 });
        if (fua) await dev.flush();
        this.send(encodeSimpleReply(0, req.cookie));
        return;
      case NBD_CMD_BLOCK_STATUS:
        await this.blockStatus(dev, req);
        return;
      default:
        throw new RequestError(NBD_EINVAL, `unknown command ${req.type}`);
    }
  }

  private async blockStatus(dev: BlockDevice, req: NbdRequest): Promise<void> {
    const ctx = this.metaContexts?.ids ?? [];
    if (!this.structured || ctx.length === 0) throw new RequestError(NBD_EINVAL, 'BLOCK_STATUS needs structured replies and a negotiated meta context');
    if (req.length === 0) throw new RequestError(NBD_EINVAL, 'BLOCK_STATUS of zero length');
    if (!(Number.isSafeInteger(req.offset) && req.offset + req.length <= dev.size)) {
      throw new RequestError(NBD_EINVAL, `BLOCK_STATUS [${req.offset}, +${req.length}) is beyond the export size ${dev.size}`);
    }
    const one = (req.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
    const descs: Array<[number, number]> = [];
    const end = req.offset + req.length;
    let pos = req.offset;
    while (pos < end && descs.length < (one ? 1 : MAX_STATUS_DESCRIPTORS)) {
      const st = await dev.blockStatus(pos, end - pos);
      const len = Math.min(st.length, end - pos);
      if (!(len > 0)) break;
      const flags = (st.data ? 0 : NBD_STATE_HOLE) | (st.zero ? NBD_STATE_ZERO : 0);
      const last = descs[descs.length - 1];
      if (last !== undefined && last[1] === flags) last[0] += len;
      else descs.push([len, flags]);
      pos += len;
    }
    if (descs.length === 0) descs.push([Math.min(req.length, dev.size - req.offset), 0]);
    const p = Buffer.allocUnsafe(4 + descs.length * 8);
    p.writeUInt32BE(META_CONTEXT_ID, 0);
    descs.forEach(([len, flags], i) => {
      p.writeUInt32BE(len, 4 + i * 8);
      p.writeUInt32BE(flags, 8 + i * 8);
    });
    this.send(encodeStructuredHeader(NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_BLOCK_STATUS, req.cookie, p.length), p);
  }
}

function u16(v: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(v, 0);
  return b;
}

/** A listening NBD server (TCP or unix socket). */
export class NbdServer {
  private readonly connections = new Set<Socket>();
  private readonly running = new Set<Promise<void>>();

  private constructor(
    private readonly server: Server,
    readonly options: NbdServeOptions,
  ) {}

  static async listen(options: NbdServeOptions): Promise<NbdServer> {
    if (options.exports.length === 0) throw new Error('nbd: nothing to export');
    const server = net.createServer();
    const self = new NbdServer(server, options);
    server.maxConnections = options.maxConnections ?? 16;
    server.on('connection', (socket) => self.accept(socket));
    if (options.socket !== undefined) {
      // a socket left by an earlier server; if it cannot be removed, listen() below fails naming it
      await unlink(options.socket).catch(() => undefined);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.socket, () => resolve());
      });
    } else {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(options.port ?? 10809, options.bind, () => resolve());
      });
    }
    return self;
  }

  /** TCP port actually bound (useful with port 0). */
  get port(): number | undefined {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? (a as AddressInfo).port : undefined;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  private accept(socket: Socket): void {
    this.connections.add(socket);
    socket.on('error', () => undefined);
    const conn = new NbdConnection(socket, this.options.exports, {
      handshakeTimeoutMs: this.options.handshakeTimeoutMs,
      log: this.options.log,
    });
    const p = conn.run().finally(() => {
      this.connections.delete(socket);
      this.running.delete(p);
    });
    this.running.add(p);
  }

  /** Stops listening, ends every connection (after in-flight requests) and returns. Devices stay open. */
  async close(): Promise<void> {
    // server.close() completes only once every connection is gone
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.connections) s.end();
    const deadline = new Promise<void>((r) => setTimeout(r, 2000).unref());
    await Promise.race([Promise.allSettled([...this.running]), deadline]);
    for (const s of this.connections) s.destroy();
    await closed;
    const socket = this.options.socket;
    if (socket !== undefined) {
      await unlink(socket).catch((e: unknown) => {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.options.log?.(`nbd: cannot remove the socket ${socket}: ${e instanceof Error ? e.message : String(e)}`);
      });
    }
  }
}

/** Starts serving; see NbdServeOptions. */
export function serveNbd(options: NbdServeOptions): Promise<NbdServer> {
  return NbdServer.listen(options);
}
