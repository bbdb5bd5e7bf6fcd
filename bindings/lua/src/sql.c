/* SQL (storage.sql) and cursors (dobj.Cursor). */
#include "dobj_lua.h"

/* --------------------------------------------------------------------- SQL */

typedef struct cursor_ud {
	dobj_cursor *c;          /* owned by the cursor that ran the query */
	size_t pos;
	int raw;
	struct cursor_ud *base;    /* the owning cursor (itself, or the one raw() came from) */
} cursor_ud; /* user value 1: the owning cursor (views made by raw()) */

static dobj_storage *sql_storage(lua_State *L, runtime_ud **rp)
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
	dobj_storage *st;
	size_t qlen, nargs, i;
	const char *q;
	dobj_sql_value *args;
	cursor_ud *cur;
	int rc;

	check_ud(L, 1, MT_SQL);
	q = luaL_checklstring(L, 2, &qlen);
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
	/* The storage last: an allocation above may run a finalizer that
	 * closes the runtime, and with it the storage. */
	st = sql_storage(L, NULL);
	rc = dobj_sql_exec(st, q, qlen, args, nargs, &cur->c);
	if (rc < 0)
		return storage_fail(L);
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

static cursor_ud *check_cursor(lua_State *L, int idx)
{
	cursor_ud *cur = check_ud(L, idx, MT_CURSOR);

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
	cursor_ud *cur = check_cursor(L, idx), *b = cur->base;
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
	cursor_ud *cur = check_cursor(L, 1), *b = cur->base;
	size_t left = dobj_cursor_rows(b->c) - b->pos;

	if (dobj_sql_one_check(left) < 0)
		return raise_plain(L, dobj_error_last());
	return cursor_next(L, 1);
}

/* cursor:raw(): the same rows as arrays (a view sharing the position). */
static int l_cursor_raw(lua_State *L)
{
	cursor_ud *cur = check_cursor(L, 1), *v;

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
	cursor_ud *cur = check_ud(L, 1, MT_CURSOR);
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
	cursor_ud *cur = check_ud(L, 1, MT_CURSOR);

	if (cur->base == cur && cur->c) {
		dobj_cursor *c = cur->c;
		cur->c = NULL;
		dobj_cursor_free(c);
	}
	return 0;
}

static int l_cursor_tostring(lua_State *L)
{
	cursor_ud *cur = check_ud(L, 1, MT_CURSOR);

	if (!cur->base->c)
		lua_pushliteral(L, "dobj.Cursor(closed)");
	else
		lua_pushfstring(L, "dobj.Cursor(%d rows)", (int)dobj_cursor_rows(cur->base->c));
	return 1;
}

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

void sql_open(lua_State *L, int mi)
{
	register_type(L, mi, MT_SQL, sql_meta, sql_methods);
	register_type(L, mi, MT_CURSOR, cursor_meta, cursor_methods);
}
