/*
 * Namespaces: a class bound under a binding name and a unique key, with its
 * live objects, its storage folder and its alarms.  The runtime owns them
 * (rt->nss) and frees them with itself.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int dobj_ns_new(dobj_ns **out, dobj_rt *rt, const char *binding, size_t binding_len,
	const char *unique_key, size_t unique_key_len, const dobj_class *klass)
{
	return dobj_ns_new_with_id_key(out, rt, binding, binding_len, unique_key, unique_key_len,
		NULL, 0, klass);
}

int dobj_ns_new_with_id_key(dobj_ns **out, dobj_rt *rt, const char *binding, size_t binding_len,
	const char *unique_key, size_t unique_key_len, const char *id_key, size_t id_key_len,
	const dobj_class *klass)
{
	dobj_ns *ns;
	int rc;

	*out = NULL;
	CHECK_THREAD(rt);
	if (rt->closing)
		return dobj_error_set(DOBJ_ECLOSED, "the runtime is closed");
	if (!binding || !klass)
		return dobj_error_set(DOBJ_EARG, "a namespace needs a binding name and a class");
	/* Names are C strings everywhere after this (env, messages, folders). */
	if (memchr(binding, '\0', binding_len))
		return dobj_error_set(DOBJ_EARG, "the binding name must not contain a NUL byte");
	if (unique_key && memchr(unique_key, '\0', unique_key_len))
		return dobj_error_set(DOBJ_EARG, "the unique key must not contain a NUL byte");
	if (id_key && memchr(id_key, '\0', id_key_len))
		return dobj_error_set(DOBJ_EARG, "the ID key must not contain a NUL byte");
	if (klass->flags & ~(unsigned)(DOBJ_CLASS_FETCH | DOBJ_CLASS_ALARM | DOBJ_CLASS_NATIVE |
	    DOBJ_CLASS_WS_MESSAGE | DOBJ_CLASS_WS_CLOSE | DOBJ_CLASS_WS_ERROR))
		return dobj_error_set(DOBJ_EARG, "unknown class flags 0x%x", klass->flags);
	if (!klass->step)
		return dobj_error_set(DOBJ_EARG, "a class needs a step function");
	if (rt->nns == rt->capns) {
		size_t cap = rt->capns ? 2 * rt->capns : 4;
		dobj_ns **p = realloc(rt->nss, cap * sizeof(*p));
		if (!p)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		rt->nss = p;
		rt->capns = cap;
	}
	ns = calloc(1, sizeof(*ns));
	if (!ns)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	ns->rt = rt;
	ns->folder_fd = -1;
	ns->klass = *klass;
	ns->binding = dobj__strndup(binding, binding_len);
	ns->class_name = strdup(klass->name ? klass->name : "DurableObject");
	ns->klass.name = ns->class_name;
	if (!ns->binding || !ns->class_name) {
		dobj__ns_free(ns);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	if (!unique_key) {
		unique_key = binding;
		unique_key_len = binding_len;
	}
	if (!id_key) {
		id_key = unique_key;
		id_key_len = unique_key_len;
	}
	ns->unique_key = dobj__strndup(unique_key, unique_key_len);
	ns->unique_key_len = unique_key_len;
	if (!ns->unique_key) {
		dobj__ns_free(ns);
		return DOBJ_ENOMEM;
	}
	/* Alarms already stored (a restart on the same directory) are scheduled
	 * now, including those already due.  Everything that can fail comes
	 * before the namespace is published, so a failed bind leaves nothing
	 * behind: no namespace, no claim on the folder, no class reference. */
	if ((rt->cluster && (rc = dobj__cluster_ns_check(unique_key, unique_key_len)) < 0) ||
	    (rc = dobj_idkey_new(&ns->key, id_key, id_key_len)) < 0 ||
	    (rc = dobj__storage_ns_open(ns)) < 0 ||
	    (rc = dobj__alarms_load(ns)) < 0 ||
	    /* last: the node's alarm scan names only the namespaces it serves */
	    (rt->cluster && (klass->flags & DOBJ_CLASS_ALARM) &&
	     (rc = dobj__cluster_alarm_ns(rt, unique_key, unique_key_len)) < 0)) {
		dobj__ns_free(ns);
		return rc;
	}
	if (dobj__class_data_is_host(ns))
		dobj__host_retain(rt, ns->klass.data);
	rt->nss[rt->nns++] = ns;
	*out = ns;
	return DOBJ_OK;
}

dobj_rt *dobj_ns_rt(const dobj_ns *ns) { return ns->rt; }
const char *dobj_ns_binding(const dobj_ns *ns) { return ns->binding; }
const char *dobj_ns_class_name(const dobj_ns *ns) { return ns->class_name; }
void *dobj_ns_class_data(const dobj_ns *ns) { return ns->klass.data; }
dobj_idkey *dobj_ns_idkey(const dobj_ns *ns) { return ns->key; }
size_t dobj_rt_ns_count(const dobj_rt *rt) { return rt->nns; }
dobj_ns *dobj_rt_ns_at(const dobj_rt *rt, size_t i) { return i < rt->nns ? rt->nss[i] : NULL; }
size_t dobj_ns_live(const dobj_ns *ns) { return ns->objs.len; }

void dobj__ns_free(dobj_ns *ns)
{
	dobj__alarms_free(ns);
	dobj__ws_ns_close(ns);
	dobj__storage_ns_close(ns);
	dobj__idmap_free(&ns->objs);
	free(ns->unique_key);
	free(ns->dir);
	free(ns->binding);
	free(ns->class_name);
	dobj_idkey_free(ns->key);
	free(ns);
}
