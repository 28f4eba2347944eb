/** A bzImage-shaped test kernel (Linux boot protocol, Documentation/arch/x86/boot.rst). */
import { Hdr } from '../src/index.js';

/** A fake bzImage: boot sector with the setup header, 1 setup sector, then the "kernel". */
export function fakeBzImage(opts: { version?: number; xloadflags?: number; relocatable?: boolean; kernel?: Uint8Array } = {}): Uint8Array {
  const kernel = opts.kernel ?? Uint8Array.of(0x90, 0x90, 0xf4);
  const img = new Uint8Array(2 * 512 + kernel.length);
  const dv = new DataView(img.buffer);
  dv.setUint8(Hdr.setup_sects, 1);
  dv.setUint16(Hdr.boot_flag, 0xaa55, true);
  dv.setUint8(Hdr.jump + 1, 0x66); // header ends at 0x268
  dv.setUint32(Hdr.header, 0x53726448, true);
  dv.setUint16(Hdr.version, opts.version ?? 0x020f, true);
  dv.setUint8(Hdr.loadflags, 1);
  dv.setUint32(Hdr.initrd_addr_max, 0x7fffffff, true);
  dv.setUint32(Hdr.kernel_alignment, 0x200000, true);
  dv.setUint8(Hdr.relocatable_kernel, opts.relocatable === false ? 0 : 1);
  dv.setUint16(Hdr.xloadflags, opts.xloadflags ?? 1, true);
  dv.setUint32(Hdr.cmdline_size, 2048, true);
  dv.setBigUint64(Hdr.pref_address, 0x1000000n, true);
  dv.setUint32(Hdr.init_size, 0x10000, true);
  img.set(kernel, 1024);
  return img;
}

