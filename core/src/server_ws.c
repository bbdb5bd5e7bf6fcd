/*
 * server_ws.c — the WebSockets of dobj/server.h: the 101 answer completes
 * the handshake through libmicrohttpd's upgrade support, and the upgraded
 * socket is framed by wslay (a WebSocket protocol library: no frame parsing
 * here).  Each connection is the host side of a client end
 * (dobj/websocket.h): what arrives goes to dobj_ws_receive / _peer_close,
 * what the object sends comes back through the io callbacks into wslay's
 * queue, written at the end of dobj_server_process.  wslay hands each
 * frame's header and payload to its send callback separately: they go into
 * the connection's output buffer, written with one send() per connection
 * and round (two send() calls per message before: an echo spent most of its
 * time in the kernel).  The sockets are in the server's epoll set (EPOLLOUT
 * only while bytes wait that the socket did not take).  What waits for a
 * client is bounded by the core's rule (dobj_ws_io's queued/abort,
 * DOBJ_WS_MAX_BUFFERED): a client that does not read is dropped, its queue
 * freed, instead of growing the server without limit.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

#if defined(DOBJ_HAVE_MHD) && defined(DOBJ_HAVE_WSLAY)
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "server_int.h"

struct wsc {
	ws_srv *srv;
	wsc *prev, *next;
	wsc *dirty_next;               /* in srv->dirty: output to write */
	int dirty;
	dobj_ws *client;               /* a reference */
	wsc **link;                    /* the request's pointer to it, until forgotten */
	struct MHD_UpgradeResponseHandle *urh;
	int fd;                        /* -1 until the upgrade happened */
	uint32_t events;               /* what the epoll set asks for it */
	int rpaused;                   /* not read: see read_paused */
	unsigned frags;                /* frames of the message being received */
	int refused;                   /* too many: closing with 1009, not read */
	int dead;                      /* to be freed (an io callback saw it fail) */
	int aborted;                   /* to be freed: the core gave up on the client */
	wslay_event_context_ptr ctx;
	char *extra;                   /* bytes libmicrohttpd read past the headers */
	size_t extra_len, extra_off;
	unsigned char *out;            /* frames wslay gave, not yet written: out[out_off..out_len) */
	size_t out_len, out_off, out_cap;
	/* A close the object asked for while messages were still queued: wslay
	 * sends control frames before queued messages (and none after a
	 * close), so it is queued once they are out. */
	int close_pending;
	int close_queued;              /* the object closed (pending, or given to wslay) */
	uint16_t close_code;
	uint8_t close_reason[123];
	size_t close_len;
	double close_ms;               /* monotonic ms when the close began (0: not yet) */
	wsc *cw_prev, *cw_next;        /* in srv's close-wait list while close_ms > 0 */
};

/* The output buffer takes frames while it holds less than this; the rest
 * waits in wslay's queue (as it did when wslay wrote to the socket). */
#define OUT_HIGH (64u << 10)
/* What a frame queued in wslay costs besides its payload (its message
 * struct and allocations), counted in what waits for the client so that a
 * flood of tiny frames is bounded too. */
#define FRAME_COST 128u
/* Frames one received message may come in: wslay keeps each with its own
 * allocations (~100 bytes besides the payload), so a message of one-byte
 * fragments under the 32 MiB limit would cost gigabytes.  65536 fragments
 * still let a 32 MiB message come in pieces of 512 bytes. */
#define MAX_FRAGMENTS 65536u

/* How long a connection whose close began waits for the handshake to end
 * (DOBJ_WS_CLOSE_WAIT_MS): a client that never answers, nor reads what
 * waits before the close frame, would hold its socket and buffers for good.
 * It counts from the close's start, not from the frame leaving: a client
 * that does not read never lets the frame leave. */
#define CLOSE_WAIT_MS ((double)DOBJ_WS_CLOSE_WAIT_MS)

struct ws_srv {
	dobj_server *server;
	int epfd;
	wsc *head;
	wsc *dirty;
	size_t n;
	wsc *cw_head, *cw_tail;        /* connections waiting for their close, oldest first */
};

ws_srv *dobj__ws_srv_new(dobj_server *s, int epfd)
{
	ws_srv *w = calloc(1, sizeof(*w));

	if (w) {
		w->server = s;
		w->epfd = epfd;
	}
	return w;
}

static void mark_dirty(wsc *c)
{
	if (c->dirty)
		return;
	c->dirty = 1;
	c->dirty_next = c->srv->dirty;
	c->srv->dirty = c;
	dobj__server_wake(c->srv->server);
}

static size_t io_queued(void *payload);

/* A client is not read while its object has more of its messages to handle
 * than DOBJ_WS_MAX_BACKLOG (the core's rule), or while the bound on what
 * waits for it is reached without the core's say (pongs wslay answers to
 * pings by itself): it waits in its TCP buffers instead of the server. */
static int read_paused(wsc *c)
{
	return dobj_ws_receive_paused(c->client) || io_queued(c) >= DOBJ_WS_MAX_BUFFERED;
}

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
	void *user)
{
	wsc *c = user;
	ssize_t r;

	(void)flags;
	if (c->refused || read_paused(c)) {
		c->rpaused = 1;
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (c->extra_off < c->extra_len) {
		size_t n = c->extra_len - c->extra_off;
		if (n > len)
			n = len;
		memcpy(buf, c->extra + c->extra_off, n);
		c->extra_off += n;
		return (ssize_t)n;
	}
	do
		r = recv(c->fd, buf, len, 0);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (r <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
		return -1;
	}
	return r;
}

/* wslay's bytes go into the output buffer (written by out_write). */
static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
	void *user)
{
	wsc *c = user;

	(void)flags;
	if (c->out_len - c->out_off >= OUT_HIGH) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	if (c->out_off == c->out_len) {
		c->out_off = c->out_len = 0;
	} else if (c->out_off && c->out_len + len > c->out_cap) {
		memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
		c->out_len -= c->out_off;
		c->out_off = 0;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		unsigned char *p;
		while (cap < c->out_len + len)
			cap *= 2;
		if (!(p = realloc(c->out, cap))) {
			wslay_event_set_error(ctx, WSLAY_ERR_NOMEM);
			return -1;
		}
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return (ssize_t)len;
}

/* Write what the output buffer holds: 0 (all, or the socket is full), -1
 * when the connection failed. */
static int out_write(wsc *c)
{
	while (c->out_off < c->out_len) {
		ssize_t r = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
		c->out_off += (size_t)r;
	}
	return 0;
}

/* wslay's queue into the output buffer and the buffer to the socket, until
 * both are empty or the socket is full: 0, or -1 when the connection failed. */
static int out_flush(wsc *c)
{
	for (;;) {
		if (c->close_pending && !wslay_event_get_queued_msg_count(c->ctx)) {
			c->close_pending = 0;
			wslay_event_queue_close(c->ctx, c->close_code, c->close_reason, c->close_len);
		}
		if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0)
			return -1;
		if (out_write(c) < 0)
			return -1;
		if (c->out_off < c->out_len ||
		    (!wslay_event_want_write(c->ctx) && !c->close_pending))
			return 0;
	}
}

static void on_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
	void *user)
{
	wsc *c = user;

	(void)ctx;
	if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
		dobj_ws_receive(c->client, arg->msg, arg->msg_length, arg->opcode == WSLAY_TEXT_FRAME);
	} else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
		/* The payload: a 2-byte code, then the reason.  wslay answers the
		 * close itself (the closing handshake). */
		const char *reason = arg->msg_length > 2 ? (const char *)arg->msg + 2 : "";
		size_t rlen = arg->msg_length > 2 ? arg->msg_length - 2 : 0;
		dobj_ws_peer_close(c->client, arg->status_code ? arg->status_code : 1005, reason, rlen, 1);
	}
	/* What the core answered (an auto-response, a 1009) is written at the
	 * end of this dobj_server_process. */
	mark_dirty(c);
}

/* Fragments are counted per message: past MAX_FRAGMENTS it is refused as
 * too large (1009, as wslay does past 32 MiB), and the client not read. */
static void on_frame_start(wslay_event_context_ptr ctx,
	const struct wslay_event_on_frame_recv_start_arg *arg, void *user)
{
	wsc *c = user;

	if (arg->opcode == WSLAY_TEXT_FRAME || arg->opcode == WSLAY_BINARY_FRAME) {
		c->frags = 0;
		return;
	}
	if (arg->opcode != WSLAY_CONTINUATION_FRAME || ++c->frags <= MAX_FRAGMENTS || c->refused)
		return;
	c->refused = 1;
	wslay_event_queue_close(ctx, DOBJ_WS_CLOSE_TOO_BIG, (const uint8_t *)DOBJ_MSG_WS_TOO_BIG,
		strlen(DOBJ_MSG_WS_TOO_BIG));
	mark_dirty(c);
}

static const struct wslay_event_callbacks callbacks = {
	on_recv, on_send, NULL, on_frame_start, NULL, NULL, on_msg
};

/* The core's output for this connection: queued in wslay, written at the
 * end of the next dobj_server_process. */
static void io_send(void *payload, const void *data, size_t len, int text)
{
	wsc *c = payload;
	struct wslay_event_msg m;

	if (!c->ctx || c->aborted)
		return;
	m.opcode = text ? WSLAY_TEXT_FRAME : WSLAY_BINARY_FRAME;
	m.msg = data;
	m.msg_length = len;
	wslay_event_queue_msg(c->ctx, &m);
	mark_dirty(c);
}

/* The close frame sent later (a pending close, or an abort's): its reason
 * cut to what a close frame carries. */
static void remember_close(wsc *c, int code, const char *reason, size_t len)
{
	c->close_code = (uint16_t)code;
	c->close_len = len < sizeof(c->close_reason) ? len : sizeof(c->close_reason);
	memcpy(c->close_reason, reason, c->close_len);
}

static void io_close(void *payload, int code, const char *reason, size_t len)
{
	wsc *c = payload;

	if (!c->ctx || c->close_pending || c->aborted)
		return;
	if (wslay_event_get_queued_msg_count(c->ctx)) {
		remember_close(c, code == 1005 ? 0 : code, reason, len);
		c->close_pending = 1;
	} else {
		wslay_event_queue_close(c->ctx, code == 1005 ? 0 : (uint16_t)code,
			(const uint8_t *)reason, len);
	}
	c->close_queued = 1; /* out_flush may turn a pending close into a queued one */
	mark_dirty(c);
}

static void io_release(void *payload)
{
	(void)payload; /* the connection is freed by ws_srv, not by the core */
}

/* What waits for the client: the output buffer and wslay's queue (which
 * counts the message being written until its last byte went out). */
static size_t io_queued(void *payload)
{
	wsc *c = payload;

	if (!c->ctx || c->aborted)
		return 0;
	return (c->out_len - c->out_off) + wslay_event_get_queued_msg_length(c->ctx) +
		wslay_event_get_queued_msg_count(c->ctx) * FRAME_COST;
}

/* The object caught up with the client's messages: read it again (the
 * flush puts it back in the epoll set). */
static void io_resume(void *payload)
{
	mark_dirty(payload);
}

/* The core gave up on a client that does not read: the connection is freed
 * at the end of this round (dobj__ws_srv_flush), without waiting for it. */
static void io_abort(void *payload, int code, const char *reason, size_t len)
{
	wsc *c = payload;

	if (!c->ctx || c->aborted)
		return;
	c->aborted = 1;
	c->close_pending = 0;
	remember_close(c, code, reason, len);
	mark_dirty(c);
}

static const dobj_ws_io io = { io_send, io_close, io_release, io_queued, io_abort, io_resume };

/* An aborted connection's close frame, if the socket takes it now.  Only
 * when the output buffer is empty: then no frame is half written (the
 * buffer takes a frame's bytes whole, and wslay's queue is drained into it
 * whenever it empties), and a fresh wslay context drops what was queued. */
static void abort_close(wsc *c)
{
	if (c->out_off < c->out_len)
		return; /* the client sees the connection end (1006) */
	wslay_event_context_free(c->ctx);
	c->ctx = NULL;
	if (wslay_event_context_server_init(&c->ctx, &callbacks, c) != 0) {
		c->ctx = NULL;
		return;
	}
	c->out_off = c->out_len = 0;
	if (wslay_event_queue_close(c->ctx, c->close_code, c->close_reason, c->close_len) == 0 &&
	    wslay_event_send(c->ctx) == 0)
		out_write(c);
}

static void wsc_free(wsc *c, int code, const char *reason)
{
	ws_srv *w = c->srv;
	wsc **p;

	if (c->prev)
		c->prev->next = c->next;
	else
		w->head = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n--;
	if (c->close_ms > 0) {
		if (c->cw_prev)
			c->cw_prev->cw_next = c->cw_next;
		else
			w->cw_head = c->cw_next;
		if (c->cw_next)
			c->cw_next->cw_prev = c->cw_prev;
		else
			w->cw_tail = c->cw_prev;
	}
	if (c->dirty)
		for (p = &w->dirty; *p; p = &(*p)->dirty_next)
			if (*p == c) {
				*p = c->dirty_next;
				break;
			}
	/* The object hears of a connection that ended without a close (or
	 * never began: the client left before the upgrade).  An aborted one:
	 * the core told it already. */
	if (!c->aborted && (!c->ctx || !wslay_event_get_close_received(c->ctx)))
		dobj_ws_peer_close(c->client, code, reason, strlen(reason), 0);
	if (c->ctx)
		wslay_event_context_free(c->ctx);
	if (c->fd >= 0)
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	dobj_ws_detach(c->client);
	dobj_ws_unref(c->client);
	if (c->link) /* before the close below, which may end the request */
		*c->link = NULL;
	if (c->urh) {
		MHD_upgrade_action(c->urh, MHD_UPGRADE_ACTION_CLOSE);
		dobj__server_wake(w->server); /* libmicrohttpd's cleanup: its next run */
	}
	free(c->extra);
	free(c->out);
	free(c);
}

static void on_upgrade(void *cls, struct MHD_Connection *conn, void *req_cls, const char *extra_in,
	size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	wsc *c = cls;
	struct epoll_event ev;
	int one = 1, zero = 0;

	(void)conn;
	(void)req_cls;
	c->urh = urh;
	c->fd = sock;
	fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
	/* Small frames go out at once (libmicrohttpd may have corked the
	 * socket for its response). */
	setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(sock, IPPROTO_TCP, TCP_CORK, &zero, sizeof(zero));
	if (extra_in_size && (c->extra = malloc(extra_in_size))) {
		memcpy(c->extra, extra_in, extra_in_size);
		c->extra_len = extra_in_size;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = c->events = EPOLLIN;
	ev.data.ptr = c;
	if (wslay_event_context_server_init(&c->ctx, &callbacks, c) != 0) {
		c->ctx = NULL;
		wsc_free(c, 1011, "");
		return;
	}
	/* Cloudflare's limit: a larger message closes with 1009. */
	wslay_event_config_set_max_recv_msg_length(c->ctx, DOBJ_WS_MAX_MESSAGE);
	if (epoll_ctl(c->srv->epfd, EPOLL_CTL_ADD, sock, &ev) < 0 ||
	    dobj_ws_attach(c->client, &io, c) < 0) {
		wsc_free(c, 1011, "");
		return;
	}
	if (c->extra_len) /* frames that came with the handshake */
		dobj__ws_srv_ready(c->srv, c, EPOLLIN);
	mark_dirty(c);
}

/* Sec-WebSocket-Accept for `key` (RFC 6455 4.2.2). */
static void accept_key(const char *key, char out[29])
{
	static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
	unsigned char sha[SHA_DIGEST_LENGTH];
	char buf[128];

	snprintf(buf, sizeof(buf), "%.60s%s", key, guid);
	SHA1((const unsigned char *)buf, strlen(buf), sha);
	EVP_EncodeBlock((unsigned char *)out, sha, SHA_DIGEST_LENGTH);
}

struct MHD_Response *dobj__ws_srv_upgrade(ws_srv *w, struct MHD_Connection *conn,
	dobj_ws *client, wsc **link, const char **error)
{
	const char *up = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "upgrade");
	const char *key = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "sec-websocket-key");
	const char *ver = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "sec-websocket-version");
	const char *proto = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "sec-websocket-protocol");
	struct MHD_Response *r;
	char acc[29];
	wsc *c;

	if (!up || strcasecmp(up, "websocket") != 0 || !key || strlen(key) > 60 || !ver ||
	    strcmp(ver, "13") != 0) {
		*error = "a 101 response with a WebSocket answers a WebSocket upgrade request only";
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		*error = "out of memory";
		return NULL;
	}
	c->fd = -1;
	c->srv = w;
	r = MHD_create_response_for_upgrade(on_upgrade, c);
	if (!r) {
		free(c);
		*error = "libmicrohttpd cannot upgrade this connection";
		return NULL;
	}
	accept_key(key, acc);
	MHD_add_response_header(r, "Upgrade", "websocket");
	MHD_add_response_header(r, "Sec-WebSocket-Accept", acc);
	if (proto) { /* the first protocol offered */
		char first[128];
		snprintf(first, sizeof(first), "%.*s", (int)strcspn(proto, ", "), proto);
		MHD_add_response_header(r, "Sec-WebSocket-Protocol", first);
	}
	dobj_ws_ref(client);
	c->client = client;
	c->next = w->head;
	if (w->head)
		w->head->prev = c;
	w->head = c;
	w->n++;
	c->link = link;
	*link = c;
	return r;
}

void dobj__ws_srv_forget(wsc *c)
{
	c->link = NULL;
	if (c->fd < 0)
		wsc_free(c, 1006, ""); /* the 101 never went out: the client left */
}

size_t dobj__ws_srv_count(const ws_srv *w)
{
	return w ? w->n : 0;
}

void dobj__ws_srv_ready(ws_srv *w, wsc *c, uint32_t events)
{
	(void)w;
	if (c->dead || c->aborted || !c->ctx)
		return;
	if (c->rpaused && (events & (EPOLLHUP | EPOLLERR)))
		c->dead = 1; /* reset while not read: nothing more will come */
	else if (!c->rpaused && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
	    (out_flush(c) < 0 || wslay_event_recv(c->ctx) != 0))
		/* What the object sent before this input is framed first (into
		 * the output buffer, up to OUT_HIGH): the close wslay answers a
		 * client's close with goes ahead of the messages still in its
		 * queue, which then never went out. */
		c->dead = 1;
	mark_dirty(c); /* EPOLLOUT: the flush writes */
}

void dobj__ws_srv_flush(ws_srv *w)
{
	while (w->dirty) {
		wsc *c = w->dirty;
		int want;
		w->dirty = c->dirty_next;
		c->dirty = 0;
		if (!c->ctx)
			continue;
		if (c->aborted) {
			abort_close(c);
			wsc_free(c, c->close_code, "");
			continue;
		}
		if (c->refused && wslay_event_want_read(c->ctx))
			wslay_event_shutdown_read(c->ctx); /* the close goes out, then it ends */
		if (!c->dead && out_flush(c) < 0)
			c->dead = 1;
		if (c->dead) {
			wsc_free(c, 1006, "");
			continue;
		}
		if (!c->close_ms && (c->close_queued || c->refused ||
		    wslay_event_get_close_sent(c->ctx) || wslay_event_get_close_received(c->ctx))) {
			/* The handshake's end is waited for up to CLOSE_WAIT_MS; the
			 * list stays in start order (one clock, appended now). */
			c->close_ms = dobj__mono_ms();
			c->cw_prev = w->cw_tail;
			if (w->cw_tail)
				w->cw_tail->cw_next = c;
			else
				w->cw_head = c;
			w->cw_tail = c;
		}
		want = c->out_off < c->out_len || wslay_event_want_write(c->ctx) || c->close_pending;
		if (!wslay_event_want_read(c->ctx) && !want) { /* the close went out */
			int code = wslay_event_get_status_code_sent(c->ctx);
			wsc_free(c, code ? code : 1006, "");
			continue;
		}
		if (c->rpaused && !read_paused(c))
			c->rpaused = 0; /* what waits is read when epoll says so */
		if (((c->rpaused ? 0 : EPOLLIN) | (want ? EPOLLOUT : 0)) != c->events) {
			struct epoll_event ev;
			memset(&ev, 0, sizeof(ev));
			ev.events = c->events = (c->rpaused ? 0 : EPOLLIN) | (want ? EPOLLOUT : 0);
			ev.data.ptr = c;
			epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		}
	}
}

void dobj__ws_srv_expire(ws_srv *w)
{
	double now;
	wsc *c;

	if (!w || !w->cw_head)
		return;
	now = dobj__mono_ms();
	while ((c = w->cw_head) && now - c->close_ms >= CLOSE_WAIT_MS) {
		/* No close came (RFC 6455 7.1.5: 1006), whatever code went out;
		 * a refused one keeps its 1009, as a message too big does. */
		int code = c->refused && c->ctx ? wslay_event_get_status_code_sent(c->ctx) : 0;
		wsc_free(c, code ? code : 1006, "");
	}
}

int dobj__ws_srv_timeout(const ws_srv *w)
{
	double left;

	if (!w || !w->cw_head)
		return -1;
	left = w->cw_head->close_ms + CLOSE_WAIT_MS - dobj__mono_ms();
	return left <= 0 ? 0 : (int)left + 1;
}

void dobj__ws_srv_close_all(ws_srv *w, int code, const char *reason)
{
	if (!w)
		return;
	while (w->head) {
		wsc *c = w->head;
		c->close_pending = 0; /* the server's close instead, now */
		if (c->aborted) {
			wsc_free(c, code, reason);
			continue;
		}
		if (c->ctx && !wslay_event_get_close_sent(c->ctx))
			wslay_event_queue_close(c->ctx, (uint16_t)code, (const uint8_t *)reason, strlen(reason));
		if (c->ctx && !c->dead)
			out_flush(c); /* what the socket takes now, the close last */
		wsc_free(c, code, reason);
	}
}

void dobj__ws_srv_free(ws_srv *w)
{
	dobj__ws_srv_close_all(w, 1001, "the server is stopping");
	free(w);
}

#endif
