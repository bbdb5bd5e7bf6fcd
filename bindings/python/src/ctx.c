/*
 * ctx.c — dobj.Context, the `ctx` of an object: ctx.id, ctx.storage,
 * abort, block_concurrency_while, wait_until.
 */
#include "module.h"

static int Context_traverse(ContextObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->rt);
	Py_VISIT(self->id);
	Py_VISIT(self->dict);
	Py_VISIT(self->storage);
	return 0;
}

static int Context_clear(ContextObject *self)
{
	Py_CLEAR(self->rt);
	Py_CLEAR(self->id);
	Py_CLEAR(self->dict);
	Py_CLEAR(self->storage);
	return 0;
}

static void Context_dealloc(ContextObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->obj) {
		dobj_obj_unref(self->obj);
		self->obj = NULL;
	}
	Context_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static int context_check_alive(ContextObject *self)
{
	if (!self->rt || !self->rt->rt) {
		PyErr_SetString(self->rt ? self->rt->st->Error : PyExc_RuntimeError, DOBJ_MSG_CLOSED);
		return 0;
	}
	if (dobj_obj_check(self->obj) < 0) {
		PyErr_SetString(self->rt->st->Error, dobj_error_last());
		return 0;
	}
	return 1;
}

PyObject *abort_reason_exception(module_state *st, PyObject *reason)
{
	if (reason && PyExceptionInstance_Check(reason))
		return Py_NewRef(reason);
	{
		PyObject *s = !reason || reason == Py_None
			? PyUnicode_FromString(DOBJ_MSG_ABORT_DEFAULT)
			: PyObject_Str(reason), *e;
		if (!s)
			return NULL;
		e = PyObject_CallOneArg(st->Error, s);
		Py_DECREF(s);
		return e;
	}
}

static PyObject *Context_abort(ContextObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	PyObject *exc, *s;
	const char *msg;
	dobj_task *cur;
	int own;

	if (nargs > 1) {
		PyErr_SetString(PyExc_TypeError, "abort(reason=None)");
		return NULL;
	}
	if (!context_check_alive(self))
		return NULL;
	/* Called by the object's own code (a handler, its constructor, a block
	 * or wait_until task of it)?  The core fails that task with the abort:
	 * whatever the handler does afterwards never reaches its caller. */
	cur = dobj_rt_current(self->rt->rt);
	own = cur && dobj_task_obj(cur) == self->obj;
	exc = abort_reason_exception(self->rt->st, nargs ? args[0] : NULL);
	if (!exc)
		return NULL;
	s = PyObject_Str(exc);
	msg = s ? PyUnicode_AsUTF8(s) : NULL;
	if (!msg)
		PyErr_Clear();
	{
		/* The core keeps a copy: the original is raised here and picks up
		 * this caller's frames, which must not hang off the core's value. */
		PyObject *box = error_box_shared(copy_exception(exc));
		dobj_obj_abort(self->obj, DOBJ_EABORTED, msg ? msg : "aborted", box);
	}
	/* Outside a step nobody else runs what the abort woke (handlers that
	 * awaited a call to this object): pump now.  Inside one, the running
	 * pump does; runtime_pump() also completes futures deferred by call_on_task_done. */
	if (self->rt->rt && !dobj_rt_pumping(self->rt->rt))
		runtime_pump(self->rt);
	else
		complete_deferred_futures(self->rt->st);
	Py_XDECREF(s);
	if (own) {
		/* Cloudflare: the abort cannot be caught by the application.  Raise
		 * dobj.Aborted, a BaseException (like asyncio.CancelledError), so
		 * `except Exception` lets it through; a handler that catches it
		 * anyway changes nothing (its task has failed already) and its
		 * coroutine is closed at its next suspension. */
		PyObject *a = PyObject_CallOneArg(self->rt->st->Aborted, exc);
		if (a) {
			PyException_SetCause(a, Py_NewRef(exc));
			PyErr_SetObject(self->rt->st->Aborted, a);
			Py_DECREF(a);
		}
		Py_DECREF(exc);
		return NULL;
	}
	/* From outside the object (plain asyncio code): the reason is raised. */
	PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
	Py_DECREF(exc);
	return NULL;
}

/* Run an awaitable's iterator (`it`, taken) as a task of `kind` on the
 * object; return a Call over it. */
static PyObject *context_spawn_task(ContextObject *self, dobj_task_kind kind, PyObject *it)
{
	RuntimeObject *rt = self->rt;
	dobj_task *t;
	int rc;

	rc = dobj_task_spawn(&t, rt->rt, self->obj, kind, coroutine_step, rt, it, NULL, NULL);
	if (rc < 0)
		return raise_core_error(rt->st, rc); /* the core released it */
	if (!dobj_rt_pumping(rt->rt))
		runtime_pump(rt);
	return (PyObject *)call_object_new(rt, t, NULL, 0);
}

static PyObject *Context_block_concurrency_while(ContextObject *self, PyObject *fn)
{
	PyObject *r, *it;

	if (!context_check_alive(self))
		return NULL;
	if (!PyCallable_Check(fn)) {
		PyErr_Format(PyExc_TypeError, "block_concurrency_while() needs a callable, got %.100s",
			Py_TYPE(fn)->tp_name);
		return NULL;
	}
	r = PyObject_CallNoArgs(fn);
	if (!r) {
		/* fn failed at once: the object is reset, as when it fails later. */
		char msg[1024];
		PyObject *exc = take_exception(msg, sizeof(msg));
		if (exc) {
			PyObject *box = error_box_shared(copy_exception(exc));
			dobj_obj_abort(self->obj, DOBJ_EUSER, msg, box);
				if (self->rt->rt && !dobj_rt_pumping(self->rt->rt))
				runtime_pump(self->rt);
			else
				complete_deferred_futures(self->rt->st);
			PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
			Py_DECREF(exc);
		}
		return NULL;
	}
	it = awaitable_iterator(r);
	if (!it) {
		/* A plain function: it ran to the end with nothing interleaved. */
		CallObject *c;
		if (PyErr_Occurred()) {
			Py_DECREF(r);
			return NULL;
		}
		c = call_object_new(self->rt, NULL, NULL, 0);
		if (c)
			c->value = r;
		else
			Py_DECREF(r);
		return (PyObject *)c;
	}
	Py_DECREF(r);
	return context_spawn_task(self, DOBJ_TASK_BLOCK, it);
}

static PyObject *Context_wait_until(ContextObject *self, PyObject *awaitable)
{
	PyObject *it, *call;

	if (!context_check_alive(self))
		return NULL;
	it = awaitable_iterator(awaitable);
	if (!it) {
		if (!PyErr_Occurred())
			PyErr_Format(PyExc_TypeError, "wait_until() needs an awaitable, got %.100s",
				Py_TYPE(awaitable)->tp_name);
		return NULL;
	}
	call = context_spawn_task(self, DOBJ_TASK_BACKGROUND, it);
	if (!call)
		return NULL;
	Py_DECREF(call);
	Py_RETURN_NONE;
}

static PyObject *Context_get_id(ContextObject *self, void *c)
{
	(void)c;
	return Py_NewRef(self->id);
}

static PyMethodDef Context_methods[] = {
	{ "abort", (PyCFunction)(void (*)(void))Context_abort, METH_FASTCALL,
		"Reset the object: calls in progress and later calls on stubs bound to it fail with reason." },
	{ "block_concurrency_while", (PyCFunction)Context_block_concurrency_while, METH_O,
		"Deliver nothing else to the object until fn() finishes; await it for fn's result." },
	{ "wait_until", (PyCFunction)Context_wait_until, METH_O,
		"Keep background work (an awaitable) alive." },
	/* The WebSocket hibernation API (websocket.c). */
	{ "accept_web_socket", (PyCFunction)(void (*)(void))ctx_accept_web_socket,
		METH_VARARGS | METH_KEYWORDS, "Accept the server end of a WebSocketPair, with tags." },
	{ "get_web_sockets", (PyCFunction)(void (*)(void))ctx_get_web_sockets,
		METH_VARARGS | METH_KEYWORDS, "The accepted WebSockets (with `tag` if given)." },
	{ "get_tags", (PyCFunction)ctx_get_tags, METH_O, "The tags of an accepted WebSocket." },
	{ "set_web_socket_auto_response",
		(PyCFunction)(void (*)(void))ctx_set_web_socket_auto_response, METH_FASTCALL,
		"Answer a request message with a response without waking the object (None clears)." },
	{ "get_web_socket_auto_response", (PyCFunction)ctx_web_socket_auto_response, METH_NOARGS,
		"The WebSocketRequestResponsePair set, or None." },
	{ "get_web_socket_auto_response_timestamp", (PyCFunction)ctx_web_socket_auto_response_ms,
		METH_O, "When the socket was last answered by the auto-response (UTC), or None." },
	{ NULL }
};

static PyObject *Context_get_storage(ContextObject *self, void *c)
{
	(void)c;
	if (!self->storage) {
		if (!context_check_alive(self))
			return NULL;
		self->storage = dobjpy_storage_new(&self->rt->st->storage, (PyObject *)self, self->obj);
		if (!self->storage)
			return NULL;
	}
	return Py_NewRef(self->storage);
}

/* An alarm was set from outside a pump: make sure a loop watches the fd. */
void context_alarm_changed(PyObject *ctx)
{
	ContextObject *c = (ContextObject *)ctx;

	if (c->rt && c->rt->rt && !dobj_rt_closed(c->rt->rt) && !dobj_rt_pumping(c->rt->rt))
		runtime_watch(c->rt);
}

static PyGetSetDef Context_getset[] = {
	{ "id", (getter)Context_get_id, NULL, "The object's ID.", NULL },
	{ "storage", (getter)Context_get_storage, NULL,
		"The object's durable storage (key-value, SQL, alarm).", NULL },
	{ NULL }
};

static PyMemberDef Context_members[] = {
	{ "__dictoffset__", T_PYSSIZET, offsetof(ContextObject, dict), READONLY, NULL },
	{ NULL }
};

static PyType_Slot Context_slots[] = {
	{ Py_tp_doc, "The state of one object: ctx.id, block_concurrency_while, abort, wait_until." },
	{ Py_tp_traverse, Context_traverse },
	{ Py_tp_clear, Context_clear },
	{ Py_tp_dealloc, Context_dealloc },
	{ Py_tp_methods, Context_methods },
	{ Py_tp_getset, Context_getset },
	{ Py_tp_members, Context_members },
	{ 0, NULL }
};

static PyType_Spec Context_spec = {
	"dobj.Context", sizeof(ContextObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Context_slots
};

int ctx_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);

	return module_add_type(m, &Context_spec, &st->Context_T);
}
