/**
 * dobj/val.h — a structured value in C: what RPC arguments and results,
 * and stored values, look like to C code (native classes, tests).
 *
 * The kinds are those of the value codec (V8 serialization, dobj/value.h):
 * undefined, null, booleans, numbers, BigInts, strings, bytes (Uint8Array),
 * arrays, objects (string keys, insertion order), Maps, Sets and Dates.
 * Values are reference counted so that a decoded blob with repeated
 * sub-objects shares them; cycles cannot be represented.
 *
 * Included by dobj.h; do not include directly.
 */
#ifndef DOBJ_VAL_H
#define DOBJ_VAL_H

typedef enum dobj_val_type {
	DOBJ_VAL_UNDEFINED = 0,
	DOBJ_VAL_NULL,
	DOBJ_VAL_BOOL,
	DOBJ_VAL_NUMBER,
	DOBJ_VAL_BIGINT,
	DOBJ_VAL_STRING,
	DOBJ_VAL_BYTES,
	DOBJ_VAL_ARRAY,
	DOBJ_VAL_OBJECT,
	DOBJ_VAL_MAP,
	DOBJ_VAL_SET,
	DOBJ_VAL_DATE,
	/** A stub or an ID of a namespace of this process (RPC only: such values
	 *  cannot be stored or encoded). */
	DOBJ_VAL_STUB,
	DOBJ_VAL_ID
} dobj_val_type;

typedef struct dobj_val dobj_val;

/* Constructors: NULL on out-of-memory (with dobj_error_last set). */
DOBJ_API dobj_val *dobj_val_undefined(void);
DOBJ_API dobj_val *dobj_val_null(void);
DOBJ_API dobj_val *dobj_val_bool(int b);
/**
 * A JS number, as a JS function would return it: a whole number in the Smi
 * range is written `I` and reads as an integer, so dobj_val_number(1.0) is
 * the integer 1 to Python and Lua (as JS's `1.0` is `1`).
 */
DOBJ_API dobj_val *dobj_val_number(double d);
/**
 * A float of the host language (Python float, Lua float): always written
 * `N`, so 1.0 reads back as a float.  See dobj_number_is_integer for the
 * one exception (whole numbers beyond the Smi range read as integers).
 */
DOBJ_API dobj_val *dobj_val_double(double d);
/**
 * An integer of the host language, by dobj's integer rule: a number within
 * ±DOBJ_VALUE_INTEGER_MAX (2^53), a BigInt beyond.
 */
DOBJ_API dobj_val *dobj_val_integer(int64_t v);
/** A BigInt from a sign (0 or 1 = negative) and a little-endian magnitude. */
DOBJ_API dobj_val *dobj_val_bigint(int negative, const unsigned char *magnitude, size_t len);
DOBJ_API dobj_val *dobj_val_bigint_i64(int64_t v);
DOBJ_API dobj_val *dobj_val_bigint_u64(uint64_t v);
/** A string from UTF-8 (WTF-8 accepted) bytes; copied. */
DOBJ_API dobj_val *dobj_val_string(const char *s, size_t len);
/** Bytes (a Uint8Array); copied. */
DOBJ_API dobj_val *dobj_val_bytes(const void *p, size_t len);
DOBJ_API dobj_val *dobj_val_date(double epoch_ms);
DOBJ_API dobj_val *dobj_val_array(void);
/** A stub / an ID for RPC arguments and results: the namespace, the ID and
 *  an optional name (copied).  The namespace must outlive the value. */
DOBJ_API dobj_val *dobj_val_stub(dobj_ns *ns, const dobj_id *id, const char *name, size_t len);
DOBJ_API dobj_val *dobj_val_id(dobj_ns *ns, const dobj_id *id, const char *name, size_t len);
/** Read a stub or ID value: its namespace, ID and name (NULL if none). */
DOBJ_API dobj_ns *dobj_val_get_ref(const dobj_val *v, const dobj_id **id, const char **name,
	size_t *len);
DOBJ_API dobj_val *dobj_val_object(void);
DOBJ_API dobj_val *dobj_val_map(void);
DOBJ_API dobj_val *dobj_val_set(void);

/** Take another reference / drop one (NULL is fine). */
DOBJ_API dobj_val *dobj_val_ref(dobj_val *v);
DOBJ_API void dobj_val_free(dobj_val *v);

/* Building containers: each takes ownership of the item(s) it is given,
 * also on failure. */
DOBJ_API int dobj_val_push(dobj_val *array_or_set, dobj_val *item);
/** Set an object property (replaces an existing key). */
DOBJ_API int dobj_val_put(dobj_val *object, const char *key, size_t key_len, dobj_val *item);
/** Add a Map entry. */
DOBJ_API int dobj_val_map_put(dobj_val *map, dobj_val *key, dobj_val *item);

/* Reading. */
DOBJ_API dobj_val_type dobj_val_type_of(const dobj_val *v);
/** A readable name of the type, for messages ("number", "Map", ...). */
DOBJ_API const char *dobj_val_type_name(const dobj_val *v);
DOBJ_API int dobj_val_get_bool(const dobj_val *v);
/** Numbers and Dates: the double. */
DOBJ_API double dobj_val_get_number(const dobj_val *v);
/**
 * Is v a number a binding shows as an integer?  The same rule as for
 * stored values (dobj_number_is_integer): 1 for a number written `I`, or a
 * whole number beyond the Smi range within ±2^53; 0 for other numbers and
 * every other type.  Numbers keep this through dobj_val_encode/decode, so
 * RPC and storage map numbers alike.
 */
DOBJ_API int dobj_val_is_integer(const dobj_val *v);
/** Strings: UTF-8 bytes (NUL-terminated); bytes: the buffer. */
DOBJ_API const char *dobj_val_get_string(const dobj_val *v, size_t *len);
DOBJ_API const void *dobj_val_get_bytes(const dobj_val *v, size_t *len);
/** BigInt: sign and little-endian magnitude (borrowed). */
DOBJ_API const unsigned char *dobj_val_get_bigint(const dobj_val *v, int *negative, size_t *len);
/** BigInt or integral number as int64: 0 if it fits, DOBJ_EARG if not. */
DOBJ_API int dobj_val_to_i64(const dobj_val *v, int64_t *out);
DOBJ_API int dobj_val_to_u64(const dobj_val *v, uint64_t *out);
/** Items of arrays and Sets, entries of objects and Maps. */
DOBJ_API size_t dobj_val_len(const dobj_val *v);
/** Item i (arrays, Sets) or the value of entry i (objects, Maps); borrowed. */
DOBJ_API dobj_val *dobj_val_at(const dobj_val *v, size_t i);
/** Key of entry i of an object (UTF-8, borrowed). */
DOBJ_API const char *dobj_val_key_at(const dobj_val *v, size_t i, size_t *len);
/** Key of entry i of a Map (borrowed). */
DOBJ_API dobj_val *dobj_val_map_key_at(const dobj_val *v, size_t i);
/** An object's property by key, or NULL (borrowed). */
DOBJ_API dobj_val *dobj_val_get(const dobj_val *v, const char *key, size_t key_len);
/** Deep equality (numbers by value and dobj_val_is_integer, NaN equal to
 *  NaN). */
DOBJ_API int dobj_val_equal(const dobj_val *a, const dobj_val *b);

/** Encode in V8's serialization format (what storage holds); *out is the
 *  caller's (free()). */
DOBJ_API int dobj_val_encode(const dobj_val *v, unsigned char **out, size_t *len);
/** Decode a V8 blob (DOBJ_EINVALID with a message for corrupt input; cyclic
 *  values are refused).  Allocation is bounded by the blob's size: the
 *  holes of a sparse array share one undefined value, and the reader caps
 *  claimed array lengths (DOBJ_VALUE_SLOTS_BASE). */
DOBJ_API int dobj_val_decode(const void *blob, size_t len, dobj_val **out);

#endif
