/* The task driver: a core step resumes the task's coroutine; the handler
 * trampolines (fetch, alarm) and spawning functions as tasks. */
#include "dobj_lua.h"

/* ------------------------------------------------------------------- tasks */

/* The coroutine whose step is running (innermost), on this thread. */
_Thread_local task_coro *running_coro;

static int step_co(dobj_task *t, void *data);

/* Remember the first unhandled error of a spawned task (rt:spawn). */
static void keep_task_error(runtime_ud *r, void *slot)
{
	if (slot && !r->error_slot && IS_SLOT(slot)) {
		r->slot_refs[HOST_TO_SLOT(slot)]++;
		r->error_slot = HOST_TO_SLOT(slot);
	}
}

/* The `nres` values on top of L as one host value, a table { ..., n = nres }
 * (a block function's or a run_in_durable_object function's results). */
static void *pack_results(runtime_ud *r, lua_State *L, int nres)
{
	int i, base = lua_gettop(L) - nres;

	lua_createtable(L, nres, 1);
	for (i = 1; i <= nres; i++) {
		lua_pushvalue(L, base + i);
		lua_rawseti(L, -2, i);
	}
	lua_pushinteger(L, nres);
	lua_setfield(L, -2, "n");
	return anchor(r, L, -1, SLOT_VALUE);
}

/* The coroutine finished: hand its results to the core. */
static int finish_ok(runtime_ud *r, dobj_task *t, task_coro *c, int nres)
{
	lua_State *L = c->co;

	switch (dobj_task_kind_of(t)) {
	case DOBJ_TASK_CALL:
		/* The trampoline checked that the first result is a response
		 * (RPC: made it a dobj_val); an alarm handler's results are dropped;
		 * a host function's (dobj.test's run_in_durable_object) are all kept,
		 * as they are: caller and object share one Lua state. */
		if (dobj_task_call_kind(t) == DOBJ_CALL_RPC)
			dobj_task_return_value(t, lua_touserdata(L, -nres), val_free_cb);
		else if (dobj_task_call_kind(t) == DOBJ_CALL_HOST)
			dobj_task_return(t, pack_results(r, L, nres));
		else
			dobj_task_return(t, dobj_task_call_kind(t) == DOBJ_CALL_ALARM ? NULL
				: anchor(r, L, -nres, SLOT_VALUE));
		break;
	case DOBJ_TASK_BLOCK:
		dobj_task_return(t, pack_results(r, L, nres));
		break;
	default:
		dobj_task_return(t, NULL);
		break;
	}
	lua_settop(L, 0);
	return DOBJ_OK;
}

/* Resume the task's coroutine with `nargs` values on its stack. */
static int run_co(runtime_ud *r, dobj_task *t, task_coro *c, int nargs)
{
	task_coro *saved = running_coro;
	int st, nres = 0;

	c->state = CORO_RUN;
	running_coro = c;
	st = lua_resume(c->co, r->from, nargs, &nres);
	running_coro = saved;
	if (st == LUA_YIELD) {
		lua_pop(c->co, nres);
		switch (c->state) {
		case CORO_RUN:
			/* A bare coroutine.yield(): let other work run, then continue. */
			dobj_task_wake(t);
			return DOBJ_PENDING;
		case CORO_KILLED:
			/* ctx:abort() from inside: the task has already failed. */
			return DOBJ_OK;
		default:
			return DOBJ_PENDING;
		}
	}
	if (st == LUA_OK)
		return finish_ok(r, t, c, nres);
	{
		dobj_task_kind kind = dobj_task_kind_of(t);
		dobj_obj *obj = dobj_task_obj(t);
		void *err;

		if (kind == DOBJ_TASK_FREE) {
			/* A spawned task's error is the script's own: keep it as is. */
			const char *m = lua_tostring(c->co, -1);
			dobj_error_set(DOBJ_EUSER, "%s", m ? m : "error in a spawned task");
			err = anchor(r, c->co, -1, SLOT_VALUE);
			lua_pop(c->co, 1);
		} else {
			err = convert_error(r, c->co, obj, c->co, obj != NULL);
		}
		/* A spawned task's error is raised by rt:run(); a wait_until
		 * function's goes to the core's error hook (dobj.on_error). */
		if (kind == DOBJ_TASK_FREE)
			keep_task_error(r, err);
		dobj_task_raise(t, DOBJ_EUSER, dobj_error_last(), err);
	}
	return DOBJ_OK;
}

/*
 * The body of a fetch handler's coroutine: (instance, request, class) ->
 * response.  Running the lookup inside the coroutine keeps __index
 * metamethods and the result check protected.
 */
static int fetch_tramp_k(lua_State *L, int status, lua_KContext ctx)
{
	bound_class *k = (bound_class *)ctx;
	int n = lua_gettop(L) - 3;

	(void)status;
	if (n < 1 || !is_table_of(L, 4, k->r->mod->mt[MT_RESPONSE])) {
		lua_pushfstring(L, "%s:fetch() must return a dobj.response, got %s",
			dobj_ns_class_name(dobj_obj_ns(dobj_task_obj(running_coro->task))),
			n < 1 ? "no value" : luaL_typename(L, 4));
		return lua_error(L);
	}
	lua_settop(L, 4);
	return 1;
}

/* Push the handler `name` of the instance at 1 (looked up on the instance,
 * then on the class k); 0 if there is none. */
static int push_handler(lua_State *L, bound_class *k, const char *name)
{
	lua_getfield(L, 1, name);
	if (lua_type(L, -1) == LUA_TFUNCTION)
		return 1;
	lua_pop(L, 1);
	push_slot(k->r, L, SLOT_TO_HOST(k->slot));
	lua_getfield(L, -1, name);
	lua_remove(L, -2);
	return lua_type(L, -1) == LUA_TFUNCTION;
}

static int fetch_tramp(lua_State *L)
{
	bound_class *k = lua_touserdata(L, 3);

	if (!push_handler(L, k, "fetch"))
		return raise_plain(L, DOBJ_MSG_NO_FETCH);
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_callk(L, 2, LUA_MULTRET, (lua_KContext)k, fetch_tramp_k);
	return fetch_tramp_k(L, LUA_OK, (lua_KContext)k);
}

/* A time in ms as Lua shows it: an integer when it is whole. */
void push_ms(lua_State *L, double ms)
{
	/* The range first: converting NaN or a huge double to an integer is UB. */
	if (ms >= -9007199254740992.0 && ms <= 9007199254740992.0 && ms == (double)(lua_Integer)ms)
		lua_pushinteger(L, (lua_Integer)ms);
	else
		lua_pushnumber(L, ms);
}

/* The body of an alarm handler's coroutine: (instance, info, class). */
static int alarm_tramp_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)L;
	(void)status;
	(void)ctx;
	return 0;
}

static int alarm_tramp(lua_State *L)
{
	bound_class *k = lua_touserdata(L, 3);

	if (!push_handler(L, k, "alarm"))
		return raise_plain(L, DOBJ_MSG_NO_ALARM);
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_callk(L, 2, 0, 0, alarm_tramp_k);
	return 0;
}

/* The body of a host call's coroutine (dobj.test's run_in_durable_object):
 * (fn, instance, ctx) -> fn(instance, ctx)'s results. */
static int host_tramp_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	(void)ctx;
	return lua_gettop(L);
}

static int host_tramp(lua_State *L)
{
	lua_callk(L, 2, LUA_MULTRET, 0, host_tramp_k);
	return lua_gettop(L);
}

/* Step of a CALL task: start the handler on the first step, resume later.
 * The handler may close the runtime (rt:close()), which releases the class
 * record k: the step holds its own reference so that k, which the handler's
 * trampoline reads, lives until the step returns. */
static int step_call_held(dobj_task *t, bound_class *k);

int step_call(dobj_task *t, void *data)
{
	bound_class *k = data;
	runtime_ud *r = k->r;
	int rc;

	host_retain(r, k);
	rc = step_call_held(t, k);
	host_release(r, k);
	return rc;
}

static int step_call_held(dobj_task *t, bound_class *k)
{
	runtime_ud *r = k->r;
	task_coro *c = dobj_task_host(t);
	lua_State *L;

	if (c)
		return run_co(r, t, c, 0);
	c = coro_get(r);
	if (!c)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	dobj_task_set_host(t, c);
	dobj_task_ref(t);
	c->task = t;
	L = c->co;
	if (dobj_task_call_kind(t) == DOBJ_CALL_ALARM) {
		double when = 0;
		int retry = 0;
		dobj_task_alarm_info(t, &when, &retry);
		lua_pushcfunction(L, alarm_tramp);
		push_slot(r, L, dobj_obj_instance(dobj_task_obj(t)));
		lua_createtable(L, 0, 3);
		push_ms(L, when);
		lua_setfield(L, -2, "scheduled_time");
		lua_pushinteger(L, retry);
		lua_setfield(L, -2, "retry_count");
		lua_pushboolean(L, retry > 0);
		lua_setfield(L, -2, "is_retry");
		lua_pushlightuserdata(L, k);
		return run_co(r, t, c, 3);
	}
	if (dobj_task_call_kind(t) == DOBJ_CALL_HOST) {
		dobj_obj *obj = dobj_task_obj(t);
		lua_pushcfunction(L, host_tramp);
		push_slot(r, L, dobj_task_request(t));
		push_slot(r, L, dobj_obj_instance(obj));
		push_slot(r, L, dobj_obj_ctx(obj));
		return run_co(r, t, c, 3);
	}
	if (dobj_task_call_kind(t) == DOBJ_CALL_RPC) {
		lua_pushcfunction(L, rpc_tramp);
		push_slot(r, L, dobj_obj_instance(dobj_task_obj(t)));
		lua_pushlightuserdata(L, k);
		return run_co(r, t, c, 2);
	}
	if (dobj_task_call_kind(t) >= DOBJ_CALL_WS_MESSAGE)
		return run_co(r, t, c, websocket_push_event(L, r, t, k));
	lua_pushcfunction(L, fetch_tramp);
	push_slot(r, L, dobj_obj_instance(dobj_task_obj(t)));
	push_slot(r, L, dobj_task_request(t));
	lua_pushlightuserdata(L, k);
	return run_co(r, t, c, 3);
}

/* Step of a task started by the binding (spawn, block, wait_until). */
static int step_co(dobj_task *t, void *data)
{
	runtime_ud *r = data;
	task_coro *c = dobj_task_host(t);
	int nargs = c->state == CORO_START ? lua_gettop(c->co) - 1 : 0;

	return run_co(r, t, c, nargs);
}

/* The coroutine c suspends until t finishes: the core wakes it then (and
 * knows who waits on whom: a block waiting on its own object's call fails
 * with a deadlock error instead of hanging).  c takes the reference to t. */
void wait_for_task(lua_State *L, task_coro *c, dobj_task *t)
{
	c->wait = t;
	c->state = CORO_WAIT;
	if (dobj_task_wait(c->task, t) < 0)
		raise_core_error(L, dobj_error_last());
}

static int until_done(void *arg)
{
	return dobj_task_done((dobj_task *)arg);
}

void drive_until_done(lua_State *L, runtime_ud *r, dobj_task *t)
{
	lua_State *saved = r->from;

	r->from = L;
	dobj_rt_pump(r->rt);
	if (!dobj_task_done(t))
		dobj_rt_run(r->rt, until_done, t);
	r->from = saved;
}

/*
 * Start a coroutine task running the function at `fidx` with the `nargs`
 * values after it.  On success returns the task_coro (its task is c->task).
 * Raises on failure (after the core has returned).
 */
task_coro *spawn_fn(lua_State *L, runtime_ud *r, dobj_obj *obj, dobj_task_kind kind, int fidx,
	int nargs, dobj_done_fn done, void *done_data, dobj_task **out)
{
	task_coro *c;
	dobj_task *t;
	int rc, i;

	luaL_checktype(L, fidx, LUA_TFUNCTION);
	c = coro_get(r);
	if (!c)
		luaL_error(L, "out of memory");
	luaL_checkstack(c->co, nargs + 2, "too many arguments");
	for (i = 0; i <= nargs; i++)
		lua_pushvalue(L, fidx + i);
	lua_xmove(L, c->co, nargs + 1);
	c->state = CORO_START;
	if (kind == DOBJ_TASK_BACKGROUND && !obj) /* the entry's ctx:wait_until */
		rc = dobj_rt_background(&t, r->rt, step_co, r, c);
	else
		rc = dobj_task_spawn(&t, r->rt, obj, kind, step_co, r, c, done, done_data);
	if (rc < 0) {
		/* The core released c. */
		raise_core_error(L, dobj_error_last());
		return NULL;
	}
	c->task = t; /* the task_coro keeps the spawn's reference */
	if (out) {
		dobj_task_ref(t);
		*out = t;
	}
	return c;
}

/* In a task of runtime r, on its own coroutine? */
task_coro *task_here(lua_State *L, runtime_ud *r)
{
	task_coro *c = running_coro;

	return (c && c->co == L && c->task && c->state == CORO_RUN && (!r || c->r == r)) ? c : NULL;
}

