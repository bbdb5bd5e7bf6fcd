/*
 * The lease keeper of a cluster node: a thread with its own PostgreSQL
 * connection that renews the node's lease every TTL/4 (at once when the
 * runtime asks: its view lapsed and results wait), rejoins as a new node
 * when the database refused (the lease lapsed: the node lost its objects),
 * and looks for due alarms of objects no live node holds.  Nothing here
 * waits behind the committer's appends, and the runtime's thread never
 * waits for it: what it learns goes to the runtime through its fd and is
 * acted on there (cluster_commit.c's drain).
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster_int.h"

/* DOBJ_OK while the lease held, 1 when the database refused (it lapsed). */
static int renew(dobj__pg *pg, long long node_id, double ttl_ms)
{
	char node[32], ttl[32];
	const char *v[2] = { node, ttl };
	PGresult *r;
	int rc, n;

	snprintf(node, sizeof(node), "%lld", node_id);
	snprintf(ttl, sizeof(ttl), "%.3f", ttl_ms);
	if ((rc = dobj__pg_exec_prepared(pg, 0,
		"UPDATE dobj_node SET lease_until = now() + make_interval(secs => $2::float8 / 1000) "
		"WHERE node_id = $1 AND status = 'live' AND lease_until > now()",
		2, v, NULL, NULL, 0, &r)) < 0)
		return rc;
	n = atoi(PQcmdTuples(r));
	PQclear(r);
	return n == 1 ? DOBJ_OK : 1;
}

/*
 * Due alarms of objects no live node holds (their node died, or they were
 * evicted), in every namespace: the runtime keeps those of the namespaces
 * it serves, so that some node activates the object and fires them.
 * Alarms of objects active on a live node are that node's.
 */
static dobj__due *scan(dobj__pg *pg, double ttl_ms, double grace_ms, const char *keys)
{
	char grace[32], horizon[32];
	const char *v[3] = { grace, horizon, keys };
	dobj__due *list = NULL, **tail = &list;
	PGresult *r;
	int i;

	snprintf(grace, sizeof(grace), "%.3f", grace_ms);
	snprintf(horizon, sizeof(horizon), "%.0f", ttl_ms * 1e6); /* ns */
	if (dobj__pg_exec_prepared(pg, 1,
		"SELECT a.object_id, a.scheduled_at, a.name, a.ns FROM dobj_alarm a "
		"LEFT JOIN dobj_owner o ON o.ns = a.ns AND o.object_id = a.object_id "
		"LEFT JOIN dobj_node n ON n.node_id = o.node_id "
		"WHERE a.scheduled_at <= (extract(epoch FROM clock_timestamp()) * 1e9)::bigint "
		"  + $2::bigint "
		"AND (o.node_id IS NULL OR n.node_id IS NULL OR n.status <> 'live' "
		"  OR n.lease_until + make_interval(secs => $1::float8 / 1000) < now()) "
		"AND a.ns = ANY($3::text[]) "
		"ORDER BY a.scheduled_at LIMIT 1000",
		3, v, NULL, NULL, 1, &r) < 0)
		return NULL;
	for (i = 0; i < PQntuples(r); i++) {
		const unsigned char *w = (const unsigned char *)PQgetvalue(r, i, 1);
		size_t nlen = (size_t)PQgetlength(r, i, 2), klen = (size_t)PQgetlength(r, i, 3);
		int has_name = !PQgetisnull(r, i, 2);
		dobj__due *d;
		if (PQgetlength(r, i, 0) != 32 || PQgetlength(r, i, 1) != 8)
			continue;
		if (!(d = calloc(1, sizeof(*d) + klen + 1 + nlen + 1)))
			break;
		memcpy(d->id.bytes, PQgetvalue(r, i, 0), 32);
		d->when = (int64_t)((uint64_t)w[0] << 56 | (uint64_t)w[1] << 48 | (uint64_t)w[2] << 40 |
			(uint64_t)w[3] << 32 | (uint64_t)w[4] << 24 | (uint64_t)w[5] << 16 |
			(uint64_t)w[6] << 8 | w[7]);
		d->ns = (char *)(d + 1);
		memcpy(d->ns, PQgetvalue(r, i, 3), klen);
		if (has_name) {
			d->name = d->ns + klen + 1;
			memcpy(d->name, PQgetvalue(r, i, 2), nlen);
			d->name_len = nlen;
		}
		*tail = d;
		tail = &d->next;
	}
	PQclear(r);
	return list;
}

int dobj__cluster_alarm_ns(dobj_rt *rt, const char *key, size_t len)
{
	struct dobj__cluster *cl = rt->cluster;
	size_t old, i;
	char *p, *q;
	int first;

	/* {"KEY",...}: each key quoted, its quotes and backslashes escaped. */
	pthread_mutex_lock(&cl->mu);
	first = !cl->alarm_keys;
	old = first ? 1 : strlen(cl->alarm_keys);
	if (!(p = realloc(cl->alarm_keys, old + 2 * len + 4))) {
		pthread_mutex_unlock(&cl->mu);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	q = p + old - 1; /* over the closing brace (or at the start) */
	*q++ = first ? '{' : ',';
	*q++ = '"';
	for (i = 0; i < len; i++) {
		if (key[i] == '"' || key[i] == '\\')
			*q++ = '\\';
		*q++ = key[i];
	}
	*q++ = '"';
	*q++ = '}';
	*q = '\0';
	cl->alarm_keys = p;
	pthread_mutex_unlock(&cl->mu);
	return DOBJ_OK;
}

/* A due alarm's row is PostgreSQL's word for an object's ID and name: like
 * a peer's call (cluster_route.c), it must name the object its ID was made
 * from, or the object would be activated under a name that is not its own
 * (ctx.id.name) or an ID no stub could make.  Such a row is logged (once)
 * and skipped: the object's alarm fires where it is next activated. */
static int due_names_its_id(dobj_ns *ns, const dobj__due *d)
{
	dobj_id named;

	if (!d->name)
		return dobj__id_sealed(ns->key, &d->id);
	return dobj_id_from_name(ns->key, d->name, d->name_len, &named) == DOBJ_OK &&
		dobj_id_equal(&named, &d->id);
}

void dobj__due_track(dobj_rt *rt, dobj__due *list)
{
	dobj__due *d;
	size_t i;

	while ((d = list)) {
		list = d->next;
		for (i = 0; i < rt->nns; i++) {
			dobj_ns *ns = rt->nss[i];
			if (!(ns->klass.flags & DOBJ_CLASS_ALARM) || strcmp(ns->unique_key, d->ns))
				continue;
			if (due_names_its_id(ns, d)) {
				dobj__alarm_track(ns, &d->id, d->name, d->name_len, d->when);
			} else if (!rt->cluster->bad_alarm_logged) {
				char hex[DOBJ_ID_HEX_LEN + 1];
				rt->cluster->bad_alarm_logged = 1;
				dobj_id_to_hex(&d->id, hex);
				hex[DOBJ_ID_HEX_LEN] = '\0';
				dobj__cluster_log(rt, rt->cluster->node_id, "cluster: an alarm row in "
					"PostgreSQL (namespace '%.100s', object %s) names an object its ID was "
					"not made from; it is ignored (further ones are not logged)", d->ns, hex);
			}
			break;
		}
		free(d);
	}
}

void *dobj__lease_main(void *arg)
{
	struct dobj__cluster *cl = arg;
	double next = dobj__mono_ms() + cl->ttl_ms / 4, sent, view = 0;
	long long node, fresh;
	dobj__due *due, **tail;
	char err[300];
	int rc;

	pthread_mutex_lock(&cl->mu);
	for (;;) {
		while (!cl->stop && !cl->renew_now && dobj__mono_ms() < next) {
			struct timespec ts;
			double at = next;
			ts.tv_sec = (time_t)(at / 1e3);
			ts.tv_nsec = (long)fmod(at * 1e6, 1e9);
			pthread_cond_timedwait(&cl->lwake, &cl->mu, &ts);
		}
		if (cl->stop)
			break;
		cl->renew_now = 0;
		node = cl->l_node;
		pthread_mutex_unlock(&cl->mu);

		sent = dobj__boot_ms();
		fresh = 0;
		if (node == 0) {
			/* Refused earlier and could not join again then. */
			rc = dobj__node_join(&cl->lpg, cl->addr, cl->ttl_ms, &fresh, &view);
			rc = rc < 0 ? rc : 1;
		} else if ((rc = renew(&cl->lpg, node, cl->ttl_ms)) == 1) {
			/* Nothing of the old node's can release a result any more:
			 * its objects are free at once (for this process too),
			 * without the grace period. */
			if (dobj__node_leave(&cl->lpg, node) < 0 ||
			    dobj__node_join(&cl->lpg, cl->addr, cl->ttl_ms, &fresh, &view) < 0)
				fresh = 0;
		}
		snprintf(err, sizeof(err), "%s", rc < 0 || (rc == 1 && !fresh) ? dobj_error_last() : "");
		/* A node without an address serves no object: it fires no alarm. */
		due = NULL;
		if (rc >= 0 && cl->addr[0]) {
			char *keys;
			pthread_mutex_lock(&cl->mu);
			keys = cl->alarm_keys ? strdup(cl->alarm_keys) : NULL;
			pthread_mutex_unlock(&cl->mu);
			if (keys)
				due = scan(&cl->lpg, cl->ttl_ms, cl->grace_ms, keys);
			free(keys);
		}

		pthread_mutex_lock(&cl->mu);
		cl->l_gen++;
		cl->l_ok = rc == DOBJ_OK;
		snprintf(cl->l_err, sizeof(cl->l_err), "%s", err);
		if (rc == DOBJ_OK) {
			if (sent + 0.8 * cl->ttl_ms > cl->l_view)
				cl->l_view = sent + 0.8 * cl->ttl_ms;
		} else if (rc == 1) {
			if (node != 0)
				cl->l_lost = 1; /* the runtime resets the old node's objects */
			cl->l_node = fresh;
			if (fresh) {
				cl->l_view = view;
				cl->l_ok = 1;
			}
		}
		for (tail = &cl->due; *tail; tail = &(*tail)->next)
			;
		*tail = due;
		/* A failure is retried sooner; results wait meanwhile. */
		next = dobj__mono_ms() + (rc < 0 || (rc == 1 && !fresh) ? cl->ttl_ms / 8 : cl->ttl_ms / 4);
		pthread_cond_broadcast(&cl->idle); /* the activator waits for a renewal */
		dobj__rt_post(cl->rt);
	}
	pthread_mutex_unlock(&cl->mu);
	return NULL;
}
