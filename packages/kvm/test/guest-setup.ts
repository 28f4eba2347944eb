/**
 * CPU setup for hand-assembled test guests: flat 32-bit protected mode and
 * real mode entered directly through KVM_SET_SREGS / KVM_SET_REGS, with no
 * descriptor tables in guest memory (KVM uses the hidden segment state).
 */
import type { KvmSegment, Vcpu } from '../src/index.js';

export const CODE_ADDR = 0x1000;

function flatSegment(selector: number, type: number): KvmSegment {
  return { base: 0n, limit: 0xffffffff, selector, type, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0, unusable: 0 };
}

/** CS base 0 limit 4 GiB, D/B=1; data segments likewise; CR0.PE=1, paging off. */
export function enterFlatProtectedMode(vcpu: Vcpu, rip = CODE_ADDR): void {
  const sregs = vcpu.getSregs();
  const data = flatSegment(0x10, 3); // read/write, accessed
  sregs.cs = flatSegment(0x08, 11); // execute/read, accessed
  sregs.ds = data;
  sregs.es = data;
  sregs.fs = data;
  sregs.gs = data;
  sregs.ss = data;
  sregs.cr0 |= 1n;
  vcpu.setSregs(sregs);
  vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(rip), rflags: 2n, rsp: 0x8000n });
}

/** CS:IP = 0:rip in real mode (the reset state has CS base 0xffff0000). */
export function enterRealMode(vcpu: Vcpu, rip = CODE_ADDR): void {
  const sregs = vcpu.getSregs();
  sregs.cs = { ...sregs.cs, base: 0n, selector: 0 };
  for (const name of ['ds', 'es', 'ss'] as const) sregs[name] = { ...sregs[name], base: 0n, selector: 0 };
  vcpu.setSregs(sregs);
  vcpu.setRegs({ ...vcpu.getRegs(), rip: BigInt(rip), rflags: 2n, rsp: 0x8000n });
}
