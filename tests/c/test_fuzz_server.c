/*
 * The server of `dobj-lua dev` (dobj/server.h: libmicrohttpd, wslay and the
 * core's rules) under a seeded, time-bounded mutation fuzz (tests/c/fuzz.h):
 * mutated HTTP requests (pipelined, chunked, cut short) and WebSocket
 * handshakes followed by mutated frames (masked, fragmented, control
 * frames, close codes and reasons), each on its own connection from a
 * client in this thread, whose write side then closes.  A room object
 * accepts each WebSocket and echoes its messages.  Every connection must
 * end (the server answers and closes, or closes), with nothing left in
 * flight and no WebSocket left open, and the server must go on serving: a
 * plain request is answered after every input.  A crash, a hang, a leak or
 * an unbounded allocation is a finding (see fuzz.h).
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "dobj.h"

#define FUZZ_INPUT_MAX 16384

static unsigned char input[FUZZ_INPUT_MAX];
static dobj_rt *rt;
static dobj_ns *room_ns;
static dobj_stub *room;
static dobj_server *srv;
static dobj_ws *accepted;   /* the client end the room's fetch made */
static unsigned long answered, upgraded, refused, messages, frames_out, closes_out;


/* ----------------------------------------------------------- the room */

static int room_step(dobj_task *t, void *data)
{
	const dobj_ws_event *ev = dobj_task_ws_event(t);
	(void)data;

	switch (dobj_task_call_kind(t)) {
	case DOBJ_CALL_WS_MESSAGE:
		messages++;
		if (ev->text && !fuzz_utf8_valid(ev->data, ev->len))
			fuzz_finding("the object heard a text message that is not UTF-8");
		/* "close..." closes from the object's side; anything else echoes. */
		if (ev->len >= 5 && !memcmp(ev->data, "close", 5))
			dobj_ws_close(ev->ws, 4000, "asked", 5);
		else
			dobj_ws_send(ev->ws, ev->data, ev->len, ev->text);
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	case DOBJ_CALL_WS_CLOSE:
		/* What the object hears is what a close may say (RFC 6455 7.4,
		 * 8.1): a code it may carry or 1005/1006, a UTF-8 reason. */
		if (!fuzz_utf8_valid((const unsigned char *)ev->reason, ev->reason_len))
			fuzz_finding("the object heard a close reason that is not UTF-8 (code %d)", ev->code);
		if (ev->code != 1005 && ev->code != 1006 && (ev->code < 1000 || ev->code >= 5000 ||
		    ev->code == 1004 || ev->code == 1015))
			fuzz_finding("the object heard close code %d", ev->code);
		/* Answer a clean close as workerd's examples do; a second close
		 * or one after a failure is refused by the core, not a finding. */
		if (ev->code != 1005 && ev->code != 1006 && ev->code != 1015)
			dobj_ws_close(ev->ws, ev->code, ev->reason, ev->reason_len);
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	case DOBJ_CALL_WS_ERROR:
		dobj_task_return(t, NULL);
		return DOBJ_OK;
	default:
		break;
	}
	{
		dobj_ws *client, *server;
		CHECK_EQ_INT(dobj_ws_pair_new(&client, &server), DOBJ_OK);
		if (dobj_ws_accept(dobj_task_obj(t), server, NULL, NULL, NULL, 0) == DOBJ_OK) {
			dobj_ws_send(server, "welcome", 7, 1);
			dobj_ws_unref(accepted);
			accepted = client;
		} else {
			dobj_ws_unref(client);
			fuzz_finding("accept: %s", dobj_error_last());
		}
		dobj_task_return(t, NULL);
		dobj_ws_unref(server);
	}
	return DOBJ_OK;
}

/* ------------------------------------------------------- the server's host */

static int task_done(void *t)
{
	return dobj_task_done(t);
}

static void answer(uint64_t id, int status, const void *body, size_t len, dobj_ws *ws)
{
	dobj_server_response *r = NULL;

	if (dobj_server_response_begin(srv, id, status, body, len, ws, &r) != DOBJ_OK) {
		fuzz_finding("response_begin %d: %s", status, dobj_error_last());
		return;
	}
	if (dobj_server_response_header(r, "content-type", 12, "text/plain", 10) != DOBJ_OK)
		fuzz_finding("response_header: %s", dobj_error_last());
	dobj_server_response_send(r);
}

static void on_request(void *data, uint64_t id, const dobj_msg *msg, int status, const char *why)
{
	const char *up = dobj_msg_header(msg, "upgrade");
	(void)data;

	if (status) {
		refused++;
		if (status != 400 && status != 413 && status != 414 && status != 431 && status != 501)
			fuzz_finding("refused with %d", status);
		answer(id, status, why, strlen(why), NULL);
		return;
	}
	if (up && !strcasecmp(up, "websocket")) {
		/* The room's fetch runs now (the runtime is idle here: the
		 * server's hook runs outside any step). */
		dobj_task *t = NULL;
		if (dobj_stub_call(&t, room, DOBJ_CALL_FETCH, NULL, "http://a/ws", 11, NULL, NULL,
			NULL) != DOBJ_OK || dobj_rt_run(rt, task_done, t) != DOBJ_OK)
			fuzz_finding("the room's fetch: %s", dobj_error_last());
		dobj_task_unref(t);
		if (accepted) {
			upgraded++;
			answer(id, 101, NULL, 0, accepted);
			dobj_ws_unref(accepted);
			accepted = NULL;
			return;
		}
	}
	answered++;
	answer(id, 200, msg->url, strlen(msg->url), NULL);
}

static const dobj_server_hooks hooks = { on_request, NULL };

/* ------------------------------------------------------------ the client */

static int connect_client(void)
{
	struct sockaddr_in a;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)dobj_server_port(srv));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 && errno != EINPROGRESS) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Drive the server and the runtime until the client has sent `len` bytes
 * of `p`, closed its write side and read the server's close, and the
 * server holds nothing of the connection.  Returns the bytes the client
 * read (*got, up to cap kept), or -1 when that took past `limit_s`. */
static long exchange(const unsigned char *p, size_t len, char *got, size_t cap, double limit_s)
{
	double until = fuzz_now() + limit_s;
	int fd = connect_client(), shut = 0, eof = 0;
	size_t off = 0;
	long total = 0;

	if (fd < 0) {
		fuzz_finding("connect: %s", strerror(errno));
		return -1;
	}
	while (!eof || dobj_server_inflight(srv) || dobj_server_websockets(srv)) {
		struct pollfd pf[3] = {
			{ dobj_server_fd(srv), POLLIN, 0 },
			{ dobj_rt_fd(rt), POLLIN, 0 },
			{ fd, (short)((eof ? 0 : POLLIN) | (shut ? 0 : POLLOUT)), 0 },
		};
		int timeout = dobj_server_timeout(srv);
		double left = until - fuzz_now();

		if (left <= 0) {
			close(fd);
			return -1;
		}
		if (timeout < 0 || timeout > left * 1e3)
			timeout = (int)(left * 1e3) + 1;
		if (poll(pf, eof ? 2 : 3, timeout) < 0 && errno != EINTR)
			break;
		if (!shut && (pf[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t n = off < len ? send(fd, p + off, len - off, MSG_NOSIGNAL) : 0;
			if (n > 0)
				off += (size_t)n;
			if (off == len || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
				shutdown(fd, SHUT_WR);
				shut = 1;
			}
		}
		if (!eof && (pf[2].revents & (POLLIN | POLLERR | POLLHUP))) {
			char buf[65536];
			ssize_t n = recv(fd, buf, sizeof(buf), 0);
			if (n > 0) {
				if (got && (size_t)total < cap)
					memcpy(got + total, buf,
						(size_t)n < cap - (size_t)total ? (size_t)n : cap - (size_t)total);
				total += n;
			} else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
				eof = 1;
			}
		}
		if (dobj_server_process(srv) != DOBJ_OK)
			fuzz_finding("server: %s", dobj_error_last());
		dobj_rt_process(rt);
	}
	close(fd);
	return total;
}

/* -------------------------------------------------- the server's output */

/* What a server may send a client after its 101 (RFC 6455): unmasked
 * frames of known opcodes, text that is UTF-8, a close that is empty or a
 * code a close frame may carry and a UTF-8 reason of at most 123 bytes,
 * nothing after the close.  Frames cut short by the end are not judged. */
static void check_ws_output(const unsigned char *p, size_t n)
{
	const unsigned char *end = p + n, *head = NULL;
	size_t i;
	int closed = 0;

	for (i = 0; i + 4 <= n; i++)
		if (!memcmp(p + i, "\r\n\r\n", 4)) {
			head = p + i + 4;
			break;
		}
	if (!head || n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0)
		return;
	for (p = head; end - p >= 2;) {
		int op = p[0] & 0x0f, fin = p[0] >> 7;
		uint64_t len = p[1] & 0x7f;
		size_t h = 2;
		if (p[1] & 0x80) {
			fuzz_finding("the server sent a masked frame");
			return;
		}
		if (len == 126 && end - p >= 4)
			len = ((uint64_t)p[2] << 8) | p[3], h = 4;
		else if (len == 127 && end - p >= 10) {
			for (len = 0, i = 0; i < 8; i++)
				len = (len << 8) | p[2 + i];
			h = 10;
		} else if (len >= 126)
			return;
		if ((uint64_t)(end - p) < h + len)
			return;
		if (closed) {
			fuzz_finding("the server sent a frame (opcode %d) after its close", op);
			return;
		}
		if (op == 1 && fin && !fuzz_utf8_valid(p + h, (size_t)len))
			fuzz_finding("the server sent a text message that is not UTF-8");
		frames_out++;
		if (op == 8) {
			int code = len >= 2 ? (p[h] << 8) | p[h + 1] : 0;
			closed = 1;
			closes_out++;
			if (len == 1 || len > 125 || (len >= 2 && (code < 1000 || code >= 5000 ||
			    code == 1004 || code == 1005 || code == 1006 || code == 1015)))
				fuzz_finding("the server sent a close frame of %d bytes, code %d", (int)len, code);
			else if (len > 2 && !fuzz_utf8_valid(p + h + 2, (size_t)len - 2))
				fuzz_finding("the server sent a close reason that is not UTF-8");
		}
		if (op != 0 && op != 1 && op != 2 && op != 8 && op != 9 && op != 10)
			fuzz_finding("the server sent opcode %d", op);
		p += h + len;
	}
}

static void show(const char *p, size_t n)
{
	size_t i;

	printf("  the server sent %zu bytes:\n  ", n);
	for (i = 0; i < n; i++)
		printf(p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\' ? "%c" : p[i] == '\n' ? "\\n\n  " :
			"\\x%02x", (unsigned char)p[i]);
	printf("\n");
}

/* ---------------------------------------------------------------- seeds */

#define HS "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

static unsigned char frames[8][256];
static fuzz_seed seeds[16];
static size_t nseeds;

/* A client's frame (masked, as a client must): fin, opcode, payload. */
static size_t frame(unsigned char *out, int fin, int op, const void *payload, size_t n)
{
	static const unsigned char mask[4] = { 0x37, 0xfa, 0x21, 0x3d };
	size_t i, h = 2;

	out[0] = (unsigned char)((fin ? 0x80 : 0) | op);
	if (n < 126) {
		out[1] = (unsigned char)(0x80 | n);
	} else {
		out[1] = 0x80 | 126;
		out[2] = (unsigned char)(n >> 8);
		out[3] = (unsigned char)n;
		h = 4;
	}
	memcpy(out + h, mask, 4);
	for (i = 0; i < n; i++)
		out[h + 4 + i] = ((const unsigned char *)payload)[i] ^ mask[i & 3];
	return h + 4 + n;
}

static void seed(const char *s)
{
	seeds[nseeds].p = (const unsigned char *)s;
	seeds[nseeds++].len = strlen(s);
}

/* A handshake and then frames: text, binary, fragments, ping, close. */
static void ws_seed(int k)
{
	unsigned char *o = frames[k];
	size_t n = strlen(HS "\r\n");

	memcpy(o, HS "\r\n", n);
	switch (k) {
	case 0:
		n += frame(o + n, 1, 1, "hello", 5);
		n += frame(o + n, 1, 2, "\x00\x01\xff", 3);
		n += frame(o + n, 1, 8, "\x03\xe8" "bye", 5);
		break;
	case 1:
		n += frame(o + n, 0, 1, "he", 2);
		n += frame(o + n, 1, 9, "ping", 4);
		n += frame(o + n, 0, 0, "l", 1);
		n += frame(o + n, 1, 0, "lo \xc3\xa9", 5);
		n += frame(o + n, 1, 1, "close now", 9);
		break;
	case 2:
		n += frame(o + n, 1, 1, "\xed\xa0\x80", 3); /* a lone surrogate: 1007 */
		n += frame(o + n, 1, 8, "\x0f\xa0" "\xc3\xa9", 4);
		break;
	default:
		n += frame(o + n, 1, 1, "a", 1);
		n += frame(o + n, 1, 10, "", 0);
		n += frame(o + n, 1, 8, "", 0);
		break;
	}
	seeds[nseeds].p = o;
	seeds[nseeds++].len = n;
}

static void make_seeds(void)
{
	int k;

	seed("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
	seed("POST /x?y=1 HTTP/1.1\r\nHost: example.com:80\r\nContent-Length: 5\r\n\r\nhello");
	seed("POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
		"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nTrailer: t\r\n\r\n");
	seed("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\nCookie: a=1\r\n"
		"Cookie: b=2\r\n\r\nHEAD /3 HTTP/1.0\r\n\r\n");
	seed("PUT http://h/abs HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok");
	seed("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
	for (k = 0; k < 4; k++)
		ws_seed(k);
}

/* A handshake and well-framed (masked, lengths right) frames whose
 * opcodes, fin bits and payloads vary: what reaches the core's rules
 * (UTF-8, close codes and reasons, fragments, auto-response) past wslay. */
static size_t ws_input(unsigned char *buf, size_t cap)
{
#define P(s) { s, sizeof(s) - 1 }
	static const struct { const char *p; size_t n; } payloads[] = {
		P("hello"), P("close now"), P("\xc3\xa9t\xc3\xa9"), P("\xed\xa0\x80"),
		P("\xf4\x90\x80\x80"), P("\xc0\xaf"), P("\xef\xbf\xbf"), P("\xf0\x9f\x98"),
		P(""), P("\x03\xe8"), P("\x03\xe8" "bye"), P("\x03\xed"), P("\x0f\x9f"),
		P("\x13\x88"), P("\x00\x00"), P("\x03\xe8\xff\xfe"), P("\x03\xea\xed\xa0\x80"),
		P("\x0b\xb8" "0123456789012345678901234567890123456789012345678901234567890123456789"
		  "0123456789012345678901234567890123456789012345678901"), P("\x03"),
	};
#undef P
	static const int ops[] = { 0, 1, 2, 8, 9, 10, 3, 11, 15 };
	size_t n = strlen(HS "\r\n"), k, frames = 1 + fuzz_below(6);

	memcpy(buf, HS "\r\n", n);
	for (k = 0; k < frames; k++) {
		unsigned char pl[512];
		size_t i = fuzz_below(sizeof(payloads) / sizeof(payloads[0])), plen = payloads[i].n;
		int op = ops[fuzz_below(sizeof(ops) / sizeof(ops[0]))];
		memcpy(pl, payloads[i].p, plen);
		if (fuzz_below(2))
			plen = fuzz_mutate(pl, plen, sizeof(pl), NULL, NULL, 0);
		if (n + plen + 8 > cap)
			break;
		n += frame(buf + n, fuzz_below(4) != 0, op, pl, plen);
	}
	return n;
}

/* ----------------------------------------------------------------- test */

static void test_server(void)
{
	static const char *const dict[] = { "\r\n", "\r\n\r\n", " HTTP/1.1\r\n", "HTTP/1.0", ": ",
		"Host: ", "Content-Length: ", "Transfer-Encoding: chunked\r\n", "Connection: close\r\n",
		"Upgrade: websocket\r\n", "Sec-WebSocket-Version: 13\r\n", "Sec-WebSocket-Protocol: ",
		"Expect: 100-continue\r\n", "0\r\n\r\n", "ffffffffffffffff\r\n", "99999999999",
		"\x81\x80", "\x81\xfe\xff\xff", "\x81\xff\x7f\xff\xff\xff\xff\xff\xff\xff",
		"\x88\x82", "\x89\x80", "\x80\x80", "\x00\x80", "\x01\x80", "\x8f\x80", "\xc1\x80",
		"\x03\xe8", "\x03\xed", "\x0b\xb8", "\x13\x88", "\x00\x00\x00\x00", NULL };
	static const char plain[] = "GET /still HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
	unsigned long slow = 0;
	double worst = 0;

	size_t heap_from = 0, heap_runs = 0;

	make_seeds();
	fuzz_begin("server");
	while (fuzz_more()) {
		if (fz.runs == 1000) {
			heap_from = fuzz_heap();
			heap_runs = fz.runs;
		}
		size_t len = !fz.replay && fuzz_below(2) ? ws_input(input, sizeof(input)) :
			fuzz_next_input(input, sizeof(input), dict, seeds, nseeds);
		double t0 = fuzz_now(), took;
		static char got[1 << 16];
		long n;

		fuzz_input(input, len);
		if ((n = exchange(input, len, got, sizeof(got), 5)) < 0) {
			fuzz_finding("the connection did not end in 5 s (in flight %zu, WebSockets %zu)",
				dobj_server_inflight(srv), dobj_server_websockets(srv));
			break;
		}
		check_ws_output((const unsigned char *)got, (size_t)n < sizeof(got) ? (size_t)n :
			sizeof(got));
		if (fz.replay) /* what the server answered, for the one who runs it again */
			show(got, (size_t)n < sizeof(got) ? (size_t)n : sizeof(got));
		took = fuzz_now() - t0;
		if (took > worst)
			worst = took;
		/* An input of at most 16 KiB that takes seconds is a blow-up
		 * (quadratic work); a loaded machine's stall is far shorter. */
		slow += took > 2.0;
		/* The server goes on: a plain request after every fuzzed one. */
		if ((fz.runs & 7) == 0 || fz.replay) {
			n = exchange((const unsigned char *)plain, strlen(plain), got, sizeof(got), 5);
			if (n < 12 || memcmp(got, "HTTP/1.1 200", 12) != 0) {
				fuzz_finding("a plain request after it was not answered 200 (%ld bytes)", n);
				break;
			}
		}
	}
	{
		char what[300];
		snprintf(what, sizeof(what), "%lu answered, %lu upgraded, %lu refused, %lu WebSocket "
			"messages in, %lu frames out (%lu closes), slowest %.0f ms (%lu over 2 s)", answered,
			upgraded, refused, messages, frames_out, closes_out, worst * 1e3, slow);
		fuzz_end(what);
	}
	/* Memory that stays reachable (a list that keeps dead connections,
	 * say) is no leak for LeakSanitizer: the heap must stay flat. */
	if (heap_runs && fz.runs > heap_runs) {
		CHECK(fuzz_heap() < heap_from + ((size_t)4 << 20));
		printf("  heap: %zu bytes after %lu inputs, %+ld over the next %lu\n", heap_from,
			heap_runs, (long)(fuzz_heap() - heap_from), fz.runs - heap_runs);
	}
	CHECK(slow == 0);
}

/* A client that sends its close right behind the handshake (pipelined)
 * still gets what the object sent before it read that close: the welcome
 * the room sends when it accepts went out after the close reply, that is
 * never (wslay puts the close it answers with ahead of queued messages). */
static void test_a_clients_close_does_not_overtake_what_was_sent_before(void)
{
	unsigned char out[512];
	static char got[4096];
	const char *close_at, *welcome_at;
	size_t n = strlen(HS "\r\n");
	long r;

	memcpy(out, HS "\r\n", n);
	n += frame(out + n, 1, 8, "\x03\xe8" "bye", 5);
	r = exchange(out, n, got, sizeof(got) - 1, 5);
	CHECK(r > 0);
	got[r > 0 ? r : 0] = 0;
	welcome_at = memmem(got, r > 0 ? (size_t)r : 0, "\x81\x07welcome", 9);
	close_at = memmem(got, r > 0 ? (size_t)r : 0, "\x88\x05\x03\xe8" "bye", 7);
	CHECK(welcome_at != NULL);
	CHECK(close_at != NULL);
	CHECK(!welcome_at || !close_at || welcome_at < close_at);
	check_ws_output((const unsigned char *)got, r > 0 ? (size_t)r : 0);
}

int main(void)
{
	dobj_rt_opts o = DOBJ_RT_OPTS_INIT;
	dobj_class k = { 0 };
	int rc;

	fuzz_init();
	o.virtual_time = 1;
	k.name = "Room";
	k.flags = DOBJ_CLASS_FETCH | DOBJ_CLASS_WS_MESSAGE | DOBJ_CLASS_WS_CLOSE |
		DOBJ_CLASS_WS_ERROR;
	k.step = room_step;
	CHECK_EQ_INT(dobj_rt_new(&rt, &o), DOBJ_OK);
	CHECK_EQ_INT(dobj_ns_new(&room_ns, rt, "ROOM", 4, NULL, 0, &k), DOBJ_OK);
	{
		dobj_id id;
		CHECK_EQ_INT(dobj_id_from_name(dobj_ns_idkey(room_ns), "room", 4, &id), DOBJ_OK);
		CHECK_EQ_INT(dobj_stub_new(&room, room_ns, &id, "room", 4), DOBJ_OK);
	}
	rc = dobj_server_listen("127.0.0.1", 0, &hooks, NULL, &srv);
	if (rc == DOBJ_ERROR) {
		printf("skipped: dobj was built without libmicrohttpd\n");
	} else {
		CHECK_EQ_INT(rc, DOBJ_OK);
		if (srv) {
			RUN(test_a_clients_close_does_not_overtake_what_was_sent_before);
			RUN(test_server);
		}
	}
	dobj_server_free(srv);
	dobj_stub_free(room);
	dobj_rt_free(rt);
	fuzz_finish();
	return DONE();
}
