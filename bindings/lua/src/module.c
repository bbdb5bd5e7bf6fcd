/*
 * The module: luaopen_dobj, the module state, and the metatable helpers every
 * file uses.  Each other file registers its own types from an *_open function
 * (as luv's files do), called from luaopen_dobj below.
 */
#include "dobj_lua.h"

const char *const mt_names[MT_COUNT + 1] = {
	NULL, "dobj.Runtime", "dobj.Namespace", "dobj.Id", "dobj.Stub",
	"dobj.Ctx", "dobj.Request", "dobj.Response", "dobj.Error",
	"dobj.Storage", "dobj.Transaction", "dobj.Sql", "dobj.Cursor", "dobj.Bytes",
	"dobj.Date", "dobj.null", "dobj.Set", "dobj.Map", "dobj.List", "dobj.WebSocket",
	"dobj.Array",
};

/* The registry's key for the module state (the last luaopen_dobj's: every
 * load shares the metatables, made once by name). */
static const char state_key = 0;

/* Is upvalue 1 of the running function the module state? */
static module_state *mod_upvalue(lua_State *L)
{
	module_state *m;

	if (lua_type(L, MODIDX) != LUA_TUSERDATA || lua_rawlen(L, MODIDX) != sizeof(*m))
		return NULL;
	m = lua_touserdata(L, MODIDX);
	return m->self == m ? m : NULL;
}

module_state *mod_state(lua_State *L)
{
	module_state *m = mod_upvalue(L);

	if (!m) {
		lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key);
		m = lua_touserdata(L, -1);
		lua_pop(L, 1);
	}
	return m;
}

void push_mt(lua_State *L, int which)
{
	if (mod_upvalue(L)) {
		lua_getiuservalue(L, MODIDX, which);
		return;
	}
	lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key);
	lua_getiuservalue(L, -1, which);
	lua_remove(L, -2);
}

void *test_ud(lua_State *L, int idx, int which)
{
	void *p = lua_touserdata(L, idx);

	if (p && lua_getmetatable(L, idx)) {
		module_state *m = MOD(L);
		int ok = m && lua_topointer(L, -1) == m->mt[which];
		lua_pop(L, 1);
		if (ok)
			return p;
	}
	return NULL;
}

void *check_ud(lua_State *L, int idx, int which)
{
	void *p = test_ud(L, idx, which);

	if (!p)
		luaL_typeerror(L, idx, mt_names[which]);
	return p;
}

int is_table_of(lua_State *L, int idx, const void *mt)
{
	int ok = 0;

	if (lua_type(L, idx) == LUA_TTABLE && lua_getmetatable(L, idx)) {
		ok = lua_topointer(L, -1) == mt;
		lua_pop(L, 1);
	}
	return ok;
}

/* The string at idx for a core API that takes a C string (a name, a path):
 * raises if it is not a string (or number) or holds a NUL byte, which would cut it short
 * ("q\0one" and "q\0two" would name one thing).  A translation check: the
 * core cannot see past a NUL it is not told the length of. */
const char *check_cstring(lua_State *L, int idx, const char *what)
{
	size_t len;
	const char *s = luaL_checklstring(L, idx, &len);

	if (strlen(s) != len)
		luaL_error(L, "%s must not contain a NUL byte", what);
	return s;
}

/* Raise `msg` verbatim (no "file:line:" prefix): workerd's messages. */
int raise_plain(lua_State *L, const char *msg)
{
	lua_pushstring(L, msg);
	return lua_error(L);
}

/* ---------------------------------------------------------------- module */

static int l_stats(lua_State *L)
{
	lua_createtable(L, 0, 1);
	lua_pushinteger(L, MOD(L)->nruntimes);
	lua_setfield(L, -2, "runtimes");
	return 1;
}

static int l_is_error(lua_State *L)
{
	lua_pushboolean(L, is_table_of(L, 1, MOD(L)->mt[MT_ERROR]));
	return 1;
}


/* Make the metatable `which` ("dobj.X") with `meta`, and its methods table with
 * `methods` (NULL: none); both are kept as user values of the module state
 * `mi`, and every function gets the module state as upvalue 1. */
void register_type(lua_State *L, int mi, int which, const luaL_Reg *meta, const luaL_Reg *methods)
{
	module_state *m = lua_touserdata(L, mi);

	luaL_newmetatable(L, mt_names[which]);
	lua_pushvalue(L, mi);
	luaL_setfuncs(L, meta, 1);
	m->mt[which] = lua_topointer(L, -1);
	lua_newtable(L);
	if (methods) {
		lua_pushvalue(L, mi);
		luaL_setfuncs(L, methods, 1);
	}
	lua_setiuservalue(L, mi, UV_METHODS(which));
	lua_setiuservalue(L, mi, which);
}

static const luaL_Reg module_funcs[] = {
	{ "runtime", l_runtime }, { "request", l_request }, { "response", l_response },
	{ "sleep", l_sleep }, { "is_error", l_is_error }, { "_stats", l_stats },
	{ "on_error", l_on_error }, { "load_config", l_load_config }, { "load", l_load }, { "http_listen", l_http_listen }, { "_config_parse", l_config_parse },
	{ "bytes", l_bytes }, { "date", l_date }, { "set", l_set }, { "map", l_map },
	{ "array", l_array },
	{ "websocket_pair", l_websocket_pair }, { "cluster_init", l_cluster_init },
	{ "_cluster_check", l_cluster_check }, { "_cluster_seconds", l_cluster_seconds },
	{ NULL, NULL }
};

LDOBJ_EXPORT int luaopen_dobj(lua_State *L)
{
	module_state *m;
	int mi, i;

	m = lua_newuserdatauv(L, sizeof(*m), UV_COUNT);
	memset(m, 0, sizeof(*m));
	m->self = m;
	mi = lua_gettop(L);
	lua_pushvalue(L, mi);
	lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
	runtime_open(L, mi);
	namespace_open(L, mi);
	stub_open(L, mi);
	ctx_open(L, mi);
	websocket_open(L, mi);
	http_open(L, mi);
	errors_open(L, mi);
	storage_open(L, mi);
	sql_open(L, mi);
	values_open(L, mi);
	server_open(L, mi);
	lua_newtable(L);
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_setiuservalue(L, mi, UV_DEFAULT_RT);
	lua_newtable(L); /* RPC callers by method name (weak: made again when needed) */
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_setiuservalue(L, mi, UV_RPC);
	lua_newuserdatauv(L, 0, 0); /* dobj.null */
	lua_getiuservalue(L, mi, MT_NULL);
	lua_setmetatable(L, -2);
	lua_setiuservalue(L, mi, UV_NULL);

	luaL_newlibtable(L, module_funcs);
	lua_pushvalue(L, mi);
	luaL_setfuncs(L, module_funcs, 1);
	lua_getiuservalue(L, mi, MT_ERROR);
	lua_setfield(L, -2, "Error");
	lua_getiuservalue(L, mi, MT_REQUEST);
	lua_setfield(L, -2, "Request");
	lua_getiuservalue(L, mi, MT_RESPONSE);
	lua_setfield(L, -2, "Response");
	lua_getiuservalue(L, mi, UV_NULL);
	lua_setfield(L, -2, "null");
	{
		static const struct { int which; const char *name; } exported[] = {
			{ MT_BYTES, "Bytes" }, { MT_DATE, "Date" }, { MT_SET, "Set" }, { MT_MAP, "Map" },
			{ MT_ARRAY, "Array" }, { MT_LIST, "List" }, { MT_STORAGE, "Storage" }, { MT_CURSOR, "Cursor" },
		};
		for (i = 0; i < (int)(sizeof(exported) / sizeof(exported[0])); i++) {
			lua_getiuservalue(L, mi, exported[i].which);
			lua_setfield(L, -2, exported[i].name);
		}
	}
	lua_pushinteger(L, DOBJ_MAX_CALL_DEPTH);
	lua_setfield(L, -2, "MAX_CALL_DEPTH");
	lua_pushinteger(L, DOBJ_MAX_CTX_NAME);
	lua_setfield(L, -2, "MAX_CTX_NAME");
	lua_pushliteral(L, "0.1.0");
	lua_setfield(L, -2, "version");
	testkit_open(L, mi);
	return 1;
}
