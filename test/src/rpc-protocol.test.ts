/**
 * packages/protocol: one schema everything is generated from or checked
 * against — the JSON Schema `tsvmm protocol schema` prints, docs/protocol.md
 * (stale → this test fails; `npm run docs:protocol` regenerates it) and the
 * Python client's method table.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import {
  allMessages,
  defineRequest,
  ErrorCodes,
  PROTOCOL_VERSION,
  protocolJsonSchema,
  renderProtocolMarkdown,
  serverRequests,
  VmCreate,
} from '@tsvmm/protocol';
import { repoRoot, tsvmmCli } from './rpc-harness.js';

describe('rpc protocol definitions', () => {
  it('has a semver protocol version', () => {
    expect(PROTOCOL_VERSION).to.match(/^\d+\.\d+\.\d+$/);
  });

  it('defines the methods and notifications issue 3 asks for', () => {
    const methods = allMessages.map((m) => m.method);
    expect(methods).to.include.members([
      'initialize', 'initialized', 'shutdown', 'exit', '$/cancelRequest', '$/progress', 'window/logMessage',
      'vm/create', 'vm/start', 'vm/pause', 'vm/resume', 'vm/reset', 'vm/shutdown', 'vm/destroy', 'vm/list', 'vm/status',
      'device/list', 'device/add', 'device/remove', 'console/write', 'plugin/list', 'machine/listTypes', 'cpu/listModels',
      'host/capabilities', 'vm/stateChanged', 'device/added', 'device/removed', 'console/output',
    ]);
    expect(new Set(methods).size).to.equal(methods.length);
  });

  it('gives every request a params and a result schema and documents its application errors', () => {
    for (const m of allMessages) {
      expect(m.doc.length, m.method).to.be.greaterThan(10);
      if (m.kind === 'request') expect(m.result, m.method).to.not.equal(undefined);
      for (const e of m.errors ?? []) expect(ErrorCodes, `${m.method}: ${e}`).to.have.property(e);
    }
  });

  it('takes the same machine description as tsvmm run --config', async () => {
    const core = await import('@tsvmm/core');
    const protocol = await import('@tsvmm/protocol');
    expect(core.machineDescriptionSchema).to.equal(protocol.machineDescriptionSchema);
    expect(VmCreate.params.safeParse({ description: { kernel: 'k', memory: '64M', smp: 2 } }).success).to.equal(true);
  });

  it('marks a deprecated method and field in the JSON Schema', () => {
    const old = defineRequest('vm/old', {
      doc: 'An example of a deprecated method.',
      since: '1.0.0',
      deprecated: 'use vm/new',
      params: z.strictObject({ vmId: z.string(), legacy: z.boolean().optional().meta({ deprecated: true }) }),
      result: z.null(),
    });
    const s = z.toJSONSchema(old.params) as { properties: Record<string, { deprecated?: boolean }> };
    expect(s.properties['legacy']?.deprecated).to.equal(true);
    expect(old.deprecated).to.equal('use vm/new');
  });

  it('prints a JSON Schema of every message with `tsvmm protocol schema`', () => {
    const out = execFileSync(process.execPath, [tsvmmCli, 'protocol', 'schema'], { encoding: 'utf8' });
    const doc = JSON.parse(out) as ReturnType<typeof protocolJsonSchema>;
    expect(doc.protocolVersion).to.equal(PROTOCOL_VERSION);
    expect(Object.keys(doc.messages).sort()).to.deep.equal(allMessages.map((m) => m.method).sort());
    const create = doc.messages['vm/create'] as { params: { required: string[] }; workDoneProgress: boolean };
    expect(create.params.required).to.deep.equal(['description']);
    expect(create.workDoneProgress).to.equal(true);
    expect(doc.errorCodes['InvalidParams']?.code).to.equal(-32602);
  });

  it('keeps docs/protocol.md in step with the schemas (run `npm run docs:protocol` when this fails)', () => {
    const file = path.join(repoRoot, 'docs/protocol.md');
    expect(fs.existsSync(file), 'docs/protocol.md is missing: run `npm run docs:protocol`').to.equal(true);
    const committed = fs.readFileSync(file, 'utf8');
    expect(committed === renderProtocolMarkdown(), 'docs/protocol.md is stale: run `npm run docs:protocol` and commit it').to.equal(true);
  });

  it('keeps the Python client method table in step with the protocol', () => {
    const out = execFileSync('python3', [path.join(repoRoot, 'examples/python/tsvmm_client.py'), '--list-methods'], { encoding: 'utf8' });
    const table = JSON.parse(out) as Record<string, string>;
    const expected = Object.fromEntries(
      [...serverRequests.keys()].filter((m) => !['initialize', 'shutdown'].includes(m)).map((m) => [m, 'request']),
    );
    expect(table).to.deep.equal(expected);
  });
});
