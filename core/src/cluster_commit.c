/*
 * The commit pipeline of a cluster node: every append to PostgreSQL runs on
 * the node's committer thread, never on the runtime's.
 *
 * When a step that wrote ends, the runtime commits locally, captures the
 * pages (cluster_wal.c) and hands them over with the object's epoch and
 * next seq; it goes on serving every other object.  The step's results and
 * WebSocket output wait in the append's hold (the output gate) until
 * PostgreSQL confirmed it and the node's own lease view still holds; the
 * confirmation reaches the runtime through its fd (dobj__rt_post), like any
 * other event.  A refused (fenced) or failed append resets its object as a
 * failed local commit does, and fails what waited on it.
 *
 * Group commit: the appends of one round of ready tasks are handed over
 * together when it ends (dobj__cluster_turn_end), and a committer takes
 * everything queued and appends it in one statement (one round trip, one
 * transaction, one fsync of PostgreSQL's log).  Each row is fenced by its own object's epoch, with the owner row
 * locked FOR SHARE; the statement returns which rows it accepted, so a
 * fenced object fails alone and the others' rows commit.  A node runs up to
 * DOBJ__COMMITTERS committers, each on its own connection: what is queued
 * while one waits for PostgreSQL goes at once on the next idle one, and
 * PostgreSQL flushes the concurrent transactions' log together.  The
 * first idle committer is always the one woken, so a node with little to
 * write keeps one connection busy and opens no other.
 *
 * Order: one object's appends are accepted in seq order or not at all.  An
 * incarnation's jobs are out on one committer at a time (the next waits
 * in the queue until the previous came back), and once one of its appends
 * failed, its later ones are failed without being sent (a gap in the log
 * would rebuild a wrong file).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "cluster_append.h"

/* A batch's bounds: PostgreSQL takes up to 1 GiB in one parameter. */
#define BATCH_JOBS 1024
#define BATCH_BYTES (64u << 20)

/* Checkpoint the -wal file into the database once it holds this much. */
#define WAL_CHECKPOINT_BYTES (4 << 20)


/* The committer reads the tokens under the lock while it runs; once it
 * stopped (cl->threads 0), the runtime's thread is alone. */
static void cinc_unref(struct dobj__cluster *cl, dobj__cinc *inc)
{
	int threads = cl && cl->threads;

	if (!inc)
		return;
	if (threads)
		pthread_mutex_lock(&cl->mu);
	if (--inc->refs == 0)
		free(inc);
	if (threads)
		pthread_mutex_unlock(&cl->mu);
}

static void job_free(struct dobj__cluster *cl, dobj__cjob *j)
{
	cinc_unref(cl, j->inc);
	free(j->ns);
	free(j->rec);
	free(j->name);
	free(j);
}

/* ------------------------------------------------------------------ holds */

static void hold_task(dobj__hold *h, dobj_task *t)
{
	t->dnext = NULL;
	if (h->tail)
		h->tail->dnext = t;
	else
		h->head = t;
	h->tail = t;
}

static int hold_ws(dobj__hold *h, struct dobj__ws_held *w)
{
	if (h->nws == h->capws) {
		size_t cap = h->capws ? 2 * h->capws : 4;
		struct dobj__ws_held **n = realloc(h->ws, cap * sizeof(*n));
		if (!n)
			return 0;
		h->ws = n;
		h->capws = cap;
	}
	h->ws[h->nws++] = w;
	return 1;
}

/* Move everything of `from` to the end of `to`. */
static void hold_move(dobj__hold *to, dobj__hold *from)
{
	size_t i;

	if (from->head) {
		if (to->tail)
			to->tail->dnext = from->head;
		else
			to->head = from->head;
		to->tail = from->tail;
	}
	from->head = from->tail = NULL;
	for (i = 0; i < from->nws; i++)
		if (!hold_ws(to, from->ws[i]))
			dobj__ws_held_release(from->ws[i], 0);
	from->nws = 0;
}

/* Deliver (code 1: as they are) or fail (code < 0) what a hold kept. */
static void hold_release(dobj__hold *h, int code, const char *message)
{
	while (h->head) {
		dobj_task *t = h->head;
		h->head = t->dnext;
		if (!h->head)
			h->tail = NULL;
		dobj__held_deliver(t, code, message);
	}
	for (size_t i = 0; i < h->nws; i++)
		dobj__ws_held_release(h->ws[i], code > 0);
	free(h->ws);
	h->ws = NULL;
	h->nws = h->capws = 0;
}

static int hold_empty(const dobj__hold *h)
{
	return !h->head && !h->nws;
}

/* ---------------------------------------------------- the runtime's side */

/* While appends are out or results wait for the lease, cl->watch keeps
 * dobj_rt_run waiting (the confirmation itself comes through the fd). */
static int commit_busy(void *owner)
{
	struct dobj__cluster *cl = owner;

	return cl->jobs_out > 0 || !hold_empty(&cl->gate);
}

void dobj__commit_watch_init(struct dobj__cluster *cl)
{
	cl->watch = (dobj__watch){ .rt = cl->rt, .busy = commit_busy, .owner = cl };
}

static void watch_update(struct dobj__cluster *cl)
{
	dobj__watch_update(&cl->watch);
}


void dobj__lease_kick(struct dobj__cluster *cl)
{
	pthread_mutex_lock(&cl->mu);
	cl->renew_now = 1;
	pthread_cond_signal(&cl->lwake);
	pthread_mutex_unlock(&cl->mu);
}

/* Results wait for a renewal of the lease (the view lapsed). */
static void gate(struct dobj__cluster *cl, dobj__hold *from, dobj_task *t)
{
	int first = hold_empty(&cl->gate);

	if (from)
		hold_move(&cl->gate, from);
	if (t)
		hold_task(&cl->gate, t);
	if (first) {
		pthread_mutex_lock(&cl->mu);
		cl->gate_gen = cl->l_gen;
		cl->renew_now = 1;
		pthread_cond_signal(&cl->lwake);
		pthread_mutex_unlock(&cl->mu);
	}
	watch_update(cl);
}

static int lease_holds(const struct dobj__cluster *cl)
{
	return dobj__boot_ms() < cl->lease_view;
}

int dobj__cluster_defer(dobj_task *t)
{
	struct dobj__cluster *cl = t->rt->cluster;
	dobj_obj *obj = t->obj;

	if (!obj || !obj->cluster)
		return 0;
	if (obj->cluster->last) {
		hold_task(&obj->cluster->last->hold, t);
		return 1;
	}
	if (lease_holds(cl) && hold_empty(&cl->gate))
		return 0;
	gate(cl, NULL, t);
	return 1;
}

int dobj__cluster_defer_ws(dobj_obj *obj, struct dobj__ws_held *h)
{
	struct dobj__cluster *cl = obj->ns->rt->cluster;
	dobj__hold one = { 0 };

	if (!obj->cluster || obj->dead)
		return 0;
	if (obj->cluster->last)
		return hold_ws(&obj->cluster->last->hold, h);
	if (lease_holds(cl) && hold_empty(&cl->gate))
		return 0;
	if (!hold_ws(&one, h))
		return 0;
	gate(cl, &one, NULL);
	free(one.ws);
	return 1;
}

/* Wake the first idle committer, if any and none woken is on its way to
 * the queue (under mu): that one takes everything queued by then in one
 * batch, so jobs queued in a burst (one turn of the runtime's loop, or
 * while the machine is busy) share one statement and one wake-up instead
 * of waking a committer each. */
static void wake(struct dobj__cluster *cl, dobj__committer *c)
{
	c->idle = 0;
	c->woken = 1;
	cl->nwoken++;
	pthread_cond_signal(&c->wake);
}

/* An idle committer that holds a connection goes first; one that could not
 * connect lately while others could is passed over while they are there
 * (see leave_to_others). */
static void wake_one(struct dobj__cluster *cl)
{
	int i, connected = 0;
	double now;

	if (cl->nwoken > 0)
		return;
	for (i = 0; i < cl->ncom; i++) {
		if (cl->com[i].connected && cl->com[i].idle) {
			wake(cl, &cl->com[i]);
			return;
		}
		connected |= cl->com[i].connected;
	}
	now = connected ? dobj__mono_ms() : 0;
	for (i = 0; i < cl->ncom; i++)
		if (cl->com[i].idle && (!connected || cl->com[i].rest_until <= now)) {
			wake(cl, &cl->com[i]);
			return;
		}
}

static int inline_take(struct dobj__cluster *cl, dobj__cjob *j);
static void inline_receive(struct dobj__cluster *cl);

/* Hand the jobs from..to (linked) to the committers. */
static void queue_list(struct dobj__cluster *cl, dobj__cjob *from, dobj__cjob *to)
{
	pthread_mutex_lock(&cl->mu);
	to->next = NULL;
	if (cl->q_tail)
		cl->q_tail->next = from;
	else
		cl->q_head = from;
	cl->q_tail = to;
	wake_one(cl);
	pthread_mutex_unlock(&cl->mu);
}

/*
 * The appends of one round of ready tasks go together when it ends: a lone one out on the
 * runtime's connection if it is free, more than one to a committer as one
 * batch (one statement, one transaction: group commit).  Handed over one by
 * one as each step ended, a woken committer took the first alone and the
 * next ones went on other connections: ~1.1 rows per transaction with 16
 * callers over 3 nodes, PostgreSQL's cost per transaction paid per row.
 */
void dobj__cluster_turn_end(struct dobj__cluster *cl)
{
	dobj__cjob *head = cl->t_head, *tail = cl->t_tail;

	if (!head)
		return;
	cl->t_head = cl->t_tail = NULL;
	if (head == tail && inline_take(cl, head))
		return;
	queue_list(cl, head, tail);
}

static void queue(struct dobj__cluster *cl, dobj__cjob *j)
{
	/* Behind what this round appended (a release goes after its appends). */
	dobj__cluster_turn_end(cl);
	queue_list(cl, j, j);
}

int dobj__cluster_commit(dobj_obj *obj, void *db, int64_t alarm, long long wal_frames)
{
	struct dobj__cluster *cl = obj->ns->rt->cluster;
	struct dobj__cluster_obj *co = obj->cluster;
	unsigned char *rec = NULL;
	dobj__wal_pos next;
	dobj__cjob *j;
	size_t len;
	char *wal;
	int rc;

	if (!cl || !co)
		return DOBJ_OK;
	if (!cl->threads)
		return dobj_error_set(DOBJ_ECLOSED, "cluster: the node is closing; the write was not "
			"acknowledged");
	rc = dobj__wal_capture(&co->wal_fd, NULL, &co->wal, wal_frames, &rec, &len, &next);
	if (rc == DOBJ__WAL_NEED_PATH) {
		if (!(wal = dobj__cluster_path(obj, "-wal")))
			return DOBJ_ENOMEM;
		rc = dobj__wal_capture(&co->wal_fd, wal, &co->wal, wal_frames, &rec, &len, &next);
		free(wal);
	}
	if (rc < 0 || len == 0)
		return rc; /* a step that only read: no round trip */
	/* A bytea holds up to 1 GiB; the appended record takes at most 4
	 * bytes more a page (of at least 512 bytes) than the capture. */
	if (len + 4 * (len / 516) > 0x3fffffff) {
		free(rec);
		return dobj_error_set(DOBJ_ERROR, "cluster: one commit changed more than 1 GiB");
	}
	if (!co->inc) {
		if (!(co->inc = calloc(1, sizeof(*co->inc)))) {
			free(rec);
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		}
		co->inc->refs = 1;
	}
	j = calloc(1, sizeof(*j));
	if (!j || !(j->ns = dobj__strndup(obj->ns->unique_key, obj->ns->unique_key_len)) ||
	    (obj->name && !(j->name = dobj__strndup(obj->name, obj->name_len)))) {
		if (j)
			job_free(cl, j);
		free(rec);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	/* The pages this incarnation appended before go as their changes
	 * (cluster_record.c); the last step that can fail. */
	rc = dobj__rec_changes(cl->pages, &co->pages, rec, len, &j->rec, &j->len);
	free(rec);
	if (rc < 0) {
		job_free(cl, j);
		return rc;
	}
	j->kind = JOB_APPEND;
	j->ns_len = obj->ns->unique_key_len;
	memcpy(j->id, obj->id.bytes, 32);
	j->seq = ++co->seq;
	j->epoch = co->epoch;
	j->node = cl->node_id;
	j->alarm = alarm == co->alarm ? -1 : (long long)alarm;
	j->name_len = obj->name_len;
	pthread_mutex_lock(&cl->mu);
	co->inc->refs++;
	pthread_mutex_unlock(&cl->mu);
	j->inc = co->inc;
	j->obj = obj;
	obj->refs++;
	/* The next capture starts where this one ended (the pages are copied:
	 * the file may be checkpointed at once). */
	co->alarm = alarm;
	co->wal = next;
	co->last = j;
	if (next.off >= WAL_CHECKPOINT_BYTES &&
	    sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL) == SQLITE_OK)
		co->wal.off = 0;
	cl->jobs_out++;
	if (cl->rt->in_round) {
		j->next = NULL;
		if (cl->t_tail)
			cl->t_tail->next = j;
		else
			cl->t_head = j;
		cl->t_tail = j;
	} else if (!inline_take(cl, j)) {
		queue(cl, j);
	}
	watch_update(cl);
	return DOBJ_OK;
}

/* Queue the release of claim (epoch, node) of ns's object id, behind the
 * appends of incarnation `inc` (taken over; may be NULL).  Best effort. */
static void queue_release(struct dobj__cluster *cl, dobj_ns *ns, const dobj_id *id,
	long long epoch, long long node, dobj__cinc *inc, int retry)
{
	dobj__cjob *j = calloc(1, sizeof(*j));

	if (!j || !(j->ns = dobj__strndup(ns->unique_key, ns->unique_key_len))) {
		free(j);
		cinc_unref(cl, inc);
		return;
	}
	j->kind = JOB_RELEASE;
	j->ns_len = ns->unique_key_len;
	memcpy(j->id, id->bytes, 32);
	j->epoch = epoch;
	j->node = node;
	j->inc = inc; /* the incarnation's token: the release goes after its appends */
	j->retry = retry;
	queue(cl, j);
}

void dobj__cluster_queue_release(struct dobj__cluster *cl, dobj_obj *obj,
	struct dobj__cluster_obj *co)
{
	/* An object whose accepted WebSockets stay registered hibernates here:
	 * their events arrive on this node, so it stays this node's; its claim
	 * goes back when the last socket leaves (dobj__cluster_give_back). */
	if (cl && cl->threads && !cl->closing) {
		/* Either way, the release goes behind the incarnation's appends
		 * (its token goes with the claim). */
		if (!dobj__ws_hold_claim(obj->ns, &obj->id, co->epoch, cl->node_id, co->inc))
			queue_release(cl, obj->ns, &obj->id, co->epoch, cl->node_id, co->inc, 0);
		co->inc = NULL;
	}
	cinc_unref(cl, co->inc);
	if (co->wal_fd >= 0)
		close(co->wal_fd);
	dobj__page_cache_free(co->pages);
	free(co);
}

void dobj__cluster_give_back(dobj_ns *ns, const dobj_id *id, long long epoch, long long node,
	dobj__cinc *inc)
{
	struct dobj__cluster *cl = ns->rt->cluster;
	dobj_obj *obj = dobj__idmap_get(&ns->objs, id);

	/* Woken by the close, the object is active again under a claim of its
	 * own (a later epoch), which it releases when it goes to sleep. */
	if (!cl || !cl->threads || cl->closing || (obj && obj->cluster)) {
		cinc_unref(cl, inc);
		return;
	}
	/* Nothing releases it later: tried again if PostgreSQL is away now
	 * (the close could not wake the object for the same reason).  Behind
	 * the appends of the incarnation that hibernated (its token): a
	 * release that overtook them would fence them. */
	queue_release(cl, ns, id, epoch, node, inc, 3);
}

void dobj__cluster_inc_drop(dobj_rt *rt, dobj__cinc *inc)
{
	if (inc)
		cinc_unref(rt->cluster, inc);
}

/* An append came back: deliver or fail what waited on it. */
static void finish_job(struct dobj__cluster *cl, dobj__cjob *j)
{
	dobj_obj *obj = j->obj;

	cl->jobs_out--;
	if (obj->cluster && obj->cluster->last == j)
		obj->cluster->last = NULL;
	if (j->rc >= 0 && j->node != cl->node_id) {
		/* Confirmed, but this node lost its lease since: another node may
		 * serve the object now, so nothing of the old node's is released. */
		j->rc = DOBJ_EABORTED;
		snprintf(j->msg, sizeof(j->msg), "cluster: this node's lease lapsed before the write "
			"was acknowledged; another node may own the object now");
		j->fenced = 1;
	}
	if (j->rc < 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "storage commit failed, the object was reset: %s", j->msg);
		if (!obj->dead && obj->cluster && obj->cluster->epoch == j->epoch) {
			dobj__abort(obj, DOBJ_EABORTED, msg);
			if (j->fenced) /* its sockets go too: the object lives elsewhere */
				dobj__ws_drop(obj->ns, &obj->id, DOBJ__WS_LOST_CODE, DOBJ__WS_LOST_REASON);
		}
		hold_release(&j->hold, DOBJ_EABORTED, msg);
	} else if (lease_holds(cl) && hold_empty(&cl->gate)) {
		hold_release(&j->hold, 1, NULL);
	} else {
		gate(cl, &j->hold, NULL);
		free(j->hold.ws);
	}
	if (j->rc >= 0)
		dobj__snap_confirmed(cl, obj, j->seq, j->epoch, j->sum, j->len);
	dobj__obj_unref(obj);
	job_free(cl, j);
}

/* What the lease keeper learnt: a lost lease resets the node's objects;
 * results waiting for the lease go when it holds again. */
static void lease_update(dobj_rt *rt, struct dobj__cluster *cl)
{
	unsigned long gen;
	int ok, lost;
	long long node;
	double view;

	char err[300];

	pthread_mutex_lock(&cl->mu);
	gen = cl->l_gen;
	ok = cl->l_ok;
	lost = cl->l_lost;
	cl->l_lost = 0;
	node = cl->l_node;
	view = cl->l_view;
	snprintf(err, sizeof(err), "%s", cl->l_err);
	pthread_mutex_unlock(&cl->mu);

	if (ok) {
		dobj__cjob *again;
		cl->unrenewed_logged = cl->cut_off = 0;
		pthread_mutex_lock(&cl->mu);
		again = cl->r_retry;
		cl->r_retry = NULL;
		pthread_mutex_unlock(&cl->mu);
		while (again) {
			dobj__cjob *j = again;
			again = j->next;
			queue(cl, j);
		}
	}
	if (lost) {
		const char *why = "cluster: this node's lease lapsed and another node may own the "
			"object now; the object was reset";
		long long old = cl->node_id;
		cl->node_id = node;
		cl->lease_view = view;
		dobj__cluster_abort_all(rt, why);
		dobj__ws_drop_all(rt, DOBJ__WS_LOST_CODE, DOBJ__WS_LOST_REASON);
		hold_release(&cl->gate, DOBJ_EABORTED, why);
		if (node)
			dobj__cluster_log(rt, old, "cluster: node %lld lost its lease (the process was paused "
				"or cut off past it); its objects were reset, and it joined again as node %lld",
				old, node);
		else
			dobj__cluster_log(rt, old, "cluster: node %lld lost its lease (the process was paused "
				"or cut off past it); its objects were reset; joining again failed: %s", old, err);
	} else if (node != cl->node_id) {
		/* Joined again after a refusal it could not join right after. */
		cl->node_id = node;
		cl->lease_view = view;
	} else if (view > cl->lease_view) {
		cl->lease_view = view;
	}
	if (!ok && !lost && !cl->cut_off && cl->node_id &&
	    dobj__boot_ms() >= cl->lease_view + 0.2 * cl->ttl_ms + cl->grace_ms) {
		/* No renewal confirmed for TTL + grace (PostgreSQL away, or this
		 * node cut off from it): another node may have claimed its
		 * objects, so they are reset and their sockets closed now rather
		 * than left open on a node that drops what they send. */
		char msg[600];
		snprintf(msg, sizeof(msg), "cluster: this node could not renew its lease for its time "
			"to live and the grace period, so another node may own the object; the object was "
			"reset (%s)", err);
		size_t objs, socks;
		cl->cut_off = 1;
		objs = dobj__cluster_abort_all(rt, msg);
		socks = dobj__ws_drop_all(rt, DOBJ__WS_LOST_CODE, DOBJ__WS_LOST_REASON);
		/* A node that served nothing (a pure client) lost nothing: no line. */
		if (objs || socks) {
			dobj__cluster_log(rt, cl->node_id, "cluster: node %lld could not renew its lease "
				"for TTL + grace; %zu of its objects were reset and %zu WebSockets closed (%s)",
				cl->node_id, objs, socks, err);
			cl->unrenewed_logged = 1;
		}
		hold_release(&cl->gate, DOBJ_EABORTED, msg);
	}
	if (!hold_empty(&cl->gate)) {
		if (lease_holds(cl)) {
			hold_release(&cl->gate, 1, NULL);
		} else if (gen != cl->gate_gen && !ok) {
			char msg[600];
			snprintf(msg, sizeof(msg), "cluster: this node could not renew its lease, so it "
				"cannot tell whether another node owns the object; the object was reset (%s)",
				err);
			/* Once until a renewal succeeds, and only when it reset something. */
			if (dobj__cluster_abort_all(rt, msg) && !cl->unrenewed_logged) {
				dobj__cluster_log(rt, cl->node_id, "cluster: node %lld could not renew its lease "
					"in time; its objects were reset (%s)", cl->node_id, err);
				cl->unrenewed_logged = 1;
			}
			hold_release(&cl->gate, DOBJ_EABORTED, msg);
		} else if (gen != cl->gate_gen) {
			/* Renewed, but the view lapsed again already: once more. */
			pthread_mutex_lock(&cl->mu);
			cl->gate_gen = cl->l_gen;
			cl->renew_now = 1;
			pthread_cond_signal(&cl->lwake);
			pthread_mutex_unlock(&cl->mu);
		}
	}
}

/* The runtime's thread, when a thread posted (dobj__rt_post). */
static void drain(dobj_rt *rt, void *data)
{
	struct dobj__cluster *cl = data;
	dobj__cjob *done, *j;
	dobj__due *due;

	pthread_mutex_lock(&cl->mu);
	done = cl->d_head;
	cl->d_head = cl->d_tail = NULL;
	due = cl->due;
	cl->due = NULL;
	inline_receive(cl);
	pthread_mutex_unlock(&cl->mu);
	lease_update(rt, cl);
	while ((j = done)) {
		done = j->next;
		finish_job(cl, j);
	}
	if (due)
		dobj__due_track(rt, due);
	watch_update(cl);
}

/* ------------------------------------------------------------ the committer */

/* Hand a finished job to the runtime's side (the done list, drained on the
 * runtime's thread).  Under cl->mu. */
static void done_push(struct dobj__cluster *cl, dobj__cjob *j)
{
	j->next = NULL;
	if (cl->d_tail)
		cl->d_tail->next = j;
	else
		cl->d_head = j;
	cl->d_tail = j;
}

/* An append came back from PostgreSQL with its verdict (under mu): its
 * incarnation may send the next one, or, if it failed, none after it. */
static void job_back(dobj__cjob *j)
{
	j->inc->out--;
	if (j->rc < 0)
		j->inc->failed = 1;
}

/* ------------------------------------------------------- inline appends */

/*
 * A lone append goes out on the runtime thread's own connection, straight
 * from the step that wrote, and its answer comes back through the runtime's
 * fd: the socket is in the fd's epoll set while the statement is out, and
 * every drain (dobj__rt_drain) reads what arrived.  No thread in between.
 *
 * Why: through a committer, each commit costs two wake-ups of a sleeping
 * thread (the runtime wakes the committer, the committer's answer wakes the
 * runtime).  On a two-core VM that was most of the node's CPU per
 * increment (perf: ~100 us, a third of it the scheduler, cond_signal and
 * eventfd_write), with one object about half of PostgreSQL's own time.
 * The committers still carry everything else: batches (group commit),
 * appends that change the alarm, big records, and whatever comes while the
 * inline one is out.
 *
 * Order is kept as the committers keep it: the runtime takes the job as a
 * committer would, under mu, only when nothing is queued and its
 * incarnation has nothing out, and what queues behind it is passed over
 * until it is back.  The connection is made and prepared on a committer
 * (connecting waits) and handed over under mu; a broken or late one is
 * dropped, and another asked for at most once a second.
 */

/* Bigger records go through a committer: libpq copies the record into its
 * buffer on the calling thread, and sends it in parts as the socket takes
 * them. */
#define INLINE_MAX_BYTES (1u << 20)

/* The runtime's thread: ask a committer for a connection (one at a time,
 * at most once a second). */
static void inline_ask(struct dobj__cluster *cl)
{
	double now = dobj__boot_ms();

	if (now < cl->inl.ask_after)
		return;
	cl->inl.ask_after = now + 1000;
	pthread_mutex_lock(&cl->mu);
	if (!cl->inl.asked && !cl->inl.handed) {
		cl->inl.asked = 1;
		wake_one(cl);
	}
	pthread_mutex_unlock(&cl->mu);
}

/* A committer asked for one: connect and prepare, then hand it over. */
static void inline_connect(dobj__committer *me)
{
	struct dobj__cluster *cl = me->cl;
	dobj__pg p;

	memset(&p, 0, sizeof(p));
	p.url = me->pg.url;
	p.timeout_ms = me->pg.timeout_ms;
	p.role = "runtime";
	if (dobj__pg_prepare(&p, DOBJ__SLOT_APPEND_ONE, dobj__append_one_sql, 7) < 0) {
		dobj__pg_drop(&p);
		return;
	}
	pthread_mutex_lock(&cl->mu);
	if (!cl->stop && !cl->inl.handed) {
		cl->inl.handed = p.conn;
		cl->inl.handed_prepared = p.prepared;
		p.conn = NULL;
	}
	pthread_mutex_unlock(&cl->mu);
	dobj__pg_drop(&p);
	dobj__rt_post(cl->rt);
}

/* The runtime's thread (in drain, under mu): take a connection handed over. */
static void inline_receive(struct dobj__cluster *cl)
{
	PGconn *c = cl->inl.handed;

	if (!c)
		return;
	cl->inl.handed = NULL;
	if (cl->inl.pg.conn || cl->closing || cl->stop) {
		PQfinish(c);
		return;
	}
	cl->inl.pg.conn = c;
	cl->inl.pg.prepared = cl->inl.handed_prepared;
}

static int inline_watch(struct dobj__cluster *cl, int want_write)
{
	dobj__inline_pg *in = &cl->inl;
	struct epoll_event ev;
	int fd = PQsocket(in->pg.conn);

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN | (want_write ? EPOLLOUT : 0);
	ev.data.fd = fd;
	if (in->fd >= 0 && in->want_write == want_write)
		return 0;
	if (epoll_ctl(cl->rt->fd, in->fd < 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) < 0)
		return -1;
	in->fd = fd;
	in->want_write = want_write;
	return 0;
}

static void inline_unwatch(struct dobj__cluster *cl)
{
	dobj__inline_pg *in = &cl->inl;

	if (in->fd >= 0)
		epoll_ctl(cl->rt->fd, EPOLL_CTL_DEL, in->fd, NULL);
	in->fd = -1;
}

/* Give the job back to the committers, first in the queue (what queued
 * behind it is its incarnation's later appends, or others'): it did not
 * run, or if it did, its repeat is refused as a duplicate, and the row
 * found there is its own (own_rows): acknowledged, never applied twice. */
static void inline_requeue(struct dobj__cluster *cl, dobj__cjob *j)
{
	pthread_mutex_lock(&cl->mu);
	j->inc->out--;
	j->next = cl->q_head;
	cl->q_head = j;
	if (!cl->q_tail)
		cl->q_tail = j;
	wake_one(cl);
	pthread_mutex_unlock(&cl->mu);
}

/* The job out on the runtime's connection is over: its outcome (rc, r), or
 * back to the committers when the connection broke (`requeue`). */
static void inline_over(struct dobj__cluster *cl, int rc, PGresult *r, int requeue)
{
	dobj__inline_pg *in = &cl->inl;
	dobj__cjob *j = in->job;
	dobj_rt *rt = cl->rt;
	unsigned pumping = rt->pumping;

	in->job = NULL;
	rt->inline_out = 0;
	inline_unwatch(cl);
	if (!in->pg.conn)
		in->ask_after = 0; /* broken: another at once (then at most once a second) */
	if (requeue) {
		inline_requeue(cl, j);
		return;
	}
	dobj__append_one_verdict(j, rc, r);
	pthread_mutex_lock(&cl->mu);
	job_back(j);
	if (cl->q_head)
		wake_one(cl); /* what waited behind it */
	pthread_mutex_unlock(&cl->mu);
	/* As in a drain: what it wakes runs in the pump that follows. */
	rt->pumping = 1;
	finish_job(cl, j);
	rt->pumping = pumping;
	watch_update(cl);
}

static void inline_late(void *data, int fired)
{
	struct dobj__cluster *cl = data;
	dobj__inline_pg *in = &cl->inl;
	double left;

	in->timer = NULL;
	if (!fired || !in->job)
		return;
	left = in->deadline - dobj__boot_ms();
	if (left > 0 && dobj__timer(cl->rt, left, inline_late, cl, 1, &in->timer) == DOBJ_OK)
		return;
	inline_unwatch(cl);
	/* It may have run: failed as a committer fails it, never sent again. */
	inline_over(cl, dobj__pg_give_up(&in->pg), NULL, 0);
}

/* The runtime's thread, as dobj__cluster_commit hands a job over: send it
 * on the runtime's own connection when that is free and the committers
 * would take it next; else 0 (queue it). */
static int inline_take(struct dobj__cluster *cl, dobj__cjob *j)
{
	dobj__inline_pg *in = &cl->inl;
	dobj__one_args a;
	int rc, ok;

	if (j->alarm >= 0 || j->len > INLINE_MAX_BYTES || in->job || cl->closing ||
	    cl->rt->virtual_time || cl->rt->fd < 0)
		return 0;
	if (!in->pg.conn) {
		inline_ask(cl);
		return 0;
	}
	/* Its deadline's check first: without one, a server that never
	 * answers would hold the object for good. */
	if (!in->timer && dobj__timer(cl->rt, in->pg.timeout_ms, inline_late, cl, 1, &in->timer) < 0)
		return 0;
	pthread_mutex_lock(&cl->mu);
	ok = !cl->q_head && !j->inc->out && !j->inc->failed;
	if (ok)
		j->inc->out++;
	pthread_mutex_unlock(&cl->mu);
	if (!ok)
		return 0;
	dobj__wal_sum(j->id, j->seq, j->epoch, j->rec, j->len, j->sum);
	dobj__append_one_args(&a, j);
	rc = dobj__pg_send_prepared(&in->pg, DOBJ__SLOT_APPEND_ONE, 7, a.v, a.lens, a.fmts);
	if (rc >= 0 && inline_watch(cl, rc == 1) < 0) {
		/* Sent, but its answer could not be waited for here. */
		dobj__pg_drop(&in->pg);
		rc = -1;
	}
	if (rc < 0) {
		pthread_mutex_lock(&cl->mu);
		j->inc->out--;
		pthread_mutex_unlock(&cl->mu);
		in->ask_after = 0;
		return 0;
	}
	in->job = j;
	in->deadline = dobj__boot_ms() + in->pg.timeout_ms;
	cl->rt->inline_out = 2;
	return 1;
}

void dobj__inline_poll(dobj_rt *rt)
{
	struct dobj__cluster *cl = rt->cluster;
	PGresult *r = NULL;
	int rc, want_write;

	if (!cl || !cl->inl.job) {
		rt->inline_out = 0;
		return;
	}
	rc = dobj__pg_poll(&cl->inl.pg, &want_write, &r);
	if (rc == 1) {
		if (inline_watch(cl, want_write) < 0) {
			inline_unwatch(cl);
			inline_over(cl, dobj__pg_give_up(&cl->inl.pg), NULL, 0);
		}
		return;
	}
	inline_over(cl, rc, r, rc < 0 && cl->inl.pg.broken);
	PQclear(r);
}

/* Closing: the append out on the runtime's connection gets its answer (up
 * to its deadline), and the connection goes. */
static void inline_stop(struct dobj__cluster *cl)
{
	dobj__inline_pg *in = &cl->inl;

	if (in->job) {
		PGresult *r = NULL;
		int rc = dobj__pg_collect(&in->pg, in->deadline, &r);
		inline_over(cl, rc, r, rc < 0 && in->pg.broken);
		PQclear(r);
	}
	if (in->timer)
		dobj_timer_cancel(cl->rt, in->timer);
	inline_unwatch(cl);
	dobj__pg_drop(&in->pg);
}


static int run_release(dobj__committer *me, dobj__cjob *j)
{
	dobj__pg *pg = &me->pg;
	char epoch[32], node[32];
	const char *v[4] = { j->ns, (const char *)j->id, epoch, node };
	int lens[4] = { (int)j->ns_len, 32, 0, 0 };
	int fmts[4] = { 0, 1, 0, 0 };
	PGresult *r;

	/* Best effort, without reconnecting for it (a committer's first
	 * statement connects), but for a give-back that nothing else does. */
	if (!pg->conn && me->used && !j->retry)
		return DOBJ_ERROR;
	me->used = 1;
	snprintf(epoch, sizeof(epoch), "%lld", j->epoch);
	snprintf(node, sizeof(node), "%lld", j->node);
	if (dobj__pg_exec_prepared(pg, 1,
		"UPDATE dobj_owner SET node_id = NULL "
		"WHERE ns = $1 AND object_id = $2 AND epoch = $3 AND node_id = $4",
		4, v, lens, fmts, 0, &r) != DOBJ_OK)
		return DOBJ_ERROR;
	PQclear(r);
	return DOBJ_OK;
}

/* A job passed over in this pass (under mu): its incarnation has a job out
 * on another committer or passed over before it. */
static int passed_over(struct dobj__cluster *cl, const dobj__cjob *j)
{
	return j->inc && (j->inc->out || j->inc->scan == cl->scan);
}

/*
 * Take the next batch off the queue (under mu): in order, up to the
 * bounds, the appends of one node, skipping (and leaving in place) the jobs
 * of incarnations with a job out; a release ends the batch (it goes after
 * the appends before it).  Returns whether the queue still holds a job
 * another committer could take.
 */
static int take(struct dobj__cluster *cl, dobj__cjob **batch, int *n, dobj__cjob **release)
{
	dobj__cjob **at = &cl->q_head, *prev = NULL, *j;
	size_t bytes = 0;
	int i;

	*n = 0;
	*release = NULL;
	if (++cl->scan == 0)
		cl->scan = 1; /* 0 is a fresh incarnation's */
	while ((j = *at) && *n < BATCH_JOBS) {
		if (passed_over(cl, j)) {
			j->inc->scan = cl->scan;
			prev = j;
			at = &j->next;
			continue;
		}
		if (j->kind == JOB_APPEND && *n > 0 &&
		    (bytes + j->len > BATCH_BYTES || j->node != batch[0]->node))
			break;
		*at = j->next;
		if (cl->q_tail == j)
			cl->q_tail = prev;
		j->next = NULL;
		if (j->kind == JOB_RELEASE) {
			*release = j;
			break;
		}
		if (j->inc->failed) {
			/* An earlier append of this incarnation failed. */
			dobj__append_fail(j, DOBJ_EABORTED, "cluster: an earlier write of this object was "
				"not confirmed");
			done_push(cl, j);
			continue;
		}
		batch[(*n)++] = j;
		bytes += j->len;
	}
	for (i = 0; i < *n; i++)
		batch[i]->inc->out++;
	if (*release && (*release)->inc)
		(*release)->inc->out++;
	for (j = cl->q_head; j; j = j->next)
		if (!passed_over(cl, j))
			return 1;
	return 0;
}

/* How long a committer that could not connect stays out of the way of
 * those that did. */
#define REST_MS 1000

/* Whether another committer of the node holds a connection (under mu). */
static int others_connected(const dobj__committer *me)
{
	const struct dobj__cluster *cl = me->cl;

	for (int i = 0; i < cl->ncom; i++)
		if (&cl->com[i] != me && cl->com[i].connected)
			return 1;
	return 0;
}

/* Resting (under mu): it takes nothing from the queue. */
static int resting(const dobj__committer *me)
{
	return me->rest_until > 0 && dobj__mono_ms() < me->rest_until && others_connected(me);
}

/*
 * A committer without a connection that cannot make one, while another
 * committer of the node holds one (under mu): the server refused one more
 * (max_connections, or the role's connection limit, taken by other nodes,
 * workers and clients), not the node's writes.  Its batch goes back to the
 * head of the queue, in order, for a connected committer, and it rests for
 * a while; failed, the batch would have reset every object in it for want
 * of a connection the node did not need.  Returns whether it did.
 */
static int leave_to_others(dobj__committer *me, dobj__cjob **batch, int n, dobj__cjob *release)
{
	struct dobj__cluster *cl = me->cl;
	dobj__cjob *head = cl->q_head;
	int i;

	if (cl->stop || !others_connected(me))
		return 0;
	/* batch[0..n-1], then the release, then what was queued meanwhile. */
	if (release) {
		release->next = head;
		head = release;
		if (release->inc)
			release->inc->out--;
	}
	for (i = n - 1; i >= 0; i--) {
		batch[i]->next = head;
		head = batch[i];
		batch[i]->inc->out--;
	}
	if (!cl->q_head)
		cl->q_tail = release ? release : batch[n - 1];
	cl->q_head = head;
	me->rest_until = dobj__mono_ms() + REST_MS;
	wake_one(cl);
	return 1;
}

static void *commit_main(void *arg)
{
	dobj__committer *me = arg;
	struct dobj__cluster *cl = me->cl;
	dobj__cjob *batch[BATCH_JOBS], *j, *release;
	int n, i, released;

	pthread_mutex_lock(&cl->mu);
	for (;;) {
		int more = 0;
		n = 0;
		release = NULL;
		if (!resting(me))
			more = take(cl, batch, &n, &release);
		if (n == 0 && !release) {
			if (cl->d_head)
				dobj__rt_post(cl->rt); /* jobs failed without being sent */
			if (cl->stop)
				break;
			if (cl->inl.asked) {
				cl->inl.asked = 0;
				pthread_mutex_unlock(&cl->mu);
				inline_connect(me);
				pthread_mutex_lock(&cl->mu);
				continue;
			}
			me->idle = 1;
			while (me->idle && !cl->stop)
				pthread_cond_wait(&me->wake, &cl->mu);
			me->idle = 0;
			if (me->woken) {
				me->woken = 0;
				cl->nwoken--;
			}
			continue;
		}
		if (more)
			wake_one(cl);
		cl->q_busy += (size_t)n + (release != NULL);
		if (!me->pg.conn) {
			int rc;
			pthread_mutex_unlock(&cl->mu);
			rc = dobj__pg_ensure(&me->pg);
			pthread_mutex_lock(&cl->mu);
			me->connected = rc == DOBJ_OK;
			if (rc < 0 && leave_to_others(me, batch, n, release)) {
				cl->q_busy -= (size_t)n + (release != NULL);
				continue;
			}
		}
		pthread_mutex_unlock(&cl->mu);
		if (n > 0) {
			dobj__append_batch(&me->pg, batch, n);
			me->used = 1;
		}
		released = release && run_release(me, release) == DOBJ_OK;
		pthread_mutex_lock(&cl->mu);
		for (i = 0; i < n; i++) {
			j = batch[i];
			job_back(j);
			done_push(cl, j);
		}
		if (release) {
			/* Its token is dropped here, under the lock already held. */
			if (release->inc) {
				release->inc->out--;
				if (--release->inc->refs == 0)
					free(release->inc);
			}
			release->inc = NULL;
			if (!released && release->retry-- > 0) {
				release->next = cl->r_retry; /* queued again after a renewal */
				cl->r_retry = release;
			} else {
				job_free(cl, release);
			}
		}
		cl->q_busy -= (size_t)n + (release != NULL);
		me->connected = me->pg.conn != NULL;
		pthread_cond_broadcast(&cl->idle);
		if (n > 0 || cl->d_head)
			dobj__rt_post(cl->rt);
	}
	pthread_mutex_unlock(&cl->mu);
	return NULL;
}

/* --------------------------------------------------------------- lifetime */

/* Stop and join the committers (under no lock). */
static void committers_stop(struct dobj__cluster *cl)
{
	int i;

	pthread_mutex_lock(&cl->mu);
	cl->stop = 1;
	for (i = 0; i < cl->ncom; i++)
		pthread_cond_signal(&cl->com[i].wake);
	pthread_mutex_unlock(&cl->mu);
	for (i = 0; i < cl->ncom; i++) {
		pthread_join(cl->com[i].th, NULL);
		pthread_cond_destroy(&cl->com[i].wake);
		dobj__pg_drop(&cl->com[i].pg);
		free(cl->com[i].pg.url);
		cl->com[i].pg.url = NULL;
	}
	cl->ncom = 0;
}

int dobj__cluster_start(struct dobj__cluster *cl)
{
	int rc = 0, i;

	if ((rc = dobj__pg_init_from(&cl->lpg, &cl->pg)) < 0)
		return rc;
	cl->lpg.role = "lease";
	/* The connection the node joined on renews its lease: the keeper never
	 * has to find a free connection slot on the server to keep the node
	 * alive (with the server at max_connections, a lazily made one was
	 * refused and the node lost every object), and the node holds one
	 * connection less.  It goes back for the leave (dobj__cluster_stop).
	 * Only a connection with nothing prepared on it: the keeper's
	 * statements take slots of their own. */
	if (!cl->pg.prepared)
		dobj__pg_move(&cl->lpg, &cl->pg);
	memset(&cl->inl, 0, sizeof(cl->inl));
	cl->inl.fd = -1;
	cl->inl.pg.url = cl->lpg.url; /* borrowed: the connection itself comes from a committer */
	cl->inl.pg.timeout_ms = cl->pg.timeout_ms;
	cl->l_node = cl->node_id;
	cl->l_view = cl->lease_view;
	cl->l_ok = 1;
	pthread_mutex_init(&cl->mu, NULL);
	dobj__cond_init(&cl->lwake);
	dobj__cond_init(&cl->idle);
	if ((rc = dobj__rt_source_add(cl->rt, drain, cl)) < 0)
		goto fail;
	for (i = 0; i < DOBJ__COMMITTERS && rc == 0; i++) {
		dobj__committer *c = &cl->com[i];
		memset(c, 0, sizeof(*c));
		c->cl = cl;
		if ((rc = dobj__pg_init_from(&c->pg, &cl->pg)) < 0)
			break;
		c->pg.role = "committer";
		dobj__cond_init(&c->wake);
		if ((rc = dobj__thread_start(&c->th, commit_main, c)) != 0) {
			pthread_cond_destroy(&c->wake);
			free(c->pg.url);
			c->pg.url = NULL;
			break;
		}
		pthread_mutex_lock(&cl->mu);
		cl->ncom++;
		pthread_mutex_unlock(&cl->mu);
	}
	if (rc == 0 && dobj__thread_start(&cl->lth, dobj__lease_main, cl) != 0)
		rc = -1;
	if (rc != 0) {
		committers_stop(cl);
		cl->stop = 0;
		dobj__rt_source_remove(cl->rt, drain, cl);
		rc = dobj_error_set(DOBJ_ERROR, "cluster: cannot start a thread");
		goto fail;
	}
	cl->threads = 1;
	return DOBJ_OK;
fail:
	pthread_cond_destroy(&cl->lwake);
	pthread_cond_destroy(&cl->idle);
	pthread_mutex_destroy(&cl->mu);
	if (!cl->pg.conn)
		dobj__pg_move(&cl->pg, &cl->lpg);
	dobj__pg_drop(&cl->lpg);
	free(cl->lpg.url);
	cl->lpg.url = NULL;
	return rc;
}

void dobj__cluster_stop(struct dobj__cluster *cl)
{
	struct timespec until;
	dobj__cjob *j;
	dobj__due *d;

	if (!cl->threads)
		return;
	/* What came back from the committers before the runtime's own append:
	 * an append out on the runtime's connection went after its object's
	 * earlier ones were back, so their results go first (per-object seq
	 * order); then the runtime's own, as what queued behind it waits for
	 * it. */
	dobj__cluster_turn_end(cl);
	drain(cl->rt, cl);
	inline_stop(cl);
	/* What is queued gets one more round trip (each is bounded by the
	 * timeout); then the threads stop. */
	dobj__mono_deadline(&until, cl->pg.timeout_ms * 2 + 500);
	pthread_mutex_lock(&cl->mu);
	while ((cl->q_head || cl->q_busy) &&
	       pthread_cond_timedwait(&cl->idle, &cl->mu, &until) != ETIMEDOUT)
		;
	cl->stop = 1;
	pthread_cond_signal(&cl->lwake);
	pthread_mutex_unlock(&cl->mu);
	committers_stop(cl);
	pthread_join(cl->lth, NULL);
	cl->threads = 0;
	dobj__rt_source_remove(cl->rt, drain, cl);
	/* Whatever no committer sent fails: never acknowledged. */
	while ((j = cl->r_retry)) {
		cl->r_retry = j->next;
		job_free(cl, j);
	}
	while ((j = cl->q_head)) {
		cl->q_head = j->next;
		if (j->kind == JOB_RELEASE) {
			job_free(cl, j);
			continue;
		}
		dobj__append_fail(j, DOBJ_ECLOSED, "cluster: the runtime closed before PostgreSQL confirmed "
			"the write");
		done_push(cl, j);
	}
	cl->q_tail = NULL;
	drain(cl->rt, cl);
	hold_release(&cl->gate, DOBJ_ECLOSED, "cluster: the runtime closed before this node's "
		"lease was confirmed");
	dobj__watch_stop(&cl->watch);
	while ((d = cl->due)) {
		cl->due = d->next;
		free(d);
	}
	if (cl->inl.handed) {
		PQfinish(cl->inl.handed);
		cl->inl.handed = NULL;
	}
	dobj__pg_drop(&cl->inl.pg);
	/* The lease keeper's connection is the node's again, for its leave. */
	if (!cl->pg.conn)
		dobj__pg_move(&cl->pg, &cl->lpg);
	dobj__pg_drop(&cl->lpg);
	free(cl->lpg.url);
	cl->lpg.url = NULL;
	cl->inl.pg.url = NULL;
	pthread_cond_destroy(&cl->lwake);
	pthread_cond_destroy(&cl->idle);
	pthread_mutex_destroy(&cl->mu);
}
