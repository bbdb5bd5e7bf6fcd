/*
 * _dobj: the Python binding of the dobj core.
 *
 * The core owns the semantics (which instance, order, gates, aborts); this
 * file translates values and drives handlers.  A handler is a coroutine that
 * the step function advances with PyIter_Send; what it yields says how it is
 * woken:
 *   - a dobj awaitable (a call to another object, block_concurrency_while):
 *     the core wakes the task when that task finishes, no event loop needed;
 *   - an asyncio future: a done callback wakes the task and pumps the core;
 *   - None (asyncio.sleep(0)): the task is queued again at once.
 * A call awaited outside any handler yields a loop future only when it is
 * not finished yet, so a handler that never suspends costs no loop trip.
 *
 * Style: multi-phase init, module state, heap types, GC on every type that
 * holds Python objects (see shared/STYLE.md).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#include "dobj.h"
#include "storage.h"
#include "values.h"

typedef struct {
	PyTypeObject *Runtime_T, *Namespace_T, *Id_T, *Stub_T, *Call_T, *Context_T, *Waker_T;
	PyObject *Error, *InvalidIdError;
	/* Set by dobj/__init__.py through _setup(). */
	PyObject *Request, *Response, *Env, *make_request;
	PyObject *get_running_loop;
	/* Calls whose loop future must be completed once the core returns. */
	PyObject *deferred;
	/* _timer_fired(weakref to a Runtime): what asyncio timers call. */
	PyObject *timer_fired;
	PyObject *s_fetch, *s_alarm, *s_blocking, *s_add_done_callback, *s_create_future,
		*s_set_result, *s_done, *s_remote, *s_durable_object_id, *s_url, *s_call_later,
		*s_cancel, *s_await, *s_call_soon;
	/* Issue 3: the value mapping and ctx.storage (values.c, storage.c). */
	dobjpy_values values;
	dobjpy_storage_state storage;
	PyObject *drain; /* dobj._drain(rt, timeout), set by _setup_storage */
	PyObject *partial; /* functools.partial: stub.method -> stub._rpc("method", ...) */
} modstate;

typedef struct RuntimeObject RuntimeObject;

typedef struct {
	PyObject_HEAD
	RuntimeObject *rt;
	dobj_ns *ns;
	PyObject *cls;
	PyObject *binding;
	PyObject *unique_key;
	int has_fetch;
} NamespaceObject;

struct RuntimeObject {
	PyObject_HEAD
	modstate *st;
	dobj_rt *rt;
	PyObject *env;
	PyObject *namespaces; /* dict binding -> Namespace */
	PyObject *timer;      /* asyncio TimerHandle for the next core timer */
	double timer_at;
	int has_seed;
	unsigned long long seed;
	int virtual_time;
	PyObject *weakreflist;
};

typedef struct {
	PyObject_HEAD
	dobj_id id;
	PyObject *name;            /* str or NULL */
	NamespaceObject *ns;
} IdObject;

typedef struct {
	PyObject_HEAD
	NamespaceObject *ns;
	dobj_stub *stub;
	IdObject *id;
} StubObject;

/* An awaitable over a core task (a call, a block), or over a value. */
typedef struct {
	PyObject_HEAD
	RuntimeObject *rt;
	dobj_task *task;      /* NULL once settled into value/error */
	dobj_task *waiter;    /* a handler task waiting for this one */
	PyObject *future;     /* loop future for awaiting outside handlers */
	PyObject *value;      /* immediate result */
	PyObject *error;      /* immediate exception */
	IdObject *target;     /* for remote error attributes */
	int is_fetch;
} CallObject;

typedef struct {
	PyObject_HEAD
	RuntimeObject *rt;
	dobj_obj *obj;
	IdObject *id;
	PyObject *dict;
	PyObject *storage; /* ctx.storage, made on first use */
	/*
	 * Borrowed: the error value the core keeps on this incarnation once it
	 * is aborted (obj->error, released only when the dobj_obj is freed).
	 * dobj_rt_visit does not reach dead incarnations, and that error often
	 * leads back here (exception -> traceback -> handler frame -> self ->
	 * ctx), so this wrapper, which keeps the dobj_obj alive, reports the
	 * core's reference in tp_traverse.  Nobody else visits it.
	 */
	PyObject *core_error;
} ContextObject;

/* A done callback for an asyncio future that wakes a task. */
typedef struct {
	PyObject_HEAD
	RuntimeObject *rt;
	dobj_task *task;
} WakerObject;

static modstate *state_of_type(PyTypeObject *t)
{
	return PyType_GetModuleState(t);
}

/* ------------------------------------------------------------- host ops */

static void host_retain(void *data, void *v)
{
	(void)data;
	Py_INCREF((PyObject *)v);
}

static void host_release(void *data, void *v)
{
	(void)data;
	Py_DECREF((PyObject *)v);
}

/* ------------------------------------------------------------ errors */

/* Raise the core's last error as a Python exception. */
static PyObject *raise_core(modstate *st, int code)
{
	const char *msg = dobj_error_last();
	PyObject *type = st->Error;

	if (code == DOBJ_EINVALID || code == DOBJ_EFOREIGN)
		type = st->InvalidIdError;
	else if (code == DOBJ_ENOMEM)
		return PyErr_NoMemory();
	else if (code == DOBJ_EARG && strncmp(msg, "Invalid URL", 11) == 0)
		type = PyExc_TypeError;
	PyErr_SetString(type, msg[0] ? msg : "dobj error");
	return NULL;
}

/* Take the current Python exception as (message, exception object). */
static PyObject *fetch_exception(char *msg, size_t cap)
{
	PyObject *type, *value, *tb, *s;

	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb && value)
		PyException_SetTraceback(value, tb);
	Py_XDECREF(type);
	Py_XDECREF(tb);
	if (!value) {
		snprintf(msg, cap, "unknown error");
		return NULL;
	}
	s = PyObject_Str(value);
	if (s) {
		const char *u = PyUnicode_AsUTF8(s);
		snprintf(msg, cap, "%s", u ? u : "error");
		Py_DECREF(s);
	}
	if (!s || PyErr_Occurred()) {
		PyErr_Clear();
		snprintf(msg, cap, "%s", Py_TYPE(value)->tp_name);
	}
	return value;
}

/*
 * The error value handed to the core: a tuple (exception, traceback at
 * capture).  One error can reach many callers (an abort fails every call in
 * progress and every later call on a broken stub); raising the same object
 * again would chain each caller's frames onto its traceback, which then grows
 * without bound.  Each delivery restores the captured traceback instead.
 * Steals `exc`; returns NULL (no error value) if exc is NULL.
 */
static PyObject *error_box(PyObject *exc)
{
	PyObject *tb, *box;

	if (!exc)
		return NULL;
	tb = PyExceptionInstance_Check(exc) ? PyException_GetTraceback(exc) : NULL;
	box = PyTuple_Pack(2, exc, tb ? tb : Py_None);
	Py_XDECREF(tb);
	if (!box) {
		PyErr_Clear();
		return exc; /* unboxed: still an exception, only its traceback may grow */
	}
	Py_DECREF(exc);
	return box;
}

/*
 * An error value that the core keeps on an aborted incarnation (obj->error:
 * ctx.abort, a failed block_concurrency_while, a failed constructor) and
 * hands to every call that meets it: (exception, traceback, None).  Each
 * caller gets a copy (same type, args and attributes), so that the stored
 * exception never picks up a caller's frames: a caller frame holding a stub
 * bound to the dead incarnation would close a cycle through the core's
 * obj->error, which no tp_traverse can see.
 */
static PyObject *error_box_shared(PyObject *exc)
{
	PyObject *box = error_box(exc), *shared;

	if (!box || !PyTuple_Check(box))
		return box;
	shared = PyTuple_Pack(3, PyTuple_GET_ITEM(box, 0), PyTuple_GET_ITEM(box, 1), Py_None);
	if (!shared) {
		PyErr_Clear();
		return box;
	}
	Py_DECREF(box);
	return shared;
}

/* A shallow copy of an exception (type, args, attributes), or the exception
 * itself if it cannot be copied.  New reference. */
static PyObject *copy_exception(PyObject *exc)
{
	PyObject *copy_mod = PyImport_ImportModule("copy"), *copy = NULL;

	if (copy_mod) {
		copy = PyObject_CallMethod(copy_mod, "copy", "O", exc);
		Py_DECREF(copy_mod);
	}
	if (!copy || !PyExceptionInstance_Check(copy)) {
		/* Not copyable (e.g. required keyword-only arguments). */
		PyErr_Clear();
		Py_XDECREF(copy);
		return Py_NewRef(exc);
	}
	return copy;
}

/* The exception inside an error value (a new reference), its traceback reset
 * to the one it had when captured; a copy for shared values. */
static PyObject *error_unbox(PyObject *err)
{
	PyObject *exc, *tb, *copy = NULL;

	if (!PyTuple_Check(err) || PyTuple_GET_SIZE(err) < 2)
		return Py_NewRef(err);
	exc = PyTuple_GET_ITEM(err, 0);
	tb = PyTuple_GET_ITEM(err, 1);
	if (!PyExceptionInstance_Check(exc))
		return Py_NewRef(exc);
	copy = PyTuple_GET_SIZE(err) == 3 ? copy_exception(exc) : Py_NewRef(exc);
	PyException_SetTraceback(copy, tb);
	return copy;
}

/* Fail a task with the current Python exception. */
static void note_core_error(dobj_obj *obj, int was_dead, void *ctx, PyObject *err);

static void raise_task(dobj_task *t)
{
	char msg[1024];
	PyObject *exc = fetch_exception(msg, sizeof(msg));
	PyObject *box = dobj_task_kind_of(t) == DOBJ_TASK_BLOCK ? error_box_shared(exc) : error_box(exc);
	dobj_obj *obj = dobj_task_kind_of(t) == DOBJ_TASK_BLOCK ? dobj_task_obj(t) : NULL;
	void *ctx = obj ? dobj_obj_ctx(obj) : NULL;
	int was_dead = obj ? dobj_obj_dead(obj) : 1;

	/* A failed block aborts its object with this error (kept by the core). */
	dobj_task_raise(t, DOBJ_EUSER, msg, box);
	note_core_error(obj, was_dead, ctx, box);
}

/* --------------------------------------------------------------- pumping */

static void schedule_timers(RuntimeObject *self);

static void flush_deferred(modstate *st);
static void cancel_timer(RuntimeObject *self);

static void pump(RuntimeObject *self)
{
	if (!self->rt || dobj_rt_pumping(self->rt))
		return;
	dobj_rt_pump(self->rt);
	flush_deferred(self->st);
	schedule_timers(self);
}

/* Keep an asyncio timer armed for the core's next timer (alarms, eviction). */
static void schedule_timers(RuntimeObject *self)
{
	modstate *st = self->st;
	double next = dobj_rt_next_timer_ms(self->rt);
	PyObject *loop, *cb, *h;

	if (next < 0)
		return;
	loop = PyObject_CallNoArgs(st->get_running_loop);
	if (!loop) {
		PyErr_Clear(); /* no loop: timers run at the next pump */
		return;
	}
	{
		double now = dobj_rt_now_ms(self->rt);
		if (self->timer && self->timer_at <= now + next + 0.5) {
			Py_DECREF(loop);
			return;
		}
		if (self->timer) {
			PyObject *r = PyObject_CallMethodNoArgs(self->timer, st->s_cancel);
			Py_XDECREF(r);
			PyErr_Clear();
			Py_CLEAR(self->timer);
		}
		/* The loop holds the timer until it fires (idle eviction: 10 s);
		 * a weak reference lets a dropped runtime be collected meanwhile. */
		cb = PyWeakref_NewRef((PyObject *)self, NULL);
		if (!cb) {
			PyErr_Clear();
			Py_DECREF(loop);
			return;
		}
		h = PyObject_CallMethod(loop, "call_later", "dOO", next / 1000.0, st->timer_fired, cb);
		Py_DECREF(cb);
		Py_DECREF(loop);
		if (!h) {
			PyErr_Clear();
			return;
		}
		self->timer = h;
		self->timer_at = now + next;
	}
}

/* ---------------------------------------------------------------- IDs */

static IdObject *id_new(modstate *st, NamespaceObject *ns, const dobj_id *id, PyObject *name)
{
	IdObject *o = PyObject_GC_New(IdObject, st->Id_T);

	if (!o)
		return NULL;
	o->id = *id;
	o->name = Py_XNewRef(name);
	o->ns = (NamespaceObject *)Py_NewRef(ns);
	PyObject_GC_Track(o);
	return o;
}

static int Id_traverse(IdObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->name);
	Py_VISIT(self->ns);
	return 0;
}

static int Id_clear(IdObject *self)
{
	Py_CLEAR(self->name);
	Py_CLEAR(self->ns);
	return 0;
}

static void Id_dealloc(IdObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	Id_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyObject *Id_str(IdObject *self)
{
	char hex[DOBJ_ID_HEX_LEN];
	dobj_id_to_hex(&self->id, hex);
	return PyUnicode_FromStringAndSize(hex, DOBJ_ID_HEX_LEN);
}

static PyObject *Id_repr(IdObject *self)
{
	char hex[DOBJ_ID_HEX_LEN];
	dobj_id_to_hex(&self->id, hex);
	if (self->name)
		return PyUnicode_FromFormat("DurableObjectId(%.64s, name=%R)", hex, self->name);
	return PyUnicode_FromFormat("DurableObjectId(%.64s)", hex);
}

static Py_hash_t Id_hash(IdObject *self)
{
	Py_hash_t h;
	memcpy(&h, self->id.bytes + 8, sizeof(h));
	return h == -1 ? -2 : h;
}

static PyObject *Id_richcompare(PyObject *a, PyObject *b, int op)
{
	modstate *st = state_of_type(Py_TYPE(a));
	int eq;

	if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, st->Id_T))
		Py_RETURN_NOTIMPLEMENTED;
	eq = dobj_id_equal(&((IdObject *)a)->id, &((IdObject *)b)->id);
	return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyObject *Id_equals(IdObject *self, PyObject *other)
{
	modstate *st = state_of_type(Py_TYPE(self));
	if (!PyObject_TypeCheck(other, st->Id_T)) {
		PyErr_Format(PyExc_TypeError, "equals() needs a DurableObjectId, got %s",
			Py_TYPE(other)->tp_name);
		return NULL;
	}
	return PyBool_FromLong(dobj_id_equal(&self->id, &((IdObject *)other)->id));
}

static PyObject *Id_get_name(IdObject *self, void *closure)
{
	(void)closure;
	if (self->name)
		return Py_NewRef(self->name);
	Py_RETURN_NONE;
}

static PyObject *Id_reduce(IdObject *self, PyObject *unused)
{
	(void)unused;
	PyErr_SetString(PyExc_TypeError, "a DurableObjectId cannot be pickled; store str(id) and use "
		"Namespace.id_from_string()");
	(void)self;
	return NULL;
}

static PyMethodDef Id_methods[] = {
	{ "to_string", (PyCFunction)Id_str, METH_NOARGS, "The 64 lower-case hex digits." },
	{ "equals", (PyCFunction)Id_equals, METH_O, "Compare the 32 bytes (names are ignored)." },
	{ "__reduce__", (PyCFunction)Id_reduce, METH_NOARGS, NULL },
	{ NULL }
};

static PyGetSetDef Id_getset[] = {
	{ "name", (getter)Id_get_name, NULL, "The name for IDs made from names, else None.", NULL },
	{ NULL }
};

static PyType_Slot Id_slots[] = {
	{ Py_tp_doc, "A Durable Object ID (64 hex digits)." },
	{ Py_tp_traverse, Id_traverse },
	{ Py_tp_clear, Id_clear },
	{ Py_tp_dealloc, Id_dealloc },
	{ Py_tp_str, Id_str },
	{ Py_tp_repr, Id_repr },
	{ Py_tp_hash, Id_hash },
	{ Py_tp_richcompare, Id_richcompare },
	{ Py_tp_methods, Id_methods },
	{ Py_tp_getset, Id_getset },
	{ 0, NULL }
};

static PyType_Spec Id_spec = {
	"dobj.DurableObjectId", sizeof(IdObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Id_slots
};

/* -------------------------------------------------------------- namespaces */

static int Namespace_traverse(NamespaceObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->rt);
	Py_VISIT(self->cls);
	Py_VISIT(self->binding);
	Py_VISIT(self->unique_key);
	return 0;
}

static int Namespace_clear(NamespaceObject *self)
{
	Py_CLEAR(self->rt);
	Py_CLEAR(self->cls);
	Py_CLEAR(self->binding);
	Py_CLEAR(self->unique_key);
	return 0;
}

static void Namespace_dealloc(NamespaceObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	Namespace_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

/* The ns pointer is valid as long as the runtime lives and is not closed. */
static int ns_alive(NamespaceObject *self)
{
	if (!self->rt || !self->rt->rt || dobj_rt_closed(self->rt->rt)) {
		PyErr_SetString(self->rt ? self->rt->st->Error : PyExc_RuntimeError,
			"the runtime is closed");
		return 0;
	}
	return 1;
}

static int name_bytes(PyObject *name, const char **p, Py_ssize_t *n)
{
	if (PyUnicode_Check(name)) {
		*p = PyUnicode_AsUTF8AndSize(name, n);
		if (!*p)
			return -1;
		return 0;
	}
	PyErr_Format(PyExc_TypeError, "a Durable Object name must be a str, got %s",
		Py_TYPE(name)->tp_name);
	return -1;
}

static PyObject *Namespace_id_from_name(NamespaceObject *self, PyObject *name)
{
	const char *p;
	Py_ssize_t n;
	dobj_id id;

	if (!ns_alive(self) || name_bytes(name, &p, &n) < 0)
		return NULL;
	dobj_id_from_name(dobj_ns_idkey(self->ns), p, (size_t)n, &id);
	return (PyObject *)id_new(self->rt->st, self, &id, name);
}

static PyObject *check_jurisdiction(modstate *st, PyObject *j)
{
	if (j && j != Py_None) {
		PyErr_SetString(st->Error, DOBJ_MSG_JURISDICTION);
		return NULL;
	}
	return Py_None;
}

static PyObject *Namespace_new_unique_id(NamespaceObject *self, PyObject *const *args,
	Py_ssize_t nargs, PyObject *kwnames)
{
	PyObject *j = nargs > 0 ? args[0] : NULL;
	dobj_id id;
	int rc;

	if (nargs > 1) {
		PyErr_SetString(PyExc_TypeError, "new_unique_id() takes at most one argument");
		return NULL;
	}
	if (kwnames) {
		Py_ssize_t i;
		for (i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
			if (!PyUnicode_Check(PyTuple_GET_ITEM(kwnames, i)) ||
			    PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "jurisdiction") != 0 || j) {
				PyErr_SetString(PyExc_TypeError, "new_unique_id() takes only jurisdiction=");
				return NULL;
			}
			j = args[nargs + i];
		}
	}
	if (!ns_alive(self) || !check_jurisdiction(self->rt->st, j))
		return NULL;
	rc = dobj_id_new_unique(dobj_ns_idkey(self->ns), NULL, &id);
	if (rc < 0)
		return raise_core(self->rt->st, rc);
	return (PyObject *)id_new(self->rt->st, self, &id, NULL);
}

static PyObject *Namespace_id_from_string(NamespaceObject *self, PyObject *s)
{
	const char *p;
	Py_ssize_t n;
	dobj_id id;
	int rc;

	if (!ns_alive(self))
		return NULL;
	if (!PyUnicode_Check(s)) {
		PyErr_Format(PyExc_TypeError, "id_from_string() needs a str, got %s", Py_TYPE(s)->tp_name);
		return NULL;
	}
	p = PyUnicode_AsUTF8AndSize(s, &n);
	if (!p)
		return NULL;
	rc = dobj_id_from_string(dobj_ns_idkey(self->ns), p, (size_t)n, &id);
	if (rc < 0)
		return raise_core(self->rt->st, rc);
	return (PyObject *)id_new(self->rt->st, self, &id, NULL);
}

static StubObject *stub_new(NamespaceObject *self, IdObject *id)
{
	modstate *st = self->rt->st;
	StubObject *o;
	const char *name = NULL;
	Py_ssize_t n = 0;
	int rc;

	if (id->name && !(name = PyUnicode_AsUTF8AndSize(id->name, &n)))
		return NULL;
	o = PyObject_GC_New(StubObject, st->Stub_T);
	if (!o)
		return NULL;
	o->ns = (NamespaceObject *)Py_NewRef(self);
	o->id = (IdObject *)Py_NewRef(id);
	rc = dobj_stub_new(&o->stub, self->ns, &id->id, name, (size_t)n);
	PyObject_GC_Track(o);
	if (rc < 0) {
		Py_DECREF(o);
		return (StubObject *)raise_core(st, rc);
	}
	return o;
}

static PyObject *Namespace_get(NamespaceObject *self, PyObject *const *args, Py_ssize_t nargs,
	PyObject *kwnames)
{
	modstate *st;
	IdObject *id;
	Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, i;

	if (!ns_alive(self))
		return NULL;
	st = self->rt->st;
	if (nargs < 1 || nargs > 2) {
		PyErr_SetString(PyExc_TypeError, "get(id, location_hint=None) takes an ID");
		return NULL;
	}
	for (i = 0; i < nkw; i++) {
		if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "location_hint") != 0 || nargs > 1) {
			PyErr_SetString(PyExc_TypeError, "get() takes only location_hint= as a keyword");
			return NULL;
		}
	}
	if (!PyObject_TypeCheck(args[0], st->Id_T)) {
		PyErr_Format(PyExc_TypeError, "get() needs a DurableObjectId, got %s",
			Py_TYPE(args[0])->tp_name);
		return NULL;
	}
	id = (IdObject *)args[0];
	/* An ID of another namespace is refused, as workerd does. */
	if (id->ns != self && (!id->ns || !id->ns->ns ||
	    dobj_ns_idkey(id->ns->ns) != dobj_ns_idkey(self->ns))) {
		dobj_id check;
		char hex[DOBJ_ID_HEX_LEN];
		dobj_id_to_hex(&id->id, hex);
		if (dobj_id_from_string(dobj_ns_idkey(self->ns), hex, DOBJ_ID_HEX_LEN, &check) < 0) {
			PyErr_SetString(st->InvalidIdError, DOBJ_MSG_FOREIGN_ID);
			return NULL;
		}
	}
	return (PyObject *)stub_new(self, id);
}

static PyObject *Namespace_get_by_name(NamespaceObject *self, PyObject *name)
{
	IdObject *id = (IdObject *)Namespace_id_from_name(self, name);
	PyObject *stub;

	if (!id)
		return NULL;
	stub = (PyObject *)stub_new(self, id);
	Py_DECREF(id);
	return stub;
}

static PyObject *Namespace_jurisdiction(NamespaceObject *self, PyObject *j)
{
	if (!ns_alive(self) || !check_jurisdiction(self->rt->st, j))
		return NULL;
	return Py_NewRef(self);
}

static PyObject *Namespace_repr(NamespaceObject *self)
{
	return PyUnicode_FromFormat("<dobj.Namespace %S of %R>", self->binding,
		self->cls ? self->cls : Py_None);
}

static PyMethodDef Namespace_methods[] = {
	{ "id_from_name", (PyCFunction)Namespace_id_from_name, METH_O,
		"The ID workerd derives from a name (any str, also empty or with NULs)." },
	{ "new_unique_id", (PyCFunction)(void (*)(void))Namespace_new_unique_id,
		METH_FASTCALL | METH_KEYWORDS, "A random ID (deterministic with Runtime(id_seed=...))." },
	{ "id_from_string", (PyCFunction)Namespace_id_from_string, METH_O,
		"Parse 64 hex digits; raises InvalidIdError with workerd's messages." },
	{ "get", (PyCFunction)(void (*)(void))Namespace_get, METH_FASTCALL | METH_KEYWORDS,
		"A stub for an ID of this namespace." },
	{ "get_by_name", (PyCFunction)Namespace_get_by_name, METH_O,
		"get(id_from_name(name))." },
	{ "jurisdiction", (PyCFunction)Namespace_jurisdiction, METH_O,
		"This namespace for None; jurisdictions are not implemented locally." },
	{ NULL }
};

static PyMemberDef Namespace_members[] = {
	{ "binding", T_OBJECT, offsetof(NamespaceObject, binding), READONLY, "The binding name." },
	{ "unique_key", T_OBJECT, offsetof(NamespaceObject, unique_key), READONLY, "The ID key." },
	{ "object_class", T_OBJECT, offsetof(NamespaceObject, cls), READONLY, "The class bound." },
	{ NULL }
};

static PyType_Slot Namespace_slots[] = {
	{ Py_tp_doc, "A Durable Object namespace: one class, one unique key." },
	{ Py_tp_traverse, Namespace_traverse },
	{ Py_tp_clear, Namespace_clear },
	{ Py_tp_dealloc, Namespace_dealloc },
	{ Py_tp_repr, Namespace_repr },
	{ Py_tp_methods, Namespace_methods },
	{ Py_tp_members, Namespace_members },
	{ 0, NULL }
};

static PyType_Spec Namespace_spec = {
	"dobj.Namespace", sizeof(NamespaceObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Namespace_slots
};

/* ------------------------------------------------------------------ calls */

static void call_done(dobj_task *t, void *data);

static CallObject *call_new(RuntimeObject *rt, dobj_task *task, IdObject *target, int is_fetch)
{
	CallObject *c = PyObject_GC_New(CallObject, rt->st->Call_T);

	if (!c) {
		dobj_task_unref(task);
		return NULL;
	}
	c->rt = (RuntimeObject *)Py_NewRef(rt);
	c->task = task;
	c->waiter = NULL;
	c->future = NULL;
	c->value = NULL;
	c->error = NULL;
	c->target = (IdObject *)Py_XNewRef(target);
	c->is_fetch = is_fetch;
	if (task)
		dobj_task_on_done(task, call_done, c);
	PyObject_GC_Track(c);
	return c;
}

static int Call_traverse(CallObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->rt);
	Py_VISIT(self->future);
	Py_VISIT(self->value);
	Py_VISIT(self->error);
	Py_VISIT(self->target);
	if (self->task && dobj_task_done(self->task)) {
		void *res, *err;
		dobj_task_result(self->task, &res, NULL, &err);
		if (res && !dobj_task_result_is_core(self->task))
			Py_VISIT((PyObject *)res);
		if (err)
			Py_VISIT((PyObject *)err);
	}
	return 0;
}

static void call_drop_task(CallObject *self)
{
	if (self->task) {
		dobj_task_on_done(self->task, NULL, NULL);
		dobj_task_unref(self->task);
		self->task = NULL;
	}
	if (self->waiter) {
		dobj_task_unref(self->waiter);
		self->waiter = NULL;
	}
}

static int Call_clear(CallObject *self)
{
	call_drop_task(self);
	Py_CLEAR(self->rt);
	Py_CLEAR(self->future);
	Py_CLEAR(self->value);
	Py_CLEAR(self->error);
	Py_CLEAR(self->target);
	return 0;
}

static void Call_dealloc(CallObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	Call_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static void complete_future(CallObject *self);

/*
 * The task finished: wake whoever waits (a handler task or a loop future).
 *
 * Done callbacks also run from inside the core's own loops (dobj_obj_abort
 * and dobj_rt_clear fail tasks one by one) where no pump is running.  There
 * this callback must neither drop a reference (dobj_task_unref would flush
 * the core's trash: finalisers, re-entry, and possibly this very Call freed
 * under our feet) nor run Python code (an allocation may start the GC).  So
 * the waiter's reference is dropped later (call_drop_task), and outside a
 * pump the loop future is completed after the core returns (flush_deferred).
 */
static void call_done(dobj_task *t, void *data)
{
	CallObject *self = data;

	if (self->waiter)
		dobj_task_wake(self->waiter);
	if (self->future) {
		if (dobj_rt_pumping(dobj_task_rt(t)))
			complete_future(self);
		else if (PyList_Append(self->rt->st->deferred, (PyObject *)self) < 0)
			PyErr_Clear();
	}
}

/* Complete the loop future of a finished call (runs Python code). */
static void complete_future(CallObject *self)
{
	if (self->future && self->rt) {
		PyObject *future = Py_NewRef(self->future);
		PyObject *done = PyObject_CallMethodNoArgs(future, self->rt->st->s_done);
		if (done && !PyObject_IsTrue(done)) {
			PyObject *r = PyObject_CallMethodOneArg(future, self->rt->st->s_set_result, Py_None);
			Py_XDECREF(r);
		}
		Py_XDECREF(done);
		if (PyErr_Occurred())
			PyErr_WriteUnraisable(future);
		Py_DECREF(future);
	}
}

/* Complete the futures of calls that finished inside a core loop run outside
 * a pump (abort, clear).  Called by the binding once the core has returned. */
static void flush_deferred(modstate *st)
{
	PyObject *exc_type, *exc_value, *exc_tb;

	if (!st->deferred || PyList_GET_SIZE(st->deferred) == 0)
		return;
	PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
	while (PyList_GET_SIZE(st->deferred) > 0) {
		CallObject *c = (CallObject *)Py_NewRef(PyList_GET_ITEM(st->deferred, 0));
		if (PySequence_DelItem(st->deferred, 0) < 0) {
			PyErr_Clear();
			Py_DECREF(c);
			break;
		}
		complete_future(c);
		Py_DECREF(c);
	}
	PyErr_Restore(exc_type, exc_value, exc_tb);
}

static int call_is_done(CallObject *self)
{
	return !self->task || dobj_task_done(self->task);
}

/* Build the exception a caller sees for a failed task. */
static PyObject *call_exception(CallObject *self, int code, const char *msg, PyObject *err)
{
	modstate *st = self->rt->st;
	PyObject *exc;

	if (err) {
		exc = error_unbox(err);
	} else {
		PyObject *type = code == DOBJ_EINVALID || code == DOBJ_EFOREIGN ? st->InvalidIdError : st->Error;
		exc = PyObject_CallOneArg(type, PyUnicode_FromString(msg ? msg : "error"));
		if (!exc)
			return NULL;
	}
	if (self->target && PyObject_HasAttrString(exc, "__dict__")) {
		PyObject *hex = Id_str(self->target);
		if (hex) {
			/* Errors the object raised (or its reset) are remote; failures of
			 * delivery (closed runtime) are not. */
			PyObject_SetAttr(exc, st->s_remote, code == DOBJ_ECLOSED ? Py_False : Py_True);
			PyObject_SetAttr(exc, st->s_durable_object_id, hex);
			Py_DECREF(hex);
		}
		PyErr_Clear();
	}
	return exc;
}

static PyObject *core_result(CallObject *self, void *res);

/* The result of a finished call: a new reference, or NULL with an exception set. */
static PyObject *call_result(CallObject *self)
{
	void *res, *err;
	const char *msg;
	int code;
	PyObject *exc;

	if (!self->task) {
		if (self->error) {
			PyErr_SetObject((PyObject *)Py_TYPE(self->error), self->error);
			return NULL;
		}
		return Py_NewRef(self->value ? self->value : Py_None);
	}
	code = dobj_task_result(self->task, &res, &msg, &err);
	if (code == DOBJ_OK && res && dobj_task_result_is_core(self->task)) {
		/* RPC results (dobj_val) and native fetch responses (dobj_msg). */
		PyObject *v = core_result(self, res);
		if (!v)
			return NULL;
		self->value = v;
	} else if (code == DOBJ_OK) {
		self->value = Py_NewRef(res ? (PyObject *)res : Py_None);
	} else {
		exc = call_exception(self, code, msg, err);
		if (!exc)
			return NULL;
		self->error = exc;
	}
	call_drop_task(self);
	return call_result(self);
}

/* Iterator protocol: the await machinery calls this. */
static PyObject *Call_next(CallObject *self)
{
	modstate *st = self->rt->st;
	PyObject *r, *loop;

	if (call_is_done(self)) {
		r = call_result(self);
		if (!r)
			return NULL;
		/* Return value of the await: StopIteration(value). */
		_PyGen_SetStopIterationValue(r);
		Py_DECREF(r);
		return NULL;
	}
	/* Inside a handler step: yield ourselves; the driver makes the core wake
	 * the handler when we finish. */
	if (self->rt->rt && dobj_rt_current(self->rt->rt))
		return Py_NewRef(self);
	/* Outside: park the awaiting asyncio task on a loop future. */
	if (!self->future) {
		loop = PyObject_CallNoArgs(st->get_running_loop);
		if (!loop)
			return NULL;
		self->future = PyObject_CallMethodNoArgs(loop, st->s_create_future);
		Py_DECREF(loop);
		if (!self->future)
			return NULL;
	}
	if (PyObject_SetAttr(self->future, st->s_blocking, Py_True) < 0)
		return NULL;
	return Py_NewRef(self->future);
}

static PyObject *Call_send(CallObject *self, PyObject *v)
{
	(void)v;
	return Call_next(self);
}

static PyObject *Call_throw(CallObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	/* The awaiting task was cancelled (or something was thrown in): pass it on. */
	(void)self;
	if (nargs < 1) {
		PyErr_SetString(PyExc_TypeError, "throw() needs an exception");
		return NULL;
	}
	if (PyExceptionInstance_Check(args[0]))
		PyErr_SetObject((PyObject *)Py_TYPE(args[0]), args[0]);
	else
		PyErr_SetObject(args[0], nargs > 1 ? args[1] : NULL);
	return NULL;
}

static PyObject *Call_close(CallObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	Py_RETURN_NONE;
}

static PyObject *Call_await(CallObject *self)
{
	return Py_NewRef(self);
}

static PyObject *Call_get_done(CallObject *self, void *c)
{
	(void)c;
	return PyBool_FromLong(call_is_done(self));
}

static PyMethodDef Call_methods[] = {
	{ "send", (PyCFunction)Call_send, METH_O, NULL },
	{ "throw", (PyCFunction)(void (*)(void))Call_throw, METH_FASTCALL, NULL },
	{ "close", (PyCFunction)Call_close, METH_NOARGS, NULL },
	{ NULL }
};

static PyGetSetDef Call_getset[] = {
	{ "done", (getter)Call_get_done, NULL, "Has the call finished?", NULL },
	{ NULL }
};

static PyType_Slot Call_slots[] = {
	{ Py_tp_doc, "An awaitable call to a Durable Object (or a blocked section)." },
	{ Py_tp_traverse, Call_traverse },
	{ Py_tp_clear, Call_clear },
	{ Py_tp_dealloc, Call_dealloc },
	{ Py_tp_iter, Call_await },
	{ Py_tp_iternext, Call_next },
	{ Py_am_await, Call_await },
	{ Py_tp_methods, Call_methods },
	{ Py_tp_getset, Call_getset },
	{ 0, NULL }
};

static PyType_Spec Call_spec = {
	"dobj.Call", sizeof(CallObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Call_slots
};

/* ----------------------------------------------------------------- waker */

static int Waker_traverse(WakerObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->rt);
	return 0;
}

static int Waker_clear(WakerObject *self)
{
	if (self->task) {
		dobj_task_unref(self->task);
		self->task = NULL;
	}
	Py_CLEAR(self->rt);
	return 0;
}

static void Waker_dealloc(WakerObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	Waker_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyObject *Waker_call(WakerObject *self, PyObject *args, PyObject *kw)
{
	(void)args;
	(void)kw;
	if (self->task) {
		dobj_task_wake(self->task);
		dobj_task_unref(self->task);
		self->task = NULL;
		if (self->rt)
			pump(self->rt);
	}
	Py_RETURN_NONE;
}

static PyType_Slot Waker_slots[] = {
	{ Py_tp_traverse, Waker_traverse },
	{ Py_tp_clear, Waker_clear },
	{ Py_tp_dealloc, Waker_dealloc },
	{ Py_tp_call, Waker_call },
	{ 0, NULL }
};

static PyType_Spec Waker_spec = {
	"dobj._Waker", sizeof(WakerObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Waker_slots
};

/* ------------------------------------------------------------- the driver */

/* What the coroutine of task t yielded decides how it is woken. */
static int on_yield(dobj_task *t, RuntimeObject *rt, PyObject *y)
{
	modstate *st = rt->st;
	PyObject *blocking;

	if (y == Py_None) {
		/* A bare yield (asyncio.sleep(0)) gives way to the event loop, as in
		 * asyncio: waking at once would spin inside the pump for ever when a
		 * handler polls for something only the loop can finish (an asyncio
		 * task, a socket).  Without a running loop it runs again at once. */
		PyObject *loop = PyObject_CallNoArgs(st->get_running_loop), *r;
		WakerObject *w;
		if (!loop) {
			PyErr_Clear();
			dobj_task_wake(t);
			return DOBJ_PENDING;
		}
		w = PyObject_GC_New(WakerObject, st->Waker_T);
		if (!w) {
			Py_DECREF(loop);
			return -1;
		}
		w->rt = (RuntimeObject *)Py_NewRef(rt);
		dobj_task_ref(t);
		w->task = t;
		PyObject_GC_Track(w);
		r = PyObject_CallMethodOneArg(loop, st->s_call_soon, (PyObject *)w);
		Py_DECREF(w);
		Py_DECREF(loop);
		if (!r)
			return -1;
		Py_DECREF(r);
		return DOBJ_PENDING;
	}
	if (Py_IS_TYPE(y, st->Call_T)) {
		CallObject *c = (CallObject *)y;
		if (call_is_done(c)) {
			dobj_task_wake(t);
		} else {
			if (c->waiter)
				dobj_task_unref(c->waiter);
			dobj_task_ref(t);
			c->waiter = t;
		}
		return DOBJ_PENDING;
	}
	blocking = PyObject_GetAttr(y, st->s_blocking);
	if (blocking) {
		WakerObject *w;
		PyObject *r;
		Py_DECREF(blocking);
		if (PyObject_SetAttr(y, st->s_blocking, Py_False) < 0)
			return -1;
		w = PyObject_GC_New(WakerObject, st->Waker_T);
		if (!w)
			return -1;
		w->rt = (RuntimeObject *)Py_NewRef(rt);
		dobj_task_ref(t);
		w->task = t;
		PyObject_GC_Track(w);
		r = PyObject_CallMethodOneArg(y, st->s_add_done_callback, (PyObject *)w);
		Py_DECREF(w);
		if (!r)
			return -1;
		Py_DECREF(r);
		return DOBJ_PENDING;
	}
	PyErr_Clear();
	PyErr_Format(PyExc_RuntimeError,
		"a Durable Object handler awaited %.100s, which dobj cannot wait for "
		"(await coroutines, asyncio futures or dobj calls)", Py_TYPE(y)->tp_name);
	return -1;
}

static PyObject *rpc_invoke(dobj_task *t, RuntimeObject *rt, PyObject *inst);
static dobj_val *rpc_value(RuntimeObject *rt, PyObject *o);
static void val_free(void *v);

/* Finish a task with the value its handler returned (a new reference). */
static void finish_value(dobj_task *t, RuntimeObject *rt, PyObject *v)
{
	modstate *st = rt->st;

	if (dobj_task_kind_of(t) == DOBJ_TASK_CALL && dobj_task_call_kind(t) == DOBJ_CALL_RPC) {
		/* The result is copied out (structured clone): the caller never
		 * shares an object with this one. */
		dobj_val *val = rpc_value(rt, v);
		Py_DECREF(v);
		if (!val) {
			raise_task(t);
			return;
		}
		dobj_task_return_value(t, val, val_free);
		return;
	}

	if (dobj_task_kind_of(t) == DOBJ_TASK_CALL && dobj_task_call_kind(t) == DOBJ_CALL_FETCH &&
	    !PyObject_TypeCheck(v, (PyTypeObject *)st->Response)) {
		NamespaceObject *ns = dobj_ns_class_data(dobj_obj_ns(dobj_task_obj(t)));
		PyErr_Format(PyExc_TypeError, "%.100s.fetch() returned %.100s; it must return a dobj.Response",
			ns && ns->cls ? ((PyTypeObject *)ns->cls)->tp_name : "DurableObject",
			v == Py_None ? "None" : Py_TYPE(v)->tp_name);
		Py_DECREF(v);
		raise_task(t);
		return;
	}
	dobj_task_return(t, v);
}

/* Advance the coroutine of t once. */
static int drive(dobj_task *t, RuntimeObject *rt, PyObject *coro)
{
	PyObject *out = NULL;
	PySendResult r = PyIter_Send(coro, Py_None, &out);

	if (r == PYGEN_RETURN) {
		finish_value(t, rt, out);
		return DOBJ_OK;
	}
	if (r == PYGEN_ERROR) {
		if (dobj_task_kind_of(t) == DOBJ_TASK_BACKGROUND) {
			/* Nobody awaits wait_until work: report its failure rather than
			 * drop it (the object itself is not affected). */
			PyErr_WriteUnraisable(coro);
			dobj_task_raise(t, DOBJ_EUSER, "a ctx.wait_until() task failed", NULL);
			return DOBJ_OK;
		}
		raise_task(t);
		return DOBJ_OK;
	}
	{
		int rc = on_yield(t, rt, out);
		Py_DECREF(out);
		if (rc < 0) {
			/* Throw the problem into the handler so that its finally blocks
			 * run, then fail the task. */
			raise_task(t);
			return DOBJ_OK;
		}
		return rc;
	}
}

/* Make an awaitable's iterator (coroutines are their own). */
static PyObject *awaitable_iter(PyObject *v)
{
	if (PyCoro_CheckExact(v) || PyGen_CheckExact(v))
		return Py_NewRef(v);
	if (Py_TYPE(v)->tp_as_async && Py_TYPE(v)->tp_as_async->am_await)
		return Py_TYPE(v)->tp_as_async->am_await(v);
	return NULL;
}

/* Start a handler's result: a value finishes at once, an awaitable is driven. */
static int start_with(dobj_task *t, RuntimeObject *rt, PyObject *r)
{
	PyObject *it;

	if (!r) {
		raise_task(t);
		return DOBJ_OK;
	}
	it = awaitable_iter(r);
	if (!it) {
		if (PyErr_Occurred()) {
			Py_DECREF(r);
			raise_task(t);
			return DOBJ_OK;
		}
		finish_value(t, rt, r);
		return DOBJ_OK;
	}
	Py_DECREF(r);
	dobj_task_set_host(t, it);
	return drive(t, rt, it);
}

static PyObject *alarm_info(dobj_task *t)
{
	double when = 0;
	int retry = 0;
	PyObject *types, *ns_cls, *info;

	dobj_task_alarm_info(t, &when, &retry);
	types = PyImport_ImportModule("types");
	if (!types)
		return NULL;
	ns_cls = PyObject_GetAttrString(types, "SimpleNamespace");
	Py_DECREF(types);
	if (!ns_cls)
		return NULL;
	info = PyObject_CallNoArgs(ns_cls);
	Py_DECREF(ns_cls);
	if (!info)
		return NULL;
	if (PyObject_SetAttrString(info, "scheduled_time", PyFloat_FromDouble(when)) < 0 ||
	    PyObject_SetAttrString(info, "retry_count", PyLong_FromLong(retry)) < 0 ||
	    PyObject_SetAttrString(info, "is_retry", PyBool_FromLong(retry > 0)) < 0) {
		Py_DECREF(info);
		return NULL;
	}
	return info;
}

/* The step of every CALL task of a Python class. */
static int class_step(dobj_task *t, void *data)
{
	NamespaceObject *ns = data;
	RuntimeObject *rt = ns->rt;
	PyObject *coro = dobj_task_host(t), *inst, *r = NULL, *arg;

	if (!rt) {
		/* The GC cleared the namespace before closing its runtime. */
		dobj_task_raise(t, DOBJ_ECLOSED, "the runtime is closed", NULL);
		return DOBJ_OK;
	}
	if (coro)
		return drive(t, rt, coro);
	inst = dobj_obj_instance(dobj_task_obj(t));
	if (!inst) {
		dobj_task_raise(t, DOBJ_ERROR, "the object has no instance", NULL);
		return DOBJ_OK;
	}
	switch (dobj_task_call_kind(t)) {
	case DOBJ_CALL_FETCH:
		r = PyObject_CallMethodOneArg(inst, rt->st->s_fetch, dobj_task_request(t));
		break;
	case DOBJ_CALL_ALARM:
		arg = alarm_info(t);
		if (arg) {
			r = PyObject_CallMethodOneArg(inst, rt->st->s_alarm, arg);
			Py_DECREF(arg);
		}
		break;
	case DOBJ_CALL_RPC:
		r = rpc_invoke(t, rt, inst);
		if (!r && !PyErr_Occurred())
			return DOBJ_OK; /* refused (no such method): the task is finished */
		break;
	default:
		dobj_task_raise(t, DOBJ_ENOHANDLER, "this call kind is not supported by Python classes",
			NULL);
		return DOBJ_OK;
	}
	return start_with(t, rt, r);
}

/* The step of BLOCK and BACKGROUND tasks: host is the coroutine. */
static int coro_step(dobj_task *t, void *data)
{
	return drive(t, (RuntimeObject *)data, dobj_task_host(t));
}

/* --------------------------------------------------------------- context */

static int Context_traverse(ContextObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->rt);
	Py_VISIT(self->id);
	Py_VISIT(self->dict);
	Py_VISIT(self->storage);
	if (self->core_error && self->obj && dobj_obj_dead(self->obj))
		Py_VISIT(self->core_error);
	return 0;
}

/* Remember the error the core just stored on an aborted incarnation (see
 * ContextObject.core_error). */
static void note_core_error(dobj_obj *obj, int was_dead, void *ctx, PyObject *err)
{
	if (obj && ctx && err && !was_dead && dobj_obj_dead(obj) &&
	    Py_TYPE((PyObject *)ctx)->tp_traverse == (traverseproc)Context_traverse)
		((ContextObject *)ctx)->core_error = err;
}

static int Context_clear(ContextObject *self)
{
	Py_CLEAR(self->rt);
	Py_CLEAR(self->id);
	Py_CLEAR(self->dict);
	Py_CLEAR(self->storage);
	return 0;
}

static void Context_dealloc(ContextObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->obj) {
		dobj_obj_unref(self->obj);
		self->obj = NULL;
	}
	Context_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static int ctx_alive(ContextObject *self)
{
	if (!self->rt || !self->rt->rt || dobj_rt_closed(self->rt->rt) || dobj_obj_dead(self->obj)) {
		PyErr_SetString(self->rt ? self->rt->st->Error : PyExc_RuntimeError,
			"this object was reset; its context can no longer be used");
		return 0;
	}
	return 1;
}

/* Turn a reason into (message, exception). */
static PyObject *reason_exception(modstate *st, PyObject *reason)
{
	if (!reason || reason == Py_None)
		return PyObject_CallOneArg(st->Error, PyUnicode_FromString(
			"Application called abort() to reset Durable Object."));
	if (PyExceptionInstance_Check(reason))
		return Py_NewRef(reason);
	{
		PyObject *s = PyObject_Str(reason), *e;
		if (!s)
			return NULL;
		e = PyObject_CallOneArg(st->Error, s);
		Py_DECREF(s);
		return e;
	}
}

static PyObject *Context_abort(ContextObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *exc, *s;
	const char *msg;

	if (nargs > 1) {
		PyErr_SetString(PyExc_TypeError, "abort(reason=None)");
		return NULL;
	}
	if (!ctx_alive(self))
		return NULL;
	exc = reason_exception(self->rt->st, nargs ? args[0] : NULL);
	if (!exc)
		return NULL;
	s = PyObject_Str(exc);
	msg = s ? PyUnicode_AsUTF8(s) : NULL;
	if (!msg)
		PyErr_Clear();
	{
		/* The core keeps a copy: the original is raised here and picks up
		 * this caller's frames, which must not hang off the core's value. */
		PyObject *box = error_box_shared(copy_exception(exc));
		dobj_obj_abort(self->obj, DOBJ_EABORTED, msg ? msg : "aborted", box);
		note_core_error(self->obj, 0, self, box);
	}
	/* Outside a step nobody else runs what the abort woke (handlers that
	 * awaited a call to this object): pump now.  Inside one, the running
	 * pump does; pump() also completes futures deferred by call_done. */
	if (self->rt->rt && !dobj_rt_pumping(self->rt->rt))
		pump(self->rt);
	else
		flush_deferred(self->rt->st);
	Py_XDECREF(s);
	/* Nothing after abort() runs in the handler. */
	PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
	Py_DECREF(exc);
	return NULL;
}

/* Run an awaitable's iterator (`it`, taken) as a task of `kind` on the
 * object; return a Call over it. */
static PyObject *spawn_coro(ContextObject *self, dobj_task_kind kind, PyObject *it)
{
	RuntimeObject *rt = self->rt;
	dobj_task *t;
	int rc;

	rc = dobj_task_spawn(&t, rt->rt, self->obj, kind, coro_step, rt, it, NULL, NULL);
	if (rc < 0)
		return raise_core(rt->st, rc); /* the core released it */
	if (!dobj_rt_pumping(rt->rt))
		pump(rt);
	return (PyObject *)call_new(rt, t, NULL, 0);
}

static PyObject *Context_block_concurrency_while(ContextObject *self, PyObject *fn)
{
	PyObject *r, *it;

	if (!ctx_alive(self))
		return NULL;
	if (!PyCallable_Check(fn)) {
		PyErr_Format(PyExc_TypeError, "block_concurrency_while() needs a callable, got %.100s",
			Py_TYPE(fn)->tp_name);
		return NULL;
	}
	r = PyObject_CallNoArgs(fn);
	if (!r) {
		/* fn failed at once: the object is reset, as when it fails later. */
		char msg[1024];
		PyObject *exc = fetch_exception(msg, sizeof(msg));
		if (exc) {
			PyObject *box = error_box_shared(copy_exception(exc));
			dobj_obj_abort(self->obj, DOBJ_EUSER, msg, box);
			note_core_error(self->obj, 0, self, box);
			if (self->rt->rt && !dobj_rt_pumping(self->rt->rt))
				pump(self->rt);
			else
				flush_deferred(self->rt->st);
			PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
			Py_DECREF(exc);
		}
		return NULL;
	}
	it = awaitable_iter(r);
	if (!it) {
		/* A plain function: it ran to the end with nothing interleaved. */
		CallObject *c;
		if (PyErr_Occurred()) {
			Py_DECREF(r);
			return NULL;
		}
		c = call_new(self->rt, NULL, NULL, 0);
		if (c)
			c->value = r;
		else
			Py_DECREF(r);
		return (PyObject *)c;
	}
	Py_DECREF(r);
	return spawn_coro(self, DOBJ_TASK_BLOCK, it);
}

static PyObject *Context_wait_until(ContextObject *self, PyObject *awaitable)
{
	PyObject *it, *call;

	if (!ctx_alive(self))
		return NULL;
	it = awaitable_iter(awaitable);
	if (!it) {
		if (!PyErr_Occurred())
			PyErr_Format(PyExc_TypeError, "wait_until() needs an awaitable, got %.100s",
				Py_TYPE(awaitable)->tp_name);
		return NULL;
	}
	call = spawn_coro(self, DOBJ_TASK_BACKGROUND, it);
	if (!call)
		return NULL;
	Py_DECREF(call);
	Py_RETURN_NONE;
}

static PyObject *Context_get_id(ContextObject *self, void *c)
{
	(void)c;
	return Py_NewRef(self->id);
}

static PyMethodDef Context_methods[] = {
	{ "abort", (PyCFunction)(void (*)(void))Context_abort, METH_FASTCALL,
		"Reset the object: calls in progress and later calls on stubs bound to it fail with reason." },
	{ "block_concurrency_while", (PyCFunction)Context_block_concurrency_while, METH_O,
		"Deliver nothing else to the object until fn() finishes; await it for fn's result." },
	{ "wait_until", (PyCFunction)Context_wait_until, METH_O,
		"Keep background work (an awaitable) alive." },
	{ NULL }
};

static PyObject *Context_get_storage(ContextObject *self, void *c)
{
	(void)c;
	if (!self->storage) {
		if (!ctx_alive(self))
			return NULL;
		self->storage = dobjpy_storage_new(&self->rt->st->storage, (PyObject *)self, self->obj);
		if (!self->storage)
			return NULL;
	}
	return Py_NewRef(self->storage);
}

/* An alarm was set from outside a pump: re-arm the loop's timer. */
static void ctx_alarm_changed(PyObject *ctx)
{
	ContextObject *c = (ContextObject *)ctx;

	if (c->rt && c->rt->rt && !dobj_rt_closed(c->rt->rt) && !dobj_rt_pumping(c->rt->rt))
		schedule_timers(c->rt);
}

static PyGetSetDef Context_getset[] = {
	{ "id", (getter)Context_get_id, NULL, "The object's ID.", NULL },
	{ "storage", (getter)Context_get_storage, NULL,
		"The object's durable storage (key-value, SQL, alarm).", NULL },
	{ NULL }
};

static PyMemberDef Context_members[] = {
	{ "__dictoffset__", T_PYSSIZET, offsetof(ContextObject, dict), READONLY, NULL },
	{ NULL }
};

static PyType_Slot Context_slots[] = {
	{ Py_tp_doc, "The state of one object: ctx.id, block_concurrency_while, abort, wait_until." },
	{ Py_tp_traverse, Context_traverse },
	{ Py_tp_clear, Context_clear },
	{ Py_tp_dealloc, Context_dealloc },
	{ Py_tp_methods, Context_methods },
	{ Py_tp_getset, Context_getset },
	{ Py_tp_members, Context_members },
	{ 0, NULL }
};

static PyType_Spec Context_spec = {
	"dobj.Context", sizeof(ContextObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Context_slots
};

/* Construct an instance: cls(ctx, env). */
static int class_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	NamespaceObject *ns = data;
	RuntimeObject *rt = ns->rt;
	modstate *st = rt->st;
	ContextObject *ctx;
	const char *name;
	size_t len;
	PyObject *pyname = NULL, *inst;
	char msg[1024];

	ctx = PyObject_GC_New(ContextObject, st->Context_T);
	if (!ctx)
		goto fail;
	ctx->rt = (RuntimeObject *)Py_NewRef(rt);
	ctx->obj = obj;
	dobj_obj_ref(obj);
	ctx->dict = NULL;
	ctx->storage = NULL;
	ctx->core_error = NULL;
	name = dobj_obj_name(obj, &len);
	if (name && !(pyname = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "surrogatepass"))) {
		ctx->id = NULL;
		PyObject_GC_Track(ctx);
		Py_DECREF(ctx);
		goto fail;
	}
	ctx->id = id_new(st, ns, dobj_obj_id(obj), pyname);
	Py_XDECREF(pyname);
	PyObject_GC_Track(ctx);
	if (!ctx->id) {
		Py_DECREF(ctx);
		goto fail;
	}
	dobj_obj_set_ctx(obj, Py_NewRef(ctx)); /* the core's reference keeps ctx alive below */
	inst = PyObject_CallFunctionObjArgs(ns->cls, (PyObject *)ctx, rt->env, NULL);
	Py_DECREF(ctx);
	if (!inst) {
		/* The core aborts the object with this error, unless the
		 * constructor aborted it already. */
		*error = error_box_shared(fetch_exception(msg, sizeof(msg)));
		note_core_error(obj, dobj_obj_dead(obj), ctx, *error);
		return dobj_error_set(DOBJ_EUSER, "%s", msg);
	}
	*instance = inst;
	return DOBJ_OK;
fail:
	*error = error_box(fetch_exception(msg, sizeof(msg)));
	return dobj_error_set(DOBJ_EUSER, "%s", msg);
}

/* ------------------------------------------------------------------ stubs */

static int Stub_traverse(StubObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->ns);
	Py_VISIT(self->id);
	return 0;
}

static int Stub_clear(StubObject *self)
{
	Py_CLEAR(self->id);
	return 0; /* the namespace stays: the stub's core half needs its runtime */
}

static void Stub_dealloc(StubObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->stub) {
		dobj_stub_free(self->stub);
		self->stub = NULL;
	}
	Stub_clear(self);
	Py_CLEAR(self->ns);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static dobj_msg *request_msg(modstate *st, PyObject *req, const char *url);
static void msg_free(void *m);
static PyObject *Stub_rpc(StubObject *self, PyObject *const *args, Py_ssize_t nargs,
	PyObject *kwnames);
static PyObject *Stub_getattro(PyObject *self, PyObject *name);

/* stub.fetch(url_or_request, *, method=None, headers=None, body=None) */
static PyObject *Stub_fetch(StubObject *self, PyObject *const *args, Py_ssize_t nargs,
	PyObject *kwnames)
{
	NamespaceObject *ns = self->ns;
	RuntimeObject *rt = ns->rt;
	modstate *st = state_of_type(Py_TYPE(self));
	PyObject *req, *url;
	const char *u;
	Py_ssize_t ulen;
	dobj_task *t;
	int rc;

	if (nargs != 1) {
		PyErr_SetString(PyExc_TypeError, "fetch() takes one positional argument: a URL or a dobj.Request");
		return NULL;
	}
	/* rt is NULL once the GC has cleared the namespace (a finaliser in the
	 * same garbage may still hold this stub). */
	if (!rt || !rt->rt || dobj_rt_closed(rt->rt)) {
		PyErr_SetString(st->Error, "the runtime is closed");
		return NULL;
	}
	if (!kwnames && PyUnicode_CheckExact(args[0])) {
		req = PyObject_CallOneArg(st->Request, args[0]);
	} else {
		/* Requests, keyword arguments: the Python side builds a copy. */
		req = PyObject_Vectorcall(st->make_request, args, nargs, kwnames);
	}
	if (!req)
		return NULL;
	url = PyObject_GetAttr(req, st->s_url);
	if (!url || !(u = PyUnicode_AsUTF8AndSize(url, &ulen))) {
		Py_XDECREF(url);
		Py_DECREF(req);
		return NULL;
	}
	if (dobj_ns_is_native(ns->ns)) {
		/* A native class reads a C message, not a Python request. */
		dobj_msg *m = request_msg(st, req, u);
		Py_DECREF(req);
		if (!m) {
			Py_DECREF(url);
			return NULL;
		}
		rc = dobj_stub_call_ex(&t, self->stub, DOBJ_CALL_FETCH, NULL, u, (size_t)ulen, m,
			msg_free, NULL, NULL);
	} else {
		rc = dobj_stub_call(&t, self->stub, DOBJ_CALL_FETCH, NULL, u, (size_t)ulen, req, NULL, NULL);
	}
	Py_DECREF(url);
	if (rc < 0)
		return raise_core(st, rc); /* the core released req */
	{
		CallObject *c = call_new(rt, t, self->id, 1);
		if (!c)
			return NULL;
		pump(rt);
		return (PyObject *)c;
	}
}

/* -------------------------------------------------------------------- RPC */

static void val_free(void *v) { dobj_val_free(v); }
static void msg_free(void *m) { dobj_msg_free(m); }

/* The Namespace object of a core namespace of this runtime (borrowed). */
static NamespaceObject *ns_object(RuntimeObject *rt, dobj_ns *ns)
{
	Py_ssize_t pos = 0;
	PyObject *k, *v;

	while (rt->namespaces && PyDict_Next(rt->namespaces, &pos, &k, &v))
		if (((NamespaceObject *)v)->ns == ns)
			return (NamespaceObject *)v;
	return NULL;
}

/* Stubs and IDs travel as references to namespaces of the same runtime. */
static dobj_val *rpc_to_val(void *data, PyObject *o)
{
	RuntimeObject *rt = data;
	modstate *st = rt->st;
	const char *name = NULL;
	Py_ssize_t n = 0;

	if (PyObject_TypeCheck(o, st->Stub_T)) {
		StubObject *s = (StubObject *)o;
		size_t len;
		if (!s->ns || s->ns->rt != rt || !s->stub) {
			PyErr_SetString(PyExc_TypeError, "a stub of another runtime cannot be sent over RPC");
			return NULL;
		}
		name = dobj_stub_name(s->stub, &len);
		return dobj_val_stub(s->ns->ns, dobj_stub_id(s->stub), name, len);
	}
	if (PyObject_TypeCheck(o, st->Id_T)) {
		IdObject *i = (IdObject *)o;
		if (!i->ns || i->ns->rt != rt) {
			PyErr_SetString(PyExc_TypeError, "an ID of another runtime cannot be sent over RPC");
			return NULL;
		}
		if (i->name && !(name = PyUnicode_AsUTF8AndSize(i->name, &n)))
			return NULL;
		return dobj_val_id(i->ns->ns, &i->id, name, (size_t)n);
	}
	return NULL; /* no exception: the mapping raises its TypeError */
}

static PyObject *rpc_from_val(void *data, const dobj_val *v)
{
	RuntimeObject *rt = data;
	const dobj_id *id;
	const char *name;
	size_t len;
	dobj_ns *ns = dobj_val_get_ref(v, &id, &name, &len);
	NamespaceObject *nso = ns ? ns_object(rt, ns) : NULL;
	PyObject *pyname = NULL, *out;
	IdObject *ido;

	if (!nso) {
		PyErr_SetString(rt->st->Error, "a stub or ID of a namespace this runtime does not know");
		return NULL;
	}
	if (name && !(pyname = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "surrogatepass")))
		return NULL;
	ido = id_new(rt->st, nso, id, pyname);
	Py_XDECREF(pyname);
	if (!ido || dobj_val_type_of(v) == DOBJ_VAL_ID)
		return (PyObject *)ido;
	out = (PyObject *)stub_new(nso, ido);
	Py_DECREF(ido);
	return out;
}

static dobj_val *rpc_value(RuntimeObject *rt, PyObject *o)
{
	dobjpy_val_hooks hooks = { rpc_to_val, rpc_from_val, rt };
	return dobjpy_to_val(&rt->st->values, o, &hooks);
}

static PyObject *rpc_object(RuntimeObject *rt, const dobj_val *v)
{
	dobjpy_val_hooks hooks = { rpc_to_val, rpc_from_val, rt };
	return dobjpy_from_val(&rt->st->values, v, &hooks);
}

/* Keyword arguments travel in an object next to the positional ones. */
#define RPC_ARGS "__dobj_args__"
#define RPC_KWARGS "__dobj_kwargs__"

/* The receiving side: call instance.NAME(*args, **kwargs) with fresh copies.
 * NULL with no exception when the task was refused (finished here). */
static PyObject *rpc_invoke(dobj_task *t, RuntimeObject *rt, PyObject *inst)
{
	const char *name = dobj_task_method(t);
	PyObject *attr, *payload, *args = NULL, *kwargs = NULL, *fn, *r = NULL;
	char msg[300];

	/* Public methods of the class only: not instance attributes, not
	 * private names, not the lifecycle handlers. */
	if (name && name[0] != '_' && strcmp(name, "fetch") != 0 && strcmp(name, "alarm") != 0) {
		attr = PyObject_GetAttrString((PyObject *)Py_TYPE(inst), name);
		if (attr && PyCallable_Check(attr) && !PyType_Check(attr)) {
			Py_DECREF(attr);
			goto found;
		}
		Py_XDECREF(attr);
		PyErr_Clear();
	}
	snprintf(msg, sizeof(msg), "The RPC receiver does not implement the method \"%s\".",
		name ? name : "");
	dobj_task_raise(t, DOBJ_ENOHANDLER, msg, NULL);
	return NULL;
found:
	payload = rpc_object(rt, dobj_task_request(t));
	if (!payload)
		return NULL;
	if (PyDict_Check(payload)) {
		PyObject *a = PyDict_GetItemString(payload, RPC_ARGS);
		kwargs = PyDict_GetItemString(payload, RPC_KWARGS);
		args = a ? PySequence_Tuple(a) : PyTuple_New(0);
		Py_XINCREF(kwargs);
	} else {
		args = PySequence_Tuple(payload);
	}
	Py_DECREF(payload);
	if (args && (fn = PyObject_GetAttrString(inst, name))) {
		r = PyObject_Call(fn, args, kwargs && PyDict_Check(kwargs) ? kwargs : NULL);
		Py_DECREF(fn);
	}
	Py_XDECREF(args);
	Py_XDECREF(kwargs);
	return r;
}

/* stub._rpc(method, *args, **kwargs): copy the arguments, send, await. */
static PyObject *Stub_rpc(StubObject *self, PyObject *const *args, Py_ssize_t nargs,
	PyObject *kwnames)
{
	NamespaceObject *ns = self->ns;
	RuntimeObject *rt = ns ? ns->rt : NULL;
	modstate *st = state_of_type(Py_TYPE(self));
	PyObject *pos, *payload, *kw = NULL;
	const char *name;
	Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	dobj_val *val;
	dobj_task *t;
	int rc;

	if (nargs < 1 || !PyUnicode_Check(args[0])) {
		PyErr_SetString(PyExc_TypeError, "_rpc() needs a method name");
		return NULL;
	}
	if (!rt || !rt->rt || dobj_rt_closed(rt->rt)) {
		PyErr_SetString(st->Error, "the runtime is closed");
		return NULL;
	}
	name = PyUnicode_AsUTF8(args[0]);
	if (!name)
		return NULL;
	pos = PyTuple_New(nargs - 1);
	if (!pos)
		return NULL;
	for (i = 1; i < nargs; i++)
		PyTuple_SET_ITEM(pos, i - 1, Py_NewRef(args[i]));
	if (nkw) {
		if (dobj_ns_is_native(ns->ns)) {
			Py_DECREF(pos);
			PyErr_Format(PyExc_TypeError, "%s() of a native class takes positional arguments only",
				name);
			return NULL;
		}
		kw = PyDict_New();
		for (i = 0; kw && i < nkw; i++)
			if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0)
				Py_CLEAR(kw);
		payload = kw ? Py_BuildValue("{sOsO}", RPC_ARGS, pos, RPC_KWARGS, kw) : NULL;
		Py_XDECREF(kw);
		Py_DECREF(pos);
	} else {
		payload = pos;
	}
	if (!payload)
		return NULL;
	/* Every argument converts before anything is sent. */
	val = rpc_value(rt, payload);
	Py_DECREF(payload);
	if (!val)
		return NULL;
	/* A native method checks arity and types here, in the caller. */
	if (dobj_native_check(ns->ns, name, val) < 0 && dobj_error_last_code() != DOBJ_ENOHANDLER) {
		dobj_val_free(val);
		PyErr_SetString(PyExc_TypeError, dobj_error_last());
		return NULL;
	}
	rc = dobj_stub_call_ex(&t, self->stub, DOBJ_CALL_RPC, name, NULL, 0, val, val_free, NULL, NULL);
	if (rc < 0)
		return raise_core(st, rc);
	{
		CallObject *c = call_new(rt, t, self->id, 0);
		if (!c)
			return NULL;
		pump(rt);
		return (PyObject *)c;
	}
}

/* stub.NAME for any public name the type does not define: an RPC method. */
static PyObject *Stub_getattro(PyObject *self, PyObject *name)
{
	modstate *st = state_of_type(Py_TYPE(self));
	PyObject *rpc, *r;

	if (!PyUnicode_Check(name) || PyUnicode_GET_LENGTH(name) == 0 ||
	    PyUnicode_READ_CHAR(name, 0) == '_' || _PyType_Lookup(Py_TYPE(self), name))
		return PyObject_GenericGetAttr(self, name);
	rpc = PyObject_GetAttrString(self, "_rpc");
	if (!rpc)
		return NULL;
	r = PyObject_CallFunctionObjArgs(st->partial, rpc, name, NULL);
	Py_DECREF(rpc);
	return r;
}

/* A Python request as a C message for a native class. */
static dobj_msg *request_msg(modstate *st, PyObject *req, const char *url)
{
	PyObject *method = NULL, *headers = NULL, *items = NULL, *body = NULL;
	dobj_msg *m = NULL;
	const char *mname;
	Py_ssize_t i;

	(void)st;
	if (!(method = PyObject_GetAttrString(req, "method")) || !(mname = PyUnicode_AsUTF8(method)))
		goto done;
	m = dobj_msg_new_request(url, mname);
	if (!m) {
		PyErr_NoMemory();
		goto done;
	}
	if (!(headers = PyObject_GetAttrString(req, "headers")) ||
	    !(items = PyObject_CallMethod(headers, "items", NULL)) ||
	    !(body = PyObject_GetAttrString(req, "body")))
		goto fail;
	{
		PyObject *seq = PySequence_Fast(items, "headers.items() must be a sequence");
		if (!seq)
			goto fail;
		for (i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
			PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
			const char *k, *v;
			if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
			    !(k = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 0))) ||
			    !(v = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 1))) ||
			    dobj_msg_set_header(m, k, v) < 0) {
				Py_DECREF(seq);
				if (!PyErr_Occurred())
					PyErr_SetString(PyExc_TypeError, "bad header");
				goto fail;
			}
		}
		Py_DECREF(seq);
	}
	if (!PyBytes_Check(body)) {
		PyErr_SetString(PyExc_TypeError, "a request body must be bytes");
		goto fail;
	}
	if (dobj_msg_set_body(m, PyBytes_AS_STRING(body), (size_t)PyBytes_GET_SIZE(body)) < 0) {
		PyErr_NoMemory();
		goto fail;
	}
	goto done;
fail:
	dobj_msg_free(m);
	m = NULL;
done:
	Py_XDECREF(method);
	Py_XDECREF(headers);
	Py_XDECREF(items);
	Py_XDECREF(body);
	return m;
}

/* A core result: a dobj_val (RPC) or a dobj_msg (fetch to a native class). */
static PyObject *core_result(CallObject *self, void *res)
{
	modstate *st = self->rt->st;

	if (self->is_fetch) {
		const dobj_msg *m = res;
		PyObject *headers = PyList_New(0), *body, *kw, *args, *r = NULL;
		size_t i;
		if (!headers)
			return NULL;
		for (i = 0; i < m->nheaders; i++) {
			PyObject *pair = Py_BuildValue("(ss)", m->header_names[i], m->header_values[i]);
			if (!pair || PyList_Append(headers, pair) < 0) {
				Py_XDECREF(pair);
				Py_DECREF(headers);
				return NULL;
			}
			Py_DECREF(pair);
		}
		body = PyBytes_FromStringAndSize((const char *)m->body, (Py_ssize_t)m->body_len);
		kw = body ? Py_BuildValue("{sisO}", "status", m->status, "headers", headers) : NULL;
		args = body ? PyTuple_Pack(1, body) : NULL;
		if (kw && args)
			r = PyObject_Call(st->Response, args, kw);
		Py_XDECREF(kw);
		Py_XDECREF(args);
		Py_XDECREF(body);
		Py_DECREF(headers);
		return r;
	}
	return rpc_object(self->rt, res);
}

static PyObject *Stub_get_id(StubObject *self, void *c)
{
	(void)c;
	return Py_NewRef(self->id);
}

static PyObject *Stub_get_name(StubObject *self, void *c)
{
	(void)c;
	return Id_get_name(self->id, NULL);
}

static PyObject *Stub_repr(StubObject *self)
{
	return PyUnicode_FromFormat("<dobj.Stub %S>", self->id);
}

static PyMethodDef Stub_methods[] = {
	{ "fetch", (PyCFunction)(void (*)(void))Stub_fetch, METH_FASTCALL | METH_KEYWORDS,
		"Send a request to the object; await the dobj.Response." },
	{ "_rpc", (PyCFunction)(void (*)(void))Stub_rpc, METH_FASTCALL | METH_KEYWORDS,
		"_rpc(method, *args, **kwargs): what stub.method(*args, **kwargs) does." },
	{ NULL }
};

static PyGetSetDef Stub_getset[] = {
	{ "id", (getter)Stub_get_id, NULL, "The object's ID.", NULL },
	{ "name", (getter)Stub_get_name, NULL, "The name the stub was made from, or None.", NULL },
	{ NULL }
};

static PyType_Slot Stub_slots[] = {
	{ Py_tp_doc, "A stub: calls reach the one live instance of its object." },
	{ Py_tp_traverse, Stub_traverse },
	{ Py_tp_clear, Stub_clear },
	{ Py_tp_dealloc, Stub_dealloc },
	{ Py_tp_repr, Stub_repr },
	{ Py_tp_methods, Stub_methods },
	{ Py_tp_getset, Stub_getset },
	{ Py_tp_getattro, Stub_getattro },
	{ 0, NULL }
};

static PyType_Spec Stub_spec = {
	"dobj.Stub", sizeof(StubObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Stub_slots
};

/* ---------------------------------------------------------------- runtime */

static int visit_core(void *v, void *arg)
{
	visitproc *pv = ((void **)arg)[0];
	void *varg = ((void **)arg)[1];
	return (*pv)((PyObject *)v, varg);
}

static int Runtime_traverse(RuntimeObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->env);
	Py_VISIT(self->namespaces);
	Py_VISIT(self->timer);
	if (self->rt) {
		void *pair[2] = { &visit, arg };
		int rc = dobj_rt_visit(self->rt, visit_core, pair);
		if (rc)
			return rc;
	}
	return 0;
}

static int Runtime_clear(RuntimeObject *self)
{
	if (self->rt) {
		dobj_rt_clear(self->rt);
		flush_deferred(self->st);
	}
	Py_CLEAR(self->env);
	Py_CLEAR(self->namespaces);
	if (self->timer && self->st)
		cancel_timer(self);
	Py_CLEAR(self->timer);
	return 0;
}

static void Runtime_dealloc(RuntimeObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->weakreflist)
		PyObject_ClearWeakRefs((PyObject *)self);
	Runtime_clear(self);
	if (self->rt) {
		dobj_rt_free(self->rt);
		self->rt = NULL;
		flush_deferred(self->st);
	}
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyObject *Runtime_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "env", "id_seed", "storage", "durability", "idle_timeout",
		"virtual_time", NULL };
	modstate *st = state_of_type(type);
	PyObject *env = Py_None, *seed = Py_None, *storage = Py_None, *durability = Py_None,
		*idle = Py_None;
	int virtual_time = 0;
	RuntimeObject *self;
	dobj_rt_opts opts = DOBJ_RT_OPTS_INIT;
	PyObject *storage_bytes = NULL;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OOOOp:Runtime", kwlist, &env, &seed, &storage,
		    &durability, &idle, &virtual_time))
		return NULL;
	if (!st->Env) {
		PyErr_SetString(PyExc_RuntimeError, "dobj is not initialised (import dobj, not dobj._dobj)");
		return NULL;
	}
	if (env != Py_None && !PyDict_Check(env)) {
		PyErr_Format(PyExc_TypeError, "env must be a dict, got %.100s", Py_TYPE(env)->tp_name);
		return NULL;
	}
	self = (RuntimeObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	self->st = st;
	self->namespaces = PyDict_New();
	if (!self->namespaces)
		goto fail;
	self->env = PyObject_CallFunctionObjArgs(st->Env, env, self->namespaces, NULL);
	if (!self->env)
		goto fail;
	if (seed != Py_None) {
		self->seed = PyLong_AsUnsignedLongLongMask(seed);
		if (PyErr_Occurred())
			goto fail;
		self->has_seed = 1;
	}
	opts.host.retain = host_retain;
	opts.host.release = host_release;
	opts.virtual_time = virtual_time;
	self->virtual_time = virtual_time;
	if (storage != Py_None) {
		if (!PyUnicode_FSConverter(storage, &storage_bytes))
			goto fail;
		opts.storage_dir = PyBytes_AS_STRING(storage_bytes);
	}
	if (durability != Py_None) {
		if (PyUnicode_Check(durability) && (PyUnicode_CompareWithASCIIString(durability, "power") == 0))
			opts.durability = DOBJ_DURABLE_POWER;
		else if (!(PyUnicode_Check(durability) && (PyUnicode_CompareWithASCIIString(durability, "process") == 0))) {
			PyErr_SetString(PyExc_ValueError, "durability must be \"process\" or \"power\"");
			goto fail;
		}
	}
	if (idle != Py_None) {
		double s = PyFloat_AsDouble(idle);
		if (PyErr_Occurred())
			goto fail;
		opts.idle_timeout_ms = s > 0 ? s * 1000.0 : -1;
	}
	rc = dobj_rt_new(&self->rt, &opts);
	Py_XDECREF(storage_bytes);
	storage_bytes = NULL;
	if (rc < 0) {
		raise_core(st, rc);
		goto fail;
	}
	return (PyObject *)self;
fail:
	Py_XDECREF(storage_bytes);
	Py_DECREF(self);
	return NULL;
}

/*
 * Bind a namespace: `cls` is the Python class (None for a native class) and
 * `klass` the core class (for Python classes, completed here).
 */
static PyObject *bind_ns(RuntimeObject *self, PyObject *binding, PyObject *unique_key,
	PyObject *cls, dobj_class *klass)
{
	modstate *st = self->st;
	NamespaceObject *ns;
	const char *key = NULL, *bname;
	Py_ssize_t keylen = 0;
	int rc;

	if (!self->rt || dobj_rt_closed(self->rt)) {
		PyErr_SetString(st->Error, "the runtime is closed");
		return NULL;
	}
	if (unique_key != Py_None) {
		if (!PyUnicode_Check(unique_key)) {
			PyErr_SetString(PyExc_TypeError, "unique_key must be a str");
			return NULL;
		}
		key = PyUnicode_AsUTF8AndSize(unique_key, &keylen);
		if (!key)
			return NULL;
	}
	bname = PyUnicode_AsUTF8(binding);
	if (!bname)
		return NULL;
	if (PyDict_GetItemWithError(self->namespaces, binding)) {
		PyErr_Format(PyExc_ValueError, "a namespace is already bound as %U", binding);
		return NULL;
	}
	ns = PyObject_GC_New(NamespaceObject, st->Namespace_T);
	if (!ns)
		return NULL;
	ns->rt = (RuntimeObject *)Py_NewRef(self);
	ns->cls = Py_NewRef(cls);
	ns->binding = Py_NewRef(binding);
	ns->unique_key = Py_NewRef(unique_key == Py_None ? binding : unique_key);
	ns->ns = NULL;
	ns->has_fetch = (klass->flags & DOBJ_CLASS_FETCH) != 0;
	PyObject_GC_Track(ns);
	if (cls != Py_None) {
		PyObject *attr;
		attr = PyObject_GetAttr(cls, st->s_fetch);
		ns->has_fetch = attr != NULL;
		Py_XDECREF(attr);
		PyErr_Clear();
		klass->name = ((PyTypeObject *)cls)->tp_name;
		klass->flags = (ns->has_fetch ? DOBJ_CLASS_FETCH : 0);
		attr = PyObject_GetAttr(cls, st->s_alarm);
		if (attr)
			klass->flags |= DOBJ_CLASS_ALARM;
		Py_XDECREF(attr);
		PyErr_Clear();
		klass->data = ns;
		klass->construct = class_construct;
		klass->step = class_step;
	}
	rc = dobj_ns_new(&ns->ns, self->rt, bname, key, (size_t)keylen, klass);
	if (rc < 0) {
		Py_DECREF(ns);
		return raise_core(st, rc);
	}
	if (self->has_seed)
		dobj_idkey_seed(dobj_ns_idkey(ns->ns), self->seed ^ (unsigned long long)dobj_rt_ns_count(self->rt));
	if (PyDict_SetItem(self->namespaces, binding, (PyObject *)ns) < 0) {
		Py_DECREF(ns);
		return NULL;
	}
	schedule_timers(self); /* alarms stored in a storage directory */
	return (PyObject *)ns;
}

static PyObject *Runtime_bind(RuntimeObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "binding", "cls", "unique_key", NULL };
	PyObject *binding, *cls, *unique_key = Py_None;
	dobj_class klass = { 0 };

	if (!PyArg_ParseTupleAndKeywords(args, kw, "UO|O:bind", kwlist, &binding, &cls, &unique_key))
		return NULL;
	if (!PyType_Check(cls)) {
		PyErr_Format(PyExc_TypeError, "bind() needs a class, got %.100s", Py_TYPE(cls)->tp_name);
		return NULL;
	}
	return bind_ns(self, binding, unique_key, cls, &klass);
}

/* bind_native(binding, path, class_name, unique_key=None): a class written
 * in C, loaded from a shared library (core/include/dobj/native.h). */
static PyObject *Runtime_bind_native(RuntimeObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "binding", "path", "class_name", "unique_key", NULL };
	PyObject *binding, *path, *unique_key = Py_None, *path_bytes = NULL, *r;
	const char *class_name;
	dobj_native_class *nc;
	dobj_class klass;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "UO&s|O:bind_native", kwlist, &binding,
		    PyUnicode_FSConverter, &path_bytes, &class_name, &unique_key))
		return NULL;
	path = path_bytes;
	rc = dobj_native_load(&nc, PyBytes_AS_STRING(path), class_name);
	Py_DECREF(path_bytes);
	if (rc < 0)
		return raise_core(self->st, rc);
	dobj_native_class_of(nc, &klass);
	r = bind_ns(self, binding, unique_key, Py_None, &klass);
	return r;
}

static PyObject *Runtime_on_timer(RuntimeObject *self, PyObject *unused)
{
	(void)unused;
	Py_CLEAR(self->timer);
	if (self->rt && !dobj_rt_closed(self->rt))
		pump(self);
	Py_RETURN_NONE;
}

/* Module function _timer_fired(weakref): the asyncio timer's callback. */
static PyObject *mod_timer_fired(PyObject *m, PyObject *wr)
{
	modstate *st = PyModule_GetState(m);
	PyObject *rt;

	if (!PyWeakref_CheckRef(wr))
		Py_RETURN_NONE;
	rt = PyWeakref_GetObject(wr); /* borrowed */
	if (rt == Py_None || !PyObject_TypeCheck(rt, st->Runtime_T))
		Py_RETURN_NONE;
	Py_INCREF(rt);
	{
		PyObject *r = Runtime_on_timer((RuntimeObject *)rt, NULL);
		Py_DECREF(rt);
		return r;
	}
}

/* Cancel the pending asyncio timer, if any (keeps a pending exception). */
static void cancel_timer(RuntimeObject *self)
{
	PyObject *exc_type, *exc_value, *exc_tb, *r;

	if (!self->timer)
		return;
	PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
	r = PyObject_CallMethodNoArgs(self->timer, self->st->s_cancel);
	Py_XDECREF(r);
	PyErr_Clear();
	Py_CLEAR(self->timer);
	PyErr_Restore(exc_type, exc_value, exc_tb);
}

static PyObject *Runtime_advance(RuntimeObject *self, PyObject *seconds)
{
	double s = PyFloat_AsDouble(seconds);
	int rc;

	if (s == -1 && PyErr_Occurred())
		return NULL;
	if (!self->rt || dobj_rt_closed(self->rt)) {
		PyErr_SetString(self->st->Error, "the runtime is closed");
		return NULL;
	}
	rc = dobj_rt_advance(self->rt, s * 1000.0);
	flush_deferred(self->st);
	if (rc < 0)
		return raise_core(self->st, rc);
	schedule_timers(self);
	Py_RETURN_NONE;
}

static PyObject *Runtime_close(RuntimeObject *self, PyObject *unused)
{
	(void)unused;
	if (self->rt) {
		dobj_rt_clear(self->rt);
		flush_deferred(self->st);
	}
	if (self->timer) {
		PyObject *r = PyObject_CallMethodNoArgs(self->timer, self->st->s_cancel);
		Py_XDECREF(r);
		PyErr_Clear();
		Py_CLEAR(self->timer);
	}
	Py_RETURN_NONE;
}

static PyObject *Runtime_pending(RuntimeObject *self, void *c)
{
	(void)c;
	return PyLong_FromSize_t(self->rt ? dobj_rt_pending(self->rt) : 0);
}

static PyObject *Runtime_get_env(RuntimeObject *self, void *c)
{
	(void)c;
	return Py_NewRef(self->env ? self->env : Py_None);
}

static PyObject *Runtime_get_namespaces(RuntimeObject *self, void *c)
{
	(void)c;
	return PyDictProxy_New(self->namespaces);
}

static PyObject *Runtime_live(RuntimeObject *self, PyObject *binding)
{
	NamespaceObject *ns = (NamespaceObject *)PyDict_GetItemWithError(self->namespaces, binding);
	if (!ns) {
		if (!PyErr_Occurred())
			PyErr_SetObject(PyExc_KeyError, binding);
		return NULL;
	}
	return PyLong_FromSize_t(dobj_ns_live(ns->ns));
}

static PyObject *Runtime_now(RuntimeObject *self, PyObject *unused)
{
	(void)unused;
	if (!self->rt) {
		PyErr_SetString(self->st->Error, "the runtime is closed");
		return NULL;
	}
	return PyFloat_FromDouble(dobj_rt_wall_ms(self->rt));
}

/* Run what is ready and what is due; re-arm the loop's timer. */
static PyObject *Runtime_pump(RuntimeObject *self, PyObject *unused)
{
	(void)unused;
	if (self->rt && !dobj_rt_closed(self->rt))
		pump(self);
	Py_RETURN_NONE;
}

static PyObject *Runtime_next_timer(RuntimeObject *self, PyObject *unused)
{
	double next;

	(void)unused;
	if (!self->rt || dobj_rt_closed(self->rt) || (next = dobj_rt_next_timer_ms(self->rt)) < 0)
		Py_RETURN_NONE;
	return PyFloat_FromDouble(next / 1000.0);
}

static PyObject *Runtime_drain(RuntimeObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "timeout", NULL };
	PyObject *timeout = Py_None;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:drain", kwlist, &timeout))
		return NULL;
	if (!self->st->drain) {
		PyErr_SetString(PyExc_RuntimeError, "dobj is not initialised (import dobj)");
		return NULL;
	}
	return PyObject_CallFunctionObjArgs(self->st->drain, (PyObject *)self, timeout, NULL);
}

static PyObject *Runtime_open_storages(RuntimeObject *self, PyObject *binding)
{
	NamespaceObject *ns = (NamespaceObject *)PyDict_GetItemWithError(self->namespaces, binding);
	if (!ns) {
		if (!PyErr_Occurred())
			PyErr_SetObject(PyExc_KeyError, binding);
		return NULL;
	}
	return PyLong_FromSize_t(dobj_ns_open_storages(ns->ns));
}

static PyObject *Runtime_get_virtual(RuntimeObject *self, void *c)
{
	(void)c;
	return PyBool_FromLong(self->virtual_time);
}

static PyMethodDef Runtime_methods[] = {
	{ "now", (PyCFunction)Runtime_now, METH_NOARGS,
		"The wall clock alarms use, in ms since the epoch (virtual time included)." },
	{ "drain", (PyCFunction)(void (*)(void))Runtime_drain, METH_VARARGS | METH_KEYWORDS,
		"await drain(timeout=None): run until no call is unfinished and no alarm is pending." },
	{ "open_storages", (PyCFunction)Runtime_open_storages, METH_O,
		"Number of databases open in the namespace bound as `binding`." },
	{ "_pump", (PyCFunction)Runtime_pump, METH_NOARGS, NULL },
	{ "_next_timer", (PyCFunction)Runtime_next_timer, METH_NOARGS, NULL },
	{ "bind", (PyCFunction)(void (*)(void))Runtime_bind, METH_VARARGS | METH_KEYWORDS,
		"bind(binding, cls, unique_key=None) -> Namespace" },
	{ "bind_native", (PyCFunction)(void (*)(void))Runtime_bind_native, METH_VARARGS | METH_KEYWORDS,
		"bind_native(binding, path, class_name, unique_key=None) -> Namespace of a C class" },
	{ "close", (PyCFunction)Runtime_close, METH_NOARGS,
		"Reset every object; unfinished calls fail with 'the runtime is closed'." },
	{ "advance", (PyCFunction)Runtime_advance, METH_O,
		"Virtual time only: move the clock by `seconds` and run what falls due." },
	{ "live_objects", (PyCFunction)Runtime_live, METH_O,
		"Number of live instances in the namespace bound as `binding`." },
	{ "_on_timer", (PyCFunction)Runtime_on_timer, METH_NOARGS, NULL },
	{ NULL }
};

static PyGetSetDef Runtime_getset[] = {
	{ "env", (getter)Runtime_get_env, NULL, "Plain values and every namespace, by name.", NULL },
	{ "namespaces", (getter)Runtime_get_namespaces, NULL, "Bound namespaces by binding.", NULL },
	{ "pending", (getter)Runtime_pending, NULL, "Unfinished tasks plus pending timers.", NULL },
	{ "virtual_time", (getter)Runtime_get_virtual, NULL, "Was it made with virtual_time=True?", NULL },
	{ NULL }
};

static PyMemberDef Runtime_members[] = {
	{ "__weaklistoffset__", T_PYSSIZET, offsetof(RuntimeObject, weakreflist), READONLY, NULL },
	{ NULL }
};

static PyType_Slot Runtime_slots[] = {
	{ Py_tp_doc, "Runtime(env=None, *, id_seed=None, storage=None, durability=None, "
		"idle_timeout=None, virtual_time=False): namespaces, objects and their calls." },
	{ Py_tp_new, Runtime_new },
	{ Py_tp_traverse, Runtime_traverse },
	{ Py_tp_clear, Runtime_clear },
	{ Py_tp_dealloc, Runtime_dealloc },
	{ Py_tp_methods, Runtime_methods },
	{ Py_tp_getset, Runtime_getset },
	{ Py_tp_members, Runtime_members },
	{ 0, NULL }
};

static PyType_Spec Runtime_spec = {
	"dobj.Runtime", sizeof(RuntimeObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
	Runtime_slots
};

/* ----------------------------------------------------------------- module */

static PyObject *mod_setup(PyObject *m, PyObject *args)
{
	modstate *st = PyModule_GetState(m);
	PyObject *req, *res, *env, *mk;

	if (!PyArg_ParseTuple(args, "OOOO:_setup", &req, &res, &env, &mk))
		return NULL;
	if (!PyType_Check(req) || !PyType_Check(res) || !PyCallable_Check(env) || !PyCallable_Check(mk)) {
		PyErr_SetString(PyExc_TypeError, "_setup(Request, Response, Env, make_request)");
		return NULL;
	}
	Py_XSETREF(st->Request, Py_NewRef(req));
	Py_XSETREF(st->Response, Py_NewRef(res));
	Py_XSETREF(st->Env, Py_NewRef(env));
	Py_XSETREF(st->make_request, Py_NewRef(mk));
	Py_RETURN_NONE;
}

static PyObject *mod_setup_storage(PyObject *m, PyObject *args)
{
	modstate *st = PyModule_GetState(m);
	PyObject *txn, *drain;

	if (!PyArg_ParseTuple(args, "OO:_setup_storage", &txn, &drain))
		return NULL;
	Py_XSETREF(st->storage.transaction, Py_NewRef(txn));
	Py_XSETREF(st->drain, Py_NewRef(drain));
	Py_RETURN_NONE;
}

static PyObject *mod_serialize(PyObject *m, PyObject *value)
{
	return dobjpy_encode_bytes(&((modstate *)PyModule_GetState(m))->values, value);
}

static PyObject *mod_deserialize(PyObject *m, PyObject *data)
{
	Py_buffer view;
	PyObject *r;

	if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
		return NULL;
	r = dobjpy_decode(&((modstate *)PyModule_GetState(m))->values, view.buf, (size_t)view.len);
	PyBuffer_Release(&view);
	return r;
}

/* Tests of the dobj_val path (RPC): Python -> dobj_val -> blob -> dobj_val -> Python. */
static PyObject *mod_val_roundtrip(PyObject *m, PyObject *value)
{
	dobjpy_values *v = &((modstate *)PyModule_GetState(m))->values;
	dobj_val *val = dobjpy_to_val(v, value, NULL), *back = NULL;
	unsigned char *blob = NULL;
	size_t len;
	PyObject *r = NULL;

	if (!val)
		return NULL;
	if (dobj_val_encode(val, &blob, &len) < 0 || dobj_val_decode(blob, len, &back) < 0)
		PyErr_SetString(PyExc_ValueError, dobj_error_last());
	else
		r = dobjpy_from_val(v, back, NULL);
	free(blob);
	dobj_val_free(val);
	dobj_val_free(back);
	return r;
}

static PyMethodDef mod_methods[] = {
	{ "_setup", mod_setup, METH_VARARGS, NULL },
	{ "_timer_fired", mod_timer_fired, METH_O, NULL },
	{ "_setup_storage", mod_setup_storage, METH_VARARGS, NULL },
	{ "serialize", mod_serialize, METH_O,
		"The bytes storage keeps for `value` (V8's serialization format, as workerd)." },
	{ "deserialize", mod_deserialize, METH_O, "The value of a V8 serialization blob." },
	{ "_val_roundtrip", mod_val_roundtrip, METH_O, NULL },
	{ NULL }
};

static int mod_exec(PyObject *m)
{
	modstate *st = PyModule_GetState(m);
	PyObject *asyncio, *bases;

#define TYPE(field, spec) do { \
		st->field = (PyTypeObject *)PyType_FromModuleAndSpec(m, &spec, NULL); \
		if (!st->field || PyModule_AddType(m, st->field) < 0) \
			return -1; \
	} while (0)
	TYPE(Runtime_T, Runtime_spec);
	TYPE(Namespace_T, Namespace_spec);
	TYPE(Id_T, Id_spec);
	TYPE(Stub_T, Stub_spec);
	TYPE(Call_T, Call_spec);
	TYPE(Context_T, Context_spec);
	TYPE(Waker_T, Waker_spec);
#undef TYPE
	st->Error = PyErr_NewExceptionWithDoc("dobj.Error", "Base of dobj's errors.", NULL, NULL);
	if (!st->Error || PyModule_AddObjectRef(m, "Error", st->Error) < 0)
		return -1;
	bases = PyTuple_Pack(2, st->Error, PyExc_ValueError);
	if (!bases)
		return -1;
	st->InvalidIdError = PyErr_NewExceptionWithDoc("dobj.InvalidIdError",
		"A malformed ID string, or an ID of another namespace.", bases, NULL);
	Py_DECREF(bases);
	if (!st->InvalidIdError || PyModule_AddObjectRef(m, "InvalidIdError", st->InvalidIdError) < 0)
		return -1;
	if (dobjpy_values_init(&st->values, st->Error) < 0 ||
	    dobjpy_storage_init(m, &st->storage, st->Error, &st->values) < 0)
		return -1;
	st->storage.alarm_changed = ctx_alarm_changed;
	asyncio = PyImport_ImportModule("asyncio");
	if (!asyncio)
		return -1;
	st->get_running_loop = PyObject_GetAttrString(asyncio, "get_running_loop");
	if (!(st->deferred = PyList_New(0)))
		return -1;
	if (!(st->timer_fired = PyObject_GetAttrString(m, "_timer_fired")))
		return -1;
	Py_DECREF(asyncio);
	if (!st->get_running_loop)
		return -1;
	{
		PyObject *functools = PyImport_ImportModule("functools");
		if (!functools)
			return -1;
		st->partial = PyObject_GetAttrString(functools, "partial");
		Py_DECREF(functools);
		if (!st->partial)
			return -1;
	}
#define STR(field, text) do { if (!(st->field = PyUnicode_InternFromString(text))) return -1; } while (0)
	STR(s_fetch, "fetch");
	STR(s_alarm, "alarm");
	STR(s_blocking, "_asyncio_future_blocking");
	STR(s_add_done_callback, "add_done_callback");
	STR(s_create_future, "create_future");
	STR(s_set_result, "set_result");
	STR(s_done, "done");
	STR(s_remote, "remote");
	STR(s_durable_object_id, "durable_object_id");
	STR(s_url, "url");
	STR(s_call_later, "call_later");
	STR(s_cancel, "cancel");
	STR(s_await, "__await__");
	STR(s_call_soon, "call_soon");
#undef STR
	return 0;
}

static int mod_traverse(PyObject *m, visitproc visit, void *arg)
{
	modstate *st = PyModule_GetState(m);
	Py_VISIT(st->Runtime_T);
	Py_VISIT(st->Namespace_T);
	Py_VISIT(st->Id_T);
	Py_VISIT(st->Stub_T);
	Py_VISIT(st->Call_T);
	Py_VISIT(st->Context_T);
	Py_VISIT(st->Waker_T);
	Py_VISIT(st->Error);
	Py_VISIT(st->InvalidIdError);
	Py_VISIT(st->Request);
	Py_VISIT(st->Response);
	Py_VISIT(st->Env);
	Py_VISIT(st->make_request);
	Py_VISIT(st->get_running_loop);
	Py_VISIT(st->deferred);
	Py_VISIT(st->timer_fired);
	Py_VISIT(st->drain);
	Py_VISIT(st->partial);
	dobjpy_values_traverse(&st->values, visit, arg);
	dobjpy_storage_traverse(&st->storage, visit, arg);
	return 0;
}

static int mod_clear(PyObject *m)
{
	modstate *st = PyModule_GetState(m);
	Py_CLEAR(st->Runtime_T);
	Py_CLEAR(st->Namespace_T);
	Py_CLEAR(st->Id_T);
	Py_CLEAR(st->Stub_T);
	Py_CLEAR(st->Call_T);
	Py_CLEAR(st->Context_T);
	Py_CLEAR(st->Waker_T);
	Py_CLEAR(st->Error);
	Py_CLEAR(st->InvalidIdError);
	Py_CLEAR(st->Request);
	Py_CLEAR(st->Response);
	Py_CLEAR(st->Env);
	Py_CLEAR(st->make_request);
	Py_CLEAR(st->get_running_loop);
	Py_CLEAR(st->deferred);
	Py_CLEAR(st->timer_fired);
	Py_CLEAR(st->s_fetch);
	Py_CLEAR(st->s_alarm);
	Py_CLEAR(st->s_blocking);
	Py_CLEAR(st->s_add_done_callback);
	Py_CLEAR(st->s_create_future);
	Py_CLEAR(st->s_set_result);
	Py_CLEAR(st->s_done);
	Py_CLEAR(st->s_remote);
	Py_CLEAR(st->s_durable_object_id);
	Py_CLEAR(st->s_url);
	Py_CLEAR(st->s_call_later);
	Py_CLEAR(st->s_cancel);
	Py_CLEAR(st->s_call_soon);
	Py_CLEAR(st->s_await);
	Py_CLEAR(st->drain);
	Py_CLEAR(st->partial);
	dobjpy_values_clear(&st->values);
	dobjpy_storage_clear(&st->storage);
	return 0;
}

static void mod_free(void *m)
{
	mod_clear(m);
}

static PyModuleDef_Slot mod_slots[] = {
	{ Py_mod_exec, mod_exec },
	{ 0, NULL }
};

static struct PyModuleDef moddef = {
	PyModuleDef_HEAD_INIT, "dobj._dobj", "The C half of dobj.", sizeof(modstate), mod_methods,
	mod_slots, mod_traverse, mod_clear, mod_free
};

PyMODINIT_FUNC PyInit__dobj(void)
{
	return PyModuleDef_Init(&moddef);
}
