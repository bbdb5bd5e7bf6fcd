/**
 * dobj/storage.h — durable storage for objects: key-value and SQL on
 * embedded SQLite, in workerd's localDisk layout, with writes coalesced per
 * step and committed before a step's results are delivered (output gate).
 *
 * Included by dobj.h; do not include directly.
 *
 * Values are opaque byte strings to the core: bindings encode them with the
 * value codec (dobj/value.h) in V8's serialization format.
 */
#ifndef DOBJ_STORAGE_H
#define DOBJ_STORAGE_H

/* Limits and messages (workerd's, verbatim where workerd has one). */
#define DOBJ_MAX_KEY_BYTES 2048
#define DOBJ_MAX_VALUE_BYTES 131072
#define DOBJ_MAX_KEYS_PER_CALL 128
#define DOBJ_MSG_PUT_UNDEFINED "put() called with undefined value."
#define DOBJ_MSG_LIST_LIMIT "List limit must be positive."
#define DOBJ_MSG_LIST_START "list() cannot be called with both start and startAfter values."
#define DOBJ_MSG_DELETE_ALL_TXN "Cannot call deleteAll() within a transaction"
#define DOBJ_MSG_NO_ALARM_HANDLER \
	"Your Durable Object class must have an alarm() handler in order to call setAlarm()"
/* Alarm times workerd refuses, with its messages (jsg's Date conversion and
 * setAlarm).  Its limit is int64 nanoseconds, 2262-04-11, whatever the
 * message says. */
#define DOBJ_MSG_ALARM_NOT_A_DATE "The value cannot be converted because it is not a valid Date."
#define DOBJ_MSG_ALARM_TOO_LATE "This API doesn't support dates after 2189."
#define DOBJ_MSG_ALARM_TOO_EARLY "This API doesn't support dates before 1687."
#define DOBJ_MSG_ALARM_NOT_POSITIVE "setAlarm() cannot be called with an alarm time <= 0"

/** Durability of commits. */
typedef enum dobj_durability {
	DOBJ_DURABLE_PROCESS = 0, /**< survives a process kill (WAL, no fsync per commit) */
	DOBJ_DURABLE_POWER = 1    /**< survives power loss (fsync on every commit) */
} dobj_durability;

typedef struct dobj_storage dobj_storage;

/**
 * The object's storage, opened on first use (borrowed; valid while the
 * incarnation lives).  With a storage directory it is
 * `<dir>/<unique_key>/<hex id>.sqlite`; without, an in-memory database that
 * lives as long as the runtime (eviction and abort keep it).  Refused as
 * dobj_obj_check refuses (NULL included).
 */
DOBJ_API int dobj_obj_storage(dobj_obj *obj, dobj_storage **out);

/** Check a key's size (DOBJ_EARG with workerd's message). */
DOBJ_API int dobj_kv_check_key(size_t key_len);
/** Check a value's size. */
DOBJ_API int dobj_kv_check_value(size_t value_len);
/** Check how many keys one call names; `op` is "get", "put" or "delete". */
DOBJ_API int dobj_kv_check_count(size_t n, const char *op);

/**
 * Get `key`.  Returns 1 and sets *value / *len (borrowed until the next
 * storage call on `st`) if present, 0 if absent, negative on error.
 */
DOBJ_API int dobj_kv_get(dobj_storage *st, const char *key, size_t key_len,
	const void **value, size_t *len);
/** Put `key` = value (replaces). */
DOBJ_API int dobj_kv_put(dobj_storage *st, const char *key, size_t key_len,
	const void *value, size_t len);
/** Delete `key`: 1 if it existed, 0 if not, negative on error. */
DOBJ_API int dobj_kv_delete(dobj_storage *st, const char *key, size_t key_len);
/** Delete every key, every SQL table and the alarm. */
DOBJ_API int dobj_kv_delete_all(dobj_storage *st);

/** list() options; NULL pointers mean "not given".  Keys sort by UTF-8 bytes. */
typedef struct dobj_kv_list_opts {
	const char *start; size_t start_len;             /**< inclusive */
	const char *start_after; size_t start_after_len; /**< exclusive */
	const char *end; size_t end_len;                 /**< exclusive */
	const char *prefix; size_t prefix_len;
	int reverse;
	long long limit;                                 /**< < 0: no limit given */
} dobj_kv_list_opts;
#define DOBJ_KV_LIST_OPTS_INIT { 0, 0, 0, 0, 0, 0, 0, 0, 0, -1 }

/**
 * Set opts->limit from a user's number, the one rule for every binding: a
 * number >= 1 (a fraction is cut; 9e18 and beyond mean no limit); 0,
 * negative numbers and NaN are refused with DOBJ_EARG and
 * DOBJ_MSG_LIST_LIMIT (the C field cannot say so: -1 is "not given").
 */
DOBJ_API int dobj_kv_list_limit(dobj_kv_list_opts *opts, double limit);

/** Called per row; a non-zero return stops the listing and is returned. */
typedef int (*dobj_kv_row_fn)(void *arg, const char *key, size_t key_len,
	const void *value, size_t len);
DOBJ_API int dobj_kv_list(dobj_storage *st, const dobj_kv_list_opts *opts,
	dobj_kv_row_fn fn, void *arg);

/**
 * Explicit transactions (transaction_sync / transaction): nested, each a
 * savepoint inside the step's implicit transaction.  Reads see the
 * transaction's own writes; rollback discards them.
 */
DOBJ_API int dobj_txn_begin(dobj_storage *st);
DOBJ_API int dobj_txn_commit(dobj_storage *st);
DOBJ_API int dobj_txn_rollback(dobj_storage *st);
DOBJ_API int dobj_txn_depth(const dobj_storage *st);

/**
 * A transaction handle: the state a binding's transaction object keeps (a
 * plain value).  With it every binding follows one set of rules:
 * - dobj_txn_open begins a transaction nested in those already open;
 * - dobj_txn_end, after the transaction's function returned (ok) or raised
 *   (!ok), commits or rolls back the handle's transaction, together with any
 *   inner one its function left open; it does nothing for a handle already
 *   ended or rolled back, and for a storage whose object is gone (`st` NULL
 *   or reset: its writes were discarded with it);
 * - dobj_txn_check, before every use of a handle (txn.get(), ...): DOBJ_OK
 *   while open, else DOBJ_ESTATE "the transaction was rolled back" or "the
 *   transaction has finished";
 * - dobj_txn_rollback_handle (txn.rollback()) works on the innermost open
 *   transaction only: DOBJ_ESTATE "only the innermost open transaction can
 *   be rolled back" otherwise (and dobj_txn_check's error for a handle that
 *   is no longer open).
 */
typedef struct dobj_txn {
	int level; /**< nesting level (1 = outermost) */
	int state; /**< DOBJ_TXN_OPEN, DOBJ_TXN_ENDED or DOBJ_TXN_ROLLED_BACK */
} dobj_txn;
enum { DOBJ_TXN_OPEN = 1, DOBJ_TXN_ENDED = 2, DOBJ_TXN_ROLLED_BACK = 3 };
DOBJ_API int dobj_txn_open(dobj_storage *st, dobj_txn *txn);
DOBJ_API int dobj_txn_end(dobj_storage *st, dobj_txn *txn, int ok);
DOBJ_API int dobj_txn_check(const dobj_txn *txn);
DOBJ_API int dobj_txn_rollback_handle(dobj_storage *st, dobj_txn *txn);

/** Commit what the current step wrote now (sync()).  Outside a transaction. */
DOBJ_API int dobj_storage_sync(dobj_storage *st);

/* --------------------------------------------------------------- SQL API */

/** A bound SQL parameter. */
typedef enum dobj_sql_type {
	DOBJ_SQL_NULL = 0,
	DOBJ_SQL_INT = 1,
	DOBJ_SQL_REAL = 2,
	DOBJ_SQL_TEXT = 3,
	DOBJ_SQL_BLOB = 4
} dobj_sql_type;

typedef struct dobj_sql_value {
	dobj_sql_type type;
	long long i;
	double d;
	const void *p; /**< TEXT (UTF-8) or BLOB bytes */
	size_t len;
} dobj_sql_value;

typedef struct dobj_cursor dobj_cursor;

/**
 * Run `sql` (one or more statements; the cursor holds the last one's rows,
 * fully read).  BEGIN/COMMIT/ROLLBACK/SAVEPOINT and tables named `_cf_*` are
 * refused.  *out belongs to the caller (dobj_cursor_free).
 */
DOBJ_API int dobj_sql_exec(dobj_storage *st, const char *sql, size_t len,
	const dobj_sql_value *args, size_t nargs, dobj_cursor **out);
DOBJ_API void dobj_cursor_free(dobj_cursor *c);
DOBJ_API size_t dobj_cursor_columns(const dobj_cursor *c);
DOBJ_API const char *dobj_cursor_column_name(const dobj_cursor *c, size_t col);
DOBJ_API size_t dobj_cursor_rows(const dobj_cursor *c);
/** cursor.one(): DOBJ_OK when exactly one row is left (`rows_left`), else
 *  DOBJ_ESTATE with workerd's message ("Expected exactly one result from SQL
 *  query, but got no results." / "... but got multiple results."). */
DOBJ_API int dobj_sql_one_check(size_t rows_left);
/** Cell (row, col), borrowed from the cursor. */
DOBJ_API const dobj_sql_value *dobj_cursor_cell(const dobj_cursor *c, size_t row, size_t col);
DOBJ_API long long dobj_cursor_rows_read(const dobj_cursor *c);
DOBJ_API long long dobj_cursor_rows_written(const dobj_cursor *c);
/** Size of the object's database in bytes. */
DOBJ_API long long dobj_sql_database_size(dobj_storage *st);

/* ---------------------------------------------------------------- alarms */

/** Set the object's alarm (ms since the epoch, kept to the nanosecond); a
 *  time in the past fires as soon as possible.  Like workerd, refuses
 *  NaN and infinities, times at or beyond 2^63 ns (2262) and times below
 *  1 ms (DOBJ_EARG, DOBJ_MSG_ALARM_*).  Written to the namespace's schedule
 *  and to the object's own database (`_cf_METADATA`, in the step's
 *  transaction), as workerd does. */
DOBJ_API int dobj_alarm_set(dobj_storage *st, double epoch_ms);
/** 1 and *epoch_ms if set, 0 if none: the object's own record (so a
 *  rolled-back set_alarm reads as not set), none inside the alarm handler
 *  unless the handler set a new one. */
DOBJ_API int dobj_alarm_get(dobj_storage *st, double *epoch_ms);
DOBJ_API int dobj_alarm_delete(dobj_storage *st);

#endif
