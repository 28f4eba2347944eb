/* 32-bit entry. Multiboot 0.6.96 section 3.2: protected mode, paging off,
 * EAX = 0x2BADB002, EBX = boot information; GDTR, IDTR and ESP are
 * undefined, so load our own GDT, stack and an exception IDT before any C. */

#define KIT_STACK_SIZE 16384

	.section .text.entry, "ax"
	.code32
	.globl _start
_start:
	cli
	cld
	lgdt kit_gdt_desc
	ljmp $0x08, $1f
1:	movl $0x10, %ecx
	movl %ecx, %ds
	movl %ecx, %es
	movl %ecx, %fs
	movl %ecx, %gs
	movl %ecx, %ss
	movl $kit_stack_top, %esp
	xorl %ebp, %ebp
	pushl %ebx
	pushl %eax
	call kit_idt_init
	call kit_start /* (magic, info); does not return */
2:	cli
	hlt
	jmp 2b

/* Exception stubs: push a zero error code where the CPU pushes none, then
 * the vector, so kit_exception() sees one frame shape. */
	.macro exc_stub vec
	.globl kit_exc\vec
kit_exc\vec:
	.if (\vec != 8) && (\vec < 10 || \vec > 14) && (\vec != 17) && (\vec != 21)
	pushl $0
	.endif
	pushl $\vec
	jmp exc_common
	.endm

	.altmacro
	.set v, 0
	.rept 32
	exc_stub %v
	.set v, v + 1
	.endr

exc_common:
	pushal
	pushl %esp /* struct kit_exception_frame * */
	call kit_exception
3:	cli
	hlt
	jmp 3b

	.macro stub_addr vec
	.long kit_exc\vec
	.endm

	.section .rodata
	.align 4
	.globl kit_exc_stubs
kit_exc_stubs:
	.set v, 0
	.rept 32
	stub_addr %v
	.set v, v + 1
	.endr

	.section .data
	.align 8
	.globl kit_gdt
kit_gdt:
	.quad 0                  /* null */
	.quad 0x00cf9a000000ffff /* 0x08: flat 32-bit code */
	.quad 0x00cf92000000ffff /* 0x10: flat 32-bit data */
kit_gdt_end:
	.globl kit_gdt_desc
	.align 4
	.word 0
kit_gdt_desc:
	.word kit_gdt_end - kit_gdt - 1
	.long kit_gdt

	.section .bss
	.align 16
	.globl kit_stack_top
kit_stack:
	.skip KIT_STACK_SIZE
kit_stack_top:

	.section .note.GNU-stack, "", @progbits
