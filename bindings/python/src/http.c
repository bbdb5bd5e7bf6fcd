/*
 * http.c — dobj.Request / dobj.Response and the core's messages (dobj_msg),
 * for fetch() to a class written in C.
 */
#include "module.h"

/* A Python request as a C message for a native class. */
dobj_msg *http_request_to_msg(PyObject *req, const char *url)
{
	PyObject *method = NULL, *headers = NULL, *items = NULL, *body = NULL;
	dobj_msg *m = NULL;
	const char *mname;
	Py_ssize_t i;

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

/* A native class's response as a dobj.Response. */
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
	args = body ? PyTuple_Pack(1, body) : NULL;
	if (kw && args)
		r = PyObject_Call(st->Response, args, kw);
	Py_XDECREF(kw);
	Py_XDECREF(args);
	Py_XDECREF(body);
	Py_DECREF(headers);
	return r;
}
