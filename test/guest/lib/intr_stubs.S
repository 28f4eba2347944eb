/* Interrupt entry stubs for intr.c. They return without IRET: on hosts whose
 * KVM emulates protected-mode guest code (kvm_pvm here), the instruction
 * emulator cannot do a protected-mode IRET and stops the VM with an
 * emulation failure. A same-privilege interrupt frame is EIP, CS, EFLAGS, so
 * rewriting it to EFLAGS, EIP and ending with POPF; RET returns the same way
 * (CS is the kit's 0x08 throughout). */
	.altmacro
	.text
	.macro vector_stub n
	.globl intr_stub\n
intr_stub\n:
	pushal
	pushl $\n
	call intr_dispatch
	addl $4, %esp
	popal
	jmp intr_return
	.endm

	.set v, 0
	.rept 16
	vector_stub %v
	.set v, v + 1
	.endr

	.globl intr_spurious_stub
intr_spurious_stub:
	/* no EOI for the spurious vector (SDM §10.9) */
intr_return:
	/* [eip][cs][eflags] -> [eflags][eip] */
	pushl %eax
	movl 12(%esp), %eax
	movl %eax, 8(%esp)
	movl 4(%esp), %eax
	movl %eax, 12(%esp)
	popl %eax
	addl $4, %esp
	popfl
	ret

	.section .rodata
	.align 4
	.globl intr_stubs
intr_stubs:
	.macro stub_addr n
	.long intr_stub\n
	.endm
	.set v, 0
	.rept 16
	stub_addr %v
	.set v, v + 1
	.endr

	.section .note.GNU-stack, "", @progbits
