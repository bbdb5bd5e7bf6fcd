/*
 * storage.h — ctx.storage for the Python binding: key-value, transactions,
 * SQL and alarms over the core's storage (dobj/storage.h).
 *
 * The types live in the _dobj module; module.c embeds a dobjpy_storage_state
 * in its module state and makes ctx.storage with dobjpy_storage_new.
 */
#ifndef DOBJPY_STORAGE_H
#define DOBJPY_STORAGE_H

#include "values.h"

typedef struct dobjpy_storage_state {
	PyTypeObject *Storage_T, *Txn_T, *Sql_T, *Cursor_T, *Done_T;
	PyObject *error;          /* dobj.Error (a reference) */
	PyObject *transaction;    /* dobj._transaction(storage, ctx, fn), set by _setup_storage */
	dobjpy_values *values;    /* the module's value mapping */
	/* Called after an alarm changed outside a pump, so that the host loop's
	 * timer is re-armed (ctx is the storage's context). */
	void (*alarm_changed)(PyObject *ctx);
} dobjpy_storage_state;

/* Make the types and add them to `module`.  -1 with an exception. */
int dobjpy_storage_init(PyObject *module, dobjpy_storage_state *s, PyObject *error,
	dobjpy_values *values);
int dobjpy_storage_traverse(dobjpy_storage_state *s, visitproc visit, void *arg);
void dobjpy_storage_clear(dobjpy_storage_state *s);

/*
 * The storage of the object behind `ctx` (the incarnation `obj`): a new
 * reference.  It keeps ctx alive and takes its own reference on obj; every
 * call checks that the incarnation still lives (eviction and abort end it).
 */
PyObject *dobjpy_storage_new(dobjpy_storage_state *s, PyObject *ctx, dobj_obj *obj);

#endif
