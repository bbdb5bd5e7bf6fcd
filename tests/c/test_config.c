/* The config loader: TOML and JSONC parsing, wrangler's file lookup and
 * environment rules, dev vars, state folders; bad input fails with a
 * message naming the file, the key and the line; a mutation fuzz. */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "check.h"
#include "dobj.h"

static char fixtures[PATH_MAX];

static const char *fx(const char *rel)
{
	static char buf[4][PATH_MAX + 256];
	static int i;
	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", fixtures, rel);
	return buf[i];
}

static dobj_val *parse(const char *text, dobj_config_format f)
{
	dobj_val *v = NULL;
	int rc = dobj_config_parse(&v, text, strlen(text), f, "t");
	if (rc != 0)
		fprintf(stderr, "parse failed: %s\n", dobj_error_last());
	return v;
}

/* Parse must fail with a message containing `want`. */
static void refuse(const char *text, dobj_config_format f, const char *want)
{
	dobj_val *v = NULL;
	int rc = dobj_config_parse(&v, text, strlen(text), f, "t");

	CHECK(rc == DOBJ_EINVALID);
	CHECK(v == NULL);
	if (rc == 0 || !strstr(dobj_error_last(), want)) {
		check_failures++;
		fprintf(stderr, "input %s\n  error %s\n  wanted %s\n", text, rc ? dobj_error_last() : "(parsed)", want);
	}
	dobj_val_free(v);
}

static const char *str_at(const dobj_val *o, const char *k)
{
	size_t len;
	const dobj_val *v = dobj_val_get(o, k, strlen(k));
	return v && dobj_val_type_of(v) == DOBJ_VAL_STRING ? dobj_val_get_string(v, &len) : NULL;
}

static double num_at(const dobj_val *o, const char *k)
{
	const dobj_val *v = dobj_val_get(o, k, strlen(k));
	return v && dobj_val_type_of(v) == DOBJ_VAL_NUMBER ? dobj_val_get_number(v) : -12345;
}

static void test_toml_values(void)
{
	dobj_val *v = parse(
		"# comment\n"
		"name = \"counter\" # trailing\n"
		"'lit key' = 'C:\\path'\n"
		"a.b . c = 1\n"
		"hex = 0xDEAD_beef\noct = 0o755\nbin = 0b1101\nneg = -17\nbig = 9_223_372_036_854_775_807\n"
		"flt = 6.25e-2\nwhole = 1.0\nbigf = 3e9\nminf = -inf\n"
		"ml = \"\"\"\nRoses \\\n   are red\"\"\"\"\n"
		"lit = '''\nraw \\n'''\n"
		"uni = \"\\u00e9\\U0001F600\\t\"\n"
		"inl = { x = 1, y.z = [1, \"two\", { k = true }] }\n"
		"arr = [\n  1, # one\n  2,\n]\n"
		"[t]\nk = false\n"
		"[[aot]]\nn = 1\n[[aot]]\nn = 2\n[aot.sub]\nq = 3\n",
		DOBJ_CONFIG_TOML);
	const dobj_val *x, *aot;
	size_t len;

	CHECK(v != NULL);
	if (!v)
		return;
	CHECK_STR(str_at(v, "name"), "counter");
	CHECK_STR(str_at(v, "lit key"), "C:\\path");
	x = dobj_val_get(dobj_val_get(v, "a", 1), "b", 1);
	CHECK(num_at(x, "c") == 1 && dobj_val_is_integer(dobj_val_get(x, "c", 1)));
	{
		int64_t hex = 0;
		CHECK(dobj_val_to_i64(dobj_val_get(v, "hex", 3), &hex) == 0 && hex == 3735928559);
		CHECK(dobj_config_is_integer(dobj_val_get(v, "hex", 3)));
	}
	CHECK(num_at(v, "oct") == 493 && num_at(v, "bin") == 13 && num_at(v, "neg") == -17);
	{
		int64_t big = 0;
		CHECK(dobj_val_to_i64(dobj_val_get(v, "big", 3), &big) == 0 && big == INT64_MAX);
	}
	CHECK(num_at(v, "flt") == 0.0625);
	CHECK(num_at(v, "whole") == 1.0 && !dobj_config_is_integer(dobj_val_get(v, "whole", 5)));
	CHECK(num_at(v, "bigf") == 3e9 && !dobj_config_is_integer(dobj_val_get(v, "bigf", 4)));
	CHECK(num_at(v, "minf") < -1e308);
	CHECK_STR(str_at(v, "ml"), "Roses are red\"");
	CHECK_STR(str_at(v, "lit"), "raw \\n");
	CHECK_STR(str_at(v, "uni"), "\xC3\xA9\xF0\x9F\x98\x80\t");
	x = dobj_val_get(dobj_val_get(v, "inl", 3), "y", 1);
	x = dobj_val_get(x, "z", 1);
	CHECK(dobj_val_len(x) == 3);
	CHECK_STR(dobj_val_get_string(dobj_val_at(x, 1), &len), "two");
	CHECK(dobj_val_get_bool(dobj_val_get(dobj_val_at(x, 2), "k", 1)) == 1);
	CHECK(dobj_val_len(dobj_val_get(v, "arr", 3)) == 2);
	aot = dobj_val_get(v, "aot", 3);
	CHECK(dobj_val_len(aot) == 2);
	CHECK(num_at(dobj_val_at(aot, 1), "n") == 2);
	CHECK(num_at(dobj_val_get(dobj_val_at(aot, 1), "sub", 3), "q") == 3);
	CHECK(dobj_val_get(dobj_val_at(aot, 0), "sub", 3) == NULL);
	dobj_val_free(v);
}

static void test_toml_refused(void)
{
	const dobj_config_format T = DOBJ_CONFIG_TOML;

	refuse("a = \"x\n", T, "t:1:5: unterminated string");
	refuse("a = 1\nb = 2\nc = \n", T, "t:3:5: expected a value");
	refuse("a = 1\na = 2\n", T, "t:2:1: the key a is defined twice");
	refuse("[a]\n[a]\n", T, "t:2:2: the table a is defined twice");
	refuse("a.b = 1\n[a]\n", T, "the table a is defined twice");
	refuse("a = { b = 1 }\na.c = 2\n", T, "cannot be extended");
	refuse("a = [1]\n[[a]]\n", T, "inline array");
	refuse("[a]\n[[a]]\n", T, "not as an array of tables");
	refuse("a = 1\na.b = 2\n", T, "already a value");
	refuse("d = 1979-05-27\n", T, "t:1:5: dates and times are not supported");
	refuse("t = 07:32:00\n", T, "dates and times are not supported");
	refuse("n = 012\n", T, "invalid number");
	refuse("n = 1__2\n", T, "invalid number");
	refuse("n = 9223372036854775808\n", T, "out of range");
	refuse("n = 0x8000000000000000\n", T, "out of range");
	refuse("s = \"\\x41\"\n", T, "unknown escape");
	refuse("s = \"\\uD800\"\n", T, "not a Unicode scalar value");
	refuse("i = { a = 1, }\n", T, "a key cannot start with '}'");
	refuse("i = { a = 1\n}\n", T, "ends on its line");
	refuse("a = 1 b = 2\n", T, "t:1:7: expected the end of the line");
	refuse("a = \"\x01\"\n", T, "control character");
	refuse("# \x7f\n", T, "control character in a comment");
	refuse("a = \"\xff\"\n", T, "t:1:6: the text is not valid UTF-8");
	refuse("[a\n", T, "expected ']'");
	refuse("a = [1, 2\n", T, "unterminated array");
	refuse("\"\"\"k\"\"\" = 1\n", T, "multi-line");
	refuse("x = true1\n", T, "expected a value");
}

static void test_json_values(void)
{
	dobj_val *v = parse(
		"\xEF\xBB\xBF// line comment\n{ /* block */ \"a\": [1, 2.5, -0, 1e2, true, false, null,],\n"
		"  \"s\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\", \"dup\": 1, \"dup\": 2,\n"
		"  \"o\": {}, \"big\": 12345678901234567890, }\n",
		DOBJ_CONFIG_JSONC);
	const dobj_val *a;
	size_t len;

	CHECK(v != NULL);
	if (!v)
		return;
	a = dobj_val_get(v, "a", 1);
	CHECK(dobj_val_len(a) == 7);
	CHECK(dobj_val_is_integer(dobj_val_at(a, 0)));
	CHECK(dobj_val_get_number(dobj_val_at(a, 1)) == 2.5);
	CHECK(dobj_val_get_number(dobj_val_at(a, 3)) == 100 && !dobj_val_is_integer(dobj_val_at(a, 3)));
	CHECK(dobj_val_type_of(dobj_val_at(a, 6)) == DOBJ_VAL_NULL);
	CHECK_STR(dobj_val_get_string(dobj_val_get(v, "s", 1), &len), "\"\\/\b\f\n\r\t\xC3\xA9\xF0\x9F\x98\x80");
	CHECK(num_at(v, "dup") == 2 && dobj_val_len(v) == 5); /* the last wins, as JSON.parse */
	{
		uint64_t big = 0;
		CHECK(dobj_val_to_u64(dobj_val_get(v, "big", 3), &big) == 0 && big == UINT64_C(12345678901234567890));
		CHECK(dobj_config_is_integer(dobj_val_get(v, "big", 3)));
	}
	dobj_val_free(v);
}

static void test_json_refused(void)
{
	const dobj_config_format J = DOBJ_CONFIG_JSONC;

	refuse("{\n  \"a\": 1\n  \"b\": 2\n}", J, "t:3:3: expected ',' or '}'");
	refuse("{\"a\": 'x'}", J, "double quotes");
	refuse("[1, 2", J, "t:1:1: unterminated array");
	refuse("{\"a\": 1", J, "unterminated object");
	refuse("/* never closed", J, "unterminated /* comment");
	refuse("[01]", J, "expected ',' or ']'");
	refuse("[\"\\ud800\"]", J, "lone surrogate");
	refuse("[\"a\nb\"]", J, "control character");
	refuse("{} {}", J, "unexpected text after the value");
	refuse("[,]", J, "expected a value");
	refuse("", J, "t:1:1: expected a value");
}

static void test_depth_is_bounded(void)
{
	static char buf[200001];
	dobj_val *v = NULL;
	size_t i;

	for (i = 0; i < 100000; i++)
		buf[i] = '[';
	buf[i] = '\0';
	CHECK(dobj_config_parse(&v, buf, strlen(buf), DOBJ_CONFIG_JSONC, "deep") == DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "nested deeper than 64") != NULL);
	memcpy(buf, "a = ", 4);
	CHECK(dobj_config_parse(&v, buf, strlen(buf), DOBJ_CONFIG_TOML, "deep") == DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "nested deeper than 64") != NULL);
	/* A dotted key of 1000 parts, and inline tables 1000 deep. */
	buf[0] = '\0';
	for (i = 0; i < 1000; i++)
		strcat(buf, "a.");
	strcat(buf, "a = 1\n");
	CHECK(dobj_config_parse(&v, buf, strlen(buf), DOBJ_CONFIG_TOML, "deep") == DOBJ_EINVALID);
	buf[0] = '\0';
	for (i = 0; i < 1000; i++)
		strcat(buf, "a = {");
	CHECK(dobj_config_parse(&v, buf, strlen(buf), DOBJ_CONFIG_TOML, "deep") == DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "nested deeper than 64") != NULL);
	/* 63 levels are fine. */
	buf[0] = '\0';
	for (i = 0; i < 60; i++)
		strcat(buf, "[");
	for (i = 0; i < 60; i++)
		strcat(buf, "]");
	CHECK(dobj_config_parse(&v, buf, strlen(buf), DOBJ_CONFIG_JSONC, "ok") == 0);
	dobj_val_free(v);
	v = NULL;
	CHECK(dobj_config_parse(&v, "x", DOBJ_CONFIG_MAX_BYTES + 1, DOBJ_CONFIG_JSONC, "huge") == DOBJ_EARG);
}

static void test_dotenv(void)
{
	const char *text =
		"# comment\r\n"
		"PLAIN=value with spaces   # a comment\n"
		"export EXPORTED=yes\n"
		"  SPACED =  around  \n"
		"SINGLE='it''s # not a comment'\n"
		"DOUBLE=\"line1\\nline2\"\n"
		"BACK=`tick`\n"
		"MULTI=\"first\nsecond\"\n"
		"EMPTY=\n"
		"COLON: value\n"
		"not an assignment\n"
		"HASH=a#b\n"
		"PLAIN=overridden\n";
	dobj_val *v = NULL;

	CHECK(dobj_config_parse_dotenv(&v, text, strlen(text), ".dev.vars") == 0);
	if (!v)
		return;
	CHECK_STR(str_at(v, "PLAIN"), "overridden");
	CHECK_STR(str_at(v, "EXPORTED"), "yes");
	CHECK_STR(str_at(v, "SPACED"), "around");
	CHECK_STR(str_at(v, "DOUBLE"), "line1\nline2");
	CHECK_STR(str_at(v, "BACK"), "tick");
	CHECK_STR(str_at(v, "MULTI"), "first\nsecond");
	CHECK_STR(str_at(v, "EMPTY"), "");
	CHECK_STR(str_at(v, "COLON"), "value");
	CHECK_STR(str_at(v, "HASH"), "a");
	CHECK(dobj_val_get(v, "not", 3) == NULL);
	dobj_val_free(v);
}

/* ---------------------------------------------------------------- load */

static dobj_config *load(const char *rel, const char *env, const char *persist)
{
	dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
	dobj_config *c = NULL;

	o.path = rel ? fx(rel) : NULL;
	o.env = env;
	o.persist_to = persist;
	if (dobj_config_load(&c, &o) != 0)
		fprintf(stderr, "load %s failed: %s\n", rel, dobj_error_last());
	return c;
}

static void check_project(const char *folder, const char *file)
{
	char want[PATH_MAX + 256];
	dobj_config *c = load(folder, "", NULL);
	size_t len;

	CHECK(c != NULL);
	if (!c)
		return;
	snprintf(want, sizeof(want), "%s/%s", fx(folder), file);
	CHECK_STR(c->path, want);
	CHECK_STR(c->dir, fx(folder));
	CHECK(c->env == NULL);
	CHECK_STR(c->name, "counter");
	snprintf(want, sizeof(want), "%s/src/entry.py", fx(folder));
	CHECK_STR(c->main, want);
	CHECK_STR(c->compatibility_date, "2024-10-22");
	CHECK(c->compatibility_flags_len == 1 && strcmp(c->compatibility_flags[0], "python_workers") == 0);
	CHECK_STR(str_at(c->vars, "GREETING"), "from dev vars");
	CHECK_STR(str_at(c->vars, "SECRET"), "top-secret");
	CHECK(num_at(c->vars, "LIMIT") == 10);
	CHECK(dobj_val_type_of(dobj_val_get(c->vars, "FEATURES", 8)) == DOBJ_VAL_OBJECT);
	snprintf(want, sizeof(want), "%s/.dev.vars", fx(folder));
	CHECK_STR(c->dev_vars_path, want);
	CHECK(c->bindings_len == 2);
	if (c->bindings_len == 2) {
		CHECK_STR(c->bindings[0].binding, "COUNTER");
		CHECK_STR(c->bindings[0].class_name, "Counter");
		CHECK_STR(c->bindings[0].unique_key, "counter-Counter");
		snprintf(want, sizeof(want), "%s/.wrangler/state/v3/do/counter-Counter", fx(folder));
		CHECK_STR(c->bindings[0].storage_dir, want);
		CHECK(c->bindings[0].sqlite == 1);
		CHECK_STR(c->bindings[1].unique_key, "counter-ChatRoom");
		CHECK(c->bindings[1].sqlite == 0); /* renamed from a new_classes class */
	}
	snprintf(want, sizeof(want), "%s/.wrangler/state/v3/do", fx(folder));
	CHECK_STR(c->state_dir, want);
	CHECK(dobj_val_len(c->migrations) == 3);
	{
		const dobj_val *m = dobj_val_at(c->migrations, 2);
		CHECK_STR(str_at(m, "tag"), "v3");
		CHECK(dobj_val_len(dobj_val_get(m, "new_classes", 11)) == 0);
		CHECK_STR(str_at(dobj_val_at(dobj_val_get(m, "renamed_classes", 15), 0), "to"), "ChatRoom");
		CHECK_STR(dobj_val_get_string(dobj_val_at(dobj_val_get(m, "deleted_classes", 15), 0), &len), "Old");
	}
	CHECK(c->warnings_len == 0);
	dobj_config_free(c);

	/* staging: inherits name/main/compat/migrations; own vars and bindings;
	 * .dev.vars.staging instead of .dev.vars. */
	c = load(folder, "staging", NULL);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_STR(c->env, "staging");
	CHECK_STR(c->name, "counter-staging");
	snprintf(want, sizeof(want), "%s/src/entry.py", fx(folder));
	CHECK_STR(c->main, want);
	CHECK_STR(c->compatibility_date, "2024-10-22");
	CHECK(dobj_val_len(c->migrations) == 3);
	CHECK_STR(str_at(c->vars, "GREETING"), "hi from staging");
	CHECK_STR(str_at(c->vars, "SECRET"), "staging-secret");
	CHECK(dobj_val_get(c->vars, "LIMIT", 5) == NULL);
	CHECK(c->bindings_len == 1);
	if (c->bindings_len == 1)
		CHECK_STR(c->bindings[0].unique_key, "counter-staging-Counter");
	CHECK(c->warnings_len == 0);
	dobj_config_free(c);

	/* production: its own name and main; no vars, no durable_objects,
	 * each with wrangler's warning. */
	c = load(folder, "production", "/tmp/dobj-persist/");
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_STR(c->name, "counter-prod");
	snprintf(want, sizeof(want), "%s/src/prod.py", fx(folder));
	CHECK_STR(c->main, want);
	CHECK(c->bindings_len == 0);
	CHECK(dobj_val_len(c->vars) == 2); /* SECRET and GREETING from .dev.vars */
	CHECK_STR(c->state_dir, "/tmp/dobj-persist/v3/do");
	CHECK(c->warnings_len == 2);
	if (c->warnings_len == 2) {
		CHECK_STR(c->warnings[0], "\"vars\" exists at the top level, but not on \"env.production\".\n"
			"This is not what you probably want, since \"vars\" is not inherited by environments.\n"
			"Please add \"vars\" to \"env.production\".");
		CHECK(strstr(c->warnings[1], "\"durable_objects\" exists at the top level, but not on "
			"\"env.production\"") == c->warnings[1]);
	}
	dobj_config_free(c);
}

static void test_projects(void)
{
	check_project("project_toml", "wrangler.toml");
	check_project("project_jsonc", "wrangler.jsonc");
	check_project("project_json", "wrangler.json");
}

static void test_env_from_environment(void)
{
	dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
	dobj_config *c = NULL;

	o.path = fx("project_toml");
	setenv("CLOUDFLARE_ENV", "staging", 1);
	CHECK(dobj_config_load(&c, &o) == 0);
	CHECK(c && c->env && strcmp(c->env, "staging") == 0);
	dobj_config_free(c);
	o.env = ""; /* an argument wins over the variable */
	CHECK(dobj_config_load(&c, &o) == 0);
	CHECK(c && c->env == NULL);
	dobj_config_free(c);
	unsetenv("CLOUDFLARE_ENV");
	o.env = "nope";
	CHECK(dobj_config_load(&c, &o) == DOBJ_EARG);
	CHECK(strstr(dobj_error_last(), "No environment found in configuration with name \"nope\"") != NULL);
	CHECK(strstr(dobj_error_last(), "[\"staging\",\"production\"]") != NULL);
}

static void test_file_lookup(void)
{
	dobj_config *c;
	char cwd[PATH_MAX];

	c = load("both", NULL, NULL); /* wrangler.json wins over wrangler.toml */
	CHECK(c && strcmp(c->name, "from-json") == 0);
	dobj_config_free(c);
	/* Each name from the folder upwards, json first: the json two levels
	 * up wins over the toml one level up, as in wrangler. */
	c = load("nested/sub/deeper", NULL, NULL);
	CHECK(c && strcmp(c->name, "nested-json") == 0);
	dobj_config_free(c);
	/* A file given by path; NULL path = the current folder. */
	c = load("nested/sub/wrangler.toml", NULL, NULL);
	CHECK(c && strcmp(c->name, "nested-sub") == 0);
	dobj_config_free(c);
	CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
	CHECK(chdir(fx("nested/sub")) == 0);
	c = load(NULL, NULL, "state");
	CHECK(c && strcmp(c->name, "nested-json") == 0);
	if (c) {
		char want[PATH_MAX + 256];
		snprintf(want, sizeof(want), "%s/state/v3/do", fx("nested/sub"));
		CHECK_STR(c->state_dir, want); /* persist_to is relative to the current folder */
	}
	dobj_config_free(c);
	CHECK(chdir("/") == 0);
	c = NULL;
	CHECK(dobj_config_load(&c, NULL) == DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "no wrangler.json, wrangler.jsonc or wrangler.toml in / or a folder above it");
	CHECK(chdir(cwd) == 0);
	c = load("no/such/folder", NULL, NULL);
	CHECK(c == NULL && strstr(dobj_error_last(), "no/such/folder: no such file or folder"));
}

static void test_dotenv_project(void)
{
	dobj_config *c = load("dotenv", NULL, NULL);

	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_STR(str_at(c->vars, "A"), "from .env");
	CHECK_STR(str_at(c->vars, "B"), "from .env.local");
	CHECK_STR(str_at(c->vars, "C"), "from config");
	CHECK(c->warnings_len == 0);
	dobj_config_free(c);
	c = load("dotenv", "staging", NULL);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_STR(str_at(c->vars, "A"), "from .env.staging");
	CHECK_STR(str_at(c->vars, "B"), "from .env.local");
	CHECK(dobj_val_get(c->vars, "C", 1) == NULL);
	dobj_config_free(c);
}

static void test_no_name_and_missing_migration(void)
{
	dobj_config *c = load("noname", NULL, NULL);

	CHECK(c != NULL);
	if (!c)
		return;
	CHECK(c->name == NULL);
	CHECK_STR(c->worker_name, "worker");
	CHECK(c->bindings_len == 2);
	if (c->bindings_len == 2) {
		CHECK_STR(c->bindings[0].unique_key, "worker-Alpha");
		CHECK_STR(c->bindings[1].unique_key, "worker-Beta");
	}
	CHECK(c->warnings_len == 1);
	if (c->warnings_len == 1)
		CHECK(strstr(c->warnings[0], "In your wrangler.toml file, you have configured `durable_objects` "
			"exported by this Worker (Beta), but no `migrations` for them.") == c->warnings[0]);
	dobj_config_free(c);
	/* An environment a config without environments lacks: wrangler warns
	 * and uses the top level (bindings included). */
	c = load("noname", "dev", NULL);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK(c->bindings_len == 2);
	CHECK(c->warnings_len == 2);
	if (c->warnings_len == 2)
		CHECK(strstr(c->warnings[0], "No environment found in configuration with name \"dev\".") == c->warnings[0]);
	dobj_config_free(c);
}

static void test_bad_files(void)
{
	static const struct { const char *file, *want, *env; } cases[] = {
		{ "bad/syntax.toml", "bad/syntax.toml:3:22: unterminated string", NULL },
		{ "bad/syntax.jsonc", "bad/syntax.jsonc:3:3: expected ',' or '}'", NULL },
		{ "bad/script_name.toml", "durable_objects.bindings[0].script_name is not supported (binding \"REMOTE\"", NULL },
		{ "bad/environment.jsonc", "durable_objects.bindings[1].environment is not supported (binding \"ENVD\"", NULL },
		{ "bad/env_binding.toml", "env.staging.durable_objects.bindings[0].script_name is not supported (binding \"S\"", "staging" },
		{ "bad/types.toml", "bad/types.toml: vars must be a table, not string", NULL },
		{ "bad/class_name.toml", "durable_objects.bindings[0].class_name is required (binding \"NOCLASS\")", NULL },
		{ "bad/date.toml", "bad/date.toml:2:22: dates and times are not supported", NULL },
		{ "bad/dup.toml", "durable_objects.bindings[1].name \"X\" is bound twice", NULL },
		{ "bad/migration_tag.toml", "migrations[0].tag is required", NULL },
		{ "bad/root_array.json", "the configuration must be an object, not array", NULL },
		{ "bad/config.yaml", "a config file's name ends in .toml, .json or .jsonc", NULL },
		{ "bad/table_twice.toml", "bad/table_twice.toml:4:2: the table a is defined twice", NULL },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
		dobj_config *c = NULL;
		int rc;
		o.path = fx(cases[i].file);
		o.env = cases[i].env;
		rc = dobj_config_load(&c, &o);
		CHECK(rc < 0 && c == NULL);
		if (rc == 0 || !strstr(dobj_error_last(), cases[i].want) || !strstr(dobj_error_last(), cases[i].file)) {
			check_failures++;
			fprintf(stderr, "%s: got %s\n  wanted %s\n", cases[i].file, rc ? dobj_error_last() : "(loaded)",
				cases[i].want);
		}
		dobj_config_free(c);
	}
}

/* --------------------------------------------------------------- fuzz */

static uint64_t rng = 0x9E3779B97F4A7C15u;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *p;
	if (!f)
		return NULL;
	p = malloc(1 << 16);
	*len = fread(p, 1, (1 << 16) - 1, f);
	fclose(f);
	return p;
}

/* Mutated configs through the whole loader: values of every type where the
 * rules expect another must fail with a message, never crash. */
static void test_loader_fuzz(void)
{
	static const char *seeds[] = { "project_toml/wrangler.toml", "project_jsonc/wrangler.jsonc",
		"noname/wrangler.toml" };
	static const char *const swaps[] = { "1", "true", "[]", "{}", "\"s\"", "[1, {}]", "{ a = 1 }",
		"{\"a\": null}", "null", "\"\"", "\"a/b\"", "\"..\"" };
	static const char *const envs[] = { "", "staging", "production" };
	char dir[] = "/tmp/dobj-config-fuzz-XXXXXX";
	int round, loaded = 0, refused = 0;
	size_t s;

	if (!mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	for (s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
		size_t len;
		char *seed = slurp(fx(seeds[s]), &len);
		const char *ext = strrchr(seeds[s], '.');
		char path[PATH_MAX + 64];
		snprintf(path, sizeof(path), "%s/wrangler%s", dir, ext);
		for (round = 0; seed && round < 1500; round++) {
			/* Replace the value after a random '=' or ':' with another
			 * type's value (up to the end of the line or a ','). */
			char buf[1 << 16];
			size_t at = next() % len, n = 0, e;
			FILE *f;
			while (at < len && seed[at] != '=' && seed[at] != ':')
				at++;
			if (at >= len)
				continue;
			memcpy(buf, seed, at + 1);
			n = at + 1;
			n += (size_t)sprintf(buf + n, " %s", swaps[next() % (sizeof(swaps) / sizeof(swaps[0]))]);
			for (e = at + 1; e < len && seed[e] != '\n' && seed[e] != ','; e++)
				;
			memcpy(buf + n, seed + e, len - e);
			n += len - e;
			f = fopen(path, "wb");
			CHECK(f && fwrite(buf, 1, n, f) == n);
			if (f)
				fclose(f);
			{
				dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
				dobj_config *c = NULL;
				int rc;
				o.path = path;
				o.env = envs[next() % 3];
				rc = dobj_config_load(&c, &o);
				if (rc == 0) {
					loaded++;
					CHECK(c && c->vars && c->migrations && c->state_dir);
				} else {
					refused++;
					CHECK(c == NULL);
					CHECK(rc == DOBJ_EINVALID || rc == DOBJ_EARG);
					CHECK(strstr(dobj_error_last(), path) != NULL);
				}
				dobj_config_free(c);
			}
		}
		remove(path);
		free(seed);
	}
	rmdir(dir);
	printf("  loader fuzz: %d configs loaded, %d refused with a message naming the file\n", loaded, refused);
}

static void test_mutation_fuzz(void)
{
	static const char *seeds[] = { "project_toml/wrangler.toml", "project_jsonc/wrangler.jsonc",
		"project_json/wrangler.json", "dotenv/wrangler.toml", "project_toml/.dev.vars" };
	static const char special[] = "[]{}=.,\"'#\n\r\\ \t:0-_xe+ulU\x7f\xc3\xa9";
	int round, ok = 0, total = 0;
	size_t s;

	for (s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
		size_t len;
		char *seed = slurp(fx(seeds[s]), &len), *buf;
		if (!seed) {
			CHECK(0);
			continue;
		}
		buf = malloc(len + 64);
		for (round = 0; round < 6000; round++) {
			size_t n = len, k, muts = 1 + next() % 4;
			dobj_val *v = NULL;
			int rc, f;
			memcpy(buf, seed, len);
			for (k = 0; k < muts; k++) {
				size_t at = n ? next() % n : 0;
				switch (next() % 4) {
				case 0: buf[at] = special[next() % (sizeof(special) - 1)]; break;
				case 1: buf[at] = (char)next(); break;
				case 2: if (n < len + 60) { memmove(buf + at + 1, buf + at, n - at); buf[at] = special[next() % (sizeof(special) - 1)]; n++; } break;
				case 3: n = at; break;
				}
			}
			for (f = 0; f < 3; f++) {
				v = NULL;
				rc = f == 2 ? dobj_config_parse_dotenv(&v, buf, n, "fuzz") :
					dobj_config_parse(&v, buf, n, f == 0 ? DOBJ_CONFIG_TOML : DOBJ_CONFIG_JSONC, "fuzz");
				total++;
				if (rc == 0) {
					ok++;
					CHECK(v != NULL);
				} else if (rc != DOBJ_EINVALID) {
					check_failures++;
					fprintf(stderr, "fuzz: rc %d %s\n", rc, dobj_error_last());
				}
				dobj_val_free(v);
			}
		}
		free(buf);
		free(seed);
	}
	printf("  fuzz: %d parses of mutated configs, %d parsed, all others refused cleanly\n", total, ok);
}

/* renamed_classes: the class keeps its objects' IDs (the ID key of its first
 * name) and its folder moves once, from whichever earlier name's folder
 * exists; ambiguity or a folder in use moves nothing. */
static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static int is_dir(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static void test_renamed_classes(void)
{
	char root[] = "/tmp/dobj-rename-XXXXXX", path[PATH_MAX + 128], st[PATH_MAX + 64];
	dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
	dobj_config *c = NULL;
	int fd;

	CHECK(mkdtemp(root) != NULL);
	snprintf(path, sizeof(path), "%s/wrangler.toml", root);
	write_file(path,
		"name = \"w\"\n"
		"[[durable_objects.bindings]]\nname = \"SCORE\"\nclass_name = \"Score\"\n"
		"[[durable_objects.bindings]]\nname = \"PLAIN\"\nclass_name = \"Plain\"\n"
		"[[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = [\"Counter\", \"Plain\"]\n"
		"[[migrations]]\ntag = \"v2\"\nrenamed_classes = [{ from = \"Counter\", to = \"Tally\" }]\n"
		"[[migrations]]\ntag = \"v3\"\nrenamed_classes = [{ from = \"Tally\", to = \"Score\" }]\n");
	o.path = root;
	o.env = "";
	CHECK(dobj_config_load(&c, &o) == 0);
	if (!c)
		return;
	CHECK(c->bindings_len == 2);
	CHECK_STR(c->bindings[0].unique_key, "w-Score");
	CHECK_STR(c->bindings[0].id_key, "w-Counter");
	CHECK(c->bindings[0].sqlite == 1);
	CHECK(c->bindings[0].former_dirs_len == 2);
	snprintf(st, sizeof(st), "%s/.wrangler/state/v3/do", root);
	if (c->bindings[0].former_dirs_len == 2) {
		snprintf(path, sizeof(path), "%s/w-Tally", st);
		CHECK_STR(c->bindings[0].former_dirs[0], path);
		snprintf(path, sizeof(path), "%s/w-Counter", st);
		CHECK_STR(c->bindings[0].former_dirs[1], path);
	}
	CHECK_STR(c->bindings[1].id_key, "w-Plain");
	CHECK(c->bindings[1].former_dirs_len == 0);

	/* Nothing stored yet: nothing to move. */
	CHECK(dobj_config_move_renamed(c) == 0);
	/* The first name's folder moves to the current name's, with its files. */
	snprintf(path, sizeof(path), "%s/.wrangler", root); CHECK(mkdir(path, 0700) == 0);
	snprintf(path, sizeof(path), "%s/.wrangler/state", root); CHECK(mkdir(path, 0700) == 0);
	snprintf(path, sizeof(path), "%s/.wrangler/state/v3", root); CHECK(mkdir(path, 0700) == 0);
	CHECK(mkdir(st, 0700) == 0);
	snprintf(path, sizeof(path), "%s/w-Counter", st); CHECK(mkdir(path, 0700) == 0);
	snprintf(path, sizeof(path), "%s/w-Counter/abc.sqlite", st); write_file(path, "data");
	/* Held by another open file (as another process would): refused. */
	snprintf(path, sizeof(path), "%s/w-Counter", st);
	fd = open(path, O_RDONLY | O_DIRECTORY);
	CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0);
	CHECK(dobj_config_move_renamed(c) == DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "another process uses it") != NULL);
	close(fd);
	CHECK(dobj_config_move_renamed(c) == 0);
	snprintf(path, sizeof(path), "%s/w-Score/abc.sqlite", st);
	CHECK(access(path, F_OK) == 0);
	snprintf(path, sizeof(path), "%s/w-Counter", st);
	CHECK(!is_dir(path));
	/* Again: done already. */
	CHECK(dobj_config_move_renamed(c) == 0);
	/* An earlier name's folder beside the current one: the user decides. */
	snprintf(path, sizeof(path), "%s/w-Tally", st); CHECK(mkdir(path, 0700) == 0);
	CHECK(dobj_config_move_renamed(c) == DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "both its folder") != NULL);
	snprintf(path, sizeof(path), "%s/w-Counter", st); CHECK(mkdir(path, 0700) == 0);
	CHECK(dobj_config_move_renamed(c) == DOBJ_ESTATE);
	CHECK(strstr(dobj_error_last(), "two of its earlier names") != NULL);
	snprintf(path, sizeof(path), "%s/w-Score/abc.sqlite", st);
	CHECK(access(path, F_OK) == 0); /* nothing moved */
	dobj_config_free(c);

	/* Renaming onto a class that exists is a config error naming the key. */
	snprintf(path, sizeof(path), "%s/wrangler.toml", root);
	write_file(path,
		"name = \"w\"\n"
		"[[migrations]]\ntag = \"v1\"\nnew_classes = [\"A\", \"B\"]\n"
		"[[migrations]]\ntag = \"v2\"\nrenamed_classes = [{ from = \"A\", to = \"B\" }]\n");
	c = NULL;
	CHECK(dobj_config_load(&c, &o) == DOBJ_EINVALID);
	CHECK(strstr(dobj_error_last(), "migrations[1].renamed_classes[0]: class \"B\" already exists") != NULL);
	dobj_config_free(c);
	snprintf(path, sizeof(path), "rm -rf '%s'", root);
	CHECK(system(path) == 0);
}

/* Hostile renames: a class renamed back to an earlier name (A -> B -> A) or
 * to itself starts again and again (its folder is its current one, not an
 * earlier name's); a former folder that is a symlink is moved as a link,
 * never the folder it points to (which may be anywhere). */
static void test_renamed_classes_hostile(void)
{
	char root[] = "/tmp/dobj-rename2-XXXXXX", path[PATH_MAX * 2 + 256], st[PATH_MAX + 64],
		outside[PATH_MAX + 128];
	dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
	dobj_config *c = NULL;
	struct stat sb;

	CHECK(mkdtemp(root) != NULL);
	snprintf(path, sizeof(path), "%s/wrangler.toml", root);
	write_file(path,
		"name = \"w\"\n"
		"[[durable_objects.bindings]]\nname = \"A\"\nclass_name = \"A\"\n"
		"[[durable_objects.bindings]]\nname = \"S\"\nclass_name = \"S\"\n"
		"[[migrations]]\ntag = \"v1\"\nnew_sqlite_classes = [\"A\", \"S\"]\n"
		"[[migrations]]\ntag = \"v2\"\nrenamed_classes = [{ from = \"A\", to = \"B\" }, "
		"{ from = \"S\", to = \"S\" }]\n"
		"[[migrations]]\ntag = \"v3\"\nrenamed_classes = [{ from = \"B\", to = \"A\" }]\n"
		"[[migrations]]\ntag = \"v4\"\nrenamed_classes = [{ from = \"A\", to = \"B\" }]\n"
		"[[migrations]]\ntag = \"v5\"\nrenamed_classes = [{ from = \"B\", to = \"A\" }]\n");
	o.path = root;
	o.env = "";
	CHECK(dobj_config_load(&c, &o) == 0);
	if (!c)
		return;
	snprintf(st, sizeof(st), "%s/.wrangler/state/v3/do", root);
	snprintf(path, sizeof(path), "mkdir -p '%s/w-A' '%s/w-S'", st, st);
	CHECK(system(path) == 0);
	/* The folders are the classes' current ones: nothing to move, no error. */
	CHECK(dobj_config_move_renamed(c) == 0);
	CHECK(c->bindings[0].former_dirs_len == 1); /* w-B, once */
	CHECK(c->bindings[1].former_dirs_len == 0);
	/* From the earlier name B: moved back, then again nothing to do. */
	snprintf(path, sizeof(path), "%s/w-A", st);
	snprintf(outside, sizeof(outside), "%s/w-B", st);
	CHECK(rename(path, outside) == 0);
	CHECK(dobj_config_move_renamed(c) == 0);
	CHECK(is_dir(path) && !is_dir(outside));
	CHECK(dobj_config_move_renamed(c) == 0);
	CHECK(rmdir(path) == 0);
	/* w-B a symlink to a folder outside the state: the link moves. */
	snprintf(outside, sizeof(outside), "%s/elsewhere", root);
	CHECK(mkdir(outside, 0700) == 0);
	snprintf(path, sizeof(path), "%s/w-B", st);
	CHECK(symlink(outside, path) == 0);
	CHECK(dobj_config_move_renamed(c) == 0);
	CHECK(is_dir(outside)); /* still where it was */
	snprintf(path, sizeof(path), "%s/w-A", st);
	CHECK(lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode));
	dobj_config_free(c);
	snprintf(path, sizeof(path), "rm -rf '%s'", root);
	CHECK(system(path) == 0);
}

int main(void)
{
	char src[PATH_MAX];

	/* The fixtures are found from this file's path (CMake compiles it by
	 * its absolute path). */
	snprintf(src, sizeof(src), "%s", __FILE__);
	snprintf(fixtures, sizeof(fixtures), "%s/../config", dirname(src));
	if (!realpath(fixtures, src)) {
		fprintf(stderr, "fixtures not found at %s\n", fixtures);
		return 1;
	}
	snprintf(fixtures, sizeof(fixtures), "%s", src);
	RUN(test_toml_values);
	RUN(test_toml_refused);
	RUN(test_json_values);
	RUN(test_json_refused);
	RUN(test_depth_is_bounded);
	RUN(test_dotenv);
	RUN(test_projects);
	RUN(test_env_from_environment);
	RUN(test_file_lookup);
	RUN(test_dotenv_project);
	RUN(test_no_name_and_missing_migration);
	RUN(test_bad_files);
	RUN(test_renamed_classes);
	RUN(test_renamed_classes_hostile);
	RUN(test_loader_fuzz);
	RUN(test_mutation_fuzz);
	return DONE();
}
