/*
 * The statements that append a cluster node's jobs to the log
 * (cluster_commit.c runs them): the one-row fenced insert, the batch
 * statements with their rows as arrays in PostgreSQL's binary format, and
 * the rule for a row the log already holds (own_rows); each job gets its
 * verdict here.  Nothing in this file takes a lock: the committer (or the
 * runtime's own connection) owns the jobs it sends.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster_append.h"

void dobj__append_fail(dobj__cjob *j, int rc, const char *msg)
{
	j->rc = rc < 0 ? rc : DOBJ_ERROR;
	snprintf(j->msg, sizeof(j->msg), "%s", msg);
}

/* PostgreSQL's binary array format: ndim, has-null, element type, then
 * (count, lower bound 1), then each element as (length, bytes). */
typedef struct pgarr {
	unsigned char *p;
	size_t len, cap;
	int oom;
} pgarr;

static void arr_put(pgarr *a, const void *data, size_t n)
{
	if (a->oom)
		return;
	if (a->len + n > a->cap) {
		size_t cap = a->cap ? a->cap : 256;
		unsigned char *p;
		while (cap < a->len + n)
			cap *= 2;
		if (!(p = realloc(a->p, cap))) {
			a->oom = 1;
			return;
		}
		a->p = p;
		a->cap = cap;
	}
	memcpy(a->p + a->len, data, n);
	a->len += n;
}

static void arr_i32(pgarr *a, long v)
{
	unsigned char b[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
		(unsigned char)(v >> 8), (unsigned char)v };
	arr_put(a, b, 4);
}

static void arr_begin(pgarr *a, unsigned oid, int n, int has_null)
{
	arr_i32(a, 1);
	arr_i32(a, has_null);
	arr_i32(a, (long)oid);
	arr_i32(a, n);
	arr_i32(a, 1);
}

static void arr_bytes(pgarr *a, const void *p, size_t n)
{
	if (!p) {
		arr_i32(a, -1);
		return;
	}
	arr_i32(a, (long)n);
	arr_put(a, p, n);
}

static void arr_i64(pgarr *a, long long v)
{
	unsigned char b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)((unsigned long long)v >> (56 - 8 * i));
	arr_i32(a, 8);
	arr_put(a, b, 8);
}

#define OID_BYTEA 17
#define OID_INT8 20
#define OID_INT4 23
#define OID_TEXT 25

/* The six arrays both row statements start with (append_sql's and
 * own_rows_sql's $1-$6): each row's ns, object_id, seq, epoch, one bytea
 * (the frames to append, or the checksum to look for) and its position in
 * the batch, which the statements answer with. */
static void arr_rows_begin(pgarr *a, int n)
{
	arr_begin(&a[0], OID_TEXT, n, 0);
	arr_begin(&a[1], OID_BYTEA, n, 0);
	arr_begin(&a[2], OID_INT8, n, 0);
	arr_begin(&a[3], OID_INT8, n, 0);
	arr_begin(&a[4], OID_BYTEA, n, 0);
	arr_begin(&a[5], OID_INT4, n, 0);
}

static void arr_row(pgarr *a, const dobj__cjob *j, const void *bytes, size_t len, int ord)
{
	arr_bytes(&a[0], j->ns, j->ns_len);
	arr_bytes(&a[1], j->id, 32);
	arr_i64(&a[2], j->seq);
	arr_i64(&a[3], j->epoch);
	arr_bytes(&a[4], bytes, len);
	arr_i32(&a[5], 4);
	arr_i32(&a[5], ord);
}

/* One statement for a whole batch: the rows whose object's owner row still
 * names this node with the row's epoch (locked FOR SHARE: a takeover either
 * commits first, and the row is refused, or waits) are appended, with the
 * alarm schedule of the objects whose alarm changed; it returns the
 * accepted rows' positions. */
static const char append_sql[] =
	"WITH i AS (SELECT * FROM unnest($1::text[], $2::bytea[], $3::int8[], $4::int8[], "
	"  $5::bytea[], $6::int4[], $8::int8[], $9::bytea[], $10::bytea[]) "
	"  AS u(ns, object_id, seq, epoch, frames, ord, alarm, name, sum)), "
	"ok AS (SELECT i.* FROM i JOIN dobj_owner o ON o.ns = i.ns AND o.object_id = i.object_id "
	"  AND o.epoch = i.epoch AND o.node_id = $7::int8 FOR SHARE OF o), "
	"w AS (INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames, sum) "
	"  SELECT ns, object_id, seq, epoch, frames, sum FROM ok ON CONFLICT DO NOTHING "
	"  RETURNING ns, object_id, seq), "
	"s AS (INSERT INTO dobj_alarm (ns, object_id, scheduled_at, name) "
	"  SELECT ns, object_id, alarm, name FROM ok WHERE alarm > 0 "
	"  ON CONFLICT (ns, object_id) DO UPDATE SET scheduled_at = excluded.scheduled_at, "
	"  name = excluded.name), "
	"d AS (DELETE FROM dobj_alarm a USING ok WHERE ok.alarm = 0 AND a.ns = ok.ns "
	"  AND a.object_id = ok.object_id) "
	"SELECT ok.ord FROM ok JOIN w ON w.ns = ok.ns AND w.object_id = ok.object_id "
	"AND w.seq = ok.seq";

/*
 * The one rule for an append that was not accepted (refused by the fence,
 * or as a duplicate of a row already in the log): when the log holds the
 * row of its (ns, object, seq) with its epoch and its checksum, the row is
 * its own.  It was sent before and committed, and the answer was lost (a
 * connection cut after the commit: the statement is sent again on a new
 * one, RETRY_ONCE in cluster_pg.c, or by a committer after the runtime's
 * connection broke): it counts as acknowledged.  Anything else there is
 * another write's, and the refusal stands.  Only refused appends pay for
 * this statement (one for a batch's refused rows); an append sent the first
 * time (the runtime's own connection sends nothing else) never finds its
 * own row.
 */
static const char own_rows_sql[] =
	"SELECT i.ord FROM unnest($1::text[], $2::bytea[], $3::int8[], $4::int8[], $5::bytea[], "
	"  $6::int4[]) AS i(ns, object_id, seq, epoch, sum, ord) "
	"JOIN dobj_wal w ON w.ns = i.ns AND w.object_id = i.object_id AND w.seq = i.seq "
	"  AND w.epoch = i.epoch AND w.sum = i.sum";

/* Mark in accepted[] the refused jobs (accepted[k] 0) whose row is their
 * own; what it cannot tell (out of memory, the statement failed) stays
 * refused. */
static void own_rows(dobj__pg *pg, dobj__cjob **jobs, int n, int *accepted)
{
	pgarr a[6];
	const char *v[6];
	int lens[6], fmts[6], i, k, refused = 0;
	PGresult *r = NULL;

	for (k = 0; k < n; k++)
		refused += !accepted[k];
	if (!refused)
		return;
	memset(a, 0, sizeof(a));
	arr_rows_begin(a, refused);
	for (k = 0; k < n; k++)
		if (!accepted[k])
			arr_row(a, jobs[k], jobs[k]->sum, 32, k);
	for (i = 0; i < 6; i++) {
		if (a[i].oom)
			goto done;
		v[i] = (const char *)a[i].p;
		lens[i] = (int)a[i].len;
		fmts[i] = 1;
	}
	if (dobj__pg_exec(pg, own_rows_sql, 6, v, lens, fmts, 0, &r) < 0)
		goto done;
	for (i = 0; i < PQntuples(r); i++) {
		k = atoi(PQgetvalue(r, i, 0));
		if (k >= 0 && k < n && !accepted[k])
			accepted[k] = 1;
	}
done:
	PQclear(r);
	for (i = 0; i < 6; i++)
		free(a[i].p);
}

/* A batch of one append that leaves the alarm alone (a lone object's
 * every commit): the plain fenced insert.  The group statement costs ~0.1 ms
 * more per run for one row (the arrays, the CTEs, the join), a quarter of
 * the whole round trip on an idle server. */
const char dobj__append_one_sql[] =
	"INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames, sum) "
	"SELECT $1, $2, $3, $4, $5, $7 FROM dobj_owner "
	"WHERE ns = $1 AND object_id = $2 AND epoch = $4 AND node_id = $6 FOR SHARE";

void dobj__append_one_args(dobj__one_args *a, const dobj__cjob *j)
{
	snprintf(a->seq, sizeof(a->seq), "%lld", j->seq);
	snprintf(a->epoch, sizeof(a->epoch), "%lld", j->epoch);
	snprintf(a->node, sizeof(a->node), "%lld", j->node);
	a->v[0] = j->ns;
	a->v[1] = (const char *)j->id;
	a->v[2] = a->seq;
	a->v[3] = a->epoch;
	a->v[4] = (const char *)j->rec;
	a->v[5] = a->node;
	a->v[6] = (const char *)j->sum;
	for (int i = 0; i < 7; i++) {
		a->lens[i] = 0;
		a->fmts[i] = i == 1 || i == 4 || i == 6;
	}
	a->lens[0] = (int)j->ns_len;
	a->lens[1] = 32;
	a->lens[4] = (int)j->len;
	a->lens[6] = 32;
}

/* The job's verdict from dobj__append_one_sql's outcome (rc, r). */
void dobj__append_one_verdict(dobj__cjob *j, int rc, PGresult *r)
{
	if (rc < 0) {
		dobj__append_fail(j, rc, dobj_error_last());
	} else if (strcmp(PQcmdTuples(r), "1") == 0) {
		j->rc = DOBJ_OK;
	} else {
		char msg[200];
		snprintf(msg, sizeof(msg), "cluster: another node took the object over (fencing "
			"epoch %lld is stale): the write was refused", j->epoch);
		dobj__append_fail(j, DOBJ_EABORTED, msg);
		j->fenced = 1;
	}
}

static void run_append_one(dobj__pg *pg, dobj__cjob *j)
{
	dobj__one_args a;
	PGresult *r = NULL;
	int rc;

	dobj__append_one_args(&a, j);
	rc = dobj__pg_exec_prepared_sized(pg, j->len, DOBJ__SLOT_APPEND_ONE, dobj__append_one_sql, 7, a.v,
		a.lens, a.fmts, 0, &r);
	dobj__append_one_verdict(j, rc, r);
	PQclear(r);
	/* Refused by the fence or as a duplicate key (23505): its own row? */
	if (j->rc < 0 && (j->fenced || !strcmp(pg->sqlstate, "23505"))) {
		int accepted = 0;
		own_rows(pg, &j, 1, &accepted);
		if (accepted) {
			j->rc = DOBJ_OK;
			j->fenced = 0;
			j->msg[0] = '\0';
		}
	}
}

/* A batch that leaves every alarm alone (the usual one): the rows alone,
 * fenced as in append_sql, without the alarm statements and the join that
 * maps the rows back to their positions: the rows it returns are matched
 * by key instead.  PostgreSQL spends ~30 us less on it for one row, ~60 us
 * for four, ~130 us for sixteen (PostgreSQL 15, 4 KiB records). */
#define SLOT_APPEND_ROWS 3

static const char append_rows_sql[] =
	"INSERT INTO dobj_wal (ns, object_id, seq, epoch, frames, sum) "
	"SELECT i.ns, i.object_id, i.seq, i.epoch, i.frames, i.sum FROM unnest($1::text[], "
	"  $2::bytea[], $3::int8[], $4::int8[], $5::bytea[], $6::bytea[]) "
	"  AS i(ns, object_id, seq, epoch, frames, sum) "
	"JOIN dobj_owner o ON o.ns = i.ns AND o.object_id = i.object_id AND o.epoch = i.epoch "
	"  AND o.node_id = $7::int8 FOR SHARE OF o "
	"ON CONFLICT DO NOTHING RETURNING ns, object_id, seq, epoch";

/* The rows append_rows_sql returned (binary: ns, object_id, seq, epoch),
 * marked in accepted[]: one job each, by key and epoch.  The epoch counts:
 * an unsent append of an object's old incarnation and the first of its new
 * one (restored without it) share a seq, and can share a batch when no
 * release goes between them (the object hibernated with sockets); the
 * fence lets only the new one in. */
static void match_rows(PGresult *r, dobj__cjob **jobs, int n, int *accepted)
{
	for (int i = 0; i < PQntuples(r); i++) {
		const unsigned char *ns = (const unsigned char *)PQgetvalue(r, i, 0);
		const unsigned char *id = (const unsigned char *)PQgetvalue(r, i, 1);
		const unsigned char *sq = (const unsigned char *)PQgetvalue(r, i, 2);
		const unsigned char *ep = (const unsigned char *)PQgetvalue(r, i, 3);
		size_t ns_len = (size_t)PQgetlength(r, i, 0);
		unsigned long long seq = 0, epoch = 0;
		if (PQgetlength(r, i, 1) != 32 || PQgetlength(r, i, 2) != 8 ||
		    PQgetlength(r, i, 3) != 8)
			continue;
		for (int b = 0; b < 8; b++) {
			seq = seq << 8 | sq[b];
			epoch = epoch << 8 | ep[b];
		}
		for (int k = 0; k < n; k++)
			if (!accepted[k] && (unsigned long long)jobs[k]->seq == seq &&
			    (unsigned long long)jobs[k]->epoch == epoch &&
			    !memcmp(jobs[k]->id, id, 32) && jobs[k]->ns_len == ns_len &&
			    !memcmp(jobs[k]->ns, ns, ns_len)) {
				accepted[k] = 1;
				break;
			}
	}
}

/* Append the batch (n jobs, all JOB_APPEND of one node) in one round trip;
 * each job gets its verdict.  Without the lock: only the committer reads
 * the jobs' inputs. */
void dobj__append_batch(dobj__pg *pg, dobj__cjob **jobs, int n)
{
	pgarr a[9];
	const char *v[10];
	int lens[10], fmts[10], i, k, rc, *accepted = NULL, plain = 1;
	char node[32];
	PGresult *r = NULL;

	/* The rows' checksums here, off the runtime's thread (~3 us for a
	 * 4 KiB record). */
	for (i = 0; i < n; i++)
		dobj__wal_sum(jobs[i]->id, jobs[i]->seq, jobs[i]->epoch, jobs[i]->rec, jobs[i]->len,
			jobs[i]->sum);
	if (n == 1 && jobs[0]->alarm < 0) {
		run_append_one(pg, jobs[0]);
		return;
	}
	memset(a, 0, sizeof(a));
	arr_rows_begin(a, n);
	arr_begin(&a[6], OID_INT8, n, 0);
	arr_begin(&a[7], OID_BYTEA, n, 1);
	arr_begin(&a[8], OID_BYTEA, n, 0);
	for (i = 0; i < n; i++) {
		dobj__cjob *j = jobs[i];
		long long alarm = j->alarm;
		/* Only the last change of an object's schedule in the batch is
		 * written (one statement cannot upsert one row twice). */
		for (k = i + 1; k < n && alarm >= 0; k++)
			if (jobs[k]->alarm >= 0 && jobs[k]->epoch == j->epoch &&
			    !memcmp(jobs[k]->id, j->id, 32) && !strcmp(jobs[k]->ns, j->ns))
				alarm = -1;
		arr_row(a, j, j->rec, j->len, i);
		arr_i64(&a[6], alarm);
		arr_bytes(&a[7], j->name, j->name_len);
		arr_bytes(&a[8], j->sum, 32);
		if (alarm >= 0)
			plain = 0;
	}
	for (i = 0; i < 9; i++)
		if (a[i].oom) {
			for (k = 0; k < n; k++)
				dobj__append_fail(jobs[k], DOBJ_ENOMEM, "out of memory");
			goto done;
		}
	snprintf(node, sizeof(node), "%lld", jobs[0]->node);
	for (i = 0; i < 10; i++) {
		/* plain: the arrays 0-4, the sums (8), the node */
		int at = plain ? (i < 5 ? i : i == 5 ? 8 : -1) : i < 6 ? i : i == 6 ? -1 : i - 1;
		v[i] = at < 0 ? node : (const char *)a[at].p;
		lens[i] = at < 0 ? 0 : (int)a[at].len;
		fmts[i] = at >= 0;
	}
	/* A batch carrying megabytes gets a bound by its size (a[4]: the
	 * records' array). */
	if (plain)
		rc = dobj__pg_exec_prepared_sized(pg, a[4].len, SLOT_APPEND_ROWS, append_rows_sql, 7, v,
			lens, fmts, 1, &r);
	else
		rc = dobj__pg_exec_prepared_sized(pg, a[4].len, 0, append_sql, 10, v, lens, fmts, 0,
			&r);
	if (rc < 0) {
		for (k = 0; k < n; k++)
			dobj__append_fail(jobs[k], rc, dobj_error_last());
		goto done;
	}
	if (!(accepted = calloc((size_t)n, sizeof(*accepted)))) {
		for (k = 0; k < n; k++)
			dobj__append_fail(jobs[k], DOBJ_ENOMEM, "out of memory");
		goto done;
	}
	if (plain)
		match_rows(r, jobs, n, accepted);
	for (i = 0; !plain && i < PQntuples(r); i++) {
		k = atoi(PQgetvalue(r, i, 0));
		if (k >= 0 && k < n)
			accepted[k] = 1;
	}
	own_rows(pg, jobs, n, accepted);
	for (k = 0; k < n; k++) {
		char msg[200];
		if (accepted[k]) {
			jobs[k]->rc = DOBJ_OK;
			continue;
		}
		snprintf(msg, sizeof(msg), "cluster: another node took the object over (fencing "
			"epoch %lld is stale): the write was refused", jobs[k]->epoch);
		dobj__append_fail(jobs[k], DOBJ_EABORTED, msg);
		jobs[k]->fenced = 1;
	}
done:
	PQclear(r);
	free(accepted);
	for (i = 0; i < 9; i++)
		free(a[i].p);
}
