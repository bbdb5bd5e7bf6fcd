/*
 * The host contract (dobj.h, "driving a runtime"): the hooks, the pollable
 * fd, dobj_rt_process; and the rules that came with it: one owner thread,
 * several waiters on one task, a block_concurrency_while that waits on a call
 * to its own object (deadlock), the 30 s limit of a block, finite delays.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "testhost.h"
#include "internal.h" /* dobj__rt_post and a drain source; dobj__efd_reads */

static dobj_ns *loop_ns;
static int notified, timer_reports;
static double last_deadline;

static void on_notify(void *data)
{
	(void)data;
	notified++;
}

static void on_timer(void *data, double deadline_ms)
{
	(void)data;
	timer_reports++;
	last_deadline = deadline_ms;
}

/* Block body: "forever" never finishes; "self" calls its own object and
 * waits for the answer, then keeps the outcome in the instance. */
static int block_step(dobj_task *t, void *data)
{
	tv *st = dobj_task_host(t);
	dobj_obj *obj = dobj_task_obj(t);
	tv *inst = dobj_obj_instance(obj);
	(void)data;
	if (strcmp(st->s, "forever") == 0)
		return DOBJ_PENDING;
	if (st->pc == 0) {
		st->pc = 1;
		CHECK_EQ_INT(dobj_stub_new(&st->stub, dobj_obj_ns(obj), dobj_obj_id(obj), NULL, 0), DOBJ_OK);
		CHECK_EQ_INT(dobj_stub_call(&st->awaited, st->stub, DOBJ_CALL_FETCH, NULL, "https://x/", 10,
			tv_new(V_REQ, "count", 0), NULL, NULL), DOBJ_OK);
		CHECK_EQ_INT(dobj_task_wait(t, st->awaited), DOBJ_OK);
		return DOBJ_PENDING;
	}
	{
		const char *msg = NULL;
		int rc = dobj_task_result(st->awaited, NULL, &msg, NULL);
		snprintf(inst->s, sizeof(inst->s), "%d %s", rc, msg ? msg : "");
	}
	dobj_task_return(t, NULL);
	return DOBJ_OK;
}

static int loop_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	(void)obj;
	(void)data;
	(void)error;
	*instance = tv_new(V_INST, NULL, 0);
	return DOBJ_OK;
}

static int loop_step(dobj_task *t, void *data)
{
	dobj_obj *obj = dobj_task_obj(t);
	tv *inst = dobj_obj_instance(obj);
	tv *req = dobj_task_request(t);
	tv *st = dobj_task_host(t);
	(void)data;
	if (!st) {
		st = tv_new(V_STATE, NULL, 0);
		dobj_task_set_host(t, st);
	}
	if (strcmp(req->s, "count") == 0) {
		respond(t, 200, "%d", inst->n++);
		return DOBJ_OK;
	}
	/* "block:<body>": run a block and answer what it left in the instance. */
	if (strncmp(req->s, "block:", 6) == 0) {
		if (st->pc == 0) {
			st->pc = 1;
			CHECK_EQ_INT(dobj_task_spawn(&st->awaited, dobj_task_rt(t), obj, DOBJ_TASK_BLOCK,
				block_step, NULL, tv_new(V_STATE, req->s + 6, 0), NULL, NULL), DOBJ_OK);
			CHECK_EQ_INT(dobj_task_wait(t, st->awaited), DOBJ_OK);
			return DOBJ_PENDING;
		}
		{
			const char *msg = NULL;
			int rc = dobj_task_result(st->awaited, NULL, &msg, NULL);
			if (rc != DOBJ_OK) {
				dobj_task_raise(t, rc, msg, NULL);
				return DOBJ_OK;
			}
		}
		respond(t, 200, "%s", inst->s);
		return DOBJ_OK;
	}
	dobj_task_raise(t, DOBJ_EARG, "unknown path", NULL);
	return DOBJ_OK;
}

static dobj_rt *make_rt(int virtual_time)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { .name = "Loop", .flags = DOBJ_CLASS_FETCH, .construct = loop_construct,
		.step = loop_step };

	o.host.notify = on_notify;
	o.host.timer = on_timer;
	o.virtual_time = virtual_time;
	notified = timer_reports = 0;
	last_deadline = -1;
	return testhost_rt(&o, &k, "LOOP", NULL, &loop_ns);
}

static dobj_stub *stub_named(const char *name)
{
	return testhost_stub(loop_ns, name);
}

static int readable(int fd, int timeout_ms)
{
	struct pollfd p = { fd, POLLIN, 0 };
	return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

/* ----------------------------------------------------------------- tests */

static void test_fd_is_readable_when_work_is_ready(void)
{
	dobj_rt *rt = make_rt(0);
	dobj_stub *s = stub_named("fd");
	int fd = dobj_rt_fd(rt);
	dobj_task *t;
	CHECK(fd >= 0);
	CHECK_EQ_INT(dobj_rt_fd(rt), fd); /* one fd for the runtime's life */
	CHECK(!readable(fd, 0));
	t = send(s, "count");
	CHECK_EQ_INT(notified, 1);
	CHECK(dobj_rt_ready(rt));
	CHECK(readable(fd, 0));
	CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	CHECK(dobj_task_done(t));
	/* Processed: the fd is armed for the idle timer (10 s), not readable. */
	CHECK(!readable(fd, 0));
	CHECK_EQ_INT(dobj_rt_tasks(rt), 0);
	/* Closing the runtime closes its fd, though a stub keeps the memory. */
	dobj_rt_clear(rt);
	CHECK_EQ_INT(dobj_rt_fd(rt), DOBJ_ECLOSED);
	CHECK(fcntl(fd, F_GETFD) < 0 && errno == EBADF);
	dobj_task_unref(t);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void log_timer(void *data, int fired)
{
	logf_("%s%s ", (const char *)data, fired ? "" : "-cancelled");
}

static void test_fd_is_readable_when_a_timer_is_due(void)
{
	dobj_rt *rt = make_rt(0);
	int fd = dobj_rt_fd(rt);
	struct timespec a, b;
	double ms;
	CHECK_EQ_INT(dobj_rt_timer(rt, 20, log_timer, "t", NULL), DOBJ_OK);
	CHECK(!readable(fd, 0));
	clock_gettime(CLOCK_MONOTONIC, &a);
	CHECK(readable(fd, 2000));
	clock_gettime(CLOCK_MONOTONIC, &b);
	ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	CHECK(ms >= 15 && ms < 1000);
	CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	CHECK_STR(logbuf, "t ");
	CHECK(!readable(fd, 0));
	dobj_rt_free(rt);
}

static void test_timer_hook_reports_earlier_deadlines(void)
{
	dobj_rt *rt = make_rt(1);
	int fd = dobj_rt_fd(rt);
	double now = dobj_rt_now_ms(rt);
	CHECK_EQ_INT(dobj_rt_timer(rt, 50, log_timer, "b", NULL), DOBJ_OK);
	CHECK_EQ_INT(timer_reports, 1);
	CHECK(last_deadline == now + 50);
	/* Later deadlines are heard of at the next process, not now. */
	CHECK_EQ_INT(dobj_rt_timer(rt, 100, log_timer, "c", NULL), DOBJ_OK);
	CHECK_EQ_INT(timer_reports, 1);
	CHECK_EQ_INT(dobj_rt_timer(rt, 10, log_timer, "a", NULL), DOBJ_OK);
	CHECK_EQ_INT(timer_reports, 2);
	CHECK(last_deadline == now + 10);
	/* Virtual time: the clock does not move by itself; the fd stays quiet. */
	CHECK(!readable(fd, 0));
	CHECK_EQ_INT(dobj_rt_advance(rt, 10), DOBJ_OK);
	CHECK_STR(logbuf, "a ");
	CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	CHECK(last_deadline == now + 50); /* reported afresh after a process */
	CHECK_EQ_INT(dobj_rt_advance(rt, 100), DOBJ_OK);
	CHECK_STR(logbuf, "a b c ");
	dobj_rt_free(rt);
}

static void test_delays_must_be_finite(void)
{
	dobj_rt *rt = make_rt(1);
	CHECK_EQ_INT(dobj_rt_timer(rt, INFINITY, log_timer, "inf", NULL), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_DELAY);
	CHECK_EQ_INT(dobj_rt_timer(rt, NAN, log_timer, "nan", NULL), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), DOBJ_MSG_DELAY);
	/* advance() refuses them too (an infinite advance never ended while a
	 * timer re-armed itself), and leaves the clock where it was. */
	{
		double before = dobj_rt_now_ms(rt);
		CHECK_EQ_INT(dobj_rt_advance(rt, INFINITY), DOBJ_EARG);
		CHECK_STR(dobj_error_last(), DOBJ_MSG_DELAY);
		CHECK_EQ_INT(dobj_rt_advance(rt, NAN), DOBJ_EARG);
		CHECK(dobj_rt_now_ms(rt) == before);
		CHECK_EQ_INT(dobj_rt_advance(rt, -5), DOBJ_OK); /* a negative advance is none */
		CHECK(dobj_rt_now_ms(rt) == before);
	}
	/* Huge but finite: accepted, and armed without overflow. */
	CHECK_EQ_INT(dobj_rt_timer(rt, 1e300, log_timer, "huge", NULL), DOBJ_OK);
	CHECK(dobj_rt_next_timer_ms(rt) > 1e299);
	dobj_rt_free(rt);
	CHECK_STR(logbuf, "huge-cancelled ");
}

/* Far from the epoch a delay can be below the clock's resolution: a
 * positive advance still moves the clock (a host that jumps to its next
 * timer, like dobj.testing's asyncio clock, spun for ever after a test
 * advanced a billion seconds), and a timer a host lands one rounding
 * short of still fires. */
static void test_advance_far_from_the_epoch(void)
{
	dobj_rt *rt = make_rt(1);
	double before;

	CHECK_EQ_INT(dobj_rt_advance(rt, 1e15), DOBJ_OK);
	before = dobj_rt_now_ms(rt);
	CHECK(before + 1e-4 == before); /* below the resolution here */
	CHECK_EQ_INT(dobj_rt_advance(rt, 1e-4), DOBJ_OK);
	CHECK(dobj_rt_now_ms(rt) > before);
	logbuf[0] = '\0';
	CHECK_EQ_INT(dobj_rt_timer(rt, 1, log_timer, "t", NULL), DOBJ_OK);
	before = dobj_rt_now_ms(rt);
	CHECK_EQ_INT(dobj_rt_advance(rt, dobj_rt_next_timer_ms(rt) * (1 - 1e-9)), DOBJ_OK);
	CHECK_STR(logbuf, "t ");
	CHECK(dobj_rt_now_ms(rt) > before);
	dobj_rt_free(rt);
}

struct other_thread {
	dobj_rt *rt;
	dobj_stub *stub;
	int call_rc, process_rc, run_rc, spawn_rc;
	char msg[200];
};

static int free_step(dobj_task *t, void *data)
{
	(void)data;
	dobj_task_return(t, NULL);
	return DOBJ_OK;
}

static void *use_from_other_thread(void *arg)
{
	struct other_thread *o = arg;
	dobj_task *t = NULL;
	o->call_rc = dobj_stub_call(&t, o->stub, DOBJ_CALL_FETCH, NULL, "https://x/", 10,
		tv_new(V_REQ, "count", 0), NULL, NULL);
	snprintf(o->msg, sizeof(o->msg), "%s", dobj_error_last());
	o->process_rc = dobj_rt_process(o->rt);
	o->run_rc = dobj_rt_run(o->rt, NULL, NULL);
	o->spawn_rc = dobj_task_spawn(NULL, o->rt, NULL, DOBJ_TASK_FREE, free_step, NULL,
		tv_new(V_STATE, NULL, 0), NULL, NULL);
	dobj_rt_pump(o->rt);
	return NULL;
}

static void test_other_threads_are_refused(void)
{
	dobj_rt *rt = make_rt(0);
	struct other_thread o;
	pthread_t th;
	memset(&o, 0, sizeof(o));
	o.rt = rt;
	o.stub = stub_named("th");
	CHECK_STR(fetch(rt, o.stub, "count", NULL), "0");
	CHECK_EQ_INT(pthread_create(&th, NULL, use_from_other_thread, &o), 0);
	pthread_join(th, NULL);
	CHECK_EQ_INT(o.call_rc, DOBJ_ETHREAD);
	CHECK_STR(o.msg, DOBJ_MSG_THREAD);
	CHECK_EQ_INT(o.process_rc, DOBJ_ETHREAD);
	CHECK_EQ_INT(o.run_rc, DOBJ_ETHREAD);
	CHECK_EQ_INT(o.spawn_rc, DOBJ_ETHREAD);
	/* Nothing was queued; the owner goes on as before. */
	CHECK_EQ_INT(dobj_rt_tasks(rt), 0);
	CHECK_STR(fetch(rt, o.stub, "count", NULL), "1");
	dobj_stub_free(o.stub);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* A FREE task that waits for the task in its state, then logs the answer. */
static int waiter_step(dobj_task *t, void *data)
{
	tv *st = dobj_task_host(t);
	void *res;
	(void)data;
	if (st->pc == 0) {
		st->pc = 1;
		CHECK_EQ_INT(dobj_task_wait(t, st->awaited), DOBJ_OK);
		return DOBJ_PENDING;
	}
	CHECK_EQ_INT(dobj_task_result(st->awaited, &res, NULL, NULL), DOBJ_OK);
	logf_("%s:%s ", st->s, ((tv *)res)->s);
	dobj_task_return(t, NULL);
	return DOBJ_OK;
}

static void test_two_waiters_on_one_call_both_wake(void)
{
	dobj_rt *rt = make_rt(0);
	dobj_stub *s = stub_named("two");
	dobj_task *call = send(s, "count"), *a, *b;
	tv *sa = tv_new(V_STATE, "a", 0), *sb = tv_new(V_STATE, "b", 0);
	dobj_task_ref(call);
	sa->awaited = call;
	dobj_task_ref(call);
	sb->awaited = call;
	CHECK_EQ_INT(dobj_task_spawn(&a, rt, NULL, DOBJ_TASK_FREE, waiter_step, NULL, sa, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_task_spawn(&b, rt, NULL, DOBJ_TASK_FREE, waiter_step, NULL, sb, NULL, NULL), DOBJ_OK);
	CHECK_EQ_INT(dobj_rt_run(rt, task_is_done, b), DOBJ_OK);
	CHECK(dobj_task_done(a));
	CHECK_STR(logbuf, "a:0 b:0 ");
	/* Waiting on a finished task wakes at once. */
	CHECK_EQ_INT(dobj_task_wait(a, call), DOBJ_OK);
	CHECK_EQ_INT(dobj_task_wait(call, call), DOBJ_EARG);
	dobj_task_unref(a);
	dobj_task_unref(b);
	dobj_task_unref(call);
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void test_block_calling_its_own_object_is_a_deadlock(void)
{
	dobj_rt *rt = make_rt(0);
	dobj_stub *s = stub_named("self");
	char want[256];
	/* The call fails at once instead of hanging every later caller. */
	snprintf(want, sizeof(want), "%d %s", DOBJ_EDEADLOCK, DOBJ_MSG_DEADLOCK);
	CHECK_STR(fetch(rt, s, "block:self", NULL), want);
	CHECK_STR(fetch(rt, s, "count", NULL), "0");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

static void test_block_longer_than_30s_resets_the_object(void)
{
	dobj_rt *rt = make_rt(1);
	dobj_stub *s = stub_named("slow"), *fresh;
	dobj_task *t = send(s, "block:forever"), *held;
	int code;
	CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	held = send(s, "count");
	CHECK_EQ_INT(dobj_rt_advance(rt, DOBJ_BLOCK_TIMEOUT_MS - 1), DOBJ_OK);
	CHECK(!dobj_task_done(t));
	CHECK(!dobj_task_done(held));
	CHECK_EQ_INT(dobj_rt_advance(rt, 1), DOBJ_OK);
	CHECK_STR(wait_body(rt, t, &code), DOBJ_MSG_BCW_TIMEOUT);
	CHECK_EQ_INT(code, DOBJ_EABORTED);
	CHECK_STR(wait_body(rt, held, &code), DOBJ_MSG_BCW_TIMEOUT);
	fresh = stub_named("slow");
	CHECK_STR(fetch(rt, fresh, "count", NULL), "0");
	dobj_stub_free(s);
	dobj_stub_free(fresh);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

/* The fd's "now" half (an eventfd) is read only when something wrote it:
 * a wake that came from elsewhere (here a timer; in cluster mode an
 * append's answer on the runtime's own connection) costs no read. */
static void test_the_eventfd_is_read_only_after_it_was_written(void)
{
	dobj_rt *rt = make_rt(0);
	dobj_stub *s = stub_named("efd");
	int fd = dobj_rt_fd(rt);
	long reads;
	dobj_task *t;

	CHECK_EQ_INT(dobj_rt_timer(rt, 10, log_timer, "t", NULL), DOBJ_OK);
	CHECK(readable(fd, 2000));
	reads = dobj__efd_reads;
	CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	CHECK_EQ_INT(dobj__efd_reads - reads, 0);
	CHECK(!readable(fd, 0));
	t = send(s, "count"); /* work made ready outside a pump writes it */
	CHECK(readable(fd, 0));
	CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	CHECK_EQ_INT(dobj__efd_reads - reads, 1);
	CHECK(dobj_task_done(t));
	CHECK(!readable(fd, 0));
	dobj_task_unref(t);
	dobj_stub_free(s);
	dobj_rt_free(rt);
}

typedef struct poster {
	dobj_rt *rt;
	int posts;
	int done;    /* atomic: the thread posted them all */
	int drained; /* the runtime's thread only */
} poster;

static void count_drain(dobj_rt *rt, void *data)
{
	(void)rt;
	((poster *)data)->drained++;
}

static void *post_often(void *arg)
{
	poster *p = arg;
	struct timespec ts = { 0, 20000 };

	for (int i = 0; i < p->posts; i++) {
		dobj__rt_post(p->rt);
		if (i % 8 == 0)
			nanosleep(&ts, NULL);
	}
	__atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Another thread posting while the owner processes: every post is drained,
 * the fd never stays readable once the posts stop (a count left in the
 * eventfd with no mark would wake the host for good), and the owner is not
 * woken more often than it was written. */
static void test_posts_from_another_thread_never_leave_the_fd_readable(void)
{
	dobj_rt *rt = make_rt(0);
	int fd = dobj_rt_fd(rt), wakes = 0;
	poster p = { rt, 20000, 0, 0 };
	pthread_t th;

	CHECK_EQ_INT(dobj__rt_source_add(rt, count_drain, &p), DOBJ_OK);
	CHECK_EQ_INT(pthread_create(&th, NULL, post_often, &p), 0);
	for (;;) {
		int alive = !__atomic_load_n(&p.done, __ATOMIC_ACQUIRE);
		if (readable(fd, 5)) {
			wakes++;
			CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
		}
		if (!alive)
			break;
	}
	pthread_join(th, NULL);
	/* After the last post: at most one more wake, then quiet. */
	if (readable(fd, 50))
		CHECK_EQ_INT(dobj_rt_process(rt), DOBJ_OK);
	CHECK(!readable(fd, 100));
	CHECK(p.drained >= 1);
	CHECK(wakes <= p.posts + 1);
	dobj__rt_source_remove(rt, count_drain, &p);
	dobj_rt_free(rt);
}

int main(void)
{
	RUN(test_fd_is_readable_when_work_is_ready);
	RUN(test_fd_is_readable_when_a_timer_is_due);
	RUN(test_timer_hook_reports_earlier_deadlines);
	RUN(test_delays_must_be_finite);
	RUN(test_advance_far_from_the_epoch);
	RUN(test_other_threads_are_refused);
	RUN(test_two_waiters_on_one_call_both_wake);
	RUN(test_block_calling_its_own_object_is_a_deadlock);
	RUN(test_block_longer_than_30s_resets_the_object);
	RUN(test_the_eventfd_is_read_only_after_it_was_written);
	RUN(test_posts_from_another_thread_never_leave_the_fd_readable);
	return DONE();
}
