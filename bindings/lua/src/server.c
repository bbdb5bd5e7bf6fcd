/*
 * server.c — dobj.http_listen: the core's HTTP/WebSocket server
 * (dobj/server.h) driven in one poll() loop with the runtime's fd, for
 * `dobj-lua dev`.
 *
 * poll() waits on three fds: the server's, the runtime's and a signalfd for
 * SIGINT/SIGTERM.  Nothing sleeps or spins.  Lua never runs inside the
 * core's request hook (an error there would longjmp across its frames): the
 * hook only queues the request; when dobj_server_process returns, srv:run
 * hands each one to the Lua handler as (id, dobj.request); the handler runs
 * the entry in a task and answers with srv:respond(id, response).
 */
#include "dobj_lua.h"

#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define SERVER_MT "dobj.HttpServer"

typedef struct pending {
	uint64_t id;
	const dobj_msg *msg;   /* the server's, until answered */
	int refused;
	const char *why;
} pending;

typedef struct server {
	dobj_server *s;
	pending *pending;      /* requests of this process call, for Lua */
	size_t npending, cap;
	int failed;            /* out of memory in the hook */
	int stopping;
	int running;
} server;

static void on_request(void *data, uint64_t id, const dobj_msg *msg, int refused, const char *why)
{
	server *srv = data;

	if (srv->npending == srv->cap) {
		size_t n = srv->cap ? srv->cap * 2 : 16;
		pending *p = realloc(srv->pending, n * sizeof(*p));
		if (!p) {
			srv->failed = 1;
			return;
		}
		srv->pending = p;
		srv->cap = n;
	}
	srv->pending[srv->npending].id = id;
	srv->pending[srv->npending].msg = msg;
	srv->pending[srv->npending].refused = refused;
	srv->pending[srv->npending].why = why;
	srv->npending++;
}

static server *check_srv(lua_State *L)
{
	server *s = luaL_checkudata(L, 1, SERVER_MT);

	if (!s->s)
		luaL_error(L, "the server is closed");
	return s;
}

static void server_close(server *s)
{
	dobj_server_free(s->s);
	s->s = NULL;
	free(s->pending);
	s->pending = NULL;
	s->npending = s->cap = 0;
}

/*
 * dobj.http_listen(host, port): a server listening on host:port, host an
 * address ("127.0.0.1", "::1", "0.0.0.0") or a name ("localhost": its first
 * address); port 0: any free port, see srv:port().  nil, "host:port: reason"
 * when the address cannot be had (unknown, in use, not local, no permission).
 */
int l_http_listen(lua_State *L)
{
	const char *ip = luaL_checkstring(L, 1);
	lua_Integer port = luaL_checkinteger(L, 2);
	static const dobj_server_hooks hooks = { on_request, NULL };
	server *s;

	luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port must be from 0 to 65535");
	s = lua_newuserdatauv(L, sizeof(*s), 0);
	memset(s, 0, sizeof(*s));
	luaL_setmetatable(L, SERVER_MT);
	if (dobj_server_listen(ip, (int)port, &hooks, s, &s->s) < 0) {
		if (dobj_error_last_code() != DOBJ_EARG)
			return luaL_error(L, "%s", dobj_error_last());
		lua_pushnil(L);
		lua_pushstring(L, dobj_error_last());
		return 2;
	}
	return 1;
}

/* srv:port(), srv:address(): the port, and "addr:port" ("[::1]:8787") bound. */
static int l_srv_port(lua_State *L)
{
	lua_pushinteger(L, dobj_server_port(check_srv(L)->s));
	return 1;
}

static int l_srv_address(lua_State *L)
{
	lua_pushstring(L, dobj_server_address(check_srv(L)->s));
	return 1;
}

/* Push the dobj.request for a message (url, method, headers, body). */
static void push_req(lua_State *L, const pending *p)
{
	const dobj_msg *m = p->msg;

	lua_createtable(L, 0, 4);
	lua_pushstring(L, m->url);
	lua_setfield(L, -2, "url");
	lua_pushstring(L, m->method);
	lua_setfield(L, -2, "method");
	push_msg_headers(L, m);
	lua_setfield(L, -2, "headers");
	if (p->refused)
		lua_pushliteral(L, ""); /* what arrived of it was dropped */
	else
		lua_pushlstring(L, (const char *)m->body, m->body_len);
	lua_setfield(L, -2, "body");
	push_mt(L, MT_REQUEST);
	lua_setmetatable(L, -2);
}

/* Hand the requests of the last process call to the handler at `h`:
 * h(id, request) or, for a request the core refused, h(id, request without
 * its body, why, status to answer). */
static int dispatch(lua_State *L, server *s, int h)
{
	size_t i, n = s->npending;

	s->npending = 0; /* a handler that answers at once may queue more */
	for (i = 0; i < n; i++) {
		pending p = s->pending[i];
		lua_pushvalue(L, h);
		lua_pushinteger(L, (lua_Integer)p.id);
		push_req(L, &p);
		if (p.refused) {
			lua_pushstring(L, p.why);
			lua_pushinteger(L, p.refused);
		}
		if (lua_pcall(L, p.refused ? 4 : 2, 0, 0) != LUA_OK)
			return -1;
	}
	return 0;
}

static int process(lua_State *L, server *s, int h)
{
	if (dobj_server_process(s->s) < 0) {
		lua_pushstring(L, dobj_error_last());
		return -1;
	}
	if (s->failed) {
		lua_pushliteral(L, "out of memory");
		return -1;
	}
	return s->npending ? dispatch(L, s, h) : 0;
}

/*
 * srv:run(rt, handler [, on_stop [, on_ready]]): serve until SIGINT or SIGTERM, then stop taking
 * connections (the port is freed at once; WebSockets close with 1012), let the
 * requests in flight finish and return the signal's name ("SIGINT"/"SIGTERM") or nil after
 * srv:stop().  on_stop(signal_name, requests_in_flight) is called when the
 * first signal arrives; on_ready() once both signals are the server's, before
 * it serves (where to say "Ready": a supervisor may signal at once).  handler(id, request, why, status) with a third argument is a
 * request the core refused (dobj/wire.h: 400, 413, 414, 431, 501), answered with that
 * status without running the entry.  A second signal returns at once (srv:close() then
 * drops the connections still open).  handler(id, request) is called for each complete request from
 * the loop (never from inside the server); it answers later, from any
 * task, with srv:respond(id, response).  rt:process() runs when the
 * runtime's fd is readable.  Errors of the handler or of rt:process() stop
 * the loop and are raised.
 */
static int l_srv_run(lua_State *L)
{
	server *s = check_srv(L);
	sigset_t set, old;
	int sigfd, rtfd, failed = 0;
	const char *signame = NULL;

	luaL_checktype(L, 3, LUA_TFUNCTION);
	if (!lua_isnoneornil(L, 4))
		luaL_checktype(L, 4, LUA_TFUNCTION);
	if (!lua_isnoneornil(L, 5))
		luaL_checktype(L, 5, LUA_TFUNCTION);
	if (s->running)
		return luaL_error(L, "the server is already running");
	lua_settop(L, 5);
	lua_getfield(L, 2, "fd");
	lua_pushvalue(L, 2);
	lua_call(L, 1, 1);
	rtfd = (int)luaL_checkinteger(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, 2, "process"); /* 6: rt.process */
	luaL_checktype(L, 6, LUA_TFUNCTION);

	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	if (sigprocmask(SIG_BLOCK, &set, &old) < 0)
		return luaL_error(L, "sigprocmask: %s", strerror(errno));
	sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sigfd < 0) {
		int e = errno;
		sigprocmask(SIG_SETMASK, &old, NULL);
		return luaL_error(L, "signalfd: %s", strerror(e));
	}
	s->running = 1;
	if (lua_isfunction(L, 5)) {
		lua_pushvalue(L, 5);
		failed = lua_pcall(L, 0, 0, 0) != LUA_OK;
	}
	while (!failed) {
		struct pollfd p[3];
		int timeout = dobj_server_timeout(s->s), served = 0;

		if (s->stopping && dobj_server_inflight(s->s) == 0)
			break;
		p[0].fd = dobj_server_fd(s->s);
		p[1].fd = rtfd;
		p[2].fd = sigfd;
		p[0].events = p[1].events = p[2].events = POLLIN;
		p[0].revents = p[1].revents = p[2].revents = 0;
		if (poll(p, 3, timeout) < 0 && errno != EINTR) {
			lua_pushfstring(L, "poll: %s", strerror(errno));
			failed = 1;
			break;
		}
		if (p[2].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
				if (signame)
					break; /* a second signal: stop now, in flight or not */
				signame = si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
				s->stopping = 1;
				if (lua_isfunction(L, 4)) {
					lua_pushvalue(L, 4);
					lua_pushstring(L, signame);
					lua_pushinteger(L, (lua_Integer)dobj_server_inflight(s->s));
					if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
						failed = 1;
						break;
					}
				}
			}
		}
		if (s->stopping)
			dobj_server_quiesce(s->s, 1012, "the server is stopping"); /* as dobj dev (and uvicorn) */
		if (p[0].revents || timeout == 0) {
			if (process(L, s, 3) < 0) {
				failed = 1;
				break;
			}
			served = 1;
		}
		/* Any event, not only POLLIN: after a handler closed the runtime
		 * its fd is gone (POLLNVAL at once, every round: the loop spun),
		 * and rt:process() then raises "the runtime is closed".  After
		 * the server's work too: WebSocket messages it read queued
		 * events, processed in this round. */
		if (p[1].revents || served) {
			lua_pushvalue(L, 6);
			lua_pushvalue(L, 2);
			if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
				failed = 1;
				break;
			}
		}
	}
	s->running = 0;
	close(sigfd);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (failed)
		return lua_error(L);
	if (signame)
		lua_pushstring(L, signame);
	else
		lua_pushnil(L);
	return 1;
}

/* srv:stop(): make srv:run() return once the requests in flight are
 * answered (what SIGINT/SIGTERM do). */
static int l_srv_stop(lua_State *L)
{
	check_srv(L)->stopping = 1;
	return 0;
}

/* Add each header of a response to the core's response (it checks each
 * as it goes on the wire and drops framing headers). */
struct add_resp_header { dobj_server_response *r; int failed; };

static void add_resp_header(lua_State *L, void *data, const char *name, size_t nlen,
	const char *value, size_t vlen)
{
	struct add_resp_header *a = data;

	(void)L;
	if (!a->failed && dobj_server_response_header(a->r, name, nlen, value, vlen) < 0)
		a->failed = 1;
}

static int walk_k(lua_State *L)
{
	headers_walk(L, 1, add_resp_header, lua_touserdata(L, 2));
	return 0;
}

/*
 * srv:respond(id, response): answer request `id` with a dobj.response
 * (status, headers, body).  Framing headers (content-length,
 * transfer-encoding, connection...) are the server's: dropped.  Returns the
 * status's reason phrase ("OK"), for the log.  An id answered already, or
 * never given, raises; so does a header the server cannot send (the
 * request can then still be answered, with a 500).
 */
static int l_srv_respond(lua_State *L)
{
	server *s = check_srv(L);
	lua_Integer id = luaL_checkinteger(L, 2);
	lua_Integer status;
	dobj_server_response *r;
	const char *body;
	size_t len;
	dobj_ws *ws;
	int isint, sent;

	luaL_checktype(L, 3, LUA_TTABLE);
	lua_getfield(L, 3, "status");
	status = lua_tointegerx(L, -1, &isint);
	if (!isint)
		return luaL_error(L, "status must be an integer");
	lua_getfield(L, 3, "web_socket");
	ws = websocket_at(L, -1);
	lua_getfield(L, 3, "body");
	body = lua_tolstring(L, -1, &len);
	if (!body && !lua_isnil(L, -1))
		return luaL_error(L, "a body must be a string (got %s)", luaL_typename(L, -1));
	lua_getfield(L, 3, "headers");
	if (!lua_istable(L, -1) && !lua_isnil(L, -1))
		return luaL_typeerror(L, -1, "table");
	if (status < 0 || status > 999 ||
	    dobj_server_response_begin(s->s, id < 1 ? 0 : (uint64_t)id, (int)status, body, body ? len : 0,
	    ws, &r) < 0)
		return luaL_error(L, "%s", status < 0 || status > 999 ? "status out of range"
			: dobj_error_last());
	if (lua_istable(L, -1)) {
		/* In a protected call: a bad value in the table must not leave
		 * the response behind. */
		struct add_resp_header a = { r, 0 };
		lua_pushcfunction(L, walk_k);
		lua_pushvalue(L, -2);
		lua_pushlightuserdata(L, &a);
		if (lua_pcall(L, 2, 0, 0) != LUA_OK || a.failed) {
			dobj_server_response_abort(r);
			if (a.failed)
				return luaL_error(L, "%s", dobj_error_last());
			return lua_error(L);
		}
	}
	sent = dobj_server_response_send(r);
	if (sent < 0)
		return luaL_error(L, "%s", dobj_error_last());
	lua_pushstring(L, dobj_msg_status_text(sent));
	return 1;
}

static int l_srv_close(lua_State *L)
{
	server *s = luaL_checkudata(L, 1, SERVER_MT);

	if (s->running)
		return luaL_error(L, "close() while srv:run() runs: call srv:stop()");
	server_close(s);
	return 0;
}

static int l_srv_gc(lua_State *L)
{
	server_close(luaL_checkudata(L, 1, SERVER_MT));
	return 0;
}

static int l_srv_tostring(lua_State *L)
{
	server *s = luaL_checkudata(L, 1, SERVER_MT);

	lua_pushfstring(L, "dobj.HttpServer(%s%s)", s->s ? dobj_server_address(s->s) : "",
		s->s ? "" : "closed");
	return 1;
}

void server_open(lua_State *L, int mi)
{
	static const luaL_Reg methods[] = {
		{ "run", l_srv_run }, { "respond", l_srv_respond }, { "stop", l_srv_stop },
		{ "port", l_srv_port }, { "address", l_srv_address }, { "close", l_srv_close },
		{ NULL, NULL }
	};
	static const luaL_Reg meta[] = {
		{ "__gc", l_srv_gc }, { "__close", l_srv_close },
		{ "__tostring", l_srv_tostring }, { NULL, NULL }
	};

	luaL_newmetatable(L, SERVER_MT);
	luaL_setfuncs(L, meta, 0);
	luaL_newlibtable(L, methods);
	lua_pushvalue(L, mi); /* the module state, for push_mt */
	luaL_setfuncs(L, methods, 1);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
}
