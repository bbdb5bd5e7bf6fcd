/* Namespaces (dobj.Namespace) and object IDs (dobj.Id). */
#include "dobj_lua.h"

/* --------------------------------------------------------------------- IDs */

id_ud *push_id(lua_State *L, const dobj_idkey *key, int mt_from_rt, runtime_ud *r)
{
	id_ud *d = lua_newuserdatauv(L, sizeof(*d), 1);

	memset(d, 0, sizeof(*d));
	d->key = key;
	if (mt_from_rt)
		push_mt_rt(r, L, MT_ID);
	else
		push_mt(L, MT_ID);
	lua_setmetatable(L, -2);
	return d;
}

static int l_id_tostring(lua_State *L)
{
	id_ud *d = check_ud(L, 1, MT_ID);
	char hex[DOBJ_ID_HEX_LEN];

	dobj_id_to_hex(&d->id, hex);
	lua_pushlstring(L, hex, sizeof(hex));
	return 1;
}

static int l_id_eq(lua_State *L)
{
	id_ud *a = test_ud(L, 1, MT_ID), *b = test_ud(L, 2, MT_ID);

	lua_pushboolean(L, a && b && dobj_id_equal(&a->id, &b->id));
	return 1;
}

static int l_id_equals(lua_State *L)
{
	id_ud *a = check_ud(L, 1, MT_ID), *b = test_ud(L, 2, MT_ID);

	lua_pushboolean(L, b && dobj_id_equal(&a->id, &b->id));
	return 1;
}

static int l_id_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	check_ud(L, 1, MT_ID);
	if (k && strcmp(k, "name") == 0) {
		lua_getiuservalue(L, 1, 1);
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_ID));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

/* -------------------------------------------------------------- namespaces */

static namespace_ud *check_ns(lua_State *L, int idx)
{
	namespace_ud *n = check_ud(L, idx, MT_NS);

	if (!n->ns)
		luaL_error(L, "the namespace is not bound");
	return n;
}

static int l_ns_id_from_name(lua_State *L)
{
	namespace_ud *n = check_ns(L, 1);
	size_t len;
	const char *name;
	dobj_idkey *key = dobj_ns_idkey(n->ns);
	id_ud *d;
	dobj_id id;

	luaL_checktype(L, 2, LUA_TSTRING);
	name = lua_tolstring(L, 2, &len);
	if (dobj_id_from_name(key, name, len, &id) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	d = push_id(L, key, 0, NULL);
	d->id = id;
	lua_pushvalue(L, 2);
	lua_setiuservalue(L, -2, 1);
	return 1;
}

/* The jurisdiction argument: nil, a string, or { jurisdiction = ... }. */
static int check_jurisdiction(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TTABLE) {
		lua_getfield(L, idx, "jurisdiction");
		lua_replace(L, idx);
	}
	if (lua_isnoneornil(L, idx))
		return 0;
	luaL_checktype(L, idx, LUA_TSTRING);
	return raise_plain(L, DOBJ_MSG_JURISDICTION);
}

static int l_ns_new_unique_id(lua_State *L)
{
	namespace_ud *n = check_ns(L, 1);
	dobj_idkey *key = dobj_ns_idkey(n->ns);
	id_ud *d;

	check_jurisdiction(L, 2);
	d = push_id(L, key, 0, NULL);
	if (dobj_id_new_unique(key, NULL, &d->id) < 0)
		return raise_plain(L, dobj_error_last());
	return 1;
}

static int l_ns_id_from_string(lua_State *L)
{
	namespace_ud *n = check_ns(L, 1);
	size_t len;
	const char *s;
	dobj_idkey *key = dobj_ns_idkey(n->ns);
	dobj_id id;

	luaL_checktype(L, 2, LUA_TSTRING);
	s = lua_tolstring(L, 2, &len);
	if (dobj_id_from_string(key, s, len, &id) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	push_id(L, key, 0, NULL)->id = id;
	return 1;
}

static int l_ns_jurisdiction(lua_State *L)
{
	check_ns(L, 1);
	check_jurisdiction(L, 2);
	lua_settop(L, 1);
	return 1;
}

/* A stub for the id userdata at `ididx`, of namespace at 1. */
static int make_stub(lua_State *L, int ididx)
{
	namespace_ud *n = check_ns(L, 1);
	id_ud *d = check_ud(L, ididx, MT_ID);
	dobj_idkey *key = dobj_ns_idkey(n->ns);
	stub_ud *s;
	const char *name;
	size_t len = 0;
	int rc;

	if (d->key != key) {
		/* An ID made elsewhere: its MAC must be this namespace's. */
		char hex[DOBJ_ID_HEX_LEN];
		dobj_id chk;
		dobj_id_to_hex(&d->id, hex);
		if (dobj_id_from_string(key, hex, sizeof(hex), &chk) < 0)
			return raise_plain(L, DOBJ_MSG_FOREIGN_ID);
	}
	s = lua_newuserdatauv(L, sizeof(*s), 2);
	s->stub = NULL;
	s->r = n->r;
	push_mt(L, MT_STUB);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, ididx);
	lua_setiuservalue(L, -2, 2);
	lua_getiuservalue(L, ididx, 1);
	name = lua_tolstring(L, -1, &len);
	rc = dobj_stub_new(&s->stub, n->ns, &d->id, name, len);
	lua_pop(L, 1);
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	return 1;
}

static int l_ns_get(lua_State *L)
{
	/* Options (location_hint) are accepted and ignored, as in workerd's local mode. */
	return make_stub(L, 2);
}

static int l_ns_get_by_name(lua_State *L)
{
	lua_settop(L, 2);
	if (l_ns_id_from_name(L) == 2) /* pushes the id at 3 */
		return 2; /* nil, why */
	return make_stub(L, 3);
}

static int l_ns_tostring(lua_State *L)
{
	namespace_ud *n = check_ud(L, 1, MT_NS);

	lua_pushfstring(L, "dobj.Namespace(%s)", n->ns ? dobj_ns_binding(n->ns) : "?");
	return 1;
}

/* ------------------------------------------------------------------ stats */

/* ns:_stats(): live instances and open databases (tests of eviction). */
static int l_ns_stats(lua_State *L)
{
	namespace_ud *n = check_ns(L, 1);

	lua_createtable(L, 0, 2);
	lua_pushinteger(L, (lua_Integer)dobj_ns_live(n->ns));
	lua_setfield(L, -2, "live");
	lua_pushinteger(L, (lua_Integer)dobj_ns_open_storages(n->ns));
	lua_setfield(L, -2, "open_storages");
	return 1;
}

static const luaL_Reg ns_meta[] = { { "__tostring", l_ns_tostring }, { NULL, NULL } };
static const luaL_Reg ns_methods[] = {
	{ "id_from_name", l_ns_id_from_name }, { "new_unique_id", l_ns_new_unique_id },
	{ "id_from_string", l_ns_id_from_string }, { "get", l_ns_get },
	{ "get_by_name", l_ns_get_by_name }, { "jurisdiction", l_ns_jurisdiction },
	{ "_stats", l_ns_stats }, { NULL, NULL }
};
static const luaL_Reg id_meta[] = {
	{ "__index", l_id_index }, { "__tostring", l_id_tostring }, { "__eq", l_id_eq },
	{ NULL, NULL }
};
static const luaL_Reg id_methods[] = {
	{ "to_string", l_id_tostring }, { "equals", l_id_equals }, { NULL, NULL }
};

void namespace_open(lua_State *L, int mi)
{
	register_type(L, mi, MT_NS, ns_meta, ns_methods);
	/* A namespace's metatable indexes its methods table directly. */
	lua_getiuservalue(L, mi, MT_NS);
	lua_getiuservalue(L, mi, UV_METHODS(MT_NS));
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
	register_type(L, mi, MT_ID, id_meta, id_methods);
}
