/* dobj.cluster_init: create or migrate the cluster schema (dobj/cluster.h),
 * what `dobj-lua cluster init URL` runs; dobj._cluster_check and
 * dobj._cluster_seconds for the command line's early check of --cluster,
 * --node-addr, --cluster-ttl and --cluster-grace. */
#include "dobj_lua.h"

/* dobj.cluster_init(url [, timeout_seconds]) -> version
 *   | nil, message, kind ("url": a bad URL or timeout; "schema": the
 *   database's schema is newer than this dobj's, or not dobj's, left alone;
 *   "error": it cannot be reached...).  The timeout follows the rule of
 *   every source (dobj_cluster_opts_seconds): 0 s is refused, as
 *   cluster_timeout = 0 is, not taken for the C API's "0: the default". */
int l_cluster_init(lua_State *L)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;
	size_t n;
	const char *url = luaL_checklstring(L, 1, &n);
	int version = 0, rc;

	if (lua_isnoneornil(L, 2))
		rc = 0;
	else
		rc = dobj_cluster_opts_seconds(&o, DOBJ_CLUSTER_TIMEOUT, luaL_checknumber(L, 2),
			"timeout");
	if (rc == 0)
		rc = dobj_cluster_init(url, n, o.timeout_ms, &version);
	if (rc < 0) {
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		lua_pushstring(L, rc == DOBJ_EARG ? "url" : rc == DOBJ_ESTATE ? "schema" : "error");
		return 3;
	}
	lua_pushinteger(L, version);
	return 1;
}

/* dobj._cluster_check(url [, node_addr]) -> true | nil, message: the
 * runtime's own check (dobj_cluster_opts_check, the URL's syntax included),
 * without connecting. */
int l_cluster_check(lua_State *L)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;

	o.url = luaL_checklstring(L, 1, &o.url_len);
	o.node_addr = luaL_optlstring(L, 2, NULL, &o.node_addr_len);
	if (o.url_len == 0)
		o.url = "";
	if (dobj_cluster_opts_check(&o) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* dobj._cluster_seconds(which, seconds, name) -> true | nil, message: a
 * command line's time ("ttl", "grace", "timeout", "call_timeout") checked by
 * the rule of every source (dobj_cluster_opts_seconds), `name` (the flag)
 * in the message. */
int l_cluster_seconds(lua_State *L)
{
	static const char *const which[] = { "ttl", "grace", "timeout", "call_timeout", NULL };
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;
	int w = luaL_checkoption(L, 1, NULL, which);
	double s = luaL_checknumber(L, 2);
	const char *name = luaL_checkstring(L, 3);

	if (dobj_cluster_opts_seconds(&o, (dobj_cluster_time)w, s, name) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* The field `key` of the table at t in seconds (nil: not given) into co, by
 * the core's rule (dobj_cluster_opts_seconds): 0, or < 0 with the core's
 * message.  A field that is not a number is an error, its message prefixed
 * by `who` (the function's name and ": ", or ""). */
int cluster_field_seconds(lua_State *L, int t, const char *key, dobj_cluster_time which,
	dobj_cluster_opts *co, const char *who)
{
	double s;

	lua_getfield(L, t, key);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	if (lua_type(L, -1) != LUA_TNUMBER)
		return luaL_error(L, "%s%s must be a number of seconds, not %s", who, key,
			luaL_typename(L, -1));
	s = lua_tonumber(L, -1);
	lua_pop(L, 1);
	return dobj_cluster_opts_seconds(co, which, s, key);
}

int cluster_field_bytes(lua_State *L, int t, const char *key, dobj_cluster_size which,
	dobj_cluster_opts *co)
{
	lua_Integer n;

	lua_getfield(L, t, key);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return 0;
	}
	if (!lua_isinteger(L, -1))
		return luaL_error(L, "%s must be an integer (bytes)", key);
	n = lua_tointeger(L, -1);
	lua_pop(L, 1);
	return dobj_cluster_opts_bytes(co, which, (long long)n, key);
}
