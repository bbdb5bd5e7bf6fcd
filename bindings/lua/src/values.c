/* Storage values, and the value types (dobj.bytes, date, null, set, map). */
#include "dobj_lua.h"

/* ------------------------------------------------------------------ values */

/*
 * Storage values are V8 serialization blobs, written and read by the core's
 * codec (dobj/value.h).  The mapping is in docs/lua.md ("Values"); in short:
 * booleans, numbers (the core's integer rule: integers up to 2^53 as JS
 * numbers, beyond as BigInts; floats as doubles), UTF-8 strings, dobj.bytes (Uint8Array), dobj.date (Date),
 * dobj.null (null), tables (a sequence or a dobj.array table -> Array,
 * string keys -> Object, anything else or a dobj.map table -> Map, a
 * dobj.set table -> Set; an Array read back as an empty table is marked
 * dobj.array, so that it is written as an Array again).  A
 * table or value met twice is written once and referenced, so shared parts
 * and cycles come back shared.  Encoding calls no Lua code (raw access
 * only), so the writer and reader kept on the runtime are never re-entered.
 */

static int is_mt_rt(runtime_ud *r, lua_State *L, int idx, int which)
{
	int ok = 0;

	if (lua_getmetatable(L, idx)) {
		ok = lua_topointer(L, -1) == r->mod->mt[which];
		lua_pop(L, 1);
	}
	return ok;
}

void push_null_rt(runtime_ud *r, lua_State *L)
{
	push_mt_rt(r, L, UV_NULL);
}

void push_bytes_rt(runtime_ud *r, lua_State *L, const void *p, size_t len)
{
	lua_newuserdatauv(L, 0, 1);
	lua_pushlstring(L, len ? (const char *)p : "", len);
	lua_setiuservalue(L, -2, 1);
	push_mt_rt(r, L, MT_BYTES);
	lua_setmetatable(L, -2);
}

void push_date_rt(runtime_ud *r, lua_State *L, double ms)
{
	double *d = lua_newuserdatauv(L, sizeof(double), 0);

	*d = ms;
	push_mt_rt(r, L, MT_DATE);
	lua_setmetatable(L, -2);
}

/* A JS number as Lua shows it, by the core's integer rule
 * (dobj_number_is_integer): `I` and whole doubles past the Smi range within
 * ±2^53 are integers, other doubles (1.0, -0.0, 0.5) floats. */
void push_jsnumber(lua_State *L, double d, int was_int32)
{
	if (dobj_number_is_integer(d, was_int32))
		lua_pushinteger(L, (lua_Integer)d);
	else
		lua_pushnumber(L, d);
}

typedef struct storage_encoder {
	lua_State *L;
	runtime_ud *r;
	dobj_ser *ser;
	int seen;  /* table: value -> object id */
	int depth;
} storage_encoder;

static void enc_value(storage_encoder *e, int idx);

static void enc_check(storage_encoder *e, int rc)
{
	if (rc < 0)
		luaL_error(e->L, "cannot store the value: %s", dobj_error_last());
}

/* Written before?  Then write a reference to it. */
static int enc_seen(storage_encoder *e, int idx)
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

static void enc_mark(storage_encoder *e, int idx, uint32_t id)
{
	lua_pushvalue(e->L, idx);
	lua_pushinteger(e->L, id);
	lua_rawset(e->L, e->seen);
}

/* Which JS value a table is: a sequence 1..n (n > 0) is an Array, a table
 * with only string keys (or none) an Object, anything else a Map.  The
 * marks decide first: dobj.set, dobj.map, and dobj.array, whose keys must
 * be 1..n (n >= 0: an empty one is the empty Array an empty table cannot
 * say). */
int table_kind_at(lua_State *L, runtime_ud *r, int idx, lua_Integer *n)
{
	lua_Integer count = 0, maxk = 0;
	int all_str = 1, all_int = 1, marked;

	if (is_mt_rt(r, L, idx, MT_SET))
		return TABLE_SET;
	if (is_mt_rt(r, L, idx, MT_MAP))
		return TABLE_MAP;
	marked = is_mt_rt(r, L, idx, MT_ARRAY);
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
	if (marked)
		return all_int && maxk == count && count <= (lua_Integer)UINT32_MAX - 1 ? TABLE_ARRAY
			: TABLE_BAD_ARRAY;
	if (count == 0 || all_str)
		return TABLE_OBJECT;
	if (all_int && maxk == count && count <= (lua_Integer)UINT32_MAX - 1)
		return TABLE_ARRAY;
	return TABLE_MAP;
}

/* The table at idx, read from a JS Array: marked dobj.array when it came
 * out empty, or it would be written back as an Object. */
void mark_if_empty_array(runtime_ud *r, lua_State *L, int idx)
{
	idx = lua_absindex(L, idx);
	lua_pushnil(L);
	if (lua_next(L, idx)) {
		lua_pop(L, 2);
		return;
	}
	push_mt_rt(r, L, MT_ARRAY);
	lua_setmetatable(L, idx);
}

static int table_kind(storage_encoder *e, int idx, lua_Integer *n)
{
	return table_kind_at(e->L, e->r, idx, n);
}

static void enc_table(storage_encoder *e, int idx)
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
	if (kind == TABLE_BAD_ARRAY)
		luaL_error(L, "cannot store " TABLE_BAD_ARRAY_MSG);
	switch (kind) {
	case TABLE_ARRAY:
		enc_check(e, dobj_ser_array_begin(e->ser, (uint32_t)n, &id));
		enc_mark(e, idx, id);
		for (i = 1; i <= n; i++) {
			lua_rawgeti(L, idx, i);
			enc_value(e, lua_gettop(L));
			lua_pop(L, 1);
		}
		enc_check(e, dobj_ser_array_end(e->ser));
		break;
	case TABLE_OBJECT:
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
	case TABLE_MAP:
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
	default: /* TABLE_SET: the keys whose value is true */
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

static void enc_value(storage_encoder *e, int idx)
{
	lua_State *L = e->L;
	int rc = 0;

	switch (lua_type(L, idx)) {
	case LUA_TBOOLEAN:
		rc = dobj_ser_bool(e->ser, lua_toboolean(L, idx));
		break;
	case LUA_TNUMBER:
		/* The core's integer rule; a float is always `N`, so 1.0 stays one. */
		if (lua_isinteger(L, idx))
			rc = dobj_ser_integer(e->ser, (int64_t)lua_tointeger(L, idx));
		else
			rc = dobj_ser_double(e->ser, lua_tonumber(L, idx));
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
const unsigned char *storage_encode(lua_State *L, runtime_ud *r, int idx, size_t *len)
{
	storage_encoder e;
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

typedef struct storage_decoder {
	lua_State *L;
	runtime_ud *r;
	dobj_de *de;
	dobj_tok tok;
	int ids; /* table: object id -> value */
} storage_decoder;

static void dec_tok(storage_decoder *d);

static void dec_next(storage_decoder *d)
{
	if (dobj_de_next(d->de, &d->tok) < 0)
		luaL_error(d->L, "cannot read the stored value: %s", dobj_error_last());
}

static void dec_value(storage_decoder *d)
{
	dec_next(d);
	dec_tok(d);
}

static void dec_reg(storage_decoder *d, uint32_t id)
{
	lua_pushvalue(d->L, -1);
	lua_rawseti(d->L, d->ids, (lua_Integer)id);
}

/* A property key of an object or array, as a Lua key: array indices of
 * arrays are 1-based integers, every other key a string. */
static void dec_key(storage_decoder *d, int array)
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
static void dec_check_key(storage_decoder *d)
{
	lua_State *L = d->L;

	if (lua_isnil(L, -1))
		luaL_error(L, "cannot read the stored value: a Map key or Set item is undefined, "
			"which a Lua table cannot hold");
	if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))
		luaL_error(L, "cannot read the stored value: a Map key or Set item is NaN, "
			"which a Lua table cannot hold");
}

static void dec_tok(storage_decoder *d)
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
		push_jsnumber(L, t->number, 0);
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
		mark_if_empty_array(d->r, L, tb);
		break;
	}
	case DOBJ_TOK_MAP:
	case DOBJ_TOK_SET: {
		int tb, map = t->type == DOBJ_TOK_MAP;
		dobj_tok_type end = map ? DOBJ_TOK_MAP_END : DOBJ_TOK_SET_END;
		lua_newtable(L);
		tb = lua_gettop(L);
		push_mt_rt(d->r, L, map ? MT_MAP : MT_SET);
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
void storage_decode(lua_State *L, runtime_ud *r, const void *data, size_t len)
{
	storage_decoder d;
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
int l_bytes(lua_State *L)
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

/* The time of day for dobj.date() without an argument (a Date value, as JS's
 * `new Date()`; the clock of alarms is the runtime's, dobj_rt_wall_ms). */
static double realtime_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* dobj.date([ms]): a Date; without ms, now. */
int l_date(lua_State *L)
{
	double ms = lua_isnoneornil(L, 1) ? realtime_ms() : luaL_checknumber(L, 1);
	double *d = lua_newuserdatauv(L, sizeof(double), 0);

	*d = ms;
	push_mt(L, MT_DATE);
	lua_setmetatable(L, -2);
	return 1;
}

double check_date(lua_State *L, int idx)
{
	return *(double *)check_ud(L, idx, MT_DATE);
}

static int l_date_index(lua_State *L)
{
	double ms = check_date(L, 1);
	const char *k = lua_tostring(L, 2);

	if (k && strcmp(k, "ms") == 0) {
		push_ms(L, ms); /* whole ms (JS's TimeClip) as an integer */
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
int l_set(lua_State *L)
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

/* Gives t (argument 1, or a new table) the metatable `which` and returns it. */
static int mark_table(lua_State *L, int which)
{
	lua_settop(L, 1);
	if (lua_isnil(L, 1)) {
		lua_newtable(L);
		lua_replace(L, 1);
	}
	luaL_checktype(L, 1, LUA_TTABLE);
	push_mt(L, which);
	lua_setmetatable(L, 1);
	return 1;
}

/* dobj.map([t]): marks t (or a new table) to be stored as a Map. */
int l_map(lua_State *L)
{
	return mark_table(L, MT_MAP);
}

/* dobj.array([t]): marks t (or a new table) to be stored and sent as an
 * Array, even empty; its keys must be 1..n. */
int l_array(lua_State *L)
{
	return mark_table(L, MT_ARRAY);
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
static const luaL_Reg no_functions[] = { { NULL, NULL } };

void values_open(lua_State *L, int mi)
{
	register_type(L, mi, MT_BYTES, bytes_meta, NULL);
	register_type(L, mi, MT_DATE, date_meta, NULL);
	register_type(L, mi, MT_NULL, null_meta, NULL);
	/* Metatables of plain tables: markers only. */
	register_type(L, mi, MT_SET, no_functions, NULL);
	register_type(L, mi, MT_MAP, no_functions, NULL);
	register_type(L, mi, MT_ARRAY, no_functions, NULL);
	register_type(L, mi, MT_LIST, list_meta, NULL);
}
