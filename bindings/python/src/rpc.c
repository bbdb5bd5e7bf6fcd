/*
 * rpc.c — RPC values (the value mapping plus stubs and IDs, which travel as
 * references to namespaces of the same runtime) and the receiving side of a
 * call: instance.NAME(*args, **kwargs).
 */
#include "module.h"

void core_val_free(void *v) { dobj_val_free(v); }

/* The Namespace object of a core namespace of this runtime (borrowed). */
static NamespaceObject *runtime_namespace_of(RuntimeObject *rt, dobj_ns *ns)
{
	Py_ssize_t pos = 0;
	PyObject *k, *v;

	while (rt->namespaces && PyDict_Next(rt->namespaces, &pos, &k, &v))
		if (((NamespaceObject *)v)->ns == ns)
			return (NamespaceObject *)v;
	return NULL;
}

static dobj_val *rpc_ref_to_val(void *data, PyObject *o);

/*
 * A look-alike of a stub or ID (dobj.workers' DurableObjectStub and
 * DurableObjectId) names the dobj stub or ID it stands for with a method
 * `_dobj_rpc_value` of its type: so they travel at any depth of an RPC
 * value.  NULL without an exception when `o` is no such thing.
 */
static dobj_val *rpc_ref_of_lookalike(RuntimeObject *rt, PyObject *o)
{
	PyObject *fn, *ref;
	dobj_val *r;

	fn = PyObject_GetAttrString((PyObject *)Py_TYPE(o), "_dobj_rpc_value");
	if (!fn) {
		if (PyErr_ExceptionMatches(PyExc_AttributeError))
			PyErr_Clear();
		return NULL;
	}
	ref = PyObject_CallOneArg(fn, o);
	Py_DECREF(fn);
	if (!ref)
		return NULL;
	if (!PyObject_TypeCheck(ref, rt->st->Stub_T) && !PyObject_TypeCheck(ref, rt->st->Id_T)) {
		PyErr_Format(PyExc_TypeError, "%.100s._dobj_rpc_value() must give a dobj stub or ID, "
			"got %.100s", Py_TYPE(o)->tp_name, Py_TYPE(ref)->tp_name);
		Py_DECREF(ref);
		return NULL;
	}
	r = rpc_ref_to_val(rt, ref);
	Py_DECREF(ref);
	return r;
}

/* Stubs and IDs travel as references to namespaces of the same runtime. */
static dobj_val *rpc_ref_to_val(void *data, PyObject *o)
{
	RuntimeObject *rt = data;
	module_state *st = rt->st;
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
		PyObject *tmp = NULL;
		dobj_val *v;
		if (i->name && !(name = dobjpy_str_utf8(i->name, &n, &tmp)))
			return NULL;
		v = dobj_val_id(i->ns->ns, &i->id, name, (size_t)n);
		Py_XDECREF(tmp);
		return v;
	}
	/* Otherwise NULL and no exception: the mapping raises its TypeError. */
	return rpc_ref_of_lookalike(rt, o);
}

static PyObject *rpc_ref_from_val(void *data, const dobj_val *v)
{
	RuntimeObject *rt = data;
	const dobj_id *id;
	const char *name;
	size_t len;
	dobj_ns *ns = dobj_val_get_ref(v, &id, &name, &len);
	NamespaceObject *nso = ns ? runtime_namespace_of(rt, ns) : NULL;
	PyObject *pyname = NULL, *out;
	IdObject *ido;

	if (!nso) {
		PyErr_SetString(rt->st->Error, "a stub or ID of a namespace this runtime does not know");
		return NULL;
	}
	if (name && !(pyname = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "surrogatepass")))
		return NULL;
	ido = id_object_new(rt->st, nso, id, pyname);
	Py_XDECREF(pyname);
	if (!ido || dobj_val_type_of(v) == DOBJ_VAL_ID)
		return (PyObject *)ido;
	out = (PyObject *)stub_object_new(nso, ido);
	Py_DECREF(ido);
	return out;
}

dobj_val *rpc_value_to_core(RuntimeObject *rt, PyObject *o)
{
	dobjpy_val_hooks hooks = { rpc_ref_to_val, rpc_ref_from_val, rt };
	return dobjpy_to_val(&rt->st->values, o, &hooks);
}

PyObject *rpc_value_from_core(RuntimeObject *rt, const dobj_val *v)
{
	dobjpy_val_hooks hooks = { rpc_ref_to_val, rpc_ref_from_val, rt };
	return dobjpy_from_val(&rt->st->values, v, &hooks);
}

/* The receiving side: call instance.NAME(*args, **kwargs) with fresh copies.
 * NULL with no exception when the task was refused (finished here). */
PyObject *rpc_invoke_method(dobj_task *t, RuntimeObject *rt, PyObject *inst)
{
	const char *name = dobj_task_method(t);
	PyObject *attr, *payload, *args = NULL, *kwargs = NULL, *fn, *r = NULL, *pyname;

	/* The core refused reserved and private names already (see
	 * dobj_rpc_name_check); the method must be on the class, so instance
	 * attributes are not callable.  A name's lone surrogates came as WTF-8. */
	if (!(pyname = dobjpy_text_str(name, strlen(name))))
		return NULL;
	attr = PyObject_GetAttr((PyObject *)Py_TYPE(inst), pyname);
	if (attr && PyCallable_Check(attr) && !PyType_Check(attr)) {
		Py_DECREF(attr);
		goto found;
	}
	Py_XDECREF(attr);
	Py_DECREF(pyname);
	PyErr_Clear();
	dobj_rpc_no_method(name, strlen(name));
	dobj_task_raise(t, DOBJ_ENOHANDLER, dobj_error_last(), NULL);
	return NULL;
found:
	payload = rpc_value_from_core(rt, dobj_task_request(t));
	if (!payload) {
		Py_DECREF(pyname);
		return NULL;
	}
	if (PyDict_Check(payload)) {
		PyObject *a = PyDict_GetItemString(payload, RPC_ARGS);
		kwargs = PyDict_GetItemString(payload, RPC_KWARGS);
		args = a ? PySequence_Tuple(a) : PyTuple_New(0);
		Py_XINCREF(kwargs);
	} else {
		args = PySequence_Tuple(payload);
	}
	Py_DECREF(payload);
	if (args && (fn = PyObject_GetAttr(inst, pyname))) {
		r = PyObject_Call(fn, args, kwargs && PyDict_Check(kwargs) ? kwargs : NULL);
		Py_DECREF(fn);
	}
	Py_DECREF(pyname);
	Py_XDECREF(args);
	Py_XDECREF(kwargs);
	return r;
}
