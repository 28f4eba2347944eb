/*
 * VM handles: KVM_CREATE_VM, memory slots, dirty logs, and the JS side of the
 * exit handoff (claiming and polling for vCPU posts, the wake function).
 *
 * KVM API (Documentation/virt/kvm/api.rst): "KVM_CREATE_VM",
 * "KVM_SET_USER_MEMORY_REGION", "KVM_GET_DIRTY_LOG (vm ioctl)",
 * "KVM_CLEAR_DIRTY_LOG (vm ioctl)", "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2".
 * The handoff protocol itself is described in vcpu.c.
 */
#include "binding.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE 4096u
/* The JS thread must never block for long: a poll spins at most this long. */
#define MAX_POLL_BUDGET_NS 500000u
/* Far longer than an exit round trip normally takes (~8 us on the dev host). */
#define YIELD_AFTER_NS 50000u

static const napi_type_tag VM_TAG = {0x7473766d6d2d766dULL, 0x4b564d5f564d0001ULL};

uint64_t monotonic_ns(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void cpu_relax(void) { __builtin_ia32_pause(); }

void vm_release(struct tsvmm_vm *vm) {
	if (atomic_fetch_sub(&vm->refs, 1) != 1) return;
	free(vm->slots);
	free(vm);
}

bool unwrap_vm(napi_env env, napi_value value, struct tsvmm_vm **out) {
	bool ok = false;
	void *data = NULL;
	if (napi_check_object_type_tag(env, value, &VM_TAG, &ok) != napi_ok || !ok ||
	    napi_get_value_external(env, value, &data) != napi_ok) {
		throw_type_error(env, "expected a VM handle");
		return false;
	}
	*out = data;
	if ((*out)->fd < 0) {
		throw_state_error(env, "ERR_KVM_CLOSED", "the VM is closed");
		return false;
	}
	return true;
}

/*
 * Stops threads, optionally closes vCPUs, closes the VM fd. Idempotent; JS
 * thread only. The GC path leaves vCPUs to their own finalizers: a vCPU
 * handle keeps the VM reachable, so a collected VM has no live vCPU handle.
 */
static void vm_shutdown(struct tsvmm_vm *vm, bool close_vcpus, bool detach_buffers);

static void vm_cleanup_hook(void *arg) {
	struct tsvmm_vm *vm = arg;
	vm->cleanup_hook = false; /* Node removes the hook after running it */
	/* Environment teardown: no JS runs any more, so no buffer to detach. */
	vm_shutdown(vm, true, false);
}

static void vm_finalize(napi_env env, void *data, void *hint) {
	(void)hint;
	struct tsvmm_vm *vm = data;
	if (vm->cleanup_hook) {
		napi_remove_env_cleanup_hook(env, vm_cleanup_hook, vm);
		vm->cleanup_hook = false;
	}
	vm_shutdown(vm, false, false);
	vm_release(vm);
}

/* vmCreate(kvmFd: number, type: number): VmHandle -- api.rst "KVM_CREATE_VM" */
static napi_value js_vm_create(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	int32_t kvm_fd;
	uint32_t type;
	if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[0], "kvmFd", &kvm_fd) ||
	    !arg_u32(env, argv[1], "type", &type))
		return NULL;
	int mmap_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_size < 0) return throw_errno(env, "KVM_GET_VCPU_MMAP_SIZE", "ioctl", errno);
	int fd;
	do {
		fd = ioctl(kvm_fd, KVM_CREATE_VM, (unsigned long)type);
	} while (fd < 0 && errno == EINTR);
	if (fd < 0) return throw_errno(env, "KVM_CREATE_VM", "ioctl", errno);

	struct tsvmm_vm *vm = calloc(1, sizeof *vm);
	if (vm == NULL) {
		close(fd);
		return throw_errno(env, "allocate VM state", "calloc", ENOMEM);
	}
	atomic_init(&vm->refs, 1);
	vm->fd = fd;
	vm->run_mmap_size = (size_t)mmap_size;
	vm->env = env;
	vm->poll_min_ns = vm->poll_ns = 20000;
	vm->poll_max_ns = 200000;
	atomic_init(&vm->main_cpu, -1);

	napi_value handle;
	if (napi_create_external(env, vm, vm_finalize, NULL, &handle) != napi_ok) {
		close(fd);
		free(vm);
		return throw_napi_status(env, napi_generic_failure, "napi_create_external");
	}
	NAPI_TRY(env, napi_type_tag_object(env, handle, &VM_TAG));
	if (napi_add_env_cleanup_hook(env, vm_cleanup_hook, vm) == napi_ok) vm->cleanup_hook = true;
	return handle;
}

static napi_value js_vm_fd(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vm *vm;
	if (!get_args(env, info, 1, argv) || !unwrap_vm(env, argv[0], &vm)) return NULL;
	return make_i32(env, vm->fd);
}

static struct tsvmm_memslot *find_slot(struct tsvmm_vm *vm, uint32_t slot) {
	for (size_t i = 0; i < vm->nslots; i++)
		if (vm->slots[i].slot == slot) return &vm->slots[i];
	return NULL;
}

/*
 * vmSetUserMemoryRegion(vm, slot, flags, guestPhysAddr, memorySize, userspaceAddr)
 * api.rst "KVM_SET_USER_MEMORY_REGION". The facade guarantees that
 * userspaceAddr..+memorySize lies inside a GuestRam mapping it keeps alive
 * for as long as the slot exists. memorySize 0 deletes the slot.
 */
static napi_value js_vm_set_user_memory_region(napi_env env, napi_callback_info info) {
	napi_value argv[6];
	struct tsvmm_vm *vm;
	struct kvm_userspace_memory_region region = {0};
	uint64_t gpa, size, hva;
	if (!get_args(env, info, 6, argv) || !unwrap_vm(env, argv[0], &vm) ||
	    !arg_u32(env, argv[1], "slot", &region.slot) || !arg_u32(env, argv[2], "flags", &region.flags) ||
	    !arg_u64(env, argv[3], "guestPhysAddr", &gpa) || !arg_u64(env, argv[4], "memorySize", &size) ||
	    !arg_u64(env, argv[5], "userspaceAddr", &hva))
		return NULL;
	region.guest_phys_addr = gpa;
	region.memory_size = size;
	region.userspace_addr = hva;

	struct tsvmm_memslot *rec = find_slot(vm, region.slot);
	if (rec == NULL && size != 0 && vm->nslots == vm->slots_cap) {
		size_t cap = vm->slots_cap ? vm->slots_cap * 2 : 8;
		struct tsvmm_memslot *grown = realloc(vm->slots, cap * sizeof *grown);
		if (grown == NULL) return throw_errno(env, "record memory slot", "realloc", ENOMEM);
		vm->slots = grown;
		vm->slots_cap = cap;
	}
	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		return throw_errno(env, "KVM_SET_USER_MEMORY_REGION", "ioctl", errno);
	if (rec == NULL && size != 0) {
		rec = &vm->slots[vm->nslots++];
		rec->slot = region.slot;
	}
	if (rec != NULL) rec->npages = size / PAGE_SIZE;
	return make_undefined(env);
}

/* Bytes of the bitmap KVM writes for a slot: one bit per page, in longs. */
static size_t bitmap_bytes(uint64_t npages) { return (size_t)((npages + 63) / 64 * 8); }

/* vmGetDirtyLog(vm, slot, bitmap) -- api.rst "KVM_GET_DIRTY_LOG (vm ioctl)" */
static napi_value js_vm_get_dirty_log(napi_env env, napi_callback_info info) {
	napi_value argv[3];
	struct tsvmm_vm *vm;
	uint32_t slot;
	void *data;
	size_t length;
	if (!get_args(env, info, 3, argv) || !unwrap_vm(env, argv[0], &vm) || !arg_u32(env, argv[1], "slot", &slot) ||
	    !arg_bytes(env, argv[2], "bitmap", &data, &length))
		return NULL;
	struct tsvmm_memslot *rec = find_slot(vm, slot);
	if (rec == NULL || rec->npages == 0) return throw_errno(env, "KVM_GET_DIRTY_LOG", "ioctl", ENOENT);
	if (length < bitmap_bytes(rec->npages))
		return throw_type_error(env, "KVM_GET_DIRTY_LOG needs a bitmap of %zu bytes for slot %u, got %zu",
		                        bitmap_bytes(rec->npages), slot, length);
	struct kvm_dirty_log log = {.slot = slot, .dirty_bitmap = data};
	if (ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log) < 0) return throw_errno(env, "KVM_GET_DIRTY_LOG", "ioctl", errno);
	return make_undefined(env);
}

/* vmClearDirtyLog(vm, slot, firstPage, numPages, bitmap) -- api.rst "KVM_CLEAR_DIRTY_LOG" */
static napi_value js_vm_clear_dirty_log(napi_env env, napi_callback_info info) {
	napi_value argv[5];
	struct tsvmm_vm *vm;
	uint32_t slot, num_pages;
	uint64_t first_page;
	void *data;
	size_t length;
	if (!get_args(env, info, 5, argv) || !unwrap_vm(env, argv[0], &vm) || !arg_u32(env, argv[1], "slot", &slot) ||
	    !arg_u64(env, argv[2], "firstPage", &first_page) || !arg_u32(env, argv[3], "numPages", &num_pages) ||
	    !arg_bytes(env, argv[4], "bitmap", &data, &length))
		return NULL;
	if (length < bitmap_bytes(num_pages))
		return throw_type_error(env, "KVM_CLEAR_DIRTY_LOG needs a bitmap of %zu bytes for %u pages, got %zu",
		                        bitmap_bytes(num_pages), num_pages, length);
	struct kvm_clear_dirty_log log = {
		.slot = slot, .num_pages = num_pages, .first_page = first_page, .dirty_bitmap = data,
	};
	if (ioctl(vm->fd, KVM_CLEAR_DIRTY_LOG, &log) < 0)
		return throw_errno(env, "KVM_CLEAR_DIRTY_LOG", "ioctl", errno);
	return make_undefined(env);
}

/* ---- exit handoff, JS side ----------------------------------------------- */

int32_t vm_claim_pending(struct tsvmm_vm *vm) {
	uint32_t words = (vm->index_limit + 63) / 64;
	for (uint32_t n = 0; n < words; n++) {
		uint32_t w = (vm->scan_from / 64 + n) % words;
		uint64_t bits = atomic_load(&vm->pending[w]);
		if (bits == 0) continue;
		/* Round-robin: prefer vCPUs after the one served last. */
		if (n == 0) {
			uint64_t later = bits & (~0ULL << (vm->scan_from % 64));
			if (later != 0) bits = later;
		}
		while (bits != 0) {
			unsigned b = (unsigned)__builtin_ctzll(bits);
			uint64_t bit = 1ULL << b;
			uint64_t prev = atomic_fetch_and(&vm->pending[w], ~bit);
			bits &= ~bit;
			if ((prev & bit) == 0) continue;
			uint32_t index = w * 64 + b;
			struct tsvmm_vcpu *vcpu = vm->vcpus[index];
			/* A post completed by stop/resume before JS saw it leaves a stale bit. */
			if (vcpu == NULL || atomic_load(&vcpu->handoff) == HANDOFF_RUNNING) continue;
			vm->scan_from = (index + 1) % (words * 64);
			vcpu->claimed_seq = atomic_load(&vcpu->post_seq);
			return (int32_t)(index << 4 | atomic_load_explicit(&vcpu->post_kind, memory_order_relaxed));
		}
	}
	return -1;
}

/*
 * Spins up to vm->poll_ns for a post from any vCPU. On giving up it clears
 * `draining` and checks once more: a vCPU posts (seq_cst) before reading
 * `draining`, the JS thread clears `draining` (seq_cst) before its last
 * check, so either the vCPU sees draining == 0 and wakes us through the
 * threadsafe function, or we see its post here. No post is lost.
 */
static int32_t vm_poll(struct tsvmm_vm *vm) {
	int32_t token = vm_claim_pending(vm);
	if (token >= 0) return token;
	uint64_t budget_ns = vm->poll_ns;
	if (budget_ns > 0) {
		int me = sched_getcpu();
		atomic_store_explicit(&vm->main_cpu, me, memory_order_relaxed);
		struct tsvmm_vcpu *partner = vm->last_completed;
		uint64_t start = monotonic_ns(), deadline = start + budget_ns, next_yield = start + YIELD_AFTER_NS;
		for (unsigned i = 1;; i++) {
			cpu_relax();
			token = vm_claim_pending(vm);
			if (token >= 0) return token;
			if ((i & 15) == 0) {
				uint64_t now = monotonic_ns();
				if (now >= deadline) break;
				/*
				 * Spinning only helps while the vCPU thread runs on another
				 * CPU. If it last ran on this one it is queued behind us:
				 * yield to it (vcpu.c does the same for the JS thread).
				 * The timed yield covers a thread we failed to place.
				 */
				bool queued_here = partner != NULL &&
				                   atomic_load_explicit(&partner->cpu, memory_order_relaxed) == me;
				if (queued_here || now >= next_yield) {
					sched_yield();
					me = sched_getcpu();
					atomic_store_explicit(&vm->main_cpu, me, memory_order_relaxed);
					next_yield = now + YIELD_AFTER_NS;
				}
			}
		}
	}
	atomic_store(&vm->draining, 0);
	token = vm_claim_pending(vm);
	if (token >= 0) {
		atomic_store(&vm->draining, 1);
		return token;
	}
	vm->idle_since_ns = monotonic_ns();
	return -1;
}

/*
 * Adapts the poll budget the way KVM's halt polling does
 * (Documentation/virt/kvm/halt-polling.rst): a wake that arrives soon after
 * the poll gave up means a longer poll would have caught it, so double the
 * budget (up to the maximum); a wake after a long idle stretch means the
 * guest went quiet, so halve it (down to the minimum). This keeps the fast
 * path after a hiccup (a preempted thread, a GC pause) instead of settling
 * into wake-per-exit, where every exit pays two cross-CPU wakeups.
 */
static void vm_adapt_poll(struct tsvmm_vm *vm) {
	if (vm->idle_since_ns == 0) return;
	uint64_t gap = monotonic_ns() - vm->idle_since_ns;
	vm->idle_since_ns = 0;
	if (gap < vm->poll_max_ns) {
		uint64_t grown = vm->poll_ns < 1000 ? 1000 : vm->poll_ns * 2;
		vm->poll_ns = grown > vm->poll_max_ns ? vm->poll_max_ns : grown;
	} else {
		vm->poll_ns = vm->poll_ns / 2 < vm->poll_min_ns ? vm->poll_min_ns : vm->poll_ns / 2;
	}
}

/* vmSetPollBudget(vm, minNs, maxNs): bounds of the adaptive poll budget. */
static napi_value js_vm_set_poll_budget(napi_env env, napi_callback_info info) {
	napi_value argv[3];
	struct tsvmm_vm *vm;
	uint32_t min_ns, max_ns;
	if (!get_args(env, info, 3, argv) || !unwrap_vm(env, argv[0], &vm) || !arg_u32(env, argv[1], "minNs", &min_ns) ||
	    !arg_u32(env, argv[2], "maxNs", &max_ns))
		return NULL;
	if (max_ns > MAX_POLL_BUDGET_NS) max_ns = MAX_POLL_BUDGET_NS;
	if (min_ns > max_ns) min_ns = max_ns;
	vm->poll_min_ns = min_ns;
	vm->poll_max_ns = max_ns;
	vm->poll_ns = min_ns;
	return make_undefined(env);
}

/* vmPollBudget(vm): the current adaptive budget in ns (diagnostics). */
static napi_value js_vm_poll_budget(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vm *vm;
	if (!get_args(env, info, 1, argv) || !unwrap_vm(env, argv[0], &vm)) return NULL;
	return make_double(env, (double)vm->poll_ns);
}

/* vmDrainBegin(vm): token | -1 -- called from the wake callback */
static napi_value js_vm_drain_begin(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vm *vm;
	if (!get_args(env, info, 1, argv) || !unwrap_vm(env, argv[0], &vm)) return NULL;
	atomic_store(&vm->draining, 1);
	atomic_store(&vm->wake_posted, 0);
	vm_adapt_poll(vm);
	return make_i32(env, vm_poll(vm));
}

/* vmPoll(vm): token | -1 -- while draining (after vmDrainBegin) */
static napi_value js_vm_poll(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vm *vm;
	if (!get_args(env, info, 1, argv) || !unwrap_vm(env, argv[0], &vm)) return NULL;
	return make_i32(env, vm_poll(vm));
}

/*
 * vmCompleteAndPoll(vm, index): token | -1 -- the hot path: one native call
 * per exit completes the post of vCPU `index` that JS claimed (unless a
 * stop already released it and the vCPU moved on) and waits for the next
 * post of any vCPU.
 */
static napi_value js_vm_complete_and_poll(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	struct tsvmm_vm *vm;
	uint32_t index;
	if (!get_args(env, info, 2, argv) || !unwrap_vm(env, argv[0], &vm) || !arg_u32(env, argv[1], "index", &index))
		return NULL;
	if (index >= TSVMM_MAX_VCPUS || vm->vcpus[index] == NULL)
		return throw_type_error(env, "no vCPU with index %u", index);
	struct tsvmm_vcpu *vcpu = vm->vcpus[index];
	vcpu_complete(vcpu, vcpu->claimed_seq);
	return make_i32(env, vm_poll(vm));
}

struct wake_context {
	struct tsvmm_vm *vm;
	napi_threadsafe_function tsfn;
};

static void wake_call_js(napi_env env, napi_value js_cb, void *context, void *data) {
	(void)context;
	(void)data;
	if (env == NULL || js_cb == NULL) return;
	napi_value undefined = make_undefined(env);
	napi_call_function(env, undefined, js_cb, 0, NULL, NULL);
}

/*
 * Node-API's contract: once the threadsafe function is finalized no thread
 * may call it. A normal release happens after every vCPU thread was joined;
 * on environment teardown Node finalizes it first, so stop and join here.
 */
static void wake_finalize(napi_env env, void *data, void *hint) {
	(void)env;
	(void)hint;
	struct wake_context *ctx = data;
	if (ctx->vm->wake == ctx->tsfn) {
		vm_stop_all_threads(ctx->vm);
		ctx->vm->wake = NULL;
	}
	vm_release(ctx->vm);
	free(ctx);
}

/* vmWakeStart(vm, callback): creates the wake function (keeps the loop alive). */
static napi_value js_vm_wake_start(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	struct tsvmm_vm *vm;
	if (!get_args(env, info, 2, argv) || !unwrap_vm(env, argv[0], &vm)) return NULL;
	if (vm->wake != NULL) return make_undefined(env);
	struct wake_context *ctx = calloc(1, sizeof *ctx);
	if (ctx == NULL) return throw_errno(env, "allocate wake context", "calloc", ENOMEM);
	napi_value name;
	NAPI_TRY(env, napi_create_string_utf8(env, "tsvmm:vcpu-exit", NAPI_AUTO_LENGTH, &name));
	napi_status status = napi_create_threadsafe_function(env, argv[1], NULL, name, 0, 1, ctx, wake_finalize,
	                                                     NULL, wake_call_js, &ctx->tsfn);
	if (status != napi_ok) {
		free(ctx);
		return throw_napi_status(env, status, "napi_create_threadsafe_function");
	}
	ctx->vm = vm;
	atomic_fetch_add(&vm->refs, 1);
	atomic_store(&vm->wake_posted, 0);
	vm->wake = ctx->tsfn;
	return make_undefined(env);
}

void vm_release_wake(struct tsvmm_vm *vm) {
	napi_threadsafe_function tsfn = vm->wake;
	if (tsfn == NULL) return;
	vm->wake = NULL;
	napi_release_threadsafe_function(tsfn, napi_tsfn_release);
}

/* vmWakeStop(vm): releases the wake function once no vCPU thread is left. */
static napi_value js_vm_wake_stop(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vm *vm;
	if (!get_args(env, info, 1, argv) || !unwrap_vm(env, argv[0], &vm)) return NULL;
	for (uint32_t i = 0; i < vm->index_limit; i++)
		if (vm->vcpus[i] != NULL && vm->vcpus[i]->thread_live)
			return throw_state_error(env, "ERR_KVM_VCPU_RUNNING", "vCPU %u still has a thread",
			                         vm->vcpus[i]->id);
	vm_release_wake(vm);
	return make_undefined(env);
}

void vm_stop_all_threads(struct tsvmm_vm *vm) {
	for (uint32_t i = 0; i < vm->index_limit; i++)
		if (vm->vcpus[i] != NULL && vm->vcpus[i]->thread_live) vcpu_request_stop(vm->vcpus[i]);
	for (uint32_t i = 0; i < vm->index_limit; i++)
		if (vm->vcpus[i] != NULL) vcpu_join(vm->vcpus[i]);
}

static void vm_shutdown(struct tsvmm_vm *vm, bool close_vcpus, bool detach_buffers) {
	vm_stop_all_threads(vm);
	vm_release_wake(vm);
	for (uint32_t i = 0; close_vcpus && i < vm->index_limit; i++)
		if (vm->vcpus[i] != NULL) vcpu_close_resources(vm->vcpus[i], detach_buffers);
	if (vm->fd >= 0) {
		close(vm->fd);
		vm->fd = -1;
	}
}

/* vmStopThreads(vm): stops and joins every vCPU thread now (bounded wait). */
static napi_value js_vm_stop_threads(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vm *vm;
	if (!get_args(env, info, 1, argv) || !unwrap_vm(env, argv[0], &vm)) return NULL;
	vm_stop_all_threads(vm);
	return make_undefined(env);
}

/* vmClose(vm): stops threads, closes every vCPU of the VM and the VM fd. */
static napi_value js_vm_close(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vm *vm;
	if (!get_args(env, info, 1, argv)) return NULL;
	bool ok = false;
	void *data = NULL;
	if (napi_check_object_type_tag(env, argv[0], &VM_TAG, &ok) != napi_ok || !ok ||
	    napi_get_value_external(env, argv[0], &data) != napi_ok)
		return throw_type_error(env, "expected a VM handle");
	vm = data;
	if (vm->cleanup_hook) {
		napi_remove_env_cleanup_hook(env, vm_cleanup_hook, vm);
		vm->cleanup_hook = false;
	}
	vm_shutdown(vm, true, true);
	return make_undefined(env);
}

void register_vm_functions(napi_env env, napi_value exports) {
	napi_property_descriptor props[] = {
		{"vmCreate", NULL, js_vm_create, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmFd", NULL, js_vm_fd, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmSetUserMemoryRegion", NULL, js_vm_set_user_memory_region, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmGetDirtyLog", NULL, js_vm_get_dirty_log, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmClearDirtyLog", NULL, js_vm_clear_dirty_log, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmDrainBegin", NULL, js_vm_drain_begin, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmPoll", NULL, js_vm_poll, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmSetPollBudget", NULL, js_vm_set_poll_budget, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmPollBudget", NULL, js_vm_poll_budget, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmCompleteAndPoll", NULL, js_vm_complete_and_poll, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmWakeStart", NULL, js_vm_wake_start, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmWakeStop", NULL, js_vm_wake_stop, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmStopThreads", NULL, js_vm_stop_threads, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vmClose", NULL, js_vm_close, NULL, NULL, NULL, napi_enumerable, NULL},
	};
	napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
