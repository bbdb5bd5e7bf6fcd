/*
 * Snapshots of cluster objects against a real PostgreSQL: the log is
 * compacted and another node restores snapshot + later log; a cached file
 * at the latest seq is used as it is (and only then); a stale owner's
 * snapshot is refused by the fence; stored bytes that lie (a damaged or
 * truncated snapshot, a seq that lies, a missing log row) are a clear
 * error and the object is not served; a schema of version 1 is migrated;
 * a release leaves the file's hash to the object's activator, ahead of its
 * next activation, and reset() leaves none at work behind it.
 */
#include <fcntl.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testhost.h"
#include "pgtest.h"
#include "clustertest.h"
#include "cluster_int.h" /* dobj__snap_mark_hook, dobj__snap_hashed: a cache marker's hashing */

static pgtest pg;

static int log_calls;
static char log_msg[600];

static void on_log(void *data, long long node, const char *message)
{
	(void)data;
	(void)node;
	log_calls++;
	snprintf(log_msg, sizeof(log_msg), "%s", message);
}

static int counter_step(dobj_task *t, void *data)
{
	(void)data;
	return counter_answer(t);
}

/* The snapshot part size of the nodes made next (0: the default). */
static long long part_bytes;

/* A node on `dir` (snapshot_bytes: 0 the default, 1 as soon as the log
 * since the last snapshot is as big as it) of the cluster at `url`. */
static dobj_rt *node_at(const char *url, const char *dir, long long snapshot_bytes)
{
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_rt *rt;

	co.url = url;
	co.node_addr = "127.0.0.1:0";
	co.grace_ms = -1; /* the tests expire leases by hand */
	co.snapshot_bytes = snapshot_bytes;
	co.snapshot_part_bytes = part_bytes;
	rt = cluster_node(&pg, dir, &co, DOBJ_OK, "snap-key", counter_step, DOBJ_CLASS_FETCH);
	CHECK_EQ_INT(dobj_rt_cluster_set_log(rt, on_log, NULL), DOBJ_OK);
	return rt;
}

static dobj_rt *node(const char *dir, long long snapshot_bytes)
{
	return node_at(pg.url, dir, snapshot_bytes);
}

/* `n` counts on `name` (from `from` + 1), with an SQL statement after
 * them when `sql` (which grows the file; plain counts change one value in
 * place and the file keeps its size), then what is out is finished
 * (dobj_rt_run waits for the compactor too). */
static void count_up(dobj_rt *rt, const char *name, int from, int n, int sql)
{
	dobj_stub *s = stub_for(rt, name);
	char want[32];
	int i;

	for (i = 1; i <= n; i++) {
		snprintf(want, sizeof(want), "%d", from + i);
		CHECK_STR(fetch(rt, s, "count", NULL), want);
	}
	if (sql)
		CHECK_STR(fetch(rt, s, "sql", NULL), "ok");
	dobj_stub_free(s);
	CHECK_EQ_INT(dobj_rt_run(rt, NULL, NULL), DOBJ_OK);
}

static void counts(dobj_rt *rt, const char *name, int from, int n)
{
	count_up(rt, name, from, n, 1);
}

static void plain_counts(dobj_rt *rt, const char *name, int from, int n)
{
	count_up(rt, name, from, n, 0);
}

/* One call `op` on `name` answers `want`. */
static void expect(dobj_rt *rt, const char *name, const char *op, const char *want)
{
	dobj_stub *s = stub_for(rt, name);

	CHECK_STR(fetch(rt, s, op, NULL), want);
	dobj_stub_free(s);
}

/* The id of the object `name` in hex (as the namespace makes it). */
static void obj_hex(const char *name, char *hex)
{
	dobj_id id;
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	dobj_ns *ns;

	k.name = "Counter";
	k.step = counter_step;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "COUNTER", 7, "snap-key", 8, &k), DOBJ_OK);
	dobj_id_from_name(dobj_ns_idkey(ns), name, strlen(name), &id);
	dobj_rt_free(rt);
	dobj_id_to_hex(&id, hex);
	hex[DOBJ_ID_HEX_LEN] = '\0';
}

/* A query about the object `name` ($OBJ stands for its id). */
static long long about(const char *name, const char *fmt)
{
	char q[1024], hex[DOBJ_ID_HEX_LEN + 1], *at;

	obj_hex(name, hex);
	snprintf(q, sizeof(q), "%s", fmt);
	while ((at = strstr(q, "$OBJ"))) {
		char rest[1024];
		snprintf(rest, sizeof(rest), "%s", at + 4);
		snprintf(at, sizeof(q) - (size_t)(at - q), "'\\x%s'::bytea%s", hex, rest);
	}
	return pgtest_sql(&pg, NULL, q);
}

/* ------------------------------------------------------------------ tests */

static void test_the_log_is_compacted_and_another_node_restores_it(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, "compact", 0, 12);
	/* A snapshot exists, and the log holds only what came after it (and
	 * the marker row at its seq). */
	CHECK(about("compact", "SELECT seq FROM dobj_snapshot WHERE object_id = $OBJ") >= 1);
	CHECK_EQ_INT(about("compact", "SELECT count(*) FROM dobj_wal w WHERE object_id = $OBJ AND "
		"seq < (SELECT seq FROM dobj_snapshot s WHERE s.object_id = w.object_id)"), 0);
	CHECK_EQ_INT(about("compact", "SELECT octet_length(frames) FROM dobj_wal w WHERE object_id = "
		"$OBJ AND seq = (SELECT seq FROM dobj_snapshot s WHERE s.object_id = w.object_id)"), 0);
	dobj_rt_free(a);
	/* Another node, on an empty folder: snapshot + later log. */
	b = node(testhost_tmpdir(d2, "dobj-snap"), -1);
	s = stub_for(b, "compact");
	CHECK_STR(fetch(b, s, "count", NULL), "13");
	CHECK_STR(fetch(b, s, "rows", NULL), "1");
	dobj_stub_free(s);
	dobj_rt_free(b);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

static void test_a_cached_file_at_the_latest_seq_is_kept_and_only_then(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;
	long hashed;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, "cached", 0, 6);
	dobj_rt_free(a);
	/* PostgreSQL's snapshot is damaged now; the file this node left is at
	 * the latest seq, so it is used and PostgreSQL's pages are not read. */
	about("cached", "UPDATE dobj_snapshot SET db = overlay(db placing '\\x00ff'::bytea from 200) "
		"WHERE object_id = $OBJ");
	hashed = __atomic_load_n(&dobj__snap_hashed, __ATOMIC_RELAXED);
	a = node(d1, -1);
	expect(a, "cached", "count", "7");
	/* Its marker names PostgreSQL's head: the file was checked (hashed). */
	CHECK(__atomic_load_n(&dobj__snap_hashed, __ATOMIC_RELAXED) == hashed + 1);
	dobj_rt_free(a);
	/* Another node has no such file: it reads the snapshot, finds it
	 * damaged and does not serve the object. */
	b = node(testhost_tmpdir(d2, "dobj-snap"), -1);
	s = stub_for(b, "cached");
	{
		int code;
		const char *out = fetch(b, s, "count", &code);
		CHECK(code != DOBJ_OK);
		CHECK(strstr(out, "damaged (a snapshot whose checksum does not match") != NULL);
	}
	dobj_stub_free(s);
	dobj_rt_free(b);
	testhost_rm_rf(d2);
	testhost_rm_rf(d1);
}

static void test_a_cached_file_is_kept_whether_its_head_is_a_log_row_or_the_snapshot(void)
{
	char d1[64];
	dobj_rt *a;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	plain_counts(a, "head-snap", 0, 1); /* compacted at once: the head is the snapshot */
	plain_counts(a, "head-row", 0, 2);
	dobj_rt_free(a);
	CHECK_EQ_INT(about("head-snap", "SELECT count(*) FROM dobj_wal w WHERE object_id = $OBJ AND "
		"seq > (SELECT seq FROM dobj_snapshot s WHERE s.object_id = w.object_id)"), 0);
	CHECK(about("head-row", "SELECT count(*) FROM dobj_wal w WHERE object_id = $OBJ AND "
		"seq > (SELECT seq FROM dobj_snapshot s WHERE s.object_id = w.object_id)") > 0);
	/* What a rebuild would read is damaged (the snapshot's image, not its
	 * header; the last log row's pages): the files are used as they are. */
	about("head-snap", "UPDATE dobj_snapshot SET db = overlay(db placing '\\x00ff'::bytea "
		"from 200) WHERE object_id = $OBJ");
	about("head-row", "UPDATE dobj_wal SET frames = overlay(frames placing '\\x00ff'::bytea "
		"from 100) WHERE object_id = $OBJ AND seq = (SELECT max(seq) FROM dobj_wal "
		"WHERE object_id = $OBJ)");
	a = node(d1, -1);
	expect(a, "head-snap", "count", "2");
	expect(a, "head-row", "count", "3");
	dobj_rt_free(a);
	testhost_rm_rf(d1);
}

static void test_a_cache_behind_postgresql_is_not_used(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;
	long hashed;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, "behind", 0, 3);
	dobj_rt_free(a); /* its file is at the latest seq */
	b = node(testhost_tmpdir(d2, "dobj-snap"), 1);
	counts(b, "behind", 3, 3);
	dobj_rt_free(b); /* now it is not */
	hashed = __atomic_load_n(&dobj__snap_hashed, __ATOMIC_RELAXED);
	a = node(d1, 1);
	s = stub_for(a, "behind");
	CHECK_STR(fetch(a, s, "count", NULL), "7");
	/* PostgreSQL's head is not the marker's: the file was not read to
	 * hash it (it was, before the head was asked). */
	CHECK(__atomic_load_n(&dobj__snap_hashed, __ATOMIC_RELAXED) == hashed);
	CHECK_STR(fetch(a, s, "rows", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

/* The bytes of the file at `path` (malloc'd), *len their count. */
static char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long n;

	if (f && fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (b = malloc((size_t)n + 1)) && fread(b, 1, (size_t)n, f) == (size_t)n)
		*len = (size_t)n;
	else {
		free(b);
		b = NULL;
	}
	if (f)
		fclose(f);
	return b;
}

static void file_of(const char *dir, const char *name, char *path, size_t n)
{
	char hex[DOBJ_ID_HEX_LEN + 1];

	obj_hex(name, hex);
	snprintf(path, n, "%s/snap-key/%s.sqlite", dir, hex);
}

static void test_a_cached_file_changed_behind_its_marker_is_rebuilt(void)
{
	char d1[64], path[256], *old;
	struct stat sb, now;
	size_t len, len2;
	dobj_rt *a;
	FILE *f;

	a = node(testhost_tmpdir(d1, "dobj-snap"), -1);
	plain_counts(a, "tampered", 0, 2);
	dobj_rt_free(a);
	file_of(d1, "tampered", path, sizeof(path));
	CHECK((old = read_all(path, &len)) != NULL);
	a = node(d1, -1);
	plain_counts(a, "tampered", 2, 1);
	dobj_rt_free(a); /* its marker: seq 3, this file */
	/* The file goes back to its old bytes (a write that stayed, a damaged
	 * page): same inode, size and times, so only its content tells. */
	CHECK_EQ_INT(stat(path, &sb), 0);
	free(read_all(path, &len2));
	CHECK_EQ_INT((int)len2, (int)len);
	CHECK((f = fopen(path, "r+b")) != NULL);
	CHECK_EQ_INT((int)fwrite(old, 1, len, f), (int)len);
	CHECK_EQ_INT(fclose(f), 0);
	{
		struct timespec ts[2] = { sb.st_atim, sb.st_mtim };
		CHECK_EQ_INT(utimensat(AT_FDCWD, path, ts, 0), 0);
	}
	CHECK_EQ_INT(stat(path, &now), 0);
	CHECK(now.st_ino == sb.st_ino && now.st_size == sb.st_size &&
		now.st_mtim.tv_sec == sb.st_mtim.tv_sec && now.st_mtim.tv_nsec == sb.st_mtim.tv_nsec);
	free(old);
	/* Not PostgreSQL's state: rebuilt from it. */
	a = node(d1, -1);
	expect(a, "tampered", "count", "4");
	dobj_rt_free(a);
	testhost_rm_rf(d1);
}

static void test_the_same_seq_and_epoch_written_elsewhere_is_not_the_cache(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;

	a = node(testhost_tmpdir(d1, "dobj-snap"), -1);
	plain_counts(a, "rewritten", 0, 3);
	dobj_rt_free(a); /* its file is at seq 3, epoch 1 */
	CHECK_EQ_INT(about("rewritten", "SELECT max(epoch) FROM dobj_wal WHERE object_id = $OBJ"), 1);
	/* PostgreSQL loses the object's history (restored from a backup, a
	 * failover to a standby that was behind) and another node writes
	 * other steps under the same seqs and epoch. */
	about("rewritten", "WITH w AS (DELETE FROM dobj_wal WHERE object_id = $OBJ RETURNING 1) "
		"DELETE FROM dobj_owner WHERE object_id = $OBJ");
	b = node(testhost_tmpdir(d2, "dobj-snap"), -1);
	s = stub_for(b, "rewritten");
	CHECK_STR(fetch(b, s, "sql", NULL), "ok");
	CHECK_STR(fetch(b, s, "sql", NULL), "ok");
	CHECK_STR(fetch(b, s, "count", NULL), "1");
	dobj_stub_free(s);
	CHECK_EQ_INT(dobj_rt_run(b, NULL, NULL), DOBJ_OK);
	dobj_rt_free(b);
	CHECK_EQ_INT(about("rewritten", "SELECT count(*) FROM dobj_wal WHERE object_id = $OBJ AND "
		"epoch = 1 AND seq <= 3"), 3);
	/* The first node's file claims (3, 1) and is unchanged: PostgreSQL's
	 * row 3 is another write, so the file is rebuilt. */
	a = node(d1, -1);
	s = stub_for(a, "rewritten");
	CHECK_STR(fetch(a, s, "count", NULL), "2");
	CHECK_STR(fetch(a, s, "rows", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

/* Stored bytes that lie: the object is not served, with a clear error. */
/* The cache marker's writer (dobj__snap_mark_hook): counted, its thread
 * kept, held until the test lets it go. */
static pthread_mutex_t mark_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t mark_cv = PTHREAD_COND_INITIALIZER;
static int mark_calls, mark_held;
static pthread_t mark_thread;

static void mark_hook(void)
{
	pthread_mutex_lock(&mark_mu);
	mark_calls++;
	mark_thread = pthread_self();
	pthread_cond_broadcast(&mark_cv);
	while (mark_held)
		pthread_cond_wait(&mark_cv, &mark_mu);
	pthread_mutex_unlock(&mark_mu);
}

static void mark_let_go(void)
{
	pthread_mutex_lock(&mark_mu);
	mark_held = 0;
	pthread_cond_broadcast(&mark_cv);
	pthread_mutex_unlock(&mark_mu);
}

/* Wait until the writer holds (it is the job under way of its activator). */
static void mark_wait_held(void)
{
	pthread_mutex_lock(&mark_mu);
	while (!mark_calls)
		pthread_cond_wait(&mark_cv, &mark_mu);
	pthread_mutex_unlock(&mark_mu);
}

static int mark_count(void)
{
	int n;

	pthread_mutex_lock(&mark_mu);
	n = mark_calls;
	pthread_mutex_unlock(&mark_mu);
	return n;
}

static void test_a_release_hashes_off_the_runtimes_thread_ahead_of_the_next_activation(void)
{
	char d1[64], file[256], marker[300];
	dobj_rt *a;
	dobj_ns *ns;
	dobj_stub *s;
	dobj_task *t;
	dobj_id id;
	const char *name = "hash-off";

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	ns = dobj_rt_ns_at(a, 0);
	dobj_id_from_name(dobj_ns_idkey(ns), name, strlen(name), &id);
	file_of(d1, name, file, sizeof(file));
	snprintf(marker, sizeof(marker), "%s-seq", file);
	counts(a, name, 0, 6);
	/* PostgreSQL's snapshot is damaged: only the cached file, vouched for
	 * by its marker, can serve the object now. */
	about(name, "UPDATE dobj_snapshot SET db = overlay(db placing '\\x00ff'::bytea from 200) "
		"WHERE object_id = $OBJ");
	mark_calls = 0;
	mark_held = 1;
	dobj__snap_mark_hook = mark_hook;
	/* The eviction returns with the marker's writer held: the file is not
	 * hashed on this thread, and no marker is there yet. */
	CHECK_EQ_INT(dobj_ns_evict(ns, &id), 1);
	CHECK(access(marker, F_OK) != 0);
	/* A call at once: its activation is queued behind the marker (on the
	 * object's activator) before the writer goes on, finds the marker
	 * written and uses the file. */
	s = stub_for(a, name);
	t = send(s, "count");
	dobj_rt_pump(a);
	CHECK(!dobj_task_done(t));
	mark_wait_held();
	CHECK(access(marker, F_OK) != 0);
	{
		dobj__worker *w = a->cluster->act[id.bytes[0] % DOBJ__ACTIVATORS];
		pthread_mutex_lock(&w->mu);
		CHECK(w->cur != NULL && w->q_head != NULL); /* the marker, the activation behind */
		pthread_mutex_unlock(&w->mu);
	}
	mark_let_go();
	CHECK_STR(wait_body(a, t, NULL), "7");
	CHECK_EQ_INT(mark_count(), 1);
	CHECK(!pthread_equal(mark_thread, pthread_self()));
	CHECK(access(marker, F_OK) != 0); /* taken by the activation */
	dobj_stub_free(s);
	/* Closing: the objects it releases are hashed on their activators too,
	 * within the close, and the next node start uses the file. */
	dobj_rt_free(a);
	CHECK_EQ_INT(mark_count(), 2);
	CHECK(!pthread_equal(mark_thread, pthread_self()));
	CHECK(access(marker, F_OK) == 0);
	dobj__snap_mark_hook = NULL;
	a = node(d1, -1);
	expect(a, name, "count", "8");
	dobj_rt_free(a);
	testhost_rm_rf(d1);
}

/* A writer held until let go, or for a second at most: dobj_rt_reset halts
 * the one under way and waits for it, which a writer held for good would
 * never let end. */
static void mark_hook_bounded(void)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 1;
	pthread_mutex_lock(&mark_mu);
	mark_calls++;
	pthread_cond_broadcast(&mark_cv);
	while (mark_held && pthread_cond_timedwait(&mark_cv, &mark_mu, &until) == 0)
		;
	pthread_mutex_unlock(&mark_mu);
}

/* Files of the object `name` in its namespace's folder (the database, its
 * -wal/-shm, the cache marker and its temporary). */
static int files_of(const char *dir, const char *name)
{
	char hex[DOBJ_ID_HEX_LEN + 1], path[300];
	static const char *const tails[] = { ".sqlite", ".sqlite-wal", ".sqlite-shm",
		".sqlite-seq", ".sqlite-seq.tmp" };
	size_t i;
	int n = 0;

	obj_hex(name, hex);
	for (i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
		snprintf(path, sizeof(path), "%s/snap-key/%s%s", dir, hex, tails[i]);
		n += access(path, F_OK) == 0;
	}
	return n;
}

/* reset() evicts the object (its release queues a cache marker on the
 * activator) and deletes its files: the marker is not written after them,
 * nor is the activator still at work in the folder when reset returns
 * (it was: the marker, queued or held, went on after reset returned).  In
 * a cluster the data is PostgreSQL's: the next call restores it. */
static void test_reset_leaves_no_cache_marker_at_work_behind_it(void)
{
	char d1[64];
	dobj_rt *a;
	dobj_id id;
	dobj__worker *w;
	const char *name = "reset-marker";

	a = node(testhost_tmpdir(d1, "dobj-snap"), -1);
	dobj_id_from_name(dobj_ns_idkey(dobj_rt_ns_at(a, 0)), name, strlen(name), &id);
	w = a->cluster->act[id.bytes[0] % DOBJ__ACTIVATORS];
	counts(a, name, 0, 3);
	CHECK(files_of(d1, name) > 0);
	mark_calls = 0;
	mark_held = 1;
	dobj__snap_mark_hook = mark_hook_bounded;
	CHECK_EQ_INT(dobj_rt_reset(a), DOBJ_OK);
	pthread_mutex_lock(&w->mu);
	CHECK(w->cur == NULL && w->q_head == NULL);
	pthread_mutex_unlock(&w->mu);
	CHECK_EQ_INT(files_of(d1, name), 0);
	mark_let_go();
	dobj__snap_mark_hook = NULL;
	CHECK_EQ_INT(dobj_rt_run(a, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(files_of(d1, name), 0);
	expect(a, name, "count", "4");
	dobj_rt_free(a);
	testhost_rm_rf(d1);
}

/* reset() drops the object whose snapshot the compactor is writing (held
 * here behind the test's lock on the snapshot row): the compaction is
 * halted and waited for, so that nothing of it goes on after reset
 * returned (it did: the compactor was still at work, holding the row, and
 * wrote its snapshot once the lock went). */
static void test_reset_leaves_no_compaction_at_work_behind_it(void)
{
	char d1[64], hex[DOBJ_ID_HEX_LEN + 1];
	const char *name = "reset-compact";
	dobj__worker *w;
	dobj_stub *s;
	dobj_rt *a;
	PGconn *t;
	long long snap;
	int i;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, name, 0, 4);
	snap = about(name, "SELECT seq FROM dobj_snapshot WHERE object_id = $OBJ");
	CHECK(snap > 0);
	t = pgtest_connect(&pg);
	/* Held for longer than pgtmp.sh lets a transaction sit idle. */
	pgtest_sql(&pg, t, "SET idle_in_transaction_session_timeout = 0");
	pgtest_sql(&pg, t, "BEGIN");
	obj_hex(name, hex);
	CHECK_EQ_INT(pgtest_sqlf(&pg, t, "SELECT seq FROM dobj_snapshot WHERE "
		"object_id = '\\x%s'::bytea FOR UPDATE", hex), snap);
	s = stub_for(a, name);
	CHECK_STR(fetch(a, s, "count", NULL), "5");
	/* Log as big as the database (a count is a few bytes). */
	CHECK_STR(fetch(a, s, "sql", NULL), "ok");
	CHECK_STR(fetch(a, s, "sql", NULL), "ok");
	CHECK_STR(fetch(a, s, "count", NULL), "6");
	dobj_stub_free(s);
	/* The compactor waits on the row. */
	for (i = 0; i < 500 && pgtest_sql(&pg, NULL, "SELECT count(*) FROM pg_stat_activity "
		"WHERE application_name = 'dobj compactor' AND wait_event_type = 'Lock'") == 0; i++)
		usleep(10000);
	CHECK(i < 500);
	CHECK_EQ_INT(dobj_rt_reset(a), DOBJ_OK);
	w = a->cluster->snap;
	pthread_mutex_lock(&w->mu);
	CHECK(w->cur == NULL && w->q_head == NULL);
	pthread_mutex_unlock(&w->mu);
	pgtest_sql(&pg, t, "COMMIT");
	PQfinish(t);
	CHECK_EQ_INT(dobj_rt_run(a, NULL, NULL), DOBJ_OK);
	usleep(200000);
	CHECK_EQ_INT(about(name, "SELECT seq FROM dobj_snapshot WHERE object_id = $OBJ"), snap);
	/* In a cluster the data is PostgreSQL's: the next call restores it. */
	expect(a, name, "count", "7");
	dobj_rt_free(a);
	testhost_rm_rf(d1);
}

static void expect_damaged(const char *name, const char *fix, const char *words)
{
	char d[64];
	dobj_rt *b;
	dobj_stub *s;
	int code;
	const char *out;

	about(name, fix);
	b = node(testhost_tmpdir(d, "dobj-snap"), -1);
	s = stub_for(b, name);
	out = fetch(b, s, "count", &code);
	CHECK(code != DOBJ_OK);
	if (!strstr(out, words))
		fprintf(stderr, "unexpected: %s\n", out);
	CHECK(strstr(out, words) != NULL);
	CHECK(strstr(out, "the object is not served") != NULL);
	dobj_stub_free(s);
	dobj_rt_free(b);
	testhost_rm_rf(d);
}

/* A count changes a few bytes of one page: its log row carries those
 * (cluster_record.c), not the page, and another node rebuilds the same
 * database from them, and from them past a snapshot. */
static void test_a_count_appends_the_bytes_it_changed(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;

	a = node(testhost_tmpdir(d1, "dobj-snap"), -1);
	counts(a, "small", 0, 5); /* seq 1-5 counts, 6 sql */
	plain_counts(a, "small", 5, 20);
	dobj_rt_free(a);
	/* The first write of each page is whole; later counts are changes. */
	CHECK(about("small", "SELECT octet_length(frames) FROM dobj_wal WHERE object_id = $OBJ "
		"AND seq = 1") > 4096);
	CHECK(about("small", "SELECT octet_length(frames) FROM dobj_wal WHERE object_id = $OBJ "
		"AND seq = 6") > 2 * 4096);
	CHECK_EQ_INT(about("small", "SELECT count(*) FROM dobj_wal WHERE object_id = $OBJ AND "
		"(seq BETWEEN 2 AND 5 OR seq > 6) AND octet_length(frames) > 64"), 0);
	b = node(testhost_tmpdir(d2, "dobj-snap"), 1);
	s = stub_for(b, "small");
	CHECK_STR(fetch(b, s, "count", NULL), "26");
	CHECK_STR(fetch(b, s, "rows", NULL), "1");
	/* Past a snapshot (sql steps: log as big as the database). */
	CHECK_STR(fetch(b, s, "sql", NULL), "ok");
	CHECK_STR(fetch(b, s, "sql", NULL), "ok");
	CHECK_STR(fetch(b, s, "count", NULL), "27");
	dobj_stub_free(s);
	CHECK_EQ_INT(dobj_rt_run(b, NULL, NULL), DOBJ_OK);
	CHECK(about("small", "SELECT seq FROM dobj_snapshot WHERE object_id = $OBJ") >= 28);
	dobj_rt_free(b);
	testhost_rm_rf(d2);
	b = node(testhost_tmpdir(d2, "dobj-snap"), -1);
	expect(b, "small", "count", "28");
	expect(b, "small", "rows", "3");
	dobj_rt_free(b);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

static void test_stored_bytes_that_lie_are_a_clear_error(void)
{
	char d1[64];
	dobj_rt *a;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, "lies-1", 0, 6);
	counts(a, "lies-2", 0, 6);
	counts(a, "lies-3", 0, 6);
	dobj_rt_free(a);
	a = node(d1, -1); /* a log without snapshots */
	counts(a, "lies-4", 0, 6);
	counts(a, "lies-5", 0, 6);
	counts(a, "lies-6", 0, 6);
	counts(a, "lies-7", 0, 6);
	counts(a, "lies-8", 0, 6);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
	expect_damaged("lies-1", "UPDATE dobj_snapshot SET db = substring(db from 1 for "
		"octet_length(db) - 100) WHERE object_id = $OBJ", "a truncated snapshot");
	expect_damaged("lies-2", "UPDATE dobj_snapshot SET seq = seq - 1 WHERE object_id = $OBJ",
		"a snapshot whose header does not match its row");
	expect_damaged("lies-3", "UPDATE dobj_snapshot SET db = '\\x00'::bytea WHERE object_id = $OBJ",
		"a snapshot that is not one");
	expect_damaged("lies-4", "DELETE FROM dobj_wal WHERE object_id = $OBJ AND seq = 3",
		"a log row missing");
	/* Every log row carries its checksum (schema version 3): a flipped
	 * byte of its pages, of its checksum, a row that claims another epoch,
	 * pages cut short. */
	expect_damaged("lies-5", "UPDATE dobj_wal SET frames = set_byte(frames, 20, "
		"get_byte(frames, 20) # 1) WHERE object_id = $OBJ AND seq = 3",
		"a log row whose checksum does not match at seq 3");
	expect_damaged("lies-6", "UPDATE dobj_wal SET sum = set_byte(sum, 0, get_byte(sum, 0) # 128) "
		"WHERE object_id = $OBJ AND seq = 5", "a log row whose checksum does not match at seq 5");
	expect_damaged("lies-7", "UPDATE dobj_wal SET epoch = epoch + 1 WHERE object_id = $OBJ "
		"AND seq = 7", "a log row whose checksum does not match at seq 7");
	expect_damaged("lies-8", "UPDATE dobj_wal SET frames = substring(frames from 1 for 12) "
		"WHERE object_id = $OBJ AND seq = 2", "a log row whose checksum does not match at seq 2");
}

/* Rows that lie with a checksum that vouches for them (recomputed as dobj
 * computes it: anything that can write the tables can): log records whose
 * page size is 0, too big or not a power of two, whose page count
 * overflows the row, a page 0, a database size its pages do not make.  The
 * object is not served. */
#define RESUM "; UPDATE dobj_wal SET sum = sha256(object_id || int8send(seq) || " \
	"int8send(epoch) || sha256(frames)) WHERE object_id = $OBJ AND seq = 3"
#define AT3(what) "UPDATE dobj_wal SET frames = overlay(frames placing " what ") " \
	"WHERE object_id = $OBJ AND seq = 3" RESUM

#define AT7(what) "UPDATE dobj_wal SET frames = overlay(frames placing " what ") " \
	"WHERE object_id = $OBJ AND seq = 7; UPDATE dobj_wal SET sum = sha256(object_id || " \
	"int8send(seq) || int8send(epoch) || sha256(frames)) WHERE object_id = $OBJ AND seq = 7"
#define PAGES_LIE "pages that do not make the database they claim at seq 7"

static void test_rows_that_lie_under_a_valid_checksum_are_a_clear_error(void)
{
	static const struct { const char *name, *fix, *words; } lies[] = {
		{ "vlies-1", AT3("'\\x00000000'::bytea from 1"), "a malformed log row at seq 3" },
		{ "vlies-2", AT3("'\\x00020000'::bytea from 1"), "a malformed log row at seq 3" },
		{ "vlies-3", AT3("'\\x000003e8'::bytea from 1"), "a malformed log row at seq 3" },
		{ "vlies-4", AT3("'\\xffffffff'::bytea from 9"), "a malformed log row at seq 3" },
		{ "vlies-5", AT3("'\\x00100001'::bytea from 9"), "a malformed log row at seq 3" },
		{ "vlies-6", AT3("'\\x00000000'::bytea from 13"), "a malformed log row at seq 3" },
		{ "vlies-7", "UPDATE dobj_wal SET frames = '\\x'::bytea WHERE object_id = $OBJ AND "
			"seq = 3" RESUM, "a malformed log row at seq 3" },
		/* The last record's database size lies: 4 G pages (a 16 TiB
		 * file was served, and the next compaction would upload it),
		 * 256 pages. */
		{ "vlies-8", AT7("'\\xffffffff'::bytea from 5"), PAGES_LIE },
		{ "vlies-9", AT7("'\\x00000100'::bytea from 5"), PAGES_LIE },
		/* A database size of 0 pages, which no commit frame has: the
		 * last record's made an empty file, served as the object (its
		 * data gone), a record's before it cut the database there. */
		{ "vlies-10", AT7("'\\x00000000'::bytea from 5"), "a malformed log row at seq 7" },
		{ "vlies-11", AT3("'\\x00000000'::bytea from 5"), "a malformed log row at seq 3" },
		/* Row 1 (whole pages) replaced by row 2 (a count's changed
		 * bytes): changes to a page nothing before them holds. */
		{ "vlies-12", "UPDATE dobj_wal SET frames = (SELECT frames FROM dobj_wal WHERE "
			"object_id = $OBJ AND seq = 2) WHERE object_id = $OBJ AND seq = 1; "
			"UPDATE dobj_wal SET sum = sha256(object_id || int8send(seq) || int8send(epoch) || "
			"sha256(frames)) WHERE object_id = $OBJ AND seq = 1",
			"a change to a page the log does not have at seq 1" },
	};
	char d1[64];
	dobj_rt *a;
	size_t i;

	a = node(testhost_tmpdir(d1, "dobj-snap"), -1);
	for (i = 0; i < sizeof(lies) / sizeof(*lies); i++)
		counts(a, lies[i].name, 0, 6);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
	for (i = 0; i < sizeof(lies) / sizeof(*lies); i++)
		expect_damaged(lies[i].name, lies[i].fix, lies[i].words);
}

/* A snapshot whose header claims no pages, under the checksum of no bytes,
 * and no log row after it: served as an empty database (the object's data
 * gone), though no compaction makes a snapshot of nothing. */
static void test_a_snapshot_of_no_pages_is_a_clear_error(void)
{
	char d1[64];
	dobj_rt *a;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, "no-pages", 0, 6);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
	CHECK(about("no-pages", "SELECT 1 FROM dobj_snapshot WHERE object_id = $OBJ") == 1);
	about("no-pages", "DELETE FROM dobj_wal WHERE object_id = $OBJ AND seq > (SELECT seq "
		"FROM dobj_snapshot WHERE object_id = $OBJ)");
	expect_damaged("no-pages", "UPDATE dobj_snapshot SET db = overlay(overlay(substring(db "
		"from 1 for 68) placing int4send(0) from 33) placing sha256(''::bytea) from 37) "
		"WHERE object_id = $OBJ", "a snapshot whose header does not match its row");
}

/* A snapshot (with its header) one short of the last seq there is: the
 * next write's seq was the last, the one after it wrapped to -2^63 and was
 * acknowledged, then never restored (the log after a snapshot is read by
 * seq).  A seq past 2^62 (146,000 years of a million writes a second) is
 * refused. */
static void test_a_seq_at_the_end_of_its_range_is_a_clear_error(void)
{
	char d1[64];
	dobj_rt *a;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, "seq-max", 0, 6);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
	expect_damaged("seq-max", "UPDATE dobj_snapshot SET seq = 9223372036854775806, db = "
		"overlay(db placing int8send(9223372036854775806) from 17) WHERE object_id = $OBJ",
		"a seq at the end of its range at seq 9223372036854775806");
}

/* A database larger than the part size (4 KiB here, 16 MiB by default) is
 * snapshotted in parts, restored from them part by part, compacted again
 * from them; a part missing, damaged or cut short is a clear error. */
static void test_a_big_database_is_snapshotted_in_parts(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;

	{
		dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
		co.url = pg.url;
		co.snapshot_part_bytes = 1000;
		CHECK_EQ_INT(dobj_cluster_opts_check(&co), DOBJ_EARG);
		CHECK(strstr(dobj_error_last(), "snapshot part size must be from 1 KiB") != NULL);
		co.snapshot_part_bytes = 1024;
		CHECK_EQ_INT(dobj_cluster_opts_check(&co), DOBJ_OK);
	}
	part_bytes = 4096;
	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, "parts", 0, 4);
	counts(a, "parts", 4, 4);
	counts(a, "parts", 8, 4);
	counts(a, "parts-1", 0, 4);
	counts(a, "parts-2", 0, 4);
	counts(a, "parts-3", 0, 4);
	counts(a, "parts-4", 0, 4);
	dobj_rt_free(a);
	/* A header in the row, the image in parts (of one snapshot: an older
	 * one's went with it). */
	CHECK_EQ_INT(about("parts", "SELECT octet_length(db) FROM dobj_snapshot WHERE object_id = $OBJ"),
		76);
	CHECK(about("parts", "SELECT count(*) FROM dobj_snapshot_part WHERE object_id = $OBJ") >= 3);
	CHECK_EQ_INT(about("parts", "SELECT count(DISTINCT seq) FROM dobj_snapshot_part "
		"WHERE object_id = $OBJ"), 1);
	CHECK_EQ_INT(about("parts", "SELECT count(*) FROM dobj_snapshot_part p JOIN dobj_snapshot s "
		"USING (ns, object_id, seq) WHERE object_id = $OBJ") ,
		about("parts", "SELECT count(*) FROM dobj_snapshot_part WHERE object_id = $OBJ"));
	CHECK(about("parts", "SELECT max(octet_length(data)) FROM dobj_snapshot_part "
		"WHERE object_id = $OBJ") == 4096);
	/* Another node, parts of 16 MiB: restores from the parts, and its own
	 * compaction (one row again) drops them. */
	part_bytes = 0;
	b = node(testhost_tmpdir(d2, "dobj-snap"), 1);
	expect(b, "parts", "rows", "3");
	counts(b, "parts", 12, 16);
	CHECK(about("parts", "SELECT octet_length(db) FROM dobj_snapshot WHERE object_id = $OBJ") > 76);
	CHECK_EQ_INT(about("parts", "SELECT count(*) FROM dobj_snapshot_part WHERE object_id = $OBJ"),
		0);
	dobj_rt_free(b);
	testhost_rm_rf(d2);
	b = node(testhost_tmpdir(d2, "dobj-snap"), -1);
	s = stub_for(b, "parts");
	CHECK_STR(fetch(b, s, "rows", NULL), "4");
	CHECK_STR(fetch(b, s, "count", NULL), "29");
	dobj_stub_free(s);
	dobj_rt_free(b);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
	expect_damaged("parts-1", "DELETE FROM dobj_snapshot_part WHERE object_id = $OBJ AND part = 1",
		"a snapshot part missing");
	expect_damaged("parts-2", "UPDATE dobj_snapshot_part SET data = set_byte(data, 10, "
		"get_byte(data, 10) # 1) WHERE object_id = $OBJ AND part = 0",
		"a snapshot whose checksum does not match");
	expect_damaged("parts-3", "UPDATE dobj_snapshot_part SET data = substring(data from 1 for 100) "
		"WHERE object_id = $OBJ AND part = 0", "a snapshot part missing or cut short");
	/* A header that claims 4 G pages in 4 G parts of a page: checked
	 * against what the parts hold before the file is sized (16 TiB). */
	expect_damaged("parts-4", "UPDATE dobj_snapshot SET db = overlay(overlay(db placing "
		"'\\xffffffff'::bytea from 33) placing '\\x00001000ffffffff'::bytea from 69) "
		"WHERE object_id = $OBJ", "its parts hold 16384 of its 17592186040320 bytes");
}

/* The log changed by `fix` (a format with the object's hex id, then the
 * seq `at` rows after the snapshot's) while the object is
 * live: its next compaction fails, with a log line that says `words`, and
 * the log is kept. */
static void not_compacted(const char *name, int at, const char *fix, const char *words)
{
	char d1[64];
	dobj_rt *a;
	dobj_stub *s;
	PGconn *t;
	long long snap;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, name, 0, 3);
	snap = about(name, "SELECT seq FROM dobj_snapshot WHERE object_id = $OBJ");
	CHECK(snap > 0);
	/* The test holds dobj_snapshot: the next compaction waits for it,
	 * then finds the row the test damaged meanwhile. */
	t = pgtest_connect(&pg);
	pgtest_sql(&pg, t, "BEGIN");
	pgtest_sql(&pg, t, "LOCK TABLE dobj_snapshot IN ACCESS EXCLUSIVE MODE");
	s = stub_for(a, name);
	/* Enough log for a compaction (at least the snapshot's size: the
	 * sql steps' whole pages; a count is a few bytes). */
	for (int i = 4; i <= 10; i++) {
		char want[16];
		snprintf(want, sizeof(want), "%d", i);
		CHECK_STR(fetch(a, s, "count", NULL), want);
	}
	CHECK_STR(fetch(a, s, "sql", NULL), "ok");
	CHECK_STR(fetch(a, s, "sql", NULL), "ok");
	{
		char hex[DOBJ_ID_HEX_LEN + 1];
		obj_hex(name, hex);
		pgtest_sqlf(&pg, t, fix, hex, snap + at);
	}
	log_calls = 0;
	pgtest_sql(&pg, t, "COMMIT");
	PQfinish(t);
	CHECK_EQ_INT(dobj_rt_run(a, NULL, NULL), DOBJ_OK); /* the compaction ends */
	CHECK(dobj_rt_process(a) >= 0); /* its log line (a timer due now) */
	CHECK(log_calls >= 1);
	CHECK(strstr(log_msg, "did not write a snapshot") != NULL);
	if (!strstr(log_msg, words))
		fprintf(stderr, "unexpected: %s\n", log_msg);
	CHECK(strstr(log_msg, words) != NULL);
	CHECK_EQ_INT(about(name, "SELECT seq FROM dobj_snapshot WHERE object_id = $OBJ"), snap);
	CHECK_EQ_INT(about(name, "SELECT count(*) FROM dobj_wal WHERE object_id = $OBJ"), 10);
	dobj_stub_free(s);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
}

/* A log row damaged while its object is live is never built into a
 * snapshot (whose own checksum would then vouch for it): the compaction
 * fails, says why, and the log is kept. */
static void test_a_damaged_log_row_is_not_compacted(void)
{
	not_compacted("rot", 1, "UPDATE dobj_wal SET frames = set_byte(frames, 20, get_byte(frames, "
		"20) # 4) WHERE object_id = '\\x%s'::bytea AND seq = %lld",
		"a log row whose checksum does not match");
	/* Under valid checksums, the rows after the snapshot claim a database
	 * of 4 G pages (16 TiB, which the compaction would have uploaded). */
	not_compacted("rot-size", 0, "UPDATE dobj_wal SET frames = overlay(frames placing "
		"'\\xffffffff'::bytea from 5) WHERE object_id = '\\x%1$s'::bytea AND seq > %2$lld; "
		"UPDATE dobj_wal SET sum = sha256(object_id || int8send(seq) || int8send(epoch) || "
		"sha256(frames)) WHERE object_id = '\\x%1$s'::bytea AND seq > %2$lld",
		"pages that do not make the database they claim");
}

/* A node that lost the object to another has its snapshot refused: it is
 * held (behind a row lock of the test's) until the takeover happened. */
static void test_a_stale_owners_snapshot_is_refused_by_the_fence(void)
{
	char d1[64], d2[64];
	dobj_rt *a, *b;
	dobj_stub *s;
	PGconn *t;
	long long snap;

	a = node(testhost_tmpdir(d1, "dobj-snap"), 1);
	counts(a, "stale", 0, 4);
	snap = about("stale", "SELECT seq FROM dobj_snapshot WHERE object_id = $OBJ");
	CHECK(snap > 0);
	/* The test holds the snapshot row: A's next compaction waits on it. */
	t = pgtest_connect(&pg);
	pgtest_sql(&pg, t, "BEGIN");
	{
		char hex[DOBJ_ID_HEX_LEN + 1];
		obj_hex("stale", hex);
		CHECK_EQ_INT(pgtest_sqlf(&pg, t, "SELECT seq FROM dobj_snapshot WHERE "
			"object_id = '\\x%s'::bytea FOR UPDATE", hex), snap);
	}
	s = stub_for(a, "stale");
	CHECK_STR(fetch(a, s, "count", NULL), "5");
	/* Log as big as the database (a count is a few bytes). */
	CHECK_STR(fetch(a, s, "sql", NULL), "ok");
	CHECK_STR(fetch(a, s, "sql", NULL), "ok");
	CHECK_STR(fetch(a, s, "count", NULL), "6");
	/* A's lease lapses (as after a pause) and B takes the object over. */
	lease_lapse(&pg, dobj_rt_cluster_node(a));
	b = node(testhost_tmpdir(d2, "dobj-snap"), -1);
	{
		dobj_stub *sb = stub_for(b, "stale");
		CHECK_STR(fetch(b, sb, "count", NULL), "7");
		dobj_stub_free(sb);
	}
	log_calls = 0;
	pgtest_sql(&pg, t, "COMMIT");
	PQfinish(t);
	CHECK_EQ_INT(dobj_rt_run(a, NULL, NULL), DOBJ_OK); /* A's compaction ends */
	CHECK(dobj_rt_process(a) >= 0); /* its log line (a timer due now) */
	CHECK(log_calls >= 1);
	CHECK(strstr(log_msg, "the snapshot was refused") != NULL);
	CHECK_EQ_INT(about("stale", "SELECT seq FROM dobj_snapshot WHERE object_id = $OBJ"), snap);
	dobj_stub_free(s);
	dobj_rt_free(a);
	/* Nothing was lost: B goes on, and a third node restores it all. */
	expect(b, "stale", "count", "8");
	dobj_rt_free(b);
	testhost_rm_rf(d2);
	b = node(testhost_tmpdir(d2, "dobj-snap"), -1);
	s = stub_for(b, "stale");
	CHECK_STR(fetch(b, s, "count", NULL), "9");
	CHECK_STR(fetch(b, s, "rows", NULL), "3");
	dobj_stub_free(s);
	dobj_rt_free(b);
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

/* The schema of version 1 (as dobj created it before snapshots). */
static const char schema_v1[] =
	"CREATE TABLE dobj_schema_version (version integer NOT NULL);"
	"INSERT INTO dobj_schema_version VALUES (1);"
	"CREATE TABLE dobj_node (node_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
	" addr text NOT NULL, started_at timestamptz NOT NULL DEFAULT now(),"
	" lease_until timestamptz NOT NULL, status text NOT NULL DEFAULT 'live');"
	"CREATE TABLE dobj_owner (ns text NOT NULL, object_id bytea NOT NULL, epoch bigint NOT NULL,"
	" node_id bigint, PRIMARY KEY (ns, object_id));"
	"CREATE TABLE dobj_wal (ns text NOT NULL, object_id bytea NOT NULL, seq bigint NOT NULL,"
	" epoch bigint NOT NULL, frames bytea NOT NULL, PRIMARY KEY (ns, object_id, seq));"
	"ALTER TABLE dobj_wal ALTER frames SET STORAGE EXTERNAL;"
	"CREATE TABLE dobj_snapshot (ns text NOT NULL, object_id bytea NOT NULL, seq bigint NOT NULL,"
	" db bytea NOT NULL, PRIMARY KEY (ns, object_id));"
	"CREATE TABLE dobj_alarm (ns text NOT NULL, object_id bytea NOT NULL,"
	" scheduled_at bigint NOT NULL, name bytea, PRIMARY KEY (ns, object_id));"
	"CREATE INDEX dobj_alarm_due ON dobj_alarm (scheduled_at);";

/* What version 2 added (snapshot epochs). */
static const char schema_v2[] =
	"ALTER TABLE dobj_snapshot ADD COLUMN epoch bigint NOT NULL DEFAULT 0;"
	"ALTER TABLE dobj_snapshot ALTER db SET STORAGE EXTERNAL;"
	"UPDATE dobj_schema_version SET version = 2;";

/* A log written by an older dobj (rows without checksums) in a database
 * of schema `version`: dobj cluster init upgrades it to version 3 (the
 * rows get their checksums from their bytes) and a node restores it. */
static void migrated_and_restored(int version)
{
	char d1[64], url[300], q[600], hex[DOBJ_ID_HEX_LEN + 1], *slash;
	PGconn *src, *dst;
	PGresult *r;
	dobj_rt *a;
	dobj_stub *s;
	int i, v = 0;
	char name[16];

	snprintf(name, sizeof(name), "old-%d", version);
	/* A log written without snapshots, copied into a database of the old
	 * schema (its rows without checksums). */
	a = node(testhost_tmpdir(d1, "dobj-snap"), -1);
	counts(a, name, 0, 3);
	dobj_rt_free(a);
	testhost_rm_rf(d1);
	pgtest_sql(&pg, NULL, "CREATE DATABASE dobj_v1");
	snprintf(url, sizeof(url), "%s", pg.url);
	slash = strrchr(url, '/');
	CHECK(slash != NULL);
	snprintf(slash, sizeof(url) - (size_t)(slash - url), "/dobj_v1");
	src = pgtest_connect(&pg);
	dst = PQconnectdb(url);
	CHECK(PQstatus(dst) == CONNECTION_OK);
	r = PQexec(dst, schema_v1);
	CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
	PQclear(r);
	if (version >= 2) {
		r = PQexec(dst, schema_v2);
		CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
		PQclear(r);
	}
	obj_hex(name, hex);
	snprintf(q, sizeof(q), "SELECT 'INSERT INTO dobj_wal VALUES (' || quote_literal(ns) || "
		"', ''\\x' || encode(object_id, 'hex') || '''::bytea, ' || seq || ', ' || epoch || "
		"', ''\\x' || encode(frames, 'hex') || '''::bytea)' FROM dobj_wal WHERE ns = 'snap-key' "
		"AND object_id = '\\x%s'::bytea ORDER BY seq", hex);
	r = PQexec(src, q);
	CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
	CHECK_EQ_INT(PQntuples(r), 4);
	for (i = 0; i < PQntuples(r); i++)
		pgtest_sql(&pg, dst, PQgetvalue(r, i, 0));
	PQclear(r);
	PQfinish(src);
	/* dobj cluster init upgrades it; a node restores the object from it. */
	CHECK_EQ_INT(dobj_cluster_init(url, 0, 0, &v), DOBJ_OK);
	CHECK_EQ_INT(v, DOBJ_CLUSTER_SCHEMA_VERSION);
	CHECK_EQ_INT(pgtest_sql(&pg, dst, "SELECT version FROM dobj_schema_version"), DOBJ_CLUSTER_SCHEMA_VERSION);
	CHECK_EQ_INT(pgtest_sql(&pg, dst, "SELECT count(*) FROM dobj_wal WHERE sum IS NULL"), 0);
	a = node_at(url, testhost_tmpdir(d1, "dobj-snap"), 1);
	s = stub_for(a, name);
	CHECK_STR(fetch(a, s, "count", NULL), "4");
	CHECK_STR(fetch(a, s, "count", NULL), "5");
	CHECK_STR(fetch(a, s, "count", NULL), "6");
	CHECK_STR(fetch(a, s, "rows", NULL), "1");
	dobj_stub_free(s);
	CHECK_EQ_INT(dobj_rt_run(a, NULL, NULL), DOBJ_OK);
	CHECK(pgtest_sql(&pg, dst, "SELECT count(*) FROM dobj_snapshot") == 1);
	dobj_rt_free(a);
	PQfinish(dst);
	pgtest_sql(&pg, NULL, "DROP DATABASE dobj_v1");
	testhost_rm_rf(d1);
}

static void test_a_version_1_schema_is_migrated_and_its_log_restored(void)
{
	migrated_and_restored(1);
}

static void test_a_version_2_schema_is_migrated_and_its_log_restored(void)
{
	migrated_and_restored(2);
}

int main(void)
{
	if (pgtest_start(&pg) < 0)
		return 1;
	CHECK_EQ_INT(dobj_cluster_init(pg.url, 0, 0, NULL), DOBJ_OK);
	RUN(test_the_log_is_compacted_and_another_node_restores_it);
	RUN(test_a_cached_file_at_the_latest_seq_is_kept_and_only_then);
	RUN(test_a_cache_behind_postgresql_is_not_used);
	RUN(test_a_cached_file_is_kept_whether_its_head_is_a_log_row_or_the_snapshot);
	RUN(test_a_cached_file_changed_behind_its_marker_is_rebuilt);
	RUN(test_the_same_seq_and_epoch_written_elsewhere_is_not_the_cache);
	RUN(test_a_release_hashes_off_the_runtimes_thread_ahead_of_the_next_activation);
	RUN(test_reset_leaves_no_cache_marker_at_work_behind_it);
	RUN(test_reset_leaves_no_compaction_at_work_behind_it);
	RUN(test_a_count_appends_the_bytes_it_changed);
	RUN(test_stored_bytes_that_lie_are_a_clear_error);
	RUN(test_rows_that_lie_under_a_valid_checksum_are_a_clear_error);
	RUN(test_a_seq_at_the_end_of_its_range_is_a_clear_error);
	RUN(test_a_snapshot_of_no_pages_is_a_clear_error);
	RUN(test_a_stale_owners_snapshot_is_refused_by_the_fence);
	RUN(test_a_damaged_log_row_is_not_compacted);
	RUN(test_a_big_database_is_snapshotted_in_parts);
	RUN(test_a_version_1_schema_is_migrated_and_its_log_restored);
	RUN(test_a_version_2_schema_is_migrated_and_its_log_restored);
	pgtest_stop(&pg);
	CHECK_EQ_INT(live_values, 0);
	return DONE();
}
