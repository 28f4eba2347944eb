/*
 * The generic checked ioctl, plain fd calls (open, close, eventfd, poll),
 * and the constant and struct-layout tables the TS facade is checked against.
 *
 * KVM API: Documentation/virt/kvm/api.rst, section 4 ("API description"):
 * each ioctl below is described there under its own name.
 *
 * Why a whitelist: struct encoding lives in TypeScript (structs.ts), so the
 * native side must still guarantee that the kernel never reads or writes
 * outside the buffer JS passed. Every request carries its argument shape
 * here; fixed structs are checked against _IOC_SIZE, flexible-array structs
 * against their element count. Requests whose structs carry user pointers
 * (memory regions, dirty logs, XSAVE2) are not in this table; vm.c and
 * vcpu.c implement them with their own checks.
 */
#include "binding.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

enum arg_kind {
	ARG_NONE,   /* no argument */
	ARG_VALUE,  /* an integer passed by value */
	ARG_STRUCT, /* a pointer to _IOC_SIZE(request) bytes */
	ARG_FLEX,   /* a header with a u32 count at offset 0, then count entries */
};

struct ioctl_spec {
	unsigned long request;
	const char *name;
	enum arg_kind kind;
	size_t header;  /* ARG_FLEX */
	size_t entry;   /* ARG_FLEX */
};

#define NONE(r) {r, #r, ARG_NONE, 0, 0}
#define VALUE(r) {r, #r, ARG_VALUE, 0, 0}
#define STRUCT(r) {r, #r, ARG_STRUCT, 0, 0}
#define FLEX(r, hdr, ent) {r, #r, ARG_FLEX, hdr, ent}

static const struct ioctl_spec ioctl_specs[] = {
	/* system ioctls */
	NONE(KVM_GET_API_VERSION),
	VALUE(KVM_CHECK_EXTENSION), /* also a vm ioctl */
	NONE(KVM_GET_VCPU_MMAP_SIZE),
	FLEX(KVM_GET_SUPPORTED_CPUID, sizeof(struct kvm_cpuid2), sizeof(struct kvm_cpuid_entry2)),
	FLEX(KVM_GET_EMULATED_CPUID, sizeof(struct kvm_cpuid2), sizeof(struct kvm_cpuid_entry2)),
	FLEX(KVM_GET_MSR_INDEX_LIST, sizeof(struct kvm_msr_list), sizeof(__u32)),
	FLEX(KVM_GET_MSR_FEATURE_INDEX_LIST, sizeof(struct kvm_msr_list), sizeof(__u32)),
	/* vm ioctls */
	VALUE(KVM_SET_TSS_ADDR),
	STRUCT(KVM_SET_IDENTITY_MAP_ADDR),
	NONE(KVM_CREATE_IRQCHIP),
	STRUCT(KVM_CREATE_PIT2),
	STRUCT(KVM_IRQ_LINE),
	STRUCT(KVM_IRQ_LINE_STATUS),
	STRUCT(KVM_SIGNAL_MSI),
	FLEX(KVM_SET_GSI_ROUTING, sizeof(struct kvm_irq_routing), sizeof(struct kvm_irq_routing_entry)),
	STRUCT(KVM_IOEVENTFD),
	STRUCT(KVM_IRQFD),
	STRUCT(KVM_GET_CLOCK),
	STRUCT(KVM_SET_CLOCK),
	STRUCT(KVM_ENABLE_CAP), /* also a vcpu ioctl */
	STRUCT(KVM_GET_IRQCHIP),
	STRUCT(KVM_SET_IRQCHIP),
	STRUCT(KVM_GET_PIT2),
	STRUCT(KVM_SET_PIT2),
	VALUE(KVM_SET_BOOT_CPU_ID),
	/* vcpu ioctls */
	STRUCT(KVM_GET_REGS),
	STRUCT(KVM_SET_REGS),
	STRUCT(KVM_GET_SREGS),
	STRUCT(KVM_SET_SREGS),
	STRUCT(KVM_GET_FPU),
	STRUCT(KVM_SET_FPU),
	FLEX(KVM_GET_MSRS, sizeof(struct kvm_msrs), sizeof(struct kvm_msr_entry)), /* also system */
	FLEX(KVM_SET_MSRS, sizeof(struct kvm_msrs), sizeof(struct kvm_msr_entry)),
	FLEX(KVM_SET_CPUID2, sizeof(struct kvm_cpuid2), sizeof(struct kvm_cpuid_entry2)),
	FLEX(KVM_GET_CPUID2, sizeof(struct kvm_cpuid2), sizeof(struct kvm_cpuid_entry2)),
	STRUCT(KVM_GET_LAPIC),
	STRUCT(KVM_SET_LAPIC),
	STRUCT(KVM_GET_MP_STATE),
	STRUCT(KVM_SET_MP_STATE),
	STRUCT(KVM_GET_VCPU_EVENTS),
	STRUCT(KVM_SET_VCPU_EVENTS),
	STRUCT(KVM_GET_XCRS),
	STRUCT(KVM_SET_XCRS),
	STRUCT(KVM_GET_DEBUGREGS),
	STRUCT(KVM_SET_DEBUGREGS),
	STRUCT(KVM_GET_XSAVE), /* the legacy 4 KiB form; see vcpu.c for XSAVE2 */
	STRUCT(KVM_INTERRUPT),
	NONE(KVM_NMI),
	NONE(KVM_GET_TSC_KHZ),
	VALUE(KVM_SET_TSC_KHZ),
	NONE(KVM_KVMCLOCK_CTRL),
};

static const struct ioctl_spec *find_spec(unsigned long request) {
	for (size_t i = 0; i < sizeof ioctl_specs / sizeof ioctl_specs[0]; i++)
		if (ioctl_specs[i].request == request) return &ioctl_specs[i];
	return NULL;
}

/* ioctl(fd: number, request: number, arg?: number | bigint | ArrayBufferView): number */
static napi_value js_ioctl(napi_env env, napi_callback_info info) {
	napi_value argv[3];
	if (!get_args(env, info, 3, argv)) return NULL;
	int32_t fd;
	uint32_t request;
	if (!arg_i32(env, argv[0], "fd", &fd) || !arg_u32(env, argv[1], "request", &request)) return NULL;
	const struct ioctl_spec *spec = find_spec(request);
	if (spec == NULL) return throw_type_error(env, "ioctl request 0x%08x is not supported by the binding", request);

	unsigned long arg = 0;
	if (spec->kind == ARG_VALUE) {
		uint64_t v;
		if (!arg_u64(env, argv[2], spec->name, &v)) return NULL;
		arg = (unsigned long)v;
	} else if (spec->kind == ARG_STRUCT || spec->kind == ARG_FLEX) {
		void *data;
		size_t length;
		if (!arg_bytes(env, argv[2], spec->name, &data, &length)) return NULL;
		size_t need = spec->kind == ARG_STRUCT ? _IOC_SIZE(spec->request) : spec->header;
		if (spec->kind == ARG_FLEX && length >= spec->header) {
			uint32_t count;
			memcpy(&count, data, sizeof count);
			need = spec->header + (size_t)count * spec->entry;
		}
		if (length < need)
			return throw_type_error(env, "%s needs a buffer of at least %zu bytes, got %zu", spec->name, need,
			                        length);
		arg = (unsigned long)data;
	}
	int r;
	do {
		r = ioctl(fd, spec->request, arg);
	} while (r < 0 && errno == EINTR);
	if (r < 0) return throw_errno(env, spec->name, "ioctl", errno);
	return make_i32(env, r);
}

/* openDevice(path: string): number -- O_RDWR | O_CLOEXEC */
static napi_value js_open_device(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	char path[4096], operation[4200];
	if (!get_args(env, info, 1, argv) || !arg_string(env, argv[0], "path", path, sizeof path)) return NULL;
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		snprintf(operation, sizeof operation, "open %s", path);
		return throw_errno(env, operation, "open", errno);
	}
	return make_i32(env, fd);
}

/* close(fd: number): void. EINTR after close still released the fd on Linux. */
static napi_value js_close(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	int32_t fd;
	if (!get_args(env, info, 1, argv) || !arg_i32(env, argv[0], "fd", &fd)) return NULL;
	if (close(fd) < 0 && errno != EINTR) return throw_errno(env, "close", "close", errno);
	return make_undefined(env);
}

/* eventfdCreate(initval: number, flags: number): number */
static napi_value js_eventfd_create(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	uint32_t initval, flags;
	if (!get_args(env, info, 2, argv) || !arg_u32(env, argv[0], "initval", &initval) ||
	    !arg_u32(env, argv[1], "flags", &flags))
		return NULL;
	int fd = eventfd(initval, (int)flags | EFD_CLOEXEC);
	if (fd < 0) return throw_errno(env, "eventfd", "eventfd", errno);
	return make_i32(env, fd);
}

/* eventfdRead(fd: number): bigint | null -- null when EAGAIN (nothing signalled) */
static napi_value js_eventfd_read(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	int32_t fd;
	if (!get_args(env, info, 1, argv) || !arg_i32(env, argv[0], "fd", &fd)) return NULL;
	uint64_t value;
	ssize_t n;
	do {
		n = read(fd, &value, sizeof value);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN) return make_null(env);
	if (n < 0) return throw_errno(env, "eventfd read", "read", errno);
	if (n != sizeof value) return throw_errno(env, "eventfd read", "read", EIO);
	return make_bigint_u64(env, value);
}

/* eventfdWrite(fd: number, value: bigint): boolean -- false when EAGAIN (counter full) */
static napi_value js_eventfd_write(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	int32_t fd;
	uint64_t value;
	if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[0], "fd", &fd) ||
	    !arg_u64(env, argv[1], "value", &value))
		return NULL;
	ssize_t n;
	do {
		n = write(fd, &value, sizeof value);
	} while (n < 0 && errno == EINTR);
	if (n < 0 && errno == EAGAIN) return make_bool(env, false);
	if (n < 0) return throw_errno(env, "eventfd write", "write", errno);
	return make_bool(env, true);
}

/*
 * pollReadable(fd: number, timeoutMs: number): boolean. Blocks; meant for
 * worker threads (iothreads) waiting on an ioeventfd, never the main thread.
 */
static napi_value js_poll_readable(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	int32_t fd, timeout;
	if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[0], "fd", &fd) ||
	    !arg_i32(env, argv[1], "timeoutMs", &timeout))
		return NULL;
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r = poll(&p, 1, timeout);
	if (r < 0 && errno == EINTR) return make_bool(env, false);
	if (r < 0) return throw_errno(env, "poll", "poll", errno);
	return make_bool(env, r > 0 && (p.revents & POLLIN) != 0);
}

static bool set_number(napi_env env, napi_value obj, const char *key, double value) {
	napi_value v;
	return napi_create_double(env, value, &v) == napi_ok && napi_set_named_property(env, obj, key, v) == napi_ok;
}

bool add_constants(napi_env env, napi_value target) {
#define C(name) \
	if (!set_number(env, target, #name, (double)(name))) return false;
	for (size_t i = 0; i < sizeof ioctl_specs / sizeof ioctl_specs[0]; i++)
		if (!set_number(env, target, ioctl_specs[i].name, (double)ioctl_specs[i].request)) return false;
	C(KVM_API_VERSION)
	C(KVM_RUN) C(KVM_CREATE_VM) C(KVM_CREATE_VCPU) C(KVM_SET_USER_MEMORY_REGION)
	C(KVM_GET_DIRTY_LOG) C(KVM_CLEAR_DIRTY_LOG) C(KVM_SET_XSAVE) C(KVM_GET_XSAVE2)
	/* capabilities (api.rst sections 7 and 8 and the ioctl descriptions) */
	C(KVM_CAP_IRQCHIP) C(KVM_CAP_HLT) C(KVM_CAP_USER_MEMORY) C(KVM_CAP_SET_TSS_ADDR)
	C(KVM_CAP_EXT_CPUID) C(KVM_CAP_NR_VCPUS) C(KVM_CAP_NR_MEMSLOTS) C(KVM_CAP_PIT)
	C(KVM_CAP_MP_STATE) C(KVM_CAP_SYNC_MMU) C(KVM_CAP_IOMMU) C(KVM_CAP_DESTROY_MEMORY_REGION_WORKS)
	C(KVM_CAP_USER_NMI) C(KVM_CAP_SET_GUEST_DEBUG) C(KVM_CAP_REINJECT_CONTROL) C(KVM_CAP_IRQ_ROUTING)
	C(KVM_CAP_IRQ_INJECT_STATUS) C(KVM_CAP_MCE) C(KVM_CAP_IRQFD) C(KVM_CAP_PIT2) C(KVM_CAP_SET_BOOT_CPU_ID)
	C(KVM_CAP_PIT_STATE2) C(KVM_CAP_IOEVENTFD) C(KVM_CAP_SET_IDENTITY_MAP_ADDR) C(KVM_CAP_ADJUST_CLOCK)
	C(KVM_CAP_VCPU_EVENTS) C(KVM_CAP_PCI_SEGMENT) C(KVM_CAP_INTR_SHADOW) C(KVM_CAP_DEBUGREGS)
	C(KVM_CAP_X86_ROBUST_SINGLESTEP) C(KVM_CAP_XSAVE) C(KVM_CAP_XCRS) C(KVM_CAP_ASYNC_PF)
	C(KVM_CAP_TSC_CONTROL) C(KVM_CAP_GET_TSC_KHZ) C(KVM_CAP_KVMCLOCK_CTRL) C(KVM_CAP_SIGNAL_MSI)
	C(KVM_CAP_READONLY_MEM) C(KVM_CAP_IRQFD_RESAMPLE) C(KVM_CAP_MAX_VCPUS) C(KVM_CAP_COALESCED_MMIO)
	C(KVM_CAP_IMMEDIATE_EXIT) C(KVM_CAP_MAX_VCPU_ID) C(KVM_CAP_X2APIC_API) C(KVM_CAP_SPLIT_IRQCHIP)
	C(KVM_CAP_IOEVENTFD_ANY_LENGTH) C(KVM_CAP_CHECK_EXTENSION_VM) C(KVM_CAP_MULTI_ADDRESS_SPACE)
	C(KVM_CAP_GET_MSR_FEATURES) C(KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) C(KVM_CAP_HYPERV)
	C(KVM_CAP_EXCEPTION_PAYLOAD) C(KVM_CAP_DIRTY_LOG_RING) C(KVM_CAP_XSAVE2) C(KVM_CAP_SYS_ATTRIBUTES)
	C(KVM_CAP_VM_TSC_CONTROL) C(KVM_CAP_X86_USER_SPACE_MSR) C(KVM_CAP_ENABLE_CAP) C(KVM_CAP_HYPERV_TIME)
	C(KVM_CAP_NOP_IO_DELAY) C(KVM_CAP_PV_MMU) C(KVM_CAP_CLOCKSOURCE) C(KVM_CAP_TSC_DEADLINE_TIMER)
	C(KVM_CAP_X86_DISABLE_EXITS) C(KVM_CAP_DIRTY_LOG_RING_ACQ_REL) C(KVM_CAP_ENFORCE_PV_FEATURE_CPUID)
	/* exit reasons (api.rst section 5, "The kvm_run structure") */
	C(KVM_EXIT_UNKNOWN) C(KVM_EXIT_EXCEPTION) C(KVM_EXIT_IO) C(KVM_EXIT_HYPERCALL) C(KVM_EXIT_DEBUG)
	C(KVM_EXIT_HLT) C(KVM_EXIT_MMIO) C(KVM_EXIT_IRQ_WINDOW_OPEN) C(KVM_EXIT_SHUTDOWN)
	C(KVM_EXIT_FAIL_ENTRY) C(KVM_EXIT_INTR) C(KVM_EXIT_SET_TPR) C(KVM_EXIT_TPR_ACCESS) C(KVM_EXIT_NMI)
	C(KVM_EXIT_INTERNAL_ERROR) C(KVM_EXIT_SYSTEM_EVENT) C(KVM_EXIT_IOAPIC_EOI) C(KVM_EXIT_HYPERV)
	C(KVM_EXIT_X86_RDMSR) C(KVM_EXIT_X86_WRMSR) C(KVM_EXIT_DIRTY_RING_FULL) C(KVM_EXIT_AP_RESET_HOLD)
	C(KVM_EXIT_X86_BUS_LOCK) C(KVM_EXIT_NOTIFY)
	C(KVM_EXIT_IO_IN) C(KVM_EXIT_IO_OUT)
	C(KVM_INTERNAL_ERROR_EMULATION) C(KVM_INTERNAL_ERROR_SIMUL_EX) C(KVM_INTERNAL_ERROR_DELIVERY_EV)
	C(KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON)
	C(KVM_SYSTEM_EVENT_SHUTDOWN) C(KVM_SYSTEM_EVENT_RESET) C(KVM_SYSTEM_EVENT_CRASH)
	C(KVM_SYSTEM_EVENT_WAKEUP) C(KVM_SYSTEM_EVENT_SUSPEND) C(KVM_SYSTEM_EVENT_SEV_TERM)
	/* flags */
	C(KVM_MEM_LOG_DIRTY_PAGES) C(KVM_MEM_READONLY)
	C(KVM_IRQ_ROUTING_IRQCHIP) C(KVM_IRQ_ROUTING_MSI) C(KVM_MSI_VALID_DEVID)
	C(KVM_IRQCHIP_PIC_MASTER) C(KVM_IRQCHIP_PIC_SLAVE) C(KVM_IRQCHIP_IOAPIC)
	C(KVM_IOEVENTFD_FLAG_DATAMATCH) C(KVM_IOEVENTFD_FLAG_PIO) C(KVM_IOEVENTFD_FLAG_DEASSIGN)
	C(KVM_IRQFD_FLAG_DEASSIGN) C(KVM_IRQFD_FLAG_RESAMPLE)
	C(KVM_PIT_SPEAKER_DUMMY)
	C(KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) C(KVM_DIRTY_LOG_INITIALLY_SET)
	C(KVM_CLOCK_TSC_STABLE) C(KVM_CLOCK_REALTIME) C(KVM_CLOCK_HOST_TSC)
	C(KVM_MP_STATE_RUNNABLE) C(KVM_MP_STATE_UNINITIALIZED) C(KVM_MP_STATE_INIT_RECEIVED)
	C(KVM_MP_STATE_HALTED) C(KVM_MP_STATE_SIPI_RECEIVED)
	C(KVM_VCPUEVENT_VALID_NMI_PENDING) C(KVM_VCPUEVENT_VALID_SIPI_VECTOR) C(KVM_VCPUEVENT_VALID_SHADOW)
	C(KVM_VCPUEVENT_VALID_SMM) C(KVM_VCPUEVENT_VALID_PAYLOAD) C(KVM_VCPUEVENT_VALID_TRIPLE_FAULT)
	C(KVM_CPUID_FLAG_SIGNIFCANT_INDEX)
	C(KVM_APIC_REG_SIZE) C(KVM_NR_INTERRUPTS) C(KVM_MAX_XCRS)
	C(EFD_NONBLOCK) C(EFD_SEMAPHORE)
#undef C
	return true;
}

/* ---- struct layouts ------------------------------------------------------ */

static bool layout_obj(napi_env env, napi_value parent, const char *name, size_t size, napi_value *out) {
	return napi_create_object(env, out) == napi_ok && set_number(env, *out, "size", (double)size) &&
	       napi_set_named_property(env, parent, name, *out) == napi_ok;
}

bool add_layout(napi_env env, napi_value target) {
	napi_value o;
#define S(type)                                                        \
	if (!layout_obj(env, target, #type, sizeof(struct type), &o)) return false;
#define F(type, field) \
	if (!set_number(env, o, #field, (double)offsetof(struct type, field))) return false;
	S(kvm_regs) F(kvm_regs, rax) F(kvm_regs, rbx) F(kvm_regs, rcx) F(kvm_regs, rdx) F(kvm_regs, rsi)
	F(kvm_regs, rdi) F(kvm_regs, rsp) F(kvm_regs, rbp) F(kvm_regs, r8) F(kvm_regs, r15) F(kvm_regs, rip)
	F(kvm_regs, rflags)
	S(kvm_segment) F(kvm_segment, base) F(kvm_segment, limit) F(kvm_segment, selector) F(kvm_segment, type)
	F(kvm_segment, present) F(kvm_segment, dpl) F(kvm_segment, db) F(kvm_segment, s) F(kvm_segment, l)
	F(kvm_segment, g) F(kvm_segment, avl) F(kvm_segment, unusable)
	S(kvm_dtable) F(kvm_dtable, base) F(kvm_dtable, limit)
	S(kvm_sregs) F(kvm_sregs, cs) F(kvm_sregs, ds) F(kvm_sregs, es) F(kvm_sregs, fs) F(kvm_sregs, gs)
	F(kvm_sregs, ss) F(kvm_sregs, tr) F(kvm_sregs, ldt) F(kvm_sregs, gdt) F(kvm_sregs, idt) F(kvm_sregs, cr0)
	F(kvm_sregs, cr2) F(kvm_sregs, cr3) F(kvm_sregs, cr4) F(kvm_sregs, cr8) F(kvm_sregs, efer)
	F(kvm_sregs, apic_base) F(kvm_sregs, interrupt_bitmap)
	S(kvm_fpu) F(kvm_fpu, fpr) F(kvm_fpu, fcw) F(kvm_fpu, fsw) F(kvm_fpu, ftwx) F(kvm_fpu, last_opcode)
	F(kvm_fpu, last_ip) F(kvm_fpu, last_dp) F(kvm_fpu, xmm) F(kvm_fpu, mxcsr)
	S(kvm_msrs) F(kvm_msrs, nmsrs) F(kvm_msrs, entries)
	S(kvm_msr_entry) F(kvm_msr_entry, index) F(kvm_msr_entry, data)
	S(kvm_msr_list) F(kvm_msr_list, nmsrs) F(kvm_msr_list, indices)
	S(kvm_cpuid2) F(kvm_cpuid2, nent) F(kvm_cpuid2, entries)
	S(kvm_cpuid_entry2) F(kvm_cpuid_entry2, function) F(kvm_cpuid_entry2, index) F(kvm_cpuid_entry2, flags)
	F(kvm_cpuid_entry2, eax) F(kvm_cpuid_entry2, ebx) F(kvm_cpuid_entry2, ecx) F(kvm_cpuid_entry2, edx)
	S(kvm_lapic_state) F(kvm_lapic_state, regs)
	S(kvm_mp_state) F(kvm_mp_state, mp_state)
	S(kvm_vcpu_events) F(kvm_vcpu_events, exception) F(kvm_vcpu_events, interrupt) F(kvm_vcpu_events, nmi)
	F(kvm_vcpu_events, sipi_vector) F(kvm_vcpu_events, flags) F(kvm_vcpu_events, smi)
	F(kvm_vcpu_events, triple_fault) F(kvm_vcpu_events, exception_has_payload)
	F(kvm_vcpu_events, exception_payload)
	S(kvm_xcrs) F(kvm_xcrs, nr_xcrs) F(kvm_xcrs, flags) F(kvm_xcrs, xcrs)
	S(kvm_xcr) F(kvm_xcr, xcr) F(kvm_xcr, value)
	S(kvm_debugregs) F(kvm_debugregs, db) F(kvm_debugregs, dr6) F(kvm_debugregs, dr7) F(kvm_debugregs, flags)
	S(kvm_xsave)
	S(kvm_clock_data) F(kvm_clock_data, clock) F(kvm_clock_data, flags) F(kvm_clock_data, realtime)
	F(kvm_clock_data, host_tsc)
	S(kvm_irq_routing) F(kvm_irq_routing, nr) F(kvm_irq_routing, flags) F(kvm_irq_routing, entries)
	S(kvm_irq_routing_entry) F(kvm_irq_routing_entry, gsi) F(kvm_irq_routing_entry, type)
	F(kvm_irq_routing_entry, flags) F(kvm_irq_routing_entry, u)
	S(kvm_irq_routing_msi) F(kvm_irq_routing_msi, address_lo) F(kvm_irq_routing_msi, address_hi)
	F(kvm_irq_routing_msi, data) F(kvm_irq_routing_msi, devid)
	S(kvm_irq_routing_irqchip) F(kvm_irq_routing_irqchip, irqchip) F(kvm_irq_routing_irqchip, pin)
	S(kvm_ioeventfd) F(kvm_ioeventfd, datamatch) F(kvm_ioeventfd, addr) F(kvm_ioeventfd, len)
	F(kvm_ioeventfd, fd) F(kvm_ioeventfd, flags)
	S(kvm_irqfd) F(kvm_irqfd, fd) F(kvm_irqfd, gsi) F(kvm_irqfd, flags) F(kvm_irqfd, resamplefd)
	S(kvm_msi) F(kvm_msi, address_lo) F(kvm_msi, address_hi) F(kvm_msi, data) F(kvm_msi, flags)
	F(kvm_msi, devid)
	S(kvm_irq_level) F(kvm_irq_level, irq) F(kvm_irq_level, level)
	S(kvm_pit_config) F(kvm_pit_config, flags)
	S(kvm_enable_cap) F(kvm_enable_cap, cap) F(kvm_enable_cap, flags) F(kvm_enable_cap, args)
	S(kvm_interrupt) F(kvm_interrupt, irq)
	S(kvm_irqchip) F(kvm_irqchip, chip_id) F(kvm_irqchip, chip)
	S(kvm_pit_state2)
	S(kvm_run) F(kvm_run, request_interrupt_window) F(kvm_run, immediate_exit) F(kvm_run, exit_reason)
	F(kvm_run, ready_for_interrupt_injection) F(kvm_run, if_flag) F(kvm_run, flags) F(kvm_run, cr8)
	F(kvm_run, apic_base) F(kvm_run, io) F(kvm_run, mmio) F(kvm_run, hw) F(kvm_run, fail_entry)
	F(kvm_run, ex) F(kvm_run, internal) F(kvm_run, system_event) F(kvm_run, eoi)
	if (!set_number(env, o, "io_direction", (double)offsetof(struct kvm_run, io.direction)) ||
	    !set_number(env, o, "io_size", (double)offsetof(struct kvm_run, io.size)) ||
	    !set_number(env, o, "io_port", (double)offsetof(struct kvm_run, io.port)) ||
	    !set_number(env, o, "io_count", (double)offsetof(struct kvm_run, io.count)) ||
	    !set_number(env, o, "io_data_offset", (double)offsetof(struct kvm_run, io.data_offset)) ||
	    !set_number(env, o, "mmio_phys_addr", (double)offsetof(struct kvm_run, mmio.phys_addr)) ||
	    !set_number(env, o, "mmio_data", (double)offsetof(struct kvm_run, mmio.data)) ||
	    !set_number(env, o, "mmio_len", (double)offsetof(struct kvm_run, mmio.len)) ||
	    !set_number(env, o, "mmio_is_write", (double)offsetof(struct kvm_run, mmio.is_write)) ||
	    !set_number(env, o, "fail_entry_hardware_entry_failure_reason",
	                (double)offsetof(struct kvm_run, fail_entry.hardware_entry_failure_reason)) ||
	    !set_number(env, o, "fail_entry_cpu", (double)offsetof(struct kvm_run, fail_entry.cpu)) ||
	    !set_number(env, o, "internal_suberror", (double)offsetof(struct kvm_run, internal.suberror)) ||
	    !set_number(env, o, "internal_ndata", (double)offsetof(struct kvm_run, internal.ndata)) ||
	    !set_number(env, o, "internal_data", (double)offsetof(struct kvm_run, internal.data)) ||
	    !set_number(env, o, "system_event_type", (double)offsetof(struct kvm_run, system_event.type)) ||
	    !set_number(env, o, "system_event_ndata", (double)offsetof(struct kvm_run, system_event.ndata)) ||
	    !set_number(env, o, "system_event_data", (double)offsetof(struct kvm_run, system_event.data)) ||
	    !set_number(env, o, "ex_exception", (double)offsetof(struct kvm_run, ex.exception)) ||
	    !set_number(env, o, "ex_error_code", (double)offsetof(struct kvm_run, ex.error_code)) ||
	    !set_number(env, o, "hw_hardware_exit_reason", (double)offsetof(struct kvm_run, hw.hardware_exit_reason)))
		return false;
#undef F
#undef S
	return true;
}

void register_ioctl_functions(napi_env env, napi_value exports) {
	napi_property_descriptor props[] = {
		{"ioctl", NULL, js_ioctl, NULL, NULL, NULL, napi_enumerable, NULL},
		{"openDevice", NULL, js_open_device, NULL, NULL, NULL, napi_enumerable, NULL},
		{"close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL},
		{"eventfdCreate", NULL, js_eventfd_create, NULL, NULL, NULL, napi_enumerable, NULL},
		{"eventfdRead", NULL, js_eventfd_read, NULL, NULL, NULL, napi_enumerable, NULL},
		{"eventfdWrite", NULL, js_eventfd_write, NULL, NULL, NULL, napi_enumerable, NULL},
		{"pollReadable", NULL, js_poll_readable, NULL, NULL, NULL, napi_enumerable, NULL},
		{"describeErrno", NULL, js_describe_errno, NULL, NULL, NULL, napi_enumerable, NULL},
	};
	napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
