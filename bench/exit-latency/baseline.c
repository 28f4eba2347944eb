/*
 * C baseline for the PIO exit round trip: a guest doing N `out` instructions
 * in a tight loop, with the VMM loop (KVM_RUN -> KVM_EXIT_IO -> KVM_RUN) in C.
 * This is the reference that the JS-handled exit cost is compared against.
 *
 * KVM API: Documentation/virt/kvm/api.rst, sections "KVM_CREATE_VM",
 * "KVM_SET_USER_MEMORY_REGION", "KVM_CREATE_VCPU", "KVM_RUN" and
 * "The kvm_run structure".
 *
 * Build: cc -O2 -o baseline baseline.c
 * Usage: baseline [iterations] [real|prot]     (defaults: 100000 prot)
 *        baseline --elf GUEST.elf              (the multiboot guest tsvmm runs)
 * Prints one JSON line: {"mode":..,"exits":..,"nsPerExit":..}
 *
 * With --elf the guest is the very ELF32 kernel the tsvmm side boots
 * (test/guest/out/exit-latency-guest.elf): its PT_LOAD segments are copied to
 * RAM and it is entered in flat protected mode with the multiboot magic, as
 * tsvmm does. Exits on BENCH_PORT are counted from the first one to the
 * isa-debug-exit write, which ends the run.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <elf.h>

#define GUEST_RAM_SIZE 0x400000
#define BENCH_PORT 0xe0
#define DEBUG_EXIT_PORT 0xf4
#define CODE_ADDR 0x1000
#define OUT_PORT 0x10

static void die(const char *what) {
	fprintf(stderr, "%s failed: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t now_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* mov ecx, imm32; mov dx, OUT_PORT; 1: out dx, al; dec ecx; jnz 1b; hlt */
static size_t emit_loop(uint8_t *p, uint32_t n, int real_mode) {
	size_t i = 0;
	if (real_mode) p[i++] = 0x66; /* operand-size prefix: ecx, not cx */
	p[i++] = 0xb9;
	memcpy(p + i, &n, 4);
	i += 4;
	if (!real_mode) p[i++] = 0x66; /* 16-bit immediate for dx */
	p[i++] = 0xba;
	p[i++] = OUT_PORT;
	p[i++] = 0x00;
	p[i++] = 0xee; /* out dx, al */
	if (real_mode) p[i++] = 0x66;
	p[i++] = 0x49; /* dec ecx */
	p[i++] = 0x75; /* jnz back to the out */
	p[i] = (uint8_t)(-(int)(real_mode ? 5 : 4));
	i++;
	p[i++] = 0xf4; /* hlt */
	return i;
}

/* Copies the ELF32 file's PT_LOAD segments into guest RAM; returns the entry point. */
static uint32_t load_elf32(const char *path, uint8_t *mem) {
	FILE *f = fopen(path, "rb");
	if (f == NULL) die(path);
	static uint8_t image[GUEST_RAM_SIZE];
	size_t len = fread(image, 1, sizeof image, f);
	fclose(f);
	Elf32_Ehdr eh;
	if (len < sizeof eh) { fprintf(stderr, "%s: too short for ELF\n", path); exit(1); }
	memcpy(&eh, image, sizeof eh);
	if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS32) {
		fprintf(stderr, "%s: not an ELF32 file\n", path);
		exit(1);
	}
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf32_Phdr ph;
		size_t off = eh.e_phoff + (size_t)i * eh.e_phentsize;
		if (off + sizeof ph > len) { fprintf(stderr, "%s: program header past EOF\n", path); exit(1); }
		memcpy(&ph, image + off, sizeof ph);
		if (ph.p_type != PT_LOAD) continue;
		if ((uint64_t)ph.p_paddr + ph.p_memsz > GUEST_RAM_SIZE || (uint64_t)ph.p_offset + ph.p_filesz > len) {
			fprintf(stderr, "%s: segment does not fit\n", path);
			exit(1);
		}
		memcpy(mem + ph.p_paddr, image + ph.p_offset, ph.p_filesz);
		memset(mem + ph.p_paddr + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
	}
	return eh.e_entry;
}

int main(int argc, char **argv) {
	const char *elf = argc > 2 && strcmp(argv[1], "--elf") == 0 ? argv[2] : NULL;
	uint32_t n = elf == NULL && argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 100000;
	int real_mode = elf == NULL && argc > 2 && strcmp(argv[2], "real") == 0;

	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) die("open /dev/kvm");
	if (ioctl(kvm, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) die("KVM_GET_API_VERSION");
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) die("KVM_CREATE_VM");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0) die("KVM_SET_TSS_ADDR");

	uint8_t *mem = mmap(NULL, GUEST_RAM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) die("mmap guest RAM");
	struct kvm_userspace_memory_region region = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = GUEST_RAM_SIZE, .userspace_addr = (uintptr_t)mem,
	};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
	uint32_t entry = CODE_ADDR;
	if (elf != NULL) entry = load_elf32(elf, mem);
	else emit_loop(mem + CODE_ADDR, n, real_mode);

	int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0) die("KVM_CREATE_VCPU");
	int mmap_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < 0) die("KVM_GET_VCPU_MMAP_SIZE");
	struct kvm_run *run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED) die("mmap kvm_run");

	struct kvm_sregs sregs;
	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
	if (real_mode) {
		sregs.cs.base = 0;
		sregs.cs.selector = 0;
	} else {
		/* Flat 32-bit protected mode without a GDT in memory: KVM takes the
		 * hidden segment state from KVM_SET_SREGS. */
		struct kvm_segment flat = {
			.base = 0, .limit = 0xffffffff, .selector = 0x10, .type = 3, .present = 1,
			.dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
		};
		sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat;
		flat.type = 11;
		flat.selector = 0x08;
		sregs.cs = flat;
		sregs.cr0 |= 1; /* PE */
	}
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
	struct kvm_regs regs = {.rip = entry, .rflags = 2, .rax = 0x2badb002};
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

	uint64_t exits = 0, start = now_ns();
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR) continue;
			die("KVM_RUN");
		}
		if (elf != NULL && run->exit_reason == KVM_EXIT_IO) {
			if (run->io.port == BENCH_PORT) {
				if (exits++ == 0) start = now_ns();
				continue;
			}
			if (run->io.port == DEBUG_EXIT_PORT) break;
			continue; /* the serial marker byte */
		}
		if (run->exit_reason == KVM_EXIT_IO && run->io.port == OUT_PORT) {
			exits++;
			continue;
		}
		if (run->exit_reason == KVM_EXIT_HLT) break;
		fprintf(stderr, "unexpected exit reason %u\n", run->exit_reason);
		return 1;
	}
	uint64_t elapsed = now_ns() - start;
	printf("{\"mode\":\"%s\",\"exits\":%llu,\"nsPerExit\":%.1f}\n", elf != NULL ? "elf" : real_mode ? "real" : "prot",
	       (unsigned long long)exits, exits ? (double)elapsed / (double)exits : 0.0);
	return exits == n ? 0 : 1;
}
