/*
 * dobj.so — the Lua 5.4 binding of the dobj core (`local dobj = require "dobj"`).
 * This is the binding's private header, included by every file in this folder.
 *
 * Files, by concern (each registers its own types from an *_open function
 * called by luaopen_dobj, as luv's files do):
 *   module.c      luaopen_dobj, module state, metatable helpers
 *   host_values.c slots and pooled coroutines: how the core holds Lua values
 *   errors.c      dobj.Error values, core errors raised in Lua
 *   driver.c      the task driver: steps resume coroutines, handler trampolines
 *   runtime.c     dobj.runtime, bind/bind_native, run/spawn, class construction
 *   namespace.c   namespaces and IDs
 *   stub.c        stubs and stub:fetch
 *   ctx.c         the ctx handed to a constructor
 *   http.c        dobj.request / dobj.response
 *   sleep.c       dobj.sleep
 *   values.c      storage values (V8 serialization) and dobj.bytes/date/set/map
 *   rpc.c         RPC values (dobj_val), the RPC trampoline and caller
 *   storage.c     ctx.storage, transactions, alarms
 *   sql.c         storage.sql and cursors
 *   config.c      dobj.load_config: the wrangler configuration
 *   project.c     dobj.load: a Workers project (config + main) as a runtime
 *   server.c      dobj.http_listen: the core's HTTP/WebSocket server (dobj/server.h) for `dobj-lua dev`
 *   testkit.c     dobj._testkit: the C half of require "dobj.test" (dobj/test.lua)
 *   websocket.c   dobj.WebSocket, ctx:accept_web_socket..., WebSocket handlers
 *
 * The files are separate compilation units rather than one unit including
 * the others (luv's way): each then states what it uses through this header,
 * a change rebuilds one file, and -fvisibility=hidden (set by CMake) still
 * keeps every shared helper private to dobj.so: only luaopen_dobj is exported.
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
 *   - a pointer to a small C struct (`task_coro`: a pooled coroutine running a task;
 *     `bound_class`: a bound class), told apart from slots by the low bit.
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
#ifndef DOBJ_LUA_H
#define DOBJ_LUA_H

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

/* Everything declared below is private to the library: hidden even when the
 * build does not pass -fvisibility=hidden (a plain `luarocks make`). */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
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
	MT_WEBSOCKET,
	MT_ARRAY,  /* a marker too (dobj.array) */
	MT_COUNT = MT_ARRAY
};
#define UV_METHODS(i) (MT_COUNT + (i))
#define UV_DEFAULT_RT (2 * MT_COUNT + 1) /* weak table { runtime } */
#define UV_NULL (2 * MT_COUNT + 2)       /* the dobj.null singleton */
#define UV_RPC (2 * MT_COUNT + 3)        /* weak table: method name -> RPC caller */
#define UV_COUNT UV_RPC

extern const char *const mt_names[MT_COUNT + 1];

typedef struct module_state {
	const void *self; /* the state's own address: tells it from another userdata */
	const void *mt[MT_COUNT + 1];
	int nruntimes; /* live runtimes (not yet collected): for tests */
} module_state;

/* Every function of the module has the module state as upvalue 1. */
#define MODIDX lua_upvalueindex(1)
/* The module state: upvalue 1 of the running function when it is the
 * module's; elsewhere (a trampoline the core calls, a closure with other
 * upvalues) the one luaopen_dobj left in the registry. */
module_state *mod_state(lua_State *L);
#define MOD(L) mod_state(L)


/* ------------------------------------------------------------------- types */

/* Stack of the anchor thread A.  ANCHOR_NSMAP maps each core namespace
 * (light userdata) to its namespace userdata, so that a stub or ID received
 * over RPC becomes a Lua stub of the right namespace. */
/* ANCHOR_PROJECT: nil, or for a runtime made by dobj.load (project.c) the
 * table { default =, config =, module = } that rt.default etc. read. */
enum { ANCHOR_SLOTS = 1, ANCHOR_ENV = 2, ANCHOR_MODULE = 3, ANCHOR_NSMAP = 4, ANCHOR_PROJECT = 5 };

/* Kinds of slot (what release must do besides unanchoring). */
enum { SLOT_VALUE = 0, SLOT_CTX = 1, SLOT_THREAD = 2 };

/* Kinds of C host struct. */
enum { HOST_CORO = 2, HOST_CLASS = 4 };

typedef struct host_struct {
	int kind;
	int refs;
} host_struct;

struct task_coro;

typedef struct runtime_ud {
	dobj_rt *rt;
	lua_State *A;        /* anchor thread: [anchors, env, module state] */
	lua_State *from;     /* thread driving the runtime now (for lua_resume) */
	module_state *mod;
	int *slot_refs;           /* per slot: > 0 references; free slots: -(next free) */
	unsigned char *slot_kind;
	int nslots, capslots, freehead;
	struct task_coro *pool;    /* idle coroutines */
	int npool;
	int dying;           /* __gc in progress: do not pool */
	int closed;          /* core runtime freed: releases are no-ops */
	int error_slot;      /* first unhandled error of a spawned/background task */
	dobj_obj *constructing;
	int seeded;
	lua_Integer seed;
	dobj_ser *ser;       /* value writer and reader, reused (storage values) */
	int storage_calls;   /* storage get/put/list using them now (nested: a finalizer's) */
	dobj_de *de;
	int virtual_time;
} runtime_ud;

/* A coroutine that runs tasks; pooled when its function returns. */
enum { CORO_IDLE, CORO_START, CORO_RUN, CORO_WAIT, CORO_SLEEP, CORO_KILLED, CORO_CONSTRUCT };

typedef struct task_coro {
	host_struct h;
	runtime_ud *r;
	lua_State *co;
	int slot;            /* anchors the thread */
	int state;
	dobj_task *task;     /* the task it runs (a reference) */
	dobj_task *wait;     /* the task it waits for (a reference) */
	dobj_timer *timer;   /* dobj.sleep */
	struct task_coro *next;
} task_coro;

typedef struct bound_class {
	host_struct h;
	runtime_ud *r;
	int slot;            /* the class table */
} bound_class;

typedef struct namespace_ud {
	dobj_ns *ns;
	runtime_ud *r;
} namespace_ud; /* user value 1: the runtime userdata */

typedef struct id_ud {
	dobj_id id;
	const dobj_idkey *key; /* namespace that made or checked it (identity only) */
} id_ud; /* user value 1: the name (string) or nil */

typedef struct stub_ud {
	dobj_stub *stub;
	runtime_ud *r;
} stub_ud; /* user values: 1 namespace userdata, 2 id userdata */

typedef struct ctx_ud {
	dobj_obj *obj;       /* NULL once the instance is gone */
	runtime_ud *r;
} ctx_ud; /* user values: 1 the id userdata, 2 the storage userdata (made on first use) */


/* The coroutine whose step is running (innermost), on this thread. */
extern _Thread_local task_coro *running_coro;


/* Which JS value a table stands for (table_kind_at); TABLE_BAD_ARRAY: a
 * dobj.array table with keys other than 1..n (TABLE_BAD_ARRAY_MSG says so). */
enum { TABLE_OBJECT, TABLE_ARRAY, TABLE_MAP, TABLE_SET, TABLE_BAD_ARRAY };
#define TABLE_BAD_ARRAY_MSG "a dobj.array table with keys other than 1..n"

#define POOL_MAX 256
#define IS_SLOT(v) (((uintptr_t)(v)) & 1u)
#define SLOT_TO_HOST(s) ((void *)((((uintptr_t)(unsigned)(s)) << 1) | 1u))
#define HOST_TO_SLOT(v) ((int)(((uintptr_t)(v)) >> 1))

/* ------------------------------------------------ shared between the files */

/* ctx.c */
int block_results(lua_State *L, task_coro *c);

/* driver.c */
void push_ms(lua_State *L, double ms);
int step_call(dobj_task *t, void *data);
void wait_for_task(lua_State *L, task_coro *c, dobj_task *t);
/* From the main chunk `L` (no coroutine to suspend): r runs until `t` is
 * done; what its handlers leave for the caller goes to L. */
void drive_until_done(lua_State *L, runtime_ud *r, dobj_task *t);
task_coro *spawn_fn(lua_State *L, runtime_ud *r, dobj_obj *obj, dobj_task_kind kind, int fidx,
	int nargs, dobj_done_fn done, void *done_data, dobj_task **out);
task_coro *task_here(lua_State *L, runtime_ud *r);

/* errors.c */
void *convert_error(runtime_ud *r, lua_State *src, dobj_obj *obj, lua_State *tb, int remote);
void push_core_error(lua_State *L, const char *msg, const dobj_id *id, int remote);
int raise_core_error(lua_State *L, const char *msg);

/* host_values.c */
int slot_new(runtime_ud *r, int kind);
void *anchor(runtime_ud *r, lua_State *L, int idx, int kind);
void push_slot(runtime_ud *r, lua_State *L, void *v);
void slot_unref(runtime_ud *r, int s);
void push_mt_rt(runtime_ud *r, lua_State *L, int which);
task_coro *coro_get(runtime_ud *r);
void coro_release(runtime_ud *r, task_coro *c);
void host_retain(void *data, void *v);
void host_release(void *data, void *v);

/* http.c */
int push_request(lua_State *L, int src, int init);
int l_request(lua_State *L);
int l_response(lua_State *L);
/* Headers tables by the core's rules (dobj_msg_*): see http.c. */
typedef void (*header_fn)(lua_State *L, void *data, const char *name, size_t nlen,
	const char *value, size_t vlen);
void headers_walk(lua_State *L, int src, header_fn fn, void *data);
void push_msg_headers(lua_State *L, const dobj_msg *m);
int msg_add_headers(lua_State *L, int src, dobj_msg *m);

/* module.c */
void push_mt(lua_State *L, int which);
void *test_ud(lua_State *L, int idx, int which);
void *check_ud(lua_State *L, int idx, int which);
int is_table_of(lua_State *L, int idx, const void *mt);
int raise_plain(lua_State *L, const char *msg);
const char *check_cstring(lua_State *L, int idx, const char *what);

/* namespace.c */
id_ud *push_id(lua_State *L, const dobj_idkey *key, int mt_from_rt, runtime_ud *r);

/* rpc.c */
void val_free_cb(void *v);
void msg_free_cb(void *m);
int rpc_tramp(lua_State *L);
dobj_msg *msg_from_request(lua_State *L, int ri);
int core_outcome(lua_State *L, runtime_ud *r, dobj_task *t);
/* route.c: carry requests, responses and errors to other nodes (cluster mode). */
void route_codec_install(runtime_ud *r);
int l_stub_rpc(lua_State *L);

/* runtime.c */
int l_on_error(lua_State *L);
int l_runtime(lua_State *L);
/* config.c */
int l_load_config(lua_State *L);
int l_load_config_starting(lua_State *L);
int l_load(lua_State *L);
int l_cluster_init(lua_State *L);
int l_cluster_check(lua_State *L);
int l_cluster_seconds(lua_State *L);
int cluster_field_seconds(lua_State *L, int t, const char *key, dobj_cluster_time which,
	dobj_cluster_opts *co, const char *who);
/* A size field of table t (nil: not given) into co by the core's rule
 * (dobj_cluster_opts_bytes): 0, or < 0 with the core's message; a field
 * that is not an integer is an error. */
int cluster_field_bytes(lua_State *L, int t, const char *key, dobj_cluster_size which,
	dobj_cluster_opts *co);
int l_http_listen(lua_State *L);
void server_open(lua_State *L, int mi);
int l_config_parse(lua_State *L);
void raise_task_error(lua_State *L, runtime_ud *r);

/* sleep.c */
int l_sleep(lua_State *L);

/* storage.c */
int storage_fail(lua_State *L);
dobj_storage *storage_at(lua_State *L, int idx, runtime_ud **rp);
void push_ctx_storage(lua_State *L, int ctxidx);

/* stub.c */
void check_can_wait(lua_State *L, runtime_ud *r, task_coro *c, const char *what);
int await_call(lua_State *L, stub_ud *s, task_coro *c, dobj_task *t);

/* values.c */
void push_null_rt(runtime_ud *r, lua_State *L);
void push_bytes_rt(runtime_ud *r, lua_State *L, const void *p, size_t len);
void push_date_rt(runtime_ud *r, lua_State *L, double ms);
void push_jsnumber(lua_State *L, double d, int was_int32);
int table_kind_at(lua_State *L, runtime_ud *r, int idx, lua_Integer *n);
const unsigned char *storage_encode(lua_State *L, runtime_ud *r, int idx, size_t *len);
void storage_decode(lua_State *L, runtime_ud *r, const void *data, size_t len);
int l_bytes(lua_State *L);
int l_date(lua_State *L);
double check_date(lua_State *L, int idx);
int l_set(lua_State *L);
int l_map(lua_State *L);
int l_array(lua_State *L);
void mark_if_empty_array(runtime_ud *r, lua_State *L, int idx);

/* Each file registers its types (metatables and methods) from luaopen_dobj. */
void register_type(lua_State *L, int mi, int which, const luaL_Reg *meta, const luaL_Reg *methods);
void runtime_open(lua_State *L, int mi);
void namespace_open(lua_State *L, int mi);
void stub_open(lua_State *L, int mi);
void ctx_open(lua_State *L, int mi);
void http_open(lua_State *L, int mi);
void errors_open(lua_State *L, int mi);
void storage_open(lua_State *L, int mi);
void sql_open(lua_State *L, int mi);
void values_open(lua_State *L, int mi);
void testkit_open(lua_State *L, int mi); /* sets dobj._testkit on the module table at -1 */
void websocket_open(lua_State *L, int mi);

/* websocket.c */
void push_websocket(lua_State *L, runtime_ud *r, dobj_ws *ws);
int l_websocket_pair(lua_State *L);
dobj_ws *websocket_at(lua_State *L, int idx);
dobj_ws *websocket_at_rt(lua_State *L, runtime_ud *r, int idx);
int websocket_push_event(lua_State *L, runtime_ud *r, dobj_task *t, bound_class *k);
unsigned websocket_class_flags(lua_State *L, int idx);
extern const luaL_Reg websocket_ctx_methods[];

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
