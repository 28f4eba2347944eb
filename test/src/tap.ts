/**
 * A parser for the TAP (Test Anything Protocol, version 12/13 core) that the
 * guest kit prints on the serial port (test/guest/lib/tap.h):
 *
 *   1..N                 plan (may come first or last)
 *   ok 1 - description   result; "not ok" is a failure
 *   ok 2 # SKIP reason   directive: SKIP passes, TODO failures do not count
 *   # text               diagnostic
 *   Bail out! reason     the producer gave up
 *
 * Lines that are none of these (guest chatter such as "echo: ...") are
 * ignored, as TAP consumers must.
 */

export interface TapPlan {
  count: number;
  /** text after '#' on the plan line ("1..0 # SKIP why") */
  reason?: string;
}

export type TapDirectiveKind = 'SKIP' | 'TODO';

export interface TapDirective {
  kind: TapDirectiveKind;
  reason: string;
}

export interface TapTestResult {
  ok: boolean;
  /** the test number printed, or the previous number + 1 when absent */
  number: number;
  description: string;
  directive?: TapDirective;
}

export interface TapDocument {
  /** the first plan line, or null when there is none */
  plan: TapPlan | null;
  /** how many plan lines appeared (more than one is an error) */
  planCount: number;
  results: TapTestResult[];
  diagnostics: string[];
  bailOut: string | null;
}

const PLAN = /^1\.\.(\d+)\s*(?:#\s*(.*))?$/;
const RESULT = /^(not )?ok\b\s*(\d+)?\s*(?:-\s*)?(.*)$/;
const DIRECTIVE = /\s*(?<!\\)#\s*(SKIP|TODO)\S*\s*(.*)$/i;
const DIAGNOSTIC = /^#\s?(.*)$/;
const BAIL_OUT = /^Bail out!\s*(.*)$/;

export function parseTap(text: string): TapDocument {
  const doc: TapDocument = { plan: null, planCount: 0, results: [], diagnostics: [], bailOut: null };
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    let m: RegExpExecArray | null;
    if ((m = PLAN.exec(line))) {
      doc.planCount++;
      if (doc.plan === null) {
        doc.plan = { count: Number(m[1]) };
        if (m[2] !== undefined) doc.plan.reason = m[2].trim();
      }
    } else if ((m = RESULT.exec(line))) {
      const previous = doc.results.at(-1)?.number ?? 0;
      const result: TapTestResult = {
        ok: m[1] === undefined,
        number: m[2] === undefined ? previous + 1 : Number(m[2]),
        description: m[3] ?? '',
      };
      const d = DIRECTIVE.exec(result.description);
      if (d) {
        result.directive = { kind: (d[1] as string).toUpperCase() as TapDirectiveKind, reason: (d[2] ?? '').trim() };
        result.description = result.description.slice(0, d.index);
      }
      result.description = result.description.trim();
      doc.results.push(result);
    } else if ((m = BAIL_OUT.exec(line))) {
      doc.bailOut ??= (m[1] ?? '').trim();
    } else if ((m = DIAGNOSTIC.exec(line))) {
      doc.diagnostics.push(m[1] ?? '');
    }
  }
  return doc;
}

export interface TapVerdict {
  passed: boolean;
  /** results that count as failures (not ok, unless TODO) */
  failures: TapTestResult[];
  /** protocol problems: missing or repeated plan, count or numbering mismatch, bail out */
  problems: string[];
}

/** Whether the document is a complete, passing run. */
export function tapVerdict(doc: TapDocument): TapVerdict {
  const problems: string[] = [];
  if (doc.plan === null) problems.push('no plan line (1..N)');
  if (doc.planCount > 1) problems.push(`${doc.planCount} plan lines (the guest may have restarted)`);
  if (doc.plan !== null && doc.results.length !== doc.plan.count) {
    problems.push(`planned ${doc.plan.count} tests but ${doc.results.length} ran`);
  }
  doc.results.forEach((r, i) => {
    if (r.number !== i + 1) problems.push(`test ${i + 1} is numbered ${r.number}`);
  });
  if (doc.bailOut !== null) problems.push(`bailed out: ${doc.bailOut}`);
  const failures = doc.results.filter((r) => !r.ok && r.directive?.kind !== 'TODO');
  return { passed: problems.length === 0 && failures.length === 0, failures, problems };
}
