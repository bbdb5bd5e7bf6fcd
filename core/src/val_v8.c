/* dobj_val <-> V8 blobs: dobj_val_encode and dobj_val_decode, through the
 * core's one V8 format writer and reader (v8_writer.c, v8_reader.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "v8_format.h"

/* ------------------------------------------------------------------ encode */

typedef struct seen {
	const dobj_val **vals;
	uint32_t *ids;
	size_t len, cap;
	int refs; /* stubs and IDs are written (dobj__val_encode_refs) */
} seen;

static int seen_find(const seen *s, const dobj_val *v, uint32_t *id)
{
	size_t i;

	for (i = 0; i < s->len; i++) {
		if (s->vals[i] == v) {
			*id = s->ids[i];
			return 1;
		}
	}
	return 0;
}

static int seen_add(seen *s, const dobj_val *v, uint32_t id)
{
	if (s->len == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		const dobj_val **vals = realloc(s->vals, cap * sizeof(*vals));
		uint32_t *ids;
		if (!vals)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		s->vals = vals;
		ids = realloc(s->ids, cap * sizeof(*ids));
		if (!ids)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		s->ids = ids;
		s->cap = cap;
	}
	s->vals[s->len] = v;
	s->ids[s->len++] = id;
	return DOBJ_OK;
}

/* A stub or an ID as a host object's bytes: u8 kind (1 stub, 2 ID), u16
 * namespace key length, the key (dobj_ns unique_key), the 32 ID bytes, u8
 * has-name, the name (to the end).  Read back by ref_parse. */
static int encode_ref(dobj_ser *w, const dobj_val *v)
{
	const dobj_id *id;
	const char *name;
	size_t nlen, klen, n;
	dobj_ns *ns = dobj_val_get_ref(v, &id, &name, &nlen);
	unsigned char *b;
	int rc;

	klen = ns->unique_key_len;
	if (klen > 0xffff)
		return dobj_error_set(DOBJ_EARG, "a namespace key longer than 65535 bytes");
	n = 1 + 2 + klen + 32 + 1 + (name ? nlen : 0);
	if (!(b = malloc(n)))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	b[0] = dobj_val_type_of(v) == DOBJ_VAL_STUB ? 1 : 2;
	b[1] = (unsigned char)(klen >> 8);
	b[2] = (unsigned char)klen;
	memcpy(b + 3, ns->unique_key, klen);
	memcpy(b + 3 + klen, id->bytes, 32);
	b[3 + klen + 32] = name != NULL;
	if (name)
		memcpy(b + 3 + klen + 33, name, nlen);
	rc = dobj__ser_host(w, b, n, NULL);
	free(b);
	return rc;
}

static int encode(dobj_ser *w, const dobj_val *v, seen *s, int depth)
{
	uint32_t id;
	size_t i, n, len;
	int rc;

	if (depth > DOBJ_VALUE_MAX_DEPTH)
		return dobj_error_set(DOBJ_EARG, "the value nests deeper than %d levels", DOBJ_VALUE_MAX_DEPTH);
	/* A shared container is written once, then referred to. */
	if (dobj_val_type_of(v) >= DOBJ_VAL_BYTES && dobj_val_type_of(v) <= DOBJ_VAL_DATE) {
		if (seen_find(s, v, &id))
			return dobj_ser_ref(w, id);
	}
	switch (dobj_val_type_of(v)) {
	case DOBJ_VAL_UNDEFINED: return dobj_ser_undefined(w);
	case DOBJ_VAL_NULL: return dobj_ser_null(w);
	case DOBJ_VAL_BOOL: return dobj_ser_bool(w, dobj_val_get_bool(v));
	case DOBJ_VAL_NUMBER: {
		/* `I` only for what was a Smi: a float 1.0 stays `N` (and a float). */
		double d = dobj_val_get_number(v);
		if (dobj__val_is_smi(v))
			return dobj_ser_int32(w, (int32_t)d);
		return isnan(d) ? dobj_ser_number(w, d) : dobj_ser_double(w, d);
	}
	case DOBJ_VAL_BIGINT: {
		int neg;
		const unsigned char *mag = dobj_val_get_bigint(v, &neg, &len);
		return dobj_ser_bigint(w, neg, mag, len);
	}
	case DOBJ_VAL_STRING: {
		const char *p = dobj_val_get_string(v, &len);
		return dobj_ser_string(w, p, len);
	}
	case DOBJ_VAL_BYTES: {
		const void *p = dobj_val_get_bytes(v, &len);
		if ((rc = dobj_ser_bytes(w, p, len, &id)) < 0)
			return rc;
		return seen_add(s, v, id);
	}
	case DOBJ_VAL_DATE:
		if ((rc = dobj_ser_date(w, dobj_val_get_number(v), &id)) < 0)
			return rc;
		return seen_add(s, v, id);
	case DOBJ_VAL_ARRAY:
		n = dobj_val_len(v);
		if (n > UINT32_MAX)
			return dobj_error_set(DOBJ_EARG, "the array is too long");
		if ((rc = dobj_ser_array_begin(w, (uint32_t)n, &id)) < 0 || (rc = seen_add(s, v, id)) < 0)
			return rc;
		for (i = 0; i < n; i++)
			if ((rc = encode(w, dobj_val_at(v, i), s, depth + 1)) < 0)
				return rc;
		return dobj_ser_array_end(w);
	case DOBJ_VAL_OBJECT:
		if ((rc = dobj_ser_object_begin(w, &id)) < 0 || (rc = seen_add(s, v, id)) < 0)
			return rc;
		for (i = 0; i < dobj_val_len(v); i++) {
			const char *k = dobj_val_key_at(v, i, &len);
			if ((rc = dobj_ser_key(w, k, len)) < 0 ||
			    (rc = encode(w, dobj_val_at(v, i), s, depth + 1)) < 0)
				return rc;
		}
		return dobj_ser_object_end(w);
	case DOBJ_VAL_MAP:
		if ((rc = dobj_ser_map_begin(w, &id)) < 0 || (rc = seen_add(s, v, id)) < 0)
			return rc;
		for (i = 0; i < dobj_val_len(v); i++)
			if ((rc = encode(w, dobj_val_map_key_at(v, i), s, depth + 1)) < 0 ||
			    (rc = encode(w, dobj_val_at(v, i), s, depth + 1)) < 0)
				return rc;
		return dobj_ser_map_end(w);
	case DOBJ_VAL_STUB:
	case DOBJ_VAL_ID:
		if (!s->refs)
			return dobj_error_set(DOBJ_EARG, "a %s cannot be stored: only RPC can pass it",
				dobj_val_type_name(v));
		return encode_ref(w, v);
	case DOBJ_VAL_SET:
		if ((rc = dobj_ser_set_begin(w, &id)) < 0 || (rc = seen_add(s, v, id)) < 0)
			return rc;
		for (i = 0; i < dobj_val_len(v); i++)
			if ((rc = encode(w, dobj_val_at(v, i), s, depth + 1)) < 0)
				return rc;
		return dobj_ser_set_end(w);
	}
	return dobj_error_set(DOBJ_EARG, "unknown value type");
}

static int encode_top(const dobj_val *v, unsigned char **out, size_t *len, int refs)
{
	dobj_ser *w = NULL;
	seen s = { 0 };
	const unsigned char *data;
	int rc;

	s.refs = refs;
	*out = NULL;
	*len = 0;
	if (!v)
		return dobj_error_set(DOBJ_EARG, "no value to encode");
	if ((rc = dobj_ser_new(&w)) < 0)
		return rc;
	if ((rc = encode(w, v, &s, 0)) >= 0 && (rc = dobj_ser_finish(w, &data, len)) >= 0) {
		*out = malloc(*len ? *len : 1);
		if (!*out)
			rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		else
			memcpy(*out, data, *len);
	}
	free(s.vals);
	free(s.ids);
	dobj_ser_free(w);
	return rc < 0 ? rc : DOBJ_OK;
}

int dobj_val_encode(const dobj_val *v, unsigned char **out, size_t *len)
{
	return encode_top(v, out, len, 0);
}

int dobj__val_encode_refs(const dobj_val *v, unsigned char **out, size_t *len)
{
	return encode_top(v, out, len, 1);
}

/* ------------------------------------------------------------------ decode */

typedef struct objs {
	dobj_val **v; /* by id; NULL while the container is still open */
	size_t cap;
	dobj_val *(*resolve)(void *data, const dobj__ref *ref); /* NULL: no host objects */
	void *data;
} objs;

/* The bytes encode_ref wrote, every length checked (a peer's bytes). */
static int ref_parse(const unsigned char *p, size_t n, dobj__ref *r)
{
	size_t klen;

	if (n < 3 || (p[0] != 1 && p[0] != 2))
		goto bad;
	klen = (size_t)p[1] << 8 | p[2];
	if (n < 3 + klen + 32 + 1 || p[3 + klen + 32] > 1 || (!p[3 + klen + 32] && n != 3 + klen + 33))
		goto bad;
	r->kind = p[0] == 1 ? DOBJ_VAL_STUB : DOBJ_VAL_ID;
	r->key = (const char *)p + 3;
	r->key_len = klen;
	memcpy(r->id.bytes, p + 3 + klen, 32);
	r->name = p[3 + klen + 32] ? (const char *)p + 3 + klen + 33 : NULL;
	r->name_len = r->name ? n - (3 + klen + 33) : 0;
	return DOBJ_OK;
bad:
	return dobj_error_set(DOBJ_EINVALID, "a malformed stub or ID (%zu bytes)", n);
}

static int objs_set(objs *o, uint32_t id, dobj_val *v)
{
	if (id >= o->cap) {
		size_t cap = o->cap ? o->cap : 16;
		dobj_val **p;
		while (cap <= id)
			cap *= 2;
		p = realloc(o->v, cap * sizeof(*p));
		if (!p)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		memset(p + o->cap, 0, (cap - o->cap) * sizeof(*p));
		o->v = p;
		o->cap = cap;
	}
	o->v[id] = v;
	return DOBJ_OK;
}

static int decode(dobj_de *de, dobj_tok *t, objs *o, dobj_val **out);

/* Read one value (its first token not read yet). */
static int decode_next(dobj_de *de, objs *o, dobj_val **out)
{
	dobj_tok t;
	int rc = dobj_de_next(de, &t);

	if (rc < 0)
		return rc;
	return decode(de, &t, o, out);
}

static int fail(dobj_val *v, int rc)
{
	dobj_val_free(v);
	return rc;
}

/* Read the items of a container begun by token t into v. */
static int decode_items(dobj_de *de, dobj_tok *t, objs *o, dobj_val *v)
{
	dobj_tok k;
	dobj_val *item, *key;
	char *name;
	size_t name_len;
	int rc;

	for (;;) {
		if ((rc = dobj_de_next(de, &k)) < 0)
			return rc;
		switch (k.type) {
		case DOBJ_TOK_OBJECT_END:
		case DOBJ_TOK_ARRAY_END:
		case DOBJ_TOK_SPARSE_END:
		case DOBJ_TOK_MAP_END:
		case DOBJ_TOK_SET_END:
			return DOBJ_OK; /* the reader checked it matches */
		default:
			break;
		}
		if (t->type == DOBJ_TOK_MAP) {
			if ((rc = decode(de, &k, o, &key)) < 0)
				return rc;
			if ((rc = decode_next(de, o, &item)) < 0)
				return fail(key, rc);
			if ((rc = dobj_val_map_put(v, key, item)) < 0)
				return rc;
			continue;
		}
		if (!k.key) {
			if (t->type == DOBJ_TOK_OBJECT || t->type == DOBJ_TOK_SPARSE)
				return dobj_error_set(DOBJ_EINVALID, "a property without a key");
			if (k.type == DOBJ_TOK_HOLE)
				item = dobj_val_undefined();
			else if ((rc = decode(de, &k, o, &item)) < 0)
				return rc;
			if ((rc = dobj_val_push(v, item)) < 0)
				return rc;
			continue;
		}
		/* A keyed property. */
		if (t->type != DOBJ_TOK_OBJECT) {
			if (!k.is_index || k.index >= dobj_val_len(v))
				return dobj_error_set(DOBJ_EINVALID,
					"arrays with named properties are not supported here");
			if ((rc = decode_next(de, o, &item)) < 0)
				return rc;
			if ((rc = dobj__val_set_at(v, k.index, item)) < 0)
				return rc;
			continue;
		}
		name_len = k.len;
		name = malloc(name_len + 1);
		if (!name)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		memcpy(name, k.str, name_len);
		if ((rc = decode_next(de, o, &item)) >= 0)
			rc = dobj_val_put(v, name, name_len, item);
		free(name);
		if (rc < 0)
			return rc;
	}
}

static int decode(dobj_de *de, dobj_tok *t, objs *o, dobj_val **out)
{
	dobj_val *v = NULL;
	uint32_t id = t->id, i;
	int rc;

	*out = NULL;
	switch ((int)t->type) {
	case DOBJ_TOK_UNDEFINED: v = dobj_val_undefined(); break;
	case DOBJ_TOK_NULL: v = dobj_val_null(); break;
	case DOBJ_TOK_TRUE: v = dobj_val_bool(1); break;
	case DOBJ_TOK_FALSE: v = dobj_val_bool(0); break;
	case DOBJ_TOK_INT32: v = dobj_val_number(t->i32); break;
	case DOBJ_TOK_DOUBLE: v = dobj_val_double(t->number); break;
	case DOBJ_TOK_BIGINT: v = dobj_val_bigint(t->negative, t->bytes, t->len); break;
	case DOBJ_TOK_STRING: v = dobj_val_string(t->str, t->len); break;
	case DOBJ_TOK_REF:
		if (id >= o->cap || !o->v[id])
			return dobj_error_set(DOBJ_EINVALID,
				"the value contains itself: cyclic values are not supported here");
		*out = dobj_val_ref(o->v[id]);
		return DOBJ_OK;
	case DOBJ__TOK_HOST: {
		dobj__ref ref;
		if ((rc = ref_parse(t->bytes, t->len, &ref)) < 0)
			return rc;
		if (!(v = o->resolve(o->data, &ref)))
			return dobj_error_last_code() < 0 ? dobj_error_last_code() : DOBJ_ERROR;
		if ((rc = objs_set(o, id, v)) < 0)
			return fail(v, rc);
		*out = dobj_val_ref(v);
		return DOBJ_OK;
	}
	case DOBJ_TOK_DATE:
	case DOBJ_TOK_BUFFER:
	case DOBJ_TOK_VIEW:
		v = t->type == DOBJ_TOK_DATE ? dobj_val_date(t->number) : dobj_val_bytes(t->bytes, t->len);
		if (!v)
			return DOBJ_ENOMEM;
		if (t->type == DOBJ_TOK_VIEW && t->buffer_new) {
			dobj_val *buf = dobj_val_bytes(t->buffer, t->buffer_len);
			if (!buf)
				return fail(v, DOBJ_ENOMEM);
			if ((rc = objs_set(o, t->buffer_id, buf)) < 0)
				return fail(buf, fail(v, rc));
		}
		if ((rc = objs_set(o, id, v)) < 0)
			return fail(v, rc);
		*out = dobj_val_ref(v);
		return DOBJ_OK;
	case DOBJ_TOK_OBJECT: v = dobj_val_object(); break;
	case DOBJ_TOK_ARRAY:
	case DOBJ_TOK_SPARSE: v = dobj_val_array(); break;
	case DOBJ_TOK_MAP: v = dobj_val_map(); break;
	case DOBJ_TOK_SET: v = dobj_val_set(); break;
	default:
		return dobj_error_set(DOBJ_EINVALID, "unexpected token in a value");
	}
	if (!v)
		return DOBJ_ENOMEM;
	switch (t->type) {
	case DOBJ_TOK_OBJECT: case DOBJ_TOK_ARRAY: case DOBJ_TOK_SPARSE:
	case DOBJ_TOK_MAP: case DOBJ_TOK_SET:
		if ((rc = objs_set(o, id, NULL)) < 0) /* open: a reference now is a cycle */
			return fail(v, rc);
		if (t->type == DOBJ_TOK_SPARSE) {
			/* The holes share one undefined: a slot costs a pointer (the
			 * reader bounds the slots by the blob's size). */
			dobj_val *hole = dobj_val_undefined();
			if (!hole)
				return fail(v, DOBJ_ENOMEM);
			rc = DOBJ_OK;
			for (i = 0; i < t->length; i++)
				if ((rc = dobj_val_push(v, dobj_val_ref(hole))) < 0)
					break;
			dobj_val_free(hole);
			if (rc < 0)
				return fail(v, rc);
		}
		if ((rc = decode_items(de, t, o, v)) < 0)
			return fail(v, rc);
		if ((rc = objs_set(o, id, v)) < 0)
			return fail(v, rc);
		*out = dobj_val_ref(v);
		return DOBJ_OK;
	default:
		*out = v;
		return DOBJ_OK;
	}
}

static int decode_top(const void *blob, size_t len, objs *op, dobj_val **out)
{
	dobj_de *de = NULL;
	objs o = *op;
	dobj_tok t;
	size_t i;
	int rc;

	*out = NULL;
	if ((rc = dobj_de_new(&de, blob, len)) >= 0 && o.resolve)
		dobj__de_allow_host(de);
	if (rc >= 0 && (rc = decode_next(de, &o, out)) >= 0) {
		/* The whole blob must be one value. */
		if ((rc = dobj_de_next(de, &t)) >= 0 && t.type != DOBJ_TOK_EOF)
			rc = dobj_error_set(DOBJ_EINVALID, "trailing data after the value");
		if (rc < 0) {
			dobj_val_free(*out);
			*out = NULL;
		}
	}
	/* The table holds one reference per object it saw. */
	for (i = 0; i < o.cap; i++)
		dobj_val_free(o.v[i]);
	free(o.v);
	dobj_de_free(de);
	return rc < 0 ? rc : DOBJ_OK;
}

int dobj_val_decode(const void *blob, size_t len, dobj_val **out)
{
	objs o = { 0 };

	return decode_top(blob, len, &o, out);
}

int dobj__val_decode_refs(const void *blob, size_t len,
	dobj_val *(*resolve)(void *data, const dobj__ref *ref), void *data, dobj_val **out)
{
	objs o = { 0 };

	o.resolve = resolve;
	o.data = data;
	return decode_top(blob, len, &o, out);
}
