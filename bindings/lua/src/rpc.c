/* RPC: values as core dobj_val, the trampoline that runs a method on an
 * object, and the caller side (stub.method(...)). */
#include "dobj_lua.h"

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

void val_free_cb(void *v)
{
	dobj_val_free(v);
}

void msg_free_cb(void *m)
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
typedef struct rpc_encoder {
	lua_State *L;
	runtime_ud *r;
	int seen;          /* stack slot: nil, or { table -> light userdata (done) or false (in progress) } */
	int depth;
	const char *where; /* "argument 2", "the result" */
} rpc_encoder;

static dobj_val *rpc_encode_fail_hint(rpc_encoder *o, const char *what, const char *hint)
{
	dobj_error_set(DOBJ_EARG, "cannot send %s over RPC (%s)%s%s", what, o->where,
		hint ? ": " : "", hint ? hint : "");
	return NULL;
}

static dobj_val *rpc_encode_fail(rpc_encoder *o, const char *what)
{
	return rpc_encode_fail_hint(o, what, NULL);
}

static dobj_val *to_val(rpc_encoder *o, int idx);

/* The namespace of runtime r whose ID key is `key` (an ID's namespace). */
static dobj_ns *ns_of_key(runtime_ud *r, const dobj_idkey *key)
{
	size_t i, n = dobj_rt_ns_count(r->rt);

	for (i = 0; i < n; i++)
		if (dobj_ns_idkey(dobj_rt_ns_at(r->rt, i)) == key)
			return dobj_rt_ns_at(r->rt, i);
	return NULL;
}

static dobj_val *ud_to_val(rpc_encoder *o, int idx)
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
		stub_ud *s = lua_touserdata(L, idx);
		dobj_ns *ns;
		if (!s->stub)
			return rpc_encode_fail(o, "a closed stub");
		ns = dobj_stub_ns(s->stub);
		if (dobj_ns_rt(ns) != o->r->rt)
			return rpc_encode_fail(o, "a stub of another runtime");
		p = dobj_stub_name(s->stub, &len);
		return dobj_val_stub(ns, dobj_stub_id(s->stub), p, len);
	}
	if (mt && mt == mts[MT_ID]) {
		id_ud *d = lua_touserdata(L, idx);
		dobj_ns *ns = ns_of_key(o->r, d->key);
		if (!ns)
			return rpc_encode_fail(o, "an ID of another runtime");
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
		return rpc_encode_fail(o, what);
	}
	return rpc_encode_fail(o, "a value of type userdata");
}

static dobj_val *table_to_val(rpc_encoder *o, int idx)
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
		return rpc_encode_fail(o, "a cyclic table (a table that contains itself)");
	if (o->depth >= DOBJ_VALUE_MAX_DEPTH)
		return rpc_encode_fail(o, "tables nested deeper than 256");
	if (!lua_checkstack(L, 8)) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory (Lua stack)");
		return NULL;
	}
	kind = table_kind_at(L, o->r, idx, &n);
	if (kind == TABLE_BAD_ARRAY)
		return rpc_encode_fail(o, TABLE_BAD_ARRAY_MSG);
	v = kind == TABLE_ARRAY ? dobj_val_array() : kind == TABLE_OBJECT ? dobj_val_object()
		: kind == TABLE_MAP ? dobj_val_map() : dobj_val_set();
	if (!v)
		return NULL;
	lua_pushvalue(L, idx);
	lua_pushboolean(L, 0);
	lua_rawset(L, o->seen);
	o->depth++;
	if (kind == TABLE_ARRAY) {
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
			if (kind == TABLE_OBJECT) {
				size_t klen;
				const char *k = lua_tolstring(L, ki, &klen); /* a string: no conversion */
				if (!utf8_ok(k, klen)) {
					rpc_encode_fail_hint(o, "a table key that is not valid UTF-8", "use a "
						"dobj.map table to send binary keys as dobj.bytes");
					rc = -1;
				} else {
					item = to_val(o, vi);
					rc = item ? dobj_val_put(v, k, klen, item) : -1;
				}
			} else if (kind == TABLE_MAP) {
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

static dobj_val *to_val(rpc_encoder *o, int idx)
{
	lua_State *L = o->L;

	switch (lua_type(L, idx)) {
	case LUA_TNIL:
	case LUA_TNONE:
		return dobj_val_undefined();
	case LUA_TBOOLEAN:
		return dobj_val_bool(lua_toboolean(L, idx));
	case LUA_TNUMBER:
		/* The same integer rule as storage (the core's). */
		if (lua_isinteger(L, idx))
			return dobj_val_integer((int64_t)lua_tointeger(L, idx));
		return dobj_val_double(lua_tonumber(L, idx));
	case LUA_TSTRING: {
		size_t len;
		const char *p = lua_tolstring(L, idx, &len);
		if (!utf8_ok(p, len))
			return rpc_encode_fail_hint(o, "a string that is not valid UTF-8",
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
		return rpc_encode_fail(o, what);
	}
	}
}

/* dobj_val -> Lua. */
typedef struct rpc_decoder {
	lua_State *L;
	runtime_ud *r;
	int seen; /* stack slot: nil, or { light userdata (a dobj_val) -> table } */
	int depth;
} rpc_decoder;

static int rpc_decode_fail(const char *why)
{
	return dobj_error_set(DOBJ_EARG, "cannot receive the RPC value: %s", why);
}

/* A stub or an ID of one of the runtime's namespaces. */
static int push_ref(rpc_decoder *in, const dobj_val *v)
{
	lua_State *L = in->L;
	runtime_ud *r = in->r;
	const dobj_id *id;
	const char *name;
	size_t len;
	dobj_ns *ns = dobj_val_get_ref(v, &id, &name, &len);
	stub_ud *s;
	id_ud *d;
	int nsidx, rc;

	lua_rawgetp(r->A, ANCHOR_NSMAP, ns);
	lua_xmove(r->A, L, 1);
	if (!lua_isuserdata(L, -1)) {
		lua_pop(L, 1);
		return rpc_decode_fail("a stub or ID of a namespace this runtime does not have");
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
	push_mt_rt(r, L, MT_STUB);
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

static int push_val(rpc_decoder *in, const dobj_val *v)
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
		if (dobj_val_is_integer(v)) /* the same integer rule as storage */
			lua_pushinteger(L, (lua_Integer)dobj_val_get_number(v));
		else
			lua_pushnumber(L, dobj_val_get_number(v));
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
		return rpc_decode_fail("a BigInt does not fit in a Lua integer (64 bits)");
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
		return rpc_decode_fail("tables nested deeper than 256");
	n = dobj_val_len(v);
	lua_createtable(L, type == DOBJ_VAL_ARRAY && n <= 4096 ? (int)n : 0,
		type == DOBJ_VAL_OBJECT && n <= 4096 ? (int)n : 0);
	tb = lua_gettop(L);
	if (type == DOBJ_VAL_MAP || type == DOBJ_VAL_SET) {
		push_mt_rt(in->r, L, type == DOBJ_VAL_MAP ? MT_MAP : MT_SET);
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
				return rpc_decode_fail("a Map key or Set item is undefined, which a Lua table "
					"cannot hold");
			if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
				return rpc_decode_fail("a Map key or Set item is NaN, which a Lua table cannot hold");
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
	if (type == DOBJ_VAL_ARRAY)
		mark_if_empty_array(in->r, L, tb);
	in->depth--;
	return DOBJ_OK;
}

/* ------------------------------------------------------- RPC: the object */

/* After the method: (instance, class, seen slot, results...) -> the first
 * result as a dobj_val (light userdata), which finish_ok hands to the core. */
static int rpc_tramp_k(lua_State *L, int status, lua_KContext ctx)
{
	bound_class *k = (bound_class *)ctx;
	dobj_val *v;
	rpc_encoder o;

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
 * core refused reserved and private names already (dobj_rpc_name_check).
 * The method is looked up in the class table (lua_getfield: inherited
 * methods count), never in the instance, so instance fields are not callable.
 */
int rpc_tramp(lua_State *L)
{
	bound_class *k = lua_touserdata(L, 2);
	dobj_task *t = running_coro->task;
	const char *name = dobj_task_method(t);
	const dobj_val *args = dobj_task_request(t);
	size_t i, n = dobj_val_len(args);
	rpc_decoder in;

	lua_settop(L, 2);
	lua_pushnil(L); /* 3: the seen slot of the converters */
	push_slot(k->r, L, SLOT_TO_HOST(k->slot));
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
	dobj_rpc_no_method(name, strlen(name));
	return raise_plain(L, dobj_error_last());
}

/* ------------------------------------------------------- RPC: the caller */

/* The response of a native class's fetch, or of another node, as a dobj.response. */
static void push_msg_response(lua_State *L, runtime_ud *r, const dobj_msg *m)
{
	lua_createtable(L, 0, 3);
	lua_pushlstring(L, m->body ? (const char *)m->body : "", m->body ? m->body_len : 0);
	lua_setfield(L, -2, "body");
	lua_pushinteger(L, m->status);
	lua_setfield(L, -2, "status");
	if (m->nheaders) {
		push_msg_headers(L, m);
		lua_setfield(L, -2, "headers");
	}
	if (m->web_socket) { /* a 101 from an object on another node */
		push_websocket(L, r, m->web_socket);
		lua_setfield(L, -2, "web_socket");
	}
	push_mt_rt(r, L, MT_RESPONSE);
	lua_setmetatable(L, -2);
}

/* A Lua request (made by push_request at ri) as a dobj_msg for a native class. */
dobj_msg *msg_from_request(lua_State *L, int ri)
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
	if (lua_rawget(L, ri) == LUA_TTABLE && msg_add_headers(L, -1, m) < 0)
		ok = 0;
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
int core_outcome(lua_State *L, runtime_ud *r, dobj_task *t)
{
	int rpc = dobj_task_call_kind(t) == DOBJ_CALL_RPC, top = lua_gettop(L), rc;
	void *res = dobj_task_take_result(t);
	rpc_decoder in;

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
int l_stub_rpc(lua_State *L)
{
	size_t name_len;
	const char *name = lua_tolstring(L, lua_upvalueindex(2), &name_len);
	stub_ud *s = test_ud(L, 1, MT_STUB);
	char where[32];
	dobj_val *args;
	dobj_task *t;
	runtime_ud *r;
	task_coro *c;
	rpc_encoder o;
	int i, top, rc;

	if (!s)
		return luaL_error(L, "stub:%s(...) is an RPC method: call it with a colon", name);
	if (!s->stub)
		return luaL_error(L, "the stub is closed");
	if (strlen(name) != name_len) {
		/* The core takes the name up to its NUL: "add\0x" called add. */
		dobj_rpc_no_method(name, name_len);
		return raise_core_error(L, dobj_error_last());
	}
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
	/* The core checks a native method's arity and types here, in the
	 * caller, before anything is delivered (a missing method is the
	 * object's answer). */
	rc = dobj_stub_call_ex(&t, s->stub, DOBJ_CALL_RPC, name, NULL, 0, args, val_free_cb,
		NULL, NULL);
	if (rc < 0)
		return raise_core_error(L, dobj_error_last());
	return await_call(L, s, c, t);
}

