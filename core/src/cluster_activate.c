/*
 * Activation of cluster objects off the runtime's thread: the claim (a new
 * fencing epoch, unless a live node owns the object) and the restore of
 * the object's local file run on one of the node's activator threads, each
 * with its own PostgreSQL connection, while the runtime serves every other
 * object.  An object's activations always go to the same activator (by its
 * ID: DOBJ__ACTIVATORS), so they run in order, one at a time.
 *
 * The first call to an object that is not active here starts its
 * activation and closes the object's input gate (obj->nblock): that call
 * and every later one park, in order, as behind block_concurrency_while.
 * The outcome comes back through the runtime's fd (dobj__rt_post); the
 * gate opens, the first parked call runs again and finds it
 * (dobj__act_take): the object is active (its constructor runs), or a live
 * node owns it (the call is routed there), or the activation failed (the
 * object is reset, as a constructor that threw).
 *
 * An alarm that finds its object inactive (dobj__cluster_hold) starts its
 * activation the same way (dobj__act_for_alarm) and waits for it: when it
 * ends, the alarm fires again (dobj__alarm_activated) and reads the
 * restored record.  A pure client's lookup of an object's node (no
 * node_addr: it never claims) runs on the activator too
 * (dobj__act_lookup), its calls parked at the object's gate meanwhile.  So
 * a slow PostgreSQL delays only the object that waits for it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_int.h"

struct dobj__act {
	dobj__wjob job;     /* first: the activator's queue */
	/* the inputs, copied: the activator touches nothing else */
	char *ns;
	size_t ns_len;
	unsigned char id[32];
	char *base;         /* the object's database file */
	long long node;
	double grace_ms;
	int renew_first;    /* the lease view had lapsed: wait for a renewal first */
	int lookup;         /* a pure client's lookup, not a claim (dobj__act_lookup) */
	dobj__mark *mark;   /* set: not an activation, a cache marker to write (dobj__act_mark) */
	/* the outcome */
	int done, rc;
	char msg[600];
	struct dobj__cluster_obj *co;
	long long owner_node;
	char owner_addr[256];
	/* the runtime's thread only */
	dobj_obj *obj;      /* a reference, while out */
	int alarm;          /* an alarm waits for it: told when it ends */
	size_t waiters;     /* a failed lookup: the parked calls it fails */
};

static void act_free(dobj__act *a)
{
	if (!a)
		return;
	free(a->ns);
	free(a->base);
	free(a->co);
	dobj__snap_mark_free(a->mark);
	free(a);
}

/* Who owns the object (for the message of a refused claim). */
static int owner_of(dobj__pg *pg, dobj__act *a, const char *const *key, const int *lens,
	const int *fmts)
{
	PGresult *r;
	int rc;

	if ((rc = dobj__pg_exec(pg,
		"SELECT o.node_id, coalesce(n.addr, '') FROM dobj_owner o "
		"LEFT JOIN dobj_node n ON n.node_id = o.node_id WHERE o.ns = $1 AND o.object_id = $2",
		2, key, lens, fmts, 0, &r)) < 0)
		return rc;
	a->owner_node = 0;
	if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
		a->owner_node = atoll(PQgetvalue(r, 0, 0));
		snprintf(a->owner_addr, sizeof(a->owner_addr), "%s", PQgetvalue(r, 0, 1));
		rc = dobj_error_set(DOBJ_ESTATE, "cluster: the object is active on node %s (%s)",
			PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1)[0] ? PQgetvalue(r, 0, 1) : "no address");
	} else {
		rc = dobj_error_set(DOBJ_EABORTED,
			"cluster: this node's lease lapsed; the object cannot be activated here now");
	}
	PQclear(r);
	return rc;
}

/* A pure client's lookup: where the object lives, or which live node
 * should take it (one of the live nodes with an address, the same for every
 * caller while the membership stays: placement by the ID).  a->rc 1 and
 * a->owner_node/addr, 0 when no node can, or an error. */
static int lookup_run(dobj__pg *pg, dobj__act *a)
{
	const char *v[2] = { a->ns, (const char *)a->id };
	int lens[2] = { (int)a->ns_len, 32 };
	int fmts[2] = { 0, 1 };
	PGresult *r;
	int rc, n, i = 0;

	if ((rc = dobj__pg_exec(pg,
		"SELECT n.node_id, n.addr FROM dobj_owner o JOIN dobj_node n ON n.node_id = o.node_id "
		"WHERE o.ns = $1 AND o.object_id = $2 AND n.status = 'live' AND n.lease_until > now() "
		"AND n.addr <> ''",
		2, v, lens, fmts, 0, &r)) < 0)
		return rc;
	if (PQntuples(r) != 1) {
		PQclear(r);
		if ((rc = dobj__pg_exec(pg,
			"SELECT node_id, addr FROM dobj_node WHERE status = 'live' AND lease_until > now() "
			"AND addr <> '' ORDER BY node_id", 0, NULL, NULL, NULL, 0, &r)) < 0)
			return rc;
		if ((n = PQntuples(r)) == 0) {
			PQclear(r);
			return 0;
		}
		i = (int)(dobj__be32(a->id) % (uint32_t)n);
	}
	a->owner_node = atoll(PQgetvalue(r, i, 0));
	snprintf(a->owner_addr, sizeof(a->owner_addr), "%s", PQgetvalue(r, i, 1));
	PQclear(r);
	return 1;
}

/* Claim and restore, on `pg` (any thread): the outcome in a. */
static void act_run(dobj__pg *pg, dobj__act *a)
{
	char node[32], grace[32];
	const char *v[4] = { a->ns, (const char *)a->id, node, grace };
	int lens[4] = { (int)a->ns_len, 32, 0, 0 };
	int fmts[4] = { 0, 1, 0, 0 };
	PGresult *r = NULL;
	int rc;

	if (a->lookup) {
		rc = lookup_run(pg, a);
		goto done;
	}
	snprintf(node, sizeof(node), "%lld", a->node);
	snprintf(grace, sizeof(grace), "%.3f", a->grace_ms);
	if ((rc = dobj__pg_exec(pg,
		"INSERT INTO dobj_owner AS o (ns, object_id, epoch, node_id) "
		"SELECT $1, $2, 1, $3 WHERE EXISTS (SELECT 1 FROM dobj_node "
		"  WHERE node_id = $3 AND status = 'live' AND lease_until > now()) "
		"ON CONFLICT (ns, object_id) DO UPDATE SET epoch = o.epoch + 1, node_id = excluded.node_id "
		"WHERE o.node_id IS NULL OR o.node_id = excluded.node_id OR NOT EXISTS ("
		"  SELECT 1 FROM dobj_node n WHERE n.node_id = o.node_id AND n.status = 'live'"
		"  AND n.lease_until + make_interval(secs => $4::float8 / 1000) > now()) "
		"RETURNING epoch",
		4, v, lens, fmts, 0, &r)) < 0) {
		/* 22003: epoch + 1 out of bigint's range, which no claim sequence
		 * reaches (one per activation): the row was written by hand. */
		if (!strcmp(pg->sqlstate, "22003"))
			rc = dobj_error_set(DOBJ_ERROR, "cluster: the object's fencing epoch in "
				"dobj_owner is the largest bigint, which no claim reaches: the row is "
				"damaged, and the object cannot be claimed again until it is repaired");
		goto done;
	}
	if (PQntuples(r) != 1) {
		rc = owner_of(pg, a, v, lens, fmts);
		goto done;
	}
	if (!(a->co = calloc(1, sizeof(*a->co)))) {
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		goto done;
	}
	a->co->wal_fd = -1;
	a->co->epoch = atoll(PQgetvalue(r, 0, 0));
	rc = dobj__snap_restore(pg, a->ns, a->ns_len, a->id, a->base, a->co);
done:
	PQclear(r);
	a->rc = rc;
	if (rc < 0)
		snprintf(a->msg, sizeof(a->msg), "%s", dobj_error_last());
	a->done = 1;
}

static dobj__act *act_new(struct dobj__cluster *cl, dobj_obj *obj)
{
	dobj__act *a = calloc(1, sizeof(*a));

	if (!a || !(a->ns = dobj__strndup(obj->ns->unique_key, obj->ns->unique_key_len)) ||
	    !(a->base = dobj__cluster_path(obj, ""))) {
		act_free(a);
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	a->ns_len = obj->ns->unique_key_len;
	memcpy(a->id, obj->id.bytes, 32);
	a->node = cl->node_id;
	a->grace_ms = cl->grace_ms;
	return a;
}

/* The outcome, on the runtime's thread: the object is active (0), or the
 * error, with the owner the refused claim found (routing). */
static int act_finish(struct dobj__cluster *cl, dobj_obj *obj, dobj__act *a)
{
	struct dobj__cluster_obj *co;
	int rc = a->rc;

	if (rc >= 0 && a->node != cl->node_id) {
		/* The node joined again meanwhile: the claim was the new node's
		 * and is kept; the object is claimed again on the next call. */
		rc = dobj_error_set(DOBJ_EABORTED,
			"cluster: this node's lease lapsed; the object cannot be activated here now");
	} else if (rc < 0) {
		cl->owner_node = a->owner_node;
		snprintf(cl->owner_addr, sizeof(cl->owner_addr), "%s", a->owner_addr);
		dobj_error_set(rc, "%s", a->msg);
	}
	if (rc < 0) {
		if (a->co && a->node == cl->node_id) {
			/* Claimed, but not restored (damaged data, PostgreSQL gone
			 * meanwhile): the claim goes back, or stays with the object's
			 * sockets until the last leaves (dobj__cluster_queue_release). */
			dobj__cluster_queue_release(cl, obj, a->co);
			a->co = NULL;
		}
		act_free(a);
		return rc;
	}
	co = a->co;
	a->co = NULL;
	act_free(a);
	obj->cluster = co;
	/* Its alarm fires here now (whichever node set it). */
	if (co->alarm > 0 && (obj->ns->klass.flags & DOBJ_CLASS_ALARM))
		dobj__alarm_track(obj->ns, &obj->id, obj->name, obj->name_len, co->alarm);
	return DOBJ_OK;
}

int dobj__act_take(struct dobj__cluster *cl, dobj_obj *obj)
{
	dobj__act *a = obj->act;

	if (a->obj)
		return 1; /* still out (a->obj is cleared when it comes back) */
	obj->act = NULL;
	if (a->lookup) {
		act_free(a); /* a lookup's outcome a call that is not routed never needs */
		return 2;
	}
	return act_finish(cl, obj, a);
}

static int begin(struct dobj__cluster *cl, dobj_obj *obj, int lookup);

int dobj__act_for_alarm(struct dobj__cluster *cl, dobj_obj *obj)
{
	int rc;

	if (obj->act && obj->act->obj) {
		obj->act->alarm = 1;
		return 2;
	}
	if (obj->act && (rc = dobj__act_take(cl, obj)) != 2)
		return rc;
	if ((rc = dobj__act_begin(cl, obj)) < 0)
		return rc;
	obj->act->alarm = 1;
	return 2;
}

int dobj__act_lookup(struct dobj__cluster *cl, dobj_obj *obj, long long *node, char *addr,
	size_t cap)
{
	dobj__act *a = obj->act;
	int rc;

	if (a && a->obj)
		return 2; /* out: the call parks at the gate (construct) */
	if (a && a->lookup) {
		rc = a->rc;
		*node = a->owner_node;
		snprintf(addr, cap, "%s", a->owner_addr);
		if (rc < 0)
			dobj_error_set(rc, "%s", a->msg);
		/* A failure fails every call that waited for it (not each in turn
		 * after a lookup of its own); a success is in the route cache. */
		if (rc > 0 || a->waiters <= 1) {
			obj->act = NULL;
			act_free(a);
		} else {
			a->waiters--;
		}
		return rc;
	}
	if (a && (rc = dobj__act_take(cl, obj)) != 2)
		return rc; /* (a pure client claims nothing: never here) */
	if ((rc = begin(cl, obj, 1)) < 0)
		return rc;
	return 2;
}

void dobj__act_drop(struct dobj__cluster *cl, dobj_obj *obj)
{
	dobj__act *a = obj->act;

	if (a->obj)
		return; /* still out: act_done finds the object gone */
	obj->act = NULL;
	if (a->rc >= 0 && a->co && a->node == cl->node_id) {
		dobj__cluster_queue_release(cl, obj, a->co);
		a->co = NULL;
	}
	act_free(a);
}

/* ------------------------------------------------------- the activator */

/* The activator's thread. */
static void act_work(struct dobj__cluster *cl, dobj__pg *pg, dobj__wjob *j)
{
	dobj__act *a = (dobj__act *)j;

	if (a->mark) {
		dobj__snap_mark_write(a->mark, pg);
		return;
	}
	if (a->renew_first) {
		/* The view had lapsed (PostgreSQL was away, the process was
		 * paused): the lease keeper renews, or joins again as a new
		 * node, before the claim; the claim is that node's. */
		struct timespec until;
		unsigned long gen;
		dobj__mono_deadline(&until, cl->pg.timeout_ms * 3);
		pthread_mutex_lock(&cl->mu);
		gen = cl->l_gen;
		cl->renew_now = 1;
		pthread_cond_signal(&cl->lwake);
		while (cl->l_gen == gen && !cl->stop &&
		       pthread_cond_timedwait(&cl->idle, &cl->mu, &until) != ETIMEDOUT)
			;
		if (cl->l_node)
			a->node = cl->l_node;
		pthread_mutex_unlock(&cl->mu);
	}
	act_run(pg, a);
}

/* The runtime's thread: an activation that ended opens its object's gate. */
static void act_done(struct dobj__cluster *cl, dobj__wjob *j)
{
	dobj__act *a = (dobj__act *)j;
	dobj_obj *obj = a->obj;
	int alarm;

	if (a->mark) {
		act_free(a);
		return;
	}
	a->obj = NULL;
	if (obj->dead || !obj->mapped || obj->act != a) {
		/* Reset meanwhile: a claim that went through is released, restored
		 * or not (a halted restore: dobj__act_reset). */
		obj->act = obj->act == a ? NULL : obj->act;
		if (a->co && a->node == cl->node_id) {
			dobj__cluster_queue_release(cl, obj, a->co);
			a->co = NULL;
		}
		alarm = a->alarm;
		act_free(a);
	} else {
		alarm = a->alarm;
		a->waiters = obj->nparked;
		dobj__obj_gate_open(obj);
	}
	/* The alarm that waited for it fires again (and finds the outcome). */
	if (alarm)
		dobj__alarm_activated(obj);
	dobj__obj_unref(obj);
}

/* Stopping: a queued activation never starts (its object is reset by the
 * close); a queued marker is dropped (the next activation rebuilds). */
static void act_unrun(dobj__wjob *j)
{
	dobj__act *a = (dobj__act *)j;

	if (a->mark)
		return;
	a->done = 1;
	a->rc = DOBJ_ECLOSED;
	snprintf(a->msg, sizeof(a->msg), "%s", DOBJ_MSG_CLOSED);
}

/* The object's own activator (its ID is random or a hash): its
 * activations and cache markers run there in order, one at a time. */
static dobj__worker *activator(struct dobj__cluster *cl, dobj_obj *obj)
{
	return cl->act[obj->id.bytes[0] % DOBJ__ACTIVATORS];
}

/* Queue obj's activation (or lookup) and close its gate. */
static int begin(struct dobj__cluster *cl, dobj_obj *obj, int lookup)
{
	dobj__act *a;

	if (!cl->act[0] || cl->closing)
		return dobj_error_set(DOBJ_ECLOSED, DOBJ_MSG_CLOSED);
	if (!(a = act_new(cl, obj)))
		return DOBJ_ENOMEM;
	a->lookup = lookup; /* before the push: the activator reads it */
	a->renew_first = dobj__boot_ms() >= cl->lease_view;
	a->obj = obj;
	obj->refs++;
	obj->act = a;
	obj->nblock++; /* the input gate: calls park, in order, until it is done */
	dobj__worker_push(activator(cl, obj), &a->job);
	return 1;
}

void dobj__act_mark(struct dobj__cluster *cl, dobj_obj *obj, dobj__mark *m)
{
	dobj__act *a;

	if (!m)
		return;
	/* Without an activator (the node is stopping), or memory, no marker:
	 * the next activation rebuilds the file. */
	if (!cl || !cl->act[0] || !(a = calloc(1, sizeof(*a)))) {
		dobj__snap_mark_free(m);
		return;
	}
	a->mark = m;
	/* Ahead of the object's next activation, on the same activator: that
	 * one finds the marker written, or none, never half of one, and
	 * nothing writes the file while it is hashed. */
	dobj__worker_push(activator(cl, obj), &a->job);
}

int dobj__act_begin(struct dobj__cluster *cl, dobj_obj *obj)
{
	return begin(cl, obj, 0);
}

int dobj__act_start(struct dobj__cluster *cl)
{
	int i, rc;

	for (i = 0; i < DOBJ__ACTIVATORS; i++) {
		if ((rc = dobj__worker_start(&cl->act[i], cl, "activator", cl->pg.timeout_ms * 8, act_work,
		    act_done)) < 0) {
			dobj__act_stop(cl);
			return rc;
		}
	}
	return DOBJ_OK;
}

static int is_mark(dobj__wjob *j)
{
	return ((dobj__act *)j)->mark != NULL;
}

void dobj__act_closing(struct dobj__cluster *cl)
{
	int i;

	/* The running activations end within their statements' bounds, all at
	 * once; queued ones never start.  Cache markers go on: the objects
	 * released by the close queue theirs too (dobj__act_stop). */
	for (i = 0; i < DOBJ__ACTIVATORS; i++)
		dobj__worker_cancel(cl->act[i], is_mark, act_unrun);
	for (i = 0; i < DOBJ__ACTIVATORS; i++)
		dobj__worker_settle(cl->act[i], is_mark);
}

/* A job of an object that is still here (not a marker, not an object gone). */
static int keep_live(dobj__wjob *j)
{
	dobj__act *a = (dobj__act *)j;

	return !a->mark && a->obj && !a->obj->dead && a->obj->mapped;
}

void dobj__act_reset(struct dobj__cluster *cl)
{
	int i;

	/* reset() deletes the files of the objects it dropped: a queued cache
	 * marker would vouch for one of them, and a queued activation of an
	 * object it aborted would restore one after it (and a job under way
	 * would write in the folder after reset returned, under a test that
	 * deletes it).  Neither starts; the one under way is halted and
	 * waited for, all activators at once. */
	for (i = 0; i < DOBJ__ACTIVATORS; i++)
		dobj__worker_cancel(cl->act[i], keep_live, act_unrun);
	for (i = 0; i < DOBJ__ACTIVATORS; i++)
		dobj__worker_settle(cl->act[i], keep_live);
}

void dobj__act_stop(struct dobj__cluster *cl)
{
	double until = dobj__boot_ms() + cl->pg.timeout_ms * 2 + 500;
	int i;

	/* Queued markers get a bounded time, shared by the activators (they
	 * hash at once); then the one under way is halted and the rest are
	 * dropped. */
	for (i = 0; i < DOBJ__ACTIVATORS; i++) {
		double left = until - dobj__boot_ms();
		dobj__worker_stop(&cl->act[i], left > 0 ? left : 0, act_unrun);
	}
}
