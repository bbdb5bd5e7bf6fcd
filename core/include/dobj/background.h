/**
 * dobj/background.h — background work of the runtime itself, outside any
 * object: a Worker entry's `ctx.wait_until(promise)`.
 *
 * workerd keeps such a promise running after the response went out; when it
 * rejects, nobody awaits it: the rejection is logged ("Uncaught (in
 * promise)"), never thrown at anyone.  The core decides the same once for
 * every binding: a background task that fails by its own error goes to the
 * runtime's error hook (dobj_rt_set_error_hook) with dobj_task_obj(task) ==
 * NULL, once; dobj_rt_run does not raise it and no caller sees it.  A task
 * failed because the runtime closed is not reported.
 *
 * On shutdown (SIGTERM in a dev server) a host lets the background work end
 * first: dobj_rt_background_drain runs the runtime until none is left or a
 * time limit passes; a host that drives the runtime from its own loop waits
 * for dobj_rt_background_count to reach 0 the same way.
 */
#ifndef DOBJ_BACKGROUND_H
#define DOBJ_BACKGROUND_H

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Start background work without an object: a task running `step` (as any
 * task's step: DOBJ_OK once finished with dobj_task_return / dobj_task_raise,
 * DOBJ_PENDING when suspended).  `host` is its host state (a coroutine),
 * owned by the core from now on, released when the task ends (also when
 * this fails).  It belongs to no object: no gate holds it and resetting an
 * object does not stop it.  *out (may be NULL) gets a new reference.
 * DOBJ_ECLOSED on a closed runtime, DOBJ_ETHREAD on another thread.
 */
DOBJ_API int dobj_rt_background(dobj_task **out, dobj_rt *rt, dobj_step_fn step,
	void *step_data, void *host);

/** Number of unfinished background tasks: those of dobj_rt_background and
 *  the objects' own (DOBJ_TASK_BACKGROUND, ctx.wait_until). */
DOBJ_API size_t dobj_rt_background_count(const dobj_rt *rt);

/**
 * Run the runtime (as dobj_rt_run does, calls and timers included) until no
 * background task is left or `timeout_ms` of the runtime's clock passed
 * (INFINITY: no limit; virtual time jumps there).  Returns the number of
 * background tasks still unfinished (0: all done; they keep their state and
 * go on if the runtime runs again), or a negative code (DOBJ_EARG for a
 * negative or NaN timeout, DOBJ_ESTATE from inside a handler, DOBJ_ETHREAD).
 * Work that waits for something nothing will finish stops the wait early,
 * as dobj_rt_run does, with the count of what is left.
 */
DOBJ_API int dobj_rt_background_drain(dobj_rt *rt, double timeout_ms);

#ifdef __cplusplus
}
#endif
#endif
