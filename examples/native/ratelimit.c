/*
 * A durable token-bucket rate limiter as a dobj native class.
 *
 * Built as a shared library (librate.so) and bound from Python with
 *   rt.bind_native("LIMITER", "build/librate.so", "RateLimiter")
 * or from Lua with
 *   rt:bind_native("LIMITER", "build/librate.so", "RateLimiter")
 *
 * Methods (RPC):  configure(capacity f64, per_second f64) -> void
 *                 take(tokens f64) -> bool       (true: allowed)
 *                 remaining() -> f64
 * fetch: POST takes one token (200 or 429), GET reports what is left.
 *
 * State lives in the object's storage under "bucket" as
 * {capacity, rate, tokens, updated}, so it survives eviction and restarts.
 * The library calls the core only through the api table it is given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dobj.h"

static const dobj_native_api *api;

typedef struct bucket {
	double capacity, rate, tokens, updated;
} bucket;

static double field(const dobj_val *o, const char *k, double dflt)
{
	dobj_val *v = api->val_get(o, k, strlen(k));
	return v && api->val_type(v) == DOBJ_VAL_NUMBER ? api->val_number_of(v) : dflt;
}

/* Load the bucket (first use: full, 10 tokens, 1 per second) and refill it. */
static int load(dobj_native_ctx *ctx, bucket *b)
{
	dobj_val *v = NULL;
	double now = api->now(ctx);
	int rc = api->get(ctx, "bucket", 6, &v);

	if (rc < 0)
		return rc;
	b->capacity = rc ? field(v, "capacity", 10) : 10;
	b->rate = rc ? field(v, "rate", 1) : 1;
	b->tokens = rc ? field(v, "tokens", b->capacity) : b->capacity;
	b->updated = rc ? field(v, "updated", now) : now;
	api->val_free(v);
	if (now > b->updated) {
		b->tokens += (now - b->updated) / 1000.0 * b->rate;
		if (b->tokens > b->capacity)
			b->tokens = b->capacity;
		b->updated = now;
	}
	return 0;
}

static int save(dobj_native_ctx *ctx, const bucket *b)
{
	dobj_val *o = api->val_object();
	int rc;

	api->val_put(o, "capacity", 8, api->val_number(b->capacity));
	api->val_put(o, "rate", 4, api->val_number(b->rate));
	api->val_put(o, "tokens", 6, api->val_number(b->tokens));
	api->val_put(o, "updated", 7, api->val_number(b->updated));
	rc = api->put(ctx, "bucket", 6, o);
	api->val_free(o);
	return rc;
}

static void configure(dobj_native_ctx *ctx, double capacity, double per_second)
{
	bucket b;

	if (!(capacity > 0) || !(per_second >= 0)) {
		api->raise(ctx, "configure(capacity, per_second) needs capacity > 0 and per_second >= 0");
		return;
	}
	if (load(ctx, &b) < 0)
		return;
	b.capacity = capacity;
	b.rate = per_second;
	if (b.tokens > capacity)
		b.tokens = capacity;
	save(ctx, &b);
}

static int take(dobj_native_ctx *ctx, double tokens)
{
	bucket b;

	if (!(tokens > 0)) {
		api->raise(ctx, "take(tokens) needs tokens > 0, got %g", tokens);
		return 0;
	}
	if (load(ctx, &b) < 0)
		return 0;
	if (b.tokens < tokens) {
		save(ctx, &b);
		return 0;
	}
	b.tokens -= tokens;
	return save(ctx, &b) == 0;
}

static double remaining(dobj_native_ctx *ctx)
{
	bucket b;

	if (load(ctx, &b) < 0)
		return 0;
	return b.tokens;
}

static int fetch(dobj_native_ctx *ctx, const dobj_msg *req, dobj_msg **res)
{
	char body[96];
	int allowed = 1, n;

	if (strcmp(req->method, "POST") == 0)
		allowed = take(ctx, 1);
	n = snprintf(body, sizeof(body), "{\"allowed\":%s,\"remaining\":%.3f}",
		allowed ? "true" : "false", remaining(ctx));
	*res = api->response(allowed ? 200 : 429, body, (size_t)n);
	if (!*res)
		return api->raise(ctx, "out of memory");
	api->set_header(*res, "content-type", "application/json");
	return 0;
}

static const dobj_native_method methods[] = {
	{ "configure", "void(f64,f64)", DOBJ_NATIVE_FN(configure) },
	{ "take", "bool(f64)", DOBJ_NATIVE_FN(take) },
	{ "remaining", "f64()", DOBJ_NATIVE_FN(remaining) },
};

static const dobj_native_class_def rate_limiter = {
	DOBJ_NATIVE_ABI, "RateLimiter", NULL, NULL, fetch, NULL,
	methods, sizeof(methods) / sizeof(methods[0]),
};

__attribute__((visibility("default")))
int dobj_native_init(const dobj_native_api *a, dobj_native_registry *reg)
{
	if (a->abi != DOBJ_NATIVE_ABI || a->size < sizeof(*a))
		return -1;
	api = a;
	return a->add_class(reg, &rate_limiter);
}
