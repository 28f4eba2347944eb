/**
 * The split virtqueue against OASIS VIRTIO 1.2 §2.7: chains, indirect
 * tables, used ring, notification suppression both ways, and every kind of
 * malformed input a guest can write.
 */
import { expect } from 'chai';
import { createTestDeviceContext } from '@tsvmm/core/testing';
import type { GuestMemory } from '@tsvmm/core';
import { MockVirtqueue } from '../src/testing/index.js';
import { SplitQueue, VirtqueueError, type PopResult, type QueueConfig, type VirtqueueFault } from '../src/queue.js';
import {
  VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_DESC_F_INDIRECT,
  VIRTQ_DESC_F_NEXT,
  VIRTQ_DESC_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY,
} from '../src/spec.js';

const RAM = 1 << 20;

function setup(opts: { size?: number; eventIdx?: boolean; indirectDesc?: boolean } = {}): {
  memory: GuestMemory;
  driver: MockVirtqueue;
  queue: SplitQueue;
  guardIntact: () => boolean;
} {
  const t = createTestDeviceContext({ ramSize: RAM });
  const driver = new MockVirtqueue(t.memory, { size: opts.size ?? 8, eventIdx: opts.eventIdx ?? false, indirectDesc: opts.indirectDesc ?? false });
  const queue = SplitQueue.open(t.memory, driver.config);
  if (queue instanceof VirtqueueError) throw queue;
  return { memory: t.memory, driver, queue, guardIntact: t.guardIntact };
}

function chainOf(r: PopResult): { head: number; buffers: readonly { addr: number; len: number; writable: boolean }[] } {
  if (r.kind !== 'chain') throw new Error(`expected a chain, got ${r.kind}${r.kind === 'invalid' ? `: ${r.error.message}` : ''}`);
  return r.chain;
}

function faultOf(r: PopResult): VirtqueueFault {
  if (r.kind !== 'invalid') throw new Error(`expected an invalid chain, got ${r.kind}`);
  return r.error.fault;
}

describe('SplitQueue', () => {
  describe('opening (§2.7 alignment and size)', () => {
    const memory = createTestDeviceContext({ ramSize: RAM }).memory;
    const good: QueueConfig = { size: 8, descTable: 0x1000, availRing: 0x2000, usedRing: 0x3000, eventIdx: false, indirectDesc: false };
    const rejects = (change: Partial<QueueConfig>, fault: VirtqueueFault): void => {
      const q = SplitQueue.open(memory, { ...good, ...change });
      expect(q).to.be.instanceOf(VirtqueueError);
      expect((q as VirtqueueError).fault).to.equal(fault);
    };
    it('accepts a well-formed configuration', () => expect(SplitQueue.open(memory, good)).to.be.instanceOf(SplitQueue));
    it('rejects a size that is not a power of 2', () => rejects({ size: 6 }, 'bad-size'));
    it('rejects size 0 and sizes above 32768', () => {
      rejects({ size: 0 }, 'bad-size');
      rejects({ size: 65536 }, 'bad-size');
    });
    it('rejects a descriptor table that is not 16-byte aligned', () => rejects({ descTable: 0x1008 }, 'misaligned-ring'));
    it('rejects a driver area that is not 2-byte aligned', () => rejects({ availRing: 0x2001 }, 'misaligned-ring'));
    it('rejects a device area that is not 4-byte aligned', () => rejects({ usedRing: 0x3002 }, 'misaligned-ring'));
    it('rejects rings outside guest RAM', () => {
      rejects({ descTable: RAM - 64 }, 'ring-outside-ram');
      rejects({ usedRing: RAM }, 'ring-outside-ram');
      rejects({ availRing: 2 ** 60 }, 'ring-outside-ram');
    });
  });

  describe('popping chains (§2.7.5, §2.7.6)', () => {
    it('reports an empty ring', () => {
      const { queue } = setup();
      expect(queue.pop().kind).to.equal('empty');
    });

    it('returns a chain with its buffers in order and their direction', () => {
      const { driver, queue } = setup();
      const { head, addrs } = driver.submit([{ data: new Uint8Array(16) }, { len: 512, writable: true }, { len: 1, writable: true }]);
      const c = chainOf(queue.pop());
      expect(c.head).to.equal(head);
      expect(c.buffers).to.deep.equal([
        { addr: addrs[0], len: 16, writable: false },
        { addr: addrs[1], len: 512, writable: true },
        { addr: addrs[2], len: 1, writable: true },
      ]);
      expect(queue.pop().kind).to.equal('empty');
    });

    it('returns chains in the order the driver made them available', () => {
      const { driver, queue } = setup();
      const a = driver.submit([{ len: 4 }]).head;
      const b = driver.submit([{ len: 4 }]).head;
      expect(chainOf(queue.pop()).head).to.equal(a);
      expect(chainOf(queue.pop()).head).to.equal(b);
    });

    it('wraps the free-running avail index past 65535', () => {
      const { driver, queue } = setup({ size: 4 });
      driver.setAvailIdx(65534);
      queue.nextAvail = 65534;
      driver.submit([{ len: 1 }]);
      driver.submit([{ len: 1 }]);
      driver.submit([{ len: 1 }]);
      expect(queue.pending()).to.equal(3);
      for (let i = 0; i < 3; i++) expect(queue.pop().kind).to.equal('chain');
      expect(queue.nextAvail).to.equal(1);
    });

    it('flattens an indirect table (§2.7.5.3)', () => {
      const { driver, queue } = setup({ indirectDesc: true });
      const { addrs } = driver.submit([{ len: 16 }, { len: 4096, writable: true }, { len: 1, writable: true }], { indirect: true });
      const c = chainOf(queue.pop());
      expect(c.buffers.map((b) => [b.addr, b.len, b.writable])).to.deep.equal([
        [addrs[0], 16, false],
        [addrs[1], 4096, true],
        [addrs[2], 1, true],
      ]);
    });

    it('follows direct descriptors into a final indirect one', () => {
      const { driver, memory, queue } = setup({ indirectDesc: true });
      const table = driver.alloc(32);
      driver.writeDescriptor(0, { addr: 0x9000, len: 8, flags: 0, next: 0 }, table);
      driver.writeDescriptor(1, { addr: 0x9100, len: 8, flags: VIRTQ_DESC_F_WRITE, next: 0 }, table);
      // the indirect table's descriptors chain with NEXT inside the table
      memory.writeU16(table + 12, VIRTQ_DESC_F_NEXT);
      memory.writeU16(table + 14, 1);
      driver.writeDescriptor(3, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 5 });
      driver.writeDescriptor(5, { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(3);
      expect(chainOf(queue.pop()).buffers.map((b) => b.addr)).to.deep.equal([0x8000, 0x9000, 0x9100]);
    });

    it('reads an indirect table that is not 4-byte aligned', () => {
      const { driver, queue } = setup({ indirectDesc: true });
      const table = driver.alloc(40) + 2;
      driver.writeDescriptor(0, { addr: 0x9000, len: 8, flags: VIRTQ_DESC_F_WRITE, next: 0 }, table);
      driver.writeDescriptor(0, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(0);
      expect(chainOf(queue.pop()).buffers).to.deep.equal([{ addr: 0x9000, len: 8, writable: true }]);
    });

    it('ignores VIRTQ_DESC_F_WRITE on the descriptor that points at an indirect table', () => {
      const { driver, queue } = setup({ indirectDesc: true });
      const table = driver.alloc(16);
      driver.writeDescriptor(0, { addr: 0x9000, len: 8, flags: 0, next: 0 }, table);
      driver.writeDescriptor(0, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_WRITE, next: 0 });
      driver.publish(0);
      expect(chainOf(queue.pop()).buffers).to.deep.equal([{ addr: 0x9000, len: 8, writable: false }]);
    });

    it('leaves direction to the device: a writable buffer before a readable one is returned as is', () => {
      const { driver, queue } = setup();
      driver.submit([{ len: 8, writable: true }, { len: 8 }]);
      expect(chainOf(queue.pop()).buffers.map((b) => b.writable)).to.deep.equal([true, false]);
    });
  });

  describe('hostile descriptors', () => {
    it('catches a descriptor loop', () => {
      const { driver, queue, guardIntact } = setup();
      driver.writeDescriptor(0, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 });
      driver.writeDescriptor(1, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('chain-too-long');
      expect(guardIntact()).to.equal(true);
    });

    it('catches a descriptor that links to itself', () => {
      const { driver, queue } = setup();
      driver.writeDescriptor(2, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 2 });
      driver.publish(2);
      expect(faultOf(queue.pop())).to.equal('chain-too-long');
    });

    it('rejects a head index beyond the table', () => {
      const { driver, queue } = setup();
      driver.publish(8);
      expect(faultOf(queue.pop())).to.equal('head-out-of-range');
    });

    it('rejects a next index beyond the table', () => {
      const { driver, queue } = setup();
      driver.writeDescriptor(0, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 0xffff });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('next-out-of-range');
    });

    it('rejects an avail index that moved by more than the queue size', () => {
      const { driver, queue } = setup();
      driver.setAvailIdx(9);
      expect(faultOf(queue.pop())).to.equal('avail-index-jump');
    });

    it('rejects a buffer outside guest RAM', () => {
      const { driver, queue } = setup();
      driver.writeDescriptor(0, { addr: RAM, len: 1, flags: 0, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('buffer-outside-ram');
    });

    it('rejects a buffer that runs past the end of guest RAM', () => {
      const { driver, queue } = setup();
      driver.writeDescriptor(0, { addr: RAM - 16, len: 17, flags: VIRTQ_DESC_F_WRITE, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('buffer-outside-ram');
    });

    it('rejects an address whose end overflows 64 bits', () => {
      const { driver, queue } = setup();
      driver.writeDescriptor(0, { addr: 0xffff_ffff_ffff_fff0n, len: 0x20, flags: 0, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('buffer-outside-ram');
    });

    it('rejects an address above 2^53 that a float would round into RAM', () => {
      const { driver, queue } = setup();
      driver.writeDescriptor(0, { addr: 0x20_0000_0000_0000n, len: 8, flags: 0, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('buffer-outside-ram');
    });

    it('rejects an indirect descriptor when VIRTIO_F_INDIRECT_DESC was not negotiated', () => {
      const { driver, queue } = setup({ indirectDesc: false });
      driver.writeDescriptor(0, { addr: 0x8000, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('indirect-not-negotiated');
    });

    it('rejects an indirect table whose length is not a multiple of 16', () => {
      const { driver, queue } = setup({ indirectDesc: true });
      driver.writeDescriptor(0, { addr: 0x8000, len: 24, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('indirect-bad-length');
    });

    it('rejects an empty indirect table', () => {
      const { driver, queue } = setup({ indirectDesc: true });
      driver.writeDescriptor(0, { addr: 0x8000, len: 0, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('indirect-bad-length');
    });

    it('rejects an indirect table outside guest RAM', () => {
      const { driver, queue, guardIntact } = setup({ indirectDesc: true });
      driver.writeDescriptor(0, { addr: RAM - 16, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('indirect-outside-ram');
      expect(guardIntact()).to.equal(true);
    });

    it('rejects an indirect descriptor inside an indirect table', () => {
      const { driver, queue } = setup({ indirectDesc: true });
      const table = driver.alloc(16);
      driver.writeDescriptor(0, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }, table);
      driver.writeDescriptor(0, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('nested-indirect');
    });

    it('rejects VIRTQ_DESC_F_INDIRECT together with VIRTQ_DESC_F_NEXT', () => {
      const { driver, queue } = setup({ indirectDesc: true });
      const table = driver.alloc(16);
      driver.writeDescriptor(0, { addr: table, len: 16, flags: VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, next: 1 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('indirect-with-next');
    });

    it('catches a loop inside an indirect table', () => {
      const { driver, queue } = setup({ indirectDesc: true });
      const table = driver.alloc(32);
      driver.writeDescriptor(0, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 1 }, table);
      driver.writeDescriptor(1, { addr: 0x8000, len: 4, flags: VIRTQ_DESC_F_NEXT, next: 0 }, table);
      driver.writeDescriptor(0, { addr: table, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('chain-too-long');
    });

    it('rejects an indirect table with more descriptors than the queue has entries', () => {
      const { driver, queue } = setup({ size: 4, indirectDesc: true });
      const table = driver.alloc(16 * 8);
      for (let i = 0; i < 8; i++) driver.writeDescriptor(i, { addr: 0x8000, len: 4, flags: i < 7 ? VIRTQ_DESC_F_NEXT : 0, next: i + 1 }, table);
      driver.writeDescriptor(0, { addr: table, len: 16 * 8, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      driver.publish(0);
      expect(faultOf(queue.pop())).to.equal('chain-too-long');
    });
  });

  describe('the used ring (§2.7.8)', () => {
    it('writes the element, then publishes the used index', () => {
      const { driver, queue } = setup();
      const { head } = driver.submit([{ len: 8, writable: true }]);
      queue.pop();
      queue.addUsed(head, 5);
      expect(driver.usedIdx()).to.equal(1);
      expect(driver.usedElem(0)).to.deep.equal({ id: head, len: 5 });
    });

    it('wraps around the ring', () => {
      const { driver, queue } = setup({ size: 2 });
      for (let i = 0; i < 5; i++) {
        const { head } = driver.submit([{ len: 1 }]);
        chainOf(queue.pop());
        queue.addUsed(head, i);
      }
      expect(driver.usedIdx()).to.equal(5);
      expect(driver.usedElem(4).len).to.equal(4);
    });

    it('marks the used ring dirty for migration', () => {
      const t = createTestDeviceContext({ ramSize: RAM });
      const driver = new MockVirtqueue(t.memory, { size: 8 });
      const queue = SplitQueue.open(t.memory, driver.config) as SplitQueue;
      t.memory.setDirtyTracking(true);
      t.memory.takeDeviceDirty(0);
      queue.addUsed(0, 0);
      const page = driver.config.usedRing >>> 12;
      const bitmap = t.memory.takeDeviceDirty(0);
      expect(((bitmap[page >>> 5] ?? 0) >>> (page & 31)) & 1).to.equal(1);
    });
  });

  describe('used buffer notifications (§2.7.7)', () => {
    it('notifies unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
      const { driver, queue } = setup();
      queue.addUsed(0, 0);
      expect(queue.needsNotification()).to.equal(true);
      driver.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
      queue.addUsed(0, 0);
      expect(queue.needsNotification()).to.equal(false);
    });

    it('with VIRTIO_F_EVENT_IDX, notifies only when used->idx passes used_event', () => {
      const { driver, queue } = setup({ eventIdx: true });
      driver.setUsedEvent(2);
      queue.addUsed(0, 0);
      expect(queue.needsNotification(), 'first notification').to.equal(true);
      queue.addUsed(0, 0);
      expect(queue.needsNotification(), 'idx 2: event 2 not yet passed').to.equal(false);
      queue.addUsed(0, 0);
      expect(queue.needsNotification(), 'idx 3 passes event 2').to.equal(true);
      queue.addUsed(0, 0);
      expect(queue.needsNotification(), 'idx 4, event still 2').to.equal(false);
    });

    it('with VIRTIO_F_EVENT_IDX, ignores VIRTQ_AVAIL_F_NO_INTERRUPT', () => {
      const { driver, queue } = setup({ eventIdx: true });
      driver.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
      queue.addUsed(0, 0);
      expect(queue.needsNotification()).to.equal(true);
    });
  });

  describe('available buffer notifications (§2.7.10)', () => {
    it('sets and clears VIRTQ_USED_F_NO_NOTIFY without EVENT_IDX', () => {
      const { driver, queue } = setup();
      queue.disableNotification();
      expect(driver.usedFlags()).to.equal(VIRTQ_USED_F_NO_NOTIFY);
      expect(queue.enableNotification()).to.equal(false);
      expect(driver.usedFlags()).to.equal(0);
    });

    it('with EVENT_IDX, publishes avail_event as the next index it will read', () => {
      const { driver, queue } = setup({ eventIdx: true });
      driver.submit([{ len: 1 }]);
      queue.pop();
      expect(queue.enableNotification()).to.equal(false);
      expect(driver.availEvent()).to.equal(1);
    });

    it('reports buffers that arrived while notifications were off', () => {
      const { driver, queue } = setup();
      queue.disableNotification();
      driver.submit([{ len: 1 }]);
      expect(queue.enableNotification()).to.equal(true);
    });
  });
});
