/*
 * The clock, the timers and the host contract (dobj.h, "driving a runtime"):
 * the hooks, the pollable fd and the owner thread.  The scheduler (rt.c)
 * calls in here when work becomes ready or a timer moves; what runs the work
 * (pump, process, run) stays there.
 */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#endif

#include "internal.h"

/* ------------------------------------------------------------ host contract */

/*
 * The fd (Linux) is an epoll descriptor over two: a timerfd for the next
 * deadline and an eventfd for "now" (work became ready, another thread
 * posted, a node's network thread has frames).  One timerfd did both
 * before: each "now" armed it to expire in 1 ns, and each wait disarmed and
 * re-armed it, three timerfd_settime calls per cluster commit, each a
 * reprogramming of the CPU's timer (and a timer interrupt for the 1 ns
 * ones) where an eventfd write only wakes the waiter.  The two never
 * overwrite each other, so a deadline set or cleared cannot lose a post.
 */

/* Arm the timer to make the fd readable after `delay_ms`. */
static void fd_arm_timer(dobj_rt *rt, double delay_ms)
{
#ifdef __linux__
	struct itimerspec its;

	memset(&its, 0, sizeof(its));
	if (!(delay_ms > 0)) {
		its.it_value.tv_nsec = 1; /* relative 1 ns: expires at once */
	} else {
		if (delay_ms > 1e12) /* ~31 years: "not in this process's life" */
			delay_ms = 1e12;
		its.it_value.tv_sec = (time_t)(delay_ms / 1e3);
		its.it_value.tv_nsec = (long)((delay_ms - (double)its.it_value.tv_sec * 1e3) * 1e6);
		if (its.it_value.tv_nsec >= 1000000000L)
			its.it_value.tv_nsec = 999999999L;
		if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
			its.it_value.tv_nsec = 1;
	}
	timerfd_settime(rt->tfd, 0, &its, NULL);
#else
	(void)rt;
	(void)delay_ms;
#endif
}

/*
 * The write first, then the mark: dobj__fd_clear reads the eventfd only when
 * the mark says it may hold a count, so the wakes that came from elsewhere
 * (an append's answer on the runtime's connection, a timer) cost no read
 * that finds nothing.  A clear that runs between the write and the mark
 * leaves the count for the next clear: the fd wakes its waiter once more,
 * never for good (the mark follows at once).
 */
long dobj__efd_reads;

void dobj__fd_signal(int efd, int *armed)
{
#ifdef __linux__
	uint64_t one = 1;
	ssize_t n;

	/* Fails only when the counter would overflow: it is readable then. */
	do
		n = write(efd, &one, sizeof(one));
	while (n < 0 && errno == EINTR);
	__atomic_store_n(armed, 1, __ATOMIC_RELEASE);
#else
	(void)efd;
	(void)armed;
#endif
}

void dobj__rt_post(dobj_rt *rt)
{
	pthread_mutex_lock(&rt->post_mu);
	if (!rt->posted) {
		__atomic_store_n(&rt->posted, 1, __ATOMIC_RELEASE);
		if (rt->efd >= 0)
			dobj__fd_signal(rt->efd, &rt->efd_armed);
	}
	pthread_mutex_unlock(&rt->post_mu);
}

void dobj__rt_drain_slow(dobj_rt *rt)
{
	unsigned pumping = rt->pumping;
	size_t i;

	pthread_mutex_lock(&rt->post_mu);
	__atomic_store_n(&rt->posted, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&rt->post_mu);
	/* What a drain wakes runs in the pump that follows: no signal. */
	rt->pumping = 1;
	for (i = 0; i < rt->nsources; i++)
		rt->sources[i].fn(rt, rt->sources[i].data);
	rt->pumping = pumping;
}

int dobj__rt_source_add(dobj_rt *rt, dobj__drain_fn fn, void *data)
{
	int rc;

	if (rt->nsources == DOBJ__MAX_SOURCES)
		return dobj_error_set(DOBJ_ESTATE, "too many event sources on one runtime");
	if ((rc = dobj_rt_fd(rt)) < 0)
		return rc;
	pthread_mutex_lock(&rt->post_mu);
	rt->sources[rt->nsources].fn = fn;
	rt->sources[rt->nsources].data = data;
	rt->nsources++;
	pthread_mutex_unlock(&rt->post_mu);
	return DOBJ_OK;
}

void dobj__rt_source_remove(dobj_rt *rt, dobj__drain_fn fn, void *data)
{
	size_t i;

	pthread_mutex_lock(&rt->post_mu);
	for (i = 0; i < rt->nsources; i++)
		if (rt->sources[i].fn == fn && rt->sources[i].data == data) {
			rt->sources[i] = rt->sources[--rt->nsources];
			break;
		}
	pthread_mutex_unlock(&rt->post_mu);
}

/* Make the fd unreadable: the signals are read (what they were for is in
 * the flags the drains check: the ready queue, rt->posted, the route's
 * wake), and an expired deadline is forgotten.  A deadline not reached yet
 * stays armed unless `disarm` (an early wake is harmless). */
void dobj__fd_clear(dobj_rt *rt, int disarm)
{
#ifdef __linux__
	uint64_t n;
	ssize_t got;

	if (rt->fd < 0)
		return;
	if (__atomic_exchange_n(&rt->efd_armed, 0, __ATOMIC_ACQ_REL)) {
		__atomic_add_fetch(&dobj__efd_reads, 1, __ATOMIC_RELAXED);
		do
			got = read(rt->efd, &n, sizeof(n));
		while (got < 0 && errno == EINTR);
	}
	rt->fd_now = 0;
	if (rt->inline_out == 2)
		rt->inline_out = 1; /* the host waits next: the append's answer can come */
	if (rt->fd_when == INFINITY)
		return;
	/* A deadline still ahead on the clock the timer runs on cannot have
	 * expired: no read (the cluster's append deadline, 2 s ahead, is armed
	 * through every commit).  A custom clock may lag: read then. */
	if (!disarm && !rt->now_ms && !rt->virtual_time && dobj__mono_ms() + 1.0 < rt->fd_when)
		return;
	do
		got = read(rt->tfd, &n, sizeof(n));
	while (got < 0 && errno == EINTR);
	if (got != (ssize_t)sizeof(n) && !disarm)
		return;
	if (got != (ssize_t)sizeof(n)) {
		struct itimerspec off;
		memset(&off, 0, sizeof(off));
		timerfd_settime(rt->tfd, 0, &off, NULL);
	}
	/* Expired (a one-shot timer is disarmed by then) or disarmed. */
#else
	(void)disarm;
#endif
	rt->fd_now = 0;
	rt->fd_when = INFINITY;
}

/* The ready queue became non-empty outside a pump: tell the host. */
void dobj__work_ready_slow(dobj_rt *rt)
{
	if (rt->closing)
		return;
	if (rt->host.notify)
		rt->host.notify(rt->host.data);
	if (rt->fd >= 0 && !rt->fd_now) {
		dobj__fd_signal(rt->efd, &rt->efd_armed);
		rt->fd_now = 1;
	}
}

/* Report the next deadline if it is earlier than what the host was told
 * (hook) or what the fd is armed for.  Later deadlines are not reported: the
 * host wakes early, calls dobj_rt_process, and hears of them then. */
void dobj__timer_sync_slow(dobj_rt *rt)
{
	double when;

	if (rt->pumping || rt->busy || rt->closing || !rt->nheap)
		return;
	when = rt->heap[0]->when;
	if (when < rt->hook_when) {
		rt->hook_when = when;
		if (rt->host.timer)
			rt->host.timer(rt->host.data, when);
	}
	if (rt->fd >= 0 && !rt->virtual_time && when < rt->fd_when) {
		fd_arm_timer(rt, when - dobj_rt_now_ms(rt));
		rt->fd_when = when;
	}
}


/* Release a value handed over by a call refused on another thread: not
 * through the trash (the runtime's state belongs to its thread), but at
 * once, on the caller's thread, which holds whatever its host needs. */
void dobj__release_now(dobj_rt *rt, void *v, void (*free_fn)(void *))
{
	if (!v)
		return;
	if (free_fn)
		free_fn(v);
	else if (rt->host.release)
		rt->host.release(rt->host.data, v);
}


#ifdef __linux__
static int epoll_add_in(int ep, int fd)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN;
	ev.data.fd = fd;
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}
#endif

int dobj_rt_fd(dobj_rt *rt)
{
	CHECK_THREAD(rt);
	if (rt->fd >= 0)
		return rt->fd;
#ifdef __linux__
	int ep, tfd = -1, efd = -1, e;

	if (rt->closing)
		return dobj_error_set(DOBJ_ECLOSED, "the runtime is closed");
	if ((ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
	    (tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)) < 0 ||
	    (efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
	    epoll_add_in(ep, tfd) != 0 || epoll_add_in(ep, efd) != 0)
		goto error;
	rt->fd = ep;
	rt->tfd = tfd;
	rt->efd = efd;
	rt->fd_now = 0;
	rt->fd_when = INFINITY;
	if (rt->ready_head) {
		dobj__fd_signal(rt->efd, &rt->efd_armed);
		rt->fd_now = 1;
	} else {
		dobj__timer_sync(rt);
	}
	return rt->fd;

error:
	e = errno;
	if (ep >= 0)
		close(ep);
	if (tfd >= 0)
		close(tfd);
	if (efd >= 0)
		close(efd);
	return dobj_error_set(DOBJ_ERROR, "cannot make the runtime's fd: %s", strerror(e));
#else
	return dobj_error_set(DOBJ_ERROR, "dobj_rt_fd needs Linux (epoll, timerfd, eventfd)");
#endif
}

double dobj_rt_wall_ms(dobj_rt *rt)
{
	return dobj__wall_ms(rt);
}

double dobj__wall_ms(dobj_rt *rt)
{
	struct timespec ts;

	if (rt->wall_ms)
		return rt->wall_ms(rt->clock_data);
	if (rt->virtual_time && rt->wall_base > 0)
		return rt->wall_base + rt->virtual_now;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------------ timers */

double dobj_rt_now_ms(dobj_rt *rt)
{
	if (rt->virtual_time)
		return rt->virtual_now;
	return rt->now_ms ? rt->now_ms(rt->clock_data) : dobj__mono_ms();
}

static int timer_less(const dobj_timer *a, const dobj_timer *b)
{
	return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static void heap_swap(dobj_rt *rt, size_t i, size_t j)
{
	dobj_timer *x = rt->heap[i];

	rt->heap[i] = rt->heap[j];
	rt->heap[j] = x;
	rt->heap[i]->index = i;
	rt->heap[j]->index = j;
}

static void heap_up(dobj_rt *rt, size_t i)
{
	while (i > 0 && timer_less(rt->heap[i], rt->heap[(i - 1) / 2])) {
		heap_swap(rt, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(dobj_rt *rt, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < rt->nheap && timer_less(rt->heap[l], rt->heap[m]))
			m = l;
		if (r < rt->nheap && timer_less(rt->heap[r], rt->heap[m]))
			m = r;
		if (m == i)
			return;
		heap_swap(rt, i, m);
		i = m;
	}
}

static void heap_remove(dobj_rt *rt, dobj_timer *tm)
{
	size_t i = tm->index;

	rt->nstrong -= !tm->weak;
	rt->nheap--;
	if (i != rt->nheap) {
		heap_swap(rt, i, rt->nheap);
		heap_down(rt, i);
		heap_up(rt, i);
	}
}

int dobj_rt_timer(dobj_rt *rt, double delay_ms, dobj_timer_fn fn, void *data, dobj_timer **out)
{
	if (out)
		*out = NULL;
	CHECK_THREAD(rt);
	return dobj__timer(rt, delay_ms, fn, data, 0, out);
}

int dobj__timer(dobj_rt *rt, double delay_ms, dobj_timer_fn fn, void *data, int weak,
	dobj_timer **out)
{
	dobj_timer *tm;

	if (out)
		*out = NULL;
	if (rt->closing)
		return dobj_error_set(DOBJ_ECLOSED, "the runtime is closed");
	if (!fn)
		return dobj_error_set(DOBJ_EARG, "a timer needs a function");
	if (dobj_delay_check(delay_ms) < 0)
		return DOBJ_EARG;
	if (rt->nheap == rt->capheap) {
		size_t cap = rt->capheap ? 2 * rt->capheap : 16;
		dobj_timer **h = realloc(rt->heap, cap * sizeof(*h));
		if (!h)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		rt->heap = h;
		rt->capheap = cap;
	}
	tm = calloc(1, sizeof(*tm));
	if (!tm)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	tm->when = dobj_rt_now_ms(rt) + (delay_ms > 0 ? delay_ms : 0);
	tm->seq = rt->timer_seq++;
	tm->fn = fn;
	tm->data = data;
	tm->weak = weak;
	rt->nstrong += !weak;
	tm->index = rt->nheap;
	rt->heap[rt->nheap++] = tm;
	heap_up(rt, tm->index);
	if (tm->index == 0)
		dobj__timer_sync(rt);
	if (out)
		*out = tm;
	return DOBJ_OK;
}

void dobj_timer_cancel(dobj_rt *rt, dobj_timer *tm)
{
	if (!tm)
		return;
	heap_remove(rt, tm);
	tm->fn(tm->data, 0);
	free(tm);
}

double dobj_rt_next_timer_ms(dobj_rt *rt)
{
	double d;

	if (!rt->nheap)
		return -1;
	d = rt->heap[0]->when - dobj_rt_now_ms(rt);
	return d > 0 ? d : 0;
}

/* Fire every timer that is due; returns how many fired. */
size_t dobj__fire_timers(dobj_rt *rt)
{
	double now = dobj_rt_now_ms(rt);
	size_t n = 0;

	/* Timer callbacks run outside any pump: what they drop waits in the
	 * trash until the caller flushes it (as inside dobj_obj_abort). */
	rt->busy++;
	while (rt->nheap && rt->heap[0]->when <= now) {
		dobj_timer *tm = rt->heap[0];
		heap_remove(rt, tm);
		tm->fn(tm->data, 1);
		free(tm);
		n++;
	}
	rt->busy--;
	return n;
}

/*
 * Virtual time: the clock stops at each timer due on the way, so what one
 * timer's work schedules (an alarm's retry, the idle eviction that follows a
 * call) fires at its own time and in order with the rest, not all at once
 * at the end with the clock already past them.
 */
int dobj_rt_advance(dobj_rt *rt, double ms)
{
	double target, slack;

	CHECK_THREAD(rt);
	if (!rt->virtual_time)
		return dobj_error_set(DOBJ_ESTATE, "advance() needs a runtime with virtual time");
	if (rt->pumping)
		return dobj_error_set(DOBJ_ESTATE, "the clock cannot be advanced from inside a handler");
	/* An infinite target would never be reached while a timer keeps
	 * re-arming itself (an alarm that sets the next): refused, as a timer's
	 * delay is; NaN too, rather than read as 0. */
	if (dobj_delay_check(ms) < 0)
		return DOBJ_EARG;
	target = rt->virtual_now + (ms > 0 ? ms : 0);
	/* A positive advance always moves the clock, if only to the next
	 * double: far from the epoch (a test that advanced years) a delay
	 * below the clock's resolution would add nothing, and a host jumping
	 * to its next timer would jump again for ever. */
	if (ms > 0 && target <= rt->virtual_now)
		target = nextafter(rt->virtual_now, INFINITY);
	/* A nanosecond of slack, or a few units of the clock's resolution when
	 * that is coarser: a host that computes the delay to the next timer in
	 * its own units (seconds) may land one rounding short. */
	slack = fmax(1e-6, fabs(target) * 4 * DBL_EPSILON);
	for (;;) {
		dobj_rt_pump(rt); /* fires what is due now, runs what it woke */
		if (rt->closing || !rt->nheap || rt->heap[0]->when > target + slack)
			break;
		if (rt->heap[0]->when > rt->virtual_now)
			rt->virtual_now = rt->heap[0]->when;
	}
	if (!rt->closing && rt->virtual_now < target)
		rt->virtual_now = target;
	return DOBJ_OK;
}

/* dobj_rt_run's wait: until the next timer is due, on the runtime's own fd
 * (the same contract a host's loop uses). */
int dobj__wait_for_timer(dobj_rt *rt)
{
	struct pollfd pfd;
	int fd = dobj_rt_fd(rt);

	if (fd < 0)
		return fd;
	/* A deadline armed already for this one or an earlier one stays (an
	 * early wake only goes round the loop once more). */
	dobj__fd_clear(rt, 0);
	if (rt->nheap && rt->heap[0]->when < rt->fd_when) {
		fd_arm_timer(rt, rt->heap[0]->when - dobj_rt_now_ms(rt));
		rt->fd_when = rt->heap[0]->when;
	}
	/* The signals were read above: what one said before that is still to
	 * be drained (a later one makes the fd readable again). */
	if (__atomic_load_n(&rt->posted, __ATOMIC_ACQUIRE) || (rt->route && dobj__route_wanted(rt)))
		goto drained;
	pfd.fd = fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	while (poll(&pfd, 1, -1) < 0) {
		if (errno != EINTR)
			return dobj_error_set(DOBJ_ERROR, "poll: %s", strerror(errno));
	}
	dobj__fd_clear(rt, 0);
drained:
	if (rt->route) { /* what another node sent: calls to run, answers */
		rt->pumping = 1;
		dobj__route_drain(rt);
		rt->pumping = 0;
	}
	return DOBJ_OK;
}

