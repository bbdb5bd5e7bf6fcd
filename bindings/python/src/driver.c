/*
 * driver.c — the handler driver.  The core constructs instances and steps
 * tasks through the hooks here; a handler is a coroutine that each step
 * advances with PyIter_Send.  What it yields says how it is woken:
 *   - a dobj awaitable (a call to another object, block_concurrency_while):
 *     the core wakes the task when that task finishes, no event loop needed;
 *   - an asyncio future: a done callback (dobj._Waker) wakes the task and
 *     pumps the core;
 *   - None (asyncio.sleep(0)): the task is woken from the loop's next turn.
 */
#include "module.h"

static int Waker_traverse(WakerObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->rt);
	return 0;
}

static int Waker_clear(WakerObject *self)
{
	if (self->task) {
		dobj_task_unref(self->task);
		self->task = NULL;
	}
	Py_CLEAR(self->rt);
	return 0;
}

static void Waker_dealloc(WakerObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	Waker_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static PyObject *Waker_call(WakerObject *self, PyObject *args, PyObject *kw)
{
	(void)args;
	(void)kw;
	if (self->task) {
		dobj_task_wake(self->task);
		dobj_task_unref(self->task);
		self->task = NULL;
		if (self->rt)
			runtime_pump(self->rt);
	}
	Py_RETURN_NONE;
}

static PyType_Slot Waker_slots[] = {
	{ Py_tp_traverse, Waker_traverse },
	{ Py_tp_clear, Waker_clear },
	{ Py_tp_dealloc, Waker_dealloc },
	{ Py_tp_call, Waker_call },
	{ 0, NULL }
};

static PyType_Spec Waker_spec = {
	"dobj._Waker", sizeof(WakerObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
	Waker_slots
};

/* ------------------------------------------------------------- the driver */

/* What the coroutine of task t yielded decides how it is woken. */
static int wait_for_yielded(dobj_task *t, RuntimeObject *rt, PyObject *y)
{
	module_state *st = rt->st;
	PyObject *blocking;

	if (y == Py_None) {
		/* A bare yield (asyncio.sleep(0)) gives way to the event loop, as in
		 * asyncio: waking at once would spin inside the pump for ever when a
		 * handler polls for something only the loop can finish (an asyncio
		 * task, a socket).  Without a running loop it runs again at once. */
		PyObject *loop = PyObject_CallNoArgs(st->get_running_loop), *r;
		WakerObject *w;
		if (!loop) {
			PyErr_Clear();
			dobj_task_wake(t);
			return DOBJ_PENDING;
		}
		w = PyObject_GC_New(WakerObject, st->Waker_T);
		if (!w) {
			Py_DECREF(loop);
			return -1;
		}
		w->rt = (RuntimeObject *)Py_NewRef(rt);
		dobj_task_ref(t);
		w->task = t;
		PyObject_GC_Track(w);
		r = PyObject_CallMethodOneArg(loop, st->s_call_soon, (PyObject *)w);
		Py_DECREF(w);
		Py_DECREF(loop);
		if (!r)
			return -1;
		Py_DECREF(r);
		return DOBJ_PENDING;
	}
	if (Py_IS_TYPE(y, st->Call_T)) {
		CallObject *c = (CallObject *)y;
		if (call_is_done(c)) {
			dobj_task_wake(t);
		} else {
			/* The core wakes t when the call finishes (and knows who waits
			 * on whom: a block waiting on its own object's call fails). */
			int rc = dobj_task_wait(t, c->task);
			if (rc < 0) {
				raise_core_error(st, rc);
				return -1;
			}
		}
		return DOBJ_PENDING;
	}
	blocking = PyObject_GetAttr(y, st->s_blocking);
	if (blocking) {
		WakerObject *w;
		PyObject *r;
		Py_DECREF(blocking);
		if (PyObject_SetAttr(y, st->s_blocking, Py_False) < 0)
			return -1;
		w = PyObject_GC_New(WakerObject, st->Waker_T);
		if (!w)
			return -1;
		w->rt = (RuntimeObject *)Py_NewRef(rt);
		dobj_task_ref(t);
		w->task = t;
		PyObject_GC_Track(w);
		r = PyObject_CallMethodOneArg(y, st->s_add_done_callback, (PyObject *)w);
		Py_DECREF(w);
		if (!r)
			return -1;
		Py_DECREF(r);
		return DOBJ_PENDING;
	}
	PyErr_Clear();
	PyErr_Format(PyExc_RuntimeError,
		"a Durable Object handler awaited %.100s, which dobj cannot wait for "
		"(await coroutines, asyncio futures or dobj calls)", Py_TYPE(y)->tp_name);
	return -1;
}

/* Finish a task with the value its handler returned (a new reference). */
static void finish_task_with_value(dobj_task *t, RuntimeObject *rt, PyObject *v)
{
	module_state *st = rt->st;

	if (dobj_task_kind_of(t) == DOBJ_TASK_CALL && dobj_task_call_kind(t) == DOBJ_CALL_RPC) {
		/* The result is copied out (structured clone): the caller never
		 * shares an object with this one. */
		dobj_val *val = rpc_value_to_core(rt, v);
		Py_DECREF(v);
		if (!val) {
			fail_task_with_exception(t);
			return;
		}
		dobj_task_return_value(t, val, core_val_free);
		return;
	}

	if (dobj_task_kind_of(t) == DOBJ_TASK_CALL && dobj_task_call_kind(t) == DOBJ_CALL_FETCH &&
	    !PyObject_TypeCheck(v, (PyTypeObject *)st->Response)) {
		NamespaceObject *ns = dobj_ns_class_data(dobj_obj_ns(dobj_task_obj(t)));
		PyErr_Format(PyExc_TypeError, "%.100s.fetch() returned %.100s; it must return a dobj.Response",
			ns && ns->cls ? ((PyTypeObject *)ns->cls)->tp_name : "DurableObject",
			v == Py_None ? "None" : Py_TYPE(v)->tp_name);
		Py_DECREF(v);
		fail_task_with_exception(t);
		return;
	}
	dobj_task_return(t, v);
}

/* Advance the coroutine of t once. */
static int drive_coroutine(dobj_task *t, RuntimeObject *rt, PyObject *coro)
{
	PyObject *out = NULL;
	PySendResult r = PyIter_Send(coro, Py_None, &out);

	if (r == PYGEN_RETURN) {
		finish_task_with_value(t, rt, out);
		return DOBJ_OK;
	}
	if (r == PYGEN_ERROR) {
		/* A failed wait_until task is reported by the core's error hook
		 * (runtime.c), like a failed alarm handler. */
		fail_task_with_exception(t);
		return DOBJ_OK;
	}
	{
		int rc = wait_for_yielded(t, rt, out);
		Py_DECREF(out);
		if (rc < 0) {
			/* The handler awaited something the driver cannot wait for:
			 * its task fails with that error (the coroutine's finally
			 * blocks run when it is closed, as the task lets go of it). */
			fail_task_with_exception(t);
			return DOBJ_OK;
		}
		return rc;
	}
}

/* Make an awaitable's iterator (coroutines are their own). */
PyObject *awaitable_iterator(PyObject *v)
{
	if (PyCoro_CheckExact(v) || PyGen_CheckExact(v))
		return Py_NewRef(v);
	if (Py_TYPE(v)->tp_as_async && Py_TYPE(v)->tp_as_async->am_await)
		return Py_TYPE(v)->tp_as_async->am_await(v);
	return NULL;
}

/* Start a handler's result: a value finishes at once, an awaitable is driven. */
static int start_handler_result(dobj_task *t, RuntimeObject *rt, PyObject *r)
{
	PyObject *it;

	if (!r) {
		fail_task_with_exception(t);
		return DOBJ_OK;
	}
	it = awaitable_iterator(r);
	if (!it) {
		if (PyErr_Occurred()) {
			Py_DECREF(r);
			fail_task_with_exception(t);
			return DOBJ_OK;
		}
		finish_task_with_value(t, rt, r);
		return DOBJ_OK;
	}
	Py_DECREF(r);
	dobj_task_set_host(t, it);
	return drive_coroutine(t, rt, it);
}

static PyObject *alarm_info_new(dobj_task *t)
{
	double when = 0;
	int retry = 0;
	PyObject *types, *ns_cls, *kw, *info;

	dobj_task_alarm_info(t, &when, &retry);
	types = PyImport_ImportModule("types");
	if (!types)
		return NULL;
	ns_cls = PyObject_GetAttrString(types, "SimpleNamespace");
	Py_DECREF(types);
	if (!ns_cls)
		return NULL;
	/* The values are built into the keywords (none is left owned here). */
	kw = Py_BuildValue("{sdsisO}", "scheduled_time", when, "retry_count", retry,
		"is_retry", retry > 0 ? Py_True : Py_False);
	info = kw ? PyObject_VectorcallDict(ns_cls, NULL, 0, kw) : NULL;
	Py_XDECREF(kw);
	Py_DECREF(ns_cls);
	return info;
}

/* The step of every CALL task of a Python class. */
int python_class_step(dobj_task *t, void *data)
{
	NamespaceObject *ns = data;
	RuntimeObject *rt = ns->rt;
	PyObject *coro = dobj_task_host(t), *inst, *r = NULL, *arg;

	if (!rt) {
		/* The GC cleared the namespace before closing its runtime. */
		dobj_task_raise(t, DOBJ_ECLOSED, DOBJ_MSG_CLOSED, NULL);
		return DOBJ_OK;
	}
	if (coro)
		return drive_coroutine(t, rt, coro);
	inst = dobj_obj_instance(dobj_task_obj(t));
	if (!inst) {
		dobj_task_raise(t, DOBJ_ERROR, "the object has no instance", NULL);
		return DOBJ_OK;
	}
	switch (dobj_task_call_kind(t)) {
	case DOBJ_CALL_FETCH:
		r = PyObject_CallMethodOneArg(inst, rt->st->s_fetch, dobj_task_request(t));
		break;
	case DOBJ_CALL_ALARM:
		arg = alarm_info_new(t);
		if (arg) {
			r = PyObject_CallMethodOneArg(inst, rt->st->s_alarm, arg);
			Py_DECREF(arg);
		}
		break;
	case DOBJ_CALL_WS_MESSAGE:
	case DOBJ_CALL_WS_CLOSE:
	case DOBJ_CALL_WS_ERROR:
		r = websocket_dispatch(t, rt, inst);
		break;
	case DOBJ_CALL_RPC:
		r = rpc_invoke_method(t, rt, inst);
		if (!r && !PyErr_Occurred())
			return DOBJ_OK; /* refused (no such method): the task is finished */
		break;
	case DOBJ_CALL_HOST: /* dobj.testing.run_in_durable_object: fn(instance, ctx) */
		r = PyObject_CallFunctionObjArgs(dobj_task_request(t), inst,
			dobj_obj_ctx(dobj_task_obj(t)) ? (PyObject *)dobj_obj_ctx(dobj_task_obj(t)) : Py_None,
			NULL);
		break;
	default:
		dobj_task_raise(t, DOBJ_ENOHANDLER, "this call kind is not supported by Python classes",
			NULL);
		return DOBJ_OK;
	}
	return start_handler_result(t, rt, r);
}

/* The step of BLOCK and BACKGROUND tasks: host is the coroutine. */
int coroutine_step(dobj_task *t, void *data)
{
	return drive_coroutine(t, (RuntimeObject *)data, dobj_task_host(t));
}

/* Construct an instance: cls(ctx, env). */
int python_class_construct(dobj_obj *obj, void *data, void **instance, void **error)
{
	NamespaceObject *ns = data;
	RuntimeObject *rt = ns->rt;
	module_state *st = rt->st;
	ContextObject *ctx;
	const char *name;
	size_t len;
	PyObject *pyname = NULL, *inst;
	char msg[1024];

	ctx = PyObject_GC_New(ContextObject, st->Context_T);
	if (!ctx)
		goto fail;
	ctx->rt = (RuntimeObject *)Py_NewRef(rt);
	ctx->obj = obj;
	dobj_obj_ref(obj);
	ctx->dict = NULL;
	ctx->storage = NULL;
	name = dobj_obj_name(obj, &len);
	if (name && !(pyname = PyUnicode_DecodeUTF8(name, (Py_ssize_t)len, "surrogatepass"))) {
		ctx->id = NULL;
		PyObject_GC_Track(ctx);
		Py_DECREF(ctx);
		goto fail;
	}
	ctx->id = id_object_new(st, ns, dobj_obj_id(obj), pyname);
	Py_XDECREF(pyname);
	PyObject_GC_Track(ctx);
	if (!ctx->id) {
		Py_DECREF(ctx);
		goto fail;
	}
	dobj_obj_set_ctx(obj, Py_NewRef(ctx)); /* the core's reference keeps ctx alive below */
	inst = PyObject_CallFunctionObjArgs(ns->cls, (PyObject *)ctx, rt->env, NULL);
	Py_DECREF(ctx);
	if (!inst) {
		/* The core aborts the object with this error, unless the
		 * constructor aborted it already. */
		*error = error_box_shared(take_exception(msg, sizeof(msg)));
		return dobj_error_set(DOBJ_EUSER, "%s", msg);
	}
	*instance = inst;
	return DOBJ_OK;
fail:
	*error = error_box(take_exception(msg, sizeof(msg)));
	return dobj_error_set(DOBJ_EUSER, "%s", msg);
}

int driver_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);

	return module_add_type(m, &Waker_spec, &st->Waker_T);
}
