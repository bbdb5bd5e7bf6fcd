/* A tiny test harness: each test is a function; CHECK failures are counted
 * and reported with file and line, and the binary exits non-zero. */
#ifndef DOBJ_TEST_CHECK_H
#define DOBJ_TEST_CHECK_H
#include <stdio.h>
#include <string.h>

static int check_failures;
static int check_count;

#define CHECK(cond) do { check_count++; if (!(cond)) { check_failures++; \
	fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } } while (0)
#define CHECK_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); check_count++; \
	if (_a != _b) { check_failures++; fprintf(stderr, "%s:%d: %s == %lld, expected %lld\n", \
	__FILE__, __LINE__, #a, _a, _b); } } while (0)
#define CHECK_STR(a, b) do { const char *_a = (a), *_b = (b); check_count++; \
	if (!_a || strcmp(_a, _b) != 0) { check_failures++; fprintf(stderr, \
	"%s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, _a ? _a : "(null)", _b); } } while (0)

#define RUN(test) do { int _f = check_failures; test(); \
	printf("%s %s\n", check_failures == _f ? "ok  " : "FAIL", #test); } while (0)
#define DONE() (printf("%d checks, %d failed\n", check_count, check_failures), check_failures != 0)

#endif
