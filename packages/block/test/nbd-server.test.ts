/// <reference types="mocha" />
import { expect } from 'chai';
import fc from 'fast-check';
import {
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeRequest,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_TRIM,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_MAX_PAYLOAD,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_MAGIC,
  NbdClient,
  NbdError,
  NbdServer,
} from '../src/nbd/index.js';
import { MemoryDevice, RawNbdClient } from './nbd-helpers.js';

const MiB = 1024 * 1024;

interface Fixture {
  server: NbdServer;
  dev: MemoryDevice;
  port: number;
  url: string;
  logs: string[];
}

async function start(opts: { readOnly?: boolean; size?: number; maxConnections?: number; name?: string } = {}): Promise<Fixture> {
  const dev = new MemoryDevice(opts.size ?? 4 * MiB);
  const logs: string[] = [];
  const server = await NbdServer.listen({
    exports: [{ name: opts.name ?? 'disk', description: 'test disk', device: dev, readOnly: opts.readOnly }],
    port: 0,
    bind: '127.0.0.1',
    maxConnections: opts.maxConnections,
    log: (m) => logs.push(m),
  });
  const port = server.port ?? 0;
  return { server, dev, port, url: `nbd://127.0.0.1:${port}/${opts.name ?? 'disk'}`, logs };
}

/** Sends one request on a raw, negotiated connection and reads a simple reply's error. */
async function simpleReply(c: RawNbdClient): Promise<{ error: number; cookie: bigint }> {
  const h = await c.reader.read(16);
  expect(h.readUInt32BE(0)).to.equal(NBD_SIMPLE_REPLY_MAGIC);
  return { error: h.readUInt32BE(4), cookie: h.readBigUInt64BE(8) };
}

async function structuredChunk(c: RawNbdClient): Promise<{ flags: number; type: number; cookie: bigint; payload: Buffer }> {
  const h = await c.reader.read(20);
  expect(h.readUInt32BE(0)).to.equal(NBD_STRUCTURED_REPLY_MAGIC);
  return { flags: h.readUInt16BE(4), type: h.readUInt16BE(6), cookie: h.readBigUInt64BE(8), payload: await c.reader.read(h.readUInt32BE(16)) };
}

/** A raw connection through NBD_OPT_GO (with structured replies if asked). */
async function negotiated(f: Fixture, structured: boolean): Promise<RawNbdClient> {
  const c = await RawNbdClient.connect(f.port);
  await c.greet();
  if (structured) {
    c.option(NBD_OPT_STRUCTURED_REPLY);
    expect((await c.optionReply()).type).to.equal(NBD_REP_ACK);
    c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation']));
    expect((await c.optionReply()).type).to.equal(NBD_REP_META_CONTEXT);
    expect((await c.optionReply()).type).to.equal(NBD_REP_ACK);
  }
  c.option(NBD_OPT_GO, encodeInfoRequest('disk', []));
  for (;;) {
    const r = await c.optionReply();
    if (r.type === NBD_REP_ACK) break;
    expect(r.type).to.equal(NBD_REP_INFO);
  }
  return c;
}

describe('nbd server: handshake', function () {
  this.timeout(20_000);
  let f: Fixture;
  beforeEach(async () => (f = await start()));
  afterEach(async () => f.server.close());

  it('greets with fixed newstyle and no-zeroes', async () => {
    const c = await RawNbdClient.connect(f.port);
    const flags = await c.greet();
    expect(flags).to.equal(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    c.close();
  });

  it('NBD_OPT_LIST names the export; INFO describes it; unknown names get ERR_UNKNOWN', async () => {
    const c = await RawNbdClient.connect(f.port);
    await c.greet();
    c.option(NBD_OPT_LIST);
    const s = await c.optionReply();
    expect(s.type).to.equal(NBD_REP_SERVER);
    expect(s.data.subarray(4).toString()).to.equal('disk');
    expect((await c.optionReply()).type).to.equal(NBD_REP_ACK);
    c.option(NBD_OPT_INFO, encodeInfoRequest('disk', [NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE]));
    const infos = new Map<number, Buffer>();
    for (;;) {
      const r = await c.optionReply();
      if (r.type === NBD_REP_ACK) break;
      expect(r.type).to.equal(NBD_REP_INFO);
      infos.set(r.data.readUInt16BE(0), r.data);
    }
    const ex = infos.get(NBD_INFO_EXPORT);
    expect(Number(ex?.readBigUInt64BE(2))).to.equal(4 * MiB);
    expect((ex?.readUInt16BE(10) ?? 0) & NBD_FLAG_CAN_MULTI_CONN).to.not.equal(0);
    expect(infos.get(NBD_INFO_NAME)?.subarray(2).toString()).to.equal('disk');
    expect(infos.get(NBD_INFO_BLOCK_SIZE)?.readUInt32BE(10)).to.equal(NBD_MAX_PAYLOAD);
    c.option(NBD_OPT_GO, encodeInfoRequest('nope', []));
    const u = await c.optionReply();
    expect(u.type).to.equal(NBD_REP_ERR_UNKNOWN);
    expect(u.data.toString()).to.match(/no export named 'nope'/);
    c.close();
  });

  it('refuses unknown options, STARTTLS, malformed INFO and SET_META_CONTEXT before structured replies', async () => {
    const c = await RawNbdClient.connect(f.port);
    await c.greet();
    c.option(4242);
    expect((await c.optionReply()).type).to.equal(NBD_REP_ERR_UNSUP);
    c.option(NBD_OPT_STARTTLS);
    expect((await c.optionReply()).type).to.equal(NBD_REP_ERR_UNSUP);
    c.option(NBD_OPT_INFO, Buffer.from([0, 0, 0, 200, 1, 2]));
    expect((await c.optionReply()).type).to.equal(NBD_REP_ERR_INVALID);
    c.option(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest('disk', ['base:allocation']));
    expect((await c.optionReply()).type).to.equal(NBD_REP_ERR_INVALID);
    c.option(NBD_OPT_LIST_META_CONTEXT, encodeMetaContextRequest('disk', []));
    const m = await c.optionReply();
    expect(m.type).to.equal(NBD_REP_META_CONTEXT);
    expect(m.data.subarray(4).toString()).to.equal('base:allocation');
    expect((await c.optionReply()).type).to.equal(NBD_REP_ACK);
    c.option(NBD_OPT_STRUCTURED_REPLY, Buffer.from([1]));
    expect((await c.optionReply()).type).to.equal(NBD_REP_ERR_INVALID);
    c.close();
  });

  it('skips an oversized option without buffering it, then carries on', async () => {
    const c = await RawNbdClient.connect(f.port);
    await c.greet();
    const h = Buffer.alloc(16);
    h.writeBigUInt64BE(0x49484156454f5054n, 0);
    h.writeUInt32BE(NBD_OPT_GO, 8);
    h.writeUInt32BE(300 * 1024, 12);
    c.send(h);
    c.send(Buffer.alloc(300 * 1024, 0x41));
    expect((await c.optionReply()).type).to.equal(NBD_REP_ERR_TOO_BIG);
    c.option(NBD_OPT_ABORT);
    expect((await c.optionReply()).type).to.equal(NBD_REP_ACK);
    expect(await c.closed()).to.equal(true);
  });

  it('closes on a bad option magic, unknown client flags, or an unknown EXPORT_NAME', async () => {
    const a = await RawNbdClient.connect(f.port);
    await a.greet();
    a.send(Buffer.alloc(16, 0x55));
    expect(await a.closed()).to.equal(true);
    const b = await RawNbdClient.connect(f.port);
    await b.greet(0x80);
    expect(await b.closed()).to.equal(true);
    const c = await RawNbdClient.connect(f.port);
    await c.greet();
    c.option(NBD_OPT_EXPORT_NAME, Buffer.from('nope'));
    expect(await c.closed()).to.equal(true);
    // the server is still fine
    const ok = await NbdClient.connect(f.url);
    expect(ok.size).to.equal(4 * MiB);
    await ok.disconnect();
  });

  it('NBD_OPT_EXPORT_NAME enters transmission with size and flags', async () => {
    const c = await RawNbdClient.connect(f.port);
    await c.greet();
    c.option(NBD_OPT_EXPORT_NAME, Buffer.from('disk'));
    const r = await c.reader.read(10);
    expect(Number(r.readBigUInt64BE(0))).to.equal(4 * MiB);
    expect(r.readUInt16BE(8) & NBD_FLAG_SEND_TRIM).to.not.equal(0);
    c.send(encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 7n, offset: 0, length: 8 }));
    const rep = await simpleReply(c);
    expect(rep).to.deep.equal({ error: 0, cookie: 7n });
    expect((await c.reader.read(8)).length).to.equal(8);
    c.close();
  });
});

describe('nbd server: transmission', function () {
  this.timeout(30_000);

  it('reads, writes, flushes, trims, zeroes and reports block status through the client', async () => {
    const f = await start();
    const c = await NbdClient.connect(f.url);
    try {
      expect(c.info.structured).to.equal(true);
      expect(c.info.allocationContext).to.not.equal(undefined);
      const data = Buffer.alloc(200_000, 0x3c);
      await c.write(100_000, data);
      const back = Buffer.alloc(200_000);
      await c.read(100_000, back);
      expect(back.equals(data)).to.equal(true);
      await c.flush();
      expect(f.dev.flushes).to.be.greaterThan(0);
      const st = await c.blockStatus(0, 4 * MiB, false);
      // chunks 1..4 written (64 KiB chunks): hole, data, hole
      expect(st[0]).to.deep.equal({ length: 64 * 1024, flags: NBD_STATE_HOLE | NBD_STATE_ZERO });
      expect(st[1]).to.deep.equal({ length: 4 * 64 * 1024, flags: 0 });
      expect(st.reduce((a, e) => a + e.length, 0)).to.equal(4 * MiB);
      const one = await c.blockStatus(0, 4 * MiB, true);
      expect(one.length).to.equal(1);
      await c.writeZeroes(100_000, 1000);
      await c.read(100_000, back.subarray(0, 1000));
      expect(back.subarray(0, 1000).every((x) => x === 0)).to.equal(true);
      await c.trim(0, 4 * MiB);
      expect(f.dev.written.every((x) => x === 0)).to.equal(true);
    } finally {
      await c.disconnect();
      await f.server.close();
    }
  });

  it('a read-only export refuses WRITE, TRIM and WRITE_ZEROES with EPERM and still reads', async () => {
    const f = await start({ readOnly: true });
    const c = await NbdClient.connect(f.url);
    try {
      expect(c.info.flags & NBD_FLAG_READ_ONLY).to.not.equal(0);
      for (const op of [() => c.write(0, Buffer.alloc(512)), () => c.trim(0, 512), () => c.writeZeroes(0, 512)]) {
        let err: unknown;
        try {
          await op();
        } catch (e) {
          err = e;
        }
        expect(err).to.be.instanceOf(NbdError);
        expect((err as NbdError).errno).to.equal(NBD_EPERM);
      }
      await c.read(0, Buffer.alloc(4096));
      expect(f.dev.written.every((x) => x === 0)).to.equal(true);
    } finally {
      await c.disconnect();
      await f.server.close();
    }
  });

  it('answers out-of-range and oversized requests with errors and stays in sync', async () => {
    const f = await start();
    const c = await negotiated(f, false);
    try {
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 1n, offset: 4 * MiB - 10, length: 20 }));
      expect(await simpleReply(c)).to.deep.equal({ error: NBD_EINVAL, cookie: 1n });
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_WRITE, cookie: 2n, offset: 4 * MiB, length: 1 }));
      c.send(Buffer.alloc(1));
      expect(await simpleReply(c)).to.deep.equal({ error: NBD_ENOSPC, cookie: 2n });
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 3n, offset: 0, length: 0xffffffff }));
      expect(await simpleReply(c)).to.deep.equal({ error: NBD_EINVAL, cookie: 3n });
      // an oversized write: the payload is consumed, not buffered
      const big = NBD_MAX_PAYLOAD + 4096;
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_WRITE, cookie: 4n, offset: 0, length: big }));
      for (let sent = 0; sent < big; sent += MiB) c.send(Buffer.alloc(Math.min(MiB, big - sent), 0x99));
      expect(await simpleReply(c)).to.deep.equal({ error: NBD_EINVAL, cookie: 4n });
      expect(f.dev.data[0]).to.equal(0);
      c.send(encodeRequest({ flags: 0, type: 99, cookie: 5n, offset: 0, length: 0 }));
      expect(await simpleReply(c)).to.deep.equal({ error: NBD_EINVAL, cookie: 5n });
      c.send(encodeRequest({ flags: 0x8000, type: NBD_CMD_READ, cookie: 6n, offset: 0, length: 1 }));
      expect(await simpleReply(c)).to.deep.equal({ error: NBD_EINVAL, cookie: 6n });
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_BLOCK_STATUS, cookie: 7n, offset: 0, length: 512 }));
      expect(await simpleReply(c)).to.deep.equal({ error: NBD_EINVAL, cookie: 7n });
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 8n, offset: 2 ** 60, length: 1 }));
      expect(await simpleReply(c)).to.deep.equal({ error: NBD_EINVAL, cookie: 8n });
      // still in sync: a good read works
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 9n, offset: 0, length: 4 }));
      expect(await simpleReply(c)).to.deep.equal({ error: 0, cookie: 9n });
      expect((await c.reader.read(4)).length).to.equal(4);
    } finally {
      c.close();
      await f.server.close();
    }
  });

  it('uses structured replies for READ and errors once negotiated', async () => {
    const f = await start();
    f.dev.data.fill(0xab, 0, 16);
    const c = await negotiated(f, true);
    try {
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 11n, offset: 0, length: 16 }));
      const ch = await structuredChunk(c);
      expect(ch.cookie).to.equal(11n);
      expect(ch.flags & 1).to.equal(1);
      expect(Number(ch.payload.readBigUInt64BE(0))).to.equal(0);
      expect(ch.payload.subarray(8).every((x) => x === 0xab)).to.equal(true);
      c.send(encodeRequest({ flags: 0, type: NBD_CMD_READ, cookie: 12n, offset: 0, length: NBD_MAX_PAYLOAD + 1 }));
      const err = await structuredChunk(c);
      expect(err.type).to.equal(32769);
      expect(err.payload.readUInt32BE(0)).to.equal(NBD_EOVERFLOW);
      expect(err.payload.subarray(6).toString()).to.match(/larger than/);
    } finally {
      c.close();
      await f.server.close();
    }
  });

  it('pipelines many requests on one connection and serves several connections at once', async () => {
    const f = await start({ size: 16 * MiB });
    const clients = await Promise.all([0, 1, 2, 3].map(() => NbdClient.connect(f.url)));
    try {
      await Promise.all(
        clients.map(async (c, k) => {
          const ops: Array<Promise<void>> = [];
          for (let i = 0; i < 50; i++) ops.push(c.write((k * 50 + i) * 65536, Buffer.alloc(65536, (k * 50 + i) % 251)));
          await Promise.all(ops);
        }),
      );
      // every client sees every other client's writes (one shared device, CAN_MULTI_CONN)
      const buf = Buffer.alloc(65536);
      for (let n = 0; n < 200; n += 17) {
        await clients[n % 4]?.read(n * 65536, buf);
        expect(buf.every((x) => x === n % 251), `record ${n}`).to.equal(true);
      }
    } finally {
      await Promise.all(clients.map((c) => c.disconnect()));
      await f.server.close();
    }
  });

  it('DISC completes outstanding requests, flushes and closes', async () => {
    const f = await start();
    const c = await negotiated(f, false);
    c.send(encodeRequest({ flags: 0, type: NBD_CMD_WRITE, cookie: 1n, offset: 0, length: 4 }));
    c.send(Buffer.from([1, 2, 3, 4]));
    c.send(encodeRequest({ flags: 0, type: NBD_CMD_DISC, cookie: 2n, offset: 0, length: 0 }));
    expect(await simpleReply(c)).to.deep.equal({ error: 0, cookie: 1n });
    expect(await c.closed()).to.equal(true);
    expect([...f.dev.data.subarray(0, 4)]).to.deep.equal([1, 2, 3, 4]);
    expect(f.dev.flushes).to.be.greaterThan(0);
    await f.server.close();
  });

  it('--shared limits concurrent clients', async () => {
    const f = await start({ maxConnections: 1 });
    const a = await NbdClient.connect(f.url);
    let err: unknown;
    try {
      await NbdClient.connect(f.url, { connectTimeoutMs: 2000 });
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(Error);
    await a.disconnect();
    await f.server.close();
  });
});

describe('nbd server: hostile clients (fast-check)', function () {
  this.timeout(120_000);

  it('random and truncated frames never crash the server; a well-behaved client works afterwards', async () => {
    const f = await start({ size: MiB });
    f.dev.data.fill(0x42);
    const frame = fc.oneof(
      // arbitrary bytes
      fc.uint8Array({ minLength: 0, maxLength: 200 }),
      // a well-formed header with random fields (and maybe a truncated payload)
      fc
        .record({
          flags: fc.integer({ min: 0, max: 0xffff }),
          type: fc.integer({ min: 0, max: 12 }),
          offset: fc.oneof(fc.integer({ min: 0, max: 2 * MiB }), fc.constant(2 ** 52)),
          length: fc.oneof(fc.integer({ min: 0, max: 70_000 }), fc.constant(0xffffffff)),
          cut: fc.integer({ min: 0, max: 100 }),
        })
        .map(({ flags, type, offset, length, cut }) => {
          // never a real write of data or a DISC: the check below needs the disk unchanged
          const t = [NBD_CMD_WRITE, NBD_CMD_DISC, 4, 6].includes(type) ? NBD_CMD_READ : type;
          const h = encodeRequest({ flags, type: t, cookie: 1n, offset, length });
          return cut < 50 ? new Uint8Array(h.subarray(0, Math.floor((h.length * cut) / 50))) : new Uint8Array(h);
        }),
    );
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.boolean(), fc.array(frame, { minLength: 1, maxLength: 6 }), async (handshakeFirst, structured, frames) => {
        let c: RawNbdClient;
        if (handshakeFirst) c = await negotiated(f, structured);
        else {
          c = await RawNbdClient.connect(f.port);
          await c.greet();
        }
        for (const fr of frames) c.send(fr);
        await new Promise((r) => setTimeout(r, 5));
        c.close();
      }),
      { numRuns: 200, seed: 99 },
    );
    const ok = await NbdClient.connect(f.url);
    const b = Buffer.alloc(MiB);
    await ok.read(0, b);
    expect(b.every((x) => x === 0x42)).to.equal(true);
    await ok.disconnect();
    await f.server.close();
  });
});
