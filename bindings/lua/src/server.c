/*
 * server.c — dobj.http_listen: an HTTP/1.1 server (libmicrohttpd) driven in
 * one poll() loop with the runtime's fd, for `dobj-lua dev`.
 *
 * libmicrohttpd parses HTTP (keep-alive, chunked uploads, 100-continue) in
 * "external select" mode with epoll: its whole state is one epoll fd that we
 * poll next to rt:fd() and a signalfd for SIGINT/SIGTERM.  Nothing sleeps or
 * spins: poll() waits for the first of the three (or libmicrohttpd's own
 * connection timeout).
 *
 * Lua never runs inside a libmicrohttpd callback (an error there would
 * longjmp across its frames): the callbacks only build the request as a
 * dobj_msg (the core's rules: repeated headers joined as Fetch does, the body
 * limit) and suspend the connection.  When MHD_run returns, srv:run hands each
 * complete request to the Lua handler as (id, dobj.request); the handler runs
 * the entry in a task and answers with srv:respond(id, response), which
 * resumes the connection; the next MHD_run queues the response.
 */
#include "dobj_lua.h"

#ifdef DOBJ_HAVE_MHD
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef DOBJ_HAVE_WSLAY
#include "server_ws.h"
#endif

#define SERVER_MT "dobj.HttpServer"

enum req_state { REQ_READING, REQ_DISPATCHED, REQ_ANSWERED };

typedef struct req {
	struct server *srv;
	struct MHD_Connection *conn;
	char *uri;          /* as sent: path and query, not unescaped */
	dobj_msg *msg;      /* the request, built as headers and body arrive */
	int state;
	/* The core refused the request: why, and the status the handler answers
	 * without running the entry (413: the body passed DOBJ_MSG_BODY_MAX;
	 * 400: a Host header that is not host[:port]). */
	char *refused;
	int refused_status;
	int orphan;         /* libmicrohttpd is done with it while Lua holds its id */
	unsigned status;
	struct MHD_Response *resp;
	size_t id;          /* index in srv->slots while dispatched, 1-based */
} req;

typedef struct server {
	struct MHD_Daemon *d;
	int listen_fd;
	int port;
	char host[80];      /* ip:port, for a request without a Host header */
	req **pending;      /* complete requests of this MHD_run, for Lua */
	size_t npending, cap_pending;
	req **slots;        /* dispatched requests by id - 1 */
	size_t nslots;
	size_t *free_ids;   /* ids free for reuse */
	size_t nfree;
	size_t inflight;    /* dispatched, response not yet sent */
	int stopping;
	int running;
	int resumed;        /* a connection was resumed since the last MHD_run */
#ifdef DOBJ_HAVE_WSLAY
	ws_srv *ws;         /* upgraded connections (server_ws.c) */
#endif
} server;

static void req_free(req *q)
{
	if (!q)
		return;
	if (q->resp)
		MHD_destroy_response(q->resp);
	dobj_msg_free(q->msg);
	free(q->refused);
	free(q->uri);
	free(q);
}

/* ------------------------------------------------ libmicrohttpd callbacks */

/* Called first for each request: its raw URI (libmicrohttpd hands the access
 * handler an unescaped path without the query). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	req *q = calloc(1, sizeof(*q));

	(void)conn;
	if (!q)
		return NULL;
	q->srv = cls;
	q->uri = strdup(uri ? uri : "/");
	if (!q->uri) {
		free(q);
		return NULL;
	}
	return q;
}

struct add_headers { dobj_msg *msg; const char *error; };

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
	const char *value)
{
	struct add_headers *a = cls;

	(void)kind;
	if (!a->error && dobj_msg_add_header(a->msg, key, value ? value : "") < 0)
		a->error = dobj_error_last();
	return MHD_YES;
}

/* Mark q refused with `status`, for the reason in dobj_error_last(). */
static int refuse(req *q, int status)
{
	if (!q->refused) {
		if (!(q->refused = strdup(dobj_error_last())))
			return -1;
		q->refused_status = status;
	}
	return 0;
}

/* The request the handler gets (for its log line) when the core refused
 * the method or target: both as sent, cut at 100 bytes, control bytes and
 * spaces as '?'. */
static dobj_msg *shown_request(const char *method, const char *uri)
{
	char m[101], u[101];
	size_t i;

	snprintf(m, sizeof(m), "%s", method);
	snprintf(u, sizeof(u), "%s", uri);
	for (i = 0; m[i]; i++)
		if ((unsigned char)m[i] <= ' ' || m[i] == 0x7f)
			m[i] = '?';
	for (i = 0; u[i]; i++)
		if ((unsigned char)u[i] <= ' ' || u[i] == 0x7f)
			u[i] = '?';
	return dobj_msg_new_request(u, m[0] ? m : "?");
}

static int push_pending(server *s, req *q)
{
	if (s->npending == s->cap_pending) {
		size_t n = s->cap_pending ? s->cap_pending * 2 : 16;
		req **p = realloc(s->pending, n * sizeof(*p));
		if (!p)
			return -1;
		s->pending = p;
		s->cap_pending = n;
	}
	s->pending[s->npending++] = q;
	return 0;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
	const char *method, const char *version, const char *upload_data,
	size_t *upload_data_size, void **con_cls)
{
	server *s = cls;
	req *q = *con_cls;

	(void)url;
	(void)version;
	if (!q)
		return MHD_NO; /* out of memory in on_uri: drop the connection */
	if (q->state == REQ_ANSWERED) {
		enum MHD_Result rc = MHD_queue_response(conn, q->status, q->resp);
		MHD_destroy_response(q->resp);
		q->resp = NULL;
		return rc;
	}
	if (q->state != REQ_READING)
		return MHD_YES;
	if (!q->msg) {
		/* First call: the headers are in.  The core decides what the
		 * request is (dobj/wire.h): its method, its URL (the full one, as
		 * workerd gives it: scheme, Host, path and query) and whether it
		 * is refused, with which status; a refused request is answered
		 * with the reason without running the entry, and the connection
		 * closes (its framing cannot be trusted). */
		struct add_headers a = { NULL, NULL };
		int status = 0;
		if (dobj_msg_wire_begin(method, strlen(method), q->uri, strlen(q->uri), &a.msg,
		    &status) < 0) {
			if (!status)
				return MHD_NO; /* out of memory */
			if (refuse(q, status) < 0)
				return MHD_NO;
			q->msg = shown_request(method, q->uri);
			if (!q->msg)
				return MHD_NO;
		} else {
			q->msg = a.msg;
			/* Every header, in order: one the core refuses is a 400 (it
			 * used to end the walk, and the rest were dropped unseen). */
			MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header, &a);
			if (a.error) {
				if (refuse(q, 400) < 0)
					return MHD_NO;
			} else if (dobj_msg_wire_finish(q->msg, s->host, &status) < 0) {
				if (!status || refuse(q, status) < 0)
					return MHD_NO;
			}
		}
		q->conn = conn;
		if (!q->refused)
			return MHD_YES;
		/* Answered now, before any body: its length is not known (a
		 * Transfer-Encoding libmicrohttpd would read until the client
		 * closes), and nothing more is read from this connection. */
		goto complete;
	}
	if (*upload_data_size) {
		/* Past the limit, the rest is read and dropped: answering before
		 * the end would close the connection with unread data, and the
		 * kernel's reset could destroy the answer before the client reads it. */
		if (!q->refused && dobj_msg_append_body(q->msg, upload_data, *upload_data_size) < 0) {
			q->refused = strdup(dobj_error_last());
			if (!q->refused)
				return MHD_NO;
			q->refused_status = 413;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}
complete:
	/* Complete: suspend until Lua answers. */
	if (push_pending(s, q) < 0)
		return MHD_NO;
	q->state = REQ_DISPATCHED;
	s->inflight++;
	MHD_suspend_connection(conn);
	return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
	enum MHD_RequestTerminationCode toe)
{
	server *s = cls;
	req *q = *con_cls;

	(void)conn;
	(void)toe;
	if (!q)
		return;
	*con_cls = NULL;
	if (q->state != REQ_READING)
		s->inflight--;
	if (q->state == REQ_DISPATCHED && q->id) {
		q->orphan = 1; /* srv:respond frees it */
		q->conn = NULL;
		return;
	}
	if (q->state == REQ_DISPATCHED) {
		/* Still in srv->pending (the daemon stopped first): drop it there. */
		size_t i;
		for (i = 0; i < s->npending; i++)
			if (s->pending[i] == q)
				s->pending[i] = NULL;
	}
	req_free(q);
}

/* ------------------------------------------------------------ the server */

static server *check_srv(lua_State *L)
{
	server *s = luaL_checkudata(L, 1, SERVER_MT);

	if (!s->d)
		luaL_error(L, "the server is closed");
	return s;
}

static void server_close(server *s)
{
	size_t i;

#ifdef DOBJ_HAVE_WSLAY
	if (s->ws) {
		ws_srv_free(s->ws); /* upgraded connections go before the daemon */
		s->ws = NULL;
	}
#endif
	if (s->d) {
		/* Take the listen socket back (ours to close), and resume what is
		 * suspended: stopping with suspended connections is an API
		 * violation.  The stop calls on_completed for every request left. */
		MHD_quiesce_daemon(s->d);
		for (i = 0; i < s->nslots; i++)
			if (s->slots[i] && s->slots[i]->conn && !s->slots[i]->orphan)
				MHD_resume_connection(s->slots[i]->conn);
		for (i = 0; i < s->npending; i++)
			if (s->pending[i])
				MHD_resume_connection(s->pending[i]->conn);
		MHD_stop_daemon(s->d);
		s->d = NULL;
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
	}
	for (i = 0; i < s->nslots; i++) {
		if (s->slots[i]) {
			req_free(s->slots[i]);
			s->slots[i] = NULL;
		}
	}
	free(s->slots);
	free(s->free_ids);
	free(s->pending);
	s->slots = NULL;
	s->free_ids = NULL;
	s->pending = NULL;
	s->nslots = s->nfree = s->npending = s->cap_pending = 0;
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
	struct addrinfo hints, *ai = NULL;
	struct sockaddr_storage sa;
	socklen_t salen = sizeof(sa);
	char portstr[8], addr[INET6_ADDRSTRLEN];
	server *s;
	int one = 1, fd, rc, e;

	luaL_argcheck(L, port >= 0 && port <= 65535, 2, "port must be from 0 to 65535");
	s = lua_newuserdatauv(L, sizeof(*s), 0);
	memset(s, 0, sizeof(*s));
	s->listen_fd = -1;
	luaL_setmetatable(L, SERVER_MT);
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%d", (int)port);
	rc = getaddrinfo(ip, portstr, &hints, &ai);
	if (rc != 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "%s:%d: %s", ip, (int)port, gai_strerror(rc));
		return 2;
	}
	/* Our own socket, so that a failed bind says why (libmicrohttpd's
	 * start only says it failed). */
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		e = errno;
		freeaddrinfo(ai);
		return luaL_error(L, "socket: %s", strerror(e));
	}
	s->listen_fd = fd;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	rc = bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 511) < 0;
	e = errno;
	freeaddrinfo(ai);
	if (rc) {
		server_close(s);
		lua_pushnil(L);
		lua_pushfstring(L, "%s:%d: %s", ip, (int)port,
			e == EADDRINUSE ? "address already in use (is another server running on this port?)" : strerror(e));
		return 2;
	}
	getsockname(fd, (struct sockaddr *)&sa, &salen);
	if (sa.ss_family == AF_INET6) {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&sa;
		inet_ntop(AF_INET6, &a6->sin6_addr, addr, sizeof(addr));
		s->port = ntohs(a6->sin6_port);
		snprintf(s->host, sizeof(s->host), "[%s]:%d", addr, s->port);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&sa;
		inet_ntop(AF_INET, &a4->sin_addr, addr, sizeof(addr));
		s->port = ntohs(a4->sin_port);
		snprintf(s->host, sizeof(s->host), "%s:%d", addr, s->port);
	}
#ifdef DOBJ_HAVE_WSLAY
	s->ws = ws_srv_new();
	if (!s->ws) {
		server_close(s);
		return luaL_error(L, "out of memory");
	}
#endif
	s->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO |
#ifdef DOBJ_HAVE_WSLAY
		MHD_ALLOW_UPGRADE |
#endif
		0,
		0, NULL, NULL, on_access, s,
		MHD_OPTION_LISTEN_SOCKET, fd,
		MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
		/* Room for a head past the core's limits, so that the core
		 * answers it (414, 431) after reading it whole: libmicrohttpd's
		 * own answer to a head past its memory closes with the rest
		 * unread, and the reset could reach the client first. */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(2 * DOBJ_MSG_HEAD_MAX + (64 << 10)),
		MHD_OPTION_END);
	if (!s->d) {
		server_close(s);
		return luaL_error(L, "libmicrohttpd could not start on %s", s->host);
	}
	return 1;
}

/* srv:port(), srv:address(): the port, and "addr:port" ("[::1]:8787") bound. */
static int l_srv_port(lua_State *L)
{
	lua_pushinteger(L, check_srv(L)->port);
	return 1;
}

static int l_srv_address(lua_State *L)
{
	lua_pushstring(L, check_srv(L)->host);
	return 1;
}

/* Push the dobj.request for q (url, method, headers, body). */
static void push_req(lua_State *L, req *q)
{
	lua_createtable(L, 0, 4);
	lua_pushstring(L, q->msg->url);
	lua_setfield(L, -2, "url");
	lua_pushstring(L, q->msg->method);
	lua_setfield(L, -2, "method");
	push_msg_headers(L, q->msg);
	lua_setfield(L, -2, "headers");
	if (q->refused)
		lua_pushliteral(L, ""); /* what arrived of it was dropped */
	else
		lua_pushlstring(L, (const char *)q->msg->body, q->msg->body_len);
	lua_setfield(L, -2, "body");
	push_mt(L, MT_REQUEST);
	lua_setmetatable(L, -2);
}

static int take_id(server *s, req *q)
{
	size_t id;

	if (s->nfree) {
		id = s->free_ids[--s->nfree];
	} else {
		req **p = realloc(s->slots, (s->nslots + 1) * sizeof(*p));
		size_t *f;
		if (!p)
			return -1;
		s->slots = p;
		f = realloc(s->free_ids, (s->nslots + 1) * sizeof(*f));
		if (!f)
			return -1;
		s->free_ids = f;
		id = ++s->nslots;
	}
	s->slots[id - 1] = q;
	q->id = id;
	return 0;
}

/* Hand this MHD_run's complete requests to the handler at `h`: h(id, request)
 * or, for a request the core refused (a body past DOBJ_MSG_BODY_MAX, a bad
 * Host header), h(id, request without its body, why, status to answer). */
static int dispatch(lua_State *L, server *s, int h)
{
	size_t i;

	for (i = 0; i < s->npending; i++) {
		req *q = s->pending[i];
		if (!q)
			continue;
		s->pending[i] = NULL;
		if (take_id(s, q) < 0) {
			s->pending[i] = q; /* server_close resumes it */
			lua_pushliteral(L, "out of memory");
			return -1;
		}
		lua_pushvalue(L, h);
		lua_pushinteger(L, (lua_Integer)q->id);
		push_req(L, q);
		if (q->refused) {
			lua_pushstring(L, q->refused);
			lua_pushinteger(L, q->refused_status);
		}
		if (lua_pcall(L, q->refused ? 4 : 2, 0, 0) != LUA_OK)
			return -1; /* the rest stay in pending: server_close resumes them */
	}
	s->npending = 0;
	return 0;
}

/*
 * srv:run(rt, handler [, on_stop]): serve until SIGINT or SIGTERM, then stop taking
 * connections (the port is freed at once), let the requests in flight
 * finish and return the signal's name ("SIGINT"/"SIGTERM") or nil after
 * srv:stop().  on_stop(signal_name, requests_in_flight) is called when the
 * first signal arrives.  handler(id, request, why, status) with a third argument is a
 * request the core refused (its body is past 100 MiB: 413; a bad Host: 400).  A second signal returns at once (srv:close() then
 * drops the connections still open).  handler(id, request) is called for each complete request from
 * the loop (never from inside libmicrohttpd); it answers later, from any
 * task, with srv:respond(id, response).  rt:process() runs when the
 * runtime's fd is readable.  Errors of the handler or of rt:process() stop
 * the loop and are raised.
 */
static int l_srv_run(lua_State *L)
{
	server *s = check_srv(L);
	const union MHD_DaemonInfo *info;
	sigset_t set, old;
	int sigfd, rtfd, mfd, failed = 0;
	const char *signame = NULL;

	luaL_checktype(L, 3, LUA_TFUNCTION);
	if (!lua_isnoneornil(L, 4))
		luaL_checktype(L, 4, LUA_TFUNCTION);
	if (s->running)
		return luaL_error(L, "the server is already running");
	lua_settop(L, 4);
	lua_getfield(L, 2, "fd");
	lua_pushvalue(L, 2);
	lua_call(L, 1, 1);
	rtfd = (int)luaL_checkinteger(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, 2, "process"); /* 5: rt.process */
	luaL_checktype(L, 5, LUA_TFUNCTION);
	info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info)
		return luaL_error(L, "libmicrohttpd has no epoll fd");
	mfd = info->epoll_fd;

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
	for (;;) {
		struct pollfd p3[3], *p = p3;
		size_t nws = 0;
		MHD_UNSIGNED_LONG_LONG mhd_ms;
		int timeout = -1;

		s->resumed = 0;
		MHD_run(s->d);
		if (s->npending && dispatch(L, s, 3) < 0) {
			failed = 1;
			break;
		}
		if (s->stopping && s->inflight == 0)
			break;
		if (MHD_get_timeout(s->d, &mhd_ms) == MHD_YES)
			timeout = mhd_ms > 60000 ? 60000 : (int)mhd_ms;
		/* In external-select mode a resume wakes nothing: libmicrohttpd
		 * only sees it in the next MHD_run, so do not wait for it (a
		 * handler that answered at once, before this poll). */
		if (s->resumed)
			timeout = 0;
		p[0].fd = mfd;
		p[0].events = POLLIN;
		p[1].fd = rtfd;
		p[1].events = POLLIN;
		p[2].fd = sigfd;
		p[2].events = POLLIN;
#ifdef DOBJ_HAVE_WSLAY
		if (ws_srv_count(s->ws)) {
			/* The upgraded connections after the three (server_ws.c). */
			p = malloc((3 + ws_srv_count(s->ws)) * sizeof(*p));
			if (!p) {
				lua_pushstring(L, "out of memory");
				failed = 1;
				break;
			}
			memcpy(p, p3, sizeof(p3));
			nws = ws_srv_poll_fill(s->ws, p + 3);
		}
#endif
		p[0].revents = p[1].revents = p[2].revents = 0;
		if (poll(p, 3 + (nfds_t)nws, timeout) < 0 && errno != EINTR) {
			lua_pushfstring(L, "poll: %s", strerror(errno));
			if (p != p3)
				free(p);
			failed = 1;
			break;
		}
#ifdef DOBJ_HAVE_WSLAY
		/* Messages read queue events: process them in this round. */
		if (nws && ws_srv_poll_done(s->ws, p + 3, nws))
			p[1].revents |= POLLIN;
#endif
		if (p != p3) {
			memcpy(p3, p, sizeof(p3));
			free(p);
			p = p3;
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
					lua_pushinteger(L, (lua_Integer)s->inflight);
					if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
						failed = 1;
						break;
					}
				}
			}
		}
#ifdef DOBJ_HAVE_WSLAY
		if (s->stopping)
			ws_srv_close_all(s->ws, 1001, "the server is stopping");
#endif
		if (s->stopping && s->listen_fd >= 0) {
			/* Stop accepting and free the port; in-flight requests go on. */
			MHD_quiesce_daemon(s->d);
			close(s->listen_fd);
			s->listen_fd = -1;
		}
		/* Any event, not only POLLIN: after a handler closed the runtime
		 * its fd is gone (POLLNVAL at once, every round: the loop spun),
		 * and rt:process() then raises "the runtime is closed". */
		if (p[1].revents) {
			lua_pushvalue(L, 5);
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

/* Add each header of a response to the MHD response, checked as it goes on
 * the wire by the core (dobj_msg_header_check); framing headers are the
 * server's (dropped). */
struct add_resp_header { struct MHD_Response *r; const char *err; };

static void add_resp_header(lua_State *L, void *data, const char *name, size_t nlen,
	const char *value, size_t vlen)
{
	struct add_resp_header *a = data;

	(void)L;
	if (a->err)
		return;
	if (dobj_msg_header_check(name, nlen, value, vlen) < 0) {
		a->err = dobj_error_last();
		return;
	}
	if (dobj_msg_header_is_framing(name))
		return;
	if (MHD_add_response_header(a->r, name, value) != MHD_YES)
		a->err = "the server refused a response header";
}

static int walk_k(lua_State *L)
{
	headers_walk(L, 1, add_resp_header, lua_touserdata(L, 2));
	return 0;
}

/* Walk the headers table at `idx` in a protected call: a bad value in it
 * must not leave the MHD response behind. */
static int lua_pcall_walk(lua_State *L, int idx, struct add_resp_header *a)
{
	lua_pushcfunction(L, walk_k);
	lua_pushvalue(L, idx);
	lua_pushlightuserdata(L, a);
	return lua_pcall(L, 2, 0, 0);
}

/*
 * srv:respond(id, response): answer request `id` with a dobj.response
 * (status, headers, body).  Framing headers (content-length,
 * transfer-encoding, connection...) are the server's: dropped.  Returns the
 * status's reason phrase ("OK"), for the log.  An id answered already, or
 * never given, raises.
 */
static int l_srv_respond(lua_State *L)
{
	server *s = luaL_checkudata(L, 1, SERVER_MT);
	lua_Integer id = luaL_checkinteger(L, 2);
	lua_Integer status;
	dobj_ws *ws;
	struct MHD_Response *r;
	const char *body;
	size_t len;
	req *q;
	int isint;

	luaL_checktype(L, 3, LUA_TTABLE);
	if (id < 1 || (size_t)id > s->nslots || !s->slots[id - 1])
		return luaL_error(L, "no request %d waits for a response", (int)id);
	q = s->slots[id - 1];
	lua_getfield(L, 3, "status");
	status = lua_tointegerx(L, -1, &isint);
	if (!isint)
		return luaL_error(L, "status must be an integer");
	lua_getfield(L, 3, "web_socket");
	ws = websocket_at(L, -1);
	lua_pop(L, 1);
	if (dobj_ws_response_check(status, ws != NULL) < 0)
		return luaL_error(L, "%s", dobj_error_last());
	lua_getfield(L, 3, "body");
	body = lua_tolstring(L, -1, &len);
	if (!body && !lua_isnil(L, -1))
		return luaL_error(L, "a body must be a string (got %s)", luaL_typename(L, -1));
	if (!body)
		body = "", len = 0;
	if (dobj_msg_response_body_check((int)status, len) < 0)
		return luaL_error(L, "%s", dobj_error_last());
	/* The whole response is built before the id is taken back: a header
	 * the server cannot send raises here, and the caller can still answer
	 * the request (with a 500). */
	r = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (!r)
		return luaL_error(L, "out of memory");
	lua_getfield(L, 3, "headers");
	if (lua_istable(L, -1)) {
		struct add_resp_header a = { r, NULL };
		int top = lua_gettop(L);
		if (lua_pcall_walk(L, top, &a) != LUA_OK || a.err) {
			MHD_destroy_response(r);
			if (a.err)
				return luaL_error(L, "%s", a.err);
			return lua_error(L);
		}
	} else if (!lua_isnil(L, -1)) {
		MHD_destroy_response(r);
		return luaL_typeerror(L, -1, "table");
	}
	s->slots[id - 1] = NULL;
	s->free_ids[s->nfree++] = (size_t)id;
	q->id = 0;
	if (q->orphan) {
		MHD_destroy_response(r);
		req_free(q); /* the client left */
		lua_pushstring(L, dobj_msg_status_text((int)status));
		return 1;
	}
#ifdef DOBJ_HAVE_WSLAY
	if (ws) {
		const char *why = NULL;
		struct MHD_Response *up = ws_srv_upgrade(s->ws, q->conn, ws, &why);
		MHD_destroy_response(r);
		if (up) {
			struct add_resp_header a = { up, NULL };
			r = up;
			if (lua_istable(L, -1)) /* checked above: cannot fail */
				lua_pcall_walk(L, lua_gettop(L), &a);
		} else {
			/* Not a WebSocket request: refuse it, and the object hears
			 * that its socket closed. */
			dobj_ws_peer_close(ws, 1006, "", 0, 0);
			status = 426;
			r = MHD_create_response_from_buffer(strlen(why), (void *)why, MHD_RESPMEM_MUST_COPY);
		}
	}
#else
	if (ws) {
		MHD_destroy_response(r);
		status = 501;
		r = MHD_create_response_from_buffer(41, (void *)"dobj was built without wslay (WebSockets)",
			MHD_RESPMEM_MUST_COPY);
	}
#endif
	if (!r)
		return luaL_error(L, "out of memory");
	if (q->refused)
		MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	q->resp = r;
	q->status = (unsigned)status;
	q->state = REQ_ANSWERED;
	MHD_resume_connection(q->conn);
	s->resumed = 1;
	lua_pushstring(L, dobj_msg_status_text((int)status));
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

	lua_pushfstring(L, "dobj.HttpServer(%s%s)", s->host, s->d ? "" : ", closed");
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

#else /* !DOBJ_HAVE_MHD */

int l_http_listen(lua_State *L)
{
	return luaL_error(L, "dobj was built without libmicrohttpd (apt install libmicrohttpd-dev, then rebuild)");
}

void server_open(lua_State *L, int mi)
{
	(void)L;
	(void)mi;
}

#endif
