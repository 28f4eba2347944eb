/* AP start-up. A Startup IPI with vector V starts the AP in real mode at
 * CS = V << 8, IP = 0 (Intel SDM vol. 3, 9.4.4); smp_start_aps() copies
 * [smp_trampoline_start, smp_trampoline_end) to SMP_TRAMPOLINE_ADDR. The
 * copy only uses CS-relative addresses, so it runs at any page; it loads the
 * kernel's GDT and far-jumps straight to 32-bit code in the kernel image. */

	.section .rodata
	.code16
	.globl smp_trampoline_start
smp_trampoline_start:
	cli
	cld
	lgdtl %cs:(tramp_gdt_desc - smp_trampoline_start)
	movl %cr0, %eax
	orl $1, %eax /* PE */
	movl %eax, %cr0
	ljmpl $0x08, $smp_ap_entry32
	.align 4
tramp_gdt_desc:
	.word 3 * 8 - 1
	.long kit_gdt
	.globl smp_trampoline_end
smp_trampoline_end:

	.code32
	.text
smp_ap_entry32:
	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %fs
	movl %eax, %gs
	movl %eax, %ss
	/* Each AP takes the next stack. */
	movl $4096, %eax
	lock xaddl %eax, smp_ap_stack_next
	leal 4096(%eax), %esp
	xorl %ebp, %ebp
	call kit_idt_init
	call *smp_ap_entry
1:	cli
	hlt
	jmp 1b

	.section .note.GNU-stack, "", @progbits
