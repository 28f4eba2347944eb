/**
 * A few hand-assembled x86 instructions for test guests, enough to drive
 * PIO, MMIO, halts and faults without an external toolchain. Encodings are
 * from the Intel SDM vol. 2; each method names its instruction. The operand
 * size prefix (0x66) flips between 16-bit (real mode) and 32-bit code.
 */
export class GuestCode {
  private readonly out: number[] = [];
  private readonly labels = new Map<string, number>();

  constructor(readonly bits: 16 | 32) {}

  get length(): number {
    return this.out.length;
  }

  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }

  label(name: string): this {
    this.labels.set(name, this.out.length);
    return this;
  }

  private emit(...b: number[]): this {
    this.out.push(...b.map((x) => x & 0xff));
    return this;
  }

  private imm32(v: number): number[] {
    return [v, v >>> 8, v >>> 16, v >>> 24];
  }

  /** operand-size prefix when a 32-bit operand is used in 16-bit code */
  private op32(): number[] {
    return this.bits === 16 ? [0x66] : [];
  }

  /** operand-size prefix when a 16-bit operand is used in 32-bit code */
  private op16(): number[] {
    return this.bits === 32 ? [0x66] : [];
  }

  /** mov eax/ecx/edx/ebx/esi/edi, imm32 (B8+r id) */
  movReg32(reg: 'eax' | 'ecx' | 'edx' | 'ebx' | 'esi' | 'edi', imm: number): this {
    const r = { eax: 0, ecx: 1, edx: 2, ebx: 3, esi: 6, edi: 7 }[reg];
    return this.emit(...this.op32(), 0xb8 + r, ...this.imm32(imm));
  }

  /** mov dx, imm16 (BA iw) */
  movDx(imm: number): this {
    return this.emit(...this.op16(), 0xba, imm, imm >>> 8);
  }

  /** mov al, imm8 (B0 ib) */
  movAl(imm: number): this {
    return this.emit(0xb0, imm);
  }

  /** mov eax, ecx (89 /r: 89 C8) */
  movEaxEcx(): this {
    return this.emit(...this.op32(), 0x89, 0xc8);
  }

  /** out dx, al (EE) / out dx, ax / out dx, eax (EF) */
  outDx(size: 1 | 2 | 4): this {
    if (size === 1) return this.emit(0xee);
    return this.emit(...(size === 2 ? this.op16() : this.op32()), 0xef);
  }

  /** in al, dx (EC) / in ax, dx / in eax, dx (ED) */
  inDx(size: 1 | 2 | 4): this {
    if (size === 1) return this.emit(0xec);
    return this.emit(...(size === 2 ? this.op16() : this.op32()), 0xed);
  }

  /** rep outsb (F3 6E): ecx bytes from ds:esi to port dx */
  repOutsb(): this {
    return this.emit(0xf3, 0x6e);
  }

  /** rep insb (F3 6C): ecx bytes from port dx to es:edi */
  repInsb(): this {
    return this.emit(0xf3, 0x6c);
  }

  /** dec ecx (48+r) */
  decEcx(): this {
    return this.emit(...this.op32(), 0x49);
  }

  /** jnz rel8 (75 cb) to a label defined earlier */
  jnz(label: string): this {
    return this.emit(0x75, this.rel8(label));
  }

  /** jmp rel8 (EB cb) to a label defined earlier */
  jmp(label: string): this {
    return this.emit(0xeb, this.rel8(label));
  }

  private rel8(label: string): number {
    const target = this.labels.get(label);
    if (target === undefined) throw new Error(`unknown label ${label}`);
    const rel = target - (this.out.length + 2);
    if (rel < -128 || rel > 127) throw new Error(`${label} is out of rel8 range`);
    return rel;
  }

  /** jmp $ (EB FE): spin forever */
  spin(): this {
    return this.emit(0xeb, 0xfe);
  }

  /** hlt (F4) */
  hlt(): this {
    return this.emit(0xf4);
  }

  /** ud2 (0F 0B): raises #UD */
  ud2(): this {
    return this.emit(0x0f, 0x0b);
  }

  /** mov dword [abs32], imm32 (C7 /0 with mod=00 rm=101: disp32). 32-bit code only. */
  movMemImm32(addr: number, imm: number): this {
    this.assert32('mov [abs32], imm32');
    return this.emit(0xc7, 0x05, ...this.imm32(addr), ...this.imm32(imm));
  }

  /** mov eax, [abs32] (A1 moffs32). 32-bit code only. */
  movEaxMem(addr: number): this {
    this.assert32('mov eax, [moffs32]');
    return this.emit(0xa1, ...this.imm32(addr));
  }

  /** mov [abs32], eax (A3 moffs32). 32-bit code only. */
  movMemEax(addr: number): this {
    this.assert32('mov [moffs32], eax');
    return this.emit(0xa3, ...this.imm32(addr));
  }

  private assert32(what: string): void {
    if (this.bits !== 32) throw new Error(`${what} is only encoded for 32-bit code here`);
  }
}
