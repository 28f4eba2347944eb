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
 * Prints one JSON line: {"mode":..,"exits":..,"nsPerExit":..}
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

#define GUEST_RAM_SIZE 0x100000
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

int main(int argc, char **argv) {
	uint32_t n = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 100000;
	int real_mode = argc > 2 && strcmp(argv[2], "real") == 0;

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
	emit_loop(mem + CODE_ADDR, n, real_mode);

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
	struct kvm_regs regs = {.rip = CODE_ADDR, .rflags = 2};
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

	uint64_t exits = 0, start = now_ns();
	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR) continue;
			die("KVM_RUN");
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
	printf("{\"mode\":\"%s\",\"exits\":%llu,\"nsPerExit\":%.1f}\n", real_mode ? "real" : "prot",
	       (unsigned long long)exits, exits ? (double)elapsed / (double)exits : 0.0);
	return exits == n ? 0 : 1;
}
