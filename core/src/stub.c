/*
 * Stubs: a binding's handle on one object ID of a namespace, bound to the
 * live incarnation on its first call (and again after an eviction), broken
 * for good by an abort (its calls then fail with the abort's error), and
 * the calls made through one (dobj_stub_call).  The objects, tasks and the
 * scheduler that runs the calls are in rt.c.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int dobj_stub_new(dobj_stub **out, dobj_ns *ns, const dobj_id *id, const char *name, size_t name_len)
{
	dobj_stub *s;

	*out = NULL;
	if (name && dobj__name_check(name, name_len) < 0)
		return DOBJ_EARG;
	s = calloc(1, sizeof(*s));
	if (!s)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	s->ns = ns;
	s->id = *id;
	if (name) {
		s->name = dobj__strndup(name, name_len);
		if (!s->name) {
			free(s);
			return DOBJ_ENOMEM;
		}
		s->name_len = name_len;
	}
	ns->rt->refs++;
	*out = s;
	return DOBJ_OK;
}

/* Bind a stub to an incarnation (taking over a reference to it), or unbind
 * it (dropping that reference and a broken stub's error). */
static void stub_bind(dobj_stub *s, dobj_obj *obj)
{
	s->obj = obj;
	s->oprev = NULL;
	s->onext = obj->stubs;
	if (obj->stubs)
		obj->stubs->oprev = s;
	obj->stubs = s;
}

static void stub_unbind(dobj_stub *s)
{
	dobj_obj *obj = s->obj;

	if (!obj)
		return;
	if (s->oprev)
		s->oprev->onext = s->onext;
	else
		obj->stubs = s->onext;
	if (s->onext)
		s->onext->oprev = s->oprev;
	s->obj = NULL;
	s->oprev = s->onext = NULL;
	dobj__trash(s->ns->rt, s->error);
	s->error = NULL;
	dobj__obj_unref(obj);
}

void dobj_stub_free(dobj_stub *s)
{
	dobj_rt *rt;

	if (!s)
		return;
	rt = s->ns->rt;
	stub_unbind(s);
	free(s->name);
	free(s);
	dobj__rt_flush(rt);
	dobj__rt_unref(rt);
}

const dobj_id *dobj_stub_id(const dobj_stub *s) { return &s->id; }
void *dobj_stub_error(const dobj_stub *s) { return s->error; }

void dobj_stub_drop_error(dobj_stub *s)
{
	dobj_rt *rt = s->ns->rt;

	dobj__trash(rt, s->error);
	s->error = NULL;
	dobj__rt_flush(rt);
}
dobj_ns *dobj_stub_ns(const dobj_stub *s) { return s->ns; }

const char *dobj_stub_name(const dobj_stub *s, size_t *len)
{
	if (len)
		*len = s->name ? s->name_len : 0;
	return s->name;
}

int dobj_stub_call(dobj_task **out, dobj_stub *stub, dobj_call_kind kind, const char *method,
	const char *url, size_t url_len, void *request, dobj_done_fn done, void *done_data)
{
	return dobj_stub_call_ex(out, stub, kind, method, url, url_len, request, NULL, done, done_data);
}

int dobj_stub_call_ex(dobj_task **out, dobj_stub *stub, dobj_call_kind kind, const char *method,
	const char *url, size_t url_len, void *request, void (*request_free)(void *),
	dobj_done_fn done, void *done_data)
{
	dobj_ns *ns = stub->ns;
	dobj_rt *rt = ns->rt;
	dobj_obj *obj;
	dobj_task *t;
	int rc, depth;

	*out = NULL;
	if (dobj__wrong_thread(rt)) {
		dobj__release_now(rt, request, request_free);
		return dobj_error_set(DOBJ_ETHREAD, DOBJ_MSG_THREAD);
	}
	if (rt->closing) {
		rc = dobj_error_set(DOBJ_ECLOSED, "the runtime is closed");
		goto fail;
	}
	if (kind != DOBJ_CALL_FETCH && kind != DOBJ_CALL_RPC &&
	    !(kind == DOBJ_CALL_HOST && !(ns->klass.flags & DOBJ_CLASS_NATIVE))) {
		rc = dobj_error_set(DOBJ_EARG, "unknown call kind %d", (int)kind);
		goto fail;
	}
	if (kind == DOBJ_CALL_RPC && (!method || !method[0])) {
		rc = dobj_error_set(DOBJ_EARG, "an RPC call needs a method name");
		goto fail;
	}
	if (kind == DOBJ_CALL_FETCH && (rc = dobj_url_check(url, url_len)) < 0)
		goto fail;
	/* A native method's arity and argument types are known: a mismatch is
	 * the caller's error, raised before anything is delivered.  (A missing
	 * method is the object's answer, delivered as workerd does.) */
	if (kind == DOBJ_CALL_RPC && (ns->klass.flags & DOBJ_CLASS_NATIVE) && request_free &&
	    (rc = dobj_native_check(ns, method, request)) < 0 && rc != DOBJ_ENOHANDLER)
		goto fail;
	depth = (rt->current ? rt->current->depth : 0) + 1;
	if (depth > DOBJ_MAX_CALL_DEPTH) {
		rc = dobj_error_set(DOBJ_EDEPTH, DOBJ_MSG_DEPTH);
		goto fail;
	}

	/* Bind the stub to the live incarnation on its first call.  A stub bound
	 * to an aborted incarnation stays broken: its calls fail when popped. */
	obj = stub->obj;
	if (obj && obj->evicted) {
		/* Eviction is not a failure: the next call reaches a new instance. */
		stub_unbind(stub);
		obj = NULL;
	}
	if (!obj) {
		obj = dobj__obj_get(ns, &stub->id, stub->name, stub->name_len);
		if (!obj) {
			rc = DOBJ_ENOMEM;
			goto fail;
		}
		stub_bind(stub, obj); /* dobj__obj_get's reference */
	}

	t = dobj__task_new(rt, obj, DOBJ_TASK_CALL);
	if (!t) {
		rc = DOBJ_ENOMEM;
		goto fail;
	}
	if (method && !(t->method = strdup(method))) {
		dobj__task_finish(t, DOBJ_ENOMEM, "out of memory", NULL, NULL);
		dobj__task_unref(t);
		rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
		goto fail;
	}
	if (obj->dead) {
		/* A broken stub: the call fails with the stub's error when popped. */
		dobj__host_retain(rt, stub->error);
		t->stub_error = stub->error;
	}
	t->call_kind = kind;
	t->depth = depth;
	t->request = request;
	t->request_free = request_free;
	t->step = ns->klass.step;
	t->step_data = ns->klass.data;
	t->done_fn = done;
	t->done_data = done_data;
	dobj__task_enqueue(t);
	*out = t;
	return DOBJ_OK;
fail:
	dobj__drop_value(rt, request, request_free);
	dobj__rt_flush(rt);
	return rc;
}
