/**
 * Property test of the split virtqueue parser (OASIS VIRTIO 1.2 §2.7):
 * random descriptor tables, indirect tables and available rings in a guest
 * memory with guard areas around it. Whatever the bytes, pop() never throws,
 * never reads or slices outside guest RAM, never writes anything, and every
 * chain it returns is well-formed and is exactly what following the table
 * by hand gives.
 */
import { expect } from 'chai';
import fc from 'fast-check';
import { GuestMemory } from '@tsvmm/core';
import { SplitQueue, VirtqueueError, type DescriptorChain } from '../src/queue.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../src/spec.js';

const GUARD = 4096;
const RAM_GPA = 0x10000;
const RAM = 0x10000;
const RAM_END = RAM_GPA + RAM;

/** GuestMemory that records every range it handed out or accessed, to prove none lies outside RAM. */
class RecordingMemory extends GuestMemory {
  readonly asked: { gpa: number; length: number; op: string }[] = [];
  override slice(gpa: number, length: number): Uint8Array {
    const view = super.slice(gpa, length);
    this.asked.push({ gpa, length, op: 'slice' });
    return view;
  }
  override read(gpa: number, dst: Uint8Array): void {
    super.read(gpa, dst);
    this.asked.push({ gpa, length: dst.length, op: 'read' });
  }
  override write(gpa: number, src: Uint8Array): void {
    this.asked.push({ gpa, length: src.length, op: 'write' });
    super.write(gpa, src);
  }
}

interface Desc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

const SIZE = 8;
const DESC = RAM_GPA;
const AVAIL = RAM_GPA + 0x1000;
const USED = RAM_GPA + 0x2000;
const INDIRECT = RAM_GPA + 0x3000;

const addrArb = fc.oneof(
  fc.integer({ min: RAM_GPA, max: RAM_END + 64 }).map(BigInt),
  fc.integer({ min: 0, max: RAM_GPA + 64 }).map(BigInt),
  fc.constantFrom(INDIRECT, INDIRECT + 4, INDIRECT + 16).map(BigInt),
  fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
);
const descArb: fc.Arbitrary<Desc> = fc.record({
  addr: addrArb,
  len: fc.oneof(fc.integer({ min: 0, max: 80 }), fc.constantFrom(16, 32, 48, 0xffff_ffff), fc.integer({ min: 0, max: 0xffff_ffff })),
  flags: fc.integer({ min: 0, max: 7 }),
  next: fc.oneof(fc.integer({ min: 0, max: SIZE + 1 }), fc.integer({ min: 0, max: 0xffff })),
});

function layout(memory: GuestMemory, table: Desc[], indirect: Desc[], ring: number[], availIdx: number): void {
  const put = (base: number, i: number, d: Desc): void => {
    memory.writeU64(base + 16 * i, d.addr & ((1n << 64n) - 1n));
    memory.writeU32(base + 16 * i + 8, d.len >>> 0);
    memory.writeU16(base + 16 * i + 12, d.flags);
    memory.writeU16(base + 16 * i + 14, d.next & 0xffff);
  };
  table.forEach((d, i) => put(DESC, i, d));
  indirect.forEach((d, i) => put(INDIRECT, i, d));
  ring.forEach((h, i) => memory.writeU16(AVAIL + 4 + 2 * i, h & 0xffff));
  memory.writeU16(AVAIL + 2, availIdx & 0xffff);
}

/** Follows a chain by hand, reading descriptors with plain DataView reads, for comparison. */
function expectedBuffers(mem: GuestMemory, head: number, indirectOk: boolean): { addr: number; len: number; writable: boolean }[] | 'invalid' {
  const out: { addr: number; len: number; writable: boolean }[] = [];
  let base = DESC;
  let n = SIZE;
  let inIndirect = false;
  let i = head;
  let steps = 0;
  for (;;) {
    if (steps++ >= n || out.length >= SIZE) return 'invalid';
    const a = mem.readU64(base + 16 * i);
    const len = mem.readU32(base + 16 * i + 8);
    const flags = mem.readU16(base + 16 * i + 12);
    const next = mem.readU16(base + 16 * i + 14);
    if (flags & VIRTQ_DESC_F_INDIRECT) {
      if (!indirectOk || inIndirect || flags & VIRTQ_DESC_F_NEXT || len === 0 || len % 16) return 'invalid';
      if (a < BigInt(RAM_GPA) || a + BigInt(len) > BigInt(RAM_END)) return 'invalid';
      base = Number(a);
      n = len / 16;
      inIndirect = true;
      i = 0;
      steps = 0;
      continue;
    }
    if (a < BigInt(RAM_GPA) || a + BigInt(Math.max(len, 1)) > BigInt(RAM_END)) return 'invalid';
    out.push({ addr: Number(a), len, writable: (flags & VIRTQ_DESC_F_WRITE) !== 0 });
    if (!(flags & VIRTQ_DESC_F_NEXT)) return out;
    if (next >= n) return 'invalid';
    i = next;
  }
}

describe('split virtqueue parser (property)', () => {
  it('never throws, stays inside guest RAM, writes nothing, and returns only well-formed chains', () => {
    fc.assert(
      fc.property(
        fc.array(descArb, { minLength: SIZE, maxLength: SIZE }),
        fc.array(descArb, { minLength: 0, maxLength: 6 }),
        fc.array(fc.oneof(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 0, max: 0xffff })), { minLength: SIZE, maxLength: SIZE }),
        fc.integer({ min: 0, max: 0xffff }),
        fc.boolean(),
        (table, indirect, ring, availIdx, indirectOk) => {
          // RAM is followed by a guard area in the same buffer: a stray typed-array access past RAM would land there.
          const buffer = new SharedArrayBuffer(RAM + GUARD);
          new Uint8Array(buffer, RAM).fill(0xa5);
          const mem = new RecordingMemory([{ gpa: RAM_GPA, size: RAM, buffer }]);
          layout(mem, table, indirect, ring, availIdx);
          const before = new Uint8Array(buffer).slice();
          const q = SplitQueue.open(mem, { size: SIZE, descTable: DESC, availRing: AVAIL, usedRing: USED, eventIdx: false, indirectDesc: indirectOk });
          if (q instanceof VirtqueueError) throw q;
          mem.asked.length = 0;
          const chains: DescriptorChain[] = [];
          for (let k = 0; k < SIZE + 2; k++) {
            const r = q.pop();
            if (r.kind === 'empty') break;
            if (r.kind === 'invalid') {
              expect(r.error).to.be.instanceOf(VirtqueueError);
              break;
            }
            chains.push(r.chain);
          }
          for (const a of mem.asked) {
            expect(a.op, 'the parser only reads').to.equal('slice');
            expect(a.gpa >= RAM_GPA && a.gpa + a.length <= RAM_END, `range 0x${a.gpa.toString(16)}+${a.length} in RAM`).to.equal(true);
          }
          expect(Buffer.compare(Buffer.from(new Uint8Array(buffer)), Buffer.from(before)), 'pop() wrote nothing, guard area included').to.equal(0);
          for (const c of chains) {
            expect(c.head).to.be.within(0, SIZE - 1);
            expect(c.buffers.length).to.be.within(1, SIZE);
            for (const b of c.buffers) {
              expect(Number.isSafeInteger(b.addr) && b.addr >= RAM_GPA && b.addr + Math.max(b.len, 1) <= RAM_END, 'buffer in RAM').to.equal(true);
            }
            expect(c.buffers).to.deep.equal(expectedBuffers(mem, c.head, indirectOk));
          }
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('reports a chain as invalid exactly when following it by hand fails', () => {
    fc.assert(
      fc.property(fc.array(descArb, { minLength: SIZE, maxLength: SIZE }), fc.array(descArb, { maxLength: 6 }), fc.integer({ min: 0, max: SIZE - 1 }), fc.boolean(), (table, indirect, head, indirectOk) => {
        const mem = new GuestMemory([{ gpa: RAM_GPA, size: RAM, buffer: new SharedArrayBuffer(RAM) }]);
        layout(mem, table, indirect, [head], 1);
        const q = SplitQueue.open(mem, { size: SIZE, descTable: DESC, availRing: AVAIL, usedRing: USED, eventIdx: false, indirectDesc: indirectOk }) as SplitQueue;
        const r = q.pop();
        const want = expectedBuffers(mem, head, indirectOk);
        if (want === 'invalid') expect(r.kind).to.equal('invalid');
        else expect(r.kind === 'chain' ? r.chain.buffers : r.kind).to.deep.equal(want);
      }),
      { numRuns: 3000 },
    );
  });
});
