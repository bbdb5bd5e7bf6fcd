/* A tiny test harness: each test is a function; CHECK failures are counted
 * and reported with file and line, and the binary exits non-zero. */
#ifndef DOBJ_TEST_CHECK_H
#define DOBJ_TEST_CHECK_H
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;
/* The row of a table a loop checks (-1: none): failure lines name it. */
static int check_case = -1;

static inline const char *check_case_tag(void)
{
	static char tag[32];
	if (check_case < 0)
		return "";
	snprintf(tag, sizeof(tag), " [case %d]", check_case);
	return tag;
}

#define CHECK(cond) do { check_count++; if (!(cond)) { check_failures++; \
	fprintf(stderr, "%s:%d:%s CHECK failed: %s\n", __FILE__, __LINE__, check_case_tag(), \
	#cond); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); check_count++; \
	if (_a != _b) { check_failures++; fprintf(stderr, "%s:%d:%s %s == %lld, expected %lld\n", \
	__FILE__, __LINE__, check_case_tag(), #a, _a, _b); } } while (0)
#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); check_count++; \
	if (!_a || strcmp(_a, _b) != 0) { check_failures++; fprintf(stderr, \
	"%s:%d:%s %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, check_case_tag(), #a, \
	_a ? _a : "(null)", _b); } } while (0)

#define RUN(test) do { int _f = check_failures; test(); \
	printf("%s %s\n", check_failures == _f ? "ok  " : "FAIL", #test); } while (0)
#define DONE() (printf("%d checks, %d failed\n", check_count, check_failures), check_failures != 0)

#endif
