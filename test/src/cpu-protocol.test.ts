/// <reference types="mocha" />
/**
 * `cpu/listModels` over the control protocol: every installed CPU model with
 * its identity and features, and whether this host's KVM runs it — the same
 * answer as planCpuid on this host and as `tsvmm run --cpu help`.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { TsvmmClient } from '@tsvmm/client';
import type { CpuModelListingInfo } from '@tsvmm/protocol';
import { cpuModels, planFor } from './cpu-guest.js';
import { startServer, tsvmmCli, type ServerProcess } from './rpc-harness.js';

describe('cpu/listModels (control protocol)', function () {
  this.timeout(60_000);

  for (const fake of [false, true]) {
    describe(fake ? 'server whose VMs run on the fake accelerator' : "server on this host's KVM", () => {
      let server: ServerProcess | undefined;
      let client: TsvmmClient | undefined;
      let listing: CpuModelListingInfo[] = [];

      before(async () => {
        server = await startServer({ fake });
        client = await TsvmmClient.connect(server.address);
        listing = (await client.cpuListModels()).cpuModels;
      });
      after(async () => {
        await client?.close();
        expect(await server?.stop()).to.equal(0);
      });

      it('lists every model the cpu-model plugins provide, with its plugin, version, identity and features', async () => {
        const defs = await cpuModels();
        expect(listing.map((m) => m.name).sort()).to.deep.equal(defs.map((d) => d.name).sort());
        for (const m of listing) {
          expect(m.plugin, m.name).to.equal('@tsvmm/plugin-cpu-models');
          expect(m.version, m.name).to.be.at.least(1);
          expect(m.features, m.name).to.not.be.empty;
          expect(m.problems, m.name).to.deep.equal([]);
        }
        const haswell = listing.find((m) => m.name === 'Haswell');
        expect(haswell).to.deep.include({ vendor: 'GenuineIntel', family: 6, model: 60, stepping: 4, modelId: 'Intel Core Processor (Haswell)', level: 0xd, xlevel: 0x80000008 });
        expect(haswell?.features).to.include.members(['avx2', 'fma', 'movbe', 'hle', 'rtm', 'bmi1', 'bmi2', 'invpcid']);
        expect(listing.find((m) => m.name === 'Haswell-noTSX')?.features).to.not.include.members(['hle', 'rtm']);
      });

      if (!fake) {
        it("says whether this host's KVM runs each model and which features it lacks, as planCpuid does here", async () => {
          for (const m of listing) {
            const plan = await planFor(m.name);
            expect(m.unavailableFeatures, m.name).to.deep.equal(plan.missing);
            expect(m.runnable, m.name).to.equal(plan.missing.length === 0);
            expect(m.hostUnknownReason, m.name).to.equal(undefined);
          }
          expect(listing.find((m) => m.name === 'host')?.runnable).to.equal(true);
        });

        it("agrees with `tsvmm run --cpu help` on what this host lacks", () => {
          const help = execFileSync(process.execPath, [tsvmmCli, 'run', '--cpu', 'help'], { encoding: 'utf8' });
          for (const m of listing) {
            const line = help.split('\n').find((l) => l.startsWith(`  ${m.name} `));
            expect(line, `--cpu help lists ${m.name}`).to.not.equal(undefined);
            if (m.runnable === false) expect(line).to.include(`[this host lacks: ${m.unavailableFeatures.join(' ')}]`);
            else expect(line).to.not.include('[this host lacks');
          }
        });
      } else {
        it("answers from the VM processes' (fake) accelerator: a plain 64-bit host that runs no Haswell", () => {
          for (const m of listing) expect(m.runnable, m.name).to.be.a('boolean');
          expect(listing.find((m) => m.name === 'Haswell')?.runnable).to.equal(false);
          expect(listing.find((m) => m.name === 'Haswell')?.unavailableFeatures).to.include('avx2');
        });
      }
    });
  }
});
