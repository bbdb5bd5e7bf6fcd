/*
 * Storage: key-value and SQL on SQLite in workerd's layout, the output gate
 * (writes committed before a step's results are delivered), aborts that
 * discard uncommitted writes, failed commits, alarms and eviction.
 */
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testhost.h"
#include "internal.h" /* the tests reach a stub's object directly */

static dobj_obj *obj_of(dobj_stub *s)
{
	return s->obj;
}

static dobj_ns *store_ns;
static int constructions;
static int alarm_failures_left;
static double alarm_times[16];
static int alarm_retries[16];
static int alarm_runs;
static double alarm_seen_get = -2;
static int alarm_early;

static int store_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	(void)obj; (void)data; (void)error;
	constructions++;
	*instance = tv_new(V_INST, NULL, 0);
	return DOBJ_OK;
}

/* A block_concurrency_while body: set an alarm 10 ms away, wait 50 ms
 * (the alarm's call queues up behind the gate), then delete the alarm
 * ("delete") or move it 1 s on ("move"). */
static int block_alarm_step(dobj_task *t, void *data)
{
	tv *stt = dobj_task_host(t);
	dobj_storage *st;
	double now = dobj__wall_ms(dobj_task_rt(t));

	(void)data;
	CHECK_EQ_INT(dobj_obj_storage(dobj_task_obj(t), &st), DOBJ_OK);
	if (stt->pc == 0) {
		stt->pc = 1;
		CHECK_EQ_INT(dobj_alarm_set(st, now + 10), DOBJ_OK);
		sleep_then_wake(t, 50);
		return DOBJ_PENDING;
	}
	if (!strcmp(stt->s, "delete"))
		CHECK_EQ_INT(dobj_alarm_delete(st), DOBJ_OK);
	else
		CHECK_EQ_INT(dobj_alarm_set(st, now + 1000), DOBJ_OK);
	dobj_task_return(t, NULL);
	return DOBJ_OK;
}

static int store_step(dobj_task *t, void *data)
{
	dobj_obj *obj = dobj_task_obj(t);
	dobj_storage *st;
	tv *req = dobj_task_request(t);
	char cmd[32] = "", a[64] = "", b[64] = "";
	const void *val;
	size_t len;
	int rc;

	(void)data;
	if ((rc = dobj_obj_storage(obj, &st)) < 0)
		return rc;
	if (dobj_task_call_kind(t) == DOBJ_CALL_ALARM) {
		double when, got;
		int retry;
		CHECK_EQ_INT(dobj_task_alarm_info(t, &when, &retry), DOBJ_OK);
		if (alarm_runs < 16) {
			alarm_times[alarm_runs] = dobj_rt_now_ms(dobj_task_rt(t));
			alarm_retries[alarm_runs] = retry;
		}
		alarm_runs++;
		alarm_early += dobj__wall_ms(dobj_task_rt(t)) < when; /* never early */
		alarm_seen_get = dobj_alarm_get(st, &got) ? got : -1;
		if (alarm_failures_left > 0) {
			alarm_failures_left--;
			dobj_task_raise(t, DOBJ_EUSER, "alarm failed", NULL);
			return DOBJ_OK;
		}
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	}
	sscanf(req->s, "%31s %63s %63s", cmd, a, b);
	if (!strcmp(cmd, "put") || !strcmp(cmd, "putabort")) {
		CHECK_EQ_INT(dobj_kv_put(st, a, strlen(a), b, strlen(b)), DOBJ_OK);
		if (!strcmp(cmd, "putabort")) {
			dobj_obj_abort(obj, DOBJ_EABORTED, "aborted after put", NULL);
			return DOBJ_OK;
		}
		respond(t, 200, "ok");
	} else if (!strcmp(cmd, "get")) {
		rc = dobj_kv_get(st, a, strlen(a), &val, &len);
		if (rc == 1)
			respond(t, 200, "%.*s", (int)len, (const char *)val);
		else
			respond(t, 404, "(none)");
	} else if (!strcmp(cmd, "count")) {
		respond(t, 200, "%ld", testhost_count(st, 1));
	} else if (!strcmp(cmd, "fkfail")) {
		/* A deferred foreign key violation only shows at COMMIT. */
		static const char q[] =
			"CREATE TABLE IF NOT EXISTS p (id INTEGER PRIMARY KEY);"
			"CREATE TABLE IF NOT EXISTS c (pid INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);"
			"INSERT INTO c VALUES (42)";
		dobj_cursor *c = NULL;
		CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_OK);
		dobj_cursor_free(c);
		CHECK_EQ_INT(dobj_kv_put(st, "lost", 4, "x", 1), DOBJ_OK);
		respond(t, 200, "should not arrive");
	} else if (!strcmp(cmd, "txnspan")) {
		/* An explicit transaction open across a suspension, then more writes. */
		tv *stt = dobj_task_host(t);
		if (!stt) {
			stt = tv_new(V_STATE, NULL, 0);
			dobj_task_set_host(t, stt);
		}
		if (stt->pc == 0) {
			stt->pc = 1;
			CHECK_EQ_INT(dobj_txn_begin(st), DOBJ_OK);
			CHECK_EQ_INT(dobj_kv_put(st, "in-txn", 6, "1", 1), DOBJ_OK);
			sleep_then_wake(t, 5);
			return DOBJ_PENDING;
		}
		CHECK_EQ_INT(dobj_txn_commit(st), DOBJ_OK);
		CHECK_EQ_INT(dobj_kv_put(st, "after-txn", 9, "2", 1), DOBJ_OK);
		respond(t, 200, "ok");
	} else if (!strcmp(cmd, "alarmabort")) {
		/* A set_alarm whose step never commits. */
		CHECK_EQ_INT(dobj_alarm_set(st, atof(a)), DOBJ_OK);
		dobj_obj_abort(obj, DOBJ_EABORTED, "aborted after set_alarm", NULL);
		return DOBJ_OK;
	} else if (!strcmp(cmd, "blockalarm")) {
		/* The alarm comes due while the object's gate is closed, then the
		 * block deletes it or moves it (block_alarm_step). */
		CHECK_EQ_INT(dobj_task_spawn(NULL, dobj_task_rt(t), obj, DOBJ_TASK_BLOCK,
			block_alarm_step, NULL, tv_new(V_STATE, a, 0), NULL, NULL), DOBJ_OK);
		respond(t, 200, "blocked");
	} else if (!strcmp(cmd, "alarm")) {
		rc = dobj_alarm_set(st, atof(a));
		if (rc < 0) {
			dobj_task_raise(t, rc, dobj_error_last(), NULL);
			return DOBJ_OK;
		}
		respond(t, 200, "set");
	} else {
		dobj_task_raise(t, DOBJ_EARG, "unknown command", NULL);
	}
	return DOBJ_OK;
}

static dobj_rt *make_store_rt(const char *dir, unsigned flags, double idle_ms)
{
	dobj_class k = { 0 };
	dobj_rt *rt;

	k.name = "Store";
	k.flags = flags;
	k.construct = store_construct;
	k.step = store_step;
	rt = testhost_storage_rt(dir, idle_ms, &k, "STORE", "store-key", &store_ns);
	constructions = 0;
	return rt;
}

static dobj_stub *store_stub(const char *name)
{
	return testhost_stub(store_ns, name);
}

static char tmpdir[64];
#define make_tmpdir() testhost_tmpdir(tmpdir, "dobj-test")
#define rm_rf testhost_rm_rf

/* ------------------------------------------------------------------ tests */

static int collect(void *arg, const char *key, size_t klen, const void *v, size_t vlen)
{
	char *out = arg;
	size_t n = strlen(out);
	(void)v;
	snprintf(out + n, 512 - n, "%.*s=%zu,", (int)klen, key, vlen);
	return 0;
}

/* Key-value calls straight on an object's storage, outside any step. */
static void test_kv_api(void)
{
	dobj_rt *rt = make_store_rt(NULL, DOBJ_CLASS_FETCH, -1);
	dobj_stub *s = store_stub("kv");
	dobj_storage *st;
	dobj_kv_list_opts o = DOBJ_KV_LIST_OPTS_INIT;
	char out[512] = "", big[3000];
	const void *v;
	size_t len;
	const char *keys[] = { "b", "a", "ab", "\xc3\xa9", "z", "a\0x" };
	size_t lens[] = { 1, 1, 2, 2, 1, 3 };
	size_t i;

	CHECK_STR(fetch(rt, s, "put x 1", NULL), "ok"); /* makes the object */
	CHECK_EQ_INT(dobj_obj_storage(obj_of(s), &st), DOBJ_OK);
	for (i = 0; i < 6; i++)
		CHECK_EQ_INT(dobj_kv_put(st, keys[i], lens[i], "vv", 2), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_get(st, "a\0x", 3, &v, &len), 1);
	CHECK_EQ_INT(len, 2);
	CHECK_EQ_INT(dobj_kv_get(st, "a\0y", 3, &v, &len), 0);
	CHECK_EQ_INT(dobj_kv_list(st, NULL, collect, out), DOBJ_OK);
	/* UTF-8 byte order: "a" < "a\0x" < "ab" < "b" < "x" < "z" < "é" */
	CHECK(memcmp(out, "a=2,a", 5) == 0);
	CHECK(strstr(out, ",ab=2,b=2,x=1,z=2,\xc3\xa9=2,") != NULL);
	out[0] = 0; o.prefix = "a"; o.prefix_len = 1;
	CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_OK);
	CHECK_STR(out, "a=2,a=2,ab=2,"); /* %.*s stops at the NUL of "a\0x" */
	out[0] = 0; o = (dobj_kv_list_opts)DOBJ_KV_LIST_OPTS_INIT;
	o.start = "ab"; o.start_len = 2; o.end = "z"; o.end_len = 1; o.reverse = 1; o.limit = 2;
	CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_OK);
	CHECK_STR(out, "x=1,b=2,");
	out[0] = 0; o = (dobj_kv_list_opts)DOBJ_KV_LIST_OPTS_INIT;
	o.start_after = "b"; o.start_after_len = 1;
	CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_OK);
	CHECK_STR(out, "x=1,z=2,\xc3\xa9=2,");
	o.start = "a"; o.start_len = 1;
	CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "list() cannot be called with both start and startAfter values.");
	o = (dobj_kv_list_opts)DOBJ_KV_LIST_OPTS_INIT; o.limit = 0;
	CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "List limit must be positive.");
	/* A bound's length past INT_MAX (SQLite's int) is refused before it is
	 * read: it neither wraps to a short bound nor turns negative (read to
	 * a NUL).  The bytes are never read, so "a" stands for them. */
	{
		size_t huge[] = { (size_t)INT_MAX + 1, (size_t)INT_MAX + 2, SIZE_MAX,
			(size_t)(SIZE_MAX > 0xFFFFFFFFu ? ((size_t)1 << 31 << 1) + 1 : SIZE_MAX) };
		for (i = 0; i < sizeof(huge) / sizeof(huge[0]); i++) {
			o = (dobj_kv_list_opts)DOBJ_KV_LIST_OPTS_INIT;
			o.start = "a"; o.start_len = huge[i];
			CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_EARG);
			snprintf(big, sizeof(big), "list() start is too large (%zu bytes)", huge[i]);
			CHECK_STR(dobj_error_last(), big);
			o = (dobj_kv_list_opts)DOBJ_KV_LIST_OPTS_INIT;
			o.start_after = "a"; o.start_after_len = huge[i];
			CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_EARG);
			CHECK(strstr(dobj_error_last(), "list() startAfter is too large") != NULL);
			o = (dobj_kv_list_opts)DOBJ_KV_LIST_OPTS_INIT;
			o.end = "a"; o.end_len = huge[i];
			CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_EARG);
			CHECK(strstr(dobj_error_last(), "list() end is too large") != NULL);
			o = (dobj_kv_list_opts)DOBJ_KV_LIST_OPTS_INIT;
			o.prefix = "a"; o.prefix_len = huge[i];
			CHECK_EQ_INT(dobj_kv_list(st, &o, collect, out), DOBJ_EARG);
		}
	}
	CHECK_EQ_INT(dobj_kv_delete(st, "b", 1), 1);
	CHECK_EQ_INT(dobj_kv_delete(st, "b", 1), 0);
	memset(big, 'k', sizeof(big));
	CHECK_EQ_INT(dobj_kv_put(st, big, 2049, "v", 1), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "Keys cannot be larger than 2048 bytes. A key of size 2049 was provided.");
	CHECK_EQ_INT(dobj_kv_put(st, big, 2048, "v", 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_check_value(131073), DOBJ_EARG);
	CHECK_EQ_INT(dobj_kv_check_value(131072), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_check_count(129, "get"), DOBJ_EARG);
	CHECK_EQ_INT(dobj_kv_check_count(128, "get"), DOBJ_OK);
	/* Transactions nest; rollback discards only the inner writes. */
	CHECK_EQ_INT(dobj_txn_begin(st), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_put(st, "t1", 2, "1", 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_begin(st), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_put(st, "t2", 2, "2", 1), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_get(st, "t2", 2, &v, &len), 1);
	CHECK_EQ_INT(dobj_kv_delete_all(st), DOBJ_ESTATE);
	CHECK_STR(dobj_error_last(), "Cannot call deleteAll() within a transaction");
	CHECK_EQ_INT(dobj_txn_rollback(st), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_commit(st), DOBJ_OK);
	CHECK_EQ_INT(dobj_txn_commit(st), DOBJ_ESTATE);
	CHECK_EQ_INT(dobj_kv_get(st, "t1", 2, &v, &len), 1);
	CHECK_EQ_INT(dobj_kv_get(st, "t2", 2, &v, &len), 0);
	CHECK_EQ_INT(dobj_kv_delete_all(st), DOBJ_OK);
	out[0] = 0;
	CHECK_EQ_INT(dobj_kv_list(st, NULL, collect, out), DOBJ_OK);
	CHECK_STR(out, "");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void test_sql_api(void)
{
	dobj_rt *rt = make_store_rt(NULL, DOBJ_CLASS_FETCH, -1);
	dobj_stub *s = store_stub("sql");
	dobj_storage *st;
	dobj_cursor *c;
	dobj_sql_value args[3] = { { DOBJ_SQL_TEXT, 0, 0, "alice", 5 }, { DOBJ_SQL_INT, 30, 0, 0, 0 },
		{ DOBJ_SQL_BLOB, 0, 0, "\0\1", 2 } };
	const char *q;

	CHECK_STR(fetch(rt, s, "put x 1", NULL), "ok");
	CHECK_EQ_INT(dobj_obj_storage(obj_of(s), &st), DOBJ_OK);
	q = "CREATE TABLE people (name TEXT, age INTEGER, pic BLOB); INSERT INTO people VALUES (?, ?, ?)";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), args, 3, &c), DOBJ_OK);
	CHECK_EQ_INT(dobj_cursor_rows_written(c), 1);
	dobj_cursor_free(c);
	q = "SELECT name, age, pic, 1.5 AS x, NULL AS n FROM people";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_OK);
	CHECK_EQ_INT(dobj_cursor_rows(c), 1);
	CHECK_EQ_INT(dobj_cursor_columns(c), 5);
	CHECK_STR(dobj_cursor_column_name(c, 3), "x");
	CHECK_STR(dobj_cursor_cell(c, 0, 0)->p, "alice");
	CHECK_EQ_INT(dobj_cursor_cell(c, 0, 1)->i, 30);
	CHECK_EQ_INT(dobj_cursor_cell(c, 0, 2)->type, DOBJ_SQL_BLOB);
	CHECK_EQ_INT(dobj_cursor_cell(c, 0, 2)->len, 2);
	CHECK(dobj_cursor_cell(c, 0, 3)->d == 1.5);
	CHECK_EQ_INT(dobj_cursor_cell(c, 0, 4)->type, DOBJ_SQL_NULL);
	CHECK(dobj_cursor_cell(c, 1, 0) == NULL);
	CHECK(dobj_cursor_rows_read(c) >= 1);
	dobj_cursor_free(c);
	CHECK(dobj_sql_database_size(st) > 0);
	q = "BEGIN";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "transaction") != NULL);
	q = "SAVEPOINT x";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	q = "SELECT * FROM _cf_KV";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "_cf_KV") != NULL);
	q = "DROP TABLE _cf_KV";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	q = "CREATE TABLE _cf_mine (x)";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	q = "ATTACH DATABASE '/tmp/x.db' AS x";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	q = "PRAGMA journal_mode=DELETE";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	q = "SELECT ?";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), args, 2, &c), DOBJ_EARG);
	q = "SELEC nonsense";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	/* A NUL, which SQLite takes for the end: refused, nothing run (one at
	 * the end, or first, spun the runtime's thread for good). */
	q = "INSERT INTO people (name) VALUES ('nul');\0";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q) + 1, NULL, 0, &c), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "SQL text cannot contain a NUL character (byte 42)");
	CHECK_EQ_INT(dobj_sql_exec(st, "\0", 1, NULL, 0, &c), DOBJ_EARG);
	CHECK_EQ_INT(dobj_sql_exec(st, "SELECT 1\0; DROP TABLE people", 29, NULL, 0, &c), DOBJ_EARG);
	q = "SELECT count(*) FROM people";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_OK);
	CHECK_EQ_INT(dobj_cursor_cell(c, 0, 0)->i, 1);
	dobj_cursor_free(c);
	/* Lengths SQLite cannot take (an int, or past its limit): refused, the
	 * bytes never read (these buffers are short), no binding left NULL. */
	CHECK_EQ_INT(dobj_sql_exec(st, q, (size_t)INT_MAX + 1, NULL, 0, &c), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "too large") != NULL);
	{
		dobj_sql_value big[2] = { { DOBJ_SQL_TEXT, 0, 0, "x", (size_t)INT_MAX + 1 },
			{ DOBJ_SQL_BLOB, 0, 0, "x", (size_t)1500000000 } };
		q = "INSERT INTO people (name) VALUES (?)";
		CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), big, 1, &c), DOBJ_EARG);
		CHECK_STR(dobj_error_last(), "binding 1 is too large (2147483648 bytes)");
		CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), big + 1, 1, &c), DOBJ_EARG);
		CHECK(strstr(dobj_error_last(), "binding 1: ") != NULL);
		q = "SELECT count(*) FROM people";
		CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_OK);
		CHECK_EQ_INT(dobj_cursor_cell(c, 0, 0)->i, 1);
		dobj_cursor_free(c);
	}
	q = "PRAGMA table_info(people)";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_OK);
	CHECK_EQ_INT(dobj_cursor_rows(c), 3);
	dobj_cursor_free(c);
	/* delete_all drops SQL tables too. */
	CHECK_EQ_INT(dobj_kv_delete_all(st), DOBJ_OK);
	q = "SELECT * FROM people";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

/* Names starting with _cf_ are out of reach of the SQL API whatever the route:
 * TEMP objects, quoting, case, schema prefixes, views, triggers, pragmas,
 * renames, VACUUM INTO. */
static void test_sql_cannot_reach_reserved_names(void)
{
	static const char *const refused[] = {
		"CREATE TEMP TRIGGER t AFTER INSERT ON main._cf_KV BEGIN SELECT 1; END",
		"CREATE TEMP TABLE _cf_x (a)",
		"CREATE TEMP TABLE x (a)",
		"CREATE TEMP VIEW v AS SELECT 1",
		"SELECT * FROM \"_CF_kv\"",
		"SELECT * FROM [_cf_KV]",
		"SELECT * FROM main.`_Cf_Kv`",
		"WITH x AS (SELECT * FROM _cf_KV) SELECT * FROM x",
		"SELECT (SELECT value FROM _cf_KV LIMIT 1)",
		"DELETE FROM _cf_kv",
		"INSERT INTO _cf_KV VALUES ('k', x'00')",
		"UPDATE _cf_KV SET value = NULL",
		"CREATE INDEX i ON _cf_KV(value)",
		"DROP INDEX sqlite_autoindex__cf_KV_1",
		"REINDEX _cf_KV",
		"CREATE TRIGGER t AFTER INSERT ON _cf_KV BEGIN SELECT 1; END",
		"CREATE TABLE \"_cf_METADATA\" (key INTEGER PRIMARY KEY, value BLOB)",
		"CREATE VIEW _cf_v AS SELECT 1",
		"CREATE TABLE people2 AS SELECT * FROM _cf_KV",
		"PRAGMA table_info(_cf_KV)",
		"PRAGMA main.index_list('_cf_KV')",
		"SELECT * FROM pragma_table_info('_cf_KV')",
		"ALTER TABLE people RENAME TO _cf_people",
		"ALTER TABLE main.people RENAME TO \"_CF_people\"",
		"alter /* a */ table people rename -- b\n to [_cf_p]",
		"ALTER TABLE people RENAME TO '_cf_p'",
		"ALTER TABLE _cf_KV RENAME TO mine",
		"ALTER TABLE _cf_KV ADD COLUMN x",
		"ATTACH ':memory:' AS x",
		"VACUUM",
		"VACUUM INTO '/tmp/dobj-vacuum-copy.sqlite'",
		"CREATE VIRTUAL TABLE st USING dbstat",
		"SELECT name, payload FROM dbstat",     /* eponymous: no CREATE needed */
		"SELECT * FROM dbstat('main') WHERE name = '_cf_KV'",
		"SELECT * FROM peek",             /* a view over _cf_KV */
		"INSERT INTO people VALUES ('x')", /* fires a trigger that empties _cf_KV */
	};
	static const char *const allowed[] = {
		"CREATE VIEW peek AS SELECT * FROM _cf_KV", /* harmless until used */
		"CREATE TRIGGER wipe AFTER INSERT ON people BEGIN DELETE FROM _cf_KV; END",
		"ALTER TABLE people RENAME TO folks",
		"ALTER TABLE folks RENAME TO people",
		"ALTER TABLE people RENAME COLUMN name TO _cf_column", /* columns are free */
		"SELECT name FROM sqlite_schema",
		"PRAGMA table_info(people)",
	};
	dobj_rt *rt = make_store_rt(NULL, DOBJ_CLASS_FETCH, -1);
	dobj_stub *s = store_stub("reserved");
	dobj_storage *st;
	dobj_cursor *c;
	const char *q;
	size_t i;

	CHECK_STR(fetch(rt, s, "put x 1", NULL), "ok");
	CHECK_EQ_INT(dobj_obj_storage(obj_of(s), &st), DOBJ_OK);
	q = "CREATE TABLE people (name TEXT)";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_OK);
	dobj_cursor_free(c);
	for (i = 0; i < sizeof(allowed) / sizeof(*allowed); i++) {
		c = NULL;
		CHECK_EQ_INT(dobj_sql_exec(st, allowed[i], strlen(allowed[i]), NULL, 0, &c), DOBJ_OK);
		if (!c)
			fprintf(stderr, "  refused: %s: %s\n", allowed[i], dobj_error_last());
		dobj_cursor_free(c);
	}
	for (i = 0; i < sizeof(refused) / sizeof(*refused); i++) {
		c = NULL;
		CHECK_EQ_INT(dobj_sql_exec(st, refused[i], strlen(refused[i]), NULL, 0, &c), DOBJ_EARG);
		if (c)
			fprintf(stderr, "  accepted: %s\n", refused[i]);
		dobj_cursor_free(c);
	}
	q = "ALTER TABLE people RENAME TO _cf_people";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "_cf_people") != NULL);
	q = "CREATE TEMP TRIGGER t AFTER INSERT ON main._cf_KV BEGIN SELECT 1; END";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "TEMP") != NULL);
	/* Nothing reached the reserved table or the schema. */
	q = "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%cf%' AND name <> '_cf_KV' "
		"UNION ALL SELECT count(*) FROM sqlite_temp_schema";
	CHECK_EQ_INT(dobj_sql_exec(st, q, strlen(q), NULL, 0, &c), DOBJ_OK);
	CHECK_EQ_INT(dobj_cursor_rows(c), 2);
	CHECK_EQ_INT(dobj_cursor_cell(c, 0, 0)->i, 0);
	CHECK_EQ_INT(dobj_cursor_cell(c, 1, 0)->i, 0);
	dobj_cursor_free(c);
	CHECK(access("/tmp/dobj-vacuum-copy.sqlite", F_OK) != 0);
	CHECK_STR(fetch(rt, s, "get x", NULL), "1");
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

static void test_layout_and_persistence(void)
{
	dobj_rt *rt;
	dobj_stub *s;
	char path[256], hex[65] = { 0 };
	sqlite3 *db;
	sqlite3_stmt *q;
	struct stat sb;

	make_tmpdir();
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH, -1);
	s = store_stub("persist");
	CHECK_STR(fetch(rt, s, "put greeting hello", NULL), "ok");
	CHECK_STR(fetch(rt, s, "count", NULL), "1");
	CHECK_STR(fetch(rt, s, "count", NULL), "2");
	/* Another connection sees the committed data while the runtime runs. */
	dobj_id_to_hex(dobj_stub_id(s), hex);
	snprintf(path, sizeof(path), "%s/store-key/%s.sqlite", tmpdir, hex);
	CHECK_EQ_INT(stat(path, &sb), 0);
	CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_EQ_INT(sqlite3_prepare_v2(db, "SELECT value FROM _cf_KV WHERE key = 'n'", -1, &q, NULL), SQLITE_OK);
	CHECK_EQ_INT(sqlite3_step(q), SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(q, 0), "2");
	sqlite3_finalize(q);
	CHECK_EQ_INT(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
	CHECK_EQ_INT(sqlite3_step(q), SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(q, 0), "wal");
	sqlite3_finalize(q);
	CHECK_EQ_INT(sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_schema WHERE name = '_cf_KV'", -1, &q, NULL), SQLITE_OK);
	CHECK_EQ_INT(sqlite3_step(q), SQLITE_ROW);
	CHECK(strstr((const char *)sqlite3_column_text(q, 0), "WITHOUT ROWID") != NULL);
	sqlite3_finalize(q);
	sqlite3_close(db);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	/* A new runtime on the same directory sees everything. */
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH, -1);
	s = store_stub("persist");
	CHECK_STR(fetch(rt, s, "get greeting", NULL), "hello");
	CHECK_STR(fetch(rt, s, "count", NULL), "3");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
}

static void test_transaction_across_steps_commits_later_writes(void)
{
	dobj_rt *rt;
	dobj_stub *s;

	make_tmpdir();
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH, -1);
	s = store_stub("span");
	CHECK_STR(fetch(rt, s, "txnspan", NULL), "ok");
	CHECK_STR(fetch(rt, s, "put later 3", NULL), "ok");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH, -1);
	s = store_stub("span");
	CHECK_STR(fetch(rt, s, "get in-txn", NULL), "1");
	CHECK_STR(fetch(rt, s, "get after-txn", NULL), "2");
	CHECK_STR(fetch(rt, s, "get later", NULL), "3");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
}

static void test_abort_discards_uncommitted_writes(void)
{
	dobj_rt *rt = make_store_rt(NULL, DOBJ_CLASS_FETCH, -1);
	dobj_stub *s = store_stub("ab"), *s2;
	int code;
	CHECK_STR(fetch(rt, s, "put k before", NULL), "ok");
	CHECK_STR(fetch(rt, s, "putabort k after", &code), "aborted after put");
	s2 = store_stub("ab");
	CHECK_STR(fetch(rt, s2, "get k", NULL), "before");
	CHECK_EQ_INT(constructions, 2);
	dobj_stub_free(s); dobj_stub_free(s2);
	dobj_rt_free(rt);
}

static void test_failed_commit_withholds_the_response(void)
{
	dobj_rt *rt = make_store_rt(NULL, DOBJ_CLASS_FETCH, -1);
	dobj_stub *s = store_stub("fk"), *s2;
	const char *body;
	int code;
	CHECK_STR(fetch(rt, s, "put k v", NULL), "ok");
	body = fetch(rt, s, "fkfail", &code);
	CHECK(code != DOBJ_OK);
	CHECK(strstr(body, "storage commit failed") != NULL);
	CHECK(strstr(body, "FOREIGN KEY") != NULL);
	s2 = store_stub("fk");
	CHECK_STR(fetch(rt, s2, "get lost", NULL), "(none)");
	CHECK_STR(fetch(rt, s2, "get k", NULL), "v");
	dobj_stub_free(s); dobj_stub_free(s2);
	dobj_rt_free(rt);
}

static void test_alarms_fire_retry_and_persist(void)
{
	dobj_rt *rt;
	dobj_stub *s;
	char cmd[64];
	int i, code;

	make_tmpdir();
	/* Without an alarm handler, set_alarm fails with workerd's message. */
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH, -1);
	s = store_stub("noalarm");
	snprintf(cmd, sizeof(cmd), "alarm %.0f", dobj__wall_ms(rt) + 1000);
	CHECK_STR(fetch(rt, s, cmd, &code),
		"Your Durable Object class must have an alarm() handler in order to call setAlarm()");
	dobj_stub_free(s);
	dobj_rt_free(rt);

	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM, -1);
	s = store_stub("alarmed");
	alarm_runs = 0;
	alarm_failures_left = 100; /* always fails: 1 run + 6 retries, then dropped */
	snprintf(cmd, sizeof(cmd), "alarm %.0f", dobj__wall_ms(rt) + 1000);
	{
		double t0 = dobj_rt_now_ms(rt);
		CHECK_STR(fetch(rt, s, cmd, NULL), "set");
		CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
		CHECK_EQ_INT(alarm_runs, 7);
		CHECK(alarm_times[0] - t0 >= 999);
		CHECK_EQ_INT(alarm_early, 0);
		for (i = 1; i < 7; i++) {
			double gap = alarm_times[i] - alarm_times[i - 1];
			double base = (double)(2 << (i - 1)) * 1000;
			CHECK(gap >= base && gap <= base * 1.25 + 1);
			CHECK_EQ_INT(alarm_retries[i], i);
		}
		CHECK(alarm_seen_get == -1); /* get_alarm() is null inside the handler */
	}
	/* A successful alarm runs once and is gone. */
	alarm_runs = 0;
	alarm_failures_left = 0;
	snprintf(cmd, sizeof(cmd), "alarm %.0f", dobj__wall_ms(rt) + 50);
	CHECK_STR(fetch(rt, s, cmd, NULL), "set");
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(alarm_runs, 1);
	/* Persisted: set, close, and a new runtime fires it (already due). */
	alarm_runs = 0;
	snprintf(cmd, sizeof(cmd), "alarm %.0f", dobj__wall_ms(rt) + 10);
	CHECK_STR(fetch(rt, s, cmd, NULL), "set");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(alarm_runs, 0);
	usleep(20 * 1000);
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM, -1);
	CHECK_EQ_INT(dobj_rt_pending(rt), 1);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(alarm_runs, 1);
	CHECK_EQ_INT(dobj_rt_pending(rt), 0);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
}

/* An alarm deleted or moved after it came due but before its handler began
 * (its call waiting behind the object's gate) does not run: workerd skips a
 * handler whose alarm time changed; a moved one runs once, at its new time. */
static void test_alarm_changed_while_queued(void)
{
	dobj_rt *rt;
	dobj_stub *s;
	double t0, scheduled = 0;

	make_tmpdir();
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM, -1);
	s = store_stub("queued");
	alarm_runs = 0;
	alarm_failures_left = 0;
	CHECK_STR(fetch(rt, s, "blockalarm delete", NULL), "blocked");
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(alarm_runs, 0);
	CHECK_EQ_INT(dobj_rt_pending(rt), 0);

	t0 = dobj__wall_ms(rt);
	CHECK_STR(fetch(rt, s, "blockalarm move", NULL), "blocked");
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(alarm_runs, 1);
	scheduled = alarm_times[0] - dobj_rt_now_ms(rt) + dobj__wall_ms(rt);
	CHECK(scheduled - t0 >= 1049); /* the new time (50 + 1000 ms on), not the old */
	CHECK_EQ_INT(alarm_early, 0);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
}

/* The stored alarm times of object `id` in the schedule (metadata.sqlite)
 * and in the object's own database (_cf_METADATA); -1 when absent. */
static void stored_alarm(const dobj_id *id, long long *schedule, long long *own)
{
	char hex[DOBJ_ID_HEX_LEN + 1], path[256];
	sqlite3 *db;
	sqlite3_stmt *q;

	dobj_id_to_hex(id, hex);
	hex[DOBJ_ID_HEX_LEN] = '\0';
	*schedule = *own = -1;
	snprintf(path, sizeof(path), "%s/store-key/metadata.sqlite", tmpdir);
	CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_prepare_v2(db, "SELECT scheduled_time FROM _cf_ALARM WHERE actor_id = ?1", -1, &q,
			NULL) == SQLITE_OK) {
		sqlite3_bind_text(q, 1, hex, -1, SQLITE_STATIC);
		if (sqlite3_step(q) == SQLITE_ROW)
			*schedule = sqlite3_column_int64(q, 0);
		sqlite3_finalize(q);
	}
	sqlite3_close(db);
	snprintf(path, sizeof(path), "%s/store-key/%s.sqlite", tmpdir, hex);
	CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
	if (sqlite3_prepare_v2(db, "SELECT value FROM _cf_METADATA WHERE key = 1", -1, &q,
			NULL) == SQLITE_OK) {
		if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_INTEGER)
			*own = sqlite3_column_int64(q, 0);
		sqlite3_finalize(q);
	}
	sqlite3_close(db);
}

/* Out-of-range times are refused as workerd refuses them (they were
 * accepted, reported, then dropped on restart); the time is kept to the
 * nanosecond (ms * 1e6 in floating point was off by up to 128 ns). */
static void test_alarm_times_are_exact_and_in_range(void)
{
	static const struct { double ms; const char *msg; } bad[] = {
		{ NAN, DOBJ_MSG_ALARM_NOT_A_DATE }, { INFINITY, DOBJ_MSG_ALARM_NOT_A_DATE },
		{ -INFINITY, DOBJ_MSG_ALARM_NOT_A_DATE }, { 9.3e12, DOBJ_MSG_ALARM_TOO_LATE },
		{ 9223372036854.7758, DOBJ_MSG_ALARM_TOO_LATE }, { 1e300, DOBJ_MSG_ALARM_TOO_LATE },
		{ -1e300, DOBJ_MSG_ALARM_TOO_EARLY }, { 0, DOBJ_MSG_ALARM_NOT_POSITIVE },
		{ 0.5, DOBJ_MSG_ALARM_NOT_POSITIVE }, { -1, DOBJ_MSG_ALARM_NOT_POSITIVE },
	};
	const double when = 2000000000123.4567; /* 2033, a double whose ns are not whole */
	dobj_rt *rt;
	dobj_stub *s;
	dobj_storage *st;
	dobj_id id;
	long long schedule, own;
	unsigned __int128 exact;
	double got;
	size_t i;

	make_tmpdir();
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM, -1);
	s = store_stub("exact");
	id = *dobj_stub_id(s);
	CHECK_STR(fetch(rt, s, "put x 1", NULL), "ok");
	CHECK_EQ_INT(dobj_obj_storage(obj_of(s), &st), DOBJ_OK);
	for (i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		CHECK_EQ_INT(dobj_alarm_set(st, bad[i].ms), DOBJ_EARG);
		CHECK_STR(dobj_error_last(), bad[i].msg);
	}
	CHECK_EQ_INT(dobj_alarm_get(st, &got), 0);
	/* The last representable day is fine (2262-04-11). */
	CHECK_EQ_INT(dobj_alarm_set(st, 9223372036854.0), DOBJ_OK);
	CHECK_EQ_INT(dobj_alarm_get(st, &got), 1);
	CHECK(got == 9223372036854.0);
	stored_alarm(&id, &schedule, &own);
	CHECK_EQ_INT(schedule, 9223372036854000000LL);
	CHECK_EQ_INT(own, 9223372036854000000LL);

	CHECK_EQ_INT(dobj_alarm_set(st, when), DOBJ_OK);
	stored_alarm(&id, &schedule, &own);
	/* when = m / 4096 ms exactly (its ulp is 2^-12 ms): the nearest ns. */
	exact = ((unsigned __int128)(when * 4096.0) * 15625u + 32u) / 64u;
	CHECK(schedule == (long long)exact);
	CHECK_EQ_INT(own, schedule);
	dobj_stub_free(s);
	dobj_rt_free(rt);

	/* After a restart the same double comes back. */
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM, -1);
	s = store_stub("exact");
	CHECK_STR(fetch(rt, s, "put x 2", NULL), "ok");
	CHECK_EQ_INT(dobj_obj_storage(obj_of(s), &st), DOBJ_OK);
	CHECK_EQ_INT(dobj_alarm_get(st, &got), 1);
	CHECK(got == when);
	CHECK_EQ_INT(dobj_alarm_delete(st), DOBJ_OK);
	stored_alarm(&id, &schedule, &own);
	CHECK_EQ_INT(schedule, -1);
	CHECK_EQ_INT(own, -1);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
}

/* The object's own record decides when an alarm comes due, as in workerd:
 * a set_alarm whose step never committed does not fire, and an alarm that
 * ran is cleared from both places. */
static void test_alarm_follows_the_objects_own_record(void)
{
	dobj_rt *rt;
	dobj_stub *s;
	dobj_id id;
	long long schedule, own;
	char cmd[64];
	int code;

	make_tmpdir();
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM, -1);
	s = store_stub("rolled-back");
	id = *dobj_stub_id(s);
	alarm_runs = 0;
	alarm_failures_left = 0;
	snprintf(cmd, sizeof(cmd), "alarmabort %.0f", dobj__wall_ms(rt) + 100);
	CHECK_STR(fetch(rt, s, cmd, &code), "aborted after set_alarm");
	stored_alarm(&id, &schedule, &own);
	CHECK(schedule > 0); /* scheduled at once, as workerd's alarm manager */
	CHECK_EQ_INT(own, -1); /* but never committed */
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(alarm_runs, 0);
	stored_alarm(&id, &schedule, &own);
	CHECK_EQ_INT(schedule, -1);
	dobj_stub_free(s);

	/* workerd moved the alarm later in the object's record (its schedule
	 * lags behind): it runs at the object's time, not the stale one. */
	s = store_stub("moved");
	id = *dobj_stub_id(s);
	alarm_runs = 0;
	{
		double t1 = dobj__wall_ms(rt) + 100, t2 = t1 + 5000;
		char hex[DOBJ_ID_HEX_LEN + 1], path[256], sql[128];
		sqlite3 *db;
		snprintf(cmd, sizeof(cmd), "alarm %.0f", t1);
		CHECK_STR(fetch(rt, s, cmd, NULL), "set");
		dobj_id_to_hex(&id, hex);
		hex[DOBJ_ID_HEX_LEN] = '\0';
		snprintf(path, sizeof(path), "%s/store-key/%s.sqlite", tmpdir, hex);
		CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
		snprintf(sql, sizeof(sql), "UPDATE _cf_METADATA SET value = %.0f000000 WHERE key = 1", t2);
		CHECK_EQ_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
		sqlite3_close(db);
		CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
		CHECK_EQ_INT(alarm_runs, 1);
		CHECK(dobj__wall_ms(rt) >= t2);
	}
	stored_alarm(&id, &schedule, &own);
	CHECK_EQ_INT(schedule, -1);
	CHECK_EQ_INT(own, -1);
	dobj_stub_free(s);

	s = store_stub("runs");
	id = *dobj_stub_id(s);
	alarm_runs = 0;
	snprintf(cmd, sizeof(cmd), "alarm %.0f", dobj__wall_ms(rt) + 100);
	CHECK_STR(fetch(rt, s, cmd, NULL), "set");
	stored_alarm(&id, &schedule, &own);
	CHECK(schedule > 0);
	CHECK_EQ_INT(own, schedule);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(alarm_runs, 1);
	stored_alarm(&id, &schedule, &own);
	CHECK_EQ_INT(schedule, -1);
	CHECK_EQ_INT(own, -1);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
}

static void test_idle_objects_are_evicted(void)
{
	dobj_rt *rt;
	dobj_stub *s;

	/* In memory: eviction drops the instance, never the data. */
	rt = make_store_rt(NULL, DOBJ_CLASS_FETCH, 1000);
	s = store_stub("idle");
	CHECK_STR(fetch(rt, s, "count", NULL), "1");
	CHECK_EQ_INT(dobj_ns_live(store_ns), 1);
	CHECK_EQ_INT(dobj_rt_advance(rt, 500), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_live(store_ns), 1);
	CHECK_STR(fetch(rt, s, "count", NULL), "2"); /* activity restarts the clock */
	CHECK_EQ_INT(dobj_rt_advance(rt, 999), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_live(store_ns), 1);
	CHECK_EQ_INT(dobj_rt_advance(rt, 2), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_live(store_ns), 0);
	CHECK_EQ_INT(dobj_ns_open_storages(store_ns), 1);
	CHECK_STR(fetch(rt, s, "count", NULL), "3"); /* same stub, new instance, data kept */
	CHECK_EQ_INT(constructions, 2);
	dobj_stub_free(s);
	dobj_rt_free(rt);

	/* On disk: the database handle is released too. */
	make_tmpdir();
	rt = make_store_rt(tmpdir, DOBJ_CLASS_FETCH, 1000);
	s = store_stub("idle");
	CHECK_STR(fetch(rt, s, "count", NULL), "1");
	CHECK_EQ_INT(dobj_ns_open_storages(store_ns), 1);
	CHECK_EQ_INT(dobj_rt_advance(rt, 1001), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_live(store_ns), 0);
	CHECK_EQ_INT(dobj_ns_open_storages(store_ns), 0);
	CHECK_STR(fetch(rt, s, "count", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
}

static void test_unique_key_must_name_a_directory(void)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { "X", DOBJ_CLASS_FETCH, NULL, store_construct, store_step, NULL };
	dobj_ns *ns;
	make_tmpdir();
	o.storage_dir = tmpdir;
	o.host.release = tv_release;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "A", 1, "../escape", 9, &k), DOBJ_EARG);
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "A", 1, "..", 2, &k), DOBJ_EARG);
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "A", 1, "ok-key", 6, &k), DOBJ_OK);
	dobj_rt_free(rt);
	rm_rf(tmpdir);
}

int main(void)
{
	RUN(test_kv_api);
	RUN(test_sql_api);
	RUN(test_sql_cannot_reach_reserved_names);
	RUN(test_layout_and_persistence);
	RUN(test_transaction_across_steps_commits_later_writes);
	RUN(test_abort_discards_uncommitted_writes);
	RUN(test_failed_commit_withholds_the_response);
	RUN(test_alarms_fire_retry_and_persist);
	RUN(test_alarm_changed_while_queued);
	RUN(test_alarm_times_are_exact_and_in_range);
	RUN(test_alarm_follows_the_objects_own_record);
	RUN(test_idle_objects_are_evicted);
	RUN(test_unique_key_must_name_a_directory);
	return DONE();
}
