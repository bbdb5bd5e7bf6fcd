/* Table-driven checks of the core's string rules (dobj_msg_*_check,
 * dobj_rpc_name_check): a row is a string literal (its length taken from
 * the literal, NUL bytes kept), the code the rule returns for it and the
 * message dobj_error_last() then gives (NULL: not checked).  A failure
 * names its row: "[case N]". */
#ifndef DOBJ_TEST_CASES_H
#define DOBJ_TEST_CASES_H
#include <stddef.h>

#include "dobj.h"
#include "check.h"

typedef struct str_case {
	const char *s;
	size_t len;
	int rc;
	const char *msg;
} str_case;

#define STR_CASE(lit, rc, msg) { (lit), sizeof(lit) - 1, (rc), (msg) }
#define N_CASES(table) (sizeof(table) / sizeof((table)[0]))

static inline void check_str_cases(int (*rule)(const char *, size_t), const str_case *rows, size_t n)
{
	for (check_case = 0; (size_t)check_case < n; check_case++) {
		const str_case *c = &rows[check_case];
		CHECK_EQ_INT(rule(c->s, c->len), c->rc);
		if (c->msg)
			CHECK_STR(dobj_error_last(), c->msg);
	}
	check_case = -1;
}

#endif
