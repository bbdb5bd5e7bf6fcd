/* dobj_msg_wire_begin / _finish: the one table of what a request read off the
 * wire may be, and the status every server of dobj answers when it may not. */
#include <stdlib.h>
#include <string.h>

#include "dobj.h"
#include "check.h"

/* Begin and finish one request: its status (0: served) and, when served,
 * its method and URL through *method / *url (the caller frees). */
static int wire(const char *method, const char *target, const char *const *headers,
	char **out_method, char **out_url)
{
	dobj_msg *m = NULL;
	int status = -1;
	size_t i;

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
	*out_method = strdup(m->method);
	*out_url = strdup(m->url);
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
	char *method, *url;

	CHECK_EQ_INT(wire("POST", "/", two_cl, &method, &url), 400);
	CHECK(strstr(dobj_error_last(), "Content-Length") != NULL);
	CHECK_EQ_INT(wire("POST", "/", same_cl, &method, &url), 400);
	CHECK_EQ_INT(wire("POST", "/", cl_te, &method, &url), 400);
	CHECK_EQ_INT(wire("POST", "/", te_gzip, &method, &url), 400);
	CHECK_EQ_INT(wire("POST", "/", plus_cl, &method, &url), 400);
	CHECK_EQ_INT(wire("GET", "/", two_hosts, &method, &url), 400);
	CHECK_EQ_INT(wire("GET", "/", bad_name, &method, &url), 400);
	CHECK_EQ_INT(wire("POST", "/", huge, &method, &url), 413);
	CHECK_STR(dobj_error_last(), "request body larger than 100 MiB");
	CHECK_EQ_INT(wire("POST", "/", huger, &method, &url), 413);
	CHECK_EQ_INT(wire("POST", "/", limit, &method, &url), 0);
	free(method);
	free(url);
	CHECK_EQ_INT(wire("POST", "/", te_ok, &method, &url), 0);
	free(method);
	free(url);
	CHECK_EQ_INT(wire("CONNECT", "example.com:443", NULL, &method, &url), 501);
	CHECK_EQ_INT(wire("FROB", "/", NULL, &method, &url), 501);
	CHECK(strstr(dobj_error_last(), "FROB") != NULL);
	CHECK_EQ_INT(wire("OPTIONS", "*", NULL, &method, &url), 501);
	CHECK_EQ_INT(wire("GET", "example.com:443", NULL, &method, &url), 501);
	CHECK_EQ_INT(wire("GET", "x", NULL, &method, &url), 400);
	CHECK_EQ_INT(wire("GET", "/a b", NULL, &method, &url), 400);
	CHECK_EQ_INT(wire("GET", "", NULL, &method, &url), 400);
	CHECK_EQ_INT(wire("GE T", "/", NULL, &method, &url), 400);
	CHECK_EQ_INT(wire("GET", "http://evil/x#y", NULL, &method, &url), 400);
	CHECK_EQ_INT(wire("GET", "http://ev il/", NULL, &method, &url), 400);
}

static void test_limits_are_414_and_431(void)
{
	size_t n = DOBJ_MSG_URL_MAX + 1;
	char *target = malloc(n + 1), *big = malloc(DOBJ_MSG_HEAD_MAX + 1);
	const char *headers[] = { "x-big", big, NULL };
	char *method, *url;

	memset(target, 'a', n);
	target[0] = '/';
	target[n] = 0;
	CHECK_EQ_INT(wire("GET", target, NULL, &method, &url), 414);
	target[n - 1] = 0; /* exactly the limit */
	CHECK_EQ_INT(wire("GET", target, NULL, &method, &url), 0);
	free(method);
	free(url);
	memset(big, 'b', DOBJ_MSG_HEAD_MAX);
	big[DOBJ_MSG_HEAD_MAX] = 0;
	CHECK_EQ_INT(wire("GET", "/", headers, &method, &url), 431);
	big[DOBJ_MSG_HEAD_MAX - 200] = 0;
	CHECK_EQ_INT(wire("GET", "/", headers, &method, &url), 0);
	free(method);
	free(url);
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
	CHECK_EQ_INT(wire("patch", "/p", NULL, &method, &url), 501); /* only six are normalized */
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
