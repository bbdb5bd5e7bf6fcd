/* Host values and helpers shared by the C runtime tests: a refcounted test
 * value (`tv`) stands for requests, responses, instances, errors and handler
 * state, the way PyObject* or a Lua reference does in the bindings. */
#ifndef DOBJ_TEST_HOST_H
#define DOBJ_TEST_HOST_H
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

#include "dobj.h"
#include "check.h"

/* ------------------------------------------------------------ host values */

enum { V_REQ = 1, V_RES, V_INST, V_ERR, V_STATE };

typedef struct tv {
	int refs;
	int kind;
	int n;
	int pc;
	char s[128];
	dobj_task *awaited;
	dobj_stub *stub;
} tv;

static int live_values;

static inline tv *tv_new(int kind, const char *s, int n)
{
	tv *v = calloc(1, sizeof(*v));
	v->refs = 1;
	v->kind = kind;
	v->n = n;
	if (s)
		snprintf(v->s, sizeof(v->s), "%s", s);
	live_values++;
	return v;
}

static inline void tv_release(void *data, void *value)
{
	tv *v = value;
	(void)data;
	if (--v->refs > 0)
		return;
	if (v->awaited)
		dobj_task_unref(v->awaited);
	dobj_stub_free(v->stub);
	live_values--;
	free(v);
}

/* Errors are shared by every task an abort fails: host values are counted. */
static inline void tv_retain(void *data, void *value)
{
	(void)data;
	((tv *)value)->refs++;
}

/* ------------------------------------------------------------------- log */

static char logbuf[4096];
static inline void logf_(const char *fmt, ...)
{
	va_list ap;
	size_t n = strlen(logbuf);
	va_start(ap, fmt);
	vsnprintf(logbuf + n, sizeof(logbuf) - n, fmt, ap);
	va_end(ap);
}

/* --------------------------------------------------------------- fixture */

/*
 * A runtime with these host values and one namespace of class `k` (binding
 * name `binding`, unique key `key` or NULL), the log emptied: what each test
 * file's make_rt builds on.  `o` carries the test's own options and hooks.
 */
static inline dobj_rt *testhost_rt(dobj_rt_opts *o, const dobj_class *k, const char *binding,
	const char *key, dobj_ns **ns)
{
	dobj_rt *rt = NULL;

	o->host.retain = tv_retain;
	o->host.release = tv_release;
	CHECK_EQ_INT(dobj_rt_new(&rt, o), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_new(ns, rt, binding, strlen(binding), key, key ? strlen(key) : 0, k),
		DOBJ_OK);
	logbuf[0] = 0;
	return rt;
}

/*
 * A runtime with storage for the storage tests: virtual time, databases in
 * `dir` (NULL: in memory), idle eviction after `idle_ms` (< 0: the
 * default), one namespace of class `k`.
 */
static inline dobj_rt *testhost_storage_rt(const char *dir, double idle_ms, const dobj_class *k,
	const char *binding, const char *key, dobj_ns **ns)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;

	o.virtual_time = 1;
	o.storage_dir = dir;
	o.idle_timeout_ms = idle_ms;
	return testhost_rt(&o, k, binding, key, ns);
}

/* A new empty folder under /tmp, named in `dir` (64 bytes), for a test's
 * databases; testhost_rm_rf removes it.  Returns `dir`. */
static inline char *testhost_tmpdir(char *dir, const char *prefix)
{
	snprintf(dir, 64, "/tmp/%s-XXXXXX", prefix);
	CHECK(mkdtemp(dir) != NULL);
	return dir;
}

static inline void testhost_rm_rf(const char *dir)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_EQ_INT(system(cmd), 0);
}

/* Seconds on the monotonic clock, for tests that bound how long a wait took. */
static inline double testhost_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The counter "n" of an object's storage (decimal text; 0 when absent)
 * plus `add`, written back unless `add` is 0: the count the counting test
 * classes answer. */
static inline long testhost_count(dobj_storage *st, long add)
{
	const void *val;
	size_t len;
	char buf[32];
	long n = 0;

	if (dobj_kv_get(st, "n", 1, &val, &len) == 1) {
		snprintf(buf, sizeof(buf), "%.*s", (int)len, (const char *)val);
		n = strtol(buf, NULL, 10);
	}
	if (add) {
		n += add;
		snprintf(buf, sizeof(buf), "%ld", n);
		CHECK_EQ_INT(dobj_kv_put(st, "n", 1, buf, strlen(buf)), DOBJ_OK);
	}
	return n;
}

/* A stub to the object of `ns` named `name`. */
static inline dobj_stub *testhost_stub(dobj_ns *ns, const char *name)
{
	dobj_id id;
	dobj_stub *s = NULL;

	dobj_id_from_name(dobj_ns_idkey(ns), name, strlen(name), &id);
	CHECK_EQ_INT(dobj_stub_new(&s, ns, &id, name, strlen(name)), DOBJ_OK);
	return s;
}

/* ------------------------------------------------------ waking handlers */

static inline void wake_timer(void *data, int fired)
{
	dobj_task *t = data;
	if (fired)
		dobj_task_wake(t);
	dobj_task_unref(t);
}

static inline void sleep_then_wake(dobj_task *t, double ms)
{
	dobj_task_ref(t);
	CHECK_EQ_INT(dobj_rt_timer(dobj_task_rt(t), ms, wake_timer, t, NULL), DOBJ_OK);
}

static inline void wake_waiter(dobj_task *done, void *data)
{
	(void)done;
	dobj_task_wake(data);
}

static inline void respond(dobj_task *t, int status, const char *fmt, ...)
{
	char body[128];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	dobj_task_return(t, tv_new(V_RES, body, status));
}

static inline dobj_task *send(dobj_stub *s, const char *path)
{
	dobj_task *t = NULL;
	CHECK_EQ_INT(dobj_stub_call(&t, s, DOBJ_CALL_FETCH, NULL, "https://probe/", 14,
		tv_new(V_REQ, path, 0), NULL, NULL), DOBJ_OK);
	return t;
}

static inline int task_is_done(void *arg)
{
	return dobj_task_done(arg);
}

/* t's body (or error message, or "(pending)") in a static buffer; its
 * result code in *code.  t stays the caller's. */
static inline const char *task_body(dobj_task *t, int *code)
{
	static char out[256];
	void *res;
	const char *msg;
	int rc = dobj_task_result(t, &res, &msg, NULL);

	if (code)
		*code = rc;
	snprintf(out, sizeof(out), "%s", rc == DOBJ_OK ? ((tv *)res)->s : msg ? msg : "(pending)");
	return out;
}

/* Wait for t and drop it; return its body as task_body does. */
static inline const char *wait_body(dobj_rt *rt, dobj_task *t, int *code)
{
	const char *out;

	dobj_rt_run(rt, task_is_done, t);
	out = task_body(t, code);
	dobj_task_unref(t);
	return out;
}

static inline const char *fetch(dobj_rt *rt, dobj_stub *s, const char *path, int *code)
{
	return wait_body(rt, send(s, path), code);
}

#endif
