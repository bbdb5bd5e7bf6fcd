/*
 * The test kit (dobj/testkit.h): listing, evicting, aborting and resetting
 * objects, running an alarm now, running a host function inside an
 * object, and the leak report, for the pytest plugin and the busted
 * helpers alike.  The scheduler's own paths do the work (idle eviction,
 * abort, the alarm path with its retries); this file only chooses what to
 * apply them to.
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void dobj_free(void *p)
{
	free(p);
}

/* The test kit works between events, never from inside one. */
static int check_outside(dobj_rt *rt)
{
	CHECK_THREAD(rt);
	if (rt->pumping || rt->busy)
		return dobj_error_set(DOBJ_ESTATE, "this test helper cannot be used from inside "
			"an object's handler (call it from the test)");
	if (rt->closing)
		return dobj_error_set(DOBJ_ECLOSED, DOBJ_MSG_CLOSED);
	return DOBJ_OK;
}

/* ------------------------------------------------------------ listing IDs */

typedef struct idset {
	dobj_id *ids;
	size_t n, cap;
} idset;

static int idset_add(idset *s, const dobj_id *id)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		dobj_id *p = realloc(s->ids, cap * sizeof(*p));
		if (!p)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		s->ids = p;
		s->cap = cap;
	}
	s->ids[s->n++] = *id;
	return DOBJ_OK;
}

static int idset_add_map(idset *s, const dobj__idmap *m)
{
	size_t i;
	int rc;

	for (i = 0; i < m->cap; i++)
		if (m->slots[i].key && (rc = idset_add(s, m->slots[i].key)) < 0)
			return rc;
	return DOBJ_OK;
}

static int id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(dobj_id));
}

/* <64 hex digits>.sqlite files of the namespace's folder that are its IDs. */
static int idset_add_folder(idset *s, dobj_ns *ns)
{
	DIR *d;
	struct dirent *e;
	int rc = DOBJ_OK;

	if (!ns->dir || !(d = opendir(ns->dir)))
		return DOBJ_OK;
	while (rc == DOBJ_OK && (e = readdir(d))) {
		dobj_id id;
		if (strlen(e->d_name) != DOBJ_ID_HEX_LEN + 7 ||
		    strcmp(e->d_name + DOBJ_ID_HEX_LEN, ".sqlite") != 0)
			continue;
		if (dobj_id_from_string(ns->key, e->d_name, DOBJ_ID_HEX_LEN, &id) < 0)
			continue; /* not an ID of this namespace */
		rc = idset_add(s, &id);
	}
	closedir(d);
	dobj__error_clear();
	return rc;
}

int dobj_ns_list_ids(dobj_ns *ns, dobj_id **out, size_t *n)
{
	idset s = { NULL, 0, 0 };
	size_t i, j;
	int rc;

	*out = NULL;
	*n = 0;
	CHECK_THREAD(ns->rt);
	if ((rc = idset_add_map(&s, &ns->objs)) < 0 ||
	    (rc = idset_add_map(&s, &ns->stores)) < 0 ||
	    (rc = idset_add_map(&s, &ns->alarms)) < 0 ||
	    (rc = idset_add_folder(&s, ns)) < 0) {
		free(s.ids);
		return rc;
	}
	if (s.n > 1)
		qsort(s.ids, s.n, sizeof(dobj_id), id_cmp);
	for (i = j = 0; i < s.n; i++)
		if (j == 0 || !dobj_id_equal(&s.ids[j - 1], &s.ids[i]))
			s.ids[j++] = s.ids[i];
	if (j == 0) {
		free(s.ids);
		return DOBJ_OK;
	}
	*out = s.ids;
	*n = j;
	return DOBJ_OK;
}

/* ------------------------------------------------- evict, abort, reset */

static int busy_error(const dobj_obj *obj)
{
	char hex[DOBJ_ID_HEX_LEN + 1];

	dobj_id_to_hex(&obj->id, hex);
	hex[DOBJ_ID_HEX_LEN] = '\0';
	return dobj_error_set(DOBJ_ESTATE, "cannot evict %s %s: %zu event%s in flight or queued "
		"(an object is evicted only when idle; abort it instead)", obj->ns->binding, hex,
		obj->ntasks, obj->ntasks == 1 ? "" : "s");
}

int dobj_ns_evict(dobj_ns *ns, const dobj_id *id)
{
	dobj_obj *obj;
	int rc;

	if ((rc = check_outside(ns->rt)) < 0)
		return rc;
	obj = dobj__idmap_get(&ns->objs, id);
	if (!obj)
		return 0;
	if (obj->ntasks > 0)
		return busy_error(obj);
	dobj__obj_evict(obj);
	dobj__rt_flush(ns->rt);
	return 1;
}

/* Every live incarnation of the runtime, each with a reference. */
static int live_objects(dobj_rt *rt, dobj_obj ***out, size_t *n)
{
	size_t i, j, total = 0, k = 0;
	dobj_obj **list;

	*out = NULL;
	*n = 0;
	for (i = 0; i < rt->nns; i++)
		total += rt->nss[i]->objs.len;
	if (!total)
		return DOBJ_OK;
	list = malloc(total * sizeof(*list));
	if (!list)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	for (i = 0; i < rt->nns; i++) {
		const dobj__idmap *m = &rt->nss[i]->objs;
		for (j = 0; j < m->cap && k < total; j++) {
			if (!m->slots[j].key)
				continue;
			list[k] = m->slots[j].value;
			dobj_obj_ref(list[k]);
			k++;
		}
	}
	*out = list;
	*n = k;
	return DOBJ_OK;
}

static void unref_all(dobj_rt *rt, dobj_obj **list, size_t n)
{
	size_t i;

	rt->busy++;
	for (i = 0; i < n; i++)
		dobj__obj_unref(list[i]);
	rt->busy--;
	free(list);
}

int dobj_rt_evict_all(dobj_rt *rt)
{
	dobj_obj **list;
	size_t i, n;
	int rc;

	if ((rc = check_outside(rt)) < 0)
		return rc;
	if ((rc = live_objects(rt, &list, &n)) < 0)
		return rc;
	for (i = 0; i < n; i++) {
		if (list[i]->ntasks > 0) {
			rc = busy_error(list[i]);
			unref_all(rt, list, n);
			return rc;
		}
	}
	rt->busy++;
	for (i = 0; i < n; i++)
		if (list[i]->mapped && !list[i]->dead)
			dobj__obj_evict(list[i]);
	rt->busy--;
	unref_all(rt, list, n);
	dobj__rt_flush(rt);
	return (int)n;
}

int dobj_rt_abort_all(dobj_rt *rt, const char *message, void *error)
{
	dobj_obj **list;
	size_t i, n;
	int rc;

	if ((rc = check_outside(rt)) < 0) {
		if (rc != DOBJ_ETHREAD)
			dobj__release_now(rt, error, NULL);
		return rc;
	}
	if ((rc = live_objects(rt, &list, &n)) < 0) {
		dobj__release_now(rt, error, NULL);
		return rc;
	}
	if (!message)
		message = DOBJ_MSG_ABORT_DEFAULT;
	for (i = 0; i < n; i++) {
		/* dobj_obj_abort takes one reference each time. */
		dobj__host_retain(rt, error);
		dobj_obj_abort(list[i], DOBJ_EABORTED, message, error);
	}
	unref_all(rt, list, n);
	dobj__release_now(rt, error, NULL);
	dobj__rt_flush(rt);
	return (int)n;
}

int dobj_rt_reset(dobj_rt *rt)
{
	dobj_obj **list;
	size_t i, n;
	int rc;

	if ((rc = check_outside(rt)) < 0)
		return rc;
	if ((rc = live_objects(rt, &list, &n)) < 0)
		return rc;
	/* Busy objects are aborted (their calls fail with DOBJ_MSG_RESET); idle
	 * ones are evicted, so the test's stubs reach a fresh instance. */
	for (i = 0; i < n; i++) {
		if (list[i]->dead || !list[i]->mapped)
			continue;
		if (list[i]->ntasks > 0)
			dobj_obj_abort(list[i], DOBJ_EABORTED, DOBJ_MSG_RESET, NULL);
		else {
			rt->busy++;
			dobj__obj_evict(list[i]);
			rt->busy--;
		}
	}
	unref_all(rt, list, n);
	/* In a cluster, the objects' cache markers and restores (off this
	 * thread) end before their files go. */
	dobj__cluster_reset(rt);
	/* An alarm aborted above scheduled its retry: the schedule goes after. */
	for (i = 0; i < rt->nns; i++) {
		dobj__alarms_reset(rt->nss[i]);
		dobj__storage_ns_reset(rt->nss[i]);
	}
	dobj__rt_flush(rt);
	return DOBJ_OK;
}

/* --------------------------------------------------- alarm now, run in */

int dobj_ns_run_alarm(dobj_ns *ns, const dobj_id *id, dobj_task **out)
{
	int rc;

	if (out)
		*out = NULL;
	if ((rc = check_outside(ns->rt)) < 0)
		return rc;
	return dobj__alarm_run_now(ns, id, out);
}

int dobj_stub_run(dobj_task **out, dobj_stub *stub, void *fn, dobj_done_fn done, void *done_data)
{
	dobj_ns *ns = stub->ns;

	if (ns->klass.flags & DOBJ_CLASS_NATIVE) {
		*out = NULL;
		dobj__release_now(ns->rt, fn, NULL);
		return dobj_error_set(DOBJ_EARG, "a host function cannot run inside an object of "
			"the native class %s", ns->class_name);
	}
	return dobj_stub_call_ex(out, stub, DOBJ_CALL_HOST, NULL, NULL, 0, fn, NULL, done, done_data);
}

/* ------------------------------------------------------- open at close */

typedef struct alarm_visit {
	int (*fn)(const dobj_open_item *item, void *arg);
	void *arg;
	const char *binding;
} alarm_visit;

static int visit_alarm(const dobj_id *id, const char *name, size_t name_len, double when_ms,
	int retry, void *arg)
{
	alarm_visit *v = arg;
	dobj_open_item item;

	DOBJ__UNUSED(name);
	DOBJ__UNUSED(name_len);
	memset(&item, 0, sizeof(item));
	item.what = DOBJ_OPEN_ALARM;
	item.binding = v->binding;
	item.id = id;
	item.when_ms = when_ms;
	item.retry = retry;
	return v->fn(&item, v->arg);
}

int dobj_rt_open(dobj_rt *rt, int (*fn)(const dobj_open_item *item, void *arg), void *arg)
{
	dobj_task *t;
	size_t i;
	int rc;

	CHECK_THREAD(rt);
	t = rt->tasks;
	while (t && t->lnext) /* the list is newest first: start at the oldest */
		t = t->lnext;
	for (; t; t = t->lprev) {
		dobj_open_item item;
		memset(&item, 0, sizeof(item));
		item.what = DOBJ_OPEN_TASK;
		item.task_kind = t->kind;
		if (t->kind == DOBJ_TASK_CALL) {
			item.call_kind = t->call_kind;
			item.method = t->method;
		}
		if (t->obj) {
			item.binding = t->obj->ns->binding;
			item.id = &t->obj->id;
		}
		if ((rc = fn(&item, arg)) != 0)
			return rc;
	}
	for (i = 0; i < rt->nns; i++) {
		alarm_visit v = { fn, arg, rt->nss[i]->binding };
		if ((rc = dobj__alarms_visit(rt->nss[i], visit_alarm, &v)) != 0)
			return rc;
	}
	return 0;
}

/* ------------------------------------------------------------ leak report */

typedef struct report {
	char *buf;
	size_t len, cap;
	int failed;
	size_t tasks, alarms;
	double now;
} report;

static void put(report *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->failed)
		return;
	for (;;) {
		size_t room = r->cap - r->len;
		va_start(ap, fmt);
		n = vsnprintf(r->buf ? r->buf + r->len : NULL, r->buf ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			r->failed = 1;
			return;
		}
		if (r->buf && (size_t)n < room) {
			r->len += (size_t)n;
			return;
		}
		{
			size_t cap = (r->cap ? 2 * r->cap : 256) + (size_t)n;
			char *p = realloc(r->buf, cap);
			if (!p) {
				r->failed = 1;
				return;
			}
			r->buf = p;
			r->cap = cap;
		}
	}
}

static const char *what_task(const dobj_open_item *it)
{
	switch (it->task_kind) {
	case DOBJ_TASK_CALL:
		switch (it->call_kind) {
		case DOBJ_CALL_FETCH: return "call fetch";
		case DOBJ_CALL_RPC: return "call";
		case DOBJ_CALL_ALARM: return "call alarm";
		case DOBJ_CALL_HOST: return "call run_in_durable_object";
		case DOBJ_CALL_WS_MESSAGE: return "call webSocketMessage";
		case DOBJ_CALL_WS_CLOSE: return "call webSocketClose";
		case DOBJ_CALL_WS_ERROR: return "call webSocketError";
		}
		return "call";
	case DOBJ_TASK_BLOCK: return "block_concurrency_while";
	case DOBJ_TASK_BACKGROUND: return "wait_until task";
	case DOBJ_TASK_FREE: return "task";
	}
	return "task";
}

static void put_id(report *r, const dobj_open_item *it)
{
	char hex[DOBJ_ID_HEX_LEN + 1];

	if (!it->id) {
		put(r, " of no object");
		return;
	}
	dobj_id_to_hex(it->id, hex);
	hex[DOBJ_ID_HEX_LEN] = '\0';
	put(r, " on %s %s", it->binding, hex);
}

static int count_item(const dobj_open_item *it, void *arg)
{
	report *r = arg;

	if (it->what == DOBJ_OPEN_TASK)
		r->tasks++;
	else
		r->alarms++;
	return 0;
}

static int put_item(const dobj_open_item *it, void *arg)
{
	report *r = arg;

	put(r, "\n  ");
	if (it->what == DOBJ_OPEN_TASK) {
		put(r, "%s", what_task(it));
		if (it->task_kind == DOBJ_TASK_CALL && it->call_kind == DOBJ_CALL_RPC && it->method)
			put(r, " %s()", it->method);
		put_id(r, it);
	} else {
		put(r, "alarm");
		put_id(r, it);
		put(r, " at %+.0f ms", it->when_ms - r->now);
		if (it->retry > 0)
			put(r, " (retry %d)", it->retry);
	}
	return 0;
}

int dobj_rt_leaks(dobj_rt *rt, char **out)
{
	report r;
	int rc;

	*out = NULL;
	memset(&r, 0, sizeof(r));
	if ((rc = dobj_rt_open(rt, count_item, &r)) < 0)
		return rc;
	if (!r.tasks && !r.alarms)
		return DOBJ_OK;
	r.now = dobj__wall_ms(rt);
	put(&r, "open at close: %zu task%s, %zu alarm%s", r.tasks, r.tasks == 1 ? "" : "s",
		r.alarms, r.alarms == 1 ? "" : "s");
	if ((rc = dobj_rt_open(rt, put_item, &r)) < 0 || r.failed) {
		free(r.buf);
		return rc < 0 ? rc : dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	*out = r.buf;
	return DOBJ_OK;
}
