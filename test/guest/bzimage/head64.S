/* Protected-mode part, loaded at 0x100000. The 32-bit entry (startup_32,
 * offset 0) is not supported: it says so and debug-exits with 3. The 64-bit
 * entry (startup_64, offset 0x200) gets RSI = boot_params. */

#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define KIT_EXIT_BAD_BOOT 3

	.section .head, "ax"
	.code32
	.globl startup_32
startup_32:
	cli
	cld
	movl $startup_32_message, %esi
	movw $COM1, %dx
1:	lodsb
	testb %al, %al
	jz 2f
	outb %al, %dx
	jmp 1b
2:	movw $DEBUG_EXIT_PORT, %dx
	movb $KIT_EXIT_BAD_BOOT, %al
	outb %al, %dx
3:	hlt
	jmp 3b
startup_32_message:
	.asciz "bzimage: entered at the 32-bit entry point; this payload implements only the 64-bit one (+0x200)\n"

	.org 0x200
	.code64
	.globl startup_64
startup_64:
	movq %rsi, %r12		/* boot_params */
	/* The protocol promises no stack: use ours (in bss, zeroed below,
	 * which is fine once RFLAGS is in r13). */
	leaq bz_stack_top(%rip), %rsp
	pushfq			/* entry RFLAGS, for the IF check */
	popq %r13
	cli
	cld

	/* Zero bss (no loader does it for a bzImage). */
	leaq __bss_start(%rip), %rdi
	leaq _end(%rip), %rcx
	subq %rdi, %rcx
	xorl %eax, %eax
	rep stosb

	/* Identity-map the low 4 GiB with 2 MiB pages: the loader only
	 * promises mappings for the kernel, boot_params and the command line,
	 * and the initrd may be elsewhere. */
	leaq bz_pd(%rip), %rdi
	movq $0x83, %rax		/* present, writable, 2 MiB page */
	movl $2048, %ecx
4:	movq %rax, (%rdi)
	addq $0x200000, %rax
	addq $8, %rdi
	loop 4b
	leaq bz_pdpt(%rip), %rdi
	leaq bz_pd(%rip), %rax
	orq $0x3, %rax
	movl $4, %ecx
5:	movq %rax, (%rdi)
	addq $4096, %rax
	addq $8, %rdi
	loop 5b
	leaq bz_pdpt(%rip), %rax
	orq $0x3, %rax
	movq %rax, bz_pml4(%rip)
	leaq bz_pml4(%rip), %rax
	movq %rax, %cr3

	movq %r12, %rdi
	movq %r13, %rsi
	call bz_main
6:	cli
	hlt
	jmp 6b

	/* Keeps .data non-empty so the file extends to _edata, which syssize
	 * counts to. */
	.section .data_end, "aw"
	.globl bz_payload_name
bz_payload_name:
	.asciz "tsvmm bzImage test payload"

	.section .bss
	.align 4096
bz_pml4:	.skip 4096
bz_pdpt:	.skip 4096
bz_pd:		.skip 4 * 4096
	.align 16
		.skip 16384
bz_stack_top:

	.section .note.GNU-stack, "", @progbits
