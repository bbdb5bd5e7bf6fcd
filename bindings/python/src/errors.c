/*
 * errors.c — dobj.Error and InvalidIdError, core errors raised in Python,
 * and the error values the binding hands to the core (an exception with the
 * traceback it had when captured).
 */
#include "module.h"

/* A core message as a str.  It may quote a name with lone surrogates (WTF-8,
 * as the binding passed it: they come back) or be cut inside a character at
 * the core's buffer size (U+FFFD): never a UnicodeDecodeError. */
PyObject *core_message(const char *msg)
{
	PyObject *s = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "surrogatepass");

	if (s || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
		return s;
	PyErr_Clear();
	return PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace");
}

/* Raise the core's last error as a Python exception. */
PyObject *raise_core_error(module_state *st, int code)
{
	const char *msg = dobj_error_last();
	PyObject *type = st->Error, *s;

	if (code == DOBJ_EINVALID || code == DOBJ_EFOREIGN)
		type = st->InvalidIdError;
	else if (code == DOBJ_ENOMEM)
		return PyErr_NoMemory();
	else if (code == DOBJ_ETYPE)
		type = st->InvalidInputError;
	if (!(s = core_message(msg[0] ? msg : "dobj error")))
		return NULL;
	PyErr_SetObject(type, s);
	Py_DECREF(s);
	return NULL;
}

/* Take the current Python exception as (message, exception object). */
PyObject *take_exception(char *msg, size_t cap)
{
	PyObject *type, *value, *tb, *s;

	PyErr_Fetch(&type, &value, &tb);
	PyErr_NormalizeException(&type, &value, &tb);
	if (tb && value)
		PyException_SetTraceback(value, tb);
	Py_XDECREF(type);
	Py_XDECREF(tb);
	if (!value) {
		snprintf(msg, cap, "unknown error");
		return NULL;
	}
	s = PyObject_Str(value);
	if (s) {
		const char *u = PyUnicode_AsUTF8(s);
		snprintf(msg, cap, "%s", u ? u : "error");
		Py_DECREF(s);
	}
	if (!s || PyErr_Occurred()) {
		PyErr_Clear();
		snprintf(msg, cap, "%s", Py_TYPE(value)->tp_name);
	}
	return value;
}

/*
 * The error value handed to the core: a tuple (exception, traceback at
 * capture).  One error can reach many callers (an abort fails every call in
 * progress and every later call on a broken stub); raising the same object
 * again would chain each caller's frames onto its traceback, which then grows
 * without bound.  Each delivery restores the captured traceback instead.
 * Steals `exc`; returns NULL (no error value) if exc is NULL.
 */
PyObject *error_box(PyObject *exc)
{
	PyObject *tb, *box;

	if (!exc)
		return NULL;
	tb = PyExceptionInstance_Check(exc) ? PyException_GetTraceback(exc) : NULL;
	box = PyTuple_Pack(2, exc, tb ? tb : Py_None);
	Py_XDECREF(tb);
	if (!box) {
		PyErr_Clear();
		return exc; /* unboxed: still an exception, only its traceback may grow */
	}
	Py_DECREF(exc);
	return box;
}

/*
 * An error value that the core hands to every call that meets an aborted
 * incarnation (ctx.abort, a failed block_concurrency_while, a failed
 * constructor), kept by each broken stub (dobj_stub_error):
 * (exception, traceback, None).  Each caller gets a copy (same type, args and
 * attributes), so that the stored exception never picks up the frames of
 * every caller it is raised in (its traceback would grow with each call).
 */
PyObject *error_box_shared(PyObject *exc)
{
	PyObject *box = error_box(exc), *shared;

	if (!box || !PyTuple_Check(box))
		return box;
	shared = PyTuple_Pack(3, PyTuple_GET_ITEM(box, 0), PyTuple_GET_ITEM(box, 1), Py_None);
	if (!shared) {
		PyErr_Clear();
		return box;
	}
	Py_DECREF(box);
	return shared;
}

/* A shallow copy of an exception (type, args, attributes), or the exception
 * itself if it cannot be copied.  New reference. */
PyObject *copy_exception(PyObject *exc)
{
	PyObject *copy_mod = PyImport_ImportModule("copy"), *copy = NULL;

	if (copy_mod) {
		copy = PyObject_CallMethod(copy_mod, "copy", "O", exc);
		Py_DECREF(copy_mod);
	}
	if (!copy || !PyExceptionInstance_Check(copy)) {
		/* Not copyable (e.g. required keyword-only arguments). */
		PyErr_Clear();
		Py_XDECREF(copy);
		return Py_NewRef(exc);
	}
	return copy;
}

/* The exception inside an error value (a new reference), its traceback reset
 * to the one it had when captured; a copy for shared values. */
PyObject *error_unbox(PyObject *err)
{
	PyObject *exc, *tb, *copy = NULL;

	if (!PyTuple_Check(err) || PyTuple_GET_SIZE(err) < 2)
		return Py_NewRef(err);
	exc = PyTuple_GET_ITEM(err, 0);
	tb = PyTuple_GET_ITEM(err, 1);
	if (!PyExceptionInstance_Check(exc))
		return Py_NewRef(exc);
	copy = PyTuple_GET_SIZE(err) == 3 ? copy_exception(exc) : Py_NewRef(exc);
	PyException_SetTraceback(copy, tb);
	return copy;
}

/* Fail a task with the current Python exception. */
void fail_task_with_exception(dobj_task *t)
{
	char msg[1024];
	PyObject *exc = take_exception(msg, sizeof(msg));
	PyObject *box = dobj_task_kind_of(t) == DOBJ_TASK_BLOCK ? error_box_shared(exc) : error_box(exc);

	/* A failed block aborts its object with this error (kept by the core). */
	dobj_task_raise(t, DOBJ_EUSER, msg, box);
}

int errors_setup_types(PyObject *m)
{
	module_state *st = PyModule_GetState(m);
	PyObject *bases;

	{
		/* `retryable`: False unless a call to another node of a cluster
		 * may or may not have run (call.c sets it per error). */
		PyObject *dict = Py_BuildValue("{sO}", "retryable", Py_False);
		if (!dict)
			return -1;
		st->Error = PyErr_NewExceptionWithDoc("dobj.Error", "Base of dobj's errors.", NULL, dict);
		Py_DECREF(dict);
	}
	if (!st->Error || PyModule_AddObjectRef(m, "Error", st->Error) < 0)
		return -1;
	bases = PyTuple_Pack(2, st->Error, PyExc_ValueError);
	if (!bases)
		return -1;
	st->InvalidIdError = PyErr_NewExceptionWithDoc("dobj.InvalidIdError",
		"A malformed ID string, or an ID of another namespace.", bases, NULL);
	Py_DECREF(bases);
	if (!st->InvalidIdError || PyModule_AddObjectRef(m, "InvalidIdError", st->InvalidIdError) < 0)
		return -1;
	/* workerd throws a TypeError; ValueError too, which dobj raised for these
	 * before (code catching it keeps working). */
	bases = PyTuple_Pack(3, st->Error, PyExc_TypeError, PyExc_ValueError);
	if (!bases)
		return -1;
	st->InvalidInputError = PyErr_NewExceptionWithDoc("dobj.InvalidInputError",
		"A value a Web API refuses where workerd throws a TypeError: a header name or "
		"value, an HTTP method, a relative URL, a body a GET request may not have.",
		bases, NULL);
	Py_DECREF(bases);
	if (!st->InvalidInputError ||
	    PyModule_AddObjectRef(m, "InvalidInputError", st->InvalidInputError) < 0)
		return -1;
	st->Aborted = PyErr_NewExceptionWithDoc("dobj.Aborted",
		"Raised by ctx.abort() in the aborted object's own code. A BaseException, so "
		"`except Exception` does not stop it: the abort cannot be caught. args[0] is "
		"the reason its callers get.", PyExc_BaseException, NULL);
	if (!st->Aborted || PyModule_AddObjectRef(m, "Aborted", st->Aborted) < 0)
		return -1;
	return 0;
}
