/*
 * A node's worker thread: jobs handed over in order by the runtime's thread,
 * done one at a time on the worker's own PostgreSQL connection, and handed
 * back through the runtime's fd (dobj__rt_post), in order.  The activator
 * (cluster_activate.c) and the compactor (cluster_snapshot.c) are two.
 *
 * While jobs are out, the worker's watch keeps dobj_rt_run waiting: a job's
 * end comes through the fd, which dobj_rt_run alone would not wait for.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster_int.h"

void dobj__mono_deadline(struct timespec *ts, double ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ms / 1e3);
	ts->tv_nsec += (long)fmod(ms, 1e3) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void done_push(dobj__worker *w, dobj__wjob *j)
{
	j->next = NULL;
	if (w->d_tail)
		w->d_tail->next = j;
	else
		w->d_head = j;
	w->d_tail = j;
}

static void *worker_main(void *arg)
{
	dobj__worker *w = arg;
	dobj__wjob *j;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->stop && !w->q_head)
			pthread_cond_wait(&w->wake, &w->mu);
		if (w->stop)
			break;
		j = w->q_head;
		w->q_head = j->next;
		if (!w->q_head)
			w->q_tail = NULL;
		w->busy = 1;
		w->cur = j;
		/* A halt is for the job under way (dobj__worker_cancel); a stop
		 * ended the loop above. */
		__atomic_store_n(&w->halted, 0, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&w->mu);
		w->run(w->cl, &w->pg, j);
		pthread_mutex_lock(&w->mu);
		done_push(w, j);
		w->busy = 0;
		w->cur = NULL;
		pthread_cond_broadcast(&w->idle);
		dobj__rt_post(w->cl->rt);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

static int worker_busy(void *owner)
{
	return ((dobj__worker *)owner)->out > 0;
}

/* The runtime's thread: the jobs that ended, in order. */
static void worker_drain(dobj_rt *rt, void *data)
{
	dobj__worker *w = data;
	dobj__wjob *done, *j;

	(void)rt;
	if (!w->out)
		return; /* nothing of this worker's can be done (every source drains on every post) */
	pthread_mutex_lock(&w->mu);
	done = w->d_head;
	w->d_head = w->d_tail = NULL;
	pthread_mutex_unlock(&w->mu);
	while ((j = done)) {
		done = j->next;
		j->next = NULL;
		w->out--;
		w->done(w->cl, j);
	}
	dobj__watch_update(&w->watch);
}

int dobj__thread_start(pthread_t *th, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(th, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

int dobj__worker_start(dobj__worker **out, struct dobj__cluster *cl, const char *role,
	double watch_ms,
	void (*run)(struct dobj__cluster *cl, dobj__pg *pg, dobj__wjob *j),
	void (*done)(struct dobj__cluster *cl, dobj__wjob *j))
{
	dobj__worker *w;
	int rc;

	if (!(w = calloc(1, sizeof(*w))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if ((rc = dobj__pg_init_from(&w->pg, &cl->pg)) < 0) {
		free(w);
		return rc;
	}
	w->pg.halt = &w->halted;
	w->pg.role = role;
	w->cl = cl;
	w->run = run;
	w->done = done;
	w->watch = (dobj__watch){ .rt = cl->rt, .ms = watch_ms, .busy = worker_busy, .owner = w };
	pthread_mutex_init(&w->mu, NULL);
	dobj__cond_init(&w->wake);
	dobj__cond_init(&w->idle);
	*out = w;
	if ((rc = dobj__rt_source_add(cl->rt, worker_drain, w)) < 0)
		goto fail;
	if (dobj__thread_start(&w->th, worker_main, w) != 0) {
		dobj__rt_source_remove(cl->rt, worker_drain, w);
		rc = dobj_error_set(DOBJ_ERROR, "cluster: cannot start a thread");
		goto fail;
	}
	return DOBJ_OK;
fail:
	*out = NULL;
	pthread_cond_destroy(&w->wake);
	pthread_cond_destroy(&w->idle);
	pthread_mutex_destroy(&w->mu);
	free(w->pg.url);
	free(w);
	return rc;
}

void dobj__worker_push(dobj__worker *w, dobj__wjob *j)
{
	j->next = NULL;
	w->out++;
	pthread_mutex_lock(&w->mu);
	if (w->q_tail)
		w->q_tail->next = j;
	else
		w->q_head = j;
	w->q_tail = j;
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->mu);
	dobj__watch_update(&w->watch);
}

void dobj__worker_halt(dobj__worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	__atomic_store_n(&w->halted, 1, __ATOMIC_RELEASE);
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->mu);
}

void dobj__worker_cancel(dobj__worker *w, int (*keep)(dobj__wjob *j),
	void (*unrun)(dobj__wjob *j))
{
	dobj__wjob **at, *j;

	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->q_tail = NULL;
	for (at = &w->q_head; (j = *at);) {
		if (keep(j)) {
			w->q_tail = j;
			at = &j->next;
			continue;
		}
		*at = j->next;
		unrun(j);
		done_push(w, j);
	}
	if (w->cur && !keep(w->cur))
		__atomic_store_n(&w->halted, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&w->mu);
}

void dobj__worker_settle(dobj__worker *w, int (*keep)(dobj__wjob *j))
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	/* The halted job ends within its statements' bounds. */
	while (w->cur && !keep(w->cur))
		pthread_cond_wait(&w->idle, &w->mu);
	pthread_mutex_unlock(&w->mu);
	worker_drain(w->cl->rt, w);
}

void dobj__worker_stop(dobj__worker **wp, double wait_ms, void (*unrun)(dobj__wjob *j))
{
	dobj__worker *w = *wp;
	struct timespec until;
	dobj__wjob *j;

	if (!w)
		return;
	dobj__mono_deadline(&until, wait_ms);
	pthread_mutex_lock(&w->mu);
	while (wait_ms > 0 && (w->q_head || w->busy) &&
	       pthread_cond_timedwait(&w->idle, &w->mu, &until) != ETIMEDOUT)
		;
	w->stop = 1;
	__atomic_store_n(&w->halted, 1, __ATOMIC_RELEASE);
	pthread_cond_signal(&w->wake);
	pthread_mutex_unlock(&w->mu);
	/* The running job ends within its statements' bounds. */
	pthread_join(w->th, NULL);
	dobj__rt_source_remove(w->cl->rt, worker_drain, w);
	while ((j = w->q_head)) {
		w->q_head = j->next;
		unrun(j);
		done_push(w, j);
	}
	w->q_tail = NULL;
	worker_drain(w->cl->rt, w);
	dobj__watch_stop(&w->watch);
	dobj__pg_drop(&w->pg);
	free(w->pg.url);
	pthread_cond_destroy(&w->wake);
	pthread_cond_destroy(&w->idle);
	pthread_mutex_destroy(&w->mu);
	free(w);
	*wp = NULL;
}
