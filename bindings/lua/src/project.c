/*
 * project.c — dobj.load: a Workers project (wrangler config + `main`) as a
 * runtime.  The config and its rules (which file, which environment, each
 * namespace's unique key and state folder) are the core's loader's
 * (config.c); this file loads `main`, binds the classes it returns with
 * rt:bind, and wraps its `fetch` as rt.default.
 *
 * `main` is a Lua file returning a table: `fetch(request, env, ctx)` and
 * the classes by `class_name`.  While it runs, its folder is first on
 * package.path (so `require "helper"` finds src/helper.lua); afterwards
 * package.path is restored and the modules it required from that folder are
 * taken out of package.loaded, so two projects never share a helper.
 */
#include "dobj_lua.h"

/* nil, "<fmt>" (an expected failure of dobj.load). */
static int fail(lua_State *L, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	lua_pushnil(L);
	lua_pushvfstring(L, fmt, ap);
	va_end(ap);
	return 2;
}

/* ------------------------------------------------------------ the entry */

/* ctx:wait_until(fn, ...) of the entry: background work without an object
 * (dobj/background.h; upvalue 2: the runtime).  A failure goes to
 * dobj.on_error (or stderr), never out of rt:run(), as an object's does. */
static int entry_wait_until(lua_State *L)
{
	runtime_ud *r = check_ud(L, lua_upvalueindex(2), MT_RUNTIME);

	if (!r->rt)
		return luaL_error(L, DOBJ_MSG_CLOSED);

	spawn_fn(L, r, NULL, DOBJ_TASK_BACKGROUND, 2, lua_gettop(L) - 2, NULL, NULL, NULL);
	return 0;
}

/* Upvalues of rt.default.fetch: 1 module state, 2 main's table, 3 env,
 * 4 the runtime.  Stack: 1 url or request, 2 init, 3 the request. */
static int entry_fetch_k(lua_State *L, int status, lua_KContext base)
{
	int n = lua_gettop(L) - (int)base;

	(void)status;
	if (n < 1 || !is_table_of(L, (int)base + 1, MOD(L)->mt[MT_RESPONSE]))
		return luaL_error(L, "fetch() must return a dobj.response, got %s",
			n < 1 ? "no value" : luaL_typename(L, (int)base + 1));
	lua_settop(L, (int)base + 1);
	return 1;
}

/* rt.default.fetch(url_or_request [, { method=, headers=, body= }]): calls
 * main's fetch(request, env, ctx) in the caller's coroutine, so it suspends
 * in a task and drives the runtime from the main chunk, as stub:fetch does. */
static int entry_fetch(lua_State *L)
{
	lua_settop(L, 2);
	if (lua_type(L, 1) == LUA_TSTRING) {
		size_t len;
		const char *url = lua_tolstring(L, 1, &len);
		if (dobj_url_check(url, len) < 0)
			return raise_core_error(L, dobj_error_last());
	}
	push_request(L, 1, 2);
	lua_settop(L, 3);
	lua_getfield(L, lua_upvalueindex(2), "fetch");
	if (lua_isnil(L, -1))
		return raise_core_error(L, "Handler does not export a fetch() function.");
	lua_pushvalue(L, 3);
	lua_pushvalue(L, lua_upvalueindex(3));
	lua_createtable(L, 0, 1); /* ctx: one per request */
	lua_pushvalue(L, lua_upvalueindex(1));
	lua_pushvalue(L, lua_upvalueindex(4));
	lua_pushcclosure(L, entry_wait_until, 2);
	lua_setfield(L, -2, "wait_until");
	lua_callk(L, 3, LUA_MULTRET, 3, entry_fetch_k);
	return entry_fetch_k(L, LUA_OK, 3);
}

/* ------------------------------------------------------------- loading */

/* Take the modules main required from its folder out of package.loaded:
 * those not in `before` that package.searchpath finds with `pattern`. */
static void forget_project_modules(lua_State *L, int pkg, int before, const char *pattern)
{
	int loaded;

	lua_getfield(L, pkg, "loaded");
	loaded = lua_gettop(L);
	if (!lua_istable(L, loaded))
		return;
	lua_newtable(L); /* names to drop (no change while traversing) */
	lua_pushnil(L);
	while (lua_next(L, loaded)) {
		lua_pop(L, 1);
		if (lua_type(L, -1) != LUA_TSTRING)
			continue;
		lua_pushvalue(L, -1);
		if (lua_rawget(L, before) != LUA_TNIL) {
			lua_pop(L, 1);
			continue;
		}
		lua_pop(L, 1);
		lua_getfield(L, pkg, "searchpath");
		if (lua_isfunction(L, -1)) {
			lua_pushvalue(L, -2);
			lua_pushstring(L, pattern);
			lua_call(L, 2, 1);
			if (lua_type(L, -1) == LUA_TSTRING) {
				lua_pushvalue(L, -2);
				lua_rawseti(L, loaded + 1, (lua_Integer)lua_rawlen(L, loaded + 1) + 1);
			}
		}
		lua_pop(L, 1);
	}
	for (lua_Integer i = 1; lua_rawgeti(L, loaded + 1, i) != LUA_TNIL; i++) {
		lua_pushnil(L);
		lua_rawset(L, loaded);
	}
	lua_settop(L, loaded - 1);
}

/* Run main (a path) and leave what it returned on the stack; or return 2
 * (nil, message) with the stack cleaned up to below them. */
static int load_main(lua_State *L, const char *where, const char *main)
{
	const char *slash = strrchr(main, '/');
	int top = lua_gettop(L), pkg, before = 0, rc;
	FILE *f;

	f = fopen(main, "r");
	if (!f)
		return fail(L, "%s: main %s %s", where, main,
			errno == ENOENT ? "does not exist" : strerror(errno));
	fclose(f);
	/* top+1: the pattern of main's folder (the config resolved main: absolute) */
	lua_pushlstring(L, main, slash ? (size_t)(slash - main) : 1);
	if (!slash)
		lua_pushliteral(L, "./?.lua;./?/init.lua");
	else
		lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", lua_tostring(L, -1), lua_tostring(L, -1));
	lua_remove(L, top + 1);
	lua_getglobal(L, "package");
	pkg = lua_gettop(L);
	if (lua_istable(L, pkg)) {
		lua_getfield(L, pkg, "path"); /* pkg+1: the old path */
		lua_pushfstring(L, "%s;%s", lua_tostring(L, top + 1),
			lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
		lua_setfield(L, pkg, "path");
		lua_newtable(L); /* pkg+2: names loaded before */
		before = lua_gettop(L);
		lua_getfield(L, pkg, "loaded");
		if (lua_istable(L, -1)) {
			lua_pushnil(L);
			while (lua_next(L, -2)) {
				lua_pop(L, 1);
				lua_pushvalue(L, -1);
				lua_pushboolean(L, 1);
				lua_rawset(L, before);
			}
		}
		lua_pop(L, 1);
	}
	rc = luaL_loadfilex(L, main, "t");
	if (rc == LUA_OK)
		rc = lua_pcall(L, 0, 1, 0);
	if (before) {
		lua_pushvalue(L, pkg + 1);
		lua_setfield(L, pkg, "path");
		forget_project_modules(L, pkg, before, lua_tostring(L, top + 1));
	}
	if (rc != LUA_OK) {
		luaL_tolstring(L, -1, NULL);
		lua_pushfstring(L, "%s: main %s failed: %s", where, main, lua_tostring(L, -1));
		lua_replace(L, top + 1);
		lua_settop(L, top + 1);
		lua_pushnil(L);
		lua_insert(L, top + 1);
		return 2;
	}
	if (!lua_istable(L, -1)) {
		const char *got = luaL_typename(L, -1);
		lua_settop(L, top);
		return fail(L, "%s: main %s must return a table (fetch and the classes), got %s",
			where, main, got);
	}
	lua_replace(L, top + 1);
	lua_settop(L, top + 1);
	return 1;
}

static void copy_field(lua_State *L, int from, const char *key, int to, const char *as)
{
	lua_getfield(L, from, key);
	lua_setfield(L, to, as);
}

/*
 * dobj.load{ config = PATH, env = NAME, persist_to = DIR, id_seed =,
 *            virtual_time =, durability =, idle_timeout = }
 *   -> runtime | nil, message
 */
int l_load(lua_State *L)
{
	static const char *const rt_opts[] = { "id_seed", "virtual_time", "durability", "idle_timeout", NULL };
	/* The caller's cluster settings go to the config loader, which
	 * resolves them with the environment's and the file's. */
	static const char *const cluster_opts[] = { "cluster", "node_addr", "cluster_ttl", "cluster_grace",
		"cluster_timeout", "cluster_call_timeout", "cluster_snapshot_bytes",
		"cluster_snapshot_part_bytes", NULL };
	const char *where, *main;
	runtime_ud *r;
	int opts = 1, cfg, mod, rtidx, nb, i;

	/* As load_config: a second argument (the env) goes in the table. */
	if (!lua_isnoneornil(L, 2))
		return luaL_error(L, "dobj.load: takes one argument, a config path or { config =, env =, ... }");
	lua_settop(L, 1);
	if (lua_type(L, 1) == LUA_TSTRING) {
		lua_createtable(L, 0, 1);
		lua_pushvalue(L, 1);
		lua_setfield(L, -2, "config");
		lua_replace(L, 1);
	} else if (lua_isnil(L, 1)) {
		lua_newtable(L);
		lua_replace(L, 1);
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	if (lua_getfield(L, opts, "storage") != LUA_TNIL)
		return luaL_error(L, "dobj.load: state goes where the config says (use persist_to)");
	lua_pop(L, 1);

	/* The config, by the core's loader. */
	lua_pushvalue(L, MODIDX);
	lua_pushcclosure(L, l_load_config_starting, 1);
	lua_createtable(L, 0, 3);
	copy_field(L, opts, "config", 3, "path");
	copy_field(L, opts, "env", 3, "env");
	copy_field(L, opts, "persist_to", 3, "persist_to");
	for (i = 0; cluster_opts[i]; i++)
		copy_field(L, opts, cluster_opts[i], 3, cluster_opts[i]);
	lua_call(L, 1, 2);
	if (lua_isnil(L, -2))
		return 2;
	lua_pop(L, 1);
	cfg = lua_gettop(L); /* 2 */
	lua_getfield(L, cfg, "config_path");
	where = lua_tostring(L, -1); /* kept by cfg */
	lua_pop(L, 1);
	lua_getfield(L, cfg, "main");
	main = lua_tostring(L, -1);
	lua_pop(L, 1);
	if (!main)
		return fail(L, "%s: main is not set: it names the Worker's entry file "
			"(e.g. main = \"src/entry.lua\")", where);
	if (load_main(L, where, main) == 2)
		return 2;
	mod = lua_gettop(L); /* 3 */

	/* Every binding's class, before anything is bound. */
	lua_getfield(L, cfg, "bindings");
	nb = (int)lua_rawlen(L, -1);
	for (i = 1; i <= nb; i++) {
		const char *binding, *cls;
		lua_rawgeti(L, mod + 1, i);
		lua_getfield(L, -1, "binding");
		binding = lua_tostring(L, -1);
		lua_getfield(L, -2, "class_name");
		cls = lua_tostring(L, -1);
		lua_getfield(L, mod, cls);
		if (lua_isnil(L, -1))
			return fail(L, "%s: durable_objects binding %s: class %s is not in the table "
				"main %s returns", where, binding, cls, main);
		if (!lua_istable(L, -1))
			return fail(L, "%s: durable_objects binding %s: %s in main %s is a %s, not a "
				"class (a table)", where, binding, cls, main, luaL_typename(L, -1));
		lua_pop(L, 4);
	}

	/* The runtime: vars (with .dev.vars) in env, state in the config's folder. */
	lua_pushvalue(L, MODIDX);
	lua_pushcclosure(L, l_runtime, 1);
	lua_createtable(L, 0, 6);
	copy_field(L, cfg, "vars", -2, "env");
	copy_field(L, cfg, "state_dir", -2, "storage");
	for (i = 0; rt_opts[i]; i++)
		copy_field(L, opts, rt_opts[i], -2, rt_opts[i]);
	if (lua_getfield(L, cfg, "cluster") == LUA_TTABLE) {
		/* The settings in effect (config.cluster, in seconds). */
		copy_field(L, -1, "url", -3, "cluster");
		copy_field(L, -1, "node_addr", -3, "node_addr");
		copy_field(L, -1, "ttl", -3, "cluster_ttl");
		copy_field(L, -1, "grace", -3, "cluster_grace");
		copy_field(L, -1, "timeout", -3, "cluster_timeout");
		copy_field(L, -1, "call_timeout", -3, "cluster_call_timeout");
		copy_field(L, -1, "snapshot_bytes", -3, "cluster_snapshot_bytes");
		copy_field(L, -1, "snapshot_part_bytes", -3, "cluster_snapshot_part_bytes");
	}
	lua_pop(L, 1);
	lua_call(L, 1, 2);
	if (lua_isnil(L, -2))
		return 2; /* nil, message: the cluster cannot be joined */
	lua_pop(L, 1);
	rtidx = lua_gettop(L);
	r = check_ud(L, rtidx, MT_RUNTIME);

	for (i = 1; i <= nb; i++) {
		lua_rawgeti(L, mod + 1, i); /* the binding */
		lua_getfield(L, rtidx, "bind");
		lua_pushvalue(L, rtidx);
		lua_getfield(L, -3, "binding");
		lua_getfield(L, -4, "class_name");
		lua_gettable(L, mod);
		lua_createtable(L, 0, 3);
		copy_field(L, -6, "unique_key", -2, "unique_key");
		copy_field(L, -6, "id_key", -2, "id_key");
		copy_field(L, -6, "class_name", -2, "class_name");
		if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
			/* e.g. the folder is another runtime's: close what was bound */
			const char *msg = luaL_tolstring(L, -1, NULL);
			lua_pushnil(L);
			lua_pushstring(L, msg);
			lua_getfield(L, rtidx, "close");
			lua_pushvalue(L, rtidx);
			lua_call(L, 1, 0);
			return 2;
		}
		lua_pop(L, 1);
	}

	/* rt.default, rt.config, rt.module: kept by the runtime's anchor. */
	lua_createtable(L, 0, 3);
	lua_pushvalue(L, cfg);
	lua_setfield(L, -2, "config");
	lua_pushvalue(L, mod);
	lua_setfield(L, -2, "module");
	lua_createtable(L, 0, 1);
	lua_pushvalue(L, MODIDX);
	lua_pushvalue(L, mod);
	lua_getfield(L, rtidx, "env");
	lua_pushvalue(L, rtidx);
	lua_pushcclosure(L, entry_fetch, 4);
	lua_setfield(L, -2, "fetch");
	lua_setfield(L, -2, "default");
	lua_xmove(L, r->A, 1);
	lua_replace(r->A, ANCHOR_PROJECT);

	/* wrangler's warnings, printed as wrangler prints them. */
	lua_getfield(L, cfg, "warnings");
	for (i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
		fprintf(stderr, "dobj: %s\n", lua_tostring(L, -1));
		lua_pop(L, 1);
	}
	lua_settop(L, rtidx);
	return 1;
}
