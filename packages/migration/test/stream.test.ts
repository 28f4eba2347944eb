/**
 * The stream format (docs/migration.md "Stream format"): what the writer
 * produces the parser reads back section by section; corruption, truncation,
 * loss or reordering of any part is caught, with the byte offset. Hostile
 * input is fuzzed with fast-check: random bytes, truncations and bit flips of
 * a real stream, and well-framed sections with random RAM records — the
 * parser and the RAM loader only ever throw MigrationStreamError.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import {
  decodeState,
  encodeState,
  MigrationStreamError,
  RamReceiver,
  RamRecord,
  SectionType,
  StreamParser,
  StreamWriter,
  ulebEncode,
  type StreamHeaderInfo,
} from '../src/index.js';

const INFO: StreamHeaderInfo = { machineType: 'pc-i440fx-rhel7.0.0', kind: 'migration', writer: 'test', createdAt: '2025-01-01T00:00:00Z' };

interface Parsed {
  header?: StreamHeaderInfo;
  sections: { type: number; payload: Uint8Array; offset: number }[];
}

function parse(chunks: Uint8Array[], finish = true): Parsed {
  const out: Parsed = { sections: [] };
  const p = new StreamParser({
    header: (info) => {
      out.header = info;
    },
    section: (type, payload, offset) => out.sections.push({ type, payload, offset }),
  });
  for (const c of chunks) p.push(c);
  if (finish) p.finish();
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

/** a small complete stream: header, config, two RAM sections, a device, END */
function sampleStream(): Uint8Array {
  const w = new StreamWriter();
  const ram = (fill: number): Uint8Array => {
    const b = new Uint8Array(1 + 1 + 4096);
    b[0] = RamRecord.PAGE;
    const at = ulebEncode(3, b, 1);
    b.fill(fill, at);
    return b.subarray(0, at + 4096);
  };
  return concat([
    w.header(INFO),
    w.stateSection(SectionType.CONFIG, { hello: 'world', n: 5n }, 'config'),
    w.section(SectionType.RAM, ram(1)),
    w.section(SectionType.RAM, ram(2)),
    w.deviceSection({ id: 'serial0', driver: 'isa-serial', plugin: { name: 'p', version: '1.0.0' }, stateVersion: 1 }, { regs: Uint8Array.of(1, 2, 3) }),
    w.end(),
  ]);
}

describe('migration stream', () => {
  it('reads back the header and every section, in order, from any chunking', () => {
    const bytes = sampleStream();
    const whole = parse([bytes]);
    expect(whole.header).to.deep.equal(INFO);
    expect(whole.sections.map((s) => s.type)).to.deep.equal([SectionType.CONFIG, SectionType.RAM, SectionType.RAM, SectionType.DEVICE, SectionType.END]);
    expect(decodeState(whole.sections[0]?.payload ?? new Uint8Array())).to.deep.equal({ hello: 'world', n: 5n });
    const byteByByte = parse(Array.from(bytes, (b) => Uint8Array.of(b)));
    expect(byteByByte.sections.map((s) => s.offset)).to.deep.equal(whole.sections.map((s) => s.offset));
  });

  it('refuses something that is not a stream at its first bytes', () => {
    const p = new StreamParser({ header: () => undefined, section: () => undefined });
    expect(() => p.push(new TextEncoder().encode('GET / HTTP/1.1'))).to.throw(MigrationStreamError, /not a tsvmm migration stream \(it starts with "GET \/ HT"/);
  });

  it('refuses a stream version it does not read, naming it', () => {
    const bytes = sampleStream();
    new DataView(bytes.buffer).setUint16(8, 9);
    expect(() => parse([bytes])).to.throw(MigrationStreamError, /byte 8: stream version 9 is not one this tsvmm reads \(1\)/);
  });

  it('catches a flipped bit in a section with the section\'s offset', () => {
    const bytes = sampleStream();
    const ok = parse([bytes]);
    const ram = ok.sections[1] as { offset: number };
    bytes[ram.offset + 100] = (bytes[ram.offset + 100] as number) ^ 0x10;
    expect(() => parse([bytes])).to.throw(MigrationStreamError, new RegExp(`byte ${ram.offset}: section RAM \\(\\d+ bytes\\) fails its CRC check`));
  });

  it('says a truncated stream ends early, wherever it is cut', () => {
    const bytes = sampleStream();
    for (const cut of [0, 5, 20, 40, 200, bytes.length - 1]) {
      expect(() => parse([bytes.subarray(0, cut)]), `cut at ${cut}`).to.throw(MigrationStreamError, /stream (is empty|ends)/);
    }
  });

  it('catches a dropped section at END', () => {
    const w = new StreamWriter();
    const head = w.header(INFO);
    const a = w.section(SectionType.RAM, Uint8Array.of(RamRecord.ZERO, 1));
    w.section(SectionType.RAM, Uint8Array.of(RamRecord.ZERO, 2)); // written, then lost
    const end = w.end();
    expect(() => parse([head, a, end])).to.throw(MigrationStreamError, /END counts 2 sections, 1 were read/);
  });

  it('catches two sections swapped at END', () => {
    const w = new StreamWriter();
    const head = w.header(INFO);
    const a = w.section(SectionType.RAM, Uint8Array.of(RamRecord.ZERO, 1));
    const b = w.section(SectionType.RAM, Uint8Array.of(RamRecord.ZERO, 2));
    const end = w.end();
    expect(() => parse([head, b, a, end])).to.throw(MigrationStreamError, /END digest .* sections were reordered or replaced/);
  });

  it('accepts only COMMIT after END, and nothing after COMMIT', () => {
    const w = new StreamWriter();
    const parts = [w.header(INFO), w.end()];
    const commit = w.commit();
    expect(() => parse([...parts, w.section(SectionType.RAM, Uint8Array.of(RamRecord.ZERO, 1))])).to.throw(MigrationStreamError, /section RAM after END/);
    expect(() => parse([...parts, commit, commit])).to.throw(MigrationStreamError, /section COMMIT after COMMIT/);
    const p = new StreamParser({ header: () => undefined, section: () => undefined });
    for (const x of [...parts, commit]) p.push(x);
    expect(p.committed).to.equal(true);
  });

  it('refuses a section claiming more than the maximum size before buffering it', () => {
    const w = new StreamWriter();
    const head = w.header(INFO);
    const huge = new Uint8Array(9);
    huge[0] = SectionType.RAM;
    new DataView(huge.buffer).setUint32(1, 0xfffffff0);
    expect(() => parse([head, huge], false)).to.throw(MigrationStreamError, /claims 4294967280 bytes/);
  });

  describe('hostile input (fast-check)', () => {
    const sample = sampleStream();

    it('random bytes only ever raise MigrationStreamError', () => {
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 512 }), fc.boolean(), (bytes, withMagic) => {
          const input = withMagic ? concat([sample.subarray(0, 8), bytes]) : bytes;
          try {
            parse([input]);
          } catch (err) {
            return err instanceof MigrationStreamError;
          }
          return true;
        }),
        { numRuns: 1000 },
      );
    });

    it('a real stream truncated and bit-flipped anywhere only ever raises MigrationStreamError (or parses)', () => {
      fc.assert(
        fc.property(fc.nat(sample.length), fc.array(fc.tuple(fc.nat(sample.length - 1), fc.integer({ min: 1, max: 255 })), { maxLength: 4 }), fc.nat(64), (cut, flips, chunk) => {
          const bytes = sample.slice(0, cut);
          for (const [at, x] of flips) if (at < bytes.length) bytes[at] = (bytes[at] as number) ^ x;
          const chunks: Uint8Array[] = [];
          const step = chunk + 1;
          for (let i = 0; i < bytes.length; i += step) chunks.push(bytes.subarray(i, i + step));
          try {
            parse(chunks);
          } catch (err) {
            return err instanceof MigrationStreamError;
          }
          // Only an untouched, complete stream may parse.
          return cut === sample.length && flips.every(([at]) => at >= cut);
        }),
        { numRuns: 1000 },
      );
    });

    it('well-framed RAM sections of random records never write outside RAM and only raise MigrationStreamError', () => {
      const RAM = 16 * 4096;
      fc.assert(
        fc.property(
          fc.array(
            fc.oneof(
              fc.uint8Array({ maxLength: 40 }),
              fc.tuple(fc.constantFrom(RamRecord.ZERO, RamRecord.PAGE, RamRecord.XBZRLE, 9), fc.nat(40), fc.uint8Array({ maxLength: 5000 })).map(([k, pfn, rest]) => {
                const b = new Uint8Array(8 + rest.length);
                b[0] = k;
                const at = ulebEncode(pfn, b, 1);
                b.set(rest, at);
                return b.subarray(0, at + rest.length);
              }),
            ),
            { maxLength: 6 },
          ),
          (records) => {
            const buffer = new SharedArrayBuffer(RAM + 4096);
            const guard = new Uint8Array(buffer, RAM);
            guard.fill(0xa5);
            const rx = new RamReceiver([{ gpa: 0, size: RAM, buffer }]);
            const w = new StreamWriter();
            const input = [w.header(INFO), ...records.map((r) => w.section(SectionType.RAM, r)), w.end()];
            try {
              const p = new StreamParser({
                header: () => undefined,
                section: (type, payload, offset) => {
                  if (type === SectionType.RAM) rx.apply(payload, offset + 9);
                },
              });
              for (const c of input) p.push(c);
              p.finish();
            } catch (err) {
              if (!(err instanceof MigrationStreamError)) return false;
            }
            return guard.every((b) => b === 0xa5);
          },
        ),
        { numRuns: 500 },
      );
    });
  });
});

describe('state codec', () => {
  it('round-trips JSON values, bigint and bytes', () => {
    const v = { a: 1, b: 'x', c: [true, null, -5n], d: { e: Uint8Array.of(0, 255), f: 0xffff_ffff_ffff_ffffn } };
    expect(decodeState(encodeState(v))).to.deep.equal(v);
  });

  it('refuses what it cannot represent, naming the path', () => {
    expect(() => encodeState({ a: { b: new Map() } }, 'dev')).to.throw(/dev\.a\.b: a Map is not plain data/);
    expect(() => encodeState({ $x: 1 }, 'dev')).to.throw(/dev\.\$x: keys starting with '\$' are reserved/);
    expect(() => encodeState({ n: NaN }, 'dev')).to.throw(/dev\.n: NaN has no JSON form/);
  });

  it('refuses malformed tags, invalid UTF-8 and hostile nesting', () => {
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    expect(() => decodeState(enc('{"a":{"$bigint":"12x"}}'))).to.throw(/state\.a: malformed \$bigint/);
    expect(() => decodeState(enc('{"a":{"$what":1}}'))).to.throw(/unknown tag '\$what'/);
    expect(() => decodeState(Uint8Array.of(0xff, 0xfe))).to.throw(/not valid UTF-8/);
    expect(() => decodeState(enc('['.repeat(100000)))).to.throw(/nested deeper than 64/);
    const proto = decodeState(enc('{"__proto__":{"polluted":1}}')) as Record<string, unknown>;
    expect(Object.getPrototypeOf(proto)).to.equal(Object.prototype);
    expect(({} as Record<string, unknown>)['polluted']).to.equal(undefined);
  });
});
