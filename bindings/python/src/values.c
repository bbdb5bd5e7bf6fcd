/*
 * values.c — the Python value mapping (see values.h and docs/python.md).
 *
 * Blobs go through the core's streaming codec, so a value is written in one
 * pass over the Python objects and read in one pass over the tokens, with
 * no intermediate tree.  dobj_val conversions (RPC) follow the same rules.
 */
#include "values.h"

#include <datetime.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------- pointer table */

/* Identity -> (object id | value), for shared parts and cycles.  Keys are
 * kept alive by the caller (the encoder holds a reference to each). */
typedef struct pent {
	const void *k;
	void *v;
	uint32_t id;
	int open; /* dobj_val: still being built (a cycle if met again) */
	uint64_t cost; /* hashable(): items converted under k */
} pent;

typedef struct ptab {
	pent *e;
	size_t cap, n;
} ptab;

static size_t ptr_hash(const void *p)
{
	uintptr_t x = (uintptr_t)p;
	x ^= x >> 17;
	x *= (uintptr_t)0x9E3779B97F4A7C15ull;
	return (size_t)(x ^ (x >> 29));
}

static pent *ptab_find(ptab *t, const void *k)
{
	size_t i;

	if (!t->cap)
		return NULL;
	for (i = ptr_hash(k) & (t->cap - 1); t->e[i].k; i = (i + 1) & (t->cap - 1))
		if (t->e[i].k == k)
			return &t->e[i];
	return NULL;
}

/* Add k (absent); NULL with MemoryError. */
static pent *ptab_add(ptab *t, const void *k)
{
	size_t i;

	if ((t->n + 1) * 2 > t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16, j;
		pent *e = PyMem_Calloc(cap, sizeof(*e));
		if (!e) {
			PyErr_NoMemory();
			return NULL;
		}
		for (j = 0; j < t->cap; j++) {
			if (!t->e[j].k)
				continue;
			for (i = ptr_hash(t->e[j].k) & (cap - 1); e[i].k; i = (i + 1) & (cap - 1))
				;
			e[i] = t->e[j];
		}
		PyMem_Free(t->e);
		t->e = e;
		t->cap = cap;
	}
	for (i = ptr_hash(k) & (t->cap - 1); t->e[i].k; i = (i + 1) & (t->cap - 1))
		;
	t->e[i].k = k;
	t->n++;
	return &t->e[i];
}

/* --------------------------------------------------------------- state */

int dobjpy_values_init(dobjpy_values *v, PyObject *error)
{
	PyObject *dt;

	PyDateTime_IMPORT;
	if (!PyDateTimeAPI)
		return -1;
	v->error = Py_NewRef(error);
	dt = PyImport_ImportModule("datetime");
	if (!dt)
		return -1;
	v->utc = PyObject_GetAttrString(dt, "timezone");
	Py_DECREF(dt);
	if (!v->utc)
		return -1;
	Py_SETREF(v->utc, PyObject_GetAttrString(v->utc, "utc"));
	if (!v->utc)
		return -1;
	v->from_bytes = PyObject_GetAttrString((PyObject *)&PyLong_Type, "from_bytes");
	if (!v->from_bytes)
		return -1;
	return 0;
}

int dobjpy_values_traverse(dobjpy_values *v, visitproc visit, void *arg)
{
	Py_VISIT(v->error);
	Py_VISIT(v->utc);
	Py_VISIT(v->from_bytes);
	return 0;
}

void dobjpy_values_clear(dobjpy_values *v)
{
	Py_CLEAR(v->error);
	Py_CLEAR(v->utc);
	Py_CLEAR(v->from_bytes);
	if (!v->ser_busy) {
		dobj_ser_free(v->ser);
		v->ser = NULL;
	}
	if (!v->de_busy) {
		dobj_de_free(v->de);
		v->de = NULL;
	}
}

int dobjpy_is_datetime(PyObject *o)
{
	return PyDateTime_Check(o);
}

/* --------------------------------------------------------------- dates */

/* Days since 1970-01-01 of a proleptic Gregorian date (era arithmetic: a
 * 400-year era has 146097 days; months counted from March so that the leap
 * day comes last). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil. */
static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

int dobjpy_datetime_ms(dobjpy_values *v, PyObject *dt, double *ms)
{
	int64_t us;
	PyObject *tz, *off;

	(void)v;
	us = days_from_civil(PyDateTime_GET_YEAR(dt), PyDateTime_GET_MONTH(dt), PyDateTime_GET_DAY(dt));
	us = us * 86400 + PyDateTime_DATE_GET_HOUR(dt) * 3600 + PyDateTime_DATE_GET_MINUTE(dt) * 60 +
		PyDateTime_DATE_GET_SECOND(dt);
	us = us * 1000000 + PyDateTime_DATE_GET_MICROSECOND(dt);
	tz = PyDateTime_DATE_GET_TZINFO(dt);
	if (tz != Py_None) {
		/* Aware: subtract the offset (a tzinfo may run Python code). */
		off = PyObject_CallMethod(dt, "utcoffset", NULL);
		if (!off)
			return -1;
		if (PyDelta_Check(off)) {
			us -= ((int64_t)PyDateTime_DELTA_GET_DAYS(off) * 86400 +
				PyDateTime_DELTA_GET_SECONDS(off)) * 1000000 +
				PyDateTime_DELTA_GET_MICROSECONDS(off);
		}
		Py_DECREF(off);
	}
	*ms = (double)us / 1000.0;
	return 0;
}

static PyObject *datetime_from_ms(dobjpy_values *v, double ms)
{
	int64_t us, days, rem, y;
	int m, d;

	if (!(ms == ms) || fabs(ms) > 8.64e15) {
		PyErr_Format(v->error, "cannot read the stored value: an invalid Date has no datetime");
		return NULL;
	}
	{
		/* Whole ms are exact in a double; the fraction carries the µs. */
		double whole = floor(ms);
		us = (int64_t)whole * 1000 + (int64_t)llround((ms - whole) * 1000.0);
	}
	days = us / 86400000000LL;
	rem = us % 86400000000LL;
	if (rem < 0) {
		rem += 86400000000LL;
		days--;
	}
	civil_from_days(days, &y, &m, &d);
	if (y < 1 || y > 9999) {
		/* PyErr_Format has no %f: format the number first. */
		char num[32];
		snprintf(num, sizeof(num), "%.0f", ms);
		PyErr_Format(v->error, "cannot read the stored value: the Date %s ms is outside "
			"the years datetime can hold (1 to 9999)", num);
		return NULL;
	}
	return PyDateTimeAPI->DateTime_FromDateAndTime((int)y, m, d, (int)(rem / 3600000000LL),
		(int)(rem / 60000000LL % 60), (int)(rem / 1000000 % 60), (int)(rem % 1000000), v->utc,
		PyDateTimeAPI->DateTimeType);
}

/* ------------------------------------------------------------- strings */

const char *dobjpy_str_utf8(PyObject *s, Py_ssize_t *n, PyObject **tmp)
{
	const char *p;

	*tmp = NULL;
	/* Never a non-str's memory read as a str's (PyUnicode_IS_ASCII checks
	 * nothing in a release build). */
	if (!PyUnicode_Check(s)) {
		PyErr_Format(PyExc_TypeError, "expected a str, got %.100s", Py_TYPE(s)->tp_name);
		return NULL;
	}
	if (PyUnicode_IS_ASCII(s)) {
		*n = PyUnicode_GET_LENGTH(s);
		return (const char *)PyUnicode_1BYTE_DATA(s);
	}
	p = PyUnicode_AsUTF8AndSize(s, n);
	if (p)
		return p;
	if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
		return NULL;
	PyErr_Clear();
	*tmp = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
	if (!*tmp)
		return NULL;
	*n = PyBytes_GET_SIZE(*tmp);
	return PyBytes_AS_STRING(*tmp);
}

int dobjpy_fs_path(PyObject *o, void *out)
{
	PyObject **res = out, *p;
	int ok = 0;

	if (!o) { /* O& cleanup: a later argument failed */
		Py_CLEAR(*res);
		return 1;
	}
	/* An os.PathLike's str follows the str's rule: os.fspath first. */
	if (!(p = PyOS_FSPath(o)))
		return 0;
	if (PyUnicode_FSConverter(p, res)) {
		ok = Py_CLEANUP_SUPPORTED;
		goto done;
	}
	if (!PyUnicode_Check(p) || !PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
		goto done;
	PyErr_Clear();
	if (!(*res = PyUnicode_AsEncodedString(p, "utf-8", "surrogatepass")))
		goto done;
	if ((size_t)PyBytes_GET_SIZE(*res) != strlen(PyBytes_AS_STRING(*res))) {
		Py_CLEAR(*res);
		PyErr_SetString(PyExc_ValueError, "embedded null byte");
		goto done;
	}
	ok = Py_CLEANUP_SUPPORTED;
done:
	Py_DECREF(p);
	return ok;
}

PyObject *dobjpy_text_str(const char *p, size_t n)
{
	PyObject *s = PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "surrogatepass");

	if (s || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
		return s;
	PyErr_Clear();
	return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "surrogateescape");
}

const char *dobjpy_str_arg(PyObject *o, const char *what, Py_ssize_t *n, PyObject **tmp)
{
	*tmp = NULL;
	if (!PyUnicode_Check(o)) {
		PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what, Py_TYPE(o)->tp_name);
		return NULL;
	}
	return dobjpy_str_utf8(o, n, tmp);
}

static PyObject *utf8_str(const char *p, size_t n)
{
	return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "surrogatepass");
}

/* A big int's little-endian magnitude, as a bytes object. */
static PyObject *int_magnitude(PyObject *o)
{
	PyObject *a, *bits, *b;
	Py_ssize_t nbits;

	a = PyNumber_Absolute(o);
	if (!a)
		return NULL;
	bits = PyObject_CallMethod(a, "bit_length", NULL);
	nbits = bits ? PyLong_AsSsize_t(bits) : -1;
	Py_XDECREF(bits);
	if (nbits < 0) {
		Py_DECREF(a);
		return NULL;
	}
	b = PyObject_CallMethod(a, "to_bytes", "ns", (nbits + 7) / 8, "little");
	Py_DECREF(a);
	return b;
}

static PyObject *int_from_magnitude(dobjpy_values *v, int negative, const unsigned char *mag,
	size_t len)
{
	PyObject *r;

	if (len <= 8) {
		unsigned long long u = 0;
		size_t i;
		for (i = len; i-- > 0;)
			u = (u << 8) | mag[i];
		r = PyLong_FromUnsignedLongLong(u);
	} else {
		PyObject *b = PyBytes_FromStringAndSize((const char *)mag, (Py_ssize_t)len);
		if (!b)
			return NULL;
		r = PyObject_CallFunction(v->from_bytes, "Os", b, "little");
		Py_DECREF(b);
	}
	if (r && negative)
		Py_SETREF(r, PyNumber_Negative(r));
	return r;
}

/* A Map key or Set item must be hashable: lists read back as tuples, sets
 * as frozensets (so {(1, 2): x} and {frozenset()} round-trip).  `memo`
 * (source -> converted, both held) converts each list or set once; *cost
 * gets the number of items converted under o (what hashing it costs each
 * time it is used as a key: Python does not cache a tuple's hash). */
static PyObject *hashable(dobjpy_values *v, PyObject *o, int depth, ptab *memo, uint64_t *cost)
{
	PyObject *r;
	pent *p;
	uint64_t items = 0, sub;

	if (depth > DOBJ_VALUE_MAX_DEPTH) {
		PyErr_SetString(v->error, "cannot read the stored value: a Map key nests too deeply");
		return NULL;
	}
	*cost = 0;
	if (!PyList_CheckExact(o) && !PySet_CheckExact(o))
		return Py_NewRef(o);
	if ((p = ptab_find(memo, o))) {
		*cost = p->cost;
		return Py_NewRef((PyObject *)p->v);
	}
	if (PyList_CheckExact(o)) {
		Py_ssize_t i, n = PyList_GET_SIZE(o);
		r = PyTuple_New(n);
		if (!r)
			return NULL;
		for (i = 0; i < n && i < PyList_GET_SIZE(o); i++) {
			PyObject *x = hashable(v, PyList_GET_ITEM(o, i), depth + 1, memo, &sub);
			if (!x) {
				Py_DECREF(r);
				return NULL;
			}
			PyTuple_SET_ITEM(r, i, x);
			items += 1 + sub;
		}
		for (; i < n; i++) /* cannot shrink (no Python code runs), but be safe */
			PyTuple_SET_ITEM(r, i, Py_NewRef(Py_None));
	} else if (!(r = PyFrozenSet_New(o))) { /* caches its hash: costs nothing again */
		return NULL;
	}
	if (!(p = ptab_add(memo, o))) {
		Py_DECREF(r);
		return NULL;
	}
	p->k = Py_NewRef(o);
	p->v = Py_NewRef(r);
	p->cost = items;
	*cost = items;
	return r;
}

/* Drop a table whose keys and values are both held references. */
static void memo_clear(ptab *t)
{
	size_t i;

	for (i = 0; i < t->cap; i++) {
		if (t->e[i].k) {
			Py_DECREF((PyObject *)t->e[i].k);
			Py_DECREF((PyObject *)t->e[i].v);
		}
	}
	PyMem_Free(t->e);
	t->e = NULL;
	t->cap = t->n = 0;
}

/* ------------------------------------------------------------- encoder */

typedef struct enc {
	dobjpy_values *v;
	dobj_ser *ser;
	ptab seen; /* container -> object id (each key holds a reference) */
	int depth;
} enc;

static int enc_value(enc *e, PyObject *o);

static int ser_fail(int rc)
{
	if (rc == DOBJ_ENOMEM)
		PyErr_NoMemory();
	else
		PyErr_SetString(PyExc_ValueError, dobj_error_last());
	return -1;
}

#define SER(call) do { int rc_ = (call); if (rc_ < 0) return ser_fail(rc_); } while (0)

/* Written before?  Then write a reference (1).  0: not seen. */
static int enc_seen(enc *e, PyObject *o)
{
	pent *p = ptab_find(&e->seen, o);

	if (!p)
		return 0;
	SER(dobj_ser_ref(e->ser, p->id));
	return 1;
}

static int enc_mark(enc *e, PyObject *o, uint32_t id)
{
	pent *p = ptab_add(&e->seen, o);

	if (!p)
		return -1;
	p->id = id;
	Py_INCREF(o);
	return 0;
}

static int enc_str(enc *e, PyObject *s)
{
	Py_ssize_t n = PyUnicode_GET_LENGTH(s);
	PyObject *tmp;
	const char *p;
	int rc;

	switch (PyUnicode_KIND(s)) {
	case PyUnicode_1BYTE_KIND:
		SER(dobj_ser_string_latin1(e->ser, PyUnicode_1BYTE_DATA(s), (size_t)n));
		return 0;
	case PyUnicode_2BYTE_KIND:
		SER(dobj_ser_string_utf16(e->ser, (const uint16_t *)PyUnicode_2BYTE_DATA(s), (size_t)n));
		return 0;
	default:
		p = dobjpy_str_utf8(s, &n, &tmp);
		if (!p)
			return -1;
		rc = dobj_ser_string(e->ser, p, (size_t)n);
		Py_XDECREF(tmp);
		SER(rc);
		return 0;
	}
}

static int enc_int(enc *e, PyObject *o)
{
	int ovf, neg, rc;
	long long x = PyLong_AsLongLongAndOverflow(o, &ovf);
	PyObject *mag;

	if (x == -1 && PyErr_Occurred())
		return -1;
	if (!ovf) {
		SER(dobj_ser_integer(e->ser, (int64_t)x)); /* the core's integer rule */
		return 0;
	}
	neg = ovf < 0;
	mag = int_magnitude(o);
	if (!mag)
		return -1;
	rc = dobj_ser_bigint(e->ser, neg, (const unsigned char *)PyBytes_AS_STRING(mag),
		(size_t)PyBytes_GET_SIZE(mag));
	Py_DECREF(mag);
	SER(rc);
	return 0;
}

static int enc_enter(enc *e)
{
	if (++e->depth > DOBJ_VALUE_MAX_DEPTH) {
		PyErr_Format(PyExc_ValueError, "cannot store a value nested deeper than %d containers",
			DOBJ_VALUE_MAX_DEPTH);
		return -1;
	}
	return 0;
}

static int enc_seq(enc *e, PyObject *o)
{
	Py_ssize_t i, n = PySequence_Fast_GET_SIZE(o);
	uint32_t id;

	if (n > (Py_ssize_t)UINT32_MAX - 1) {
		PyErr_SetString(PyExc_ValueError, "cannot store a list longer than 2^32 - 2 items");
		return -1;
	}
	SER(dobj_ser_array_begin(e->ser, (uint32_t)n, &id));
	if (enc_mark(e, o, id) < 0)
		return -1;
	for (i = 0; i < n; i++) {
		PyObject *item;
		int rc;
		/* Python code (a tzinfo) may shrink a list while it is written. */
		if (i >= PySequence_Fast_GET_SIZE(o)) {
			PyErr_SetString(PyExc_RuntimeError, "a list changed size while it was stored");
			return -1;
		}
		item = Py_NewRef(PySequence_Fast_GET_ITEM(o, i));
		rc = enc_value(e, item);
		Py_DECREF(item);
		if (rc < 0)
			return -1;
	}
	SER(dobj_ser_array_end(e->ser));
	return 0;
}

/*
 * A dict written as a Map even when its keys are all str: a subclass whose
 * type says `_dobj_js_map = True` (dobj.workers' JsMap, what to_js makes of
 * a dict, as Pyodide makes a Map).  Plain dicts never look.  -1 on error.
 */
static int dict_is_js_map(PyObject *o)
{
	PyObject *flag;
	int r;

	if (PyDict_CheckExact(o))
		return 0;
	flag = PyObject_GetAttrString((PyObject *)Py_TYPE(o), "_dobj_js_map");
	if (!flag) {
		if (!PyErr_ExceptionMatches(PyExc_AttributeError))
			return -1;
		PyErr_Clear();
		return 0;
	}
	r = PyObject_IsTrue(flag);
	Py_DECREF(flag);
	return r;
}

static int enc_dict(enc *e, PyObject *o)
{
	/* Writing a value may run Python code (a tzinfo) that changes the dict:
	 * what is written is a snapshot of its items, holding their references. */
	PyObject *items = PyDict_Items(o), *k, *val;
	Py_ssize_t i, n;
	int all_str = 1, rc = 0;
	uint32_t id;

	if (!items)
		return -1;
	if ((rc = dict_is_js_map(o)) != 0) {
		if (rc < 0) {
			Py_DECREF(items);
			return -1;
		}
		all_str = 0;
	}
	rc = 0;
	n = PyList_GET_SIZE(items);
	for (i = 0; i < n && all_str; i++)
		all_str = PyUnicode_Check(PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0));
	rc = all_str ? dobj_ser_object_begin(e->ser, &id) : dobj_ser_map_begin(e->ser, &id);
	rc = rc < 0 ? ser_fail(rc) : enc_mark(e, o, id);
	for (i = 0; rc == 0 && i < n; i++) {
		k = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
		val = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
		if (all_str) {
			PyObject *tmp;
			Py_ssize_t kn;
			const char *kp = dobjpy_str_utf8(k, &kn, &tmp);
			if (!kp) {
				rc = -1;
			} else {
				int r2 = dobj_ser_key(e->ser, kp, (size_t)kn);
				Py_XDECREF(tmp);
				if (r2 < 0)
					rc = ser_fail(r2);
			}
		} else {
			rc = enc_value(e, k);
		}
		if (rc == 0)
			rc = enc_value(e, val);
	}
	Py_DECREF(items);
	if (rc < 0)
		return -1;
	SER(all_str ? dobj_ser_object_end(e->ser) : dobj_ser_map_end(e->ser));
	return 0;
}

static int enc_set(enc *e, PyObject *o)
{
	PyObject *items, *it;
	uint32_t id;
	Py_ssize_t i;

	int rc = dobj_ser_set_begin(e->ser, &id);

	if (rc < 0)
		return ser_fail(rc);
	if (enc_mark(e, o, id) < 0 || !(items = PySequence_List(o)))
		return -1;
	for (i = 0; i < PyList_GET_SIZE(items); i++) {
		it = PyList_GET_ITEM(items, i);
		if (enc_value(e, it) < 0) {
			Py_DECREF(items);
			return -1;
		}
	}
	Py_DECREF(items);
	SER(dobj_ser_set_end(e->ser));
	return 0;
}

static int enc_value(enc *e, PyObject *o)
{
	int rc;

	if (o == Py_None) {
		SER(dobj_ser_null(e->ser));
		return 0;
	}
	if (PyBool_Check(o)) {
		SER(dobj_ser_bool(e->ser, o == Py_True));
		return 0;
	}
	if (PyLong_Check(o))
		return enc_int(e, o);
	if (PyFloat_Check(o)) {
		/* Always `N`: 1.0 must read back as a float. */
		SER(dobj_ser_double(e->ser, PyFloat_AS_DOUBLE(o)));
		return 0;
	}
	if (PyUnicode_Check(o))
		return enc_str(e, o);
	if (PyBytes_Check(o)) {
		SER(dobj_ser_bytes(e->ser, PyBytes_AS_STRING(o), (size_t)PyBytes_GET_SIZE(o), NULL));
		return 0;
	}
	if (PyByteArray_Check(o) || PyMemoryView_Check(o)) {
		Py_buffer view;
		if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0)
			return -1;
		rc = dobj_ser_bytes(e->ser, view.buf, (size_t)view.len, NULL);
		PyBuffer_Release(&view);
		SER(rc);
		return 0;
	}
	if (PyDateTime_Check(o)) {
		double ms;
		if (dobjpy_datetime_ms(e->v, o, &ms) < 0)
			return -1;
		SER(dobj_ser_date(e->ser, ms, NULL));
		return 0;
	}
	if (PyList_Check(o) || PyTuple_Check(o) || PyDict_Check(o) || PyAnySet_Check(o)) {
		if ((rc = enc_seen(e, o)) != 0)
			return rc < 0 ? -1 : 0;
		if (enc_enter(e) < 0)
			return -1;
		if (PyDict_Check(o))
			rc = enc_dict(e, o);
		else if (PyAnySet_Check(o))
			rc = enc_set(e, o);
		else
			rc = enc_seq(e, o);
		e->depth--;
		return rc;
	}
	PyErr_Format(PyExc_TypeError, "cannot store a value of type %.100s", Py_TYPE(o)->tp_name);
	return -1;
}

static void enc_release(enc *e)
{
	size_t i;

	for (i = 0; i < e->seen.cap; i++)
		if (e->seen.e[i].k)
			Py_DECREF((PyObject *)e->seen.e[i].k);
	PyMem_Free(e->seen.e);
	e->seen.e = NULL;
	e->seen.cap = e->seen.n = 0;
}

dobj_ser *dobjpy_encode(dobjpy_values *v, PyObject *o, const unsigned char **data, size_t *len)
{
	enc e;
	int rc;

	memset(&e, 0, sizeof(e));
	e.v = v;
	if (!v->ser_busy) {
		if (!v->ser && (rc = dobj_ser_new(&v->ser)) < 0) {
			ser_fail(rc);
			return NULL;
		}
		dobj_ser_reset(v->ser);
		e.ser = v->ser;
		v->ser_busy = 1;
	} else if ((rc = dobj_ser_new(&e.ser)) < 0) {
		ser_fail(rc);
		return NULL;
	}
	rc = enc_value(&e, o);
	enc_release(&e);
	if (rc == 0 && (rc = dobj_ser_finish(e.ser, data, len)) < 0)
		rc = ser_fail(rc);
	if (rc < 0) {
		dobjpy_encode_done(v, e.ser);
		return NULL;
	}
	return e.ser;
}

void dobjpy_encode_done(dobjpy_values *v, dobj_ser *ser)
{
	if (ser == v->ser)
		v->ser_busy = 0;
	else
		dobj_ser_free(ser);
}

PyObject *dobjpy_encode_bytes(dobjpy_values *v, PyObject *o)
{
	const unsigned char *data;
	size_t len;
	dobj_ser *ser = dobjpy_encode(v, o, &data, &len);
	PyObject *b;

	if (!ser)
		return NULL;
	b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
	dobjpy_encode_done(v, ser);
	return b;
}

/* ------------------------------------------------------------- decoder */

typedef struct dec {
	dobjpy_values *v;
	dobj_de *de;
	dobj_tok tok;
	PyObject **ids; /* object id -> value (strong references) */
	size_t nids;
	ptab hashed;    /* hashable() memo */
	/* Items hashed as Map keys and Set items, and the cap: the core's slot
	 * allowance for a blob of this size (DOBJ_VALUE_SLOTS_BASE), so a blob
	 * naming one big array as many keys costs time in proportion to it. */
	uint64_t hash_work, hash_cap;
} dec;

static PyObject *dec_tok(dec *d);

static int dec_fail(dec *d, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	PyErr_Format(d->v->error, "cannot read the stored value: %s", msg);
	return -1;
}

static int dec_next(dec *d)
{
	int rc = dobj_de_next(d->de, &d->tok);

	if (rc == DOBJ_ENOMEM) {
		PyErr_NoMemory();
		return -1;
	}
	if (rc < 0)
		return dec_fail(d, "%s", dobj_error_last());
	return 0;
}

static PyObject *dec_value(dec *d)
{
	return dec_next(d) < 0 ? NULL : dec_tok(d);
}

static int dec_reg(dec *d, uint32_t id, PyObject *o)
{
	if (id >= d->nids) {
		size_t n = d->nids ? d->nids : 8;
		PyObject **ids;
		while (n <= id)
			n *= 2;
		ids = PyMem_Realloc(d->ids, n * sizeof(*ids));
		if (!ids) {
			PyErr_NoMemory();
			return -1;
		}
		memset(ids + d->nids, 0, (n - d->nids) * sizeof(*ids));
		d->ids = ids;
		d->nids = n;
	}
	Py_XSETREF(d->ids[id], Py_NewRef(o));
	return 0;
}

static PyObject *dec_str(dec *d)
{
	dobj_tok *t = &d->tok;

	if (!t->key && t->raw_kind == DOBJ_STR_LATIN1)
		return PyUnicode_DecodeLatin1((const char *)t->raw, (Py_ssize_t)t->raw_len, NULL);
	if (!t->key && t->raw_kind == DOBJ_STR_UTF16LE) {
		int order = -1;
		return PyUnicode_DecodeUTF16((const char *)t->raw, (Py_ssize_t)t->raw_len,
			"surrogatepass", &order);
	}
	return utf8_str(t->str, t->len);
}


static PyObject *dec_array(dec *d)
{
	dobj_tok *t = &d->tok;
	int dense = t->type == DOBJ_TOK_ARRAY;
	dobj_tok_type end = dense ? DOBJ_TOK_ARRAY_END : DOBJ_TOK_SPARSE_END;
	uint32_t length = t->length;
	size_t i = 0, j;
	PyObject *list, *item;

	/* `length` slots (a sparse array's holes are None): the core's reader
	 * caps the lengths of all arrays by the size of the blob. */
	list = PyList_New((Py_ssize_t)length);
	if (!list)
		return NULL;
	for (j = 0; j < length; j++)
		PyList_SET_ITEM(list, j, Py_NewRef(Py_None));
	if (dec_reg(d, t->id, list) < 0)
		goto fail;
	for (;;) {
		if (dec_next(d) < 0)
			goto fail;
		if (t->type == end)
			break;
		if (t->key) {
			size_t at;
			if (!t->is_index) {
				dec_fail(d, "an Array with a named property ('%.*s') has no Python equivalent",
					(int)(t->len > 100 ? 100 : t->len), t->str);
				goto fail;
			}
			at = t->index;
			if (!(item = dec_value(d)) || PyList_SetItem(list, (Py_ssize_t)at, item) < 0)
				goto fail;
		} else if (t->type == DOBJ_TOK_HOLE) {
			i++;
		} else {
			if (!(item = dec_tok(d)) || PyList_SetItem(list, (Py_ssize_t)i++, item) < 0)
				goto fail;
		}
	}
	return list;
fail:
	Py_DECREF(list);
	return NULL;
}

static PyObject *dec_keyed(dec *d)
{
	dobj_tok *t = &d->tok;
	dobj_tok_type type = t->type;
	PyObject *c, *k = NULL, *hk = NULL, *val = NULL;
	int rc;

	c = type == DOBJ_TOK_SET ? PySet_New(NULL) : PyDict_New();
	if (!c)
		return NULL;
	if (dec_reg(d, t->id, c) < 0)
		goto fail;
	for (;;) {
		if (dec_next(d) < 0)
			goto fail;
		if (t->type == DOBJ_TOK_OBJECT_END || t->type == DOBJ_TOK_MAP_END ||
		    t->type == DOBJ_TOK_SET_END)
			break;
		if (type == DOBJ_TOK_OBJECT) {
			if (!(hk = utf8_str(t->str, t->len)))
				goto fail;
		} else {
			uint64_t cost;
			if (!(k = dec_tok(d)) || !(hk = hashable(d->v, k, 0, &d->hashed, &cost)))
				goto fail;
			d->hash_work += cost;
			if (d->hash_work > d->hash_cap) {
				dec_fail(d, "value too large to read: arrays used as Map keys or Set "
					"items add up to more than %llu items in a value of this size",
					(unsigned long long)d->hash_cap);
				goto fail;
			}
			Py_CLEAR(k);
		}
		if (type == DOBJ_TOK_SET) {
			rc = PySet_Add(c, hk);
		} else {
			if (!(val = dec_value(d)))
				goto fail;
			rc = PyDict_SetItem(c, hk, val);
			Py_CLEAR(val);
		}
		if (rc < 0) {
			if (PyErr_ExceptionMatches(PyExc_TypeError)) {
				PyErr_Clear();
				dec_fail(d, "a %s %s of type %.100s cannot be hashed in Python",
					type == DOBJ_TOK_SET ? "Set" : "Map",
					type == DOBJ_TOK_SET ? "item" : "key", Py_TYPE(hk)->tp_name);
			}
			goto fail;
		}
		Py_CLEAR(hk);
	}
	return c;
fail:
	Py_XDECREF(k);
	Py_XDECREF(hk);
	Py_XDECREF(val);
	Py_DECREF(c);
	return NULL;
}

static PyObject *dec_bytes(dec *d, const unsigned char *p, size_t n, uint32_t id)
{
	PyObject *b = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);

	if (b && dec_reg(d, id, b) < 0)
		Py_CLEAR(b);
	return b;
}

static PyObject *dec_tok(dec *d)
{
	dobj_tok *t = &d->tok;
	PyObject *o;

	switch (t->type) {
	case DOBJ_TOK_UNDEFINED:
	case DOBJ_TOK_NULL:
		Py_RETURN_NONE;
	case DOBJ_TOK_TRUE:
		Py_RETURN_TRUE;
	case DOBJ_TOK_FALSE:
		Py_RETURN_FALSE;
	case DOBJ_TOK_INT32:
		return PyLong_FromLong(t->i32);
	case DOBJ_TOK_DOUBLE: /* V8 writes integers past the Smi range as doubles */
		if (dobj_number_is_integer(t->number, 0))
			return PyLong_FromDouble(t->number);
		return PyFloat_FromDouble(t->number);
	case DOBJ_TOK_BIGINT:
		return int_from_magnitude(d->v, t->negative, t->bytes, t->len);
	case DOBJ_TOK_STRING:
		return dec_str(d);
	case DOBJ_TOK_OBJECT:
	case DOBJ_TOK_MAP:
	case DOBJ_TOK_SET:
		return dec_keyed(d);
	case DOBJ_TOK_ARRAY:
	case DOBJ_TOK_SPARSE:
		return dec_array(d);
	case DOBJ_TOK_DATE:
		o = datetime_from_ms(d->v, t->number);
		if (o && dec_reg(d, t->id, o) < 0)
			Py_CLEAR(o);
		return o;
	case DOBJ_TOK_BUFFER:
		return dec_bytes(d, t->bytes, t->len, t->id);
	case DOBJ_TOK_VIEW:
		if (t->buffer_new) {
			o = dec_bytes(d, t->buffer, t->buffer_len, t->buffer_id);
			if (!o)
				return NULL;
			Py_DECREF(o);
		}
		return dec_bytes(d, t->bytes, t->len, t->id);
	case DOBJ_TOK_REF:
		if (t->id >= d->nids || !d->ids[t->id]) {
			dec_fail(d, "a reference to object %u, which has no Python value", t->id);
			return NULL;
		}
		return Py_NewRef(d->ids[t->id]);
	default:
		dec_fail(d, "unexpected token %d", (int)t->type);
		return NULL;
	}
}

PyObject *dobjpy_decode(dobjpy_values *v, const void *data, size_t len)
{
	dec d;
	PyObject *r = NULL;
	int rc, own = 0;
	size_t i;

	memset(&d, 0, sizeof(d));
	d.v = v;
	d.hash_cap = DOBJ_VALUE_SLOTS_BASE + (uint64_t)DOBJ_VALUE_SLOTS_PER_BYTE * len;
	if (!v->de_busy) {
		rc = v->de ? dobj_de_reset(v->de, data, len) : dobj_de_new(&v->de, data, len);
		d.de = v->de;
		v->de_busy = 1;
	} else {
		rc = dobj_de_new(&d.de, data, len);
		own = 1;
	}
	if (rc < 0) {
		if (rc == DOBJ_ENOMEM)
			PyErr_NoMemory();
		else
			dec_fail(&d, "%s", dobj_error_last());
		goto done;
	}
	r = dec_value(&d);
	if (r) {
		if (dec_next(&d) < 0)
			Py_CLEAR(r);
		else if (d.tok.type != DOBJ_TOK_EOF) {
			dec_fail(&d, "bytes after the value");
			Py_CLEAR(r);
		}
	}
done:
	for (i = 0; i < d.nids; i++)
		Py_XDECREF(d.ids[i]);
	PyMem_Free(d.ids);
	memo_clear(&d.hashed);
	if (own)
		dobj_de_free(d.de);
	else
		v->de_busy = 0;
	return r;
}

/* ------------------------------------------------------------ dobj_val */

typedef struct tval {
	dobjpy_values *v;
	const dobjpy_val_hooks *hooks;
	ptab seen; /* Python container -> its dobj_val (open while being built) */
	int depth;
} tval;

static dobj_val *to_val(tval *c, PyObject *o);

static dobj_val *val_nomem(void)
{
	PyErr_NoMemory();
	return NULL;
}

static dobj_val *to_val_container(tval *c, PyObject *o)
{
	dobj_val *r;
	pent *p;
	PyObject *items = NULL;
	Py_ssize_t i, n;
	int is_dict = PyDict_Check(o), all_str = 1, rc;

	if (is_dict) {
		Py_ssize_t pos = 0;
		PyObject *k, *x;
		if ((all_str = dict_is_js_map(o)) < 0)
			return NULL;
		all_str = !all_str;
		while (all_str && PyDict_Next(o, &pos, &k, &x))
			if (!PyUnicode_Check(k)) {
				all_str = 0;
				break;
			}
		r = all_str ? dobj_val_object() : dobj_val_map();
		items = PyDict_Items(o);
	} else if (PyAnySet_Check(o)) {
		r = dobj_val_set();
		items = PySequence_List(o);
	} else {
		r = dobj_val_array();
		items = PySequence_List(o);
	}
	if (!r || !items) {
		Py_XDECREF(items);
		dobj_val_free(r);
		return r ? NULL : val_nomem();
	}
	if (!(p = ptab_add(&c->seen, o))) {
		Py_DECREF(items);
		dobj_val_free(r);
		return NULL;
	}
	Py_INCREF(o);
	p->v = r;
	p->open = 1;
	n = PyList_GET_SIZE(items);
	for (i = 0; i < n; i++) {
		PyObject *it = PyList_GET_ITEM(items, i);
		dobj_val *x, *k;
		if (!is_dict) {
			if (!(x = to_val(c, it)))
				goto fail;
			rc = dobj_val_push(r, x);
		} else if (all_str) {
			PyObject *tmp;
			Py_ssize_t kn;
			const char *kp = dobjpy_str_utf8(PyTuple_GET_ITEM(it, 0), &kn, &tmp);
			if (!kp)
				goto fail;
			x = to_val(c, PyTuple_GET_ITEM(it, 1));
			if (!x) {
				Py_XDECREF(tmp);
				goto fail;
			}
			rc = dobj_val_put(r, kp, (size_t)kn, x);
			Py_XDECREF(tmp);
		} else {
			if (!(k = to_val(c, PyTuple_GET_ITEM(it, 0))))
				goto fail;
			if (!(x = to_val(c, PyTuple_GET_ITEM(it, 1)))) {
				dobj_val_free(k);
				goto fail;
			}
			rc = dobj_val_map_put(r, k, x);
		}
		if (rc < 0) {
			ser_fail(rc);
			goto fail;
		}
	}
	Py_DECREF(items);
	/* Look the entry up again: the table may have grown. */
	ptab_find(&c->seen, o)->open = 0;
	return dobj_val_ref(r);
fail:
	Py_DECREF(items);
	return NULL; /* r is freed with the table */
}

static dobj_val *to_val(tval *c, PyObject *o)
{
	dobj_val *r;

	if (o == Py_None)
		r = dobj_val_null();
	else if (PyBool_Check(o))
		r = dobj_val_bool(o == Py_True);
	else if (PyLong_Check(o)) {
		int ovf, neg;
		long long x = PyLong_AsLongLongAndOverflow(o, &ovf);
		if (x == -1 && PyErr_Occurred())
			return NULL;
		if (!ovf)
			r = dobj_val_integer((int64_t)x); /* the core's integer rule */
		else {
			PyObject *mag = int_magnitude(o);
			if (!mag)
				return NULL;
			neg = ovf < 0;
			r = dobj_val_bigint(neg, (const unsigned char *)PyBytes_AS_STRING(mag),
				(size_t)PyBytes_GET_SIZE(mag));
			Py_DECREF(mag);
		}
	} else if (PyFloat_Check(o))
		r = dobj_val_double(PyFloat_AS_DOUBLE(o));
	else if (PyUnicode_Check(o)) {
		PyObject *tmp;
		Py_ssize_t n;
		const char *p = dobjpy_str_utf8(o, &n, &tmp);
		if (!p)
			return NULL;
		r = dobj_val_string(p, (size_t)n);
		Py_XDECREF(tmp);
	} else if (PyBytes_Check(o) || PyByteArray_Check(o) || PyMemoryView_Check(o)) {
		Py_buffer view;
		if (PyObject_GetBuffer(o, &view, PyBUF_SIMPLE) < 0)
			return NULL;
		r = dobj_val_bytes(view.buf, (size_t)view.len);
		PyBuffer_Release(&view);
	} else if (PyDateTime_Check(o)) {
		double ms;
		if (dobjpy_datetime_ms(c->v, o, &ms) < 0)
			return NULL;
		r = dobj_val_date(ms);
	} else if (PyList_Check(o) || PyTuple_Check(o) || PyDict_Check(o) || PyAnySet_Check(o)) {
		pent *p = ptab_find(&c->seen, o);
		if (p) {
			if (p->open) {
				PyErr_SetString(PyExc_ValueError, "cannot convert a value that contains "
					"itself (cycles cannot be sent)");
				return NULL;
			}
			return dobj_val_ref(p->v);
		}
		if (++c->depth > DOBJ_VALUE_MAX_DEPTH) {
			PyErr_Format(PyExc_ValueError, "cannot convert a value nested deeper than %d "
				"containers", DOBJ_VALUE_MAX_DEPTH);
			return NULL;
		}
		r = to_val_container(c, o);
		c->depth--;
		return r;
	} else {
		if (c->hooks && c->hooks->to_val) {
			r = c->hooks->to_val(c->hooks->data, o);
			if (r || PyErr_Occurred())
				return r;
		}
		PyErr_Format(PyExc_TypeError, "cannot convert a value of type %.100s",
			Py_TYPE(o)->tp_name);
		return NULL;
	}
	return r ? r : val_nomem();
}

dobj_val *dobjpy_to_val(dobjpy_values *v, PyObject *o, const dobjpy_val_hooks *hooks)
{
	tval c;
	dobj_val *r;
	size_t i;

	memset(&c, 0, sizeof(c));
	c.v = v;
	c.hooks = hooks;
	r = to_val(&c, o);
	for (i = 0; i < c.seen.cap; i++) {
		if (c.seen.e[i].k) {
			Py_DECREF((PyObject *)c.seen.e[i].k);
			dobj_val_free(c.seen.e[i].v);
		}
	}
	PyMem_Free(c.seen.e);
	return r;
}

typedef struct fval {
	dobjpy_values *v;
	const dobjpy_val_hooks *hooks;
	ptab seen; /* dobj_val -> its Python value (a reference held) */
	ptab hashed; /* hashable() memo */
	int depth;
} fval;

static PyObject *from_val(fval *c, const dobj_val *val)
{
	PyObject *r, *k, *x;
	size_t i, n;
	pent *p;
	dobj_val_type type = dobj_val_type_of(val);

	switch (type) {
	case DOBJ_VAL_UNDEFINED:
	case DOBJ_VAL_NULL:
		Py_RETURN_NONE;
	case DOBJ_VAL_BOOL:
		return PyBool_FromLong(dobj_val_get_bool(val));
	case DOBJ_VAL_NUMBER: /* the same integer rule as stored values */
		if (dobj_val_is_integer(val))
			return PyLong_FromDouble(dobj_val_get_number(val));
		return PyFloat_FromDouble(dobj_val_get_number(val));
	case DOBJ_VAL_BIGINT: {
		int neg;
		size_t len;
		const unsigned char *mag = dobj_val_get_bigint(val, &neg, &len);
		return int_from_magnitude(c->v, neg, mag, len);
	}
	case DOBJ_VAL_STRING: {
		size_t len;
		const char *s = dobj_val_get_string(val, &len);
		return utf8_str(s, len);
	}
	case DOBJ_VAL_BYTES: {
		size_t len;
		const void *b = dobj_val_get_bytes(val, &len);
		return PyBytes_FromStringAndSize(len ? b : "", (Py_ssize_t)len);
	}
	case DOBJ_VAL_DATE:
		return datetime_from_ms(c->v, dobj_val_get_number(val));
	case DOBJ_VAL_STUB:
	case DOBJ_VAL_ID:
		if (c->hooks && c->hooks->from_val)
			return c->hooks->from_val(c->hooks->data, val);
		PyErr_Format(PyExc_TypeError, "a %s cannot be converted here", dobj_val_type_name(val));
		return NULL;
	default:
		break;
	}
	if ((p = ptab_find(&c->seen, val)))
		return Py_NewRef((PyObject *)p->v);
	if (++c->depth > DOBJ_VALUE_MAX_DEPTH) {
		PyErr_SetString(PyExc_ValueError, "cannot convert a value nested too deeply");
		return NULL;
	}
	r = type == DOBJ_VAL_ARRAY ? PyList_New(0) : type == DOBJ_VAL_SET ? PySet_New(NULL) : PyDict_New();
	if (!r)
		return NULL;
	if (!(p = ptab_add(&c->seen, val))) {
		Py_DECREF(r);
		return NULL;
	}
	p->v = Py_NewRef(r);
	n = dobj_val_len(val);
	for (i = 0; i < n; i++) {
		int rc;
		if (!(x = from_val(c, dobj_val_at(val, i))))
			goto fail;
		if (type == DOBJ_VAL_ARRAY) {
			rc = PyList_Append(r, x);
		} else if (type == DOBJ_VAL_SET) {
			uint64_t cost;
			PyObject *h = hashable(c->v, x, 0, &c->hashed, &cost);
			rc = h ? PySet_Add(r, h) : -1;
			Py_XDECREF(h);
		} else {
			if (type == DOBJ_VAL_OBJECT) {
				size_t kl;
				const char *ks = dobj_val_key_at(val, i, &kl);
				k = utf8_str(ks, kl);
			} else {
				PyObject *k0 = from_val(c, dobj_val_map_key_at(val, i));
				uint64_t cost;
				k = k0 ? hashable(c->v, k0, 0, &c->hashed, &cost) : NULL;
				Py_XDECREF(k0);
			}
			rc = k ? PyDict_SetItem(r, k, x) : -1;
			Py_XDECREF(k);
		}
		Py_DECREF(x);
		if (rc < 0)
			goto fail;
	}
	c->depth--;
	return r;
fail:
	Py_DECREF(r);
	return NULL;
}

PyObject *dobjpy_from_val(dobjpy_values *v, const dobj_val *val, const dobjpy_val_hooks *hooks)
{
	fval c;
	PyObject *r;
	size_t i;

	memset(&c, 0, sizeof(c));
	c.v = v;
	c.hooks = hooks;
	r = from_val(&c, val);
	for (i = 0; i < c.seen.cap; i++)
		if (c.seen.e[i].k)
			Py_DECREF((PyObject *)c.seen.e[i].v);
	PyMem_Free(c.seen.e);
	memo_clear(&c.hashed);
	return r;
}
