/* config_cluster.h — the cluster settings of a project's configuration
 * (config_cluster.c), for config.c. */
#ifndef DOBJ_CONFIG_CLUSTER_H
#define DOBJ_CONFIG_CLUSTER_H

#include "dobj.h"

/*
 * Resolve the cluster settings: the caller's (may be NULL), else the
 * environment's, else those of the file's `dobj` table `file_top` (may be
 * NULL; `where` is "" or "env.NAME." for messages, `path` the file).
 * *out (the caller's, one free()) is NULL when no source names a URL and
 * nothing else is set; DOBJ_EINVALID with a message naming the source of a
 * bad setting.
 */
int dobj__config_cluster(dobj_cluster_opts **out, const char *path, const dobj_val *file_top,
	const char *where, const dobj_cluster_opts *caller);

#endif
