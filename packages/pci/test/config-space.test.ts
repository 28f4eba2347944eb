/// <reference types="mocha" />
import { expect } from 'chai';
import fc from 'fast-check';
import {
  PCI_BASE_ADDRESS_0,
  PCI_CAP_ID_MSI,
  PCI_CAP_ID_VNDR,
  PCI_CAPABILITY_LIST,
  PCI_CLASS_DEVICE,
  PCI_COMMAND,
  PCI_HEADER_TYPE,
  PCI_INTERRUPT_LINE,
  PCI_INTERRUPT_PIN,
  PCI_STATUS,
  PCI_STATUS_CAP_LIST,
  PCI_STATUS_REC_MASTER_ABORT,
  PCI_SUBSYSTEM_VENDOR_ID,
  PCI_VENDOR_ID,
  PciConfigError,
  PciConfigSpace,
  addSlotIdCapability,
} from '../src/index.js';

const ident = { vendorId: 0x1b36, deviceId: 0x0005, classCode: 0x00ff };

describe('PciConfigSpace (PCI 3.0 §6.1-6.2)', () => {
  describe('header', () => {
    it('reads back vendor, device, class and header type', () => {
      const c = new PciConfigSpace('d', { ...ident, revision: 2, progIf: 0x10, multifunction: true, interruptPin: 1 });
      expect(c.read(PCI_VENDOR_ID, 4)).to.equal(0x00051b36);
      expect(c.read(PCI_CLASS_DEVICE, 2)).to.equal(0x00ff);
      expect(c.read(0x08, 4)).to.equal(0x00ff1002);
      expect(c.read(PCI_HEADER_TYPE, 1)).to.equal(0x80);
      expect(c.read(PCI_INTERRUPT_PIN, 1)).to.equal(1);
    });

    it("gives type 0 functions QEMU's subsystem IDs 1af4:1100 unless set", () => {
      expect(new PciConfigSpace('d', ident).read(PCI_SUBSYSTEM_VENDOR_ID, 4)).to.equal(0x11001af4);
      expect(new PciConfigSpace('d', { ...ident, subsystemVendorId: 0x8086, subsystemId: 1 }).read(PCI_SUBSYSTEM_VENDOR_ID, 4)).to.equal(0x00018086);
    });

    it('ignores writes to read-only identity registers', () => {
      const c = new PciConfigSpace('d', ident);
      c.write(PCI_VENDOR_ID, 4, 0xffffffff);
      c.write(0x08, 4, 0);
      expect(c.read(PCI_VENDOR_ID, 4)).to.equal(0x00051b36);
      expect(c.read(PCI_CLASS_DEVICE, 2)).to.equal(0x00ff);
    });

    it('lets software write only Command I/O, Memory, Master, SERR and INTx Disable', () => {
      const c = new PciConfigSpace('d', ident);
      c.write(PCI_COMMAND, 2, 0xffff);
      expect(c.read(PCI_COMMAND, 2)).to.equal(0x0507);
    });

    it('clears Status error bits written as 1 and keeps the others', () => {
      const c = new PciConfigSpace('d', ident);
      c.set16(PCI_STATUS, PCI_STATUS_REC_MASTER_ABORT | 0x8000 | PCI_STATUS_CAP_LIST);
      c.write(PCI_STATUS, 2, PCI_STATUS_REC_MASTER_ABORT);
      expect(c.read(PCI_STATUS, 2)).to.equal(0x8000 | PCI_STATUS_CAP_LIST);
      c.write(PCI_STATUS, 2, 0);
      expect(c.read(PCI_STATUS, 2)).to.equal(0x8000 | PCI_STATUS_CAP_LIST);
    });

    it('byte, word and dword accesses see the same little-endian bytes', () => {
      const c = new PciConfigSpace('d', ident);
      c.write(PCI_INTERRUPT_LINE, 1, 0x0b);
      expect(c.read(0x3c, 4) & 0xff).to.equal(0x0b);
      expect(c.read(0x02, 2)).to.equal(0x0005);
      expect(c.read(0x03, 1)).to.equal(0x00);
    });

    it('rejects an access outside the 256 bytes', () => {
      const c = new PciConfigSpace('d', ident);
      expect(() => c.read(0xfe, 4)).to.throw(PciConfigError, /outside/);
    });
  });

  describe('BAR sizing (§6.2.5.1): all ones reads back the size mask and type bits', () => {
    const sized = (c: PciConfigSpace, reg: number): number => {
      c.write(reg, 4, 0xffffffff);
      return c.read(reg, 4);
    };

    it('I/O BAR of 256 bytes', () => {
      const c = new PciConfigSpace('d', ident);
      c.defineBar(1, { kind: 'io', size: 256 });
      expect(c.read(PCI_BASE_ADDRESS_0 + 4, 4)).to.equal(0x1);
      expect(sized(c, PCI_BASE_ADDRESS_0 + 4)).to.equal(0xffffff01);
    });

    it('32-bit memory BAR of 4 KiB', () => {
      const c = new PciConfigSpace('d', ident);
      c.defineBar(0, { kind: 'mem32', size: 4096 });
      expect(sized(c, PCI_BASE_ADDRESS_0)).to.equal(0xfffff000);
    });

    it('32-bit prefetchable memory BAR shows bit 3', () => {
      const c = new PciConfigSpace('d', ident);
      c.defineBar(0, { kind: 'mem32', size: 1 << 20, prefetchable: true });
      expect(sized(c, PCI_BASE_ADDRESS_0)).to.equal(0xfff00008);
    });

    it('64-bit prefetchable memory BAR of 1 MiB uses two registers', () => {
      const c = new PciConfigSpace('d', ident);
      c.defineBar(2, { kind: 'mem64', size: 1 << 20, prefetchable: true });
      expect(sized(c, PCI_BASE_ADDRESS_0 + 8)).to.equal(0xfff0000c);
      expect(sized(c, PCI_BASE_ADDRESS_0 + 12)).to.equal(0xffffffff);
    });

    it('64-bit BAR of 8 GiB has read-only low dword address bits', () => {
      const c = new PciConfigSpace('d', ident);
      c.defineBar(0, { kind: 'mem64', size: 8 * 2 ** 30 });
      expect(sized(c, PCI_BASE_ADDRESS_0)).to.equal(0x00000004);
      expect(sized(c, PCI_BASE_ADDRESS_0 + 4)).to.equal(0xfffffffe);
    });

    it('an undefined BAR reads 0 and ignores writes', () => {
      const c = new PciConfigSpace('d', ident);
      expect(sized(c, PCI_BASE_ADDRESS_0 + 20)).to.equal(0);
    });

    it('barAddress combines both halves of a 64-bit BAR', () => {
      const c = new PciConfigSpace('d', ident);
      const bar = c.defineBar(0, { kind: 'mem64', size: 4096 });
      c.write(PCI_BASE_ADDRESS_0, 4, 0x12345000);
      c.write(PCI_BASE_ADDRESS_0 + 4, 4, 0x1);
      expect(c.barAddress(bar)).to.equal(0x1_12345000);
    });

    it('refuses overlapping, misplaced and badly sized BARs', () => {
      const c = new PciConfigSpace('d', ident);
      c.defineBar(4, { kind: 'mem64', size: 4096 });
      expect(() => c.defineBar(5, { kind: 'io', size: 16 })).to.throw(/overlaps BAR4/);
      expect(() => c.defineBar(5, { kind: 'mem64', size: 4096 })).to.throw(/does not exist/);
      expect(() => c.defineBar(0, { kind: 'mem32', size: 3000 })).to.throw(/power of two/);
      expect(() => c.defineBar(0, { kind: 'io', size: 2 })).to.throw(/I\/O BAR/);
      expect(() => new PciConfigSpace('b', { ...ident, headerType: 1 }).defineBar(2, { kind: 'io', size: 16 })).to.throw(/BAR0-BAR1/);
    });
  });

  describe('capability list (§6.7)', () => {
    it('places the first capability at 0x40, links new ones at the head and sets Status.Capabilities List', () => {
      const c = new PciConfigSpace('d', ident);
      expect(c.read(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST).to.equal(0);
      const a = c.addCapability(PCI_CAP_ID_VNDR, 8);
      const b = c.addCapability(PCI_CAP_ID_MSI, 14);
      expect(a).to.equal(0x40);
      expect(b).to.equal(0x48);
      expect(c.read(PCI_CAPABILITY_LIST, 1)).to.equal(0x48);
      expect(c.read(0x48, 2)).to.equal(0x4005);
      expect(c.read(0x40, 2)).to.equal(0x0009);
      expect(c.read(PCI_STATUS, 2) & PCI_STATUS_CAP_LIST).to.equal(PCI_STATUS_CAP_LIST);
      expect(c.walkCapabilities().map((x) => x.id)).to.deep.equal([PCI_CAP_ID_MSI, PCI_CAP_ID_VNDR]);
      expect(c.findCapability(PCI_CAP_ID_VNDR)).to.equal(0x40);
      expect(c.findCapability(0x11)).to.equal(undefined);
    });

    it('keeps ID and next pointer read-only', () => {
      const c = new PciConfigSpace('d', ident);
      const a = c.addCapability(PCI_CAP_ID_VNDR, 4);
      c.write(a, 2, 0xffff);
      c.write(PCI_CAPABILITY_LIST, 1, 0x80);
      expect(c.read(a, 2)).to.equal(0x0009);
      expect(c.read(PCI_CAPABILITY_LIST, 1)).to.equal(a);
    });

    it('skips reserved device registers and refuses overlaps and a full space', () => {
      const c = new PciConfigSpace('d', ident);
      c.reserve(0x40, 0x24);
      expect(c.addCapability(PCI_CAP_ID_VNDR, 4)).to.equal(0x64);
      expect(() => c.addCapability(PCI_CAP_ID_VNDR, 4, { offset: 0x60 })).to.throw(/overlaps/);
      expect(() => c.addCapability(PCI_CAP_ID_VNDR, 4, { offset: 0x42 })).to.throw(/dword aligned/);
      expect(() => c.addCapability(PCI_CAP_ID_VNDR, 0x9c)).to.throw(/no room/);
    });

    it('adds a Slot Identification capability as QEMU: First In Chassis, writable non-volatile chassis number', () => {
      const c = new PciConfigSpace('br', { ...ident, headerType: 1 });
      const cap = addSlotIdCapability(c, 7);
      expect(c.read(cap, 4)).to.equal(0x07200004);
      c.snapshotResetState();
      c.write(cap + 3, 1, 9);
      c.reset();
      expect(c.read(cap + 3, 1)).to.equal(9);
      expect(() => addSlotIdCapability(c, 0)).to.throw(/chassis number 0/);
    });
  });

  describe('reset', () => {
    it('restores the image snapshotted at attach and runs reset listeners', () => {
      const c = new PciConfigSpace('d', ident);
      c.defineBar(0, { kind: 'mem32', size: 4096 });
      c.snapshotResetState();
      let ran = 0;
      c.onReset(() => ran++);
      c.write(PCI_COMMAND, 2, 3);
      c.write(PCI_BASE_ADDRESS_0, 4, 0xfe000000);
      c.write(PCI_INTERRUPT_LINE, 1, 11);
      c.reset();
      expect(c.read(PCI_COMMAND, 2)).to.equal(0);
      expect(c.read(PCI_BASE_ADDRESS_0, 4)).to.equal(0);
      expect(c.read(PCI_INTERRUPT_LINE, 1)).to.equal(0);
      expect(ran).to.equal(1);
    });
  });

  describe('watchers', () => {
    it('are told about writes that touch their range, after the masks applied', () => {
      const c = new PciConfigSpace('d', ident);
      const seen: number[] = [];
      c.watch(PCI_COMMAND, 2, () => seen.push(c.read(PCI_COMMAND, 2)));
      c.write(0x00, 4, 0xffffffff);
      c.write(0x04, 1, 0xff);
      c.write(0x06, 2, 0xffff);
      expect(seen).to.deep.equal([0x07]);
    });
  });

  describe('read hooks', () => {
    it('run before a guest read of their bytes so the owner can refresh them, not for device-side gets', () => {
      const c = new PciConfigSpace('d', ident);
      let n = 0;
      c.onRead(0x80, 4, () => c.set32(0x80, ++n));
      expect(c.read(0x80, 4)).to.equal(1);
      expect(c.read(0x82, 1)).to.equal(0);
      expect(n).to.equal(2);
      expect(c.read(0x7c, 4)).to.equal(0);
      expect(c.get32(0x80)).to.equal(2);
      expect(n).to.equal(2);
    });
  });

  describe('properties (fast-check)', () => {
    const headers = fc.constantFrom<0 | 1>(0, 1);
    const access = fc.record({ offset: fc.integer({ min: 0, max: 255 }), size: fc.constantFrom(1, 2, 4), value: fc.integer({ min: 0, max: 0xffffffff }) });

    function build(headerType: 0 | 1): PciConfigSpace {
      const c = new PciConfigSpace('d', { ...ident, headerType, interruptPin: 1 });
      c.defineBar(0, { kind: 'mem32', size: 4096 });
      if (headerType === 0) {
        c.defineBar(1, { kind: 'io', size: 256 });
        c.defineBar(2, { kind: 'mem64', size: 1 << 20, prefetchable: true });
      }
      const msi = c.addCapability(PCI_CAP_ID_MSI, 14);
      c.setWritable(msi + 4, 4, 0xfffffffc);
      c.addCapability(PCI_CAP_ID_VNDR, 8);
      if (headerType === 1) addSlotIdCapability(c, 3);
      c.snapshotResetState();
      return c;
    }

    it('random guest writes never throw and never change a read-only bit', () => {
      fc.assert(
        fc.property(headers, fc.array(access, { maxLength: 60 }), (h, writes) => {
          const c = build(h);
          const before = Uint8Array.from(c.bytes);
          for (const w of writes) {
            if (w.offset + w.size > 256) {
              expect(() => c.write(w.offset, w.size, w.value)).to.throw(PciConfigError);
              continue;
            }
            c.write(w.offset, w.size, w.value);
          }
          for (let i = 0; i < 256; i++) {
            const ro = ~((c.wmask[i] as number) | (c.w1cmask[i] as number)) & 0xff;
            expect((c.bytes[i] as number) & ro, `byte 0x${i.toString(16)}`).to.equal((before[i] as number) & ro);
          }
        }),
      );
    });

    it('the capability list stays a terminated chain inside config space', () => {
      fc.assert(
        fc.property(headers, fc.array(access, { maxLength: 60 }), (h, writes) => {
          const c = build(h);
          for (const w of writes) if (w.offset + w.size <= 256) c.write(w.offset, w.size, w.value);
          const seen = new Set<number>();
          let p = c.read(PCI_CAPABILITY_LIST, 1);
          let hops = 0;
          while (p !== 0) {
            expect(p).to.be.within(0x40, 0xfc);
            expect(p % 4).to.equal(0);
            expect(seen.has(p), 'loop').to.equal(false);
            seen.add(p);
            p = c.read(p + 1, 1);
            hops++;
          }
          expect(hops).to.equal(h === 1 ? 3 : 2);
        }),
      );
    });
  });
});
