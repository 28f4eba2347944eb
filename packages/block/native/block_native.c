/*
 * The few syscalls the block layer needs that Node's fs lacks:
 *   fallocate(2) with FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (raw discard,
 *   qcow2 freeing clusters), lseek(2) with SEEK_DATA / SEEK_HOLE (sparse
 *   block status), and preadv2(2) with RWF_NOWAIT (page-cache hits without a
 *   thread-pool round trip). Every call checks its return value and throws an Error
 *   naming the operation and errno (error.code is the errno name).
 *
 * fallocate can take milliseconds on a large range, so it runs on the libuv
 * thread pool and returns a Promise; lseek is a metadata lookup and stays
 * synchronous.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef RWF_NOWAIT
#define RWF_NOWAIT 0x00000008
#endif

static const char *errno_name(int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENXIO: return "ENXIO";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case ENOSPC: return "ENOSPC";
    case EIO: return "EIO";
    case EFBIG: return "EFBIG";
    case EPERM: return "EPERM";
    case EINTR: return "EINTR";
    case ENODEV: return "ENODEV";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case ENOSYS: return "ENOSYS";
    case EAGAIN: return "EAGAIN";
    default: return "EUNKNOWN";
  }
}

static napi_value make_error(napi_env env, const char *op, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s failed: %s (errno %d)", op, strerror(err), err);
  napi_value code, message, error, errnum;
  napi_create_string_utf8(env, errno_name(err), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_create_int32(env, err, &errnum);
  napi_set_named_property(env, error, "errno", errnum);
  return error;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, int64_t *out) {
  napi_value argv[4];
  size_t argc = 4;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "wrong number of arguments");
    return -1;
  }
  for (size_t i = 0; i < want; i++) {
    if (napi_get_value_int64(env, argv[i], &out[i]) != napi_ok) {
      napi_throw_type_error(env, NULL, "arguments must be numbers");
      return -1;
    }
  }
  return 0;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int fd;
  int mode;
  off_t offset;
  off_t length;
  int err;
} fallocate_req;

static void fallocate_execute(napi_env env, void *data) {
  (void)env;
  fallocate_req *req = data;
  int rc;
  do {
    rc = fallocate(req->fd, req->mode, req->offset, req->length);
  } while (rc < 0 && errno == EINTR);
  req->err = rc < 0 ? errno : 0;
}

static void fallocate_complete(napi_env env, napi_status status, void *data) {
  fallocate_req *req = data;
  if (status != napi_ok) req->err = ECANCELED;
  if (req->err == 0) {
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_resolve_deferred(env, req->deferred, undef);
  } else {
    napi_reject_deferred(env, req->deferred, make_error(env, "fallocate", req->err));
  }
  napi_delete_async_work(env, req->work);
  free(req);
}

/* fallocate(fd, mode, offset, length) -> Promise<void> */
static napi_value js_fallocate(napi_env env, napi_callback_info info) {
  int64_t a[4];
  if (get_args(env, info, 4, a) < 0) return NULL;
  if (a[2] < 0 || a[3] <= 0) {
    napi_throw_range_error(env, NULL, "fallocate: offset must be >= 0 and length > 0");
    return NULL;
  }
  fallocate_req *req = calloc(1, sizeof *req);
  if (!req) {
    napi_throw_error(env, "ENOMEM", "fallocate: out of memory");
    return NULL;
  }
  req->fd = (int)a[0];
  req->mode = (int)a[1];
  req->offset = (off_t)a[2];
  req->length = (off_t)a[3];
  napi_value promise, name;
  napi_create_promise(env, &req->deferred, &promise);
  napi_create_string_utf8(env, "tsvmm_fallocate", NAPI_AUTO_LENGTH, &name);
  napi_create_async_work(env, NULL, name, fallocate_execute, fallocate_complete, req, &req->work);
  napi_queue_async_work(env, req->work);
  return promise;
}

/* lseek with SEEK_DATA/SEEK_HOLE; returns -1 when ENXIO (no data/hole at or after offset) */
static napi_value do_seek(napi_env env, napi_callback_info info, int whence, const char *op) {
  int64_t a[2];
  if (get_args(env, info, 2, a) < 0) return NULL;
  off_t r = lseek((int)a[0], (off_t)a[1], whence);
  napi_value out;
  if (r < 0) {
    if (errno == ENXIO) {
      napi_create_int64(env, -1, &out);
      return out;
    }
    napi_throw(env, make_error(env, op, errno));
    return NULL;
  }
  napi_create_int64(env, (int64_t)r, &out);
  return out;
}

static napi_value js_seek_data(napi_env env, napi_callback_info info) {
  return do_seek(env, info, SEEK_DATA, "lseek(SEEK_DATA)");
}

static napi_value js_seek_hole(napi_env env, napi_callback_info info) {
  return do_seek(env, info, SEEK_HOLE, "lseek(SEEK_HOLE)");
}

/*
 * preadNoWait(fd, uint8array, offset) -> bytes read, -1 if the data is not in
 * the page cache (EAGAIN: the caller goes to the thread pool), -2 if the
 * kernel or filesystem does not support RWF_NOWAIT. A page-cache hit costs a
 * memcpy instead of a thread-pool round trip, and the calling thread never
 * waits for the disk, so the main thread may use it.
 */
static napi_value js_pread_nowait(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3) {
    napi_throw_type_error(env, NULL, "preadNoWait(fd, buffer, offset)");
    return NULL;
  }
  int64_t fd, offset;
  napi_typedarray_type type;
  size_t length;
  void *data;
  napi_value ab;
  size_t byte_offset;
  if (napi_get_value_int64(env, argv[0], &fd) != napi_ok ||
      napi_get_typedarray_info(env, argv[1], &type, &length, &data, &ab, &byte_offset) != napi_ok ||
      type != napi_uint8_array || napi_get_value_int64(env, argv[2], &offset) != napi_ok || offset < 0) {
    napi_throw_type_error(env, NULL, "preadNoWait(fd: number, buffer: Uint8Array, offset: number >= 0)");
    return NULL;
  }
  struct iovec iov = {.iov_base = data, .iov_len = length};
  ssize_t r;
  do {
    r = preadv2((int)fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
  } while (r < 0 && errno == EINTR);
  napi_value out;
  if (r < 0) {
    if (errno == EAGAIN) {
      napi_create_int64(env, -1, &out);
      return out;
    }
    if (errno == EOPNOTSUPP || errno == ENOSYS || errno == EINVAL) {
      napi_create_int64(env, -2, &out);
      return out;
    }
    napi_throw(env, make_error(env, "preadv2(RWF_NOWAIT)", errno));
    return NULL;
  }
  napi_create_int64(env, (int64_t)r, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    {"fallocate", NULL, js_fallocate, NULL, NULL, NULL, napi_default, NULL},
    {"seekData", NULL, js_seek_data, NULL, NULL, NULL, napi_default, NULL},
    {"seekHole", NULL, js_seek_hole, NULL, NULL, NULL, napi_default, NULL},
    {"preadNoWait", NULL, js_pread_nowait, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  napi_value v;
  napi_create_int32(env, FALLOC_FL_KEEP_SIZE, &v);
  napi_set_named_property(env, exports, "FALLOC_FL_KEEP_SIZE", v);
  napi_create_int32(env, FALLOC_FL_PUNCH_HOLE, &v);
  napi_set_named_property(env, exports, "FALLOC_FL_PUNCH_HOLE", v);
  napi_create_int32(env, FALLOC_FL_ZERO_RANGE, &v);
  napi_set_named_property(env, exports, "FALLOC_FL_ZERO_RANGE", v);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
