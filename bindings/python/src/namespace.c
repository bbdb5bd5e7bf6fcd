/*
 * namespace.c — dobj.Namespace (IDs and stubs of one bound class) and
 * dobj.DurableObjectId.
 */
#include "module.h"

IdObject *id_object_new(module_state *st, NamespaceObject *ns, const dobj_id *id, PyObject *name)
{
	IdObject *o = PyObject_GC_New(IdObject, st->Id_T);

	if (!o)
		return NULL;
	o->weakreflist = NULL;
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
	if (self->weakreflist)
		PyObject_ClearWeakRefs((PyObject *)self);
	Id_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

PyObject *Id_str(IdObject *self)
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
	int eq;

	/* DurableObjectId cannot be subclassed: a's type is the ID type. */
	if ((op != Py_EQ && op != Py_NE) || !Py_IS_TYPE(b, Py_TYPE(a)))
		Py_RETURN_NOTIMPLEMENTED;
	eq = dobj_id_equal(&((IdObject *)a)->id, &((IdObject *)b)->id);
	return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyObject *Id_equals(IdObject *self, PyObject *other)
{
	if (!Py_IS_TYPE(other, Py_TYPE(self))) {
		PyErr_Format(PyExc_TypeError, "equals() needs a DurableObjectId, got %s",
			Py_TYPE(other)->tp_name);
		return NULL;
	}
	return PyBool_FromLong(dobj_id_equal(&self->id, &((IdObject *)other)->id));
}

PyObject *Id_get_name(IdObject *self, void *closure)
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

static PyMemberDef Id_members[] = {
	{ "__weaklistoffset__", T_PYSSIZET, offsetof(IdObject, weakreflist), READONLY, NULL },
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
	{ Py_tp_members, Id_members },
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
	if (self->weakreflist)
		PyObject_ClearWeakRefs((PyObject *)self);
	Namespace_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

/* The ns pointer is valid as long as the runtime lives and is not closed. */
static int namespace_check_open(NamespaceObject *self)
{
	if (!self->rt || !self->rt->rt || dobj_rt_closed(self->rt->rt)) {
		PyErr_SetString(self->rt ? self->rt->st->Error : PyExc_RuntimeError,
			DOBJ_MSG_CLOSED);
		return 0;
	}
	return 1;
}

static PyObject *Namespace_id_from_name(NamespaceObject *self, PyObject *name)
{
	const char *p;
	PyObject *tmp;
	Py_ssize_t n;
	dobj_id id;
	int rc;

	if (!namespace_check_open(self))
		return NULL;
	/* A name is a JavaScript string: lone surrogates go as WTF-8, and the
	 * core hashes them as workerd does. */
	if (!PyUnicode_Check(name))
		return PyErr_Format(PyExc_TypeError, "a Durable Object name must be a str, got %s",
			Py_TYPE(name)->tp_name);
	if (!(p = dobjpy_str_utf8(name, &n, &tmp)))
		return NULL;
	rc = dobj_id_from_name(dobj_ns_idkey(self->ns), p, (size_t)n, &id);
	Py_XDECREF(tmp);
	if (rc < 0)
		return raise_core_error(self->rt->st, rc);
	return (PyObject *)id_object_new(self->rt->st, self, &id, name);
}

static PyObject *check_jurisdiction(module_state *st, PyObject *j)
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
	if (!namespace_check_open(self) || !check_jurisdiction(self->rt->st, j))
		return NULL;
	rc = dobj_id_new_unique(dobj_ns_idkey(self->ns), NULL, &id);
	if (rc < 0)
		return raise_core_error(self->rt->st, rc);
	return (PyObject *)id_object_new(self->rt->st, self, &id, NULL);
}

static PyObject *Namespace_id_from_string(NamespaceObject *self, PyObject *s)
{
	const char *p;
	PyObject *wtf8 = NULL;
	Py_ssize_t n;
	dobj_id id;
	int rc;

	if (!namespace_check_open(self))
		return NULL;
	if (!PyUnicode_Check(s)) {
		PyErr_Format(PyExc_TypeError, "id_from_string() needs a str, got %s", Py_TYPE(s)->tp_name);
		return NULL;
	}
	p = PyUnicode_AsUTF8AndSize(s, &n);
	if (!p) {
		/* A lone surrogate is no hex digit either: the core refuses the
		 * string (InvalidIdError, workerd's message) from its WTF-8 bytes. */
		if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
			return NULL;
		PyErr_Clear();
		if (!(wtf8 = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass")))
			return NULL;
		p = PyBytes_AS_STRING(wtf8);
		n = PyBytes_GET_SIZE(wtf8);
	}
	rc = dobj_id_from_string(dobj_ns_idkey(self->ns), p, (size_t)n, &id);
	Py_XDECREF(wtf8);
	if (rc < 0)
		return raise_core_error(self->rt->st, rc);
	return (PyObject *)id_object_new(self->rt->st, self, &id, NULL);
}

static PyObject *Namespace_get(NamespaceObject *self, PyObject *const *args, Py_ssize_t nargs,
	PyObject *kwnames)
{
	module_state *st;
	IdObject *id;
	Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0, i;

	if (!namespace_check_open(self))
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
	return (PyObject *)stub_object_new(self, id);
}

static PyObject *Namespace_get_by_name(NamespaceObject *self, PyObject *name)
{
	IdObject *id = (IdObject *)Namespace_id_from_name(self, name);
	PyObject *stub;

	if (!id)
		return NULL;
	stub = (PyObject *)stub_object_new(self, id);
	Py_DECREF(id);
	return stub;
}

static PyObject *Namespace_jurisdiction(NamespaceObject *self, PyObject *j)
{
	if (!namespace_check_open(self) || !check_jurisdiction(self->rt->st, j))
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
	{ "__weaklistoffset__", T_PYSSIZET, offsetof(NamespaceObject, weakreflist), READONLY, NULL },
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

int namespace_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);

	if (module_add_type(m, &Namespace_spec, &st->Namespace_T) < 0 ||
	    module_add_type(m, &Id_spec, &st->Id_T) < 0)
		return -1;
	return 0;
}
