/* dobj.cluster_init: create or migrate the cluster schema (dobj/cluster.h),
 * what `dobj-lua cluster init URL` runs; dobj._cluster_check for the
 * command line's early check of --cluster / --node-addr. */
#include "dobj_lua.h"

/* dobj.cluster_init(url [, timeout_seconds]) -> version
 *   | nil, message, kind ("url": a bad URL; "schema": the database's schema
 *   is newer than this dobj's, left alone; "error": it cannot be reached...) */
int l_cluster_init(lua_State *L)
{
	size_t n;
	const char *url = luaL_checklstring(L, 1, &n);
	double timeout = luaL_optnumber(L, 2, 0);
	int version = 0, rc;

	rc = dobj_cluster_init(url, n, timeout * 1e3, &version);
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
