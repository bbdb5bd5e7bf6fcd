/* Private declarations of cluster mode (cluster.c, cluster_pg.c, cluster_wal.c). */
#ifndef DOBJ_CLUSTER_INT_H
#define DOBJ_CLUSTER_INT_H

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>

#include "internal.h"

/* Big-endian fields of the log's records, snapshots and claims. */
static inline uint32_t dobj__be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void dobj__put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* Not an SQLite page size (512 to 65536, a power of two). */
static inline int dobj__bad_page_size(uint32_t psz)
{
	return psz < 512 || psz > 65536 || (psz & (psz - 1));
}

/* The node's bound on page images (cluster_record.c). */
typedef struct dobj__page_budget dobj__page_budget;

#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* How a node closes the WebSockets of an object it lost (its lease lapsed,
 * its fence was refused): 1012 "service restart", reconnect (docs/cluster.md). */
#define DOBJ__WS_LOST_CODE 1012
#define DOBJ__WS_LOST_REASON "this node lost the Durable Object to another node: reconnect"

/* A PostgreSQL connection with bounded waits (cluster_pg.c). */
typedef struct dobj__pg {
	char *url;
	PGconn *conn;       /* NULL while disconnected */
	double timeout_ms;  /* every wait, the connection included */
	int no_reconnect;   /* fail at once while disconnected (closing) */
	char sqlstate[6];   /* the last statement's, when the server refused it ("" when
	                     * it ran or never reached the server) */
	unsigned prepared;  /* statements prepared on this connection (bit per slot) */
	int broken;         /* the last statement lost the connection */
	int flushing;       /* dobj__pg_send_prepared: part of it is still to flush */
	const char *role;   /* its application_name is "dobj <role>" (NULL: "node") */
	double stmt_ms;     /* the running statement's own bound (0: timeout_ms) */
	const int *halt;    /* its worker was told to stop (atomic; NULL: never) */
	PGresult *early;    /* dobj__pg_poll: the result read before the answer's end */
} dobj__pg;

/* A job of many statements (a snapshot's parts, a log's pieces) checks
 * this between them: a closing runtime does not wait for the rest. */
static inline int dobj__pg_halted(const dobj__pg *pg)
{
	return pg->halt && __atomic_load_n(pg->halt, __ATOMIC_ACQUIRE);
}

/* The slowest a link and a server may move a snapshot's data, bytes per
 * second: a statement that carries N bytes (a part, a format-1 snapshot
 * row, an append of DOBJ__PG_SIZED_FROM or more) is bounded by the timeout plus N at this rate (16 MiB: 16 s more),
 * not by the timeout alone, which a big part never met on a slow link or
 * disk.  A stalled server is still found, later. */
#define DOBJ__PG_MIN_RATE (1 << 20)

/** Split "host:port" ("[v6]:port" too): DOBJ_EARG, naming node_addr, else. */
int dobj__route_split_addr(const char *addr, char *host, size_t hcap, char *port, size_t pcap);
/** Milliseconds on CLOCK_BOOTTIME (counts while the process is stopped). */
double dobj__boot_ms(void);
/** DOBJ_EARG with libpq's words for a connection string it cannot parse. */
int dobj__pg_check_url(const char *url);
/** Run one statement (parameters as PQexecParams takes them); *out is the
 *  result to PQclear on success.  Reconnects first when needed. */
int dobj__pg_exec(dobj__pg *pg, const char *sql, int nparams, const char *const *values,
	const int *lengths, const int *formats, int binary, PGresult **out);
/** The same with a statement prepared once per connection (`slot` < 32
 *  names it; the same slot must always carry the same sql). */
int dobj__pg_exec_prepared(dobj__pg *pg, int slot, const char *sql, int nparams,
	const char *const *values, const int *lengths, const int *formats, int binary,
	PGresult **out);
int dobj__pg_simple(dobj__pg *pg, const char *sql);
/** From this many bytes on, an append (cluster_commit.c) is bounded by its
 *  size as well (dobj__pg_exec_prepared_sized); a smaller one keeps the
 *  plain timeout and its one round trip (the size would add under 1 s). */
#define DOBJ__PG_SIZED_FROM (1u << 20)
/** dobj__pg_exec_prepared for a statement that carries `bytes` of data,
 *  outside a transaction: past DOBJ__PG_SIZED_FROM, bounded (the client's
 *  wait and the server's statement_timeout, set for it and back) by the
 *  timeout plus bytes at DOBJ__PG_MIN_RATE; else as dobj__pg_exec_prepared. */
int dobj__pg_exec_prepared_sized(dobj__pg *pg, size_t bytes, int slot, const char *sql,
	int nparams, const char *const *values, const int *lengths, const int *formats,
	int binary, PGresult **out);
/** dobj__pg_exec for a statement that carries `bytes` of data, inside the
 *  caller's transaction: bounded (the client's wait and the server's
 *  statement_timeout) by the timeout plus bytes at DOBJ__PG_MIN_RATE. */
int dobj__pg_exec_sized(dobj__pg *pg, size_t bytes, const char *sql, int nparams,
	const char *const *values, const int *lengths, const int *formats, int binary,
	PGresult **out);
void dobj__pg_drop(dobj__pg *pg);
/** Connect if needed and prepare `sql` in `slot` (for a connection another
 *  thread will use without waiting: dobj__pg_send_prepared). */
int dobj__pg_prepare(dobj__pg *pg, int slot, const char *sql, int nparams);
/** Send a statement prepared in `slot` without waiting (text results): 0
 *  sent, 1 part of it is still to flush (dobj__pg_poll goes on with it),
 *  < 0 not sent (the connection was dropped; the statement did not run). */
int dobj__pg_send_prepared(dobj__pg *pg, int slot, int nparams, const char *const *values,
	const int *lengths, const int *formats);
/** Go on with what dobj__pg_send_prepared sent, without waiting: 1 while
 *  its answer is still to come (*want_write: the socket must take more
 *  first), else its outcome as dobj__pg_exec reports one. */
int dobj__pg_poll(dobj__pg *pg, int *want_write, PGresult **out);
/** The same, waiting up to `deadline` (boot ms). */
int dobj__pg_collect(dobj__pg *pg, double deadline, PGresult **out);
/** Drop the connection of a statement that did not answer in time; the
 *  error says so. */
int dobj__pg_give_up(dobj__pg *pg);
/** *pg, disconnected, for the same server and timeout as `from` (its own
 *  copy of the URL: free it with free(pg->url)). */
int dobj__pg_init_from(dobj__pg *pg, const dobj__pg *from);
/** Connect now if not connected (an idle connection the server closed is
 *  made again): DOBJ_OK, or why not. */
int dobj__pg_ensure(dobj__pg *pg);
/** Move `from`'s connection (and what is prepared on it) to `to`, whose
 *  own is dropped; `from` is left disconnected. */
void dobj__pg_move(dobj__pg *to, dobj__pg *from);

/* What waits for PostgreSQL's confirmation of an object's writes (or for
 * the node's lease view): finished results and WebSocket output. */
typedef struct dobj__hold {
	dobj_task *head, *tail;        /* linked by dnext, each a held reference */
	struct dobj__ws_held **ws;
	size_t nws, capws;
} dobj__hold;

typedef struct dobj__cjob dobj__cjob;   /* an append or a release (cluster_commit.c) */

/* The most committers (threads, each with its own connection) a node runs:
 * appends of different objects go on several connections at once, so that
 * PostgreSQL flushes their transactions' log together (cluster_commit.c).
 * Eight, not four: with 16 callers over 3 nodes (~5 appends in flight per
 * node), four kept appends waiting for a free connection (0.3-0.4 ms
 * median) in front of a round trip that did not get cheaper by batching
 * them: fewer committers made bigger batches and less throughput (one: half
 * of four's).  A node with little to write still opens one connection. */
#define DOBJ__COMMITTERS 8

typedef struct dobj__committer {
	struct dobj__cluster *cl;
	pthread_t th;
	pthread_cond_t wake;
	int idle;           /* waiting for work (under mu) */
	int woken;          /* woken for work, not back at the queue yet (under mu) */
	int used;           /* has run a statement (its own) */
	int connected;      /* holds a connection (under mu) */
	double rest_until;  /* could not connect while others were: not woken before
	                     * this (mono ms) while another one is connected */
	dobj__pg pg;        /* the thread's own; connected at its first statement */
} dobj__committer;
typedef struct dobj__cinc dobj__cinc;   /* an incarnation, as the worker knows it */
typedef struct dobj__due dobj__due;     /* a due alarm found by the lease thread */

/* The cluster state of a runtime.  The runtime's thread uses `pg` only to
 * join and to leave (between the two, the lease keeper holds its
 * connection); the node's threads own a connection each: the
 * committers (appends, in groups, and releases: cluster_commit.c), the
 * lease keeper (renewal, rejoining, the alarm scan: cluster_lease.c), the
 * compactor (snapshots: cluster_snapshot.c) and the activator (claims and
 * restores, for calls and alarms, and a pure client's lookups:
 * cluster_activate.c).  They hand results back through the runtime's fd
 * (dobj__rt_post). */
/* A hold that keeps dobj_rt_run waiting (and dobj_rt_pending counting)
 * while one of the node's threads has work out: the work's end comes through
 * the runtime's fd, which dobj_rt_run alone would not wait for.  Held while
 * busy(owner) says so, let go once nothing is out.  A count (rt->nkeep), not
 * a timer: a timer armed and cancelled per commit cost two timerfd_settime
 * calls of every commit's cycle (a VM exit each here).  With `fired` set, a
 * timer also runs every `ms` while busy, and fired(owner) is called when it
 * does (the route expires calls past their timeout).  The runtime's thread
 * only. */
typedef struct dobj__watch {
	dobj_rt *rt;
	double ms;                 /* the timer's period (with fired only) */
	int (*busy)(void *owner);
	void *owner;
	void (*fired)(void *owner);
	dobj_timer *tm;
	int held;
} dobj__watch;

/* After the work out may have changed: take or let go of the hold (and
 * the timer). */
void dobj__watch_update(dobj__watch *w);
/* On close: let go of the hold and cancel the timer, whatever is out. */
void dobj__watch_stop(dobj__watch *w);
/* A condition variable whose timed waits run on CLOCK_MONOTONIC (the node's
 * threads wait on it; a wall-clock step must not stretch or cut a wait). */
int dobj__cond_init(pthread_cond_t *c);
/* *ts = CLOCK_MONOTONIC now + ms (for a timed wait on such a condition). */
void dobj__mono_deadline(struct timespec *ts, double ms);

/* A job for a dobj__worker: the first member of the worker's own job type. */
typedef struct dobj__wjob {
	struct dobj__wjob *next;
} dobj__wjob;

/* The activators a node runs (cluster_activate.c), each a worker with its
 * own thread and connection: an object's activations always go to the same
 * one (by its ID), so they stay in order and never overlap (two would write
 * the same file), while a slow activation holds up a quarter of the others
 * rather than all of them. */
#define DOBJ__ACTIVATORS 4

/* One of the node's threads with a PostgreSQL connection of its own: it
 * takes jobs in order from the runtime's thread, runs them one at a time
 * and hands each back through the runtime's fd; its watch keeps
 * dobj_rt_run waiting while jobs are out (cluster_worker.c).  The
 * activator and the compactor are two. */
typedef struct dobj__worker {
	struct dobj__cluster *cl;
	/* the worker's thread: do the job on the worker's connection */
	void (*run)(struct dobj__cluster *cl, dobj__pg *pg, dobj__wjob *j);
	/* the runtime's thread: a job that ran (or never will: stop) */
	void (*done)(struct dobj__cluster *cl, dobj__wjob *j);
	pthread_mutex_t mu;
	pthread_cond_t wake, idle;
	pthread_t th;
	int stop, busy;
	dobj__wjob *cur;    /* the job under way (busy) */
	int halted;         /* stop, for the job under way (atomic: its pg.halt) */
	dobj__wjob *q_head, *q_tail, *d_head, *d_tail;
	dobj__pg pg;
	/* the runtime's thread only */
	size_t out;         /* pushed, not done yet */
	dobj__watch watch;
} dobj__worker;

/** pthread_create for one of the node's threads: with every signal blocked
 *  (a host that waits for SIGTERM on a signalfd, as dobj-lua dev does, has
 *  it blocked on its own thread; the kernel would deliver it to ours, with
 *  its default action, instead).  pthread_create's result. */
int dobj__thread_start(pthread_t *th, void *(*fn)(void *), void *arg);
/** Tell a worker to stop (its queued jobs never start) without waiting:
 *  dobj__worker_stop then joins it (several stopped at once). */
void dobj__worker_halt(dobj__worker *w);
/** Take the queued jobs that `keep` does not keep out of w's queue (unrun,
 *  then done) and halt the job under way unless `keep` keeps it, without
 *  waiting: dobj__worker_settle waits for it (several at once). */
void dobj__worker_cancel(dobj__worker *w, int (*keep)(dobj__wjob *j),
	void (*unrun)(dobj__wjob *j));
/** Wait until w runs no job that `keep` does not keep, then hand back
 *  (done) what ended; the worker goes on with the kept jobs. */
void dobj__worker_settle(dobj__worker *w, int (*keep)(dobj__wjob *j));
/** Start a worker (*out, freed by dobj__worker_stop) whose watch re-arms
 *  every `watch_ms` while jobs are out; `role` (a static string) names its
 *  connection in pg_stat_activity ("dobj <role>"). */
int dobj__worker_start(dobj__worker **out, struct dobj__cluster *cl, const char *role,
	double watch_ms,
	void (*run)(struct dobj__cluster *cl, dobj__pg *pg, dobj__wjob *j),
	void (*done)(struct dobj__cluster *cl, dobj__wjob *j));
/** Queue a job (the runtime's thread). */
void dobj__worker_push(dobj__worker *w, dobj__wjob *j);
/** Stop *wp (NULL: nothing) and set it to NULL: the queue gets up to
 *  `wait_ms` to empty first (0: no wait); each job that never ran goes
 *  through unrun, then, as every job, through done. */
void dobj__worker_stop(dobj__worker **wp, double wait_ms, void (*unrun)(dobj__wjob *j));

/* The runtime thread's own connection for a lone append (cluster_commit.c,
 * "inline appends"). */
typedef struct dobj__inline_pg {
	/* the runtime's thread only */
	dobj__pg pg;               /* conn NULL while it has none */
	dobj__cjob *job;           /* the append out on it */
	int fd;                    /* its socket while in the runtime's epoll set, else -1 */
	int want_write;            /* ... watched for POLLOUT too */
	double deadline;           /* boot ms: the answer is late past it */
	dobj_timer *timer;         /* checks the deadline */
	double ask_after;          /* boot ms: no new connection asked for before */
	/* under cl->mu */
	int asked;                 /* a committer is to connect one */
	PGconn *handed;            /* connected and prepared, for the runtime to take */
	unsigned handed_prepared;
} dobj__inline_pg;

struct dobj__cluster {
	dobj_rt *rt;
	dobj__pg pg;
	char *addr;
	dobj__page_budget *pages; /* the images incarnations appended last (cluster_record.c) */
	int folder_fd;      /* the node's folder, flock'ed while the node lives (dobj__folder_node) */
	long long node_id;  /* as the runtime's thread knows it */
	double ttl_ms, grace_ms;
	double call_timeout_ms; /* a routed call's wait for its answer */
	double lease_view;  /* boot ms: past it this node releases no result (runtime's copy) */
	int closing;
	/* the runtime's thread only */
	size_t jobs_out;    /* appends handed over and not drained yet */
	dobj__hold gate;    /* confirmed, waiting for the lease view */
	unsigned long gate_gen; /* the renewal count when the gate asked for one */
	dobj__watch watch;  /* while appends are out or results wait for the lease */
	dobj__inline_pg inl;
	dobj__cjob *t_head, *t_tail; /* this round's appends, handed over when it ends */
	/* shared with the threads: under mu */
	pthread_mutex_t mu;
	pthread_cond_t lwake, idle;
	pthread_t lth;
	int threads, stop;
	dobj__committer com[DOBJ__COMMITTERS];
	int ncom;                      /* committers running */
	int nwoken;                    /* of them woken, not back at the queue yet */
	unsigned scan;                 /* the committers' last pass over the queue */
	dobj__cjob *q_head, *q_tail;   /* for the committers */
	dobj__cjob *r_retry;           /* give-back releases that failed: queued after a renewal */
	size_t q_busy;                 /* taken by a committer, not done */
	dobj__cjob *d_head, *d_tail;   /* done, for the runtime */
	long long l_node;              /* the lease keeper's node (0: to join) */
	double l_view;
	unsigned long l_gen;           /* renewals finished */
	int l_ok;                      /* the last one held the lease */
	int l_lost;                    /* the lease lapsed: rejoined as l_node */
	int renew_now;
	dobj__due *due;
	/* The unique keys of the namespaces with alarms, as a PostgreSQL text[]
	 * literal (NULL: none): the lease keeper looks for due alarms of those
	 * only (dobj__cluster_alarm_ns). */
	char *alarm_keys;
	int bad_alarm_logged;          /* the runtime's: a lying alarm row was logged */
	/* the lease keeper's own */
	dobj__pg lpg;
	/* The live owner the last refused claim found (routing: cluster_route.c). */
	long long owner_node;
	char owner_addr[256];
	dobj_cluster_log_fn log_fn; /* dobj_rt_cluster_set_log (cluster_log.c) */
	void *log_data;
	int unrenewed_logged; /* "could not renew" was logged since the last renewal */
	int cut_off;          /* no renewal for TTL + grace: objects reset, sockets closed */
	char l_err[300];               /* why the lease keeper could not join again (under mu) */
	dobj__worker *snap;            /* the compactor (cluster_snapshot.c) */
	dobj__worker *act[DOBJ__ACTIVATORS]; /* the activators (cluster_activate.c) */
	long long snap_bytes;          /* log bytes that call for a snapshot (< 0: never) */
	long long snap_part;           /* bigger snapshot images go in parts of this size */
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
/** The node leaves: the calls it holds are answered before the route
 *  stops (cluster_route.c). */
void dobj__route_leave(dobj_rt *rt);

typedef struct dobj__page_cache dobj__page_cache;

/** Where the last capture of an object's -wal file ended: the end of its
 *  last commit frame (0: none yet), the file's generation (salts) and page
 *  size (0: not read yet). */
typedef struct dobj__wal_pos {
	long long off;
	unsigned salt1, salt2, psz;
} dobj__wal_pos;

/* The cluster state of an incarnation. */
struct dobj__cluster_obj {
	long long epoch;
	long long seq;      /* the last seq handed to the committer (or restored) */
	dobj__wal_pos wal;  /* where the last capture of the -wal file ended */
	int wal_fd;         /* the -wal file, kept open between captures (-1: none) */
	dobj__page_cache *pages; /* the page images it appended last (cluster_record.c) */
	int64_t alarm;      /* the alarm record dobj_alarm holds (ns since the epoch; 0: none) */
	dobj__cjob *last;   /* its last append not drained yet (results wait for it) */
	dobj__cinc *inc;
	/* snapshots (cluster_snapshot.c) */
	long long seq_epoch;  /* the epoch of log row `seq` (the file's state is (seq, seq_epoch)) */
	unsigned char seq_sum[32]; /* log row `seq`'s checksum, when seq_sum_ok (the cache marker's) */
	int seq_sum_ok;
	long long log_bytes;  /* log confirmed since the last snapshot */
	long long conf_seq;   /* the last seq PostgreSQL confirmed */
	long long snap_size;  /* bytes of the last snapshot */
	int snap_out;         /* a snapshot of this incarnation is queued or running */
};

/* cluster.c */
/** Join as a new node: *node, and *view the lease view it gives. */
int dobj__node_join(dobj__pg *pg, const char *addr, double ttl_ms, long long *node,
	double *view);
/** Release every object of the node and mark it as gone. */
int dobj__node_leave(dobj__pg *pg, long long node);
/** Reset every live object of the runtime (the node lost them); how many. */
size_t dobj__cluster_abort_all(dobj_rt *rt, const char *why);

/* cluster_commit.c */
/** Start the committer and the lease keeper (dobj_rt_cluster). */
int dobj__cluster_start(struct dobj__cluster *cl);
/** Stop them after handing over what is out (bounded); drain. */
void dobj__cluster_stop(struct dobj__cluster *cl);
/** Ask the lease keeper for a renewal now. */
void dobj__lease_kick(struct dobj__cluster *cl);
/* Sets up cl->watch (its period follows the node's timeout and TTL). */
void dobj__commit_watch_init(struct dobj__cluster *cl);
/** Queue the release of an incarnation behind its appends. */
void dobj__cluster_queue_release(struct dobj__cluster *cl, dobj_obj *obj,
	struct dobj__cluster_obj *co);

/** The path of the object's database file plus `suffix` (malloc'd). */
char *dobj__cluster_path(dobj_obj *obj, const char *suffix);

/* cluster_lease.c: the lease keeper's thread. */
struct dobj__due {
	dobj__due *next;
	dobj_id id;
	int64_t when;
	char *ns, *name;    /* in the same allocation; name NULL when none */
	size_t name_len;
};
void *dobj__lease_main(void *arg);
/** Hand the alarms found due to their namespaces (the runtime's thread). */
void dobj__due_track(dobj_rt *rt, dobj__due *list);

/* Page capture and restore (cluster_wal.c).  A record is what one or more
 * local commits changed: u32 page size, u32 pages in the database after it,
 * u32 count, then count x (u32 page number, page bytes); big-endian. */
/** What dobj__wal_capture returns when it must open the file and was given
 *  no path (the caller builds it only then: most commits need none). */
#define DOBJ__WAL_NEED_PATH 1
/** Read the committed frames of the -wal file past `at` into a record
 *  (*rec, malloc'd; *len 0 when nothing new) and where they end into *next.
 *  `frames`: how many frames SQLite said the file holds after the commit
 *  (its WAL hook; <= 0: not known): with it, one read past at->off when all
 *  agrees with `at`, else the header and the size are read first.  *fd is
 *  the file, kept open from one call to the next (-1: open `wal_path`; one
 *  removed since is closed and opened again; close it when done). */
int dobj__wal_capture(int *fd, const char *wal_path, const dobj__wal_pos *at, long long frames,
	unsigned char **rec, size_t *len, dobj__wal_pos *next);
/** How many captures read the file's header and size (tests: the others
 *  read the frames alone). */
extern long dobj__wal_header_reads;
/* Log records as appended (cluster_record.c): format 1 above, or format 2,
 * where pages the incarnation appended before carry only the byte ranges
 * that changed since. */
/** The node's bound on the page images its incarnations keep (bytes,
 *  their headers included); freed with its last reference (the node's,
 *  each cache's).  The runtime's thread only. */
dobj__page_budget *dobj__page_budget_new(size_t limit);
void dobj__page_budget_unref(dobj__page_budget *b);
size_t dobj__page_budget_used(const dobj__page_budget *b);
/** The format-2 record of format-1 record `rec` against the images the
 *  incarnation appended last (*cache, made in `budget` when NULL; no
 *  budget: every page whole), into *out (malloc'd); the cache then holds
 *  rec's images.  On failure (out of memory, a malformed record) the cache
 *  holds no image that is not the log's. */
int dobj__rec_changes(dobj__page_budget *budget, dobj__page_cache **cache,
	const unsigned char *rec, size_t len, unsigned char **out, size_t *out_len);
void dobj__page_cache_free(dobj__page_cache *pc);
typedef struct dobj__rec_info {
	uint32_t psz, dbsize;
	uint32_t top;         /* the largest page number in the record */
	uint32_t changed_top; /* the largest page number changed in part */
} dobj__rec_info;
/** Bytes for page `pgno` at offset `off` in it. */
typedef int (*dobj__rec_write_fn)(void *arg, uint32_t pgno, uint32_t off,
	const unsigned char *p, size_t n);
#define DOBJ__REC_MALFORMED 1
/** Walk a record of either format, checking it as it goes: *info, and each
 *  page's or run's bytes to `write` (NULL: only checked).  DOBJ_OK,
 *  DOBJ__REC_MALFORMED, or write's error.  A page changed in part must be
 *  in the image already (info->changed_top: the caller checks). */
int dobj__rec_walk(const unsigned char *rec, size_t len, dobj__rec_info *info,
	dobj__rec_write_fn write, void *arg);
/** The checksum of a log row (dobj_wal.sum): SHA-256 of the object's ID,
 *  the row's seq and epoch (big-endian 64-bit) and the SHA-256 of its
 *  frames, so that a row's pages, and pages moved to another row, are both
 *  caught.  DOBJ__WAL_SUM_SQL computes the same in PostgreSQL (the
 *  migration of rows written before schema version 3). */
void dobj__wal_sum(const unsigned char *id, long long seq, long long epoch,
	const unsigned char *rec, size_t len, unsigned char sum[32]);
/** 1 when `sum` (`sum_len` bytes) is the row's checksum. */
int dobj__wal_sum_ok(const unsigned char *id, long long seq, long long epoch,
	const unsigned char *rec, size_t len, const unsigned char *sum, size_t sum_len);
#define DOBJ__WAL_SUM_SQL \
	"sha256(object_id || int8send(seq) || int8send(epoch) || sha256(frames))"

/* Activation off the runtime's thread (cluster_activate.c). */
typedef struct dobj__act dobj__act;
/** A cache marker to write (cluster_snapshot.c), off the runtime's thread. */
typedef struct dobj__mark dobj__mark;
int dobj__act_start(struct dobj__cluster *cl);
/** The runtime closes (before dobj__cluster_stop: it waits on cl->mu's
 *  conditions): activations that did not run fail with ECLOSED, a running
 *  one is halted and waited for; the activators stay for cache markers. */
void dobj__act_closing(struct dobj__cluster *cl);
/** reset() (dobj__cluster_reset): queued cache markers and activations of
 *  objects gone never start; the one under way is halted and waited for. */
void dobj__act_reset(struct dobj__cluster *cl);
/** Stop the activators: queued cache markers get a bounded time to be
 *  written, the rest are dropped (the next activation rebuilds); the
 *  activations that did not run fail with ECLOSED. */
void dobj__act_stop(struct dobj__cluster *cl);
/** Queue obj's cache marker (dobj__snap_release's; NULL: none) on obj's
 *  activator, ahead of its next activation; dropped when there is none. */
void dobj__act_mark(struct dobj__cluster *cl, dobj_obj *obj, dobj__mark *m);
/** Start obj's activation on the activator, its gate closed: 1, or an error. */
int dobj__act_begin(struct dobj__cluster *cl, dobj_obj *obj);
/** obj->act is set: 1 while it is out, else its outcome (0: obj->cluster
 *  set; an error, with cl->owner_node/addr for routing; 2: it was a
 *  lookup, dropped). */
int dobj__act_take(struct dobj__cluster *cl, dobj_obj *obj);
/** Activate obj for its alarm: 2 while the activation is out (the alarm
 *  is told when it ends: dobj__alarm_activated), else its outcome as
 *  dobj__act_take's. */
int dobj__act_for_alarm(struct dobj__cluster *cl, dobj_obj *obj);
/** A pure client's lookup of obj's node, on the activator: 2 while it is
 *  out (calls park at obj's gate), then 1 and *node/addr, 0 when no live
 *  node can take the object, or an error. */
int dobj__act_lookup(struct dobj__cluster *cl, dobj_obj *obj, long long *node, char *addr,
	size_t cap);
/** An incarnation goes with its activation's outcome not taken: release a
 *  claim that went through. */
void dobj__act_drop(struct dobj__cluster *cl, dobj_obj *obj);

/* Snapshots and restore (cluster_snapshot.c). */
/** Start the compactor thread (dobj_rt_cluster, after dobj__cluster_start). */
int dobj__snap_start(struct dobj__cluster *cl);
/** Stop it: what is queued gets a bounded time to finish; the rest is
 *  dropped (a snapshot is an optimisation, never needed for correctness). */
void dobj__snap_stop(struct dobj__cluster *cl);
/** reset() (dobj__cluster_reset): queued snapshots of objects gone never
 *  start, the one under way is halted (_halt); then it is waited for
 *  (_wait), after the activators were halted too, so that both end at once. */
void dobj__snap_reset_halt(struct dobj__cluster *cl);
void dobj__snap_reset_wait(struct dobj__cluster *cl);
/** An append of `obj` (seq, epoch, its checksum `sum`, `len` bytes) was
 *  confirmed: count it,
 *  and queue a snapshot once the log since the last one calls for it. */
void dobj__snap_confirmed(struct dobj__cluster *cl, dobj_obj *obj, long long seq,
	long long epoch, const unsigned char *sum, size_t len);
/** Rebuild the object's local file (`base`: its path) from the latest
 *  snapshot and the log after it, unless the cached file is already at the
 *  latest seq; fills co's seq, seq_epoch, alarm, log_bytes and snap_size.
 *  Touches nothing of the runtime's: any thread with its own connection. */
int dobj__snap_restore(dobj__pg *pg, const char *ns, size_t ns_len, const unsigned char *id,
	const char *base, struct dobj__cluster_obj *co);
/** An incarnation goes (the runtime's thread): the marker that will vouch
 *  for its file when it ended cleanly at a confirmed seq (the caller's:
 *  dobj__snap_mark_write on the object's activator, then
 *  dobj__snap_mark_free), else NULL.  It reads nothing of the file. */
dobj__mark *dobj__snap_release(dobj_obj *obj, struct dobj__cluster_obj *co);
/** Hash the file and write its marker (any thread; the object's activator,
 *  so that its next activation comes after): none when the file is not a
 *  cache, or `pg` (the worker's: NULL for none) is halted meanwhile. */
void dobj__snap_mark_write(dobj__mark *m, const dobj__pg *pg);
void dobj__snap_mark_free(dobj__mark *m);
/** Tests only: called on the thread that writes a marker, before it reads
 *  the file (NULL: none). */
extern void (*dobj__snap_mark_hook)(void);
/** Tests only: how many times a file was hashed for its cache marker
 *  (written, or checked by a restore); atomic. */
extern long dobj__snap_hashed;

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif
#endif
