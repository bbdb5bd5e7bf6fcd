/* Private declarations shared between core files. */
#ifndef DOBJ_INTERNAL_H
#define DOBJ_INTERNAL_H

#include <pthread.h>
#include <time.h>

#include "dobj.h"

/* Everything declared below is private to the library: hidden even when the
 * build does not pass -fvisibility=hidden (a plain `luarocks make`). */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

#define DOBJ__UNUSED(x) ((void)(x))

/** Empty the thread's error slot (before calling code that may fail
 *  without setting it, so an older error is not reported in its place). */
void dobj__error_clear(void);

/** strdup that tolerates NULL and reports ENOMEM through the error slot. */
char *dobj__strndup(const char *s, size_t len);
/* Is `name` an object's name: text (dobj_id_from_name's rule)?  DOBJ_EARG
 * with the message otherwise (id.c). */
int dobj__name_check(const char *name, size_t len);

/** Fill `out` with `len` bytes from the CSPRNG (buffered, fork-safe). */
int dobj__random(unsigned char *out, size_t len);

/* A map from IDs to core structures (idmap.c).  Keys point into values. */
typedef struct dobj__idmap_slot {
	const dobj_id *key;
	void *value;
} dobj__idmap_slot;
typedef struct dobj__idmap {
	dobj__idmap_slot *slots;
	size_t cap, len;
} dobj__idmap;
void *dobj__idmap_get(const dobj__idmap *m, const dobj_id *id);
int dobj__idmap_put(dobj__idmap *m, const dobj_id *key, void *value);
void *dobj__idmap_del(dobj__idmap *m, const dobj_id *id);
void *dobj__idmap_any(const dobj__idmap *m);
void dobj__idmap_free(dobj__idmap *m);

/* Storage hooks used by the scheduler (storage.c). */
/** Commit every storage written during the step that just ended; an object
 *  whose commit fails is aborted.  */
void dobj__storage_commit_dirty(dobj_rt *rt);
/** The incarnation is going away (abort, eviction, close): discard its
 *  uncommitted writes; close a file database, keep an in-memory one. */
void dobj__storage_detach(dobj_obj *obj);
/** Close every storage of a namespace (runtime freed). */
void dobj__storage_ns_close(dobj_ns *ns);
/** Schedule the alarms already stored for a namespace (bind time). */
int dobj__alarms_load(dobj_ns *ns);
/** The alarm in the object's own database (workerd's _cf_METADATA, key 1,
 *  ns since the epoch): read (1 and *when, 0 if none) and write (0 = none)
 *  inside the step's transaction. */
int dobj__storage_alarm_read(dobj_storage *st, int64_t *when);
int dobj__storage_alarm_write(dobj_storage *st, int64_t when);
/** The same from the scheduler, with or without a live incarnation: op < 0
 *  reads into *when; op >= 0 clears it if it still holds *when. */
int dobj__storage_alarm_peek(dobj_ns *ns, const dobj_id *id, int op, int64_t *when);
/** A rollback left the object's record at `when` (0: none): bring the
 *  schedule back to it (alarm.c). */
void dobj__alarm_rolled_back(dobj_storage *st, int64_t when);
/** Claim the namespace's folder for this namespace alone: a registry in
 *  this process, flock against other processes (folder.c).  Released when
 *  the namespace's storage closes. */
int dobj__folder_claim(dobj_ns *ns);
int dobj__folder_move(const char *from, const char *to);
void dobj__folder_release(dobj_ns *ns);
/** Refuse a claimed namespace folder that holds the other kind of files: a
 *  runtime's own objects for a cluster node (whose folder is a cache), a
 *  node's cache for a runtime without the cluster; mark a node's. */
int dobj__folder_vet(dobj_ns *ns);
/** Whether `name` is an object's database file or a companion of one. */
int dobj__storage_is_object_file(const char *name);
/** A cluster node's folder under the storage setting `storage`: the first of
 *  STORAGE, STORAGE/.node-2, ... no other node holds (folder.c).  *dir (one
 *  free()) and *fd (flock'ed; closing it lets the folder go) are the
 *  caller's. */
int dobj__folder_node(const char *storage, char **dir, int *fd);
/** mkdir -p of `path` (changed in place meanwhile, restored); a message
 *  naming the folder that could not be made. */
int dobj__mkdir_p(char *path);
/** Make the namespace's storage directory (if the runtime has a root). */
int dobj__storage_ns_open(dobj_ns *ns);
/** Abort an object from inside the core (commit failure). */
void dobj__abort(dobj_obj *obj, int code, const char *message);
/** Find the live incarnation of `id` or make one (name may be NULL). */
dobj_obj *dobj__obj_get(dobj_ns *ns, const dobj_id *id, const char *name, size_t name_len);
void dobj__obj_unref(dobj_obj *obj);
/** Drop a reference to the runtime taken with rt->refs++. */
void dobj__rt_unref(dobj_rt *rt);
/** Evict a live, idle incarnation (idle eviction, dobj_ns_evict). */
void dobj__obj_evict(dobj_obj *obj);
/** Open a gate closed with obj->nblock++ (not a block's): the calls parked
 *  at it queue again, in order, once no gate is closed. */
void dobj__obj_gate_open(dobj_obj *obj);
/** Flush the host values the core dropped, unless inside a pump or loop. */
void dobj__rt_flush(dobj_rt *rt);
/* Test kit (testkit.c) parts that live with the alarms and storage. */
/** Start the alarm of `id` now (dobj_ns_run_alarm). */
int dobj__alarm_run_now(dobj_ns *ns, const dobj_id *id, dobj_task **out);
/** Cancel every alarm of a namespace and empty its schedule (reset). */
void dobj__alarms_reset(dobj_ns *ns);
/** Visit the pending alarms of a namespace, sorted by ID. */
int dobj__alarms_visit(dobj_ns *ns, int (*fn)(const dobj_id *id, const char *name,
	size_t name_len, double when_ms, int retry, void *arg), void *arg);
/** Close and delete every database of a namespace (reset); none may be
 *  attached to a live incarnation. */
void dobj__storage_ns_reset(dobj_ns *ns);
/** Make a CALL task on obj without a stub (alarms). */
dobj_task *dobj__call_new(dobj_obj *obj, dobj_call_kind kind, dobj_done_fn done, void *data);
/* rt.c's objects, tasks and host values, for stub.c (the stubs and their
 * calls); each is what rt.c's static function of the same name does. */
/** Queue a host value for release at the end of the entry point (NULL: none). */
void dobj__trash(dobj_rt *rt, void *v);
/** Release a request or result: free_fn's at once, a host value's trashed. */
void dobj__drop_value(dobj_rt *rt, void *v, void (*free_fn)(void *));
/** A new task on obj (may be NULL), listed as unfinished: two references,
 *  the caller's and the list's. */
dobj_task *dobj__task_new(dobj_rt *rt, dobj_obj *obj, dobj_task_kind kind);
/** Put a task on the ready queue (once; not a finished one). */
void dobj__task_enqueue(dobj_task *t);
/** Finish a task with a result or an error (code < 0 with a message). */
void dobj__task_finish(dobj_task *t, int code, const char *message, void *result, void *error);
/** Drop a task reference without flushing the trash. */
void dobj__task_unref(dobj_task *t);
/** A timer; weak timers do not keep dobj_rt_run going. */
int dobj__timer(dobj_rt *rt, double delay_ms, dobj_timer_fn fn, void *data, int weak,
	dobj_timer **out);
/** Wall clock (ms since the epoch) for alarms. */
double dobj__wall_ms(dobj_rt *rt);
/** An ALARM call finished (deliver, before its done callback): retry,
 *  reschedule or drop the alarm. */
void dobj__alarm_done(dobj_task *t);
/** Was this queued ALARM call cancelled (its alarm deleted or moved before
 *  the handler began)?  Then it finishes without running. */
int dobj__alarm_skipped(const dobj_task *t);
/** Alarms of a namespace go away with it. */
void dobj__alarms_free(dobj_ns *ns);
/** A WebSocket event the class has no handler for: 1 to finish it at once
 *  (close, error), -1 to fail it (message: an error for the hook), 0 to run. */
int dobj__ws_unhandled(const dobj_task *t);
/** Send the WebSocket output the step held (its writes are committed now);
 *  drop what an object whose commit failed sent. */
void dobj__ws_flush(dobj_rt *rt);
/** Let go of every WebSocket accepted in a namespace (runtime closed). */
void dobj__ws_ns_close(dobj_ns *ns);
/** Free a namespace that is not (or no longer) published (ns.c). */
void dobj__ns_free(dobj_ns *ns);
/** The incarnation a storage belongs to (NULL when none is live). */
dobj_obj *dobj__storage_obj(dobj_storage *st);
/** Check a unique key can name a directory. */
int dobj__storage_check_unique_key(const char *key, size_t len);

/* Cluster mode (cluster.c): each is a no-op when the runtime is not a node
 * (dobj/cluster.h). */
/** Before an incarnation's constructor: claim the object (fencing epoch)
 *  and rebuild its local file from PostgreSQL.  A failure fails the
 *  activation like a constructor that throws.  1: under way on the node's
 *  activator thread, with the object's input gate closed (obj->nblock):
 *  the call parks and runs again when it is done (dobj__obj_gate_open). */
int dobj__cluster_activate(dobj_obj *obj);
/** After a storage commit of `obj` (db: its sqlite3 handle): append what
 *  the commit changed, fenced, with the object's alarm record (`alarm`, ns
 *  since the epoch, 0: none) for the cluster's schedule; `wal_frames`: the
 *  frames its -wal file holds after the commit, as SQLite's WAL hook said
 *  (<= 0: not known).  A failure is a failed commit. */
int dobj__cluster_commit(dobj_obj *obj, void *db, int64_t alarm, long long wal_frames);
struct dobj__cluster;
/** A round of ready tasks ended (rt.c): the appends its steps made go to
 *  PostgreSQL together, a lone one on the runtime's own connection. */
void dobj__cluster_turn_end(struct dobj__cluster *cl);
/** An alarm of `id` is due: make sure the object is active on this node
 *  (claim and restore) so that its record can be read.  1 and *obj (a
 *  reference, for dobj__cluster_unhold) when it is; 2 and *obj (the same)
 *  while its activation is out (off the runtime's thread: the alarm fires
 *  again when it ends, dobj__alarm_activated); 0 when a live node
 *  elsewhere owns it (its alarm to fire); < 0 when PostgreSQL cannot tell. */
int dobj__cluster_hold(dobj_ns *ns, const dobj_id *id, const char *name, size_t len,
	dobj_obj **obj);
/** dobj_rt_reset dropped every object, before it deletes their files:
 *  nothing of theirs is written off the runtime's thread after this. */
void dobj__cluster_reset(dobj_rt *rt);
/** Drop dobj__cluster_hold's reference; an incarnation it made that got no
 *  call is evicted (released) again.  NULL: no-op. */
void dobj__cluster_unhold(dobj_obj *obj);
/** Namespace `key` (its unique key) has alarms: the node looks for its due
 *  alarms in the cluster's schedule (cluster_lease.c). */
int dobj__cluster_alarm_ns(dobj_rt *rt, const char *key, size_t len);
/** A namespace's unique key is UTF-8 text, as PostgreSQL keeps it (cluster
 *  mode, at the bind): 0, or DOBJ_EARG (cluster.c). */
int dobj__cluster_ns_check(const char *key, size_t len);
/** The object's alarm record in an open database (db: sqlite3 *): 1 and
 *  *when, or 0 (storage.c). */
int dobj__storage_meta_read(void *db, int64_t *when);
/** Schedule an alarm of `id` found in its object's own record (restored
 *  with the object, or due in dobj_alarm): armed unless already known, and
 *  written to the local schedule outside cluster mode (alarm.c). */
int dobj__alarm_track(dobj_ns *ns, const dobj_id *id, const char *name, size_t len,
	int64_t when);
/** The activation an alarm of obj waited for ended (dobj__cluster_hold
 *  returned 2): the alarm fires again (alarm.c). */
void dobj__alarm_activated(dobj_obj *obj);
struct dobj__ws_held;
/** A step's result `t` is about to be delivered (its writes committed
 *  locally): 1 when the cluster keeps it (held reference and all) until
 *  PostgreSQL confirmed the object's writes and the node's lease view
 *  holds, then hands it to dobj__held_deliver; 0: deliver now. */
int dobj__cluster_defer(dobj_task *t);
/** The same for WebSocket output held by the step (websocket.c). */
int dobj__cluster_defer_ws(dobj_obj *obj, struct dobj__ws_held *h);
/** Deliver a held result: code < 0 replaces a success by that error;
 *  DOBJ_OK applies the failed-commit rule (a result of an object whose
 *  commit failed becomes its error); 1 delivers it as it is (rt.c). */
void dobj__held_deliver(dobj_task *t, int code, const char *message);
/** Send (ok) or drop WebSocket output the cluster kept (websocket.c). */
void dobj__ws_held_release(struct dobj__ws_held *h, int ok);
/** The incarnation goes away (eviction, reset): release the object. */
void dobj__cluster_release(dobj_obj *obj);
/** dobj_rt_clear: closing (objects are released together), then leave. */
void dobj__cluster_closing(dobj_rt *rt);
void dobj__cluster_close(dobj_rt *rt);
/* Cluster mode: a renamed class's objects in PostgreSQL move from its
 * earlier name to its current one, or the start is refused (cluster.c). */
struct dobj_config;
int dobj__cluster_move_renamed(const struct dobj_config *cfg);

/* Calls between nodes (cluster_route.c); rt->route is NULL outside cluster
 * mode, so none of these is reached on the local path. */
/** A CALL about to construct its object: 1 when it was sent to another
 *  node (its answer will finish it), 0 to run it here. */
int dobj__route_call(dobj_task *t);
/** The claim found a live owner elsewhere (the cluster's owner_node and
 *  owner_addr): 1 when the call was sent there (or, for a call another
 *  node sent, answered NOT_OWNER), 0 to fail it as before. */
int dobj__route_owned(dobj_task *t);
/** Take in what the network thread received (inside a pump). */
void dobj__route_drain(dobj_rt *rt);
/** A round of ready tasks ended: write the calls and answers it queued. */
void dobj__route_flush(dobj_rt *rt);
/** Has the network thread asked to be drained (after the runtime re-armed
 *  its fd: the network thread's wake must not be lost)? */
int dobj__route_wanted(dobj_rt *rt);

/* The host contract and timers (loop.c).  The checks that run on every call
 * are inline here: most of the time there is nothing to tell the host. */
/** The ready queue became non-empty outside a pump: hooks and fd. */
void dobj__work_ready_slow(dobj_rt *rt);
/** Report the next deadline if it is earlier than what the host knows. */
void dobj__timer_sync_slow(dobj_rt *rt);
/** Make the fd unreadable; with `disarm` 0, a deadline not reached yet stays
 * armed (dobj_rt_process: no system call to re-arm it). */
void dobj__fd_clear(dobj_rt *rt, int disarm);
/* Make a runtime's fd readable now (its eventfd, rt->efd, and
 * &rt->efd_armed): any thread. */
void dobj__fd_signal(int efd, int *armed);
/** Tests only: how many times dobj__fd_clear read the eventfd; atomic. */
extern long dobj__efd_reads;
/** dobj_rt_run's wait: poll the fd until the next timer is due. */
int dobj__wait_for_timer(dobj_rt *rt);
/** Fire every timer that is due; returns how many fired. */
size_t dobj__fire_timers(dobj_rt *rt);

/* Wakes from other threads (loop.c): a thread of the core (the cluster's
 * PostgreSQL workers) that has news for the runtime posts; the runtime's fd
 * becomes readable at once, and the runtime's thread runs every source's
 * drain function at the start of its next pump (dobj_rt_process), run round
 * or advance.  The fd is made when the first source is added. */
typedef void (*dobj__drain_fn)(dobj_rt *rt, void *data);
#define DOBJ__MAX_SOURCES 8
/** Add a source (the runtime's thread). */
int dobj__rt_source_add(dobj_rt *rt, dobj__drain_fn fn, void *data);
/** Remove it (the runtime's thread; its threads must have stopped posting). */
void dobj__rt_source_remove(dobj_rt *rt, dobj__drain_fn fn, void *data);
/** Any thread: wake the runtime. */
void dobj__rt_post(dobj_rt *rt);
void dobj__rt_drain_slow(dobj_rt *rt);
/** Go on with the cluster append out on the runtime's own connection
 *  (cluster_commit.c): its answer arrives on a socket in the fd's epoll set. */
void dobj__inline_poll(dobj_rt *rt);

/** Release a value handed over by a call refused on another thread. */
void dobj__release_now(dobj_rt *rt, void *v, void (*free_fn)(void *));
#define CHECK_THREAD(rt) \
	do { if (dobj__wrong_thread(rt)) return dobj_error_set(DOBJ_ETHREAD, DOBJ_MSG_THREAD); } while (0)

/* The SQL API's rules (sql_guard.c): an authorizer state per database. */
typedef struct dobj__sql_guard {
	int active;    /* a user query is being compiled or run */
	int denied;    /* the authorizer refused; why says why */
	int altered;   /* an ALTER TABLE was compiled (check its new name) */
	char why[300];
} dobj__sql_guard;
/** sqlite3_set_authorizer callback; arg is a dobj__sql_guard. */
int dobj__sql_authorize(void *arg, int action, const char *a, const char *b, const char *db,
	const char *trigger);
/** After preparing a user statement: refuse ALTER TABLE ... RENAME TO _cf_... */
int dobj__sql_guard_check_rename(dobj__sql_guard *g, const char *sql);

/** Replace item i of an array (takes item). */
int dobj__val_set_at(dobj_val *array, size_t i, dobj_val *item);
/** A number to write as `I` (dobj_val_number of a Smi, or read from `I`). */
int dobj__val_is_smi(const dobj_val *v);

/* RPC values between the nodes of a cluster: a stub or an ID travels as a
 * V8 host object naming its namespace (unique_key) and ID (val_v8.c); the
 * receiving node resolves it against its own namespaces. */
typedef struct dobj__ref {
	dobj_val_type kind;        /* DOBJ_VAL_STUB or DOBJ_VAL_ID */
	const char *key;           /* the namespace's unique_key (not terminated) */
	size_t key_len;
	dobj_id id;
	const char *name;          /* NULL: none (not terminated) */
	size_t name_len;
} dobj__ref;
/* Cluster mode: the entry node's half of a WebSocket whose object lives on
 * another node (cluster_ws.c).  The host serves its client end as usual;
 * what arrives on it goes to the ops, what the object sends comes in
 * through dobj__ws_relay_output. */
typedef struct dobj__ws_relay_ops {
	void (*message)(void *data, const void *p, size_t len, int text);
	void (*close)(void *data, int code, const char *reason, size_t len, int was_clean);
	void (*error)(void *data, const char *msg, size_t len);
} dobj__ws_relay_ops;
/** A client end (one reference) relaying to ops. */
int dobj__ws_relay_new(dobj_rt *rt, const dobj__ws_relay_ops *ops, void *data, dobj_ws **client);
/** The ops are gone: later input is dropped, and the client is read again
 *  (what was relayed will not be acknowledged). */
void dobj__ws_relay_cut(dobj_ws *client);
/** The object's node handled `bytes` of what the relay sent (each message
 *  counted as its length + DOBJ_WS_EVENT_COST): they leave its backlog. */
void dobj__ws_relay_ack(dobj_ws *client, uint64_t bytes);
/** The bytes of received messages waiting for the object (each counted as
 *  above); for a relay, those sent and not yet acknowledged. */
size_t dobj__ws_backlog(const dobj_ws *client);
/** fn(data) runs each time a message event of `client` (the object's node's
 *  end of a relayed socket) is done with; NULL: no more. */
void dobj__ws_on_drain(dobj_ws *client, void (*fn)(void *data), void *data);
/** A frame from the object's node, to the host (or kept until it attaches). */
void dobj__ws_relay_output(dobj_ws *client, int close, int text_or_code, const void *data,
	size_t len);
struct dobj__cinc;
/** Cluster mode, an object going to sleep: 1 while sockets accepted by it
 *  are registered (it hibernates on this node, owned here), and then its
 *  claim (epoch, node) and its incarnation's token `inc` (a reference,
 *  taken over; may be NULL) are kept with them: when the last one leaves,
 *  dobj__cluster_give_back(ns, id, epoch, node, inc) runs (cluster_commit.c),
 *  without waking the object.  0: no socket, nothing kept (`inc` stays the
 *  caller's). */
int dobj__ws_hold_claim(dobj_ns *ns, const dobj_id *id, long long epoch, long long node,
	struct dobj__cinc *inc);
/** Release the claim (epoch, node) of the object `id` unless an instance of
 *  it is active (that incarnation releases its own claim), behind the
 *  appends of the incarnation `inc` (its token, taken over; may be NULL);
 *  no-op outside cluster mode. */
void dobj__cluster_give_back(dobj_ns *ns, const dobj_id *id, long long epoch, long long node,
	struct dobj__cinc *inc);
/** Drop a reference to an incarnation's token (NULL: no-op). */
void dobj__cluster_inc_drop(dobj_rt *rt, struct dobj__cinc *inc);
/** The node lost the object (cluster mode): close its sockets with `code`
 *  at once and forget them, without an event; how many there were.  _all:
 *  every object of the runtime. */
size_t dobj__ws_drop(dobj_ns *ns, const dobj_id *id, int code, const char *reason);
size_t dobj__ws_drop_all(dobj_rt *rt, int code, const char *reason);
/** 1 for an event of a socket dropped so: it finishes without running. */
int dobj__ws_dropped(const dobj_task *t);

/** 1 when id was made by key (its MAC matches), as dobj_id_from_string checks. */
int dobj__id_sealed(const dobj_idkey *key, const dobj_id *id);
/** dobj_val_encode, with stubs and IDs written as host objects. */
int dobj__val_encode_refs(const dobj_val *v, unsigned char **out, size_t *len);
/** dobj_val_decode reading host objects: resolve gives each stub or ID its
 *  value (a new reference), or NULL with dobj_error_set. */
int dobj__val_decode_refs(const void *blob, size_t len,
	dobj_val *(*resolve)(void *data, const dobj__ref *ref), void *data, dobj_val **out);

/* Core structures, shared by rt.c and storage.c. */

struct dobj_task {
	int refs;
	dobj_task_kind kind;
	dobj_call_kind call_kind;
	char *method;
	dobj_rt *rt;
	dobj_obj *obj;
	int depth;
	int block_level;
	unsigned queued : 1, done : 1, started : 1, running : 1, listed : 1, held : 1, parked : 1;
	unsigned report : 1;           /* failed on its own with nobody awaiting: error hook */
	/* cluster routing (cluster_route.c) */
	unsigned routed : 1;           /* sent to another node: its answer finishes it */
	unsigned route_in : 1;         /* a call another node sent here */
	unsigned not_owner : 1;        /* route_in: this node neither owns nor can claim it */
	unsigned retryable : 1;        /* dobj_task_retryable */
	unsigned remote_known : 1, remote_flag : 1; /* remote as the other node said */
	unsigned char route_tries;     /* times sent (NOT_OWNER, connection refused) */
	void *request;
	void (*request_free)(void *); /* core value (dobj_msg, dobj_val); NULL: host value */
	void (*result_free)(void *);
	void *host;
	dobj_step_fn step;
	void *step_data;
	dobj_done_fn done_fn;
	void *done_data;
	int code;
	char *message;
	void *result;
	void *error;
	dobj_task *qnext;              /* ready queue or parked list */
	dobj_task *lprev, *lnext;      /* runtime's unfinished list */
	dobj_task *dnext;              /* held deliveries (output gate) */
	void *alarm_info;              /* ALARM calls: scheduled time, retry */
	dobj_task **waiters;           /* tasks suspended until this one finishes (held) */
	size_t nwaiters, capwaiters;
	dobj_timer *limit;             /* BLOCK: the 30 s limit */
	void *stub_error;              /* call on a broken stub: the stub's error, until it fails */
};

struct dobj_obj {
	int refs;
	dobj_ns *ns;
	dobj_id id;
	char *name;
	size_t name_len;
	void *instance;
	void *ctx;
	unsigned constructed : 1, dead : 1, mapped : 1, evicted : 1, commit_failed : 1;
	dobj_obj *dead_prev, *dead_next; /* runtime's list of dead incarnations still referenced */
	int nblock;
	dobj_task *parked_head, *parked_tail;
	size_t nparked;
	size_t ntasks;
	int code;
	char *message;
	dobj_stub *stubs;              /* stubs bound to this incarnation (stub->onext) */
	dobj_storage *storage;
	dobj_timer *idle_timer;
	double last_active;
	struct dobj__cluster_obj *cluster; /* cluster mode: epoch and log position */
	struct dobj__act *act;         /* cluster mode: its activation, while out (cluster_activate.c) */
};

struct dobj_ns {
	dobj_rt *rt;
	char *binding;
	char *class_name;
	dobj_class klass;
	dobj_idkey *key;
	char *unique_key;
	size_t unique_key_len;
	dobj__idmap objs;   /* live incarnations */
	dobj__idmap stores; /* open storages (in-memory ones live as long as the runtime) */
	void *meta;         /* sqlite3 handle of <dir>/<unique_key>/metadata.sqlite */
	dobj__idmap alarms; /* pending alarms by ID */
	dobj__idmap rooms;  /* accepted WebSockets by ID (websocket.c) */
	char *dir;          /* <dir>/<unique_key>, or NULL for in-memory storage */
	int folder_fd;      /* dir, open and flock'ed while bound (folder.c); -1 if none */
};

struct dobj_stub {
	dobj_ns *ns;
	dobj_id id;
	char *name;
	size_t name_len;
	dobj_obj *obj; /* incarnation bound on first call */
	dobj_stub *oprev, *onext; /* obj->stubs */
	void *error;   /* retained: the abort error of a dead obj (a broken stub) */
};

struct dobj_timer {
	int weak; /* does not keep dobj_rt_run going (idle eviction) */
	double when;
	uint64_t seq;
	size_t index;
	dobj_timer_fn fn;
	void *data;
};

struct dobj_rt {
	int refs;
	dobj_host host;
	double (*now_ms)(void *);
	void *clock_data;
	int virtual_time;
	double virtual_now;
	unsigned pumping : 1, closing : 1, closed : 1;
	/* Running a round of ready tasks: a cluster append waits for its end
	 * to go with the round's others (dobj__cluster_turn_end). */
	unsigned in_round : 1;
	dobj_task *current;
	dobj_task *ready_head, *ready_tail;
	size_t nready;
	dobj_task *tasks; /* unfinished tasks, newest first */
	dobj_task *tasks_tail; /* the oldest of them */
	size_t ntasks;
	dobj_ns **nss;
	size_t nns, capns;
	dobj_timer **heap;
	size_t nheap, capheap, nstrong;
	/* Holds that keep dobj_rt_run waiting on the fd without a deadline (a
	 * cluster node's thread has work out: dobj__watch). */
	size_t nkeep;
	uint64_t timer_seq;
	void **trash;
	size_t ntrash, captrash;
	int flushing;
	int busy; /* inside dobj_obj_abort / dobj_rt_clear: no flushing, no pumping */
	/* storage */
	char *storage_dir;
	dobj_durability durability;
	dobj_storage *dirty;       /* written during the current step */
	dobj_task *held_head, *held_tail; /* results waiting for the commit */
	struct dobj__ws_held *ws_held, *ws_held_tail; /* WebSocket output waiting for it */
	double idle_ms;
	double (*wall_ms)(void *);
	double wall_base;          /* virtual time: wall clock at start */
	dobj_obj *dead_objs;        /* dead incarnations still referenced (their errors) */
	dobj_error_hook error_hook; /* background errors (dobj_rt_set_error_hook) */
	void *error_hook_data;
	/* host contract (see dobj.h, "driving a runtime") */
	pthread_t owner;           /* the thread that made the runtime */
	int fd;                    /* dobj_rt_fd (-1 until asked for): epoll over these two */
	int tfd;                   /* timerfd: the next deadline (loop.c) */
	int efd;                   /* eventfd: "now" (work, posts, the network thread) */
	int fd_now;                /* the fd is armed to be readable at once (work) */
	int efd_armed;             /* atomic: the eventfd may hold a count (set after each
	                              write, taken by the read that empties it) */
	double fd_when;            /* deadline the fd is armed for (INFINITY: none) */
	double hook_when;          /* deadline last reported to host.timer */
	struct dobj__cluster *cluster; /* cluster mode (dobj_rt_cluster), or NULL */
	/* posts from other threads (loop.c) */
	pthread_mutex_t post_mu;   /* posted, and arming the fd while sources exist */
	int posted;                /* under post_mu; read without it as a hint */
	size_t nsources;
	struct { dobj__drain_fn fn; void *data; } sources[DOBJ__MAX_SOURCES];
	struct dobj__route *route;     /* calls between nodes (cluster_route.c), or NULL */
	int inline_out;                /* a cluster append is out on this thread's own connection:
	                                  2 just sent (its answer is not looked for before the
	                                  host's next wait, dobj__fd_clear), 1 waited for */
	dobj_route_codec codec;        /* the binding's (dobj_rt_set_route_codec) */
};


/* Inline parts of the host contract (see loop.c). */
static inline void dobj__work_ready(dobj_rt *rt)
{
	if (rt->host.notify || rt->fd >= 0)
		dobj__work_ready_slow(rt);
}

static inline void dobj__timer_sync(dobj_rt *rt)
{
	double when;

	if (rt->pumping || rt->busy || !rt->nheap)
		return;
	when = rt->heap[0]->when;
	if (when < rt->hook_when || (rt->fd >= 0 && when < rt->fd_when))
		dobj__timer_sync_slow(rt);
}

static inline void dobj__host_retain(dobj_rt *rt, void *v)
{
	if (v && rt->host.retain)
		rt->host.retain(rt->host.data, v);
}

/* Class data and instances are host values unless the class is native
 * (class data) or releases its instances itself (klass.destroy). */
static inline int dobj__class_data_is_host(const dobj_ns *ns)
{
	return !(ns->klass.flags & DOBJ_CLASS_NATIVE);
}

/** Milliseconds on CLOCK_MONOTONIC (deadlines and intervals that must
 *  not follow the wall clock). */
static inline double dobj__mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/** Run the drain functions when another thread posted (see loop.c). */
static inline void dobj__rt_drain(dobj_rt *rt)
{
	if (rt->nsources && __atomic_load_n(&rt->posted, __ATOMIC_ACQUIRE))
		dobj__rt_drain_slow(rt);
	if (rt->inline_out == 1)
		dobj__inline_poll(rt);
}

/** Is the caller another thread than the runtime's owner? */
static inline int dobj__wrong_thread(const dobj_rt *rt)
{
	return !pthread_equal(rt->owner, pthread_self());
}

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
