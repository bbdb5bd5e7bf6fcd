/*
 * The V8 format writer (dobj_ser, dobj/value.h): one call per JS value,
 * containers as begin ... end, object ids handed back for references.
 *
 * Written from the format's description and from blobs workerd stored
 * (tests/c/vectors/vectors.txt); no V8 code is used.  Multi-byte numbers
 * are little-endian on the wire (V8 writes host order; every platform
 * workerd runs on is little-endian), so the writer is portable.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "v8_format.h"

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
	if (dobj__v8_is_smi(v))
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

int dobj_ser_integer(dobj_ser *s, int64_t v)
{
	if (v >= DOBJ_VALUE_SMI_MIN && v <= DOBJ_VALUE_SMI_MAX)
		return dobj_ser_int32(s, (int32_t)v);
	if (v >= -DOBJ_VALUE_INTEGER_MAX && v <= DOBJ_VALUE_INTEGER_MAX)
		return ser_double_bits(s, double_bits((double)v));
	return dobj_ser_bigint_i64(s, v);
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
		n = dobj__utf8_get(p + i, len - i, 1, &cp, &bad);
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
				n = dobj__utf8_get(p + i, len - i, 1, &cp, &bad);
				put_byte(s, (unsigned char)cp);
			}
		}
	} else {
		if ((rc = ser_two_byte_head(s, units)) < 0)
			return rc;
		for (i = 0; i < len; i += n) {
			n = dobj__utf8_get(p + i, len - i, 1, &cp, &bad);
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
		return ser_fail(s, DOBJ_ESTATE, "ending %s while %s is open", dobj__v8_kind_name(kind),
			dobj__v8_kind_name(f ? f->kind : 0));
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
		return ser_fail(s, DOBJ_ESTATE, "%s ended with a key but no value", dobj__v8_kind_name(kind));
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

int dobj__ser_host(dobj_ser *s, const void *bytes, size_t len, uint32_t *id)
{
	int rc;

	if (len > UINT32_MAX)
		return ser_fail(s, DOBJ_EARG, "host object larger than 2^32-1 bytes");
	if ((rc = ser_slot(s, SLOT_VALUE)) < 0 || (rc = ser_reserve(s, 1 + varint_size(len) + len)) < 0)
		return rc;
	put_byte(s, T_HOST);
	put_varint(s, len);
	put_bytes(s, bytes, len);
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
