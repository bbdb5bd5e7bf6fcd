/*
 * Background work without an object (dobj/background.h): a Worker entry's
 * ctx.wait_until.  A BACKGROUND task whose object is NULL; the scheduler
 * (rt.c) already sends a background task's own failure to the error hook
 * and never to a caller, so the rule for objects and for the entry is one.
 */
#include <math.h>

#include "internal.h"

int dobj_rt_background(dobj_task **out, dobj_rt *rt, dobj_step_fn step, void *step_data,
	void *host)
{
	return dobj_task_spawn(out, rt, NULL, DOBJ_TASK_BACKGROUND, step, step_data, host,
		NULL, NULL);
}

size_t dobj_rt_background_count(const dobj_rt *rt)
{
	const dobj_task *t;
	size_t n = 0;

	for (t = rt->tasks; t; t = t->lnext)
		n += t->kind == DOBJ_TASK_BACKGROUND && !t->done;
	return n;
}

typedef struct drain_state {
	dobj_rt *rt;
	dobj_timer *limit; /* NULL once it fired or was cancelled (runtime closed) */
	int expired;
} drain_state;

static void drain_expired(void *data, int fired)
{
	drain_state *d = data;

	d->limit = NULL;
	if (fired)
		d->expired = 1;
}

static int drain_until(void *arg)
{
	drain_state *d = arg;
	return d->expired || dobj_rt_background_count(d->rt) == 0;
}

int dobj_rt_background_drain(dobj_rt *rt, double timeout_ms)
{
	drain_state d = { rt, NULL, 0 };
	int rc;

	CHECK_THREAD(rt);
	if (isnan(timeout_ms) || timeout_ms < 0)
		return dobj_error_set(DOBJ_EARG, "a drain timeout must be a number >= 0");
	if (rt->pumping)
		return dobj_error_set(DOBJ_ESTATE, "the runtime cannot be run from inside a handler");
	/* A weak timer: the limit alone does not keep the runtime running. */
	if (isfinite(timeout_ms) && (rc = dobj__timer(rt, timeout_ms, drain_expired, &d, 1,
			&d.limit)) < 0)
		return rc;
	rc = dobj_rt_run(rt, drain_until, &d);
	if (d.limit)
		dobj_timer_cancel(rt, d.limit);
	if (rc < 0 && rc != DOBJ_PENDING)
		return rc;
	return (int)dobj_rt_background_count(rt);
}
