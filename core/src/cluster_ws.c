/*
 * WebSockets between the nodes of a cluster (docs/cluster.md, "WebSockets
 * between nodes").
 *
 * A client's WebSocket stays on the node whose host accepted its HTTP
 * connection (the entry node); the object's node keeps the pair's client
 * end as usual and serves it through a link over the node connection the
 * upgrade came in on:
 * - the object's node answers the routed fetch with its 101 response and a
 *   link number, then attaches the client end with an io that sends what
 *   the object sends (and its close) as WS_OUT frames on that connection;
 *   every rule stays where the socket is accepted (the room, tags,
 *   attachments, auto-responses, the size limit, the output gate, events
 *   in order under the input gate, hibernation);
 * - the entry node gives its host a relay client end (websocket.c): the
 *   host serves it like any other; what the client sends comes back as
 *   WS_IN frames, which the object's node hands to its client end
 *   (dobj_ws_receive / _peer_close / _peer_error) exactly as a local host
 *   would.
 * An object with registered sockets stays owned by its node while it
 * hibernates (cluster_commit.c), so the next event constructs it there.
 * When the connection between the two nodes fails, the object hears a close
 * (1006) and the client is closed with 1001: as on Cloudflare, a socket does
 * not survive the loss of its object's machine.
 *
 * Frames (after the u32 length and the u8 type, cluster_route.c):
 *   WS_OUT (object's node -> entry)  u64 link, u8 op, then for a message the
 *          data, for a close u16 code and the reason, for an ack u64 bytes
 *   WS_IN  (entry -> object's node)  u64 link, u8 op, then for a message the
 *          data, for a close u16 code, u8 was_clean and the reason, for an
 *          error its message
 *
 * Backpressure crosses nodes by credit: the entry node counts each message
 * it relays (its length + DOBJ_WS_EVENT_COST) as the client's backlog, and
 * its host stops reading the client past DOBJ_WS_MAX_BACKLOG, the local
 * rule (websocket.c); the object's node acknowledges what its object
 * handled (or refused, or answered itself) in ACKs of at least ACK_EVERY
 * bytes, which bring the backlog down and let the host read again.  So the
 * messages waiting on the object's node, and the frames between the nodes,
 * stay under DOBJ_WS_MAX_BACKLOG (plus one message) per socket however
 * fast the client sends; the rest waits in the client's TCP buffers.
 * Links are named by (connection, link number): numbers are the object's
 * node's, connection ids never repeat.
 */
#define _GNU_SOURCE
#include "cluster_route.h"
#include "v8_format.h"

enum { OP_TEXT = 0, OP_BINARY = 1, OP_CLOSE = 2, OP_ERROR = 3, OP_ACK = 4 };

/* An ACK per quarter of the backlog: a paused client (past the whole
 * backlog) is read again after two, and at most a quarter stays unacked. */
#define ACK_EVERY (DOBJ_WS_MAX_BACKLOG / 4)

typedef struct wslink {
	struct wslink *next;
	struct dobj__route *r;
	uint64_t cid, link;
	int owner;             /* 1: on the object's node; 0: on the entry node */
	int started;           /* owner: attached */
	dobj_ws *client;       /* a reference */
	uint64_t got, acked;   /* owner: message bytes received, acknowledged (credit) */
} wslink;

struct dobj__route_ws {
	wslink **tab;
	size_t cap, n;
	uint64_t next_link;
};

static size_t slot(const struct dobj__route_ws *w, uint64_t cid, uint64_t link, int owner)
{
	uint64_t h = (cid * 0x9e3779b97f4a7c15ULL) ^ link ^ ((uint64_t)owner << 63);

	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return (size_t)h & (w->cap - 1);
}

static wslink *link_find(struct dobj__route *r, uint64_t cid, uint64_t link, int owner)
{
	struct dobj__route_ws *w = r->ws;
	wslink *l;

	if (!w || !w->cap)
		return NULL;
	for (l = w->tab[slot(w, cid, link, owner)]; l; l = l->next)
		if (l->cid == cid && l->link == link && l->owner == owner)
			return l;
	return NULL;
}

static int link_add(struct dobj__route *r, wslink *l)
{
	struct dobj__route_ws *w = r->ws;
	size_t i;

	if (!w && !(w = r->ws = calloc(1, sizeof(*w))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if (w->n + 1 > w->cap / 2) {
		size_t cap = w->cap ? 2 * w->cap : 16, old = w->cap;
		wslink **tab = calloc(cap, sizeof(*tab)), **prev = w->tab;
		if (!tab)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		w->tab = tab;
		w->cap = cap;
		for (i = 0; i < old; i++)
			while (prev[i]) {
				wslink *q = prev[i];
				size_t k = slot(w, q->cid, q->link, q->owner);
				prev[i] = q->next;
				q->next = tab[k];
				tab[k] = q;
			}
		free(prev);
	}
	i = slot(w, l->cid, l->link, l->owner);
	l->next = w->tab[i];
	w->tab[i] = l;
	w->n++;
	dobj__net_conn_links(r, l->cid, 1); /* never closed as idle meanwhile */
	return DOBJ_OK;
}

/* Take l out of the table and let go of its socket. */
static void link_drop(struct dobj__route *r, wslink *l)
{
	struct dobj__route_ws *w = r->ws;
	wslink **pp;

	for (pp = &w->tab[slot(w, l->cid, l->link, l->owner)]; *pp; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			w->n--;
			dobj__net_conn_links(r, l->cid, -1);
			break;
		}
	if (l->owner) {
		dobj__ws_on_drain(l->client, NULL, NULL);
		dobj_ws_detach(l->client);
	} else
		dobj__ws_relay_cut(l->client);
	dobj_ws_unref(l->client);
	free(l);
}

static void send_frame(struct dobj__route *r, uint64_t cid, int type, uint64_t link, int op,
	const void *head, size_t hlen, const void *data, size_t len)
{
	buf f = { 0 };

	if (1 + 8 + 1 + hlen + len > FRAME_MAX)
		return; /* over the frame limit: a message the size rule refuses anyway */
	if (put_be(&f, 1 + 8 + 1 + hlen + len, 4) == 0 && put_be(&f, (uint64_t)type, 1) == 0 &&
	    put_be(&f, link, 8) == 0 && put_be(&f, (uint64_t)op, 1) == 0 &&
	    buf_put(&f, head, hlen) == 0 && buf_put(&f, data, len) == 0)
		dobj__net_send_conn(r, cid, &f);
	buf_free(&f);
}

/* ------------------------------------------------- the object's node */

static void owner_send(void *payload, const void *data, size_t len, int text)
{
	wslink *l = payload;

	send_frame(l->r, l->cid, F_WS_OUT, l->link, text ? OP_TEXT : OP_BINARY, NULL, 0, data, len);
}

static void owner_close(void *payload, int code, const char *reason, size_t len)
{
	wslink *l = payload;
	unsigned char head[2] = { (unsigned char)(code >> 8), (unsigned char)code };

	send_frame(l->r, l->cid, F_WS_OUT, l->link, OP_CLOSE, head, 2, reason, len);
}

static const dobj_ws_io owner_io = { owner_send, owner_close, NULL, NULL, NULL, NULL };

/* Acknowledge what left the object's backlog since the last ACK (handled,
 * or never queued: an auto-response, a refused message). */
static void owner_ack(void *data)
{
	wslink *l = data;
	uint64_t done = l->got - dobj__ws_backlog(l->client) - l->acked;
	unsigned char head[8];
	int i;

	if (done < ACK_EVERY)
		return;
	for (i = 0; i < 8; i++)
		head[i] = (unsigned char)(done >> (56 - 8 * i));
	l->acked += done;
	send_frame(l->r, l->cid, F_WS_OUT, l->link, OP_ACK, head, 8, NULL, 0);
}

int dobj__route_ws_offer(struct dobj__route *r, uint64_t cid, dobj_ws *client, uint64_t *link)
{
	wslink *l;
	size_t n;
	int rc;

	*link = 0;
	if (dobj_ws_end(client) != DOBJ_WS_CLIENT || dobj_ws_tag_count(dobj_ws_peer(client), &n) < 0)
		return dobj_error_set(DOBJ_ESTATE, "the server end of this WebSocketPair was not "
			"accepted: call acceptWebSocket() on it before returning the client end in a "
			"101 response");
	if (!r->ws && !(r->ws = calloc(1, sizeof(*r->ws))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if (!(l = calloc(1, sizeof(*l))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	l->r = r;
	l->cid = cid;
	l->owner = 1;
	l->link = ++r->ws->next_link;
	l->client = client;
	dobj_ws_ref(client);
	if ((rc = link_add(r, l)) < 0) {
		dobj_ws_unref(client);
		free(l);
		return rc;
	}
	*link = l->link;
	return DOBJ_OK;
}

void dobj__route_ws_start(struct dobj__route *r, uint64_t cid, uint64_t link, int sent)
{
	wslink *l = link_find(r, cid, link, 1);

	if (!l)
		return;
	if (sent && dobj_ws_attach(l->client, &owner_io, l) == DOBJ_OK) {
		l->started = 1;
		dobj__ws_on_drain(l->client, owner_ack, l);
		return;
	}
	/* The client never got it: the object hears of a lost connection. */
	dobj_ws_peer_close(l->client, 1006, "", 0, 0);
	link_drop(r, l);
}

/* ---------------------------------------------------- the entry node */

static void relay_message(void *data, const void *p, size_t len, int text)
{
	wslink *l = data;

	send_frame(l->r, l->cid, F_WS_IN, l->link, text ? OP_TEXT : OP_BINARY, NULL, 0, p, len);
}

static void relay_close(void *data, int code, const char *reason, size_t len, int was_clean)
{
	wslink *l = data;
	unsigned char head[3] = { (unsigned char)(code >> 8), (unsigned char)code,
		(unsigned char)(was_clean != 0) };

	send_frame(l->r, l->cid, F_WS_IN, l->link, OP_CLOSE, head, 3, reason, len);
	link_drop(l->r, l); /* the host holds its own reference to the client end */
}

static void relay_error(void *data, const char *msg, size_t len)
{
	wslink *l = data;

	send_frame(l->r, l->cid, F_WS_IN, l->link, OP_ERROR, NULL, 0, msg, len);
	link_drop(l->r, l);
}

static const dobj__ws_relay_ops relay_ops = { relay_message, relay_close, relay_error };

int dobj__route_ws_relay(struct dobj__route *r, uint64_t cid, uint64_t link, dobj_msg *m)
{
	wslink *l;
	int rc;

	if (link_find(r, cid, link, 0))
		return dobj_error_set(DOBJ_EINVALID, "cluster: a WebSocket link sent twice");
	if (!(l = calloc(1, sizeof(*l))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	l->r = r;
	l->cid = cid;
	l->link = link;
	if ((rc = dobj__ws_relay_new(r->rt, &relay_ops, l, &l->client)) < 0) {
		free(l);
		return rc;
	}
	if ((rc = link_add(r, l)) < 0) {
		dobj__ws_relay_cut(l->client);
		dobj_ws_unref(l->client);
		free(l);
		return rc;
	}
	dobj_msg_set_web_socket(m, l->client);
	return DOBJ_OK;
}

/* The caller went away before the 101 came: the object hears a close. */
void dobj__route_ws_refuse(struct dobj__route *r, uint64_t cid, uint64_t link)
{
	unsigned char head[3] = { 1006 >> 8, 1006 & 0xff, 0 };

	send_frame(r, cid, F_WS_IN, link, OP_CLOSE, head, 3, NULL, 0);
}

/* ------------------------------------------------------ frames, failures */

/* A close code a peer may relay: one a close frame carries (1000-4999 but
 * the reserved 1004 and 1015), or 1005 (none) and 1006 (abnormal), which
 * the relay itself uses. */
static int code_ok(int code)
{
	return code >= 1000 && code < 5000 && code != 1004 && code != 1015;
}

void dobj__route_ws_frame(struct dobj__route *r, uint64_t cid, int type, const unsigned char *p,
	size_t n)
{
	rd d = { p, n, 0, 0 };
	uint64_t link = rd_be(&d, 8);
	int op = (int)rd_be(&d, 1), code = 0, clean = 0;
	wslink *l;

	if (d.bad || !(l = link_find(r, cid, link, type == F_WS_IN)))
		return; /* malformed, or a socket already gone */
	if (op == OP_CLOSE) {
		code = (int)rd_be(&d, 2);
		if (type == F_WS_IN)
			clean = (int)rd_be(&d, 1);
		if (d.bad)
			return;
	} else if (op == OP_ACK && type == F_WS_OUT) {
		uint64_t bytes = rd_be(&d, 8);
		if (!d.bad)
			dobj__ws_relay_ack(l->client, bytes);
		return;
	}
	p += d.off;
	n -= d.off;
	/* A peer's close carries a reason a close frame may: at most 123
	 * bytes of UTF-8, else none (what the object and the client hear is
	 * text in every language). */
	if (op == OP_CLOSE && (n > DOBJ_WS_MAX_CLOSE_REASON || !dobj__utf8_valid(p, n)))
		n = 0;
	if (type == F_WS_OUT) {
		if (op == OP_TEXT || op == OP_BINARY)
			dobj__ws_relay_output(l->client, 0, op == OP_TEXT, p, n);
		else if (op == OP_CLOSE)
			dobj__ws_relay_output(l->client, 1, code_ok(code) ? code : 1011, (const char *)p, n);
		return;
	}
	if (op == OP_TEXT || op == OP_BINARY) {
		/* Counted as the entry node counted it, whatever becomes of it. */
		l->got += n + DOBJ_WS_EVENT_COST;
		if (l->started)
			dobj_ws_receive(l->client, p, n, op == OP_TEXT);
		owner_ack(l);
		return;
	}
	if (!l->started || (op != OP_CLOSE && op != OP_ERROR))
		return;
	if (op == OP_CLOSE) {
		dobj_ws_peer_close(l->client, code_ok(code) ? code : 1006, (const char *)p,
			code_ok(code) ? n : 0, clean);
	} else {
		/* The error's text, cut to 1024 bytes on a character's start;
		 * bytes that are not UTF-8 say nothing. */
		if (n > 1024)
			for (n = 1024; n && (p[n] & 0xc0) == 0x80; n--)
				;
		if (!dobj__utf8_valid(p, n)) {
			p = (const unsigned char *)"the WebSocket failed";
			n = strlen("the WebSocket failed");
		}
		dobj_ws_peer_error(l->client, (const char *)p, n);
	}
	link_drop(r, l);
}

#define GONE "the Durable Object's node went away"

/* Connection cid failed: its sockets are lost. */
void dobj__route_ws_conn_failed(struct dobj__route *r, uint64_t cid)
{
	struct dobj__route_ws *w = r->ws;
	size_t i;

	if (!w)
		return;
	for (i = 0; i < w->cap; i++) {
		wslink *l = w->tab[i], *next;
		for (; l; l = next) {
			next = l->next;
			if (l->cid != cid)
				continue;
			if (l->owner && l->started)
				dobj_ws_peer_close(l->client, 1006, "", 0, 0);
			else if (!l->owner)
				dobj__ws_relay_output(l->client, 1, 1001, GONE, strlen(GONE));
			link_drop(r, l);
		}
	}
}

void dobj__route_ws_stop(struct dobj__route *r)
{
	struct dobj__route_ws *w = r->ws;
	size_t i;

	if (!w)
		return;
	for (i = 0; i < w->cap; i++)
		while (w->tab[i]) {
			wslink *l = w->tab[i];
			if (!l->owner)
				dobj__ws_relay_output(l->client, 1, 1001, GONE, strlen(GONE));
			link_drop(r, l);
		}
	free(w->tab);
	free(w);
	r->ws = NULL;
}
