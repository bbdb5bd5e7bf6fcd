/*
 * server.c — dobj._dobj.Server: the core's HTTP/WebSocket server
 * (dobj/server.h) for `dobj dev` (dobj/_native_server.py drives it from the
 * asyncio loop with add_reader).  Python never runs inside the core's
 * hooks: they queue what happened, and process() hands it to the
 * on_request / on_abandoned callables once the core has returned.
 */
#include "module.h"

typedef struct {
	uint64_t id;
	const dobj_msg *msg;   /* the server's, until answered */
	int refused;
	const char *why;
	PyObject *abandoned;   /* (method, url) of a request cut short, or NULL */
} srv_event;

typedef struct {
	PyObject_HEAD
	dobj_server *s;
	PyObject *on_request;
	PyObject *on_abandoned;
	srv_event *events;
	size_t nevents, cap;
	int failed;            /* out of memory in a hook */
	int processing;
} ServerObject;

static int push_event(ServerObject *self, const srv_event *e)
{
	if (self->nevents == self->cap) {
		size_t n = self->cap ? self->cap * 2 : 16;
		srv_event *p = PyMem_Realloc(self->events, n * sizeof(*p));
		if (!p) {
			self->failed = 1;
			return -1;
		}
		self->events = p;
		self->cap = n;
	}
	self->events[self->nevents++] = *e;
	return 0;
}

static void on_request(void *data, uint64_t id, const dobj_msg *msg, int refused, const char *why)
{
	srv_event e = { id, msg, refused, why, NULL };

	push_event(data, &e);
}

static void on_abandoned(void *data, const char *method, const char *url)
{
	srv_event e = { 0, NULL, 0, NULL, NULL };

	if (!(e.abandoned = Py_BuildValue("(ss)", method, url))) {
		PyErr_Clear();
		return;
	}
	if (push_event(data, &e) < 0)
		Py_DECREF(e.abandoned);
}

static const dobj_server_hooks hooks = { on_request, on_abandoned };

static int Server_traverse(ServerObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->on_request);
	Py_VISIT(self->on_abandoned);
	return 0;
}

static int Server_clear(ServerObject *self)
{
	Py_CLEAR(self->on_request);
	Py_CLEAR(self->on_abandoned);
	return 0;
}

static void drop_events(ServerObject *self)
{
	size_t i;

	for (i = 0; i < self->nevents; i++)
		Py_XDECREF(self->events[i].abandoned);
	self->nevents = 0;
}

static void server_close(ServerObject *self)
{
	drop_events(self);
	dobj_server_free(self->s);
	self->s = NULL;
}

static void Server_dealloc(ServerObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	PyObject_GC_UnTrack(self);
	server_close(self);
	PyMem_Free(self->events);
	Server_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

/* Server(host, port, on_request, on_abandoned) */
static PyObject *Server_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	module_state *st = module_state_of_type(type);
	static char *names[] = { "host", "port", "on_request", "on_abandoned", NULL };
	const char *host;
	int port;
	PyObject *req, *abandoned;
	ServerObject *self;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "siOO:Server", names, &host, &port, &req,
	    &abandoned))
		return NULL;
	if (!(self = (ServerObject *)type->tp_alloc(type, 0)))
		return NULL;
	self->on_request = Py_NewRef(req);
	self->on_abandoned = Py_NewRef(abandoned);
	if (dobj_server_listen(host, port, &hooks, self, &self->s) < 0) {
		PyErr_SetString(st->Error, dobj_error_last());
		Py_DECREF(self);
		return NULL;
	}
	return (PyObject *)self;
}

static int check_open(ServerObject *self)
{
	if (!self->s) {
		PyErr_SetString(module_state_of_type(Py_TYPE(self))->Error, "the server is closed");
		return -1;
	}
	return 0;
}

/* The headers of a request as dobj.Headers keeps them: a dict of lower-case
 * names to str, set-cookie to a list. */
static PyObject *headers_dict(const dobj_msg *m)
{
	PyObject *d = PyDict_New();
	size_t i;

	if (!d)
		return NULL;
	for (i = 0; i < m->nheaders; i++) {
		const char *n = m->header_names[i], *v = m->header_values[i];
		PyObject *k = PyUnicode_DecodeLatin1(n, (Py_ssize_t)strlen(n), NULL);
		PyObject *val = k ? PyUnicode_DecodeLatin1(v, (Py_ssize_t)strlen(v), NULL) : NULL;
		int rc = -1;
		if (val && dobj_msg_header_is_list(n)) {
			PyObject *list = PyDict_GetItemWithError(d, k);
			if (list)
				rc = PyList_Append(list, val);
			else if (!PyErr_Occurred() && (list = PyList_New(1))) {
				PyList_SET_ITEM(list, 0, Py_NewRef(val));
				rc = PyDict_SetItem(d, k, list);
				Py_DECREF(list);
			}
		} else if (val) {
			rc = PyDict_SetItem(d, k, val);
		}
		Py_XDECREF(k);
		Py_XDECREF(val);
		if (rc < 0) {
			Py_DECREF(d);
			return NULL;
		}
	}
	return d;
}

/* Hand one event to Python. */
static int deliver(ServerObject *self, srv_event *e)
{
	PyObject *r, *headers, *body;
	const dobj_msg *m = e->msg;

	if (e->abandoned) {
		r = PyObject_Call(self->on_abandoned, e->abandoned, NULL);
		Py_CLEAR(e->abandoned);
	} else {
		headers = headers_dict(m);
		body = headers ? PyBytes_FromStringAndSize(e->refused ? "" : (const char *)m->body,
			e->refused ? 0 : (Py_ssize_t)m->body_len) : NULL;
		if (!body) {
			Py_XDECREF(headers);
			return -1;
		}
		r = PyObject_CallFunction(self->on_request, "KssNNis", (unsigned long long)e->id,
			m->method, m->url, headers, body, e->refused, e->why);
	}
	Py_XDECREF(r);
	return r ? 0 : -1;
}

/* process(): the loop's add_reader callback (and the timer's): the core's
 * work, then each complete request to on_request(id, method, url,
 * headers, body, refused, why) and each request cut short to
 * on_abandoned(method, url). */
static PyObject *Server_process(ServerObject *self, PyObject *unused)
{
	size_t i, n;
	int rc = 0;

	(void)unused;
	if (check_open(self) < 0)
		return NULL;
	if (self->processing) {
		PyErr_SetString(PyExc_RuntimeError, "Server.process() is already running");
		return NULL;
	}
	self->processing = 1;
	if (!self->nevents && dobj_server_process(self->s) < 0) {
		PyErr_SetString(module_state_of_type(Py_TYPE(self))->Error, dobj_error_last());
		self->processing = 0;
		return NULL;
	}
	/* A callback that raises leaves the events after it for the next call
	 * (their ids still wait for answers). */
	n = self->nevents;
	for (i = 0; i < n && rc == 0; i++)
		rc = deliver(self, &self->events[i]);
	if (self->s && i < self->nevents) {
		memmove(self->events, self->events + i, (self->nevents - i) * sizeof(*self->events));
		self->nevents -= i;
	} else {
		self->nevents = 0;
	}
	self->processing = 0;
	if (self->failed) {
		self->failed = 0;
		if (!rc)
			PyErr_NoMemory();
		return NULL;
	}
	if (rc < 0)
		return NULL;
	Py_RETURN_NONE;
}

struct add_header { dobj_server_response *r; };

static int add_header(dobj_server_response *r, PyObject *k, PyObject *v)
{
	const char *name, *value;
	Py_ssize_t nlen, vlen;

	if (!PyUnicode_Check(k) || !PyUnicode_Check(v)) {
		PyErr_SetString(PyExc_TypeError, "header names and values must be str");
		return -1;
	}
	if (!(name = PyUnicode_AsUTF8AndSize(k, &nlen)) || !(value = PyUnicode_AsUTF8AndSize(v, &vlen)))
		return -1;
	return dobj_server_response_header(r, name, (size_t)nlen, value, (size_t)vlen) < 0 ? -2 : 0;
}

/* respond(id, status, headers, body, web_socket=None): answer request id.
 * headers: dobj.Headers' dict (str -> str, or a list of str for set-cookie)
 * or None.  Returns the status sent (426 for a 101 to a request that was no
 * WebSocket handshake).  dobj.Error for a header the server cannot send:
 * the request still waits for an answer. */
static PyObject *Server_respond(ServerObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	module_state *st = module_state_of_type(Py_TYPE(self));
	unsigned long long id;
	long status;
	PyObject *headers, *body, *key, *value;
	dobj_server_response *r;
	dobj_ws *ws = NULL;
	Py_ssize_t pos = 0;
	int rc = 0, sent;

	if (check_open(self) < 0)
		return NULL;
	if (nargs < 4 || nargs > 5) {
		PyErr_SetString(PyExc_TypeError, "respond(id, status, headers, body, web_socket=None)");
		return NULL;
	}
	id = PyLong_AsUnsignedLongLong(args[0]);
	if (id == (unsigned long long)-1 && PyErr_Occurred())
		return NULL;
	status = PyLong_AsLong(args[1]);
	if (status == -1 && PyErr_Occurred())
		return NULL;
	headers = args[2];
	body = args[3];
	if (!PyBytes_Check(body)) {
		PyErr_SetString(PyExc_TypeError, "a response body must be bytes");
		return NULL;
	}
	if (headers != Py_None && !PyDict_Check(headers)) {
		PyErr_SetString(PyExc_TypeError, "headers must be a dict");
		return NULL;
	}
	if (nargs == 5 && args[4] != Py_None && !(ws = websocket_arg(st, args[4])))
		return NULL;
	if (status < 0 || status > 999) {
		PyErr_SetString(PyExc_ValueError, "status out of range");
		return NULL;
	}
	if (dobj_server_response_begin(self->s, (uint64_t)id, (int)status, PyBytes_AS_STRING(body),
	    (size_t)PyBytes_GET_SIZE(body), ws, &r) < 0) {
		PyErr_SetString(st->Error, dobj_error_last());
		return NULL;
	}
	while (headers != Py_None && rc == 0 && PyDict_Next(headers, &pos, &key, &value)) {
		if (PyList_Check(value)) { /* set-cookie: a line each */
			Py_ssize_t i;
			for (i = 0; rc == 0 && i < PyList_GET_SIZE(value); i++)
				rc = add_header(r, key, PyList_GET_ITEM(value, i));
		} else {
			rc = add_header(r, key, value);
		}
	}
	if (rc < 0) {
		dobj_server_response_abort(r);
		if (rc == -2)
			PyErr_SetString(st->Error, dobj_error_last());
		return NULL;
	}
	sent = dobj_server_response_send(r);
	if (sent < 0) {
		PyErr_SetString(st->Error, dobj_error_last());
		return NULL;
	}
	return PyLong_FromLong(sent);
}

/* quiesce(code, reason): stop taking connections (the port is freed) and
 * close the WebSockets with code and reason. */
static PyObject *Server_quiesce(ServerObject *self, PyObject *args)
{
	int code;
	const char *reason;

	if (!PyArg_ParseTuple(args, "is:quiesce", &code, &reason) || check_open(self) < 0)
		return NULL;
	dobj_server_quiesce(self->s, code, reason);
	Py_RETURN_NONE;
}

static PyObject *Server_fileno(ServerObject *self, PyObject *unused)
{
	(void)unused;
	if (check_open(self) < 0)
		return NULL;
	return PyLong_FromLong(dobj_server_fd(self->s));
}

/* timeout(): seconds until process() must run though the fd stays quiet,
 * or None. */
static PyObject *Server_timeout(ServerObject *self, PyObject *unused)
{
	int ms;

	(void)unused;
	if (check_open(self) < 0)
		return NULL;
	ms = dobj_server_timeout(self->s);
	if (ms < 0)
		Py_RETURN_NONE;
	return PyFloat_FromDouble(ms / 1000.0);
}

static PyObject *Server_close(ServerObject *self, PyObject *unused)
{
	(void)unused;
	if (self->processing) {
		PyErr_SetString(PyExc_RuntimeError, "close() inside process()");
		return NULL;
	}
	server_close(self);
	Py_RETURN_NONE;
}

static PyObject *Server_get_port(ServerObject *self, void *c)
{
	(void)c;
	return check_open(self) < 0 ? NULL : PyLong_FromLong(dobj_server_port(self->s));
}

static PyObject *Server_get_address(ServerObject *self, void *c)
{
	(void)c;
	return check_open(self) < 0 ? NULL : PyUnicode_FromString(dobj_server_address(self->s));
}

static PyObject *Server_get_inflight(ServerObject *self, void *c)
{
	(void)c;
	return PyLong_FromSize_t(self->s ? dobj_server_inflight(self->s) : 0);
}

static PyObject *Server_get_websockets(ServerObject *self, void *c)
{
	(void)c;
	return PyLong_FromSize_t(self->s ? dobj_server_websockets(self->s) : 0);
}

static PyMethodDef Server_methods[] = {
	{ "process", (PyCFunction)Server_process, METH_NOARGS, NULL },
	{ "respond", (PyCFunction)(void (*)(void))Server_respond, METH_FASTCALL, NULL },
	{ "quiesce", (PyCFunction)Server_quiesce, METH_VARARGS, NULL },
	{ "fileno", (PyCFunction)Server_fileno, METH_NOARGS, NULL },
	{ "timeout", (PyCFunction)Server_timeout, METH_NOARGS, NULL },
	{ "close", (PyCFunction)Server_close, METH_NOARGS, NULL },
	{ NULL }
};

static PyGetSetDef Server_getset[] = {
	{ "port", (getter)Server_get_port, NULL, NULL, NULL },
	{ "address", (getter)Server_get_address, NULL, NULL, NULL },
	{ "inflight", (getter)Server_get_inflight, NULL, NULL, NULL },
	{ "websockets", (getter)Server_get_websockets, NULL, NULL, NULL },
	{ NULL }
};

static PyType_Slot Server_slots[] = {
	{ Py_tp_new, Server_new },
	{ Py_tp_dealloc, Server_dealloc },
	{ Py_tp_traverse, Server_traverse },
	{ Py_tp_clear, Server_clear },
	{ Py_tp_methods, Server_methods },
	{ Py_tp_getset, Server_getset },
	{ Py_tp_doc, "The core's HTTP/WebSocket server (dobj/server.h), for dobj dev." },
	{ 0, NULL }
};

static PyType_Spec Server_spec = {
	.name = "dobj._dobj.Server",
	.basicsize = sizeof(ServerObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = Server_slots,
};

int server_setup_types(PyObject *m)
{
	PyTypeObject *t = (PyTypeObject *)PyType_FromModuleAndSpec(m, &Server_spec, NULL);
	int rc;

	if (!t)
		return -1;
	rc = PyModule_AddType(m, t);
	Py_DECREF(t);
	return rc;
}
