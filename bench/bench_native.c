/*
 * A trivial native class for the RPC figures of `make bench`: the native
 * counterpart of workerd's `add(x)` on a DurableObject (bench/workerd).
 *
 * Built as build/libbench_native.so (bench/CMakeLists.txt) and bound with
 *   rt.bind_native("NADDER", "build/libbench_native.so", "Adder")   (Python)
 *   rt:bind_native("NADDER", "build/libbench_native.so", "Adder")   (Lua)
 *
 * Method: add(x i64) -> i64, the running total of the object (in memory).
 */
#include <stdlib.h>

#include "dobj.h"

static const dobj_native_api *api;

typedef struct adder {
	int64_t total;
} adder;

static void *create(dobj_native_ctx *ctx)
{
	adder *a = calloc(1, sizeof(*a));

	if (!a)
		api->raise(ctx, "out of memory");
	return a;
}

static void destroy(void *instance)
{
	free(instance);
}

static int64_t add(dobj_native_ctx *ctx, int64_t x)
{
	adder *a = api->instance(ctx);

	a->total += x;
	return a->total;
}

static const dobj_native_method methods[] = {
	{ "add", "i64(i64)", DOBJ_NATIVE_FN(add) },
};

static const dobj_native_class_def adder_class = {
	DOBJ_NATIVE_ABI, "Adder", create, destroy, NULL, NULL,
	methods, sizeof(methods) / sizeof(methods[0]),
};

__attribute__((visibility("default")))
int dobj_native_init(const dobj_native_api *a, dobj_native_registry *reg)
{
	if (a->abi != DOBJ_NATIVE_ABI || a->size < sizeof(*a))
		return -1;
	api = a;
	return a->add_class(reg, &adder_class);
}
