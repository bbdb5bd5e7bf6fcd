/**
 * dobj/native.h — object classes written in C.
 *
 * A native class is a constructor, a destructor, optional fetch and alarm
 * handlers, and methods: ordinary C functions with a signature string.  The
 * core prepares one libffi call interface per method when the class is
 * registered and converts RPC arguments and results (dobj_val) on each call,
 * so no per-method glue is written.  One class serves Python and Lua stubs.
 *
 * A method is `R fn(dobj_native_ctx *ctx, A1 a1, A2 a2, ...)` and its
 * signature names R and the A's:  "i64(i64,str)".  Types:
 *
 *   void                  (return only)    undefined
 *   bool                  int (0/1)        boolean
 *   i8 i16 i32 i64        int8_t..int64_t  integer number (or BigInt)
 *   u8 u16 u32 u64        uint8_t..        integer number (or BigInt)
 *   f64 (or double)       double           number
 *   str                   const char *     string (UTF-8, NUL-terminated)
 *   bytes                 const dobj_bytes * (argument) / dobj_bytes (return)
 *   value                 const dobj_val * (argument) / dobj_val * (return,
 *                         ownership to the core)
 *
 * Returned strings and bytes are copied at once: a method may return a
 * pointer into its instance or static memory.  A method fails by calling
 * api->raise(ctx, fmt, ...); what it returns is then ignored.
 *
 * Shared libraries export `int dobj_native_init(const dobj_native_api *api,
 * dobj_native_registry *reg)` (DOBJ_NATIVE_INIT_SYMBOL), which registers
 * classes with api->add_class.  A library calls the core only through `api`
 * (the core is linked into the Python and Lua modules, whose symbols a
 * dlopen'ed library cannot see).
 *
 * Included by dobj.h; do not include directly.
 */
#ifndef DOBJ_NATIVE_H
#define DOBJ_NATIVE_H

#define DOBJ_NATIVE_ABI 1
#define DOBJ_NATIVE_INIT_SYMBOL "dobj_native_init"

typedef struct dobj_native_ctx dobj_native_ctx;
typedef struct dobj_native_registry dobj_native_registry;

typedef struct dobj_bytes {
	const void *data;
	size_t len;
} dobj_bytes;

typedef struct dobj_native_method {
	const char *name;
	const char *signature;
	void (*fn)(void);
} dobj_native_method;

/** Cast a method to the generic function pointer type of dobj_native_method. */
#define DOBJ_NATIVE_FN(f) ((void (*)(void))(f))

typedef struct dobj_native_class_def {
	unsigned abi; /**< DOBJ_NATIVE_ABI */
	const char *name;
	/** Make the instance (may be NULL for "no state"); on failure call
	 *  api->raise and return NULL. */
	void *(*create)(dobj_native_ctx *ctx);
	void (*destroy)(void *instance);
	/** fetch: fill *response (api->response); return 0, or raise and return < 0. */
	int (*fetch)(dobj_native_ctx *ctx, const dobj_msg *request, dobj_msg **response);
	/** alarm: return 0, or raise and return < 0 (the alarm is retried). */
	int (*alarm)(dobj_native_ctx *ctx, double scheduled_ms, int retry_count);
	const dobj_native_method *methods;
	size_t nmethods;
} dobj_native_class_def;

/** What a native library may call. */
typedef struct dobj_native_api {
	unsigned abi;
	size_t size; /**< sizeof(dobj_native_api): grows at the end only */
	int (*add_class)(dobj_native_registry *reg, const dobj_native_class_def *def);
	/** Fail the current call with a message (returns DOBJ_EUSER). */
	int (*raise)(dobj_native_ctx *ctx, const char *fmt, ...);
	void *(*instance)(dobj_native_ctx *ctx);
	/** The object's ID as 64 hex digits (NUL-terminated). */
	const char *(*id)(dobj_native_ctx *ctx);
	/** The object's name, or NULL. */
	const char *(*name)(dobj_native_ctx *ctx, size_t *len);
	/** Wall clock, ms since the epoch (the runtime's clock: replaceable in tests). */
	double (*now)(dobj_native_ctx *ctx);
	/* Durable storage of the object: values are dobj_val, stored in V8's
	 * format so workerd can read them.  get: 1 found (*out is the caller's),
	 * 0 absent, < 0 error (raised). */
	int (*get)(dobj_native_ctx *ctx, const char *key, size_t key_len, dobj_val **out);
	int (*put)(dobj_native_ctx *ctx, const char *key, size_t key_len, const dobj_val *value);
	int (*del)(dobj_native_ctx *ctx, const char *key, size_t key_len);
	int (*set_alarm)(dobj_native_ctx *ctx, double epoch_ms);
	/* Values. */
	dobj_val *(*val_null)(void);
	dobj_val *(*val_bool)(int b);
	dobj_val *(*val_number)(double d);
	dobj_val *(*val_string)(const char *s, size_t len);
	dobj_val *(*val_bytes)(const void *p, size_t len);
	dobj_val *(*val_array)(void);
	dobj_val *(*val_object)(void);
	int (*val_push)(dobj_val *array, dobj_val *item);
	int (*val_put)(dobj_val *object, const char *key, size_t key_len, dobj_val *item);
	void (*val_free)(dobj_val *v);
	dobj_val_type (*val_type)(const dobj_val *v);
	double (*val_number_of)(const dobj_val *v);
	const char *(*val_string_of)(const dobj_val *v, size_t *len);
	size_t (*val_len)(const dobj_val *v);
	dobj_val *(*val_at)(const dobj_val *v, size_t i);
	dobj_val *(*val_get)(const dobj_val *v, const char *key, size_t key_len);
	/* HTTP messages for fetch. */
	dobj_msg *(*response)(int status, const void *body, size_t len);
	int (*set_header)(dobj_msg *m, const char *name, const char *value);
	const char *(*header)(const dobj_msg *m, const char *name);
	/* Since the first release (check api->size before use). */
	dobj_val *(*val_ref)(dobj_val *v);
	const char *(*val_key_at)(const dobj_val *v, size_t i, size_t *len);
	dobj_val *(*val_map_key_at)(const dobj_val *v, size_t i);
	/* Since issue 7 (check api->size): numbers by the integer rule
	 * (dobj/val.h) — a float that stays a float in Python and Lua, an
	 * integer (a BigInt beyond 2^53), and whether a number reads as one. */
	dobj_val *(*val_double)(double d);
	dobj_val *(*val_integer)(int64_t v);
	int (*val_is_integer)(const dobj_val *v);
} dobj_native_api;

typedef int (*dobj_native_init_fn)(const dobj_native_api *api, dobj_native_registry *reg);

/** The API table given to native code (also for classes defined in-process). */
DOBJ_API const dobj_native_api *dobj_native_api_get(void);

/** A registered native class (owned by the core; lives as long as the process). */
typedef struct dobj_native_class dobj_native_class;

/**
 * Register a class defined in this process: check every signature, prepare
 * the libffi call interfaces.  Clear errors for an unknown type, a NULL
 * function, a missing name or a duplicate method.
 */
DOBJ_API int dobj_native_define(dobj_native_class **out, const dobj_native_class_def *def);
/** Free a class made with dobj_native_define (after every runtime using it). */
DOBJ_API void dobj_native_free(dobj_native_class *nc);

/**
 * Load a shared library and find class `name` in it.  The library is loaded
 * once per path (and never unloaded); its init symbol registers its classes.
 */
DOBJ_API int dobj_native_load(dobj_native_class **out, const char *path, const char *name);

/** The dobj_class to bind a native class with dobj_ns_new.  Fetch calls take
 *  a dobj_msg request and return a dobj_msg; RPC calls take a dobj_val array
 *  of arguments and return a dobj_val (both core values, dobj_stub_call_ex). */
DOBJ_API void dobj_native_class_of(const dobj_native_class *nc, dobj_class *out);
DOBJ_API const char *dobj_native_class_name(const dobj_native_class *nc);

/**
 * For a native namespace: would `args` (an array) call `name`?  Checks the
 * method exists, the arity and that every argument converts.
 * dobj_stub_call_ex runs it for every RPC call to a native namespace and
 * fails the call at once (nothing delivered) on a wrong arity or argument
 * (DOBJ_EARG or the conversion's code); a missing method is delivered and
 * fails remotely, as workerd's.  Bindings need not call it themselves.
 * DOBJ_OK for namespaces that are not native.
 */
DOBJ_API int dobj_native_check(const dobj_ns *ns, const char *name, const dobj_val *args);

/** Does the native class have a method `name`? */
DOBJ_API int dobj_native_has_method(const dobj_native_class *nc, const char *name);

/** Is `klass` (as given to dobj_ns_new) a native class?  Then its calls
 *  carry core values (see dobj_native_class_of). */
DOBJ_API int dobj_class_is_native(const dobj_class *klass);
DOBJ_API int dobj_ns_is_native(const dobj_ns *ns);

#endif
