/** The stdio chardev's flow control: a paused chardev leaves host input in its stream until resumed. */
import { expect } from 'chai';
import { PassThrough } from 'node:stream';
import { StdioChardev } from '../src/index.js';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('StdioChardev', () => {
  it('stops reading its input while paused and delivers what waited once resumed, in order', async () => {
    const input = new PassThrough();
    const c = new StdioChardev('serial0', input, 1);
    const got: string[] = [];
    c.setInputListener((d) => got.push(Buffer.from(d).toString()));
    input.write('a');
    await turn();
    expect(got.join('')).to.equal('a');
    c.setInputPaused(true);
    input.write('b');
    input.write('c');
    await turn();
    expect(got.join(''), 'nothing while paused').to.equal('a');
    c.setInputPaused(false);
    await turn();
    expect(got.join('')).to.equal('abc');
    c.close();
  });
});
