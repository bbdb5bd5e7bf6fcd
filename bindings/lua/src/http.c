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

/*
 * Headers are plain tables with lower-case names and the metatable
 * "dobj.Headers" (methods get and get_set_cookie).  The rules are the
 * core's (dobj_msg_*): token names, values normalized and checked, repeated
 * values joined with ", " except set-cookie, kept as a list of strings.
 */
#define HEADERS_MT "dobj.Headers"

/* Append name: value to the headers table at `dst` as Fetch's
 * Headers.append does; raises the core's message for a bad name or value. */
static void headers_append(lua_State *L, int dst, const char *name, size_t nlen,
	const char *value, size_t vlen)
{
	size_t start, len;
	const char *key;

	if (dobj_msg_header_name_check(name, nlen) < 0 ||
	    dobj_msg_header_value_check(value, vlen, &start, &len) < 0)
		luaL_error(L, "%s", dobj_error_last());
	push_lower(L, name, nlen);
	key = lua_tostring(L, -1);
	lua_pushvalue(L, -1);
	switch (lua_rawget(L, dst)) {
	case LUA_TNIL:
		lua_pop(L, 1);
		if (dobj_msg_header_is_list(key)) {
			lua_createtable(L, 1, 0);
			lua_pushlstring(L, value + start, len);
			lua_rawseti(L, -2, 1);
		} else {
			lua_pushlstring(L, value + start, len);
		}
		lua_rawset(L, dst);
		return;
	case LUA_TTABLE: /* set-cookie: one more entry */
		lua_pushlstring(L, value + start, len);
		lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
		lua_pop(L, 2);
		return;
	default:
		lua_pushliteral(L, ", ");
		lua_pushlstring(L, value + start, len);
		lua_concat(L, 3);
		lua_rawset(L, dst);
	}
}

/* A header value at `idx`: a string or a number, else NULL. */
static const char *header_value(lua_State *L, int idx, size_t *len)
{
	int t = lua_type(L, idx);

	if (t != LUA_TSTRING && t != LUA_TNUMBER)
		return NULL;
	return lua_tolstring(L, idx, len); /* numbers become strings */
}

/* Call fn for each (name, value) of the headers table at `src`: a value is a
 * string, a number or a list of them (each its own entry).  Raises for any
 * other value. */
void headers_walk(lua_State *L, int src, header_fn fn, void *data)
{
	src = lua_absindex(L, src);
	lua_pushnil(L);
	while (lua_next(L, src)) {
		size_t nlen, vlen;
		const char *k, *v;
		if (lua_type(L, -2) != LUA_TSTRING)
			luaL_error(L, "header names must be strings");
		k = lua_tolstring(L, -2, &nlen);
		if (lua_type(L, -1) == LUA_TTABLE) {
			lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
			for (i = 1; i <= n; i++) {
				lua_rawgeti(L, -1, i);
				if (!(v = header_value(L, -1, &vlen)))
					luaL_error(L, "header values must be strings");
				fn(L, data, k, nlen, v, vlen);
				lua_pop(L, 1);
			}
		} else {
			if (!(v = header_value(L, -1, &vlen)))
				luaL_error(L, "header values must be strings");
			fn(L, data, k, nlen, v, vlen);
		}
		lua_pop(L, 1);
	}
}

static void append_cb(lua_State *L, void *data, const char *name, size_t nlen,
	const char *value, size_t vlen)
{
	headers_append(L, *(int *)data, name, nlen, value, vlen);
}

/* Push a new headers table made of the table at `src`, by the core's rules. */
static void push_headers(lua_State *L, int src)
{
	int dst;

	src = lua_absindex(L, src);
	luaL_checktype(L, src, LUA_TTABLE);
	lua_newtable(L);
	dst = lua_gettop(L);
	headers_walk(L, src, append_cb, &dst);
	luaL_setmetatable(L, HEADERS_MT);
}

void push_msg_headers(lua_State *L, const dobj_msg *m)
{
	size_t i;
	int dst;

	lua_createtable(L, 0, (int)m->nheaders);
	dst = lua_gettop(L);
	for (i = 0; i < m->nheaders; i++)
		headers_append(L, dst, m->header_names[i], strlen(m->header_names[i]),
			m->header_values[i], strlen(m->header_values[i]));
	luaL_setmetatable(L, HEADERS_MT);
}

struct msg_add { dobj_msg *m; int rc; };

static void msg_add_cb(lua_State *L, void *data, const char *name, size_t nlen,
	const char *value, size_t vlen)
{
	struct msg_add *a = data;

	(void)L;
	if (a->rc < 0)
		return;
	if (strlen(name) != nlen || strlen(value) != vlen)
		a->rc = dobj_error_set(DOBJ_ETYPE, strlen(name) != nlen ?
			"Invalid header name." : "Invalid header value.");
	else
		a->rc = dobj_msg_add_header(a->m, name, value);
}

int msg_add_headers(lua_State *L, int src, dobj_msg *m)
{
	struct msg_add a = { m, DOBJ_OK };

	headers_walk(L, src, msg_add_cb, &a);
	return a.rc;
}

/* headers:get(name): the value (a set-cookie list joined with ", "), or nil. */
static int l_headers_get(lua_State *L)
{
	size_t len;
	const char *name;

	luaL_checktype(L, 1, LUA_TTABLE);
	name = luaL_checklstring(L, 2, &len);
	if (dobj_msg_header_name_check(name, len) < 0) /* as workerd's Headers.get */
		return luaL_error(L, "%s", dobj_error_last());
	push_lower(L, name, len);
	if (lua_rawget(L, 1) == LUA_TTABLE) {
		luaL_Buffer b;
		lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
		luaL_buffinit(L, &b);
		for (i = 1; i <= n; i++) {
			if (i > 1)
				luaL_addstring(&b, ", ");
			lua_rawgeti(L, -2, i);
			luaL_addvalue(&b);
		}
		luaL_pushresult(&b);
	}
	return 1;
}

/* headers:get_set_cookie(): every set-cookie value, as a new list. */
static int l_headers_get_set_cookie(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_newtable(L);
	lua_pushliteral(L, "set-cookie");
	switch (lua_rawget(L, 1)) {
	case LUA_TTABLE: {
		lua_Integer i, n = (lua_Integer)lua_rawlen(L, -1);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, -1, i);
			lua_rawseti(L, -3, i);
		}
		break;
	}
	case LUA_TSTRING: /* set by hand after the headers were made */
		lua_rawseti(L, -2, 1);
		return 1;
	default:
		break;
	}
	lua_pop(L, 1);
	return 1;
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
			size_t len;
			const char *m, *canonical;
			luaL_checktype(L, -1, LUA_TSTRING);
			m = lua_tolstring(L, -1, &len);
			if (dobj_msg_method_check(m, len, &canonical) < 0)
				return luaL_error(L, "%s", dobj_error_last());
			if (canonical)
				lua_pushstring(L, canonical);
			else
				lua_pushvalue(L, -1);
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
	lua_getfield(L, t, "method");
	lua_getfield(L, t, "body");
	if (dobj_msg_request_body_check(lua_tostring(L, -2), luaL_len(L, -1)) < 0)
		return luaL_error(L, "%s", dobj_error_last());
	lua_pop(L, 2);
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
	lua_getfield(L, t, "body");
	if (dobj_msg_response_body_check((int)status, luaL_len(L, -1)) < 0)
		return luaL_error(L, "%s", dobj_error_last());
	lua_pop(L, 1);
	/* A body is a string: workerd's content-type for one, unless given. */
	if (!lua_isnil(L, 1)) {
		if (lua_getfield(L, t, "headers") != LUA_TTABLE) {
			lua_pop(L, 1);
			lua_newtable(L);
			luaL_setmetatable(L, HEADERS_MT);
			lua_pushvalue(L, -1);
			lua_setfield(L, t, "headers");
		}
		if (lua_getfield(L, -1, "content-type") == LUA_TNIL) {
			lua_pushliteral(L, DOBJ_MSG_TEXT_TYPE);
			lua_setfield(L, -3, "content-type");
		}
		lua_pop(L, 2);
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
		luaL_setmetatable(L, HEADERS_MT);
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
	if (strcmp(k, "status_text") == 0) {
		lua_getfield(L, 1, "status");
		lua_pushstring(L, dobj_msg_status_text((int)lua_tointeger(L, -1)));
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

	static const luaL_Reg headers_methods[] = {
		{ "get", l_headers_get }, { "get_set_cookie", l_headers_get_set_cookie }, { NULL, NULL }
	};

	luaL_newmetatable(L, HEADERS_MT);
	luaL_newlib(L, headers_methods);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
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
