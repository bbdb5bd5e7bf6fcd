/*
 * Activation off the runtime's thread: while an object's claim waits for
 * PostgreSQL (its owner row locked by the test), the runtime serves other
 * objects at once, and the waiting object's calls run afterwards in the
 * order they came.  The same for an alarm whose object is not active.
 */
#include <libpq-fe.h>
#include <time.h>

#include "testhost.h"
#include "pgtest.h"
#include "clustertest.h"

static pgtest pg;
static int alarms_ran;

static int counter_step(dobj_task *t, void *data)
{
	dobj_storage *st;
	tv *req = dobj_task_request(t);
	const void *val;
	size_t len;
	char buf[64];
	long n = 0;
	int rc;

	(void)data;
	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	if (dobj_task_call_kind(t) == DOBJ_CALL_ALARM) {
		alarms_ran++;
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	}
	if (!strncmp(req->s, "alarm ", 6)) {
		CHECK_EQ_INT(dobj_alarm_set(st, dobj_rt_wall_ms(dobj_task_rt(t)) + atof(req->s + 6)),
			DOBJ_OK);
		respond(t, 200, "set");
		return DOBJ_OK;
	}
	if (dobj_kv_get(st, "n", 1, &val, &len) == 1) {
		snprintf(buf, sizeof(buf), "%.*s", (int)len, (const char *)val);
		n = strtol(buf, NULL, 10);
	}
	if (!strcmp(req->s, "count")) {
		snprintf(buf, sizeof(buf), "%ld", ++n);
		CHECK_EQ_INT(dobj_kv_put(st, "n", 1, buf, strlen(buf)), DOBJ_OK);
	}
	respond(t, 200, "%ld", n); /* "read": no write, no round trip */
	return DOBJ_OK;
}

static dobj_rt *node(const char *dir, dobj_ns **ns)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;

	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.storage_dir = dir;
	o.idle_timeout_ms = -1;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	co.url = pg.url;
	co.node_addr = "127.0.0.1:0";
	co.grace_ms = -1;
	co.timeout_ms = 5000;
	CHECK_EQ_INT(dobj_rt_cluster(rt, &co), DOBJ_OK);
	k.name = "Counter";
	k.flags = DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM;
	k.step = counter_step;
	CHECK_EQ_INT(dobj_ns_new(ns, rt, "COUNTER", 7, "act-key", 7, &k), DOBJ_OK);
	return rt;
}

static void test_a_waiting_activation_holds_up_no_other_object_and_calls_keep_their_order(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-act"), &ns);
	dobj_stub *slow = testhost_stub(ns, "slow"), *fast;
	dobj_task *t[3], *tf;
	PGconn *locker;
	int i;

	CHECK_STR(fetch(rt, slow, "count", NULL), "1");
	dobj_stub_free(slow);
	dobj_rt_free(rt); /* slow is released: its next call claims it again */
	rt = node(dir, &ns);
	slow = testhost_stub(ns, "slow");
	fast = testhost_stub(ns, "fast");
	CHECK_STR(fetch(rt, fast, "count", NULL), "1"); /* fast is active */
	/* The test holds slow's owner row: its claim waits for it. */
	locker = owner_lock(&pg, "act-key", ns, "slow");
	for (i = 0; i < 3; i++)
		t[i] = send(slow, "count");
	dobj_rt_pump(rt);
	/* slow's calls wait at its gate; the runtime serves fast at once. */
	tf = send(fast, "read");
	dobj_rt_pump(rt);
	CHECK(dobj_task_done(tf));
	CHECK_STR(task_body(tf, NULL), "1");
	dobj_task_unref(tf);
	for (i = 0; i < 3; i++)
		CHECK(!dobj_task_done(t[i]));
	CHECK_EQ_INT(dobj_obj_blocked(dobj_task_obj(t[0])), 1); /* its input gate */
	pgtest_sql(&pg, locker, "COMMIT");
	PQfinish(locker);
	/* Then they run, in the order they came. */
	dobj_rt_run(rt, task_is_done, t[2]);
	for (i = 0; i < 3; i++) {
		char want[8];
		snprintf(want, sizeof(want), "%d", i + 2);
		CHECK_STR(task_body(t[i], NULL), want);
		dobj_task_unref(t[i]);
	}
	dobj_stub_free(slow);
	dobj_stub_free(fast);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* A runtime closed while an activation is out: the calls fail, nothing
 * hangs, nothing leaks (the sanitizers' run). */
static void test_closing_with_an_activation_out(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-act"), &ns);
	dobj_stub *s = testhost_stub(ns, "closing");
	dobj_task *t;
	PGconn *locker;
	int code;

	CHECK_STR(fetch(rt, s, "count", NULL), "1");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rt = node(dir, &ns);
	s = testhost_stub(ns, "closing");
	locker = owner_lock(&pg, "act-key", ns, "closing");
	t = send(s, "count");
	dobj_rt_pump(rt);
	CHECK(!dobj_task_done(t));
	/* The claim waits for the lock: the test lets it go while closing
	 * (from the lock's own timeout: the server ends the test's idle
	 * transaction), so the close is bounded. */
	pgtest_sql(&pg, locker, "SET idle_in_transaction_session_timeout = 300");
	dobj_rt_clear(rt);
	CHECK(dobj_task_done(t));
	task_body(t, &code);
	CHECK(code != DOBJ_OK);
	dobj_task_unref(t);
	dobj_stub_free(s);
	PQfinish(locker);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

static double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* A call sent from a timer of the runtime's (a later point of its loop). */
typedef struct later {
	dobj_stub *s;
	dobj_task *t;
	double sent, done;
} later;

static void send_later(void *data, int fired)
{
	later *l = data;

	if (fired) {
		l->sent = mono_ms();
		l->t = send(l->s, "read");
	}
}

static int later_done(void *arg)
{
	later *l = arg;

	if (l->t && dobj_task_done(l->t) && !l->done)
		l->done = mono_ms();
	return l->done > 0;
}

static void guard_fired(void *data, int fired)
{
	(void)data;
	(void)fired;
}

static int alarm_ran(void *arg)
{
	(void)arg;
	return alarms_ran > 0;
}

static void test_an_alarm_waiting_for_its_claim_holds_up_no_other_object(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-act"), &ns);
	dobj_stub *sleeper = testhost_stub(ns, "sleeper"), *fast = testhost_stub(ns, "nimble");
	later l = { fast, NULL, 0, 0 };
	dobj_timer *tm;
	dobj_id id;
	PGconn *locker;

	alarms_ran = 0;
	CHECK_STR(fetch(rt, fast, "count", NULL), "1");
	CHECK_STR(fetch(rt, sleeper, "alarm 300", NULL), "set");
	dobj_id_from_name(dobj_ns_idkey(ns), "sleeper", 7, &id);
	CHECK_EQ_INT(dobj_ns_evict(ns, &id), 1); /* released: its alarm claims it again */
	locker = owner_lock(&pg, "act-key", ns, "sleeper");
	/* (the test's server ends transactions idle for 2 s: not this one) */
	pgtest_sql(&pg, locker, "SET idle_in_transaction_session_timeout = 0");
	/* The alarm comes due at 0.3 s and its claim waits for the test's lock
	 * (up to the node's 5 s timeout); at 1.5 s a call to another object is
	 * served at once. */
	CHECK_EQ_INT(dobj_rt_timer(rt, 1500, send_later, &l, &tm), DOBJ_OK);
	dobj_rt_run(rt, later_done, &l);
	CHECK(l.done > 0);
	CHECK_STR(task_body(l.t, NULL), "1");
	CHECK(l.done - l.sent < 1000);
	CHECK_EQ_INT(alarms_ran, 0);
	/* The alarm's claim is the one waiting for the lock. */
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a "
		"USING (pid) WHERE NOT l.granted AND a.query LIKE 'INSERT INTO dobj_owner%'"), 1);
	dobj_task_unref(l.t);
	pgtest_sql(&pg, locker, "COMMIT");
	PQfinish(locker);
	/* Then it fires (a strong timer bounds the wait). */
	CHECK_EQ_INT(dobj_rt_timer(rt, 10000, guard_fired, NULL, &tm), DOBJ_OK);
	dobj_rt_run(rt, alarm_ran, NULL);
	CHECK_EQ_INT(alarms_ran, 1);
	if (alarms_ran)
		dobj_timer_cancel(rt, tm);
	dobj_stub_free(sleeper);
	dobj_stub_free(fast);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* An operator tells a node's connections apart in pg_stat_activity
 * (docs/cluster.md, "Connections"): the claim ran on an activator's. */
static void test_the_activators_connection_is_named_in_pg_stat_activity(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-act"), &ns);
	dobj_stub *s = testhost_stub(ns, "named");

	CHECK_STR(fetch(rt, s, "count", NULL), "1");
	CHECK(pgtest_sql(&pg, NULL, "SELECT count(*) FROM pg_stat_activity "
		"WHERE application_name = 'dobj activator'") >= 1);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* An owner row whose epoch was set to the largest bigint by hand: the next
 * claim (epoch + 1) cannot be made, and says why rather than PostgreSQL's
 * "bigint out of range". */
static void test_a_claim_past_the_largest_epoch_says_the_row_is_damaged(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-act"), &ns);
	dobj_stub *s = testhost_stub(ns, "maxed");
	dobj_id id;
	const char *out;
	int code;

	CHECK_STR(fetch(rt, s, "count", NULL), "1");
	CHECK_EQ_INT(dobj_id_from_name(dobj_ns_idkey(ns), "maxed", 5, &id), DOBJ_OK);
	pgtest_sqlf(&pg, NULL, "UPDATE dobj_owner SET epoch = 9223372036854775807 "
		"WHERE object_id = '\\x%s'::bytea", object_hex(ns, "maxed"));
	CHECK_EQ_INT(dobj_ns_evict(ns, &id), 1);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	out = fetch(rt, s, "count", &code);
	CHECK(code != DOBJ_OK);
	CHECK(strstr(out, "fencing epoch in dobj_owner is the largest bigint") != NULL);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

int main(void)
{
	if (pgtest_start(&pg) < 0)
		return 1;
	RUN(test_a_waiting_activation_holds_up_no_other_object_and_calls_keep_their_order);
	RUN(test_closing_with_an_activation_out);
	RUN(test_an_alarm_waiting_for_its_claim_holds_up_no_other_object);
	RUN(test_the_activators_connection_is_named_in_pg_stat_activity);
	RUN(test_a_claim_past_the_largest_epoch_says_the_row_is_damaged);
	pgtest_stop(&pg);
	CHECK_EQ_INT(live_values, 0);
	return DONE();
}
