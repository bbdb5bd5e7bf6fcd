/* Thread-local "last error" slot, in the style of libgit2's git_error_last. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Thread_local char err_msg[512];
static _Thread_local int err_code;

const char *dobj_error_last(void)
{
	return err_msg;
}

int dobj_error_last_code(void)
{
	return err_code;
}

int dobj_error_set(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err_msg, sizeof(err_msg), fmt, ap);
	va_end(ap);
	err_code = code;
	return code;
}

void dobj__error_clear(void)
{
	err_msg[0] = '\0';
	err_code = DOBJ_OK;
}

char *dobj__strndup(const char *s, size_t len)
{
	char *p;

	if (!s)
		return NULL;
	p = malloc(len + 1);
	if (!p) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}
