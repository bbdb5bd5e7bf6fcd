/*
 * The jobs of a cluster node's commit pipeline (cluster_commit.c) and the
 * statements that append them to the log (cluster_append.c).
 */
#ifndef DOBJ_CLUSTER_APPEND_H
#define DOBJ_CLUSTER_APPEND_H

#include "cluster_int.h"

enum { JOB_APPEND, JOB_RELEASE };

/* Shared by an incarnation (its runtime-side state) and its jobs; under
 * cl->mu. */
struct dobj__cinc {
	int refs;
	int failed;     /* an append failed: later ones are not sent */
	int out;        /* jobs taken by a committer, not done */
	unsigned scan;  /* passed over in this pass of the queue: so are its later jobs */
};

struct dobj__cjob {
	dobj__cjob *next;
	int kind;
	/* the statement's inputs, copied: the committer touches nothing else */
	char *ns;
	size_t ns_len;
	unsigned char id[32];
	long long seq, epoch, node;
	unsigned char *rec;
	size_t len;
	unsigned char sum[32]; /* the row's checksum (dobj__wal_sum) */
	long long alarm;   /* the schedule after it: -1 unchanged, 0 none, else ns */
	char *name;        /* the object's name for dobj_alarm (NULL: none) */
	size_t name_len;
	dobj__cinc *inc;
	int retry;         /* a give-back release: times it is tried again after failing */
	/* the outcome (the committer's, under mu) */
	int rc;
	int fenced;        /* refused by the fence: another node has the object */
	char msg[400];
	/* the runtime's thread only */
	dobj_obj *obj;     /* a reference */
	dobj__hold hold;
};

/* The one-row append's prepared statement (its slot on every connection
 * that sends it: a committer's, the runtime's own). */
#define DOBJ__SLOT_APPEND_ONE 2
extern const char dobj__append_one_sql[];

/* The parameters of dobj__append_one_sql for one job. */
typedef struct dobj__one_args {
	char seq[32], epoch[32], node[32];
	const char *v[7];
	int lens[7], fmts[7];
} dobj__one_args;

/** Fill `a` with job j's parameters of dobj__append_one_sql. */
void dobj__append_one_args(dobj__one_args *a, const dobj__cjob *j);
/** The job's verdict from dobj__append_one_sql's outcome (rc, r). */
void dobj__append_one_verdict(dobj__cjob *j, int rc, PGresult *r);
/** The job failed with rc (an error code) and msg. */
void dobj__append_fail(dobj__cjob *j, int rc, const char *msg);
/** Append the batch (n jobs, all appends of one node) in one round trip;
 *  each job gets its verdict (a committer's, without the lock). */
void dobj__append_batch(dobj__pg *pg, dobj__cjob **jobs, int n);

#endif
