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

int dobj__pg_init_from(dobj__pg *pg, const dobj__pg *from)
{
	memset(pg, 0, sizeof(*pg));
	pg->timeout_ms = from->timeout_ms;
	if (!(pg->url = dobj__strndup(from->url, strlen(from->url))))
		return dobj_error_set(DOBJ_ENOMEM, "out of memory");
	return DOBJ_OK;
}

void dobj__pg_drop(dobj__pg *pg)
{
	PQclear(pg->early);
	pg->early = NULL;
	if (pg->conn) {
		PQfinish(pg->conn);
		pg->conn = NULL;
	}
	pg->prepared = 0;
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
	char set[320];

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
	 * hold a takeover for long.  Prepared statements keep their generic
	 * plan: left to choose, PostgreSQL planned the group-commit statement
	 * afresh on every run (custom plans for a one-row array looked cheaper),
	 * ~0.3 ms of the one-object commit's round trip, more than executing it.
	 * The application name tells a node's connections apart in
	 * pg_stat_activity. */
	snprintf(set, sizeof(set),
		"SET statement_timeout = %d; SET idle_in_transaction_session_timeout = %d; "
		"SET plan_cache_mode = force_generic_plan; SET application_name = 'dobj %s'",
		(int)pg->timeout_ms, (int)(pg->timeout_ms * 2), pg->role ? pg->role : "node");
	if (dobj__pg_exec(pg, set, 0, NULL, NULL, NULL, 0, &r) < 0)
		return DOBJ_ERROR;
	PQclear(r);
	return DOBJ_OK;
}

/* The running statement's bound. */
static double stmt_ms(const dobj__pg *pg)
{
	return pg->stmt_ms > 0 ? pg->stmt_ms : pg->timeout_ms;
}

/* The results that arrived, without waiting: 1 while the answer is still
 * coming, 0 once it is complete (*res: its last result, NULL if none). */
static int gather(dobj__pg *pg, PGresult **res)
{
	PGresult *r;

	for (;;) {
		if (PQisBusy(pg->conn))
			return 1;
		if (!(r = PQgetResult(pg->conn)))
			return 0;
		PQclear(*res);
		*res = r; /* the last result is the statement's answer */
	}
}

static int broken(dobj__pg *pg, PGresult *res)
{
	int rc;

	PQclear(res);
	pg->broken = 1;
	rc = pg_fail(DOBJ_ERROR, "lost the PostgreSQL connection",
		pg->conn ? PQerrorMessage(pg->conn) : NULL);
	dobj__pg_drop(pg);
	pg->sqlstate[0] = '\0';
	return rc;
}

int dobj__pg_give_up(dobj__pg *pg)
{
	dobj__pg_drop(pg);
	pg->sqlstate[0] = '\0';
	return dobj_error_set(DOBJ_ERROR, "cluster: PostgreSQL did not answer within %g s",
		stmt_ms(pg) / 1e3);
}

/* A complete answer: *out on success, else the server's error. */
static int outcome(dobj__pg *pg, PGresult *res, PGresult **out)
{
	int rc;

	if (!res)
		return broken(pg, res);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK) {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		rc = pg_fail(DOBJ_ERROR, "PostgreSQL", PQresultErrorMessage(res));
		snprintf(pg->sqlstate, sizeof(pg->sqlstate), "%s", state ? state : "");
		PQclear(res);
		if (PQstatus(pg->conn) != CONNECTION_OK) {
			pg->broken = 1; /* a fatal error: the backend went away */
			dobj__pg_drop(pg);
		}
		return rc;
	}
	pg->sqlstate[0] = '\0';
	*out = res;
	return DOBJ_OK;
}

/* Flush what was sent and wait for its results, up to `deadline`: the last
 * result is the statement's answer (*out on success). */
static int collect(dobj__pg *pg, double deadline, PGresult **out)
{
	PGresult *res = pg->early; /* what dobj__pg_poll read of it already */
	int f;

	pg->early = NULL;
	while ((f = PQflush(pg->conn)) == 1) {
		if (wait_fd(PQsocket(pg->conn), POLLOUT | POLLIN, deadline) <= 0)
			return dobj__pg_give_up(pg);
		if (!PQconsumeInput(pg->conn))
			return broken(pg, res);
	}
	if (f < 0)
		return broken(pg, res);
	while (gather(pg, &res)) {
		if (wait_fd(PQsocket(pg->conn), POLLIN, deadline) <= 0) {
			PQclear(res);
			return dobj__pg_give_up(pg);
		}
		if (!PQconsumeInput(pg->conn))
			return broken(pg, res);
	}
	return outcome(pg, res, out);
}

int dobj__pg_collect(dobj__pg *pg, double deadline, PGresult **out)
{
	*out = NULL;
	if (!pg->conn)
		return dobj_error_set(DOBJ_ERROR, "cluster: not connected to PostgreSQL");
	return collect(pg, deadline, out);
}

int dobj__pg_poll(dobj__pg *pg, int *want_write, PGresult **out)
{
	PGresult *res;
	int f = 0;

	*out = NULL;
	*want_write = 0;
	if (!pg->conn)
		return dobj_error_set(DOBJ_ERROR, "cluster: not connected to PostgreSQL");
	/* A result can come a read before the answer's end (an error is sent
	 * at once, a result with a notice sent at the commit): it is kept
	 * until then, not taken for no answer (a lost connection). */
	res = pg->early;
	pg->early = NULL;
	if (pg->flushing && (f = PQflush(pg->conn)) < 0)
		return broken(pg, res);
	pg->flushing = f == 1;
	*want_write = pg->flushing;
	if (!PQconsumeInput(pg->conn))
		return broken(pg, res);
	if (pg->flushing || gather(pg, &res)) {
		pg->early = res;
		return 1;
	}
	return outcome(pg, res, out);
}

static int ensure_connected(dobj__pg *pg)
{
	/* A connection idle since its last statement may have been closed by
	 * the server (restarted, killed): reading what is there tells, without
	 * waiting, and a new connection is made instead of failing a statement. */
	if (pg->conn && (!PQconsumeInput(pg->conn) || PQstatus(pg->conn) != CONNECTION_OK))
		dobj__pg_drop(pg);
	if (pg->conn)
		return DOBJ_OK;
	if (pg->no_reconnect)
		return dobj_error_set(DOBJ_ERROR, "cluster: not connected to PostgreSQL");
	return pg_connect(pg);
}

int dobj__pg_ensure(dobj__pg *pg)
{
	return ensure_connected(pg);
}

void dobj__pg_move(dobj__pg *to, dobj__pg *from)
{
	dobj__pg_drop(to);
	to->conn = from->conn;
	to->prepared = from->prepared;
	to->early = from->early;
	from->conn = NULL;
	from->prepared = 0;
	from->early = NULL;
}

static int sent_or_fail(dobj__pg *pg, int sent)
{
	int rc;

	if (sent)
		return DOBJ_OK;
	rc = pg_fail(DOBJ_ERROR, "PostgreSQL", PQerrorMessage(pg->conn));
	pg->broken = 1;
	dobj__pg_drop(pg);
	return rc;
}

static int exec_once(dobj__pg *pg, const char *sql, int nparams, const char *const *values,
	const int *lengths, const int *formats, int binary, PGresult **out)
{
	int rc;

	if ((rc = ensure_connected(pg)) < 0)
		return rc;
	/* Without parameters, the simple protocol: several statements in one
	 * string run as one transaction (the schema's migration). */
	if ((rc = sent_or_fail(pg, nparams == 0 && !binary ? PQsendQuery(pg->conn, sql)
	      : PQsendQueryParams(pg->conn, sql, nparams, NULL, values, lengths, formats,
		binary))) < 0)
		return rc;
	return collect(pg, dobj__boot_ms() + stmt_ms(pg), out);
}

/*
 * A connection that sat idle may be served by a backend that outlived its
 * server (killed and restarted): it answers the next statement with a fatal
 * error and closes, and the statement did not run.  Once, on a connection
 * that was already open, a lost connection is retried on a new one.  (Had
 * the statement run after all, every statement here is safe to repeat: a
 * repeated append is refused as a conflict, and the row found there, its
 * own, acknowledges it: own_rows in cluster_commit.c.)
 */
#define RETRY_ONCE(call) \
	do { \
		int reused_ = pg->conn != NULL; \
		pg->broken = 0; \
		rc = (call); \
		if (rc < 0 && reused_ && pg->broken && !pg->no_reconnect) { \
			pg->broken = 0; \
			rc = (call); \
		} \
	} while (0)

int dobj__pg_exec(dobj__pg *pg, const char *sql, int nparams, const char *const *values,
	const int *lengths, const int *formats, int binary, PGresult **out)
{
	int rc;

	*out = NULL;
	pg->sqlstate[0] = '\0'; /* a failure before any statement has none */
	RETRY_ONCE(exec_once(pg, sql, nparams, values, lengths, formats, binary, out));
	return rc;
}

/* The name of the statement prepared in `slot` on a connection. */
static void slot_name(int slot, char name[32])
{
	snprintf(name, 32, "dobj_%d", slot);
}

/* Prepare `sql` in `slot` on the open connection unless it is already:
 * parsed and planned once per connection. */
static int prepare_slot(dobj__pg *pg, int slot, const char *sql, int nparams)
{
	char name[32];
	PGresult *r;
	int rc;

	if (pg->prepared & (1u << slot))
		return DOBJ_OK;
	slot_name(slot, name);
	if ((rc = sent_or_fail(pg, PQsendPrepare(pg->conn, name, sql, nparams, NULL))) < 0 ||
	    (rc = collect(pg, dobj__boot_ms() + pg->timeout_ms, &r)) < 0)
		return rc;
	PQclear(r);
	pg->prepared |= 1u << slot;
	return DOBJ_OK;
}

static int prepared_once(dobj__pg *pg, int slot, const char *sql, int nparams,
	const char *const *values, const int *lengths, const int *formats, int binary,
	PGresult **out)
{
	char name[32];
	int rc;

	if ((rc = ensure_connected(pg)) < 0 || (rc = prepare_slot(pg, slot, sql, nparams)) < 0)
		return rc;
	slot_name(slot, name);
	if ((rc = sent_or_fail(pg, PQsendQueryPrepared(pg->conn, name, nparams, values, lengths,
		formats, binary))) < 0)
		return rc;
	return collect(pg, dobj__boot_ms() + stmt_ms(pg), out);
}

int dobj__pg_exec_prepared(dobj__pg *pg, int slot, const char *sql, int nparams,
	const char *const *values, const int *lengths, const int *formats, int binary,
	PGresult **out)
{
	int rc;

	*out = NULL;
	pg->sqlstate[0] = '\0';
	RETRY_ONCE(prepared_once(pg, slot, sql, nparams, values, lengths, formats, binary, out));
	return rc;
}

int dobj__pg_prepare(dobj__pg *pg, int slot, const char *sql, int nparams)
{
	int rc;

	/* As every statement here: a failure before the server answered (no
	 * connection, a send that failed) has no SQLSTATE, not the one an
	 * earlier statement left, and pg->broken tells of this one only. */
	pg->sqlstate[0] = '\0';
	pg->broken = 0;
	if ((rc = ensure_connected(pg)) < 0)
		return rc;
	return prepare_slot(pg, slot, sql, nparams);
}

int dobj__pg_send_prepared(dobj__pg *pg, int slot, int nparams, const char *const *values,
	const int *lengths, const int *formats)
{
	char name[32];
	int rc, f;

	/* Not read first as ensure_connected does (a syscall per commit): a
	 * connection the server closed while it sat idle fails the send, or
	 * answers it with its end, and the caller sends the statement again
	 * elsewhere (it did not run). */
	pg->sqlstate[0] = '\0';
	if (!pg->conn || !(pg->prepared & (1u << slot)) || PQstatus(pg->conn) != CONNECTION_OK)
		return dobj_error_set(DOBJ_ERROR, "cluster: not connected to PostgreSQL");
	/* pg->broken tells of this statement only (a flag left from an earlier
	 * connection made a server's refusal look like a lost connection, and
	 * the refused statement was run again). */
	pg->broken = 0;
	slot_name(slot, name);
	if ((rc = sent_or_fail(pg, PQsendQueryPrepared(pg->conn, name, nparams, values, lengths,
		formats, 0))) < 0)
		return rc;
	if ((f = PQflush(pg->conn)) < 0)
		return broken(pg, NULL);
	pg->flushing = f == 1;
	return pg->flushing;
}

int dobj__pg_simple(dobj__pg *pg, const char *sql)
{
	PGresult *r;
	int rc = dobj__pg_exec(pg, sql, 0, NULL, NULL, NULL, 0, &r);

	PQclear(r);
	return rc;
}

int dobj__pg_exec_sized(dobj__pg *pg, size_t bytes, const char *sql, int nparams,
	const char *const *values, const int *lengths, const int *formats, int binary,
	PGresult **out)
{
	double ms = pg->timeout_ms + (double)bytes * 1e3 / DOBJ__PG_MIN_RATE;
	char set[80];
	int rc;

	*out = NULL;
	/* The server's bound too (set per connection to the timeout): for
	 * this statement only, then back. */
	snprintf(set, sizeof(set), "SET LOCAL statement_timeout = %.0f", ceil(ms));
	if ((rc = dobj__pg_simple(pg, set)) < 0)
		return rc;
	pg->stmt_ms = ms;
	rc = dobj__pg_exec(pg, sql, nparams, values, lengths, formats, binary, out);
	pg->stmt_ms = 0;
	if (rc < 0)
		return rc;
	snprintf(set, sizeof(set), "SET LOCAL statement_timeout = %d", (int)pg->timeout_ms);
	if ((rc = dobj__pg_simple(pg, set)) < 0) {
		PQclear(*out);
		*out = NULL;
	}
	return rc;
}

/* The sized bound of dobj__pg_exec_sized, for a statement that runs on its
 * own (an append: no transaction for a SET LOCAL): the session's
 * statement_timeout is set for it and back.  Two more round trips, for a
 * statement whose data alone takes a megabyte's transfer. */
int dobj__pg_exec_prepared_sized(dobj__pg *pg, size_t bytes, int slot, const char *sql,
	int nparams, const char *const *values, const int *lengths, const int *formats,
	int binary, PGresult **out)
{
	double ms = pg->timeout_ms + (double)bytes * 1e3 / DOBJ__PG_MIN_RATE;
	char set[80];
	int rc;

	*out = NULL;
	if (bytes < DOBJ__PG_SIZED_FROM)
		return dobj__pg_exec_prepared(pg, slot, sql, nparams, values, lengths, formats,
			binary, out);
	snprintf(set, sizeof(set), "SET statement_timeout = %.0f", ceil(ms));
	if ((rc = dobj__pg_simple(pg, set)) < 0)
		return rc;
	pg->stmt_ms = ms;
	rc = dobj__pg_exec_prepared(pg, slot, sql, nparams, values, lengths, formats, binary, out);
	pg->stmt_ms = 0;
	/* Back to the connection's bound, whatever the statement's outcome; a
	 * connection left with the longer one goes (a new one starts with it).
	 * The statement's error and SQLSTATE stay what the caller reads. */
	if (pg->conn) {
		char msg[600], state[sizeof(pg->sqlstate)];
		int broke = pg->broken;
		snprintf(msg, sizeof(msg), "%s", rc < 0 ? dobj_error_last() : "");
		memcpy(state, pg->sqlstate, sizeof(state));
		snprintf(set, sizeof(set), "SET statement_timeout = %d", (int)pg->timeout_ms);
		if (dobj__pg_simple(pg, set) < 0)
			dobj__pg_drop(pg);
		memcpy(pg->sqlstate, state, sizeof(state));
		pg->broken = broke;
		if (rc < 0)
			dobj_error_set(rc, "%s", msg);
	}
	return rc;
}
