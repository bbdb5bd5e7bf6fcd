/* dobj.sleep: a timer inside a task, the runtime driven from the main chunk. */
#include "dobj_lua.h"

/* ------------------------------------------------------------------ sleep */

static void sleep_fired(void *data, int fired)
{
	task_coro *c = data;

	c->timer = NULL;
	if (fired && c->task)
		dobj_task_wake(c->task);
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)L;
	(void)status;
	(void)ctx;
	return 0;
}

static void flag_fired(void *data, int fired)
{
	(void)fired;
	*(int *)data = 1;
}

static int until_flag(void *arg)
{
	return *(int *)arg;
}

int l_sleep(lua_State *L)
{
	double s = luaL_checknumber(L, 1), ms = s * 1e3;
	task_coro *c = task_here(L, NULL);

	/* The core decides what a delay may be (negative: none; not finite:
	 * refused); the binding forwards it. */
	if (c) {
		if (!lua_isyieldable(L))
			return luaL_error(L, "dobj.sleep() cannot suspend here");
		if (dobj_rt_timer(c->r->rt, ms, sleep_fired, c, &c->timer) < 0)
			return raise_core_error(L, dobj_error_last());
		c->state = CORO_SLEEP;
		return lua_yieldk(L, 0, (lua_KContext)c, sleep_k);
	}
	if (running_coro)
		return luaL_error(L, "dobj.sleep() cannot suspend here: call it from a handler or a "
			"task, or the main chunk (not from a constructor or a nested coroutine)");
	/* The main chunk: let the latest runtime work meanwhile. */
	lua_getiuservalue(L, MODIDX, UV_DEFAULT_RT);
	lua_rawgeti(L, -1, 1);
	{
		runtime_ud *r = test_ud(L, -1, MT_RUNTIME);
		if (r && r->rt && !dobj_rt_closed(r->rt) && !dobj_rt_pumping(r->rt)) {
			int fired = 0;
			lua_State *saved = r->from;
			if (dobj_rt_timer(r->rt, ms, flag_fired, &fired, NULL) < 0)
				return raise_core_error(L, dobj_error_last());
			r->from = L;
			dobj_rt_run(r->rt, until_flag, &fired);
			r->from = saved;
			raise_task_error(L, r);
			return 0;
		}
	}
	/* No runtime to drive: a plain wait (the same rule on the delay). */
	if (dobj_delay_check(ms) < 0)
		return raise_core_error(L, dobj_error_last());
	if (ms > 0) {
		struct timespec ts;
		if (s > 1e9)
			s = 1e9; /* ~31 years: keeps the conversion to time_t defined */
		ts.tv_sec = (time_t)s;
		ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	return 0;
}

