/*
 * A node whose link to PostgreSQL is slow (a proxy of the test's that
 * passes PostgreSQL's answers at 4 MiB/s) restores an object whose log has
 * a 12 MiB row: each statement of the restore is bounded by the timeout
 * plus what it carries at DOBJ__PG_MIN_RATE, as an append is, never by the
 * timeout alone (the first statement carried the row under the plain 2 s
 * timeout: every activation of the object failed, "did not answer within
 * 2 s", on a link that passes 1 MiB/s and more).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/* testhost.h has a send() of its own: the socket one is not used here. */
#define send testhost_send
#include "testhost.h"
#include "pgtest.h"
#include "clustertest.h"
#undef send

static pgtest pg;

/* ------------------------------------------------------- the slow proxy */

#define PROXY_RATE (4.0 * 1048576) /* bytes a second, from PostgreSQL */

static int proxy_lfd = -1, proxy_stop, pg_port;
static pthread_t proxy_th;

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w <= 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* One connection: the client's bytes go at once, PostgreSQL's at
 * PROXY_RATE; either side's end ends both. */
static void *relay(void *arg)
{
	int c = (int)(intptr_t)arg, s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)pg_port) };
	unsigned char buf[16384];

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		for (;;) {
			struct pollfd p[2] = { { c, POLLIN, 0 }, { s, POLLIN, 0 } };
			ssize_t n;
			if (poll(p, 2, 200) < 0 || __atomic_load_n(&proxy_stop, __ATOMIC_ACQUIRE))
				break;
			if (p[0].revents) {
				if ((n = read(c, buf, sizeof(buf))) <= 0 || write_all(s, buf, (size_t)n) < 0)
					break;
			}
			if (p[1].revents) {
				if ((n = read(s, buf, sizeof(buf))) <= 0 || write_all(c, buf, (size_t)n) < 0)
					break;
				usleep((useconds_t)((double)n * 1e6 / PROXY_RATE));
			}
		}
	}
	if (s >= 0)
		close(s);
	close(c);
	return NULL;
}

static void *proxy_main(void *arg)
{
	(void)arg;
	while (!__atomic_load_n(&proxy_stop, __ATOMIC_ACQUIRE)) {
		struct pollfd p = { proxy_lfd, POLLIN, 0 };
		pthread_t th;
		int c;
		if (poll(&p, 1, 100) <= 0)
			continue;
		if ((c = accept(proxy_lfd, NULL, NULL)) < 0)
			continue;
		if (pthread_create(&th, NULL, relay, (void *)(intptr_t)c) == 0)
			pthread_detach(th);
		else
			close(c);
	}
	return NULL;
}

/* The proxy's URL for pg (postgresql://dobj@127.0.0.1:PORT/postgres). */
static void proxy_start(char *url, size_t cap)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sa);
	const char *colon = strrchr(pg.url, ':'), *slash;

	CHECK(colon != NULL && (slash = strchr(colon, '/')) != NULL);
	pg_port = atoi(colon + 1);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	proxy_lfd = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(proxy_lfd >= 0);
	CHECK(bind(proxy_lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(proxy_lfd, 64) == 0);
	CHECK(getsockname(proxy_lfd, (struct sockaddr *)&sa, &sl) == 0);
	snprintf(url, cap, "%.*s:%d%s", (int)(colon - pg.url), pg.url, ntohs(sa.sin_port), slash);
	CHECK_EQ_INT(pthread_create(&proxy_th, NULL, proxy_main, NULL), 0);
}

static void proxy_end(void)
{
	__atomic_store_n(&proxy_stop, 1, __ATOMIC_RELEASE);
	pthread_join(proxy_th, NULL);
	close(proxy_lfd);
	usleep(300000); /* the relays see the flag within a poll */
}

/* ------------------------------------------------------------ the nodes */

/* The Counter's, and "big": 12 MB of rows in one write (one log row). */
static int big_step(dobj_task *t, void *data)
{
	static const char big[] = "CREATE TABLE IF NOT EXISTS big (b BLOB); "
		"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12) "
		"INSERT INTO big SELECT randomblob(1000000) FROM n";
	tv *req = dobj_task_request(t);
	dobj_storage *st;
	dobj_cursor *c = NULL;
	int rc;

	(void)data;
	if (strcmp(req->s, "big"))
		return counter_answer(t);
	if ((rc = dobj_obj_storage(dobj_task_obj(t), &st)) < 0)
		return rc;
	CHECK_EQ_INT(dobj_sql_exec(st, big, strlen(big), NULL, 0, &c), DOBJ_OK);
	dobj_cursor_free(c);
	respond(t, 200, "ok");
	return DOBJ_OK;
}

static dobj_rt *node_at(const char *url, const char *dir)
{
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;

	co.url = url;
	co.node_addr = "127.0.0.1:0";
	co.grace_ms = -1;
	co.snapshot_bytes = -1; /* the row stays in the log (a snapshot is read by parts) */
	return cluster_node(&pg, dir, &co, DOBJ_OK, "slow-key", big_step, DOBJ_CLASS_FETCH);
}

/* ------------------------------------------------------------------ tests */

static void test_a_big_log_row_is_restored_over_a_slow_link(void)
{
	char d1[64], d2[64], url[300];
	dobj_rt *a, *b;
	dobj_stub *s;
	int code;
	const char *out;

	a = node_at(pg.url, testhost_tmpdir(d1, "dobj-slow"));
	s = stub_for(a, "big");
	CHECK_STR(fetch(a, s, "count", NULL), "1");
	CHECK_STR(fetch(a, s, "big", NULL), "ok");
	CHECK_STR(fetch(a, s, "count", NULL), "2");
	dobj_stub_free(s);
	dobj_rt_free(a); /* releases the object */
	CHECK(pgtest_sql(&pg, NULL, "SELECT max(octet_length(frames)) FROM dobj_wal") > 12000000);
	proxy_start(url, sizeof(url));
	b = node_at(url, testhost_tmpdir(d2, "dobj-slow"));
	s = stub_for(b, "big");
	out = fetch(b, s, "count", &code);
	if (code != DOBJ_OK)
		fprintf(stderr, "the restore failed: %s\n", out);
	CHECK_EQ_INT(code, DOBJ_OK);
	CHECK_STR(out, "3");
	dobj_stub_free(s);
	dobj_rt_free(b);
	proxy_end();
	testhost_rm_rf(d1);
	testhost_rm_rf(d2);
}

int main(void)
{
	if (pgtest_start(&pg) < 0)
		return 1;
	RUN(test_a_big_log_row_is_restored_over_a_slow_link);
	pgtest_stop(&pg);
	return DONE();
}
