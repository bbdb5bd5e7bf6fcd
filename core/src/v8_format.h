/*
 * V8's ValueSerializer format (version 15): what the writer (v8_writer.c)
 * and the reader (v8_reader.c) share — the tags, container kinds and small
 * byte and UTF-8 helpers (v8_format.c).  The public side is dobj/value.h;
 * the format itself is described in docs/value-format.md.
 */
#ifndef DOBJ_V8_FORMAT_H
#define DOBJ_V8_FORMAT_H

#include <string.h>

#include "internal.h"

/* Everything declared below is private to the library: hidden even when the
 * build does not pass -fvisibility=hidden (a plain `luarocks make`). */
#if defined(__GNUC__)
#pragma GCC visibility push(hidden)
#endif

/* Tags of the format. */
enum {
	T_VERSION = 0xFF,
	T_PADDING = 0x00,
	T_VERIFY_COUNT = '?',
	T_HOLE = '-',
	T_UNDEFINED = '_',
	T_NULL = '0',
	T_TRUE = 'T',
	T_FALSE = 'F',
	T_INT32 = 'I',
	T_UINT32 = 'U',
	T_DOUBLE = 'N',
	T_BIGINT = 'Z',
	T_UTF8 = 'S',
	T_ONE_BYTE = '"',
	T_TWO_BYTE = 'c',
	T_REF = '^',
	T_OBJECT = 'o',
	T_OBJECT_END = '{',
	T_SPARSE = 'a',
	T_SPARSE_END = '@',
	T_DENSE = 'A',
	T_DENSE_END = '$',
	T_DATE = 'D',
	T_MAP = ';',
	T_MAP_END = ':',
	T_SET = '\'',
	T_SET_END = ',',
	T_BUFFER = 'B',
	T_VIEW = 'V',
	T_HOST = '\\'
};

/* A host object (`\\ varint-length bytes`): dobj writes one only between
 * the nodes of a cluster, for a stub or an ID inside RPC values (what V8
 * leaves to the embedder's delegate; the bytes are dobj's, val_v8.c).  The
 * public reader refuses the tag; dobj__de_allow_host turns it into this
 * private token (bytes/len, id). */
#define DOBJ__TOK_HOST 0x100
void dobj__de_allow_host(dobj_de *d);
/** Write a host object of len bytes (it takes an id, as in V8). */
int dobj__ser_host(dobj_ser *s, const void *bytes, size_t len, uint32_t *id);

#define VIEW_UINT8 'B'
/* V8 caps BigInts at 2^30 bits. */
#define MAX_BIGINT_BYTES ((size_t)1 << 27)

/* Container kinds, shared by both halves. */
enum { K_OBJECT = 1, K_DENSE, K_SPARSE, K_MAP, K_SET };

static inline void put_le64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static inline uint64_t double_bits(double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

static inline double bits_double(uint64_t u)
{
	double d;

	memcpy(&d, &u, sizeof(d));
	return d;
}

#define CANONICAL_NAN 0x7FF8000000000000ull

/** Is d an integer V8 keeps as a Smi (so writes as `I`)? */
int dobj__v8_is_smi(double d);
/** "an object", "an array"... for messages about a K_* container. */
const char *dobj__v8_kind_name(int kind);
/** Write code point cp as UTF-8 (surrogates as their 3-byte WTF-8 form);
 *  returns the bytes written (at most 4). */
size_t dobj__utf8_put(unsigned char *p, uint32_t cp);
/**
 * Decode one code point of UTF-8 at s[0..len).  Returns the number of bytes
 * used, or 0 if the bytes there are not well-formed; *bad then gets the
 * length of the maximal ill-formed subpart (WHATWG's replacement unit).
 * With `wtf8`, encoded surrogates (ED A0..BF xx) are accepted.
 */
size_t dobj__utf8_get(const unsigned char *s, size_t len, int wtf8, uint32_t *cp, size_t *bad);
/** Is s[0..len) well-formed UTF-8 (no encoded surrogate)?  1 or 0. */
int dobj__utf8_valid(const void *s, size_t len);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#endif
