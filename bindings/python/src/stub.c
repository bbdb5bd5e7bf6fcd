/*
 * stub.c — dobj.Stub: fetch() and RPC calls (stub.method(...)) to the one
 * live instance of an object.  Each call is a dobj.Call (call.c).
 */
#include "module.h"

StubObject *stub_object_new(NamespaceObject *self, IdObject *id)
{
	module_state *st = self->rt->st;
	StubObject *o;
	const char *name = NULL;
	PyObject *tmp = NULL;
	Py_ssize_t n = 0;
	int rc;

	if (id->name && !(name = dobjpy_str_utf8(id->name, &n, &tmp)))
		return NULL;
	o = PyObject_GC_New(StubObject, st->Stub_T);
	if (!o) {
		Py_XDECREF(tmp);
		return NULL;
	}
	o->weakreflist = NULL;
	o->ns = (NamespaceObject *)Py_NewRef(self);
	o->id = (IdObject *)Py_NewRef(id);
	rc = dobj_stub_new(&o->stub, self->ns, &id->id, name, (size_t)n);
	Py_XDECREF(tmp);
	PyObject_GC_Track(o);
	if (rc < 0) {
		Py_DECREF(o);
		return (StubObject *)raise_core_error(st, rc);
	}
	return o;
}

static int Stub_traverse(StubObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->ns);
	Py_VISIT(self->id);
	/* A broken stub's own reference to the abort error (its traceback's
	 * frames may hold this stub); no other wrapper visits it. */
	if (self->stub)
		Py_VISIT((PyObject *)dobj_stub_error(self->stub));
	return 0;
}

static int Stub_clear(StubObject *self)
{
	Py_CLEAR(self->id);
	if (self->stub)
		dobj_stub_drop_error(self->stub);
	return 0; /* the namespace stays: the stub's core half needs its runtime */
}

static void Stub_dealloc(StubObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->weakreflist)
		PyObject_ClearWeakRefs((PyObject *)self);
	if (self->stub) {
		dobj_stub_free(self->stub);
		self->stub = NULL;
	}
	Stub_clear(self);
	Py_CLEAR(self->ns);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static void core_msg_free(void *m) { dobj_msg_free(m); }

/* stub.fetch(url_or_request, *, method=None, headers=None, body=None) */
static PyObject *Stub_fetch(StubObject *self, PyObject *const *args, Py_ssize_t nargs,
	PyObject *kwnames)
{
	NamespaceObject *ns = self->ns;
	RuntimeObject *rt = ns->rt;
	module_state *st = module_state_of_type(Py_TYPE(self));
	PyObject *req, *url, *url_tmp = NULL;
	const char *u;
	Py_ssize_t ulen;
	dobj_task *t;
	int rc;

	if (!st)
		return NULL;
	if (nargs != 1) {
		PyErr_SetString(PyExc_TypeError, "fetch() takes one positional argument: a URL or a dobj.Request");
		return NULL;
	}
	/* rt is NULL once the GC has cleared the namespace (a finaliser in the
	 * same garbage may still hold this stub). */
	if (!rt || !rt->rt || dobj_rt_closed(rt->rt)) {
		PyErr_SetString(st->Error, DOBJ_MSG_CLOSED);
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
	if (url && !PyUnicode_Check(url)) {
		/* A slot anyone can set (req.url = 42): never read as a str. */
		PyErr_Format(PyExc_TypeError, "a request's url must be a str, got %.100s",
			Py_TYPE(url)->tp_name);
		Py_CLEAR(url);
	}
	/* A lone surrogate in the URL goes as WTF-8, as in a Lua string; the
	 * Python object gets the request itself.  url_tmp owns such bytes. */
	if (!url || !(u = dobjpy_str_utf8(url, &ulen, &url_tmp))) {
		Py_XDECREF(url);
		Py_DECREF(req);
		return NULL;
	}
	if (dobj_ns_is_native(ns->ns)) {
		/* A native class reads a C message, not a Python request. */
		dobj_msg *m = http_request_to_msg(req, u);
		Py_DECREF(req);
		if (!m) {
			Py_XDECREF(url_tmp);
			Py_DECREF(url);
			return NULL;
		}
		rc = dobj_stub_call_ex(&t, self->stub, DOBJ_CALL_FETCH, NULL, u, (size_t)ulen, m,
			core_msg_free, NULL, NULL);
	} else {
		rc = dobj_stub_call(&t, self->stub, DOBJ_CALL_FETCH, NULL, u, (size_t)ulen, req, NULL, NULL);
	}
	Py_XDECREF(url_tmp);
	Py_DECREF(url);
	if (rc < 0)
		return raise_core_error(st, rc); /* the core released req */
	{
		CallObject *c = call_object_new(rt, t, self->id, 1);
		if (!c)
			return NULL;
		runtime_pump(rt);
		return (PyObject *)c;
	}
}

/* stub._rpc(method, *args, **kwargs): copy the arguments, send, await. */
static PyObject *Stub_rpc(StubObject *self, PyObject *const *args, Py_ssize_t nargs,
	PyObject *kwnames)
{
	NamespaceObject *ns = self->ns;
	RuntimeObject *rt = ns ? ns->rt : NULL;
	module_state *st = module_state_of_type(Py_TYPE(self));
	PyObject *pos, *payload, *kw = NULL, *name_tmp = NULL;
	const char *name;
	Py_ssize_t name_len, i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	dobj_val *val;
	dobj_task *t;
	int rc;

	if (!st)
		return NULL;
	if (nargs < 1 || !PyUnicode_Check(args[0])) {
		PyErr_SetString(PyExc_TypeError, "_rpc() needs a method name");
		return NULL;
	}
	if (!rt || !rt->rt || dobj_rt_closed(rt->rt)) {
		PyErr_SetString(st->Error, DOBJ_MSG_CLOSED);
		return NULL;
	}
	/* A name is a JavaScript string: lone surrogates go as WTF-8 (name_tmp
	 * owns those bytes), the object's side gives them back. */
	name = dobjpy_str_utf8(args[0], &name_len, &name_tmp);
	if (!name)
		return NULL;
	if (strlen(name) != (size_t)name_len) {
		/* The core takes the name up to its NUL: "add\0x" called add. */
		raise_core_error(st, dobj_rpc_no_method(name, (size_t)name_len));
		goto fail;
	}
	pos = PyTuple_New(nargs - 1);
	if (!pos)
		goto fail;
	for (i = 1; i < nargs; i++)
		PyTuple_SET_ITEM(pos, i - 1, Py_NewRef(args[i]));
	if (nkw) {
		if (dobj_ns_is_native(ns->ns)) {
			Py_DECREF(pos);
			PyErr_Format(PyExc_TypeError, "%s() of a native class takes positional arguments only",
				name);
			goto fail;
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
		goto fail;
	/* Every argument converts before anything is sent. */
	val = rpc_value_to_core(rt, payload);
	Py_DECREF(payload);
	if (!val)
		goto fail;
	/* The core checks a native method's arity and argument types here, in
	 * the caller (DOBJ_EARG: a TypeError for Python). */
	rc = dobj_stub_call_ex(&t, self->stub, DOBJ_CALL_RPC, name, NULL, 0, val, core_val_free, NULL, NULL);
	Py_XDECREF(name_tmp);
	if (rc == DOBJ_EARG) {
		PyObject *text = core_message(dobj_error_last());
		if (text) {
			PyErr_SetObject(PyExc_TypeError, text);
			Py_DECREF(text);
		}
		return NULL;
	}
	if (rc < 0)
		return raise_core_error(st, rc);
	{
		CallObject *c = call_object_new(rt, t, self->id, 0);
		if (!c)
			return NULL;
		runtime_pump(rt);
		return (PyObject *)c;
	}
fail:
	Py_XDECREF(name_tmp);
	return NULL;
}

/* Does a class in the MRO of `t` define `name`?  1, 0, or -1 with an
 * exception (what _PyType_Lookup answers, through public API only). */
static int type_defines(PyTypeObject *t, PyObject *name)
{
	PyObject *mro = t->tp_mro;
	Py_ssize_t i;
	int found = 0;

	for (i = 0; !found && mro && i < PyTuple_GET_SIZE(mro); i++) {
		PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
#if PY_VERSION_HEX >= 0x030C0000
		PyObject *dict = PyType_GetDict(base); /* builtin types keep theirs elsewhere */
#else
		PyObject *dict = Py_XNewRef(base->tp_dict);
#endif
		if (dict) {
			found = PyDict_Contains(dict, name);
			Py_DECREF(dict);
		}
	}
	return found;
}

/* stub.NAME for any public name the type does not define: an RPC method. */
static PyObject *Stub_getattro(PyObject *self, PyObject *name)
{
	module_state *st;
	PyObject *rpc, *r;
	int defined;

	if (!PyUnicode_Check(name) || PyUnicode_GET_LENGTH(name) == 0 ||
	    PyUnicode_READ_CHAR(name, 0) == '_')
		return PyObject_GenericGetAttr(self, name);
	if ((defined = type_defines(Py_TYPE(self), name)) != 0)
		return defined < 0 ? NULL : PyObject_GenericGetAttr(self, name);
	if (!(st = module_state_of_type(Py_TYPE(self))))
		return NULL;
	rpc = PyObject_GetAttrString(self, "_rpc");
	if (!rpc)
		return NULL;
	r = PyObject_CallFunctionObjArgs(st->partial, rpc, name, NULL);
	Py_DECREF(rpc);
	return r;
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

static PyMemberDef Stub_members[] = {
	{ "__weaklistoffset__", T_PYSSIZET, offsetof(StubObject, weakreflist), READONLY, NULL },
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
	{ Py_tp_members, Stub_members },
	{ Py_tp_getattro, Stub_getattro },
	{ 0, NULL }
};

static PyType_Spec Stub_spec = {
	"dobj.Stub", sizeof(StubObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Stub_slots
};

int stub_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);

	return module_add_type(m, &Stub_spec, &st->Stub_T);
}
