/*
 * Native classes: methods of every signature kind called through libffi,
 * argument checks, bad registrations, loading errors, and the rate limiter
 * example loaded from its shared library (durable state, fetch).
 */
#include <math.h>

#include "testhost.h"

#ifndef RATE_LIBRARY
#define RATE_LIBRARY "librate.so"
#endif

static const dobj_native_api *api;

typedef struct counter {
	int64_t n;
	char label[32];
} counter;

static int destroyed;

static void *create(dobj_native_ctx *ctx)
{
	counter *c = calloc(1, sizeof(*c));
	size_t len;
	const char *name = api->name(ctx, &len);
	if (name && len == 4 && memcmp(name, "fail", 4) == 0) {
		free(c);
		api->raise(ctx, "refusing to construct %s", name);
		return NULL;
	}
	snprintf(c->label, sizeof(c->label), "%.8s", api->id(ctx));
	return c;
}

static void destroy(void *p)
{
	destroyed++;
	free(p);
}

static int64_t add(dobj_native_ctx *ctx, int64_t by)
{
	counter *c = api->instance(ctx);
	return c->n += by;
}

static void noop(dobj_native_ctx *ctx) { (void)ctx; }
static int negate(dobj_native_ctx *ctx, int b) { (void)ctx; return !b; }
static int8_t i8f(dobj_native_ctx *ctx, int8_t x) { (void)ctx; return (int8_t)(x - 1); }
static int16_t i16f(dobj_native_ctx *ctx, int16_t x) { (void)ctx; return (int16_t)(x * 2); }
static int32_t i32f(dobj_native_ctx *ctx, int32_t x, int32_t y) { (void)ctx; return x - y; }
static uint8_t u8f(dobj_native_ctx *ctx, uint8_t x) { (void)ctx; return (uint8_t)(x + 1); }
static uint16_t u16f(dobj_native_ctx *ctx, uint16_t x) { (void)ctx; return (uint16_t)(x + 1); }
static uint32_t u32f(dobj_native_ctx *ctx, uint32_t x) { (void)ctx; return x + 1; }
static uint64_t u64f(dobj_native_ctx *ctx, uint64_t x) { (void)ctx; return x + 1; }
static double half(dobj_native_ctx *ctx, double d) { (void)ctx; return d / 2; }

static const char *greet(dobj_native_ctx *ctx, const char *who)
{
	counter *c = api->instance(ctx);
	snprintf(c->label, sizeof(c->label), "hi %.20s", who);
	return c->label;
}

static dobj_bytes reverse(dobj_native_ctx *ctx, const dobj_bytes *in)
{
	static unsigned char buf[64];
	dobj_bytes out = { buf, in->len < 64 ? in->len : 64 };
	size_t i;
	(void)ctx;
	for (i = 0; i < out.len; i++)
		buf[i] = ((const unsigned char *)in->data)[in->len - 1 - i];
	return out;
}

static dobj_val *describe(dobj_native_ctx *ctx, const dobj_val *v)
{
	dobj_val *o = api->val_object();
	(void)ctx;
	api->val_put(o, "type", 4, api->val_string(dobj_val_type_name(v), strlen(dobj_val_type_name(v))));
	api->val_put(o, "len", 3, api->val_number((double)api->val_len(v)));
	return o;
}

static int64_t boom(dobj_native_ctx *ctx, int64_t x)
{
	api->raise(ctx, "boom %lld", (long long)x);
	return 0;
}

static int counter_fetch(dobj_native_ctx *ctx, const dobj_msg *req, dobj_msg **res)
{
	counter *c = api->instance(ctx);
	char body[64];
	int n = snprintf(body, sizeof(body), "%s %s n=%lld", req->method, req->url, (long long)c->n);
	*res = api->response(200, body, (size_t)n);
	return 0;
}

static const dobj_native_method methods[] = {
	{ "add", "i64(i64)", DOBJ_NATIVE_FN(add) },
	{ "noop", "void()", DOBJ_NATIVE_FN(noop) },
	{ "negate", "bool(bool)", DOBJ_NATIVE_FN(negate) },
	{ "i8f", "i8(i8)", DOBJ_NATIVE_FN(i8f) },
	{ "i16f", "i16(i16)", DOBJ_NATIVE_FN(i16f) },
	{ "i32f", "i32(i32,i32)", DOBJ_NATIVE_FN(i32f) },
	{ "u8f", "u8(u8)", DOBJ_NATIVE_FN(u8f) },
	{ "u16f", "u16(u16)", DOBJ_NATIVE_FN(u16f) },
	{ "u32f", "u32(u32)", DOBJ_NATIVE_FN(u32f) },
	{ "u64f", "u64(u64)", DOBJ_NATIVE_FN(u64f) },
	{ "half", "double(f64)", DOBJ_NATIVE_FN(half) },
	{ "greet", "str(str)", DOBJ_NATIVE_FN(greet) },
	{ "reverse", "bytes(bytes)", DOBJ_NATIVE_FN(reverse) },
	{ "describe", "value(value)", DOBJ_NATIVE_FN(describe) },
	{ "boom", "i64(i64)", DOBJ_NATIVE_FN(boom) },
};

static dobj_native_class_def def = {
	DOBJ_NATIVE_ABI, "Counter", create, destroy, counter_fetch, NULL,
	methods, sizeof(methods) / sizeof(methods[0]),
};

static dobj_native_class *counter_class;
static dobj_ns *ns;

static dobj_rt *make_rt(dobj_native_class *nc)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k;
	dobj_rt *rt;

	o.virtual_time = 1;
	dobj_native_class_of(nc, &k);
	rt = testhost_rt(&o, &k, "N", NULL, &ns);
	CHECK(dobj_ns_is_native(ns));
	return rt;
}

static dobj_stub *named(const char *name)
{
	return testhost_stub(ns, name);
}

static void val_free_cb(void *v) { dobj_val_free(v); }
static void msg_free_cb(void *m) { dobj_msg_free(m); }

/* Call `method` with args (consumed); return the result (caller frees) or
 * NULL with the message in `err`. */
static dobj_val *rpc(dobj_rt *rt, dobj_stub *s, const char *method, dobj_val *args, char *err)
{
	dobj_task *t;
	void *res;
	const char *msg;
	dobj_val *out = NULL;
	err[0] = 0;
	if (dobj_stub_call_ex(&t, s, DOBJ_CALL_RPC, method, NULL, 0, args, val_free_cb,
		NULL, NULL) < 0) {
		/* Refused in the caller (wrong arity or argument types). */
		snprintf(err, 256, "%s", dobj_error_last());
		return NULL;
	}
	dobj_rt_run(rt, task_is_done, t);
	if (dobj_task_result(t, &res, &msg, NULL) == DOBJ_OK) {
		CHECK(dobj_task_result_is_core(t));
		out = dobj_task_take_result(t);
	} else {
		snprintf(err, 256, "%s", msg);
	}
	dobj_task_unref(t);
	return out;
}

static dobj_val *args_of(int n, ...)
{
	va_list ap;
	dobj_val *a = dobj_val_array();
	va_start(ap, n);
	while (n-- > 0)
		dobj_val_push(a, va_arg(ap, dobj_val *));
	va_end(ap);
	return a;
}

static double num_call(dobj_rt *rt, dobj_stub *s, const char *m, dobj_val *args, char *err)
{
	dobj_val *r = rpc(rt, s, m, args, err);
	double d = r && dobj_val_type_of(r) == DOBJ_VAL_NUMBER ? dobj_val_get_number(r) : NAN;
	dobj_val_free(r);
	return d;
}

static void test_every_signature_kind(void)
{
	dobj_rt *rt = make_rt(counter_class);
	dobj_stub *s = named("kinds");
	char err[256];
	dobj_val *r;
	size_t len;
	int64_t big;
	unsigned char data[] = { 1, 2, 3 };

	CHECK(num_call(rt, s, "add", args_of(1, dobj_val_number(5)), err) == 5);
	CHECK(num_call(rt, s, "add", args_of(1, dobj_val_bigint_i64(-2)), err) == 3);
	r = rpc(rt, s, "noop", args_of(0), err);
	CHECK_EQ_INT(dobj_val_type_of(r), DOBJ_VAL_UNDEFINED);
	dobj_val_free(r);
	r = rpc(rt, s, "negate", args_of(1, dobj_val_bool(0)), err);
	CHECK(dobj_val_type_of(r) == DOBJ_VAL_BOOL && dobj_val_get_bool(r) == 1);
	dobj_val_free(r);
	CHECK(num_call(rt, s, "i8f", args_of(1, dobj_val_number(127)), err) == 126);
	CHECK(num_call(rt, s, "i8f", args_of(1, dobj_val_number(0)), err) == -1);
	CHECK(num_call(rt, s, "i16f", args_of(1, dobj_val_number(-300)), err) == -600);
	CHECK(num_call(rt, s, "i32f", args_of(2, dobj_val_number(-2147483647.0 - 1), dobj_val_number(0)), err) == -2147483648.0);
	CHECK(num_call(rt, s, "i32f", args_of(2, dobj_val_number(10), dobj_val_number(3)), err) == 7);
	CHECK(num_call(rt, s, "u8f", args_of(1, dobj_val_number(254)), err) == 255);
	CHECK(num_call(rt, s, "u16f", args_of(1, dobj_val_number(65534)), err) == 65535);
	CHECK(num_call(rt, s, "u32f", args_of(1, dobj_val_number(4294967294.0)), err) == 4294967295.0);
	CHECK(num_call(rt, s, "half", args_of(1, dobj_val_number(3)), err) == 1.5);
	/* u64 beyond 2^53 comes back as a BigInt. */
	r = rpc(rt, s, "u64f", args_of(1, dobj_val_bigint_u64(UINT64_MAX - 1)), err);
	CHECK_EQ_INT(dobj_val_type_of(r), DOBJ_VAL_BIGINT);
	CHECK(dobj_val_to_i64(r, &big) < 0);
	dobj_val_free(r);
	r = rpc(rt, s, "greet", args_of(1, dobj_val_string("bob", 3)), err);
	CHECK_STR(dobj_val_get_string(r, &len), "hi bob");
	dobj_val_free(r);
	r = rpc(rt, s, "reverse", args_of(1, dobj_val_bytes(data, 3)), err);
	CHECK(dobj_val_type_of(r) == DOBJ_VAL_BYTES && memcmp(dobj_val_get_bytes(r, &len), "\3\2\1", 3) == 0);
	CHECK_EQ_INT(len, 3);
	dobj_val_free(r);
	r = rpc(rt, s, "describe", args_of(1, args_of(2, dobj_val_null(), dobj_val_null())), err);
	CHECK_STR(dobj_val_get_string(dobj_val_get(r, "type", 4), NULL), "array");
	CHECK(dobj_val_get_number(dobj_val_get(r, "len", 3)) == 2);
	dobj_val_free(r);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* Results follow the integer rule: f64 results are floats even when whole,
 * integer results integers (BigInt beyond 2^53); the API table offers it. */
static void test_results_keep_int_vs_float(void)
{
	dobj_rt *rt = make_rt(counter_class);
	dobj_stub *s = named("numbers");
	const dobj_native_api *api = dobj_native_api_get();
	char err[256];
	dobj_val *r;

	r = rpc(rt, s, "half", args_of(1, dobj_val_number(4)), err);
	CHECK(dobj_val_get_number(r) == 2.0 && !dobj_val_is_integer(r));
	dobj_val_free(r);
	r = rpc(rt, s, "i32f", args_of(2, dobj_val_number(10), dobj_val_number(3)), err);
	CHECK(dobj_val_get_number(r) == 7 && dobj_val_is_integer(r));
	dobj_val_free(r);
	r = rpc(rt, s, "u64f", args_of(1, dobj_val_integer(1099511627776)), err);
	CHECK(dobj_val_get_number(r) == 1099511627777.0 && dobj_val_is_integer(r));
	dobj_val_free(r);
	CHECK(api->size >= offsetof(dobj_native_api, val_is_integer) + sizeof(api->val_is_integer));
	r = api->val_double(1.0);
	CHECK(!api->val_is_integer(r));
	api->val_free(r);
	r = api->val_integer(1);
	CHECK(api->val_is_integer(r));
	api->val_free(r);
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_bad_calls_get_clear_errors(void)
{
	dobj_rt *rt = make_rt(counter_class);
	dobj_stub *s = named("bad");
	char err[256];
	dobj_val *r;

	r = rpc(rt, s, "missing", args_of(0), err);
	CHECK(r == NULL);
	CHECK_STR(err, "The RPC receiver does not implement the method \"missing\".");
	{
		/* Arity and types are checked in the caller, before delivery; a
		 * missing method is the object's (remote) answer. */
		dobj_task *t = NULL;
		CHECK_EQ_INT(dobj_stub_call_ex(&t, s, DOBJ_CALL_RPC, "add", NULL, 0,
			args_of(2, dobj_val_number(1), dobj_val_number(2)), val_free_cb, NULL, NULL), DOBJ_EARG);
		CHECK(t == NULL);
		CHECK_EQ_INT(dobj_stub_call_ex(&t, s, DOBJ_CALL_RPC, "missing", NULL, 0, args_of(0),
			val_free_cb, NULL, NULL), DOBJ_OK);
		dobj_rt_run(rt, task_is_done, t);
		CHECK_EQ_INT(dobj_task_result(t, NULL, NULL, NULL), DOBJ_ENOHANDLER);
		CHECK(dobj_task_remote(t));
		dobj_task_unref(t);
	}
	rpc(rt, s, "add", args_of(2, dobj_val_number(1), dobj_val_number(2)), err);
	CHECK_STR(err, "Counter.add() expects 1 argument, got 2");
	rpc(rt, s, "add", args_of(1, dobj_val_number(1.5)), err);
	CHECK_STR(err, "argument 1 of add() must be an integer in [-2^63, 2^63-1], got number");
	rpc(rt, s, "add", args_of(1, dobj_val_string("1", 1)), err);
	CHECK_STR(err, "argument 1 of add() must be an integer in [-2^63, 2^63-1], got string");
	rpc(rt, s, "i8f", args_of(1, dobj_val_number(128)), err);
	CHECK_STR(err, "argument 1 of i8f() must be an integer in [-128, 127], got number");
	rpc(rt, s, "u8f", args_of(1, dobj_val_number(-1)), err);
	CHECK(strstr(err, "[0, 255]") != NULL);
	rpc(rt, s, "negate", args_of(1, dobj_val_number(1)), err);
	CHECK_STR(err, "argument 1 of negate() must be a boolean, got number");
	rpc(rt, s, "greet", args_of(1, dobj_val_string("a\0b", 3)), err);
	CHECK(strstr(err, "NUL") != NULL);
	rpc(rt, s, "reverse", args_of(1, dobj_val_string("x", 1)), err);
	CHECK_STR(err, "argument 1 of reverse() must be bytes, got string");
	rpc(rt, s, "half", args_of(1, dobj_val_null()), err);
	CHECK_STR(err, "argument 1 of half() must be a number, got null");
	rpc(rt, s, "boom", args_of(1, dobj_val_number(7)), err);
	CHECK_STR(err, "boom 7");
	/* The object survives all of that. */
	CHECK(num_call(rt, s, "add", args_of(1, dobj_val_number(1)), err) == 1);
	dobj_stub_free(s);
	s = named("fail");
	rpc(rt, s, "add", args_of(1, dobj_val_number(1)), err);
	CHECK_STR(err, "refusing to construct fail");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void test_calls_can_be_checked_before_sending(void)
{
	dobj_rt *rt = make_rt(counter_class);
	dobj_val *ok = args_of(1, dobj_val_number(1)), *two = args_of(2, dobj_val_number(1), dobj_val_number(2)),
		*bad = args_of(1, dobj_val_string("x", 1));
	CHECK_EQ_INT(dobj_native_check(ns, "add", ok), DOBJ_OK);
	CHECK_EQ_INT(dobj_native_check(ns, "add", two), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "Counter.add() expects 1 argument, got 2");
	CHECK_EQ_INT(dobj_native_check(ns, "add", bad), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "argument 1 of add() must be an integer in [-2^63, 2^63-1], got string");
	CHECK_EQ_INT(dobj_native_check(ns, "nope", ok), DOBJ_ENOHANDLER);
	CHECK_STR(dobj_error_last(), "The RPC receiver does not implement the method \"nope\".");
	CHECK(dobj_native_api_get()->size == sizeof(dobj_native_api));
	CHECK(dobj_native_api_get()->val_ref != NULL);
	dobj_val_free(ok); dobj_val_free(two); dobj_val_free(bad);
	dobj_rt_free(rt);
}

static void test_native_fetch(void)
{
	dobj_rt *rt = make_rt(counter_class);
	dobj_stub *s = named("f");
	dobj_task *t;
	void *res;
	char err[256];
	CHECK(num_call(rt, s, "add", args_of(1, dobj_val_number(41)), err) == 41);
	CHECK_EQ_INT(dobj_stub_call_ex(&t, s, DOBJ_CALL_FETCH, NULL, "https://n/x", 11,
		dobj_msg_new_request("https://n/x", "PUT"), msg_free_cb, NULL, NULL), DOBJ_OK);
	dobj_rt_run(rt, task_is_done, t);
	CHECK_EQ_INT(dobj_task_result(t, &res, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(((dobj_msg *)res)->status, 200);
	CHECK(((dobj_msg *)res)->body_len == strlen("PUT https://n/x n=41") &&
		memcmp(((dobj_msg *)res)->body, "PUT https://n/x n=41", 20) == 0);
	dobj_task_unref(t);
	dobj_stub_free(s);
	destroyed = 0;
	dobj_rt_free(rt);
	CHECK_EQ_INT(destroyed, 1);
}

static void test_bad_registrations(void)
{
	dobj_native_class *nc;
	dobj_native_method m[2] = { { "ok", "i64(i64)", DOBJ_NATIVE_FN(add) }, { 0 } };
	dobj_native_class_def d = { DOBJ_NATIVE_ABI, "Bad", NULL, NULL, NULL, NULL, m, 2 };
	struct { const char *name, *sig; void (*fn)(void); const char *want; } cases[] = {
		{ "x", "i65(i64)", DOBJ_NATIVE_FN(add), "unknown type 'i65'" },
		{ "x", "i64(i64,)", DOBJ_NATIVE_FN(add), "bad signature" },
		{ "x", "i64(void)", DOBJ_NATIVE_FN(add), "void is not an argument type" },
		{ "x", "i64 i64", DOBJ_NATIVE_FN(add), "bad signature" },
		{ "x", "i64(i64)", NULL, "the function is NULL" },
		{ "x", NULL, DOBJ_NATIVE_FN(add), "has no signature" },
		{ "ok", "i64(i64)", DOBJ_NATIVE_FN(add), "defined twice" },
		{ "", "i64(i64)", DOBJ_NATIVE_FN(add), "has no name" },
		{ "fetch", "void()", DOBJ_NATIVE_FN(noop), "cannot be named fetch" },
		{ "_private", "void()", DOBJ_NATIVE_FN(noop), "start with '_'" },
	};
	size_t i;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		m[1].name = cases[i].name;
		m[1].signature = cases[i].sig;
		m[1].fn = cases[i].fn;
		CHECK_EQ_INT(dobj_native_define(&nc, &d), DOBJ_EARG);
		CHECK(strstr(dobj_error_last(), cases[i].want) != NULL);
		if (!strstr(dobj_error_last(), cases[i].want))
			fprintf(stderr, "  case %zu: %s\n", i, dobj_error_last());
	}
	d.abi = 99;
	CHECK_EQ_INT(dobj_native_define(&nc, &d), DOBJ_EARG);
	d.abi = DOBJ_NATIVE_ABI;
	d.name = NULL;
	CHECK_EQ_INT(dobj_native_define(&nc, &d), DOBJ_EARG);
}

static void test_loading_errors(void)
{
	dobj_native_class *nc;
	CHECK_EQ_INT(dobj_native_load(&nc, "/nonexistent/librate.so", "RateLimiter"), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "cannot load native library /nonexistent/librate.so") != NULL);
	CHECK_EQ_INT(dobj_native_load(&nc, "libm.so.6", "X"), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "does not export dobj_native_init()") != NULL);
	CHECK_EQ_INT(dobj_native_load(&nc, RATE_LIBRARY, "NoSuchClass"), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "has no native class named NoSuchClass") != NULL);
	CHECK_EQ_INT(dobj_native_load(&nc, NULL, "X"), DOBJ_EARG);
	/* An init that fails without a reason must not report the error an
	 * earlier, unrelated load left on the thread. */
	CHECK_EQ_INT(dobj_native_load(&nc, "/nonexistent/earlier.so", "X"), DOBJ_EARG);
	CHECK_EQ_INT(dobj_native_load(&nc, FAILINIT_LIBRARY, "Kinds"), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "earlier.so") == NULL);
	CHECK(strstr(dobj_error_last(), "dobj_native_init() failed without saying why") != NULL);
}

static void test_rate_limiter_library_is_durable(void)
{
	dobj_native_class *nc;
	dobj_rt *rt;
	dobj_stub *s;
	char err[256];
	dobj_val *r;
	int allowed = 0, i;

	CHECK_EQ_INT(dobj_native_load(&nc, RATE_LIBRARY, "RateLimiter"), DOBJ_OK);
	rt = make_rt(nc);
	s = named("user-1");
	r = rpc(rt, s, "configure", args_of(2, dobj_val_number(3), dobj_val_number(1)), err);
	CHECK_STR(err, "");
	dobj_val_free(r);
	for (i = 0; i < 5; i++) {
		r = rpc(rt, s, "take", args_of(1, dobj_val_number(1)), err);
		allowed += dobj_val_get_bool(r);
		dobj_val_free(r);
	}
	CHECK_EQ_INT(allowed, 3);
	/* Two seconds later (virtual clock), two tokens are back. */
	dobj_rt_advance(rt, 2000);
	CHECK(fabs(num_call(rt, s, "remaining", args_of(0), err) - 2) < 0.01);
	rpc(rt, s, "take", args_of(1, dobj_val_number(-1)), err);
	CHECK_STR(err, "take(tokens) needs tokens > 0, got -1");
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

int main(void)
{
	api = dobj_native_api_get();
	CHECK_EQ_INT(dobj_native_define(&counter_class, &def), DOBJ_OK);
	RUN(test_every_signature_kind);
	RUN(test_results_keep_int_vs_float);
	RUN(test_bad_calls_get_clear_errors);
	RUN(test_calls_can_be_checked_before_sending);
	RUN(test_native_fetch);
	RUN(test_bad_registrations);
	RUN(test_loading_errors);
	RUN(test_rate_limiter_library_is_durable);
	dobj_native_free(counter_class);
	return DONE();
}
