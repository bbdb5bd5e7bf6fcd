/*
 * Cluster figures for `make bench` (bench/cluster_bench.py starts the
 * PostgreSQL):
 *   bench_cluster URL SECONDS [ROW...]
 * prints "NAME OPS_PER_SECOND" lines:
 *   raw_append_1    fenced appends straight through libpq, one connection
 *                   (the statement dobj runs, 4 KiB of pages each)
 *   raw_append_16   the same from 16 connections (threads), 16 objects
 *   dobj_inc_1      durable increments of one object through the cluster
 *                   (a C class: get, put, commit, fenced append)
 *   dobj_inc_100    durable increments of 100 objects spread over 3 node
 *                   processes from 16 concurrent callers (6, 5, 5 on the
 *                   nodes), each calling every object: two calls in three
 *                   are routed to the object's node
 *   dobj_inc_100_own  the same with each node's callers on its own objects
 *                   only (no routing: the commit pipeline alone)
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dobj.h"

static const char *url;
static double seconds;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static PGconn *connect_or_die(void)
{
	PGconn *c = PQconnectdb(url);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "bench_cluster: %s", PQerrorMessage(c));
		exit(1);
	}
	return c;
}

static void exec_or_die(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "bench_cluster: %s: %s", sql, PQerrorMessage(c));
		exit(1);
	}
	PQclear(r);
}

typedef struct worker {
	int index;
	long done;
	double until;
} worker;

/* One connection appending to its own object with the epoch checked, as a
 * node does (cluster.c's statement). */
static void *append_loop(void *arg)
{
	worker *w = arg;
	PGconn *c = connect_or_die();
	unsigned char id[32] = { 0 }, page[4108];
	char seq[32], sql[256];
	const char *v[6];
	int lens[6] = { 5, 32, 0, 0, (int)sizeof(page), 0 };
	int fmts[6] = { 0, 1, 0, 0, 1, 0 };
	long n;

	memset(page, 0xA5, sizeof(page));
	id[0] = (unsigned char)w->index;
	id[1] = 0xBE;
	/* Node 0: no real node has it (identities start at 1), so a real
	 * node's leave does not release these rows. */
	snprintf(sql, sizeof(sql), "INSERT INTO dobj_owner VALUES ('bench', '\\x%02xbe%060d', 1, 0) "
		"ON CONFLICT DO NOTHING", w->index, 0);
	exec_or_die(c, sql);
	v[0] = "bench"; v[1] = (const char *)id; v[2] = seq; v[3] = "1"; v[4] = (const char *)page;
	v[5] = "0";
	for (n = 0; now_s() < w->until; n++) {
		PGresult *r;
		snprintf(seq, sizeof(seq), "%ld", n + 1 + (long)w->index * 100000000L);
		r = PQexecParams(c, "INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames) "
			"SELECT $1, $2, $3, $4, $5 FROM dobj_owner "
			"WHERE ns = $1 AND object_id = $2 AND epoch = $4 AND node_id = $6 FOR SHARE",
			6, NULL, v, lens, fmts, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdTuples(r), "1") != 0) {
			fprintf(stderr, "bench_cluster: append: %s", PQerrorMessage(c));
			exit(1);
		}
		PQclear(r);
	}
	w->done = n;
	PQfinish(c);
	return NULL;
}

static double raw_appends(int conns)
{
	pthread_t th[16];
	worker w[16];
	PGconn *c = connect_or_die();
	double t0;
	long total = 0;
	int i;

	exec_or_die(c, "DELETE FROM dobj_wal WHERE ns = 'bench'");
	PQfinish(c);
	t0 = now_s();
	for (i = 0; i < conns; i++) {
		w[i].index = i;
		w[i].done = 0;
		w[i].until = t0 + seconds;
		pthread_create(&th[i], NULL, append_loop, &w[i]);
	}
	for (i = 0; i < conns; i++) {
		pthread_join(th[i], NULL);
		total += w[i].done;
	}
	return (double)total / (now_s() - t0);
}

/* ---------------------------------------------------------- through dobj */

static void drop_value(void *data, void *value)
{
	(void)data;
	free(value);
}

static int inc_step(dobj_task *t, void *data)
{
	dobj_storage *st;
	const void *val;
	size_t len;
	long n = 0;
	char buf[32];
	int rc;

	(void)data;
	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	if (dobj_kv_get(st, "n", 1, &val, &len) == 1) {
		snprintf(buf, sizeof(buf), "%.*s", (int)len, (const char *)val);
		n = strtol(buf, NULL, 10);
	}
	snprintf(buf, sizeof(buf), "%ld", n + 1);
	if ((rc = dobj_kv_put(st, "n", 1, buf, strlen(buf))) < 0)
		return rc;
	/* A core value: it can cross nodes without a binding's codec. */
	dobj_task_return_value(t, dobj_val_integer(n + 1), (void (*)(void *))dobj_val_free);
	return DOBJ_OK;
}

static int is_done(void *arg)
{
	return dobj_task_done(arg);
}

static void mark_fired(void *data, int fired)
{
	*(int *)data = 1;
	(void)fired;
}

static int flag_set(void *arg)
{
	return *(int *)arg;
}

static double dobj_increments(void)
{
	char dir[] = "/tmp/dobj-bench-cluster-XXXXXX", cmd[96];
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_class k = { 0 };
	dobj_rt *rt;
	dobj_ns *ns;
	dobj_stub *s;
	dobj_id id;
	double t0, until;
	long n;

	if (!mkdtemp(dir))
		return 0;
	o.host.release = drop_value;
	o.storage_dir = dir;
	o.idle_timeout_ms = -1;
	co.url = url;
	co.node_addr = "127.0.0.1:0"; /* a node serves objects only with an address */
	if (dobj_rt_new(&rt, &o) < 0 || dobj_rt_cluster(rt, &co) < 0) {
		fprintf(stderr, "bench_cluster: %s\n", dobj_error_last());
		exit(1);
	}
	k.name = "Inc";
	k.step = inc_step;
	dobj_ns_new(&ns, rt, "INC", 3, "bench-inc", 9, &k);
	dobj_id_from_name(dobj_ns_idkey(ns), "x", 1, &id);
	dobj_stub_new(&s, ns, &id, "x", 1);
	t0 = now_s();
	until = t0 + seconds;
	for (n = 0; now_s() < until; n++) {
		dobj_task *t;
		if (dobj_stub_call(&t, s, DOBJ_CALL_RPC, "inc", NULL, 0, NULL, NULL, NULL) < 0)
			exit(1);
		dobj_rt_run(rt, is_done, t);
		if (dobj_task_result(t, NULL, NULL, NULL) != DOBJ_OK) {
			const char *m;
			dobj_task_result(t, NULL, &m, NULL);
			fprintf(stderr, "bench_cluster: inc: %s\n", m);
			exit(1);
		}
		dobj_task_unref(t);
	}
	t0 = (double)n / (now_s() - t0);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_cluster: could not remove %s\n", dir);
	return t0;
}

/* ------------------------------------------- many objects, several nodes */

typedef struct callers {
	dobj_stub **stubs;
	int nstubs, next, live;
	long done, failed;
	double start, until;
} callers;

static void call_next(callers *c);

static void call_done(dobj_task *t, void *data)
{
	callers *c = data;
	double now = now_s();

	if (dobj_task_result(t, NULL, NULL, NULL) != DOBJ_OK) {
		const char *m;
		dobj_task_result(t, NULL, &m, NULL);
		if (c->failed++ == 0)
			fprintf(stderr, "bench_cluster: inc: %s\n", m);
	} else if (now >= c->start && now < c->until) {
		c->done++;
	}
	if (now < c->until)
		call_next(c);
	else
		c->live--;
}

/* One caller's next call, on the next object (callers spread over them). */
static void call_next(callers *c)
{
	dobj_task *t;

	if (dobj_stub_call_ex(&t, c->stubs[c->next], DOBJ_CALL_RPC, "inc", NULL, 0, dobj_val_array(),
		(void (*)(void *))dobj_val_free, call_done, c) < 0)
		exit(1);
	c->next = (c->next + 1) % c->nstubs;
	dobj_task_unref(t);
}

static int callers_gone(void *arg)
{
	return ((callers *)arg)->live == 0;
}

/*
 * A node process (listening on `port` when routed): it activates the
 * objects i with i % nodes == index before the clock starts; then its
 * `ncallers` callers call every object (routed: the others' objects go
 * to their nodes) or only its own.
 */
static long node_run(int index, int nodes, int objects, int ncallers, int port, int routed,
	double start, double until)
{
	char dir[] = "/tmp/dobj-bench-cluster-XXXXXX", cmd[96], name[32], addr[32];
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_class k = { 0 };
	callers c = { 0 };
	dobj_stub **own;
	dobj_rt *rt;
	dobj_ns *ns;
	dobj_id id;
	int i, nown = 0;

	if (!mkdtemp(dir))
		exit(1);
	o.host.release = drop_value;
	o.storage_dir = dir;
	o.idle_timeout_ms = -1;
	co.url = url;
	snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
	co.node_addr = addr;
	if (dobj_rt_new(&rt, &o) < 0 || dobj_rt_cluster(rt, &co) < 0) {
		fprintf(stderr, "bench_cluster: %s\n", dobj_error_last());
		exit(1);
	}
	k.name = "Inc";
	k.step = inc_step;
	dobj_ns_new(&ns, rt, "INC", 3, routed ? "bench-routed" : "bench-many",
		routed ? 12 : 10, &k);
	c.stubs = calloc((size_t)objects, sizeof(*c.stubs));
	own = calloc((size_t)objects, sizeof(*own));
	for (i = 0; i < objects; i++) {
		if (!routed && i % nodes != index)
			continue;
		snprintf(name, sizeof(name), "obj-%d", i);
		dobj_id_from_name(dobj_ns_idkey(ns), name, strlen(name), &id);
		dobj_stub_new(&c.stubs[c.nstubs], ns, &id, name, strlen(name));
		if (i % nodes == index)
			own[nown++] = c.stubs[c.nstubs];
		c.nstubs++;
	}
	for (i = 0; i < nown; i++) {
		/* Activated (claimed, restored) here before the clock starts. */
		dobj_task *t;
		if (dobj_stub_call_ex(&t, own[i], DOBJ_CALL_RPC, "inc", NULL, 0, dobj_val_array(),
			(void (*)(void *))dobj_val_free, NULL, NULL) < 0)
			exit(1);
		dobj_rt_run(rt, is_done, t);
		dobj_task_unref(t);
	}
	free(own);
	/* Serve the others' calls until the clock starts (a strong timer
	 * keeps dobj_rt_run waiting on the fd). */
	{
		dobj_timer *tm;
		int fired = 0;
		dobj_rt_timer(rt, (start - now_s()) * 1e3, mark_fired, &fired, &tm);
		dobj_rt_run(rt, flag_set, &fired);
	}
	c.start = start;
	c.until = until;
	for (i = 0; i < ncallers; i++) {
		c.next = (int)((long)(i * nodes + index) * c.nstubs / (ncallers * nodes)) % c.nstubs;
		c.live++;
		call_next(&c);
	}
	dobj_rt_run(rt, callers_gone, &c);
	/* The others' calls are still coming until their clocks stop. */
	{
		dobj_timer *tm;
		int fired = 0;
		dobj_rt_timer(rt, 500, mark_fired, &fired, &tm);
		dobj_rt_run(rt, flag_set, &fired);
	}
	if (c.failed)
		fprintf(stderr, "bench_cluster: node %d: %ld calls failed\n", index, c.failed);
	for (i = 0; i < c.nstubs; i++)
		dobj_stub_free(c.stubs[i]);
	free(c.stubs);
	dobj_rt_free(rt);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_cluster: could not remove %s\n", dir);
	return c.done;
}

static double dobj_increments_many(int nodes, int objects, int ncallers, int routed)
{
	double start = now_s() + 4.0, until = start + seconds;
	int fds[8][2], i, port = 18210 + (int)(getpid() % 80);
	pid_t pids[8];
	long total = 0;

	for (i = 0; i < nodes; i++) {
		if (pipe(fds[i]) < 0 || (pids[i] = fork()) < 0)
			exit(1);
		if (pids[i] == 0) {
			/* Callers split as evenly as they go: 6, 5, 5. */
			int mine = ncallers / nodes + (i < ncallers % nodes);
			char out[32];
			long n;
			close(fds[i][0]);
			n = node_run(i, nodes, objects, mine, port + i, routed, start, until);
			snprintf(out, sizeof(out), "%ld\n", n);
			if (write(fds[i][1], out, strlen(out)) < 0)
				_exit(1);
			_exit(0);
		}
		close(fds[i][1]);
	}
	for (i = 0; i < nodes; i++) {
		char buf[32] = { 0 };
		int st;
		if (read(fds[i][0], buf, sizeof(buf) - 1) > 0)
			total += atol(buf);
		close(fds[i][0]);
		waitpid(pids[i], &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "bench_cluster: node %d failed\n", i);
			exit(1);
		}
	}
	return (double)total / seconds;
}

static void checkpoint(void)
{
	PGconn *c = connect_or_die();
	exec_or_die(c, "CHECKPOINT");
	PQfinish(c);
}

int main(int argc, char **argv)
{
	static char *all[] = { "raw_append_1", "dobj_inc_1", "raw_append_16", "dobj_inc_100",
		"dobj_inc_100_own", NULL };
	char **rows;

	if (argc < 3) {
		fprintf(stderr, "usage: bench_cluster URL SECONDS [ROW...]\n");
		return 2;
	}
	url = argv[1];
	seconds = atof(argv[2]);
	if (dobj_cluster_init(url, 0, 0, NULL) < 0) {
		fprintf(stderr, "bench_cluster: %s\n", dobj_error_last());
		return 1;
	}
	/* One connection, then dobj on one object (the pair the target
	 * compares), then sixteen connections; a checkpoint before each, so
	 * that no figure pays for the WAL of the one before it. */
	rows = argc > 3 ? argv + 3 : all;
	for (; *rows; rows++) {
		double v;
		checkpoint();
		if (!strcmp(*rows, "raw_append_1"))
			v = raw_appends(1);
		else if (!strcmp(*rows, "dobj_inc_1"))
			v = dobj_increments();
		else if (!strcmp(*rows, "raw_append_16"))
			v = raw_appends(16);
		else if (!strcmp(*rows, "dobj_inc_100"))
			v = dobj_increments_many(3, 100, 16, 1);
		else if (!strcmp(*rows, "dobj_inc_100_own"))
			v = dobj_increments_many(3, 100, 16, 0);
		else {
			fprintf(stderr, "bench_cluster: no row %s\n", *rows);
			return 2;
		}
		printf("%s %.0f\n", *rows, v);
		fflush(stdout);
	}
	return 0;
}
