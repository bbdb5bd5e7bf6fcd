/*
 * The runtime: objects (one incarnation per ID), tasks and the scheduler
 * that decides when each task's next step runs (namespaces are in ns.c,
 * stubs and the calls made through them in stub.c).
 *
 * Ownership in one paragraph: the runtime memory is reference counted (the
 * owner, every stub, task and object hold it) so that bindings may free their
 * wrappers in any order.  Objects are reference counted: the namespace map
 * holds the live incarnation; stubs bound to it and its tasks hold it too.
 * Tasks are reference counted: the runtime holds every unfinished task, the
 * ready queue (or an object's parked list) holds a queued task, and callers
 * hold what dobj_stub_call/dobj_task_spawn returned.  Host values are
 * released through the "trash": never in the middle of a core loop, because
 * releasing a host value can run host code (a Python finaliser) that calls
 * back into the core.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* ------------------------------------------------------------ host values */

/*
 * Queue a host value for release.  Releasing runs host code, which may
 * re-enter the core; so it happens in flush_trash at the end of an entry
 * point, never while a core loop is half-way.
 */
static void trash(dobj_rt *rt, void *v);

/* Release a request or result: core values (free_fn set) go at once, since
 * freeing them runs no host code; host values go through the trash. */
static void drop_value(dobj_rt *rt, void *v, void (*free_fn)(void *))
{
	if (!v)
		return;
	if (free_fn)
		free_fn(v);
	else
		trash(rt, v);
}

static void trash(dobj_rt *rt, void *v)
{
	if (!v || !rt->host.release)
		return;
	if (rt->ntrash == rt->captrash) {
		size_t cap = rt->captrash ? 2 * rt->captrash : 16;
		void **p = realloc(rt->trash, cap * sizeof(*p));
		if (!p) {
			/* Cannot defer: release now rather than leak. */
			rt->host.release(rt->host.data, v);
			return;
		}
		rt->trash = p;
		rt->captrash = cap;
	}
	rt->trash[rt->ntrash++] = v;
}

static void flush_trash(dobj_rt *rt)
{
	if (rt->flushing)
		return;
	rt->flushing = 1;
	while (rt->ntrash) {
		void *v = rt->trash[--rt->ntrash];
		rt->host.release(rt->host.data, v);
	}
	rt->flushing = 0;
}

static void rt_unref(dobj_rt *rt);

static void drop_instance(dobj_ns *ns, void *inst)
{
	if (!inst)
		return;
	if (ns->klass.destroy)
		ns->klass.destroy(inst, ns->klass.data);
	else
		trash(ns->rt, inst);
}

/* ------------------------------------------------------------ ready queue */

static void ready_push(dobj_rt *rt, dobj_task *t)
{
	t->qnext = NULL;
	if (rt->ready_tail)
		rt->ready_tail->qnext = t;
	else
		rt->ready_head = t;
	rt->ready_tail = t;
	rt->nready++;
}

static dobj_task *ready_pop(dobj_rt *rt)
{
	dobj_task *t = rt->ready_head;

	if (t) {
		rt->ready_head = t->qnext;
		if (!rt->ready_head)
			rt->ready_tail = NULL;
		t->qnext = NULL;
		rt->nready--;
	}
	return t;
}

static void enqueue(dobj_task *t)
{
	dobj_rt *rt = t->rt;
	int was_empty = rt->ready_head == NULL;

	if (t->queued || t->done)
		return;
	t->queued = 1;
	t->refs++; /* the queue's reference */
	ready_push(rt, t);
	if (was_empty && !rt->pumping)
		dobj__work_ready(rt);
}

/* ----------------------------------------------------------------- objects */

static void obj_unref(dobj_obj *obj);
static void arm_idle(dobj_obj *obj);
static void deliver(dobj_task *t);

static int map_insert(dobj_ns *ns, dobj_obj *obj)
{
	if (dobj__idmap_put(&ns->objs, &obj->id, obj) < 0)
		return DOBJ_ENOMEM;
	obj->mapped = 1;
	obj->refs++;
	return DOBJ_OK;
}

static void map_remove(dobj_ns *ns, dobj_obj *obj)
{
	if (!obj->mapped)
		return;
	dobj__idmap_del(&ns->objs, &obj->id);
	obj->mapped = 0;
	obj_unref(obj);
}

static dobj_obj *obj_new(dobj_ns *ns, const dobj_id *id, const char *name, size_t len)
{
	dobj_obj *obj = calloc(1, sizeof(*obj));

	if (!obj) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	obj->refs = 1;
	obj->ns = ns;
	obj->id = *id;
	if (name) {
		obj->name = dobj__strndup(name, len);
		if (!obj->name) {
			free(obj);
			return NULL;
		}
		obj->name_len = len;
	}
	ns->rt->refs++;
	return obj;
}

static void obj_release_instance(dobj_obj *obj)
{
	dobj_rt *rt = obj->ns->rt;
	void *inst = obj->instance;

	obj->instance = NULL;
	obj->constructed = 0;
	dobj__storage_detach(obj);
	dobj__cluster_release(obj);
	if (obj->idle_timer) {
		dobj_timer *tm = obj->idle_timer;
		obj->idle_timer = NULL;
		dobj_timer_cancel(rt, tm);
	}
	drop_instance(obj->ns, inst);
	trash(rt, obj->ctx);
	obj->ctx = NULL;
}

static void idle_fired(void *data, int fired)
{
	dobj_obj *obj = data;

	if (fired) {
		obj->idle_timer = NULL;
		if (obj->ntasks == 0 && !obj->dead && obj->mapped)
			dobj__obj_evict(obj);
	}
	obj_unref(obj);
}

void dobj__obj_evict(dobj_obj *obj)
{
	/* The instance and its database handle go; the data stays.  Stubs
	 * bound to it reach a new instance on their next call. */
	obj->evicted = 1;
	obj->refs++;
	map_remove(obj->ns, obj);
	obj_release_instance(obj);
	obj_unref(obj);
}

void dobj__rt_flush(dobj_rt *rt)
{
	if (!rt->pumping && !rt->busy)
		flush_trash(rt);
}

static void arm_idle(dobj_obj *obj)
{
	dobj_rt *rt = obj->ns->rt;

	if (rt->idle_ms <= 0 || obj->dead || obj->idle_timer || rt->closing || !obj->mapped)
		return;
	obj->refs++;
	if (dobj__timer(rt, rt->idle_ms, idle_fired, obj, 1, &obj->idle_timer) < 0)
		obj->refs--;
}

void dobj__obj_unref(dobj_obj *obj)
{
	obj_unref(obj);
}

void dobj__rt_unref(dobj_rt *rt) { rt_unref(rt); }

void dobj_obj_ref(dobj_obj *obj)
{
	if (obj)
		obj->refs++;
}

void dobj_obj_unref(dobj_obj *obj)
{
	dobj_rt *rt;

	if (!obj)
		return;
	rt = obj->ns->rt;
	rt->refs++;
	obj_unref(obj);
	if (!rt->pumping && !rt->busy)
		flush_trash(rt);
	rt_unref(rt);
}

static void obj_unref(dobj_obj *obj)
{
	dobj_rt *rt;

	if (!obj || --obj->refs > 0)
		return;
	rt = obj->ns->rt;
	obj_release_instance(obj);
	if (obj->dead) {
		if (obj->dead_prev)
			obj->dead_prev->dead_next = obj->dead_next;
		else
			rt->dead_objs = obj->dead_next;
		if (obj->dead_next)
			obj->dead_next->dead_prev = obj->dead_prev;
	}
	free(obj->message);
	free(obj->name);
	free(obj);
	rt_unref(rt);
}

/* ------------------------------------------------------------------- tasks */

static dobj_task *task_new(dobj_rt *rt, dobj_obj *obj, dobj_task_kind kind)
{
	dobj_task *t = calloc(1, sizeof(*t));

	if (!t) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	t->refs = 2; /* the caller's and the unfinished list's */
	t->kind = kind;
	t->rt = rt;
	rt->refs++;
	t->obj = obj;
	if (obj) {
		obj->refs++;
		obj->ntasks++;
		if (obj->idle_timer) {
			dobj_timer *tm = obj->idle_timer;
			obj->idle_timer = NULL;
			dobj_timer_cancel(rt, tm);
		}
	}
	t->depth = rt->current ? rt->current->depth : 0;
	/* The runtime's list of unfinished tasks. */
	t->listed = 1;
	t->lprev = NULL;
	t->lnext = rt->tasks;
	if (rt->tasks)
		rt->tasks->lprev = t;
	else
		rt->tasks_tail = t;
	rt->tasks = t;
	rt->ntasks++;
	return t;
}

void dobj_task_ref(dobj_task *t)
{
	if (t)
		t->refs++;
}

/* Drop a reference without flushing the trash (for use inside core loops). */
static void task_unref(dobj_task *t)
{
	dobj_rt *rt;

	if (!t || --t->refs > 0)
		return;
	rt = t->rt;
	drop_value(rt, t->request, t->request_free);
	trash(rt, t->host);
	drop_value(rt, t->result, t->result_free);
	trash(rt, t->error);
	trash(rt, t->stub_error);
	free(t->method);
	free(t->message);
	while (t->nwaiters) /* only if never finished (cannot happen: defensive) */
		task_unref(t->waiters[--t->nwaiters]);
	free(t->waiters);
	if (t->obj)
		obj_unref(t->obj);
	free(t);
	rt_unref(rt);
}

void dobj_task_unref(dobj_task *t)
{
	dobj_rt *rt;

	if (!t)
		return;
	rt = t->rt;
	rt->refs++;
	task_unref(t);
	if (!rt->pumping && !rt->busy)
		flush_trash(rt);
	rt_unref(rt);
}

static void unpark(dobj_obj *obj)
{
	dobj_rt *rt = obj->ns->rt;

	/* Parked tasks were ready before anything now queued: they go first. */
	if (!obj->parked_head)
		return;
	if (!rt->ready_head && !rt->pumping)
		dobj__work_ready(rt);
	obj->parked_tail->qnext = rt->ready_head;
	if (!rt->ready_head)
		rt->ready_tail = obj->parked_tail;
	rt->ready_head = obj->parked_head;
	rt->nready += obj->nparked;
	obj->parked_head = obj->parked_tail = NULL;
	obj->nparked = 0;
}

static void abort_obj(dobj_obj *obj, int code, const char *message, void *error);

void dobj__obj_gate_open(dobj_obj *obj)
{
	if (obj->dead || obj->nblock == 0)
		return;
	if (--obj->nblock == 0)
		unpark(obj);
}

static void finish_ex(dobj_task *t, int code, const char *message, void *result,
	void (*result_free)(void *), void *error);

static void finish(dobj_task *t, int code, const char *message, void *result, void *error)
{
	finish_ex(t, code, message, result, NULL, error);
}

static void finish_ex(dobj_task *t, int code, const char *message, void *result,
	void (*result_free)(void *), void *error)
{
	dobj_rt *rt = t->rt;
	dobj_obj *obj = t->obj;

	if (t->done) {
		drop_value(rt, result, result_free);
		trash(rt, error);
		return;
	}
	t->done = 1;
	if (t->stub_error) { /* failed otherwise (the runtime closing) */
		trash(rt, t->stub_error);
		t->stub_error = NULL;
	}
	if (t->limit) {
		dobj_timer *tm = t->limit;
		t->limit = NULL;
		dobj_timer_cancel(rt, tm);
	}
	t->code = code;
	t->result = result;
	t->result_free = result_free;
	t->error = error;
	if (code != DOBJ_OK) {
		t->message = strdup(message ? message : "");
	}
	/* The request and the host state are no longer needed; a running step
	 * still uses its host state, so that one goes after the step returns. */
	drop_value(rt, t->request, t->request_free);
	t->request = NULL;
	if (!t->running) {
		trash(rt, t->host);
		t->host = NULL;
	}
	if (t->listed) {
		t->listed = 0;
		if (t->lprev)
			t->lprev->lnext = t->lnext;
		else
			rt->tasks = t->lnext;
		if (t->lnext)
			t->lnext->lprev = t->lprev;
		else
			rt->tasks_tail = t->lprev;
		rt->ntasks--;
	}
	if (obj && --obj->ntasks == 0)
		arm_idle(obj);
	if (t->kind == DOBJ_TASK_BLOCK && obj && !obj->dead && code != DOBJ_OK) {
		/* A failed block_concurrency_while resets the object. */
		obj->nblock--;
		dobj__host_retain(rt, error);
		abort_obj(obj, code, message, error);
	}
	/* A successful block keeps the gate closed until its result is
	 * delivered: see deliver(). */
	if (rt->current) {
		/* Output gate: what a step produced reaches its caller only after the
		 * step's writes are committed (see run_task). */
		t->held = 1;
		t->refs++;
		t->dnext = NULL;
		if (rt->held_tail)
			rt->held_tail->dnext = t;
		else
			rt->held_head = t;
		rt->held_tail = t;
	} else {
		deliver(t);
	}
	task_unref(t); /* the unfinished list's reference */
}

static void deliver(dobj_task *t)
{
	dobj_obj *obj = t->obj;

	/* Before the done callback: an alarm's drops the retry count. */
	if (t->report && t->rt->error_hook)
		t->rt->error_hook(t, t->rt->error_hook_data);
	if (t->alarm_info)
		dobj__alarm_done(t);
	if (t->done_fn)
		t->done_fn(t, t->done_data);
	if (t->nwaiters) {
		/* Whoever waits wakes now, in the order they began waiting. */
		dobj_task **w = t->waiters;
		size_t i, n = t->nwaiters;
		t->waiters = NULL;
		t->nwaiters = t->capwaiters = 0;
		for (i = 0; i < n; i++) {
			enqueue(w[i]);
			task_unref(w[i]);
		}
		free(w);
	}
	/* The gate of a finished block opens only now, and the events it held
	 * queue up behind whoever the done callback woke (the handler awaiting
	 * block_concurrency_while continues first, as in workerd). */
	if (t->kind == DOBJ_TASK_BLOCK && t->code == DOBJ_OK && obj && !obj->dead &&
	    obj->nblock > 0 && --obj->nblock == 0 && obj->parked_head) {
		if (!t->rt->ready_head && !t->rt->pumping)
			dobj__work_ready(t->rt);
		if (t->rt->ready_tail)
			t->rt->ready_tail->qnext = obj->parked_head;
		else
			t->rt->ready_head = obj->parked_head;
		t->rt->ready_tail = obj->parked_tail;
		t->rt->nready += obj->nparked;
		obj->parked_head = obj->parked_tail = NULL;
		obj->nparked = 0;
	}
}

void dobj__held_deliver(dobj_task *t, int code, const char *message)
{
	dobj_rt *rt = t->rt;

	t->dnext = NULL;
	t->held = 0;
	if (t->code == DOBJ_OK && (code < 0 ||
	    (code == DOBJ_OK && t->obj && t->obj->dead && t->obj->commit_failed))) {
		drop_value(rt, t->result, t->result_free);
		t->result = NULL;
		t->code = code < 0 ? code : t->obj->code;
		free(t->message);
		t->message = strdup(code < 0 ? (message ? message : "")
			: (t->obj->message ? t->obj->message : ""));
	}
	deliver(t);
	task_unref(t);
}

/* Commit what the step wrote, then deliver what it finished.  A failed
 * commit aborted the object: its held results become that error.  In
 * cluster mode, the results of an object whose writes PostgreSQL has not
 * confirmed yet wait for the confirmation (cluster_commit.c). */
static void end_step(dobj_rt *rt)
{
	dobj__storage_commit_dirty(rt);
	if (rt->ws_held)
		dobj__ws_flush(rt);
	while (rt->held_head) {
		dobj_task *t = rt->held_head;
		rt->held_head = t->dnext;
		if (!rt->held_head)
			rt->held_tail = NULL;
		t->dnext = NULL;
		if (rt->cluster && dobj__cluster_defer(t))
			continue;
		dobj__held_deliver(t, DOBJ_OK, NULL);
	}
}

void dobj__abort(dobj_obj *obj, int code, const char *message)
{
	obj->commit_failed = 1;
	abort_obj(obj, code, message, NULL);
}

void dobj_task_return(dobj_task *t, void *result)
{
	finish_ex(t, DOBJ_OK, NULL, result, NULL, NULL);
}

void dobj_task_return_value(dobj_task *t, void *result, void (*result_free)(void *))
{
	finish_ex(t, DOBJ_OK, NULL, result, result_free, NULL);
}

void dobj_task_raise(dobj_task *t, int code, const char *message, void *error)
{
	finish(t, code < 0 ? code : DOBJ_ERROR, message, NULL, error);
}

void dobj_task_wake(dobj_task *t)
{
	if (t && !t->done)
		enqueue(t);
}

void dobj_task_on_done(dobj_task *t, dobj_done_fn done, void *data)
{
	t->done_fn = done;
	t->done_data = data;
}

/* Does a block of `obj` wait, directly or through other tasks, for t?  Then
 * t can never pass obj's gate, which that block holds.  Waits are explicit
 * (dobj_task_wait) or at a gate: every call parked at an object's gate waits
 * for that object's blocks, so A's block calling B while B's block calls A
 * is found too.  The walk is bounded in depth (waits are as deep as calls
 * are) and in the tasks it visits (*budget): past it, no deadlock is
 * reported, and the block limit (DOBJ_BLOCK_TIMEOUT_MS) still ends a cycle. */
static int waited_by_block_of_ex(const dobj_task *t, const dobj_obj *obj, int depth, int *budget)
{
	size_t i;

	if (depth > 4 * DOBJ_MAX_CALL_DEPTH || --*budget < 0)
		return 0;
	for (i = 0; i < t->nwaiters; i++) {
		const dobj_task *w = t->waiters[i];
		if (w->done)
			continue;
		if (w->kind == DOBJ_TASK_BLOCK && w->obj == obj)
			return 1;
		if (waited_by_block_of_ex(w, obj, depth + 1, budget))
			return 1;
		if (w->kind == DOBJ_TASK_BLOCK && w->obj) {
			const dobj_task *p;
			for (p = w->obj->parked_head; p; p = p->qnext)
				if (!p->done && waited_by_block_of_ex(p, obj, depth + 1, budget))
					return 1;
		}
	}
	return 0;
}

static int waited_by_block_of(const dobj_task *t, const dobj_obj *obj)
{
	int budget = 4096;

	return waited_by_block_of_ex(t, obj, 0, &budget);
}

int dobj_task_wait(dobj_task *waiter, dobj_task *t)
{
	dobj_rt *rt = t->rt;

	CHECK_THREAD(rt);
	if (waiter == t)
		return dobj_error_set(DOBJ_EARG, "a task cannot wait for itself");
	if (waiter->done)
		return DOBJ_OK;
	if (t->done && !t->held) {
		enqueue(waiter);
		return DOBJ_OK;
	}
	if (t->nwaiters == t->capwaiters) {
		size_t cap = t->capwaiters ? 2 * t->capwaiters : 2;
		dobj_task **w = realloc(t->waiters, cap * sizeof(*w));
		if (!w)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		t->waiters = w;
		t->capwaiters = cap;
	}
	waiter->refs++;
	t->waiters[t->nwaiters++] = waiter;
	/* A call already held at a gate that its (new) waiter holds: it stays in
	 * the parked list, finished, and is dropped when the gate opens. */
	if (t->parked && waited_by_block_of(t, t->obj))
		finish(t, DOBJ_EDEADLOCK, DOBJ_MSG_DEADLOCK, NULL, NULL);
	return DOBJ_OK;
}

dobj_task_kind dobj_task_kind_of(const dobj_task *t) { return t->kind; }
dobj_call_kind dobj_task_call_kind(const dobj_task *t) { return t->call_kind; }
const char *dobj_task_method(const dobj_task *t) { return t->method; }
dobj_rt *dobj_task_rt(const dobj_task *t) { return t->rt; }
dobj_obj *dobj_task_obj(const dobj_task *t) { return t->obj; }
int dobj_task_depth(const dobj_task *t) { return t->depth; }
void *dobj_task_request(const dobj_task *t) { return t->request; }
void *dobj_task_host(const dobj_task *t) { return t->host; }
/* A result held at the output gate is not there yet for anyone. */
int dobj_task_done(const dobj_task *t) { return t->done && !t->held; }

void dobj_task_set_host(dobj_task *t, void *host)
{
	trash(t->rt, t->host);
	t->host = host;
}

int dobj_task_result(const dobj_task *t, void **result, const char **message, void **error)
{
	int done = dobj_task_done(t);

	if (result)
		*result = done ? t->result : NULL;
	if (message)
		*message = done && t->code ? t->message : NULL;
	if (error)
		*error = done ? t->error : NULL;
	if (!done)
		return DOBJ_PENDING;
	return t->code;
}

void *dobj_task_take_error(dobj_task *t)
{
	void *e = t->error;

	t->error = NULL;
	return e;
}

void dobj_rt_set_error_hook(dobj_rt *rt, dobj_error_hook hook, void *data)
{
	rt->error_hook = hook;
	rt->error_hook_data = data;
}

void *dobj_task_take_result(dobj_task *t)
{
	void *r = t->result;

	t->result = NULL;
	t->result_free = NULL;
	return r;
}

int dobj_task_result_is_core(const dobj_task *t)
{
	return t->result_free != NULL;
}

/* workerd's limit: a block still running after 30 s resets its object. */
static void block_limit_fired(void *data, int fired)
{
	dobj_task *t = data;
	dobj_rt *rt = t->rt;

	t->limit = NULL;
	if (fired && !t->done && t->obj && !t->obj->dead) {
		rt->busy++; /* done callbacks run here, outside any step */
		abort_obj(t->obj, DOBJ_EABORTED, DOBJ_MSG_BCW_TIMEOUT, NULL);
		rt->busy--;
	}
	task_unref(t);
}

int dobj_task_spawn(dobj_task **out, dobj_rt *rt, dobj_obj *obj, dobj_task_kind kind,
	dobj_step_fn step, void *step_data, void *host, dobj_done_fn done, void *done_data)
{
	dobj_task *t;
	int level = 0;

	if (out)
		*out = NULL;
	if (dobj__wrong_thread(rt)) {
		dobj__release_now(rt, host, NULL);
		return dobj_error_set(DOBJ_ETHREAD, DOBJ_MSG_THREAD);
	}
	if (rt->closing) {
		trash(rt, host);
		flush_trash(rt);
		return dobj_error_set(DOBJ_ECLOSED, "the runtime is closed");
	}
	if (!step || kind == DOBJ_TASK_CALL || (kind == DOBJ_TASK_FREE && obj) ||
	    (kind == DOBJ_TASK_BLOCK && !obj)) {
		/* BACKGROUND may lack one: the runtime's own (dobj_rt_background). */
		trash(rt, host);
		flush_trash(rt);
		return dobj_error_set(DOBJ_EARG, "bad task: FREE tasks have no object, BLOCK tasks need one");
	}
	if (obj && obj->dead) {
		trash(rt, host);
		flush_trash(rt);
		return dobj_error_set(obj->code ? obj->code : DOBJ_EABORTED, "%s",
			obj->message ? obj->message : "the object was reset");
	}
	if (kind == DOBJ_TASK_BLOCK) {
		dobj_task *cur = rt->current;
		level = (cur && cur->obj == obj && cur->kind == DOBJ_TASK_BLOCK) ? cur->block_level + 1 : 1;
		if (level > DOBJ_MAX_BLOCK_NESTING) {
			trash(rt, host);
			flush_trash(rt);
			return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_BCW_NESTED);
		}
	}
	t = task_new(rt, obj, kind);
	if (!t) {
		trash(rt, host);
		flush_trash(rt);
		return DOBJ_ENOMEM;
	}
	t->block_level = level;
	t->step = step;
	t->step_data = step_data;
	t->host = host;
	t->done_fn = done;
	t->done_data = done_data;
	if (kind == DOBJ_TASK_BLOCK) {
		obj->nblock++; /* the gate closes now, not when the task first runs */
		/* A weak timer: it does not keep dobj_rt_run going by itself. */
		t->refs++;
		if (dobj__timer(rt, DOBJ_BLOCK_TIMEOUT_MS, block_limit_fired, t, 1, &t->limit) < 0)
			t->refs--;
	}
	enqueue(t);
	if (out)
		*out = t;
	else
		task_unref(t);
	return DOBJ_OK;
}

/* ------------------------------------------------------------------ objects */

static void abort_obj(dobj_obj *obj, int code, const char *message, void *error)
{
	dobj_rt *rt = obj->ns->rt;
	dobj_task *t;

	if (obj->dead) {
		trash(rt, error);
		return;
	}
	obj->refs++; /* keep it while we work */
	obj->dead = 1;
	/* Listed until freed, so that closing the runtime can drop its error. */
	obj->dead_prev = NULL;
	obj->dead_next = rt->dead_objs;
	if (rt->dead_objs)
		rt->dead_objs->dead_prev = obj;
	rt->dead_objs = obj;
	obj->code = code < 0 ? code : DOBJ_EABORTED;
	obj->message = strdup(message ? message : "");
	obj->nblock = 0;
	/* Each stub bound to it keeps its own reference to the error, for the
	 * calls it will fail; the incarnation keeps none.  A GC binding visits
	 * the error from the stub's wrapper (dobj_stub_error), once per stub:
	 * a reference held by the incarnation, shared by all its stubs and its
	 * ctx, could be reported by none of them exactly once, and a cycle
	 * through it (error -> traceback -> frame -> stub) could never be
	 * collected. */
	{
		dobj_stub *s;
		for (s = obj->stubs; s; s = s->onext) {
			trash(rt, s->error);
			dobj__host_retain(rt, error);
			s->error = error;
		}
	}
	if (obj->mapped)
		map_remove(obj->ns, obj);

	/* Parked tasks return to the ready queue, where they fail as "dead". */
	unpark(obj);
	/* Fail every unfinished task of this incarnation, oldest first (the
	 * list is newest first): callers hear in the order they called, and a
	 * routed call answered "not the owner" goes again in its order.
	 * finish() may run done callbacks that queue more work; restart the
	 * scan after each, from the oldest end (from the newest, each scan
	 * would walk every task: tens of thousands queued on one object made
	 * a reset quadratic). */
	for (;;) {
		for (t = rt->tasks_tail; t && t->obj != obj; t = t->lprev)
			;
		if (!t)
			break;
		dobj__host_retain(rt, error);
		finish(t, obj->code, obj->message, NULL, error);
	}
	trash(rt, error);
	obj_release_instance(obj);
	obj_unref(obj);
}

void dobj_obj_abort(dobj_obj *obj, int code, const char *message, void *error)
{
	dobj_rt *rt = obj->ns->rt;

	/* Done callbacks run inside the loop below: what they drop waits in the
	 * trash until the loop is over. */
	rt->busy++;
	abort_obj(obj, code, message, error);
	rt->busy--;
	if (!rt->pumping && !rt->busy)
		flush_trash(rt);
}

const dobj_id *dobj_obj_id(const dobj_obj *obj) { return &obj->id; }
dobj_ns *dobj_obj_ns(const dobj_obj *obj) { return obj->ns; }
void *dobj_obj_instance(const dobj_obj *obj) { return obj->instance; }
void *dobj_obj_ctx(const dobj_obj *obj) { return obj->ctx; }
int dobj_obj_dead(const dobj_obj *obj) { return obj->dead; }
int dobj_obj_blocked(const dobj_obj *obj) { return obj->nblock; }

const char *dobj_obj_name(const dobj_obj *obj, size_t *len)
{
	/* workerd drops long names inside the object "to emulate production". */
	if (!obj->name || obj->name_len > DOBJ_MAX_CTX_NAME) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (len)
		*len = obj->name_len;
	return obj->name;
}

void dobj_obj_set_ctx(dobj_obj *obj, void *ctx)
{
	trash(obj->ns->rt, obj->ctx);
	obj->ctx = ctx;
}

/* ---------------------------------------------------------------- scheduler */

static void construct(dobj_task *t)
{
	dobj_obj *obj = t->obj;
	dobj_ns *ns = obj->ns;
	dobj_rt *rt = ns->rt;
	void *instance = NULL, *error = NULL;
	dobj_task *prev = rt->current;
	char msg[512];
	int rc;

	if (rt->cluster && (rc = dobj__cluster_activate(obj)) != 0) {
		if (rc > 0)
			return; /* claimed and restored off this thread: t parks at the gate */
		/* A live owner elsewhere: the call goes there (cluster_route.c). */
		if (rc == DOBJ_ESTATE && rt->route && dobj__route_owned(t))
			return;
		snprintf(msg, sizeof(msg), "%s", dobj_error_last());
		abort_obj(obj, rc, msg, NULL);
		return;
	}
	if (!ns->klass.construct) {
		obj->constructed = 1;
		return;
	}
	rt->current = t;
	rc = ns->klass.construct(obj, ns->klass.data, &instance, &error);
	snprintf(msg, sizeof(msg), "%s", rc < 0 && dobj_error_last()[0] ? dobj_error_last()
		: "the constructor failed");
	rt->current = prev;
	if (!prev)
		end_step(rt);
	if (obj->dead || rc < 0) {
		drop_instance(ns, instance);
		if (obj->dead) {
			/* The constructor aborted its own object. */
			trash(rt, error);
			return;
		}
		/* A constructor that throws breaks this incarnation: the call and
		 * everything queued on it fail; a new stub tries again. */
		abort_obj(obj, rc, msg, error);
		return;
	}
	obj->instance = instance;
	obj->constructed = 1;
}

static void run_task(dobj_rt *rt, dobj_task *t)
{
	dobj_obj *obj = t->obj;
	dobj_task *prev;
	int rc;

	t->queued = 0;
	t->parked = 0;
	if (t->done)
		goto done;
	if (t->alarm_info && !t->started && dobj__alarm_skipped(t)) {
		finish(t, DOBJ_OK, NULL, NULL, NULL); /* deleted or moved meanwhile */
		goto done;
	}
	if (!t->started && dobj__ws_dropped(t)) {
		finish(t, DOBJ_OK, NULL, NULL, NULL); /* its socket went with the object */
		goto done;
	}
	if (obj) {
		if (obj->dead) {
			void *error = t->stub_error; /* a broken stub's call */
			t->stub_error = NULL;
			finish(t, obj->code, obj->message, NULL, error);
			goto done;
		}
		if (!obj->constructed && t->kind == DOBJ_TASK_CALL) {
			if (rt->route && dobj__route_call(t))
				goto done; /* sent to the node that owns the object */
			construct(t);
			if (obj->dead || t->done || t->routed)
				goto done;
		}
		if (obj->nblock > 0 && t->kind != DOBJ_TASK_BLOCK) {
			/* Input gate closed by block_concurrency_while: wait, in order;
			 * unless the block waits for this very task (an object calling
			 * itself from inside the block): that wait would never end. */
			if (waited_by_block_of(t, obj)) {
				finish(t, DOBJ_EDEADLOCK, DOBJ_MSG_DEADLOCK, NULL, NULL);
				goto done;
			}
			t->parked = 1;
			t->qnext = NULL;
			if (obj->parked_tail)
				obj->parked_tail->qnext = t;
			else
				obj->parked_head = t;
			obj->parked_tail = t;
			obj->nparked++;
			return; /* the parked list keeps the queue's reference */
		}
		if (t->kind == DOBJ_TASK_CALL && !t->started && t->call_kind == DOBJ_CALL_FETCH &&
		    !(obj->ns->klass.flags & DOBJ_CLASS_FETCH)) {
			finish(t, DOBJ_ENOHANDLER, DOBJ_MSG_NO_FETCH, NULL, NULL);
			goto done;
		}
		if (t->kind == DOBJ_TASK_CALL && !t->started && t->call_kind == DOBJ_CALL_ALARM &&
		    !(obj->ns->klass.flags & DOBJ_CLASS_ALARM)) {
			finish(t, DOBJ_ENOHANDLER, DOBJ_MSG_NO_ALARM, NULL, NULL);
			goto done;
		}
		if (t->kind == DOBJ_TASK_CALL && !t->started && (rc = dobj__ws_unhandled(t)) != 0) {
			t->report = rc < 0; /* see dobj__ws_unhandled */
			finish(t, rc < 0 ? DOBJ_ENOHANDLER : DOBJ_OK, DOBJ_MSG_WS_NO_MESSAGE, NULL, NULL);
			goto done;
		}
		if (t->kind == DOBJ_TASK_CALL && !t->started && t->call_kind == DOBJ_CALL_RPC &&
		    dobj_rpc_name_check(t->method, t->method ? strlen(t->method) : 0) < 0) {
			finish(t, DOBJ_ENOHANDLER, dobj_error_last(), NULL, NULL);
			goto done;
		}
	}
	t->started = 1;
	t->running = 1;
	prev = rt->current;
	rt->current = t;
	dobj_error_set(DOBJ_OK, "%s", "");
	rc = t->step(t, t->step_data);
	t->running = 0;
	if (!t->done && rc != DOBJ_PENDING) {
		if (rc == DOBJ_OK)
			finish(t, DOBJ_ERROR, "the handler finished without a result", NULL, NULL);
		else
			finish(t, rc, dobj_error_last()[0] ? dobj_error_last() : "the handler failed",
				NULL, NULL);
	}
	/* A failure nobody awaits goes to the error hook (see deliver), unless
	 * the object was reset meanwhile: that reaches its callers. */
	if (t->done && t->code != DOBJ_OK && !(obj && obj->dead) &&
	    (t->kind == DOBJ_TASK_BACKGROUND ||
	     (t->kind == DOBJ_TASK_CALL && (t->call_kind == DOBJ_CALL_ALARM ||
	      t->call_kind >= DOBJ_CALL_WS_MESSAGE))))
		t->report = 1;
	rt->current = prev;
	if (!prev)
		end_step(rt);
	if (t->done) {
		trash(rt, t->host);
		t->host = NULL;
	}
done:
	task_unref(t); /* the queue's reference */
}

/* A round of ready tasks ended: what it appended goes now. */
static void round_end(dobj_rt *rt)
{
	rt->in_round = 0;
	if (rt->cluster)
		dobj__cluster_turn_end(rt->cluster);
	if (rt->route)
		dobj__route_flush(rt);
}

size_t dobj_rt_pump(dobj_rt *rt)
{
	size_t n = 0;
	dobj_task *t;

	if (rt->pumping || rt->busy)
		return 0;
	if (dobj__wrong_thread(rt)) {
		dobj_error_set(DOBJ_ETHREAD, DOBJ_MSG_THREAD);
		return 0;
	}
	rt->refs++;
	dobj__rt_drain(rt);
	if (rt->nheap)
		dobj__fire_timers(rt);
	rt->pumping = 1;
	if (rt->route)
		dobj__route_drain(rt);
	rt->in_round = 1;
	while ((t = ready_pop(rt))) {
		run_task(rt, t);
		n++;
		/* Between two steps no core loop is half-way (a finaliser that runs
		 * here sees what one running in a step sees).  A handler that keeps
		 * awaiting other objects' calls keeps this loop going for as long
		 * as it runs: what each finished call let go of (its error, its
		 * coroutine, its request) would pile up until the handler ends. */
		if (rt->ntrash)
			flush_trash(rt);
	}
	round_end(rt);
	rt->pumping = 0;
	flush_trash(rt);
	dobj__timer_sync(rt);
	rt_unref(rt);
	return n;
}

int dobj_rt_process(dobj_rt *rt)
{
	CHECK_THREAD(rt);
	if (rt->pumping || rt->busy)
		return dobj_error_set(DOBJ_ESTATE, "the runtime cannot be processed from inside a handler");
	if (rt->closing)
		return dobj_error_set(DOBJ_ECLOSED, "the runtime is closed");
	/* The host's timer and the fd are spent: report the next deadline anew. */
	dobj__fd_clear(rt, 0);
	rt->hook_when = INFINITY;
	dobj_rt_pump(rt);
	if (rt->ready_head) /* woken by a finaliser after the pump */
		dobj__work_ready(rt);
	dobj__timer_sync(rt);
	return DOBJ_OK;
}

int dobj_rt_ready(const dobj_rt *rt)
{
	return rt->ready_head != NULL;
}

size_t dobj_rt_tasks(const dobj_rt *rt)
{
	return rt->ntasks;
}

int dobj_rt_pumping(const dobj_rt *rt)
{
	return rt->pumping;
}

dobj_task *dobj_rt_current(const dobj_rt *rt)
{
	return rt->current;
}

size_t dobj_rt_pending(const dobj_rt *rt)
{
	return rt->ntasks + rt->nstrong + rt->nkeep;
}

int dobj_rt_run(dobj_rt *rt, int (*until)(void *arg), void *arg)
{
	int rc = DOBJ_OK;

	CHECK_THREAD(rt);
	if (rt->pumping)
		return dobj_error_set(DOBJ_ESTATE, "the runtime cannot be run from inside a handler");
	rt->refs++;
	for (;;) {
		dobj_task *t;
		size_t n;

		dobj__rt_drain(rt);
		if (until && until(arg))
			break;
		if (rt->ready_head) {
			/* One round: the tasks ready now, then the timers get a turn, so
			 * a task that keeps yielding cannot starve a sleeper. */
			rt->pumping = 1;
			if (rt->route)
				dobj__route_drain(rt);
			rt->in_round = 1;
			for (n = rt->nready; n > 0 && (t = ready_pop(rt)); n--)
				run_task(rt, t);
			round_end(rt);
			rt->pumping = 0;
			flush_trash(rt);
			dobj__fire_timers(rt);
			continue;
		}
		if (!rt->nstrong && !rt->nkeep) {
			if (until && !until(arg))
				rc = dobj_error_set(DOBJ_PENDING,
					"deadlock: waiting for work that nothing will ever finish");
			break;
		}
		if (!dobj__fire_timers(rt)) {
			if (rt->virtual_time && rt->nheap)
				rt->virtual_now = rt->heap[0]->when;
			else if ((rc = dobj__wait_for_timer(rt)) < 0)
				break;
		}
		flush_trash(rt);
	}
	flush_trash(rt);
	dobj__timer_sync(rt);
	rt_unref(rt);
	return rc;
}

/* ----------------------------------------------------------------- runtime */

int dobj_rt_new(dobj_rt **out, const dobj_rt_opts *opts)
{
	dobj_rt *rt;
	int rc;

	*out = NULL;
	if ((rc = dobj_rt_opts_check(opts)) < 0)
		return rc;
	rt = calloc(1, sizeof(*rt));
	if (!rt)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	rt->refs = 1;
	rt->idle_ms = DOBJ_IDLE_TIMEOUT_MS;
	rt->owner = pthread_self();
	rt->fd = rt->tfd = rt->efd = -1;
	rt->fd_when = INFINITY;
	rt->hook_when = INFINITY;
	if (opts) {
		rt->host = opts->host;
		rt->now_ms = opts->now_ms;
		rt->clock_data = opts->clock_data;
		rt->virtual_time = opts->virtual_time;
		rt->durability = opts->durability == DOBJ_DURABLE_POWER ? DOBJ_DURABLE_POWER
			: DOBJ_DURABLE_PROCESS;
		rt->wall_ms = opts->wall_ms;
		if (opts->idle_timeout_ms != 0)
			rt->idle_ms = opts->idle_timeout_ms;
		if (opts->storage_dir) {
			size_t n = opts->storage_dir_len ? opts->storage_dir_len : strlen(opts->storage_dir);
			if (memchr(opts->storage_dir, '\0', n)) {
				free(rt);
				return dobj_error_set(DOBJ_EARG,
					"the storage directory must not contain a NUL byte");
			}
			/* "" + "/" + unique key would be a folder at the root of
			 * the filesystem. */
			if (n == 0) {
				free(rt);
				return dobj_error_set(DOBJ_EARG, "the storage directory must not be empty "
					"(for storage in memory, give none)");
			}
			rt->storage_dir = dobj__strndup(opts->storage_dir, n);
			if (!rt->storage_dir) {
				free(rt);
				return dobj_error_set(DOBJ_ENOMEM, "out of memory");
			}
		}
	}
	if (rt->virtual_time) {
		rt->virtual_now = rt->now_ms ? rt->now_ms(rt->clock_data) : 0;
		rt->wall_base = dobj__wall_ms(rt) - rt->virtual_now;
	}
	pthread_mutex_init(&rt->post_mu, NULL);
	*out = rt;
	return DOBJ_OK;
}

static void rt_unref(dobj_rt *rt)
{
	size_t i;

	if (--rt->refs > 0)
		return;
	flush_trash(rt);
	for (i = 0; i < rt->nns; i++)
		dobj__ns_free(rt->nss[i]);
	free(rt->nss);
	free(rt->storage_dir);
	free(rt->heap);
	free(rt->trash);
	pthread_mutex_destroy(&rt->post_mu);
	free(rt);
}

/*
 * Closed from inside a step (a handler closing its runtime), the tasks the
 * close failed are held for the step's end (the output gate), which comes
 * after the close: a routed call's answer would find the node's route gone
 * and its caller hear "it may or may not have run", though it never
 * started.  A failure shows no write that was not committed: those go now.
 */
static void deliver_failed_held(dobj_rt *rt)
{
	dobj_task **pp = &rt->held_head, *prev = NULL;

	while (*pp) {
		dobj_task *t = *pp;
		if (t->code < 0) {
			*pp = t->dnext;
			if (rt->held_tail == t)
				rt->held_tail = prev;
			dobj__held_deliver(t, DOBJ_OK, NULL);
		} else {
			prev = t;
			pp = &t->dnext;
		}
	}
}

void dobj_rt_clear(dobj_rt *rt)
{
	size_t i;

	if (rt->closing)
		return;
	rt->closing = 1;
	rt->refs++;
	rt->busy++;
	dobj__cluster_closing(rt);
	/* Reset every live object: their tasks fail and callers hear of it. */
	for (i = 0; i < rt->nns; i++) {
		dobj_ns *ns = rt->nss[i];
		dobj_obj *o;
		/* Aborting removes the object from the map. */
		while ((o = dobj__idmap_any(&ns->objs)))
			abort_obj(o, DOBJ_ECLOSED, "the runtime is closed", NULL);
		dobj__alarms_free(ns);
		dobj__ws_ns_close(ns);
		dobj__storage_ns_close(ns);
	}
	deliver_failed_held(rt);
	dobj__cluster_close(rt);
	/* Broken stubs keep no host value: their calls fail with ECLOSED now,
	 * and their errors could hold host cycles (a traceback's frames) alive
	 * for as long as a stub lives. */
	{
		dobj_obj *o;
		dobj_stub *s;
		for (o = rt->dead_objs; o; o = o->dead_next)
			for (s = o->stubs; s; s = s->onext) {
				trash(rt, s->error);
				s->error = NULL;
			}
	}
	/* Tasks not tied to a live object (FREE tasks, broken stubs' calls). */
	while (rt->tasks)
		finish(rt->tasks, DOBJ_ECLOSED, "the runtime is closed", NULL, NULL);
	while (rt->nheap)
		dobj_timer_cancel(rt, rt->heap[0]);
	{
		dobj_task *t;
		while ((t = ready_pop(rt))) {
			t->queued = 0;
			task_unref(t);
		}
	}
	for (i = 0; i < rt->nns; i++) {
		if (dobj__class_data_is_host(rt->nss[i])) {
			trash(rt, rt->nss[i]->klass.data);
			rt->nss[i]->klass.data = NULL;
		}
	}
	rt->closed = 1;
	rt->busy--;
	if (rt->fd >= 0) {
		/* A closed runtime has nothing to signal: its fd goes now, not
		 * when the last stub lets the memory go. */
		close(rt->fd);
		close(rt->tfd);
		close(rt->efd);
		rt->fd = rt->tfd = rt->efd = -1;
	}
	flush_trash(rt);
	rt_unref(rt);
}

void dobj_rt_free(dobj_rt *rt)
{
	if (!rt)
		return;
	dobj_rt_clear(rt);
	rt_unref(rt);
}

int dobj_rt_closed(const dobj_rt *rt)
{
	return rt->closing;
}

int dobj_rt_visit(dobj_rt *rt, int (*visit)(void *value, void *arg), void *arg)
{
	size_t i, j;
	dobj_task *t;
	int rc;

#define VISIT(v) do { if ((v) && (rc = visit((v), arg)) != 0) return rc; } while (0)
	for (i = 0; i < rt->nns; i++) {
		dobj_ns *ns = rt->nss[i];
		if (dobj__class_data_is_host(ns))
			VISIT(ns->klass.data);
		for (j = 0; j < ns->objs.cap; j++) {
			dobj_obj *o = ns->objs.slots[j].value;
			if (!o)
				continue;
			if (!ns->klass.destroy)
				VISIT(o->instance);
			VISIT(o->ctx);
		}
	}
	for (t = rt->tasks; t; t = t->lnext) {
		if (!t->request_free)
			VISIT(t->request);
		VISIT(t->host);
	}
	for (i = 0; i < rt->ntrash; i++)
		VISIT(rt->trash[i]);
#undef VISIT
	return 0;
}

/* --------------------------------------------------- incarnations and calls */

dobj_obj *dobj__obj_get(dobj_ns *ns, const dobj_id *id, const char *name, size_t name_len)
{
	dobj_obj *obj = dobj__idmap_get(&ns->objs, id);

	if (obj) {
		obj->refs++;
		return obj;
	}
	obj = obj_new(ns, id, name, name_len);
	if (!obj)
		return NULL;
	if (map_insert(ns, obj) < 0) {
		obj_unref(obj);
		return NULL;
	}
	return obj; /* obj_new's reference goes to the caller, the map has its own */
}

dobj_task *dobj__call_new(dobj_obj *obj, dobj_call_kind kind, dobj_done_fn done, void *data)
{
	dobj_ns *ns = obj->ns;
	dobj_task *t = task_new(ns->rt, obj, DOBJ_TASK_CALL);

	if (!t)
		return NULL;
	t->call_kind = kind;
	t->depth = 1;
	t->step = ns->klass.step;
	t->step_data = ns->klass.data;
	t->done_fn = done;
	t->done_data = data;
	enqueue(t);
	return t;
}

/* ----------------------------------------------------------- for stub.c */

/* What stubs (stub.c) need of objects, tasks and host values.  The static
 * versions stay, for the scheduler's own paths. */
void dobj__trash(dobj_rt *rt, void *v) { trash(rt, v); }

void dobj__drop_value(dobj_rt *rt, void *v, void (*free_fn)(void *))
{
	drop_value(rt, v, free_fn);
}

dobj_task *dobj__task_new(dobj_rt *rt, dobj_obj *obj, dobj_task_kind kind)
{
	return task_new(rt, obj, kind);
}

void dobj__task_enqueue(dobj_task *t) { enqueue(t); }

void dobj__task_finish(dobj_task *t, int code, const char *message, void *result, void *error)
{
	finish(t, code, message, result, error);
}

void dobj__task_unref(dobj_task *t) { task_unref(t); }
