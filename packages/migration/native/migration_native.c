/*
 * The one system call the migration thread needs that Node's fs lacks:
 * lseek(2) with SEEK_DATA / SEEK_HOLE (Linux 3.1+; shmem/memfd since 3.8),
 * which lists the ranges of a guest RAM memfd that were ever allocated —
 * every other page reads as zero and need not be read or sent.
 *
 * A swapped-out page counts as data (mm/filemap.c mapping_seek_hole_data
 * treats shadow/swap entries as data), so nothing written is ever missed.
 * Node-API only, so it loads in worker threads.
 *
 *   dataExtents(fd, size) -> Float64Array [start0, end0, start1, end1, ...] (bytes)
 */
#include <errno.h>
#include <stdio.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static napi_value throw_errno(napi_env env, const char *what, int err) {
	char msg[160];
	snprintf(msg, sizeof msg, "%s failed: %s", what, strerror(err));
	napi_throw_error(env, NULL, msg);
	return NULL;
}

static napi_value data_extents(napi_env env, napi_callback_info info) {
	size_t argc = 2;
	napi_value argv[2];
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
		napi_throw_type_error(env, NULL, "dataExtents(fd, size)");
		return NULL;
	}
	int32_t fd;
	double size_d;
	if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_double(env, argv[1], &size_d) != napi_ok || size_d < 0) {
		napi_throw_type_error(env, NULL, "dataExtents: fd must be an integer and size a non-negative number");
		return NULL;
	}
	off_t size = (off_t)size_d;
	size_t cap = 64, n = 0;
	double *pairs = malloc(cap * 2 * sizeof(double));
	if (pairs == NULL) return throw_errno(env, "malloc", ENOMEM);
	off_t off = 0;
	while (off < size) {
		off_t d = lseek(fd, off, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO) break; /* no data at or after off */
			int err = errno;
			free(pairs);
			return throw_errno(env, "lseek(SEEK_DATA)", err);
		}
		if (d >= size) break;
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0) {
			int err = errno;
			free(pairs);
			return throw_errno(env, "lseek(SEEK_HOLE)", err);
		}
		if (h > size) h = size;
		if (n == cap) {
			cap *= 2;
			double *grown = realloc(pairs, cap * 2 * sizeof(double));
			if (grown == NULL) {
				free(pairs);
				return throw_errno(env, "realloc", ENOMEM);
			}
			pairs = grown;
		}
		pairs[2 * n] = (double)d;
		pairs[2 * n + 1] = (double)h;
		n++;
		off = h;
	}
	napi_value ab, out;
	void *data;
	if (napi_create_arraybuffer(env, n * 2 * sizeof(double), &data, &ab) != napi_ok) {
		free(pairs);
		return NULL;
	}
	if (n > 0) memcpy(data, pairs, n * 2 * sizeof(double));
	free(pairs);
	if (napi_create_typedarray(env, napi_float64_array, n * 2, ab, 0, &out) != napi_ok) return NULL;
	return out;
}

NAPI_MODULE_INIT() {
	napi_value fn;
	if (napi_create_function(env, "dataExtents", NAPI_AUTO_LENGTH, data_extents, NULL, &fn) != napi_ok) return NULL;
	if (napi_set_named_property(env, exports, "dataExtents", fn) != napi_ok) return NULL;
	return exports;
}
