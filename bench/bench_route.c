/*
 * Remote RPC round trips between two cluster nodes for `make bench`
 * (bench/route_bench.py starts the PostgreSQL):
 *   bench_route URL SECONDS [IN_FLIGHT]
 * prints "NAME VALUE" lines:
 *   route_rpc        RPC round trips per second from a client node to an
 *                    object on a server node (a C class, `add(i64)`; many
 *                    calls in flight on the one connection)
 *   route_rpc_1      the same with one call in flight (latency-bound)
 * The two nodes are two runtimes on two threads of this process, each driven
 * by its own fd (poll + dobj_rt_process), talking over loopback TCP: the
 * whole path of a routed call, serialisation and the network thread
 * included.
 */
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dobj.h"

static const char *url;
static double seconds;
static atomic_int stop_server, server_ready;
static dobj_native_class *klass;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *create(dobj_native_ctx *ctx) { (void)ctx; return calloc(1, sizeof(int64_t)); }
static void destroy(void *inst) { free(inst); }
static int64_t add(dobj_native_ctx *ctx, int64_t n)
{
	int64_t *v = dobj_native_api_get()->instance(ctx);
	return *v += n;
}

static const dobj_native_method methods[] = { { "add", "i64(i64)", DOBJ_NATIVE_FN(add) } };
static const dobj_native_class_def def = { DOBJ_NATIVE_ABI, "Box", create, destroy, NULL, NULL,
	methods, 1 };

static void die(const char *what)
{
	fprintf(stderr, "bench_route: %s: %s\n", what, dobj_error_last());
	exit(1);
}

static dobj_rt *node(const char *dir, const char *addr, dobj_ns **ns)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_class k;
	dobj_rt *rt;

	o.host = dobj_host_msg();
	o.storage_dir = dir;
	o.idle_timeout_ms = -1;
	co.url = url;
	co.node_addr = addr;
	if (dobj_rt_new(&rt, &o) < 0 || dobj_rt_cluster(rt, &co) < 0)
		die("node");
	dobj_native_class_of(klass, &k);
	if (dobj_ns_new(ns, rt, "BOX", 3, NULL, 0, &k) < 0)
		die("bind");
	return rt;
}

static void process_for(dobj_rt *rt, int ms)
{
	struct pollfd p = { dobj_rt_fd(rt), POLLIN, 0 };
	if (poll(&p, 1, ms) > 0)
		dobj_rt_process(rt);
}

static dobj_stub *stub_of(dobj_ns *ns)
{
	dobj_id id;
	dobj_stub *s;
	dobj_id_from_name(dobj_ns_idkey(ns), "bench", 5, &id);
	if (dobj_stub_new(&s, ns, &id, "bench", 5) < 0)
		die("stub");
	return s;
}

static int call(dobj_stub *s, dobj_done_fn done, void *data)
{
	dobj_val *args = dobj_val_array();
	dobj_task *t;
	dobj_val_push(args, dobj_val_integer(1));
	if (dobj_stub_call_ex(&t, s, DOBJ_CALL_RPC, "add", NULL, 0, args,
		(void (*)(void *))dobj_val_free, done, data) < 0)
		return -1;
	dobj_task_unref(t);
	return 0;
}

/* The server node: owns the object, answers until told to stop. */
static void *server(void *arg)
{
	char *dir = arg;
	dobj_ns *ns;
	dobj_rt *rt = node(dir, "127.0.0.1:0", &ns);
	dobj_stub *s = stub_of(ns);
	int claimed = 0;

	if (call(s, NULL, NULL) < 0)
		die("claim");
	dobj_rt_pump(rt); /* the first call claims it here */
	while (dobj_rt_tasks(rt))
		process_for(rt, 10);
	(void)claimed;
	atomic_store(&server_ready, 1);
	while (!atomic_load(&stop_server))
		process_for(rt, 50);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	return NULL;
}

typedef struct client {
	dobj_stub *stub;
	long done, failed;
	double until;
	int inflight;
} client;

static void on_done(dobj_task *t, void *data)
{
	client *c = data;
	void *res;
	const char *msg;

	if (dobj_task_result(t, &res, &msg, NULL) != DOBJ_OK) {
		if (!c->failed++)
			fprintf(stderr, "bench_route: %s\n", msg);
	} else {
		c->done++;
	}
	c->inflight--;
	if (now_s() < c->until && c->failed < 100 && call(c->stub, on_done, c) == 0)
		c->inflight++;
}

static double round_trips(dobj_rt *rt, dobj_stub *s, int inflight, double secs)
{
	client c = { s, 0, 0, 0, 0 };
	double t0;
	int i;

	c.until = now_s() + 0.3; /* warm up: the connection, the owner lookup */
	for (i = 0; i < inflight; i++)
		if (call(s, on_done, &c) == 0)
			c.inflight++;
	while (c.inflight)
		process_for(rt, 10);
	c.done = 0;
	t0 = now_s();
	c.until = t0 + secs;
	for (i = 0; i < inflight; i++)
		if (call(s, on_done, &c) == 0)
			c.inflight++;
	while (c.inflight)
		process_for(rt, 10);
	if (c.failed)
		return 0;
	return (double)c.done / (now_s() - t0);
}

int main(int argc, char **argv)
{
	char d1[] = "/tmp/dobj-bench-route-XXXXXX", d2[] = "/tmp/dobj-bench-route-XXXXXX", cmd[128];
	int inflight = argc > 3 ? atoi(argv[3]) : 64;
	pthread_t th;
	dobj_ns *ns;
	dobj_rt *rt;
	dobj_stub *s;

	if (argc < 3) {
		fprintf(stderr, "usage: bench_route URL SECONDS [IN_FLIGHT]\n");
		return 2;
	}
	url = argv[1];
	seconds = atof(argv[2]);
	if (!mkdtemp(d1) || !mkdtemp(d2) || dobj_native_define(&klass, &def) < 0)
		die("setup");
	pthread_create(&th, NULL, server, d1);
	while (!atomic_load(&server_ready))
		usleep(1000);
	rt = node(d2, NULL, &ns); /* a client: every call goes to the server node */
	s = stub_of(ns);
	printf("route_rpc %.0f\n", round_trips(rt, s, inflight, seconds));
	printf("route_rpc_1 %.0f\n", round_trips(rt, s, 1, seconds / 2));
	fflush(stdout);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	atomic_store(&stop_server, 1);
	pthread_join(th, NULL);
	dobj_native_free(klass);
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s", d1, d2);
	return system(cmd) == 0 ? 0 : 1;
}
