/*
 * Cluster mode against a real PostgreSQL (tests/cluster/pgtmp.sh): the
 * schema, bad input, every acknowledged write in PostgreSQL, objects
 * restored by another node, a live owner refusing a second node, fencing
 * after a takeover, and PostgreSQL killed and restarted.
 */
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>

/* testhost.h's send() is not the socket one. */
#define send test_send
#include "testhost.h"
#include "pgtest.h"
#include "clustertest.h"
#include "cluster_int.h" /* the keys of the alarm scan (alarm_keys) */

static pgtest pg;

static int alarm_runs;
static dobj_rt *alarm_rt; /* the runtime the last alarm ran on */
static char alarm_name[64];

static int counter_step(dobj_task *t, void *data)
{
	dobj_storage *st;
	tv *req = dobj_task_request(t);
	size_t len;
	int rc;

	(void)data;
	if (dobj_task_call_kind(t) == DOBJ_CALL_ALARM) {
		const char *name = dobj_obj_name(dobj_task_obj(t), &len);
		alarm_runs++;
		alarm_rt = dobj_task_rt(t);
		snprintf(alarm_name, sizeof(alarm_name), "%.*s", name ? (int)len : 6,
			name ? name : "(none)");
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	}
	if (strncmp(req->s, "alarm ", 6))
		return counter_answer(t);
	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	CHECK_EQ_INT(dobj_alarm_set(st, dobj_rt_wall_ms(dobj_task_rt(t)) + atof(req->s + 6)), DOBJ_OK);
	respond(t, 200, "set");
	return DOBJ_OK;
}

static dobj_rt *node_new(const char *dir, dobj_cluster_opts *co, int expect)
{
	return cluster_node(&pg, dir, co, expect, "counter-key", counter_step,
		DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM);
}

/* ------------------------------------------------------------------ tests */

static void test_bad_input_fails_clearly_and_in_bounded_time(void)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	struct sockaddr_in a;
	socklen_t alen = sizeof(a);
	char url[128], dir[64];
	double t0;
	int s;

	CHECK_EQ_INT(dobj_cluster_init("postgresql://dobj@127.0.0.1/postgres?nosuch=1", 0, 0, NULL),
		DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "invalid PostgreSQL URL") != NULL);
	CHECK_EQ_INT(dobj_cluster_init("host=127.0.0.1 nosuchoption=1", 0, 0, NULL), DOBJ_EARG);
	/* Nothing listens on port 1: refused at once. */
	CHECK_EQ_INT(dobj_cluster_init("postgresql://dobj@127.0.0.1:1/postgres", 0, 0, NULL), DOBJ_ERROR);
	CHECK(strstr(dobj_error_last(), "cannot connect to PostgreSQL") != NULL);
	/* A server that accepts the connection and never answers: the wait ends. */
	s = socket(AF_INET, SOCK_STREAM, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	CHECK_EQ_INT(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	CHECK_EQ_INT(listen(s, 4), 0);
	CHECK_EQ_INT(getsockname(s, (struct sockaddr *)&a, &alen), 0);
	snprintf(url, sizeof(url), "postgresql://dobj@127.0.0.1:%d/postgres", ntohs(a.sin_port));
	t0 = testhost_now_s();
	CHECK_EQ_INT(dobj_cluster_init(url, 0, 300, NULL), DOBJ_ERROR);
	CHECK(strstr(dobj_error_last(), "no answer within 0.3 s") != NULL);
	CHECK(testhost_now_s() - t0 < 2.0);
	close(s);
	/* Options. */
	co.url = pg.url;
	co.ttl_ms = 5;
	CHECK_EQ_INT(dobj_cluster_opts_check(&co), DOBJ_EARG);
	co.ttl_ms = 0;
	co.timeout_ms = NAN;
	CHECK_EQ_INT(dobj_cluster_opts_check(&co), DOBJ_EARG);
	co.timeout_ms = 0;
	/* A node needs a storage directory, and joins before binding. */
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_cluster(rt, &co), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "storage directory") != NULL);
	CHECK_EQ_INT(dobj_rt_cluster_node(rt), 0);
	dobj_rt_free(rt);
	rt = node_new(testhost_tmpdir(dir, "dobj-cluster"), NULL, DOBJ_OK);
	CHECK(dobj_rt_cluster_node(rt) > 0);
	CHECK_EQ_INT(dobj_rt_cluster(rt, &co), DOBJ_ESTATE);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

static void test_schema_is_versioned_and_a_newer_one_refused(void)
{
	int v = 0;
	CHECK_EQ_INT(dobj_cluster_init(pg.url, 0, 0, &v), DOBJ_OK);
	CHECK_EQ_INT(v, DOBJ_CLUSTER_SCHEMA_VERSION);
	CHECK_EQ_INT(dobj_cluster_init(pg.url, 0, 0, &v), DOBJ_OK); /* idempotent */
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(*) FROM dobj_schema_version"), 1);
	pgtest_sql(&pg, NULL, "UPDATE dobj_schema_version SET version = 99");
	CHECK_EQ_INT(dobj_cluster_init(pg.url, 0, 0, &v), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "version 99, newer than this dobj's") != NULL);
	pgtest_sql(&pg, NULL, "UPDATE dobj_schema_version SET version = 5");
}

static void test_a_new_node_restores_every_acknowledged_write(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;
	long long before = pgtest_sql(&pg, NULL, "SELECT count(*) FROM dobj_wal");

	a = node_new(testhost_tmpdir(d1, "dobj-cluster"), NULL, DOBJ_OK);
	s = stub_for(a, "restore");
	CHECK_STR(fetch(a, s, "count", NULL), "1");
	CHECK_STR(fetch(a, s, "count", NULL), "2");
	CHECK_STR(fetch(a, s, "sql", NULL), "ok");
	CHECK_STR(fetch(a, s, "read", NULL), "read");
	/* One log row per step that wrote; the read cost none. */
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(*) FROM dobj_wal") - before, 3);
	dobj_stub_free(s);
	dobj_rt_free(a); /* releases the object */
	/* Another node, on an empty folder. */
	b = node_new(testhost_tmpdir(d2, "dobj-cluster"), NULL, DOBJ_OK);
	s = stub_for(b, "restore");
	CHECK_STR(fetch(b, s, "count", NULL), "3");
	CHECK_STR(fetch(b, s, "rows", NULL), "1");
	dobj_stub_free(s);
	dobj_rt_free(b);
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT max(epoch) FROM dobj_owner o WHERE ns = 'counter-key' "
		"AND EXISTS (SELECT 1 FROM dobj_wal w WHERE w.object_id = o.object_id AND w.seq = 4)"), 2);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

static void test_a_live_owner_keeps_its_object(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *sa, *sb;
	int code;

	a = node_new(testhost_tmpdir(d1, "dobj-cluster"), NULL, DOBJ_OK);
	b = node_new(testhost_tmpdir(d2, "dobj-cluster"), NULL, DOBJ_OK);
	sa = stub_for(a, "owned");
	sb = stub_for(b, "owned");
	CHECK_STR(fetch(a, sa, "count", NULL), "1");
	CHECK(strstr(fetch(b, sb, "count", &code), "is active on node") != NULL);
	CHECK(code != DOBJ_OK);
	dobj_stub_free(sb);
	CHECK_STR(fetch(a, sa, "count", NULL), "2");
	dobj_stub_free(sa);
	dobj_rt_free(a);
	sb = stub_for(b, "owned");
	CHECK_STR(fetch(b, sb, "count", NULL), "3");
	dobj_stub_free(sb);
	dobj_rt_free(b);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

static int is_dir(const char *dir, const char *sub)
{
	char path[256];
	struct stat sb;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* Processes started alike (uvicorn --workers 4) share one storage setting:
 * each node takes a folder no other node holds, the storage folder first
 * (as a lone node always did), then STORAGE/.node-2, ...; a folder is free
 * again once its node closed.  Before, the second node's bind failed: the
 * namespace folder was held by the first. */
static void test_nodes_on_one_storage_folder_each_take_a_folder_of_their_own(void)
{
	char d[64];
	dobj_rt *a, *b, *c;
	dobj_stub *s;

	testhost_tmpdir(d, "dobj-cluster");
	a = node_new(d, NULL, DOBJ_OK);
	b = node_new(d, NULL, DOBJ_OK);
	CHECK(is_dir(d, "counter-key") && is_dir(d, ".node-2/counter-key"));
	s = stub_for(b, "folders");
	CHECK_STR(fetch(b, s, "count", NULL), "1");
	dobj_stub_free(s);
	CHECK(is_dir(d, ".node-2/counter-key"));
	c = node_new(d, NULL, DOBJ_OK);
	CHECK(is_dir(d, ".node-3/counter-key"));
	dobj_rt_free(b);
	/* b's folder is free again, with its cache: the next node takes it. */
	b = node_new(d, NULL, DOBJ_OK);
	CHECK(!is_dir(d, ".node-4"));
	s = stub_for(b, "folders");
	CHECK_STR(fetch(b, s, "count", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(a);
	dobj_rt_free(b);
	dobj_rt_free(c);
	testhost_rm_rf(d);
}

static dobj_rt *plain_new(const char *dir, int expect)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	dobj_ns *ns;

	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.storage_dir = dir;
	o.idle_timeout_ms = -1;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	k.name = "Counter";
	k.flags = DOBJ_CLASS_FETCH;
	k.step = counter_step;
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "COUNTER", 7, "counter-key", 11, &k), expect);
	return rt;
}

/* A namespace folder is either a runtime's own data or a node's cache of
 * PostgreSQL's, never taken for the other.  A project that ran without the
 * cluster and is started as a node: its objects' files are not a cache, and
 * a node replaced each with PostgreSQL's state (none: deleted) when the
 * object was first called.  The other way round, a runtime without the
 * cluster on a node's cache served old copies as its own data, and what it
 * wrote never reached PostgreSQL.  Both are refused at bind, by name. */
static void test_own_data_and_a_nodes_cache_are_never_taken_for_each_other(void)
{
	char d[64], d2[64];
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_class k = { 0 };
	dobj_ns *ns;
	dobj_stub *s;

	testhost_tmpdir(d, "dobj-cluster");
	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.storage_dir = d;
	rt = plain_new(d, DOBJ_OK);
	s = stub_for(rt, "own-data");
	CHECK_STR(fetch(rt, s, "count", NULL), "1");
	CHECK_STR(fetch(rt, s, "count", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	/* As a node: refused, the data untouched. */
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	co.url = pg.url;
	co.node_addr = "127.0.0.1:0";
	CHECK_EQ_INT(dobj_rt_cluster(rt, &co), DOBJ_OK);
	k.name = "Counter";
	k.flags = DOBJ_CLASS_FETCH;
	k.step = counter_step;
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "COUNTER", 7, "counter-key", 11, &k), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "/counter-key holds the objects of a runtime without "
		"the cluster") != NULL);
	dobj_rt_free(rt);
	rt = plain_new(d, DOBJ_OK);
	s = stub_for(rt, "own-data");
	CHECK_STR(fetch(rt, s, "count", NULL), "3");
	dobj_stub_free(s);
	dobj_rt_free(rt);

	/* A node's cache, then a runtime without the cluster on it. */
	testhost_tmpdir(d2, "dobj-cluster");
	rt = node_new(d2, NULL, DOBJ_OK);
	s = stub_for(rt, "cached");
	CHECK_STR(fetch(rt, s, "count", NULL), "1");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rt = plain_new(d2, DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "/counter-key is a cluster node's cache of PostgreSQL's "
		"data") != NULL);
	dobj_rt_free(rt);
	/* The node's own folder, again as a node: its cache is used. */
	rt = node_new(d2, NULL, DOBJ_OK);
	s = stub_for(rt, "cached");
	CHECK_STR(fetch(rt, s, "count", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(d);
	testhost_rm_rf(d2);
}

static void test_a_stale_owner_is_fenced(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *sa, *sb;
	int code;

	a = node_new(testhost_tmpdir(d1, "dobj-cluster"), NULL, DOBJ_OK);
	b = node_new(testhost_tmpdir(d2, "dobj-cluster"), NULL, DOBJ_OK);
	sa = stub_for(a, "fenced");
	CHECK_STR(fetch(a, sa, "count", NULL), "1");
	/* A's lease lapses on the database's clock (as if it had been paused
	 * past it) while A itself has not noticed yet. */
	lease_lapse(&pg, dobj_rt_cluster_node(a));
	sb = stub_for(b, "fenced");
	CHECK_STR(fetch(b, sb, "count", NULL), "2");
	/* A's write is refused by the epoch, and its incarnation reset. */
	CHECK(strstr(fetch(a, sa, "count", &code), "fencing epoch") != NULL);
	CHECK(code != DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_live(dobj_rt_ns_at(a, 0)), 0);
	CHECK_STR(fetch(b, sb, "count", NULL), "3");
	dobj_stub_free(sa);
	dobj_stub_free(sb);
	dobj_rt_free(a);
	dobj_rt_free(b);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

static void test_postgres_killed_and_restarted_loses_no_acknowledged_write(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;
	int code;

	a = node_new(testhost_tmpdir(d1, "dobj-cluster"), NULL, DOBJ_OK);
	s = stub_for(a, "pgkill");
	CHECK_STR(fetch(a, s, "count", NULL), "1");
	CHECK_STR(fetch(a, s, "count", NULL), "2");
	CHECK_EQ_INT(pgtest_run("kill", pg.dir), 0);
	/* The write fails and the object is reset, as on a failed commit. */
	CHECK(strstr(fetch(a, s, "count", &code), "storage commit failed") != NULL);
	CHECK(code != DOBJ_OK);
	dobj_stub_free(s);
	CHECK_EQ_INT(pgtest_run("restart", pg.dir), 0);
	s = stub_for(a, "pgkill");
	CHECK_STR(fetch(a, s, "count", NULL), "3");
	dobj_stub_free(s);
	dobj_rt_free(a);
	b = node_new(testhost_tmpdir(d2, "dobj-cluster"), NULL, DOBJ_OK);
	s = stub_for(b, "pgkill");
	CHECK_STR(fetch(b, s, "count", NULL), "4");
	dobj_stub_free(s);
	dobj_rt_free(b);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

static int alarm_ran(void *arg)
{
	return alarm_runs >= *(int *)arg;
}

static void guard_fired(void *data, int fired)
{
	(void)data;
	(void)fired;
}

/* Run until `n` alarms ran, for at most 10 s (a strong timer keeps
 * dobj_rt_run going while only the node's own timers are left). */
static void run_alarms(dobj_rt *rt, int n)
{
	dobj_timer *guard;
	CHECK_EQ_INT(dobj_rt_timer(rt, 10000, guard_fired, NULL, &guard), DOBJ_OK);
	dobj_rt_run(rt, alarm_ran, &n);
	if (!alarm_ran(&n))
		return; /* the guard fired */
	dobj_timer_cancel(rt, guard);
}

static void test_an_alarm_fires_on_whichever_node_activates_the_object(void)
{
	char d1[64], d2[64], d3[64];
	dobj_rt *a, *b, *c;
	dobj_stub *s;

	alarm_runs = 0;
	a = node_new(testhost_tmpdir(d1, "dobj-cluster"), NULL, DOBJ_OK);
	s = stub_for(a, "alarmed");
	CHECK_STR(fetch(a, s, "alarm 60000", NULL), "set");
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(*) FROM dobj_alarm WHERE name = 'alarmed'::bytea"), 1);
	dobj_stub_free(s);
	dobj_rt_free(a);
	/* Another node activates the object: the restored alarm is its own now
	 * (here moved close, from a call on that node). */
	b = node_new(testhost_tmpdir(d2, "dobj-cluster"), NULL, DOBJ_OK);
	s = stub_for(b, "alarmed");
	CHECK_STR(fetch(b, s, "alarm 200", NULL), "set");
	run_alarms(b, 1);
	CHECK_EQ_INT(alarm_runs, 1);
	CHECK(alarm_rt == b);
	/* The run cleared the record, and the cluster's schedule with it (once
	 * the clear's append is back from PostgreSQL). */
	CHECK_EQ_INT(dobj_rt_run(b, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(*) FROM dobj_alarm WHERE name = 'alarmed'::bytea"), 0);
	/* An alarm whose node went away is found by a node that never saw the
	 * object: it claims the object, restores it and fires the alarm. */
	CHECK_STR(fetch(b, s, "alarm 300", NULL), "set");
	dobj_stub_free(s);
	dobj_rt_free(b);
	c = node_new(testhost_tmpdir(d3, "dobj-cluster"), NULL, DOBJ_OK);
	run_alarms(c, 2);
	CHECK_EQ_INT(alarm_runs, 2);
	CHECK(alarm_rt == c);
	CHECK_STR(alarm_name, "alarmed");
	CHECK_EQ_INT(dobj_rt_run(c, NULL, NULL), DOBJ_OK); /* the clear's append is back */
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(*) FROM dobj_alarm"), 0);
	dobj_rt_free(c);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
	testhost_rm_rf(d3);
}

/* PostgreSQL keeps a namespace's unique key as text: a key that is not
 * UTF-8 (a Lua string's bytes, a Python str's lone surrogate as WTF-8) is
 * refused at the bind, with the core's message.  It was bound, and the
 * node's scan for due alarms, which names the keys it serves, failed on it
 * ever after: no alarm of any namespace was found again (its claims failed
 * too, with PostgreSQL's encoding error). */
static void test_a_unique_key_that_is_not_text_is_refused_and_hides_no_alarm(void)
{
	static const char *const bad[] = { "bad\xff", "bad\xed\xa0\x80" };
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;
	dobj_class k = { 0 };
	dobj_ns *ns;
	size_t i;

	alarm_runs = 0;
	a = node_new(testhost_tmpdir(d1, "dobj-cluster"), NULL, DOBJ_OK);
	s = stub_for(a, "hidden");
	CHECK_STR(fetch(a, s, "alarm 300", NULL), "set");
	dobj_stub_free(s);
	dobj_rt_free(a);
	b = node_new(testhost_tmpdir(d2, "dobj-cluster"), NULL, DOBJ_OK);
	k.name = "Counter";
	k.flags = DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM;
	k.step = counter_step;
	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		ns = NULL;
		CHECK_EQ_INT(dobj_ns_new(&ns, b, "OTHER", 5, bad[i], strlen(bad[i]), &k), DOBJ_EARG);
		CHECK(ns == NULL);
		CHECK_STR(dobj_error_last(), "cluster: a namespace's unique key must be UTF-8 text "
			"(byte 4 is not)");
	}
	/* The binding name is the unique key when none is given. */
	CHECK_EQ_INT(dobj_ns_new(&ns, b, "bad\xff", 4, NULL, 0, &k), DOBJ_EARG);
	/* A bind refused after its key was checked (no storage directory can
	 * be named so) leaves no key in the alarm scan either. */
	CHECK_EQ_INT(dobj_ns_new(&ns, b, "OTHER", 5, "a/b", 3, &k), DOBJ_EARG);
	CHECK_EQ_INT(dobj_rt_ns_count(b), 1);
	CHECK_STR(b->cluster->alarm_keys, "{\"counter-key\"}");
	/* The alarm left by the node that went is found and fires here. */
	run_alarms(b, 1);
	CHECK_EQ_INT(alarm_runs, 1);
	CHECK_STR(alarm_name, "hidden");
	CHECK_EQ_INT(dobj_rt_run(b, NULL, NULL), DOBJ_OK);
	dobj_rt_free(b);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

static int log_calls;
static long long log_node;
static char log_msg[600];

static void on_log(void *data, long long node, const char *message)
{
	(void)data;
	log_calls++;
	log_node = node;
	snprintf(log_msg, sizeof(log_msg), "%s", message);
}

/* A node that finds its lease lapsed (as after a pause past it) says so
 * through its log hook, from the runtime's loop, and goes on as a new node. */
static void test_a_node_that_lost_its_lease_logs_it(void)
{
	char d1[64], q[200];
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_rt *a, *plain;
	dobj_rt_opts po = DOBJ_RT_OPTS_INIT;
	long long old;
	double deadline;

	co.url = pg.url;
	co.ttl_ms = 200; /* renewed every 50 ms */
	co.grace_ms = -1;
	a = node_new(testhost_tmpdir(d1, "dobj-cluster"), &co, DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_cluster_set_log(a, on_log, NULL), DOBJ_OK);
	old = dobj_rt_cluster_node(a);
	lease_lapse(&pg, old);
	log_calls = 0;
	deadline = testhost_now_s() + 10;
	while (!log_calls && testhost_now_s() < deadline) {
		struct pollfd p = { dobj_rt_fd(a), POLLIN, 0 };
		poll(&p, 1, 100);
		CHECK(dobj_rt_process(a) >= 0);
	}
	CHECK_EQ_INT(log_calls, 1);
	CHECK_EQ_INT(log_node, old);
	CHECK(dobj_rt_cluster_node(a) != old);
	CHECK(strstr(log_msg, "lost its lease") != NULL);
	snprintf(q, sizeof(q), "joined again as node %lld", dobj_rt_cluster_node(a));
	CHECK(strstr(log_msg, q) != NULL);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
	/* Not a node: nothing to log. */
	CHECK_EQ_INT(dobj_rt_new(&plain, &po), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_cluster_set_log(plain, on_log, NULL), DOBJ_ESTATE);
	dobj_rt_free(plain);
}

/* A statement that fails before it reaches the server (no connection) has
 * no SQLSTATE of its own: the one a refused statement left must not be read
 * as its answer (an append took a "23505" left there for a conflict). */
static void test_a_statement_that_never_ran_has_no_sqlstate(void)
{
	dobj__pg from = { .url = pg.url, .timeout_ms = 5000 }, c;
	const char *v[1] = { "1" };
	PGresult *r = NULL;
	int i;

	CHECK_EQ_INT(dobj__pg_init_from(&c, &from), DOBJ_OK);
	for (i = 0; i < 4; i++) { /* dobj__pg_exec, _exec_prepared, _send_prepared, _prepare */
		c.no_reconnect = 0;
		CHECK(dobj__pg_exec(&c, "SELECT 1/0", 0, NULL, NULL, NULL, 0, &r) < 0);
		CHECK_STR(c.sqlstate, "22012");
		c.no_reconnect = 1; /* the next one fails before any statement */
		dobj__pg_drop(&c);
		if (i == 0)
			CHECK(dobj__pg_exec(&c, "SELECT 1", 0, NULL, NULL, NULL, 0, &r) < 0);
		else if (i == 1)
			CHECK(dobj__pg_exec_prepared(&c, 0, "SELECT $1::int", 1, v, NULL, NULL, 0,
				&r) < 0);
		else if (i == 2)
			CHECK(dobj__pg_send_prepared(&c, 0, 1, v, NULL, NULL) < 0);
		else
			CHECK(dobj__pg_prepare(&c, 0, "SELECT $1::int", 1) < 0);
		CHECK(r == NULL);
		CHECK_STR(dobj_error_last(), "cluster: not connected to PostgreSQL");
		CHECK_STR(c.sqlstate, "");
	}
	dobj__pg_drop(&c);
	free(c.url);
}


/* ------------------------------------------------------- page capture */

static int wal_frames_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	(void)db;
	if (!strcmp(name, "main"))
		*(long long *)arg = frames;
	return SQLITE_OK;
}

/* A database in WAL mode as a cluster storage runs it (no automatic
 * checkpoint; `pragmas` more), with one table and the WAL hook writing the
 * frame count to *frames; its folder in dir, its -wal file's path in wal. */
static sqlite3 *capture_db_open(char dir[64], char wal[140], const char *pragmas,
	long long *frames)
{
	char db_path[128], sql[256];
	sqlite3 *db;

	testhost_tmpdir(dir, "dobj-capture");
	snprintf(db_path, sizeof(db_path), "%s/x.sqlite", dir);
	snprintf(wal, 140, "%s-wal", db_path);
	CHECK_EQ_INT(sqlite3_open(db_path, &db), SQLITE_OK);
	snprintf(sql, sizeof(sql), "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; %s"
		"CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)", pragmas);
	CHECK_EQ_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_wal_hook(db, wal_frames_hook, frames);
	return db;
}

/* One capture with the WAL hook's frame count and one without (the file's
 * header and size read first) from the same place: the same record, the
 * same end.  Returns the record's length (0: nothing new); *at moves on. */
static size_t capture_both_ways(int *fd, const char *wal, dobj__wal_pos *at, long long frames)
{
	unsigned char *r1 = NULL, *r2 = NULL;
	size_t l1 = 0, l2 = 0;
	dobj__wal_pos n1, n2;
	int fd2 = -1;

	CHECK_EQ_INT(dobj__wal_capture(fd, wal, at, frames, &r1, &l1, &n1), DOBJ_OK);
	CHECK_EQ_INT(dobj__wal_capture(&fd2, wal, at, -1, &r2, &l2, &n2), DOBJ_OK);
	CHECK_EQ_INT((long long)l1, (long long)l2);
	if (l1 && l2 && l1 == l2) {
		CHECK(!memcmp(r1, r2, l1));
		CHECK_EQ_INT(n1.off, n2.off);
		CHECK_EQ_INT(n1.salt1, n2.salt1);
		CHECK_EQ_INT(n1.salt2, n2.salt2);
		*at = n1;
	}
	if (fd2 >= 0)
		close(fd2);
	free(r1);
	free(r2);
	return l1;
}

/* The capture reads a commit's frames in one read when SQLite's WAL hook
 * told how many the file holds, and gets exactly what reading the file's
 * header and size first gets: after each commit, after a commit of many
 * pages, after the file starts a new generation (a checkpoint that
 * truncated it), and when the count it is given is stale (a step that
 * wrote nothing), too large, or not a whole frame past where it was. */
static void test_a_commits_pages_are_captured_alike_with_and_without_the_wal_hooks_count(void)
{
	char dir[64], wal[140];
	long long frames = -1;
	dobj__wal_pos at;
	unsigned char *rec = NULL;
	size_t len = 0;
	sqlite3 *db;
	int fd = -1, i;

	db = capture_db_open(dir, wal, "", &frames);
	memset(&at, 0, sizeof(at));
	CHECK(capture_both_ways(&fd, wal, &at, frames) > 0); /* the table */
	for (i = 0; i < 5; i++) {
		long header_reads = dobj__wal_header_reads;
		char sql[96];
		snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, randomblob(%d))", i,
			i == 3 ? 40000 : 100);
		CHECK_EQ_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
		CHECK(capture_both_ways(&fd, wal, &at, frames) > 0);
		/* The one with the count read the frames alone. */
		CHECK_EQ_INT(dobj__wal_header_reads - header_reads, 1);
	}
	/* A step that wrote nothing: the hook's count is the last commit's. */
	CHECK_EQ_INT((long long)capture_both_ways(&fd, wal, &at, frames), 0);
	/* A count past the file's end, or not a whole frame past `at`: the
	 * file is read as it is, and nothing new is found. */
	CHECK_EQ_INT(dobj__wal_capture(&fd, wal, &at, frames + 3, &rec, &len, &at), DOBJ_OK);
	CHECK_EQ_INT((long long)len, 0);
	/* A new generation: the file truncated by a checkpoint, then one
	 * commit of fewer frames than `at` is past, then more commits until the
	 * new generation passes it. */
	CHECK_EQ_INT(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL), SQLITE_OK);
	CHECK_EQ_INT(sqlite3_exec(db, "UPDATE t SET v = x'01' WHERE k = 0", NULL, NULL, NULL), SQLITE_OK);
	CHECK(capture_both_ways(&fd, wal, &at, frames) > 0);
	CHECK_EQ_INT(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL), SQLITE_OK);
	for (i = 0; i < 3; i++) {
		char sql[96];
		snprintf(sql, sizeof(sql), "INSERT INTO t VALUES (%d, randomblob(30000))", 100 + i);
		CHECK_EQ_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	}
	CHECK(capture_both_ways(&fd, wal, &at, frames) > 0);
	if (fd >= 0)
		close(fd);
	sqlite3_close(db);
	testhost_rm_rf(dir);
}

/* A transaction bigger than the page cache spills uncommitted frames into
 * the -wal file; rolled back (whole, or to a savepoint), they stay in the
 * file past the last commit, with the generation's salts.  The next commit
 * writes over them: the capture, with the hook's count and without, takes
 * that commit's pages and none of the rolled-back ones. */
static void test_frames_a_rollback_left_in_the_wal_file_are_not_captured(void)
{
	char dir[64], wal[140];
	long long frames = -1;
	dobj__wal_pos at;
	struct stat sb;
	sqlite3 *db;
	int fd = -1;

	db = capture_db_open(dir, wal, "PRAGMA cache_size=10; ", &frames);
	memset(&at, 0, sizeof(at));
	CHECK(capture_both_ways(&fd, wal, &at, frames) > 0);
	/* Spilled, then rolled back: nothing committed, nothing captured. */
	CHECK_EQ_INT(sqlite3_exec(db, "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 "
		"FROM n WHERE i < 400) INSERT INTO t SELECT i, randomblob(3000) FROM n; ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	CHECK(stat(wal, &sb) == 0 && sb.st_size > at.off + 100 * (24 + 4096LL)); /* they spilled */
	CHECK_EQ_INT((long long)capture_both_ways(&fd, wal, &at, frames), 0);
	/* One small commit over them: its pages alone (one row of 10 bytes). */
	CHECK_EQ_INT(sqlite3_exec(db, "INSERT INTO t VALUES (1, x'00112233445566778899')", NULL,
		NULL, NULL), SQLITE_OK);
	CHECK(capture_both_ways(&fd, wal, &at, frames) > 0);
	CHECK(at.off < 32 + 8 * (24 + 4096LL));
	/* A savepoint rolled back inside a transaction that commits. */
	CHECK_EQ_INT(sqlite3_exec(db, "BEGIN; INSERT INTO t VALUES (2, x'02'); SAVEPOINT s; "
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) "
		"INSERT INTO t SELECT i + 10, randomblob(3000) FROM n; "
		"ROLLBACK TO s; RELEASE s; COMMIT", NULL, NULL, NULL), SQLITE_OK);
	CHECK(capture_both_ways(&fd, wal, &at, frames) > 0);
	if (fd >= 0)
		close(fd);
	sqlite3_close(db);
	testhost_rm_rf(dir);
}

/* A Workers project whose class Old was renamed New by a migration, in
 * cluster mode on pg (its config loaded as a project's start loads it). */
static dobj_config *renamed_project(char *root)
{
	char path[256];
	dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
	dobj_config *c = NULL;
	FILE *f;

	CHECK(mkdtemp(root) != NULL);
	snprintf(path, sizeof(path), "%s/wrangler.toml", root);
	f = fopen(path, "w");
	CHECK(f != NULL);
	fputs("name = \"ren\"\n[[durable_objects.bindings]]\nname = \"C\"\nclass_name = \"New\"\n"
		"[[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = [\"Old\"]\n"
		"[[migrations]]\ntag = \"v2\"\nrenamed_classes = [{ from = \"Old\", to = \"New\" }]\n", f);
	fclose(f);
	o.path = root;
	o.env = "";
	o.cluster.url = pg.url;
	CHECK_EQ_INT(dobj_config_load(&c, &o), DOBJ_OK);
	return c;
}

/* How many rows of each table are under namespace ns. */
static long long rows_of(const char *ns)
{
	return pgtest_sqlf(&pg, NULL, "SELECT (SELECT count(*) FROM dobj_owner WHERE ns = '%s') + "
		"(SELECT count(*) FROM dobj_wal WHERE ns = '%s') + "
		"(SELECT count(*) FROM dobj_alarm WHERE ns = '%s')", ns, ns, ns);
}

/* A renamed class's objects live in PostgreSQL under its earlier name's
 * namespace: the project's start moves them to the new one (the class
 * started without them before: "lost"), in one transaction, unless rows
 * are under both names or a live node holds one of the earlier name's
 * objects (a node of the earlier version would go on serving it there). */
static void test_a_renamed_classs_objects_move_to_its_new_name_in_postgresql(void)
{
	char root[] = "/tmp/dobj-renamed-XXXXXX", cmd[64];
	dobj_config *c = renamed_project(root);
	long long node;

	CHECK(c != NULL);
	if (!c)
		return;
	/* Nothing under ren-Old: nothing to do. */
	CHECK_EQ_INT(dobj_config_move_renamed(c), DOBJ_OK);
	pgtest_sql(&pg, NULL, "INSERT INTO dobj_owner VALUES ('ren-Old', "
		"decode(repeat('ab', 32), 'hex'), 1, NULL)");
	pgtest_sql(&pg, NULL, "INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames, sum) VALUES "
		"('ren-Old', decode(repeat('ab', 32), 'hex'), 1, 1, '\\x00', '\\x00')");
	pgtest_sql(&pg, NULL, "INSERT INTO dobj_alarm VALUES ('ren-Old', "
		"decode(repeat('ab', 32), 'hex'), 1, NULL)");
	CHECK_EQ_INT(dobj_config_move_renamed(c), DOBJ_OK);
	CHECK_EQ_INT(rows_of("ren-Old"), 0);
	CHECK_EQ_INT(rows_of("ren-New"), 3);
	/* Started again: nothing left to move. */
	CHECK_EQ_INT(dobj_config_move_renamed(c), DOBJ_OK);
	CHECK_EQ_INT(rows_of("ren-New"), 3);
	/* Rows under both names: which are the class's is the user's to say. */
	pgtest_sql(&pg, NULL, "INSERT INTO dobj_owner VALUES ('ren-Old', "
		"decode(repeat('cd', 32), 'hex'), 1, NULL)");
	CHECK_EQ_INT(dobj_config_move_renamed(c), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "class New (binding C) was renamed by a migration, and "
		"PostgreSQL holds objects under both its earlier name (namespace ren-Old) and its "
		"current one (namespace ren-New)") != NULL);
	CHECK_EQ_INT(rows_of("ren-Old"), 1);
	CHECK_EQ_INT(rows_of("ren-New"), 3);
	/* A live node holds an object of the earlier name: not moved. */
	pgtest_sql(&pg, NULL, "DELETE FROM dobj_owner WHERE ns = 'ren-New'");
	pgtest_sql(&pg, NULL, "DELETE FROM dobj_wal WHERE ns = 'ren-New'");
	pgtest_sql(&pg, NULL, "DELETE FROM dobj_alarm WHERE ns = 'ren-New'");
	node = pgtest_sql(&pg, NULL, "INSERT INTO dobj_node (addr, lease_until) VALUES "
		"('127.0.0.1:1', now() + interval '1 hour') RETURNING node_id");
	pgtest_sqlf(&pg, NULL, "UPDATE dobj_owner SET node_id = %lld WHERE ns = 'ren-Old'", node);
	CHECK_EQ_INT(dobj_config_move_renamed(c), DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "holds objects of its earlier name (namespace ren-Old): a "
		"node of the project before the rename would go on serving them") != NULL);
	CHECK_EQ_INT(rows_of("ren-Old"), 1);
	/* Its lease lapsed (a dead node of the earlier version): moved. */
	pgtest_sqlf(&pg, NULL, "UPDATE dobj_node SET lease_until = now() - interval '1 s' "
		"WHERE node_id = %lld", node);
	CHECK_EQ_INT(dobj_config_move_renamed(c), DOBJ_OK);
	CHECK_EQ_INT(rows_of("ren-Old"), 0);
	CHECK_EQ_INT(rows_of("ren-New"), 1);
	pgtest_sql(&pg, NULL, "DELETE FROM dobj_owner WHERE ns = 'ren-New'");
	dobj_config_free(c);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	CHECK(system(cmd) == 0);
}

int main(void)
{
	if (pgtest_start(&pg) < 0)
		return 1;
	RUN(test_bad_input_fails_clearly_and_in_bounded_time);
	RUN(test_schema_is_versioned_and_a_newer_one_refused);
	RUN(test_a_new_node_restores_every_acknowledged_write);
	RUN(test_a_live_owner_keeps_its_object);
	RUN(test_nodes_on_one_storage_folder_each_take_a_folder_of_their_own);
	RUN(test_own_data_and_a_nodes_cache_are_never_taken_for_each_other);
	RUN(test_a_stale_owner_is_fenced);
	RUN(test_postgres_killed_and_restarted_loses_no_acknowledged_write);
	RUN(test_an_alarm_fires_on_whichever_node_activates_the_object);
	RUN(test_a_unique_key_that_is_not_text_is_refused_and_hides_no_alarm);
	RUN(test_a_node_that_lost_its_lease_logs_it);
	RUN(test_a_statement_that_never_ran_has_no_sqlstate);
	RUN(test_a_commits_pages_are_captured_alike_with_and_without_the_wal_hooks_count);
	RUN(test_frames_a_rollback_left_in_the_wal_file_are_not_captured);
	RUN(test_a_renamed_classs_objects_move_to_its_new_name_in_postgresql);
	pgtest_stop(&pg);
	CHECK_EQ_INT(live_values, 0);
	return DONE();
}
