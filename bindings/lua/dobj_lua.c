/*
 * dobj.so — the Lua 5.4 binding of the dobj core (`local dobj = require "dobj"`).
 *
 * The core owns the semantics; this file translates values and drives the
 * core's scheduler with Lua coroutines.  The shape follows liolib.c, lua-cjson
 * and luv: one dotted metatable per type, userdata created before the C
 * resource it owns, `__gc`/`__close`/`__tostring`/`__eq` where they mean
 * something.
 *
 * How Lua values are held by the core (the "host values")
 * --------------------------------------------------------
 * The core stores opaque `void *` host values (requests, responses, errors,
 * instances, classes, task states) and calls retain/release on them.  A host
 * value is one of:
 *
 *   - a *slot*: an odd integer `(n << 1) | 1` naming entry n of the runtime's
 *     anchor table, with a reference count kept in C.  The anchor table lives
 *     on the stack of a private, never-resumed thread (`A`) that is the user
 *     value of the runtime userdata.  Nothing is kept in the registry, so the
 *     cycle instance -> env -> namespace -> runtime -> anchors -> instance is
 *     an ordinary Lua cycle that the collector frees when the script drops the
 *     runtime, its namespaces and stubs.
 *   - a pointer to a small C struct (`lco`: a pooled coroutine running a task;
 *     `lclass`: a bound class), told apart from slots by the low bit.
 *
 * Errors never longjmp across core frames: handlers and tasks run in
 * coroutines under lua_resume, constructors and error conversion under
 * lua_pcall, and a failure becomes a core code plus an error value that the
 * caller re-raises once the core has returned.
 *
 * Scheduling: a step function resumes the task's coroutine.  Inside a task,
 * `stub:fetch`, `dobj.sleep` and `ctx:block_concurrency_while` arrange to be
 * woken (a done callback or a timer) and yield with a continuation
 * (lua_yieldk); from the main chunk they drive the runtime (dobj_rt_pump /
 * dobj_rt_run) until their own result is ready.  Finished coroutines go back
 * to a per-runtime pool, so a round trip allocates no thread.
 */
#define LUA_LIB
#include <errno.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dobj.h"

#if defined(__GNUC__)
#define LDOBJ_EXPORT __attribute__((visibility("default")))
#else
#define LDOBJ_EXPORT
#endif

/* ------------------------------------------------------------ module state */

/* Metatables, by index: the module state keeps each as a user value (and a
 * raw pointer for cheap type checks); method tables follow at MT_COUNT + i. */
enum {
	MT_RUNTIME = 1,
	MT_NS,
	MT_ID,
	MT_STUB,
	MT_CTX,
	MT_REQUEST,
	MT_RESPONSE,
	MT_ERROR,
	MT_COUNT = MT_ERROR
};
#define UV_METHODS(i) (MT_COUNT + (i))
#define UV_DEFAULT_RT (2 * MT_COUNT + 1) /* weak table { runtime } */
#define UV_COUNT UV_DEFAULT_RT

static const char *const mt_names[MT_COUNT + 1] = {
	NULL, "dobj.Runtime", "dobj.Namespace", "dobj.Id", "dobj.Stub",
	"dobj.Ctx", "dobj.Request", "dobj.Response", "dobj.Error",
};

typedef struct lmod {
	const void *mt[MT_COUNT + 1];
	int nruntimes; /* live runtimes (not yet collected): for tests */
} lmod;

/* Every function of the module has the module state as upvalue 1. */
#define MODIDX lua_upvalueindex(1)
#define MOD(L) ((lmod *)lua_touserdata((L), MODIDX))

static void push_mt(lua_State *L, int which)
{
	lua_getiuservalue(L, MODIDX, which);
}

static void *test_ud(lua_State *L, int idx, int which)
{
	void *p = lua_touserdata(L, idx);

	if (p && lua_getmetatable(L, idx)) {
		int ok = lua_topointer(L, -1) == MOD(L)->mt[which];
		lua_pop(L, 1);
		if (ok)
			return p;
	}
	return NULL;
}

static void *check_ud(lua_State *L, int idx, int which)
{
	void *p = test_ud(L, idx, which);

	if (!p)
		luaL_typeerror(L, idx, mt_names[which]);
	return p;
}

static int is_table_of(lua_State *L, int idx, const void *mt)
{
	int ok = 0;

	if (lua_type(L, idx) == LUA_TTABLE && lua_getmetatable(L, idx)) {
		ok = lua_topointer(L, -1) == mt;
		lua_pop(L, 1);
	}
	return ok;
}

/* Raise `msg` verbatim (no "file:line:" prefix): workerd's messages. */
static int raise_plain(lua_State *L, const char *msg)
{
	lua_pushstring(L, msg);
	return lua_error(L);
}

/* ------------------------------------------------------------------- types */

/* Stack of the anchor thread A. */
enum { A_ANCHORS = 1, A_ENV = 2, A_MOD = 3 };

/* Kinds of slot (what release must do besides unanchoring). */
enum { SK_VALUE = 0, SK_CTX = 1, SK_THREAD = 2 };

/* Kinds of C host struct. */
enum { HK_CO = 2, HK_CLASS = 4 };

typedef struct hobj {
	int kind;
	int refs;
} hobj;

struct lco;

typedef struct lrt {
	dobj_rt *rt;
	lua_State *A;        /* anchor thread: [anchors, env, module state] */
	lua_State *from;     /* thread driving the runtime now (for lua_resume) */
	lmod *mod;
	int *refc;           /* per slot: > 0 references; free slots: -(next free) */
	unsigned char *skind;
	int nslots, capslots, freehead;
	struct lco *pool;    /* idle coroutines */
	int npool;
	int dying;           /* __gc in progress: do not pool */
	int closed;          /* core runtime freed: releases are no-ops */
	int error_slot;      /* first unhandled error of a spawned/background task */
	dobj_obj *constructing;
	int seeded;
	lua_Integer seed;
} lrt;

/* A coroutine that runs tasks; pooled when its function returns. */
enum { ST_IDLE, ST_START, ST_RUN, ST_WAIT, ST_SLEEP, ST_KILLED, ST_CONSTRUCT };

typedef struct lco {
	hobj h;
	lrt *r;
	lua_State *co;
	int slot;            /* anchors the thread */
	int state;
	dobj_task *task;     /* the task it runs (a reference) */
	dobj_task *wait;     /* the task it waits for (a reference) */
	dobj_timer *timer;   /* dobj.sleep */
	struct lco *next;
} lco;

typedef struct lclass {
	hobj h;
	lrt *r;
	int slot;            /* the class table */
} lclass;

typedef struct lns {
	dobj_ns *ns;
	lrt *r;
} lns; /* user value 1: the runtime userdata */

typedef struct lid {
	dobj_id id;
	const dobj_idkey *key; /* namespace that made or checked it (identity only) */
} lid; /* user value 1: the name (string) or nil */

typedef struct lstub {
	dobj_stub *stub;
	lrt *r;
} lstub; /* user values: 1 namespace userdata, 2 id userdata */

typedef struct lctx {
	dobj_obj *obj;       /* NULL once the instance is gone */
	lrt *r;
} lctx; /* user value 1: the id userdata */

/* The coroutine whose step is running (innermost), on this thread. */
static _Thread_local lco *cur_co;

#define POOL_MAX 256
#define ISSLOT(v) (((uintptr_t)(v)) & 1u)
#define SLOTV(s) ((void *)((((uintptr_t)(unsigned)(s)) << 1) | 1u))
#define SLOTI(v) ((int)(((uintptr_t)(v)) >> 1))

/* ------------------------------------------------------------------ slots */

/* Anchor the value on top of A (popped); returns the slot, 0 if out of memory. */
static int slot_new(lrt *r, int kind)
{
	int s;

	if (r->freehead) {
		s = r->freehead;
		r->freehead = -r->refc[s];
	} else {
		if (r->nslots + 1 >= r->capslots) {
			int cap = r->capslots ? 2 * r->capslots : 64;
			int *rc = realloc(r->refc, (size_t)cap * sizeof(*rc));
			unsigned char *k;
			if (!rc) {
				lua_pop(r->A, 1);
				return 0;
			}
			r->refc = rc;
			k = realloc(r->skind, (size_t)cap);
			if (!k) {
				lua_pop(r->A, 1);
				return 0;
			}
			r->skind = k;
			r->capslots = cap;
		}
		s = ++r->nslots;
	}
	r->refc[s] = 1;
	r->skind[s] = (unsigned char)kind;
	lua_rawseti(r->A, A_ANCHORS, s);
	return s;
}

static void *anchor(lrt *r, lua_State *L, int idx, int kind)
{
	int s;

	lua_pushvalue(L, idx);
	lua_xmove(L, r->A, 1);
	s = slot_new(r, kind);
	return s ? SLOTV(s) : NULL;
}

static void push_slot(lrt *r, lua_State *L, void *v)
{
	if (!v || !ISSLOT(v)) {
		lua_pushnil(L);
		return;
	}
	lua_rawgeti(r->A, A_ANCHORS, SLOTI(v));
	lua_xmove(r->A, L, 1);
}

static void slot_unref(lrt *r, int s)
{
	lua_State *A = r->A;

	if (r->closed || s <= 0 || s > r->nslots || r->refc[s] <= 0)
		return;
	if (--r->refc[s] > 0)
		return;
	if (r->skind[s] == SK_CTX) {
		/* The instance is gone: a ctx kept by the script must not reach a
		 * freed object. */
		lctx *x;
		lua_rawgeti(A, A_ANCHORS, s);
		x = lua_touserdata(A, -1);
		if (x)
			x->obj = NULL;
		lua_pop(A, 1);
	}
	lua_pushnil(A);
	lua_rawseti(A, A_ANCHORS, s);
	r->refc[s] = -r->freehead;
	r->freehead = s;
}

static void push_mt_r(lrt *r, lua_State *L, int which)
{
	lua_getiuservalue(r->A, A_MOD, which);
	lua_xmove(r->A, L, 1);
}

/* ------------------------------------------------------------- coroutines */

static lco *lco_get(lrt *r)
{
	lco *c = r->pool;

	if (c) {
		r->pool = c->next;
		r->npool--;
		c->next = NULL;
		c->h.refs = 1;
		return c;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->h.kind = HK_CO;
	c->h.refs = 1;
	c->r = r;
	c->co = lua_newthread(r->A);
	c->slot = slot_new(r, SK_THREAD);
	if (!c->slot) {
		free(c);
		return NULL;
	}
	return c;
}

static void lco_release(lrt *r, lco *c)
{
	if (--c->h.refs > 0)
		return;
	if (c->timer)
		dobj_timer_cancel(r->rt, c->timer); /* its callback clears c->timer */
	if (c->wait) {
		dobj_task *w = c->wait;
		c->wait = NULL;
		dobj_task_on_done(w, NULL, NULL);
		dobj_task_unref(w);
	}
	if (c->task) {
		dobj_task *t = c->task;
		c->task = NULL;
		dobj_task_unref(t);
	}
	if (!r->closed && c->state == ST_START)
		lua_settop(c->co, 0); /* spawned but never run */
	c->state = ST_IDLE;
	if (!r->closed && !r->dying && r->npool < POOL_MAX && lua_status(c->co) == LUA_OK &&
	    lua_gettop(c->co) == 0) {
		c->next = r->pool;
		r->pool = c;
		r->npool++;
		return;
	}
	/* Suspended (its task was aborted) or errored: let the collector have it. */
	slot_unref(r, c->slot);
	free(c);
}

/* ------------------------------------------------------------- host values */

static void h_retain(void *data, void *v)
{
	lrt *r = data;

	if (!v)
		return;
	if (ISSLOT(v)) {
		if (!r->closed && r->refc[SLOTI(v)] > 0)
			r->refc[SLOTI(v)]++;
	} else {
		((hobj *)v)->refs++;
	}
}

static void h_release(void *data, void *v)
{
	lrt *r = data;
	hobj *h = v;

	if (!v)
		return;
	if (ISSLOT(v)) {
		slot_unref(r, SLOTI(v));
	} else if (h->kind == HK_CO) {
		lco_release(r, (lco *)h);
	} else if (h->kind == HK_CLASS) {
		lclass *k = (lclass *)h;
		if (--h->refs > 0)
			return;
		slot_unref(r, k->slot);
		free(k);
	}
}

/* ------------------------------------------------------------------ errors */

/*
 * Build the error value a caller sees: (value, id hex or nil, thread for a
 * traceback or nil, Error metatable, remote flag) -> a new table.  Tables
 * are copied field by field (custom properties travel, like workerd's
 * serialised errors); other values become { message = tostring(value),
 * value = value }.  Runs under lua_pcall: __tostring may be user code.
 */
static int make_error(lua_State *L)
{
	int t;

	lua_settop(L, 5);
	lua_newtable(L);
	t = lua_gettop(L);
	if (lua_type(L, 1) == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, 1)) {
			lua_pushvalue(L, -2);
			lua_insert(L, -2);
			lua_rawset(L, t);
		}
		lua_getfield(L, 1, "message");
		if (lua_type(L, -1) != LUA_TSTRING) {
			lua_pop(L, 1);
			luaL_tolstring(L, 1, NULL);
		}
	} else if (lua_type(L, 1) == LUA_TSTRING) {
		lua_pushvalue(L, 1);
	} else {
		lua_pushvalue(L, 1);
		lua_setfield(L, t, "value");
		luaL_tolstring(L, 1, NULL);
	}
	lua_setfield(L, t, "message");
	if (lua_toboolean(L, 5)) {
		lua_pushboolean(L, 1);
		lua_setfield(L, t, "remote");
	}
	if (!lua_isnil(L, 2)) {
		lua_pushvalue(L, 2);
		lua_setfield(L, t, "durable_object_id");
	}
	if (lua_type(L, 3) == LUA_TLIGHTUSERDATA) {
		lua_getfield(L, t, "stack");
		if (lua_isnil(L, -1)) {
			lua_getfield(L, t, "message");
			luaL_traceback(L, (lua_State *)lua_touserdata(L, 3), lua_tostring(L, -1), 0);
			lua_setfield(L, t, "stack");
			lua_pop(L, 1);
		}
		lua_pop(L, 1);
	}
	lua_pushvalue(L, 4);
	lua_setmetatable(L, t);
	lua_settop(L, t);
	return 1;
}

/*
 * Convert the error value on top of `src` (popped) into a remote error for
 * `obj` (may be NULL), anchored in a slot.  Sets the thread's last core error
 * to (DOBJ_EUSER, message).  `tb` (may be NULL) is the dead coroutine whose
 * traceback is attached.  Returns the slot, or NULL if even that failed (the
 * last error then says why).
 */
static void *convert_error(lrt *r, lua_State *src, dobj_obj *obj, lua_State *tb, int remote)
{
	lco *h = lco_get(r);
	lua_State *L;
	void *slot = NULL;

	if (!h) {
		lua_pop(src, 1);
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	L = h->co;
	lua_pushcfunction(L, make_error);
	lua_xmove(src, L, 1);
	if (obj) {
		char hex[DOBJ_ID_HEX_LEN];
		dobj_id_to_hex(dobj_obj_id(obj), hex);
		lua_pushlstring(L, hex, sizeof(hex));
	} else {
		lua_pushnil(L);
	}
	if (tb)
		lua_pushlightuserdata(L, tb);
	else
		lua_pushnil(L);
	push_mt_r(r, L, MT_ERROR);
	lua_pushboolean(L, remote);
	if (lua_pcall(L, 5, 1, 0) == LUA_OK) {
		lua_getfield(L, -1, "message");
		dobj_error_set(DOBJ_EUSER, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
		lua_pop(L, 1);
		slot = anchor(r, L, -1, SK_VALUE);
	} else {
		dobj_error_set(DOBJ_EUSER, "error while reporting an error: %s",
			lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
	}
	lua_settop(L, 0);
	lco_release(r, h);
	return slot;
}

/* Push a dobj.Error for a core failure (no host error value). */
static void push_core_error(lua_State *L, const char *msg, const dobj_id *id, int remote)
{
	lua_createtable(L, 0, 3);
	lua_pushstring(L, msg ? msg : "error");
	lua_setfield(L, -2, "message");
	if (remote) {
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "remote");
	}
	if (id) {
		char hex[DOBJ_ID_HEX_LEN];
		dobj_id_to_hex(id, hex);
		lua_pushlstring(L, hex, sizeof(hex));
		lua_setfield(L, -2, "durable_object_id");
	}
	push_mt(L, MT_ERROR);
	lua_setmetatable(L, -2);
}

static int raise_core_error(lua_State *L, const char *msg)
{
	push_core_error(L, msg, NULL, 0);
	return lua_error(L);
}

/* ------------------------------------------------------------------- tasks */

static int step_co(dobj_task *t, void *data);

/* Remember the first unhandled error of a spawned or background task. */
static void keep_task_error(lrt *r, void *slot)
{
	if (slot && !r->error_slot && ISSLOT(slot)) {
		r->refc[SLOTI(slot)]++;
		r->error_slot = SLOTI(slot);
	}
}

/* The coroutine finished: hand its results to the core. */
static int finish_ok(lrt *r, dobj_task *t, lco *c, int nres)
{
	lua_State *L = c->co;

	switch (dobj_task_kind_of(t)) {
	case DOBJ_TASK_CALL:
		/* The trampoline checked that the first result is a response. */
		dobj_task_return(t, anchor(r, L, -nres, SK_VALUE));
		break;
	case DOBJ_TASK_BLOCK: {
		int i, base = lua_gettop(L) - nres;
		lua_createtable(L, nres, 1);
		for (i = 1; i <= nres; i++) {
			lua_pushvalue(L, base + i);
			lua_rawseti(L, -2, i);
		}
		lua_pushinteger(L, nres);
		lua_setfield(L, -2, "n");
		dobj_task_return(t, anchor(r, L, -1, SK_VALUE));
		break;
	}
	default:
		dobj_task_return(t, NULL);
		break;
	}
	lua_settop(L, 0);
	return DOBJ_OK;
}

/* Resume the task's coroutine with `nargs` values on its stack. */
static int run_co(lrt *r, dobj_task *t, lco *c, int nargs)
{
	lco *saved = cur_co;
	int st, nres = 0;

	c->state = ST_RUN;
	cur_co = c;
	st = lua_resume(c->co, r->from, nargs, &nres);
	cur_co = saved;
	if (st == LUA_YIELD) {
		lua_pop(c->co, nres);
		switch (c->state) {
		case ST_RUN:
			/* A bare coroutine.yield(): let other work run, then continue. */
			dobj_task_wake(t);
			return DOBJ_PENDING;
		case ST_KILLED:
			/* ctx:abort() from inside: the task has already failed. */
			return DOBJ_OK;
		default:
			return DOBJ_PENDING;
		}
	}
	if (st == LUA_OK)
		return finish_ok(r, t, c, nres);
	{
		dobj_task_kind kind = dobj_task_kind_of(t);
		dobj_obj *obj = dobj_task_obj(t);
		void *err;

		if (kind == DOBJ_TASK_FREE) {
			/* A spawned task's error is the script's own: keep it as is. */
			const char *m = lua_tostring(c->co, -1);
			dobj_error_set(DOBJ_EUSER, "%s", m ? m : "error in a spawned task");
			err = anchor(r, c->co, -1, SK_VALUE);
			lua_pop(c->co, 1);
		} else {
			err = convert_error(r, c->co, obj, c->co, 1);
		}
		if (kind == DOBJ_TASK_FREE || kind == DOBJ_TASK_BACKGROUND)
			keep_task_error(r, err);
		dobj_task_raise(t, DOBJ_EUSER, dobj_error_last(), err);
	}
	return DOBJ_OK;
}

/*
 * The body of a fetch handler's coroutine: (instance, request, class) ->
 * response.  Running the lookup inside the coroutine keeps __index
 * metamethods and the result check protected.
 */
static int fetch_tramp_k(lua_State *L, int status, lua_KContext ctx)
{
	lclass *k = (lclass *)ctx;
	int n = lua_gettop(L) - 3;

	(void)status;
	if (n < 1 || !is_table_of(L, 4, k->r->mod->mt[MT_RESPONSE])) {
		lua_pushfstring(L, "%s:fetch() must return a dobj.response, got %s",
			dobj_ns_class_name(dobj_obj_ns(dobj_task_obj(cur_co->task))),
			n < 1 ? "no value" : luaL_typename(L, 4));
		return lua_error(L);
	}
	lua_settop(L, 4);
	return 1;
}

static int fetch_tramp(lua_State *L)
{
	lclass *k = lua_touserdata(L, 3);

	lua_getfield(L, 1, "fetch");
	if (lua_type(L, -1) != LUA_TFUNCTION) {
		lua_pop(L, 1);
		push_slot(k->r, L, SLOTV(k->slot));
		lua_getfield(L, -1, "fetch");
		lua_remove(L, -2);
		if (lua_type(L, -1) != LUA_TFUNCTION)
			return raise_plain(L, DOBJ_MSG_NO_FETCH);
	}
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_callk(L, 2, LUA_MULTRET, (lua_KContext)k, fetch_tramp_k);
	return fetch_tramp_k(L, LUA_OK, (lua_KContext)k);
}

/* Step of a CALL task: start the handler on the first step, resume later. */
static int step_call(dobj_task *t, void *data)
{
	lclass *k = data;
	lrt *r = k->r;
	lco *c = dobj_task_host(t);
	lua_State *L;

	if (c)
		return run_co(r, t, c, 0);
	c = lco_get(r);
	if (!c)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	dobj_task_set_host(t, c);
	dobj_task_ref(t);
	c->task = t;
	L = c->co;
	lua_pushcfunction(L, fetch_tramp);
	push_slot(r, L, dobj_obj_instance(dobj_task_obj(t)));
	push_slot(r, L, dobj_task_request(t));
	lua_pushlightuserdata(L, k);
	return run_co(r, t, c, 3);
}

/* Step of a task started by the binding (spawn, block, wait_until). */
static int step_co(dobj_task *t, void *data)
{
	lrt *r = data;
	lco *c = dobj_task_host(t);
	int nargs = c->state == ST_START ? lua_gettop(c->co) - 1 : 0;

	return run_co(r, t, c, nargs);
}

/* Done callback of an awaited task: wake the waiting task. */
static void wake_waiter(dobj_task *done, void *data)
{
	lco *c = data;

	(void)done;
	if (c->task)
		dobj_task_wake(c->task);
}

static int until_done(void *arg)
{
	return dobj_task_done((dobj_task *)arg);
}

/*
 * Start a coroutine task running the function at `fidx` with the `nargs`
 * values after it.  On success returns the lco (its task is c->task).
 * Raises on failure (after the core has returned).
 */
static lco *spawn_fn(lua_State *L, lrt *r, dobj_obj *obj, dobj_task_kind kind, int fidx,
	int nargs, dobj_done_fn done, void *done_data, dobj_task **out)
{
	lco *c;
	dobj_task *t;
	int rc, i;

	luaL_checktype(L, fidx, LUA_TFUNCTION);
	c = lco_get(r);
	if (!c)
		luaL_error(L, "out of memory");
	luaL_checkstack(c->co, nargs + 2, "too many arguments");
	for (i = 0; i <= nargs; i++)
		lua_pushvalue(L, fidx + i);
	lua_xmove(L, c->co, nargs + 1);
	c->state = ST_START;
	rc = dobj_task_spawn(&t, r->rt, obj, kind, step_co, r, c, done, done_data);
	if (rc < 0) {
		/* The core released c. */
		raise_core_error(L, dobj_error_last());
		return NULL;
	}
	c->task = t; /* the lco keeps the spawn's reference */
	if (out) {
		dobj_task_ref(t);
		*out = t;
	}
	return c;
}

/* In a task of runtime r, on its own coroutine? */
static lco *task_here(lua_State *L, lrt *r)
{
	lco *c = cur_co;

	return (c && c->co == L && c->task && c->state == ST_RUN && (!r || c->r == r)) ? c : NULL;
}

/* --------------------------------------------------------------------- IDs */

static lid *push_id(lua_State *L, const dobj_idkey *key, int mt_from_rt, lrt *r)
{
	lid *d = lua_newuserdatauv(L, sizeof(*d), 1);

	memset(d, 0, sizeof(*d));
	d->key = key;
	if (mt_from_rt)
		push_mt_r(r, L, MT_ID);
	else
		push_mt(L, MT_ID);
	lua_setmetatable(L, -2);
	return d;
}

static int l_id_tostring(lua_State *L)
{
	lid *d = check_ud(L, 1, MT_ID);
	char hex[DOBJ_ID_HEX_LEN];

	dobj_id_to_hex(&d->id, hex);
	lua_pushlstring(L, hex, sizeof(hex));
	return 1;
}

static int l_id_eq(lua_State *L)
{
	lid *a = test_ud(L, 1, MT_ID), *b = test_ud(L, 2, MT_ID);

	lua_pushboolean(L, a && b && dobj_id_equal(&a->id, &b->id));
	return 1;
}

static int l_id_equals(lua_State *L)
{
	lid *a = check_ud(L, 1, MT_ID), *b = test_ud(L, 2, MT_ID);

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

static lns *check_ns(lua_State *L, int idx)
{
	lns *n = check_ud(L, idx, MT_NS);

	if (!n->ns)
		luaL_error(L, "the namespace is not bound");
	return n;
}

static int l_ns_id_from_name(lua_State *L)
{
	lns *n = check_ns(L, 1);
	size_t len;
	const char *name;
	dobj_idkey *key = dobj_ns_idkey(n->ns);
	lid *d;

	luaL_checktype(L, 2, LUA_TSTRING);
	name = lua_tolstring(L, 2, &len);
	d = push_id(L, key, 0, NULL);
	dobj_id_from_name(key, name, len, &d->id);
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
	lns *n = check_ns(L, 1);
	dobj_idkey *key = dobj_ns_idkey(n->ns);
	lid *d;

	check_jurisdiction(L, 2);
	d = push_id(L, key, 0, NULL);
	if (dobj_id_new_unique(key, NULL, &d->id) < 0)
		return raise_plain(L, dobj_error_last());
	return 1;
}

static int l_ns_id_from_string(lua_State *L)
{
	lns *n = check_ns(L, 1);
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
	lns *n = check_ns(L, 1);
	lid *d = check_ud(L, ididx, MT_ID);
	dobj_idkey *key = dobj_ns_idkey(n->ns);
	lstub *s;
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
	l_ns_id_from_name(L); /* pushes the id at 3 */
	return make_stub(L, 3);
}

static int l_ns_tostring(lua_State *L)
{
	lns *n = check_ud(L, 1, MT_NS);

	lua_pushfstring(L, "dobj.Namespace(%s)", n->ns ? dobj_ns_binding(n->ns) : "?");
	return 1;
}

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
	else if (t == LUA_TSTRING || t == LUA_TNUMBER)
		lua_pushstring(L, lua_tostring(L, idx));
	else
		luaL_error(L, "a body must be a string (got %s)", luaL_typename(L, idx));
}

/*
 * Push a new request made of the URL or request at `src` and the options
 * table at `init` (0 or nil: none).  A request given as `src` is copied, so
 * that caller and object never share a table.
 */
static int push_request(lua_State *L, int src, int init)
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

static int l_request(lua_State *L)
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

static int l_response(lua_State *L)
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
		lua_getfield(L, 2, "status");
		if (!lua_isnil(L, -1)) {
			int isint;
			status = lua_tointegerx(L, -1, &isint);
			if (!isint)
				return luaL_error(L, "status must be an integer");
			if (status < 200 || status > 599)
				return luaL_error(L, "Responses may only be constructed with status codes in "
					"the range 200 to 599, inclusive.");
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

static int l_error_tostring(lua_State *L)
{
	lua_getfield(L, 1, "message");
	if (lua_type(L, -1) != LUA_TSTRING) {
		lua_pop(L, 1);
		lua_pushliteral(L, "dobj.Error");
	}
	return 1;
}

/* ------------------------------------------------------------------- stubs */

static lstub *check_stub(lua_State *L, int idx)
{
	lstub *s = check_ud(L, idx, MT_STUB);

	if (!s->stub)
		luaL_error(L, "the stub is closed");
	return s;
}

/* Push the outcome of a finished call, or raise its error.  Drops `t`. */
static int call_outcome(lua_State *L, lrt *r, dobj_task *t, const dobj_id *id)
{
	void *res = NULL, *err = NULL;
	const char *msg = NULL;
	int rc = dobj_task_result(t, &res, &msg, &err);

	if (rc == DOBJ_OK) {
		push_slot(r, L, res);
		dobj_task_unref(t);
		return 1;
	}
	if (rc == DOBJ_PENDING)
		push_core_error(L, "deadlock: the call can never finish (every task is waiting)", id, 0);
	else if (err)
		push_slot(r, L, err);
	else
		push_core_error(L, msg, id, 1);
	dobj_task_unref(t);
	return lua_error(L);
}

static int fetch_k(lua_State *L, int status, lua_KContext ctx)
{
	lco *c = (lco *)ctx;
	dobj_task *t = c->wait;
	lstub *s = lua_touserdata(L, 1);

	(void)status;
	c->wait = NULL;
	return call_outcome(L, c->r, t, dobj_stub_id(s->stub));
}

static int l_stub_fetch(lua_State *L)
{
	lstub *s = check_stub(L, 1);
	lrt *r = s->r;
	lco *c = task_here(L, r);
	dobj_task *t;
	lua_State *saved;
	size_t len;
	const char *url;
	void *req;
	int ri, rc;

	if (!c && (dobj_rt_pumping(r->rt) || (cur_co && cur_co->r == r)))
		return raise_core_error(L, "stub:fetch() cannot wait here: call it from a handler, an "
			"rt:spawn task, a ctx:wait_until or ctx:block_concurrency_while function, or the "
			"main chunk (not from a constructor or a nested coroutine)");
	if (c && !lua_isyieldable(L))
		return raise_core_error(L, "stub:fetch() cannot suspend here (attempt to yield across a C-call boundary)");
	ri = push_request(L, 2, lua_gettop(L) >= 3 ? 3 : 0);
	lua_getfield(L, ri, "url");
	url = lua_tolstring(L, -1, &len);
	if (!url)
		return raise_core_error(L, "the request has no URL");
	req = anchor(r, L, ri, SK_VALUE);
	rc = dobj_stub_call(&t, s->stub, DOBJ_CALL_FETCH, NULL, url, len, req,
		c ? wake_waiter : NULL, c);
	if (rc < 0)
		return raise_core_error(L, dobj_error_last());
	if (c) {
		c->wait = t;
		c->state = ST_WAIT;
		return lua_yieldk(L, 0, (lua_KContext)c, fetch_k);
	}
	/* The main chunk (or a coroutine outside the runtime): drive it. */
	saved = r->from;
	r->from = L;
	dobj_rt_pump(r->rt);
	if (!dobj_task_done(t))
		dobj_rt_run(r->rt, until_done, t);
	r->from = saved;
	return call_outcome(L, r, t, dobj_stub_id(s->stub));
}

static int l_stub_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	check_ud(L, 1, MT_STUB);
	if (k && k[0] == 'i' && strcmp(k, "id") == 0) {
		lua_getiuservalue(L, 1, 2);
		return 1;
	}
	if (k && k[0] == 'n' && strcmp(k, "name") == 0) {
		lua_getiuservalue(L, 1, 2);
		lua_getiuservalue(L, -1, 1);
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_STUB));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

static int l_stub_gc(lua_State *L)
{
	lstub *s = check_ud(L, 1, MT_STUB);

	if (s->stub) {
		dobj_stub *st = s->stub;
		s->stub = NULL;
		dobj_stub_free(st);
	}
	return 0;
}

static int l_stub_tostring(lua_State *L)
{
	lstub *s = check_ud(L, 1, MT_STUB);
	char hex[DOBJ_ID_HEX_LEN];

	if (!s->stub) {
		lua_pushliteral(L, "dobj.Stub(closed)");
		return 1;
	}
	dobj_id_to_hex(dobj_stub_id(s->stub), hex);
	lua_pushstring(L, "dobj.Stub(");
	lua_pushstring(L, dobj_ns_binding(dobj_stub_ns(s->stub)));
	lua_pushliteral(L, " ");
	lua_pushlstring(L, hex, sizeof(hex));
	lua_pushliteral(L, ")");
	lua_concat(L, 5);
	return 1;
}

/* --------------------------------------------------------------------- ctx */

static lctx *check_ctx(lua_State *L)
{
	lctx *x = check_ud(L, 1, MT_CTX);

	if (!x->obj)
		luaL_error(L, "the object was reset (this ctx belongs to a previous instance)");
	return x;
}

static int l_ctx_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	check_ud(L, 1, MT_CTX);
	if (k && strcmp(k, "id") == 0) {
		lua_getiuservalue(L, 1, 1);
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_CTX));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

static int bcw_k(lua_State *L, int status, lua_KContext ctx)
{
	lco *c = (lco *)ctx;
	dobj_task *t = c->wait;
	void *res = NULL, *err = NULL;
	const char *msg = NULL;
	int rc, n;

	(void)status;
	c->wait = NULL;
	rc = dobj_task_result(t, &res, &msg, &err);
	if (rc != DOBJ_OK) {
		if (err)
			push_slot(c->r, L, err);
		else
			push_core_error(L, msg, NULL, 0);
		dobj_task_unref(t);
		return lua_error(L);
	}
	push_slot(c->r, L, res);
	dobj_task_unref(t);
	lua_getfield(L, -1, "n");
	n = (int)lua_tointeger(L, -1);
	lua_pop(L, 1);
	luaL_checkstack(L, n, "too many results");
	{
		int i, tb = lua_gettop(L);
		for (i = 1; i <= n; i++)
			lua_rawgeti(L, tb, i);
	}
	return n;
}

static int l_ctx_block_concurrency_while(lua_State *L)
{
	lctx *x = check_ctx(L);
	lrt *r = x->r;
	lco *c = task_here(L, r);
	int nargs = lua_gettop(L) - 2;
	dobj_task *t;

	luaL_checktype(L, 2, LUA_TFUNCTION);
	if (r->constructing == x->obj) {
		/* From the constructor: the gate closes now; the first event waits. */
		spawn_fn(L, r, x->obj, DOBJ_TASK_BLOCK, 2, nargs, NULL, NULL, NULL);
		return 0;
	}
	if (!c || dobj_task_obj(c->task) != x->obj)
		return luaL_error(L, "ctx:block_concurrency_while() must be called from the object's "
			"constructor or from one of its handlers");
	if (!lua_isyieldable(L))
		return luaL_error(L, "ctx:block_concurrency_while() cannot suspend here");
	spawn_fn(L, r, x->obj, DOBJ_TASK_BLOCK, 2, nargs, wake_waiter, c, &t);
	c->wait = t;
	c->state = ST_WAIT;
	return lua_yieldk(L, 0, (lua_KContext)c, bcw_k);
}

static int l_ctx_wait_until(lua_State *L)
{
	lctx *x = check_ctx(L);

	spawn_fn(L, x->r, x->obj, DOBJ_TASK_BACKGROUND, 2, lua_gettop(L) - 2, NULL, NULL, NULL);
	return 0;
}

static int l_ctx_abort(lua_State *L)
{
	lctx *x = check_ud(L, 1, MT_CTX);
	lrt *r = x->r;
	dobj_obj *obj = x->obj;
	lco *c = task_here(L, r);
	int own;
	void *err;

	if (!obj)
		return 0; /* already reset */
	own = c && dobj_task_obj(c->task) == obj;
	lua_settop(L, 2);
	if (lua_isnil(L, 2)) {
		lua_pushliteral(L, "Application called abort() to reset Durable Object.");
		lua_replace(L, 2);
	}
	/* The error every pending and later call on this incarnation sees. */
	lua_pushvalue(L, 2);
	err = convert_error(r, L, obj, NULL, 1);
	dobj_obj_abort(obj, DOBJ_EABORTED, dobj_error_last(), err);
	if (own && lua_isyieldable(L)) {
		/* The handler ends here, like workerd's: nothing after abort runs. */
		c->state = ST_KILLED;
		return lua_yield(L, 0);
	}
	return 0;
}

static int l_ctx_tostring(lua_State *L)
{
	lctx *x = check_ud(L, 1, MT_CTX);

	lua_pushstring(L, x->obj ? "dobj.Ctx" : "dobj.Ctx(reset)");
	return 1;
}

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

static int k_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	lclass *k = data;
	lrt *r = k->r;
	lco *h = lco_get(r), *saved_co;
	dobj_obj *saved_obj;
	lua_State *L;
	lctx *x;
	lid *d;
	const char *name;
	size_t len;
	void *ctxslot;
	int st;

	if (!h)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	L = h->co;
	lua_pushcfunction(L, construct_tramp);
	push_slot(r, L, SLOTV(k->slot));
	/* ctx: userdata first, then the object it refers to. */
	x = lua_newuserdatauv(L, sizeof(*x), 1);
	x->obj = NULL;
	x->r = r;
	push_mt_r(r, L, MT_CTX);
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
	ctxslot = anchor(r, L, -1, SK_CTX);
	if (ctxslot)
		dobj_obj_set_ctx(obj, ctxslot);
	lua_pushvalue(r->A, A_ENV);
	lua_xmove(r->A, L, 1);
	lua_pushstring(L, dobj_ns_class_name(dobj_obj_ns(obj)));

	saved_obj = r->constructing;
	saved_co = cur_co;
	r->constructing = obj;
	h->state = ST_CONSTRUCT;
	cur_co = h;
	st = lua_pcall(L, 4, 1, 0);
	cur_co = saved_co;
	r->constructing = saved_obj;
	h->state = ST_IDLE;
	if (st != LUA_OK) {
		*error = convert_error(r, L, obj, NULL, 1);
		lua_settop(L, 0);
		lco_release(r, h);
		return DOBJ_EUSER;
	}
	*instance = anchor(r, L, -1, SK_VALUE);
	lua_settop(L, 0);
	lco_release(r, h);
	return *instance ? DOBJ_OK : dobj_error_set(DOBJ_ENOMEM, "out of memory");
}

/* ---------------------------------------------------------------- runtime */

static lrt *check_rt(lua_State *L, int idx)
{
	lrt *r = check_ud(L, idx, MT_RUNTIME);

	if (!r->rt)
		luaL_error(L, "the runtime is closed");
	return r;
}

static int l_runtime(lua_State *L)
{
	lmod *m = MOD(L);
	lrt *r;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
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
	lua_newtable(r->A); /* A_ANCHORS */
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
	}
	lua_xmove(L, r->A, 1); /* A_ENV */
	lua_pushvalue(L, MODIDX);
	lua_xmove(L, r->A, 1); /* A_MOD */

	o.host.data = r;
	o.host.retain = h_retain;
	o.host.release = h_release;
	o.virtual_time = vt;
	rc = dobj_rt_new(&r->rt, &o);
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
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
	lrt *r = check_ud(L, 1, MT_RUNTIME);
	lco *c;

	if (!r->rt)
		return 0;
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
	free(r->refc);
	free(r->skind);
	r->refc = NULL;
	r->skind = NULL;
	r->mod->nruntimes--;
	return 0;
}

static int l_rt_close(lua_State *L)
{
	lrt *r = check_ud(L, 1, MT_RUNTIME);

	if (r->rt)
		dobj_rt_clear(r->rt);
	return 0;
}

static int l_rt_index(lua_State *L)
{
	lrt *r = check_ud(L, 1, MT_RUNTIME);
	const char *k = lua_tostring(L, 2);

	if (k && strcmp(k, "env") == 0) {
		lua_pushvalue(r->A, A_ENV);
		lua_xmove(r->A, L, 1);
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_RUNTIME));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

static int l_rt_bind(lua_State *L)
{
	lrt *r = check_rt(L, 1);
	const char *binding = luaL_checkstring(L, 2);
	const char *ukey = NULL, *cname = NULL;
	size_t uklen = 0;
	dobj_class klass;
	lclass *k;
	lns *n;
	int rc;

	luaL_checktype(L, 3, LUA_TTABLE);
	lua_settop(L, 4);
	if (!lua_isnil(L, 4)) {
		luaL_checktype(L, 4, LUA_TTABLE);
		lua_getfield(L, 4, "unique_key");
		if (!lua_isnil(L, -1)) {
			luaL_checktype(L, -1, LUA_TSTRING);
			ukey = lua_tolstring(L, -1, &uklen);
		}
		lua_getfield(L, 4, "class_name");
		cname = lua_tostring(L, -1);
	}
	lua_settop(L, 6);
	lua_pushvalue(r->A, A_ENV);
	lua_xmove(r->A, L, 1); /* 7: env */
	lua_getfield(L, 7, binding);
	if (test_ud(L, -1, MT_NS))
		return luaL_error(L, "a namespace is already bound as %s", binding);
	lua_pop(L, 1);
	if (!cname) {
		lua_getfield(L, 3, "__name");
		cname = lua_tostring(L, -1);
		if (!cname)
			cname = binding;
	}

	/* The namespace userdata first, then the core namespace it names. */
	n = lua_newuserdatauv(L, sizeof(*n), 1);
	n->ns = NULL;
	n->r = r;
	push_mt(L, MT_NS);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);

	k = calloc(1, sizeof(*k));
	if (!k)
		return luaL_error(L, "out of memory");
	k->h.kind = HK_CLASS;
	k->h.refs = 1;
	k->r = r;
	lua_pushvalue(L, 3);
	lua_xmove(L, r->A, 1);
	k->slot = slot_new(r, SK_VALUE);
	if (!k->slot) {
		free(k);
		return luaL_error(L, "out of memory");
	}
	memset(&klass, 0, sizeof(klass));
	klass.name = cname;
	lua_getfield(L, 3, "fetch");
	klass.flags = lua_isnil(L, -1) ? 0 : DOBJ_CLASS_FETCH;
	lua_pop(L, 1);
	klass.data = k;
	klass.construct = k_construct;
	klass.step = step_call;
	rc = dobj_ns_new(&n->ns, r->rt, binding, ukey, uklen, &klass);
	h_release(r, k); /* the namespace holds its own reference */
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	if (r->seeded)
		dobj_idkey_seed(dobj_ns_idkey(n->ns), (uint64_t)r->seed);
	lua_pushvalue(L, -1);
	lua_setfield(L, 7, binding);
	return 1;
}

static int l_rt_spawn(lua_State *L)
{
	lrt *r = check_rt(L, 1);

	spawn_fn(L, r, NULL, DOBJ_TASK_FREE, 2, lua_gettop(L) - 2, NULL, NULL, NULL);
	return 0;
}

/* Raise the first error a spawned or background task left unhandled. */
static void raise_task_error(lua_State *L, lrt *r)
{
	if (r->error_slot) {
		int s = r->error_slot;
		r->error_slot = 0;
		push_slot(r, L, SLOTV(s));
		slot_unref(r, s);
		lua_error(L);
	}
}

static int l_rt_run(lua_State *L)
{
	lrt *r = check_rt(L, 1);
	lua_State *saved;
	int rc;

	if (cur_co && cur_co->r == r)
		return luaL_error(L, "rt:run() cannot be called from inside the runtime");
	saved = r->from;
	r->from = L;
	rc = dobj_rt_run(r->rt, NULL, NULL);
	r->from = saved;
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	raise_task_error(L, r);
	return 0;
}

static int l_rt_tostring(lua_State *L)
{
	lrt *r = check_ud(L, 1, MT_RUNTIME);

	lua_pushfstring(L, "dobj.Runtime(%s)", r->rt ? (dobj_rt_closed(r->rt) ? "closed" : "open") : "freed");
	return 1;
}

/* ------------------------------------------------------------------ sleep */

static void sleep_fired(void *data, int fired)
{
	lco *c = data;

	c->timer = NULL;
	if (fired && c->task)
		dobj_task_wake(c->task);
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)L;
	(void)status;
	(void)ctx;
	return 0;
}

static void flag_fired(void *data, int fired)
{
	(void)fired;
	*(int *)data = 1;
}

static int until_flag(void *arg)
{
	return *(int *)arg;
}

static int l_sleep(lua_State *L)
{
	double s = luaL_checknumber(L, 1), ms;
	lco *c = task_here(L, NULL);

	if (!(s > 0))
		s = 0;
	ms = s * 1e3;
	if (c) {
		if (!lua_isyieldable(L))
			return luaL_error(L, "dobj.sleep() cannot suspend here");
		if (dobj_rt_timer(c->r->rt, ms, sleep_fired, c, &c->timer) < 0)
			return raise_core_error(L, dobj_error_last());
		c->state = ST_SLEEP;
		return lua_yieldk(L, 0, (lua_KContext)c, sleep_k);
	}
	if (cur_co)
		return luaL_error(L, "dobj.sleep() cannot suspend here: call it from a handler or a "
			"task, or the main chunk (not from a constructor or a nested coroutine)");
	/* The main chunk: let the latest runtime work meanwhile. */
	lua_getiuservalue(L, MODIDX, UV_DEFAULT_RT);
	lua_rawgeti(L, -1, 1);
	{
		lrt *r = test_ud(L, -1, MT_RUNTIME);
		if (r && r->rt && !dobj_rt_closed(r->rt) && !dobj_rt_pumping(r->rt)) {
			int fired = 0;
			lua_State *saved = r->from;
			if (dobj_rt_timer(r->rt, ms, flag_fired, &fired, NULL) < 0)
				return raise_core_error(L, dobj_error_last());
			r->from = L;
			dobj_rt_run(r->rt, until_flag, &fired);
			r->from = saved;
			raise_task_error(L, r);
			return 0;
		}
	}
	{
		struct timespec ts;
		ts.tv_sec = (time_t)s;
		ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	return 0;
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

static const luaL_Reg rt_meta[] = {
	{ "__index", l_rt_index }, { "__gc", l_rt_gc }, { "__close", l_rt_close },
	{ "__tostring", l_rt_tostring }, { NULL, NULL }
};
static const luaL_Reg rt_methods[] = {
	{ "bind", l_rt_bind }, { "spawn", l_rt_spawn }, { "run", l_rt_run },
	{ "close", l_rt_close }, { NULL, NULL }
};
static const luaL_Reg ns_meta[] = { { "__tostring", l_ns_tostring }, { NULL, NULL } };
static const luaL_Reg ns_methods[] = {
	{ "id_from_name", l_ns_id_from_name }, { "new_unique_id", l_ns_new_unique_id },
	{ "id_from_string", l_ns_id_from_string }, { "get", l_ns_get },
	{ "get_by_name", l_ns_get_by_name }, { "jurisdiction", l_ns_jurisdiction }, { NULL, NULL }
};
static const luaL_Reg id_meta[] = {
	{ "__index", l_id_index }, { "__tostring", l_id_tostring }, { "__eq", l_id_eq },
	{ NULL, NULL }
};
static const luaL_Reg id_methods[] = {
	{ "to_string", l_id_tostring }, { "equals", l_id_equals }, { NULL, NULL }
};
static const luaL_Reg stub_meta[] = {
	{ "__index", l_stub_index }, { "__gc", l_stub_gc }, { "__close", l_stub_gc },
	{ "__tostring", l_stub_tostring }, { NULL, NULL }
};
static const luaL_Reg stub_methods[] = { { "fetch", l_stub_fetch }, { NULL, NULL } };
static const luaL_Reg ctx_meta[] = {
	{ "__index", l_ctx_index }, { "__tostring", l_ctx_tostring }, { NULL, NULL }
};
static const luaL_Reg ctx_methods[] = {
	{ "block_concurrency_while", l_ctx_block_concurrency_while },
	{ "wait_until", l_ctx_wait_until }, { "abort", l_ctx_abort }, { NULL, NULL }
};
static const luaL_Reg request_meta[] = { { "__tostring", l_request_tostring }, { NULL, NULL } };
static const luaL_Reg response_meta[] = { { "__tostring", l_response_tostring }, { NULL, NULL } };
static const luaL_Reg error_meta[] = { { "__tostring", l_error_tostring }, { NULL, NULL } };
static const luaL_Reg no_methods[] = { { NULL, NULL } };

static const luaL_Reg module_funcs[] = {
	{ "runtime", l_runtime }, { "request", l_request }, { "response", l_response },
	{ "sleep", l_sleep }, { "is_error", l_is_error }, { "_stats", l_stats }, { NULL, NULL }
};

LDOBJ_EXPORT int luaopen_dobj(lua_State *L)
{
	static const struct {
		int which;
		const luaL_Reg *meta, *methods;
	} types[] = {
		{ MT_RUNTIME, rt_meta, rt_methods }, { MT_NS, ns_meta, ns_methods },
		{ MT_ID, id_meta, id_methods }, { MT_STUB, stub_meta, stub_methods },
		{ MT_CTX, ctx_meta, ctx_methods }, { MT_REQUEST, request_meta, no_methods },
		{ MT_RESPONSE, response_meta, no_methods }, { MT_ERROR, error_meta, no_methods },
	};
	lmod *m;
	int mi, i;

	m = lua_newuserdatauv(L, sizeof(*m), UV_COUNT);
	memset(m, 0, sizeof(*m));
	mi = lua_gettop(L);
	for (i = 0; i < (int)(sizeof(types) / sizeof(types[0])); i++) {
		int w = types[i].which;
		luaL_newmetatable(L, mt_names[w]);
		lua_pushvalue(L, mi);
		luaL_setfuncs(L, types[i].meta, 1);
		m->mt[w] = lua_topointer(L, -1);
		lua_newtable(L);
		lua_pushvalue(L, mi);
		luaL_setfuncs(L, types[i].methods, 1);
		if (w == MT_NS) {
			lua_pushvalue(L, -1);
			lua_setfield(L, -3, "__index");
		}
		lua_setiuservalue(L, mi, UV_METHODS(w));
		if (w == MT_REQUEST || w == MT_RESPONSE) {
			/* __index closes over the module state and the text() method. */
			lua_pushvalue(L, mi);
			lua_pushvalue(L, mi);
			lua_pushcclosure(L, l_msg_text, 1);
			lua_pushcclosure(L, l_msg_index, 2);
			lua_setfield(L, -2, "__index");
		}
		lua_setiuservalue(L, mi, w);
	}
	lua_newtable(L);
	lua_createtable(L, 0, 1);
	lua_pushliteral(L, "v");
	lua_setfield(L, -2, "__mode");
	lua_setmetatable(L, -2);
	lua_setiuservalue(L, mi, UV_DEFAULT_RT);

	luaL_newlibtable(L, module_funcs);
	lua_pushvalue(L, mi);
	luaL_setfuncs(L, module_funcs, 1);
	lua_getiuservalue(L, mi, MT_ERROR);
	lua_setfield(L, -2, "Error");
	lua_getiuservalue(L, mi, MT_REQUEST);
	lua_setfield(L, -2, "Request");
	lua_getiuservalue(L, mi, MT_RESPONSE);
	lua_setfield(L, -2, "Response");
	lua_pushinteger(L, DOBJ_MAX_CALL_DEPTH);
	lua_setfield(L, -2, "MAX_CALL_DEPTH");
	lua_pushinteger(L, DOBJ_MAX_CTX_NAME);
	lua_setfield(L, -2, "MAX_CTX_NAME");
	lua_pushliteral(L, "0.1.0");
	lua_setfield(L, -2, "version");
	return 1;
}
