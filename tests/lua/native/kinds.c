/*
 * A native class with a method of every signature kind, for the Lua suite
 * (tests/lua/native_spec.lua).  Built five times (tests/lua/native/CMakeLists.txt):
 *
 *   libdobjtest_kinds.so          the class "Kinds" (and "Empty", no fetch)
 *   libdobjtest_kinds_badtype.so  registers a method with an unknown type
 *   libdobjtest_kinds_nullfn.so   registers a method whose function is NULL
 *   libdobjtest_kinds_noinit.so   exports no dobj_native_init
 *   libdobjtest_kinds_failinit.so its dobj_native_init fails without a reason
 *
 * Like every native library it calls the core only through the api table.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dobj.h"

static const dobj_native_api *api;
static int live; /* instances alive in this process (checked by destroy) */

typedef struct kinds {
	int64_t touched;
	char *remembered;
} kinds;

static void *create(dobj_native_ctx *ctx)
{
	kinds *k = calloc(1, sizeof(*k));

	if (!k)
		api->raise(ctx, "out of memory");
	else
		live++;
	return k;
}

static void destroy(void *p)
{
	kinds *k = p;

	if (!k)
		return;
	live--;
	free(k->remembered);
	free(k);
}

/* One echo per type: what arrives in C goes back unchanged. */
static int echo_bool(dobj_native_ctx *c, int x) { (void)c; return x; }
static int8_t echo_i8(dobj_native_ctx *c, int8_t x) { (void)c; return x; }
static int16_t echo_i16(dobj_native_ctx *c, int16_t x) { (void)c; return x; }
static int32_t echo_i32(dobj_native_ctx *c, int32_t x) { (void)c; return x; }
static int64_t echo_i64(dobj_native_ctx *c, int64_t x) { (void)c; return x; }
static uint8_t echo_u8(dobj_native_ctx *c, uint8_t x) { (void)c; return x; }
static uint16_t echo_u16(dobj_native_ctx *c, uint16_t x) { (void)c; return x; }
static uint32_t echo_u32(dobj_native_ctx *c, uint32_t x) { (void)c; return x; }
static uint64_t echo_u64(dobj_native_ctx *c, uint64_t x) { (void)c; return x; }
static double echo_f64(dobj_native_ctx *c, double x) { (void)c; return x; }
static const char *echo_str(dobj_native_ctx *c, const char *s) { (void)c; return s; }
static dobj_bytes echo_bytes(dobj_native_ctx *c, const dobj_bytes *b) { (void)c; return *b; }

/* Arithmetic that shows the C types are right (wrap-around, sign). */
static uint8_t inc_u8(dobj_native_ctx *c, uint8_t x) { (void)c; return (uint8_t)(x + 1); }
static int64_t add_i64(dobj_native_ctx *c, int64_t a, int64_t b) { (void)c; return a + b; }

/* Mixed arguments through one call interface. */
static const char *mix(dobj_native_ctx *c, int b, int8_t i8, uint16_t u16, int32_t i32,
	uint32_t u32, double d, const char *s)
{
	static char buf[200];

	(void)c;
	snprintf(buf, sizeof(buf), "%s %d %u %d %u %g %s", b ? "true" : "false", i8,
		(unsigned)u16, i32, (unsigned)u32, d, s);
	return buf;
}

static int64_t sixteen(dobj_native_ctx *c, int32_t a1, int32_t a2, int32_t a3, int32_t a4,
	int32_t a5, int32_t a6, int32_t a7, int32_t a8, int32_t a9, int32_t a10, int32_t a11,
	int32_t a12, int32_t a13, int32_t a14, int32_t a15, int32_t a16)
{
	(void)c;
	return (int64_t)a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9 + a10 + a11 + a12 + a13 +
		a14 + a15 + a16;
}

/* value: describe what arrived, and build a nested value. */
static dobj_val *describe(dobj_native_ctx *c, const dobj_val *v)
{
	static const char *const names[] = { "undefined", "null", "boolean", "number", "bigint",
		"string", "bytes", "array", "object", "Map", "Set", "Date", "stub", "id" };
	dobj_val *o = api->val_object();
	dobj_val_type t = api->val_type(v);

	(void)c;
	api->val_put(o, "type", 4, api->val_string(names[t], strlen(names[t])));
	api->val_put(o, "len", 3, api->val_number((double)api->val_len(v)));
	return o;
}

static dobj_val *build(dobj_native_ctx *c)
{
	dobj_val *o = api->val_object(), *list = api->val_array();

	(void)c;
	api->val_push(list, api->val_number(1));
	api->val_push(list, api->val_string("two", 3));
	api->val_push(list, api->val_bool(1));
	api->val_push(list, api->val_null());
	api->val_put(o, "list", 4, list);
	api->val_put(o, "bytes", 5, api->val_bytes("\0\1\2", 3));
	api->val_put(o, "half", 4, api->val_number(0.5));
	return o;
}

/* void and instance state. */
static void touch(dobj_native_ctx *c)
{
	kinds *k = api->instance(c);
	k->touched++;
}

static int64_t touched(dobj_native_ctx *c)
{
	kinds *k = api->instance(c);
	return k->touched;
}

static void remember(dobj_native_ctx *c, const char *s)
{
	kinds *k = api->instance(c);
	char *copy = strdup(s);

	if (!copy) {
		api->raise(c, "out of memory");
		return;
	}
	free(k->remembered);
	k->remembered = copy;
}

static const char *recall(dobj_native_ctx *c)
{
	kinds *k = api->instance(c);
	return k->remembered; /* NULL: null */
}

/* Failing. */
static int32_t fail(dobj_native_ctx *c, const char *why)
{
	api->raise(c, "Kinds.fail: %s", why);
	return 0;
}

/* The context: ID, name, storage. */
static const char *who(dobj_native_ctx *c)
{
	return api->id(c);
}

static const char *whose(dobj_native_ctx *c)
{
	size_t len;
	return api->name(c, &len);
}

static void store(dobj_native_ctx *c, const char *key, const dobj_val *v)
{
	api->put(c, key, strlen(key), v);
}

static dobj_val *load(dobj_native_ctx *c, const char *key)
{
	dobj_val *v = NULL;

	if (api->get(c, key, strlen(key), &v) <= 0)
		return NULL; /* absent: undefined */
	return v;
}

static int64_t live_instances(dobj_native_ctx *c)
{
	(void)c;
	return live;
}

static int fetch(dobj_native_ctx *c, const dobj_msg *req, dobj_msg **res)
{
	char body[512];
	const char *h = api->header(req, "x-kinds");
	int n = snprintf(body, sizeof(body), "%s %s %.*s x-kinds=%s", req->method, req->url,
		(int)req->body_len, req->body ? (const char *)req->body : "", h ? h : "-");

	*res = api->response(201, body, (size_t)n);
	if (!*res)
		return api->raise(c, "out of memory");
	api->set_header(*res, "x-native", "yes");
	return 0;
}

static const dobj_native_method methods[] = {
	{ "echo_bool", "bool(bool)", DOBJ_NATIVE_FN(echo_bool) },
	{ "echo_i8", "i8(i8)", DOBJ_NATIVE_FN(echo_i8) },
	{ "echo_i16", "i16(i16)", DOBJ_NATIVE_FN(echo_i16) },
	{ "echo_i32", "i32(i32)", DOBJ_NATIVE_FN(echo_i32) },
	{ "echo_i64", "i64(i64)", DOBJ_NATIVE_FN(echo_i64) },
	{ "echo_u8", "u8(u8)", DOBJ_NATIVE_FN(echo_u8) },
	{ "echo_u16", "u16(u16)", DOBJ_NATIVE_FN(echo_u16) },
	{ "echo_u32", "u32(u32)", DOBJ_NATIVE_FN(echo_u32) },
	{ "echo_u64", "u64(u64)", DOBJ_NATIVE_FN(echo_u64) },
	{ "echo_f64", "f64(f64)", DOBJ_NATIVE_FN(echo_f64) },
	{ "echo_double", "double(double)", DOBJ_NATIVE_FN(echo_f64) },
	{ "echo_str", "str(str)", DOBJ_NATIVE_FN(echo_str) },
	{ "echo_bytes", "bytes(bytes)", DOBJ_NATIVE_FN(echo_bytes) },
	{ "inc_u8", "u8(u8)", DOBJ_NATIVE_FN(inc_u8) },
	{ "add_i64", "i64(i64,i64)", DOBJ_NATIVE_FN(add_i64) },
	{ "mix", "str(bool,i8,u16,i32,u32,f64,str)", DOBJ_NATIVE_FN(mix) },
	{ "sixteen", "i64(i32,i32,i32,i32,i32,i32,i32,i32,i32,i32,i32,i32,i32,i32,i32,i32)",
		DOBJ_NATIVE_FN(sixteen) },
	{ "describe", "value(value)", DOBJ_NATIVE_FN(describe) },
	{ "build", "value()", DOBJ_NATIVE_FN(build) },
	{ "touch", "void()", DOBJ_NATIVE_FN(touch) },
	{ "touched", "i64()", DOBJ_NATIVE_FN(touched) },
	{ "remember", "void(str)", DOBJ_NATIVE_FN(remember) },
	{ "recall", "str()", DOBJ_NATIVE_FN(recall) },
	{ "fail", "i32(str)", DOBJ_NATIVE_FN(fail) },
	{ "who", "str()", DOBJ_NATIVE_FN(who) },
	{ "whose", "str()", DOBJ_NATIVE_FN(whose) },
	{ "store", "void(str,value)", DOBJ_NATIVE_FN(store) },
	{ "load", "value(str)", DOBJ_NATIVE_FN(load) },
	{ "live_instances", "i64()", DOBJ_NATIVE_FN(live_instances) },
#if defined(KINDS_BAD_TYPE)
	{ "wide", "i128(i64)", DOBJ_NATIVE_FN(echo_i64) },
#elif defined(KINDS_NULL_FN)
	{ "nothing", "void()", NULL },
#endif
};

static const dobj_native_class_def kinds_class = {
	DOBJ_NATIVE_ABI, "Kinds", create, destroy, fetch, NULL,
	methods, sizeof(methods) / sizeof(methods[0]),
};

static const dobj_native_method empty_methods[] = {
	{ "ping", "str()", DOBJ_NATIVE_FN(who) },
};

/* No fetch handler, no instance. */
static const dobj_native_class_def empty_class = {
	DOBJ_NATIVE_ABI, "Empty", NULL, NULL, NULL, NULL, empty_methods, 1,
};

#if defined(KINDS_NO_INIT)
#define INIT_NAME kinds_init_under_another_name
#else
#define INIT_NAME dobj_native_init
#endif

__attribute__((visibility("default")))
int INIT_NAME(const dobj_native_api *a, dobj_native_registry *reg)
{
	int rc;

	if (a->abi != DOBJ_NATIVE_ABI || a->size < sizeof(*a))
		return -1;
#if defined(KINDS_FAIL_INIT)
	(void)reg;
	return -1; /* no reason given: the core must not report an older error */
#endif
	api = a;
	if ((rc = a->add_class(reg, &kinds_class)) < 0)
		return rc;
	return a->add_class(reg, &empty_class);
}
