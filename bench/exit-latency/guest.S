/* Exit-latency benchmark guest (see README.md): one byte to COM1, then
 * 100000 one-byte OUTs to port 0xe0, then isa-debug-exit with 0.
 * Uses no stack, no memory and no boot information, so any loader that
 * enters it in 32-bit flat protected mode runs it. */

#define MULTIBOOT_HEADER_MAGIC 0x1BADB002
#define MULTIBOOT_FLAGS 0x00000000
#define COM1_THR 0x3f8
#define BENCH_PORT 0xe0
#define BENCH_COUNT 100000
#define DEBUG_EXIT_PORT 0xf4

	.section .multiboot, "a"
	.align 4
	.long MULTIBOOT_HEADER_MAGIC
	.long MULTIBOOT_FLAGS
	.long -(MULTIBOOT_HEADER_MAGIC + MULTIBOOT_FLAGS)

	.text
	.code32
	.globl _start
_start:
	cli
	movw $COM1_THR, %dx
	movb $'S', %al		/* start-to-first-byte marker */
	outb %al, %dx

	movw $BENCH_PORT, %dx
	movl $BENCH_COUNT, %ecx
1:	outb %al, %dx
	decl %ecx
	jnz 1b

	movw $DEBUG_EXIT_PORT, %dx
	xorl %eax, %eax		/* VMM exits with status (0 << 1) | 1 = 1 */
	outb %al, %dx
2:	hlt
	jmp 2b

	.section .note.GNU-stack, "", @progbits
