/*
 * The SQL API's guard (core/src/sql_guard.c: SQLite's authorizer and the
 * statement-text check of ALTER TABLE ... RENAME TO) under a seeded,
 * time-bounded fuzz (tests/c/fuzz.h): statements that name dobj's own
 * tables (_cf_KV, _cf_METADATA) every way SQLite lets a name be written
 * (quotes, brackets, backticks, schema prefixes, case, comments between
 * tokens), as tables, views, triggers, indexes and rename targets, then
 * mutated.  Whatever runs, the KV pairs written through the KV API are
 * still there and the schema of the _cf_ names is what the core made: a
 * statement that changed them found a way around the guard.
 */
#include "fuzz.h"
#include "testhost.h"

#define FUZZ_INPUT_MAX 2048

static unsigned char input[FUZZ_INPUT_MAX + 1];
static unsigned long ran, refused;

/* Every schema row of a reserved name (one that starts with _cf_, in any
 * case, or its table's does), as text: what must not change. */
static void cf_schema(dobj_storage *st, char *out, size_t cap)
{
	static const char q[] = "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE "
		"name LIKE '\\_cf\\_%' ESCAPE '\\' OR tbl_name LIKE '\\_cf\\_%' ESCAPE '\\' OR "
		"name LIKE 'sqlite\\_autoindex\\_\\_cf\\_%' ESCAPE '\\' ORDER BY name";
	dobj_cursor *c = NULL;
	size_t n = 0, r, col;

	out[0] = 0;
	if (dobj_sql_exec(st, q, strlen(q), NULL, 0, &c) != DOBJ_OK) {
		snprintf(out, cap, "(cannot read the schema: %s)", dobj_error_last());
		return;
	}
	for (r = 0; r < dobj_cursor_rows(c); r++)
		for (col = 0; col < 4; col++) {
			const dobj_sql_value *v = dobj_cursor_cell(c, r, col);
			n += (size_t)snprintf(out + n, cap - n, "%.*s|", v->type == DOBJ_SQL_TEXT ?
				(int)v->len : 0, v->type == DOBJ_SQL_TEXT ? (const char *)v->p : "");
			if (n >= cap)
				n = cap - 1;
		}
	dobj_cursor_free(c);
}

/* The KV pairs and the alarm the object keeps through the KV API. */
static int kv_intact(dobj_storage *st)
{
	static const char *const keys[] = { "k1", "k2", "" };
	size_t i;

	for (i = 0; i < 3; i++) {
		const void *v;
		size_t len;
		char want[8];
		snprintf(want, sizeof(want), "v%zu", i);
		if (dobj_kv_get(st, keys[i], strlen(keys[i]), &v, &len) != 1 || len != strlen(want) ||
		    memcmp(v, want, len) != 0)
			return 0;
	}
	return 1;
}

/* ------------------------------------------------------- the statements */

static const char *const names[] = {
	"_cf_KV", "\"_cf_KV\"", "[_CF_kv]", "`_cf_kv`", "main._cf_KV", "\"main\".\"_cf_KV\"",
	"main.\"_Cf_KV\"", "'_cf_KV'", "_cf_METADATA", "\"_cf_METADATA\"", "_cf_new", "\"_cf_\"",
	"main /* c */ . /* d */ _cf_KV", "main\n.\n[_cf_KV]", "sqlite_autoindex__cf_KV_1",
	"\"_c\"\"f_KV\"", "t", "u", "main.t", "\"t\"", "temp.t", "v", "\"\xc3\xa9\"", "_CF_kv2",
};

static const char *const forms[] = {
	"CREATE TABLE %s (key TEXT PRIMARY KEY, value BLOB)",
	"CREATE TABLE IF NOT EXISTS %s (a)",
	"CREATE TABLE %s AS SELECT * FROM %s",
	"ALTER TABLE %s RENAME TO %s",
	"ALTER TABLE %s RENAME COLUMN value TO %s",
	"ALTER TABLE %s ADD COLUMN %s",
	"ALTER TABLE %s DROP COLUMN value",
	"DROP TABLE %s",
	"DROP TABLE IF EXISTS %s",
	"INSERT INTO %s VALUES ('k1', x'00')",
	"INSERT OR REPLACE INTO %s SELECT * FROM %s",
	"REPLACE INTO %s (key, value) VALUES ('k2', 'x')",
	"UPDATE %s SET value = x'ff'",
	"DELETE FROM %s",
	"WITH x AS (SELECT 1) DELETE FROM %s",
	"SELECT * FROM %s",
	"CREATE VIEW %s AS SELECT * FROM %s",
	"CREATE TRIGGER %s AFTER INSERT ON %s BEGIN DELETE FROM _cf_KV; END",
	"CREATE TRIGGER tr BEFORE DELETE ON %s BEGIN UPDATE %s SET value = 1; END",
	"CREATE INDEX %s ON %s (value)",
	"CREATE UNIQUE INDEX IF NOT EXISTS i ON %s (value)",
	"DROP INDEX %s",
	"DROP VIEW %s",
	"DROP TRIGGER %s",
	"CREATE TEMP TABLE %s (a)",
	"CREATE VIRTUAL TABLE %s USING fts5(a)",
	"PRAGMA %s",
	"PRAGMA table_info(%s)",
	"ATTACH ':memory:' AS %s",
	"VACUUM INTO %s",
	"SELECT * FROM pragma_table_info(%s)",
	"INSERT INTO t SELECT * FROM %s",
	"UPDATE sqlite_schema SET sql = 'x' WHERE name = %s",
	"REINDEX %s",
	"ANALYZE %s",
	"ALTER TABLE %s RENAME %s",
};

static const char *const extra[] = {
	"CREATE TABLE t (key TEXT PRIMARY KEY, value BLOB)", "CREATE TABLE u (a, b)",
	"INSERT INTO t VALUES ('a', 1)", "CREATE VIEW v AS SELECT * FROM t",
	"PRAGMA writable_schema = 1", "PRAGMA writable_schema = ON", "PRAGMA foreign_keys",
	"BEGIN", "SAVEPOINT s", "RELEASE s", "COMMIT",
	"CREATE TRIGGER t2 AFTER INSERT ON t BEGIN INSERT INTO _cf_KV VALUES ('z', 1); END",
};

/* One or more statements (`;`-separated) from the forms and names. */
static size_t statement(char *out, size_t cap)
{
	size_t n = 0, k, count = 1 + fuzz_below(3);

	for (k = 0; k < count && n + 256 < cap; k++) {
		if (fuzz_below(5) == 0) {
			n += (size_t)snprintf(out + n, cap - n, "%s",
				extra[fuzz_below(sizeof(extra) / sizeof(extra[0]))]);
		} else {
			const char *f = forms[fuzz_below(sizeof(forms) / sizeof(forms[0]))];
			const char *a = names[fuzz_below(sizeof(names) / sizeof(names[0]))];
			const char *b = names[fuzz_below(sizeof(names) / sizeof(names[0]))];
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
			n += (size_t)snprintf(out + n, cap - n, f, a, b);
#pragma GCC diagnostic pop
		}
		if (n >= cap)
			n = cap - 1;
		n += (size_t)snprintf(out + n, cap - n, "%s", fuzz_below(2) ? "; " : ";\n-- c\n");
		if (n >= cap)
			n = cap - 1;
	}
	return n;
}

/* ---------------------------------------------------------------- test */

static int sql_step(dobj_task *t, void *data)
{
	static const char *const dict[] = { "_cf_", "_CF_KV", "\"", "[", "]", "`", ".", "main.",
		"temp.", ";", "--", "/*", "*/", " ", "\n", "(", ")", ",", "RENAME TO ", "ALTER TABLE ",
		"TABLE ", "VIEW ", "TRIGGER ", "INDEX ", "IF NOT EXISTS ", "AS ", "\"\"", "\x00", NULL };
	dobj_storage *st = NULL;
	char before[4096], after[4096];
	int rc;

	(void)data;
	CHECK_EQ_INT(dobj_obj_storage(dobj_task_obj(t), &st), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_put(st, "k1", 2, "v0", 2), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_put(st, "k2", 2, "v1", 2), DOBJ_OK);
	CHECK_EQ_INT(dobj_kv_put(st, "", 0, "v2", 2), DOBJ_OK);
	cf_schema(st, before, sizeof(before));
	fuzz_begin("sql_guard");
	while (st && fuzz_more()) {
		size_t len = statement((char *)input, sizeof(input));
		dobj_cursor *c = NULL;

		if (fz.replay || fuzz_below(2))
			len = fz.replay ? fuzz_next_input(input, FUZZ_INPUT_MAX, NULL, NULL, 0) :
				fuzz_mutate(input, len, FUZZ_INPUT_MAX, dict, NULL, 0);
		input[len] = 0;
		fuzz_input(input, len);
		rc = dobj_sql_exec(st, (const char *)input, len, NULL, 0, &c);
		dobj_cursor_free(c);
		if (rc == DOBJ_OK)
			ran++;
		else
			refused++;
		if (!kv_intact(st)) {
			fuzz_finding("the KV pairs changed");
			break;
		}
		cf_schema(st, after, sizeof(after));
		if (strcmp(before, after) != 0) {
			fuzz_finding("the schema of the _cf_ names changed:\n  was %s\n  now %s", before, after);
			break;
		}
	}
	{
		char what[96];
		snprintf(what, sizeof(what), "%lu ran, %lu refused", ran, refused);
		fuzz_end(what);
	}
	respond(t, 200, "done");
	return DOBJ_OK;
}

static void test_sql_guard(void)
{
	dobj_class k = { 0 };
	dobj_ns *ns;
	dobj_rt *rt;
	dobj_stub *s;

	k.name = "Sql";
	k.flags = DOBJ_CLASS_FETCH;
	k.step = sql_step;
	rt = testhost_storage_rt(NULL, -1, &k, "SQL", NULL, &ns);
	s = testhost_stub(ns, "sql");
	CHECK_STR(fetch(rt, s, "go", NULL), "done");
	dobj_stub_free(s);
	dobj_rt_free(rt);
	CHECK_EQ_INT(live_values, 0);
}

int main(void)
{
	fuzz_init();
	RUN(test_sql_guard);
	fuzz_finish();
	return DONE();
}
