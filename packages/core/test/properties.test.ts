import { expect } from 'chai';
import { z } from 'zod';
import { ConfigError, parseIntLike, parseKeyValueList, parseProperties, prop } from '../src/index.js';

describe('key=value lists', () => {
  it('splits QEMU option strings with the first bare element as the driver', () => {
    expect(parseKeyValueList('isa-debug-exit,iobase=0xf4,iosize=0x4', 'driver')).to.deep.equal({
      driver: 'isa-debug-exit',
      iobase: '0xf4',
      iosize: '0x4',
    });
  });
  it('treats ,, as a literal comma', () => {
    expect(parseKeyValueList('name=a,,b,string=x', undefined)).to.deep.equal({ name: 'a,b', string: 'x' });
  });
  it('rejects a key given twice', () => {
    expect(() => parseKeyValueList('d,a=1,a=2', 'driver')).to.throw(ConfigError, /'a' given twice/);
  });
});

describe('property schemas', () => {
  const schema = z.strictObject({ iobase: prop.int(0, 0xffff).default(0x501), on: prop.bool().default(false), size: prop.size().optional() });

  it('accepts the command-line spelling and the JSON spelling alike', () => {
    expect(parseProperties(schema, { iobase: '0xf4', on: 'on', size: '64k' }, 'd')).to.deep.equal({ iobase: 0xf4, on: true, size: 65536 });
    expect(parseProperties(schema, { iobase: 244, on: true }, 'd')).to.deep.equal({ iobase: 244, on: true });
  });

  it('names the subject and the failing property', () => {
    expect(() => parseProperties(schema, { iobase: '0x10000' }, "device 'x'")).to.throw(ConfigError, /device 'x': 'iobase': must be at most 65535/);
    expect(() => parseProperties(schema, { iobase: 'nope' }, "device 'x'")).to.throw(ConfigError, /'iobase': expected an integer/);
  });

  it('rejects unknown properties by name', () => {
    expect(() => parseProperties(schema, { bogus: '1' }, "device 'x'")).to.throw(ConfigError, /unknown property 'bogus'/);
    const nested = z.strictObject({ objects: z.array(z.strictObject({ id: z.string() })) });
    expect(() => parseProperties(nested, { objects: [{ id: 'a', file: 'x' }] }, 'machine description')).to.throw(
      ConfigError,
      /^machine description: 'objects\.0': unknown property 'file'$/,
    );
  });

  it('parses decimal, hex, octal and binary integers', () => {
    expect([parseIntLike('10'), parseIntLike('0x1F'), parseIntLike('010'), parseIntLike('0b101'), parseIntLike('-3'), parseIntLike('1e3')]).to.deep.equal([
      10,
      31,
      8,
      5,
      -3,
      undefined,
    ]);
  });
});
