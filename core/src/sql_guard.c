/*
 * What the SQL API may do: SQLite's authorizer, applied to user queries only.
 *
 * Names starting with _cf_ (any case) are reserved for dobj and workerd
 * (_cf_KV, _cf_METADATA): no statement may name one, whatever the action —
 * read, write, create, drop, index, trigger, view, pragma argument — and no
 * statement may run on behalf of a trigger or view with such a name.  The
 * authorizer sees names after SQLite has resolved quoting and schema
 * prefixes, so `"_CF_kv"`, `[_cf_KV]` and `main._cf_KV` are all caught; a
 * view or trigger reaching a reserved table is refused when its statements
 * are compiled (with the view or trigger named in the sixth argument).
 *
 * Like workerd: no transaction statements (the storage API owns them), no
 * ATTACH / DETACH (VACUUM is an ATTACH too: VACUUM INTO would copy the
 * reserved tables to a file), no TEMP objects (a TEMP trigger may sit on a
 * main table), only workerd's virtual table modules, and a short list of
 * read-only pragmas.  One gap the authorizer leaves: ALTER TABLE ... RENAME
 * TO does not pass the new name, so dobj__sql_guard_check_rename reads it
 * from the statement text.
 */
#include <ctype.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

static int reserved(const char *name)
{
	/* SQLite names the index of a reserved table's key after the table. */
	if (name && strncasecmp(name, "sqlite_autoindex_", 17) == 0)
		name += 17;
	return name && strncasecmp(name, "_cf_", 4) == 0;
}

static int deny(dobj__sql_guard *g, const char *fmt, const char *what)
{
	snprintf(g->why, sizeof(g->why), fmt, what ? what : "");
	g->denied = 1;
	return SQLITE_DENY;
}

static const char *const allowed_pragmas[] = {
	"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
	"foreign_key_list", "table_list", "data_version", NULL
};

/* Modules workerd accepts in CREATE VIRTUAL TABLE. */
static const char *const allowed_modules[] = { "fts5", "fts5vocab", "rtree", "rtree_i32", NULL };

static int listed(const char *const *list, const char *s)
{
	for (; s && *list; list++)
		if (strcasecmp(*list, s) == 0)
			return 1;
	return 0;
}

int dobj__sql_authorize(void *arg, int action, const char *a, const char *b, const char *db,
	const char *trigger)
{
	dobj__sql_guard *g = arg;

	(void)db;
	if (!g->active)
		return SQLITE_OK;
	if (reserved(trigger))
		return deny(g, "access through %s is not allowed: names starting with _cf_ are reserved",
			trigger);
	switch (action) {
	case SQLITE_TRANSACTION:
	case SQLITE_SAVEPOINT:
		return deny(g, "%s", "SQL transaction statements (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) "
			"are not allowed: use the storage transaction API (transaction() / "
			"transaction_sync()), which rolls back on errors and works with automatic write "
			"coalescing");
	case SQLITE_ATTACH:
	case SQLITE_DETACH:
		return deny(g, "%s", "ATTACH, DETACH and VACUUM are not allowed");
	case SQLITE_CREATE_TEMP_TABLE:
	case SQLITE_CREATE_TEMP_INDEX:
	case SQLITE_CREATE_TEMP_TRIGGER:
	case SQLITE_CREATE_TEMP_VIEW:
	case SQLITE_DROP_TEMP_TABLE:
	case SQLITE_DROP_TEMP_INDEX:
	case SQLITE_DROP_TEMP_TRIGGER:
	case SQLITE_DROP_TEMP_VIEW:
		return deny(g, "TEMP objects are not allowed (%s)", a);
	case SQLITE_PRAGMA:
		if (!listed(allowed_pragmas, a))
			return deny(g, "PRAGMA %s is not allowed", a);
		break; /* its argument is checked below */
	case SQLITE_CREATE_VTABLE:
	case SQLITE_DROP_VTABLE:
		if (!listed(allowed_modules, b))
			return deny(g, "virtual tables using %s are not allowed (fts5, fts5vocab, rtree and "
				"rtree_i32 are)", b);
		break;
	case SQLITE_ALTER_TABLE:
		/* a is the schema, b the table; the new name of a RENAME is not
		 * given here (dobj__sql_guard_check_rename). */
		g->altered = 1;
		a = NULL;
		break;
	case SQLITE_FUNCTION:
		return SQLITE_OK; /* a is NULL, b the function's name */
	case SQLITE_READ:
	case SQLITE_UPDATE:
		/* Raw pages of every table, and every table's page layout (the
		 * sizes of _cf_KV's rows), when SQLite is built with them: their
		 * eponymous tables need no CREATE VIRTUAL TABLE. */
		if (a && (strcasecmp(a, "sqlite_dbpage") == 0 || strcasecmp(a, "dbstat") == 0))
			return deny(g, "access to %s is not allowed", a);
		b = NULL; /* a column name */
		break;
	default:
		break;
	}
	if (reserved(a))
		return deny(g, "access to %s is not allowed: names starting with _cf_ are reserved", a);
	if (reserved(b))
		return deny(g, "access to %s is not allowed: names starting with _cf_ are reserved", b);
	return SQLITE_OK;
}

/* One SQL token: skips blanks and comments; *len 0 at the end. */
static const char *token(const char *p, const char *end, size_t *len)
{
	for (;;) {
		while (p < end && isspace((unsigned char)*p))
			p++;
		if (end - p >= 2 && p[0] == '-' && p[1] == '-') {
			while (p < end && *p != '\n')
				p++;
		} else if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
			const char *q = p + 2;
			while (q < end && !(end - q >= 2 && q[0] == '*' && q[1] == '/'))
				q++;
			p = q < end ? q + 2 : end;
		} else {
			break;
		}
	}
	if (p >= end) {
		*len = 0;
		return p;
	}
	if (*p == '"' || *p == '\'' || *p == '`' || *p == '[') {
		char close = *p == '[' ? ']' : *p;
		const char *q = p + 1;
		for (; q < end; q++) {
			if (*q != close)
				continue;
			if (close != ']' && q + 1 < end && q[1] == close) {
				q++; /* a doubled quote */
				continue;
			}
			break;
		}
		*len = (size_t)((q < end ? q + 1 : end) - p);
		return p;
	}
	if (isalnum((unsigned char)*p) || *p == '_' || (unsigned char)*p >= 0x80) {
		const char *q = p;
		while (q < end && (isalnum((unsigned char)*q) || *q == '_' || *q == '$' ||
				   (unsigned char)*q >= 0x80))
			q++;
		*len = (size_t)(q - p);
		return p;
	}
	*len = 1;
	return p;
}

static int word(const char *t, size_t len, const char *w)
{
	return len == strlen(w) && strncasecmp(t, w, len) == 0;
}

/* Does the identifier token name something reserved (quotes removed)? */
static int token_reserved(const char *t, size_t len)
{
	char name[5];
	size_t i, n = 0;

	if (len && (*t == '"' || *t == '\'' || *t == '`' || *t == '[')) {
		char close = *t == '[' ? ']' : *t;
		for (i = 1; i < len && n < 4; i++) {
			if (t[i] == close) {
				if (close == ']' || i + 1 >= len || t[i + 1] != close)
					break;
				i++; /* a doubled quote stands for one */
			}
			name[n++] = t[i];
		}
	} else {
		for (i = 0; i < len && n < 4; i++)
			name[n++] = t[i];
	}
	name[n] = '\0';
	return reserved(name);
}

int dobj__sql_guard_check_rename(dobj__sql_guard *g, const char *sql)
{
	const char *p = sql, *end = sql + strlen(sql), *t;
	size_t len;
	int i;

	if (!g->altered)
		return DOBJ_OK;
	g->altered = 0;
	/* ALTER TABLE [schema .] table RENAME TO new-name */
	t = token(p, end, &len);
	if (!word(t, len, "ALTER"))
		return DOBJ_OK;
	t = token(t + len, end, &len);
	if (!word(t, len, "TABLE"))
		return DOBJ_OK;
	t = token(t + len, end, &len); /* schema or table */
	for (i = 0; i < 2; i++) {
		const char *n = token(t + len, end, &len);
		if (len == 1 && *n == '.') {
			t = token(n + len, end, &len); /* the table */
			continue;
		}
		t = n;
		break;
	}
	if (!word(t, len, "RENAME"))
		return DOBJ_OK;
	t = token(t + len, end, &len);
	if (!word(t, len, "TO"))
		return DOBJ_OK; /* RENAME COLUMN: column names are free */
	t = token(t + len, end, &len);
	if (token_reserved(t, len)) {
		snprintf(g->why, sizeof(g->why),
			"renaming a table to %.*s is not allowed: names starting with _cf_ are reserved",
			(int)(len > 64 ? 64 : len), t);
		g->denied = 1;
		return dobj_error_set(DOBJ_EARG, "%s", g->why);
	}
	return DOBJ_OK;
}
