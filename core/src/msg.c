/* dobj_msg: a plain request/response for C classes and C callers. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

int dobj_msg_status_check(long long status)
{
	if (status < 200 || status > 599)
		return dobj_error_set(DOBJ_EARG, DOBJ_MSG_STATUS_RANGE);
	return DOBJ_OK;
}

dobj_msg *dobj_msg_new_request(const char *url, const char *method)
{
	dobj_msg *m = calloc(1, sizeof(*m));

	if (!m)
		goto oom;
	m->url = strdup(url ? url : "");
	m->method = strdup(method ? method : "GET");
	if (!m->url || !m->method)
		goto oom;
	return m;
oom:
	dobj_msg_free(m);
	dobj_error_set(DOBJ_ENOMEM, "out of memory");
	return NULL;
}

dobj_msg *dobj_msg_new_response(int status, const void *body, size_t len)
{
	dobj_msg *m = calloc(1, sizeof(*m));

	if (!m) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	m->status = status;
	if (dobj_msg_set_body(m, body, len) < 0) {
		dobj_msg_free(m);
		return NULL;
	}
	return m;
}

int dobj_msg_set_body(dobj_msg *m, const void *body, size_t len)
{
	unsigned char *p = NULL;

	if (len) {
		if (!body)
			return dobj_error_set(DOBJ_EARG, "body is NULL");
		p = malloc(len);
		if (!p)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		memcpy(p, body, len);
	}
	free(m->body);
	m->body = p;
	m->body_len = len;
	m->body_cap = len;
	return DOBJ_OK;
}

const char *dobj_msg_header(const dobj_msg *m, const char *name)
{
	size_t i;

	for (i = 0; i < m->nheaders; i++)
		if (strcasecmp(m->header_names[i], name) == 0)
			return m->header_values[i];
	return NULL;
}

int dobj_msg_set_header(dobj_msg *m, const char *name, const char *value)
{
	size_t i;
	char *n, *v, **pn, **pv;

	if (!name || !*name || !value)
		return dobj_error_set(DOBJ_EARG, "a header needs a name and a value");
	v = strdup(value);
	if (!v)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	for (i = 0; i < m->nheaders; i++) {
		if (strcasecmp(m->header_names[i], name) == 0) {
			free(m->header_values[i]);
			m->header_values[i] = v;
			return DOBJ_OK;
		}
	}
	n = strdup(name);
	pn = realloc(m->header_names, (m->nheaders + 1) * sizeof(*pn));
	if (pn)
		m->header_names = pn;
	pv = realloc(m->header_values, (m->nheaders + 1) * sizeof(*pv));
	if (pv)
		m->header_values = pv;
	if (!n || !pn || !pv) {
		free(n);
		free(v);
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	}
	for (i = 0; n[i]; i++)
		n[i] = (char)tolower((unsigned char)n[i]);
	m->header_names[m->nheaders] = n;
	m->header_values[m->nheaders] = v;
	m->nheaders++;
	return DOBJ_OK;
}

int dobj_msg_add_header(dobj_msg *m, const char *name, const char *value)
{
	size_t i, old_len, len;
	char *v;

	if (!name || !*name || !value)
		return dobj_error_set(DOBJ_EARG, "a header needs a name and a value");
	for (i = 0; i < m->nheaders; i++) {
		if (strcasecmp(m->header_names[i], name) != 0)
			continue;
		old_len = strlen(m->header_values[i]);
		len = strlen(value);
		v = realloc(m->header_values[i], old_len + 2 + len + 1);
		if (!v)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		memcpy(v + old_len, ", ", 2);
		memcpy(v + old_len + 2, value, len + 1);
		m->header_values[i] = v;
		return DOBJ_OK;
	}
	return dobj_msg_set_header(m, name, value);
}

int dobj_msg_append_body(dobj_msg *m, const void *data, size_t len)
{
	unsigned char *p;
	size_t cap;

	if (!len)
		return DOBJ_OK;
	if (!data)
		return dobj_error_set(DOBJ_EARG, "body is NULL");
	if (m->body_len > DOBJ_MSG_BODY_MAX || len > DOBJ_MSG_BODY_MAX - m->body_len)
		return dobj_msg_body_check(SIZE_MAX);
	/* Grow to the next power of two, so that a chunked upload costs O(n)
	 * copies in all. */
	if (m->body_len + len > m->body_cap || !m->body) {
		for (cap = 64; cap < m->body_len + len; cap <<= 1)
			;
		p = realloc(m->body, cap);
		if (!p)
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		m->body = p;
		m->body_cap = cap;
	}
	memcpy(m->body + m->body_len, data, len);
	m->body_len += len;
	return DOBJ_OK;
}

int dobj_msg_body_check(size_t len)
{
	if (len > DOBJ_MSG_BODY_MAX)
		return dobj_error_set(DOBJ_EARG, "request body larger than %zu MiB",
			DOBJ_MSG_BODY_MAX >> 20);
	return DOBJ_OK;
}

int dobj_msg_header_is_framing(const char *name)
{
	static const char *const framing[] = {
		"content-length", "transfer-encoding", "connection", "keep-alive",
		"upgrade", "te", "trailer", "proxy-connection",
	};
	size_t i;

	for (i = 0; name && i < sizeof(framing) / sizeof(framing[0]); i++)
		if (strcasecmp(name, framing[i]) == 0)
			return 1;
	return 0;
}

int dobj_msg_header_check(const char *name, size_t name_len, const char *value, size_t value_len)
{
	size_t i;

	if (!name || !name_len)
		return dobj_error_set(DOBJ_EARG, "invalid header name: empty");
	for (i = 0; i < name_len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      (c && strchr("!#$%&'*+-.^_`|~", c))))
			return dobj_error_set(DOBJ_EARG,
				"invalid header name: \"%.*s\" (letters, digits and !#$%%&'*+-.^_`|~ only)",
				(int)(name_len > 100 ? 100 : name_len), name);
	}
	for (i = 0; value && i < value_len; i++) {
		if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
			return dobj_error_set(DOBJ_EARG,
				"invalid value for header %.*s: it holds a CR, LF or NUL byte",
				(int)(name_len > 100 ? 100 : name_len), name);
	}
	return DOBJ_OK;
}

void dobj_msg_free(dobj_msg *m)
{
	size_t i;

	if (!m)
		return;
	for (i = 0; i < m->nheaders; i++) {
		free(m->header_names[i]);
		free(m->header_values[i]);
	}
	free(m->header_names);
	free(m->header_values);
	free(m->url);
	free(m->method);
	free(m->body);
	free(m);
}

static void msg_release(void *data, void *value)
{
	DOBJ__UNUSED(data);
	dobj_msg_free(value);
}

dobj_host dobj_host_msg(void)
{
	dobj_host h = { NULL, NULL, msg_release, NULL, NULL };
	return h;
}
