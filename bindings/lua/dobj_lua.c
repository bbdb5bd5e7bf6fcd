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
#define _GNU_SOURCE /* dladdr, RTLD_NODELETE */
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>
#include <stdio.h>
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
	MT_STORAGE,
	MT_TXN,
	MT_SQL,
	MT_CURSOR,
	MT_BYTES,
	MT_DATE,
	MT_NULL,
	MT_SET,    /* metatables of plain tables: markers only */
	MT_MAP,
	MT_LIST,
	MT_COUNT = MT_LIST
};
#define UV_METHODS(i) (MT_COUNT + (i))
#define UV_DEFAULT_RT (2 * MT_COUNT + 1) /* weak table { runtime } */
#define UV_NULL (2 * MT_COUNT + 2)       /* the dobj.null singleton */
#define UV_RPC (2 * MT_COUNT + 3)        /* weak table: method name -> RPC caller */
#define UV_COUNT UV_RPC

static const char *const mt_names[MT_COUNT + 1] = {
	NULL, "dobj.Runtime", "dobj.Namespace", "dobj.Id", "dobj.Stub",
	"dobj.Ctx", "dobj.Request", "dobj.Response", "dobj.Error",
	"dobj.Storage", "dobj.Transaction", "dobj.Sql", "dobj.Cursor", "dobj.Bytes",
	"dobj.Date", "dobj.null", "dobj.Set", "dobj.Map", "dobj.List",
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

/* Stack of the anchor thread A.  A_NSMAP maps each core namespace
 * (light userdata) to its namespace userdata, so that a stub or ID received
 * over RPC becomes a Lua stub of the right namespace. */
enum { A_ANCHORS = 1, A_ENV = 2, A_MOD = 3, A_NSMAP = 4 };

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
	dobj_ser *ser;       /* value writer and reader, reused (storage values) */
	dobj_de *de;
	int virtual_time;
	double wall_base;    /* virtual time: the wall clock when the runtime started */
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
} lctx; /* user values: 1 the id userdata, 2 the storage userdata (made on first use) */

/* RPC and native classes (defined with the values they convert). */
static int rpc_tramp(lua_State *L);
static void val_free_cb(void *v);
static void msg_free_cb(void *m);
static int l_stub_rpc(lua_State *L);
static dobj_msg *msg_from_request(lua_State *L, int ri);
static int core_outcome(lua_State *L, lrt *r, dobj_task *t);

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
		/* The trampoline checked that the first result is a response
		 * (RPC: made it a dobj_val); an alarm handler's results are dropped. */
		if (dobj_task_call_kind(t) == DOBJ_CALL_RPC)
			dobj_task_return_value(t, lua_touserdata(L, -nres), val_free_cb);
		else
			dobj_task_return(t, dobj_task_call_kind(t) == DOBJ_CALL_ALARM ? NULL
				: anchor(r, L, -nres, SK_VALUE));
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

/* Push the handler `name` of the instance at 1 (looked up on the instance,
 * then on the class k); 0 if there is none. */
static int push_handler(lua_State *L, lclass *k, const char *name)
{
	lua_getfield(L, 1, name);
	if (lua_type(L, -1) == LUA_TFUNCTION)
		return 1;
	lua_pop(L, 1);
	push_slot(k->r, L, SLOTV(k->slot));
	lua_getfield(L, -1, name);
	lua_remove(L, -2);
	return lua_type(L, -1) == LUA_TFUNCTION;
}

static int fetch_tramp(lua_State *L)
{
	lclass *k = lua_touserdata(L, 3);

	if (!push_handler(L, k, "fetch"))
		return raise_plain(L, DOBJ_MSG_NO_FETCH);
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_callk(L, 2, LUA_MULTRET, (lua_KContext)k, fetch_tramp_k);
	return fetch_tramp_k(L, LUA_OK, (lua_KContext)k);
}

/* A time in ms as Lua shows it: an integer when it is whole. */
static void push_ms(lua_State *L, double ms)
{
	if (ms == (double)(lua_Integer)ms && ms >= -9007199254740992.0 && ms <= 9007199254740992.0)
		lua_pushinteger(L, (lua_Integer)ms);
	else
		lua_pushnumber(L, ms);
}

/* The body of an alarm handler's coroutine: (instance, info, class). */
static int alarm_tramp_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)L;
	(void)status;
	(void)ctx;
	return 0;
}

static int alarm_tramp(lua_State *L)
{
	lclass *k = lua_touserdata(L, 3);

	if (!push_handler(L, k, "alarm"))
		return raise_plain(L, "Handler does not export an alarm() function.");
	lua_pushvalue(L, 1);
	lua_pushvalue(L, 2);
	lua_callk(L, 2, 0, 0, alarm_tramp_k);
	return 0;
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
	if (dobj_task_call_kind(t) == DOBJ_CALL_ALARM) {
		double when = 0;
		int retry = 0;
		dobj_task_alarm_info(t, &when, &retry);
		lua_pushcfunction(L, alarm_tramp);
		push_slot(r, L, dobj_obj_instance(dobj_task_obj(t)));
		lua_createtable(L, 0, 3);
		push_ms(L, when);
		lua_setfield(L, -2, "scheduled_time");
		lua_pushinteger(L, retry);
		lua_setfield(L, -2, "retry_count");
		lua_pushboolean(L, retry > 0);
		lua_setfield(L, -2, "is_retry");
		lua_pushlightuserdata(L, k);
		return run_co(r, t, c, 3);
	}
	if (dobj_task_call_kind(t) == DOBJ_CALL_RPC) {
		lua_pushcfunction(L, rpc_tramp);
		push_slot(r, L, dobj_obj_instance(dobj_task_obj(t)));
		lua_pushlightuserdata(L, k);
		return run_co(r, t, c, 2);
	}
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
		if (dobj_task_result_is_core(t))
			return core_outcome(L, r, t);
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

/* Can a stub call made here wait for its answer?  Raises if not; `what` is
 * "stub:fetch()" or "stub:NAME()". */
static void check_can_wait(lua_State *L, lrt *r, lco *c, const char *what)
{
	char msg[300];

	if (!c && (dobj_rt_pumping(r->rt) || (cur_co && cur_co->r == r))) {
		snprintf(msg, sizeof(msg), "%.80s cannot wait here: call it from a handler, an "
			"rt:spawn task, a ctx:wait_until or ctx:block_concurrency_while function, or the "
			"main chunk (not from a constructor or a nested coroutine)", what);
		raise_core_error(L, msg);
	}
	if (c && !lua_isyieldable(L)) {
		snprintf(msg, sizeof(msg), "%.80s cannot suspend here (attempt to yield across a "
			"C-call boundary)", what);
		raise_core_error(L, msg);
	}
}

/* Wait for a call just sent: a coroutine of the runtime suspends (fetch_k
 * finishes it), the main chunk drives the runtime until the answer is in. */
static int await_call(lua_State *L, lstub *s, lco *c, dobj_task *t)
{
	lrt *r = s->r;
	lua_State *saved;

	if (c) {
		c->wait = t;
		c->state = ST_WAIT;
		return lua_yieldk(L, 0, (lua_KContext)c, fetch_k);
	}
	saved = r->from;
	r->from = L;
	dobj_rt_pump(r->rt);
	if (!dobj_task_done(t))
		dobj_rt_run(r->rt, until_done, t);
	r->from = saved;
	return call_outcome(L, r, t, dobj_stub_id(s->stub));
}

static int l_stub_fetch(lua_State *L)
{
	lstub *s = check_stub(L, 1);
	lrt *r = s->r;
	lco *c = task_here(L, r);
	dobj_task *t;
	size_t len;
	const char *url;
	void *req;
	int ri, rc;

	check_can_wait(L, r, c, "stub:fetch()");
	ri = push_request(L, 2, lua_gettop(L) >= 3 ? 3 : 0);
	lua_getfield(L, ri, "url");
	url = lua_tolstring(L, -1, &len);
	if (!url)
		return raise_core_error(L, "the request has no URL");
	if (dobj_ns_is_native(dobj_stub_ns(s->stub))) {
		/* A native class takes a dobj_msg (copied: nothing is shared). */
		dobj_msg *m = msg_from_request(L, ri);
		if (!m)
			return raise_core_error(L, "out of memory");
		rc = dobj_stub_call_ex(&t, s->stub, DOBJ_CALL_FETCH, NULL, url, len, m, msg_free_cb,
			c ? wake_waiter : NULL, c);
	} else {
		req = anchor(r, L, ri, SK_VALUE);
		rc = dobj_stub_call(&t, s->stub, DOBJ_CALL_FETCH, NULL, url, len, req,
			c ? wake_waiter : NULL, c);
	}
	if (rc < 0)
		return raise_core_error(L, dobj_error_last());
	return await_call(L, s, c, t);
}

static int l_stub_index(lua_State *L)
{
	const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;

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
	if (lua_rawget(L, -2) != LUA_TNIL || lua_type(L, 2) != LUA_TSTRING)
		return 1;
	/* Any other name is an RPC method: a caller closure, cached per name. */
	lua_getiuservalue(L, MODIDX, UV_RPC);
	lua_pushvalue(L, 2);
	if (lua_rawget(L, -2) != LUA_TNIL)
		return 1;
	lua_pop(L, 1);
	lua_pushvalue(L, MODIDX);
	lua_pushvalue(L, 2);
	lua_pushcclosure(L, l_stub_rpc, 2);
	lua_pushvalue(L, 2);
	lua_pushvalue(L, -2);
	lua_rawset(L, -4);
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

static void push_ctx_storage(lua_State *L, int ctxidx);

static int l_ctx_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	check_ud(L, 1, MT_CTX);
	if (k && strcmp(k, "id") == 0) {
		lua_getiuservalue(L, 1, 1);
		return 1;
	}
	if (k && strcmp(k, "storage") == 0) {
		push_ctx_storage(L, 1);
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_CTX));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

/* Push the results of the block task c waited for (raise its error). */
static int block_results(lua_State *L, lco *c)
{
	dobj_task *t = c->wait;
	void *res = NULL, *err = NULL;
	const char *msg = NULL;
	int rc, n;

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
		lua_remove(L, tb);
	}
	return n;
}

static int bcw_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)status;
	return block_results(L, (lco *)ctx);
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
	x = lua_newuserdatauv(L, sizeof(*x), 2);
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

static double realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The wall clock of alarms: real time, or with virtual time the real time at
 * start plus the virtual clock, so that rt:now() and the core agree. */
static double wall_clock(void *data)
{
	lrt *r = data;

	if (r->virtual_time && r->rt)
		return r->wall_base + dobj_rt_now_ms(r->rt);
	return realtime_ms();
}

static int l_runtime(lua_State *L)
{
	lmod *m = MOD(L);
	lrt *r;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	const char *dir = NULL;
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
		lua_getfield(L, 1, "storage");
		if (!lua_isnil(L, -1)) {
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "storage must be a directory name (a string)");
			dir = lua_tostring(L, -1); /* kept alive by the options table */
		}
		lua_pop(L, 1);
		lua_getfield(L, 1, "durability");
		if (!lua_isnil(L, -1)) {
			const char *d = lua_tostring(L, -1);
			if (d && strcmp(d, "process") == 0)
				o.durability = DOBJ_DURABLE_PROCESS;
			else if (d && strcmp(d, "power") == 0)
				o.durability = DOBJ_DURABLE_POWER;
			else
				return luaL_error(L, "durability must be \"process\" or \"power\"");
		}
		lua_pop(L, 1);
		lua_getfield(L, 1, "idle_timeout");
		if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
			o.idle_timeout_ms = -1; /* never evict */
		} else if (!lua_isnil(L, -1)) {
			double sec = lua_tonumber(L, -1);
			if (lua_type(L, -1) != LUA_TNUMBER || !(sec > 0))
				return luaL_error(L, "idle_timeout must be a positive number of seconds, or false");
			o.idle_timeout_ms = sec >= 1e300 ? -1 : sec * 1e3;
		}
		lua_pop(L, 1);
	}
	lua_xmove(L, r->A, 1); /* A_ENV */
	lua_pushvalue(L, MODIDX);
	lua_xmove(L, r->A, 1); /* A_MOD */
	lua_newtable(r->A);    /* A_NSMAP */

	o.host.data = r;
	o.host.retain = h_retain;
	o.host.release = h_release;
	o.virtual_time = vt;
	o.storage_dir = dir;
	o.wall_ms = wall_clock;
	o.clock_data = r;
	r->virtual_time = vt;
	r->wall_base = realtime_ms();
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
	dobj_ser_free(r->ser);
	dobj_de_free(r->de);
	r->ser = NULL;
	r->de = NULL;
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

/* The namespace userdata n (on top of the stack) is bound: seed its IDs,
 * put it in env (at envidx) and in the namespace map.  Returns 1 (n). */
static int bind_done(lua_State *L, lrt *r, lns *n, const char *binding, int envidx)
{
	if (r->seeded)
		dobj_idkey_seed(dobj_ns_idkey(n->ns), (uint64_t)r->seed);
	lua_pushvalue(L, -1);
	lua_setfield(L, envidx, binding);
	lua_pushvalue(L, -1);
	lua_xmove(L, r->A, 1);
	lua_rawsetp(r->A, A_NSMAP, n->ns);
	return 1;
}

/* A new namespace userdata of runtime r (at 1) with no core namespace yet. */
static lns *push_ns(lua_State *L, lrt *r)
{
	lns *n = lua_newuserdatauv(L, sizeof(*n), 1);

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
	n = push_ns(L, r);

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
	lua_getfield(L, 3, "alarm");
	if (!lua_isnil(L, -1))
		klass.flags |= DOBJ_CLASS_ALARM;
	lua_pop(L, 1);
	klass.data = k;
	klass.construct = k_construct;
	klass.step = step_call;
	rc = dobj_ns_new(&n->ns, r->rt, binding, ukey, uklen, &klass);
	h_release(r, k); /* the namespace holds its own reference */
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	return bind_done(L, r, n, binding, 7);
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
	lrt *r = check_rt(L, 1);
	const char *binding = luaL_checkstring(L, 2);
	const char *path = luaL_checkstring(L, 3);
	const char *cname = luaL_checkstring(L, 4);
	const char *ukey = NULL;
	size_t uklen = 0;
	dobj_native_class *nc;
	dobj_class klass;
	lns *n;
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
	lua_pushvalue(r->A, A_ENV);
	lua_xmove(r->A, L, 1); /* 7: env */
	lua_getfield(L, 7, binding);
	if (test_ud(L, -1, MT_NS))
		return luaL_error(L, "a namespace is already bound as %s", binding);
	lua_pop(L, 1);
	if (dobj_native_load(&nc, path, cname) < 0)
		return raise_plain(L, dobj_error_last());
	pin_module();
	n = push_ns(L, r);
	dobj_native_class_of(nc, &klass);
	rc = dobj_ns_new(&n->ns, r->rt, binding, ukey, uklen, &klass);
	if (rc < 0)
		return luaL_error(L, "%s", dobj_error_last());
	return bind_done(L, r, n, binding, 7);
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

/* rt:now(): ms since the epoch by the runtime's clock (virtual time included). */
static int l_rt_now(lua_State *L)
{
	lrt *r = check_rt(L, 1);

	push_ms(L, wall_clock(r));
	return 1;
}

/* rt:advance(seconds): virtual time only; fires what falls due. */
static int l_rt_advance(lua_State *L)
{
	lrt *r = check_rt(L, 1);
	double s = luaL_checknumber(L, 2);
	lua_State *saved;
	int rc;

	if (cur_co && cur_co->r == r)
		return luaL_error(L, "rt:advance() cannot be called from inside the runtime");
	saved = r->from;
	r->from = L;
	rc = dobj_rt_advance(r->rt, s * 1e3);
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

/* ------------------------------------------------------------------ values */

/*
 * Storage values are V8 serialization blobs, written and read by the core's
 * codec (dobj/value.h).  The mapping is in docs/lua.md ("Values"); in short:
 * booleans, numbers (whole numbers up to 2^53 as JS numbers, beyond as
 * BigInts), UTF-8 strings, dobj.bytes (Uint8Array), dobj.date (Date),
 * dobj.null (null), tables (a sequence -> Array, string keys -> Object,
 * anything else or a dobj.map table -> Map, a dobj.set table -> Set).  A
 * table or value met twice is written once and referenced, so shared parts
 * and cycles come back shared.  Encoding calls no Lua code (raw access
 * only), so the writer and reader kept on the runtime are never re-entered.
 */

#define MAX_SAFE_INT 9007199254740992LL /* 2^53: doubles hold every integer up to it */

static int is_mt_rt(lrt *r, lua_State *L, int idx, int which)
{
	int ok = 0;

	if (lua_getmetatable(L, idx)) {
		ok = lua_topointer(L, -1) == r->mod->mt[which];
		lua_pop(L, 1);
	}
	return ok;
}

static void push_null_rt(lrt *r, lua_State *L)
{
	push_mt_r(r, L, UV_NULL);
}

static void push_bytes_rt(lrt *r, lua_State *L, const void *p, size_t len)
{
	lua_newuserdatauv(L, 0, 1);
	lua_pushlstring(L, len ? (const char *)p : "", len);
	lua_setiuservalue(L, -2, 1);
	push_mt_r(r, L, MT_BYTES);
	lua_setmetatable(L, -2);
}

static void push_date_rt(lrt *r, lua_State *L, double ms)
{
	double *d = lua_newuserdatauv(L, sizeof(double), 0);

	*d = ms;
	push_mt_r(r, L, MT_DATE);
	lua_setmetatable(L, -2);
}

/* A JS number as Lua shows it: whole numbers up to 2^53 (not -0) are
 * integers, the rest floats. */
static void push_jsnumber(lua_State *L, double d)
{
	if (d == floor(d) && fabs(d) <= (double)MAX_SAFE_INT && !(d == 0 && signbit(d)))
		lua_pushinteger(L, (lua_Integer)d);
	else
		lua_pushnumber(L, d);
}

typedef struct venc {
	lua_State *L;
	lrt *r;
	dobj_ser *ser;
	int seen;  /* table: value -> object id */
	int depth;
} venc;

static void enc_value(venc *e, int idx);

static void enc_check(venc *e, int rc)
{
	if (rc < 0)
		luaL_error(e->L, "cannot store the value: %s", dobj_error_last());
}

/* Written before?  Then write a reference to it. */
static int enc_seen(venc *e, int idx)
{
	lua_State *L = e->L;

	lua_pushvalue(L, idx);
	if (lua_rawget(L, e->seen) == LUA_TNUMBER) {
		uint32_t id = (uint32_t)lua_tointeger(L, -1);
		lua_pop(L, 1);
		enc_check(e, dobj_ser_ref(e->ser, id));
		return 1;
	}
	lua_pop(L, 1);
	return 0;
}

static void enc_mark(venc *e, int idx, uint32_t id)
{
	lua_pushvalue(e->L, idx);
	lua_pushinteger(e->L, id);
	lua_rawset(e->L, e->seen);
}

enum { TK_OBJECT, TK_ARRAY, TK_MAP, TK_SET };

/* Which JS value a table is: a sequence 1..n (n > 0) is an Array, a table
 * with only string keys (or none) an Object, anything else a Map. */
static int table_kind_at(lua_State *L, lrt *r, int idx, lua_Integer *n)
{
	lua_Integer count = 0, maxk = 0;
	int all_str = 1, all_int = 1;

	if (is_mt_rt(r, L, idx, MT_SET))
		return TK_SET;
	if (is_mt_rt(r, L, idx, MT_MAP))
		return TK_MAP;
	lua_pushnil(L);
	while (lua_next(L, idx)) {
		lua_pop(L, 1);
		count++;
		if (lua_type(L, -1) == LUA_TSTRING) {
			all_int = 0;
		} else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
			all_str = 0;
			if (lua_tointeger(L, -1) > maxk)
				maxk = lua_tointeger(L, -1);
		} else {
			all_str = all_int = 0;
		}
	}
	*n = count;
	if (count == 0 || all_str)
		return TK_OBJECT;
	if (all_int && maxk == count && count <= (lua_Integer)UINT32_MAX - 1)
		return TK_ARRAY;
	return TK_MAP;
}

static int table_kind(venc *e, int idx, lua_Integer *n)
{
	return table_kind_at(e->L, e->r, idx, n);
}

static void enc_table(venc *e, int idx)
{
	lua_State *L = e->L;
	lua_Integer n = 0, i;
	uint32_t id = 0;
	int kind;

	if (enc_seen(e, idx))
		return;
	if (++e->depth > DOBJ_VALUE_MAX_DEPTH)
		luaL_error(L, "cannot store a value nested deeper than %d tables", DOBJ_VALUE_MAX_DEPTH);
	luaL_checkstack(L, 8, "value nested too deeply");
	kind = table_kind(e, idx, &n);
	switch (kind) {
	case TK_ARRAY:
		enc_check(e, dobj_ser_array_begin(e->ser, (uint32_t)n, &id));
		enc_mark(e, idx, id);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, idx, i);
			enc_value(e, lua_gettop(L));
			lua_pop(L, 1);
		}
		enc_check(e, dobj_ser_array_end(e->ser));
		break;
	case TK_OBJECT:
		enc_check(e, dobj_ser_object_begin(e->ser, &id));
		enc_mark(e, idx, id);
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			size_t klen;
			const char *k = lua_tolstring(L, -2, &klen); /* a string: no conversion */
			int rc = dobj_ser_key(e->ser, k, klen);
			if (rc == DOBJ_EARG)
				luaL_error(L, "cannot store a table key that is not valid UTF-8 "
					"(use a dobj.map table to store binary keys as dobj.bytes)");
			enc_check(e, rc);
			enc_value(e, lua_gettop(L));
			lua_pop(L, 1);
		}
		enc_check(e, dobj_ser_object_end(e->ser));
		break;
	case TK_MAP:
		enc_check(e, dobj_ser_map_begin(e->ser, &id));
		enc_mark(e, idx, id);
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			enc_value(e, lua_gettop(L) - 1);
			enc_value(e, lua_gettop(L));
			lua_pop(L, 1);
		}
		enc_check(e, dobj_ser_map_end(e->ser));
		break;
	default: /* TK_SET: the keys whose value is true */
		enc_check(e, dobj_ser_set_begin(e->ser, &id));
		enc_mark(e, idx, id);
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			if (lua_toboolean(L, -1))
				enc_value(e, lua_gettop(L) - 1);
			lua_pop(L, 1);
		}
		enc_check(e, dobj_ser_set_end(e->ser));
		break;
	}
	e->depth--;
}

static void enc_value(venc *e, int idx)
{
	lua_State *L = e->L;
	int rc = 0;

	switch (lua_type(L, idx)) {
	case LUA_TBOOLEAN:
		rc = dobj_ser_bool(e->ser, lua_toboolean(L, idx));
		break;
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx)) {
			lua_Integer i = lua_tointeger(L, idx);
			if (i >= -MAX_SAFE_INT && i <= MAX_SAFE_INT)
				rc = dobj_ser_number(e->ser, (double)i);
			else
				rc = dobj_ser_bigint_i64(e->ser, (int64_t)i);
		} else {
			rc = dobj_ser_number(e->ser, lua_tonumber(L, idx));
		}
		break;
	case LUA_TSTRING: {
		size_t len;
		const char *p = lua_tolstring(L, idx, &len);
		rc = dobj_ser_string(e->ser, p, len);
		if (rc == DOBJ_EARG)
			luaL_error(L, "cannot store a string that is not valid UTF-8: "
				"wrap binary data in dobj.bytes(s)");
		break;
	}
	case LUA_TTABLE:
		enc_table(e, idx);
		return;
	case LUA_TUSERDATA:
		if (is_mt_rt(e->r, L, idx, MT_NULL)) {
			rc = dobj_ser_null(e->ser);
		} else if (is_mt_rt(e->r, L, idx, MT_BYTES)) {
			uint32_t id = 0;
			size_t len;
			const char *p;
			if (enc_seen(e, idx))
				return;
			lua_getiuservalue(L, idx, 1);
			p = lua_tolstring(L, -1, &len);
			rc = dobj_ser_bytes(e->ser, p, len, &id);
			lua_pop(L, 1);
			enc_check(e, rc);
			enc_mark(e, idx, id);
		} else if (is_mt_rt(e->r, L, idx, MT_DATE)) {
			uint32_t id = 0;
			if (enc_seen(e, idx))
				return;
			rc = dobj_ser_date(e->ser, *(double *)lua_touserdata(L, idx), &id);
			enc_check(e, rc);
			enc_mark(e, idx, id);
		} else {
			luaL_error(L, "cannot store a value of type %s", luaL_typename(L, idx));
		}
		break;
	case LUA_TNIL:
		luaL_error(L, "cannot store nil");
		break;
	default:
		luaL_error(L, "cannot store a value of type %s", luaL_typename(L, idx));
	}
	enc_check(e, rc);
}

/* Serialise the value at idx.  The blob is borrowed from the runtime's
 * writer until the next encode. */
static const unsigned char *encode(lua_State *L, lrt *r, int idx, size_t *len)
{
	venc e;
	const unsigned char *data = NULL;

	idx = lua_absindex(L, idx);
	if (lua_isnoneornil(L, idx))
		raise_plain(L, DOBJ_MSG_PUT_UNDEFINED);
	if (!r->ser) {
		if (dobj_ser_new(&r->ser) < 0)
			luaL_error(L, "%s", dobj_error_last());
	} else {
		dobj_ser_reset(r->ser);
	}
	e.L = L;
	e.r = r;
	e.ser = r->ser;
	e.depth = 0;
	lua_newtable(L);
	e.seen = lua_gettop(L);
	enc_value(&e, idx);
	enc_check(&e, dobj_ser_finish(r->ser, &data, len));
	lua_pop(L, 1);
	return data;
}

typedef struct vdec {
	lua_State *L;
	lrt *r;
	dobj_de *de;
	dobj_tok tok;
	int ids; /* table: object id -> value */
} vdec;

static void dec_tok(vdec *d);

static void dec_next(vdec *d)
{
	if (dobj_de_next(d->de, &d->tok) < 0)
		luaL_error(d->L, "cannot read the stored value: %s", dobj_error_last());
}

static void dec_value(vdec *d)
{
	dec_next(d);
	dec_tok(d);
}

static void dec_reg(vdec *d, uint32_t id)
{
	lua_pushvalue(d->L, -1);
	lua_rawseti(d->L, d->ids, (lua_Integer)id);
}

/* A property key of an object or array, as a Lua key: array indices of
 * arrays are 1-based integers, every other key a string. */
static void dec_key(vdec *d, int array)
{
	if (array && d->tok.is_index)
		lua_pushinteger(d->L, (lua_Integer)d->tok.index + 1);
	else
		lua_pushlstring(d->L, d->tok.str, d->tok.len);
}

static void push_bigint(lua_State *L, int negative, const unsigned char *mag, size_t len)
{
	uint64_t u = 0;
	size_t i;

	if (len <= 8) {
		for (i = len; i-- > 0;)
			u = (u << 8) | mag[i];
		if (!negative && u <= (uint64_t)INT64_MAX) {
			lua_pushinteger(L, (lua_Integer)u);
			return;
		}
		if (negative && u <= (uint64_t)INT64_MAX + 1) {
			lua_pushinteger(L, (lua_Integer)(~u + 1));
			return;
		}
	}
	luaL_error(L, "cannot read the stored value: a BigInt does not fit in a Lua integer (64 bits)");
}

/* A Map key or Set item must be usable as a table key. */
static void dec_check_key(vdec *d)
{
	lua_State *L = d->L;

	if (lua_isnil(L, -1))
		luaL_error(L, "cannot read the stored value: a Map key or Set item is undefined, "
			"which a Lua table cannot hold");
	if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
		luaL_error(L, "cannot read the stored value: a Map key or Set item is NaN, "
			"which a Lua table cannot hold");
}

static void dec_tok(vdec *d)
{
	lua_State *L = d->L;
	dobj_tok *t = &d->tok;

	luaL_checkstack(L, 8, "stored value nested too deeply");
	switch (t->type) {
	case DOBJ_TOK_UNDEFINED:
		lua_pushnil(L);
		break;
	case DOBJ_TOK_NULL:
		push_null_rt(d->r, L);
		break;
	case DOBJ_TOK_TRUE:
	case DOBJ_TOK_FALSE:
		lua_pushboolean(L, t->type == DOBJ_TOK_TRUE);
		break;
	case DOBJ_TOK_INT32:
		lua_pushinteger(L, t->i32);
		break;
	case DOBJ_TOK_DOUBLE:
		push_jsnumber(L, t->number);
		break;
	case DOBJ_TOK_BIGINT:
		push_bigint(L, t->negative, t->bytes, t->len);
		break;
	case DOBJ_TOK_STRING:
		lua_pushlstring(L, t->str, t->len);
		break;
	case DOBJ_TOK_OBJECT: {
		int tb;
		lua_newtable(L);
		tb = lua_gettop(L);
		dec_reg(d, t->id);
		for (;;) {
			dec_next(d);
			if (t->type == DOBJ_TOK_OBJECT_END)
				break;
			dec_key(d, 0);
			dec_value(d);
			lua_rawset(L, tb);
		}
		break;
	}
	case DOBJ_TOK_ARRAY:
	case DOBJ_TOK_SPARSE: {
		int tb, dense = t->type == DOBJ_TOK_ARRAY;
		dobj_tok_type end = dense ? DOBJ_TOK_ARRAY_END : DOBJ_TOK_SPARSE_END;
		lua_Integer i = 0;
		lua_createtable(L, dense && t->length <= 4096 ? (int)t->length : 0, 0);
		tb = lua_gettop(L);
		dec_reg(d, t->id);
		for (;;) {
			dec_next(d);
			if (t->type == end)
				break;
			if (t->key) {
				dec_key(d, 1);
				dec_value(d);
				lua_rawset(L, tb);
			} else if (t->type == DOBJ_TOK_HOLE) {
				i++;
			} else {
				dec_tok(d);
				lua_rawseti(L, tb, ++i);
			}
		}
		break;
	}
	case DOBJ_TOK_MAP:
	case DOBJ_TOK_SET: {
		int tb, map = t->type == DOBJ_TOK_MAP;
		dobj_tok_type end = map ? DOBJ_TOK_MAP_END : DOBJ_TOK_SET_END;
		lua_newtable(L);
		tb = lua_gettop(L);
		push_mt_r(d->r, L, map ? MT_MAP : MT_SET);
		lua_setmetatable(L, tb);
		dec_reg(d, t->id);
		for (;;) {
			dec_next(d);
			if (t->type == end)
				break;
			dec_tok(d);
			dec_check_key(d);
			if (map)
				dec_value(d);
			else
				lua_pushboolean(L, 1);
			lua_rawset(L, tb);
		}
		break;
	}
	case DOBJ_TOK_DATE:
		push_date_rt(d->r, L, t->number);
		dec_reg(d, t->id);
		break;
	case DOBJ_TOK_BUFFER:
		push_bytes_rt(d->r, L, t->bytes, t->len);
		dec_reg(d, t->id);
		break;
	case DOBJ_TOK_VIEW:
		if (t->buffer_new) {
			/* A later reference to the ArrayBuffer itself gets its bytes. */
			push_bytes_rt(d->r, L, t->buffer, t->buffer_len);
			dec_reg(d, t->buffer_id);
			lua_pop(L, 1);
		}
		push_bytes_rt(d->r, L, t->bytes, t->len);
		dec_reg(d, t->id);
		break;
	case DOBJ_TOK_REF:
		if (lua_rawgeti(L, d->ids, (lua_Integer)t->id) == LUA_TNIL)
			luaL_error(L, "cannot read the stored value: a reference to object %d, "
				"which is not a value Lua can share", (int)t->id);
		break;
	default:
		luaL_error(L, "cannot read the stored value: unexpected token %d", (int)t->type);
	}
}

/* Push the value stored in data[0..len). */
static void decode(lua_State *L, lrt *r, const void *data, size_t len)
{
	vdec d;
	int rc;

	if (!r->de)
		rc = dobj_de_new(&r->de, data, len);
	else
		rc = dobj_de_reset(r->de, data, len);
	if (rc < 0)
		luaL_error(L, "cannot read the stored value: %s", dobj_error_last());
	d.L = L;
	d.r = r;
	d.de = r->de;
	lua_newtable(L);
	d.ids = lua_gettop(L);
	dec_value(&d);
	dec_next(&d);
	if (d.tok.type != DOBJ_TOK_EOF)
		luaL_error(L, "cannot read the stored value: bytes after the value");
	lua_remove(L, d.ids);
}

/* dobj.bytes(s) */
static int l_bytes(lua_State *L)
{
	if (test_ud(L, 1, MT_BYTES))
		lua_getiuservalue(L, 1, 1);
	else
		luaL_checktype(L, 1, LUA_TSTRING);
	lua_settop(L, 1);
	lua_newuserdatauv(L, 0, 1);
	lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	push_mt(L, MT_BYTES);
	lua_setmetatable(L, -2);
	return 1;
}

static int l_bytes_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	check_ud(L, 1, MT_BYTES);
	if (k && strcmp(k, "data") == 0) {
		lua_getiuservalue(L, 1, 1);
		return 1;
	}
	return 0;
}

static int l_bytes_len(lua_State *L)
{
	check_ud(L, 1, MT_BYTES);
	lua_getiuservalue(L, 1, 1);
	lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
	return 1;
}

static int l_bytes_tostring(lua_State *L)
{
	check_ud(L, 1, MT_BYTES);
	lua_getiuservalue(L, 1, 1);
	return 1;
}

static int l_bytes_eq(lua_State *L)
{
	if (!test_ud(L, 1, MT_BYTES) || !test_ud(L, 2, MT_BYTES)) {
		lua_pushboolean(L, 0);
		return 1;
	}
	lua_getiuservalue(L, 1, 1);
	lua_getiuservalue(L, 2, 1);
	lua_pushboolean(L, lua_rawequal(L, -1, -2));
	return 1;
}

/* dobj.date([ms]): a Date; without ms, now. */
static int l_date(lua_State *L)
{
	double ms = lua_isnoneornil(L, 1) ? realtime_ms() : luaL_checknumber(L, 1);
	double *d = lua_newuserdatauv(L, sizeof(double), 0);

	*d = ms;
	push_mt(L, MT_DATE);
	lua_setmetatable(L, -2);
	return 1;
}

static double check_date(lua_State *L, int idx)
{
	return *(double *)check_ud(L, idx, MT_DATE);
}

static int l_date_index(lua_State *L)
{
	double ms = check_date(L, 1);
	const char *k = lua_tostring(L, 2);

	if (k && strcmp(k, "ms") == 0) {
		push_jsnumber(L, ms);
		return 1;
	}
	return 0;
}

static int l_date_eq(lua_State *L)
{
	double *a = test_ud(L, 1, MT_DATE), *b = test_ud(L, 2, MT_DATE);

	/* Invalid dates (NaN) are equal to each other, so that they round-trip. */
	lua_pushboolean(L, a && b && (*a == *b || (*a != *a && *b != *b)));
	return 1;
}

static int l_date_lt(lua_State *L)
{
	lua_pushboolean(L, check_date(L, 1) < check_date(L, 2));
	return 1;
}

static int l_date_le(lua_State *L)
{
	lua_pushboolean(L, check_date(L, 1) <= check_date(L, 2));
	return 1;
}

static int l_date_tostring(lua_State *L)
{
	double ms = check_date(L, 1), s;
	time_t secs;
	struct tm tm;
	char buf[64];

	if (!(ms == ms) || fabs(ms) > 8.64e15) {
		lua_pushliteral(L, "dobj.date(Invalid Date)");
		return 1;
	}
	s = floor(ms / 1e3);
	secs = (time_t)s;
	if (!gmtime_r(&secs, &tm)) {
		lua_pushfstring(L, "dobj.date(%f)", ms);
		return 1;
	}
	snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms - s * 1e3));
	lua_pushfstring(L, "dobj.date(%s)", buf);
	return 1;
}

/* dobj.set{ a, b, c }: a table { [a] = true, ... } stored as a Set. */
static int l_set(lua_State *L)
{
	lua_Integer i, n;

	lua_settop(L, 1);
	lua_newtable(L);
	if (!lua_isnil(L, 1)) {
		luaL_checktype(L, 1, LUA_TTABLE);
		n = (lua_Integer)lua_rawlen(L, 1);
		for (i = 1; i <= n; i++) {
			if (lua_rawgeti(L, 1, i) == LUA_TNIL) {
				lua_pop(L, 1);
				continue;
			}
			lua_pushboolean(L, 1);
			lua_rawset(L, 2);
		}
	}
	push_mt(L, MT_SET);
	lua_setmetatable(L, 2);
	return 1;
}

/* dobj.map([t]): marks t (or a new table) to be stored as a Map. */
static int l_map(lua_State *L)
{
	lua_settop(L, 1);
	if (lua_isnil(L, 1)) {
		lua_newtable(L);
		lua_replace(L, 1);
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	push_mt(L, MT_MAP);
	lua_setmetatable(L, 1);
	return 1;
}

static int l_null_tostring(lua_State *L)
{
	lua_pushliteral(L, "dobj.null");
	return 1;
}

/* pairs() of a list() result: keys in order with their values. */
static int list_iter(lua_State *L)
{
	lua_Integer i = lua_tointeger(L, lua_upvalueindex(2)) + 1;

	lua_pushinteger(L, i);
	lua_replace(L, lua_upvalueindex(2));
	if (lua_rawgeti(L, lua_upvalueindex(1), i) == LUA_TNIL)
		return 1;
	lua_pushvalue(L, -1);
	lua_rawget(L, lua_upvalueindex(1));
	return 2;
}

static int l_list_pairs(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	lua_pushvalue(L, 1);
	lua_pushinteger(L, 0);
	lua_pushcclosure(L, list_iter, 2);
	lua_pushvalue(L, 1);
	lua_pushnil(L);
	return 3;
}

/* -------------------------------------------------------------------- RPC */

/*
 * RPC arguments and results travel as core values (dobj/val.h): the caller
 * turns its Lua values into a dobj_val array, the object turns them back
 * into fresh Lua values (so that the two never share a table), and the
 * result goes the same way back.  The mapping is the storage mapping
 * (docs/lua.md, "Values") plus stubs and IDs of the runtime's namespaces.
 * A table met twice in one call stays shared on the other side; cycles are
 * refused (a dobj_val cannot hold one).  Both converters report failures
 * with dobj_error_set instead of raising, so that what they own is freed
 * before the caller raises.
 */

static void val_free_cb(void *v)
{
	dobj_val_free(v);
}

static void msg_free_cb(void *m)
{
	dobj_msg_free(m);
}

/* Valid UTF-8?  Encoded surrogates are accepted (WTF-8), as by the codec. */
static int utf8_ok(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;

	while (p < end) {
		unsigned c = *p;
		uint32_t cp, min;
		size_t n, i;

		if (c < 0x80) {
			p++;
			continue;
		}
		if ((c & 0xE0) == 0xC0) {
			n = 2, cp = c & 0x1F, min = 0x80;
		} else if ((c & 0xF0) == 0xE0) {
			n = 3, cp = c & 0x0F, min = 0x800;
		} else if ((c & 0xF8) == 0xF0) {
			n = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return 0;
		}
		if ((size_t)(end - p) < n)
			return 0;
		for (i = 1; i < n; i++) {
			if ((p[i] & 0xC0) != 0x80)
				return 0;
			cp = (cp << 6) | (p[i] & 0x3F);
		}
		if (cp < min || cp > 0x10FFFF)
			return 0;
		p += n;
	}
	return 1;
}

/* Lua -> dobj_val. */
typedef struct vout {
	lua_State *L;
	lrt *r;
	int seen;          /* stack slot: nil, or { table -> light userdata (done) or false (in progress) } */
	int depth;
	const char *where; /* "argument 2", "the result" */
} vout;

static dobj_val *vout_fail_hint(vout *o, const char *what, const char *hint)
{
	dobj_error_set(DOBJ_EARG, "cannot send %s over RPC (%s)%s%s", what, o->where,
		hint ? ": " : "", hint ? hint : "");
	return NULL;
}

static dobj_val *vout_fail(vout *o, const char *what)
{
	return vout_fail_hint(o, what, NULL);
}

static dobj_val *to_val(vout *o, int idx);

/* The namespace of runtime r whose ID key is `key` (an ID's namespace). */
static dobj_ns *ns_of_key(lrt *r, const dobj_idkey *key)
{
	size_t i, n = dobj_rt_ns_count(r->rt);

	for (i = 0; i < n; i++)
		if (dobj_ns_idkey(dobj_rt_ns_at(r->rt, i)) == key)
			return dobj_rt_ns_at(r->rt, i);
	return NULL;
}

static dobj_val *ud_to_val(vout *o, int idx)
{
	lua_State *L = o->L;
	const void *mt = NULL;
	const void *const *mts = o->r->mod->mt;
	dobj_val *v;
	size_t len = 0;
	const char *p;

	if (lua_getmetatable(L, idx)) {
		mt = lua_topointer(L, -1);
		lua_pop(L, 1);
	}
	if (mt && mt == mts[MT_NULL])
		return dobj_val_null();
	if (mt && mt == mts[MT_BYTES]) {
		lua_getiuservalue(L, idx, 1);
		p = lua_tolstring(L, -1, &len);
		v = dobj_val_bytes(p, len);
		lua_pop(L, 1);
		return v;
	}
	if (mt && mt == mts[MT_DATE])
		return dobj_val_date(*(double *)lua_touserdata(L, idx));
	if (mt && mt == mts[MT_STUB]) {
		lstub *s = lua_touserdata(L, idx);
		dobj_ns *ns;
		if (!s->stub)
			return vout_fail(o, "a closed stub");
		ns = dobj_stub_ns(s->stub);
		if (dobj_ns_rt(ns) != o->r->rt)
			return vout_fail(o, "a stub of another runtime");
		p = dobj_stub_name(s->stub, &len);
		return dobj_val_stub(ns, dobj_stub_id(s->stub), p, len);
	}
	if (mt && mt == mts[MT_ID]) {
		lid *d = lua_touserdata(L, idx);
		dobj_ns *ns = ns_of_key(o->r, d->key);
		if (!ns)
			return vout_fail(o, "an ID of another runtime");
		lua_getiuservalue(L, idx, 1);
		p = lua_tolstring(L, -1, &len);
		v = dobj_val_id(ns, &d->id, p, len);
		lua_pop(L, 1);
		return v;
	}
	if (luaL_getmetafield(L, idx, "__name") == LUA_TSTRING) {
		char what[96];
		snprintf(what, sizeof(what), "a value of type userdata (%s)", lua_tostring(L, -1));
		lua_pop(L, 1);
		return vout_fail(o, what);
	}
	return vout_fail(o, "a value of type userdata");
}

static dobj_val *table_to_val(vout *o, int idx)
{
	lua_State *L = o->L;
	lua_Integer n = 0, i;
	dobj_val *v;
	int kind, t;

	if (lua_isnil(L, o->seen)) {
		lua_newtable(L);
		lua_replace(L, o->seen);
	}
	lua_pushvalue(L, idx);
	t = lua_rawget(L, o->seen);
	if (t == LUA_TLIGHTUSERDATA) {
		v = lua_touserdata(L, -1);
		lua_pop(L, 1);
		return dobj_val_ref(v); /* shared, as structured clone keeps it */
	}
	lua_pop(L, 1);
	if (t == LUA_TBOOLEAN)
		return vout_fail(o, "a cyclic table (a table that contains itself)");
	if (o->depth >= DOBJ_VALUE_MAX_DEPTH)
		return vout_fail(o, "tables nested deeper than 256");
	if (!lua_checkstack(L, 8)) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory (Lua stack)");
		return NULL;
	}
	kind = table_kind_at(L, o->r, idx, &n);
	v = kind == TK_ARRAY ? dobj_val_array() : kind == TK_OBJECT ? dobj_val_object()
		: kind == TK_MAP ? dobj_val_map() : dobj_val_set();
	if (!v)
		return NULL;
	lua_pushvalue(L, idx);
	lua_pushboolean(L, 0);
	lua_rawset(L, o->seen);
	o->depth++;
	if (kind == TK_ARRAY) {
		for (i = 1; i <= n; i++) {
			dobj_val *item;
			lua_rawgeti(L, idx, i);
			item = to_val(o, lua_gettop(L));
			lua_pop(L, 1);
			if (!item || dobj_val_push(v, item) < 0)
				goto fail;
		}
	} else {
		lua_pushnil(L);
		while (lua_next(L, idx)) {
			int vi = lua_gettop(L), ki = vi - 1, rc = 0;
			dobj_val *key, *item;
			if (kind == TK_OBJECT) {
				size_t klen;
				const char *k = lua_tolstring(L, ki, &klen); /* a string: no conversion */
				if (!utf8_ok(k, klen)) {
					vout_fail_hint(o, "a table key that is not valid UTF-8", "use a "
						"dobj.map table to send binary keys as dobj.bytes");
					rc = -1;
				} else {
					item = to_val(o, vi);
					rc = item ? dobj_val_put(v, k, klen, item) : -1;
				}
			} else if (kind == TK_MAP) {
				key = to_val(o, ki);
				item = key ? to_val(o, vi) : NULL;
				if (!item) {
					dobj_val_free(key);
					rc = -1;
				} else {
					rc = dobj_val_map_put(v, key, item);
				}
			} else if (lua_toboolean(L, vi)) { /* a Set: the keys whose value is true */
				item = to_val(o, ki);
				rc = item ? dobj_val_push(v, item) : -1;
			}
			lua_pop(L, 1);
			if (rc < 0) {
				lua_pop(L, 1);
				goto fail;
			}
		}
	}
	o->depth--;
	lua_pushvalue(L, idx);
	lua_pushlightuserdata(L, v);
	lua_rawset(L, o->seen);
	return v;
fail:
	dobj_val_free(v);
	return NULL;
}

static dobj_val *to_val(vout *o, int idx)
{
	lua_State *L = o->L;

	switch (lua_type(L, idx)) {
	case LUA_TNIL:
	case LUA_TNONE:
		return dobj_val_undefined();
	case LUA_TBOOLEAN:
		return dobj_val_bool(lua_toboolean(L, idx));
	case LUA_TNUMBER:
		if (lua_isinteger(L, idx)) {
			lua_Integer i = lua_tointeger(L, idx);
			if (i >= -MAX_SAFE_INT && i <= MAX_SAFE_INT)
				return dobj_val_number((double)i);
			return dobj_val_bigint_i64((int64_t)i);
		}
		return dobj_val_number(lua_tonumber(L, idx));
	case LUA_TSTRING: {
		size_t len;
		const char *p = lua_tolstring(L, idx, &len);
		if (!utf8_ok(p, len))
			return vout_fail_hint(o, "a string that is not valid UTF-8",
				"wrap binary data in dobj.bytes(s)");
		return dobj_val_string(p, len);
	}
	case LUA_TTABLE:
		return table_to_val(o, idx);
	case LUA_TUSERDATA:
		return ud_to_val(o, idx);
	default: {
		char what[64];
		snprintf(what, sizeof(what), "a value of type %s", luaL_typename(L, idx));
		return vout_fail(o, what);
	}
	}
}

/* dobj_val -> Lua. */
typedef struct vin {
	lua_State *L;
	lrt *r;
	int seen; /* stack slot: nil, or { light userdata (a dobj_val) -> table } */
	int depth;
} vin;

static int vin_fail(const char *why)
{
	return dobj_error_set(DOBJ_EARG, "cannot receive the RPC value: %s", why);
}

/* A stub or an ID of one of the runtime's namespaces. */
static int push_ref(vin *in, const dobj_val *v)
{
	lua_State *L = in->L;
	lrt *r = in->r;
	const dobj_id *id;
	const char *name;
	size_t len;
	dobj_ns *ns = dobj_val_get_ref(v, &id, &name, &len);
	lstub *s;
	lid *d;
	int nsidx, rc;

	lua_rawgetp(r->A, A_NSMAP, ns);
	lua_xmove(r->A, L, 1);
	if (!lua_isuserdata(L, -1)) {
		lua_pop(L, 1);
		return vin_fail("a stub or ID of a namespace this runtime does not have");
	}
	nsidx = lua_gettop(L);
	d = push_id(L, dobj_ns_idkey(ns), 1, r);
	d->id = *id;
	if (name) {
		lua_pushlstring(L, name, len);
		lua_setiuservalue(L, -2, 1);
	}
	if (dobj_val_type_of(v) == DOBJ_VAL_ID) {
		lua_replace(L, nsidx);
		return DOBJ_OK;
	}
	s = lua_newuserdatauv(L, sizeof(*s), 2);
	s->stub = NULL;
	s->r = r;
	push_mt_r(r, L, MT_STUB);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, nsidx);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, nsidx + 1);
	lua_setiuservalue(L, -2, 2);
	rc = dobj_stub_new(&s->stub, ns, id, name, len);
	lua_replace(L, nsidx);
	lua_pop(L, 1);
	return rc;
}

static int push_val(vin *in, const dobj_val *v)
{
	lua_State *L = in->L;
	dobj_val_type type = dobj_val_type_of(v);
	size_t i, n, len;
	int tb, rc;

	if (!lua_checkstack(L, 8))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory (Lua stack)");
	switch (type) {
	case DOBJ_VAL_UNDEFINED:
		lua_pushnil(L);
		return DOBJ_OK;
	case DOBJ_VAL_NULL:
		push_null_rt(in->r, L);
		return DOBJ_OK;
	case DOBJ_VAL_BOOL:
		lua_pushboolean(L, dobj_val_get_bool(v));
		return DOBJ_OK;
	case DOBJ_VAL_NUMBER:
		push_jsnumber(L, dobj_val_get_number(v));
		return DOBJ_OK;
	case DOBJ_VAL_DATE:
		push_date_rt(in->r, L, dobj_val_get_number(v));
		return DOBJ_OK;
	case DOBJ_VAL_BIGINT: {
		int neg = 0;
		const unsigned char *mag = dobj_val_get_bigint(v, &neg, &len);
		uint64_t u = 0;
		if (len <= 8) {
			for (i = len; i-- > 0;)
				u = (u << 8) | mag[i];
			if (!neg && u <= (uint64_t)INT64_MAX) {
				lua_pushinteger(L, (lua_Integer)u);
				return DOBJ_OK;
			}
			if (neg && u <= (uint64_t)INT64_MAX + 1) {
				lua_pushinteger(L, (lua_Integer)(~u + 1));
				return DOBJ_OK;
			}
		}
		return vin_fail("a BigInt does not fit in a Lua integer (64 bits)");
	}
	case DOBJ_VAL_STRING: {
		const char *p = dobj_val_get_string(v, &len);
		lua_pushlstring(L, p, len);
		return DOBJ_OK;
	}
	case DOBJ_VAL_BYTES: {
		const void *p = dobj_val_get_bytes(v, &len);
		push_bytes_rt(in->r, L, p, len);
		return DOBJ_OK;
	}
	case DOBJ_VAL_STUB:
	case DOBJ_VAL_ID:
		return push_ref(in, v);
	default:
		break;
	}
	/* Containers. */
	if (lua_isnil(L, in->seen)) {
		lua_newtable(L);
		lua_replace(L, in->seen);
	}
	if (lua_rawgetp(L, in->seen, v) == LUA_TTABLE)
		return DOBJ_OK;
	lua_pop(L, 1);
	if (in->depth >= DOBJ_VALUE_MAX_DEPTH)
		return vin_fail("tables nested deeper than 256");
	n = dobj_val_len(v);
	lua_createtable(L, type == DOBJ_VAL_ARRAY && n <= 4096 ? (int)n : 0,
		type == DOBJ_VAL_OBJECT && n <= 4096 ? (int)n : 0);
	tb = lua_gettop(L);
	if (type == DOBJ_VAL_MAP || type == DOBJ_VAL_SET) {
		push_mt_r(in->r, L, type == DOBJ_VAL_MAP ? MT_MAP : MT_SET);
		lua_setmetatable(L, tb);
	}
	lua_pushvalue(L, tb);
	lua_rawsetp(L, in->seen, v);
	in->depth++;
	for (i = 0; i < n; i++) {
		switch (type) {
		case DOBJ_VAL_ARRAY:
			if ((rc = push_val(in, dobj_val_at(v, i))) < 0)
				return rc;
			lua_rawseti(L, tb, (lua_Integer)i + 1); /* undefined: a hole */
			break;
		case DOBJ_VAL_OBJECT: {
			const char *k = dobj_val_key_at(v, i, &len);
			lua_pushlstring(L, k, len);
			if ((rc = push_val(in, dobj_val_at(v, i))) < 0)
				return rc;
			lua_rawset(L, tb);
			break;
		}
		default: /* Map, Set */
			if ((rc = push_val(in, type == DOBJ_VAL_MAP ? dobj_val_map_key_at(v, i)
				    : dobj_val_at(v, i))) < 0)
				return rc;
			if (lua_isnil(L, -1))
				return vin_fail("a Map key or Set item is undefined, which a Lua table "
					"cannot hold");
			if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
				return vin_fail("a Map key or Set item is NaN, which a Lua table cannot hold");
			if (type == DOBJ_VAL_MAP) {
				if ((rc = push_val(in, dobj_val_at(v, i))) < 0)
					return rc;
			} else {
				lua_pushboolean(L, 1);
			}
			lua_rawset(L, tb);
			break;
		}
	}
	in->depth--;
	return DOBJ_OK;
}

/* ------------------------------------------------------- RPC: the object */

/* Callable over RPC: not private, not a lifecycle handler. */
static int rpc_name_callable(const char *name)
{
	return name && name[0] != '_' && strcmp(name, "fetch") != 0 &&
		strcmp(name, "alarm") != 0 && strcmp(name, "new") != 0;
}

/* After the method: (instance, class, seen slot, results...) -> the first
 * result as a dobj_val (light userdata), which finish_ok hands to the core. */
static int rpc_tramp_k(lua_State *L, int status, lua_KContext ctx)
{
	lclass *k = (lclass *)ctx;
	dobj_val *v;
	vout o;

	(void)status;
	lua_pushnil(L);
	lua_replace(L, 3);
	o.L = L;
	o.r = k->r;
	o.seen = 3;
	o.depth = 0;
	o.where = "the result";
	v = to_val(&o, 4);
	if (!v)
		return raise_plain(L, dobj_error_last());
	lua_settop(L, 0);
	lua_pushlightuserdata(L, v);
	return 1;
}

/*
 * The body of an RPC call's coroutine: (instance, class) -> result.  The
 * method is looked up in the class table (lua_getfield: inherited methods
 * count), never in the instance, so instance fields are not callable.
 */
static int rpc_tramp(lua_State *L)
{
	lclass *k = lua_touserdata(L, 2);
	dobj_task *t = cur_co->task;
	const char *name = dobj_task_method(t);
	const dobj_val *args = dobj_task_request(t);
	size_t i, n = dobj_val_len(args);
	vin in;

	lua_settop(L, 2);
	lua_pushnil(L); /* 3: the seen slot of the converters */
	if (!rpc_name_callable(name))
		goto missing;
	push_slot(k->r, L, SLOTV(k->slot));
	lua_getfield(L, 4, name);
	if (lua_type(L, -1) != LUA_TFUNCTION)
		goto missing;
	lua_replace(L, 4);
	lua_pushvalue(L, 1);
	if (n > 200000 || !lua_checkstack(L, (int)n + 8))
		return luaL_error(L, "too many RPC arguments (%d)", (int)n);
	in.L = L;
	in.r = k->r;
	in.seen = 3;
	in.depth = 0;
	for (i = 0; i < n; i++)
		if (push_val(&in, dobj_val_at(args, i)) < 0)
			return raise_plain(L, dobj_error_last());
	lua_callk(L, (int)n + 1, LUA_MULTRET, (lua_KContext)k, rpc_tramp_k);
	return rpc_tramp_k(L, LUA_OK, (lua_KContext)k);
missing:
	lua_pushfstring(L, "The RPC receiver does not implement the method \"%s\".", name ? name : "");
	return lua_error(L);
}

/* ------------------------------------------------------- RPC: the caller */

/* The response of a native class's fetch, as a dobj.response. */
static void push_msg_response(lua_State *L, lrt *r, const dobj_msg *m)
{
	size_t i;

	lua_createtable(L, 0, 3);
	lua_pushlstring(L, m->body ? (const char *)m->body : "", m->body ? m->body_len : 0);
	lua_setfield(L, -2, "body");
	lua_pushinteger(L, m->status);
	lua_setfield(L, -2, "status");
	if (m->nheaders) {
		lua_createtable(L, 0, (int)m->nheaders);
		for (i = 0; i < m->nheaders; i++) {
			lua_pushstring(L, m->header_values[i]);
			lua_setfield(L, -2, m->header_names[i]);
		}
		lua_setfield(L, -2, "headers");
	}
	push_mt_r(r, L, MT_RESPONSE);
	lua_setmetatable(L, -2);
}

/* A Lua request (made by push_request at ri) as a dobj_msg for a native class. */
static dobj_msg *msg_from_request(lua_State *L, int ri)
{
	dobj_msg *m;
	const char *url, *method, *body;
	size_t blen = 0;
	int ok = 1;

	lua_getfield(L, ri, "url");
	lua_getfield(L, ri, "method");
	url = lua_tostring(L, -2);
	method = lua_tostring(L, -1);
	m = dobj_msg_new_request(url ? url : "", method ? method : "GET");
	lua_pop(L, 2);
	if (!m)
		return NULL;
	lua_pushliteral(L, "headers");
	if (lua_rawget(L, ri) == LUA_TTABLE) {
		lua_pushnil(L);
		while (lua_next(L, -2)) {
			const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
			if (k && v && dobj_msg_set_header(m, k, v) < 0)
				ok = 0;
			lua_pop(L, 1);
		}
	}
	lua_pop(L, 1);
	lua_getfield(L, ri, "body");
	body = lua_tolstring(L, -1, &blen);
	if (body && blen && dobj_msg_set_body(m, body, blen) < 0)
		ok = 0;
	lua_pop(L, 1);
	if (!ok) {
		dobj_msg_free(m);
		return NULL;
	}
	return m;
}

/* Push the core value result of a finished call (RPC: a dobj_val; fetch to
 * a native class: a dobj_msg), or raise if it does not convert.  Drops t. */
static int core_outcome(lua_State *L, lrt *r, dobj_task *t)
{
	int rpc = dobj_task_call_kind(t) == DOBJ_CALL_RPC, top = lua_gettop(L), rc;
	void *res = dobj_task_take_result(t);
	vin in;

	dobj_task_unref(t);
	if (!rpc) {
		push_msg_response(L, r, res);
		dobj_msg_free(res);
		return 1;
	}
	lua_pushnil(L);
	in.L = L;
	in.r = r;
	in.seen = top + 1;
	in.depth = 0;
	rc = push_val(&in, res);
	dobj_val_free(res);
	if (rc < 0) {
		lua_settop(L, top);
		return raise_core_error(L, dobj_error_last());
	}
	lua_remove(L, top + 1);
	return 1;
}

/* stub:NAME(...): an RPC call (upvalues: module state, NAME). */
static int l_stub_rpc(lua_State *L)
{
	const char *name = lua_tostring(L, lua_upvalueindex(2));
	lstub *s = test_ud(L, 1, MT_STUB);
	char where[32];
	dobj_val *args;
	dobj_task *t;
	lrt *r;
	lco *c;
	vout o;
	int i, top, rc;

	if (!s)
		return luaL_error(L, "stub:%s(...) is an RPC method: call it with a colon", name);
	if (!s->stub)
		return luaL_error(L, "the stub is closed");
	r = s->r;
	c = task_here(L, r);
	{
		char what[80];
		snprintf(what, sizeof(what), "stub:%.60s()", name);
		check_can_wait(L, r, c, what);
	}
	/* Every argument converts before anything is sent. */
	top = lua_gettop(L);
	args = dobj_val_array();
	if (!args)
		return raise_core_error(L, dobj_error_last());
	lua_pushnil(L);
	o.L = L;
	o.r = r;
	o.seen = top + 1;
	o.depth = 0;
	o.where = where;
	for (i = 2; i <= top; i++) {
		dobj_val *v;
		snprintf(where, sizeof(where), "argument %d", i - 1);
		v = to_val(&o, i);
		if (!v || dobj_val_push(args, v) < 0) {
			dobj_val_free(args);
			lua_settop(L, top);
			return raise_core_error(L, dobj_error_last());
		}
	}
	lua_settop(L, top);
	/* A native method checks arity and types here, in the caller, before
	 * anything is delivered. */
	if (dobj_native_check(dobj_stub_ns(s->stub), name, args) < 0 &&
	    dobj_error_last_code() != DOBJ_ENOHANDLER) { /* a missing method is the object's answer */
		dobj_val_free(args);
		return raise_core_error(L, dobj_error_last());
	}
	rc = dobj_stub_call_ex(&t, s->stub, DOBJ_CALL_RPC, name, NULL, 0, args, val_free_cb,
		c ? wake_waiter : NULL, c);
	if (rc < 0)
		return raise_core_error(L, dobj_error_last());
	return await_call(L, s, c, t);
}

/* ----------------------------------------------------------------- storage */

typedef struct lstore {
	lrt *r;
} lstore; /* user values: 1 the ctx userdata, 2 the sql userdata (made on first use) */

enum { TXN_OPEN, TXN_DONE, TXN_ROLLED };

typedef struct ltxn {
	lrt *r;
	int depth;   /* savepoint depth it opened */
	int state;
} ltxn; /* user value 1: the storage userdata */

typedef struct lsql {
	lrt *r;
} lsql; /* user value 1: the storage userdata */

static int st_fail(lua_State *L)
{
	return raise_plain(L, dobj_error_last());
}

/* The ctx behind a storage userdata at idx (pushed nothing). */
static lctx *store_ctx(lua_State *L, int idx)
{
	lctx *x;

	lua_getiuservalue(L, idx, 1);
	x = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return x;
}

/*
 * The core storage behind the storage or transaction at idx.  Looked up on
 * every call: it belongs to the incarnation, and eviction or abort ends it.
 */
static dobj_storage *storage_at(lua_State *L, int idx, lrt **rp)
{
	lstore *s = test_ud(L, idx, MT_STORAGE);
	dobj_storage *st;
	lctx *x;

	idx = lua_absindex(L, idx);
	if (s) {
		x = store_ctx(L, idx);
	} else {
		ltxn *t = check_ud(L, idx, MT_TXN);
		if (t->state != TXN_OPEN)
			luaL_error(L, t->state == TXN_ROLLED ? "the transaction was rolled back"
				: "the transaction has finished");
		lua_getiuservalue(L, idx, 1);
		s = lua_touserdata(L, -1);
		x = store_ctx(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	if (!x || !x->obj)
		luaL_error(L, "the object was reset or evicted (this storage belongs to a previous "
			"instance)");
	if (dobj_obj_storage(x->obj, &st) < 0)
		st_fail(L);
	if (rp)
		*rp = s->r;
	return st;
}

static const char *check_key(lua_State *L, int idx, size_t *len)
{
	if (lua_type(L, idx) != LUA_TSTRING)
		luaL_error(L, "storage keys must be strings (got %s)", luaL_typename(L, idx));
	return lua_tolstring(L, idx, len);
}

static int l_st_get(lua_State *L)
{
	lrt *r;
	dobj_storage *st = storage_at(L, 1, &r);
	const void *v;
	size_t klen, vlen;
	const char *k;
	int rc;

	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_Integer i, n = (lua_Integer)lua_rawlen(L, 2);
		if (dobj_kv_check_count((size_t)n, "get") < 0)
			return st_fail(L);
		lua_settop(L, 2);
		lua_createtable(L, 0, (int)n);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, 2, i);
			k = check_key(L, 4, &klen);
			rc = dobj_kv_get(st, k, klen, &v, &vlen);
			if (rc < 0)
				return st_fail(L);
			if (rc == 1) {
				decode(L, r, v, vlen);
				lua_rawset(L, 3);
			} else {
				lua_pop(L, 1);
			}
		}
		return 1;
	}
	k = check_key(L, 2, &klen);
	rc = dobj_kv_get(st, k, klen, &v, &vlen);
	if (rc < 0)
		return st_fail(L);
	if (rc == 0)
		lua_pushnil(L);
	else
		decode(L, r, v, vlen);
	return 1;
}

static int l_st_put(lua_State *L)
{
	lrt *r;
	dobj_storage *st = storage_at(L, 1, &r);
	const unsigned char *blob;
	size_t klen, blen;
	const char *k;

	if (lua_type(L, 2) == LUA_TTABLE) {
		/* Every key and value is checked and encoded before anything is written. */
		lua_Integer n = 0, i;
		lua_settop(L, 2);
		lua_newtable(L); /* 3: { key1, blob1, key2, blob2, ... } */
		lua_pushnil(L);
		while (lua_next(L, 2)) {
			k = check_key(L, -2, &klen);
			if (dobj_kv_check_key(klen) < 0)
				return st_fail(L);
			blob = encode(L, r, -1, &blen);
			if (dobj_kv_check_value(blen) < 0)
				return st_fail(L);
			lua_pop(L, 1);
			lua_pushvalue(L, -1);
			lua_rawseti(L, 3, ++n);
			lua_pushlstring(L, (const char *)blob, blen);
			lua_rawseti(L, 3, ++n);
		}
		if (dobj_kv_check_count((size_t)(n / 2), "put") < 0)
			return st_fail(L);
		for (i = 1; i <= n; i += 2) {
			lua_rawgeti(L, 3, i);
			lua_rawgeti(L, 3, i + 1);
			k = lua_tolstring(L, -2, &klen);
			blob = (const unsigned char *)lua_tolstring(L, -1, &blen);
			if (dobj_kv_put(st, k, klen, blob, blen) < 0)
				return st_fail(L);
			lua_pop(L, 2);
		}
		return 0;
	}
	k = check_key(L, 2, &klen);
	if (dobj_kv_check_key(klen) < 0)
		return st_fail(L);
	blob = encode(L, r, 3, &blen);
	if (dobj_kv_put(st, k, klen, blob, blen) < 0)
		return st_fail(L);
	return 0;
}

static int l_st_delete(lua_State *L)
{
	dobj_storage *st = storage_at(L, 1, NULL);
	size_t klen;
	const char *k;
	int rc;

	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_Integer i, n = (lua_Integer)lua_rawlen(L, 2), count = 0;
		if (dobj_kv_check_count((size_t)n, "delete") < 0)
			return st_fail(L);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, 2, i);
			k = check_key(L, -1, &klen);
			rc = dobj_kv_delete(st, k, klen);
			if (rc < 0)
				return st_fail(L);
			count += rc;
			lua_pop(L, 1);
		}
		lua_pushinteger(L, count);
		return 1;
	}
	k = check_key(L, 2, &klen);
	rc = dobj_kv_delete(st, k, klen);
	if (rc < 0)
		return st_fail(L);
	lua_pushboolean(L, rc);
	return 1;
}

typedef struct listarg {
	lua_State *L;
	lrt *r;
	lua_Integer n;
	const char *key;
	size_t klen;
	const void *val;
	size_t vlen;
} listarg;

/* (result, listarg) under lua_pcall: decode one row into the result. */
static int list_row_p(lua_State *L)
{
	listarg *a = lua_touserdata(L, 2);

	lua_pushlstring(L, a->key, a->klen);
	lua_pushvalue(L, -1);
	lua_rawseti(L, 1, ++a->n);
	decode(L, a->r, a->val, a->vlen);
	lua_rawset(L, 1);
	return 0;
}

/* Called by the core for each row.  A Lua error must not unwind through the
 * core's frames (its statement is still running), so the row is decoded
 * under lua_pcall; a failure stops the listing with the error on the stack. */
static int list_row(void *arg, const char *key, size_t klen, const void *v, size_t vlen)
{
	listarg *a = arg;
	lua_State *L = a->L;

	a->key = key;
	a->klen = klen;
	a->val = v;
	a->vlen = vlen;
	lua_pushcfunction(L, list_row_p);
	lua_pushvalue(L, -2); /* the result table, just below */
	lua_pushlightuserdata(L, a);
	return lua_pcall(L, 2, 0, 0) == LUA_OK ? 0 : 1;
}

static const char *opt_string(lua_State *L, int t, const char *name, size_t *len)
{
	lua_getfield(L, t, name);
	if (lua_isnil(L, -1))
		return NULL;
	if (lua_type(L, -1) != LUA_TSTRING)
		luaL_error(L, "list option %s must be a string (got %s)", name, luaL_typename(L, -1));
	return lua_tolstring(L, -1, len); /* stays on the stack while the list runs */
}

static int l_st_list(lua_State *L)
{
	lrt *r;
	dobj_storage *st = storage_at(L, 1, &r);
	dobj_kv_list_opts o = DOBJ_KV_LIST_OPTS_INIT;
	listarg arg;
	int rc;

	lua_settop(L, 2);
	if (!lua_isnil(L, 2)) {
		luaL_checktype(L, 2, LUA_TTABLE);
		o.start = opt_string(L, 2, "start", &o.start_len);
		o.start_after = opt_string(L, 2, "start_after", &o.start_after_len);
		o.end = opt_string(L, 2, "end", &o.end_len);
		o.prefix = opt_string(L, 2, "prefix", &o.prefix_len);
		lua_getfield(L, 2, "reverse");
		o.reverse = lua_toboolean(L, -1);
		lua_getfield(L, 2, "limit");
		if (!lua_isnil(L, -1)) {
			lua_Number lim = lua_tonumber(L, -1);
			if (lua_type(L, -1) != LUA_TNUMBER)
				return luaL_error(L, "list option limit must be a number");
			if (!(lim >= 1))
				return raise_plain(L, DOBJ_MSG_LIST_LIMIT);
			o.limit = lim >= 9e18 ? -1 : (long long)lim;
		}
	}
	lua_newtable(L);
	push_mt(L, MT_LIST);
	lua_setmetatable(L, -2);
	luaL_checkstack(L, 8, "list");
	memset(&arg, 0, sizeof(arg));
	arg.r = r;
	arg.L = L;
	rc = dobj_kv_list(st, &o, list_row, &arg);
	if (rc > 0)
		return lua_error(L); /* a row could not be decoded */
	if (rc < 0)
		return st_fail(L);
	return 1;
}

static int l_st_delete_all(lua_State *L)
{
	if (dobj_kv_delete_all(storage_at(L, 1, NULL)) < 0)
		return st_fail(L);
	return 0;
}

static int l_st_sync(lua_State *L)
{
	if (dobj_storage_sync(storage_at(L, 1, NULL)) < 0)
		return st_fail(L);
	return 0;
}

static int l_st_set_alarm(lua_State *L)
{
	dobj_storage *st = storage_at(L, 1, NULL);
	double ms = test_ud(L, 2, MT_DATE) ? check_date(L, 2) : luaL_checknumber(L, 2);

	if (dobj_alarm_set(st, ms) < 0)
		return st_fail(L);
	return 0;
}

static int l_st_get_alarm(lua_State *L)
{
	dobj_storage *st = storage_at(L, 1, NULL);
	double ms;
	int rc = dobj_alarm_get(st, &ms);

	if (rc < 0)
		return st_fail(L);
	if (rc == 0)
		lua_pushnil(L);
	else
		push_ms(L, ms);
	return 1;
}

static int l_st_delete_alarm(lua_State *L)
{
	if (dobj_alarm_delete(storage_at(L, 1, NULL)) < 0)
		return st_fail(L);
	return 0;
}

/* A transaction object for the storage (or transaction) at 1; pushed. */
static ltxn *push_txn(lua_State *L, lrt *r, dobj_storage *st)
{
	ltxn *t = lua_newuserdatauv(L, sizeof(*t), 1);

	t->r = r;
	t->state = TXN_DONE;
	t->depth = 0;
	push_mt(L, MT_TXN);
	lua_setmetatable(L, -2);
	if (test_ud(L, 1, MT_TXN))
		lua_getiuservalue(L, 1, 1);
	else
		lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	if (dobj_txn_begin(st) < 0)
		st_fail(L);
	t->depth = dobj_txn_depth(st);
	t->state = TXN_OPEN;
	return t;
}

/*
 * Close the transaction at idx after its function ran (ok or not): commit or
 * roll back, unless the function rolled back itself or the object is gone
 * (its storage then discarded the writes).  Returns the storage or NULL.
 */
static dobj_storage *txn_close(lua_State *L, int idx, int ok, int *failed)
{
	ltxn *t = lua_touserdata(L, idx);
	dobj_storage *st = NULL;
	lctx *x;
	int state = t->state;

	*failed = 0;
	t->state = state == TXN_ROLLED ? TXN_ROLLED : TXN_DONE;
	lua_getiuservalue(L, idx, 1);
	x = store_ctx(L, lua_gettop(L));
	lua_pop(L, 1);
	if (!x || !x->obj || dobj_obj_storage(x->obj, &st) < 0)
		return NULL;
	if (state == TXN_OPEN && dobj_txn_depth(st) == t->depth) {
		if ((ok ? dobj_txn_commit(st) : dobj_txn_rollback(st)) < 0)
			*failed = 1;
	}
	return st;
}

/* storage:transaction_sync(fn): fn(txn) in a transaction; it may not yield. */
static int l_st_transaction_sync(lua_State *L)
{
	lrt *r;
	dobj_storage *st = storage_at(L, 1, &r);
	int status, failed, base;

	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_settop(L, 2);
	push_txn(L, r, st);          /* 3 */
	base = lua_gettop(L);
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 3);
	status = lua_pcall(L, 1, LUA_MULTRET, 0);
	txn_close(L, 3, status == LUA_OK, &failed);
	if (status != LUA_OK)
		return lua_error(L);
	if (failed)
		return st_fail(L);
	return lua_gettop(L) - base;
}

/* Body of transaction(): runs as a block_concurrency_while task with
 * (txn, fn).  Returns true, fn's results or false, the error: a failing
 * transaction must not reset the object, as a failing block would. */
static int txn_body_k(lua_State *L, int status, lua_KContext ctx)
{
	int ok = status == LUA_OK || status == LUA_YIELD, failed;
	dobj_storage *st;

	(void)ctx;
	st = txn_close(L, 1, ok, &failed);
	/* An explicit transaction that spanned steps leaves the step's implicit
	 * transaction open without marking it for commit (CORE_NOTES 6): commit
	 * it now that the outermost transaction is over. */
	if (st && dobj_txn_depth(st) == 0 && dobj_storage_sync(st) < 0 && ok) {
		failed = 1;
	}
	if (ok && failed) {
		lua_settop(L, 0);
		lua_pushboolean(L, 0);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	if (!ok) {
		lua_pushboolean(L, 0);
		lua_insert(L, -2);
		return 2;
	}
	lua_pushboolean(L, 1);
	lua_replace(L, 2); /* fn's slot: true, results... */
	return lua_gettop(L) - 1;
}

static int txn_body(lua_State *L)
{
	lua_settop(L, 2);
	lua_pushvalue(L, 2);
	lua_pushvalue(L, 1);
	return txn_body_k(L, lua_pcallk(L, 1, LUA_MULTRET, 0, 0, txn_body_k), 0);
}

/* The handler that waited for transaction(): (true, results) or (false, err). */
static int txn_wait_k(lua_State *L, int status, lua_KContext ctx)
{
	lco *c = (lco *)ctx;
	int n, base;

	(void)status;
	n = block_results(L, c);
	base = lua_gettop(L) - n;
	if (!lua_toboolean(L, base + 1)) {
		lua_pushvalue(L, base + 2);
		return lua_error(L);
	}
	return n - 1;
}

/*
 * storage:transaction(fn): from a handler of the object, fn(txn) runs with
 * the object's other events held back (it may yield: fetch, sleep), like
 * ctx:block_concurrency_while.  Elsewhere (constructor, main chunk) it is
 * transaction_sync.
 */
static int l_st_transaction(lua_State *L)
{
	lrt *r;
	dobj_storage *st = storage_at(L, 1, &r);
	lctx *x;
	lco *c = task_here(L, r);
	dobj_task *t;

	luaL_checktype(L, 2, LUA_TFUNCTION);
	lua_settop(L, 2);
	if (test_ud(L, 1, MT_TXN)) {
		lua_getiuservalue(L, 1, 1);
		x = store_ctx(L, 3);
		lua_pop(L, 1);
	} else {
		x = store_ctx(L, 1);
	}
	if (!c || dobj_task_obj(c->task) != x->obj || !lua_isyieldable(L))
		return l_st_transaction_sync(L);
	push_txn(L, r, st);                       /* 3: txn */
	lua_pushvalue(L, MODIDX);
	lua_pushcclosure(L, txn_body, 1);         /* 4: body */
	lua_pushvalue(L, 3);
	lua_pushvalue(L, 2);                      /* body, txn, fn */
	spawn_fn(L, r, x->obj, DOBJ_TASK_BLOCK, 4, 2, wake_waiter, c, &t);
	c->wait = t;
	c->state = ST_WAIT;
	return lua_yieldk(L, 0, (lua_KContext)c, txn_wait_k);
}

static int l_txn_rollback(lua_State *L)
{
	ltxn *t = check_ud(L, 1, MT_TXN);
	dobj_storage *st = storage_at(L, 1, NULL);

	if (dobj_txn_depth(st) != t->depth)
		return luaL_error(L, "only the innermost open transaction can be rolled back");
	if (dobj_txn_rollback(st) < 0)
		return st_fail(L);
	t->state = TXN_ROLLED;
	return 0;
}

static int l_st_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	if (test_ud(L, 1, MT_STORAGE) && k && strcmp(k, "sql") == 0) {
		if (lua_getiuservalue(L, 1, 2) == LUA_TNIL) {
			lsql *q = lua_newuserdatauv(L, sizeof(*q), 1);
			q->r = ((lstore *)lua_touserdata(L, 1))->r;
			push_mt(L, MT_SQL);
			lua_setmetatable(L, -2);
			lua_pushvalue(L, 1);
			lua_setiuservalue(L, -2, 1);
			lua_pushvalue(L, -1);
			lua_setiuservalue(L, 1, 2);
		}
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(test_ud(L, 1, MT_STORAGE) ? MT_STORAGE : MT_TXN));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

static int l_st_tostring(lua_State *L)
{
	lua_pushstring(L, test_ud(L, 1, MT_TXN) ? "dobj.Transaction" : "dobj.Storage");
	return 1;
}

/* ctx.storage (made on first use, kept as the ctx's user value 2). */
static void push_ctx_storage(lua_State *L, int ctxidx)
{
	lctx *x = lua_touserdata(L, ctxidx);

	if (lua_getiuservalue(L, ctxidx, 2) != LUA_TNIL)
		return;
	lua_pop(L, 1);
	{
		lstore *s = lua_newuserdatauv(L, sizeof(*s), 2);
		s->r = x->r;
	}
	push_mt(L, MT_STORAGE);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, ctxidx);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, -1);
	lua_setiuservalue(L, ctxidx, 2);
}

/* --------------------------------------------------------------------- SQL */

typedef struct lcursor {
	dobj_cursor *c;          /* owned by the cursor that ran the query */
	size_t pos;
	int raw;
	struct lcursor *base;    /* the owning cursor (itself, or the one raw() came from) */
} lcursor; /* user value 1: the owning cursor (views made by raw()) */

static dobj_storage *sql_storage(lua_State *L, lrt **rp)
{
	dobj_storage *st;

	check_ud(L, 1, MT_SQL);
	lua_getiuservalue(L, 1, 1);
	st = storage_at(L, -1, rp);
	lua_pop(L, 1);
	return st;
}

static int l_sql_exec(lua_State *L)
{
	lrt *r;
	dobj_storage *st = sql_storage(L, &r);
	size_t qlen, nargs, i;
	const char *q = luaL_checklstring(L, 2, &qlen);
	dobj_sql_value *args;
	lcursor *cur;
	int rc;

	nargs = (size_t)(lua_gettop(L) - 2);
	args = lua_newuserdatauv(L, (nargs ? nargs : 1) * sizeof(*args), 0); /* scratch */
	memset(args, 0, (nargs ? nargs : 1) * sizeof(*args));
	for (i = 0; i < nargs; i++) {
		int a = (int)i + 3;
		dobj_sql_value *v = &args[i];
		switch (lua_type(L, a)) {
		case LUA_TNIL:
			v->type = DOBJ_SQL_NULL;
			break;
		case LUA_TBOOLEAN:
			v->type = DOBJ_SQL_INT;
			v->i = lua_toboolean(L, a);
			break;
		case LUA_TNUMBER:
			if (lua_isinteger(L, a)) {
				v->type = DOBJ_SQL_INT;
				v->i = lua_tointeger(L, a);
			} else {
				v->type = DOBJ_SQL_REAL;
				v->d = lua_tonumber(L, a);
			}
			break;
		case LUA_TSTRING:
			v->type = DOBJ_SQL_TEXT;
			v->p = lua_tolstring(L, a, &v->len);
			break;
		default:
			if (test_ud(L, a, MT_NULL)) {
				v->type = DOBJ_SQL_NULL;
			} else if (test_ud(L, a, MT_BYTES)) {
				lua_getiuservalue(L, a, 1);
				v->type = DOBJ_SQL_BLOB;
				v->p = lua_tolstring(L, -1, &v->len);
				lua_replace(L, a); /* keep the string alive */
			} else {
				return luaL_error(L, "cannot bind a value of type %s to SQL "
					"(binding %d)", luaL_typename(L, a), (int)i + 1);
			}
		}
	}
	cur = lua_newuserdatauv(L, sizeof(*cur), 1);
	memset(cur, 0, sizeof(*cur));
	cur->base = cur;
	push_mt(L, MT_CURSOR);
	lua_setmetatable(L, -2);
	rc = dobj_sql_exec(st, q, qlen, args, nargs, &cur->c);
	if (rc < 0)
		return st_fail(L);
	return 1;
}

static int l_sql_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	if (k && strcmp(k, "database_size") == 0) {
		lua_pushinteger(L, (lua_Integer)dobj_sql_database_size(sql_storage(L, NULL)));
		return 1;
	}
	check_ud(L, 1, MT_SQL);
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_SQL));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

static int l_sql_tostring(lua_State *L)
{
	lua_pushliteral(L, "dobj.Sql");
	return 1;
}

static lcursor *check_cursor(lua_State *L, int idx)
{
	lcursor *cur = check_ud(L, idx, MT_CURSOR);

	if (!cur->base->c)
		luaL_error(L, "the cursor is closed");
	return cur;
}

static void push_cell(lua_State *L, const dobj_sql_value *v)
{
	switch (v->type) {
	case DOBJ_SQL_INT:
		lua_pushinteger(L, (lua_Integer)v->i);
		break;
	case DOBJ_SQL_REAL:
		lua_pushnumber(L, v->d);
		break;
	case DOBJ_SQL_TEXT:
		lua_pushlstring(L, v->p, v->len);
		break;
	case DOBJ_SQL_BLOB:
		lua_newuserdatauv(L, 0, 1);
		lua_pushlstring(L, v->p ? v->p : "", v->len);
		lua_setiuservalue(L, -2, 1);
		push_mt(L, MT_BYTES);
		lua_setmetatable(L, -2);
		break;
	default:
		lua_pushnil(L);
	}
}

/* Push the next row of the cursor at idx (a table), or nil at the end. */
static int cursor_next(lua_State *L, int idx)
{
	lcursor *cur = check_cursor(L, idx), *b = cur->base;
	size_t ncols = dobj_cursor_columns(b->c), col;

	if (b->pos >= dobj_cursor_rows(b->c)) {
		lua_pushnil(L);
		return 1;
	}
	lua_createtable(L, cur->raw ? (int)ncols : 0, cur->raw ? 0 : (int)ncols);
	for (col = 0; col < ncols; col++) {
		const dobj_sql_value *v = dobj_cursor_cell(b->c, b->pos, col);
		if (!v || v->type == DOBJ_SQL_NULL)
			continue;
		push_cell(L, v);
		if (cur->raw)
			lua_rawseti(L, -2, (lua_Integer)col + 1);
		else
			lua_setfield(L, -2, dobj_cursor_column_name(b->c, col));
	}
	b->pos++;
	return 1;
}

static int l_cursor_next(lua_State *L)
{
	return cursor_next(L, 1);
}

static int l_cursor_to_array(lua_State *L)
{
	lua_Integer n = 0;

	check_cursor(L, 1);
	lua_settop(L, 1);
	lua_newtable(L);
	for (;;) {
		cursor_next(L, 1);
		if (lua_isnil(L, -1))
			break;
		lua_rawseti(L, 2, ++n);
	}
	lua_settop(L, 2);
	return 1;
}

static int l_cursor_one(lua_State *L)
{
	lcursor *cur = check_cursor(L, 1), *b = cur->base;
	size_t left = dobj_cursor_rows(b->c) - b->pos;

	if (left == 0)
		return raise_plain(L, "Expected exactly one result from SQL query, but got no results.");
	if (left > 1)
		return raise_plain(L, "Expected exactly one result from SQL query, but got multiple results.");
	return cursor_next(L, 1);
}

/* cursor:raw(): the same rows as arrays (a view sharing the position). */
static int l_cursor_raw(lua_State *L)
{
	lcursor *cur = check_cursor(L, 1), *v;

	v = lua_newuserdatauv(L, sizeof(*v), 1);
	memset(v, 0, sizeof(*v));
	v->base = cur->base;
	v->raw = 1;
	push_mt(L, MT_CURSOR);
	lua_setmetatable(L, -2);
	if (cur->base == cur)
		lua_pushvalue(L, 1);
	else
		lua_getiuservalue(L, 1, 1);
	lua_setiuservalue(L, -2, 1);
	return 1;
}

static int l_cursor_index(lua_State *L)
{
	lcursor *cur = check_ud(L, 1, MT_CURSOR);
	const char *k = lua_tostring(L, 2);

	if (k && cur->base->c) {
		dobj_cursor *c = cur->base->c;
		if (strcmp(k, "column_names") == 0) {
			size_t i, n = dobj_cursor_columns(c);
			lua_createtable(L, (int)n, 0);
			for (i = 0; i < n; i++) {
				lua_pushstring(L, dobj_cursor_column_name(c, i));
				lua_rawseti(L, -2, (lua_Integer)i + 1);
			}
			return 1;
		}
		if (strcmp(k, "rows_read") == 0) {
			lua_pushinteger(L, (lua_Integer)dobj_cursor_rows_read(c));
			return 1;
		}
		if (strcmp(k, "rows_written") == 0) {
			lua_pushinteger(L, (lua_Integer)dobj_cursor_rows_written(c));
			return 1;
		}
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_CURSOR));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

static int l_cursor_gc(lua_State *L)
{
	lcursor *cur = check_ud(L, 1, MT_CURSOR);

	if (cur->base == cur && cur->c) {
		dobj_cursor *c = cur->c;
		cur->c = NULL;
		dobj_cursor_free(c);
	}
	return 0;
}

static int l_cursor_tostring(lua_State *L)
{
	lcursor *cur = check_ud(L, 1, MT_CURSOR);

	if (!cur->base->c)
		lua_pushliteral(L, "dobj.Cursor(closed)");
	else
		lua_pushfstring(L, "dobj.Cursor(%d rows)", (int)dobj_cursor_rows(cur->base->c));
	return 1;
}

/* ------------------------------------------------------------------ stats */

/* ns:_stats(): live instances and open databases (tests of eviction). */
static int l_ns_stats(lua_State *L)
{
	lns *n = check_ns(L, 1);

	lua_createtable(L, 0, 2);
	lua_pushinteger(L, (lua_Integer)dobj_ns_live(n->ns));
	lua_setfield(L, -2, "live");
	lua_pushinteger(L, (lua_Integer)dobj_ns_open_storages(n->ns));
	lua_setfield(L, -2, "open_storages");
	return 1;
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
	{ "bind", l_rt_bind }, { "bind_native", l_rt_bind_native }, { "spawn", l_rt_spawn }, { "run", l_rt_run },
	{ "close", l_rt_close }, { "now", l_rt_now }, { "advance", l_rt_advance }, { NULL, NULL }
};
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
static const luaL_Reg storage_meta[] = {
	{ "__index", l_st_index }, { "__tostring", l_st_tostring }, { NULL, NULL }
};
#define STORAGE_METHODS \
	{ "get", l_st_get }, { "put", l_st_put }, { "delete", l_st_delete }, \
	{ "list", l_st_list }, { "delete_all", l_st_delete_all }, \
	{ "transaction_sync", l_st_transaction_sync }, { "transaction", l_st_transaction }, \
	{ "sync", l_st_sync }, { "set_alarm", l_st_set_alarm }, { "get_alarm", l_st_get_alarm }, \
	{ "delete_alarm", l_st_delete_alarm }
static const luaL_Reg storage_methods[] = { STORAGE_METHODS, { NULL, NULL } };
static const luaL_Reg txn_methods[] = { STORAGE_METHODS, { "rollback", l_txn_rollback }, { NULL, NULL } };
static const luaL_Reg sql_meta[] = {
	{ "__index", l_sql_index }, { "__tostring", l_sql_tostring }, { NULL, NULL }
};
static const luaL_Reg sql_methods[] = { { "exec", l_sql_exec }, { NULL, NULL } };
static const luaL_Reg cursor_meta[] = {
	{ "__index", l_cursor_index }, { "__call", l_cursor_next }, { "__gc", l_cursor_gc },
	{ "__close", l_cursor_gc }, { "__tostring", l_cursor_tostring }, { NULL, NULL }
};
static const luaL_Reg cursor_methods[] = {
	{ "next", l_cursor_next }, { "to_array", l_cursor_to_array }, { "one", l_cursor_one },
	{ "raw", l_cursor_raw }, { "close", l_cursor_gc }, { NULL, NULL }
};
static const luaL_Reg bytes_meta[] = {
	{ "__index", l_bytes_index }, { "__len", l_bytes_len }, { "__eq", l_bytes_eq },
	{ "__tostring", l_bytes_tostring }, { NULL, NULL }
};
static const luaL_Reg date_meta[] = {
	{ "__index", l_date_index }, { "__eq", l_date_eq }, { "__lt", l_date_lt },
	{ "__le", l_date_le }, { "__tostring", l_date_tostring }, { NULL, NULL }
};
static const luaL_Reg null_meta[] = { { "__tostring", l_null_tostring }, { NULL, NULL } };
static const luaL_Reg list_meta[] = { { "__pairs", l_list_pairs }, { NULL, NULL } };

static const luaL_Reg module_funcs[] = {
	{ "runtime", l_runtime }, { "request", l_request }, { "response", l_response },
	{ "sleep", l_sleep }, { "is_error", l_is_error }, { "_stats", l_stats },
	{ "bytes", l_bytes }, { "date", l_date }, { "set", l_set }, { "map", l_map }, { NULL, NULL }
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
		{ MT_STORAGE, storage_meta, storage_methods }, { MT_TXN, storage_meta, txn_methods },
		{ MT_SQL, sql_meta, sql_methods }, { MT_CURSOR, cursor_meta, cursor_methods },
		{ MT_BYTES, bytes_meta, no_methods }, { MT_DATE, date_meta, no_methods },
		{ MT_NULL, null_meta, no_methods }, { MT_SET, no_methods, no_methods },
		{ MT_MAP, no_methods, no_methods }, { MT_LIST, list_meta, no_methods },
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
			{ MT_LIST, "List" }, { MT_STORAGE, "Storage" }, { MT_CURSOR, "Cursor" },
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
	return 1;
}
