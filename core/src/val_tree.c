/* The dobj_val tree (dobj/val.h): structured values for C code (native
 * classes, RPC arguments and results, tests).  Encoding and decoding are in
 * val_v8.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct dobj_val {
	int refs;
	dobj_val_type type;
	int smi; /* a number written `I` (see dobj_val_is_integer) */
	union {
		int b;
		double num;
		struct {
			char *p;
			size_t len;
			int negative; /* BigInt sign */
		} s;
		struct {
			dobj_ns *ns;
			dobj_id id;
			char *name;
			size_t len;
		} r;
		struct {
			dobj_val **items;
			dobj_val **keys; /* Maps */
			char **names;    /* objects */
			size_t *name_lens;
			size_t len, cap;
		} c;
	} u;
};

static dobj_val *val_new(dobj_val_type type)
{
	dobj_val *v = calloc(1, sizeof(*v));

	if (!v) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	v->refs = 1;
	v->type = type;
	return v;
}

dobj_val *dobj_val_undefined(void) { return val_new(DOBJ_VAL_UNDEFINED); }
dobj_val *dobj_val_null(void) { return val_new(DOBJ_VAL_NULL); }
dobj_val *dobj_val_array(void) { return val_new(DOBJ_VAL_ARRAY); }
dobj_val *dobj_val_object(void) { return val_new(DOBJ_VAL_OBJECT); }
dobj_val *dobj_val_map(void) { return val_new(DOBJ_VAL_MAP); }
dobj_val *dobj_val_set(void) { return val_new(DOBJ_VAL_SET); }

dobj_val *dobj_val_bool(int b)
{
	dobj_val *v = val_new(DOBJ_VAL_BOOL);

	if (v)
		v->u.b = !!b;
	return v;
}

static dobj_val *val_double(dobj_val_type type, double d)
{
	dobj_val *v = val_new(type);

	if (v)
		v->u.num = d;
	return v;
}

dobj_val *dobj_val_double(double d) { return val_double(DOBJ_VAL_NUMBER, d); }

dobj_val *dobj_val_number(double d)
{
	dobj_val *v = val_double(DOBJ_VAL_NUMBER, d);

	if (v)
		v->smi = d >= DOBJ_VALUE_SMI_MIN && d <= DOBJ_VALUE_SMI_MAX && d == floor(d) &&
			!(d == 0 && signbit(d));
	return v;
}

dobj_val *dobj_val_integer(int64_t x)
{
	if (x < -DOBJ_VALUE_INTEGER_MAX || x > DOBJ_VALUE_INTEGER_MAX)
		return dobj_val_bigint_i64(x);
	return dobj_val_number((double)x);
}

int dobj__val_is_smi(const dobj_val *v)
{
	return v && v->type == DOBJ_VAL_NUMBER && v->smi;
}

int dobj_val_is_integer(const dobj_val *v)
{
	return v && v->type == DOBJ_VAL_NUMBER && dobj_number_is_integer(v->u.num, v->smi);
}
dobj_val *dobj_val_date(double ms) { return val_double(DOBJ_VAL_DATE, ms); }

static dobj_val *val_bytes(dobj_val_type type, const void *p, size_t len)
{
	dobj_val *v = val_new(type);

	if (!v)
		return NULL;
	v->u.s.p = malloc(len + 1);
	if (!v->u.s.p) {
		free(v);
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	if (len)
		memcpy(v->u.s.p, p, len);
	v->u.s.p[len] = '\0';
	v->u.s.len = len;
	return v;
}

dobj_val *dobj_val_string(const char *s, size_t len) { return val_bytes(DOBJ_VAL_STRING, s, len); }
dobj_val *dobj_val_bytes(const void *p, size_t len) { return val_bytes(DOBJ_VAL_BYTES, p, len); }

dobj_val *dobj_val_bigint(int negative, const unsigned char *mag, size_t len)
{
	dobj_val *v;

	while (len > 0 && mag[len - 1] == 0)
		len--; /* canonical: no leading zero bytes, no negative zero */
	v = val_bytes(DOBJ_VAL_BIGINT, mag, len);
	if (v)
		v->u.s.negative = len ? !!negative : 0;
	return v;
}

dobj_val *dobj_val_bigint_u64(uint64_t x)
{
	unsigned char b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(x >> (8 * i));
	return dobj_val_bigint(0, b, 8);
}

dobj_val *dobj_val_bigint_i64(int64_t x)
{
	uint64_t mag = x < 0 ? (uint64_t)0 - (uint64_t)x : (uint64_t)x;
	dobj_val *v = dobj_val_bigint_u64(mag);

	if (v && x < 0)
		v->u.s.negative = 1;
	return v;
}

static dobj_val *val_ref_kind(dobj_val_type type, dobj_ns *ns, const dobj_id *id,
	const char *name, size_t len)
{
	dobj_val *v;

	if (!ns || !id) {
		dobj_error_set(DOBJ_EARG, "a stub or ID value needs a namespace and an ID");
		return NULL;
	}
	v = val_new(type);
	if (!v)
		return NULL;
	v->u.r.ns = ns;
	v->u.r.id = *id;
	if (name) {
		v->u.r.name = dobj__strndup(name, len);
		if (!v->u.r.name) {
			free(v);
			return NULL;
		}
		v->u.r.len = len;
	}
	return v;
}

dobj_val *dobj_val_stub(dobj_ns *ns, const dobj_id *id, const char *name, size_t len)
{
	return val_ref_kind(DOBJ_VAL_STUB, ns, id, name, len);
}

dobj_val *dobj_val_id(dobj_ns *ns, const dobj_id *id, const char *name, size_t len)
{
	return val_ref_kind(DOBJ_VAL_ID, ns, id, name, len);
}

dobj_ns *dobj_val_get_ref(const dobj_val *v, const dobj_id **id, const char **name, size_t *len)
{
	if (!v || (v->type != DOBJ_VAL_STUB && v->type != DOBJ_VAL_ID))
		return NULL;
	if (id)
		*id = &v->u.r.id;
	if (name)
		*name = v->u.r.name;
	if (len)
		*len = v->u.r.len;
	return v->u.r.ns;
}

dobj_val *dobj_val_ref(dobj_val *v)
{
	if (v)
		v->refs++;
	return v;
}

void dobj_val_free(dobj_val *v)
{
	size_t i;

	if (!v || --v->refs > 0)
		return;
	switch (v->type) {
	case DOBJ_VAL_STRING:
	case DOBJ_VAL_BYTES:
	case DOBJ_VAL_BIGINT:
		free(v->u.s.p);
		break;
	case DOBJ_VAL_STUB:
	case DOBJ_VAL_ID:
		free(v->u.r.name);
		break;
	case DOBJ_VAL_ARRAY:
	case DOBJ_VAL_SET:
	case DOBJ_VAL_OBJECT:
	case DOBJ_VAL_MAP:
		for (i = 0; i < v->u.c.len; i++) {
			dobj_val_free(v->u.c.items[i]);
			if (v->u.c.keys)
				dobj_val_free(v->u.c.keys[i]);
			if (v->u.c.names)
				free(v->u.c.names[i]);
		}
		free(v->u.c.items);
		free(v->u.c.keys);
		free(v->u.c.names);
		free(v->u.c.name_lens);
		break;
	default:
		break;
	}
	free(v);
}

/* Make room for one more entry in a container. */
static int grow(dobj_val *v)
{
	size_t cap;

	if (v->u.c.len < v->u.c.cap)
		return DOBJ_OK;
	cap = v->u.c.cap ? 2 * v->u.c.cap : 4;
#define GROW(field) do { \
		void *p = realloc(v->u.c.field, cap * sizeof(*v->u.c.field)); \
		if (!p) \
			return dobj_error_set(DOBJ_ENOMEM, "out of memory"); \
		v->u.c.field = p; \
	} while (0)
	GROW(items);
	if (v->type == DOBJ_VAL_MAP)
		GROW(keys);
	if (v->type == DOBJ_VAL_OBJECT) {
		GROW(names);
		GROW(name_lens);
	}
#undef GROW
	v->u.c.cap = cap;
	return DOBJ_OK;
}

int dobj_val_push(dobj_val *c, dobj_val *item)
{
	if (!c || !item || (c->type != DOBJ_VAL_ARRAY && c->type != DOBJ_VAL_SET)) {
		dobj_val_free(item);
		return dobj_error_set(DOBJ_EARG, "push() needs an array or a Set and an item");
	}
	if (grow(c) < 0) {
		dobj_val_free(item);
		return DOBJ_ENOMEM;
	}
	c->u.c.items[c->u.c.len++] = item;
	return DOBJ_OK;
}

int dobj__val_set_at(dobj_val *a, size_t i, dobj_val *item)
{
	if (!a || a->type != DOBJ_VAL_ARRAY || i >= a->u.c.len) {
		dobj_val_free(item);
		return dobj_error_set(DOBJ_EARG, "index out of range");
	}
	dobj_val_free(a->u.c.items[i]);
	a->u.c.items[i] = item;
	return DOBJ_OK;
}

int dobj_val_put(dobj_val *o, const char *key, size_t klen, dobj_val *item)
{
	size_t i;
	char *name;

	if (!o || !item || o->type != DOBJ_VAL_OBJECT || (!key && klen)) {
		dobj_val_free(item);
		return dobj_error_set(DOBJ_EARG, "put() needs an object, a key and a value");
	}
	for (i = 0; i < o->u.c.len; i++) {
		if (o->u.c.name_lens[i] == klen && memcmp(o->u.c.names[i], key, klen) == 0) {
			dobj_val_free(o->u.c.items[i]);
			o->u.c.items[i] = item;
			return DOBJ_OK;
		}
	}
	name = dobj__strndup(key ? key : "", klen);
	if (!name || grow(o) < 0) {
		free(name);
		dobj_val_free(item);
		return DOBJ_ENOMEM;
	}
	o->u.c.names[o->u.c.len] = name;
	o->u.c.name_lens[o->u.c.len] = klen;
	o->u.c.items[o->u.c.len++] = item;
	return DOBJ_OK;
}

int dobj_val_map_put(dobj_val *m, dobj_val *key, dobj_val *item)
{
	if (!m || !key || !item || m->type != DOBJ_VAL_MAP) {
		dobj_val_free(key);
		dobj_val_free(item);
		return dobj_error_set(DOBJ_EARG, "map_put() needs a Map, a key and a value");
	}
	if (grow(m) < 0) {
		dobj_val_free(key);
		dobj_val_free(item);
		return DOBJ_ENOMEM;
	}
	m->u.c.keys[m->u.c.len] = key;
	m->u.c.items[m->u.c.len++] = item;
	return DOBJ_OK;
}

dobj_val_type dobj_val_type_of(const dobj_val *v)
{
	return v ? v->type : DOBJ_VAL_UNDEFINED;
}

const char *dobj_val_type_name(const dobj_val *v)
{
	static const char *const names[] = { "undefined", "null", "boolean", "number", "bigint",
		"string", "bytes", "array", "object", "Map", "Set", "Date", "stub", "id" };
	return names[dobj_val_type_of(v)];
}

int dobj_val_get_bool(const dobj_val *v)
{
	return v && v->type == DOBJ_VAL_BOOL ? v->u.b : 0;
}

double dobj_val_get_number(const dobj_val *v)
{
	return v && (v->type == DOBJ_VAL_NUMBER || v->type == DOBJ_VAL_DATE) ? v->u.num : NAN;
}

const char *dobj_val_get_string(const dobj_val *v, size_t *len)
{
	if (!v || v->type != DOBJ_VAL_STRING) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (len)
		*len = v->u.s.len;
	return v->u.s.p;
}

const void *dobj_val_get_bytes(const dobj_val *v, size_t *len)
{
	if (!v || v->type != DOBJ_VAL_BYTES) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (len)
		*len = v->u.s.len;
	return v->u.s.p;
}

const unsigned char *dobj_val_get_bigint(const dobj_val *v, int *negative, size_t *len)
{
	if (!v || v->type != DOBJ_VAL_BIGINT) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (negative)
		*negative = v->u.s.negative;
	if (len)
		*len = v->u.s.len;
	return (const unsigned char *)v->u.s.p;
}

/* Magnitude and sign of an integer value (BigInt, or a number with no
 * fraction); DOBJ_EARG if it is neither or does not fit 64 bits. */
static int integer_parts(const dobj_val *v, uint64_t *mag, int *negative)
{
	size_t i;

	if (v && v->type == DOBJ_VAL_NUMBER) {
		double d = v->u.num;
		if (!isfinite(d) || d != floor(d) || fabs(d) >= 18446744073709551616.0)
			return DOBJ_EARG;
		*negative = d < 0;
		*mag = (uint64_t)fabs(d);
		return DOBJ_OK;
	}
	if (!v || v->type != DOBJ_VAL_BIGINT || v->u.s.len > 8)
		return DOBJ_EARG;
	*mag = 0;
	for (i = 0; i < v->u.s.len; i++)
		*mag |= (uint64_t)(unsigned char)v->u.s.p[i] << (8 * i);
	*negative = v->u.s.negative;
	return DOBJ_OK;
}

int dobj_val_to_i64(const dobj_val *v, int64_t *out)
{
	uint64_t mag;
	int neg;

	if (integer_parts(v, &mag, &neg) < 0)
		return DOBJ_EARG;
	if (neg) {
		if (mag > (uint64_t)INT64_MAX + 1)
			return DOBJ_EARG;
		*out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
	} else {
		if (mag > (uint64_t)INT64_MAX)
			return DOBJ_EARG;
		*out = (int64_t)mag;
	}
	return DOBJ_OK;
}

int dobj_val_to_u64(const dobj_val *v, uint64_t *out)
{
	uint64_t mag;
	int neg;

	if (integer_parts(v, &mag, &neg) < 0 || (neg && mag != 0))
		return DOBJ_EARG;
	*out = mag;
	return DOBJ_OK;
}

static int is_container(const dobj_val *v)
{
	return v && (v->type == DOBJ_VAL_ARRAY || v->type == DOBJ_VAL_SET ||
		v->type == DOBJ_VAL_OBJECT || v->type == DOBJ_VAL_MAP);
}

size_t dobj_val_len(const dobj_val *v)
{
	return is_container(v) ? v->u.c.len : 0;
}

dobj_val *dobj_val_at(const dobj_val *v, size_t i)
{
	return is_container(v) && i < v->u.c.len ? v->u.c.items[i] : NULL;
}

const char *dobj_val_key_at(const dobj_val *v, size_t i, size_t *len)
{
	if (!v || v->type != DOBJ_VAL_OBJECT || i >= v->u.c.len)
		return NULL;
	if (len)
		*len = v->u.c.name_lens[i];
	return v->u.c.names[i];
}

dobj_val *dobj_val_map_key_at(const dobj_val *v, size_t i)
{
	return v && v->type == DOBJ_VAL_MAP && i < v->u.c.len ? v->u.c.keys[i] : NULL;
}

dobj_val *dobj_val_get(const dobj_val *v, const char *key, size_t klen)
{
	size_t i;

	if (!v || v->type != DOBJ_VAL_OBJECT)
		return NULL;
	for (i = 0; i < v->u.c.len; i++)
		if (v->u.c.name_lens[i] == klen && memcmp(v->u.c.names[i], key, klen) == 0)
			return v->u.c.items[i];
	return NULL;
}

int dobj_val_equal(const dobj_val *a, const dobj_val *b)
{
	size_t i;

	if (a == b)
		return 1;
	if (!a || !b || a->type != b->type)
		return 0;
	switch (a->type) {
	case DOBJ_VAL_UNDEFINED:
	case DOBJ_VAL_NULL:
		return 1;
	case DOBJ_VAL_BOOL:
		return a->u.b == b->u.b;
	case DOBJ_VAL_NUMBER:
		if (dobj_val_is_integer(a) != dobj_val_is_integer(b))
			return 0;
		/* fall through */
	case DOBJ_VAL_DATE:
		return a->u.num == b->u.num || (isnan(a->u.num) && isnan(b->u.num));
	case DOBJ_VAL_STUB:
	case DOBJ_VAL_ID:
		return a->u.r.ns == b->u.r.ns && dobj_id_equal(&a->u.r.id, &b->u.r.id);
	case DOBJ_VAL_BIGINT:
		if (a->u.s.negative != b->u.s.negative)
			return 0;
		/* fall through */
	case DOBJ_VAL_STRING:
	case DOBJ_VAL_BYTES:
		return a->u.s.len == b->u.s.len && memcmp(a->u.s.p, b->u.s.p, a->u.s.len) == 0;
	default:
		if (a->u.c.len != b->u.c.len)
			return 0;
		for (i = 0; i < a->u.c.len; i++) {
			if (!dobj_val_equal(a->u.c.items[i], b->u.c.items[i]))
				return 0;
			if (a->type == DOBJ_VAL_MAP && !dobj_val_equal(a->u.c.keys[i], b->u.c.keys[i]))
				return 0;
			if (a->type == DOBJ_VAL_OBJECT && (a->u.c.name_lens[i] != b->u.c.name_lens[i] ||
			    memcmp(a->u.c.names[i], b->u.c.names[i], a->u.c.name_lens[i]) != 0))
				return 0;
		}
		return 1;
	}
}
