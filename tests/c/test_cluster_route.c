/*
 * Calls between two nodes of a cluster in one process, each runtime driven
 * by its own thread (the host contract: one thread per runtime), on a real
 * PostgreSQL: RPC calls routed to the node that owns the object, writes
 * confirmed by the owner's committer, calls in flight while the owner
 * closes.  Besides what it checks, it is the C test that runs every thread
 * of a node at once (runtime, network, committer, lease keeper) for
 * `make tsan`.
 */
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>

#include "testhost.h"
#include "pgtest.h"

static pgtest pg;

/* RPC "add"(n): the stored count plus n (a write: it commits through the
 * committer); "who"(): the node id; "spin"(ms): keeps the runtime busy. */
static int box_step(dobj_task *t, void *data)
{
	dobj_val *args = dobj_task_request(t);
	const char *m = dobj_task_method(t);
	dobj_storage *st;
	const void *val;
	size_t len;
	double n = 0;
	int rc;

	(void)data;
	if (!m || !args) {
		dobj_task_raise(t, DOBJ_EARG, "RPC only", NULL);
		return DOBJ_OK;
	}
	if (!strcmp(m, "who")) {
		dobj_task_return_value(t, dobj_val_number((double)dobj_rt_cluster_node(dobj_task_rt(t))),
			(void (*)(void *))dobj_val_free);
		return DOBJ_OK;
	}
	if (!strcmp(m, "close")) {
		dobj_rt_clear(dobj_task_rt(t)); /* the handler closes its runtime */
		return DOBJ_OK;
	}
	if (!strcmp(m, "spin")) {
		double until = testhost_now_s() + dobj_val_get_number(dobj_val_at(args, 0)) / 1e3;
		while (testhost_now_s() < until)
			;
		dobj_task_return_value(t, dobj_val_null(), (void (*)(void *))dobj_val_free);
		return DOBJ_OK;
	}
	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	if (dobj_kv_get(st, "n", 1, &val, &len) == 1 && len == sizeof(n))
		memcpy(&n, val, sizeof(n));
	n += dobj_val_get_number(dobj_val_at(args, 0));
	if ((rc = dobj_kv_put(st, "n", 1, &n, sizeof(n))) < 0)
		return rc;
	dobj_task_return_value(t, dobj_val_number(n), (void (*)(void *))dobj_val_free);
	return DOBJ_OK;
}

typedef struct node {
	char dir[64];
	dobj_rt *rt;
	dobj_ns *ns;
	pthread_t th;
	int stop;              /* eventfd: the serving thread ends */
	double call_timeout_ms;
	double ttl_ms;         /* 0: 1.5 s */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int ready;
	int (*job)(struct node *);  /* run on the node's thread before it serves */
	const char *prefix;    /* of the objects job claims */
	int failed;            /* checks failed on the serving thread */
	int retryable;         /* of the last task wait_number waited for */
} node;

/* CHECK's counters are the main thread's: the serving thread keeps its own. */
#define NODE_CHECK(n, cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: node check failed: %s\n", \
	__FILE__, __LINE__, #cond); (n)->failed++; } } while (0)

static void node_open(node *n)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_class k = { 0 };

	snprintf(n->dir, sizeof(n->dir), "/tmp/dobj-route-XXXXXX");
	NODE_CHECK(n, mkdtemp(n->dir) != NULL);
	o.storage_dir = n->dir;
	o.idle_timeout_ms = -1;
	NODE_CHECK(n, dobj_rt_new(&n->rt, &o) == DOBJ_OK);
	co.url = pg.url;
	co.node_addr = "127.0.0.1:0";
	co.ttl_ms = n->ttl_ms > 0 ? n->ttl_ms : 1500;
	co.grace_ms = 500;
	co.call_timeout_ms = n->call_timeout_ms;
	NODE_CHECK(n, dobj_rt_cluster(n->rt, &co) == DOBJ_OK);
	k.name = "Box";
	k.step = box_step;
	NODE_CHECK(n, dobj_ns_new(&n->ns, n->rt, "BOX", 3, "box-key", 7, &k) == DOBJ_OK);
}

static void node_close(node *n)
{
	dobj_rt_free(n->rt);
	n->rt = NULL;
	testhost_rm_rf(n->dir);
}

/* Call method(arg) on the object `name` from n's runtime and wait (on the
 * calling thread, which must be n's). */
static dobj_task *call(node *n, const char *name, const char *method, double arg)
{
	dobj_stub *s = NULL;
	dobj_val *args = dobj_val_array();
	dobj_task *t = NULL;
	dobj_id id;

	dobj_id_from_name(dobj_ns_idkey(n->ns), name, strlen(name), &id);
	NODE_CHECK(n, dobj_stub_new(&s, n->ns, &id, name, strlen(name)) == DOBJ_OK);
	dobj_val_push(args, dobj_val_number(arg));
	NODE_CHECK(n, dobj_stub_call_ex(&t, s, DOBJ_CALL_RPC, method, NULL, 0, args,
		(void (*)(void *))dobj_val_free, NULL, NULL) == DOBJ_OK);
	dobj_stub_free(s);
	return t;
}

static double wait_number(node *n, dobj_task *t, int *code, char *msg, size_t cap)
{
	void *res = NULL;
	const char *m = NULL;
	double v = -1;

	dobj_rt_run(n->rt, task_is_done, t);
	*code = dobj_task_result(t, &res, &m, NULL);
	if (*code == DOBJ_OK && res)
		v = dobj_val_get_number(res);
	snprintf(msg, cap, "%s", m ? m : "");
	n->retryable = dobj_task_retryable(t);
	dobj_task_unref(t);
	return v;
}

/* The serving thread: the runtime is its, from creation to free. */
static void *serve(void *arg)
{
	node *n = arg;
	int fd;

	node_open(n);
	if (n->job)
		n->job(n);
	fd = dobj_rt_fd(n->rt);
	pthread_mutex_lock(&n->mu);
	n->ready = 1;
	pthread_cond_signal(&n->cv);
	pthread_mutex_unlock(&n->mu);
	for (;;) {
		struct pollfd p[2] = { { fd, POLLIN, 0 }, { n->stop, POLLIN, 0 } };
		double next = dobj_rt_next_timer_ms(n->rt);
		poll(p, 2, next < 0 ? 1000 : (int)ceil(next) + 1);
		if (p[1].revents)
			break;
		dobj_rt_process(n->rt);
	}
	dobj_rt_free(n->rt); /* its folder goes on the main thread (server_stop) */
	n->rt = NULL;
	return NULL;
}

static int claim_objects(node *n)
{
	char name[32], msg[256];
	int i, code;

	for (i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "%s-%d", n->prefix, i);
		NODE_CHECK(n, wait_number(n, call(n, name, "add", 0), &code, msg, sizeof(msg)) == 0);
		NODE_CHECK(n, code == DOBJ_OK);
	}
	return 0;
}

static void server_start(node *a)
{
	a->stop = eventfd(0, EFD_CLOEXEC);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	a->job = claim_objects;
	CHECK_EQ_INT(pthread_create(&a->th, NULL, serve, a), 0);
	pthread_mutex_lock(&a->mu);
	while (!a->ready)
		pthread_cond_wait(&a->cv, &a->mu);
	pthread_mutex_unlock(&a->mu);
}

static void server_stop(node *a)
{
	uint64_t one = 1;

	CHECK(write(a->stop, &one, sizeof(one)) == sizeof(one));
	pthread_join(a->th, NULL);
	CHECK_EQ_INT(a->failed, 0);
	testhost_rm_rf(a->dir);
	close(a->stop);
	pthread_mutex_destroy(&a->mu);
	pthread_cond_destroy(&a->cv);
}

/* ------------------------------------------------------------------ tests */

static void test_calls_to_another_nodes_objects_are_routed_and_their_writes_kept(void)
{
	node a = { 0 }, b = { 0 };
	dobj_task *t[16];
	char name[32], msg[256];
	int i, code;
	double v, who_a;

	a.prefix = "served";
	server_start(&a);
	node_open(&b);
	CHECK_EQ_INT(b.failed, 0);
	who_a = wait_number(&b, call(&b, "served-0", "who", 0), &code, msg, sizeof(msg));
	CHECK_EQ_INT(code, DOBJ_OK);
	CHECK(who_a > 0 && who_a != (double)dobj_rt_cluster_node(b.rt));
	/* Many calls in flight at once, to four objects of a's and to objects b
	 * claims itself: both nodes' threads work at the same time. */
	for (i = 0; i < 16; i++) {
		snprintf(name, sizeof(name), i % 2 ? "served-%d" : "local-%d", i % 4);
		t[i] = call(&b, name, "add", 1);
	}
	for (i = 0; i < 16; i++) {
		v = wait_number(&b, t[i], &code, msg, sizeof(msg));
		CHECK_EQ_INT(code, DOBJ_OK);
		CHECK(v >= 1 && v <= 4);
	}
	for (i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "served-%d", i);
		v = wait_number(&b, call(&b, name, "add", 0), &code, msg, sizeof(msg));
		CHECK_EQ_INT(code, DOBJ_OK);
		CHECK(v == (i % 2 ? 4 : 0));
	}
	/* b claimed only the objects nobody held (local-0, local-2). */
	CHECK(pgtest_sqlf(&pg, NULL, "SELECT count(*) FROM dobj_owner WHERE node_id = %lld",
		dobj_rt_cluster_node(b.rt)) == 2);
	server_stop(&a);
	/* a left: its objects move to b with every acknowledged write. */
	v = wait_number(&b, call(&b, "served-1", "add", 0), &code, msg, sizeof(msg));
	CHECK_EQ_INT(code, DOBJ_OK);
	CHECK(v == 4);
	node_close(&b);
}

/* A routed call queued in a round (its frame written at the round's end),
 * then, in the same round, a handler that closes its runtime: the frame goes
 * nowhere (the route stopped with the runtime), nothing crashes, the called
 * node goes on, and the write ran at most once. */
static void test_a_handler_closing_its_runtime_after_a_routed_call(void)
{
	node a = { 0 }, b = { 0 }, c = { 0 };
	dobj_task *tx, *ty;
	char msg[256];
	int code;
	double v;

	a.prefix = "closing";
	server_start(&a);
	node_open(&b);
	/* The closer is b's, and b knows where closing-0 lives: both calls of
	 * the round run in it. */
	CHECK(wait_number(&b, call(&b, "closer", "add", 0), &code, msg, sizeof(msg)) == 0);
	CHECK(wait_number(&b, call(&b, "closing-0", "add", 0), &code, msg, sizeof(msg)) == 0);
	tx = call(&b, "closing-0", "add", 1);
	ty = call(&b, "closer", "close", 0);
	dobj_rt_run(b.rt, task_is_done, ty);
	CHECK(dobj_task_result(tx, NULL, NULL, NULL) != DOBJ_OK);
	dobj_task_unref(tx);
	dobj_task_unref(ty);
	CHECK_EQ_INT(b.failed, 0);
	node_close(&b);
	node_open(&c);
	v = wait_number(&c, call(&c, "closing-0", "add", 0), &code, msg, sizeof(msg));
	CHECK_EQ_INT(code, DOBJ_OK);
	CHECK(v == 0 || v == 1);
	CHECK_EQ_INT(c.failed, 0);
	node_close(&c);
	server_stop(&a);
}

static void test_a_stuck_runtime_fails_the_call_at_the_call_timeout(void)
{
	node a = { 0 }, b = { 0 };
	dobj_task *spin;
	char msg[256];
	int code;
	double t0;

	a.prefix = "stuck";
	server_start(&a);
	b.call_timeout_ms = 300;
	node_open(&b);
	CHECK_EQ_INT(b.failed, 0);
	/* stuck-2 active first: its spin starts as it arrives (activations run
	 * on several threads, so a spin whose object is still activating may
	 * start after stuck-3 was served). */
	wait_number(&b, call(&b, "stuck-2", "add", 0), &code, msg, sizeof(msg));
	CHECK_EQ_INT(code, DOBJ_OK);
	/* a's runtime spins for 1.5 s (its network thread still answers pings,
	 * and its lease keeper renews its lease): b's second call waits for
	 * nothing but the call timeout. */
	spin = call(&b, "stuck-2", "spin", 1500);
	t0 = testhost_now_s();
	wait_number(&b, call(&b, "stuck-3", "add", 1), &code, msg, sizeof(msg));
	CHECK(code != DOBJ_OK);
	CHECK(strstr(msg, "did not answer the call within 0.3 s (the call timeout)") != NULL);
	CHECK(b.retryable);
	CHECK(testhost_now_s() - t0 < 1.2);
	wait_number(&b, spin, &code, msg, sizeof(msg));
	CHECK(code != DOBJ_OK);
	server_stop(&a);
	node_close(&b);
}

/* A caller of TTL `caller_ttl_ms` calls `object` on a node of TTL 250 ms,
 * sits idle 5.5 s (its runtime taking what its network thread saw), then
 * calls it again: the second call must go through. */
static void idle_then_call_again(const char *prefix, const char *object, double caller_ttl_ms)
{
	node a = { 0 }, b = { 0 };
	char msg[256];
	int code, i;

	a.prefix = prefix;
	a.ttl_ms = 250;
	server_start(&a);
	b.ttl_ms = caller_ttl_ms;
	node_open(&b);
	CHECK_EQ_INT(b.failed, 0);
	CHECK(wait_number(&b, call(&b, object, "add", 1), &code, msg, sizeof(msg)) == 1);
	CHECK_EQ_INT(code, DOBJ_OK);
	for (i = 0; i < 55; i++) {
		usleep(100000);
		dobj_rt_process(b.rt);
	}
	CHECK(wait_number(&b, call(&b, object, "add", 1), &code, msg, sizeof(msg)) == 2);
	CHECK_EQ_INT(code, DOBJ_OK);
	if (code != DOBJ_OK)
		fprintf(stderr, "the call after the idle time failed: %s\n", msg);
	server_stop(&a);
	node_close(&b);
}

/* Nodes with different TTLs: the called node closes an idle connection
 * after 20 of its TTLs, 5 s here, the caller after 10 of its own, 15 s.
 * The caller learns the called node's bound and closes first, quietly: a
 * call after 5.5 s idle goes through.  (It failed: the caller took the
 * called node's close for a failed node and refused calls to it for a
 * TTL, "stopped answering".) */
static void test_nodes_with_different_ttls_close_idle_connections_quietly(void)
{
	idle_then_call_again("idle", "idle-0", 1500);
}

/* The same with a caller whose TTL is far longer (120 s: its network thread
 * wakes to ping every 20 s): it must still close the idle connection by half
 * the called node's bound (2.5 s), not at its first wake after that, 20 s
 * on, long after the called node closed it at 5 s.  (It did: the caller took
 * that close for a failed node and refused calls to it for its TTL.) */
static void test_a_caller_with_a_far_longer_ttl_closes_idle_connections_first(void)
{
	idle_then_call_again("far", "far-1", 120000);
}

/* Run n's runtime for `ms` (its calls go out, its answers come in). */
static void drive(node *n, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		usleep(10000);
		dobj_rt_process(n->rt);
	}
}

/*
 * A node that closes while calls to its object wait (received, not read
 * yet: its runtime was busy): once its objects were released, they are
 * answered "not the owner", and the caller runs them where the object goes
 * next (itself, here).  They failed as "may or may not have run" (the route
 * stopped first: the calls were dropped and the connections cut), which a
 * caller cannot retry safely.  The call that was running finishes and gets
 * its result.
 */
static void test_a_leaving_node_hands_back_the_calls_it_did_not_run(void)
{
	node a = { 0 }, b = { 0 };
	dobj_task *spin, *t[5];
	uint64_t one = 1;
	char msg[256];
	double v, seen = 0;
	int code, i;

	a.prefix = "leaving";
	server_start(&a);
	node_open(&b);
	CHECK(wait_number(&b, call(&b, "leaving-1", "add", 0), &code, msg, sizeof(msg)) == 0);
	/* a's runtime spins 0.6 s; the adds reach its network thread meanwhile,
	 * and a is told to close, which it does as the spin ends. */
	spin = call(&b, "leaving-1", "spin", 600);
	drive(&b, 150);
	for (i = 0; i < 5; i++)
		t[i] = call(&b, "leaving-1", "add", 1);
	drive(&b, 150);
	CHECK(write(a.stop, &one, sizeof(one)) == sizeof(one));
	wait_number(&b, spin, &code, msg, sizeof(msg));
	CHECK_EQ_INT(code, DOBJ_OK);
	for (i = 0; i < 5; i++) {
		v = wait_number(&b, t[i], &code, msg, sizeof(msg));
		if (code != DOBJ_OK)
			fprintf(stderr, "add %d: %s\n", i, msg);
		CHECK_EQ_INT(code, DOBJ_OK);
		CHECK(v == seen + 1);
		seen = v;
	}
	/* The object went to b with its count. */
	CHECK(wait_number(&b, call(&b, "leaving-1", "who", 0), &code, msg, sizeof(msg)) ==
		(double)dobj_rt_cluster_node(b.rt));
	CHECK(wait_number(&b, call(&b, "leaving-1", "add", 0), &code, msg, sizeof(msg)) == 5);
	CHECK_EQ_INT(b.failed, 0);
	node_close(&b);
	server_stop(&a);
}

/*
 * Calls keep coming while their objects' node closes: the ones its network
 * thread had not read when it stopped reading are named by its GOAWAY (how
 * far it read each connection), and the caller sends them again where the
 * objects go next.  None is cut as "may or may not have run" (before
 * GOAWAY, frames still in the sockets when the connections closed were),
 * and each count holds exactly the calls that succeeded.
 */
static void test_calls_a_leaving_node_did_not_read_go_again(void)
{
	enum { OBJS = 4, INFLIGHT = 48 };
	node a = { 0 }, b = { 0 };
	dobj_task *t[INFLIGHT] = { 0 };
	int obj_of[INFLIGHT];
	double ok[OBJS] = { 0 }, now, stop_at, end_at, v;
	uint64_t one = 1;
	char name[32], msg[256];
	int i, code, cut = 0, failed = 0, stopped = 0;

	a.prefix = "goaway";
	server_start(&a);
	node_open(&b);
	now = testhost_now_s();
	stop_at = now + 0.3;
	end_at = now + 1.5;
	for (;;) {
		struct pollfd p = { dobj_rt_fd(b.rt), POLLIN, 0 };
		int busy = 0;
		now = testhost_now_s();
		if (!stopped && now >= stop_at) {
			CHECK(write(a.stop, &one, sizeof(one)) == sizeof(one));
			stopped = 1;
		}
		for (i = 0; i < INFLIGHT; i++) {
			if (t[i] && dobj_task_done(t[i])) {
				const char *m = NULL;
				code = dobj_task_result(t[i], NULL, &m, NULL);
				if (code == DOBJ_OK) {
					ok[obj_of[i]]++;
				} else {
					if (m && strstr(m, "may or may not"))
						cut++;
					else
						failed++;
					fprintf(stderr, "add on goaway-%d: %s\n", obj_of[i], m ? m : "?");
				}
				dobj_task_unref(t[i]);
				t[i] = NULL;
			}
			if (!t[i] && now < end_at) {
				obj_of[i] = i % OBJS;
				snprintf(name, sizeof(name), "goaway-%d", obj_of[i]);
				t[i] = call(&b, name, "add", 1);
			}
			busy |= t[i] != NULL;
		}
		if (!busy)
			break;
		poll(&p, 1, 1);
		dobj_rt_process(b.rt);
	}
	CHECK_EQ_INT(cut, 0);
	CHECK_EQ_INT(failed, 0);
	for (i = 0; i < OBJS; i++) {
		snprintf(name, sizeof(name), "goaway-%d", i);
		v = wait_number(&b, call(&b, name, "add", 0), &code, msg, sizeof(msg));
		CHECK_EQ_INT(code, DOBJ_OK);
		if (v != ok[i])
			fprintf(stderr, "goaway-%d: count %g, %g adds succeeded\n", i, v, ok[i]);
		CHECK(v == ok[i]);
		CHECK(ok[i] > 0);
	}
	CHECK_EQ_INT(b.failed, 0);
	node_close(&b);
	server_stop(&a);
}

int main(void)
{
	if (pgtest_start(&pg) < 0)
		return 1;
	RUN(test_calls_to_another_nodes_objects_are_routed_and_their_writes_kept);
	RUN(test_a_handler_closing_its_runtime_after_a_routed_call);
	RUN(test_a_leaving_node_hands_back_the_calls_it_did_not_run);
	RUN(test_calls_a_leaving_node_did_not_read_go_again);
	RUN(test_a_stuck_runtime_fails_the_call_at_the_call_timeout);
	RUN(test_nodes_with_different_ttls_close_idle_connections_quietly);
	RUN(test_a_caller_with_a_far_longer_ttl_closes_idle_connections_first);
	pgtest_stop(&pg);
	return DONE();
}
