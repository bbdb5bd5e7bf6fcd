/* dobj_msg_wire_begin / _finish: the one table of what a request read off the
 * wire may be, and the status every server of dobj answers when it may not. */
#include <stdlib.h>
#include <string.h>

#include "dobj.h"
#include "check.h"

/* Begin and finish one request: its status (0: served) and, when served,
 * its method and URL through *method / *url (the caller frees), when they
 * are not NULL. */
static int wire(const char *method, const char *target, const char *const *headers,
	char **out_method, char **out_url)
{
	dobj_msg *m = NULL;
	int status = -1;
	size_t i;

	if (out_method)
		*out_method = *out_url = NULL;
	if (dobj_msg_wire_begin(method, strlen(method), target, strlen(target), &m, &status) < 0) {
		CHECK(m == NULL);
		CHECK(status >= 400);
		return status;
	}
	CHECK(status == 0);
	for (i = 0; headers && headers[i]; i += 2)
		if (dobj_msg_add_header(m, headers[i], headers[i + 1]) < 0) {
			dobj_msg_free(m);
			return 400;
		}
	if (dobj_msg_wire_finish(m, "127.0.0.1:8787", &status) < 0) {
		CHECK(status >= 400);
		dobj_msg_free(m);
		return status;
	}
	if (out_method) {
		*out_method = strdup(m->method);
		*out_url = strdup(m->url);
	}
	dobj_msg_free(m);
	return 0;
}

static void test_hostile_requests_get_one_status(void)
{
	static const char *const two_cl[] = { "content-length", "3", "content-length", "5", NULL };
	static const char *const same_cl[] = { "content-length", "3", "content-length", "3", NULL };
	static const char *const cl_te[] = { "content-length", "3", "transfer-encoding", "chunked", NULL };
	static const char *const te_gzip[] = { "transfer-encoding", "gzip", NULL };
	static const char *const te_ok[] = { "transfer-encoding", "gzip, chunked", NULL };
	static const char *const plus_cl[] = { "content-length", "+3", NULL };
	static const char *const two_hosts[] = { "host", "a", "host", "b", NULL };
	static const char *const bad_name[] = { "x@y", "v", NULL };
	static const char *const huge[] = { "content-length", "104857601", NULL };
	static const char *const huger[] = { "content-length", "99999999999999999999999", NULL };
	static const char *const limit[] = { "content-length", "104857600", NULL };
	/* method, request target, headers, status (0: served), in its message */
	static const struct {
		const char *method, *target;
		const char *const *headers;
		int status;
		const char *msg;
	} rows[] = {
		{ "POST", "/", two_cl, 400, "Content-Length" },
		{ "POST", "/", same_cl, 400, NULL },
		{ "POST", "/", cl_te, 400, NULL },
		{ "POST", "/", te_gzip, 400, NULL },
		{ "POST", "/", plus_cl, 400, NULL },
		{ "GET", "/", two_hosts, 400, NULL },
		{ "GET", "/", bad_name, 400, NULL },
		{ "POST", "/", huge, 413, "request body larger than 100 MiB" },
		{ "POST", "/", huger, 413, NULL },
		{ "POST", "/", limit, 0, NULL },
		{ "POST", "/", te_ok, 0, NULL },
		{ "CONNECT", "example.com:443", NULL, 501, NULL },
		{ "FROB", "/", NULL, 501, "FROB" },
		{ "OPTIONS", "*", NULL, 501, NULL },
		{ "GET", "example.com:443", NULL, 501, NULL },
		{ "GET", "x", NULL, 400, NULL },
		{ "GET", "/a b", NULL, 400, NULL },
		{ "GET", "", NULL, 400, NULL },
		{ "GE T", "/", NULL, 400, NULL },
		{ "GET", "http://evil/x#y", NULL, 400, NULL },
		{ "GET", "http://ev il/", NULL, 400, NULL },
	};

	for (check_case = 0; (size_t)check_case < sizeof(rows) / sizeof(rows[0]); check_case++) {
		CHECK_EQ_INT(wire(rows[check_case].method, rows[check_case].target,
			rows[check_case].headers, NULL, NULL), rows[check_case].status);
		if (rows[check_case].msg)
			CHECK(strstr(dobj_error_last(), rows[check_case].msg) != NULL);
	}
	check_case = -1;
}

static void test_limits_are_414_and_431(void)
{
	size_t n = DOBJ_MSG_URL_MAX + 1;
	char *target = malloc(n + 1), *big = malloc(DOBJ_MSG_HEAD_MAX + 1);
	const char *headers[] = { "x-big", big, NULL };

	memset(target, 'a', n);
	target[0] = '/';
	target[n] = 0;
	CHECK_EQ_INT(wire("GET", target, NULL, NULL, NULL), 414);
	target[n - 1] = 0; /* exactly the limit */
	CHECK_EQ_INT(wire("GET", target, NULL, NULL, NULL), 0);
	memset(big, 'b', DOBJ_MSG_HEAD_MAX);
	big[DOBJ_MSG_HEAD_MAX] = 0;
	CHECK_EQ_INT(wire("GET", "/", headers, NULL, NULL), 431);
	big[DOBJ_MSG_HEAD_MAX - 200] = 0;
	CHECK_EQ_INT(wire("GET", "/", headers, NULL, NULL), 0);
	free(target);
	free(big);
}

static void test_methods_are_normalized_and_urls_built(void)
{
	static const char *const host[] = { "host", "example.test:99", NULL };
	char *method, *url;

	CHECK_EQ_INT(wire("get", "/a?b", host, &method, &url), 0);
	CHECK_STR(method, "GET");
	CHECK_STR(url, "http://example.test:99/a?b");
	free(method);
	free(url);
	CHECK_EQ_INT(wire("PATCH", "/p", NULL, &method, &url), 0); /* no Host: the server's */
	CHECK_STR(method, "PATCH");
	CHECK_STR(url, "http://127.0.0.1:8787/p");
	free(method);
	free(url);
	CHECK_EQ_INT(wire("patch", "/p", NULL, NULL, NULL), 501); /* only six are normalized */
	/* absolute-form: its authority, not the Host header */
	CHECK_EQ_INT(wire("GET", "HTTP://other.test:9/echo?x", host, &method, &url), 0);
	CHECK_STR(url, "http://other.test:9/echo?x");
	free(method);
	free(url);
	CHECK_EQ_INT(wire("GET", "http://other.test?q", host, &method, &url), 0);
	CHECK_STR(url, "http://other.test/?q");
	free(method);
	free(url);
}

int main(void)
{
	RUN(test_hostile_requests_get_one_status);
	RUN(test_limits_are_414_and_431);
	RUN(test_methods_are_normalized_and_urls_built);
	return DONE();
}
