/*
 * Runtime semantics, tested with a C class: one instance per ID, call order,
 * interleaving only at suspension points, block_concurrency_while, abort,
 * errors, depth limit, names inside the object, closing with work pending.
 *
 * The C class keeps each handler's progress in the task's host state (a
 * program counter), which is what a coroutine does for Python and Lua.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "testhost.h"

static int constructions;
static dobj_ns *probe_ns;

/* BLOCK task body: sleep 5 ms, then set the count (or fail). */
static int block_step(dobj_task *t, void *data)
{
	tv *st = dobj_task_host(t);
	tv *inst = dobj_obj_instance(dobj_task_obj(t));
	(void)data;
	if (st->pc == 0) {
		st->pc = 1;
		sleep_then_wake(t, 5);
		return DOBJ_PENDING;
	}
	if (st->n < 0) {
		dobj_task_raise(t, DOBJ_EUSER, "block failed", tv_new(V_ERR, "block failed", 0));
		return DOBJ_OK;
	}
	inst->n = st->n;
	logf_("block-done ");
	dobj_task_return(t, NULL);
	return DOBJ_OK;
}

static int probe_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	size_t len;
	const char *name = dobj_obj_name(obj, &len);
	(void)data;
	constructions++;
	if (name && strcmp(name, "ctorfail") == 0) {
		*error = tv_new(V_ERR, "constructor failed", 0);
		return dobj_error_set(DOBJ_EUSER, "constructor failed");
	}
	*instance = tv_new(V_INST, NULL, 0);
	if (name && strcmp(name, "ctorblock") == 0)
		CHECK_EQ_INT(dobj_task_spawn(NULL, dobj_ns_rt(dobj_obj_ns(obj)), obj, DOBJ_TASK_BLOCK,
			block_step, NULL, tv_new(V_STATE, NULL, 10), NULL, NULL), DOBJ_OK);
	return DOBJ_OK;
}

static int probe_step(dobj_task *t, void *data)
{
	dobj_obj *obj = dobj_task_obj(t);
	tv *inst = dobj_obj_instance(obj);
	tv *req = dobj_task_request(t);
	tv *st = dobj_task_host(t);
	const char *path = req->s;
	(void)data;

	if (!st) {
		st = tv_new(V_STATE, NULL, 0);
		dobj_task_set_host(t, st);
	}
	if (strcmp(path, "count") == 0) {
		logf_("count%d ", inst->n);
		respond(t, 200, "%d", inst->n++);
		return DOBJ_OK;
	}
	if (strcmp(path, "sleep") == 0) {
		if (st->pc == 0) {
			logf_("sleep-start ");
			st->pc = 1;
			sleep_then_wake(t, 10);
			return DOBJ_PENDING;
		}
		logf_("sleep-end ");
		respond(t, 200, "slept");
		return DOBJ_OK;
	}
	if (strcmp(path, "throw") == 0) {
		dobj_task_raise(t, DOBJ_EUSER, "boom", tv_new(V_ERR, "boom", 0));
		return DOBJ_OK;
	}
	if (strcmp(path, "abort") == 0) {
		dobj_obj_abort(obj, DOBJ_EABORTED, "gone", NULL);
		return DOBJ_OK;
	}
	if (strcmp(path, "block") == 0 || strcmp(path, "blockfail") == 0) {
		if (st->pc == 0) {
			st->pc = 1;
			CHECK_EQ_INT(dobj_task_spawn(&st->awaited, dobj_task_rt(t), obj, DOBJ_TASK_BLOCK,
				block_step, NULL, tv_new(V_STATE, NULL, path[5] ? -1 : 100), wake_waiter, t),
				DOBJ_OK);
			return DOBJ_PENDING;
		}
		respond(t, 200, "%d", inst->n++);
		return DOBJ_OK;
	}
	if (strcmp(path, "recurse") == 0) {
		if (st->pc == 0) {
			dobj_stub *self;
			int rc;
			st->pc = 1;
			CHECK_EQ_INT(dobj_stub_new(&self, dobj_obj_ns(obj), dobj_obj_id(obj), NULL, 0), DOBJ_OK);
			st->stub = self;
			rc = dobj_stub_call(&st->awaited, self, DOBJ_CALL_FETCH, NULL, "https://x/", 10,
				tv_new(V_REQ, "recurse", 0), wake_waiter, t);
			if (rc < 0) {
				/* The innermost level: report how deep we got. */
				respond(t, 200, "depth %d: %s", dobj_task_depth(t), dobj_error_last());
				return DOBJ_OK;
			}
			return DOBJ_PENDING;
		}
		{
			void *res;
			const char *msg;
			int rc = dobj_task_result(st->awaited, &res, &msg, NULL);
			CHECK_EQ_INT(rc, DOBJ_OK);
			respond(t, 200, "%s", rc == DOBJ_OK ? ((tv *)res)->s : msg);
		}
		return DOBJ_OK;
	}
	if (strcmp(path, "noresult") == 0)
		return DOBJ_OK;
	if (strcmp(path, "forever") == 0)
		return DOBJ_PENDING; /* never woken */
	dobj_task_raise(t, DOBJ_EARG, "unknown path", NULL);
	return DOBJ_OK;
}

/* ------------------------------------------------------------ test helpers */

static dobj_rt *make_rt(unsigned flags, int virtual_time)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { .name = "Probe", .flags = flags, .construct = probe_construct,
		.step = probe_step };

	o.virtual_time = virtual_time;
	constructions = 0;
	return testhost_rt(&o, &k, "PROBE", "probe-key", &probe_ns);
}

static dobj_stub *stub_named(const char *name)
{
	return testhost_stub(probe_ns, name);
}

/* ----------------------------------------------------------------- tests */

static void test_fetch_reaches_one_instance_per_id(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *a = stub_named("a"), *a2 = stub_named("a"), *b = stub_named("b");
	CHECK_STR(fetch(rt, a, "count", NULL), "0");
	CHECK_STR(fetch(rt, a2, "count", NULL), "1");
	CHECK_STR(fetch(rt, b, "count", NULL), "0");
	CHECK_STR(fetch(rt, a, "count", NULL), "2");
	CHECK_EQ_INT(constructions, 2);
	CHECK_EQ_INT(dobj_ns_live(probe_ns), 2);
	dobj_stub_free(a); dobj_stub_free(a2); dobj_stub_free(b);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void test_concurrent_first_calls_construct_once(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s[3] = { stub_named("x"), stub_named("x"), stub_named("x") };
	dobj_task *t[3];
	int i;
	for (i = 0; i < 3; i++)
		t[i] = send(s[i], "count");
	CHECK_EQ_INT(constructions, 0); /* nothing runs inside dobj_stub_call */
	CHECK_STR(wait_body(rt, t[0], NULL), "0");
	CHECK_STR(wait_body(rt, t[1], NULL), "1");
	CHECK_STR(wait_body(rt, t[2], NULL), "2");
	CHECK_EQ_INT(constructions, 1);
	for (i = 0; i < 3; i++)
		dobj_stub_free(s[i]);
	dobj_rt_free(rt);
}

static void test_hundred_calls_arrive_in_order(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("order");
	dobj_task *t[100];
	char want[8];
	int i;
	for (i = 0; i < 100; i++)
		t[i] = send(s, "count");
	CHECK(dobj_rt_pump(rt) >= 100);
	for (i = 0; i < 100; i++) {
		snprintf(want, sizeof(want), "%d", i);
		CHECK_STR(wait_body(rt, t[i], NULL), want);
	}
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_suspended_handler_lets_others_run(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("i");
	dobj_task *a = send(s, "sleep"), *b = send(s, "count"), *c = send(s, "count");
	CHECK_STR(wait_body(rt, a, NULL), "slept");
	CHECK_STR(wait_body(rt, b, NULL), "0");
	CHECK_STR(wait_body(rt, c, NULL), "1");
	/* count ran while sleep was suspended; the two counts never interleaved. */
	CHECK_STR(logbuf, "sleep-start count0 count1 sleep-end ");
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_block_concurrency_while_holds_the_gate(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("blk");
	dobj_task *a = send(s, "block"), *b = send(s, "count");
	const char *body = wait_body(rt, b, NULL);
	/* count was held by the gate until the block finished, and the handler
	 * that awaited the block continued before it (as in workerd, where the
	 * awaiting promise resolves first): it saw 100, count saw 101. */
	CHECK_STR(body, "101");
	CHECK_STR(wait_body(rt, a, NULL), "100");
	CHECK_STR(logbuf, "block-done count101 ");
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_block_in_constructor_delays_first_event(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("ctorblock");
	CHECK_STR(fetch(rt, s, "count", NULL), "10");
	CHECK_STR(fetch(rt, s, "count", NULL), "11");
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_failed_block_resets_the_object(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("bf"), *s2;
	int code;
	CHECK_STR(fetch(rt, s, "count", NULL), "0");
	CHECK_STR(fetch(rt, s, "blockfail", &code), "block failed");
	CHECK_EQ_INT(code, DOBJ_EUSER);
	/* The stub is broken: same error again. */
	CHECK_STR(fetch(rt, s, "count", &code), "block failed");
	s2 = stub_named("bf");
	CHECK_STR(fetch(rt, s2, "count", NULL), "0"); /* fresh instance */
	CHECK_EQ_INT(constructions, 2);
	dobj_stub_free(s); dobj_stub_free(s2);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void test_abort_fails_in_flight_and_breaks_the_stub(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("ab"), *other = stub_named("ab"), *fresh;
	dobj_task *sleeping;
	int code;
	CHECK_STR(fetch(rt, s, "count", NULL), "0");
	sleeping = send(s, "sleep");
	dobj_rt_pump(rt);
	CHECK_STR(fetch(rt, s, "abort", &code), "gone");
	CHECK_EQ_INT(code, DOBJ_EABORTED);
	CHECK_STR(wait_body(rt, sleeping, &code), "gone");
	CHECK_STR(fetch(rt, s, "count", &code), "gone");
	CHECK_EQ_INT(code, DOBJ_EABORTED);
	/* A stub made earlier but never used binds to the next incarnation. */
	CHECK_STR(fetch(rt, other, "count", NULL), "0");
	fresh = stub_named("ab");
	CHECK_STR(fetch(rt, fresh, "count", NULL), "1");
	CHECK_EQ_INT(constructions, 2);
	dobj_stub_free(s); dobj_stub_free(other); dobj_stub_free(fresh);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* The calls a reset fails, in the order they were made. */
#define MANY_QUEUED 40000
static int failed_order[MANY_QUEUED], nfailed_order;

static void note_failed(dobj_task *t, void *data)
{
	(void)t;
	if (nfailed_order < MANY_QUEUED)
		failed_order[nfailed_order++] = (int)(intptr_t)data;
}

/* A reset fails the calls queued on its object oldest first, and in time
 * linear in them: scanning every task for the oldest each time took
 * seconds with tens of thousands queued (a peer may queue 65,536). */
static void test_a_reset_fails_many_queued_calls_in_order_and_at_once(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("many"), *other = stub_named("other");
	static dobj_task *t[MANY_QUEUED];
	dobj_task *failing, *busy;
	double t0;
	int i, code;

	CHECK_STR(fetch(rt, s, "count", NULL), "0");
	busy = send(other, "sleep"); /* another object's task, older than all */
	failing = send(s, "blockfail");
	for (i = 0; i < MANY_QUEUED; i++)
		CHECK_EQ_INT(dobj_stub_call(&t[i], s, DOBJ_CALL_FETCH, NULL, "https://probe/", 14,
			tv_new(V_REQ, "count", 0), note_failed, (void *)(intptr_t)i), DOBJ_OK);
	t0 = testhost_now_s();
	CHECK_STR(wait_body(rt, failing, &code), "block failed");
	CHECK(testhost_now_s() - t0 < 1.0); /* about 3 s quadratic, 0.05 s linear */
	CHECK_EQ_INT(nfailed_order, MANY_QUEUED);
	for (i = 0; i < MANY_QUEUED; i++) {
		CHECK_EQ_INT(failed_order[i], i);
		CHECK_STR(task_body(t[i], &code), "block failed");
		dobj_task_unref(t[i]);
	}
	CHECK_STR(wait_body(rt, busy, NULL), "slept");
	dobj_stub_free(s); dobj_stub_free(other);
	dobj_rt_free(rt);
}

static void test_errors_reach_the_caller(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("err"), *bad = stub_named("ctorfail");
	dobj_task *t = send(s, "throw");
	void *res, *err;
	const char *msg;
	int code;
	dobj_rt_run(rt, task_is_done, t);
	CHECK_EQ_INT(dobj_task_result(t, &res, &msg, &err), DOBJ_EUSER);
	CHECK_STR(msg, "boom");
	CHECK(err && ((tv *)err)->kind == V_ERR);
	dobj_task_unref(t);
	/* The object survives an exception in a handler. */
	CHECK_STR(fetch(rt, s, "count", NULL), "0");
	CHECK_STR(fetch(rt, s, "noresult", &code), "the handler finished without a result");
	CHECK_STR(fetch(rt, bad, "count", &code), "constructor failed");
	CHECK_EQ_INT(code, DOBJ_EUSER);
	dobj_stub_free(s); dobj_stub_free(bad);
	dobj_rt_free(rt);
}

static void test_class_without_fetch(void)
{
	dobj_rt *rt = make_rt(0, 0);
	dobj_stub *s = stub_named("nofetch");
	int code;
	CHECK_STR(fetch(rt, s, "count", &code), "Handler does not export a fetch() function.");
	CHECK_EQ_INT(code, DOBJ_ENOHANDLER);
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_relative_url_is_refused(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("u");
	dobj_task *t;
	CHECK_EQ_INT(dobj_stub_call(&t, s, DOBJ_CALL_FETCH, NULL, "/foo", 4,
		tv_new(V_REQ, "count", 0), NULL, NULL), DOBJ_ETYPE);
	CHECK(t == NULL);
	CHECK(strstr(dobj_error_last(), "Invalid URL: /foo") != NULL);
	CHECK_EQ_INT(dobj_url_check("https://a/", 10), DOBJ_OK);
	CHECK_EQ_INT(dobj_url_check("x-y.z+1:", 8), DOBJ_ETYPE);
	CHECK_EQ_INT(dobj_url_check("1http://a", 9), DOBJ_ETYPE);
	CHECK_EQ_INT(dobj_url_check("", 0), DOBJ_ETYPE);
	CHECK_EQ_INT(dobj_url_check(NULL, 0), DOBJ_ETYPE);
	CHECK_EQ_INT(live_values, 0); /* the refused request was released */
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_nested_calls_stop_at_depth_16(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("deep");
	CHECK_STR(fetch(rt, s, "recurse", NULL), "depth 16: Subrequest depth limit exceeded");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static int name_seen_len = -1;
static int name_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	size_t len;
	const char *name = dobj_obj_name(obj, &len);
	(void)data; (void)error;
	name_seen_len = name ? (int)len : -1;
	*instance = tv_new(V_INST, NULL, 0);
	return DOBJ_OK;
}

static void test_long_names_are_dropped_inside_the_object(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_class k = { "Names", DOBJ_CLASS_FETCH, NULL, name_construct, probe_step, NULL };
	dobj_ns *ns;
	char name[1100];
	dobj_id id;
	dobj_stub *s;
	size_t len;
	memset(name, 'n', sizeof(name));
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "NAMES", 5, NULL, 0, &k), DOBJ_OK);
	dobj_id_from_name(dobj_ns_idkey(ns), name, 1024, &id);
	dobj_stub_new(&s, ns, &id, name, 1024);
	wait_body(rt, ({ dobj_task *t; dobj_stub_call(&t, s, DOBJ_CALL_FETCH, NULL, "https://a/", 10,
		tv_new(V_REQ, "count", 0), NULL, NULL); t; }), NULL);
	CHECK_EQ_INT(name_seen_len, 1024);
	dobj_stub_free(s);
	dobj_id_from_name(dobj_ns_idkey(ns), name, 1025, &id);
	dobj_stub_new(&s, ns, &id, name, 1025);
	wait_body(rt, ({ dobj_task *t; dobj_stub_call(&t, s, DOBJ_CALL_FETCH, NULL, "https://a/", 10,
		tv_new(V_REQ, "count", 0), NULL, NULL); t; }), NULL);
	CHECK_EQ_INT(name_seen_len, -1);
	CHECK(dobj_stub_name(s, &len) != NULL);
	CHECK_EQ_INT(len, 1025); /* the stub keeps the full name */
	CHECK_STR(dobj_ns_binding(ns), "NAMES");
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

/* "q\0one" and "q\0two" were cut to one "q": one ID key, one folder. */
static void test_nul_in_names_and_paths_is_refused(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_class k = { "Names", DOBJ_CLASS_FETCH, NULL, name_construct, probe_step, NULL };
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	size_t bound = dobj_rt_ns_count(rt);
	dobj_rt *rt2;
	dobj_ns *ns;

	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "q\0one", 5, NULL, 0, &k), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "the binding name must not contain a NUL byte");
	CHECK(ns == NULL);
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "q", 1, "key\0two", 7, &k), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "the unique key must not contain a NUL byte");
	CHECK_EQ_INT(dobj_rt_ns_count(rt), bound);
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "q", 1, NULL, 0, &k), DOBJ_OK);
	o.storage_dir = "/tmp/dobj-nul\0/elsewhere";
	o.storage_dir_len = 24;
	CHECK_EQ_INT(dobj_rt_new(&rt2, &o), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "the storage directory must not contain a NUL byte");
	CHECK(rt2 == NULL);
	dobj_rt_free(rt);
}

static int closed_code;
static void note_code(dobj_task *t, void *data)
{
	(void)data;
	closed_code = dobj_task_result(t, NULL, NULL, NULL);
}

static void test_closing_fails_pending_work(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("close");
	dobj_task *t;
	CHECK_EQ_INT(dobj_stub_call(&t, s, DOBJ_CALL_FETCH, NULL, "https://a/", 10,
		tv_new(V_REQ, "sleep", 0), note_code, NULL), DOBJ_OK);
	dobj_rt_pump(rt);
	CHECK(!dobj_task_done(t));
	dobj_rt_clear(rt);
	CHECK_EQ_INT(closed_code, DOBJ_ECLOSED);
	CHECK(dobj_rt_closed(rt));
	/* Calls after close fail at once; freeing stub and task after the
	 * runtime is fine in any order. */
	{
		dobj_task *t2;
		CHECK_EQ_INT(dobj_stub_call(&t2, s, DOBJ_CALL_FETCH, NULL, "https://a/", 10,
			tv_new(V_REQ, "count", 0), NULL, NULL), DOBJ_ECLOSED);
	}
	dobj_rt_free(rt);
	dobj_task_unref(t);
	dobj_stub_free(s);
	CHECK_EQ_INT(live_values, 0);
}

static void test_virtual_time_and_deadlock(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 1);
	dobj_stub *s = stub_named("vt");
	struct timespec a, b;
	dobj_task *t;
	double before = dobj_rt_now_ms(rt);
	clock_gettime(CLOCK_MONOTONIC, &a);
	CHECK_STR(fetch(rt, s, "sleep", NULL), "slept");
	clock_gettime(CLOCK_MONOTONIC, &b);
	CHECK(dobj_rt_now_ms(rt) - before >= 10);
	CHECK((b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000 < 5);
	/* A handler that never finishes: run reports the deadlock. */
	t = send(s, "forever");
	CHECK_EQ_INT(dobj_rt_run(rt, task_is_done, t), DOBJ_PENDING);
	CHECK_EQ_INT(dobj_rt_pending(rt), 1);
	dobj_task_unref(t);
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static int count_visit(void *v, void *arg)
{
	(void)v;
	(*(int *)arg)++;
	return 0;
}

static void test_visit_reaches_host_values(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 0);
	dobj_stub *s = stub_named("v");
	dobj_task *t;
	int n = 0;
	CHECK_STR(fetch(rt, s, "count", NULL), "0");
	t = send(s, "sleep");
	dobj_rt_pump(rt);
	dobj_rt_visit(rt, count_visit, &n);
	CHECK_EQ_INT(n, 3); /* instance, pending request, its handler state */
	dobj_task_unref(t);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void log_timer(void *data, int fired)
{
	logf_("%s%s ", (const char *)data, fired ? "" : "-cancelled");
}

static void test_timers_fire_in_order_and_cancel(void)
{
	dobj_rt *rt = make_rt(DOBJ_CLASS_FETCH, 1);
	dobj_timer *tm;
	CHECK_EQ_INT(dobj_rt_timer(rt, 30, log_timer, "c", NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_timer(rt, 10, log_timer, "a", NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_timer(rt, 20, log_timer, "x", &tm), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_timer(rt, 10, log_timer, "b", NULL), DOBJ_OK);
	CHECK(dobj_rt_next_timer_ms(rt) > 9);
	dobj_timer_cancel(rt, tm);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_STR(logbuf, "x-cancelled a b c ");
	CHECK(dobj_rt_next_timer_ms(rt) < 0);
	CHECK_EQ_INT(dobj_rt_timer(rt, 5, log_timer, "closed", NULL), DOBJ_OK);
	dobj_rt_free(rt);
	CHECK_STR(logbuf, "x-cancelled a b c closed-cancelled ");
}

int main(void)
{
	RUN(test_fetch_reaches_one_instance_per_id);
	RUN(test_concurrent_first_calls_construct_once);
	RUN(test_hundred_calls_arrive_in_order);
	RUN(test_suspended_handler_lets_others_run);
	RUN(test_block_concurrency_while_holds_the_gate);
	RUN(test_block_in_constructor_delays_first_event);
	RUN(test_failed_block_resets_the_object);
	RUN(test_abort_fails_in_flight_and_breaks_the_stub);
	RUN(test_a_reset_fails_many_queued_calls_in_order_and_at_once);
	RUN(test_errors_reach_the_caller);
	RUN(test_class_without_fetch);
	RUN(test_relative_url_is_refused);
	RUN(test_nested_calls_stop_at_depth_16);
	RUN(test_long_names_are_dropped_inside_the_object);
	RUN(test_closing_fails_pending_work);
	RUN(test_virtual_time_and_deadlock);
	RUN(test_visit_reaches_host_values);
	RUN(test_timers_fire_in_order_and_cancel);
	RUN(test_nul_in_names_and_paths_is_refused);
	return DONE();
}
