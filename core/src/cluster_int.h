/* Private declarations of cluster mode (cluster.c, cluster_pg.c, cluster_wal.c). */
#ifndef DOBJ_CLUSTER_INT_H
#define DOBJ_CLUSTER_INT_H

#include <libpq-fe.h>
#include <sqlite3.h>

#include "internal.h"

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* A PostgreSQL connection with bounded waits (cluster_pg.c). */
typedef struct dobj__pg {
	char *url;
	PGconn *conn;       /* NULL while disconnected */
	double timeout_ms;  /* every wait, the connection included */
	int no_reconnect;   /* fail at once while disconnected (closing) */
	char sqlstate[6];   /* of the last failed statement ("" otherwise) */
} dobj__pg;

/** Milliseconds on CLOCK_BOOTTIME (counts while the process is stopped). */
double dobj__boot_ms(void);
/** DOBJ_EARG with libpq's words for a connection string it cannot parse. */
int dobj__pg_check_url(const char *url);
/** Run one statement (parameters as PQexecParams takes them); *out is the
 *  result to PQclear on success.  Reconnects first when needed. */
int dobj__pg_exec(dobj__pg *pg, const char *sql, int nparams, const char *const *values,
	const int *lengths, const int *formats, int binary, PGresult **out);
int dobj__pg_simple(dobj__pg *pg, const char *sql);
void dobj__pg_drop(dobj__pg *pg);

/* The cluster state of a runtime. */
struct dobj__cluster {
	dobj__pg pg;
	char *addr;
	long long node_id;
	double ttl_ms, grace_ms;
	double lease_view;  /* boot ms: past it this node releases no result */
	dobj_timer *renew;
	int closing;
	/* The live owner the last refused claim found (routing: cluster_route.c). */
	long long owner_node;
	char owner_addr[256];
	dobj_cluster_log_fn log_fn; /* dobj_rt_cluster_set_log (cluster_log.c) */
	void *log_data;
	int unrenewed_logged; /* "could not renew" was logged since the last renewal */
};

/** A line about node `node` for the node's log hook, delivered from the
 *  runtime's loop (cluster_log.c); nothing without a hook.  Leaves
 *  dobj_error_last alone. */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void dobj__cluster_log(dobj_rt *rt, long long node, const char *fmt, ...);

/* Calls between nodes (cluster_route.c). */
/** Listen on cl->addr when it is set (port 0: cl->addr becomes the port
 *  the system chose) and start the network thread; before the join. */
int dobj__route_start(dobj_rt *rt, struct dobj__cluster *cl);
/** Stop the network thread, fail what is in flight (runtime closing). */
void dobj__route_stop(dobj_rt *rt);

/* The cluster state of an incarnation. */
struct dobj__cluster_obj {
	long long epoch;
	long long seq;      /* the last seq appended (or restored) */
	long long wal_off;  /* end of the last commit frame shipped, in the -wal file */
	unsigned salt;      /* salt-1 of the -wal file's generation wal_off is in */
	int64_t alarm;      /* the alarm record dobj_alarm holds (ns since the epoch; 0: none) */
};

/* Page capture and restore (cluster_wal.c).  A record is what one or more
 * local commits changed: u32 page size, u32 pages in the database after it,
 * u32 count, then count x (u32 page number, page bytes); big-endian. */
/** Read the committed frames of `wal_path` past `off` into a record (*rec,
 *  malloc'd; *len 0 when nothing new), the new end in *end.  *salt is the
 *  generation `off` belongs to (updated): another one starts at the top. */
int dobj__wal_capture(const char *wal_path, long long off, unsigned *salt, unsigned char **rec,
	size_t *len, long long *end);
/** Apply a record to the database file open on fd. */
int dobj__wal_apply(int fd, const unsigned char *rec, size_t len);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
