/**
 * dobj.h — the public API of the dobj core.
 *
 * The core owns the semantics of Durable Objects: how IDs are made and
 * checked (byte-compatible with workerd), which instance an ID reaches, the
 * order in which events are delivered, when an object's input gate is open,
 * and what happens when an object is aborted.  It never knows about Python or
 * Lua: a binding gives it opaque host values (`void *`) and a small table of
 * callbacks, and drives it step by step (the core never blocks inside a host
 * call and never longjmps).
 *
 * Conventions
 * - Functions return int: 0 (DOBJ_OK) on success, a negative DOBJ_E* code on
 *   failure, with a one-line message readable through dobj_error_last().
 *   Messages are meant to be shown verbatim as a Python or Lua error.
 * - `**out` parameters belong to the caller and have a matching *_free or
 *   *_unref; those accept NULL.
 * - One thread per runtime: a dobj_rt and everything made from it belong to
 *   the thread that called dobj_rt_new.  The entry points that run or queue
 *   work (dobj_stub_call, dobj_task_spawn, dobj_task_wait, dobj_rt_pump,
 *   dobj_rt_process, dobj_rt_run, dobj_rt_advance, dobj_rt_timer,
 *   dobj_ns_new) fail with DOBJ_ETHREAD on any other thread.  Freeing
 *   (dobj_rt_free, dobj_rt_clear, *_unref) is allowed from any thread, one
 *   at a time (a garbage collector may run anywhere).  ID functions on a
 *   namespace are pure and may be called from any thread once it exists.
 * - The host contract (how an event loop drives a runtime, and what a host
 *   callback may call) is described in the "driving a runtime" section.
 */
#ifndef DOBJ_H
#define DOBJ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DOBJ_API __attribute__((visibility("default")))
#else
#define DOBJ_API
#endif

/* ---------------------------------------------------------------- errors */

/** Return codes. */
enum {
	DOBJ_OK = 0,
	DOBJ_PENDING = 1,        /**< a step suspended; it will be woken later */
	DOBJ_ERROR = -1,         /**< generic failure */
	DOBJ_ENOMEM = -2,        /**< out of memory */
	DOBJ_EINVALID = -3,      /**< malformed ID string */
	DOBJ_EFOREIGN = -4,      /**< ID of another namespace (MAC mismatch) */
	DOBJ_EARG = -5,          /**< bad argument (relative URL, bad option...) */
	DOBJ_EUSER = -6,         /**< a host callback failed: the host keeps its own error */
	DOBJ_EJURISDICTION = -7, /**< jurisdictions are not implemented locally */
	DOBJ_EDEPTH = -8,        /**< nested calls too deep */
	DOBJ_EABORTED = -9,      /**< the object was aborted / reset */
	DOBJ_ENOHANDLER = -10,   /**< the class has no handler for this event */
	DOBJ_ECLOSED = -11,      /**< the runtime was closed */
	DOBJ_ESTATE = -12,       /**< call not allowed in this state */
	DOBJ_ETHREAD = -13,      /**< runtime used from another thread than its own */
	DOBJ_EDEADLOCK = -14,    /**< the call waits on a gate held by its own waiter */
	/** a value a Web API refuses where workerd throws a TypeError (a header
	 *  name or value, a method, a relative URL, a body GET may not have):
	 *  bindings raise their "type error" (Python: dobj.InvalidInputError,
	 *  a TypeError) with the message as it is */
	DOBJ_ETYPE = -15
};

/** Message of the last failure on this thread ("" if none). */
DOBJ_API const char *dobj_error_last(void);
/** Code of the last failure on this thread (DOBJ_OK if none). */
DOBJ_API int dobj_error_last_code(void);
/** Set the thread's last error (for bindings reporting through the core). */
DOBJ_API int dobj_error_set(int code, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;

/* Messages that must match workerd verbatim. */
#define DOBJ_MSG_BAD_ID "Invalid Durable Object ID: must be 64 hex digits"
#define DOBJ_MSG_FOREIGN_ID "Durable Object ID is not valid for this namespace."
#define DOBJ_MSG_JURISDICTION "Jurisdiction restrictions are not implemented in workerd."
#define DOBJ_MSG_NO_FETCH "Handler does not export a fetch() function."
#define DOBJ_MSG_NO_ALARM "Handler does not export an alarm() function."
#define DOBJ_MSG_DEPTH "Subrequest depth limit exceeded"
#define DOBJ_MSG_BCW_NESTED "blockConcurrencyWhile() calls are nested too deeply."
#define DOBJ_MSG_BCW_TIMEOUT "A call to blockConcurrencyWhile() in a Durable Object waited for " \
	"too long. The call was canceled and the Durable Object was reset."
/* dobj's own messages for rules workerd has no words for. */
#define DOBJ_MSG_DEADLOCK "deadlock: this call waits for the object's " \
	"block_concurrency_while, which waits for this call"
#define DOBJ_MSG_THREAD "a dobj runtime can only be used from the thread that created it"
#define DOBJ_MSG_DELAY "a delay must be a finite number"

/** Limits. */
#define DOBJ_MAX_CALL_DEPTH 16    /**< nested object-to-object calls */
#define DOBJ_MAX_BLOCK_NESTING 64 /**< nested block_concurrency_while */
#define DOBJ_MAX_CTX_NAME 1024    /**< longer names are dropped inside the object */
/** A block_concurrency_while callback still running after this long resets
 *  its object with DOBJ_MSG_BCW_TIMEOUT (workerd's limit; virtual time counts). */
#define DOBJ_BLOCK_TIMEOUT_MS 30000.0

/* ------------------------------------------------------------------- IDs */

/** An object ID: base (16 bytes) || mac (16 bytes).  A plain value. */
typedef struct dobj_id {
	unsigned char bytes[32];
} dobj_id;

#define DOBJ_ID_HEX_LEN 64

/** Write the 64 lower-case hex digits of `id` to `out` (not NUL-terminated). */
DOBJ_API void dobj_id_to_hex(const dobj_id *id, char out[DOBJ_ID_HEX_LEN]);
/** Compare the 32 bytes (names are not part of an ID's identity). */
DOBJ_API int dobj_id_equal(const dobj_id *a, const dobj_id *b);

/**
 * An ID key: the per-namespace HMAC key schedule (SHA-256 of the unique key),
 * computed once.  Pure, thread-safe after creation.
 */
typedef struct dobj_idkey dobj_idkey;

/** Make the key for `unique_key` (arbitrary bytes). */
DOBJ_API int dobj_idkey_new(dobj_idkey **out, const char *unique_key, size_t len);
DOBJ_API void dobj_idkey_free(dobj_idkey *key);
/**
 * Switch new_unique_id to a deterministic sequence derived from `seed`
 * (tests).  Any number of IDs; distinct seeds give distinct sequences.
 */
DOBJ_API void dobj_idkey_seed(dobj_idkey *key, uint64_t seed);

/**
 * idFromName: deterministic ID for `name`.  A name is text, as a JavaScript
 * string is: UTF-8, NUL included, and WTF-8's encoded lone surrogates (what
 * a JavaScript string may hold; hashed as those bytes, as workerd does).
 * A surrogate pair written as two encoded halves is the character they pair
 * to (the same JavaScript string), and names the same object.  Other bytes
 * fail with DOBJ_EARG ("a Durable Object name must be UTF-8 text (byte N is
 * not)"), *out untouched: every language then shows an object's name as a
 * string (ctx.id.name).
 */
DOBJ_API int dobj_id_from_name(const dobj_idkey *key, const char *name, size_t len, dobj_id *out);
/** newUniqueId: random (CSPRNG) or, when seeded, the next deterministic ID.
 *  `jurisdiction` may be NULL; anything else fails with DOBJ_EJURISDICTION. */
DOBJ_API int dobj_id_new_unique(dobj_idkey *key, const char *jurisdiction, dobj_id *out);
/** idFromString: parse 64 hex digits (either case) and check the MAC.
 *  DOBJ_EINVALID / DOBJ_EFOREIGN with workerd's messages. */
DOBJ_API int dobj_id_from_string(const dobj_idkey *key, const char *s, size_t len, dobj_id *out);

/* ----------------------------------------------------------- host values */

/**
 * A binding tells the core how to keep and drop its values (requests,
 * responses, errors, instances, coroutines).  The core never looks inside.
 */
typedef struct dobj_host {
	void *data;
	/** Take one more reference to `value` (may be NULL: values are never shared). */
	void (*retain)(void *data, void *value);
	/** Drop one reference the core held. */
	void (*release)(void *data, void *value);
	/** "Work is ready": the ready queue became non-empty outside a pump
	 *  (a wake from a host callback, a call made from outside a handler).
	 *  The host arranges for dobj_rt_process (or dobj_rt_pump) to run soon;
	 *  it must not call them from inside this hook.  May be NULL. */
	void (*notify)(void *data);
	/** "The next timer moved": `deadline_ms` is the earliest timer, on the
	 *  runtime's clock (dobj_rt_now_ms).  Reported only when it is earlier
	 *  than the deadline last reported since the last dobj_rt_process: a host
	 *  timer that fires early just calls dobj_rt_process, which fires nothing
	 *  and reports the real deadline again.  May be NULL. */
	void (*timer)(void *data, double deadline_ms);
} dobj_host;

/* --------------------------------------------------------------- runtime */

typedef struct dobj_rt dobj_rt;
typedef struct dobj_ns dobj_ns;
typedef struct dobj_obj dobj_obj;
typedef struct dobj_stub dobj_stub;
typedef struct dobj_task dobj_task;

/** Kinds of task.  A CALL is an event delivered to an object (fetch or RPC)
 *  with a caller waiting; BLOCK is block_concurrency_while's callback, which
 *  holds the object's gate exclusively; BACKGROUND is wait_until work; FREE
 *  is a task not tied to any object (a Lua rt:spawn task). */
typedef enum dobj_task_kind {
	DOBJ_TASK_CALL = 1,
	DOBJ_TASK_BLOCK = 2,
	DOBJ_TASK_BACKGROUND = 3,
	DOBJ_TASK_FREE = 4
} dobj_task_kind;

/** Kinds of call. */
typedef enum dobj_call_kind {
	DOBJ_CALL_FETCH = 1,
	DOBJ_CALL_RPC = 2,
	DOBJ_CALL_ALARM = 3, /**< made by the core when an alarm is due */
	DOBJ_CALL_HOST = 4,  /**< a host function run in the object (dobj_stub_run) */
	DOBJ_CALL_WS_MESSAGE = 5, /**< made by the core: a WebSocket message (dobj/websocket.h) */
	DOBJ_CALL_WS_CLOSE = 6,   /**< made by the core: a WebSocket closed */
	DOBJ_CALL_WS_ERROR = 7    /**< made by the core: a WebSocket failed */
} dobj_call_kind;

/**
 * Run one step of a task.  On the first step of a CALL the host starts the
 * handler (dobj_task_host(t) is NULL; set it with dobj_task_set_host); on
 * later steps it resumes it.  Return DOBJ_OK once the task has been finished
 * with dobj_task_return / dobj_task_raise, or DOBJ_PENDING if it suspended
 * (someone will call dobj_task_wake).  Any other value fails the task with the
 * thread's last error.
 */
typedef int (*dobj_step_fn)(dobj_task *task, void *data);

/** Class flags. */
enum {
	DOBJ_CLASS_FETCH = 1 << 0, /**< has a fetch handler */
	DOBJ_CLASS_ALARM = 1 << 1, /**< has an alarm handler */
	/** Class data and instances are C values owned by the class (never
	 *  host values), and calls carry core values (dobj/native.h). */
	DOBJ_CLASS_NATIVE = 1 << 2,
	DOBJ_CLASS_WS_MESSAGE = 1 << 3, /**< has a webSocketMessage handler */
	DOBJ_CLASS_WS_CLOSE = 1 << 4,   /**< has a webSocketClose handler */
	DOBJ_CLASS_WS_ERROR = 1 << 5    /**< has a webSocketError handler */
};

/** How a namespace's objects are made and run. */
typedef struct dobj_class {
	const char *name;  /**< class name for messages (copied) */
	unsigned flags;    /**< DOBJ_CLASS_* */
	void *data;        /**< host class value; retained by the namespace */
	/**
	 * Make an instance for `obj`.  Store a host value (owned by the core,
	 * dropped with host.release when the object is reset or the runtime is
	 * freed) in *instance.  May spawn BLOCK tasks (block_concurrency_while
	 * from a constructor); the first event waits for them.  On failure return
	 * a negative code; with DOBJ_EUSER set *error to a host error value that
	 * the core hands to the caller (ownership passes to the core).
	 */
	int (*construct)(dobj_obj *obj, void *data, void **instance, void **error);
	/** Run one step of a CALL task (see dobj_step_fn). */
	dobj_step_fn step;
	/** Drop an instance (NULL: host.release is used). */
	void (*destroy)(void *instance, void *data);
} dobj_class;

/** Runtime options. */
typedef struct dobj_rt_opts {
	unsigned version;       /**< DOBJ_RT_OPTS_VERSION */
	dobj_host host;
	/** Clock in milliseconds; NULL = CLOCK_MONOTONIC.  Replaceable for tests. */
	double (*now_ms)(void *data);
	void *clock_data;
	/** Virtual time: when nothing is ready, dobj_rt_run jumps the clock to
	 *  the next timer instead of sleeping (tests of timing take no time). */
	int virtual_time;
	/** Storage directory (workerd's localDisk layout); NULL = in memory;
	 *  "" is refused (DOBJ_EARG). */
	const char *storage_dir;
	/** DOBJ_DURABLE_PROCESS (default) or DOBJ_DURABLE_POWER. */
	int durability;
	/** Evict objects idle this long (ms); 0 = the default 10 s, < 0 = never. */
	double idle_timeout_ms;
	/** Wall clock for alarms (ms since the epoch); NULL = CLOCK_REALTIME.
	 *  Called with clock_data. */
	double (*wall_ms)(void *data);
	/** Length of storage_dir in bytes; 0 = up to its NUL.  A binding passes
	 *  the length of the string it was given, so that a NUL inside it is
	 *  refused (DOBJ_EARG) instead of cutting the path short. */
	size_t storage_dir_len;
} dobj_rt_opts;
#define DOBJ_RT_OPTS_VERSION 1
#define DOBJ_RT_OPTS_INIT { DOBJ_RT_OPTS_VERSION, { 0, 0, 0, 0, 0 }, 0, 0, 0, 0, 0, 0, 0, 0 }
#define DOBJ_IDLE_TIMEOUT_MS 10000.0

DOBJ_API int dobj_rt_new(dobj_rt **out, const dobj_rt_opts *opts);
/**
 * Free the runtime: every unfinished task fails with DOBJ_ECLOSED (callers'
 * done callbacks run), every instance and host value is released.
 */
DOBJ_API void dobj_rt_free(dobj_rt *rt);
/**
 * Close the runtime without freeing it (the GC "clear" hook): every object is
 * reset and every unfinished task fails with DOBJ_ECLOSED, timers are
 * cancelled, and every host value the runtime holds (class data, instances,
 * tasks' state) is released.  Later calls fail with DOBJ_ECLOSED.  The memory
 * lives on while stubs or tasks still reference it (they hold the runtime),
 * so bindings may free those in any order.
 */
DOBJ_API void dobj_rt_clear(dobj_rt *rt);
/** DOBJ_OK on the runtime's own thread, else DOBJ_ETHREAD with
 *  DOBJ_MSG_THREAD: for a binding's explicit close (dobj_rt_clear itself is
 *  allowed anywhere, for collectors) and its other entry points that call
 *  nothing else that checks. */
DOBJ_API int dobj_rt_check_thread(const dobj_rt *rt);
/** Has the runtime been closed? */
DOBJ_API int dobj_rt_closed(const dobj_rt *rt);
/** Visit every host value the core holds (for a GC's traverse).  Stops and
 *  returns the first non-zero result of `visit`. */
DOBJ_API int dobj_rt_visit(dobj_rt *rt, int (*visit)(void *value, void *arg), void *arg);

/* ------------------------------------------- driving a runtime (the contract) */

/*
 * How a host drives a runtime (the way hiredis' redisAsyncContext is driven by
 * any event loop).  The core never blocks and never waits by itself except in
 * dobj_rt_run; it tells the host when it needs to run, in two ways a host may
 * use together or apart:
 *
 * - Hooks (dobj_host.notify, dobj_host.timer): "work is ready" and "the next
 *   timer moved, to this deadline".  A host answers both by arranging for
 *   dobj_rt_process to run (soon / at the deadline), never from inside the hook.
 * - One pollable file descriptor per runtime, dobj_rt_fd (Linux: an epoll
 *   descriptor over a timerfd for deadlines and an eventfd for "now").
 *   It becomes readable when work is ready or a timer is due.  Any loop that
 *   can watch a descriptor (asyncio's add_reader, cqueues, luv, libuv, a plain
 *   poll) calls dobj_rt_process when it is readable, and nothing else: no
 *   polling, no sleeping.  A spurious wake-up (the host already pumped the
 *   work, a timer moved later) costs one dobj_rt_process that does nothing.
 *
 * A host may also pump at once after calling into the core (dobj_rt_pump runs
 * what its own call made ready); the fd and the hooks only cover what happens
 * outside the host's sight (timers, wakes from callbacks).
 *
 * In cluster mode (dobj/cluster.h) the node's own threads report through the
 * fd alone (PostgreSQL confirmed a commit, the lease was renewed), never
 * through the hooks, which run on the runtime's thread: such a host watches
 * the fd.  A result counts as finished (dobj_task_done) only once its
 * object's writes are confirmed.
 *
 * Virtual time (dobj_rt_opts.virtual_time): the clock moves only through
 * dobj_rt_advance and dobj_rt_run, so the fd never becomes readable for a
 * timer; it still does for ready work.
 *
 * What a host callback may call.  Callbacks are: host.retain/release/notify/
 * timer, class construct/step/destroy, done callbacks (dobj_done_fn), timer
 * callbacks (dobj_timer_fn).
 * - All of them may read (accessors, dobj_task_result, dobj_rt_now_ms, ...)
 *   and call dobj_task_wake.
 * - step and construct run inside a pump: they may in addition make calls
 *   (dobj_stub_call), spawn tasks, wait (dobj_task_wait), finish their task,
 *   use storage, set timers, abort their object.  A pump from inside a step
 *   returns 0 at once; dobj_rt_run and dobj_rt_advance fail with DOBJ_ESTATE.
 * - Done callbacks and timer callbacks may also drop references
 *   (dobj_task_unref, dobj_stub_free, dobj_obj_unref: the core defers the
 *   host releases that follow) and make calls; they never pump, process, run,
 *   advance or free the runtime.  They may run where no pump is running
 *   (inside dobj_obj_abort, dobj_rt_clear, dobj_rt_free, and while timers
 *   fire): a host must not run code of its own there that could re-enter
 *   the core (Python: a loop future is completed after the core returns).
 * - retain, release, notify and timer may not call the core at all, except
 *   release, which may drop references (the core calls it only where that is
 *   safe: never in the middle of its own loops).
 * - Freeing the runtime is never allowed from a callback.
 */

/**
 * Run ready steps until none is left (fires the timers already due first;
 * never waits).  Re-entrant calls (from inside a step) return 0 at once: the
 * outer pump picks up the work.  What a step let go of is released
 * (host.release) before the next step runs, so a pump kept going by a
 * handler that goes on calling other objects does not hold it.  Returns the
 * number of steps run.
 */
DOBJ_API size_t dobj_rt_pump(dobj_rt *rt);
/** Is a pump (or run) in progress? */
DOBJ_API int dobj_rt_pumping(const dobj_rt *rt);

/**
 * What a host's loop calls when dobj_rt_fd is readable, or when a hook asked
 * for it: clears the fd, fires the timers that are due, pumps, then re-arms
 * the fd and reports the next deadline (host.timer) afresh.  Never waits.
 * DOBJ_OK, or DOBJ_ESTATE from inside a step, DOBJ_ETHREAD from another
 * thread, DOBJ_ECLOSED once the runtime is closed.
 */
DOBJ_API int dobj_rt_process(dobj_rt *rt);

/**
 * The runtime's pollable file descriptor: readable when work is ready or a
 * timer is due (see the contract above).  Made on the first call, owned by
 * the runtime, the same until the runtime is closed: dobj_rt_clear (and
 * dobj_rt_free) close it, so a loop stops watching it before closing the
 * runtime.  DOBJ_ECLOSED after that; a negative code where the system has
 * none (non-Linux).
 */
DOBJ_API int dobj_rt_fd(dobj_rt *rt);

/**
 * A reference driver of the contract for programs without an event loop:
 * process and wait with poll() on dobj_rt_fd (virtual time: jump the clock to
 * the next timer instead) until `until(arg)` is true, or nothing is left to
 * do (no ready step, no timer that keeps it going).  `until` may be NULL (run
 * to completion).  Returns DOBJ_OK when `until` became true or everything
 * finished, DOBJ_ESTATE when called from inside a step, DOBJ_PENDING when it
 * stopped with `until` false and nothing to run (a deadlock: work waits on
 * something that will never happen; the message says so).
 */
DOBJ_API int dobj_rt_run(dobj_rt *rt, int (*until)(void *arg), void *arg);

/** Is work ready (a step to run now)? */
DOBJ_API int dobj_rt_ready(const dobj_rt *rt);
/** Number of unfinished tasks (calls, blocks, background and free tasks),
 *  timers not included.  With dobj_rt_pending it tells "only timers are left"
 *  (tasks == 0) from "tasks wait for the host" (tasks > 0, none ready). */
DOBJ_API size_t dobj_rt_tasks(const dobj_rt *rt);

/** The task whose step is running (NULL outside steps). */
DOBJ_API dobj_task *dobj_rt_current(const dobj_rt *rt);
/** Number of unfinished tasks plus pending timers. */
DOBJ_API size_t dobj_rt_pending(const dobj_rt *rt);
/** The wall clock alarms use: ms since the epoch (opts.wall_ms, or real time;
 *  with virtual time, the real time at start plus the virtual clock). */
DOBJ_API double dobj_rt_wall_ms(dobj_rt *rt);
/** Now, in milliseconds, from the runtime's clock (virtual time included). */
DOBJ_API double dobj_rt_now_ms(dobj_rt *rt);

/**
 * A one-shot timer.  `fn(data, 1)` runs when the runtime is processed, pumped
 * or run after `delay_ms` (negative: 0; not a finite number: DOBJ_EARG with
 * DOBJ_MSG_DELAY — a sleep "for ever" is a wait on something else);
 * if the timer is cancelled or the runtime closes first, `fn(data, 0)` runs
 * instead: fn is called exactly once, so it can drop what data holds.
 * *out (may be NULL) is valid until fn has been called.
 */
typedef struct dobj_timer dobj_timer;
typedef void (*dobj_timer_fn)(void *data, int fired);
DOBJ_API int dobj_rt_timer(dobj_rt *rt, double delay_ms, dobj_timer_fn fn, void *data,
	dobj_timer **out);
/** Cancel a timer whose fn has not been called yet (fn(data, 0) runs now). */
DOBJ_API void dobj_timer_cancel(dobj_rt *rt, dobj_timer *timer);
/** Virtual time only: move the clock forward by `ms`, stopping at each timer
 *  due on the way (in time order, the clock reading that timer's time) to
 *  fire it and pump, so alarms, their retries and idle eviction happen in
 *  the order and at the times they would in real time.  Lets tests of alarm
 *  retries and eviction run in no time. */
DOBJ_API int dobj_rt_advance(dobj_rt *rt, double ms);
/** Milliseconds until the next timer, or -1 if none. */
DOBJ_API double dobj_rt_next_timer_ms(dobj_rt *rt);

/* ------------------------------------------------------------ namespaces */

/**
 * Bind a namespace: `binding` (binding_len bytes) is its name in env,
 * `unique_key` the ID key (NULL: the binding name).  Neither may contain a
 * NUL byte (DOBJ_EARG): a binding passes the lengths of the strings it was
 * given, so "q\0one" and "q\0two" are refused rather than cut to one "q".
 * The namespace is owned by the runtime (freed with it) and retains
 * class->data.  On failure nothing stays bound.
 */
DOBJ_API int dobj_ns_new(dobj_ns **out, dobj_rt *rt, const char *binding, size_t binding_len,
	const char *unique_key, size_t unique_key_len, const dobj_class *klass);
/**
 * dobj_ns_new with the IDs derived from `id_key` instead of `unique_key`
 * (NULL: the same).  The unique key still names the storage folder.  For a
 * class renamed by a migration (dobj_config_binding.id_key): its objects
 * keep their IDs under the new name.
 */
DOBJ_API int dobj_ns_new_with_id_key(dobj_ns **out, dobj_rt *rt, const char *binding,
	size_t binding_len, const char *unique_key, size_t unique_key_len, const char *id_key,
	size_t id_key_len, const dobj_class *klass);
DOBJ_API dobj_rt *dobj_ns_rt(const dobj_ns *ns);
DOBJ_API const char *dobj_ns_binding(const dobj_ns *ns);
DOBJ_API const char *dobj_ns_class_name(const dobj_ns *ns);
DOBJ_API void *dobj_ns_class_data(const dobj_ns *ns);
/** The namespace's ID key (for dobj_id_* functions). */
DOBJ_API dobj_idkey *dobj_ns_idkey(const dobj_ns *ns);
/** Number of namespaces and the i-th one, in bind order. */
DOBJ_API size_t dobj_rt_ns_count(const dobj_rt *rt);
DOBJ_API dobj_ns *dobj_rt_ns_at(const dobj_rt *rt, size_t i);
/** Number of live instances in the namespace. */
DOBJ_API size_t dobj_ns_live(const dobj_ns *ns);
/** Number of open storages (databases) in the namespace. */
DOBJ_API size_t dobj_ns_open_storages(const dobj_ns *ns);

/* ----------------------------------------------------------------- stubs */

/**
 * Make a stub for `id` (name may be NULL; else text, as dobj_id_from_name
 * takes it: DOBJ_EARG otherwise).  The stub binds to the
 * object's current incarnation on its first call; if that incarnation is
 * aborted the stub is broken and every later call fails with the abort's
 * error.  A new stub reaches a fresh instance.
 */
DOBJ_API int dobj_stub_new(dobj_stub **out, dobj_ns *ns, const dobj_id *id,
	const char *name, size_t name_len);
DOBJ_API void dobj_stub_free(dobj_stub *stub);
DOBJ_API const dobj_id *dobj_stub_id(const dobj_stub *stub);
/** Name or NULL; *len receives its length. */
DOBJ_API const char *dobj_stub_name(const dobj_stub *stub, size_t *len);
DOBJ_API dobj_ns *dobj_stub_ns(const dobj_stub *stub);
/**
 * The host error of a broken stub (borrowed; NULL while the stub is not
 * broken, for an abort without an error, after dobj_stub_drop_error and once
 * the runtime is closed).  When an incarnation is aborted, each stub bound
 * to it retains the abort's error for the calls it will fail; the dead
 * incarnation itself keeps none.  So the reference has exactly one owner
 * that a GC binding can see: the stub's wrapper visits it (tp_traverse) and
 * drops it (tp_clear).  dobj_rt_visit does not visit it.
 */
DOBJ_API void *dobj_stub_error(const dobj_stub *stub);
/** Release a broken stub's error now (a GC's tp_clear); later calls on the
 * stub still fail, with the abort's code and message and no host error. */
DOBJ_API void dobj_stub_drop_error(dobj_stub *stub);

/** Called once when a task finishes (successfully or not). */
typedef void (*dobj_done_fn)(dobj_task *task, void *data);

/**
 * Send a call to the stub's object.  `request` is a host value (ownership
 * passes to the core).  `url` (fetch only, may be NULL for RPC) is checked to
 * be absolute.  `method` names the RPC method (NULL for fetch).  The caller's
 * task (dobj_rt_current) decides the call's depth.  On success *out is a new
 * reference to the CALL task; `done` runs when it finishes.  Delivery happens
 * in dobj_rt_pump / dobj_rt_run, in call order.  Nothing runs inside this
 * function.  Errors detected at once (relative URL, depth, closed runtime)
 * return a negative code and deliver nothing; a call on a broken stub (its
 * object was aborted) is accepted and fails with the abort's error when it
 * is delivered.
 */
DOBJ_API int dobj_stub_call(dobj_task **out, dobj_stub *stub, dobj_call_kind kind,
	const char *method, const char *url, size_t url_len, void *request,
	dobj_done_fn done, void *done_data);

/**
 * dobj_stub_call with a request that is a core value rather than a host
 * value: `request_free` releases it (e.g. dobj_msg_free for a fetch to a
 * native class, dobj_val_free for RPC arguments).
 */
DOBJ_API int dobj_stub_call_ex(dobj_task **out, dobj_stub *stub, dobj_call_kind kind,
	const char *method, const char *url, size_t url_len, void *request,
	void (*request_free)(void *), dobj_done_fn done, void *done_data);

/** Is `url` absolute (scheme ":" ...)?  DOBJ_ETYPE with a message if not. */
DOBJ_API int dobj_url_check(const char *url, size_t len);

/* ----------------------------------------------------------------- tasks */

/**
 * Spawn a task running `step` on `obj` (NULL for FREE tasks, and for
 * BACKGROUND work of the runtime itself: dobj/background.h).  `host` is the
 * task's host state (coroutine...), owned by the core.  BLOCK closes obj's
 * gate at once: nothing but BLOCK tasks runs on obj until it finishes; if it
 * fails, obj is reset with its error.  Depth is inherited from the current
 * task.  *out (may be NULL) gets a new reference.
 */
DOBJ_API int dobj_task_spawn(dobj_task **out, dobj_rt *rt, dobj_obj *obj, dobj_task_kind kind,
	dobj_step_fn step, void *step_data, void *host, dobj_done_fn done, void *done_data);

DOBJ_API void dobj_task_ref(dobj_task *t);
DOBJ_API void dobj_task_unref(dobj_task *t);

/** Make a suspended task runnable again (no-op if finished or already queued). */
DOBJ_API void dobj_task_wake(dobj_task *t);
/** Finish successfully with host value `result` (ownership passes; may be NULL). */
DOBJ_API void dobj_task_return(dobj_task *t, void *result);
/** Finish with a core value (dobj_msg, dobj_val) released by `result_free`. */
DOBJ_API void dobj_task_return_value(dobj_task *t, void *result, void (*result_free)(void *));
/** Is the result a core value (returned with dobj_task_return_value)? */
DOBJ_API int dobj_task_result_is_core(const dobj_task *t);
/** Finish with an error: a code, a message, and an optional host error value
 *  (ownership passes).  No-op if the task already finished. */
DOBJ_API void dobj_task_raise(dobj_task *t, int code, const char *message, void *error);

/** Replace the task's done callback (the one its creator gave; NULL removes it). */
DOBJ_API void dobj_task_on_done(dobj_task *t, dobj_done_fn done, void *data);

/**
 * `waiter` suspends until `t` finishes: the core wakes it then (as
 * dobj_task_wake does), once per wait.  Any number of tasks may wait on one
 * task; they wake in the order they started waiting, after t's done callback.
 * If t is already finished, waiter is woken at once.  The core knows who
 * waits on whom, and refuses a wait that can never end: a call waiting
 * (directly or through other tasks) to be let through the gate of a
 * block_concurrency_while that itself waits on the call (a call parked at
 * another object's gate waits for that object's blocks: two blocks calling
 * each other's object are found too) fails with
 * DOBJ_EDEADLOCK / DOBJ_MSG_DEADLOCK (the call fails, the wait is accepted:
 * the waiter wakes and sees that error).  The two may belong to different
 * runtimes (of the same thread).  DOBJ_EARG if waiter == t.
 */
DOBJ_API int dobj_task_wait(dobj_task *waiter, dobj_task *t);

DOBJ_API dobj_task_kind dobj_task_kind_of(const dobj_task *t);
DOBJ_API dobj_call_kind dobj_task_call_kind(const dobj_task *t);
DOBJ_API const char *dobj_task_method(const dobj_task *t);
DOBJ_API dobj_rt *dobj_task_rt(const dobj_task *t);
DOBJ_API dobj_obj *dobj_task_obj(const dobj_task *t);
DOBJ_API int dobj_task_depth(const dobj_task *t);
/** The request of a CALL (borrowed). */
DOBJ_API void *dobj_task_request(const dobj_task *t);
/** Host state of the task (borrowed) and its setter (the old one is released). */
DOBJ_API void *dobj_task_host(const dobj_task *t);
DOBJ_API void dobj_task_set_host(dobj_task *t, void *host);
/** Is the task finished? */
DOBJ_API int dobj_task_done(const dobj_task *t);
/**
 * Outcome of a finished task: DOBJ_OK with *result (borrowed), or the error
 * code with *message and *error (borrowed host error, may be NULL).
 */
DOBJ_API int dobj_task_result(const dobj_task *t, void **result, const char **message, void **error);
/** Take the result out (ownership to the caller; the task keeps NULL). */
DOBJ_API void *dobj_task_take_result(dobj_task *t);
/** For an ALARM call: the scheduled time (ms since the epoch) and how many
 *  times it was retried before.  DOBJ_EARG for other tasks. */
DOBJ_API int dobj_task_alarm_info(const dobj_task *t, double *scheduled_ms, int *retry_count);

/* ---------------------------------------------------------------- objects */

/** The object's ID (inside the object). */
DOBJ_API const dobj_id *dobj_obj_id(const dobj_obj *obj);
/** The name inside the object: NULL for unique/parsed IDs, and when longer
 *  than DOBJ_MAX_CTX_NAME bytes. */
DOBJ_API const char *dobj_obj_name(const dobj_obj *obj, size_t *len);
DOBJ_API dobj_ns *dobj_obj_ns(const dobj_obj *obj);
/** The host instance (borrowed; NULL before construction finished). */
DOBJ_API void *dobj_obj_instance(const dobj_obj *obj);
/** Host context value a binding may attach (e.g. a ctx object; owned). */
DOBJ_API void *dobj_obj_ctx(const dobj_obj *obj);
DOBJ_API void dobj_obj_set_ctx(dobj_obj *obj, void *ctx);
/** Has the incarnation been aborted/reset? */
DOBJ_API int dobj_obj_dead(const dobj_obj *obj);
/** Nesting of block_concurrency_while on the object. */
DOBJ_API int dobj_obj_blocked(const dobj_obj *obj);
/**
 * Reset the object: every unfinished task on it fails with (code, message,
 * error) — error is a host value, retained once per task that gets it and
 * released once here — the instance is released, stubs bound to it are
 * broken, and the next stub reaches a fresh instance.  Safe from inside a
 * step of the object.  Called from outside a step, it wakes the tasks that
 * waited on the object but runs none of them: the caller pumps afterwards.
 */
DOBJ_API void dobj_obj_abort(dobj_obj *obj, int code, const char *message, void *error);
/** Keep an object (incarnation) alive past its reset, e.g. from a binding's
 *  ctx wrapper; every accessor stays valid, dobj_obj_dead tells it is over. */
DOBJ_API void dobj_obj_ref(dobj_obj *obj);
DOBJ_API void dobj_obj_unref(dobj_obj *obj);

/* ------------------------------------------- rules shared by the bindings */

/*
 * Each rule below is decided here once, so that every binding behaves the
 * same; a binding only translates values and raises what the core says.
 */

/** workerd's reason for ctx.abort() without one. */
#define DOBJ_MSG_ABORT_DEFAULT "Application called abort() to reset Durable Object."
/** Every call on a closed runtime. */
#define DOBJ_MSG_CLOSED "the runtime is closed"
/** Used by ctx and storage of an incarnation that was reset or evicted. */
#define DOBJ_MSG_GONE \
	"this object was reset or evicted; its ctx and storage belong to a previous instance"

/**
 * May RPC look `name` up on the class?  DOBJ_OK, or DOBJ_ENOHANDLER with the
 * message a caller gets:
 * - workerd's reserved handler names (`fetch`, `connect`, `alarm`,
 *   `webSocketMessage`, `webSocketClose`, `webSocketError`) and constructor
 *   names (`constructor`; `new`, the constructor of Lua classes, refused in
 *   every language so that a class behaves the same in all of them):
 *   "'NAME' is a reserved method and cannot be called over RPC." (workerd's);
 * - private names (starting with `_`, which includes Python's dunders and
 *   Lua's metamethods), the empty name and names with a NUL byte: the
 *   missing-method message (dobj_rpc_no_method).
 * The core applies it to every RPC call before the object's step runs, so a
 * step only ever sees callable names; bindings need not check again.
 */
DOBJ_API int dobj_rpc_name_check(const char *name, size_t len);

/**
 * Set the thread's error to workerd's missing-method message for `name`
 * (`The RPC receiver does not implement the method "NAME".`) and return
 * DOBJ_ENOHANDLER.  NAME is shown escaped: a control byte (NUL included), a
 * byte that is not UTF-8 (WTF-8) and a backslash as `\xhh` or `\\`, so that
 * the message holds the whole name as asked.  The message always ends with
 * `".`: a name that takes more than 256 bytes so shown is cut (between
 * characters) and marked with "...".  A step that finds no method returns
 * this code (or raises its task with it).
 */
DOBJ_API int dobj_rpc_no_method(const char *name, size_t len);

/**
 * Translate a user's idle timeout in seconds into opts->idle_timeout_ms, the
 * one rule for every binding: a positive number of seconds evicts objects
 * idle that long; +infinity never evicts (a binding maps its "never" spelling,
 * such as Lua's `false`, to INFINITY); 0, negative numbers and NaN are
 * refused with DOBJ_EARG.  Not calling it keeps the default
 * (DOBJ_IDLE_TIMEOUT_MS).
 */
DOBJ_API int dobj_rt_opts_idle_timeout(dobj_rt_opts *opts, double seconds);

/**
 * Set opts->durability from its user-facing name (`len` bytes): "process"
 * (DOBJ_DURABLE_PROCESS) or "power" (DOBJ_DURABLE_POWER); anything else is
 * refused with DOBJ_EARG and the message a binding shows.
 */
DOBJ_API int dobj_rt_opts_durability(dobj_rt_opts *opts, const char *name, size_t len);

/**
 * Is `ms` a delay the core accepts (dobj_rt_timer's rule)?  DOBJ_OK, or
 * DOBJ_EARG with DOBJ_MSG_DELAY for NaN and infinities.  For a binding that
 * waits without a runtime, so that its sleep refuses what a timer refuses.
 */
DOBJ_API int dobj_delay_check(double ms);

/**
 * Check runtime options (dobj_rt_new does it too): DOBJ_EARG with a message
 * for a wrong version, a NaN idle timeout, an unknown durability.
 */
DOBJ_API int dobj_rt_opts_check(const dobj_rt_opts *opts);

/**
 * Is the failure of a finished CALL remote (raised in or by the object:
 * its handler or constructor, its abort or reset, a missing method or
 * handler, a failed commit) rather than of the caller's own side (the
 * runtime was closed before the call could run)?  Bindings set their
 * `remote` flag from this.  0 for successes and unfinished tasks.
 */
DOBJ_API int dobj_task_remote(const dobj_task *t);

/**
 * Can the incarnation's ctx and storage still be used?  DOBJ_OK, or
 * DOBJ_ETHREAD with DOBJ_MSG_THREAD on another thread than the runtime's,
 * DOBJ_EABORTED with DOBJ_MSG_GONE when it was reset or evicted (a ctx kept
 * past its instance) or `obj` is NULL (a binding's wrapper that released
 * it), DOBJ_ECLOSED when the runtime is closed.  Every
 * storage call (dobj_kv_*, dobj_sql_exec, dobj_alarm_*, dobj_txn_begin)
 * refuses another thread the same way.
 */
DOBJ_API int dobj_obj_check(const dobj_obj *obj);

/**
 * Background errors: failures nobody awaits.  The hook is called once for
 * - a BACKGROUND task (ctx.wait_until) that failed by its own error, and
 * - each failed run of an alarm handler (dobj_task_alarm_info gives its
 *   retry count; the core retries up to DOBJ_ALARM_MAX_RETRIES times),
 * as workerd logs them.  Tasks failed because their object was reset or
 * the runtime closed are not reported (their callers hear of it).  `task`
 * is borrowed and finished: read it with dobj_task_result, dobj_task_kind_of,
 * dobj_task_call_kind, dobj_task_obj, dobj_task_alarm_info; take a reference
 * to keep it.  The hook runs from dobj_rt_pump / dobj_rt_run /
 * dobj_rt_advance after the step's writes are committed, like a done
 * callback: it may call accessors, ref and unref, not pump, run, advance,
 * clear or free the runtime.  No hook (the default): nothing is reported.
 */
typedef void (*dobj_error_hook)(dobj_task *task, void *data);
DOBJ_API void dobj_rt_set_error_hook(dobj_rt *rt, dobj_error_hook hook, void *data);
#define DOBJ_ALARM_MAX_RETRIES 6

/**
 * Take a finished task's host error value out (ownership to the caller; the
 * task keeps NULL), like dobj_task_take_result.
 */
DOBJ_API void *dobj_task_take_error(dobj_task *t);

/* -------------------------------------------------------- small messages */

/** A plain HTTP-like message for C classes and C callers. */
typedef struct dobj_msg {
	char *url;       /**< request URL (NULL in responses) */
	char *method;    /**< request method (NULL in responses) */
	int status;      /**< response status */
	size_t nheaders;
	char **header_names;   /**< lower-cased */
	char **header_values;
	unsigned char *body;
	size_t body_len;
	size_t body_cap;       /**< bytes allocated at body (set by the dobj_msg functions) */
	/** A 101 response's WebSocket client end (a reference, dobj_msg_free
	 *  drops it), or NULL: how a binding's response crosses cluster nodes
	 *  (dobj/route.h).  Set with dobj_msg_set_web_socket. */
	struct dobj_ws *web_socket;
} dobj_msg;

/** workerd's message (a RangeError there) for a status outside 200..599. */
#define DOBJ_MSG_STATUS_RANGE \
	"Responses may only be constructed with status codes in the range 200 to 599, inclusive."

/**
 * May a response be made with `status`?  DOBJ_OK for 200 to 599 (the range
 * workerd's Response constructor takes), else DOBJ_EARG with
 * DOBJ_MSG_STATUS_RANGE.  Bindings check their Response type with it.
 */
DOBJ_API int dobj_msg_status_check(long long status);

DOBJ_API dobj_msg *dobj_msg_new_request(const char *url, const char *method);
DOBJ_API dobj_msg *dobj_msg_new_response(int status, const void *body, size_t len);
/** Set a header (replacing every entry of that name), name checked and value
 *  normalized as dobj_msg_header_name_check / dobj_msg_header_value_check. */
DOBJ_API int dobj_msg_set_header(dobj_msg *m, const char *name, const char *value);
/** The value of header `name` (case-insensitive), NULL if absent; for a
 *  repeated set-cookie, the first (walk header_names for the others). */
DOBJ_API const char *dobj_msg_header(const dobj_msg *m, const char *name);
DOBJ_API int dobj_msg_set_body(dobj_msg *m, const void *body, size_t len);
DOBJ_API void dobj_msg_free(dobj_msg *m);
/** Attach a WebSocket client end to a response (a new reference; NULL
 *  clears).  Used by route codecs (dobj/route.h). */
DOBJ_API void dobj_msg_set_web_socket(dobj_msg *m, struct dobj_ws *client);

/** The largest body dobj_msg_append_body builds (100 MiB, workerd's request
 *  body limit on the paid plans): a server refuses a bigger upload with 413. */
#define DOBJ_MSG_BODY_MAX ((size_t)100 << 20)

/** The largest request head (request line and headers) a server reads
 *  (128 KiB, Cloudflare's limit on a request's headers): past it, 431. */
#define DOBJ_MSG_HEAD_MAX ((size_t)128 << 10)

/**
 * Add a header the way the Fetch API's Headers.append does: a name already
 * present gets ", " and the new value after its old one (so repeated request
 * headers keep their order); a new name is lower-cased and appended; a
 * set-cookie (dobj_msg_header_is_list) is always a new entry.  Like
 * dobj_msg_set_header, it checks the name and normalizes the value
 * (DOBJ_ETYPE as dobj_msg_header_name_check / dobj_msg_header_value_check).
 */
DOBJ_API int dobj_msg_add_header(dobj_msg *m, const char *name, const char *value);

/**
 * Append `len` bytes to the body (an upload arriving in chunks).  DOBJ_EARG
 * ("request body larger than 100 MiB") past DOBJ_MSG_BODY_MAX; the body is
 * then unchanged.
 */
DOBJ_API int dobj_msg_append_body(dobj_msg *m, const void *data, size_t len);

/**
 * Is a request body of `len` bytes allowed?  DOBJ_OK, or DOBJ_EARG ("request
 * body larger than 100 MiB") past DOBJ_MSG_BODY_MAX: the rule and message
 * dobj_msg_append_body applies, for a server that gathers a body itself (or
 * reads a Content-Length before the body) and answers 413 with the message.
 */
DOBJ_API int dobj_msg_body_check(size_t len);

/**
 * Is `host` (len bytes, a request's Host header) an authority a server may
 * put in the URL it builds, "http://" + host + path?  RFC 3986's
 * host [":" port]: a registered name (letters, digits, "-._~", "!$&'()*+,;="
 * and %XX), an IPv4 address or a bracketed IPv6 literal, then an optional
 * port of digits.  Anything else (empty, "/", "?", "#", "@", whitespace,
 * control bytes) would let the header rewrite the URL's path or query, so it
 * is refused: DOBJ_EARG ("invalid Host header ...") and the server answers
 * 400 without calling the entry.
 */
DOBJ_API int dobj_msg_host_check(const char *host, size_t len);

/**
 * Is `name` a header that frames the message on the wire (content-length,
 * transfer-encoding, connection, keep-alive, upgrade...)?  A server writes
 * those itself from the body it sends, so it drops a response's own copies,
 * as workerd does.  1 or 0; case-insensitive.
 */
DOBJ_API int dobj_msg_header_is_framing(const char *name);

/* The Fetch rules for headers, methods and bodies, as workerd applies them.
 * Bindings call these (their Headers/Request/Response types keep no copy of
 * a rule), and dobj_msg_set_header / dobj_msg_add_header apply them too. */

/** The content-type workerd gives a response made from a string body. */
#define DOBJ_MSG_TEXT_TYPE "text/plain;charset=UTF-8"
/** The content-type of Response.json(). */
#define DOBJ_MSG_JSON_TYPE "application/json"

/**
 * Is `name` (`len` bytes) a header name: one or more token characters
 * (RFC 9110: letters, digits and !#$%&'*+-.^_`|~)?  DOBJ_OK or DOBJ_ETYPE
 * with workerd's message "Invalid header name.".
 */
DOBJ_API int dobj_msg_header_name_check(const char *name, size_t len);

/**
 * Normalize a header value as Fetch does: leading and trailing HTTP
 * whitespace (space, tab, CR, LF) is not part of it; the rest must hold no
 * NUL, CR or LF.  On DOBJ_OK the value is the `*out_len` bytes at
 * `value + *start`; else DOBJ_ETYPE with workerd's "Invalid header value.".
 */
DOBJ_API int dobj_msg_header_value_check(const char *value, size_t len,
	size_t *start, size_t *out_len);

/**
 * Is `name` a header whose repeated values stay apart (set-cookie: a
 * cookie's date holds ", ", so joining them breaks them)?  Fetch's Headers
 * keeps them as a list (getSetCookie()), iterates them one by one and a
 * server sends each on its own line.  1 or 0; case-insensitive.
 */
DOBJ_API int dobj_msg_header_is_list(const char *name);

/**
 * Check a request method and give its normal form, as workerd's Request
 * does: DELETE, GET, HEAD, OPTIONS, POST and PUT in any case become upper
 * case (`*canonical` points at a static upper-case name, as the Fetch spec
 * says); the other methods workerd knows (PATCH, PURGE, TRACE, COPY, LOCK,
 * MKCOL, MOVE, PROPFIND, PROPPATCH, SEARCH, UNLOCK, ACL, REPORT, MKACTIVITY,
 * CHECKOUT, MERGE, MSEARCH, NOTIFY, SUBSCRIBE, UNSUBSCRIBE, QUERY) only as
 * written, in upper case (`*canonical` NULL); anything else ("patch",
 * CONNECT, a custom method) is DOBJ_ETYPE "Invalid HTTP method string:
 * <method>", workerd's TypeError.
 */
DOBJ_API int dobj_msg_method_check(const char *method, size_t len, const char **canonical);

/**
 * May a request with `method` (already normalized) have a body of
 * `body_len` bytes?  DOBJ_ETYPE with workerd's "Request with a GET or HEAD
 * method cannot have a body." for a non-empty body on GET or HEAD.
 */
DOBJ_API int dobj_msg_request_body_check(const char *method, size_t body_len);

/**
 * May a response with `status` have a body of `body_len` bytes?  A
 * null-body status (101, 204, 205, 304) takes none: DOBJ_ETYPE with
 * workerd's "Response with null body status (101, 204, 205, or 304) cannot
 * have a body.".
 */
DOBJ_API int dobj_msg_response_body_check(int status, size_t body_len);

/**
 * May a response carry `text` (`len` bytes of UTF-8) as its statusText?  As
 * workerd's Response: anything without a control character below U+0020
 * (a tab, CR, LF or NUL included); else DOBJ_ETYPE "Invalid statusText".
 */
DOBJ_API int dobj_msg_status_text_check(const char *text, size_t len);

/** The reason phrase of `status` ("OK", "Not Found"), "" if it has none: workerd's
 *  table (its Response.statusText when none is given). */
DOBJ_API const char *dobj_msg_status_text(int status);

/**
 * May a header with this name and value go on the wire?  DOBJ_OK when the
 * name is a non-empty RFC 9110 token and the value holds no CR, LF or NUL
 * (what the Fetch API's Headers accepts); else DOBJ_EARG with a message
 * naming the header.  A server checks a response's headers with it, so that
 * a value cannot add a header or end the head early.
 */
DOBJ_API int dobj_msg_header_check(const char *name, size_t name_len, const char *value,
	size_t value_len);

/** A host for C programs whose values are dobj_msg (release = dobj_msg_free,
 *  no retain: C values are never shared). */
DOBJ_API dobj_host dobj_host_msg(void);

#include "dobj/storage.h"
#include "dobj/wire.h"
#include "dobj/server.h"
#include "dobj/val.h"
#include "dobj/value.h"
#include "dobj/native.h"
#include "dobj/cluster.h" /* before config.h: a config names cluster options */
#include "dobj/config.h"
#include "dobj/testkit.h"
#include "dobj/route.h"
#include "dobj/websocket.h"
#include "dobj/background.h"

#ifdef __cplusplus
}
#endif
#endif
