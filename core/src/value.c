/*
 * The value codec: V8's ValueSerializer format, version 15 (see
 * dobj/value.h and docs/value-format.md).
 *
 * Written from the format's description and from blobs workerd stored
 * (tests/c/vectors/vectors.txt); no V8 code is used.  Multi-byte numbers
 * are little-endian on the wire (V8 writes host order; every platform
 * workerd runs on is little-endian), so the codec is portable.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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
	T_VIEW = 'V'
};

#define VIEW_UINT8 'B'
/* V8 caps BigInts at 2^30 bits. */
#define MAX_BIGINT_BYTES ((size_t)1 << 27)

/* Container kinds, shared by both halves. */
enum { K_OBJECT = 1, K_DENSE, K_SPARSE, K_MAP, K_SET };

/* ======================================================== shared helpers */

int dobj_value_key_index(const char *key, size_t len, uint32_t *index)
{
	uint64_t v = 0;
	size_t i;

	if (len == 0 || len > 10 || (len > 1 && key[0] == '0'))
		return 0;
	for (i = 0; i < len; i++) {
		if (key[i] < '0' || key[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(key[i] - '0');
	}
	if (v > 4294967294u) /* 2^32 - 1 is a length, not an index */
		return 0;
	if (index)
		*index = (uint32_t)v;
	return 1;
}

/* Is d an integer V8 keeps as a Smi (so writes as `I`)? */
static int is_smi(double d)
{
	return d >= DOBJ_VALUE_SMI_MIN && d <= DOBJ_VALUE_SMI_MAX && d == floor(d) &&
		!(d == 0 && signbit(d));
}

/*
 * A double as JS's Number.prototype.toString (radix 10) writes it: the
 * shortest digits that read back to the same double, placed as ECMA-262
 * Number::toString says.  Only needed for numeric property keys.
 */
static size_t js_number_string(double d, char out[40])
{
	char digits[32], tmp[40];
	int k = 0, n = 0, prec, i;
	const char *e;

	if (isnan(d))
		return (size_t)snprintf(out, 40, "NaN");
	if (isinf(d))
		return (size_t)snprintf(out, 40, d < 0 ? "-Infinity" : "Infinity");
	if (d == 0)
		return (size_t)snprintf(out, 40, "0");
	if (d == floor(d) && fabs(d) < 1e21)
		return (size_t)snprintf(out, 40, "%.0f", d);
	for (prec = 1; prec <= 17; prec++) {
		snprintf(tmp, sizeof(tmp), "%.*e", prec - 1, fabs(d));
		if (strtod(tmp, NULL) == fabs(d))
			break;
	}
	/* tmp is "D.DDDDe[+-]XX": collect the digits and the exponent. */
	for (i = 0; tmp[i] && tmp[i] != 'e'; i++)
		if (tmp[i] != '.')
			digits[k++] = tmp[i];
	while (k > 1 && digits[k - 1] == '0')
		k--;
	digits[k] = 0;
	e = strchr(tmp, 'e');
	n = (e ? atoi(e + 1) : 0) + 1; /* value = 0.digits × 10^n */
	i = 0;
	if (d < 0)
		out[i++] = '-';
	if (k <= n && n <= 21) {
		memcpy(out + i, digits, (size_t)k);
		i += k;
		while (k++ < n)
			out[i++] = '0';
	} else if (0 < n && n <= 21) {
		memcpy(out + i, digits, (size_t)n);
		i += n;
		out[i++] = '.';
		memcpy(out + i, digits + n, (size_t)(k - n));
		i += k - n;
	} else if (-6 < n && n <= 0) {
		out[i++] = '0';
		out[i++] = '.';
		while (n++ < 0)
			out[i++] = '0';
		memcpy(out + i, digits, (size_t)k);
		i += k;
	} else {
		out[i++] = digits[0];
		if (k > 1) {
			out[i++] = '.';
			memcpy(out + i, digits + 1, (size_t)(k - 1));
			i += k - 1;
		}
		i += snprintf(out + i, 40 - (size_t)i, "e%c%d", n - 1 >= 0 ? '+' : '-',
			n - 1 >= 0 ? n - 1 : 1 - n);
	}
	out[i] = 0;
	return (size_t)i;
}

static void put_le64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t double_bits(double d)
{
	uint64_t u;

	memcpy(&u, &d, sizeof(u));
	return u;
}

static double bits_double(uint64_t u)
{
	double d;

	memcpy(&d, &u, sizeof(d));
	return d;
}

#define CANONICAL_NAN 0x7FF8000000000000ull

/* Write a code point as UTF-8 (surrogates as their 3-byte WTF-8 form). */
static size_t put_utf8(unsigned char *p, uint32_t cp)
{
	if (cp < 0x80) {
		p[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		p[0] = (unsigned char)(0xC0 | (cp >> 6));
		p[1] = (unsigned char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		p[0] = (unsigned char)(0xE0 | (cp >> 12));
		p[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		p[2] = (unsigned char)(0x80 | (cp & 0x3F));
		return 3;
	}
	p[0] = (unsigned char)(0xF0 | (cp >> 18));
	p[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
	p[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
	p[3] = (unsigned char)(0x80 | (cp & 0x3F));
	return 4;
}

/*
 * Decode one code point of UTF-8 at s[0..len).  Returns the number of bytes
 * used, or 0 if the bytes there are not well-formed; *bad then gets the
 * length of the maximal ill-formed subpart (WHATWG's replacement unit).
 * With `wtf8`, encoded surrogates (ED A0..BF xx) are accepted.
 */
static size_t get_utf8(const unsigned char *s, size_t len, int wtf8, uint32_t *cp, size_t *bad)
{
	unsigned char c = s[0];
	size_t n, i;
	unsigned char lo = 0x80, hi = 0xBF;
	uint32_t v;

	*bad = 1;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		v = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		v = c & 0x0F;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED && !wtf8)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		v = c & 0x07;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else {
		return 0;
	}
	for (i = 1; i < n; i++) {
		if (i >= len || s[i] < lo || s[i] > hi) {
			*bad = i;
			return 0;
		}
		lo = 0x80;
		hi = 0xBF;
		v = (v << 6) | (s[i] & 0x3F);
	}
	*cp = v;
	return n;
}

/* ================================================================ writer */

typedef struct ser_frame {
	unsigned char kind;
	uint32_t length; /* dense/sparse arrays */
	uint32_t items;  /* values written at this level */
} ser_frame;

typedef struct ser_buf {
	uint32_t id;
	uint32_t len;
} ser_buf;

struct dobj_ser {
	unsigned char *buf;
	size_t len, cap;
	ser_frame stack[DOBJ_VALUE_MAX_DEPTH];
	int depth;
	int done;   /* the top-level value is complete */
	int failed; /* a negative code once poisoned */
	uint32_t next_id;
	ser_buf *bufs; /* ArrayBuffers written, by increasing id */
	size_t nbufs, capbufs;
};

static int ser_fail(dobj_ser *s, int code, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 3, 4)))
#endif
	;

static int ser_fail(dobj_ser *s, int code, const char *fmt, ...)
{
	char msg[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->failed = code;
	return dobj_error_set(code, "cannot serialize value: %s", msg);
}

static int ser_reserve(dobj_ser *s, size_t n)
{
	size_t cap;
	unsigned char *p;

	if (n <= s->cap - s->len)
		return 0;
	if (n > ((size_t)-1) / 2 - s->len)
		return ser_fail(s, DOBJ_ENOMEM, "out of memory");
	cap = s->cap ? s->cap : 64;
	while (cap - s->len < n)
		cap *= 2;
	p = realloc(s->buf, cap);
	if (!p)
		return ser_fail(s, DOBJ_ENOMEM, "out of memory");
	s->buf = p;
	s->cap = cap;
	return 0;
}

/* Callers reserve first: these never fail. */
static void put_byte(dobj_ser *s, unsigned char b)
{
	s->buf[s->len++] = b;
}

static size_t varint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static void put_varint(dobj_ser *s, uint64_t v)
{
	while (v >= 0x80) {
		s->buf[s->len++] = (unsigned char)(v | 0x80);
		v >>= 7;
	}
	s->buf[s->len++] = (unsigned char)v;
}

static void put_bytes(dobj_ser *s, const void *p, size_t n)
{
	if (n)
		memcpy(s->buf + s->len, p, n);
	s->len += n;
}

static void ser_header(dobj_ser *s)
{
	s->buf[0] = T_VERSION;
	s->buf[1] = DOBJ_VALUE_VERSION;
	s->len = 2;
}

int dobj_ser_new(dobj_ser **out)
{
	dobj_ser *s;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if (ser_reserve(s, 2) < 0) {
		free(s);
		return DOBJ_ENOMEM;
	}
	ser_header(s);
	*out = s;
	return 0;
}

void dobj_ser_free(dobj_ser *s)
{
	if (!s)
		return;
	free(s->buf);
	free(s->bufs);
	free(s);
}

void dobj_ser_reset(dobj_ser *s)
{
	s->depth = 0;
	s->done = 0;
	s->failed = 0;
	s->next_id = 0;
	s->nbufs = 0;
	s->len = 0;
	if (s->cap < 2 && ser_reserve(s, 2) < 0)
		return; /* poisoned with ENOMEM */
	ser_header(s);
}

int dobj_ser_finish(dobj_ser *s, const unsigned char **data, size_t *len)
{
	if (s->failed)
		return dobj_error_set(s->failed, "cannot serialize value: an earlier write failed");
	if (!s->done)
		return dobj_error_set(DOBJ_ESTATE, "cannot serialize value: %s",
			s->depth ? "a container is still open" : "no value was written");
	*data = s->buf;
	*len = s->len;
	return 0;
}

/* What may go in the next slot. */
enum { SLOT_VALUE = 0, SLOT_KEYABLE = 1, SLOT_HOLE = 2 };

/*
 * Check that a value of this sort may be written now.  Keys of objects and
 * of array properties must be strings or numbers; holes only stand for
 * elements of dense arrays.
 */
static int ser_slot(dobj_ser *s, int what)
{
	ser_frame *f;
	int key_slot = 0, element = 0;

	if (s->failed)
		return dobj_error_set(s->failed, "cannot serialize value: an earlier write failed");
	if (s->depth == 0) {
		if (s->done)
			return ser_fail(s, DOBJ_ESTATE, "a complete value was already written");
	} else {
		f = &s->stack[s->depth - 1];
		switch (f->kind) {
		case K_OBJECT:
		case K_SPARSE:
			key_slot = (f->items & 1) == 0;
			break;
		case K_DENSE:
			if (f->items < f->length)
				element = 1;
			else
				key_slot = ((f->items - f->length) & 1) == 0;
			break;
		default:
			break;
		}
	}
	if (key_slot && what != SLOT_KEYABLE)
		return ser_fail(s, DOBJ_ESTATE, "property keys must be strings or numbers");
	if (what == SLOT_HOLE && !element)
		return ser_fail(s, DOBJ_ESTATE, "a hole is only an element of a dense array");
	return 0;
}

/* A value took its slot. */
static void ser_done(dobj_ser *s)
{
	if (s->depth == 0)
		s->done = 1;
	else
		s->stack[s->depth - 1].items++;
}

static int ser_tag_only(dobj_ser *s, unsigned char tag, int what)
{
	int rc;

	if ((rc = ser_slot(s, what)) < 0 || (rc = ser_reserve(s, 1)) < 0)
		return rc;
	put_byte(s, tag);
	ser_done(s);
	return 0;
}

int dobj_ser_undefined(dobj_ser *s) { return ser_tag_only(s, T_UNDEFINED, SLOT_VALUE); }
int dobj_ser_null(dobj_ser *s) { return ser_tag_only(s, T_NULL, SLOT_VALUE); }
int dobj_ser_bool(dobj_ser *s, int v) { return ser_tag_only(s, v ? T_TRUE : T_FALSE, SLOT_VALUE); }
int dobj_ser_hole(dobj_ser *s) { return ser_tag_only(s, T_HOLE, SLOT_HOLE); }

int dobj_ser_int32(dobj_ser *s, int32_t v)
{
	uint32_t zz = ((uint32_t)v << 1) ^ (uint32_t)(v < 0 ? -1 : 0);
	int rc;

	if ((rc = ser_slot(s, SLOT_KEYABLE)) < 0 || (rc = ser_reserve(s, 6)) < 0)
		return rc;
	put_byte(s, T_INT32);
	put_varint(s, zz);
	ser_done(s);
	return 0;
}

static int ser_double_bits(dobj_ser *s, uint64_t bits)
{
	int rc;

	if ((rc = ser_slot(s, SLOT_KEYABLE)) < 0 || (rc = ser_reserve(s, 9)) < 0)
		return rc;
	put_byte(s, T_DOUBLE);
	put_le64(s->buf + s->len, bits);
	s->len += 8;
	ser_done(s);
	return 0;
}

int dobj_ser_double(dobj_ser *s, double v)
{
	return ser_double_bits(s, double_bits(v));
}

int dobj_ser_number(dobj_ser *s, double v)
{
	if (is_smi(v))
		return dobj_ser_int32(s, (int32_t)v);
	return ser_double_bits(s, isnan(v) ? CANONICAL_NAN : double_bits(v));
}

int dobj_ser_bigint(dobj_ser *s, int negative, const unsigned char *mag, size_t len)
{
	size_t padded;
	uint64_t bitfield;
	int rc;

	while (len > 0 && mag[len - 1] == 0)
		len--;
	if (len > MAX_BIGINT_BYTES)
		return ser_fail(s, DOBJ_EARG, "BigInt is larger than 2^30 bits");
	padded = (len + 7) / 8 * 8; /* whole 64-bit digits, as V8 stores them */
	bitfield = ((uint64_t)padded << 1) | (uint64_t)(len && negative);
	if ((rc = ser_slot(s, SLOT_VALUE)) < 0 ||
	    (rc = ser_reserve(s, 1 + varint_size(bitfield) + padded)) < 0)
		return rc;
	put_byte(s, T_BIGINT);
	put_varint(s, bitfield);
	put_bytes(s, mag, len);
	memset(s->buf + s->len, 0, padded - len);
	s->len += padded - len;
	ser_done(s);
	return 0;
}

int dobj_ser_bigint_i64(dobj_ser *s, int64_t v)
{
	unsigned char b[8];
	uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

	put_le64(b, mag);
	return dobj_ser_bigint(s, v < 0, b, 8);
}

/*
 * Start a two-byte string of `units` code units: `\0` first when the
 * characters would otherwise start at an odd offset of the blob (V8 keeps
 * them aligned, so we do too, for identical bytes).
 */
static int ser_two_byte_head(dobj_ser *s, size_t units)
{
	uint64_t bytes = (uint64_t)units * 2;
	int rc;

	if ((rc = ser_reserve(s, 2 + varint_size(bytes) + (size_t)bytes)) < 0)
		return rc;
	if ((s->len + 1 + varint_size(bytes)) & 1)
		put_byte(s, T_PADDING);
	put_byte(s, T_TWO_BYTE);
	put_varint(s, bytes);
	return 0;
}

static void put_unit(dobj_ser *s, uint32_t u)
{
	s->buf[s->len++] = (unsigned char)u;
	s->buf[s->len++] = (unsigned char)(u >> 8);
}

int dobj_ser_string(dobj_ser *s, const char *str, size_t len)
{
	const unsigned char *p = (const unsigned char *)str;
	size_t i, n, units = 0, bad;
	uint32_t cp, max = 0;
	int rc, ascii = 1;

	if ((rc = ser_slot(s, SLOT_KEYABLE)) < 0)
		return rc;
	if (len > UINT32_MAX)
		return ser_fail(s, DOBJ_EARG, "string longer than 2^32-1 bytes");
	/* Pass 1: validate, find the widest code point, count UTF-16 units. */
	for (i = 0; i < len; i += n) {
		if (p[i] < 0x80) {
			n = 1;
			units++;
			continue;
		}
		ascii = 0;
		n = get_utf8(p + i, len - i, 1, &cp, &bad);
		if (!n)
			return ser_fail(s, DOBJ_EARG, "string is not valid UTF-8 (byte %zu)", i);
		if (cp > max)
			max = cp;
		units += cp >= 0x10000 ? 2 : 1;
	}
	if (units * 2 > UINT32_MAX)
		return ser_fail(s, DOBJ_EARG, "string longer than 2^31-1 characters");
	if (ascii || max <= 0xFF) {
		if ((rc = ser_reserve(s, 1 + varint_size(units) + units)) < 0)
			return rc;
		put_byte(s, T_ONE_BYTE);
		put_varint(s, units);
		if (ascii) {
			put_bytes(s, p, len);
		} else {
			for (i = 0; i < len; i += n) {
				n = get_utf8(p + i, len - i, 1, &cp, &bad);
				put_byte(s, (unsigned char)cp);
			}
		}
	} else {
		if ((rc = ser_two_byte_head(s, units)) < 0)
			return rc;
		for (i = 0; i < len; i += n) {
			n = get_utf8(p + i, len - i, 1, &cp, &bad);
			if (cp >= 0x10000) {
				cp -= 0x10000;
				put_unit(s, 0xD800 | (cp >> 10));
				put_unit(s, 0xDC00 | (cp & 0x3FF));
			} else {
				put_unit(s, cp);
			}
		}
	}
	ser_done(s);
	return 0;
}

int dobj_ser_string_latin1(dobj_ser *s, const unsigned char *chars, size_t len)
{
	int rc;

	if ((rc = ser_slot(s, SLOT_KEYABLE)) < 0)
		return rc;
	if (len > UINT32_MAX)
		return ser_fail(s, DOBJ_EARG, "string longer than 2^32-1 characters");
	if ((rc = ser_reserve(s, 1 + varint_size(len) + len)) < 0)
		return rc;
	put_byte(s, T_ONE_BYTE);
	put_varint(s, len);
	put_bytes(s, chars, len);
	ser_done(s);
	return 0;
}

int dobj_ser_string_utf16(dobj_ser *s, const uint16_t *units, size_t n)
{
	size_t i;
	int rc, wide = 0;

	if ((rc = ser_slot(s, SLOT_KEYABLE)) < 0)
		return rc;
	if (n > UINT32_MAX / 2)
		return ser_fail(s, DOBJ_EARG, "string longer than 2^31-1 characters");
	for (i = 0; i < n && !wide; i++)
		wide = units[i] > 0xFF;
	if (!wide) {
		if ((rc = ser_reserve(s, 1 + varint_size(n) + n)) < 0)
			return rc;
		put_byte(s, T_ONE_BYTE);
		put_varint(s, n);
		for (i = 0; i < n; i++)
			put_byte(s, (unsigned char)units[i]);
	} else {
		if ((rc = ser_two_byte_head(s, n)) < 0)
			return rc;
		for (i = 0; i < n; i++)
			put_unit(s, units[i]);
	}
	ser_done(s);
	return 0;
}

int dobj_ser_key(dobj_ser *s, const char *key, size_t len)
{
	uint32_t index;

	if (dobj_value_key_index(key, len, &index)) {
		if (index <= DOBJ_VALUE_SMI_MAX)
			return dobj_ser_int32(s, (int32_t)index);
		return dobj_ser_double(s, (double)index);
	}
	return dobj_ser_string(s, key, len);
}

/* Begin a container: tag [varint length], a new id, a new frame. */
static int ser_begin(dobj_ser *s, unsigned char tag, unsigned char kind, int has_length,
	uint32_t length, uint32_t *id)
{
	ser_frame *f;
	int rc;

	if ((rc = ser_slot(s, SLOT_VALUE)) < 0)
		return rc;
	if (s->depth >= DOBJ_VALUE_MAX_DEPTH)
		return ser_fail(s, DOBJ_EARG, "value nested deeper than %d levels",
			DOBJ_VALUE_MAX_DEPTH);
	if ((rc = ser_reserve(s, 6)) < 0)
		return rc;
	put_byte(s, tag);
	if (has_length)
		put_varint(s, length);
	f = &s->stack[s->depth++];
	f->kind = kind;
	f->length = length;
	f->items = 0;
	if (id)
		*id = s->next_id;
	s->next_id++;
	return 0;
}

static const char *kind_name(int kind)
{
	switch (kind) {
	case K_OBJECT: return "an object";
	case K_DENSE: return "an array";
	case K_SPARSE: return "a sparse array";
	case K_MAP: return "a Map";
	case K_SET: return "a Set";
	default: return "nothing";
	}
}

/* End the open container, which must be `kind`: tag, then counts. */
static int ser_end(dobj_ser *s, unsigned char tag, int kind)
{
	ser_frame *f;
	uint32_t props = 0;
	int rc;

	if (s->failed)
		return dobj_error_set(s->failed, "cannot serialize value: an earlier write failed");
	f = s->depth ? &s->stack[s->depth - 1] : NULL;
	if (!f || f->kind != kind)
		return ser_fail(s, DOBJ_ESTATE, "ending %s while %s is open", kind_name(kind),
			kind_name(f ? f->kind : 0));
	switch (kind) {
	case K_DENSE:
		if (f->items < f->length)
			return ser_fail(s, DOBJ_ESTATE, "array of length %u ended after %u elements",
				f->length, f->items);
		props = f->items - f->length;
		break;
	case K_SET:
		props = f->items;
		break;
	default:
		props = f->items;
		break;
	}
	if (kind != K_SET && (props & 1))
		return ser_fail(s, DOBJ_ESTATE, "%s ended with a key but no value", kind_name(kind));
	if (kind == K_OBJECT || kind == K_DENSE || kind == K_SPARSE)
		props /= 2;
	if ((rc = ser_reserve(s, 11)) < 0)
		return rc;
	put_byte(s, tag);
	put_varint(s, props);
	if (kind == K_DENSE || kind == K_SPARSE)
		put_varint(s, f->length);
	s->depth--;
	ser_done(s);
	return 0;
}

int dobj_ser_object_begin(dobj_ser *s, uint32_t *id) { return ser_begin(s, T_OBJECT, K_OBJECT, 0, 0, id); }
int dobj_ser_object_end(dobj_ser *s) { return ser_end(s, T_OBJECT_END, K_OBJECT); }
int dobj_ser_array_begin(dobj_ser *s, uint32_t length, uint32_t *id) { return ser_begin(s, T_DENSE, K_DENSE, 1, length, id); }
int dobj_ser_array_end(dobj_ser *s) { return ser_end(s, T_DENSE_END, K_DENSE); }
int dobj_ser_sparse_begin(dobj_ser *s, uint32_t length, uint32_t *id) { return ser_begin(s, T_SPARSE, K_SPARSE, 1, length, id); }
int dobj_ser_sparse_end(dobj_ser *s) { return ser_end(s, T_SPARSE_END, K_SPARSE); }
int dobj_ser_map_begin(dobj_ser *s, uint32_t *id) { return ser_begin(s, T_MAP, K_MAP, 0, 0, id); }
int dobj_ser_map_end(dobj_ser *s) { return ser_end(s, T_MAP_END, K_MAP); }
int dobj_ser_set_begin(dobj_ser *s, uint32_t *id) { return ser_begin(s, T_SET, K_SET, 0, 0, id); }
int dobj_ser_set_end(dobj_ser *s) { return ser_end(s, T_SET_END, K_SET); }

int dobj_ser_date(dobj_ser *s, double ms, uint32_t *id)
{
	int rc;

	if ((rc = ser_slot(s, SLOT_VALUE)) < 0 || (rc = ser_reserve(s, 9)) < 0)
		return rc;
	put_byte(s, T_DATE);
	put_le64(s->buf + s->len, double_bits(ms));
	s->len += 8;
	if (id)
		*id = s->next_id;
	s->next_id++;
	ser_done(s);
	return 0;
}

/* Write `B len data` with a new id; the caller did ser_slot. */
static int ser_buffer_raw(dobj_ser *s, const void *data, size_t len, uint32_t *id)
{
	ser_buf *b;
	int rc;

	if (len > UINT32_MAX)
		return ser_fail(s, DOBJ_EARG, "ArrayBuffer larger than 2^32-1 bytes");
	if ((rc = ser_reserve(s, 1 + varint_size(len) + len)) < 0)
		return rc;
	if (s->nbufs == s->capbufs) {
		size_t cap = s->capbufs ? s->capbufs * 2 : 8;
		b = realloc(s->bufs, cap * sizeof(*b));
		if (!b)
			return ser_fail(s, DOBJ_ENOMEM, "out of memory");
		s->bufs = b;
		s->capbufs = cap;
	}
	b = &s->bufs[s->nbufs++];
	b->id = s->next_id;
	b->len = (uint32_t)len;
	put_byte(s, T_BUFFER);
	put_varint(s, len);
	put_bytes(s, data, len);
	if (id)
		*id = s->next_id;
	s->next_id++;
	return 0;
}

static int ser_view_raw(dobj_ser *s, uint32_t buffer_len, size_t offset, size_t len,
	uint32_t *id)
{
	int rc;

	if (offset > buffer_len || len > buffer_len - offset)
		return ser_fail(s, DOBJ_EARG, "view of %zu bytes at %zu is outside its buffer of %u bytes",
			len, offset, buffer_len);
	if ((rc = ser_reserve(s, 13)) < 0)
		return rc;
	put_byte(s, T_VIEW);
	put_byte(s, VIEW_UINT8);
	put_varint(s, offset);
	put_varint(s, len);
	put_byte(s, 0); /* flags: not length-tracking, not resizable */
	if (id)
		*id = s->next_id;
	s->next_id++;
	return 0;
}

int dobj_ser_buffer(dobj_ser *s, const void *data, size_t len, uint32_t *id)
{
	int rc;

	if ((rc = ser_slot(s, SLOT_VALUE)) < 0 || (rc = ser_buffer_raw(s, data, len, id)) < 0)
		return rc;
	ser_done(s);
	return 0;
}

int dobj_ser_uint8array(dobj_ser *s, const void *data, size_t buffer_len, size_t offset,
	size_t len, uint32_t *buffer_id, uint32_t *view_id)
{
	int rc;

	if ((rc = ser_slot(s, SLOT_VALUE)) < 0)
		return rc;
	if (buffer_len <= UINT32_MAX && (offset > buffer_len || len > buffer_len - offset))
		return ser_fail(s, DOBJ_EARG, "view of %zu bytes at %zu is outside its buffer of %zu bytes",
			len, offset, buffer_len);
	if ((rc = ser_buffer_raw(s, data, buffer_len, buffer_id)) < 0 ||
	    (rc = ser_view_raw(s, (uint32_t)buffer_len, offset, len, view_id)) < 0)
		return rc;
	ser_done(s);
	return 0;
}

int dobj_ser_bytes(dobj_ser *s, const void *data, size_t len, uint32_t *view_id)
{
	return dobj_ser_uint8array(s, data, len, 0, len, NULL, view_id);
}

int dobj_ser_uint8array_of(dobj_ser *s, uint32_t buffer_id, size_t offset, size_t len,
	uint32_t *view_id)
{
	size_t lo = 0, hi;
	int rc;

	if ((rc = ser_slot(s, SLOT_VALUE)) < 0)
		return rc;
	hi = s->nbufs;
	while (lo < hi) { /* ids increase, so bufs is sorted */
		size_t mid = (lo + hi) / 2;
		if (s->bufs[mid].id < buffer_id)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == s->nbufs || s->bufs[lo].id != buffer_id)
		return ser_fail(s, DOBJ_EARG, "object %u is not an ArrayBuffer written before", buffer_id);
	if ((rc = ser_reserve(s, 6)) < 0)
		return rc;
	put_byte(s, T_REF);
	put_varint(s, buffer_id);
	if ((rc = ser_view_raw(s, s->bufs[lo].len, offset, len, view_id)) < 0)
		return rc;
	ser_done(s);
	return 0;
}

int dobj_ser_ref(dobj_ser *s, uint32_t id)
{
	int rc;

	if ((rc = ser_slot(s, SLOT_VALUE)) < 0)
		return rc;
	if (id >= s->next_id)
		return ser_fail(s, DOBJ_EARG, "reference to object %u, which was not written yet", id);
	if ((rc = ser_reserve(s, 6)) < 0)
		return rc;
	put_byte(s, T_REF);
	put_varint(s, id);
	ser_done(s);
	return 0;
}

/* ================================================================ reader */

typedef struct de_frame {
	unsigned char kind;
	uint32_t id;
	uint32_t length;
	uint32_t items;
} de_frame;

/* What an id stands for: ArrayBuffers keep where their bytes are. */
typedef struct de_obj {
	size_t buf_off; /* offset of the bytes in the input; SIZE_MAX: not a buffer */
	uint32_t buf_len;
} de_obj;

/* A property key seen in an open or closed container (duplicate check). */
typedef struct de_key {
	uint32_t owner; /* id of the object or array; UINT32_MAX: empty slot */
	uint32_t hash;
	size_t off, len; /* in keys */
} de_key;

struct dobj_de {
	const unsigned char *start, *p, *end;
	uint32_t version;
	de_frame stack[DOBJ_VALUE_MAX_DEPTH];
	int depth;
	int done;
	int failed;
	int last_begin; /* the last token began a container */
	char msg[300];  /* the failure, repeated by later calls */
	de_obj *objs;
	uint32_t nobjs, capobjs;
	unsigned char *scratch;
	size_t scratch_cap;
	de_key *table;  /* open addressing, power-of-two size */
	size_t table_cap, table_len;
	char *keys;
	size_t keys_len, keys_cap;
};

static int de_fail(dobj_de *d, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;

static int de_fail(dobj_de *d, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
	va_end(ap);
	d->failed = DOBJ_EINVALID;
	return dobj_error_set(DOBJ_EINVALID, "%s", d->msg);
}

static int de_nomem(dobj_de *d)
{
	snprintf(d->msg, sizeof(d->msg), "out of memory");
	d->failed = DOBJ_ENOMEM;
	return dobj_error_set(DOBJ_ENOMEM, "out of memory");
}

static size_t de_pos(const dobj_de *d)
{
	return (size_t)(d->p - d->start);
}

static int de_truncated(dobj_de *d)
{
	return de_fail(d, "corrupt value: data ends too early (%zu bytes)", de_pos(d));
}

static int de_varint(dobj_de *d, uint32_t *out)
{
	uint64_t v = 0;
	int shift = 0;
	unsigned char b;

	do {
		if (shift > 28)
			return de_fail(d, "corrupt value: varint longer than 32 bits at byte %zu", de_pos(d));
		if (d->p >= d->end)
			return de_truncated(d);
		b = *d->p++;
		v |= (uint64_t)(b & 0x7F) << shift;
		shift += 7;
	} while (b & 0x80);
	if (v > UINT32_MAX)
		return de_fail(d, "corrupt value: varint larger than 2^32-1 before byte %zu", de_pos(d));
	*out = (uint32_t)v;
	return 0;
}

static int de_need(dobj_de *d, size_t n)
{
	if ((size_t)(d->end - d->p) < n)
		return de_fail(d, "corrupt value: %zu bytes needed at byte %zu, %zu left", n,
			de_pos(d), (size_t)(d->end - d->p));
	return 0;
}

static int de_double(dobj_de *d, double *out)
{
	uint64_t bits;
	int rc;

	if ((rc = de_need(d, 8)) < 0)
		return rc;
	bits = get_le64(d->p);
	d->p += 8;
	*out = bits_double(bits);
	if (isnan(*out))
		*out = bits_double(CANONICAL_NAN);
	return 0;
}

static unsigned char *de_scratch(dobj_de *d, size_t n)
{
	unsigned char *p;
	size_t cap;

	if (n <= d->scratch_cap)
		return d->scratch;
	cap = d->scratch_cap ? d->scratch_cap : 256;
	while (cap < n)
		cap *= 2;
	p = realloc(d->scratch, cap);
	if (!p)
		return NULL;
	d->scratch = p;
	d->scratch_cap = cap;
	return p;
}

/* Skip padding (and the obsolete object-count hint) before a tag. */
static int de_peek(dobj_de *d, unsigned char *tag)
{
	uint32_t ignored;
	int rc;

	for (;;) {
		if (d->p >= d->end)
			return de_truncated(d);
		if (*d->p == T_PADDING) {
			d->p++;
		} else if (*d->p == T_VERIFY_COUNT) {
			d->p++;
			if ((rc = de_varint(d, &ignored)) < 0)
				return rc;
		} else {
			*tag = *d->p;
			return 0;
		}
	}
}

static int de_new_id(dobj_de *d, size_t buf_off, uint32_t buf_len, uint32_t *id)
{
	if (d->nobjs == d->capobjs) {
		uint32_t cap = d->capobjs ? d->capobjs * 2 : 16;
		de_obj *o = realloc(d->objs, cap * sizeof(*o));
		if (!o)
			return de_nomem(d);
		d->objs = o;
		d->capobjs = cap;
	}
	d->objs[d->nobjs].buf_off = buf_off;
	d->objs[d->nobjs].buf_len = buf_len;
	*id = d->nobjs++;
	return 0;
}

int dobj_de_reset(dobj_de *d, const void *data, size_t len)
{
	uint32_t version;

	d->start = d->p = data;
	d->end = d->start + len;
	d->depth = 0;
	d->done = 0;
	d->failed = 0;
	d->last_begin = 0;
	d->nobjs = 0;
	d->keys_len = 0;
	if (d->table_len) {
		size_t i;
		for (i = 0; i < d->table_cap; i++)
			d->table[i].owner = UINT32_MAX;
		d->table_len = 0;
	}
	d->version = 0;
	if (len == 0)
		return de_fail(d, "corrupt value: empty data");
	if (*d->p != T_VERSION)
		return de_fail(d, "corrupt value: no V8 serialization header (first byte 0x%02x)", *d->p);
	d->p++;
	if (de_varint(d, &version) < 0)
		return d->failed;
	if (version < 13 || version > DOBJ_VALUE_VERSION)
		return de_fail(d, "unsupported value format version %u (versions 13 to 15 are read)",
			version);
	d->version = version;
	return 0;
}

int dobj_de_new(dobj_de **out, const void *data, size_t len)
{
	dobj_de *d = calloc(1, sizeof(*d));

	*out = d;
	if (!d)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	return dobj_de_reset(d, data, len);
}

void dobj_de_free(dobj_de *d)
{
	if (!d)
		return;
	free(d->objs);
	free(d->scratch);
	free(d->table);
	free(d->keys);
	free(d);
}

uint32_t dobj_de_version(const dobj_de *d)
{
	return d->version;
}

static uint32_t key_hash(uint32_t owner, const char *s, size_t len)
{
	uint32_t h = 2166136261u ^ owner;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 16777619u;
	return h;
}

/* Record key s of container `owner`; fail if it was already there. */
static int de_key_add(dobj_de *d, uint32_t owner, const char *s, size_t len)
{
	uint32_t h = key_hash(owner, s, len);
	size_t i, mask;
	de_key *k;

	if ((d->table_len + 1) * 2 > d->table_cap) {
		size_t cap = d->table_cap ? d->table_cap * 2 : 64, j;
		de_key *t = malloc(cap * sizeof(*t));
		if (!t)
			return de_nomem(d);
		for (j = 0; j < cap; j++)
			t[j].owner = UINT32_MAX;
		for (j = 0; j < d->table_cap; j++) {
			de_key *o = &d->table[j];
			if (o->owner == UINT32_MAX)
				continue;
			for (i = o->hash & (cap - 1); t[i].owner != UINT32_MAX; i = (i + 1) & (cap - 1))
				;
			t[i] = *o;
		}
		free(d->table);
		d->table = t;
		d->table_cap = cap;
	}
	mask = d->table_cap - 1;
	for (i = h & mask; d->table[i].owner != UINT32_MAX; i = (i + 1) & mask) {
		k = &d->table[i];
		if (k->owner == owner && k->hash == h && k->len == len &&
		    memcmp(d->keys + k->off, s, len) == 0)
			return de_fail(d, "corrupt value: duplicate key \"%.*s\" (byte %zu)",
				(int)(len > 60 ? 60 : len), s, de_pos(d));
	}
	if (len > d->keys_cap - d->keys_len) {
		size_t cap = d->keys_cap ? d->keys_cap : 256;
		char *p;
		while (cap - d->keys_len < len)
			cap *= 2;
		p = realloc(d->keys, cap);
		if (!p)
			return de_nomem(d);
		d->keys = p;
		d->keys_cap = cap;
	}
	if (len)
		memcpy(d->keys + d->keys_len, s, len);
	k = &d->table[i];
	k->owner = owner;
	k->hash = h;
	k->off = d->keys_len;
	k->len = len;
	d->keys_len += len;
	d->table_len++;
	return 0;
}

/* Strings: fill tok->str/len (UTF-8) and the raw form. */
static int de_string(dobj_de *d, unsigned char tag, dobj_tok *tok)
{
	uint32_t n;
	const unsigned char *raw;
	unsigned char *out;
	size_t i, o = 0, bad, used;
	uint32_t cp;
	int rc;

	if ((rc = de_varint(d, &n)) < 0 || (rc = de_need(d, n)) < 0)
		return rc;
	raw = d->p;
	d->p += n;
	tok->type = DOBJ_TOK_STRING;
	tok->raw = raw;
	tok->raw_len = n;
	if (tag == T_ONE_BYTE) {
		tok->raw_kind = DOBJ_STR_LATIN1;
		for (i = 0; i < n && raw[i] < 0x80; i++)
			;
		if (i == n) { /* ASCII: the input is already UTF-8 */
			tok->str = (const char *)raw;
			tok->len = n;
			return 0;
		}
		if (!(out = de_scratch(d, (size_t)n * 2 + 1)))
			return de_nomem(d);
		for (i = 0; i < n; i++)
			o += put_utf8(out + o, raw[i]);
	} else if (tag == T_TWO_BYTE) {
		tok->raw_kind = DOBJ_STR_UTF16LE;
		if (n & 1)
			return de_fail(d, "corrupt value: two-byte string of odd length %u (byte %zu)", n,
				de_pos(d));
		if (!(out = de_scratch(d, (size_t)n / 2 * 3 + 1)))
			return de_nomem(d);
		for (i = 0; i < n; i += 2) {
			cp = raw[i] | (uint32_t)raw[i + 1] << 8;
			if (cp >= 0xD800 && cp <= 0xDBFF && i + 3 < n) {
				uint32_t lo = raw[i + 2] | (uint32_t)raw[i + 3] << 8;
				if (lo >= 0xDC00 && lo <= 0xDFFF) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					i += 2;
				}
			}
			o += put_utf8(out + o, cp); /* lone surrogates: WTF-8 */
		}
	} else { /* UTF-8: ill-formed parts become U+FFFD, as V8 decodes them */
		tok->raw_kind = DOBJ_STR_UTF8;
		for (i = 0; i < n; i += used)
			if (!(used = get_utf8(raw + i, n - i, 0, &cp, &bad)))
				break;
		if (i == n) {
			tok->str = (const char *)raw;
			tok->len = n;
			return 0;
		}
		if (!(out = de_scratch(d, (size_t)n * 3 + 1)))
			return de_nomem(d);
		for (i = 0; i < n; i += used) {
			used = get_utf8(raw + i, n - i, 0, &cp, &bad);
			if (!used) {
				used = bad;
				cp = 0xFFFD;
			}
			o += put_utf8(out + o, cp);
		}
	}
	out[o] = 0;
	tok->str = (const char *)out;
	tok->len = o;
	return 0;
}

static const char *tag_type_name(unsigned char tag)
{
	switch (tag) {
	case 'R': return "RegExp";
	case 'r': return "Error";
	case 'y': case 'x': return "Boolean object";
	case 'n': return "Number object";
	case 'z': return "BigInt object";
	case 's': return "String object";
	case '~': return "resizable ArrayBuffer";
	case 't': return "transferred ArrayBuffer";
	case 'u': return "SharedArrayBuffer";
	case 'p': return "shared object";
	case 'w': return "WebAssembly.Module";
	case 'm': return "WebAssembly.Memory";
	case '\\': return "host object";
	default: return NULL;
	}
}

static const char *view_type_name(uint32_t sub)
{
	switch (sub) {
	case 'b': return "Int8Array";
	case 'C': return "Uint8ClampedArray";
	case 'w': return "Int16Array";
	case 'W': return "Uint16Array";
	case 'd': return "Int32Array";
	case 'D': return "Uint32Array";
	case 'h': return "Float16Array";
	case 'f': return "Float32Array";
	case 'F': return "Float64Array";
	case 'q': return "BigInt64Array";
	case 'Q': return "BigUint64Array";
	case '?': return "DataView";
	default: return NULL;
	}
}

/* `V` after a buffer (new or referenced): the view's fields, then its id. */
static int de_view(dobj_de *d, uint32_t buffer_id, int buffer_new, dobj_tok *tok)
{
	const de_obj *b = &d->objs[buffer_id];
	uint32_t sub, offset, length, flags = 0;
	size_t at;
	const char *name;
	int rc;

	d->p++; /* the V */
	at = de_pos(d);
	if ((rc = de_varint(d, &sub)) < 0 || (rc = de_varint(d, &offset)) < 0 ||
	    (rc = de_varint(d, &length)) < 0)
		return rc;
	if (d->version >= 14 && (rc = de_varint(d, &flags)) < 0)
		return rc;
	if (sub != VIEW_UINT8) {
		if ((name = view_type_name(sub)) != NULL)
			return de_fail(d, "unsupported value type: %s (byte %zu)", name, at);
		return de_fail(d, "corrupt value: unknown view type 0x%02x (byte %zu)", sub, at);
	}
	if (offset > b->buf_len || length > b->buf_len - offset)
		return de_fail(d, "corrupt value: view of %u bytes at %u outside a buffer of %u bytes (byte %zu)",
			length, offset, b->buf_len, at);
	if (flags & 3) /* length-tracking or resizable: our buffers never are */
		return de_fail(d, "unsupported value type: view of a resizable ArrayBuffer (byte %zu)", at);
	tok->type = DOBJ_TOK_VIEW;
	tok->buffer_id = buffer_id;
	tok->buffer_new = buffer_new;
	tok->buffer = d->start + b->buf_off;
	tok->buffer_len = b->buf_len;
	tok->offset = offset;
	tok->bytes = tok->buffer + offset;
	tok->len = length;
	return de_new_id(d, SIZE_MAX, 0, &tok->id);
}

/* After a buffer: is it wrapped by a view? */
static int de_maybe_view(dobj_de *d, uint32_t buffer_id, int buffer_new, dobj_tok *tok)
{
	const unsigned char *save = d->p;

	/* Padding may precede the V; a truncated tail is an error later. */
	while (d->p < d->end && *d->p == T_PADDING)
		d->p++;
	if (d->p < d->end && *d->p == T_VIEW)
		return de_view(d, buffer_id, buffer_new, tok);
	d->p = save;
	return 0;
}

static int de_push(dobj_de *d, unsigned char kind, uint32_t id, uint32_t length)
{
	de_frame *f;

	if (d->depth >= DOBJ_VALUE_MAX_DEPTH)
		return de_fail(d, "corrupt value: nested deeper than %d levels (byte %zu)",
			DOBJ_VALUE_MAX_DEPTH, de_pos(d));
	f = &d->stack[d->depth++];
	f->kind = kind;
	f->id = id;
	f->length = length;
	f->items = 0;
	d->last_begin = 1;
	return 0;
}

/* A value completed at the current level. */
static int de_done(dobj_de *d)
{
	if (d->depth > 0) {
		d->stack[d->depth - 1].items++;
		return 0;
	}
	d->done = 1;
	if (d->p != d->end)
		return de_fail(d, "corrupt value: %zu bytes after the end of the value (byte %zu)",
			(size_t)(d->end - d->p), de_pos(d));
	return 0;
}

/* Read the value whose tag is at d->p.  Slot rules were checked by the caller. */
static int de_value(dobj_de *d, unsigned char tag, dobj_tok *tok)
{
	uint32_t u, id = 0; /* gcc -O2 cannot see de_new_id set it on success */
	size_t at = de_pos(d), off;
	const char *name;
	int rc;

	d->p++;
	switch (tag) {
	case T_UNDEFINED: tok->type = DOBJ_TOK_UNDEFINED; break;
	case T_NULL: tok->type = DOBJ_TOK_NULL; break;
	case T_TRUE: tok->type = DOBJ_TOK_TRUE; break;
	case T_FALSE: tok->type = DOBJ_TOK_FALSE; break;
	case T_INT32:
		if ((rc = de_varint(d, &u)) < 0)
			return rc;
		tok->type = DOBJ_TOK_INT32;
		tok->i32 = (int32_t)((u >> 1) ^ (uint32_t)-(int32_t)(u & 1));
		tok->number = tok->i32;
		break;
	case T_UINT32:
		if ((rc = de_varint(d, &u)) < 0)
			return rc;
		tok->number = u;
		if (u <= INT32_MAX) {
			tok->type = DOBJ_TOK_INT32;
			tok->i32 = (int32_t)u;
		} else {
			tok->type = DOBJ_TOK_DOUBLE;
		}
		break;
	case T_DOUBLE:
		if ((rc = de_double(d, &tok->number)) < 0)
			return rc;
		tok->type = DOBJ_TOK_DOUBLE;
		break;
	case T_BIGINT: {
		size_t n;
		if ((rc = de_varint(d, &u)) < 0)
			return rc;
		n = (u >> 1) & 0x3FFFFFFF;
		if (n > MAX_BIGINT_BYTES)
			return de_fail(d, "corrupt value: BigInt of %zu bytes (byte %zu)", n, at);
		if ((rc = de_need(d, n)) < 0)
			return rc;
		tok->type = DOBJ_TOK_BIGINT;
		tok->bytes = d->p;
		d->p += n;
		while (n > 0 && tok->bytes[n - 1] == 0)
			n--;
		tok->len = n;
		tok->negative = n ? (int)(u & 1) : 0;
		break;
	}
	case T_ONE_BYTE:
	case T_TWO_BYTE:
	case T_UTF8:
		if ((rc = de_string(d, tag, tok)) < 0)
			return rc;
		break;
	case T_REF:
		if ((rc = de_varint(d, &id)) < 0)
			return rc;
		if (id >= d->nobjs)
			return de_fail(d, "corrupt value: reference to object %u, which is not defined yet (byte %zu)",
				id, at);
		tok->type = DOBJ_TOK_REF;
		tok->id = id;
		if (d->objs[id].buf_off != SIZE_MAX && (rc = de_maybe_view(d, id, 0, tok)) < 0)
			return rc;
		break;
	case T_OBJECT:
		tok->type = DOBJ_TOK_OBJECT;
		if ((rc = de_new_id(d, SIZE_MAX, 0, &tok->id)) < 0 ||
		    (rc = de_push(d, K_OBJECT, tok->id, 0)) < 0)
			return rc;
		return 0; /* completes at its end */
	case T_DENSE:
	case T_SPARSE:
		if ((rc = de_varint(d, &u)) < 0)
			return rc;
		/* Each element takes at least a byte: a bigger length is a lie
		 * (and a binding may allocate `length` slots up front). */
		if (tag == T_DENSE && u > (size_t)(d->end - d->p))
			return de_fail(d, "corrupt value: array of length %u in %zu bytes (byte %zu)", u,
				(size_t)(d->end - d->p), at);
		tok->type = tag == T_DENSE ? DOBJ_TOK_ARRAY : DOBJ_TOK_SPARSE;
		tok->length = u;
		if ((rc = de_new_id(d, SIZE_MAX, 0, &tok->id)) < 0 ||
		    (rc = de_push(d, tag == T_DENSE ? K_DENSE : K_SPARSE, tok->id, u)) < 0)
			return rc;
		return 0;
	case T_MAP:
	case T_SET:
		tok->type = tag == T_MAP ? DOBJ_TOK_MAP : DOBJ_TOK_SET;
		if ((rc = de_new_id(d, SIZE_MAX, 0, &tok->id)) < 0 ||
		    (rc = de_push(d, tag == T_MAP ? K_MAP : K_SET, tok->id, 0)) < 0)
			return rc;
		return 0;
	case T_DATE:
		if ((rc = de_double(d, &tok->number)) < 0)
			return rc;
		tok->type = DOBJ_TOK_DATE;
		if ((rc = de_new_id(d, SIZE_MAX, 0, &tok->id)) < 0)
			return rc;
		break;
	case T_BUFFER:
		if ((rc = de_varint(d, &u)) < 0 || (rc = de_need(d, u)) < 0)
			return rc;
		off = de_pos(d);
		if ((rc = de_new_id(d, off, u, &id)) < 0)
			return rc;
		d->p += u;
		tok->type = DOBJ_TOK_BUFFER;
		tok->id = id;
		tok->bytes = d->start + off;
		tok->len = u;
		if ((rc = de_maybe_view(d, id, 1, tok)) < 0)
			return rc;
		break;
	case T_VIEW:
		return de_fail(d, "corrupt value: view without an ArrayBuffer before it (byte %zu)", at);
	case T_HOLE:
		return de_fail(d, "corrupt value: hole outside a dense array (byte %zu)", at);
	case T_OBJECT_END: case T_DENSE_END: case T_SPARSE_END: case T_MAP_END: case T_SET_END:
		return de_fail(d, "corrupt value: unexpected end tag '%c' (byte %zu)", tag, at);
	case T_VERSION:
		return de_fail(d, "corrupt value: version tag inside the value (byte %zu)", at);
	default:
		if ((name = tag_type_name(tag)) != NULL)
			return de_fail(d, "unsupported value type: %s (tag '%c' at byte %zu)", name, tag, at);
		return de_fail(d, "corrupt value: unknown tag 0x%02x (byte %zu)", tag, at);
	}
	return de_done(d);
}

/* Read a property key: a string or a number, then its canonical string. */
static int de_read_key(dobj_de *d, unsigned char tag, dobj_tok *tok, de_frame *f)
{
	char *num;
	uint32_t index;
	int rc;

	if (tag != T_ONE_BYTE && tag != T_TWO_BYTE && tag != T_UTF8 && tag != T_INT32 &&
	    tag != T_UINT32 && tag != T_DOUBLE)
		return de_fail(d, "corrupt value: property key is not a string or a number (tag 0x%02x at byte %zu)",
			tag, de_pos(d));
	if ((rc = de_value(d, tag, tok)) < 0)
		return rc;
	if (tok->type != DOBJ_TOK_STRING) {
		if (!(num = (char *)de_scratch(d, 40)))
			return de_nomem(d);
		tok->len = js_number_string(tok->number, num);
		tok->str = num;
	}
	tok->key = 1;
	tok->is_index = dobj_value_key_index(tok->str, tok->len, &index);
	tok->index = tok->is_index ? index : 0;
	/* Keys an array already has: its elements (dense) and its length. */
	if (f->kind != K_OBJECT) {
		if (tok->len == 6 && memcmp(tok->str, "length", 6) == 0)
			return de_fail(d, "corrupt value: array property \"length\" (byte %zu)", de_pos(d));
		if (f->kind == K_DENSE && tok->is_index && tok->index < f->length)
			return de_fail(d, "corrupt value: array element %u given twice (byte %zu)",
				tok->index, de_pos(d));
	}
	return de_key_add(d, f->id, tok->str, tok->len);
}

/* An end tag for the open container: check the counts, pop. */
static int de_end(dobj_de *d, de_frame *f, dobj_tok *tok)
{
	uint32_t count, length = 0, expect;
	size_t at = de_pos(d);
	int rc;

	d->p++;
	if ((rc = de_varint(d, &count)) < 0)
		return rc;
	if ((f->kind == K_DENSE || f->kind == K_SPARSE) && (rc = de_varint(d, &length)) < 0)
		return rc;
	switch (f->kind) {
	case K_OBJECT:
		tok->type = DOBJ_TOK_OBJECT_END;
		expect = f->items / 2;
		break;
	case K_DENSE:
		tok->type = DOBJ_TOK_ARRAY_END;
		expect = (f->items - f->length) / 2;
		break;
	case K_SPARSE:
		tok->type = DOBJ_TOK_SPARSE_END;
		expect = f->items / 2;
		break;
	case K_MAP:
		tok->type = DOBJ_TOK_MAP_END;
		expect = f->items; /* the wire counts keys and values */
		break;
	default:
		tok->type = DOBJ_TOK_SET_END;
		expect = f->items;
		break;
	}
	if (count != expect)
		return de_fail(d, "corrupt value: end of %s says %u entries, %u were read (byte %zu)",
			kind_name(f->kind), count, expect, at);
	if ((f->kind == K_DENSE || f->kind == K_SPARSE) && length != f->length)
		return de_fail(d, "corrupt value: end of %s says length %u, it began with %u (byte %zu)",
			kind_name(f->kind), length, f->length, at);
	tok->count = f->kind == K_MAP ? count / 2 : count;
	tok->length = f->length;
	tok->id = f->id;
	d->depth--;
	return de_done(d);
}

int dobj_de_next(dobj_de *d, dobj_tok *tok)
{
	de_frame *f;
	unsigned char tag = 0, end_tag = 0;
	int rc, key_slot = 0, element = 0;

	memset(tok, 0, sizeof(*tok));
	d->last_begin = 0;
	if (d->failed)
		return dobj_error_set(d->failed, "%s", d->msg);
	if (d->done) {
		tok->type = DOBJ_TOK_EOF;
		return 0;
	}
	if ((rc = de_peek(d, &tag)) < 0)
		return rc;
	tok->depth = d->depth;
	if (d->depth == 0)
		return de_value(d, tag, tok);
	f = &d->stack[d->depth - 1];
	switch (f->kind) {
	case K_OBJECT:
		key_slot = (f->items & 1) == 0;
		end_tag = T_OBJECT_END;
		break;
	case K_SPARSE:
		key_slot = (f->items & 1) == 0;
		end_tag = T_SPARSE_END;
		break;
	case K_DENSE:
		if (f->items < f->length)
			element = 1;
		else
			key_slot = ((f->items - f->length) & 1) == 0;
		end_tag = T_DENSE_END;
		break;
	case K_MAP:
		end_tag = T_MAP_END;
		if (tag == end_tag && (f->items & 1))
			return de_fail(d, "corrupt value: Map ends after a key without a value (byte %zu)",
				de_pos(d));
		break;
	default:
		end_tag = T_SET_END;
		break;
	}
	if (tag == end_tag && (key_slot || f->kind == K_MAP || f->kind == K_SET)) {
		tok->depth = d->depth - 1;
		return de_end(d, f, tok);
	}
	if (element && tag == T_HOLE) {
		d->p++;
		tok->type = DOBJ_TOK_HOLE;
		return de_done(d);
	}
	if (element && tag == T_DENSE_END)
		return de_fail(d, "corrupt value: array of length %u ended after %u elements (byte %zu)",
			f->length, f->items, de_pos(d));
	if (key_slot)
		return de_read_key(d, tag, tok, f);
	return de_value(d, tag, tok);
}

int dobj_de_skip(dobj_de *d)
{
	dobj_tok tok;
	int target, rc;

	if (!d->last_begin)
		return 0;
	target = d->depth - 1;
	while (d->depth > target) {
		if ((rc = dobj_de_next(d, &tok)) < 0)
			return rc;
	}
	return 0;
}
