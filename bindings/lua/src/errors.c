/* Errors: dobj.Error values built from Lua errors and core messages. */
#include "dobj_lua.h"

/* ------------------------------------------------------------------ errors */

/*
 * Build the error value a caller sees: (value, id hex or nil, thread for a
 * traceback or nil, Error metatable, remote flag) -> a new table.  Tables
 * are copied field by field (custom properties travel, like workerd's
 * serialised errors); other values become { message = tostring(value),
 * value = value }.  Runs under lua_pcall: __tostring may be user code.
 */
static int make_error(lua_State *L)
{
	int t;

	lua_settop(L, 5);
	lua_newtable(L);
	t = lua_gettop(L);
	if (lua_type(L, 1) == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, 1)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, t);
		}
		lua_getfield(L, 1, "message");
		if (lua_type(L, -1) != LUA_TSTRING) {
			lua_pop(L, 1);
			luaL_tolstring(L, 1, NULL);
		}
	} else if (lua_type(L, 1) == LUA_TSTRING) {
		lua_pushvalue(L, 1);
	} else {
		lua_pushvalue(L, 1);
		lua_setfield(L, t, "value");
		luaL_tolstring(L, 1, NULL);
	}
	lua_setfield(L, t, "message");
	if (lua_toboolean(L, 5)) {
		lua_pushboolean(L, 1);
		lua_setfield(L, t, "remote");
	}
	if (!lua_isnil(L, 2)) {
		lua_pushvalue(L, 2);
		lua_setfield(L, t, "durable_object_id");
	}
	if (lua_type(L, 3) == LUA_TLIGHTUSERDATA) {
		lua_getfield(L, t, "stack");
		if (lua_isnil(L, -1)) {
			lua_getfield(L, t, "message");
			luaL_traceback(L, (lua_State *)lua_touserdata(L, 3), lua_tostring(L, -1), 0);
			lua_setfield(L, t, "stack");
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pushvalue(L, 4);
	lua_setmetatable(L, t);
	lua_settop(L, t);
	return 1;
}

/*
 * Convert the error value on top of `src` (popped) into a remote error for
 * `obj` (may be NULL), anchored in a slot.  Sets the thread's last core error
 * to (DOBJ_EUSER, message).  `tb` (may be NULL) is the dead coroutine whose
 * traceback is attached.  Returns the slot, or NULL if even that failed (the
 * last error then says why).
 */
void *convert_error(runtime_ud *r, lua_State *src, dobj_obj *obj, lua_State *tb, int remote)
{
	task_coro *h = coro_get(r);
	lua_State *L;
	void *slot = NULL;

	if (!h) {
		lua_pop(src, 1);
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	L = h->co;
	lua_pushcfunction(L, make_error);
	lua_xmove(src, L, 1);
	if (obj) {
		char hex[DOBJ_ID_HEX_LEN];
		dobj_id_to_hex(dobj_obj_id(obj), hex);
		lua_pushlstring(L, hex, sizeof(hex));
	} else {
		lua_pushnil(L);
	}
	if (tb)
		lua_pushlightuserdata(L, tb);
	else
		lua_pushnil(L);
	push_mt_rt(r, L, MT_ERROR);
	lua_pushboolean(L, remote);
	if (lua_pcall(L, 5, 1, 0) == LUA_OK) {
		lua_getfield(L, -1, "message");
		dobj_error_set(DOBJ_EUSER, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
		lua_pop(L, 1);
		slot = anchor(r, L, -1, SLOT_VALUE);
	} else {
		dobj_error_set(DOBJ_EUSER, "error while reporting an error: %s",
			lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
	}
	lua_settop(L, 0);
	coro_release(r, h);
	return slot;
}

/* Push a dobj.Error for a core failure (no host error value). */
void push_core_error(lua_State *L, const char *msg, const dobj_id *id, int remote)
{
	lua_createtable(L, 0, 3);
	lua_pushstring(L, msg ? msg : "error");
	lua_setfield(L, -2, "message");
	if (remote) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "remote");
	}
	if (id) {
		char hex[DOBJ_ID_HEX_LEN];
		dobj_id_to_hex(id, hex);
		lua_pushlstring(L, hex, sizeof(hex));
		lua_setfield(L, -2, "durable_object_id");
	}
	push_mt(L, MT_ERROR);
	lua_setmetatable(L, -2);
}

int raise_core_error(lua_State *L, const char *msg)
{
	push_core_error(L, msg, NULL, 0);
	return lua_error(L);
}


static int l_error_tostring(lua_State *L)
{
	lua_getfield(L, 1, "message");
	if (lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		lua_pushliteral(L, "dobj.Error");
	}
	return 1;
}

static const luaL_Reg error_meta[] = { { "__tostring", l_error_tostring }, { NULL, NULL } };

void errors_open(lua_State *L, int mi)
{
	register_type(L, mi, MT_ERROR, error_meta, NULL);
}
