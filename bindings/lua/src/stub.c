/* Stubs (dobj.Stub): stub:fetch, RPC method lookup, waiting for a call. */
#include "dobj_lua.h"

/* ------------------------------------------------------------------- stubs */

static stub_ud *check_stub(lua_State *L, int idx)
{
	stub_ud *s = check_ud(L, idx, MT_STUB);

	if (!s->stub)
		luaL_error(L, "the stub is closed");
	return s;
}

/* Push the outcome of a finished call, or raise its error.  Drops `t`. */
static int call_outcome(lua_State *L, runtime_ud *r, dobj_task *t, const dobj_id *id)
{
	void *res = NULL, *err = NULL;
	const char *msg = NULL;
	int rc = dobj_task_result(t, &res, &msg, &err);

	if (rc == DOBJ_OK) {
		if (dobj_task_result_is_core(t))
			return core_outcome(L, r, t);
		push_slot(r, L, res);
		dobj_task_unref(t);
		return 1;
	}
	if (rc == DOBJ_PENDING)
		push_core_error(L, dobj_error_last(), id, 0); /* dobj_rt_run says why */
	else if (err)
		push_slot(r, L, err);
	else
		push_core_error(L, msg, id, dobj_task_remote(t)); /* the core's rule */
	if (dobj_task_retryable(t) && lua_type(L, -1) == LUA_TTABLE) {
		/* Cluster mode: the call may or may not have run (dobj/route.h). */
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "retryable");
	}
	dobj_task_unref(t);
	return lua_error(L);
}

/* The ID of the stub at idx, from its ID userdata (kept by the stub): the
 * called object may have closed the stub (stub:close()) while it waited. */
static const dobj_id *stub_id_at(lua_State *L, int idx)
{
	id_ud *d;

	lua_getiuservalue(L, idx, 2);
	d = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return &d->id;
}

static int fetch_k(lua_State *L, int status, lua_KContext ctx)
{
	task_coro *c = (task_coro *)ctx;
	dobj_task *t = c->wait;

	(void)status;
	c->wait = NULL;
	return call_outcome(L, c->r, t, stub_id_at(L, 1));
}

/* Can a stub call made here wait for its answer?  Raises if not; `what` is
 * "stub:fetch()" or "stub:NAME()". */
void check_can_wait(lua_State *L, runtime_ud *r, task_coro *c, const char *what)
{
	char msg[300];

	if (!c && (dobj_rt_pumping(r->rt) || (running_coro && running_coro->r == r))) {
		snprintf(msg, sizeof(msg), "%.80s cannot wait here: call it from a handler, an "
			"rt:spawn task, a ctx:wait_until or ctx:block_concurrency_while function, or the "
			"main chunk (not from a constructor or a nested coroutine)", what);
		raise_core_error(L, msg);
	}
	if (c && !lua_isyieldable(L)) {
		snprintf(msg, sizeof(msg), "%.80s cannot suspend here (attempt to yield across a "
			"C-call boundary)", what);
		raise_core_error(L, msg);
	}
}

/* Wait for a call just sent: a coroutine of the runtime suspends (fetch_k
 * finishes it), the main chunk drives the runtime until the answer is in. */
int await_call(lua_State *L, stub_ud *s, task_coro *c, dobj_task *t)
{
	if (c) {
		wait_for_task(L, c, t);
		return lua_yieldk(L, 0, (lua_KContext)c, fetch_k);
	}
	drive_until_done(L, s->r, t);
	return call_outcome(L, s->r, t, stub_id_at(L, 1));
}

static int l_stub_fetch(lua_State *L)
{
	stub_ud *s = check_stub(L, 1);
	runtime_ud *r = s->r;
	task_coro *c = task_here(L, r);
	dobj_task *t;
	size_t len;
	const char *url;
	void *req;
	int ri, rc;

	check_can_wait(L, r, c, "stub:fetch()");
	ri = push_request(L, 2, lua_gettop(L) >= 3 ? 3 : 0);
	lua_getfield(L, ri, "url");
	url = lua_tolstring(L, -1, &len);
	if (!url)
		return raise_core_error(L, "the request has no URL");
	if (dobj_ns_is_native(dobj_stub_ns(s->stub))) {
		/* A native class takes a dobj_msg (copied: nothing is shared). */
		dobj_msg *m = msg_from_request(L, ri);
		if (!m)
			return raise_core_error(L, "out of memory");
		rc = dobj_stub_call_ex(&t, s->stub, DOBJ_CALL_FETCH, NULL, url, len, m, msg_free_cb,
			NULL, NULL);
	} else {
		req = anchor(r, L, ri, SLOT_VALUE);
		rc = dobj_stub_call(&t, s->stub, DOBJ_CALL_FETCH, NULL, url, len, req,
			NULL, NULL);
	}
	if (rc < 0)
		return raise_core_error(L, dobj_error_last());
	return await_call(L, s, c, t);
}

static int l_stub_index(lua_State *L)
{
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;

	check_ud(L, 1, MT_STUB);
	if (k && k[0] == 'i' && strcmp(k, "id") == 0) {
		lua_getiuservalue(L, 1, 2);
		return 1;
	}
	if (k && k[0] == 'n' && strcmp(k, "name") == 0) {
		lua_getiuservalue(L, 1, 2);
		lua_getiuservalue(L, -1, 1);
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_STUB));
	lua_pushvalue(L, 2);
	if (lua_rawget(L, -2) != LUA_TNIL || lua_type(L, 2) != LUA_TSTRING)
		return 1;
	/* Any other name is an RPC method: a caller closure, cached per name. */
	lua_getiuservalue(L, MODIDX, UV_RPC);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, -2) != LUA_TNIL)
		return 1;
	lua_pop(L, 1);
	lua_pushvalue(L, MODIDX);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, l_stub_rpc, 2);
	lua_pushvalue(L, 2);
	lua_pushvalue(L, -2);
	lua_rawset(L, -4);
	return 1;
}

static int l_stub_gc(lua_State *L)
{
	stub_ud *s = check_ud(L, 1, MT_STUB);

	if (s->stub) {
		dobj_stub *st = s->stub;
		s->stub = NULL;
		dobj_stub_free(st);
	}
	return 0;
}

static int l_stub_tostring(lua_State *L)
{
	stub_ud *s = check_ud(L, 1, MT_STUB);
	char hex[DOBJ_ID_HEX_LEN];

	if (!s->stub) {
		lua_pushliteral(L, "dobj.Stub(closed)");
		return 1;
	}
	dobj_id_to_hex(dobj_stub_id(s->stub), hex);
	lua_pushstring(L, "dobj.Stub(");
	lua_pushstring(L, dobj_ns_binding(dobj_stub_ns(s->stub)));
	lua_pushliteral(L, " ");
	lua_pushlstring(L, hex, sizeof(hex));
	lua_pushliteral(L, ")");
	lua_concat(L, 5);
	return 1;
}

static const luaL_Reg stub_meta[] = {
	{ "__index", l_stub_index }, { "__gc", l_stub_gc }, { "__close", l_stub_gc },
	{ "__tostring", l_stub_tostring }, { NULL, NULL }
};
static const luaL_Reg stub_methods[] = { { "fetch", l_stub_fetch }, { NULL, NULL } };

void stub_open(lua_State *L, int mi)
{
	register_type(L, mi, MT_STUB, stub_meta, stub_methods);
}
