/*
 * The core's test kit (dobj/testkit.h) for dobj.testing: module functions
 * that translate values; every rule (what is listed, when an object may be
 * evicted, what reset drops, the leak report) is the core's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "module.h"

static module_state *state(PyObject *m)
{
	return PyModule_GetState(m);
}

static RuntimeObject *as_runtime(module_state *st, PyObject *o)
{
	RuntimeObject *rt;

	if (!PyObject_TypeCheck(o, st->Runtime_T)) {
		PyErr_Format(PyExc_TypeError, "expected a dobj.Runtime, got %.100s", Py_TYPE(o)->tp_name);
		return NULL;
	}
	rt = (RuntimeObject *)o;
	if (!rt->rt || dobj_rt_closed(rt->rt)) {
		PyErr_SetString(st->Error, DOBJ_MSG_CLOSED);
		return NULL;
	}
	return rt;
}

static NamespaceObject *as_namespace(module_state *st, PyObject *o)
{
	NamespaceObject *ns;

	if (!PyObject_TypeCheck(o, st->Namespace_T)) {
		PyErr_Format(PyExc_TypeError, "expected a dobj.Namespace, got %.100s",
			Py_TYPE(o)->tp_name);
		return NULL;
	}
	ns = (NamespaceObject *)o;
	if (!ns->rt || !as_runtime(st, (PyObject *)ns->rt))
		return NULL;
	return ns;
}

static StubObject *as_stub(module_state *st, PyObject *o)
{
	StubObject *s;

	if (!PyObject_TypeCheck(o, st->Stub_T)) {
		PyErr_Format(PyExc_TypeError, "expected a dobj.Stub, got %.100s", Py_TYPE(o)->tp_name);
		return NULL;
	}
	s = (StubObject *)o;
	if (!s->ns || !as_namespace(st, (PyObject *)s->ns))
		return NULL;
	return s;
}

/* _tk_list_ids(namespace) -> [DurableObjectId] */
static PyObject *tk_list_ids(PyObject *m, PyObject *arg)
{
	module_state *st = state(m);
	NamespaceObject *ns = as_namespace(st, arg);
	dobj_id *ids;
	size_t n, i;
	PyObject *list;
	int rc;

	if (!ns)
		return NULL;
	if ((rc = dobj_ns_list_ids(ns->ns, &ids, &n)) < 0)
		return raise_core_error(st, rc);
	list = PyList_New((Py_ssize_t)n);
	for (i = 0; list && i < n; i++) {
		IdObject *id = id_object_new(st, ns, &ids[i], NULL);
		if (!id) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, (PyObject *)id);
	}
	dobj_free(ids);
	return list;
}

/* _tk_evict(stub) -> bool */
static PyObject *tk_evict(PyObject *m, PyObject *arg)
{
	module_state *st = state(m);
	StubObject *s = as_stub(st, arg);
	int rc;

	if (!s)
		return NULL;
	rc = dobj_ns_evict(s->ns->ns, dobj_stub_id(s->stub));
	if (rc < 0)
		return raise_core_error(st, rc);
	runtime_pump(s->ns->rt);
	return PyBool_FromLong(rc);
}

/* _tk_evict_all(runtime) -> int */
static PyObject *tk_evict_all(PyObject *m, PyObject *arg)
{
	module_state *st = state(m);
	RuntimeObject *rt = as_runtime(st, arg);
	int rc;

	if (!rt)
		return NULL;
	if ((rc = dobj_rt_evict_all(rt->rt)) < 0)
		return raise_core_error(st, rc);
	runtime_pump(rt);
	return PyLong_FromLong(rc);
}

/* _tk_abort_all(runtime, reason) -> int: as ctx.abort(reason) on each. */
static PyObject *tk_abort_all(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	module_state *st = state(m);
	RuntimeObject *rt;
	PyObject *exc, *s, *box;
	const char *msg;
	int rc;

	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "_tk_abort_all(runtime, reason)");
		return NULL;
	}
	if (!(rt = as_runtime(st, args[0])))
		return NULL;
	if (!(exc = abort_reason_exception(st, args[1])))
		return NULL;
	s = PyObject_Str(exc);
	msg = s ? PyUnicode_AsUTF8(s) : NULL;
	if (!msg)
		PyErr_Clear();
	box = error_box_shared(copy_exception(exc));
	Py_DECREF(exc);
	rc = dobj_rt_abort_all(rt->rt, msg ? msg : DOBJ_MSG_ABORT_DEFAULT, box);
	Py_XDECREF(s);
	if (rc < 0)
		return raise_core_error(st, rc);
	runtime_pump(rt);
	return PyLong_FromLong(rc);
}

/* _tk_reset(runtime) */
static PyObject *tk_reset(PyObject *m, PyObject *arg)
{
	module_state *st = state(m);
	RuntimeObject *rt = as_runtime(st, arg);
	int rc;

	if (!rt)
		return NULL;
	if ((rc = dobj_rt_reset(rt->rt)) < 0)
		return raise_core_error(st, rc);
	runtime_pump(rt);
	Py_RETURN_NONE;
}

/* _tk_run_alarm(stub) -> Call or None */
static PyObject *tk_run_alarm(PyObject *m, PyObject *arg)
{
	module_state *st = state(m);
	StubObject *s = as_stub(st, arg);
	dobj_task *t = NULL;
	CallObject *c;
	int rc;

	if (!s)
		return NULL;
	rc = dobj_ns_run_alarm(s->ns->ns, dobj_stub_id(s->stub), &t);
	if (rc < 0)
		return raise_core_error(st, rc);
	if (rc == 0)
		Py_RETURN_NONE;
	c = call_object_new(s->ns->rt, t, s->id, 0);
	if (!c)
		return NULL;
	runtime_pump(s->ns->rt);
	return (PyObject *)c;
}

/* _tk_run_in(stub, fn) -> Call: fn(instance, ctx) inside the object. */
static PyObject *tk_run_in(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	module_state *st = state(m);
	StubObject *s;
	dobj_task *t = NULL;
	CallObject *c;
	int rc;

	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "_tk_run_in(stub, fn)");
		return NULL;
	}
	if (!(s = as_stub(st, args[0])))
		return NULL;
	if (!PyCallable_Check(args[1])) {
		PyErr_Format(PyExc_TypeError, "run_in_durable_object() needs a callable fn(instance, "
			"ctx), got %.100s", Py_TYPE(args[1])->tp_name);
		return NULL;
	}
	rc = dobj_stub_run(&t, s->stub, Py_NewRef(args[1]), NULL, NULL);
	if (rc < 0)
		return raise_core_error(st, rc); /* the core released fn */
	c = call_object_new(s->ns->rt, t, s->id, 0);
	if (!c)
		return NULL;
	runtime_pump(s->ns->rt);
	return (PyObject *)c;
}

/* _tk_leaks(runtime) -> str or None */
static PyObject *tk_leaks(PyObject *m, PyObject *arg)
{
	module_state *st = state(m);
	RuntimeObject *rt;
	char *text = NULL;
	PyObject *r;
	int rc;

	if (!PyObject_TypeCheck(arg, st->Runtime_T)) {
		PyErr_SetString(PyExc_TypeError, "expected a dobj.Runtime");
		return NULL;
	}
	rt = (RuntimeObject *)arg;
	if (!rt->rt || dobj_rt_closed(rt->rt))
		Py_RETURN_NONE;
	if ((rc = dobj_rt_leaks(rt->rt, &text)) < 0)
		return raise_core_error(st, rc);
	if (!text)
		Py_RETURN_NONE;
	r = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
	dobj_free(text);
	return r;
}

/* _tk_clock(runtime) -> float: the runtime's clock in seconds (with
 * virtual time, from 0: precise to the nanosecond, unlike the wall clock's
 * milliseconds since the epoch), for an asyncio loop that follows it. */
static PyObject *tk_clock(PyObject *m, PyObject *arg)
{
	module_state *st = state(m);

	if (!PyObject_TypeCheck(arg, st->Runtime_T)) {
		PyErr_SetString(PyExc_TypeError, "expected a dobj.Runtime");
		return NULL;
	}
	if (!((RuntimeObject *)arg)->rt) {
		PyErr_SetString(st->Error, DOBJ_MSG_CLOSED);
		return NULL;
	}
	return PyFloat_FromDouble(dobj_rt_now_ms(((RuntimeObject *)arg)->rt) / 1000.0);
}

PyMethodDef testkit_methods[] = {
	{ "_tk_clock", tk_clock, METH_O, NULL },
	{ "_tk_list_ids", tk_list_ids, METH_O, NULL },
	{ "_tk_evict", tk_evict, METH_O, NULL },
	{ "_tk_evict_all", tk_evict_all, METH_O, NULL },
	{ "_tk_abort_all", (PyCFunction)(void (*)(void))tk_abort_all, METH_FASTCALL, NULL },
	{ "_tk_reset", tk_reset, METH_O, NULL },
	{ "_tk_run_alarm", tk_run_alarm, METH_O, NULL },
	{ "_tk_run_in", (PyCFunction)(void (*)(void))tk_run_in, METH_FASTCALL, NULL },
	{ "_tk_leaks", tk_leaks, METH_O, NULL },
	{ NULL }
};
