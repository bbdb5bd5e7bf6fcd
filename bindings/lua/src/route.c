/* The codec that carries Lua values to another node of a cluster
 * (dobj/route.h): fetch requests and responses as dobj_msg, errors as
 * {name, message}.  RPC values are core values already.  Each conversion
 * runs under lua_pcall on one of the runtime's pooled coroutines: a
 * metamethod of the user's table may raise, and a longjmp must not cross
 * the core. */
#include "dobj_lua.h"

typedef struct conv {
	runtime_ud *r;
	void *value;            /* a slot (to_msg, error_to_val) */
	const dobj_msg *msg;    /* request_from_msg */
	const dobj_val *desc;   /* error_from_val */
	int is_request;
	dobj_msg *out_msg;
	dobj_val *out_val;
	void *out_slot;
} conv;

static int c_to_msg(lua_State *L)
{
	conv *c = lua_touserdata(L, 1);
	int idx;

	push_slot(c->r, L, c->value);
	idx = lua_gettop(L);
	if (lua_type(L, idx) != LUA_TTABLE)
		return luaL_error(L, "fetch() must return a dobj.response");
	if (c->is_request) {
		c->out_msg = msg_from_request(L, idx);
		if (!c->out_msg)
			return luaL_error(L, "%s", dobj_error_last());
		return 0;
	}
	{
		lua_Integer status;
		const char *body;
		size_t blen = 0;
		int isnum;
		dobj_ws *client = NULL;
		lua_getfield(L, idx, "web_socket"); /* a 101's client end crosses as a link */
		if (!lua_isnil(L, -1) && !(client = websocket_at_rt(L, c->r, -1)))
			return luaL_error(L, "web_socket must be a dobj WebSocket");
		lua_getfield(L, idx, "status");
		status = lua_tointegerx(L, -1, &isnum);
		if (!isnum)
			status = 200;
		lua_getfield(L, idx, "body");
		body = lua_tolstring(L, -1, &blen);
		c->out_msg = dobj_msg_new_response((int)status, body ? body : "", body ? blen : 0);
		if (!c->out_msg)
			return luaL_error(L, "out of memory");
		dobj_msg_set_web_socket(c->out_msg, client);
		lua_getfield(L, idx, "headers");
		if (lua_type(L, -1) == LUA_TTABLE && msg_add_headers(L, lua_gettop(L), c->out_msg) < 0)
			return luaL_error(L, "%s", dobj_error_last());
	}
	return 0;
}

static int c_request_from_msg(lua_State *L)
{
	conv *c = lua_touserdata(L, 1);

	lua_createtable(L, 0, 4);
	lua_pushstring(L, c->msg->url);
	lua_setfield(L, -2, "url");
	lua_pushstring(L, c->msg->method);
	lua_setfield(L, -2, "method");
	push_msg_headers(L, c->msg);
	lua_setfield(L, -2, "headers");
	lua_pushlstring(L, c->msg->body ? (const char *)c->msg->body : "", c->msg->body_len);
	lua_setfield(L, -2, "body");
	push_mt_rt(c->r, L, MT_REQUEST);
	lua_setmetatable(L, -2);
	c->out_slot = anchor(c->r, L, -1, SLOT_VALUE);
	if (!c->out_slot)
		return luaL_error(L, "out of memory");
	return 0;
}

static int c_error_to_val(lua_State *L)
{
	conv *c = lua_touserdata(L, 1);
	const char *name = "Error", *msg;
	size_t nlen = 5, mlen;

	push_slot(c->r, L, c->value);
	if (lua_type(L, -1) == LUA_TTABLE) {
		lua_getfield(L, -1, "name");
		if (lua_type(L, -1) == LUA_TSTRING)
			name = lua_tolstring(L, -1, &nlen);
		lua_getfield(L, -2, "message");
		if (lua_type(L, -1) != LUA_TSTRING) {
			lua_pop(L, 1);
			luaL_tolstring(L, -2, NULL);
		}
	} else {
		luaL_tolstring(L, -1, NULL);
	}
	msg = lua_tolstring(L, -1, &mlen);
	if (!(c->out_val = dobj_val_object()) ||
	    dobj_val_put(c->out_val, "name", 4, dobj_val_string(name, nlen)) < 0 ||
	    dobj_val_put(c->out_val, "message", 7, dobj_val_string(msg ? msg : "", msg ? mlen : 0)) < 0)
		return luaL_error(L, "out of memory");
	return 0;
}

/* The caller's side: a dobj.Error table as a local call's (remote), with
 * `name` when the object's error had one other than "Error". */
static int c_error_from_val(lua_State *L)
{
	conv *c = lua_touserdata(L, 1);
	const dobj_val *n = dobj_val_get(c->desc, "name", 4), *m = dobj_val_get(c->desc, "message", 7);
	size_t len;
	const char *s;

	lua_createtable(L, 0, 3);
	s = m && dobj_val_type_of(m) == DOBJ_VAL_STRING ? dobj_val_get_string(m, &len) : NULL;
	lua_pushlstring(L, s ? s : "", s ? len : 0);
	lua_setfield(L, -2, "message");
	s = n && dobj_val_type_of(n) == DOBJ_VAL_STRING ? dobj_val_get_string(n, &len) : NULL;
	if (s && strcmp(s, "Error")) {
		lua_pushlstring(L, s, len);
		lua_setfield(L, -2, "name");
	}
	lua_pushboolean(L, 1);
	lua_setfield(L, -2, "remote");
	push_mt_rt(c->r, L, MT_ERROR);
	lua_setmetatable(L, -2);
	c->out_slot = anchor(c->r, L, -1, SLOT_VALUE);
	if (!c->out_slot)
		return luaL_error(L, "out of memory");
	return 0;
}

/* Run fn(c) under lua_pcall on a pooled coroutine; DOBJ_OK or an error set. */
static int run_conv(runtime_ud *r, lua_CFunction fn, conv *c)
{
	task_coro *h = coro_get(r);
	lua_State *L;
	int rc = DOBJ_OK;

	if (!h)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	L = h->co;
	lua_pushcfunction(L, fn);
	lua_pushlightuserdata(L, c);
	if (lua_pcall(L, 1, 0, 0) != LUA_OK)
		rc = dobj_error_set(DOBJ_EARG, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
	lua_settop(L, 0);
	coro_release(r, h);
	return rc;
}

static dobj_msg *lua_to_msg(void *data, void *value, int is_request)
{
	conv c = { data, value, NULL, NULL, is_request, NULL, NULL, NULL };

	if (run_conv(data, c_to_msg, &c) < 0) {
		dobj_msg_free(c.out_msg);
		return NULL;
	}
	return c.out_msg;
}

static void *lua_request_from_msg(void *data, const dobj_msg *m)
{
	conv c = { data, NULL, m, NULL, 1, NULL, NULL, NULL };

	return run_conv(data, c_request_from_msg, &c) < 0 ? NULL : c.out_slot;
}

static dobj_val *lua_error_to_val(void *data, void *error)
{
	conv c = { data, error, NULL, NULL, 0, NULL, NULL, NULL };

	if (run_conv(data, c_error_to_val, &c) < 0) {
		dobj_val_free(c.out_val);
		return NULL;
	}
	return c.out_val;
}

static void *lua_error_from_val(void *data, const dobj_val *desc)
{
	conv c = { data, NULL, NULL, desc, 0, NULL, NULL, NULL };

	return run_conv(data, c_error_from_val, &c) < 0 ? NULL : c.out_slot;
}

void route_codec_install(runtime_ud *r)
{
	dobj_route_codec c = { DOBJ_ROUTE_CODEC_VERSION, r, lua_to_msg, lua_request_from_msg,
		lua_error_to_val, lua_error_from_val };

	dobj_rt_set_route_codec(r->rt, &c);
}
