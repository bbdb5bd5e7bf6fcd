/*
 * Cluster mode: nodes, leases, ownership with fencing epochs, and the redo
 * log of every object in PostgreSQL (docs/cluster.md; the design and its
 * measurements are in the project's shared design notes).
 *
 * The scheduler calls in at four places (internal.h): activation of an
 * incarnation (claim + restore), the end of a step (the lease gate, then
 * the fenced append of each commit), the release of an incarnation, and
 * the runtime's close.  Everything else in the core is unchanged: a
 * refused append is a failed commit, a refused claim a failed constructor.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_int.h"
#include "v8_format.h"

/* Serialises concurrent migrations (any constant; "dobjschm"). */
#define MIGRATE_LOCK "7305675160151470641"

/* Version 1 of the schema: see dobj/cluster.h and docs/cluster.md. */
static const char schema_v1[] =
	"CREATE TABLE dobj_node ("
	" node_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
	" addr text NOT NULL,"
	" started_at timestamptz NOT NULL DEFAULT now(),"
	" lease_until timestamptz NOT NULL,"
	" status text NOT NULL DEFAULT 'live');"
	"CREATE TABLE dobj_owner ("
	" ns text NOT NULL, object_id bytea NOT NULL, epoch bigint NOT NULL, node_id bigint,"
	" PRIMARY KEY (ns, object_id));"
	"CREATE TABLE dobj_wal ("
	" ns text NOT NULL, object_id bytea NOT NULL, seq bigint NOT NULL, epoch bigint NOT NULL,"
	" frames bytea NOT NULL, PRIMARY KEY (ns, object_id, seq));"
	/* Pages are shipped as they are: compressing them costs more CPU than
	 * the bytes it saves on a local disk. */
	"ALTER TABLE dobj_wal ALTER frames SET STORAGE EXTERNAL;"
	"CREATE TABLE dobj_snapshot ("
	" ns text NOT NULL, object_id bytea NOT NULL, seq bigint NOT NULL, db bytea NOT NULL,"
	" PRIMARY KEY (ns, object_id));"
	/* scheduled_at: ns since the epoch, the object's own record exactly. */
	"CREATE TABLE dobj_alarm ("
	" ns text NOT NULL, object_id bytea NOT NULL, scheduled_at bigint NOT NULL, name bytea,"
	" PRIMARY KEY (ns, object_id));"
	"CREATE INDEX dobj_alarm_due ON dobj_alarm (scheduled_at);";

/* Version 2: snapshots (cluster_snapshot.c).  A snapshot row carries the
 * epoch of the log row at its seq (with the seq, what identifies a state of
 * the object); images are stored as they are, like the log's pages. */
static const char schema_v2[] =
	"ALTER TABLE dobj_snapshot ADD COLUMN IF NOT EXISTS epoch bigint NOT NULL DEFAULT 0;"
	"ALTER TABLE dobj_snapshot ALTER db SET STORAGE EXTERNAL;";

/* Version 3: a checksum on every log row (written by the node, checked on
 * every read: restore and compaction).  The rows of an older version get
 * theirs here, from their bytes as they are. */
static const char schema_v3[] =
	"ALTER TABLE dobj_wal ADD COLUMN IF NOT EXISTS sum bytea;"
	"UPDATE dobj_wal SET sum = " DOBJ__WAL_SUM_SQL " WHERE sum IS NULL;"
	"ALTER TABLE dobj_wal ALTER sum SET NOT NULL;";

/* Version 4: snapshots in parts (a database larger than the part size:
 * cluster_snapshot.c), keyed by the snapshot's seq. */
static const char schema_v4[] =
	"CREATE TABLE IF NOT EXISTS dobj_snapshot_part ("
	" ns text NOT NULL, object_id bytea NOT NULL, seq bigint NOT NULL, part integer NOT NULL,"
	" data bytea NOT NULL, PRIMARY KEY (ns, object_id, seq, part));"
	"ALTER TABLE dobj_snapshot_part ALTER data SET STORAGE EXTERNAL;";

/* Version 5: log rows may hold the changed bytes of pages the log already
 * has (record format 2, cluster_record.c) instead of whole pages.  No table
 * changes: the version keeps a dobj that reads whole pages only from
 * joining a cluster whose log it would refuse as malformed. */
static const char schema_v5[] = "SELECT 1";

/* ------------------------------------------------------------------ schema */

/* The tables of the schema, in the order the versions made them. */
static const char *const tables[] = { "dobj_node", "dobj_owner", "dobj_wal", "dobj_snapshot",
	"dobj_alarm", "dobj_snapshot_part" };

static int tables_of(int version)
{
	return version < 1 ? 0 : version < 4 ? 5 : 6;
}

#define NOT_OURS "use a database (or a search_path schema) of dobj's own"

/* Inside the migration's transaction: the version the database is at, after
 * checking that what carries dobj's names is dobj's (a database of other
 * software's, or a schema damaged by hand, is refused with what is wrong,
 * instead of PostgreSQL's words about a table, or a version read from
 * anything: atoi of "1e300", a text column, a view). */
static int schema_version(dobj__pg *pg, int *have)
{
	PGresult *r = NULL;
	const char *kind, *cols, *count, *v;
	char *end;
	long n;
	size_t i;
	int rc;

	if ((rc = dobj__pg_exec(pg,
		"SELECT c.relkind, (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, "
		"a.atttypmod), ', ' ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = c.oid AND "
		"a.attnum > 0 AND NOT a.attisdropped) FROM pg_class c "
		"WHERE c.oid = 'dobj_schema_version'::regclass",
		0, NULL, NULL, NULL, 0, &r)) < 0)
		return rc;
	kind = PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "";
	cols = PQntuples(r) != 1 || PQgetisnull(r, 0, 1) ? "no column" : PQgetvalue(r, 0, 1);
	if (strcmp(kind, "r") || strcmp(cols, "version integer")) {
		rc = dobj_error_set(DOBJ_ESTATE, "cluster: the database's dobj_schema_version is not "
			"dobj's (%s with %.200s, not a table with version integer): " NOT_OURS,
			!strcmp(kind, "v") ? "a view" : !strcmp(kind, "r") ? "a table" : "a relation", cols);
		PQclear(r);
		return rc;
	}
	PQclear(r);
	/* the version, then whether each of `tables` is there (in its order) */
	if ((rc = dobj__pg_exec(pg,
		"SELECT count(*), max(version), to_regclass('dobj_node') IS NOT NULL, "
		"to_regclass('dobj_owner') IS NOT NULL, to_regclass('dobj_wal') IS NOT NULL, "
		"to_regclass('dobj_snapshot') IS NOT NULL, to_regclass('dobj_alarm') IS NOT NULL, "
		"to_regclass('dobj_snapshot_part') IS NOT NULL FROM dobj_schema_version",
		0, NULL, NULL, NULL, 0, &r)) < 0)
		return rc;
	count = PQgetvalue(r, 0, 0);
	v = PQgetisnull(r, 0, 1) ? "0" : PQgetvalue(r, 0, 1);
	errno = 0;
	n = strtol(v, &end, 10);
	if (strcmp(count, "0") && strcmp(count, "1")) {
		rc = dobj_error_set(DOBJ_ESTATE, "cluster: the database's dobj_schema_version has %s "
			"rows, not one: " NOT_OURS, count);
		goto done;
	}
	if (*end || errno || n < 0 || (n == 0 && !strcmp(count, "1"))) {
		rc = dobj_error_set(DOBJ_ESTATE, "cluster: the database's dobj_schema_version says "
			"version %.40s, which no dobj wrote: " NOT_OURS, v);
		goto done;
	}
	if (n > DOBJ_CLUSTER_SCHEMA_VERSION) {
		rc = dobj_error_set(DOBJ_ESTATE, "cluster: the database's dobj schema is version %ld, "
			"newer than this dobj's (%d): upgrade dobj on this node", n,
			DOBJ_CLUSTER_SCHEMA_VERSION);
		goto done;
	}
	/* Exactly the version's tables: none before the first migration. */
	for (i = 0; i < sizeof(tables) / sizeof(*tables); i++) {
		int at = !strcmp(PQgetvalue(r, 0, 2 + (int)i), "t");
		if ((int)i < tables_of((int)n) && !at) {
			rc = dobj_error_set(DOBJ_ESTATE, "cluster: the database's dobj schema (version "
				"%ld) has no table %s: it was changed by hand or restored in part", n,
				tables[i]);
			goto done;
		}
		if (n == 0 && at) {
			rc = dobj_error_set(DOBJ_ESTATE, "cluster: the database has a table %s but no dobj "
				"schema: it is not dobj's: " NOT_OURS, tables[i]);
			goto done;
		}
	}
	*have = (int)n;
	rc = DOBJ_OK;
done:
	PQclear(r);
	return rc;
}

static int migrate(dobj__pg *pg, int *version)
{
	int have = 0, rc;

	if ((rc = dobj__pg_simple(pg,
		"BEGIN;"
		"SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ");"
		"CREATE TABLE IF NOT EXISTS dobj_schema_version (version integer NOT NULL)")) < 0)
		goto fail;
	if ((rc = schema_version(pg, &have)) < 0) {
		if (rc == DOBJ_ESTATE)
			dobj__pg_simple(pg, "ROLLBACK");
		else
			goto fail;
		return rc;
	}
	if (have < 1) {
		if ((rc = dobj__pg_simple(pg, schema_v1)) < 0 ||
		    (rc = dobj__pg_simple(pg, "DELETE FROM dobj_schema_version;"
			"INSERT INTO dobj_schema_version VALUES (1)")) < 0)
			goto fail;
		have = 1;
	}
	if (have < 2) {
		if ((rc = dobj__pg_simple(pg, schema_v2)) < 0 ||
		    (rc = dobj__pg_simple(pg, "DELETE FROM dobj_schema_version;"
			"INSERT INTO dobj_schema_version VALUES (2)")) < 0)
			goto fail;
		have = 2;
	}
	if (have < 3) {
		if ((rc = dobj__pg_simple(pg, schema_v3)) < 0 ||
		    (rc = dobj__pg_simple(pg, "DELETE FROM dobj_schema_version;"
			"INSERT INTO dobj_schema_version VALUES (3)")) < 0)
			goto fail;
		have = 3;
	}
	if (have < 4) {
		if ((rc = dobj__pg_simple(pg, schema_v4)) < 0 ||
		    (rc = dobj__pg_simple(pg, "DELETE FROM dobj_schema_version;"
			"INSERT INTO dobj_schema_version VALUES (4)")) < 0)
			goto fail;
		have = 4;
	}
	if (have < 5) {
		if ((rc = dobj__pg_simple(pg, schema_v5)) < 0 ||
		    (rc = dobj__pg_simple(pg, "DELETE FROM dobj_schema_version;"
			"INSERT INTO dobj_schema_version VALUES (5)")) < 0)
			goto fail;
		have = 5;
	}
	if ((rc = dobj__pg_simple(pg, "COMMIT")) < 0)
		goto fail;
	if (version)
		*version = have;
	return DOBJ_OK;
fail:
	/* The transaction is in an unknown state: start afresh next time. */
	dobj__pg_drop(pg);
	return rc;
}

static double opt_ms(double v, double dflt)
{
	return v == 0 || isnan(v) ? dflt : v;
}

/* A setting's bytes are UTF-8 text (a host gives a string with lone
 * surrogates as WTF-8: refused here, with one message in every language). */
static int text_check(const char *s, size_t n, const char *what)
{
	size_t i = 0, k, bad;
	uint32_t cp;

	while (i < n) {
		if (!(k = dobj__utf8_get((const unsigned char *)s + i, n - i, 0, &cp, &bad)))
			return dobj_error_set(DOBJ_EARG, "cluster: %s must be UTF-8 text (byte %zu is "
				"not)", what, i + 1);
		i += k;
	}
	return DOBJ_OK;
}

int dobj__cluster_ns_check(const char *key, size_t len)
{
	/* Every statement names the namespace by its unique key as text (a
	 * key PostgreSQL refused failed each claim, and the alarm scan, which
	 * names the keys a node serves, for every namespace). */
	return text_check(key, len, "a namespace's unique key");
}

/* Whether `host` is "any address" (0.0.0.0, ::, or what inet_aton reads
 * as 0.0.0.0: "0").  node_addr is both where the node listens and what it
 * advertises in dobj_node; a node on another machine that dials 0.0.0.0
 * reaches itself, so a node advertised that way served its own machine
 * only, and every call routed to it from elsewhere failed. */
static int is_any_address(const char *host)
{
	struct in_addr v4;
	struct in6_addr v6;

	if (inet_aton(host, &v4) && v4.s_addr == 0)
		return 1;
	return inet_pton(AF_INET6, host, &v6) == 1 && IN6_IS_ADDR_UNSPECIFIED(&v6);
}

int dobj_cluster_opts_check(const dobj_cluster_opts *o)
{
	size_t n;
	int rc;

	if (!o || o->version < 1 || o->version > DOBJ_CLUSTER_OPTS_VERSION)
		return dobj_error_set(DOBJ_EARG, "cluster options: unknown version");
	if (!o->url)
		return dobj_error_set(DOBJ_EARG, "cluster: a PostgreSQL URL is needed");
	n = o->url_len ? o->url_len : strlen(o->url);
	if (n == 0)
		return dobj_error_set(DOBJ_EARG, "cluster: a PostgreSQL URL is needed");
	if (memchr(o->url, '\0', n))
		return dobj_error_set(DOBJ_EARG, "cluster: the PostgreSQL URL contains a NUL byte");
	if (o->node_addr && memchr(o->node_addr, '\0',
		o->node_addr_len ? o->node_addr_len : strlen(o->node_addr)))
		return dobj_error_set(DOBJ_EARG, "cluster: the node address contains a NUL byte");
	if ((rc = text_check(o->url, n, "the PostgreSQL URL")) < 0 || (o->node_addr &&
	    (rc = text_check(o->node_addr, o->node_addr_len ? o->node_addr_len :
		strlen(o->node_addr), "the node address")) < 0))
		return rc;
	if (o->node_addr && (o->node_addr_len || o->node_addr[0])) {
		/* HOST:PORT, as the network thread will split it: a port out of
		 * range is refused with the settings, not after joining. */
		char *a = dobj__strndup(o->node_addr, o->node_addr_len ? o->node_addr_len
			: strlen(o->node_addr)), host[256], port[16];
		if (!a)
			return DOBJ_ENOMEM;
		rc = dobj__route_split_addr(a, host, sizeof(host), port, sizeof(port));
		if (rc == 0 && is_any_address(host))
			rc = dobj_error_set(DOBJ_EARG, "cluster: node_addr %.100s is any address of this "
				"machine, which other nodes cannot reach: give one they reach (such as "
				"10.0.0.5:7001), or 127.0.0.1 for nodes on this machine only", a);
		free(a);
		if (rc < 0)
			return rc;
	}
	/* At most a day each: the times become C ints (a poll's timeout,
	 * statement_timeout) and PostgreSQL intervals, which a larger number
	 * overflows (a TTL of 1e12 s was undefined behaviour in the network
	 * thread's wait). */
	if (isnan(o->ttl_ms) || o->ttl_ms < 0 || isinf(o->ttl_ms) ||
	    (o->ttl_ms > 0 && o->ttl_ms < 100) || o->ttl_ms > DOBJ_CLUSTER_MAX_MS)
		return dobj_error_set(DOBJ_EARG, "cluster: the lease time to live must be a "
			"number of seconds from 0.1 to 86400");
	if (isnan(o->grace_ms) || isinf(o->grace_ms) || o->grace_ms > DOBJ_CLUSTER_MAX_MS)
		return dobj_error_set(DOBJ_EARG, "cluster: the grace period must be a number of "
			"seconds from 0 to 86400");
	if (isnan(o->timeout_ms) || o->timeout_ms < 0 || isinf(o->timeout_ms) ||
	    (o->timeout_ms > 0 && o->timeout_ms < 10) || o->timeout_ms > DOBJ_CLUSTER_MAX_MS)
		return dobj_error_set(DOBJ_EARG, "cluster: the PostgreSQL timeout must be a "
			"number of seconds from 0.01 to 86400");
	if (o->version >= 2 && (isnan(o->call_timeout_ms) || o->call_timeout_ms < 0 ||
	    isinf(o->call_timeout_ms) || (o->call_timeout_ms > 0 && o->call_timeout_ms < 10) ||
	    o->call_timeout_ms > DOBJ_CLUSTER_MAX_MS))
		return dobj_error_set(DOBJ_EARG, "cluster: the call timeout must be a number of "
			"seconds from 0.01 to 86400");
	if (o->version >= 4 && o->snapshot_part_bytes != 0 &&
	    (o->snapshot_part_bytes < 1024 || o->snapshot_part_bytes > (256LL << 20)))
		return dobj_error_set(DOBJ_EARG, "cluster: the snapshot part size must be from 1 KiB "
			"to 256 MiB");
	{
		/* The URL's syntax (libpq's parser, no connection). */
		char *u = dobj__strndup(o->url, n);
		int rc;
		if (!u)
			return DOBJ_ENOMEM;
		rc = dobj__pg_check_url(u);
		free(u);
		return rc;
	}
}

int dobj_cluster_init(const char *url, size_t url_len, double timeout_ms, int *version)
{
	dobj__pg pg;
	dobj_cluster_opts o = DOBJ_CLUSTER_OPTS_INIT;
	int rc;

	o.url = url;
	o.url_len = url_len;
	o.timeout_ms = timeout_ms;
	if ((rc = dobj_cluster_opts_check(&o)) < 0)
		return rc;
	memset(&pg, 0, sizeof(pg));
	pg.timeout_ms = opt_ms(timeout_ms, DOBJ_CLUSTER_TIMEOUT_MS);
	if (!(pg.url = dobj__strndup(url, url_len ? url_len : strlen(url))))
		return DOBJ_ENOMEM;
	if ((rc = dobj__pg_check_url(pg.url)) == DOBJ_OK)
		rc = migrate(&pg, version);
	dobj__pg_drop(&pg);
	free(pg.url);
	return rc;
}

/*
 * A class renamed by a migration keeps its objects (config.c): on one
 * machine its folder moves to the new name's.  In cluster mode the objects
 * live in PostgreSQL under their namespace's unique key, which the rename
 * changed: the first node of the renamed project moves their rows (owner,
 * log, snapshots, alarms) to the new key in one transaction, as it starts,
 * so the class starts with them (it started with none before: a count of 2
 * came back as 1).  The IDs do not change (a renamed class keeps its ID
 * key).  Not moved, and the start refused with what to do: rows under two
 * earlier names, or under an earlier and the current name (which are the
 * class's is for the user to say), and an object of the earlier name held
 * by a live node (a node of the project before the rename serves it, and
 * would go on under the earlier name).  Nodes starting at once take turns
 * (an advisory lock); a database without dobj's tables holds nothing.
 */
#define RENAME_LOCK "7305675160151470642"

static const char *const rename_tables[] = {
	"dobj_owner", "dobj_wal", "dobj_snapshot", "dobj_snapshot_part", "dobj_alarm"
};

static const char *key_of_dir(const char *dir)
{
	const char *key = strrchr(dir, '/');

	return key ? key + 1 : dir;
}

/* Whether PostgreSQL holds rows of namespace `key`: 1, 0, or an error. */
static int rows_under(dobj__pg *pg, const char *key)
{
	static const char sql[] = "SELECT EXISTS (SELECT 1 FROM dobj_owner WHERE ns = $1) "
		"OR EXISTS (SELECT 1 FROM dobj_wal WHERE ns = $1) "
		"OR EXISTS (SELECT 1 FROM dobj_snapshot WHERE ns = $1) "
		"OR EXISTS (SELECT 1 FROM dobj_alarm WHERE ns = $1)";
	const char *v[1] = { key };
	PGresult *r = NULL;
	int rc = dobj__pg_exec(pg, sql, 1, v, NULL, NULL, 0, &r);

	if (rc >= 0)
		rc = PQgetvalue(r, 0, 0)[0] == 't';
	PQclear(r);
	return rc;
}

/* Move binding b's rows from its earlier name to its current one, inside
 * the transaction the caller opened. */
static int move_binding_rows(dobj__pg *pg, const dobj_config_binding *b)
{
	const char *from = NULL;
	PGresult *r = NULL;
	size_t j;
	int rc;

	for (j = 0; j < b->former_dirs_len; j++) {
		const char *key = key_of_dir(b->former_dirs[j]);
		if ((rc = rows_under(pg, key)) < 0)
			return rc;
		if (rc && from)
			return dobj_error_set(DOBJ_ESTATE, "class %s (binding %s) was renamed by "
				"migrations, and PostgreSQL holds objects under two of its earlier names "
				"(namespaces %s and %s): which are the class's is for you to say (delete "
				"the other's rows), so they were not moved", b->class_name, b->binding, from,
				key);
		if (rc)
			from = key;
	}
	if (!from)
		return DOBJ_OK;
	if ((rc = rows_under(pg, b->unique_key)) < 0)
		return rc;
	if (rc)
		return dobj_error_set(DOBJ_ESTATE, "class %s (binding %s) was renamed by a migration, "
			"and PostgreSQL holds objects under both its earlier name (namespace %s) and its "
			"current one (namespace %s): which are the class's is for you to say (delete the "
			"other's rows), so they were not moved", b->class_name, b->binding, from,
			b->unique_key);
	{
		static const char live[] = "SELECT min(o.node_id) FROM dobj_owner o JOIN dobj_node n "
			"ON n.node_id = o.node_id WHERE o.ns = $1 AND n.status = 'live' "
			"AND n.lease_until > now()";
		const char *v[1] = { from };
		if ((rc = dobj__pg_exec(pg, live, 1, v, NULL, NULL, 0, &r)) < 0)
			return rc;
		if (!PQgetisnull(r, 0, 0)) {
			rc = dobj_error_set(DOBJ_ESTATE, "class %s (binding %s) was renamed by a "
				"migration, and node %s holds objects of its earlier name (namespace %s): "
				"a node of the project before the rename would go on serving them under "
				"that name, so they were not moved to %s; stop the earlier version's nodes "
				"(or wait for their lease to lapse), then start this one", b->class_name,
				b->binding, PQgetvalue(r, 0, 0), from, b->unique_key);
			PQclear(r);
			return rc;
		}
		PQclear(r);
	}
	for (j = 0; j < sizeof(rename_tables) / sizeof(rename_tables[0]); j++) {
		char sql[96];
		const char *v[2] = { from, b->unique_key }, *t[1] = { rename_tables[j] };
		int exists;
		/* A schema of an earlier version (migrated after this, as the
		 * node starts) may lack a table: nothing of it to move. */
		if ((rc = dobj__pg_exec(pg, "SELECT to_regclass($1) IS NOT NULL", 1, t, NULL, NULL, 0,
			&r)) < 0)
			return rc;
		exists = PQgetvalue(r, 0, 0)[0] == 't';
		PQclear(r);
		if (!exists)
			continue;
		snprintf(sql, sizeof(sql), "UPDATE %s SET ns = $2 WHERE ns = $1", rename_tables[j]);
		if ((rc = dobj__pg_exec(pg, sql, 2, v, NULL, NULL, 0, &r)) < 0)
			return rc;
		PQclear(r);
	}
	return DOBJ_OK;
}

static int exec_simple_pg(dobj__pg *pg, const char *sql)
{
	PGresult *r = NULL;
	int rc = dobj__pg_exec(pg, sql, 0, NULL, NULL, NULL, 0, &r);

	PQclear(r);
	return rc;
}

int dobj__cluster_move_renamed(const dobj_config *cfg)
{
	const dobj_cluster_opts *o = cfg ? cfg->cluster : NULL;
	dobj__pg pg;
	size_t i;
	int rc = DOBJ_OK;

	if (!o || !o->url)
		return DOBJ_OK;
	memset(&pg, 0, sizeof(pg));
	pg.timeout_ms = opt_ms(o->timeout_ms, DOBJ_CLUSTER_TIMEOUT_MS);
	for (i = 0; i < cfg->bindings_len && rc == DOBJ_OK; i++) {
		const dobj_config_binding *b = &cfg->bindings[i];
		if (!b->former_dirs_len)
			continue;
		if (!pg.url && !(pg.url = dobj__strndup(o->url, o->url_len ? o->url_len :
			strlen(o->url)))) {
			rc = dobj_error_set(DOBJ_ENOMEM, "out of memory");
			break;
		}
		if ((rc = exec_simple_pg(&pg, "BEGIN")) < 0)
			break;
		/* Inside the transaction: a statement on a new connection would
		 * run outside it. */
		pg.no_reconnect = 1;
		if ((rc = exec_simple_pg(&pg, "SELECT pg_advisory_xact_lock(" RENAME_LOCK ")")) >= 0)
			rc = move_binding_rows(&pg, b);
		if (rc >= 0) {
			rc = exec_simple_pg(&pg, "COMMIT");
		} else {
			/* The failure is the message, not the ROLLBACK's outcome. */
			char state[sizeof(pg.sqlstate)], why[1200];
			memcpy(state, pg.sqlstate, sizeof(state));
			snprintf(why, sizeof(why), "%s", dobj_error_last());
			exec_simple_pg(&pg, "ROLLBACK");
			if (!strcmp(state, "42P01")) /* no dobj tables yet: nothing to move */
				rc = DOBJ_OK;
			else
				rc = dobj_error_set(rc, "%s", why);
		}
		pg.no_reconnect = 0;
	}
	dobj__pg_drop(&pg);
	free(pg.url);
	return rc;
}

/* ------------------------------------------------------------------- nodes */

int dobj__node_join(dobj__pg *pg, const char *addr, double ttl_ms, long long *node,
	double *view)
{
	char ttl[32];
	const char *v[2] = { addr, ttl };
	double sent = dobj__boot_ms();
	PGresult *r;
	int rc;

	snprintf(ttl, sizeof(ttl), "%.3f", ttl_ms);
	if ((rc = dobj__pg_exec(pg,
		"INSERT INTO dobj_node (addr, lease_until) "
		"VALUES ($1, now() + make_interval(secs => $2::float8 / 1000)) RETURNING node_id",
		2, v, NULL, NULL, 0, &r)) < 0)
		return rc;
	*node = atoll(PQgetvalue(r, 0, 0));
	*view = sent + 0.8 * ttl_ms;
	PQclear(r);
	return DOBJ_OK;
}

int dobj__node_leave(dobj__pg *pg, long long node_id)
{
	char node[32];
	const char *v[1] = { node };
	PGresult *r;
	int rc;

	snprintf(node, sizeof(node), "%lld", node_id);
	if ((rc = dobj__pg_exec(pg,
		"WITH r AS (UPDATE dobj_owner SET node_id = NULL WHERE node_id = $1) "
		"UPDATE dobj_node SET status = 'left', lease_until = least(lease_until, now()) "
		"WHERE node_id = $1",
		1, v, NULL, NULL, 0, &r)) < 0)
		return rc;
	PQclear(r);
	return DOBJ_OK;
}

size_t dobj__cluster_abort_all(dobj_rt *rt, const char *why)
{
	size_t i, j, n = 0;

	for (i = 0; i < rt->nns; i++) {
		dobj_ns *ns = rt->nss[i];
		for (;;) {
			dobj_obj *o = NULL;
			for (j = 0; j < ns->objs.cap && !o; j++)
				if (ns->objs.slots && ns->objs.slots[j].key) {
					dobj_obj *c = ns->objs.slots[j].value;
					if (c->cluster && !c->dead)
						o = c;
				}
			if (!o)
				break;
			dobj__abort(o, DOBJ_EABORTED, why);
			n++;
		}
	}
	return n;
}

int dobj_rt_cluster(dobj_rt *rt, const dobj_cluster_opts *o)
{
	struct dobj__cluster *cl;
	char *dir = NULL;
	size_t n;
	int rc;

	CHECK_THREAD(rt);
	if ((rc = dobj_cluster_opts_check(o)) < 0)
		return rc;
	if (rt->closing)
		return dobj_error_set(DOBJ_ECLOSED, DOBJ_MSG_CLOSED);
	if (rt->cluster)
		return dobj_error_set(DOBJ_ESTATE, "cluster: this runtime is already a node");
	if (rt->nns)
		return dobj_error_set(DOBJ_ESTATE,
			"cluster: join the cluster before binding namespaces");
	if (!rt->storage_dir)
		return dobj_error_set(DOBJ_EARG,
			"cluster mode needs a storage directory (the node's local copy of its objects)");
	if (rt->virtual_time)
		return dobj_error_set(DOBJ_EARG, "cluster mode needs real time (no virtual_time)");
	cl = calloc(1, sizeof(*cl));
	if (!cl)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	/* The node's cache: the storage folder, or the first of its .node-N
	 * folders no other node holds (several workers of one machine). */
	if ((rc = dobj__folder_node(rt->storage_dir, &dir, &cl->folder_fd)) < 0) {
		free(cl);
		return rc;
	}
	n = o->url_len ? o->url_len : strlen(o->url);
	cl->pg.url = dobj__strndup(o->url, n);
	n = o->node_addr ? (o->node_addr_len ? o->node_addr_len : strlen(o->node_addr)) : 0;
	cl->addr = dobj__strndup(o->node_addr ? o->node_addr : "", n);
	cl->pages = dobj__page_budget_new(DOBJ_CLUSTER_PAGE_CACHE_BYTES);
	if (!cl->pg.url || !cl->addr || !cl->pages) {
		rc = DOBJ_ENOMEM;
		goto fail;
	}
	cl->ttl_ms = opt_ms(o->ttl_ms, DOBJ_CLUSTER_TTL_MS);
	cl->grace_ms = o->grace_ms < 0 ? 0 : opt_ms(o->grace_ms, DOBJ_CLUSTER_GRACE_MS);
	cl->pg.timeout_ms = opt_ms(o->timeout_ms, DOBJ_CLUSTER_TIMEOUT_MS);
	cl->call_timeout_ms = opt_ms(o->version >= 2 ? o->call_timeout_ms : 0,
		DOBJ_CLUSTER_CALL_TIMEOUT_MS);
	cl->snap_bytes = o->version < 3 || o->snapshot_bytes == 0 ? DOBJ_CLUSTER_SNAPSHOT_BYTES
		: o->snapshot_bytes;
	cl->snap_part = o->version < 4 || o->snapshot_part_bytes == 0 ?
		DOBJ_CLUSTER_SNAPSHOT_PART_BYTES : o->snapshot_part_bytes;
	cl->rt = rt;
	dobj__commit_watch_init(cl);
	if ((rc = dobj__pg_check_url(cl->pg.url)) < 0 || (rc = migrate(&cl->pg, NULL)) < 0 ||
	    (rc = dobj__route_start(rt, cl)) < 0 ||
	    (rc = dobj__node_join(&cl->pg, cl->addr, cl->ttl_ms, &cl->node_id,
		&cl->lease_view)) < 0)
		goto fail;
	rt->cluster = cl;
	if ((rc = dobj__cluster_start(cl)) < 0 || (rc = dobj__snap_start(cl)) < 0 ||
	    (rc = dobj__act_start(cl)) < 0) {
		dobj__snap_stop(cl);
		dobj__cluster_stop(cl);
		rt->cluster = NULL;
		cl->pg.no_reconnect = 1;
		dobj__node_leave(&cl->pg, cl->node_id);
		goto fail;
	}
	free(rt->storage_dir);
	rt->storage_dir = dir;
	return DOBJ_OK;
fail:
	dobj__route_stop(rt);
	dobj__pg_drop(&cl->pg);
	close(cl->folder_fd);
	free(dir);
	free(cl->pg.url);
	free(cl->addr);
	dobj__page_budget_unref(cl->pages);
	free(cl);
	return rc;
}

long long dobj_rt_cluster_node(const dobj_rt *rt)
{
	return rt->cluster ? rt->cluster->node_id : 0;
}

void dobj__cluster_close(dobj_rt *rt)
{
	struct dobj__cluster *cl = rt->cluster;

	if (!cl)
		return;
	/* One statement releases every object still held and leaves; with
	 * PostgreSQL gone, the lease lapses by itself.  The node's connection
	 * (the lease keeper's since the join) may have been dropped by the
	 * server: one new connection is allowed, within the bound.  The
	 * released objects' cache markers are written meanwhile, within a
	 * bound too.  Then the calls this node still holds are answered (not
	 * run here: the callers find their objects free), and the route
	 * stops. */
	dobj__act_stop(cl);
	dobj__cluster_stop(cl);
	dobj__snap_stop(cl);
	dobj__node_leave(&cl->pg, cl->node_id);
	dobj__route_leave(rt);
	dobj__route_stop(rt);
	dobj__pg_drop(&cl->pg);
	rt->cluster = NULL;
	free(cl->pg.url);
	free(cl->addr);
	free(cl->alarm_keys);
	/* Incarnations still held (none, after the release above) keep it. */
	dobj__page_budget_unref(cl->pages);
	/* The folder goes last, after the activators wrote their cache markers
	 * (dobj__act_stop): another node may take it now. */
	close(cl->folder_fd);
	free(cl);
}

void dobj__cluster_closing(dobj_rt *rt)
{
	if (!rt->cluster)
		return;
	rt->cluster->closing = 1;
	/* What PostgreSQL confirms now is delivered; the rest fails.  The
	 * activators stay until dobj__cluster_close: the objects the close
	 * releases queue their cache markers there. */
	dobj__act_closing(rt->cluster);
	dobj__cluster_stop(rt->cluster);
	dobj__snap_stop(rt->cluster);
}

/* ----------------------------------------------------------------- objects */

char *dobj__cluster_path(dobj_obj *obj, const char *suffix)
{
	char hex[DOBJ_ID_HEX_LEN + 1];
	size_t n = strlen(obj->ns->dir) + DOBJ_ID_HEX_LEN + 32;
	char *p = malloc(n);

	if (!p) {
		dobj_error_set(DOBJ_ENOMEM, "out of memory");
		return NULL;
	}
	dobj_id_to_hex(&obj->id, hex);
	hex[DOBJ_ID_HEX_LEN] = '\0';
	snprintf(p, n, "%s/%s.sqlite%s", obj->ns->dir, hex, suffix);
	return p;
}

/* Claims and restores run on the activator (cluster_activate.c); the
 * first call parks at the object's gate meanwhile, and an alarm (`alarm`)
 * waits for it to end (2). */
static int activate(dobj_obj *obj, int alarm)
{
	struct dobj__cluster *cl = obj->ns->rt->cluster;
	int rc;

	if (!cl || obj->cluster)
		return DOBJ_OK;
	if (obj->act && !alarm && (rc = dobj__act_take(cl, obj)) != 2)
		return rc;
	cl->owner_node = 0;
	if (!cl->addr[0]) /* docs/cluster.md: a node nobody can reach only calls */
		return dobj_error_set(DOBJ_ESTATE, "cluster: this node has no node_addr, so it "
			"serves no object (its calls go to the nodes that do)");
	return alarm ? dobj__act_for_alarm(cl, obj) : dobj__act_begin(cl, obj);
}

int dobj__cluster_activate(dobj_obj *obj)
{
	return activate(obj, 0);
}

void dobj__cluster_release(dobj_obj *obj)
{
	struct dobj__cluster_obj *co = obj->cluster;

	if (obj->act && obj->ns->rt->cluster)
		dobj__act_drop(obj->ns->rt->cluster, obj);
	if (!co)
		return;
	obj->cluster = NULL;
	/* The file's hash is the object's activator's (off this thread), ahead
	 * of the object's next activation. */
	dobj__act_mark(obj->ns->rt->cluster, obj, dobj__snap_release(obj, co));
	/* Behind the incarnation's appends; best effort: if it fails, the
	 * claim of the next node waits for this node's lease instead. */
	dobj__cluster_queue_release(obj->ns->rt->cluster, obj, co);
}

/* ------------------------------------------------------------------ alarms */

int dobj__cluster_hold(dobj_ns *ns, const dobj_id *id, const char *name, size_t len,
	dobj_obj **out)
{
	dobj_obj *obj;
	char msg[600];
	int rc;

	*out = NULL;
	obj = dobj__obj_get(ns, id, name, len);
	if (!obj)
		return DOBJ_ENOMEM;
	if ((rc = activate(obj, 1)) == 2) {
		*out = obj; /* the alarm keeps it until it fires again */
		return 2;
	}
	if (rc < 0) {
		snprintf(msg, sizeof(msg), "%s", dobj_error_last());
		if (!obj->dead && !obj->constructed && obj->ntasks == 0 && obj->mapped)
			dobj__abort(obj, rc, msg); /* nobody waits on it: it just goes */
		dobj__obj_unref(obj);
		dobj_error_set(rc, "%s", msg);
		return rc == DOBJ_ESTATE ? 0 : rc;
	}
	*out = obj;
	return 1;
}

void dobj__cluster_reset(dobj_rt *rt)
{
	if (!rt->cluster)
		return;
	dobj__snap_reset_halt(rt->cluster);
	dobj__act_reset(rt->cluster);
	dobj__snap_reset_wait(rt->cluster);
}

void dobj__cluster_unhold(dobj_obj *obj)
{
	if (!obj)
		return;
	if (!obj->dead && !obj->constructed && obj->ntasks == 0 && obj->mapped)
		dobj__obj_evict(obj); /* made for the alarm, which did not run */
	dobj__obj_unref(obj);
}

static void watch_fired(void *data, int fired)
{
	dobj__watch *w = data;

	w->tm = NULL;
	if (!fired)
		return;
	if (w->fired)
		w->fired(w->owner);
	dobj__watch_update(w);
}

void dobj__watch_update(dobj__watch *w)
{
	int busy = w->busy(w->owner);

	if (busy && !w->rt->closing) {
		if (!w->held) {
			w->held = 1;
			w->rt->nkeep++;
		}
		if (w->fired && !w->tm)
			dobj__timer(w->rt, w->ms, watch_fired, w, 1, &w->tm);
	} else if (!busy) {
		dobj__watch_stop(w);
	}
}

void dobj__watch_stop(dobj__watch *w)
{
	dobj_timer *tm = w->tm;

	if (w->held) {
		w->held = 0;
		w->rt->nkeep--;
	}
	if (tm) {
		w->tm = NULL;
		dobj_timer_cancel(w->rt, tm);
	}
}

int dobj__cond_init(pthread_cond_t *c)
{
	pthread_condattr_t at;
	int rc;

	pthread_condattr_init(&at);
	pthread_condattr_setclock(&at, CLOCK_MONOTONIC);
	rc = pthread_cond_init(c, &at);
	pthread_condattr_destroy(&at);
	return rc;
}
