/*
 * Shared declarations of the tsvmm KVM addon (Node-API, C).
 *
 * KVM API: torvalds/linux Documentation/virt/kvm/api.rst. Section names are
 * cited where each ioctl is used. Everything here runs on the thread that
 * loaded the addon (the JS thread) unless a comment says "vCPU thread".
 */
#ifndef TSVMM_KVM_BINDING_H
#define TSVMM_KVM_BINDING_H

#define NAPI_VERSION 9
#include <node_api.h>

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors.c: JS errors and argument conversion ------------------------ */

/*
 * Throws `<operation> failed: <ENAME> (<strerror>)` with .code = 'ENAME',
 * .errno = -err (Node's convention for system errors), .syscall and
 * .operation. Always returns NULL so callers can `return throw_errno(...)`.
 */
napi_value throw_errno(napi_env env, const char *operation, const char *syscall, int err);
napi_value throw_type_error(napi_env env, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* describeErrno(errno): { code: 'ENOSPC', text: 'No space left on device' } */
napi_value js_describe_errno(napi_env env, napi_callback_info info);
/* A misuse of a handle (closed, wrong state): .code is the given code. */
napi_value throw_state_error(napi_env env, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Turns a failed napi_* status into an exception unless one is pending. */
napi_value throw_napi_status(napi_env env, napi_status status, const char *what);

#define NAPI_TRY(env, call)                                                                \
	do {                                                                               \
		napi_status napi_try_status_ = (call);                                     \
		if (napi_try_status_ != napi_ok) return throw_napi_status((env), napi_try_status_, #call); \
	} while (0)

/* Fetches exactly `want` arguments (missing ones are undefined). */
bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
/* Each arg_* returns false after throwing a TypeError naming `what`. */
bool arg_u32(napi_env env, napi_value value, const char *what, uint32_t *out);
bool arg_i32(napi_env env, napi_value value, const char *what, int32_t *out);
/* Accepts a bigint (lossless) or a non-negative safe-integer number. */
bool arg_u64(napi_env env, napi_value value, const char *what, uint64_t *out);
bool arg_bytes(napi_env env, napi_value value, const char *what, void **data, size_t *length);
bool arg_string(napi_env env, napi_value value, const char *what, char *buf, size_t size);

napi_value make_i32(napi_env env, int32_t v);
napi_value make_u32(napi_env env, uint32_t v);
napi_value make_double(napi_env env, double v);
napi_value make_bool(napi_env env, bool v);
napi_value make_bigint_u64(napi_env env, uint64_t v);
napi_value make_undefined(napi_env env);
napi_value make_null(napi_env env);

/* ---- ioctl.c: generic checked ioctl, fds, eventfd ------------------------ */

void register_ioctl_functions(napi_env env, napi_value exports);
void register_fdwatch_functions(napi_env env, napi_value exports);
/* Adds every KVM_* constant the facade uses to `target`. */
bool add_constants(napi_env env, napi_value target);
/* Adds sizes and offsets of the uapi structs the facade encodes. */
bool add_layout(napi_env env, napi_value target);

/* ---- vm.c / vcpu.c ------------------------------------------------------- */

#define TSVMM_MAX_VCPUS 1024
#define TSVMM_PENDING_WORDS (TSVMM_MAX_VCPUS / 64)

struct tsvmm_vcpu;

struct tsvmm_memslot {
	uint32_t slot;    /* as passed to KVM (address space in bits 16-31) */
	uint64_t npages;  /* 0 when the slot was deleted */
};

struct tsvmm_vm {
	atomic_int refs;       /* the JS handle plus one per vCPU */
	int fd;                /* -1 once closed */
	size_t run_mmap_size;  /* KVM_GET_VCPU_MMAP_SIZE */
	napi_env env;
	bool cleanup_hook;

	struct tsvmm_memslot *slots;
	size_t nslots, slots_cap;

	/* Exit handoff. vcpus[] and index_limit are touched by the JS thread only. */
	struct tsvmm_vcpu *vcpus[TSVMM_MAX_VCPUS];
	uint32_t index_limit;    /* highest used index + 1 */
	uint32_t scan_from;      /* round-robin start for claim_pending */
	_Atomic uint64_t pending[TSVMM_PENDING_WORDS];
	atomic_uint draining;    /* JS thread is dispatching or polling exits */
	/* Adaptive poll budget (JS thread only), see vm_poll. */
	uint64_t poll_ns, poll_min_ns, poll_max_ns;
	uint64_t idle_since_ns; /* when the last poll gave up; 0 while draining */
	/* CPU the JS thread last polled on, and the vCPU it completed last: a
	 * spinner whose partner is queued on its own CPU yields instead. */
	atomic_int main_cpu;
	struct tsvmm_vcpu *last_completed;
	atomic_uint wake_posted; /* a wake call is queued on `wake` */
	napi_threadsafe_function wake; /* NULL while no vCPU thread exists */
};

/* What a vCPU thread handed to the JS thread (low 4 bits of a poll token). */
enum tsvmm_post_kind {
	POST_NONE = 0,
	POST_EXIT = 1,      /* KVM_EXIT_IO or KVM_EXIT_MMIO: complete to resume */
	POST_EVENT = 2,     /* any other exit: parked until resumed or stopped */
	POST_RUN_ERROR = 3, /* KVM_RUN failed with an errno other than EINTR */
	POST_PAUSED = 4,    /* acknowledged a pause request, out of KVM_RUN */
	POST_ENDED = 5,     /* the thread is exiting; join it */
};

/* vcpu->handoff, the futex word. */
enum tsvmm_handoff {
	HANDOFF_RUNNING = 0,  /* the vCPU thread owns kvm_run */
	HANDOFF_POSTED = 1,   /* JS owns kvm_run; the vCPU thread spins */
	HANDOFF_SLEEPING = 2, /* JS owns kvm_run; the vCPU thread is in FUTEX_WAIT */
};

/* vcpu->control bits, set by the JS thread. */
#define CONTROL_PAUSE 1u
#define CONTROL_STOP 2u

/* Cheap per-vCPU counters; indices shared with the facade (exits.ts). */
#define STAT_EXIT_REASONS 64 /* [0, 64): count per kvm_run.exit_reason */
enum tsvmm_stat {
	STAT_RUNS = STAT_EXIT_REASONS, /* KVM_RUN calls */
	STAT_EINTR,                    /* KVM_RUN returned EINTR (kick or signal) */
	STAT_POSTS,                    /* handoffs to JS */
	STAT_WAKES,                    /* handoffs that had to wake the JS thread */
	STAT_SLEEPS,                   /* waits that fell back to FUTEX_WAIT */
	STAT_COUNT
};

struct tsvmm_vcpu {
	struct tsvmm_vm *vm; /* holds one reference on the VM */
	int fd;          /* -1 once closed */
	uint32_t id;     /* KVM vcpu id (APIC id) */
	uint32_t index;  /* slot in vm->vcpus and the pending bitmap */
	struct kvm_run *run;
	size_t run_size;
	napi_ref run_buffer; /* external ArrayBuffer over `run`, detached on close */

	pthread_t thread;
	bool thread_live; /* created and not yet joined (JS thread's view) */
	/* Adaptive spin before FUTEX_WAIT (vCPU thread only), see wait_completion. */
	uint64_t spin_ns, spin_min_ns, spin_max_ns;

	atomic_uint handoff;
	atomic_uint control;
	atomic_uint post_kind;
	atomic_uint post_seq;
	uint32_t claimed_seq; /* post_seq of the post JS claimed last (JS thread) */
	atomic_int cpu; /* CPU the vCPU thread posted from */
	int run_errno;
	uint64_t stats[STAT_COUNT];
};

void register_vm_functions(napi_env env, napi_value exports);
void register_vcpu_functions(napi_env env, napi_value exports);
bool unwrap_vm(napi_env env, napi_value value, struct tsvmm_vm **out);
void vm_release(struct tsvmm_vm *vm);
/* Stops every vCPU thread of the VM and joins it (JS thread, bounded). */
void vm_stop_all_threads(struct tsvmm_vm *vm);
/* Releases the wake function once no vCPU thread is left. */
void vm_release_wake(struct tsvmm_vm *vm);
/* JS thread: claims one pending handoff; returns a poll token or -1. */
int32_t vm_claim_pending(struct tsvmm_vm *vm);

/* vcpu.c */
/* Completes post `seq` if it is still the vCPU's current post; seq -1
 * completes whatever is current (stop paths only). */
bool vcpu_complete(struct tsvmm_vcpu *vcpu, int64_t seq);
/* Unmaps kvm_run (detaching its ArrayBuffer if asked) and closes the fd. */
void vcpu_close_resources(struct tsvmm_vcpu *vcpu, bool detach_buffer);
void vcpu_request_stop(struct tsvmm_vcpu *vcpu);
void vcpu_join(struct tsvmm_vcpu *vcpu);
int kick_signal_number(void);

uint64_t monotonic_ns(void);

#endif
