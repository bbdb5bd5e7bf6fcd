/*
 * Native classes: C functions called through libffi.
 *
 * Registration parses each method's signature once and prepares its call
 * interface (ffi_cif); a call converts the dobj_val arguments to C values
 * with range and type checks, calls through libffi, and converts the result
 * back.  Nothing is ever called with arguments that do not match.
 */
#include <dlfcn.h>
#include <ffi.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef enum ntype {
	T_VOID, T_BOOL, T_I8, T_I16, T_I32, T_I64, T_U8, T_U16, T_U32, T_U64,
	T_F64, T_STR, T_BYTES, T_VALUE
} ntype;

static const struct {
	const char *name;
	ntype type;
} type_names[] = {
	{ "void", T_VOID }, { "bool", T_BOOL }, { "i8", T_I8 }, { "i16", T_I16 },
	{ "i32", T_I32 }, { "i64", T_I64 }, { "u8", T_U8 }, { "u16", T_U16 },
	{ "u32", T_U32 }, { "u64", T_U64 }, { "f64", T_F64 }, { "double", T_F64 },
	{ "str", T_STR }, { "bytes", T_BYTES }, { "value", T_VALUE },
};

#define MAX_ARGS 16

/* dobj_bytes returned by value: a two-field struct for libffi. */
static ffi_type *bytes_elements[] = { &ffi_type_pointer, NULL, NULL };
static ffi_type bytes_type = { 0, 0, FFI_TYPE_STRUCT, bytes_elements };

typedef struct method {
	char *name;
	void (*fn)(void);
	ntype ret;
	ntype args[MAX_ARGS];
	size_t nargs;
	ffi_cif cif;
	ffi_type *ffi_args[MAX_ARGS + 1];
} method;

struct dobj_native_class {
	char *name;
	dobj_native_class_def def;
	method *methods;
	size_t nmethods;
	dobj_native_class *next; /* registry of a library */
};

struct dobj_native_registry {
	dobj_native_class *classes;
	int failed;
};

struct dobj_native_ctx {
	dobj_native_class *nc;
	dobj_obj *obj;
	int raised;
	char message[512];
	char hex[DOBJ_ID_HEX_LEN + 1];
};

static ffi_type *ffi_of(ntype t)
{
	switch (t) {
	case T_VOID: return &ffi_type_void;
	case T_BOOL: return &ffi_type_sint;
	case T_I8: return &ffi_type_sint8;
	case T_I16: return &ffi_type_sint16;
	case T_I32: return &ffi_type_sint32;
	case T_I64: return &ffi_type_sint64;
	case T_U8: return &ffi_type_uint8;
	case T_U16: return &ffi_type_uint16;
	case T_U32: return &ffi_type_uint32;
	case T_U64: return &ffi_type_uint64;
	case T_F64: return &ffi_type_double;
	case T_BYTES: return &ffi_type_pointer; /* arguments: const dobj_bytes * */
	default: return &ffi_type_pointer;
	}
}

/* Parse one type name at *p (up to ',' or ')'). */
static int parse_type(const char **p, ntype *out)
{
	size_t i, n = strcspn(*p, ",()");

	for (i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++) {
		if (strlen(type_names[i].name) == n && strncmp(*p, type_names[i].name, n) == 0) {
			*out = type_names[i].type;
			*p += n;
			return DOBJ_OK;
		}
	}
	return dobj_error_set(DOBJ_EARG, "unknown type '%.*s'", (int)(n > 40 ? 40 : n), *p);
}

static int parse_signature(const char *cls, method *m, const char *sig)
{
	const char *p = sig;
	int rc = 0;

	if (!sig)
		return dobj_error_set(DOBJ_EARG, "%s.%s has no signature", cls, m->name);
	if ((rc = parse_type(&p, &m->ret)) < 0 || *p != '(')
		goto bad;
	p++;
	m->nargs = 0;
	if (*p == ')') {
		p++;
	} else {
		for (;;) {
			if (m->nargs == MAX_ARGS) {
				return dobj_error_set(DOBJ_EARG, "%s.%s: at most %d arguments", cls,
					m->name, MAX_ARGS);
			}
			if ((rc = parse_type(&p, &m->args[m->nargs])) < 0)
				goto bad;
			if (m->args[m->nargs] == T_VOID) {
				return dobj_error_set(DOBJ_EARG, "%s.%s: void is not an argument type",
					cls, m->name);
			}
			m->nargs++;
			if (*p == ',') {
				p++;
				continue;
			}
			if (*p == ')') {
				p++;
				break;
			}
			goto bad;
		}
	}
	if (*p != '\0')
		goto bad;
	return DOBJ_OK;
bad: {
		char why[128];
		snprintf(why, sizeof(why), "%s", rc < 0 ? dobj_error_last() : "syntax error");
		return dobj_error_set(DOBJ_EARG,
			"bad signature \"%s\" for %s.%s (%s; expected e.g. \"i64(i64,str)\")",
			sig, cls, m->name, why);
	}
}

static void class_free(dobj_native_class *nc)
{
	size_t i;

	if (!nc)
		return;
	for (i = 0; i < nc->nmethods; i++)
		free(nc->methods[i].name);
	free(nc->methods);
	free(nc->name);
	free(nc);
}

int dobj_native_define(dobj_native_class **out, const dobj_native_class_def *def)
{
	dobj_native_class *nc;
	size_t i, j;
	int rc;

	*out = NULL;
	if (!def || def->abi != DOBJ_NATIVE_ABI)
		return dobj_error_set(DOBJ_EARG, "native class definition has ABI %u, this core has %d",
			def ? def->abi : 0, DOBJ_NATIVE_ABI);
	if (!def->name || !def->name[0])
		return dobj_error_set(DOBJ_EARG, "a native class needs a name");
	if (def->nmethods && !def->methods)
		return dobj_error_set(DOBJ_EARG, "%s: methods is NULL", def->name);
	bytes_elements[1] = sizeof(size_t) == 8 ? &ffi_type_uint64 : &ffi_type_uint32;
	nc = calloc(1, sizeof(*nc));
	if (!nc || !(nc->name = strdup(def->name)) ||
	    (def->nmethods && !(nc->methods = calloc(def->nmethods, sizeof(*nc->methods))))) {
		class_free(nc);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	nc->def = *def;
	nc->def.name = nc->name;
	nc->def.methods = NULL;
	for (i = 0; i < def->nmethods; i++) {
		const dobj_native_method *src = &def->methods[i];
		method *m = &nc->methods[i];

		if (!src->name || !src->name[0]) {
			rc = dobj_error_set(DOBJ_EARG, "%s: method %zu has no name", def->name, i);
			goto fail;
		}
		if (!src->fn) {
			rc = dobj_error_set(DOBJ_EARG, "%s.%s: the function is NULL", def->name, src->name);
			goto fail;
		}
		for (j = 0; j < i; j++) {
			if (strcmp(nc->methods[j].name, src->name) == 0) {
				rc = dobj_error_set(DOBJ_EARG, "%s.%s is defined twice", def->name, src->name);
				goto fail;
			}
		}
		if (!strcmp(src->name, "fetch") || !strcmp(src->name, "alarm") || src->name[0] == '_') {
			rc = dobj_error_set(DOBJ_EARG, "%s.%s: methods cannot be named fetch or alarm or "
				"start with '_'", def->name, src->name);
			goto fail;
		}
		m->name = strdup(src->name);
		if (!m->name) {
			rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
			goto fail;
		}
		nc->nmethods = i + 1;
		m->fn = src->fn;
		if ((rc = parse_signature(def->name, m, src->signature)) < 0)
			goto fail;
		m->ffi_args[0] = &ffi_type_pointer; /* the context */
		for (j = 0; j < m->nargs; j++)
			m->ffi_args[j + 1] = ffi_of(m->args[j]);
		if (ffi_prep_cif(&m->cif, FFI_DEFAULT_ABI, (unsigned)m->nargs + 1,
			    m->ret == T_BYTES ? &bytes_type : ffi_of(m->ret), m->ffi_args) != FFI_OK) {
			rc = dobj_error_set(DOBJ_EARG, "%s.%s: libffi cannot prepare this signature",
				def->name, src->name);
			goto fail;
		}
	}
	nc->nmethods = def->nmethods;
	*out = nc;
	return DOBJ_OK;
fail:
	class_free(nc);
	return rc;
}

void dobj_native_free(dobj_native_class *nc)
{
	class_free(nc);
}

const char *dobj_native_class_name(const dobj_native_class *nc)
{
	return nc->name;
}

static const method *find_method(const dobj_native_class *nc, const char *name)
{
	size_t i;

	for (i = 0; name && i < nc->nmethods; i++)
		if (strcmp(nc->methods[i].name, name) == 0)
			return &nc->methods[i];
	return NULL;
}

int dobj_native_has_method(const dobj_native_class *nc, const char *name)
{
	return find_method(nc, name) != NULL;
}

/* ------------------------------------------------------------------ calls */

typedef union slot {
	int b;
	int8_t i8;
	int16_t i16;
	int32_t i32;
	int64_t i64;
	uint8_t u8;
	uint16_t u16;
	uint32_t u32;
	uint64_t u64;
	double d;
	const void *p;
} slot;

static const char *const type_label[] = {
	"void", "a boolean", "an integer in [-128, 127]", "an integer in [-32768, 32767]",
	"an integer in [-2^31, 2^31-1]", "an integer in [-2^63, 2^63-1]", "an integer in [0, 255]",
	"an integer in [0, 65535]", "an integer in [0, 2^32-1]", "an integer in [0, 2^64-1]",
	"a number", "a string", "bytes", "a value",
};

static int convert_arg(const method *m, size_t i, const dobj_val *v, slot *s, dobj_bytes *b)
{
	ntype t = m->args[i];
	int64_t x;
	uint64_t u;

	switch (t) {
	case T_BOOL:
		if (dobj_val_type_of(v) != DOBJ_VAL_BOOL)
			goto bad;
		s->b = dobj_val_get_bool(v);
		return DOBJ_OK;
	case T_I8: case T_I16: case T_I32: case T_I64:
		if (dobj_val_to_i64(v, &x) < 0)
			goto bad;
		if ((t == T_I8 && (x < INT8_MIN || x > INT8_MAX)) ||
		    (t == T_I16 && (x < INT16_MIN || x > INT16_MAX)) ||
		    (t == T_I32 && (x < INT32_MIN || x > INT32_MAX)))
			goto bad;
		if (t == T_I8) s->i8 = (int8_t)x;
		else if (t == T_I16) s->i16 = (int16_t)x;
		else if (t == T_I32) s->i32 = (int32_t)x;
		else s->i64 = x;
		return DOBJ_OK;
	case T_U8: case T_U16: case T_U32: case T_U64:
		if (dobj_val_to_u64(v, &u) < 0)
			goto bad;
		if ((t == T_U8 && u > UINT8_MAX) || (t == T_U16 && u > UINT16_MAX) ||
		    (t == T_U32 && u > UINT32_MAX))
			goto bad;
		if (t == T_U8) s->u8 = (uint8_t)u;
		else if (t == T_U16) s->u16 = (uint16_t)u;
		else if (t == T_U32) s->u32 = (uint32_t)u;
		else s->u64 = u;
		return DOBJ_OK;
	case T_F64:
		if (dobj_val_type_of(v) != DOBJ_VAL_NUMBER)
			goto bad;
		s->d = dobj_val_get_number(v);
		return DOBJ_OK;
	case T_STR: {
		size_t len;
		const char *p = dobj_val_get_string(v, &len);
		if (!p)
			goto bad;
		if (memchr(p, '\0', len))
			return dobj_error_set(DOBJ_EARG, "argument %zu of %s() contains a NUL byte, "
				"which a C string cannot hold", i + 1, m->name);
		s->p = p;
		return DOBJ_OK;
	}
	case T_BYTES:
		b->data = dobj_val_get_bytes(v, &b->len);
		if (!b->data)
			goto bad;
		s->p = b;
		return DOBJ_OK;
	case T_VALUE:
		s->p = v;
		return DOBJ_OK;
	default:
		break;
	}
bad:
	return dobj_error_set(DOBJ_EARG, "argument %zu of %s() must be %s, got %s", i + 1,
		m->name, type_label[t], dobj_val_type_name(v));
}

static dobj_val *convert_ret(const method *m, const void *r)
{
	const slot *s = r;
	const ffi_arg *a = r;
	const ffi_sarg *sa = r;

	switch (m->ret) {
	case T_VOID: return dobj_val_undefined();
	case T_BOOL: return dobj_val_bool((int)*sa != 0);
	/* Integers by the integer rule (beyond 2^53 a BigInt), doubles as
	 * floats: an f64 result of 3.0 is 3.0 in Python and Lua. */
	case T_I8: case T_I16: case T_I32: return dobj_val_integer((int32_t)*sa);
	case T_U8: case T_U16: case T_U32: return dobj_val_integer((uint32_t)*a);
	case T_I64: return dobj_val_integer(s->i64);
	case T_U64:
		if (s->u64 > (uint64_t)DOBJ_VALUE_INTEGER_MAX)
			return dobj_val_bigint_u64(s->u64);
		return dobj_val_integer((int64_t)s->u64);
	case T_F64: return dobj_val_double(s->d);
	case T_STR: return s->p ? dobj_val_string(s->p, strlen(s->p)) : dobj_val_null();
	case T_BYTES: {
		const dobj_bytes *b = r;
		if (!b->data && b->len)
			return dobj_val_null();
		return dobj_val_bytes(b->data, b->len);
	}
	case T_VALUE:
		return s->p ? (dobj_val *)s->p : dobj_val_undefined(); /* ownership passes */
	}
	return NULL;
}

/* Check arity and every argument against the method's signature. */
static int check_args(const dobj_native_class *nc, const method *m, const dobj_val *args)
{
	slot sl;
	dobj_bytes b;
	size_t n = dobj_val_len(args), i;
	int rc;

	if (dobj_val_type_of(args) != DOBJ_VAL_ARRAY)
		return dobj_error_set(DOBJ_EARG, "the arguments of %s() must be an array", m->name);
	if (n != m->nargs)
		return dobj_error_set(DOBJ_EARG, "%s.%s() expects %zu argument%s, got %zu",
			nc->name, m->name, m->nargs, m->nargs == 1 ? "" : "s", n);
	for (i = 0; i < n; i++)
		if ((rc = convert_arg(m, i, dobj_val_at(args, i), &sl, &b)) < 0)
			return rc;
	return DOBJ_OK;
}

int dobj_native_check(const dobj_ns *ns, const char *name, const dobj_val *args)
{
	const dobj_native_class *nc;
	const method *m;

	if (!dobj_ns_is_native(ns))
		return DOBJ_OK;
	nc = dobj_ns_class_data(ns);
	m = find_method(nc, name);
	if (!m)
		return dobj_rpc_no_method(name, name ? strlen(name) : 0);
	return check_args(nc, m, args);
}

static int invoke(dobj_native_ctx *ctx, const method *m, const dobj_val *args, dobj_val **out)
{
	slot slots[MAX_ARGS + 1];
	dobj_bytes bytes[MAX_ARGS];
	void *avalues[MAX_ARGS + 1];
	union { ffi_arg a; double d; void *p; dobj_bytes b; uint64_t u; } ret;
	size_t n = dobj_val_len(args), i;
	int rc;

	*out = NULL;
	if ((rc = check_args(ctx->nc, m, args)) < 0)
		return rc;
	slots[0].p = ctx;
	avalues[0] = &slots[0];
	for (i = 0; i < n; i++) {
		if ((rc = convert_arg(m, i, dobj_val_at(args, i), &slots[i + 1], &bytes[i])) < 0)
			return rc;
		avalues[i + 1] = &slots[i + 1];
	}
	memset(&ret, 0, sizeof(ret));
	ffi_call((ffi_cif *)&m->cif, m->fn, &ret, avalues);
	if (ctx->raised) {
		if (m->ret == T_VALUE)
			dobj_val_free(ret.p);
		return dobj_error_set(DOBJ_EUSER, "%s", ctx->message);
	}
	*out = convert_ret(m, &ret);
	return *out ? DOBJ_OK : DOBJ_ENOMEM;
}

/* --------------------------------------------------- the class in the core */

static void msg_free(void *m) { dobj_msg_free(m); }
static void val_free(void *v) { dobj_val_free(v); }

static void ctx_init(dobj_native_ctx *ctx, dobj_native_class *nc, dobj_obj *obj)
{
	ctx->nc = nc;
	ctx->obj = obj;
	ctx->raised = 0;
	ctx->message[0] = '\0';
	dobj_id_to_hex(dobj_obj_id(obj), ctx->hex);
	ctx->hex[DOBJ_ID_HEX_LEN] = '\0';
}

static int native_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	dobj_native_class *nc = data;
	dobj_native_ctx ctx;

	(void)error;
	*instance = NULL;
	if (!nc->def.create)
		return DOBJ_OK;
	ctx_init(&ctx, nc, obj);
	*instance = nc->def.create(&ctx);
	if (ctx.raised) {
		if (*instance && nc->def.destroy)
			nc->def.destroy(*instance);
		*instance = NULL;
		return dobj_error_set(DOBJ_EUSER, "%s", ctx.message);
	}
	return DOBJ_OK;
}

static void native_destroy(void *instance, void *data)
{
	dobj_native_class *nc = data;

	if (nc->def.destroy)
		nc->def.destroy(instance);
}

static int native_step(dobj_task *t, void *data)
{
	dobj_native_class *nc = data;
	dobj_native_ctx ctx;
	int rc;

	ctx_init(&ctx, nc, dobj_task_obj(t));
	switch (dobj_task_call_kind(t)) {
	case DOBJ_CALL_FETCH: {
		dobj_msg *res = NULL;
		rc = nc->def.fetch(&ctx, dobj_task_request(t), &res);
		if (ctx.raised || rc < 0 || !res) {
			dobj_msg_free(res);
			dobj_task_raise(t, DOBJ_EUSER, ctx.raised ? ctx.message :
				"the native fetch handler failed without a message", NULL);
			return DOBJ_OK;
		}
		dobj_task_return_value(t, res, msg_free);
		return DOBJ_OK;
	}
	case DOBJ_CALL_RPC: {
		const method *m = find_method(nc, dobj_task_method(t));
		dobj_val *result;
		if (!m)
			return dobj_rpc_no_method(dobj_task_method(t), strlen(dobj_task_method(t)));
		rc = invoke(&ctx, m, dobj_task_request(t), &result);
		if (rc < 0) {
			dobj_task_raise(t, rc, dobj_error_last(), NULL);
			return DOBJ_OK;
		}
		dobj_task_return_value(t, result, val_free);
		return DOBJ_OK;
	}
	case DOBJ_CALL_ALARM: {
		double when = 0;
		int retry = 0;
		dobj_task_alarm_info(t, &when, &retry);
		rc = nc->def.alarm(&ctx, when, retry);
		if (ctx.raised || rc < 0) {
			dobj_task_raise(t, DOBJ_EUSER, ctx.raised ? ctx.message : "the alarm handler failed",
				NULL);
			return DOBJ_OK;
		}
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	}
	case DOBJ_CALL_HOST: /* refused by dobj_stub_run */
	case DOBJ_CALL_WS_MESSAGE: /* native classes have no WebSocket handlers */
	case DOBJ_CALL_WS_CLOSE:
	case DOBJ_CALL_WS_ERROR:
		break;
	}
	return dobj_error_set(DOBJ_EARG, "unknown call kind");
}

void dobj_native_class_of(const dobj_native_class *nc, dobj_class *out)
{
	memset(out, 0, sizeof(*out));
	out->name = nc->name;
	out->flags = DOBJ_CLASS_NATIVE | (nc->def.fetch ? DOBJ_CLASS_FETCH : 0) |
		(nc->def.alarm ? DOBJ_CLASS_ALARM : 0);
	out->data = (void *)nc;
	out->construct = native_construct;
	out->step = native_step;
	out->destroy = native_destroy;
}

int dobj_class_is_native(const dobj_class *klass)
{
	return klass && (klass->flags & DOBJ_CLASS_NATIVE);
}

int dobj_ns_is_native(const dobj_ns *ns)
{
	return dobj_class_is_native(&ns->klass);
}

/* ----------------------------------------------------------- the API table */

static int api_raise(dobj_native_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ctx->message, sizeof(ctx->message), fmt ? fmt : "error", ap);
	va_end(ap);
	ctx->raised = 1;
	return DOBJ_EUSER;
}

static void *api_instance(dobj_native_ctx *ctx) { return dobj_obj_instance(ctx->obj); }
static const char *api_id(dobj_native_ctx *ctx) { return ctx->hex; }
static const char *api_name(dobj_native_ctx *ctx, size_t *len) { return dobj_obj_name(ctx->obj, len); }
static double api_now(dobj_native_ctx *ctx) { return dobj__wall_ms(ctx->obj->ns->rt); }

static int storage_of(dobj_native_ctx *ctx, dobj_storage **st)
{
	int rc = dobj_obj_storage(ctx->obj, st);

	if (rc < 0)
		api_raise(ctx, "%s", dobj_error_last());
	return rc;
}

static int api_get(dobj_native_ctx *ctx, const char *key, size_t klen, dobj_val **out)
{
	dobj_storage *st;
	const void *blob;
	size_t len;
	int rc;

	*out = NULL;
	if ((rc = storage_of(ctx, &st)) < 0)
		return rc;
	rc = dobj_kv_get(st, key, klen, &blob, &len);
	if (rc == 1 && dobj_val_decode(blob, len, out) < 0)
		rc = dobj_error_last_code();
	if (rc < 0)
		api_raise(ctx, "%s", dobj_error_last());
	return rc;
}

static int api_put(dobj_native_ctx *ctx, const char *key, size_t klen, const dobj_val *v)
{
	dobj_storage *st;
	unsigned char *blob = NULL;
	size_t len;
	int rc;

	if ((rc = storage_of(ctx, &st)) < 0)
		return rc;
	if (!v) {
		rc = dobj_error_set(DOBJ_EARG, DOBJ_MSG_PUT_UNDEFINED);
	} else if ((rc = dobj_val_encode(v, &blob, &len)) >= 0) {
		rc = dobj_kv_put(st, key, klen, blob, len);
		free(blob);
	}
	if (rc < 0)
		api_raise(ctx, "%s", dobj_error_last());
	return rc;
}

static int api_del(dobj_native_ctx *ctx, const char *key, size_t klen)
{
	dobj_storage *st;
	int rc;

	if ((rc = storage_of(ctx, &st)) < 0)
		return rc;
	if ((rc = dobj_kv_delete(st, key, klen)) < 0)
		api_raise(ctx, "%s", dobj_error_last());
	return rc;
}

static int api_set_alarm(dobj_native_ctx *ctx, double when)
{
	dobj_storage *st;
	int rc;

	if ((rc = storage_of(ctx, &st)) < 0)
		return rc;
	if ((rc = dobj_alarm_set(st, when)) < 0)
		api_raise(ctx, "%s", dobj_error_last());
	return rc;
}

static int api_add_class(dobj_native_registry *reg, const dobj_native_class_def *def)
{
	dobj_native_class *nc;
	int rc = dobj_native_define(&nc, def);

	if (rc < 0) {
		reg->failed = 1;
		return rc;
	}
	nc->next = reg->classes;
	reg->classes = nc;
	return DOBJ_OK;
}

static dobj_val *api_val_null(void) { return dobj_val_null(); }
static dobj_val *api_val_array(void) { return dobj_val_array(); }
static dobj_val *api_val_object(void) { return dobj_val_object(); }
static dobj_val_type api_val_type(const dobj_val *v) { return dobj_val_type_of(v); }

static const dobj_native_api api = {
	DOBJ_NATIVE_ABI,
	sizeof(dobj_native_api),
	api_add_class,
	api_raise,
	api_instance,
	api_id,
	api_name,
	api_now,
	api_get,
	api_put,
	api_del,
	api_set_alarm,
	api_val_null,
	dobj_val_bool,
	dobj_val_number,
	dobj_val_string,
	dobj_val_bytes,
	api_val_array,
	api_val_object,
	dobj_val_push,
	dobj_val_put,
	dobj_val_free,
	api_val_type,
	dobj_val_get_number,
	dobj_val_get_string,
	dobj_val_len,
	dobj_val_at,
	dobj_val_get,
	dobj_msg_new_response,
	dobj_msg_set_header,
	dobj_msg_header,
	dobj_val_ref,
	dobj_val_key_at,
	dobj_val_map_key_at,
	dobj_val_double,
	dobj_val_integer,
	dobj_val_is_integer,
};

const dobj_native_api *dobj_native_api_get(void)
{
	return &api;
}

/* ---------------------------------------------------------------- loading */

/* Libraries are loaded once per path and kept: classes from them may be
 * bound by any runtime for the life of the process. */
typedef struct library {
	char *path;
	dobj_native_registry reg;
	struct library *next;
} library;

static library *libraries;

int dobj_native_load(dobj_native_class **out, const char *path, const char *name)
{
	library *lib;
	dobj_native_class *nc;
	dobj_native_init_fn init;
	void *handle;

	*out = NULL;
	if (!path || !name)
		return dobj_error_set(DOBJ_EARG, "bind_native needs a library path and a class name");
	for (lib = libraries; lib; lib = lib->next)
		if (strcmp(lib->path, path) == 0)
			break;
	if (!lib) {
		handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (!handle)
			return dobj_error_set(DOBJ_EARG, "cannot load native library %s: %s", path, dlerror());
		*(void **)&init = dlsym(handle, DOBJ_NATIVE_INIT_SYMBOL);
		if (!init) {
			dlclose(handle);
			return dobj_error_set(DOBJ_EARG, "%s does not export %s(): not a dobj native library",
				path, DOBJ_NATIVE_INIT_SYMBOL);
		}
		lib = calloc(1, sizeof(*lib));
		if (!lib || !(lib->path = strdup(path))) {
			free(lib);
			dlclose(handle);
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		}
		dobj__error_clear();
		if (init(&api, &lib->reg) < 0 || lib->reg.failed) {
			char msg[400];
			snprintf(msg, sizeof(msg), "%s", dobj_error_last()[0] ? dobj_error_last() :
				DOBJ_NATIVE_INIT_SYMBOL "() failed without saying why");
			while ((nc = lib->reg.classes)) {
				lib->reg.classes = nc->next;
				class_free(nc);
			}
			free(lib->path);
			free(lib);
			/* The library stays mapped: its init may have left state behind. */
			return dobj_error_set(DOBJ_EARG, "%s: registering its classes failed: %s", path, msg);
		}
		lib->next = libraries;
		libraries = lib;
	}
	for (nc = lib->reg.classes; nc; nc = nc->next) {
		if (strcmp(nc->name, name) == 0) {
			*out = nc;
			return DOBJ_OK;
		}
	}
	return dobj_error_set(DOBJ_EARG, "%s has no native class named %s", path, name);
}
