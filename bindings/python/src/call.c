/*
 * call.c — dobj.Call: the awaitable over a core task (a call to an object, a
 * block_concurrency_while section), or over a value.
 *
 * Awaited inside a handler step, a call yields itself and the driver makes
 * the core wake the handler when it finishes; awaited outside any handler, it
 * yields a loop future only when it is not finished yet.
 */
#include "module.h"

static void call_on_task_done(dobj_task *t, void *data);

CallObject *call_object_new(RuntimeObject *rt, dobj_task *task, IdObject *target, int is_fetch)
{
	CallObject *c = PyObject_GC_New(CallObject, rt->st->Call_T);

	if (!c) {
		dobj_task_unref(task);
		return NULL;
	}
	c->rt = (RuntimeObject *)Py_NewRef(rt);
	c->task = task;
	c->future = NULL;
	c->value = NULL;
	c->error = NULL;
	c->target = (IdObject *)Py_XNewRef(target);
	c->is_fetch = is_fetch;
	if (task)
		dobj_task_on_done(task, call_on_task_done, c);
	PyObject_GC_Track(c);
	return c;
}

static int Call_traverse(CallObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->rt);
	Py_VISIT(self->future);
	Py_VISIT(self->value);
	Py_VISIT(self->error);
	Py_VISIT(self->target);
	if (self->task && dobj_task_done(self->task)) {
		void *res, *err;
		dobj_task_result(self->task, &res, NULL, &err);
		if (res && !dobj_task_result_is_core(self->task))
			Py_VISIT((PyObject *)res);
		if (err)
			Py_VISIT((PyObject *)err);
	}
	return 0;
}

static void call_drop_task(CallObject *self)
{
	if (self->task) {
		dobj_task_on_done(self->task, NULL, NULL);
		dobj_task_unref(self->task);
		self->task = NULL;
	}
}

static int Call_clear(CallObject *self)
{
	call_drop_task(self);
	Py_CLEAR(self->rt);
	Py_CLEAR(self->future);
	Py_CLEAR(self->value);
	Py_CLEAR(self->error);
	Py_CLEAR(self->target);
	return 0;
}

static void Call_dealloc(CallObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	Call_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static void call_complete_future(CallObject *self);

/*
 * The task finished: complete the loop future of whoever awaits it outside a
 * handler.  (Handlers wait through the core: dobj_task_wait wakes each of
 * them, however many await the same call.)
 *
 * Done callbacks also run from inside the core's own loops (dobj_obj_abort
 * and dobj_rt_clear fail tasks one by one) where no pump is running.  There
 * this callback must neither drop a reference (dobj_task_unref would flush
 * the core's trash: finalisers, re-entry, and possibly this very Call freed
 * under our feet) nor run Python code (an allocation may start the GC).  So
 * outside a pump the loop future is completed after the core returns
 * (complete_deferred_futures).
 */
static void call_on_task_done(dobj_task *t, void *data)
{
	CallObject *self = data;

	if (self->future) {
		if (dobj_rt_pumping(dobj_task_rt(t)))
			call_complete_future(self);
		else if (PyList_Append(self->rt->st->deferred, (PyObject *)self) < 0)
			PyErr_Clear();
	}
}

/* Complete the loop future of a finished call (runs Python code). */
static void call_complete_future(CallObject *self)
{
	if (self->future && self->rt) {
		PyObject *future = Py_NewRef(self->future);
		PyObject *done = PyObject_CallMethodNoArgs(future, self->rt->st->s_done);
		if (done && !PyObject_IsTrue(done)) {
			PyObject *r = PyObject_CallMethodOneArg(future, self->rt->st->s_set_result, Py_None);
			Py_XDECREF(r);
		}
		Py_XDECREF(done);
		if (PyErr_Occurred())
			PyErr_WriteUnraisable(future);
		Py_DECREF(future);
	}
}

/* Complete the futures of calls that finished inside a core loop run outside
 * a pump (abort, clear).  Called by the binding once the core has returned. */
void complete_deferred_futures(module_state *st)
{
	PyObject *exc_type, *exc_value, *exc_tb;

	if (!st->deferred || PyList_GET_SIZE(st->deferred) == 0)
		return;
	PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
	while (PyList_GET_SIZE(st->deferred) > 0) {
		CallObject *c = (CallObject *)Py_NewRef(PyList_GET_ITEM(st->deferred, 0));
		if (PySequence_DelItem(st->deferred, 0) < 0) {
			PyErr_Clear();
			Py_DECREF(c);
			break;
		}
		call_complete_future(c);
		Py_DECREF(c);
	}
	PyErr_Restore(exc_type, exc_value, exc_tb);
}

int call_is_done(CallObject *self)
{
	return !self->task || dobj_task_done(self->task);
}

/* Build the exception a caller sees for a failed task. */
static PyObject *call_exception(CallObject *self, int code, const char *msg, PyObject *err)
{
	module_state *st = self->rt->st;
	PyObject *exc;

	if (err) {
		exc = error_unbox(err);
	} else {
		PyObject *type = code == DOBJ_EINVALID || code == DOBJ_EFOREIGN ? st->InvalidIdError : st->Error;
		PyObject *text = core_message(msg ? msg : "error");
		if (!text)
			return NULL;
		exc = PyObject_CallOneArg(type, text);
		Py_DECREF(text);
		if (!exc)
			return NULL;
	}
	if (self->target && PyObject_HasAttrString(exc, "__dict__")) {
		PyObject *hex = Id_str(self->target);
		if (hex) {
			/* The core decides what is remote (see dobj_task_remote). */
			PyObject_SetAttr(exc, st->s_remote, dobj_task_remote(self->task) ? Py_True : Py_False);
			/* Cluster mode: the call may or may not have run (dobj/route.h). */
			PyObject_SetAttr(exc, st->s_retryable,
				dobj_task_retryable(self->task) ? Py_True : Py_False);
			PyObject_SetAttr(exc, st->s_durable_object_id, hex);
			Py_DECREF(hex);
		}
		PyErr_Clear();
	}
	return exc;
}

static PyObject *call_core_result(CallObject *self, void *res);

/* The result of a finished call: a new reference, or NULL with an exception set. */
static PyObject *call_result(CallObject *self)
{
	void *res, *err;
	const char *msg;
	int code;
	PyObject *exc;

	if (!self->task) {
		if (self->error) {
			PyErr_SetObject((PyObject *)Py_TYPE(self->error), self->error);
			return NULL;
		}
		return Py_NewRef(self->value ? self->value : Py_None);
	}
	code = dobj_task_result(self->task, &res, &msg, &err);
	if (code == DOBJ_OK && res && dobj_task_result_is_core(self->task)) {
		/* RPC results (dobj_val) and native fetch responses (dobj_msg). */
		PyObject *v = call_core_result(self, res);
		if (!v)
			return NULL;
		self->value = v;
	} else if (code == DOBJ_OK) {
		self->value = Py_NewRef(res ? (PyObject *)res : Py_None);
	} else {
		exc = call_exception(self, code, msg, err);
		if (!exc)
			return NULL;
		self->error = exc;
	}
	call_drop_task(self);
	return call_result(self);
}

typedef enum { CALL_NEXT, CALL_RETURN, CALL_ERROR } call_send_result;

static PyObject *call_next_yield(CallObject *self);

/*
 * One step of `await call` (the am_send protocol): CALL_RETURN with the
 * result in *out once finished, CALL_NEXT with what to yield meanwhile, or
 * CALL_ERROR with an exception.
 */
static call_send_result call_send(CallObject *self, PyObject **out)
{
	*out = call_next_yield(self);
	if (*out)
		return CALL_NEXT;
	if (PyErr_Occurred() || !call_is_done(self))
		return CALL_ERROR;
	*out = call_result(self);
	return *out ? CALL_RETURN : CALL_ERROR;
}

/* What to yield while the call is not finished: NULL (no exception) once it is. */
static PyObject *call_next_yield(CallObject *self)
{
	module_state *st = self->rt->st;
	PyObject *loop;

	if (call_is_done(self))
		return NULL;
	/* Inside a handler step: yield ourselves; the driver makes the core wake
	 * the handler when we finish. */
	if (self->rt->rt && dobj_rt_current(self->rt->rt))
		return Py_NewRef(self);
	/* Outside: park the awaiting asyncio task on a loop future. */
	if (!self->future) {
		loop = PyObject_CallNoArgs(st->get_running_loop);
		if (!loop)
			return NULL;
		self->future = PyObject_CallMethodNoArgs(loop, st->s_create_future);
		Py_DECREF(loop);
		if (!self->future)
			return NULL;
	}
	if (PyObject_SetAttr(self->future, st->s_blocking, Py_True) < 0)
		return NULL;
	return Py_NewRef(self->future);
}

#if PY_VERSION_HEX >= 0x030A0000
/* am_send: the return value travels without a StopIteration. */
static PySendResult Call_am_send(CallObject *self, PyObject *arg, PyObject **out)
{
	(void)arg;
	switch (call_send(self, out)) {
	case CALL_NEXT:
		return PYGEN_NEXT;
	case CALL_RETURN:
		return PYGEN_RETURN;
	default:
		return PYGEN_ERROR;
	}
}
#endif

/* The iterator protocol (next(), send(), Python 3.9): the result is raised as
 * StopIteration(result). */
static PyObject *Call_next(CallObject *self)
{
	PyObject *r, *stop;

	switch (call_send(self, &r)) {
	case CALL_NEXT:
		return r;
	case CALL_RETURN:
		/* An instance, so that a tuple or an exception result is not taken
		 * for the exception's arguments. */
		stop = PyObject_CallOneArg(PyExc_StopIteration, r);
		Py_DECREF(r);
		if (stop) {
			PyErr_SetObject(PyExc_StopIteration, stop);
			Py_DECREF(stop);
		}
		return NULL;
	default:
		return NULL;
	}
}

static PyObject *Call_send(CallObject *self, PyObject *v)
{
	(void)v;
	return Call_next(self);
}

static PyObject *Call_throw(CallObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	/* The awaiting task was cancelled (or something was thrown in): pass it on. */
	(void)self;
	if (nargs < 1) {
		PyErr_SetString(PyExc_TypeError, "throw() needs an exception");
		return NULL;
	}
	if (PyExceptionInstance_Check(args[0]))
		PyErr_SetObject((PyObject *)Py_TYPE(args[0]), args[0]);
	else
		PyErr_SetObject(args[0], nargs > 1 ? args[1] : NULL);
	return NULL;
}

/* The outcome of a finished call without awaiting it (a loop of your own
 * that waits on Runtime.fileno()). */
static PyObject *Call_result(CallObject *self, PyObject *unused)
{
	(void)unused;
	if (!call_is_done(self)) {
		PyErr_SetString(self->rt->st->Error, "the call has not finished yet");
		return NULL;
	}
	return call_result(self);
}

static PyObject *Call_close(CallObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	Py_RETURN_NONE;
}

static PyObject *Call_await(CallObject *self)
{
	return Py_NewRef(self);
}

static PyObject *Call_get_done(CallObject *self, void *c)
{
	(void)c;
	return PyBool_FromLong(call_is_done(self));
}

static PyMethodDef Call_methods[] = {
	{ "send", (PyCFunction)Call_send, METH_O, NULL },
	{ "throw", (PyCFunction)(void (*)(void))Call_throw, METH_FASTCALL, NULL },
	{ "close", (PyCFunction)Call_close, METH_NOARGS, NULL },
	{ "result", (PyCFunction)Call_result, METH_NOARGS,
		"The value of a finished call, or raise its error (dobj.Error if not finished)." },
	{ NULL }
};

static PyGetSetDef Call_getset[] = {
	{ "done", (getter)Call_get_done, NULL, "Has the call finished?", NULL },
	{ NULL }
};

static PyType_Slot Call_slots[] = {
	{ Py_tp_doc, "An awaitable call to a Durable Object (or a blocked section)." },
	{ Py_tp_traverse, Call_traverse },
	{ Py_tp_clear, Call_clear },
	{ Py_tp_dealloc, Call_dealloc },
	{ Py_tp_iter, Call_await },
	{ Py_tp_iternext, Call_next },
	{ Py_am_await, Call_await },
#if PY_VERSION_HEX >= 0x030A0000
	{ Py_am_send, Call_am_send },
#endif
	{ Py_tp_methods, Call_methods },
	{ Py_tp_getset, Call_getset },
	{ 0, NULL }
};

static PyType_Spec Call_spec = {
	"dobj.Call", sizeof(CallObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Call_slots
};

/* A core result: a dobj_val (RPC) or a dobj_msg (fetch to a native class). */
static PyObject *call_core_result(CallObject *self, void *res)
{
	if (self->is_fetch)
		return http_response_from_msg(self->rt->st, res);
	return rpc_value_from_core(self->rt, res);
}

int call_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);

	return module_add_type(m, &Call_spec, &st->Call_T);
}
