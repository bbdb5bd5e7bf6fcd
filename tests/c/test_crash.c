/*
 * Crash safety: a child process increments a durable counter through an
 * object and acknowledges each response on a pipe; the parent kills it with
 * SIGKILL at random moments.  A new runtime on the same directory must find
 * every acknowledged increment and an intact database, every time.
 */
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testhost.h"

static int counter_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	(void)obj; (void)data; (void)error;
	*instance = tv_new(V_INST, NULL, 0);
	return DOBJ_OK;
}

/* Read n, write n + 1, and a few filler keys so commits touch several pages. */
static int counter_step(dobj_task *t, void *data)
{
	dobj_storage *st;
	const void *v;
	size_t len;
	char buf[32], key[16];
	long n = 0;
	int rc, i;

	(void)data;
	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	if (dobj_kv_get(st, "n", 1, &v, &len) == 1) {
		snprintf(buf, sizeof(buf), "%.*s", (int)len, (const char *)v);
		n = strtol(buf, NULL, 10);
	}
	n++;
	snprintf(buf, sizeof(buf), "%ld", n);
	if ((rc = dobj_kv_put(st, "n", 1, buf, strlen(buf))) < 0)
		return rc;
	for (i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "f%ld-%d", n % 50, i);
		if ((rc = dobj_kv_put(st, key, strlen(key), buf, strlen(buf))) < 0)
			return rc;
	}
	respond(t, 200, "%ld", n);
	return DOBJ_OK;
}

static dobj_rt *open_rt(const char *dir, dobj_stub **stub)
{
	dobj_rt *rt;
	dobj_ns *ns;
	dobj_id id;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { "Counter", DOBJ_CLASS_FETCH, NULL, counter_construct, counter_step, NULL };
	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.storage_dir = dir;
	if (dobj_rt_new(&rt, &o) < 0 || dobj_ns_new(&ns, rt, "C", 1, "crash-key", 9, &k) < 0)
		return NULL;
	dobj_id_from_name(dobj_ns_idkey(ns), "c", 1, &id);
	dobj_stub_new(stub, ns, &id, "c", 1);
	return rt;
}

static void child(const char *dir, int fd)
{
	dobj_stub *s;
	dobj_rt *rt = open_rt(dir, &s);
	for (;;) {
		int code;
		const char *body = fetch(rt, s, "inc", &code);
		long n = strtol(body, NULL, 10);
		if (code != DOBJ_OK || write(fd, &n, sizeof(n)) != sizeof(n))
			_exit(2);
	}
}

static void test_acknowledged_writes_survive_sigkill(void)
{
	char dir[64];
	int round, lost = 0, corrupt = 0;
	long last_seen = 0;

	snprintf(dir, sizeof(dir), "/tmp/dobj-crash-XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	srand((unsigned)time(NULL));
	for (round = 0; round < 12; round++) {
		int fd[2], status;
		long acked = 0, n;
		pid_t pid;
		dobj_stub *s;
		dobj_rt *rt;
		const char *body;
		struct timespec ts = { 0, (long)(5 + rand() % 60) * 1000000L };

		CHECK_EQ_INT(pipe(fd), 0);
		pid = fork();
		if (pid == 0) {
			close(fd[0]);
			child(dir, fd[1]);
		}
		close(fd[1]);
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		while (read(fd[0], &n, sizeof(n)) == sizeof(n))
			acked = n;
		close(fd[0]);
		waitpid(pid, &status, 0);
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

		/* Reopen: the counter is at least what the child was told. */
		rt = open_rt(dir, &s);
		CHECK(rt != NULL);
		body = fetch(rt, s, "inc", NULL);
		n = strtol(body, NULL, 10) - 1;
		if (n < acked)
			lost++;
		CHECK(n >= last_seen);
		last_seen = n + 1;
		dobj_stub_free(s);
		dobj_rt_free(rt);
	}
	CHECK_EQ_INT(lost, 0);
	CHECK(last_seen > 12); /* the children did real work */
	{
		/* The database file passes SQLite's own check. */
		char cmd[256];
		sqlite3 *db;
		sqlite3_stmt *q;
		dobj_stub *s;
		dobj_rt *rt = open_rt(dir, &s);
		char hex[65] = { 0 }, path[200];
		dobj_id_to_hex(dobj_stub_id(s), hex);
		snprintf(path, sizeof(path), "%s/crash-key/%s.sqlite", dir, hex);
		dobj_stub_free(s);
		dobj_rt_free(rt);
		CHECK_EQ_INT(sqlite3_open(path, &db), SQLITE_OK);
		CHECK_EQ_INT(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
		CHECK_EQ_INT(sqlite3_step(q), SQLITE_ROW);
		corrupt = strcmp((const char *)sqlite3_column_text(q, 0), "ok") != 0;
		sqlite3_finalize(q);
		sqlite3_close(db);
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		CHECK_EQ_INT(system(cmd), 0);
	}
	CHECK_EQ_INT(corrupt, 0);
	printf("crash rounds: 12, increments acknowledged and found: %ld\n", last_seen);
}

int main(void)
{
	RUN(test_acknowledged_writes_survive_sigkill);
	return DONE();
}
