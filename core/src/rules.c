/*
 * Rules every binding follows, decided here once: which names RPC may call
 * and what a caller hears when a method is missing, what an idle timeout
 * means, which durabilities and delays exist, which errors are remote, when
 * a ctx or storage is still usable, which URLs a stub's fetch takes.
 * (Before they lived here, each binding had its own copy, and they drifted.)
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "v8_format.h"

/* workerd refuses its handler names; constructors are never methods. */
static const char *const reserved_names[] = {
	"fetch", "connect", "alarm", "webSocketMessage", "webSocketClose", "webSocketError",
	"constructor", "new", NULL
};

int dobj_rpc_name_check(const char *name, size_t len)
{
	size_t i;

	if (!name || len == 0 || memchr(name, '\0', len) || name[0] == '_')
		return dobj_rpc_no_method(name, len);
	for (i = 0; reserved_names[i]; i++)
		if (strlen(reserved_names[i]) == len && memcmp(reserved_names[i], name, len) == 0)
			return dobj_error_set(DOBJ_ENOHANDLER,
				"'%s' is a reserved method and cannot be called over RPC.", reserved_names[i]);
	return DOBJ_OK;
}

/* Longest name quoted whole in a message; longer ones are cut and marked. */
#define NAME_MAX_QUOTED 256

int dobj_rpc_no_method(const char *name, size_t len)
{
	/* The name as shown: control bytes, a backslash and bytes that are not
	 * UTF-8 escaped (\xHH, \\), so that a NUL does not end the message
	 * and what is shown is what was asked for; at most NAME_MAX_QUOTED
	 * bytes of it, cut between characters. */
	char shown[NAME_MAX_QUOTED + 1];
	size_t i = 0, n = 0;

	if (!name)
		len = 0;
	while (i < len) {
		const unsigned char *p = (const unsigned char *)name + i;
		uint32_t cp;
		size_t bad, k = *p >= 0x80 ? dobj__utf8_get(p, len - i, 1, &cp, &bad) : 1;
		int esc = *p < 0x20 || *p == 0x7f || *p == '\\' || k == 0;
		size_t w = esc ? (*p == '\\' ? 2 : 4) : k;

		if (n + w > NAME_MAX_QUOTED)
			break;
		if (*p == '\\')
			memcpy(shown + n, "\\\\", 2);
		else if (esc)
			snprintf(shown + n, 5, "\\x%02x", *p);
		else
			memcpy(shown + n, p, k);
		n += w;
		i += esc ? 1 : k;
	}
	shown[n] = '\0';
	return dobj_error_set(DOBJ_ENOHANDLER, "The RPC receiver does not implement the method \"%s%s\".",
		shown, i < len ? "..." : "");
}

int dobj_rt_opts_idle_timeout(dobj_rt_opts *opts, double seconds)
{
	if (!(seconds > 0))
		return dobj_error_set(DOBJ_EARG,
			"idle_timeout must be a positive number of seconds (or infinite: never evict)");
	opts->idle_timeout_ms = isinf(seconds) ? -1 : seconds * 1e3;
	if (opts->idle_timeout_ms == 0) /* a subnormal number of seconds */
		opts->idle_timeout_ms = 1e-300;
	return DOBJ_OK;
}

int dobj_rt_opts_durability(dobj_rt_opts *opts, const char *name, size_t len)
{
	if (name && len == 7 && memcmp(name, "process", 7) == 0)
		opts->durability = DOBJ_DURABLE_PROCESS;
	else if (name && len == 5 && memcmp(name, "power", 5) == 0)
		opts->durability = DOBJ_DURABLE_POWER;
	else
		return dobj_error_set(DOBJ_EARG, "durability must be \"process\" or \"power\"");
	return DOBJ_OK;
}

int dobj_delay_check(double ms)
{
	if (!isfinite(ms))
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_DELAY);
	return DOBJ_OK;
}

int dobj_rt_opts_check(const dobj_rt_opts *opts)
{
	if (!opts)
		return DOBJ_OK;
	if (opts->version != DOBJ_RT_OPTS_VERSION)
		return dobj_error_set(DOBJ_EARG, "unsupported dobj_rt_opts version %u", opts->version);
	if (opts->idle_timeout_ms != opts->idle_timeout_ms)
		return dobj_error_set(DOBJ_EARG, "the idle timeout is not a number");
	if (opts->durability != DOBJ_DURABLE_PROCESS && opts->durability != DOBJ_DURABLE_POWER)
		return dobj_error_set(DOBJ_EARG, "unknown durability %d", opts->durability);
	return DOBJ_OK;
}

int dobj_task_remote(const dobj_task *t)
{
	/* Everything that fails a delivered call comes from the object's side,
	 * except the caller's runtime going away under it.  A call routed to
	 * another node is remote as that node said (its connection failing is
	 * not the object's doing). */
	if (t->remote_known)
		return t->done && t->code != DOBJ_OK && t->remote_flag;
	return t->kind == DOBJ_TASK_CALL && t->done && t->code != DOBJ_OK && t->code != DOBJ_ECLOSED;
}

int dobj_obj_check(const dobj_obj *obj)
{
	/* A binding's wrapper that let go of its incarnation: the same answer
	 * as for one still held, so no binding words it again. */
	if (!obj)
		return dobj_error_set(DOBJ_EABORTED, DOBJ_MSG_GONE);
	/* A ctx or a storage is the runtime's like everything else: used from
	 * another thread it would run SQLite and the object's tasks under the
	 * owner's feet. */
	if (dobj__wrong_thread(obj->ns->rt))
		return dobj_error_set(DOBJ_ETHREAD, DOBJ_MSG_THREAD);
	if (obj->ns->rt->closing)
		return dobj_error_set(DOBJ_ECLOSED, "the runtime is closed");
	if (obj->dead || obj->evicted)
		return dobj_error_set(DOBJ_EABORTED, DOBJ_MSG_GONE);
	return DOBJ_OK;
}

int dobj_rt_check_thread(const dobj_rt *rt)
{
	if (dobj__wrong_thread(rt))
		return dobj_error_set(DOBJ_ETHREAD, DOBJ_MSG_THREAD);
	return DOBJ_OK;
}

int dobj_sql_one_check(size_t rows_left)
{
	if (rows_left == 1)
		return DOBJ_OK;
	return dobj_error_set(DOBJ_ESTATE, "Expected exactly one result from SQL query, but got %s results.",
		rows_left == 0 ? "no" : "multiple");
}

int dobj_url_check(const char *url, size_t len)
{
	size_t i;

	/* An absolute URL starts with a scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":" */
	if (url && len > 0 && ((url[0] | 0x20) >= 'a' && (url[0] | 0x20) <= 'z')) {
		for (i = 1; i < len; i++) {
			char c = url[i];
			if (c == ':')
				return i + 1 < len ? DOBJ_OK : dobj_error_set(DOBJ_ETYPE, "Invalid URL: %.*s", (int)(len > 200 ? 200 : len), url);
			if (!((c | 0x20) >= 'a' && (c | 0x20) <= 'z') && !(c >= '0' && c <= '9') &&
			    c != '+' && c != '-' && c != '.')
				break;
		}
	}
	return dobj_error_set(DOBJ_ETYPE,
		"Invalid URL: %.*s (a Durable Object stub needs an absolute URL, e.g. https://host/path)",
		(int)(len > 200 ? 200 : len), url ? url : "");
}
