/*
 * Calls between the nodes of a cluster (dobj/route.h, docs/cluster.md).
 *
 * Two halves share one lock:
 * - the network thread (net_main) owns the sockets: a listener on the
 *   node's address, one outgoing connection per peer node (calls go out on
 *   it, their answers come back on it, so each caller's calls stay in
 *   order), the incoming connections of the other nodes.  It reads whole
 *   length-prefixed frames, answers pings, hands CALL and RESULT frames to
 *   the runtime and wakes it by arming the runtime's own fd (dobj_rt_fd);
 *   it writes what the runtime queued.  It never touches the runtime's
 *   state.
 * - the runtime's thread (everything else) decides where a call goes,
 *   serialises it, dispatches incoming calls through the normal path
 *   (dobj__call_new: input gate, order, errors as for local calls) and
 *   finishes the caller's task with the answer, inside a pump.
 *
 * Frames: u32 length (big-endian, of what follows), u8 type, then
 *   HELLO   "DOBJ" u16 version u64 node        (first frame of a connection)
 *   CALL    u64 id, u8 kind, u8 depth, u16+ns key, 32 id bytes,
 *           u32+name (0xffffffff: none), u16+method, payload (to the end)
 *   RESULT  u64 id, u8 status, u8 flags, i32 code, u32+message, payload
 *   PING / PONG (liveness: the caller's side pings; a peer silent for a
 *           lease time to live is taken for dead)
 *   GOAWAY  u64 position (the called node leaves: it read the connection's
 *           stream up to there and reads no more; the calls after it never
 *           ran.  An older node takes it for an unknown frame and fails the
 *           connection, as a close would.)
 * Payloads are V8 serialisation (dobj_val_encode): RPC arguments and
 * results as they are, fetch requests and responses as an object.
 */
#define _GNU_SOURCE

#include <poll.h>

#include "cluster_route.h"

/* ----------------------------------------------- fetch messages as values */

static int put_str(dobj_val *o, const char *k, const char *s)
{
	return dobj_val_put(o, k, strlen(k), s ? dobj_val_string(s, strlen(s)) : dobj_val_null());
}

/* ws_link: a 101's WebSocket link (cluster_ws.c), 0 for none. */
static int msg_encode(const dobj_msg *m, uint64_t ws_link, buf *b)
{
	dobj_val *o = dobj_val_object(), *h = dobj_val_array();
	unsigned char *out = NULL;
	size_t i, len;
	int rc = DOBJ_OK;

	for (i = 0; h && rc >= 0 && i < m->nheaders; i++)
		if ((rc = dobj_val_push(h, dobj_val_string(m->header_names[i],
			strlen(m->header_names[i])))) >= 0)
			rc = dobj_val_push(h, dobj_val_string(m->header_values[i],
				strlen(m->header_values[i])));
	if (!o || !h || rc < 0) {
		dobj_val_free(o);
		dobj_val_free(h);
		return rc < 0 ? rc : DOBJ_ENOMEM;
	}
	/* dobj_val_put owns what it is given, also when it fails. */
	if ((rc = dobj_val_put(o, "headers", 7, h)) >= 0 && (rc = put_str(o, "url", m->url)) >= 0 &&
	    (rc = put_str(o, "method", m->method)) >= 0 &&
	    (rc = dobj_val_put(o, "status", 6, dobj_val_number(m->status))) >= 0 &&
	    (rc = dobj_val_put(o, "body", 4, dobj_val_bytes(m->body ? (const void *)m->body : "",
		m->body_len))) >= 0 &&
	    (!ws_link || (rc = dobj_val_put(o, "ws", 2, dobj_val_number((double)ws_link))) >= 0) &&
	    (rc = dobj_val_encode(o, &out, &len)) >= 0 &&
	    buf_put(b, out, len) < 0)
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
	free(out);
	dobj_val_free(o);
	return rc < 0 ? rc : DOBJ_OK;
}

static const char *val_str(const dobj_val *o, const char *k)
{
	const dobj_val *v = dobj_val_get(o, k, strlen(k));
	size_t len;
	const char *s;

	if (!v || dobj_val_type_of(v) != DOBJ_VAL_STRING)
		return NULL;
	s = dobj_val_get_string(v, &len);
	return strlen(s) == len ? s : NULL;
}

/* A message from its value form, every part checked (a peer's bytes). */
static int msg_decode(const unsigned char *p, size_t n, int is_request, dobj_msg **out,
	uint64_t *ws_link)
{
	dobj_val *o = NULL;
	const dobj_val *h, *st, *body, *ws;
	const char *url, *method;
	dobj_msg *m = NULL;
	size_t i, blen = 0;
	const void *bp = "";
	int rc;

	*out = NULL;
	if ((rc = dobj_val_decode(p, n, &o)) < 0)
		return rc;
	rc = dobj_error_set(DOBJ_EINVALID, "a malformed %s", is_request ? "request" : "response");
	if (dobj_val_type_of(o) != DOBJ_VAL_OBJECT)
		goto done;
	h = dobj_val_get(o, "headers", 7);
	st = dobj_val_get(o, "status", 6);
	body = dobj_val_get(o, "body", 4);
	ws = dobj_val_get(o, "ws", 2);
	if (!h || dobj_val_type_of(h) != DOBJ_VAL_ARRAY || dobj_val_len(h) % 2)
		goto done;
	if (ws) { /* a 101's WebSocket link: a whole number from 1 */
		double x = dobj_val_type_of(ws) == DOBJ_VAL_NUMBER ? dobj_val_get_number(ws) : 0;
		if (is_request || !ws_link || !(x >= 1 && x <= 9007199254740992.0) || x != floor(x))
			goto done;
		*ws_link = (uint64_t)x;
	}
	if (body) {
		if (dobj_val_type_of(body) != DOBJ_VAL_BYTES)
			goto done;
		bp = dobj_val_get_bytes(body, &blen);
	}
	if (is_request) {
		url = val_str(o, "url");
		method = val_str(o, "method");
		if (!url || !method || !(m = dobj_msg_new_request(url, method)))
			goto done;
	} else {
		double s = st && dobj_val_type_of(st) == DOBJ_VAL_NUMBER ? dobj_val_get_number(st) : 0;
		if (!(s >= 100 && s <= 599) || s != floor(s) || !(m = dobj_msg_new_response((int)s, NULL, 0)))
			goto done;
	}
	if (dobj_msg_set_body(m, bp, blen) < 0)
		goto done;
	for (i = 0; i + 1 < dobj_val_len(h); i += 2) {
		const dobj_val *k = dobj_val_at(h, i), *v = dobj_val_at(h, i + 1);
		size_t kl, vl;
		const char *ks, *vs;
		if (dobj_val_type_of(k) != DOBJ_VAL_STRING || dobj_val_type_of(v) != DOBJ_VAL_STRING)
			goto done;
		ks = dobj_val_get_string(k, &kl);
		vs = dobj_val_get_string(v, &vl);
		if (strlen(ks) != kl || strlen(vs) != vl || dobj_msg_add_header(m, ks, vs) < 0)
			goto done;
	}
	*out = m;
	m = NULL;
	rc = DOBJ_OK;
done:
	dobj_msg_free(m);
	dobj_val_free(o);
	return rc;
}

/* ---------------------------------------------------- the runtime: calls */

static uint64_t hash_id(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	return id ^ (id >> 33);
}

static int pend_add(struct dobj__route *r, pend *p)
{
	size_t i;

	if (r->npend + 1 > r->tcap / 2) {
		size_t cap = r->tcap ? 2 * r->tcap : 64;
		pend **tab = calloc(cap, sizeof(*tab));
		if (!tab)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		for (i = 0; i < r->tcap; i++)
			while (r->tab[i]) {
				pend *q = r->tab[i];
				r->tab[i] = q->next;
				q->next = tab[hash_id(q->id) & (cap - 1)];
				tab[hash_id(q->id) & (cap - 1)] = q;
			}
		free(r->tab);
		r->tab = tab;
		r->tcap = cap;
	}
	i = hash_id(p->id) & (r->tcap - 1);
	p->next = r->tab[i];
	r->tab[i] = p;
	r->npend++;
	return DOBJ_OK;
}

static pend *pend_take(struct dobj__route *r, uint64_t id)
{
	pend **pp;

	if (!r->tcap)
		return NULL;
	for (pp = &r->tab[hash_id(id) & (r->tcap - 1)]; *pp; pp = &(*pp)->next)
		if ((*pp)->id == id) {
			pend *p = *pp;
			*pp = p->next;
			r->npend--;
			return p;
		}
	return NULL;
}

/* While calls are in flight r->watch keeps dobj_rt_run waiting for their
 * answers (the fd wakes it when they come) and, each time it fires, fails
 * those past the call timeout (a node that answers pings while its runtime
 * is stuck). */
static int calls_out(void *owner)
{
	return ((struct dobj__route *)owner)->npend > 0;
}

static void watch_sync(struct dobj__route *r)
{
	dobj__watch_update(&r->watch);
}

static void fail_call(dobj_task *t, int code, int retryable, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Calls past their deadline fail: they may or may not have run, so they
 * are never sent again. */
static void expire(struct dobj__route *r)
{
	double now = dobj__mono_ms(), limit = r->rt->cluster ? r->rt->cluster->call_timeout_ms : 0;
	size_t i;

	for (i = 0; i < r->tcap; i++) {
		pend **pp = &r->tab[i];
		while (*pp) {
			pend *p = *pp;
			if (p->deadline > now) {
				pp = &p->next;
				continue;
			}
			*pp = p->next;
			r->npend--;
			if (!p->t->done) {
				p->t->routed = 0;
				fail_call(p->t, DOBJ_ERROR, 1, "cluster: node %lld did not answer the call within "
					"%.3g s (the call timeout): it may or may not have run", p->node, limit / 1e3);
			}
			dobj_task_unref(p->t);
			free(p);
		}
	}
}

static void watch_fired(void *owner)
{
	expire(owner);
}

/* The call failed on this side (not the object's doing). */
static void fail_call(dobj_task *t, int code, int retryable, const char *fmt, ...)
{
	char msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	t->retryable = retryable;
	t->remote_known = 1;
	t->remote_flag = 0;
	dobj_task_raise(t, code, msg, NULL);
}

static owner *cache_get(struct dobj__route *r, dobj_obj *obj)
{
	owner *o = dobj__idmap_get(&r->cache, &obj->id);

	return o && o->ns == obj->ns ? o : NULL;
}

static void cache_drop(struct dobj__route *r, dobj_obj *obj)
{
	owner *o = dobj__idmap_del(&r->cache, &obj->id);

	if (o) {
		free(o);
		r->ncache--;
	}
}

static void cache_clear(struct dobj__route *r)
{
	owner *o;

	while ((o = dobj__idmap_any(&r->cache))) {
		dobj__idmap_del(&r->cache, &o->id);
		free(o);
	}
	r->ncache = 0;
}

/* Forget where a node's objects were: its connection failed, so they move
 * once its lease lapsed (a call after the suspect time claims them, instead
 * of waiting for the node's silence again).  Rare: a walk of the cache. */
static void cache_drop_node(struct dobj__route *r, long long node)
{
	size_t i;
	int again;

	do { /* a deletion may move later entries back: look again */
		again = 0;
		for (i = 0; i < r->cache.cap; i++) {
			owner *o = r->cache.slots[i].key ? r->cache.slots[i].value : NULL;
			if (o && o->node == node) {
				dobj__idmap_del(&r->cache, &o->id);
				free(o);
				r->ncache--;
				again = 1;
			}
		}
	} while (again);
}

static void cache_put(struct dobj__route *r, dobj_obj *obj, long long node, const char *addr)
{
	size_t n = strlen(addr);
	owner *o;

	cache_drop(r, obj);
	if (r->ncache >= CACHE_MAX)
		cache_clear(r);
	o = malloc(sizeof(*o) + n + 1);
	if (!o)
		return;
	o->id = obj->id;
	o->ns = obj->ns;
	o->node = node;
	memcpy(o->addr, addr, n + 1);
	if (dobj__idmap_put(&r->cache, &o->id, o) < 0)
		free(o);
	else
		r->ncache++;
}

/* A node whose connection failed (killed, refused, silent) is not sent
 * calls for a lease TTL: its objects are claimed elsewhere once its lease
 * lapsed, and until then a call to it would only wait for the silence again
 * (a paused node).  A restarted process is a new node, never a suspect. */
static int suspect(struct dobj__route *r, long long node)
{
	double now = dobj__mono_ms();
	size_t i;

	for (i = 0; i < sizeof(r->suspects) / sizeof(r->suspects[0]); i++)
		if (r->suspects[i].node == node && r->suspects[i].until > now)
			return 1;
	return 0;
}

static void suspect_add(struct dobj__route *r, long long node)
{
	size_t i, n = sizeof(r->suspects) / sizeof(r->suspects[0]), pick = 0;

	for (i = 0; i < n; i++) {
		if (r->suspects[i].node == node) {
			pick = i;
			break;
		}
		if (r->suspects[i].until < r->suspects[pick].until)
			pick = i;
	}
	r->suspects[pick].node = node;
	r->suspects[pick].until = dobj__mono_ms() + (r->rt->cluster ? r->rt->cluster->ttl_ms : 3000);
}

/* ------------------------------------------- stubs and IDs inside values */

static dobj_ns *ns_by_key(dobj_rt *rt, const void *key, size_t len)
{
	size_t i;

	for (i = 0; i < rt->nns; i++)
		if (rt->nss[i]->unique_key_len == len && !memcmp(rt->nss[i]->unique_key, key, len))
			return rt->nss[i];
	return NULL;
}

/* A peer's namespace key for a message: printable ASCII, the rest '?'. */
static void key_show(const char *key, size_t len, char *out, size_t cap)
{
	size_t i, n = len < cap - 1 ? len : cap - 1;

	for (i = 0; i < n; i++)
		out[i] = key[i] >= 0x20 && key[i] < 0x7f ? key[i] : '?';
	out[n] = '\0';
}

/* A stub or an ID another node sent becomes one of this runtime's: its
 * namespace must be bound here (the same unique key), its ID made by that
 * namespace (the MAC, and the name when it has one).  Calling through it
 * then routes like any stub of this node. */
/* Is `id` one the namespace makes (its MAC), from `name` when it has one?
 * A peer's word is not enough: an object must never carry a name its ID was
 * not made from (ctx.id.name), nor exist under an ID no stub could name. */
static int id_of(dobj_ns *ns, const dobj_id *id, const char *name, size_t nl)
{
	dobj_id named;

	if (!name)
		return dobj__id_sealed(ns->key, id);
	/* A name that is not text makes no ID. */
	return dobj_id_from_name(ns->key, name, nl, &named) == DOBJ_OK && dobj_id_equal(&named, id);
}

static dobj_val *ref_resolve(void *data, const dobj__ref *ref)
{
	dobj_rt *rt = data;
	dobj_ns *ns = ns_by_key(rt, ref->key, ref->key_len);
	const char *what = ref->kind == DOBJ_VAL_STUB ? "a stub" : "an ID";
	char shown[120];

	key_show(ref->key, ref->key_len, shown, sizeof(shown));
	if (!ns) {
		dobj_error_set(DOBJ_EARG, "%s of namespace '%s', which node %lld does not serve "
			"(no namespace with that key is bound there)", what, shown,
			rt->cluster ? rt->cluster->node_id : 0);
		return NULL;
	}
	if (!id_of(ns, &ref->id, ref->name, ref->name_len)) {
		dobj_error_set(DOBJ_EARG, "%s that is not of namespace '%s'", what, shown);
		return NULL;
	}
	return ref->kind == DOBJ_VAL_STUB ? dobj_val_stub(ns, &ref->id, ref->name, ref->name_len)
		: dobj_val_id(ns, &ref->id, ref->name, ref->name_len);
}

/* Send t to node: 1 (sent, or failed here: either way the task is no
 * longer this node's to run). */
static int send_call(struct dobj__route *r, dobj_task *t, long long node, const char *addr)
{
	dobj_rt *rt = t->rt;
	dobj_obj *obj = t->obj;
	buf f = { 0 }, pl = { 0 };
	pend *p = NULL;
	size_t mlen = t->method ? strlen(t->method) : 0;
	int rc = DOBJ_OK;

	if (suspect(r, node)) {
		cache_drop(r, obj);
		fail_call(t, DOBJ_ERROR, 1, "cluster: the call was not sent: node %lld, where the "
			"object lives, stopped answering (it moves once that node's lease lapsed)", node);
		return 1;
	}

	if (t->call_kind == DOBJ_CALL_RPC) {
		unsigned char *out = NULL;
		size_t len;
		if (!t->request_free)
			rc = dobj_error_set(DOBJ_EARG, "the arguments are host values");
		else if ((rc = dobj__val_encode_refs(t->request, &out, &len)) >= 0 && buf_put(&pl, out, len) < 0)
			rc = DOBJ_ENOMEM;
		free(out);
	} else if (t->request_free) {
		rc = msg_encode(t->request, 0, &pl);
	} else if (rt->codec.to_msg) {
		dobj_msg *m = rt->codec.to_msg(rt->codec.data, t->request, 1);
		rc = m ? msg_encode(m, 0, &pl) : (dobj_error_last_code() < 0 ? dobj_error_last_code() : DOBJ_ERROR);
		dobj_msg_free(m);
	} else {
		rc = dobj_error_set(DOBJ_EARG, "the request is a host value and the runtime has no codec");
	}
	if (rc < 0) {
		char why[400];
		snprintf(why, sizeof(why), "%s", dobj_error_last());
		buf_free(&pl);
		fail_call(t, rc == DOBJ_ENOMEM ? rc : DOBJ_EARG, 0,
			"cluster: the object is active on node %lld (%s) and the call cannot be sent there: %s",
			node, addr, why);
		return 1;
	}
	{
		uint64_t id = ++r->next_id;
		uint32_t nlen = obj->name ? (uint32_t)obj->name_len : NO_NAME;
		size_t body = 8 + 1 + 1 + 2 + obj->ns->unique_key_len + 32 + 4 +
			(obj->name ? obj->name_len : 0) + 2 + mlen + pl.len;
		if (obj->ns->unique_key_len > 0xffff || mlen > 0xffff || body + 1 > FRAME_MAX ||
		    (obj->name && obj->name_len >= NO_NAME)) {
			buf_free(&pl);
			fail_call(t, DOBJ_EARG, 0, "cluster: the call is too large to send to another node");
			return 1;
		}
		p = calloc(1, sizeof(*p));
		if (!p || put_be(&f, body + 1, 4) < 0 || put_be(&f, F_CALL, 1) < 0 || put_be(&f, id, 8) < 0 ||
		    put_be(&f, (uint64_t)t->call_kind, 1) < 0 || put_be(&f, (uint64_t)t->depth, 1) < 0 ||
		    put_be(&f, obj->ns->unique_key_len, 2) < 0 ||
		    buf_put(&f, obj->ns->unique_key, obj->ns->unique_key_len) < 0 ||
		    buf_put(&f, obj->id.bytes, 32) < 0 || put_be(&f, nlen, 4) < 0 ||
		    buf_put(&f, obj->name, obj->name ? obj->name_len : 0) < 0 ||
		    put_be(&f, mlen, 2) < 0 || buf_put(&f, t->method, mlen) < 0 ||
		    buf_put(&f, pl.p, pl.len) < 0) {
			free(p);
			buf_free(&pl);
			buf_free(&f);
			fail_call(t, DOBJ_ENOMEM, 0, "out of memory");
			return 1;
		}
		buf_free(&pl);
		p->id = id;
	}
	p->node = node;
	p->t = t;
	p->deadline = dobj__mono_ms() + (rt->cluster ? rt->cluster->call_timeout_ms : DOBJ_CLUSTER_CALL_TIMEOUT_MS);
	if ((rc = dobj__net_send_node(r, node, addr, &f, &p->cid, &p->start)) < 0 || (rc = pend_add(r, p)) < 0) {
		/* Not queued (or queued and untracked: its answer is dropped). */
		free(p);
		buf_free(&f);
		fail_call(t, DOBJ_ENOMEM, 0, "out of memory");
		return 1;
	}
	buf_free(&f);
	dobj_task_ref(t);
	t->routed = 1;
	t->route_tries++;
	watch_sync(r);
	return 1;
}

/* Send t again (it certainly did not run), or fail it once it went too
 * often. */
static void resend(dobj_task *t, const char *why)
{
	if (t->done)
		return;
	t->routed = 0;
	if (t->route_tries >= ROUTE_TRIES) {
		fail_call(t, DOBJ_ERROR, 1, "cluster: the call was not sent: %s (after %d tries)", why,
			(int)t->route_tries);
		return;
	}
	dobj_task_wake(t); /* back through run_task: a fresh lookup */
}

int dobj__route_call(dobj_task *t)
{
	dobj_rt *rt = t->rt;
	struct dobj__route *r = rt->route;
	struct dobj__cluster *cl = rt->cluster;
	owner *o;
	long long node = 0; /* set when the lookup finds one (-O1 cannot tell) */
	char addr[256];
	int rc;

	if (!r || !cl || t->route_in ||
	    (t->call_kind != DOBJ_CALL_FETCH && t->call_kind != DOBJ_CALL_RPC))
		return 0;
	/* A call the core cannot carry (a host value without a codec) is only
	 * ever run here: the claim says where the object is. */
	if (!(t->call_kind == DOBJ_CALL_RPC ? t->request_free != NULL
	      : t->request_free || rt->codec.to_msg)) {
		cache_drop(r, t->obj);
		return 0;
	}
	if ((o = cache_get(r, t->obj)) && o->node != cl->node_id && !suspect(r, o->node))
		return send_call(r, t, o->node, o->addr);
	if (o) /* stale: look again (the claim, or the owner row) */
		cache_drop(r, t->obj);
	if (cl->addr[0])
		return 0; /* claim it here; a live owner elsewhere: dobj__route_owned */
	/* A node that serves nothing (no node_addr) asks PostgreSQL where the
	 * object lives, off this thread (cluster_activate.c); t parks at the
	 * object's gate meanwhile (construct). */
	if ((rc = dobj__act_lookup(cl, t->obj, &node, addr, sizeof(addr))) == 2)
		return 0;
	if (rc <= 0) {
		if (rc == 0)
			fail_call(t, DOBJ_ERROR, 1, "cluster: the call was not sent: no live node with a "
				"node_addr can take the object");
		else
			fail_call(t, rc, 1, "cluster: the call was not sent: cannot find the object's "
				"node (%s)", dobj_error_last());
		return 1;
	}
	cache_put(r, t->obj, node, addr);
	return send_call(r, t, node, addr);
}

int dobj__route_owned(dobj_task *t)
{
	dobj_rt *rt = t->rt;
	struct dobj__route *r = rt->route;
	struct dobj__cluster *cl = rt->cluster;

	if (!r || !cl || t->kind != DOBJ_TASK_CALL)
		return 0;
	if (t->route_in) {
		/* The caller looks again and retries: nothing ran here. */
		t->not_owner = 1;
		dobj_task_raise(t, DOBJ_ESTATE, dobj_error_last(), NULL);
		return 1;
	}
	if ((t->call_kind != DOBJ_CALL_FETCH && t->call_kind != DOBJ_CALL_RPC) ||
	    !cl->owner_node || !cl->owner_addr[0])
		return 0;
	cache_put(r, t->obj, cl->owner_node, cl->owner_addr);
	return send_call(r, t, cl->owner_node, cl->owner_addr);
}

/* ------------------------------------------- the runtime: answers coming in */

/* A fetch answer nobody takes (the call timed out, or went): a WebSocket
 * it carries is closed at once, so the object hears of it. */
static void unwanted(struct dobj__route *r, uint64_t from, int status, const unsigned char *pl,
	size_t plen)
{
	dobj_msg *m = NULL;
	uint64_t link = 0;

	if (status == ST_OK && pl && msg_decode(pl, plen, 0, &m, &link) == DOBJ_OK && link)
		dobj__route_ws_refuse(r, from, link);
	dobj_msg_free(m);
}

static void on_result(struct dobj__route *r, uint64_t from, const unsigned char *data, size_t len)
{
	dobj_rt *rt = r->rt;
	rd d = { data, len, 0, 0 };
	uint64_t id = rd_be(&d, 8);
	int status = (int)rd_be(&d, 1), flags = (int)rd_be(&d, 1);
	int code = (int)(int32_t)(uint32_t)rd_be(&d, 4);
	size_t mlen = (size_t)rd_be(&d, 4);
	const unsigned char *msg = rd_bytes(&d, mlen);
	const unsigned char *pl = d.bad ? NULL : d.p + d.off;
	size_t plen = d.bad ? 0 : d.len - d.off;
	pend *p = pend_take(r, id);
	dobj_task *t;
	long long node;
	uint64_t cid;
	int rc;

	if (!p) { /* an answer nobody waits for (malformed, or the call went) */
		unwanted(r, from, status, pl, plen);
		return;
	}
	t = p->t;
	node = p->node;
	cid = p->cid;
	free(p);
	watch_sync(r);
	if (t->done) {
		unwanted(r, from, status, pl, plen);
		goto out;
	}
	t->routed = 0;
	if (d.bad) {
		fail_call(t, DOBJ_ERROR, 1, "cluster: a malformed answer from the object's node");
		goto out;
	}
	if (status == ST_OK && t->call_kind == DOBJ_CALL_RPC) {
		dobj_val *v = NULL;
		if ((rc = dobj__val_decode_refs(pl, plen, ref_resolve, rt, &v)) == DOBJ_EARG)
			/* It ran; its result names what this node cannot hold. */
			fail_call(t, DOBJ_EARG, 0, "cluster: the result from node %lld cannot be received "
				"here: %s", node, dobj_error_last());
		else if (rc < 0)
			fail_call(t, DOBJ_ERROR, 1, "cluster: a malformed result from the object's node: %s",
				dobj_error_last());
		else {
			t->remote_known = 1;
			dobj_task_return_value(t, v, (void (*)(void *))dobj_val_free);
		}
	} else if (status == ST_OK) {
		dobj_msg *m = NULL;
		uint64_t link = 0;
		if (msg_decode(pl, plen, 0, &m, &link) < 0)
			fail_call(t, DOBJ_ERROR, 1, "cluster: a malformed response from the object's node: %s",
				dobj_error_last());
		else if (link && dobj__route_ws_relay(r, cid, link, m) < 0) {
			dobj__route_ws_refuse(r, cid, link);
			dobj_msg_free(m);
			fail_call(t, DOBJ_ERROR, 0, "cluster: the WebSocket from node %lld cannot be "
				"served here: %s", node, dobj_error_last());
		} else {
			t->remote_known = 1;
			dobj_task_return_value(t, m, (void (*)(void *))dobj_msg_free);
		}
	} else if (status == ST_ERROR) {
		char *text = malloc(mlen + 1);
		void *err = NULL;
		if (!text) {
			fail_call(t, DOBJ_ENOMEM, 1, "out of memory");
			goto out;
		}
		memcpy(text, msg, mlen);
		text[mlen] = '\0';
		if (plen && rt->codec.error_from_val) {
			dobj_val *desc = NULL;
			if (dobj_val_decode(pl, plen, &desc) == DOBJ_OK && dobj_val_type_of(desc) == DOBJ_VAL_OBJECT)
				err = rt->codec.error_from_val(rt->codec.data, desc);
			dobj_val_free(desc);
		}
		if (code >= 0 || code < DOBJ_EDEADLOCK)
			code = DOBJ_ERROR;
		t->remote_known = 1;
		t->remote_flag = (flags & FL_REMOTE) != 0;
		t->retryable = (flags & FL_RETRYABLE) != 0;
		dobj_task_raise(t, code, text, err);
		free(text);
	} else if (status == ST_NOT_OWNER) {
		cache_drop(r, t->obj);
		resend(t, "the node it was sent to no longer owns the object");
	} else {
		fail_call(t, DOBJ_ERROR, 1, "cluster: an unknown answer from the object's node");
	}
out:
	dobj_task_unref(t);
}

typedef struct unread {
	uint64_t start;
	dobj_task *t;
} unread;

static int unread_order(const void *a, const void *b)
{
	uint64_t x = ((const unread *)a)->start, y = ((const unread *)b)->start;

	return x < y ? -1 : x > y;
}

/*
 * The calls on connection cid from stream position `from` on certainly were
 * not read by the peer: they go again (a fresh lookup), in the order they
 * were sent.  The ones before it were read: on a failed connection
 * (`failure`) they fail as retryable, it may or may not have run them;
 * else (the peer said GOAWAY) their answers are still to come.
 */
static void send_unread_again(struct dobj__route *r, uint64_t cid, uint64_t from,
	const char *why, int failure)
{
	unread *again = NULL;
	size_t i, nagain = 0, cap = 0;

	for (i = 0; i < r->tcap; i++) {
		pend **pp = &r->tab[i];
		while (*pp) {
			pend *p = *pp;
			dobj_task *t = p->t;
			if (p->cid != cid || (!failure && p->start < from)) {
				pp = &p->next;
				continue;
			}
			*pp = p->next;
			r->npend--;
			if (!t->done) {
				t->routed = 0;
				cache_drop(r, t->obj);
				if (p->start >= from) {
					if (nagain == cap) {
						size_t ncap = cap ? cap * 2 : 16;
						unread *a = realloc(again, ncap * sizeof(*a));
						if (a) {
							again = a;
							cap = ncap;
						}
					}
					if (nagain < cap) {
						again[nagain].start = p->start;
						again[nagain++].t = t;
						free(p);
						continue;
					}
					fail_call(t, DOBJ_ENOMEM, 1, "cluster: the call was not sent (%s) and "
						"cannot go again: out of memory", why);
				} else {
					fail_call(t, DOBJ_ERROR, 1, "cluster: the connection to node %lld failed "
						"after the call was sent (%s): it may or may not have run", p->node, why);
				}
			}
			dobj_task_unref(t);
			free(p);
		}
	}
	if (nagain > 1)
		qsort(again, nagain, sizeof(*again), unread_order);
	for (i = 0; i < nagain; i++) {
		resend(again[i].t, why);
		dobj_task_unref(again[i].t);
	}
	free(again);
	watch_sync(r);
}

/* A connection of ours failed: its calls go again if they were never
 * written, and fail as retryable otherwise. */
static void on_failure(struct dobj__route *r, const item *it)
{
	dobj__route_ws_conn_failed(r, it->cid);
	if (it->incoming)
		return; /* a peer's connection: no call of ours was on it */
	suspect_add(r, it->node);
	cache_drop_node(r, it->node);
	send_unread_again(r, it->cid, it->written, it->why, 1);
}

/* The node at the other end leaves (GOAWAY): it gave its objects up, so none
 * is looked for there again, and the calls it did not read go again. */
static void on_goaway(struct dobj__route *r, const item *it)
{
	cache_drop_node(r, it->node);
	send_unread_again(r, it->cid, it->written, "the node it was sent to left the cluster", 0);
}

/* ------------------------------------- the runtime: calls from other nodes */

static void answer(struct dobj__route *r, inreq *in, dobj_task *t);
static void in_done(dobj_task *t, void *data);

/* Answer a call that could not even be dispatched. */
static void answer_error(struct dobj__route *r, uint64_t cid, uint64_t id, int status,
	int code, const char *msg)
{
	buf f = { 0 };
	size_t mlen = strlen(msg);

	if (put_be(&f, 8 + 1 + 1 + 4 + 4 + mlen + 1, 4) == 0 && put_be(&f, F_RESULT, 1) == 0 &&
	    put_be(&f, id, 8) == 0 && put_be(&f, (uint64_t)status, 1) == 0 &&
	    put_be(&f, FL_REMOTE, 1) == 0 && put_be(&f, (uint32_t)code, 4) == 0 &&
	    put_be(&f, mlen, 4) == 0 && buf_put(&f, msg, mlen) == 0)
		dobj__net_send_conn(r, cid, &f);
	buf_free(&f);
}

static void on_call(struct dobj__route *r, uint64_t cid, const unsigned char *data, size_t len)
{
	dobj_rt *rt = r->rt;
	rd d = { data, len, 0, 0 };
	uint64_t id = rd_be(&d, 8);
	int kind = (int)rd_be(&d, 1), depth = (int)rd_be(&d, 1);
	size_t kl = (size_t)rd_be(&d, 2);
	const unsigned char *key = rd_bytes(&d, kl), *idb = rd_bytes(&d, 32);
	uint32_t nl = (uint32_t)rd_be(&d, 4);
	const unsigned char *name = nl == NO_NAME ? NULL : rd_bytes(&d, nl);
	size_t ml = (size_t)rd_be(&d, 2);
	const unsigned char *method = rd_bytes(&d, ml);
	const unsigned char *pl = d.bad ? NULL : d.p + d.off;
	size_t plen = d.bad ? 0 : d.len - d.off;
	dobj_ns *ns = NULL;
	dobj_obj *obj;
	dobj_task *t;
	dobj_id oid;
	void *req = NULL;
	void (*req_free)(void *) = NULL;
	inreq *in;
	int rc;

	if (d.bad || (kind != DOBJ_CALL_FETCH && kind != DOBJ_CALL_RPC) || depth < 1 ||
	    depth > DOBJ_MAX_CALL_DEPTH || (kind == DOBJ_CALL_RPC && (ml == 0 || memchr(method, 0, ml)))) {
		if (!d.bad || d.off >= 8) /* its id was read: it has an answer */
			answer_error(r, cid, id, ST_ERROR, DOBJ_EARG, "cluster: a malformed call");
		return;
	}
	if (!(ns = ns_by_key(rt, key, kl))) {
		answer_error(r, cid, id, ST_ERROR, DOBJ_ENOHANDLER,
			"cluster: the node the call reached has no such namespace bound");
		return;
	}
	if (!rt->cluster || !rt->cluster->addr[0] || rt->closing) {
		answer_error(r, cid, id, ST_NOT_OWNER, DOBJ_ESTATE, "cluster: not the owner");
		return;
	}
	memcpy(oid.bytes, idb, 32);
	if (!id_of(ns, &oid, (const char *)name, nl)) {
		answer_error(r, cid, id, ST_ERROR, DOBJ_EARG, "cluster: a malformed call (its ID is not "
			"the namespace's, or not its name's)");
		return;
	}
	if (kind == DOBJ_CALL_RPC) {
		dobj_val *v = NULL;
		/* An array of arguments; Python's keyword arguments make an object. */
		if ((rc = dobj__val_decode_refs(pl, plen, ref_resolve, rt, &v)) == DOBJ_EARG) {
			char why[600];
			snprintf(why, sizeof(why), "cluster: the RPC arguments cannot be received on node "
				"%lld: %s", rt->cluster ? rt->cluster->node_id : 0, dobj_error_last());
			answer_error(r, cid, id, ST_ERROR, DOBJ_EARG, why);
			return;
		}
		if (rc < 0 || (dobj_val_type_of(v) != DOBJ_VAL_ARRAY &&
		    (dobj_val_type_of(v) != DOBJ_VAL_OBJECT || (ns->klass.flags & DOBJ_CLASS_NATIVE)))) {
			char why[600];
			snprintf(why, sizeof(why), "cluster: malformed RPC arguments%s%s", rc < 0 ? ": " : "",
				rc < 0 ? dobj_error_last() : "");
			dobj_val_free(v);
			answer_error(r, cid, id, ST_ERROR, DOBJ_EARG, why);
			return;
		}
		req = v;
		req_free = (void (*)(void *))dobj_val_free;
	} else {
		dobj_msg *m = NULL;
		if (msg_decode(pl, plen, 1, &m, NULL) < 0 || dobj_url_check(m->url, strlen(m->url)) < 0) {
			dobj_msg_free(m);
			answer_error(r, cid, id, ST_ERROR, DOBJ_EARG, "cluster: a malformed request");
			return;
		}
		if ((ns->klass.flags & DOBJ_CLASS_NATIVE) || !rt->codec.request_from_msg) {
			req = m;
			req_free = (void (*)(void *))dobj_msg_free;
		} else {
			req = rt->codec.request_from_msg(rt->codec.data, m);
			dobj_msg_free(m);
			if (!req) {
				answer_error(r, cid, id, ST_ERROR, DOBJ_EARG, dobj_error_last());
				return;
			}
		}
	}
	in = calloc(1, sizeof(*in));
	obj = in ? dobj__obj_get(ns, &oid, (const char *)name, name ? nl : 0) : NULL;
	t = obj ? dobj__call_new(obj, (dobj_call_kind)kind, in_done, in) : NULL;
	if (obj)
		dobj__obj_unref(obj);
	if (!t || (ml && !(t->method = dobj__strndup((const char *)method, ml)))) {
		if (t) {
			t->done_fn = NULL;
			dobj_task_raise(t, DOBJ_ENOMEM, "out of memory", NULL);
			dobj_task_unref(t);
		}
		free(in);
		dobj__release_now(rt, req, req_free);
		answer_error(r, cid, id, ST_ERROR, DOBJ_ENOMEM, "out of memory");
		return;
	}
	in->rt = rt;
	in->cid = cid;
	in->id = id;
	t->route_in = 1;
	t->depth = depth;
	t->request = req;
	t->request_free = req_free;
	dobj_task_unref(t);
}

/* An incoming call finished: answer now, inside a pump, or at the next
 * drain when it finished inside the core's own loops (an abort), where the
 * codec must not run host code. */
static void in_done(dobj_task *t, void *data)
{
	inreq *in = data;
	dobj_rt *rt = in->rt;
	struct dobj__route *r = rt->route;

	if (!r) {
		free(in);
		return;
	}
	if (rt->pumping && !rt->busy) {
		answer(r, in, t);
		free(in);
		return;
	}
	dobj_task_ref(t);
	in->t = t;
	in->next = r->replies;
	r->replies = in;
	atomic_store(&r->wake, 1);
	dobj__work_ready_slow(rt);
}

static void answer(struct dobj__route *r, inreq *in, dobj_task *t)
{
	dobj_rt *rt = r->rt;
	buf f = { 0 }, pl = { 0 };
	const char *msg = "";
	char why[400];
	uint64_t ws_link = 0;
	int status = ST_OK, flags = 0, code = 0, rc = DOBJ_OK, sent = 0;

	if (t->not_owner || (rt->closing && !t->started && t->code < 0)) {
		/* Nothing ran here (a call this node's close failed before it
		 * started, too): the caller looks again and sends it to the
		 * object's next node, as once this node left. */
		status = ST_NOT_OWNER;
		msg = t->message ? t->message : "";
		code = DOBJ_ESTATE;
	} else if (rt->closing && t->code == DOBJ_ECLOSED) {
		/* Stopped by the close while it ran: what it wrote and what it
		 * called may have happened. */
		snprintf(why, sizeof(why), "cluster: node %lld closed while the call ran: it may or may "
			"not have run", rt->cluster ? rt->cluster->node_id : 0);
		status = ST_ERROR;
		code = DOBJ_ECLOSED;
		msg = why;
		flags = FL_REMOTE | FL_RETRYABLE;
	} else if (t->code == DOBJ_OK) {
		if (t->call_kind == DOBJ_CALL_RPC) {
			unsigned char *out = NULL;
			size_t len;
			if (!t->result_free)
				rc = dobj_error_set(DOBJ_EARG, "the result is a host value");
			else if ((rc = dobj__val_encode_refs(t->result, &out, &len)) >= 0 && buf_put(&pl, out, len) < 0)
				rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
			free(out);
		} else if (t->result_free || (t->result && rt->codec.to_msg)) {
			dobj_msg *m = t->result_free ? t->result : rt->codec.to_msg(rt->codec.data, t->result, 0);
			if (!m)
				rc = dobj_error_last_code() < 0 ? dobj_error_last_code() : DOBJ_ERROR;
			else if (!m->web_socket || (rc = dobj__route_ws_offer(r, in->cid, m->web_socket,
				&ws_link)) >= 0)
				rc = msg_encode(m, ws_link, &pl); /* a 101 carries its link (cluster_ws.c) */
			if (m != t->result)
				dobj_msg_free(m);
		} else {
			rc = dobj_error_set(DOBJ_EARG, "the response cannot be carried");
		}
		if (rc < 0) {
			snprintf(why, sizeof(why), "cluster: the result cannot be sent back to the caller's "
				"node: %s", dobj_error_last());
			buf_free(&pl);
			status = ST_ERROR;
			code = DOBJ_EARG;
			msg = why;
			flags = FL_REMOTE;
		}
	} else {
		status = ST_ERROR;
		code = t->code;
		msg = t->message ? t->message : "";
		flags = (dobj_task_remote(t) ? FL_REMOTE : 0) | (t->retryable ? FL_RETRYABLE : 0);
		if (t->error && rt->codec.error_to_val) {
			dobj_val *desc = rt->codec.error_to_val(rt->codec.data, t->error);
			unsigned char *out = NULL;
			size_t len;
			if (desc && dobj_val_encode(desc, &out, &len) == DOBJ_OK && buf_put(&pl, out, len) < 0)
				pl.len = 0;
			free(out);
			dobj_val_free(desc);
		}
	}
	{
		size_t mlen = strlen(msg);
		if (put_be(&f, 8 + 1 + 1 + 4 + 4 + mlen + pl.len + 1, 4) == 0 &&
		    put_be(&f, F_RESULT, 1) == 0 && put_be(&f, in->id, 8) == 0 &&
		    put_be(&f, (uint64_t)status, 1) == 0 && put_be(&f, (uint64_t)flags, 1) == 0 &&
		    put_be(&f, (uint32_t)code, 4) == 0 && put_be(&f, mlen, 4) == 0 &&
		    buf_put(&f, msg, mlen) == 0 && buf_put(&f, pl.p, pl.len) == 0) {
			/* Not sent when the connection is gone (its failure may have
			 * been handled already: then nothing else tells a 101's
			 * socket, dobj__route_ws_start must). */
			sent = dobj__net_send_conn(r, in->cid, &f);
		}
	}
	if (ws_link) /* after the 101 on the connection: then the socket's frames */
		dobj__route_ws_start(r, in->cid, ws_link, sent && status == ST_OK);
	buf_free(&f);
	buf_free(&pl);
}

/* ------------------------------------------------------------- the drain */

int dobj__route_wanted(dobj_rt *rt)
{
	return rt->route && atomic_load(&rt->route->wake);
}

void dobj__route_drain(dobj_rt *rt)
{
	struct dobj__route *r = rt->route;
	item *it;

	if (!r || !atomic_load(&r->wake))
		return;
	atomic_store(&r->wake, 0);
	pthread_mutex_lock(&r->mu);
	it = r->in_head;
	r->in_head = r->in_tail = NULL;
	r->rt_kicked = 0;
	pthread_mutex_unlock(&r->mu);
	while (it) {
		item *next = it->next;
		/* Closing, a call still gets its answer (on_call: not the owner). */
		if (rt->route == r && (!rt->closing || it->type == F_CALL)) {
			if (it->type == F_RESULT)
				on_result(r, it->cid, it->data, it->len);
			else if (it->type == F_CALL)
				on_call(r, it->cid, it->data, it->len);
			else if (it->type == F_WS_OUT || it->type == F_WS_IN)
				dobj__route_ws_frame(r, it->cid, it->type, it->data, it->len);
			else if (it->type == F_GOAWAY)
				on_goaway(r, it);
			else
				on_failure(r, it);
		}
		free(it->data);
		free(it);
		it = next;
	}
	while (r->replies && rt->route == r) {
		/* Oldest first. */
		inreq **pp = &r->replies, *in;
		while ((*pp)->next)
			pp = &(*pp)->next;
		in = *pp;
		*pp = NULL;
		answer(r, in, in->t);
		dobj_task_unref(in->t);
		free(in);
	}
}

/* ------------------------------------------------------------- start, stop */

/* How long a leaving node waits for its sockets to take its last answers. */
#define LEAVE_FLUSH_MS 500

/*
 * The node leaves (its objects released, dobj__cluster_close): every call
 * it holds is answered before its connections close (dobj__route_stop).  A
 * call that did not start here (received but not read yet, or queued for
 * its object when the close failed it) is answered "not the owner": its
 * caller looks again, finds the object free and runs it elsewhere, instead
 * of hearing of a cut connection that "may or may not have run" it.  A call
 * that finished (its write confirmed while closing) gets its result, and
 * one the close stopped while it ran says so, as retryable.
 */
void dobj__route_leave(dobj_rt *rt)
{
	struct dobj__route *r = rt->route;
	double until;

	if (!r || !r->started)
		return;
	dobj__net_goaway(r);
	atomic_store(&r->wake, 1);
	dobj__route_drain(rt);
	dobj__route_flush(rt);
	until = dobj__mono_ms() + LEAVE_FLUSH_MS;
	while (dobj__net_unsent(r) && dobj__mono_ms() < until)
		poll(NULL, 0, 1);
	dobj__net_linger(r, until);
}

int dobj__route_start(dobj_rt *rt, struct dobj__cluster *cl)
{
	struct dobj__route *r;
	struct epoll_event ev;
	int rc;

	if (rt->route)
		return DOBJ_OK;
	if ((rc = dobj_rt_fd(rt)) < 0)
		return rc;
	r = calloc(1, sizeof(*r));
	if (!r)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	r->rt = rt;
	r->rtfd = rt->efd; /* its "now" half (loop.c) */
	r->lfd = r->efd = r->ep = -1;
	r->ping_ms = fmax(20, cl->ttl_ms / 6);
	r->dead_ms = cl->ttl_ms;
	r->idle_out_ms = IDLE_OUT_TTLS * cl->ttl_ms;
	r->idle_in_ms = IDLE_IN_TTLS * cl->ttl_ms;
	r->watch = (dobj__watch){ .rt = rt, .ms = fmin(1000, fmax(10, cl->call_timeout_ms / 4)),
		.busy = calls_out, .owner = r, .fired = watch_fired };
	pthread_mutex_init(&r->mu, NULL);
	atomic_init(&r->wake, 0);
	rt->route = r;
	if (cl->addr[0]) {
		char host[256], port[16], buf[320];
		struct addrinfo hints, *ai = NULL;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int one = 1, g;
		if ((rc = dobj__route_split_addr(cl->addr, host, sizeof(host), port, sizeof(port))) < 0)
			goto fail;
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICSERV | AI_PASSIVE;
		if ((g = getaddrinfo(host, port, &hints, &ai)) != 0 || !ai) {
			rc = dobj_error_set(DOBJ_EARG, "cluster: node_addr %.100s: %s", cl->addr, gai_strerror(g));
			goto fail;
		}
		r->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (r->lfd < 0 || setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    bind(r->lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(r->lfd, 128) < 0 ||
		    getsockname(r->lfd, (struct sockaddr *)&ss, &sl) < 0) {
			rc = dobj_error_set(DOBJ_ERROR, "cluster: cannot listen on %.100s: %s", cl->addr,
				strerror(errno));
			freeaddrinfo(ai);
			goto fail;
		}
		freeaddrinfo(ai);
		if (!strcmp(port, "0")) {
			/* The port the system chose is the one other nodes need. */
			char *a;
			int p = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
				: ntohs(((struct sockaddr_in *)&ss)->sin_port);
			snprintf(buf, sizeof(buf), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, p);
			if (!(a = strdup(buf))) {
				rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
				goto fail;
			}
			free(cl->addr);
			cl->addr = a;
		}
	}
	r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	r->ep = epoll_create1(EPOLL_CLOEXEC);
	if (r->efd < 0 || r->ep < 0) {
		rc = dobj_error_set(DOBJ_ERROR, "cluster: %s", strerror(errno));
		goto fail;
	}
	ev.events = EPOLLIN;
	ev.data.ptr = &r->efd;
	epoll_ctl(r->ep, EPOLL_CTL_ADD, r->efd, &ev);
	if (r->lfd >= 0) {
		ev.events = EPOLLIN;
		ev.data.ptr = &r->lfd;
		epoll_ctl(r->ep, EPOLL_CTL_ADD, r->lfd, &ev);
	}
	if (dobj__thread_start(&r->thread, dobj__net_main, r) != 0) {
		rc = dobj_error_set(DOBJ_ERROR, "cluster: cannot start the network thread");
		goto fail;
	}
	r->started = 1;
	return DOBJ_OK;
fail:
	dobj__route_stop(rt);
	return rc;
}

void dobj__route_stop(dobj_rt *rt)
{
	struct dobj__route *r = rt->route;
	conn *c;
	item *it;
	size_t i;

	if (!r)
		return;
	dobj__watch_stop(&r->watch);
	if (r->started) {
		uint64_t one = 1;
		ssize_t n;
		pthread_mutex_lock(&r->mu);
		r->stop = 1;
		pthread_mutex_unlock(&r->mu);
		n = write(r->efd, &one, sizeof(one));
		(void)n;
		pthread_join(r->thread, NULL);
	}
	dobj__route_ws_stop(r);
	rt->route = NULL;
	while ((c = r->conns) || (c = r->grave)) {
		if (c == r->conns)
			r->conns = c->next;
		else
			r->grave = c->next;
		dobj__net_conn_free(c);
	}
	while ((it = r->in_head)) {
		r->in_head = it->next;
		free(it->data);
		free(it);
	}
	for (i = 0; i < r->tcap; i++)
		while (r->tab[i]) {
			pend *p = r->tab[i];
			r->tab[i] = p->next;
			if (!p->t->done)
				fail_call(p->t, DOBJ_ECLOSED, 0, "the runtime is closed");
			dobj_task_unref(p->t);
			free(p);
		}
	free(r->tab);
	while (r->replies) {
		inreq *in = r->replies;
		r->replies = in->next;
		dobj_task_unref(in->t);
		free(in);
	}
	cache_clear(r);
	dobj__idmap_free(&r->cache);
	if (r->lfd >= 0)
		close(r->lfd);
	if (r->efd >= 0)
		close(r->efd);
	if (r->ep >= 0)
		close(r->ep);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* ------------------------------------------------------------- public API */

int dobj_rt_set_route_codec(dobj_rt *rt, const dobj_route_codec *codec)
{
	if (!codec || codec->version != DOBJ_ROUTE_CODEC_VERSION)
		return dobj_error_set(DOBJ_EARG, "route codec: unknown version");
	rt->codec = *codec;
	return DOBJ_OK;
}

int dobj_task_retryable(const dobj_task *t)
{
	return t->done && t->code != DOBJ_OK && t->retryable;
}

const char *dobj_rt_cluster_addr(const dobj_rt *rt)
{
	return rt->cluster && rt->cluster->addr[0] ? rt->cluster->addr : NULL;
}
