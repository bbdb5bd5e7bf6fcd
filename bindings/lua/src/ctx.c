/* The ctx given to an object's constructor (dobj.Ctx). */
#include "dobj_lua.h"

/* --------------------------------------------------------------------- ctx */

static ctx_ud *check_ctx(lua_State *L)
{
	ctx_ud *x = check_ud(L, 1, MT_CTX);

	/* A previous instance's ctx (x->obj NULL or dead): the core's rule and message. */
	if (dobj_obj_check(x->obj) < 0)
		raise_plain(L, dobj_error_last());
	return x;
}


static int l_ctx_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	check_ud(L, 1, MT_CTX);
	if (k && strcmp(k, "id") == 0) {
		lua_getiuservalue(L, 1, 1);
		return 1;
	}
	if (k && strcmp(k, "storage") == 0) {
		push_ctx_storage(L, 1);
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_CTX));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

/* Push the results of the block task c waited for (raise its error). */
int block_results(lua_State *L, task_coro *c)
{
	dobj_task *t = c->wait;
	void *res = NULL, *err = NULL;
	const char *msg = NULL;
	int rc, n;

	c->wait = NULL;
	rc = dobj_task_result(t, &res, &msg, &err);
	if (rc != DOBJ_OK) {
		if (err)
			push_slot(c->r, L, err);
		else
			push_core_error(L, msg, NULL, 0);
		dobj_task_unref(t);
		return lua_error(L);
	}
	push_slot(c->r, L, res);
	dobj_task_unref(t);
	lua_getfield(L, -1, "n");
	n = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	luaL_checkstack(L, n, "too many results");
	{
		int i, tb = lua_gettop(L);
		for (i = 1; i <= n; i++)
			lua_rawgeti(L, tb, i);
		lua_remove(L, tb);
	}
	return n;
}

static int block_concurrency_while_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	return block_results(L, (task_coro *)ctx);
}

static int l_ctx_block_concurrency_while(lua_State *L)
{
	ctx_ud *x = check_ctx(L);
	runtime_ud *r = x->r;
	task_coro *c = task_here(L, r);
	int nargs = lua_gettop(L) - 2;
	dobj_task *t;

	luaL_checktype(L, 2, LUA_TFUNCTION);
	if (r->constructing == x->obj) {
		/* From the constructor: the gate closes now; the first event waits. */
		spawn_fn(L, r, x->obj, DOBJ_TASK_BLOCK, 2, nargs, NULL, NULL, NULL);
		return 0;
	}
	if (!c || dobj_task_obj(c->task) != x->obj)
		return luaL_error(L, "ctx:block_concurrency_while() must be called from the object's "
			"constructor or from one of its handlers");
	if (!lua_isyieldable(L))
		return luaL_error(L, "ctx:block_concurrency_while() cannot suspend here");
	spawn_fn(L, r, x->obj, DOBJ_TASK_BLOCK, 2, nargs, NULL, NULL, &t);
	wait_for_task(L, c, t);
	return lua_yieldk(L, 0, (lua_KContext)c, block_concurrency_while_k);
}

static int l_ctx_wait_until(lua_State *L)
{
	ctx_ud *x = check_ctx(L);

	spawn_fn(L, x->r, x->obj, DOBJ_TASK_BACKGROUND, 2, lua_gettop(L) - 2, NULL, NULL, NULL);
	return 0;
}

static int l_ctx_abort(lua_State *L)
{
	ctx_ud *x = check_ctx(L); /* a reset object's ctx: the core's error, as in Python */
	runtime_ud *r = x->r;
	dobj_obj *obj = x->obj;
	task_coro *c = task_here(L, r);
	int own;
	void *err;

	own = c && dobj_task_obj(c->task) == obj;
	lua_settop(L, 2);
	if (lua_isnil(L, 2)) {
		lua_pushliteral(L, DOBJ_MSG_ABORT_DEFAULT);
		lua_replace(L, 2);
	}
	/* The error every pending and later call on this incarnation sees. */
	lua_pushvalue(L, 2);
	err = convert_error(r, L, obj, NULL, 1);
	dobj_obj_abort(obj, DOBJ_EABORTED, dobj_error_last(), err);
	if (own && lua_isyieldable(L)) {
		/* The handler ends here, like workerd's: nothing after abort runs. */
		c->state = CORO_KILLED;
		return lua_yield(L, 0);
	}
	{
		/* The object's own code where its coroutine cannot be ended here
		 * (its constructor, a nested coroutine, a table.sort comparator):
		 * raise the reason, so that what follows abort does not run
		 * there either.  Its failure changes nothing: the object is reset
		 * and its callers have the reason already. */
		dobj_task *cur = r->rt ? dobj_rt_current(r->rt) : NULL;
		if (cur && dobj_task_obj(cur) == obj) {
			lua_settop(L, 2);
			return lua_error(L);
		}
	}
	return 0;
}

static int l_ctx_tostring(lua_State *L)
{
	ctx_ud *x = check_ud(L, 1, MT_CTX);

	lua_pushstring(L, x->obj ? "dobj.Ctx" : "dobj.Ctx(reset)");
	return 1;
}

static const luaL_Reg ctx_meta[] = {
	{ "__index", l_ctx_index }, { "__tostring", l_ctx_tostring }, { NULL, NULL }
};
static const luaL_Reg ctx_methods[] = {
	{ "block_concurrency_while", l_ctx_block_concurrency_while },
	{ "wait_until", l_ctx_wait_until }, { "abort", l_ctx_abort }, { NULL, NULL }
};

void ctx_open(lua_State *L, int mi)
{
	register_type(L, mi, MT_CTX, ctx_meta, ctx_methods);
}
