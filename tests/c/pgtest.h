/* A throw-away PostgreSQL for C tests, from tests/cluster/pgtmp.sh (the
 * script every suite uses).  The server goes away with the test process
 * however it ends: the test holds the server's lifeline (a FIFO) open, and
 * the script's watchdog stops the server when it is closed. */
#ifndef DOBJ_TEST_PG_H
#define DOBJ_TEST_PG_H
#include <fcntl.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct pgtest {
	char url[256];
	char dir[256];
	int lifeline;
} pgtest;

static int pgtest_run(const char *verb, const char *dir)
{
	char cmd[768];
	snprintf(cmd, sizeof(cmd), "'%s' %s '%s'", PGTMP, verb, dir);
	return system(cmd);
}

/* 0 when started; -1 (with a message) when PostgreSQL is not installed. */
static int pgtest_start(pgtest *pg)
{
	char cmd[512], path[300];
	FILE *f;
	int ok;

	memset(pg, 0, sizeof(*pg));
	pg->lifeline = -1;
	snprintf(cmd, sizeof(cmd), "'%s' start", PGTMP);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	ok = fscanf(f, "%255s %255s", pg->url, pg->dir) == 2;
	if (pclose(f) != 0 || !ok) {
		fprintf(stderr, "pgtest: could not start PostgreSQL (%s)\n", PGTMP);
		return -1;
	}
	/* Read-write: opening never blocks, and the watchdog sees a writer. */
	snprintf(path, sizeof(path), "%s/lifeline", pg->dir);
	pg->lifeline = open(path, O_RDWR | O_CLOEXEC);
	return 0;
}

/* Does a new server (another suite's, on the same ports) get pg's port while
 * pg's server is down?  1 when it did (it is stopped again), 0 when not. */
static inline int pgtest_port_taken(const pgtest *pg)
{
	char cmd[768], path[300], port[16] = "", url[256], dir[256];
	FILE *f;
	int got;

	snprintf(path, sizeof(path), "%s/port", pg->dir);
	f = fopen(path, "r");
	CHECK(f != NULL && fscanf(f, "%15s", port) == 1);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "DOBJ_PG_PORTS=%s-%s '%s' start 2>/dev/null", port, port, PGTMP);
	f = popen(cmd, "r");
	CHECK(f != NULL);
	got = fscanf(f, "%255s %255s", url, dir) == 2;
	pclose(f);
	if (got)
		pgtest_run("stop", dir);
	return got;
}

static void pgtest_stop(pgtest *pg)
{
	if (pg->lifeline >= 0)
		close(pg->lifeline);
	pg->lifeline = -1;
	if (pg->dir[0])
		pgtest_run("stop", pg->dir);
	pg->dir[0] = '\0';
}

/* The test's own connection to the server (the caller PQfinish()es it). */
static PGconn *pgtest_connect(const pgtest *pg)
{
	PGconn *c = PQconnectdb(pg->url);
	CHECK(PQstatus(c) == CONNECTION_OK);
	return c;
}

/* One statement on `c` (on a connection of its own when NULL); the first
 * cell as a number, -1 when there is none. */
static long long pgtest_sql(const pgtest *pg, PGconn *c, const char *q)
{
	PGconn *own = c ? NULL : (c = pgtest_connect(pg));
	PGresult *r = PQexec(c, q);
	long long v = -1;

	CHECK(PQresultStatus(r) == PGRES_TUPLES_OK || PQresultStatus(r) == PGRES_COMMAND_OK);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		v = atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	if (own)
		PQfinish(own);
	return v;
}

/* pgtest_sql of the statement printf makes of `fmt` and what follows it
 * (up to 8 KiB). */
static inline long long pgtest_sqlf(const pgtest *pg, PGconn *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline long long pgtest_sqlf(const pgtest *pg, PGconn *c, const char *fmt, ...)
{
	char q[8192];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(q, sizeof(q), fmt, ap);
	va_end(ap);
	CHECK(n >= 0 && (size_t)n < sizeof(q));
	return pgtest_sql(pg, c, q);
}

#endif
