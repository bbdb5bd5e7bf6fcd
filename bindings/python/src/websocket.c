/*
 * websocket.c — dobj.WebSocket (one end of a WebSocketPair), the ctx methods
 * of the hibernation API, the handler dispatch of WebSocket events, and the
 * host's side that `dobj dev` (dobj/asgi.py) drives.  Every rule is the
 * core's (dobj/websocket.h): this file translates values.
 */
#include "module.h"

/*
 * The connection (one pair) as the collector sees it: this module's one
 * holder of the core pair, shared by every wrapper of either end (found
 * through dobj_ws_binding_data).  What it holds in Python objects: its type
 * and, through the core, the host's callables attached to the pair
 * (client._attach's tuple).  The object's list, queued events and held
 * output may reach the pair too, so it reports those callables only while
 * its reference is the pair's last (dobj_ws_sole_payload): a host that keeps
 * its client end (the server end too, or several wrappers of one end) and
 * serves it with its own bound methods is a cycle the collector takes once
 * the connection left the object, never while the object may still send.
 * (With a core reference per wrapper, two wrappers garbage in one
 * collection each saw the other's: the callables were never reported and
 * the cycle stayed.)
 */
typedef struct {
	PyObject_HEAD
	dobj_ws *ws; /* a reference to the pair (the end first wrapped) */
} WebSocketConnObject;

typedef struct {
	PyObject_HEAD
	WebSocketConnObject *conn; /* a reference */
	dobj_ws *ws;               /* this end, held through conn */
} WebSocketObject;

static module_state *ws_state(PyObject *self)
{
	return module_state_of_type(Py_TYPE(self));
}

static int WebSocketConn_traverse(WebSocketConnObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT((PyObject *)dobj_ws_sole_payload(self->ws));
	return 0;
}

static int WebSocketConn_clear(WebSocketConnObject *self)
{
	/* The payload is attached to the client end. */
	if (dobj_ws_sole_payload(self->ws))
		dobj_ws_detach(dobj_ws_end(self->ws) == DOBJ_WS_CLIENT ? self->ws : dobj_ws_peer(self->ws));
	return 0;
}

static void WebSocketConn_dealloc(WebSocketConnObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	/* Forgotten first: the detach below may run Python code that wraps
	 * this pair again, which must make a new holder, not revive this one. */
	dobj_ws_set_binding_data(self->ws, NULL);
	WebSocketConn_clear(self);
	dobj_ws_unref(self->ws);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyType_Slot WebSocketConn_slots[] = {
	{ Py_tp_dealloc, WebSocketConn_dealloc },
	{ Py_tp_traverse, WebSocketConn_traverse },
	{ Py_tp_clear, WebSocketConn_clear },
	{ Py_tp_doc, (void *)"The connection the WebSocket wrappers of one pair share (internal)." },
	{ 0, NULL }
};

static PyType_Spec WebSocketConn_spec = {
	"dobj._WebSocketConnection", sizeof(WebSocketConnObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
		Py_TPFLAGS_DISALLOW_INSTANTIATION,
	WebSocketConn_slots
};

/* The holder of ws's pair: the one its wrappers share, or a new one. */
static WebSocketConnObject *conn_of(module_state *st, dobj_ws *ws)
{
	WebSocketConnObject *c = dobj_ws_binding_data(ws);

	if (c) {
		Py_INCREF(c);
		return c;
	}
	if (!(c = PyObject_GC_New(WebSocketConnObject, st->WebSocketConn_T)))
		return NULL;
	dobj_ws_ref(ws);
	c->ws = ws;
	dobj_ws_set_binding_data(ws, c);
	PyObject_GC_Track(c);
	return c;
}

/* A wrapper reaches the host's callables through its connection only: the
 * connection's tp_clear (a detach) breaks a host's cycle, and a wrapper
 * stays usable whatever the collector cleared. */
static int WebSocket_traverse(WebSocketObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->conn);
	return 0;
}

static void WebSocket_dealloc(WebSocketObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	Py_CLEAR(self->conn);
	tp->tp_free(self);
	Py_DECREF(tp);
}

/* A new wrapper of `ws`, holding its pair through the pair's connection. */
PyObject *websocket_wrap(module_state *st, dobj_ws *ws)
{
	WebSocketConnObject *c = conn_of(st, ws);
	WebSocketObject *o;

	if (!c)
		return NULL;
	if (!(o = PyObject_GC_New(WebSocketObject, st->WebSocket_T))) {
		Py_DECREF(c);
		return NULL;
	}
	o->conn = c;
	o->ws = ws;
	PyObject_GC_Track(o);
	return (PyObject *)o;
}

static int is_websocket(module_state *st, PyObject *o)
{
	return PyObject_TypeCheck(o, st->WebSocket_T);
}

/* Every refusal of the hibernation API is a dobj.Error (workerd throws an
 * Error or a TypeError; the message is the same). */
static PyObject *ws_error(module_state *st, int code)
{
	return raise_core_error(st, code);
}

/* A str's UTF-8; with surrogates, their WTF-8 form (a bytes object that
 * `view` holds): the core sends them as JavaScript would (dobj_ws_send). */
static const char *text_bytes(PyObject *s, Py_ssize_t *len, Py_buffer *view)
{
	const char *p;
	PyObject *b;
	int rc;

	view->obj = NULL;
	if ((p = PyUnicode_AsUTF8AndSize(s, len)) || !PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
		return p;
	PyErr_Clear();
	if (!(b = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass")))
		return NULL;
	rc = PyObject_GetBuffer(b, view, PyBUF_SIMPLE);
	Py_DECREF(b); /* the view holds it */
	if (rc < 0)
		return NULL;
	*len = view->len;
	return view->buf;
}

/* str -> (UTF-8, text 1); bytes-like -> (bytes, 0).  `view` holds the buffer. */
static const char *message_bytes(PyObject *msg, Py_ssize_t *len, int *text, Py_buffer *view)
{
	view->obj = NULL;
	if (PyUnicode_Check(msg)) {
		*text = 1;
		return text_bytes(msg, len, view);
	}
	*text = 0;
	if (PyObject_GetBuffer(msg, view, PyBUF_SIMPLE) < 0) {
		PyErr_Format(PyExc_TypeError, "a WebSocket message must be str or bytes, got %s",
			Py_TYPE(msg)->tp_name);
		return NULL;
	}
	*len = view->len;
	return view->buf;
}

/* A message (str or bytes) handed to the core: sent by the object (send)
 * or arriving from the client (receive, for hosts that carry WebSockets). */
static PyObject *pass_message(WebSocketObject *self, PyObject *msg,
	int (*to_core)(dobj_ws *, const void *, size_t, int))
{
	module_state *st = ws_state((PyObject *)self);
	Py_buffer view;
	Py_ssize_t len;
	int text, rc;
	const char *data;

	if (!st || !(data = message_bytes(msg, &len, &text, &view)))
		return NULL;
	rc = to_core(self->ws, data, (size_t)len, text);
	if (view.obj)
		PyBuffer_Release(&view);
	if (rc < 0)
		return ws_error(st, rc);
	Py_RETURN_NONE;
}

static PyObject *WebSocket_send(WebSocketObject *self, PyObject *msg)
{
	return pass_message(self, msg, dobj_ws_send);
}

static PyObject *WebSocket_close(WebSocketObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "code", "reason", NULL };
	module_state *st = ws_state((PyObject *)self);
	PyObject *code = Py_None, *reason = Py_None;
	const char *r = NULL;
	Py_buffer view = { 0 };
	Py_ssize_t rlen = 0;
	int c = -1, rc;

	if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "|OO:close", kwlist, &code, &reason))
		return NULL;
	if (code != Py_None) {
		long v = PyLong_AsLong(code);
		if (v == -1 && PyErr_Occurred())
			return NULL;
		c = v < 0 || v > 65535 ? 0 : (int)v; /* refused by the core's range */
	}
	if (reason != Py_None && !PyUnicode_Check(reason))
		return PyErr_Format(PyExc_TypeError, "a WebSocket close reason must be str, not %s",
			Py_TYPE(reason)->tp_name);
	if (reason != Py_None && !(r = text_bytes(reason, &rlen, &view)))
		return NULL;
	rc = dobj_ws_close(self->ws, c, r, (size_t)rlen);
	if (view.obj)
		PyBuffer_Release(&view);
	if (rc < 0)
		return ws_error(st, rc);
	Py_RETURN_NONE;
}

static PyObject *WebSocket_serialize_attachment(WebSocketObject *self, PyObject *value)
{
	module_state *st = ws_state((PyObject *)self);
	const unsigned char *data;
	size_t len;
	dobj_ser *ser;
	int rc;

	if (!st || !(ser = dobjpy_encode(&st->values, value, &data, &len)))
		return NULL;
	rc = dobj_ws_set_attachment(self->ws, data, len);
	dobjpy_encode_done(&st->values, ser);
	if (rc < 0)
		return ws_error(st, rc);
	Py_RETURN_NONE;
}

static PyObject *WebSocket_deserialize_attachment(WebSocketObject *self, PyObject *unused)
{
	module_state *st = ws_state((PyObject *)self);
	size_t len;
	const unsigned char *data = dobj_ws_attachment(self->ws, &len);

	(void)unused;
	if (!st)
		return NULL;
	if (!data)
		Py_RETURN_NONE;
	return dobjpy_decode(&st->values, data, len);
}

static PyObject *WebSocket_get_ready_state(WebSocketObject *self, void *c)
{
	(void)c;
	return PyLong_FromLong(dobj_ws_ready_state(self->ws));
}

static Py_hash_t WebSocket_hash(WebSocketObject *self)
{
	Py_hash_t h = (Py_hash_t)(dobj_ws_serial(self->ws) * 2 + (uint64_t)dobj_ws_end(self->ws));
	return h == -1 ? -2 : h;
}

/* Two wrappers of the same end are equal (an event's `ws` and the one in
 * get_web_sockets(), also across hibernation). */
static PyObject *WebSocket_richcompare(PyObject *a, PyObject *b, int op)
{
	module_state *st = ws_state(a);
	int eq;

	if (!st || !is_websocket(st, b) || (op != Py_EQ && op != Py_NE))
		Py_RETURN_NOTIMPLEMENTED;
	eq = ((WebSocketObject *)a)->ws == ((WebSocketObject *)b)->ws;
	return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyObject *WebSocket_repr(WebSocketObject *self)
{
	static const char *states[] = { "connecting", "open", "closing", "closed" };
	return PyUnicode_FromFormat("<WebSocket %s #%llu %s>",
		dobj_ws_end(self->ws) == DOBJ_WS_SERVER ? "server" : "client",
		(unsigned long long)dobj_ws_serial(self->ws), states[dobj_ws_ready_state(self->ws)]);
}

/* WebSocket._pair(): (client, server), for dobj.WebSocketPair. */
static PyObject *WebSocket_pair(PyObject *cls, PyObject *unused)
{
	module_state *st = module_state_of_type((PyTypeObject *)cls);
	dobj_ws *client, *server;
	PyObject *c, *s, *r;
	int rc;

	(void)unused;
	if (!st)
		return NULL;
	if ((rc = dobj_ws_pair_new(&client, &server)) < 0)
		return ws_error(st, rc);
	c = websocket_wrap(st, client);
	s = websocket_wrap(st, server);
	dobj_ws_unref(client);
	dobj_ws_unref(server);
	r = c && s ? PyTuple_Pack(2, c, s) : NULL;
	Py_XDECREF(c);
	Py_XDECREF(s);
	return r;
}

/* ----------------------------------------------------- the host's side */

/* payload: a tuple (send(data), close(code, reason), queued() or None,
 * abort(code, reason) or None, resume() or None) the host gave. */
static void io_call(PyObject *fn, PyObject *args)
{
	PyObject *r;

	if (!args) {
		PyErr_WriteUnraisable(fn);
		return;
	}
	r = PyObject_Call(fn, args, NULL);
	Py_DECREF(args);
	if (!r)
		PyErr_WriteUnraisable(fn);
	Py_XDECREF(r);
}

static void io_send(void *payload, const void *data, size_t len, int text)
{
	PyObject *fn = PyTuple_GET_ITEM((PyObject *)payload, 0), *msg, *et, *ev, *tb;

	/* Called from inside a step: an exception in flight stays as it was. */
	PyErr_Fetch(&et, &ev, &tb);
	msg = text ? PyUnicode_DecodeUTF8(data, (Py_ssize_t)len, "surrogatepass")
		: PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
	io_call(fn, msg ? PyTuple_Pack(1, msg) : NULL);
	Py_XDECREF(msg);
	PyErr_Restore(et, ev, tb);
}

static void io_close(void *payload, int code, const char *reason, size_t len)
{
	PyObject *fn = PyTuple_GET_ITEM((PyObject *)payload, 1), *r, *et, *ev, *tb;

	PyErr_Fetch(&et, &ev, &tb);
	r = PyUnicode_DecodeUTF8(reason, (Py_ssize_t)len, "replace");
	io_call(fn, r ? Py_BuildValue("(iO)", code, r) : NULL);
	Py_XDECREF(r);
	PyErr_Restore(et, ev, tb);
}

static void io_release(void *payload)
{
	Py_DECREF((PyObject *)payload);
}

/* The bound on a slow client (dobj_ws_io): items 2 and 3 of the payload,
 * queued() -> bytes not written yet, abort(code, reason). */
static size_t io_queued(void *payload)
{
	PyObject *fn = PyTuple_GET_ITEM((PyObject *)payload, 2), *r, *et, *ev, *tb;
	size_t n = 0;

	PyErr_Fetch(&et, &ev, &tb);
	r = PyObject_CallNoArgs(fn);
	if (r) {
		n = PyLong_AsSize_t(r);
		Py_DECREF(r);
	}
	if (PyErr_Occurred()) {
		PyErr_WriteUnraisable(fn);
		n = 0;
	}
	PyErr_Restore(et, ev, tb);
	return n;
}

static void io_abort(void *payload, int code, const char *reason, size_t len)
{
	PyObject *fn = PyTuple_GET_ITEM((PyObject *)payload, 3), *r, *et, *ev, *tb;

	PyErr_Fetch(&et, &ev, &tb);
	r = PyUnicode_DecodeUTF8(reason, (Py_ssize_t)len, "replace");
	io_call(fn, r ? Py_BuildValue("(iO)", code, r) : NULL);
	Py_XDECREF(r);
	PyErr_Restore(et, ev, tb);
}

static void io_resume(void *payload)
{
	PyObject *fn = PyTuple_GET_ITEM((PyObject *)payload, 4), *et, *ev, *tb;

	PyErr_Fetch(&et, &ev, &tb);
	io_call(fn, PyTuple_New(0));
	PyErr_Restore(et, ev, tb);
}

static const dobj_ws_io python_io = { io_send, io_close, io_release, NULL, NULL, NULL };
static const dobj_ws_io python_bounded_io = {
	io_send, io_close, io_release, io_queued, io_abort, io_resume
};

static PyObject *WebSocket_attach(WebSocketObject *self, PyObject *args)
{
	module_state *st = ws_state((PyObject *)self);
	PyObject *send, *close, *queued = Py_None, *abort = Py_None, *resume = Py_None, *payload;
	int rc, bounded;

	if (!st || !PyArg_ParseTuple(args, "OO|OOO:_attach", &send, &close, &queued, &abort, &resume))
		return NULL;
	bounded = queued != Py_None && abort != Py_None && resume != Py_None;
	if (!(payload = PyTuple_Pack(5, send, close, queued, abort, resume)))
		return NULL;
	if ((rc = dobj_ws_attach(self->ws, bounded ? &python_bounded_io : &python_io, payload)) < 0) {
		Py_DECREF(payload);
		return ws_error(st, rc);
	}
	Py_RETURN_NONE;
}

static PyObject *WebSocket_detach(WebSocketObject *self, PyObject *unused)
{
	(void)unused;
	dobj_ws_detach(self->ws);
	Py_RETURN_NONE;
}

static PyObject *WebSocket_receive(WebSocketObject *self, PyObject *msg)
{
	return pass_message(self, msg, dobj_ws_receive);
}

/* client._receive_paused(): True when the host should stop reading
 * (dobj_ws_receive_paused; resume() is called when it may again). */
static PyObject *WebSocket_receive_paused(WebSocketObject *self, PyObject *unused)
{
	(void)unused;
	return PyBool_FromLong(dobj_ws_receive_paused(self->ws));
}

static PyObject *WebSocket_peer_close(WebSocketObject *self, PyObject *args)
{
	module_state *st = ws_state((PyObject *)self);
	int code, clean, rc;
	const char *reason;
	Py_ssize_t len;

	if (!st || !PyArg_ParseTuple(args, "is#p:_peer_close", &code, &reason, &len, &clean))
		return NULL;
	if ((rc = dobj_ws_peer_close(self->ws, code, reason, (size_t)len, clean)) < 0)
		return ws_error(st, rc);
	Py_RETURN_NONE;
}

static PyObject *WebSocket_peer_error(WebSocketObject *self, PyObject *args)
{
	module_state *st = ws_state((PyObject *)self);
	const char *msg;
	Py_ssize_t len;
	int rc;

	if (!st || !PyArg_ParseTuple(args, "s#:_peer_error", &msg, &len))
		return NULL;
	if ((rc = dobj_ws_peer_error(self->ws, msg, (size_t)len)) < 0)
		return ws_error(st, rc);
	Py_RETURN_NONE;
}

static PyObject *WebSocket_get_is_client(WebSocketObject *self, void *c)
{
	(void)c;
	return PyBool_FromLong(dobj_ws_end(self->ws) == DOBJ_WS_CLIENT);
}

static PyMethodDef WebSocket_methods[] = {
	{ "send", (PyCFunction)WebSocket_send, METH_O, "Send a str (text) or bytes (binary) message." },
	{ "close", (PyCFunction)(void (*)(void))WebSocket_close, METH_VARARGS | METH_KEYWORDS,
		"close(code=None, reason=None): start the closing handshake." },
	{ "serialize_attachment", (PyCFunction)WebSocket_serialize_attachment, METH_O,
		"Keep a copy of a value with the socket (survives hibernation; 16 KiB serialized)." },
	{ "deserialize_attachment", (PyCFunction)WebSocket_deserialize_attachment, METH_NOARGS,
		"A copy of the value kept with serialize_attachment, or None." },
	/* The JavaScript names (Python Workers code). */
	{ "serializeAttachment", (PyCFunction)WebSocket_serialize_attachment, METH_O, NULL },
	{ "deserializeAttachment", (PyCFunction)WebSocket_deserialize_attachment, METH_NOARGS, NULL },
	{ "_pair", (PyCFunction)WebSocket_pair, METH_CLASS | METH_NOARGS, NULL },
	{ "_attach", (PyCFunction)WebSocket_attach, METH_VARARGS, NULL },
	{ "_detach", (PyCFunction)WebSocket_detach, METH_NOARGS, NULL },
	{ "_receive", (PyCFunction)WebSocket_receive, METH_O, NULL },
	{ "_receive_paused", (PyCFunction)WebSocket_receive_paused, METH_NOARGS, NULL },
	{ "_peer_close", (PyCFunction)WebSocket_peer_close, METH_VARARGS, NULL },
	{ "_peer_error", (PyCFunction)WebSocket_peer_error, METH_VARARGS, NULL },
	{ NULL }
};

static PyGetSetDef WebSocket_getset[] = {
	{ "ready_state", (getter)WebSocket_get_ready_state, NULL,
		"0 connecting, 1 open, 2 closing, 3 closed", NULL },
	{ "readyState", (getter)WebSocket_get_ready_state, NULL, NULL, NULL },
	{ "_is_client", (getter)WebSocket_get_is_client, NULL, NULL, NULL },
	{ NULL }
};

static PyType_Slot WebSocket_slots[] = {
	{ Py_tp_dealloc, WebSocket_dealloc },
	{ Py_tp_traverse, WebSocket_traverse },
	{ Py_tp_methods, WebSocket_methods },
	{ Py_tp_getset, WebSocket_getset },
	{ Py_tp_hash, WebSocket_hash },
	{ Py_tp_richcompare, WebSocket_richcompare },
	{ Py_tp_repr, WebSocket_repr },
	{ Py_tp_doc, (void *)"One end of a WebSocketPair (dobj.WebSocketPair())." },
	{ 0, NULL }
};

static PyType_Spec WebSocket_spec = {
	"dobj.WebSocket", sizeof(WebSocketObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE |
		Py_TPFLAGS_DISALLOW_INSTANTIATION,
	WebSocket_slots
};

/* ------------------------------------------------------ the ctx methods */

static int ctx_alive(ContextObject *ctx)
{
	if (!ctx->rt || !ctx->rt->rt) {
		PyErr_SetString(ctx->rt ? ctx->rt->st->Error : PyExc_RuntimeError, DOBJ_MSG_CLOSED);
		return 0;
	}
	if (dobj_obj_check(ctx->obj) < 0) {
		PyErr_SetString(ctx->rt->st->Error, dobj_error_last());
		return 0;
	}
	return 1;
}

dobj_ws *websocket_arg(module_state *st, PyObject *o)
{
	if (!is_websocket(st, o)) {
		PyErr_Format(PyExc_TypeError, "expected a dobj.WebSocket, got %s", Py_TYPE(o)->tp_name);
		return NULL;
	}
	return ((WebSocketObject *)o)->ws;
}

/* ctx.accept_web_socket(ws, tags=None) */
PyObject *ctx_accept_web_socket(ContextObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "ws", "tags", NULL };
	module_state *st;
	PyObject *wso, *tags = Py_None, *seq = NULL, *tmps[DOBJ_WS_MAX_TAGS + 1] = { NULL };
	const char *ptrs[DOBJ_WS_MAX_TAGS + 1];
	size_t lens[DOBJ_WS_MAX_TAGS + 1];
	Py_ssize_t i, n = 0, len;
	dobj_ws *ws;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:accept_web_socket", kwlist, &wso, &tags) ||
	    !ctx_alive(self))
		return NULL;
	st = self->rt->st;
	if (!(ws = websocket_arg(st, wso)))
		return NULL;
	if (tags != Py_None) {
		if (PyUnicode_Check(tags)) {
			PyErr_SetString(PyExc_TypeError, "tags must be a list of str, not a str");
			return NULL;
		}
		if (!(seq = PySequence_Fast(tags, "tags must be a list of str")))
			return NULL;
		n = PySequence_Fast_GET_SIZE(seq);
		for (i = 0; i < n && i <= DOBJ_WS_MAX_TAGS; i++) {
			PyObject *t = PySequence_Fast_GET_ITEM(seq, i);
			if (!PyUnicode_Check(t)) {
				/* The earlier tags' WTF-8 bytes (lone surrogates) too. */
				while (i--)
					Py_XDECREF(tmps[i]);
				Py_DECREF(seq);
				PyErr_Format(PyExc_TypeError, "a tag must be a str, got %s", Py_TYPE(t)->tp_name);
				return NULL;
			}
			/* A tag is a JavaScript string: lone surrogates go as
			 * WTF-8, as names do (get_tags gives them back). */
			if (!(ptrs[i] = dobjpy_str_utf8(t, &len, &tmps[i]))) {
				while (i--)
					Py_XDECREF(tmps[i]);
				Py_DECREF(seq);
				return NULL;
			}
			lens[i] = (size_t)len;
		}
	}
	/* More than the limit: the core refuses with its message. */
	rc = dobj_ws_accept(self->obj, ws, ptrs, lens, NULL,
		(size_t)(n > DOBJ_WS_MAX_TAGS ? DOBJ_WS_MAX_TAGS + 1 : n));
	for (i = 0; i <= DOBJ_WS_MAX_TAGS; i++)
		Py_XDECREF(tmps[i]);
	Py_XDECREF(seq);
	if (rc < 0)
		return ws_error(st, rc);
	Py_RETURN_NONE;
}

/* ctx.get_web_sockets(tag=None) */
PyObject *ctx_get_web_sockets(ContextObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "tag", NULL };
	PyObject *tag = Py_None, *list, *tmp = NULL;
	const char *t = NULL;
	Py_ssize_t tlen = 0;
	dobj_ws **all;
	size_t n, i;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:get_web_sockets", kwlist, &tag) ||
	    !ctx_alive(self))
		return NULL;
	if (tag != Py_None && !(t = dobjpy_str_arg(tag, "a tag", &tlen, &tmp)))
		return NULL;
	rc = dobj_obj_web_sockets(self->obj, t, (size_t)tlen, &all, &n);
	Py_XDECREF(tmp);
	if (rc < 0)
		return ws_error(self->rt->st, rc);
	list = PyList_New((Py_ssize_t)n);
	for (i = 0; i < n; i++) {
		if (list) {
			PyObject *w = websocket_wrap(self->rt->st, all[i]);
			if (!w)
				Py_CLEAR(list);
			else
				PyList_SET_ITEM(list, (Py_ssize_t)i, w);
		}
		dobj_ws_unref(all[i]);
	}
	dobj_free(all);
	return list;
}

/* ctx.get_tags(ws) */
PyObject *ctx_get_tags(ContextObject *self, PyObject *wso)
{
	dobj_ws *ws;
	size_t n, i, len;
	PyObject *list;
	int rc;

	if (!ctx_alive(self) || !(ws = websocket_arg(self->rt->st, wso)))
		return NULL;
	if ((rc = dobj_ws_tag_count(ws, &n)) < 0)
		return ws_error(self->rt->st, rc);
	if (!(list = PyList_New((Py_ssize_t)n)))
		return NULL;
	for (i = 0; i < n; i++) {
		const char *t = dobj_ws_tag_at(ws, i, &len);
		PyObject *s = PyUnicode_DecodeUTF8(t, (Py_ssize_t)len, "surrogatepass");
		if (!s) {
			Py_DECREF(list);
			return NULL;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, s);
	}
	return list;
}

/* ctx.set_web_socket_auto_response(pair=None): pair has .request, .response */
PyObject *ctx_set_web_socket_auto_response(ContextObject *self, PyObject *const *args,
	Py_ssize_t nargs)
{
	PyObject *pair = nargs > 0 ? args[0] : Py_None, *req = NULL, *resp = NULL, *ta = NULL,
		*tb = NULL;
	const char *a = NULL, *b = NULL;
	Py_ssize_t alen = 0, blen = 0;
	int rc;

	if (nargs > 1) {
		PyErr_SetString(PyExc_TypeError, "set_web_socket_auto_response takes one argument");
		return NULL;
	}
	if (!ctx_alive(self))
		return NULL;
	if (pair != Py_None) {
		if (!(req = PyObject_GetAttrString(pair, "request")) ||
		    !(resp = PyObject_GetAttrString(pair, "response")) ||
		    !(a = dobjpy_str_arg(req, "the auto-response request", &alen, &ta)) ||
		    !(b = dobjpy_str_arg(resp, "the auto-response response", &blen, &tb))) {
			Py_XDECREF(ta);
			Py_XDECREF(req);
			Py_XDECREF(resp);
			return NULL;
		}
	}
	/* Lone surrogates reach the core as WTF-8: it refuses them (text
	 * messages are UTF-8) with its message. */
	rc = dobj_obj_set_ws_auto_response(self->obj, a, (size_t)alen, b, (size_t)blen);
	Py_XDECREF(ta);
	Py_XDECREF(tb);
	Py_XDECREF(req);
	Py_XDECREF(resp);
	if (rc < 0)
		return ws_error(self->rt->st, rc);
	Py_RETURN_NONE;
}

/* `module.name(*args)` for the few values made by Python code. */
static PyObject *call_python(const char *module, const char *name, const char *fmt, ...)
{
	PyObject *m = PyImport_ImportModule(module), *fn, *args, *r = NULL;
	va_list ap;

	if (!m)
		return NULL;
	fn = PyObject_GetAttrString(m, name);
	Py_DECREF(m);
	if (!fn)
		return NULL;
	va_start(ap, fmt);
	args = Py_VaBuildValue(fmt, ap);
	va_end(ap);
	if (args)
		r = PyObject_CallObject(fn, args);
	Py_XDECREF(args);
	Py_DECREF(fn);
	return r;
}

/* ctx.get_web_socket_auto_response(): a dobj.WebSocketRequestResponsePair or None. */
PyObject *ctx_web_socket_auto_response(ContextObject *self, PyObject *unused)
{
	const char *a, *b;
	size_t alen, blen;

	(void)unused;
	if (!ctx_alive(self))
		return NULL;
	if (!dobj_obj_ws_auto_response(self->obj, &a, &alen, &b, &blen))
		Py_RETURN_NONE;
	return call_python("dobj", "WebSocketRequestResponsePair", "(s#s#)", a, (Py_ssize_t)alen,
		b, (Py_ssize_t)blen);
}

/* ctx.get_web_socket_auto_response_timestamp(ws): an aware UTC datetime or None. */
PyObject *ctx_web_socket_auto_response_ms(ContextObject *self, PyObject *wso)
{
	dobj_ws *ws;
	double ms;

	if (!ctx_alive(self) || !(ws = websocket_arg(self->rt->st, wso)))
		return NULL;
	if (!dobj_ws_auto_response_time(ws, &ms))
		Py_RETURN_NONE;
	return call_python("dobj", "_utc_datetime", "(d)", ms);
}

/* ------------------------------------------------------- handler dispatch */

/* Start the handler of a WebSocket event: inst.web_socket_message(ws, msg),
 * web_socket_close(ws, code, reason, was_clean), web_socket_error(ws, error).
 * The result (a coroutine or a value) goes to the driver like fetch's. */
PyObject *websocket_dispatch(dobj_task *t, RuntimeObject *rt, PyObject *inst)
{
	const dobj_ws_event *ev = dobj_task_ws_event(t);
	module_state *st = rt->st;
	PyObject *ws, *r = NULL, *a = NULL, *b = NULL;

	if (!ev) {
		PyErr_SetString(st->Error, "a WebSocket event without its data");
		return NULL;
	}
	if (!(ws = websocket_wrap(st, ev->ws)))
		return NULL;
	switch (dobj_task_call_kind(t)) {
	case DOBJ_CALL_WS_MESSAGE:
		a = ev->text ? PyUnicode_DecodeUTF8((const char *)ev->data, (Py_ssize_t)ev->len,
			"surrogatepass") : PyBytes_FromStringAndSize((const char *)ev->data,
			(Py_ssize_t)ev->len);
		if (a)
			r = PyObject_CallMethod(inst, "web_socket_message", "OO", ws, a);
		break;
	case DOBJ_CALL_WS_CLOSE:
		a = PyUnicode_DecodeUTF8(ev->reason, (Py_ssize_t)ev->reason_len, "replace");
		if (a)
			r = PyObject_CallMethod(inst, "web_socket_close", "OiOO", ws, ev->code, a,
				ev->was_clean ? Py_True : Py_False);
		break;
	default:
		b = PyUnicode_DecodeUTF8((const char *)ev->data, (Py_ssize_t)ev->len, "replace");
		a = b ? PyObject_CallOneArg(st->Error, b) : NULL;
		if (a)
			r = PyObject_CallMethod(inst, "web_socket_error", "OO", ws, a);
		break;
	}
	Py_DECREF(ws);
	Py_XDECREF(a);
	Py_XDECREF(b);
	return r;
}

/* The class flags of the handlers a class has. */
unsigned websocket_class_flags(PyObject *cls)
{
	static const char *names[] = { "web_socket_message", "web_socket_close", "web_socket_error" };
	unsigned flags = 0;
	int i;

	for (i = 0; i < 3; i++) {
		PyObject *attr = PyObject_GetAttrString(cls, names[i]);
		if (attr)
			flags |= DOBJ_CLASS_WS_MESSAGE << i;
		Py_XDECREF(attr);
		PyErr_Clear();
	}
	return flags;
}

/* _check_response(status, has_web_socket): the core's status rule. */
PyObject *websocket_check_response(PyObject *m, PyObject *const *args, Py_ssize_t nargs)
{
	int ovf;
	long long s;

	(void)m;
	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "_check_response(status, has_web_socket)");
		return NULL;
	}
	s = PyLong_AsLongLongAndOverflow(args[0], &ovf);
	if (s == -1 && PyErr_Occurred())
		return NULL;
	if (dobj_ws_response_check(ovf ? (long long)ovf * 1000 : s, PyObject_IsTrue(args[1])) < 0) {
		PyErr_SetString(PyExc_ValueError, dobj_error_last());
		return NULL;
	}
	Py_RETURN_NONE;
}

int websocket_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);

	/* The connection type is internal: made, not added to the module. */
	st->WebSocketConn_T = (PyTypeObject *)PyType_FromModuleAndSpec(m, &WebSocketConn_spec, NULL);
	if (!st->WebSocketConn_T)
		return -1;
	return module_add_type(m, &WebSocket_spec, &st->WebSocket_T);
}
