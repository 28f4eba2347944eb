import { expect } from 'chai';
import fc from 'fast-check';
import { fakeBzImage } from './fake-bzimage.js';
import {
  BootError,
  Hdr,
  BootParams,
  GuestMemory,
  MiB,
  MULTIBOOT_BOOTLOADER_MAGIC,
  MULTIBOOT_HEADER_MAGIC,
  loadLinux,
  loadMultiboot,
  parseModuleList,
  pcMemoryLayout,
  type MemoryLayout,
} from '../src/index.js';

const layoutOf = (mb: number): MemoryLayout => pcMemoryLayout(mb * MiB, { maxRamBelowFourGiB: 0xe0000000, gigabyteAlign: true });
const memoryOf = (l: MemoryLayout): GuestMemory => new GuestMemory(l.slots.map((s) => ({ ...s, buffer: new SharedArrayBuffer(s.size) })));

/** A minimal ELF32 multiboot kernel: one PT_LOAD segment at `paddr` holding `code` plus `bss` zero bytes. */
function elfKernel(paddr: number, code: Uint8Array, bss = 0, flags = 0x3): Uint8Array {
  const hdrOff = 0x60;
  const codeOff = 0x100;
  const img = new Uint8Array(codeOff + code.length);
  const dv = new DataView(img.buffer);
  img.set([0x7f, 0x45, 0x4c, 0x46, 1, 1, 1]);
  dv.setUint16(16, 2, true); // ET_EXEC
  dv.setUint16(18, 3, true); // EM_386
  dv.setUint32(24, paddr, true); // entry = first byte of code
  dv.setUint32(28, 0x34, true); // phoff
  dv.setUint16(42, 32, true);
  dv.setUint16(44, 1, true);
  // program header at 0x34
  dv.setUint32(0x34, 1, true);
  dv.setUint32(0x38, codeOff, true);
  dv.setUint32(0x3c, paddr, true);
  dv.setUint32(0x40, paddr, true);
  dv.setUint32(0x44, code.length, true);
  dv.setUint32(0x48, code.length + bss, true);
  // multiboot header
  dv.setUint32(hdrOff, MULTIBOOT_HEADER_MAGIC, true);
  dv.setUint32(hdrOff + 4, flags, true);
  dv.setUint32(hdrOff + 8, (-(MULTIBOOT_HEADER_MAGIC + flags)) >>> 0, true);
  img.set(code, codeOff);
  return img;
}

describe('multiboot loader', () => {
  it('loads ELF32 segments at their physical address and zeroes bss', () => {
    const l = layoutOf(16);
    const mem = memoryOf(l);
    mem.fill(0x100000, 0x2000, 0xcc);
    const r = loadMultiboot(mem, l, { file: 'k', image: elfKernel(0x100000, Uint8Array.of(0xf4, 0xeb, 0xfe), 0x1000), cmdline: 'k a=1', modules: [] });
    expect(r.entry).to.deep.include({ mode: 'protected32', eip: 0x100000, eax: MULTIBOOT_BOOTLOADER_MAGIC });
    expect(mem.readU8(0x100000)).to.equal(0xf4);
    expect(mem.readU8(0x100003)).to.equal(0);
    expect(mem.readU8(0x100000 + 0x1002)).to.equal(0);
  });

  it('fills the boot information: memory sizes, command line, memory map, modules', () => {
    const l = layoutOf(128);
    const mem = memoryOf(l);
    const mod = new TextEncoder().encode('module payload');
    const r = loadMultiboot(mem, l, { file: 'k', image: elfKernel(0x100000, new Uint8Array(16)), cmdline: 'k hello', modules: [{ data: mod, cmdline: 'mod.bin arg' }] });
    const mbi = r.infoAddr;
    const flags = mem.readU32(mbi);
    expect(flags & 0b1001001101).to.equal(0b1001001101);
    expect(mem.readU32(mbi + 4)).to.equal(639);
    expect(mem.readU32(mbi + 8)).to.equal(127 * 1024);
    const readCString = (addr: number): string => {
      let s = '';
      for (let a = addr; mem.readU8(a) !== 0; a++) s += String.fromCharCode(mem.readU8(a));
      return s;
    };
    expect(readCString(mem.readU32(mbi + 16))).to.equal('k hello');
    expect(mem.readU32(mbi + 20)).to.equal(1);
    const modAddr = mem.readU32(mbi + 24);
    const start = mem.readU32(modAddr);
    expect(start % 4096).to.equal(0);
    expect(mem.readU32(modAddr + 4) - start).to.equal(mod.length);
    expect(readCString(mem.readU32(modAddr + 8))).to.equal('mod.bin arg');
    const mmapLen = mem.readU32(mbi + 44);
    const mmapAddr = mem.readU32(mbi + 48);
    expect(mmapLen).to.equal(24 * l.e820.length);
    expect(mem.readU32(mmapAddr)).to.equal(20);
    expect(mem.readU64(mmapAddr + 4 + 24)).to.equal(BigInt(0x9fc00));
    expect(readCString(mem.readU32(mbi + 64))).to.equal('tsvmm');
  });

  it('loads an a.out-kludge image from the header addresses', () => {
    const l = layoutOf(16);
    const mem = memoryOf(l);
    const img = new Uint8Array(0x200);
    const dv = new DataView(img.buffer);
    const flags = 0x10003;
    dv.setUint32(0, MULTIBOOT_HEADER_MAGIC, true);
    dv.setUint32(4, flags, true);
    dv.setUint32(8, (-(MULTIBOOT_HEADER_MAGIC + flags)) >>> 0, true);
    dv.setUint32(12, 0x200000, true); // header_addr
    dv.setUint32(16, 0x200000, true); // load_addr
    dv.setUint32(20, 0, true); // load_end_addr: whole file
    dv.setUint32(24, 0x201000, true); // bss_end_addr
    dv.setUint32(28, 0x200040, true); // entry_addr
    img[0x40] = 0xf4;
    const r = loadMultiboot(mem, l, { file: 'aout', image: img, cmdline: 'aout', modules: [] });
    expect(r.entry).to.deep.include({ eip: 0x200040 });
    expect(mem.readU8(0x200040)).to.equal(0xf4);
    expect(r.kernelEnd).to.equal(0x201000);
  });

  it('refuses a kernel that does not fit in RAM, naming what and where', () => {
    const l = layoutOf(4);
    expect(() => loadMultiboot(memoryOf(l), l, { file: 'big', image: elfKernel(0x800000, new Uint8Array(4)), cmdline: '', modules: [] })).to.throw(
      BootError,
      /big: ELF segment at 0x800000-0x800004 does not fit/,
    );
  });

  it('refuses required features it does not support', () => {
    const l = layoutOf(16);
    expect(() => loadMultiboot(memoryOf(l), l, { file: 'k', image: elfKernel(0x100000, new Uint8Array(4), 0, 0x8), cmdline: '', modules: [] })).to.throw(
      BootError,
      /unsupported features/,
    );
  });

  it('splits -initrd module lists like QEMU', () => {
    expect(parseModuleList('a.bin x y,b.bin,,c')).to.deep.equal([
      { file: 'a.bin', cmdline: 'a.bin x y' },
      { file: 'b.bin,c', cmdline: 'b.bin,c' },
    ]);
  });

  it('never throws anything but BootError on hostile images, and never writes outside RAM (property)', () => {
    const l = layoutOf(4);
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 512 }), fc.integer({ min: 0, max: 0x7fffffff }), fc.integer({ min: 0, max: 0x7fffffff }), (noise, a, b) => {
        const img = elfKernel(0x100000, new Uint8Array(8));
        const hostile = new Uint8Array(img.length + noise.length);
        hostile.set(img);
        hostile.set(noise, img.length);
        const dv = new DataView(hostile.buffer);
        dv.setUint32(0x40, a, true); // p_paddr
        dv.setUint32(0x48, b, true); // p_memsz
        try {
          loadMultiboot(memoryOf(l), l, { file: 'h', image: hostile, cmdline: '', modules: [] });
        } catch (err) {
          expect(err).to.be.instanceOf(BootError);
        }
      }),
      { numRuns: 200 },
    );
  });
});

describe('Linux boot protocol loader', () => {
  it('enters a relocatable kernel at 1 MiB + 0x200 in long mode with RSI at boot_params', () => {
    const l = layoutOf(64);
    const mem = memoryOf(l);
    const r = loadLinux(mem, l, { file: 'bz', image: fakeBzImage(), cmdline: 'console=ttyS0' });
    expect(r.entry).to.deep.include({ mode: 'long64', rip: 0x100200, rsi: 0x7000, codeSelector: 0x10, dataSelector: 0x18 });
    expect(mem.readU8(0x100002)).to.equal(0xf4);
  });

  it('loads a non-relocatable kernel at pref_address', () => {
    const l = layoutOf(64);
    const r = loadLinux(memoryOf(l), l, { file: 'bz', image: fakeBzImage({ relocatable: false }), cmdline: '' });
    expect(r.loadAddr).to.equal(0x1000000);
  });

  it('fills boot_params: header copy, loader type, command line, E820 and initrd', () => {
    const l = layoutOf(64);
    const mem = memoryOf(l);
    const initrd = new Uint8Array(5000).fill(7);
    const r = loadLinux(mem, l, { file: 'bz', image: fakeBzImage(), cmdline: 'root=/dev/vda', initrd: { file: 'rd', data: initrd } });
    const bp = 0x7000;
    expect(mem.readU32(bp + Hdr.header)).to.equal(0x53726448);
    expect(mem.readU8(bp + Hdr.type_of_loader)).to.equal(0xff);
    const cmdPtr = mem.readU32(bp + Hdr.cmd_line_ptr);
    expect(new TextDecoder().decode(mem.slice(cmdPtr, 13))).to.equal('root=/dev/vda');
    expect(mem.readU8(bp + BootParams.e820_entries)).to.equal(l.e820.length);
    expect(mem.readU64(bp + BootParams.e820_table + 20 + 8)).to.equal(BigInt(0xa0000 - 0x9fc00));
    const rd = mem.readU32(bp + Hdr.ramdisk_image);
    expect(rd).to.equal(r.initrdAddr);
    expect(rd % 4096).to.equal(0);
    expect(rd + initrd.length).to.be.at.most(64 * MiB);
    expect(mem.readU32(bp + Hdr.ramdisk_size)).to.equal(5000);
    expect(mem.readU8(rd + 4999)).to.equal(7);
  });

  it('identity-maps the first 4 GiB with 2 MiB pages', () => {
    const l = layoutOf(64);
    const mem = memoryOf(l);
    const r = loadLinux(mem, l, { file: 'bz', image: fakeBzImage(), cmdline: '' });
    const pdpt = Number(mem.readU64(r.entry.cr3) & ~0xfffn);
    const pd3 = Number(mem.readU64(pdpt + 3 * 8) & ~0xfffn);
    expect(mem.readU64(pd3 + 511 * 8)).to.equal((BigInt(3 * 512 + 511) << 21n) | 0x83n);
  });

  it('refuses kernels without the 64-bit entry point', () => {
    const l = layoutOf(64);
    expect(() => loadLinux(memoryOf(l), l, { file: 'old', image: fakeBzImage({ version: 0x020b }), cmdline: '' })).to.throw(BootError, /no 64-bit entry point/);
    expect(() => loadLinux(memoryOf(l), l, { file: 'x', image: fakeBzImage({ xloadflags: 0 }), cmdline: '' })).to.throw(BootError, /XLF_KERNEL_64/);
  });

  it('refuses a command line longer than the kernel accepts', () => {
    const l = layoutOf(64);
    expect(() => loadLinux(memoryOf(l), l, { file: 'bz', image: fakeBzImage(), cmdline: 'x'.repeat(3000) })).to.throw(BootError, /at most 2048/);
  });

  it('refuses a kernel that does not fit the RAM', () => {
    const l = layoutOf(2);
    expect(() => loadLinux(memoryOf(l), l, { file: 'bz', image: fakeBzImage({ kernel: new Uint8Array(2 * MiB) }), cmdline: '' })).to.throw(BootError, /more memory/);
  });
});
