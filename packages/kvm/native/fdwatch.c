/*
 * Readability watches on file descriptors in the calling thread's event loop
 * (libuv uv_poll_t). An iothread (a worker thread) watches the ioeventfds of
 * the virtqueues it serves and processes a queue when the guest kicks it,
 * without blocking its event loop, so asynchronous disk I/O completes there
 * too. Node has no public API for watching an arbitrary fd, hence this.
 *
 * Each watch belongs to the environment (thread) that created it; an
 * environment cleanup hook stops watches that are still active when a
 * worker ends.
 */
#include "binding.h"

#include <errno.h>
#include <stdlib.h>
#include <uv.h>

struct fd_watch {
	uv_poll_t poll;
	napi_env env;
	napi_ref callback;
	napi_async_context async;
	bool active;
	/* the uv handle and the JS external both hold the struct; the last one frees it */
	int owners;
};

static void watch_release(struct fd_watch *w) {
	if (--w->owners == 0) free(w);
}

static void watch_closed(uv_handle_t *handle) {
	watch_release(handle->data);
}

static void watch_finalize(napi_env env, void *data, void *hint) {
	(void)env;
	(void)hint;
	watch_release(data);
}

static void watch_stop(struct fd_watch *w) {
	if (!w->active) return;
	w->active = false;
	uv_poll_stop(&w->poll);
	napi_delete_reference(w->env, w->callback);
	napi_async_destroy(w->env, w->async);
	uv_close((uv_handle_t *)&w->poll, watch_closed);
}

static void watch_cleanup_hook(void *arg) {
	struct fd_watch *w = arg;
	watch_stop(w);
}

static void on_readable(uv_poll_t *handle, int status, int events) {
	(void)events;
	struct fd_watch *w = handle->data;
	if (!w->active) return;
	napi_env env = w->env;
	napi_handle_scope scope;
	if (napi_open_handle_scope(env, &scope) != napi_ok) return;
	napi_value cb, recv, arg;
	if (napi_get_reference_value(env, w->callback, &cb) == napi_ok && cb != NULL && napi_get_global(env, &recv) == napi_ok) {
		/* status < 0 is a libuv error (e.g. the fd was closed under us): passed as -errno */
		arg = make_i32(env, status < 0 ? status : 0);
		napi_value result;
		napi_status s = napi_make_callback(env, w->async, recv, cb, 1, &arg, &result);
		if (s == napi_pending_exception) {
			napi_value err;
			if (napi_get_and_clear_last_exception(env, &err) == napi_ok) napi_fatal_exception(env, err);
		}
	}
	napi_close_handle_scope(env, scope);
}

/* fdWatchReadable(fd, callback(status)): external -- calls back whenever fd is readable */
static napi_value js_fd_watch_readable(napi_env env, napi_callback_info info) {
	napi_value argv[2];
	int32_t fd;
	if (!get_args(env, info, 2, argv) || !arg_i32(env, argv[0], "fd", &fd)) return NULL;
	napi_valuetype type;
	NAPI_TRY(env, napi_typeof(env, argv[1], &type));
	if (type != napi_function) return throw_type_error(env, "callback must be a function");
	if (fd < 0) return throw_type_error(env, "fd must be a non-negative integer");
	struct uv_loop_s *loop;
	NAPI_TRY(env, napi_get_uv_event_loop(env, &loop));
	struct fd_watch *w = calloc(1, sizeof *w);
	if (w == NULL) return throw_errno(env, "watch fd", "calloc", ENOMEM);
	w->env = env;
	w->poll.data = w;
	w->owners = 1;
	int r = uv_poll_init(loop, &w->poll, fd);
	if (r < 0) {
		free(w);
		return throw_errno(env, "watch fd", "uv_poll_init", -r);
	}
	napi_value name;
	if (napi_create_reference(env, argv[1], 1, &w->callback) != napi_ok ||
	    napi_create_string_utf8(env, "tsvmm:fdwatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
	    napi_async_init(env, NULL, name, &w->async) != napi_ok) {
		uv_close((uv_handle_t *)&w->poll, watch_closed);
		return throw_napi_status(env, napi_generic_failure, "fd watch setup");
	}
	r = uv_poll_start(&w->poll, UV_READABLE, on_readable);
	if (r < 0) {
		napi_delete_reference(env, w->callback);
		napi_async_destroy(env, w->async);
		uv_close((uv_handle_t *)&w->poll, watch_closed);
		return throw_errno(env, "watch fd", "uv_poll_start", -r);
	}
	w->active = true;
	napi_add_env_cleanup_hook(env, watch_cleanup_hook, w);
	napi_value handle;
	w->owners++;
	if (napi_create_external(env, w, watch_finalize, NULL, &handle) != napi_ok) {
		w->owners--;
		napi_remove_env_cleanup_hook(env, watch_cleanup_hook, w);
		watch_stop(w);
		return throw_napi_status(env, napi_generic_failure, "napi_create_external");
	}
	return handle;
}

/* fdUnwatch(handle): stops the watch; idempotent */
static napi_value js_fd_unwatch(napi_env env, napi_callback_info info) {
	napi_value argv[1];
	if (!get_args(env, info, 1, argv)) return NULL;
	void *data;
	if (napi_get_value_external(env, argv[0], &data) != napi_ok || data == NULL)
		return throw_type_error(env, "not an fd watch handle");
	struct fd_watch *w = data;
	if (w->env != env) return throw_type_error(env, "the fd watch belongs to another thread");
	if (w->active) {
		napi_remove_env_cleanup_hook(env, watch_cleanup_hook, w);
		watch_stop(w);
	}
	return make_undefined(env);
}

void register_fdwatch_functions(napi_env env, napi_value exports) {
	napi_property_descriptor props[] = {
		{"fdWatchReadable", NULL, js_fd_watch_readable, NULL, NULL, NULL, napi_enumerable, NULL},
		{"fdUnwatch", NULL, js_fd_unwatch, NULL, NULL, NULL, napi_enumerable, NULL},
	};
	napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
}
