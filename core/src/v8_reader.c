/*
 * The V8 format reader (dobj_de, dobj/value.h): a validating pull reader
 * that hands out one token at a time and refuses corrupt or unsupported
 * input with a message, never over-reading.
 *
 * Written from the format's description and from blobs workerd stored
 * (tests/c/vectors/vectors.txt); no V8 code is used.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "v8_format.h"

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
	uint64_t slots, max_slots; /* array slots claimed so far, and the cap */
	int host_ok;    /* host objects are read (dobj__de_allow_host) */
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
	d->slots = 0;
	d->max_slots = DOBJ_VALUE_SLOTS_BASE + (uint64_t)DOBJ_VALUE_SLOTS_PER_BYTE * len;
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

void dobj__de_allow_host(dobj_de *d)
{
	d->host_ok = 1;
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
		/* No memcmp of empty keys: d->keys is still NULL when every key
		 * so far was "" (and memcmp's pointers must be valid). */
		if (k->owner == owner && k->hash == h && k->len == len &&
		    (len == 0 || memcmp(d->keys + k->off, s, len) == 0))
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
			o += dobj__utf8_put(out + o, raw[i]);
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
			o += dobj__utf8_put(out + o, cp); /* lone surrogates: WTF-8 */
		}
	} else { /* UTF-8: ill-formed parts become U+FFFD, as V8 decodes them */
		tok->raw_kind = DOBJ_STR_UTF8;
		for (i = 0; i < n; i += used)
			if (!(used = dobj__utf8_get(raw + i, n - i, 0, &cp, &bad)))
				break;
		if (i == n) {
			tok->str = (const char *)raw;
			tok->len = n;
			return 0;
		}
		if (!(out = de_scratch(d, (size_t)n * 3 + 1)))
			return de_nomem(d);
		for (i = 0; i < n; i += used) {
			used = dobj__utf8_get(raw + i, n - i, 0, &cp, &bad);
			if (!used) {
				used = bad;
				cp = 0xFFFD;
			}
			o += dobj__utf8_put(out + o, cp);
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
		/* Each element takes at least a byte: a bigger length is a lie. */
		if (tag == T_DENSE && u > (size_t)(d->end - d->p))
			return de_fail(d, "corrupt value: array of length %u in %zu bytes (byte %zu)", u,
				(size_t)(d->end - d->p), at);
		/* A binding may make `length` slots for an array (a Python list
		 * holds its holes), so the lengths of all arrays together are
		 * bounded by the size of the blob (see DOBJ_VALUE_SLOTS_BASE).
		 * V8 itself does not preallocate from a claimed length. */
		if (u > d->max_slots - d->slots)
			return de_fail(d, "value too large to read: %s of length %u at byte %zu makes "
				"%llu array slots in a value of %zu bytes (at most %llu)",
				tag == T_DENSE ? "an array" : "a sparse array", u, at,
				(unsigned long long)(d->slots + u), (size_t)(d->end - d->start),
				(unsigned long long)d->max_slots);
		d->slots += u;
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
	case T_HOST:
		if (!d->host_ok)
			return de_fail(d, "unsupported value type: host object (tag '\\' at byte %zu)", at);
		if ((rc = de_varint(d, &u)) < 0 || (rc = de_need(d, u)) < 0 ||
		    (rc = de_new_id(d, SIZE_MAX, 0, &tok->id)) < 0)
			return rc;
		tok->type = (dobj_tok_type)DOBJ__TOK_HOST;
		tok->bytes = d->p;
		tok->len = u;
		d->p += u;
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
		/* V8 never writes an index past the length it wrote first. */
		if (tok->is_index && tok->index >= f->length)
			return de_fail(d, "corrupt value: index %u of %s of length %u (byte %zu)",
				tok->index, dobj__v8_kind_name(f->kind), f->length, de_pos(d));
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
			dobj__v8_kind_name(f->kind), count, expect, at);
	if ((f->kind == K_DENSE || f->kind == K_SPARSE) && length != f->length)
		return de_fail(d, "corrupt value: end of %s says length %u, it began with %u (byte %zu)",
			dobj__v8_kind_name(f->kind), length, f->length, at);
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
