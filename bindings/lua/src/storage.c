/* Storage (dobj.Storage): key-value API, transactions, alarms. */
#include "dobj_lua.h"

/* ----------------------------------------------------------------- storage */

typedef struct storage_ud {
	runtime_ud *r;
} storage_ud; /* user values: 1 the ctx userdata, 2 the sql userdata (made on first use) */

typedef struct txn_ud {
	runtime_ud *r;
	dobj_txn txn; /* the core's handle: level and state (rules in dobj/storage.h) */
} txn_ud; /* user value 1: the storage userdata */

typedef struct sql_ud {
	runtime_ud *r;
} sql_ud; /* user value 1: the storage userdata */

int storage_fail(lua_State *L)
{
	return raise_plain(L, dobj_error_last());
}

/* The ctx behind a storage userdata at idx (pushed nothing). */
static ctx_ud *store_ctx(lua_State *L, int idx)
{
	ctx_ud *x;

	lua_getiuservalue(L, idx, 1);
	x = lua_touserdata(L, -1);
	lua_pop(L, 1);
	return x;
}

/*
 * The core storage behind the storage or transaction at idx.  Looked up on
 * every call: it belongs to the incarnation, and eviction or abort ends it.
 */
dobj_storage *storage_at(lua_State *L, int idx, runtime_ud **rp)
{
	storage_ud *s = test_ud(L, idx, MT_STORAGE);
	dobj_storage *st;
	ctx_ud *x;

	idx = lua_absindex(L, idx);
	if (s) {
		x = store_ctx(L, idx);
	} else {
		txn_ud *t = check_ud(L, idx, MT_TXN);
		if (dobj_txn_check(&t->txn) < 0)
			storage_fail(L);
		lua_getiuservalue(L, idx, 1);
		s = lua_touserdata(L, -1);
		x = store_ctx(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	/* A previous instance's storage: the core says so (dobj_obj_check). */
	if (dobj_obj_storage(x ? x->obj : NULL, &st) < 0)
		storage_fail(L);
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

/* Decode a stored value the core lends until the next storage call: from a
 * copy, since decoding allocates and a finalizer may make that call. */
static void push_lent_value(lua_State *L, runtime_ud *r, const void *v, size_t len)
{
	const char *copy;

	lua_pushlstring(L, (const char *)v, len); /* copies before collecting */
	copy = lua_tostring(L, -1);
	storage_decode(L, r, copy, len);
	lua_remove(L, -2);
}

static int l_st_get(lua_State *L)
{
	runtime_ud *r;
	dobj_storage *st = storage_at(L, 1, &r);
	const void *v;
	size_t klen, vlen;
	const char *k;
	int rc;

	if (lua_type(L, 2) == LUA_TTABLE) {
		lua_Integer i, n = (lua_Integer)lua_rawlen(L, 2);
		if (dobj_kv_check_count((size_t)n, "get") < 0)
			return storage_fail(L);
		lua_settop(L, 2);
		lua_createtable(L, 0, (int)n);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, 2, i);
			k = check_key(L, 4, &klen);
			st = storage_at(L, 1, NULL); /* again: a finalizer may have ended it */
			rc = dobj_kv_get(st, k, klen, &v, &vlen);
			if (rc < 0)
				return storage_fail(L);
			if (rc == 1) {
				push_lent_value(L, r, v, vlen);
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
		return storage_fail(L);
	if (rc == 0)
		lua_pushnil(L);
	else
		push_lent_value(L, r, v, vlen);
	return 1;
}

static int l_st_put(lua_State *L)
{
	runtime_ud *r;
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
				return storage_fail(L);
			blob = storage_encode(L, r, -1, &blen);
			if (dobj_kv_check_value(blen) < 0)
				return storage_fail(L);
			lua_pop(L, 1);
			lua_pushvalue(L, -1);
			lua_rawseti(L, 3, ++n);
			lua_pushlstring(L, (const char *)blob, blen);
			lua_rawseti(L, 3, ++n);
		}
		if (dobj_kv_check_count((size_t)(n / 2), "put") < 0)
			return storage_fail(L);
		st = storage_at(L, 1, NULL); /* again: a finalizer may have ended it */
		for (i = 1; i <= n; i += 2) {
			lua_rawgeti(L, 3, i);
			lua_rawgeti(L, 3, i + 1);
			k = lua_tolstring(L, -2, &klen);
			blob = (const unsigned char *)lua_tolstring(L, -1, &blen);
			if (dobj_kv_put(st, k, klen, blob, blen) < 0)
				return storage_fail(L);
			lua_pop(L, 2);
		}
		return 0;
	}
	k = check_key(L, 2, &klen);
	if (dobj_kv_check_key(klen) < 0)
		return storage_fail(L);
	blob = storage_encode(L, r, 3, &blen);
	st = storage_at(L, 1, NULL); /* again: a finalizer may have ended it */
	if (dobj_kv_put(st, k, klen, blob, blen) < 0)
		return storage_fail(L);
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
			return storage_fail(L);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, 2, i);
			k = check_key(L, -1, &klen);
			rc = dobj_kv_delete(st, k, klen);
			if (rc < 0)
				return storage_fail(L);
			count += rc;
			lua_pop(L, 1);
		}
		lua_pushinteger(L, count);
		return 1;
	}
	k = check_key(L, 2, &klen);
	rc = dobj_kv_delete(st, k, klen);
	if (rc < 0)
		return storage_fail(L);
	lua_pushboolean(L, rc);
	return 1;
}

typedef struct listarg {
	lua_State *L;
	runtime_ud *r;
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
	storage_decode(L, a->r, a->val, a->vlen);
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
	runtime_ud *r;
	dobj_storage *st = storage_at(L, 1, &r);
	dobj_kv_list_opts o = DOBJ_KV_LIST_OPTS_INIT;
	listarg arg;
	int rc, running;

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
			if (dobj_kv_list_limit(&o, lim) < 0)
				return storage_fail(L);
		}
	}
	lua_newtable(L);
	push_mt(L, MT_LIST);
	lua_setmetatable(L, -2);
	luaL_checkstack(L, 8, "list");
	memset(&arg, 0, sizeof(arg));
	arg.r = r;
	arg.L = L;
	/* No finalizer may run while the core iterates (it could end the
	 * storage): the rows are decoded with the collector paused.  list_row
	 * catches every error, so nothing skips the restart. */
	st = storage_at(L, 1, NULL);
	running = lua_gc(L, LUA_GCISRUNNING) > 0; /* -1 inside a finalizer: held already */
	if (running)
		lua_gc(L, LUA_GCSTOP);
	rc = dobj_kv_list(st, &o, list_row, &arg);
	if (running)
		lua_gc(L, LUA_GCRESTART);
	if (rc > 0)
		return lua_error(L); /* a row could not be decoded */
	if (rc < 0)
		return storage_fail(L);
	return 1;
}

static int l_st_delete_all(lua_State *L)
{
	if (dobj_kv_delete_all(storage_at(L, 1, NULL)) < 0)
		return storage_fail(L);
	return 0;
}

static int l_st_sync(lua_State *L)
{
	if (dobj_storage_sync(storage_at(L, 1, NULL)) < 0)
		return storage_fail(L);
	return 0;
}

static int l_st_set_alarm(lua_State *L)
{
	dobj_storage *st = storage_at(L, 1, NULL);
	double ms = test_ud(L, 2, MT_DATE) ? check_date(L, 2) : luaL_checknumber(L, 2);

	if (dobj_alarm_set(st, ms) < 0)
		return storage_fail(L);
	return 0;
}

static int l_st_get_alarm(lua_State *L)
{
	dobj_storage *st = storage_at(L, 1, NULL);
	double ms;
	int rc = dobj_alarm_get(st, &ms);

	if (rc < 0)
		return storage_fail(L);
	if (rc == 0)
		lua_pushnil(L);
	else
		push_ms(L, ms);
	return 1;
}

static int l_st_delete_alarm(lua_State *L)
{
	if (dobj_alarm_delete(storage_at(L, 1, NULL)) < 0)
		return storage_fail(L);
	return 0;
}

/* A transaction object for the storage (or transaction) at 1; pushed. */
static txn_ud *push_txn(lua_State *L, runtime_ud *r, dobj_storage *st)
{
	txn_ud *t = lua_newuserdatauv(L, sizeof(*t), 1);

	t->r = r;
	t->txn.state = DOBJ_TXN_ENDED;
	t->txn.level = 0;
	push_mt(L, MT_TXN);
	lua_setmetatable(L, -2);
	if (test_ud(L, 1, MT_TXN))
		lua_getiuservalue(L, 1, 1);
	else
		lua_pushvalue(L, 1);
	lua_setiuservalue(L, -2, 1);
	if (dobj_txn_open(st, &t->txn) < 0)
		storage_fail(L);
	return t;
}

/*
 * Close the transaction at idx after its function ran (ok or not): commit or
 * roll back as dobj_txn_end decides (nothing when the function rolled back
 * itself or the object is gone).  The step's implicit transaction commits
 * when the step ends, as after any write.
 */
static void txn_close(lua_State *L, int idx, int ok, int *failed)
{
	txn_ud *t = lua_touserdata(L, idx);
	dobj_storage *st = NULL;
	ctx_ud *x;

	lua_getiuservalue(L, idx, 1);
	x = store_ctx(L, lua_gettop(L));
	lua_pop(L, 1);
	if (!x || !x->obj || dobj_obj_storage(x->obj, &st) < 0)
		st = NULL;
	*failed = dobj_txn_end(st, &t->txn, ok) < 0;
}

/* storage:transaction_sync(fn): fn(txn) in a transaction; it may not yield. */
static int l_st_transaction_sync(lua_State *L)
{
	runtime_ud *r;
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
		return storage_fail(L);
	return lua_gettop(L) - base;
}

/* Body of transaction(): runs as a block_concurrency_while task with
 * (txn, fn).  Returns true, fn's results or false, the error: a failing
 * transaction must not reset the object, as a failing block would. */
static int txn_body_k(lua_State *L, int status, lua_KContext ctx)
{
	int ok = status == LUA_OK || status == LUA_YIELD, failed;

	(void)ctx;
	txn_close(L, 1, ok, &failed);
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
	task_coro *c = (task_coro *)ctx;
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
	runtime_ud *r;
	dobj_storage *st = storage_at(L, 1, &r);
	ctx_ud *x;
	task_coro *c = task_here(L, r);
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
	spawn_fn(L, r, x->obj, DOBJ_TASK_BLOCK, 4, 2, NULL, NULL, &t);
	wait_for_task(L, c, t);
	return lua_yieldk(L, 0, (lua_KContext)c, txn_wait_k);
}

static int l_txn_rollback(lua_State *L)
{
	txn_ud *t = check_ud(L, 1, MT_TXN);
	dobj_storage *st = storage_at(L, 1, NULL);

	/* Only the innermost open transaction (dobj_txn_rollback_handle). */
	if (dobj_txn_rollback_handle(st, &t->txn) < 0)
		return storage_fail(L);
	return 0;
}

static int l_st_index(lua_State *L)
{
	const char *k = lua_tostring(L, 2);

	if (test_ud(L, 1, MT_STORAGE) && k && strcmp(k, "sql") == 0) {
		if (lua_getiuservalue(L, 1, 2) == LUA_TNIL) {
			sql_ud *q = lua_newuserdatauv(L, sizeof(*q), 1);
			q->r = ((storage_ud *)lua_touserdata(L, 1))->r;
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
void push_ctx_storage(lua_State *L, int ctxidx)
{
	ctx_ud *x = lua_touserdata(L, ctxidx);

	if (lua_getiuservalue(L, ctxidx, 2) != LUA_TNIL)
		return;
	lua_pop(L, 1);
	{
		storage_ud *s = lua_newuserdatauv(L, sizeof(*s), 2);
		s->r = x->r;
	}
	push_mt(L, MT_STORAGE);
	lua_setmetatable(L, -2);
	lua_pushvalue(L, ctxidx);
	lua_setiuservalue(L, -2, 1);
	lua_pushvalue(L, -1);
	lua_setiuservalue(L, ctxidx, 2);
}

/*
 * User code can run in the middle of get, put and list: a __gc finalizer,
 * started by any allocation, may itself use storage or call rt:close().  So
 * these methods never keep across an allocation what such a call frees or
 * reuses: a value the core lends (copied first), the storage (looked up
 * again), a listing in progress (the collector is paused while the core
 * iterates).  And the runtime's one value writer and reader, which a nested
 * call would reset under the outer one: this wrapper gives a nested call
 * fresh ones, under lua_pcall so that they are freed whatever happens.
 */
/* The runtime of the live storage or transaction at idx, or NULL (the
 * method itself then raises the right error).  Reads nothing freed: a ctx
 * whose instance is gone may outlive its runtime. */
static runtime_ud *storage_runtime(lua_State *L, int idx)
{
	ctx_ud *x = NULL;

	if (test_ud(L, idx, MT_STORAGE)) {
		x = store_ctx(L, idx);
	} else if (test_ud(L, idx, MT_TXN)) {
		lua_getiuservalue(L, idx, 1); /* the storage userdata */
		if (lua_touserdata(L, -1))
			x = store_ctx(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	return x && x->obj ? x->r : NULL;
}

static int call_storage_method(lua_State *L)
{
	runtime_ud *r = storage_runtime(L, 1);
	dobj_ser *ser = NULL;
	dobj_de *de = NULL;
	int nested = 0, st;

	lua_pushvalue(L, lua_upvalueindex(2)); /* the method itself (storage_open) */
	lua_insert(L, 1);
	if (!r) {
		lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
		return lua_gettop(L);
	}
	/* Counted per runtime: the runtime's __gc must not free what this
	 * call uses, and only this runtime's (a module-wide count made every
	 * runtime collected during any storage call leak). */
	nested = r->storage_calls > 0;
	if (nested) {
		/* A finalizer's call: fresh writer and reader. */
		ser = r->ser;
		de = r->de;
		r->ser = NULL;
		r->de = NULL;
	}
	r->storage_calls++;
	st = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
	r->storage_calls--;
	if (nested) {
		dobj_ser_free(r->ser);
		dobj_de_free(r->de);
		r->ser = ser;
		r->de = de;
	}
	if (st != LUA_OK)
		return lua_error(L);
	return lua_gettop(L);
}

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

void storage_open(lua_State *L, int mi)
{
	static const luaL_Reg wrapped[] = {
		{ "get", l_st_get }, { "put", l_st_put }, { "list", l_st_list }, { NULL, NULL }
	};
	static const int types[] = { MT_STORAGE, MT_TXN };
	int i, j;

	register_type(L, mi, MT_STORAGE, storage_meta, storage_methods);
	register_type(L, mi, MT_TXN, storage_meta, txn_methods);
	for (i = 0; i < 2; i++) {
		lua_getiuservalue(L, mi, UV_METHODS(types[i]));
		for (j = 0; wrapped[j].name; j++) {
			lua_pushvalue(L, mi);
			lua_pushvalue(L, mi);
			lua_pushcclosure(L, wrapped[j].func, 1);
			lua_pushcclosure(L, call_storage_method, 2);
			lua_setfield(L, -2, wrapped[j].name);
		}
		lua_pop(L, 1);
	}
}
