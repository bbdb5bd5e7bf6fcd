/*
 * storage.c — ctx.storage: the key-value API, transactions, SQL and alarms.
 *
 * Everything here translates: keys to UTF-8, values to V8 blobs (values.c),
 * results back to Python.  Limits, messages, transactions, commits and
 * alarms are the core's (dobj/storage.h).  Calls are synchronous, like
 * workerd's SQLite-backed `kv` and `sql` APIs: a handler never suspends
 * inside one, so the input gate holds by construction.
 *
 * A Storage belongs to one incarnation of its object.  The core storage is
 * looked up on every call, so that a storage kept past eviction or abort
 * raises instead of reopening the database.
 */
#include "storage.h"

#include <structmember.h>
#include <string.h>

typedef struct {
	PyObject_HEAD
	dobjpy_storage_state *s;
} BaseObject;

typedef struct {
	PyObject_HEAD
	dobjpy_storage_state *s;
	PyObject *ctx;
	dobj_obj *obj;
	PyObject *sql;
} StorageObject;

typedef struct {
	PyObject_HEAD
	dobjpy_storage_state *s;
	StorageObject *storage;
	dobj_txn txn; /* the core's handle: level and state (rules in dobj/storage.h) */
} TxnObject;

typedef struct {
	PyObject_HEAD
	dobjpy_storage_state *s;
	StorageObject *storage;
} SqlObject;

typedef struct CursorObject {
	PyObject_HEAD
	dobjpy_storage_state *s;
	dobj_cursor *c;              /* owned by the base cursor */
	size_t pos;                  /* base only */
	int raw;
	struct CursorObject *base;   /* itself (borrowed) or the cursor raw() came from */
	PyObject *names;             /* tuple of column names (base only) */
} CursorObject;

/* ---------------------------------------------------------------- errors */

static PyObject *fail(dobjpy_storage_state *s, int code)
{
	const char *msg = dobj_error_last();

	if (code == DOBJ_ENOMEM)
		return PyErr_NoMemory();
	PyErr_SetString(code == DOBJ_EARG ? PyExc_ValueError : s->error, msg[0] ? msg : "storage error");
	return NULL;
}

/* ---------------------------------------------------------- resolution */

/* The core storage behind a Storage or a Transaction (and the Storage). */
static dobj_storage *resolve(PyObject *self, StorageObject **out)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	StorageObject *S = NULL; /* set by resolve(); gcc -O3 cannot see it */
	dobj_storage *st;
	int rc;

	if (Py_TYPE(self) == s->Txn_T) {
		TxnObject *t = (TxnObject *)self;
		if ((rc = dobj_txn_check(&t->txn)) < 0)
			return (dobj_storage *)fail(s, rc);
		S = t->storage;
	} else {
		S = (StorageObject *)self;
	}
	/* A previous instance's storage (S->obj NULL or dead): the core says so
	 * (dobj_obj_check). */
	if ((rc = dobj_obj_storage(S->obj, &st)) < 0)
		return (dobj_storage *)fail(s, rc);
	if (out)
		*out = S;
	return st;
}

/* A key's UTF-8; a key is a JavaScript string, its lone surrogates go as
 * WTF-8 (dobjpy_str_utf8; *tmp owns those bytes), as a Lua key's bytes. */
static const char *key_of(PyObject *k, Py_ssize_t *n, PyObject **tmp)
{
	*tmp = NULL;
	if (!PyUnicode_Check(k)) {
		PyErr_Format(PyExc_TypeError, "storage keys must be str, got %.100s", Py_TYPE(k)->tp_name);
		return NULL;
	}
	return dobjpy_str_utf8(k, n, tmp);
}

/*
 * A key as an exact str (a new reference).  A str subclass's __hash__ or
 * __eq__ would run Python code when the key goes into a dict; a plain copy
 * runs none.
 */
static PyObject *plain_key(PyObject *k)
{
	if (PyUnicode_CheckExact(k))
		return Py_NewRef(k);
	if (!PyUnicode_Check(k)) {
		PyErr_Format(PyExc_TypeError, "storage keys must be str, got %.100s", Py_TYPE(k)->tp_name);
		return NULL;
	}
	return PyUnicode_FromObject(k);
}

/*
 * A list or tuple of keys as a tuple that holds its own references: the
 * caller's list may change while Python code runs (a finaliser, a value's
 * tzinfo), and a borrowed item or a cached size would then be stale.
 */
static PyObject *key_snapshot(PyObject *keys)
{
	return PyTuple_CheckExact(keys) ? Py_NewRef(keys) : PySequence_Tuple(keys);
}

static PyObject *key_str(const char *k, size_t n)
{
	return PyUnicode_DecodeUTF8(k, (Py_ssize_t)n, "surrogatepass");
}

static int is_key_list(PyObject *o)
{
	return PyList_Check(o) || PyTuple_Check(o);
}

/* ------------------------------------------------------------ key-value */

/*
 * The value stored under `key`, or NULL with *found = 0 if there is none, or
 * NULL with an exception.  The blob is borrowed from the core only until the
 * next storage call: it is copied before decoding, which allocates and so
 * may run Python code (a finaliser) that closes the runtime.
 */
static PyObject *kv_get_value(PyObject *self, PyObject *key, int *found)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	dobj_storage *st;
	const void *v;
	size_t vlen;
	const char *k;
	Py_ssize_t klen;
	PyObject *blob, *val, *tmp;
	int rc;

	*found = 0;
	if (!(k = key_of(key, &klen, &tmp)))
		return NULL;
	if (!(st = resolve(self, NULL))) {
		Py_XDECREF(tmp);
		return NULL;
	}
	rc = dobj_kv_get(st, k, (size_t)klen, &v, &vlen);
	Py_XDECREF(tmp);
	if (rc <= 0)
		return rc < 0 ? fail(s, rc) : NULL;
	*found = 1;
	if (!(blob = PyBytes_FromStringAndSize(v, (Py_ssize_t)vlen)))
		return NULL;
	val = dobjpy_decode(s->values, PyBytes_AS_STRING(blob), vlen);
	Py_DECREF(blob);
	return val;
}

static PyObject *St_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	PyObject *keys, *out = NULL, *val;
	Py_ssize_t i, n;
	int rc, found;

	if (nargs != 1) {
		PyErr_SetString(PyExc_TypeError, "get() takes a key or a list of keys");
		return NULL;
	}
	if (!resolve(self, NULL))
		return NULL;
	if (!is_key_list(args[0])) {
		val = kv_get_value(self, args[0], &found);
		if (!val && !found && !PyErr_Occurred())
			Py_RETURN_NONE;
		return val;
	}
	if (!(keys = key_snapshot(args[0])))
		return NULL;
	n = PyTuple_GET_SIZE(keys);
	if ((rc = dobj_kv_check_count((size_t)n, "get")) < 0) {
		fail(s, rc);
		goto done;
	}
	if (!(out = PyDict_New()))
		goto done;
	for (i = 0; i < n; i++) {
		PyObject *key = plain_key(PyTuple_GET_ITEM(keys, i));
		if (!key)
			goto fail;
		/* The storage is looked up again for each key (see kv_get_value). */
		val = kv_get_value(self, key, &found);
		if (!val && (found || PyErr_Occurred())) {
			Py_DECREF(key);
			goto fail;
		}
		rc = val ? PyDict_SetItem(out, key, val) : 0;
		Py_DECREF(key);
		Py_XDECREF(val);
		if (rc < 0)
			goto fail;
	}
	goto done;
fail:
	Py_CLEAR(out);
done:
	Py_DECREF(keys);
	return out;
}

/* put(key, value).  Encoding may run Python code (a tzinfo), which may
 * close the runtime: the storage is looked up after it. */
static int put_one(PyObject *self, PyObject *key, PyObject *value)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	const unsigned char *blob;
	size_t blen;
	const char *k;
	Py_ssize_t klen;
	dobj_storage *st;
	dobj_ser *ser;
	PyObject *tmp;
	int rc;

	if (!(k = key_of(key, &klen, &tmp)))
		return -1;
	if ((rc = dobj_kv_check_key((size_t)klen)) < 0) {
		Py_XDECREF(tmp);
		return fail(s, rc), -1;
	}
	if (!(ser = dobjpy_encode(s->values, value, &blob, &blen))) {
		Py_XDECREF(tmp);
		return -1;
	}
	rc = dobj_kv_check_value(blen);
	if (rc < 0) {
		fail(s, rc);
	} else if (!(st = resolve(self, NULL))) {
		rc = -1;
	} else if ((rc = dobj_kv_put(st, k, (size_t)klen, blob, blen)) < 0) {
		fail(s, rc);
	}
	dobjpy_encode_done(s->values, ser);
	Py_XDECREF(tmp);
	return rc < 0 ? -1 : 0;
}

static PyObject *St_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	dobj_storage *st;
	int rc;

	if (nargs == 2) {
		if (!resolve(self, NULL) || put_one(self, args[0], args[1]) < 0)
			return NULL;
		Py_RETURN_NONE;
	}
	if (nargs == 1 && PyDict_Check(args[0])) {
		/*
		 * Every key and value is checked and encoded before anything is
		 * written.  Encoding may run Python code (a tzinfo) that changes the
		 * dict: the entries are a snapshot holding their own references.
		 */
		PyObject *entries, *blobs;
		Py_ssize_t i = 0, klen;
		if (!resolve(self, NULL) || !(entries = PyDict_Items(args[0])))
			return NULL;
		if ((rc = dobj_kv_check_count((size_t)PyList_GET_SIZE(entries), "put")) < 0) {
			Py_DECREF(entries);
			return fail(s, rc);
		}
		if (!(blobs = PyList_New(0))) {
			Py_DECREF(entries);
			return NULL;
		}
		for (i = 0; i < PyList_GET_SIZE(entries); i++) {
			PyObject *item = PyList_GET_ITEM(entries, i);
			PyObject *v = PyTuple_GET_ITEM(item, 1), *b, *pair, *k, *tmp;
			if (!(k = plain_key(PyTuple_GET_ITEM(item, 0))))
				goto fail_multi;
			if (!key_of(k, &klen, &tmp)) {
				Py_DECREF(k);
				goto fail_multi;
			}
			Py_XDECREF(tmp);
			if ((rc = dobj_kv_check_key((size_t)klen)) < 0) {
				Py_DECREF(k);
				fail(s, rc);
				goto fail_multi;
			}
			if (!(b = dobjpy_encode_bytes(s->values, v))) {
				Py_DECREF(k);
				goto fail_multi;
			}
			if ((rc = dobj_kv_check_value((size_t)PyBytes_GET_SIZE(b))) < 0) {
				Py_DECREF(k);
				Py_DECREF(b);
				fail(s, rc);
				goto fail_multi;
			}
			pair = PyTuple_Pack(2, k, b);
			Py_DECREF(k);
			Py_DECREF(b);
			if (!pair || PyList_Append(blobs, pair) < 0) {
				Py_XDECREF(pair);
				goto fail_multi;
			}
			Py_DECREF(pair);
		}
		/* Encoding may run Python code: look the storage up again. */
		if (!(st = resolve(self, NULL)))
			goto fail_multi;
		for (i = 0; i < PyList_GET_SIZE(blobs); i++) {
			PyObject *pair = PyList_GET_ITEM(blobs, i), *b = PyTuple_GET_ITEM(pair, 1), *tmp;
			const char *kp = key_of(PyTuple_GET_ITEM(pair, 0), &klen, &tmp);
			if (!kp)
				goto fail_multi;
			rc = dobj_kv_put(st, kp, (size_t)klen, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
			Py_XDECREF(tmp);
			if (rc < 0) {
				fail(s, rc);
				goto fail_multi;
			}
		}
		Py_DECREF(blobs);
		Py_DECREF(entries);
		Py_RETURN_NONE;
fail_multi:
		Py_DECREF(blobs);
		Py_DECREF(entries);
		return NULL;
	}
	if (nargs == 1 && PyUnicode_Check(args[0])) {
		/* No value: what JS calls put(key, undefined). */
		PyErr_SetString(PyExc_TypeError, DOBJ_MSG_PUT_UNDEFINED);
		return NULL;
	}
	if (nargs == 1) {
		PyErr_Format(PyExc_TypeError, "put() takes a key and a value, or a dict of entries; "
			"got %.100s", Py_TYPE(args[0])->tp_name);
		return NULL;
	}
	PyErr_SetString(PyExc_TypeError, "put() takes a key and a value, or a dict of entries");
	return NULL;
}

static PyObject *St_delete(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	dobj_storage *st;
	const char *k;
	Py_ssize_t klen, i, n;
	PyObject *tmp;
	long count = 0;
	int rc;

	if (nargs != 1) {
		PyErr_SetString(PyExc_TypeError, "delete() takes a key or a list of keys");
		return NULL;
	}
	if (!(st = resolve(self, NULL)))
		return NULL;
	if (is_key_list(args[0])) {
		PyObject *keys = key_snapshot(args[0]), *r = NULL;
		if (!keys)
			return NULL;
		n = PyTuple_GET_SIZE(keys);
		if ((rc = dobj_kv_check_count((size_t)n, "delete")) < 0) {
			fail(s, rc);
			goto done_multi;
		}
		for (i = 0; i < n; i++) {
			if (!(k = key_of(PyTuple_GET_ITEM(keys, i), &klen, &tmp)))
				goto done_multi;
			if (!(st = resolve(self, NULL))) {
				Py_XDECREF(tmp);
				goto done_multi;
			}
			rc = dobj_kv_delete(st, k, (size_t)klen);
			Py_XDECREF(tmp);
			if (rc < 0) {
				fail(s, rc);
				goto done_multi;
			}
			count += rc;
		}
		r = PyLong_FromLong(count);
done_multi:
		Py_DECREF(keys);
		return r;
	}
	/* Making the key's bytes allocates (a finaliser may close the runtime):
	 * the storage is looked up after it. */
	if (!(k = key_of(args[0], &klen, &tmp)))
		return NULL;
	if (!(st = resolve(self, NULL))) {
		Py_XDECREF(tmp);
		return NULL;
	}
	rc = dobj_kv_delete(st, k, (size_t)klen);
	Py_XDECREF(tmp);
	if (rc < 0)
		return fail(s, rc);
	return PyBool_FromLong(rc);
}

typedef struct listarg {
	dobjpy_storage_state *s;
	PyObject *out;
} listarg;

/*
 * One row of list(): the key and a copy of the blob; a Python error stops the
 * listing (returns 1).  Nothing is decoded while the core iterates: decoding
 * allocates containers, which may run a finaliser (Python code) in the
 * middle of the core's loop.
 */
static int list_row(void *arg, const char *key, size_t klen, const void *v, size_t vlen)
{
	listarg *a = arg;
	PyObject *k = key_str(key, klen), *blob;
	int rc;

	if (!k)
		return 1;
	blob = PyBytes_FromStringAndSize(v, (Py_ssize_t)vlen);
	rc = blob ? PyDict_SetItem(a->out, k, blob) : -1;
	Py_DECREF(k);
	Py_XDECREF(blob);
	return rc < 0 ? 1 : 0;
}

/* Replace each blob of list()'s result by its value. */
static int list_decode(dobjpy_storage_state *s, PyObject *out)
{
	Py_ssize_t pos = 0;
	PyObject *k, *blob;

	while (PyDict_Next(out, &pos, &k, &blob)) {
		PyObject *val = dobjpy_decode(s->values, PyBytes_AS_STRING(blob),
			(size_t)PyBytes_GET_SIZE(blob));
		/* Replacing the value of an existing key does not resize the dict. */
		int rc = val ? PyDict_SetItem(out, k, val) : -1;
		Py_XDECREF(val);
		if (rc < 0)
			return -1;
	}
	return 0;
}

static int opt_key(PyObject *o, const char *name, const char **p, size_t *len, PyObject **tmp)
{
	Py_ssize_t n;

	*tmp = NULL;
	if (!o || o == Py_None)
		return 0;
	if (!PyUnicode_Check(o)) {
		PyErr_Format(PyExc_TypeError, "list(): %s must be a str, got %.100s", name,
			Py_TYPE(o)->tp_name);
		return -1;
	}
	if (!(*p = key_of(o, &n, tmp)))
		return -1;
	*len = (size_t)n;
	return 0;
}

static PyObject *St_list(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "start", "start_after", "end", "prefix", "reverse", "limit", NULL };
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	PyObject *start = NULL, *start_after = NULL, *end = NULL, *prefix = NULL, *limit = NULL;
	int reverse = 0, rc;
	dobj_kv_list_opts o = DOBJ_KV_LIST_OPTS_INIT;
	dobj_storage *st;
	listarg a;
	/* Owners of the bounds' bytes when they hold lone surrogates. */
	PyObject *tmp[4] = { NULL }, *r = NULL;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|$OOOOpO:list", kwlist, &start, &start_after,
		    &end, &prefix, &reverse, &limit))
		return NULL;
	if (opt_key(start, "start", &o.start, &o.start_len, &tmp[0]) < 0 ||
	    opt_key(start_after, "start_after", &o.start_after, &o.start_after_len, &tmp[1]) < 0 ||
	    opt_key(end, "end", &o.end, &o.end_len, &tmp[2]) < 0 ||
	    opt_key(prefix, "prefix", &o.prefix, &o.prefix_len, &tmp[3]) < 0)
		goto done;
	o.reverse = reverse;
	if (limit && limit != Py_None) {
		long long lim;
		int ovf;
		if (!PyLong_Check(limit) || PyBool_Check(limit)) {
			PyErr_Format(PyExc_TypeError, "list(): limit must be an int, got %.100s",
				Py_TYPE(limit)->tp_name);
			goto done;
		}
		lim = PyLong_AsLongLongAndOverflow(limit, &ovf);
		if (lim == -1 && PyErr_Occurred())
			goto done;
		/* The core's rule; past a long long the sign is all that counts. */
		if ((rc = dobj_kv_list_limit(&o, ovf ? ovf * HUGE_VAL : (double)lim)) < 0) {
			fail(s, rc);
			goto done;
		}
	}
	if (!(st = resolve(self, NULL)))
		goto done;
	a.s = s;
	if (!(a.out = PyDict_New()))
		goto done;
	rc = dobj_kv_list(st, &o, list_row, &a);
	if (rc > 0 || rc < 0 || list_decode(s, a.out) < 0) {
		if (rc < 0)
			fail(s, rc);
		Py_DECREF(a.out);
		goto done;
	}
	r = a.out;
done:
	for (rc = 0; rc < 4; rc++)
		Py_XDECREF(tmp[rc]);
	return r;
}

static PyObject *St_delete_all(PyObject *self, PyObject *unused)
{
	dobj_storage *st = resolve(self, NULL);
	int rc;

	(void)unused;
	if (!st)
		return NULL;
	if ((rc = dobj_kv_delete_all(st)) < 0)
		return fail(((BaseObject *)self)->s, rc);
	Py_RETURN_NONE;
}

/* sync(): commits now; returns an awaitable that is already done, so that
 * both `storage.sync()` and `await storage.sync()` read naturally. */
static PyObject *St_sync(PyObject *self, PyObject *unused)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	dobj_storage *st = resolve(self, NULL);
	int rc;

	(void)unused;
	if (!st)
		return NULL;
	if ((rc = dobj_storage_sync(st)) < 0)
		return fail(s, rc);
	return PyType_GenericAlloc(s->Done_T, 0);
}

/* -------------------------------------------------------------- alarms */

static PyObject *St_set_alarm(PyObject *self, PyObject *when)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	StorageObject *S = NULL; /* set by resolve(); gcc -O3 cannot see it */
	dobj_storage *st;
	double ms;
	int rc;

	if (dobjpy_is_datetime(when)) {
		if (dobjpy_datetime_ms(s->values, when, &ms) < 0)
			return NULL;
	} else if ((PyLong_Check(when) || PyFloat_Check(when)) && !PyBool_Check(when)) {
		ms = PyFloat_AsDouble(when);
		if (ms == -1 && PyErr_Occurred())
			return NULL;
	} else {
		PyErr_Format(PyExc_TypeError, "set_alarm() takes ms since the epoch or a datetime, "
			"got %.100s", Py_TYPE(when)->tp_name);
		return NULL;
	}
	if (!(st = resolve(self, &S)))
		return NULL;
	if ((rc = dobj_alarm_set(st, ms)) < 0)
		return fail(s, rc);
	if (s->alarm_changed)
		s->alarm_changed(S->ctx);
	Py_RETURN_NONE;
}

static PyObject *St_get_alarm(PyObject *self, PyObject *unused)
{
	dobj_storage *st = resolve(self, NULL);
	double ms;
	int rc;

	(void)unused;
	if (!st)
		return NULL;
	if ((rc = dobj_alarm_get(st, &ms)) < 0)
		return fail(((BaseObject *)self)->s, rc);
	if (rc == 0)
		Py_RETURN_NONE;
	return PyFloat_FromDouble(ms);
}

static PyObject *St_delete_alarm(PyObject *self, PyObject *unused)
{
	dobj_storage *st = resolve(self, NULL);
	int rc;

	(void)unused;
	if (!st)
		return NULL;
	if ((rc = dobj_alarm_delete(st)) < 0)
		return fail(((BaseObject *)self)->s, rc);
	Py_RETURN_NONE;
}

/* -------------------------------------------------------- transactions */

static TxnObject *txn_begin(PyObject *self)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	StorageObject *S = NULL; /* set by resolve(); gcc -O3 cannot see it */
	dobj_storage *st;
	TxnObject *t;
	int rc = 0;

	/* Allocated first: an allocation may run a finaliser that closes the
	 * runtime, so nothing allocates between resolve() and the core calls. */
	if (!(t = PyObject_GC_New(TxnObject, s->Txn_T)))
		return NULL;
	t->s = s;
	t->storage = NULL;
	t->txn.level = 0;
	t->txn.state = DOBJ_TXN_ENDED;
	PyObject_GC_Track(t);
	if (!(st = resolve(self, &S)) || (rc = dobj_txn_open(st, &t->txn)) < 0) {
		if (st)
			fail(s, rc);
		Py_DECREF(t);
		return NULL;
	}
	t->storage = (StorageObject *)Py_NewRef(S);
	return t;
}

/*
 * Close a transaction after its function ran: commit (ok) or roll back, as
 * dobj_txn_end decides (nothing when it rolled back itself or the object is
 * gone).  -1 with an exception if that failed.
 */
static int txn_end(TxnObject *t, int ok)
{
	dobj_storage *st = NULL;
	int rc;

	if (!t->storage->obj || dobj_obj_storage(t->storage->obj, &st) < 0)
		st = NULL;
	if ((rc = dobj_txn_end(st, &t->txn, ok)) < 0) {
		fail(t->s, rc);
		return -1;
	}
	return 0;
}

static PyObject *St_transaction_sync(PyObject *self, PyObject *fn)
{
	TxnObject *t;
	PyObject *r;

	if (!PyCallable_Check(fn)) {
		PyErr_Format(PyExc_TypeError, "transaction_sync() needs a callable, got %.100s",
			Py_TYPE(fn)->tp_name);
		return NULL;
	}
	if (!(t = txn_begin(self)))
		return NULL;
	r = PyObject_CallOneArg(fn, (PyObject *)t);
	if (r && PyCoro_CheckExact(r)) {
		PyObject *c = PyObject_CallMethod(r, "close", NULL);
		Py_XDECREF(c);
		Py_CLEAR(r);
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_TypeError, "transaction_sync() needs a plain function; "
				"use `await storage.transaction(fn)` for a coroutine function");
	}
	if (!r) {
		PyObject *type, *value, *tb;
		PyErr_Fetch(&type, &value, &tb);
		if (txn_end(t, 0) < 0)
			PyErr_Clear(); /* the function's error is the one to see */
		PyErr_Restore(type, value, tb);
	} else if (txn_end(t, 1) < 0) {
		Py_CLEAR(r);
	}
	Py_DECREF(t);
	return r;
}

/* transaction(fn): the Python layer runs it under block_concurrency_while. */
static PyObject *St_transaction(PyObject *self, PyObject *fn)
{
	dobjpy_storage_state *s = ((BaseObject *)self)->s;
	StorageObject *S = NULL; /* set by resolve(); gcc -O3 cannot see it */

	if (!resolve(self, &S))
		return NULL;
	if (!s->transaction) {
		PyErr_SetString(PyExc_RuntimeError, "dobj is not initialised (import dobj)");
		return NULL;
	}
	return PyObject_CallFunctionObjArgs(s->transaction, self, S->ctx, fn, NULL);
}

static PyObject *St_txn_begin(PyObject *self, PyObject *unused)
{
	(void)unused;
	return (PyObject *)txn_begin(self);
}

static PyObject *Txn_end(TxnObject *self, PyObject *ok)
{
	int b = PyObject_IsTrue(ok);

	if (b < 0 || txn_end(self, b) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *Txn_rollback(TxnObject *self, PyObject *unused)
{
	dobj_storage *st = resolve((PyObject *)self, NULL);
	int rc;

	(void)unused;
	if (!st)
		return NULL;
	/* Only the innermost open transaction (dobj_txn_rollback_handle). */
	if ((rc = dobj_txn_rollback_handle(st, &self->txn)) < 0)
		return fail(self->s, rc);
	Py_RETURN_NONE;
}

/* --------------------------------------------------------------- types */

static int Storage_traverse(StorageObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->ctx);
	Py_VISIT(self->sql);
	return 0;
}

static int Storage_clear(StorageObject *self)
{
	Py_CLEAR(self->sql);
	Py_CLEAR(self->ctx);
	return 0;
}

static void Storage_dealloc(StorageObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	Storage_clear(self);
	if (self->obj) {
		dobj_obj_unref(self->obj);
		self->obj = NULL;
	}
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyObject *Storage_get_sql(StorageObject *self, void *c)
{
	dobjpy_storage_state *s = self->s;
	SqlObject *q;

	(void)c;
	if (!self->sql) {
		q = PyObject_GC_New(SqlObject, s->Sql_T);
		if (!q)
			return NULL;
		q->s = s;
		q->storage = (StorageObject *)Py_NewRef(self);
		PyObject_GC_Track(q);
		self->sql = (PyObject *)q;
	}
	return Py_NewRef(self->sql);
}

static PyObject *Storage_repr(PyObject *self)
{
	(void)self;
	return PyUnicode_FromString("<dobj.Storage>");
}

#define KV_METHODS \
	{ "get", (PyCFunction)(void (*)(void))St_get, METH_FASTCALL, \
		"get(key) -> value or None; get([keys]) -> {key: value} of the keys present." }, \
	{ "put", (PyCFunction)(void (*)(void))St_put, METH_FASTCALL, \
		"put(key, value) or put({key: value, ...})." }, \
	{ "delete", (PyCFunction)(void (*)(void))St_delete, METH_FASTCALL, \
		"delete(key) -> bool; delete([keys]) -> number of keys that existed." }, \
	{ "list", (PyCFunction)(void (*)(void))St_list, METH_VARARGS | METH_KEYWORDS, \
		"list(*, start=None, start_after=None, end=None, prefix=None, reverse=False, " \
		"limit=None) -> dict in key order." }, \
	{ "delete_all", (PyCFunction)St_delete_all, METH_NOARGS, \
		"Delete every key, every SQL table and the alarm." }, \
	{ "transaction_sync", (PyCFunction)St_transaction_sync, METH_O, \
		"fn(txn) in a transaction; raise or txn.rollback() to discard; returns fn's result." }, \
	{ "transaction", (PyCFunction)St_transaction, METH_O, \
		"await transaction(fn): fn(txn) (may be async) with the object's other events held." }, \
	{ "sync", (PyCFunction)St_sync, METH_NOARGS, \
		"Commit what this event wrote so far (may be awaited)." }, \
	{ "set_alarm", (PyCFunction)St_set_alarm, METH_O, \
		"set_alarm(ms since the epoch | datetime)." }, \
	{ "get_alarm", (PyCFunction)St_get_alarm, METH_NOARGS, \
		"The alarm's time in ms since the epoch, or None." }, \
	{ "delete_alarm", (PyCFunction)St_delete_alarm, METH_NOARGS, "Cancel the alarm." }, \
	{ "_begin", (PyCFunction)St_txn_begin, METH_NOARGS, NULL }

static PyMethodDef Storage_methods[] = {
	KV_METHODS,
	{ NULL }
};

static PyGetSetDef Storage_getset[] = {
	{ "sql", (getter)Storage_get_sql, NULL, "The SQL API (exec, database_size).", NULL },
	{ NULL }
};

static PyType_Slot Storage_slots[] = {
	{ Py_tp_doc, "ctx.storage: the object's durable storage (key-value, SQL, alarm)." },
	{ Py_tp_traverse, Storage_traverse },
	{ Py_tp_clear, Storage_clear },
	{ Py_tp_dealloc, Storage_dealloc },
	{ Py_tp_repr, Storage_repr },
	{ Py_tp_methods, Storage_methods },
	{ Py_tp_getset, Storage_getset },
	{ 0, NULL }
};

static PyType_Spec Storage_spec = {
	"dobj.Storage", sizeof(StorageObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Storage_slots
};

static int Txn_traverse(TxnObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->storage);
	return 0;
}

static int Txn_clear(TxnObject *self)
{
	Py_CLEAR(self->storage);
	return 0;
}

static void Txn_dealloc(TxnObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	Txn_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyMethodDef Txn_methods[] = {
	KV_METHODS,
	{ "rollback", (PyCFunction)Txn_rollback, METH_NOARGS,
		"Discard the transaction's writes now; later calls on it raise." },
	{ "_end", (PyCFunction)Txn_end, METH_O, NULL },
	{ NULL }
};

static PyType_Slot Txn_slots[] = {
	{ Py_tp_doc, "A transaction: the storage's key-value methods, plus rollback()." },
	{ Py_tp_traverse, Txn_traverse },
	{ Py_tp_clear, Txn_clear },
	{ Py_tp_dealloc, Txn_dealloc },
	{ Py_tp_methods, Txn_methods },
	{ 0, NULL }
};

static PyType_Spec Txn_spec = {
	"dobj.Transaction", sizeof(TxnObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Txn_slots
};

/* ----------------------------------------------------------------- SQL */

static CursorObject *cursor_new(dobjpy_storage_state *s, CursorObject *base, int raw)
{
	CursorObject *c = PyObject_GC_New(CursorObject, s->Cursor_T);

	if (!c)
		return NULL;
	c->s = s;
	c->c = NULL;
	c->pos = 0;
	c->raw = raw;
	c->names = NULL;
	c->base = base ? (CursorObject *)Py_NewRef(base) : c; /* base: a reference unless itself */
	PyObject_GC_Track(c);
	return c;
}

/* A str's bytes for SQLite (dobjpy_str_utf8); `keep` takes the bytes object
 * that owns them, if one was made. */
static const char *sql_text(PyObject *o, Py_ssize_t *n, PyObject *keep)
{
	PyObject *tmp;
	const char *p = dobjpy_str_utf8(o, n, &tmp);

	if (tmp && PyList_Append(keep, tmp) < 0)
		p = NULL;
	Py_XDECREF(tmp);
	return p;
}

static PyObject *Sql_exec(SqlObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	dobjpy_storage_state *s = self->s;
	dobj_storage *st;
	dobj_sql_value stackv[8], *v = stackv;
	PyObject *keep = NULL;
	const char *q;
	Py_ssize_t qlen, i, n;
	CursorObject *c = NULL;
	int rc;

	if (nargs < 1 || !PyUnicode_Check(args[0])) {
		PyErr_SetString(PyExc_TypeError, "exec() takes a query (str) and its bindings");
		return NULL;
	}
	/* The query and text bindings as SQLite takes them from Lua: UTF-8, a
	 * lone surrogate as WTF-8 (dobjpy_str_utf8); `keep` owns such bytes. */
	if (!(keep = PyList_New(0)))
		return NULL;
	if (!(q = sql_text(args[0], &qlen, keep)))
		goto done;
	n = nargs - 1;
	if (n > (Py_ssize_t)(sizeof(stackv) / sizeof(stackv[0])) &&
	    !(v = PyMem_Calloc((size_t)n, sizeof(*v)))) {
		PyErr_NoMemory();
		v = stackv;
		goto done;
	}
	for (i = 0; i < n; i++) {
		PyObject *a = args[i + 1];
		memset(&v[i], 0, sizeof(v[i]));
		if (a == Py_None) {
			v[i].type = DOBJ_SQL_NULL;
		} else if (PyLong_Check(a)) {
			v[i].type = DOBJ_SQL_INT;
			v[i].i = PyLong_AsLongLong(a);
			if (v[i].i == -1 && PyErr_Occurred())
				goto done;
		} else if (PyFloat_Check(a)) {
			v[i].type = DOBJ_SQL_REAL;
			v[i].d = PyFloat_AS_DOUBLE(a);
		} else if (PyUnicode_Check(a)) {
			v[i].type = DOBJ_SQL_TEXT;
			Py_ssize_t tlen;
			if (!(v[i].p = sql_text(a, &tlen, keep)))
				goto done;
			v[i].len = (size_t)tlen;
		} else if (PyBytes_Check(a) || PyByteArray_Check(a) || PyMemoryView_Check(a)) {
			PyObject *b = PyBytes_FromObject(a);
			if (!b || PyList_Append(keep, b) < 0) {
				Py_XDECREF(b);
				goto done;
			}
			Py_DECREF(b);
			v[i].type = DOBJ_SQL_BLOB;
			v[i].p = PyBytes_AS_STRING(b);
			v[i].len = (size_t)PyBytes_GET_SIZE(b);
		} else {
			PyErr_Format(PyExc_TypeError, "cannot bind a value of type %.100s to SQL (binding %zd)",
				Py_TYPE(a)->tp_name, i + 1);
			goto done;
		}
	}
	/* The cursor is allocated before the storage is looked up (an
	 * allocation may run a finaliser that closes the runtime). */
	if (!(c = cursor_new(s, NULL, 0)))
		goto done;
	if (!(st = resolve((PyObject *)self->storage, NULL))) {
		Py_CLEAR(c);
		goto done;
	}
	rc = dobj_sql_exec(st, q, (size_t)qlen, v, (size_t)n, &c->c);
	if (rc < 0) {
		Py_CLEAR(c);
		fail(s, rc);
	}
done:
	Py_XDECREF(keep);
	if (v != stackv)
		PyMem_Free(v);
	return (PyObject *)c;
}

static PyObject *Sql_get_size(SqlObject *self, void *c)
{
	dobj_storage *st = resolve((PyObject *)self->storage, NULL);

	(void)c;
	if (!st)
		return NULL;
	return PyLong_FromLongLong(dobj_sql_database_size(st));
}

static int Sql_traverse(SqlObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->storage);
	return 0;
}

static int Sql_clear(SqlObject *self)
{
	Py_CLEAR(self->storage);
	return 0;
}

static void Sql_dealloc(SqlObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	Sql_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyMethodDef Sql_methods[] = {
	{ "exec", (PyCFunction)(void (*)(void))Sql_exec, METH_FASTCALL,
		"exec(query, *bindings) -> Cursor.  BEGIN/COMMIT and _cf_* tables are refused." },
	{ NULL }
};

static PyGetSetDef Sql_getset[] = {
	{ "database_size", (getter)Sql_get_size, NULL, "Size of the database in bytes.", NULL },
	{ NULL }
};

static PyType_Slot Sql_slots[] = {
	{ Py_tp_doc, "ctx.storage.sql: SQL on the object's SQLite database." },
	{ Py_tp_traverse, Sql_traverse },
	{ Py_tp_clear, Sql_clear },
	{ Py_tp_dealloc, Sql_dealloc },
	{ Py_tp_methods, Sql_methods },
	{ Py_tp_getset, Sql_getset },
	{ 0, NULL }
};

static PyType_Spec Sql_spec = {
	"dobj.SqlStorage", sizeof(SqlObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Sql_slots
};

static PyObject *cell(const dobj_sql_value *v)
{
	if (!v)
		Py_RETURN_NONE;
	switch (v->type) {
	case DOBJ_SQL_INT:
		return PyLong_FromLongLong(v->i);
	case DOBJ_SQL_REAL:
		return PyFloat_FromDouble(v->d);
	case DOBJ_SQL_TEXT:
		/* a str bound with lone surrogates reads back as it was (dobjpy_text_str) */
		return dobjpy_text_str(v->p ? v->p : "", v->len);
	case DOBJ_SQL_BLOB:
		return PyBytes_FromStringAndSize(v->p ? v->p : "", (Py_ssize_t)v->len);
	default:
		Py_RETURN_NONE;
	}
}

static PyObject *cursor_names(CursorObject *b)
{
	if (!b->names) {
		size_t i, n = dobj_cursor_columns(b->c);
		PyObject *t = PyTuple_New((Py_ssize_t)n);
		if (!t)
			return NULL;
		for (i = 0; i < n; i++) {
			const char *name = dobj_cursor_column_name(b->c, i);
			PyObject *s = dobjpy_text_str(name, strlen(name));
			if (!s) {
				Py_DECREF(t);
				return NULL;
			}
			PyTuple_SET_ITEM(t, (Py_ssize_t)i, s);
		}
		b->names = t;
	}
	return b->names;
}

/* The next row (a dict, or a list for raw cursors); NULL without an
 * exception at the end. */
static PyObject *cursor_next(CursorObject *self)
{
	CursorObject *b = self->base;
	size_t ncols, col;
	PyObject *row, *names;

	if (!b->c || b->pos >= dobj_cursor_rows(b->c))
		return NULL;
	ncols = dobj_cursor_columns(b->c);
	if (self->raw) {
		row = PyList_New((Py_ssize_t)ncols);
		if (!row)
			return NULL;
		for (col = 0; col < ncols; col++) {
			PyObject *x = cell(dobj_cursor_cell(b->c, b->pos, col));
			if (!x) {
				Py_DECREF(row);
				return NULL;
			}
			PyList_SET_ITEM(row, (Py_ssize_t)col, x);
		}
	} else {
		if (!(names = cursor_names(b)) || !(row = PyDict_New()))
			return NULL;
		for (col = 0; col < ncols; col++) {
			PyObject *x = cell(dobj_cursor_cell(b->c, b->pos, col));
			if (!x || PyDict_SetItem(row, PyTuple_GET_ITEM(names, (Py_ssize_t)col), x) < 0) {
				Py_XDECREF(x);
				Py_DECREF(row);
				return NULL;
			}
			Py_DECREF(x);
		}
	}
	b->pos++;
	return row;
}

static PyObject *Cursor_iter(PyObject *self)
{
	return Py_NewRef(self);
}

static PyObject *Cursor_to_array(CursorObject *self, PyObject *unused)
{
	PyObject *out = PyList_New(0), *row;

	(void)unused;
	if (!out)
		return NULL;
	while ((row = cursor_next(self))) {
		int rc = PyList_Append(out, row);
		Py_DECREF(row);
		if (rc < 0)
			break;
	}
	if (PyErr_Occurred()) {
		Py_DECREF(out);
		return NULL;
	}
	return out;
}

static PyObject *Cursor_one(CursorObject *self, PyObject *unused)
{
	CursorObject *b = self->base;
	size_t left = b->c ? dobj_cursor_rows(b->c) - b->pos : 0;

	(void)unused;
	if (dobj_sql_one_check(left) < 0) {
		PyErr_SetString(self->s->error, dobj_error_last());
		return NULL;
	}
	return cursor_next(self);
}

static PyObject *Cursor_raw(CursorObject *self, PyObject *unused)
{
	(void)unused;
	return (PyObject *)cursor_new(self->s, self->base, 1);
}

static PyObject *Cursor_get_names(CursorObject *self, void *c)
{
	PyObject *t;

	(void)c;
	if (!self->base->c)
		return PyList_New(0);
	t = cursor_names(self->base);
	return t ? PySequence_List(t) : NULL;
}

static PyObject *Cursor_get_read(CursorObject *self, void *c)
{
	(void)c;
	return PyLong_FromLongLong(self->base->c ? dobj_cursor_rows_read(self->base->c) : 0);
}

static PyObject *Cursor_get_written(CursorObject *self, void *c)
{
	(void)c;
	return PyLong_FromLongLong(self->base->c ? dobj_cursor_rows_written(self->base->c) : 0);
}

static int Cursor_traverse(CursorObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	if (self->base != self)
		Py_VISIT(self->base);
	Py_VISIT(self->names);
	return 0;
}

static int Cursor_clear(CursorObject *self)
{
	if (self->base != self) {
		CursorObject *b = self->base;
		self->base = self; /* an empty cursor of its own (c is NULL) */
		Py_DECREF(b);
	}
	Py_CLEAR(self->names);
	return 0;
}

static void Cursor_dealloc(CursorObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	Cursor_clear(self);
	if (self->c) {
		dobj_cursor_free(self->c);
		self->c = NULL;
	}
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyObject *Cursor_repr(CursorObject *self)
{
	CursorObject *b = self->base;
	return PyUnicode_FromFormat("<dobj.Cursor %zu rows%s>", b->c ? dobj_cursor_rows(b->c) : 0,
		self->raw ? ", raw" : "");
}

static PyMethodDef Cursor_methods[] = {
	{ "to_array", (PyCFunction)Cursor_to_array, METH_NOARGS, "The remaining rows in a list." },
	{ "one", (PyCFunction)Cursor_one, METH_NOARGS, "The only row; raises unless exactly one is left." },
	{ "raw", (PyCFunction)Cursor_raw, METH_NOARGS,
		"The same rows (same position) as lists of values." },
	{ NULL }
};

static PyGetSetDef Cursor_getset[] = {
	{ "column_names", (getter)Cursor_get_names, NULL, "The columns' names.", NULL },
	{ "rows_read", (getter)Cursor_get_read, NULL, "Rows SQLite read.", NULL },
	{ "rows_written", (getter)Cursor_get_written, NULL, "Rows SQLite wrote.", NULL },
	{ NULL }
};

static PyType_Slot Cursor_slots[] = {
	{ Py_tp_doc, "The rows of sql.exec(): iterate for dicts, raw() for lists." },
	{ Py_tp_traverse, Cursor_traverse },
	{ Py_tp_clear, Cursor_clear },
	{ Py_tp_dealloc, Cursor_dealloc },
	{ Py_tp_iter, Cursor_iter },
	{ Py_tp_iternext, cursor_next },
	{ Py_tp_repr, Cursor_repr },
	{ Py_tp_methods, Cursor_methods },
	{ Py_tp_getset, Cursor_getset },
	{ 0, NULL }
};

static PyType_Spec Cursor_spec = {
	"dobj.Cursor", sizeof(CursorObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Cursor_slots
};

/* ---------------------------------------------------- a done awaitable */

static PyObject *Done_await(PyObject *self)
{
	return Py_NewRef(self);
}

static PyObject *Done_next(PyObject *self)
{
	(void)self;
	return NULL; /* StopIteration(None) */
}

static void Done_dealloc(PyObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyType_Slot Done_slots[] = {
	{ Py_am_await, Done_await },
	{ Py_tp_iter, Done_await },
	{ Py_tp_iternext, Done_next },
	{ Py_tp_dealloc, Done_dealloc },
	{ 0, NULL }
};

static PyType_Spec Done_spec = {
	"dobj._Done", sizeof(PyObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Done_slots
};

/* -------------------------------------------------------------- module */

int dobjpy_storage_init(PyObject *module, dobjpy_storage_state *s, PyObject *error,
	dobjpy_values *values)
{
#define TYPE(field, spec, add) do { \
		s->field = (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL); \
		if (!s->field || (add && PyModule_AddType(module, s->field) < 0)) \
			return -1; \
	} while (0)
	TYPE(Storage_T, Storage_spec, 1);
	TYPE(Txn_T, Txn_spec, 1);
	TYPE(Sql_T, Sql_spec, 1);
	TYPE(Cursor_T, Cursor_spec, 1);
	TYPE(Done_T, Done_spec, 0);
#undef TYPE
	s->error = Py_NewRef(error);
	s->values = values;
	return 0;
}

int dobjpy_storage_traverse(dobjpy_storage_state *s, visitproc visit, void *arg)
{
	Py_VISIT(s->Storage_T);
	Py_VISIT(s->Txn_T);
	Py_VISIT(s->Sql_T);
	Py_VISIT(s->Cursor_T);
	Py_VISIT(s->Done_T);
	Py_VISIT(s->error);
	Py_VISIT(s->transaction);
	return 0;
}

void dobjpy_storage_clear(dobjpy_storage_state *s)
{
	Py_CLEAR(s->Storage_T);
	Py_CLEAR(s->Txn_T);
	Py_CLEAR(s->Sql_T);
	Py_CLEAR(s->Cursor_T);
	Py_CLEAR(s->Done_T);
	Py_CLEAR(s->error);
	Py_CLEAR(s->transaction);
}

PyObject *dobjpy_storage_new(dobjpy_storage_state *s, PyObject *ctx, dobj_obj *obj)
{
	StorageObject *o = PyObject_GC_New(StorageObject, s->Storage_T);

	if (!o)
		return NULL;
	o->s = s;
	o->ctx = Py_NewRef(ctx);
	o->obj = obj;
	o->sql = NULL;
	dobj_obj_ref(obj);
	PyObject_GC_Track(o);
	return (PyObject *)o;
}
