/*
 * bench_storage — storage figures of the dobj C core (part of `make bench`,
 * linked into build/bench_ids, which hands it the ops it does not know).
 *
 * A C class ("Store", fetch handler, dobj_host_msg values) on a runtime
 * with a storage directory: workerd's localDisk layout, WAL, commits made
 * by the core's output gate before a response is delivered.  The directory
 * is $DOBJ_BENCH_STORE (bench/run.py makes and removes it), else a fresh
 * temporary directory removed at exit.
 *
 * Ops (bench_storage_op; one "OP N" line each, timed here):
 *   store_put N     one call whose handler puts N small values (V8-encoded
 *                   integers, dobj_ser) under distinct keys "k0".."k<N-1>"
 *   store_get N     one call whose handler gets those N keys and decodes them
 *                   (dobj_de); the keys are written first, untimed
 *   store_inc N     N sequential calls, each reading "n", adding one,
 *                   writing it and replying (after the commit)
 *   flat_get_1k N, flat_get_1m N, flat_put_1k N, flat_put_1m N
 *                   one call doing N gets / puts of random existing keys of
 *                   an object holding 1 thousand / 1 million keys (each
 *                   object is filled once, in one transaction, untimed)
 *   native_add N    N sequential RPC calls add(5) from C to the native class
 *                   Adder of $DOBJ_BENCH_NATIVE (build/libbench_native.so),
 *                   loaded with dobj_native_load, arguments and results as
 *                   dobj_val (what the bindings' stubs do under their API)
 */
#define _POSIX_C_SOURCE 200809L
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dobj.h"

#include "bench_storage.h"

static dobj_rt *rt;
static dobj_ns *ns;
static dobj_rt *nrt;  /* native_add: no storage directory */
static dobj_ns *nns;
static char tmpdir[256]; /* made here (no $DOBJ_BENCH_STORE): removed at exit */
static long filled_1k, filled_1m;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ the class */

typedef struct store_state {
	dobj_ser *ser;
	dobj_de *de;
	unsigned long long rng;
} store_state;

static int store_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	store_state *s = calloc(1, sizeof(*s));

	(void)obj; (void)data; (void)error;
	if (!s)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if (dobj_ser_new(&s->ser) < 0) {
		free(s);
		return dobj_error_last_code();
	}
	dobj_de_new(&s->de, "\xff\x0f\x30", 3);
	if (!s->de) {
		dobj_ser_free(s->ser);
		free(s);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	s->rng = 0x9e3779b97f4a7c15ULL;
	*instance = s;
	return DOBJ_OK;
}

static void store_destroy(void *instance, void *data)
{
	store_state *s = instance;

	(void)data;
	dobj_ser_free(s->ser);
	dobj_de_free(s->de);
	free(s);
}

static unsigned long long next_rand(store_state *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return s->rng;
}

static int put_int(store_state *s, dobj_storage *st, const char *key, size_t klen, long v)
{
	const unsigned char *blob;
	size_t len;

	dobj_ser_reset(s->ser);
	if (dobj_ser_number(s->ser, (double)v) < 0 || dobj_ser_finish(s->ser, &blob, &len) < 0)
		return dobj_error_last_code();
	return dobj_kv_put(st, key, klen, blob, len);
}

/* 1 and *v if present, 0 if absent, < 0 on error. */
static int get_int(store_state *s, dobj_storage *st, const char *key, size_t klen, double *v)
{
	const void *blob;
	size_t len;
	dobj_tok tok;
	int rc = dobj_kv_get(st, key, klen, &blob, &len);

	if (rc <= 0)
		return rc;
	if (dobj_de_reset(s->de, blob, len) < 0 || dobj_de_next(s->de, &tok) < 0)
		return dobj_error_last_code();
	if (tok.type != DOBJ_TOK_INT32 && tok.type != DOBJ_TOK_DOUBLE)
		return dobj_error_set(DOBJ_ERROR, "key %.*s: not a number", (int)klen, key);
	*v = tok.number;
	return 1;
}

static int respond(dobj_task *t, long v)
{
	char body[32];
	int len = snprintf(body, sizeof(body), "%ld", v);
	dobj_msg *res = dobj_msg_new_response(200, body, (size_t)len);

	if (!res)
		return dobj_error_last_code();
	dobj_task_return(t, res);
	return DOBJ_OK;
}

/* The handler: the URL is "https://x/<op>?<n>" (the handler never suspends). */
static int store_step(dobj_task *t, void *data)
{
	store_state *s = dobj_obj_instance(dobj_task_obj(t));
	const dobj_msg *req = dobj_task_request(t);
	dobj_storage *st;
	char op[32] = "", key[32];
	long n = 0, sum = 0;
	double v;
	int rc, klen;

	(void)data;
	if (sscanf(req->url, "https://x/%31[^?]?%ld", op, &n) < 1)
		return dobj_error_set(DOBJ_EARG, "bad request %s", req->url);
	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	if (!strcmp(op, "put")) { /* distinct keys k0..k<n-1> */
		for (long i = 0; i < n; i++) {
			klen = snprintf(key, sizeof(key), "k%ld", i);
			if ((rc = put_int(s, st, key, (size_t)klen, i)) < 0)
				return rc;
		}
		return respond(t, n);
	}
	if (!strcmp(op, "get")) {
		for (long i = 0; i < n; i++) {
			klen = snprintf(key, sizeof(key), "k%ld", i);
			if ((rc = get_int(s, st, key, (size_t)klen, &v)) < 0)
				return rc;
			if (rc == 0)
				return dobj_error_set(DOBJ_ERROR, "key %s is missing", key);
			sum += (long)v;
		}
		return respond(t, sum);
	}
	if (!strcmp(op, "inc")) {
		if ((rc = get_int(s, st, "n", 1, &v)) < 0)
			return rc;
		n = (rc ? (long)v : 0) + 1;
		if ((rc = put_int(s, st, "n", 1, n)) < 0)
			return rc;
		return respond(t, n);
	}
	if (!strcmp(op, "fill")) { /* keys f0..f<n-1>, one step: one transaction */
		for (long i = 0; i < n; i++) {
			klen = snprintf(key, sizeof(key), "f%ld", i);
			if ((rc = put_int(s, st, key, (size_t)klen, i)) < 0)
				return rc;
		}
		return respond(t, n);
	}
	if (!strncmp(op, "rget", 4) || !strncmp(op, "rput", 4)) {
		/* "rget<K>" / "rput<K>": n random keys among the K filled ones */
		long keys = atol(op + 4);
		int get = op[1] == 'g';
		if (keys <= 0)
			return dobj_error_set(DOBJ_EARG, "bad key count in %s", op);
		for (long i = 0; i < n; i++) {
			long k = (long)(next_rand(s) % (unsigned long long)keys);
			klen = snprintf(key, sizeof(key), "f%ld", k);
			if (get) {
				if ((rc = get_int(s, st, key, (size_t)klen, &v)) < 0)
					return rc;
				if (rc == 0)
					return dobj_error_set(DOBJ_ERROR, "key %s is missing", key);
				sum += (long)v;
			} else if ((rc = put_int(s, st, key, (size_t)klen, k)) < 0) {
				return rc;
			}
		}
		return respond(t, sum);
	}
	return dobj_error_set(DOBJ_EARG, "unknown op %s", op);
}

/* ----------------------------------------------------------------- caller */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	remove(path);
	return 0;
}

void bench_storage_close(void)
{
	if (rt) {
		dobj_rt_free(rt);
		rt = NULL;
	}
	if (nrt) {
		dobj_rt_free(nrt);
		nrt = NULL;
	}
	if (tmpdir[0]) {
		nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		tmpdir[0] = 0;
	}
}

static int setup(void)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	const char *dir = getenv("DOBJ_BENCH_STORE");

	if (rt)
		return DOBJ_OK;
	if (!dir || !*dir) {
		snprintf(tmpdir, sizeof(tmpdir), "%s/dobj-bench-XXXXXX",
			getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
		if (!mkdtemp(tmpdir)) {
			tmpdir[0] = 0;
			return dobj_error_set(DOBJ_ERROR, "mkdtemp failed");
		}
		atexit(bench_storage_close);
		dir = tmpdir;
	}
	o.host = dobj_host_msg();
	o.storage_dir = dir;
	o.idle_timeout_ms = -1; /* the 1M-key object stays open between ops */
	if (dobj_rt_new(&rt, &o) < 0)
		return dobj_error_last_code();
	k.name = "Store";
	k.flags = DOBJ_CLASS_FETCH;
	k.construct = store_construct;
	k.step = store_step;
	k.destroy = store_destroy;
	if (dobj_ns_new(&ns, rt, "STORE", 5, "bench-store", 11, &k) < 0)
		return dobj_error_last_code();
	return DOBJ_OK;
}

static int is_done(void *task)
{
	return dobj_task_done(task);
}

/* One call to object `name`; the response body's number in *out. */
static int call(dobj_stub *stub, const char *op, long n, long *out)
{
	char url[96];
	int len = snprintf(url, sizeof(url), "https://x/%s?%ld", op, n);
	dobj_msg *req = dobj_msg_new_request(url, "GET");
	dobj_task *task;
	void *res;
	const char *msg;
	int rc;

	if (!req)
		return dobj_error_last_code();
	rc = dobj_stub_call(&task, stub, DOBJ_CALL_FETCH, NULL, url, (size_t)len, req, NULL, NULL);
	if (rc < 0)
		return rc;
	dobj_rt_run(rt, is_done, task);
	rc = dobj_task_result(task, &res, &msg, NULL);
	if (rc == DOBJ_OK && out)
		*out = strtol((const char *)((dobj_msg *)res)->body, NULL, 10);
	else if (rc != DOBJ_OK)
		dobj_error_set(rc, "%s", msg ? msg : "call failed");
	dobj_task_unref(task);
	return rc;
}

static int stub_for(const char *name, dobj_stub **out)
{
	dobj_id id;

	dobj_id_from_name(dobj_ns_idkey(ns), name, strlen(name), &id);
	return dobj_stub_new(out, ns, &id, name, strlen(name));
}

/* ------------------------------------------------------------ native RPC */

static void val_free_cb(void *v)
{
	dobj_val_free(v);
}

static int native_add(long n, double *seconds)
{
	const char *path = getenv("DOBJ_BENCH_NATIVE");
	dobj_stub *stub = NULL;
	dobj_id id;
	double t0, total = 0, first = 0;
	int rc = DOBJ_OK;

	if (!nrt) {
		dobj_native_class *nc;
		dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
		dobj_class k;
		if (!path || !*path)
			return dobj_error_set(DOBJ_EARG, "n/a: DOBJ_BENCH_NATIVE is not set");
		if (dobj_native_load(&nc, path, "Adder") < 0)
			return dobj_error_set(DOBJ_EARG, "n/a: %s", dobj_error_last());
		o.host = dobj_host_msg();
		if (dobj_rt_new(&nrt, &o) < 0)
			return dobj_error_last_code();
		dobj_native_class_of(nc, &k);
		if (dobj_ns_new(&nns, nrt, "NADDER", 6, "bench-nadder", 12, &k) < 0)
			return dobj_error_last_code();
	}
	dobj_id_from_name(dobj_ns_idkey(nns), "bench", 5, &id);
	if ((rc = dobj_stub_new(&stub, nns, &id, "bench", 5)) < 0)
		return rc;
	t0 = now_s();
	for (long i = 0; i <= n && rc >= 0; i++) {
		dobj_val *args = dobj_val_array();
		dobj_task *task;
		void *res;
		const char *msg;
		if (i == 1)
			t0 = now_s(); /* the first call makes the instance */
		if (!args || dobj_val_push(args, dobj_val_number(5)) < 0) {
			dobj_val_free(args);
			rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
			break;
		}
		rc = dobj_stub_call_ex(&task, stub, DOBJ_CALL_RPC, "add", NULL, 0, args, val_free_cb,
			NULL, NULL);
		if (rc < 0)
			break;
		dobj_rt_run(nrt, is_done, task);
		rc = dobj_task_result(task, &res, &msg, NULL);
		if (rc == DOBJ_OK)
			total = dobj_val_get_number(res);
		else
			dobj_error_set(rc, "%s", msg ? msg : "call failed");
		if (i == 0)
			first = total;
		dobj_task_unref(task);
	}
	*seconds = now_s() - t0;
	dobj_stub_free(stub);
	if (rc >= 0 && total != first + 5.0 * (double)n)
		rc = dobj_error_set(DOBJ_ERROR, "native_add: total %g, expected %g", total,
			first + 5.0 * (double)n);
	return rc < 0 ? rc : 1;
}

int bench_storage_op(const char *op, long n, double *seconds)
{
	static const struct {
		const char *op, *obj, *call;
		long keys;
		long *filled;
	} flat[] = {
		{ "flat_get_1k", "flat-1k", "rget1000", 1000, &filled_1k },
		{ "flat_put_1k", "flat-1k", "rput1000", 1000, &filled_1k },
		{ "flat_get_1m", "flat-1m", "rget1000000", 1000000, &filled_1m },
		{ "flat_put_1m", "flat-1m", "rput1000000", 1000000, &filled_1m },
	};
	dobj_stub *stub = NULL;
	double t0;
	long got;
	int rc;

	if (!strcmp(op, "native_add"))
		return native_add(n, seconds);
	if (strncmp(op, "store_", 6) != 0 && strncmp(op, "flat_", 5) != 0)
		return 0;
	if ((rc = setup()) < 0)
		return rc;
	if (!strcmp(op, "store_put") || !strcmp(op, "store_get") || !strcmp(op, "store_inc")) {
		if ((rc = stub_for(!strcmp(op, "store_inc") ? "inc" : "bench", &stub)) < 0)
			return rc;
		if (!strcmp(op, "store_get") && (rc = call(stub, "put", n, NULL)) < 0)
			goto out;
		t0 = now_s();
		if (!strcmp(op, "store_inc")) {
			for (long i = 0; i < n && rc >= 0; i++)
				rc = call(stub, "inc", 0, NULL);
		} else {
			rc = call(stub, op + 6, n, &got);
			if (rc >= 0 && !strcmp(op, "store_get") && got != n * (n - 1) / 2)
				rc = dobj_error_set(DOBJ_ERROR, "store_get: sum %ld, expected %ld",
					got, n * (n - 1) / 2);
		}
		*seconds = now_s() - t0;
		goto out;
	}
	for (size_t i = 0; i < sizeof(flat) / sizeof(flat[0]); i++) {
		if (strcmp(op, flat[i].op) != 0)
			continue;
		if ((rc = stub_for(flat[i].obj, &stub)) < 0)
			return rc;
		if (*flat[i].filled < flat[i].keys) {
			if ((rc = call(stub, "fill", flat[i].keys, NULL)) < 0)
				goto out;
			*flat[i].filled = flat[i].keys;
		}
		t0 = now_s();
		rc = call(stub, flat[i].call, n, NULL);
		*seconds = now_s() - t0;
		goto out;
	}
	return dobj_error_set(DOBJ_EARG, "unknown op %s", op);
out:
	dobj_stub_free(stub);
	return rc < 0 ? rc : 1;
}
