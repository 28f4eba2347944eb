/*
 * vCPU handles and the vCPU threads.
 *
 * KVM API (Documentation/virt/kvm/api.rst): "KVM_CREATE_VCPU", "KVM_RUN",
 * section 5 "The kvm_run structure" (immediate_exit, exit reasons, and the
 * rule that an IO/MMIO exit is only complete once KVM_RUN is re-entered),
 * "KVM_GET_XSAVE2" / "KVM_SET_XSAVE", "KVM_CAP_IMMEDIATE_EXIT".
 *
 * Threading model. Each vCPU runs KVM_RUN on its own pthread and never runs
 * JS. An exit that needs the VMM is *posted* to the JS thread:
 *
 *   vCPU thread                          JS thread
 *   -----------                          ---------
 *   handoff = POSTED, post_kind = K
 *   pending bit |= 1 << index            (draining: polls pending bits)
 *   if !draining: wake (threadsafe fn)   (idle: wake callback -> drain)
 *   spin on handoff (spin_ns)            claim bit, run JS handler,
 *   then FUTEX_WAIT (handoff SLEEPING)   handoff = RUNNING (+FUTEX_WAKE
 *   re-enter KVM_RUN                     only if SLEEPING), poll again
 *
 * While JS drains exits it keeps `draining` set, so vCPU threads post
 * without any system call; the common round trip is two cache-line
 * transfers each way plus the JS handler.
 *
 * Both spins adapt like KVM halt polling (vm.c, vm_adapt_poll) and yield the
 * CPU when the partner thread last ran on the same CPU: on a loaded host the
 * two threads can share a CPU, and spinning would then only delay the other.
 *
 * Only the JS thread moves handoff back to RUNNING, and it completes only
 * the post it claimed (claimed_seq), so a completion can never land on a
 * later post, such as the ENDED a stop provokes.
 *
 * Kicking a vCPU out of KVM_RUN (pause, stop): set kvm_run.immediate_exit,
 * then pthread_kill() a real-time signal whose handler does nothing and is
 * installed without SA_RESTART. If the signal lands before the thread enters
 * the kernel, immediate_exit makes KVM_RUN return EINTR at once; if it lands
 * inside, KVM returns EINTR. The thread clears immediate_exit *before*
 * reading `control`, so a request cannot be lost between the two.
 */
#include "binding.h"

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const napi_type_tag VCPU_TAG = {0x7473766d6d2d766dULL, 0x4b564d5f56435055ULL};

/* ---- kick signal ---------------------------------------------------------- */

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;
static int kick_signal = -1;
static int kick_errno = 0;

static void kick_handler(int sig) { (void)sig; }

/*
 * The first real-time signal (from SIGRTMIN, which glibc already moves past
 * its own) that nobody in the process handles. Process-wide, once: workers
 * share it.
 */
static void install_kick_signal(void) {
	for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++) {
		struct sigaction old;
		if (sigaction(sig, NULL, &old) < 0) continue;
		if ((old.sa_flags & SA_SIGINFO) != 0 || old.sa_handler != SIG_DFL) continue;
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = kick_handler;
		sigemptyset(&sa.sa_mask);
		sa.sa_flags = 0; /* no SA_RESTART: KVM_RUN must return EINTR */
		if (sigaction(sig, &sa, NULL) < 0) {
			kick_errno = errno;
			return;
		}
		kick_signal = sig;
		return;
	}
	kick_errno = EAGAIN;
}

int kick_signal_number(void) {
	pthread_once(&kick_once, install_kick_signal);
	return kick_signal;
}

/* ---- futex ---------------------------------------------------------------- */

static void futex_wait(atomic_uint *word, unsigned expected) {
	syscall(SYS_futex, (unsigned *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *word) {
	syscall(SYS_futex, (unsigned *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static inline void cpu_relax(void) { __builtin_ia32_pause(); }

/* vCPU thread: only this thread writes its counters; JS reads them racily
 * but atomically (a relaxed store is a plain mov on x86). */
static inline void stat_inc(struct tsvmm_vcpu *v, unsigned i) {
	__atomic_store_n(&v->stats[i], v->stats[i] + 1, __ATOMIC_RELAXED);
}

/* Far longer than a JS handler normally takes (a few microseconds). */
#define YIELD_AFTER_NS 50000u

/* ---- handoff, vCPU thread side -------------------------------------------- */

/* vCPU thread. */
static void post(struct tsvmm_vcpu *v, unsigned kind) {
	struct tsvmm_vm *vm = v->vm;
	atomic_store_explicit(&v->cpu, sched_getcpu(), memory_order_relaxed);
	atomic_store_explicit(&v->post_kind, kind, memory_order_relaxed);
	atomic_fetch_add_explicit(&v->post_seq, 1, memory_order_relaxed);
	atomic_store(&v->handoff, HANDOFF_POSTED);
	atomic_fetch_or(&vm->pending[v->index / 64], 1ULL << (v->index % 64));
	stat_inc(v, STAT_POSTS);
	if (atomic_load(&vm->draining) == 0 && atomic_exchange(&vm->wake_posted, 1) == 0) {
		/* Non-blocking: the queue is unbounded and wakes coalesce. */
		napi_call_threadsafe_function(vm->wake, NULL, napi_tsfn_nonblocking);
		stat_inc(v, STAT_WAKES);
	}
}

/*
 * vCPU thread: returns once the JS thread completed the post. It never
 * leaves on its own (not even for a stop): only the JS thread moves
 * handoff back to RUNNING, so a completion can never hit a later post.
 */
static void wait_completion(struct tsvmm_vcpu *v) {
	uint64_t spin = v->spin_ns;
	if (spin > 0) {
		int me = atomic_load_explicit(&v->cpu, memory_order_relaxed);
		uint64_t start = monotonic_ns(), deadline = start + spin, next_yield = start + YIELD_AFTER_NS;
		for (unsigned i = 1;; i++) {
			if (atomic_load_explicit(&v->handoff, memory_order_acquire) == HANDOFF_RUNNING) return;
			if ((i & 15) == 0) {
				/*
				 * On a loaded host the JS thread may be queued on this very
				 * CPU, and spinning would only delay the completion we wait
				 * for: yield to it. The timed yield covers a JS thread that
				 * moved without us noticing; sched_yield() returns at once
				 * when nothing else is runnable here.
				 */
				bool queued_here = atomic_load_explicit(&v->vm->main_cpu, memory_order_relaxed) == me;
				uint64_t now = (i & 63) == 0 || queued_here ? monotonic_ns() : 0;
				if (now != 0 && now >= deadline) break;
				if (queued_here || (now != 0 && now >= next_yield)) {
					sched_yield();
					me = sched_getcpu();
					atomic_store_explicit(&v->cpu, me, memory_order_relaxed);
					next_yield = now + YIELD_AFTER_NS;
				}
			}
			cpu_relax();
		}
	}
	unsigned expected = HANDOFF_POSTED;
	if (!atomic_compare_exchange_strong(&v->handoff, &expected, HANDOFF_SLEEPING) &&
	    expected == HANDOFF_RUNNING)
		return;
	stat_inc(v, STAT_SLEEPS);
	uint64_t slept_from = monotonic_ns();
	while (atomic_load(&v->handoff) == HANDOFF_SLEEPING) futex_wait(&v->handoff, HANDOFF_SLEEPING);
	/* Same adaptation as the JS thread's poll (vm.c, vm_adapt_poll): a short
	 * sleep means a longer spin would have avoided the futex round trip. */
	uint64_t slept = monotonic_ns() - slept_from;
	if (slept < v->spin_max_ns) {
		uint64_t grown = v->spin_ns < 1000 ? 1000 : v->spin_ns * 2;
		v->spin_ns = grown > v->spin_max_ns ? v->spin_max_ns : grown;
	} else {
		v->spin_ns = v->spin_ns / 2 < v->spin_min_ns ? v->spin_min_ns : v->spin_ns / 2;
	}
}

static void *vcpu_thread(void *arg) {
	struct tsvmm_vcpu *v = arg;
	struct kvm_run *run = v->run;
	/* The last exit is completed only by the next KVM_RUN (api.rst, kvm_run). */
	bool incomplete = false;

	for (;;) {
		__atomic_store_n(&run->immediate_exit, 0, __ATOMIC_RELAXED);
		atomic_thread_fence(memory_order_seq_cst);
		unsigned control = atomic_load(&v->control);
		if (control & CONTROL_STOP) break;
		if (control & CONTROL_PAUSE) {
			if (!incomplete) {
				post(v, POST_PAUSED);
				wait_completion(v);
				continue;
			}
			/* Finish the pending IO/MMIO without running guest code. */
			__atomic_store_n(&run->immediate_exit, 1, __ATOMIC_RELAXED);
		}
		stat_inc(v, STAT_RUNS);
		int r = ioctl(v->fd, KVM_RUN, 0);
		if (r < 0) {
			int err = errno;
			incomplete = false;
			if (err == EINTR || err == EAGAIN) {
				stat_inc(v, STAT_EINTR);
				continue;
			}
			v->run_errno = err;
			post(v, POST_RUN_ERROR);
			wait_completion(v);
			continue;
		}
		incomplete = true;
		uint32_t reason = run->exit_reason;
		stat_inc(v, reason < STAT_EXIT_REASONS ? reason : STAT_EXIT_REASONS - 1);
		switch (reason) {
		case KVM_EXIT_IO:
		case KVM_EXIT_MMIO:
			post(v, POST_EXIT);
			wait_completion(v);
			break;
		case KVM_EXIT_INTR:
			break;
		default:
			post(v, POST_EVENT);
			wait_completion(v);
			break;
		}
	}
	post(v, POST_ENDED);
	return NULL;
}

/* ---- handoff, JS thread side ---------------------------------------------- */

bool vcpu_complete(struct tsvmm_vcpu *v, int64_t seq) {
	if (atomic_load(&v->handoff) == HANDOFF_RUNNING) return false;
	/* Only the JS thread completes, so a posted vCPU stays on this post. */
	if (seq >= 0 && (uint32_t)seq != atomic_load(&v->post_seq)) return false;
	/*
	 * ENDED is a notice, not a wait: the thread posts it and leaves. Releasing
	 * it here (a stop racing the thread's exit) would make vm_claim_pending
	 * skip it as stale, and JS would never learn the thread ended.
	 */
	if (seq < 0 && atomic_load_explicit(&v->post_kind, memory_order_relaxed) == POST_ENDED) return false;
	if (atomic_exchange(&v->handoff, HANDOFF_RUNNING) == HANDOFF_SLEEPING) futex_wake(&v->handoff);
	v->vm->last_completed = v;
	return true;
}

static void kick(struct tsvmm_vcpu *v) {
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (v->thread_live) pthread_kill(v->thread, kick_signal);
}

/*
 * Releases the post the thread waits on, if any. A post made after this
 * (an exit that was already on its way) is completed by the JS dispatcher,
 * which completes every post of a stopping vCPU unseen, or by vcpu_join.
 */
void vcpu_request_stop(struct tsvmm_vcpu *v) {
	if (!v->thread_live) return;
	atomic_fetch_or(&v->control, CONTROL_STOP);
	kick(v);
	vcpu_complete(v, -1);
}

/*
 * Joins the thread after vcpu_request_stop. Returns at once when the thread
 * posted ENDED; otherwise keeps completing and kicking until it ends, so the
 * synchronous paths (close, environment teardown) cannot hang on a post
 * nobody will dispatch any more.
 */
void vcpu_join(struct tsvmm_vcpu *v) {
	if (!v->thread_live) return;
	for (;;) {
		struct timespec deadline;
		clock_gettime(CLOCK_REALTIME, &deadline);
		deadline.tv_nsec += 2000000;
		if (deadline.tv_nsec >= 1000000000) {
			deadline.tv_sec++;
			deadline.tv_nsec -= 1000000000;
		}
		int err = pthread_timedjoin_np(v->thread, NULL, &deadline);
		if (err != ETIMEDOUT) break;
		if (atomic_load(&v->control) & CONTROL_STOP) {
			vcpu_complete(v, -1);
			kick(v);
		}
	}
	v->thread_live = false;
}

/* ---- handles ---------------------------------------------------------------- */

void vcpu_close_resources(struct tsvmm_vcpu *v, bool detach_buffer) {
	vcpu_request_stop(v);
	vcpu_join(v);
	if (v->run_buffer != NULL) {
		napi_env env = v->vm->env;
		napi_value ab;
		if (detach_buffer && napi_get_reference_value(env, v->run_buffer, &ab) == napi_ok && ab != NULL)
			napi_detach_arraybuffer(env, ab);
		if (detach_buffer) napi_delete_reference(env, v->run_buffer);
		v->run_buffer = NULL;
	}
	if (v->run != NULL) {
		munmap(v->run, v->run_size);
		v->run = NULL;
	}
	if (v->fd >= 0) {
		close(v->fd);
		v->fd = -1;
	}
}

static void vcpu_forget(struct tsvmm_vcpu *v) {
	struct tsvmm_vm *vm = v->vm;
	if (vm->last_completed == v) vm->last_completed = NULL;
	if (vm->vcpus[v->index] == v) {
		vm->vcpus[v->index] = NULL;
		atomic_fetch_and(&vm->pending[v->index / 64], ~(1ULL << (v->index % 64)));
	}
}

static void vcpu_finalize(napi_env env, void *data, void *hint) {
	(void)env;
	(void)hint;
	struct tsvmm_vcpu *v = data;
	vcpu_close_resources(v, true);
	vcpu_forget(v);
	vm_release(v->vm);
	free(v);
}

static bool unwrap_vcpu(napi_env env, napi_value value, struct tsvmm_vcpu **out) {
	bool ok = false;
	void *data = NULL;
	if (napi_check_object_type_tag(env, value, &VCPU_TAG, &ok) != napi_ok || !ok ||
	    napi_get_value_external(env, value, &data) != napi_ok) {
		throw_type_error(env, "expected a vCPU handle");
		return false;
	}
	*out = data;
	if ((*out)->fd < 0) {
		throw_state_error(env, "ERR_KVM_CLOSED", "vCPU %u is closed", (*out)->id);
		return false;
	}
	return true;
}

/* vcpuCreate(vm, id): VcpuHandle -- api.rst "KVM_CREATE_VCPU", then mmap kvm_run */
static napi_value js_vcpu_create(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	struct tsvmm_vm *vm;
	uint32_t id;
	if (!get_args(env, info, 2, argv) || !unwrap_vm(env, argv[0], &vm) || !arg_u32(env, argv[1], "id", &id))
		return NULL;
	uint32_t index = 0;
	while (index < TSVMM_MAX_VCPUS && vm->vcpus[index] != NULL) index++;
	if (index == TSVMM_MAX_VCPUS)
		return throw_state_error(env, "ERR_KVM_TOO_MANY_VCPUS", "a VM has at most %d vCPUs", TSVMM_MAX_VCPUS);

	int fd = ioctl(vm->fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (fd < 0) return throw_errno(env, "KVM_CREATE_VCPU", "ioctl", errno);
	void *run = mmap(NULL, vm->run_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (run == MAP_FAILED) {
		int err = errno;
		close(fd);
		return throw_errno(env, "mmap kvm_run", "mmap", err);
	}
	struct tsvmm_vcpu *v = calloc(1, sizeof *v);
	if (v == NULL) {
		munmap(run, vm->run_mmap_size);
		close(fd);
		return throw_errno(env, "allocate vCPU state", "calloc", ENOMEM);
	}
	v->vm = vm;
	v->fd = fd;
	v->id = id;
	v->index = index;
	v->run = run;
	v->run_size = vm->run_mmap_size;
	atomic_init(&v->handoff, HANDOFF_RUNNING);
	atomic_init(&v->cpu, -1);

	napi_value handle;
	if (napi_create_external(env, v, vcpu_finalize, NULL, &handle) != napi_ok) {
		munmap(run, v->run_size);
		close(fd);
		free(v);
		return throw_napi_status(env, napi_generic_failure, "napi_create_external");
	}
	atomic_fetch_add(&vm->refs, 1);
	vm->vcpus[index] = v;
	if (index + 1 > vm->index_limit) vm->index_limit = index + 1;
	NAPI_TRY(env, napi_type_tag_object(env, handle, &VCPU_TAG));
	return handle;
}

static napi_value js_vcpu_info(napi_env env, napi_callback_info info) {
	napi_value argv[1], result;
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	NAPI_TRY(env, napi_create_object(env, &result));
	NAPI_TRY(env, napi_set_named_property(env, result, "fd", make_i32(env, v->fd)));
	NAPI_TRY(env, napi_set_named_property(env, result, "index", make_u32(env, v->index)));
	NAPI_TRY(env, napi_set_named_property(env, result, "runSize", make_double(env, (double)v->run_size)));
	return result;
}

/*
 * vcpuRunBuffer(vcpu): ArrayBuffer over the mmap'd kvm_run. Created once:
 * V8 must not see two backing stores over the same memory. Detached on close
 * so JS can never touch the mapping after munmap.
 */
static napi_value js_vcpu_run_buffer(napi_env env, napi_callback_info info) {
	napi_value argv[1], ab;
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	if (v->run_buffer != NULL) {
		NAPI_TRY(env, napi_get_reference_value(env, v->run_buffer, &ab));
		return ab;
	}
	NAPI_TRY(env, napi_create_external_arraybuffer(env, v->run, v->run_size, NULL, NULL, &ab));
	NAPI_TRY(env, napi_create_reference(env, ab, 1, &v->run_buffer));
	return ab;
}

/* vcpuStart(vcpu, spinMinNs, spinMaxNs): starts the vCPU thread (vmWakeStart first). */
static napi_value js_vcpu_start(napi_env env, napi_callback_info info) {
	napi_value argv[3];
	struct tsvmm_vcpu *v;
	uint32_t spin_min_ns, spin_max_ns;
	if (!get_args(env, info, 3, argv) || !unwrap_vcpu(env, argv[0], &v) ||
	    !arg_u32(env, argv[1], "spinMinNs", &spin_min_ns) || !arg_u32(env, argv[2], "spinMaxNs", &spin_max_ns))
		return NULL;
	if (v->thread_live) return throw_state_error(env, "ERR_KVM_VCPU_RUNNING", "vCPU %u is already started", v->id);
	if (v->vm->wake == NULL)
		return throw_state_error(env, "ERR_KVM_NO_WAKE", "vmWakeStart must be called before vcpuStart");
	if (kick_signal_number() < 0) return throw_errno(env, "install vCPU kick signal", "sigaction", kick_errno);

	v->spin_min_ns = v->spin_ns = spin_min_ns;
	v->spin_max_ns = spin_max_ns < spin_min_ns ? spin_min_ns : spin_max_ns;
	atomic_store(&v->control, 0);
	atomic_store(&v->handoff, HANDOFF_RUNNING);
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_RELAXED);

	/* vCPU threads take no process signals except the kick: SIGINT, SIGCHLD
	 * and friends stay with the JS thread and never interrupt KVM_RUN. */
	sigset_t mask;
	sigfillset(&mask);
	sigdelset(&mask, kick_signal);
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setsigmask_np(&attr, &mask);
	int err = pthread_create(&v->thread, &attr, vcpu_thread, v);
	pthread_attr_destroy(&attr);
	if (err != 0) return throw_errno(env, "start vCPU thread", "pthread_create", err);
	v->thread_live = true;
	char name[16];
	snprintf(name, sizeof name, "vcpu%u", v->id);
	pthread_setname_np(v->thread, name);
	return make_undefined(env);
}

/* vcpuRequestPause(vcpu): asks the thread to leave KVM_RUN and post PAUSED. */
static napi_value js_vcpu_request_pause(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	if (!v->thread_live) return make_bool(env, false);
	atomic_fetch_or(&v->control, CONTROL_PAUSE);
	kick(v);
	return make_bool(env, true);
}

/* vcpuResume(vcpu): clears a pause request and completes a PAUSED post. */
static napi_value js_vcpu_resume(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	atomic_fetch_and(&v->control, ~CONTROL_PAUSE);
	/* Only the PAUSED post: a stop may have released it and the thread moved on. */
	uint32_t seq = atomic_load(&v->post_seq);
	bool resumed = atomic_load(&v->handoff) != HANDOFF_RUNNING &&
	               atomic_load_explicit(&v->post_kind, memory_order_relaxed) == POST_PAUSED && vcpu_complete(v, seq);
	return make_bool(env, resumed);
}

/*
 * vcpuComplete(vcpu, seq): completes post `seq` (-1: the post JS claimed
 * last) if the vCPU still waits on it.
 */
static napi_value js_vcpu_complete(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	struct tsvmm_vcpu *v;
	double seq;
	if (!get_args(env, info, 2, argv) || !unwrap_vcpu(env, argv[0], &v) ||
	    napi_get_value_double(env, argv[1], &seq) != napi_ok)
		return throw_type_error(env, "vcpuComplete(vcpu, seq: number)");
	int64_t target = seq < 0 ? (int64_t)v->claimed_seq : (int64_t)seq;
	return make_bool(env, vcpu_complete(v, target));
}

/* vcpuPostSeq(vcpu): sequence number of the post JS claimed last (for async completion). */
static napi_value js_vcpu_post_seq(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	return make_u32(env, v->claimed_seq);
}

/* vcpuRequestStop(vcpu): the thread posts ENDED soon; join it then. */
static napi_value js_vcpu_request_stop(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	vcpu_request_stop(v);
	return make_undefined(env);
}

/* vcpuJoin(vcpu): joins an ended thread (returns at once after ENDED). */
static napi_value js_vcpu_join(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	vcpu_join(v);
	return make_undefined(env);
}

/* vcpuStats(vcpu): number[STAT_COUNT], see enum tsvmm_stat. */
static napi_value js_vcpu_stats(napi_env env, napi_callback_info info) {
	napi_value argv[1], result;
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	NAPI_TRY(env, napi_create_array_with_length(env, STAT_COUNT, &result));
	for (uint32_t i = 0; i < STAT_COUNT; i++) {
		/* Written by the vCPU thread only; an aligned 64-bit load cannot tear. */
		uint64_t value = __atomic_load_n(&v->stats[i], __ATOMIC_RELAXED);
		NAPI_TRY(env, napi_set_element(env, result, i, make_double(env, (double)value)));
	}
	return result;
}

static napi_value js_vcpu_run_errno(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	return make_i32(env, v->run_errno);
}

/* Size KVM copies for KVM_GET_XSAVE2 / KVM_SET_XSAVE (api.rst "KVM_SET_XSAVE"). */
static size_t xsave_size(struct tsvmm_vm *vm) {
	int r = ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return r > (int)sizeof(struct kvm_xsave) ? (size_t)r : sizeof(struct kvm_xsave);
}

/* vcpuGetXsave(vcpu): Uint8Array -- KVM_GET_XSAVE2 when available, else KVM_GET_XSAVE */
static napi_value js_vcpu_get_xsave(napi_env env, napi_callback_info info) {
	napi_value argv[1], ab, result;
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv) || !unwrap_vcpu(env, argv[0], &v)) return NULL;
	bool has_xsave2 = ioctl(v->vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2) > 0;
	size_t size = xsave_size(v->vm);
	void *data;
	NAPI_TRY(env, napi_create_arraybuffer(env, size, &data, &ab));
	unsigned long request = has_xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE;
	if (ioctl(v->fd, request, data) < 0)
		return throw_errno(env, has_xsave2 ? "KVM_GET_XSAVE2" : "KVM_GET_XSAVE", "ioctl", errno);
	NAPI_TRY(env, napi_create_typedarray(env, napi_uint8_array, size, ab, 0, &result));
	return result;
}

/* vcpuSetXsave(vcpu, bytes) -- KVM_SET_XSAVE reads xsave_size() bytes */
static napi_value js_vcpu_set_xsave(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	struct tsvmm_vcpu *v;
	void *data;
	size_t length;
	if (!get_args(env, info, 2, argv) || !unwrap_vcpu(env, argv[0], &v) ||
	    !arg_bytes(env, argv[1], "xsave", &data, &length))
		return NULL;
	size_t size = xsave_size(v->vm);
	if (length < size) return throw_type_error(env, "KVM_SET_XSAVE needs %zu bytes, got %zu", size, length);
	if (ioctl(v->fd, KVM_SET_XSAVE, data) < 0) return throw_errno(env, "KVM_SET_XSAVE", "ioctl", errno);
	return make_undefined(env);
}

/* vcpuClose(vcpu): the thread must have ended (stop + join first). */
static napi_value js_vcpu_close(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	struct tsvmm_vcpu *v;
	if (!get_args(env, info, 1, argv)) return NULL;
	bool ok = false;
	void *data = NULL;
	if (napi_check_object_type_tag(env, argv[0], &VCPU_TAG, &ok) != napi_ok || !ok ||
	    napi_get_value_external(env, argv[0], &data) != napi_ok)
		return throw_type_error(env, "expected a vCPU handle");
	v = data;
	if (v->thread_live)
		return throw_state_error(env, "ERR_KVM_VCPU_RUNNING", "vCPU %u still has a thread; stop it first", v->id);
	vcpu_close_resources(v, true);
	vcpu_forget(v);
	return make_undefined(env);
}

static napi_value js_kick_signal(napi_env env, napi_callback_info info) {
	(void)info;
	return make_i32(env, kick_signal_number());
}

void register_vcpu_functions(napi_env env, napi_value exports) {
	napi_property_descriptor props[] = {
		{"vcpuCreate", NULL, js_vcpu_create, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuInfo", NULL, js_vcpu_info, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuRunBuffer", NULL, js_vcpu_run_buffer, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuStart", NULL, js_vcpu_start, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuRequestPause", NULL, js_vcpu_request_pause, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuResume", NULL, js_vcpu_resume, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuComplete", NULL, js_vcpu_complete, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuPostSeq", NULL, js_vcpu_post_seq, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuRequestStop", NULL, js_vcpu_request_stop, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuJoin", NULL, js_vcpu_join, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuStats", NULL, js_vcpu_stats, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuRunErrno", NULL, js_vcpu_run_errno, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuGetXsave", NULL, js_vcpu_get_xsave, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuSetXsave", NULL, js_vcpu_set_xsave, NULL, NULL, NULL, napi_enumerable, NULL},
		{"vcpuClose", NULL, js_vcpu_close, NULL, NULL, NULL, napi_enumerable, NULL},
		{"kickSignal", NULL, js_kick_signal, NULL, NULL, NULL, napi_enumerable, NULL},
	};
	napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
