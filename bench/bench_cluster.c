/*
 * Cluster figures for `make bench` (bench/cluster_bench.py starts the
 * PostgreSQL):
 *   bench_cluster URL SECONDS [ROUNDS [ROWS]]
 * prints "NAME OPS_PER_SECOND" lines (ROWS: which of them, a comma-separated
 * list of one, raw16, routed, own, many, all; all by default):
 *   raw_append_1    the floor: fenced appends straight through libpq, one
 *                   connection (the statement of dobj's one-row commit,
 *                   prepared, a record of the size an increment appends,
 *                   synchronous_commit on: the same durability and fence)
 *   raw_append_1_page  the same with records of a whole 4 KiB page (what a
 *                   design that ships pages appends per increment; what
 *                   dobj appended before its rows carried changed bytes)
 *   dobj_inc_1_row_bytes, dobj_inc_100_row_bytes  the mean size of the
 *                   records dobj appended (what raw_append_* append)
 *   dobj_inc_1      durable increments of one object through the cluster
 *                   (a C class: get, put, commit, fenced append)
 *   raw_append_1_pg_cpu_us, dobj_inc_1_pg_cpu_us  the CPU time of the
 *                   PostgreSQL backend serving each side, per operation, in
 *                   microseconds (read from /proc: the server is local)
 *   dobj_inc_1_cpu_us  this process's CPU (every thread) per increment
 *   raw_append_1_cpu_us  the floor client's CPU per append (libpq's side):
 *                   what dobj_inc_1_cpu_us compares with
 *   raw_append_1_busy50  the floor with 50 us of client CPU between one
 *                   append's answer and the next append (what the node's
 *                   own work per increment costs on this machine), and its
 *                   backend's CPU per append (raw_append_1_busy50_pg_cpu_us)
 *   raw_append_16   the floor from 16 connections (threads), 16 objects
 *   raw_append_16_page  the same with whole-page records
 *   dobj_inc_100    durable increments of 100 objects spread over 3 node
 *                   processes from 16 concurrent callers (6, 5, 5 on the
 *                   nodes), each calling every object: two calls in three
 *                   are routed to the object's node
 *   dobj_inc_100_own  the same with each node's callers on its own objects
 *                   only (no routing: the commit pipeline alone)
 *   dobj_inc_100_cpu_us, dobj_inc_100_own_cpu_us  the node processes' CPU
 *                   time (user + system, every thread) per increment, in
 *                   microseconds (PostgreSQL's not included)
 * The rows a target compares take turns: ROUNDS (4) windows of
 * SECONDS / ROUNDS each, so that a change of the machine's load (two cores
 * shared with other work) weighs on both alike.  Objects are activated
 * before the clock starts.
 */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dobj.h"

static const char *url;

/* The rows to measure (ROWS: a comma-separated list, all by default). */
enum { ROW_ONE = 1, ROW_RAW16 = 2, ROW_ROUTED = 4, ROW_OWN = 8, ROW_RAW16_PAGE = 16 };
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

/* The statement dobj's one-row commit runs (cluster_commit.c), prepared
 * once per connection as dobj's is: the floor is what a plain libpq client
 * pays for the same fenced, durable append. */
static const char append_sql[] = "INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames, sum) "
	"SELECT $1, $2, $3, $4, $5, $7 FROM dobj_owner "
	"WHERE ns = $1 AND object_id = $2 AND epoch = $4 AND node_id = $6 FOR SHARE";

/* The size of the record one increment appends: the bytes it changed in
 * one page (cluster_record.c: 12 + 8 + 8 + the run; 29-41 bytes here,
 * dobj_inc_1_row_bytes prints the run's mean), and of a whole 4 KiB page
 * with its headers (cluster_wal.c's capture). */
#define INC_RECORD_BYTES 40
#define PAGE_RECORD_BYTES 4112

typedef struct appender {
	PGconn *c;
	unsigned char id[32];
	long long seq;
} appender;

/* A connection appending to its own object with the epoch checked, as a
 * node does.  Node 0: no real node has it (identities start at 1), so a
 * real node's leave does not release these rows. */
static void appender_open(appender *a, int index)
{
	char sql[256];
	PGresult *r;

	memset(a, 0, sizeof(*a));
	a->c = connect_or_die();
	a->id[0] = (unsigned char)index;
	a->id[1] = 0xBE;
	a->seq = (long long)index * 100000000LL;
	snprintf(sql, sizeof(sql), "INSERT INTO dobj_owner VALUES ('bench', '\\x%02xbe%060d', 1, 0) "
		"ON CONFLICT DO NOTHING", index, 0);
	exec_or_die(a->c, sql);
	r = PQprepare(a->c, "append", append_sql, 7, NULL);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "bench_cluster: prepare: %s", PQerrorMessage(a->c));
		exit(1);
	}
	PQclear(r);
}

/* Appends of records of `bytes` until `until`, spending `busy_us` of CPU
 * between one append's answer and the next append (0: none, the floor);
 * how many. */
static long appender_run(appender *a, double until, double busy_us, int bytes)
{
	static unsigned char page[PAGE_RECORD_BYTES], sum[32];
	char seq[32];
	/* The row's checksum is a constant here: the floor is PostgreSQL's
	 * cost, dobj computes it on its side (cluster_wal.c). */
	const char *v[7] = { "bench", (const char *)a->id, seq, "1", (const char *)page, "0",
		(const char *)sum };
	int lens[7] = { 5, 32, 0, 0, bytes, 0, 32 };
	int fmts[7] = { 0, 1, 0, 0, 1, 0, 1 };
	long n;

	memset(page, 0xA5, sizeof(page));
	for (n = 0; now_s() < until; n++) {
		PGresult *r;
		snprintf(seq, sizeof(seq), "%lld", ++a->seq);
		r = PQexecPrepared(a->c, "append", 7, v, lens, fmts, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK || strcmp(PQcmdTuples(r), "1") != 0) {
			fprintf(stderr, "bench_cluster: append: %s", PQerrorMessage(a->c));
			exit(1);
		}
		PQclear(r);
		if (busy_us > 0) {
			double end = now_s() + busy_us / 1e6;
			while (now_s() < end)
				;
		}
	}
	return n;
}

static void sleep_until(double t)
{
	double left = t - now_s();
	struct timespec ts;

	if (left <= 0)
		return;
	ts.tv_sec = (time_t)left;
	ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
	while (nanosleep(&ts, &ts) < 0)
		;
}

/* Time windows: a side runs only inside its own, so that sides measured
 * in one run take turns under the same load (two shared cores: the load
 * of other processes changes from second to second). */
#define MAX_WINDOWS 16
typedef struct windows {
	int n;
	double start[MAX_WINDOWS], until[MAX_WINDOWS];
} windows;

static double windows_total(const windows *w)
{
	double t = 0;
	for (int i = 0; i < w->n; i++)
		t += w->until[i] - w->start[i];
	return t;
}

typedef struct worker {
	appender a;
	const windows *w;
	int bytes;
	long done;
} worker;

static void *append_windows(void *arg)
{
	worker *k = arg;

	for (int i = 0; i < k->w->n; i++) {
		sleep_until(k->w->start[i]);
		k->done += appender_run(&k->a, k->w->until[i], 0, k->bytes);
	}
	return NULL;
}

/* `conns` connections appending records of `bytes` in the windows,
 * concurrently; appends/s. */
static double raw_appends(int conns, const windows *w, int bytes)
{
	pthread_t th[16];
	worker k[16];
	long total = 0;
	int i;

	for (i = 0; i < conns; i++) {
		memset(&k[i], 0, sizeof(k[i]));
		/* Each floor its own objects (the whole-page one 32-47). */
		appender_open(&k[i].a, i + (bytes == PAGE_RECORD_BYTES ? 32 : 0));
		k[i].w = w;
		k[i].bytes = bytes;
	}
	for (i = 0; i < conns; i++)
		pthread_create(&th[i], NULL, append_windows, &k[i]);
	for (i = 0; i < conns; i++) {
		pthread_join(th[i], NULL);
		total += k[i].done;
		PQfinish(k[i].a.c);
	}
	return (double)total / windows_total(w);
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

static void inc_once(dobj_rt *rt, dobj_stub *s)
{
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

/* CPU seconds (user + system) a PostgreSQL backend has used, read from
 * /proc (the server runs on this machine); 0 when it cannot be read. */
static double backend_cpu_s(int pid)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	if (pid <= 0 || !(f = fopen(path, "r")))
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	/* Fields 14 and 15 (utime, stime) follow the ")" that ends field 2. */
	if (!(p = strrchr(buf, ')')) ||
		sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* This process's CPU seconds (user + system, every thread). */
static double self_cpu_s(void)
{
	struct rusage u;

	getrusage(RUSAGE_SELF, &u);
	return (double)u.ru_utime.tv_sec + (double)u.ru_utime.tv_usec / 1e6 +
		(double)u.ru_stime.tv_sec + (double)u.ru_stime.tv_usec / 1e6;
}

/* The process id of the backend serving the node's runtime connection
 * (application_name 'dobj runtime', cluster_pg.c), or 0. */
static int runtime_backend(PGconn *c)
{
	PGresult *r = PQexec(c, "SELECT pid FROM pg_stat_activity "
		"WHERE application_name = 'dobj runtime' ORDER BY backend_start DESC LIMIT 1");
	int pid = 0;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
		pid = atoi(PQgetvalue(r, 0, 0));
	PQclear(r);
	return pid;
}

/* What one_object measures: ops/s of each side, PostgreSQL's CPU per
 * operation (the serving backend's, in microseconds) and the node's. */
typedef struct one_figures {
	double raw, inc, raw_busy, raw_page;
	double raw_pg_us, inc_pg_us, raw_busy_pg_us, raw_page_pg_us, inc_node_us, raw_client_us;
} one_figures;

/* The CPU a client spends between two appends in the floor_busy row:
 * about what the node spends on one increment's critical path (the answer
 * delivered, the step, SQLite's commit, the capture, the checksum). */
#define BUSY_US 50.0

/* Durable increments of one object through the cluster, the
 * one-connection floor, the floor with BUSY_US of client CPU between
 * appends, and the floor of whole pages, taking turns (`rounds` windows
 * each, the order rotated every round).  The third tells how much a client's own work between appends
 * costs on this machine beyond its length (the server's side waking up
 * again, which the node's work also pays for). */
static void one_object(int rounds, one_figures *f)
{
	char dir[] = "/tmp/dobj-bench-cluster-XXXXXX", cmd[96];
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_class k = { 0 };
	appender a;
	dobj_rt *rt;
	dobj_ns *ns;
	dobj_stub *s;
	dobj_id id;
	double slice = seconds / rounds, t[4] = { 0 }, pg_cpu[4] = { 0 }, node_cpu = 0;
	double client_cpu = 0;
	long n[4] = { 0 };
	int raw_pid, inc_pid;

	if (!mkdtemp(dir))
		exit(1);
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
	inc_once(rt, s); /* activated (claimed, restored) before the clock */
	appender_open(&a, 99);
	raw_pid = PQbackendPID(a.c);
	inc_pid = runtime_backend(a.c);
	for (int r = 0; r < rounds; r++) {
		for (int turn = 0; turn < 4; turn++) {
			int side = (turn + r) % 4, pid = side ? raw_pid : inc_pid;
			double t0 = now_s(), until = t0 + slice, c0 = backend_cpu_s(pid);
			double u0 = self_cpu_s();
			if (side) {
				n[side] += appender_run(&a, until, side == 2 ? BUSY_US : 0,
					side == 3 ? PAGE_RECORD_BYTES : INC_RECORD_BYTES);
				if (side == 1)
					client_cpu += self_cpu_s() - u0;
			} else {
				long done;
				for (done = 0; now_s() < until; done++)
					inc_once(rt, s);
				n[0] += done;
				node_cpu += self_cpu_s() - u0;
			}
			t[side] += now_s() - t0;
			pg_cpu[side] += backend_cpu_s(pid) - c0;
		}
	}
	PQfinish(a.c);
	f->inc = (double)n[0] / t[0];
	f->raw = (double)n[1] / t[1];
	f->raw_busy = (double)n[2] / t[2];
	f->raw_page = (double)n[3] / t[3];
	f->raw_page_pg_us = n[3] ? pg_cpu[3] * 1e6 / (double)n[3] : 0;
	f->inc_pg_us = n[0] ? pg_cpu[0] * 1e6 / (double)n[0] : 0;
	f->raw_pg_us = n[1] ? pg_cpu[1] * 1e6 / (double)n[1] : 0;
	f->raw_busy_pg_us = n[2] ? pg_cpu[2] * 1e6 / (double)n[2] : 0;
	f->inc_node_us = n[0] ? node_cpu * 1e6 / (double)n[0] : 0;
	f->raw_client_us = n[1] ? client_cpu * 1e6 / (double)n[1] : 0;
	dobj_stub_free(s);
	dobj_rt_free(rt);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "bench_cluster: could not remove %s\n", dir);
}

/* ------------------------------------------- many objects, several nodes */

/* User + system CPU seconds of a process (all its threads). */
static double cpu_s(const struct rusage *u)
{
	return (double)u->ru_utime.tv_sec + (double)u->ru_utime.tv_usec / 1e6 +
		(double)u->ru_stime.tv_sec + (double)u->ru_stime.tv_usec / 1e6;
}

typedef struct callers {
	dobj_stub **stubs;
	int nstubs, next, live;
	long done, failed;
	double until;
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
	} else if (now < c->until) {
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

/* Serve (the other nodes' calls) until `t`: a strong timer keeps
 * dobj_rt_run waiting on the fd. */
static void serve_until(dobj_rt *rt, double t)
{
	dobj_timer *tm;
	int fired = 0;

	dobj_rt_timer(rt, (t - now_s()) * 1e3, mark_fired, &fired, &tm);
	dobj_rt_run(rt, flag_set, &fired);
}

/*
 * A node process (listening on `port`): it activates the objects i with
 * i % nodes == index before the first window; then, in each window, its
 * `ncallers` callers call every object (routed: the others' objects go to
 * their nodes) or only its own.
 */
static long node_run(int index, int nodes, int objects, int ncallers, int port, int routed,
	const windows *w, double *cpu)
{
	struct rusage u0, u1;
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
	*cpu = 0;
	for (int win = 0; win < w->n; win++) {
		serve_until(rt, w->start[win]);
		c.until = w->until[win];
		for (i = 0; i < ncallers; i++) {
			c.next = (int)((long)(i * nodes + index) * c.nstubs / (ncallers * nodes)) %
				c.nstubs;
			c.live++;
			call_next(&c);
		}
		getrusage(RUSAGE_SELF, &u0);
		dobj_rt_run(rt, callers_gone, &c);
		getrusage(RUSAGE_SELF, &u1);
		*cpu += cpu_s(&u1) - cpu_s(&u0);
	}
	/* The others' calls are still coming until their windows end. */
	serve_until(rt, now_s() + 0.5);
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

typedef struct nodes {
	int n, fds[8];
	pid_t pids[8];
} nodes;

/* Three node processes (callers split as evenly as they go: 6, 5, 5)
 * running in the windows `w`. */
static void nodes_start(nodes *ns, int n, int objects, int ncallers, int port, int routed,
	const windows *w)
{
	int i, fd[2];

	ns->n = n;
	for (i = 0; i < n; i++) {
		if (pipe(fd) < 0 || (ns->pids[i] = fork()) < 0)
			exit(1);
		if (ns->pids[i] == 0) {
			int mine = ncallers / n + (i < ncallers % n);
			char out[64];
			double cpu;
			long done;
			close(fd[0]);
			done = node_run(i, n, objects, mine, port + i, routed, w, &cpu);
			snprintf(out, sizeof(out), "%ld %.6f\n", done, cpu);
			if (write(fd[1], out, strlen(out)) < 0)
				_exit(1);
			_exit(0);
		}
		close(fd[1]);
		ns->fds[i] = fd[0];
	}
}

/* Their increments per second of the windows; *cpu_us: the nodes' CPU
 * time (all their threads, user + system) per increment, in microseconds. */
static double nodes_wait(nodes *ns, const windows *w, double *cpu_us)
{
	double cpu = 0;
	long total = 0;

	for (int i = 0; i < ns->n; i++) {
		char buf[64] = { 0 }, *end;
		int st;
		if (read(ns->fds[i], buf, sizeof(buf) - 1) > 0) {
			total += strtol(buf, &end, 10);
			cpu += strtod(end, NULL);
		}
		close(ns->fds[i]);
		waitpid(ns->pids[i], &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			fprintf(stderr, "bench_cluster: node %d failed\n", i);
			exit(1);
		}
	}
	*cpu_us = total ? cpu * 1e6 / (double)total : 0;
	return (double)total / windows_total(w);
}

typedef struct floor_run {
	const windows *w;
	double result;
} floor_run;

static void *page_floor_main(void *arg)
{
	floor_run *f = arg;

	f->result = raw_appends(16, f->w, PAGE_RECORD_BYTES);
	return NULL;
}

/*
 * 100 objects over 3 nodes from 16 callers, routed and each node on its
 * own objects, and the sixteen-connection floor, taking turns in
 * `rounds` windows each (the order reversed every round; a gap after each
 * for the last calls to come back).
 */
static void many_objects(int rounds, unsigned rows, double *raw16, double *routed, double *own,
	double *routed_cpu, double *own_cpu, double *raw16_page)
{
	windows w[4];
	floor_run page_floor = { 0 };
	pthread_t page_thread;
	double slice = seconds / rounds, gap = 0.3, t = now_s() + 4.0; /* activation */
	int port = 18200 + (int)(getpid() % 24) * 2; /* 18200-18248, +50 */
	nodes r, o;

	memset(w, 0, sizeof(w));
	for (int i = 0; i < rounds && i < MAX_WINDOWS; i++)
		for (int k = 0; k < 4; k++) {
			int side = i & 1 ? 3 - k : k;
			windows *x = &w[side];
			if (!(rows & (ROW_RAW16 << side)))
				continue;
			x->start[x->n] = t;
			x->until[x->n++] = t + slice;
			t += slice + gap;
		}
	if (rows & ROW_ROUTED)
		nodes_start(&r, 3, 100, 16, port, 1, &w[1]);
	if (rows & ROW_OWN)
		nodes_start(&o, 3, 100, 16, port + 50, 0, &w[2]);
	/* The two floors' windows interleave: the whole-page one runs on a
	 * thread of its own meanwhile. */
	if (rows & ROW_RAW16_PAGE) {
		page_floor.w = &w[3];
		pthread_create(&page_thread, NULL, page_floor_main, &page_floor);
	}
	if (rows & ROW_RAW16)
		*raw16 = raw_appends(16, &w[0], INC_RECORD_BYTES);
	if (rows & ROW_RAW16_PAGE) {
		pthread_join(page_thread, NULL);
		*raw16_page = page_floor.result;
	}
	if (rows & ROW_ROUTED)
		*routed = nodes_wait(&r, &w[1], routed_cpu);
	if (rows & ROW_OWN)
		*own = nodes_wait(&o, &w[2], own_cpu);
}

/* The mean size of the records dobj appended for namespace `ns` (every
 * namespace but the floor's when NULL), snapshot markers (empty) left
 * out: what the floor's records compare with. */
static double row_bytes(const char *ns)
{
	PGconn *c = connect_or_die();
	const char *v[1] = { ns ? ns : "bench" };
	PGresult *r = PQexecParams(c, ns ? "SELECT avg(octet_length(frames)) FROM dobj_wal "
		"WHERE ns = $1 AND octet_length(frames) > 0" : "SELECT avg(octet_length(frames)) "
		"FROM dobj_wal WHERE ns <> $1 AND ns <> 'bench-inc' AND octet_length(frames) > 0",
		1, NULL, v, NULL, NULL, 0);
	double n = 0;

	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
		n = atof(PQgetvalue(r, 0, 0));
	PQclear(r);
	PQfinish(c);
	return n;
}

static void checkpoint(void)
{
	PGconn *c = connect_or_die();
	exec_or_die(c, "CHECKPOINT");
	PQfinish(c);
}

static unsigned parse_rows(const char *s)
{
	static const struct { const char *name; unsigned bit; } names[] = {
		{ "one", ROW_ONE }, { "raw16", ROW_RAW16 }, { "routed", ROW_ROUTED }, { "own", ROW_OWN },
		{ "raw16page", ROW_RAW16_PAGE },
		{ "many", ROW_RAW16 | ROW_ROUTED | ROW_OWN | ROW_RAW16_PAGE },
		{ "all", ROW_ONE | ROW_RAW16 | ROW_ROUTED | ROW_OWN | ROW_RAW16_PAGE },
	};
	unsigned rows = 0;

	while (*s) {
		size_t n = strcspn(s, ","), i;
		for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (strlen(names[i].name) == n && !strncmp(s, names[i].name, n))
				break;
		if (i == sizeof(names) / sizeof(names[0]))
			return 0;
		rows |= names[i].bit;
		s += n + (s[n] == ',');
	}
	return rows;
}

int main(int argc, char **argv)
{
	double raw16 = 0, routed = 0, own = 0, routed_cpu = 0, own_cpu = 0, raw16_page = 0;
	unsigned rows;
	int rounds;

	if (argc < 3) {
		fprintf(stderr, "usage: bench_cluster URL SECONDS [ROUNDS [ROWS]]\n"
			"  ROWS: one,raw16,routed,own,raw16page,many,all (default all)\n");
		return 2;
	}
	url = argv[1];
	seconds = atof(argv[2]);
	rounds = argc > 3 ? atoi(argv[3]) : 4;
	rows = parse_rows(argc > 4 ? argv[4] : "all");
	if (!(seconds > 0) || rounds < 1 || rounds > MAX_WINDOWS || !rows) {
		fprintf(stderr, "bench_cluster: SECONDS > 0, 1 <= ROUNDS <= %d, ROWS of "
			"one,raw16,routed,own,raw16page,many,all\n", MAX_WINDOWS);
		return 2;
	}
	if (dobj_cluster_init(url, 0, 0, NULL) < 0) {
		fprintf(stderr, "bench_cluster: %s\n", dobj_error_last());
		return 1;
	}
	/* Each pair the targets compare takes turns in one run; a checkpoint
	 * before each pair, so that neither pays for the WAL of the other. */
	if (rows & ROW_ONE) {
		checkpoint();
		one_figures f;
		one_object(rounds, &f);
		printf("raw_append_1 %.0f\ndobj_inc_1 %.0f\nraw_append_1_busy50 %.0f\n", f.raw, f.inc,
			f.raw_busy);
		printf("raw_append_1_pg_cpu_us %.1f\ndobj_inc_1_pg_cpu_us %.1f\n"
			"raw_append_1_busy50_pg_cpu_us %.1f\ndobj_inc_1_cpu_us %.1f\n"
			"raw_append_1_cpu_us %.1f\n", f.raw_pg_us, f.inc_pg_us, f.raw_busy_pg_us,
			f.inc_node_us, f.raw_client_us);
		printf("raw_append_1_page %.0f\nraw_append_1_page_pg_cpu_us %.1f\n", f.raw_page,
			f.raw_page_pg_us);
		printf("dobj_inc_1_row_bytes %.1f\n", row_bytes("bench-inc"));
		fflush(stdout);
	}
	if (!(rows & ~ROW_ONE))
		return 0;
	checkpoint();
	many_objects(rounds, rows, &raw16, &routed, &own, &routed_cpu, &own_cpu, &raw16_page);
	if (rows & ROW_RAW16)
		printf("raw_append_16 %.0f\n", raw16);
	if (rows & ROW_RAW16_PAGE)
		printf("raw_append_16_page %.0f\n", raw16_page);
	/* CPU per increment: the node processes' (all threads), not
	 * PostgreSQL's. */
	if (rows & ROW_ROUTED)
		printf("dobj_inc_100 %.0f\ndobj_inc_100_cpu_us %.1f\n", routed, routed_cpu);
	if (rows & ROW_OWN)
		printf("dobj_inc_100_own %.0f\ndobj_inc_100_own_cpu_us %.1f\n", own, own_cpu);
	if (rows & (ROW_ROUTED | ROW_OWN))
		printf("dobj_inc_100_row_bytes %.1f\n", row_bytes(NULL));
	return 0;
}
