/**
 * Real guest code: PIO exits (api.rst section 5, KVM_EXIT_IO) from flat
 * 32-bit protected mode and from real mode, both entered with KVM_SET_SREGS.
 * On this host both are run by the kernel's instruction emulator (kvm_pvm).
 */
import { expect } from 'chai';
import { GuestCode } from './guest-code.js';
import { closeLeftoverVms, createTestVm, readLe, runUntilEvent, writeLe } from './harness.js';
import type { PioAccess } from './harness.js';

const DATA_PORT = 0x10;
const IN_PORT = 0x20;
const ECHO_PORT = 0x21;

/** out DATA_PORT, al for al = n .. 1, then hlt */
function countdown(bits: 16 | 32, n: number): GuestCode {
  return new GuestCode(bits).movReg32('ecx', n).movDx(DATA_PORT).label('loop').movEaxEcx().outDx(1).decEcx().jnz('loop').hlt();
}

/** in eax/ax/al from IN_PORT, echo it to ECHO_PORT with the same width, hlt */
function echo(bits: 16 | 32, size: 1 | 2 | 4): GuestCode {
  return new GuestCode(bits).movDx(IN_PORT).inDx(size).movDx(ECHO_PORT).outDx(size).hlt();
}


for (const mode of ['protected', 'real'] as const) {
  const bits = mode === 'protected' ? 32 : 16;

  describe(`PIO exits in ${mode} mode`, () => {

    afterEach(closeLeftoverVms);

    it('hands every OUT to the pio handler with port, size and value, then reports hlt', async () => {
      const t = createTestVm(countdown(bits, 50), { mode });
      try {
        const seen: PioAccess[] = [];
        const { event, vcpu } = await runUntilEvent(t, {
          pio(port, size, isWrite, data, v) {
            seen.push({ port, size, isWrite, value: readLe(data), vcpu: v.id });
          },
        });
        expect(event).to.deep.equal({ kind: 'hlt' });
        expect(seen).to.have.length(50);
        expect(seen[0]).to.deep.equal({ port: DATA_PORT, size: 1, isWrite: true, value: 50, vcpu: 0 });
        expect(seen.map((s) => s.value)).to.deep.equal(Array.from({ length: 50 }, (_, i) => 50 - i));
        const stats = vcpu.exitStats();
        expect(stats.byReason).to.deep.equal({ KVM_EXIT_IO: 50, KVM_EXIT_HLT: 1 });
        expect(stats.posts).to.equal(51);
      } finally {
        await t.vm.stopVcpus();
        t.close();
      }
    });

    for (const size of [1, 2, 4] as const) {
      it(`returns the value JS writes for a ${size}-byte IN`, async () => {
        const t = createTestVm(echo(bits, size), { mode });
        const value = [0, 0xa5, 0xbeef, 0, 0x12345678][size] ?? 0;
        try {
          const echoed: number[] = [];
          const { event } = await runUntilEvent(t, {
            pio(port, sz, isWrite, data) {
              if (port === IN_PORT && !isWrite) {
                expect(sz).to.equal(size);
                writeLe(data, value);
              } else if (port === ECHO_PORT && isWrite) {
                echoed.push(readLe(data));
              }
            },
          });
          expect(event.kind).to.equal('hlt');
          expect(echoed).to.deep.equal([value]);
        } finally {
          await t.vm.stopVcpus();
          t.close();
        }
      });
    }
  });
}

describe('string PIO', () => {
  afterEach(closeLeftoverVms);

  it('calls the handler once per element of rep outsb and rep insb', async () => {
    const SRC = 0x8000;
    const DST = 0x9000;
    const code = new GuestCode(32)
      .movReg32('esi', SRC)
      .movReg32('ecx', 5)
      .movDx(DATA_PORT)
      .repOutsb()
      .movReg32('edi', DST)
      .movReg32('ecx', 3)
      .movDx(IN_PORT)
      .repInsb()
      .hlt();
    const t = createTestVm(code);
    try {
      t.ram.bytes(SRC, 5).set([1, 2, 3, 4, 5]);
      const outs: number[] = [];
      let next = 0xa0;
      const { event } = await runUntilEvent(t, {
        pio(port, size, isWrite, data) {
          expect(size).to.equal(1);
          if (isWrite) outs.push(readLe(data));
          else if (port === IN_PORT) writeLe(data, next++);
        },
      });
      expect(event.kind).to.equal('hlt');
      expect(outs).to.deep.equal([1, 2, 3, 4, 5]);
      expect(Array.from(t.ram.bytes(DST, 3))).to.deep.equal([0xa0, 0xa1, 0xa2]);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });
});

describe('PIO handlers returning promises', () => {

  afterEach(closeLeftoverVms);

  it('resumes the vCPU only when the promise settles, with the value written meanwhile', async () => {
    const t = createTestVm(echo(32, 4));
    try {
      const echoed: number[] = [];
      const { event } = await runUntilEvent(t, {
        async pio(port, _size, isWrite, data) {
          if (port === IN_PORT) {
            await new Promise((resolve) => setTimeout(resolve, 20));
            writeLe(data, 0xcafe);
          } else if (isWrite) {
            echoed.push(readLe(data));
          }
        },
      });
      expect(event.kind).to.equal('hlt');
      expect(echoed).to.deep.equal([0xcafe]);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('parks the vCPU and reports handler-error when a handler throws', async () => {
    const t = createTestVm(countdown(32, 3));
    try {
      const { event, vcpu } = await runUntilEvent(t, {
        pio() {
          throw new Error('device on fire');
        },
      });
      expect(event.kind).to.equal('handler-error');
      if (event.kind === 'handler-error') expect((event.error as Error).message).to.equal('device on fire');
      expect(vcpu.runState).to.equal('event');
      // The guest is parked on its first OUT: ecx still holds 3.
      expect(vcpu.getRegs().rcx).to.equal(3n);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });
});
