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

/* A checked, normalized copy of a header value, to *out. */
static int value_dup(const char *value, char **out)
{
	size_t start, len;
	int rc = dobj_msg_header_value_check(value, strlen(value), &start, &len);
	char *v;

	if (rc < 0)
		return rc;
	v = malloc(len + 1);
	if (!v)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	memcpy(v, value + start, len);
	v[len] = 0;
	*out = v;
	return DOBJ_OK;
}

/* Append a new entry (name lower-cased); takes `v`. */
static int header_push(dobj_msg *m, const char *name, char *v)
{
	size_t i;
	char *n = strdup(name), **pn, **pv;

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

static int header_args_check(const char *name, const char *value)
{
	if (!name || !value)
		return dobj_error_set(DOBJ_EARG, "a header needs a name and a value");
	return dobj_msg_header_name_check(name, strlen(name));
}

int dobj_msg_set_header(dobj_msg *m, const char *name, const char *value)
{
	size_t i, j;
	char *v = NULL;
	int rc, found = 0;

	if ((rc = header_args_check(name, value)) < 0)
		return rc;
	if ((rc = value_dup(value, &v)) < 0)
		return rc;
	for (i = j = 0; i < m->nheaders; i++) {
		if (strcasecmp(m->header_names[i], name) != 0) {
			m->header_names[j] = m->header_names[i];
			m->header_values[j++] = m->header_values[i];
		} else if (!found) {
			free(m->header_values[i]);
			m->header_values[i] = v;
			m->header_names[j] = m->header_names[i];
			m->header_values[j++] = v;
			found = 1;
		} else { /* a later set-cookie: set replaces them all */
			free(m->header_names[i]);
			free(m->header_values[i]);
		}
	}
	m->nheaders = j;
	return found ? DOBJ_OK : header_push(m, name, v);
}

int dobj_msg_add_header(dobj_msg *m, const char *name, const char *value)
{
	size_t i, old_len, len;
	char *v = NULL, *nv;
	int rc;

	if ((rc = header_args_check(name, value)) < 0)
		return rc;
	if ((rc = value_dup(value, &v)) < 0)
		return rc;
	for (i = 0; !dobj_msg_header_is_list(name) && i < m->nheaders; i++) {
		if (strcasecmp(m->header_names[i], name) != 0)
			continue;
		old_len = strlen(m->header_values[i]);
		len = strlen(v);
		nv = realloc(m->header_values[i], old_len + 2 + len + 1);
		if (!nv) {
			free(v);
			return dobj_error_set(DOBJ_ENOMEM, "out of memory");
		}
		memcpy(nv + old_len, ", ", 2);
		memcpy(nv + old_len + 2, v, len + 1);
		m->header_values[i] = nv;
		free(v);
		return DOBJ_OK;
	}
	return header_push(m, name, v);
}

/* RFC 9110 tchar. */
static int is_token_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		(c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_token(const char *s, size_t len)
{
	size_t i;

	if (!s || !len)
		return 0;
	for (i = 0; i < len; i++)
		if (!is_token_char((unsigned char)s[i]))
			return 0;
	return 1;
}

int dobj_msg_header_name_check(const char *name, size_t len)
{
	if (!is_token(name, len))
		return dobj_error_set(DOBJ_ETYPE, "Invalid header name.");
	return DOBJ_OK;
}

static int has_cr_lf_nul(const char *s, size_t len)
{
	return len && (memchr(s, '\0', len) || memchr(s, '\r', len) || memchr(s, '\n', len));
}

static int is_http_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int dobj_msg_header_value_check(const char *value, size_t len, size_t *start, size_t *out_len)
{
	size_t a = 0, b = len;

	if (!value && len)
		return dobj_error_set(DOBJ_ETYPE, "Invalid header value.");
	while (a < b && is_http_ws(value[a]))
		a++;
	while (b > a && is_http_ws(value[b - 1]))
		b--;
	if (has_cr_lf_nul(value + a, b - a))
		return dobj_error_set(DOBJ_ETYPE, "Invalid header value.");
	if (start)
		*start = a;
	if (out_len)
		*out_len = b - a;
	return DOBJ_OK;
}

int dobj_msg_header_is_list(const char *name)
{
	return name && strcasecmp(name, "set-cookie") == 0;
}

int dobj_msg_method_check(const char *method, size_t len, const char **canonical)
{
	/* Fetch upper-cases these six whatever their case... */
	static const char *const normal[] = { "DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT" };
	/* ...and workerd takes only the methods its HTTP library knows, as
	 * written (checked against workerd 2026-11-17: "patch", CONNECT, LINK,
	 * M-SEARCH are refused; PATCH, TRACE, MSEARCH, QUERY are not). */
	static const char *const known[] = { "PATCH", "PURGE", "TRACE", "COPY", "LOCK", "MKCOL",
		"MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "ACL", "REPORT", "MKACTIVITY",
		"CHECKOUT", "MERGE", "MSEARCH", "NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE", "QUERY" };
	size_t i;

	*canonical = NULL;
	for (i = 0; method && i < sizeof(normal) / sizeof(normal[0]); i++)
		if (strlen(normal[i]) == len && strncasecmp(method, normal[i], len) == 0) {
			*canonical = normal[i];
			return DOBJ_OK;
		}
	for (i = 0; method && i < sizeof(known) / sizeof(known[0]); i++)
		if (strlen(known[i]) == len && memcmp(method, known[i], len) == 0)
			return DOBJ_OK;
	return dobj_error_set(DOBJ_ETYPE, "Invalid HTTP method string: %.*s",
		(int)(len > 100 ? 100 : len), method ? method : "");
}

int dobj_msg_request_body_check(const char *method, size_t body_len)
{
	if (body_len && method && (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0))
		return dobj_error_set(DOBJ_ETYPE,
			"Request with a GET or HEAD method cannot have a body.");
	return DOBJ_OK;
}

int dobj_msg_response_body_check(int status, size_t body_len)
{
	if (body_len && (status == 101 || status == 204 || status == 205 || status == 304))
		return dobj_error_set(DOBJ_ETYPE, "Response with null body status (101, 204, 205, "
			"or 304) cannot have a body.");
	return DOBJ_OK;
}

int dobj_msg_status_text_check(const char *text, size_t len)
{
	size_t i;

	/* Checked against workerd 2026-11-17: tab, CR, NUL, 0x01 refused; DEL,
	 * "caf\u00e9" and non-Latin-1 text taken. */
	for (i = 0; i < len; i++)
		if ((unsigned char)text[i] < 0x20)
			return dobj_error_set(DOBJ_ETYPE, "Invalid statusText");
	return DOBJ_OK;
}

/* workerd's defaultStatusText: RFC 7231's phrases and the few it adds. */
const char *dobj_msg_status_text(int status)
{
	static const struct { int status; const char *text; } phrases[] = {
		{ 100, "Continue" }, { 101, "Switching Protocols" }, { 102, "Processing" },
		{ 103, "Early Hints" }, { 200, "OK" }, { 201, "Created" }, { 202, "Accepted" },
		{ 203, "Non-Authoritative Information" }, { 204, "No Content" },
		{ 205, "Reset Content" }, { 206, "Partial Content" }, { 207, "Multi-Status" },
		{ 208, "Already Reported" }, { 226, "IM Used" }, { 300, "Multiple Choices" },
		{ 301, "Moved Permanently" }, { 302, "Found" }, { 303, "See Other" },
		{ 304, "Not Modified" }, { 305, "Use Proxy" }, { 307, "Temporary Redirect" },
		{ 308, "Permanent Redirect" }, { 400, "Bad Request" }, { 401, "Unauthorized" },
		{ 402, "Payment Required" }, { 403, "Forbidden" }, { 404, "Not Found" },
		{ 405, "Method Not Allowed" }, { 406, "Not Acceptable" },
		{ 407, "Proxy Authentication Required" }, { 408, "Request Timeout" },
		{ 409, "Conflict" }, { 410, "Gone" }, { 411, "Length Required" },
		{ 412, "Precondition Failed" }, { 413, "Payload Too Large" },
		{ 414, "URI Too Long" }, { 415, "Unsupported Media Type" },
		{ 416, "Range Not Satisfiable" }, { 417, "Expectation Failed" },
		{ 418, "I'm a teapot" }, { 421, "Misdirected Request" },
		{ 422, "Unprocessable Entity" }, { 423, "Locked" }, { 424, "Failed Dependency" },
		{ 426, "Upgrade Required" }, { 428, "Precondition Required" },
		{ 429, "Too Many Requests" }, { 431, "Request Header Fields Too Large" },
		{ 451, "Unavailable For Legal Reasons" }, { 500, "Internal Server Error" },
		{ 501, "Not Implemented" }, { 502, "Bad Gateway" }, { 503, "Service Unavailable" },
		{ 504, "Gateway Timeout" }, { 505, "HTTP Version Not Supported" },
		{ 506, "Variant Also Negotiates" }, { 507, "Insufficient Storage" },
		{ 508, "Loop Detected" }, { 510, "Not Extended" },
		{ 511, "Network Authentication Required" },
	};
	size_t i;

	for (i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++)
		if (phrases[i].status == status)
			return phrases[i].text;
	return "";
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

int dobj_msg_host_check(const char *host, size_t len)
{
	size_t i = 0, port_at;

	if (!host || len == 0)
		return dobj_error_set(DOBJ_EARG, "invalid Host header: empty");
	if (host[0] == '[') {
		/* An IP literal: hex digits, ':' and '.' (an embedded IPv4), up to ']'. */
		for (i = 1; i < len && host[i] != ']'; i++)
			if (!isxdigit((unsigned char)host[i]) && host[i] != ':' && host[i] != '.')
				goto bad;
		if (i >= len || i == 1)
			goto bad;
		i++;
	} else {
		for (; i < len && host[i] != ':'; i++) {
			unsigned char c = (unsigned char)host[i];
			if (isalnum(c) || strchr("-._~!$&'()*+,;=", c) != NULL) {
				if (c == '\0')
					goto bad;
				continue;
			}
			if (c == '%' && i + 2 < len && isxdigit((unsigned char)host[i + 1]) &&
			    isxdigit((unsigned char)host[i + 2])) {
				i += 2;
				continue;
			}
			goto bad;
		}
		if (i == 0)
			goto bad;
	}
	if (i == len)
		return DOBJ_OK;
	if (host[i] != ':')
		goto bad;
	port_at = ++i;
	for (; i < len; i++)
		if (!isdigit((unsigned char)host[i]))
			goto bad;
	if (len - port_at > 5)
		goto bad;
	return DOBJ_OK;
bad:
	/* Not echoed: the bytes may hold CR, LF or escapes meant for a log. */
	return dobj_error_set(DOBJ_EARG, "invalid Host header (%zu bytes): not host[:port]", len);
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

/* The wire's check: the same character rules as dobj_msg_header_name_check
 * and dobj_msg_header_value_check (no normalizing: what is sent is checked
 * as it is), with a message naming the header for a server's log. */
int dobj_msg_header_check(const char *name, size_t name_len, const char *value, size_t value_len)
{
	if (!name || !name_len)
		return dobj_error_set(DOBJ_EARG, "invalid header name: empty");
	if (!is_token(name, name_len))
		return dobj_error_set(DOBJ_EARG,
			"invalid header name: \"%.*s\" (letters, digits and !#$%%&'*+-.^_`|~ only)",
			(int)(name_len > 100 ? 100 : name_len), name);
	if (value && has_cr_lf_nul(value, value_len))
		return dobj_error_set(DOBJ_EARG,
			"invalid value for header %.*s: it holds a CR, LF or NUL byte",
			(int)(name_len > 100 ? 100 : name_len), name);
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
	dobj_ws_unref(m->web_socket);
	free(m);
}

void dobj_msg_set_web_socket(dobj_msg *m, struct dobj_ws *client)
{
	dobj_ws_ref(client);
	dobj_ws_unref(m->web_socket);
	m->web_socket = client;
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
