/*
 * websocket.c — dobj.WebSocket (one end of dobj.websocket_pair()), the ctx
 * methods of the hibernation API and the handler trampoline of WebSocket
 * events.  Every rule is the core's (dobj/websocket.h); this file translates.
 *
 * A host serving the client end from Lua (the specs) uses a buffering io:
 * client:_attach() keeps what the object sends in C, client:_take() returns
 * it as a list.  Lua never runs inside a core callback.
 */
#include "dobj_lua.h"

typedef struct frames frames;

typedef struct ws_ud {
	dobj_ws *ws;
	frames *f;    /* the buffering io of a client end served from Lua (_attach) */
} ws_ud;

static void frames_unref(frames *f);

static ws_ud *check_ws(lua_State *L, int idx)
{
	return check_ud(L, idx, MT_WEBSOCKET);
}

/* Push a new userdata for `ws` (one more reference).  `r`: the runtime
 * whose step is running (its metatables), or NULL inside a module function. */
void push_websocket(lua_State *L, runtime_ud *r, dobj_ws *ws)
{
	ws_ud *u = lua_newuserdatauv(L, sizeof(*u), 0);

	u->ws = NULL;
	u->f = NULL;
	if (r)
		push_mt_rt(r, L, MT_WEBSOCKET);
	else
		push_mt(L, MT_WEBSOCKET);
	lua_setmetatable(L, -2);
	dobj_ws_ref(ws);
	u->ws = ws;
}

/* The WebSocket at idx (borrowed), or NULL when it is not one. */
dobj_ws *websocket_at(lua_State *L, int idx)
{
	ws_ud *u = test_ud(L, idx, MT_WEBSOCKET);
	return u ? u->ws : NULL;
}

/* The same, where no module upvalue is at hand (the route codec): the
 * metatable is compared with the runtime's. */
dobj_ws *websocket_at_rt(lua_State *L, runtime_ud *r, int idx)
{
	ws_ud *u = lua_touserdata(L, idx);
	int ok;

	idx = lua_absindex(L, idx);
	if (!u || !lua_getmetatable(L, idx))
		return NULL;
	push_mt_rt(r, L, MT_WEBSOCKET);
	ok = lua_rawequal(L, -1, -2);
	lua_pop(L, 2);
	return ok ? u->ws : NULL;
}

static int ws_raise(lua_State *L)
{
	return raise_core_error(L, dobj_error_last());
}

static int l_ws_gc(lua_State *L)
{
	ws_ud *u = lua_touserdata(L, 1);

	if (u && u->ws) {
		dobj_ws_unref(u->ws);
		u->ws = NULL;
	}
	if (u && u->f) {
		frames_unref(u->f);
		u->f = NULL;
	}
	return 0;
}

static int l_ws_eq(lua_State *L)
{
	ws_ud *a = test_ud(L, 1, MT_WEBSOCKET), *b = test_ud(L, 2, MT_WEBSOCKET);

	lua_pushboolean(L, a && b && a->ws == b->ws);
	return 1;
}

static int l_ws_tostring(lua_State *L)
{
	static const char *states[] = { "connecting", "open", "closing", "closed" };
	ws_ud *u = check_ws(L, 1);

	lua_pushfstring(L, "dobj.WebSocket(%s #%d %s)",
		dobj_ws_end(u->ws) == DOBJ_WS_SERVER ? "server" : "client",
		(int)dobj_ws_serial(u->ws), states[dobj_ws_ready_state(u->ws)]);
	return 1;
}

/* A message: a string is text; dobj.bytes(s) is binary. */
static const char *message_at(lua_State *L, int idx, size_t *len, int *text)
{
	if (lua_type(L, idx) == LUA_TSTRING) {
		*text = 1;
		return lua_tolstring(L, idx, len);
	}
	if (test_ud(L, idx, MT_BYTES)) {
		const char *s;
		*text = 0;
		lua_getiuservalue(L, idx, 1);
		s = lua_tolstring(L, -1, len);
		lua_pop(L, 1); /* the userdata keeps the string alive */
		if (s)
			return s;
	}
	luaL_argerror(L, idx, "a WebSocket message must be a string (text) or dobj.bytes (binary)");
	return NULL;
}

static int l_ws_send(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	size_t len;
	int text;
	const char *data = message_at(L, 2, &len, &text);

	if (dobj_ws_send(u->ws, data, len, text) < 0)
		return ws_raise(L);
	return 0;
}

static int l_ws_close(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	int code = lua_isnoneornil(L, 2) ? -1 : (int)luaL_checkinteger(L, 2);
	size_t rlen = 0;
	const char *reason = luaL_optlstring(L, 3, NULL, &rlen);

	if (!lua_isnoneornil(L, 2) && (lua_tointeger(L, 2) < 0 || lua_tointeger(L, 2) > 65535))
		code = 0; /* refused by the core's range, with its message */
	if (dobj_ws_close(u->ws, code, reason, rlen) < 0)
		return ws_raise(L);
	return 0;
}

static runtime_ud *runtime_here(lua_State *L, const char *what)
{
	if (!running_coro)
		luaL_error(L, "%s runs inside an object's handler", what);
	return running_coro->r;
}

static int l_ws_serialize_attachment(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	runtime_ud *r = runtime_here(L, "ws:serialize_attachment");
	const unsigned char *data;
	size_t len;

	lua_settop(L, 2);
	data = storage_encode(L, r, 2, &len);
	if (dobj_ws_set_attachment(u->ws, data, len) < 0)
		return ws_raise(L);
	return 0;
}

static int l_ws_deserialize_attachment(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	size_t len;
	const unsigned char *data = dobj_ws_attachment(u->ws, &len);

	if (!data) {
		lua_pushnil(L);
		return 1;
	}
	storage_decode(L, runtime_here(L, "ws:deserialize_attachment"), data, len);
	return 1;
}

/* ------------------------------------------------ a buffering host (specs) */

/* Shared by the io (until the core releases it) and the userdata. */
struct frames {
	int refs;
	struct frame *head, *tail;
};

typedef struct frame {
	struct frame *next;
	int close, text_or_code;
	size_t len;
	char data[];
} frame;

static void buf_push(void *payload, int close, int code, const void *data, size_t len)
{
	frames *f = payload;
	frame *x = malloc(sizeof(*x) + len + 1);

	if (!x)
		return; /* out of memory: the frame is lost, as on a broken connection */
	x->next = NULL;
	x->close = close;
	x->text_or_code = code;
	x->len = len;
	if (len)
		memcpy(x->data, data, len);
	if (f->tail)
		f->tail->next = x;
	else
		f->head = x;
	f->tail = x;
}

static void buf_send(void *payload, const void *data, size_t len, int text)
{
	buf_push(payload, 0, text, data, len);
}

static void buf_close(void *payload, int code, const char *reason, size_t len)
{
	buf_push(payload, 1, code, reason, len);
}

static void frames_unref(frames *f)
{
	if (--f->refs > 0)
		return;
	while (f->head) {
		frame *x = f->head;
		f->head = x->next;
		free(x);
	}
	free(f);
}

static void buf_release(void *payload)
{
	frames_unref(payload);
}

static const dobj_ws_io buffer_io = { buf_send, buf_close, buf_release, NULL, NULL, NULL };

/* client:_attach(): serve the client end, keeping what the object sends. */
static int l_ws_attach(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	frames *f = calloc(1, sizeof(*f));

	if (!f)
		return luaL_error(L, "out of memory");
	if (u->f) {
		free(f);
		return luaL_error(L, "this WebSocket is already served by the host");
	}
	f->refs = 2;
	if (dobj_ws_attach(u->ws, &buffer_io, f) < 0) {
		free(f);
		return ws_raise(L);
	}
	u->f = f;
	return 0;
}

/* client:_take() -> { "text", {binary = "..."}, {close = code, reason = "..."}, ... }:
 * what the object sent since the last _take. */
static int l_ws_take(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	frames *f = u->f;
	int i = 0;

	lua_newtable(L);
	while (f && f->head) {
		frame *x = f->head;
		f->head = x->next;
		if (!f->head)
			f->tail = NULL;
		if (x->close) {
			lua_createtable(L, 0, 2);
			lua_pushinteger(L, x->text_or_code);
			lua_setfield(L, -2, "close");
			lua_pushlstring(L, x->data, x->len);
			lua_setfield(L, -2, "reason");
		} else if (x->text_or_code) {
			lua_pushlstring(L, x->data, x->len);
		} else {
			lua_createtable(L, 0, 1);
			lua_pushlstring(L, x->data, x->len);
			lua_setfield(L, -2, "binary");
		}
		lua_rawseti(L, -2, ++i);
		free(x);
	}
	return 1;
}

static int l_ws_receive(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	size_t len;
	int text;
	const char *data = message_at(L, 2, &len, &text);

	if (dobj_ws_receive(u->ws, data, len, text) < 0)
		return ws_raise(L);
	return 0;
}

static int l_ws_peer_close(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	int code = (int)luaL_checkinteger(L, 2);
	size_t len = 0;
	const char *reason = luaL_optlstring(L, 3, "", &len);

	if (dobj_ws_peer_close(u->ws, code, reason, len, lua_isnoneornil(L, 4) || lua_toboolean(L, 4)) < 0)
		return ws_raise(L);
	return 0;
}

static int l_ws_peer_error(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	size_t len;
	const char *msg = luaL_checklstring(L, 2, &len);

	if (dobj_ws_peer_error(u->ws, msg, len) < 0)
		return ws_raise(L);
	return 0;
}

static int l_ws_detach(lua_State *L)
{
	dobj_ws_detach(check_ws(L, 1)->ws);
	return 0;
}

static int l_ws_index(lua_State *L)
{
	ws_ud *u = check_ws(L, 1);
	const char *k = lua_tostring(L, 2);

	if (k && strcmp(k, "ready_state") == 0) {
		lua_pushinteger(L, dobj_ws_ready_state(u->ws));
		return 1;
	}
	lua_getiuservalue(L, MODIDX, UV_METHODS(MT_WEBSOCKET));
	lua_pushvalue(L, 2);
	lua_rawget(L, -2);
	return 1;
}

/* dobj.websocket_pair() -> client, server */
int l_websocket_pair(lua_State *L)
{
	dobj_ws *client, *server;

	if (dobj_ws_pair_new(&client, &server) < 0)
		return ws_raise(L);
	push_websocket(L, NULL, client);
	push_websocket(L, NULL, server);
	dobj_ws_unref(client);
	dobj_ws_unref(server);
	return 2;
}

/* ---------------------------------------------------------- ctx methods */

static dobj_obj *ctx_obj(lua_State *L)
{
	ctx_ud *x = check_ud(L, 1, MT_CTX);

	if (dobj_obj_check(x->obj) < 0)
		raise_plain(L, dobj_error_last());
	return x->obj;
}

/* ctx:accept_web_socket(ws, tags) */
static int l_ctx_accept_web_socket(lua_State *L)
{
	dobj_obj *obj = ctx_obj(L);
	ws_ud *u = check_ws(L, 2);
	const char *tags[DOBJ_WS_MAX_TAGS + 1];
	size_t lens[DOBJ_WS_MAX_TAGS + 1];
	lua_Integer n = 0, i;

	if (!lua_isnoneornil(L, 3)) {
		luaL_checktype(L, 3, LUA_TTABLE);
		n = (lua_Integer)lua_rawlen(L, 3);
		for (i = 1; i <= n && i <= DOBJ_WS_MAX_TAGS + 1; i++) {
			lua_rawgeti(L, 3, i);
			if (lua_type(L, -1) != LUA_TSTRING)
				return luaL_error(L, "tag %d must be a string, got %s", (int)i, luaL_typename(L, -1));
			tags[i - 1] = lua_tolstring(L, -1, &lens[i - 1]);
			lua_pop(L, 1); /* the table keeps the string alive */
		}
	}
	if (dobj_ws_accept(obj, u->ws, tags, lens, NULL,
	    (size_t)(n > DOBJ_WS_MAX_TAGS ? DOBJ_WS_MAX_TAGS + 1 : n)) < 0)
		return ws_raise(L);
	return 0;
}

/* ctx:get_web_sockets(tag) -> { ws... } */
static int l_ctx_get_web_sockets(lua_State *L)
{
	dobj_obj *obj = ctx_obj(L);
	size_t tlen = 0, n, i;
	const char *tag = luaL_optlstring(L, 2, NULL, &tlen);
	dobj_ws **all;

	if (dobj_obj_web_sockets(obj, tag, tlen, &all, &n) < 0)
		return ws_raise(L);
	lua_createtable(L, (int)n, 0);
	for (i = 0; i < n; i++) {
		push_websocket(L, NULL, all[i]);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
		dobj_ws_unref(all[i]);
	}
	dobj_free(all);
	return 1;
}

/* ctx:get_tags(ws) -> { tag... } */
static int l_ctx_get_tags(lua_State *L)
{
	ws_ud *u;
	size_t n, i, len;

	ctx_obj(L);
	u = check_ws(L, 2);
	if (dobj_ws_tag_count(u->ws, &n) < 0)
		return ws_raise(L);
	lua_createtable(L, (int)n, 0);
	for (i = 0; i < n; i++) {
		const char *t = dobj_ws_tag_at(u->ws, i, &len);
		lua_pushlstring(L, t, len);
		lua_rawseti(L, -2, (lua_Integer)i + 1);
	}
	return 1;
}

/* ctx:set_web_socket_auto_response(request, response); no arguments clear it. */
static int l_ctx_set_web_socket_auto_response(lua_State *L)
{
	dobj_obj *obj = ctx_obj(L);
	size_t alen = 0, blen = 0;
	const char *a = luaL_optlstring(L, 2, NULL, &alen);
	const char *b = a ? luaL_checklstring(L, 3, &blen) : NULL;

	if (dobj_obj_set_ws_auto_response(obj, a, alen, b, blen) < 0)
		return ws_raise(L);
	return 0;
}

/* ctx:get_web_socket_auto_response() -> request, response (or nil) */
static int l_ctx_get_web_socket_auto_response(lua_State *L)
{
	dobj_obj *obj = ctx_obj(L);
	const char *a, *b;
	size_t alen, blen;

	if (!dobj_obj_ws_auto_response(obj, &a, &alen, &b, &blen)) {
		lua_pushnil(L);
		return 1;
	}
	lua_pushlstring(L, a, alen);
	lua_pushlstring(L, b, blen);
	return 2;
}

/* ctx:get_web_socket_auto_response_timestamp(ws) -> dobj.date or nil */
static int l_ctx_get_web_socket_auto_response_timestamp(lua_State *L)
{
	double ms;
	ws_ud *u;

	ctx_obj(L);
	u = check_ws(L, 2);
	if (!dobj_ws_auto_response_time(u->ws, &ms)) {
		lua_pushnil(L);
		return 1;
	}
	push_date_rt(runtime_here(L, "ctx:get_web_socket_auto_response_timestamp"), L, ms);
	return 1;
}

const luaL_Reg websocket_ctx_methods[] = {
	{ "accept_web_socket", l_ctx_accept_web_socket },
	{ "get_web_sockets", l_ctx_get_web_sockets },
	{ "get_tags", l_ctx_get_tags },
	{ "set_web_socket_auto_response", l_ctx_set_web_socket_auto_response },
	{ "get_web_socket_auto_response", l_ctx_get_web_socket_auto_response },
	{ "get_web_socket_auto_response_timestamp", l_ctx_get_web_socket_auto_response_timestamp },
	{ NULL, NULL }
};

/* ------------------------------------------------------ handler dispatch */

static int ws_tramp_k(lua_State *L, int status, lua_KContext ctx)
{
	(void)L;
	(void)status;
	(void)ctx;
	return 0;
}

/* The body of a WebSocket event's coroutine: (instance, class, handler name,
 * args...) -> instance:handler(args...). */
static int ws_tramp(lua_State *L)
{
	bound_class *k = lua_touserdata(L, 2);
	const char *name = lua_tostring(L, 3);
	int nargs = lua_gettop(L) - 3, i;

	lua_getfield(L, 1, name);
	if (lua_type(L, -1) != LUA_TFUNCTION) {
		lua_pop(L, 1);
		push_slot(k->r, L, SLOT_TO_HOST(k->slot));
		lua_getfield(L, -1, name);
		lua_remove(L, -2);
	}
	if (lua_type(L, -1) != LUA_TFUNCTION)
		return luaL_error(L, "%s is not a function", name);
	lua_pushvalue(L, 1);
	for (i = 0; i < nargs; i++)
		lua_pushvalue(L, 4 + i);
	lua_callk(L, nargs + 1, 0, 0, ws_tramp_k);
	return 0;
}

/* Push the trampoline and its arguments for a WebSocket event of task t on
 * the coroutine L; returns the number of arguments (after the function). */
int websocket_push_event(lua_State *L, runtime_ud *r, dobj_task *t, bound_class *k)
{
	const dobj_ws_event *ev = dobj_task_ws_event(t);
	dobj_call_kind kind = dobj_task_call_kind(t);

	lua_pushcfunction(L, ws_tramp);
	push_slot(r, L, dobj_obj_instance(dobj_task_obj(t)));
	lua_pushlightuserdata(L, k);
	if (!ev) {
		lua_pushstring(L, "web_socket_error");
		return 3;
	}
	if (kind == DOBJ_CALL_WS_MESSAGE) {
		lua_pushstring(L, "web_socket_message");
		push_websocket(L, r, ev->ws);
		if (ev->text)
			lua_pushlstring(L, (const char *)ev->data, ev->len);
		else
			push_bytes_rt(r, L, ev->data, ev->len);
		return 5;
	}
	if (kind == DOBJ_CALL_WS_CLOSE) {
		lua_pushstring(L, "web_socket_close");
		push_websocket(L, r, ev->ws);
		lua_pushinteger(L, ev->code);
		lua_pushlstring(L, ev->reason, ev->reason_len);
		lua_pushboolean(L, ev->was_clean);
		return 7;
	}
	lua_pushstring(L, "web_socket_error");
	push_websocket(L, r, ev->ws);
	lua_createtable(L, 0, 1); /* a dobj.Error */
	lua_pushlstring(L, (const char *)ev->data, ev->len);
	lua_setfield(L, -2, "message");
	push_mt_rt(r, L, MT_ERROR);
	lua_setmetatable(L, -2);
	return 5;
}

/* The DOBJ_CLASS_WS_* flags of the class table at idx. */
unsigned websocket_class_flags(lua_State *L, int idx)
{
	static const char *names[] = { "web_socket_message", "web_socket_close", "web_socket_error" };
	unsigned flags = 0;
	int i;

	for (i = 0; i < 3; i++) {
		lua_getfield(L, idx, names[i]);
		if (!lua_isnil(L, -1))
			flags |= DOBJ_CLASS_WS_MESSAGE << i;
		lua_pop(L, 1);
	}
	return flags;
}

static const luaL_Reg ws_meta[] = {
	{ "__index", l_ws_index }, { "__gc", l_ws_gc }, { "__eq", l_ws_eq },
	{ "__tostring", l_ws_tostring }, { NULL, NULL }
};

static const luaL_Reg ws_methods[] = {
	{ "send", l_ws_send }, { "close", l_ws_close },
	{ "serialize_attachment", l_ws_serialize_attachment },
	{ "deserialize_attachment", l_ws_deserialize_attachment },
	{ "_attach", l_ws_attach }, { "_take", l_ws_take }, { "_receive", l_ws_receive },
	{ "_peer_close", l_ws_peer_close }, { "_peer_error", l_ws_peer_error },
	{ "_detach", l_ws_detach }, { NULL, NULL }
};

void websocket_open(lua_State *L, int mi)
{
	register_type(L, mi, MT_WEBSOCKET, ws_meta, ws_methods);
	/* The hibernation API's ctx methods join ctx_open's. */
	lua_getiuservalue(L, mi, UV_METHODS(MT_CTX));
	lua_pushvalue(L, mi);
	luaL_setfuncs(L, websocket_ctx_methods, 1);
	lua_pop(L, 1);
}
