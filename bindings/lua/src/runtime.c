/* The runtime (dobj.Runtime): creation, bind and bind_native, run, spawn,
 * virtual time, and constructing instances of bound classes. */
#include "dobj_lua.h"

#include <math.h>
#include <stdio.h>

/* ---------------------------------------------------------------- classes */

/* (class, ctx, env) -> instance, under lua_pcall. */
static int construct_tramp(lua_State *L)
{
	lua_getfield(L, 1, "new");
	if (lua_isfunction(L, -1)) {
		lua_pushvalue(L, 2);
		lua_pushvalue(L, 3);
		lua_call(L, 2, 1);
		if (lua_type(L, -1) != LUA_TTABLE && lua_type(L, -1) != LUA_TUSERDATA)
			return luaL_error(L, "%s.new() must return the instance (got %s)",
				lua_tostring(L, 4), luaL_typename(L, -1));
		return 1;
	}
	if (!lua_isnil(L, -1))
		return luaL_error(L, "%s.new must be a function", lua_tostring(L, 4));
	lua_createtable(L, 0, 2);
	lua_pushvalue(L, 2);
	lua_setfield(L, -2, "ctx");
	lua_pushvalue(L, 3);
	lua_setfield(L, -2, "env");
	lua_pushvalue(L, 1);
	lua_setmetatable(L, -2);
	return 1;
}

static int class_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	bound_class *k = data;
	runtime_ud *r = k->r;
	task_coro *h = coro_get(r), *saved_co;
	dobj_obj *saved_obj;
	lua_State *L;
	ctx_ud *x;
	id_ud *d;
	const char *name;
	size_t len;
	void *ctxslot;
	int st;

	if (!h)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	L = h->co;
	lua_pushcfunction(L, construct_tramp);
	push_slot(r, L, SLOT_TO_HOST(k->slot));
	/* ctx: userdata first, then the object it refers to. */
	x = lua_newuserdatauv(L, sizeof(*x), 2);
	x->obj = NULL;
	x->r = r;
	push_mt_rt(r, L, MT_CTX);
	lua_setmetatable(L, -2);
	d = push_id(L, dobj_ns_idkey(dobj_obj_ns(obj)), 1, r);
	d->id = *dobj_obj_id(obj);
	name = dobj_obj_name(obj, &len);
	if (name) {
		lua_pushlstring(L, name, len);
		lua_setiuservalue(L, -2, 1);
	}
	lua_setiuservalue(L, -2, 1);
	x->obj = obj;
	ctxslot = anchor(r, L, -1, SLOT_CTX);
	if (ctxslot)
		dobj_obj_set_ctx(obj, ctxslot);
	lua_pushvalue(r->A, ANCHOR_ENV);
	lua_xmove(r->A, L, 1);
	lua_pushstring(L, dobj_ns_class_name(dobj_obj_ns(obj)));

	saved_obj = r->constructing;
	saved_co = running_coro;
	r->constructing = obj;
	h->state = CORO_CONSTRUCT;
	running_coro = h;
	st = lua_pcall(L, 4, 1, 0);
	running_coro = saved_co;
	r->constructing = saved_obj;
	h->state = CORO_IDLE;
	if (st != LUA_OK) {
		*error = convert_error(r, L, obj, NULL, 1);
		lua_settop(L, 0);
		coro_release(r, h);
		return DOBJ_EUSER;
	}
	*instance = anchor(r, L, -1, SLOT_VALUE);
	lua_settop(L, 0);
	coro_release(r, h);
	return *instance ? DOBJ_OK : dobj_error_set(DOBJ_ENOMEM, "out of memory");
}

/* ---------------------------------------------------------------- runtime */

static runtime_ud *check_rt(lua_State *L, int idx)
{
	runtime_ud *r = check_ud(L, idx, MT_RUNTIME);

	if (!r->rt)
		luaL_error(L, DOBJ_MSG_CLOSED);
	return r;
}

/* ------------------------------------------------------ background errors */

#define ON_ERROR_KEY "dobj.on_error"

/* dobj.on_error([fn]): the handler of failures nobody awaits; returns the
 * previous one (nil: the default, which writes to io.stderr). */
int l_on_error(lua_State *L)
{
	if (!lua_isnoneornil(L, 1))
		luaL_checktype(L, 1, LUA_TFUNCTION);
	lua_settop(L, 1);
	lua_getfield(L, LUA_REGISTRYINDEX, ON_ERROR_KEY);
	lua_pushvalue(L, 1);
	lua_setfield(L, LUA_REGISTRYINDEX, ON_ERROR_KEY);
	return 1;
}

/*
 * The core's error hook: a ctx:wait_until function or a run of an alarm
 * handler failed.  dobj.on_error's handler gets (err, info); without one,
 * one line (and the error's stack) goes to stderr, as workerd logs it.
 * Runs on a thread of its own, made on the anchor thread: the anchor's
 * values live at fixed stack indices, which Lua code running on the anchor
 * itself (a handler that closes the runtime, makes a stub...) would shift.
 */
static void report_background_error(dobj_task *t, void *data)
{
	runtime_ud *r = data;
	lua_State *A = r->A, *L;
	int atop = lua_gettop(A), top, retry = 0, alarm;
	dobj_obj *obj = dobj_task_obj(t); /* NULL: the entry's ctx:wait_until */
	const char *msg = NULL, *cls = obj ? dobj_ns_class_name(dobj_obj_ns(obj)) : NULL;
	void *err = NULL;
	char hex[DOBJ_ID_HEX_LEN];

	if (!lua_checkstack(A, 2))
		return;
	L = lua_newthread(A); /* anchored on A's stack until the end */
	top = lua_gettop(L);
	if (!lua_checkstack(L, 8)) {
		lua_settop(A, atop);
		return;
	}
	dobj_task_result(t, NULL, &msg, &err);
	alarm = dobj_task_alarm_info(t, NULL, &retry) == DOBJ_OK;
	if (obj)
		dobj_id_to_hex(dobj_obj_id(obj), hex);
	lua_getfield(L, LUA_REGISTRYINDEX, ON_ERROR_KEY);
	if (lua_isfunction(L, -1)) {
		if (err)
			push_slot(r, L, err);
		else
			push_core_error(L, msg, obj ? dobj_obj_id(obj) : NULL, obj != NULL);
		lua_createtable(L, 0, 4);
		lua_pushstring(L, alarm ? "alarm" : "wait_until");
		lua_setfield(L, -2, "kind");
		if (obj) {
			lua_pushstring(L, cls);
			lua_setfield(L, -2, "class");
			lua_pushlstring(L, hex, sizeof(hex));
			lua_setfield(L, -2, "id");
		} else {
			lua_pushboolean(L, 1);
			lua_setfield(L, -2, "entry");
		}
		if (alarm) {
			lua_pushinteger(L, retry);
			lua_setfield(L, -2, "retry_count");
		}
		if (lua_pcall(L, 2, 0, 0) == LUA_OK) {
			lua_settop(L, top);
			lua_settop(A, atop);
			return;
		}
		fprintf(stderr, "dobj: the dobj.on_error handler failed: %s\n",
			lua_tostring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
	}
	if (alarm)
		fprintf(stderr, "dobj: alarm() of %s %.*s (run %d of %d) failed: %s\n", cls,
			(int)sizeof(hex), hex, retry + 1, DOBJ_ALARM_MAX_RETRIES + 1, msg ? msg : "error");
	else if (!obj)
		fprintf(stderr, "dobj: ctx:wait_until() of the entry failed: %s\n", msg ? msg : "error");
	else
		fprintf(stderr, "dobj: ctx:wait_until() of %s %.*s failed: %s\n", cls,
			(int)sizeof(hex), hex, msg ? msg : "error");
	if (err) {
		push_slot(r, L, err);
		if (lua_istable(L, -1) && lua_getfield(L, -1, "stack") == LUA_TSTRING)
			fprintf(stderr, "%s\n", lua_tostring(L, -1));
	}
	lua_settop(L, top);
	lua_settop(A, atop);
}

/* The node's log lines (dobj_rt_cluster_set_log: a lost lease...), on
 * stderr as the binding's other warnings. */
static void log_cluster_event(void *data, long long node_id, const char *message)
{
	(void)data;
	(void)node_id;
	fprintf(stderr, "dobj: %s\n", message);
	fflush(stderr);
}

int l_runtime(lua_State *L)
{
	module_state *m = MOD(L);
	runtime_ud *r;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	const char *dir = NULL;
	size_t dir_len = 0;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	int vt = 0, rc;

	lua_settop(L, 1);
	if (!lua_isnil(L, 1))
		luaL_checktype(L, 1, LUA_TTABLE);
	r = lua_newuserdatauv(L, sizeof(*r), 1);
	memset(r, 0, sizeof(*r));
	r->mod = m;
	push_mt(L, MT_RUNTIME);
	lua_setmetatable(L, 2);
	r->A = lua_newthread(L);
	lua_setiuservalue(L, 2, 1);
	lua_newtable(r->A); /* ANCHOR_SLOTS */
	lua_newtable(L);    /* env: a copy of the given values, then namespaces */
	if (!lua_isnil(L, 1)) {
		lua_getfield(L, 1, "env");
		if (!lua_isnil(L, -1)) {
			luaL_checktype(L, -1, LUA_TTABLE);
			lua_pushnil(L);
			while (lua_next(L, -2)) {
				lua_pushvalue(L, -2);
				lua_insert(L, -2);
				lua_rawset(L, 3);
			}
		}
		lua_pop(L, 1);
		lua_getfield(L, 1, "id_seed");
		if (!lua_isnil(L, -1)) {
			int isint;
			r->seed = lua_tointegerx(L, -1, &isint);
			if (!isint)
				return luaL_error(L, "id_seed must be an integer");
			r->seeded = 1;
		}
		lua_pop(L, 1);
		lua_getfield(L, 1, "virtual_time");
		vt = lua_toboolean(L, -1);
		lua_pop(L, 1);
		lua_getfield(L, 1, "storage");
		if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "storage must be a directory name (a string)");
			dir = lua_tolstring(L, -1, &dir_len); /* kept alive by the options table */
		}
		lua_pop(L, 1);
		/* Cluster mode (dobj/cluster.h); the strings stay alive in the
		 * options table. */
		lua_getfield(L, 1, "cluster");
		if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "cluster must be a PostgreSQL URL (a string)");
			co.url = lua_tolstring(L, -1, &co.url_len);
		}
		lua_pop(L, 1);
		lua_getfield(L, 1, "node_addr");
		if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "node_addr must be a string (\"host:port\")");
			co.node_addr = lua_tolstring(L, -1, &co.node_addr_len);
		}
		lua_pop(L, 1);
		/* Seconds; the core checks them (dobj_cluster_opts_check).  The C
		 * fields' 0 means "the default": a grace of 0 s is written < 0
		 * there, a ttl or timeout of 0 s stays a refusal (NaN). */
		if (cluster_field_seconds(L, 1, "cluster_ttl", DOBJ_CLUSTER_TTL, &co, "") < 0 ||
		    cluster_field_seconds(L, 1, "cluster_grace", DOBJ_CLUSTER_GRACE, &co, "") < 0 ||
		    cluster_field_seconds(L, 1, "cluster_timeout", DOBJ_CLUSTER_TIMEOUT, &co, "") < 0 ||
		    cluster_field_seconds(L, 1, "cluster_call_timeout", DOBJ_CLUSTER_CALL_TIMEOUT, &co, "") < 0) {
			lua_pushnil(L);
			lua_pushstring(L, dobj_error_last());
			return 2;
		}
		/* Bytes; the core's rule (dobj_cluster_opts_bytes). */
		if (cluster_field_bytes(L, 1, "cluster_snapshot_bytes", DOBJ_CLUSTER_SNAPSHOT_EVERY,
			&co) < 0 ||
		    cluster_field_bytes(L, 1, "cluster_snapshot_part_bytes", DOBJ_CLUSTER_SNAPSHOT_PART,
			&co) < 0) {
			lua_pushnil(L);
			lua_pushstring(L, dobj_error_last());
			return 2;
		}
		lua_getfield(L, 1, "durability");
		if (!lua_isnil(L, -1)) {
			size_t n = 0;
			const char *d = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
			if (dobj_rt_opts_durability(&o, d, n) < 0)
				return luaL_error(L, "%s", dobj_error_last());
		}
		lua_pop(L, 1);
		lua_getfield(L, 1, "idle_timeout");
		/* The core's one meaning; false is Lua's spelling of "never". */
		if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
			dobj_rt_opts_idle_timeout(&o, HUGE_VAL);
		} else if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TNUMBER)
				return luaL_error(L, "idle_timeout must be a number of seconds or false, got %s",
					luaL_typename(L, -1));
			if (dobj_rt_opts_idle_timeout(&o, lua_tonumber(L, -1)) < 0)
				return luaL_error(L, "%s", dobj_error_last());
		}
		lua_pop(L, 1);
	}
	lua_xmove(L, r->A, 1); /* ANCHOR_ENV */
	lua_pushvalue(L, MODIDX);
	lua_xmove(L, r->A, 1); /* ANCHOR_MODULE */
	lua_newtable(r->A);    /* ANCHOR_NSMAP */
	lua_pushnil(r->A);     /* ANCHOR_PROJECT */

	o.host.data = r;
	o.host.retain = host_retain;
	o.host.release = host_release;
	o.virtual_time = vt;
	o.storage_dir = dir;
	o.storage_dir_len = dir_len;
	o.clock_data = r;
	r->virtual_time = vt;
	rc = dobj_rt_new(&r->rt, &o);
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	if (co.url && (co.url_len == 0 || (rc = dobj_rt_cluster(r->rt, &co)) < 0)) {
		/* An unreachable database is an expected failure: nil, message. */
		if (co.url_len == 0)
			dobj_cluster_opts_check(&co);
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		dobj_rt_free(r->rt);
		r->rt = NULL;
		return 2;
	}
	if (co.url)
		route_codec_install(r);
	dobj_rt_set_error_hook(r->rt, report_background_error, r);
	if (co.url)
		dobj_rt_cluster_set_log(r->rt, log_cluster_event, NULL);
	m->nruntimes++;
	/* The runtime that dobj.sleep drives from the main chunk. */
	lua_getiuservalue(L, MODIDX, UV_DEFAULT_RT);
	lua_pushvalue(L, 2);
	lua_rawseti(L, -2, 1);
	lua_settop(L, 2);
	return 1;
}

static int l_rt_gc(lua_State *L)
{
	runtime_ud *r = check_ud(L, 1, MT_RUNTIME);
	task_coro *c;

	if (!r->rt)
		return 0;
	if (dobj_rt_pumping(r->rt) || (running_coro && running_coro->r == r) ||
	    r->storage_calls) {
		/* In use below (called by hand, getmetatable(rt).__gc, or by the
		 * collector when only a stashed ctx reached it): only close it now.
		 * Setting the metatable again marks it for finalization again, so
		 * the collector calls this once more and frees it later (and
		 * keeps its memory, which the call below still uses, until then).
		 * Lua ignores that at lua_close: in use there, it is left. */
		dobj_rt_clear(r->rt);
		lua_getmetatable(L, 1);
		lua_setmetatable(L, 1);
		return 0;
	}
	r->dying = 1;
	dobj_rt_free(r->rt);
	r->rt = NULL;
	while ((c = r->pool)) {
		r->pool = c->next;
		free(c);
	}
	r->npool = 0;
	/* Stubs may still drop references later: from here releases are no-ops. */
	r->closed = 1;
	free(r->slot_refs);
	free(r->slot_kind);
	r->slot_refs = NULL;
	r->slot_kind = NULL;
	dobj_ser_free(r->ser);
	dobj_de_free(r->de);
	r->ser = NULL;
	r->de = NULL;
	r->mod->nruntimes--;
	return 0;
}

static int l_rt_close(lua_State *L)
{
	runtime_ud *r = check_ud(L, 1, MT_RUNTIME);

	if (r->rt)
		dobj_rt_clear(r->rt);
	return 0;
}

static int l_rt_index(lua_State *L)
{
	runtime_ud *r = check_ud(L, 1, MT_RUNTIME);
	const char *k = lua_tostring(L, 2);

	if (k && strcmp(k, "env") == 0) {
		lua_pushvalue(r->A, ANCHOR_ENV);
		lua_xmove(r->A, L, 1);
		return 1;
	}
	if (k && (strcmp(k, "default") == 0 || strcmp(k, "config") == 0 || strcmp(k, "module") == 0)) {
		lua_pushvalue(r->A, ANCHOR_PROJECT); /* dobj.load's runtimes only */
		lua_xmove(r->A, L, 1);
		if (!lua_istable(L, -1))
			return 1; /* nil */
		lua_pushvalue(L, 2);
		lua_rawget(L, -2);
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_RUNTIME));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

/* The namespace userdata n (on top of the stack) is bound: seed its IDs,
 * put it in env (at envidx) and in the namespace map.  Returns 1 (n). */
static int bind_done(lua_State *L, runtime_ud *r, namespace_ud *n, const char *binding, int envidx)
{
	if (r->seeded)
		dobj_idkey_seed(dobj_ns_idkey(n->ns), (uint64_t)r->seed);
	lua_pushvalue(L, -1);
	lua_xmove(L, r->A, 1);
	lua_rawsetp(r->A, ANCHOR_NSMAP, n->ns);
	/* rt.env is the script's table: raw access, so that a metatable the
	 * script gave it cannot fail the bind half-way or hide a binding. */
	lua_pushstring(L, binding);
	lua_pushvalue(L, -2);
	lua_rawset(L, envidx);
	return 1;
}

/* A new namespace userdata of runtime r (at 1) with no core namespace yet. */
static namespace_ud *push_ns(lua_State *L, runtime_ud *r)
{
	namespace_ud *n = lua_newuserdatauv(L, sizeof(*n), 1);

	n->ns = NULL;
	n->r = r;
	push_mt(L, MT_NS);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	return n;
}

static int l_rt_bind(lua_State *L)
{
	runtime_ud *r = check_rt(L, 1);
	size_t binding_len;
	const char *binding = luaL_checklstring(L, 2, &binding_len);
	const char *ukey = NULL, *cname = NULL, *idkey = NULL;
	size_t uklen = 0, idlen = 0;
	dobj_class klass;
	bound_class *k;
	namespace_ud *n;
	int rc;

	luaL_checktype(L, 3, LUA_TTABLE);
	lua_settop(L, 4);
	if (!lua_isnil(L, 4)) {
		luaL_checktype(L, 4, LUA_TTABLE);
		lua_getfield(L, 4, "unique_key"); /* 5 */
		if (!lua_isnil(L, -1)) {
			luaL_checktype(L, -1, LUA_TSTRING);
			ukey = lua_tolstring(L, -1, &uklen);
		}
		lua_getfield(L, 4, "class_name"); /* 6 */
		cname = lua_tostring(L, -1);
		lua_getfield(L, 4, "id_key"); /* 7 */
		if (!lua_isnil(L, -1)) {
			luaL_checktype(L, -1, LUA_TSTRING);
			idkey = lua_tolstring(L, -1, &idlen);
		}
	}
	lua_settop(L, 7);
	lua_pushvalue(r->A, ANCHOR_ENV);
	lua_xmove(r->A, L, 1); /* 8: env */
	lua_pushstring(L, binding);
	lua_rawget(L, 8);
	if (test_ud(L, -1, MT_NS))
		return luaL_error(L, "a namespace is already bound as %s", binding);
	lua_pop(L, 1);
	if (!cname) {
		lua_getfield(L, 3, "__name");
		cname = lua_tostring(L, -1);
		if (!cname)
			cname = binding;
	}
	/* Every lookup that may run Lua code (__index on the class) before
	 * anything is allocated: an error there leaks nothing. */
	memset(&klass, 0, sizeof(klass));
	klass.name = cname;
	lua_getfield(L, 3, "fetch");
	klass.flags = lua_isnil(L, -1) ? 0 : DOBJ_CLASS_FETCH;
	lua_pop(L, 1);
	lua_getfield(L, 3, "alarm");
	if (!lua_isnil(L, -1))
		klass.flags |= DOBJ_CLASS_ALARM;
	lua_pop(L, 1);
	klass.flags |= websocket_class_flags(L, 3);

	/* The namespace userdata first, then the core namespace it names. */
	n = push_ns(L, r);

	k = calloc(1, sizeof(*k));
	if (!k)
		return luaL_error(L, "out of memory");
	k->h.kind = HOST_CLASS;
	k->h.refs = 1;
	k->r = r;
	lua_pushvalue(L, 3);
	lua_xmove(L, r->A, 1);
	k->slot = slot_new(r, SLOT_VALUE);
	if (!k->slot) {
		free(k);
		return luaL_error(L, "out of memory");
	}
	klass.data = k;
	klass.construct = class_construct;
	klass.step = step_call;
	rc = dobj_ns_new_with_id_key(&n->ns, r->rt, binding, binding_len, ukey, uklen, idkey, idlen,
		&klass);
	host_release(r, k); /* the namespace holds its own reference */
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	return bind_done(L, r, n, binding, 8);
}

LDOBJ_EXPORT int luaopen_dobj(lua_State *L);

/*
 * Keep dobj.so mapped for the life of the process once a native library is
 * loaded: the core's registry of libraries is process-wide, and the
 * libraries keep pointers to the core's API table.  Without this, Lua's
 * lua_close() unloads the module (dlclose) while they stay loaded.
 */
static void pin_module(void)
{
	static int pinned;
	Dl_info info;

	if (pinned)
		return;
	if (dladdr((void *)&luaopen_dobj, &info) && info.dli_fname &&
	    dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE))
		pinned = 1;
}

/*
 * rt:bind_native(name, path, class_name [, { unique_key = ... }]): load a
 * shared library of native classes (dobj/native.h) and bind one of them.
 * Loading errors (no file, no init symbol, no such class, a bad
 * registration) raise the core's message.
 */
static int l_rt_bind_native(lua_State *L)
{
	runtime_ud *r = check_rt(L, 1);
	size_t binding_len;
	const char *binding = luaL_checklstring(L, 2, &binding_len);
	const char *path = check_cstring(L, 3, "the library path");
	const char *cname = check_cstring(L, 4, "the class name");
	const char *ukey = NULL;
	size_t uklen = 0;
	dobj_native_class *nc;
	dobj_class klass;
	namespace_ud *n;
	int rc;

	lua_settop(L, 5);
	if (!lua_isnil(L, 5)) {
		luaL_checktype(L, 5, LUA_TTABLE);
		lua_getfield(L, 5, "unique_key");
		if (!lua_isnil(L, -1)) {
			luaL_checktype(L, -1, LUA_TSTRING);
			ukey = lua_tolstring(L, -1, &uklen);
		}
	}
	lua_settop(L, 6);
	lua_pushvalue(r->A, ANCHOR_ENV);
	lua_xmove(r->A, L, 1); /* 7: env */
	lua_pushstring(L, binding);
	lua_rawget(L, 7);
	if (test_ud(L, -1, MT_NS))
		return luaL_error(L, "a namespace is already bound as %s", binding);
	lua_pop(L, 1);
	if (dobj_native_load(&nc, path, cname) < 0)
		return raise_plain(L, dobj_error_last());
	pin_module();
	n = push_ns(L, r);
	dobj_native_class_of(nc, &klass);
	rc = dobj_ns_new(&n->ns, r->rt, binding, binding_len, ukey, uklen, &klass);
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	return bind_done(L, r, n, binding, 7);
}

static int l_rt_spawn(lua_State *L)
{
	runtime_ud *r = check_rt(L, 1);

	spawn_fn(L, r, NULL, DOBJ_TASK_FREE, 2, lua_gettop(L) - 2, NULL, NULL, NULL);
	return 0;
}

/* Raise the first error a spawned or background task left unhandled. */
void raise_task_error(lua_State *L, runtime_ud *r)
{
	if (r->error_slot) {
		int s = r->error_slot;
		r->error_slot = 0;
		push_slot(r, L, SLOT_TO_HOST(s));
		slot_unref(r, s);
		lua_error(L);
	}
}

static int run_until_idle(dobj_rt *rt, double ms)
{
	(void)ms;
	return dobj_rt_run(rt, NULL, NULL);
}

static int process_ready(dobj_rt *rt, double ms)
{
	(void)ms;
	return dobj_rt_process(rt);
}

/* rt:run(), rt:process() and rt:advance(): drive the runtime from outside
 * it.  The core refuses them from inside a handler too; checking first keeps
 * r->from untouched and names the Lua method.  What the handlers leave for
 * the caller goes to this thread (r->from), and the first task error left
 * unhandled is raised here. */
static int drive(lua_State *L, const char *method, int (*fn)(dobj_rt *, double), double ms)
{
	runtime_ud *r = check_rt(L, 1);
	lua_State *saved;
	int rc;

	if (running_coro && running_coro->r == r)
		return luaL_error(L, "rt:%s() cannot be called from inside the runtime", method);
	saved = r->from;
	r->from = L;
	rc = fn(r->rt, ms);
	r->from = saved;
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	raise_task_error(L, r);
	return 0;
}

static int l_rt_run(lua_State *L)
{
	return drive(L, "run", run_until_idle, 0);
}

static int drain_background(dobj_rt *rt, double ms)
{
	return dobj_rt_background_drain(rt, ms);
}

/* rt:drain_background([seconds]): run until no ctx:wait_until work (the
 * entry's and the objects') is left, at most `seconds` (none: no limit).
 * true, or nil and a message naming how many are left (they go on if the
 * runtime runs again). */
static int l_rt_drain_background(lua_State *L)
{
	double s = luaL_optnumber(L, 2, HUGE_VAL);
	runtime_ud *r = check_rt(L, 1);
	int left;

	if (!(s >= 0)) /* the core refuses it too; a clearer message here */
		return luaL_argerror(L, 2, "a number of seconds >= 0 expected");
	drive(L, "drain_background", drain_background, s * 1e3);
	left = (int)dobj_rt_background_count(r->rt);
	if (!left) {
		lua_pushboolean(L, 1);
		return 1;
	}
	lua_pushnil(L);
	lua_pushfstring(L, "drain_background(): %d ctx:wait_until() tasks still pending", left);
	return 2;
}

/* rt:fd(): the runtime's pollable file descriptor, for a loop of your own
 * (cqueues, luv, poll): readable when work is ready or a timer is due; then
 * call rt:process().  The same number for the runtime's life; do not close it. */
static int l_rt_fd(lua_State *L)
{
	runtime_ud *r = check_rt(L, 1);
	int fd = dobj_rt_fd(r->rt);

	if (fd < 0)
		return luaL_error(L, "%s", dobj_error_last());
	lua_pushinteger(L, fd);
	return 1;
}

/* rt:process(): fire the timers that are due and run what is ready, without
 * waiting (what a loop calls when rt:fd() is readable). */
static int l_rt_process(lua_State *L)
{
	return drive(L, "process", process_ready, 0);
}

/* rt:now(): ms since the epoch by the runtime's clock (virtual time included). */
static int l_rt_now(lua_State *L)
{
	runtime_ud *r = check_rt(L, 1);

	push_ms(L, dobj_rt_wall_ms(r->rt));
	return 1;
}

/* rt:advance(seconds): virtual time only; fires what falls due. */
static int l_rt_advance(lua_State *L)
{
	double ms;

	check_rt(L, 1);
	ms = luaL_checknumber(L, 2) * 1e3;
	return drive(L, "advance", dobj_rt_advance, ms);
}

static int l_rt_tostring(lua_State *L)
{
	runtime_ud *r = check_ud(L, 1, MT_RUNTIME);

	lua_pushfstring(L, "dobj.Runtime(%s)", r->rt ? (dobj_rt_closed(r->rt) ? "closed" : "open") : "freed");
	return 1;
}

/* rt:closed(): whether the runtime was closed (by rt:close(), a handler, or
 * its collection); a serving loop's condition:
 * `while not rt:closed() do dobj.sleep(60) end`. */
static int l_rt_closed(lua_State *L)
{
	runtime_ud *r = check_ud(L, 1, MT_RUNTIME);

	lua_pushboolean(L, !r->rt || dobj_rt_closed(r->rt));
	return 1;
}

/* rt:node_id(): the node id in the cluster, or nil outside cluster mode. */
static int l_rt_node_id(lua_State *L)
{
	runtime_ud *r = check_ud(L, 1, MT_RUNTIME);
	long long id = r->rt ? dobj_rt_cluster_node(r->rt) : 0;

	if (id)
		lua_pushinteger(L, (lua_Integer)id);
	else
		lua_pushnil(L);
	return 1;
}

/* rt:node_addr(): where other nodes reach this one (the port the system
 * chose for port 0), or nil when it is not a reachable node. */
static int l_rt_node_addr(lua_State *L)
{
	runtime_ud *r = check_ud(L, 1, MT_RUNTIME);
	const char *a = r->rt ? dobj_rt_cluster_addr(r->rt) : NULL;

	if (a)
		lua_pushstring(L, a);
	else
		lua_pushnil(L);
	return 1;
}

static const luaL_Reg rt_meta[] = {
	{ "__index", l_rt_index }, { "__gc", l_rt_gc }, { "__close", l_rt_close },
	{ "__tostring", l_rt_tostring }, { NULL, NULL }
};
static const luaL_Reg rt_methods[] = {
	{ "bind", l_rt_bind }, { "bind_native", l_rt_bind_native }, { "spawn", l_rt_spawn }, { "run", l_rt_run },
	{ "drain_background", l_rt_drain_background },
	{ "close", l_rt_close }, { "closed", l_rt_closed }, { "now", l_rt_now }, { "advance", l_rt_advance },
	{ "fd", l_rt_fd }, { "process", l_rt_process }, { "node_id", l_rt_node_id },
	{ "node_addr", l_rt_node_addr }, { NULL, NULL }
};

void runtime_open(lua_State *L, int mi)
{
	register_type(L, mi, MT_RUNTIME, rt_meta, rt_methods);
}
