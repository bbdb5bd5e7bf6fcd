/* cluster_log.c — the node's log hook (dobj_rt_cluster_set_log): lines an
 * operator wants to see (the node lost its lease, could not renew it).
 * An event happens deep inside a step (a commit's lease check, a renewal);
 * its line goes out from the runtime's loop, on a timer of its own, so the
 * hook never runs in the middle of the core's work. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "cluster_int.h"

typedef struct logged {
	dobj_rt *rt;
	long long node;
	char msg[];
} logged;

static void deliver(void *data, int fired)
{
	logged *l = data;
	struct dobj__cluster *cl = l->rt->cluster;

	if (fired && cl && cl->log_fn)
		cl->log_fn(cl->log_data, l->node, l->msg);
	free(l);
}

void dobj__cluster_log(dobj_rt *rt, long long node, const char *fmt, ...)
{
	struct dobj__cluster *cl = rt->cluster;
	char buf[800], err[600];
	int code = dobj_error_last_code();
	va_list ap;
	logged *l;
	size_t n;

	if (!cl || !cl->log_fn || rt->closing)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	n = strlen(buf);
	if (!(l = malloc(sizeof(*l) + n + 1)))
		return; /* a log line is not worth failing the caller for */
	l->rt = rt;
	l->node = node;
	memcpy(l->msg, buf, n + 1);
	/* The caller's error stays what it set (a timer that cannot be made
	 * sets one of its own). */
	snprintf(err, sizeof(err), "%s", dobj_error_last());
	if (dobj__timer(rt, 0, deliver, l, 1, NULL) < 0) {
		free(l);
		dobj_error_set(code, "%s", err);
	}
}

int dobj_rt_cluster_set_log(dobj_rt *rt, dobj_cluster_log_fn fn, void *data)
{
	if (!rt || !rt->cluster)
		return dobj_error_set(DOBJ_ESTATE, "cluster: this runtime is not a node");
	rt->cluster->log_fn = fn;
	rt->cluster->log_data = data;
	return DOBJ_OK;
}
