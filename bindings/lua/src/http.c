/* HTTP messages: dobj.request and dobj.response, and their conversion to
 * the tables handlers see. */
#include "dobj_lua.h"

/* ------------------------------------------------------ requests/responses */

static void push_lower(lua_State *L, const char *s, size_t len)
{
	size_t i;
	char small[128], *p = small;

	for (i = 0; i < len; i++)
		if (s[i] >= 'A' && s[i] <= 'Z')
			break;
	if (i == len) {
		lua_pushlstring(L, s, len);
		return;
	}
	if (len > sizeof(small))
		p = lua_newuserdatauv(L, len, 0);
	for (i = 0; i < len; i++)
		p[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
	lua_pushlstring(L, p, len);
	if (p != small)
		lua_remove(L, -2);
}

/* Copy the headers table at `src` into a new table with lower-case names. */
static void push_headers(lua_State *L, int src)
{
	int dst;

	src = lua_absindex(L, src);
	luaL_checktype(L, src, LUA_TTABLE);
	lua_newtable(L);
	dst = lua_gettop(L);
	lua_pushnil(L);
	while (lua_next(L, src)) {
		size_t len;
		const char *k;
		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L, "header names must be strings");
		if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
			luaL_error(L, "header values must be strings");
		k = lua_tolstring(L, -2, &len);
		push_lower(L, k, len);
		lua_pushvalue(L, -2);
		lua_tostring(L, -1); /* numbers become strings */
		lua_rawset(L, dst);
		lua_pop(L, 1);
	}
}

static void check_body(lua_State *L, int idx)
{
	int t = lua_type(L, idx);

	if (t == LUA_TNIL || t == LUA_TNONE)
		lua_pushliteral(L, "");
	else if (t == LUA_TSTRING)
		lua_pushvalue(L, idx); /* any bytes: NUL included */
	else if (t == LUA_TNUMBER)
		lua_pushstring(L, lua_tostring(L, idx));
	else
		luaL_error(L, "a body must be a string (got %s)", luaL_typename(L, idx));
}

/*
 * Push a new request made of the URL or request at `src` and the options
 * table at `init` (0 or nil: none).  A request given as `src` is copied, so
 * that caller and object never share a table.
 */
int push_request(lua_State *L, int src, int init)
{
	int t, have_init = init && lua_type(L, init) == LUA_TTABLE;

	if (init && !have_init && !lua_isnoneornil(L, init))
		luaL_typeerror(L, init, "table");
	lua_createtable(L, 0, 4);
	t = lua_gettop(L);
	if (lua_type(L, src) == LUA_TSTRING) {
		lua_pushvalue(L, src);
		lua_setfield(L, t, "url");
		lua_pushliteral(L, "GET");
		lua_setfield(L, t, "method");
		lua_pushliteral(L, "");
		lua_setfield(L, t, "body");
	} else if (is_table_of(L, src, MOD(L)->mt[MT_REQUEST])) {
		static const char *const fields[] = { "url", "method", "body" };
		int i;
		for (i = 0; i < 3; i++) {
			lua_getfield(L, src, fields[i]);
			lua_setfield(L, t, fields[i]);
		}
		lua_pushliteral(L, "headers");
		lua_rawget(L, src); /* raw: an absent table stays absent */
		if (lua_type(L, -1) == LUA_TTABLE) {
			push_headers(L, -1);
			lua_setfield(L, t, "headers");
		}
		lua_pop(L, 1);
	} else {
		return luaL_typeerror(L, src, "URL string or dobj.request");
	}
	if (have_init) {
		lua_getfield(L, init, "method");
		if (!lua_isnil(L, -1)) {
			luaL_checktype(L, -1, LUA_TSTRING);
			{
				size_t len, i;
				const char *m = lua_tolstring(L, -1, &len);
				luaL_Buffer b;
				char *p = luaL_buffinitsize(L, &b, len);
				for (i = 0; i < len; i++)
					p[i] = (m[i] >= 'a' && m[i] <= 'z') ? (char)(m[i] - 32) : m[i];
				luaL_pushresultsize(&b, len);
			}
			lua_setfield(L, t, "method");
		}
		lua_pop(L, 1);
		lua_getfield(L, init, "headers");
		if (!lua_isnil(L, -1)) {
			push_headers(L, -1);
			lua_setfield(L, t, "headers");
		}
		lua_pop(L, 1);
		lua_getfield(L, init, "body");
		if (!lua_isnil(L, -1)) {
			check_body(L, -1);
			lua_setfield(L, t, "body");
		}
		lua_pop(L, 1);
	}
	push_mt(L, MT_REQUEST);
	lua_setmetatable(L, t);
	return t;
}

int l_request(lua_State *L)
{
	size_t len;
	const char *url;
	int t;

	if (lua_type(L, 1) == LUA_TSTRING) {
		url = lua_tolstring(L, 1, &len);
		if (dobj_url_check(url, len) < 0)
			return raise_core_error(L, dobj_error_last());
	}
	t = push_request(L, 1, 2);
	lua_settop(L, t);
	return 1;
}

int l_response(lua_State *L)
{
	lua_Integer status = 200;
	int t;

	lua_settop(L, 2);
	if (!lua_isnil(L, 2))
		luaL_checktype(L, 2, LUA_TTABLE);
	lua_createtable(L, 0, 3);
	t = lua_gettop(L);
	check_body(L, 1);
	lua_setfield(L, t, "body");
	if (!lua_isnil(L, 2)) {
		int has_ws;
		lua_getfield(L, 2, "web_socket");
		has_ws = !lua_isnil(L, -1);
		if (has_ws && !test_ud(L, -1, MT_WEBSOCKET))
			return luaL_error(L, "web_socket must be a dobj.WebSocket, got %s", luaL_typename(L, -1));
		lua_setfield(L, t, "web_socket");
		lua_getfield(L, 2, "status");
		if (!lua_isnil(L, -1) || has_ws) {
			int isint = 1;
			if (!lua_isnil(L, -1))
				status = lua_tointegerx(L, -1, &isint);
			if (!isint)
				return luaL_error(L, "status must be an integer");
			/* The core's rule: 101 with a WebSocket and only then. */
			if (dobj_ws_response_check(status, has_ws) < 0)
				return luaL_error(L, "%s", dobj_error_last());
		}
		lua_pop(L, 1);
		lua_getfield(L, 2, "headers");
		if (!lua_isnil(L, -1)) {
			push_headers(L, -1);
			lua_setfield(L, t, "headers");
		}
		lua_pop(L, 1);
	}
	lua_pushinteger(L, status);
	lua_setfield(L, t, "status");
	push_mt(L, MT_RESPONSE);
	lua_setmetatable(L, t);
	return 1;
}

static int l_msg_text(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_getfield(L, 1, "body");
	if (lua_isnil(L, -1))
		lua_pushliteral(L, "");
	else
		lua_tostring(L, -1);
	return 1;
}

/* __index of requests and responses: absent fields.  Headers are made on
 * first use so that a round trip without headers builds no extra table. */
static int l_msg_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	if (!k)
		return 0;
	if (strcmp(k, "headers") == 0) {
		lua_newtable(L);
		lua_pushvalue(L, -1);
		lua_setfield(L, 1, "headers");
		return 1;
	}
	if (strcmp(k, "text") == 0) {
		lua_pushvalue(L, lua_upvalueindex(2));
		return 1;
	}
	if (strcmp(k, "ok") == 0) {
		lua_Integer s;
		lua_getfield(L, 1, "status");
		s = lua_tointeger(L, -1);
		lua_pushboolean(L, s >= 200 && s <= 299);
		return 1;
	}
	if (strcmp(k, "body") == 0) {
		lua_pushliteral(L, "");
		return 1;
	}
	return 0;
}

static int l_request_tostring(lua_State *L)
{
	lua_getfield(L, 1, "method");
	lua_getfield(L, 1, "url");
	lua_pushfstring(L, "dobj.Request(%s %s)", luaL_optstring(L, -2, "?"), luaL_optstring(L, -1, "?"));
	return 1;
}

static int l_response_tostring(lua_State *L)
{
	lua_getfield(L, 1, "status");
	lua_pushfstring(L, "dobj.Response(%d)", (int)lua_tointeger(L, -1));
	return 1;
}

static const luaL_Reg request_meta[] = { { "__tostring", l_request_tostring }, { NULL, NULL } };
static const luaL_Reg response_meta[] = { { "__tostring", l_response_tostring }, { NULL, NULL } };

void http_open(lua_State *L, int mi)
{
	static const int types[] = { MT_REQUEST, MT_RESPONSE };
	int i;

	register_type(L, mi, MT_REQUEST, request_meta, NULL);
	register_type(L, mi, MT_RESPONSE, response_meta, NULL);
	for (i = 0; i < 2; i++) {
		/* __index closes over the module state and the text() method. */
		lua_getiuservalue(L, mi, types[i]);
		lua_pushvalue(L, mi);
		lua_pushvalue(L, mi);
		lua_pushcclosure(L, l_msg_text, 1);
		lua_pushcclosure(L, l_msg_index, 2);
		lua_setfield(L, -2, "__index");
		lua_pop(L, 1);
	}
}
