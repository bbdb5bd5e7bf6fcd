/*
 * PostgreSQL through libpq, with every wait bounded.
 *
 * libpq's blocking calls wait as long as the kernel lets them (a server that
 * is stopped, not dead, never answers): everything here uses the
 * asynchronous API and waits with poll() up to a deadline.  A connection
 * that missed its deadline or broke is dropped; the next operation
 * reconnects (unless told not to).
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster_int.h"

double dobj__boot_ms(void)
{
	struct timespec ts;

	/* CLOCK_BOOTTIME keeps counting while the process is stopped (SIGSTOP,
	 * a suspended VM): a lease view on it never believes a stopped node. */
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The message of libpq's last error, on one line, without its newline. */
static int pg_fail(int code, const char *what, const char *msg)
{
	char buf[400];
	size_t n;

	snprintf(buf, sizeof(buf), "%s", msg ? msg : "");
	n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	return dobj_error_set(code, "cluster: %s: %s", what, buf[0] ? buf : "unknown error");
}

int dobj__pg_check_url(const char *url)
{
	char *err = NULL;
	PQconninfoOption *o = PQconninfoParse(url, &err);

	if (!o) {
		int rc = pg_fail(DOBJ_EARG, "invalid PostgreSQL URL", err ? err : "out of memory");
		PQfreemem(err);
		return rc;
	}
	PQconninfoFree(o);
	return DOBJ_OK;
}

/* Wait until the socket is ready for `events`, up to `deadline` (boot ms). */
static int wait_fd(int fd, short events, double deadline)
{
	struct pollfd p;
	double left;
	int n;

	for (;;) {
		left = deadline - dobj__boot_ms();
		if (left <= 0)
			return 0;
		p.fd = fd;
		p.events = events;
		p.revents = 0;
		n = poll(&p, 1, (int)ceil(left));
		if (n > 0)
			return 1;
		if (n == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

void dobj__pg_drop(dobj__pg *pg)
{
	if (pg->conn) {
		PQfinish(pg->conn);
		pg->conn = NULL;
	}
}

/* The server's notices (CREATE ... IF NOT EXISTS) are not for the user. */
static void no_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static int pg_connect(dobj__pg *pg)
{
	double deadline = dobj__boot_ms() + pg->timeout_ms;
	PostgresPollingStatusType st = PGRES_POLLING_WRITING;
	PGconn *c;
	PGresult *r;
	char set[160];

	dobj__pg_drop(pg);
	c = PQconnectStart(pg->url);
	if (!c)
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	if (PQstatus(c) == CONNECTION_BAD) {
		pg_fail(DOBJ_ERROR, "cannot connect to PostgreSQL", PQerrorMessage(c));
		PQfinish(c);
		return DOBJ_ERROR;
	}
	while (st != PGRES_POLLING_OK) {
		int ready;
		if (st == PGRES_POLLING_FAILED) {
			pg_fail(DOBJ_ERROR, "cannot connect to PostgreSQL", PQerrorMessage(c));
			PQfinish(c);
			return DOBJ_ERROR;
		}
		ready = wait_fd(PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline);
		if (ready <= 0) {
			PQfinish(c);
			return dobj_error_set(DOBJ_ERROR,
				"cluster: cannot connect to PostgreSQL: no answer within %g s",
				pg->timeout_ms / 1e3);
		}
		st = PQconnectPoll(c);
	}
	PQsetNoticeProcessor(c, no_notice, NULL);
	if (PQsetnonblocking(c, 1) != 0) {
		pg_fail(DOBJ_ERROR, "cannot use the PostgreSQL connection", PQerrorMessage(c));
		PQfinish(c);
		return DOBJ_ERROR;
	}
	pg->conn = c;
	/* The server bounds its own side too: a statement never outlives the
	 * client's wait by much, and a node stopped inside a transaction cannot
	 * hold a takeover for long. */
	snprintf(set, sizeof(set),
		"SET statement_timeout = %d; SET idle_in_transaction_session_timeout = %d",
		(int)pg->timeout_ms, (int)(pg->timeout_ms * 2));
	if (dobj__pg_exec(pg, set, 0, NULL, NULL, NULL, 0, &r) < 0)
		return DOBJ_ERROR;
	PQclear(r);
	return DOBJ_OK;
}

int dobj__pg_exec(dobj__pg *pg, const char *sql, int nparams, const char *const *values,
	const int *lengths, const int *formats, int binary, PGresult **out)
{
	double deadline;
	PGresult *res = NULL, *r;
	int rc, f;

	*out = NULL;
	if (!pg->conn || PQstatus(pg->conn) != CONNECTION_OK) {
		if (pg->no_reconnect)
			return dobj_error_set(DOBJ_ERROR, "cluster: not connected to PostgreSQL");
		if ((rc = pg_connect(pg)) < 0)
			return rc;
	}
	deadline = dobj__boot_ms() + pg->timeout_ms;
	/* Without parameters, the simple protocol: several statements in one
	 * string run as one transaction (the schema's migration). */
	if (!(nparams == 0 && !binary ? PQsendQuery(pg->conn, sql)
	      : PQsendQueryParams(pg->conn, sql, nparams, NULL, values, lengths, formats, binary))) {
		rc = pg_fail(DOBJ_ERROR, "PostgreSQL", PQerrorMessage(pg->conn));
		dobj__pg_drop(pg);
		return rc;
	}
	while ((f = PQflush(pg->conn)) == 1) {
		if (wait_fd(PQsocket(pg->conn), POLLOUT | POLLIN, deadline) <= 0)
			goto timeout;
		if (!PQconsumeInput(pg->conn))
			goto broken;
	}
	if (f < 0)
		goto broken;
	for (;;) {
		while (PQisBusy(pg->conn)) {
			if (wait_fd(PQsocket(pg->conn), POLLIN, deadline) <= 0)
				goto timeout;
			if (!PQconsumeInput(pg->conn))
				goto broken;
		}
		r = PQgetResult(pg->conn);
		if (!r)
			break;
		if (res)
			PQclear(res);
		res = r; /* the last result is the statement's answer */
	}
	if (!res)
		goto broken;
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		rc = pg_fail(DOBJ_ERROR, "PostgreSQL", PQresultErrorMessage(res));
		snprintf(pg->sqlstate, sizeof(pg->sqlstate), "%s", state ? state : "");
		PQclear(res);
		if (PQstatus(pg->conn) != CONNECTION_OK)
			dobj__pg_drop(pg);
		return rc;
	}
	pg->sqlstate[0] = '\0';
	*out = res;
	return DOBJ_OK;
timeout:
	PQclear(res);
	dobj__pg_drop(pg);
	pg->sqlstate[0] = '\0';
	return dobj_error_set(DOBJ_ERROR, "cluster: PostgreSQL did not answer within %g s",
		pg->timeout_ms / 1e3);
broken:
	PQclear(res);
	rc = pg_fail(DOBJ_ERROR, "lost the PostgreSQL connection",
		pg->conn ? PQerrorMessage(pg->conn) : NULL);
	dobj__pg_drop(pg);
	pg->sqlstate[0] = '\0';
	return rc;
}

int dobj__pg_simple(dobj__pg *pg, const char *sql)
{
	PGresult *r;
	int rc = dobj__pg_exec(pg, sql, 0, NULL, NULL, NULL, 0, &r);

	PQclear(r);
	return rc;
}
