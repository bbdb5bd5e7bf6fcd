/* The Fetch rules for headers, methods and bodies (dobj_msg_*), as workerd
 * applies them: the one copy both bindings use. */
#include <stdlib.h>
#include <string.h>

#include "dobj.h"
#include "cases.h"

static void test_header_names_are_tokens(void)
{
	static const str_case names[] = {
		STR_CASE("X-Custom_1!#$%&'*+.^`|~", DOBJ_OK, NULL),
		STR_CASE("", DOBJ_ETYPE, "Invalid header name."),
		STR_CASE("bad name", DOBJ_ETYPE, NULL),
		STR_CASE("a:b", DOBJ_ETYPE, NULL),
		STR_CASE("a\0b", DOBJ_ETYPE, NULL),
		STR_CASE("caf\xc3\xa9", DOBJ_ETYPE, NULL),
		STR_CASE("(x)", DOBJ_ETYPE, NULL),
	};

	check_str_cases(dobj_msg_header_name_check, names, N_CASES(names));
}

static void test_header_values_are_normalized_or_refused(void)
{
	size_t start = 99, len = 99;

	CHECK_EQ_INT(dobj_msg_header_value_check(" \t a b \r\n", 9, &start, &len), DOBJ_OK);
	CHECK(start == 3 && len == 3);
	CHECK_EQ_INT(dobj_msg_header_value_check("", 0, &start, &len), DOBJ_OK);
	CHECK(len == 0);
	CHECK_EQ_INT(dobj_msg_header_value_check("\xff\x80", 2, &start, &len), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_header_value_check("a\r\nb", 4, &start, &len), DOBJ_ETYPE);
	CHECK_STR(dobj_error_last(), "Invalid header value.");
	CHECK_EQ_INT(dobj_msg_header_value_check("a\nb", 3, &start, &len), DOBJ_ETYPE);
	CHECK_EQ_INT(dobj_msg_header_value_check("a\0b", 3, &start, &len), DOBJ_ETYPE);
}

/* set-cookie stays a list (getSetCookie()); other repeats join with ", ". */
static void test_set_cookie_is_never_joined(void)
{
	dobj_msg *m = dobj_msg_new_response(200, NULL, 0);

	CHECK(dobj_msg_header_is_list("Set-Cookie"));
	CHECK(!dobj_msg_header_is_list("cookie"));
	CHECK_EQ_INT(dobj_msg_add_header(m, "Set-Cookie", "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT"), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_add_header(m, "X-A", " 1 "), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_add_header(m, "set-cookie", "b=2"), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_add_header(m, "x-a", "2"), DOBJ_OK);
	CHECK_EQ_INT((int)m->nheaders, 3);
	CHECK_STR(m->header_names[0], "set-cookie");
	CHECK_STR(m->header_values[0], "a=1; Expires=Wed, 21 Oct 2026 07:28:00 GMT");
	CHECK_STR(m->header_names[2], "set-cookie");
	CHECK_STR(m->header_values[2], "b=2");
	CHECK_STR(dobj_msg_header(m, "X-A"), "1, 2");
	/* set replaces every entry of the name */
	CHECK_EQ_INT(dobj_msg_set_header(m, "SET-COOKIE", "c=3"), DOBJ_OK);
	CHECK_EQ_INT((int)m->nheaders, 2);
	CHECK_STR(dobj_msg_header(m, "set-cookie"), "c=3");
	CHECK_STR(m->header_names[1], "x-a");
	/* the rules apply to every way in */
	CHECK_EQ_INT(dobj_msg_set_header(m, "x b", "v"), DOBJ_ETYPE);
	CHECK_STR(dobj_error_last(), "Invalid header name.");
	CHECK_EQ_INT(dobj_msg_add_header(m, "x-b", "v\r\nInjected: 1"), DOBJ_ETYPE);
	CHECK_STR(dobj_error_last(), "Invalid header value.");
	CHECK_EQ_INT((int)m->nheaders, 2);
	dobj_msg_free(m);
}

static void test_methods_normalized_as_fetch_says(void)
{
	const char *c = "x";

	CHECK_EQ_INT(dobj_msg_method_check("get", 3, &c), DOBJ_OK);
	CHECK_STR(c, "GET");
	CHECK_EQ_INT(dobj_msg_method_check("Delete", 6, &c), DOBJ_OK);
	CHECK_STR(c, "DELETE");
	CHECK_EQ_INT(dobj_msg_method_check("options", 7, &c), DOBJ_OK);
	CHECK_STR(c, "OPTIONS");
	/* the other methods workerd knows only as written (PATCH is not
	 * upper-cased, as the spec says; workerd then refuses "patch") */
	{
		static const char *const ok[] = { "PATCH", "PURGE", "TRACE", "COPY", "LOCK", "MKCOL",
			"MOVE", "PROPFIND", "PROPPATCH", "SEARCH", "UNLOCK", "ACL", "REPORT",
			"MKACTIVITY", "CHECKOUT", "MERGE", "MSEARCH", "NOTIFY", "SUBSCRIBE",
			"UNSUBSCRIBE", "QUERY" };
		static const char *const bad[] = { "patch", "Patch", "trace", "query", "CONNECT",
			"connect", "TRACK", "LINK", "UNLINK", "M-SEARCH", "PRI", "FOO", "GE T", "" };
		size_t i;
		for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
			c = "x";
			CHECK_EQ_INT(dobj_msg_method_check(ok[i], strlen(ok[i]), &c), DOBJ_OK);
			CHECK(c == NULL);
		}
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			CHECK_EQ_INT(dobj_msg_method_check(bad[i], strlen(bad[i]), &c), DOBJ_ETYPE);
	}
	CHECK_EQ_INT(dobj_msg_method_check("GE T", 4, &c), DOBJ_ETYPE);
	CHECK_STR(dobj_error_last(), "Invalid HTTP method string: GE T");
	CHECK_EQ_INT(dobj_msg_method_check("patch", 5, &c), DOBJ_ETYPE);
	CHECK_STR(dobj_error_last(), "Invalid HTTP method string: patch");
	CHECK_EQ_INT(dobj_msg_method_check(NULL, 0, &c), DOBJ_ETYPE);

	CHECK_EQ_INT(dobj_msg_request_body_check("GET", 0), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_request_body_check("POST", 3), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_request_body_check("HEAD", 1), DOBJ_ETYPE);
	CHECK_STR(dobj_error_last(), "Request with a GET or HEAD method cannot have a body.");
	CHECK_EQ_INT(dobj_msg_request_body_check("GET", 1), DOBJ_ETYPE);
}

static void test_null_body_statuses_and_status_text(void)
{
	static const str_case texts[] = {
		STR_CASE("", DOBJ_OK, NULL),
		STR_CASE("caf\xc3\xa9 \x7f \xe6\x97\xa5", DOBJ_OK, NULL),
		STR_CASE("a\tb", DOBJ_ETYPE, "Invalid statusText"),
		STR_CASE("a\0b", DOBJ_ETYPE, NULL),
		STR_CASE("a\r\nX: y", DOBJ_ETYPE, NULL),
	};

	CHECK_EQ_INT(dobj_msg_response_body_check(204, 0), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_response_body_check(200, 5), DOBJ_OK);
	CHECK_EQ_INT(dobj_msg_response_body_check(204, 1), DOBJ_ETYPE);
	CHECK_STR(dobj_error_last(),
		"Response with null body status (101, 204, 205, or 304) cannot have a body.");
	CHECK_EQ_INT(dobj_msg_response_body_check(205, 1), DOBJ_ETYPE);
	CHECK_EQ_INT(dobj_msg_response_body_check(304, 1), DOBJ_ETYPE);
	CHECK_STR(dobj_msg_status_text(200), "OK");
	/* statusText as workerd's Response takes it: no control character */
	check_str_cases(dobj_msg_status_text_check, texts, N_CASES(texts));
	CHECK_STR(dobj_msg_status_text(404), "Not Found");
	CHECK_STR(dobj_msg_status_text(599), "");
	CHECK_STR(DOBJ_MSG_TEXT_TYPE, "text/plain;charset=UTF-8");
}

/* A Host header goes into the URL a server builds: only host[:port]. */
static void test_host_header_is_an_authority(void)
{
	static const char *const good[] = {
		"example.com", "example.com:8787", "127.0.0.1:80", "[::1]:8787", "[::1]",
		"localhost", "a-b.c_d~e", "xn--bcher-kva.example", "%41b.example", "h:",
	};
	static const char *const bad[] = {
		"", "evil.com/x?y", "a b", "a\tb", "a@b", "a#b", "a?b", "a/b", ":80", "[::1",
		"[]", "[::1]x", "[g::1]", "h:8o", "h:123456", "a\r\nb", "%4", "%zz", "h:80/",
	};
	size_t i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK(dobj_msg_host_check(good[i], strlen(good[i])) == DOBJ_OK);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK(dobj_msg_host_check(bad[i], strlen(bad[i])) == DOBJ_EARG);
		CHECK(strstr(dobj_error_last(), "invalid Host header") == dobj_error_last());
	}
	CHECK(dobj_msg_host_check("a\0b", 3) == DOBJ_EARG); /* the length, not the C string */
	CHECK(dobj_msg_host_check(NULL, 0) == DOBJ_EARG);
}

int main(void)
{
	RUN(test_header_names_are_tokens);
	RUN(test_header_values_are_normalized_or_refused);
	RUN(test_set_cookie_is_never_joined);
	RUN(test_methods_normalized_as_fetch_says);
	RUN(test_null_body_statuses_and_status_text);
	RUN(test_host_header_is_an_authority);
	return DONE();
}
