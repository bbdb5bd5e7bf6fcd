/**
 * dobj/cluster.h — cluster mode: one namespace served by several processes
 * (nodes), with PostgreSQL as the source of truth for who owns an object
 * (leases and fencing epochs) and for its data (a redo log of what each
 * committed step changed).  The design is in docs/cluster.md.
 *
 * Included by dobj.h; do not include directly.
 *
 * What a node does:
 * - joins (a dobj_node row) and renews its lease every ttl/4 on the
 *   database's clock; it keeps its own view of the lease on CLOCK_BOOTTIME
 *   (0.8 x ttl after the renewal was sent) and releases no result past it;
 * - claims an object on activation (a dobj_owner row, the epoch goes up by
 *   one) unless a live node owns it; rebuilds the object's local SQLite file
 *   (workerd's layout) from the latest snapshot and the log after it, or
 *   keeps its cached file when that is already at the latest seq;
 * - appends the pages each committed step changed to dobj_wal (each row
 *   with its checksum, checked on every read), with the epoch checked in
 *   the same statement: a node that lost the object (it was
 *   paused past its lease and another node took over) is refused, and its
 *   object is reset like a failed commit;
 * - once the log of an object since its last snapshot passes
 *   opts.snapshot_bytes (and the size of that snapshot), writes a new
 *   snapshot (dobj_snapshot: the whole database at a seq, checksummed) and
 *   deletes the log rows it covers, in one transaction fenced by the epoch,
 *   on a thread of its own (the compactor);
 * - releases the object on eviction, reset and close.
 *
 * Every PostgreSQL round trip is bounded (opts.timeout_ms): a database that
 * does not answer fails the operation, it never hangs the runtime.  Appends
 * and lease renewals run on two threads of the node, each with its own
 * connection: the runtime serves other objects while an append is out, and
 * the committing object's results (and WebSocket output) wait until
 * PostgreSQL confirmed and the node's lease view holds; the confirmation
 * makes the runtime's fd (dobj_rt_fd, made by dobj_rt_cluster) readable.
 * The committer appends everything queued in one transaction (group commit),
 * each object's rows fenced by its own epoch.  Claims and restores on
 * activation run on a third thread (the activator), the object's input gate
 * closed meanwhile; snapshots on a fourth (the compactor).
 */
#ifndef DOBJ_CLUSTER_H
#define DOBJ_CLUSTER_H

/** The schema version this dobj creates and understands. */
#define DOBJ_CLUSTER_SCHEMA_VERSION 5
/** Defaults (milliseconds). */
#define DOBJ_CLUSTER_TTL_MS 3000.0
#define DOBJ_CLUSTER_GRACE_MS 1000.0
#define DOBJ_CLUSTER_TIMEOUT_MS 2000.0
/** The page images a node keeps, at most, to append a page it appended
 *  before as the bytes that changed (every object of the node together;
 *  the least recently appended go first, and their pages go whole). */
#define DOBJ_CLUSTER_PAGE_CACHE_BYTES (64LL << 20)
/** Log bytes since an object's last snapshot that call for a new one. */
#define DOBJ_CLUSTER_SNAPSHOT_BYTES (4LL << 20)
/** A snapshot whose image is larger is stored in parts of this size. */
#define DOBJ_CLUSTER_SNAPSHOT_PART_BYTES (16LL << 20)
/** How long a caller waits for the answer of a call it sent to another
 *  node (a node that answers pings but whose runtime is stuck). */
#define DOBJ_CLUSTER_CALL_TIMEOUT_MS 30000.0
/** The largest ttl, grace, timeout and call timeout (one day). */
#define DOBJ_CLUSTER_MAX_MS 86400000.0

/** Cluster options for dobj_rt_cluster. */
typedef struct dobj_cluster_opts {
	unsigned version;       /**< DOBJ_CLUSTER_OPTS_VERSION */
	/** libpq connection string: "postgresql://user@host:port/db" or
	 *  "host=... dbname=..." (url_len bytes; 0 = up to the NUL). */
	const char *url;
	size_t url_len;
	/** Address other nodes reach this one at ("127.0.0.1:7001"); kept in
	 *  dobj_node for routing.  NULL: "" (this node is not reachable). */
	const char *node_addr;
	size_t node_addr_len;
	/** Lease time to live (0: DOBJ_CLUSTER_TTL_MS); grace after a lease
	 *  lapsed before another node may claim its objects (0: the default,
	 *  < 0: none); bound on every PostgreSQL round trip, the connection
	 *  included (0: DOBJ_CLUSTER_TIMEOUT_MS). */
	double ttl_ms;
	double grace_ms;
	double timeout_ms;
	/** (version 2) How long a call sent to another node waits for its
	 *  answer before it fails with `retryable` (it may or may not have
	 *  run): 0: DOBJ_CLUSTER_CALL_TIMEOUT_MS.  A node that stops answering
	 *  pings altogether fails its calls after a TTL already. */
	double call_timeout_ms;
	/** (version 3) An object's log since its last snapshot is compacted into
	 *  a new snapshot once it holds this many bytes and at least the size of
	 *  that snapshot (so a big database is not rewritten for a small
	 *  change).  0: DOBJ_CLUSTER_SNAPSHOT_BYTES; < 0: never. */
	long long snapshot_bytes;
	/** (version 4) A snapshot whose database is larger than this is written
	 *  in parts of this many bytes (PostgreSQL takes at most 1 GiB in a
	 *  value), and the node never holds its whole image in memory: the
	 *  compactor builds it in a file next to the object's.  0:
	 *  DOBJ_CLUSTER_SNAPSHOT_PART_BYTES; else from 1 KiB to 256 MiB. */
	long long snapshot_part_bytes;
} dobj_cluster_opts;
#define DOBJ_CLUSTER_OPTS_VERSION 4
#define DOBJ_CLUSTER_OPTS_INIT { DOBJ_CLUSTER_OPTS_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }

/**
 * Create or migrate the cluster schema in the database at `url` (what
 * `dobj cluster init` runs; dobj_rt_cluster does it too).  *version (may be
 * NULL) receives the schema version now in the database.  A schema of a
 * newer dobj is refused (DOBJ_ESTATE) and left alone; a bad URL is
 * DOBJ_EARG; an unreachable database DOBJ_ERROR, after at most
 * `timeout_ms` (0: the default).
 */
DOBJ_API int dobj_cluster_init(const char *url, size_t url_len, double timeout_ms, int *version);

/**
 * Make `rt` a node of the cluster at opts->url: connect, create or migrate
 * the schema, join.  Call it right after dobj_rt_new, before binding any
 * namespace.  The runtime needs a storage directory (its local files are a
 * cache of the cluster's data) and real time (no virtual_time): DOBJ_EARG
 * otherwise.  On failure the runtime is unchanged.  Leaving the cluster is
 * part of dobj_rt_clear / dobj_rt_free: the node's objects are released and
 * its row is marked as gone.
 */
DOBJ_API int dobj_rt_cluster(dobj_rt *rt, const dobj_cluster_opts *opts);

/** The runtime's node id in the cluster (a new one after a lost lease),
 *  0 when it is not a node. */
DOBJ_API long long dobj_rt_cluster_node(const dobj_rt *rt);

/**
 * What happens to a node that its operator wants in the log, one line each:
 * the node lost its lease (the process was paused or cut off past it: its
 * objects were reset and it joined again as a new node), or could not renew
 * it in time (PostgreSQL unreachable: its objects were reset).  `node_id` is
 * the node the event happened to; `message` is borrowed for the call.
 */
typedef void (*dobj_cluster_log_fn)(void *data, long long node_id, const char *message);

/**
 * Set the node's log hook (NULL: none, the default).  The hook is called
 * from the runtime's loop (dobj_rt_process / dobj_rt_run / dobj_rt_pump),
 * after the event, like a timer: it may log and read the runtime; it must
 * not clear or free it.  DOBJ_ESTATE when `rt` is not a node.
 */
DOBJ_API int dobj_rt_cluster_set_log(dobj_rt *rt, dobj_cluster_log_fn fn, void *data);

/** Check cluster options the way dobj_rt_cluster does, without connecting
 *  (a binding's early check): DOBJ_EARG with a message. */
DOBJ_API int dobj_cluster_opts_check(const dobj_cluster_opts *opts);

/** The three times of dobj_cluster_opts, for dobj_cluster_opts_seconds. */
typedef enum dobj_cluster_time {
	DOBJ_CLUSTER_TTL,
	DOBJ_CLUSTER_GRACE,
	DOBJ_CLUSTER_TIMEOUT,
	DOBJ_CLUSTER_CALL_TIMEOUT
} dobj_cluster_time;

/**
 * Set one of opts' times from a user's number of seconds (a keyword
 * argument, a field of a Lua table, a command-line flag), the one rule of
 * every binding and of the config file: a finite number, the TTL from 0.1 s,
 * the timeouts from 0.01 s, the grace from 0 s (0: none), each at most
 * 86400 s.  `from` names the setting in the message (e.g. "cluster_ttl");
 * DOBJ_EARG "FROM: ..." when refused (opts unchanged).
 */
DOBJ_API int dobj_cluster_opts_seconds(dobj_cluster_opts *opts, dobj_cluster_time which,
	double seconds, const char *from);

/** The two sizes of dobj_cluster_opts, for dobj_cluster_opts_bytes. */
typedef enum dobj_cluster_size {
	DOBJ_CLUSTER_SNAPSHOT_EVERY,   /**< snapshot_bytes: log bytes that call for a snapshot */
	DOBJ_CLUSTER_SNAPSHOT_PART     /**< snapshot_part_bytes: the size of a snapshot's parts */
} dobj_cluster_size;

/**
 * Set one of opts' sizes from a user's number of bytes (a keyword argument,
 * a field of a Lua table, the config file), the one rule of every binding
 * and of the config file: the log bytes between snapshots 0 or more (0:
 * never), the part size from 1 KiB to 256 MiB.  `from` names the setting in
 * the message (e.g. "cluster_snapshot_part_bytes"); DOBJ_EARG "FROM: ..."
 * when refused (opts unchanged).
 */
DOBJ_API int dobj_cluster_opts_bytes(dobj_cluster_opts *opts, dobj_cluster_size which,
	long long bytes, const char *from);

#endif
