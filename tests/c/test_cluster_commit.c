/*
 * The commit pipeline of a cluster node against a real PostgreSQL: appends
 * run on the node's committer threads and come back through the runtime's fd;
 * an object whose append waits does not hold up another object's reads or
 * writes; appends of many objects go in few transactions, each fenced on its
 * own; one object's next append waits for its previous one;
 * PostgreSQL killed while an append waits; closing with appends out; a
 * lone append on the runtime thread's own connection, cut off or late.
 *
 * An append is held up at will by locking its object's owner row from the
 * test's own connection (the append locks it FOR SHARE).
 */
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>

/* testhost.h's send() is not the socket one. */
#define send test_send
#include "testhost.h"
#include "pgtest.h"
#include "clustertest.h"
#include "cluster_int.h" /* dobj__cluster_stop, dobj__storage_alarm_peek: an alarm clear the committers cannot take */

#define KEY "commit-key"
/* The node's committer threads (DOBJ__COMMITTERS in core/src/cluster_int.h). */
#define DOBJ__TEST_COMMITTERS 8

static pgtest pg;
static dobj_ws *ws_client;  /* the client end of the last socket "ws" accepted */
static int writes;          /* "w" steps run */
static void (*in_write)(void); /* run (once) at the start of the next "w" step */
static double node_ttl_ms;  /* the next node's lease TTL (0: the default) */
static const char *node_url; /* the next node's server (NULL: pg.url) */

/* "w": add one to n and answer it; "a": the same and set the alarm an
 * hour ahead; "r": answer n; "ws": accept a WebSocket (hibernatable). */
static int step(dobj_task *t, void *data)
{
	tv *req = dobj_task_request(t);
	dobj_storage *st;
	int rc;

	(void)data;
	if (dobj_task_call_kind(t) == DOBJ_CALL_ALARM) { /* none comes due in a test */
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	}
	if (!strcmp(req->s, "ws")) {
		dobj_ws *server;
		CHECK_EQ_INT(dobj_ws_pair_new(&ws_client, &server), DOBJ_OK);
		CHECK_EQ_INT(dobj_ws_accept(dobj_task_obj(t), server, NULL, NULL, NULL, 0), DOBJ_OK);
		dobj_ws_unref(server);
		respond(t, 200, "ws");
		return DOBJ_OK;
	}
	if (!strcmp(req->s, "big")) { /* ~4.5 MiB of new pages: one log row */
		static const char sql[] = "CREATE TABLE IF NOT EXISTS big (x BLOB); "
			"INSERT INTO big SELECT randomblob(1 << 20) FROM "
			"(WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 4) "
			"SELECT i FROM c); INSERT INTO big VALUES (randomblob(1 << 19))";
		dobj_cursor *c = NULL;
		if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
			return rc;
		CHECK_EQ_INT(dobj_sql_exec(st, sql, strlen(sql), NULL, 0, &c), DOBJ_OK);
		dobj_cursor_free(c);
		respond(t, 200, "big");
		return DOBJ_OK;
	}
	writes += !strcmp(req->s, "w");
	if (in_write && !strcmp(req->s, "w")) {
		void (*fn)(void) = in_write;
		in_write = NULL;
		fn();
	}
	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	if (!strcmp(req->s, "a") &&
	    (rc = dobj_alarm_set(st, dobj_rt_wall_ms(dobj_task_rt(t)) + 3600e3)) < 0)
		return rc;
	respond(t, 200, "%ld", testhost_count(st, strcmp(req->s, "r") != 0));
	return DOBJ_OK;
}

static dobj_rt *node(const char *dir, double timeout_ms, dobj_ns **ns)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_class k = { 0 };

	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.storage_dir = dir;
	o.idle_timeout_ms = -1;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	co.url = node_url ? node_url : pg.url;
	co.node_addr = "127.0.0.1:0"; /* any free port: every worktree runs this test */
	co.timeout_ms = timeout_ms;
	co.ttl_ms = node_ttl_ms;
	CHECK_EQ_INT(dobj_rt_cluster(rt, &co), DOBJ_OK);
	k.name = "Counter";
	k.flags = DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM;
	k.step = step;
	CHECK_EQ_INT(dobj_ns_new(ns, rt, "COUNTER", 7, KEY, strlen(KEY), &k), DOBJ_OK);
	return rt;
}

/* The ID of the object named `name`, in hex (until the next call). */
/* "ns = ... AND object_id = ..." of the object named `name`. */
static const char *where(dobj_ns *ns, const char *name)
{
	static char buf[200];

	snprintf(buf, sizeof(buf), "ns = '" KEY "' AND object_id = '\\x%s'::bytea",
		object_hex(ns, name));
	return buf;
}

/* The rows of `name` at seq in the log. */
static int rows_at(dobj_ns *ns, const char *name, long long seq)
{
	return (int)pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM dobj_wal WHERE seq = %lld AND %s",
		seq, where(ns, name));
}

/* Hold up the appends of `name`: its owner row locked until unlock(). */
static PGconn *lock(dobj_ns *ns, const char *name)
{
	return owner_lock(&pg, KEY, ns, name);
}

static void unlock(PGconn *c)
{
	pgtest_sql(&pg, c, "COMMIT");
	PQfinish(c);
}

/* How many of the objects `names` have their row `seq` in the log, and in
 * how many transactions (*xacts): rows of one transaction share its id. */
static int rows_at_seq(dobj_ns *ns, char (*names)[16], int n, long long seq, int *xacts)
{
	char q[8000];
	PGconn *c = pgtest_connect(&pg);
	PGresult *r;
	int i, rows;

	snprintf(q, sizeof(q), "SELECT count(*), count(DISTINCT xmin::text) FROM dobj_wal "
		"WHERE seq = %lld AND (false", seq);
	for (i = 0; i < n; i++)
		snprintf(q + strlen(q), sizeof(q) - strlen(q), " OR (%s)", where(ns, names[i]));
	strcat(q, ")");
	r = PQexec(c, q);
	CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
	rows = atoi(PQgetvalue(r, 0, 0));
	*xacts = atoi(PQgetvalue(r, 0, 1));
	PQclear(r);
	PQfinish(c);
	return rows;
}

/* Objects <prefix>0..<prefix>n-1 (names[], stubs s[]), each activated
 * with one call `req` that answers `want`. */
static void activate(dobj_rt *rt, dobj_ns *ns, const char *prefix, int n, char (*names)[16],
	dobj_stub **s, const char *req, const char *want)
{
	for (int i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "%s%d", prefix, i);
		s[i] = testhost_stub(ns, names[i]);
		CHECK_STR(fetch(rt, s[i], req, NULL), want);
	}
}

/* ------------------------------------------------------------------ tests */

static void test_a_waiting_append_comes_back_through_the_fd_and_holds_up_no_other_object(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 2000, &ns);
	dobj_stub *slow = testhost_stub(ns, "slow"), *fast = testhost_stub(ns, "fast");
	dobj_task *ts, *tf;
	PGconn *locker;
	struct pollfd p;
	int fd = dobj_rt_fd(rt), rounds;

	CHECK(fd >= 0);
	CHECK_STR(fetch(rt, slow, "w", NULL), "1");
	CHECK_STR(fetch(rt, fast, "w", NULL), "1");
	locker = lock(ns, "slow");
	ts = send(slow, "w");
	dobj_rt_pump(rt);
	/* Its step ran and committed locally; its result waits for PostgreSQL,
	 * which waits for the lock. */
	CHECK(!dobj_task_done(ts));
	/* Meanwhile the runtime serves another object at once. */
	tf = send(fast, "r");
	dobj_rt_pump(rt);
	CHECK(dobj_task_done(tf));
	CHECK_STR(task_body(tf, NULL), "1");
	dobj_task_unref(tf);
	CHECK(!dobj_task_done(ts));
	unlock(locker);
	/* The confirmation makes the runtime's fd readable: a host's loop that
	 * only watches the fd delivers it. */
	for (rounds = 0; rounds < 20 && !dobj_task_done(ts); rounds++) {
		p.fd = fd;
		p.events = POLLIN;
		p.revents = 0;
		CHECK_EQ_INT(poll(&p, 1, 5000), 1);
		CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	}
	CHECK(dobj_task_done(ts));
	CHECK_STR(task_body(ts, NULL), "2");
	dobj_task_unref(ts);
	dobj_stub_free(slow);
	dobj_stub_free(fast);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

static int all_done(void *arg)
{
	dobj_task **t = arg;
	for (; *t; t++)
		if (!dobj_task_done(*t))
			return 0;
	return 1;
}

/* Hold up every append: the log table locked against inserts until
 * unlock(). */
static PGconn *lock_log(void)
{
	PGconn *c = pgtest_connect(&pg);

	pgtest_sql(&pg, c, "BEGIN");
	pgtest_sql(&pg, c, "LOCK TABLE dobj_wal IN SHARE MODE");
	return c;
}

#define MANY 20

static void test_appends_of_many_objects_go_in_few_transactions_and_a_fenced_one_fails_alone(void)
{
	char dir[64], names[MANY][16];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 2000, &ns);
	dobj_stub *s[MANY];
	dobj_task *t[MANY + 1] = { 0 };
	PGconn *locker;
	int i, code, xacts;

	activate(rt, ns, "g", MANY, names, s, "w", "1");
	/* g3 was taken over behind this node's back (its epoch moved on). */
	pgtest_sqlf(&pg, NULL, "UPDATE dobj_owner SET epoch = epoch + 1 WHERE %s", where(ns, "g3"));
	/* While the log is locked, each committer takes what is queued when it
	 * wakes and waits; the rest queue up and go together after. */
	locker = lock_log();
	for (i = 0; i < MANY; i++)
		t[i] = send(s[i], "w");
	dobj_rt_pump(rt);
	unlock(locker);
	CHECK_EQ_INT(dobj_rt_run(rt, all_done, t), DOBJ_OK);
	for (i = 0; i < MANY; i++) {
		if (i == 3) {
			CHECK(strstr(task_body(t[i], &code), "fencing epoch") != NULL);
			CHECK_EQ_INT(code, DOBJ_EABORTED);
		} else {
			CHECK_STR(task_body(t[i], NULL), "2");
		}
		dobj_task_unref(t[i]);
	}
	/* Only the fenced object was reset. */
	CHECK_EQ_INT(dobj_ns_live(ns), MANY - 1);
	/* Nineteen rows in at most nine transactions (the eight committers'
	 * first batches, then the rest together: DOBJ__COMMITTERS in
	 * cluster_int.h). */
	CHECK_EQ_INT(rows_at_seq(ns, names, MANY, 2, &xacts), MANY - 1);
	CHECK(xacts <= 9);
	CHECK_EQ_INT(rows_at(ns, "g3", 2), 0);
	for (i = 0; i < MANY; i++)
		dobj_stub_free(s[i]);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* The writes of one round of ready tasks (calls that arrived together)
 * append in one transaction, whatever connections are free: handed over
 * one by one, the first went alone on the runtime's connection and the
 * others each on an idle committer's (~1 row per transaction). */
static void test_the_appends_of_one_round_go_in_one_transaction(void)
{
	char dir[64], names[MANY][16];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 2000, &ns);
	dobj_stub *s[MANY];
	dobj_task *t[MANY + 1] = { 0 };
	int i, xacts;

	activate(rt, ns, "r", MANY, names, s, "w", "1");
	for (i = 0; i < MANY; i++)
		t[i] = send(s[i], "w");
	CHECK_EQ_INT(dobj_rt_run(rt, all_done, t), DOBJ_OK);
	for (i = 0; i < MANY; i++) {
		CHECK_STR(task_body(t[i], NULL), "2");
		dobj_task_unref(t[i]);
	}
	CHECK_EQ_INT(rows_at_seq(ns, names, MANY, 2, &xacts), MANY);
	CHECK_EQ_INT(xacts, 1);
	/* A round of one write (the runtime's own connection) appends as well. */
	CHECK_STR(fetch(rt, s[0], "w", NULL), "3");
	CHECK_EQ_INT(rows_at_seq(ns, names, 1, 3, &xacts), 1);
	for (i = 0; i < MANY; i++)
		dobj_stub_free(s[i]);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* Batches with and without an alarm change (two statements: the rows
 * alone, or the rows and the alarm schedules) append every row, and only
 * the alarm that was set is scheduled. */
static void test_batches_with_and_without_an_alarm_append_every_row(void)
{
	char dir[64], q[8000], names[MANY][16];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 2000, &ns);
	dobj_stub *s[MANY];
	dobj_task *t[MANY + 1] = { 0 };
	PGconn *locker;
	int i, round;

	activate(rt, ns, "b", MANY, names, s, "w", "1");
	/* Round 1: plain writes only; round 2: the 8th sets its alarm.  The
	 * log locked meanwhile: what queues up goes in batches. */
	for (round = 1; round <= 2; round++) {
		locker = lock_log();
		for (i = 0; i < MANY; i++)
			t[i] = send(s[i], round == 2 && i == 7 ? "a" : "w");
		dobj_rt_pump(rt);
		unlock(locker);
		CHECK_EQ_INT(dobj_rt_run(rt, all_done, t), DOBJ_OK);
		for (i = 0; i < MANY; i++) {
			char want[8];
			snprintf(want, sizeof(want), "%d", round + 1);
			CHECK_STR(task_body(t[i], NULL), want);
			dobj_task_unref(t[i]);
		}
	}
	snprintf(q, sizeof(q), "SELECT count(*) FROM dobj_wal WHERE seq IN (2, 3) AND (false");
	for (i = 0; i < MANY; i++)
		snprintf(q + strlen(q), sizeof(q) - strlen(q), " OR (%s)", where(ns, names[i]));
	strcat(q, ")");
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, q), 2 * MANY);
	CHECK_EQ_INT(pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM dobj_alarm WHERE %s", where(ns, names[7])), 1);
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(*) FROM dobj_alarm WHERE ns = '" KEY "'"), 1);
	for (i = 0; i < MANY; i++)
		dobj_stub_free(s[i]);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* An alarm that ran to success is cleared outside a step, in a commit of
 * its own; when that commit cannot be handed over (the node is closing),
 * the file holds a change PostgreSQL never got: the object is reset, as
 * after any failed commit, so no cache marker vouches for the file.
 * Before, the failure was ignored and the object went on. */
static void test_an_alarm_clear_that_cannot_be_appended_resets_the_object(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 2000, &ns);
	dobj_stub *s = testhost_stub(ns, "cleared");
	dobj_obj *obj;
	dobj_id id;
	int64_t when = 0;

	CHECK_STR(fetch(rt, s, "a", NULL), "1"); /* answered once appended */
	CHECK_EQ_INT(dobj_id_from_name(dobj_ns_idkey(ns), "cleared", 7, &id), DOBJ_OK);
	CHECK_EQ_INT(dobj__storage_alarm_peek(ns, &id, -1, &when), 1);
	CHECK(when > 0);
	obj = dobj__idmap_get(&ns->objs, &id);
	CHECK(obj != NULL && !obj->dead);
	/* The committers stopped, as when the node closes. */
	dobj__cluster_stop(rt->cluster);
	CHECK_EQ_INT(dobj__storage_alarm_peek(ns, &id, 0, &when), DOBJ_OK);
	obj = dobj__idmap_get(&ns->objs, &id);
	CHECK(obj == NULL || obj->dead);
	/* PostgreSQL still has the alarm: the next activation restores that
	 * state (a reset object leaves no cache marker). */
	CHECK_EQ_INT(pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM dobj_alarm WHERE %s",
		where(ns, "cleared")), 1);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* One object's next append waits until its previous one came back, on
 * whichever committer: had it gone out on another connection, the first
 * failing with the second confirmed would leave a gap in the log (and
 * release a later result before an earlier one). */
static void test_an_objects_next_append_waits_for_its_previous_one(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 500, &ns);
	dobj_stub *a = testhost_stub(ns, "one-a"), *c = testhost_stub(ns, "one-c");
	dobj_task *t[3] = { 0 };
	PGconn *blocker;
	dobj_id cid;
	int code;

	CHECK_STR(fetch(rt, a, "w", NULL), "1");
	CHECK_STR(fetch(rt, c, "w", NULL), "1");
	dobj_id_from_name(dobj_ns_idkey(ns), "one-c", 5, &cid);
	/* The first append's row (seq 2) is being written by another
	 * transaction: the append waits for it, past the node's timeout; the
	 * second (seq 3) would not wait for anything. */
	blocker = pgtest_connect(&pg);
	pgtest_sql(&pg, blocker, "BEGIN");
	pgtest_sqlf(&pg, blocker, "INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames, sum) "
		"SELECT ns, object_id, 2, epoch, '\\x00', '\\x00' FROM dobj_owner WHERE %s",
		where(ns, "one-a"));
	t[0] = send(a, "w");
	dobj_rt_pump(rt);
	/* Another object's release between them ends a batch: the two appends
	 * never go in one statement. */
	CHECK_EQ_INT(dobj_ns_evict(ns, &cid), 1);
	t[1] = send(a, "w");
	dobj_rt_pump(rt);
	CHECK_EQ_INT(dobj_rt_run(rt, all_done, t), DOBJ_OK);
	CHECK(strstr(task_body(t[0], &code), "storage commit failed") != NULL);
	CHECK(code != DOBJ_OK);
	CHECK(task_body(t[1], &code) && code != DOBJ_OK);
	pgtest_sql(&pg, blocker, "ROLLBACK");
	PQfinish(blocker);
	CHECK_EQ_INT(rows_at(ns, "one-a", 3), 0);
	dobj_task_unref(t[0]);
	dobj_task_unref(t[1]);
	/* The object was reset; what was acknowledged is there. */
	dobj_stub_free(a);
	a = testhost_stub(ns, "one-a");
	CHECK_STR(fetch(rt, a, "r", NULL), "1");
	dobj_stub_free(a);
	dobj_stub_free(c);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

static void test_postgres_killed_while_an_append_waits(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 1000, &ns);
	dobj_stub *s = testhost_stub(ns, "killed");
	dobj_task *t;
	PGconn *locker;
	int code;

	CHECK_STR(fetch(rt, s, "w", NULL), "1");
	locker = lock(ns, "killed"); /* goes with the server */
	t = send(s, "w");
	dobj_rt_pump(rt);
	CHECK(!dobj_task_done(t));
	CHECK_EQ_INT(pgtest_run("kill", pg.dir), 0);
	/* Its port stays its own until the restart below (a server another
	 * suite started meanwhile took it, and the restart failed). */
	CHECK(!pgtest_port_taken(&pg));
	PQfinish(locker);
	CHECK_EQ_INT(dobj_rt_run(rt, task_is_done, t), DOBJ_OK);
	CHECK(strstr(task_body(t, &code), "storage commit failed") != NULL);
	CHECK(code != DOBJ_OK);
	dobj_task_unref(t);
	dobj_stub_free(s);
	CHECK_EQ_INT(pgtest_run("restart", pg.dir), 0);
	/* The write that was never acknowledged is not there. */
	s = testhost_stub(ns, "killed");
	CHECK_STR(fetch(rt, s, "r", NULL), "1");
	CHECK_STR(fetch(rt, s, "w", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

static void test_closing_with_appends_out_delivers_what_was_confirmed_and_fails_the_rest(void)
{
	char dir[64], q[300];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 500, &ns);
	dobj_stub *a = testhost_stub(ns, "close-a"), *b = testhost_stub(ns, "close-b");
	dobj_task *ta, *tb;
	PGconn *locker;
	char qa[300];
	double t0;
	int code;

	snprintf(q, sizeof(q), "SELECT count(*) FROM dobj_wal WHERE seq = 2 AND %s", where(ns, "close-b"));
	snprintf(qa, sizeof(qa), "SELECT count(*) FROM dobj_wal WHERE seq = 2 AND %s",
		where(ns, "close-a"));
	CHECK_STR(fetch(rt, a, "w", NULL), "1");
	CHECK_STR(fetch(rt, b, "w", NULL), "1");
	/* b's append waits for a lock longer than the node waits for anything. */
	locker = lock(ns, "close-b");
	tb = send(b, "w");
	dobj_rt_pump(rt);
	ta = send(a, "w");
	dobj_rt_pump(rt);
	CHECK(!dobj_task_done(ta));
	CHECK(!dobj_task_done(tb));
	t0 = testhost_now_s();
	dobj_stub_free(a);
	dobj_stub_free(b);
	dobj_rt_free(rt);
	/* Bounded: the node waits for PostgreSQL at most its timeout per round
	 * trip. */
	CHECK(testhost_now_s() - t0 < 3.0);
	unlock(locker);
	CHECK(dobj_task_done(ta));
	CHECK(dobj_task_done(tb));
	/* b's write was not confirmed: not acknowledged, and not there. */
	CHECK(task_body(tb, &code) && code != DOBJ_OK);
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, q), 0);
	/* a's was sent after b's: in b's round trip or after it; acknowledged
	 * exactly when it is in PostgreSQL. */
	task_body(ta, &code);
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, qa), code == DOBJ_OK ? 1 : 0);
	dobj_task_unref(ta);
	dobj_task_unref(tb);
	testhost_rm_rf(dir);
}

static void test_closing_right_after_a_write_keeps_it(void)
{
	char dir[64], q[300];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 2000, &ns);
	dobj_stub *a = testhost_stub(ns, "close-now");
	dobj_task *t;

	snprintf(q, sizeof(q), "SELECT count(*) FROM dobj_wal WHERE seq = 2 AND %s",
		where(ns, "close-now"));
	CHECK_STR(fetch(rt, a, "w", NULL), "1");
	t = send(a, "w");
	dobj_rt_pump(rt);
	dobj_stub_free(a);
	dobj_rt_free(rt);
	/* Confirmed while closing: delivered, and in PostgreSQL. */
	CHECK(dobj_task_done(t));
	CHECK_STR(task_body(t, NULL), "2");
	dobj_task_unref(t);
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, q), 1);
	testhost_rm_rf(dir);
}

/* Until the runtime has its own connection (a committer makes it after the
 * first write and hands it over through the fd): rounds of the fd. */
static void wait_for_runtime_connection(dobj_rt *rt)
{
	const char *q = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dobj runtime'";
	struct pollfd p = { .fd = dobj_rt_fd(rt), .events = POLLIN };
	int rounds;

	for (rounds = 0; rounds < 50 && pgtest_sql(&pg, NULL, q) < 1; rounds++) {
		poll(&p, 1, 100);
		CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	}
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, q), 1);
}

/* Two writes to `s` that make its count `n` and `n` + 1, the runtime's own
 * connection made between them: the second went on that connection. */
static void write_around_runtime_connection(dobj_rt *rt, dobj_stub *s, int n)
{
	char want[16];

	snprintf(want, sizeof(want), "%d", n);
	CHECK_STR(fetch(rt, s, "w", NULL), want);
	wait_for_runtime_connection(rt);
	snprintf(want, sizeof(want), "%d", n + 1);
	CHECK_STR(fetch(rt, s, "w", NULL), want);
}

/* The backend of the runtime's connection, once it waits for a lock. */
static long long runtime_backend_waiting(void)
{
	const char *q = "SELECT coalesce(max(pid), 0) FROM pg_stat_activity WHERE "
		"application_name = 'dobj runtime' AND wait_event_type = 'Lock'";
	long long pid = 0;
	int rounds;

	for (rounds = 0; rounds < 100 && !(pid = pgtest_sql(&pg, NULL, q)); rounds++)
		poll(NULL, 0, 20);
	CHECK(pid > 0);
	return pid;
}

/* `op` sent to `s` and pumped until its append is out on the runtime's own
 * connection, waiting for a lock (the caller holds one). */
static dobj_task *send_held(dobj_rt *rt, dobj_stub *s, const char *op)
{
	dobj_task *t = send(s, op);

	dobj_rt_pump(rt);
	runtime_backend_waiting();
	return t;
}

static void test_a_lone_append_on_the_runtimes_connection_cut_off_is_sent_again_once(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	dobj_stub *s = testhost_stub(ns, "cut-off");
	PGconn *locker;
	dobj_task *t;

	write_around_runtime_connection(rt, s, 1);
	locker = lock(ns, "cut-off");
	t = send(s, "w");
	dobj_rt_pump(rt);
	CHECK(!dobj_task_done(t));
	/* The append waits on the runtime's own connection; its backend goes
	 * before it could run it. */
	CHECK_EQ_INT(pgtest_sqlf(&pg, NULL, "SELECT pg_terminate_backend(%lld)::int",
		runtime_backend_waiting()), 1);
	unlock(locker);
	/* A committer sends it again: it runs once, and is acknowledged. */
	CHECK_EQ_INT(dobj_rt_run(rt, task_is_done, t), DOBJ_OK);
	CHECK_STR(task_body(t, NULL), "3");
	dobj_task_unref(t);
	CHECK_EQ_INT(rows_at(ns, "cut-off", 3), 1);
	/* And the runtime gets a new connection of its own. */
	write_around_runtime_connection(rt, s, 4);
	/* Cut off while it sits idle: the next append finds out by sending,
	 * and goes through a committer. */
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(pg_terminate_backend(pid)) FROM "
		"pg_stat_activity WHERE application_name = 'dobj runtime'"), 1);
	CHECK_STR(fetch(rt, s, "w", NULL), "6");
	CHECK_STR(fetch(rt, s, "r", NULL), "6");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

static void test_a_lone_append_on_the_runtimes_connection_fails_at_the_nodes_timeout(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 400, &ns);
	dobj_stub *s = testhost_stub(ns, "late");
	PGconn *locker;
	dobj_task *t;
	double t0;
	int code;

	CHECK_STR(fetch(rt, s, "w", NULL), "1");
	wait_for_runtime_connection(rt);
	locker = lock(ns, "late");
	t0 = testhost_now_s();
	t = send_held(rt, s, "w");
	/* dobj_rt_run waits on the fd: the runtime's own deadline ends it. */
	CHECK_EQ_INT(dobj_rt_run(rt, task_is_done, t), DOBJ_OK);
	CHECK(testhost_now_s() - t0 < 2.0);
	CHECK(strstr(task_body(t, &code), "storage commit failed") != NULL);
	CHECK(code != DOBJ_OK);
	dobj_task_unref(t);
	unlock(locker);
	/* The object was reset to what was acknowledged. */
	dobj_stub_free(s);
	s = testhost_stub(ns, "late");
	CHECK_STR(fetch(rt, s, "r", NULL), "1");
	CHECK_STR(fetch(rt, s, "w", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* A log row of ~4.5 MiB that PostgreSQL takes 1.2 s to write (a trigger),
 * with a node timeout of 0.5 s: bounded by its size as well (0.5 s + 4.5 s
 * at 1 MiB/s, the client's wait and the server's statement_timeout), it is
 * written; it failed at 0.5 s and reset its object, which a bigger timeout
 * would have saved.  A row PostgreSQL never finishes still fails, at that
 * bound, and the connection's own bound is back after it. */
static void test_a_big_append_is_bounded_by_its_size_and_still_bounded(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 500, &ns);
	dobj_stub *s = testhost_stub(ns, "big");
	double t0, took;
	int code;

	pgtest_sql(&pg, NULL, "CREATE TABLE dobj_test_sleep (secs float8); "
		"INSERT INTO dobj_test_sleep VALUES (1.2); "
		"CREATE FUNCTION dobj_test_slow() RETURNS trigger LANGUAGE plpgsql AS $$ "
		"BEGIN IF octet_length(NEW.frames) > 4194304 THEN "
		"PERFORM pg_sleep(secs) FROM dobj_test_sleep; END IF; RETURN NEW; END $$; "
		"CREATE TRIGGER dobj_test_slow BEFORE INSERT ON dobj_wal "
		"FOR EACH ROW EXECUTE FUNCTION dobj_test_slow()");
	CHECK_STR(fetch(rt, s, "w", NULL), "1");
	t0 = testhost_now_s();
	CHECK_STR(fetch(rt, s, "big", &code), "big");
	CHECK(testhost_now_s() - t0 > 1.2);
	CHECK_EQ_INT(rows_at(ns, "big", 2), 1);
	CHECK_STR(fetch(rt, s, "w", NULL), "2");
	/* Stalled: fails at the bound, not at the 60 s the server would take. */
	pgtest_sql(&pg, NULL, "UPDATE dobj_test_sleep SET secs = 60");
	t0 = testhost_now_s();
	CHECK(strstr(fetch(rt, s, "big", &code), "storage commit failed") != NULL);
	took = testhost_now_s() - t0;
	CHECK(took > 4.5 && took < 8.0);
	CHECK_EQ_INT(rows_at(ns, "big", 4), 0);
	pgtest_sql(&pg, NULL, "DROP TRIGGER dobj_test_slow ON dobj_wal; "
		"DROP FUNCTION dobj_test_slow(); DROP TABLE dobj_test_sleep");
	/* The object was reset to what was acknowledged, and goes on. */
	dobj_stub_free(s);
	s = testhost_stub(ns, "big");
	CHECK_STR(fetch(rt, s, "r", NULL), "2");
	CHECK_STR(fetch(rt, s, "w", NULL), "3");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* A statement the server refuses on the runtime's own connection (an error,
 * the connection fine) fails its write as a committer's refusal does, even
 * after that connection once broke: it is not handed to a committer to run
 * again (only a broken connection's statement, which did not run, is). */
static void test_a_refused_append_on_the_runtimes_connection_is_not_sent_again(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	dobj_stub *s = testhost_stub(ns, "refused");
	int code;

	write_around_runtime_connection(rt, s, 1);
	/* Its connection cut off while idle: the next write goes through a
	 * committer, and the runtime gets another connection. */
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(pg_terminate_backend(pid)) FROM "
		"pg_stat_activity WHERE application_name = 'dobj runtime'"), 1);
	CHECK_STR(fetch(rt, s, "w", NULL), "3");
	write_around_runtime_connection(rt, s, 4);
	/* The server refuses the next row once. */
	pgtest_sql(&pg, NULL, "CREATE SEQUENCE test_refuse_once");
	pgtest_sql(&pg, NULL, "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
		"$$ BEGIN IF nextval('test_refuse_once') = 1 THEN "
		"RAISE EXCEPTION 'refused once by the test'; END IF; RETURN NEW; END $$");
	pgtest_sqlf(&pg, NULL, "CREATE TRIGGER test_refuse BEFORE INSERT ON dobj_wal FOR EACH ROW "
		"WHEN (NEW.seq = 6 AND NEW.ns = '" KEY "' AND NEW.object_id = '\\x%s'::bytea) "
		"EXECUTE FUNCTION test_refuse()", object_hex(ns, "refused"));
	CHECK(strstr(fetch(rt, s, "w", &code), "refused once by the test") != NULL);
	CHECK(code != DOBJ_OK);
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT last_value FROM test_refuse_once"), 1);
	pgtest_sql(&pg, NULL, "DROP TRIGGER test_refuse ON dobj_wal");
	pgtest_sql(&pg, NULL, "DROP FUNCTION test_refuse()");
	pgtest_sql(&pg, NULL, "DROP SEQUENCE test_refuse_once");
	/* The object was reset to what was acknowledged. */
	dobj_stub_free(s);
	s = testhost_stub(ns, "refused");
	CHECK_STR(fetch(rt, s, "r", NULL), "5");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* The answer to a lone append on the runtime's own connection can come in
 * two reads: its result, then (after the commit) the end of the answer.
 * The result read first was thrown away and the answer taken for a lost
 * connection: the append, written, went to a committer again, was refused
 * as a duplicate and its object reset.  A deferred trigger sends a notice
 * at the commit (which sends the result with it) and then waits. */
static void test_a_lone_appends_answer_in_two_reads_is_acknowledged_once(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	dobj_stub *s = testhost_stub(ns, "split");
	int code;

	write_around_runtime_connection(rt, s, 1);
	pgtest_sql(&pg, NULL, "CREATE FUNCTION test_split() RETURNS trigger LANGUAGE plpgsql AS "
		"$$ BEGIN RAISE NOTICE 'committing'; PERFORM pg_sleep(0.3); RETURN NULL; END $$");
	pgtest_sqlf(&pg, NULL, "CREATE CONSTRAINT TRIGGER test_split AFTER INSERT ON dobj_wal "
		"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
		"WHEN (NEW.seq = 3 AND NEW.ns = '" KEY "' AND NEW.object_id = '\\x%s'::bytea) "
		"EXECUTE FUNCTION test_split()", object_hex(ns, "split"));
	CHECK_STR(fetch(rt, s, "w", &code), "3");
	CHECK_EQ_INT(code, DOBJ_OK);
	pgtest_sql(&pg, NULL, "DROP TRIGGER test_split ON dobj_wal");
	pgtest_sql(&pg, NULL, "DROP FUNCTION test_split()");
	CHECK_EQ_INT(rows_at(ns, "split", 3), 1);
	/* Not reset: the instance goes on. */
	CHECK_STR(fetch(rt, s, "w", NULL), "4");
	CHECK_EQ_INT(dobj_ns_live(ns), 1);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* The order tasks finished in (their numbers), for the test below. */
static int done_order[4], ndone;
static PGconn *order_locker;
static dobj_rt *order_rt;

static void note_done(dobj_task *t, void *data)
{
	(void)t;
	if (ndone < 4)
		done_order[ndone++] = (int)(intptr_t)data;
}

/* Inside the later write's step: the earlier append goes through and its
 * committer posts its verdict (the node's long lease is not renewed
 * meanwhile: nothing else makes the fd readable). */
static void confirm_the_earlier_append(void)
{
	struct pollfd p = { .fd = dobj_rt_fd(order_rt), .events = POLLIN };

	unlock(order_locker);
	CHECK_EQ_INT(poll(&p, 1, 5000), 1);
}

/* Closing while an object's earlier append is back from its committer
 * (its verdict not drained yet) and its later one is out on the
 * runtime's own connection: both were confirmed, and the results go in
 * seq order (the runtime's own append was finished first, and its result
 * delivered before the earlier one's). */
static void test_closing_delivers_an_objects_results_in_seq_order(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt;
	dobj_stub *s;
	dobj_task *t2, *t3;

	node_ttl_ms = 60000;
	rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	node_ttl_ms = 0;
	s = testhost_stub(ns, "in-order");
	CHECK_STR(fetch(rt, s, "w", NULL), "1");
	wait_for_runtime_connection(rt);
	/* The next append changes the alarm: a committer's, held up. */
	order_locker = lock(ns, "in-order");
	t2 = send(s, "a");
	dobj_task_on_done(t2, note_done, (void *)(intptr_t)2);
	dobj_rt_pump(rt);
	CHECK(!dobj_task_done(t2));
	/* The one after goes out on the runtime's connection once the
	 * earlier one is back. */
	order_rt = rt;
	in_write = confirm_the_earlier_append;
	t3 = send(s, "w");
	dobj_task_on_done(t3, note_done, (void *)(intptr_t)3);
	ndone = 0;
	CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	CHECK(in_write == NULL);
	CHECK(!dobj_task_done(t2));
	CHECK(!dobj_task_done(t3));
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(ndone, 2);
	CHECK_EQ_INT(done_order[0], 2);
	CHECK_EQ_INT(done_order[1], 3);
	CHECK_STR(task_body(t2, NULL), "2");
	CHECK_STR(task_body(t3, NULL), "3");
	dobj_task_unref(t2);
	dobj_task_unref(t3);
	testhost_rm_rf(dir);
}

/* Committer backends waiting for a lock, once there are at least n. */
static void committers_waiting(int n)
{
	const char *q = "SELECT count(*) FROM pg_stat_activity WHERE "
		"application_name = 'dobj committer' AND wait_event_type = 'Lock'";
	int rounds;

	for (rounds = 0; rounds < 250 && pgtest_sql(&pg, NULL, q) < n; rounds++)
		poll(NULL, 0, 20);
	CHECK(pgtest_sql(&pg, NULL, q) >= n);
}

/* The log locked, and one "w" of s[0] .. s[DOBJ__TEST_COMMITTERS] out on
 * the runtime's connection and on every committer, each waiting for the
 * lock: what is sent next queues.  The lock's holder is returned. */
static PGconn *occupy_every_connection(dobj_rt *rt, dobj_stub **s, dobj_task **busy)
{
	PGconn *locker = lock_log();
	int i;

	busy[0] = send_held(rt, s[0], "w");
	for (i = 1; i <= DOBJ__TEST_COMMITTERS; i++) {
		busy[i] = send(s[i], "w");
		dobj_rt_pump(rt);
		committers_waiting(i);
	}
	return locker;
}

static int writes_reach(void *arg)
{
	return writes >= *(int *)arg;
}

/* An object hibernating with a socket keeps its claim (no release is
 * queued), so the unsent append of its old incarnation (epoch e) and the
 * first of its new one (epoch e + 1, the same seq: the old one was never
 * confirmed) can wait in the queue together and go in one batch.  The
 * fence lets the new one's row in; the old one must fail and the new one
 * be acknowledged, not the other way round (the rows were matched back by
 * (ns, object, seq) alone: the old write was acknowledged though it was
 * never written, and the new incarnation was reset as fenced). */
static void test_two_incarnations_same_seq_in_one_batch_are_told_apart(void)
{
	char dir[64], names[DOBJ__TEST_COMMITTERS + 1][16];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	dobj_stub *x = testhost_stub(ns, "twice"), *s[DOBJ__TEST_COMMITTERS + 1];
	dobj_task *busy[DOBJ__TEST_COMMITTERS + 2] = { 0 }, *t_old, *t_new;
	PGconn *locker;
	dobj_id xid;
	int i, code, want;

	CHECK_STR(fetch(rt, x, "w", NULL), "1");
	CHECK_STR(fetch(rt, x, "ws", NULL), "ws");
	wait_for_runtime_connection(rt);
	activate(rt, ns, "o", DOBJ__TEST_COMMITTERS + 1, names, s, "r", "0");
	/* Every insert waits: the runtime's connection and then each
	 * committer take one append each and wait. */
	locker = occupy_every_connection(rt, s, busy);
	/* The old incarnation's append: no committer is free, it queues. */
	want = writes + 1;
	t_old = send(x, "w");
	CHECK_EQ_INT(dobj_rt_run(rt, writes_reach, &want), DOBJ_OK);
	CHECK(!dobj_task_done(t_old));
	/* It hibernates (its socket keeps it this node's) and wakes as a new
	 * incarnation, restored without the unconfirmed write. */
	dobj_id_from_name(dobj_ns_idkey(ns), "twice", 5, &xid);
	CHECK_EQ_INT(dobj_ns_evict(ns, &xid), 1);
	dobj_stub_free(x);
	x = testhost_stub(ns, "twice");
	want = writes + 1;
	t_new = send(x, "w");
	CHECK_EQ_INT(dobj_rt_run(rt, writes_reach, &want), DOBJ_OK);
	CHECK(!dobj_task_done(t_new));
	unlock(locker);
	CHECK_EQ_INT(dobj_rt_run(rt, all_done, busy), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, task_is_done, t_old), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, task_is_done, t_new), DOBJ_OK);
	CHECK(strstr(task_body(t_old, &code), "fencing epoch") != NULL);
	CHECK(code != DOBJ_OK);
	CHECK_STR(task_body(t_new, &code), "2");
	CHECK_EQ_INT(code, DOBJ_OK);
	CHECK_STR(fetch(rt, x, "r", NULL), "2");
	dobj_task_unref(t_old);
	dobj_task_unref(t_new);
	for (i = 0; busy[i]; i++)
		dobj_task_unref(busy[i]);
	for (i = 0; i <= DOBJ__TEST_COMMITTERS; i++)
		dobj_stub_free(s[i]);
	dobj_stub_free(x);
	dobj_ws_unref(ws_client);
	ws_client = NULL;
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* Before the node's insert of the row (ns, object `name`, seq) runs, a
 * copy of it commits on a connection of its own (dblink), with the node's
 * epoch and checksum (`own`) or another checksum: to the node, its own
 * append sent before whose answer was lost, or another write's row. */
static void copy_row_first(dobj_ns *ns, const char *name, long long seq, int own)
{
	pgtest_sql(&pg, NULL, "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS dblink");
	pgtest_sql(&pg, NULL, "SET client_min_messages = warning; CREATE TABLE IF NOT EXISTS test_copy (object_id bytea, seq int8, "
		"own bool)");
	pgtest_sqlf(&pg, NULL, "CREATE OR REPLACE FUNCTION test_copy() RETURNS trigger "
		"LANGUAGE plpgsql AS $$ DECLARE c record; BEGIN "
		"IF current_setting('application_name') = 'test_copy' THEN RETURN NEW; END IF; "
		"SELECT * INTO c FROM test_copy WHERE object_id = NEW.object_id AND seq = NEW.seq; "
		"IF FOUND THEN PERFORM dblink_exec('%s?application_name=test_copy', format("
		"'INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames, sum) "
		"VALUES (%%L, %%L, %%s, %%s, %%L, %%L)', NEW.ns, NEW.object_id, NEW.seq, NEW.epoch, "
		"NEW.frames, CASE WHEN c.own THEN NEW.sum ELSE '\\x00'::bytea END)); END IF; "
		"RETURN NEW; END $$", pg.url);
	pgtest_sql(&pg, NULL, "SET client_min_messages = warning; DROP TRIGGER IF EXISTS test_copy ON dobj_wal");
	pgtest_sql(&pg, NULL, "CREATE TRIGGER test_copy BEFORE INSERT ON dobj_wal FOR EACH ROW "
		"EXECUTE FUNCTION test_copy()");
	pgtest_sqlf(&pg, NULL, "INSERT INTO test_copy VALUES ('\\x%s'::bytea, %lld, %s)",
		object_hex(ns, name), seq, own ? "true" : "false");
}

static void copy_rows_done(void)
{
	pgtest_sql(&pg, NULL, "DROP TRIGGER test_copy ON dobj_wal");
	pgtest_sql(&pg, NULL, "DROP FUNCTION test_copy()");
	pgtest_sql(&pg, NULL, "DROP TABLE test_copy");
}

/* An append through a committer on its own (the one-row statement) whose
 * row the log already holds: with its epoch and checksum, the row is its
 * own (sent before, committed, the answer lost) and the write is
 * acknowledged (it was refused as a duplicate key, and the object reset);
 * with another checksum the refusal stands. */
static void test_a_lone_append_finding_its_own_row_is_acknowledged(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	dobj_stub *s = testhost_stub(ns, "resent"), *o = testhost_stub(ns, "not-resent");
	int code;

	CHECK_STR(fetch(rt, s, "w", NULL), "1");
	CHECK_STR(fetch(rt, o, "w", NULL), "1");
	wait_for_runtime_connection(rt);
	copy_row_first(ns, "resent", 2, 1);
	copy_row_first(ns, "not-resent", 2, 0);
	/* The runtime's connection cut off while idle: the next append goes
	 * through a committer. */
	CHECK_EQ_INT(pgtest_sql(&pg, NULL, "SELECT count(pg_terminate_backend(pid)) FROM "
		"pg_stat_activity WHERE application_name = 'dobj runtime'"), 1);
	CHECK_STR(fetch(rt, s, "w", &code), "2");
	CHECK_EQ_INT(code, DOBJ_OK);
	CHECK_EQ_INT(rows_at(ns, "resent", 2), 1);
	CHECK(strstr(fetch(rt, o, "w", &code), "duplicate key") != NULL);
	CHECK(code != DOBJ_OK);
	copy_rows_done();
	/* Not reset: the instance goes on. */
	CHECK_STR(fetch(rt, s, "w", NULL), "3");
	CHECK_EQ_INT(dobj_ns_live(ns), 1);
	dobj_stub_free(s);
	dobj_stub_free(o);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* The same in a batch (several objects' appends in one statement, which
 * skips rows already there): with its epoch and checksum the row is its
 * own and the write acknowledged (it read as refused by the fence, and the
 * object was reset); with another checksum it stays refused. */
static void test_an_append_in_a_batch_finding_its_own_row_is_acknowledged(void)
{
	char dir[64], names[DOBJ__TEST_COMMITTERS + 1][16];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	dobj_stub *x = testhost_stub(ns, "first"), *s[DOBJ__TEST_COMMITTERS + 1];
	dobj_stub *mine = testhost_stub(ns, "b-resent"), *other = testhost_stub(ns, "b-other");
	dobj_task *busy[DOBJ__TEST_COMMITTERS + 2] = { 0 }, *two[3] = { 0 };
	PGconn *locker;
	int i, code, want;

	CHECK_STR(fetch(rt, x, "w", NULL), "1");
	wait_for_runtime_connection(rt);
	activate(rt, ns, "k", DOBJ__TEST_COMMITTERS + 1, names, s, "r", "0");
	CHECK_STR(fetch(rt, mine, "w", NULL), "1");
	CHECK_STR(fetch(rt, other, "w", NULL), "1");
	copy_row_first(ns, "b-resent", 2, 1);
	copy_row_first(ns, "b-other", 2, 0);
	/* The runtime's connection and every committer wait with one append
	 * each; the two after queue up and go in one batch. */
	locker = occupy_every_connection(rt, s, busy);
	want = writes + 2;
	two[0] = send(mine, "w");
	two[1] = send(other, "w");
	CHECK_EQ_INT(dobj_rt_run(rt, writes_reach, &want), DOBJ_OK);
	unlock(locker);
	CHECK_EQ_INT(dobj_rt_run(rt, all_done, busy), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, all_done, two), DOBJ_OK);
	CHECK_STR(task_body(two[0], &code), "2");
	CHECK_EQ_INT(code, DOBJ_OK);
	CHECK(strstr(task_body(two[1], &code), "fencing epoch") != NULL);
	CHECK(code != DOBJ_OK);
	CHECK_EQ_INT(rows_at(ns, "b-resent", 2), 1);
	copy_rows_done();
	/* Not reset: the instance goes on. */
	CHECK_STR(fetch(rt, mine, "w", NULL), "3");
	for (i = 0; busy[i]; i++)
		dobj_task_unref(busy[i]);
	dobj_task_unref(two[0]);
	dobj_task_unref(two[1]);
	for (i = 0; i <= DOBJ__TEST_COMMITTERS; i++)
		dobj_stub_free(s[i]);
	dobj_stub_free(x);
	dobj_stub_free(mine);
	dobj_stub_free(other);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

static int no_socket(void *ns)
{
	return dobj_ns_web_socket_count(ns) == 0;
}

/* A hibernating object's claim, given back when its last socket leaves
 * (the close could not wake it), goes after the appends of the
 * incarnation that hibernated: it went ahead of them (it carried no token
 * of that incarnation), released the owner row, and the fence refused
 * them though they had been answered "written" to nobody yet.  The order
 * is read back from PostgreSQL: rows and releases in the order they were
 * written. */
static void test_a_claim_given_back_goes_after_the_appends_of_its_incarnation(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	dobj_stub *x = testhost_stub(ns, "given-back");
	dobj_task *t[3] = { 0 };
	PGconn *locker;
	dobj_id xid;
	int code, want;

	CHECK_STR(fetch(rt, x, "w", NULL), "1");
	CHECK_STR(fetch(rt, x, "ws", NULL), "ws");
	wait_for_runtime_connection(rt);
	pgtest_sql(&pg, NULL, "CREATE TABLE test_order (n bigserial, what text)");
	pgtest_sql(&pg, NULL, "CREATE FUNCTION test_order() RETURNS trigger LANGUAGE plpgsql AS "
		"$$ BEGIN IF TG_TABLE_NAME = 'dobj_wal' THEN "
		"INSERT INTO test_order (what) VALUES ('seq ' || NEW.seq); "
		"ELSIF NEW.node_id IS NULL AND OLD.node_id IS NOT NULL THEN "
		"INSERT INTO test_order (what) VALUES ('release by ' || "
		"current_setting('application_name')); "
		"ELSIF NEW.epoch <> OLD.epoch THEN "
		"RAISE EXCEPTION 'claim refused by the test'; END IF; RETURN NEW; END $$");
	pgtest_sqlf(&pg, NULL, "CREATE TRIGGER test_order AFTER INSERT ON dobj_wal FOR EACH ROW "
		"WHEN (NEW.ns = '" KEY "' AND NEW.object_id = '\\x%s'::bytea) "
		"EXECUTE FUNCTION test_order()", object_hex(ns, "given-back"));
	/* The object cannot be woken again (its claim is refused), so its
	 * socket's close gives the claim back without waking it. */
	pgtest_sqlf(&pg, NULL, "CREATE TRIGGER test_order BEFORE UPDATE ON dobj_owner FOR EACH ROW "
		"WHEN (NEW.ns = '" KEY "' AND NEW.object_id = '\\x%s'::bytea) "
		"EXECUTE FUNCTION test_order()", object_hex(ns, "given-back"));
	/* Two appends: the first out on the runtime's connection, held up by
	 * the locked log; the second waits behind it. */
	locker = lock_log();
	t[0] = send_held(rt, x, "w");
	want = writes + 1;
	t[1] = send(x, "w");
	CHECK_EQ_INT(dobj_rt_run(rt, writes_reach, &want), DOBJ_OK);
	/* It hibernates (its socket keeps it this node's), then its last
	 * socket leaves. */
	dobj_id_from_name(dobj_ns_idkey(ns), "given-back", 10, &xid);
	CHECK_EQ_INT(dobj_ns_evict(ns, &xid), 1);
	CHECK_EQ_INT(dobj_ws_peer_close(ws_client, 1000, "bye", 3, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, no_socket, ns), DOBJ_OK);
	unlock(locker);
	CHECK_EQ_INT(dobj_rt_run(rt, all_done, t), DOBJ_OK);
	CHECK_STR(task_body(t[0], &code), "2");
	CHECK_EQ_INT(code, DOBJ_OK);
	CHECK_STR(task_body(t[1], &code), "3");
	CHECK_EQ_INT(code, DOBJ_OK);
	dobj_task_unref(t[0]);
	dobj_task_unref(t[1]);
	dobj_stub_free(x);
	dobj_ws_unref(ws_client);
	ws_client = NULL;
	/* Closing gives what is queued its round trip: the release too. */
	dobj_rt_free(rt);
	{
		PGconn *c = pgtest_connect(&pg);
		PGresult *r = PQexec(c, "SELECT string_agg(what, ', ' ORDER BY n) FROM test_order");
		CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
		CHECK_STR(PQgetvalue(r, 0, 0), "seq 2, seq 3, release by dobj committer");
		PQclear(r);
		PQfinish(c);
	}
	pgtest_sql(&pg, NULL, "DROP TRIGGER test_order ON dobj_wal");
	pgtest_sql(&pg, NULL, "DROP TRIGGER test_order ON dobj_owner");
	pgtest_sql(&pg, NULL, "DROP FUNCTION test_order()");
	pgtest_sql(&pg, NULL, "DROP TABLE test_order");
	testhost_rm_rf(dir);
}

/* The backends of `app` (its application_name) waiting for a lock: n. */
static void waiting_on_lock(const char *app, int n)
{
	int rounds;

	for (rounds = 0; rounds < 250 && pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM "
		"pg_stat_activity WHERE application_name = '%s' AND wait_event_type = 'Lock'",
		app) < n; rounds++)
		poll(NULL, 0, 20);
	CHECK_EQ_INT(pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM pg_stat_activity WHERE "
		"application_name = '%s' AND wait_event_type = 'Lock'", app), n);
}

static int one_socket(void *ns)
{
	return dobj_ns_web_socket_count(ns) == 1;
}

/* A room hibernates on this node with one socket (the socket keeps its
 * claim), then its last socket leaves while a new socket's call wakes it
 * again, the wake held up by the owner row (locked by the test) so that
 * both wait for it, in either order.  The room is this node's once, at
 * the next epoch: the old claim's give-back never releases the new one,
 * the new socket is the room's and keeps it here when it hibernates
 * again, and its leaving lets the room go with its next eviction. */
static void woken_as_its_last_socket_leaves(int close_first)
{
	char dir[64], name[32];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 5000, &ns);
	dobj_stub *x;
	dobj_ws *old;
	dobj_task *t;
	dobj_id id;
	PGconn *locker;
	long long epoch, me = dobj_rt_cluster_node(rt);
	int code;

	snprintf(name, sizeof(name), "woken-%d", close_first);
	x = testhost_stub(ns, name);
	dobj_id_from_name(dobj_ns_idkey(ns), name, strlen(name), &id);
	CHECK_STR(fetch(rt, x, "w", NULL), "1");
	CHECK_STR(fetch(rt, x, "ws", NULL), "ws");
	old = ws_client;
	ws_client = NULL;
	epoch = pgtest_sqlf(&pg, NULL, "SELECT epoch FROM dobj_owner WHERE %s", where(ns, name));
	CHECK_EQ_INT(dobj_ns_evict(ns, &id), 1);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM dobj_owner WHERE %s AND "
		"node_id = %lld AND epoch = %lld", where(ns, name), me, epoch), 1);
	locker = lock(ns, name);
	if (close_first) {
		CHECK_EQ_INT(dobj_ws_peer_close(old, 1000, "bye", 3, 1), DOBJ_OK);
		dobj_rt_pump(rt);
		waiting_on_lock("dobj activator", 1);
		t = send(x, "ws");
		dobj_rt_pump(rt);
	} else {
		t = send(x, "ws");
		dobj_rt_pump(rt);
		waiting_on_lock("dobj activator", 1);
		CHECK_EQ_INT(dobj_ws_peer_close(old, 1000, "bye", 3, 1), DOBJ_OK);
		dobj_rt_pump(rt);
	}
	unlock(locker);
	CHECK_EQ_INT(dobj_rt_run(rt, task_is_done, t), DOBJ_OK);
	CHECK_STR(task_body(t, &code), "ws");
	CHECK_EQ_INT(code, DOBJ_OK);
	dobj_task_unref(t);
	CHECK_EQ_INT(dobj_rt_run(rt, one_socket, ns), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM dobj_owner WHERE %s AND "
		"node_id = %lld AND epoch = %lld", where(ns, name), me, epoch + 1), 1);
	/* It hibernates again: the new socket keeps it here. */
	CHECK_EQ_INT(dobj_ns_evict(ns, &id), 1);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM dobj_owner WHERE %s AND "
		"node_id = %lld AND epoch = %lld", where(ns, name), me, epoch + 1), 1);
	CHECK_EQ_INT(dobj_ns_web_socket_count(ns), 1);
	CHECK_STR(fetch(rt, x, "r", NULL), "1");
	/* Its last socket leaves (waking it once more); it goes with the next
	 * eviction. */
	CHECK_EQ_INT(dobj_ws_peer_close(ws_client, 1000, "bye", 3, 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, no_socket, ns), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_evict(ns, &id), 1);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	dobj_ws_unref(old);
	dobj_ws_unref(ws_client);
	ws_client = NULL;
	dobj_stub_free(x);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

static void test_a_hibernating_room_woken_as_its_last_socket_leaves_keeps_one_owner(void)
{
	woken_as_its_last_socket_leaves(0);
	woken_as_its_last_socket_leaves(1);
}

/* A host that waits for a signal on its own thread (a signalfd, sigwait:
 * dobj-lua dev) blocks it there after the node started: the node's threads
 * must not take it, with its default action, in its place. */
static void test_the_nodes_threads_take_no_signal(void)
{
	char dir[64];
	dobj_ns *ns;
	dobj_rt *rt = node(testhost_tmpdir(dir, "dobj-commit"), 2000, &ns);
	struct timespec wait = { 10, 0 };
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	CHECK_EQ_INT(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
	CHECK_EQ_INT(kill(getpid(), SIGUSR1), 0);
	CHECK_EQ_INT(sigtimedwait(&set, NULL, &wait), SIGUSR1);
	CHECK_EQ_INT(pthread_sigmask(SIG_UNBLOCK, &set, NULL), 0);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

/* The node's lease deadline on the database's clock, in ms. */
static long long lease_until_ms(long long node)
{
	return pgtest_sqlf(&pg, NULL, "SELECT (extract(epoch FROM lease_until) * 1000)::bigint "
		"FROM dobj_node WHERE node_id = %lld", node);
}

/*
 * A node whose server refuses it more connections (max_connections, or its
 * role's limit, taken by other nodes, workers and clients: a role's limit
 * here) goes on with those it has.  Its lease is renewed on the connection
 * it joined on (made lazily, the lease keeper's own was refused: the node
 * lost its lease and every object), and committers that cannot connect
 * leave their appends to those that did (they failed them: the objects were
 * reset for want of a connection the node did not need).
 */
static void test_a_node_at_its_connection_limit_keeps_its_lease_and_commits_every_write(void)
{
	char dir[64], names[MANY][16], url[300];
	const char *at = strchr(pg.url, '@');
	PGconn *held[32], *locker;
	dobj_task *t[MANY + 1] = { 0 };
	dobj_stub *s[MANY];
	long long node_id, until;
	dobj_ns *ns;
	dobj_rt *rt;
	int i, nheld = 0;

	CHECK(at != NULL);
	pgtest_sql(&pg, NULL, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
		"'capped') THEN CREATE ROLE capped LOGIN; END IF; END $$");
	pgtest_sql(&pg, NULL, "ALTER ROLE capped CONNECTION LIMIT 8");
	pgtest_sql(&pg, NULL, "GRANT CREATE ON SCHEMA public TO capped");
	pgtest_sql(&pg, NULL, "GRANT ALL ON ALL TABLES IN SCHEMA public TO capped");
	snprintf(url, sizeof(url), "postgresql://capped%s", at);
	node_url = url;
	node_ttl_ms = 2000; /* renewed every 0.5 s, the first after the slots are taken */
	rt = node(testhost_tmpdir(dir, "dobj-commit"), 2000, &ns);
	node_url = NULL;
	node_ttl_ms = 0;
	node_id = dobj_rt_cluster_node(rt);
	activate(rt, ns, "cap", MANY, names, s, "w", "1");
	/* Every connection the role has left is taken. */
	while (nheld < 32) {
		PGconn *c = PQconnectdb(url);
		if (PQstatus(c) != CONNECTION_OK) {
			PQfinish(c);
			break;
		}
		held[nheld++] = c;
	}
	CHECK(nheld < 32);
	/* Rounds of writes while the log is locked: the connected committer
	 * waits with the first round's batch, the others are woken for the
	 * next ones. */
	locker = lock_log();
	for (i = 0; i < MANY; i++) {
		t[i] = send(s[i], "w");
		if (i % 5 == 4)
			dobj_rt_pump(rt);
	}
	usleep(200 * 1000);
	unlock(locker);
	CHECK_EQ_INT(dobj_rt_run(rt, all_done, t), DOBJ_OK);
	for (i = 0; i < MANY; i++) {
		CHECK_STR(task_body(t[i], NULL), "2");
		dobj_task_unref(t[i]);
	}
	CHECK_EQ_INT(dobj_ns_live(ns), MANY);
	/* The lease moves on meanwhile, and the objects go on. */
	until = lease_until_ms(node_id);
	usleep(1200 * 1000);
	CHECK(lease_until_ms(node_id) > until);
	for (i = 0; i < MANY; i++)
		CHECK_STR(fetch(rt, s[i], "w", NULL), "3");
	CHECK_EQ_INT(dobj_ns_live(ns), MANY);
	while (nheld > 0)
		PQfinish(held[--nheld]);
	for (i = 0; i < MANY; i++)
		dobj_stub_free(s[i]);
	dobj_rt_free(rt);
	testhost_rm_rf(dir);
}

int main(void)
{
	if (pgtest_start(&pg) < 0)
		return 1;
	RUN(test_a_waiting_append_comes_back_through_the_fd_and_holds_up_no_other_object);
	RUN(test_appends_of_many_objects_go_in_few_transactions_and_a_fenced_one_fails_alone);
	RUN(test_the_appends_of_one_round_go_in_one_transaction);
	RUN(test_batches_with_and_without_an_alarm_append_every_row);
	RUN(test_an_alarm_clear_that_cannot_be_appended_resets_the_object);
	RUN(test_an_objects_next_append_waits_for_its_previous_one);
	RUN(test_postgres_killed_while_an_append_waits);
	RUN(test_closing_with_appends_out_delivers_what_was_confirmed_and_fails_the_rest);
	RUN(test_closing_right_after_a_write_keeps_it);
	RUN(test_the_nodes_threads_take_no_signal);
	RUN(test_a_lone_append_on_the_runtimes_connection_cut_off_is_sent_again_once);
	RUN(test_a_lone_append_on_the_runtimes_connection_fails_at_the_nodes_timeout);
	RUN(test_two_incarnations_same_seq_in_one_batch_are_told_apart);
	RUN(test_a_refused_append_on_the_runtimes_connection_is_not_sent_again);
	RUN(test_a_big_append_is_bounded_by_its_size_and_still_bounded);
	RUN(test_a_lone_appends_answer_in_two_reads_is_acknowledged_once);
	RUN(test_closing_delivers_an_objects_results_in_seq_order);
	RUN(test_a_lone_append_finding_its_own_row_is_acknowledged);
	RUN(test_an_append_in_a_batch_finding_its_own_row_is_acknowledged);
	RUN(test_a_claim_given_back_goes_after_the_appends_of_its_incarnation);
	RUN(test_a_hibernating_room_woken_as_its_last_socket_leaves_keeps_one_owner);
	RUN(test_a_node_at_its_connection_limit_keeps_its_lease_and_commits_every_write);
	pgtest_stop(&pg);
	CHECK_EQ_INT(live_values, 0);
	return DONE();
}
