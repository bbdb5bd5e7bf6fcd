/**
 * dobj/testkit.h — what test helpers need (the pytest plugin, the busted
 * helpers), decided once in the core so that both languages behave the same.
 *
 * Cloudflare's `cloudflare:test` offers runInDurableObject,
 * runDurableObjectAlarm, listDurableObjectIds, evictDurableObject,
 * abortAllDurableObjects and reset; these are their core halves.  None of
 * them may be called from inside a step (DOBJ_ESTATE): they are for test
 * code, between events.  None of them pumps: a binding pumps afterwards (as
 * after dobj_obj_abort) to run what they woke or queued.
 */
#ifndef DOBJ_TESTKIT_H
#define DOBJ_TESTKIT_H

#ifdef __cplusplus
extern "C" {
#endif

/** Free memory the functions below return (NULL is a no-op). */
DOBJ_API void dobj_free(void *p);

/**
 * The IDs of `ns` that have storage or are live, each once, sorted by their
 * hex form: a live instance, a database (a `<id>.sqlite` file in the
 * namespace's folder, or an in-memory database), a pending alarm.  Files
 * that are not IDs of this namespace are skipped.  *out (free with
 * dobj_free) holds *n IDs; NULL when *n is 0.
 */
DOBJ_API int dobj_ns_list_ids(dobj_ns *ns, dobj_id **out, size_t *n);

/**
 * Evict the live instance of `id` as idle eviction does: the instance and
 * its database handle go, its data and alarm stay; stubs reach a new
 * instance on their next call.  Returns 1 if it was evicted, 0 if it was
 * not live; DOBJ_ESTATE (message names the ID) if an event is in flight or
 * queued on it: a busy object is not idle (abort it instead).
 */
DOBJ_API int dobj_ns_evict(dobj_ns *ns, const dobj_id *id);

/**
 * Evict every live instance of every namespace.  Refuses with DOBJ_ESTATE
 * and evicts nothing if any of them is busy (the message names the first).
 * Returns the number evicted.
 */
DOBJ_API int dobj_rt_evict_all(dobj_rt *rt);

/**
 * Abort every live instance, as ctx.abort() does: its unfinished calls fail
 * with (DOBJ_EABORTED, message, error), its stubs are broken, the next stub
 * reaches a fresh instance; data and alarms stay.  `error` is a host value
 * (ownership passes, as with dobj_obj_abort; may be NULL); `message` NULL
 * means DOBJ_MSG_ABORT_DEFAULT.  Returns the number aborted.
 */
DOBJ_API int dobj_rt_abort_all(dobj_rt *rt, const char *message, void *error);

/** What reset() gives the calls it fails. */
#define DOBJ_MSG_RESET "the runtime was reset (reset()): every object and its storage was dropped"

/**
 * Drop every object and its storage and alarms: live instances are aborted
 * with DOBJ_MSG_RESET, every database is closed and deleted (the files of
 * the namespaces' folders; in-memory data), every alarm is cancelled and
 * removed from the schedule.  Namespaces stay bound; the next call starts
 * from empty storage.  On a cluster node only the local files go (the
 * cache; the cache markers and restores under way are waited for): the
 * data stays in PostgreSQL and the next call restores it (docs/cluster.md).
 * Returns DOBJ_OK.
 */
DOBJ_API int dobj_rt_reset(dobj_rt *rt);

/**
 * Run the alarm of `id` now, whatever its time, through the alarm path
 * (the object's own record decides, a failure is retried on the usual
 * schedule, success removes it).  Returns 1 and, if `out` is not NULL, a
 * new reference to the ALARM call in *out (wait for it to finish); 0 if no
 * alarm is scheduled (or one is running already).
 */
DOBJ_API int dobj_ns_run_alarm(dobj_ns *ns, const dobj_id *id, dobj_task **out);

/**
 * Run a host function inside the object's input gate: a CALL of kind
 * DOBJ_CALL_HOST through `stub`, delivered in order with the object's other
 * events (constructing the instance first), so it is serialized with them.
 * The class's step receives it with dobj_task_request = `fn` (a host value;
 * ownership passes) and calls it with the instance and the ctx, then
 * finishes the task as for any call.  Native classes refuse it (DOBJ_EARG).
 * Otherwise as dobj_stub_call.
 */
DOBJ_API int dobj_stub_run(dobj_task **out, dobj_stub *stub, void *fn,
	dobj_done_fn done, void *done_data);

/** What is still open in a runtime (dobj_rt_open). */
typedef enum dobj_open_kind {
	DOBJ_OPEN_TASK = 1,  /**< an unfinished task */
	DOBJ_OPEN_ALARM = 2  /**< a pending (scheduled or retrying) alarm */
} dobj_open_kind;

typedef struct dobj_open_item {
	dobj_open_kind what;
	dobj_task_kind task_kind;  /**< tasks */
	dobj_call_kind call_kind;  /**< CALL tasks (0 otherwise) */
	const char *method;        /**< RPC calls (NULL otherwise) */
	const char *binding;       /**< NULL for tasks of no object */
	const dobj_id *id;         /**< NULL for tasks of no object */
	double when_ms;            /**< alarms: scheduled time, ms since the epoch */
	int retry;                 /**< alarms: retries so far */
} dobj_open_item;

/**
 * Visit what is still open: unfinished tasks (oldest first), then pending
 * alarms (by namespace, then ID).  Pointers in the item are borrowed for
 * the call.  Stops at the first non-zero result of `fn` and returns it.
 */
DOBJ_API int dobj_rt_open(dobj_rt *rt, int (*fn)(const dobj_open_item *item, void *arg), void *arg);

/**
 * The leak report a test shows: NULL in *out when nothing is open, else
 * lines such as "open at close: 1 task, 1 alarm", "  call fetch on COUNTER
 * <hex id>", "  alarm on COUNTER <hex id> at +5000 ms (retry 0)" (times
 * relative to the runtime's wall clock).  Free with dobj_free.
 */
DOBJ_API int dobj_rt_leaks(dobj_rt *rt, char **out);

#ifdef __cplusplus
}
#endif
#endif
