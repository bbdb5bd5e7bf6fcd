/*
 * WebSockets with the hibernation API (dobj/websocket.h).
 *
 * A pair is one `wsconn` with two ends.  Accepting the server end puts the
 * connection in the object's "room": a list kept per ID in the namespace
 * (ns->rooms), not in the instance, so that idle eviction (hibernation)
 * leaves it alone and the next event's fresh instance finds it.  Events
 * become CALL tasks made with dobj__call_new, so they queue in arrival
 * order behind the object's input gate like fetches do; the instance is
 * constructed on demand by the scheduler.  The core never touches the
 * network: output goes through the host's dobj_ws_io, input comes from the
 * host's dobj_ws_receive / _peer_close / _peer_error.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "v8_format.h"

typedef struct wsconn wsconn;

struct dobj_ws {
	wsconn *c;
	int end;
};

/* Output the object produced before the host attached the client end. */
typedef struct outmsg {
	struct outmsg *next;
	int close;       /* 0: a message, 1: a close frame */
	int text_or_code;
	size_t len;
	unsigned char data[];
} outmsg;

struct wsconn {
	int refs;
	dobj_rt *rt;
	uint64_t serial;
	dobj_ws ends[2];
	unsigned accepted : 1, attached : 1, detached : 1, closed_out : 1, closed_in : 1,
		failed : 1, registered : 1, auto_done : 1, slow : 1, in_paused : 1;
	dobj_ns *ns;          /* set by accept */
	dobj_id id;
	char **tags;
	size_t *tag_lens, ntags;
	unsigned char *att;
	size_t att_len;
	double auto_ms;
	const dobj_ws_io *io;
	void *payload;
	void *binding;        /* dobj_ws_set_binding_data's; never read here */
	unsigned relay : 1;   /* cluster: the server end lives on another node */
	unsigned lost : 1;    /* cluster: the node lost the object (dobj__ws_drop) */
	const dobj__ws_relay_ops *relay_ops; /* NULL once cut */
	void *relay_data;
	void (*drain)(void *data); /* cluster: the object's node acks what it handled */
	void *drain_data;
	outmsg *out_head, *out_tail;
	size_t out_bytes;     /* buffered before the host attached */
	size_t in_bytes;      /* received messages waiting for the object (DOBJ_WS_MAX_BACKLOG) */
};

typedef struct room {
	dobj_id id;           /* the map's key points here */
	char *name;
	size_t name_len;
	wsconn **v;
	size_t n, cap;
	char *areq, *aresp;   /* auto-response pair (NULL: none) */
	size_t areq_len, aresp_len;
	long long held_epoch, held_node; /* cluster: the claim of the hibernating object (0: none) */
	struct dobj__cinc *held_inc;     /* and its incarnation's token (a reference; may be NULL) */
} room;

/* The event a WS call carries; pub first so a task's request is both. */
typedef struct wsev {
	dobj_ws_event pub;
	wsconn *c;
	size_t cost;          /* counted in c->in_bytes until freed */
	unsigned char *data;
	char *reason;
} wsev;

/* Output of a step, held until its writes are committed (workerd's output
 * gate: a client never sees a message about a write that is then lost). */
struct dobj__ws_held {
	struct dobj__ws_held *next;
	wsconn *c;            /* a reference */
	dobj_obj *obj;        /* the sender (a reference), or NULL */
	int close, text_or_code;
	size_t len;
	unsigned char data[];
};

static uint64_t next_serial;

/* A pair belongs to no runtime until its server end is accepted. */
#define CHECK_WS_THREAD(c) \
	do { if ((c)->rt && dobj__wrong_thread((c)->rt)) \
		return dobj_error_set(DOBJ_ETHREAD, DOBJ_MSG_THREAD); } while (0)

/* ------------------------------------------------------------ lifetime */

static void conn_release_io(wsconn *c)
{
	const dobj_ws_io *io = c->io;
	void *payload = c->payload;
	outmsg *m;

	c->io = NULL;
	c->payload = NULL;
	while ((m = c->out_head)) {
		c->out_head = m->next;
		free(m);
	}
	c->out_tail = NULL;
	c->out_bytes = 0;
	if (io && io->release)
		io->release(payload);
}

static void conn_unref(wsconn *c)
{
	size_t i;
	dobj_rt *rt;

	if (!c || --c->refs > 0)
		return;
	rt = c->rt;
	conn_release_io(c);
	for (i = 0; i < c->ntags; i++)
		free(c->tags[i]);
	free(c->tags);
	free(c->tag_lens);
	free(c->att);
	free(c);
	if (rt)
		dobj__rt_unref(rt);
}

int dobj_ws_pair_new(dobj_ws **client, dobj_ws **server)
{
	wsconn *c;

	*client = *server = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	c->refs = 2;
	c->serial = __atomic_add_fetch(&next_serial, 1, __ATOMIC_RELAXED);
	c->ends[DOBJ_WS_CLIENT].c = c;
	c->ends[DOBJ_WS_CLIENT].end = DOBJ_WS_CLIENT;
	c->ends[DOBJ_WS_SERVER].c = c;
	c->ends[DOBJ_WS_SERVER].end = DOBJ_WS_SERVER;
	*client = &c->ends[DOBJ_WS_CLIENT];
	*server = &c->ends[DOBJ_WS_SERVER];
	return DOBJ_OK;
}

void dobj_ws_ref(dobj_ws *ws)
{
	if (ws)
		ws->c->refs++;
}

void dobj_ws_unref(dobj_ws *ws)
{
	if (ws)
		conn_unref(ws->c);
}

int dobj_ws_end(const dobj_ws *ws) { return ws->end; }
dobj_ws *dobj_ws_peer(dobj_ws *ws) { return &ws->c->ends[!ws->end]; }
uint64_t dobj_ws_serial(const dobj_ws *ws) { return ws->c->serial; }

int dobj_ws_ready_state(const dobj_ws *ws)
{
	const wsconn *c = ws->c;

	if (c->failed || (c->closed_in && c->closed_out))
		return DOBJ_WS_CLOSED;
	if (c->closed_in || c->closed_out)
		return DOBJ_WS_CLOSING;
	return DOBJ_WS_OPEN;
}

/* --------------------------------------------------------------- rooms */

static room *room_get(dobj_ns *ns, const dobj_id *id)
{
	return dobj__idmap_get(&ns->rooms, id);
}

static void room_free(dobj_ns *ns, room *r)
{
	dobj__cluster_inc_drop(ns->rt, r->held_inc);
	free(r->v);
	free(r->name);
	free(r->areq);
	free(r->aresp);
	free(r);
}

static room *room_make(dobj_obj *obj)
{
	dobj_ns *ns = obj->ns;
	room *r = room_get(ns, &obj->id);

	if (r)
		return r;
	r = calloc(1, sizeof(*r));
	if (!r) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	r->id = obj->id;
	if (obj->name) {
		if (!(r->name = dobj__strndup(obj->name, obj->name_len))) {
			free(r);
			return NULL;
		}
		r->name_len = obj->name_len;
	}
	if (dobj__idmap_put(&ns->rooms, &r->id, r) < 0) {
		room_free(ns, r);
		return NULL;
	}
	return r;
}

/* An empty room without an auto-response goes. */
static void room_maybe_drop(dobj_ns *ns, room *r)
{
	if (r->n == 0 && !r->areq) {
		dobj__idmap_del(&ns->rooms, &r->id);
		room_free(ns, r);
	}
}

/* The socket leaves its object's list (after its close or error event). */
static void conn_unregister(wsconn *c)
{
	room *r;
	size_t i;

	if (!c->registered)
		return;
	c->registered = 0;
	r = room_get(c->ns, &c->id);
	if (r) {
		for (i = 0; i < r->n; i++)
			if (r->v[i] == c) {
				memmove(&r->v[i], &r->v[i + 1], (r->n - i - 1) * sizeof(*r->v));
				r->n--;
				break;
			}
		if (r->n == 0 && r->held_epoch) {
			/* Its last socket left while it hibernated, whether or not
			 * the close could wake it: the claim goes back. */
			long long epoch = r->held_epoch, node = r->held_node;
			struct dobj__cinc *inc = r->held_inc;
			r->held_epoch = r->held_node = 0;
			r->held_inc = NULL;
			dobj__cluster_give_back(c->ns, &c->id, epoch, node, inc);
		}
		room_maybe_drop(c->ns, r);
	}
	conn_unref(c); /* the room's reference */
}

void dobj__ws_ns_close(dobj_ns *ns)
{
	room *r;

	/* The runtime is closing: output still held goes nowhere. */
	while (ns->rt->ws_held) {
		struct dobj__ws_held *h = ns->rt->ws_held;
		ns->rt->ws_held = h->next;
		dobj__obj_unref(h->obj);
		conn_unref(h->c);
		free(h);
	}
	ns->rt->ws_held_tail = NULL;

	while ((r = dobj__idmap_any(&ns->rooms))) {
		size_t i;
		dobj__idmap_del(&ns->rooms, &r->id);
		for (i = 0; i < r->n; i++) {
			wsconn *c = r->v[i];
			c->registered = 0;
			c->detached = 1;
			conn_release_io(c);
			conn_unref(c);
		}
		room_free(ns, r);
	}
	dobj__idmap_free(&ns->rooms);
}

size_t dobj_ns_web_socket_count(const dobj_ns *ns)
{
	size_t i, n = 0;

	for (i = 0; i < ns->rooms.cap; i++)
		if (ns->rooms.slots[i].key)
			n += ((room *)ns->rooms.slots[i].value)->n;
	return n;
}

/* -------------------------------------------------- the object's side */

int dobj_ws_response_check(long long status, int has_web_socket)
{
	if (has_web_socket)
		return status == 101 ? DOBJ_OK : dobj_error_set(DOBJ_EARG, DOBJ_MSG_WS_STATUS);
	return dobj_msg_status_check(status);
}

static int utf8_units(const char *s, size_t len)
{
	/* Characters as JavaScript counts them (Cloudflare's limit is on the
	 * string's length): UTF-16 units, two for a 4-byte sequence. */
	size_t i;
	int n = 0;

	for (i = 0; i < len; i++) {
		unsigned char b = (unsigned char)s[i];
		if ((b & 0xc0) != 0x80)
			n += b >= 0xf0 ? 2 : 1;
	}
	return n;
}

/* A text as a JavaScript string makes it on the wire: `data` may carry
 * surrogates in their 3-byte WTF-8 form (Python's str, Lua's utf8.char);
 * a high and low pair becomes its character, a lone one U+FFFD, as the
 * WebSocket standard (USVString) says and as workerd does for a close
 * reason.  (workerd puts a sent string's lone surrogate on the wire as its
 * WTF-8 bytes, measured with 1.20261117.1: an RFC 6455 client fails the
 * connection with 1007 on those.)  *out: NULL when data is UTF-8 already,
 * else a copy to free.  DOBJ_EARG for other ill-formed bytes. */
static int usv_text(const void *data, size_t len, unsigned char **out, size_t *out_len)
{
	const unsigned char *s = data;
	unsigned char *o;
	size_t i = 0, n, bad, w = 0;
	uint32_t cp, lo;

	*out = NULL;
	if (dobj__utf8_valid(data, len))
		return DOBJ_OK;
	if (!(o = malloc(len ? len : 1)))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	while (i < len) {
		if (!(n = dobj__utf8_get(s + i, len - i, 1, &cp, &bad))) {
			free(o);
			return DOBJ_EARG;
		}
		i += n;
		if (cp >= 0xD800 && cp <= 0xDFFF) {
			if (cp <= 0xDBFF && i + 3 <= len && dobj__utf8_get(s + i, len - i, 1, &lo, &bad) == 3 &&
			    lo >= 0xDC00 && lo <= 0xDFFF) {
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
				i += 3;
			} else {
				cp = 0xFFFD;
			}
		}
		w += dobj__utf8_put(o + w, cp); /* never longer than its input */
	}
	*out = o;
	*out_len = w;
	return DOBJ_OK;
}

int dobj_ws_accept(dobj_obj *obj, dobj_ws *ws, const char *const *tags, const size_t *tag_lens,
	const size_t *tag_units, size_t ntags)
{
	wsconn *c = ws->c;
	room *r;
	size_t i, j, n = 0;
	int rc;

	if ((rc = dobj_obj_check(obj)) < 0)
		return rc;
	if (ws->end != DOBJ_WS_SERVER)
		return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_WS_CLIENT_END);
	if (c->accepted)
		return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_WS_ACCEPTED);
	if (c->attached || c->detached || c->closed_in || c->failed)
		return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_WS_PAIR_USED);
	if (ntags > DOBJ_WS_MAX_TAGS)
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_WS_TOO_MANY_TAGS);
	for (i = 0; i < ntags; i++) {
		size_t units = tag_units ? tag_units[i] : (size_t)utf8_units(tags[i], tag_lens[i]);
		if (units > DOBJ_WS_MAX_TAG_LEN)
			return dobj_error_set(DOBJ_EARG,
				"\"%.*s\" is longer than the max tag length (%d characters).",
				(int)tag_lens[i], tags[i], DOBJ_WS_MAX_TAG_LEN);
	}
	r = room_get(obj->ns, &obj->id);
	if (r && r->n >= DOBJ_WS_MAX_PER_OBJECT)
		return dobj_error_set(DOBJ_ESTATE, "a Durable Object cannot have more than %d "
			"hibernatable WebSockets at a time", DOBJ_WS_MAX_PER_OBJECT);
	if (ntags) {
		c->tags = calloc(ntags, sizeof(*c->tags));
		c->tag_lens = calloc(ntags, sizeof(*c->tag_lens));
		if (!c->tags || !c->tag_lens)
			goto nomem;
		for (i = 0; i < ntags; i++) {
			for (j = 0; j < n; j++)
				if (c->tag_lens[j] == tag_lens[i] && !memcmp(c->tags[j], tags[i], tag_lens[i]))
					break;
			if (j < n)
				continue; /* a duplicate is kept once */
			if (!(c->tags[n] = dobj__strndup(tags[i], tag_lens[i])))
				goto nomem;
			c->tag_lens[n++] = tag_lens[i];
			c->ntags = n;
		}
	}
	if (!(r = room_make(obj)))
		goto nomem;
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 8;
		wsconn **v = realloc(r->v, cap * sizeof(*v));
		if (!v) {
			room_maybe_drop(obj->ns, r);
			goto nomem;
		}
		r->v = v;
		r->cap = cap;
	}
	r->v[r->n++] = c;
	c->refs++;
	c->accepted = c->registered = 1;
	c->rt = obj->ns->rt;
	c->rt->refs++;
	c->ns = obj->ns;
	c->id = obj->id;
	return DOBJ_OK;
nomem:
	for (i = 0; i < c->ntags; i++)
		free(c->tags[i]);
	free(c->tags);
	free(c->tag_lens);
	c->tags = NULL;
	c->tag_lens = NULL;
	c->ntags = 0;
	return dobj_error_set(DOBJ_ENOMEM, "out of memory");
}

static int output_now(wsconn *c, int close, int text_or_code, const void *data, size_t len);

static int output(wsconn *c, int close, int text_or_code, const void *data, size_t len)
{
	dobj_rt *rt = c->rt;
	struct dobj__ws_held *h;

	if (!c->attached) {
		/* Nobody serves the client end (yet): bounded, not a leak. */
		if (len > DOBJ_WS_MAX_BUFFERED - c->out_bytes)
			return dobj_error_set(DOBJ_ESTATE, "this WebSocket's client end is not served yet "
				"and %u bytes are waiting for it", (unsigned)c->out_bytes);
		c->out_bytes += len;
	}
	if (!rt || !rt->current)
		return output_now(c, close, text_or_code, data, len);
	h = malloc(sizeof(*h) + len + 1);
	if (!h)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	h->next = NULL;
	h->c = c;
	c->refs++;
	h->obj = rt->current->obj;
	dobj_obj_ref(h->obj);
	h->close = close;
	h->text_or_code = text_or_code;
	h->len = len;
	if (len)
		memcpy(h->data, data, len);
	if (rt->ws_held_tail)
		rt->ws_held_tail->next = h;
	else
		rt->ws_held = h;
	rt->ws_held_tail = h;
	return DOBJ_OK;
}

void dobj__ws_flush(dobj_rt *rt)
{
	struct dobj__ws_held *h;

	while ((h = rt->ws_held)) {
		rt->ws_held = h->next;
		if (!rt->ws_held)
			rt->ws_held_tail = NULL;
		if (h->obj && rt->cluster && dobj__cluster_defer_ws(h->obj, h))
			continue; /* sent once PostgreSQL confirmed the object's writes */
		dobj__ws_held_release(h, !(h->obj && h->obj->dead && h->obj->commit_failed));
	}
}

void dobj__ws_held_release(struct dobj__ws_held *h, int ok)
{
	if (ok && !h->c->detached && !h->c->lost)
		output_now(h->c, h->close, h->text_or_code, h->data, h->len);
	dobj__obj_unref(h->obj);
	conn_unref(h->c);
	free(h);
}

/* The client does not read what the host holds for it (dobj_ws_io): the
 * connection ends with DOBJ_WS_CLOSE_SLOW, its queue freed, and the object
 * hears a close, as for a message over the size limit.  Later output is
 * dropped (closed_in): a broadcast to a room with one slow reader goes on. */
static void too_slow(wsconn *c)
{
	static const char why[] = DOBJ_MSG_WS_SLOW;

	c->slow = 1;
	if (c->io->abort)
		c->io->abort(c->payload, DOBJ_WS_CLOSE_SLOW, why, sizeof(why) - 1);
	else
		c->io->close(c->payload, DOBJ_WS_CLOSE_SLOW, why, sizeof(why) - 1);
	dobj_ws_peer_close(&c->ends[DOBJ_WS_CLIENT], DOBJ_WS_CLOSE_SLOW, why, sizeof(why) - 1, 0);
}

/* Hand one frame to the host, or keep it until the host attaches. */
static int output_now(wsconn *c, int close, int text_or_code, const void *data, size_t len)
{
	outmsg *m;

	if (c->slow)
		return DOBJ_OK;
	if (c->io) {
		size_t queued;
		if (close) {
			c->io->close(c->payload, text_or_code, data, len);
		} else if (c->io->queued && !c->closed_in && !c->failed &&
		    ((queued = c->io->queued(c->payload)) > DOBJ_WS_MAX_BUFFERED ||
		     len > DOBJ_WS_MAX_BUFFERED - queued)) {
			too_slow(c);
		} else {
			c->io->send(c->payload, data, len, text_or_code);
		}
		return DOBJ_OK;
	}
	if (c->detached)
		return DOBJ_OK;
	m = malloc(sizeof(*m) + len + 1);
	if (!m)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	m->next = NULL;
	m->close = close;
	m->text_or_code = text_or_code;
	m->len = len;
	if (len)
		memcpy(m->data, data, len);
	m->data[len] = 0;
	if (c->out_tail)
		c->out_tail->next = m;
	else
		c->out_head = m;
	c->out_tail = m;
	return DOBJ_OK;
}

/* The peer will never read again: output is dropped. */
static int peer_gone(const wsconn *c)
{
	return c->closed_in || c->failed || c->detached;
}

int dobj_ws_send(dobj_ws *ws, const void *data, size_t len, int text)
{
	wsconn *c = ws->c;
	unsigned char *usv = NULL;
	int rc;

	CHECK_WS_THREAD(c);
	if (ws->end != DOBJ_WS_SERVER)
		return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_WS_CLIENT_END);
	if (c->closed_out)
		return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_WS_SEND_CLOSED);
	if (peer_gone(c))
		return DOBJ_OK;
	if (!c->accepted)
		return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_WS_NOT_ACCEPTED);
	if (text && (rc = usv_text(data, len, &usv, &len)) < 0)
		return rc == DOBJ_EARG ? dobj_error_set(DOBJ_EARG, DOBJ_MSG_WS_SEND_UTF8) : rc;
	rc = output(c, 0, text != 0, usv ? usv : data, len);
	free(usv);
	return rc;
}

int dobj_ws_close(dobj_ws *ws, int code, const char *reason, size_t reason_len)
{
	wsconn *c = ws->c;
	unsigned char *usv = NULL;
	int rc;

	CHECK_WS_THREAD(c);
	if (ws->end != DOBJ_WS_SERVER)
		return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_WS_CLIENT_END);
	if (c->closed_out || c->failed || c->detached)
		return DOBJ_OK; /* a second close is ignored, as workerd does */
	if (!c->accepted)
		return dobj_error_set(DOBJ_ESTATE, DOBJ_MSG_WS_NOT_ACCEPTED);
	if (code >= 0 && (code < 1000 || code >= 5000 || code == 1004 || code == 1005 ||
	    code == 1006 || code == 1015))
		return dobj_error_set(DOBJ_EARG, "Invalid WebSocket close code: %d.", code);
	if (reason && code < 0)
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_WS_REASON_NO_CODE);
	if (reason && (rc = usv_text(reason, reason_len, &usv, &reason_len)) < 0)
		return rc == DOBJ_EARG ? dobj_error_set(DOBJ_EARG, "a WebSocket close reason must be "
			"valid UTF-8") : rc;
	if (usv)
		reason = (const char *)usv;
	if (reason_len > DOBJ_WS_MAX_CLOSE_REASON) {
		free(usv);
		return dobj_error_set(DOBJ_EARG, "a WebSocket close reason cannot be longer than "
			"%d bytes of UTF-8", DOBJ_WS_MAX_CLOSE_REASON);
	}
	c->closed_out = 1;
	rc = c->closed_in ? DOBJ_OK /* the host already answered the peer's close */
		: output(c, 1, code < 0 ? 1005 : code, reason ? reason : "", reason ? reason_len : 0);
	free(usv);
	return rc;
}

int dobj_ws_set_attachment(dobj_ws *ws, const void *data, size_t len)
{
	wsconn *c = ws->c;
	unsigned char *copy = NULL;

	CHECK_WS_THREAD(c);
	if (len > DOBJ_WS_MAX_ATTACHMENT)
		/* workerd's words, missing space included. */
		return dobj_error_set(DOBJ_EARG, "A WebSocket 'attachment' cannot be larger than %d "
			"bytes.'attachment' was %zu bytes.", DOBJ_WS_MAX_ATTACHMENT, len);
	if (data) {
		copy = malloc(len ? len : 1);
		if (!copy)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		memcpy(copy, data, len);
	}
	free(c->att);
	c->att = copy;
	c->att_len = copy ? len : 0;
	return DOBJ_OK;
}

const unsigned char *dobj_ws_attachment(const dobj_ws *ws, size_t *len)
{
	*len = ws->c->att_len;
	return ws->c->att;
}

int dobj_ws_tag_count(const dobj_ws *ws, size_t *n)
{
	*n = 0;
	if (!ws->c->accepted || ws->end != DOBJ_WS_SERVER)
		return dobj_error_set(DOBJ_ESTATE, "this WebSocket was not accepted with "
			"acceptWebSocket(): it has no tags");
	*n = ws->c->ntags;
	return DOBJ_OK;
}

const char *dobj_ws_tag_at(const dobj_ws *ws, size_t i, size_t *len)
{
	if (i >= ws->c->ntags) {
		*len = 0;
		return NULL;
	}
	*len = ws->c->tag_lens[i];
	return ws->c->tags[i];
}

static int has_tag(const wsconn *c, const char *tag, size_t len)
{
	size_t i;

	for (i = 0; i < c->ntags; i++)
		if (c->tag_lens[i] == len && !memcmp(c->tags[i], tag, len))
			return 1;
	return 0;
}

int dobj_obj_web_sockets(dobj_obj *obj, const char *tag, size_t tag_len, dobj_ws ***out, size_t *n)
{
	room *r;
	size_t i, k = 0;
	int rc;

	*out = NULL;
	*n = 0;
	if ((rc = dobj_obj_check(obj)) < 0)
		return rc;
	r = room_get(obj->ns, &obj->id);
	if (!r || !r->n)
		return DOBJ_OK;
	*out = malloc(r->n * sizeof(**out));
	if (!*out)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	for (i = 0; i < r->n; i++) {
		wsconn *c = r->v[i];
		if (tag && !has_tag(c, tag, tag_len))
			continue;
		c->refs++;
		(*out)[k++] = &c->ends[DOBJ_WS_SERVER];
	}
	*n = k;
	return DOBJ_OK;
}

int dobj_obj_set_ws_auto_response(dobj_obj *obj, const char *request, size_t request_len,
	const char *response, size_t response_len)
{
	char *req = NULL, *resp = NULL;
	room *r;
	int rc;

	if ((rc = dobj_obj_check(obj)) < 0)
		return rc;
	if (request && (request_len > DOBJ_WS_MAX_AUTO_RESPONSE ||
	    response_len > DOBJ_WS_MAX_AUTO_RESPONSE))
		return dobj_error_set(DOBJ_EARG, "a WebSocket auto-response request and response "
			"cannot be longer than %d bytes each", DOBJ_WS_MAX_AUTO_RESPONSE);
	if (request && (!dobj__utf8_valid(request, request_len) ||
	    (response && !dobj__utf8_valid(response, response_len))))
		return dobj_error_set(DOBJ_EARG, "a WebSocket auto-response request and response "
			"must be valid UTF-8 (they are text messages)");
	r = room_get(obj->ns, &obj->id);
	if (!request) {
		if (r) {
			free(r->areq);
			free(r->aresp);
			r->areq = r->aresp = NULL;
			room_maybe_drop(obj->ns, r);
		}
		return DOBJ_OK;
	}
	if (!(req = dobj__strndup(request, request_len)) ||
	    !(resp = dobj__strndup(response ? response : "", response ? response_len : 0)) ||
	    !(r = room_make(obj))) {
		free(req);
		free(resp);
		return DOBJ_ENOMEM;
	}
	free(r->areq);
	free(r->aresp);
	r->areq = req;
	r->areq_len = request_len;
	r->aresp = resp;
	r->aresp_len = response ? response_len : 0;
	return DOBJ_OK;
}

int dobj_obj_ws_auto_response(dobj_obj *obj, const char **request, size_t *request_len,
	const char **response, size_t *response_len)
{
	room *r = room_get(obj->ns, &obj->id);

	if (!r || !r->areq)
		return 0;
	*request = r->areq;
	*request_len = r->areq_len;
	*response = r->aresp;
	*response_len = r->aresp_len;
	return 1;
}

int dobj_ws_auto_response_time(const dobj_ws *ws, double *ms)
{
	if (!ws->c->auto_done)
		return 0;
	*ms = ws->c->auto_ms;
	return 1;
}

/* -------------------------------------------------------------- events */

/* `cost` of c's received messages left its backlog: the host may read the
 * client again once the backlog is down to half (DOBJ_WS_MAX_BACKLOG).  For
 * a relay (cluster), the backlog is what the object's node has not yet
 * acknowledged handling, so the rule holds across nodes too. */
static void backlog_down(wsconn *c, size_t cost)
{
	c->in_bytes -= cost < c->in_bytes ? cost : c->in_bytes;
	if (cost && c->in_paused && c->in_bytes <= DOBJ_WS_MAX_BACKLOG / 2) {
		c->in_paused = 0;
		if (c->io && c->io->resume)
			c->io->resume(c->payload);
	}
}

static void ev_free(void *p)
{
	wsev *ev = p;
	wsconn *c = ev->c;

	backlog_down(c, ev->cost);
	if (ev->cost && c->drain)
		c->drain(c->drain_data);
	conn_unref(c);
	free(ev->data);
	free(ev->reason);
	free(ev);
}

static void ev_done(dobj_task *t, void *data)
{
	wsconn *c = data;

	(void)t;
	conn_unregister(c);
	conn_unref(c);
}

const dobj_ws_event *dobj_task_ws_event(const dobj_task *t)
{
	if (t->call_kind < DOBJ_CALL_WS_MESSAGE || !t->request)
		return NULL;
	return &((const wsev *)t->request)->pub;
}

int dobj__ws_unhandled(const dobj_task *t)
{
	unsigned flag;

	if (t->call_kind < DOBJ_CALL_WS_MESSAGE || t->call_kind > DOBJ_CALL_WS_ERROR)
		return 0;
	flag = DOBJ_CLASS_WS_MESSAGE << (t->call_kind - DOBJ_CALL_WS_MESSAGE);
	if (t->obj->ns->klass.flags & flag)
		return 0;
	return t->call_kind == DOBJ_CALL_WS_MESSAGE ? -1 : 1;
}

/* Queue an event on the socket's object (a fresh instance if it sleeps). */
static int queue_event(wsconn *c, dobj_call_kind kind, const void *data, size_t len, int text,
	int code, const char *reason, size_t reason_len, int was_clean)
{
	room *r = room_get(c->ns, &c->id);
	wsev *ev;
	dobj_obj *obj;
	dobj_task *t;

	if (c->rt->closing)
		return dobj_error_set(DOBJ_ECLOSED, DOBJ_MSG_CLOSED);
	ev = calloc(1, sizeof(*ev));
	if (!ev)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if ((len && !(ev->data = malloc(len))) ||
	    (reason_len && !(ev->reason = malloc(reason_len)))) {
		free(ev->data);
		free(ev);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	if (len)
		memcpy(ev->data, data, len);
	if (reason_len)
		memcpy(ev->reason, reason, reason_len);
	ev->c = c;
	c->refs++;
	ev->pub.ws = &c->ends[DOBJ_WS_SERVER];
	ev->pub.data = ev->data ? ev->data : (const unsigned char *)"";
	ev->pub.len = len;
	ev->pub.text = text;
	ev->pub.code = code;
	ev->pub.reason = ev->reason ? ev->reason : "";
	ev->pub.reason_len = reason_len;
	ev->pub.was_clean = was_clean;
	obj = dobj__obj_get(c->ns, &c->id, r ? r->name : NULL, r ? r->name_len : 0);
	if (!obj) {
		ev_free(ev);
		return DOBJ_ENOMEM;
	}
	if (kind == DOBJ_CALL_WS_MESSAGE) {
		ev->cost = len + DOBJ_WS_EVENT_COST;
		c->in_bytes += ev->cost;
	} else {
		c->refs++; /* ev_done's */
	}
	t = dobj__call_new(obj, kind, kind != DOBJ_CALL_WS_MESSAGE ? ev_done : NULL, c);
	dobj__obj_unref(obj);
	if (!t) {
		if (kind != DOBJ_CALL_WS_MESSAGE)
			conn_unref(c);
		ev_free(ev);
		return DOBJ_ENOMEM;
	}
	t->request = ev;
	t->request_free = ev_free;
	dobj_task_unref(t);
	return DOBJ_OK;
}

static int host_check(dobj_ws *ws)
{
	CHECK_WS_THREAD(ws->c);
	if (ws->end != DOBJ_WS_CLIENT)
		return dobj_error_set(DOBJ_ESTATE, "the host serves the client end of a WebSocketPair");
	if (!ws->c->accepted && !ws->c->relay)
		return dobj_error_set(DOBJ_ESTATE, "the server end of this WebSocketPair was not "
			"accepted: call acceptWebSocket() on it before returning the client end in a "
			"101 response");
	if (ws->c->closed_in || ws->c->failed)
		return dobj_error_set(DOBJ_ESTATE, "this WebSocket connection is closed");
	return DOBJ_OK;
}

int dobj_ws_attach(dobj_ws *client, const dobj_ws_io *io, void *payload)
{
	wsconn *c = client->c;
	outmsg *m;
	int rc;

	if ((rc = host_check(client)) < 0)
		return rc;
	if (c->attached)
		return dobj_error_set(DOBJ_ESTATE, "this WebSocket is already served by the host");
	c->attached = 1;
	c->io = io;
	c->payload = payload;
	while ((m = c->out_head)) {
		c->out_head = m->next;
		if (!c->out_head)
			c->out_tail = NULL;
		if (m->close)
			io->close(payload, m->text_or_code, (const char *)m->data, m->len);
		else
			io->send(payload, m->data, m->len, m->text_or_code);
		free(m);
	}
	c->out_bytes = 0;
	return DOBJ_OK;
}

void dobj_ws_detach(dobj_ws *client)
{
	if (client->end != DOBJ_WS_CLIENT)
		return;
	client->c->detached = 1;
	conn_release_io(client->c);
}

void *dobj_ws_sole_payload(const dobj_ws *ws)
{
	return ws->c->refs == 1 ? ws->c->payload : NULL;
}

void dobj_ws_set_binding_data(dobj_ws *ws, void *data)
{
	ws->c->binding = data;
}

void *dobj_ws_binding_data(const dobj_ws *ws)
{
	return ws->c->binding;
}

int dobj_ws_receive(dobj_ws *client, const void *data, size_t len, int text)
{
	wsconn *c = client->c;
	room *r;
	int rc;

	if ((rc = host_check(client)) < 0)
		return rc;
	if (c->lost)
		return DOBJ_OK; /* the object is served elsewhere now */
	if (len > DOBJ_WS_MAX_MESSAGE) {
		/* Cloudflare closes the connection with 1009 and the object hears
		 * of it as a close.  A relay's too: no frame between the nodes
		 * carries the biggest (cluster_ws.c drops it), and one that went
		 * unanswered would count as unacknowledged for good. */
		if (!c->closed_out && c->io)
			c->io->close(c->payload, DOBJ_WS_CLOSE_TOO_BIG, DOBJ_MSG_WS_TOO_BIG,
				strlen(DOBJ_MSG_WS_TOO_BIG));
		c->closed_out = 1;
		return dobj_ws_peer_close(client, DOBJ_WS_CLOSE_TOO_BIG, DOBJ_MSG_WS_TOO_BIG,
			strlen(DOBJ_MSG_WS_TOO_BIG), 0);
	}
	if (c->relay) {
		/* The object's node applies the other rules (UTF-8, auto-response);
		 * what it has not acknowledged handling counts as this client's
		 * backlog. */
		if (c->relay_ops) {
			c->in_bytes += len + DOBJ_WS_EVENT_COST;
			c->relay_ops->message(c->relay_data, data, len, text != 0);
		}
		return DOBJ_OK;
	}
	if (text && !dobj__utf8_valid(data, len)) {
		/* RFC 6455 8.1: the connection fails (wslay does not check). */
		if (!c->closed_out && c->io)
			c->io->close(c->payload, DOBJ_WS_CLOSE_BAD_UTF8, DOBJ_MSG_WS_BAD_UTF8,
				strlen(DOBJ_MSG_WS_BAD_UTF8));
		c->closed_out = 1;
		return dobj_ws_peer_close(client, DOBJ_WS_CLOSE_BAD_UTF8, DOBJ_MSG_WS_BAD_UTF8,
			strlen(DOBJ_MSG_WS_BAD_UTF8), 0);
	}
	r = room_get(c->ns, &c->id);
	if (text && r && r->areq && r->areq_len == len && !memcmp(r->areq, data, len)) {
		/* Answered here: the object is not woken. */
		c->auto_done = 1;
		c->auto_ms = dobj__wall_ms(c->rt);
		if (!c->closed_out && c->io) /* under the same bound as the object's output */
			output_now(c, 0, 1, r->aresp, r->aresp_len);
		return DOBJ_OK;
	}
	return queue_event(c, DOBJ_CALL_WS_MESSAGE, data, len, text != 0, 0, NULL, 0, 0);
}

int dobj_ws_receive_paused(dobj_ws *client)
{
	wsconn *c = client->c;

	if (c->in_bytes <= DOBJ_WS_MAX_BACKLOG)
		return 0;
	c->in_paused = 1;
	return 1;
}

int dobj_ws_peer_close(dobj_ws *client, int code, const char *reason, size_t reason_len,
	int was_clean)
{
	wsconn *c = client->c;
	int rc;

	if ((rc = host_check(client)) < 0)
		return rc;
	c->closed_in = 1;
	if (c->lost)
		return DOBJ_OK;
	if (c->relay) {
		const dobj__ws_relay_ops *ops = c->relay_ops;
		c->relay_ops = NULL; /* nothing follows a close */
		if (ops)
			ops->close(c->relay_data, code, reason ? reason : "", reason ? reason_len : 0,
				was_clean != 0);
		return DOBJ_OK;
	}
	return queue_event(c, DOBJ_CALL_WS_CLOSE, NULL, 0, 0, code, reason, reason ? reason_len : 0,
		was_clean != 0);
}

int dobj_ws_peer_error(dobj_ws *client, const char *message, size_t len)
{
	wsconn *c = client->c;
	int rc;

	if ((rc = host_check(client)) < 0)
		return rc;
	c->failed = 1;
	if (c->lost)
		return DOBJ_OK;
	if (c->relay) {
		const dobj__ws_relay_ops *ops = c->relay_ops;
		c->relay_ops = NULL;
		if (ops)
			ops->error(c->relay_data, message ? message : "",
				message ? len : 0);
		return DOBJ_OK;
	}
	return queue_event(c, DOBJ_CALL_WS_ERROR, message, message ? len : 0, 1, 0, NULL, 0, 0);
}

/* ------------------------------------------------- relays (cluster mode) */

int dobj__ws_relay_new(dobj_rt *rt, const dobj__ws_relay_ops *ops, void *data, dobj_ws **client)
{
	dobj_ws *server;
	int rc;

	if ((rc = dobj_ws_pair_new(client, &server)) < 0)
		return rc;
	dobj_ws_unref(server); /* nothing here holds the server end */
	(*client)->c->relay = 1;
	(*client)->c->relay_ops = ops;
	(*client)->c->relay_data = data;
	(*client)->c->rt = rt;
	rt->refs++;
	return DOBJ_OK;
}

void dobj__ws_relay_cut(dobj_ws *client)
{
	client->c->relay_ops = NULL;
	client->c->relay_data = NULL;
	/* Nothing acknowledges what was relayed now: a client held back reads
	 * on (what it sends is dropped), so its close can come through. */
	backlog_down(client->c, client->c->in_bytes);
}

void dobj__ws_relay_ack(dobj_ws *client, uint64_t bytes)
{
	wsconn *c = client->c;

	backlog_down(c, bytes < (uint64_t)c->in_bytes ? (size_t)bytes : c->in_bytes);
}

size_t dobj__ws_backlog(const dobj_ws *client)
{
	return client->c->in_bytes;
}

void dobj__ws_on_drain(dobj_ws *client, void (*fn)(void *data), void *data)
{
	client->c->drain = fn;
	client->c->drain_data = fn ? data : NULL;
}

void dobj__ws_relay_output(dobj_ws *client, int close, int text_or_code, const void *data,
	size_t len)
{
	wsconn *c = client->c;

	if (c->closed_out || c->failed)
		return;
	if (close)
		c->closed_out = 1;
	if (!c->attached) {
		/* The same bound as a local socket's output before the host took it. */
		if (len > DOBJ_WS_MAX_BUFFERED - c->out_bytes)
			return;
		c->out_bytes += len;
	}
	output_now(c, close, text_or_code, data, len);
}

int dobj__ws_hold_claim(dobj_ns *ns, const dobj_id *id, long long epoch, long long node,
	struct dobj__cinc *inc)
{
	room *r = room_get(ns, id);

	if (!r || !r->n)
		return 0;
	dobj__cluster_inc_drop(ns->rt, r->held_inc); /* an earlier incarnation's */
	r->held_epoch = epoch;
	r->held_node = node;
	r->held_inc = inc;
	return 1;
}

/* Cluster mode: the node lost the object.  Each socket is closed at once
 * (not behind an output gate: nothing of the object's goes with it) and
 * leaves the object's list without an event; what the client sends after
 * is dropped, and so are events already queued (dobj__ws_dropped). */
static size_t room_drop(dobj_ns *ns, room *r, int code, const char *reason)
{
	size_t n = r->n;

	r->held_epoch = r->held_node = 0; /* not this node's to give back now */
	dobj__cluster_inc_drop(ns->rt, r->held_inc);
	r->held_inc = NULL;
	while (r->n) {
		wsconn *c = r->v[--r->n];
		c->registered = 0;
		c->lost = 1;
		if (!c->closed_out && !c->closed_in && !c->failed && !c->detached)
			output_now(c, 1, code, reason, strlen(reason));
		c->closed_out = 1;
		conn_unref(c); /* the room's reference */
	}
	room_maybe_drop(ns, r);
	return n;
}

size_t dobj__ws_drop(dobj_ns *ns, const dobj_id *id, int code, const char *reason)
{
	room *r = room_get(ns, id);

	return r ? room_drop(ns, r, code, reason) : 0;
}

size_t dobj__ws_drop_all(dobj_rt *rt, int code, const char *reason)
{
	size_t i, j, n = 0;
	int again;

	for (i = 0; i < rt->nns; i++) {
		dobj_ns *ns = rt->nss[i];
		/* Dropping a room may move others in the map: look again. */
		do {
			again = 0;
			for (j = 0; j < ns->rooms.cap; j++) {
				room *r = ns->rooms.slots[j].key ? ns->rooms.slots[j].value : NULL;
				if (r && r->n) {
					n += room_drop(ns, r, code, reason);
					again = 1;
				}
			}
		} while (again);
	}
	return n;
}

int dobj__ws_dropped(const dobj_task *t)
{
	return t->kind == DOBJ_TASK_CALL && t->call_kind >= DOBJ_CALL_WS_MESSAGE && t->request &&
		((const wsev *)t->request)->c->lost;
}
