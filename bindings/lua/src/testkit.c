/*
 * dobj._testkit: the C half of `require "dobj.test"` (bindings/lua/dobj/test.lua),
 * over the core's test kit (core/include/dobj/testkit.h).  Each function
 * translates values and drives the runtime afterwards; what an eviction, a
 * reset, an alarm run now or a leak is, the core decides (the same for
 * Python's pytest plugin).  Temporary folders are the one thing of its own:
 * Lua has no mkdtemp and no recursive remove.
 */
#include "dobj_lua.h" /* (_GNU_SOURCE: nftw, mkdtemp) */

#include <ftw.h>
#include <stdlib.h>
#include <unistd.h>

static runtime_ud *kit_rt(lua_State *L, int idx)
{
	runtime_ud *r = check_ud(L, idx, MT_RUNTIME);

	if (!r->rt)
		luaL_error(L, DOBJ_MSG_CLOSED);
	return r;
}

static stub_ud *kit_stub(lua_State *L, int idx)
{
	stub_ud *s = check_ud(L, idx, MT_STUB);

	if (!s->stub)
		luaL_error(L, "the stub is closed");
	return s;
}

/* Run what a test-kit call woke or queued (the core does not pump), from
 * this thread, and raise a spawned task's unhandled error as rt:run() does. */
static void settle(lua_State *L, runtime_ud *r)
{
	lua_State *saved = r->from;

	r->from = L;
	dobj_rt_pump(r->rt);
	r->from = saved;
	raise_task_error(L, r);
}

/* A core refusal (misuse: called from inside a handler, a busy object, a
 * closed runtime) raised as a plain Lua error with the core's message as is. */
static int kit_fail(lua_State *L)
{
	return raise_plain(L, dobj_error_last());
}

/* run_in(stub, fn) -> { fn(instance, ctx)'s results, n = count }.  From the
 * main chunk it drives the runtime until fn has run; inside a task it
 * suspends that task only (as stub:fetch). */
static int l_run_in(lua_State *L)
{
	stub_ud *s = kit_stub(L, 1);
	runtime_ud *r = s->r;
	task_coro *c = task_here(L, r);
	dobj_task *t;
	void *fn;

	luaL_checktype(L, 2, LUA_TFUNCTION);
	check_can_wait(L, r, c, "run_in_durable_object()");
	fn = anchor(r, L, 2, SLOT_VALUE);
	if (!fn)
		return luaL_error(L, "out of memory");
	if (dobj_stub_run(&t, s->stub, fn, NULL, NULL) < 0)
		return raise_core_error(L, dobj_error_last());
	lua_settop(L, 1); /* await_call reads the stub's ID at 1 */
	return await_call(L, s, c, t);
}

/* run_alarm(stub) -> whether an alarm ran.  Test code only (not inside the
 * runtime): it drives the runtime until the alarm's run has finished; a
 * failed run is reported and retried as at its time. */
static int l_run_alarm(lua_State *L)
{
	stub_ud *s = kit_stub(L, 1);
	runtime_ud *r = s->r;
	dobj_task *t = NULL;
	int rc;

	rc = dobj_ns_run_alarm(dobj_stub_ns(s->stub), dobj_stub_id(s->stub), &t);
	if (rc < 0)
		return kit_fail(L);
	if (rc > 0) {
		drive_until_done(L, r, t);
		dobj_task_unref(t);
		raise_task_error(L, r);
	}
	lua_pushboolean(L, rc > 0);
	return 1;
}

/* list_ids(ns) -> { dobj.Id, ... } sorted by hex. */
static int l_list_ids(lua_State *L)
{
	namespace_ud *n = check_ud(L, 1, MT_NS);
	dobj_idkey *key;
	dobj_id *ids = NULL;
	size_t i, count = 0;

	if (!n->ns)
		return luaL_error(L, DOBJ_MSG_CLOSED);
	key = dobj_ns_idkey(n->ns);
	if (dobj_ns_list_ids(n->ns, &ids, &count) < 0)
		return kit_fail(L);
	lua_createtable(L, count > INT32_MAX ? 0 : (int)count, 0);
	for (i = 0; i < count; i++) {
		id_ud *d;
		if (!lua_checkstack(L, 2)) {
			dobj_free(ids);
			return luaL_error(L, "out of memory");
		}
		d = push_id(L, key, 0, NULL);
		d->id = ids[i];
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	dobj_free(ids);
	return 1;
}

/* evict(stub) -> whether it was live. */
static int l_evict(lua_State *L)
{
	stub_ud *s = kit_stub(L, 1);
	int rc = dobj_ns_evict(dobj_stub_ns(s->stub), dobj_stub_id(s->stub));

	if (rc < 0)
		return kit_fail(L);
	settle(L, s->r);
	lua_pushboolean(L, rc > 0);
	return 1;
}

/* evict_all(rt) -> how many were evicted. */
static int l_evict_all(lua_State *L)
{
	runtime_ud *r = kit_rt(L, 1);
	int rc = dobj_rt_evict_all(r->rt);

	if (rc < 0)
		return kit_fail(L);
	settle(L, r);
	lua_pushinteger(L, rc);
	return 1;
}

/* abort_all(rt [, reason]) -> how many were aborted; their calls fail with
 * `reason` (workerd's default without one). */
static int l_abort_all(lua_State *L)
{
	runtime_ud *r = kit_rt(L, 1);
	const char *reason = luaL_optstring(L, 2, NULL);
	int rc = dobj_rt_abort_all(r->rt, reason, NULL);

	if (rc < 0)
		return kit_fail(L);
	settle(L, r);
	lua_pushinteger(L, rc);
	return 1;
}

/* reset(rt): every object, its storage and its alarms dropped. */
static int l_reset(lua_State *L)
{
	runtime_ud *r = kit_rt(L, 1);

	if (dobj_rt_reset(r->rt) < 0)
		return kit_fail(L);
	settle(L, r);
	return 0;
}

/* leaks(rt) -> the core's report of what is still open, or nil. */
static int l_leaks(lua_State *L)
{
	runtime_ud *r = kit_rt(L, 1);
	char *report = NULL;

	if (dobj_rt_leaks(r->rt, &report) < 0)
		return kit_fail(L);
	if (report)
		lua_pushstring(L, report);
	else
		lua_pushnil(L);
	dobj_free(report);
	return 1;
}

/* mkdtemp() -> a new empty folder $TMPDIR/dobj-test-XXXXXX (or /tmp). */
static int l_mkdtemp(lua_State *L)
{
	const char *base = getenv("TMPDIR");
	char path[4096];
	int n;

	if (!base || !*base)
		base = "/tmp";
	n = snprintf(path, sizeof(path), "%s/dobj-test-XXXXXX", base);
	if (n < 0 || (size_t)n >= sizeof(path))
		return luaL_error(L, "dobj.test: TMPDIR is too long");
	if (!mkdtemp(path))
		return luaL_error(L, "dobj.test: cannot make a temporary folder in %s: %s", base,
			strerror(errno));
	lua_pushstring(L, path);
	return 1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

/* rmtree(dir): remove a folder made by mkdtemp and everything in it.  Only
 * names made by mkdtemp are accepted: this is not a general `rm -rf`. */
static int l_rmtree(lua_State *L)
{
	const char *dir = check_cstring(L, 1, "the folder");
	const char *slash = strrchr(dir, '/');

	if (!slash || strncmp(slash + 1, "dobj-test-", 10) != 0 || strlen(slash + 11) != 6)
		return luaL_error(L, "dobj.test: %s is not a folder made by dobj.test", dir);
	if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
		return luaL_error(L, "dobj.test: cannot remove %s: %s", dir, strerror(errno));
	return 0;
}

static const luaL_Reg testkit_funcs[] = {
	{ "run_in", l_run_in }, { "run_alarm", l_run_alarm }, { "list_ids", l_list_ids },
	{ "evict", l_evict }, { "evict_all", l_evict_all }, { "abort_all", l_abort_all },
	{ "reset", l_reset }, { "leaks", l_leaks }, { "mkdtemp", l_mkdtemp },
	{ "rmtree", l_rmtree }, { NULL, NULL }
};

/* Set dobj._testkit on the module table at -1. */
void testkit_open(lua_State *L, int mi)
{
	luaL_newlibtable(L, testkit_funcs);
	lua_pushvalue(L, mi);
	luaL_setfuncs(L, testkit_funcs, 1);
	lua_setfield(L, -2, "_testkit");
}
