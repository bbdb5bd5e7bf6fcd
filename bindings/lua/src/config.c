/*
 * config.c — dobj.load_config: a Workers project's wrangler configuration.
 * The core reads and resolves it (dobj/config.h); this file turns the result
 * into Lua tables.  Expected failures (no file, bad syntax, a bad key)
 * return nil and the core's message, which names the file, the key and,
 * for syntax errors, the line.
 */
#include <math.h>

#include "dobj_lua.h"

/* A config tree value: objects and arrays -> tables, JSON null -> dobj.null,
 * integers (dobj_config_is_integer) -> Lua integers (floats beyond 64 bits). */
static void push_tree(lua_State *L, const dobj_val *v)
{
	size_t i, len;
	const char *s;

	luaL_checkstack(L, 4, "config nested too deep");
	switch (dobj_val_type_of(v)) {
	case DOBJ_VAL_NULL:
		lua_getiuservalue(L, lua_upvalueindex(1), UV_NULL);
		return;
	case DOBJ_VAL_BOOL:
		lua_pushboolean(L, dobj_val_get_bool(v));
		return;
	case DOBJ_VAL_NUMBER:
	case DOBJ_VAL_BIGINT:
		if (dobj_config_is_integer(v)) {
			int64_t i64;
			if (dobj_val_to_i64(v, &i64) == 0) {
				lua_pushinteger(L, (lua_Integer)i64);
				return;
			}
			if (dobj_val_type_of(v) == DOBJ_VAL_BIGINT) {
				/* Beyond 64 bits (JSON only): the nearest float. */
				int neg;
				const unsigned char *mag = dobj_val_get_bigint(v, &neg, &len);
				double d = 0;
				for (i = len; i > 0; i--)
					d = d * 256.0 + mag[i - 1];
				lua_pushnumber(L, neg ? -d : d);
				return;
			}
		}
		lua_pushnumber(L, dobj_val_get_number(v));
		return;
	case DOBJ_VAL_STRING:
		s = dobj_val_get_string(v, &len);
		lua_pushlstring(L, s, len);
		return;
	case DOBJ_VAL_ARRAY:
		lua_createtable(L, (int)dobj_val_len(v), 0);
		for (i = 0; i < dobj_val_len(v); i++) {
			push_tree(L, dobj_val_at(v, i));
			lua_rawseti(L, -2, (lua_Integer)i + 1);
		}
		return;
	case DOBJ_VAL_OBJECT:
		lua_createtable(L, 0, (int)dobj_val_len(v));
		for (i = 0; i < dobj_val_len(v); i++) {
			s = dobj_val_key_at(v, i, &len);
			lua_pushlstring(L, s, len);
			push_tree(L, dobj_val_at(v, i));
			lua_rawset(L, -3);
		}
		return;
	default:
		lua_pushnil(L);
		return;
	}
}

static void set_str(lua_State *L, const char *key, const char *value)
{
	if (!value)
		return; /* absent: nil */
	lua_pushstring(L, value);
	lua_setfield(L, -2, key);
}

static void set_list(lua_State *L, const char *key, const char *const *items, size_t n)
{
	size_t i;

	lua_createtable(L, (int)n, 0);
	for (i = 0; i < n; i++) {
		lua_pushstring(L, items[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	lua_setfield(L, -2, key);
}

/* What the core handed over, freed by __gc if a Lua allocation error
 * unwinds before the result is copied into Lua (and at once otherwise). */
typedef struct config_guard {
	dobj_config *cfg;
	dobj_val *val;
} config_guard;

static int guard_gc(lua_State *L)
{
	config_guard *g = lua_touserdata(L, 1);

	dobj_config_free(g->cfg);
	dobj_val_free(g->val);
	g->cfg = NULL;
	g->val = NULL;
	return 0;
}

static config_guard *push_guard(lua_State *L)
{
	config_guard *g = lua_newuserdatauv(L, sizeof(*g), 0);

	g->cfg = NULL;
	g->val = NULL;
	if (luaL_newmetatable(L, "dobj.ConfigGuard")) {
		lua_pushcfunction(L, guard_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	return g;
}

/* An optional string field of the options table, with its length checked
 * for NUL bytes (a NUL would cut a path short). */
static const char *opt_field(lua_State *L, int t, const char *key)
{
	const char *s;
	size_t len;

	lua_getfield(L, t, key);
	if (lua_isnil(L, -1)) {
		lua_pop(L, 1);
		return NULL;
	}
	if (lua_type(L, -1) != LUA_TSTRING)
		luaL_error(L, "load_config: %s must be a string, not %s", key, luaL_typename(L, -1));
	s = lua_tolstring(L, -1, &len);
	if (strlen(s) != len)
		luaL_error(L, "load_config: %s contains a NUL byte", key);
	lua_pop(L, 1); /* the options table keeps the string alive */
	return s;
}

/* The resolved cluster settings as a table (seconds, bytes; nil for a
 * setting left at the core's default). */
static void push_cluster(lua_State *L, const dobj_cluster_opts *o)
{
	const double ms[4] = { o->ttl_ms, o->grace_ms, o->timeout_ms, o->call_timeout_ms };
	static const char *const names[4] = { "ttl", "grace", "timeout", "call_timeout" };
	int i;

	lua_createtable(L, 0, 6);
	set_str(L, "url", o->url);
	set_str(L, "node_addr", o->node_addr);
	for (i = 0; i < 4; i++) {
		if (ms[i] == 0)
			continue;
		lua_pushnumber(L, ms[i] < 0 ? 0 : ms[i] / 1e3);
		lua_setfield(L, -2, names[i]);
	}
	/* Bytes (the C field's < 0, "never", is the user's 0). */
	if (o->snapshot_bytes != 0) {
		lua_pushinteger(L, o->snapshot_bytes < 0 ? 0 : (lua_Integer)o->snapshot_bytes);
		lua_setfield(L, -2, "snapshot_bytes");
	}
	if (o->snapshot_part_bytes != 0) {
		lua_pushinteger(L, (lua_Integer)o->snapshot_part_bytes);
		lua_setfield(L, -2, "snapshot_part_bytes");
	}
}

/* dobj.load_config([path | { path=, env=, persist_to=, cluster=, node_addr=,
 * cluster_ttl=, cluster_grace=, cluster_timeout=, cluster_call_timeout=,
 * cluster_snapshot_bytes=, cluster_snapshot_part_bytes= }])
 * -> table | nil, msg.
 * The cluster fields are the caller's settings: they win over the
 * environment's and the file's (dobj_config.cluster).
 * `starting`: the project is about to start (dobj.load), so its state folder
 * takes the migrations' renames first (dobj_config_move_renamed). */
static int load_config(lua_State *L, int starting)
{
	dobj_config_opts opts = DOBJ_CONFIG_OPTS_INIT;
	config_guard *g;
	dobj_config *c;
	size_t i;
	int rc;

	/* A second argument (load_config(path, "staging")) would be dropped
	 * without a word and the wrong environment loaded: env goes in the
	 * table, as Python's is keyword-only. */
	if (!lua_isnoneornil(L, 2))
		return luaL_error(L, "load_config: takes one argument, a path or { path =, env =, ... }");
	if (lua_type(L, 1) == LUA_TSTRING) {
		lua_createtable(L, 0, 1);
		lua_pushvalue(L, 1);
		lua_setfield(L, -2, "path");
		lua_replace(L, 1);
	} else if (lua_isnoneornil(L, 1)) {
		lua_settop(L, 0);
		lua_newtable(L);
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	opts.path = opt_field(L, 1, "path");
	opts.env = opt_field(L, 1, "env");
	opts.persist_to = opt_field(L, 1, "persist_to");
	opts.cluster.url = opt_field(L, 1, "cluster");
	opts.cluster.node_addr = opt_field(L, 1, "node_addr");
	if (cluster_field_seconds(L, 1, "cluster_ttl", DOBJ_CLUSTER_TTL, &opts.cluster, "load_config: ") < 0 ||
	    cluster_field_seconds(L, 1, "cluster_grace", DOBJ_CLUSTER_GRACE, &opts.cluster, "load_config: ") < 0 ||
	    cluster_field_seconds(L, 1, "cluster_timeout", DOBJ_CLUSTER_TIMEOUT, &opts.cluster, "load_config: ") < 0 ||
	    cluster_field_seconds(L, 1, "cluster_call_timeout", DOBJ_CLUSTER_CALL_TIMEOUT, &opts.cluster, "load_config: ") < 0 ||
	    cluster_field_bytes(L, 1, "cluster_snapshot_bytes", DOBJ_CLUSTER_SNAPSHOT_EVERY, &opts.cluster) < 0 ||
	    cluster_field_bytes(L, 1, "cluster_snapshot_part_bytes", DOBJ_CLUSTER_SNAPSHOT_PART, &opts.cluster) < 0) {
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	g = push_guard(L);
	rc = dobj_config_load(&g->cfg, &opts);
	if (rc == 0 && starting)
		rc = dobj_config_move_renamed(g->cfg);
	if (rc < 0) {
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	c = g->cfg;
	lua_createtable(L, 0, 16);
	set_str(L, "config_path", c->path);
	set_str(L, "env", c->env);
	set_str(L, "name", c->name);
	set_str(L, "worker_name", c->worker_name);
	set_str(L, "main", c->main);
	set_str(L, "compatibility_date", c->compatibility_date);
	set_str(L, "dev_vars_path", c->dev_vars_path);
	set_str(L, "state_dir", c->state_dir);
	if (c->cluster) {
		push_cluster(L, c->cluster);
		lua_setfield(L, -2, "cluster");
	}
	set_list(L, "compatibility_flags", c->compatibility_flags, c->compatibility_flags_len);
	set_list(L, "warnings", c->warnings, c->warnings_len);
	push_tree(L, c->vars);
	lua_setfield(L, -2, "vars");
	push_tree(L, c->migrations);
	lua_setfield(L, -2, "migrations");
	lua_createtable(L, (int)c->bindings_len, 0);
	for (i = 0; i < c->bindings_len; i++) {
		const dobj_config_binding *b = &c->bindings[i];
		lua_createtable(L, 0, 5);
		set_str(L, "binding", b->binding);
		set_str(L, "class_name", b->class_name);
		set_str(L, "unique_key", b->unique_key);
		set_str(L, "id_key", b->id_key);
		set_str(L, "storage_dir", b->storage_dir);
		lua_pushboolean(L, b->sqlite);
		lua_setfield(L, -2, "sqlite");
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	lua_setfield(L, -2, "bindings");
	dobj_config_free(g->cfg);
	g->cfg = NULL;
	return 1;
}

int l_load_config(lua_State *L)
{
	return load_config(L, 0);
}

int l_load_config_starting(lua_State *L)
{
	return load_config(L, 1);
}

/* dobj._config_parse(text, "toml" | "jsonc" | "dotenv") -> tree | nil, msg
 * (tests read the core's parsers directly). */
int l_config_parse(lua_State *L)
{
	size_t len;
	const char *text = luaL_checklstring(L, 1, &len);
	const char *format = luaL_checkstring(L, 2);
	const char *name = luaL_optstring(L, 3, NULL);
	config_guard *g;
	int rc;

	if (strcmp(format, "toml") != 0 && strcmp(format, "jsonc") != 0 && strcmp(format, "json") != 0 &&
	    strcmp(format, "dotenv") != 0)
		return luaL_argerror(L, 2, "toml, jsonc or dotenv");
	g = push_guard(L);
	if (strcmp(format, "toml") == 0)
		rc = dobj_config_parse(&g->val, text, len, DOBJ_CONFIG_TOML, name);
	else if (strcmp(format, "dotenv") == 0)
		rc = dobj_config_parse_dotenv(&g->val, text, len, name);
	else
		rc = dobj_config_parse(&g->val, text, len, DOBJ_CONFIG_JSONC, name);
	if (rc < 0) {
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	push_tree(L, g->val);
	dobj_val_free(g->val);
	g->val = NULL;
	return 1;
}
