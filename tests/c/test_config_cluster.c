/* A project's cluster settings (config_cluster.c): the `[dobj.cluster]`
 * table of wrangler.toml / wrangler.jsonc, the environment variables, the
 * caller's values, their precedence (caller > environment > file, one
 * setting at a time), environments, and bad values refused with their
 * source named.  No database is needed: the loader only checks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "dobj.h"

static char dir[64];

static void write_file(const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	CHECK(f != NULL);
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
}

static void clear_environ(void)
{
	unsetenv("DOBJ_CLUSTER_URL");
	unsetenv("DOBJ_NODE_ADDR");
	unsetenv("DOBJ_CLUSTER_TTL");
	unsetenv("DOBJ_CLUSTER_GRACE");
	unsetenv("DOBJ_CLUSTER_TIMEOUT");
	unsetenv("DOBJ_CLUSTER_SNAPSHOT_BYTES");
	unsetenv("DOBJ_CLUSTER_SNAPSHOT_PART_BYTES");
	unsetenv("CLOUDFLARE_ENV");
}

static dobj_config *load_with(const char *env, const dobj_cluster_opts *caller)
{
	dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
	dobj_config *c = NULL;
	int rc;

	o.path = dir;
	o.env = env;
	if (caller)
		o.cluster = *caller;
	rc = dobj_config_load(&c, &o);
	if (rc != 0)
		fprintf(stderr, "load failed: %s\n", dobj_error_last());
	return c;
}

/* Loading must fail with DOBJ_EINVALID and a message containing `want`. */
static void refused(const char *env, const dobj_cluster_opts *caller, const char *want)
{
	dobj_config_opts o = DOBJ_CONFIG_OPTS_INIT;
	dobj_config *c = NULL;
	int rc;

	o.path = dir;
	o.env = env;
	if (caller)
		o.cluster = *caller;
	rc = dobj_config_load(&c, &o);
	CHECK_EQ_INT(rc, DOBJ_EINVALID);
	CHECK(c == NULL);
	if (rc == 0 || !strstr(dobj_error_last(), want)) {
		check_failures++;
		fprintf(stderr, "error: %s\n  wanted: %s\n", rc ? dobj_error_last() : "(loaded)", want);
	}
	dobj_config_free(c);
}

static const char *TOML =
	"name = \"w\"\nmain = \"m.py\"\n"
	"[dobj.cluster]\nurl = \"postgresql://file@127.0.0.1:1/f\"\nnode_addr = \"10.0.0.1:7001\"\n"
	"ttl = 6\ngrace = 0.5\ntimeout = 3\n"
	"[env.staging]\n[env.staging.dobj.cluster]\nurl = \"postgresql://staging@127.0.0.1:1/s\"\n"
	"[env.plain]\n";

static void test_file_section(void)
{
	dobj_config *c;

	clear_environ();
	write_file("wrangler.toml", TOML);
	c = load_with("", NULL);
	CHECK(c && c->cluster);
	if (c && c->cluster) {
		CHECK_STR(c->cluster->url, "postgresql://file@127.0.0.1:1/f");
		CHECK_STR(c->cluster->node_addr, "10.0.0.1:7001");
		CHECK(c->cluster->ttl_ms == 6000);
		CHECK(c->cluster->grace_ms == 500);
		CHECK(c->cluster->timeout_ms == 3000);
		CHECK(dobj_cluster_opts_check(c->cluster) == DOBJ_OK);
	}
	dobj_config_free(c);
	/* An environment's table replaces the top level's (as `main` does). */
	c = load_with("staging", NULL);
	CHECK(c && c->cluster);
	if (c && c->cluster) {
		CHECK_STR(c->cluster->url, "postgresql://staging@127.0.0.1:1/s");
		/* No address from any source: a project serves its objects. */
		CHECK_STR(c->cluster->node_addr, "127.0.0.1:0");
		CHECK(c->cluster->ttl_ms == 0); /* the default */
	}
	dobj_config_free(c);
	/* An environment without one inherits the top level's. */
	c = load_with("plain", NULL);
	CHECK(c && c->cluster && strcmp(c->cluster->url, "postgresql://file@127.0.0.1:1/f") == 0);
	dobj_config_free(c);
	/* No table, no variable, no flag: not a node. */
	write_file("wrangler.toml", "name = \"w\"\n");
	c = load_with("", NULL);
	CHECK(c && c->cluster == NULL);
	dobj_config_free(c);
}

static void test_jsonc_and_grace_zero(void)
{
	char path[256];
	dobj_config *c;

	clear_environ();
	snprintf(path, sizeof(path), "%s/wrangler.toml", dir);
	unlink(path);
	write_file("wrangler.jsonc", "{ // a comment\n \"name\": \"w\",\n"
		" \"dobj\": { \"cluster\": { \"url\": \"host=127.0.0.1 port=1 dbname=x\", \"grace\": 0, } } }\n");
	c = load_with("", NULL);
	CHECK(c && c->cluster);
	if (c && c->cluster) {
		CHECK_STR(c->cluster->url, "host=127.0.0.1 port=1 dbname=x");
		CHECK(c->cluster->grace_ms < 0); /* 0 s: no grace (the C field's 0 is the default) */
	}
	dobj_config_free(c);
	snprintf(path, sizeof(path), "%s/wrangler.jsonc", dir);
	unlink(path);
}

static void test_precedence(void)
{
	dobj_cluster_opts flag = DOBJ_CLUSTER_OPTS_INIT;
	dobj_config *c;

	clear_environ();
	write_file("wrangler.toml", TOML);
	/* The environment over the file, one setting at a time. */
	setenv("DOBJ_CLUSTER_URL", "postgresql://env@127.0.0.1:1/e", 1);
	setenv("DOBJ_CLUSTER_TTL", " 2.5 ", 1);
	setenv("DOBJ_CLUSTER_GRACE", "", 1); /* empty: unset */
	c = load_with("", NULL);
	CHECK(c && c->cluster);
	if (c && c->cluster) {
		CHECK_STR(c->cluster->url, "postgresql://env@127.0.0.1:1/e");
		CHECK_STR(c->cluster->node_addr, "10.0.0.1:7001"); /* the file's */
		CHECK(c->cluster->ttl_ms == 2500);
		CHECK(c->cluster->grace_ms == 500);                 /* the file's */
	}
	dobj_config_free(c);
	/* The caller (a flag) over both. */
	flag.url = "postgresql://flag@127.0.0.1:1/x";
	flag.node_addr = "127.0.0.1:9";
	setenv("DOBJ_NODE_ADDR", "127.0.0.1:8", 1);
	c = load_with("", &flag);
	CHECK(c && c->cluster);
	if (c && c->cluster) {
		CHECK_STR(c->cluster->url, "postgresql://flag@127.0.0.1:1/x");
		CHECK_STR(c->cluster->node_addr, "127.0.0.1:9");
		CHECK(c->cluster->ttl_ms == 2500);
	}
	dobj_config_free(c);
	/* The environment alone makes a node of a project without a table. */
	write_file("wrangler.toml", "name = \"w\"\n");
	c = load_with("", NULL);
	CHECK(c && c->cluster && strcmp(c->cluster->url, "postgresql://env@127.0.0.1:1/e") == 0 &&
		strcmp(c->cluster->node_addr, "127.0.0.1:8") == 0);
	dobj_config_free(c);
	clear_environ();
}

static void test_bad_settings(void)
{
	dobj_cluster_opts flag = DOBJ_CLUSTER_OPTS_INIT;

	clear_environ();
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = 5\n");
	refused("", NULL, "wrangler.toml: dobj.cluster.url must be a string, not number");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\ntll = 3\n");
	refused("", NULL, "dobj.cluster.tll is not a cluster setting (url, node_addr, ttl, grace, timeout, call_timeout, "
		"snapshot_bytes, snapshot_part_bytes)");
	write_file("wrangler.toml", "name = \"w\"\n[dobj]\nclustr = {}\n");
	refused("", NULL, "dobj.clustr is not a dobj setting");
	write_file("wrangler.toml", "name = \"w\"\ndobj = 1\n");
	refused("", NULL, "dobj must be a table");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\nttl = 0.01\n");
	refused("", NULL, "dobj.cluster.ttl: the lease time to live must be a number of seconds from 0.1 to 86400");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\nttl = 0\n");
	refused("", NULL, "dobj.cluster.ttl: must be a number of seconds above 0");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\ngrace = -1\n");
	refused("", NULL, "the grace period must be 0 or more seconds");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\ntimeout = \"2\"\n");
	refused("", NULL, "dobj.cluster.timeout must be a number of seconds, not string");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\nttl = inf\n");
	refused("", NULL, "dobj.cluster.ttl: must be a finite number of seconds");
	write_file("wrangler.toml", "name = \"w\"\n[env.x.dobj.cluster]\nurl = \"postgresql://a@b/c?bogus=1\"\n");
	refused("x", NULL, "wrangler.toml: env.x.dobj.cluster.url: invalid PostgreSQL URL");
	/* Settings without a URL anywhere. */
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nttl = 3\n");
	refused("", NULL, "dobj.cluster.ttl is set, but no cluster URL is");
	write_file("wrangler.toml", "name = \"w\"\n");
	setenv("DOBJ_NODE_ADDR", "127.0.0.1:7001", 1);
	refused("", NULL, "environment variable DOBJ_NODE_ADDR is set, but no cluster URL is");
	/* "Any address" is where a node listens, not where other nodes reach
	 * it: advertised as such, other machines' calls went to themselves. */
	setenv("DOBJ_CLUSTER_URL", "postgresql://a@b/c", 1);
	setenv("DOBJ_NODE_ADDR", "0.0.0.0:0", 1);
	refused("", NULL, "environment variable DOBJ_NODE_ADDR: node_addr 0.0.0.0:0 is any address of "
		"this machine, which other nodes cannot reach: give one they reach (such as "
		"10.0.0.5:7001), or 127.0.0.1 for nodes on this machine only");
	setenv("DOBJ_NODE_ADDR", "[::]:7001", 1);
	refused("", NULL, "environment variable DOBJ_NODE_ADDR: node_addr [::]:7001 is any address");
	setenv("DOBJ_NODE_ADDR", "0:7001", 1); /* what inet_aton reads as 0.0.0.0 */
	refused("", NULL, "node_addr 0:7001 is any address");
	clear_environ();
	/* The environment's values. */
	setenv("DOBJ_CLUSTER_URL", "postgresql://a@b/c", 1);
	setenv("DOBJ_CLUSTER_TTL", "3s", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_TTL=3s: not a number of seconds");
	setenv("DOBJ_CLUSTER_TTL", "nan", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_TTL: must be a finite number of seconds");
	setenv("DOBJ_CLUSTER_TTL", "1e999", 1);
	refused("", NULL, "DOBJ_CLUSTER_TTL=1e999: not a number of seconds");
	/* Numbers C cannot hold as an int of ms, or PostgreSQL as an interval,
	 * are refused at load time (they were accepted, then made undefined
	 * behaviour in the network thread's wait or a PostgreSQL error later). */
	setenv("DOBJ_CLUSTER_TTL", "1e300", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_TTL: the lease time to live must be a "
		"number of seconds from 0.1 to 86400");
	setenv("DOBJ_CLUSTER_TTL", "-inf", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_TTL: must be a finite number of seconds");
	unsetenv("DOBJ_CLUSTER_TTL");
	setenv("DOBJ_CLUSTER_GRACE", "1e7", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_GRACE: the grace period must be a number "
		"of seconds from 0 to 86400");
	setenv("DOBJ_CLUSTER_GRACE", "-0.5", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_GRACE: the grace period must be 0 or more");
	unsetenv("DOBJ_CLUSTER_GRACE");
	setenv("DOBJ_CLUSTER_TIMEOUT", "1e7", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_TIMEOUT: the PostgreSQL timeout must be "
		"a number of seconds from 0.01 to 86400");
	unsetenv("DOBJ_CLUSTER_TIMEOUT");
	setenv("DOBJ_CLUSTER_CALL_TIMEOUT", "0", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_CALL_TIMEOUT: must be a number of seconds "
		"above 0");
	setenv("DOBJ_CLUSTER_CALL_TIMEOUT", "1e6", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_CALL_TIMEOUT: the call timeout must be a "
		"number of seconds from 0.01 to 86400");
	unsetenv("DOBJ_CLUSTER_CALL_TIMEOUT");
	setenv("DOBJ_CLUSTER_TIMEOUT", "0.001", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_TIMEOUT: the PostgreSQL timeout must be");
	unsetenv("DOBJ_CLUSTER_TIMEOUT");
	setenv("DOBJ_CLUSTER_URL", "postgresql://a@b/c?sslmode=bogus&x=1", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_URL: invalid PostgreSQL URL");
	/* The caller's values, named as flags. */
	flag.url = "postgresql://a@b/c?bogus=1";
	refused("", &flag, "the cluster URL given (--cluster, cluster=): invalid PostgreSQL URL");
	flag.url = "postgresql://a@b/c";
	flag.ttl_ms = 5;
	refused("", &flag, "the lease time to live given: the lease time to live must be");
	flag.ttl_ms = NAN;
	refused("", &flag, "the lease time to live given");
	flag.ttl_ms = 1e15;
	refused("", &flag, "the lease time to live given: the lease time to live must be a number of "
		"seconds from 0.1 to 86400");
	flag.ttl_ms = 0;
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\n"
		"timeout = 1e300\n");
	refused("", NULL, "wrangler.toml: dobj.cluster.timeout: the PostgreSQL timeout must be");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\n"
		"grace = -inf\n");
	refused("", NULL, "wrangler.toml: dobj.cluster.grace: must be a finite number of seconds");
	write_file("wrangler.toml", "name = \"w\"\n");
	clear_environ();
}

/* dobj_cluster_opts_seconds: the bindings' one rule for keyword arguments
 * and flags in seconds (a negative grace was taken for "none" from a
 * keyword argument while the file and the environment refused it). */
static void seconds_refused(dobj_cluster_time which, double s, const char *want)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;

	CHECK_EQ_INT(dobj_cluster_opts_seconds(&o, which, s, "cluster_x"), DOBJ_EARG);
	CHECK(o.ttl_ms == 0 && o.grace_ms == 0 && o.timeout_ms == 0);
	if (!strstr(dobj_error_last(), want)) {
		check_failures++;
		fprintf(stderr, "error: %s\n  wanted: %s\n", dobj_error_last(), want);
	}
}

static void test_opts_seconds(void)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;

	CHECK_EQ_INT(dobj_cluster_opts_seconds(&o, DOBJ_CLUSTER_TTL, 1.5, NULL), 0);
	CHECK_EQ_INT(dobj_cluster_opts_seconds(&o, DOBJ_CLUSTER_GRACE, 0, NULL), 0);
	CHECK_EQ_INT(dobj_cluster_opts_seconds(&o, DOBJ_CLUSTER_TIMEOUT, 86400, NULL), 0);
	CHECK(o.ttl_ms == 1500 && o.grace_ms < 0 && o.timeout_ms == 86400e3);
	CHECK_EQ_INT(dobj_cluster_opts_seconds(&o, DOBJ_CLUSTER_GRACE, 2, NULL), 0);
	CHECK(o.grace_ms == 2000);
	seconds_refused(DOBJ_CLUSTER_GRACE, -1, "cluster_x: the grace period must be 0 or more seconds");
	seconds_refused(DOBJ_CLUSTER_GRACE, -0.0 - 1e-9, "the grace period must be 0 or more");
	seconds_refused(DOBJ_CLUSTER_GRACE, 1e300, "cluster_x: the grace period must be a number of "
		"seconds from 0 to 86400");
	seconds_refused(DOBJ_CLUSTER_TTL, 0, "cluster_x: must be a number of seconds above 0");
	seconds_refused(DOBJ_CLUSTER_TTL, -3, "cluster_x: must be a number of seconds above 0");
	seconds_refused(DOBJ_CLUSTER_TTL, INFINITY, "cluster_x: must be a finite number of seconds");
	seconds_refused(DOBJ_CLUSTER_TTL, -INFINITY, "cluster_x: must be a finite number of seconds");
	seconds_refused(DOBJ_CLUSTER_TIMEOUT, NAN, "cluster_x: must be a finite number of seconds");
	seconds_refused(DOBJ_CLUSTER_TTL, 1e12, "cluster_x: the lease time to live must be a number "
		"of seconds from 0.1 to 86400");
	seconds_refused(DOBJ_CLUSTER_TIMEOUT, 1e7, "cluster_x: the PostgreSQL timeout must be a number "
		"of seconds from 0.01 to 86400");
	seconds_refused((dobj_cluster_time)7, 1, "no such setting");
	/* The C options themselves: past a day is refused too. */
	o = (dobj_cluster_opts)DOBJ_CLUSTER_OPTS_INIT;
	o.url = "postgresql://a@b/c";
	o.ttl_ms = 1e15;
	CHECK_EQ_INT(dobj_cluster_opts_check(&o), DOBJ_EARG);
	o.ttl_ms = 0;
	o.timeout_ms = 1e10;
	CHECK_EQ_INT(dobj_cluster_opts_check(&o), DOBJ_EARG);
	o.timeout_ms = 0;
	o.grace_ms = 1e300;
	CHECK_EQ_INT(dobj_cluster_opts_check(&o), DOBJ_EARG);
	o.grace_ms = -5; /* < 0: none, as documented for C */
	CHECK_EQ_INT(dobj_cluster_opts_check(&o), 0);
}

/* A caller built for version 1 of the options (without `cluster`) still
 * loads, and the environment still applies. */
static void test_version_1_options(void)
{
	struct { unsigned version; const char *path, *env, *persist_to; } v1 = { 1, dir, "", NULL };
	dobj_config *c = NULL;

	clear_environ();
	write_file("wrangler.toml", "name = \"w\"\n");
	setenv("DOBJ_CLUSTER_URL", "postgresql://a@b/c", 1);
	CHECK_EQ_INT(dobj_config_load(&c, (const dobj_config_opts *)(void *)&v1), 0);
	CHECK(c && c->cluster && strcmp(c->cluster->url, "postgresql://a@b/c") == 0);
	dobj_config_free(c);
	clear_environ();
}

/* The two sizes: one rule (dobj_cluster_opts_bytes) for an argument, the
 * environment and the file, in dobj_cluster_opts' terms once resolved
 * (snapshot_bytes 0 "never" is the C field's -1). */
static void test_sizes(void)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT, flag = DOBJ_CLUSTER_OPTS_INIT;
	dobj_config *c;

	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, DOBJ_CLUSTER_SNAPSHOT_EVERY, 0, NULL), 0);
	CHECK(o.snapshot_bytes == -1);
	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, DOBJ_CLUSTER_SNAPSHOT_EVERY, 5000, NULL), 0);
	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, DOBJ_CLUSTER_SNAPSHOT_PART, 1024, NULL), 0);
	CHECK(o.snapshot_bytes == 5000 && o.snapshot_part_bytes == 1024);
	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, DOBJ_CLUSTER_SNAPSHOT_PART, 256LL << 20, "x"), 0);
	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, DOBJ_CLUSTER_SNAPSHOT_EVERY, -1, "x"), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "x: must be 0 (never) or a number of bytes");
	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, DOBJ_CLUSTER_SNAPSHOT_PART, 0, "x"), DOBJ_EARG);
	CHECK_STR(dobj_error_last(), "x: must be from 1 KiB to 256 MiB (bytes)");
	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, DOBJ_CLUSTER_SNAPSHOT_PART, 1023, "x"), DOBJ_EARG);
	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, DOBJ_CLUSTER_SNAPSHOT_PART, (256LL << 20) + 1, "x"),
		DOBJ_EARG);
	CHECK_EQ_INT(dobj_cluster_opts_bytes(&o, (dobj_cluster_size)9, 1, "x"), DOBJ_EARG);
	CHECK(o.snapshot_bytes == 5000 && o.snapshot_part_bytes == 256LL << 20); /* unchanged */

	clear_environ();
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\n"
		"snapshot_bytes = 0\nsnapshot_part_bytes = 4096\n");
	c = load_with("", NULL);
	CHECK(c && c->cluster && c->cluster->snapshot_bytes == -1 &&
		c->cluster->snapshot_part_bytes == 4096);
	dobj_config_free(c);
	setenv("DOBJ_CLUSTER_SNAPSHOT_PART_BYTES", "8192", 1);
	c = load_with("", NULL);
	CHECK(c && c->cluster && c->cluster->snapshot_part_bytes == 8192);
	dobj_config_free(c);
	flag.snapshot_part_bytes = 2048;
	flag.snapshot_bytes = 100;
	c = load_with("", &flag);
	CHECK(c && c->cluster && c->cluster->snapshot_part_bytes == 2048 &&
		c->cluster->snapshot_bytes == 100);
	dobj_config_free(c);
	flag.snapshot_part_bytes = 5;
	refused("", &flag, "the snapshot part size given: the snapshot part size must be from 1 KiB");
	setenv("DOBJ_CLUSTER_SNAPSHOT_PART_BYTES", "12k", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_SNAPSHOT_PART_BYTES=12k: not a number of bytes");
	setenv("DOBJ_CLUSTER_SNAPSHOT_PART_BYTES", "100", 1);
	refused("", NULL, "environment variable DOBJ_CLUSTER_SNAPSHOT_PART_BYTES: must be from 1 KiB to "
		"256 MiB (bytes)");
	unsetenv("DOBJ_CLUSTER_SNAPSHOT_PART_BYTES");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\n"
		"snapshot_bytes = 1.5\n");
	refused("", NULL, "dobj.cluster.snapshot_bytes: must be a whole number of bytes");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\n"
		"snapshot_bytes = -4\n");
	refused("", NULL, "dobj.cluster.snapshot_bytes: must be 0 (never) or a number of bytes");
	write_file("wrangler.toml", "name = \"w\"\n[dobj.cluster]\nurl = \"postgresql://a@b/c\"\n"
		"snapshot_part_bytes = \"16M\"\n");
	refused("", NULL, "dobj.cluster.snapshot_part_bytes must be a number of bytes, not string");
	clear_environ();
}

int main(void)
{
	char path[256];

	snprintf(dir, sizeof(dir), "/tmp/dobj-cfgcl-XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	RUN(test_file_section);
	RUN(test_jsonc_and_grace_zero);
	RUN(test_precedence);
	RUN(test_bad_settings);
	RUN(test_version_1_options);
	RUN(test_opts_seconds);
	RUN(test_sizes);
	snprintf(path, sizeof(path), "%s/wrangler.toml", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/wrangler.jsonc", dir);
	unlink(path);
	rmdir(dir);
	return DONE();
}
