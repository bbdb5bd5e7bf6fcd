/* dobj_msg_wire_*: what a request read off the wire may be (dobj/wire.h). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <stdint.h>

#include "internal.h"

/* The methods workerd's HTTP server (kj-http) parses, beyond the six Fetch
 * normalizes: any other is answered 501 there, and here. */
static const char *const known_methods[] = {
	"PATCH", "PURGE", "TRACE", "COPY", "LOCK", "MKCOL", "MOVE", "PROPFIND", "PROPPATCH",
	"SEARCH", "UNLOCK", "ACL", "REPORT", "MKACTIVITY", "CHECKOUT", "MERGE", "M-SEARCH",
	"NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "QUERY", "BAN",
};

static int refuse(int *status, int code, const char *fmt, const char *arg, size_t len)
{
	*status = code;
	/* Not echoed past 100 bytes, and never a control byte (a log line). */
	char shown[101];
	size_t i, n = len > 100 ? 100 : len;
	for (i = 0; i < n; i++)
		shown[i] = isprint((unsigned char)arg[i]) ? arg[i] : '?';
	shown[n] = 0;
	return dobj_error_set(DOBJ_EARG, fmt, shown);
}

static int method_known(const char *m, size_t len)
{
	size_t i;

	for (i = 0; i < sizeof(known_methods) / sizeof(known_methods[0]); i++)
		if (strlen(known_methods[i]) == len && memcmp(known_methods[i], m, len) == 0)
			return 1;
	return 0;
}

/* "http://" or "https://" (any case) at the start of target: its length. */
static size_t scheme_len(const char *t, size_t len)
{
	if (len >= 7 && strncasecmp(t, "http://", 7) == 0)
		return 7;
	if (len >= 8 && strncasecmp(t, "https://", 8) == 0)
		return 8;
	return 0;
}

/* A target is passed on as sent (escapes are the entry's to decode), bytes
 * past ASCII included, as servers commonly take them; a control byte, a
 * space or DEL cannot be part of one. */
static int target_char(unsigned char c)
{
	return c > 0x20 && c != 0x7f;
}

int dobj_msg_wire_begin(const char *method, size_t method_len, const char *target,
	size_t target_len, dobj_msg **out, int *status)
{
	const char *canonical = NULL;
	char *m_copy = NULL;
	size_t i;
	dobj_msg *m;

	*out = NULL;
	*status = 0;
	if (!method || !target)
		return refuse(status, 400, "a request needs a method and a target%s", "", 0);
	/* A method is a token, as a header name is: else 400.  The Request
	 * rule (dobj_msg_method_check) only names the six Fetch normalizes
	 * here; what the server takes is kj-http's list, else 501. */
	if (dobj_msg_header_name_check(method, method_len) < 0)
		return refuse(status, 400, "invalid method: %s", method, method_len);
	(void)dobj_msg_method_check(method, method_len, &canonical);
	if (!canonical && !method_known(method, method_len))
		return refuse(status, 501, "method %s is not implemented by dobj dev", method,
			method_len);
	if (target_len > DOBJ_MSG_URL_MAX) {
		*status = 414;
		return dobj_error_set(DOBJ_EARG, "request target longer than %zu KiB",
			DOBJ_MSG_URL_MAX >> 10);
	}
	if (target_len == 1 && target[0] == '*')
		return refuse(status, 501, "a request for %s (the server itself) is not implemented "
			"by dobj dev", "*", 1);
	if (target_len == 0 || (target[0] != '/' && !scheme_len(target, target_len))) {
		if (memchr(target, '/', target_len) == NULL && memchr(target, ':', target_len))
			return refuse(status, 501, "authority-form target %s (a tunnel) is not "
				"implemented by dobj dev", target, target_len);
		return refuse(status, 400, "invalid request target: %s", target, target_len);
	}
	/* No fragment either: it is never sent (RFC 9112 3.2). */
	for (i = 0; i < target_len; i++)
		if (!target_char((unsigned char)target[i]) || target[i] == '#')
			return refuse(status, 400, "invalid request target: %s", target, target_len);
	if (!canonical) {
		m_copy = malloc(method_len + 1);
		if (!m_copy)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		memcpy(m_copy, method, method_len);
		m_copy[method_len] = 0;
	}
	m = calloc(1, sizeof(*m));
	if (!m || !(m->url = malloc(target_len + 1)) ||
	    !(m->method = canonical ? strdup(canonical) : m_copy)) {
		if (!canonical)
			free(m_copy);
		dobj_msg_free(m);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	memcpy(m->url, target, target_len);
	m->url[target_len] = 0;
	*out = m;
	return DOBJ_OK;
}

static int all_digits(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return 0;
	return 1;
}

/* Is the last coding of a Transfer-Encoding value "chunked"? */
static int ends_chunked(const char *te)
{
	const char *last = strrchr(te, ',');
	size_t n;

	last = last ? last + 1 : te;
	while (*last == ' ' || *last == '\t')
		last++;
	n = strlen(last);
	while (n && (last[n - 1] == ' ' || last[n - 1] == '\t'))
		n--;
	return n == 7 && strncasecmp(last, "chunked", 7) == 0;
}

int dobj_msg_wire_finish(dobj_msg *m, const char *default_host, int *status)
{
	const char *host = NULL, *cl, *te;
	size_t i, head, sl;
	char *url;
	int rc;

	*status = 0;
	head = strlen(m->method) + strlen(m->url) + 12;
	for (i = 0; i < m->nheaders; i++)
		head += strlen(m->header_names[i]) + strlen(m->header_values[i]) + 4;
	if (head > DOBJ_MSG_HEAD_MAX) {
		*status = 431;
		return dobj_error_set(DOBJ_EARG, "request head (request line and headers) larger "
			"than %zu KiB", DOBJ_MSG_HEAD_MAX >> 10);
	}
	cl = dobj_msg_header(m, "content-length");
	te = dobj_msg_header(m, "transfer-encoding");
	if (cl && !all_digits(cl))
		return refuse(status, 400, "invalid Content-Length: %s (one length, digits only)",
			cl, strlen(cl));
	if (cl && (strlen(cl) > 12 || strtoull(cl, NULL, 10) > DOBJ_MSG_BODY_MAX)) {
		/* Declared too large: refused before a byte of it is read. */
		*status = 413;
		return dobj_msg_body_check(SIZE_MAX);
	}
	if (cl && te) {
		*status = 400;
		return dobj_error_set(DOBJ_EARG,
			"a request with both Content-Length and Transfer-Encoding is refused");
	}
	if (te && !ends_chunked(te))
		return refuse(status, 400, "invalid Transfer-Encoding: %s (the last coding must "
			"be chunked)", te, strlen(te));
	sl = scheme_len(m->url, strlen(m->url));
	if (sl) {
		/* Absolute-form: the target's authority is the host (RFC 9112 3.2.2). */
		const char *a = m->url + sl;
		size_t alen = strcspn(a, "/?#");
		if ((rc = dobj_msg_host_check(a, alen)) < 0) {
			*status = 400;
			return rc;
		}
		if (a[alen] != '/' && a[alen] != '?' && a[alen] != 0)
			return refuse(status, 400, "invalid request target: %s", m->url, strlen(m->url));
		if (a[alen] == 0 || a[alen] == '?') {
			/* "http://h" and "http://h?q": the path is "/". */
			size_t n = strlen(m->url) + 2;
			if (!(url = malloc(n)))
				return dobj_error_set(DOBJ_ENOMEM, "out of memory");
			snprintf(url, n, "%.*s/%s", (int)(sl + alen), m->url, a + alen);
			free(m->url);
			m->url = url;
		}
		/* The scheme in lower case, as a URL parser gives it. */
		for (i = 0; i < sl; i++)
			m->url[i] = (char)tolower((unsigned char)m->url[i]);
		return DOBJ_OK;
	}
	host = dobj_msg_header(m, "host");
	if (host && (rc = dobj_msg_host_check(host, strlen(host))) < 0) {
		*status = 400;
		return rc;
	}
	if (!host)
		host = default_host ? default_host : "localhost";
	{
		size_t n = 7 + strlen(host) + strlen(m->url) + 1;
		if (!(url = malloc(n)))
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		snprintf(url, n, "http://%s%s", host, m->url);
	}
	free(m->url);
	m->url = url;
	return DOBJ_OK;
}
