/*
 * JS errors for failed system calls, and argument conversion helpers.
 *
 * Error shape follows Node's system errors (code, errno, syscall) plus
 * `operation`, the KVM ioctl or call that failed, so a message reads
 * `KVM_CREATE_VM failed: EACCES (Permission denied)`.
 */
#include "binding.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

static const char *errno_name(int err, char *buf, size_t size) {
	/* libuv error codes are negated errno values on Linux. */
	const char *name = uv_err_name(-err);
	if (name != NULL && strncmp(name, "Unknown", 7) != 0) return name;
	snprintf(buf, size, "E%d", err);
	return buf;
}

static bool set_string(napi_env env, napi_value obj, const char *key, const char *value) {
	napi_value v;
	return napi_create_string_utf8(env, value, NAPI_AUTO_LENGTH, &v) == napi_ok &&
	       napi_set_named_property(env, obj, key, v) == napi_ok;
}

/* describeErrno(errno: number): { code, text } -- for errnos reported asynchronously */
napi_value js_describe_errno(napi_env env, napi_callback_info info) {
	napi_value argv[1], result;
	int32_t err;
	if (!get_args(env, info, 1, argv) || !arg_i32(env, argv[0], "errno", &err)) return NULL;
	char name_buf[16], text[128];
	const char *name = errno_name(err, name_buf, sizeof name_buf);
	const char *desc = strerror_r(err, text, sizeof text);
	NAPI_TRY(env, napi_create_object(env, &result));
	if (!set_string(env, result, "code", name) || !set_string(env, result, "text", desc)) return NULL;
	return result;
}

napi_value throw_errno(napi_env env, const char *operation, const char *syscall, int err) {
	char name_buf[16], text[128], message[512];
	const char *name = errno_name(err, name_buf, sizeof name_buf);
	/* GNU strerror_r returns the string, possibly not in `text`. */
	const char *desc = strerror_r(err, text, sizeof text);
	snprintf(message, sizeof message, "%s failed: %s (%s)", operation, name, desc);

	napi_value msg, code, error, errno_value;
	if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
	    napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code) != napi_ok ||
	    napi_create_error(env, code, msg, &error) != napi_ok ||
	    napi_create_int32(env, -err, &errno_value) != napi_ok ||
	    napi_set_named_property(env, error, "errno", errno_value) != napi_ok ||
	    !set_string(env, error, "syscall", syscall) || !set_string(env, error, "operation", operation)) {
		napi_throw_error(env, NULL, message);
		return NULL;
	}
	napi_throw(env, error);
	return NULL;
}

napi_value throw_type_error(napi_env env, const char *fmt, ...) {
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", message);
	return NULL;
}

napi_value throw_state_error(napi_env env, const char *code, const char *fmt, ...) {
	char message[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	napi_throw_error(env, code, message);
	return NULL;
}

napi_value throw_napi_status(napi_env env, napi_status status, const char *what) {
	bool pending = false;
	if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return NULL;
	char message[256];
	snprintf(message, sizeof message, "Node-API call failed with status %d: %s", (int)status, what);
	napi_throw_error(env, "ERR_NAPI", message);
	return NULL;
}

bool get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
	size_t argc = want;
	if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
		throw_napi_status(env, napi_generic_failure, "napi_get_cb_info");
		return false;
	}
	return true;
}

static bool arg_number(napi_env env, napi_value value, const char *what, double *out) {
	napi_valuetype type;
	if (napi_typeof(env, value, &type) != napi_ok || type != napi_number ||
	    napi_get_value_double(env, value, out) != napi_ok) {
		throw_type_error(env, "%s must be a number", what);
		return false;
	}
	return true;
}

bool arg_u32(napi_env env, napi_value value, const char *what, uint32_t *out) {
	double d;
	if (!arg_number(env, value, what, &d)) return false;
	if (!(d >= 0 && d <= 4294967295.0) || d != (double)(uint32_t)d) {
		throw_type_error(env, "%s must be an integer in [0, 2^32), got %g", what, d);
		return false;
	}
	*out = (uint32_t)d;
	return true;
}

bool arg_i32(napi_env env, napi_value value, const char *what, int32_t *out) {
	double d;
	if (!arg_number(env, value, what, &d)) return false;
	if (!(d >= -2147483648.0 && d <= 2147483647.0) || d != (double)(int32_t)d) {
		throw_type_error(env, "%s must be a 32-bit integer, got %g", what, d);
		return false;
	}
	*out = (int32_t)d;
	return true;
}

bool arg_u64(napi_env env, napi_value value, const char *what, uint64_t *out) {
	napi_valuetype type;
	if (napi_typeof(env, value, &type) != napi_ok) return false;
	if (type == napi_bigint) {
		bool lossless = false;
		if (napi_get_value_bigint_uint64(env, value, out, &lossless) != napi_ok || !lossless) {
			throw_type_error(env, "%s must be a bigint in [0, 2^64)", what);
			return false;
		}
		return true;
	}
	double d;
	if (type != napi_number || napi_get_value_double(env, value, &d) != napi_ok || !(d >= 0) ||
	    d > 9007199254740991.0 || d != (double)(uint64_t)d) {
		throw_type_error(env, "%s must be a bigint or a non-negative safe integer", what);
		return false;
	}
	*out = (uint64_t)d;
	return true;
}

bool arg_bytes(napi_env env, napi_value value, const char *what, void **data, size_t *length) {
	bool is;
	if (napi_is_typedarray(env, value, &is) == napi_ok && is) {
		napi_typedarray_type type;
		size_t elements, offset;
		napi_value ab;
		if (napi_get_typedarray_info(env, value, &type, &elements, data, &ab, &offset) != napi_ok) goto bad;
		size_t elem = 1;
		switch (type) {
		case napi_int16_array: case napi_uint16_array: elem = 2; break;
		case napi_int32_array: case napi_uint32_array: case napi_float32_array: elem = 4; break;
		case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: elem = 8; break;
		default: elem = 1; break;
		}
		*length = elements * elem;
		return true;
	}
	if (napi_is_dataview(env, value, &is) == napi_ok && is) {
		napi_value ab;
		size_t offset;
		if (napi_get_dataview_info(env, value, length, data, &ab, &offset) != napi_ok) goto bad;
		return true;
	}
bad:
	throw_type_error(env, "%s must be a TypedArray or DataView", what);
	return false;
}

bool arg_string(napi_env env, napi_value value, const char *what, char *buf, size_t size) {
	size_t len;
	if (napi_get_value_string_utf8(env, value, buf, size, &len) != napi_ok) {
		throw_type_error(env, "%s must be a string", what);
		return false;
	}
	if (len + 1 >= size) {
		throw_type_error(env, "%s is too long (max %zu bytes)", what, size - 2);
		return false;
	}
	return true;
}

napi_value make_i32(napi_env env, int32_t v) {
	napi_value r = NULL;
	napi_create_int32(env, v, &r);
	return r;
}
napi_value make_u32(napi_env env, uint32_t v) {
	napi_value r = NULL;
	napi_create_uint32(env, v, &r);
	return r;
}
napi_value make_double(napi_env env, double v) {
	napi_value r = NULL;
	napi_create_double(env, v, &r);
	return r;
}
napi_value make_bool(napi_env env, bool v) {
	napi_value r = NULL;
	napi_get_boolean(env, v, &r);
	return r;
}
napi_value make_bigint_u64(napi_env env, uint64_t v) {
	napi_value r = NULL;
	napi_create_bigint_uint64(env, v, &r);
	return r;
}
napi_value make_undefined(napi_env env) {
	napi_value r = NULL;
	napi_get_undefined(env, &r);
	return r;
}
napi_value make_null(napi_env env) {
	napi_value r = NULL;
	napi_get_null(env, &r);
	return r;
}
