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
#include "internal.h" /* dobj__val_encode_refs: stubs in a call's arguments */
#include "pgtest.h"

#define FUZZ_INPUT_MAX 8192

static pgtest pg;
static dobj_rt *rt;
static dobj_ns *ns;
static char dir[64];
static int port;
static unsigned char input[FUZZ_INPUT_MAX];
static unsigned long calls_run, logged, ws_events, links;
static int last_code;          /* of the last close the object heard */
static char last_reason[128];

/* RPC: the number of arguments; fetch: a 200 whose body is the URL, or
 * for a URL with "/ws" a WebSocket (a 101) whose messages are echoed. */
static int box_step(dobj_task *t, void *data)
{
	const dobj_ws_event *ev = dobj_task_ws_event(t);

	(void)data;
	calls_run++;
	if (ev) {
		ws_events++;
		/* What the object hears is what a WebSocket may say (RFC 6455):
		 * UTF-8 text, a close code a close may carry (or 1005, 1006) and
		 * a UTF-8 reason. */
		if (dobj_task_call_kind(t) == DOBJ_CALL_WS_MESSAGE && ev->text &&
		    !fuzz_utf8_valid(ev->data, ev->len))
			fuzz_finding("the object heard a text message that is not UTF-8");
		if (dobj_task_call_kind(t) == DOBJ_CALL_WS_ERROR && !fuzz_utf8_valid(ev->data, ev->len))
			fuzz_finding("the object heard an error that is not UTF-8");
		if (dobj_task_call_kind(t) == DOBJ_CALL_WS_CLOSE) {
			last_code = ev->code;
			snprintf(last_reason, sizeof(last_reason), "%.*s", (int)ev->reason_len, ev->reason);
			if (!fuzz_utf8_valid((const unsigned char *)ev->reason, ev->reason_len))
				fuzz_finding("the object heard a close reason that is not UTF-8 (code %d)",
					ev->code);
			if (ev->code != 1005 && ev->code != 1006 && (ev->code < 1000 ||
			    ev->code >= 5000 || ev->code == 1004 || ev->code == 1015))
				fuzz_finding("the object heard close code %d", ev->code);
		}
		if (dobj_task_call_kind(t) == DOBJ_CALL_WS_MESSAGE)
			dobj_ws_send(ev->ws, ev->data, ev->len, ev->text);
		else if (dobj_task_call_kind(t) == DOBJ_CALL_WS_CLOSE && ev->code != 1005 &&
		    ev->code != 1006)
			dobj_ws_close(ev->ws, ev->code, ev->reason, ev->reason_len);
		dobj_task_return(t, NULL);
	} else if (dobj_task_method(t)) {
		dobj_val *args = dobj_task_request(t);
		dobj_task_return_value(t, dobj_val_number((double)dobj_val_len(args)),
			(void (*)(void *))dobj_val_free);
	} else {
		dobj_msg *req = dobj_task_request(t);
		dobj_msg *res = dobj_msg_new_response(200, req->url, strlen(req->url));
		dobj_ws *client, *server;
		if (res && strstr(req->url, "/ws") && dobj_ws_pair_new(&client, &server) == DOBJ_OK) {
			if (dobj_ws_accept(dobj_task_obj(t), server, NULL, NULL, NULL, 0) == DOBJ_OK) {
				res->status = 101;
				dobj_msg_set_web_socket(res, client);
				dobj_ws_send(server, "welcome", 7, 1);
			}
			dobj_ws_unref(client);
			dobj_ws_unref(server);
		}
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
static size_t call_to(unsigned char *out, uint64_t id, int kind, const char *name,
	const char *method, const char *url);
/* What cluster_net.c and cluster_route.c read: [length 4][type 1][body];
 * a WebSocket frame's body: [link 8][op 1] and the op's (cluster_ws.c). */
enum { OP_TEXT = 0, OP_BINARY = 1, OP_CLOSE = 2, OP_ERROR = 3, OP_ACK = 4 };

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
	return call_to(out, id, kind, name, method, "http://box/x?y");
}

/* The header of a CALL to `name` with a method of `ml` bytes: what comes
 * before its payload. */
#define CALL_HEAD(name_len, ml) (5 + 8 + 1 + 1 + 2 + 7 + 32 + 4 + (name_len) + 2 + (ml))

static size_t call_to(unsigned char *out, uint64_t id, int kind, const char *name,
	const char *method, const char *url)
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
		/* A stub and an ID: what the node resolves (host objects). */
		dobj_val_push(v, dobj_val_stub(ns, &oid, name, strlen(name)));
		dobj_val_push(v, dobj_val_id(ns, &oid, NULL, 0));
	} else {
		dobj_val *h = dobj_val_array();
		v = dobj_val_object();
		dobj_val_push(h, dobj_val_string("accept", 6));
		dobj_val_push(h, dobj_val_string("*/*", 3));
		dobj_val_put(v, "headers", 7, h);
		dobj_val_put(v, "url", 3, dobj_val_string(url, strlen(url)));
		dobj_val_put(v, "method", 6, dobj_val_string("POST", 4));
		dobj_val_put(v, "status", 6, dobj_val_number(0));
		dobj_val_put(v, "body", 4, dobj_val_bytes("hi", 2));
	}
	CHECK_EQ_INT(dobj__val_encode_refs(v, &blob, &len), DOBJ_OK);
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
	n += other(seed_buf[1] + n, 7, 1, OP_TEXT, "text");
	n += other(seed_buf[1] + n, 7, 1, OP_CLOSE, "\x03\xe8\x01" "bye");
	n += other(seed_buf[1] + n, 6, 2, OP_BINARY, "bin");
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

/*
 * On the connection fd: send p, drive the node's runtime and read, until
 * (result) a whole RESULT frame arrived (its body, up to *rlen bytes, in
 * result, its length in *rlen), or else until the node closed the
 * connection; the write side is closed once p is sent when `shut`.
 * Returns the bytes read, -1 past `until`, -2 when the node closed the
 * connection before a RESULT came.
 */
static long drive(int fd, const unsigned char *p, size_t len, int shut, unsigned char *result,
	size_t *rlen, double until)
{
	static unsigned char got[1 << 16];
	size_t off = 0, have = 0;
	long total = 0;

	if (len == 0 && shut)
		shutdown(fd, SHUT_WR);
	for (;;) {
		struct pollfd pf[2] = {
			{ dobj_rt_fd(rt), POLLIN, 0 },
			{ fd, (short)(POLLIN | (off == len ? 0 : POLLOUT)), 0 },
		};
		double next = dobj_rt_next_timer_ms(rt), left = until - fuzz_now();
		int timeout = (int)(left * 1e3) + 1;

		if (left <= 0)
			return -1;
		if (next >= 0 && next < timeout)
			timeout = (int)ceil(next) + 1;
		if (poll(pf, 2, timeout) < 0 && errno != EINTR)
			return -2;
		if (pf[0].revents)
			dobj_rt_process(rt);
		if (off < len && (pf[1].revents & POLLOUT)) {
			ssize_t n = send(fd, p + off, len - off, MSG_NOSIGNAL);
			if (n > 0)
				off += (size_t)n;
			else if (n < 0 && errno != EAGAIN)
				off = len;
			if (off == len && shut)
				shutdown(fd, SHUT_WR);
		}
		if (pf[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = recv(fd, got + have, sizeof(got) - have, 0);
			if (n == 0 || (n < 0 && errno != EAGAIN))
				return result ? -2 : total;
			if (n < 0)
				continue;
			total += n;
			have += (size_t)n;
			/* Whole frames: a RESULT ends the wait for one; the rest go. */
			while (have >= 5) {
				size_t flen = ((size_t)got[0] << 24) | ((size_t)got[1] << 16) |
					((size_t)got[2] << 8) | got[3];
				if (have < 4 + flen)
					break;
				if (result && got[4] == 3) {
					*rlen = flen - 1 < *rlen ? flen - 1 : *rlen;
					memcpy(result, got + 5, *rlen);
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

/* A connection that sends p and then (want_result) waits for a RESULT
 * (its status in *status) or (else) closes its write side and waits for
 * the node to close.  The bytes read, or -1 past limit_s, -2 when the
 * node closed first. */
static long exchange(const unsigned char *p, size_t len, int want_result, int *status,
	double limit_s)
{
	unsigned char res[64];
	size_t rlen = sizeof(res);
	int fd = connect_node();
	long n;

	if (fd < 0)
		return -1;
	n = drive(fd, p, len, !want_result, want_result ? res : NULL, &rlen, fuzz_now() + limit_s);
	if (n > 0 && want_result && rlen >= 9)
		*status = res[8];
	close(fd);
	return n;
}

/* The link of a 101 in a RESULT's body (id, status, flags, code, message,
 * then the response as a value with "ws"), 0 when none. */
static uint64_t result_link(const unsigned char *r, size_t n)
{
	dobj_val *v = NULL;
	const dobj_val *ws;
	size_t mlen;
	uint64_t link = 0;

	if (n < 18 || r[8] != 0)
		return 0;
	mlen = ((size_t)r[14] << 24) | ((size_t)r[15] << 16) | ((size_t)r[16] << 8) | r[17];
	if (18 + mlen > n || dobj_val_decode(r + 18 + mlen, n - 18 - mlen, &v) != DOBJ_OK)
		return 0;
	if ((ws = dobj_val_get(v, "ws", 2)) && dobj_val_type_of(ws) == DOBJ_VAL_NUMBER)
		link = (uint64_t)dobj_val_get_number(ws);
	dobj_val_free(v);
	return link;
}

/* Structure-aware inputs: frames whose bodies are mutated and whose
 * lengths are right, so that the mutations reach what reads the bodies
 * (a call's fields and its V8 payload, a WebSocket frame's op, code and
 * reason).  `link`: the WebSocket link the frames name (0: none). */
static size_t framed_input(unsigned char *buf, size_t cap, uint64_t link, int with_hello)
{
	unsigned char tmp[2048];
	size_t n = with_hello ? hello(buf) : 0, k, frames = 1 + fuzz_below(5);

	for (k = 0; k < frames; k++) {
		size_t flen, from = 5, i = fuzz_below(link ? 9 : 6);
		unsigned char *q = tmp;
		switch (i) {
		case 0: flen = call(tmp, k + 1, 2, "a", "count"); from = CALL_HEAD(1, 5); break;
		case 1: flen = call(tmp, k + 1, 1, "b", ""); from = CALL_HEAD(1, 0); break;
		case 2: flen = call(tmp, k + 1, 2, "a", "count"); break;
		case 3: flen = other(tmp, 3, k + 1, 0, ""); break;
		case 4: flen = empty(tmp, 4 + (int)fuzz_below(2)); break;
		case 5: flen = other(tmp, 7, fuzz_below(4), OP_TEXT, "text"); break;
		case 6: flen = other(tmp, 7, link, (int)fuzz_below(2), "hello \xc3\xa9"); break;
		case 7: flen = other(tmp, 7, link, OP_CLOSE, "\x03\xe8\x01" "bye"); break;
		default: flen = other(tmp, 7, link, OP_ERROR + (int)fuzz_below(2), "went wrong"); break;
		}
		/* Mostly the part after the fixed fields; sometimes all of it. */
		if (from == 5 && i >= 5 && fuzz_below(2))
			from = 5 + 9;
		if (fuzz_below(4) == 0)
			from = 5;
		flen = from + fuzz_mutate(tmp + from, flen - from, sizeof(tmp) - from, NULL, NULL, 0);
		if (fuzz_below(16) == 0)
			tmp[4] = (unsigned char)fuzz_below(9);
		put(&q, flen - 4, 4);
		if (n + flen > cap)
			break;
		memcpy(buf + n, tmp, flen);
		n += flen;
	}
	return n;
}

/* A WebSocket relayed through the node: a fetch of /ws on a connection,
 * its 101's link, then framed input naming that link, the write side
 * closed, and the node's close waited for.  -1 past limit_s. */
static long ws_exchange(double limit_s)
{
	unsigned char first[1024], res[4096];
	size_t n = hello(first), rlen = sizeof(res), len;
	double until = fuzz_now() + limit_s;
	int fd = connect_node();
	uint64_t link;
	long r;

	if (fd < 0)
		return -1;
	n += call_to(first + n, 1, 1, "w", "", "http://box/ws");
	r = drive(fd, first, n, 0, res, &rlen, until);
	if (r < 0 || !(link = result_link(res, rlen))) {
		close(fd);
		if (r != -1)
			fuzz_finding("a relayed WebSocket was not opened");
		return r == -1 ? -1 : 0;
	}
	links++;
	len = framed_input(input, sizeof(input), link, 0);
	fuzz_input(input, len);
	r = drive(fd, input, len, 1, NULL, NULL, until);
	close(fd);
	return r;
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
	size_t heap_from = 0, heap_runs = 0;
	int status = -1;

	plen += call(probe + plen, 77, 2, "probe", "count");
	make_seeds();
	/* The first call claims the object (PostgreSQL): the probe's bound. */
	CHECK(exchange(probe, plen, 1, &status, 20) > 0 && status == 0);
	fuzz_begin("node_port");
	while (fuzz_more()) {
		if (fz.runs == 1000) {
			heap_from = fuzz_heap();
			heap_runs = fz.runs;
		}
		size_t len, mode = fz.replay ? 0 : fuzz_below(3);
		long r;

		if (mode == 2) {
			r = ws_exchange(10); /* its input made once the link is known */
		} else {
			len = mode ? framed_input(input, sizeof(input), 0, fuzz_below(8) != 0) :
				fuzz_next_input(input, sizeof(input), dict, seeds, nseeds);
			fuzz_input(input, len);
			r = exchange(input, len, 0, NULL, 10);
		}
		if (r == -1) {
			fuzz_finding("the node did not close the connection in 10 s");
			break;
		}
		if ((fz.runs & 7) == 0 || fz.replay) {
			status = -1;
			if (exchange(probe, plen, 1, &status, 10) <= 0 || status != 0) {
				fuzz_finding("a well-formed call after it was not answered (status %d)", status);
				break;
			}
			answered++;
		}
	}
	{
		char what[256];
		snprintf(what, sizeof(what), "%lu calls run, %lu probes answered, %lu WebSockets "
			"relayed, %lu of their events, %lu log lines", calls_run, answered, links,
			ws_events, logged);
		fuzz_end(what);
	}
	/* Memory that stays reachable (a list that keeps dead connections,
	 * say) is no leak for LeakSanitizer: the heap must stay flat. */
	if (heap_runs && fz.runs > heap_runs) {
		CHECK(fuzz_heap() < heap_from + ((size_t)4 << 20));
		printf("  heap: %zu bytes after %lu inputs, %+ld over the next %lu\n", heap_from,
			heap_runs, (long)(fuzz_heap() - heap_from), fz.runs - heap_runs);
	}
}

/* Run the node's runtime until *flag is set (or past `until`). */
static void run_until(const int *flag, double until)
{
	while (!*flag && fuzz_now() < until) {
		struct pollfd pf = { dobj_rt_fd(rt), POLLIN, 0 };
		double next = dobj_rt_next_timer_ms(rt);
		int timeout = (int)((until - fuzz_now()) * 1e3) + 1;
		if (next >= 0 && next < timeout)
			timeout = (int)ceil(next) + 1;
		if (poll(&pf, 1, timeout) > 0)
			dobj_rt_process(rt);
	}
}

/* A peer's close frame whose reason is not UTF-8 (or whose code is none a
 * close carries) reaches the object without its reason: the object heard
 * the peer's bytes as they were. */
static void test_a_peers_close_reason_is_utf8_or_none(void)
{
	static const struct { const char *frame; size_t len; int code; const char *reason; } cases[] = {
		{ "\x03\xe8\x01" "bye", 6, 1000, "bye" },
		{ "\x03\xe8\x01\xff\xfe", 5, 1000, "" },
		{ "\x0f\xa0\x01\xed\xa0\x80", 6, 4000, "" },
		{ "\x00\x01\x01" "why", 6, 1006, "" },
		{ "\x03\xec\x01" "why", 6, 1006, "" }, /* 1004: reserved */
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned char first[1024], res[4096], fr[64], *p = fr, *f = frame_begin(&p, 7);
		size_t n = hello(first), rlen = sizeof(res);
		int fd = connect_node();
		uint64_t link = 0;

		check_case = (int)i;
		n += call_to(first + n, 1, 1, "w", "", "http://box/ws");
		CHECK(fd >= 0 && drive(fd, first, n, 0, res, &rlen, fuzz_now() + 20) > 0 &&
			(link = result_link(res, rlen)) != 0);
		put(&p, link, 8);
		put(&p, OP_CLOSE, 1);
		put_bytes(&p, cases[i].frame, cases[i].len);
		frame_end(f, p);
		last_code = 0;
		last_reason[0] = 0;
		CHECK(fd < 0 || drive(fd, fr, (size_t)(p - fr), 1, NULL, NULL, fuzz_now() + 20) >= 0);
		/* The node closes the connection as it reads its end, maybe before
		 * its runtime ran the close: the runtime runs until it did. */
		run_until(&last_code, fuzz_now() + 20);
		CHECK_EQ_INT(last_code, cases[i].code);
		CHECK_STR(last_reason, cases[i].reason);
		if (fd >= 0)
			close(fd);
	}
	check_case = -1;
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
	k.flags = DOBJ_CLASS_FETCH | DOBJ_CLASS_WS_MESSAGE | DOBJ_CLASS_WS_CLOSE |
		DOBJ_CLASS_WS_ERROR;
	k.step = box_step;
	CHECK_EQ_INT(dobj_ns_new(&ns, rt, "BOX", 3, "box-key", 7, &k), DOBJ_OK);
	port = node_port();
	CHECK(port > 0);
	if (port > 0) {
		RUN(test_a_peers_close_reason_is_utf8_or_none);
		RUN(test_node_port);
	}
	dobj_rt_free(rt);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK_EQ_INT(system(cmd), 0);
	pgtest_stop(&pg);
	fuzz_finish();
	return DONE();
}
