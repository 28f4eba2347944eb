/**
 * Real guest code: MMIO exits (api.rst section 5, KVM_EXIT_MMIO) for
 * addresses without a memslot, and for writes to a KVM_MEM_READONLY slot.
 */
import { expect } from 'chai';
import { GuestRam, KVM_MEM_READONLY } from '../src/index.js';
import { GuestCode } from './guest-code.js';
import { closeLeftoverVms, createTestVm, readLe, runUntilEvent, writeLe } from './harness.js';

const MMIO_BASE = 0xd000_0000;
const ECHO_PORT = 0x21;

interface MmioAccess {
  addr: number;
  len: number;
  isWrite: boolean;
  value: number;
}


describe('MMIO exits', () => {


  afterEach(closeLeftoverVms);

  it('hands a write and a read of unmapped memory to the mmio handler', async () => {
    const code = new GuestCode(32)
      .movMemImm32(MMIO_BASE, 0xdeadbeef)
      .movEaxMem(MMIO_BASE + 4)
      .movDx(ECHO_PORT)
      .outDx(4)
      .hlt();
    const t = createTestVm(code);
    try {
      const accesses: MmioAccess[] = [];
      const echoed: number[] = [];
      const { event } = await runUntilEvent(t, {
        mmio(addr, len, isWrite, data) {
          accesses.push({ addr, len, isWrite, value: isWrite ? readLe(data) : 0 });
          if (!isWrite) writeLe(data, 0x11223344);
        },
        pio(_port, _size, _isWrite, data) {
          echoed.push(readLe(data));
        },
      });
      expect(event.kind).to.equal('hlt');
      expect(accesses).to.deep.equal([
        { addr: MMIO_BASE, len: 4, isWrite: true, value: 0xdeadbeef },
        { addr: MMIO_BASE + 4, len: 4, isWrite: false, value: 0 },
      ]);
      expect(echoed).to.deep.equal([0x11223344]);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('reads a KVM_MEM_READONLY slot from memory and turns writes to it into MMIO exits', async () => {
    const ROM_BASE = 0x10_0000;
    const code = new GuestCode(32)
      .movEaxMem(ROM_BASE)
      .movDx(ECHO_PORT)
      .outDx(4)
      .movMemImm32(ROM_BASE + 8, 0x5555aaaa)
      .hlt();
    const t = createTestVm(code);
    const rom = GuestRam.allocate(4096, { name: 'tsvmm-test-rom' });
    new DataView(rom.buffer).setUint32(0, 0xfeedf00d, true);
    t.vm.setUserMemoryRegion({ slot: 1, guestPhysAddr: ROM_BASE, ram: rom, flags: KVM_MEM_READONLY });
    try {
      const echoed: number[] = [];
      const writes: MmioAccess[] = [];
      const { event } = await runUntilEvent(t, {
        pio(_port, _size, _isWrite, data) {
          echoed.push(readLe(data));
        },
        mmio(addr, len, isWrite, data) {
          writes.push({ addr, len, isWrite, value: readLe(data) });
        },
      });
      expect(event.kind).to.equal('hlt');
      expect(echoed).to.deep.equal([0xfeedf00d]);
      expect(writes).to.deep.equal([{ addr: ROM_BASE + 8, len: 4, isWrite: true, value: 0x5555aaaa }]);
      expect(new DataView(rom.buffer).getUint32(8, true)).to.equal(0);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });

  it('lets the guest and JS share RAM through the SharedArrayBuffer', async () => {
    const DATA = 0x8000;
    const code = new GuestCode(32).movEaxMem(DATA).movMemEax(DATA + 4).hlt();
    const t = createTestVm(code);
    try {
      new DataView(t.ram.buffer).setUint32(DATA, 0x0badcafe, true);
      const { event } = await runUntilEvent(t);
      expect(event.kind).to.equal('hlt');
      expect(new DataView(t.ram.buffer).getUint32(DATA + 4, true)).to.equal(0x0badcafe);
    } finally {
      await t.vm.stopVcpus();
      t.close();
    }
  });
});
