/* Real-mode part of a bzImage-shaped test payload: boot sector with the
 * setup header at 0x1f1 (Linux Documentation/arch/x86/boot.rst, protocol
 * 2.15), then a 16-bit stub. setup_sects = 1, so the protected-mode part
 * starts at file offset 0x400 and loads at 0x100000 (bzimage.ld).
 *
 * A loader using the 16-bit protocol (QEMU, through its linuxboot option
 * ROM) jumps to the stub at offset 0x200 in real mode with DS = the setup
 * segment; the stub says why it stops and debug-exits with 3 (status 7). */

#define SETUP_SECTS 1
#define COM1 0x3f8
#define DEBUG_EXIT_PORT 0xf4
#define KIT_EXIT_BAD_BOOT 3

#define LOADED_HIGH 0x01
#define XLF_KERNEL_64 0x01

	.section .setup, "ax"
	.code16
	.globl bz_setup_start
bz_setup_start:
	.org 0x1f1
setup_sects:	.byte SETUP_SECTS
root_flags:	.word 0
syssize:	.long bz_syssize	/* protected-mode part in 16-byte units */
ram_size:	.word 0
vid_mode:	.word 0xffff		/* "normal" */
root_dev:	.word 0
boot_flag:	.word 0xaa55
	/* 0x200 */
jump:		.byte 0xeb, setup_header_end - header /* relative to 0x202 */
header:		.ascii "HdrS"
version:	.word 0x020f
realmode_swtch:	.long 0
start_sys_seg:	.word 0x1000
kernel_version:	.word 0
type_of_loader:	.byte 0
loadflags:	.byte LOADED_HIGH
setup_move_size: .word 0x8000
code32_start:	.long 0x100000
ramdisk_image:	.long 0
ramdisk_size:	.long 0
bootsect_kludge: .long 0
heap_end_ptr:	.word 0
ext_loader_ver:	.byte 0
ext_loader_type: .byte 0
cmd_line_ptr:	.long 0
initrd_addr_max: .long 0x7fffffff
kernel_alignment: .long 0x200000
relocatable_kernel: .byte 0
min_alignment:	.byte 21
xloadflags:	.word XLF_KERNEL_64
cmdline_size:	.long 2047
hardware_subarch: .long 0
hardware_subarch_data: .quad 0
payload_offset:	.long 0
payload_length:	.long 0
setup_data:	.quad 0
pref_address:	.quad 0x100000
init_size:	.long bz_init_size	/* bytes from the load address the payload uses, bss included */
handover_offset: .long 0
kernel_info_offset: .long 0
setup_header_end:

real_mode_entry:
	cli
	cld
	movw $(real_mode_message - bz_setup_start), %si
	movw $COM1, %dx
1:	lodsb			/* DS is the setup segment */
	testb %al, %al
	jz 2f
	outb %al, %dx
	jmp 1b
2:	movw $DEBUG_EXIT_PORT, %dx
	movb $KIT_EXIT_BAD_BOOT, %al
	outb %al, %dx
3:	hlt
	jmp 3b

real_mode_message:
	.ascii "bzimage: entered through the 16-bit real-mode setup code; "
	.ascii "this payload implements only the 64-bit boot protocol "
	.asciz "(entry at load address + 0x200)\n"

	.org (SETUP_SECTS + 1) * 512

	.section .note.GNU-stack, "", @progbits
