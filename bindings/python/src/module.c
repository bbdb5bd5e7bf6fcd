/*
 * module.c — the _dobj extension module: the Python binding of the dobj core.
 *
 * The core owns the semantics (which instance, order, gates, aborts); the
 * binding translates values and drives handlers (driver.c).  The files and
 * what each holds are listed in module.h.
 *
 * Style: multi-phase init, module state, heap types, GC on every type that
 * holds Python objects (see shared/STYLE.md).
 */
#include "module.h"

PyObject *module_of_type(PyTypeObject *t)
{
#if PY_VERSION_HEX >= 0x030B0000
	return PyType_GetModuleByDef(t, &dobjpy_module_def);
#else
	PyObject *mro = t->tp_mro;
	Py_ssize_t i;

	for (i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
		PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
		PyObject *m;
		if (!PyType_HasFeature(base, Py_TPFLAGS_HEAPTYPE))
			continue;
		m = PyType_GetModule(base);
		if (!m) {
			PyErr_Clear(); /* a heap type made by a class statement */
			continue;
		}
		if (PyModule_GetDef(m) == &dobjpy_module_def)
			return m;
	}
	PyErr_Format(PyExc_TypeError, "%.100s is not a type of the dobj._dobj module", t->tp_name);
	return NULL;
#endif
}

module_state *module_state_of_type(PyTypeObject *t)
{
	PyObject *m = module_of_type(t);
	return m ? PyModule_GetState(m) : NULL;
}

static PyObject *mod_setup(PyObject *m, PyObject *args)
{
	module_state *st = PyModule_GetState(m);
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
	module_state *st = PyModule_GetState(m);
	PyObject *txn, *drain;

	if (!PyArg_ParseTuple(args, "OO:_setup_storage", &txn, &drain))
		return NULL;
	Py_XSETREF(st->storage.transaction, Py_NewRef(txn));
	Py_XSETREF(st->drain, Py_NewRef(drain));
	Py_RETURN_NONE;
}

static PyObject *mod_setup_reporting(PyObject *m, PyObject *fn)
{
	module_state *st = PyModule_GetState(m);

	if (!PyCallable_Check(fn)) {
		PyErr_SetString(PyExc_TypeError, "_setup_reporting(report_error)");
		return NULL;
	}
	Py_XSETREF(st->report_error, Py_NewRef(fn));
	Py_RETURN_NONE;
}

static PyObject *mod_serialize(PyObject *m, PyObject *value)
{
	return dobjpy_encode_bytes(&((module_state *)PyModule_GetState(m))->values, value);
}

static PyObject *mod_deserialize(PyObject *m, PyObject *data)
{
	Py_buffer view;
	PyObject *r;

	if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
		return NULL;
	r = dobjpy_decode(&((module_state *)PyModule_GetState(m))->values, view.buf, (size_t)view.len);
	PyBuffer_Release(&view);
	return r;
}

/* Tests of the dobj_val path (RPC): Python -> dobj_val -> blob -> dobj_val -> Python. */
static PyObject *mod_val_roundtrip(PyObject *m, PyObject *value)
{
	dobjpy_values *v = &((module_state *)PyModule_GetState(m))->values;
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

/* _check_status(status): the core's rule for a Response's status (the
 * caller has checked that it is an int). */
static PyObject *mod_check_status(PyObject *m, PyObject *status)
{
	int ovf;
	long long s = PyLong_AsLongLongAndOverflow(status, &ovf);

	(void)m;
	if (s == -1 && PyErr_Occurred())
		return NULL;
	if (dobj_msg_status_check(ovf ? (long long)ovf * 1000 : s) < 0) {
		PyErr_SetString(PyExc_ValueError, dobj_error_last());
		return NULL;
	}
	Py_RETURN_NONE;
}

/* _body_check(n): the core's limit on a request body a server gathers
 * (dobj.Error with its message past it). */
static PyObject *mod_body_check(PyObject *m, PyObject *n)
{
	module_state *st = PyModule_GetState(m);
	size_t len = PyLong_AsSize_t(n);

	if (len == (size_t)-1 && PyErr_Occurred()) {
		if (!PyErr_ExceptionMatches(PyExc_OverflowError))
			return NULL;
		PyErr_Clear(); /* bigger than any size: past the limit */
	}
	if (dobj_msg_body_check(len) < 0) {
		PyErr_SetString(st->Error, dobj_error_last());
		return NULL;
	}
	Py_RETURN_NONE;
}

/* _host_check(host): may a request's Host header go into the URL a server
 * builds?  dobj.Error with the core's message when not (the server answers
 * 400). */
static PyObject *mod_host_check(PyObject *m, PyObject *host)
{
	module_state *st = PyModule_GetState(m);
	const char *s;
	Py_ssize_t len;

	if (!PyUnicode_Check(host)) {
		PyErr_SetString(PyExc_TypeError, "a Host header must be a str");
		return NULL;
	}
	if (!(s = PyUnicode_AsUTF8AndSize(host, &len))) {
		/* lone surrogates: not an authority */
		PyErr_Clear();
		s = "\x01";
		len = 1;
	}
	if (dobj_msg_host_check(s, (size_t)len) < 0) {
		PyErr_SetString(st->Error, dobj_error_last());
		return NULL;
	}
	Py_RETURN_NONE;
}

/* _wire_check(method, target, host, default_host): the core's rules for a
 * request read off the wire (dobj/wire.h), for a server whose parser gives
 * the method, the target and the Host header (None: none was sent):
 * (0, method, url) as the entry gets them, or (status to answer, why, None). */
static PyObject *mod_wire_check(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	const char *method, *target, *host = NULL, *dflt;
	Py_ssize_t mlen, tlen;
	dobj_msg *msg = NULL;
	PyObject *out;
	int status = 0;

	(void)m;
	if (nargs != 4 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1]) ||
	    (args[2] != Py_None && !PyUnicode_Check(args[2])) || !PyUnicode_Check(args[3])) {
		PyErr_SetString(PyExc_TypeError,
			"_wire_check(method: str, target: str, host: str | None, default_host: str)");
		return NULL;
	}
	if (!(method = PyUnicode_AsUTF8AndSize(args[0], &mlen)) ||
	    !(target = PyUnicode_AsUTF8AndSize(args[1], &tlen)) ||
	    (args[2] != Py_None && !(host = PyUnicode_AsUTF8(args[2]))) ||
	    !(dflt = PyUnicode_AsUTF8(args[3])))
		return NULL;
	if (dobj_msg_wire_begin(method, (size_t)mlen, target, (size_t)tlen, &msg, &status) < 0)
		goto refused;
	if (host && dobj_msg_add_header(msg, "host", host) < 0) {
		status = 400;
		goto refused;
	}
	if (dobj_msg_wire_finish(msg, dflt, &status) < 0)
		goto refused;
	out = Py_BuildValue("(iss)", 0, msg->method, msg->url);
	dobj_msg_free(msg);
	return out;
refused:
	dobj_msg_free(msg);
	if (!status)
		return PyErr_NoMemory();
	return Py_BuildValue("(isO)", status, dobj_error_last(), Py_None);
}

/* _header_is_framing(name): does a server write this header itself (so a
 * response's own copy is dropped)?  The core's list. */
static PyObject *mod_header_is_framing(PyObject *m, PyObject *name)
{
	const char *s;

	(void)m;
	if (!PyUnicode_Check(name)) {
		PyErr_SetString(PyExc_TypeError, "a header name must be a str");
		return NULL;
	}
	s = PyUnicode_AsUTF8(name);
	if (!s) {
		PyErr_Clear(); /* a lone surrogate: no such header */
		Py_RETURN_FALSE;
	}
	return PyBool_FromLong(dobj_msg_header_is_framing(s));
}

/* A user's timeout for dobj_cluster_init, in seconds (None: the default),
 * as dobj_cluster_init's ms by the rule of every source
 * (dobj_cluster_opts_seconds): 0 s is refused as it is for
 * cluster_timeout=, not taken for the C API's "0: the default".  0, or
 * the core's code (its message names `name`); -1 with a Python error set
 * for a value that is not a number. */
static int init_timeout_ms(PyObject *t, const char *name, double *ms)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;
	double s;
	int rc;

	*ms = 0;
	if (t == Py_None)
		return 0;
	if ((s = PyFloat_AsDouble(t)) == -1.0 && PyErr_Occurred())
		return -1;
	if ((rc = dobj_cluster_opts_seconds(&o, DOBJ_CLUSTER_TIMEOUT, s, name)) < 0)
		return rc;
	*ms = o.timeout_ms;
	return 0;
}

/* _cluster_init(url, timeout_seconds=None): create or migrate the cluster
 * schema (dobj/cluster.h); the schema version. */
static PyObject *mod_cluster_init(PyObject *m, PyObject *args)
{
	module_state *st = PyModule_GetState(m);
	PyObject *o, *t = Py_None, *tmp;
	const char *url;
	Py_ssize_t n;
	double ms;
	int version = 0, rc;

	if (!PyArg_ParseTuple(args, "O|O:cluster_init", &o, &t))
		return NULL;
	if ((rc = init_timeout_ms(t, "timeout", &ms)) != 0)
		return rc == -1 ? NULL : raise_core_error(st, rc);
	if (!(url = dobjpy_str_arg(o, "the cluster URL", &n, &tmp)))
		return NULL;
	rc = dobj_cluster_init(url, (size_t)n, ms, &version);
	Py_XDECREF(tmp);
	if (rc < 0)
		return raise_core_error(st, rc);
	return PyLong_FromLong(version);
}

/* _cluster_init_status(url, timeout_seconds=None, name="timeout") -> (code,
 * version, message): dobj_cluster_init's own code (0, DOBJ_EARG for a bad
 * URL or timeout, DOBJ_ESTATE for a newer schema, ...) for `dobj cluster
 * init`'s exit status; `name` (the flag) names a bad timeout. */
static PyObject *mod_cluster_init_status(PyObject *m, PyObject *args)
{
	PyObject *o, *t = Py_None, *tmp;
	const char *url, *name = "timeout";
	Py_ssize_t n;
	double ms;
	int version = 0, rc;

	(void)m;
	if (!PyArg_ParseTuple(args, "O|Os:cluster_init_status", &o, &t, &name))
		return NULL;
	if ((rc = init_timeout_ms(t, name, &ms)) == -1)
		return NULL;
	if (rc < 0)
		return Py_BuildValue("iis", rc, 0, dobj_error_last());
	if (!(url = dobjpy_str_arg(o, "the cluster URL", &n, &tmp)))
		return NULL;
	rc = dobj_cluster_init(url, (size_t)n, ms, &version);
	Py_XDECREF(tmp);
	return Py_BuildValue("iis", rc, version, rc < 0 ? dobj_error_last() : "");
}

/* _cluster_check(url, node_addr=None): dobj_cluster_opts_check, the URL's
 * syntax included (no connection); None, or the message. */
static PyObject *mod_cluster_check(PyObject *m, PyObject *args)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;
	PyObject *url, *addr = Py_None, *tmp = NULL, *atmp = NULL, *r;
	Py_ssize_t n, an = 0;

	(void)m;
	if (!PyArg_ParseTuple(args, "O|O:cluster_check", &url, &addr) ||
	    !(o.url = dobjpy_str_arg(url, "the cluster URL", &n, &tmp)))
		return NULL;
	if (addr != Py_None && !(o.node_addr = dobjpy_str_arg(addr, "node_addr", &an, &atmp))) {
		Py_XDECREF(tmp);
		return NULL;
	}
	o.url_len = (size_t)n;
	o.node_addr_len = (size_t)an;
	if (n == 0)
		o.url_len = 0, o.url = "";
	r = dobj_cluster_opts_check(&o) < 0 ? PyUnicode_FromString(dobj_error_last()) : Py_NewRef(Py_None);
	Py_XDECREF(tmp);
	Py_XDECREF(atmp);
	return r;
}

/* _cluster_seconds(which, seconds, name): a command line's time (0 ttl,
 * 1 grace, 2 timeout, 3 call timeout) checked by the rule of every source
 * (dobj_cluster_opts_seconds), `name` (the flag) in the message; None, or
 * the message. */
static PyObject *mod_cluster_seconds(PyObject *m, PyObject *args)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;
	const char *name;
	double s;
	int which;

	(void)m;
	if (!PyArg_ParseTuple(args, "ids:_cluster_seconds", &which, &s, &name))
		return NULL;
	if (dobj_cluster_opts_seconds(&o, (dobj_cluster_time)which, s, name) < 0)
		return PyUnicode_FromString(dobj_error_last());
	Py_RETURN_NONE;
}

static PyMethodDef mod_methods[] = {
	{ "_cluster_init", mod_cluster_init, METH_VARARGS, NULL },
	{ "_cluster_init_status", mod_cluster_init_status, METH_VARARGS, NULL },
	{ "_cluster_check", mod_cluster_check, METH_VARARGS, NULL },
	{ "_cluster_seconds", mod_cluster_seconds, METH_VARARGS, NULL },
	{ "_setup", mod_setup, METH_VARARGS, NULL },
	{ "_fd_readable", runtime_fd_readable, METH_O, NULL },
	{ "_setup_storage", mod_setup_storage, METH_VARARGS, NULL },
	{ "_setup_reporting", mod_setup_reporting, METH_O, NULL },
	{ "_check_status", mod_check_status, METH_O, NULL },
	{ "_check_response", (PyCFunction)(void (*)(void))websocket_check_response, METH_FASTCALL, NULL },
	{ "_body_check", mod_body_check, METH_O, NULL },
	{ "_host_check", mod_host_check, METH_O, NULL },
	{ "_header_is_framing", mod_header_is_framing, METH_O, NULL },
	{ "_wire_check", (PyCFunction)(void (*)(void))mod_wire_check, METH_FASTCALL, NULL },
	{ "serialize", mod_serialize, METH_O,
		"The bytes storage keeps for `value` (V8's serialization format, as workerd)." },
	{ "deserialize", mod_deserialize, METH_O, "The value of a V8 serialization blob." },
	{ "_val_roundtrip", mod_val_roundtrip, METH_O, NULL },
	{ NULL }
};

int module_add_type(PyObject *m, PyType_Spec *spec, PyTypeObject **slot)
{
	*slot = (PyTypeObject *)PyType_FromModuleAndSpec(m, spec, NULL);
	if (!*slot || PyModule_AddType(m, *slot) < 0)
		return -1;
	return 0;
}

static int mod_exec(PyObject *m)
{
	module_state *st = PyModule_GetState(m);
	PyObject *asyncio;

	if (errors_setup_types(m) < 0 || runtime_setup_types(m) < 0 ||
	    namespace_setup_types(m) < 0 || stub_setup_types(m) < 0 || call_setup_types(m) < 0 ||
	    driver_setup_types(m) < 0 || ctx_setup_types(m) < 0 || config_setup_types(m) < 0 ||
	    websocket_setup_types(m) < 0 || server_setup_types(m) < 0 ||
	    PyModule_AddFunctions(m, testkit_methods) < 0 || http_setup(m) < 0)
		return -1;
	/* Nested object-to-object calls allowed (the core's limit). */
	if (PyModule_AddIntConstant(m, "MAX_CALL_DEPTH", DOBJ_MAX_CALL_DEPTH) < 0 ||
	    PyModule_AddIntConstant(m, "_CLUSTER_SCHEMA_VERSION", DOBJ_CLUSTER_SCHEMA_VERSION) < 0 ||
	    PyModule_AddIntConstant(m, "_WS_CLOSE_WAIT_MS", DOBJ_WS_CLOSE_WAIT_MS) < 0)
		return -1;
	/* The largest request body a server gathers (dobj.asgi answers 413),
	 * and the largest request head (dobj dev answers 431). */
	{
		PyObject *max = PyLong_FromSize_t(DOBJ_MSG_BODY_MAX);
		int rc = max ? PyModule_AddObjectRef(m, "_MSG_BODY_MAX", max) : -1;

		Py_XDECREF(max);
		if (rc < 0 || PyModule_AddIntConstant(m, "_MSG_HEAD_MAX", (long)DOBJ_MSG_HEAD_MAX) < 0)
			return -1;
	}
	if (dobjpy_values_init(&st->values, st->Error) < 0 ||
	    dobjpy_storage_init(m, &st->storage, st->Error, &st->values) < 0)
		return -1;
	st->storage.alarm_changed = context_alarm_changed;
	asyncio = PyImport_ImportModule("asyncio");
	if (!asyncio)
		return -1;
	st->get_running_loop = PyObject_GetAttrString(asyncio, "get_running_loop");
	if (!(st->deferred = PyList_New(0)))
		return -1;
	if (!(st->fd_readable = PyObject_GetAttrString(m, "_fd_readable")))
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
	STR(s_retryable, "retryable");
	STR(s_durable_object_id, "durable_object_id");
	STR(s_url, "url");
	STR(s_await, "__await__");
	STR(s_call_soon, "call_soon");
#undef STR
	return 0;
}

static int mod_traverse(PyObject *m, visitproc visit, void *arg)
{
	module_state *st = PyModule_GetState(m);
	Py_VISIT(st->Runtime_T);
	Py_VISIT(st->Namespace_T);
	Py_VISIT(st->Id_T);
	Py_VISIT(st->Stub_T);
	Py_VISIT(st->Call_T);
	Py_VISIT(st->Context_T);
	Py_VISIT(st->Waker_T);
	Py_VISIT(st->WebSocket_T);
	Py_VISIT(st->WebSocketConn_T);
	Py_VISIT(st->Error);
	Py_VISIT(st->InvalidIdError);
	Py_VISIT(st->InvalidInputError);
	Py_VISIT(st->Aborted);
	Py_VISIT(st->Request);
	Py_VISIT(st->Response);
	Py_VISIT(st->Env);
	Py_VISIT(st->make_request);
	Py_VISIT(st->get_running_loop);
	Py_VISIT(st->deferred);
	Py_VISIT(st->fd_readable);
	Py_VISIT(st->drain);
	Py_VISIT(st->report_error);
	Py_VISIT(st->partial);
	dobjpy_values_traverse(&st->values, visit, arg);
	dobjpy_storage_traverse(&st->storage, visit, arg);
	return 0;
}

static int mod_clear(PyObject *m)
{
	module_state *st = PyModule_GetState(m);
	Py_CLEAR(st->Runtime_T);
	Py_CLEAR(st->Namespace_T);
	Py_CLEAR(st->Id_T);
	Py_CLEAR(st->Stub_T);
	Py_CLEAR(st->Call_T);
	Py_CLEAR(st->Context_T);
	Py_CLEAR(st->Waker_T);
	Py_CLEAR(st->WebSocket_T);
	Py_CLEAR(st->WebSocketConn_T);
	Py_CLEAR(st->Error);
	Py_CLEAR(st->InvalidIdError);
	Py_CLEAR(st->InvalidInputError);
	Py_CLEAR(st->Aborted);
	Py_CLEAR(st->Request);
	Py_CLEAR(st->Response);
	Py_CLEAR(st->Env);
	Py_CLEAR(st->make_request);
	Py_CLEAR(st->get_running_loop);
	Py_CLEAR(st->deferred);
	Py_CLEAR(st->fd_readable);
	Py_CLEAR(st->s_fetch);
	Py_CLEAR(st->s_alarm);
	Py_CLEAR(st->s_blocking);
	Py_CLEAR(st->s_add_done_callback);
	Py_CLEAR(st->s_create_future);
	Py_CLEAR(st->s_set_result);
	Py_CLEAR(st->s_done);
	Py_CLEAR(st->s_remote);
	Py_CLEAR(st->s_retryable);
	Py_CLEAR(st->s_durable_object_id);
	Py_CLEAR(st->s_url);
	Py_CLEAR(st->s_call_soon);
	Py_CLEAR(st->s_await);
	Py_CLEAR(st->drain);
	Py_CLEAR(st->report_error);
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

PyModuleDef dobjpy_module_def = {
	PyModuleDef_HEAD_INIT, "dobj._dobj", "The C half of dobj.", sizeof(module_state), mod_methods,
	mod_slots, mod_traverse, mod_clear, mod_free
};

PyMODINIT_FUNC PyInit__dobj(void)
{
	return PyModuleDef_Init(&dobjpy_module_def);
}

