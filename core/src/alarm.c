/*
 * Alarms: one per object, kept twice as workerd keeps them — in the
 * namespace's schedule, <dir>/<unique_key>/metadata.sqlite (`_cf_ALARM`,
 * scheduled_time in ns since the epoch), and in the object's own database
 * (`_cf_METADATA`, key 1, storage.c), written in the step's transaction.
 * Without a storage root the schedule lives in memory only.  When a
 * scheduled alarm comes due, the object's own record decides, as in
 * workerd's ActorSqlite::armAlarmHandler: none means the alarm was deleted
 * or rolled back (it is dropped), another time means the schedule is stale
 * (it runs now if that time has passed, else it moves there).  So either
 * runtime fires the alarms the other set.
 *
 * An alarm is delivered as an ALARM call to the object, at least once: a
 * handler that fails is retried after 2, 4, 8, 16, 32 and 64 s (plus up to
 * 25 % jitter), then dropped.  It never fires early: a timer that wakes
 * before the wall clock reaches the time re-arms.  Times are integers (ns
 * since the epoch), converted from the API's double milliseconds exactly.
 */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define ALARM_MAX_RETRIES DOBJ_ALARM_MAX_RETRIES

typedef struct alarm_rec {
	dobj_id id; /* map key */
	dobj_ns *ns;
	int64_t when;      /* ns since the epoch; 0 = none */
	int retry;         /* retries so far of the current run */
	int firing;        /* an ALARM call is queued or running */
	dobj_task *call;   /* that call while firing (its rec is told when it ends) */
	int reset;         /* the handler set or deleted the alarm while running */
	int orphaned;      /* out of the map (runtime closed while firing): alarm_done frees it */
	dobj_timer *timer;
	char *name;
	size_t name_len;
	dobj_obj *waiting; /* cluster mode: the object whose activation it waits for (a reference) */
} alarm_rec;

typedef struct alarm_info {
	double scheduled;
	int64_t when;          /* the same in ns: the time this call runs for */
	int retry;
	struct alarm_rec *rec; /* told when the call finishes (dobj__alarm_done);
	                        * NULL once the call was cancelled (see cancel_queued) */
} alarm_info;

#define NS_PER_MS INT64_C(1000000)

/* ns -> ms: split first, ns since the epoch exceed 2^53. */
static double ns_to_ms(int64_t ns)
{
	return (double)(ns / NS_PER_MS) + (double)(ns % NS_PER_MS) / 1e6;
}

/*
 * ms -> ns without rounding through a double product (which was off by up
 * to 128 ns), and workerd's rules for what a Date may be (jsg's DateWrapper
 * and setAlarm): finite, within int64 nanoseconds, after the epoch.
 */
static int ms_to_ns(double ms, int64_t *out)
{
	double whole, frac;
	int64_t ns;

	if (!isfinite(ms))
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_ALARM_NOT_A_DATE);
	if (ms * 1e6 >= 9223372036854775808.0)
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_ALARM_TOO_LATE);
	if (ms * 1e6 <= -9223372036854775808.0)
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_ALARM_TOO_EARLY);
	whole = trunc(ms);
	if (whole <= 0) /* workerd compares whole milliseconds */
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_ALARM_NOT_POSITIVE);
	frac = ms - whole; /* exact */
	ns = (int64_t)llround(frac * 1e6);
	if ((int64_t)whole > (INT64_MAX - ns) / NS_PER_MS)
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_ALARM_TOO_LATE);
	*out = (int64_t)whole * NS_PER_MS + ns;
	return DOBJ_OK;
}

static int meta_open(dobj_ns *ns)
{
	char *path, *err = NULL;
	sqlite3 *db;
	size_t n;

	if (ns->meta || !ns->dir)
		return DOBJ_OK;
	n = strlen(ns->dir) + 32;
	path = malloc(n);
	if (!path)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	snprintf(path, n, "%s/metadata.sqlite", ns->dir);
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		int rc = dobj_error_set(DOBJ_ERROR, "cannot open %s: %s", path, sqlite3_errmsg(db));
		sqlite3_close(db);
		free(path);
		return rc;
	}
	free(path);
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; "
		"CREATE TABLE IF NOT EXISTS _cf_ALARM (actor_id TEXT PRIMARY KEY, "
		"scheduled_time INTEGER, actor_name TEXT) WITHOUT ROWID", NULL, NULL, &err) != SQLITE_OK) {
		int rc = dobj_error_set(DOBJ_ERROR, "metadata.sqlite: %s", err ? err : sqlite3_errmsg(db));
		sqlite3_free(err);
		sqlite3_close(db);
		return rc;
	}
	if (ns->rt->durability == DOBJ_DURABLE_POWER)
		sqlite3_exec(db, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
	else
		sqlite3_exec(db, "PRAGMA synchronous=NORMAL", NULL, NULL, NULL);
	ns->meta = db;
	return DOBJ_OK;
}

/* Write (when > 0) or delete (when == 0) the stored alarm row. */
static int persist(alarm_rec *a)
{
	dobj_ns *ns = a->ns;
	sqlite3_stmt *s;
	char hex[DOBJ_ID_HEX_LEN];
	int rc;

	if (!ns->dir)
		return DOBJ_OK;
	if ((rc = meta_open(ns)) < 0)
		return rc;
	dobj_id_to_hex(&a->id, hex);
	if (sqlite3_prepare_v2(ns->meta, a->when > 0 ?
		"INSERT INTO _cf_ALARM (actor_id, scheduled_time, actor_name) VALUES (?1, ?2, ?3) "
		"ON CONFLICT(actor_id) DO UPDATE SET scheduled_time = excluded.scheduled_time, "
		"actor_name = excluded.actor_name" :
		"DELETE FROM _cf_ALARM WHERE actor_id = ?1", -1, &s, NULL) != SQLITE_OK)
		return dobj_error_set(DOBJ_ERROR, "metadata.sqlite: %s", sqlite3_errmsg(ns->meta));
	sqlite3_bind_text(s, 1, hex, DOBJ_ID_HEX_LEN, SQLITE_STATIC);
	if (a->when > 0) {
		sqlite3_bind_int64(s, 2, a->when);
		if (a->name)
			sqlite3_bind_text(s, 3, a->name, (int)a->name_len, SQLITE_STATIC);
	}
	rc = sqlite3_step(s) == SQLITE_DONE ? DOBJ_OK
		: dobj_error_set(DOBJ_ERROR, "metadata.sqlite: %s", sqlite3_errmsg(ns->meta));
	sqlite3_finalize(s);
	return rc;
}

static void rec_free(alarm_rec *a)
{
	if (a->timer)
		dobj_timer_cancel(a->ns->rt, a->timer);
	dobj__obj_unref(a->waiting);
	free(a->name);
	free(a);
}

static void drop(alarm_rec *a)
{
	dobj__idmap_del(&a->ns->alarms, &a->id);
	rec_free(a);
}

static void fire(void *data, int fired);
static alarm_rec *rec_get(dobj_ns *ns, const dobj_id *id, int create, const char *name,
	size_t len);

static int arm(alarm_rec *a, double at)
{
	dobj_rt *rt = a->ns->rt;
	double delay = at - dobj__wall_ms(rt);

	if (a->timer) {
		dobj_timer *tm = a->timer;
		a->timer = NULL;
		dobj_timer_cancel(rt, tm);
	}
	return dobj_rt_timer(rt, delay > 0 ? delay : 0, fire, a, &a->timer);
}

/* The ALARM call finished.  Called by the scheduler itself (deliver), not
 * as the task's done callback: a binding that waits for the call (a test's
 * dobj_ns_run_alarm) replaces that one. */
void dobj__alarm_done(dobj_task *t)
{
	alarm_rec *a = ((alarm_info *)t->alarm_info)->rec;
	dobj_rt *rt;
	int ok = dobj_task_result(t, NULL, NULL, NULL) == DOBJ_OK;

	if (!a) {
		/* Cancelled before its handler began: the schedule moved on. */
		free(t->alarm_info);
		t->alarm_info = NULL;
		return;
	}
	rt = a->ns->rt;
	a->firing = 0;
	a->call = NULL;
	free(t->alarm_info);
	t->alarm_info = NULL;
	if (a->orphaned) {
		/* Out of the schedule (runtime closed or reset while it ran). */
		rec_free(a);
		return;
	}
	if (rt->closing)
		return;
	if (a->reset) {
		/* The handler set a new alarm (armed already) or deleted it. */
		a->reset = 0;
		a->retry = 0;
		if (a->when <= 0)
			drop(a);
		else if (!a->timer && arm(a, ns_to_ms(a->when)) < 0)
			drop(a); /* its timer came due while the handler ran (see fire) */
		return;
	}
	if (ok || a->retry >= ALARM_MAX_RETRIES) {
		/* Done (or given up): off the schedule and out of the object's
		 * record, unless something set another time meanwhile. */
		int64_t ran = a->when;
		dobj__storage_alarm_peek(a->ns, &a->id, 0, &ran);
		a->when = 0;
		persist(a);
		drop(a);
		return;
	}
	/* Retry after 2 << n seconds plus up to 25 % jitter; the stored time
	 * stays, so a restart in between runs it again (at least once). */
	{
		unsigned char r;
		double delay = (double)(2 << a->retry) * 1000.0;
		if (dobj__random(&r, 1) == DOBJ_OK)
			delay += delay * 0.25 * (double)r / 255.0;
		a->retry++;
		if (arm(a, dobj__wall_ms(rt) + delay) < 0) {
			drop(a);
			return;
		}
	}
}

/* Deliver the alarm as an ALARM call (fire, dobj_ns_run_alarm); NULL if it
 * could not be made (then it is tried again in a second). */
static dobj_task *start(alarm_rec *a, double now)
{
	alarm_info *info;
	dobj_obj *obj;
	dobj_task *t;

	obj = dobj__obj_get(a->ns, &a->id, a->name, a->name_len);
	info = calloc(1, sizeof(*info));
	if (!obj || !info) {
		free(info);
		dobj__obj_unref(obj);
		arm(a, now + 1000.0);
		return NULL;
	}
	info->scheduled = ns_to_ms(a->when);
	info->when = a->when;
	info->retry = a->retry;
	info->rec = a;
	a->firing = 1;
	a->reset = 0;
	t = dobj__call_new(obj, DOBJ_CALL_ALARM, NULL, NULL);
	dobj__obj_unref(obj);
	if (!t) {
		free(info);
		a->firing = 0;
		arm(a, now + 1000.0);
		return NULL;
	}
	t->alarm_info = info;
	a->call = t;
	return t;
}

/* Before a first run, the object's own record decides (workerd's
 * armAlarmHandler): 0 = none (the alarm was dropped), 1 = run it (a->when
 * follows the record). */
static int check_record(alarm_rec *a)
{
	int64_t local;
	int rc;

	if (a->retry != 0)
		return 1;
	rc = dobj__storage_alarm_peek(a->ns, &a->id, -1, &local);
	if (rc == 0) {
		a->when = 0; /* deleted or rolled back behind the schedule */
		persist(a);
		drop(a);
		return 0;
	}
	if (rc == 1 && local != a->when) {
		a->when = local;
		persist(a);
	}
	/* rc < 0 (the database cannot be read): run on the schedule. */
	return 1;
}

static void fire(void *data, int fired)
{
	alarm_rec *a = data;
	dobj_obj *held = NULL;
	double now;

	if (!fired)
		return; /* cancelled: the record owns nothing the timer holds */
	a->timer = NULL;
	if (a->firing)
		return; /* set again by its running handler: re-armed when it ends */
	now = dobj__wall_ms(a->ns->rt);
	if (a->retry == 0 && now < ns_to_ms(a->when)) {
		arm(a, ns_to_ms(a->when)); /* never early */
		return;
	}
	if (a->ns->rt->cluster && !a->firing) {
		/* Cluster mode: the object's record is PostgreSQL's, read once the
		 * object is active here (claimed and restored off this thread: the
		 * alarm waits for it, and fires again when it ended). */
		dobj_obj *was = a->waiting;
		int rc;
		a->waiting = NULL;
		rc = dobj__cluster_hold(a->ns, &a->id, a->name, a->name_len, &held);
		dobj__obj_unref(was);
		if (rc == 2) {
			a->waiting = held;
			return;
		}
		if (rc == 0) {
			drop(a); /* a live node owns the object: the alarm is its own */
			return;
		}
		if (rc < 0) {
			arm(a, now + 1000.0); /* PostgreSQL did not answer: later */
			return;
		}
		if (a->timer) {
			/* The restore re-armed it; what follows decides afresh. */
			dobj_timer *tm = a->timer;
			a->timer = NULL;
			dobj_timer_cancel(a->ns->rt, tm);
		}
	}
	if (!check_record(a)) {
		dobj__cluster_unhold(held);
		return;
	}
	if (a->retry == 0 && now < ns_to_ms(a->when)) {
		arm(a, ns_to_ms(a->when)); /* the record holds a later time */
		dobj__cluster_unhold(held);
		return;
	}
	dobj_task_unref(start(a, now));
	dobj__cluster_unhold(held);
}

void dobj__alarm_activated(dobj_obj *obj)
{
	alarm_rec *a = dobj__idmap_get(&obj->ns->alarms, &obj->id);

	if (!a || a->waiting != obj || a->firing)
		return;
	if (obj->ns->rt->closing || arm(a, 0) < 0) {
		a->waiting = NULL; /* the alarm goes with the runtime */
		dobj__obj_unref(obj);
	}
}

int dobj__alarm_track(dobj_ns *ns, const dobj_id *id, const char *name, size_t len,
	int64_t when)
{
	alarm_rec *a = dobj__idmap_get(&ns->alarms, id);

	if (when <= 0 || (a && (a->firing || a->when == when)))
		return DOBJ_OK;
	if (!a && !(a = rec_get(ns, id, 1, name, len)))
		return DOBJ_ENOMEM;
	a->when = when;
	a->retry = 0;
	/* A cluster node's schedule is PostgreSQL's; a local one must know it
	 * for the next start (metadata.sqlite lost the row: an older tool). */
	if (!ns->rt->cluster && persist(a) < 0)
		return dobj_error_last_code();
	return arm(a, ns_to_ms(when));
}

int dobj__alarm_run_now(dobj_ns *ns, const dobj_id *id, dobj_task **out)
{
	alarm_rec *a = dobj__idmap_get(&ns->alarms, id);
	dobj_task *t;

	if (out)
		*out = NULL;
	if (!a || a->firing || a->when <= 0)
		return 0;
	if (a->timer) {
		dobj_timer *tm = a->timer;
		a->timer = NULL;
		dobj_timer_cancel(ns->rt, tm);
	}
	if (!check_record(a))
		return 0;
	t = start(a, dobj__wall_ms(ns->rt));
	if (!t)
		return dobj_error_last_code() < 0 ? dobj_error_last_code() : DOBJ_ENOMEM;
	if (out)
		*out = t;
	else
		dobj_task_unref(t);
	return 1;
}

int dobj_task_alarm_info(const dobj_task *t, double *scheduled_ms, int *retry_count)
{
	const alarm_info *info = t->alarm_info;

	if (t->kind != DOBJ_TASK_CALL || t->call_kind != DOBJ_CALL_ALARM || !info)
		return dobj_error_set(DOBJ_EARG, "not an alarm");
	if (scheduled_ms)
		*scheduled_ms = info->scheduled;
	if (retry_count)
		*retry_count = info->retry;
	return DOBJ_OK;
}

static alarm_rec *rec_get(dobj_ns *ns, const dobj_id *id, int create, const char *name, size_t len)
{
	alarm_rec *a = dobj__idmap_get(&ns->alarms, id);

	if (a || !create)
		return a;
	a = calloc(1, sizeof(*a));
	if (!a) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	a->id = *id;
	a->ns = ns;
	if (name) {
		a->name = dobj__strndup(name, len);
		a->name_len = len;
	}
	if (dobj__idmap_put(&ns->alarms, &a->id, a) < 0) {
		rec_free(a);
		return NULL;
	}
	return a;
}

/*
 * The alarm was deleted or moved to another time while its ALARM call still
 * waited in the queue (behind the object's gate, or behind other events):
 * workerd's armAlarmHandler finds the time changed when the handler would
 * begin and skips it.  The call is let go of here (it finishes without
 * running, dobj__alarm_skipped) and the record is free again: dropped, or
 * armed for its new time like any other alarm.  A handler already running
 * keeps `reset` instead: its end settles the schedule.
 */
static void cancel_queued(alarm_rec *a)
{
	alarm_info *info;

	if (!a->firing || !a->call || a->call->started)
		return;
	info = a->call->alarm_info;
	if (info)
		info->rec = NULL;
	a->firing = 0;
	a->call = NULL;
	a->reset = 0;
	a->retry = 0;
}

int dobj__alarm_skipped(const dobj_task *t)
{
	const alarm_info *info = t->alarm_info;
	return info && !info->rec;
}

/* The storage's object (alarms belong to the incarnation's ID). */
static dobj_obj *owner(dobj_storage *st);

int dobj_alarm_set(dobj_storage *st, double epoch_ms)
{
	dobj_obj *obj = owner(st);
	alarm_rec *a;
	int64_t when = 0;
	int rc;

	if (!obj)
		return dobj_error_set(DOBJ_ESTATE, "the storage has no object");
	if (!(obj->ns->klass.flags & DOBJ_CLASS_ALARM))
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_NO_ALARM_HANDLER);
	if ((rc = ms_to_ns(epoch_ms, &when)) < 0)
		return rc;
	/* The object's record first: it commits (or not) with the step. */
	if ((rc = dobj__storage_alarm_write(st, when)) < 0)
		return rc;
	a = rec_get(obj->ns, &obj->id, 1, obj->name, obj->name_len);
	if (!a)
		return DOBJ_ENOMEM;
	if (a->firing && a->call && !a->call->started &&
	    ((alarm_info *)a->call->alarm_info)->when == when)
		return persist(a); /* the same time: the queued call is it */
	cancel_queued(a);
	a->when = when;
	a->retry = 0;
	if (a->firing)
		a->reset = 1;
	if ((rc = persist(a)) < 0)
		return rc;
	return arm(a, ns_to_ms(when));
}

int dobj_alarm_get(dobj_storage *st, double *epoch_ms)
{
	dobj_obj *obj = owner(st);
	alarm_rec *a = obj ? rec_get(obj->ns, &obj->id, 0, NULL, 0) : NULL;
	int64_t when = 0;
	int rc;

	*epoch_ms = 0;
	/* Once the handler has begun the alarm reads as unset unless it was set
	 * again (workerd's deferred delete, armed when the handler starts); a
	 * step that runs while the call still waits in the queue sees the time. */
	if (a && a->firing && a->call && a->call->started && !a->reset)
		return 0;
	/* As workerd: the object's own record, which follows its transactions. */
	if ((rc = dobj__storage_alarm_read(st, &when)) <= 0)
		return rc;
	*epoch_ms = ns_to_ms(when);
	return 1;
}

int dobj_alarm_delete(dobj_storage *st)
{
	dobj_obj *obj = owner(st);
	alarm_rec *a = obj ? rec_get(obj->ns, &obj->id, 0, NULL, 0) : NULL;
	int rc;

	if ((rc = dobj__storage_alarm_write(st, 0)) < 0)
		return rc;
	if (!a)
		return DOBJ_OK;
	cancel_queued(a);
	a->when = 0;
	if ((rc = persist(a)) < 0)
		return rc;
	if (a->timer) {
		dobj_timer *tm = a->timer;
		a->timer = NULL;
		dobj_timer_cancel(a->ns->rt, tm);
	}
	if (a->firing)
		a->reset = 1; /* dobj__alarm_done drops it */
	else
		drop(a);
	return DOBJ_OK;
}

void dobj__alarm_rolled_back(dobj_storage *st, int64_t when)
{
	dobj_obj *obj = owner(st);
	alarm_rec *a;

	if (!obj || !(obj->ns->klass.flags & DOBJ_CLASS_ALARM))
		return;
	a = rec_get(obj->ns, &obj->id, 0, NULL, 0);
	/* Inside the alarm's own handler the schedule is settled when it
	 * returns; a record the rollback removed is dropped when it fires
	 * (fire() reads the object's record first). */
	if (when <= 0 || (a && (a->firing || a->when == when)))
		return;
	/* A delete_alarm (or a set_alarm to another time) was rolled back:
	 * the schedule had already dropped or moved the alarm. */
	a = rec_get(obj->ns, &obj->id, 1, obj->name, obj->name_len);
	if (!a)
		return;
	a->when = when;
	a->retry = 0;
	if (persist(a) < 0 || arm(a, ns_to_ms(when)) < 0)
		return; /* the record stays: a restart schedules it */
}

int dobj__alarms_load(dobj_ns *ns)
{
	sqlite3_stmt *s;
	int rc;

	/* A cluster node learns its alarms from PostgreSQL (cluster.c): the
	 * local schedule is a cache that may be stale. */
	if (!ns->dir || ns->rt->cluster)
		return DOBJ_OK;
	if ((rc = meta_open(ns)) < 0)
		return rc;
	if (sqlite3_prepare_v2(ns->meta,
		"SELECT actor_id, scheduled_time, actor_name FROM _cf_ALARM", -1, &s, NULL) != SQLITE_OK)
		return dobj_error_set(DOBJ_ERROR, "metadata.sqlite: %s", sqlite3_errmsg(ns->meta));
	while (sqlite3_step(s) == SQLITE_ROW) {
		const char *hex = (const char *)sqlite3_column_text(s, 0);
		dobj_id id;
		alarm_rec *a;
		if (!hex || dobj_id_from_string(ns->key, hex, (size_t)sqlite3_column_bytes(s, 0), &id) < 0)
			continue; /* not an ID of this namespace: leave it alone */
		a = rec_get(ns, &id, 1, (const char *)sqlite3_column_text(s, 2),
			(size_t)sqlite3_column_bytes(s, 2));
		if (!a)
			continue;
		a->when = sqlite3_column_int64(s, 1);
		if (a->when <= 0 || arm(a, ns_to_ms(a->when)) < 0)
			drop(a);
	}
	sqlite3_finalize(s);
	return DOBJ_OK;
}

/* Take every alarm off the schedule; one whose handler still runs is
 * freed by its done callback. */
static void alarms_drop_all(dobj_ns *ns)
{
	alarm_rec *a;

	while ((a = dobj__idmap_any(&ns->alarms))) {
		if (a->firing) {
			dobj__idmap_del(&ns->alarms, &a->id);
			a->orphaned = 1;
			if (a->timer) {
				dobj_timer *tm = a->timer;
				a->timer = NULL;
				dobj_timer_cancel(ns->rt, tm);
			}
			continue;
		}
		drop(a);
	}
}

void dobj__alarms_free(dobj_ns *ns)
{
	alarms_drop_all(ns);
	dobj__idmap_free(&ns->alarms);
}

void dobj__alarms_reset(dobj_ns *ns)
{
	alarms_drop_all(ns);
	if (ns->dir && meta_open(ns) == DOBJ_OK)
		sqlite3_exec(ns->meta, "DELETE FROM _cf_ALARM", NULL, NULL, NULL);
}

static int by_id(const void *x, const void *y)
{
	const alarm_rec *a = *(alarm_rec *const *)x, *b = *(alarm_rec *const *)y;
	return memcmp(a->id.bytes, b->id.bytes, sizeof(a->id.bytes));
}

int dobj__alarms_visit(dobj_ns *ns, int (*fn)(const dobj_id *id, const char *name,
	size_t name_len, double when_ms, int retry, void *arg), void *arg)
{
	alarm_rec **list;
	size_t i, n = 0;
	int rc = 0;

	if (!ns->alarms.len)
		return 0;
	list = malloc(ns->alarms.len * sizeof(*list));
	if (!list)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	for (i = 0; i < ns->alarms.cap; i++) {
		alarm_rec *a = ns->alarms.slots[i].key ? ns->alarms.slots[i].value : NULL;
		if (a && a->when > 0 && n < ns->alarms.len)
			list[n++] = a;
	}
	qsort(list, n, sizeof(*list), by_id);
	for (i = 0; i < n && !rc; i++)
		rc = fn(&list[i]->id, list[i]->name, list[i]->name_len, ns_to_ms(list[i]->when),
			list[i]->retry, arg);
	free(list);
	return rc;
}

static dobj_obj *owner(dobj_storage *st)
{
	return dobj__storage_obj(st);
}
