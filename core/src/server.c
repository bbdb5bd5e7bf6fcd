/*
 * server.c — dobj/server.h: the HTTP/1.1 server of `dobj dev` and
 * `dobj-lua dev` (libmicrohttpd), driven by the host's loop.
 *
 * libmicrohttpd runs in "external select" mode with epoll: its whole state
 * is one epoll fd, which goes into the server's own epoll set with an
 * eventfd (work queued by the host: an answer, a WebSocket message) and the
 * upgraded WebSocket sockets (server_ws.c).  That set is the one fd a host
 * polls; dobj_server_process does what is ready and nothing blocks.
 *
 * The host's code never runs inside a libmicrohttpd callback: the callbacks
 * only build the request as a dobj_msg (the core's rules, dobj/wire.h) and
 * suspend the connection.  When MHD_run returns, each complete request goes
 * to the request hook; the host answers with dobj_server_response_*, which
 * resumes the connection; the next MHD_run queues the answer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#ifdef DOBJ_HAVE_MHD
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server_int.h"

enum req_state { REQ_READING, REQ_DISPATCHED, REQ_ANSWERED };

typedef struct req {
	struct MHD_Connection *conn;
	char *uri;          /* as sent: path and query, not unescaped */
	dobj_msg *msg;      /* the request, built as headers and body arrive */
	int state;
	/* The core refused the request: why, and the status the host answers
	 * without running its entry (dobj/wire.h; 413 for a body too large). */
	char *refused;
	int refused_status;
	int orphan;         /* libmicrohttpd is done with it while the host holds its id */
	int counted;        /* in srv->inflight */
	unsigned status;
	struct MHD_Response *resp;
	uint64_t id;        /* index in srv->slots + 1 while dispatched */
	struct req *wprev, *wnext; /* in srv->waiting */
	int waiting;
#ifdef DOBJ_HAVE_WSLAY
	wsc *ws;            /* the WebSocket its 101 answer upgrades to */
#endif
} req;

struct dobj_server {
	struct MHD_Daemon *d;
	dobj_server_hooks hooks;
	void *data;
	int listen_fd;
	int port;
	char host[80];      /* ip:port, for a request without a Host header */
	int epfd;           /* the fd the host polls */
	int evfd;           /* readable: work queued for dobj_server_process */
	int tfd;            /* readable: a WebSocket's close wait ran out (server_ws.c) */
	int tfd_armed;
	int woken;          /* evfd written since it was last read */
	int processing;     /* inside dobj_server_process */
	int wake_after;     /* a wake asked for inside dobj_server_process */
	req **pending;      /* complete requests of this MHD_run, for the host */
	size_t npending, cap_pending;
	req **slots;        /* dispatched requests by id - 1 */
	size_t nslots;
	size_t *free_ids;   /* ids free for reuse */
	size_t nfree;
	size_t inflight;    /* dispatched, answer not yet out */
	int quiesced;
	int closing;        /* dobj_server_free: no more hooks */
	int resumed;        /* a connection was resumed since the last MHD_run */
	req *waiting;       /* head in, body not all in (see nudge_closed) */
#ifdef DOBJ_HAVE_WSLAY
	ws_srv *ws;
#endif
};

/* An answer being built: libmicrohttpd's response is made at send, when it
 * is known whether it is a plain one or a WebSocket upgrade. */
struct dobj_server_response {
	dobj_server *s;
	req *q;
	int status;
	dobj_ws *ws;
	void *body;         /* ours (malloc), handed to libmicrohttpd at send */
	size_t len;
	char **lines;       /* "name\0value\0" each, checked */
	size_t nlines;
};

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

void dobj__server_wake(dobj_server *s)
{
	uint64_t one = 1;

	if (s->processing) {
		/* Written at its end: libmicrohttpd's work for this (a closed
		 * upgrade) is in a run after the current one, and its timeout
		 * does not say so. */
		s->wake_after = 1;
		return;
	}
	if (s->woken)
		return;
	s->woken = 1;
	if (write(s->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		s->woken = 0;
}

/* ------------------------------------------------ libmicrohttpd callbacks */

/* Called first for each request: its raw URI (libmicrohttpd hands the access
 * handler an unescaped path without the query). */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	req *q = calloc(1, sizeof(*q));

	(void)cls;
	(void)conn;
	if (!q)
		return NULL;
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

/* The request the host gets (for its log line) when the core refused the
 * method or target: both as sent, cut at 100 bytes, control bytes and
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

static int push_pending(dobj_server *s, req *q)
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

/*
 * The requests whose head is in and whose body is not.  libmicrohttpd
 * (epoll, edge-triggered) reads a connection again only after a new edge
 * once a read came back short: a close that arrived with the last bytes
 * gives none, and such a request waited for the rest of its body for ever
 * (its socket held until the server stopped, the cut never reported).
 * After each run, a waiting request whose client has closed with nothing
 * left to read gets its read side shut here: that wakes libmicrohttpd's
 * epoll, its next read finds the close and the request ends as cut short.
 */
static void wait_add(dobj_server *s, req *q)
{
	if (q->waiting)
		return;
	q->waiting = 1;
	q->wprev = NULL;
	q->wnext = s->waiting;
	if (s->waiting)
		s->waiting->wprev = q;
	s->waiting = q;
}

static void wait_del(dobj_server *s, req *q)
{
	if (!q->waiting)
		return;
	q->waiting = 0;
	if (q->wprev)
		q->wprev->wnext = q->wnext;
	else
		s->waiting = q->wnext;
	if (q->wnext)
		q->wnext->wprev = q->wprev;
}

/* 1 when a waiting request's client was found gone (another run is due). */
static int nudge_closed(dobj_server *s)
{
	req *q = s->waiting, *next;
	int nudged = 0;

	for (; q; q = next) {
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(q->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		char c;
		next = q->wnext;
		if (ci && recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
			wait_del(s, q);
			shutdown(ci->connect_fd, SHUT_RD);
			nudged = 1;
		}
	}
	return nudged;
}

/* Does the request have a body (Content-Length other than 0, or
 * Transfer-Encoding)? */
static int has_body(struct MHD_Connection *conn)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");

	return (cl && strcmp(cl, "0") != 0) ||
		MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
}

/* The head is in: the core decides what the request is (dobj/wire.h). */
static int begin_request(dobj_server *s, req *q, struct MHD_Connection *conn, const char *method)
{
	struct add_headers a = { NULL, NULL };
	int status = 0;

	if (dobj_msg_wire_begin(method, strlen(method), q->uri, strlen(q->uri), &a.msg,
	    &status) < 0) {
		if (!status || refuse(q, status) < 0)
			return -1;
		return (q->msg = shown_request(method, q->uri)) ? 0 : -1;
	}
	q->msg = a.msg;
	/* Every header, in order: one the core refuses is a 400 (not the end
	 * of the walk, with the rest dropped unseen). */
	MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header, &a);
	if (a.error)
		return refuse(q, 400);
	if (dobj_msg_wire_finish(q->msg, s->host, &status) < 0)
		return status ? refuse(q, status) : -1;
	return 0;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
	const char *method, const char *version, const char *upload_data,
	size_t *upload_data_size, void **con_cls)
{
	dobj_server *s = cls;
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
		if (begin_request(s, q, conn, method) < 0)
			return MHD_NO; /* out of memory */
		q->conn = conn;
		if (!q->refused) {
			if (has_body(conn))
				wait_add(s, q);
			return MHD_YES;
		}
		/* Answered now, before any body: its length is not known (a
		 * Transfer-Encoding libmicrohttpd would read until the client
		 * closes), and nothing more is read from this connection. */
		goto complete;
	}
	if (*upload_data_size) {
		/* Past the limit, the rest is read and dropped: answering before
		 * the end would close the connection with unread data, and the
		 * kernel's reset could destroy the answer before the client reads it. */
		if (!q->refused && dobj_msg_append_body(q->msg, upload_data, *upload_data_size) < 0 &&
		    refuse(q, 413) < 0)
			return MHD_NO;
		*upload_data_size = 0;
		wait_add(s, q); /* a refused one is read to its end too */
		return MHD_YES;
	}
complete:
	wait_del(s, q);
	/* Complete: suspend until the host answers. */
	if (push_pending(s, q) < 0)
		return MHD_NO;
	q->state = REQ_DISPATCHED;
	q->counted = 1;
	s->inflight++;
	MHD_suspend_connection(conn);
	return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
	enum MHD_RequestTerminationCode toe)
{
	dobj_server *s = cls;
	req *q = *con_cls;

	(void)conn;
	(void)toe;
	if (!q)
		return;
	*con_cls = NULL;
	wait_del(s, q);
#ifdef DOBJ_HAVE_WSLAY
	if (q->ws) {
		wsc *c = q->ws;
		q->ws = NULL;
		dobj__ws_srv_forget(c);
	}
#endif
	if (q->state == REQ_READING && q->msg && !q->refused && !s->closing &&
	    s->hooks.abandoned)
		s->hooks.abandoned(s->data, q->msg->method, q->msg->url);
	if (q->counted)
		s->inflight--; /* dispatched, or answered: its answer is out */
	if (q->state == REQ_DISPATCHED) {
		if (q->id) {
			q->orphan = 1; /* the host still holds its id: freed when answered */
			q->conn = NULL;
			return;
		}
		/* Still in srv->pending (the daemon stopped first): drop it there. */
		for (size_t i = 0; i < s->npending; i++)
			if (s->pending[i] == q)
				s->pending[i] = NULL;
	}
	req_free(q);
}

/* ------------------------------------------------------------ the server */

static void server_close(dobj_server *s)
{
	size_t i;

	s->closing = 1;
#ifdef DOBJ_HAVE_WSLAY
	if (s->ws) {
		dobj__ws_srv_free(s->ws); /* upgraded connections go before the daemon */
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
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	s->listen_fd = -1;
	for (i = 0; i < s->nslots; i++)
		req_free(s->slots[i]);
	free(s->slots);
	free(s->free_ids);
	free(s->pending);
	if (s->epfd >= 0)
		close(s->epfd);
	if (s->evfd >= 0)
		close(s->evfd);
	if (s->tfd >= 0)
		close(s->tfd);
}

void dobj_server_free(dobj_server *s)
{
	if (!s)
		return;
	server_close(s);
	free(s);
}

/* Bind our own socket, so that a failed bind says why (libmicrohttpd's
 * start only says it failed). */
static int bind_socket(dobj_server *s, const char *ip, int port)
{
	struct addrinfo hints, *ai = NULL;
	struct sockaddr_storage sa;
	socklen_t salen = sizeof(sa);
	char portstr[8], addr[INET6_ADDRSTRLEN];
	int one = 1, fd, rc, e;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(ip, portstr, &hints, &ai);
	if (rc != 0)
		return dobj_error_set(DOBJ_EARG, "%s:%d: %s", ip, port, gai_strerror(rc));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		e = errno;
		freeaddrinfo(ai);
		return dobj_error_set(DOBJ_ERROR, "socket: %s", strerror(e));
	}
	s->listen_fd = fd;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	rc = bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0;
	e = errno;
	freeaddrinfo(ai);
	if (rc)
		return dobj_error_set(DOBJ_EARG, "%s:%d: %s", ip, port, e == EADDRINUSE
			? "address already in use (is another server running on this port?)"
			: strerror(e));
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
	return DOBJ_OK;
}

static int epoll_add(int epfd, int fd, void *ptr)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.ptr = ptr;
	return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
}

int dobj_server_listen(const char *ip, int port, const dobj_server_hooks *hooks, void *data,
	dobj_server **out)
{
	const union MHD_DaemonInfo *info;
	dobj_server *s;
	int rc;

	*out = NULL;
	if (!ip || !hooks || !hooks->request)
		return dobj_error_set(DOBJ_EARG, "dobj_server_listen needs an address and a request hook");
	if (port < 0 || port > 65535)
		return dobj_error_set(DOBJ_EARG, "port must be from 0 to 65535");
	if (!(s = calloc(1, sizeof(*s))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	s->hooks = *hooks;
	s->data = data;
	s->listen_fd = s->epfd = s->evfd = s->tfd = -1;
	if ((rc = bind_socket(s, ip, port)) < 0)
		goto error;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->epfd < 0 || s->evfd < 0 || s->tfd < 0 || epoll_add(s->epfd, s->evfd, &s->evfd) < 0 ||
	    epoll_add(s->epfd, s->tfd, &s->tfd) < 0) {
		rc = dobj_error_set(DOBJ_ERROR, "epoll: %s", strerror(errno));
		goto error;
	}
#ifdef DOBJ_HAVE_WSLAY
	if (!(s->ws = dobj__ws_srv_new(s, s->epfd))) {
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		goto error;
	}
#endif
	s->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO |
#ifdef DOBJ_HAVE_WSLAY
		MHD_ALLOW_UPGRADE |
#endif
		0,
		0, NULL, NULL, on_access, s,
		MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
		MHD_OPTION_URI_LOG_CALLBACK, on_uri, s,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
		MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)0,
		/* Each connection's memory: a head up to the core's limit fits
		 * (served), and one a little past it (to ~155 KiB) is read whole
		 * and answered by the core (431 with its reason); past that,
		 * libmicrohttpd answers 431 itself and closes with the rest
		 * unread (the reset may reach the client first).  No larger:
		 * libmicrohttpd 0.9.75 zeroes the whole pool at every request
		 * on a kept-alive connection, and shrinking the read buffer
		 * zeroes half of it again; at twice the limit (320 KiB) that
		 * was ~28 us of CPU per request, half of dobj-lua dev's whole
		 * cost (bench/http_bench.py). */
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(DOBJ_MSG_HEAD_MAX + (32 << 10)),
		MHD_OPTION_END);
	if (!s->d) {
		rc = dobj_error_set(DOBJ_ERROR, "libmicrohttpd could not start on %s", s->host);
		goto error;
	}
	info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_EPOLL_FD);
	if (!info || epoll_add(s->epfd, info->epoll_fd, s) < 0) {
		rc = dobj_error_set(DOBJ_ERROR, "libmicrohttpd has no epoll fd");
		goto error;
	}
	*out = s;
	return DOBJ_OK;
error:
	dobj_server_free(s);
	return rc;
}

int dobj_server_fd(const dobj_server *s)
{
	return s->epfd;
}

int dobj_server_port(const dobj_server *s)
{
	return s->port;
}

const char *dobj_server_address(const dobj_server *s)
{
	return s->host;
}

size_t dobj_server_inflight(const dobj_server *s)
{
	return s->inflight;
}

size_t dobj_server_websockets(const dobj_server *s)
{
#ifdef DOBJ_HAVE_WSLAY
	return dobj__ws_srv_count(s->ws);
#else
	(void)s;
	return 0;
#endif
}

int dobj_server_timeout(dobj_server *s)
{
	MHD_UNSIGNED_LONG_LONG ms;
	int t = -1;

	if (s->woken || s->resumed)
		return 0;
	if (s->d && MHD_get_timeout(s->d, &ms) == MHD_YES)
		t = ms > 60000 ? 60000 : (int)ms;
#ifdef DOBJ_HAVE_WSLAY
	{
		int w = dobj__ws_srv_timeout(s->ws);
		if (w >= 0 && (t < 0 || w < t))
			t = w;
	}
#endif
	return t;
}

static int take_id(dobj_server *s, req *q)
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

/* Hand this MHD_run's complete requests to the host. */
static int dispatch(dobj_server *s)
{
	size_t i;

	for (i = 0; i < s->npending; i++) {
		req *q = s->pending[i];
		if (!q)
			continue;
		s->pending[i] = NULL;
		if (take_id(s, q) < 0) {
			s->pending[i] = q; /* server_close resumes it */
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		}
		s->hooks.request(s->data, q->id, q->msg, q->refused ? q->refused_status : 0,
			q->refused);
	}
	s->npending = 0;
	return DOBJ_OK;
}

#ifdef DOBJ_HAVE_WSLAY
/* The fd becomes readable when the next WebSocket close wait runs out, so
 * that a host whose loop only watches the fd ends it in time. */
static void arm_close_wait(dobj_server *s)
{
	int ms = dobj__ws_srv_timeout(s->ws);
	struct itimerspec its;

	if (ms < 0 && !s->tfd_armed)
		return;
	memset(&its, 0, sizeof(its));
	if (ms >= 0) {
		its.it_value.tv_sec = ms / 1000;
		its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L + 1; /* never 0: that disarms */
	}
	timerfd_settime(s->tfd, 0, &its, NULL);
	s->tfd_armed = ms >= 0;
}
#endif

int dobj_server_process(dobj_server *s)
{
	struct epoll_event evs[64];
	MHD_UNSIGNED_LONG_LONG ms;
	uint64_t v;
	int n, i, rounds, rc = DOBJ_OK;

	if (!s->d)
		return dobj_error_set(DOBJ_ECLOSED, "the server is closed");
	s->processing = 1;
	if (s->woken) {
		s->woken = 0;
		if (read(s->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
			rc = dobj_error_set(DOBJ_ERROR, "eventfd: %s", strerror(errno));
	}
	/* The WebSocket sockets that are ready (the others: MHD_run looks). */
	n = epoll_wait(s->epfd, evs, 64, 0);
	for (i = 0; i < n; i++) {
		void *p = evs[i].data.ptr;
		if (p == &s->evfd) {
			if (read(s->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				rc = dobj_error_set(DOBJ_ERROR, "eventfd: %s", strerror(errno));
		} else if (p == &s->tfd) {
			if (read(s->tfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				rc = dobj_error_set(DOBJ_ERROR, "timerfd: %s", strerror(errno));
		}
#ifdef DOBJ_HAVE_WSLAY
		else if (p != s)
			dobj__ws_srv_ready(s->ws, p, evs[i].events);
#endif
	}
	/* A host that answers at once (inside the hook) resumes a connection:
	 * libmicrohttpd sees that only in its next run. */
	for (rounds = 0; rc == DOBJ_OK && rounds < 4; rounds++) {
		s->resumed = 0;
		MHD_run(s->d);
		if (s->npending)
			rc = dispatch(s);
		if (!s->resumed && !(s->waiting && nudge_closed(s)))
			break;
	}
#ifdef DOBJ_HAVE_WSLAY
	dobj__ws_srv_flush(s->ws);
	dobj__ws_srv_expire(s->ws);
	arm_close_wait(s);
#endif
	s->processing = 0;
	/* libmicrohttpd has work it does in its next run without a socket
	 * event (a connection's next step): the fd says so, so that a host
	 * whose loop only watches the fd needs no timer for it. */
	if (s->wake_after || s->resumed || (MHD_get_timeout(s->d, &ms) == MHD_YES && ms == 0)) {
		s->wake_after = 0;
		dobj__server_wake(s);
	}
	return rc;
}

void dobj_server_quiesce(dobj_server *s, int code, const char *reason)
{
#ifdef DOBJ_HAVE_WSLAY
	dobj__ws_srv_close_all(s->ws, code, reason ? reason : "");
#else
	(void)code;
	(void)reason;
#endif
	if (s->quiesced || !s->d)
		return;
	/* Stop accepting and free the port; requests in flight go on. */
	s->quiesced = 1;
	MHD_quiesce_daemon(s->d);
	if (s->listen_fd >= 0)
		close(s->listen_fd);
	s->listen_fd = -1;
	dobj__server_wake(s); /* libmicrohttpd ends the closed upgrades in its next run */
}

/* ---------------------------------------------------------- answers */

int dobj_server_response_begin(dobj_server *s, uint64_t id, int status, const void *body,
	size_t len, dobj_ws *ws, dobj_server_response **out)
{
	dobj_server_response *r;
	int rc;

	*out = NULL;
	if (id < 1 || id > s->nslots || !s->slots[id - 1])
		return dobj_error_set(DOBJ_EARG, "no request %llu waits for a response",
			(unsigned long long)id);
	if ((rc = dobj_ws_response_check(status, ws != NULL)) < 0 ||
	    (rc = dobj_msg_response_body_check(status, len)) < 0)
		return rc;
	if (!(r = calloc(1, sizeof(*r))) || (len && !(r->body = malloc(len)))) {
		free(r);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	if (len)
		memcpy(r->body, body, len);
	r->len = len;
	r->s = s;
	r->q = s->slots[id - 1];
	r->status = status;
	r->ws = ws;
	*out = r;
	return DOBJ_OK;
}

int dobj_server_response_header(dobj_server_response *r, const char *name, size_t name_len,
	const char *value, size_t value_len)
{
	char *line, **lines;
	int rc;

	if ((rc = dobj_msg_header_check(name, name_len, value, value_len)) < 0)
		return rc;
	if (name_len == 10 && strncasecmp(name, "connection", 10) == 0)
		return DOBJ_OK; /* framing: the server's (and a NUL-free name below) */
	/* NUL-terminated copies for libmicrohttpd (the check refused NULs). */
	if (!(line = malloc(name_len + value_len + 2)))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	memcpy(line, name, name_len);
	line[name_len] = 0;
	memcpy(line + name_len + 1, value, value_len);
	line[name_len + 1 + value_len] = 0;
	if (dobj_msg_header_is_framing(line)) {
		free(line);
		return DOBJ_OK;
	}
	if (!(lines = realloc(r->lines, (r->nlines + 1) * sizeof(*lines)))) {
		free(line);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	r->lines = lines;
	r->lines[r->nlines++] = line;
	return DOBJ_OK;
}

void dobj_server_response_abort(dobj_server_response *r)
{
	size_t i;

	if (!r)
		return;
	for (i = 0; i < r->nlines; i++)
		free(r->lines[i]);
	free(r->lines);
	free(r->body);
	free(r);
}

/* libmicrohttpd's response for r: a 101 with a WebSocket is the upgrade
 * (server_ws.c), or a 426 when the request was no WebSocket handshake (the
 * object hears a 1006 close).  NULL: out of memory. */
static struct MHD_Response *make_response(dobj_server *s, req *q, dobj_server_response *r)
{
	struct MHD_Response *resp;
	size_t i;

	if (r->ws) {
#ifdef DOBJ_HAVE_WSLAY
		const char *why = "out of memory";
		resp = dobj__ws_srv_upgrade(s->ws, q->conn, r->ws, &q->ws, &why);
		if (!resp) {
			dobj_ws_peer_close(r->ws, 1006, "", 0, 0);
			r->status = 426;
			return MHD_create_response_from_buffer(strlen(why), (void *)why,
				MHD_RESPMEM_MUST_COPY);
		}
#else
		static const char why[] = "dobj was built without wslay (WebSockets)";
		(void)s;
		(void)q;
		r->status = 501;
		return MHD_create_response_from_buffer(sizeof(why) - 1, (void *)why,
			MHD_RESPMEM_PERSISTENT);
#endif
	} else {
		resp = MHD_create_response_from_buffer(r->len, r->len ? r->body : (void *)"",
			r->len ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
		if (!resp)
			return NULL;
		r->body = NULL; /* libmicrohttpd's now */
	}
	for (i = 0; i < r->nlines; i++) {
		const char *n = r->lines[i];
		MHD_add_response_header(resp, n, n + strlen(n) + 1);
	}
	return resp;
}

int dobj_server_response_send(dobj_server_response *r)
{
	dobj_server *s = r->s;
	req *q = r->q;
	struct MHD_Response *resp;
	int status;

	if (q->orphan) { /* the client left */
		/* A WebSocket it would have upgraded to: the object hears that
		 * it closed (it stayed in its list, accepted, for ever). */
		if (r->ws)
			dobj_ws_peer_close(r->ws, 1006, "", 0, 0);
		status = r->status;
		s->slots[q->id - 1] = NULL;
		s->free_ids[s->nfree++] = (size_t)q->id;
		dobj_server_response_abort(r);
		req_free(q);
		return status;
	}
	resp = make_response(s, q, r);
	if (!resp) {
		dobj_server_response_abort(r);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	status = r->status;
	dobj_server_response_abort(r);
	s->slots[q->id - 1] = NULL;
	s->free_ids[s->nfree++] = (size_t)q->id;
	q->id = 0;
	if (q->refused || s->quiesced)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	q->resp = resp;
	q->status = (unsigned)status;
	q->state = REQ_ANSWERED;
#ifdef DOBJ_HAVE_WSLAY
	if (q->ws) {
		/* An upgrade: a WebSocket from now on (closed by quiesce), not
		 * a request in flight until the connection ends. */
		q->counted = 0;
		s->inflight--;
	}
#endif
	MHD_resume_connection(q->conn);
	s->resumed = 1;
	dobj__server_wake(s);
	return status;
}

#else /* !DOBJ_HAVE_MHD */

int dobj_server_listen(const char *ip, int port, const dobj_server_hooks *hooks, void *data,
	dobj_server **out)
{
	(void)ip;
	(void)port;
	(void)hooks;
	(void)data;
	*out = NULL;
	return dobj_error_set(DOBJ_ERROR, "dobj was built without libmicrohttpd "
		"(apt install libmicrohttpd-dev, then rebuild)");
}
int dobj_server_fd(const dobj_server *s) { (void)s; return -1; }
int dobj_server_timeout(dobj_server *s) { (void)s; return -1; }
int dobj_server_process(dobj_server *s) { (void)s; return DOBJ_OK; }
int dobj_server_port(const dobj_server *s) { (void)s; return 0; }
const char *dobj_server_address(const dobj_server *s) { (void)s; return ""; }
size_t dobj_server_inflight(const dobj_server *s) { (void)s; return 0; }
size_t dobj_server_websockets(const dobj_server *s) { (void)s; return 0; }
void dobj_server_quiesce(dobj_server *s, int code, const char *reason)
{
	(void)s;
	(void)code;
	(void)reason;
}
int dobj_server_response_begin(dobj_server *s, uint64_t id, int status, const void *body,
	size_t len, dobj_ws *ws, dobj_server_response **out)
{
	(void)s;
	(void)id;
	(void)status;
	(void)body;
	(void)len;
	(void)ws;
	*out = NULL;
	return dobj_error_set(DOBJ_ERROR, "dobj was built without libmicrohttpd");
}
int dobj_server_response_header(dobj_server_response *r, const char *name, size_t name_len,
	const char *value, size_t value_len)
{
	(void)r;
	(void)name;
	(void)name_len;
	(void)value;
	(void)value_len;
	return DOBJ_ERROR;
}
int dobj_server_response_send(dobj_server_response *r) { (void)r; return DOBJ_ERROR; }
void dobj_server_response_abort(dobj_server_response *r) { (void)r; }
void dobj_server_free(dobj_server *s) { (void)s; }

#endif
