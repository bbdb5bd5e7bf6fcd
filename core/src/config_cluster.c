/* config_cluster.c — a project's cluster settings (docs/cluster.md): what
 * each one means, where it may come from and how it is checked, once for
 * `dobj dev`, `dobj-lua dev`, Runtime.from_config and dobj.load.
 *
 * Each setting is taken from the first source that sets it:
 * 1. the caller (dobj_config_opts.cluster: a command-line flag, a keyword
 *    argument);
 * 2. the environment: DOBJ_CLUSTER_URL, DOBJ_NODE_ADDR, DOBJ_CLUSTER_TTL,
 *    DOBJ_CLUSTER_GRACE, DOBJ_CLUSTER_TIMEOUT, DOBJ_CLUSTER_CALL_TIMEOUT
 *    (seconds), DOBJ_CLUSTER_SNAPSHOT_BYTES, DOBJ_CLUSTER_SNAPSHOT_PART_BYTES
 *    (bytes); empty = unset, as shells and container files often leave a
 *    variable;
 * 3. the config file's `[dobj.cluster]` table (url, node_addr, ttl, grace,
 *    timeout, call_timeout in seconds, snapshot_bytes, snapshot_part_bytes),
 *    `[env.NAME.dobj.cluster]` in an environment.
 * Settings merge one by one (a flag's URL with the file's TTL is fine).
 * A node address from none of them is 127.0.0.1:0: a project is a node.
 * The values' own rules are dobj_cluster_opts_check's, so a setting is
 * refused exactly as dobj_rt_cluster would refuse it, with its source
 * named.  wrangler itself warns about the unknown top-level `dobj` key and
 * goes on, so one file serves both.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "config_cluster.h"

enum { S_URL, S_ADDR, S_TTL, S_GRACE, S_TIMEOUT, S_CALL, S_SNAP, S_PART, S_N };

static const char *const keys[S_N] = { "url", "node_addr", "ttl", "grace", "timeout",
	"call_timeout", "snapshot_bytes", "snapshot_part_bytes" };
static const char *const vars[S_N] = { "DOBJ_CLUSTER_URL", "DOBJ_NODE_ADDR", "DOBJ_CLUSTER_TTL",
	"DOBJ_CLUSTER_GRACE", "DOBJ_CLUSTER_TIMEOUT", "DOBJ_CLUSTER_CALL_TIMEOUT",
	"DOBJ_CLUSTER_SNAPSHOT_BYTES", "DOBJ_CLUSTER_SNAPSHOT_PART_BYTES" };

typedef struct found {
	const char *str[2];      /* url, node_addr (borrowed) */
	size_t len[2];
	double ms[4];            /* ttl, grace, timeout, call timeout (dobj_cluster_opts' ms) */
	long long bytes[2];      /* snapshot_bytes, snapshot_part_bytes (dobj_cluster_opts') */
	int set[S_N];
	char from[S_N][600];     /* where each setting came from, for messages */
} found;

/* The last error (dobj_cluster_opts_check's), with the source of the
 * refused setting in front of it. */
static int reword(const char *from, int code)
{
	const char *m = dobj_error_last();
	char msg[400];

	snprintf(msg, sizeof(msg), "%s", strncmp(m, "cluster: ", 9) == 0 ? m + 9 : m);
	return dobj_error_set(code, "%s: %s", from, msg);
}

static double *field(dobj_cluster_opts *o, int which)
{
	return which == S_TTL ? &o->ttl_ms : which == S_GRACE ? &o->grace_ms
		: which == S_TIMEOUT ? &o->timeout_ms : &o->call_timeout_ms;
}

/* Checks one number (ms, dobj_cluster_opts' terms) the way the runtime will,
 * naming its source. */
static int check_ms(int which, double ms, const char *from, int code)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;

	o.url = "postgresql://";
	*field(&o, which) = ms;
	if (dobj_cluster_opts_check(&o) == DOBJ_OK)
		return DOBJ_OK;
	return reword(from, code);
}

/* Checks a part size (dobj_cluster_opts' terms) the way the runtime will. */
static int check_part(long long bytes, const char *from)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;

	o.url = "postgresql://";
	o.snapshot_part_bytes = bytes;
	if (dobj_cluster_opts_check(&o) == DOBJ_OK)
		return DOBJ_OK;
	return reword(from, DOBJ_EINVALID);
}

/* Checks a URL or a node address the way the runtime will. */
static int check_str(const char *url, const char *addr, const char *from)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;

	o.url = url;
	o.node_addr = addr;
	if (dobj_cluster_opts_check(&o) == DOBJ_OK)
		return DOBJ_OK;
	return reword(from, DOBJ_EINVALID);
}

/* Seconds as a setting gives them -> ms in dobj_cluster_opts' terms (whose
 * 0 means "the default": a grace of 0 s is written < 0 there, and a TTL or
 * timeout of 0 s is refused rather than taken for "the default"). */
static int seconds(int which, double s, const char *from, double *ms, int code)
{
	double v;
	int rc;

	if (isnan(s) || isinf(s))
		return dobj_error_set(code, "%s: must be a finite number of seconds", from);
	if (which == S_GRACE && s < 0)
		return dobj_error_set(code, "%s: the grace period must be 0 or more seconds", from);
	if (which != S_GRACE && s <= 0)
		return dobj_error_set(code, "%s: must be a number of seconds above 0", from);
	v = which == S_GRACE && s == 0 ? -1 : s * 1e3;
	if ((rc = check_ms(which, v, from, code)) < 0)
		return rc;
	*ms = v;
	return DOBJ_OK;
}

int dobj_cluster_opts_seconds(dobj_cluster_opts *opts, dobj_cluster_time which, double s,
	const char *from)
{
	static const char *const names[4] = { "the lease time to live", "the grace period",
		"the PostgreSQL timeout", "the call timeout" };
	int j = (int)which + S_TTL;

	if (!opts || (int)which < 0 || j > S_CALL)
		return dobj_error_set(DOBJ_EARG, "cluster: no such setting");
	return seconds(j, s, from ? from : names[which], field(opts, j), DOBJ_EARG);
}

int dobj_cluster_opts_bytes(dobj_cluster_opts *opts, dobj_cluster_size which, long long bytes,
	const char *from)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;

	if (!opts || (which != DOBJ_CLUSTER_SNAPSHOT_EVERY && which != DOBJ_CLUSTER_SNAPSHOT_PART))
		return dobj_error_set(DOBJ_EARG, "cluster: no such setting");
	if (which == DOBJ_CLUSTER_SNAPSHOT_EVERY) {
		if (bytes < 0)
			return dobj_error_set(DOBJ_EARG, "%s: must be 0 (never) or a number of bytes",
				from ? from : "the log bytes between snapshots");
		/* The C field's 0 is "the default", < 0 "never". */
		opts->snapshot_bytes = bytes == 0 ? -1 : bytes;
		return DOBJ_OK;
	}
	o.url = "postgresql://";
	o.snapshot_part_bytes = bytes;
	if (bytes == 0 || dobj_cluster_opts_check(&o) < 0)
		return dobj_error_set(DOBJ_EARG, "%s: must be from 1 KiB to 256 MiB (bytes)",
			from ? from : "the snapshot part size");
	opts->snapshot_part_bytes = bytes;
	return DOBJ_OK;
}

/* Bytes as a setting gives them -> f->bytes in dobj_cluster_opts' terms. */
static int setting_bytes(found *f, int which, double n, const char *from)
{
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;

	if (!(n >= -9e15 && n <= 9e15) || n != floor(n))
		return dobj_error_set(DOBJ_EINVALID, "%s: must be a whole number of bytes", from);
	if (dobj_cluster_opts_bytes(&o, which == S_SNAP ? DOBJ_CLUSTER_SNAPSHOT_EVERY :
	    DOBJ_CLUSTER_SNAPSHOT_PART, (long long)n, from) < 0) {
		char msg[600];
		snprintf(msg, sizeof(msg), "%s", dobj_error_last()); /* (not set from itself) */
		return dobj_error_set(DOBJ_EINVALID, "%s", msg);
	}
	f->bytes[which - S_SNAP] = which == S_SNAP ? o.snapshot_bytes : o.snapshot_part_bytes;
	return DOBJ_OK;
}

static int from_file(found *f, const char *path, const dobj_val *top, const char *where)
{
	const dobj_val *cl;
	size_t i, j, len;

	if (!top)
		return DOBJ_OK;
	if (dobj_val_type_of(top) != DOBJ_VAL_OBJECT)
		return dobj_error_set(DOBJ_EINVALID, "%s: %sdobj must be a table, not %s", path, where,
			dobj_val_type_name(top));
	for (i = 0; i < dobj_val_len(top); i++) {
		const char *k = dobj_val_key_at(top, i, &len);
		if (len != 7 || memcmp(k, "cluster", 7) != 0)
			return dobj_error_set(DOBJ_EINVALID, "%s: %sdobj.%.100s is not a dobj setting "
				"(dobj.cluster is)", path, where, k);
	}
	if (!(cl = dobj_val_get(top, "cluster", 7)))
		return DOBJ_OK;
	if (dobj_val_type_of(cl) != DOBJ_VAL_OBJECT)
		return dobj_error_set(DOBJ_EINVALID, "%s: %sdobj.cluster must be a table, not %s", path,
			where, dobj_val_type_name(cl));
	for (i = 0; i < dobj_val_len(cl); i++) {
		const char *k = dobj_val_key_at(cl, i, &len);
		const dobj_val *v = dobj_val_at(cl, i);
		char *from;
		for (j = 0; j < S_N && (strlen(keys[j]) != len || memcmp(keys[j], k, len) != 0); j++)
			;
		if (j == S_N)
			return dobj_error_set(DOBJ_EINVALID, "%s: %sdobj.cluster.%.100s is not a cluster "
				"setting (url, node_addr, ttl, grace, timeout, call_timeout, snapshot_bytes, "
				"snapshot_part_bytes)", path, where, k);
		from = f->from[j];
		snprintf(from, sizeof(f->from[j]), "%.500s: %.40sdobj.cluster.%s", path, where, keys[j]);
		if (j <= S_ADDR) {
			const char *s;
			if (dobj_val_type_of(v) != DOBJ_VAL_STRING)
				return dobj_error_set(DOBJ_EINVALID, "%s must be a string, not %s", from,
					dobj_val_type_name(v));
			s = dobj_val_get_string(v, &len);
			if (memchr(s, '\0', len))
				return dobj_error_set(DOBJ_EINVALID, "%s contains a NUL character", from);
			f->str[j] = s;
			f->len[j] = len;
		} else if (j >= S_SNAP) {
			int rc;
			if (dobj_val_type_of(v) != DOBJ_VAL_NUMBER)
				return dobj_error_set(DOBJ_EINVALID, "%s must be a number of bytes, not %s",
					from, dobj_val_type_name(v));
			if ((rc = setting_bytes(f, (int)j, dobj_val_get_number(v), from)) < 0)
				return rc;
		} else {
			int rc;
			if (dobj_val_type_of(v) != DOBJ_VAL_NUMBER)
				return dobj_error_set(DOBJ_EINVALID, "%s must be a number of seconds, not %s",
					from, dobj_val_type_name(v));
			if ((rc = seconds((int)j, dobj_val_get_number(v), from, &f->ms[j - S_TTL],
			    DOBJ_EINVALID)) < 0)
				return rc;
		}
		f->set[j] = 1;
	}
	return DOBJ_OK;
}

static int from_environ(found *f)
{
	int j, rc;

	for (j = 0; j < S_N; j++) {
		const char *v = getenv(vars[j]);
		char *end;
		double s;
		if (!v || !*v)
			continue;
		snprintf(f->from[j], sizeof(f->from[j]), "environment variable %s", vars[j]);
		f->set[j] = 1;
		if (j <= S_ADDR) {
			f->str[j] = v;
			f->len[j] = strlen(v);
			continue;
		}
		errno = 0;
		s = strtod(v, &end);
		while (*end == ' ' || *end == '\t')
			end++;
		if (end == v || *end || errno == ERANGE)
			return dobj_error_set(DOBJ_EINVALID, "environment variable %s=%.40s%s: not a number "
				"of %s", vars[j], v, strlen(v) > 40 ? "..." : "", j >= S_SNAP ? "bytes" : "seconds");
		if (j >= S_SNAP) {
			if ((rc = setting_bytes(f, j, s, f->from[j])) < 0)
				return rc;
			continue;
		}
		if ((rc = seconds(j, s, f->from[j], &f->ms[j - S_TTL], DOBJ_EINVALID)) < 0)
			return rc;
	}
	return DOBJ_OK;
}

static void from_caller(found *f, const dobj_cluster_opts *o)
{
	static const char *const flags[S_N] = { "the cluster URL given (--cluster, cluster=)",
		"the node address given (--node-addr, node_addr=)", "the lease time to live given",
		"the grace period given", "the PostgreSQL timeout given", "the call timeout given",
		"the log bytes between snapshots given", "the snapshot part size given" };
	int j;

	if (o->url) {
		f->str[S_URL] = o->url;
		f->len[S_URL] = o->url_len ? o->url_len : strlen(o->url);
		f->set[S_URL] = 1;
	}
	if (o->node_addr) {
		f->str[S_ADDR] = o->node_addr;
		f->len[S_ADDR] = o->node_addr_len ? o->node_addr_len : strlen(o->node_addr);
		f->set[S_ADDR] = 1;
	}
	if (o->ttl_ms != 0)
		f->ms[0] = o->ttl_ms, f->set[S_TTL] = 1;
	if (o->grace_ms != 0)
		f->ms[1] = o->grace_ms, f->set[S_GRACE] = 1;
	if (o->timeout_ms != 0)
		f->ms[2] = o->timeout_ms, f->set[S_TIMEOUT] = 1;
	if (o->version >= 2 && o->call_timeout_ms != 0)
		f->ms[3] = o->call_timeout_ms, f->set[S_CALL] = 1;
	if (o->version >= 3 && o->snapshot_bytes != 0)
		f->bytes[0] = o->snapshot_bytes, f->set[S_SNAP] = 1;
	if (o->version >= 4 && o->snapshot_part_bytes != 0)
		f->bytes[1] = o->snapshot_part_bytes, f->set[S_PART] = 1;
	for (j = 0; j < S_N; j++)
		if (f->set[j])
			snprintf(f->from[j], sizeof(f->from[j]), "%s", flags[j]);
}

int dobj__config_cluster(dobj_cluster_opts **out, const char *path, const dobj_val *file_top,
	const char *where, const dobj_cluster_opts *caller)
{
	found file, env, call, f;
	dobj_cluster_opts *o;
	char *p;
	int j, rc;

	*out = NULL;
	memset(&file, 0, sizeof(file));
	memset(&env, 0, sizeof(env));
	memset(&call, 0, sizeof(call));
	if ((rc = from_file(&file, path, file_top, where)) < 0 || (rc = from_environ(&env)) < 0)
		return rc;
	if (caller)
		from_caller(&call, caller);
	/* One setting at a time: the caller's, else the environment's, else
	 * the file's. */
	memset(&f, 0, sizeof(f));
	for (j = 0; j < S_N; j++) {
		const found *src = call.set[j] ? &call : env.set[j] ? &env : file.set[j] ? &file : NULL;
		if (!src)
			continue;
		f.set[j] = 1;
		memcpy(f.from[j], src->from[j], sizeof(f.from[j]));
		if (j <= S_ADDR) {
			f.str[j] = src->str[j];
			f.len[j] = src->len[j];
		} else if (j >= S_SNAP) {
			f.bytes[j - S_SNAP] = src->bytes[j - S_SNAP];
		} else {
			f.ms[j - S_TTL] = src->ms[j - S_TTL];
		}
	}
	if (!f.set[S_URL]) {
		for (j = 0; j < S_N && !f.set[j]; j++)
			;
		if (j == S_N)
			return DOBJ_OK; /* not a cluster node */
		return dobj_error_set(DOBJ_EINVALID, "%s is set, but no cluster URL is (--cluster, "
			"DOBJ_CLUSTER_URL or dobj.cluster.url in the config)", f.from[j]);
	}
	if (!f.set[S_ADDR]) {
		/* A project serves its objects: a node without an address from any
		 * source listens on loopback, on a port the system picks, which is
		 * what the other processes of the machine need (several workers of
		 * one app, `uvicorn --workers 4`).  A runtime without an address
		 * (a pure client, which serves nothing) is made without a config. */
		f.str[S_ADDR] = "127.0.0.1:0";
		f.len[S_ADDR] = 11;
		f.set[S_ADDR] = 1;
		snprintf(f.from[S_ADDR], sizeof(f.from[S_ADDR]), "the default node address");
	}
	if (!(o = malloc(sizeof(*o) + f.len[S_URL] + f.len[S_ADDR] + 2)))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	memset(o, 0, sizeof(*o));
	o->version = DOBJ_CLUSTER_OPTS_VERSION;
	p = (char *)(o + 1);
	memcpy(p, f.str[S_URL], f.len[S_URL]);
	p[f.len[S_URL]] = '\0';
	o->url = p;
	o->url_len = f.len[S_URL];
	p += f.len[S_URL] + 1;
	if (f.set[S_ADDR]) {
		memcpy(p, f.str[S_ADDR], f.len[S_ADDR]);
		p[f.len[S_ADDR]] = '\0';
		o->node_addr = p;
		o->node_addr_len = f.len[S_ADDR];
	}
	o->ttl_ms = f.ms[0];
	o->grace_ms = f.ms[1];
	o->timeout_ms = f.ms[2];
	o->call_timeout_ms = f.ms[3];
	o->snapshot_bytes = f.bytes[0];
	o->snapshot_part_bytes = f.bytes[1];
	/* The runtime's own checks (the URL's syntax included, without
	 * connecting), one setting at a time so that a refusal names the
	 * setting's source; the file's and the environment's numbers were
	 * checked as they were read. */
	if ((rc = check_str(o->url, NULL, f.from[S_URL])) < 0 ||
	    (f.set[S_ADDR] && (rc = check_str("postgresql://", o->node_addr, f.from[S_ADDR])) < 0) ||
	    (call.set[S_TTL] && (rc = check_ms(S_TTL, o->ttl_ms, f.from[S_TTL], DOBJ_EINVALID)) < 0) ||
	    (call.set[S_GRACE] && (rc = check_ms(S_GRACE, o->grace_ms, f.from[S_GRACE],
		DOBJ_EINVALID)) < 0) ||
	    (call.set[S_TIMEOUT] && (rc = check_ms(S_TIMEOUT, o->timeout_ms, f.from[S_TIMEOUT],
		DOBJ_EINVALID)) < 0) ||
	    (call.set[S_CALL] && (rc = check_ms(S_CALL, o->call_timeout_ms, f.from[S_CALL],
		DOBJ_EINVALID)) < 0) ||
	    (call.set[S_PART] && (rc = check_part(o->snapshot_part_bytes, f.from[S_PART])) < 0)) {
		free(o);
		return rc;
	}
	*out = o;
	return DOBJ_OK;
}
