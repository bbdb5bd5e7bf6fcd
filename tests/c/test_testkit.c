/*
 * The test kit (dobj/testkit.h): listing IDs, evicting, aborting, reset,
 * running an alarm now, a host function inside an object, the leak report,
 * and virtual time that fires timers at their own times, in order.
 */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testhost.h"

static dobj_ns *kit_ns;
static int constructions;
static int alarm_failures_left;
static char events[2048]; /* "what@ms " in the order they happened */

static void event(dobj_rt *rt, const char *what)
{
	size_t n = strlen(events);
	snprintf(events + n, sizeof(events) - n, "%s@%.0f ", what, dobj_rt_now_ms(rt));
}

static int kit_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	(void)obj; (void)data; (void)error;
	constructions++;
	*instance = tv_new(V_INST, NULL, 0);
	return DOBJ_OK;
}

static void kit_destroy(void *instance, void *data)
{
	(void)data;
	event(dobj_ns_rt(kit_ns), "gone");
	tv_release(NULL, instance);
}

static int kit_step(dobj_task *t, void *data)
{
	dobj_obj *obj = dobj_task_obj(t);
	dobj_rt *rt = dobj_task_rt(t);
	tv *inst = dobj_obj_instance(obj), *req = dobj_task_request(t);
	dobj_storage *st = NULL;
	char cmd[32] = "", a[64] = "";
	int rc;

	(void)data;
	if (dobj_task_call_kind(t) == DOBJ_CALL_ALARM) {
		int retry = -1;
		char what[32];
		dobj_task_alarm_info(t, NULL, &retry);
		snprintf(what, sizeof(what), "alarm%d", retry);
		event(rt, what);
		if (alarm_failures_left > 0) {
			alarm_failures_left--;
			dobj_task_raise(t, DOBJ_EUSER, "alarm failed", NULL);
		} else {
			dobj_task_return(t, NULL);
		}
		return DOBJ_OK;
	}
	if (dobj_task_call_kind(t) == DOBJ_CALL_HOST) {
		/* The host function: here a command run with the instance. */
		respond(t, 200, "%s:%d", req->s, inst->n);
		return DOBJ_OK;
	}
	if (dobj_task_host(t)) { /* resumed after "sleep" */
		inst->n++;
		respond(t, 200, "slept");
		return DOBJ_OK;
	}
	sscanf(req->s, "%31s %63s", cmd, a);
	if ((!strcmp(cmd, "inc") || !strcmp(cmd, "alarm")) && (rc = dobj_obj_storage(obj, &st)) < 0)
		return rc;
	if (!strcmp(cmd, "inc")) {
		inst->n++;
		CHECK_EQ_INT(dobj_kv_put(st, "n", 1, "x", 1), DOBJ_OK);
		respond(t, 200, "%d", inst->n);
	} else if (!strcmp(cmd, "alarm")) {
		CHECK_EQ_INT(dobj_alarm_set(st, dobj_rt_wall_ms(rt) + atof(a)), DOBJ_OK);
		respond(t, 200, "set");
	} else if (!strcmp(cmd, "sleep")) {
		dobj_task_set_host(t, tv_new(V_STATE, NULL, 0));
		sleep_then_wake(t, atof(a));
		return DOBJ_PENDING;
	} else {
		dobj_task_raise(t, DOBJ_EARG, "unknown command", NULL);
	}
	return DOBJ_OK;
}

static dobj_rt *make_kit_rt(const char *dir, double idle_ms)
{
	dobj_class k = { 0 };
	dobj_rt *rt;

	k.name = "Kit";
	k.flags = DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM;
	k.construct = kit_construct;
	k.step = kit_step;
	k.destroy = kit_destroy;
	rt = testhost_storage_rt(dir, idle_ms, &k, "KIT", "kit-key", &kit_ns);
	constructions = 0;
	alarm_failures_left = 0;
	events[0] = '\0';
	return rt;
}

static dobj_stub *kit_stub(const char *name)
{
	return testhost_stub(kit_ns, name);
}

static char tmpdir[64];
#define make_tmpdir() testhost_tmpdir(tmpdir, "dobj-testkit")
#define rm_rf testhost_rm_rf

static int db_file_exists(dobj_stub *s)
{
	char hex[DOBJ_ID_HEX_LEN + 1], path[256];
	struct stat sb;
	dobj_id_to_hex(dobj_stub_id(s), hex);
	hex[DOBJ_ID_HEX_LEN] = '\0';
	snprintf(path, sizeof(path), "%s/kit-key/%s.sqlite", tmpdir, hex);
	return stat(path, &sb) == 0;
}

/* ------------------------------------------------------------------ tests */

/* One advance goes through the timers in order, the clock reading each
 * one's time: the eviction that follows each alarm run, the retries at
 * their backoff (with jitter), all before the end of the advance. */
static void test_advance_fires_alarms_and_eviction_in_order(void)
{
	dobj_rt *rt = make_kit_rt(NULL, 1000);
	dobj_stub *s = kit_stub("order");
	double t[8];
	char w[8][16];
	int n;

	alarm_failures_left = 2;
	CHECK_STR(fetch(rt, s, "alarm 5000", NULL), "set");
	events[0] = '\0';
	CHECK_EQ_INT(dobj_rt_advance(rt, 60000), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_now_ms(rt), 60000);
	n = sscanf(events, "%15[^@]@%lf %15[^@]@%lf %15[^@]@%lf %15[^@]@%lf %15[^@]@%lf %15[^@]@%lf",
		w[0], &t[0], w[1], &t[1], w[2], &t[2], w[3], &t[3], w[4], &t[4], w[5], &t[5]);
	CHECK_EQ_INT(n, 12);
	CHECK_STR(w[0], "gone");   CHECK_EQ_INT(t[0], 1000);  /* idle after the call */
	CHECK_STR(w[1], "alarm0"); CHECK_EQ_INT(t[1], 5000);
	CHECK_STR(w[2], "gone");   CHECK_EQ_INT(t[2], 6000);
	CHECK_STR(w[3], "alarm1"); CHECK(t[3] >= 7000 && t[3] <= 7501);
	CHECK_STR(w[4], "gone");   CHECK_EQ_INT(t[4], t[3] + 1000);
	CHECK_STR(w[5], "alarm2"); CHECK(t[5] >= t[3] + 4000 && t[5] <= t[3] + 5001);
	CHECK_EQ_INT(constructions, 4);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static size_t list_ids(char *out, size_t cap)
{
	dobj_id *ids;
	size_t n, i, len = 0;
	CHECK_EQ_INT(dobj_ns_list_ids(kit_ns, &ids, &n), DOBJ_OK);
	out[0] = '\0';
	for (i = 0; i < n && len + 66 < cap; i++) {
		dobj_id_to_hex(&ids[i], out + len);
		len += 8; /* a prefix is enough to compare */
		out[len++] = ' ';
		out[len] = '\0';
	}
	dobj_free(ids);
	return n;
}

static void hex8(dobj_stub *s, char *out)
{
	char hex[DOBJ_ID_HEX_LEN];
	dobj_id_to_hex(dobj_stub_id(s), hex);
	memcpy(out, hex, 8);
	out[8] = '\0';
}

/* Live, with a database, with an alarm: each listed once, sorted; a
 * restart on the same folder finds those with storage. */
static void test_list_ids_live_stored_and_alarmed(void)
{
	char got[1024], want[128] = "", h[3][9];
	const char *names[3] = { "live", "stored", "alarmed" };
	dobj_stub *s[3];
	dobj_rt *rt;
	int i;

	make_tmpdir();
	rt = make_kit_rt(tmpdir, -1);
	CHECK_EQ_INT(list_ids(got, sizeof(got)), 0);
	for (i = 0; i < 3; i++) {
		s[i] = kit_stub(names[i]);
		hex8(s[i], h[i]);
	}
	CHECK_STR(fetch(rt, s[0], "hostfn", NULL), "unknown command"); /* live only */
	CHECK_STR(fetch(rt, s[1], "inc", NULL), "1");
	CHECK_STR(fetch(rt, s[2], "alarm 100000", NULL), "set");
	CHECK_EQ_INT(dobj_ns_evict(kit_ns, dobj_stub_id(s[1])), 1);
	CHECK_EQ_INT(dobj_ns_evict(kit_ns, dobj_stub_id(s[2])), 1);
	CHECK_EQ_INT(dobj_ns_evict(kit_ns, dobj_stub_id(s[2])), 0); /* not live */
	CHECK_EQ_INT(list_ids(got, sizeof(got)), 3);
	/* sorted by hex */
	{
		const char *p[3] = { h[0], h[1], h[2] }, *tmp;
		int a, b;
		for (a = 0; a < 3; a++)
			for (b = a + 1; b < 3; b++)
				if (strcmp(p[b], p[a]) < 0) { tmp = p[a]; p[a] = p[b]; p[b] = tmp; }
		snprintf(want, sizeof(want), "%s %s %s ", p[0], p[1], p[2]);
	}
	CHECK_STR(got, want);
	for (i = 0; i < 3; i++)
		dobj_stub_free(s[i]);
	dobj_rt_free(rt);

	/* Same folder, new runtime: the stored ones (database files, alarm). */
	rt = make_kit_rt(tmpdir, -1);
	CHECK_EQ_INT(list_ids(got, sizeof(got)), 2);
	CHECK(strstr(got, h[1]) != NULL);
	CHECK(strstr(got, h[2]) != NULL);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
	CHECK_EQ_INT(live_values, 0);
}

/* Eviction as idle eviction does it; a busy object is refused. */
static void test_evict_and_evict_all(void)
{
	dobj_rt *rt = make_kit_rt(NULL, -1);
	dobj_stub *a = kit_stub("a"), *b = kit_stub("b");
	dobj_task *slow;

	CHECK_STR(fetch(rt, a, "inc", NULL), "1");
	CHECK_STR(fetch(rt, b, "inc", NULL), "1");
	CHECK_EQ_INT(dobj_ns_live(kit_ns), 2);
	slow = send(a, "sleep 50");
	dobj_rt_pump(rt);
	CHECK_EQ_INT(dobj_ns_evict(kit_ns, dobj_stub_id(a)), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "cannot evict KIT ") != NULL);
	CHECK(strstr(dobj_error_last(), "1 event in flight") != NULL);
	CHECK_EQ_INT(dobj_rt_evict_all(rt), DOBJ_ESTATE); /* nothing evicted */
	CHECK_EQ_INT(dobj_ns_live(kit_ns), 2);
	CHECK_STR(wait_body(rt, slow, NULL), "slept");
	CHECK_EQ_INT(dobj_rt_evict_all(rt), 2);
	CHECK_EQ_INT(dobj_ns_live(kit_ns), 0);
	CHECK_EQ_INT(constructions, 2);
	/* Not a failure: the same stubs reach new instances (data kept in memory). */
	CHECK_STR(fetch(rt, a, "inc", NULL), "1");
	CHECK_EQ_INT(constructions, 3);
	dobj_stub_free(a);
	dobj_stub_free(b);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* abort_all: calls in flight fail with the abort's error, stubs break. */
static void test_abort_all_fails_calls_in_flight(void)
{
	dobj_rt *rt = make_kit_rt(NULL, -1);
	dobj_stub *a = kit_stub("a"), *a2;
	dobj_task *slow;
	int code;

	slow = send(a, "sleep 50");
	dobj_rt_pump(rt);
	CHECK_EQ_INT(dobj_rt_abort_all(rt, NULL, tv_new(V_ERR, "boom", 0)), 1);
	dobj_rt_pump(rt);
	CHECK_STR(wait_body(rt, slow, &code), DOBJ_MSG_ABORT_DEFAULT);
	CHECK_EQ_INT(code, DOBJ_EABORTED);
	CHECK_STR(fetch(rt, a, "inc", &code), DOBJ_MSG_ABORT_DEFAULT); /* broken stub */
	a2 = kit_stub("a");
	CHECK_STR(fetch(rt, a2, "inc", NULL), "1");
	CHECK_EQ_INT(dobj_rt_abort_all(rt, "by the test", NULL), 1);
	CHECK_STR(fetch(rt, a2, "inc", &code), "by the test");
	dobj_stub_free(a);
	dobj_stub_free(a2);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* reset: busy objects fail with DOBJ_MSG_RESET, idle ones are evicted
 * (their stubs still work), databases and alarms are gone, on disk too. */
static void test_reset_drops_objects_storage_and_alarms(void)
{
	dobj_rt *rt;
	dobj_stub *a, *b;
	dobj_task *slow;
	char got[256];
	int code;

	make_tmpdir();
	rt = make_kit_rt(tmpdir, -1);
	a = kit_stub("a");
	b = kit_stub("b");
	CHECK_STR(fetch(rt, a, "inc", NULL), "1");
	CHECK_STR(fetch(rt, a, "alarm 5000", NULL), "set");
	CHECK_STR(fetch(rt, b, "inc", NULL), "1");
	CHECK(db_file_exists(a));
	slow = send(b, "sleep 50");
	dobj_rt_pump(rt);
	CHECK_EQ_INT(dobj_rt_reset(rt), DOBJ_OK);
	dobj_rt_pump(rt);
	CHECK_STR(wait_body(rt, slow, &code), DOBJ_MSG_RESET);
	CHECK(!db_file_exists(a));
	CHECK(!db_file_exists(b));
	CHECK_EQ_INT(list_ids(got, sizeof(got)), 0);
	CHECK_EQ_INT(dobj_ns_open_storages(kit_ns), 0);
	{
		char *leaks = NULL; /* no alarm, no task */
		CHECK_EQ_INT(dobj_rt_leaks(rt, &leaks), DOBJ_OK);
		CHECK(leaks == NULL);
		dobj_free(leaks);
	}
	CHECK_STR(fetch(rt, a, "inc", NULL), "1"); /* fresh instance, empty storage */
	CHECK_EQ_INT(dobj_rt_advance(rt, 10000), DOBJ_OK);
	CHECK(strstr(events, "alarm") == NULL);
	dobj_stub_free(a);
	dobj_stub_free(b);
	dobj_rt_free(rt);
	/* Nothing left in the folder's schedule either. */
	rt = make_kit_rt(tmpdir, -1);
	CHECK_EQ_INT(dobj_rt_pending(rt), 0);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
	CHECK_EQ_INT(live_values, 0);
}

static void note_done(dobj_task *t, void *data)
{
	(void)t; (void)data;
	event(dobj_ns_rt(kit_ns), "done");
}

/* run_alarm: now, whatever its time; failures take the retry path. */
static void test_run_alarm_now_with_retries(void)
{
	dobj_rt *rt = make_kit_rt(NULL, -1);
	dobj_stub *a = kit_stub("a");
	dobj_task *t;
	char *leaks;

	CHECK_EQ_INT(dobj_ns_run_alarm(kit_ns, dobj_stub_id(a), &t), 0);
	CHECK(t == NULL);
	CHECK_STR(fetch(rt, a, "alarm 3600000", NULL), "set");
	alarm_failures_left = 1;
	CHECK_EQ_INT(dobj_ns_run_alarm(kit_ns, dobj_stub_id(a), &t), 1);
	CHECK_EQ_INT(dobj_task_call_kind(t), DOBJ_CALL_ALARM);
	/* A binding waits with its own done callback (Python's Call replaces
	 * it): the alarm path must not depend on the task's. */
	dobj_task_on_done(t, note_done, NULL);
	dobj_rt_run(rt, task_is_done, t);
	CHECK_EQ_INT(dobj_task_result(t, NULL, NULL, NULL), DOBJ_EUSER);
	dobj_task_unref(t);
	CHECK_STR(events, "alarm0@0 done@0 ");
	/* The failure is retried on the usual schedule. */
	CHECK_EQ_INT(dobj_rt_leaks(rt, &leaks), DOBJ_OK);
	CHECK(leaks && strstr(leaks, "open at close: 0 tasks, 1 alarm\n  alarm on KIT ") == leaks);
	CHECK(leaks && strstr(leaks, " (retry 1)") != NULL);
	dobj_free(leaks);
	CHECK_EQ_INT(dobj_rt_advance(rt, 3000), DOBJ_OK);
	CHECK(strstr(events, "alarm1@") != NULL);
	CHECK_EQ_INT(dobj_ns_run_alarm(kit_ns, dobj_stub_id(a), NULL), 0); /* ran: gone */
	CHECK_EQ_INT(dobj_rt_leaks(rt, &leaks), DOBJ_OK);
	CHECK(leaks == NULL);
	dobj_stub_free(a);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* A host function runs as a call: after the events queued before it, with
 * the instance; and never from inside a handler for the other helpers. */
static void test_stub_run_in_order_with_instance(void)
{
	dobj_rt *rt = make_kit_rt(NULL, -1);
	dobj_stub *a = kit_stub("a");
	dobj_task *inc, *run;
	int code;

	inc = send(a, "inc");
	CHECK_EQ_INT(dobj_stub_run(&run, a, tv_new(V_REQ, "fn", 0), NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_task_call_kind(run), DOBJ_CALL_HOST);
	CHECK_STR(wait_body(rt, run, &code), "fn:1");
	CHECK(dobj_task_done(inc));
	CHECK_STR(wait_body(rt, inc, NULL), "1");
	dobj_stub_free(a);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* The leak report lists tasks in flight and pending alarms with IDs. */
static void test_leak_report(void)
{
	dobj_rt *rt = make_kit_rt(NULL, -1);
	dobj_stub *a = kit_stub("a");
	dobj_task *slow;
	char *leaks, hex[DOBJ_ID_HEX_LEN + 1], want[256];

	dobj_id_to_hex(dobj_stub_id(a), hex);
	hex[DOBJ_ID_HEX_LEN] = '\0';
	CHECK_EQ_INT(dobj_rt_leaks(rt, &leaks), DOBJ_OK);
	CHECK(leaks == NULL);
	CHECK_STR(fetch(rt, a, "alarm 5000", NULL), "set");
	slow = send(a, "sleep 50");
	dobj_rt_pump(rt);
	CHECK_EQ_INT(dobj_rt_leaks(rt, &leaks), DOBJ_OK);
	snprintf(want, sizeof(want), "open at close: 1 task, 1 alarm\n  call fetch on KIT %s\n"
		"  alarm on KIT %s at +5000 ms", hex, hex);
	CHECK_STR(leaks, want);
	dobj_free(leaks);
	CHECK_STR(wait_body(rt, slow, NULL), "slept");
	dobj_stub_free(a);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

int main(void)
{
	RUN(test_advance_fires_alarms_and_eviction_in_order);
	RUN(test_list_ids_live_stored_and_alarmed);
	RUN(test_evict_and_evict_all);
	RUN(test_abort_all_fails_calls_in_flight);
	RUN(test_reset_drops_objects_storage_and_alarms);
	RUN(test_run_alarm_now_with_retries);
	RUN(test_stub_run_in_order_with_instance);
	RUN(test_leak_report);
	return DONE();
}
