/*
 * A cluster node's port under a seeded, time-bounded mutation fuzz
 * (tests/c/fuzz.h), on a real PostgreSQL: a hostile peer connects, says
 * hello (or not), and sends mutated frames: calls (RPC and fetch, their
 * namespace key, ID, name, method and V8 payload), results, pings and
 * WebSocket frames, lengths and types included.  The node must refuse what
 * is malformed (an error answer, or the connection dropped) and go on
 * serving: a well-formed call from a fresh connection is answered after
 * every few inputs.  A crash, a hang, a leak or an unbounded allocation is
 * a finding (see fuzz.h).  Runs on the test's thread, which drives the
 * node's runtime (the node's network thread is its own).
 */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "dobj.h"
#include "pgtest.h"

#define FUZZ_INPUT_MAX 8192

static pgtest pg;
static dobj_rt *rt;
static dobj_ns *ns;
static char dir[64];
static int port;
static unsigned char input[FUZZ_INPUT_MAX];
static unsigned long calls_run, logged;

static void finding(const char *fmt, ...)
{
	va_list ap;
	const char *t = fz.target;
	check_failures++;
	fprintf(stderr, "fuzz: %s: ", fz.target);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	if (check_failures < 5) {
		fuzz_dump();
		fz.target = t;
	}
}

/* RPC: the number of arguments; fetch: a 200 whose body is the URL. */
static int box_step(dobj_task *t, void *data)
{
	(void)data;
	calls_run++;
	if (dobj_task_method(t)) {
		dobj_val *args = dobj_task_request(t);
		dobj_task_return_value(t, dobj_val_number((double)dobj_val_len(args)),
			(void (*)(void *))dobj_val_free);
	} else {
		dobj_msg *req = dobj_task_request(t);
		dobj_msg *res = dobj_msg_new_response(200, req->url, strlen(req->url));
		dobj_task_return_value(t, res, (void (*)(void *))dobj_msg_free);
	}
	return DOBJ_OK;
}

/* The node logs every refused peer: counted, not printed. */
static void quiet(void *data, long long node, const char *message)
{
	(void)data;
	(void)node;
	(void)message;
	logged++;
}

/* ---------------------------------------------------------- the frames */
/* What cluster_net.c and cluster_route.c read: [length 4][type 1][body]. */

static void put(unsigned char **p, uint64_t v, int n)
{
	while (n--)
		*(*p)++ = (unsigned char)(v >> (8 * n));
}

static void put_bytes(unsigned char **p, const void *s, size_t n)
{
	memcpy(*p, s, n);
	*p += n;
}

/* A frame: its length, its type, its body. */
static unsigned char *frame_begin(unsigned char **p, int type)
{
	unsigned char *start = *p;
	*p += 4;
	put(p, (uint64_t)type, 1);
	return start;
}

static void frame_end(unsigned char *start, unsigned char *end)
{
	unsigned char *q = start;
	put(&q, (uint64_t)(end - start - 4), 4);
}

static size_t hello(unsigned char *out)
{
	unsigned char *p = out, *f = frame_begin(&p, 1);
	put_bytes(&p, "DOBJ", 4);
	put(&p, 1, 2);
	put(&p, 99, 8);
	frame_end(f, p);
	return (size_t)(p - out);
}

/* A CALL of `kind` (2 RPC, 1 fetch) to the object named `name`. */
static size_t call(unsigned char *out, uint64_t id, int kind, const char *name, const char *method)
{
	unsigned char *p = out, *f = frame_begin(&p, 2), *blob = NULL;
	dobj_val *v;
	dobj_id oid;
	size_t len = 0;

	put(&p, id, 8);
	put(&p, (uint64_t)kind, 1);
	put(&p, 1, 1);
	put(&p, 7, 2);
	put_bytes(&p, "box-key", 7);
	CHECK_EQ_INT(dobj_id_from_name(dobj_ns_idkey(ns), name, strlen(name), &oid), DOBJ_OK);
	put_bytes(&p, oid.bytes, 32);
	put(&p, strlen(name), 4);
	put_bytes(&p, name, strlen(name));
	put(&p, kind == 2 ? strlen(method) : 0, 2);
	if (kind == 2) {
		put_bytes(&p, method, strlen(method));
		v = dobj_val_array();
		dobj_val_push(v, dobj_val_number(1));
		dobj_val_push(v, dobj_val_string("two", 3));
	} else {
		dobj_val *h = dobj_val_array();
		v = dobj_val_object();
		dobj_val_push(h, dobj_val_string("accept", 6));
		dobj_val_push(h, dobj_val_string("*/*", 3));
		dobj_val_put(v, "headers", 7, h);
		dobj_val_put(v, "url", 3, dobj_val_string("http://box/x?y", 14));
		dobj_val_put(v, "method", 6, dobj_val_string("POST", 4));
		dobj_val_put(v, "status", 6, dobj_val_number(0));
		dobj_val_put(v, "body", 4, dobj_val_bytes("hi", 2));
	}
	CHECK_EQ_INT(dobj_val_encode(v, &blob, &len), DOBJ_OK);
	put_bytes(&p, blob, len);
	free(blob);
	dobj_val_free(v);
	frame_end(f, p);
	return (size_t)(p - out);
}

/* A frame of `type` with a link and an op (WebSocket frames), or any body. */
static size_t other(unsigned char *out, int type, uint64_t link, int op, const char *rest)
{
	unsigned char *p = out, *f = frame_begin(&p, type);
	put(&p, link, 8);
	put(&p, (uint64_t)op, 1);
	put_bytes(&p, rest, strlen(rest));
	frame_end(f, p);
	return (size_t)(p - out);
}

/* A frame without a body (a ping, a pong). */
static size_t empty(unsigned char *out, int type)
{
	unsigned char *p = out, *f = frame_begin(&p, type);
	frame_end(f, p);
	return (size_t)(p - out);
}

static unsigned char seed_buf[8][1024];
static fuzz_seed seeds[8];
static size_t nseeds;

static void make_seeds(void)
{
	size_t n;

	/* hello, an RPC, a fetch, a ping */
	n = hello(seed_buf[0]);
	n += call(seed_buf[0] + n, 1, 2, "a", "count");
	n += call(seed_buf[0] + n, 2, 1, "b", "");
	n += empty(seed_buf[0] + n, 4);
	seeds[nseeds].p = seed_buf[0];
	seeds[nseeds++].len = n;
	/* hello, WebSocket frames of links nobody has, a result, a pong */
	n = hello(seed_buf[1]);
	n += other(seed_buf[1] + n, 7, 1, 1, "text");
	n += other(seed_buf[1] + n, 7, 1, 3, "\x03\xe8\x01" "bye");
	n += other(seed_buf[1] + n, 6, 2, 2, "bin");
	n += other(seed_buf[1] + n, 3, 7, 0, "");
	n += empty(seed_buf[1] + n, 5);
	seeds[nseeds].p = seed_buf[1];
	seeds[nseeds++].len = n;
	/* no hello: a call at once */
	n = call(seed_buf[2], 5, 2, "c", "count");
	seeds[nseeds].p = seed_buf[2];
	seeds[nseeds++].len = n;
	/* hello and many calls (pipelined) */
	n = hello(seed_buf[3]);
	n += call(seed_buf[3] + n, 10, 2, "a", "x");
	n += call(seed_buf[3] + n, 11, 2, "d", "count");
	n += call(seed_buf[3] + n, 12, 1, "a", "");
	seeds[nseeds].p = seed_buf[3];
	seeds[nseeds++].len = n;
}

/* ---------------------------------------------------------- the client */

static int connect_node(void)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Send p, then (shut) close the write side, driving the node's runtime,
 * until the node closed the connection, or (want_result) until a whole
 * RESULT frame arrived (its status byte in *status).  The bytes read go
 * to got (cap).  -1 past limit_s. */
static long exchange(const unsigned char *p, size_t len, int want_result, int *status,
	double limit_s)
{
	static unsigned char got[1 << 16];
	double until = fuzz_now() + limit_s;
	int fd = connect_node(), shut = 0;
	size_t off = 0, have = 0;
	long total = 0;

	if (fd < 0)
		return -1;
	for (;;) {
		struct pollfd pf[2] = {
			{ dobj_rt_fd(rt), POLLIN, 0 },
			{ fd, (short)(POLLIN | (shut || off == len ? 0 : POLLOUT)), 0 },
		};
		double next = dobj_rt_next_timer_ms(rt), left = until - fuzz_now();
		int timeout = (int)(left * 1e3) + 1;

		if (left <= 0) {
			close(fd);
			return -1;
		}
		if (next >= 0 && next < timeout)
			timeout = (int)ceil(next) + 1;
		if (poll(pf, 2, timeout) < 0 && errno != EINTR)
			break;
		if (pf[0].revents)
			dobj_rt_process(rt);
		if (off < len && (pf[1].revents & POLLOUT)) {
			ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				off = len;
		}
		if (off == len && !shut && !want_result) {
			shutdown(fd, SHUT_WR);
			shut = 1;
		}
		if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(fd, got + have, sizeof(got) - have, 0);
			if (n == 0 || (n < 0 && errno != EAGAIN))
				break;
			if (n > 0) {
				total += n;
				have += (size_t)n;
				/* Frames: a RESULT ends a probe; the rest is dropped. */
				while (have >= 5) {
					size_t flen = ((size_t)got[0] << 24) | ((size_t)got[1] << 16) |
						((size_t)got[2] << 8) | got[3];
					if (have < 4 + flen)
						break;
					if (want_result && got[4] == 3 && flen >= 10) {
						*status = got[13];
						close(fd);
						return total;
					}
					memmove(got, got + 4 + flen, have - 4 - flen);
					have -= 4 + flen;
				}
				if (have == sizeof(got))
					have = 0; /* a frame larger than we keep: not ours to check */
			}
		}
	}
	close(fd);
	return want_result ? -2 : total;
}

/* ---------------------------------------------------------------- test */

static void test_node_port(void)
{
	static const char *const dict[] = { "\x00\x00\x00\x01", "\x00\x00\x00\x0f\x01", "DOBJ",
		"\x01", "\x02", "\x03", "\x04", "\x05", "\x06", "\x07", "\x08", "\xff\xff\xff\xff",
		"\x06\x40\x00\x00", "box-key", "\x00\x07", "\xff\xfe", "count", "fetch", "constructor",
		"\xff\x0f", "\xff\x0fo\"\x03url", "\xed\xa0\x80", NULL };
	unsigned char probe[1024];
	size_t plen = hello(probe);
	unsigned long answered = 0;
	int status = -1;

	plen += call(probe + plen, 77, 2, "probe", "count");
	make_seeds();
	/* The first call claims the object (PostgreSQL): the probe's bound. */
	CHECK(exchange(probe, plen, 1, &status, 20) > 0 && status == 0);
	fuzz_begin("node_port");
	while (fuzz_more()) {
		size_t len = fuzz_next_input(input, sizeof(input), dict, seeds, nseeds);

		fuzz_input(input, len);
		if (exchange(input, len, 0, NULL, 10) == -1) {
			finding("the node did not close the connection in 10 s");
			break;
		}
		if ((fz.runs & 7) == 0 || fz.replay) {
			status = -1;
			if (exchange(probe, plen, 1, &status, 10) <= 0 || status != 0) {
				finding("a well-formed call after it was not answered (status %d)", status);
				break;
			}
			answered++;
		}
	}
	{
		char what[160];
		snprintf(what, sizeof(what), "%lu calls run, %lu probes answered, %lu log lines", calls_run, answered, logged);
		fuzz_end(what);
	}
}

static int node_port(void)
{
	PGconn *c = pgtest_connect(&pg);
	PGresult *r;
	const char *colon, *vals[1];
	char q[32];
	int p = -1;

	snprintf(q, sizeof(q), "%lld", dobj_rt_cluster_node(rt));
	vals[0] = q;
	r = PQexecParams(c, "SELECT addr FROM dobj_node WHERE node_id = $1", 1, NULL, vals, NULL,
		NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
	    (colon = strrchr(PQgetvalue(r, 0, 0), ':')))
		p = atoi(colon + 1);
	PQclear(r);
	PQfinish(c);
	return p;
}

int main(void)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_cluster_opts co = DOBJ_CLUSTER_OPTS_INIT;
	dobj_class k = { 0 };
	char cmd[128];

	fuzz_init();
	if (pgtest_start(&pg) < 0)
		return 1;
	snprintf(dir, sizeof(dir), "/tmp/dobj-fuzz-node-XXXXXX");
	CHECK(mkdtemp(dir) != NULL);
	o.storage_dir = dir;
	o.idle_timeout_ms = -1;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	co.url = pg.url;
	co.node_addr = "127.0.0.1:0";
	CHECK_EQ_INT(dobj_rt_cluster(rt, &co), DOBJ_OK);
	dobj_rt_cluster_set_log(rt, quiet, NULL);
	k.name = "Box";
	k.flags = DOBJ_CLASS_FETCH;
	k.step = box_step;
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "BOX", 3, "box-key", 7, &k), DOBJ_OK);
	port = node_port();
	CHECK(port > 0);
	if (port > 0)
		RUN(test_node_port);
	dobj_rt_free(rt);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_EQ_INT(system(cmd), 0);
	pgtest_stop(&pg);
	fuzz_finish();
	return DONE();
}
