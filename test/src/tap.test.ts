/// <reference types="mocha" />
import { expect } from 'chai';
import { parseTap, tapVerdict } from './tap.js';

describe('TAP parser', () => {
  it('reads the plan', () => {
    expect(parseTap('1..3\n').plan).to.deep.equal({ count: 3 });
  });

  it('reads a plan that comes last', () => {
    const doc = parseTap('ok 1 - a\nok 2 - b\n1..2\n');
    expect(doc.plan).to.deep.equal({ count: 2 });
    expect(tapVerdict(doc).passed).to.equal(true);
  });

  it('keeps the reason of a skip-all plan', () => {
    expect(parseTap('1..0 # SKIP no fw_cfg').plan).to.deep.equal({ count: 0, reason: 'SKIP no fw_cfg' });
  });

  it('reads ok and not ok lines with numbers and descriptions', () => {
    const doc = parseTap('1..2\nok 1 - scratch register\nnot ok 2 - LSR bits\n');
    expect(doc.results).to.deep.equal([
      { ok: true, number: 1, description: 'scratch register' },
      { ok: false, number: 2, description: 'LSR bits' },
    ]);
  });

  it('numbers results that carry no number', () => {
    const doc = parseTap('ok\nok - second\n');
    expect(doc.results.map((r) => r.number)).to.deep.equal([1, 2]);
    expect(doc.results[1]?.description).to.equal('second');
  });

  it('accepts a description without the dash', () => {
    expect(parseTap('ok 1 plain words').results[0]?.description).to.equal('plain words');
  });

  it('strips carriage returns', () => {
    const doc = parseTap('1..1\r\nok 1 - a\r\n');
    expect(doc.results[0]?.description).to.equal('a');
    expect(tapVerdict(doc).passed).to.equal(true);
  });

  it('separates SKIP and TODO directives from the description', () => {
    const doc = parseTap('ok 1 - a # SKIP no device\nnot ok 2 - b # TODO later\n');
    expect(doc.results[0]).to.deep.include({ description: 'a', directive: { kind: 'SKIP', reason: 'no device' } });
    expect(doc.results[1]).to.deep.include({ description: 'b', directive: { kind: 'TODO', reason: 'later' } });
  });

  it('does not count a failing TODO test as a failure', () => {
    expect(tapVerdict(parseTap('1..1\nnot ok 1 - b # TODO later\n')).passed).to.equal(true);
  });

  it('collects diagnostics', () => {
    expect(parseTap('# AP 0: APIC ID 1\n#   got 0x1\n').diagnostics).to.deep.equal(['AP 0: APIC ID 1', '  got 0x1']);
  });

  it('ignores lines that are not TAP', () => {
    const doc = parseTap('echo: hello\n1..1\nokay then\nok 1 - a\n');
    expect(doc.results).to.have.length(1);
    expect(tapVerdict(doc).passed).to.equal(true);
  });

  it('records a bail out and fails the run', () => {
    const doc = parseTap('1..2\nok 1\nBail out! no memory map\n');
    expect(doc.bailOut).to.equal('no memory map');
    expect(tapVerdict(doc).problems).to.include('bailed out: no memory map');
  });

  it('passes a complete run where every test is ok', () => {
    expect(tapVerdict(parseTap('1..2\nok 1 - a\nok 2 - b\n'))).to.deep.equal({ passed: true, failures: [], problems: [] });
  });

  it('fails a run with a not ok result and names it', () => {
    const v = tapVerdict(parseTap('1..2\nok 1 - a\nnot ok 2 - b\n'));
    expect(v.passed).to.equal(false);
    expect(v.failures.map((f) => f.description)).to.deep.equal(['b']);
  });

  it('fails a run without a plan', () => {
    expect(tapVerdict(parseTap('ok 1 - a\n')).problems).to.deep.equal(['no plan line (1..N)']);
  });

  it('fails a run that stopped before the planned count', () => {
    expect(tapVerdict(parseTap('1..3\nok 1\nok 2\n')).problems).to.deep.equal(['planned 3 tests but 2 ran']);
  });

  it('fails a run with two plans, as when the guest restarted', () => {
    const v = tapVerdict(parseTap('1..1\nok 1\n1..1\nok 1\n'));
    expect(v.passed).to.equal(false);
    expect(v.problems[0]).to.match(/2 plan lines/);
  });

  it('fails a run whose numbers are out of sequence', () => {
    expect(tapVerdict(parseTap('1..2\nok 1\nok 3\n')).problems).to.deep.equal(['test 2 is numbered 3']);
  });
});
