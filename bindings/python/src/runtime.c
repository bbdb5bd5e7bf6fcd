/*
 * runtime.c — dobj.Runtime: owns the core runtime, pumps it, has the running
 * asyncio loop watch its fd, and binds namespaces.
 */
#include "module.h"

void retain_python_value(void *data, void *v)
{
	(void)data;
	Py_INCREF((PyObject *)v);
}

/*
 * A coroutine the core lets go of for good is closed first: a ctx.wait_until
 * (or block_concurrency_while) coroutine whose task never started (the
 * object was reset, the runtime closed) would otherwise be freed unstarted,
 * and Python warns "coroutine ... was never awaited".  close() of an
 * unstarted coroutine runs none of its code; of a suspended one, what its
 * finalizer would run anyway.  One held elsewhere too is left to its holder.
 */
void release_python_value(void *data, void *v)
{
	PyObject *o = v;
	(void)data;
	if (PyCoro_CheckExact(o) && Py_REFCNT(o) == 1) {
		PyObject *exc_type, *exc_value, *exc_tb, *r;

		PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
		r = PyObject_CallMethod(o, "close", NULL);
		if (r)
			Py_DECREF(r);
		else
			PyErr_WriteUnraisable(o);
		PyErr_Restore(exc_type, exc_value, exc_tb);
	}
	Py_DECREF(o);
}

/* --------------------------------------------------------------- driving */

/*
 * The loop drives the core through its pollable fd (dobj.h, "driving a
 * runtime"): the running loop watches it with add_reader, and calls
 * dobj_rt_process when the core has work ready or a timer due.  Calls made
 * from Python pump at once (runtime_pump); what happens out of Python's
 * sight (alarms, eviction, a handler woken by a loop callback) reaches the
 * loop through the fd.  No timer is re-armed after a pump, nothing polls.
 * The core's notify/timer hooks are left unset: the fd carries both, and
 * asyncio watches an fd as cheaply as it runs a callback.
 */

/* Something happened: wake drain(), which waits for the runtime to move. */
static void runtime_progress(RuntimeObject *self)
{
	PyObject *f = self->progress, *r, *exc_type, *exc_value, *exc_tb;

	if (!f)
		return;
	self->progress = NULL;
	PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
	r = PyObject_CallMethod(f, "done", NULL);
	if (r && !PyObject_IsTrue(r)) {
		Py_DECREF(r);
		r = PyObject_CallMethod(f, "set_result", "O", Py_None);
	}
	Py_XDECREF(r);
	/* A future left by a drain() whose loop has closed cannot be set:
	 * nobody waits on it any more. */
	PyErr_Clear();
	Py_DECREF(f);
	PyErr_Restore(exc_type, exc_value, exc_tb);
}

void runtime_pump(RuntimeObject *self)
{
	if (!self->rt || dobj_rt_pumping(self->rt))
		return;
	dobj_rt_pump(self->rt);
	complete_deferred_futures(self->st);
	runtime_watch(self);
	runtime_progress(self);
}

/* Make sure the running loop (if any) watches the runtime's fd. */
void runtime_watch(RuntimeObject *self)
{
	module_state *st = self->st;
	PyObject *loop, *cb, *r;
	int fd;

	if (!self->rt || dobj_rt_closed(self->rt))
		return;
	loop = PyObject_CallNoArgs(st->get_running_loop);
	if (!loop) {
		PyErr_Clear(); /* no loop: the next pump or drain() runs what is due */
		return;
	}
	if (loop == self->reader_loop) {
		Py_DECREF(loop);
		return;
	}
	runtime_unwatch(self);
	fd = dobj_rt_fd(self->rt);
	if (fd < 0) {
		Py_DECREF(loop);
		return;
	}
	/* The loop holds the callback for as long as it watches; a weak
	 * reference lets a dropped runtime be collected meanwhile. */
	cb = PyWeakref_NewRef((PyObject *)self, NULL);
	if (!cb) {
		PyErr_Clear();
		Py_DECREF(loop);
		return;
	}
	r = PyObject_CallMethod(loop, "add_reader", "iOO", fd, st->fd_readable, cb);
	Py_DECREF(cb);
	if (!r) {
		PyErr_Clear();
		Py_DECREF(loop);
		return;
	}
	Py_DECREF(r);
	self->reader_loop = loop;
	self->reader_fd = fd;
}

/* Stop the loop watching (closing, or another loop runs the runtime now).
 * Keeps a pending exception; plain method names: this also runs while the
 * runtime is torn down. */
void runtime_unwatch(RuntimeObject *self)
{
	PyObject *exc_type, *exc_value, *exc_tb, *loop = self->reader_loop, *closed, *r;

	if (!loop)
		return;
	self->reader_loop = NULL;
	PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
	closed = PyObject_CallMethod(loop, "is_closed", NULL);
	if (closed && !PyObject_IsTrue(closed)) {
		r = PyObject_CallMethod(loop, "remove_reader", "i", self->reader_fd);
		Py_XDECREF(r);
	}
	Py_XDECREF(closed);
	PyErr_Clear();
	Py_DECREF(loop);
	PyErr_Restore(exc_type, exc_value, exc_tb);
}

/* The fd is readable: fire what is due, run what is ready. */
static PyObject *runtime_process(RuntimeObject *self)
{
	int rc;

	if (!self->rt || dobj_rt_closed(self->rt)) {
		runtime_unwatch(self);
		Py_RETURN_NONE;
	}
	rc = dobj_rt_process(self->rt);
	complete_deferred_futures(self->st);
	if (rc < 0)
		return raise_core_error(self->st, rc);
	runtime_progress(self);
	Py_RETURN_NONE;
}

/* Module function _fd_readable(weakref): the loop's reader callback. */
PyObject *runtime_fd_readable(PyObject *m, PyObject *wr)
{
	module_state *st = PyModule_GetState(m);
	PyObject *rt, *r;

	if (!PyWeakref_CheckRef(wr))
		Py_RETURN_NONE;
#if PY_VERSION_HEX >= 0x030D0000
	if (PyWeakref_GetRef(wr, &rt) < 0)
		return NULL;
#else
	rt = PyWeakref_GetObject(wr); /* borrowed (deprecated in 3.13) */
	rt = rt == Py_None ? NULL : Py_NewRef(rt);
#endif
	if (!rt || !PyObject_TypeCheck(rt, st->Runtime_T)) {
		Py_XDECREF(rt);
		Py_RETURN_NONE;
	}
	r = runtime_process((RuntimeObject *)rt);
	Py_DECREF(rt);
	return r;
}

/* ---------------------------------------------------------------- runtime */

static int visit_core_reference(void *v, void *arg)
{
	visitproc *pv = ((void **)arg)[0];
	void *varg = ((void **)arg)[1];
	return (*pv)((PyObject *)v, varg);
}

static int Runtime_traverse(RuntimeObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->env);
	Py_VISIT(self->namespaces);
	Py_VISIT(self->reader_loop);
	Py_VISIT(self->progress);
	if (self->rt) {
		void *pair[2] = { &visit, arg };
		int rc = dobj_rt_visit(self->rt, visit_core_reference, pair);
		if (rc)
			return rc;
	}
	return 0;
}

static int Runtime_clear(RuntimeObject *self)
{
	runtime_unwatch(self); /* before the core closes the fd */
	if (self->rt) {
		dobj_rt_clear(self->rt);
		complete_deferred_futures(self->st);
	}
	Py_CLEAR(self->env);
	Py_CLEAR(self->namespaces);
	Py_CLEAR(self->progress);
	return 0;
}

static void Runtime_dealloc(RuntimeObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject *module = self->module; /* released last: see RuntimeObject.module */
	PyObject_GC_UnTrack(self);
	if (self->weakreflist)
		PyObject_ClearWeakRefs((PyObject *)self);
	Runtime_clear(self);
	if (self->rt) {
		dobj_rt_free(self->rt);
		self->rt = NULL;
		complete_deferred_futures(self->st);
	}
	tp->tp_free(self);
	Py_DECREF(tp);
	Py_XDECREF(module);
}

/*
 * The core's error hook: a failure nobody awaits (a ctx.wait_until task, a
 * run of an alarm handler) goes to dobj._report_error(what, exc), which logs
 * it on the "dobj" logger, as asyncio logs a task's unretrieved exception.
 */
static void report_background_error(dobj_task *t, void *data)
{
	RuntimeObject *self = data;
	module_state *st = self->st;
	dobj_obj *obj = dobj_task_obj(t);
	PyObject *exc_type, *exc_value, *exc_tb, *exc = NULL, *what = NULL, *r;
	const char *msg;
	void *err;
	char hex[DOBJ_ID_HEX_LEN + 1];
	int retry = 0;

	PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
	dobj_task_result(t, NULL, &msg, &err);
	if (err) {
		exc = error_unbox(err);
	} else {
		PyObject *text = core_message(msg ? msg : "error");
		exc = text ? PyObject_CallOneArg(st->Error, text) : NULL;
		Py_XDECREF(text);
	}
	if (obj) {
		dobj_id_to_hex(dobj_obj_id(obj), hex);
		hex[DOBJ_ID_HEX_LEN] = '\0';
	}
	if (!obj)
		what = PyUnicode_FromString("ctx.wait_until() of the entry");
	else if (dobj_task_alarm_info(t, NULL, &retry) == DOBJ_OK)
		what = PyUnicode_FromFormat("alarm() of %s %s (run %d of %d)",
			dobj_ns_class_name(dobj_obj_ns(obj)), hex, retry + 1, DOBJ_ALARM_MAX_RETRIES + 1);
	else if (dobj_task_call_kind(t) >= DOBJ_CALL_WS_MESSAGE)
		what = PyUnicode_FromFormat("%s() of %s %s",
			dobj_task_call_kind(t) == DOBJ_CALL_WS_MESSAGE ? "web_socket_message"
			: dobj_task_call_kind(t) == DOBJ_CALL_WS_CLOSE ? "web_socket_close"
			: "web_socket_error", dobj_ns_class_name(dobj_obj_ns(obj)), hex);
	else
		what = PyUnicode_FromFormat("ctx.wait_until() of %s %s",
			dobj_ns_class_name(dobj_obj_ns(obj)), hex);
	if (exc && what && st->report_error) {
		r = PyObject_CallFunctionObjArgs(st->report_error, what, exc, NULL);
		if (!r)
			PyErr_WriteUnraisable(st->report_error);
		Py_XDECREF(r);
	} else if (PyErr_Occurred()) {
		PyErr_WriteUnraisable(NULL);
	}
	Py_XDECREF(exc);
	Py_XDECREF(what);
	PyErr_Restore(exc_type, exc_value, exc_tb);
}

/* The node's log lines (dobj_rt_cluster_set_log: a lost lease...) go to the
 * "dobj" logger as warnings.  Called from the runtime's loop, GIL held. */
static void log_cluster_event(void *data, long long node_id, const char *message)
{
	PyObject *exc_type, *exc_value, *exc_tb, *logging, *logger = NULL, *r = NULL;

	(void)data;
	(void)node_id;
	PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
	logging = PyImport_ImportModule("logging");
	if (logging)
		logger = PyObject_CallMethod(logging, "getLogger", "s", "dobj");
	if (logger)
		r = PyObject_CallMethod(logger, "warning", "s", message);
	if (!r)
		PyErr_WriteUnraisable(logger);
	Py_XDECREF(r);
	Py_XDECREF(logger);
	Py_XDECREF(logging);
	PyErr_Restore(exc_type, exc_value, exc_tb);
}

static PyObject *Runtime_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "env", "id_seed", "storage", "durability", "idle_timeout",
		"virtual_time", "cluster", "node_addr", "cluster_ttl", "cluster_grace", "cluster_timeout",
		"cluster_call_timeout", "cluster_snapshot_bytes", "cluster_snapshot_part_bytes", NULL };
	PyObject *module = module_of_type(type);
	module_state *st = module ? PyModule_GetState(module) : NULL;
	PyObject *env = Py_None, *seed = Py_None, *storage = Py_None, *durability = Py_None,
		*idle = Py_None, *cluster = Py_None, *node_addr = Py_None, *ttl = Py_None,
		*grace = Py_None, *timeout = Py_None, *call_timeout = Py_None, *snap = Py_None,
		*part = Py_None;
	int virtual_time = 0;
	RuntimeObject *self;
	dobj_rt_opts opts = DOBJ_RT_OPTS_INIT;
	PyObject *storage_bytes = NULL, *url_tmp = NULL, *addr_tmp = NULL;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$OOOOpOOOOOOOO:Runtime", kwlist, &env,
		    &seed, &storage, &durability, &idle, &virtual_time, &cluster, &node_addr, &ttl,
		    &grace, &timeout, &call_timeout, &snap, &part))
		return NULL;
	if ((cluster != Py_None && !PyUnicode_Check(cluster)) ||
	    (node_addr != Py_None && !PyUnicode_Check(node_addr))) {
		PyErr_SetString(PyExc_TypeError, "cluster and node_addr must be str");
		return NULL;
	}
	if (!st)
		return NULL;
	if (!st->Env) {
		PyErr_SetString(PyExc_RuntimeError, "dobj is not initialised (import dobj, not dobj._dobj)");
		return NULL;
	}
	if (env != Py_None && !PyDict_Check(env)) {
		PyErr_Format(PyExc_TypeError, "env must be a dict, got %.100s", Py_TYPE(env)->tp_name);
		return NULL;
	}
	self = (RuntimeObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	self->module = Py_NewRef(module);
	self->st = st;
	self->namespaces = PyDict_New();
	if (!self->namespaces)
		goto fail;
	self->env = PyObject_CallFunctionObjArgs(st->Env, env, self->namespaces, NULL);
	if (!self->env)
		goto fail;
	if (seed != Py_None) {
		self->seed = PyLong_AsUnsignedLongLongMask(seed);
		if (PyErr_Occurred())
			goto fail;
		self->has_seed = 1;
	}
	opts.host.retain = retain_python_value;
	opts.host.release = release_python_value;
	opts.virtual_time = virtual_time;
	self->virtual_time = virtual_time;
	if (storage != Py_None) {
		if (!dobjpy_fs_path(storage, &storage_bytes))
			goto fail;
		opts.storage_dir = PyBytes_AS_STRING(storage_bytes);
		opts.storage_dir_len = (size_t)PyBytes_GET_SIZE(storage_bytes);
	}
	if (durability != Py_None) {
		Py_ssize_t n = 0;
		const char *d = PyUnicode_Check(durability) ? PyUnicode_AsUTF8AndSize(durability, &n) : NULL;

		if (!d)
			PyErr_Clear(); /* not a str, or a lone surrogate: refused below */
		if (dobj_rt_opts_durability(&opts, d, (size_t)n) < 0) {
			PyErr_SetString(PyExc_ValueError, dobj_error_last());
			goto fail;
		}
	}
	if (idle != Py_None) {
		double s = PyFloat_AsDouble(idle);
		if (PyErr_Occurred())
			goto fail;
		/* The core's one meaning: seconds > 0, math.inf = never; 0 is refused. */
		if (dobj_rt_opts_idle_timeout(&opts, s) < 0) {
			PyErr_SetString(PyExc_ValueError, dobj_error_last());
			goto fail;
		}
	}
	rc = dobj_rt_new(&self->rt, &opts);
	Py_XDECREF(storage_bytes);
	storage_bytes = NULL;
	if (rc < 0) {
		raise_core_error(st, rc);
		goto fail;
	}
	if (cluster != Py_None) {
		/* Cluster mode (dobj/cluster.h): join before anything is bound. */
		dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
		Py_ssize_t n = 0, an = 0;

		co.url = dobjpy_str_arg(cluster, "cluster", &n, &url_tmp);
		co.url_len = (size_t)n;
		if (co.url && node_addr != Py_None) {
			co.node_addr = dobjpy_str_arg(node_addr, "node_addr", &an, &addr_tmp);
			co.node_addr_len = (size_t)an;
		}
		if (!co.url || (node_addr != Py_None && !co.node_addr))
			goto fail;
		/* Seconds; the core's rule (dobj_cluster_opts_seconds). */
		if ((rc = cluster_times((PyObject *const[]){ ttl, grace, timeout, call_timeout },
			&co)) != 0) {
			if (rc < 0)
				raise_core_error(st, rc);
			goto fail;
		}
		/* Bytes; the core's rule (dobj_cluster_opts_bytes). */
		if ((rc = cluster_bytes(snap, DOBJ_CLUSTER_SNAPSHOT_EVERY, "cluster_snapshot_bytes",
			&co)) != 0 ||
		    (rc = cluster_bytes(part, DOBJ_CLUSTER_SNAPSHOT_PART, "cluster_snapshot_part_bytes",
			&co)) != 0) {
			if (rc < 0)
				raise_core_error(st, rc);
			goto fail;
		}
		if ((rc = dobj_rt_cluster(self->rt, &co)) < 0) {
			raise_core_error(st, rc);
			goto fail;
		}
		route_codec_install(self);
		dobj_rt_cluster_set_log(self->rt, log_cluster_event, NULL);
		/* The lease renewal is a timer of the runtime's own: the loop
		 * must watch a node before anything is bound to it. */
		runtime_watch(self);
	}
	dobj_rt_set_error_hook(self->rt, report_background_error, self);
	Py_XDECREF(url_tmp);
	Py_XDECREF(addr_tmp);
	return (PyObject *)self;
fail:
	Py_XDECREF(storage_bytes);
	Py_XDECREF(url_tmp);
	Py_XDECREF(addr_tmp);
	Py_DECREF(self);
	return NULL;
}

/* Everything is set up by __new__; a subclass's __init__ may still call
 * super().__init__(*args, **kwargs) with the same arguments. */
static int Runtime_init(PyObject *self, PyObject *args, PyObject *kw)
{
	(void)self;
	(void)args;
	(void)kw;
	return 0;
}

/*
 * Bind a namespace: `cls` is the Python class (None for a native class) and
 * `klass` the core class (for Python classes, completed here).
 */
/* A binding's name and keys are names: lone surrogates go as WTF-8
 * (dobjpy_str_utf8, *tmp owns those bytes) and the core judges them, as it
 * does a Lua string's bytes. */
static int optional_key(PyObject *o, const char *what, const char **s, Py_ssize_t *len,
	PyObject **tmp)
{
	*tmp = NULL;
	if (o == Py_None)
		return 0;
	if (!PyUnicode_Check(o)) {
		PyErr_Format(PyExc_TypeError, "%s must be a str", what);
		return -1;
	}
	*s = dobjpy_str_utf8(o, len, tmp);
	return *s ? 0 : -1;
}

static PyObject *runtime_bind_namespace(RuntimeObject *self, PyObject *binding, PyObject *unique_key,
	PyObject *id_key, PyObject *cls, dobj_class *klass)
{
	module_state *st = self->st;
	NamespaceObject *ns;
	const char *key = NULL, *idkey = NULL, *bname = NULL;
	Py_ssize_t keylen = 0, idkey_len = 0, bname_len = 0;
	PyObject *tmps[3] = { NULL };
	int rc;

	if (!self->rt || dobj_rt_closed(self->rt)) {
		PyErr_SetString(st->Error, DOBJ_MSG_CLOSED);
		return NULL;
	}
	if (optional_key(unique_key, "unique_key", &key, &keylen, &tmps[0]) < 0 ||
	    optional_key(id_key, "id_key", &idkey, &idkey_len, &tmps[1]) < 0 ||
	    optional_key(binding, "the binding name", &bname, &bname_len, &tmps[2]) < 0)
		goto fail;
	if (PyDict_GetItemWithError(self->namespaces, binding)) {
		PyErr_Format(PyExc_ValueError, "a namespace is already bound as %U", binding);
		goto fail;
	}
	if (!(ns = PyObject_GC_New(NamespaceObject, st->Namespace_T)))
		goto fail;
	ns->weakreflist = NULL;
	ns->rt = (RuntimeObject *)Py_NewRef(self);
	ns->cls = Py_NewRef(cls);
	ns->binding = Py_NewRef(binding);
	ns->unique_key = Py_NewRef(unique_key == Py_None ? binding : unique_key);
	ns->ns = NULL;
	ns->has_fetch = (klass->flags & DOBJ_CLASS_FETCH) != 0;
	PyObject_GC_Track(ns);
	if (cls != Py_None) {
		PyObject *attr;
		attr = PyObject_GetAttr(cls, st->s_fetch);
		ns->has_fetch = attr != NULL;
		Py_XDECREF(attr);
		PyErr_Clear();
		klass->name = ((PyTypeObject *)cls)->tp_name;
		klass->flags = (ns->has_fetch ? DOBJ_CLASS_FETCH : 0);
		attr = PyObject_GetAttr(cls, st->s_alarm);
		if (attr)
			klass->flags |= DOBJ_CLASS_ALARM;
		Py_XDECREF(attr);
		PyErr_Clear();
		klass->flags |= websocket_class_flags(cls);
		klass->data = ns;
		klass->construct = python_class_construct;
		klass->step = python_class_step;
	}
	rc = dobj_ns_new_with_id_key(&ns->ns, self->rt, bname, (size_t)bname_len, key, (size_t)keylen,
		idkey, (size_t)idkey_len, klass);
	Py_XDECREF(tmps[0]);
	Py_XDECREF(tmps[1]);
	Py_XDECREF(tmps[2]);
	if (rc < 0) {
		Py_DECREF(ns);
		return raise_core_error(st, rc);
	}
	if (self->has_seed)
		dobj_idkey_seed(dobj_ns_idkey(ns->ns), self->seed ^ (unsigned long long)dobj_rt_ns_count(self->rt));
	if (PyDict_SetItem(self->namespaces, binding, (PyObject *)ns) < 0) {
		Py_DECREF(ns);
		return NULL;
	}
	runtime_watch(self); /* alarms stored in a storage directory */
	return (PyObject *)ns;
fail:
	Py_XDECREF(tmps[0]);
	Py_XDECREF(tmps[1]);
	Py_XDECREF(tmps[2]);
	return NULL;
}

static PyObject *Runtime_bind(RuntimeObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "binding", "cls", "unique_key", "id_key", NULL };
	PyObject *binding, *cls, *unique_key = Py_None, *id_key = Py_None;
	dobj_class klass = { 0 };

	if (!PyArg_ParseTupleAndKeywords(args, kw, "UO|O$O:bind", kwlist, &binding, &cls, &unique_key,
			&id_key))
		return NULL;
	if (!PyType_Check(cls)) {
		PyErr_Format(PyExc_TypeError, "bind() needs a class, got %.100s", Py_TYPE(cls)->tp_name);
		return NULL;
	}
	return runtime_bind_namespace(self, binding, unique_key, id_key, cls, &klass);
}

/* bind_native(binding, path, class_name, unique_key=None): a class written
 * in C, loaded from a shared library (core/include/dobj/native.h). */
static PyObject *Runtime_bind_native(RuntimeObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "binding", "path", "class_name", "unique_key", NULL };
	PyObject *binding, *path, *unique_key = Py_None, *path_bytes = NULL, *r, *name_o, *tmp;
	const char *class_name;
	Py_ssize_t n;
	dobj_native_class *nc;
	dobj_class klass;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "UO&O|O:bind_native", kwlist, &binding,
		    dobjpy_fs_path, &path_bytes, &name_o, &unique_key))
		return NULL;
	/* The symbol's name: a lone surrogate goes as WTF-8 (the core finds
	 * no such class); a NUL would cut it short. */
	if (!(class_name = dobjpy_str_arg(name_o, "class_name", &n, &tmp))) {
		Py_DECREF(path_bytes);
		return NULL;
	}
	if ((size_t)n != strlen(class_name)) {
		Py_XDECREF(tmp);
		Py_DECREF(path_bytes);
		PyErr_SetString(PyExc_ValueError, "embedded null character");
		return NULL;
	}
	path = path_bytes;
	rc = dobj_native_load(&nc, PyBytes_AS_STRING(path), class_name);
	Py_XDECREF(tmp);
	Py_DECREF(path_bytes);
	if (rc < 0)
		return raise_core_error(self->st, rc);
	dobj_native_class_of(nc, &klass);
	r = runtime_bind_namespace(self, binding, unique_key, Py_None, Py_None, &klass);
	return r;
}

static PyObject *Runtime_advance(RuntimeObject *self, PyObject *seconds)
{
	double s = PyFloat_AsDouble(seconds);
	int rc;

	if (s == -1 && PyErr_Occurred())
		return NULL;
	if (!self->rt || dobj_rt_closed(self->rt)) {
		PyErr_SetString(self->st->Error, DOBJ_MSG_CLOSED);
		return NULL;
	}
	rc = dobj_rt_advance(self->rt, s * 1000.0);
	complete_deferred_futures(self->st);
	if (rc < 0)
		return raise_core_error(self->st, rc);
	runtime_watch(self);
	runtime_progress(self);
	Py_RETURN_NONE;
}

static PyObject *Runtime_close(RuntimeObject *self, PyObject *unused)
{
	int rc;

	(void)unused;
	/* Closing completes the callers' loop futures: only on the loop's
	 * thread (a collector may still free the runtime anywhere). */
	if (self->rt && (rc = dobj_rt_check_thread(self->rt)) < 0)
		return raise_core_error(self->st, rc);
	runtime_unwatch(self); /* before the core closes the fd */
	if (self->rt) {
		dobj_rt_clear(self->rt);
		complete_deferred_futures(self->st);
	}
	runtime_progress(self);
	Py_RETURN_NONE;
}

static PyObject *Runtime_pending(RuntimeObject *self, void *c)
{
	(void)c;
	return PyLong_FromSize_t(self->rt ? dobj_rt_pending(self->rt) : 0);
}

static PyObject *Runtime_get_env(RuntimeObject *self, void *c)
{
	(void)c;
	return Py_NewRef(self->env ? self->env : Py_None);
}

static PyObject *Runtime_get_namespaces(RuntimeObject *self, void *c)
{
	(void)c;
	return PyDictProxy_New(self->namespaces);
}

static PyObject *Runtime_live(RuntimeObject *self, PyObject *binding)
{
	NamespaceObject *ns = (NamespaceObject *)PyDict_GetItemWithError(self->namespaces, binding);
	if (!ns) {
		if (!PyErr_Occurred())
			PyErr_SetObject(PyExc_KeyError, binding);
		return NULL;
	}
	return PyLong_FromSize_t(dobj_ns_live(ns->ns));
}

static PyObject *Runtime_now(RuntimeObject *self, PyObject *unused)
{
	(void)unused;
	if (!self->rt) {
		PyErr_SetString(self->st->Error, DOBJ_MSG_CLOSED);
		return NULL;
	}
	return PyFloat_FromDouble(dobj_rt_wall_ms(self->rt));
}

/* Run what is ready and what is due. */
static PyObject *Runtime_pump(RuntimeObject *self, PyObject *unused)
{
	(void)unused;
	if (self->rt && !dobj_rt_closed(self->rt))
		runtime_pump(self);
	Py_RETURN_NONE;
}

static PyObject *Runtime_fileno(RuntimeObject *self, PyObject *unused)
{
	int fd;

	(void)unused;
	if (!self->rt || dobj_rt_closed(self->rt)) {
		PyErr_SetString(self->st->Error, DOBJ_MSG_CLOSED);
		return NULL;
	}
	fd = dobj_rt_fd(self->rt);
	if (fd < 0)
		return raise_core_error(self->st, fd);
	return PyLong_FromLong(fd);
}

static PyObject *Runtime_process(RuntimeObject *self, PyObject *unused)
{
	(void)unused;
	return runtime_process(self);
}

/* drain()'s wait: a loop future completed by the next pump or process. */
static PyObject *Runtime_progress(RuntimeObject *self, PyObject *unused)
{
	PyObject *loop;

	(void)unused;
	loop = PyObject_CallNoArgs(self->st->get_running_loop);
	if (!loop)
		return NULL;
	if (self->progress) {
		/* One left by a drain() of an earlier loop (asyncio.run) goes. */
		PyObject *its = PyObject_CallMethod(self->progress, "get_loop", NULL);
		if (!its) {
			Py_DECREF(loop);
			return NULL;
		}
		if (its != loop)
			Py_CLEAR(self->progress);
		Py_DECREF(its);
	}
	if (!self->progress) {
		self->progress = PyObject_CallMethodNoArgs(loop, self->st->s_create_future);
		if (!self->progress) {
			Py_DECREF(loop);
			return NULL;
		}
	}
	Py_DECREF(loop);
	runtime_watch(self);
	return Py_NewRef(self->progress);
}

static PyObject *Runtime_tasks(RuntimeObject *self, void *c)
{
	(void)c;
	return PyLong_FromSize_t(self->rt ? dobj_rt_tasks(self->rt) : 0);
}

static PyObject *Runtime_next_timer(RuntimeObject *self, PyObject *unused)
{
	double next;

	(void)unused;
	if (!self->rt || dobj_rt_closed(self->rt) || (next = dobj_rt_next_timer_ms(self->rt)) < 0)
		Py_RETURN_NONE;
	return PyFloat_FromDouble(next / 1000.0);
}

static PyObject *Runtime_drain(RuntimeObject *self, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = { "timeout", NULL };
	PyObject *timeout = Py_None;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:drain", kwlist, &timeout))
		return NULL;
	if (self->rt && (rc = dobj_rt_check_thread(self->rt)) < 0)
		return raise_core_error(self->st, rc);
	/* drain() waits until no call is unfinished: awaited by a handler it
	 * would wait for itself for ever (the core refuses dobj_rt_run there). */
	if (self->rt && dobj_rt_current(self->rt)) {
		PyErr_SetString(self->st->Error, "drain() cannot be awaited from inside a handler of "
			"its runtime: it waits for every call to finish, this one included");
		return NULL;
	}
	if (!self->st->drain) {
		PyErr_SetString(PyExc_RuntimeError, "dobj is not initialised (import dobj)");
		return NULL;
	}
	return PyObject_CallFunctionObjArgs(self->st->drain, (PyObject *)self, timeout, NULL);
}

static PyObject *Runtime_open_storages(RuntimeObject *self, PyObject *binding)
{
	NamespaceObject *ns = (NamespaceObject *)PyDict_GetItemWithError(self->namespaces, binding);
	if (!ns) {
		if (!PyErr_Occurred())
			PyErr_SetObject(PyExc_KeyError, binding);
		return NULL;
	}
	return PyLong_FromSize_t(dobj_ns_open_storages(ns->ns));
}

static PyObject *Runtime_get_virtual(RuntimeObject *self, void *c)
{
	(void)c;
	return PyBool_FromLong(self->virtual_time);
}

/*
 * _wait_until(awaitable): the entry's ctx.wait_until (project.py): core
 * background work without an object (dobj/background.h), driven like an
 * object's; its failure reaches report_background_error.
 */
static PyObject *Runtime_wait_until(RuntimeObject *self, PyObject *awaitable)
{
	PyObject *it;
	int rc;

	if (!self->rt || dobj_rt_closed(self->rt)) {
		PyErr_SetString(self->st->Error, DOBJ_MSG_CLOSED);
		return NULL;
	}
	it = awaitable_iterator(awaitable);
	if (!it) {
		if (!PyErr_Occurred())
			PyErr_Format(PyExc_TypeError, "wait_until() needs an awaitable, got %.100s",
				Py_TYPE(awaitable)->tp_name);
		return NULL;
	}
	rc = dobj_rt_background(NULL, self->rt, coroutine_step, self, it);
	if (rc < 0)
		return raise_core_error(self->st, rc); /* the core released it */
	if (!dobj_rt_pumping(self->rt))
		runtime_pump(self);
	Py_RETURN_NONE;
}

/* _background_count(): unfinished background tasks (drain_background). */
static PyObject *Runtime_background_count(RuntimeObject *self, PyObject *unused)
{
	(void)unused;
	return PyLong_FromSize_t(self->rt ? dobj_rt_background_count(self->rt) : 0);
}

static PyMethodDef Runtime_methods[] = {
	{ "_wait_until", (PyCFunction)Runtime_wait_until, METH_O, NULL },
	{ "_background_count", (PyCFunction)Runtime_background_count, METH_NOARGS, NULL },
	{ "now", (PyCFunction)Runtime_now, METH_NOARGS,
		"The wall clock alarms use, in ms since the epoch (virtual time included)." },
	{ "drain", (PyCFunction)(void (*)(void))Runtime_drain, METH_VARARGS | METH_KEYWORDS,
		"await drain(timeout=None): run until no call is unfinished and no alarm is pending." },
	{ "open_storages", (PyCFunction)Runtime_open_storages, METH_O,
		"Number of databases open in the namespace bound as `binding`." },
	{ "_pump", (PyCFunction)Runtime_pump, METH_NOARGS, NULL },
	{ "_next_timer", (PyCFunction)Runtime_next_timer, METH_NOARGS, NULL },
	{ "_progress", (PyCFunction)Runtime_progress, METH_NOARGS, NULL },
	{ "fileno", (PyCFunction)Runtime_fileno, METH_NOARGS,
		"The runtime's pollable fd (Linux): readable when work is ready or a timer is due; "
		"then call process().  For loops other than asyncio (which is wired already)." },
	{ "process", (PyCFunction)Runtime_process, METH_NOARGS,
		"Fire the timers that are due and run what is ready (what a loop calls when "
		"fileno() is readable); never waits." },
	{ "bind", (PyCFunction)(void (*)(void))Runtime_bind, METH_VARARGS | METH_KEYWORDS,
		"bind(binding, cls, unique_key=None, *, id_key=None) -> Namespace" },
	{ "bind_native", (PyCFunction)(void (*)(void))Runtime_bind_native, METH_VARARGS | METH_KEYWORDS,
		"bind_native(binding, path, class_name, unique_key=None) -> Namespace of a C class" },
	{ "close", (PyCFunction)Runtime_close, METH_NOARGS,
		"Reset every object; unfinished calls fail with 'the runtime is closed'." },
	{ "advance", (PyCFunction)Runtime_advance, METH_O,
		"Virtual time only: move the clock by `seconds` and run what falls due." },
	{ "live_objects", (PyCFunction)Runtime_live, METH_O,
		"Number of live instances in the namespace bound as `binding`." },
	{ NULL }
};

/* The node id in the cluster (cluster mode), else None. */
static PyObject *Runtime_get_node_id(RuntimeObject *self, void *c)
{
	long long id = self->rt ? dobj_rt_cluster_node(self->rt) : 0;

	(void)c;
	if (!id)
		Py_RETURN_NONE;
	return PyLong_FromLongLong(id);
}

/* The address other nodes reach this one at (cluster mode), else None. */
static PyObject *Runtime_get_node_addr(RuntimeObject *self, void *c)
{
	const char *a = self->rt ? dobj_rt_cluster_addr(self->rt) : NULL;

	(void)c;
	if (!a)
		Py_RETURN_NONE;
	return PyUnicode_FromString(a);
}

static PyGetSetDef Runtime_getset[] = {
	{ "node_id", (getter)Runtime_get_node_id, NULL,
		"This runtime's node id in its cluster (None outside cluster mode).", NULL },
	{ "node_addr", (getter)Runtime_get_node_addr, NULL,
		"The address this node listens on for calls from other nodes (the port the system "
		"chose for port 0), or None when it is not a reachable node.", NULL },
	{ "env", (getter)Runtime_get_env, NULL, "Plain values and every namespace, by name.", NULL },
	{ "namespaces", (getter)Runtime_get_namespaces, NULL, "Bound namespaces by binding.", NULL },
	{ "pending", (getter)Runtime_pending, NULL, "Unfinished tasks plus pending timers.", NULL },
	{ "_tasks", (getter)Runtime_tasks, NULL, "Unfinished tasks (timers not included).", NULL },
	{ "virtual_time", (getter)Runtime_get_virtual, NULL, "Was it made with virtual_time=True?", NULL },
	{ NULL }
};

static PyMemberDef Runtime_members[] = {
	{ "__weaklistoffset__", T_PYSSIZET, offsetof(RuntimeObject, weakreflist), READONLY, NULL },
	{ NULL }
};

static PyType_Slot Runtime_slots[] = {
	{ Py_tp_doc, "Runtime(env=None, *, id_seed=None, storage=None, durability=None, "
		"idle_timeout=None, virtual_time=False): namespaces, objects and their calls." },
	{ Py_tp_new, Runtime_new },
	{ Py_tp_init, Runtime_init },
	{ Py_tp_traverse, Runtime_traverse },
	{ Py_tp_clear, Runtime_clear },
	{ Py_tp_dealloc, Runtime_dealloc },
	{ Py_tp_methods, Runtime_methods },
	{ Py_tp_getset, Runtime_getset },
	{ Py_tp_members, Runtime_members },
	{ 0, NULL }
};

static PyType_Spec Runtime_spec = {
	"dobj.Runtime", sizeof(RuntimeObject), 0,
	Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
	Runtime_slots
};

int runtime_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);

	return module_add_type(m, &Runtime_spec, &st->Runtime_T);
}
