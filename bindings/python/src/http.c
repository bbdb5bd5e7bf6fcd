/*
 * http.c — dobj.Request / dobj.Response and the core's messages (dobj_msg),
 * for fetch() to a class written in C.
 */
#include "module.h"

int http_headers_to_msg(dobj_msg *m, PyObject *obj)
{
	PyObject *headers, *items = NULL, *seq = NULL;
	Py_ssize_t i;
	int rc = -1;

	if (!(headers = PyObject_GetAttrString(obj, "headers")) ||
	    !(items = PyObject_CallMethod(headers, "items", NULL)) ||
	    !(seq = PySequence_Fast(items, "headers.items() must be a sequence")))
		goto done;
	for (i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
		PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
		const char *k, *v;
		if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
		    !(k = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 0))) ||
		    !(v = PyUnicode_AsUTF8(PyTuple_GET_ITEM(pair, 1))) || dobj_msg_add_header(m, k, v) < 0)
			goto done;
	}
	rc = 0;
done:
	Py_XDECREF(headers);
	Py_XDECREF(items);
	Py_XDECREF(seq);
	return rc;
}

/* A Python request as a C message for a native class. */
dobj_msg *http_request_to_msg(PyObject *req, const char *url)
{
	PyObject *method = NULL, *body = NULL;
	dobj_msg *m = NULL;
	const char *mname;

	if (!(method = PyObject_GetAttrString(req, "method")) || !(mname = PyUnicode_AsUTF8(method)))
		goto done;
	m = dobj_msg_new_request(url, mname);
	if (!m) {
		PyErr_NoMemory();
		goto done;
	}
	if (http_headers_to_msg(m, req) < 0) {
		if (!PyErr_Occurred())
			PyErr_SetString(PyExc_TypeError, "bad header");
		goto fail;
	}
	if (!(body = PyObject_GetAttrString(req, "body")))
		goto fail;
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
	Py_XDECREF(body);
	return m;
}

/* A native class's response, or one from another node, as a dobj.Response. */
PyObject *http_response_from_msg(module_state *st, const dobj_msg *m)
{
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
	if (kw && m->web_socket) { /* a 101 from an object on another node */
		PyObject *ws = websocket_wrap(st, m->web_socket);
		if (!ws || PyDict_SetItemString(kw, "web_socket", ws) < 0)
			Py_CLEAR(kw);
		Py_XDECREF(ws);
	}
	args = body ? PyTuple_Pack(1, body) : NULL;
	if (kw && args)
		r = PyObject_Call(st->Response, args, kw);
	Py_XDECREF(kw);
	Py_XDECREF(args);
	Py_XDECREF(body);
	Py_DECREF(headers);
	return r;
}

/* ------------------------------------------- the core's rules, for dobj/__init__.py */

/* The core's kind decides: DOBJ_ETYPE (workerd's TypeError) raises
 * dobj.InvalidInputError, a TypeError; other refusals a ValueError. */
static PyObject *rule_error(PyObject *m)
{
	if (dobj_error_last_code() == DOBJ_ETYPE)
		return raise_core_error(PyModule_GetState(m), DOBJ_ETYPE);
	PyErr_SetString(PyExc_ValueError, dobj_error_last());
	return NULL;
}

/* _header_name(name): `name` lower-cased, if it is a header name. */
static PyObject *http_header_name(PyObject *m, PyObject *name)
{
	PyObject *tmp;
	Py_ssize_t n, i;
	const char *s;
	int rc;

	(void)m;
	if (!PyUnicode_Check(name))
		return PyErr_Format(PyExc_TypeError, "a header name must be a str, got %s",
			Py_TYPE(name)->tp_name);
	/* A lone surrogate goes as WTF-8: not a token, the core says so. */
	if (!(s = dobjpy_str_utf8(name, &n, &tmp)))
		return NULL;
	rc = dobj_msg_header_name_check(s, (size_t)n);
	for (i = 0; rc == 0 && i < n; i++)
		if (s[i] >= 'A' && s[i] <= 'Z')
			rc = 1;
	Py_XDECREF(tmp);
	if (rc < 0)
		return rule_error(m);
	return rc ? PyObject_CallMethod(name, "lower", NULL) : Py_NewRef(name);
}

/* _header_value(value): the value normalized (HTTP whitespace off its ends),
 * if a server can send it: a byte string (code points up to 255, as a
 * ByteString in workerd) without NUL, CR or LF. */
static PyObject *http_header_value(PyObject *m, PyObject *value)
{
	size_t start, len;
	Py_ssize_t n;

	(void)m;
	if (!PyUnicode_Check(value))
		return PyErr_Format(PyExc_TypeError, "a header value must be a str, got %s",
			Py_TYPE(value)->tp_name);
	n = PyUnicode_GET_LENGTH(value);
	if (PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND) {
		dobj_error_set(DOBJ_ETYPE, "Invalid header value.");
		return rule_error(m);
	}
	if (dobj_msg_header_value_check((const char *)PyUnicode_1BYTE_DATA(value), (size_t)n,
	    &start, &len) < 0)
		return rule_error(m);
	if (start == 0 && (Py_ssize_t)len == n)
		return Py_NewRef(value);
	return PyUnicode_Substring(value, (Py_ssize_t)start, (Py_ssize_t)(start + len));
}

/* _header_is_list(name): does this header stay a list (set-cookie)? */
static PyObject *http_header_is_list(PyObject *m, PyObject *name)
{
	const char *s = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;

	(void)m;
	if (!s) {
		PyErr_Clear();
		Py_RETURN_FALSE;
	}
	return PyBool_FromLong(dobj_msg_header_is_list(s));
}

/* _method(method): the method as Fetch normalizes it. */
static PyObject *http_method(PyObject *m, PyObject *method)
{
	const char *s, *canonical;
	PyObject *tmp;
	Py_ssize_t n;
	int rc;

	(void)m;
	if (!PyUnicode_Check(method))
		return PyErr_Format(PyExc_TypeError, "method must be a str, got %s",
			Py_TYPE(method)->tp_name);
	/* A lone surrogate goes as WTF-8: not a token, the core says so. */
	if (!(s = dobjpy_str_utf8(method, &n, &tmp)))
		return NULL;
	rc = dobj_msg_method_check(s, (size_t)n, &canonical);
	if (rc == 0 && (!canonical || strcmp(canonical, s) == 0))
		rc = 1;
	Py_XDECREF(tmp);
	if (rc < 0)
		return rule_error(m);
	if (rc > 0)
		return Py_NewRef(method);
	return PyUnicode_FromString(canonical);
}

/* _request_body_check(method, n) and _response_body_check(status, n). */
static PyObject *http_request_body_check(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	const char *method;
	Py_ssize_t n;

	(void)m;
	if (nargs != 2 || !(method = PyUnicode_AsUTF8(args[0])) ||
	    ((n = PyLong_AsSsize_t(args[1])) == -1 && PyErr_Occurred()))
		return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "2 arguments");
	if (dobj_msg_request_body_check(method, (size_t)n) < 0)
		return rule_error(m); /* workerd's TypeError */
	Py_RETURN_NONE;
}

static PyObject *http_response_body_check(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	long status;
	Py_ssize_t n;

	(void)m;
	if (nargs != 2 || ((status = PyLong_AsLong(args[0])) == -1 && PyErr_Occurred()) ||
	    ((n = PyLong_AsSsize_t(args[1])) == -1 && PyErr_Occurred()))
		return PyErr_Occurred() ? NULL : PyErr_Format(PyExc_TypeError, "2 arguments");
	if (dobj_msg_response_body_check((int)status, (size_t)n) < 0)
		return rule_error(m);
	Py_RETURN_NONE;
}

/* _status_text_check(text): a statusText workerd's Response takes. */
static PyObject *http_status_text_check(PyObject *m, PyObject *text)
{
	Py_ssize_t n;
	const char *s;

	if (!PyUnicode_Check(text))
		return PyErr_Format(PyExc_TypeError, "status_text must be a str, got %s",
			Py_TYPE(text)->tp_name);
	if (!(s = PyUnicode_AsUTF8AndSize(text, &n))) {
		PyErr_Clear(); /* a lone surrogate: not a control character */
		Py_RETURN_NONE;
	}
	if (dobj_msg_status_text_check(s, (size_t)n) < 0)
		return rule_error(m);
	Py_RETURN_NONE;
}

/* _status_text(status): the reason phrase ("" if none). */
static PyObject *http_status_text(PyObject *m, PyObject *status)
{
	long s = PyLong_AsLong(status);

	(void)m;
	if (s == -1 && PyErr_Occurred())
		return NULL;
	return PyUnicode_FromString(dobj_msg_status_text(s < 0 || s > 999 ? 0 : (int)s));
}

static PyMethodDef http_methods[] = {
	{ "_header_name", http_header_name, METH_O, NULL },
	{ "_header_value", http_header_value, METH_O, NULL },
	{ "_header_is_list", http_header_is_list, METH_O, NULL },
	{ "_method", http_method, METH_O, NULL },
	{ "_request_body_check", (PyCFunction)(void (*)(void))http_request_body_check,
		METH_FASTCALL, NULL },
	{ "_response_body_check", (PyCFunction)(void (*)(void))http_response_body_check,
		METH_FASTCALL, NULL },
	{ "_status_text", http_status_text, METH_O, NULL },
	{ "_status_text_check", http_status_text_check, METH_O, NULL },
	{ NULL }
};

int http_setup(PyObject *m)
{
	if (PyModule_AddFunctions(m, http_methods) < 0 ||
	    PyModule_AddStringConstant(m, "_TEXT_TYPE", DOBJ_MSG_TEXT_TYPE) < 0 ||
	    PyModule_AddStringConstant(m, "_JSON_TYPE", DOBJ_MSG_JSON_TYPE) < 0)
		return -1;
	return 0;
}
