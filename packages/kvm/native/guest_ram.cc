/*
 * tsvmm_guest_ram.node: guest RAM as a SharedArrayBuffer over a memfd.
 *
 * This is the one place that needs the V8 API: Node-API cannot create a
 * SharedArrayBuffer over external memory. memfd_create + ftruncate + mmap
 * (MAP_SHARED) gives memory that (a) KVM maps as a memslot through its host
 * virtual address (api.rst "KVM_SET_USER_MEMORY_REGION"), (b) any
 * worker_thread sees when the SharedArrayBuffer is posted to it (the backing
 * store is shared, not copied), and (c) can later be shared with another
 * process or saved through the memfd.
 *
 * Lifetime: the backing store's deleter unmaps the memory and closes the
 * memfd when the last SharedArrayBuffer over it, in any isolate, is gone.
 * Whoever maps it into a VM must keep a SharedArrayBuffer reachable for as
 * long as the memslot exists (the facade's Vm does).
 */
#include <node.h>
#include <v8.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sys/mman.h>
#include <unistd.h>
#include <uv.h>

namespace {

struct Mapping {
	void *addr;
	size_t size;
	int fd;
};

void ReleaseMapping(void *data, size_t length, void *deleter_data) {
	(void)data;
	(void)length;
	Mapping *m = static_cast<Mapping *>(deleter_data);
	munmap(m->addr, m->size);
	close(m->fd);
	delete m;
}

void SetString(v8::Isolate *isolate, v8::Local<v8::Context> context, v8::Local<v8::Object> obj, const char *key,
               const char *value) {
	obj->Set(context, v8::String::NewFromUtf8(isolate, key).ToLocalChecked(),
	         v8::String::NewFromUtf8(isolate, value).ToLocalChecked())
		.Check();
}

/* Same shape as the C addon's errors: `<operation> failed: ENAME (text)`. */
void ThrowErrno(v8::Isolate *isolate, const char *operation, const char *syscall, int err) {
	v8::Local<v8::Context> context = isolate->GetCurrentContext();
	char name_buf[16], text[128], message[512];
	const char *name = uv_err_name(-err);
	if (name == nullptr || std::strncmp(name, "Unknown", 7) == 0) {
		std::snprintf(name_buf, sizeof name_buf, "E%d", err);
		name = name_buf;
	}
	const char *desc = strerror_r(err, text, sizeof text);
	std::snprintf(message, sizeof message, "%s failed: %s (%s)", operation, name, desc);
	v8::Local<v8::Object> error =
		v8::Exception::Error(v8::String::NewFromUtf8(isolate, message).ToLocalChecked()).As<v8::Object>();
	SetString(isolate, context, error, "code", name);
	error->Set(context, v8::String::NewFromUtf8Literal(isolate, "errno"), v8::Integer::New(isolate, -err)).Check();
	SetString(isolate, context, error, "syscall", syscall);
	SetString(isolate, context, error, "operation", operation);
	isolate->ThrowException(error);
}

/* allocate(size: number, name: string): { buffer, fd, hostAddress } */
void Allocate(const v8::FunctionCallbackInfo<v8::Value> &args) {
	v8::Isolate *isolate = args.GetIsolate();
	v8::Local<v8::Context> context = isolate->GetCurrentContext();
	if (args.Length() < 2 || !args[0]->IsNumber() || !args[1]->IsString()) {
		isolate->ThrowException(v8::Exception::TypeError(
			v8::String::NewFromUtf8Literal(isolate, "allocate(size: number, name: string)")));
		return;
	}
	double requested = args[0].As<v8::Number>()->Value();
	long page = sysconf(_SC_PAGESIZE);
	/* 2^46 bytes is far above any guest we run and far below V8's limit. */
	if (!(requested > 0) || requested > 70368744177664.0 || requested != static_cast<double>(static_cast<size_t>(requested)) ||
	    static_cast<size_t>(requested) % static_cast<size_t>(page) != 0) {
		isolate->ThrowException(v8::Exception::RangeError(v8::String::NewFromUtf8Literal(
			isolate, "guest RAM size must be a positive multiple of the page size")));
		return;
	}
	size_t size = static_cast<size_t>(requested);
	v8::String::Utf8Value name(isolate, args[1]);

	int fd = memfd_create(*name != nullptr ? *name : "tsvmm-ram", MFD_CLOEXEC);
	if (fd < 0) return ThrowErrno(isolate, "memfd_create", "memfd_create", errno);
	if (ftruncate(fd, static_cast<off_t>(size)) < 0) {
		int err = errno;
		close(fd);
		return ThrowErrno(isolate, "ftruncate guest RAM memfd", "ftruncate", err);
	}
	void *addr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (addr == MAP_FAILED) {
		int err = errno;
		close(fd);
		return ThrowErrno(isolate, "mmap guest RAM", "mmap", err);
	}
	Mapping *mapping = new Mapping{addr, size, fd};
	std::shared_ptr<v8::BackingStore> store =
		v8::SharedArrayBuffer::NewBackingStore(addr, size, ReleaseMapping, mapping);
	v8::Local<v8::SharedArrayBuffer> buffer = v8::SharedArrayBuffer::New(isolate, store);

	v8::Local<v8::Object> result = v8::Object::New(isolate);
	result->Set(context, v8::String::NewFromUtf8Literal(isolate, "buffer"), buffer).Check();
	result->Set(context, v8::String::NewFromUtf8Literal(isolate, "fd"), v8::Integer::New(isolate, fd)).Check();
	result->Set(context, v8::String::NewFromUtf8Literal(isolate, "hostAddress"),
	            v8::BigInt::NewFromUnsigned(isolate, reinterpret_cast<uint64_t>(addr)))
		.Check();
	args.GetReturnValue().Set(result);
}

/* hostAddressOf(buffer: SharedArrayBuffer): bigint -- where a SAB's memory is */
void HostAddressOf(const v8::FunctionCallbackInfo<v8::Value> &args) {
	v8::Isolate *isolate = args.GetIsolate();
	if (args.Length() < 1 || !args[0]->IsSharedArrayBuffer()) {
		isolate->ThrowException(v8::Exception::TypeError(
			v8::String::NewFromUtf8Literal(isolate, "hostAddressOf(buffer: SharedArrayBuffer)")));
		return;
	}
	std::shared_ptr<v8::BackingStore> store = args[0].As<v8::SharedArrayBuffer>()->GetBackingStore();
	args.GetReturnValue().Set(v8::BigInt::NewFromUnsigned(isolate, reinterpret_cast<uint64_t>(store->Data())));
}

}  // namespace

/* Context-aware: loadable from worker_threads as well as the main thread. */
NODE_MODULE_INIT(/* exports, module, context */) {
	(void)module;
	v8::Isolate *isolate = context->GetIsolate();
	exports->Set(context, v8::String::NewFromUtf8Literal(isolate, "allocate"),
	             v8::FunctionTemplate::New(isolate, Allocate)->GetFunction(context).ToLocalChecked())
		.Check();
	exports->Set(context, v8::String::NewFromUtf8Literal(isolate, "hostAddressOf"),
	             v8::FunctionTemplate::New(isolate, HostAddressOf)->GetFunction(context).ToLocalChecked())
		.Check();
}
