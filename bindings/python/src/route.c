/*
 * route.c — the codec that carries Python values to another node of a
 * cluster (dobj/route.h): fetch requests and responses as dobj_msg, errors
 * as {name, message}.  RPC values are core values already.
 *
 * The core calls these on the runtime's thread inside a pump, where Python
 * code may run; each reports a failure through dobj_error_set and leaves no
 * Python exception behind.
 */
#include "module.h"

static void *codec_fail(const char *what)
{
	PyObject *type, *value, *tb, *s = NULL;

	PyErr_Fetch(&type, &value, &tb);
	if (value)
		s = PyObject_Str(value);
	dobj_error_set(DOBJ_EARG, "%s: %s", what, s && PyUnicode_Check(s) && PyUnicode_AsUTF8(s)
		? PyUnicode_AsUTF8(s) : "error");
	PyErr_Clear();
	Py_XDECREF(s);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	return NULL;
}

/* A dobj.Response as a dobj_msg. */
static dobj_msg *response_to_msg(PyObject *resp)
{
	PyObject *status = NULL, *body = NULL;
	dobj_msg *m = NULL;
	long code;

	if (!(status = PyObject_GetAttrString(resp, "status")) || (code = PyLong_AsLong(status),
	    PyErr_Occurred()) || !(body = PyObject_GetAttrString(resp, "body")))
		goto done;
	if (!PyBytes_Check(body)) {
		PyErr_SetString(PyExc_TypeError, "a response body must be bytes");
		goto done;
	}
	m = dobj_msg_new_response((int)code, PyBytes_AS_STRING(body), (size_t)PyBytes_GET_SIZE(body));
	if (!m) {
		PyErr_NoMemory();
		goto done;
	}
	if (http_headers_to_msg(m, resp) < 0) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_ValueError, dobj_error_last());
		dobj_msg_free(m);
		m = NULL;
	}
done:
	Py_XDECREF(status);
	Py_XDECREF(body);
	return m;
}

static dobj_msg *py_to_msg(void *data, void *value, int is_request)
{
	RuntimeObject *rt = data;
	PyObject *v = value;
	dobj_msg *m = NULL;

	if (is_request) {
		PyObject *url = PyObject_GetAttr(v, rt->st->s_url);
		const char *u = url ? PyUnicode_AsUTF8(url) : NULL;
		if (u)
			m = http_request_to_msg(v, u);
		Py_XDECREF(url);
	} else if (PyObject_TypeCheck(v, (PyTypeObject *)rt->st->Response)) {
		/* A 101's client end crosses as a link the core serves. */
		PyObject *ws = PyObject_GetAttrString(v, "web_socket");
		dobj_ws *client = ws && ws != Py_None ? websocket_arg(rt->st, ws) : NULL;
		if (ws && (ws == Py_None || client) && (m = response_to_msg(v)))
			dobj_msg_set_web_socket(m, client);
		Py_XDECREF(ws);
	} else {
		PyErr_SetString(PyExc_TypeError, "fetch() must return a dobj.Response");
	}
	if (!m)
		return codec_fail(is_request ? "the request" : "the response");
	return m;
}

static void *py_request_from_msg(void *data, const dobj_msg *m)
{
	RuntimeObject *rt = data;
	PyObject *url = NULL, *args = NULL, *kw = NULL, *headers = NULL, *body = NULL, *r = NULL;
	size_t i;

	if (!(headers = PyList_New(0)))
		goto done;
	for (i = 0; i < m->nheaders; i++) {
		PyObject *pair = Py_BuildValue("(ss)", m->header_names[i], m->header_values[i]);
		if (!pair || PyList_Append(headers, pair) < 0) {
			Py_XDECREF(pair);
			goto done;
		}
		Py_DECREF(pair);
	}
	if (!(url = PyUnicode_FromString(m->url)) || !(args = PyTuple_Pack(1, url)) ||
	    !(body = PyBytes_FromStringAndSize((const char *)m->body, (Py_ssize_t)m->body_len)) ||
	    !(kw = Py_BuildValue("{sssOsO}", "method", m->method, "headers", headers, "body", body)))
		goto done;
	r = PyObject_Call(rt->st->Request, args, kw);
done:
	Py_XDECREF(url);
	Py_XDECREF(args);
	Py_XDECREF(kw);
	Py_XDECREF(headers);
	Py_XDECREF(body);
	if (!r)
		return codec_fail("the request");
	return r;
}

static int put_string(dobj_val *o, const char *k, PyObject *s)
{
	Py_ssize_t n;
	PyObject *tmp = NULL;
	const char *u = s ? dobjpy_str_utf8(s, &n, &tmp) : NULL; /* lone surrogates as WTF-8 */
	int rc;

	if (!u) {
		PyErr_Clear();
		u = "";
		n = 0;
	}
	rc = dobj_val_put(o, k, strlen(k), dobj_val_string(u, (size_t)n));
	Py_XDECREF(tmp);
	return rc;
}

/* An error value (an exception, boxed with its traceback: errors.c) as
 * {name, message}: the exception's class name and str(), except a KeyError
 * of one str: its key.  KeyError's str() is the key's repr, and the caller
 * makes KeyError(message): str() gave KeyError("'k'") there, which prints
 * "'k'" in quotes again and whose args[0] is not the key (and a Lua caller
 * read the quotes as part of the message). */
static dobj_val *py_error_to_val(void *data, void *error)
{
	PyObject *exc = error, *name, *msg;
	dobj_val *o;

	(void)data;
	if (PyTuple_Check(exc) && PyTuple_GET_SIZE(exc) >= 1)
		exc = PyTuple_GET_ITEM(exc, 0);
	if (!PyExceptionInstance_Check(exc) || !(o = dobj_val_object()))
		return NULL;
	name = PyObject_GetAttrString((PyObject *)Py_TYPE(exc), "__name__");
	msg = NULL;
	if (Py_IS_TYPE(exc, (PyTypeObject *)PyExc_KeyError)) {
		PyObject *args = PyObject_GetAttrString(exc, "args");
		if (args && PyTuple_Check(args) && PyTuple_GET_SIZE(args) == 1 &&
		    PyUnicode_Check(PyTuple_GET_ITEM(args, 0)))
			msg = Py_NewRef(PyTuple_GET_ITEM(args, 0));
		Py_XDECREF(args);
		PyErr_Clear();
	}
	if (!msg)
		msg = PyObject_Str(exc);
	if (put_string(o, "name", name) < 0 || put_string(o, "message", msg) < 0) {
		dobj_val_free(o);
		o = NULL;
	}
	Py_XDECREF(name);
	Py_XDECREF(msg);
	PyErr_Clear();
	return o;
}

/* The caller's side: a built-in exception of that name (ValueError,
 * KeyError...) with the message, else a dobj.Error whose `name` says what
 * the object raised (its class exists on the object's node only). */
static void *py_error_from_val(void *data, const dobj_val *desc)
{
	RuntimeObject *rt = data;
	const dobj_val *n = dobj_val_get(desc, "name", 4), *m = dobj_val_get(desc, "message", 7);
	const char *name = n && dobj_val_type_of(n) == DOBJ_VAL_STRING ? dobj_val_get_string(n, NULL) : "Error";
	const char *msg = m && dobj_val_type_of(m) == DOBJ_VAL_STRING ? dobj_val_get_string(m, NULL) : "";
	PyObject *type = NULL, *exc;

	if (strcmp(name, "Error")) {
		PyObject *b = PyEval_GetBuiltins();
		PyObject *t = b ? PyDict_GetItemString(b, name) : NULL;
		if (t && PyType_Check(t) && PyType_IsSubtype((PyTypeObject *)t, (PyTypeObject *)PyExc_Exception))
			type = t;
	}
	{
		PyObject *text = core_message(msg); /* lone surrogates come back */
		exc = text ? PyObject_CallOneArg(type ? type : rt->st->Error, text) : NULL;
		Py_XDECREF(text);
	}
	if (exc && !type) {
		PyObject *pn = PyUnicode_FromString(name);
		if (!pn || PyObject_SetAttrString(exc, "name", pn) < 0)
			PyErr_Clear();
		Py_XDECREF(pn);
	}
	if (!exc)
		PyErr_Clear();
	return exc;
}

void route_codec_install(RuntimeObject *rt)
{
	dobj_route_codec c = { DOBJ_ROUTE_CODEC_VERSION, rt, py_to_msg, py_request_from_msg,
		py_error_to_val, py_error_from_val };

	dobj_rt_set_route_codec(rt->rt, &c);
}
