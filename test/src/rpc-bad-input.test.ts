/**
 * Bad input on the wire (JSON-RPC 2.0 §5.1 error codes; LSP base protocol
 * framing): each gets the right error, and the server keeps serving every
 * other client. The property test throws random and truncated frames at the
 * server, then checks a well-behaved client still works.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { TsvmmClient } from '@tsvmm/client';
import { ErrorCodes } from '@tsvmm/protocol';
import { frame, INIT, RawClient, startServer, type ServerProcess } from './rpc-harness.js';

describe('rpc bad input', function () {
  this.timeout(120_000);
  let server: ServerProcess;
  let bystander: TsvmmClient;

  before(async () => {
    server = await startServer({ args: ['--max-message-size', '64k'] });
    bystander = await TsvmmClient.connect(server.address);
  });
  after(async () => {
    await bystander.close();
    expect(await server.stop()).to.equal(0);
  });

  /** The other client is still served after each misbehaviour. */
  afterEach(async () => {
    expect((await bystander.vmList()).vms).to.be.an('array');
  });

  async function initialized(): Promise<RawClient> {
    const raw = await RawClient.connect(server.address);
    raw.send(INIT);
    await raw.response(0);
    return raw;
  }

  const errorOf = (m: Record<string, unknown>): { code: number; message: string; data?: { causes?: string[] } } =>
    m['error'] as { code: number; message: string; data?: { causes?: string[] } };

  it('answers malformed JSON with ParseError (id null) and keeps the connection', async () => {
    const raw = await initialized();
    raw.write(frame('{"jsonrpc": "2.0", "id": 1, "method": '));
    const r = await raw.response(null);
    expect(errorOf(r).code).to.equal(ErrorCodes.ParseError);
    expect(errorOf(r).message).to.match(/not valid JSON/);
    raw.send({ jsonrpc: '2.0', id: 2, method: 'vm/list', params: {} });
    expect((await raw.response(2))['result']).to.deep.equal({ vms: [] });
    raw.close();
  });

  it('answers a body that is not UTF-8 with ParseError', async () => {
    const raw = await initialized();
    raw.write(frame(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])));
    expect(errorOf(await raw.response(null)).code).to.equal(ErrorCodes.ParseError);
    raw.close();
  });

  it('answers JSON that is not a JSON-RPC message with InvalidRequest, echoing the id when there is one', async () => {
    const raw = await initialized();
    raw.write(frame('[1,2,3]'));
    expect(errorOf(await raw.response(null)).message).to.match(/batch requests are not supported/);
    raw.write(frame('{"id": 7, "method": "vm/list"}'));
    const r = await raw.response(7);
    expect(errorOf(r).code).to.equal(ErrorCodes.InvalidRequest);
    expect(errorOf(r).message).to.match(/"jsonrpc" member must be exactly "2.0"/);
    raw.write(frame('{"jsonrpc": "2.0", "id": 8, "method": "vm/list", "params": 5}'));
    expect(errorOf(await raw.response(8)).code).to.equal(ErrorCodes.InvalidRequest);
    raw.write(frame('"hello"'));
    expect(errorOf(await raw.response(null)).code).to.equal(ErrorCodes.InvalidRequest);
    raw.close();
  });

  it('discards a body over the size limit unread, answers InvalidRequest, and keeps the connection', async () => {
    const raw = await initialized();
    const big = JSON.stringify({ jsonrpc: '2.0', id: 3, method: 'vm/list', params: { pad: 'x'.repeat(100_000) } });
    raw.write(frame(big));
    const r = await raw.response(null);
    expect(errorOf(r).code).to.equal(ErrorCodes.InvalidRequest);
    expect(errorOf(r).message).to.equal(`message body of ${big.length} bytes exceeds the limit of 65536 bytes`);
    raw.send({ jsonrpc: '2.0', id: 4, method: 'vm/list', params: {} });
    expect((await raw.response(4))['result']).to.deep.equal({ vms: [] });
    raw.close();
  });

  it('answers a frame without Content-Length with ParseError and closes that connection only', async () => {
    const raw = await initialized();
    raw.write('Content-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{"jsonrpc":"2.0","id":5,"method":"vm/list"}');
    const r = await raw.response(null);
    expect(errorOf(r).code).to.equal(ErrorCodes.ParseError);
    expect(errorOf(r).message).to.match(/the header has no Content-Length; closing the connection/);
    await raw.waitClosed();
  });

  it('closes a connection whose header never ends', async () => {
    const raw = await RawClient.connect(server.address);
    raw.write('X'.repeat(10_000));
    expect(errorOf(await raw.response(null)).message).to.match(/no end of header/);
    await raw.waitClosed();
  });

  it('accepts a Content-Type header and frames split at every byte', async () => {
    const raw = await RawClient.connect(server.address);
    const body = JSON.stringify(INIT);
    const bytes = Buffer.from(`Content-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n${body}`);
    for (const b of bytes) {
      raw.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    expect((await raw.response(0))['result']).to.be.an('object');
    raw.close();
  });

  it('ignores unknown notifications and answers the next request', async () => {
    const raw = await initialized();
    raw.send({ jsonrpc: '2.0', method: 'vm/doSomething', params: {} });
    raw.send({ jsonrpc: '2.0', method: '$/setTrace', params: { value: 'off' } });
    raw.send({ jsonrpc: '2.0', id: 9, method: 'vm/list', params: {} });
    expect((await raw.response(9))['result']).to.deep.equal({ vms: [] });
    raw.close();
  });

  it('keeps serving a well-behaved client after random and truncated frames (property)', async () => {
    const validBody = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'vm/list', params: {} });
    const garbage = fc.oneof(
      // arbitrary bytes
      fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)),
      // a valid frame cut short anywhere
      fc.nat({ max: validBody.length + 25 }).map((n) => frame(validBody).subarray(0, n)),
      // a frame whose length lies
      fc.tuple(fc.nat({ max: 500 }), fc.string({ maxLength: 200 })).map(([n, s]) => Buffer.from(`Content-Length: ${n}\r\n\r\n${s}`)),
      // well-framed random JSON values and random JSON-RPC-looking objects
      fc.jsonValue({ maxDepth: 3 }).map((v) => frame(JSON.stringify(v) ?? 'null')),
      fc
        .record({
          jsonrpc: fc.constantFrom('2.0', '1.0', 2),
          id: fc.oneof(fc.integer(), fc.string({ maxLength: 5 }), fc.constant(null)),
          method: fc.oneof(fc.constantFrom('initialize', 'vm/create', 'vm/status', 'console/write', 'shutdown', 'exit'), fc.string({ maxLength: 12 })),
          params: fc.oneof(fc.object({ maxDepth: 2 }), fc.constant(null), fc.integer()),
        }, { requiredKeys: ['jsonrpc'] })
        .map((m) => frame(JSON.stringify(m))),
      // huge declared lengths
      fc.integer({ min: 65_537, max: 10_000_000_000 }).map((n) => Buffer.from(`Content-Length: ${n}\r\n\r\n`)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(garbage, { minLength: 1, maxLength: 6 }), async (chunks) => {
        const raw = await RawClient.connect(server.address);
        for (const c of chunks) raw.write(c);
        // give the server a moment to chew, then hang up mid-frame
        await new Promise((r) => setTimeout(r, 5));
        raw.close();
        const good = await TsvmmClient.connect(server.address);
        const list = await good.vmList();
        await good.close();
        return Array.isArray(list.vms);
      }),
      { numRuns: 60 },
    );
    expect(server.proc.exitCode).to.equal(null);
  });
});
