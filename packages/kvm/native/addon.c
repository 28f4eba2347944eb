/*
 * tsvmm_kvm.node: the Node-API entry point. Context-aware (NAPI_MODULE_INIT),
 * so worker threads may load it too; every handle belongs to the
 * environment (thread) that created it.
 */
#include "binding.h"

NAPI_MODULE_INIT() {
	register_ioctl_functions(env, exports);
	register_vm_functions(env, exports);
	register_vcpu_functions(env, exports);
	register_fdwatch_functions(env, exports);

	napi_value constants, layout;
	if (napi_create_object(env, &constants) != napi_ok || !add_constants(env, constants) ||
	    napi_set_named_property(env, exports, "constants", constants) != napi_ok)
		return NULL;
	if (napi_create_object(env, &layout) != napi_ok || !add_layout(env, layout) ||
	    napi_set_named_property(env, exports, "layout", layout) != napi_ok)
		return NULL;
	napi_value stat_count = make_u32(env, STAT_COUNT);
	napi_set_named_property(env, exports, "statCount", stat_count);
	return exports;
}
