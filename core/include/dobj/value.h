/**
 * dobj/value.h — the value codec: V8's ValueSerializer format (version 15),
 * the format workerd stores in `_cf_KV` and sends over RPC.
 *
 * Both halves stream, so a binding needs no intermediate tree:
 *
 * - dobj_ser writes a value as a sequence of calls (begin a container, write
 *   its items, end it).  Begin functions hand back the object id V8 assigns,
 *   so when a binding meets the same host object again it writes
 *   dobj_ser_ref(id) — that is how shared sub-objects and cycles survive.
 * - dobj_de reads a blob one token at a time and validates it completely:
 *   corrupt or unsupported input ends in a negative code with a message,
 *   never a crash or an over-read.
 *
 * The supported subset, the mapping rules and the exact bytes chosen are in
 * docs/value-format.md.
 *
 * Included by dobj.h; do not include directly.
 */
#ifndef DOBJ_VALUE_H
#define DOBJ_VALUE_H

/** The format version written (`FF 0F`).  Versions 13 to 15 are read. */
#define DOBJ_VALUE_VERSION 15
/** Containers (objects, arrays, Maps, Sets) nest at most this deep, in both
 *  directions: bindings recurse, and a blob must not exhaust their stack. */
#define DOBJ_VALUE_MAX_DEPTH 256
/** Small integers V8 writes as `I` (a Smi): workerd's V8 uses pointer
 *  compression, so Smis are 31-bit.  Other numbers are doubles (`N`). */
#define DOBJ_VALUE_SMI_MIN (-1073741824)
#define DOBJ_VALUE_SMI_MAX 1073741823
/** Every integer up to ±2^53 is exact in a double: dobj writes integers
 *  within ±DOBJ_VALUE_INTEGER_MAX as JS numbers, larger ones as BigInts
 *  (dobj_ser_integer; the whole rule is in docs/value-format.md). */
#define DOBJ_VALUE_INTEGER_MAX 9007199254740992LL
/**
 * Array slots a blob may claim: the lengths of all its arrays added up
 * (sparse arrays count their holes) may not exceed
 * DOBJ_VALUE_SLOTS_BASE + DOBJ_VALUE_SLOTS_PER_BYTE × the blob's size.
 * A binding that makes a list of `length` slots for an array therefore
 * allocates in proportion to the bytes it was given, whatever lengths the
 * blob claims.  Arrays V8 writes without holes take at least a byte per
 * element, so only sparse arrays with many holes (`a[1e7] = 1`) go past it.
 */
#define DOBJ_VALUE_SLOTS_BASE (1u << 20)
#define DOBJ_VALUE_SLOTS_PER_BYTE 8u

/**
 * The integer rule, for readers: should a number read from a blob be shown
 * to the host language as an integer?  `was_int32` is 1 for an `I` token
 * (DOBJ_TOK_INT32: always an integer).  A double (`N`) is an integer when
 * it is whole, outside the Smi range and within ±DOBJ_VALUE_INTEGER_MAX —
 * that is how V8 stores such integers (a millisecond timestamp); any other
 * double (a fraction, -0, NaN, ±Infinity, or a whole number in the Smi
 * range such as 1.0, which V8 would have written as `I`) is a float.
 * Writing integers with dobj_ser_integer and floats with dobj_ser_double
 * makes every integer within ±2^53 and every float outside that band read
 * back as it was written.
 */
DOBJ_API int dobj_number_is_integer(double value, int was_int32);

/* ------------------------------------------------------------------ writer */

/** A value writer.  Not thread-safe; reusable with dobj_ser_reset. */
typedef struct dobj_ser dobj_ser;

/**
 * Make a writer; the header `FF 0F` is written at once.  *out belongs to the
 * caller (dobj_ser_free).
 */
DOBJ_API int dobj_ser_new(dobj_ser **out);
/** Free the writer and its buffer (NULL is fine). */
DOBJ_API void dobj_ser_free(dobj_ser *ser);
/** Start a new value, keeping the buffer's memory (header written again). */
DOBJ_API void dobj_ser_reset(dobj_ser *ser);

/**
 * The finished blob (borrowed: valid until the next call on `ser`).
 * DOBJ_ESTATE unless exactly one complete value was written.
 */
DOBJ_API int dobj_ser_finish(dobj_ser *ser, const unsigned char **data, size_t *len);

/*
 * Every write below returns 0 or a negative code: DOBJ_ENOMEM, DOBJ_EARG
 * (bad input: invalid UTF-8, an unknown id, a length over 2^32-1...) or
 * DOBJ_ESTATE (a call out of place: a value after the top-level one is
 * complete, an end that does not match the open container, a key that is
 * neither a string nor a number).  After a failure the writer is poisoned:
 * every later call fails until dobj_ser_reset.
 *
 * Inside an object (and in the property part of an array) items alternate:
 * key, value, key, value...  Keys are written with dobj_ser_key (or as a
 * string or number).
 */

/** `_` */
DOBJ_API int dobj_ser_undefined(dobj_ser *ser);
/** `0` */
DOBJ_API int dobj_ser_null(dobj_ser *ser);
/** `T` / `F` */
DOBJ_API int dobj_ser_bool(dobj_ser *ser, int value);
/** `I` + zig-zag varint, whatever the value (V8 writes this for Smis). */
DOBJ_API int dobj_ser_int32(dobj_ser *ser, int32_t value);
/** `N` + 8 bytes little-endian, bits as given (NaN payloads kept). */
DOBJ_API int dobj_ser_double(dobj_ser *ser, double value);
/**
 * A JS number as V8 writes it: `I` for integers in the Smi range
 * (DOBJ_VALUE_SMI_MIN..MAX, -0 excluded), else `N` (NaN canonical).
 * V8 has one exception: an array whose elements are all numbers with at
 * least one non-Smi is a double array, and every element is `N` — a binding
 * that wants byte-identical output writes those with dobj_ser_double.
 */
DOBJ_API int dobj_ser_number(dobj_ser *ser, double value);
/**
 * `Z`: a BigInt from its sign and magnitude (little-endian bytes, any
 * length; high zero bytes are trimmed, zero is never negative).
 */
DOBJ_API int dobj_ser_bigint(dobj_ser *ser, int negative, const unsigned char *magnitude, size_t len);
/** `Z` from a 64-bit integer. */
DOBJ_API int dobj_ser_bigint_i64(dobj_ser *ser, int64_t value);
/**
 * An integer of the host language, by dobj's integer rule: `I` in the Smi
 * range, `N` (a JS number) within ±DOBJ_VALUE_INTEGER_MAX, `Z` (a BigInt)
 * beyond.  dobj_number_is_integer reads all three back as integers.
 */
DOBJ_API int dobj_ser_integer(dobj_ser *ser, int64_t value);
/**
 * A string from UTF-8: one-byte (`"`, Latin-1) when every code point is at
 * most U+00FF, else two-byte (`c`, UTF-16LE, preceded by a `\0` padding byte
 * when V8 would align it).  WTF-8 is accepted: an encoded lone surrogate
 * (ED A0..BF xx) stands for itself, so JS strings with lone surrogates round
 * trip; two such sequences forming a pair become that pair.  Anything else
 * that is not UTF-8 fails with DOBJ_EARG.
 */
DOBJ_API int dobj_ser_string(dobj_ser *ser, const char *utf8, size_t len);
/** A string from Latin-1 bytes (each byte one code point). */
DOBJ_API int dobj_ser_string_latin1(dobj_ser *ser, const unsigned char *chars, size_t len);
/** A string from UTF-16 code units (host order); one-byte when all fit. */
DOBJ_API int dobj_ser_string_utf16(dobj_ser *ser, const uint16_t *units, size_t n);
/**
 * An object key from UTF-8: a canonical array index ("0", "7", up to
 * "4294967294") is written as a number, as V8 does, anything else as a
 * string.  V8 writes index keys first, in ascending order, then the others
 * in insertion order; dobj_value_key_index helps a binding sort.
 */
DOBJ_API int dobj_ser_key(dobj_ser *ser, const char *utf8, size_t len);

/** `o`: begin an object; *id (may be NULL) gets its object id. */
DOBJ_API int dobj_ser_object_begin(dobj_ser *ser, uint32_t *id);
/** `{` + number of properties (counted by the writer). */
DOBJ_API int dobj_ser_object_end(dobj_ser *ser);
/**
 * `A` + length: begin a dense array.  Exactly `length` elements follow
 * (values, or dobj_ser_hole), then optional properties as key/value pairs.
 */
DOBJ_API int dobj_ser_array_begin(dobj_ser *ser, uint32_t length, uint32_t *id);
/** `$` + number of properties + length. */
DOBJ_API int dobj_ser_array_end(dobj_ser *ser);
/** `-`: a missing element of a dense array. */
DOBJ_API int dobj_ser_hole(dobj_ser *ser);
/**
 * `a` + length: begin a sparse array (V8 uses it for arrays with holes):
 * only key/value pairs follow, the keys being indices or names.
 */
DOBJ_API int dobj_ser_sparse_begin(dobj_ser *ser, uint32_t length, uint32_t *id);
/** `@` + number of properties + length. */
DOBJ_API int dobj_ser_sparse_end(dobj_ser *ser);
/** `;`: begin a Map; keys and values alternate. */
DOBJ_API int dobj_ser_map_begin(dobj_ser *ser, uint32_t *id);
/** `:` + 2 × number of entries. */
DOBJ_API int dobj_ser_map_end(dobj_ser *ser);
/** `'`: begin a Set. */
DOBJ_API int dobj_ser_set_begin(dobj_ser *ser, uint32_t *id);
/** `,` + number of items. */
DOBJ_API int dobj_ser_set_end(dobj_ser *ser);
/** `D` + milliseconds since the epoch (a double); a Date is an object. */
DOBJ_API int dobj_ser_date(dobj_ser *ser, double epoch_ms, uint32_t *id);
/** `B`: an ArrayBuffer (copied). */
DOBJ_API int dobj_ser_buffer(dobj_ser *ser, const void *data, size_t len, uint32_t *id);
/**
 * A Uint8Array of `len` bytes at `offset` in a new ArrayBuffer holding
 * `data[0..buffer_len)`: `B` + the buffer, then `V B offset len 0`.  Both
 * get ids, the buffer first (either pointer may be NULL).
 */
DOBJ_API int dobj_ser_uint8array(dobj_ser *ser, const void *data, size_t buffer_len,
	size_t offset, size_t len, uint32_t *buffer_id, uint32_t *view_id);
/** A Uint8Array over the whole of `data` (the usual case). */
DOBJ_API int dobj_ser_bytes(dobj_ser *ser, const void *data, size_t len, uint32_t *view_id);
/**
 * A Uint8Array over an ArrayBuffer written before (`^buffer_id` then `V`),
 * as V8 writes a second view of the same buffer.  DOBJ_EARG if buffer_id is
 * not a buffer or the range is outside it.
 */
DOBJ_API int dobj_ser_uint8array_of(dobj_ser *ser, uint32_t buffer_id, size_t offset,
	size_t len, uint32_t *view_id);
/** `^` + id: the object with that id again (DOBJ_EARG if none yet). */
DOBJ_API int dobj_ser_ref(dobj_ser *ser, uint32_t id);

/**
 * Is `key` a canonical array index ("0".."4294967294", no sign, no leading
 * zero)?  1 with *index set, else 0.
 */
DOBJ_API int dobj_value_key_index(const char *key, size_t len, uint32_t *index);

/* ------------------------------------------------------------------ reader */

/** Kinds of token. */
typedef enum dobj_tok_type {
	DOBJ_TOK_EOF = 0,      /**< the value is complete (and nothing follows) */
	DOBJ_TOK_UNDEFINED,
	DOBJ_TOK_NULL,
	DOBJ_TOK_TRUE,
	DOBJ_TOK_FALSE,
	DOBJ_TOK_INT32,        /**< `I` (or a `U` that fits): i32 and number */
	DOBJ_TOK_DOUBLE,       /**< `N` (NaN canonical): number */
	DOBJ_TOK_BIGINT,       /**< negative, bytes/len (magnitude, little-endian, trimmed) */
	DOBJ_TOK_STRING,       /**< str/len (UTF-8; WTF-8 for lone surrogates) */
	DOBJ_TOK_OBJECT,       /**< begin; id */
	DOBJ_TOK_OBJECT_END,   /**< count = properties */
	DOBJ_TOK_ARRAY,        /**< begin a dense array; id, length */
	DOBJ_TOK_ARRAY_END,    /**< count = properties after the elements, length */
	DOBJ_TOK_SPARSE,       /**< begin a sparse array; id, length */
	DOBJ_TOK_SPARSE_END,   /**< count = properties, length */
	DOBJ_TOK_HOLE,         /**< a missing element of a dense array */
	DOBJ_TOK_MAP,          /**< begin; id */
	DOBJ_TOK_MAP_END,      /**< count = entries (pairs) */
	DOBJ_TOK_SET,          /**< begin; id */
	DOBJ_TOK_SET_END,      /**< count = items */
	DOBJ_TOK_DATE,         /**< id, number = ms since the epoch */
	DOBJ_TOK_BUFFER,       /**< an ArrayBuffer: id, bytes/len */
	/**
	 * A Uint8Array: id (the view's), bytes/len (the viewed bytes),
	 * offset, buffer_id, buffer/buffer_len (the whole buffer), and
	 * buffer_new: 1 if the buffer was written right here (a binding that
	 * keeps ArrayBuffers registers buffer_id), 0 if it is a reference to an
	 * earlier buffer.
	 */
	DOBJ_TOK_VIEW,
	DOBJ_TOK_REF           /**< `^`: id of an object read before (or still open) */
} dobj_tok_type;

/** Encodings of a string as stored (dobj_tok.raw_kind). */
enum {
	DOBJ_STR_LATIN1 = 1, /**< one byte per code point */
	DOBJ_STR_UTF16LE = 2,/**< two bytes per code unit, little-endian */
	DOBJ_STR_UTF8 = 3    /**< `S` (never written by V8 today) */
};

/**
 * One token.  Pointers are borrowed: they point into the input or into the
 * reader's scratch space and stay valid until the next dobj_de_next.
 */
typedef struct dobj_tok {
	dobj_tok_type type;
	/** 1 when the token is a property key of an object or array; str/len
	 *  then always hold the key as a string (numbers in JS's canonical
	 *  form), and is_index/index tell whether it is an array index. */
	int key;
	int is_index;
	uint32_t index;
	uint32_t id;            /**< receivers: the id assigned; REF: the id referred to */
	int32_t i32;            /**< INT32 */
	double number;          /**< INT32, DOUBLE, DATE */
	const char *str;        /**< STRING and keys: UTF-8 / WTF-8, not NUL-terminated */
	size_t len;             /**< bytes of str, or of bytes */
	/** STRING as stored: raw_kind (DOBJ_STR_*), raw bytes, raw_len bytes. */
	int raw_kind;
	const unsigned char *raw;
	size_t raw_len;
	const unsigned char *bytes; /**< BIGINT magnitude, BUFFER data, VIEW bytes */
	int negative;           /**< BIGINT */
	uint32_t length;        /**< ARRAY, SPARSE (begin and end) */
	uint32_t count;         /**< *_END */
	uint32_t buffer_id;     /**< VIEW */
	int buffer_new;         /**< VIEW */
	size_t offset;          /**< VIEW: offset in the buffer */
	const unsigned char *buffer; /**< VIEW: the whole buffer */
	size_t buffer_len;      /**< VIEW */
	int depth;              /**< containers open around this token */
} dobj_tok;

/** A validating pull reader. */
typedef struct dobj_de dobj_de;

/**
 * Make a reader over data[0..len) (borrowed: it must outlive the reader or
 * the next dobj_de_reset) and check the header.  DOBJ_EINVALID if the data
 * does not start with a supported version (13 to 15); *out is then still
 * set (free it) so that a binding can keep reusing it.
 */
DOBJ_API int dobj_de_new(dobj_de **out, const void *data, size_t len);
/** Start over on new data, keeping memory; checks the header. */
DOBJ_API int dobj_de_reset(dobj_de *de, const void *data, size_t len);
/** Free the reader (NULL is fine). */
DOBJ_API void dobj_de_free(dobj_de *de);
/**
 * Read the next token into *tok.  0 on success (DOBJ_TOK_EOF once the value
 * is complete and no byte is left); DOBJ_EINVALID with a message naming the
 * problem and its byte offset for corrupt data (truncation, overlong
 * varints, lengths past the end, mismatched ends or counts, references to
 * unassigned ids, keys that are not strings or numbers, duplicate keys,
 * array indices not below the array's length, arrays claiming more slots
 * than DOBJ_VALUE_SLOTS_BASE/_PER_BYTE allow, nesting deeper than
 * DOBJ_VALUE_MAX_DEPTH, trailing bytes) and for types
 * outside the subset (RegExp, Error, wrappers, other typed arrays...),
 * DOBJ_ENOMEM.  After a failure every call fails again.
 */
DOBJ_API int dobj_de_next(dobj_de *de, dobj_tok *tok);
/** The format version of the data (13..15). */
DOBJ_API uint32_t dobj_de_version(const dobj_de *de);
/**
 * Read and discard the rest of the value the last token began (nothing if
 * it was not a container begin).  For bindings that refuse a value after
 * its begin token but want to go on validating.
 */
DOBJ_API int dobj_de_skip(dobj_de *de);

#endif
