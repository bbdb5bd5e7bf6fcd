/* The node, the counter class and the PostgreSQL steps of the cluster tests
 * (tests/c/test_cluster*.c); include after testhost.h and pgtest.h. */
#ifndef DOBJ_TEST_CLUSTER_H
#define DOBJ_TEST_CLUSTER_H

/* What a Counter answers: "count" adds one to the count it keeps (a few
 * bytes of one page: a log row of its changes), "sql" a schema change, a
 * row of a few pages and every earlier row's bytes replaced (pages, not
 * rows, carry all of it to the next node; whole pages in the log, as big
 * as the table), "rows" how many rows, anything else "read".  0, or the
 * code of a storage that is gone. */
static inline int counter_answer(dobj_task *t)
{
	static const char create[] = "CREATE TABLE IF NOT EXISTS t (x TEXT); "
		"UPDATE t SET x = hex(randomblob(3000)); INSERT INTO t VALUES (hex(randomblob(3000)))";
	static const char rows[] = "SELECT count(*) FROM t";
	tv *req = dobj_task_request(t);
	dobj_storage *st;
	dobj_cursor *c = NULL;
	int rc;

	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	if (!strcmp(req->s, "count")) {
		respond(t, 200, "%ld", testhost_count(st, 1));
	} else if (!strcmp(req->s, "sql")) {
		CHECK_EQ_INT(dobj_sql_exec(st, create, strlen(create), NULL, 0, &c), DOBJ_OK);
		respond(t, 200, "ok");
	} else if (!strcmp(req->s, "rows")) {
		if (dobj_sql_exec(st, rows, strlen(rows), NULL, 0, &c) < 0)
			dobj_task_raise(t, DOBJ_ERROR, dobj_error_last(), NULL);
		else
			respond(t, 200, "%lld", dobj_cursor_cell(c, 0, 0)->i);
	} else {
		respond(t, 200, "read");
	}
	dobj_cursor_free(c);
	return DOBJ_OK;
}

/* A runtime on `dir` (no idle eviction) joined to the cluster as `co` says
 * (NULL: pg's, a node on a port the system picks, leases expired by the
 * tests by hand), the join's code checked against `expect`, with COUNTER
 * (unique key `key`) bound to a class of `step` and `flags`; NULL when the
 * join failed as expected. */
static inline dobj_rt *cluster_node(const pgtest *pg, const char *dir, dobj_cluster_opts *co,
	int expect, const char *key, dobj_step_fn step, unsigned flags)
{
	dobj_rt *rt;
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	dobj_cluster_opts dflt = DOBJ_CLUSTER_OPTS_INIT;
	dobj_ns *ns;
	int rc;

	o.host.retain = tv_retain;
	o.host.release = tv_release;
	o.storage_dir = dir;
	o.idle_timeout_ms = -1;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	if (!co) {
		co = &dflt;
		dflt.url = pg->url;
		dflt.node_addr = "127.0.0.1:0"; /* the system picks a port: nodes listen */
		dflt.grace_ms = -1;
	}
	rc = dobj_rt_cluster(rt, co);
	CHECK_EQ_INT(rc, expect);
	if (rc < 0) {
		dobj_rt_free(rt);
		return NULL;
	}
	k.name = "Counter";
	k.flags = flags;
	k.step = step;
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "COUNTER", 7, key, strlen(key), &k), DOBJ_OK);
	return rt;
}

static inline dobj_stub *stub_for(dobj_rt *rt, const char *name)
{
	return testhost_stub(dobj_rt_ns_at(rt, 0), name);
}

/* The id of the object `name` of `ns` in hex (in a buffer the next call
 * overwrites). */
static inline const char *object_hex(dobj_ns *ns, const char *name)
{
	static char hex[DOBJ_ID_HEX_LEN + 1];
	dobj_id id;

	dobj_id_from_name(dobj_ns_idkey(ns), name, strlen(name), &id);
	dobj_id_to_hex(&id, hex);
	hex[DOBJ_ID_HEX_LEN] = '\0';
	return hex;
}

/* The owner row of `name` (of `ns`, whose unique key is `key`) locked FOR
 * UPDATE in a transaction of the test's own, left open: the object's claim
 * and its appends (which lock it FOR SHARE) wait until the test COMMITs on
 * the connection returned (and PQfinish()es it). */
static inline PGconn *owner_lock(const pgtest *pg, const char *key, dobj_ns *ns, const char *name)
{
	PGconn *c = pgtest_connect(pg);

	pgtest_sql(pg, c, "BEGIN");
	CHECK(pgtest_sqlf(pg, c, "SELECT epoch FROM dobj_owner WHERE ns = '%s' AND "
		"object_id = '\\x%s'::bytea FOR UPDATE", key, object_hex(ns, name)) > 0);
	return c;
}

/* The lease of node `node` lapses on the database's clock (as if the node
 * had been paused past it) while the node itself has not noticed yet. */
static inline void lease_lapse(const pgtest *pg, long long node)
{
	pgtest_sqlf(pg, NULL, "UPDATE dobj_node SET lease_until = now() - interval '1 hour' "
		"WHERE node_id = %lld", node);
}

#endif
